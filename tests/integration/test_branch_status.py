"""A participant tells what became of any branch it has seen: still
prepared, committed or rolled back, also after it was killed and restarted
(from pg_prepared_xacts and pg_xact_status of the xid the coordinator
recorded; nothing extra is written inside the branch)."""

import os
import signal
import threading
import time

from harness import ClusterTest, transfer_ops


class BranchStatusTest(ClusterTest):
    SHARDS = 2

    def branch(self, shard, gid, xid=None):
        path = "/v1/branches/" + gid + ("?xid=%s" % xid if xid is not None else "")
        return self.c.request("GET", path, port=self.c.shard(shard).agent_port)

    def xids(self, gtid):
        status, state = self.c.request("GET", "/v1/transactions/" + gtid)
        return {s["name"]: s.get("xid") for s in state["shards"]}

    def test_committed_branch_is_known_committed_also_after_a_restart(self):
        status, body = self.c.tx(transfer_ops("s1", 70, "s2", 70, 5))
        self.assertEqual(status, 200, body)
        xids = self.xids(body["gtid"])
        self.assertTrue(all(xids.values()), xids)
        gid = "dtx:%s:s1" % body["gtid"]
        status, st = self.branch("s1", gid, xids["s1"])
        self.assertEqual((status, st["state"]), (200, "committed"))
        self.c.kill_participant(0)
        self.c.start_participant(0)
        status, st = self.branch("s1", gid, xids["s1"])
        self.assertEqual((status, st["state"]), (200, "committed"))

    def test_branch_rolled_back_after_it_prepared_is_known_rolled_back(self):
        status, body = self.c.tx([
            {"shard": "s1", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 71"},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + 1 WHERE id = 71 "
                                   "AND (SELECT true FROM pg_sleep(0.3))", "expect_rows": 2}])
        self.assertEqual(status, 409, body)
        xid = self.xids(body["gtid"])["s1"]
        self.assertIsNotNone(xid, "s1 voted yes, so its xid is known")
        status, st = self.branch("s1", "dtx:%s:s1" % body["gtid"], xid)
        self.assertEqual((status, st["state"]), (200, "rolled_back"))

    def test_prepared_branch_is_known_prepared_with_its_xid(self):
        gid = "dtx:c1-999-1:s1"
        self.c.psql(0, "BEGIN; UPDATE accounts SET balance = balance WHERE id = 72; "
                       "PREPARE TRANSACTION '%s'" % gid)
        try:
            status, st = self.branch("s1", gid)
            self.assertEqual((status, st["state"]), (200, "prepared"))
            xid = st["xid"]
        finally:
            self.c.psql(0, "ROLLBACK PREPARED '%s'" % gid)
        status, st = self.branch("s1", gid, xid)
        self.assertEqual((status, st["state"]), (200, "rolled_back"))
        status, st = self.branch("s1", gid)
        self.assertEqual((status, st["state"]), (200, "unknown"))  # no xid, no longer prepared

    def test_a_path_the_participant_does_not_serve_is_404_whatever_the_method(self):
        """POST /nope answered 405 'not allowed', as if /nope existed for GET."""
        port = self.c.shard("s1").agent_port
        for method, path in (("POST", "/nope"), ("DELETE", "/v1/nope"), ("GET", "/nope")):
            status, body = self.c.request(method, path, port=port)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"), (method, path))
        status, body = self.c.request("POST", "/healthz", port=port)  # there, for GET only
        self.assertEqual((status, body["error"]["code"]), (405, "method_not_allowed"))

    def test_other_shards_and_foreign_gids_are_not_found(self):
        status, body = self.branch("s1", "dtx:c1-1-1:s2")
        self.assertEqual((status, body["error"]["code"]), (404, "not_found"))
        status, body = self.branch("s1", "app-prepared-xact")
        self.assertEqual((status, body["error"]["code"]), (404, "not_found"))
        status, body = self.branch("s1", "dtx:c1-1-1:s1", "12x")
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"))

    def test_with_its_database_down_a_participant_still_says_which_paths_it_never_serves(self):
        """With s2's PostgreSQL stopped, a path or gid that can never be served answered
        503 'shard down' as if it could, later; only what needs the database is 503."""
        port = self.c.shard("s2").agent_port
        self.c.pg_stop(1)
        self.addCleanup(self.c.wait_healthy)
        self.addCleanup(self.c.pg_start, 1)
        self.wait_for(lambda: self.c.request("GET", "/v1/admin/branches", port=port)[0] == 503,
                      what="s2's participant to see its database down")
        for method, path in (("GET", "/v1/admin/branchesX"),
                             ("DELETE", "/v1/admin/branches"),
                             ("POST", "/v1/admin/branches/dtx:c1-1-1:s2/delete"),
                             ("POST", "/v1/admin/branches/dtx:c1-1-1:s1/commit"),
                             ("POST", "/v1/admin/branches/app-prepared-xact/rollback")):
            status, body = self.c.request(method, path, {} if method == "POST" else None,
                                          port=port)
            self.assertEqual((status, body["error"]["code"]), (404, "not_found"),
                             (method, path, body))
        status, body = self.c.request("POST", "/v1/admin/branches/dtx:c1-1-1:s2/rollback?malformed=1",
                                      {}, port=port)
        self.assertEqual((status, body["error"]["code"]), (400, "bad_request"), body)
        status, body = self.c.request("GET", "/v1/branches/dtx:c1-1-1:s1?xid=5", port=port)
        self.assertEqual((status, body["error"]["code"]), (404, "not_found"), body)
        # what needs the database is 503 at once: it waited for the database to come back
        for method, path in (("POST", "/v1/admin/branches/dtx:c1-1-1:s2/commit"),
                             ("POST", "/v1/admin/branches/dtx:orphan:s2/rollback?malformed=1"),
                             ("GET", "/v1/branches/dtx:c1-1-1:s2?xid=5"),
                             ("GET", "/v1/branches/dtx:c1-1-1:s2")):
            try:
                status, body = self.c.request(method, path, {} if method == "POST" else None,
                                              port=port, timeout=5)
            except OSError as e:
                self.fail("%s %s: no answer within 5 s with the database down (%s)" %
                          (method, path, e))
            self.assertEqual((status, body["error"]["code"]), (503, "unavailable"),
                             (method, path, body))

    def test_a_database_lost_while_it_is_asked_about_a_branch_is_503(self):
        """The database went away while the participant's question about a branch was in
        flight (here: its backends are stopped, the question sent, then the backends
        killed). The answer was 409 participant_unavailable, the code of a transaction a
        participant could not serve; a shard whose database is down answers 503, as it does
        when the database is already down when asked."""
        port = self.c.shard("s2").agent_port
        pids = [int(r[0]) for r in self.c.psql(1, "SELECT pid FROM pg_stat_activity WHERE "
                                                  "datname = 'app' AND pid <> pg_backend_pid() "
                                                  "AND backend_type = 'client backend'")]
        self.assertTrue(pids, "the participant's connections")
        self.addCleanup(self.c.wait_healthy)
        self.addCleanup(self.c.wait_agent, 1)  # its database up again, as it sees it
        self.addCleanup(self.wait_for, lambda: self.database_up(1), 30,
                        "s2's PostgreSQL to be back after the crash of its backends")
        answer = []
        asking = threading.Thread(target=lambda: answer.append(
            self.c.request("GET", "/v1/branches/dtx:c1-1-1:s2?xid=5", port=port, timeout=20)))
        try:
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            asking.start()
            time.sleep(1)  # the question reaches a stopped backend
            self.assertEqual(answer, [], "no answer while the database cannot answer")
        finally:
            for pid in pids:  # PostgreSQL restarts after a backend crash
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if asking.is_alive():
                asking.join(20)
        self.assertEqual(len(answer), 1, "an answer once the database was lost")
        status, body = answer[0]
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"), body)
        # the question was in flight when the database went: answered from the failed
        # call, not by the check in front of it (shard_ready: "shard 's2': ...")
        message = body["error"]["message"]
        self.assertTrue(message.startswith("could not ask PostgreSQL: "), message)
        # libpq's message, "server closed the connection unexpectedly\n\tThis probably
        # means ...", arrives as one line
        self.assertIn("server closed the connection unexpectedly This probably means", message)
        self.assertFalse(set(message) & set("\r\n\t"), message)

    def database_up(self, shard):
        try:
            return self.c.psql(shard, "SELECT 1") == [["1"]]
        except RuntimeError:  # psql failed: not accepting connections yet
            return False
