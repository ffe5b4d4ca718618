#!/usr/bin/python3
"""bench/restart_time.py - how long the coordinator takes to restart after
its decision log saw N transactions (issue: restart time stays bounded).

Runs N transfers through a real 2-shard cluster (real participants and
PostgreSQL) with dtx-loadgen, then kills the coordinator with SIGKILL and
measures the time from exec to /healthz answering 200 with every shard up,
three times; reports the log directory's size against the bytes the log
has written in all.

  bench/restart_time.py [--transactions 1000000] [--concurrency 32] [--json FILE]
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dtx_cluster  # noqa: E402


def metric(c, name):
    status, text = c.request("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    return None


def log_size(c):
    files = glob.glob(os.path.join(c.log_dir, "dlog-*.log"))
    return len(files), sum(os.path.getsize(f) for f in files)


def timed_restart(c):
    c.kill_coordinator()
    start = time.time()
    c.start_coordinator(wait=False)
    c.wait_healthy(timeout=600)
    return time.time() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--transactions", type=int, default=1000000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--json")
    a = ap.parse_args()
    root = dtx_cluster.make_temp_dir("dtx-restart-")
    c = dtx_cluster.Cluster(os.path.join(root, "c"), shards=2, bindir=os.path.join(ROOT, "bin"))
    c.start()
    try:
        for sh in c.shards:
            c.psql(sh.i, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); "
                         "INSERT INTO accounts SELECT g, 1000000000 FROM generate_series(1, 10000) g")
        t0 = time.time()
        subprocess.run([os.path.join(ROOT, "bin", "dtx-loadgen"), "--url", c.url(), "--shards",
                        "s1,s2", "--accounts", "10000", "--concurrency", str(a.concurrency),
                        "--count", str(a.transactions)], check=False)
        load_s = time.time() - t0
        written = metric(c, "dtx_decision_log_bytes_total")
        checkpoints = metric(c, "dtx_decision_log_checkpoints_total")
        committed = metric(c, 'dtx_transactions_total{outcome="committed"}')
        nseg, size = log_size(c)
        restarts = [timed_restart(c) for _ in range(3)]
        nseg2, size2 = log_size(c)
        out = {"transactions": a.transactions, "committed_in_this_run": committed,
               "load_seconds": round(load_s, 1), "log_bytes_written": written,
               "checkpoints": checkpoints, "log_dir_before_restart": {"segments": nseg,
                                                                      "bytes": size},
               "log_dir_after_restarts": {"segments": nseg2, "bytes": size2},
               "restart_seconds": [round(r, 3) for r in restarts]}
        print(json.dumps(out, indent=2))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(out, f, indent=2)
    finally:
        c.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
