/*
 * route.c - hash slots to shards. The table is built once from the config
 * and read-only afterwards.
 */
#include "dtx/route.h"

#include <string.h>
#include <zlib.h>

uint32_t route_slot(const char *key, size_t len)
{
    return (uint32_t)(crc32(0L, (const Bytef *)key, (uInt)len) % ROUTE_SLOTS);
}

struct route_range route_default_range(size_t i, size_t n)
{
    struct route_range r;

    r.lo = (uint32_t)((i * ROUTE_SLOTS + n - 1) / n);
    r.hi = (uint32_t)(((i + 1) * ROUTE_SLOTS + n - 1) / n) - 1;
    return r;
}

int route_build(struct route *r, const struct route_range *ranges, size_t n, struct dtx_err *err)
{
    uint8_t seen[ROUTE_SLOTS];

    memset(seen, 0, sizeof(seen));
    for (size_t i = 0; i < n; i++) {
        if (ranges[i].lo > ranges[i].hi || ranges[i].hi >= ROUTE_SLOTS)
            return dtx_err_set(err, DTX_EINVAL,
                               "shard %zu has slot range [%u, %u]; slots are 0..%u, first <= last",
                               i, ranges[i].lo, ranges[i].hi, ROUTE_SLOTS - 1);
        for (uint32_t s = ranges[i].lo; s <= ranges[i].hi; s++) {
            if (seen[s])
                return dtx_err_set(err, DTX_EINVAL, "slot %u is assigned to two shards", s);
            seen[s] = 1;
            r->shard_of[s] = (uint16_t)i;
        }
    }
    for (uint32_t s = 0; s < ROUTE_SLOTS; s++) {
        if (!seen[s])
            return dtx_err_set(err, DTX_EINVAL, "slot %u is not assigned to any shard", s);
    }
    return 0;
}
