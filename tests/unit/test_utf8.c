/*
 * test_utf8.c - UTF-8 well-formedness (utf8.c) and the JSON answers that
 * rely on it (jsonx_add_str, jsonx_error_body): what a client sent and an
 * answer echoes never makes the answer invalid JSON.
 */
#include "dtx/jsonx.h"
#include "dtx/utf8.h"
#include "unit.h"

#include <string.h>

static void every_kind_of_ill_formed_sequence_is_found(void)
{
    static const struct {
        const char *s;
        size_t at;
    } cases[] = {
        {"ok \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14}, /* all well-formed: the length */
        {"a\xff", 1},
        {"ab\xc3(", 2},
        {"\xed\xa0\x80", 0},
        {"\xc0\xaf", 0},
        {"\xf4\x90\x80\x80", 0},
        {"x\xe2\x82", 1},
        {"\x80", 0},
        {"\xf5\x80\x80\x80", 0},
        {"\xe0\x80\xaf", 0},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        CU_ASSERT_EQUAL(utf8_invalid_at(cases[i].s, strlen(cases[i].s)), cases[i].at);
}

static void an_error_echoing_bad_bytes_is_still_json(void)
{
    struct dtx_err err;
    char *body;
    cJSON *back = NULL;

    dtx_err_set(&err, DTX_ENOTFOUND, "no such path '/v1/\xff\xfe%s'", "\xc3(");
    body = jsonx_error_body(&err);
    CU_ASSERT_EQUAL(utf8_invalid_at(body, strlen(body)), strlen(body));
    CU_ASSERT_PTR_NOT_NULL(strstr(body, "'/v1/\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd('"));
    CU_ASSERT_EQUAL(jsonx_parse(body, strlen(body), &back, NULL), 0);
    cJSON_Delete(back);
    free(body);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(every_kind_of_ill_formed_sequence_is_found),
        UNIT_TEST(an_error_echoing_bad_bytes_is_still_json),
    };

    return unit_run("utf8", tests, sizeof(tests) / sizeof(tests[0]));
}
