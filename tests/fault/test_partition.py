"""Real network partitions under three-phase commit (docs/protocol.md, "Three-phase
commit", failure model): the coordinator and every shard (its participant and its
PostgreSQL) run on hosts of their own, Linux network namespaces joined by a bridge, and the
tests cut their links (tools/dtx_cluster.py, hosts=True). A participant cut off alone
blocks with its branch prepared whatever the others decide, and learns their decision
when the partition heals; across random partitions and kills, no transaction commits on
one shard and aborts on another.

Needs root (skipped otherwise: so does the whole suite, to run PostgreSQL as another user),
and iproute2 and nftables, which tools/install-deps installs (a test fails without them). The randomized
test prints its seed; DTX_PARTITION_SEED=N replays one."""

import json
import os
import random
import threading
import time
import unittest
import uuid

from harness import LEDGER_DDL, ClusterTest, random_ledger_transfer

TERMINATION_MS = 1000
AGENT = {"termination_timeout_ms": TERMINATION_MS, "recovery_interval_ms": 300,
         "recovery_min_age_ms": 100}
SETTLE_S = 30  # a stream to a vanished host dies in 12 s; a leader backs off up to 8 s

CAN_PARTITION = os.geteuid() == 0
WHY_NOT = "network namespaces need root"


class PartitionMixin:
    """What the partition tests look at, from inside a host when it is cut off."""

    def branches_on(self, shard):
        """shard's GET /v1/admin/branches, asked on its own host."""
        status, body = self.c.request_in(shard, "GET", "/v1/admin/branches")
        self.assertEqual(status, 200, body)
        return body["branches"]

    def branch_on(self, shard, gtid):
        found = [b for b in self.branches_on(shard) if b.get("gtid") == gtid]
        return found[0] if found else None

    def in_doubt_on(self, shard):
        """dtxctl in-doubt --participant, run by an operator on shard's host: (exit code,
        parsed --json output)."""
        r = self.c.run_in(shard, [os.path.join(self.c.bindir, "dtxctl"), "in-doubt",
                                  "--participant", self.c.agent_url(shard), "--json"])
        return r.returncode, json.loads(r.stdout)

    def wait_blocked(self, shard, gtid, timeout=SETTLE_S):
        """Waits until shard says the 3PC termination of gtid is blocked; returns the branch."""
        end = time.time() + timeout
        b = None
        while time.time() < end:
            b = self.branch_on(shard, gtid)
            if b and b.get("termination") == "blocked":
                return b
            time.sleep(0.2)
        self.fail("%s never said its branch of %s is blocked: %s" % (shard, gtid, b))

    def assert_blocked(self, shard, gtid, acceptors):
        """gtid's branch on shard (cut off alone) is prepared and blocked, and says why: only
        its own promise of its ballot, of `acceptors`, a majority needed; dtxctl in-doubt
        --participant on its host shows the same."""
        b = self.wait_blocked(shard, gtid)
        why = r"^1 of %d acceptors promised ballot \(\d+, p:%s\), %d needed$" % (
            acceptors, shard, acceptors // 2 + 1)
        self.assertEqual(b.get("protocol"), "3pc", b)
        self.assertRegex(b.get("blocked", ""), why)
        # between two rounds (a round in progress says "leading", with the last reason)
        end = time.time() + SETTLE_S
        while True:
            code, out = self.in_doubt_on(shard)
            self.assertEqual(code, 1, out)  # prepared branches in doubt: a problem it reports
            listed = [x for x in out["branches"] if x.get("gtid") == gtid]
            self.assertEqual(len(listed), 1, out)
            self.assertRegex(listed[0].get("blocked", ""), why)
            if listed[0]["termination"] == "blocked" or time.time() > end:
                break
            time.sleep(0.2)
        self.assertEqual(listed[0]["termination"], "blocked", out)
        self.assertIn("dtx:%s:%s" % (gtid, shard), self.c.prepared(shard))

    def acceptor(self, shard, gtid):
        """(accepted_value, decided) of gtid in shard's dtx.acceptors ('' for NULL)."""
        rows = self.c.psql(shard, "SELECT coalesce(accepted_value, ''), coalesce(decided, '') "
                                  "FROM dtx.acceptors WHERE gtid = '%s'" % gtid)
        return tuple(rows[0]) if rows else None


@unittest.skipUnless(CAN_PARTITION, WHY_NOT)
class PartitionTest(PartitionMixin, ClusterTest):
    """Two shards: three acceptors (the coordinator, s1, s2), a majority of two."""

    SHARDS = 2
    HOSTS = True
    AGENT = AGENT
    COORD = {"commit_wait_ms": 4000}  # s2's answer comes after 1.5 s; the client waits for it
    ACCT = iter(range(1, 100))

    def setUp(self):
        self.acct = next(PartitionTest.ACCT)
        self.before = self.balances()
        self.failpoints = {}  # shard -> its participant runs with failpoints
        self.addCleanup(self.back_to_normal)

    def back_to_normal(self):
        """Whatever a test did: no partition, every daemon up without failpoints."""
        self.c.heal()
        if not self.c.coordinator.alive():
            self.c.start_coordinator()
        for sh in self.c.shards:
            if not sh.agent.alive() or self.failpoints.pop(sh.name, None):
                self.c.restart(sh.name)
        self.c.wait_healthy()

    def balances(self):
        return (self.balance(0, self.acct), self.balance(1, self.acct))

    def assert_participants_alive(self):
        for sh in self.c.shards:
            self.assertTrue(sh.agent.alive(), "the participant of %s died (status %s); see %s" %
                            (sh.name, sh.agent.exit_status(), sh.agent.log))

    def transfer_async(self):
        """Starts a 3PC transfer of 5 from s1 to s2; returns a function that waits for its
        answer: (status, body), status None when there was none."""
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 5 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 5 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1}]
        out = []

        def run():
            try:
                out.append(self.c.request("POST", "/v1/transactions",
                                          {"ops": ops, "protocol": "3pc"}, timeout=30))
            except OSError as e:
                out.append((None, e))

        t = threading.Thread(target=run, daemon=True)
        t.start()

        def answer():
            t.join(40)
            return out[0] if out else (None, "no answer in 40 s")
        return answer

    def wait_log(self, proc, text, since, timeout=15):
        self.wait_for(lambda: text in proc.log_text()[since:], timeout=timeout,
                      what="'%s' in %s" % (text, proc.log))

    def gtid_prepared_on(self, shard):
        gids = self.c.prepared(shard)
        self.assertEqual(len(gids), 1, gids)
        return gids[0].split(":")[1]

    def test_a_participant_cut_off_alone_after_accepting_the_precommit_blocks_then_commits(self):
        # s1 and s2 freeze right after they durably accepted the pre-commit, before they
        # answer; s1 is cut off while both sleep, so that nothing the coordinator sends it
        # once it decides (on s2's answer) can already be in s1's socket buffer
        self.keep_acceptor_rows(wait=False)  # back_to_normal heals s1 and waits, later
        for shard, ms in (("s1", 4000), ("s2", 1500)):
            self.failpoints[shard] = True
            self.c.restart(shard, env={"DTX_FAILPOINTS": "agent.3pc_accepted=sleep(%d)" % ms})
        self.c.wait_healthy()
        since = [len(sh.agent.log_text()) for sh in self.c.shards]
        answer = self.transfer_async()
        for sh in self.c.shards:
            self.wait_log(sh.agent, "failpoint agent.3pc_accepted: sleep", since[sh.i])
        self.c.cut("s1")
        # the coordinator and s2 are a majority: commit is chosen without s1's answer
        status, body = answer()
        self.assertEqual((status, body.get("status")), (200, "committed"), body)
        gtid = body["gtid"]
        self.wait_for(lambda: self.c.prepared(1) == [] or not self.c.shards[1].agent.alive(),
                      timeout=SETTLE_S, what="s2 to commit its branch")
        self.assert_participants_alive()
        self.assertEqual(self.balance(1, self.acct), self.before[1] + 5)
        self.assertEqual(self.acceptor(1, gtid), ("commit", "commit"))
        # s1, alone, cannot learn it: prepared, blocked, whatever it accepted
        self.assert_blocked("s1", gtid, acceptors=3)
        self.assertEqual(self.acceptor(0, gtid), ("commit", ""))
        time.sleep(2 * TERMINATION_MS / 1000)
        self.assertEqual(self.c.prepared(0), ["dtx:%s:s1" % gtid], "s1 still waits")
        self.assertEqual(self.balance(0, self.acct), self.before[0])
        # healed, s1 commits with the majority
        self.c.heal("s1")
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), (self.before[0] - 5, self.before[1] + 5))
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid), ("commit", "commit"))
        self.assert_participants_alive()
        # and the coordinator, resending phase 2, hears that s1 committed
        self.wait_for(lambda: self.c.request("GET", "/v1/transactions/" + gtid)[1]["status"]
                      == "committed", timeout=SETTLE_S, what="the coordinator to hear from s1")
        _, t = self.c.request("GET", "/v1/transactions/" + gtid)
        self.assertEqual(t["decided_by"], "coordinator", t)

    def test_a_participant_cut_off_before_the_precommit_blocks_then_adopts_the_abort(self):
        # every vote is in, both branches are prepared; the coordinator dies before it
        # pre-commits, and s1 is cut off at once (the first leader starts after 1 s)
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.before_precommit=crash"})
        answer = self.transfer_async()
        status, _ = answer()
        self.assertIsNone(status)
        self.c.cut("s1")
        self.assertTrue(self.c.coordinator.wait(10))
        gtid = self.gtid_prepared_on(0)
        self.assertEqual(self.c.prepared(1), ["dtx:%s:s2" % gtid])
        # restarted, the coordinator has no record of it: with s2 a majority, which chooses
        # abort; s2 rolls back
        self.c.start_coordinator(wait=False)
        self.c.wait_healthy(shards_up=False)
        self.wait_for(lambda: self.c.prepared(1) == [] or not self.c.shards[1].agent.alive(),
                      timeout=SETTLE_S, what="s2 to roll its branch back")
        self.assert_participants_alive()
        self.assertEqual(self.acceptor(1, gtid)[1], "abort")
        self.assertEqual(self.balance(1, self.acct), self.before[1])
        # s1, alone, is blocked: it never heard of a pre-commit, and still must not abort
        self.assert_blocked("s1", gtid, acceptors=3)
        self.assertEqual(self.acceptor(0, gtid), ("", ""))
        # healed, s1 adopts the abort
        self.c.heal("s1")
        self.assert_no_prepared(timeout=SETTLE_S)
        self.assertEqual(self.balances(), self.before)
        for shard in (0, 1):
            self.assertEqual(self.acceptor(shard, gtid)[1], "abort")
        self.assert_participants_alive()


@unittest.skipUnless(CAN_PARTITION, WHY_NOT)
class PartitionChaosTest(PartitionMixin, ClusterTest):
    """Three shards (four acceptors, a majority of three), a ledger workload of 3PC
    transfers, and a chaos loop that cuts hosts off (alone, or two from each other) and
    kill -9s the coordinator or a participant."""

    SHARDS = 3
    HOSTS = True
    AGENT = AGENT
    COORD = {"commit_wait_ms": 2000}
    SECONDS = float(os.environ.get("DTX_PARTITION_SECONDS", "45"))
    WORKERS = 4
    ACCOUNTS = 30
    START = 1000

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for sh in cls.c.shards:
            cls.c.psql(sh.i, LEDGER_DDL)

    def setUp(self):
        self.seed = int(os.environ.get("DTX_PARTITION_SEED") or time.time())
        print("\npartition chaos: seed %d (DTX_PARTITION_SEED=%d replays it), %g s" %
              (self.seed, self.seed, self.SECONDS), flush=True)
        self.lock = threading.Lock()
        self.answers = {}  # transfer id -> "committed" / "aborted"
        self.problems = []
        self.faults = []
        self.stop_work = threading.Event()
        self.stop_chaos = threading.Event()

    # ---- the workload --------------------------------------------------------------------

    def transfer_body(self, rng, tid):
        ops = random_ledger_transfer(rng, tid, [sh.name for sh in self.c.shards], self.ACCOUNTS)
        return {"idempotency_key": tid, "timeout_ms": 3000, "protocol": "3pc", "ops": ops}

    def run_transfer(self, body, deadline):
        """Sends (again with the same idempotency key) until a definite answer: 'committed',
        'aborted', or None when none came before deadline."""
        while time.time() < deadline:
            try:
                status, ans = self.c.request("POST", "/v1/transactions", body, timeout=10)
            except OSError:
                status, ans = None, None
            if status == 200:
                return "committed"
            if status == 409:
                return "aborted"
            if status in (400, 401, 403, 413, 415, 422):
                with self.lock:
                    self.problems.append("transfer %s refused: %s %s" %
                                         (body["idempotency_key"], status, ans))
                return None
            time.sleep(0.2)  # no answer, 503 or 504: ask again with the same key
        return None

    def worker(self, n, seed, deadline):
        rng = random.Random(seed)
        while not self.stop_work.is_set():
            tid = "t-%d-%s" % (n, uuid.UUID(int=rng.getrandbits(128)).hex[:12])
            outcome = self.run_transfer(self.transfer_body(rng, tid), deadline)
            with self.lock:
                if outcome:
                    self.answers[tid] = outcome
                else:
                    self.problems.append("transfer %s never got a definite answer" % tid)

    # ---- chaos -----------------------------------------------------------------------------

    def kill_and_restart(self, rng, daemon):
        if daemon == "coordinator":
            self.c.kill_coordinator()
            time.sleep(rng.uniform(0.2, 1.5))
            self.c.start_coordinator(wait=False)
        else:
            i = self.c.shard(daemon).i
            self.c.kill_participant(i)
            time.sleep(rng.uniform(0.2, 1.5))
            self.c.start_participant(i, wait=False)
        self.faults.append("kill -9 %s" % daemon)

    def chaos(self, seed):
        rng = random.Random(seed)
        hosts = self.c.daemons()
        while not self.stop_chaos.wait(rng.uniform(0.5, 2.0)):
            what = rng.choice(["cut", "cut", "cut_between", "kill", "kill"])
            try:
                if what == "kill":
                    self.kill_and_restart(rng, rng.choice(hosts))
                    continue
                if what == "cut":
                    a, b = rng.choice(hosts), None
                    self.c.cut(a)
                    self.faults.append("cut %s" % a)
                else:
                    a, b = rng.sample(hosts, 2)
                    self.c.cut_between(a, b)
                    self.faults.append("cut %s from %s" % (a, b))
                end = time.time() + rng.uniform(1.0, 5.0)
                if rng.random() < 0.4:  # a crash during the partition, on either side
                    time.sleep(rng.uniform(0.2, 1.5))
                    self.kill_and_restart(rng, rng.choice(hosts))
                time.sleep(max(0.0, end - time.time()))
                self.c.heal(a, b)
            except Exception as e:  # noqa: BLE001 - reported with the other problems
                with self.lock:
                    self.problems.append("chaos %s failed: %s" % (what, e))

    def everything_up(self):
        self.c.heal()
        for sh in self.c.shards:
            if not sh.agent.alive():
                self.c.start_participant(sh.i, wait=False)
        if not self.c.coordinator.alive():
            self.c.start_coordinator(wait=False)
        for sh in self.c.shards:
            self.c.wait_agent(sh.i, timeout=60)
        self.c.wait_healthy(timeout=60)

    # ---- checks ------------------------------------------------------------------------------

    def decided_by_shard(self):
        """{gtid: {shard: decided}} of every dtx.acceptors row that has a decision."""
        out = {}
        for sh in self.c.shards:
            for gtid, decided in self.c.psql(sh.i, "SELECT gtid, decided FROM dtx.acceptors "
                                                   "WHERE decided IS NOT NULL"):
                out.setdefault(gtid, {})[sh.name] = decided
        return out

    def coordinator_disagrees(self, decided):
        """gtids whose outcome at the coordinator (when it knows one) is not what the shards
        decided: {gtid: (coordinator's status, the shards' decisions)}."""
        out = {}
        for gtid, by_shard in decided.items():
            status, body = self.c.request("GET", "/v1/transactions/" + gtid)
            st = body.get("status") if status == 200 and isinstance(body, dict) else None
            value = {"committed": "commit", "committing": "commit", "aborted": "abort",
                     "aborting": "abort"}.get(st)
            if value and set(by_shard.values()) != {value}:
                out[gtid] = (st, by_shard)
        return out

    def ledger_legs(self):
        legs = {}
        for sh in self.c.shards:
            for tid, leg in self.c.psql(sh.i, "SELECT transfer_id, leg FROM ledger"):
                legs.setdefault(tid, []).append(leg)
        return legs

    def led_without_coordinator(self):
        return sum(sh.agent.log_text().count("without the coordinator; telling every acceptor")
                   for sh in self.c.shards)

    def test_no_transfer_commits_on_one_shard_and_aborts_on_another_under_partitions(self):
        master = random.Random(self.seed)
        seeds = [master.random() for _ in range(self.WORKERS + 1)]
        deadline = time.time() + self.SECONDS + 60
        workers = [threading.Thread(target=self.worker, args=(n, seeds[n], deadline))
                   for n in range(self.WORKERS)]
        chaos = threading.Thread(target=self.chaos, args=(seeds[-1],))
        for t in workers + [chaos]:
            t.start()
        try:
            time.sleep(self.SECONDS)
        finally:
            self.stop_chaos.set()
            chaos.join()
            self.everything_up()
            self.stop_work.set()
            for t in workers:
                t.join()
        committed = sum(v == "committed" for v in self.answers.values())
        aborted = len(self.answers) - committed
        print("partition chaos: %d transfers answered (%d committed, %d aborted), %d decided by "
              "the participants; %d faults: %s" %
              (len(self.answers), committed, aborted, self.led_without_coordinator(),
               len(self.faults), ", ".join(self.faults)), flush=True)
        self.assert_no_prepared(timeout=SETTLE_S * 2)
        # no transaction committed on one shard and aborted on another
        decided = self.decided_by_shard()
        split = {g: d for g, d in decided.items() if len(set(d.values())) > 1}
        self.assertEqual(split, {}, "acceptors that decided differently")
        self.assertEqual(self.coordinator_disagrees(decided), {},
                         "transactions the coordinator reports otherwise than the shards decided")
        legs = self.ledger_legs()
        self.assertEqual({t: l for t, l in legs.items() if sorted(l) != ["0", "1"]}, {},
                         "transfers with one ledger row")
        self.assertEqual(self.total(), self.START * 100 * len(self.c.shards))
        self.assertEqual([t for t, v in self.answers.items() if v == "committed" and t not in legs],
                         [], "transfers answered committed that are not in the ledger")
        self.assertEqual([t for t, v in self.answers.items() if v == "aborted" and t in legs], [],
                         "transfers answered aborted that are in the ledger")
        for sh in self.c.shards:
            self.assertEqual(self.c.psql(sh.i, (
                "SELECT a.id, a.balance FROM accounts a LEFT JOIN ledger l ON l.account = a.id "
                "GROUP BY a.id, a.balance HAVING a.balance <> %d + coalesce(sum(l.amount), 0)")
                % self.START), [], "%s: balances that differ from their ledger" % sh.name)
        self.assertEqual(self.problems, [])
        self.assertGreaterEqual(committed, 20, "the run committed too little to mean much")
        self.assertGreaterEqual(len(self.faults), 10, "the run did too little chaos")
