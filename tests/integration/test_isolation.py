"""One client cannot hurt another through a pooled connection: whatever a
branch leaves in its PostgreSQL session (a setting, an advisory lock, a
temporary table, a WITH HOLD cursor, a LISTEN, a prepared statement) is
gone before the connection serves anyone else, and notifications cannot
pile up in the participant.

Each participant has a pool of two connections, and the requests here are
sequential, so the next client's branch runs on the connection the first
one used."""

import os
import threading
import time
import re
import subprocess

from harness import ClusterTest


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"VmRSS:\s+(\d+) kB", f.read()).group(1))


class IsolationTest(ClusterTest):
    SHARDS = 2
    AGENT = {"pool_size": 2, "max_open_branches": 1}

    def one(self, sql, shard="s1", params=None, status=200):
        """A one-shard transaction (one phase) of one op; returns the op's result."""
        op = {"shard": shard, "sql": sql}
        if params is not None:
            op["params"] = params
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [op]})
        self.assertEqual(st, status, body)
        return body["results"][0] if status == 200 else body

    def two(self, sql):
        """A two-shard transaction (prepared on both) whose s1 op is sql."""
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": sql}, {"shard": "s2", "sql": "SELECT 1"}]})
        return st, body

    def another_client_reads(self, times=10):
        for _ in range(times):
            r = self.one("SELECT balance FROM accounts WHERE id = $1", params=[7])
            self.assertEqual(r["rows"], [[1000]])

    def test_a_session_setting_does_not_survive_the_branch(self):
        self.one("SELECT set_config('search_path', 'nowhere', false)")
        st, body = self.two("SELECT set_config('search_path', 'nowhere', false)")
        self.assertEqual(st, 200, body)
        self.another_client_reads(20)
        self.assertEqual(self.one("SHOW search_path")["rows"], [['"$user", public']])

    def test_a_session_advisory_lock_does_not_survive_the_branch(self):
        self.one("SELECT pg_advisory_lock(4242)")
        self.another_client_reads(2)
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                        "'advisory' AND objid = 4242"), [["0"]])

    def test_a_temporary_table_does_not_survive_the_branch(self):
        self.one("CREATE TEMP TABLE secret_t AS SELECT 'secret' AS s")
        self.another_client_reads(2)
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM pg_class WHERE relname = "
                                        "'secret_t'"), [["0"]])
        self.one("SELECT * FROM secret_t", status=409)

    def test_a_with_hold_cursor_is_not_readable_by_the_next_client(self):
        self.one("DECLARE secret_c CURSOR WITH HOLD FOR SELECT 'secret'")
        for _ in range(5):
            body = self.one("FETCH ALL FROM secret_c", status=409)
            self.assertIn("does not exist", body["error"]["message"])

    def test_a_listen_does_not_survive_the_branch(self):
        self.one("DO $$ BEGIN EXECUTE 'LISTEN secret_channel'; END $$")
        for _ in range(5):
            self.assertEqual(self.one("SELECT pg_listening_channels()")["rows"], [])

    def test_a_prepared_statement_does_not_survive_the_branch(self):
        self.one("DO $$ BEGIN EXECUTE 'PREPARE secret_p AS SELECT 42'; END $$")
        for _ in range(5):
            self.assertEqual(self.one("SELECT count(*) FROM pg_prepared_statements")["rows"],
                             [[0]])

    def test_what_a_prepared_branch_leaves_in_its_session_is_gone(self):
        # what a transaction that PREPAREs may leave behind (a temporary table, a WITH HOLD
        # cursor or a LISTEN make its PREPARE fail), in one branch, then in a failed one
        self.c.psql(0, "CREATE SEQUENCE IF NOT EXISTS iso_seq")
        s1 = ["SELECT set_config('search_path', 'nowhere', false)",
              "SELECT pg_advisory_lock(4343)",
              "SELECT nextval('public.iso_seq')",
              "DO $$ BEGIN EXECUTE 'PREPARE secret_p2 AS SELECT 42'; END $$",
              "UPDATE public.accounts SET balance = balance WHERE id = 7"]
        for last, status in (("SELECT 1", 200), ("SELECT 1/0", 409)):
            st, body = self.c.request("POST", "/v1/transactions", {"ops": [
                {"shard": "s1", "sql": sql} for sql in s1 + [last]] + [
                {"shard": "s2", "sql": "UPDATE accounts SET balance = balance WHERE id = 7"}]})
            self.assertEqual(st, status, body)
            for _ in range(4):  # both pooled connections
                self.assertEqual(self.one("SHOW search_path")["rows"], [['"$user", public']])
                self.assertEqual(self.one("SELECT count(*) FROM pg_prepared_statements")["rows"],
                                 [[0]])
                body = self.one("SELECT lastval()", status=409)
                self.assertIn("not yet defined", body["error"]["message"])
            self.assertEqual(self.c.psql(0, "SELECT count(*) FROM pg_locks WHERE locktype = "
                                            "'advisory' AND objid = 4343"), [["0"]])
            self.assertEqual(self.c.prepared(0), [])

    def test_a_flood_of_notifications_cannot_grow_the_participant(self):
        pid = self.c.shards[0].agent.pid
        self.one("DO $$ BEGIN EXECUTE 'LISTEN flood'; END $$")
        before = rss_kb(pid)
        for _ in range(4):  # 40 MB of notifications (distinct: PostgreSQL folds duplicates)
            self.c.psql(0, "SELECT pg_notify('flood', repeat('x', 4000) || g) "
                           "FROM generate_series(1, 2500) g")
        self.another_client_reads(3)
        grown = rss_kb(pid) - before
        self.assertLess(grown, 10 * 1024, "the participant grew by %d kB" % grown)
        self.assertEqual(self.c.psql(0, "SELECT pg_notification_queue_usage() = 0"), [["t"]])


class DeadlineTest(ClusterTest):
    """A branch that disables its own statement_timeout still ends at the deadline."""

    SHARDS = 2

    def sleepy(self, shards, timeout_ms=1000):
        ops = []
        for s in shards:
            ops += [{"shard": s, "sql": "SET LOCAL statement_timeout = 0"},
                    {"shard": s, "sql": "UPDATE accounts SET balance = balance WHERE id = 3"},
                    {"shard": s, "sql": "SELECT pg_sleep(8)"}]
        t0 = time.time()
        st, body = self.c.request("POST", "/v1/transactions",
                                  {"ops": ops, "timeout_ms": timeout_ms}, timeout=30)
        return st, body, time.time() - t0

    def sleeping(self, shard):
        return self.c.psql(shard, "SELECT count(*) FROM pg_stat_activity WHERE query = "
                                  "'SELECT pg_sleep(8)' AND state = 'active'")[0][0]

    def test_a_single_shard_transaction_past_its_deadline_is_aborted_not_unknown(self):
        st, body, took = self.sleepy(["s1"])
        self.assertEqual((st, body["status"], body["error"]["code"]), (409, "aborted", "timeout"),
                         body)
        self.assertLess(took, 2.5)
        self.assertEqual(self.sleeping(0), "0", "the statement was cancelled at the deadline")
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON "
                                        "c.oid = l.relation WHERE c.relname = 'accounts' AND "
                                        "l.mode = 'RowExclusiveLock'"), [["0"]])

    def test_a_two_shard_transaction_past_its_deadline_releases_its_locks_at_once(self):
        st, body, took = self.sleepy(["s1", "s2"])
        self.assertEqual((st, body["error"]["code"]), (409, "timeout"), body)
        self.assertLess(took, 2.5)
        for i in range(2):
            self.assertEqual(self.sleeping(i), "0")
        # the row is free again: another client updates it at once
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance WHERE id = 3"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance WHERE id = 3"}],
            "timeout_ms": 1000})
        self.assertEqual(st, 200, body)


class ResultLimitTest(ClusterTest):
    """A result over the participant's limits aborts its transaction (409 result_too_large)
    before anything is sent; nobody else's transaction or link is touched."""

    SHARDS = 2
    AGENT = {"max_result_bytes": 1048576, "max_result_rows": 20000}

    def run_ops(self, ops, timeout=60):
        return self.c.request("POST", "/v1/transactions", {"ops": ops}, timeout=timeout)

    def assert_too_large(self, st, body, op=0):
        self.assertEqual((st, body.get("status"), body.get("error", {}).get("code")),
                         (409, "aborted", "result_too_large"), body)
        self.assertEqual(body["error"]["op"], op)
        self.assertIn("max_result_bytes", body["error"]["message"])

    def links_up(self):
        st, health = self.c.request("GET", "/healthz")
        return health["shards"]

    def test_a_big_value_is_refused_and_the_link_stays(self):
        st, body = self.run_ops([{"shard": "s1", "sql": "SELECT repeat('x', 3000000)"}])
        self.assert_too_large(st, body)
        self.assertEqual(self.links_up(), {"s1": "up", "s2": "up"})
        self.assertNotIn("lost participant", self.c.coordinator.log_text())
        st, body = self.run_ops([{"shard": "s1", "sql": "SELECT 1"}])
        self.assertEqual(st, 200, body)

    def test_many_rows_are_refused_without_reading_them_all(self):
        pid = self.c.shards[0].agent.pid
        before = rss_kb(pid)
        t0 = time.time()
        st, body = self.run_ops([{"shard": "s1", "sql": "SELECT g FROM generate_series(1, "
                                                        "10000000) g"}])
        took = time.time() - t0
        self.assert_too_large(st, body)
        self.assertLess(took, 10)
        self.assertLess(rss_kb(pid) - before, 64 * 1024, "the participant grew by more than 64 MB")
        self.assertEqual(self.c.psql(0, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                        "'%generate_series(1, 10000000)%' AND state = 'active' "
                                        "AND pid <> pg_backend_pid()"), [["0"]])

    def test_a_two_shard_transaction_with_a_big_result_aborts_everywhere(self):
        st, body = self.run_ops([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 9"},
            {"shard": "s2", "sql": "SELECT g, repeat('y', 100) FROM generate_series(1, 50000) g"}])
        self.assert_too_large(st, body, op=1)
        self.assertEqual(self.balance(0, 9), 1000)
        self.assertEqual(self.c.prepared(0) + self.c.prepared(1), [])

    def test_results_under_the_limits_arrive_whole(self):
        st, body = self.run_ops([{"shard": "s1", "sql": "SELECT g FROM generate_series(1, "
                                                        "19000) g"},
                                 {"shard": "s1", "sql": "SELECT repeat('z', 500000) AS big"}])
        self.assertEqual(st, 200, body)
        rows = body["results"][0]["rows"]
        self.assertEqual((len(rows), rows[0], rows[-1]), (19000, [1], [19000]))
        self.assertEqual(len(body["results"][1]["rows"][0][0]), 500000)

    def test_an_interactive_call_over_the_limit_aborts_the_transaction(self):
        st, body = self.c.request("POST", "/v1/transactions", {"interactive": True})
        self.assertEqual(st, 201, body)
        gtid = body["gtid"]
        st, body = self.c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": [
            {"shard": "s1", "sql": "SELECT repeat('x', 2000000)"}]})
        self.assertEqual((st, body["error"]["code"]), (409, "result_too_large"), body)
        # the transaction is over: its commit is told so, with the same reason
        st, body = self.c.request("POST", "/v1/transactions/%s/commit" % gtid)
        self.assertEqual((st, body.get("status"), body.get("error", {}).get("code")),
                         (409, "aborted", "result_too_large"), body)


class DefaultLimitTest(ClusterTest):
    """The issue's example, with the default limits: 70 MB in one value."""

    SHARDS = 1

    def test_seventy_megabytes_in_one_value_is_refused_and_the_link_stays(self):
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "SELECT repeat('x', 70000000)"}]}, timeout=60)
        self.assertEqual((st, body["error"]["code"]), (409, "result_too_large"), body)
        st, health = self.c.request("GET", "/healthz")
        self.assertEqual(health["shards"], {"s1": "up"})
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "SELECT 1"}]})
        self.assertEqual(st, 200, body)

    def peak_rss_kb(self):
        with open("/proc/%d/status" % self.c.shards[0].agent.pid) as f:
            return int([ln for ln in f if ln.startswith("VmHWM:")][0].split()[1])

    def test_one_value_over_the_cap_is_refused_before_it_is_encoded(self):
        """A value of control characters grows six times as JSON text (\\u0001): 20 MB of
        them took the participant 160 MB beyond libpq's copy before the cap was checked.
        The value's own size already says it cannot fit."""
        with open("/proc/%d/clear_refs" % self.c.shards[0].agent.pid, "w") as f:
            f.write("5")  # the peak RSS starts again from now
        before = self.peak_rss_kb()
        st, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "SELECT repeat(chr(1), 20000000)"}]}, timeout=60)
        self.assertEqual((st, body["error"]["code"]), (409, "result_too_large"), body)
        grew = self.peak_rss_kb() - before
        self.assertLess(grew, 60000, "the participant's peak RSS grew by %d kB" % grew)


class PhaseTwoRoomTest(ClusterTest):
    """Long branches that fill a shard's pool never hold back another transaction's COMMIT
    PREPARED (and its locks): one connection stays for phase 2."""

    SHARDS = 2
    AGENT = {"pool_size": 4}

    def test_long_branches_filling_a_shards_pool_never_hold_back_a_commit_prepared(self):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = 5",
                "expect_rows": 1},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 5 "
                                      "AND pg_sleep(1) IS NOT NULL", "expect_rows": 1}]
        answer = []
        t0 = time.time()
        t = threading.Thread(target=lambda: answer.append(self.c.tx(ops)))
        t.start()
        self.wait_for(lambda: len(self.c.prepared(0)) == 1, timeout=5,
                      what="s1's branch to be prepared (s2's votes a second later)")
        hogs = [threading.Thread(target=lambda: self.c.tx(
            [{"shard": "s1", "sql": "SELECT pg_sleep(6)"}])) for _ in range(4)]
        for h in hogs:
            h.start()
        try:
            t.join()
            took = time.time() - t0
            status, body = answer[0]
            self.assertEqual(status, 200, body)
            # acknowledged by both shards, not answered after commit_wait_ms (5 s) with s1
            # pending until a long branch (6 s) gave its connection back
            self.assertEqual(body.get("pending_shards", []), [], body)
            self.assertLess(took, 4, "answered in %.1f s" % took)
        finally:
            for h in hogs:
                h.join()
