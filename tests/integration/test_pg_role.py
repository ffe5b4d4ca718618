"""A participant under a least-privilege PostgreSQL role (docs/security.md).

A client token lets its holder run any SQL in a branch, as the agent's
PostgreSQL role. Shard s1's agent here runs as a role with exactly the
grants docs/security.md lists (no superuser); s2's as the superuser
`postgres`, for contrast. Everything dtx does must work on s1, and what
only a superuser may do must be refused there."""

import json

from harness import ClusterTest, sql

# The set-up docs/security.md gives, word for word.
GRANTS = [
    "CREATE ROLE dtx_agent LOGIN",
    "GRANT CREATE ON DATABASE app TO dtx_agent",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO dtx_agent",
]


class LeastPrivilegeTest(ClusterTest):
    SHARDS = 2

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        c = cls.c
        c.stop_participant(0)
        # the superuser agent made schema dtx; the new role makes (and owns) its own
        c.psql(0, "DROP SCHEMA dtx CASCADE")
        for stmt in GRANTS:
            c.psql(0, stmt)
        path = c._agent_cmd(c.shards[0])[-1]
        with open(path) as f:
            cfg = json.load(f)
        cfg["conninfo"] = cfg["conninfo"].replace("user=postgres", "user=dtx_agent")
        with open(path, "w") as f:
            json.dump(cfg, f)
        c.restart("s1")  # the same command and config file (start_participant would rewrite it)
        c.wait_healthy()

    def test_the_agent_runs_as_the_role_and_the_role_is_no_superuser(self):
        users = self.c.psql(0, "SELECT DISTINCT usename FROM pg_stat_activity "
                               "WHERE datname = 'app' AND pid <> pg_backend_pid() "
                               "AND backend_type = 'client backend'")
        self.assertEqual(users, [["dtx_agent"]])
        self.assertEqual(self.c.psql(0, "SELECT rolsuper FROM pg_roles "
                                        "WHERE rolname = 'dtx_agent'"), [["f"]])
        self.assertEqual(self.c.psql(0, "SELECT nspowner::regrole FROM pg_namespace "
                                        "WHERE nspname = 'dtx'"), [["dtx_agent"]])

    def test_two_and_three_phase_commit_interactive_and_admin_work(self):
        for proto in ("2pc", "3pc"):
            ops = [sql("s1", "UPDATE accounts SET balance = balance - 1 WHERE id = 5"),
                   sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = 5")]
            status, body = self.c.tx(ops, protocol=proto)
            self.assertEqual((status, body.get("status")), (200, "committed"), body)
        self.assertEqual(self.balance(0, 5), 998)
        status, body = self.c.request("POST", "/v1/transactions", {"interactive": True})
        self.assertEqual(status, 201, body)
        gtid = body["gtid"]
        status, body = self.c.request("POST", "/v1/transactions/%s/ops" % gtid,
                                      {"ops": [sql("s1", "UPDATE accounts SET balance = 0 "
                                                         "WHERE id = 6")]})
        self.assertEqual(status, 200, body)
        status, body = self.c.request("POST", "/v1/transactions/%s/abort" % gtid, {})
        self.assertEqual(status, 200, body)
        self.assertEqual(self.balance(0, 6), 1000)
        # the operators' view reads pg_prepared_xacts and pg_locks through the agent
        status, body = self.c.request("GET", "/v1/admin/in-doubt")
        self.assertEqual(status, 200, body)
        status, body = self.c.request("GET", "/v1/admin/status")
        self.assertEqual(status, 200, body)
        self.assertTrue(all(s.get("reachable") for s in body["shards"]), body)
        self.assert_no_prepared(timeout=10)

    def test_superuser_only_statements_are_refused_on_the_least_privilege_shard(self):
        attempts = [
            "DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''true'''; END$$",
            "SELECT pg_read_file('postgresql.conf', 0, 10)",
            "SELECT lo_import('/etc/hostname')",
            "ALTER ROLE dtx_agent SUPERUSER",
        ]
        for stmt in attempts:
            status, body = self.c.tx([sql("s1", stmt)])
            self.assertEqual(status, 409, (stmt, body))
            self.assertEqual(body["error"].get("sqlstate"), "42501", (stmt, body))
        # the same read on the superuser agent's shard works: that is what a client token
        # gives when an agent runs as a superuser
        status, body = self.c.tx([sql("s2", "SELECT pg_read_file('postgresql.conf', 0, 10)")])
        self.assertEqual(status, 200, body)
        self.assert_no_prepared(timeout=10)
