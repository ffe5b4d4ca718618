/*
 * fuzz_gid.c - the name, gtid and gid parsers (gid.c) on any string: a
 * participant parses the gid of every prepared transaction it finds in
 * PostgreSQL, and gtids arrive in URLs and peer messages.
 *
 * Checks: what gid_parse_gtid and gid_parse accept formats back to exactly
 * the input (the parse is strict: no leading zeros, no sign, no spaces),
 * within the documented sizes; node and shard names pass gid_name_ok; a
 * refused input leaves the outputs untouched.
 */
#include "dtx/gid.h"

#include "fuzz.h"

#include <inttypes.h>

#define UNTOUCHED 'U'

static void check_gtid(const char *s)
{
    char node[DTX_NAME_MAX + 1], again[DTX_GTID_MAX + 1];
    uint64_t epoch = 7, seq = 9;

    memset(node, UNTOUCHED, sizeof(node));
    if (!gid_parse_gtid(s, node, &epoch, &seq)) {
        FUZZ_CHECK(node[0] == UNTOUCHED && epoch == 7 && seq == 9);
        return;
    }
    FUZZ_CHECK(strlen(s) <= DTX_GTID_MAX && gid_name_ok(node));
    gid_format_gtid(again, sizeof(again), node, epoch, seq);
    FUZZ_CHECK(strcmp(again, s) == 0);
}

static void check_gid(const char *s)
{
    char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1], again[DTX_GID_MAX + 1];

    memset(gtid, UNTOUCHED, sizeof(gtid));
    memset(shard, UNTOUCHED, sizeof(shard));
    if (!gid_parse(s, gtid, shard)) {
        FUZZ_CHECK(gtid[0] == UNTOUCHED && shard[0] == UNTOUCHED);
        return;
    }
    FUZZ_CHECK(strlen(s) <= DTX_GID_MAX && gid_name_ok(shard));
    FUZZ_CHECK(gid_parse_gtid(gtid, NULL, NULL, NULL));
    gid_format(again, sizeof(again), gtid, shard);
    FUZZ_CHECK(strcmp(again, s) == 0);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet("fuzz_gid");
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *s = malloc(size + 1);

    FUZZ_CHECK(s != NULL);
    memcpy(s, data, size);
    s[size] = '\0'; /* a C string, as the callers have one; an inner NUL ends it early */
    gid_name_ok(s);
    check_gtid(s);
    check_gid(s);
    free(s);
    return 0;
}
