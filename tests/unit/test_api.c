/*
 * test_api.c - validation of POST /v1/transactions bodies (api.c) and of
 * the coordinator config it checks against (coord_config.c). Every refusal
 * must name the offending field; nothing here runs any SQL.
 */
#include "dtx/api.h"
#include "dtx/coord_config.h"
#include "unit.h"

#include <string.h>
#include <unistd.h>

static struct coord_config CFG;

static int load_config(const char *json, struct coord_config *out, struct dtx_err *err)
{
    char path[] = "/tmp/dtx-unit-conf-XXXXXX";
    int fd = mkstemp(path);
    int rc;

    if (fd < 0 || write(fd, json, strlen(json)) != (ssize_t)strlen(json))
        return -100;
    close(fd);
    rc = coord_config_load(path, out, err);
    unlink(path);
    return rc;
}

static int parse(const char *body, struct dtx_err *err)
{
    struct txreq r;
    int rc;

    dtx_err_clear(err);
    rc = api_parse_tx(body, strlen(body), &CFG, &r, err);
    if (rc == 0)
        api_txreq_release(&r);
    return rc;
}

/* The request must be refused with code and a message containing want. */
static void refused(const char *body, int code, const char *want)
{
    struct dtx_err err;
    int rc = parse(body, &err);

    CU_ASSERT_EQUAL(rc, code);
    if (!strstr(err.msg, want))
        fprintf(stderr, "\n  body %s\n  message '%s' lacks '%s'\n", body, err.msg, want);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
}

static void a_valid_request_is_accepted(void)
{
    struct dtx_err err;
    struct txreq r;
    const char *body =
        "{\"protocol\":\"2pc\",\"timeout_ms\":5000,\"idempotency_key\":\"k1\",\"ops\":["
        "{\"shard\":\"s1\",\"sql\":\"UPDATE a SET b = b - $1 WHERE id = $2\",\"params\":[10,7],"
        "\"expect_rows\":1},{\"key\":\"acct:9\",\"sql\":\"UPDATE a SET b = b + $1\","
        "\"params\":[\"10\"]}]}";

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(body, strlen(body), &CFG, &r, &err), 0);
    CU_ASSERT_EQUAL(r.nops, 2);
    CU_ASSERT_EQUAL(r.ops[0].shard, 0);
    CU_ASSERT_EQUAL(r.ops[1].shard, 2); /* slot 16081 is in s3's range */
    CU_ASSERT_EQUAL(r.timeout_ms, 5000);
    CU_ASSERT_STRING_EQUAL(r.idem_key, "k1");
    CU_ASSERT(r.hash != 0);
    api_txreq_release(&r);
}

static void defaults_apply_when_optional_keys_are_missing(void)
{
    struct dtx_err err;
    struct txreq r;
    const char *body = "{\"ops\":[{\"shard\":\"s2\",\"sql\":\"SELECT 1\"}]}";

    CU_ASSERT_EQUAL_FATAL(api_parse_tx(body, strlen(body), &CFG, &r, &err), 0);
    CU_ASSERT_EQUAL(r.protocol, 2);
    CU_ASSERT_EQUAL(r.timeout_ms, CFG.prepare_timeout_ms);
    CU_ASSERT_PTR_NULL(r.idem_key);
    api_txreq_release(&r);
}

static void malformed_json_is_refused_with_its_position(void)
{
    refused("{\"ops\":[{\"shard\":\"s1\"", DTX_EINVAL, "malformed JSON at byte");
    refused("", DTX_EINVAL, "empty");
    refused("[1,2]", DTX_EINVAL, "must be a JSON object");
}

static void data_after_the_document_is_refused(void)
{
    const char *one = "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}";
    char body[200];
    struct dtx_err err;

    snprintf(body, sizeof(body), "%s x", one);
    refused(body, DTX_EINVAL, "data after the document at byte 42");
    snprintf(body, sizeof(body), "%s%s", one, one);
    refused(body, DTX_EINVAL, "data after the document");
    snprintf(body, sizeof(body), "%s \r\n\t", one);
    CU_ASSERT_EQUAL(parse(body, &err), 0); /* whitespace is fine */
}

/* Refused with DTX_EINVAL naming the NUL, given len bytes (which may hold a raw 0). */
static void refused_nul(const char *body, size_t len)
{
    struct dtx_err err;
    struct txreq r;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(api_parse_tx(body, len, &CFG, &r, &err), DTX_EINVAL);
    if (!strstr(err.msg, "NUL"))
        fprintf(stderr, "\n  body %.*s\n  message '%s' lacks 'NUL'\n", (int)len, body, err.msg);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "NUL"));
}

static void nul_characters_are_refused_wherever_they_are(void)
{
    static const char *const bodies[] = {
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\\u0000; x\"}]}",
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT $1\",\"params\":[\"7\\u0000x\"]}]}",
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT $1\",\"params\":[[\"\\u0000\"]]}]}",
        "{\"idempotency_key\":\"k\\u0000a\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}",
        "{\"ops\\u0000x\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}",
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT '\\\\\\u0000'\"}]}", /* \\ then \u0000 */
    };
    const char raw[] = "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\0 x\"}]}";
    const char between[] = "{\"ops\":\0[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}";
    struct dtx_err err;

    for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++)
        refused_nul(bodies[i], strlen(bodies[i]));
    refused_nul(raw, sizeof(raw) - 1);
    refused_nul(between, sizeof(between) - 1);
    /* an escaped backslash followed by "u0000" is six characters of text */
    CU_ASSERT_EQUAL(parse("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT '\\\\u0000'\"}]}", &err),
                    0);
    /* so are other escapes, and an escaped quote does not end the string */
    CU_ASSERT_EQUAL(parse("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT '\\\"\\u0001'\"}]}", &err),
                    0);
}

/* JSON text is UTF-8 (RFC 8259 8.1): a body that is not is refused before any field is read. */
static void invalid_utf8_is_refused_wherever_it_is(void)
{
    static const char *const bad[] = {
        "\xff", "\xc3(", "\xed\xa0\x80", "\xc0\xaf", "\xf4\x90\x80\x80", "\xe2\x82"};
    static const char *const forms[] = {
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1 -- %s\"}]}",
        "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT $1\",\"params\":[\"%s\"]}]}",
        "{\"idempotency_key\":\"k%s\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}",
        "{\"ops\":[{\"key\":\"acct:%s\",\"sql\":\"SELECT 1\"}]}",
        "{\"ops%s\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}",
    };
    char body[200];

    for (size_t f = 0; f < sizeof(forms) / sizeof(forms[0]); f++) {
        for (size_t b = 0; b < sizeof(bad) / sizeof(bad[0]); b++) {
            const char *at = strstr(forms[f], "%s");

            snprintf(body, sizeof(body), "%.*s%s%s", (int)(at - forms[f]), forms[f], bad[b],
                     at + 2);
            refused(body, DTX_EINVAL, "not valid UTF-8");
        }
    }
    refused("\xef\xbb\xbf{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "byte order mark");
}

static void valid_utf8_is_accepted(void)
{
    struct dtx_err err;

    CU_ASSERT_EQUAL(parse("{\"idempotency_key\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                          "\"ops\":[{\"key\":\"\xe6\x97\xa5\",\"sql\":\"SELECT '\xc3\xa9'\"}]}",
                          &err),
                    0);
}

/* A key twice in one object is refused: readers differ on which one counts. */
static void duplicate_keys_are_refused(void)
{
    struct dtx_err err;

    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}],\"ops\":[]}", DTX_EINVAL,
            "'ops' appears twice");
    refused(
        "{\"protocol\":\"2pc\",\"protocol\":\"3pc\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT "
        "1\"}]}",
        DTX_EINVAL, "'protocol' appears twice");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\",\"sql\":\"SELECT 2\"}]}", DTX_EINVAL,
            "'sql' appears twice");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT "
            "$1\",\"params\":[{\"a\":1,\"b\":2,\"a\":3}]}]}",
            DTX_EINVAL, "'a' appears twice");
    /* the same key in different objects, and keys that differ in case, are fine */
    CU_ASSERT_EQUAL(
        parse("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"},"
              "{\"shard\":\"s2\",\"sql\":\"SELECT $1\",\"params\":[{\"a\":1,\"A\":2}]}]}",
              &err),
        0);
}

static void missing_or_empty_ops_are_refused(void)
{
    refused("{}", DTX_EINVAL, "'ops' is missing");
    refused("{\"ops\":[]}", DTX_EINVAL, "'ops' must hold 1 to 10 ops");
    refused("{\"ops\":{}}", DTX_EINVAL, "'ops' must be an array");
}

static void too_many_ops_are_refused(void)
{
    char body[4096] = "{\"ops\":[";

    for (int i = 0; i < 11; i++)
        strcat(body, i ? ",{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}"
                       : "{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}");
    strcat(body, "]}");
    refused(body, DTX_EINVAL, "'ops' must hold 1 to 10 ops");
}

static void unknown_shard_is_refused(void)
{
    refused("{\"ops\":[{\"shard\":\"s9\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'ops[0].shard': unknown shard 's9'");
}

static void op_needs_exactly_one_of_shard_and_key(void)
{
    refused("{\"ops\":[{\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'ops[0]' needs \"shard\" or \"key\"");
    refused("{\"ops\":[{\"shard\":\"s1\",\"key\":\"k\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "gives both");
    refused("{\"ops\":[{\"key\":7,\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'ops[0].key' must be a string");
}

static void missing_or_bad_sql_is_refused(void)
{
    refused("{\"ops\":[{\"shard\":\"s1\"}]}", DTX_EINVAL, "'ops[0].sql' is missing");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":42}]}", DTX_EINVAL,
            "'ops[0].sql' must be a string");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"  -- nothing\\n \"}]}", DTX_EINVAL,
            "sql is empty");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"},{\"shard\":\"s1\",\"sql\":\"/* x */ "
            "commit\"}]}",
            DTX_EINVAL, "'ops[1].sql': statement COMMIT is not allowed");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"PREPARE TRANSACTION 'x'\"}]}", DTX_EINVAL,
            "PREPARE is not allowed");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"set search_path = x\"}]}", DTX_EINVAL,
            "use SET LOCAL");
}

static void oversized_sql_is_refused(void)
{
    char body[1024];
    char sql[300];

    memset(sql, 'x', sizeof(sql) - 1);
    sql[sizeof(sql) - 1] = '\0';
    memcpy(sql, "SELECT ", 7);
    snprintf(body, sizeof(body), "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"%s\"}]}", sql);
    refused(body, DTX_EINVAL, "'ops[0].sql' is 299 bytes; the limit is 200");
}

static void bad_params_are_refused(void)
{
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT $1\",\"params\":5}]}", DTX_EINVAL,
            "'ops[0].params' must be an array");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\",\"params\":[1,2,3,4,5,6]}]}",
            DTX_EINVAL, "has 6 parameters; the limit is 5");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT $1\",\"params\":[9007199254740993]}]}",
            DTX_EINVAL, "pass it as a string");
}

static void bad_expect_rows_is_refused(void)
{
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\",\"expect_rows\":-1}]}", DTX_EINVAL,
            "'ops[0].expect_rows' must be between 0 and");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\",\"expect_rows\":\"1\"}]}", DTX_EINVAL,
            "must be an integer");
}

static void unknown_keys_are_refused(void)
{
    refused("{\"opz\":[],\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'opz' is not a known key");
    refused("{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\",\"param\":[1]}]}", DTX_EINVAL,
            "'ops[0].param' is not a known key");
}

static void the_protocol_is_2pc_by_default_or_3pc_when_asked(void)
{
    static const char two[] = "{\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}";
    static const char three[] = "{\"protocol\":\"3pc\",\"ops\":[{\"shard\":\"s1\",\"sql\":"
                                "\"SELECT 1\"}]}";
    static const char begin3[] = "{\"interactive\":true,\"protocol\":\"3pc\"}";
    struct txreq r;
    struct dtx_err err;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(two, strlen(two), &CFG, &r, &err), 0);
    CU_ASSERT_EQUAL(r.protocol, 2);
    api_txreq_release(&r);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(three, strlen(three), &CFG, &r, &err), 0);
    CU_ASSERT_EQUAL(r.protocol, 3);
    api_txreq_release(&r);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(begin3, strlen(begin3), &CFG, &r, &err), 0);
    CU_ASSERT_TRUE(r.interactive);
    CU_ASSERT_EQUAL(r.protocol, 3);
    api_txreq_release(&r);
    refused("{\"protocol\":\"4pc\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'protocol' must be \"2pc\" or \"3pc\"");
}

static void interactive_begin_takes_no_ops_and_no_idempotency_key(void)
{
    struct txreq r;
    struct dtx_err err;
    static const char begin[] = "{\"interactive\":true,\"timeout_ms\":2500}";

    refused("{\"interactive\":true,\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "takes its ops with POST /v1/transactions/{gtid}/ops");
    refused("{\"interactive\":true,\"idempotency_key\":\"k\"}", DTX_EINVAL,
            "'idempotency_key' is for one-shot transactions");
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(begin, strlen(begin), &CFG, &r, &err), 0);
    CU_ASSERT_TRUE(r.interactive);
    CU_ASSERT_EQUAL(r.timeout_ms, 2500);
    CU_ASSERT_EQUAL(r.nops, 0);
    api_txreq_release(&r);
}

static void ops_call_takes_only_ops(void)
{
    struct txreq r;
    struct dtx_err err;
    static const char ok[] = "{\"ops\":[{\"shard\":\"s2\",\"sql\":\"SELECT 1\"}]}";
    static const char extra[] =
        "{\"ops\":[{\"shard\":\"s2\",\"sql\":\"SELECT 1\"}],\"timeout_ms\":5}";
    static const char none[] = "{\"ops\":[]}";

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL_FATAL(api_parse_ops(ok, strlen(ok), &CFG, &r, &err), 0);
    CU_ASSERT_EQUAL(r.nops, 1);
    CU_ASSERT_EQUAL(r.ops[0].shard, 1);
    api_txreq_release(&r);
    CU_ASSERT_EQUAL(api_parse_ops(extra, strlen(extra), &CFG, &r, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'timeout_ms' is not a known key"));
    CU_ASSERT_EQUAL(api_parse_ops(none, strlen(none), &CFG, &r, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'ops' must hold 1 to"));
}

static void bad_timeout_and_idempotency_key_are_refused(void)
{
    refused("{\"timeout_ms\":0,\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'timeout_ms' must be between 1 and 60000");
    refused("{\"timeout_ms\":60001,\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}", DTX_EINVAL,
            "'timeout_ms' must be between 1 and 60000");
    refused("{\"idempotency_key\":\"\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}",
            DTX_EINVAL, "'idempotency_key' must be 1 to 200 characters");
}

static void same_ops_hash_alike_and_different_ops_differ(void)
{
    const char *a = "{\"idempotency_key\":\"k\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 1\"}]}";
    const char *b = "{ \"ops\" : [ { \"shard\" : \"s1\", \"sql\" : \"SELECT 1\" } ], "
                    "\"idempotency_key\":\"k\" }";
    const char *c = "{\"idempotency_key\":\"k\",\"ops\":[{\"shard\":\"s1\",\"sql\":\"SELECT 2\"}]}";
    struct txreq ra, rb, rc;

    CU_ASSERT_EQUAL_FATAL(api_parse_tx(a, strlen(a), &CFG, &ra, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(b, strlen(b), &CFG, &rb, NULL), 0);
    CU_ASSERT_EQUAL_FATAL(api_parse_tx(c, strlen(c), &CFG, &rc, NULL), 0);
    CU_ASSERT_EQUAL(ra.hash, rb.hash);
    CU_ASSERT_NOT_EQUAL(ra.hash, rc.hash);
    api_txreq_release(&ra);
    api_txreq_release(&rb);
    api_txreq_release(&rc);
}

static void config_errors_name_file_key_and_problem(void)
{
    struct coord_config c;
    struct dtx_err err;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(load_config("{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:1\",\"log_dir\":\"/x\","
                                "\"shards\":[{\"name\":\"s1\",\"url\":\"ftp://h:1\"}]}",
                                &c, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "config '/tmp/dtx-unit-conf-"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'shards[0].url'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is not an http:// or https:// URL"));
    CU_ASSERT_EQUAL(load_config("{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:1\",\"log_dir\":\"/x\","
                                "\"shards\":[{\"name\":\"s1\",\"url\":\"https://h:1\"}]}",
                                &c, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(
        strstr(err.msg, "'shards[0].url' is an https:// URL, but the config has no 'tls' key"));
    CU_ASSERT_EQUAL(load_config("{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:1\",\"log_dir\":\"/x\","
                                "\"shards\":[{\"name\":\"s1\",\"url\":\"http://h:1\"}],"
                                "\"prepare_timeout\":5}",
                                &c, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'prepare_timeout' is not a known key"));
    CU_ASSERT_EQUAL(load_config("{\"node_id\":\"c 1\"}", &c, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'node_id' must be"));
    CU_ASSERT_EQUAL(
        load_config("{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:1\",\"log_dir\":\"/x\","
                    "\"shards\":[{\"name\":\"a\",\"url\":\"http://127.0.0.1:1\",\"slots\":[0,9]},"
                    "{\"name\":\"b\",\"url\":\"http://127.0.0.1:2\",\"slots\":[11,16383]}]}",
                    &c, &err),
        DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 10 is not assigned"));
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(a_valid_request_is_accepted),
        UNIT_TEST(defaults_apply_when_optional_keys_are_missing),
        UNIT_TEST(malformed_json_is_refused_with_its_position),
        UNIT_TEST(data_after_the_document_is_refused),
        UNIT_TEST(nul_characters_are_refused_wherever_they_are),
        UNIT_TEST(invalid_utf8_is_refused_wherever_it_is),
        UNIT_TEST(valid_utf8_is_accepted),
        UNIT_TEST(duplicate_keys_are_refused),
        UNIT_TEST(missing_or_empty_ops_are_refused),
        UNIT_TEST(too_many_ops_are_refused),
        UNIT_TEST(unknown_shard_is_refused),
        UNIT_TEST(op_needs_exactly_one_of_shard_and_key),
        UNIT_TEST(missing_or_bad_sql_is_refused),
        UNIT_TEST(oversized_sql_is_refused),
        UNIT_TEST(bad_params_are_refused),
        UNIT_TEST(bad_expect_rows_is_refused),
        UNIT_TEST(unknown_keys_are_refused),
        UNIT_TEST(the_protocol_is_2pc_by_default_or_3pc_when_asked),
        UNIT_TEST(interactive_begin_takes_no_ops_and_no_idempotency_key),
        UNIT_TEST(ops_call_takes_only_ops),
        UNIT_TEST(bad_timeout_and_idempotency_key_are_refused),
        UNIT_TEST(same_ops_hash_alike_and_different_ops_differ),
        UNIT_TEST(config_errors_name_file_key_and_problem),
    };
    struct dtx_err err;
    int rc;

    dtx_err_clear(&err);
    if (load_config(
            "{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:7000\",\"log_dir\":\"/tmp/x\","
            "\"max_ops\":10,\"max_params\":5,\"max_sql_bytes\":200,\"max_timeout_ms\":60000,"
            "\"shards\":[{\"name\":\"s1\",\"url\":\"http://127.0.0.1:7101\"},"
            "{\"name\":\"s2\",\"url\":\"http://127.0.0.1:7102\"},"
            "{\"name\":\"s3\",\"url\":\"http://127.0.0.1:7103\"}]}",
            &CFG, &err) < 0) {
        fprintf(stderr, "test config: %s\n", err.msg);
        return 2;
    }
    rc = unit_run("api", tests, sizeof(tests) / sizeof(tests[0]));
    coord_config_release(&CFG);
    return rc;
}
