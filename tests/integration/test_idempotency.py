"""Idempotency keys: a retry never executes twice and gets the first outcome,
also after the coordinator was killed and restarted."""

from harness import ClusterTest, parallel

INCREMENT = [
    {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1 "
                           "RETURNING balance", "params": [20]},
    {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1 "
                           "RETURNING balance", "params": [20]},
]


class IdempotencyTest(ClusterTest):
    SHARDS = 2

    def test_retry_returns_the_first_outcome_without_executing_again(self):
        s1, first = self.c.tx(INCREMENT, idempotency_key="inc-1")
        s2, again = self.c.tx(INCREMENT, idempotency_key="inc-1")
        self.assertEqual((s1, s2), (200, 200), (first, again))
        self.assertEqual(again, first)
        self.assertEqual((self.balance(0, 20), self.balance(1, 20)), (1001, 1001))

    def test_retry_after_a_coordinator_crash_returns_the_recorded_commit(self):
        ops = [dict(op, params=[21]) for op in INCREMENT]
        status, first = self.c.tx(ops, idempotency_key="inc-crash")
        self.assertEqual(status, 200, first)
        self.c.kill_coordinator()
        self.c.start_coordinator()
        status, again = self.c.tx(ops, idempotency_key="inc-crash")
        self.assertEqual(status, 200, again)
        self.assertEqual(again["gtid"], first["gtid"])
        self.assertEqual(again["results"], first["results"])
        self.assertEqual((self.balance(0, 21), self.balance(1, 21)), (1001, 1001))
        status, state = self.c.request("GET", "/v1/transactions/" + first["gtid"])
        self.assertEqual(state["status"], "committed")
        # A new transaction after the restart gets a gtid of a new epoch.
        status, fresh = self.c.tx([{"shard": "s1", "sql": "SELECT 1"}])
        self.assertNotEqual(fresh["gtid"].split("-")[1], first["gtid"].split("-")[1])

    def test_single_shard_retry_survives_a_restart_too(self):
        ops = [{"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 5 WHERE id = 22"}]
        status, first = self.c.tx(ops, idempotency_key="one-shard")
        self.assertEqual(status, 200, first)
        self.c.kill_coordinator()
        self.c.start_coordinator()
        status, again = self.c.tx(ops, idempotency_key="one-shard")
        self.assertEqual((status, again["gtid"]), (200, first["gtid"]))
        self.assertEqual(self.balance(1, 22), 1005)

    def test_a_read_only_retry_after_a_restart_gets_the_first_answer_too(self):
        """Every branch read-only (no COMMIT record needed for the data) must still keep its
        key's answer across a kill -9: the retry gets the first gtid and the first reads,
        not a second execution that reads the balance a later transaction changed."""
        read = {"sql": "SELECT balance FROM accounts WHERE id = $1", "params": [26]}
        bump = "UPDATE accounts SET balance = balance + 1 WHERE id = 26"
        cases = [("ro-two", [dict(read, shard="s1"), dict(read, shard="s2")], {}),
                 ("ro-one", [dict(read, shard="s2")], {}),
                 ("ro-3pc", [dict(read, shard="s1"), dict(read, shard="s2")],
                  {"protocol": "3pc"})]
        firsts = {}
        for key, ops, extra in cases:
            status, firsts[key] = self.c.tx(ops, idempotency_key=key, **extra)
            self.assertEqual(status, 200, firsts[key])
        status, body = self.c.tx([{"shard": "s1", "sql": bump}, {"shard": "s2", "sql": bump}])
        self.assertEqual(status, 200, body)
        self.c.kill_coordinator()
        self.c.start_coordinator()
        for key, ops, extra in cases:
            first = firsts[key]
            status, again = self.c.tx(ops, idempotency_key=key, **extra)
            self.assertEqual((status, again["gtid"]), (200, first["gtid"]), (key, again))
            self.assertEqual(again["results"], first["results"], key)
            status, state = self.c.request("GET", "/v1/transactions/" + first["gtid"])
            self.assertEqual((status, state.get("status")), (200, "committed"), (key, state))

    def test_a_retry_may_order_each_ops_members_differently(self):
        """A client whose maps have no fixed order (Go's, for one) sends the same ops with
        their members in another order: the same request, answered with the first outcome,
        not 422. A parameter that is an object is passed as JSON text, so its members'
        order stays part of the request."""
        def op(shard, order):
            members = [("shard", shard),
                       ("sql", "UPDATE accounts SET balance = balance + 1 WHERE id = $1"),
                       ("params", [27]), ("expect_rows", 1)]
            return dict(members if order == "as documented" else reversed(members))
        status, first = self.c.tx([op("s1", "as documented"), op("s2", "as documented")],
                                  idempotency_key="member-order")
        self.assertEqual(status, 200, first)
        status, again = self.c.tx([op("s1", "reversed"), op("s2", "reversed")],
                                  idempotency_key="member-order")
        self.assertEqual((status, again.get("gtid")), (200, first["gtid"]), again)
        self.assertEqual((self.balance(0, 27), self.balance(1, 27)), (1001, 1001))
        text = [{"shard": "s1", "sql": "SELECT $1::text", "params": [{"a": 1, "b": 2}]}]
        status, body = self.c.tx(text, idempotency_key="param-order")
        self.assertEqual(status, 200, body)
        text[0]["params"] = [{"b": 2, "a": 1}]
        status, body = self.c.tx(text, idempotency_key="param-order")
        self.assertEqual((status, body["error"]["code"]), (422, "idempotency_key_mismatch"))

    def test_aborted_outcome_is_returned_to_a_retry(self):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = 23"},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 23",
                "expect_rows": 2}]
        s1, first = self.c.tx(ops, idempotency_key="will-abort")
        s2, again = self.c.tx(ops, idempotency_key="will-abort")
        self.assertEqual((s1, s2), (409, 409))
        self.assertEqual(again, first)
        self.assertEqual(self.balance(0, 23), 1000)

    def test_reusing_a_key_for_another_request_is_refused(self):
        status, first = self.c.tx(INCREMENT, idempotency_key="inc-reuse")
        self.assertEqual(status, 200)
        other = [dict(INCREMENT[0], params=[24])]
        status, body = self.c.tx(other, idempotency_key="inc-reuse")
        self.assertEqual(status, 422, body)
        self.assertEqual(body["error"]["code"], "idempotency_key_mismatch")
        self.assertIn(first["gtid"], body["error"]["message"])
        self.assertEqual(self.balance(0, 24), 1000)

    def test_concurrent_retries_of_one_key_run_it_once(self):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 25 "
                                      "AND (SELECT true FROM pg_sleep(0.2))"},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 25"}]
        answers = parallel(8, lambda i: self.c.tx(ops, idempotency_key="storm"))
        self.assertEqual({s for s, _ in answers}, {200})
        self.assertEqual(len({b["gtid"] for _, b in answers}), 1)
        self.assertEqual((self.balance(0, 25), self.balance(1, 25)), (1001, 1001))


class IdempotencyLimitsTest(ClusterTest):
    """What an idempotency key may cost: its results go into the decision log
    (max_logged_results_bytes) and its answer is kept in memory
    (retention_max_bytes)."""
    SHARDS = 2
    COORD = {"max_logged_results_bytes": 2048, "retention_max_bytes": 3000}

    def test_results_too_big_to_log_abort_the_transaction_and_leave_nothing(self):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 30 "
                                      "RETURNING repeat('x', 3000)"},
               {"shard": "s2", "sql": "SELECT 1"}]
        status, body = self.c.tx(ops, idempotency_key="big-1")
        self.assertEqual(status, 409, body)
        self.assertEqual(body["error"]["code"], "payload_too_large")
        self.assertIn("max_logged_results_bytes (2048)", body["error"]["message"])
        self.assertEqual(self.balance(0, 30), 1000)
        self.assert_no_prepared(timeout=5)
        status, body = self.c.tx(ops)  # without a key nothing is logged: no limit
        self.assertEqual(status, 200, body)
        self.assertEqual(self.balance(0, 30), 1001)

    def test_over_the_retention_budget_results_go_first_and_keys_are_kept(self):
        ops = [{"shard": "s1", "sql": "SELECT repeat('y', 600)"},
               {"shard": "s2", "sql": "SELECT 1"}]
        gtids = []
        for i in range(4):  # ~1.3 KB answer each (results and answer): the budget holds two
            status, body = self.c.tx(ops, idempotency_key="ret-%d" % i)
            self.assertEqual(status, 200, body)
            gtids.append(body["gtid"])
        self.wait_for(lambda: self.c.tx(ops, idempotency_key="ret-0")[1].get("results_dropped"),
                      what="the expiry tick (each second) to drop the oldest answer's results")
        status, again = self.c.tx(ops, idempotency_key="ret-0")
        self.assertEqual((status, again["gtid"], again["status"], again["results"]),
                         (200, gtids[0], "committed", None))  # the key is kept: not run again
        self.assertIn("retention_max_bytes", again["results_dropped"])
        status, again = self.c.tx(ops, idempotency_key="ret-3")
        self.assertEqual(again["gtid"], gtids[3])  # the newest keeps its results
        self.assertEqual(again["results"][0]["rows"], [["y" * 600]])
        self.assertEqual(self.c.request("GET", "/v1/transactions/" + gtids[0])[0], 200)
        _, metrics = self.c.request("GET", "/metrics")
        held = [int(line.split()[1]) for line in metrics.splitlines()
                if line.startswith("dtx_retained_bytes ")]
        self.assertEqual(len(held), 1, metrics)
        self.assertTrue(0 < held[0] <= 3000, held)



class IdempotencyBudgetTest(ClusterTest):
    """Its own cluster: the answers of the class above fill the same budget."""
    SHARDS = 2
    COORD = {"retention_max_bytes": 3000}

    def test_big_keyed_answers_do_not_cost_other_clients_their_transactions(self):
        """A transaction without a key keeps no answer (0 bytes): evicting it frees none of
        retention_max_bytes. One client's big keyed answers evicted every such record, so
        other clients' recent gtids answered 404."""
        status, plain = self.c.tx([{"shard": "s1", "sql": "SELECT 1"},
                                   {"shard": "s2", "sql": "SELECT 2"}])
        self.assertEqual(status, 200, plain)
        for i in range(6):
            status, body = self.c.tx([{"shard": "s1", "sql": "SELECT repeat('y', 1000), %d" % i},
                                      {"shard": "s2", "sql": "SELECT 1"}],
                                     idempotency_key="bytes-%d" % i)
            self.assertEqual(status, 200, body)

        def dropped():  # a retry: the budget is enforced once a second
            status, again = self.c.tx([{"shard": "s1", "sql": "SELECT repeat('y', 1000), 0"},
                                       {"shard": "s2", "sql": "SELECT 1"}],
                                      idempotency_key="bytes-0")
            self.assertEqual(status, 200, again)
            return "retention_max_bytes" in again.get("results_dropped", "")
        self.wait_for(dropped, timeout=10, what="the oldest keyed answer to lose its results")
        status, t = self.c.request("GET", "/v1/transactions/" + plain["gtid"])
        self.assertEqual((status, t.get("status")), (200, "committed"), t)

    def test_no_key_runs_twice_however_big_the_other_answers_are(self):
        """The issue's scenario: many answers of ~1 KB exceed retention_max_bytes many times
        over; a retry of the first key still gets its outcome, never a second run."""
        def ops(n):
            return [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id "
                                           "= 31 RETURNING repeat('z', 1000)"},
                    {"shard": "s2", "sql": "SELECT %d" % n}]
        status, first = self.c.tx(ops(0), idempotency_key="big-key-0")
        self.assertEqual(status, 200, first)
        for i in range(1, 30):
            status, body = self.c.tx(ops(i), idempotency_key="big-key-%d" % i)
            self.assertEqual(status, 200, body)
        self.assertEqual(self.balance(0, 31), 1030)
        for restart in (False, True):
            if restart:
                self.c.stop_coordinator()
                self.c.start_coordinator()
            status, again = self.c.tx(ops(0), idempotency_key="big-key-0")
            self.assertEqual((status, again["gtid"]), (200, first["gtid"]), again)
            self.assertEqual(self.balance(0, 31), 1030, "the retry ran again")
        _, dump = self.c.request("GET", "/metrics")
        r = __import__("subprocess").run(
            [__import__("os").path.join(self.c.bindir, "dtxctl"), "log", "dump", "--log-dir",
             self.c.log_dir, "--json"], capture_output=True, text=True, timeout=60)
        commits = [e for e in __import__("json").loads(r.stdout)["entries"]
                   if e["type"] == "COMMIT" and e.get("idempotency_key") == "big-key-0"]
        self.assertEqual({e["gtid"] for e in commits}, {first["gtid"]})
