#!/usr/bin/python3
"""dtx_cluster - a throwaway local dtx cluster: N PostgreSQL shards, one
participant per shard, one coordinator.

Used by `make demo`, the integration and fault tests, and the benchmark.

  tools/dtx_cluster.py start --dir DIR [--shards N] [--fsync]
  tools/dtx_cluster.py stop --dir DIR
  tools/dtx_cluster.py status --dir DIR
  tools/dtx_cluster.py restart --dir DIR --daemon coordinator|s1|s2|...
  tools/dtx_cluster.py clean-hosts

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

Cluster(..., hosts=True), for the partition tests (root only): every daemon
runs on its own "host", a Linux network namespace (`ip netns`): one for the
coordinator, one per shard for its participant and its PostgreSQL. Each
namespace has a veth pair to a bridge in the root namespace, which has an
address there too, so that the process driving the cluster reaches every
daemon. The addresses are a /24 of 198.18.0.0/15 (the benchmarking range,
RFC 2544) that no interface of this machine uses. cut(host) takes the host's
link down (cut from everyone, the driving process included; run_in() and
request_in() look from inside the host), cut_between(a, b) drops what a and b
send each other (nftables, inside both namespaces), heal() undoes them.
Namespaces are named dtxnet-<pid>.<start time>-<n>-<host> and every link the
tool makes carries the alias "dtx_cluster <pid>.<start time>" of the process
that made it: stop() removes them, and so does the next hosts cluster (or
`clean-hosts`) once that process is gone, stopping what still runs inside.
With names=True every host also has a name, <host>.dtx.test, known to every
host through its own hosts file (/etc/netns/<namespace>/hosts, which `ip
netns exec` mounts over /etc/hosts; written in place, so a name added or
removed later is seen at the next lookup: set_resolvable()), and the
configs name the daemons by it.

Cluster(..., tls=True): a test CA and a certificate for every daemon (its
address and name as subjectAltName), made with openssl in DIR/tls at start;
every config gets the "tls" key, every URL is https://, and the tool's own
requests verify the daemons against that CA (and show a client certificate
of their own, for a participant that requires one). issue_cert() makes a
daemon a new certificate (for reload tests).
"""

import argparse
import atexit
import fcntl
import http.client
import ipaddress
import json
import os
import pwd
import random
import shutil
import signal
import socket
import ssl
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
NETNS_ETC = "/etc/netns"  # ip netns exec NAME mounts NETNS_ETC/NAME/* over /etc/*


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


def listening_inodes(port, net_pid=None):
    """Inodes of the TCP sockets listening on port (any address) in our network namespace,
    or in net_pid's when given, or None if /proc cannot tell."""
    inodes, readable = set(), False
    net = "/proc/%d/net" % net_pid if net_pid else "/proc/net"
    for path in (net + "/tcp", net + "/tcp6"):
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


def port_listeners(port, first=None, net_pid=None):
    """pids holding a socket that listens on port (in net_pid's network namespace when
    given, else ours): [first] alone when pid first holds one (the usual answer, found
    without looking at other processes); else every such pid found in /proc (processes we
    may not look into are left out). None if /proc cannot tell."""
    inodes = listening_inodes(port, net_pid)
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
    reused once its process has exited, and what now has it is never signalled.

    prefix, when given, is run in front of cmd and must exec it (`ip netns exec NS`):
    pid and cmd stay the daemon's own."""

    def __init__(self, name, cmd, log, pid=None, start_time=None, prefix=None):
        self.name, self.cmd, self.log, self.pid = name, cmd, log, pid
        self.start_time = start_time
        self.prefix = list(prefix or [])
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
        self.popen = subprocess.Popen(self.prefix + self.cmd, stdout=logf, stderr=subprocess.STDOUT,
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
        st = {"pid": self.pid, "start_time": self.start_time, "cmd": self.cmd, "log": self.log}
        if self.prefix:
            st["prefix"] = self.prefix
        return st


# ---- hosts: one network namespace per daemon (Cluster(hosts=True)) ------------------------

NET_PREFIX = "dtxnet-"  # network namespaces: dtxnet-<owner>-<n>-<host>
LINK_ALIAS = "dtx_cluster "  # alias of every link made: "dtx_cluster <owner>"
NET_POOL = ipaddress.ip_network("198.18.0.0/15")  # RFC 2544: for benchmarking networks
NET_LOCK = "/run/lock/dtx_cluster-hosts.lock"
NET_CUT_TABLE = "dtx_cluster_cut"


def owner_token(pid):
    """'<pid>.<start time>': a process, told apart from a later one given the same pid."""
    st = proc_stat(pid)
    return "%d.%d" % (pid, st[1] if st else 0)


def owner_alive(token):
    try:
        pid, start = (int(x) for x in token.split("."))
    except ValueError:
        return False
    st = proc_stat(pid)
    return st is not None and st[0] != "Z" and st[1] == start


def netns_names():
    out = run(["ip", "netns", "list"])
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_owner(name):
    """The owner token in one of our namespace names, or None for another's namespace."""
    if not name.startswith(NET_PREFIX):
        return None
    return name[len(NET_PREFIX):].split("-", 1)[0]


def our_links():
    """{link name: owner token} of the links in the root namespace this tool made."""
    links = json.loads(run(["ip", "-j", "link", "show"]) or "[]")
    return {ln["ifname"]: ln["ifalias"][len(LINK_ALIAS):] for ln in links
            if ln.get("ifalias", "").startswith(LINK_ALIAS)}


def stop_pids(pids, what):
    """SIGTERM to each pid, SIGKILL to those still there after 10 s."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        live = [p for p in pids if proc_stat(p) and proc_stat(p)[0] != "Z"]
        if not live:
            return
        sys.stderr.write("dtx_cluster: %s: %s %s\n" %
                         (what, signal.Signals(sig).name, ", ".join(describe_pid(p) for p in live)))
        for p in live:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        end = time.time() + grace
        while time.time() < end and any(proc_stat(p) and proc_stat(p)[0] != "Z" for p in live):
            time.sleep(0.1)


def remove_stale_hosts():
    """Removes the namespaces and links of hosts clusters whose process is gone (a test run
    killed before its clean-up), stopping what still runs in those namespaces first.
    Returns what it removed."""
    removed = []
    for name in netns_names():
        owner = netns_owner(name)
        if owner is None or owner_alive(owner):
            continue
        pids = [int(p) for p in run(["ip", "netns", "pids", name]).split()]
        stop_pids(pids, "stale namespace %s" % name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(os.path.join(NETNS_ETC, name), ignore_errors=True)
        removed.append("namespace " + name)
    for link, owner in our_links().items():
        if not owner_alive(owner):
            subprocess.run(["ip", "link", "del", link], capture_output=True)
            removed.append("link " + link)
    return removed


def used_subnets():
    """The /24s of NET_POOL that an address or route of the root namespace touches."""
    used = set()
    for cmd in (["ip", "-4", "-o", "addr", "show"], ["ip", "-4", "route", "show", "table", "all"]):
        for word in run(cmd).split():
            try:
                net = ipaddress.ip_network(word, strict=False)
            except ValueError:
                continue
            if net.version == 4 and net.overlaps(NET_POOL):
                for sub in NET_POOL.subnets(new_prefix=24):
                    if sub.overlaps(net):
                        used.add(sub)
    return used


class Network:
    """The hosts of a Cluster(hosts=True): a network namespace per host, each with a veth
    pair to a bridge in the root namespace, on a /24 of NET_POOL that nothing uses. Host j
    has address .(j+1); the root namespace (the process driving the cluster) has .254."""

    _made = 0  # Networks made by this process, so that each has its own names

    def __init__(self, hosts, state=None):
        self.hosts = list(hosts)
        self.cut_hosts = set()  # hosts whose link is down
        self.cut_pairs = set()  # frozensets {a, b}: a and b drop what the other sends
        if state:
            self.owner, self.bridge = state["owner"], state["bridge"]
            self.ns, self.veth = state["ns"], state["veth"]
            self.addr, self.observer = state["addr"], state["observer"]
            return
        Network._made += 1
        n = Network._made
        self.owner = owner_token(os.getpid())
        tag = "dtx%x-%d" % (os.getpid(), n % 100)  # link names have at most 15 characters
        self.bridge = tag + "b"
        self.ns = {h: "%s%s-%d-%s" % (NET_PREFIX, self.owner, n, h) for h in self.hosts}
        self.veth = {h: "%sv%d" % (tag, j) for j, h in enumerate(self.hosts)}
        self.addr, self.observer = {}, None
        self.unresolvable = set()  # names=True: hosts whose name the hosts files leave out

    def state(self):
        return {"owner": self.owner, "bridge": self.bridge, "ns": self.ns, "veth": self.veth,
                "addr": self.addr, "observer": self.observer}

    @staticmethod
    def name(h):
        """Host h's name (names=True), in every host's hosts file."""
        return "%s.dtx.test" % h

    def write_hosts_files(self):
        """Every host's /etc/netns/<ns>/hosts: localhost and every resolvable host's name.
        Rewritten in place (same inode), as `ip netns exec` bind-mounts the file."""
        lines = ["127.0.0.1 localhost", "::1 localhost"] + \
            ["%s %s" % (self.addr[h], self.name(h)) for h in self.hosts
             if h not in self.unresolvable]
        for h in self.hosts:
            d = os.path.join(NETNS_ETC, self.ns[h])
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "hosts"), "w") as f:
                f.write("\n".join(lines) + "\n")

    def set_resolvable(self, h, yes):
        """Adds host h's name to every hosts file, or takes it out."""
        (self.unresolvable.discard if yes else self.unresolvable.add)(h)
        self.write_hosts_files()

    def setup(self):
        """Makes the bridge, the namespaces and their links; on error, removes what it made."""
        for what in remove_stale_hosts():
            sys.stderr.write("dtx_cluster: removed the stale %s\n" % what)
        try:
            self._make_bridge()
            for j, h in enumerate(self.hosts):
                self._make_host(j, h)
        except Exception:
            self.teardown()
            raise

    def _make_bridge(self):
        os.makedirs(os.path.dirname(NET_LOCK), exist_ok=True)
        with open(NET_LOCK, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another cluster picks its /24 after we took ours
            free = [s for s in NET_POOL.subnets(new_prefix=24) if s not in used_subnets()]
            if not free:
                raise RuntimeError("no /24 of %s is free for a hosts cluster" % NET_POOL)
            net = random.choice(free)
            self.observer = str(net[254])
            self.addr = {h: str(net[j + 1]) for j, h in enumerate(self.hosts)}
            run(["ip", "link", "add", "name", self.bridge, "type", "bridge", "nf_call_iptables",
                 "0", "nf_call_ip6tables", "0", "nf_call_arptables", "0"])
            run(["ip", "link", "set", self.bridge, "alias", LINK_ALIAS + self.owner])
            run(["ip", "addr", "add", "%s/24" % self.observer, "dev", self.bridge])
            run(["ip", "link", "set", self.bridge, "up"])

    def _make_host(self, j, h):
        ns, veth = self.ns[h], self.veth[h]
        run(["ip", "netns", "add", ns])
        run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns])
        run(["ip", "link", "set", veth, "alias", LINK_ALIAS + self.owner])
        run(["ip", "link", "set", veth, "master", self.bridge])
        run(["ip", "link", "set", veth, "up"])
        run(["ip", "-n", ns, "addr", "add", "%s/24" % self.addr[h], "dev", "eth0"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["ip", "-n", ns, "link", "set", "eth0", "up"])

    def teardown(self):
        """Removes every link and namespace of this network (what is already gone is fine).
        Processes still inside a namespace keep it alive, unnamed: stop them first."""
        for h in self.hosts:
            subprocess.run(["ip", "link", "del", self.veth[h]], capture_output=True)
            subprocess.run(["ip", "netns", "del", self.ns[h]], capture_output=True)
            shutil.rmtree(os.path.join(NETNS_ETC, self.ns[h]), ignore_errors=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        left = [n for n in netns_names() if n in self.ns.values()] + \
            [ln for ln in our_links() if ln == self.bridge or ln in self.veth.values()]
        if left:
            sys.stderr.write("dtx_cluster: could not remove %s\n" % ", ".join(left))

    def prefix(self, h):
        """The command prefix that runs a command on host h."""
        return ["ip", "netns", "exec", self.ns[h]]

    # ---- partitions -----------------------------------------------------------------------

    def cut(self, h):
        """Host h's link down: it reaches nobody and nobody reaches it (a pulled cable)."""
        run(["ip", "link", "set", self.veth[h], "down"])
        self.cut_hosts.add(h)

    def cut_between(self, a, b):
        """a and b drop every packet the other sends them; both still reach everyone else."""
        self.cut_pairs.add(frozenset((a, b)))
        self._apply_rules(a)
        self._apply_rules(b)

    def heal(self, h=None, other=None):
        """Undoes cut(h) and every cut_between(h, ...) (only cut_between(h, other) when other
        is given); with no host, every cut."""
        for x in ([h] if h else list(self.hosts)):
            if other is None and x in self.cut_hosts:
                run(["ip", "link", "set", self.veth[x], "up"])
                self.cut_hosts.discard(x)
            pairs = [p for p in self.cut_pairs if x in p and (other is None or other in p)]
            for p in pairs:
                self.cut_pairs.discard(p)
                for y in p:
                    self._apply_rules(y)

    def _apply_rules(self, h):
        """Replaces host h's cut table: drop what arrives from each host it is cut from. Input
        only, in both namespaces: a dropped SYN is silence, as in a real partition (a drop at
        output would fail the sender's connect at once)."""
        peers = sorted(self.addr[x] for p in self.cut_pairs if h in p for x in p if x != h)
        script = "table inet %s\ndelete table inet %s\n" % (NET_CUT_TABLE, NET_CUT_TABLE)
        if peers:
            script += ("table inet %s {\n chain input {\n  type filter hook input priority 0; "
                       "policy accept;\n  ip saddr { %s } drop\n }\n}\n" %
                       (NET_CUT_TABLE, ", ".join(peers)))
        run(self.prefix(h) + ["nft", "-f", "-"], input=script)


class Coord:
    """One coordinator process: node (its node_id; several processes of one node share a
    postgres store, one active and the others standbys), its directory and port."""

    def __init__(self, cluster, i, node):
        self.i = i
        self.node = node
        self.name = "coordinator" if i == 0 else "coordinator%d" % (i + 1)
        self.dir = os.path.join(cluster.dir, "coord" if i == 0 else "coord%d" % (i + 1))
        self.log_dir = os.path.join(self.dir, "log")
        self.port = None
        self.proc = None


class StoreDB:
    """The PostgreSQL of the coordinators' decision store (store="postgres"): a server of
    its own, reached over TCP on a hosts cluster so that its link can be cut."""

    def __init__(self, cluster):
        self.i = "store"
        self.name = "store"
        self.dir = os.path.join(cluster.dir, "store")
        self.data = os.path.join(self.dir, "data")
        self.sock = self.dir
        self.pg_port = None
        self.host = None  # hosts=True: its address

    def conninfo(self, db="dtx"):
        return "host=%s port=%d dbname=%s user=postgres" % (self.host or self.sock, self.pg_port,
                                                             db)


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
    hosts        every daemon on a host of its own, a network namespace (root only; see
                 the top of this file): the coordinator on one, each shard's participant
                 and PostgreSQL on another; cut(), cut_between() and heal() partition them
    coordinators the node_id of each coordinator process (default ["c1"]): ["c1", "c1"] is
                 an active and a standby of one node (needs store="postgres"), ["c1", "c2"]
                 two active nodes; every participant serves them all. The first is
                 "coordinator" (self.coordinator, coord_port, ...), the others
                 "coordinator2", ...: see coord(), start_coordinator(i), wait_active(node)
    store        "postgres": the coordinators keep their decisions in a PostgreSQL server
                 of the cluster's own ("store"; store_psql), with leases of store_lease_ms
    names        (hosts only) the configs name every daemon by its host's name (Network.name),
                 resolved through per-host hosts files; set_resolvable() edits them
    tls          a test CA, a certificate per daemon, the "tls" key in every config and
                 https:// URLs everywhere (see the top of this file)
    """

    HOST_PORTS = {"coord": 7000, "agent": 7100, "pg": 5432}  # hosts=True: each host its own

    def __init__(self, root_dir, shards=3, fsync=False, bindir=None, coord=None, agent=None,
                 pg=None, xid_epoch=None, hosts=False, coordinators=None, store=None,
                 store_lease_ms=2000, names=False, tls=False):
        self.dir = os.path.abspath(root_dir)
        self.nshards = shards
        self.fsync = fsync
        self.bindir = bindir or os.environ.get("DTX_BIN") or os.path.join(ROOT, "bin")
        self.coord_extra = coord or {}
        self.agent_extra = agent or {}
        self.pg_extra = pg or []
        self.xid_epoch = xid_epoch
        self.shards = [Shard(self, i) for i in range(shards)]
        self.coords = [Coord(self, i, n) for i, n in enumerate(coordinators or ["c1"])]
        if store not in (None, "file", "postgres"):
            raise ValueError("store must be \"file\" or \"postgres\"")
        nodes = [c.node for c in self.coords]
        if len(set(nodes)) != len(nodes) and store != "postgres":
            raise ValueError("several processes of one node need store=\"postgres\"")
        self.store = StoreDB(self) if store == "postgres" else None
        self.store_lease_ms = store_lease_ms
        # the store's PostgreSQL runs with the cluster's fsync setting: off, the coordinator
        # must be told it may use it (as the agents are)
        self.store_allow_fsync_off = not fsync
        self.held = {}  # port -> the socket reserving it (reserve_port) until stop()
        self.token = None  # the bearer token request() sends the coordinator unless told otherwise
        self.hosts = hosts
        self.net = None  # hosts=True: the Network, from start() until stop()
        if names and not hosts:
            raise ValueError("names need hosts=True (a hosts file per host)")
        self.names = names
        self.tls = tls
        self.tls_dir = os.path.join(self.dir, "tls")
        self.ssl_ctx = None  # tls: how this tool verifies the daemons

    # the first coordinator, as every cluster has one
    coordinator = property(lambda self: self.coords[0].proc,
                           lambda self, p: setattr(self.coords[0], "proc", p))
    coord_port = property(lambda self: self.coords[0].port,
                          lambda self, v: setattr(self.coords[0], "port", v))
    coord_dir = property(lambda self: self.coords[0].dir)
    log_dir = property(lambda self: self.coords[0].log_dir)

    def coord(self, c):
        """A coordinator by index or name ("coordinator", "coordinator2", ...)."""
        if isinstance(c, int):
            return self.coords[c]
        for co in self.coords:
            if co.name == c:
                return co
        raise KeyError(c)

    # ---- set-up ---------------------------------------------------------

    def _pg_conf(self, sh):
        lines = [
            "port = %d" % sh.pg_port,
            "listen_addresses = '%s'" % (sh.host if getattr(sh, "host", None) else ""),
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

    def _pg_of(self, i):
        return self.store if i == "store" else self.shards[i]

    def pg_start(self, i):
        """Starts shard i's PostgreSQL (i == "store": the decision store's)."""
        sh = self._pg_of(i)
        run(self.prefix(sh.name) + as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-l",
                                          os.path.join(sh.dir, "postgres.log"), "-w", "-t",
                                          "60", "start"]))

    def pg_stop(self, i, mode="fast"):
        sh = self._pg_of(i)
        if os.path.exists(os.path.join(sh.data, "postmaster.pid")):
            subprocess.run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", sh.data, "-m", mode, "-w",
                                  "-t", "60", "stop"]), capture_output=True)

    def pg_standby(self, i):
        """Restarts shard i's PostgreSQL as a standby (read-only, in recovery; it has no
        primary to follow, so it stays one until pg_promote)."""
        sh = self.shards[i]
        self.pg_stop(i)
        run(as_pg(["touch", os.path.join(sh.data, "standby.signal")]))
        self.pg_start(i)

    def pg_promote(self, i):
        """Promotes shard i's standby (pg_standby): it goes on writing on a new timeline."""
        run(as_pg([os.path.join(PGBIN, "pg_ctl"), "-D", self.shards[i].data, "-w", "-t", "60",
                   "promote"]))

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
            with open(os.path.join(self._pg_of(i).data, "postmaster.pid")) as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def _create_db(self, sh):
        self.psql(sh.i, "CREATE DATABASE app", db="postgres")

    def _agent_proc(self, sh):
        cfg = {"name": sh.name, "listen": "%s:%d" % (self.addr(sh.name), sh.agent_port),
               "conninfo": sh.conninfo(), "pool_size": 8}
        if len(self.coords) == 1:
            cfg["coordinator_url"] = self.url()
        else:
            cfg["coordinators"] = [self.url(co.i) for co in self.coords]
        if not self.fsync:
            cfg["allow_fsync_off"] = True  # a throwaway test database; the agent warns
        self._open_hosts_auth(cfg)
        if self.tls:
            cfg["tls"] = self.tls_config(sh.name)
        cfg.update(self.agent_extra)
        cmd = self._agent_cmd(sh)
        with open(cmd[-1], "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc(sh.name, cmd, os.path.join(sh.dir, "participant.log"),
                    prefix=self.prefix(sh.name))

    def _open_hosts_auth(self, cfg):
        """A daemon on a test host listens on a 198.18/15 address, not loopback, and so
        refuses to start without tokens unless told it may: the hosts are namespaces this
        tool made and nothing else can reach. A test that wants tokens gives its own 'auth'."""
        if self.hosts:
            cfg["auth"] = {"allow_unauthenticated": True}

    def _agent_cmd(self, sh):
        """The participant's command line; its last argument is its config file."""
        return [os.path.join(self.bindir, "dtx-participant"), "--config",
                os.path.join(sh.dir, "participant.json")]

    def _coord_proc(self, i=0):
        co = self.coords[i]
        os.makedirs(co.dir, exist_ok=True)
        cfg = {"node_id": co.node, "listen": "%s:%d" % (self.addr(co.name), co.port),
               "shards": [{"name": s.name, "url": self.agent_url(s.i)} for s in self.shards]}
        if self.store:
            cfg["decision_store"] = {"type": "postgres", "conninfo": self.store.conninfo(),
                                     "lease_ms": self.store_lease_ms}
            if self.store_allow_fsync_off:
                cfg["decision_store"]["allow_fsync_off"] = True
        else:
            cfg["log_dir"] = co.log_dir
        self._open_hosts_auth(cfg)
        if self.tls:
            cfg["tls"] = self.tls_config(co.name)
        cfg.update(self.coord_extra)
        cmd = self._coord_cmd(i)
        with open(cmd[-1], "w") as f:
            json.dump(cfg, f, indent=2)
        return Proc(co.name, cmd, os.path.join(co.dir, "coordinator.log"),
                    prefix=self.prefix(co.name))

    def _coord_cmd(self, i=0):
        """A coordinator's command line; its last argument is its config file."""
        return [os.path.join(self.bindir, "dtx-coordinator"), "--config",
                os.path.join(self.coords[i].dir, "coordinator.json")]

    def _make_store(self, template):
        st = self.store
        os.makedirs(st.dir, exist_ok=True)
        chown_pg(st.dir)
        os.chmod(st.dir, 0o755)
        run(as_pg(["cp", "-a", template, st.data]))
        if self.hosts:  # reached over the network, so that cutting its host cuts it off
            st.host = self.addr("store")
            with open(os.path.join(st.data, "pg_hba.conf"), "a") as f:
                f.write("host all all 198.18.0.0/15 trust\n")
        self._pg_conf(st)
        self.pg_start("store")
        self.store_psql("CREATE DATABASE dtx", db="postgres")

    def store_psql(self, sql, db="dtx"):
        """Runs sql on the decision store's PostgreSQL; rows as lists of strings."""
        return self.psql("store", sql, db=db)

    # ---- TLS (tls=True) ----------------------------------------------------

    def _openssl(self, *args):
        run(["openssl"] + list(args))

    def make_ca(self, name="ca"):
        """A new test CA in the tls directory: returns (its certificate, its key)."""
        os.makedirs(self.tls_dir, exist_ok=True)
        key, pem = self.tls_path(name + ".key"), self.tls_path(name + ".pem")
        self._openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", key, "-out", pem, "-days", "3", "-subj",
                      "/CN=dtx test CA %s" % name, "-addext", "basicConstraints=critical,CA:TRUE",
                      "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        os.chmod(key, 0o600)
        return pem, key

    def tls_path(self, name):
        return os.path.join(self.tls_dir, name)

    def issue_cert(self, who, cn=None, san=None, ca=None, days=3):
        """Makes who (a daemon, or any name) a key and a certificate signed by the test CA
        (or by ca, a (cert, key) pair), written in place of the old ones; its
        subjectAltName: san, else who's address, its name when names=True, localhost and
        127.0.0.1. Returns (cert file, key file)."""
        key, pem = self.tls_path(who + ".key"), self.tls_path(who + ".pem")
        csr, ext = self.tls_path(who + ".csr"), self.tls_path(who + ".ext")
        if san is None:
            san = ["DNS:localhost", "IP:127.0.0.1"]
            if who in self.daemons():
                san.append("IP:" + self.addr(who))
                if self.names:
                    san.append("DNS:" + self.hostname(who))
        with open(ext, "w") as f:
            f.write("subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n"
                    "basicConstraints=CA:FALSE\n" % ",".join(sorted(set(san))))
        ca_pem, ca_key = ca or (self.tls_path("ca.pem"), self.tls_path("ca.key"))
        tmp_key, tmp_pem = key + ".new", pem + ".new"
        self._openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                      "-nodes", "-keyout", tmp_key, "-out", csr, "-subj", "/CN=%s" % (cn or who))
        os.chmod(tmp_key, 0o600)
        self._openssl("x509", "-req", "-in", csr, "-CA", ca_pem, "-CAkey", ca_key,
                      "-set_serial", str(random.randrange(1, 2 ** 62)), "-days", str(days),
                      "-out", tmp_pem, "-extfile", ext)
        os.replace(tmp_key, key)  # the key first: a reload between the two fails, and says so
        os.replace(tmp_pem, pem)
        return pem, key

    def make_crl(self, revoked=(), name="crl", ca=None, next_update=None, last_update=None):
        """A certificate revocation list of the test CA (or of ca, a (cert, key) pair)
        listing the certificates in revoked (their files), written to name.pem in the tls
        directory (replaced at once); its next update a day away unless next_update (and
        last_update) say otherwise (openssl's YYYYMMDDHHMMSSZ). Returns its path."""
        work = self.tls_path(name + ".db")
        shutil.rmtree(work, ignore_errors=True)
        os.makedirs(work)
        cnf = os.path.join(work, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = test\n[test]\ndatabase = %s\ncrlnumber = %s\n"
                    "default_md = sha256\ndefault_crl_days = 1\n"
                    % (os.path.join(work, "index.txt"), os.path.join(work, "crlnumber")))
        open(os.path.join(work, "index.txt"), "w").close()
        with open(os.path.join(work, "crlnumber"), "w") as f:
            f.write("01\n")
        ca_pem, ca_key = ca or (self.tls_path("ca.pem"), self.tls_path("ca.key"))
        for cert in revoked:
            self._openssl("ca", "-config", cnf, "-revoke", cert, "-keyfile", ca_key, "-cert",
                          ca_pem)
        when = (["-crl_lastupdate", last_update] if last_update else []) + \
               (["-crl_nextupdate", next_update] if next_update else [])
        out = self.tls_path(name + ".pem")
        self._openssl("ca", "-config", cnf, "-gencrl", "-keyfile", ca_key, "-cert", ca_pem,
                      "-out", out + ".new", *when)
        os.replace(out + ".new", out)
        return out

    def tls_config(self, who):
        """The "tls" key of daemon who's config."""
        return {"cert_file": self.tls_path(who + ".pem"), "key_file": self.tls_path(who + ".key"),
                "ca_file": self.tls_path("ca.pem")}

    def _make_tls(self):
        self.make_ca()
        for d in self.daemons():
            self.issue_cert(d)
        cert, key = self.issue_cert("client")  # the tool's own, for require_client_cert
        self.ssl_ctx = ssl.create_default_context(cafile=self.tls_path("ca.pem"))
        self.ssl_ctx.load_cert_chain(cert, key)

    def hostname(self, daemon):
        """What the configs call daemon's host: its name with names=True, else its address."""
        return Network.name(daemon) if self.names else self.addr(daemon)

    def set_resolvable(self, daemon, yes):
        """names=True: daemon's name in every host's hosts file (yes) or not."""
        self.net.set_resolvable(daemon, yes)

    def start(self):
        if os.path.exists(self.dir) and os.listdir(self.dir):
            raise RuntimeError("%s is not empty" % self.dir)
        check_traversable(self.dir)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        template = template_dir()
        if self.hosts:
            self._start_hosts()
        else:
            n = 2 * self.nshards + len(self.coords) + (1 if self.store else 0)
            self.held = reserve_ports(n)
            ports = list(self.held)
            for sh in self.shards:
                sh.pg_port, sh.agent_port = ports[2 * sh.i], ports[2 * sh.i + 1]
            for co in self.coords:
                co.port = ports[2 * self.nshards + co.i]
            if self.store:
                self.store.pg_port = ports[-1]
        if self.tls:
            self._make_tls()
        self.save()
        try:
            if self.store:
                self._make_store(template)
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
            for co in self.coords:
                co.proc = self._coord_proc(co.i)
                co.proc.start()
                self.save()
                if len(self.coords) == 1:
                    self.wait_healthy()
                else:  # one at a time: the first of a node takes its lease
                    self.wait_coordinator_up(co.i)
            for node in sorted({co.node for co in self.coords}):
                if len(self.coords) > 1:
                    self.wait_active(node)
        except Exception:
            self.stop()
            raise
        return self

    def _start_hosts(self):
        """hosts=True: the network, and ports that no other cluster shares (each host has
        its own addresses), below the ephemeral range, so no TCP self-connect takes them."""
        if not AS_ROOT:
            raise RuntimeError("a hosts cluster needs root (network namespaces)")
        for co in self.coords:  # distinct ports too: a port names its daemon (_addr_of_port)
            co.port = self.HOST_PORTS["coord"] + co.i
        if self.store:
            self.store.pg_port = self.HOST_PORTS["pg"]
        for sh in self.shards:
            sh.pg_port = self.HOST_PORTS["pg"]
            sh.agent_port = self.HOST_PORTS["agent"] + sh.i + 1
        self.net = Network(self.daemons())
        self.net.setup()
        if self.names:
            self.net.write_hosts_files()
        atexit.register(self._stop_at_exit)  # an interrupted run leaves no namespace behind

    def _stop_at_exit(self):
        if self.net is not None:
            self.stop()

    # ---- state file -------------------------------------------------------

    def save(self):
        coord = self.coordinator
        state = {"dir": self.dir, "coord_port": self.coord_port, "bindir": self.bindir,
                 "coordinator_pid": coord.pid if coord else None,
                 "coordinator": coord.state() if coord else None,
                 "coordinators": [{"node": co.node, "port": co.port,
                                   "proc": co.proc.state() if co.proc else None}
                                  for co in self.coords],
                 "store": {"pg_port": self.store.pg_port, "host": self.store.host}
                 if self.store else None,
                 "store_lease_ms": self.store_lease_ms, "tls": self.tls, "names": self.names,
                 "shards": [{"name": s.name, "pg_port": s.pg_port, "agent_port": s.agent_port,
                             "agent_pid": s.agent.pid if s.agent else None,
                             "agent": s.agent.state() if s.agent else None, "data": s.data}
                            for s in self.shards]}
        if self.net is not None:
            state["hosts"] = self.net.state()
        with open(os.path.join(self.dir, "cluster.json"), "w") as f:
            json.dump(state, f, indent=2)

    @classmethod
    def load(cls, root_dir):
        """The cluster recorded in root_dir/cluster.json, to stop or restart its daemons
        (its ports are not held: the process that started it held them)."""
        with open(os.path.join(root_dir, "cluster.json")) as f:
            st = json.load(f)
        coords = st.get("coordinators") or [{"node": "c1", "port": st["coord_port"]}]
        c = cls(root_dir, shards=len(st["shards"]), bindir=st["bindir"],
                hosts="hosts" in st, coordinators=[co["node"] for co in coords],
                store="postgres" if st.get("store") else None,
                store_lease_ms=st.get("store_lease_ms", 2000), names=st.get("names", False),
                tls=st.get("tls", False))
        if c.tls:
            c.ssl_ctx = ssl.create_default_context(cafile=c.tls_path("ca.pem"))
            c.ssl_ctx.load_cert_chain(c.tls_path("client.pem"), c.tls_path("client.key"))
        for co, rec in zip(c.coords, coords):
            co.port = rec["port"]
            if co.i > 0:
                co.proc = c._recorded(rec.get("proc"), None, c._coord_cmd(co.i), co.name,
                                      os.path.join(co.dir, "coordinator.log"))
        if c.store:
            c.store.pg_port, c.store.host = st["store"]["pg_port"], st["store"]["host"]
        if c.hosts:
            c.net = Network(c.daemons(), state=st["hosts"])
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
                    pid=rec.get("pid", pid), start_time=rec.get("start_time"),
                    prefix=rec.get("prefix"))

    # ---- tear-down -------------------------------------------------------

    def stop(self):
        """Stops everything and gives up the ports; returns {daemon: exit status} for the
        dtx daemons stopped now. A recorded pid that now belongs to another process is
        left alone (and said so on stderr). A hosts cluster's partitions are healed first
        (daemons stop as they would in service), and its network is removed last."""
        codes = {}
        if self.net is not None:
            self.net.heal()
        for p in [co.proc for co in self.coords] + [sh.agent for sh in self.shards]:
            if p is not None and p.ours() and p.alive():
                codes[p.name] = p.stop()
        for sh in self.shards:
            self.pg_stop(sh.i)
        if self.store:
            self.pg_stop("store")
        for sock in self.held.values():
            sock.close()
        self.held = {}
        if self.net is not None:
            self.net.teardown()
            self.net = None
        return codes

    # ---- daemons -----------------------------------------------------------

    def scheme(self):
        return "https" if self.tls else "http"

    def url(self, i=0):
        """A coordinator's URL (the first one's by default)."""
        co = self.coords[i]
        return "%s://%s:%d" % (self.scheme(), self.hostname(co.name), co.port)

    def agent_url(self, i):
        sh = self.shard(i)
        return "%s://%s:%d" % (self.scheme(), self.hostname(sh.name), sh.agent_port)

    def addr(self, daemon):
        """The address daemon ("coordinator" or a shard's name) listens on."""
        return self.net.addr[daemon] if self.hosts else "127.0.0.1"

    def prefix(self, daemon):
        """What runs a command on daemon's host: [] unless hosts=True."""
        return self.net.prefix(daemon) if self.hosts else []

    def _addr_of_port(self, port):
        if not self.hosts:
            return "127.0.0.1"
        for co in self.coords:
            if co.port == port:
                return self.addr(co.name)
        for sh in self.shards:
            if sh.agent_port == port:
                return self.addr(sh.name)
        raise KeyError("no daemon of this cluster listens on port %d" % port)

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
                status, body = http_request(self._addr_of_port(port), port, "GET", "/healthz",
                                            timeout=2, ssl_ctx=self.ssl_ctx)
            except OSError:
                time.sleep(0.05)
                continue
            owners = port_listeners(port, first=proc.pid,
                                    net_pid=proc.pid if self.hosts else None)
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

    def start_coordinator(self, wait=True, env=None, i=0):
        """Starts coordinator i; with wait, waits until it is healthy (the first of a
        single-coordinator cluster: active, every shard up) or answers at all."""
        co = self.coords[i]
        co.proc = self._coord_proc(i)
        co.proc.start(env)
        self.save()
        if wait and len(self.coords) == 1:
            self.wait_healthy()
        elif wait:
            self.wait_coordinator_up(i)

    def kill_coordinator(self, i=0):
        self.coords[i].proc.kill()

    def stop_coordinator(self, i=0):
        return self.coords[i].proc.stop()

    def health(self, i=0, timeout=2):
        """Coordinator i's /healthz: (status, body), or (None, why) without an answer."""
        co = self.coords[i]
        try:
            return http_request(self._addr_of_port(co.port), co.port, "GET", "/healthz",
                                timeout=timeout, ssl_ctx=self.ssl_ctx)
        except OSError as e:
            return None, str(e)

    def wait_coordinator_up(self, i, timeout=30):
        """Waits until coordinator i, the process we started, answers /healthz at all
        (active or standby)."""
        co = self.coords[i]
        end = time.time() + timeout
        while time.time() < end:
            if not co.proc.alive():
                raise RuntimeError("%s exited (status %s); see %s:\n%s" %
                                   (co.name, co.proc.exit_status(), co.proc.log,
                                    tail(co.proc.log)))
            status, body = self.health(i)
            if status is not None and isinstance(body, dict) and body.get("node_id") == co.node:
                return body
            time.sleep(0.05)
        raise RuntimeError("%s did not answer /healthz within %d s" % (co.name, timeout))

    @staticmethod
    def serving(status, body, shards_up=True):
        """Whether a /healthz answer is an active coordinator's (with shards_up, seeing every
        shard up)."""
        return status == 200 and isinstance(body, dict) and body.get("role") == "active" and (
            not shards_up or all(v == "up" for v in body.get("shards", {}).values()))

    def wait_active(self, node="c1", timeout=30, shards_up=True):
        """Waits until a coordinator process of node is active (with shards_up, seeing every
        shard up); returns its index."""
        end = time.time() + timeout
        seen = {}
        while time.time() < end:
            for co in self.coords:
                if co.node != node or co.proc is None or not co.proc.alive():
                    continue
                status, body = self.health(co.i)
                seen[co.name] = body
                if self.serving(status, body, shards_up):
                    return co.i
            time.sleep(0.05)
        raise RuntimeError("no coordinator of node %s became active within %d s: %s" %
                           (node, timeout, json.dumps(seen)))

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
        return [co.name for co in self.coords] + [sh.name for sh in self.shards] + \
            (["store"] if self.store else [])

    def restart(self, daemon, wait=True, env=None):
        """Restarts one daemon ("coordinator" or a shard's name) with the command and config
        it was started with: stops it (SIGTERM, waiting for it to exit), starts it again,
        records the new pid and, with wait, waits until it is healthy. Returns the exit
        status of the stopped process when known."""
        if daemon not in self.daemons():
            raise ValueError("no daemon '%s' in this cluster (its daemons: %s)" %
                             (daemon, ", ".join(self.daemons())))
        if daemon == "store":
            raise ValueError("the store is PostgreSQL: pg_stop(\"store\") and pg_start(\"store\")")
        co = self.coord(daemon) if daemon.startswith("coordinator") else None
        sh = None if co else self.shard(daemon)
        old = co.proc if co else sh.agent
        code = old.stop() if old.ours() and old.alive() else old.exit_status()
        new = Proc(old.name, old.cmd, old.log, prefix=old.prefix)
        new.start(env)
        if co:
            co.proc = new
        else:
            sh.agent = new
        self.save()
        if wait:
            if co and len(self.coords) == 1:
                self.wait_healthy()
            elif co:
                self.wait_coordinator_up(co.i)
            else:
                self.wait_agent(sh.i)
        return code

    # ---- partitions (hosts=True) ---------------------------------------------------

    def cut(self, daemon):
        """Takes daemon's host off the network ("coordinator" or a shard's name: its
        participant and PostgreSQL): nobody reaches it, the driving process included (see
        run_in and request_in), until heal(daemon)."""
        self.net.cut(daemon)

    def cut_between(self, a, b):
        """a's and b's hosts drop what the other sends; both still reach everyone else."""
        self.net.cut_between(a, b)

    def heal(self, daemon=None, other=None):
        """Undoes cut(daemon) and every cut_between(daemon, ...) (only the one with other
        when given); with no daemon, every partition."""
        self.net.heal(daemon, other)

    def run_in(self, daemon, cmd, timeout=60):
        """Runs cmd on daemon's host (an operator logged in there); returns the
        CompletedProcess (text output)."""
        return subprocess.run(self.prefix(daemon) + cmd, capture_output=True, text=True,
                              timeout=timeout)

    def request_in(self, daemon, method, path, body=None, timeout=10):
        """An HTTP request to daemon made on its own host, so that it works while the host
        is cut off: returns (status, parsed JSON body or text), status None when there was
        no answer."""
        port = self.coord(daemon).port if daemon.startswith("coordinator") else \
            self.shard(daemon).agent_port
        cmd = ["curl", "-s", "-m", str(timeout), "-X", method, "-H",
               "Content-Type: application/json", "-w", "\n%{http_code}",
               "%s://%s:%d%s" % (self.scheme(), self.addr(daemon), port, path)]
        if self.tls:
            cmd += ["--cacert", self.tls_path("ca.pem"), "--cert", self.tls_path("client.pem"),
                    "--key", self.tls_path("client.key")]
        if body is not None:
            cmd += ["--data-binary", json.dumps(body)]
        r = self.run_in(daemon, cmd, timeout=timeout + 5)
        text, _, code = r.stdout.rpartition("\n")
        if r.returncode != 0 or not code.isdigit() or code == "000":
            return None, r.stderr or text
        try:
            return int(code), json.loads(text)
        except ValueError:
            return int(code), text

    # ---- talking to it ---------------------------------------------------------

    def request(self, method, path, body=None, headers=None, timeout=30, port=None, coord=None):
        """An HTTP request to the (first) coordinator, to coordinator coord (an index), or to
        the daemon listening on port. With self.token set, a request to a coordinator that
        names no Authorization header carries that token; headers {"Authorization": None}
        sends none."""
        hdrs = dict(headers or {})
        if self.token and port is None and \
                not any(k.lower() == "authorization" for k in hdrs):
            hdrs["Authorization"] = "Bearer " + self.token
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        port = port or (self.coords[coord].port if coord is not None else self.coord_port)
        return http_request(self._addr_of_port(port), port, method, path, body, hdrs,
                            timeout, ssl_ctx=self.ssl_ctx)

    def tx(self, ops, **kw):
        """POST /v1/transactions with ops and any other top-level keys."""
        body = dict(kw)
        body["ops"] = ops
        return self.request("POST", "/v1/transactions", body)

    def psql(self, shard, sql, db="app", options=None):
        """Runs sql on a shard (index or name; "store": the decision store's server);
        returns rows as lists of strings. options: the session's settings, as libpq's
        'options' takes them ("-c statement_timeout=0")."""
        sh = self.store if shard == "store" else self.shard(shard)
        dbarg = "dbname=%s options='%s'" % (db, options) if options else db
        out = run([os.path.join(PGBIN, "psql"), "-X", "-q", "-At", "-F", "\t", "-v",
                   "ON_ERROR_STOP=1", "-h", sh.sock, "-p", str(sh.pg_port), "-U", "postgres",
                   "-d", dbarg, "-c", sql])
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


def http_request(host, port, method, path, body=None, headers=None, timeout=30, ssl_ctx=None):
    """One HTTP request (HTTPS with ssl_ctx); returns (status, parsed JSON body or text)."""
    if ssl_ctx is not None:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl_ctx)
    else:
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
    ap.add_argument("command", choices=["start", "stop", "status", "restart", "clean-hosts"])
    ap.add_argument("--dir", help="the cluster's directory (every command but clean-hosts)")
    ap.add_argument("--shards", type=int, default=3)
    ap.add_argument("--fsync", action="store_true", help="PostgreSQL with fsync=on")
    ap.add_argument("--bin", default=None, help="directory of the dtx binaries")
    ap.add_argument("--daemon", help="restart: coordinator, or a shard's name (s1, s2, ...)")
    a = ap.parse_args()
    if a.command == "clean-hosts":
        for what in remove_stale_hosts():
            print("removed the stale %s" % what)
        return
    if not a.dir:
        ap.error("--dir is required")
    if a.command == "start":
        c = Cluster(a.dir, shards=a.shards, fsync=a.fsync, bindir=a.bin).start()
        print(json.dumps({"coordinator": c.url(),
                          "shards": {s.name: {"participant": c.agent_url(s.i),
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
