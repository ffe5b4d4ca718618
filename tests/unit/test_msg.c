/*
 * test_msg.c - the peer messages between coordinator and participants
 * (msg.c): what parses, what is refused as malformed, and the RESULTS
 * trailer that follows a message's JSON.
 */
#include "dtx/jsonx.h"
#include "dtx/msg.h"
#include "unit.h"

#include <stdio.h>
#include <string.h>

static int parse(const char *text, struct msg *m, struct dtx_err *err)
{
    dtx_err_clear(err);
    return msg_parse(text, strlen(text), m, err);
}

static void yes_vote_carries_its_xid(void)
{
    struct dtx_err err;
    struct msg m;

    CU_ASSERT_EQUAL_FATAL(
        parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"yes\",\"xid\":\"742\"}", &m, &err),
        0);
    CU_ASSERT_EQUAL(m.type, MSG_VOTE);
    CU_ASSERT_EQUAL(m.vote, VOTE_YES);
    CU_ASSERT_EQUAL(m.xid, 742);
    CU_ASSERT_STRING_EQUAL(m.gtid, "c1-1-1");
    msg_release(&m);
}

static void forget_names_its_transaction_and_needs_one(void)
{
    struct dtx_err err;
    struct msg m;

    CU_ASSERT_EQUAL_FATAL(parse("{\"t\":\"forget\",\"gtid\":\"c1-1-9\",\"protocol\":3}", &m, &err),
                          0);
    CU_ASSERT_EQUAL(m.type, MSG_FORGET);
    CU_ASSERT_STRING_EQUAL(m.gtid, "c1-1-9");
    CU_ASSERT(m.three_pc);
    msg_release(&m);
    CU_ASSERT_EQUAL(parse("{\"t\":\"forget\"}", &m, &err), DTX_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "forget message without a gtid"));
    /* a participant's hello says whether it takes them; an older one says nothing */
    CU_ASSERT_EQUAL_FATAL(
        parse("{\"t\":\"hello\",\"shard\":\"s1\",\"takes_forget\":true}", &m, &err), 0);
    CU_ASSERT(m.takes_forget);
    msg_release(&m);
    CU_ASSERT_EQUAL_FATAL(parse("{\"t\":\"hello\",\"shard\":\"s1\"}", &m, &err), 0);
    CU_ASSERT_FALSE(m.takes_forget);
    msg_release(&m);
}

/* request_id and traceparent are only for the logs: a bad one is dropped, never the message. */
static void a_bad_request_id_or_traceparent_is_dropped_not_the_message(void)
{
    static const char *const bad[] = {"1", "{}", "null", "\"a b\"", "\"\""};
    struct dtx_err err;
    struct msg m;
    char text[256];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"yes\",\"xid\":\"7\","
                 "\"request_id\":%s,\"traceparent\":%s}",
                 bad[i], bad[i]);
        CU_ASSERT_EQUAL_FATAL(parse(text, &m, &err), 0);
        CU_ASSERT_EQUAL(m.type, MSG_VOTE);
        CU_ASSERT_PTR_NULL(m.request_id);
        CU_ASSERT_PTR_NULL(m.traceparent);
        msg_release(&m);
    }
    CU_ASSERT_EQUAL_FATAL(parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"yes\",\"xid\":"
                                "\"7\",\"request_id\":\"req-1\"}",
                                &m, &err),
                          0);
    CU_ASSERT_STRING_EQUAL(m.request_id, "req-1");
    msg_release(&m);
}

static void yes_vote_without_an_xid_is_malformed(void)
{
    struct dtx_err err;
    struct msg m;

    CU_ASSERT_EQUAL(parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"yes\"}", &m, &err),
                    DTX_EPROTO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "without the branch's xid"));
    CU_ASSERT_EQUAL(
        parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"yes\",\"xid\":\"0\"}", &m, &err),
        DTX_EPROTO);
    /* Read-only and no votes have no xid to give. */
    CU_ASSERT_EQUAL(parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"readonly\"}", &m, &err),
                    0);
    msg_release(&m);
}

static void unknown_vote_or_type_is_malformed(void)
{
    struct dtx_err err;
    struct msg m;

    CU_ASSERT_EQUAL(parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"maybe\"}", &m, &err),
                    DTX_EPROTO);
    CU_ASSERT_EQUAL(parse("{\"t\":\"bogus\",\"gtid\":\"c1-1-1\"}", &m, &err), DTX_EPROTO);
    CU_ASSERT_EQUAL(parse("not json", &m, &err), DTX_EPROTO);
}

/* A no vote's error crosses the stream with every field PostgreSQL gave (jsonx_error_obj). */
static void a_no_vote_carries_postgresqls_error_fields(void)
{
    struct dtx_err sent, err;
    struct msg m;
    cJSON *v = msg_new(MSG_VOTE, "c1-1-1");
    char *text;

    dtx_err_clear(&sent);
    dtx_err_set(&sent, DTX_ESQL, "duplicate key value violates unique constraint \"t_pkey\"");
    snprintf(sent.sqlstate, sizeof(sent.sqlstate), "23505");
    snprintf(sent.detail, sizeof(sent.detail), "Key (id)=(7) already exists.");
    snprintf(sent.hint, sizeof(sent.hint), "a hint");
    snprintf(sent.constraint, sizeof(sent.constraint), "t_pkey");
    snprintf(sent.table, sizeof(sent.table), "t");
    snprintf(sent.column, sizeof(sent.column), "id");
    sent.op = 3;
    jsonx_add_str(v, "vote", "no");
    msg_add_error(v, &sent);
    text = jsonx_print(v);
    CU_ASSERT_EQUAL_FATAL(parse(text, &m, &err), 0);
    CU_ASSERT_EQUAL(m.err.code, DTX_ESQL);
    CU_ASSERT_STRING_EQUAL(m.err.msg, sent.msg);
    CU_ASSERT_STRING_EQUAL(m.err.sqlstate, "23505");
    CU_ASSERT_STRING_EQUAL(m.err.detail, "Key (id)=(7) already exists.");
    CU_ASSERT_STRING_EQUAL(m.err.hint, "a hint");
    CU_ASSERT_STRING_EQUAL(m.err.constraint, "t_pkey");
    CU_ASSERT_STRING_EQUAL(m.err.table, "t");
    CU_ASSERT_STRING_EQUAL(m.err.column, "id");
    CU_ASSERT_EQUAL(m.err.op, 3);
    msg_release(&m);
    free(text);
    cJSON_Delete(v);
}

/* An error's op is an index into the request: any other number is no op, never a wrapped int. */
static void an_error_op_that_is_no_index_is_no_op(void)
{
    static const char *const ops[] = {"10000000000", "2147483648", "-2", "-1e15", "1.5"};
    char text[256];
    struct dtx_err err;
    struct msg m;

    for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
        snprintf(text, sizeof(text),
                 "{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"no\",\"error\":"
                 "{\"code\":\"sql_error\",\"message\":\"m\",\"op\":%s}}",
                 ops[i]);
        CU_ASSERT_EQUAL_FATAL(parse(text, &m, &err), 0);
        if (m.err.op != -1)
            fprintf(stderr, "\n  op %s parsed as %d\n", ops[i], m.err.op);
        CU_ASSERT_EQUAL(m.err.op, -1);
        msg_release(&m);
    }
    CU_ASSERT_EQUAL_FATAL(parse("{\"t\":\"vote\",\"gtid\":\"c1-1-1\",\"vote\":\"no\",\"error\":"
                                "{\"code\":\"sql_error\",\"op\":2147483647}}",
                                &m, &err),
                          0);
    CU_ASSERT_EQUAL(m.err.op, 2147483647);
    msg_release(&m);
}

static void results_trailer_follows_the_json(void)
{
    static const char frame[] = "{\"t\":\"vote\",\"gtid\":\"c1-1-2\",\"vote\":\"readonly\"}"
                                "\n{\"rows\":[[1]]}\nnull\n{\"rows\":[]}";
    struct dtx_err err;
    struct msg m;
    const char *p;
    size_t n;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL_FATAL(msg_parse(frame, sizeof(frame) - 1, &m, &err), 0);
    CU_ASSERT(m.trailer_len > 0);
    CU_ASSERT(msg_result(m.trailer, m.trailer_len, 0, &p, &n));
    CU_ASSERT_EQUAL(n, strlen("{\"rows\":[[1]]}"));
    CU_ASSERT_EQUAL(strncmp(p, "{\"rows\":[[1]]}", n), 0);
    CU_ASSERT(msg_result(m.trailer, m.trailer_len, 1, &p, &n));
    CU_ASSERT_EQUAL(n, strlen("null"));
    CU_ASSERT_EQUAL(strncmp(p, "null", n), 0);
    CU_ASSERT(msg_result(m.trailer, m.trailer_len, 2, &p, &n));
    CU_ASSERT_EQUAL(n, strlen("{\"rows\":[]}"));
    CU_ASSERT_EQUAL(strncmp(p, "{\"rows\":[]}", n), 0);
    CU_ASSERT_FALSE(msg_result(m.trailer, m.trailer_len, 3, &p, &n));
    msg_release(&m);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(yes_vote_carries_its_xid),
        UNIT_TEST(forget_names_its_transaction_and_needs_one),
        UNIT_TEST(a_bad_request_id_or_traceparent_is_dropped_not_the_message),
        UNIT_TEST(yes_vote_without_an_xid_is_malformed),
        UNIT_TEST(unknown_vote_or_type_is_malformed),
        UNIT_TEST(a_no_vote_carries_postgresqls_error_fields),
        UNIT_TEST(results_trailer_follows_the_json),
        UNIT_TEST(an_error_op_that_is_no_index_is_no_op),
    };

    return unit_run("msg", tests, sizeof(tests) / sizeof(tests[0]));
}
