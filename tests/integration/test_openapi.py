"""docs/openapi.yaml against real answers.

A real cluster is driven through every operation the description lists and
every status it lists that can be provoked here. Each answer is checked
against the description of its path and method: its status must be listed
there, its Content-Type must be the documented one, the headers it must
carry (Retry-After on a 429) must be there and valid, and its body must be
valid against the documented schema. A request the coordinator accepted
(2xx) must itself be valid against the documented request body and
parameters.

Bodies are checked strictly: an object schema that lists properties admits
no other key here. The description itself leaves answers open (the contract
lets keys be added, and clients ignore those they do not know); the strict
check makes sure every key the code emits is described.

The description is OpenAPI 3.1, whose schemas are JSON Schema 2020-12: the
only conversion needed is inlining its $refs. python3-jsonschema validates.

The last test checks that every (operation, status) the description lists
was seen, or is in NOT_PROVOKED with the reason it is not; a self-check shows
that the checker refuses wrong answers, so that the rest cannot pass
vacuously."""

import copy
import http.client
import json
import os
import re
import threading
import time
import unittest
import urllib.parse

import jsonschema
import yaml

from harness import ROOT, ClusterTest

SPEC_FILE = os.path.join(ROOT, "docs", "openapi.yaml")
METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")

# Statuses the description lists that these tests do not provoke, and why.
STOPPING = ("only while the coordinator stops: a request still waiting for its answer, or "
            "arriving in the last instants, after the drain (common/httpd.c, httpd_free)")
NOT_PROVOKED = {
    ("listTransactions", 503): STOPPING,
    ("getTransaction", 503): STOPPING,
    ("runOps", 503): STOPPING,
    ("commitTransaction", 503): STOPPING,
    ("abortTransaction", 503): STOPPING,
    ("routeKey", 503): STOPPING,
    ("metrics", 503): STOPPING,
    ("adminStatus", 503): STOPPING,
    ("adminInDoubt", 503): STOPPING,
    ("adminRecover", 503): STOPPING,
    ("peerOutcomes", 503): STOPPING,
    ("peerDecide", 503): STOPPING,
    ("peerAcceptorState", 503): STOPPING,
    # forget's 503 log_unavailable needs a transaction waiting for a shard and a decision
    # log that fails after that: two failpoints in one run; resolve's 503 is provoked and
    # both go through the same code (coord_record_operator)
    ("adminForget", 503): "needs a decided transaction waiting for a shard when the decision "
                          "log fails; resolve's 503 (the same code path) is provoked",
}

TOKENS = {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}
BIG = "x" * 70000  # over max_body_bytes below
LONG_GTID = "c1-1-" + "9" * 100  # longer than any gtid


# ---- the description ---------------------------------------------------------------------

class NotAsDescribed(AssertionError):
    """An answer (or an accepted request) that docs/openapi.yaml does not describe."""


SCHEMA_MAPS = ("properties", "patternProperties", "$defs", "dependentSchemas")
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf", "prefixItems")
SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then",
              "else", "unevaluatedProperties", "unevaluatedItems")
NOT_SCHEMA = ("example", "examples", "externalDocs", "xml", "discriminator")


def path_regex(template):
    parts = re.split(r"\{[^}]+\}", template)
    return re.compile("^" + "[^/]+".join(re.escape(p) for p in parts) + "$")


def is_object_schema(s):
    t = s.get("type")
    return t == "object" or (isinstance(t, list) and "object" in t)


def describe_errors(errors):
    lines = []
    for e in errors[:6]:
        where = "/" + "/".join(str(p) for p in e.absolute_path)
        lines.append("at %s: %s" % (where, e.message))
        for sub in sorted(e.context or [], key=lambda s: len(list(s.absolute_path)))[:4]:
            lines.append("    (%s: %s)" % ("/" + "/".join(str(p) for p in sub.absolute_path),
                                           sub.message))
    return "\n".join(lines)


class Answer:
    def __init__(self, status, headers, raw):
        self.status, self.headers, self.raw = status, headers, raw

    def header(self, name):
        return self.headers.get(name)

    @property
    def body(self):
        try:
            return json.loads(self.raw)
        except ValueError:
            return self.raw.decode(errors="replace")


class Sent:
    def __init__(self, method, path, data):
        self.method, self.path, self.data = method, path, data


class Spec:
    """docs/openapi.yaml: finds the operation of a request and checks an answer against it."""

    def __init__(self, path):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.ops = {}     # operationId -> (METHOD, template, operation, path item)
        self.routes = []  # (regex, number of parameters, METHOD, operationId)
        for template, item in self.doc["paths"].items():
            for m in METHODS:
                if m not in item:
                    continue
                op_id = item[m]["operationId"]
                if op_id in self.ops:
                    raise ValueError("operationId %s is used twice" % op_id)
                self.ops[op_id] = (m.upper(), template, item[m], item)
                self.routes.append((path_regex(template), template.count("{"), m.upper(), op_id))

    def lookup(self, ref):
        if not ref.startswith("#/"):
            raise ValueError("only local $refs are supported: %s" % ref)
        node = self.doc
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def deref(self, node):
        """A response, parameter or header object, its $ref followed."""
        while isinstance(node, dict) and "$ref" in node:
            node = self.lookup(node["$ref"])
        return node

    def json_schema(self, node, strict, seen=()):
        """An OpenAPI 3.1 schema as a standalone JSON Schema: $refs inlined (a $ref with
        siblings is an allOf of both, as in 2020-12) and, with strict, no keys beyond the
        listed properties in an object schema that does not say otherwise."""
        if isinstance(node, bool):
            return node
        out = {}
        for k, v in node.items():
            if k == "$ref" or k.startswith("x-") or k in NOT_SCHEMA:
                continue
            if k in SCHEMA_MAPS:
                out[k] = {n: self.json_schema(s, strict, seen) for n, s in v.items()}
            elif k in SCHEMA_LISTS:
                out[k] = [self.json_schema(s, strict, seen) for s in v]
            elif k in SCHEMA_ONE and isinstance(v, (dict, bool)):
                out[k] = self.json_schema(v, strict, seen)
            else:
                out[k] = copy.deepcopy(v)
        if (strict and is_object_schema(out) and "properties" in out and
                "additionalProperties" not in out and "unevaluatedProperties" not in out):
            out["additionalProperties"] = False
        ref = node.get("$ref")
        if ref is None:
            return out
        if ref in seen:
            raise ValueError("recursive $ref %s" % ref)
        target = self.json_schema(self.lookup(ref), strict, seen + (ref,))
        return {"allOf": [target, out]} if out else target

    @staticmethod
    def validate(schema, value, what):
        errors = list(jsonschema.Draft202012Validator(schema).iter_errors(value))
        if errors:
            raise NotAsDescribed("%s is not as described:\n%s\nvalue: %s" %
                                 (what, describe_errors(errors), json.dumps(value)[:1500]))

    def find(self, method, path):
        """The operationId of a request, or NotAsDescribed."""
        bare = urllib.parse.urlsplit(path).path
        found = sorted((n, op_id) for rx, n, m, op_id in self.routes
                       if m == method and rx.match(bare))
        if not found:
            raise NotAsDescribed("%s %s is not described" % (method, bare))
        return found[0][1]

    def parameters(self, op, item):
        return [self.deref(p) for p in item.get("parameters", []) + op.get("parameters", [])]

    @staticmethod
    def typed(schema, text):
        """A header or query value as the type its schema gives, or the text."""
        if schema.get("type") == "integer" and re.fullmatch(r"-?[0-9]+", text):
            return int(text)
        return text

    def check(self, method, path, answer, sent=None):
        """Checks an answer to method path; returns its operationId."""
        op_id = self.find(method, path)
        _, template, op, item = self.ops[op_id]
        what = "%s %s (%s) answered %d" % (method, path[:120], op_id, answer.status)
        resp = op["responses"].get(str(answer.status))
        if resp is None:
            raise NotAsDescribed("%s, which the description does not list (it lists %s): %s" %
                                 (what, ", ".join(sorted(op["responses"])), answer.raw[:500]))
        resp = self.deref(resp)
        for name, h in resp.get("headers", {}).items():
            h = self.deref(h)
            value = answer.header(name)
            if value is None and h.get("required"):
                raise NotAsDescribed("%s without its %s header" % (what, name))
            if value is not None:
                schema = self.json_schema(h["schema"], True)
                self.validate(schema, self.typed(schema, value), "%s: header %s" % (what, name))
        self.check_content(what, resp, answer)
        if 200 <= answer.status < 300 and sent is not None:
            self.check_request(what, op, item, sent)
        return op_id

    def check_content(self, what, resp, answer):
        content = resp.get("content")
        if not content:
            if answer.raw:
                raise NotAsDescribed("%s with a body; the description says none" % what)
            return
        ctype = (answer.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype not in content:
            raise NotAsDescribed("%s with Content-Type %r; the description says %s" %
                                 (what, answer.header("Content-Type"), ", ".join(content)))
        if ctype.startswith("text/"):
            body = answer.raw.decode()
        else:
            try:
                body = json.loads(answer.raw)
            except ValueError:
                raise NotAsDescribed("%s with a body that is not JSON: %r" %
                                     (what, answer.raw[:300])) from None
        if "schema" in content[ctype]:
            self.validate(self.json_schema(content[ctype]["schema"], True), body, what)

    def check_request(self, what, op, item, sent):
        """A request the coordinator accepted must be one the description allows."""
        rb = self.deref(op.get("requestBody"))
        if rb and sent.data is None and rb.get("required"):
            raise NotAsDescribed("%s to a request without its required body" % what)
        if rb and sent.data:
            schema = rb["content"]["application/json"].get("schema")
            if schema:
                self.validate(self.json_schema(schema, False), json.loads(sent.data),
                              "the request body of what " + what)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(sent.path).query,
                                      keep_blank_values=True)
        for p in self.parameters(op, item):
            if p["in"] != "query":
                continue
            if p.get("required") and p["name"] not in query:
                raise NotAsDescribed("%s to a request without its required parameter %s" %
                                     (what, p["name"]))
            for value in query.get(p["name"], []):
                schema = self.json_schema(p["schema"], False)
                self.validate(schema, self.typed(schema, value),
                              "parameter %s of what %s" % (p["name"], what))

    def statuses(self):
        """Every (operationId, status) the description lists."""
        return {(op_id, int(s)) for op_id, (_, _, op, _) in self.ops.items()
                for s in op["responses"]}


# ---- the tests ------------------------------------------------------------------------------

class OpenApiTest(ClusterTest):
    SHARDS = 2
    COORD = {"auth": TOKENS, "max_body_bytes": 65536, "max_active_transactions": 4,
             "commit_wait_ms": 1000}
    AGENT = {"auth": {"peer_token": "peer"}, "max_open_branches": 1, "open_wait_ms": 200,
             "max_result_rows": 50, "prepared_headroom": 95,
             "recovery_interval_ms": 3600000, "recovery_min_age_ms": 3600000}

    seen = set()   # (operationId, status) of every checked answer
    passed = set()  # the tests that passed

    @classmethod
    def setUpClass(cls):
        cls.spec = Spec(SPEC_FILE)
        super().setUpClass()
        cls.seen = set()
        cls.passed = set()
        cls.committed = None  # a committed two-shard transaction's answer

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        r = super().run(result)
        if result and len(result.failures) + len(result.errors) == before:
            type(self).passed.add(self._testMethodName)
        return r

    # ---- helpers ---------------------------------------------------------------------

    def send(self, method, path, body=None, token="cli", content_type=None, timeout=30):
        """One request: body a dict (sent as JSON), str or bytes (sent as is) or None (no
        body); content_type False sends none. Returns (Answer, Sent)."""
        data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
        data = data.encode() if isinstance(data, str) else data
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + token
        if data is not None and content_type is not False:
            headers["Content-Type"] = content_type or "application/json"
        conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=timeout)
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return Answer(resp.status, resp.headers, resp.read()), Sent(method, path, data)
        finally:
            conn.close()

    def checked(self, answer, sent, expect):
        """Checks an answer against the description and the status the test wanted (None:
        any status the description lists)."""
        op_id = self.spec.check(sent.method, sent.path, answer, sent)
        type(self).seen.add((op_id, answer.status))
        if expect is not None:
            self.assertEqual(answer.status, expect, "%s %s: %s" % (sent.method, sent.path,
                                                                   answer.raw[:800]))
        return answer.body

    def call(self, method, path, body=None, expect=200, **kw):
        """Sends a request, checks its answer; returns the answer's body."""
        answer, sent = self.send(method, path, body, **kw)
        return self.checked(answer, sent, expect)

    def tx(self, ops, expect=200, **kw):
        body = dict(kw)
        body["ops"] = ops
        return self.call("POST", "/v1/transactions", body, expect)

    def begin(self, **kw):
        return self.call("POST", "/v1/transactions", dict(interactive=True, **kw), 201)["gtid"]

    def code(self, body):
        return body["error"]["code"]

    def refusals(self, method, path, body, admin=False, peer=False):
        """401 (no token, a wrong token), 403 (the client token on an admin endpoint),
        413 (too big) and 415 (not JSON) for one endpoint."""
        good = "peer" if peer else "adm" if admin else "cli"
        self.call(method, path, body, 401, token=None)
        self.call(method, path, body, 401, token="wrong")
        if admin:
            self.call(method, path, body, 403, token="cli")
        if method == "POST":
            self.call(method, path, {"pad": BIG}, 413, token=good)
            self.call(method, path, "x=1", 415, token=good,
                      content_type="application/x-www-form-urlencoded")

    def transfer(self, acct, amount=1, expect=200):
        return self.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
             "params": [amount, acct], "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2 "
                                   "RETURNING balance", "params": [amount, acct],
             "expect_rows": 1}], expect)

    def committed_gtid(self):
        if type(self).committed is None:
            type(self).committed = self.transfer(90)
        return type(self).committed["gtid"]

    def restart_coordinator(self, env=None):
        if self.c.coordinator.alive():
            self.c.stop_coordinator()
        self.c.start_coordinator(env=env)

    # ---- the checker itself ----------------------------------------------------------------

    def test_00_the_description_is_complete_and_its_schemas_compile(self):
        self.assertTrue(self.spec.doc["openapi"].startswith("3.1"))
        for op_id, (method, template, op, item) in self.spec.ops.items():
            self.assertTrue(op.get("responses"), op_id)
            self.assertIn("security", op, "%s says who may call it" % op_id)
            for req in op["security"]:
                for name in req:
                    self.assertIn(name, self.spec.doc["components"]["securitySchemes"])
            for p in re.findall(r"\{([^}]+)\}", template):
                self.assertIn(p, [q["name"] for q in self.spec.parameters(op, item)
                                  if q["in"] == "path"], "%s declares {%s}" % (op_id, p))
            for status, resp in op["responses"].items():
                self.assertRegex(status, r"^[1-5][0-9][0-9]$", op_id)
                resp = self.spec.deref(resp)
                self.assertTrue(resp.get("description"), "%s %s" % (op_id, status))
                for media in resp.get("content", {}).values():
                    for strict in (False, True):
                        schema = self.spec.json_schema(media["schema"], strict)
                        jsonschema.Draft202012Validator.check_schema(schema)
            rb = self.spec.deref(op.get("requestBody"))
            if rb:
                media = rb["content"]["application/json"]
                schema = self.spec.json_schema(media["schema"], False)
                jsonschema.Draft202012Validator.check_schema(schema)
                for name, example in media.get("examples", {}).items():
                    self.spec.validate(schema, example["value"], "example %s of %s" %
                                       (name, op_id))
        for key in NOT_PROVOKED:
            self.assertIn(key, self.spec.statuses(), "NOT_PROVOKED names a status not listed")

    def test_01_wrong_answers_are_refused(self):
        """The negative self-check: the checker refuses what the description does not say."""
        json_ct = {"Content-Type": "application/json"}

        def answer(status, body, headers=json_ct):
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            return Answer(status, dict(headers), raw)

        good = {"gtid": "c1-1-7", "status": "committed",
                "results": [{"shard": "s1", "columns": ["n"], "rows": [[1]], "rows_affected": 1}]}
        self.spec.check("POST", "/v1/transactions", answer(200, good))  # the control
        wrong = [
            ("an unknown status", answer(200, dict(good, status="maybe"))),
            ("a key not described", answer(200, dict(good, surprise=1))),
            ("a missing key", answer(200, {"gtid": "c1-1-7", "status": "committed"})),
            ("a malformed gtid", answer(200, dict(good, gtid="7"))),
            ("a result of the wrong type", answer(200, dict(good, results=[{"shard": 1}]))),
            ("a status not listed", answer(418, {"error": {"code": "bad_request",
                                                           "message": "m"}})),
            ("an error code of another status", answer(401, {"error": {"code": "forbidden",
                                                                       "message": "m"}})),
            ("an unknown error code", answer(400, {"error": {"code": "oops", "message": "m"}})),
            ("an error object with a key not described",
             answer(400, {"error": {"code": "bad_request", "message": "m", "why": "?"}})),
            ("a 429 without Retry-After", answer(429, {"error": {"code": "overloaded",
                                                                 "message": "m"}})),
            ("another Content-Type", answer(200, good, {"Content-Type": "text/html"})),
            ("a body that is not JSON", answer(200, b"committed")),
        ]
        for why, a in wrong:
            with self.subTest(why):
                with self.assertRaises(NotAsDescribed):
                    self.spec.check("POST", "/v1/transactions", a)
        with self.assertRaises(NotAsDescribed):
            self.spec.check("DELETE", "/v1/transactions", answer(405, {}))
        with self.assertRaises(NotAsDescribed):
            self.spec.check("GET", "/v1/nothing", answer(404, {}))
        with self.assertRaises(NotAsDescribed):
            self.spec.check("GET", "/healthz", answer(200, {"status": "ok"}))
        with self.assertRaises(NotAsDescribed):  # an accepted request the description refuses
            self.spec.check("POST", "/v1/transactions", answer(200, good),
                            Sent("POST", "/v1/transactions", b'{"ops": []}'))

    # ---- one-shot transactions ---------------------------------------------------------------

    def test_02_one_shot_transactions_answer_as_described(self):
        body = self.transfer(10)
        self.assertEqual(body["results"][1]["rows"], [[1001]])
        type(self).committed = body
        self.tx([{"key": "acct:9", "sql": "SELECT $1::int AS n, now()", "params": [7]},
                 {"shard": "s2", "sql": "SELECT 'a'::text, 1.5::numeric, NULL, '{}'::jsonb"}])
        # aborts, with PostgreSQL's fields
        err = self.tx([{"shard": "s1", "sql": "INSERT INTO accounts VALUES (1, 0)"}], 409)["error"]
        self.assertEqual((err["code"], err["sqlstate"], err["constraint"], err["table"]),
                         ("sql_error", "23505", "accounts_pkey", "accounts"))
        self.assertIn("detail", err)
        err = self.tx([{"shard": "s2", "sql": "UPDATE accounts SET balance = NULL WHERE id = 1"}],
                      409)["error"]
        self.assertEqual((err["sqlstate"], err["column"]), ("23502", "balance"))
        err = self.tx([{"shard": "s1", "sql": "SELECT no_such_function(1)"}], 409)["error"]
        self.assertIn("hint", err)
        err = self.tx([{"shard": "s1", "sql": "UPDATE accounts SET balance = balance "
                                              "WHERE id = 0", "expect_rows": 1}], 409)["error"]
        self.assertEqual((err["code"], err["op"]), ("expect_rows_mismatch", 0))
        err = self.tx([{"shard": "s1", "sql": "SELECT g FROM generate_series(1, 100) g"}],
                      409)["error"]
        self.assertEqual(err["code"], "result_too_large")
        err = self.tx([{"shard": "s2", "sql": "SELECT pg_sleep(3)"}], 409, timeout_ms=300)
        self.assertEqual(self.code(err), "timeout")
        # refused before anything ran
        body = self.tx([{"shard": "s9", "sql": "SELECT 1"}], 400)
        self.assertEqual((self.code(body), body["error"]["op"]), ("bad_request", 0))
        self.assertEqual(self.code(self.tx([{"shard": "s1", "sql": "SELECT 1"}], 400,
                                           protocol="4pc")), "bad_request")
        self.call("POST", "/v1/transactions", '{"ops": [', 400)
        self.refusals("POST", "/v1/transactions", {"ops": [{"shard": "s1", "sql": "SELECT 1"}]})
        # idempotency: the first outcome again, or 422 for another request
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 91 "
                                      "RETURNING balance"}]
        first = self.tx(ops, idempotency_key="openapi-1")
        self.assertEqual(self.tx(ops, idempotency_key="openapi-1"), first)
        body = self.tx([dict(ops[0], params=[])], 422, idempotency_key="openapi-1")
        self.assertEqual(self.code(body), "idempotency_key_mismatch")

    # ---- interactive transactions ------------------------------------------------------------

    def test_03_interactive_transactions_answer_as_described(self):
        g = self.begin(timeout_ms=10000)
        body = self.call("POST", "/v1/transactions/%s/ops" % g, {"ops": [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 60 "
                                   "RETURNING balance"},
            {"shard": "s2", "sql": "SELECT balance FROM accounts WHERE id = 60"}]})
        self.assertEqual(body["results"][0]["rows"], [[1001]])
        self.assertEqual(self.call("POST", "/v1/transactions/%s/commit" % g)["status"],
                         "committed")
        self.call("POST", "/v1/transactions/%s/commit" % g, {})  # its outcome, again
        self.assertEqual(self.code(self.call("POST", "/v1/transactions/%s/abort" % g, None,
                                             409)), "conflict")  # too late
        # a failed op aborts it: that call, the next and the commit answer 409 with the reason
        g = self.begin()
        self.call("POST", "/v1/transactions/%s/ops" % g,
                  {"ops": [{"shard": "s1", "sql": "SELECT 1/0"}]}, 409)
        body = self.call("POST", "/v1/transactions/%s/ops" % g,
                         {"ops": [{"shard": "s1", "sql": "SELECT 1"}]}, 409)
        self.assertEqual(body["error"]["sqlstate"], "22012")
        self.call("POST", "/v1/transactions/%s/commit" % g, None, 409)
        self.call("POST", "/v1/transactions/%s/abort" % g, None, 200)
        # aborted by its client: the next call is told so
        g = self.begin()
        self.assertEqual(self.call("POST", "/v1/transactions/%s/abort" % g)["status"], "aborted")
        self.call("POST", "/v1/transactions/%s/abort" % g)
        self.assertEqual(self.code(self.call("POST", "/v1/transactions/%s/commit" % g, None,
                                             409)), "aborted")
        # refused: malformed ops, a one-shot transaction's gtid, an unknown gtid
        g = self.begin()
        self.call("POST", "/v1/transactions/%s/ops" % g, {"ops": []}, 400)
        self.call("POST", "/v1/transactions/%s/ops" % g, {"ops": [{"sql": "SELECT 1"}]}, 400)
        one_shot = self.committed_gtid()
        for call in ("ops", "commit", "abort"):
            path = "/v1/transactions/%s/%s" % (one_shot, call)
            body = {"ops": [{"shard": "s1", "sql": "SELECT 1"}]} if call == "ops" else None
            self.assertEqual(self.code(self.call("POST", path, body, 409)), "conflict")
            self.call("POST", "/v1/transactions/c1-1-999999/%s" % call, body, 404)
            self.call("POST", "/v1/transactions/%s/%s" % (LONG_GTID, call), body, 404)
            self.refusals("POST", "/v1/transactions/%s/%s" % (g, call), body)
        self.call("POST", "/v1/transactions/%s/abort" % g)

    def test_04_too_busy_answers_429(self):
        opened = [self.begin() for _ in range(4)]  # max_active_transactions
        try:
            body = self.call("POST", "/v1/transactions", {"interactive": True}, 429)
            self.assertIn("max_active_transactions", body["error"]["message"])
        finally:
            for g in opened:
                self.call("POST", "/v1/transactions/%s/abort" % g)
        # max_open_branches 1: a second open branch on s1 is refused, and its transaction aborted
        a, b = self.begin(), self.begin()
        try:
            self.call("POST", "/v1/transactions/%s/ops" % a,
                      {"ops": [{"shard": "s1", "sql": "SELECT 1"}]})
            body = self.call("POST", "/v1/transactions/%s/ops" % b,
                             {"ops": [{"shard": "s1", "sql": "SELECT 2"}]}, 429)
            self.assertEqual((body["status"], self.code(body)), ("aborted", "overloaded"))
        finally:
            self.call("POST", "/v1/transactions/%s/abort" % a)
            self.call("POST", "/v1/transactions/%s/abort" % b)

    # ---- reading state -------------------------------------------------------------------------

    def test_05_state_route_health_metrics_and_peer_outcomes_answer_as_described(self):
        gtid = self.committed_gtid()
        state = self.call("GET", "/v1/transactions/" + gtid)
        self.assertEqual((state["status"], len(state["shards"])), ("committed", 2))
        self.call("GET", "/v1/transactions/" + gtid, token="adm")
        g = self.begin()
        self.call("POST", "/v1/transactions/%s/ops" % g,
                  {"ops": [{"shard": "s2", "sql": "SELECT 1"}]})
        self.assertEqual(self.call("GET", "/v1/transactions/" + g)["status"], "active")
        self.call("POST", "/v1/transactions/%s/abort" % g)
        self.call("GET", "/v1/transactions/" + g)
        self.call("GET", "/v1/transactions/c1-1-999999", expect=404)
        self.refusals("GET", "/v1/transactions/" + gtid, None)

        listed = self.call("GET", "/v1/transactions", token="adm")["transactions"]
        self.assertIn(gtid, [t["gtid"] for t in listed])
        self.call("GET", "/v1/transactions?status=committed&older_than_ms=0", token="adm")
        self.call("GET", "/v1/transactions?status=bogus", token="adm", expect=400)
        self.call("GET", "/v1/transactions?older_than_ms=-1", token="adm", expect=400)
        self.refusals("GET", "/v1/transactions", None, admin=True)

        self.assertEqual(set(self.call("GET", "/v1/route?key=acct%3A9")), {"key", "slot", "shard"})
        self.call("GET", "/v1/route", expect=400)
        self.refusals("GET", "/v1/route?key=k", None)

        self.assertEqual(self.call("GET", "/healthz", token=None)["status"], "ok")
        text = self.call("GET", "/metrics", token=None)
        self.assertIn("dtx_participant_up", text)

        body = self.call("POST", "/v1/peer/outcomes",
                         {"shard": "s1", "gtids": [gtid, "zz-1-1", 5]}, token="peer")
        self.assertEqual([o["outcome"] for o in body["outcomes"]], ["commit", "unknown"])
        self.assertNotIn("finished", body)
        # a shard's sweep: a two-phase commit and gtids never issued have no rows to vouch for
        body = self.call("POST", "/v1/peer/outcomes", {"shard": "s1", "gtids": [],
                                                       "acceptor_rows": [gtid, "zz-1-1", 5]},
                         token="peer")
        self.assertEqual((body["outcomes"], body["finished"]), ([], []))
        self.call("POST", "/v1/peer/outcomes", {"shard": "s1", "gtids": [], "acceptor_rows": {}},
                  400, token="peer")
        self.call("POST", "/v1/peer/outcomes", {"shard": "s9", "gtids": []}, 400, token="peer")
        self.call("POST", "/v1/peer/outcomes", {"shard": "s1", "gtids": []}, 401, token="adm")
        self.refusals("POST", "/v1/peer/outcomes", {"shard": "s1", "gtids": []}, peer=True)

        # three-phase commit: a transfer, then this coordinator as an acceptor of recovery leaders
        t = self.tx([{"shard": "s1", "sql": "UPDATE accounts SET balance = balance WHERE id = 92"},
                     {"shard": "s2", "sql": "UPDATE accounts SET balance = balance WHERE id = 92"}],
                    protocol="3pc")
        # a majority (the coordinator and one shard) commits; the other's answer may come later
        self.wait_for(lambda: [s.get("precommit") for s in self.call(
            "GET", "/v1/transactions/" + t["gtid"])["shards"]] == ["accepted", "accepted"],
            timeout=10, what="both shards' pre-commit answers")
        acc = self.call("GET", "/v1/peer/3pc/" + t["gtid"], token="peer")
        self.assertEqual((acc["accepted"]["value"], acc["decided"]), ("commit", "commit"))
        # finished with both acknowledgements: a shard may delete a row of it left behind
        self.wait_for(lambda: self.call("POST", "/v1/peer/outcomes", {
            "shard": "s2", "gtids": [], "acceptor_rows": [t["gtid"], gtid]},
            token="peer")["finished"] == [t["gtid"]], what="the 3PC transfer to be finished")
        blank = "c1-1-%d" % (int(time.time()) * 1000)  # a gtid this coordinator never issued
        low = {"counter": 3, "node": "p:s2"}
        high = {"counter": 5, "node": "p:s1"}
        ans = self.call("POST", "/v1/peer/3pc/promise", {"gtid": blank, "ballot": high},
                        token="peer")
        self.assertEqual((ans["granted"], ans["accepted"]), (True, None))
        self.assertFalse(self.call("POST", "/v1/peer/3pc/promise", {"gtid": blank, "ballot": low},
                                   token="peer")["granted"])
        self.assertFalse(self.call("POST", "/v1/peer/3pc/accept",
                                   {"gtid": blank, "ballot": low, "value": "abort"},
                                   token="peer")["accepted"])
        self.assertTrue(self.call("POST", "/v1/peer/3pc/accept",
                                  {"gtid": blank, "ballot": high, "value": "abort"},
                                  token="peer")["accepted"])
        self.assertEqual(self.call("GET", "/v1/peer/3pc/" + blank, token="peer")["accepted"],
                         {"ballot": high, "value": "abort"})
        self.call("POST", "/v1/peer/3pc/decide", {"gtid": blank, "value": "abort"}, token="peer")
        for path, body in (("promise", {"gtid": blank}),
                           ("accept", {"gtid": blank, "ballot": high, "value": "maybe"}),
                           ("decide", {"gtid": "not a gtid", "value": "abort"})):
            self.call("POST", "/v1/peer/3pc/" + path, body, 400, token="peer")
            self.refusals("POST", "/v1/peer/3pc/" + path, body, peer=True)
        self.call("GET", "/v1/peer/3pc/" + LONG_GTID, expect=404, token="peer")
        self.refusals("GET", "/v1/peer/3pc/" + blank, None, peer=True)

    # ---- operators -----------------------------------------------------------------------------

    def test_06_operator_endpoints_answer_as_described(self):
        foreign = "zz-1-%d" % int(time.time())
        self.prepare_by_hand(0, "dtx:%s:s1" % foreign, 70, delta=0)
        self.prepare_by_hand(0, "dtx:openapi-malformed:s1", 71, delta=0)
        status = self.call("GET", "/v1/admin/status", token="adm")
        self.assertGreaterEqual(status["in_doubt"], 2)
        doubt = self.call("GET", "/v1/admin/in-doubt", token="adm")
        mine = {b["gid"]: b for b in doubt["branches"]}
        self.assertEqual(mine["dtx:%s:s1" % foreign]["owner"], "zz")
        self.assertTrue(mine["dtx:openapi-malformed:s1"]["malformed"])
        for path in ("/v1/admin/status", "/v1/admin/in-doubt"):
            self.refusals("GET", path, None, admin=True)

        recover = "/v1/admin/recover"
        self.assertIn("kicked", self.call("POST", recover, {}, token="adm"))
        self.call("POST", recover, None, token="adm")
        self.call("POST", recover, {"gtid": foreign, "shard": "s1"}, 409, token="adm")
        self.call("POST", recover, {"gtid": "nope"}, 400, token="adm")
        self.call("POST", recover, "[]", 400, token="adm")
        body = self.call("POST", recover, {"gid": "dtx:openapi-malformed:s1", "shard": "s1",
                                           "malformed": True, "operator": "openapi"},
                         token="adm")
        self.assertEqual(body["shards"], [{"shard": "s1", "result": "rolled_back"}])
        body = self.call("POST", recover, {"gtid": self.committed_gtid(), "shard": "s2"},
                         token="adm")
        self.assertEqual(body["shards"], [{"shard": "s2", "result": "not_prepared"}])
        self.refusals("POST", recover, {}, admin=True)

        resolve = "/v1/admin/transactions/%s/resolve"
        decision = {"decision": "commit", "reason": "openapi test", "operator": "openapi"}
        body = self.call("POST", resolve % foreign, decision, token="adm")
        self.assertEqual((body["heuristic"], sorted(s["result"] for s in body["shards"])),
                         (True, ["committed", "not_prepared"]))
        self.call("POST", resolve % foreign, dict(decision, decision="abort"), 409, token="adm")
        self.call("POST", resolve % "nope", decision, 400, token="adm")
        self.call("POST", resolve % foreign, {"decision": "commit"}, 400, token="adm")
        self.call("POST", resolve % LONG_GTID, decision, 404, token="adm")
        self.refusals("POST", resolve % foreign, decision, admin=True)
        state = self.call("GET", "/v1/transactions/" + foreign)
        self.assertEqual((state["heuristic"], state["decided_by"]), ("commit", "operator"))
        self.call("GET", "/v1/transactions?status=committed", token="adm")

        forget = "/v1/admin/transactions/%s/forget"
        why = {"shard": "s1", "reason": "openapi test"}
        self.call("POST", forget % self.committed_gtid(), why, 409, token="adm")
        self.call("POST", forget % "nope", why, 400, token="adm")
        self.call("POST", forget % foreign, {"shard": "s1"}, 400, token="adm")
        self.call("POST", forget % LONG_GTID, why, 404, token="adm")
        self.refusals("POST", forget % foreign, why, admin=True)

    def test_07_a_shard_down_answers_as_described(self):
        gtid = self.committed_gtid()
        self.c.stop_participant(1)
        try:
            self.wait_for(lambda: self.call("GET", "/healthz", token=None)["shards"]["s2"] ==
                          "down", what="s2's link to go down")
            status = self.call("GET", "/v1/admin/status", token="adm")
            s2 = status["shards"][1]
            self.assertEqual((s2["reachable"], s2["link"]), (False, "down"))
            doubt = self.call("GET", "/v1/admin/in-doubt", token="adm")
            self.assertFalse(doubt["shards"][1]["reachable"])
            body = self.call("POST", "/v1/admin/recover", {"gtid": gtid, "shard": "s2"}, 502,
                             token="adm")
            self.assertEqual(body["shards"][0]["result"], "failed")
            body = self.transfer(92, expect=409)
            self.assertEqual(self.code(body), "participant_unavailable")
        finally:
            self.c.start_participant(1)
            self.c.wait_healthy()

    def test_08_forgetting_a_lost_shard_answers_as_described(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=sleep(1500)"})
        try:
            out = {}
            t = threading.Thread(target=lambda: out.setdefault("a", self.send(
                "POST", "/v1/transactions", {"ops": [
                    {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 "
                                           "WHERE id = 93"},
                    {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 "
                                           "WHERE id = 93"}]})))
            t.start()
            self.wait_for(lambda: len(self.c.prepared(1)) == 1, what="s2 to prepare")
            self.c.kill_participant(1)
            t.join()
            body = self.checked(*out["a"], 200)
            self.assertEqual(body["pending_shards"], ["s2"])
            gtid = body["gtid"]
            self.assertEqual(self.call("GET", "/v1/transactions/" + gtid)["status"],
                             "committing")
            forget = "/v1/admin/transactions/%s/forget" % gtid
            self.call("POST", forget, {"shard": "s1", "reason": "x"}, 409, token="adm")
            state = self.call("POST", forget, {"shard": "s2", "reason": "s2 is gone",
                                               "operator": "openapi"}, token="adm")
            self.assertEqual(state["status"], "committed")
            self.c.start_participant(1)
            self.c.wait_healthy()
            body = self.call("POST", "/v1/admin/recover", {"gtid": gtid, "shard": "s2"},
                             token="adm")
            self.assertEqual(body["shards"], [{"shard": "s2", "result": "committed"}])
        finally:
            if not self.c.shards[1].agent.alive():
                self.c.start_participant(1)
            self.restart_coordinator()
        self.assert_no_prepared(timeout=10)

    def test_09_decision_log_failure_answers_504_then_503(self):
        # The first fdatasync is the BOOT record; the second a transaction's COMMIT.
        failing = {"DTX_FAILPOINTS": "dlog.fdatasync=error@2"}
        self.restart_coordinator(failing)
        try:
            body = self.transfer(94, expect=504)
            self.assertEqual(self.code(body), "outcome_unknown")
            state = self.call("GET", "/v1/transactions/" + body["gtid"])
            self.assertTrue(state["in_doubt"])
            health = self.call("GET", "/healthz", token=None, expect=503)
            self.assertEqual(self.code(health), "log_unavailable")
            body = self.tx([{"shard": "s1", "sql": "SELECT 1"}], 503)
            self.assertEqual(self.code(body), "log_unavailable")
            self.call("POST", "/v1/admin/transactions/zz-2-1/resolve",
                      {"decision": "abort", "reason": "x"}, 503, token="adm")
            ballot = {"counter": 7, "node": "p:s2"}  # nothing can be promised or accepted now
            self.call("POST", "/v1/peer/3pc/promise", {"gtid": "c1-1-777", "ballot": ballot},
                      503, token="peer")
            self.call("POST", "/v1/peer/3pc/accept",
                      {"gtid": "c1-1-778", "ballot": ballot, "value": "abort"}, 503, token="peer")
            # the restart settles the first one (its record was written); then again, so that
            # the second fdatasync is the interactive transaction's COMMIT
            self.restart_coordinator()
            self.assert_no_prepared(timeout=15)
            self.restart_coordinator(failing)
            g = self.begin()
            self.call("POST", "/v1/transactions/%s/ops" % g, {"ops": [
                {"shard": "s1", "sql": "UPDATE accounts SET balance = balance WHERE id = 95"},
                {"shard": "s2", "sql": "UPDATE accounts SET balance = balance WHERE id = 95"}]})
            body = self.call("POST", "/v1/transactions/%s/commit" % g, None, 504)
            self.assertEqual(self.code(body), "outcome_unknown")
        finally:
            self.restart_coordinator()
        self.assert_no_prepared(timeout=15)

    def until(self, want, ops, timeout=15):
        """Sends ops as a one-shot transaction until it is answered want; every answer is
        checked. Returns the last answer's body."""
        end = time.time() + timeout
        while True:
            answer, sent = self.send("POST", "/v1/transactions", {"ops": ops})
            if answer.status == want or time.time() > end:
                return self.checked(answer, sent, want)
            self.checked(answer, sent, None)
            time.sleep(0.2)

    def test_10_no_prepared_transaction_slot_answers_429(self):
        # max_prepared_transactions 100 with prepared_headroom 95 leaves 5 for dtx: five
        # prepared transactions of somebody else take them (the participant counts every 2 s)
        ops = [{"shard": s, "sql": "UPDATE accounts SET balance = balance WHERE id = 96"}
               for s in ("s1", "s2")]
        for i in range(5):
            self.prepare_by_hand(0, "openapi-other-%d" % i, 80 + i, delta=0)
        try:
            body = self.until(429, ops)
            self.assertEqual((body["status"], self.code(body)), ("aborted", "overloaded"))
            g = self.begin()
            self.call("POST", "/v1/transactions/%s/ops" % g, {"ops": ops})
            body = self.call("POST", "/v1/transactions/%s/commit" % g, None, 429)
            self.assertEqual(self.code(body), "overloaded")
        finally:
            self.doCleanups()
        self.until(200, ops)  # the slots are counted free again

    # ---- coverage ------------------------------------------------------------------------------

    def test_99_every_operation_and_status_was_exercised(self):
        others = {n for n in dir(self) if n.startswith("test_") and n != self._testMethodName}
        if others - type(self).passed:
            self.skipTest("needs every other test of the class to have run and passed; "
                          "missing: %s" % ", ".join(sorted(others - type(self).passed)))
        listed = self.spec.statuses()
        seen = type(self).seen
        self.assertEqual(set(self.spec.ops) - {op for op, _ in seen}, set(),
                         "operations never exercised")
        self.assertEqual(sorted(listed - seen - set(NOT_PROVOKED)), [],
                         "listed statuses never provoked (provoke them, or say in NOT_PROVOKED "
                         "why not)")
        self.assertEqual(sorted(seen & set(NOT_PROVOKED)), [],
                         "NOT_PROVOKED names statuses that were provoked")
        self.assertLessEqual(seen, listed)


if __name__ == "__main__":
    unittest.main()
