"""dtxctl against a real cluster: status, list, show, in-doubt, recover,
resolve, forget and log dump/verify; orphans, a shard that is down,
heuristic decisions and their refusals, and recover run under load.

The participants' own periodic recovery is slowed to once an hour here, so
that what happens to a prepared branch is dtxctl's doing."""

import json
import os
import pwd
import random
import shutil
import subprocess
import threading
import time

from harness import ClusterTest

TOKENS = {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}
CLIENT = {"Authorization": "Bearer cli"}


class DtxctlTest(ClusterTest):

    COORD = {"auth": TOKENS, "commit_wait_ms": 1000}
    AGENT = {"auth": {"peer_token": "peer"}, "recovery_interval_ms": 3600000,
             "recovery_min_age_ms": 3600000}
    ACCT = iter(range(1, 100))

    def setUp(self):
        self.acct = next(DtxctlTest.ACCT)

    # ---- helpers ---------------------------------------------------------------

    def ctl(self, *args, token="adm", json_out=False):
        """Runs dtxctl; returns (exit status, stdout, stderr), stdout parsed with --json."""
        cmd = [os.path.join(self.c.bindir, "dtxctl"), "--coordinator", self.c.url()]
        if token:
            cmd += ["--token", token]
        if json_out:
            cmd.append("--json")
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120)
        out = r.stdout
        if json_out and out.strip():
            out = json.loads(out)
        return r.returncode, out, r.stderr

    def transfer(self, amount=5, timeout=30):
        ops = [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
             "params": [amount, self.acct], "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
             "params": [amount, self.acct], "expect_rows": 1},
        ]
        try:
            return self.c.request("POST", "/v1/transactions", {"ops": ops}, headers=CLIENT,
                                  timeout=timeout)
        except OSError as e:
            return None, e

    def restart_coordinator(self, env=None, shards_up=True):
        """Restarts the coordinator; without shards_up, returns once it answers even if a
        shard it cannot reach (a participant whose database is down) is still down."""
        if self.c.coordinator.alive():
            self.c.stop_coordinator()
        self.c.start_coordinator(env=env, wait=False)
        self.c.wait_healthy(shards_up=shards_up)

    def logged_commits(self):
        """gtids of the COMMIT records in the decision log, read as `dtxctl log dump` reads
        it (also while the coordinator writes it: an incomplete last frame is not listed)."""
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0, dump)
        return [e["gtid"] for e in dump["entries"] if e["type"] == "COMMIT"]

    def balances(self):
        return [self.balance(i, self.acct) for i in range(3)]

    # ---- status, list, show -------------------------------------------------------

    def test_status_shows_the_coordinator_its_log_and_every_shard(self):
        rc, st, _ = self.ctl("status", json_out=True)
        self.assertEqual(rc, 0, st)
        co = st["coordinator"]
        self.assertEqual((co["status"], co["node_id"]), ("ok", "c1"))
        self.assertGreater(co["log"]["bytes_on_disk"], 32)
        self.assertTrue(32 < co["log"]["bytes_used"] <= co["log"]["bytes_on_disk"], co["log"])
        self.assertGreaterEqual(co["log"]["segments"], 1)
        self.assertIn("last_checkpoint_at", co["log"])
        self.assertEqual([s["name"] for s in st["shards"]], ["s1", "s2", "s3"])
        for s in st["shards"]:
            self.assertTrue(s["reachable"], s)
            self.assertEqual(s["max_prepared_transactions"], 100)
            self.assertEqual(s["headroom"], 100 - s["prepared_total"])
        rc, text, _ = self.ctl("status")
        self.assertEqual(rc, 0)
        self.assertIn("HEADROOM", text)
        self.assertIn("s3", text)

        self.c.stop_participant(2)
        try:
            rc, st, _ = self.ctl("status", json_out=True)
            self.assertEqual(rc, 1, "an unreachable shard is a problem")
            s3 = st["shards"][2]
            self.assertFalse(s3["reachable"])
            self.assertTrue(s3["error"])
        finally:
            self.c.start_participant(2)
            self.c.wait_healthy()

    def test_admin_endpoints_need_the_admin_token(self):
        rc, _, err = self.ctl("status", token="cli")
        self.assertEqual(rc, 1)
        self.assertIn("403", err)
        rc, _, err = self.ctl("in-doubt", token=None)
        self.assertEqual(rc, 1)
        self.assertIn("401", err)

    def bare_ctl(self, *args, env=None):
        """dtxctl with only what args and env give it (no token from the test's environment)."""
        full = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
        full.update(env or {})
        return subprocess.run([os.path.join(self.c.bindir, "dtxctl"), "--coordinator",
                               self.c.url()] + list(args),
                              capture_output=True, text=True, timeout=60, env=full)

    def token_file(self, name, text, mode=0o600):
        path = os.path.join(self.c.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def test_the_admin_token_from_a_file_or_the_environment(self):
        adm = self.token_file("adm.token", "adm\n")
        for args, env in ((["--token-file", adm], None), ([], {"DTX_ADMIN_TOKEN": "adm"}),
                          ([], {"DTX_TOKEN": "adm"}),
                          ([], {"DTX_TOKEN": "adm", "DTX_ADMIN_TOKEN": "adm"}),
                          (["--token", "adm"], {"DTX_TOKEN": "x", "DTX_ADMIN_TOKEN": "y"})):
            r = self.bare_ctl("list", "--json", *args, env=env)
            self.assertEqual(r.returncode, 0, (args, env, r.stderr))
            self.assertIn("transactions", json.loads(r.stdout))
        r = self.bare_ctl("list", env={"DTX_ADMIN_TOKEN": "cli"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("403", r.stderr)

    def test_token_options_refused_with_a_usage_error(self):
        world = self.token_file("world.token", "adm", 0o644)
        empty = self.token_file("empty.token", "")
        cases = [(["--token-file", world], None, "readable by every user"),
                 (["--token-file", empty], None, "is empty"),
                 (["--token-file", "/nonexistent"], None, "could not open '/nonexistent'"),
                 (["--token", "adm", "--token-file", empty], None, "exclude each other"),
                 (["--token", "a\r\nX-Evil: 1"], None, "--token holds a space, a control"),
                 ([], {"DTX_TOKEN": "adm", "DTX_ADMIN_TOKEN": "other"},
                  "$DTX_TOKEN and $DTX_ADMIN_TOKEN give two different tokens")]
        for args, env, wanted in cases:
            r = self.bare_ctl("status", *args, env=env)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(wanted, r.stderr)

    def test_in_doubt_asks_a_participant_with_the_peer_token_from_a_file(self):
        peer = self.token_file("peer.token", "peer\n")
        url = "http://127.0.0.1:%d" % self.c.shards[0].agent_port
        r = self.bare_ctl("in-doubt", "--json", "--participant", url, "--peer-token-file", peer)
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertEqual([s["reachable"] for s in json.loads(r.stdout)["shards"]], [True])

    def test_list_and_show_a_committed_transaction(self):
        status, body = self.transfer()
        self.assertEqual(status, 200, body)
        gtid = body["gtid"]
        rc, lst, _ = self.ctl("list", "--status", "committed", json_out=True)
        self.assertEqual(rc, 0)
        self.assertIn(gtid, [t["gtid"] for t in lst["transactions"]])
        rc, lst, _ = self.ctl("list", "--status", "committed", "--older-than", "1h",
                              json_out=True)
        self.assertNotIn(gtid, [t["gtid"] for t in lst["transactions"]])
        rc, show, _ = self.ctl("show", gtid, json_out=True)
        self.assertEqual(rc, 0)
        self.assertEqual(show["status"], "committed")
        self.assertIn("decided_at", show)
        self.assertEqual([(s["name"], s["state"], s["phase2_sends"]) for s in show["shards"]],
                         [("s1", "committed", 1), ("s2", "committed", 1)])
        rc, text, _ = self.ctl("show", gtid)
        self.assertIn("decided", text)
        rc, _, err = self.ctl("show", "c1-999-1")
        self.assertEqual(rc, 1)
        self.assertIn("404", err)

    def test_gtids_are_checked_before_anything_is_recorded(self):
        rc, _, err = self.ctl("resolve", "bad_gtid", "--commit", "--reason", "x")
        self.assertEqual(rc, 1)
        self.assertIn("is not a gtid", err)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0, dump)
        self.assertIn("entries", dump)
        self.assertNotIn("bad_gtid", json.dumps(dump))

    def test_options_stand_before_or_after_the_command(self):
        bare = [os.path.join(self.c.bindir, "dtxctl")]
        for args in (["status", "--json", "--coordinator", self.c.url(), "--token", "adm"],
                     ["--json", "status", "--coordinator", self.c.url(), "--token", "adm"],
                     ["--coordinator", self.c.url(), "status", "--token", "adm", "--json"]):
            r = subprocess.run(bare + args, capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 0, (args, r.stderr))
            self.assertEqual(json.loads(r.stdout)["coordinator"]["node_id"], "c1")
        rc, _, err = self.ctl("status", "--shard", "s1")
        self.assertEqual(rc, 2)
        self.assertIn("status does not take --shard", err)
        # also where getopt would stop at the first non-option (POSIXLY_CORRECT)
        r = self.bare_ctl("status", "--json", "--token", "adm", env={"POSIXLY_CORRECT": "1"})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["coordinator"]["node_id"], "c1")

    def test_a_url_ending_in_a_slash_names_the_same_server(self):
        # "http://host:port/" joined with "/v1/..." asked for "//v1/...": 404, exit 1
        bare = [os.path.join(self.c.bindir, "dtxctl")]
        r = subprocess.run(bare + ["--coordinator", self.c.url() + "/", "--token", "adm",
                                   "status", "--json"], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["coordinator"]["node_id"], "c1")
        sh = self.c.shards[0]
        r = subprocess.run(bare + ["in-doubt", "--json", "--participant",
                                   "http://127.0.0.1:%d//" % sh.agent_port],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, DTX_PEER_TOKEN="peer"))
        self.assertEqual(r.returncode, 0, (r.stdout, r.stderr))
        self.assertEqual([s["reachable"] for s in json.loads(r.stdout)["shards"]], [True])

    def test_every_program_prints_its_version(self):
        for prog in ("dtxctl", "dtx-coordinator", "dtx-participant"):
            r = subprocess.run([os.path.join(self.c.bindir, prog), "--version"],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertRegex(r.stdout, r"^%s \d+\.\d+\.\d+\n$" % prog)

    def test_the_operator_is_the_os_user_and_a_crlf_in_a_reason_forges_no_log_line(self):
        status, body = self.transfer()
        self.assertEqual(status, 200, body)
        env = {k: v for k, v in os.environ.items() if k not in ("USER", "SUDO_USER", "LOGNAME")}
        cmd = [os.path.join(self.c.bindir, "dtxctl"), "--coordinator", self.c.url(), "--token",
               "adm", "resolve", body["gtid"], "--commit", "--json", "--reason",
               "ok\r\n2026-11-30T00:00:00.000Z dtx-coordinator[1] INFO  forged"]
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        rc, show, _ = self.ctl("show", body["gtid"], json_out=True)
        who = show["operator"][0]["operator"]
        self.assertEqual(who.split("@")[0], pwd.getpwuid(os.geteuid()).pw_name, who)
        self.assertNotEqual(who.split("@")[1], "unknown")
        log = self.c.coordinator.log_text()
        self.assertNotIn("\n2026-11-30T00:00:00.000Z dtx-coordinator[1] INFO  forged", log)
        self.assertIn("ok\\r\\n2026-11-30T00:00:00.000Z dtx-coordinator[1] INFO  forged", log)

    def test_in_doubt_asks_the_participants_when_the_coordinator_is_down(self):
        before = self.balances()
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.before_log=crash"})
        status, _ = self.transfer()
        self.assertIsNone(status)
        self.c.coordinator.wait(10)
        parts = []
        for sh in self.c.shards:
            parts += ["--participant", "http://127.0.0.1:%d" % sh.agent_port]
        try:
            cmd = [os.path.join(self.c.bindir, "dtxctl"), "in-doubt", "--json"] + parts
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                               env=dict(os.environ, DTX_PEER_TOKEN="peer"))
            self.assertEqual(r.returncode, 1, r.stderr)
            out = json.loads(r.stdout)
            self.assertFalse(out["coordinator_asked"])
            self.assertEqual(sorted(b["shard"] for b in out["branches"]), ["s1", "s2"])
            self.assertEqual({b["decision"] for b in out["branches"]}, {"unknown"})
            self.assertEqual([s["reachable"] for s in out["shards"]], [True] * len(parts[1::2]))
            # without the peer token the participants refuse, and dtxctl says so
            r = subprocess.run(cmd[:-len(parts)] + parts, capture_output=True, text=True,
                               timeout=60, env={"PATH": os.environ["PATH"]})
            self.assertEqual(r.returncode, 1)
            self.assertIn("peer token", json.dumps(json.loads(r.stdout)["shards"]))
        finally:
            self.restart_coordinator()
            self.ctl("recover")
        self.assert_no_prepared(timeout=10)
        self.assertEqual(self.balances(), before)

    def test_usage_errors_exit_2(self):
        for args in (["resolve", "c1-1-1", "--commit"],            # no --reason
                     ["resolve", "c1-1-1", "--reason", "x"],        # no decision
                     ["resolve", "c1-1-1", "--commit", "--abort", "--reason", "x"],
                     ["forget", "c1-1-1", "--reason", "x"],         # no --shard
                     ["list", "--status", "nonsense"],
                     ["list", "--older-than", "soon"],
                     ["log", "dump"],
                     ["frobnicate"], []):
            rc, _, err = self.ctl(*args)
            self.assertEqual(rc, 2, (args, err))
            self.assertIn("dtxctl", err)
        # a value no server could take is the command line's fault, not the server's
        rc, _, err = self.ctl("list", "--older-than", "5e15")
        self.assertEqual(rc, 2, err)
        rc, _, err = self.ctl("resolve", "c1-1-1", "--commit", "--reason", "x", "--operator", "")
        self.assertEqual(rc, 2, err)
        self.assertIn("--operator", err)
        for url in ("ftp://x", "not a url"):
            r = subprocess.run([os.path.join(self.c.bindir, "dtxctl"), "--coordinator", url,
                                "status"], capture_output=True, text=True, timeout=60)
            self.assertEqual(r.returncode, 2, (url, r.stderr))
            self.assertIn("--coordinator", r.stderr)
        # nor does the coordinator record a decision by nobody
        status, body = self.c.request("POST", "/v1/admin/transactions/c1-1-1/resolve",
                                      {"decision": "abort", "operator": "", "reason": "x"},
                                      headers={"Authorization": "Bearer adm"})
        self.assertEqual(status, 400, body)
        self.assertIn("operator", body["error"]["message"])

    def test_show_sends_a_gtid_as_one_path_segment(self):
        """show pasted its argument into the URL: '../admin/status' asked for the admin status
        and printed it as an empty transaction, exit 0; '?' and '#' cut the gtid short."""
        for gtid in ("../admin/status", "c1-1-1?x=1", "c1-1-1#frag"):
            rc, out, err = self.ctl("show", gtid)
            self.assertEqual(rc, 1, (gtid, out, err))
            self.assertNotIn("transaction :", out)

    # ---- orphans and in-doubt ----------------------------------------------------

    def test_another_coordinators_branch_is_left_alone_until_an_operator_names_it(self):
        before = self.balances()
        self.prepare_by_hand(0, "dtx:zz9-1-1:s1", self.acct)
        self.prepare_by_hand(1, "not-dtx-%d" % self.acct, self.acct)
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        self.assertEqual(rc, 1, "a branch in doubt is reported")
        [b] = [b for b in doubt["branches"] if b["gid"] == "dtx:zz9-1-1:s1"]
        self.assertEqual((b["decision"], b["shard"], b["owner"], b["foreign"]),
                         ("none", "s1", "zz9", True))
        self.assertIn({"locktype": "relation", "relation": "accounts",
                       "mode": "RowExclusiveLock"}, b["locks"])
        self.assertGreaterEqual(b["age_ms"], 0)
        self.assertNotIn("not-dtx-%d" % self.acct, [x["gid"] for x in doubt["branches"]])
        rc, text, _ = self.ctl("in-doubt")
        self.assertIn("FOREIGN", text)
        self.assertIn("accounts RowExclusiveLock", text)

        # recover never presumes another coordinator's transaction aborted
        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 1, "a branch that needs an operator is a problem reported")
        self.assertRegex(text, r"\[\d+/\d+\] dtx:zz9-1-1:s1 +s1 +left alone: it belongs to "
                               r"coordinator 'zz9'")
        self.assertIn("1 need an operator", text)
        self.assertEqual(self.c.prepared(0), ["dtx:zz9-1-1:s1"])
        status, body = self.c.request("POST", "/v1/admin/recover",
                                      {"gtid": "zz9-1-1", "shard": "s1"},
                                      headers={"Authorization": "Bearer adm"})
        self.assertEqual(status, 409, body)
        self.assertIn("coordinator 'zz9'", body["error"]["message"])
        self.assertEqual(self.c.prepared(0), ["dtx:zz9-1-1:s1"])

        # named explicitly by an operator, it is rolled back, and recorded
        rc, text, err = self.ctl("resolve", "zz9-1-1", "--abort", "--shard", "s1",
                                 "--reason", "zz9 was decommissioned in 2025")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.c.prepared(0), [])
        self.assertEqual(self.balances(), before)
        rc, _, err = self.ctl("resolve", "zz9-1-1", "--commit", "--shard", "s2",
                              "--reason", "x")
        self.assertEqual(rc, 1)
        self.assertIn("recorded as aborted by an operator", err)
        rows = self.c.psql(1, "SELECT gid FROM pg_prepared_xacts")
        self.assertEqual(rows, [["not-dtx-%d" % self.acct]], "dtx never touches other gids")

    def test_status_reports_an_orphan_as_a_problem(self):
        rc, out, _ = self.ctl("status", json_out=True)
        self.assertEqual((rc, out["orphans"]), (0, 0), out)
        self.prepare_by_hand(0, "dtx:zz7-1-%d:s1" % self.acct)
        rc, text, _ = self.ctl("status")
        self.assertEqual(rc, 1, text)
        self.assertIn("1 orphan(s)", text)

    def test_a_foreign_branch_resolved_while_its_shard_was_down_is_finished_by_recover(self):
        """resolve records the operator's decision and says the shard failed (exit 1, a
        problem it reports, where it said 0); once the shard is back, recover carries that
        decision out, where it left the branch alone as another coordinator's."""
        gtid = "zz8-1-%d" % self.acct
        self.prepare_by_hand(1, "dtx:%s:s2" % gtid, self.acct)
        before = self.balances()
        self.c.kill_participant(1)
        try:
            rc, text, err = self.ctl("resolve", gtid, "--abort", "--shard", "s2",
                                     "--reason", "zz8 was decommissioned")
            self.assertEqual(rc, 1, text + err)
            self.assertRegex(text + err, r"shard s2 +failed")
        finally:
            self.c.start_participant(1)
            self.c.wait_healthy()
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        [b] = [b for b in doubt["branches"] if b["gid"] == "dtx:%s:s2" % gtid]
        self.assertEqual(b["decision"], "abort")
        rc, text, err = self.ctl("recover")
        self.assertEqual(rc, 0, text + err)
        self.assertEqual(self.c.prepared(1), [])
        self.assertEqual(self.balances(), before)

    def test_decisions_about_gtids_not_issued_yet_are_refused(self):
        rc, st, _ = self.ctl("status", json_out=True)
        node, epoch = st["coordinator"]["node_id"], int(st["coordinator"]["epoch"])
        for gtid in ("%s-%d-999999" % (node, epoch), "%s-%d-1" % (node, epoch + 5)):
            rc, _, err = self.ctl("resolve", gtid, "--abort", "--reason", "typo")
            self.assertEqual(rc, 1, err)
            self.assertIn("never issued", err)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0, dump)
        self.assertIn("entries", dump)
        self.assertNotIn("-999999", json.dumps(dump))
        self.assertNotIn("%s-%d-1\"" % (node, epoch + 5), json.dumps(dump))
        # the gtid is issued later and commits, with no operator record against it
        status, body = self.transfer()
        self.assertEqual((status, body["status"]), (200, "committed"), body)

    def test_a_malformed_dtx_branch_is_listed_and_rolled_back_only_on_request(self):
        before = self.balances()
        self.prepare_by_hand(0, "dtx:orphan-test:s1", self.acct)
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        [b] = [b for b in doubt["branches"] if b["gid"] == "dtx:orphan-test:s1"]
        self.assertEqual((b["decision"], b["malformed"]), ("none", True))
        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, r"dtx:orphan-test:s1 +s1 +left alone: its gid holds no gtid")
        self.assertEqual(self.c.prepared(0), ["dtx:orphan-test:s1"])
        rc, text, err = self.ctl("recover", "--malformed", "--operator", "alice")
        self.assertEqual(rc, 0, text + err)
        self.assertRegex(text, r"dtx:orphan-test:s1 +s1 +rolled back")
        self.assertEqual(self.c.prepared(0), [])
        self.assertEqual(self.balances(), before)
        self.assertIn("operator 'alice': rolling back the malformed dtx branch "
                      "'dtx:orphan-test:s1'", self.c.coordinator.log_text())

    def test_stuck_on_a_down_shard_shown_in_doubt_then_finished_by_recover(self):
        before = self.balances()
        # The coordinator dies with both branches prepared and nothing decided.
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.before_log=crash"})
        status, _ = self.transfer()
        self.assertIsNone(status)
        self.c.coordinator.wait(10)
        self.assertEqual((len(self.c.prepared(0)), len(self.c.prepared(1))), (1, 1))
        gid_s2 = self.c.prepared(1)[0]
        self.c.pg_stop(1)  # and s2's database goes down
        try:
            self.restart_coordinator(shards_up=False)
            rc, doubt, _ = self.ctl("in-doubt", json_out=True)
            self.assertEqual(rc, 1)
            mine = [b for b in doubt["branches"] if b["shard"] == "s1"]
            self.assertEqual(len(mine), 1)
            self.assertEqual((mine[0]["decision"], mine[0]["orphan"]), ("abort", False))
            s2 = [s for s in doubt["shards"] if s["name"] == "s2"][0]
            self.assertFalse(s2["reachable"])
            self.assertIn("PostgreSQL", s2["error"])

            rc, text, _ = self.ctl("recover")
            self.assertEqual(rc, 1, "s2 could not be reached: " + text)
            self.assertIn("rolled back", text)
            self.assertIn("shard s2", text)
            self.assertEqual(self.c.prepared(0), [])
        finally:
            self.c.pg_start(1)
        self.wait_for(lambda: self.ctl("status")[0] == 0, what="s2 to be reachable again")
        self.assertEqual(self.c.prepared(1), [gid_s2], "s2's branch waited, prepared")
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        self.assertEqual([(b["gid"], b["decision"]) for b in doubt["branches"]],
                         [(gid_s2, "abort")])
        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 0, text)
        self.assert_no_prepared()
        self.assertEqual(self.balances(), before)

    # ---- operator decisions --------------------------------------------------------

    def test_heuristic_resolve_is_recorded_durably_and_a_contradiction_is_refused(self):
        before = self.balances()
        gtid = "zz8-1-%d" % self.acct
        self.prepare_by_hand(0, "dtx:%s:s1" % gtid, self.acct, -3)
        self.prepare_by_hand(1, "dtx:%s:s2" % gtid, self.acct, 3)
        rc, res, _ = self.ctl("resolve", gtid, "--commit", "--reason", "log of zz8 lost; s3 "
                              "shows it committed", "--operator", "alice", json_out=True)
        self.assertEqual(rc, 0, res)
        self.assertEqual((res["decision"], res["heuristic"]), ("commit", True))
        self.assertEqual(sorted((s["shard"], s["result"]) for s in res["shards"]),
                         [("s1", "committed"), ("s2", "committed"), ("s3", "not_prepared")])
        self.assertEqual(self.balances(), [before[0] - 3, before[1] + 3, before[2]])
        self.assert_no_prepared()

        rc, text, err = self.ctl("resolve", gtid, "--abort", "--reason", "changed my mind")
        self.assertEqual(rc, 1)
        self.assertIn("refused", err)
        self.assertIn("commit", err)
        rc, text, err = self.ctl("resolve", gtid, "--abort", "--shard", "s3", "--reason", "x")
        self.assertEqual(rc, 1, "one outcome on every shard, whichever shard is named")
        self.assertIn("refused", err)

        self.restart_coordinator()  # the decision is in the log, not just in memory
        rc, show, _ = self.ctl("show", gtid, json_out=True)
        self.assertEqual(rc, 0)
        self.assertEqual((show["status"], show["heuristic"], show["decided_by"]),
                         ("committed", "commit", "operator"))
        [note] = show["operator"]
        self.assertEqual((note["action"], note["decision"], note["operator"]),
                         ("resolve", "commit", "alice"))
        self.assertIn("log of zz8 lost", note["reason"])
        rc, lst, _ = self.ctl("list", json_out=True)
        self.assertIn(gtid, [t["gtid"] for t in lst["transactions"] if t.get("heuristic")])
        rc, text, _ = self.ctl("show", gtid)
        self.assertIn("HEURISTIC resolve commit by alice", text)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0)
        ops = [e for e in dump["entries"] if e["type"] == "OPERATOR" and e["gtid"] == gtid]
        self.assertEqual([(e["decision"], e["operator"]) for e in ops], [("commit", "alice")])

    def test_resolve_refuses_to_contradict_a_commit_record_or_presumed_abort(self):
        status, body = self.transfer()
        self.assertEqual(status, 200, body)
        rc, _, err = self.ctl("resolve", body["gtid"], "--abort", "--shard", "s2", "--reason", "x")
        self.assertEqual(rc, 1)
        self.assertIn("refused", err)
        self.assertIn("recorded as committed", err)
        # A gtid this coordinator issued that has no commit record is aborted (presumed abort).
        status, body = self.c.request("POST", "/v1/transactions", {"ops": [
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance WHERE id = 1"},
            {"shard": "s2", "sql": "SELECT no_such_column FROM accounts"}]}, headers=CLIENT)
        self.assertEqual(status, 409, body)
        rc, _, err = self.ctl("resolve", body["gtid"], "--commit", "--reason", "x")
        self.assertEqual(rc, 1)
        self.assertIn("recorded as aborted", err)

    def with_s2_lost_after_the_decision(self, then):
        """Runs then(before) with a transfer committed whose s2 branch stays prepared: its
        participant dies once the decision is durable. Puts everything back afterwards."""
        before = self.balances()
        # s2's vote leaves a second after its branch is prepared in PostgreSQL, as it may on
        # a loaded machine: s2's participant must die once the decision is durable, not once
        # the branch is prepared (before its vote, that aborts the transaction).
        self.c.restart("s2", env={"DTX_FAILPOINTS": "agent.prepared_before_vote=sleep(1000)"})
        self.restart_coordinator({"DTX_FAILPOINTS": "coord.after_durable=sleep(1500)"})
        try:
            then(before)
        finally:
            if not self.c.shards[1].agent.alive():
                self.c.start_participant(1)
            else:
                self.c.restart("s2")  # without the failpoints it was given
            self.restart_coordinator()

    def test_forget_a_shard_that_never_comes_back_then_it_does(self):
        self.with_s2_lost_after_the_decision(self.forget_then_return)

    def test_recover_and_resolve_say_unknown_when_the_database_cannot_tell(self):
        self.with_s2_lost_after_the_decision(self.unknown_then_committed)

    def unknown_then_committed(self, before):
        """A branch to commit whose fate its database cannot prove (gone from a database
        restored meanwhile: pg.finish_unproven stands in for that race) is reported as
        unknown, a heuristic hazard: never as a mismatch, never as finished."""
        gtid = self.forget_s2(before)
        self.c.start_participant(1, env={"DTX_FAILPOINTS": "pg.finish_unproven=error"})
        self.c.wait_healthy()

        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, r"UNKNOWN: shard s2's database cannot tell")
        self.assertNotIn("MISMATCH", text)
        status, body = self.c.request("POST", "/v1/admin/recover", {"gtid": gtid, "shard": "s2"},
                                      headers={"Authorization": "Bearer adm"})
        self.assertEqual(status, 502, body)
        [s2] = body["shards"]
        self.assertEqual((s2["shard"], s2["result"]), ("s2", "unknown"), body)
        self.assertIn("heuristic hazard", s2["error"])
        rc, text, _ = self.ctl("resolve", gtid, "--commit", "--shard", "s2", "--reason", "retry")
        self.assertEqual(rc, 1, text)
        self.assertRegex(text, r"shard s2 +unknown: .*heuristic hazard")
        self.assertEqual(len(self.c.prepared(1)), 1, "nothing was finished")

        self.c.restart("s2")
        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 0, text)
        self.assertIn("committed", text)
        self.assert_no_prepared()
        self.assertEqual(self.balances(), [before[0] - 5, before[1] + 5, before[2]])

    def forget_s2(self, before):
        """The transfer's s2 branch is lost after the decision, then forgotten by an
        operator: nobody resends it. Returns its gtid; s2's participant is down."""
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("a", self.transfer()))
        committed = self.logged_commits()
        t.start()
        # The coordinator sleeps 1.5 s once the decision is durable, before phase 2.
        self.wait_for(lambda: len(self.logged_commits()) > len(committed),
                      what="the commit decision to be durable")
        self.assertEqual(len(self.c.prepared(1)), 1)
        self.c.kill_participant(1)  # s2's participant dies with its branch prepared
        t.join()
        status, body = result["a"]
        self.assertEqual(status, 200, body)
        self.assertEqual(body["pending_shards"], ["s2"])
        gtid = body["gtid"]
        rc, show, _ = self.ctl("show", gtid, json_out=True)
        self.assertEqual(show["status"], "committing")
        s2 = [s for s in show["shards"] if s["name"] == "s2"][0]
        self.assertEqual(s2["state"], "lost")
        self.assertIn("s2", s2["last_error"])

        rc, _, err = self.ctl("forget", gtid, "--shard", "s1", "--reason", "x")
        self.assertEqual(rc, 1, "s1 has acknowledged: nothing to forget")
        self.assertIn("not waiting for shard 's1'", err)
        rc, text, _ = self.ctl("forget", gtid, "--shard", "s2", "--reason", "s2 burned down",
                               "--operator", "bob")
        self.assertEqual(rc, 0, text)
        self.assertIn("committed", text)
        rc, show, _ = self.ctl("show", gtid, json_out=True)
        self.assertEqual(show["status"], "committed")
        s2 = [s for s in show["shards"] if s["name"] == "s2"][0]
        self.assertTrue(s2["forgotten"])
        self.assertEqual(show["operator"][0]["action"], "forget")
        return gtid

    def forget_then_return(self, before):
        gtid = self.forget_s2(before)
        # s2 comes back after all: nobody resends to a forgotten shard, but its branch is
        # shown with the recorded decision and recover commits it.
        self.c.start_participant(1)
        self.c.wait_healthy()
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        self.assertEqual([(b["gtid"], b["decision"]) for b in doubt["branches"]],
                         [(gtid, "commit")])
        rc, text, _ = self.ctl("recover")
        self.assertEqual(rc, 0, text)
        self.assertIn("committed", text)
        self.assert_no_prepared()
        self.assertEqual(self.balances(), [before[0] - 5, before[1] + 5, before[2]])

    # ---- safety under load ------------------------------------------------------------

    def test_recover_under_load_touches_nothing_in_flight(self):
        total = self.total()
        stop = threading.Event()
        answers = []

        errors = []

        def worker(i):
            try:
                work(i)
            except Exception as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)

        def work(i):
            rnd = random.Random(i)
            while not stop.is_set():
                a, b = rnd.sample(range(1, 100), 2)
                src, dst = rnd.sample(["s1", "s2", "s3"], 2)
                status, body = self.c.request("POST", "/v1/transactions", {"ops": [
                    {"shard": src, "sql": "UPDATE accounts SET balance = balance - 1 "
                                          "WHERE id = $1", "params": [a]},
                    {"shard": dst, "sql": "UPDATE accounts SET balance = balance + 1 "
                                          "WHERE id = $1", "params": [b]}]}, headers=CLIENT)
                answers.append(status)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        try:
            runs = []
            end = time.time() + 6
            while time.time() < end:
                runs.append(self.ctl("recover", json_out=True))
        finally:
            stop.set()
            for t in threads:
                t.join()
        self.assertEqual(errors, [])
        self.assertGreater(len(answers), 100)
        self.assertEqual(set(answers) - {200, 409}, set(), "only commits and lock-conflict "
                         "aborts")
        for rc, out, err in runs:
            self.assertEqual((rc, out["failed"]), (0, 0), (out, err))
        results = [b["result"] for _, out, _ in runs for b in out["branches"]]
        self.assertTrue(any(r.startswith("skipped") for r in results),
                        "recover met transactions still in flight and left them alone: %s"
                        % results[:20])
        self.assert_no_prepared(timeout=10)
        self.assertEqual(self.total(), total)

    # ---- the decision log offline ------------------------------------------------------

    def test_log_verify_reports_a_corrupted_copy_with_file_and_offset(self):
        for _ in range(3):
            self.assertEqual(self.transfer()[0], 200)
        copy = os.path.join(self.c.dir, "log-copy-%d" % self.acct)
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.c.log_dir, copy)
        rc, text, _ = self.ctl("log", "verify", "--log-dir", copy)
        self.assertEqual(rc, 0, text)
        self.assertIn("ok", text)
        rc, dump, _ = self.ctl("log", "dump", "--log-dir", copy, json_out=True)
        self.assertIn("COMMIT", [e["type"] for e in dump["entries"]])
        rc, text, _ = self.ctl("log", "dump", "--log-dir", copy)
        self.assertRegex(text, r"COMMIT +c1-\d+-\d+ at ")

        seg = sorted(f for f in os.listdir(copy) if f.startswith("dlog-"))[-1]
        path = os.path.join(copy, seg)
        with open(path, "r+b") as f:
            f.seek(32 + 12)  # inside the first frame of the newest segment; more frames follow
            b = f.read(1)
            f.seek(32 + 12)
            f.write(bytes([b[0] ^ 0x40]))
        rc, text, _ = self.ctl("log", "verify", "--log-dir", copy)
        self.assertEqual(rc, 1, text)
        self.assertIn("CORRUPT", text)
        self.assertIn(seg, text)
        self.assertIn("offset 32", text)
        rc, out, _ = self.ctl("log", "verify", "--log-dir", copy, json_out=True)
        self.assertEqual((rc, out["ok"], out["error"]["code"]), (1, False, "corrupt_log"))
        rc, _, err = self.ctl("log", "verify", "--log-dir", os.path.join(copy, "nope"))
        self.assertEqual(rc, 1)
        self.assertIn("cannot read", err)
        empty = os.path.join(self.c.dir, "empty-%d" % self.acct)  # a mistyped directory
        os.makedirs(empty, exist_ok=True)
        rc, text, err = self.ctl("log", "verify", "--log-dir", empty)
        self.assertEqual(rc, 1, text + err)
        self.assertIn("no decision log", text + err)
        rc, text, _ = self.ctl("log", "verify", "--log-dir", self.c.log_dir)
        self.assertEqual(rc, 0, "the live log is still fine: " + text)
