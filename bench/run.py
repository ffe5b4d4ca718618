#!/usr/bin/python3
"""bench/run.py - make bench: dtx against hand-rolled 2PC and a local transaction.

  bench/run.py [--shards 2] [--levels 1,8,32,64] [--seconds 10] [--warmup 2]
               [--memory-seconds 600] [--wide 4,8] [--out build/bench]

On one local cluster with durable PostgreSQL settings (fsync, synchronous
commit, full-page writes all on) it runs, at each concurrency level and in
the same run so that ratios are comparable on a noisy machine:
  hand-rolled  dtx-handrolled --mode 2pc (libpq, no coordinator, no log)
  local        dtx-handrolled --mode local (both UPDATEs in one transaction on one shard)
  dtx          dtx-loadgen against the coordinator (transfers across two shards)
  dtx-1pc      dtx-loadgen with both accounts on one shard (the one-phase path)
  dtx-3pc      dtx-loadgen with "protocol": "3pc" (three-phase commit, two shards)
  dtx-pgstore  dtx (2PC) on a second cluster whose coordinator keeps its decisions in a
               PostgreSQL store (same settings) instead of the local file log
then transactions across 4 and 8 shards on an 8-shard cluster, and a long
dtx run watching the coordinator's memory. It reports throughput,
p50/p99/max latency, whole-machine CPU per transaction, forced writes per
commit (decision-log fsyncs, and PostgreSQL WAL syncs on all shards from
pg_stat_wal), the ratios and the targets; writes results.json and chart.png;
and checks that balances are conserved and nothing is left prepared.

  bench/run.py --compare-bin DIR [--levels 1,32] [--rounds N] [--seconds S]
               [--new-bin DIR2] [--protocol 2pc|3pc]

A/B mode: two builds of dtx on this machine in one run. DIR holds the other
build's binaries (dtx-coordinator, dtx-participant, dtx-loadgen), directly or
in DIR/bin. Two clusters with the same settings and data are started, "base"
on DIR's binaries and "new" on this checkout's bin/ (or DIR2's); at each
level, in each round, dtx runs on one then the other, the order swapped
every other round (--protocol 3pc: the transactions ask for three-phase
commit). It reports tx/s, p50 and p99 of each, new/base ratios
and the p50 difference, checks both clusters' balances, and writes
compare.json (no hand-rolled, memory or wide runs).
"""

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.path.join(ROOT, "bin")
sys.path.insert(0, os.path.join(ROOT, "tools"))
import dtx_cluster  # noqa: E402

ACCOUNTS = 10000
START = 1000000
DURABLE_PG = ["fsync = on", "synchronous_commit = on", "full_page_writes = on",
              "max_connections = 200", "max_prepared_transactions = 200",
              "shared_buffers = 128MB"]


def cpu_busy():
    """Seconds of CPU the whole machine spent busy so far (all cores)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def metric(c, name):
    status, text = c.request("GET", "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def machine():
    info = {"cores": os.cpu_count(), "kernel": platform.release()}
    try:
        with open("/proc/meminfo") as f:
            info["mem_gib"] = round(int(f.readline().split()[1]) / 1048576, 1)
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return info


def setup_accounts(c):
    for sh in c.shards:
        c.psql(sh.i, "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL); "
                     "INSERT INTO accounts SELECT g, %d FROM generate_series(1, %d) g"
                     % (START, ACCOUNTS))
        c.psql(sh.i, "VACUUM ANALYZE accounts")


def measured(cmd, warmup, out_json):
    """Runs a load tool; returns its JSON with whole-machine CPU per tx in the window."""
    sample = {}

    def after_warmup():
        time.sleep(warmup)
        sample["cpu0"] = cpu_busy()
        sample["t0"] = time.time()

    t = threading.Thread(target=after_warmup)
    t.start()
    subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    cpu1, t1 = cpu_busy(), time.time()
    t.join()
    with open(out_json) as f:
        r = json.load(f)
    committed = r.get("committed", 0)
    r["machine_cpu_s"] = round(cpu1 - sample["cpu0"], 2)
    r["cpu_us_per_tx"] = round(1e6 * (cpu1 - sample["cpu0"]) / committed, 1) if committed else None
    r["machine_busy_pct"] = round(100 * (cpu1 - sample["cpu0"]) /
                                  ((t1 - sample["t0"]) * os.cpu_count()), 1)
    return r


def run_handrolled(c, mode, level, a, tmp):
    out = os.path.join(tmp, "hr.json")
    cmd = [os.path.join(BIN, "dtx-handrolled"), "--mode", mode, "--conninfo",
           c.shards[0].conninfo(), "--conninfo", c.shards[1].conninfo(), "--accounts",
           str(ACCOUNTS), "--concurrency", str(level), "--seconds", str(a.seconds), "--warmup",
           str(a.warmup), "--json", out]
    return measured(cmd, a.warmup, out)


def wal_syncs(c):
    """WAL syncs (fsync/fdatasync of WAL) of every shard's PostgreSQL so far."""
    return sum(int(c.psql(sh.i, "SELECT wal_sync FROM pg_stat_wal")[0][0]) for sh in c.shards)


def run_dtx(c, level, a, tmp, per_tx=2, shards=None, seconds=None, bindir=BIN, protocol=None):
    out = os.path.join(tmp, "lg.json")
    names = shards or [s.name for s in c.shards[:2]]
    syncs0 = metric(c, "dtx_decision_log_syncs_total")
    comm0 = metric(c, 'dtx_transactions_total{outcome="committed"}')
    wal0 = wal_syncs(c)
    cmd = [os.path.join(bindir, "dtx-loadgen"), "--url", c.url(), "--shards", ",".join(names),
           "--accounts", str(ACCOUNTS), "--concurrency", str(level), "--shards-per-tx",
           str(per_tx), "--seconds", str(seconds or a.seconds), "--warmup", str(a.warmup),
           "--json", out] + (["--protocol", protocol] if protocol else [])
    r = measured(cmd, a.warmup, out)
    syncs = metric(c, "dtx_decision_log_syncs_total") - syncs0
    comm = metric(c, 'dtx_transactions_total{outcome="committed"}') - comm0
    wal = wal_syncs(c) - wal0
    r["log_fsyncs_per_commit"] = round(syncs / comm, 3) if comm else None
    r["wal_syncs_per_commit"] = round(wal / comm, 3) if comm else None
    r["coordinator_rss_kb"] = rss_kb(c.coordinator.pid)
    return r


def mean_of(rs):
    """The mean of several runs' figures (max for max), keeping every run under 'runs'."""
    out = {}
    for k, v in rs[0].items():
        vals = [r[k] for r in rs if isinstance(r.get(k), (int, float))]
        if len(vals) != len(rs):
            out[k] = v
        elif k.startswith("max"):
            out[k] = max(vals)
        else:
            out[k] = round(sum(vals) / len(vals), 3)
    out["runs"] = rs
    return out


def conserved(c, shards):
    total = sum(int(c.psql(i, "SELECT sum(balance) FROM accounts")[0][0]) for i in range(shards))
    left = sum(len(c.psql(i, "SELECT gid FROM pg_prepared_xacts")) for i in range(shards))
    return {"total_ok": total == START * ACCOUNTS * shards, "total": total,
            "prepared_left": left}


def row(name, r):
    return "| %-11s | %8.0f | %7.2f | %7.2f | %8.1f | %7s | %5s%% | %s |" % (
        name, r["tps"], r["p50_ms"], r["p99_ms"], r["max_ms"],
        "%.0f" % r["cpu_us_per_tx"] if r.get("cpu_us_per_tx") else "-",
        "%.0f" % (100 * r["generator_cpu_s"] / r["seconds"] / os.cpu_count()),
        " / ".join("%.0f" % x["tps"] for x in r.get("runs", [])))


def main_runs(a, tmp, results):
    c = dtx_cluster.Cluster(os.path.join(tmp, "c2"), shards=a.shards, fsync=True, pg=DURABLE_PG,
                            bindir=BIN, agent={"pool_size": a.pool})
    cp = dtx_cluster.Cluster(os.path.join(tmp, "cpg"), shards=a.shards, fsync=True,
                             pg=DURABLE_PG, bindir=BIN, agent={"pool_size": a.pool},
                             store="postgres", store_lease_ms=5000)
    c.start()
    try:
        cp.start()
    except Exception:
        c.stop()
        raise
    try:
        setup_accounts(c)
        setup_accounts(cp)
        for level in a.levels:
            entry = {"concurrency": level}
            rounds = {"handrolled": [], "local": [], "dtx": [], "dtx_1pc": [], "dtx_3pc": [],
                      "dtx_pgstore": []}
            runs = [("handrolled", lambda: run_handrolled(c, "2pc", level, a, tmp)),
                    ("dtx", lambda: run_dtx(c, level, a, tmp)),
                    ("local", lambda: run_handrolled(c, "local", level, a, tmp)),
                    ("dtx_3pc", lambda: run_dtx(c, level, a, tmp, protocol="3pc")),
                    ("dtx_pgstore", lambda: run_dtx(cp, level, a, tmp)),
                    ("dtx_1pc", lambda: run_dtx(c, level, a, tmp, per_tx=1))]
            for r in range(a.rounds):
                # alternating, so drift on a noisy machine hits all alike; every other round
                # in reverse, so that no contender always runs right after the same other one
                for name, run in (runs if r % 2 == 0 else runs[::-1]):
                    rounds[name].append(run())
            for name, rs in rounds.items():
                entry[name] = mean_of(rs)
            entry["ratio_dtx_handrolled"] = round(entry["dtx"]["tps"] / entry["handrolled"]["tps"], 3)
            entry["ratio_dtx_local"] = round(entry["dtx"]["tps"] / entry["local"]["tps"], 3)
            entry["ratio_3pc_2pc"] = round(entry["dtx_3pc"]["tps"] / entry["dtx"]["tps"], 3)
            entry["ratio_pgstore_file"] = round(entry["dtx_pgstore"]["tps"] / entry["dtx"]["tps"],
                                                3)
            results["levels"].append(entry)
            print("\nconcurrency %d:\n| system      |     tx/s | p50 ms  | p99 ms  |   max ms | CPU µs/tx | load gen | each run |" % level)
            print("|---|---|---|---|---|---|---|---|")
            for name in ("handrolled", "local", "dtx", "dtx_3pc", "dtx_pgstore", "dtx_1pc"):
                print(row(name, entry[name]))
            print("dtx/hand-rolled %.2f, dtx/local %.2f, 3PC/2PC %.2f, postgres store/file log %.2f"
                  % (entry["ratio_dtx_handrolled"], entry["ratio_dtx_local"],
                     entry["ratio_3pc_2pc"], entry["ratio_pgstore_file"]))
            print("decision-store writes per commit: file log %s, postgres store %s" %
                  (entry["dtx"]["log_fsyncs_per_commit"],
                   entry["dtx_pgstore"]["log_fsyncs_per_commit"]))
            print("forced writes per commit: decision log 2PC %s, 3PC %s; PostgreSQL WAL syncs "
                  "(all shards) 2PC %s, 3PC %s, one shard %s" %
                  (entry["dtx"]["log_fsyncs_per_commit"], entry["dtx_3pc"]["log_fsyncs_per_commit"],
                   entry["dtx"]["wal_syncs_per_commit"], entry["dtx_3pc"]["wal_syncs_per_commit"],
                   entry["dtx_1pc"]["wal_syncs_per_commit"]), flush=True)
        if a.memory_seconds > 0:
            results["memory"] = memory_run(c, a, tmp)
        results["checks_main"] = conserved(c, a.shards)
        results["checks_pgstore"] = conserved(cp, a.shards)
    finally:
        cp.stop()
        c.stop()


def memory_run(c, a, tmp):
    """A long dtx run sampling the coordinator's RSS and retained transactions every 10 s.
    Memory grows while finished transactions fill the retention (retention_max of them,
    kept for GET and idempotent retries), then must stay flat: 'steady' is the RSS at the
    first sample with the retention full, compared with the end."""
    pid = c.coordinator.pid
    samples = []
    stop = threading.Event()
    t0 = time.time()

    def watch():
        while not stop.wait(10):
            samples.append({"s": round(time.time() - t0), "rss_kb": rss_kb(pid),
                            "retained": int(metric(c, "dtx_transactions_retained"))})

    t = threading.Thread(target=watch)
    t.start()
    r = run_dtx(c, 32, a, tmp, seconds=a.memory_seconds)
    stop.set()
    t.join()
    samples = [x for x in samples if x["rss_kb"]]
    cap = max(x["retained"] for x in samples) if samples else 0
    # retention_max is enforced each second, so the count wobbles just above it once full
    full = next((x for x in samples if x["retained"] >= 0.97 * cap), None) if cap else None
    out = {"seconds": a.memory_seconds, "tps": r["tps"], "samples": samples,
           "rss_kb_start": samples[0]["rss_kb"] if samples else None,
           "retention_full_at_s": full["s"] if full else None,
           "rss_kb_steady": full["rss_kb"] if full else None,
           "rss_kb_end": samples[-1]["rss_kb"] if samples else None,
           "rss_kb_max": max(x["rss_kb"] for x in samples) if samples else None,
           "retained_max": cap}
    print("\nmemory: %d s of dtx at 32 clients (%.0f tx/s): coordinator RSS %s kB at 10 s, "
          "%s kB when the retention filled (%s transactions, at %s s), %s kB at the end, "
          "%s kB at most" % (a.memory_seconds, r["tps"], out["rss_kb_start"], out["rss_kb_steady"],
                             cap, out["retention_full_at_s"], out["rss_kb_end"],
                             out["rss_kb_max"]), flush=True)
    return out


def wide_runs(a, tmp, results):
    if not a.wide:
        return
    n = max(a.wide)
    c = dtx_cluster.Cluster(os.path.join(tmp, "c8"), shards=n, fsync=True, pg=DURABLE_PG,
                            bindir=BIN, agent={"pool_size": 4})
    c.start()
    try:
        setup_accounts(c)
        names = [s.name for s in c.shards]
        print("\nshards per transaction (an %d-shard cluster):" % n)
        for k in [2] + list(a.wide):
            for level in (1, 8):
                r = run_dtx(c, level, a, tmp, per_tx=k, shards=names)
                results["wide"].append({"shards_per_tx": k, "concurrency": level, **r})
                print("  %d shards, %2d clients: %6.0f tx/s, p50 %.2f ms, p99 %.2f ms" %
                      (k, level, r["tps"], r["p50_ms"], r["p99_ms"]), flush=True)
        results["checks_wide"] = conserved(c, n)
    finally:
        c.stop()


COMPARE_BINS = ("dtx-coordinator", "dtx-participant", "dtx-loadgen")


def compare_bindir(d):
    """The directory holding a build's binaries: DIR/bin if it has them, else DIR itself."""
    for cand in (os.path.join(d, "bin"), d):
        if all(os.access(os.path.join(cand, b), os.X_OK) for b in COMPARE_BINS):
            return os.path.abspath(cand)
    sys.exit("bench: %s (or %s/bin) must hold executable %s" % (d, d, ", ".join(COMPARE_BINS)))


def build_id(bindir):
    ids = {}
    for b in COMPARE_BINS:
        with open(os.path.join(bindir, b), "rb") as f:
            ids[b] = hashlib.sha256(f.read()).hexdigest()[:16]
    return {"bindir": bindir, "sha256": ids}


def compare_runs(a, tmp, results, base_bin, new_bin):
    """Two clusters, one per build, the same settings and data; dtx on each, alternating."""
    builds = (("base", base_bin, a.base_pool or a.pool), ("new", new_bin, a.pool))
    clusters = {}
    try:
        for name, bindir, pool in builds:
            c = dtx_cluster.Cluster(os.path.join(tmp, "c-" + name), shards=a.shards, fsync=True,
                                    pg=DURABLE_PG, bindir=bindir, agent={"pool_size": pool})
            c.start()  # stops what it started if it fails
            clusters[name] = c
            setup_accounts(c)
            print("%s: %s, pool %d, coordinator pid %d" % (name, bindir, pool, c.coordinator.pid),
                  flush=True)
        for level in a.levels:
            runs = {"base": [], "new": []}
            for rnd in range(a.rounds):
                # base first in even rounds, new first in odd ones: neither always goes first
                order = ("base", "new") if rnd % 2 == 0 else ("new", "base")
                for name in order:
                    runs[name].append(run_dtx(clusters[name], level, a, tmp,
                                              bindir=clusters[name].bindir,
                                              protocol=a.protocol))
            entry = {"concurrency": level, "base": mean_of(runs["base"]),
                     "new": mean_of(runs["new"])}
            b, n = entry["base"], entry["new"]
            entry["tps_ratio_new_base"] = round(n["tps"] / b["tps"], 3) if b["tps"] else None
            entry["p50_diff_ms"] = round(n["p50_ms"] - b["p50_ms"], 3)
            entry["p50_ratio_new_base"] = round(n["p50_ms"] / b["p50_ms"], 3) if b["p50_ms"] else None
            entry["p99_ratio_new_base"] = round(n["p99_ms"] / b["p99_ms"], 3) if b["p99_ms"] else None
            # each round's pair, to see how much the ratio moves between rounds
            entry["tps_ratio_per_round"] = [round(x["tps"] / y["tps"], 3) if y["tps"] else None
                                            for x, y in zip(runs["new"], runs["base"])]
            results["levels"].append(entry)
            print("  %2d clients: base %6.0f tx/s p50 %.2f p99 %.2f | new %6.0f tx/s p50 %.2f "
                  "p99 %.2f | new/base %.3f (rounds: %s), p50 %+.3f ms" %
                  (level, b["tps"], b["p50_ms"], b["p99_ms"], n["tps"], n["p50_ms"], n["p99_ms"],
                   entry["tps_ratio_new_base"],
                   " ".join("%.3f" % r for r in entry["tps_ratio_per_round"]),
                   entry["p50_diff_ms"]), flush=True)
        for name, c in clusters.items():
            results["checks_" + name] = conserved(c, a.shards)
    finally:
        for name, c in clusters.items():
            try:
                c.stop()
            except Exception as e:  # stop the other one all the same
                print("bench: stopping the %s cluster: %s" % (name, e), file=sys.stderr)


def compare_report(results):
    m = results["machine"]
    print("\nmachine: %s cores, %s GiB, %s (kernel %s)" %
          (m.get("cores"), m.get("mem_gib"), m.get("cpu", "?"), m.get("kernel")))
    st = results["settings"]
    print("base: %s (pool %d)\nnew:  %s (pool %d)" %
          (results["builds"]["base"]["bindir"], st["participant_pool_base"],
           results["builds"]["new"]["bindir"], st["participant_pool"]))
    print("%d shards, %g s per run after %g s warm-up, %d alternating rounds, mean shown\n" %
          (results["settings"]["shards"], results["settings"]["seconds"],
           results["settings"]["warmup"], results["settings"]["rounds"]))
    print("| clients | base tx/s | new tx/s | new/base | base p50 ms | new p50 ms | p50 diff ms "
          "| p50 new/base | base p99 ms | new p99 ms | p99 new/base |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for e in results["levels"]:
        b, n = e["base"], e["new"]
        print("| %d | %.0f | %.0f | %.3f | %.3f | %.3f | %+.3f | %.3f | %.3f | %.3f | %.3f |" %
              (e["concurrency"], b["tps"], n["tps"], e["tps_ratio_new_base"], b["p50_ms"],
               n["p50_ms"], e["p50_diff_ms"], e["p50_ratio_new_base"], b["p99_ms"], n["p99_ms"],
               e["p99_ratio_new_base"]))
    ok = True
    print()
    for name in ("base", "new"):
        ch = results.get("checks_" + name)
        good = bool(ch) and ch["total_ok"] and ch["prepared_left"] == 0
        ok = ok and good
        print("  [%s] balances conserved, nothing left prepared (%s): %s" %
              ("met" if good else "MISSED", name, json.dumps(ch)))
    return ok


def compare_main(a):
    base_bin = compare_bindir(a.compare_bin)
    new_bin = compare_bindir(a.new_bin) if a.new_bin else BIN
    for b in COMPARE_BINS:
        if not os.access(os.path.join(new_bin, b), os.X_OK):
            sys.exit("bench: %s missing; build first (make all)" % os.path.join(new_bin, b))
    if os.path.realpath(base_bin) == os.path.realpath(new_bin) and not a.base_pool:
        print("bench: base and new are the same binaries: an A/A run, a measure of the noise")
    os.makedirs(a.out, exist_ok=True)
    results = {"mode": "compare", "machine": machine(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "builds": {"base": build_id(base_bin), "new": build_id(new_bin)},
               "settings": {"shards": a.shards, "seconds": a.seconds, "warmup": a.warmup,
                            "rounds": a.rounds, "accounts_per_shard": ACCOUNTS,
                            "participant_pool": a.pool,
                            "participant_pool_base": a.base_pool or a.pool,
                            "postgresql": DURABLE_PG},
               "levels": []}
    print("bench compare: %s" % json.dumps(results["machine"]), flush=True)
    tmp = dtx_cluster.make_temp_dir("dtx-bench-cmp-")
    try:
        compare_runs(a, tmp, results, base_bin, new_bin)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = compare_report(results)
    path = os.path.join(a.out, "compare.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
    print("\nresults: %s" % path)
    return 0 if ok else 1


CHARTED = ("handrolled", "local", "dtx", "dtx_1pc", "dtx_3pc")


def chart(results, out_dir):
    data = os.path.join(out_dir, "chart.dat")
    with open(data, "w") as f:
        f.write("# clients handrolled local dtx dtx_1pc dtx_3pc p99: handrolled local dtx "
                "dtx_1pc dtx_3pc\n")
        for e in results["levels"]:
            f.write("%d %s %s\n" % (e["concurrency"],
                                    " ".join("%.1f" % e[k]["tps"] for k in CHARTED),
                                    " ".join("%.3f" % e[k]["p99_ms"] for k in CHARTED)))
    png = os.path.join(out_dir, "chart.png")
    script = """
set terminal pngcairo size 1100,450 font ",10"
set output '%s'
set multiplot layout 1,2 title "dtx vs hand-rolled 2PC vs one local transaction (%s)"
set logscale x 2
set xlabel "concurrent clients"
set key top left
set grid
set ylabel "transactions/s"
plot for [i=2:6] '%s' using 1:i with linespoints lw 2 title word("hand-rolled-2PC local dtx-2PC dtx-1-shard dtx-3PC", i-1)
set ylabel "p99 latency (ms)"
set key top left
plot for [i=7:11] '%s' using 1:i with linespoints lw 2 title word("hand-rolled-2PC local dtx-2PC dtx-1-shard dtx-3PC", i-6)
unset multiplot
""" % (png, "%(cores)s cores" % results["machine"], data, data)
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        print("chart: gnuplot failed: %s" % r.stderr)
    return png


def targets(results):
    lv = {e["concurrency"]: e for e in results["levels"]}
    t = []
    for c in (32, 64):
        if c in lv:
            t.append(("dtx throughput at %d clients >= 0.9 x hand-rolled" % c,
                      lv[c]["ratio_dtx_handrolled"] >= 0.9, "%.2f" % lv[c]["ratio_dtx_handrolled"]))
    if 1 in lv:
        d = lv[1]["dtx"]["p50_ms"] - lv[1]["handrolled"]["p50_ms"]
        t.append(("p50 at 1 client <= hand-rolled p50 + 0.5 ms", d <= 0.5, "%+.2f ms" % d))
    if 32 in lv:
        f = lv[32]["dtx"]["log_fsyncs_per_commit"]
        t.append(("decision-log fsyncs per commit at 32 clients <= 0.25", f is not None and f <= 0.25,
                  "%s" % f))
    m = results.get("memory")
    if m and m.get("rss_kb_steady"):
        grow = m["rss_kb_end"] / m["rss_kb_steady"]
        t.append(("coordinator RSS flat once the retention is full (end <= 1.1 x then)",
                  grow <= 1.1, "%s kB at %s s -> %s kB at %d s (%s kB at 10 s)" %
                  (m["rss_kb_steady"], m["retention_full_at_s"], m["rss_kb_end"], m["seconds"],
                   m["rss_kb_start"])))
    for k in ("checks_main", "checks_pgstore", "checks_wide"):
        if k in results:
            ok = results[k]["total_ok"] and results[k]["prepared_left"] == 0
            t.append(("balances conserved, nothing left prepared (%s)" % k, ok,
                      json.dumps(results[k])))
    return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--levels", default="1,8,32,64")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--memory-seconds", type=float, default=600)
    ap.add_argument("--wide", default="4,8")
    ap.add_argument("--pool", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    ap.add_argument("--compare-bin", metavar="DIR",
                    help="A/B mode: compare the build in DIR (base) with bin/ (new)")
    ap.add_argument("--new-bin", metavar="DIR",
                    help="with --compare-bin: the new build's binaries instead of bin/")
    ap.add_argument("--base-pool", type=int, metavar="N",
                    help="with --compare-bin: the base cluster's agents' pool_size (default --pool)")
    ap.add_argument("--protocol", choices=("2pc", "3pc"),
                    help="with --compare-bin: the protocol the transactions ask for (default 2pc)")
    a = ap.parse_args()
    a.levels = [int(x) for x in a.levels.split(",") if x]
    a.wide = [int(x) for x in a.wide.split(",") if x]
    if any(not 2 <= n <= 8 for n in a.wide):
        sys.exit("bench: --wide takes shard counts of 2 to 8 (\"\" for no such runs)")
    if not 2 <= a.shards <= 8:
        sys.exit("bench: --shards must be 2 to 8")
    if (a.new_bin or a.protocol or a.base_pool) and not a.compare_bin:
        sys.exit("bench: --new-bin, --protocol and --base-pool go with --compare-bin")
    if a.pool < 1 or (a.base_pool is not None and a.base_pool < 1):
        sys.exit("bench: --pool and --base-pool must be at least 1")
    if a.compare_bin:
        if a.rounds < 1:
            sys.exit("bench: --rounds must be at least 1")
        return compare_main(a)
    os.makedirs(a.out, exist_ok=True)
    tmp = dtx_cluster.make_temp_dir("dtx-bench-")
    results = {"machine": machine(), "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "settings": {"shards": a.shards, "seconds": a.seconds, "warmup": a.warmup,
                            "rounds": a.rounds,
                            "accounts_per_shard": ACCOUNTS, "participant_pool": a.pool,
                            "postgresql": DURABLE_PG},
               "levels": [], "wide": []}
    print("bench: %s" % json.dumps(results["machine"]), flush=True)
    try:
        main_runs(a, tmp, results)
        wide_runs(a, tmp, results)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    results["chart"] = chart(results, a.out)
    results["targets"] = [{"target": n, "met": ok, "measured": v} for n, ok, v in targets(results)]
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print("\ntargets:")
    for t in results["targets"]:
        print("  [%s] %s: %s" % ("met" if t["met"] else "MISSED", t["target"], t["measured"]))
    print("\nresults: %s, chart: %s" % (os.path.join(a.out, "results.json"), results["chart"]))
    checks = [t for t in results["targets"] if t["target"].startswith("balances")]
    return 0 if all(t["met"] for t in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
