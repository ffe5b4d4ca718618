/*
 * decision.c - what is decided about a gtid, and the operators' decisions.
 *
 * coord_decision() answers "what must a prepared branch of this gtid do",
 * in this order: the transaction in memory (tx_decision), else an
 * operator's durable note, else "in flight" while an operator's record is
 * being forced, else presumed abort for a gtid this coordinator issued
 * (tx_presumed), else unknown.
 *
 * Operator notes: an OPERATOR record (dtxctl resolve / forget) is forced
 * to the decision store first; once durable it becomes a note (kept for
 * good: notes are few, and a branch resolved by hand may turn up again
 * when its shard comes back), a forget is applied to its live transaction
 * (TXE_FORGET), and the operator's request is answered. Notes go into
 * every checkpoint, with those still being forced.
 *
 * Epoch gaps: epochs this node used that its decision store does not know
 * (a participant had seen them: the store was restored from an older copy,
 * or lost). A gtid of such an epoch with no record here is unknown, never
 * presumed aborted: an operator resolves it with what the shards show.
 * A shard may also hold branches of a lost run that used one of this run's
 * epochs (its refusal, which reveals the gap, may not have come yet, or
 * came after this run issued gtids of that epoch): a branch there with a
 * gtid of this run's epochs is this run's only from the epoch the shard's
 * link first accepted on (a shard that accepted an epoch had seen no other
 * run at it or later); before that, or before any acceptance, it is
 * unknown, whatever this run decided for its own transaction of that gtid.
 *
 * State: co->notes and co->gaps, owned by this file. Thread model: the
 * coordinator's event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The notes about one gtid (co->notes.by_gtid). */
struct noted {
    struct hmap_node node;
    char gtid[DTX_GTID_MAX + 1];
    struct coord_opnote *notes; /* oldest first */
};

/* An OPERATOR record on its way to durability. */
struct op_wait {
    struct list_node link; /* on co->notes.pending, in lsn order */
    uint64_t lsn;
    char gtid[DTX_GTID_MAX + 1];
    struct coord_opnote note;
    coord_done_fn done;
    void *arg;
};

void coord_notes_init(struct coord_notes *n)
{
    hmap_init(&n->by_gtid);
    list_init(&n->pending);
}

static void free_notes(struct coord_opnote *n)
{
    while (n) {
        struct coord_opnote *next = n->next;

        free(n->who);
        free(n->reason);
        free(n);
        n = next;
    }
}

void coord_notes_release(struct coord_notes *n)
{
    struct hmap_iter it;

    for (struct hmap_node *h = hmap_first(&n->by_gtid, &it); h; h = hmap_next(&n->by_gtid, &it)) {
        struct noted *nd = container_of(h, struct noted, node);

        free_notes(nd->notes);
        free(nd);
    }
    hmap_release(&n->by_gtid);
}

static struct noted *find_noted(const struct coord *co, const char *gtid)
{
    struct hmap_node *n = hmap_get(&co->notes.by_gtid, gtid);

    return n ? container_of(n, struct noted, node) : NULL;
}

/* A copy of src (strings included), not linked anywhere. */
static struct coord_opnote *copy_note(const struct coord_opnote *src)
{
    struct coord_opnote *n = xcalloc(1, sizeof(*n));

    *n = *src;
    n->next = NULL;
    n->who = xstrdup(src->who ? src->who : "");
    n->reason = xstrdup(src->reason ? src->reason : "");
    return n;
}

void coord_notes_add(struct coord *co, const char *gtid, const struct coord_opnote *src)
{
    struct noted *nd = find_noted(co, gtid);
    struct coord_opnote **tail;

    if (!nd) {
        nd = xcalloc(1, sizeof(*nd));
        snprintf(nd->gtid, sizeof(nd->gtid), "%s", gtid);
        hmap_put(&co->notes.by_gtid, &nd->node, nd->gtid);
    }
    for (tail = &nd->notes; *tail; tail = &(*tail)->next)
        ;
    *tail = copy_note(src);
}

const struct coord_opnote *coord_notes(const struct coord *co, const char *gtid)
{
    const struct noted *nd = find_noted(co, gtid);

    return nd ? nd->notes : NULL;
}

void coord_each_noted(const struct coord *co,
                      void (*fn)(void *arg, const char *gtid, const struct coord_opnote *notes),
                      void *arg)
{
    struct hmap_iter it;

    for (struct hmap_node *h = hmap_first(&co->notes.by_gtid, &it); h;
         h = hmap_next(&co->notes.by_gtid, &it)) {
        const struct noted *nd = container_of(h, const struct noted, node);

        fn(arg, nd->gtid, nd->notes);
    }
}

/* True while an OPERATOR record about gtid is being forced. */
static bool note_pending(const struct coord *co, const char *gtid)
{
    for (const struct list_node *p = co->notes.pending.next; p != &co->notes.pending; p = p->next) {
        if (strcmp(container_of(p, const struct op_wait, link)->gtid, gtid) == 0)
            return true;
    }
    return false;
}

/* False for a gtid of one of this run's epochs that shard's link had not accepted. */
static bool epoch_accepted(const struct coord *co, const char *gtid, int shard)
{
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch, seq;

    if (!gid_parse_gtid(gtid, node, &epoch, &seq) || strcmp(node, co->cfg->node_id) != 0 ||
        epoch < co->run_epoch)
        return true; /* an earlier run's: the decision store knows, or the gap says unknown */
    return co->accepted_from && co->accepted_from[shard] && co->accepted_from[shard] <= epoch;
}

enum dtx_decision coord_decision(const struct coord *co, const char *gtid, int shard, uint64_t *xid)
{
    const struct txent *e = txtab_find(&co->tab, gtid);
    const struct coord_opnote *n;

    *xid = 0;
    if (shard >= 0 && !epoch_accepted(co, gtid, shard))
        return DTX_DEC_UNKNOWN; /* not this run's branch, perhaps a lost run's */
    if (e)
        return tx_decision(e->tx, shard, xid);
    /* An operator decided: a transaction has one outcome, whichever shard the note named. */
    if ((n = coord_notes(co, gtid)))
        return n->commit ? DTX_DEC_COMMIT : DTX_DEC_ABORT;
    if (note_pending(co, gtid))
        return DTX_DEC_IN_FLIGHT; /* an operator's decision is being forced */
    if (coord_gtid_in_gap(co, gtid))
        return DTX_DEC_UNKNOWN; /* used, but unknown to this store: never presumed */
    return tx_presumed(gtid, co->cfg->node_id, co->epoch, co->seq);
}

bool coord_acceptors_done(const struct coord *co, const char *gtid)
{
    const struct txent *e = txtab_find(&co->tab, gtid);

    return e && tx_acceptors_done(e->tx);
}

void coord_gap_add(struct coord *co, const struct coord_gap *g)
{
    co->gaps = xrealloc(co->gaps, (co->ngaps + 1) * sizeof(*co->gaps));
    co->gaps[co->ngaps++] = *g;
}

enum coord_gtid coord_gtid_kind(const struct coord *co, const char *gtid, char *owner)
{
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch, seq;

    if (!gid_parse_gtid(gtid, node, &epoch, &seq))
        return CG_MALFORMED;
    if (owner)
        snprintf(owner, DTX_NAME_MAX + 1, "%s", node);
    if (strcmp(node, co->cfg->node_id) != 0)
        return CG_FOREIGN;
    if (coord_in_gap(co, epoch))
        return CG_GAP;
    if (epoch > co->epoch || (epoch == co->epoch && seq > co->seq))
        return CG_NOT_ISSUED;
    return CG_ISSUED;
}

void coord_last_issued(const struct coord *co, char *out, size_t n)
{
    gid_format_gtid(out, n, co->cfg->node_id, co->epoch, co->seq);
}

bool coord_gtid_in_gap(const struct coord *co, const char *gtid)
{
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch, seq;

    return gid_parse_gtid(gtid, node, &epoch, &seq) && strcmp(node, co->cfg->node_id) == 0 &&
           coord_in_gap(co, epoch);
}

void coord_gaps_json(const struct coord *co, cJSON *obj)
{
    cJSON *arr;

    if (co->ngaps == 0)
        return;
    arr = jsonx_new_array();
    for (size_t i = 0; i < co->ngaps; i++) {
        cJSON *g = jsonx_new_object();

        jsonx_add_num(g, "from", (double)co->gaps[i].lo);
        jsonx_add_num(g, "to", (double)co->gaps[i].hi);
        jsonx_add_str(g, "shard", co->gaps[i].shard);
        jsonx_add_time(g, "found_at", co->gaps[i].wall_us);
        jsonx_append(arr, g);
    }
    jsonx_add(obj, "epoch_gaps", arr);
}

bool coord_in_gap(const struct coord *co, uint64_t epoch)
{
    for (size_t i = 0; i < co->ngaps; i++) {
        if (epoch >= co->gaps[i].lo && epoch <= co->gaps[i].hi)
            return true;
    }
    return false;
}

/* An operator gave up on e's branch on shard: it counts as acknowledged. */
static void apply_forget(struct txent *e, const char *shard, const struct coord_config *cfg)
{
    struct tx_evarg a = {.b = tx_waits_for(e->tx, coord_config_shard(cfg, shard))};

    if (a.b)
        tx_step(e->tx, TXE_FORGET, &a);
}

void coord_apply_forgets(struct coord *co, struct txent *e)
{
    for (const struct coord_opnote *n = coord_notes(co, tx_gtid(e->tx)); n; n = n->next) {
        if (n->kind == DREC_OP_FORGET)
            apply_forget(e, n->shard, co->cfg);
    }
}

static void note_rec(struct drec *rec, const char *gtid, const struct coord_opnote *n)
{
    *rec = (struct drec){
        .type = DREC_OPERATOR,
        .gtid = gtid,
        .wall_us = n->wall_us,
        .op_kind = (uint8_t)n->kind,
        .op_commit = n->commit,
        .shard = n->shard,
        .who = n->who,
        .reason = n->reason,
    };
}

static void op_wait_free(struct op_wait *w)
{
    free(w->note.who);
    free(w->note.reason);
    free(w);
}

void coord_record_operator(struct coord *co, const char *gtid, const struct coord_opnote *note,
                           coord_done_fn done, void *arg)
{
    struct op_wait *w = xcalloc(1, sizeof(*w));
    struct coord_opnote *copy = copy_note(note);
    struct dtx_err err;
    struct drec rec;

    snprintf(w->gtid, sizeof(w->gtid), "%s", gtid);
    w->note = *copy;
    free(copy);
    w->note.wall_us = ev_wall_us();
    w->done = done;
    w->arg = arg;
    note_rec(&rec, w->gtid, &w->note);
    w->lsn = dstore_append(co->store, &rec, true);
    if (w->lsn == 0) {
        dtx_err_clear(&err);
        if (!dstore_failed(co->store, &err))
            dtx_err_set(&err, DTX_ELOGFAIL, "the decision log is not writable");
        err.code = DTX_ELOGFAIL;
        done(arg, err.code, &err);
        op_wait_free(w);
        return;
    }
    list_insert_tail(&co->notes.pending, &w->link);
}

void coord_notes_durable(struct coord *co, uint64_t lsn)
{
    while (!list_empty(&co->notes.pending)) {
        struct op_wait *w = container_of(co->notes.pending.next, struct op_wait, link);
        struct txent *e = txtab_find(&co->tab, w->gtid);

        if (w->lsn > lsn)
            break;
        list_remove(&w->link);
        coord_notes_add(co, w->gtid, &w->note);
        if (w->note.kind == DREC_OP_FORGET && e)
            apply_forget(e, w->note.shard, co->cfg);
        w->done(w->arg, 0, NULL);
        op_wait_free(w);
    }
}

void coord_notes_fail(struct coord *co, const struct dtx_err *err)
{
    while (!list_empty(&co->notes.pending)) {
        struct op_wait *w = container_of(co->notes.pending.next, struct op_wait, link);

        list_remove(&w->link);
        w->done(w->arg, err ? err->code : DTX_ESHUTDOWN, err);
        op_wait_free(w);
    }
}

void coord_notes_encode(const struct coord *co, struct buf *snap)
{
    struct hmap_iter it;
    struct drec rec;

    for (struct hmap_node *h = hmap_first(&co->notes.by_gtid, &it); h;
         h = hmap_next(&co->notes.by_gtid, &it)) {
        const struct noted *nd = container_of(h, const struct noted, node);

        for (const struct coord_opnote *n = nd->notes; n; n = n->next) {
            note_rec(&rec, nd->gtid, n);
            drec_encode(snap, &rec);
        }
    }
    for (const struct list_node *p = co->notes.pending.next; p != &co->notes.pending; p = p->next) {
        const struct op_wait *w = container_of(p, const struct op_wait, link);

        note_rec(&rec, w->gtid, &w->note);
        drec_encode(snap, &rec);
    }
    for (size_t i = 0; i < co->ngaps; i++) {
        rec = (struct drec){.type = DREC_GAP,
                            .epoch = co->gaps[i].lo,
                            .epoch_hi = co->gaps[i].hi,
                            .wall_us = co->gaps[i].wall_us,
                            .shard = co->gaps[i].shard};
        drec_encode(snap, &rec);
    }
}
