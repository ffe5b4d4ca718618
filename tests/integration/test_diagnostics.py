"""What PostgreSQL says reaches the client and the log whole: an error's
detail, hint, constraint, table and column in the client's error object;
notices as one log line each, at a bounded rate; no libmicrohttpd warning
at start; and a participant's "in doubt" line once per change (or 30 s),
not once per recovery round."""

import http.client
import json
import os
import re
import subprocess
import time

from harness import ClusterTest, InteractiveMixin, sql

LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z \S+\[\d+\] (DEBUG|INFO |WARN |ERROR) ")


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


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

    # ---- the logs ----------------------------------------------------------------------

    def test_a_notice_is_one_log_line(self):
        body = ("DO $$BEGIN RAISE NOTICE 'first part%second part', chr(10) "
                "USING DETAIL = 'what it was about'; END$$")
        status, ans = self.c.tx([sql("s1", body)])
        self.assertEqual(status, 200, ans)
        log = self.c.shards[0].agent.log
        self.wait_for(lambda: "what it was about" in read(log), what="the notice in the log")
        lines = read(log).splitlines()
        [line] = [x for x in lines if "first part" in x]
        self.assertIn("second part", line)
        self.assertIn("what it was about", line)
        self.assertEqual([x for x in lines if not LOG_LINE.match(x)], [])

    def test_a_flood_of_notices_is_logged_at_a_bounded_rate(self):
        flood = ("DO $$BEGIN FOR i IN 1..3000 LOOP RAISE NOTICE 'flood-notice %', i; END LOOP; "
                 "END$$")
        status, ans = self.c.tx([sql("s2", flood)])
        self.assertEqual(status, 200, ans)
        time.sleep(1.2)
        status, ans = self.c.tx([sql("s2", "DO $$BEGIN RAISE NOTICE 'after the flood'; END$$")])
        self.assertEqual(status, 200, ans)
        log = self.c.shards[1].agent.log
        self.wait_for(lambda: "after the flood" in read(log), what="the last notice")
        lines = read(log).splitlines()
        logged = [x for x in lines if "flood-notice" in x]
        self.assertGreater(len(logged), 0)
        self.assertLessEqual(len(logged), 20)
        self.assertTrue(any(re.search(r"\d+ notices? (were )?not logged", x) for x in lines),
                        "no line says how many notices were dropped")
        self.assertEqual([x for x in lines if not LOG_LINE.match(x)], [])

    def test_a_restarted_participant_writes_nothing_but_log_lines(self):
        # setting up its schema again makes PostgreSQL say "already exists, skipping"
        self.c.restart("s2")
        self.wait_for(lambda: self.c.request("GET", "/healthz")[1]["shards"]["s2"] == "up",
                      what="the coordinator's link to s2")
        lines = read(self.c.shards[1].agent.log).splitlines()
        self.assertEqual([x for x in lines if not LOG_LINE.match(x)], [])

    def test_no_libmicrohttpd_warning_at_start(self):
        logs = [self.c.coordinator.log] + [sh.agent.log for sh in self.c.shards]
        for path in logs:
            text = read(path)
            self.assertNotIn("MHD_OPTION_EXTERNAL_LOGGER", text, path)
            self.assertNotIn("not the first option", text, path)


class InDoubtLog:
    """A cluster whose participants run a recovery round every 300 ms. The branches
    prepared by hand are node c9's, which this coordinator cannot decide: in doubt."""

    SHARDS = 2
    AGENT = {"recovery_interval_ms": 300, "recovery_min_age_ms": 100}

    def lines_with(self, text):
        return [x for x in read(self.c.shards[0].agent.log).splitlines() if text in x]


class InDoubtLogTest(InDoubtLog, ClusterTest):

    def test_the_in_doubt_line_repeats_only_when_what_is_in_doubt_changes(self):
        before = len(self.lines_with("in doubt"))
        self.prepare_by_hand(0, "dtx:c9-1-1:s1", 60)
        time.sleep(5)  # about 15 recovery rounds
        self.assertEqual(len(self.lines_with("in doubt")) - before, 1, self.lines_with("in doubt"))
        self.assertEqual(len(self.lines_with("c9-1-1")), 1, self.lines_with("c9-1-1"))
        self.prepare_by_hand(0, "dtx:c9-1-2:s1", 61)
        time.sleep(2)
        self.assertEqual(len(self.lines_with("in doubt")) - before, 2, self.lines_with("in doubt"))
        self.assertLessEqual(len(self.lines_with("c9-1-1")), 2, self.lines_with("c9-1-1"))
        self.assertEqual(self.c.prepared(0), ["dtx:c9-1-1:s1", "dtx:c9-1-2:s1"])


class InDoubtWhileDownLogTest(InDoubtLog, ClusterTest):
    """Its own cluster: recovery backs off while the coordinator is down."""

    def test_the_in_doubt_line_repeats_only_on_change_while_the_coordinator_is_down(self):
        self.c.stop_coordinator()
        self.addCleanup(self.c.start_coordinator)
        before = len(self.lines_with("in doubt"))
        self.prepare_by_hand(0, "dtx:c9-1-3:s1", 62)
        time.sleep(6)  # recovery retries after 0.5, 1, 2 and 4 s
        lines = self.lines_with("in doubt")[before:]
        self.assertEqual(len(lines), 1, lines)
        self.assertIn("could not connect", lines[0])


class TracingTest(ClusterTest):
    """Structured logs, request ids and W3C trace context (docs/api.md, "Request ids and
    tracing"): a client's X-Request-Id and traceparent are answered, logged with the gtid on
    the coordinator and on every participant the transaction reaches."""

    SHARDS = 2
    COORD = {"log_format": "logfmt", "log_level": "debug"}
    AGENT = {"log_format": "json", "log_level": "debug"}
    TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

    def post(self, body, headers):
        conn = http.client.HTTPConnection("127.0.0.1", self.c.coord_port, timeout=20)
        try:
            conn.request("POST", "/v1/transactions", json.dumps(body),
                         dict({"Content-Type": "application/json"}, **headers))
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), json.loads(resp.read())
        finally:
            conn.close()

    def test_a_request_id_and_trace_reach_every_log_line_of_the_transaction(self):
        ops = [{"shard": "s1", "sql": "UPDATE accounts SET balance = balance WHERE id = 1"},
               {"shard": "s2", "sql": "UPDATE accounts SET balance = balance WHERE id = 1"}]
        status, hdrs, body = self.post({"ops": ops}, {"X-Request-Id": "order-7:retry.1",
                                                      "traceparent": self.TRACE})
        self.assertEqual(status, 200, body)
        # the coordinator's span in the client's trace: same trace id and flags, its own
        # parent id (W3C Trace Context), answered and passed on
        mine_tp = hdrs["traceparent"]
        self.assertEqual(hdrs["X-Request-Id"], "order-7:retry.1")
        self.assertEqual((mine_tp[:35], mine_tp[52:]), (self.TRACE[:35], self.TRACE[52:]))
        self.assertRegex(mine_tp[36:52], r"^[0-9a-f]{16}$")
        self.assertNotEqual(mine_tp[36:52], self.TRACE[36:52])
        gtid = body["gtid"]
        for sh in self.c.shards:  # the participants log it, as JSON lines
            lines = [json.loads(x) for x in read(sh.agent.log).splitlines()
                     if x.startswith("{")]
            mine = [x for x in lines if x.get("gtid") == gtid]
            self.assertTrue(mine, "%s logged nothing about %s" % (sh.name, gtid))
            self.assertEqual({(x.get("request_id"), x.get("traceparent")) for x in mine},
                             {("order-7:retry.1", mine_tp)}, mine)
        coord = [x for x in read(self.c.coordinator.log).splitlines() if x.startswith("ts=")]
        self.assertTrue(coord and all(" level=" in x and " msg=" in x for x in coord))
        mine = [x for x in coord if " gtid=%s " % gtid in x + " "]
        self.assertTrue(mine, "the coordinator logged nothing about %s" % gtid)
        for x in mine:  # the coordinator, as logfmt lines
            self.assertIn(" request_id=order-7:retry.1", x)
            self.assertIn(" traceparent=%s" % mine_tp, x)

    def test_a_bad_request_id_or_trace_is_replaced_by_a_new_one(self):
        ops = [{"shard": "s1", "sql": "SELECT 1"}]
        status, hdrs, _ = self.post({"ops": ops}, {"X-Request-Id": "has space",
                                                   "traceparent": "00-" + "0" * 32 + "-x-01"})
        self.assertEqual(status, 200)
        self.assertRegex(hdrs["X-Request-Id"], r"^[0-9a-f]{16}$")
        self.assertRegex(hdrs["traceparent"], r"^00-[0-9a-f]{32}-[0-9a-f]{16}-00$")
        self.assertNotIn("0" * 32, hdrs["traceparent"])
        status, hdrs2, _ = self.post({"ops": ops}, {})
        self.assertNotEqual(hdrs2["X-Request-Id"], hdrs["X-Request-Id"])
        # a later version is read as far as version 00 goes; ff is no version
        later = "01" + self.TRACE[2:] + "-whatever-comes-next"
        status, hdrs3, _ = self.post({"ops": ops}, {"traceparent": later})
        self.assertEqual(hdrs3["traceparent"][:35], "00" + self.TRACE[2:35])
        status, hdrs4, _ = self.post({"ops": ops}, {"traceparent": "ff" + self.TRACE[2:]})
        self.assertNotEqual(hdrs4["traceparent"][3:35], self.TRACE[3:35])

    def test_new_request_and_trace_ids_never_repeat(self):
        """The coordinator draws its ids' random bytes from the kernel in batches; forty
        requests use several batches, and no id comes back."""
        ids, traces, spans = set(), set(), set()
        for _ in range(40):
            status, hdrs, _ = self.post({"ops": [{"shard": "s1", "sql": "SELECT 1"}]}, {})
            self.assertEqual(status, 200)
            _, trace, span, _ = hdrs["traceparent"].split("-")
            ids.add(hdrs["X-Request-Id"])
            traces.add(trace)
            spans.add(span)
        self.assertEqual((len(ids), len(traces), len(spans)), (40, 40, 40))
