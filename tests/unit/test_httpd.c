/*
 * test_httpd.c - what the HTTP plumbing (httpd.c) checks by itself, without
 * a server: numbers taken from query arguments and headers.
 */
#include "dtx/httpd.h"
#include "unit.h"

#include <stdint.h>

static void only_plain_decimal_numbers_up_to_the_maximum_are_taken(void)
{
    static const char *const bad[] = {"",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "0x10",
                                      "1e3",
                                      "1.0",
                                      "18446744073709551616",
                                      "99999999999999999999999"};
    uint64_t v = 7;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CU_ASSERT_FALSE(httpd_parse_u64(bad[i], UINT64_MAX, &v));
    CU_ASSERT_FALSE(httpd_parse_u64(NULL, UINT64_MAX, &v));
    CU_ASSERT_EQUAL(v, 7); /* untouched */
    CU_ASSERT_TRUE(httpd_parse_u64("18446744073709551615", UINT64_MAX, &v));
    CU_ASSERT_EQUAL(v, UINT64_MAX);
    CU_ASSERT_TRUE(httpd_parse_u64("9223372036854775807", INT64_MAX, &v));
    CU_ASSERT_EQUAL(v, (uint64_t)INT64_MAX);
    CU_ASSERT_FALSE(httpd_parse_u64("9223372036854775808", INT64_MAX, &v));
    CU_ASSERT_TRUE(httpd_parse_u64("0", 0, &v));
    CU_ASSERT_EQUAL(v, 0);
    CU_ASSERT_FALSE(httpd_parse_u64("1", 0, &v));
    CU_ASSERT_TRUE(httpd_parse_u64("00042", 42, &v));
    CU_ASSERT_EQUAL(v, 42);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(only_plain_decimal_numbers_up_to_the_maximum_are_taken),
    };

    return unit_run("httpd", tests, sizeof(tests) / sizeof(tests[0]));
}
