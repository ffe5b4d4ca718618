"""Starting and stopping the daemons: flags, config errors, start-up checks
of the database and the decision log, graceful shutdown."""

import glob
import json
import os
import shutil
import signal
import subprocess

import dtx_cluster
from harness import ClusterTest


class StartupTest(ClusterTest):
    SHARDS = 2

    def run_bin(self, name, *args, timeout=30):
        return subprocess.run([os.path.join(self.c.bindir, name)] + list(args),
                              capture_output=True, text=True, timeout=timeout)

    def write_json(self, name, obj):
        path = os.path.join(self.c.dir, name)
        with open(path, "w") as f:
            json.dump(obj, f)
        return path

    def agent_config(self, name, shard_index, **extra):
        sh = self.c.shards[shard_index]
        cfg = {"name": name, "listen": "127.0.0.1:1", "conninfo": sh.conninfo(),
               "coordinator_url": self.c.url(), "startup_wait_s": 0,
               "allow_fsync_off": not self.c.fsync}
        cfg.update(extra)
        return self.write_json("agent-%s.json" % name, cfg)

    def test_help_exits_0(self):
        for b in ("dtx-coordinator", "dtx-participant"):
            r = self.run_bin(b, "--help")
            self.assertEqual(r.returncode, 0)
            self.assertIn("usage: %s --config FILE" % b, r.stdout)

    def test_bad_flag_exits_2_with_one_line(self):
        for b in ("dtx-coordinator", "dtx-participant"):
            r = self.run_bin(b, "--bogus")
            self.assertEqual(r.returncode, 2)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn("--bogus", r.stderr)

    def test_bad_config_exits_2_naming_file_and_key(self):
        path = self.write_json("bad-coord.json", {
            "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": "/tmp/x",
            "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}], "prepare_timeout_ms": "5s"})
        r = self.run_bin("dtx-coordinator", "--config", path)
        self.assertEqual(r.returncode, 2)
        line = r.stderr.strip()
        self.assertEqual(len(line.splitlines()), 1, r.stderr)
        self.assertIn(path, line)
        self.assertIn("'prepare_timeout_ms' must be an integer", line)
        r = self.run_bin("dtx-participant", "--config", "/nonexistent.json")
        self.assertEqual(r.returncode, 2)
        self.assertIn("could not open config '/nonexistent.json'", r.stderr)

    def test_a_default_timeout_above_max_timeout_ms_is_refused(self):
        """A request's timeout_ms may not exceed max_timeout_ms, but a default above it went
        unchecked: every request without timeout_ms got more than the maximum."""
        for key in ("prepare_timeout_ms", "interactive_timeout_ms"):
            path = self.write_json("long-default.json", {
                "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": "/tmp/x",
                "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}],
                "max_timeout_ms": 10000, key: 20000})
            r = self.run_bin("dtx-coordinator", "--config", path)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("'%s' (20000) is above 'max_timeout_ms' (10000)" % key, r.stderr)

    def test_a_retention_too_short_for_a_retry_is_refused(self):
        """retention_s 0 forgot every idempotency key at once, so a client's retry after a
        lost answer ran its transaction again: a promise the config silently broke."""
        for seconds in (0, 59):
            path = self.write_json("short-retention.json", {
                "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": "/tmp/x",
                "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}], "retention_s": seconds})
            r = self.run_bin("dtx-coordinator", "--config", path)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("'retention_s' must be at least 60", r.stderr)

    def test_a_bad_slots_entry_is_named_by_its_own_key(self):
        path = self.write_json("bad-slots.json", {
            "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": "/tmp/x",
            "shards": [{"name": "s1", "url": "http://127.0.0.1:2", "slots": [5]},
                       {"name": "s2", "url": "http://127.0.0.1:3", "slots": [0, 16383]}]})
        r = self.run_bin("dtx-coordinator", "--config", path)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("'shards[0].slots' must be [first, last]", r.stderr)

    def test_participant_refuses_another_shards_database(self):
        r = self.run_bin("dtx-participant", "--config", self.agent_config("s1", 1))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("belongs to shard 's2'", r.stderr)
        self.assertIn("not 's1'", r.stderr)

    def test_participant_refuses_fsync_off_and_warns_about_synchronous_commit_off(self):
        self.assertEqual(self.c.psql(0, "SHOW fsync"), [["off"]])  # the test cluster's
        r = self.run_bin("dtx-participant", "--config",
                         self.agent_config("s1", 0, allow_fsync_off=False))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("runs with fsync = off", r.stderr)
        self.assertIn("set fsync = on", r.stderr)
        # allowed (a throwaway database), it is still warned about; so is synchronous_commit
        sh = self.c.shards[1]
        r = self.run_bin("dtx-participant", "--config", self.agent_config(
            "s1", 1, allow_fsync_off=True,
            conninfo=sh.conninfo() + " options='-c synchronous_commit=off'"))
        self.assertEqual(r.returncode, 1, r.stderr)  # s2's database: refused after the checks
        self.assertIn("belongs to shard 's2'", r.stderr)
        self.assertRegex(r.stderr, r"WARN .*fsync = off, allowed by allow_fsync_off")
        self.assertRegex(r.stderr, r"WARN .*synchronous_commit = off: a crash of the server can "
                                   r"lose a COMMIT PREPARED it acknowledged")

    def test_participant_refuses_an_unreachable_database_after_waiting(self):
        cfg = self.agent_config("s1", 0, conninfo="host=/nonexistent port=1 dbname=app")
        r = self.run_bin("dtx-participant", "--config", cfg)
        self.assertEqual(r.returncode, 1)
        self.assertIn("could not connect to PostgreSQL", r.stderr)

    def test_second_coordinator_on_the_same_log_is_refused_and_the_first_keeps_its_log(self):
        both = [{"shard": "s1", "sql": "SELECT 1"}, {"shard": "s2", "sql": "SELECT 1"}]
        status, first = self.c.tx(both, idempotency_key="before-the-twin")  # kept in the log
        self.assertEqual(status, 200, first)
        before = sorted(os.listdir(self.c.log_dir))
        path = self.write_json("coord-twin.json", {
            "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": self.c.log_dir,
            "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}]})
        r = self.run_bin("dtx-coordinator", "--config", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is in use by another coordinator (pid %d)" % self.c.coordinator.pid,
                      r.stderr)
        self.assertEqual(sorted(os.listdir(self.c.log_dir)), before, "the twin touched the log")
        status, body = self.c.tx(both)
        self.assertEqual(status, 200, body)
        # The log's contents, not only its files, are intact: what the first coordinator
        # decided before the twin tried is replayed after a kill -9, and its epochs go on.
        self.c.kill_coordinator()
        self.c.start_coordinator()
        status, state = self.c.request("GET", "/v1/transactions/" + first["gtid"])
        self.assertEqual(status, 200, state)
        self.assertEqual(state["status"], "committed")
        status, again = self.c.tx(both, idempotency_key="before-the-twin")
        self.assertEqual((status, again["gtid"]), (200, first["gtid"]), again)
        status, after = self.c.tx(both)
        self.assertEqual(status, 200, after)
        self.assertGreater(int(after["gtid"].split("-")[1]), int(first["gtid"].split("-")[1]))

    def test_coordinator_refuses_a_corrupt_decision_log(self):
        # Commit a few transactions so the log has frames, then damage a copy's middle.
        for i in range(3):
            status, _ = self.c.tx([{"shard": "s1", "sql": "UPDATE accounts SET balance = balance "
                                                          "+ 1 WHERE id = 40"},
                                   {"shard": "s2", "sql": "UPDATE accounts SET balance = balance "
                                                          "+ 1 WHERE id = 40"}])
            self.assertEqual(status, 200)
        copy = os.path.join(self.c.dir, "corrupt-log")
        shutil.copytree(self.c.log_dir, copy)
        seg = sorted(glob.glob(os.path.join(copy, "dlog-*.log")))[-1]
        with open(seg, "r+b") as f:
            f.seek(60)
            b = f.read(1)
            f.seek(60)
            f.write(bytes([b[0] ^ 0x40]))
        path = self.write_json("corrupt-coord.json", {
            "node_id": "c1", "listen": "127.0.0.1:1", "log_dir": copy,
            "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}]})
        r = self.run_bin("dtx-coordinator", "--config", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is corrupt", r.stderr)
        self.assertIn(seg, r.stderr)
        self.assertIn("offset", r.stderr)

    def test_a_damaged_checkpoint_stops_the_coordinator_and_the_epoch_never_goes_back(self):
        """Right after a restart the newest segment holds one checkpoint frame: it was
        durable before the older segments were deleted, so a flipped byte in it is
        corruption (never a torn write to cut off, which would lose the epoch and
        reissue gtids)."""
        self.assertEqual(self.c.stop_coordinator(), 0)
        self.c.start_coordinator()
        epoch = self.c.request("GET", "/healthz")[1]["epoch"]
        self.assertEqual(self.c.stop_coordinator(), 0)
        segs = sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))
        self.assertEqual(len(segs), 1, segs)
        with open(segs[0], "r+b") as f:
            f.seek(32 + 20)  # inside the checkpoint, the segment's first and only frame
            b = f.read(1)
            f.seek(32 + 20)
            f.write(bytes([b[0] ^ 0x08]))
        r = self.run_bin("dtxctl", "log", "verify", "--log-dir", self.c.log_dir)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("CORRUPT", r.stdout)
        self.assertIn("offset 32", r.stdout)
        self.c.coordinator = self.c._coord_proc()
        self.c.coordinator.start()
        self.assertTrue(self.c.coordinator.wait(10))
        self.assertEqual(self.c.coordinator.popen.returncode, 1)
        with open(self.c.coordinator.log) as f:
            log = f.read()
        self.assertIn("%s' is corrupt: damaged frame at offset 32" % segs[0], log)
        self.assertEqual(sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log"))), segs)
        with open(segs[0], "r+b") as f:  # the operator puts the byte back
            f.seek(32 + 20)
            f.write(b)
        self.c.start_coordinator()
        self.assertEqual(self.c.request("GET", "/healthz")[1]["epoch"], epoch + 1)

    def test_a_flipped_length_in_the_last_frame_after_a_clean_stop_is_corruption(self):
        """A clean stop trims the zeros kept ahead of the log, so its last frame ends the
        file: a bit flip that makes its length larger reads as "the file ends inside it".
        That frame was acknowledged (its COMMIT records answered) and is complete, so it
        is corruption, never a torn write to cut off."""
        status, body = self.c.tx([{"shard": "s1", "sql": "UPDATE accounts SET balance = balance "
                                                         "+ 1 WHERE id = 41"},
                                  {"shard": "s2", "sql": "UPDATE accounts SET balance = balance "
                                                         "+ 1 WHERE id = 41"}])
        self.assertEqual(status, 200, body)
        self.assertEqual(self.c.stop_coordinator(), 0)
        self.addCleanup(self.c.start_coordinator)
        copy = os.path.join(self.c.dir, "flipped-length-log")
        shutil.copytree(self.c.log_dir, copy)
        seg = sorted(glob.glob(os.path.join(copy, "dlog-*.log")))[-1]
        with open(seg, "rb") as f:
            data = f.read()
        off, last = 32, None  # the segment's header, then frames: crc, length, type, body
        while off + 9 <= len(data):
            n = int.from_bytes(data[off + 4:off + 8], "little")
            if n == 0:
                break
            last, off = off, off + 9 + n
        self.assertEqual(off, len(data), "the clean stop left no zeros after the last frame")
        self.assertGreater(last, 32, "a frame after the start's checkpoint")
        with open(seg, "r+b") as f:
            f.seek(last + 5)  # the length's second byte: 4096 more
            f.write(bytes([data[last + 5] ^ 0x10]))
        r = self.run_bin("dtxctl", "log", "verify", "--log-dir", copy)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("CORRUPT", r.stdout)
        self.assertIn("offset %d" % last, r.stdout)

    def test_three_phase_commit_over_more_shards_than_a_round_takes_is_refused(self):
        """A participant's recovery round asks every acceptor; it took at most 65, so over
        64 shards a majority was counted over fewer acceptors than the transaction had.
        The coordinator refuses such a transaction before anything runs."""
        port, dead = dtx_cluster.free_ports(2)
        log_dir = os.path.join(self.c.dir, "wide-log")
        os.makedirs(log_dir, exist_ok=True)
        path = self.write_json("wide-coord.json", {
            "node_id": "c9", "listen": "127.0.0.1:%d" % port, "log_dir": log_dir,
            "shards": [{"name": "s%d" % i, "url": "http://127.0.0.1:%d" % dead}
                       for i in range(1, 66)]})
        p = subprocess.Popen([os.path.join(self.c.bindir, "dtx-coordinator"), "--config", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(p.wait)
        self.addCleanup(p.terminate)

        def call(body, path="/v1/transactions"):
            try:
                return self.c.request("POST", path, body, port=port, timeout=10)
            except OSError:
                return None, None
        def health():
            try:
                return self.c.request("GET", "/healthz", port=port, timeout=10)[0]
            except OSError:
                return None
        ops = [{"shard": "s%d" % i, "sql": "SELECT 1"} for i in range(1, 66)]
        # Taking transactions once every link was tried: before that every call is 503.
        self.wait_for(lambda: health() == 200, timeout=20,
                      what="the coordinator to take transactions")
        for n, protocol, want in ((65, "3pc", 400), (64, "3pc", None), (65, "2pc", None)):
            status, body = call({"ops": ops[:n], "protocol": protocol})
            if want:
                self.assertEqual((status, body["error"]["code"]), (want, "bad_request"), body)
                self.assertIn("at most 64 shards", body["error"]["message"])
            else:  # runs, and fails only for its shards being down
                self.assertNotEqual(status, 400, (n, protocol, body))
        status, begun = call({"interactive": True, "protocol": "3pc"})
        self.assertEqual(status, 201, begun)
        calls = "/v1/transactions/%s/ops" % begun["gtid"]
        status, body = call({"ops": ops}, calls)
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"), body)
        self.assertIn("at most 64 shards", body["error"]["message"])

    def test_older_segments_go_only_once_the_checkpoint_they_go_for_is_on_disk(self):
        """At start, the segments older than the newest one that opens with a checkpoint are
        deleted. That checkpoint may still be only in the page cache (a kill -9 between its
        write and its fdatasync): deleted first, a power loss then lost the COMMIT records
        only the older segments held. The reader now flushes it before it deletes them."""
        self.assertEqual(self.c.stop_coordinator(), 0)
        self.addCleanup(self.c.start_coordinator)
        [old] = sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))
        with open(old, "rb") as f:
            kept = f.read()
        self.c.start_coordinator()  # a new segment opening with a checkpoint; the old one goes
        self.assertEqual(self.c.stop_coordinator(), 0)
        [ckpt] = sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))
        self.assertNotEqual(ckpt, old)
        with open(old, "wb") as f:  # as if the process died before it deleted the old one
            f.write(kept)
        trace = os.path.join(self.c.dir, "start.strace")
        p = subprocess.Popen(["strace", "-f", "-y", "-o", trace, "-e",
                              "trace=fdatasync,fsync,unlink,unlinkat"] + self.c._coord_cmd(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.wait_for(lambda: not os.path.exists(old), timeout=20,
                          what="the start to delete the older segment")
        finally:  # strace passes no signal on: the coordinator, its child, is stopped itself
            with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGTERM)
            p.wait(30)
        with open(trace) as f:
            calls = f.read().splitlines()
        deleted = [i for i, c in enumerate(calls) if "unlink" in c and old in c]
        flushed = [i for i, c in enumerate(calls)
                   if ("fdatasync(" in c or "fsync(" in c) and "<%s>" % ckpt in c]
        self.assertTrue(deleted, calls)
        self.assertTrue(flushed and flushed[0] < deleted[0],
                        "the checkpoint segment was not flushed before the older one went: %s"
                        % [calls[i] for i in sorted(deleted + flushed)])

    def test_second_coordinator_on_a_taken_port_exits_1(self):
        path = self.write_json("dup-coord.json", {
            "node_id": "c2", "listen": "127.0.0.1:%d" % self.c.coord_port,
            "log_dir": os.path.join(self.c.dir, "dup-log"),
            "shards": [{"name": "s1", "url": "http://127.0.0.1:2"}]})
        r = self.run_bin("dtx-coordinator", "--config", path)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("could not listen", r.stderr)

    def test_sigterm_stops_both_daemons_with_status_0(self):
        self.assertEqual(self.c.stop_participant(1), 0)
        self.c.start_participant(1)
        self.assertEqual(self.c.stop_coordinator(), 0)
        self.c.start_coordinator()
        status, body = self.c.tx([{"shard": "s1", "sql": "SELECT 1"},
                                  {"shard": "s2", "sql": "SELECT 2"}])
        self.assertEqual(status, 200, body)


class NoPreparedTransactionsTest(ClusterTest):
    SHARDS = 1

    def test_participant_refuses_max_prepared_transactions_0_and_says_how_to_fix(self):
        self.c.stop_participant(0)
        self.c.psql(0, "ALTER SYSTEM SET max_prepared_transactions = 0")
        self.c.pg_stop(0)
        self.c.pg_start(0)
        try:
            sh = self.c.shards[0]
            cfg = os.path.join(sh.dir, "participant.json")
            r = subprocess.run([os.path.join(self.c.bindir, "dtx-participant"), "--config", cfg],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("max_prepared_transactions = 0", r.stderr)
            self.assertIn("postgresql.conf", r.stderr)
        finally:
            self.c.psql(0, "ALTER SYSTEM RESET max_prepared_transactions")
            self.c.pg_stop(0)
            self.c.pg_start(0)
            self.c.start_participant(0)
