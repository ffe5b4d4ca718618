"""What GET /metrics says, read strictly (tests/promtext.py) from both
daemons: every sample in a family with # HELP and # TYPE, no transaction
id as a label value, histograms cumulative and consistent with their
_count; and the numbers are right: after a known set of transactions (two
phases, one phase, aborted, three-phase commit) each one is counted once."""

import time

import promtext
from harness import ClusterTest, sql

UPDATE = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"


class MetricsTest(ClusterTest):
    SHARDS = 2

    def metrics(self, port=None):
        status, text = self.c.request("GET", "/metrics", port=port)
        self.assertEqual(status, 200, text)
        return promtext.parse(text)

    def agent_metrics(self, shard):
        return self.metrics(port=self.c.shard(shard).agent_port)

    def settled(self):
        """Coordinator metrics once no transaction is live (phase 2 acks may come after answers)."""
        end = time.time() + 10
        while True:
            m = self.metrics()
            if m["dtx_transactions_live"].value() == 0 or time.time() > end:
                return m
            time.sleep(0.05)

    def run_known_transactions(self):
        """Two phases, one phase, an abort, 3PC: (outcome, protocol) of each, in order."""
        ran = []

        def tx(want_status, outcome, protocol, ops, **kw):
            status, body = self.c.tx(ops, protocol=protocol, **kw)
            self.assertEqual(status, want_status, body)
            ran.append((outcome, protocol))

        tx(200, "committed", "2pc", [sql("s1", UPDATE, 1, 1), sql("s2", UPDATE, -1, 1)])
        tx(200, "committed", "2pc", [sql("s1", UPDATE, 1, 2), sql("s1", UPDATE, -1, 3)])
        tx(409, "aborted", "2pc", [sql("s1", UPDATE, 1, 4), sql("s2", UPDATE, 1, 9999,
                                                                expect_rows=1)])
        tx(200, "committed", "3pc", [sql("s1", UPDATE, 1, 5), sql("s2", UPDATE, -1, 5)])
        tx(409, "aborted", "3pc", [sql("s1", UPDATE, 1, 6), sql("s2", "SELECT 1/0")])
        tx(200, "committed", "2pc", [sql("s2", "SELECT 1")])
        return ran

    def test_each_finished_transaction_is_counted_once_by_outcome(self):
        before = self.settled()
        ran = self.run_known_transactions()
        after = self.settled()

        def delta(outcome):
            fam = "dtx_transactions_total"
            return after[fam].value(outcome=outcome) - before[fam].value(outcome=outcome)

        self.assertEqual(after["dtx_transactions_total"].total() -
                         before["dtx_transactions_total"].total(), len(ran))
        for outcome in ("committed", "aborted", "unknown", "in_doubt"):
            self.assertEqual(delta(outcome), sum(1 for o, _ in ran if o == outcome), outcome)
        self.assertEqual(after["dtx_transactions_started_total"].value() -
                         before["dtx_transactions_started_total"].value(), len(ran))
