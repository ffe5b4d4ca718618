/*
 * acceptor.c - three-phase commit: this coordinator as an acceptor, for
 * the recovery leaders of participants (docs/protocol.md, "Three-phase
 * commit"), and as a learner of what they decide.
 *
 *   POST /v1/peer/3pc/promise {"gtid","ballot"}
 *        -> {"granted","promised","accepted":{"ballot","value"}|null,"decided"?}
 *   POST /v1/peer/3pc/accept  {"gtid","ballot","value"} -> {"accepted","promised"}
 *   POST /v1/peer/3pc/decide  {"gtid","value"}          -> {"ok":true}
 *   GET  /v1/peer/3pc/{gtid}                            -> the state, as promise answers
 *
 * Its acceptor state of a transaction: the ballot it promised (the
 * transaction's, tx3pc_promise, while it is in memory; a note otherwise),
 * and what it accepted: (b0, commit) with its PRECOMMIT record, or a
 * leader's (ballot, value) with an ACCEPT record. A grant or an acceptance
 * is forced to the decision store (PROMISE, ACCEPT records) and answered
 * once durable: after a crash it still holds. A store log is ordered, so a
 * PRECOMMIT queued before a PROMISE is durable when the PROMISE is: a
 * promise's answer never reports an acceptance that could still be lost.
 *
 * A gtid this coordinator has no state about is a blank acceptor: it never
 * pre-committed it (or finished it with every participant, which then
 * leads no more rounds), so it promised and accepted nothing.
 *
 * Notes are kept for as long as the coordinator runs and in every
 * checkpoint, like operator notes: they exist only when a recovery leader
 * asked, which is rare.
 *
 * State: co->acc. Thread model: the coordinator's event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/gid.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What this coordinator promised and accepted for a gtid, beside its transaction. */
struct acc_note {
    struct hmap_node node;
    char gtid[DTX_GTID_MAX + 1];
    struct ballot promised;
    struct ballot accepted; /* valid when value is not BV_NONE */
    enum ballot_value value;
};

/* An answer waiting for its record to be durable. */
struct acc_wait {
    struct list_node link; /* on co->acc.waits, in lsn order */
    uint64_t lsn;
    struct httpd_req *req;
    char *body;
};

void coord_acc_init(struct coord_acc *a)
{
    hmap_init(&a->by_gtid);
    list_init(&a->waits);
}

void coord_acc_release(struct coord_acc *a)
{
    struct hmap_iter it;
    struct hmap_node *n = hmap_first(&a->by_gtid, &it);

    while (n) {
        struct acc_note *note = container_of(n, struct acc_note, node);

        n = hmap_next(&a->by_gtid, &it);
        free(note);
    }
    hmap_release(&a->by_gtid);
    while (!list_empty(&a->waits)) {
        struct acc_wait *w = container_of(a->waits.next, struct acc_wait, link);

        list_remove(&w->link);
        free(w->body);
        free(w);
    }
}

static struct acc_note *note_of(struct coord *co, const char *gtid, bool create)
{
    struct hmap_node *n = hmap_get(&co->acc.by_gtid, gtid);
    struct acc_note *note;

    if (n || !create)
        return n ? container_of(n, struct acc_note, node) : NULL;
    note = xcalloc(1, sizeof(*note));
    snprintf(note->gtid, sizeof(note->gtid), "%s", gtid);
    hmap_put(&co->acc.by_gtid, &note->node, note->gtid);
    return note;
}

/* A 3PC transaction in memory (NULL when there is none). */
static struct tx *tx_of(struct coord *co, const char *gtid)
{
    struct txent *e = txtab_find(&co->tab, gtid);

    return e && tx_protocol(e->tx) == 3 ? e->tx : NULL;
}

/* The acceptor state of gtid here: promised ballot, accepted (ballot, value), decision. */
struct acc_state {
    struct ballot promised;
    struct ballot accepted;
    enum ballot_value value;
    enum ballot_value decided;
};

static void state_of(struct coord *co, const char *gtid, struct acc_state *st)
{
    struct tx *tx = tx_of(co, gtid);
    struct acc_note *note = note_of(co, gtid, false);
    char node[DTX_NAME_MAX + 1] = "";

    memset(st, 0, sizeof(*st));
    gid_parse_gtid(gtid, node, NULL, NULL);
    ballot_initial(&st->promised, node);
    if (note) {
        st->promised = note->promised;
        st->accepted = note->accepted;
        st->value = note->value;
    }
    if (tx) {
        if (ballot_cmp(tx3pc_promised(tx), &st->promised) > 0)
            st->promised = *tx3pc_promised(tx);
        if (st->value == BV_NONE && tx3pc_accepted(tx, &st->accepted))
            st->value = BV_COMMIT;
        switch (tx_outcome(tx)) {
        case TXO_COMMITTED:
            st->decided = BV_COMMIT;
            break;
        case TXO_ABORTED:
            st->decided = BV_ABORT;
            break;
        default:
            break;
        }
    }
}

static cJSON *state_json(const struct acc_state *st)
{
    cJSON *o = jsonx_new_object();

    ballot_add_state(o, &st->promised, &st->accepted, st->value, st->decided);
    return o;
}

/* Forces rec and answers body once it is durable (or at once when nothing was written). */
static void answer_durable(struct coord *co, struct httpd_req *req, const struct drec *rec,
                           cJSON *body)
{
    uint64_t lsn = rec ? dstore_append(co->store, rec, true) : 0;
    struct acc_wait *w;

    if (rec && lsn == 0) {
        cJSON_Delete(body);
        httpd_reply_errorf(req, DTX_ELOGFAIL,
                           "the decision log is not writable: nothing can be promised or "
                           "accepted here now");
        return;
    }
    if (!rec) {
        httpd_reply_json(req, 200, jsonx_print(body));
        cJSON_Delete(body);
        return;
    }
    w = xcalloc(1, sizeof(*w));
    w->lsn = lsn;
    w->req = req;
    w->body = jsonx_print(body);
    cJSON_Delete(body);
    list_insert_tail(&co->acc.waits, &w->link);
}

void coord_acc_durable(struct coord *co, uint64_t lsn)
{
    while (!list_empty(&co->acc.waits)) {
        struct acc_wait *w = container_of(co->acc.waits.next, struct acc_wait, link);

        if (w->lsn > lsn)
            break;
        list_remove(&w->link);
        httpd_reply_json(w->req, 200, w->body);
        free(w);
    }
}

void coord_acc_fail(struct coord *co, const struct dtx_err *err)
{
    while (!list_empty(&co->acc.waits)) {
        struct acc_wait *w = container_of(co->acc.waits.next, struct acc_wait, link);

        list_remove(&w->link);
        if (err)
            httpd_reply_error(w->req, err);
        free(w->body);
        free(w);
    }
}

static void promise_ballot(struct coord *co, struct httpd_req *req, const char *gtid,
                           const struct ballot *b)
{
    struct tx *tx = tx_of(co, gtid);
    struct acc_state st;
    struct drec rec;
    cJSON *o;
    bool grant;

    state_of(co, gtid, &st);
    grant = ballot_cmp(b, &st.promised) > 0;
    if (grant) {
        struct acc_note *note = note_of(co, gtid, true);

        note->promised = *b;
        if (tx)
            tx3pc_promise(tx, b);
        st.promised = *b;
        log_info("transaction %s: promised ballot (%" PRIu64 ", %s) to a recovery leader", gtid,
                 b->counter, b->node);
    }
    o = state_json(&st);
    jsonx_add_bool(o, "granted", grant || ballot_cmp(b, &st.promised) == 0);
    rec = (struct drec){.type = DREC_PROMISE,
                        .gtid = gtid,
                        .wall_us = ev_wall_us(),
                        .counter = b->counter,
                        .node = b->node};
    answer_durable(co, req, grant ? &rec : NULL, o);
}

static void accept_ballot(struct coord *co, struct httpd_req *req, const char *gtid,
                          const struct ballot *b, enum ballot_value v)
{
    struct tx *tx = tx_of(co, gtid);
    struct acc_state st;
    struct drec rec;
    cJSON *o = jsonx_new_object();
    bool ok;

    state_of(co, gtid, &st);
    ok = ballot_cmp(b, &st.promised) >= 0;
    if (ok) {
        struct acc_note *note = note_of(co, gtid, true);

        note->promised = *b;
        note->accepted = *b;
        note->value = v;
        if (tx)
            tx3pc_promise(tx, b);
        st.promised = *b;
    }
    jsonx_add_bool(o, "accepted", ok);
    jsonx_add(o, "promised", ballot_json(&st.promised));
    rec = (struct drec){.type = DREC_ACCEPT,
                        .gtid = gtid,
                        .wall_us = ev_wall_us(),
                        .counter = b->counter,
                        .node = b->node,
                        .value = (uint8_t)v};
    answer_durable(co, req, ok ? &rec : NULL, o);
}

void coord_acc_learned(struct coord *co, const char *gtid, enum ballot_value v)
{
    struct txent *e = txtab_find(&co->tab, gtid);
    enum tx_outcome o;

    if (!e || tx_protocol(e->tx) != 3)
        return;
    o = tx_outcome(e->tx);
    if ((o == TXO_COMMITTED && v == BV_ABORT) || (o == TXO_ABORTED && v == BV_COMMIT))
        log_error("transaction %s: the participants report %s, but this coordinator %s it: a "
                  "protocol violation (see docs/protocol.md)",
                  gtid, ballot_value_name(v), o == TXO_COMMITTED ? "committed" : "aborted");
    tx_step(e->tx, v == BV_COMMIT ? TXE_LEARNED_COMMIT : TXE_LEARNED_ABORT, NULL);
}

/* Reads {"gtid", "ballot"?, "value"?}. */
static int read_body(struct httpd_req *req, bool ballot, bool value, char *gtid, struct ballot *b,
                     enum ballot_value *v, struct dtx_err *err)
{
    const char *body;
    cJSON *root = NULL;
    size_t len;
    int rc = httpd_req_json_body(req, &body, &len, err);

    if (rc == 0)
        rc = jsonx_parse(body, len, &root, err);
    if (rc == 0)
        rc = ballot_read_request(root, ballot, value, gtid, b, v, err);
    cJSON_Delete(root);
    return rc;
}

/*
 * Whether gtid is this node's: a coordinator is the acceptor "c:<node>" of
 * its own transactions only. Another node answering as that acceptor (a
 * participant that reaches it through the one URL it was given) would be an
 * empty acceptor that lets a round reach a majority without the real one's
 * acceptance. Otherwise req is answered 409.
 */
static bool own_gtid(struct coord *co, struct httpd_req *req, const char *gtid)
{
    const char *self = coord_config(co)->node_id;
    char node[DTX_NAME_MAX + 1] = "";

    gid_parse_gtid(gtid, node, NULL, NULL);
    if (strcmp(node, self) == 0)
        return true;
    httpd_reply_errorf(req, DTX_ECONFLICT,
                       "transaction %s belongs to coordinator node '%s', not to this one "
                       "('%s'): a coordinator is an acceptor of its own node's transactions "
                       "only",
                       gtid, node, self);
    return false;
}

bool coord_acc_serves(const char *method, const char *rest)
{
    if (strcmp(method, "GET") == 0)
        return rest[0] == '/' && gid_parse_gtid(rest + 1, NULL, NULL, NULL);
    return strcmp(method, "POST") == 0 &&
           (strcmp(rest, "/promise") == 0 || strcmp(rest, "/accept") == 0 ||
            strcmp(rest, "/decide") == 0);
}

void coord_acc_http(struct coord *co, struct httpd_req *req, const char *method, const char *rest)
{
    char gtid[DTX_GTID_MAX + 1];
    struct ballot b = {0};
    enum ballot_value v = BV_NONE;
    struct acc_state st;
    struct dtx_err err;
    cJSON *o;

    dtx_err_clear(&err);
    if (!coord_acc_serves(method, rest)) {
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "use POST /v1/peer/3pc/promise|accept|decide or GET "
                           "/v1/peer/3pc/{gtid}");
        return;
    }
    if (strcmp(method, "GET") == 0)
        snprintf(gtid, sizeof(gtid), "%s", rest + 1);
    else if (read_body(req, strcmp(rest, "/decide") != 0, strcmp(rest, "/promise") != 0, gtid, &b,
                       &v, &err) < 0) {
        httpd_reply_error(req, &err);
        return;
    }
    if (!own_gtid(co, req, gtid))
        return;
    if (strcmp(method, "GET") == 0) {
        state_of(co, gtid, &st);
        o = state_json(&st);
        httpd_reply_json(req, 200, jsonx_print(o));
        cJSON_Delete(o);
    } else if (strcmp(rest, "/promise") == 0) {
        promise_ballot(co, req, gtid, &b);
    } else if (strcmp(rest, "/accept") == 0) {
        accept_ballot(co, req, gtid, &b, v);
    } else {
        log_info("transaction %s: the participants decided %s", gtid, ballot_value_name(v));
        coord_acc_learned(co, gtid, v);
        httpd_reply_json(req, 200, xstrdup("{\"ok\":true}"));
    }
}

void coord_acc_replay(struct coord *co, const struct drec *rec)
{
    struct acc_note *note = note_of(co, rec->gtid, true);
    struct ballot b = {.counter = rec->counter};

    snprintf(b.node, sizeof(b.node), "%s", rec->node ? rec->node : "");
    if (ballot_cmp(&b, &note->promised) > 0)
        note->promised = b;
    if (rec->type == DREC_ACCEPT) {
        note->accepted = b;
        note->value = (enum ballot_value)rec->value;
    }
}

void coord_acc_encode(const struct coord *co, struct buf *snap)
{
    struct hmap_iter it;
    struct drec rec;

    for (struct hmap_node *n = hmap_first(&co->acc.by_gtid, &it); n;
         n = hmap_next(&co->acc.by_gtid, &it)) {
        const struct acc_note *note = container_of(n, const struct acc_note, node);

        rec = (struct drec){.type = DREC_PROMISE,
                            .gtid = note->gtid,
                            .counter = note->promised.counter,
                            .node = note->promised.node};
        drec_encode(snap, &rec);
        if (note->value != BV_NONE) {
            rec = (struct drec){.type = DREC_ACCEPT,
                                .gtid = note->gtid,
                                .counter = note->accepted.counter,
                                .node = note->accepted.node,
                                .value = (uint8_t)note->value};
            drec_encode(snap, &rec);
        }
    }
}

void coord_acc_apply(struct coord *co, struct txent *e)
{
    struct acc_note *note = note_of(co, tx_gtid(e->tx), false);

    if (note && tx_protocol(e->tx) == 3)
        tx3pc_promise(e->tx, &note->promised);
}
