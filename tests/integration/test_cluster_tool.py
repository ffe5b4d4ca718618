"""tools/dtx_cluster.py itself: several clusters on one machine (concurrent test
runs, benchmarks) never share a port, waiting for a daemon checks that it is
that daemon which answers, stop never signals a process that merely has a
recorded pid now, and one daemon can be restarted."""

import http.server
import io
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import unittest
from unittest import mock

import dtx_cluster
from harness import WORK, sanitizer_reports

TOOL = os.path.abspath(dtx_cluster.__file__)


class Draws:
    """Stands in for the tool's random module: its port draws offer the given
    ports first (the unlucky draw, made certain), then random ones."""

    def __init__(self, *first):
        self.first = list(first)

    def randint(self, lo, hi):
        return self.first.pop(0) if self.first else random.randint(lo, hi)


class Impostor:
    """Another process's daemon on a port: answers GET /healthz with 200 and body.
    It binds with SO_REUSEADDR, as the dtx daemons do."""

    def __init__(self, port, body):
        payload = json.dumps(body).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


class ClusterToolTest(unittest.TestCase):

    def cluster(self, tag, **kw):
        """A started one-shard cluster, stopped (whoever started its daemons) after the test."""
        os.makedirs(WORK, exist_ok=True)
        os.chmod(WORK, 0o755)
        d = os.path.join(WORK, "%s-%s-%d" % (type(self).__name__, tag, os.getpid()))
        shutil.rmtree(d, ignore_errors=True)
        c = dtx_cluster.Cluster(d, shards=1, **kw)
        self.addCleanup(self.remove, c)
        c.start()
        return c

    def remove(self, c):
        if os.path.exists(os.path.join(c.dir, "cluster.json")):
            dtx_cluster.Cluster.load(c.dir).stop()  # daemons the command line tool started
        c.stop()
        self.assertEqual(sanitizer_reports(c), [])
        shutil.rmtree(c.dir, ignore_errors=True)

    def tool(self, *args):
        return subprocess.run([sys.executable, TOOL] + list(args), capture_output=True,
                              text=True, timeout=120)

    def state(self, c):
        with open(os.path.join(c.dir, "cluster.json")) as f:
            return json.load(f)

    # ---- ports -----------------------------------------------------------------------

    def test_a_restarting_coordinators_port_is_not_given_to_another_cluster(self):
        a = self.cluster("a")
        a.stop_coordinator()  # restarting: for a moment nothing listens on a's port
        # b's first two draws are its shard's PostgreSQL port and its participant's port
        with mock.patch.object(dtx_cluster, "random", Draws(dtx_cluster.free_ports(1)[0],
                                                            a.coord_port)):
            b = self.cluster("b")
        # before the fix b's participant listened on a's port, and this raised
        # KeyError: 'shards' (its /healthz answered 200 without "shards"), as in CI
        a.start_coordinator()
        status, body = a.request("GET", "/healthz")
        self.assertEqual((status, body["node_id"], body["shards"]), (200, "c1", {"s1": "up"}))
        self.assertNotIn(a.coord_port, [b.coord_port, b.shards[0].pg_port,
                                        b.shards[0].agent_port])

    def test_ports_are_picked_above_the_ephemeral_range_when_there_is_no_room_below(self):
        real_open = open

        def fake_open(path, *args, **kw):
            if path == "/proc/sys/net/ipv4/ip_local_port_range":
                return io.StringIO("1024\t60999\n")
            return real_open(path, *args, **kw)

        with mock.patch("builtins.open", fake_open):
            ports = dtx_cluster.free_ports(5)
        self.assertEqual(len(set(ports)), 5)
        self.assertTrue(all(60999 < p <= 65535 for p in ports), ports)

    # ---- waiting for a daemon checks that it is the one we started -------------------

    def test_waiting_for_the_coordinator_fails_naming_the_process_that_holds_its_port(self):
        a = self.cluster("a")
        a.stop_coordinator()
        # a healthy coordinator of another cluster: same node_id, same shard names
        other = {"status": "ok", "node_id": "c1", "epoch": 1, "shards": {"s1": "up"}}
        with Impostor(a.coord_port, other):
            with self.assertRaises(RuntimeError) as cm:
                a.start_coordinator()
        msg = str(cm.exception)
        self.assertIn("coordinator on port %d" % a.coord_port, msg)
        self.assertIn("held by pid %d" % os.getpid(), msg)
        self.assertIn("pid %d, exited with status 1" % a.coordinator.pid, msg)
        self.assertIn("could not listen", msg)
        a.start_coordinator()  # the port is free again
        self.assertEqual(a.request("GET", "/healthz")[0], 200)

    def test_waiting_for_a_participant_fails_when_another_process_answers_on_its_port(self):
        a = self.cluster("a")
        sh = a.shards[0]
        a.stop_participant(0)
        other = {"status": "ok", "shard": "s1", "database": "up", "coordinators": 0}
        with Impostor(sh.agent_port, other):
            with self.assertRaises(RuntimeError) as cm:
                a.start_participant(0)
        msg = str(cm.exception)
        self.assertIn("participant s1 on port %d" % sh.agent_port, msg)
        self.assertIn("held by pid %d" % os.getpid(), msg)
        self.assertFalse(sh.agent.alive())
        a.start_participant(0)
        a.wait_healthy()

    # ---- stop -------------------------------------------------------------------------

    def test_stop_leaves_alone_a_process_that_now_has_a_recorded_pid(self):
        c = self.cluster("a")
        stranger = subprocess.Popen(["sleep", "60"])
        self.addCleanup(stranger.wait)
        self.addCleanup(stranger.kill)
        # the coordinator exited and its pid went to another process
        st = self.state(c)
        st["coordinator_pid"] = stranger.pid
        if st.get("coordinator"):
            st["coordinator"]["pid"] = stranger.pid
        with open(os.path.join(c.dir, "cluster.json"), "w") as f:
            json.dump(st, f)
        r = self.tool("stop", "--dir", c.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIsNone(stranger.poll(), "stop signalled a process it did not start")
        self.assertIn("not signalling pid %d" % stranger.pid, r.stderr)
        self.assertFalse(c.shards[0].agent.alive(), "the participant it did start is stopped")

    # ---- restart ----------------------------------------------------------------------

    def test_restart_runs_one_daemon_anew_with_the_same_config(self):
        # every role needs its token once one is set (a client token alone is refused)
        c = self.cluster("a", coord={"auth": {"client_token": "cli", "admin_token": "adm",
                                              "peer_token": "peer"}},
                         agent={"auth": {"peer_token": "peer"}})
        old = c.shards[0].agent
        self.assertEqual(c.restart("s1"), 0, "SIGTERM: a graceful stop")
        self.assertFalse(old.alive())
        self.assertNotEqual(c.shards[0].agent.pid, old.pid)
        self.assertEqual(self.state(c)["shards"][0]["agent_pid"], c.shards[0].agent.pid)
        status, body = c.request("GET", "/healthz", port=c.shards[0].agent_port)
        self.assertEqual((status, body["shard"]), (200, "s1"))
        c.wait_healthy()

        old = c.coordinator
        r = self.tool("restart", "--dir", c.dir, "--daemon", "coordinator")
        self.assertEqual(r.returncode, 0, r.stderr)
        pid = json.loads(r.stdout)["pid"]
        self.assertNotEqual(pid, old.pid)
        self.assertFalse(old.alive())
        self.assertEqual(self.state(c)["coordinator_pid"], pid)
        self.assertEqual(dtx_cluster.port_listeners(c.coord_port, first=pid), [pid])
        ops = [{"shard": "s1", "sql": "SELECT 1"}]
        self.assertEqual(c.tx(ops)[0], 401, "the restarted coordinator keeps its config")
        status, body = c.request("POST", "/v1/transactions", {"ops": ops},
                                 headers={"Authorization": "Bearer cli"})
        self.assertEqual(status, 200, body)

    def test_restart_refuses_a_daemon_the_cluster_does_not_have(self):
        c = self.cluster("a")
        r = self.tool("restart", "--dir", c.dir, "--daemon", "s9")
        self.assertEqual(r.returncode, 2)
        self.assertIn("coordinator, s1", r.stderr)
        with self.assertRaises(ValueError):
            c.restart("s9")
        self.assertTrue(c.coordinator.alive() and c.shards[0].agent.alive())
