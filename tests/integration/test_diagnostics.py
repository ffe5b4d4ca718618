"""What PostgreSQL says reaches the client whole: an error's detail, hint,
constraint, table and column in the client's error object."""

import os
import subprocess

from harness import ClusterTest, InteractiveMixin, sql


class DiagnosticsTest(InteractiveMixin, ClusterTest):
    SHARDS = 2

    def aborted_with(self, answer, **want):
        status, body = answer
        self.assertEqual(status, 409, body)
        err = body["error"]
        self.assertEqual((err["code"], err["shard"]), ("sql_error", "s1"), body)
        for k, v in want.items():
            self.assertEqual(err.get(k), v, body)
        return err

    # ---- PostgreSQL's fields in the error object ---------------------------------------

    def test_a_duplicate_key_arrives_with_its_detail_constraint_and_table(self):
        ops = [sql("s2", "UPDATE accounts SET balance = balance + 1 WHERE id = 50"),
               sql("s1", "INSERT INTO accounts (id, balance) VALUES ($1, 0)", 7)]
        answer = self.c.tx(ops)
        err = self.aborted_with(answer, op=1, sqlstate="23505",
                                detail="Key (id)=(7) already exists.",
                                constraint="accounts_pkey", table="accounts")
        self.assertIn("duplicate key", err["message"])
        self.assertNotIn("hint", err)  # PostgreSQL gave none
        # the transaction's recorded state says the same
        status, state = self.c.request("GET", "/v1/transactions/" + answer[1]["gtid"])
        self.assertEqual(state["error"], err)
        self.assertEqual(self.balance(1, 50), 1000)
        # and so does the operator's tool
        show = subprocess.run([os.path.join(self.c.bindir, "dtxctl"), "--coordinator",
                               self.c.url(), "show", answer[1]["gtid"]],
                              capture_output=True, text=True, timeout=60)
        self.assertIn("detail: Key (id)=(7) already exists.", show.stdout, show)

    def test_a_single_shard_error_carries_them_too(self):
        answer = self.c.tx([sql("s1", "INSERT INTO accounts (id, balance) VALUES (8, 0)")])
        self.aborted_with(answer, op=0, sqlstate="23505", detail="Key (id)=(8) already exists.",
                          constraint="accounts_pkey", table="accounts")

    def test_a_not_null_violation_names_the_column(self):
        answer = self.c.tx([sql("s1", "INSERT INTO accounts (id) VALUES (1000)")])
        err = self.aborted_with(answer, sqlstate="23502", table="accounts", column="balance")
        self.assertIn("Failing row contains (1000, null)", err["detail"])

    def test_a_hint_arrives(self):
        answer = self.c.tx([sql("s1", "SELECT no_such_function(1)")])
        err = self.aborted_with(answer, sqlstate="42883")
        self.assertIn("explicit type casts", err["hint"])
        self.assertNotIn("detail", err)

    def test_an_interactive_call_gets_them_and_so_does_the_next_call(self):
        gtid = self.begin()
        answer = self.ops(gtid, sql("s1", "INSERT INTO accounts (id, balance) VALUES (9, 0)"))
        err = self.aborted_with(answer, detail="Key (id)=(9) already exists.",
                                constraint="accounts_pkey")
        status, body = self.commit(gtid)
        self.assertEqual((status, body["error"]), (409, err))
