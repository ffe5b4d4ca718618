"""A decision log restored from an older copy (or lost and started anew):
the coordinator must never issue a gtid again nor presume abort for a
transaction its log cannot know. Participants remember, in their shard's
dtx schema, the highest epoch each coordinator node showed them; a
coordinator whose log is behind moves past it and treats the gap as
unknown."""

import json
import os
import shutil
import subprocess
import time

from harness import ClusterTest

FAST_RECOVERY = {"recovery_interval_ms": 300, "recovery_min_age_ms": 100}


class Restored:
    """What both tests below use."""

    def epoch(self):
        return self.c.request("GET", "/healthz")[1]["epoch"]


class RestoredLogTest(Restored, ClusterTest):
    SHARDS = 2
    AGENT = dict(FAST_RECOVERY)
    ACCT = iter(range(60, 100))  # accounts 1..100 exist on every shard

    def test_a_restored_log_never_reissues_a_gtid_nor_splits_a_transaction(self):
        acct, later = next(self.ACCT), next(self.ACCT)
        before = (self.balance(0, acct), self.balance(1, acct))
        self.assertEqual(self.c.stop_coordinator(), 0)
        backup = os.path.join(self.c.dir, "log-backup")
        shutil.rmtree(backup, ignore_errors=True)
        shutil.copytree(self.c.log_dir, backup)

        # Phase 2 reaches s1 only: s1 commits, s2 stays prepared, the coordinator dies.
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.phase2_send=crash@2"})
        lost_epoch = self.epoch()
        status, _ = self.pair_transfer(acct)
        self.assertIsNone(status)
        self.assertTrue(self.c.coordinator.wait(10))
        self.wait_for(lambda: self.balance(0, acct) == before[0] - 5, what="s1 to commit")
        [gid] = self.c.prepared(1)
        old_gtid = gid.split(":")[1]

        # The operator restores the older copy and starts the coordinator.
        shutil.rmtree(self.c.log_dir)
        shutil.copytree(backup, self.c.log_dir)
        self.c.start_coordinator()
        self.wait_for(lambda: self.epoch() > lost_epoch, timeout=15,
                      what="the coordinator to move past the epoch its log lost")

        status, body = self.pair_transfer(later)
        self.assertEqual(status, 200, body)
        self.assertNotEqual(body["gtid"], old_gtid)
        self.assertGreater(int(body["gtid"].split("-")[1]), lost_epoch)
        time.sleep(2)  # several recovery rounds: nobody may presume the old one aborted
        self.assertEqual(self.c.prepared(1), [gid], "the old branch must not be rolled back")
        self.assertEqual(self.balance(0, acct), before[0] - 5)

        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        [b] = [b for b in doubt["branches"] if b["gid"] == gid]
        self.assertEqual(b["decision"], "none")
        self.assertTrue(b.get("epoch_gap"), b)
        rc, status_out, _ = self.ctl("status", json_out=True)
        gaps = status_out["coordinator"]["epoch_gaps"]
        unknown = [e for g in gaps for e in range(g["from"], g["to"] + 1)]
        self.assertIn(lost_epoch, unknown, gaps)
        # the copy's own last run too: a copy taken while it ran would lack its end
        self.assertIn(lost_epoch - 1, unknown, gaps)

        rc, text, _ = self.ctl("recover")
        self.assertEqual(self.c.prepared(1), [gid], "recover leaves an unknown gtid alone: " + text)

        # the gap outlives checkpoints: a restart (which checkpoints) still knows it
        self.c.stop_coordinator()
        self.c.start_coordinator()
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        [b] = [b for b in doubt["branches"] if b["gid"] == gid]
        self.assertEqual((b["decision"], b.get("epoch_gap")), ("none", True), b)
        time.sleep(1)
        self.assertEqual(self.c.prepared(1), [gid], "the old branch must not be rolled back")
        rc, res, err = self.ctl("resolve", old_gtid, "--commit", "--reason",
                                "s1 shows it committed", json_out=True)
        self.assertEqual(rc, 0, err)
        self.assert_no_prepared(timeout=10)
        self.assertEqual((self.balance(0, acct), self.balance(1, acct)),
                         (before[0] - 5, before[1] + 5))

    def test_until_a_shard_has_accepted_its_epoch_a_restored_coordinator_presumes_nothing(self):
        """The window before any participant has told a restored coordinator that its log is
        behind: with every agent down it reuses the lost run's epoch, and the gtid it issues
        again must not be presumed aborted to a shard whose link has not accepted this run."""
        acct = next(self.ACCT)
        self.assertEqual(self.c.stop_coordinator(), 0)
        backup = os.path.join(self.c.dir, "log-backup-2")
        shutil.rmtree(backup, ignore_errors=True)
        shutil.copytree(self.c.log_dir, backup)
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.phase2_send=crash@2"})
        lost_epoch = self.epoch()
        self.assertIsNone(self.pair_transfer(acct)[0])
        self.assertTrue(self.c.coordinator.wait(10))
        [gid] = self.c.prepared(1)
        old_gtid = gid.split(":")[1]
        for i in range(len(self.c.shards)):
            self.c.stop_participant(i)
        try:
            shutil.rmtree(self.c.log_dir)
            shutil.copytree(backup, self.c.log_dir)
            self.c.start_coordinator(wait=False)
            self.c.wait_healthy(shards_up=False)
            self.assertEqual(self.epoch(), lost_epoch, "no shard could tell it yet")
            status, body = self.pair_transfer(acct)  # issues the lost run's gtid again, and fails
            self.assertEqual(status, 409, body)
            status, body = self.c.request("POST", "/v1/peer/outcomes",
                                          {"shard": "s2", "gtids": [old_gtid]})
            self.assertEqual(status, 200, body)
            self.assertNotEqual(body["outcomes"][0]["outcome"], "abort", body)
        finally:
            for i in range(len(self.c.shards)):
                self.c.start_participant(i, wait=False)
            self.wait_for(lambda: self.epoch() > lost_epoch, timeout=15,
                          what="the coordinator to move past the epoch its log lost")
        time.sleep(1)
        self.assertEqual(self.c.prepared(1), [gid], "the old branch must not be rolled back")
        rc, _, err = self.ctl("resolve", old_gtid, "--commit", "--reason", "s1 committed it")
        self.assertEqual(rc, 0, err)
        self.assert_no_prepared(timeout=10)

    def test_a_participant_refuses_a_coordinator_run_behind_what_it_has_seen(self):
        if self.epoch() < 2:
            self.c.stop_coordinator()
            self.c.start_coordinator()
        # the shard has seen this epoch
        self.assertEqual(self.pair_transfer(next(self.ACCT))[0], 200)
        epoch = self.epoch()
        port = self.c.shards[0].agent_port
        headers = ["-H", "Connection: Upgrade", "-H", "Upgrade: dtx-peer/1",
                   "-H", "X-Dtx-Node: c1", "-H", "X-Dtx-Epoch: %d" % (epoch - 1),
                   "-H", "X-Dtx-Boot: 0123456789abcdef"]
        r = subprocess.run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5"] +
                           headers + ["http://127.0.0.1:%d/v1/peer/stream" % port],
                           capture_output=True, text=True)
        body, code = r.stdout.rsplit("\n", 1)
        self.assertEqual(code, "409", r.stdout)
        err = json.loads(body)["error"]
        self.assertEqual(err["epoch_seen"], epoch)
        self.assertIn("epoch", err["message"])


class RestoredStoreTest(Restored, ClusterTest):
    """The same promise with the decisions in a PostgreSQL store: a store restored from an
    older copy (or failed over to a standby that lacked its last rows) is behind in just
    the same way. The participants' refusal of the run's epoch is then no sign that another
    process of the node took over (that one would hold the lease, and this run's writes
    would be refused): the gap is recorded and never presumed aborted."""
    SHARDS = 2
    AGENT = dict(FAST_RECOVERY)
    ACCT = iter(range(60, 100))
    STORE = "postgres"
    STORE_LEASE_MS = 1000

    def test_a_store_restored_from_an_older_copy_never_splits_a_transaction(self):
        acct, later = next(self.ACCT), next(self.ACCT)
        before = (self.balance(0, acct), self.balance(1, acct))
        self.c.store_psql("DROP TABLE IF EXISTS public.records_copy, public.leases_copy; "
                          "CREATE TABLE public.records_copy AS SELECT * FROM dtx_store.records; "
                          "CREATE TABLE public.leases_copy AS SELECT * FROM dtx_store.leases")
        self.assertEqual(self.c.stop_coordinator(), 0)

        # Phase 2 reaches s1 only: s1 commits, s2 stays prepared, the coordinator dies.
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.phase2_send=crash@2"})
        lost_epoch = self.epoch()
        self.assertIsNone(self.pair_transfer(acct)[0])
        self.assertTrue(self.c.coordinator.wait(10))
        self.wait_for(lambda: self.balance(0, acct) == before[0] - 5, what="s1 to commit")
        [gid] = self.c.prepared(1)
        old_gtid = gid.split(":")[1]

        # The store's database is put back as the copy had it; the coordinator starts.
        self.c.store_psql("DELETE FROM dtx_store.records; DELETE FROM dtx_store.leases; "
                          "INSERT INTO dtx_store.records SELECT * FROM public.records_copy; "
                          "INSERT INTO dtx_store.leases SELECT * FROM public.leases_copy")
        self.c.start_coordinator(wait=False)
        self.wait_for(lambda: self.c.health()[0] == 200 and
                      self.c.health()[1].get("epoch", 0) > lost_epoch, timeout=20,
                      what="the coordinator to move past the epoch its store lost")
        self.assertTrue(self.c.coordinator.alive(), "it stays active: its term holds the lease")
        self.c.wait_active("c1", timeout=20)  # every shard linked again, at the new epoch

        status, body = self.pair_transfer(later)
        self.assertEqual(status, 200, body)
        self.assertGreater(int(body["gtid"].split("-")[1]), lost_epoch)
        time.sleep(2)  # several recovery rounds: nobody may presume the old one aborted
        self.assertEqual(self.c.prepared(1), [gid], "the old branch must not be rolled back")
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        [b] = [b for b in doubt["branches"] if b["gid"] == gid]
        self.assertEqual((b["decision"], b.get("epoch_gap")), ("none", True), b)
        rc, _, err = self.ctl("resolve", old_gtid, "--commit", "--reason", "s1 committed it")
        self.assertEqual(rc, 0, err)
        self.assert_no_prepared(timeout=10)
        self.assertEqual((self.balance(0, acct), self.balance(1, acct)),
                         (before[0] - 5, before[1] + 5))
