"""Bad input is refused, never reinterpreted: a NUL character anywhere in a
request (escaped as \\u0000 or raw), bytes after the JSON document, and a
body labelled as something other than JSON. Each refusal is checked for its
status, its error code, and that nothing ran or was recorded."""

import http.client
import json

from harness import ClusterTest, InteractiveMixin, sql

ACCT = 40  # the row the refused requests would have changed on s1


def bump(acct=ACCT, by=1):
    return sql("s1", "UPDATE accounts SET balance = balance + %d WHERE id = %d" % (by, acct))


class InputTest(InteractiveMixin, ClusterTest):
    SHARDS = 2
    # Every role has its token (one alone is refused); requests send the client token unless
    # they say otherwise (Cluster.token).
    COORD = {"auth": {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}}
    AGENT = {"auth": {"peer_token": "peer"}}
    ADMIN = {"Authorization": "Bearer adm"}
    CLIENT = {"Authorization": "Bearer cli"}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.c.token = "cli"

    def raw(self, method, path, body=None, headers=None):
        """A request sent exactly as given (no Content-Type added); returns (status, JSON)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or self.CLIENT)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def refused(self, answer, want_status, want_code, want_text=""):
        status, body = answer
        self.assertEqual(status, want_status, body)
        self.assertEqual(set(body), {"error"}, body)
        self.assertEqual(body["error"]["code"], want_code, body)
        self.assertIn(want_text, body["error"]["message"])

    def assert_untouched(self, acct=ACCT):
        self.assertEqual(self.balance(0, acct), 1000)

    def post_tx(self, text, content_type="application/json"):
        return self.c.request("POST", "/v1/transactions", text,
                              headers={"Content-Type": content_type})

    # ---- NUL characters ----------------------------------------------------------------

    def test_nul_escape_in_sql_is_400(self):
        op = sql("s1", "UPDATE accounts SET balance = balance + 1 WHERE id = %d\x00 AND false"
                 % ACCT)
        self.refused(self.c.tx([op]), 400, "bad_request", "NUL")
        self.assert_untouched()

    def test_nul_escape_in_a_parameter_is_400(self):
        op = sql("s1", "UPDATE accounts SET balance = balance + 1 WHERE id = $1::int",
                 "%d\x00 or any id" % ACCT)
        self.refused(self.c.tx([op]), 400, "bad_request", "NUL")
        self.assert_untouched()

    def test_nul_escape_in_a_key_name_is_400(self):
        # {"ops\u0000x": [...]} would otherwise be read as {"ops": [...]}
        text = json.dumps({"ops\x00x": [bump()]})
        self.refused(self.post_tx(text), 400, "bad_request", "NUL")
        self.assert_untouched()

    def test_raw_nul_byte_is_400(self):
        text = json.dumps({"ops": [bump()]}).replace(" + 1", " + 1\x00")
        self.assertIn("\x00", text)
        self.refused(self.post_tx(text.encode()), 400, "bad_request", "NUL")
        self.assert_untouched()

    def test_raw_control_characters_are_400_not_whitespace(self):
        # JSON allows no raw control character in a string, and only tab, LF and CR between
        # tokens; the parser took them as whitespace or as part of the string (an SQL
        # statement with a raw \x01 in it, six times its size once printed again as \u0001)
        good = json.dumps({"ops": [bump()]})
        for text in (good.replace(" + 1", " + 1\x01"),     # in a string
                     good.replace(" + 1", " + 1\n"),       # a raw line break in a string
                     good.replace('{"ops"', '{\x0b"ops"')):  # between tokens
            self.refused(self.post_tx(text.encode()), 400, "bad_request", "control character")
        self.assert_untouched()
        text = json.dumps({"ops": [sql("s2", "SELECT 1")]}).replace('{"ops"', '{\t\r\n"ops"')
        status, body = self.post_tx(text.encode())  # JSON's own whitespace
        self.assertEqual(status, 200, body)

    def test_idempotency_keys_differing_after_a_nul_are_not_one_key(self):
        first = self.c.tx([bump()], idempotency_key="nul-key\x00first")
        second = self.c.tx([bump(by=2)], idempotency_key="nul-key\x00second")
        self.refused(first, 400, "bad_request", "NUL")
        self.refused(second, 400, "bad_request", "NUL")
        self.assert_untouched()
        # nothing was recorded under the cut key either: it runs as a new transaction
        status, body = self.c.tx([sql("s2", "SELECT 1")], idempotency_key="nul-key")
        self.assertEqual(status, 200, body)
        status, again = self.c.tx([sql("s2", "SELECT 1")], idempotency_key="nul-key")
        self.assertEqual((status, again["gtid"]), (200, body["gtid"]))

    def test_escaped_backslash_before_u0000_is_text_not_a_nul(self):
        # JSON "\\u0000" is a backslash and five characters: a legitimate string
        status, body = self.c.tx([sql("s2", "SELECT $1::text AS t, length($1)", "\\u0000")])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"][0]["rows"], [["\\u0000", 6]])
        # ... but an escaped backslash followed by a real \u0000 is still a NUL
        text = '{"ops":[{"shard":"s1","sql":"SELECT $1::text","params":["\\\\\\u0000"]}]}'
        self.refused(self.post_tx(text), 400, "bad_request", "NUL")

    def test_nul_in_interactive_ops_is_400_and_the_transaction_goes_on(self):
        gtid = self.begin()
        status, body = self.ops(gtid, sql("s1", "SELECT $1::text", "a\x00b"))
        self.refused((status, body), 400, "bad_request", "NUL")
        status, body = self.ops(gtid, bump(acct=ACCT + 1))
        self.assertEqual(status, 200, body)
        status, body = self.commit(gtid)
        self.assertEqual((status, body["status"]), (200, "committed"))
        self.assertEqual(self.balance(0, ACCT + 1), 1001)

    def test_nul_in_an_operator_request_is_400_and_nothing_is_recorded(self):
        gid = "dtx:c9-1-1:s1"
        self.prepare_by_hand(0, gid)  # the branch the refused request was about (no row held)
        body = {"decision": "abort", "shard": "s1", "reason": "ok\x00 and a forged tail"}
        answer = self.c.request("POST", "/v1/admin/transactions/c9-1-1/resolve", body,
                                headers=self.ADMIN)
        self.refused(answer, 400, "bad_request", "NUL")
        status, state = self.c.request("GET", "/v1/transactions/c9-1-1", headers=self.ADMIN)
        self.assertEqual(status, 404, state)
        self.assertIn(gid, self.c.prepared(0), "the refused resolve finished the branch")

    # ---- bytes after the document ------------------------------------------------------

    def test_an_escaped_nul_or_slash_in_a_path_is_not_decoded_into_another_path(self):
        """'%00' cut the decoded path short, so .../commit%00junk committed and
        GET gtid%00junk showed that transaction; '%2F' made a slash of a path segment."""
        g = self.begin()
        self.assertEqual(self.ops(g, bump())[0], 200)
        for method, path in (("POST", "/v1/transactions/%s/commit%%00junk" % g),
                             ("GET", "/v1/transactions/%s%%00junk" % g),
                             ("POST", "/v1/transactions%00x"),
                             ("POST", "/v1/transactions/%s%%2Fcommit" % g),
                             ("GET", "/v1%2Ftransactions")):
            status, body = self.raw(method, path, body="{}" if method == "POST" else None,
                                    headers=dict(self.CLIENT, **{"Content-Type":
                                                                 "application/json"}))
            self.assertIn(status, (400, 404, 405), (method, path, body))  # never run
            self.assertEqual(set(body), {"error"}, body)
        status, state = self.c.request("GET", "/v1/transactions/" + g)
        self.assertEqual(state["status"], "active", "nothing committed it")
        self.assertEqual(self.abort(g)[0], 200)
        self.assert_untouched()
        self.refused(self.raw("POST", "/v1/transactions/", body="{}",
                              headers=dict(self.CLIENT, **{"Content-Type": "application/json"})),
                     404, "not_found")

    def test_trailing_bytes_after_the_json_document_are_400(self):
        doc = json.dumps({"ops": [bump()]})
        for tail in [" x", "}", ",", doc, "\x00"]:
            self.refused(self.post_tx(doc + tail), 400, "bad_request")
        self.assert_untouched()

    def test_trailing_whitespace_is_fine(self):
        status, body = self.post_tx(json.dumps({"ops": [sql("s2", "SELECT 1")]}) + " \r\n\t\n")
        self.assertEqual(status, 200, body)

    def test_trailing_bytes_after_an_operator_body_are_400(self):
        answer = self.c.request("POST", "/v1/admin/recover", '{} {"gtid": "c1-1-1"}',
                                headers=self.ADMIN)
        self.refused(answer, 400, "bad_request")

    # ---- Content-Type ------------------------------------------------------------------

    def test_a_body_that_is_not_json_is_415(self):
        doc = json.dumps({"ops": [bump()]})
        for ctype in ["text/plain", "application/x-www-form-urlencoded",
                      "application/jsonp", "application/json; charset=latin1",
                      "multipart/form-data; boundary=x"]:
            self.refused(self.post_tx(doc, ctype), 415, "unsupported_media_type",
                         "application/json")
        self.assert_untouched()

    def test_json_content_types_are_accepted_case_insensitively(self):
        doc = json.dumps({"ops": [sql("s2", "SELECT 1")]})
        for ctype in ["application/json", "Application/JSON", "application/json;charset=utf-8",
                      "application/json; charset=\"UTF-8\"", "APPLICATION/JSON ; Charset=utf8"]:
            status, body = self.post_tx(doc, ctype)
            self.assertEqual(status, 200, (ctype, body))

    def test_a_json_body_without_content_type_is_read_as_json(self):
        status, body = self.raw("POST", "/v1/transactions",
                                json.dumps({"ops": [sql("s2", "SELECT 1")]}))
        self.assertEqual(status, 200, body)

    def test_interactive_calls_refuse_a_body_that_is_not_json(self):
        gtid = self.begin()
        plain = {"Content-Type": "text/plain"}
        self.refused(self.c.request("POST", "/v1/transactions/%s/ops" % gtid,
                                    {"ops": [bump()]}, headers=plain),
                     415, "unsupported_media_type")
        self.refused(self.c.request("POST", "/v1/transactions/%s/commit" % gtid, {},
                                    headers=plain),
                     415, "unsupported_media_type")
        # a commit without any body is fine
        status, body = self.raw("POST", "/v1/transactions/%s/commit" % gtid)
        self.assertEqual((status, body["status"]), (200, "committed"))
        self.assert_untouched()

    def test_operator_endpoints_refuse_a_body_that_is_not_json(self):
        headers = dict(self.ADMIN, **{"Content-Type": "text/plain"})
        answer = self.c.request("POST", "/v1/admin/recover", {}, headers=headers)
        self.refused(answer, 415, "unsupported_media_type")
        answer = self.c.request("POST", "/v1/admin/transactions/c9-1-1/resolve",
                                {"decision": "abort", "shard": "s1", "reason": "test"},
                                headers=headers)
        self.refused(answer, 415, "unsupported_media_type")
        # recover without a body (dtxctl recover) still works
        status, body = self.raw("POST", "/v1/admin/recover", headers=self.ADMIN)
        self.assertEqual(status, 200, body)

    def test_415_comes_after_the_token_check(self):
        answer = self.c.request("POST", "/v1/admin/recover", {},
                                headers={"Content-Type": "text/plain", "Authorization": None})
        self.refused(answer, 401, "unauthorized")
