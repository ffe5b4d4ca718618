"""What GET /metrics says, read strictly (tests/promtext.py) from both
daemons: every sample in a family with # HELP and # TYPE, no transaction
id as a label value, histograms cumulative and consistent with their
_count; and the numbers are right: after a known set of transactions (two
phases, one phase, aborted, three-phase commit) each one is counted once,
by outcome, in the duration histogram and in each phase it went through;
and the Grafana dashboard (docs/grafana/dtx.json) asks only for metrics
the daemons really export."""

import json
import os
import re
import time

import promtext
from harness import ROOT, ClusterTest, InteractiveMixin, sql

UPDATE = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"
DASHBOARD = os.path.join(ROOT, "docs", "grafana", "dtx.json")
PROTOCOLS = ("2pc", "3pc")
OUTCOMES = ("committed", "aborted", "unknown", "in_doubt")
PHASES = {"2pc": {"prepare", "one_phase", "commit_log", "commit", "abort"},
          "3pc": {"prepare", "one_phase", "precommit_log", "precommit", "commit_log", "commit",
                  "abort", "learn"}}


class MetricsTest(InteractiveMixin, ClusterTest):
    SHARDS = 2
    AGENT = {"recovery_interval_ms": 200, "recovery_min_age_ms": 100}

    def metrics(self, port=None):
        status, text = self.c.request("GET", "/metrics", port=port)
        self.assertEqual(status, 200, text)
        try:
            return promtext.parse(text)
        except ValueError as e:
            self.fail("GET /metrics on port %s is not strict Prometheus text: %s" %
                      (port or self.c.coord_port, e))

    def agent_metrics(self, shard):
        return self.metrics(port=self.c.shard(shard).agent_port)

    def settled(self):
        """Coordinator metrics once no transaction is live (phase 2 acks may come after answers)
        and the lazy END records are written."""
        end = time.time() + 10
        while True:
            m = self.metrics()
            live = m["dtx_transactions_live"].value()
            written = m["dtx_decision_log_batch_records"].value("dtx_decision_log_batch_records_sum")
            if (live == 0 and written == m["dtx_decision_log_records_total"].value()) or \
                    time.time() > end:
                return m
            time.sleep(0.05)

    def run_known_transactions(self):
        """Two phases, one phase, aborts, 3PC: (outcome, protocol, path) of each, in order."""
        ran = []

        def tx(want_status, outcome, protocol, path, ops):
            status, body = self.c.tx(ops, protocol=protocol)
            self.assertEqual(status, want_status, body)
            self.assertEqual(body["status"], outcome, body)
            ran.append((outcome, protocol, path))

        tx(200, "committed", "2pc", "2p", [sql("s1", UPDATE, 1, 1), sql("s2", UPDATE, -1, 1)])
        tx(200, "committed", "2pc", "1p", [sql("s1", UPDATE, 1, 2), sql("s1", UPDATE, -1, 3)])
        tx(409, "aborted", "2pc", "2p", [sql("s1", UPDATE, 1, 4),
                                         sql("s2", UPDATE, 1, 9999, expect_rows=1)])
        tx(200, "committed", "3pc", "2p", [sql("s1", UPDATE, 1, 5), sql("s2", UPDATE, -1, 5)])
        tx(409, "aborted", "3pc", "2p", [sql("s1", UPDATE, 1, 6), sql("s2", "SELECT 1/0")])
        tx(200, "committed", "2pc", "1p", [sql("s2", "SELECT 1")])
        return ran

    # ---- the format ---------------------------------------------------------------

    def test_both_daemons_export_the_contract_metrics_as_strict_prometheus_text(self):
        self.c.tx([sql("s1", UPDATE, 0, 7), sql("s2", UPDATE, 0, 7)])
        coord = self.settled()
        for name, kind in [("dtx_transaction_duration_seconds", "histogram"),
                           ("dtx_decision_log_fsync_seconds", "histogram"),
                           ("dtx_transactions_total", "counter"),
                           ("dtx_transactions_started_total", "counter"),
                           ("dtx_transactions_in_flight", "gauge"),
                           ("dtx_transactions_in_doubt", "gauge"),
                           ("dtx_participant_up", "gauge")]:
            self.assertIn(name, coord)
            self.assertEqual(coord[name].type, kind, name)
        for shard in ("s1", "s2"):
            agent = self.agent_metrics(shard)
            fam = agent["dtx_prepared_oldest_age_seconds"]
            self.assertEqual(fam.type, "gauge")
            self.assertEqual([l for l, _ in fam.series()], [{"shard": shard}])
            for name in ("dtx_branch_prepare_seconds", "dtx_branch_commit_prepared_seconds"):
                self.assertEqual(agent[name].type, "histogram", name)
        # the active process of its node says so, with the node: one per node, to alert on
        self.assertEqual(coord["dtx_coordinator_active"].series(), [({"node": "c1"}, 1.0)])
        # "started" is no outcome any more
        self.assertEqual({l["outcome"] for l, _ in coord["dtx_transactions_total"].series()},
                         set(OUTCOMES))

    def test_histograms_have_one_series_per_protocol_and_outcome_or_phase(self):
        m = self.metrics()
        dur = m["dtx_transaction_duration_seconds"].histograms()
        self.assertEqual({tuple(sorted(k)) for k in dur},
                         {(("outcome", o), ("protocol", p)) for p in PROTOCOLS for o in OUTCOMES})
        phases = m["dtx_transaction_phase_seconds"].histograms()
        got = {}
        for k in phases:
            d = dict(k)
            got.setdefault(d["protocol"], set()).add(d["phase"])
        self.assertEqual(got, PHASES)
        for h in list(dur.values()) + list(phases.values()):
            self.assertEqual(h["buckets"][0][0], 0.0001)  # the same bounds everywhere
            self.assertEqual(len(h["buckets"]), 19)

    # ---- the numbers ----------------------------------------------------------------

    def test_each_finished_transaction_is_counted_once_by_outcome(self):
        before = self.settled()
        ran = self.run_known_transactions()
        after = self.settled()

        def delta(outcome):
            fam = "dtx_transactions_total"
            return after[fam].value(outcome=outcome) - before[fam].value(outcome=outcome)

        self.assertEqual(after["dtx_transactions_total"].total() -
                         before["dtx_transactions_total"].total(), len(ran))
        for outcome in OUTCOMES:
            self.assertEqual(delta(outcome), sum(1 for o, _, _ in ran if o == outcome), outcome)
        self.assertEqual(after["dtx_transactions_started_total"].value() -
                         before["dtx_transactions_started_total"].value(), len(ran))

    def test_replays_count_answers_from_an_earlier_transaction_not_mismatches(self):
        """A key reused for another request is refused (422), not answered from the earlier
        transaction: it was counted as a replay."""
        ops = [sql("s1", UPDATE, 1, 7), sql("s2", UPDATE, -1, 7)]
        before = self.settled()
        for _ in range(3):
            self.assertEqual(self.c.tx(ops, idempotency_key="replays")[0], 200)
        status, body = self.c.tx([sql("s1", UPDATE, 1, 8)], idempotency_key="replays")
        self.assertEqual(status, 422, body)
        after = self.settled()

        def delta(name):
            return after[name].value() - before[name].value()
        self.assertEqual(delta("dtx_idempotent_replays_total"), 2)
        self.assertEqual(delta("dtx_transactions_started_total"), 1)

    def test_the_duration_histogram_counts_each_transaction_by_protocol_and_outcome(self):
        before = self.settled()
        t0 = time.time()
        ran = self.run_known_transactions()
        took = time.time() - t0
        after = self.settled()
        b = before["dtx_transaction_duration_seconds"].histograms()
        a = after["dtx_transaction_duration_seconds"].histograms()
        for p in PROTOCOLS:
            for o in OUTCOMES:
                key = frozenset({("protocol", p), ("outcome", o)})
                n = sum(1 for x in ran if x[:2] == (o, p))
                self.assertEqual(a[key]["count"] - b[key]["count"], n, (p, o))
                grown = a[key]["sum"] - b[key]["sum"]
                if n:  # each took some time, and together no more than the run did
                    self.assertGreater(grown, 0, (p, o))
                    self.assertLess(grown, took, (p, o))
                else:
                    self.assertEqual(grown, 0, (p, o))
        # per outcome, the histograms' _count add up to the outcome counter
        for o in OUTCOMES:
            self.assertEqual(sum(a[frozenset({("protocol", p), ("outcome", o)})]["count"]
                                 for p in PROTOCOLS),
                             after["dtx_transactions_total"].value(outcome=o), o)

    def test_each_phase_is_timed_once_per_transaction_that_went_through_it(self):
        before = self.settled()
        self.run_known_transactions()
        after = self.settled()
        b = before["dtx_transaction_phase_seconds"].histograms()
        a = after["dtx_transaction_phase_seconds"].histograms()

        def grew(protocol, phase):
            key = frozenset({("protocol", protocol), ("phase", phase)})
            return a[key]["count"] - b[key]["count"]

        # 2PC: a two-shard commit, a one-shard commit, an abort, a one-shard read
        self.assertEqual({ph: grew("2pc", ph) for ph in PHASES["2pc"]},
                         {"prepare": 2, "one_phase": 2, "commit_log": 1, "commit": 1, "abort": 1})
        # 3PC: a commit (pre-commit forced and accepted, then the commit) and an abort
        self.assertEqual({ph: grew("3pc", ph) for ph in PHASES["3pc"]},
                         {"prepare": 2, "one_phase": 0, "precommit_log": 1, "precommit": 1,
                          "commit_log": 1, "commit": 1, "abort": 1, "learn": 0})

    def test_decision_log_histograms_match_its_counters(self):
        before = self.settled()
        self.run_known_transactions()
        after = self.settled()

        def grew(fam, sample=None):
            return after[fam].value(sample) - before[fam].value(sample)

        syncs = grew("dtx_decision_log_syncs_total")
        # forced: 2PC's COMMIT, 3PC's PRECOMMIT and COMMIT, each before its answer
        self.assertGreaterEqual(syncs, 3)
        self.assertEqual(grew("dtx_decision_log_fsync_seconds",
                              "dtx_decision_log_fsync_seconds_count"), syncs)
        self.assertEqual(grew("dtx_decision_log_write_seconds",
                              "dtx_decision_log_write_seconds_count"), syncs)
        fsync_s = grew("dtx_decision_log_fsync_seconds", "dtx_decision_log_fsync_seconds_sum")
        self.assertGreater(fsync_s, 0)
        self.assertLessEqual(fsync_s, grew("dtx_decision_log_sync_seconds_total") + 1e-6)
        # every record appended was made durable in exactly one group
        self.assertEqual(grew("dtx_decision_log_batch_records",
                              "dtx_decision_log_batch_records_sum"),
                         grew("dtx_decision_log_records_total"))

    def test_participants_time_each_vote_one_phase_commit_and_commit_prepared(self):
        before = {s: self.agent_metrics(s) for s in ("s1", "s2")}
        self.run_known_transactions()
        self.settled()
        for shard in ("s1", "s2"):
            b, a = before[shard], self.agent_metrics(shard)

            def grew(fam, sample, **labels):
                return a[fam].value(sample, **labels) - b[fam].value(sample, **labels)

            # each shard committed two prepared branches (the 2PC and the 3PC commit)
            self.assertEqual(grew("dtx_branch_commit_prepared_seconds",
                                  "dtx_branch_commit_prepared_seconds_count"), 2, shard)
            self.assertEqual(grew("dtx_agent_finished_total", None, outcome="committed"), 2)
            # one one-phase commit each (s1: two updates; s2: a read)
            self.assertEqual(grew("dtx_branch_one_phase_seconds",
                                  "dtx_branch_one_phase_seconds_count", outcome="committed"), 1)
            # every vote sent was timed, by vote
            for vote in ("yes", "no", "readonly"):
                self.assertEqual(grew("dtx_branch_prepare_seconds",
                                      "dtx_branch_prepare_seconds_count", vote=vote),
                                 grew("dtx_agent_votes_total", None, vote=vote), (shard, vote))
        # s2 voted no twice (expect_rows, division by zero)
        b, a = before["s2"], self.agent_metrics("s2")
        self.assertEqual(a["dtx_branch_prepare_seconds"].value(
            "dtx_branch_prepare_seconds_count", vote="no") - b["dtx_branch_prepare_seconds"].value(
            "dtx_branch_prepare_seconds_count", vote="no"), 2)

    def test_an_open_interactive_transaction_is_in_flight_until_it_ends(self):
        self.settled()
        gtid = self.begin(protocol="3pc")
        m = self.metrics()
        self.assertEqual(m["dtx_transactions_in_flight"].value(protocol="3pc"), 1)
        self.assertEqual(m["dtx_transactions_in_flight"].value(protocol="2pc"), 0)
        self.assertEqual(m["dtx_transactions_in_doubt"].total(), 0)
        self.assertEqual(m["dtx_transactions_live"].value(), 1)
        status, _ = self.abort(gtid)
        self.assertEqual(status, 200)
        m = self.settled()
        self.assertEqual(m["dtx_transactions_in_flight"].total(), 0)

    def test_the_oldest_prepared_branch_age_is_seen_and_cleared(self):
        # a prepared dtx branch of a node no coordinator knows: recovery leaves it in doubt
        gid = "dtx:zz-1-1:s1"
        self.c.psql("s1", "BEGIN; UPDATE accounts SET balance = balance WHERE id = 90; "
                          "PREPARE TRANSACTION '%s'" % gid)
        try:
            time.sleep(1.5)
            age = self.agent_metrics("s1")["dtx_prepared_oldest_age_seconds"].value(shard="s1")
            self.assertGreaterEqual(age, 1.0)
            self.assertLess(age, 30)
            self.assertEqual(self.agent_metrics("s2")["dtx_prepared_oldest_age_seconds"]
                             .value(shard="s2"), 0)
        finally:
            self.c.psql("s1", "ROLLBACK PREPARED '%s'" % gid)
        self.wait_for(lambda: self.agent_metrics("s1")["dtx_prepared_oldest_age_seconds"]
                      .value(shard="s1") == 0, timeout=10, what="the age to drop to 0")

    def test_link_state_says_up_for_every_shard(self):
        m = self.metrics()
        for shard in ("s1", "s2"):
            self.assertEqual(m["dtx_participant_up"].value(shard=shard), 1)
            states = {l["state"]: v for l, v in m["dtx_participant_link_state"].series()
                      if l["shard"] == shard}
            self.assertEqual(states, {"up": 1, "connecting": 0, "down": 0})

    # ---- the dashboard -----------------------------------------------------------------

    def test_the_grafana_dashboard_asks_only_for_exported_metrics_and_labels(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        self.assertGreaterEqual(dash["schemaVersion"], 36)
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        ds = [v for v in variables.values() if v["type"] == "datasource"]
        self.assertEqual([v["query"] for v in ds], ["prometheus"])
        ds_ref = "${%s}" % ds[0]["name"]

        self.run_known_transactions()
        self.settled()
        exported = dict(self.metrics())
        for shard in ("s1", "s2"):
            exported.update(self.agent_metrics(shard))
        samples = {}  # sample name -> label names seen on it
        for fam in exported.values():
            for name, labels, _ in fam.samples:
                samples.setdefault(name, set()).update(labels)

        panels = [p for p in dash["panels"] if p["type"] != "row"]
        self.assertGreaterEqual(len(panels), 10)
        ids = [p["id"] for p in dash["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "panel ids are unique")
        used = set()
        for p in panels:
            self.assertEqual(p["datasource"]["uid"], ds_ref, p["title"])
            self.assertTrue(p["targets"], p["title"])
            for t in p["targets"]:
                found, groups = selectors(t["expr"])
                known = {"instance", "job"}
                for name, labels in found:
                    self.assertTrue(name in samples, "panel %r: %s is not exported" %
                                    (p["title"], name))
                    for label in labels:
                        self.assertIn(label, samples[name] | {"instance", "job"},
                                      "panel %r: %s has no label %s" % (p["title"], name, label))
                    known |= samples[name]
                    used.add(name)
                for label in groups:
                    self.assertIn(label, known, "panel %r groups by %s, which none of its "
                                                "metrics has" % (p["title"], label))
        # what issue 13 asks a dashboard to show
        for name in ("dtx_transactions_total", "dtx_transaction_duration_seconds_bucket",
                     "dtx_transaction_phase_seconds_bucket", "dtx_decision_log_fsync_seconds_bucket",
                     "dtx_decision_log_batch_records_bucket", "dtx_transactions_in_flight",
                     "dtx_transactions_in_doubt", "dtx_prepared_oldest_age_seconds",
                     "dtx_participant_up", "dtx_heuristic_outcomes_total"):
            self.assertIn(name, used)


def selectors(expr):
    """The dtx_ metrics of a PromQL expression, each with the label names it is matched on,
    and the label names the expression groups or joins by."""
    found, groups = [], []
    text = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    for m in re.finditer(r"(dtx_[a-zA-Z0-9_:]*)\s*(\{[^}]*\})?", text):
        labels = re.findall(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2) or "")
        found.append((m.group(1), labels))
    for grp in re.findall(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)",
                          text):
        groups += [x.strip() for x in grp.split(",") if x.strip()]
    if not found:
        raise AssertionError("no dtx_ metric in %r" % expr)
    return found, groups
