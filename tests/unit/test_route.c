/* test_route.c - hash slots and shard ranges (route.c). */
#include "dtx/route.h"
#include "unit.h"

#include <string.h>

static void slot_is_zlib_crc32_mod_16384(void)
{
    /* crc32("123456789") = 0xCBF43926 (CRC-32/ISO-HDLC check value). */
    CU_ASSERT_EQUAL(route_slot("123456789", 9), 0xCBF43926u % 16384);
    /* crc32("a") = 0xE8B7BE43, crc32("") = 0. */
    CU_ASSERT_EQUAL(route_slot("a", 1), 0xE8B7BE43u % 16384);
    CU_ASSERT_EQUAL(route_slot("", 0), 0);
    /* crc32("acct:9") = 0xAC3FBED1 (slot 16081) */
    CU_ASSERT_EQUAL(route_slot("acct:9", 6), 0xAC3FBED1u % 16384);
}

static void default_ranges_split_slots_evenly_in_config_order(void)
{
    struct route_range r0 = route_default_range(0, 3), r1 = route_default_range(1, 3),
                       r2 = route_default_range(2, 3);

    CU_ASSERT_EQUAL(r0.lo, 0);
    CU_ASSERT_EQUAL(r0.hi, 5461);
    CU_ASSERT_EQUAL(r1.lo, 5462);
    CU_ASSERT_EQUAL(r1.hi, 10922);
    CU_ASSERT_EQUAL(r2.lo, 10923);
    CU_ASSERT_EQUAL(r2.hi, 16383);
    CU_ASSERT_EQUAL(route_default_range(0, 1).hi, 16383);
}

static void default_ranges_agree_with_floor_formula(void)
{
    for (size_t n = 1; n <= 9; n++) {
        struct route_range ranges[9];
        struct route r;

        for (size_t i = 0; i < n; i++)
            ranges[i] = route_default_range(i, n);
        CU_ASSERT_EQUAL_FATAL(route_build(&r, ranges, n, NULL), 0);
        for (uint32_t s = 0; s < ROUTE_SLOTS; s++)
            CU_ASSERT_EQUAL(route_shard(&r, s), (size_t)s * n / ROUTE_SLOTS);
    }
}

static void overlapping_ranges_are_refused(void)
{
    struct route_range ranges[2] = {{0, 9000}, {8000, 16383}};
    struct dtx_err err;
    struct route r;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(route_build(&r, ranges, 2, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 8000 is assigned to two shards"));
}

static void a_gap_in_the_ranges_is_refused(void)
{
    struct route_range ranges[2] = {{0, 100}, {102, 16383}};
    struct dtx_err err;
    struct route r;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(route_build(&r, ranges, 2, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "slot 101 is not assigned"));
}

static void explicit_ranges_route_keys_to_their_owner(void)
{
    struct route_range ranges[2] = {{0, 99}, {100, 16383}};
    struct route r;

    CU_ASSERT_EQUAL_FATAL(route_build(&r, ranges, 2, NULL), 0);
    CU_ASSERT_EQUAL(route_shard(&r, 99), 0);
    CU_ASSERT_EQUAL(route_shard(&r, 100), 1);
    CU_ASSERT_EQUAL(route_shard(&r, 0), 0);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(slot_is_zlib_crc32_mod_16384),
        UNIT_TEST(default_ranges_split_slots_evenly_in_config_order),
        UNIT_TEST(default_ranges_agree_with_floor_formula),
        UNIT_TEST(overlapping_ranges_are_refused),
        UNIT_TEST(a_gap_in_the_ranges_is_refused),
        UNIT_TEST(explicit_ranges_route_keys_to_their_owner),
    };

    return unit_run("route", tests, sizeof(tests) / sizeof(tests[0]));
}
