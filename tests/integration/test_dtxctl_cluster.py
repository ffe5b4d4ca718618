"""dtxctl against several coordinators (docs/operations.md, "dtxctl"): two nodes, c1
and c2, serving the same shards, and a standby of c1 on the same postgres decision
store. Given every coordinator's URL, status shows each process with its role, in-doubt
and list merge what every node answers with the owning node beside each transaction,
and the commands on one transaction go to the node that issued its gtid. A coordinator
that is down is reported, not fatal, unless none answers.

The participants' own periodic recovery is slowed to once an hour here, so that what
happens to a prepared branch is dtxctl's doing."""

import json
import os
import subprocess

from harness import ClusterTest

TOKENS = {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}
CLIENT = {"Authorization": "Bearer cli"}
ADMIN = {"Authorization": "Bearer adm"}
C1, C2, C1_STANDBY = 0, 1, 2  # indexes of the coordinator processes


class DtxctlClusterTest(ClusterTest):

    SHARDS = 2
    COORDINATORS = ["c1", "c2", "c1"]
    STORE = "postgres"
    COORD = {"auth": TOKENS}
    AGENT = {"auth": {"peer_token": "peer"}, "recovery_interval_ms": 3600000,
             "recovery_min_age_ms": 3600000}
    ACCT = iter(range(1, 100))

    def setUp(self):
        self.acct = next(DtxctlClusterTest.ACCT)
        for co in self.c.coords:
            if not co.proc.alive():
                self.c.start_coordinator(i=co.i)
        self.assertEqual(self.c.wait_active("c1"), C1)
        self.assertEqual(self.c.wait_active("c2"), C2)

    # ---- helpers ---------------------------------------------------------------

    def ctl(self, *args, coordinators=None, json_out=False, env=None):
        """Runs dtxctl with every coordinator (c1 and c2 comma-separated, the standby in a
        second --coordinator); returns (exit status, stdout, stderr), stdout parsed with
        --json."""
        if coordinators is None:
            coordinators = ["%s,%s" % (self.c.url(C1), self.c.url(C2)), self.c.url(C1_STANDBY)]
        cmd = [os.path.join(self.c.bindir, "dtxctl"), "--token", "adm"]
        for url in coordinators:
            cmd += ["--coordinator", url]
        if json_out:
            cmd.append("--json")
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, **(env or {})))
        out = r.stdout
        if json_out and out.strip():
            out = json.loads(out)
        return r.returncode, out, r.stderr

    def aborted_gtid(self, i):
        """A gtid coordinator i issued and aborted: it knows the decision, abort."""
        status, body = self.c.request("POST", "/v1/transactions", {"interactive": True},
                                      headers=CLIENT, coord=i)
        self.assertEqual(status, 201, body)
        status, ans = self.c.request("POST", "/v1/transactions/%s/abort" % body["gtid"], {},
                                     headers=CLIENT, coord=i)
        self.assertEqual(status, 200, ans)
        return body["gtid"]

    def prepare_by_hand(self, shard, gtid):
        """A prepared branch of gtid made without dtx (what a lost phase 2 leaves behind)."""
        return super().prepare_by_hand(shard, "dtx:%s:%s" % (gtid, self.c.shards[shard].name),
                                       self.acct)

    def transfer(self, i):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
                "params": [self.acct], "expect_rows": 1}]
        status, body = self.c.request("POST", "/v1/transactions", {"ops": ops}, headers=CLIENT,
                                      coord=i)
        self.assertEqual(status, 200, body)
        return body["gtid"]

    # ---- tests -----------------------------------------------------------------

    def test_status_shows_every_coordinator_with_its_role_and_the_cluster(self):
        rc, st, err = self.ctl("status", json_out=True)
        self.assertEqual(rc, 0, err)
        self.assertEqual([(c["url"], c["node"], c["role"], c["asked"])
                          for c in st["coordinators"]],
                         [(self.c.url(C1), "c1", "active", True),
                          (self.c.url(C2), "c2", "active", True),
                          (self.c.url(C1_STANDBY), "c1", "standby", False)])
        self.assertEqual(st["coordinators"][1]["status"]["coordinator"]["node_id"], "c2")
        self.assertEqual((st["cluster"]["nodes"], st["cluster"]["active"],
                          st["cluster"]["standby"], st["cluster"]["unreachable"]),
                         (["c1", "c2"], 2, 1, 0))
        self.assertEqual(sorted((s["name"], s["reachable"], s["seen_by"]) for s in st["shards"]),
                         [("s1", True, ["c1", "c2"]), ("s2", True, ["c1", "c2"])])

        rc, text, _ = self.ctl("status")
        self.assertEqual(rc, 0, text)
        self.assertRegex(text, r"c1 +active +%s \(epoch \d+\): ok" % self.c.url(C1))
        self.assertRegex(text, r"c2 +active +%s \(epoch \d+\): ok" % self.c.url(C2))
        self.assertRegex(text, r"c1 +standby +%s" % self.c.url(C1_STANDBY))
        self.assertIn("cluster: 2 node(s), coordinator processes: 2 active, 1 standby, "
                      "0 unreachable", text)

        # the same from $DTX_COORDINATOR, comma-separated, and NODE=URL accepted
        rc, st, err = self.ctl("status", coordinators=[], json_out=True,
                               env={"DTX_COORDINATOR": "c1=%s, %s" % (self.c.url(C1),
                                                                      self.c.url(C2))})
        self.assertEqual(rc, 0, err)
        self.assertEqual([c["node"] for c in st["coordinators"]], ["c1", "c2"])

    def test_a_killed_coordinator_is_shown_unreachable_and_the_others_still_answer(self):
        gtid1 = self.transfer(C1)
        self.c.kill_coordinator(C2)
        rc, text, _ = self.ctl("status")
        self.assertEqual(rc, 1, "a coordinator down is a problem reported")
        # its URL alone does not say which node it is: "?"
        self.assertRegex(text, r"\? +unreachable +%s: cannot reach the coordinator" %
                         self.c.url(C2))
        self.assertRegex(text, r"c1 +active +%s \(epoch \d+\): ok" % self.c.url(C1))
        self.assertIn("1 unreachable", text)
        # the URL alone, c2 is not named until it answers; NODE=URL names it
        rc, st, _ = self.ctl("status", json_out=True,
                             coordinators=[self.c.url(C1), "c2=" + self.c.url(C2)])
        self.assertEqual(rc, 1)
        self.assertEqual([(c["node"], c["role"]) for c in st["coordinators"]],
                         [("c1", "active"), ("c2", "unreachable")])
        self.assertIn("cannot reach", st["coordinators"][1]["error"])

        rc, lst, _ = self.ctl("list", json_out=True)
        self.assertEqual(rc, 1)
        self.assertIn((gtid1, "c1"), [(t["gtid"], t["node"]) for t in lst["transactions"]])
        rc, text, _ = self.ctl("list")
        self.assertIn("did not answer, the transactions of its node are not listed", text)

        # a command on one of c2's transactions says it cannot reach c2, and asks nobody else
        rc, _, err = self.ctl("show", "c2-1-1")
        self.assertEqual(rc, 1)
        self.assertIn("c2-1-1 belongs to node 'c2', and no coordinator given is an active "
                      "one of it", err)

    def test_a_standby_that_took_over_is_the_one_asked_for_its_node(self):
        g1 = self.aborted_gtid(C1)
        gid = self.prepare_by_hand(1, g1)
        self.c.kill_coordinator(C1)
        self.addCleanup(self.give_c1_back)
        self.assertEqual(self.c.wait_active("c1", timeout=20), C1_STANDBY)
        rc, doubt, _ = self.ctl("in-doubt", json_out=True)
        self.assertEqual(rc, 1)
        self.assertEqual([(c["node"], c["role"], c["asked"]) for c in doubt["coordinators"]],
                         [("", "unreachable", False), ("c2", "active", True),
                          ("c1", "active", True)])
        [b] = [b for b in doubt["branches"] if b["gid"] == gid]
        self.assertEqual((b["node"], b["decision"], "foreign" in b), ("c1", "abort", False),
                         "the new active of c1 reads c1's decisions from the store")
        rc, text, _ = self.ctl("in-doubt")
        self.assertIn("coordinator %s (node ?) did not answer" % self.c.url(C1), text)
        rc, text, err = self.ctl("resolve", g1, "--abort", "--reason", "after the takeover")
        self.assertEqual(rc, 0, err)
        self.assertNotIn(gid, self.c.prepared(1))

    def give_c1_back(self):
        """Makes process C1 node c1's active again and C1_STANDBY its standby."""
        if not self.c.coords[C1].proc.alive():
            self.c.start_coordinator(i=C1)
        self.c.kill_coordinator(C1_STANDBY)
        self.assertEqual(self.c.wait_active("c1", timeout=20), C1)
        self.c.start_coordinator(i=C1_STANDBY)

    def test_in_doubt_merges_both_nodes_with_the_owner_and_its_decision(self):
        g1, g2 = self.aborted_gtid(C1), self.aborted_gtid(C2)
        gid1, gid2 = self.prepare_by_hand(0, g1), self.prepare_by_hand(1, g2)
        rc, doubt, err = self.ctl("in-doubt", json_out=True)
        self.assertEqual(rc, 1, "branches in doubt are a problem reported")
        mine = {b["gid"]: b for b in doubt["branches"] if b["gid"] in (gid1, gid2)}
        self.assertEqual(len([b for b in doubt["branches"] if b["gid"] == gid1]), 1,
                         "a branch both coordinators see is listed once")
        # each branch as its owner sees it: the owner has the decision, the other only
        # says it is foreign
        self.assertEqual((mine[gid1]["node"], mine[gid1]["decision"], mine[gid1]["shard"],
                          "foreign" in mine[gid1], sorted(mine[gid1]["seen_by"])),
                         ("c1", "abort", "s1", False, ["c1", "c2"]))
        self.assertEqual((mine[gid2]["node"], mine[gid2]["decision"], mine[gid2]["shard"],
                          "foreign" in mine[gid2], sorted(mine[gid2]["seen_by"])),
                         ("c2", "abort", "s2", False, ["c1", "c2"]))
        self.assertEqual(sorted(s["name"] for s in doubt["shards"]), ["s1", "s2"])

        rc, text, _ = self.ctl("in-doubt")
        self.assertRegex(text, r"s1 +%s +c1 +\S+ +abort " % gid1)
        self.assertRegex(text, r"s2 +%s +c2 +\S+ +abort " % gid2)
        self.assertNotIn("FOREIGN", text)

        # one coordinator alone sees c2's branch as foreign: that is what the merge replaces
        rc, one, _ = self.ctl("in-doubt", coordinators=[self.c.url(C1)], json_out=True)
        [b] = [b for b in one["branches"] if b["gid"] == gid2]
        self.assertEqual((b["decision"], b.get("foreign")), ("none", True))
        self.assertNotIn("coordinators", one, "one coordinator: the answer as it was")

        # recover sends each branch to its owner, which rolls it back
        rc, text, err = self.ctl("recover")
        self.assertEqual(rc, 0, text + err)
        self.assertRegex(text, r"%s +s1 +rolled back" % gid1)
        self.assertRegex(text, r"%s +s2 +rolled back" % gid2)
        self.assertEqual((self.c.prepared(0), self.c.prepared(1)), ([], []))

    def test_list_merges_both_nodes_with_the_owner_beside_each(self):
        g1, g2 = self.transfer(C1), self.transfer(C2)
        rc, lst, err = self.ctl("list", json_out=True)
        self.assertEqual(rc, 0, err)
        got = {t["gtid"]: t["node"] for t in lst["transactions"]}
        self.assertEqual((got.get(g1), got.get(g2)), ("c1", "c2"))
        self.assertEqual(len(got), len(lst["transactions"]), "each transaction once")
        self.assertEqual([(c["node"], c["role"]) for c in lst["coordinators"]],
                         [("c1", "active"), ("c2", "active"), ("c1", "standby")])
        rc, text, _ = self.ctl("list", "--status", "committed")
        self.assertEqual(rc, 0)
        self.assertRegex(text, r"GTID +NODE +STATUS")
        self.assertRegex(text, r"%s +c1 +committed " % g1)
        self.assertRegex(text, r"%s +c2 +committed " % g2)

    def test_resolve_and_show_go_to_the_node_that_issued_the_gtid(self):
        g2 = self.aborted_gtid(C2)
        gid = self.prepare_by_hand(0, g2)
        rc, res, err = self.ctl("resolve", g2, "--abort", "--reason", "cluster test",
                                "--operator", "bob", json_out=True)
        self.assertEqual(rc, 0, err)
        self.assertNotIn(gid, self.c.prepared(0))
        # c2 recorded it; c1 never heard of the transaction
        status, body = self.c.request("GET", "/v1/transactions/%s" % g2, headers=ADMIN,
                                      coord=C2)
        self.assertEqual(status, 200, body)
        self.assertEqual([n["operator"] for n in body.get("operator", [])], ["bob"])
        status, body = self.c.request("GET", "/v1/transactions/%s" % g2, headers=ADMIN,
                                      coord=C1)
        self.assertEqual(status, 404, body)
        rc, show, err = self.ctl("show", g2, json_out=True)
        self.assertEqual((rc, show["gtid"], show["status"]), (0, g2, "aborted"), err)

        # a node none of the URLs belongs to: said, nothing sent
        rc, _, err = self.ctl("resolve", "c9-1-1", "--abort", "--reason", "x")
        self.assertEqual(rc, 1)
        self.assertIn("c9-1-1 belongs to node 'c9', and no coordinator given is an active one "
                      "of it (give its URL with --coordinator", err)
        rc, _, err = self.ctl("show", "not-a-gtid")
        self.assertEqual(rc, 2)
        self.assertIn("'not-a-gtid' is not a gtid", err)

    def test_no_coordinator_answering_is_an_error(self):
        rc, out, err = self.ctl("in-doubt", coordinators=["http://127.0.0.1:1",
                                                          "http://127.0.0.1:2"])
        self.assertEqual((rc, out), (1, ""))
        self.assertIn("no coordinator answered", err)
        self.assertIn("http://127.0.0.1:2 (?): cannot reach the coordinator", err)
        rc, _, err = self.ctl("status", coordinators=["c1=http://127.0.0.1:1,"])
        self.assertEqual(rc, 1, "one URL: the single-coordinator status, as before")
        self.assertIn("cannot reach the coordinator at http://127.0.0.1:1", err)
        # a participant's URL given by mistake is no coordinator
        rc, st, _ = self.ctl("status", json_out=True,
                             coordinators=[self.c.url(C1), self.c.agent_url(0)])
        self.assertEqual(rc, 1)
        self.assertEqual(st["coordinators"][1]["role"], "unreachable")
        self.assertIn("names no node_id: not a dtx coordinator", st["coordinators"][1]["error"])
        rc, _, err = self.ctl("status", coordinators=["9 x=http://127.0.0.1:1"])
        self.assertEqual(rc, 2)
        self.assertIn("is not a node name", err)
