"""Decisions on a PostgreSQL store, and a node's standby taking over (docs/operations.md,
"Several coordinators"): the store keeps every decision; one process of a node is active
and holds its lease; a standby takes over when the active dies, and finishes what it
decided; an active that is only frozen or cut off is fenced by the store itself and steps
down without writing anything."""

import os
import signal
import subprocess
import threading
import time
import uuid

import promtext
from harness import ClusterTest
from integration.test_install import NotifyListener

LEASE_MS = 2000
TAKEOVER_S = 10  # the target; the lease (2 s here) plus replay and reconnecting


def _parent(pid):
    """pid's parent process id, or None once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def transfer_ops(acct, amount=1):
    return [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance - $1 WHERE id = $2",
             "params": [amount, acct], "expect_rows": 1},
            {"shard": "s2", "sql": "UPDATE accounts SET balance = balance + $1 WHERE id = $2",
             "params": [amount, acct], "expect_rows": 1}]


class StoreTest(ClusterTest):
    """One coordinator, its decisions in PostgreSQL."""

    SHARDS = 2
    STORE = "postgres"
    STORE_LEASE_MS = LEASE_MS
    ACCT = iter(range(1, 50))

    def setUp(self):
        self.acct = next(StoreTest.ACCT)
        if not self.c.coordinator.alive():
            self.c.start_coordinator()

    def claim_error(self):
        """What a standby's /healthz says its claim of the lease last failed on ("" none)."""
        status, h = self.c.health()
        return h.get("lease", {}).get("error", "") if status == 503 else ""

    def test_a_decision_is_a_row_of_the_store_before_the_client_hears_of_it(self):
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"ops": transfer_ops(self.acct), "idempotency_key":
                                       "row-%d" % self.acct})
        self.assertEqual((status, body["status"]), (200, "committed"), body)
        rows = self.c.store_psql("SELECT count(*) FROM dtx_store.records WHERE node = 'c1' "
                                 "AND position('%s' in encode(data, 'escape')) > 0"
                                 % body["gtid"])
        self.assertGreaterEqual(int(rows[0][0]), 1, "its COMMIT record is in the store")
        _, st = self.c.request("GET", "/v1/admin/status")
        self.assertEqual((st["coordinator"]["log"]["type"], st["coordinator"]["role"]),
                         ("postgres", "active"), st)

    def test_a_restart_reads_the_store_and_answers_a_retry_the_same(self):
        body = {"ops": transfer_ops(self.acct), "idempotency_key": "restart-%d" % self.acct}
        status, first = self.c.request("POST", "/v1/transactions", body)
        self.assertEqual(status, 200, first)
        self.c.kill_coordinator()
        t0 = time.time()
        self.c.start_coordinator(wait=False)
        self.c.wait_active("c1", timeout=TAKEOVER_S + 5)
        # a new process is a new holder: it waits for the killed one's lease to expire
        self.assertGreaterEqual(time.time() - t0, LEASE_MS / 1000 * 0.5)
        status, again = self.c.request("POST", "/v1/transactions", body)
        self.assertEqual((status, again), (200, first))
        self.assertEqual((self.balance(0, self.acct), self.balance(1, self.acct)), (999, 1001))

    def test_the_store_refuses_a_write_under_a_term_that_lost_the_lease(self):
        term = int(self.c.store_psql("SELECT term FROM dtx_store.leases WHERE node = 'c1'")[0][0])
        r = subprocess.run(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-At", "-h",
             self.c.store.sock, "-p", str(self.c.store.pg_port), "-d", "dtx", "-c",
             "SELECT dtx_store.append('c1', %d, 999999, NULL, NULL, '\\x00'::bytea, %d)" %
             (term - 1, LEASE_MS)],
            capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("lost its lease", r.stderr)
        self.assertEqual(self.c.store_psql("SELECT count(*) FROM dtx_store.records WHERE pos = "
                                           "999999"), [["0"]])

    def test_a_damaged_record_in_the_store_stops_the_start_with_status_1_naming_its_row(self):
        # as a damaged decision log does: no process of the node could read it better, so
        # this is no step-down (status 3) for a service manager to restart over and over
        status, _ = self.c.request("POST", "/v1/transactions", {"ops": transfer_ops(self.acct)})
        self.assertEqual(status, 200)
        self.assertEqual(self.c.stop_coordinator(), 0)
        [[pos, data]] = self.c.store_psql("SELECT pos, encode(data, 'hex') FROM dtx_store.records"
                                          " WHERE node = 'c1' ORDER BY pos DESC LIMIT 1")
        self.c.store_psql("UPDATE dtx_store.records SET data = '\\xff01'::bytea "
                          "WHERE node = 'c1' AND pos = %s" % pos)
        try:
            self.c.start_coordinator(wait=False)
            self.assertTrue(self.c.coordinator.wait(30), "it must not run on a damaged store")
            self.assertEqual(self.c.coordinator.exit_status(), 1)
            log = open(self.c.coordinator.log).read()
            self.assertIn("row at position %s" % pos, log)
        finally:
            self.c.store_psql("UPDATE dtx_store.records SET data = '\\x%s'::bytea "
                              "WHERE node = 'c1' AND pos = %s" % (data, pos))
        self.c.start_coordinator()

    def test_a_store_server_running_without_fsync_is_refused_unless_allowed(self):
        self.c.stop_coordinator()
        self.c.store_allow_fsync_off = False  # the test store runs with fsync = off
        try:
            self.c.start_coordinator(wait=False)
            self.wait_for(lambda: "fsync" in self.claim_error(), timeout=20,
                          what="the claim to name fsync")
            status, h = self.c.health()
            self.assertEqual((status, h["role"]), (503, "standby"), h)
            self.assertIn("allow_fsync_off", h["lease"]["error"])
        finally:
            self.c.store_allow_fsync_off = True
            self.c.stop_coordinator()
        self.c.start_coordinator()
        self.assertIn("fsync = off", open(self.c.coordinator.log).read())  # allowed: warned

    def test_a_store_that_warns_while_committing_a_decision_is_never_answered_200(self):
        # A cancelled wait for the synchronous standby commits locally and only warns: the
        # decision may not be on the standby. Any WARNING while a write commits is that
        # doubt, so the process steps down rather than answer; here a trigger raises one.
        self.c.store_psql("CREATE FUNCTION public.dtx_test_warn() RETURNS trigger LANGUAGE plpgsql"
                          " AS $$BEGIN RAISE WARNING 'canceling wait for synchronous replication "
                          "(a test)'; RETURN NEW; END$$; CREATE TRIGGER dtx_test_warn AFTER INSERT"
                          " ON dtx_store.records FOR EACH ROW EXECUTE FUNCTION "
                          "public.dtx_test_warn()")
        try:
            try:
                status, body = self.c.request("POST", "/v1/transactions",
                                              {"ops": transfer_ops(self.acct)}, timeout=20)
            except OSError as e:
                status, body = None, str(e)
            self.assertNotEqual(status, 200, body)
            self.assertTrue(self.c.coordinator.wait(15), "it steps down")
            self.assertEqual(self.c.coordinator.exit_status(), 3)
            self.assertIn("canceling wait", open(self.c.coordinator.log).read())
        finally:
            self.c.store_psql("DROP TRIGGER dtx_test_warn ON dtx_store.records; "
                              "DROP FUNCTION public.dtx_test_warn()")
        self.c.start_coordinator()
        self.c.wait_active("c1")

    def test_an_active_whose_store_hangs_steps_down_instead_of_hanging_with_it(self):
        # The store answers nothing (a lock held on its lease row; a synchronous standby gone
        # behaves alike) while the TCP connection stays healthy: no statement may wait past
        # the lease, which a standby could take meanwhile.
        locker = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", "psql", "-X", "-q", "-h", self.c.store.sock,
             "-p", str(self.c.store.pg_port), "-d", "dtx"], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
        try:
            locker.stdin.write("BEGIN; LOCK TABLE dtx_store.leases; SELECT pg_sleep(60);\n")
            locker.stdin.flush()
            self.wait_for(lambda: self.c.store_psql(
                "SELECT count(*) FROM pg_locks WHERE relation = 'dtx_store.leases'::regclass "
                "AND mode = 'AccessExclusiveLock' AND granted")[0][0] == "1",
                what="the lock to be held")
            t0 = time.time()
            try:
                status, body = self.c.request("POST", "/v1/transactions",
                                              {"ops": transfer_ops(self.acct)}, timeout=30)
            except OSError as e:
                status, body = None, str(e)
            self.assertNotEqual(status, 200, body)
            self.assertTrue(self.c.coordinator.wait(LEASE_MS / 1000 * 3), "it stepped down")
            self.assertEqual(self.c.coordinator.exit_status(), 3)
            print("stepped down %.1f s after its store hung (lease %d ms)" %
                  (time.time() - t0, LEASE_MS))
        finally:
            locker.kill()  # its server process sleeps on, holding the lock: end it too
            locker.wait()
            self.c.store_psql("SELECT pg_terminate_backend(pid) FROM pg_locks WHERE relation = "
                              "'dtx_store.leases'::regclass AND mode = 'AccessExclusiveLock'")
        self.c.start_coordinator(wait=False)
        self.c.wait_active("c1", timeout=TAKEOVER_S + 5)

    def test_an_active_whose_store_server_stops_answering_steps_down(self):
        """The store's server stopped (SIGSTOP: a hung machine or disk): the connection
        stays open and the kernel acknowledges, so statement_timeout and tcp_user_timeout
        never fire. The active kept answering /healthz 'active' with transactions prepared
        and their clients waiting, for as long as the store stayed stopped; no statement may
        wait past three quarters of the lease, on the coordinator's own clock."""
        master = self.c.pg_pid("store")
        stopped = [master] + [int(p) for p in os.listdir("/proc") if p.isdigit() and
                              _parent(int(p)) == master]
        answers = []
        client = threading.Thread(target=lambda: answers.append(self._post_quietly()))
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            t0 = time.time()
            client.start()
            self.assertTrue(self.c.coordinator.wait(LEASE_MS / 1000 * 4), "it stepped down")
            took = time.time() - t0
            self.assertEqual(self.c.coordinator.exit_status(), 3)
            print("stepped down %.1f s after its store's server stopped (lease %d ms)" %
                  (took, LEASE_MS))
            client.join(30)
            self.assertNotEqual(answers[0][0], 200, answers)
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
        self.c.start_coordinator(wait=False)
        self.c.wait_active("c1", timeout=TAKEOVER_S + 5)

    def _post_quietly(self):
        try:
            return self.c.request("POST", "/v1/transactions", {"ops": transfer_ops(self.acct)},
                                  timeout=30)
        except OSError as e:
            return None, str(e)

    def test_a_store_of_a_newer_schema_version_is_refused_and_one_as_new_is_left_alone(self):
        [[v]] = self.c.store_psql("SELECT version FROM dtx_store.schema_version")
        self.assertGreaterEqual(int(v), 1)
        # the same version: the functions are not made again at every connect
        self.c.store_psql("COMMENT ON FUNCTION dtx_store.renew(text, bigint, text, integer) IS "
                          "'left alone'")
        self.c.stop_coordinator()
        self.c.store_psql("UPDATE dtx_store.schema_version SET version = version + 1")
        try:
            self.c.start_coordinator(wait=False)
            self.wait_for(lambda: "newer than this coordinator" in self.claim_error(),
                          timeout=20, what="the claim to refuse the newer schema")
        finally:
            self.c.store_psql("UPDATE dtx_store.schema_version SET version = %s" % v)
            self.c.stop_coordinator()
        self.c.start_coordinator()
        self.assertEqual(self.c.store_psql(
            "SELECT obj_description('dtx_store.renew(text, bigint, text, integer)'::regprocedure)"),
            [["left alone"]])

    def test_a_store_of_an_older_schema_version_gets_this_versions_functions(self):
        """Version 2's append renews the lease and takes lease_ms; a store whose version says
        1 (its append did neither: here it is missing altogether) gets it at the next
        connect, and its version raised."""
        self.c.stop_coordinator()
        self.c.store_psql("DROP FUNCTION dtx_store.append(text, bigint, bigint, bytea, bytea, "
                          "bytea, integer); UPDATE dtx_store.schema_version SET version = 1")
        self.c.start_coordinator()
        self.assertEqual(self.c.store_psql("SELECT version FROM dtx_store.schema_version"),
                         [["2"]])
        status, body = self.c.request("POST", "/v1/transactions",
                                      {"ops": transfer_ops(self.acct)})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.c.store_psql(
            "SELECT count(*) FROM pg_proc WHERE proname = 'append' AND pronargs = 7 AND "
            "pronamespace = 'dtx_store'::regnamespace"), [["1"]])

    def test_synchronous_commit_off_in_the_stores_database_is_put_back_on(self):
        # local and remote_write do not wait for the synchronous standby's flush: a decision
        # answered could be missing from the standby promoted after the primary's loss
        log = os.path.join(self.c.store.dir, "postgres.log")
        for setting in ("off", "local", "remote_write"):
            self.c.store_psql("ALTER DATABASE dtx SET synchronous_commit = %s" % setting)
            self.c.store_psql("ALTER DATABASE dtx SET log_statement = 'all'")
            try:
                self.c.stop_coordinator()
                since = os.path.getsize(log)
                self.c.start_coordinator()
                self.assertIn("synchronous_commit = %s" % setting,
                              open(self.c.coordinator.log).read())
                status, body = self.c.request("POST", "/v1/transactions",
                                              {"ops": transfer_ops(self.acct)})
                self.assertEqual(status, 200, body)
                with open(log) as f:
                    f.seek(since)
                    self.assertIn("SET synchronous_commit = on", f.read(), setting)
            finally:
                self.c.store_psql("ALTER DATABASE dtx RESET synchronous_commit")
                self.c.store_psql("ALTER DATABASE dtx RESET log_statement")


class TakeoverTest(ClusterTest):
    """An active and a standby of node c1 on one postgres store."""

    SHARDS = 2
    COORDINATORS = ["c1", "c1"]
    STORE = "postgres"
    STORE_LEASE_MS = LEASE_MS
    COORD = {"commit_wait_ms": 1000}
    ACCT = iter(range(1, 90))

    def setUp(self):
        self.acct = next(TakeoverTest.ACCT)
        for co in self.c.coords:  # both processes up, whichever is active
            if not co.proc.alive():
                self.c.start_coordinator(i=co.i)
        self.active = self.c.wait_active("c1")
        self.standby = 1 - self.active

    def post(self, body, coord=None, timeout=20):
        try:
            return self.c.request("POST", "/v1/transactions", body, timeout=timeout,
                                  coord=self.active if coord is None else coord)
        except OSError as e:
            return None, str(e)

    def take_over(self):
        """Waits for the standby to become active; returns the seconds it took."""
        t0 = time.time()
        i = self.c.wait_active("c1", timeout=TAKEOVER_S + 10)
        took = time.time() - t0
        self.assertEqual(i, self.standby)
        self.assertLess(took, TAKEOVER_S, "takeover took %.1f s" % took)
        return took

    def test_the_standby_says_so_and_refuses_clients(self):
        # a standby just started answers before its first look at the lease: then it names none
        def lease():
            h = self.c.health(self.standby)[1]
            return h.get("lease", {}) if isinstance(h, dict) else {}
        self.wait_for(lambda: "term" in lease(), what="the standby to have looked at the lease")
        status, h = self.c.health(self.standby)
        self.assertEqual((status, h["role"], h["node_id"]), (503, "standby", "c1"), h)
        self.assertGreaterEqual(h["lease"]["term"], 1)
        status, body = self.post({"ops": transfer_ops(self.acct)}, coord=self.standby)
        self.assertEqual((status, body["error"]["code"]), (503, "unavailable"), body)
        self.assertIn("standby", body["error"]["message"])
        status, ah = self.c.health(self.active)
        self.assertEqual((status, ah["role"]), (200, "active"))
        # the holder the standby names is the process answering as active, and not itself
        self.assertEqual(h["lease"]["holder"], ah["boot_id"], (h, ah))
        self.assertNotEqual(h["boot_id"], ah["boot_id"])
        for i, want in ((self.standby, 0.0), (self.active, 1.0)):  # exactly one active per node
            status, text = self.c.request("GET", "/metrics", coord=i)
            self.assertEqual(status, 200, text)
            fam = promtext.parse(text)["dtx_coordinator_active"]
            self.assertEqual((fam.type, fam.series()), ("gauge", [({"node": "c1"}, want)]))

    def test_a_standby_tells_its_service_manager_it_is_ready_and_which_role_it_has(self):
        # Under a Type=notify unit a standby that never said READY=1 would be killed as a
        # failed start after TimeoutStartSec, and restarted, over and over.
        n = NotifyListener(abstract=True)
        self.addCleanup(n.close)
        self.c.stop_coordinator(self.standby)
        self.c.start_coordinator(i=self.standby, wait=False, env={"NOTIFY_SOCKET": n.env})
        msg, pid = n.recv(30)
        self.assertIsNotNone(msg, "the standby never said it was ready")
        self.assertIn("READY=1", msg.split("\n"))
        self.assertIn("STATUS=standby", msg)
        self.assertEqual(pid, self.c.coords[self.standby].proc.pid)
        self.assertEqual(self.c.health(self.standby)[1]["role"], "standby")
        self.c.kill_coordinator(self.active)
        self.take_over()
        msg, _ = n.recv(30)
        self.assertIsNotNone(msg, "taking over is told too")
        self.assertIn("STATUS=active", msg)

    def test_a_graceful_stop_hands_the_lease_over_at_once(self):
        # A planned switchover (a stop, an upgrade) need not wait for the lease to run out:
        # the stopping process gives it up after its last write.
        status, _ = self.post({"ops": transfer_ops(self.acct)})
        self.assertEqual(status, 200)
        self.assertEqual(self.c.stop_coordinator(self.active), 0)
        t0 = time.time()
        self.assertEqual(self.c.wait_active("c1", timeout=TAKEOVER_S), self.standby)
        took = time.time() - t0
        print("takeover after a graceful stop: %.2f s (lease %d ms)" % (took, LEASE_MS))
        # without the release it is at least the two thirds of a lease left since the last
        # renewal; with it, the standby's next try (a quarter of a lease) and its start
        self.assertLess(took, LEASE_MS / 1000 * 0.6)
        status, body = self.post({"ops": transfer_ops(self.acct)}, coord=self.standby)
        self.assertEqual(status, 200, body)

    def test_acknowledged_commits_survive_the_active_dying(self):
        keys = ["ack-%d-%d" % (self.acct, n) for n in range(5)]
        answers = {}
        for k in keys:
            status, body = self.post({"ops": transfer_ops(self.acct), "idempotency_key": k})
            self.assertEqual(status, 200, body)
            answers[k] = body
        self.c.kill_coordinator(self.active)
        took = self.take_over()
        print("takeover after kill -9: %.2f s (lease %d ms)" % (took, LEASE_MS))
        for k in keys:  # the new active knows every one, with the same answer
            status, body = self.post({"ops": transfer_ops(self.acct), "idempotency_key": k},
                                     coord=self.standby)
            self.assertEqual((status, body), (200, answers[k]))
        self.assertEqual((self.balance(0, self.acct), self.balance(1, self.acct)), (995, 1005))

    def test_what_the_dead_active_decided_is_finished_by_the_new_one(self):
        # the active with a failpoint; the other, started after it, its standby
        self.c.stop_coordinator(self.standby)
        self.c.stop_coordinator(self.active)
        self.c.start_coordinator(i=self.active, wait=False,
                                 env={"DTX_FAILPOINTS": "coord.after_durable=crash"})
        self.assertEqual(self.c.wait_active("c1", timeout=TAKEOVER_S), self.active)
        self.c.start_coordinator(i=self.standby)
        status, _ = self.post({"ops": transfer_ops(self.acct)})
        self.assertIsNone(status, "the active died after its COMMIT record, before answering")
        self.assertEqual((len(self.c.prepared(0)), len(self.c.prepared(1))), (1, 1))
        self.take_over()
        self.assert_no_prepared(timeout=15)
        self.assertEqual((self.balance(0, self.acct), self.balance(1, self.acct)), (999, 1001))

    def test_a_frozen_active_is_fenced_by_the_store_and_steps_down(self):
        old = self.c.coords[self.active].proc
        term = int(self.c.store_psql("SELECT term FROM dtx_store.leases WHERE node = 'c1'")[0][0])
        old.signal(signal.SIGSTOP)  # alive, holding its lease and its links, deciding nothing
        try:
            self.take_over()
            status, body = self.post({"ops": transfer_ops(self.acct)}, coord=self.standby)
            self.assertEqual(status, 200, body)
            rows_before = self.c.store_psql("SELECT pos, term FROM dtx_store.records ORDER BY pos")
        finally:
            old.signal(signal.SIGCONT)  # it wakes up believing it is active
        self.assertTrue(old.wait(15), "the old active stepped down")
        self.assertEqual(old.exit_status(), 3, "exit status 3: stepped down")
        self.assertIn("stepping down", open(old.log).read())
        new_term = int(self.c.store_psql("SELECT term FROM dtx_store.leases WHERE node = 'c1'")
                       [0][0])
        self.assertEqual(new_term, term + 1)
        rows_after = self.c.store_psql("SELECT pos, term FROM dtx_store.records ORDER BY pos")
        written_by_old = [r for r in rows_after if int(r[1]) != new_term]
        self.assertEqual(written_by_old, [], "the old active wrote nothing after the takeover "
                                             "(the new one's checkpoint dropped every older row)")
        self.assertTrue(set(map(tuple, rows_before)) <= set(map(tuple, rows_after)))
        status, body = self.post({"ops": transfer_ops(self.acct)}, coord=self.standby)
        self.assertEqual(status, 200, body)
        self.assertEqual((self.balance(0, self.acct), self.balance(1, self.acct)), (998, 1002))
        self.assert_no_prepared(timeout=15)

    def test_an_active_whose_own_store_session_hangs_answers_until_it_steps_down(self):
        """Only the active's own session with the store hangs (its server process stopped;
        the store's server and the standby's session go on): the active's next write gives
        up within three quarters of the lease and it steps down, the standby takes over and
        its participants see its newer epoch, and all the while the old active's loop never
        waits on the store: it answers /healthz until it exits."""
        old = self.c.coords[self.active].proc
        status, body = self.post({"ops": transfer_ops(self.acct)})  # its session wrote: found
        self.assertEqual(status, 200, body)
        rows = self.c.store_psql(
            "SELECT pid FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND "
            "(query LIKE '%dtx_store.append%' OR query LIKE '%dtx_store.renew%')")
        self.assertEqual(len(rows), 1, rows)
        backend = int(rows[0][0])
        gaps, done = [], threading.Event()

        def watch():  # how long the old active goes without answering /healthz
            last = time.time()
            while not done.is_set() and old.alive():
                status, _ = self.c.health(self.active, timeout=30)
                now = time.time()
                if status is not None:
                    gaps.append(now - last)
                    last = now
                time.sleep(0.05)
            gaps.append(time.time() - last)

        watcher = threading.Thread(target=watch)
        os.kill(backend, signal.SIGSTOP)
        try:
            watcher.start()
            t0 = time.time()
            self.wait_for(lambda: self.c.serving(*self.c.health(self.standby)),
                          timeout=TAKEOVER_S, what="the standby to take over")
            print("the standby took over in %.1f s" % (time.time() - t0))
            status, body = self.post({"ops": transfer_ops(self.acct)}, coord=self.standby)
            self.assertEqual(status, 200, body)
            self.assertTrue(old.wait(15), "the old active stepped down")
            self.assertEqual(old.exit_status(), 3, "exit status 3: stepped down")
        finally:
            done.set()
            os.kill(backend, signal.SIGCONT)
            watcher.join(40)
            self.c.store_psql("SELECT pg_terminate_backend(%d)" % backend)
        print("longest time the old active did not answer: %.1f s" % max(gaps))
        self.assertLess(max(gaps), LEASE_MS / 1000, "its loop never waited on the store")
        self.assertEqual((self.balance(0, self.acct), self.balance(1, self.acct)), (998, 1002))

    def test_the_store_killed_under_load_loses_no_answered_decision(self):
        answers, codes, lock, stop = {}, {}, threading.Lock(), threading.Event()
        accts = [91, 92, 93]  # one per worker: no lock waits between them

        def worker(n):
            while not stop.is_set():
                key = "load-%s" % uuid.uuid4().hex[:10]
                for coord in (self.active, self.standby):
                    status, body = self.post({"ops": transfer_ops(accts[n]),
                                              "idempotency_key": key}, coord=coord, timeout=10)
                    with lock:
                        code = status if status != 409 else body["error"]["code"]
                        codes[code] = codes.get(code, 0) + 1
                    if status in (200, 409):
                        with lock:
                            answers[key] = (accts[n], status, body.get("gtid"))
                        break
                time.sleep(0.02)

        def balances():
            return [(self.balance(0, a), self.balance(1, a)) for a in accts]

        before = balances()
        threads = [threading.Thread(target=worker, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        self.c.pg_stop("store", mode="immediate")  # kill -9 of the store's PostgreSQL
        time.sleep(1.0)
        self.c.pg_start("store")
        time.sleep(LEASE_MS / 1000 * 3)
        stop.set()
        for t in threads:
            t.join()
        stepped = [co.name for co in self.c.coords if not co.proc.alive()]
        for co in self.c.coords:  # whoever stepped down comes back, as its service would
            if not co.proc.alive():
                self.c.start_coordinator(i=co.i, wait=False)
        active = self.c.wait_active("c1", timeout=TAKEOVER_S + 10)
        self.assert_no_prepared(timeout=20)
        print("store killed under load: answers %s; stepped down: %s" % (codes, stepped))
        committed = [k for k, (_, s, _) in answers.items() if s == 200]
        self.assertGreater(len(committed), 5, codes)
        after = balances()
        for (b0, b1), (a0, a1), a in zip(before, after, accts):
            self.assertEqual(b0 + b1, a0 + a1, "account %d: both legs or neither" % a)
        # every transfer answered 200 is committed: a retry with its key says so, with the
        # first answer's gtid (a store that lost the COMMIT lost the key too, and the retry
        # would run as a new transaction, also answered 200)
        for k in committed:
            status, body = self.post({"ops": transfer_ops(answers[k][0]), "idempotency_key": k},
                                     coord=active)
            self.assertEqual((status, body.get("status"), body.get("gtid")),
                             (200, "committed", answers[k][2]), (k, body))
        for (b0, _), (a0, _), a in zip(before, after, accts):
            n = sum(1 for acct, s, _ in answers.values() if acct == a and s == 200)
            self.assertGreaterEqual(b0 - a0, n, "account %d: every answered commit moved money"
                                    % a)


class StandbyAuthTest(ClusterTest):
    """A standby with tokens: who may not call an endpoint is told so (401/403), a path
    nobody serves is 404, and only who may call it hears "go to the active" (503). A
    standby answered 503 to everything, before any token was looked at."""

    SHARDS = 1
    COORDINATORS = ["c1", "c1"]
    STORE = "postgres"
    STORE_LEASE_MS = LEASE_MS
    COORD = {"auth": {"client_token": "cli", "admin_token": "adm", "peer_token": "peer"}}

    def call(self, i, method, path, token):
        body = {"ops": transfer_ops(1)} if method == "POST" else None
        hdrs = {"Authorization": "Bearer " + token if token else None}
        status, ans = self.c.request(method, path, body, headers=hdrs, coord=i)
        return status, ans["error"]["code"] if isinstance(ans, dict) and "error" in ans else ans

    def test_a_standby_checks_the_token_and_the_path_before_it_says_standby(self):
        active = self.c.wait_active("c1")
        standby = 1 - active
        calls = [("POST", "/v1/transactions", {None: 401, "cli": 503, "adm": 503}),
                 ("GET", "/v1/transactions", {None: 401, "cli": 403, "adm": 503}),
                 ("GET", "/v1/transactions/c1-1-1", {None: 401, "cli": 503}),
                 ("POST", "/v1/transactions/c1-1-1/commit", {None: 401, "cli": 503}),
                 ("GET", "/v1/admin/in-doubt", {None: 401, "cli": 403, "adm": 503}),
                 ("GET", "/v1/route", {None: 401, "cli": 503}),
                 ("POST", "/v1/peer/outcomes", {None: 401, "cli": 401, "peer": 503}),
                 ("GET", "/v1/peer/3pc/c1-1-1", {None: 401, "adm": 401, "peer": 503}),
                 ("GET", "/v1/nope", {None: 404, "adm": 404}),
                 # under a prefix that is served, a path that is not
                 ("GET", "/v1/admin/nope", {None: 401, "cli": 403, "adm": 404}),
                 ("GET", "/v1/admin/", {"adm": 404}),
                 ("DELETE", "/v1/admin/status", {"adm": 404}),
                 ("POST", "/v1/admin/transactions/c1-1-1/nope", {"adm": 404}),
                 ("POST", "/v1/peer/3pc/nope", {"peer": 404}),
                 ("GET", "/v1/peer/3pc/notagtid", {"peer": 404}),
                 ("POST", "/v1/transactions/c1-1-1/nope", {"cli": 404}),
                 ("POST", "/v1/transactions//commit", {"cli": 404}),
                 ("DELETE", "/v1/transactions", {"adm": 405})]
        codes = {401: "unauthorized", 403: "forbidden", 404: "not_found",
                 405: "method_not_allowed", 503: "unavailable"}
        for method, path, want in calls:
            for token, status in want.items():
                got = self.call(standby, method, path, token)
                self.assertEqual(got, (status, codes[status]), (method, path, token))
        status, h = self.c.health(standby)
        self.assertEqual((status, h["role"]), (503, "standby"), h)
        # a 503 like any other: the contract's error shape, saying why
        self.assertEqual(h["error"]["code"], "unavailable", h)
        self.assertIn("standby of node 'c1'", h["error"]["message"])
        # the active, asked the same, answers only the token and path checks alike
        for method, path, want in calls:
            for token, status in want.items():
                if status != 503:
                    got = self.call(active, method, path, token)
                    self.assertEqual(got, (status, codes[status]), (method, path, token))


class BigCheckpointTest(ClusterTest):
    """An active and a standby of node c1 on a postgres store with a short lease, the active
    keeping many large answers."""

    SHARDS = 2
    COORDINATORS = ["c1", "c1"]
    STORE = "postgres"
    STORE_LEASE_MS = 1000
    KEPT = 48          # answers kept for idempotency keys ...
    RESULT_KB = 900    # ... of about this many kB each: every checkpoint carries them all

    def post_big(self, i, coord):
        body = {"idempotency_key": "big-%d" % i, "ops": [
            {"shard": "s1", "sql": "SELECT string_agg(md5(i::text || $1), '') FROM "
                                   "generate_series(1, $2::int) i",
             "params": [str(i), self.RESULT_KB * 1024 // 32]},
            {"shard": "s2", "sql": "SELECT 1"}]}
        return self.c.request("POST", "/v1/transactions", body, timeout=60, coord=coord)

    def term(self):
        return int(self.c.store_psql("SELECT term FROM dtx_store.leases WHERE node = 'c1'")[0][0])

    def test_a_checkpoint_longer_to_write_than_a_lease_is_written_and_read_back(self):
        """Kept answers (idempotency keys with big results) go into every checkpoint. One of
        tens of MB took the store longer to write than three quarters of the lease, so the
        active stepped down; and each process of the node after it stepped down again while
        writing its first checkpoint, for good: the node never decided anything again. Nor
        may the lease run out under such a write: the standby would take over the moment it
        commits."""
        active = self.c.wait_active("c1")
        standby = 1 - active
        pid, term = self.c.coords[active].proc.pid, self.term()
        answers = []
        for i in range(self.KEPT):
            status, body = self.post_big(i, active)
            self.assertEqual(status, 200, str(body)[:500])
            answers.append(body)
            self.assertTrue(self.c.coords[active].proc.alive(),
                            "still active after %d answers" % i)
        status, st = self.c.request("GET", "/v1/admin/status", coord=active)
        self.assertEqual(status, 200, st)
        [[ckpt]] = self.c.store_psql(
            "SELECT max(length(data)) FROM dtx_store.records WHERE checkpoint")
        print("%d answers of %d kB kept; %d checkpoints, the last of %.1f MB" % (
            self.KEPT, self.RESULT_KB, st["coordinator"]["log"]["checkpoints_since_start"],
            int(ckpt) / 1e6))
        self.assertGreaterEqual(st["coordinator"]["log"]["checkpoints_since_start"], 2)
        self.assertGreater(int(ckpt), 20e6, "a checkpoint bigger than a lease could carry")
        self.assertEqual((self.c.coords[active].proc.pid, self.term()), (pid, term),
                         "the same process held the lease all along")
        self.assertEqual(self.c.health(standby)[1].get("role"), "standby")
        # the standby takes over: reads them back and writes its own first checkpoint
        self.c.stop_coordinator(i=active)
        self.assertEqual(self.c.wait_active("c1", timeout=TAKEOVER_S + 20), standby)
        for i in (0, self.KEPT - 1):
            status, body = self.post_big(i, standby)
            self.assertEqual(status, 200, str(body)[:500])
            self.assertEqual(body["gtid"], answers[i]["gtid"], "a replay, not a new run")
            # the oldest lose their results beyond retention_max_bytes; never the newest
            if i == self.KEPT - 1 or body["results"] is not None:
                self.assertEqual(body["results"], answers[i]["results"])
            else:
                self.assertIn("results_dropped", body)
        term = self.term()
        time.sleep(2 * self.STORE_LEASE_MS / 1000)
        self.assertTrue(self.c.coords[standby].proc.alive(), "the new active stays active")
        self.assertEqual(self.term(), term)
        self.c.start_coordinator(i=active, wait=False)  # back as the standby
        self.wait_for(lambda: (lambda h: isinstance(h, dict) and h.get("role") == "standby")(
            self.c.health(active)[1]), what="the old active to be back as the standby")
