"""harness.py - what the integration and fault tests share: a cluster per
test class, and helpers that look at what a user would check (rows in
PostgreSQL, pg_prepared_xacts, the HTTP answer, PostgreSQL's own log)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

import dtx_cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = dtx_cluster.work_dir("test-clusters", "DTX_TEST_DIR")

# PostgreSQL logs every statement, so a test can check what dtx sent it.
LOG_STATEMENTS = ["log_statement = 'all'", "log_line_prefix = '%m [%p] '"]


class ClusterTest(unittest.TestCase):
    """One cluster for all tests of a class; class attributes configure it."""

    SHARDS = 3
    COORD = {}
    AGENT = {}
    PG = LOG_STATEMENTS
    XID_EPOCH = None
    HOSTS = False  # True: every daemon on a host of its own (dtx_cluster.Cluster, hosts)
    COORDINATORS = None  # node_id of each coordinator process (dtx_cluster.Cluster)
    STORE = None  # "postgres": the coordinators' decisions in a PostgreSQL server
    STORE_LEASE_MS = 2000
    TLS = False  # HTTPS on every link, with test certificates (dtx_cluster.Cluster, tls)
    NAMES = False  # hosts only: daemons named by host names (dtx_cluster.Cluster, names)

    @classmethod
    def setUpClass(cls):
        missing = [t for t in ("ip", "nft") if cls.HOSTS and not shutil.which(t)]
        if missing:
            raise RuntimeError("hosts of their own need %s (iproute2, nftables: tools/install-deps "
                               "installs them)" % " and ".join(missing))
        os.makedirs(WORK, exist_ok=True)
        os.chmod(WORK, 0o755)
        d = os.path.join(WORK, "%s-%d" % (cls.__name__, os.getpid()))
        shutil.rmtree(d, ignore_errors=True)
        cls.c = dtx_cluster.Cluster(d, shards=cls.SHARDS, coord=dict(cls.COORD),
                                    agent=dict(cls.AGENT), pg=list(cls.PG),
                                    xid_epoch=cls.XID_EPOCH, hosts=cls.HOSTS,
                                    coordinators=cls.COORDINATORS, store=cls.STORE,
                                    store_lease_ms=cls.STORE_LEASE_MS, tls=cls.TLS,
                                    names=cls.NAMES)
        cls.c.start()
        cls.failed = False
        for sh in cls.c.shards:
            cls.c.psql(sh.i, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
            cls.c.psql(sh.i, "INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, 100) g")

    @classmethod
    def tearDownClass(cls):
        codes = cls.c.stop()
        reports = sanitizer_reports(cls.c)
        bad = {k: v for k, v in codes.items() if v != 0}
        if bad or reports:
            cls.failed = True
            raise AssertionError("daemons did not stop cleanly: exit statuses %s%s" %
                                 (bad, "".join("\n" + r for r in reports)))
        if not cls.failed:
            shutil.rmtree(cls.c.dir, ignore_errors=True)

    def run(self, result=None):
        before = len(result.failures) + len(result.errors) if result else 0
        r = super().run(result)
        if result and len(result.failures) + len(result.errors) > before:
            type(self).failed = True
            self.dump_logs()
        return r

    def dump_logs(self):
        logs = [co.proc.log for co in self.c.coords if co.proc] + \
            [sh.agent.log for sh in self.c.shards if sh.agent]
        for path in logs:
            sys.stdout.write("\n--- last lines of %s ---\n%s" % (path, dtx_cluster.tail(path, 25)))

    # ---- helpers -------------------------------------------------------------

    def balance(self, shard, acct):
        rows = self.c.psql(shard, "SELECT balance FROM accounts WHERE id = %d" % acct)
        return int(rows[0][0]) if rows else None

    def total(self, options=None):
        return sum(int(self.c.psql(sh.i, "SELECT sum(balance) FROM accounts",
                                   options=options)[0][0])
                   for sh in self.c.shards)

    def prepare_by_hand(self, shard, gid, acct=None, delta=1):
        """A transaction prepared without dtx (what a lost coordinator or phase 2 leaves
        behind), adding delta to acct's balance when acct is given (and holding its row);
        rolled back after the test if it is still prepared. Returns gid."""
        write = ("UPDATE accounts SET balance = balance + %d WHERE id = %d; " % (delta, acct)
                 if acct is not None else "")
        self.c.psql(shard, "BEGIN; %sPREPARE TRANSACTION '%s'" % (write, gid))
        self.addCleanup(self.rollback_by_hand, shard, gid)
        return gid

    def rollback_by_hand(self, shard, gid):
        """Rolls gid (dtx's or not) back if it is still prepared on shard."""
        if [gid] in self.c.psql(shard, "SELECT gid FROM pg_prepared_xacts"):
            self.c.psql(shard, "ROLLBACK PREPARED '%s'" % gid)

    def assert_no_prepared(self, timeout=0):
        """No dtx: prepared transaction on any shard (within timeout seconds)."""
        end = time.time() + timeout
        while True:
            left = {sh.name: self.c.prepared(sh.i) for sh in self.c.shards}
            if not any(left.values()) or time.time() >= end:
                break
            time.sleep(0.1)
        self.assertEqual({k: v for k, v in left.items() if v}, {})

    def pg_log(self, shard):
        path = os.path.join(self.c.shard(shard).dir, "postgres.log")
        with open(path, errors="replace") as f:
            return f.read()

    def statements_for(self, shard, gtid):
        """Statements PostgreSQL logged on a shard that name this transaction's gid."""
        gid = "dtx:%s:%s" % (gtid, self.c.shard(shard).name)
        return [line for line in self.pg_log(shard).splitlines() if gid in line]

    def hup(self, proc):
        """SIGHUP to proc; waits for its log to say how the reload went; returns that line."""
        def said():
            return [ln for ln in proc.log_text().splitlines()
                    if "tokens reloaded" in ln or "could not reload the tokens" in ln]
        before = len(said())
        proc.signal(signal.SIGHUP)
        end = time.time() + 10
        while time.time() < end:
            lines = said()
            if len(lines) > before:
                return lines[-1]
            time.sleep(0.05)
        self.fail("%s did not say it reloaded" % proc.name)

    def ctl(self, *args, json_out=False):
        """dtxctl against the coordinator: (exit status, stdout (parsed when json_out and
        not empty), stderr)."""
        cmd = [os.path.join(self.c.bindir, "dtxctl"), "--coordinator", self.c.url()]
        r = subprocess.run(cmd + list(args) + (["--json"] if json_out else []),
                           capture_output=True, text=True, timeout=120)
        out = json.loads(r.stdout) if json_out and r.stdout.strip() else r.stdout
        return r.returncode, out, r.stderr

    def pair_transfer(self, acct, amount=5):
        """Moves amount from account acct on s1 to account acct on s2: (status, body), or
        (None, the error) when no answer came."""
        try:
            return self.c.request("POST", "/v1/transactions",
                                  {"ops": transfer_ops("s1", acct, "s2", acct, amount)}, timeout=20)
        except OSError as e:
            return None, e

    def keep_acceptor_rows(self, wait=True):
        """Restarts the coordinator so that it never tells the shards to forget a finished
        3PC transaction's acceptor state: its rows stay, to be looked at after the answer.
        Restarted as usual when the test ends (wait=False: without waiting for it, for a
        test that leaves a shard cut off until a later clean-up heals it)."""
        self.c.stop_coordinator()
        self.c.start_coordinator(env={"DTX_FAILPOINTS": "coord.acceptors_forget=error"})
        self.addCleanup(self.c.start_coordinator, wait=wait)
        self.addCleanup(self.c.stop_coordinator)

    def wait_for(self, pred, timeout=10, what="condition"):
        end = time.time() + timeout
        while time.time() < end:
            if pred():
                return
            time.sleep(0.05)
        self.fail("timed out waiting for %s" % what)


def sanitizer_reports(c):
    """Sanitizer findings in any daemon log of the cluster (the tests run sanitized builds)."""
    found = []
    logs = [os.path.join(co.dir, "coordinator.log") for co in c.coords] + \
        [os.path.join(sh.dir, "participant.log") for sh in c.shards]
    for path in logs:
        try:
            with open(path, errors="replace") as f:
                text = f.read()
        except OSError:
            continue
        for marker in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
            if marker in text:
                i = text.index(marker)
                found.append("%s:\n%s" % (path, text[max(0, i - 200):i + 2500]))
    return found


def transfer_ops(src_shard, src, dst_shard, dst, amount):
    return [
        {"shard": src_shard, "sql": "UPDATE accounts SET balance = balance - $1 "
                                    "WHERE id = $2 AND balance >= $1",
         "params": [amount, src], "expect_rows": 1},
        {"shard": dst_shard, "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
         "params": [amount, dst], "expect_rows": 1},
    ]


# The ledger the chaos tests and the soak keep: a row for each leg of a transfer, so that
# afterwards each committed transfer shows as both of its legs, and an aborted one as neither.
LEDGER_DDL = ("CREATE TABLE ledger (transfer_id text, leg int, account int NOT NULL, "
              "amount bigint NOT NULL, PRIMARY KEY (transfer_id, leg))")


def ledger_transfer_ops(tid, src_shard, src, dst_shard, dst, amount):
    """transfer_ops, each leg followed by its ledger row (LEDGER_DDL)."""
    debit, credit = transfer_ops(src_shard, src, dst_shard, dst, amount)
    return [debit,
            {"shard": src_shard, "sql": "INSERT INTO ledger VALUES ($1, 0, $2, $3)",
             "params": [tid, src, -amount]},
            credit,
            {"shard": dst_shard, "sql": "INSERT INTO ledger VALUES ($1, 1, $2, $3)",
             "params": [tid, dst, amount]}]


def random_ledger_transfer(rng, tid, shards, accounts, base=0):
    """ledger_transfer_ops of 1 to 50 between two of shards, from and to accounts base + 1
    to base + accounts, drawn from rng (a seed gives the same transfers)."""
    src_shard, dst_shard = rng.sample(shards, 2)
    src, dst = base + rng.randint(1, accounts), base + rng.randint(1, accounts)
    return ledger_transfer_ops(tid, src_shard, src, dst_shard, dst, rng.randint(1, 50))


def parallel(n, fn):
    """Runs fn(i) in n threads; returns the results in order (re-raises the first error)."""
    out = [None] * n
    errs = []

    def run(i):
        try:
            out[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


PREPARE_RE = re.compile(r"PREPARE TRANSACTION")
COMMIT_PREPARED_RE = re.compile(r"COMMIT PREPARED")


class InteractiveMixin:
    """Calls of an interactive transaction, for a ClusterTest."""

    def begin(self, **kw):
        body = {"interactive": True}
        body.update(kw)
        status, ans = self.c.request("POST", "/v1/transactions", body)
        self.assertEqual(status, 201, ans)
        self.assertEqual(ans["status"], "active")
        return ans["gtid"]

    def ops(self, gtid, *ops):
        return self.c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": list(ops)})

    def commit(self, gtid):
        return self.c.request("POST", "/v1/transactions/%s/commit" % gtid, {})

    def abort(self, gtid):
        return self.c.request("POST", "/v1/transactions/%s/abort" % gtid, {})


def sql(shard, text, *params, **kw):
    """One op on shard: sql with its params, and expect_rows and the like as keywords."""
    op = {"shard": shard, "sql": text}
    if params:
        op["params"] = list(params)
    op.update(kw)
    return op
