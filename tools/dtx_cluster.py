#!/usr/bin/python3
"""dtx_cluster - a throwaway local dtx cluster: N PostgreSQL shards, one
participant per shard, one coordinator.

Used by `make demo`, the integration and fault tests, and the benchmark.

  tools/dtx_cluster.py start --dir DIR [--shards N] [--fsync]
  tools/dtx_cluster.py stop --dir DIR
  tools/dtx_cluster.py status --dir DIR
  tools/dtx_cluster.py restart --dir DIR --daemon coordinator|s1|s2|...

PostgreSQL refuses to run as root, so when this runs as root every
PostgreSQL command runs as the unprivileged `postgres` user (runuser), in
directories that user owns. PostgreSQL listens on unix sockets only; the dtx
daemons on ports picked free outside the kernel's ephemeral range, where no
outgoing connection (and so no TCP self-connect) can take them.

Several clusters may run on one machine at once (test runs, benchmarks), each
picking ports from the same range. A Cluster object therefore holds every
port it picked from the moment it picks it until stop(), so that no other
cluster is given it while its daemon is still starting or is being
restarted (see reserve_ports), and waiting for a daemon checks that what
answers on its port is that daemon, by pid, not merely something answering 200.

Everything started is recorded in DIR/cluster.json with its pid, start time
and command line, and stopped by pid after checking that the pid still is
that process; nothing is ever killed by name and no system-wide cluster is
touched.
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


PORT_FLOOR = 20000  # below it live the services a machine may run (5432, 8080, ...)


def local_port_range():
    """The kernel's ephemeral port range (ip_local_port_range): (first, last)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = f.read().split()[:2]
            return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def port_range():
    """Where to pick daemon ports: below the ephemeral range, or above it when
    there is no room below. Outgoing connections take their source port from the
    ephemeral range, so a listener outside it cannot lose its port to one (nor to a
    TCP self-connect while its daemon is down)."""
    lo, hi = local_port_range()
    if lo - PORT_FLOOR >= 1000:
        return PORT_FLOOR, lo - 1
    if 65535 - hi >= 1000:
        return max(hi + 1, PORT_FLOOR), 65535
    raise RuntimeError("no room for ports outside ip_local_port_range (%d-%d)" % (lo, hi))


def reserve_port(port):
    """Holds 127.0.0.1:port for a daemon we will start on it: returns a socket bound
    to it, or None when the port is in use.

    The socket is bound with a plain bind(), which fails if any socket uses the port:
    a listener, a connection, another cluster's reservation. Only then is
    SO_REUSEADDR set on it. Linux lets a socket with SO_REUSEADDR bind and listen on
    a port whose other sockets all have SO_REUSEADDR and none listens: so our daemon
    (which binds with SO_REUSEADDR, common/addr.c) can listen beside the reservation,
    while every other cluster's probe, a plain bind() like ours, keeps failing for as
    long as the reservation is held, also while our daemon is down for a restart."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        s.close()
        return None
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return s


def reserve_ports(n, used=()):
    """n distinct free ports, picked at random in port_range(), each held by
    reserve_port: returns {port: socket}, in the order picked. Closing a socket gives
    its port up."""
    lo, hi = port_range()
    held = {}
    for _ in range(1000 * n):
        if len(held) == n:
            return held
        p = random.randint(lo, hi)
        if p in held or p in used:
            continue
        s = reserve_port(p)
        if s:
            held[p] = s
    for s in held.values():
        s.close()
    raise RuntimeError("could not find %d free ports in %d-%d" % (n, lo, hi))


def free_ports(n, used=()):
    """n distinct ports free now and not held: for a port nothing should listen on."""
    held = reserve_ports(n, used)
    for s in held.values():
        s.close()
    return list(held)


# ---- processes and their sockets, from /proc --------------------------------------------


def proc_stat(pid):
    """(state letter, start time in clock ticks since boot) of pid, or None if there is none."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def proc_cmdline(pid):
    """The argument list of pid, or None."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]


def describe_pid(pid):
    args = proc_cmdline(pid)
    return "pid %d (%s)" % (pid, " ".join(args) if args else "command line unknown")


def listening_inodes(port):
    """Inodes of the TCP sockets listening on port (any address), or None if /proc
    cannot tell."""
    inodes, readable = set(), False
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    return inodes if readable else None


def holds_socket(pid, inodes):
    links = {"socket:[%s]" % i for i in inodes}
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) in links:
                    return True
            except OSError:
                pass
    except OSError:
        pass
    return False


def port_listeners(port, first=None):
    """pids holding a socket that listens on port: [first] alone when pid first holds
    one (the usual answer, found without looking at other processes); else every such
    pid found in /proc (processes we may not look into are left out). None if /proc
    cannot tell."""
    inodes = listening_inodes(port)
    if inodes is None:
        return None
    if not inodes:
        return []
    if first is not None and holds_socket(first, inodes):
        return [first]
    pids = [int(d) for d in os.listdir("/proc") if d.isdigit()]
    return [p for p in pids if holds_socket(p, inodes)]


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
    """A daemon we started: its command, log file, pid and the pid's start time.

    A Proc read back from cluster.json (no Popen) is the process at pid only while
    that process started when recorded and runs the recorded command: a pid is
    reused once its process has exited, and what now has it is never signalled."""

    def __init__(self, name, cmd, log, pid=None, start_time=None):
        self.name, self.cmd, self.log, self.pid = name, cmd, log, pid
        self.start_time = start_time
        self.popen = None

    def start(self, env=None):
        """Starts the daemon; env holds extra environment variables (e.g. DTX_FAILPOINTS).
        Tokens are not inherited: a DTX_*_TOKEN set for dtxctl in the caller's environment
        would be the daemon's token too (or conflict with its config)."""
        full = dict(os.environ)
        for var in ("DTX_FAILPOINTS", "DTX_CLIENT_TOKEN", "DTX_ADMIN_TOKEN", "DTX_PEER_TOKEN"):
            full.pop(var, None)
        # A sanitized build keeps freed memory aside to catch use after free; 16 MB of it
        # (not 256) keeps a daemon's size meaningful for the tests that bound it.
        full.setdefault("ASAN_OPTIONS", "quarantine_size_mb=16")
        full.update(env or {})
        logf = open(self.log, "ab")
        self.popen = subprocess.Popen(self.cmd, stdout=logf, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env=full, start_new_session=True)
        logf.close()
        self.pid = self.popen.pid
        st = proc_stat(self.pid)  # our unreaped child: the start time is its own (exec keeps it)
        self.start_time = st[1] if st else None

    def log_text(self):
        """Everything the daemon has logged (all its runs), as text."""
        with open(self.log, errors="replace") as f:
            return f.read()

    def stranger(self):
        """The command line of another process that now has our recorded pid, or None."""
        if self.pid is None or self.popen is not None:
            return None  # an unreaped child's pid cannot be reused
        st = proc_stat(self.pid)
        if not st or st[0] == "Z":
            return None
        args = proc_cmdline(self.pid)
        if ((self.start_time is not None and st[1] != self.start_time) or
                (self.cmd and args is not None and args != self.cmd)):
            return " ".join(args) if args else "?"
        return None

    def ours(self):
        """False, saying so on stderr, when another process now has our recorded pid."""
        other = self.stranger()
        if other is not None:
            sys.stderr.write("dtx_cluster: not signalling pid %d: it is no longer the %s started "
                             "as '%s' but '%s'\n" %
                             (self.pid, self.name, " ".join(self.cmd), other))
        return other is None

    def alive(self):
        if self.pid is None:
            return False
        if self.popen is not None:
            return self.popen.poll() is None
        st = proc_stat(self.pid)
        return st is not None and st[0] != "Z" and self.stranger() is None  # a zombie has exited

    def exit_status(self):
        return self.popen.returncode if self.popen else None

    def signal(self, sig):
        if not self.alive():
            return
        if self.popen is not None:
            self.popen.send_signal(sig)
        else:
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
            return self.exit_status()
        self.signal(signal.SIGTERM)
        if not self.wait(timeout):
            self.signal(signal.SIGKILL)
            self.wait(5)
        return self.exit_status()

    def kill(self):
        self.signal(signal.SIGKILL)
        self.wait(5)

    def state(self):
        return {"pid": self.pid, "start_time": self.start_time, "cmd": self.cmd, "log": self.log}


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
    xid_epoch    start each shard's xids at this epoch (pg_resetwal -e): xids past 2^32,
                 where a 32-bit xid taken for a 64-bit one points at the wrong transaction
    """

    def __init__(self, root_dir, shards=3, fsync=False, bindir=None, coord=None, agent=None,
                 pg=None, xid_epoch=None):
        self.dir = os.path.abspath(root_dir)
        self.nshards = shards
        self.fsync = fsync
        self.bindir = bindir or os.environ.get("DTX_BIN") or os.path.join(ROOT, "bin")
        self.coord_extra = coord or {}
        self.agent_extra = agent or {}
        self.pg_extra = pg or []
        self.xid_epoch = xid_epoch
        self.shards = [Shard(self, i) for i in range(shards)]
        self.coord_port = None
        self.coordinator = None
        self.coord_dir = os.path.join(self.dir, "coord")
        self.log_dir = os.path.join(self.coord_dir, "log")
        self.held = {}  # port -> the socket reserving it (reserve_port) until stop()
        self.token = None  # the bearer token request() sends the coordinator unless told otherwise

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
        if self.xid_epoch:
            run(as_pg([os.path.join(PGBIN, "pg_resetwal"), "-e", str(self.xid_epoch), "-D",
                       sh.data]))

    def pg_start(self, i):
        sh = self.shards[i]
        run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-l",
                   os.path.join(sh.dir, "postgres.log"), "-w", "-t", "60", "start"]))

    def pg_stop(self, i, mode="fast"):
        sh = self.shards[i]
        if os.path.exists(os.path.join(sh.data, "postmaster.pid")):
            subprocess.run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-m", mode, "-w",
                                  "-t", "60", "stop"]), capture_output=True)

    def pg_copy(self, i, to):
        """Copies shard i's stopped data directory to `to` (a cold backup), a path the
        postgres user can create (e.g. under the shard's own directory)."""
        sh = self.shards[i]
        if self.pg_pid(i):
            raise RuntimeError("stop shard %s's PostgreSQL before copying it" % sh.name)
        run(as_pg(["cp", "-a", sh.data, to]))

    def pg_restore(self, i, copy):
        """Puts a copy made by pg_copy back as shard i's data directory, restored the way a
        backup is: archive recovery, which ends on a new timeline. PostgreSQL is stopped
        first and started again."""
        sh = self.shards[i]
        self.pg_stop(i)
        run(as_pg(["rm", "-rf", sh.data]))
        run(as_pg(["cp", "-a", copy, sh.data]))
        run(as_pg(["touch", os.path.join(sh.data, "recovery.signal")]))
        run(as_pg(["sh", "-c", "echo \"restore_command = 'false'\" >> %s" %
                   os.path.join(sh.data, "postgresql.conf")]))
        self.pg_start(i)

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
        if not self.fsync:
            cfg["allow_fsync_off"] = True  # a throwaway test database; the agent warns
        cfg.update(self.agent_extra)
        cmd = self._agent_cmd(sh)
        with open(cmd[-1], "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc(sh.name, cmd, os.path.join(sh.dir, "participant.log"))

    def _agent_cmd(self, sh):
        """The participant's command line; its last argument is its config file."""
        return [os.path.join(self.bindir, "dtx-participant"), "--config",
                os.path.join(sh.dir, "participant.json")]

    def _coord_proc(self):
        os.makedirs(self.coord_dir, exist_ok=True)
        cfg = {"node_id": "c1", "listen": "127.0.0.1:%d" % self.coord_port,
               "log_dir": self.log_dir,
               "shards": [{"name": s.name, "url": "http://127.0.0.1:%d" % s.agent_port}
                          for s in self.shards]}
        cfg.update(self.coord_extra)
        cmd = self._coord_cmd()
        with open(cmd[-1], "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc("coordinator", cmd, os.path.join(self.coord_dir, "coordinator.log"))

    def _coord_cmd(self):
        """The coordinator's command line; its last argument is its config file."""
        return [os.path.join(self.bindir, "dtx-coordinator"), "--config",
                os.path.join(self.coord_dir, "coordinator.json")]

    def start(self):
        if os.path.exists(self.dir) and os.listdir(self.dir):
            raise RuntimeError("%s is not empty" % self.dir)
        check_traversable(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        template = template_dir()
        self.held = reserve_ports(2 * self.nshards + 1)
        ports = list(self.held)
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
        coord = self.coordinator
        state = {"dir": self.dir, "coord_port": self.coord_port, "bindir": self.bindir,
                 "coordinator_pid": coord.pid if coord else None,
                 "coordinator": coord.state() if coord else None,
                 "shards": [{"name": s.name, "pg_port": s.pg_port, "agent_port": s.agent_port,
                             "agent_pid": s.agent.pid if s.agent else None,
                             "agent": s.agent.state() if s.agent else None, "data": s.data}
                            for s in self.shards]}
        with open(os.path.join(self.dir, "cluster.json"), "w") as f:
            json.dump(state, f, indent=2)

    @classmethod
    def load(cls, root_dir):
        """The cluster recorded in root_dir/cluster.json, to stop or restart its daemons
        (its ports are not held: the process that started it held them)."""
        with open(os.path.join(root_dir, "cluster.json")) as f:
            st = json.load(f)
        c = cls(root_dir, shards=len(st["shards"]), bindir=st["bindir"])
        c.coord_port = st["coord_port"]
        for sh, s in zip(c.shards, st["shards"]):
            sh.pg_port, sh.agent_port = s["pg_port"], s["agent_port"]
            sh.agent = c._recorded(s.get("agent"), s["agent_pid"], c._agent_cmd(sh), sh.name,
                                   os.path.join(sh.dir, "participant.log"))
        c.coordinator = c._recorded(st.get("coordinator"), st["coordinator_pid"], c._coord_cmd(),
                                    "coordinator", os.path.join(c.coord_dir, "coordinator.log"))
        return c

    @staticmethod
    def _recorded(rec, pid, cmd, name, log):
        """A Proc for a daemon recorded in cluster.json (a file without the start time and
        command line, from an older version of this tool, still gives the pid, and the
        command line is what this tool runs)."""
        rec = rec or {}
        return Proc(name, rec.get("cmd") or cmd, rec.get("log") or log,
                    pid=rec.get("pid", pid), start_time=rec.get("start_time"))

    # ---- tear-down -------------------------------------------------------

    def stop(self):
        """Stops everything and gives up the ports; returns {daemon: exit status} for the
        dtx daemons stopped now. A recorded pid that now belongs to another process is
        left alone (and said so on stderr)."""
        codes = {}
        for p in [self.coordinator] + [sh.agent for sh in self.shards]:
            if p is not None and p.ours() and p.alive():
                codes[p.name] = p.stop()
        for sh in self.shards:
            self.pg_stop(sh.i)
        for sock in self.held.values():
            sock.close()
        self.held = {}
        return codes

    # ---- daemons -----------------------------------------------------------

    def url(self):
        return "http://127.0.0.1:%d" % self.coord_port

    def wait_agent(self, i, timeout=30):
        """Waits until shard i's participant, the process we started, answers 200 on its
        port as that shard; returns its /healthz."""
        sh = self.shards[i]
        with open(self._agent_cmd(sh)[-1]) as f:
            name = json.load(f).get("name")

        def identify(body):
            if body.get("shard") != name:
                return "what answers there answers as %s" % json.dumps(body)
            return None

        return self._wait_ready(sh.agent, sh.agent_port, "participant %s" % sh.name, identify,
                                lambda body: True, timeout)

    def wait_healthy(self, timeout=30, shards_up=True):
        """Waits until the coordinator, the process we started, answers 200 on its port
        as this cluster's coordinator (node_id and shards of its config) and, with
        shards_up, sees every shard up; returns its /healthz."""
        cfg = self.coordinator_config()
        names = sorted(s["name"] for s in cfg.get("shards", []))

        def identify(body):
            if body.get("node_id") != cfg.get("node_id") or \
                    sorted(body.get("shards") or {}) != names:
                return "what answers there answers as %s" % json.dumps(body)
            return None

        def ready(body):
            return not shards_up or all(v == "up" for v in body["shards"].values())

        return self._wait_ready(self.coordinator, self.coord_port, "coordinator", identify, ready,
                                timeout)

    def coordinator_config(self):
        with open(self._coord_cmd()[-1]) as f:
            return json.load(f)

    def _wait_ready(self, proc, port, what, identify, ready, timeout):
        """Polls GET /healthz on port until proc answers 200 and ready(body). Fails at once
        when the answer comes from another process than proc (by the pid holding the
        listening socket; where /proc cannot tell, by identify(body), which returns why
        the body is not proc's or None): proc could not have bound the port, and it is
        someone else's daemon that answers."""
        end = time.time() + timeout
        body = None
        while time.time() < end:
            if not proc.alive():
                raise RuntimeError("%s exited (status %s); see %s:\n%s" %
                                   (what, proc.exit_status(), proc.log, tail(proc.log)))
            try:
                status, body = http_request("127.0.0.1", port, "GET", "/healthz", timeout=2)
            except OSError:
                time.sleep(0.05)
                continue
            owners = port_listeners(port, first=proc.pid)
            if owners and proc.pid not in owners:
                self._foreign(proc, port, what, "the port is held by %s" %
                              ", ".join(describe_pid(p) for p in owners))
            if status == 200 and not isinstance(body, dict):
                self._foreign(proc, port, what, "what answers there is not a dtx daemon: %r"
                              % body)
            why = identify(body) if status == 200 else None
            if why:
                self._foreign(proc, port, what, why)
            if status == 200 and ready(body):
                return body
            time.sleep(0.05)
        raise RuntimeError("%s did not become healthy: %s" % (what, body))

    @staticmethod
    def _foreign(proc, port, what, who):
        proc.wait(5)  # it cannot listen: let it exit, to show why
        if proc.alive():
            mine = "pid %d, still running" % proc.pid
        else:
            mine = "pid %d, exited with status %s; see %s:\n%s" % (
                proc.pid, proc.exit_status(), proc.log, tail(proc.log, 5))
        raise RuntimeError("%s on port %d: %s; it is not the %s this cluster started (%s)" %
                           (what, port, who, what, mine))

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

    def daemons(self):
        return ["coordinator"] + [sh.name for sh in self.shards]

    def restart(self, daemon, wait=True, env=None):
        """Restarts one daemon ("coordinator" or a shard's name) with the command and config
        it was started with: stops it (SIGTERM, waiting for it to exit), starts it again,
        records the new pid and, with wait, waits until it is healthy. Returns the exit
        status of the stopped process when known."""
        if daemon not in self.daemons():
            raise ValueError("no daemon '%s' in this cluster (its daemons: %s)" %
                             (daemon, ", ".join(self.daemons())))
        sh = None if daemon == "coordinator" else self.shard(daemon)
        old = self.coordinator if sh is None else sh.agent
        code = old.stop() if old.ours() and old.alive() else old.exit_status()
        new = Proc(old.name, old.cmd, old.log)
        new.start(env)
        if sh is None:
            self.coordinator = new
        else:
            sh.agent = new
        self.save()
        if wait:
            if sh is None:
                self.wait_healthy()
            else:
                self.wait_agent(sh.i)
        return code

    # ---- talking to it ---------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30, port=None):
        """One request to the coordinator (or to port). With self.token set, a request to the
        coordinator that names no Authorization header carries that token; headers
        {"Authorization": None} sends none."""
        hdrs = dict(headers or {})
        if self.token and port is None and \
                not any(k.lower() == "authorization" for k in hdrs):
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        return http_request("127.0.0.1", port or self.coord_port, method, path, body, hdrs,
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
    ap.add_argument("command", choices=["start", "stop", "status", "restart"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--fsync", action="store_true", help="PostgreSQL with fsync=on")
    ap.add_argument("--bin", default=None, help="directory of the dtx binaries")
    ap.add_argument("--daemon", help="restart: coordinator, or a shard's name (s1, s2, ...)")
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
    elif a.command == "restart":
        c = Cluster.load(a.dir)
        if a.daemon not in c.daemons():
            ap.error("--daemon must name one of this cluster's daemons: %s" %
                     ", ".join(c.daemons()))
        code = c.restart(a.daemon)
        p = c.coordinator if a.daemon == "coordinator" else c.shard(a.daemon).agent
        print(json.dumps({"daemon": a.daemon, "pid": p.pid, "stopped_status": code}))
    else:
        c = Cluster.load(a.dir)
        print(json.dumps(c.request("GET", "/healthz")[1], indent=2))


if __name__ == "__main__":
    main()
