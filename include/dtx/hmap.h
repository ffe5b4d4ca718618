/*
 * hmap.h - intrusive hash map keyed by NUL-terminated strings.
 *
 * The element embeds a struct hmap_node; the key string must live in the
 * element (or outlive it in the map). The map owns only its bucket array.
 * Not thread-safe: the owner protects it.
 */
#ifndef DTX_HMAP_H
#define DTX_HMAP_H

#include <stddef.h>
#include <stdint.h>

struct hmap_node {
    struct hmap_node *next;
    uint64_t hash;
    const char *key;
};

struct hmap {
    struct hmap_node **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first insert */
    size_t count;
};

void hmap_init(struct hmap *m);
/* Frees the bucket array; the elements are the caller's. */
void hmap_release(struct hmap *m);

/* Inserts n under key (which must not be present). */
void hmap_put(struct hmap *m, struct hmap_node *n, const char *key);
/* Returns the node stored under key, or NULL. */
struct hmap_node *hmap_get(const struct hmap *m, const char *key);
/* Removes n, which must be in the map. */
void hmap_remove(struct hmap *m, struct hmap_node *n);

/* Iteration: for (n = hmap_first(m, &it); n; n = hmap_next(m, &it)); removal of the current
 * node during iteration is allowed. */
struct hmap_iter {
    size_t bucket;
    struct hmap_node *next;
};
struct hmap_node *hmap_first(const struct hmap *m, struct hmap_iter *it);
struct hmap_node *hmap_next(const struct hmap *m, struct hmap_iter *it);

/* 64-bit FNV-1a of a string. */
uint64_t hmap_hash(const char *key);

#endif
