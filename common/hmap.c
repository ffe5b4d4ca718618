/*
 * hmap.c - chained hash map with power-of-two buckets, doubling when the
 * load factor passes 1.
 *
 * A map belongs to whoever embeds it; no locking here. Its nodes are the
 * caller's (intrusive): the map allocates only its bucket array, and runs
 * out of memory by the xalloc.h policy. It cannot fail otherwise.
 */
#include "dtx/hmap.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>

uint64_t hmap_hash(const char *key)
{
    uint64_t h = 1469598103934665603ull;

    for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
        h ^= *p;
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

void hmap_init(struct hmap *m)
{
    m->buckets = NULL;
    m->nbuckets = 0;
    m->count = 0;
}

void hmap_release(struct hmap *m)
{
    free(m->buckets);
    hmap_init(m);
}

static void hmap_grow(struct hmap *m)
{
    size_t n = m->nbuckets ? m->nbuckets * 2 : 16;
    struct hmap_node **b = xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < m->nbuckets; i++) {
        struct hmap_node *e = m->buckets[i];

        while (e) {
            struct hmap_node *next = e->next;
            size_t j = e->hash & (n - 1);

            e->next = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->nbuckets = n;
}

void hmap_put(struct hmap *m, struct hmap_node *n, const char *key)
{
    size_t i;

    if (m->count >= m->nbuckets)
        hmap_grow(m);
    n->key = key;
    n->hash = hmap_hash(key);
    i = n->hash & (m->nbuckets - 1);
    n->next = m->buckets[i];
    m->buckets[i] = n;
    m->count++;
}

struct hmap_node *hmap_get(const struct hmap *m, const char *key)
{
    uint64_t h;

    if (m->count == 0)
        return NULL;
    h = hmap_hash(key);
    for (struct hmap_node *e = m->buckets[h & (m->nbuckets - 1)]; e; e = e->next) {
        if (e->hash == h && strcmp(e->key, key) == 0)
            return e;
    }
    return NULL;
}

void hmap_remove(struct hmap *m, struct hmap_node *n)
{
    struct hmap_node **pp = &m->buckets[n->hash & (m->nbuckets - 1)];

    while (*pp && *pp != n)
        pp = &(*pp)->next;
    if (!*pp)
        return;
    *pp = n->next;
    n->next = NULL;
    m->count--;
}

static struct hmap_node *hmap_scan(const struct hmap *m, struct hmap_iter *it)
{
    while (it->bucket < m->nbuckets) {
        struct hmap_node *e = m->buckets[it->bucket++];

        if (e) {
            it->next = e->next;
            return e;
        }
    }
    return NULL;
}

struct hmap_node *hmap_first(const struct hmap *m, struct hmap_iter *it)
{
    it->bucket = 0;
    it->next = NULL;
    return hmap_scan(m, it);
}

struct hmap_node *hmap_next(const struct hmap *m, struct hmap_iter *it)
{
    struct hmap_node *e = it->next;

    if (e) {
        it->next = e->next;
        return e;
    }
    return hmap_scan(m, it);
}
