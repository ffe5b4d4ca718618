"""Survive any input (issue 13): bad input thrown at a live cluster while a
bank workload runs.

One cluster of 3 shards, every role with its token, and small limits so
that the attack bites within seconds: the coordinator takes 64 connections
(16 per address), each participant 32 (8 per address), and a connection
must deliver each complete request within 1 s (http_request_timeout_ms).

Good clients (127.0.5.x) move money between accounts on two shards, with
an idempotency key and one ledger row per leg in every transfer, as
tests/soak.py does (but each worker among accounts of its own, so that no
two transfers wait for each other); one worker runs its transfers as
interactive transactions. They run alone first (the calm period), then
under attack.

The attacker is this file run as a program (`test_hostile.py attack
JSON`), in a process of its own so that its threads do not share an
interpreter lock with the good clients. From addresses of its own
(127.0.8.x for requests, others for the floods) it sends, over and over
until its time is up, every case of ATTACKS below to the coordinator's
client API, its admin API and peer endpoints, and the participants' port:
wrong content types, huge numbers, invalid UTF-8, NUL characters, deep
nesting, unknown and duplicate keys, malformed JSON, bad paths, methods and
tokens, truncated bodies, HTTP/0.9 and malformed request lines, huge
headers, bad framing, garbage and a TLS ClientHello on the plain port,
pipelined requests; meanwhile thousands of idle connections and a few
dozen that drip one header byte at a time (test_connections.Flood), each
flood opening again what the daemon closes, at up to REOPEN_RATE a second.

Each case names the outcomes it may have, and the test fails on any
other:
  - "<status> <code>": an answer in the contract's error shape,
    {"error": {"code", "message"}}, valid JSON (so valid UTF-8), with that
    status and code; the daemons' own refusals.
  - "<status> mhd": libmicrohttpd's own answer to a request that is not
    HTTP it can parse (an HTML body: it answers those before dtx sees a
    request, and 0.9.75 has no way to replace its bodies). All 4xx but one:
    a request line naming HTTP/2.0 gets 505, RFC 9110's answer to a
    version the server does not speak.
  - "closed": no answer, the connection closed by the server: bytes that
    are no request at all, a body cut short by its sender, or a request
    not complete within the deadline (the server's limits).
A case that must be answered but is closed unanswered is sent once more
(with every slot full, the daemon pushes out the connection that waited
longest without sending, which on a loaded machine can be one of ours
between its connect and its send); the second attempt must be answered,
and at most 1 in 1000 attempts may need one.
Nothing may answer 5xx otherwise, nothing may take longer than the deadline
(plus slack for a loaded machine) to be answered or closed, and no daemon
may crash or report a sanitizer finding.

Meanwhile, and checked at the end:
  - the good clients keep committing: during the attack at least 30% of
    the calm period's rate, with a bounded p99 latency, and none of their
    requests fails nor has its connection closed unanswered;
  - the coordinator's links to every participant stay up (its /healthz,
    polled throughout, and no "participant link" line in its log);
  - the daemons' logs grow by at most a few lines a second of attack
    (their refusals are logged at most once a second per kind);
  - the bank's invariants hold: the total balance, both ledger rows of a
    transfer or neither, every transfer answered committed in the ledger
    and every one answered aborted not, every balance equal to its ledger
    replay, and no dtx: prepared transaction left on any shard.
The test prints the attack's counts and the good clients' rates."""

import collections
import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import traceback
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
if __name__ == "__main__":  # the attacker: a program of its own
    sys.path.insert(0, os.path.join(os.path.dirname(TESTS), "tools"))
    sys.path.insert(0, TESTS)

from harness import (LEDGER_DDL, ClusterTest, random_ledger_transfer,  # noqa: E402
                     sanitizer_reports)
from integration.test_connections import Flood, raise_fd_limit  # noqa: E402

CLIENT, ADMIN, PEER = "cli-token", "adm-token", "peer-token"
DEADLINE_MS = 1000
COORD = {"auth": {"client_token": CLIENT, "admin_token": ADMIN, "peer_token": PEER},
         "http_conn_limit": 64, "http_conn_limit_per_ip": 16,
         "http_request_timeout_ms": DEADLINE_MS, "commit_wait_ms": 2000}
AGENT = {"auth": {"peer_token": PEER}, "http_conn_limit": 32, "http_conn_limit_per_ip": 8,
         "http_request_timeout_ms": DEADLINE_MS, "recovery_interval_ms": 500,
         "recovery_min_age_ms": 300}

SHARDS = ["s1", "s2", "s3"]
ACCOUNTS = 30  # accounts 1..30 of every shard carry the bank; the attack names 99 at most
START = 1000
CALM_S, ATTACK_S = 5.0, 15.0
WORKERS = 5  # the last one runs interactive transactions
PER_WORKER = ACCOUNTS // WORKERS

# Each flood opens again what the daemon closes, at most this many a second: an attacker
# keeping thousands of connections open. A flood of new connections as fast as one can open
# them is a firewall's job (docs/security.md, "What this does not stop"): the daemon then
# spends its time accepting, and pushes out honest clients that are slow to send.
REOPEN_RATE = 100

# How late an answer (or the close of a connection that sent no complete request) may come,
# beyond the deadline: the machine is loaded by sanitized daemons, three PostgreSQL servers,
# the good clients and the attacker itself.
SLACK_S = 2.0
ANSWER_BOUND_S = DEADLINE_MS / 1000 + SLACK_S

# ---- the attack: cases ---------------------------------------------------------------------

JSON = "application/json"
NEVER_ISSUED = "c1-999999-1"  # a gtid of an epoch this coordinator never ran: nothing to decide


def request(method, path, body=b"", token=CLIENT, ctype=JSON, headers=(), length=None,
            version=b"HTTP/1.1"):
    """The bytes of one HTTP request; every argument may be bytes or text."""
    def b(x):
        return x if isinstance(x, bytes) else x.encode("latin-1")
    lines = [b"%s %s %s" % (b(method), b(path), b(version)), b"Host: dtx"]
    if token:
        lines.append(b"Authorization: Bearer " + b(token))
    if ctype and body:
        lines.append(b"Content-Type: " + b(ctype))
    if body or length is not None:
        lines.append(b"Content-Length: %d" % (len(body) if length is None else length)
                     if isinstance(length, (int, type(None))) else b"Content-Length: " + b(length))
    lines += [b(h) for h in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + b(body)


def tx(text, **kw):
    """POST /v1/transactions with a body given as text or bytes."""
    return request("POST", "/v1/transactions", text, **kw)


def op(sql="UPDATE accounts SET balance = balance WHERE id = 99", extra=""):
    return '{"shard":"s1","sql":"%s"%s}' % (sql, extra)


def ops(*o):
    return '{"ops":[%s]}' % ",".join(o or [op()])


BAD = "400 bad_request"
DEEP = 100000


def client_cases():
    """The coordinator's client API: (name, bytes, allowed outcomes)."""
    c = []

    def add(name, data, *allowed):
        """data: the request's bytes, or (as text) a body to POST to /v1/transactions."""
        if isinstance(data, str):
            data = tx(data)
        c.append(("client: " + name, data, set(allowed or [BAD])))

    # wrong content types
    for ct in ["text/plain", "application/x-www-form-urlencoded", JSON + "; charset=latin1",
               "multipart/form-data; boundary=x", "application/jsonp"]:
        add("content type " + ct, tx(ops(), ctype=ct), "415 unsupported_media_type")
    add("415 after a 100-continue", tx(ops(), ctype="text/plain",
                                       headers=["Expect: 100-continue"]),
        "415 unsupported_media_type")
    # huge numbers
    for name, num in [("1e400", "1e400"), ("2^64+1", "18446744073709551617"), ("-0", "-0"),
                      ("5000 digits", "9" * 5000), ("-1e400", "-1e400")]:
        add("timeout_ms " + name, '{"timeout_ms":%s,%s' % (num, ops()[1:]))
        if name != "-0":
            add("expect_rows " + name, ops(op(extra=',"expect_rows":%s' % num)))
            add("a parameter " + name,
                ops(op("SELECT $1::text", ',"params":[%s]' % num)))
    # -0 is zero rows: the statement touches one, so the transaction aborts
    add("expect_rows -0", ops(op(extra=',"expect_rows":-0')), "409 expect_rows_mismatch")
    add("a parameter of 100000 digits", ops(op("SELECT $1::text", ',"params":[%s]' % ("1" * DEEP))))
    # invalid UTF-8 (JSON text is UTF-8: RFC 8259), in every place a string goes
    for name, bad in [("0xff", b"\xff"), ("a truncated sequence", b"\xc3("),
                      ("a surrogate", b"\xed\xa0\x80"), ("an overlong '/'", b"\xc0\xaf"),
                      ("past U+10FFFF", b"\xf4\x90\x80\x80")]:
        add("invalid UTF-8 in sql: " + name,
            tx(b'{"ops":[{"shard":"s1","sql":"SELECT 1 -- ' + bad + b'"}]}'))
        add("invalid UTF-8 in a parameter: " + name,
            tx(b'{"ops":[{"shard":"s1","sql":"SELECT $1::text","params":["' + bad + b'"]}]}'))
        add("invalid UTF-8 in an idempotency key: " + name,
            tx(b'{"idempotency_key":"k' + bad + b'","ops":[{"shard":"s1","sql":"SELECT 1"}]}'))
    add("invalid UTF-8 in a routing key",
        tx(b'{"ops":[{"key":"acct:\xfe","sql":"SELECT 1"}]}'))
    add("invalid UTF-8 in a shard name", tx(b'{"ops":[{"shard":"s\xff","sql":"SELECT 1"}]}'))
    add("invalid UTF-8 in a key name", tx(b'{"ops\xff":[]}'))
    # NUL characters
    add("\\u0000 in sql", ops(op("SELECT 1\\u0000; DROP TABLE accounts")))
    add("a raw NUL in a parameter", tx(b'{"ops":[{"shard":"s1","sql":"SELECT $1::text",'
                                       b'"params":["a\x00b"]}]}'))
    add("\\u0000 in a key name", '{"ops\\u0000x":[%s]}' % op())
    add("\\u0000 in an idempotency key", '{"idempotency_key":"k\\u0000x",%s' % ops()[1:])
    # deep nesting
    add("100000 nested arrays", "[" * DEEP + "]" * DEEP)
    add("100000 nested arrays in a parameter",
        ops(op("SELECT $1::text", ',"params":[%s%s]' % ("[" * DEEP, "]" * DEEP))))
    add("50000 nested objects", '{"a":' * 50000 + "1" + "}" * 50000)
    # unknown and duplicate keys
    add("an unknown key", '{"frobnicate":1,%s' % ops()[1:])
    add("an unknown key in an op", ops(op(extra=',"shard_id":2')))
    add("a key in another case", '{"Ops":[%s]}' % op())
    add("ops twice", '{"ops":[%s],"ops":[%s]}' % (op("SELECT 1"), op()))
    add("sql twice in an op", ops(op("SELECT 1", ',"sql":"SELECT 2"')))
    add("protocol twice", '{"protocol":"2pc","protocol":"4pc",%s' % ops()[1:])
    add("idempotency_key twice", '{"idempotency_key":"a","idempotency_key":"b",%s' % ops()[1:])
    # malformed JSON and wrong shapes
    for name, body in [("a lone brace", "{"), ("a broken array", '{"ops": [}'),
                       ("data after the document", ops() + " x"), ("two documents", ops() * 2),
                       ("an array", "[]"), ("a string", '"ops"'), ("a number", "1e400"),
                       ("a byte order mark", "\ufeff" + ops()), ("single quotes", "{'ops':[]}"),
                       ("a trailing comma", '{"ops":[%s],}' % op()), ("NaN", '{"timeout_ms":NaN}'),
                       ("a comment", '/* x */' + ops()), ("ops not an array", '{"ops":{}}'),
                       ("an op not an object", '{"ops":[1]}'), ("no ops", "{}"),
                       ("empty ops", '{"ops":[]}'), ("1001 ops", ops(*[op()] * 1001)),
                       ("a 70000-byte statement", ops(op("SELECT 1" + " " * 70000))),
                       ("1001 parameters",
                        ops(op("SELECT 1", ',"params":[%s]' % ",".join(["1"] * 1001)))),
                       ("protocol 4pc", '{"protocol":"4pc",%s' % ops()[1:]),
                       ("interactive with ops", '{"interactive":true,%s' % ops()[1:]),
                       ("interactive as a string", '{"interactive":"yes"}'),
                       ("an idempotency key of 201 characters",
                        '{"idempotency_key":"%s",%s' % ("k" * 201, ops()[1:])),
                       ("an empty idempotency key", '{"idempotency_key":"",%s' % ops()[1:]),
                       ("shard and key", ops(op(extra=',"key":"acct:1"'))),
                       ("an unknown shard", ops('{"shard":"s9","sql":"SELECT 1"}')),
                       ("COMMIT", ops(op("COMMIT"))),
                       ("a session SET", ops(op("SET search_path = evil")))]:
        add(name, tx(body.encode("utf-8")))
    add("an empty body", tx(b"", length=0))
    # tokens
    add("no token", tx(ops(), token=None), "401 unauthorized")
    add("a wrong token", tx(ops(), token="nope"), "401 unauthorized")
    add("a token with a tail", tx(ops(), token=CLIENT + "x"), "401 unauthorized")
    add("a Basic authorization", tx(ops(), token=None, headers=["Authorization: Basic Y2xp"]),
        "401 unauthorized")
    add("the peer token", tx(ops(), token=PEER), "401 unauthorized")
    # paths and methods
    add("DELETE /v1/transactions", request("DELETE", "/v1/transactions"),
        "405 method_not_allowed")
    add("PUT on a transaction", request("PUT", "/v1/transactions/c1-1-1", ops()),
        "405 method_not_allowed")
    add("an unknown call", request("POST", "/v1/transactions/c1-1-1/explode"), "404 not_found")
    add("a gtid of 300 characters", request("GET", "/v1/transactions/" + "7" * 300),
        "404 not_found")
    add("ops on an unknown gtid", request("POST", "/v1/transactions/zz-1-1/ops", ops()),
        "404 not_found")
    add("commit of an unknown gtid", request("POST", "/v1/transactions/zz-1-1/commit"),
        "404 not_found")
    add("an invalid UTF-8 path", request("GET", "/v1/nothing%FF%FE"), "404 not_found")
    add("an invalid UTF-8 gtid", request("GET", "/v1/transactions/%C3%28"), "404 not_found")
    add("route without a key", request("GET", "/v1/route"))
    add("route of an invalid UTF-8 key", request("GET", "/v1/route?key=%FF"))
    add("a peer endpoint without its token",
        request("POST", "/v1/peer/outcomes", '{"shard":"s1","gtids":[]}', token=None),
        "401 unauthorized")
    add("a peer endpoint with the client token",
        request("POST", "/v1/peer/3pc/accept", "[" * DEEP), "401 unauthorized")
    # sizes
    add("a Content-Length of 2 MiB", tx(b"", length=2 << 20), "413 payload_too_large")
    return c


def admin_cases():
    """The coordinator's admin API, with the admin token unless said otherwise. Nothing here
    can decide anything: every gtid is one never issued, every body is refused."""
    c = []
    res = "/v1/admin/transactions/%s/resolve" % NEVER_ISSUED

    def add(name, data, *allowed):
        c.append(("admin: " + name, data, set(allowed or [BAD])))

    def post(path, body, **kw):
        kw.setdefault("token", ADMIN)
        return request("POST", path, body, **kw)

    add("recover as text/plain", post("/v1/admin/recover", "{}", ctype="text/plain"),
        "415 unsupported_media_type")
    add("recover, deep nesting", post("/v1/admin/recover", "[" * DEEP))
    add("recover, data after the body", post("/v1/admin/recover", '{} {"gtid":"c1-1-1"}'))
    add("recover, a number for a gtid", post("/v1/admin/recover", '{"gtid":5}'))
    add("recover, not a gtid", post("/v1/admin/recover", '{"gtid":"nope"}'))
    add("recover, malformed as a string", post("/v1/admin/recover", '{"malformed":"yes"}'))
    add("recover, malformed twice",
        post("/v1/admin/recover", '{"malformed":false,"malformed":true,"shard":"s1"}'))
    add("resolve, an unknown decision", post(res, '{"decision":"maybe","reason":"x"}'))
    add("resolve, no reason", post(res, '{"decision":"abort"}'))
    add("resolve, an empty reason", post(res, '{"decision":"abort","reason":""}'))
    add("resolve, a NUL in the reason", post(res, '{"decision":"abort","reason":"a\\u0000b"}'))
    add("resolve, invalid UTF-8 in the reason",
        post(res, b'{"decision":"abort","reason":"\xff"}'))
    add("resolve, the decision twice",
        post(res, '{"decision":"abort","decision":"commit","reason":"x"}'))
    add("resolve, an unknown shard", post(res, '{"decision":"abort","shard":"s9","reason":"x"}'))
    add("resolve, not a gtid",
        post("/v1/admin/transactions/not-a-gtid/resolve", '{"decision":"abort","reason":"x"}'))
    add("resolve a gtid never issued", post(res, '{"decision":"abort","reason":"x"}'),
        "409 conflict")
    add("forget without a shard",
        post("/v1/admin/transactions/%s/forget" % NEVER_ISSUED, '{"reason":"x"}'))
    add("forget a transaction that waits for nothing",
        post("/v1/admin/transactions/%s/forget" % NEVER_ISSUED, '{"shard":"s1","reason":"x"}'),
        "409 conflict")
    for q in ["status=bogus", "older_than_ms=-1", "older_than_ms=abc", "older_than_ms=",
              "older_than_ms=99999999999999999999999", "older_than_ms=18446744073709552",
              "status=%FF"]:
        add("list ?" + q, request("GET", "/v1/transactions?" + q, token=ADMIN))
    add("list with the client token", request("GET", "/v1/transactions"), "403 forbidden")
    add("status without a token", request("GET", "/v1/admin/status", token=None),
        "401 unauthorized")
    add("recover with the client token", post("/v1/admin/recover", "{}", token=CLIENT),
        "403 forbidden")
    add("an unknown admin endpoint", request("GET", "/v1/admin/nothing", token=ADMIN),
        "404 not_found")
    return c


def participant_cases():
    """A participant's port: without the peer token everything under /v1/ is 401, whatever
    the body; with it, only requests that are malformed (none can act)."""
    c = []

    def add(name, data, *allowed):
        c.append(("participant: " + name, data, set(allowed or [BAD])))

    up = ["Upgrade: dtx-peer/1", "Connection: Upgrade"]
    coord = up + ["X-Dtx-Node: c1", "X-Dtx-Boot: x"]
    u = "401 unauthorized"
    add("the stream without a token", request("GET", "/v1/peer/stream", token=None, headers=up), u)
    add("the stream with a wrong token", request("GET", "/v1/peer/stream", token="nope",
                                                 headers=coord + ["X-Dtx-Epoch: 1"]), u)
    add("the stream with the client token", request("GET", "/v1/peer/stream", token=CLIENT,
                                                    headers=up), u)
    add("a branch without a token", request("GET", "/v1/branches/dtx:c1-1-1:s1", token=None), u)
    add("a rollback without a token",
        request("POST", "/v1/admin/branches/dtx:c1-1-1:s1/rollback", token=None), u)
    add("a 3PC promise without a token, deep nesting",
        request("POST", "/v1/peer/3pc/promise", "[" * DEEP, token=None), u)
    add("garbage as text/plain without a token",
        request("POST", "/v1/peer/3pc/decide", "\x00\xff" * 100, token=None, ctype="text/plain"),
        u)
    add("an invalid UTF-8 path", request("GET", "/nothing%FF", token=None), "404 not_found")
    add("an unknown method on /healthz", request("DELETE", "/healthz", token=None),
        "405 method_not_allowed")
    # with the peer token: malformed, so refused before anything is looked up
    add("the stream without Upgrade", request("GET", "/v1/peer/stream", token=PEER))
    add("the stream without its headers", request("GET", "/v1/peer/stream", token=PEER,
                                                  headers=up))
    for e in ["0", "-1", "1e3", "99999999999999999999999", "18446744073709551615"]:
        add("the stream at epoch " + e, request("GET", "/v1/peer/stream", token=PEER,
                                                headers=coord + ["X-Dtx-Epoch: " + e]))
    add("the stream from a node named '../x'",
        request("GET", "/v1/peer/stream", token=PEER,
                headers=up + ["X-Dtx-Node: ../x", "X-Dtx-Epoch: 1", "X-Dtx-Boot: x"]))
    add("a branch that is no gid", request("GET", "/v1/branches/nope", token=PEER),
        "404 not_found")
    for x in ["1e400", "-1", "", "99999999999999999999999"]:
        add("a branch at xid '%s'" % x,
            request("GET", "/v1/branches/dtx:c1-1-1:s1?xid=" + x, token=PEER))
    add("a 3PC promise, deep nesting", request("POST", "/v1/peer/3pc/promise", "[" * DEEP,
                                               token=PEER))
    add("a 3PC decide, data after the body",
        request("POST", "/v1/peer/3pc/decide", "{} {}", token=PEER))
    add("a 3PC accept as text/plain",
        request("POST", "/v1/peer/3pc/accept", "{}", token=PEER, ctype="text/plain"),
        "415 unsupported_media_type")
    add("a 3PC accept, the gtid twice",
        request("POST", "/v1/peer/3pc/accept", '{"gtid":"%s","gtid":"x"}' % NEVER_ISSUED,
                token=PEER))
    return c


# Bytes that are no HTTP request, or one the HTTP layer refuses: sent to the coordinator and
# to a participant alike.
CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303") + bytes(range(32)) + bytes.fromhex(
    "000020c02bc02fc02cc030cca9cca8c013c014009c009d002f0035c012000a01000058"
    "0000001800160000136578616d706c652e756c666865696d2e6e6574")
GARBAGE = random.Random(13).randbytes(4096)
MHD_400 = "400 mhd"
GONE = "closed"


def http_cases():
    """(name, bytes, allowed outcomes) of the HTTP layer; the same for every port."""
    hc = "GET /healthz HTTP/1.1\r\nHost: x\r\n"
    return [
        ("HTTP/0.9", b"GET /healthz\r\n\r\n", {MHD_400, GONE}),
        ("a request line of one word", b"GARBAGE\r\n\r\n", {MHD_400, GONE}),
        ("a method alone", b"GET\r\n\r\n", {MHD_400, GONE}),
        ("a request line with a fourth part", b"GET /healthz HTTP/1.1 x\r\nHost: x\r\n\r\n",
         {MHD_400}),
        ("version HTTP/x.y", b"GET /healthz HTTP/x.y\r\nHost: x\r\n\r\n", {MHD_400}),
        ("version FTP/1.0", b"GET /healthz FTP/1.0\r\nHost: x\r\n\r\n", {MHD_400}),
        ("version HTTP/2.0", b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", {"505 mhd"}),
        ("a header of 100 kB", (hc + "X-Big: " + "a" * 100000 + "\r\n\r\n").encode(),
         {"431 mhd"}),
        ("5000 headers", (hc + "".join("X-%d: y\r\n" % i for i in range(5000)) + "\r\n").encode(),
         {"431 mhd"}),
        ("a header without a colon", (hc + "Broken\r\n\r\n").encode(), {MHD_400}),
        # RFC 9112 5.2: a server either refuses an obs-fold (400) or reads it as a space
        # (libmicrohttpd 0.9.75 does): the request is then the good GET /healthz it is
        ("a header line folded", (hc + "X-A: b\r\n c\r\n\r\n").encode(), {MHD_400, "200 json"}),
        ("Content-Length -1", (hc + "Content-Length: -1\r\n\r\n").encode(), {MHD_400}),
        ("Content-Length 2^70", (hc + "Content-Length: 1180591620717411303424\r\n\r\n").encode(),
         {"413 mhd"}),
        ("Content-Length in hex", (hc + "Content-Length: 0x10\r\n\r\n").encode(), {MHD_400}),
        ("a chunk size that is no number",
         (hc + "Transfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n").encode(), {MHD_400}),
        ("a chunk size of 2^80",
         (hc + "Transfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nab\r\n").encode(),
         {"413 mhd"}),
        ("garbage bytes", GARBAGE, {MHD_400, GONE}),
        ("a TLS ClientHello", CLIENT_HELLO, {MHD_400, GONE}),
        ("NUL bytes", b"\x00" * 1024, {MHD_400, GONE}),
    ]


def attack_cases():
    """Every case: (name, target, bytes, allowed outcomes, how); target "coord" or "agent",
    how "answer" (read one answer), "half-close" (the request cut short, then our side of the
    connection shut) or "hold" (cut short and kept open: the server must close it)."""
    cases = [(n, "coord", d, a, "answer") for n, d, a in client_cases() + admin_cases()]
    cases += [(n, "agent", d, a, "answer") for n, d, a in participant_cases()]
    for n, d, a in http_cases():
        cases.append(("coordinator http: " + n, "coord", d, a, "answer"))
        cases.append(("participant http: " + n, "agent", d, a, "answer"))
    body = ops().encode()
    cut = tx(body + b" " * 100, length=len(body) + 200)[:-150]
    for target in ("coord", "agent"):
        who = "coordinator" if target == "coord" else "participant"
        cases.append((who + ": a body cut short, then half-closed", target, cut, {GONE},
                      "half-close"))
        cases.append((who + ": a body cut short, held open", target, cut, {GONE}, "hold"))
        cases.append((who + ": headers cut short, held open", target,
                      b"POST /v1/transactions HTTP/1.1\r\nHost: x\r\nContent-Le", {GONE}, "hold"))
    return cases


# Pipelined: several requests in one write on one connection; each must get its own answer,
# in order. (The good healthz answers 200 with a JSON body.)
PIPELINE = [
    (request("GET", "/healthz", token=None), "200 json"),
    (tx("{bad"), BAD),
    (tx(ops(), ctype="text/plain"), "415 unsupported_media_type"),
    (request("GET", "/nope"), "404 not_found"),
    (tx(ops(), token="nope"), "401 unauthorized"),
    (tx(b'{"ops":[{"shard":"s1","sql":"SELECT \xff"}]}'), BAD),
    (request("GET", "/v1/transactions", token=CLIENT), "403 forbidden"),
    (tx('{"ops":[],"ops":[]}'), BAD),
]


# ---- the attack: sending and classifying -------------------------------------------------

def outcome_of(status, body):
    """The outcome string of one answer (see the top of this file)."""
    try:
        doc = json.loads(body)  # bytes: decoded as UTF-8, strictly
    except ValueError:
        return "%d mhd" % status
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict) and isinstance(err.get("code"), str) and \
            isinstance(err.get("message"), str) and err["message"]:
        return "%d %s" % (status, err["code"])
    return "%d json" % status


class Conn:
    """One attacking connection from a source address of its own."""

    def __init__(self, port, src, timeout):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.bind((src, 0))
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        self.buf = b""
        self.eof = False

    def send(self, data):
        try:
            self.s.sendall(data)
        except OSError:
            pass  # the server may close before reading it all (431, 413): its answer tells

    def more(self):
        """Reads more; False at the end of the stream (or a reset). socket.timeout escapes."""
        if self.eof:
            return False
        try:
            chunk = self.s.recv(65536)
        except ConnectionError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def answer(self):
        """The next answer, skipping 1xx ones: (status, body), or None when the server closed
        the connection first."""
        while True:
            while b"\r\n\r\n" not in self.buf:
                if not self.more():
                    return None
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.split(b"\r\n")
            status = int(lines[0].split()[1])
            if 100 <= status < 200:
                continue
            length = 0
            for ln in lines[1:]:
                k, _, v = ln.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            while len(self.buf) < length:
                if not self.more():
                    break
            body, self.buf = self.buf[:length], self.buf[length:]
            return status, body

    def close(self):
        self.s.close()


class Attacker:
    def __init__(self, cfg):
        self.coord = cfg["coord"]
        self.agents = cfg["agents"]
        self.seconds = cfg["seconds"]
        self.threads = cfg["threads"]
        self.cases = attack_cases()
        self.lock = threading.Lock()
        self.counts = collections.defaultdict(collections.Counter)  # case -> outcome -> n
        self.slowest = collections.defaultdict(float)  # case -> seconds
        self.sent = 0
        self.crashed = []  # tracebacks of attacking threads that died
        self.pushed = collections.Counter()  # case -> attempts closed unanswered, then sent again

    def port(self, target, rng):
        return self.coord if target == "coord" else rng.choice(self.agents)

    def run_case(self, case, rng):
        name, target, data, _, how = case
        src = "127.0.8.%d" % rng.randint(1, 250)
        start = time.time()
        try:
            c = Conn(self.port(target, rng), src, ANSWER_BOUND_S + 4)
        except OSError as e:
            return "could not connect: %s" % e, time.time() - start
        try:
            c.send(data)
            if how == "half-close":
                c.s.shutdown(socket.SHUT_WR)
            if how == "answer":
                ans = c.answer()
                got = GONE if ans is None else outcome_of(*ans)
            else:
                while c.more():
                    pass
                got = GONE if not c.buf else "answered: " + c.buf[:60].decode("latin-1")
        except socket.timeout:
            got = "no answer and not closed within %.0f s" % (ANSWER_BOUND_S + 4)
        except (OSError, ValueError, IndexError) as e:
            got = "unreadable answer: %r" % e
        finally:
            c.close()
        return got, time.time() - start

    def run_pipeline(self, rng):
        src = "127.0.8.%d" % rng.randint(1, 250)
        start = time.time()
        got = []
        try:
            c = Conn(self.coord, src, ANSWER_BOUND_S + 4)
            c.send(b"".join(d for d, _ in PIPELINE))
            for _ in PIPELINE:
                ans = c.answer()
                got.append(GONE if ans is None else outcome_of(*ans))
                if ans is None:
                    break
            c.close()
        except (OSError, ValueError, IndexError) as e:
            got.append("error: %r" % e)
        want = [w for _, w in PIPELINE]
        return ("every answer, in order" if got == want else "answers %s" % got), \
            time.time() - start

    def attempt(self, case, rng):
        """run_case, and once more when a case that must be answered was closed unanswered:
        when every connection slot is full, the daemon pushes out the connection that waited
        longest without sending (docs/security.md), which on a loaded machine can be ours,
        between its connect and its send. A daemon that closes on some input without
        answering closes the second attempt too. Counted: the test bounds how often."""
        got, took = self.run_case(case, rng)
        if case[4] == "answer" and got == GONE and GONE not in case[3]:
            with self.lock:
                self.pushed[case[0]] += 1
            got, took = self.run_case(case, rng)
        return got, took

    def attempt_pipeline(self, rng):
        got, took = self.run_pipeline(rng)
        if got == "answers %s" % [GONE]:
            with self.lock:
                self.pushed["coordinator: pipelined requests"] += 1
            got, took = self.run_pipeline(rng)
        return got, took

    def record(self, name, got, took):
        with self.lock:
            self.counts[name][got] += 1
            self.slowest[name] = max(self.slowest[name], took)
            self.sent += 1

    def worker(self, seed, end):
        try:
            self.attack(seed, end)
        except BaseException:  # an attacker that stops early must not pass for one that ran
            with self.lock:
                self.crashed.append(traceback.format_exc())
            raise

    def attack(self, seed, end):
        rng = random.Random(seed)
        while time.time() < end:
            order = list(self.cases) + [None]
            rng.shuffle(order)
            for case in order:
                if time.time() >= end:
                    break
                if case is None:
                    self.record("coordinator: pipelined requests", *self.attempt_pipeline(rng))
                else:
                    self.record(case[0], *self.attempt(case, rng))

    def run(self):
        raise_fd_limit(8192)
        rate = REOPEN_RATE
        srcs = ["127.0.%d.%d" % (b, i) for b in (1, 2) for i in range(1, 101)]
        floods = {
            "coordinator: 1500 idle connections": Flood(self.coord, 1500, srcs[:100], rate=rate),
            "coordinator: 40 connections dripping a header byte every 200 ms":
                Flood(self.coord, 40, ["127.0.3.%d" % i for i in range(1, 11)], drip=0.2,
                      rate=rate),
        }
        for i, port in enumerate(self.agents):
            floods["participant %d: 400 idle connections" % (i + 1)] = \
                Flood(port, 400, ["127.0.4.%d" % j for j in range(1 + 50 * i, 51 + 50 * i)],
                      rate=rate)
        floods["participant 1: 20 dripping connections"] = \
            Flood(self.agents[0], 20, ["127.0.6.%d" % i for i in range(1, 6)], drip=0.2,
                  rate=rate)
        for f in floods.values():
            f.thread.start()
        end = time.time() + self.seconds
        ts = [threading.Thread(target=self.worker, args=(s, end)) for s in range(self.threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        for f in floods.values():
            f.stop()
        return {
            "crashed": self.crashed,
            "pushed": dict(self.pushed),
            "sent": self.sent,
            "cases": {c[0]: {"allowed": sorted(c[3]), "outcomes": dict(self.counts[c[0]]),
                             "slowest": self.slowest[c[0]], "how": c[4]} for c in self.cases},
            "pipeline": {"outcomes": dict(self.counts["coordinator: pipelined requests"]),
                         "slowest": self.slowest["coordinator: pipelined requests"]},
            "floods": {k: {"opened": f.opened, "closed": len(f.closed_after),
                           "longest": max(f.closed_after, default=0.0), "drip": f.drip}
                       for k, f in floods.items()},
        }


def attack_main(arg):
    print(json.dumps(Attacker(json.loads(arg)).run()))


# ---- the good clients -------------------------------------------------------------------------


class PushedOut(Exception):
    """The daemon closed a good client's connection before answering. When every connection
    slot is full it pushes out the one that waited longest for a request, never a new one
    that has had no time to send: a good client, sending at once, never meets this. (It
    did: a client that closes after each answer and connects again at once holds two
    connections for a moment, which made its new one the victim.) The request is sent again
    with its key; more than one in a thousand fails the test (check_good_traffic)."""


class Bank:
    """Transfers between accounts on two shards, each with its ledger rows, as tests/soak.py
    does; the last worker runs them as interactive transactions."""

    def __init__(self, port):
        self.port = port
        self.lock = threading.Lock()
        self.done = []  # (start, end, outcome, interactive)
        self.answers = {}  # transfer id -> "committed" / "aborted"
        self.failures = []  # requests of good clients that did not get a proper answer
        self.retries = 0
        self.requests = 0
        self.pushed = []  # requests whose connection the daemon closed before answering
        self.stopping = threading.Event()

    def post(self, n, path, body):
        """One request from worker n's address, on a connection of its own: (status, body).
        PushedOut when the daemon closed the connection before it answered."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15,
                                          source_address=("127.0.5.%d" % (n + 1), 0))
        with self.lock:
            self.requests += 1
        try:
            conn.request("POST", path, body=json.dumps(body),
                         headers={"Content-Type": JSON, "Authorization": "Bearer " + CLIENT})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read() or b"null")
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected) as e:
            with self.lock:
                self.pushed.append("%s %s: %r" % (path, body.get("idempotency_key", ""), e))
            raise PushedOut() from e
        finally:
            conn.close()

    def fail(self, what):
        with self.lock:
            self.failures.append(what)

    def transfer_ops(self, rng, n, tid):
        """Worker n moves money among accounts of its own (PER_WORKER of them on every shard):
        two transfers that lock the same rows on two shards in opposite orders wait for each
        other until timeout_ms, a deadlock no shard can see, which would abort good transfers
        for reasons that have nothing to do with the attack."""
        return random_ledger_transfer(rng, tid, SHARDS, PER_WORKER, base=n * PER_WORKER)

    def one_shot(self, n, tid, o):
        """Sends until a definite answer, with the same key; 'committed', 'aborted' or None."""
        body = {"idempotency_key": tid, "timeout_ms": 3000, "ops": o}
        for _ in range(20):
            try:
                status, ans = self.post(n, "/v1/transactions", body)
            except PushedOut:
                with self.lock:
                    self.retries += 1
                continue  # the same key again: it never runs twice
            except (OSError, ValueError) as e:
                status, ans = None, repr(e)
            if status == 200 and ans.get("status") == "committed":
                return "committed"
            if status == 409 and ans["error"]["code"] == "expect_rows_mismatch":
                return "aborted"  # the account had too little: the bank's own refusal
            self.fail("transfer %s: %s %s" % (tid, status, ans))
            if status == 409:
                return "aborted"  # decided (a retry with the key would hear it again)
            with self.lock:
                self.retries += 1
            time.sleep(0.2)
        return None

    def interactive(self, n, tid, o):
        """'committed', 'aborted' or None (its outcome is not known)."""
        gtid = None
        try:
            status, ans = self.post(n, "/v1/transactions", {"interactive": True,
                                                             "timeout_ms": 3000})
            if status != 201:
                self.fail("begin: %s %s" % (status, ans))
                return None
            gtid = ans["gtid"]
            for part in (o[:2], o[2:]):
                status, ans = self.post(n, "/v1/transactions/%s/ops" % gtid, {"ops": part})
                if status == 409 and ans["error"]["code"] == "expect_rows_mismatch":
                    return "aborted"
                if status != 200:
                    self.fail("interactive %s ops: %s %s" % (gtid, status, ans))
                    return "aborted" if status == 409 else None
            status, ans = self.post(n, "/v1/transactions/%s/commit" % gtid, {})
        except PushedOut:
            if gtid:  # its outcome is not known; abort it rather than hold its rows until idle
                try:
                    self.post(n, "/v1/transactions/%s/abort" % gtid, {})
                except (OSError, ValueError, PushedOut):
                    pass
            return None
        except (OSError, ValueError) as e:
            self.fail("interactive transfer %s: %r" % (tid, e))
            return None
        if status != 200:
            self.fail("interactive commit %s: %s %s" % (gtid, status, ans))
        return {200: "committed", 409: "aborted"}.get(status)

    def worker(self, n):
        rng = random.Random(n)
        interactive = n == WORKERS - 1
        while not self.stopping.is_set():
            tid = "t-%d-%s" % (n, uuid.uuid4().hex[:12])
            start = time.time()
            o = self.transfer_ops(rng, n, tid)
            outcome = self.interactive(n, tid, o) if interactive else self.one_shot(n, tid, o)
            with self.lock:
                self.done.append((start, time.time(), outcome, interactive))
                if outcome:
                    self.answers[tid] = outcome

    def window(self, t0, t1):
        """Transfers started in [t0, t1): (commits a second, p99 latency of the commits)."""
        took = sorted(e - s for s, e, o, _ in self.done if t0 <= s < t1 and o == "committed")
        if not took:
            return 0.0, float("inf")
        return len(took) / (t1 - t0), took[min(len(took) - 1, int(0.99 * len(took)))]

    def median(self, t0, t1):
        """The median latency of the commits of transfers started in [t0, t1)."""
        took = sorted(e - s for s, e, o, _ in self.done if t0 <= s < t1 and o == "committed")
        return took[len(took) // 2] if took else float("inf")

    def longest_gap(self, t0, t1):
        """The longest time in [t0, t1] in which no good transfer committed (s): a stall."""
        ends = sorted(e for _, e, o, _ in self.done if o == "committed" and t0 <= e <= t1)
        return max(b - a for a, b in zip([t0] + ends, ends + [t1]))


class Watch:
    """Polls the coordinator's /healthz and every participant's throughout, from a good
    client's address: what the attack did to the links."""

    def __init__(self, c):
        self.c = c
        self.seen = []  # (time, problem)
        self.polls = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run)

    def get(self, port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5,
                                          source_address=("127.0.5.200", 0))
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def run(self):
        while not self.stopping.wait(0.25):
            try:
                status, body = self.get(self.c.coord_port)
                if status != 200 or set(body["shards"].values()) != {"up"}:
                    self.seen.append((time.time(), "coordinator: %s %s" % (status, body)))
                for sh in self.c.shards:
                    status, body = self.get(sh.agent_port)
                    if status != 200 or body.get("coordinators") != 1:
                        self.seen.append((time.time(), "%s: %s %s" % (sh.name, status, body)))
            except (OSError, ValueError, KeyError) as e:
                self.seen.append((time.time(), "no health answer: %r" % e))
            self.polls += 1


def log_lines(path):
    with open(path, errors="replace") as f:
        return f.read().splitlines()


class HostileInputTest(ClusterTest):
    SHARDS = 3
    COORD = COORD
    AGENT = AGENT
    PG = []  # no statement log: the bank is busy
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        raise_fd_limit(8192)
        super().setUpClass()
        for s in SHARDS:
            cls.c.psql(s, LEDGER_DDL)

    def logs(self):
        return {"coordinator": self.c.coordinator.log,
                **{sh.name: sh.agent.log for sh in self.c.shards}}

    def attack(self, seconds):
        cfg = {"coord": self.c.coord_port, "agents": [sh.agent_port for sh in self.c.shards],
               "seconds": seconds, "threads": 8}
        return subprocess.Popen([sys.executable, os.path.abspath(__file__), "attack",
                                 json.dumps(cfg)], stdout=subprocess.PIPE, text=True)

    def test_bad_input_is_refused_while_the_bank_keeps_committing(self):
        pids = {"coordinator": self.c.coordinator.pid,
                **{sh.name: sh.agent.pid for sh in self.c.shards}}
        bank, watch = Bank(self.c.coord_port), Watch(self.c)
        workers = [threading.Thread(target=bank.worker, args=(n,)) for n in range(WORKERS)]
        for t in workers:
            t.start()
        watch.thread.start()
        try:
            time.sleep(1)  # warming up
            calm0 = time.time()
            time.sleep(CALM_S)
            before = {k: len(log_lines(p)) for k, p in self.logs().items()}
            attack0 = time.time()
            attacker = self.attack(ATTACK_S)
            out, _ = attacker.communicate(timeout=ATTACK_S + 60)
            attack1 = time.time()
            after = {k: len(log_lines(p)) for k, p in self.logs().items()}
            time.sleep(1)
        finally:
            bank.stopping.set()
            watch.stopping.set()
            for t in workers:
                t.join()
            watch.thread.join()
        self.assertEqual(attacker.returncode, 0, "the attacker failed")
        report = json.loads(out)
        self.assertEqual(report["crashed"], [], "attacking threads that died")
        self.print_report(report, bank, calm0, attack0, attack1, before, after)
        self.check_every_answer(report)
        self.check_daemons(pids, before, after, attack1 - attack0)
        self.assertEqual(watch.seen, [], "the links or a daemon's health suffered")
        self.assertGreater(watch.polls, ATTACK_S)
        self.check_good_traffic(bank, calm0, attack0, attack1)
        self.check_invariants(bank)

    # ---- what is checked -------------------------------------------------------------------

    def check_every_answer(self, report):
        wrong, slow, never = [], [], []
        for name, r in report["cases"].items():
            if not r["outcomes"]:
                never.append(name)
            bad = {o: n for o, n in r["outcomes"].items() if o not in r["allowed"]}
            if bad:
                wrong.append("%s: %s (allowed: %s)" % (name, r["outcomes"], r["allowed"]))
            if r["slowest"] > ANSWER_BOUND_S:
                slow.append("%s: %.2f s" % (name, r["slowest"]))
        if set(report["pipeline"]["outcomes"]) != {"every answer, in order"}:
            wrong.append("pipelined requests: %s" % report["pipeline"]["outcomes"])
        self.assertEqual(never, [], "cases the attacker never got to")
        self.assertLessEqual(sum(report["pushed"].values()), max(3, report["sent"] // 1000),
                             "attempts closed unanswered (sent again): %s" % report["pushed"])
        self.assertEqual(wrong, [], "bad requests answered otherwise than they must be")
        self.assertEqual(slow, [], "answered or closed later than the deadline allows")
        self.assertGreater(report["sent"], 20 * len(report["cases"]), "the attack was feeble")
        for name, f in report["floods"].items():
            self.assertGreater(f["closed"], 0, "%s: the server never closed any" % name)
            if f["drip"]:  # closed at the deadline, however slowly they keep sending
                self.assertLess(f["longest"], ANSWER_BOUND_S, name)

    def check_daemons(self, pids, before, after, seconds):
        now = {"coordinator": self.c.coordinator, **{sh.name: sh.agent for sh in self.c.shards}}
        for name, proc in now.items():
            self.assertTrue(proc.alive(), "%s died" % name)
            self.assertEqual(proc.pid, pids[name], "%s was restarted" % name)
        self.assertEqual(sanitizer_reports(self.c), [])
        # at most one line a second per kind of refusal and closed connection (httpd.c
        # notes: 6 kinds), and a few others
        bound = 8 * seconds + 10
        grown = {k: after[k] - before[k] for k in after}
        self.assertLessEqual(max(grown.values()), bound, "log lines during the attack: %s" % grown)
        lines = log_lines(self.c.coordinator.log)[before["coordinator"]:]
        self.assertEqual([ln for ln in lines if "participant link" in ln], [])

    def check_good_traffic(self, bank, calm0, attack0, attack1):
        calm_rate, calm_p99 = bank.window(calm0, attack0)
        rate, p99 = bank.window(attack0, attack1)
        self.assertEqual(bank.failures, [], "good clients' requests that failed")
        # A good client's connection may be the one pushed out, rarely: with the flood spread
        # over hundreds of addresses holding as few connections as a good client, and every
        # flood connection younger than 100 ms, nothing tells them apart (docs/security.md,
        # "What this does not stop"). Its request is then sent again, as an HTTP client does
        # on a connection closed before any answer (the transfer's idempotency key makes that
        # safe), and must then be answered. Seen once in 21,253 good requests on a fresh root.
        self.assertLessEqual(len(bank.pushed), max(1, bank.requests // 1000),
                             "good clients' connections closed before an answer: %s" % bank.pushed)
        self.assertGreater(calm_rate, 2, "the bank hardly ran in the calm period")
        self.assertGreaterEqual(rate, 0.3 * calm_rate, "commits a second under attack")
        self.assertLess(p99, 2.0, "p99 latency of a transfer under attack (s)")
        # a stall: as long as the p99 bound (the machine's own load alone made ~1 s once)
        self.assertLess(bank.longest_gap(attack0, attack1), 2.0,
                        "the longest time under attack without a good commit (s)")
        interactive = sum(1 for s, _, o, i in bank.done if i and o == "committed" and s >= attack0)
        self.assertGreater(interactive, 0, "no interactive transfer committed under attack")

    def check_invariants(self, bank):
        self.assert_no_prepared(timeout=30)
        total = sum(int(self.c.psql(s, "SELECT sum(balance) FROM accounts")[0][0]) for s in SHARDS)
        self.assertEqual(total, 100 * START * len(SHARDS))  # harness: accounts 1..100 of 1000
        legs = {}
        for s in SHARDS:
            for tid, leg in self.c.psql(s, "SELECT transfer_id, leg FROM ledger"):
                legs.setdefault(tid, set()).add(leg)
        self.assertEqual([t for t, g in legs.items() if g != {"0", "1"}], [],
                         "transfers with one ledger row")
        self.assertEqual([t for t, o in bank.answers.items() if o == "committed" and t not in legs],
                         [], "transfers answered committed but not in the ledger")
        self.assertEqual([t for t, o in bank.answers.items() if o == "aborted" and t in legs], [],
                         "transfers answered aborted but in the ledger")
        for s in SHARDS:
            self.assertEqual(self.c.psql(
                s, "SELECT a.id, a.balance FROM accounts a LEFT JOIN ledger l ON l.account = a.id "
                   "GROUP BY a.id, a.balance HAVING a.balance <> %d + coalesce(sum(l.amount), 0)"
                   % START), [], "%s: balances that differ from their ledger replay" % s)

    def print_report(self, report, bank, calm0, attack0, attack1, before, after):
        calm_rate, calm_p99 = bank.window(calm0, attack0)
        rate, p99 = bank.window(attack0, attack1)
        groups = collections.defaultdict(collections.Counter)
        for name, r in report["cases"].items():
            groups[name.split(":")[0]].update(r["outcomes"])
        print("\n  attack: %d requests in %.0f s from 8 threads, %d cases" %
              (report["sent"], attack1 - attack0, len(report["cases"]) + 1))
        for g, outs in sorted(groups.items()):
            print("    %-20s %s" % (g, dict(outs.most_common())))
        print("    %-20s %s" % ("pipelined", report["pipeline"]["outcomes"]))
        print("    closed unanswered, then sent again and answered: %s" % (report["pushed"] or 0))
        for name, f in report["floods"].items():
            print("    %s: %d opened, %d closed by the server (the longest lived %.2f s)" %
                  (name, f["opened"], f["closed"], f["longest"]))
        print("  good clients: calm %.1f commits/s (p50 %.0f ms, p99 %.0f ms), under attack %.1f "
              "commits/s (p50 %.0f ms, p99 %.0f ms, longest without a commit %.0f ms); %d "
              "transfers answered, %d retries" %
              (calm_rate, 1000 * bank.median(calm0, attack0), 1000 * calm_p99, rate,
               1000 * bank.median(attack0, attack1), 1000 * p99,
               1000 * bank.longest_gap(attack0, attack1), len(bank.answers), bank.retries))
        print("  good requests: %d, of which %d pushed out before an answer (sent again)%s" %
              (bank.requests, len(bank.pushed),
               "".join("\n    " + p for p in bank.pushed[:3])))
        print("  log lines during the attack: %s" % {k: after[k] - before[k] for k in after})
        for f in bank.failures[:10]:
            print("  a good request that failed: %s" % f)


if __name__ == "__main__":
    if sys.argv[1:2] == ["attack"]:
        attack_main(sys.argv[2])
    else:
        sys.exit("usage: %s attack JSON (the attacker of HostileInputTest)" % sys.argv[0])
