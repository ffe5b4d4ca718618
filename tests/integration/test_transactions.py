"""Cross-shard transactions over the real daemons and PostgreSQL: commit,
abort for every reason, one-phase and read-only optimisations, typed
results, concurrency."""

import random

from harness import ClusterTest, parallel, transfer_ops


class TransactionsTest(ClusterTest):

    def test_commit_across_three_shards_is_visible_on_all(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 5 WHERE id = 1",
             "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 2 WHERE id = 1"},
            {"shard": "s3", "sql": "UPDATE accounts SET balance = balance + 3 WHERE id = 1 "
                                   "RETURNING balance"},
        ])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["status"], "committed")
        self.assertEqual([r["shard"] for r in body["results"]], ["s1", "s2", "s3"])
        self.assertEqual(body["results"][2]["rows"], [[1003]])
        self.assertEqual(body["results"][0]["rows_affected"], 1)
        self.assertEqual([self.balance(s, 1) for s in (0, 1, 2)], [995, 1002, 1003])
        self.assert_no_prepared()
        status, state = self.c.request("GET", "/v1/transactions/" + body["gtid"])
        self.assertEqual(state["status"], "committed")
        self.assertEqual([s["state"] for s in state["shards"]], ["committed"] * 3)
        for s in ("s1", "s2", "s3"):
            lines = self.statements_for(s, body["gtid"])
            self.assertTrue(any("PREPARE TRANSACTION" in l for l in lines), s)
            self.assertTrue(any("COMMIT PREPARED" in l for l in lines), s)

    def test_sql_error_on_one_shard_leaves_nothing_on_any_shard(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 2"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 2"},
            {"shard": "s3", "sql": "UPDATE no_such_table SET x = 1"},
        ])
        self.assertEqual(status, 409, body)
        self.assertEqual(body["status"], "aborted")
        err = body["error"]
        self.assertEqual(err["code"], "sql_error")
        self.assertEqual(err["sqlstate"], "42P01")
        self.assertEqual((err["shard"], err["op"]), ("s3", 2))
        self.assertIn("no_such_table", err["message"])
        self.assertEqual([self.balance(s, 2) for s in (0, 1, 2)], [1000, 1000, 1000])
        self.assert_no_prepared()

    def test_expect_rows_mismatch_aborts_everywhere(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = 9999",
             "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 3"},
        ])
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["code"], "expect_rows_mismatch")
        self.assertEqual((body["error"]["shard"], body["error"]["op"]), ("s1", 0))
        self.assertEqual(self.balance(1, 3), 1000)
        self.assert_no_prepared()

    def test_expect_rows_counts_the_rows_a_select_returns(self):
        ops = [{"shard": "s1", "sql": "SELECT id FROM accounts WHERE id IN (10, 11)",
                "expect_rows": 2},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 10"}]
        status, body = self.c.tx(ops)
        self.assertEqual(status, 200, body)
        ops[0]["expect_rows"] = 3
        status, body = self.c.tx(ops)
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["code"], "expect_rows_mismatch")
        self.assertEqual(self.balance(1, 10), 1001)

    def test_single_shard_transaction_commits_in_one_phase(self):
        status, one = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 7 WHERE id = 4"},
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 2 WHERE id = 5"},
        ])
        self.assertEqual(status, 200, one)
        status, two = self.c.tx(transfer_ops("s1", 6, "s2", 6, 1))
        self.assertEqual(status, 200, two)
        self.assertEqual((self.balance(0, 4), self.balance(0, 5)), (1007, 998))
        # PostgreSQL never saw a gid for the one-shard transaction, and did for the other.
        self.assertEqual(self.statements_for("s1", one["gtid"]), [])
        self.assertTrue(any("PREPARE TRANSACTION" in l
                            for l in self.statements_for("s1", two["gtid"])))
        status, state = self.c.request("GET", "/v1/transactions/" + one["gtid"])
        self.assertTrue(state.get("one_phase"), state)

    def test_readonly_branch_is_left_out_of_phase_two(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "SELECT balance FROM accounts WHERE id = 7"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 7"},
        ])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"][0]["rows"], [[1000]])
        self.assertEqual(self.statements_for("s1", body["gtid"]), [])
        s2 = self.statements_for("s2", body["gtid"])
        self.assertTrue(any("PREPARE TRANSACTION" in l for l in s2))
        self.assertTrue(any("COMMIT PREPARED" in l for l in s2))
        status, state = self.c.request("GET", "/v1/transactions/" + body["gtid"])
        self.assertEqual([s["state"] for s in state["shards"]], ["readonly", "committed"])

    def test_branch_that_wrote_nothing_votes_readonly_even_after_an_update(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = 0 WHERE id = -1"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 8"},
        ])
        self.assertEqual(status, 200, body)
        status, state = self.c.request("GET", "/v1/transactions/" + body["gtid"])
        self.assertEqual(state["shards"][0]["state"], "readonly")
        # The coordinator sent s1 nothing in phase 2: its only COMMIT PREPARED is the
        # participant's own, right after the (empty) PREPARE.
        s1 = self.statements_for("s1", body["gtid"])
        self.assertEqual(sum("COMMIT PREPARED" in l for l in s1), 1)
        self.assert_no_prepared()

    def test_participant_down_yields_409_and_nothing_committed(self):
        self.c.kill_participant(2)
        try:
            self.c.wait_for_shard = None
            self.wait_for(lambda: self.c.request("GET", "/healthz")[1]["shards"]["s3"] != "up",
                          what="coordinator to notice s3 is gone")
            status, body = self.c.tx(transfer_ops("s1", 12, "s3", 12, 10))
            self.assertEqual(status, 409, body)
            self.assertEqual(body["error"]["code"], "participant_unavailable")
            self.assertEqual(body["error"]["shard"], "s3")
            self.assertEqual(self.balance(0, 12), 1000)
            self.assert_no_prepared()
        finally:
            self.c.start_participant(2)
            self.c.wait_healthy()
        status, body = self.c.tx(transfer_ops("s1", 12, "s3", 12, 10))
        self.assertEqual(status, 200, body)
        self.assertEqual((self.balance(0, 12), self.balance(2, 12)), (990, 1010))

    def test_results_are_in_op_order_with_lossless_types(self):
        status, body = self.c.tx([
            {"shard": "s2", "sql": "SELECT 1::int AS i, 9007199254740993::bigint AS big, "
                                   "12::bigint AS small, 1.50::numeric(10,2) AS n, 2.5::float8 AS f, "
                                   "true AS b, NULL::text AS z, 'x'::text AS t, "
                                   "'{\"a\":[1]}'::jsonb AS j"},
            {"shard": "s1", "sql": "SELECT $1::text AS echo, $2::int + 1 AS plus, $3::bool AS flag",
             "params": ["1; DROP TABLE accounts", 41, True]},
            {"shard": "s2", "sql": "SELECT count(*) AS c FROM accounts"},
        ])
        self.assertEqual(status, 200, body)
        r0, r1, r2 = body["results"]
        self.assertEqual([r["shard"] for r in body["results"]], ["s2", "s1", "s2"])
        self.assertEqual(r0["columns"], ["i", "big", "small", "n", "f", "b", "z", "t", "j"])
        self.assertEqual(r0["rows"], [[1, "9007199254740993", 12, "1.50", 2.5, True, None, "x",
                                      {"a": [1]}]])
        self.assertEqual(r1["rows"], [["1; DROP TABLE accounts", 42, True]])
        self.assertEqual(r2["rows"], [[100]])
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM accounts"), [["100"]])

    def test_json_values_keep_the_numbers_postgresql_printed(self):
        # A json or jsonb value is PostgreSQL's own JSON text: a number in it that a double
        # cannot hold (2^53 + 1, 1e400, 23 digits) is not rounded or turned into null.
        status, body = self.c.tx([
            {"shard": "s1", "sql": "SELECT '{\"n\": 9007199254740993, \"huge\": 1e400}'::json"
                                   " AS j, '[12345678901234567890123]'::jsonb AS b"}])
        self.assertEqual(status, 200, body)
        j, b = body["results"][0]["rows"][0]
        self.assertEqual(j["n"], 9007199254740993)
        self.assertEqual(j["huge"], float("inf"))  # Python reads 1e400 so; a double printed null
        self.assertEqual(b, [12345678901234567890123])

    def test_a_fractional_number_parameter_is_bound_as_the_client_wrote_it(self):
        # a double's 17 digits (19.989999999999998) reached a numeric column as they were
        status, body = self.c.tx([
            {"shard": "s1", "sql": "SELECT $1::numeric::text, $2::numeric::text, "
                                   "$3::numeric::text, $4::numeric::text, $5::float8",
             "params": [19.99, 0.1, 123456.789, -0.0025, 1.25e-300]}])
        self.assertEqual(status, 200, body)
        self.assertEqual(body["results"][0]["rows"],
                         [["19.99", "0.1", "123456.789", "-0.0025", 1.25e-300]])

    def test_a_json_value_with_newlines_in_its_text_keeps_every_result_in_place(self):
        # json keeps its input's whitespace and json_agg puts a newline between elements;
        # a branch's results travel to the coordinator one op per line
        status, body = self.c.tx([
            {"shard": "s1", "sql": "SELECT json_agg(t) AS a FROM (VALUES (1, 'x'), (2, 'y')) "
                                   "t(n, s)"},
            {"shard": "s1", "sql": "SELECT E'{\\n\"k\":\\r\\n [1,\\n2], \"s\": \"a\\\\nb\"}'"
                                   "::json AS j, 'after' AS t"},
            {"shard": "s2", "sql": "SELECT 2 AS two"}])
        self.assertEqual(status, 200, body)
        self.assertIsInstance(body, dict, "the answer is not JSON")
        r0, r1, r2 = body["results"]
        self.assertEqual(r0["rows"], [[[{"n": 1, "s": "x"}, {"n": 2, "s": "y"}]]])
        self.assertEqual(r1["columns"], ["j", "t"])
        self.assertEqual(r1["rows"], [[{"k": [1, 2], "s": "a\nb"}, "after"]])
        self.assertEqual(r2["rows"], [[2]])

    def test_concurrent_transfers_keep_the_total(self):
        before = self.total()
        rng = random.Random(7)
        plans = [[(rng.choice("123"), rng.randint(50, 99), rng.choice("123"), rng.randint(50, 99),
                   rng.randint(1, 30)) for _ in range(15)] for _ in range(12)]

        def worker(i):
            outcomes = []
            for a, x, b, y, amt in plans[i]:
                if (a, x) == (b, y):
                    continue
                status, body = self.c.tx(transfer_ops("s" + a, x, "s" + b, y, amt))
                self.assertIn(status, (200, 409), body)
                outcomes.append(status)
            return outcomes

        results = parallel(12, worker)
        self.assertGreater(sum(s == 200 for r in results for s in r), 100)
        self.assertEqual(self.total(), before)
        self.assert_no_prepared()


class SlowShardTest(ClusterTest):
    SHARDS = 2

    def test_a_slow_shard_does_not_delay_unrelated_transactions(self):
        import threading
        import time

        slow = {}

        def run_slow():
            slow["answer"] = self.c.tx([
                {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 50 "
                                       "AND (SELECT true FROM pg_sleep(2))"},
                {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 50"}])

        t = threading.Thread(target=run_slow)
        t.start()
        time.sleep(0.2)
        start = time.time()
        for i in range(20):
            status, body = self.c.tx(transfer_ops("s1", 51 + i % 5, "s2", 51 + i % 5, 1))
            self.assertEqual(status, 200, body)
        quick = time.time() - start
        t.join()
        self.assertEqual(slow["answer"][0], 200)
        self.assertLess(quick, 1.5, "20 transactions took %.2f s behind a 2 s one" % quick)

    def test_timeout_ms_aborts_a_branch_that_runs_too_long(self):
        import time

        start = time.time()
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 60 "
                                   "AND (SELECT true FROM pg_sleep(5))"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 60"}],
            timeout_ms=500)
        took = time.time() - start
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["code"], "timeout")
        self.assertLess(took, 3)
        self.assertEqual((self.balance(0, 60), self.balance(1, 60)), (1000, 1000))
        self.assert_no_prepared(timeout=2)

    def test_deferred_constraint_failing_at_prepare_is_a_no_vote(self):
        self.c.psql(0, "CREATE TABLE IF NOT EXISTS uniq (k int UNIQUE DEFERRABLE INITIALLY DEFERRED)")
        self.c.psql(0, "INSERT INTO uniq VALUES (1)")
        status, body = self.c.tx([
            {"shard": "s1", "sql": "INSERT INTO uniq VALUES (1)"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 61"}])
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["sqlstate"], "23505")
        self.assertEqual(body["error"]["shard"], "s1")
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM uniq"), [["1"]])
        self.assertEqual(self.balance(1, 61), 1000)
        self.assert_no_prepared()
