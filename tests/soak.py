#!/usr/bin/python3
"""tests/soak.py - randomized soak: a bank workload over 3 shards while the
coordinator, participants and PostgreSQL shards are killed at random.

  tests/soak.py [--seconds 60] [--workers 6] [--protocol 2pc|3pc] [--ha]
                              (make check: 45 s of 2pc, 30 s of 3pc, 30 s --ha; make soak SECS=N ...)

Each transfer moves money between accounts on two shards and writes one
ledger row per leg, all in one dtx transaction with an idempotency key; a
transfer that gets no answer is retried with the same key until it does.
One worker in three runs its transfers as interactive transactions
instead (begin, one call per shard, commit): those cannot be retried, so
one that loses its answer is left out of the answered-outcome check, but
not out of the others.
With --ha there are two coordinator nodes on a postgres decision store, c1
with a standby and c2 alone; each worker uses one node (any of its
processes, moving on after no answer or a 503), and the chaos kills any
coordinator process: c1's standby takes over, c2 is down until restarted.
With --protocol 3pc every transaction commits by three-phase commit and
the participants' termination timeout is short (1 s), so that they often
finish transactions on their own while the coordinator is down.
Meanwhile a chaos thread kill -9s the coordinator or a participant, or
stops a PostgreSQL shard with -m immediate, and restarts it.

At the end, with everything back up:
  - the total balance is unchanged;
  - every transfer has both ledger rows or neither;
  - every transfer answered committed is in the ledger, every one answered
    aborted is not;
  - every balance equals its ledger replay;
  - no dtx: prepared transaction is left on any shard.
"""

import argparse
import os
import random
import shutil
import sys
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tools"))
sys.path.insert(0, HERE)
import dtx_cluster  # noqa: E402
from harness import LEDGER_DDL, random_ledger_transfer, sanitizer_reports  # noqa: E402

SHARDS = ["s1", "s2", "s3"]
ACCOUNTS = 30
START = 1000
SWEEP_AGE_MS = 2000  # 3PC: acceptor rows left behind this long are asked about (every 1 s)


class Soak:
    def __init__(self, c, seconds, workers, seed, protocol="2pc"):
        self.c = c
        self.protocol = protocol
        self.nodes = sorted({co.node for co in c.coords})
        self.seconds = seconds
        self.workers = workers
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.answers = {}  # transfer id -> "committed" / "aborted"
        self.retries = 0
        self.kills = []
        self.stop_chaos = threading.Event()
        self.stop_work = threading.Event()
        self.failures = []
        self.interactive = {}  # commit answers of interactive transfers, by HTTP status

    # ---- the workload -----------------------------------------------------

    def transfer_body(self, rng, tid):
        return {"idempotency_key": tid, "timeout_ms": 3000, "protocol": self.protocol,
                "ops": random_ledger_transfer(rng, tid, SHARDS, ACCOUNTS)}

    def processes(self, n):
        """Worker n's coordinator processes: every process of its node."""
        node = self.nodes[n % len(self.nodes)]
        return [co.i for co in self.c.coords if co.node == node]

    def run_transfer(self, body, n=0):
        """Sends until a definite answer; returns 'committed', 'aborted' or None (gave up)."""
        deadline = time.time() + self.seconds + 120
        procs, k = self.processes(n), 0
        while time.time() < deadline:
            coord = procs[k % len(procs)]
            k += 1
            try:
                status, ans = self.c.request("POST", "/v1/transactions", body, timeout=15,
                                             coord=coord)
            except OSError:
                status, ans = None, None
            if status == 200:
                return "committed"
            if status == 409:
                return "aborted"
            if status in (400, 401, 403, 413, 422):
                self.failures.append("transfer %s refused: %s %s" %
                                     (body["idempotency_key"], status, ans))
                return None
            with self.lock:
                self.retries += 1  # no answer, 503 or 504: ask again with the same key
            time.sleep(0.2)
        self.failures.append("transfer %s never got an answer" % body["idempotency_key"])
        return None

    def call(self, path, body, coord=0):
        try:
            return self.c.request("POST", path, body, timeout=15, coord=coord)
        except OSError:
            return None, None

    def run_interactive(self, body, n=0):
        """The transfer as an interactive transaction: 'committed', 'aborted', or None when
        its outcome is not known to the client (no answer, or never begun)."""
        procs = self.processes(n)
        coord = procs[random.randrange(len(procs))]  # a standby refuses the begin: no harm
        status, ans = self.call("/v1/transactions", {"interactive": True, "timeout_ms": 3000,
                                                     "protocol": self.protocol}, coord)
        if status != 201:
            return None
        gtid, ops = ans["gtid"], body["ops"]
        for part in (ops[:2], ops[2:]):
            status, ans = self.call("/v1/transactions/%s/ops" % gtid, {"ops": part}, coord)
            if status == 409:
                return "aborted"
            if status != 200:
                return None
        status, ans = self.call("/v1/transactions/%s/commit" % gtid, {}, coord)
        with self.lock:
            self.interactive[status] = self.interactive.get(status, 0) + 1
        return {200: "committed", 409: "aborted"}.get(status)

    def worker(self, n, seed):
        rng = random.Random(seed)
        while not self.stop_work.is_set():
            tid = "t-%d-%s" % (n, uuid.uuid4().hex[:12])
            body = self.transfer_body(rng, tid)
            if n % 3 == 2:
                outcome = self.run_interactive(body, n)
                if not outcome:
                    time.sleep(0.2)  # no answer (the coordinator is down): do not spin
            else:
                outcome = self.run_transfer(body, n)
            if outcome:
                with self.lock:
                    self.answers[tid] = outcome

    # ---- chaos --------------------------------------------------------------

    def chaos(self, seed):
        rng = random.Random(seed)
        while not self.stop_chaos.wait(rng.uniform(1.5, 4.0)):
            what = rng.choice(["coordinator", "participant", "participant", "postgres"])
            i = rng.randrange(len(SHARDS))
            try:
                if what == "coordinator":
                    k = rng.randrange(len(self.c.coords))
                    self.c.kill_coordinator(k)
                    time.sleep(rng.uniform(0.2, 1.5))
                    self.c.start_coordinator(wait=False, i=k)
                    what = self.c.coords[k].name
                elif what == "participant":
                    self.c.kill_participant(i)
                    time.sleep(rng.uniform(0.2, 1.5))
                    self.c.start_participant(i, wait=False)
                else:
                    self.c.pg_stop(i, mode="immediate")
                    time.sleep(rng.uniform(0.2, 1.0))
                    self.c.pg_start(i)
                self.kills.append(what if what.startswith("coordinator") else
                                  "%s %s" % (what, SHARDS[i]))
            except Exception as e:  # noqa: BLE001 - reported, not fatal to the run
                self.failures.append("chaos %s failed: %s" % (what, e))

    def everything_up(self):
        for i in range(len(SHARDS)):
            if not self.c.pg_pid(i):
                self.c.pg_start(i)
            if not self.c.shards[i].agent.alive():
                self.c.start_participant(i, wait=False)
        for co in self.c.coords:
            if not co.proc.alive():
                self.c.start_coordinator(wait=False, i=co.i)
        for i in range(len(SHARDS)):
            self.c.wait_agent(i, timeout=60)
        if len(self.c.coords) == 1:
            self.c.wait_healthy(timeout=60)
        for node in self.nodes:
            if len(self.c.coords) > 1:
                self.c.wait_active(node, timeout=60)

    # ---- checks ---------------------------------------------------------------

    def check(self):
        problems = []
        end = time.time() + 30
        while time.time() < end and any(self.c.prepared(s) for s in SHARDS):
            time.sleep(0.2)
        left = {s: self.c.prepared(s) for s in SHARDS}
        if any(left.values()):
            problems.append("dtx prepared transactions left: %s" % left)
        total = sum(int(self.c.psql(s, "SELECT sum(balance) FROM accounts")[0][0]) for s in SHARDS)
        if total != START * ACCOUNTS * len(SHARDS):
            problems.append("total balance is %d, not %d" % (total, START * ACCOUNTS * len(SHARDS)))
        legs = {}
        for s in SHARDS:
            for tid, leg in self.c.psql(s, "SELECT transfer_id, leg FROM ledger"):
                legs.setdefault(tid, set()).add(leg)
        half = [t for t, l in legs.items() if l != {"0", "1"}]
        if half:
            problems.append("%d transfers have one ledger row: %s" % (len(half), half[:5]))
        for tid, outcome in self.answers.items():
            if outcome == "committed" and tid not in legs:
                problems.append("transfer %s answered committed is not in the ledger" % tid)
            if outcome == "aborted" and tid in legs:
                problems.append("transfer %s answered aborted is in the ledger" % tid)
        for s in SHARDS:
            bad = self.c.psql(s, "SELECT a.id, a.balance, %d + coalesce(sum(l.amount), 0) "
                                 "FROM accounts a LEFT JOIN ledger l ON l.account = a.id "
                                 "GROUP BY a.id, a.balance HAVING a.balance <> %d + "
                                 "coalesce(sum(l.amount), 0)" % (START, START))
            if bad:
                problems.append("%s: balances differ from their ledger replay: %s" % (s, bad[:5]))
        if self.protocol == "3pc":
            problems += self.check_acceptor_rows()
        return problems + self.failures

    def check_acceptor_rows(self):
        """Rows are deleted once every participant acknowledged, or later by the agents'
        sweep when their coordinator still holds the transaction as finished; some stay (a
        kill before the coordinator heard every acknowledgement, a transaction the
        participants ended without it): reported, and a failure only if (nearly) none went."""
        time.sleep(2 * SWEEP_AGE_MS / 1000)  # the last rows reach the sweep's age, a pass runs
        gtids = set()
        for s in SHARDS:
            gtids.update(r[0] for r in self.c.psql(s, "SELECT gtid FROM dtx.acceptors"))
        answered = len(self.answers)
        print("soak: transactions with acceptor rows left: %d (of %d answered)" %
              (len(gtids), answered))
        if answered >= 100 and len(gtids) > answered // 2:
            return ["%d of %d transactions kept their acceptor rows" % (len(gtids), answered)]
        return []

    def run(self):
        # every thread's seed is drawn here, before any runs, so that --seed replays a run's choices
        seeds = [self.rng.random() for _ in range(self.workers + 1)]
        threads = [threading.Thread(target=self.worker, args=(n, seeds[n]))
                   for n in range(self.workers)]
        chaos = threading.Thread(target=self.chaos, args=(seeds[-1],))
        for t in threads:
            t.start()
        chaos.start()
        time.sleep(self.seconds)
        self.stop_chaos.set()
        chaos.join()
        self.everything_up()
        self.stop_work.set()
        for t in threads:
            t.join()
        return self.check()


def terminated(c):
    """How many times a participant led a 3PC transaction to its decision (agent logs)."""
    n = 0
    for sh in c.shards:
        try:
            with open(sh.agent.log, errors="replace") as f:
                n += sum("without the coordinator; telling every acceptor" in line for line in f)
        except OSError:
            pass
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--workers", type=int, default=6)
    ap.add_argument("--seed", type=int, default=int(time.time()))
    ap.add_argument("--protocol", choices=["2pc", "3pc"], default="2pc")
    ap.add_argument("--ha", action="store_true",
                    help="coordinators c1 (with a standby) and c2 on a postgres store")
    a = ap.parse_args()
    root = dtx_cluster.make_temp_dir("dtx-soak-")
    agent = {"recovery_interval_ms": 500, "recovery_min_age_ms": 300}
    if a.protocol == "3pc":
        agent["termination_timeout_ms"] = 1000
        agent["acceptor_sweep_age_ms"] = SWEEP_AGE_MS  # the sweep runs amid the kills too
    ha = {"coordinators": ["c1", "c1", "c2"], "store": "postgres",
          "store_lease_ms": 1500} if a.ha else {}
    c = dtx_cluster.Cluster(os.path.join(root, "c"), shards=len(SHARDS), agent=agent,
                            coord={"commit_wait_ms": 2000}, **ha)
    print("soak: seed %d, %g s, %d workers, 3 shards, %s%s; binaries in %s" %
          (a.seed, a.seconds, a.workers, a.protocol,
           ", coordinators c1 (and a standby), c2 on a postgres store" if a.ha else "",
           c.bindir), flush=True)
    start = time.time()
    c.start()
    try:
        for s in SHARDS:
            c.psql(s, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL "
                      "CHECK (balance >= 0)); %s; "
                      "INSERT INTO accounts SELECT g, %d FROM generate_series(1, %d) g"
                      % (LEDGER_DDL, START, ACCOUNTS))
        soak = Soak(c, a.seconds, a.workers, a.seed, a.protocol)
        problems = soak.run()
    finally:
        codes = c.stop()  # an exception above leaves through here, with the cluster stopped
    problems += ["%s exited with status %s on SIGTERM" % (k, v) for k, v in codes.items() if v]
    problems += sanitizer_reports(c)
    committed = sum(v == "committed" for v in soak.answers.values())
    aborted = sum(v == "aborted" for v in soak.answers.values())
    print("soak: %d transfers answered (%d committed, %d aborted), %d retries after no answer, "
          "%d kills (%s) in %.0f s" % (committed + aborted, committed, aborted, soak.retries,
                                      len(soak.kills), ", ".join(soak.kills), time.time() - start))
    if a.protocol == "3pc":
        print("soak: transactions the participants decided without the coordinator: %d" %
              terminated(c))
    print("soak: interactive transfers' commit answers by HTTP status: %s" %
          dict(sorted(soak.interactive.items(), key=lambda kv: str(kv[0]))))
    if committed < 50:
        problems.append("only %d transfers committed: the soak did not exercise much" % committed)
    if soak.interactive.get(200, 0) < 10:
        problems.append("only %d interactive transfers committed" % soak.interactive.get(200, 0))
    for p in problems:
        print("soak: FAILED: " + p)
    if problems:
        print("soak: cluster kept for inspection in %s" % root)
        return 1
    shutil.rmtree(root, ignore_errors=True)
    print("soak: all invariants hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
