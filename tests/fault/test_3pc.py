"""Three-phase commit (docs/protocol.md, "Three-phase commit"): single-decree
Paxos on commit or abort among the coordinator and the participants. The
participants finish a transaction on their own when its coordinator dies
for good, whatever the point it died at, and the outcome agrees everywhere;
the same crash under two-phase commit leaves the branches prepared until the
coordinator returns."""

import json
import os
import re
import signal
import subprocess
import threading
import time

from harness import ClusterTest

TERMINATION_MS = 1000
SETTLE_S = 15  # termination timeout, jitter, a round or two


class ThreePhaseTest(ClusterTest):
    SHARDS = 2
    AGENT = {"termination_timeout_ms": TERMINATION_MS, "recovery_interval_ms": 300,
             "recovery_min_age_ms": 100}
    ACCT = iter(range(1, 100))

    def setUp(self):
        self.acct = next(ThreePhaseTest.ACCT)
        self.before = (self.balance(0, self.acct), self.balance(1, self.acct))
        if not self.c.coordinator.alive():
            self.c.start_coordinator()

    def transfer(self, protocol="3pc", amount=5, timeout=20):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
                "params": [amount, self.acct], "expect_rows": 1},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                "params": [amount, self.acct], "expect_rows": 1}]
        try:
            return self.c.request("POST", "/v1/transactions", {"ops": ops, "protocol": protocol},
                                  timeout=timeout)
        except OSError as e:
            return None, e

    def balances(self):
        return (self.balance(0, self.acct), self.balance(1, self.acct))

    def acceptor(self, shard, gtid):
        rows = self.c.psql(shard, "SELECT accepted_counter, accepted_node, accepted_value, "
                                  "fenced, decided FROM dtx.acceptors WHERE gtid = '%s'" % gtid)
        return rows[0] if rows else None

    def crash_and_wait(self, failpoint):
        """A 3PC transfer whose coordinator dies at failpoint and is not restarted."""
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": failpoint})
        status, _ = self.transfer()
        self.assertIsNone(status)
        self.assertTrue(self.c.coordinator.wait(10))

    def without_rounds(self):
        """Restarts both participants so that neither leads a recovery round during this
        test (termination_timeout_ms of 10 minutes)."""
        self.participants_with(termination_timeout_ms=600000)

    def participants_with(self, **settings):
        """Restarts the participants of s1 and s2 (the shards transfer() uses) with settings
        added to the class's; they get the class's settings back after the test, once its
        other clean-ups ran."""
        quick = dict(self.c.agent_extra)

        def restore():
            self.c.agent_extra = quick
            for i in (0, 1):
                if self.c.shards[i].agent.alive():
                    self.c.stop_participant(i)
                self.c.start_participant(i)

        self.c.agent_extra = dict(quick, **settings)
        self.addCleanup(restore)
        for i in (0, 1):
            self.c.stop_participant(i)
            self.c.start_participant(i)

    def gid_gtid(self):
        gids = self.c.prepared(0) + self.c.prepared(1)
        return gids[0].split(":")[1] if gids else None

    def test_a_three_pc_transfer_commits_on_both_shards(self):
        self.keep_acceptor_rows()
        status, body = self.transfer()
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))
        _, t = self.c.request("GET", "/v1/transactions/" + body["gtid"])
        self.assertEqual((t["protocol"], t["decided_by"]), ("3pc", "coordinator"))
        for shard in (0, 1):
            row = self.acceptor(shard, body["gtid"])
            self.assertEqual((row[0], row[1], row[2]), ("0", "c:c1", "commit"), row)
        self.assert_no_prepared()

    def test_the_shards_forget_the_acceptor_state_once_every_participant_acknowledged(self):
        """Every 3PC transaction left its row in each shard's dtx.acceptors for good (about
        430 bytes a transaction and shard). Once every participant acknowledged the decision,
        none is in doubt and no round will ask again: the rows go, committed or aborted."""
        gtids = []
        for amount in (1, 2, 3):
            status, body = self.transfer(amount=amount)
            self.assertEqual((status, body["status"]), (200, "committed"), body)
            gtids.append(body["gtid"])
        # aborted: the last shard votes no (a row fewer than expected) a second after s1
        # prepared and registered its acceptor row, which is seen meanwhile
        last = "s%d" % self.SHARDS
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1},
               {"shard": last, "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1 "
                                      "AND pg_sleep(1) IS NOT NULL",
                "params": [self.acct], "expect_rows": 2}]
        answer = []
        others = ",".join("'%s'" % g for g in gtids + [
            row[0] for row in self.c.psql(0, "SELECT gtid FROM dtx.acceptors")])  # earlier tests'
        t = threading.Thread(target=lambda: answer.append(self.c.request(
            "POST", "/v1/transactions", {"ops": ops, "protocol": "3pc"})))
        t.start()
        seen = []
        try:
            self.wait_for(lambda: seen.extend(self.c.psql(
                0, "SELECT gtid FROM dtx.acceptors WHERE gtid NOT IN (%s)" % others)) or seen,
                timeout=10, what="s1's acceptor row of the transaction to abort")
        finally:
            t.join()
        status, body = answer[0]
        self.assertEqual((status, body["status"]), (409, "aborted"), body)
        self.assertEqual(seen, [[body["gtid"]]])
        gtids.append(body["gtid"])
        self.assertEqual(self.balances(), (self.before[0] - 6, self.before[1] + 6))
        shards = range(self.SHARDS)

        def rows():
            return sum(int(self.c.psql(i, "SELECT count(*) FROM dtx.acceptors WHERE gtid IN "
                                          "(%s)" % ",".join("'%s'" % g for g in gtids))[0][0])
                       for i in shards)
        self.wait_for(lambda: rows() == 0, timeout=10,
                      what="the acceptor rows of finished transactions to go")
        self.assert_no_prepared()

    def test_the_shards_forget_the_acceptor_state_of_a_read_only_transaction_too(self):
        """A branch registers its acceptor row before it knows it writes nothing. With every
        branch read-only nothing is prepared and nobody is in doubt: the rows go too, with or
        without an idempotency key (whose answer a COMMIT record keeps)."""
        ops = [{"shard": s, "sql": "SELECT balance FROM accounts WHERE id = $1",
                "params": [self.acct]} for s in ("s1", "s2")]
        gtids = []
        for key in (None, "read-only-%d" % self.acct):
            req = {"ops": ops, "protocol": "3pc"}
            if key:
                req["idempotency_key"] = key
            status, body = self.c.request("POST", "/v1/transactions", req)
            self.assertEqual((status, body["status"]), (200, "committed"), body)
            gtids.append(body["gtid"])

        def rows():
            return [(i, g) for i in (0, 1) for g in gtids if self.acceptor(i, g) is not None]
        self.wait_for(lambda: rows() == [], timeout=10,
                      what="the acceptor rows of read-only transactions to go")

    def test_acceptor_rows_left_behind_go_once_their_coordinator_says_it_finished(self):
        """A finished transaction's acceptor rows stayed for good when the coordinator's
        forget never came or was lost (the shard was not connected then, the agent stopped
        before its batch ran, PostgreSQL crashed before the deletion was flushed): 34 and 139
        transactions' rows in two soaks. Now a participant's recovery rounds ask the
        coordinator about rows not changed for acceptor_sweep_age_ms, and delete those of
        transactions it finished with every acknowledgement. Its word is needed: rows it
        does not hold (another node's, or one it has forgotten) stay."""
        self.participants_with(acceptor_sweep_age_ms=2000)
        self.keep_acceptor_rows()  # its forget never comes
        status, body = self.transfer()
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        committed = body["gtid"]
        self.assertIsNotNone(self.acceptor(0, committed))
        self.assertIsNotNone(self.acceptor(1, committed))
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1 "
                                      "AND pg_sleep(0.5) IS NOT NULL",
                "params": [self.acct], "expect_rows": 2}]  # s2 votes no once s1 registered
        status, body = self.c.request("POST", "/v1/transactions", {"ops": ops, "protocol": "3pc"})
        self.assertEqual((status, body["status"]), (409, "aborted"), body)
        aborted = body["gtid"]
        self.assertIsNotNone(self.acceptor(0, aborted))  # s2 never prepared: no row there
        # rows no coordinator here can vouch for: another node's, and one of an earlier run
        # of c1 that this run does not hold; both long unchanged
        strangers = ("c9-1-%d" % self.acct, "c1-1-%d" % (900000 + self.acct))
        for i in (0, 1):
            for g in strangers:
                self.c.psql(i, "INSERT INTO dtx.acceptors (gtid, decided, updated_at) "
                               "VALUES ('%s', 'commit', now() - interval '1 hour')" % g)
                self.addCleanup(self.c.psql, i, "DELETE FROM dtx.acceptors WHERE gtid = '%s'" % g)
        self.wait_for(lambda: all(self.acceptor(i, g) is None
                                  for i, g in ((0, committed), (1, committed), (0, aborted))),
                      timeout=20, what="the rows of the finished transactions to go")
        swept = [float(re.search(r"^dtx_agent_acceptor_rows_swept_total (\S+)$", self.c.request(
            "GET", "/metrics", port=sh.agent_port)[1], re.M).group(1)) for sh in self.c.shards]
        self.assertGreaterEqual(swept[0], 2, "s1 held the rows of both")
        self.assertGreaterEqual(swept[1], 1)
        self.assertIn("left behind", self.c.shards[0].agent.log_text())
        time.sleep(2)  # a sweep or two more
        for i in (0, 1):
            for g in strangers:
                self.assertIsNotNone(self.acceptor(i, g), (i, g))
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))

    def test_the_rows_of_a_transaction_the_participants_decided_stay(self):
        """A coordinator that learned the outcome from the participants (it died after commit
        was chosen, they finished the transaction, it came back) holds the transaction
        finished, but nobody acknowledged anything to it: a participant cut off from the
        round could still be in doubt and need the others' acceptances. It must not tell a
        shard's sweep that the rows may go (it did: it vouched for every finished one)."""
        self.participants_with(acceptor_sweep_age_ms=1000)
        self.crash_and_wait("coord.before_log=crash")  # commit chosen: a majority accepted
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid)
        self.assert_no_prepared(timeout=SETTLE_S)
        self.c.start_coordinator()
        self.wait_for(lambda: self.c.request("GET", "/v1/transactions/" + gtid)[1].get("status")
                      == "committed", timeout=15, what="the coordinator to learn the outcome")
        self.assertEqual(self.c.request("GET", "/v1/transactions/" + gtid)[1]["decided_by"],
                         "participants")
        time.sleep(2)  # rows older than the sweep's age, asked about in two sweeps or more
        for shard in (0, 1):
            self.assertIsNotNone(self.acceptor(shard, gtid), shard)
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))

    def test_a_participant_that_does_not_say_it_takes_forget_is_not_sent_one(self):
        """An older participant does not know "forget": it would log every one as an unknown
        message. Its hello does not announce it, so it keeps its rows, and the others forget."""
        self.c.restart("s1", env={"DTX_FAILPOINTS": "agent.hello_as_before_forget=error"})
        self.addCleanup(self.c.restart, "s1")
        self.c.wait_healthy()
        since = len(self.c.shards[0].agent.log_text())
        status, body = self.transfer()
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        gtid = body["gtid"]
        self.wait_for(lambda: self.acceptor(1, gtid) is None, timeout=10,
                      what="s2 to forget its acceptor row")
        self.assertIsNotNone(self.acceptor(0, gtid), "s1 was sent no forget")
        self.assertNotIn("forget", self.c.shards[0].agent.log_text()[since:])

    def test_coordinator_dead_before_precommit_the_participants_abort(self):
        self.crash_and_wait("coord.before_precommit=crash")
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid, "both branches were prepared")
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), self.before)
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid)[4], "abort")

    def test_a_long_acceptor_list_is_read_whole_by_a_restarted_participant(self):
        """A participant restarted while its 3PC branch is prepared reads the transaction's
        acceptors from the branch's dtx.acceptors row. It kept at most 4,095 bytes of them:
        the list of a transaction over many shards with long URLs (64 shards at 80 bytes
        each make 5 kB) was cut short, could not be read, and the branch stayed prepared,
        its rows locked, for good. Here the row is made that long by a key the participant
        does not read."""
        quick = dict(self.c.agent_extra)
        slow_up = False
        try:
            # the participants must not finish the transaction before they are killed
            self.c.agent_extra = dict(quick, termination_timeout_ms=600000)
            slow_up = True
            for i in (0, 1):
                self.c.stop_participant(i)
                self.c.start_participant(i)
            self.crash_and_wait("coord.before_precommit=crash")
            gtid = self.gid_gtid()
            self.assertIsNotNone(gtid, "both branches were prepared")
            for i in (0, 1):
                self.c.kill_participant(i)
            slow_up = False
            for i in (0, 1):
                self.assertEqual(self.acceptor(i, gtid)[4], "", "nothing decided yet")
                self.c.psql(i, "UPDATE dtx.acceptors SET peers = peers || jsonb_build_object("
                               "'note', repeat('x', 6000)) WHERE gtid = '%s'" % gtid)
                size = self.c.psql(i, "SELECT length(peers::text) FROM dtx.acceptors "
                                      "WHERE gtid = '%s'" % gtid)[0][0]
                self.assertGreater(int(size), 6000)
            self.c.agent_extra = quick
            for i in (0, 1):
                self.c.start_participant(i)
            self.assert_no_prepared(timeout=SETTLE_S)
            self.assertEqual(self.balances(), self.before)
            for i in (0, 1):
                self.assertEqual(self.acceptor(i, gtid)[4], "abort")
        finally:  # the next test gets participants with the class's settings
            self.c.agent_extra = quick
            for i in (0, 1):
                if slow_up and self.c.shards[i].agent.alive():
                    self.c.stop_participant(i)
                if not self.c.shards[i].agent.alive():
                    self.c.start_participant(i)

    def test_coordinator_dead_after_a_majority_accepted_the_participants_commit(self):
        self.crash_and_wait("coord.before_log=crash")  # the COMMIT record, after the majority
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid)
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid)[4], "commit")
        # restarted, the coordinator reports what the participants decided
        self.c.start_coordinator()
        self.wait_for(lambda: self.c.request("GET", "/v1/transactions/" + gtid)[1].get("status")
                      == "committed", timeout=15, what="the coordinator to learn the outcome")
        _, t = self.c.request("GET", "/v1/transactions/" + gtid)
        self.assertEqual(t["decided_by"], "participants")

    def test_coordinator_dead_after_the_precommit_reached_one_shard_the_outcome_agrees(self):
        self.crash_and_wait("coord.precommit_send=crash@2")
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid)
        self.assert_no_prepared(timeout=SETTLE_S)
        after = self.balances()
        decided = {self.acceptor(shard, gtid)[4] for shard in (0, 1)}
        self.assertEqual(len(decided), 1, decided)
        committed = (self.before[0] - 5, self.before[1] + 5)
        self.assertEqual(after, committed if decided == {"commit"} else self.before,
                         "the shards' data agree with what their acceptors decided (%s)"
                         % decided)

    def test_the_same_crash_under_two_phase_commit_waits_for_the_coordinator(self):
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.before_log=crash"})
        status, _ = self.transfer(protocol="2pc")
        self.assertIsNone(status)
        self.assertTrue(self.c.coordinator.wait(10))
        time.sleep(3 * TERMINATION_MS / 1000)
        self.assertEqual((len(self.c.prepared(0)), len(self.c.prepared(1))), (1, 1),
                         "2PC blocks: the branches wait for their coordinator")
        self.c.start_coordinator()
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), self.before)  # presumed abort

    def test_a_keyed_one_shard_transaction_is_settled_after_its_coordinator_crashed(self):
        """With a key, one shard's transaction takes two phases (the answer needs a COMMIT
        record). Under "3pc" it ran 3PC's pre-commit with two acceptors, the coordinator and
        the shard: a shard alone never leads a round, and a restarted coordinator only waited
        to learn from it, so after a crash before the COMMIT record its branch stayed
        prepared, holding its row, and every retry got 504 outcome_unknown."""
        body = {"ops": [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 "
                                               "WHERE id = $1", "params": [self.acct]}],
                "protocol": "3pc", "idempotency_key": "one-shard-3pc-%d" % self.acct}
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.before_log=crash"})
        try:
            status, _ = self.c.request("POST", "/v1/transactions", body, timeout=20)
        except OSError:
            status = None
        self.assertIsNone(status)
        self.assertTrue(self.c.coordinator.wait(10))
        self.c.start_coordinator()
        answers = []

        def settled():
            answers.append(self.c.request("POST", "/v1/transactions", body))
            return answers[-1][0] == 200
        self.wait_for(settled, timeout=SETTLE_S, what="a retry to be answered 200")
        self.assertEqual(answers[-1][1]["status"], "committed", answers[-1])
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balance(0, self.acct), self.before[0] + 1, "run once")

    def test_a_repeated_promise_request_gets_the_same_answer(self):
        # a leader whose answer was lost asks again with the same ballot: granted again, as the
        # model requires (model/README.md); a lower ballot is not
        port = self.c.shards[0].agent_port
        gtid = "c1-99-%d" % self.acct

        def promise(counter):
            status, ans = self.c.request("POST", "/v1/peer/3pc/promise",
                                         {"gtid": gtid, "ballot": {"counter": counter,
                                                                   "node": "p:s2"}}, port=port)
            self.assertEqual(status, 200, ans)
            return ans["granted"], ans["promised"]["counter"]

        self.assertEqual(promise(4), (True, 4))
        self.assertEqual(promise(4), (True, 4))
        self.assertEqual(promise(3), (False, 4))

    def test_with_its_database_down_a_participant_s_acceptor_answers_503_at_once(self):
        """A participant's acceptor endpoints waited for its database to come back: a round
        leader's promise or accept to a shard whose PostgreSQL was down got no answer (8 s
        and more) instead of 503 at once, as the participant's other calls that need the
        database answer; what can never be served is still 404 or 400."""
        port = self.c.shards[1].agent_port
        gtid = "c1-98-%d" % self.acct
        ballot = {"counter": 4, "node": "p:s1"}
        self.c.pg_stop(1)
        self.addCleanup(self.c.wait_healthy)
        self.addCleanup(self.c.pg_start, 1)
        self.wait_for(lambda: self.c.request("GET", "/healthz", port=port)[0] == 503,
                      what="s2's participant to see its database down")
        for method, path, body in (
                ("POST", "/v1/peer/3pc/promise", {"gtid": gtid, "ballot": ballot}),
                ("POST", "/v1/peer/3pc/accept", {"gtid": gtid, "ballot": ballot,
                                                 "value": "commit"}),
                ("GET", "/v1/peer/3pc/" + gtid, None)):
            try:
                status, ans = self.c.request(method, path, body, port=port, timeout=5)
            except OSError as e:
                self.fail("%s %s: no answer within 5 s with the database down (%s)" %
                          (method, path, e))
            self.assertEqual((status, ans["error"]["code"]), (503, "unavailable"),
                             (method, path, ans))
        status, ans = self.c.request("POST", "/v1/peer/3pc/nope", {}, port=port, timeout=5)
        self.assertEqual(status, 404, ans)
        status, ans = self.c.request("POST", "/v1/peer/3pc/promise", {"gtid": gtid},
                                     port=port, timeout=5)
        self.assertEqual(status, 400, ans)

    def test_a_decision_told_while_the_database_is_down_is_not_lost(self):
        """Another acceptor's DECIDE is taken at once, database or not: the participant
        answers 200 and forgets the round it was watching. With its database down neither the
        record of the decision nor the finish can run then; they wait for the database, and
        the branch ends with the chosen outcome once it is back, although no other acceptor
        will lead a round or tell it again (the path was untested). No participant leads a
        round here: one that ran before s2's database stopped could have finished s2's branch,
        and the test would have passed without the decision ever waiting for the database."""
        self.without_rounds()
        self.crash_and_wait("coord.before_log=crash")  # commit chosen: a majority accepted
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid)
        self.assertTrue(self.c.prepared(1), "s2's branch is prepared before its database stops")
        self.assertEqual(self.acceptor(1, gtid)[4], "", "nothing decided on s2 yet")
        sh = self.c.shards[1]
        self.c.pg_stop(1, mode="immediate")
        self.addCleanup(self.wait_for, lambda: self.c.request(
            "GET", "/healthz", port=sh.agent_port)[0] == 200, what="s2's participant back")
        restarted = []
        self.addCleanup(lambda: restarted or self.c.pg_start(1))
        self.wait_for(lambda: self.c.request("GET", "/healthz", port=sh.agent_port)[0] == 503,
                      what="s2's participant to see its database down")
        start = time.time()
        status, ans = self.c.request("POST", "/v1/peer/3pc/decide",
                                     {"gtid": gtid, "value": "commit"}, port=sh.agent_port,
                                     timeout=5)
        self.assertEqual((status, ans), (200, {"ok": True}))
        self.assertLess(time.time() - start, 2, "taken at once, not after the database")
        self.assertIn("%s: decided commit (told by another acceptor)" % gtid,
                      open(sh.agent.log).read())
        # s1 is told too, and finishes: no round of its own will reach s2 any more, so only
        # s2 itself can end its branch once its database is back
        status, ans = self.c.request("POST", "/v1/peer/3pc/decide",
                                     {"gtid": gtid, "value": "commit"},
                                     port=self.c.shards[0].agent_port, timeout=5)
        self.assertEqual((status, ans), (200, {"ok": True}))
        self.wait_for(lambda: not self.c.prepared(0), what="s1's branch to commit")
        time.sleep(1)  # the decision could not be recorded on s2, nor its branch finished
        self.c.pg_start(1)
        restarted.append(True)
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid)[4], "commit")

    def test_an_acceptance_survives_a_crash_of_a_shard_that_commits_asynchronously(self):
        """A shard whose database runs with synchronous_commit = off committed its promise
        or acceptance without flushing it, and answered: a crash of its PostgreSQL then lost
        what a majority had been told, and a later round could choose the other value."""
        for i in (0, 1):
            self.c.psql(i, "ALTER SYSTEM SET synchronous_commit = off")
            self.c.psql(i, "ALTER SYSTEM SET wal_writer_delay = '10s'")  # WAL written late
            self.c.psql(i, "SELECT pg_reload_conf()")
        try:
            self.crash_and_wait("coord.before_log=crash")  # after a majority accepted commit
            for i in (0, 1):  # before any recovery round writes (and flushes) anything
                self.c.kill_participant(i)
            gtid = self.gid_gtid()
            self.assertIsNotNone(gtid)
            for i in (0, 1):
                self.c.pg_stop(i, mode="immediate")  # a crash: unwritten WAL is gone
                self.c.pg_start(i)
            accepted = [(self.acceptor(i, gtid) or [None] * 3)[2] for i in (0, 1)]
            self.assertIn("commit", accepted,
                          "the shard that accepted commit (one did: with the coordinator a "
                          "majority) forgot it in the crash")
        finally:
            for i in (0, 1):
                self.c.psql(i, "ALTER SYSTEM RESET synchronous_commit")
                self.c.psql(i, "ALTER SYSTEM RESET wal_writer_delay")
                self.c.psql(i, "SELECT pg_reload_conf()")
                if not self.c.shards[i].agent.alive():
                    self.c.start_participant(i)
        self.assert_no_prepared(timeout=SETTLE_S)

    def test_a_coordinator_is_an_acceptor_for_its_own_node_only(self):
        """A participant configured with one coordinator URL asks it about every node's
        transactions. Another node behind that URL granted, accepted and recorded as if it
        were the transaction's coordinator "c:c9", an empty acceptor that lets a round
        reach a majority without the real one's acceptance."""
        gtid = "c9-1-%d" % self.acct
        calls = [("POST", "/v1/peer/3pc/promise", {"gtid": gtid,
                                                   "ballot": {"counter": 5, "node": "p:s1"}}),
                 ("POST", "/v1/peer/3pc/accept", {"gtid": gtid, "value": "abort",
                                                  "ballot": {"counter": 5, "node": "p:s1"}}),
                 ("POST", "/v1/peer/3pc/decide", {"gtid": gtid, "value": "abort"}),
                 ("GET", "/v1/peer/3pc/" + gtid, None)]
        for method, path, body in calls:
            status, ans = self.c.request(method, path, body)
            self.assertEqual((status, ans["error"]["code"]), (409, "conflict"), (path, ans))
            self.assertIn("node 'c9'", ans["error"]["message"])
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0)
        self.assertEqual([e for e in dump["entries"] if e.get("gtid") == gtid], [])

    def test_a_decision_arriving_while_this_shard_leads_a_round(self):
        # s1 leads a round; its own promise waits for its database (a row lock held here) when
        # another acceptor's DECIDE arrives: the round is dropped, and the promise's answer,
        # when it comes, finds nothing (it once found freed memory)
        self.crash_and_wait("coord.before_precommit=crash")  # so abort is the only outcome
        gtid = self.gid_gtid()
        self.assertIsNotNone(gtid)
        sh = self.c.shards[0]
        locker = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-h", sh.sock, "-p",
             str(sh.pg_port), "-d", "app", "-c",
             "BEGIN; SELECT 1 FROM dtx.acceptors WHERE gtid = '%s' FOR UPDATE; "
             "SELECT pg_sleep(4); COMMIT" % gtid],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_for(lambda: "%s: no decision from its coordinator; leading" % gtid
                          in open(sh.agent.log).read(), timeout=5, what="s1 to lead a round")
            status, ans = self.c.request("POST", "/v1/peer/3pc/decide",
                                         {"gtid": gtid, "value": "abort"}, port=sh.agent_port)
            self.assertEqual((status, ans), (200, {"ok": True}))
        finally:
            locker.wait(30)
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertTrue(sh.agent.alive(), "s1's agent survived its round's late answer")
        self.assertEqual(self.balances(), self.before)
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid)[4], "abort")

    def test_a_branch_waiting_on_a_lock_never_prepares_once_the_others_aborted(self):
        # s2's row is locked by someone else: the transfer's s2 branch waits; s1 prepares.
        locker = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-h", self.c.shards[1].sock,
             "-p", str(self.c.shards[1].pg_port), "-d", "app", "-c",
             "BEGIN; UPDATE accounts SET balance = balance WHERE id = %d; SELECT pg_sleep(6); "
             "COMMIT" % self.acct], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(0.5)
            self.c.stop_coordinator()
            self.c.start_coordinator()
            t = threading.Thread(target=lambda: self.transfer(timeout=60), daemon=True)
            t.start()
            self.wait_for(lambda: self.c.prepared(0), timeout=10, what="s1's branch to prepare")
            gtid = self.c.prepared(0)[0].split(":")[1]
            # frozen, not killed: its streams stay open, so s2's branch is not cancelled
            # as a lost peer; it waits on the lock while the participants finish without it
            self.c.coordinator.signal(signal.SIGSTOP)
            self.wait_for(lambda: self.c.prepared(0) == [], timeout=SETTLE_S,
                          what="the participants to finish it without the coordinator")
            locker.wait(30)
            time.sleep(2)  # the lock is free now: a branch that could still prepare would have
            self.assertEqual(self.c.prepared(1), [])
            self.assertEqual(self.balances(), self.before)
            row = self.acceptor(1, gtid)
            self.assertEqual((row[3], row[4]), ("t", "abort"), row)  # fenced, decided abort
            self.assertIn("never prepare", open(self.c.shards[1].agent.log).read())
        finally:
            self.c.coordinator.signal(signal.SIGCONT)
            locker.wait(30)
        self.c.stop_coordinator()
        self.c.start_coordinator()
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), self.before)


class ThreePhaseThreeShardsTest(ThreePhaseTest):
    """The tests above again (but the two below) with four acceptors, where the
    pre-commit reaching one shard
    (test_coordinator_dead_after_the_precommit_reached_one_shard_the_outcome_agrees)
    is a minority, not a tie."""

    SHARDS = 3

    # these run on two of the shards only: a third adds nothing to see, only time
    test_acceptor_rows_left_behind_go_once_their_coordinator_says_it_finished = None
    test_the_rows_of_a_transaction_the_participants_decided_stay = None
