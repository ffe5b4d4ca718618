#!/usr/bin/python3
"""make-seeds - rebuilds the fuzz targets' seed corpora (tests/fuzz/corpus/NAME) and
dictionaries (tests/fuzz/NAME.dict) from a real run.

  tests/fuzz/make-seeds.py [--bin DIR]     (DIR: dtx binaries, default bin/; needs strace)

It starts a two-shard cluster (tools/dtx_cluster.py), attaches strace to the coordinator,
restarts both participants (so the streams open again, with their hellos) and runs a mix of
transactions: 2PC and 3PC, one-shot and interactive, committed, aborted (expect_rows,
constraint violations, a timeout), idempotent retries, reads of every common column type,
an operator's decision. Then it restarts the coordinator (a new segment, a checkpoint) and
stops the cluster. The seeds are:

  api     every request body it sent, and refused ones
  msg     every peer frame the coordinator sent or received (both directions, with
          RESULTS trailers), one file per distinct frame
  stream  the coordinator's received and sent byte streams, in pieces of whole frames
  dlog    the coordinator's decision log (control byte 0, see fuzz_dlog.c), cut at every
          frame boundary and inside frames, with flipped bits and zeroed tails, and
          with control bits set; plus a log with one record of every type, written here
  gid     the gtids and gids of the run

Files are named by the SHA-1 of their content (as libFuzzer names what it finds), so a
rerun adds what is new and keeps what is there; delete a corpus directory first to start
it over.
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dtx_cluster  # noqa: E402

CORPUS = os.path.join(HERE, "corpus")


def save(name, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(CORPUS, name)
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, hashlib.sha1(data).hexdigest())
    if not os.path.exists(path):
        with open(path, "wb") as f:
            f.write(data)


# ---- the decision log's format (coordinator/dlog_format.c, drec.h) ----------------

def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


CRC_TABLE = _crc32c_table()


def crc32c(data, crc=0):
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def seg_header(salt, segno):
    h = b"DTXDLOG\0" + struct.pack("<IIQI", 1, salt, segno, 0)
    return h + struct.pack("<I", crc32c(h))


def frame(salt, ftype, payload):
    rest = struct.pack("<IB", len(payload), ftype) + payload
    return struct.pack("<I", crc32c(rest, crc32c(struct.pack("<I", salt)))) + rest


def s16(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def s32(s):
    b = s.encode()
    return struct.pack("<I", len(b)) + b


def rec(rtype, body):
    return struct.pack("<BI", rtype, len(body)) + body


def every_record_type():
    """A log of two segments holding one record of each type (drec.h)."""
    q = lambda v: struct.pack("<Q", v)  # noqa: E731
    u8 = lambda v: struct.pack("<B", v)  # noqa: E731
    wall = 1767225600000000
    commit = (s16("c1-2-1") + q(wall) + u8(2) + s16("k-1") + q(0x1234) + struct.pack("<H", 2) +
              s16("s1") + q(5001) + s16("s2") + q(7002) +
              s32('{"gtid":"c1-2-1","status":"committed","results":[]}') +
              s16("7301234567890123456:1") + s16("7301234567890123457:1"))
    old_commit = (s16("c1-2-2") + q(wall) + u8(2) + s16("") + q(0) + struct.pack("<H", 1) +
                  s16("s1") + q(5002) + s32(""))
    batch1 = b"".join([
        rec(1, q(2) + q(wall) + s16("c1")),
        rec(2, commit),
        rec(2, old_commit),
        rec(3, s16("c1-2-1") + q(wall)),
        rec(4, s16("c1-2-3") + q(wall) + u8(1) + u8(0) + s16("s2") + s16("ops@host") +
            s16("branch lost")),
        rec(4, s16("c1-2-4") + q(wall) + u8(2) + u8(1) + s16("") + s16("ops") + s16("gone")),
    ])
    batch2 = b"".join([
        rec(5, q(3) + q(5) + q(wall) + s16("s2")),
        rec(6, s16("c1-2-1") + q(wall) + s16("s1") + u8(1) + u8(1) + s16("did the opposite")),
        rec(6, s16("c1-2-2") + q(wall) + s16("s2") + u8(2) + u8(0) + s16("hazard")),
        rec(7, commit.replace(b"c1-2-1", b"c1-2-9")),
        rec(8, s16("c1-2-9") + q(wall) + q(3) + s16("p:s1")),
        rec(9, s16("c1-2-9") + q(wall) + q(3) + s16("p:s1") + u8(1)),
        rec(10, s16("c1-2-9") + q(wall) + u8(2)),
    ])
    seg1 = seg_header(0x11111111, 1) + frame(0x11111111, 1, batch1) + frame(0x11111111, 1, batch2)
    checkpoint = rec(1, q(6) + q(wall) + s16("c1")) + rec(2, commit)
    seg2 = (seg_header(0x22222222, 2) + frame(0x22222222, 2, checkpoint) +
            frame(0x22222222, 1, rec(3, s16("c1-2-1") + q(wall))))
    return [seg1, seg2]


def frame_bounds(seg):
    """Offsets where the frames of a segment begin, and its end."""
    out, off = [], 32
    while off + 9 <= len(seg):
        out.append(off)
        off += 9 + struct.unpack_from("<I", seg, off + 4)[0]
    out.append(min(off, len(seg)))
    return out


def dlog_seeds(segs):
    """The log itself and what crashes, torn writes and bit rot make of it (control byte
    first, see fuzz_dlog.c): a few dozen inputs, not every variant."""
    whole = b"".join(segs)
    save("dlog", b"\0" + whole)
    save("dlog", b"\2" + whole)  # repair
    save("dlog", b"\x10" + whole)  # the replay fails
    save("dlog", b"\4" + segs[-1])  # only the newest segment, as segment 2
    last, head = segs[-1], b"".join(segs[:-1])
    bounds = frame_bounds(last)
    picked = sorted(set(bounds[:2] + bounds[len(bounds) // 2:len(bounds) // 2 + 1] + bounds[-2:]))
    for b in picked:  # torn at a frame boundary, in a frame's header, in its payload
        for cut in (b, b + 3, b + 12):
            if cut <= len(last):
                save("dlog", b"\0" + head + last[:cut])
                save("dlog", b"\2" + head + last[:cut] + b"\0" * 600)  # preallocated zeros
    for seg_i, seg in enumerate(segs):
        for b in frame_bounds(seg)[:2]:  # a flipped bit in a frame's length and payload
            for at in (b + 5, b + 12):
                if at < len(seg):
                    bad = bytearray(seg)
                    bad[at] ^= 0x10
                    damaged = b"".join(segs[:seg_i] + [bytes(bad)] + segs[seg_i + 1:])
                    save("dlog", b"\0" + damaged)
                    save("dlog", b"\1" + damaged)  # fixed up: the bit passes the CRC
    save("dlog", b"\0" + whole[:31])  # a header cut short
    save("dlog", b"\0" + b"\0" * 32)  # a zero-filled header


# ---- the run -------------------------------------------------------------------------

STRACE_IO = re.compile(r'^\d+\s+(?:(sendto|read|recvfrom)\((\d+), |<\.\.\. (sendto|read|recvfrom) '
                       r'resumed>)"((?:\\x[0-9a-f]{2})*)"')


def read_strace(path):
    """The bytes each (fd, direction) carried, in order: {(fd, "in"|"out"): bytes}."""
    streams, pending = {}, {}
    with open(path) as f:
        for line in f:
            pid = line.split(None, 1)[0]
            m = re.match(r"^\d+\s+(sendto|read|recvfrom)\((\d+), <unfinished", line)
            if m:
                pending[pid] = int(m.group(2))
                continue
            m = STRACE_IO.match(line)
            if not m:
                continue
            fd = int(m.group(2)) if m.group(2) else pending.pop(pid, -1)
            call = m.group(1) or m.group(3)
            data = bytes.fromhex(m.group(4).replace("\\x", ""))
            key = (fd, "out" if call == "sendto" else "in")
            streams[key] = streams.get(key, b"") + data
    return streams


def frames_in(data):
    """Peer frames found in a byte stream (4-byte big-endian length, then {"t":...)."""
    out, i = [], 0
    while True:
        i = data.find(b'{"t":"', i)
        if i < 0:
            return out
        if i >= 4:
            n = struct.unpack_from(">I", data, i - 4)[0]
            if i + n <= len(data):
                out.append((i - 4, data[i:i + n]))
                i += n
                continue
        i += 1


def peer_seeds(streams):
    seen_types = {}
    for _, data in sorted(streams.items()):
        found = frames_in(data)
        for _, payload in found:
            save("msg", payload)
            m = re.match(rb'\{"t":"([a-z_]+)"', payload)
            if m:
                seen_types[m.group(1).decode()] = seen_types.get(m.group(1).decode(), 0) + 1
        # the stream as it came: whole frames, at most 4 KiB a piece
        piece = b""
        for _, payload in found:
            framed = struct.pack(">I", len(payload)) + payload
            if piece and len(piece) + len(framed) > 4096:
                save("stream", piece)
                piece = b""
            piece += framed
        if piece:
            save("stream", piece)
    return seen_types


def run_cluster(bindir, work):
    c = dtx_cluster.Cluster(os.path.join(work, "cluster"), shards=2, bindir=bindir,
                            coord={"log_prealloc_bytes": 4096})
    bodies = []
    gtids = []

    def post(path, body):
        text = json.dumps(body)
        bodies.append(text)
        status, answer = c.request("POST", path, text)
        if isinstance(answer, dict) and answer.get("gtid"):
            gtids.append(answer["gtid"])
        return status, answer

    c.start()
    trace = os.path.join(work, "coordinator.strace")
    strace = subprocess.Popen(["strace", "-f", "-qq", "-xx", "-s", "1048576", "-o", trace,
                               "-e", "trace=sendto,read,recvfrom", "-p",
                               str(c.coordinator.pid)])
    try:
        time.sleep(1.5)
        for sh in c.shards:
            c.psql(sh.i, "CREATE TABLE accounts (id text PRIMARY KEY, "
                         "balance int NOT NULL CHECK (balance >= 0))")
            c.psql(sh.i, "CREATE TABLE kinds (id int PRIMARY KEY, i2 smallint, i8 bigint, "
                         "num numeric, f4 real, f8 float8, b bool, j json, jb jsonb, t text, "
                         "ts timestamptz, arr int[], by bytea, u uuid)")
            c.psql(sh.i, "INSERT INTO accounts VALUES ('a%d', 100), ('b%d', 100)"
                   % (sh.i + 1, sh.i + 1))
            c.psql(sh.i, "INSERT INTO kinds VALUES (1, -32768, 9223372036854775807, "
                         "123456789012345678901234567890.000000001, 'NaN', '-Infinity', true, "
                         "'{\"a\": [1, 2.50, 1e400, 9007199254740993]}', "
                         "'{\"b\": {\"c\": null}}', E'quote \" backslash \\\\ nl \\n tab \\t', "
                         "'2026-11-24 13:06:01.123+00', '{1,NULL,3}', '\\x00ff', "
                         "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'), "
                         "(2, NULL, 42, 0.1, 1.5e-7, 1e300, false, 'null', '[]', '', NULL, "
                         "'{}', '', NULL)")
        for sh in c.shards:  # the streams open again: both hellos
            c.restart(sh.name)
        c.wait_healthy()
        transfer = [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 "
                                   "WHERE id = $2 AND balance >= $1", "params": [10, "a1"],
             "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
             "params": [10, "a2"], "expect_rows": 1},
        ]
        post("/v1/transactions", {"protocol": "2pc", "timeout_ms": 5000,
                                  "idempotency_key": "transfer-1", "ops": transfer})
        post("/v1/transactions", {"protocol": "2pc", "timeout_ms": 5000,
                                  "idempotency_key": "transfer-1", "ops": transfer})
        post("/v1/transactions", {"protocol": "3pc", "idempotency_key": "transfer-3pc",
                                  "ops": transfer})
        status, aborted = post("/v1/transactions", {"ops": [dict(transfer[0], params=[1000, "a1"]),
                                                            transfer[1]]})
        post("/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "INSERT INTO accounts VALUES ($1, $2)", "params": ["b1", 5]},
            transfer[1]]})
        post("/v1/transactions", {"ops": [
            {"shard": "s2", "sql": "UPDATE accounts SET balance = -1 WHERE id = 'b2'"},
            transfer[0]]})
        post("/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "SELECT * FROM kinds ORDER BY id"},
            {"shard": "s2", "sql": "SELECT id, i8, num, jb, arr FROM kinds WHERE id = $1",
             "params": [1]}]})
        post("/v1/transactions", {"ops": [{"key": "acct:9", "sql": "SELECT * FROM kinds"}]})
        post("/v1/transactions", {"ops": [{"shard": "s1", "sql": "SELECT $1::int + $2, $3::text, "
                                           "$4::jsonb, $5::bool", "params": [1, 2.5, None,
                                                                              {"x": [1]}, True]}]})
        post("/v1/transactions", {"timeout_ms": 300, "ops": [
            {"shard": "s1", "sql": "SELECT pg_sleep(2)"}, transfer[1]]})
        post("/v1/transactions", {"ops": [{"shard": "s2", "sql": "SELEKT 1"}, transfer[0]]})
        for protocol in ("2pc", "3pc"):
            status, begun = post("/v1/transactions", {"interactive": True, "protocol": protocol,
                                                      "timeout_ms": 10000})
            g = begun["gtid"]
            post("/v1/transactions/%s/ops" % g, {"ops": [
                {"shard": "s1", "sql": "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE",
                 "params": ["a1"]}]})
            post("/v1/transactions/%s/ops" % g, {"ops": transfer})
            post("/v1/transactions/%s/commit" % g, {})
        status, begun = post("/v1/transactions", {"interactive": True})
        post("/v1/transactions/%s/ops" % begun["gtid"], {"ops": [transfer[0]]})
        post("/v1/transactions/%s/abort" % begun["gtid"], {})
        # an operator's decision that agrees with the (presumed) abort: an OPERATOR record
        subprocess.run([os.path.join(bindir, "dtxctl"), "--coordinator", c.url(), "resolve",
                        aborted["gtid"], "--abort", "--shard", "s2", "--reason", "seed corpus"],
                       stdout=subprocess.DEVNULL, check=True)
        time.sleep(0.5)
    finally:
        strace.terminate()
        strace.wait()
    first = read_segments(c.log_dir)
    try:
        c.restart("coordinator")  # a new segment opening with a checkpoint; the old one goes
        post("/v1/transactions", {"idempotency_key": "after-restart", "ops": transfer})
        time.sleep(0.3)
    finally:
        c.stop()
    return bodies, gtids, read_strace(trace), first, read_segments(c.log_dir)


def read_segments(log_dir):
    segs = []
    for name in sorted(os.listdir(log_dir)):
        if name.startswith("dlog-"):
            with open(os.path.join(log_dir, name), "rb") as f:
                segs.append(f.read())
    return segs


# ---- seeds that need no run ----------------------------------------------------------

REFUSED_REQUESTS = [
    "", "null", "[]", "{}", '{"ops":[]}', '{"ops":{}}', '{"ops":[1]}',
    '{"ops":[{"shard":"s1"}]}', '{"ops":[{"sql":"SELECT 1"}]}',
    '{"ops":[{"shard":"s1","key":"k","sql":"SELECT 1"}]}',
    '{"ops":[{"shard":"nope","sql":"SELECT 1"}]}',
    '{"ops":[{"shard":"s1","sql":"BEGIN"}]}', '{"ops":[{"shard":"s1","sql":"/* x */ COMMIT"}]}',
    '{"ops":[{"shard":"s1","sql":"SET LOCAL x = 1"}]}',
    '{"ops":[{"shard":"s1","sql":"ROLLBACK TO SAVEPOINT a"}]}',
    '{"ops":[{"shard":"s1","sql":"-- c\\nSET search_path = x"}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT $1","params":[1e309]}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT $1","params":[9007199254740993]}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT $1","params":[1,2,3,4,5,6,7,8,9]}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT 1","expect_rows":-1}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT 1","expect_rows":1.5}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT \\u0000"}]}',
    '{"protocol":"4pc","ops":[{"shard":"s1","sql":"SELECT 1"}]}',
    '{"timeout_ms":0,"ops":[{"shard":"s1","sql":"SELECT 1"}]}',
    '{"timeout_ms":60001,"ops":[{"shard":"s1","sql":"SELECT 1"}]}',
    '{"idempotency_key":"","ops":[{"shard":"s1","sql":"SELECT 1"}]}',
    '{"interactive":true,"idempotency_key":"k"}', '{"interactive":true,"ops":[]}',
    '{"interactive":"yes"}', '{"extra":1,"ops":[{"shard":"s1","sql":"SELECT 1"}]}',
    '{"ops":[{"shard":"s1","sql":"SELECT 1"}]} x', '{"ops":[{"shard":"s1","sql":"SELECT 1"',
    '{"ops":[' + ",".join(['{"key":"k%d","sql":"SELECT 1"}' % i for i in range(17)]) + ']}',
    '{"ops":[{"shard":"s1","sql":"' + "x" * 513 + '"}]}',
    '{"ops":[{"key":"\\u00e9\\ud83d\\ude00","sql":"SELECT 1"}]}',
]

MSG_EXTRA = [  # kinds of frames a short run may not show
    '{"t":"hello","node":"c1","epoch":3}',
    '{"t":"hello","shard":"s1"}',
    '{"t":"accept","gtid":"c1-3-7","ballot":{"counter":0,"node":"c:c1"},"value":"commit"}',
    '{"t":"accepted","gtid":"c1-3-7","ok":false,"promised":{"counter":4,"node":"p:s2"}}',
    '{"t":"ack","gtid":"c1-3-7","outcome":"unknown","error":{"code":"heuristic_hazard",'
    '"message":"the branch is gone"}}',
    '{"t":"vote","gtid":"c1-3-8","vote":"no","error":{"code":"sql_error","message":"m",'
    '"op":1,"sqlstate":"23505","detail":"d","hint":"h","constraint":"c","table":"t",'
    '"column":"x"}}\nnull\n{"rows_affected":1}',
    '{"t":"exec","gtid":"c1-3-9","ops":[{"i":0,"sql":"SELECT 1","params":[],"expect_rows":1}],'
    '"timeout_ms":5000,"idle_ms":30000,"protocol":3}',
    '{"t":"commit","gtid":"c1-3-7","xid":"18446744073709551615","db":"7301234567890123456:1"}',
]

# Tokens for each target's dictionary, as the bytes they stand for.
JSON_WORDS = ['"%s"' % w for w in (
    "t gtid node epoch shard ops i sql params expect_rows timeout_ms idle_ms interactive xid db "
    "vote outcome error code message op sqlstate detail hint constraint table column protocol "
    "peers coordinator shards name url ballot counter promised value ok hello prepare one_phase "
    "commit abort exec executed ack accept accepted yes no readonly committed aborted unknown "
    "c:c1 p:s1 c1-1-1 18446744073709551616 rows_affected columns rows").split()]
DICTS = {
    "api": ['"%s"' % w for w in (
        "protocol 2pc 3pc timeout_ms idempotency_key ops interactive shard key sql params "
        "expect_rows s1 s2 s-3_x").split()] +
    ["true", "false", "null", "1e309", "9007199254740993", "-0", "\\u0000", "\\ud800",
     "SELECT", "BEGIN", "COMMIT", "ROLLBACK TO", "SET LOCAL", "SET TRANSACTION",
     "PREPARE TRANSACTION", "/*", "*/", "--", "$1"],
    "msg": JSON_WORDS + ["true", "false", "null", "\n"],
    "stream": JSON_WORDS + ["true", "false", "null", "\n", "\0\0\0", "\4\0\0\1"],
    "dlog": ["DTXDLOG\0", "\1\0\0\0", "\0\0\0\0", "\2\0", "\xff\xff\xff\xff",
             "\0\0\0\x10"],
    "gid": ["dtx:", "-", ":", "0", "18446744073709551615", "18446744073709551616"],
}


def dict_entry(word):
    """A libFuzzer dictionary entry: quoted, with only \\, \\" and \\xNN escapes."""
    out = []
    for b in word.encode("latin-1"):
        ch = chr(b)
        if ch in '"\\':
            out.append("\\" + ch)
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append("\\x%02x" % b)
    return '"%s"' % "".join(out)


def write_dicts():
    for name, words in DICTS.items():
        with open(os.path.join(HERE, name + ".dict"), "w") as f:
            f.write("# %s.dict - tokens for fuzz_%s (written by make-seeds.py)\n" % (name, name))
            for w in words:
                f.write(dict_entry(w) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "bin"))
    args = ap.parse_args()
    if not shutil.which("strace"):
        sys.exit("make-seeds: needs strace")
    work = tempfile.mkdtemp(prefix="dtx-seeds-")
    os.chmod(work, 0o755)  # PostgreSQL runs as its own user (tools/dtx_cluster.py)
    try:
        bodies, gtids, streams, first, last = run_cluster(os.path.abspath(args.bin), work)
    except Exception:
        print("make-seeds: the run failed; its files are in %s" % work, file=sys.stderr)
        raise
    for b in bodies + REFUSED_REQUESTS:
        save("api", b)
    for b in bodies[:3]:
        save("api", json.dumps(json.loads(b), indent=2))
    types = peer_seeds(streams)
    for m in MSG_EXTRA:
        save("msg", m)
        save("stream", struct.pack(">I", len(m.encode())) + m.encode())
    save("stream", struct.pack(">I", 0x7FFFFFFF) + b"{}")
    dlog_seeds(first)  # the first run's log
    dlog_seeds(last)  # after the restart: one segment, opening with a checkpoint
    dlog_seeds(first + last)  # a crash came before the first run's segment was removed
    dlog_seeds(every_record_type())
    for g in gtids:
        save("gid", g)
        save("gid", "dtx:%s:s1" % g)
    for g in ("c1-18446744073709551615-1", "a-b-c-1-2", "dtx:c1-1-01:s1", "dtx:c1-1-1:",
              "dtx:-1-1:s1", "x" * 48 + "-1-1"):
        save("gid", g)
    write_dicts()
    print("make-seeds: peer frames by type: %s" % json.dumps(types, sort_keys=True))
    print("make-seeds: decision log: %d bytes, then %d after the restart" %
          (sum(map(len, first)), sum(map(len, last))))
    for name in sorted(os.listdir(CORPUS)):
        print("make-seeds: corpus/%s: %d files" % (name, len(os.listdir(os.path.join(CORPUS,
                                                                                      name)))))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
