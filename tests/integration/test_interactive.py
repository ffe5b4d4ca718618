"""Interactive transactions over several HTTP requests, and admission
control: the cap on transactions in flight, bounded branch connections on
the participants, and headroom in PostgreSQL's prepared-transaction slots."""

import http.client
import json
import random
import threading
import time

import promtext
from harness import LOG_STATEMENTS, ClusterTest, InteractiveMixin, parallel, sql


class InteractiveTest(InteractiveMixin, ClusterTest):

    ACCT = iter(range(1, 60))

    def setUp(self):
        self.acct = next(InteractiveTest.ACCT)

    def test_read_then_write_across_two_shards_over_several_requests(self):
        a = self.acct
        gtid = self.begin()
        status, ans = self.ops(gtid,
                               sql("s1", "SELECT id, balance FROM accounts WHERE id = $1", a),
                               sql("s2", "SELECT balance, 'x'::text AS tag FROM accounts "
                                         "WHERE id = $1", a))
        self.assertEqual(status, 200, ans)
        self.assertEqual(ans["gtid"], gtid)
        r1, r2 = ans["results"]
        self.assertEqual((r1["shard"], r1["columns"], r1["rows"]), ("s1", ["id", "balance"],
                                                                      [[a, 1000]]))
        self.assertEqual((r2["columns"], r2["rows"]), (["balance", "tag"], [[1000, "x"]]))
        # the service decides on what it read, then writes
        amount = r1["rows"][0][1] // 4
        status, ans = self.ops(gtid,
                               sql("s1", "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                                   amount, a, expect_rows=1),
                               sql("s2", "UPDATE accounts SET balance = balance + $1 WHERE id = $2 "
                                         "RETURNING balance", amount, a))
        self.assertEqual(status, 200, ans)
        self.assertEqual(ans["results"][1]["rows"], [[1250]])
        self.assertEqual((self.balance(0, a), self.balance(1, a)), (1000, 1000),
                         "nothing is visible before the commit")
        status, state = self.c.request("GET", "/v1/transactions/" + gtid)
        self.assertEqual((state["status"], [s["state"] for s in state["shards"]]),
                         ("active", ["open", "open"]))
        status, ans = self.commit(gtid)
        self.assertEqual((status, ans["status"]), (200, "committed"), ans)
        self.assertEqual((self.balance(0, a), self.balance(1, a)), (750, 1250))
        self.assert_no_prepared()
        for s in ("s1", "s2"):
            self.assertTrue(any("PREPARE TRANSACTION" in l for l in self.statements_for(s, gtid)))

    def test_commit_after_a_coordinator_restart_answers_the_outcome_again(self):
        """api.md: commit of a committed transaction answers its outcome again. After a
        kill -9 the transaction is rebuilt from its COMMIT record, which did not say it was
        interactive, and a repeated commit (its client never heard the first answer) got 409
        "not begun as interactive"."""
        a = self.acct
        gtid = self.begin()
        status, ans = self.ops(gtid,
                               sql("s1", "UPDATE accounts SET balance = balance - 1 WHERE id = $1", a),
                               sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = $1", a))
        self.assertEqual(status, 200, ans)
        self.assertEqual(self.commit(gtid)[0], 200)
        self.c.kill_coordinator()
        self.c.start_coordinator()
        status, ans = self.commit(gtid)
        self.assertEqual((status, ans.get("status"), ans.get("gtid")), (200, "committed", gtid), ans)
        self.assertEqual((self.balance(0, a), self.balance(1, a)), (999, 1001))

    def test_an_open_or_aborted_transaction_claims_no_decision_it_did_not_make(self):
        """GET showed "decided_by": "coordinator" on an open transaction, and "one_phase":
        true on an open or aborted one with one shard (api.md: committed in one phase)."""
        g = self.begin()
        self.assertEqual(self.ops(g, sql("s1", "SELECT 1"))[0], 200)
        _, state = self.c.request("GET", "/v1/transactions/" + g)
        self.assertEqual(state["status"], "active")
        self.assertNotIn("decided_by", state)
        self.assertNotIn("one_phase", state)
        self.assertEqual(self.abort(g)[0], 200)
        _, state = self.c.request("GET", "/v1/transactions/" + g)
        self.assertEqual((state["status"], state.get("decided_by")), ("aborted", "coordinator"))
        self.assertNotIn("one_phase", state)
        g = self.begin()
        self.assertEqual(self.ops(g, sql("s1", "SELECT 1"))[0], 200)
        self.assertEqual(self.commit(g)[0], 200)
        _, state = self.c.request("GET", "/v1/transactions/" + g)
        self.assertEqual((state["status"], state.get("one_phase")), ("committed", True), state)

    def test_later_ops_see_earlier_writes_on_the_same_shard(self):
        a = self.acct
        gtid = self.begin()
        self.assertEqual(self.ops(gtid, sql("s3", "UPDATE accounts SET balance = 7 "
                                                  "WHERE id = $1", a))[0], 200)
        status, ans = self.ops(gtid, sql("s3", "SELECT balance FROM accounts WHERE id = $1", a))
        self.assertEqual(ans["results"][0]["rows"], [[7]])
        status, ans = self.commit(gtid)
        self.assertEqual(status, 200, ans)
        self.assertEqual(self.balance(2, a), 7)
        lines = self.statements_for("s3", gtid)
        self.assertFalse(any("PREPARE TRANSACTION" in l for l in lines),
                         "one shard commits in one phase")

    def test_two_services_add_ops_to_one_gtid(self):
        a = self.acct
        gtid = self.begin()
        out = {}

        def service_a():  # debits, then hands the gtid on
            out["a"] = self.ops(gtid, sql("s1", "UPDATE accounts SET balance = balance - 30 "
                                                "WHERE id = $1", a, expect_rows=1))

        def service_b():  # credits on another shard and commits
            out["b"] = self.ops(gtid, sql("s2", "UPDATE accounts SET balance = balance + 30 "
                                                "WHERE id = $1", a, expect_rows=1))
            out["commit"] = self.commit(gtid)

        service_a()  # each service is its own HTTP client; only the gtid passes between them
        service_b()
        self.assertEqual([out[k][0] for k in ("a", "b", "commit")], [200, 200, 200], out)
        self.assertEqual((self.balance(0, a), self.balance(1, a)), (970, 1030))

    def test_a_failed_op_aborts_everywhere_and_every_later_call_gets_409(self):
        a = self.acct
        gtid = self.begin()
        self.assertEqual(self.ops(gtid, sql("s1", "UPDATE accounts SET balance = 0 "
                                                  "WHERE id = $1", a))[0], 200)
        status, ans = self.ops(gtid, sql("s2", "UPDATE no_such_table SET x = 1"))
        self.assertEqual(status, 409, ans)
        self.assertEqual((ans["status"], ans["error"]["code"], ans["error"]["shard"]),
                         ("aborted", "sql_error", "s2"))
        for call in (lambda: self.ops(gtid, sql("s3", "SELECT 1")), lambda: self.commit(gtid)):
            status, again = call()
            self.assertEqual(status, 409, again)
            self.assertEqual(again["error"]["code"], "sql_error")
        self.assertEqual(self.abort(gtid)[0], 200, "abort is idempotent")
        self.assertEqual(self.balance(0, a), 1000)
        self.assert_no_prepared()

    def test_expect_rows_mismatch_in_a_call_aborts(self):
        gtid = self.begin()
        status, ans = self.ops(gtid, sql("s1", "UPDATE accounts SET balance = 1 WHERE id = -5",
                                         expect_rows=1))
        self.assertEqual((status, ans["error"]["code"]), (409, "expect_rows_mismatch"), ans)

    def test_idle_timeout_aborts_and_frees_the_rows(self):
        a = self.acct
        gtid = self.begin(timeout_ms=700)
        self.assertEqual(self.ops(gtid, sql("s1", "UPDATE accounts SET balance = 1 "
                                                  "WHERE id = $1", a))[0], 200)
        time.sleep(1.2)
        start = time.time()
        status, ans = self.c.tx([sql("s1", "UPDATE accounts SET balance = balance + 5 "
                                           "WHERE id = $1", a, expect_rows=1)], timeout_ms=3000)
        self.assertEqual(status, 200, ans)
        self.assertLess(time.time() - start, 1.0, "the row was free")
        status, ans = self.ops(gtid, sql("s1", "SELECT 1"))
        self.assertEqual((status, ans["error"]["code"]), (409, "timeout"), ans)
        self.assertIn("idle", ans["error"]["message"])
        self.assertEqual(self.commit(gtid)[0], 409)
        self.assertEqual(self.balance(0, a), 1005)

    def test_abort_releases_locks_at_once(self):
        a = self.acct
        gtid = self.begin()
        self.assertEqual(self.ops(gtid, sql("s2", "UPDATE accounts SET balance = 1 "
                                                  "WHERE id = $1", a))[0], 200)
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("tx", self.c.tx(
            [sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = $1", a,
                 expect_rows=1)], timeout_ms=10000)))
        t.start()
        time.sleep(0.5)
        self.assertTrue(t.is_alive(), "the one-shot transaction waits on the row lock")
        start = time.time()
        status, ans = self.abort(gtid)
        self.assertEqual((status, ans), (200, {"gtid": gtid, "status": "aborted"}))
        t.join()
        self.assertLess(time.time() - start, 1.0)
        self.assertEqual(result["tx"][0], 200, result)
        self.assertEqual(self.balance(1, a), 1001)
        status, ans = self.ops(gtid, sql("s2", "SELECT 1"))
        self.assertEqual((status, ans["error"]["code"]), (409, "aborted"))

    def test_commit_and_abort_of_unknown_committed_or_aborted_transactions(self):
        for call in (self.commit, self.abort, lambda g: self.ops(g, sql("s1", "SELECT 1"))):
            status, ans = call("c1-99999-1")
            self.assertEqual((status, ans["error"]["code"]), (404, "not_found"))
        gtid = self.begin()
        self.assertEqual(self.ops(gtid, sql("s1", "SELECT 1"), sql("s2", "SELECT 2"))[0], 200)
        self.assertEqual(self.commit(gtid)[0], 200)
        self.assertEqual(self.commit(gtid)[0], 200, "a retried commit gets the same outcome")
        status, ans = self.abort(gtid)
        self.assertEqual((status, ans["error"]["code"]), (409, "conflict"))
        status, ans = self.ops(gtid, sql("s1", "SELECT 1"))
        self.assertEqual((status, ans["error"]["code"]), (409, "conflict"))
        gtid = self.begin()
        self.assertEqual(self.abort(gtid)[0], 200)
        status, ans = self.commit(gtid)
        self.assertEqual((status, ans["status"], ans["error"]["code"]), (409, "aborted", "aborted"))
        status, body = self.c.tx([sql("s1", "SELECT 1")])
        status, ans = self.ops(body["gtid"], sql("s1", "SELECT 1"))
        self.assertEqual((status, ans["error"]["code"]), (409, "conflict"), "not interactive")

    def test_a_connection_lost_between_calls_aborts_only_its_own_transaction(self):
        a = self.acct
        rows = [1000 + a, 2000 + a]
        for r in rows:
            self.c.psql(0, "INSERT INTO accounts VALUES (%d, 0)" % r)
        first = self.begin()
        self.assertEqual(self.ops(first, sql("s1", "UPDATE accounts SET balance = 1 "
                                                   "WHERE id = $1", a))[0], 200)
        second = self.begin()  # open on the same shard when the first one's connection dies
        self.assertEqual(self.ops(second, sql("s1", "UPDATE accounts SET balance = 2 "
                                                    "WHERE id = $1", rows[0]))[0], 200)
        # PostgreSQL ends the first one's backend (the oldest transaction id open there)
        killed = self.c.psql(0, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE datname = 'app' AND state = 'idle in transaction' "
                                "ORDER BY backend_xid::text::bigint LIMIT 1")
        self.assertEqual(killed, [["t"]])
        time.sleep(0.5)  # the participant's pool reconnects that slot
        third = self.begin()  # may be given the reconnected slot
        self.assertEqual(self.ops(third, sql("s1", "UPDATE accounts SET balance = 3 "
                                                   "WHERE id = $1", rows[1]))[0], 200)
        status, ans = self.commit(first)
        self.assertEqual((status, ans["status"]), (409, "aborted"), ans)
        self.assertIn("connection", ans["error"]["message"])
        for g in (second, third):
            status, ans = self.commit(g)
            self.assertEqual(status, 200, ans)
        self.assertEqual([self.balance(0, r) for r in [a] + rows], [1000, 2, 3])
        self.assert_no_prepared()

    def test_read_only_transaction_prepares_nothing(self):
        gtid = self.begin()
        self.assertEqual(self.ops(gtid, sql("s1", "SELECT 1"), sql("s3", "SELECT 2"))[0], 200)
        status, ans = self.commit(gtid)
        self.assertEqual(status, 200, ans)
        for s in ("s1", "s3"):
            self.assertFalse(any("PREPARE" in l for l in self.statements_for(s, gtid)))

    def test_empty_transaction_commits(self):
        gtid = self.begin()
        self.assertEqual(self.commit(gtid)[0], 200)

    def test_an_interactive_transaction_commits_by_three_phase_commit(self):
        self.keep_acceptor_rows()
        a = self.acct
        gtid = self.begin(protocol="3pc")
        status, ans = self.ops(gtid, sql("s1", "UPDATE accounts SET balance = balance - 9 "
                                               "WHERE id = $1", a, expect_rows=1))
        self.assertEqual(status, 200, ans)
        status, ans = self.ops(gtid, sql("s3", "UPDATE accounts SET balance = balance + 9 "
                                               "WHERE id = $1", a, expect_rows=1))
        self.assertEqual(status, 200, ans)
        status, ans = self.commit(gtid)
        self.assertEqual((status, ans["status"]), (200, "committed"), ans)
        self.assertEqual((self.balance(0, a), self.balance(2, a)), (991, 1009))
        status, t = self.c.request("GET", "/v1/transactions/" + gtid)
        self.assertEqual((t["protocol"], t["decided_by"]), ("3pc", "coordinator"), t)
        for shard in (0, 2):  # each shard's acceptor accepted the coordinator's commit ballot
            rows = self.c.psql(shard, "SELECT accepted_value, decided FROM dtx.acceptors "
                                      "WHERE gtid = '%s'" % gtid)
            self.assertEqual(rows, [["commit", "commit"]], rows)
        self.assert_no_prepared()

    def test_bad_calls_are_refused(self):
        gtid = self.begin()
        status, ans = self.c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": []})
        self.assertEqual(status, 400, ans)
        status, ans = self.c.request("POST", "/v1/transactions/%s/ops" % gtid,
                                     {"ops": [{"shard": "s9", "sql": "SELECT 1"}]})
        self.assertEqual((status, ans["error"]["code"]), (400, "bad_request"))
        status, ans = self.c.request("POST", "/v1/transactions/%s/frobnicate" % gtid, {})
        self.assertEqual(status, 404)
        self.assertEqual(self.commit(gtid)[0], 200, "refused calls did not harm it")

    def test_concurrent_bank_workload_keeps_the_total(self):
        total = self.total()
        counts = {"committed": 0, "aborted": 0}
        lock = threading.Lock()

        def worker(i):
            rnd = random.Random(i)
            end = time.time() + 6
            while time.time() < end:
                a, b = rnd.sample(range(60, 101), 2)
                src, dst = rnd.sample(["s1", "s2", "s3"], 2)
                gtid = self.begin(timeout_ms=5000)
                status, ans = self.ops(gtid, sql(src, "SELECT balance FROM accounts "
                                                      "WHERE id = $1 FOR UPDATE", a))
                if status != 200:
                    continue
                amount = min(ans["results"][0]["rows"][0][0], rnd.randint(1, 20))
                status, ans = self.ops(
                    gtid,
                    sql(src, "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                        amount, a, expect_rows=1),
                    sql(dst, "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                        amount, b, expect_rows=1))
                if status == 200:
                    status, ans = self.commit(gtid)
                else:
                    self.abort(gtid)
                with lock:
                    counts["committed" if status == 200 else "aborted"] += 1

        parallel(8, worker)
        self.assertGreater(counts["committed"], 50, counts)
        self.assert_no_prepared(timeout=10)
        self.assertEqual(self.total(), total)
        for sh in self.c.shards:
            self.assertEqual(self.c.psql(sh.i, "SELECT count(*) FROM accounts WHERE balance < 0"),
                             [["0"]])


class AdmissionTest(InteractiveMixin, ClusterTest):
    """A small coordinator cap, small participant pools, few prepared-transaction slots."""

    SHARDS = 2
    COORD = {"max_active_transactions": 20}
    AGENT = {"pool_size": 4, "open_wait_ms": 300, "prepared_headroom": 2}
    PG = LOG_STATEMENTS + ["max_prepared_transactions = 8"]

    def test_200_clients_against_a_small_cap_get_429s_and_nothing_breaks(self):
        def client(i):
            return self.c.request("POST", "/v1/transactions", {"interactive": True})

        answers = parallel(200, client)
        opened = [a["gtid"] for s, a in answers if s == 201]
        refused = [a for s, a in answers if s == 429]
        self.assertEqual(len(opened) + len(refused), 200, set(s for s, _ in answers))
        self.assertLessEqual(len(opened), 20)
        self.assertGreaterEqual(len(refused), 180)
        self.assertEqual({a["error"]["code"] for a in refused}, {"overloaded"})
        self.assertIn("max_active_transactions", refused[0]["error"]["message"])
        for g in opened:
            self.assertEqual(self.abort(g)[0], 200)
        status, ans = self.c.tx([sql("s1", "UPDATE accounts SET balance = balance WHERE id = 1"),
                                 sql("s2", "UPDATE accounts SET balance = balance WHERE id = 1")])
        self.assertEqual(status, 200, ans)
        self.assert_no_prepared()

    def test_refusal_carries_retry_after(self):
        opened = [self.begin() for _ in range(20)]
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=10)
            conn.request("POST", "/v1/transactions", body=json.dumps({"interactive": True}))
            resp = conn.getresponse()
            ans = json.loads(resp.read())
            conn.close()
            self.assertEqual((resp.status, ans["error"]["code"]), (429, "overloaded"))
            self.assertEqual(resp.getheader("Retry-After"), "1")
        finally:
            for g in opened:
                self.abort(g)

    def test_exhausted_branch_connections_answer_429_instead_of_hanging(self):
        # pool_size 4 leaves max_open_branches = 2 on each participant
        held = [self.begin(), self.begin()]
        for i, g in enumerate(held):
            self.assertEqual(self.ops(g, sql("s1", "SELECT $1::int", i))[0], 200)
        third = self.begin()
        start = time.time()
        status, ans = self.ops(third, sql("s1", "SELECT 3"))
        self.assertLess(time.time() - start, 3)
        self.assertEqual((status, ans["error"]["code"]), (429, "overloaded"), ans)
        self.assertIn("max_open_branches", ans["error"]["message"])
        # one-shot transactions still get a connection meanwhile
        status, ans = self.c.tx([sql("s1", "UPDATE accounts SET balance = balance WHERE id = 2"),
                                 sql("s2", "UPDATE accounts SET balance = balance WHERE id = 2")])
        self.assertEqual(status, 200, ans)
        for g in held:
            self.assertEqual(self.abort(g)[0], 200)
        g = self.begin()
        self.assertEqual(self.ops(g, sql("s1", "SELECT 4"))[0], 200, "free again")
        self.assertEqual(self.commit(g)[0], 200)

    def test_later_calls_on_a_transaction_aborted_for_want_of_room_answer_409(self):
        """The call that found no room answers 429 (send it again shortly: a new
        transaction). Every later call on that aborted transaction answered 429 with
        Retry-After too, so a client obeying it retried a dead transaction's commit."""
        held = [self.begin(), self.begin()]  # max_open_branches 2 on s1
        try:
            for i, g in enumerate(held):
                self.assertEqual(self.ops(g, sql("s1", "SELECT $1::int", i))[0], 200)
            third = self.begin()
            status, ans = self.ops(third, sql("s1", "SELECT 3"))
            self.assertEqual((status, ans["error"]["code"]), (429, "overloaded"), ans)
            for call in (lambda: self.commit(third), lambda: self.ops(third, sql("s2", "SELECT 1"))):
                status, ans = call()
                self.assertEqual((status, ans.get("status"), ans["error"]["code"]),
                                 (409, "aborted", "overloaded"), ans)
        finally:
            for g in held:
                self.abort(g)

    def test_a_key_refused_for_want_of_room_runs_when_sent_again(self):
        """A 429 for a shard with no room says that nothing was committed and to send it
        again shortly; with an idempotency key the retry got the same 429 back for the whole
        retention time (an hour), however much room there was by then."""
        ops = [sql("s1", "UPDATE accounts SET balance = balance + 1 WHERE id = $1", 60),
               sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = $1", 60)]
        others = [self.prepare_by_hand(0, "room-%d" % i, 70 + i, delta=0) for i in range(6)]
        time.sleep(2.5)  # the participant counts the slots in use every 2 s
        before = promtext.parse(self.c.request("GET", "/metrics")[1])
        status, ans = self.c.tx(ops, idempotency_key="no-room")
        self.assertEqual((status, ans["error"]["code"]), (429, "overloaded"), ans)
        after = promtext.parse(self.c.request("GET", "/metrics")[1])
        # begun, then aborted for want of room (operations.md): not a refusal at the door
        def moved(name, **labels):
            def value(m):
                try:
                    return m[name].value(**labels)
                except KeyError:  # a labelled series appears with its first sample
                    return 0
            return value(after) - value(before)
        self.assertEqual([moved("dtx_transactions_started_total"),
                          moved("dtx_transactions_refused_total"),
                          moved("dtx_aborts_total", code="overloaded")], [1, 0, 1])
        for gid in others:
            self.rollback_by_hand(0, gid)
        time.sleep(2.5)
        status, first = self.c.tx(ops, idempotency_key="no-room")
        self.assertEqual((status, first.get("status")), (200, "committed"), first)
        status, again = self.c.tx(ops, idempotency_key="no-room")
        self.assertEqual((status, again["gtid"]), (200, first["gtid"]), again)
        self.assertEqual((self.balance(0, 60), self.balance(1, 60)), (1001, 1001))
        self.assert_no_prepared(timeout=5)

    def test_a_burst_never_fills_the_prepared_transaction_slots(self):
        def transfer(i):
            return self.c.tx([
                sql("s1", "UPDATE accounts SET balance = balance - 1 WHERE id = $1", 1 + i),
                sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = $1", 1 + i)])

        # six of s1's eight slots taken by somebody else's prepared transactions: with two
        # kept free, none is left for dtx, and a transfer is refused before anything runs
        others = ["other-%d" % i for i in range(6)]
        for i, gid in enumerate(others):
            self.c.psql(0, "BEGIN; UPDATE accounts SET balance = balance WHERE id = %d; "
                           "PREPARE TRANSACTION '%s'" % (50 + i, gid))
        try:
            time.sleep(2.5)  # the participant counts the slots in use every 2 s
            status, ans = transfer(0)
            self.assertEqual((status, ans["error"]["code"]), (429, "overloaded"), ans)
            self.assertIn("prepared-transaction slot", ans["error"]["message"])
            for gid in others[2:]:
                self.c.psql(0, "ROLLBACK PREPARED '%s'" % gid)
            others = others[:2]
            time.sleep(2.5)
            # a burst against the four slots left: committed, refused, or (on a slow machine)
            # out of time, but never PostgreSQL's own "maximum number ... reached"
            answers = parallel(16, transfer)
            codes = [(s, a.get("error", {}).get("code")) for s, a in answers]
            self.assertEqual({c for c in codes} - {(200, None), (429, "overloaded"),
                                                   (409, "timeout")}, set(), codes)
            self.assertGreater(codes.count((200, None)), 0)
            self.assertNotIn("maximum number of prepared transactions reached",
                             self.pg_log(0) + self.pg_log(1))
        finally:
            for gid in others:
                self.c.psql(0, "ROLLBACK PREPARED '%s'" % gid)
        self.assert_no_prepared(timeout=5)
