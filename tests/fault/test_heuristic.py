"""What PostgreSQL really did, against the decision: a branch finished by
hand the other way (a mixed outcome), a branch gone from a database that
was restored from a backup, where its xid now belongs to an unrelated
transaction (a hazard, never a success), and xids past 2^32 (64-bit xids
everywhere, also where pg_prepared_xacts gives a 32-bit one)."""

import json
import os
import shutil
import subprocess
import time
import urllib.request

from harness import ClusterTest

CRASH_IN_PHASE2 = {"DTX_FAILPOINTS": "coord.phase2_send=crash@2"}


class HeuristicBase(ClusterTest):
    SHARDS = 2
    ACCT = iter(range(1, 100))

    def commit_reaching_s1_only(self, acct):
        """A committed transfer whose COMMIT reached s1 only: s2 stays prepared, and the
        coordinator is down. Returns (gtid, s2's gid)."""
        self.c.stop_coordinator()
        self.c.start_coordinator(env=CRASH_IN_PHASE2)
        status, _ = self.pair_transfer(acct)
        self.assertIsNone(status)
        self.assertTrue(self.c.coordinator.wait(10))
        [gid] = self.c.prepared(1)
        return gid.split(":")[1], gid

    def tx(self, gtid):
        status, body = self.c.request("GET", "/v1/transactions/" + gtid)
        self.assertEqual(status, 200, body)
        return body

    def metrics(self):
        with urllib.request.urlopen(self.c.url() + "/metrics", timeout=10) as r:
            return r.read().decode()

    def settle(self, gtid):
        """An operator records what was done about it: the heuristic stops being counted."""
        rc, _, err = self.ctl("resolve", gtid, "--commit", "--reason", "checked s2, fixed by hand")
        self.assertEqual(rc, 0, err)


class HeuristicTest(HeuristicBase):

    def test_a_branch_rolled_back_by_hand_against_a_commit_is_a_mixed_outcome(self):
        acct = next(self.ACCT)
        gtid, gid = self.commit_reaching_s1_only(acct)
        self.c.psql(1, "ROLLBACK PREPARED '%s'" % gid)  # a DBA "cleans up"
        self.c.start_coordinator()
        self.wait_for(lambda: self.tx(gtid).get("heuristic") == "mixed", timeout=15,
                      what="the mixed outcome to be reported")
        t = self.tx(gtid)
        self.assertEqual((t["status"], t["decided_by"]), ("committed", "coordinator"))
        s2 = [s for s in t["shards"] if s["name"] == "s2"][0]
        self.assertEqual((s2["state"], s2["heuristic"]), ("aborted", "mixed"))
        self.assertEqual([(h["kind"], h["shard"], h["decision"]) for h in t["heuristics"]],
                         [("mixed", "s2", "commit")])
        self.assertFalse(t["heuristic_settled"])
        self.assertIn('dtx_heuristic_outcomes_total{kind="mixed"} 1', self.metrics())
        self.assertRegex(self.c.coordinator.log_text(),
                         r"ERROR +transaction %s: HEURISTIC MIXED outcome: shard 's2' rolled "
                         r"back the branch although the decision was commit" % gtid)

        rc, text, _ = self.ctl("show", gtid)
        self.assertEqual(rc, 1, text)
        self.assertIn("HEURISTIC MIXED", text)
        rc, text, _ = self.ctl("list")
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, r"%s .*HEURISTIC mixed" % gtid)
        rc, st, _ = self.ctl("status", json_out=True)
        self.assertEqual((rc, st["heuristic"]), (1, 1))

        # durable: a restart still knows it
        self.c.stop_coordinator()
        self.c.start_coordinator()
        t = self.tx(gtid)
        self.assertEqual(t["heuristic"], "mixed")
        rc, st, _ = self.ctl("status", json_out=True)
        self.assertEqual((rc, st["heuristic"]), (1, 1))

        # settled by an operator after checking
        self.settle(gtid)
        rc, st, _ = self.ctl("status", json_out=True)
        self.assertEqual((rc, st["heuristic"]), (0, 0))
        rc, show, _ = self.ctl("show", gtid, json_out=True)
        self.assertEqual((rc, show["heuristic"], show["heuristic_settled"]), (0, "mixed", True))

    def test_a_branch_gone_from_a_restored_database_is_a_hazard_never_a_success(self):
        acct = next(self.ACCT)
        backup = os.path.join(self.c.shards[1].dir, "backup")
        shutil.rmtree(backup, ignore_errors=True)
        self.c.pg_stop(1)
        try:
            self.c.pg_copy(1, backup)
        finally:
            self.c.pg_start(1)
        self.c.wait_agent(1)
        gtid, gid = self.commit_reaching_s1_only(acct)
        xid = int(self.c.psql(1, "SELECT transaction FROM pg_prepared_xacts WHERE gid = '%s'"
                              % gid)[0][0])

        # s2's database is restored from the backup (a new timeline); new work takes xids
        # past the lost branch's, so that its xid now belongs to an unrelated transaction
        self.c.pg_restore(1, backup)
        self.c.psql(1, "DO $$ BEGIN FOR i IN 1..60 LOOP PERFORM pg_current_xact_id(); COMMIT; "
                       "END LOOP; END $$")
        self.assertEqual(self.c.prepared(1), [])
        self.assertEqual(self.c.psql(1, "SELECT pg_xact_status('%d'::xid8)" % xid),
                         [["committed"]], "the lost branch's xid is now another transaction's")
        self.c.wait_agent(1)

        self.c.start_coordinator()
        self.wait_for(lambda: self.tx(gtid).get("heuristic") == "hazard", timeout=15,
                      what="the hazard to be reported")
        t = self.tx(gtid)
        [h] = t["heuristics"]
        self.assertEqual((h["kind"], h["shard"]), ("hazard", "s2"))
        self.assertIn("database that changed", h["detail"])
        self.assertIn('dtx_heuristic_outcomes_total{kind="hazard"} 1', self.metrics())
        rc, text, _ = self.ctl("show", gtid)
        self.assertEqual(rc, 1, text)
        self.assertIn("HEURISTIC HAZARD", text)
        self.settle(gtid)


    def identity(self, i):
        [[sysid, tli]] = self.c.psql(i, "SELECT system_identifier, pg_walfile_name("
                                        "pg_current_wal_lsn()) FROM pg_control_system()")
        tli = int(tli[:8], 16)  # a WAL file's name starts with its timeline
        return sysid, int(tli)

    def control_timeline(self, i):
        """The timeline as the control file has it after a checkpoint: not the agent's way."""
        self.c.psql(i, "CHECKPOINT")
        return int(self.c.psql(i, "SELECT timeline_id FROM pg_control_checkpoint()")[0][0])

    def test_a_standby_is_refused_until_promoted_and_votes_carry_its_new_timeline(self):
        # the agent reads the database's identity once per connection: a connection to a
        # standby would keep the old timeline after a promotion, so it is never used
        sysid, tli = self.identity(1)
        self.assertEqual(tli, self.control_timeline(1))
        self.c.pg_standby(1)
        agent_log = os.path.join(self.c.shards[1].dir, "participant.log")
        self.wait_for(lambda: "in recovery (a standby)" in open(agent_log).read(), timeout=20,
                      what="the agent to refuse the standby's connections")
        status, body = self.pair_transfer(next(self.ACCT))
        self.assertNotEqual(status, 200, body)

        self.c.pg_promote(1)
        self.assertEqual(self.identity(1), (sysid, tli + 1))
        self.assertEqual(self.control_timeline(1), tli + 1)
        deadline = time.time() + 20
        while True:
            status, body = self.pair_transfer(next(self.ACCT))
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.3)
        self.assertEqual(status, 200, body)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0)
        [rec] = [e for e in dump["entries"] if e["type"] == "COMMIT" and e["gtid"] == body["gtid"]]
        dbs = {b["shard"]: b["db"] for b in rec["branches"]}
        self.assertEqual(dbs["s2"], "%s:%d" % (sysid, tli + 1))
        self.assertEqual(dbs["s1"], "%s:%d" % self.identity(0))


class WideXidTest(HeuristicBase):
    """Every shard's xids are past 2^32."""

    XID_EPOCH = 1

    def test_xids_past_2_to_the_32_are_the_same_everywhere(self):
        acct = next(self.ACCT)
        gtid, gid = self.commit_reaching_s1_only(acct)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        [rec] = [e for e in dump["entries"] if e["type"] == "COMMIT" and e["gtid"] == gtid]
        voted = {b["shard"]: int(b["xid"]) for b in rec["branches"]}
        self.assertGreater(voted["s2"], 2 ** 32)
        self.assertRegex(rec["branches"][0]["db"], r"^\d+:1$")

        # what the participant lists (from pg_prepared_xacts, a 32-bit xid) is the same xid8
        r = subprocess.run([os.path.join(self.c.bindir, "dtxctl"), "in-doubt", "--json",
                            "--participant", "http://127.0.0.1:%d" % self.c.shards[1].agent_port],
                           capture_output=True, text=True, timeout=60)
        [b] = json.loads(r.stdout)["branches"]
        self.assertEqual((b["gid"], int(b["xid"])), (gid, voted["s2"]))

        # rolled back by hand, then finished by the participant's own recovery: its xid8
        # tells it was rolled back (a 32-bit xid would point at another transaction)
        self.c.psql(1, "ROLLBACK PREPARED '%s'" % gid)
        self.c.start_coordinator()
        self.wait_for(lambda: self.tx(gtid).get("heuristic") == "mixed", timeout=15,
                      what="the mixed outcome to be reported")
        self.settle(gtid)
