/* test_gid.c - names, gtids and prepared-transaction gids (gid.c). */
#include "dtx/gid.h"
#include "unit.h"

#include <string.h>

static void gtid_round_trips(void)
{
    char g[DTX_GTID_MAX + 1], node[DTX_NAME_MAX + 1];
    uint64_t e, s;

    gid_format_gtid(g, sizeof(g), "coord-a", 7, 18446744073709551615ull);
    CU_ASSERT_STRING_EQUAL(g, "coord-a-7-18446744073709551615");
    CU_ASSERT_TRUE(gid_parse_gtid(g, node, &e, &s));
    CU_ASSERT_STRING_EQUAL(node, "coord-a");
    CU_ASSERT_EQUAL(e, 7);
    CU_ASSERT_EQUAL(s, 18446744073709551615ull);
}

static void malformed_gtids_are_refused(void)
{
    static const char *const bad[] = {"",        "c1",     "c1-1",    "-1-2",
                                      "c1-01-2", "c1-1-x", "c 1-1-2", "c1-1-18446744073709551616",
                                      "c1--2",   NULL};
    uint64_t e, s;

    for (int i = 0; bad[i]; i++)
        CU_ASSERT_FALSE(gid_parse_gtid(bad[i], NULL, &e, &s));
}

static void gid_carries_gtid_and_shard(void)
{
    char gid[DTX_GID_MAX + 1], gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];

    gid_format(gid, sizeof(gid), "c1-3-42", "s_2");
    CU_ASSERT_STRING_EQUAL(gid, "dtx:c1-3-42:s_2");
    CU_ASSERT_TRUE(gid_parse(gid, gtid, shard));
    CU_ASSERT_STRING_EQUAL(gtid, "c1-3-42");
    CU_ASSERT_STRING_EQUAL(shard, "s_2");
    CU_ASSERT(strlen(gid) < 200); /* PostgreSQL's GIDSIZE */
}

static void foreign_prepared_transactions_are_not_dtx_gids(void)
{
    char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];

    CU_ASSERT_FALSE(gid_parse("app:c1-3-42:s1", gtid, shard));
    CU_ASSERT_FALSE(gid_parse("dtx:c1-3-42", gtid, shard));
    CU_ASSERT_FALSE(gid_parse("dtx:nonsense:s1", gtid, shard));
    CU_ASSERT_FALSE(gid_parse("DTX:c1-3-42:s1", gtid, shard));
}

static void names_are_short_and_plain(void)
{
    char long_name[DTX_NAME_MAX + 2];

    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    CU_ASSERT_TRUE(gid_name_ok("s1"));
    CU_ASSERT_TRUE(gid_name_ok("shard_09-b"));
    CU_ASSERT_FALSE(gid_name_ok(""));
    CU_ASSERT_FALSE(gid_name_ok("s:1"));
    CU_ASSERT_FALSE(gid_name_ok("s 1"));
    CU_ASSERT_FALSE(gid_name_ok(long_name));
    long_name[DTX_NAME_MAX] = '\0';
    CU_ASSERT_TRUE(gid_name_ok(long_name));
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(gtid_round_trips),
        UNIT_TEST(malformed_gtids_are_refused),
        UNIT_TEST(gid_carries_gtid_and_shard),
        UNIT_TEST(foreign_prepared_transactions_are_not_dtx_gids),
        UNIT_TEST(names_are_short_and_plain),
    };

    return unit_run("gid", tests, sizeof(tests) / sizeof(tests[0]));
}
