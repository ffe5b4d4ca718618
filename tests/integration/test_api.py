"""The HTTP surface: every kind of bad request gets its 4xx in the
contract's error shape with nothing executed; routing, health, metrics,
keep-alive, and authentication."""

import http.client
import json
import socket
import urllib.parse
import zlib

from harness import ClusterTest

# A valid first op that would change a row if anything ran.
TOUCH = {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 30"}


class ApiTest(ClusterTest):
    SHARDS = 2
    COORD = {"max_body_bytes": 65536, "max_params": 100}

    def refused(self, status, body, want_status, want_code, want_text=""):
        self.assertEqual(status, want_status, body)
        self.assertIsInstance(body, dict, body)
        self.assertEqual(set(body), {"error"}, body)
        self.assertEqual(body["error"]["code"], want_code, body)
        self.assertIsInstance(body["error"]["message"], str)
        self.assertIn(want_text, body["error"]["message"])

    def assert_nothing_ran(self):
        self.assertEqual(self.balance(0, 30), 1000)

    def test_malformed_json_is_400(self):
        status, body = self.c.request("POST", "/v1/transactions",
                                      '{"ops": [' + json.dumps(TOUCH) + ', {"shard": ')
        self.refused(status, body, 400, "bad_request", "malformed JSON")
        self.assert_nothing_ran()

    def test_unknown_shard_is_400(self):
        status, body = self.c.tx([TOUCH, {"shard": "s7", "sql": "SELECT 1"}])
        self.refused(status, body, 400, "bad_request", "unknown shard 's7'")
        self.assert_nothing_ran()

    def test_missing_sql_is_400(self):
        status, body = self.c.tx([TOUCH, {"shard": "s2"}])
        self.refused(status, body, 400, "bad_request", "'ops[1].sql' is missing")
        self.assert_nothing_ran()

    def test_too_many_params_is_400(self):
        status, body = self.c.tx([TOUCH, {"shard": "s2", "sql": "SELECT 1",
                                          "params": list(range(101))}])
        self.refused(status, body, 400, "bad_request", "101 parameters; the limit is 100")
        self.assert_nothing_ran()

    def test_transaction_control_in_sql_is_400(self):
        status, body = self.c.tx([TOUCH, {"shard": "s2", "sql": "COMMIT"}])
        self.refused(status, body, 400, "bad_request", "not allowed in a dtx branch")
        self.assert_nothing_ran()

    def test_body_over_the_limit_is_413(self):
        big = json.dumps({"ops": [dict(TOUCH, params=["x" * 70000])]})
        status, body = self.c.request("POST", "/v1/transactions", big)
        self.refused(status, body, 413, "payload_too_large", "65536")
        self.assert_nothing_ran()

    def test_an_unknown_protocol_is_400(self):
        status, body = self.c.tx([TOUCH, {"shard": "s2", "sql": "SELECT 1"}], protocol="4pc")
        self.refused(status, body, 400, "bad_request", "'protocol' must be \"2pc\" or \"3pc\"")
        self.assert_nothing_ran()

    def test_three_phase_commit_is_accepted(self):
        status, body = self.c.tx([{"shard": "s1", "sql": "SELECT 1"},
                                  {"shard": "s2", "sql": "SELECT 2"}], protocol="3pc")
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        self.assertEqual([r["rows"] for r in body["results"]], [[[1]], [[2]]], body)
        status, t = self.c.request("GET", "/v1/transactions/" + body["gtid"])
        self.assertEqual((status, t["protocol"]), (200, "3pc"), t)

    def test_interactive_begin_with_ops_is_refused(self):
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"interactive": True, "ops": [TOUCH]})
        self.refused(status, body, 400, "bad_request", "/ops")
        self.assert_nothing_ran()

    def test_unknown_endpoint_is_404_and_wrong_method_405(self):
        status, body = self.c.request("GET", "/v1/nothing")
        self.refused(status, body, 404, "not_found")
        status, body = self.c.request("DELETE", "/v1/transactions")
        self.refused(status, body, 405, "method_not_allowed")

    def test_unknown_transaction_is_404(self):
        status, body = self.c.request("GET", "/v1/transactions/c9-1-1")
        self.refused(status, body, 404, "not_found", "c9-1-1")

    def test_route_answers_crc32_hash_slots(self):
        for key in ["acct:9", "user:42", "", "ü"]:
            status, body = self.c.request("GET", "/v1/route?key=" + urllib.parse.quote(key))
            self.assertEqual(status, 200, body)
            slot = zlib.crc32(key.encode()) % 16384
            self.assertEqual(body["slot"], slot)
            self.assertEqual(body["shard"], "s1" if slot < 8192 else "s2")
        status, body = self.c.request("GET", "/v1/route")
        self.refused(status, body, 400, "bad_request", "key")

    def test_key_routed_op_runs_on_the_key_shard(self):
        status, route = self.c.request("GET", "/v1/route?key=acct:31")
        status, body = self.c.tx([{"key": "acct:31", "sql": "SELECT current_database(), "
                                   "(SELECT shard FROM dtx.agent)"}])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"][0]["shard"], route["shard"])
        self.assertEqual(body["results"][0]["rows"][0][1], route["shard"])

    def test_health_and_metrics(self):
        status, body = self.c.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body["shards"], {"s1": "up", "s2": "up"})
        self.c.tx([{"shard": "s1", "sql": "SELECT 1"}])
        status, text = self.c.request("GET", "/metrics")
        self.assertEqual(status, 200)
        self.assertIn('dtx_transactions_total{outcome="committed"}', text)
        self.assertIn('dtx_participant_up{shard="s2"} 1', text)

    def test_keep_alive_serves_many_requests_on_one_connection(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=10)
        sock = None
        for i in range(3):
            conn.request("POST", "/v1/transactions",
                         json.dumps({"ops": [{"shard": "s2", "sql": "SELECT %d" % i}]}))
            resp = conn.getresponse()
            self.assertEqual(resp.status, 200)
            self.assertNotEqual((resp.getheader("Connection") or "").lower(), "close")
            resp.read()
            if sock is None:
                sock = conn.sock
            self.assertIs(conn.sock, sock)  # the same TCP connection every time
        conn.close()

    def test_error_bodies_are_json_with_content_type(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=10)
        conn.request("POST", "/v1/transactions", "nope")
        resp = conn.getresponse()
        self.assertEqual(resp.status, 400)
        self.assertEqual(resp.getheader("Content-Type"), "application/json")
        self.assertIn("error", json.loads(resp.read()))
        conn.close()


class AuthTest(ClusterTest):
    SHARDS = 2
    COORD = {"auth": {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}}
    AGENT = {"auth": {"peer_token": "peer"}}

    def test_missing_token_is_401_and_wrong_token_401(self):
        status, body = self.c.tx([TOUCH])
        self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"))
        status, body = self.c.request("POST", "/v1/transactions", {"ops": [TOUCH]},
                                      headers={"Authorization": "Bearer nope"})
        self.assertEqual((status, body["error"]["code"]), (401, "unauthorized"))
        self.assertEqual(self.balance(0, 30), 1000)

    def test_client_token_runs_transactions_but_not_admin_endpoints(self):
        h = {"Authorization": "Bearer cli"}
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"ops": [{"shard": "s1", "sql": "SELECT 1"}]}, headers=h)
        self.assertEqual(status, 200, body)
        status, body = self.c.request("GET", "/v1/transactions?status=committed", headers=h)
        self.assertEqual((status, body["error"]["code"]), (403, "forbidden"))

    def test_admin_token_works_as_a_client_token(self):
        h = {"Authorization": "Bearer adm"}
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"ops": [{"shard": "s1", "sql": "SELECT 1"}]}, headers=h)
        self.assertEqual(status, 200, body)
        gtid = body["gtid"]
        status, body = self.c.request("GET", "/v1/transactions?status=committed", headers=h)
        self.assertEqual(status, 200, body)
        self.assertIn(gtid, [t["gtid"] for t in body["transactions"]])

    def test_health_is_open(self):
        status, body = self.c.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertEqual(body["shards"], {"s1": "up", "s2": "up"})  # peers authenticated

    def test_peer_stream_needs_the_peer_token(self):
        for token in (None, "cli"):
            s = socket.create_connection(("127.0.0.1", self.c.shards[0].agent_port), timeout=5)
            req = ("GET /v1/peer/stream HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n"
                   "Upgrade: dtx-peer/1\r\n")
            if token:
                req += "Authorization: Bearer %s\r\n" % token
            s.sendall((req + "\r\n").encode())
            head = s.recv(4096).decode()
            s.close()
            self.assertTrue(head.startswith("HTTP/1.1 401"), head)
