"""Security (issue 13): authentication never fails open, tokens from files
and the environment, reloaded on SIGHUP.

Every daemon here is the real one: a config that must be refused is run
and its exit status and message checked; a config that must work is run
and spoken to over HTTP."""

import json
import os
import shutil
import signal
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

    def test_named_clients_are_checked_at_start(self):
        cases = [
            ([{"name": "a", "token": "t1"}, {"name": "a", "token": "t2"}],
             ["'auth.clients[1].name': a client 'a' comes earlier"]),
            ([{"name": "a", "token": "t1"}, {"name": "b", "token": "t1"}],
             ["the clients 'a' ('auth.clients[0].token') and 'b'", "have the same token"]),
            ([{"name": "a", "token": "adm"}],
             ["the admin token ('auth.admin_token') and the token of client 'a'"]),
            ([{"name": "a b", "token": "t1"}], ["'auth.clients[0].name' must be 1 to 64"]),
            ([{"name": "a"}], ["'auth.clients[0]' gives no token"]),
            ([{"name": "a", "token": "t1", "role": "admin"}],
             ["'auth.clients[0].role'", "not a known key"]),
            ([{"name": "a", "token": "t1", "token_file": "f"}],
             ["'auth.clients[0].token' and 'auth.clients[0].token_file' both give the "
              "client 'a' token"]),
            ([{"name": "a", "token": "bad token"}], ["'auth.clients[0].token' holds a space"]),
            ([{"name": "a", "token": "t1", "max_active_transactions": 0}],
             ["'auth.clients[0].max_active_transactions'"]),
            ([{"name": "a", "token": "t1", "max_retained_keys": "many"}],
             ["'auth.clients[0].max_retained_keys'"]),
            ([], ["'auth.clients' is empty"]),
            (["a"], ["'auth.clients[0]' must be an object"]),
        ]
        for clients, wanted in cases:
            self.refused("dtx-coordinator",
                         self.coord_config(auth=dict(TOKENS, clients=clients)), *wanted)
        one = [{"name": "a", "token": "t1"}]
        for extra, wanted in (
                ({"client_defaults": {"max_active_transactions": 5}},
                 ["'auth.client_defaults' without 'auth.clients' would limit nobody"]),
                ({"clients": one, "client_defaults": {"max_active_transactions": 0}},
                 ["'auth.client_defaults.max_active_transactions'"]),
                ({"clients": one, "client_defaults": {"max_open": 3}},
                 ["'auth.client_defaults.max_open'", "not a known key"]),
                ({"clients": one, "client_defaults": 7},
                 ["'auth.client_defaults'"])):
            self.refused("dtx-coordinator", self.coord_config(auth=dict(TOKENS, **extra)),
                         *wanted)
        # named clients stand in for client_token, not for the other roles
        self.refused("dtx-coordinator",
                     self.coord_config(auth={"clients": [{"name": "a", "token": "t1"}]}),
                     "'auth.admin_token', 'auth.peer_token' are not set",
                     "(here 'auth.clients')")
        self.refused("dtx-participant",
                     self.agent_config(auth={"peer_token": "p",
                                             "clients": [{"name": "a", "token": "t1"}]}),
                     "'auth.clients'")

    def test_named_clients_without_a_client_token_serve_only_themselves(self):
        port = dtx_cluster.free_ports(1)[0]
        auth = {"admin_token": "adm", "peer_token": "peer",
                "clients": [{"name": "a", "token": "tok-a"}]}
        p, log = self.start_bin("dtx-coordinator", self.coord_config(port, auth=auth))
        self.wait_http(port, p, log)
        for token, want in (("tok-a", 200), ("adm", 200), ("peer", 401), ("cli", 401)):
            status, body = dtx_cluster.http_request("127.0.0.1", port, "GET",
                                                    "/v1/route?key=x", headers=client(token))
            self.assertEqual(status, want, (token, body))

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


class TokenFiles:
    """Token files in a directory of their own (a cluster's directory must start empty)."""

    @classmethod
    def make_token_dir(cls, **tokens):
        cls.token_dir = tempfile.mkdtemp(prefix="tokens-", dir=os.path.dirname(cls.cluster_dir()))
        cls.files = {}
        for role, value in tokens.items():
            cls.files[role] = cls.put_token(role, value)
        return cls.files

    @classmethod
    def put_token(cls, role, text, mode=0o600):
        path = os.path.join(cls.token_dir, role + ".token")
        tmp = path + ".new"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.rename(tmp, path)
        return path

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        shutil.rmtree(cls.token_dir, ignore_errors=True)

    @classmethod
    def cluster_dir(cls):
        import harness
        os.makedirs(harness.WORK, exist_ok=True)
        return os.path.join(harness.WORK, cls.__name__)


def client(token):
    return {"Authorization": "Bearer " + token}


ACCT_OP = {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 0 WHERE id = 1"}


class InteractiveCalls:
    """An interactive transaction's calls, each with the headers given (a ClusterTest's)."""

    def begin(self, headers):
        status, ans = self.c.request("POST", "/v1/transactions", {"interactive": True},
                                     headers=headers)
        self.assertEqual(status, 201, ans)
        return ans["gtid"]

    def ops(self, gtid, headers, *ops):
        return self.c.request("POST", "/v1/transactions/%s/ops" % gtid, {"ops": list(ops)},
                              headers=headers)

    def commit(self, gtid, headers):
        return self.c.request("POST", "/v1/transactions/%s/commit" % gtid, {}, headers=headers)


class TokenSourcesTest(TokenFiles, DaemonRuns, ClusterTest):
    """Tokens from files (one trailing newline dropped) and the environment."""

    SHARDS = 1

    @classmethod
    def setUpClass(cls):
        files = cls.make_token_dir(client="cli-file\n", admin="adm-file\r\n", peer="peer-file")
        cls.COORD = {"auth": {"client_token_file": files["client"],
                              "admin_token_file": files["admin"],
                              "peer_token_file": files["peer"]}}
        cls.AGENT = {"auth": {"peer_token_file": files["peer"]}}
        super().setUpClass()

    def test_tokens_from_files_guard_the_api_and_link_the_shards(self):
        ops = [{"shard": "s1", "sql": "SELECT 1"}]
        self.assertEqual(self.c.tx(ops)[0], 401)
        self.assertEqual(self.c.request("POST", "/v1/transactions", {"ops": ops},
                                        headers=client("cli-file\n".strip()))[0], 200)
        status, body = self.c.request("GET", "/v1/admin/status", headers=client("cli-file"))
        self.assertEqual(status, 403, body)
        status, body = self.c.request("GET", "/v1/admin/status", headers=client("adm-file"))
        self.assertEqual(status, 200, body)
        status, body = self.c.request("GET", "/healthz")
        self.assertEqual(body["shards"], {"s1": "up"})  # the peer token from the same file

    def test_bad_token_files_are_refused_at_start(self):
        base = dict(self.COORD["auth"])
        empty = self.put_token("empty", "\n")
        world = self.put_token("world", "tok", 0o644)
        twolines = self.put_token("twolines", "tok\nother\n")
        cases = [
            (dict(base, client_token_file=empty), ["'auth.client_token_file'", empty, "empty"]),
            (dict(base, client_token_file=world),
             ["'auth.client_token_file'", world, "readable by every user (mode 0644)"]),
            (dict(base, client_token_file=twolines),
             ["'auth.client_token_file'", twolines, "control"]),
            (dict(base, admin_token_file="/nonexistent/adm"),
             ["'auth.admin_token_file'", "could not open '/nonexistent/adm'"]),
            (dict(base, peer_token="p"),
             ["'auth.peer_token' and 'auth.peer_token_file' both give the peer token"]),
        ]
        for auth, wanted in cases:
            self.refused("dtx-coordinator", self.coord_config(auth=auth), *wanted)
        # a relative path is taken beside the config file
        self.write_file("rel.token", "tok", 0o604)
        self.refused("dtx-coordinator",
                     self.coord_config(auth=dict(base, client_token_file="rel.token")),
                     os.path.join(self.c.dir, "rel.token"), "readable by every user")

    def test_the_environment_may_repeat_a_token_but_not_contradict_it(self):
        cfg = self.c.coordinator_config()
        self.refused("dtx-coordinator", cfg,
                     "the environment's DTX_ADMIN_TOKEN and 'auth.admin_token_file' ('%s') give "
                     "two different admin tokens" % self.files["admin"],
                     env={"DTX_ADMIN_TOKEN": "adm-env"})
        # the same token twice is no conflict: this one gets past the config (and stops at the
        # decision log, which the running coordinator holds)
        path = self.write_json("same.json", cfg)
        r = self.run_bin("dtx-coordinator", path, env={"DTX_ADMIN_TOKEN": "adm-file"})
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is in use by another coordinator", r.stderr)

    def test_a_token_from_the_environment_alone_is_used(self):
        port = dtx_cluster.free_ports(1)[0]
        cfg = self.coord_config(port, auth={"client_token": "c", "admin_token": "a"})
        p, log = self.start_bin("dtx-coordinator", cfg, env={"DTX_PEER_TOKEN": "peer-env"})
        self.wait_http(port, p, log)
        outcomes = {"shard": "s1", "gtids": []}
        for token, want in (("a", 401), ("peer-env", 200)):
            status, body = dtx_cluster.http_request("127.0.0.1", port, "POST",
                                                    "/v1/peer/outcomes", outcomes,
                                                    client(token))
            self.assertEqual(status, want, body)


class TokenReloadTest(TokenFiles, InteractiveCalls, ClusterTest):
    """SIGHUP reloads the tokens of a running daemon; nothing in flight is dropped."""

    SHARDS = 2

    @classmethod
    def setUpClass(cls):
        files = cls.make_token_dir(client="cli-1", admin="adm-1", peer="peer-1")
        cls.COORD = {"auth": {"client_token_file": files["client"],
                              "admin_token_file": files["admin"],
                              "peer_token_file": files["peer"]}}
        cls.AGENT = {"auth": {"peer_token_file": files["peer"]}}
        super().setUpClass()

    def test_sighup_reloads_the_tokens_and_keeps_transactions_and_links(self):
        coord, agent = self.c.coordinator, self.c.shards[0].agent
        pid = coord.pid
        gtid = self.begin(client("cli-1"))
        self.assertEqual(self.ops(gtid, client("cli-1"), ACCT_OP)[0], 200)

        # a new client token: the old one is refused at once, the open transaction goes on
        self.put_token("client", "cli-2\n")
        self.assertIn("tokens reloaded", self.hup(coord))
        self.assertEqual(self.ops(gtid, client("cli-1"), ACCT_OP)[0], 401)
        status, body = self.commit(gtid, client("cli-2"))
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        self.assertEqual(coord.pid, pid)
        self.assertTrue(coord.alive())

        # a reload that fails (an empty file) keeps the tokens in use, and says so
        self.put_token("client", "")
        line = self.hup(coord)
        self.assertIn("could not reload the tokens", line)
        self.assertIn("the tokens in use are kept", line)
        self.assertEqual(self.c.tx([ACCT_OP])[0], 401)
        self.assertEqual(self.c.request("POST", "/v1/transactions", {"ops": [ACCT_OP]},
                                        headers=client("cli-2"))[0], 200)
        self.put_token("client", "cli-2")

        # a new peer token on both sides: the participant takes it at once, and the
        # coordinator dials with it when the link comes back
        self.put_token("peer", "peer-2")
        self.hup(agent)
        self.hup(coord)
        port = self.c.shards[0].agent_port
        for token, want in (("peer-1", 401), ("peer-2", 200)):
            status, _ = dtx_cluster.http_request("127.0.0.1", port, "GET", "/v1/admin/branches",
                                                 headers=client(token))
            self.assertEqual(status, want, token)
        self.assertEqual(self.c.request("GET", "/healthz")[1]["shards"]["s1"], "up",
                         "the open link stays up")
        self.c.restart("s1")
        self.c.wait_healthy(timeout=15)
        self.assertEqual(self.c.request("POST", "/v1/transactions", {"ops": [ACCT_OP]},
                                        headers=client("cli-2"))[0], 200)


class NamedClientsTest(TokenFiles, InteractiveCalls, ClusterTest):
    """Named clients (auth.clients), each with its own token: one client cannot see or act
    on another's transactions, nor meet its idempotency keys, before or after a restart."""

    SHARDS = 2

    @classmethod
    def setUpClass(cls):
        files = cls.make_token_dir(billing="tok-billing")
        cls.COORD = {"auth": {"client_token": "cli", "admin_token": "adm", "peer_token": "peer",
                              "clients": [{"name": "orders", "token": "tok-orders"},
                                          {"name": "billing",
                                           "token_file": files["billing"]},
                                          {"name": "batch", "token": "tok-batch",
                                           "max_active_transactions": 2,
                                           "max_retained_keys": 2}],
                              "client_defaults": {"max_active_transactions": 4}}}
        cls.AGENT = {"auth": {"peer_token": "peer"}}
        super().setUpClass()

    ORDERS, BILLING, SHARED, ADMIN, BATCH = (client("tok-orders"), client("tok-billing"),
                                             client("cli"), client("adm"), client("tok-batch"))

    def get(self, gtid, headers):
        return self.c.request("GET", "/v1/transactions/" + gtid, headers=headers)

    def assert_unknown(self, answer, gtid):
        """answer is what a gtid that never existed gets, word for word but the gtid."""
        status, body = answer
        self.assertEqual(status, 404, body)
        self.assertEqual(body["error"]["code"], "not_found", body)
        self.assertIn("'%s'" % gtid, body["error"]["message"])
        return body["error"]["message"].replace(gtid, "GTID")

    def test_a_client_finds_only_its_own_interactive_transaction(self):
        gtid = self.begin(self.ORDERS)
        self.assertEqual(self.ops(gtid, self.ORDERS, ACCT_OP)[0], 200)
        seq = gtid.rsplit("-", 1)
        never = "%s-%d" % (seq[0], int(seq[1]) + 1000)
        unknown_call = self.assert_unknown(self.commit(never, self.ORDERS), never)
        unknown_get = self.assert_unknown(self.get(never, self.ORDERS), never)
        for other in (self.BILLING, self.SHARED):
            # every call another client makes on it is answered as for a gtid never issued
            self.assertEqual(self.assert_unknown(self.ops(gtid, other, ACCT_OP), gtid),
                             unknown_call)
            self.assertEqual(self.assert_unknown(self.commit(gtid, other), gtid), unknown_call)
            self.assertEqual(self.assert_unknown(
                self.c.request("POST", "/v1/transactions/%s/abort" % gtid, {}, headers=other),
                gtid), unknown_call)
            self.assertEqual(self.assert_unknown(self.get(gtid, other), gtid), unknown_get)
        status, body = self.get(gtid, self.ADMIN)  # the operator sees every client's
        self.assertEqual((status, body["status"], body["client"]), (200, "active", "orders"))
        status, body = self.commit(gtid, self.ORDERS)  # untouched by the others' calls
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        status, body = self.get(gtid, self.ORDERS)
        self.assertEqual((status, body["status"], body["client"]), (200, "committed", "orders"))

    def keyed(self, headers, key, amount):
        ops = [{"shard": s, "sql": "UPDATE accounts SET balance = balance + %d WHERE id = 1"
                % amount} for s in ("s1", "s2")]
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"ops": ops, "idempotency_key": key}, headers=headers)
        self.assertEqual((status, body.get("status")), (200, "committed"), body)
        return body["gtid"]

    def test_each_client_has_its_own_idempotency_keys_across_a_restart(self):
        # the same key, three clients, three different requests: three transactions (before,
        # the second and third were refused 422 as a reuse of the first's key)
        before = {s: int(self.c.psql(s, "SELECT balance FROM accounts WHERE id = 1")[0][0])
                  for s in ("s1", "s2")}
        gtids = {"orders": self.keyed(self.ORDERS, "k-same", 1),
                 "billing": self.keyed(self.BILLING, "k-same", 2),
                 "shared": self.keyed(self.SHARED, "k-same", 3)}
        self.assertEqual(len(set(gtids.values())), 3, gtids)
        heads = {"orders": self.ORDERS, "billing": self.BILLING, "shared": self.SHARED}
        amounts = {"orders": 1, "billing": 2, "shared": 3}
        for restarted in (False, True):
            if restarted:
                self.assertEqual(self.c.stop_coordinator(), 0)
                self.c.start_coordinator()
            for who, gtid in gtids.items():
                # a retry gets its own client's answer, not another's
                self.assertEqual(self.keyed(heads[who], "k-same", amounts[who]), gtid,
                                 (who, restarted))
            status, body = self.get(gtids["orders"], self.ORDERS)
            self.assertEqual((status, body.get("client"), body.get("idempotency_key")),
                             (200, "orders", "k-same"), (restarted, body))
            # the log's record names its client: still not billing's after the restart, and
            # one of the shared token's (whose record names none) is still the shared token's
            self.assert_unknown(self.get(gtids["orders"], self.BILLING), gtids["orders"])
            self.assert_unknown(self.get(gtids["shared"], self.BILLING), gtids["shared"])
            self.assertEqual(self.get(gtids["shared"], self.SHARED)[0], 200)
            self.assertEqual(self.get(gtids["orders"], self.ADMIN)[0], 200)
        for s in ("s1", "s2"):  # each of the three ran once
            self.assertEqual(self.c.psql(s, "SELECT balance FROM accounts WHERE id = 1"),
                             [[str(before[s] + 6)]], s)
        # the offline reader shows each record's client and key apart
        rc, dump, err = self.ctl("log", "dump", "--log-dir", self.c.log_dir, json_out=True)
        self.assertEqual(rc, 0, err)
        commits = {e["gtid"]: e for e in dump["entries"] if e["type"] == "COMMIT"}
        self.assertEqual((commits[gtids["orders"]]["client"],
                          commits[gtids["orders"]]["idempotency_key"]), ("orders", "k-same"))
        self.assertNotIn("client", commits[gtids["shared"]])
        self.assertEqual(commits[gtids["shared"]]["idempotency_key"], "k-same")
        rc, text, err = self.ctl("log", "dump", "--log-dir", self.c.log_dir)
        self.assertIn("client billing key k-same", text)
        rc, text, err = self.ctl("--token", "adm", "show", gtids["billing"])
        self.assertEqual(rc, 0, err)
        self.assertIn("client billing", text)

    def test_a_key_with_a_control_character_is_refused(self):
        # \x1f would reach into a named client's namespace (idemkey.h)
        for key in ("\x1forders\x1fk", "a\nb", "tab\there"):
            status, body = self.c.request("POST", "/v1/transactions",
                                          {"ops": [ACCT_OP], "idempotency_key": key},
                                          headers=self.SHARED)
            self.assertEqual((status, body["error"]["code"]), (400, "bad_request"), body)
            self.assertIn("control character", body["error"]["message"])

    def test_a_named_client_is_no_admin(self):
        status, body = self.c.request("GET", "/v1/admin/status", headers=self.ORDERS)
        self.assertEqual(status, 403, body)
        status, body = self.c.request("GET", "/v1/transactions", headers=self.BILLING)
        self.assertEqual(status, 403, body)

    def test_sighup_takes_a_client_s_new_token(self):
        gtid = self.begin(self.BILLING)
        self.assertEqual(self.ops(gtid, self.BILLING, ACCT_OP)[0], 200)
        self.put_token("billing", "tok-billing-2")
        self.addCleanup(self.hup, self.c.coordinator)
        self.addCleanup(self.put_token, "billing", "tok-billing")
        self.assertIn("tokens reloaded", self.hup(self.c.coordinator))
        self.assertEqual(self.ops(gtid, self.BILLING, ACCT_OP)[0], 401)
        status, body = self.commit(gtid, client("tok-billing-2"))  # still billing's
        self.assertEqual((status, body["status"]), (200, "committed"), body)

    def assert_client_full(self, answer, limit, who="batch"):
        status, body = answer
        self.assertEqual((status, body["error"]["code"]), (429, "overloaded"), body)
        self.assertIn("client '%s'" % who, body["error"]["message"])
        self.assertIn(limit, body["error"]["message"])

    def test_a_client_without_limits_of_its_own_has_the_defaults(self):
        """Without limits of its own a named client could take every one of
        max_active_transactions, and every other client got 429 until it finished. With
        auth.client_defaults, each client that sets none has those (batch keeps its own)."""
        begun = [self.begin(self.BILLING) for _ in range(4)]
        self.assert_client_full(self.c.request("POST", "/v1/transactions", {"interactive": True},
                                               headers=self.BILLING),
                                "max_active_transactions", "billing")
        other = self.begin(self.ORDERS)  # orders has a share of its own
        for gtid, who in [(g, self.BILLING) for g in begun] + [(other, self.ORDERS)]:
            self.assertEqual(self.c.request("POST", "/v1/transactions/%s/abort" % gtid, {},
                                            headers=who)[0], 200)

    def test_a_client_s_own_limits_leave_room_for_the_others(self):
        begun = [self.begin(self.BATCH) for _ in range(2)]
        full = self.c.request("POST", "/v1/transactions", {"interactive": True},
                              headers=self.BATCH)
        self.assert_client_full(full, "max_active_transactions")
        self.assert_client_full(self.c.request("POST", "/v1/transactions", {"ops": [ACCT_OP]},
                                               headers=self.BATCH), "max_active_transactions")
        other = self.begin(self.ORDERS)  # the others are not held back by batch's two
        self.assertEqual(self.c.request("POST", "/v1/transactions/%s/abort" % other, {},
                                        headers=self.ORDERS)[0], 200)
        self.assertEqual(self.c.request("POST", "/v1/transactions/%s/abort" % begun[0], {},
                                        headers=self.BATCH)[0], 200)
        begun[0] = self.begin(self.BATCH)  # room again once one finished
        for gtid in begun:
            self.assertEqual(self.commit(gtid, self.BATCH)[0], 200)

        # idempotency keys held: two, then the third waits; a retry of a held one is answered
        first = self.keyed(self.BATCH, "b-1", 0)
        self.keyed(self.BATCH, "b-2", 0)
        ops = [{"shard": s, "sql": "UPDATE accounts SET balance = balance + 0 WHERE id = 1"}
               for s in ("s1", "s2")]
        self.assert_client_full(self.c.request("POST", "/v1/transactions",
                                               {"ops": ops, "idempotency_key": "b-3"},
                                               headers=self.BATCH), "max_retained_keys")
        self.assertEqual(self.keyed(self.BATCH, "b-1", 0), first)
        self.keyed(self.ORDERS, "o-after-batch", 0)
        status, body = self.c.request("GET", "/metrics")
        self.assertIn('dtx_client_refused_total{client="batch"} 3', body)
