"""Installing dtx and running it as a service: `make install` into a scratch DESTDIR
(programs, man pages, example configs, systemd units checked the way an operator or
systemd would), the Debian package's contents, and the daemons' readiness
notification (sd_notify READY=1 / STOPPING=1) to a socket the test listens on, as
systemd does for a Type=notify unit."""

import json
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import unittest

from harness import ROOT, ClusterTest

PROGRAMS = {"usr/bin/dtxctl": "dtxctl", "usr/sbin/dtx-coordinator": "dtx-coordinator",
            "usr/sbin/dtx-participant": "dtx-participant"}
MAN_PAGES = ["usr/share/man/man1/dtxctl.1", "usr/share/man/man8/dtx-coordinator.8",
             "usr/share/man/man8/dtx-participant.8"]
UNIT_DIR = "usr/lib/systemd/system"
UNITS = ["dtx-coordinator.service", "dtx-participant@.service"]
EXAMPLES = ["usr/share/doc/dtx/examples/coordinator.json",
            "usr/share/doc/dtx/examples/participant-s1.json",
            "usr/share/doc/dtx/examples/coordinator-tls.json",
            "usr/share/doc/dtx/examples/participant-s1-tls.json"]


def version():
    with open(os.path.join(ROOT, "include", "dtx", "version.h")) as f:
        return re.search(r'#define DTX_VERSION "([^"]+)"', f.read()).group(1)


def make_install(destdir, *args):
    r = subprocess.run(["make", "--no-print-directory", "-C", ROOT, "install",
                        "DESTDIR=" + destdir] + list(args),
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise AssertionError("make install failed:\n%s%s" % (r.stdout, r.stderr))


def unit_settings(path):
    """A unit file's settings as {key: [values]} (comments and sections left out)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            k, v = line.split("=", 1)
            out.setdefault(k, []).append(v)
    return out


class InstallTest(unittest.TestCase):
    """`make install DESTDIR=<tmp> PREFIX=/usr`, once for the class."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtx-install-")
        cls.dest = os.path.join(cls.tmp, "dest")
        make_install(cls.dest, "PREFIX=/usr")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def path(self, rel):
        return os.path.join(self.dest, rel)

    def test_the_tree_holds_programs_man_pages_examples_units_and_docs(self):
        found = set()
        for d, _, files in os.walk(self.dest):
            for f in files:
                found.add(os.path.relpath(os.path.join(d, f), self.dest))
        expected = set(PROGRAMS) | set(MAN_PAGES) | set(EXAMPLES) | \
            {os.path.join(UNIT_DIR, u) for u in UNITS} | \
            {"usr/lib/sysusers.d/dtx.conf", "usr/share/doc/dtx/README.md",
             "usr/share/doc/dtx/operations.md", "usr/share/doc/dtx/api.md",
             "usr/share/doc/dtx/recovery.md", "usr/share/doc/dtx/grafana/dtx.json"}
        self.assertEqual(found, expected)
        for p in PROGRAMS:
            self.assertEqual(os.stat(self.path(p)).st_mode & 0o777, 0o755, p)
        for p in MAN_PAGES + EXAMPLES:
            self.assertEqual(os.stat(self.path(p)).st_mode & 0o777, 0o644, p)

    def test_installed_programs_report_their_version(self):
        for p, name in PROGRAMS.items():
            r = subprocess.run([self.path(p), "--version"], capture_output=True, text=True,
                               timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, "%s %s\n" % (name, version()))

    def test_man_pages_render_without_warnings_and_cover_what_an_operator_looks_for(self):
        if not shutil.which("groff"):
            self.skipTest("groff is not installed (apt-get install groff-base)")
        sections = {"NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "EXIT STATUS", "FILES",
                    "SEE ALSO"}
        for page in MAN_PAGES:
            r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-rLL=80n", self.path(page)],
                               capture_output=True, timeout=60,
                               env=dict(os.environ, LC_ALL="C.UTF-8"))
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stderr.decode(), "", "groff warns about %s" % page)
            text = re.sub(r".\x08", "", r.stdout.decode())  # overstrike bold/underline
            headings = set(re.findall(r"^([A-Z][A-Z ]+)$", text, re.M))
            self.assertLessEqual(sections, headings, page)
            with open(self.path(page)) as f:
                self.assertNotRegex(f.read(), r"@[A-Z]+@", "an unfilled placeholder")
            self.assertIn("/usr/share/doc/dtx", text, page)
            if page.endswith(".8"):
                for word in ("SIGTERM", "NOTIFY_SOCKET", "/etc/dtx/", "--config"):
                    self.assertIn(word, text.replace("\u2010", "-"), page)
        if shutil.which("man"):
            for page in MAN_PAGES:
                r = subprocess.run(["man", "--warnings", "-l", self.path(page)],
                                   capture_output=True, text=True, timeout=60,
                                   env=dict(os.environ, MANWIDTH="80", MAN_DISABLE_SECCOMP="1"))
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(r.stderr, "", "man warns about %s" % page)

    def test_example_configs_are_json_the_units_can_use(self):
        with open(self.path(EXAMPLES[0])) as f:
            coord = json.load(f)
        with open(self.path(EXAMPLES[1])) as f:
            part = json.load(f)
        self.assertTrue(coord["log_dir"].startswith("/var/lib/dtx/"), coord)
        self.assertEqual(part["name"], "s1")  # the template's default instance
        self.assertEqual([s["name"] for s in coord["shards"]], ["s1"])
        self.assertEqual(coord["shards"][0]["url"], "http://" + part["listen"])
        self.assertEqual(part["coordinator_url"], "http://" + coord["listen"])

    def test_units_run_the_installed_programs_as_dtx_sandboxed_with_notify_readiness(self):
        coord = unit_settings(self.path(os.path.join(UNIT_DIR, UNITS[0])))
        part = unit_settings(self.path(os.path.join(UNIT_DIR, UNITS[1])))
        self.assertEqual(coord["ExecStart"],
                         ["/usr/sbin/dtx-coordinator --config /etc/dtx/coordinator.json"])
        self.assertEqual(part["ExecStart"],
                         ["/usr/sbin/dtx-participant --config /etc/dtx/participant-%i.json"])
        for u in (coord, part):
            self.assertEqual(u["Type"], ["notify"])
            self.assertEqual(u["Restart"], ["on-failure"])
            self.assertEqual(u["User"], ["dtx"])
            for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "NoNewPrivileges"):
                self.assertIn(key, u)
            self.assertEqual(u["ProtectSystem"], ["strict"])
        self.assertEqual(coord["ReadWritePaths"], ["/var/lib/dtx"])
        self.assertEqual(coord["StateDirectory"], ["dtx"])
        self.assertNotIn("ReadWritePaths", part)  # the agent writes nothing
        self.assertEqual(part["DefaultInstance"], ["s1"])

    def test_units_pass_systemd_analyze_verify(self):
        tool = shutil.which("systemd-analyze")
        if not tool:
            self.skipTest("systemd-analyze is not installed (apt-get install systemd)")
        # A root holding the install and the system's own units (the targets ours
        # name), so that verify finds our ExecStart= programs where the units say.
        root = os.path.join(self.tmp, "verify-root")
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(self.dest, root, symlinks=True)
        system_units = "/usr/lib/systemd/system"
        for name in os.listdir(system_units):
            dst = os.path.join(root, UNIT_DIR, name)
            if not os.path.lexists(dst):
                src = os.path.join(system_units, name)
                if os.path.islink(src):
                    os.symlink(os.readlink(src), dst)
                elif os.path.isfile(src):
                    shutil.copy(src, dst)
        os.symlink("dtx-participant@.service",
                   os.path.join(root, UNIT_DIR, "dtx-participant@s1.service"))
        units = [os.path.join(root, UNIT_DIR, u)
                 for u in ("dtx-coordinator.service", "dtx-participant@s1.service")]
        # MANPATH: the Documentation=man: pages must be the ones installed.
        env = dict(os.environ, MANPATH=os.path.join(root, "usr/share/man"),
                   SYSTEMD_LOG_COLOR="0")
        r = subprocess.run([tool, "verify", "--root=" + root] + units, capture_output=True,
                           text=True, timeout=120, env=env)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(r.stdout + r.stderr, "", "systemd-analyze verify complains")
        # ... and it does fail on what it should catch: a program not where ExecStart says.
        os.rename(os.path.join(root, "usr/sbin/dtx-coordinator"), os.path.join(root, "moved"))
        r = subprocess.run([tool, "verify", "--root=" + root, units[0]], capture_output=True,
                           text=True, timeout=120, env=env)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("/usr/sbin/dtx-coordinator", r.stderr)

    def test_prefix_and_sysconfdir_reach_the_units_and_man_pages(self):
        dest = os.path.join(self.tmp, "local")
        make_install(dest)  # the default PREFIX, /usr/local
        unit = unit_settings(os.path.join(dest, "usr/local/lib/systemd/system",
                                          "dtx-coordinator.service"))
        self.assertEqual(unit["ExecStart"],
                         ["/usr/local/sbin/dtx-coordinator --config /etc/dtx/coordinator.json"])
        with open(os.path.join(dest, "usr/local/share/man/man8/dtx-coordinator.8")) as f:
            self.assertIn("/usr/local/share/doc/dtx/examples/coordinator.json", f.read())
        self.assertTrue(os.access(os.path.join(dest, "usr/local/bin/dtxctl"), os.X_OK))
        dest = os.path.join(self.tmp, "opt")
        make_install(dest, "PREFIX=/opt/dtx", "SYSCONFDIR=/etc/opt")
        unit = unit_settings(os.path.join(dest, "opt/dtx/lib/systemd/system",
                                          "dtx-participant@.service"))
        self.assertEqual(unit["ExecStart"],
                         ["/opt/dtx/sbin/dtx-participant --config /etc/opt/dtx/participant-%i.json"])


class DebTest(unittest.TestCase):
    """`tools/make-deb --tree`: the package's control data and contents (installing it
    on a fresh Debian 12 root is described in docs/operations.md)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="dtx-deb-")
        missing = [t for t in ("dpkg-deb", "dpkg-shlibdeps", "strip") if not shutil.which(t)]
        cls.deb = None
        if missing:
            cls.why = "%s not installed (apt-get install dpkg-dev binutils)" % ", ".join(missing)
            return
        r = subprocess.run([os.path.join(ROOT, "tools", "make-deb"), "--tree", "--out", cls.tmp],
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise AssertionError("make-deb failed:\n%s%s" % (r.stdout, r.stderr))
        cls.deb = r.stdout.strip().splitlines()[-1].split("make-deb: ", 1)[1]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        if not self.deb:
            self.skipTest(self.why)

    def dpkg_deb(self, *args):
        r = subprocess.run(["dpkg-deb"] + list(args), capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_control_declares_the_libraries_the_programs_link(self):
        self.assertTrue(self.deb.endswith("dtx_%s-1_%s.deb" % (
            version(), subprocess.check_output(["dpkg", "--print-architecture"],
                                               text=True).strip())), self.deb)
        depends = self.dpkg_deb("-f", self.deb, "Depends")
        names = {d.strip().split()[0] for d in depends.split(",")}
        self.assertLessEqual({"libc6", "libmicrohttpd12", "libcjson1", "libpq5", "libcurl4",
                              "zlib1g", "adduser"}, names, depends)
        self.assertEqual(self.dpkg_deb("-f", self.deb, "Package").strip(), "dtx")

    def test_configs_are_conffiles_and_the_tree_is_root_owned(self):
        x = os.path.join(self.tmp, "ctl")
        self.dpkg_deb("-e", self.deb, x)
        with open(os.path.join(x, "conffiles")) as f:
            self.assertEqual(f.read().split(), ["/etc/dtx/coordinator.json",
                                                "/etc/dtx/participant-s1.json"])
        for s in ("postinst", "prerm", "postrm"):
            p = os.path.join(x, s)
            self.assertTrue(os.access(p, os.X_OK), s)
            self.assertEqual(subprocess.run(["sh", "-n", p]).returncode, 0, s)
        listing = self.dpkg_deb("-c", self.deb)
        for line in listing.splitlines():
            self.assertEqual(line.split()[1], "root/root", line)
        for path in ("./usr/sbin/dtx-coordinator", "./usr/sbin/dtx-participant",
                     "./usr/bin/dtxctl", "./usr/lib/systemd/system/dtx-coordinator.service",
                     "./usr/lib/systemd/system/dtx-participant@.service",
                     "./usr/share/man/man8/dtx-coordinator.8.gz", "./etc/dtx/coordinator.json",
                     "./usr/share/doc/dtx/copyright"):
            self.assertIn(" " + path + "\n", listing + "\n")

    def test_postinst_creates_the_user_and_directories_and_enables_the_units(self):
        x = os.path.join(self.tmp, "ctl2")
        self.dpkg_deb("-e", self.deb, x)
        with open(os.path.join(x, "postinst")) as f:
            text = f.read()
        self.assertIn("adduser --quiet --system", text)
        self.assertIn("install -d -o dtx -g dtx -m 0750 /var/lib/dtx", text)
        self.assertIn("deb-systemd-helper enable", text)
        self.assertIn("dtx-participant@s1.service", text)


class NotifyListener:
    """A datagram socket standing in for systemd's notify socket: abstract or a path,
    asking for the sender's credentials as systemd does."""

    def __init__(self, abstract):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.dir = None
        if abstract:
            name = "dtx-test-notify-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.dir = tempfile.mkdtemp(prefix="dtx-notify-")
            self.env = os.path.join(self.dir, "notify")
            self.sock.bind(self.env)

    def recv(self, timeout):
        """(message, sender pid), or (None, None) after timeout seconds."""
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None, None
        pid = None
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data.decode(), pid

    def close(self):
        self.sock.close()
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)


class NotifyTest(ClusterTest):
    """Each daemon restarted with NOTIFY_SOCKET set, as systemd starts a Type=notify unit."""

    SHARDS = 1

    def listen(self, abstract):
        n = NotifyListener(abstract)
        self.addCleanup(n.close)
        return n

    def test_coordinator_is_ready_once_it_takes_transactions_and_says_when_it_stops(self):
        n = self.listen(abstract=True)
        self.c.restart("coordinator", wait=False, env={"NOTIFY_SOCKET": n.env})
        msg, pid = n.recv(60)
        self.assertEqual(msg, "READY=1")
        self.assertEqual(pid, self.c.coordinator.pid)  # what NotifyAccess=main checks
        status, body = self.c.request("GET", "/healthz")  # at once: it said it serves
        self.assertEqual(status, 200, body)
        status, body = self.c.tx([{"shard": "s1", "sql": "SELECT 1"}])
        self.assertEqual(status, 200, body)
        self.assertEqual(n.recv(0.5), (None, None), "READY=1 is sent once")
        self.assertEqual(self.c.stop_coordinator(), 0)
        self.assertEqual(n.recv(10)[0], "STOPPING=1")
        self.c.start_coordinator()

    def test_participant_is_ready_once_it_serves_and_says_when_it_stops(self):
        n = self.listen(abstract=False)
        self.c.restart("s1", wait=False, env={"NOTIFY_SOCKET": n.env})
        msg, pid = n.recv(60)
        self.assertEqual(msg, "READY=1")
        self.assertEqual(pid, self.c.shards[0].agent.pid)
        status, body = self.c.request("GET", "/healthz", port=self.c.shards[0].agent_port)
        self.assertEqual(status, 200, body)
        self.assertEqual(n.recv(0.5), (None, None), "READY=1 is sent once")
        self.assertEqual(self.c.stop_participant(0), 0)
        self.assertEqual(n.recv(10)[0], "STOPPING=1")
        self.c.start_participant(0)
        self.c.wait_healthy()

    def test_a_daemon_that_cannot_start_never_says_ready(self):
        n = self.listen(abstract=True)
        path = os.path.join(self.c.dir, "unreachable-db.json")
        with open(path, "w") as f:
            json.dump({"name": "s1", "listen": "127.0.0.1:1", "startup_wait_s": 0,
                       "conninfo": "host=/nonexistent port=1 dbname=app",
                       "coordinator_url": self.c.url()}, f)
        r = subprocess.run([os.path.join(self.c.bindir, "dtx-participant"), "--config", path],
                           capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, NOTIFY_SOCKET=n.env))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(n.recv(0.5), (None, None))

    def test_a_notify_socket_nobody_listens_on_is_a_warning_not_a_failure(self):
        gone = "@dtx-test-notify-nobody-%d" % os.getpid()
        self.c.restart("coordinator", env={"NOTIFY_SOCKET": gone})
        status, _ = self.c.request("GET", "/healthz")
        self.assertEqual(status, 200)
        self.assertIn("could not tell the service manager 'READY=1'",
                      self.c.coordinator.log_text())
        self.assertIn(gone, self.c.coordinator.log_text())
        self.c.restart("coordinator")


if __name__ == "__main__":
    unittest.main()
