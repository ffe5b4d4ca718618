"""Several coordinators on machines of their own (issue: no single point of failure): two
active nodes, c1 and c2, each with a standby, deciding on one replicated PostgreSQL store
and sharing three shards; every daemon and the store on a host of its own (network
namespaces, tools/dtx_cluster.py hosts=True). A bank workload whose clients use every
coordinator runs while a coordinator machine is lost or cut off: its clients go to the
others, its standby takes over and finishes what it decided, and nothing is lost or
split."""

import threading
import time
import uuid

from harness import ClusterTest

LEASE_MS = 2000
ACCOUNTS = 100
# coordinator processes: 0 and 1 are node c1 (active, standby), 2 and 3 node c2
NODES = ["c1", "c1", "c2", "c2"]


class Workload:
    """Transfers between two shards, each with an idempotency key and a ledger row per leg;
    a client that gets no answer (or a 503) asks the next coordinator, with the same key."""

    def __init__(self, test, workers=4):
        self.t = test
        self.c = test.c
        self.workers = workers
        self.answers = {}  # key -> "committed" / "aborted"
        self.failovers = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = []

    def body(self, key, n):
        a, b = ["s1", "s2", "s3"][n % 3], ["s1", "s2", "s3"][(n + 1) % 3]
        acct = 1 + n % ACCOUNTS
        return {"idempotency_key": key, "timeout_ms": 3000, "ops": [
            {"shard": a, "sql": "UPDATE accounts SET balance = balance - 1 WHERE id = $1",
             "params": [acct], "expect_rows": 1},
            {"shard": a, "sql": "INSERT INTO ledger VALUES ($1, 0, $2, -1)", "params": [key, acct]},
            {"shard": b, "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = $1",
             "params": [acct], "expect_rows": 1},
            {"shard": b, "sql": "INSERT INTO ledger VALUES ($1, 1, $2, 1)", "params": [key, acct]}]}

    def send(self, body, first):
        """Sends until a definite answer, starting at coordinator `first`."""
        deadline = time.time() + 60
        i = first
        while time.time() < deadline:
            try:
                status, ans = self.c.request("POST", "/v1/transactions", body, timeout=4, coord=i)
            except OSError:
                status, ans = None, None
            if status == 200:
                return "committed"
            if status == 409:
                return "aborted"
            with self.lock:
                self.failovers += 1
            i = (i + 1) % len(self.c.coords)
            time.sleep(0.05)
        return None

    def worker(self, w):
        n = w
        while not self.stop.is_set():
            key = "ha-%d-%s" % (w, uuid.uuid4().hex[:10])
            outcome = self.send(self.body(key, n), first=2 * (w % 2))  # half use c1, half c2
            if outcome:
                with self.lock:
                    self.answers[key] = outcome
            n += self.workers

    def start(self):
        self.threads = [threading.Thread(target=self.worker, args=(w,), daemon=True)
                        for w in range(self.workers)]
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(90)


class HaTest(ClusterTest):
    SHARDS = 3
    HOSTS = True
    COORDINATORS = NODES
    STORE = "postgres"
    STORE_LEASE_MS = LEASE_MS
    AGENT = {"recovery_interval_ms": 500, "recovery_min_age_ms": 300}
    COORD = {"commit_wait_ms": 2000}

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for sh in cls.c.shards:
            cls.c.psql(sh.i, "CREATE TABLE ledger (key text, leg int, account int, amount int, "
                             "PRIMARY KEY (key, leg))")

    def setUp(self):
        self.c.heal()
        for co in self.c.coords:
            if not co.proc.alive():
                self.c.start_coordinator(i=co.i)
        self.actives = {n: self.c.wait_active(n) for n in ("c1", "c2")}

    def check_invariants(self, work):
        self.assert_no_prepared(timeout=40)
        total = sum(int(self.c.psql(sh.i, "SELECT sum(balance) FROM accounts")[0][0])
                    for sh in self.c.shards)
        self.assertEqual(total, 3 * 100 * 1000, "money is neither made nor lost")
        legs = {}
        for sh in self.c.shards:
            for key, leg in self.c.psql(sh.i, "SELECT key, leg FROM ledger"):
                legs.setdefault(key, set()).add(leg)
        half = [k for k, v in legs.items() if v != {"0", "1"}]
        self.assertEqual(half, [], "no transfer committed on one shard only")
        committed = [k for k, v in work.answers.items() if v == "committed"]
        self.assertEqual([k for k in committed if k not in legs], [],
                         "every transfer answered committed is in the ledger")
        self.assertEqual([k for k, v in work.answers.items() if v == "aborted" and k in legs], [],
                         "no transfer answered aborted is in the ledger")
        self.assertGreater(len(committed), 20, "the workload ran")
        return committed

    def test_a_coordinator_machine_killed_under_load(self):
        work = Workload(self)
        work.start()
        time.sleep(3)
        lost = self.actives["c2"]
        self.c.cut(self.c.coords[lost].name)  # the machine is gone: its link, then its process
        self.c.kill_coordinator(lost)
        t0 = time.time()
        standby = self.c.wait_active("c2", timeout=20)
        took = time.time() - t0
        self.assertNotEqual(standby, lost)
        time.sleep(3)
        work.finish()
        self.c.heal()
        print("c2's machine lost: its standby active after %.1f s; %d answers, %d failovers" %
              (took, len(work.answers), work.failovers))
        self.assertLess(took, 10)
        self.check_invariants(work)
        self.assertGreater(work.failovers, 0, "its clients went to another coordinator")

    def test_an_active_cut_off_steps_down_and_its_standby_takes_over(self):
        work = Workload(self)
        work.start()
        time.sleep(2)
        cut = self.actives["c1"]
        old = self.c.coords[cut].proc
        self.c.cut(self.c.coords[cut].name)  # alive, but reaches neither store nor shards
        t0 = time.time()
        standby = self.c.wait_active("c1", timeout=20)
        took = time.time() - t0
        self.assertNotEqual(standby, cut)
        self.assertTrue(old.wait(20), "cut off from its store, the old active stepped down")
        self.assertEqual(old.exit_status(), 3)
        time.sleep(2)
        self.c.heal()
        time.sleep(2)
        work.finish()
        print("c1's active cut off: its standby active after %.1f s; %d answers" %
              (took, len(work.answers)))
        term = int(self.c.store_psql("SELECT term FROM dtx_store.leases WHERE node = 'c1'")[0][0])
        stale = self.c.store_psql("SELECT pos, term FROM dtx_store.records WHERE node = 'c1' "
                                  "AND term <> %d" % term)
        self.assertEqual(stale, [], "nothing written by the old active after the takeover")
        self.check_invariants(work)
