"""Security (issue 13): authentication never fails open, tokens from files
and the environment, reloaded on SIGHUP.

Every daemon here is the real one: a config that must be refused is run
and its exit status and message checked; a config that must work is run
and spoken to over HTTP."""

import json
import os
import signal
import socket
import stat
import subprocess
import tempfile
import time

import dtx_cluster
from harness import ClusterTest

TOKENS = {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}


class DaemonRuns:
    """Runs a daemon binary on a config written for the test (for a ClusterTest)."""

    def write_json(self, name, obj, mode=0o600):
        path = os.path.join(self.c.dir, name)
        with open(path, "w") as f:
            json.dump(obj, f)
        os.chmod(path, mode)
        return path

    def write_file(self, name, text, mode=0o600):
        path = os.path.join(self.c.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def run_bin(self, name, config, env=None, timeout=30):
        full = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
        full.update(env or {})
        return subprocess.run([os.path.join(self.c.bindir, name), "--config", config],
                              capture_output=True, text=True, timeout=timeout, env=full)

    def coord_config(self, port=1, **extra):
        cfg = {"node_id": "c9", "listen": "127.0.0.1:%d" % port,
               "log_dir": os.path.join(self.c.dir, "c9-log-%d" % port),
               "shards": [{"name": "s1", "url": "http://127.0.0.1:%d" %
                           dtx_cluster.free_ports(1)[0]}]}
        cfg.update(extra)
        return cfg

    def agent_config(self, **extra):
        sh = self.c.shards[0]
        cfg = {"name": "s1", "listen": "127.0.0.1:1", "conninfo": sh.conninfo(),
               "coordinator_url": self.c.url(), "startup_wait_s": 0,
               "allow_fsync_off": True}
        cfg.update(extra)
        return cfg

    def refused(self, prog, cfg, *wanted, env=None):
        """prog refuses cfg at start: exit 2, one line naming the file and each of wanted."""
        path = self.write_json("refused.json", cfg)
        r = self.run_bin(prog, path, env=env)
        self.assertEqual(r.returncode, 2, r.stderr)
        line = r.stderr.strip()
        self.assertEqual(len(line.splitlines()), 1, r.stderr)
        self.assertIn(path, line)
        for w in wanted:
            self.assertIn(w, line)
        return line

    def start_bin(self, prog, cfg, env=None):
        """Starts prog on cfg (written to a file); returns (Popen, log path). Stopped at cleanup."""
        path = self.write_json("%s-%d.json" % (prog, len(os.listdir(self.c.dir))), cfg)
        log = path[:-5] + ".log"
        full = {k: v for k, v in os.environ.items() if not k.startswith("DTX_")}
        full.update(env or {})
        with open(log, "wb") as logf:
            p = subprocess.Popen([os.path.join(self.c.bindir, prog), "--config", path],
                                 stdout=logf, stderr=subprocess.STDOUT, env=full,
                                 start_new_session=True)
        self.addCleanup(self.stop_proc, p)
        return p, log

    def stop_proc(self, p):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def wait_http(self, port, p, log, timeout=15):
        end = time.time() + timeout
        while time.time() < end:
            if p.poll() is not None:
                with open(log) as f:
                    self.fail("exited with %s: %s" % (p.returncode, f.read()))
            try:
                return dtx_cluster.http_request("127.0.0.1", port, "GET", "/healthz", timeout=2)
            except OSError:
                time.sleep(0.05)
        self.fail("nothing answered on port %d" % port)


class AuthRulesTest(DaemonRuns, ClusterTest):
    """Auth never fails open: every role's token or none; none only on loopback."""

    SHARDS = 1

    def test_coordinator_with_only_a_client_token_refuses_to_start_naming_the_missing(self):
        line = self.refused("dtx-coordinator",
                            self.coord_config(auth={"client_token": "cli"}),
                            "'auth.admin_token'", "'auth.peer_token'", "are not set")
        self.assertNotIn("'auth.client_token' is", line)

    def test_coordinator_with_any_one_or_two_tokens_refuses_to_start(self):
        for given, missing in ((["admin"], ["client", "peer"]), (["peer"], ["client", "admin"]),
                               (["client", "admin"], ["peer"])):
            auth = {r + "_token": r + "-secret" for r in given}
            self.refused("dtx-coordinator", self.coord_config(auth=auth),
                         *["'auth.%s_token'" % m for m in missing])

    def test_a_token_from_the_environment_counts_as_set(self):
        # DTX_PEER_TOKEN in a coordinator's environment, nothing else: the others are missing
        self.refused("dtx-coordinator", self.coord_config(), "'auth.client_token'",
                     "'auth.admin_token'", env={"DTX_PEER_TOKEN": "peer-secret"})

    def test_two_roles_with_the_same_token_are_refused(self):
        auth = dict(TOKENS, peer_token="cli")
        self.refused("dtx-coordinator", self.coord_config(auth=auth),
                     "the client token ('auth.client_token')",
                     "the peer token ('auth.peer_token') are the same")

    def test_no_token_on_a_non_loopback_address_is_refused_naming_both_keys(self):
        self.refused("dtx-coordinator", self.coord_config(listen="0.0.0.0:1"),
                     "'listen' 0.0.0.0:1 is not a loopback address", "'auth.client_token'",
                     "'auth.admin_token'", "'auth.peer_token'", "'auth.allow_unauthenticated'")
        self.refused("dtx-participant", self.agent_config(listen="0.0.0.0:1"),
                     "'listen' 0.0.0.0:1 is not a loopback address", "'auth.peer_token'",
                     "'auth.allow_unauthenticated'")

    def test_allow_unauthenticated_with_tokens_set_is_refused(self):
        self.refused("dtx-coordinator",
                     self.coord_config(auth=dict(TOKENS, allow_unauthenticated=True)),
                     "'auth.allow_unauthenticated' is true but tokens are set")
        self.refused("dtx-participant",
                     self.agent_config(auth={"peer_token": "p", "allow_unauthenticated": True}),
                     "'auth.allow_unauthenticated' is true but tokens are set")

    def test_participant_refuses_a_client_or_admin_token(self):
        for key in ("admin_token", "client_token_file"):
            self.refused("dtx-participant", self.agent_config(auth={key: "x", "peer_token": "p"}),
                         "'auth.%s': a participant has no" % key,
                         "takes the peer token ('auth.peer_token')")

    def test_unknown_auth_key_is_refused(self):
        self.refused("dtx-coordinator", self.coord_config(auth={"client_tokens": "x"}),
                     "'auth.client_tokens' is not a known key")

    def test_allow_unauthenticated_serves_a_non_loopback_address_and_warns(self):
        port = dtx_cluster.free_ports(1)[0]
        cfg = self.coord_config(port, listen="0.0.0.0:%d" % port,
                                auth={"allow_unauthenticated": True})
        p, log = self.start_bin("dtx-coordinator", cfg)
        self.wait_http(port, p, log)
        with open(log) as f:
            self.assertIn("serving 0.0.0.0:%d without authentication" % port, f.read())

    def test_no_token_on_loopback_serves_without_one(self):
        port = dtx_cluster.free_ports(1)[0]
        p, log = self.start_bin("dtx-coordinator", self.coord_config(port))
        self.wait_http(port, p, log)
        status, body = dtx_cluster.http_request("127.0.0.1", port, "GET", "/v1/admin/status")
        self.assertEqual(status, 200, body)


class ParticipantAuthTest(ClusterTest):
    """With a peer token, every /v1/ endpoint of a participant needs it: the peer stream, the
    3PC calls, branch status and the operators' endpoints."""

    SHARDS = 1
    COORD = {"auth": TOKENS}
    AGENT = {"auth": {"peer_token": "peer"}}

    def test_every_v1_endpoint_of_a_participant_needs_the_peer_token(self):
        port = self.c.shards[0].agent_port
        calls = [("GET", "/v1/admin/branches", None),
                 ("POST", "/v1/admin/branches/dtx:c1-1-1:s1/commit", {}),
                 ("GET", "/v1/branches/dtx:c1-1-1:s1", None),
                 ("GET", "/v1/peer/3pc/c1-1-1", None),
                 ("POST", "/v1/peer/3pc/decide", {"gtid": "c1-1-1", "value": "abort"})]
        for method, path, body in calls:
            for token in (None, "cli", "adm"):
                headers = {"Authorization": "Bearer " + token} if token else {}
                status, ans = dtx_cluster.http_request("127.0.0.1", port, method, path, body,
                                                       headers)
                self.assertEqual((status, ans["error"]["code"]), (401, "unauthorized"),
                                 (method, path, token))
        status, ans = dtx_cluster.http_request("127.0.0.1", port, "GET", "/v1/admin/branches",
                                               headers={"Authorization": "Bearer peer"})
        self.assertEqual(status, 200, ans)
        status, _ = dtx_cluster.http_request("127.0.0.1", port, "GET", "/healthz")
        self.assertEqual(status, 200)
