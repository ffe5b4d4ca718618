#!/usr/bin/python3
"""make demo: a 3-shard dtx cluster, a bank, one cross-shard transfer that
commits and one that aborts (insufficient funds), with the balances on every
shard before and after and the coordinator's JSON answers; then the same
transfer as an interactive transaction, and what `dtxctl status` shows."""

import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dtx_cluster  # noqa: E402

ACCOUNTS = ["acct:%d" % i for i in range(1, 7)]


def banner(text):
    print("\n== %s %s" % (text, "=" * max(0, 70 - len(text))))


def show_balances(c):
    for sh in c.shards:
        rows = c.psql(sh.i, "SELECT id, balance FROM accounts ORDER BY id")
        print("  %s: %s" % (sh.name, ", ".join("%s=%s" % (r[0], r[1]) for r in rows) or "(none)"))


def route(c, key):
    status, body = c.request("GET", "/v1/route?key=" + key)
    assert status == 200, body
    return body["shard"]


def transfer(c, src, dst, amount, key):
    ops = [
        {"key": src, "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2 AND balance >= $1",
         "params": [amount, src], "expect_rows": 1},
        {"key": dst, "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
         "params": [amount, dst], "expect_rows": 1},
    ]
    body = {"idempotency_key": key, "ops": ops}
    print("  POST /v1/transactions")
    print("  " + json.dumps(body))
    status, answer = c.request("POST", "/v1/transactions", body)
    print("  -> HTTP %d %s" % (status, json.dumps(answer)))
    return answer


def interactive_transfer(c, src, dst, amount):
    """The same transfer as an interactive transaction: read, decide, write, commit."""
    banner("an interactive transaction: read %s's balance, decide, then move %d" % (src, amount))
    status, begun = c.request("POST", "/v1/transactions", {"interactive": True})
    gtid = begun["gtid"]
    print("  POST /v1/transactions {\"interactive\": true} -> HTTP %d %s" % (status, json.dumps(begun)))
    status, read = c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": [
        {"key": src, "sql": "SELECT balance FROM accounts WHERE id = $1 FOR UPDATE",
         "params": [src]}]})
    balance = read["results"][0]["rows"][0][0]
    if balance < amount:
        print("  POST .../ops (read) -> HTTP %d, balance %d: too little, so abort" % (status, balance))
        c.request("POST", "/v1/transactions/%s/abort" % gtid, {})
        return False
    print("  POST .../ops (read) -> HTTP %d, balance %d: enough, so write" % (status, balance))
    status, wrote = c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": [
        {"key": src, "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
         "params": [amount, src], "expect_rows": 1},
        {"key": dst, "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
         "params": [amount, dst], "expect_rows": 1}]})
    print("  POST .../ops (write) -> HTTP %d" % status)
    if status != 200:
        print("  " + json.dumps(wrote))
        return False
    status, done = c.request("POST", "/v1/transactions/%s/commit" % gtid, {})
    print("  POST .../commit -> HTTP %d %s" % (status, json.dumps(done)))
    show_balances(c)
    return done.get("status") == "committed"


def main():
    root = dtx_cluster.make_temp_dir("dtx-demo-")
    c = dtx_cluster.Cluster(os.path.join(root, "cluster"), shards=3)
    banner("starting 3 PostgreSQL shards, 3 participants and a coordinator")
    ok_run = False
    try:
        c.start()
        print("  coordinator %s; shards %s" % (c.url(), ", ".join(s.name for s in c.shards)))
        banner("creating table accounts on every shard; each key lives on its hash slot's shard")
        for sh in c.shards:
            c.psql(sh.i, "CREATE TABLE accounts (id text PRIMARY KEY, balance int NOT NULL "
                         "CHECK (balance >= 0))")
        homes = {}
        for acct in ACCOUNTS:
            homes[acct] = route(c, acct)
            c.psql(homes[acct], "INSERT INTO accounts VALUES ('%s', 100)" % acct)
        src = ACCOUNTS[0]
        dst = next(a for a in ACCOUNTS if homes[a] != homes[src])
        print("  %s lives on %s, %s on %s" % (src, homes[src], dst, homes[dst]))
        banner("balances before")
        show_balances(c)

        banner("transfer 30 from %s to %s (two shards, one transaction)" % (src, dst))
        ok = transfer(c, src, dst, 30, "demo-transfer-1")
        banner("transfer 1000 from %s to %s: insufficient funds, so expect_rows fails" % (src, dst))
        bad = transfer(c, src, dst, 1000, "demo-transfer-2")

        banner("balances after: the first transfer on both shards, the second on neither")
        show_balances(c)
        total = sum(int(r[0]) for sh in c.shards
                    for r in c.psql(sh.i, "SELECT coalesce(sum(balance), 0) FROM accounts"))
        print("  total money: %d (it was %d)" % (total, 100 * len(ACCOUNTS)))
        left = sum(len(c.prepared(sh.i)) for sh in c.shards)
        print("  dtx prepared transactions left on the shards: %d" % left)

        banner("what the coordinator recorded")
        for ans in (ok, bad):
            status, state = c.request("GET", "/v1/transactions/" + ans["gtid"])
            print("  GET /v1/transactions/%s -> %s" % (ans["gtid"], json.dumps(state)))
        status, again = c.request("POST", "/v1/transactions", {
            "idempotency_key": "demo-transfer-1", "ops": [
                {"key": src, "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2 "
                                    "AND balance >= $1", "params": [30, src], "expect_rows": 1},
                {"key": dst, "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
                 "params": [30, dst], "expect_rows": 1}]})
        print("  retrying transfer 1 with its idempotency key returns the first outcome, "
              "without running it again: HTTP %d gtid %s" % (status, again.get("gtid")))
        inter = interactive_transfer(c, src, dst, 5)
        banner("what an operator sees: dtxctl status")
        ctl = subprocess.run([os.path.join(c.bindir, "dtxctl"), "--coordinator", c.url(),
                              "status"], capture_output=True, text=True)
        print("  " + ctl.stdout.rstrip().replace("\n", "\n  "))
        ok_run = ok.get("status") == "committed" and bad.get("status") == "aborted" and \
            total == 100 * len(ACCOUNTS) and left == 0 and again.get("gtid") == ok.get("gtid") \
            and inter and ctl.returncode == 0
    finally:
        banner("stopping the cluster")
        c.stop()
        shutil.rmtree(root, ignore_errors=True)
    print("\ndemo %s" % ("finished: everything as expected" if ok_run else "FAILED"))
    return 0 if ok_run else 1


if __name__ == "__main__":
    sys.exit(main())
