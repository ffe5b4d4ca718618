"""The participant's PostgreSQL connection pool (participant/pgx.c): every
branch runs at the pool's statement_timeout (0, whatever a branch before it
set or the database defaults to), and it connects through every host a
conninfo lists. One pooled connection per agent, so every transaction of a
shard runs on the same PostgreSQL session."""

import dtx_cluster
from harness import ClusterTest, transfer_ops

SHOW_TIMEOUT = "SELECT current_setting('statement_timeout')"


class PoolTest(ClusterTest):
    SHARDS = 2
    AGENT = {"pool_size": 1}

    def session_timeout(self, timeout_ms):
        status, body = self.c.tx([{"shard": "s1", "sql": SHOW_TIMEOUT}], timeout_ms=timeout_ms)
        self.assertEqual(status, 200, body)
        return body["results"][0]["rows"][0][0]

    def test_branches_run_at_statement_timeout_0_whatever_a_branch_before_set(self):
        # The branch's deadline is the participant's to keep (DeadlineTest in
        # test_isolation), not a statement_timeout a client's SET could change.
        self.assertEqual(self.session_timeout(700), "0")
        # a committed branch's session-level SET, a failed one's, an expect_rows mismatch's
        set_1ms = "SELECT set_config('statement_timeout', '1', false)"
        status, body = self.c.tx([{"shard": "s1", "sql": set_1ms}])
        self.assertEqual(status, 200, body)
        self.assertEqual(self.session_timeout(800), "0")
        status, body = self.c.tx([{"shard": "s1", "sql": set_1ms},
                                  {"shard": "s1", "sql": "SELECT 1/0"}], timeout_ms=900)
        self.assertEqual((status, body["error"]["sqlstate"]), (409, "22012"), body)
        self.assertEqual(self.session_timeout(900), "0")
        status, body = self.c.tx([{"shard": "s1", "sql": set_1ms},
                                  {"shard": "s1", "sql": "SELECT 1", "expect_rows": 2}],
                                 timeout_ms=900)
        self.assertEqual((status, body["error"]["code"]), (409, "expect_rows_mismatch"), body)
        self.assertEqual(self.session_timeout(900), "0")

    def test_connection_moves_on_to_the_next_host_when_the_first_refuses(self):
        sh = self.c.shards[0]
        refused = dtx_cluster.free_ports(1)[0]
        saved = dict(self.c.agent_extra)
        self.c.agent_extra["conninfo"] = ("host=127.0.0.1,%s port=%d,%d dbname=app user=postgres"
                                          % (sh.sock, refused, sh.pg_port))
        self.c.stop_participant(0)
        try:
            self.c.start_participant(0)
        finally:
            self.c.agent_extra = saved
        self.wait_for(lambda: self.c.request("GET", "/healthz", port=sh.agent_port)[0] == 200,
                      what="the agent's pool to connect through the second host")
        self.c.wait_healthy()
        self.assertEqual(self.session_timeout(700), "0")
        self.c.stop_participant(0)
        self.c.start_participant(0)
        self.c.wait_healthy()

    def test_a_shard_whose_database_defaults_to_a_1ms_statement_timeout_still_commits(self):
        # The agent's statements (its set-up, the branches, COMMIT PREPARED,
        # DISCARD ALL, recovery's lists) run under statement_timeout 0 whatever
        # the server, database or role default to.
        for sh in self.c.shards:
            self.c.psql(sh.i, "ALTER DATABASE app SET statement_timeout = '1ms'")
        try:
            for i in range(len(self.c.shards)):  # new sessions, which start at 1 ms
                self.c.stop_participant(i)
                self.c.start_participant(i)
            self.c.wait_healthy()
            self.assertEqual(self.c.psql(0, "SELECT current_setting('statement_timeout')"),
                             [["1ms"]])
            untimed = "-c statement_timeout=0"  # this test's own reads, under any load
            before = self.total(untimed)
            for n in range(20):
                status, body = self.c.tx(transfer_ops("s1", 1 + n, "s2", 1 + n, 5),
                                         timeout_ms=5000)
                self.assertEqual((status, body.get("status")), (200, "committed"), body)
            self.assertEqual(self.total(untimed), before)
            self.assertEqual(self.session_timeout(700), "0")
            status, body = self.c.tx([{"shard": "s1", "sql": SHOW_TIMEOUT},
                                      {"shard": "s1", "sql": "SELECT pg_sleep(0.05)"}],
                                     timeout_ms=5000)
            self.assertEqual(status, 200, body)
            self.assertEqual(body["results"][0]["rows"], [["0"]])
            for sh in self.c.shards:  # (this psql's own session starts at 1 ms too)
                self.assertEqual(self.c.psql(sh.i, "SELECT count(*) FROM pg_prepared_xacts",
                                             options=untimed), [["0"]])
        finally:
            for sh in self.c.shards:
                self.c.psql(sh.i, "ALTER DATABASE app RESET statement_timeout",
                            options="-c statement_timeout=0")
            for i in range(len(self.c.shards)):
                self.c.stop_participant(i)
                self.c.start_participant(i)
            self.c.wait_healthy()
