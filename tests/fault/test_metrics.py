"""Metrics when things fail: a transaction is counted once, by the outcome
it ended with in this run, also when the decision log fails under it; a
commit waiting for a lost participant is in doubt, and its link down,
until the participant is back."""

import threading
import time

import promtext
from harness import ClusterTest, sql

UPDATE = "UPDATE accounts SET balance = balance + $1 WHERE id = $2"


class MetricsFaultTest(ClusterTest):
    SHARDS = 2
    AGENT = {"termination_timeout_ms": 1000, "recovery_interval_ms": 300,
             "recovery_min_age_ms": 100}

    def metrics(self):
        status, text = self.c.request("GET", "/metrics")
        self.assertEqual(status, 200, text)
        return promtext.parse(text)

    def test_a_3pc_transaction_whose_precommit_write_failed_is_counted_once(self):
        # The first fdatasync is the BOOT record; the second is this transaction's PRECOMMIT.
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "dlog.fdatasync=error@2"})
        status, body = self.c.tx([sql("s1", UPDATE, 1, 1), sql("s2", UPDATE, -1, 1)],
                                 protocol="3pc")
        gtid = body.get("gtid") if isinstance(body, dict) else None
        self.assertIsNotNone(gtid, body)
        # the participants settle it without the coordinator, which learns their outcome
        self.wait_for(lambda: self.c.request("GET", "/v1/transactions/" + gtid)[1].get("status")
                      in ("committed", "aborted"), timeout=20, what="the outcome to be learned")
        time.sleep(0.5)
        m = self.metrics()
        self.assertEqual(m["dtx_transactions_started_total"].value(), 1)
        self.assertEqual(m["dtx_transactions_total"].total(), 1,
                         m["dtx_transactions_total"].samples)

    def test_a_2pc_transaction_whose_commit_write_failed_is_counted_once_in_doubt(self):
        # The first fdatasync is the BOOT record; the second is this transaction's COMMIT.
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "dlog.fdatasync=error@2"})
        status, body = self.c.tx([sql("s1", UPDATE, 1, 2), sql("s2", UPDATE, -1, 2)])
        self.assertEqual((status, body["error"]["code"]), (504, "outcome_unknown"), body)
        m = self.metrics()
        self.assertEqual(m["dtx_transactions_started_total"].value(), 1)
        self.assertEqual(m["dtx_transactions_total"].value(outcome="in_doubt"), 1)
        self.assertEqual(m["dtx_transactions_total"].total(), 1,
                         m["dtx_transactions_total"].samples)
        self.c.stop_coordinator()
        self.c.start_coordinator()  # settles it (the record was written before the failed sync)
        self.assert_no_prepared(timeout=15)

    def test_a_commit_waiting_for_a_lost_participant_is_in_doubt_until_it_returns(self):
        # The decision is durable, then s2's agent dies before COMMIT PREPARED reaches it.
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.after_durable=sleep(1500)"})
        result = {}
        t = threading.Thread(target=lambda: result.setdefault("a", self.c.tx(
            [sql("s1", UPDATE, 1, 3), sql("s2", UPDATE, -1, 3)])))
        t.start()
        self.wait_for(lambda: len(self.c.prepared(1)) == 1, what="the branch on s2 to prepare")
        self.c.kill_participant(1)
        lost_at = time.time()

        def stuck():
            m = self.metrics()
            return (m["dtx_transactions_in_doubt"].value(protocol="2pc") == 1 and
                    m["dtx_participant_link_state"].value(shard="s2", state="down") == 1)

        self.wait_for(stuck, timeout=15, what="the commit to be in doubt and s2's link down")
        m = self.metrics()
        self.assertEqual(m["dtx_transactions_in_flight"].total(), 0)
        self.assertEqual(m["dtx_participant_up"].value(shard="s2"), 0)
        self.assertEqual(m["dtx_participant_up"].value(shard="s1"), 1)
        self.assertEqual(m["dtx_transactions_total"].value(outcome="committed"), 0)
        t.join()
        self.assertEqual(result["a"][0], 200, result["a"])  # decided: answered, s2 pending
        time.sleep(1)
        self.c.start_participant(1)
        self.assert_no_prepared(timeout=15)

        def done():
            m = self.metrics()
            return (m["dtx_transactions_in_doubt"].total() == 0 and
                    m["dtx_transactions_total"].value(outcome="committed") == 1)

        self.wait_for(done, timeout=15, what="the commit to finish")
        m = self.metrics()
        self.assertEqual(m["dtx_participant_link_state"].value(shard="s2", state="up"), 1)
        commit = m["dtx_transaction_phase_seconds"].histograms()[
            frozenset({("protocol", "2pc"), ("phase", "commit")})]
        self.assertEqual(commit["count"], 1)
        self.assertGreater(commit["sum"], 1.0)  # phase 2 lasted the outage
        self.assertLess(commit["sum"], time.time() - lost_at + 2)
