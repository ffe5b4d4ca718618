/*
 * route.h - which shard a key lives on.
 *
 * slot = crc32(key) mod 16384 (CRC-32/ISO-HDLC, zlib's crc32). Slots are
 * split into contiguous ranges, one per shard: by default equal ranges in
 * config order (shard i of n owns slots ceil(i*16384/n) .. ceil((i+1)*16384/n)-1,
 * that is, slot s belongs to shard floor(s*n/16384)); a config may give
 * every shard an explicit "slots": [first, last] instead.
 */
#ifndef DTX_ROUTE_H
#define DTX_ROUTE_H

#include <stddef.h>
#include <stdint.h>

#include "dtx/err.h"

#define ROUTE_SLOTS 16384

struct route_range {
    uint32_t lo, hi; /* inclusive */
};

struct route {
    uint16_t shard_of[ROUTE_SLOTS];
};

/* The slot of a key of len bytes. */
uint32_t route_slot(const char *key, size_t len);

/* The default range of shard i of n. */
struct route_range route_default_range(size_t i, size_t n);

/*
 * Builds the slot table from one range per shard. Returns 0, or
 * DTX_EINVAL when the ranges overlap, leave a slot without a shard or go
 * past the last slot; err names the first offending slot.
 */
int route_build(struct route *r, const struct route_range *ranges, size_t n, struct dtx_err *err);

/* The index of the shard owning slot. */
static inline size_t route_shard(const struct route *r, uint32_t slot)
{
    return r->shard_of[slot % ROUTE_SLOTS];
}

#endif
