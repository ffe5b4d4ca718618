/*
 * heuristic.c - what shards did against the decision, kept for operators.
 *
 * A participant acknowledges a phase-2 message with what its database
 * really did. When that is the opposite of the decision (mixed: a branch
 * finished by hand, or a database that ended it otherwise) or cannot be
 * proven (hazard: the branch is gone from a database that was restored or
 * failed over, or whose xid is too old to tell), the protocol reports it
 * (tx_env.heuristic) and this file makes it durable and visible: a
 * HEURISTIC record, an error line in the log, a counter in /metrics, and a
 * "heuristic" in the transaction's state, for as long as the coordinator
 * runs and across restarts (the records are replayed and kept in every
 * checkpoint, like operator notes: they are few, and an operator must
 * settle each). A HEURISTIC record is not forced: it only reports; it is
 * durable with the transaction's END record, which follows it.
 *
 * State: co->heurs, owned by this file. Thread model: the coordinator's
 * event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The heuristic outcomes of one gtid (co->heurs.by_gtid). */
struct heured {
    struct hmap_node node;
    char gtid[DTX_GTID_MAX + 1];
    struct coord_heur *list; /* oldest first */
};

void coord_heurs_init(struct coord_heurs *h)
{
    hmap_init(&h->by_gtid);
}

void coord_heurs_release(struct coord_heurs *h)
{
    struct hmap_iter it;
    struct hmap_node *n = hmap_first(&h->by_gtid, &it);

    while (n) {
        struct heured *hd = container_of(n, struct heured, node);

        n = hmap_next(&h->by_gtid, &it);
        while (hd->list) {
            struct coord_heur *next = hd->list->next;

            free(hd->list->what);
            free(hd->list);
            hd->list = next;
        }
        free(hd);
    }
    hmap_release(&h->by_gtid);
}

static struct heured *find_heured(const struct coord *co, const char *gtid)
{
    struct hmap_node *n = hmap_get(&co->heurs.by_gtid, gtid);

    return n ? container_of(n, struct heured, node) : NULL;
}

void coord_heur_add(struct coord *co, const char *gtid, const struct coord_heur *src)
{
    struct heured *hd = find_heured(co, gtid);
    struct coord_heur **tail, *h = xcalloc(1, sizeof(*h));

    *h = *src;
    h->next = NULL;
    h->what = xstrdup(src->what ? src->what : "");
    if (!hd) {
        hd = xcalloc(1, sizeof(*hd));
        snprintf(hd->gtid, sizeof(hd->gtid), "%s", gtid);
        hmap_put(&co->heurs.by_gtid, &hd->node, hd->gtid);
    }
    for (tail = &hd->list; *tail; tail = &(*tail)->next)
        ;
    *tail = h;
    co->m.heuristic[src->kind == DREC_HEUR_MIXED ? 0 : 1] += src->counted;
}

static void heur_rec(struct drec *rec, const char *gtid, const struct coord_heur *h)
{
    *rec = (struct drec){.type = DREC_HEURISTIC,
                         .gtid = gtid,
                         .wall_us = h->wall_us,
                         .shard = h->shard,
                         .heur_kind = (uint8_t)h->kind,
                         .op_commit = h->commit,
                         .reason = h->what};
}

void coord_on_heuristic(struct tx *tx, int shard, enum drec_heur_kind kind, const char *what)
{
    struct coord *co = tx_ctx(tx);
    struct coord_heur h = {.kind = kind,
                           .commit = tx_decided_commit(tx),
                           .what = (char *)what,
                           .wall_us = ev_wall_us(),
                           .counted = true};
    struct drec rec;

    snprintf(h.shard, sizeof(h.shard), "%s", co->shard_names[shard]);
    log_error("transaction %s: HEURISTIC %s: %s (see dtxctl show %s; docs/operations.md)",
              tx_gtid(tx), kind == DREC_HEUR_MIXED ? "MIXED outcome" : "HAZARD", what, tx_gtid(tx));
    coord_heur_add(co, tx_gtid(tx), &h);
    heur_rec(&rec, tx_gtid(tx), &h);
    dstore_append(co->store, &rec, false); /* a failed store stops the coordinator anyway */
}

const struct coord_heur *coord_heurs(const struct coord *co, const char *gtid)
{
    const struct heured *hd = find_heured(co, gtid);

    return hd ? hd->list : NULL;
}

const char *coord_heur_word(const struct coord_heur *h)
{
    bool hazard = false;

    for (; h; h = h->next) {
        if (h->kind == DREC_HEUR_MIXED)
            return "mixed";
        hazard = true;
    }
    return hazard ? "hazard" : NULL;
}

size_t coord_heur_unsettled(const struct coord *co)
{
    struct hmap_iter it;
    size_t n = 0;

    for (struct hmap_node *h = hmap_first(&co->heurs.by_gtid, &it); h;
         h = hmap_next(&co->heurs.by_gtid, &it)) {
        const struct heured *hd = container_of(h, const struct heured, node);
        uint64_t newest = 0, settled = 0;
        bool noted = false;

        for (const struct coord_heur *x = hd->list; x; x = x->next)
            newest = x->wall_us > newest ? x->wall_us : newest;
        for (const struct coord_opnote *o = coord_notes(co, hd->gtid); o; o = o->next) {
            settled = o->wall_us > settled ? o->wall_us : settled;
            noted = true;
        }
        n += !noted || settled < newest;
    }
    return n;
}

void coord_each_heured(const struct coord *co,
                       void (*fn)(void *arg, const char *gtid, const struct coord_heur *list),
                       void *arg)
{
    struct hmap_iter it;

    for (struct hmap_node *n = hmap_first(&co->heurs.by_gtid, &it); n;
         n = hmap_next(&co->heurs.by_gtid, &it)) {
        const struct heured *hd = container_of(n, const struct heured, node);

        fn(arg, hd->gtid, hd->list);
    }
}

void coord_heurs_encode(const struct coord *co, struct buf *snap)
{
    struct hmap_iter it;
    struct drec rec;

    for (struct hmap_node *n = hmap_first(&co->heurs.by_gtid, &it); n;
         n = hmap_next(&co->heurs.by_gtid, &it)) {
        const struct heured *hd = container_of(n, const struct heured, node);

        for (const struct coord_heur *h = hd->list; h; h = h->next) {
            heur_rec(&rec, hd->gtid, h);
            drec_encode(snap, &rec);
        }
    }
}
