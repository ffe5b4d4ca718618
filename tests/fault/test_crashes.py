"""Crashes at every step of the protocol (DTX_FAILPOINTS, kill -9,
pg_ctl stop -m immediate). For each: the client got the true outcome or no
answer, never a wrong one; both shards agree; an acknowledged commit is
present; and no dtx: prepared transaction is left within SETTLE_S seconds
after the crashed process is back."""

import glob
import os
import threading
import time

from harness import ClusterTest, InteractiveMixin, sql

SETTLE_S = 15  # stated bound: prepared branches gone this long after recovery starts
FAST_RECOVERY = {"recovery_interval_ms": 300, "recovery_min_age_ms": 100}


def read_from(path, offset):
    """What was written to path after offset."""
    with open(path, errors="replace") as f:
        f.seek(offset)
        return f.read()


class FaultTest(InteractiveMixin, ClusterTest):
    SHARDS = 2
    AGENT = dict(FAST_RECOVERY)
    COORD = {"commit_wait_ms": 1500}
    ACCT = iter(range(100, 1000))

    def setUp(self):
        self.acct = next(FaultTest.ACCT) % 100 + 1  # a fresh account for each test
        self.before = (self.balance(0, self.acct), self.balance(1, self.acct))

    def transfer(self, amount=7, key=None, timeout=20):
        """A transfer s1 -> s2 of this test's account; (status, body), or (None, error)."""
        ops = [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
             "params": [amount, self.acct], "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
             "params": [amount, self.acct], "expect_rows": 1},
        ]
        body = {"ops": ops}
        if key:
            body["idempotency_key"] = key
        try:
            return self.c.request("POST", "/v1/transactions", body, timeout=timeout)
        except OSError as e:  # connection reset / refused: no answer
            return None, e

    def restart_coordinator(self, env=None):
        """Starts the coordinator again (with failpoints in env). A coordinator a failpoint
        crashed is just started; a live one is stopped gracefully first, so that the
        previous test leaves nothing for this one's failpoint to hit during replay."""
        if self.c.coordinator.alive():
            self.c.stop_coordinator()
        self.c.start_coordinator(env=env)

    def settled(self, amount=7):
        """Waits for no dtx: prepared branch anywhere; returns 'committed' or 'aborted'."""
        start = time.time()
        self.assert_no_prepared(timeout=SETTLE_S)
        print("[settled in %.2f s] " % (time.time() - start), end="", flush=True)
        after = (self.balance(0, self.acct), self.balance(1, self.acct))
        if after == self.before:
            return "aborted"
        self.assertEqual(after, (self.before[0] - amount, self.before[1] + amount),
                         "shards disagree: %s -> %s" % (self.before, after))
        return "committed"

    def assert_outcome(self, answer, outcome):
        """A client's answer may be missing, but never contradict what happened."""
        status, body = answer
        if status == 200:
            self.assertEqual(outcome, "committed", body)
        elif status == 409:
            self.assertEqual(outcome, "aborted", body)
        elif status is not None:
            self.assertIn(status, (503, 504), body)
            self.assertNotEqual(body.get("status"), "committed", body)

    # ---- coordinator crashes ------------------------------------------------

    def test_01_coordinator_crash_before_any_vote_aborts_everywhere(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_prepare_sent=crash"})
        answer = self.transfer()
        self.assertIsNone(answer[0], "the coordinator died before answering")
        self.restart_coordinator()
        self.assertEqual(self.settled(), "aborted")

    def test_02_coordinator_crash_before_the_decision_is_durable_aborts(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.before_log=crash"})
        answer = self.transfer()
        self.assertIsNone(answer[0])
        time.sleep(0.5)
        self.assertEqual((len(self.c.prepared(0)), len(self.c.prepared(1))), (1, 1),
                         "both branches voted yes, so they are prepared")
        self.restart_coordinator()
        self.assertEqual(self.settled(), "aborted")

    def test_03_coordinator_crash_after_the_decision_is_durable_commits(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=crash"})
        answer = self.transfer(key="k3-%d" % self.acct)
        self.assertIsNone(answer[0])
        self.restart_coordinator()
        self.assertEqual(self.settled(), "committed")
        retry = self.transfer(key="k3-%d" % self.acct)
        self.assertEqual(retry[0], 200, retry)  # the retry learns the commit

    def test_03b_branches_stay_prepared_and_in_doubt_while_the_coordinator_is_down(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=crash"})
        answer = self.transfer()
        self.assertIsNone(answer[0])
        time.sleep(3)  # ten recovery rounds' worth: none may roll anything back
        self.assertEqual((len(self.c.prepared(0)), len(self.c.prepared(1))), (1, 1))
        status, health = self.c.request("GET", "/healthz", port=self.c.shards[0].agent_port)
        self.assertEqual(health["in_doubt"], 1)
        with open(self.c.shards[0].agent.log) as f:
            self.assertIn("in doubt", f.read())
        self.restart_coordinator()
        self.assertEqual(self.settled(), "committed")

    def test_04_coordinator_crash_after_phase_two_reached_one_shard_commits(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.phase2_send=crash@2"})
        answer = self.transfer()
        self.assertIsNone(answer[0])
        self.restart_coordinator()
        self.assertEqual(self.settled(), "committed")

    # ---- participant crashes --------------------------------------------------

    def test_05_participant_crash_after_prepare_before_its_vote_aborts(self):
        self.c.kill_participant(1)
        self.c.start_participant(1, env={"DTX_FAILPOINTS": "agent.prepared_before_vote=crash"})
        self.c.wait_healthy()
        answer = self.transfer()
        self.c.shards[1].agent.wait(10)
        self.c.start_participant(1)
        outcome = self.settled()
        self.assertEqual(outcome, "aborted")
        self.assert_outcome(answer, outcome)
        self.assertEqual(answer[0], 409, answer)

    def test_06_participant_crash_after_commit_prepared_before_its_ack_commits(self):
        self.c.kill_participant(1)
        self.c.start_participant(1, env={"DTX_FAILPOINTS": "agent.committed_before_ack=crash"})
        self.c.wait_healthy()
        answer = self.transfer()
        self.c.shards[1].agent.wait(10)
        self.c.start_participant(1)
        self.c.wait_healthy()
        outcome = self.settled()
        self.assertEqual(outcome, "committed")
        self.assert_outcome(answer, outcome)
        self.wait_for(lambda: self.c.request("GET", "/v1/transactions/" + answer[1]["gtid"])[1]
                      ["status"] == "committed", what="the coordinator to hear the ack")

    def test_06b_a_branch_waiting_on_a_lock_ends_within_seconds_of_its_participants_death(self):
        # A prepared transaction outside dtx holds the row; a branch with a long timeout_ms
        # waits for it. When its participant is killed, PostgreSQL must notice the dead
        # client within seconds and end the statement (and its transaction), not wait on
        # for the lock or for the branch's timeout.
        self.c.psql(1, "BEGIN; UPDATE accounts SET balance = balance WHERE id = %d; "
                       "PREPARE TRANSACTION 'lock-holder'" % self.acct)
        waiting = ("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                   "AND query LIKE 'UPDATE accounts%'")
        try:
            ops = [{"shard": "s1", "sql": "SELECT 1"},
                   {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 "
                                          "WHERE id = %d" % self.acct}]
            threading.Thread(target=lambda: self.c.tx(ops, timeout_ms=60000),
                             daemon=True).start()
            self.wait_for(lambda: self.c.psql(1, waiting) == [["1"]],
                          what="the branch to wait for the row lock")
            self.c.kill_participant(1)
            killed = time.time()
            self.wait_for(lambda: self.c.psql(1, waiting) == [["0"]], timeout=10,
                          what="PostgreSQL to end the dead participant's statement")
            print("[ended %.2f s after the kill] " % (time.time() - killed), end="", flush=True)
            self.assertLess(time.time() - killed, 5)
        finally:
            self.c.psql(1, "ROLLBACK PREPARED 'lock-holder'")
        self.c.start_participant(1)
        self.c.wait_healthy()
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balance(1, self.acct), self.before[1])

    def test_05b_branch_of_a_silent_coordinator_is_cancelled_at_its_deadline(self):
        import signal

        # One pooled connection on s2: a long branch holds it, a short one waits for it.
        self.c.kill_participant(1)
        saved = dict(self.c.agent_extra)
        self.c.agent_extra["pool_size"] = 1
        try:
            self.c.start_participant(1)
        finally:
            self.c.agent_extra = saved
        self.c.wait_healthy()
        log = self.c.shards[1].agent.log
        start = os.path.getsize(log)  # the log is appended to across restarts
        long_ops = [{"shard": "s1", "sql": "SELECT 1"},
                    {"shard": "s2", "sql": "SELECT pg_sleep(3)"}]
        short_ops = [{"shard": "s1", "sql": "SELECT 1"},
                     {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = %d"
                                            % self.acct}]
        threading.Thread(target=lambda: self.c.tx(long_ops, timeout_ms=10000), daemon=True).start()
        time.sleep(0.3)
        threading.Thread(target=lambda: self.c.tx(short_ops, timeout_ms=300),
                         daemon=True).start()
        time.sleep(0.1)
        # The coordinator stops without closing its streams (like a host losing power).
        os.kill(self.c.coordinator.pid, signal.SIGSTOP)
        try:
            self.wait_for(lambda: "still running at its deadline (timeout_ms); cancelling it" in
                          read_from(log, start),
                          timeout=10, what="the queued branch to be cancelled at its deadline")
        finally:
            os.kill(self.c.coordinator.pid, signal.SIGCONT)
        self.assertEqual(self.balance(1, self.acct), self.before[1])
        self.assert_no_prepared(timeout=SETTLE_S)
        self.c.kill_participant(1)
        self.c.start_participant(1)
        self.c.wait_healthy()

    # ---- PostgreSQL crash and lost answers ---------------------------------------

    def test_07_shard_stopped_immediately_after_prepare_keeps_the_branch_and_commits(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=sleep(3000)"})
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("a", self.transfer()))
        t.start()
        self.wait_for(lambda: len(self.c.prepared(1)) == 1, what="the branch on s2 to prepare")
        self.c.pg_stop(1, mode="immediate")
        time.sleep(0.5)
        self.c.pg_start(1)
        self.assertEqual(len(self.c.prepared(1)), 1, "the prepared branch survived the crash")
        t.join()
        outcome = self.settled()
        self.assertEqual(outcome, "committed")
        self.assert_outcome(result["a"], outcome)
        self.restart_coordinator()

    def test_07b_shard_stopped_before_prepare_loses_the_branch_and_aborts(self):
        result = {}
        self.c.psql(1, "SELECT 1")
        ops_wait = {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 7 WHERE id = "
                                          "%d AND (SELECT true FROM pg_sleep(2))" % self.acct}
        t = threading.Thread(target=lambda: result.setdefault("a", self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 7 WHERE id = %d"
                                   % self.acct}, ops_wait])))
        t.start()
        time.sleep(0.7)
        self.c.pg_stop(1, mode="immediate")
        self.c.pg_start(1)
        t.join()
        outcome = self.settled()
        self.assertEqual(outcome, "aborted")
        self.assertEqual(result["a"][0], 409, result["a"])
        self.c.wait_healthy()

    def test_07c_commit_outliving_its_coordinator_stream_is_acknowledged_to_the_next(self):
        # The decision is durable, then s1's PostgreSQL goes down: the commit reaches
        # s1's agent, which retries COMMIT PREPARED until the database is back. The
        # coordinator dies meanwhile, so the finish outlives the stream it came on.
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=sleep(1500)"})
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("a", self.transfer(timeout=30)))
        t.start()
        self.wait_for(lambda: len(self.c.prepared(0)) == 1, what="the branch on s1 to prepare")
        self.c.pg_stop(0, mode="immediate")
        self.wait_for(lambda: self.balance(1, self.acct) == self.before[1] + 7,
                      what="phase 2 to go out (s2 commits)")
        time.sleep(0.3)  # s1's agent holds the commit, retrying against the stopped database
        self.c.kill_coordinator()
        t.join()
        self.c.pg_start(0)
        # With no coordinator running, only the agent's held commit can finish s1's branch.
        self.wait_for(lambda: self.balance(0, self.acct) == self.before[0] - 7,
                      what="s1's agent to finish the commit it held, with no stream to ack on")
        self.assertTrue(self.c.shards[0].agent.alive(), "the agent survived the late ack")
        self.restart_coordinator()
        self.c.wait_healthy()
        self.assertEqual(self.settled(), "committed")
        self.assert_outcome(result["a"], "committed")

    def test_08_lost_answer_to_commit_prepared_is_asked_again_not_failed(self):
        self.c.kill_participant(1)
        self.c.start_participant(1, env={"DTX_FAILPOINTS": "pg.lose_commit_answer=error@1"})
        self.c.wait_healthy()
        answer = self.transfer()
        self.assertEqual(answer[0], 200, answer)
        self.assertEqual(self.settled(), "committed")
        with open(self.c.shards[1].agent.log) as f:
            self.assertIn("failpoint pg.lose_commit_answer", f.read())
        self.c.kill_participant(1)
        self.c.start_participant(1)
        self.c.wait_healthy()

    # ---- the decision log ----------------------------------------------------------

    def test_09_failed_fdatasync_is_never_reported_committed_and_stops_the_coordinator(self):
        # The first fdatasync is the BOOT record; the second is this transaction's COMMIT.
        self.restart_coordinator({"DTX_FAILPOINTS": "dlog.fdatasync=error@2"})
        answer = self.transfer()
        self.assertEqual(answer[0], 504, answer)
        self.assertEqual(answer[1]["error"]["code"], "outcome_unknown")
        status, body = self.c.request("GET", "/healthz")
        self.assertEqual((status, body["error"]["code"]), (503, "log_unavailable"))
        status, body = self.transfer(amount=1)
        self.assertEqual((status, body["error"]["code"]), (503, "log_unavailable"))
        with open(self.c.coordinator.log) as f:
            self.assertIn("could not fdatasync decision log", f.read())
        # The record was written before the failed fdatasync: a restart reads it and commits.
        self.restart_coordinator()
        self.assertEqual(self.settled(), "committed")

    def test_09b_failed_write_of_the_decision_aborts_after_restart(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "dlog.write=error(ENOSPC)@2"})
        answer = self.transfer()
        self.assertEqual(answer[0], 504, answer)
        with open(self.c.coordinator.log) as f:
            self.assertIn("No space left on device", f.read())
        self.restart_coordinator()
        self.assertEqual(self.settled(), "aborted")

    def test_10_torn_last_record_is_cut_off_and_its_transaction_aborts(self):
        self.restart_coordinator({"DTX_FAILPOINTS": "dlog.fdatasync=crash@2"})
        answer = self.transfer()
        self.assertIsNone(answer[0])
        self.c.coordinator.wait(10)
        seg = sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))[-1]
        with open(seg, "rb") as f:
            written = len(f.read().rstrip(b"\0"))  # the zeros after it are preallocated
        os.truncate(seg, written - 5)  # the power cut tore the last write
        self.restart_coordinator()
        with open(self.c.coordinator.log) as f:
            self.assertIn("torn write", f.read())
        self.assertEqual(self.settled(), "aborted")

    def test_10b_corrupt_middle_record_stops_the_coordinator_naming_file_and_offset(self):
        for _ in range(3):
            self.assertEqual(self.transfer(amount=1)[0], 200)
        self.c.stop_coordinator()
        seg = sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))[-1]
        with open(seg, "r+b") as f:
            data = bytearray(f.read())
            data[60] ^= 0x01
            f.seek(0)
            f.write(data)
        self.c.coordinator = self.c._coord_proc()
        self.c.coordinator.start()
        self.assertTrue(self.c.coordinator.wait(10))
        self.assertEqual(self.c.coordinator.popen.returncode, 1)
        with open(self.c.coordinator.log) as f:
            log = f.read()
        self.assertIn("is corrupt", log)
        self.assertIn("%s' is corrupt: damaged frame at offset" % seg, log)
        with open(seg, "r+b") as f:
            data[60] ^= 0x01
            f.write(data)
        self.c.start_coordinator()

    # ---- interactive transactions ----------------------------------------------

    def begin_and_write(self):
        gtid = self.begin()
        status, ans = self.ops(gtid,
                               sql("s1", "UPDATE accounts SET balance = balance - 9 WHERE id = $1",
                                   self.acct),
                               sql("s2", "UPDATE accounts SET balance = balance + 9 WHERE id = $1",
                                   self.acct))
        self.assertEqual(status, 200, ans)
        return gtid

    def row_is_free(self, shard):
        """True when a one-shot update of this test's row on shard goes through at once."""
        status, ans = self.c.tx([{"shard": shard, "sql": "UPDATE accounts SET balance = balance "
                                 "WHERE id = $1", "params": [self.acct], "expect_rows": 1}],
                                timeout_ms=1000)
        return status == 200

    def test_11_open_interactive_branches_are_rolled_back_when_the_coordinator_dies(self):
        self.begin_and_write()
        self.c.kill_coordinator()
        self.restart_coordinator()
        self.assertTrue(self.row_is_free("s1") and self.row_is_free("s2"),
                        "the open branches were rolled back, their locks released")
        self.assertEqual(self.settled(amount=9), "aborted")

    def test_11b_commit_after_a_participant_lost_its_open_branch_aborts(self):
        gtid = self.begin_and_write()
        self.c.kill_participant(1)
        self.c.start_participant(1)
        self.c.wait_healthy()
        status, ans = self.c.request("POST", "/v1/transactions/%s/commit" % gtid, {})
        self.assertEqual((status, ans["status"]), (409, "aborted"), ans)
        self.assertTrue(self.row_is_free("s1"), "s1's open branch was rolled back too")
        self.assertEqual(self.settled(amount=9), "aborted")
