/*
 * gid.c - formatting and strict parsing of names, gtids and gids.
 * Stateless.
 */
#include "dtx/gid.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool name_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static bool name_ok_n(const char *s, size_t n)
{
    if (n == 0 || n > DTX_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!name_char(s[i]))
            return false;
    }
    return true;
}

bool gid_name_ok(const char *s)
{
    return name_ok_n(s, strlen(s));
}

void gid_format_gtid(char *out, size_t outsz, const char *node, uint64_t epoch, uint64_t seq)
{
    snprintf(out, outsz, "%s-%" PRIu64 "-%" PRIu64, node, epoch, seq);
}

static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;

    if (n == 0 || n > 20 || (n > 1 && s[0] == '0'))
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

bool gid_parse_gtid(const char *gtid, char *node, uint64_t *epoch, uint64_t *seq)
{
    size_t n = strlen(gtid);
    const char *d2, *d1;
    uint64_t e, s;

    if (n > DTX_GTID_MAX)
        return false;
    d2 = strrchr(gtid, '-');
    if (!d2 || d2 == gtid)
        return false;
    d1 = d2 - 1;
    while (d1 > gtid && *d1 != '-')
        d1--;
    if (*d1 != '-' || !name_ok_n(gtid, (size_t)(d1 - gtid)))
        return false;
    if (!parse_u64(d1 + 1, (size_t)(d2 - d1 - 1), &e) || !parse_u64(d2 + 1, strlen(d2 + 1), &s))
        return false;
    if (node) {
        memcpy(node, gtid, (size_t)(d1 - gtid));
        node[d1 - gtid] = '\0';
    }
    if (epoch)
        *epoch = e;
    if (seq)
        *seq = s;
    return true;
}

void gid_format(char *out, size_t outsz, const char *gtid, const char *shard)
{
    snprintf(out, outsz, DTX_GID_PREFIX "%s:%s", gtid, shard);
}

bool gid_parse(const char *gid, char *gtid, char *shard)
{
    const char *body, *colon;
    char g[DTX_GTID_MAX + 1];
    uint64_t e, s;
    size_t glen;

    if (strncmp(gid, DTX_GID_PREFIX, strlen(DTX_GID_PREFIX)) != 0)
        return false;
    body = gid + strlen(DTX_GID_PREFIX);
    colon = strrchr(body, ':');
    if (!colon || !gid_name_ok(colon + 1))
        return false;
    glen = (size_t)(colon - body);
    if (glen == 0 || glen > DTX_GTID_MAX)
        return false;
    memcpy(g, body, glen);
    g[glen] = '\0';
    if (!gid_parse_gtid(g, NULL, &e, &s))
        return false;
    memcpy(gtid, g, glen + 1);
    strcpy(shard, colon + 1);
    return true;
}
