/*
 * test_log.c - a log message is one line (log.c): newlines in a libpq
 * message or an operator's reason cannot split it or forge another line.
 * stderr is redirected into a pipe to read what log_msg wrote.
 */
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "unit.h"

#include <string.h>
#include <unistd.h>

/* Logs one warning with message msg and returns what reached stderr. */
static char *logged(const char *msg, char *out, size_t n)
{
    int fds[2], saved = dup(STDERR_FILENO);
    ssize_t got;

    CU_ASSERT_FATAL(pipe(fds) == 0 && saved >= 0);
    dup2(fds[1], STDERR_FILENO);
    log_init("unit", LOG_INFO);
    log_warn("reason: %s", msg);
    log_init("unit", LOG_ERROR);
    dup2(saved, STDERR_FILENO);
    close(saved);
    close(fds[1]);
    got = read(fds[0], out, n - 1);
    close(fds[0]);
    CU_ASSERT_FATAL(got > 0);
    out[got] = '\0';
    return out;
}

static size_t count(const char *s, char c)
{
    size_t k = 0;

    for (; *s; s++)
        k += *s == c;
    return k;
}

static void a_crlf_in_a_message_cannot_forge_a_second_line(void)
{
    char out[4096];

    logged("fat finger\r\n2026-11-30T00:00:00.000Z dtx-coordinator[1] INFO  all is well", out,
           sizeof(out));
    CU_ASSERT_EQUAL(count(out, '\n'), 1);
    CU_ASSERT_EQUAL(count(out, '\r'), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "fat finger\\r\\n2026-11-30T"));
    CU_ASSERT_EQUAL(out[strlen(out) - 1], '\n');
}

static void a_multi_line_libpq_message_is_one_line_without_its_trailing_newline(void)
{
    char out[4096];

    logged("ERROR:  duplicate key value violates unique constraint \"t_pkey\"\n"
           "DETAIL:  Key (id)=(7) already exists.\n",
           out, sizeof(out));
    CU_ASSERT_EQUAL(count(out, '\n'), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"t_pkey\"\\nDETAIL:  Key (id)=(7) already exists.\n"));
}

static void other_control_characters_are_written_as_hex(void)
{
    char out[4096];

    logged("bell\a esc\x1b[31m", out, sizeof(out));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "bell\\x07 esc\\x1b[31m\n"));
}

/* Logs msg in format, about gtid and request (may be NULL), and returns the line. */
static char *logged_as(enum log_format format, const char *gtid, const char *request,
                       const char *msg, char *out, size_t n)
{
    struct log_ctx prev = log_ctx_set((struct log_ctx){.gtid = gtid, .request_id = request});

    log_set_format(format);
    logged(msg, out, n);
    log_set_format(LOG_TEXT);
    log_ctx_set(prev);
    return out;
}

static void logfmt_lines_carry_the_transaction_and_request_as_fields(void)
{
    char out[4096];

    logged_as(LOG_LOGFMT, "c1-3-17", "req-42", "said \"no\"\nthen left", out, sizeof(out));
    CU_ASSERT_EQUAL(strncmp(out, "ts=", 3), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, " level=warn prog=unit pid="));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, " gtid=c1-3-17 request_id=req-42 "));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, " msg=\"reason: said \\\"no\\\"\\nthen left\"\n"));
    CU_ASSERT_EQUAL(count(out, '\n'), 1);
    logged_as(LOG_LOGFMT, NULL, NULL, "plain", out, sizeof(out));
    CU_ASSERT_PTR_NULL(strstr(out, "gtid="));
}

static void json_lines_are_json_whatever_the_message_holds(void)
{
    char out[4096];
    cJSON *doc = NULL;
    const cJSON *msg;

    logged_as(LOG_JSON, "c1-3-17", "a \"quoted\" id", "tab\there \xff\xfe bad utf8, ok \xc3\xa9",
              out, sizeof(out));
    CU_ASSERT_EQUAL(strncmp(out, "{\"ts\":\"", 7), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(out, "\"level\":\"warn\",\"prog\":\"unit\",\"pid\":"));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ",\"gtid\":\"c1-3-17\""));
    CU_ASSERT_PTR_NOT_NULL(strstr(out, ",\"request_id\":\"a \\\"quoted\\\" id\""));
    CU_ASSERT_PTR_NOT_NULL(
        strstr(out, "\"msg\":\"reason: tab\\there \\ufffd\\ufffd bad utf8, ok \xc3\xa9\"}\n"));
    CU_ASSERT_EQUAL(count(out, '\n'), 1);
    /* and the line is one JSON document, read by the daemons' own strict reader */
    CU_ASSERT_EQUAL_FATAL(jsonx_parse(out, strlen(out), &doc, NULL), 0);
    msg = cJSON_GetObjectItemCaseSensitive(doc, "msg");
    CU_ASSERT(cJSON_IsString(msg) &&
              strcmp(msg->valuestring,
                     "reason: tab\there \xef\xbf\xbd\xef\xbf\xbd bad utf8, ok \xc3\xa9") == 0);
    cJSON_Delete(doc);
}

static void a_rated_kind_writes_one_line_a_second_and_counts_the_rest(void)
{
    struct log_rate r = {0};
    unsigned long dropped = 99;

    CU_ASSERT_TRUE(log_rate_allow(&r, &dropped));
    CU_ASSERT_EQUAL(dropped, 0);
    for (int i = 0; i < 1000; i++)
        CU_ASSERT_FALSE(log_rate_allow(&r, &dropped));
    usleep(1010 * 1000);
    CU_ASSERT_TRUE(log_rate_allow(&r, &dropped));
    CU_ASSERT_EQUAL(dropped, 1000);
    CU_ASSERT_FALSE(log_rate_allow(&r, &dropped));
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(a_crlf_in_a_message_cannot_forge_a_second_line),
        UNIT_TEST(a_multi_line_libpq_message_is_one_line_without_its_trailing_newline),
        UNIT_TEST(other_control_characters_are_written_as_hex),
        UNIT_TEST(logfmt_lines_carry_the_transaction_and_request_as_fields),
        UNIT_TEST(json_lines_are_json_whatever_the_message_holds),
        UNIT_TEST(a_rated_kind_writes_one_line_a_second_and_counts_the_rest),
    };

    return unit_run("log", tests, sizeof(tests) / sizeof(tests[0]));
}
