"""The decision log does not grow with the number of transactions: it is
checkpointed, and what recovery and idempotent retries need survives."""

import glob
import os

from harness import ClusterTest, parallel, transfer_ops


class CheckpointTest(ClusterTest):
    SHARDS = 2
    COORD = {"log_segment_bytes": 8192}

    def segments(self):
        return sorted(glob.glob(os.path.join(self.c.log_dir, "dlog-*.log")))

    @staticmethod
    def used(path):
        """Bytes a segment holds, without the zeros preallocated after its last frame."""
        with open(path, "rb") as f:
            return len(f.read().rstrip(b"\0"))

    def test_log_stays_small_and_keeps_what_retries_need_across_kill_9(self):
        keyed = transfer_ops("s1", 80, "s2", 80, 3)
        status, first = self.c.tx(keyed, idempotency_key="kept-across-checkpoints")
        self.assertEqual(status, 200, first)

        def run(i):
            for j in range(60):
                status, body = self.c.tx(transfer_ops("s1", 81 + i, "s2", 81 + i, 1))
                self.assertEqual(status, 200, body)

        parallel(8, run)  # 480 commits, ~50 KB of log: a checkpoint every 8 KiB
        status, metrics = self.c.request("GET", "/metrics")
        checkpoints = [l for l in metrics.splitlines()
                       if l.startswith("dtx_decision_log_checkpoints_total")]
        self.assertGreaterEqual(int(checkpoints[0].split()[1]), 3, metrics)
        total = sum(self.used(p) for p in self.segments())
        self.assertLess(total, 4 * 8192, self.segments())

        self.c.kill_coordinator()
        self.c.start_coordinator()
        self.assertLessEqual(len(self.segments()), 2)  # a restart checkpoints too
        status, again = self.c.tx(keyed, idempotency_key="kept-across-checkpoints")
        self.assertEqual((status, again["gtid"]), (200, first["gtid"]))
        self.assertEqual(again["results"], first["results"])
        self.assertEqual((self.balance(0, 80), self.balance(1, 80)), (997, 1003))
        self.assert_no_prepared()
