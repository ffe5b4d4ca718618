#!/usr/bin/python3
"""dtx_cluster - a throwaway local dtx cluster: N PostgreSQL shards, one
participant per shard, one coordinator.

Used by `make demo`, the integration and fault tests, and the benchmark.

  tools/dtx_cluster.py start --dir DIR [--shards N] [--fsync]
  tools/dtx_cluster.py stop --dir DIR
  tools/dtx_cluster.py status --dir DIR

PostgreSQL refuses to run as root, so when this runs as root every
PostgreSQL command runs as the unprivileged `postgres` user (runuser), in
directories that user owns. Servers listen on unix sockets only, on ports
picked free below the kernel's ephemeral range. Everything started is
recorded in DIR/cluster.json and stopped by pid; nothing is ever killed by
name and no system-wide cluster is touched.
"""

import argparse
import http.client
import json
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def pg_bindir():
    out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
    if out.returncode == 0 and os.path.exists(os.path.join(out.stdout.strip(), "initdb")):
        return out.stdout.strip()
    for v in ("17", "16", "15", "14", "13"):
        d = "/usr/lib/postgresql/%s/bin" % v
        if os.path.exists(os.path.join(d, "initdb")):
            return d
    sys.exit("dtx_cluster: PostgreSQL server binaries not found (install postgresql)")


PGBIN = pg_bindir()
AS_ROOT = os.geteuid() == 0


def pg_user():
    """The user PostgreSQL runs as: `postgres` when we are root, else ourselves."""
    if AS_ROOT:
        return pwd.getpwnam("postgres")
    return pwd.getpwuid(os.geteuid())


def as_pg(cmd):
    return ["runuser", "-u", "postgres", "--"] + cmd if AS_ROOT else cmd


def chown_pg(path):
    if AS_ROOT:
        u = pg_user()
        os.chown(path, u.pw_uid, u.pw_gid)


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except OSError:
        return 32768


def free_ports(n, used=()):
    """n distinct free TCP ports below the ephemeral range (a listener there
    cannot lose its port to an outgoing connection's self-connect)."""
    hi = min(ephemeral_low(), 65536) - 1
    ports = []
    while len(ports) < n:
        p = random.randint(20000, hi)
        if p in ports or p in used:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
            ports.append(p)
        except OSError:
            pass
        finally:
            s.close()
    return ports


def make_temp_dir(prefix):
    """A new temporary directory the postgres user can enter (mkdtemp makes 0700 ones)."""
    import tempfile
    d = tempfile.mkdtemp(prefix=prefix)
    os.chmod(d, 0o755)
    return d


def blocking_dir(path):
    """The first directory above path that the postgres user cannot enter, or None."""
    if not AS_ROOT:
        return None
    p = os.path.dirname(os.path.abspath(path))
    while p and p != "/":
        if os.path.exists(p) and not os.stat(p).st_mode & 0o001:
            return p
        p = os.path.dirname(p)
    return None


def check_traversable(path):
    """PostgreSQL (running as postgres) must be able to reach its data directory."""
    p = blocking_dir(path)
    if p:
        raise RuntimeError("the postgres user cannot enter %s (mode %o); use a directory "
                           "others may traverse" % (p, os.stat(p).st_mode & 0o777))


def work_dir(name, env):
    """Where to keep PostgreSQL data: $env if set; else build/<name> in this checkout when
    the postgres user can reach it (a checkout under /root, mode 0700, cannot); else a
    private temporary directory of this process, removed when it exits."""
    if os.environ.get(env):
        return os.environ[env]
    d = os.path.join(ROOT, "build", name)
    if not blocking_dir(d):
        return d
    import atexit
    tmp = make_temp_dir("dtx-%s-" % name)
    atexit.register(shutil.rmtree, tmp, True)
    return tmp


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r.stdout


_TEMPLATE = []


def template_dir():
    """An initdb'd data directory, made once and copied for every shard."""
    if not _TEMPLATE:
        _TEMPLATE.append(work_dir("pg-template", "DTX_PG_TEMPLATE"))
    base = _TEMPLATE[0]
    check_traversable(os.path.join(base, "data"))
    data = os.path.join(base, "data")
    if os.path.exists(os.path.join(data, "PG_VERSION")):
        return data
    os.makedirs(base, exist_ok=True)
    chown_pg(base)
    tmp = data + ".tmp%d" % os.getpid()
    run(as_pg([os.path.join(PGBIN, "initdb"), "-D", tmp, "--auth=trust", "-U", "postgres",
               "--encoding=UTF8", "--locale=C", "--no-sync"]))
    os.rename(tmp, data)
    return data


class Proc:
    """A daemon we started: its command, log file and pid."""

    def __init__(self, name, cmd, log):
        self.name, self.cmd, self.log, self.pid = name, cmd, log, None
        self.popen = None

    def start(self, env=None):
        """Starts the daemon; env holds extra environment variables (e.g. DTX_FAILPOINTS)."""
        full = dict(os.environ)
        full.pop("DTX_FAILPOINTS", None)
        full.update(env or {})
        logf = open(self.log, "ab")
        self.popen = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full, start_new_session=True)
        logf.close()
        self.pid = self.popen.pid

    def alive(self):
        if self.pid is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
        except (OSError, IndexError):
            return False

    def signal(self, sig):
        if self.pid is not None and self.alive():
            os.kill(self.pid, sig)

    def wait(self, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if not self.alive():
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL if it does not stop in time. Returns the exit code if known."""
        if not self.alive():
            return self.popen.returncode if self.popen else None
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(5)
        return self.popen.returncode if self.popen else None

    def kill(self):
        self.signal(signal.SIGKILL)
        self.wait(5)


class Shard:
    def __init__(self, cluster, i):
        self.i = i
        self.name = "s%d" % (i + 1)
        self.dir = os.path.join(cluster.dir, self.name)
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.pg_port = None
        self.agent_port = None
        self.agent = None

    def conninfo(self):
        return "host=%s port=%d dbname=app user=postgres" % (self.sock, self.pg_port)


class Cluster:
    """A local cluster. Keyword options:
    shards       number of shards (default 3)
    fsync        PostgreSQL fsync (default False: a test machine's page cache
                 survives a process crash; True for benchmarks)
    bindir       where dtx-coordinator and dtx-participant are (default $DTX_BIN or bin/)
    coord        extra coordinator config keys
    agent        extra participant config keys
    pg           extra postgresql.conf lines
    """

    def __init__(self, root_dir, shards=3, fsync=False, bindir=None, coord=None, agent=None,
                 pg=None):
        self.dir = os.path.abspath(root_dir)
        self.nshards = shards
        self.fsync = fsync
        self.bindir = bindir or os.environ.get("DTX_BIN") or os.path.join(ROOT, "bin")
        self.coord_extra = coord or {}
        self.agent_extra = agent or {}
        self.pg_extra = pg or []
        self.shards = [Shard(self, i) for i in range(shards)]
        self.coord_port = None
        self.coordinator = None
        self.coord_dir = os.path.join(self.dir, "coord")
        self.log_dir = os.path.join(self.coord_dir, "log")

    # ---- set-up ---------------------------------------------------------

    def _pg_conf(self, sh):
        lines = [
            "port = %d" % sh.pg_port,
            "listen_addresses = ''",
            "unix_socket_directories = '%s'" % sh.sock,
            "max_connections = 100",
            "max_prepared_transactions = 100",
            "shared_buffers = 64MB",
            "fsync = %s" % ("on" if self.fsync else "off"),
            "synchronous_commit = on",
            "full_page_writes = %s" % ("on" if self.fsync else "off"),
            "logging_collector = off",
            "log_min_messages = warning",
            "dynamic_shared_memory_type = posix",
        ] + list(self.pg_extra)
        with open(os.path.join(sh.data, "postgresql.conf"), "a") as f:
            f.write("\n# dtx_cluster\n" + "\n".join(lines) + "\n")

    def _make_shard(self, sh, template):
        os.makedirs(sh.dir, exist_ok=True)
        chown_pg(sh.dir)
        os.chmod(sh.dir, 0o755)
        run(as_pg(["cp", "-a", template, sh.data]))
        self._pg_conf(sh)

    def pg_start(self, i):
        sh = self.shards[i]
        run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-l",
                   os.path.join(sh.dir, "postgres.log"), "-w", "-t", "60", "start"]))

    def pg_stop(self, i, mode="fast"):
        sh = self.shards[i]
        if os.path.exists(os.path.join(sh.data, "postmaster.pid")):
            subprocess.run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-m", mode, "-w",
                                  "-t", "60", "stop"]), capture_output=True)

    def pg_pid(self, i):
        try:
            with open(os.path.join(self.shards[i].data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def _create_db(self, sh):
        self.psql(sh.i, "CREATE DATABASE app", db="postgres")

    def _agent_proc(self, sh):
        cfg = {"name": sh.name, "listen": "127.0.0.1:%d" % sh.agent_port,
               "conninfo": sh.conninfo(), "coordinator_url": "http://127.0.0.1:%d" % self.coord_port,
               "pool_size": 8}
        cfg.update(self.agent_extra)
        path = os.path.join(sh.dir, "participant.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc(sh.name, [os.path.join(self.bindir, "dtx-participant"), "--config", path],
                    os.path.join(sh.dir, "participant.log"))

    def _coord_proc(self):
        os.makedirs(self.coord_dir, exist_ok=True)
        cfg = {"node_id": "c1", "listen": "127.0.0.1:%d" % self.coord_port,
               "log_dir": self.log_dir,
               "shards": [{"name": s.name, "url": "http://127.0.0.1:%d" % s.agent_port}
                          for s in self.shards]}
        cfg.update(self.coord_extra)
        path = os.path.join(self.coord_dir, "coordinator.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc("coordinator", [os.path.join(self.bindir, "dtx-coordinator"), "--config", path],
                    os.path.join(self.coord_dir, "coordinator.log"))

    def start(self):
        if os.path.exists(self.dir) and os.listdir(self.dir):
            raise RuntimeError("%s is not empty" % self.dir)
        check_traversable(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        template = template_dir()
        ports = free_ports(2 * self.nshards + 1)
        self.coord_port = ports[-1]
        for sh in self.shards:
            sh.pg_port, sh.agent_port = ports[2 * sh.i], ports[2 * sh.i + 1]
        self.save()
        try:
            for sh in self.shards:
                self._make_shard(sh, template)
                self.pg_start(sh.i)
                self._create_db(sh)
            for sh in self.shards:
                sh.agent = self._agent_proc(sh)
                sh.agent.start()
                self.save()
            for sh in self.shards:
                self.wait_agent(sh.i)
            self.coordinator = self._coord_proc()
            self.coordinator.start()
            self.save()
            self.wait_healthy()
        except Exception:
            self.stop()
            raise
        return self

    # ---- state file -------------------------------------------------------

    def save(self):
        state = {"dir": self.dir, "coord_port": self.coord_port, "bindir": self.bindir,
                 "coordinator_pid": self.coordinator.pid if self.coordinator else None,
                 "shards": [{"name": s.name, "pg_port": s.pg_port, "agent_port": s.agent_port,
                             "agent_pid": s.agent.pid if s.agent else None, "data": s.data}
                            for s in self.shards]}
        with open(os.path.join(self.dir, "cluster.json"), "w") as f:
            json.dump(state, f, indent=2)

    @classmethod
    def load(cls, root_dir):
        with open(os.path.join(root_dir, "cluster.json")) as f:
            st = json.load(f)
        c = cls(root_dir, shards=len(st["shards"]), bindir=st["bindir"])
        c.coord_port = st["coord_port"]
        for sh, s in zip(c.shards, st["shards"]):
            sh.pg_port, sh.agent_port = s["pg_port"], s["agent_port"]
            sh.agent = sh.agent or Proc(sh.name, [], "")
            sh.agent.pid = s["agent_pid"]
        c.coordinator = Proc("coordinator", [], "")
        c.coordinator.pid = st["coordinator_pid"]
        return c

    # ---- tear-down -------------------------------------------------------

    def stop(self):
        """Stops everything; returns {daemon: exit status} for the dtx daemons stopped now."""
        codes = {}
        if self.coordinator and self.coordinator.alive():
            codes["coordinator"] = self.coordinator.stop()
        for sh in self.shards:
            if sh.agent and sh.agent.alive():
                codes[sh.name] = sh.agent.stop()
        for sh in self.shards:
            self.pg_stop(sh.i)
        return codes

    # ---- daemons -----------------------------------------------------------

    def url(self):
        return "http://127.0.0.1:%d" % self.coord_port

    def wait_agent(self, i, timeout=30):
        sh = self.shards[i]
        end = time.time() + timeout
        while time.time() < end:
            if not sh.agent.alive():
                raise RuntimeError("participant %s exited; see %s:\n%s" %
                                   (sh.name, sh.agent.log, tail(sh.agent.log)))
            try:
                status, _ = http_request("127.0.0.1", sh.agent_port, "GET", "/healthz", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("participant %s did not become healthy" % sh.name)

    def wait_healthy(self, timeout=30, shards_up=True):
        end = time.time() + timeout
        body = None
        while time.time() < end:
            if not self.coordinator.alive():
                raise RuntimeError("coordinator exited; see %s:\n%s" %
                                   (self.coordinator.log, tail(self.coordinator.log)))
            try:
                status, body = self.request("GET", "/healthz", timeout=2)
                if status == 200 and (not shards_up or
                                      all(v == "up" for v in body["shards"].values())):
                    return body
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("coordinator did not become healthy: %s" % body)

    def start_coordinator(self, wait=True, env=None):
        self.coordinator = self._coord_proc()
        self.coordinator.start(env)
        self.save()
        if wait:
            self.wait_healthy()

    def kill_coordinator(self):
        self.coordinator.kill()

    def stop_coordinator(self):
        return self.coordinator.stop()

    def start_participant(self, i, wait=True, env=None):
        sh = self.shards[i]
        sh.agent = self._agent_proc(sh)
        sh.agent.start(env)
        self.save()
        if wait:
            self.wait_agent(i)

    def kill_participant(self, i):
        self.shards[i].agent.kill()

    def stop_participant(self, i):
        return self.shards[i].agent.stop()

    # ---- talking to it ---------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30, port=None):
        return http_request("127.0.0.1", port or self.coord_port, method, path, body, headers,
                            timeout)

    def tx(self, ops, **kw):
        """POST /v1/transactions with ops and any other top-level keys."""
        body = dict(kw)
        body["ops"] = ops
        return self.request("POST", "/v1/transactions", body)

    def psql(self, shard, sql, db="app"):
        """Runs sql on a shard (index or name); returns rows as lists of strings."""
        sh = self.shard(shard)
        out = run([os.path.join(PGBIN, "psql"), "-X", "-q", "-At", "-F", "\t", "-v",
                   "ON_ERROR_STOP=1", "-h", sh.sock, "-p", str(sh.pg_port), "-U", "postgres",
                   "-d", db, "-c", sql])
        return [line.split("\t") for line in out.splitlines() if line != ""]

    def prepared(self, shard):
        """gids of the prepared dtx branches on a shard."""
        return [r[0] for r in self.psql(shard, "SELECT gid FROM pg_prepared_xacts "
                                               "WHERE gid LIKE 'dtx:%' ORDER BY gid")]

    def shard(self, s):
        if isinstance(s, int):
            return self.shards[s]
        for sh in self.shards:
            if sh.name == s:
                return sh
        raise KeyError(s)


def tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def http_request(host, port, method, path, body=None, headers=None, timeout=30):
    """One HTTP request; returns (status, parsed JSON body or text)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        hdrs = {"Content-Type": "application/json"}
        hdrs.update(headers or {})
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            return resp.status, json.loads(raw)
        except ValueError:
            return resp.status, raw.decode(errors="replace")
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description="a throwaway local dtx cluster")
    ap.add_argument("command", choices=["start", "stop", "status"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--fsync", action="store_true", help="PostgreSQL with fsync=on")
    ap.add_argument("--bin", default=None, help="directory of the dtx binaries")
    a = ap.parse_args()
    if a.command == "start":
        c = Cluster(a.dir, shards=a.shards, fsync=a.fsync, bindir=a.bin).start()
        print(json.dumps({"coordinator": c.url(),
                          "shards": {s.name: {"participant": "http://127.0.0.1:%d" % s.agent_port,
                                              "postgres": s.conninfo()} for s in c.shards}},
                         indent=2))
    elif a.command == "stop":
        c = Cluster.load(a.dir)
        for sh in c.shards:
            sh.data = os.path.join(a.dir, sh.name, "data")
        c.stop()
    else:
        c = Cluster.load(a.dir)
        print(json.dumps(c.request("GET", "/healthz")[1], indent=2))


if __name__ == "__main__":
    main()
