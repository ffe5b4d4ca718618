/*
 * links.c - the coordinator's side of its participant links (one pc.h
 * link per shard): every message a participant sends becomes a protocol
 * event for its transaction, and a link going down or coming back becomes
 * TXE_UNAVAILABLE or TXE_RESEND for the transactions the protocol says it
 * concerns (tx_branch_in_flight, tx_branch_lost).
 *
 * A yes vote for a transaction not in memory is answered from what is
 * decided about its gtid (coord_decision): presumed abort for one of ours
 * that has no record; an unknown one is left alone and logged.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/msg.h"
#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The event a participant's message stands for (TXE_NONE: not one the coordinator takes). */
static enum tx_event event_of(const struct msg *m)
{
    switch (m->type) {
    case MSG_VOTE:
        return m->vote == VOTE_YES  ? TXE_VOTE_YES
               : m->vote == VOTE_NO ? TXE_VOTE_NO
                                    : TXE_VOTE_READONLY;
    case MSG_OUTCOME:
        return m->outcome == OUTCOME_COMMITTED ? TXE_COMMITTED_1PC
               : m->outcome == OUTCOME_ABORTED ? TXE_ABORTED_1PC
                                               : TXE_UNAVAILABLE;
    case MSG_ACK:
        return TXE_ACK;
    case MSG_EXECUTED:
        return m->err.code ? TXE_EXEC_FAILED : TXE_EXECUTED;
    case MSG_ACCEPTED:
        return m->ok ? TXE_ACCEPTED : TXE_REJECTED;
    default:
        return TXE_NONE;
    }
}

/* A yes vote for a transaction not in memory: tell the shard what is decided, if anything. */
static void vote_for_unknown(struct coord *co, int shard, const char *gtid)
{
    uint64_t xid;
    enum dtx_decision d = coord_decision(co, gtid, shard, &xid);
    cJSON *m;
    char *s;

    if (d != DTX_DEC_ABORT) {
        log_warn("shard '%s' voted yes for transaction %s, which this coordinator has no record "
                 "of (decision: %s); left to recovery",
                 co->shard_names[shard], gtid, dtx_decision_name(d));
        return;
    }
    log_info("shard '%s' voted yes for unknown transaction %s: telling it to abort",
             co->shard_names[shard], gtid);
    m = msg_new(MSG_ABORT, gtid);
    s = jsonx_print(m);
    coord_link_send(co, shard, s, strlen(s));
    free(s);
    cJSON_Delete(m);
}

static void on_frame(void *arg, int shard, const char *data, size_t len)
{
    struct coord *co = arg;
    struct tx_evarg a = {0};
    struct dtx_err err;
    struct txent *e;
    struct msg m;
    enum tx_event ev;

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) < 0) {
        log_warn("shard '%s' sent a malformed message: %s", co->shard_names[shard], err.msg);
        return;
    }
    ev = event_of(&m);
    e = txtab_find(&co->tab, m.gtid);
    if (ev == TXE_NONE) {
        log_warn("shard '%s' sent an unexpected message", co->shard_names[shard]);
    } else if (!e) {
        if (ev == TXE_VOTE_YES)
            vote_for_unknown(co, shard, m.gtid);
    } else if (!(a.b = tx_branch_on(e->tx, shard))) {
        log_warn("shard '%s' sent a message about %s, which has no branch there",
                 co->shard_names[shard], m.gtid);
    } else {
        a.xid = m.xid;
        a.db = m.db;
        a.ack = m.type != MSG_ACK                ? TX_ACK_NONE
                : m.outcome == OUTCOME_COMMITTED ? TX_ACK_COMMITTED
                : m.outcome == OUTCOME_ABORTED   ? TX_ACK_ABORTED
                                                 : TX_ACK_UNKNOWN;
        a.err = &m.err;
        snprintf(m.err.shard, sizeof(m.err.shard), "%s", co->shard_names[shard]);
        a.results = m.trailer_len ? m.trailer : NULL;
        a.results_len = m.trailer_len;
        tx_step(e->tx, ev, &a);
    }
    msg_release(&m);
}

struct link_event {
    int shard;
};

static void link_lost(void *arg, struct txent *e)
{
    const struct link_event *le = arg;
    struct tx_evarg a = {.b = tx_branch_on(e->tx, le->shard)};

    if (a.b && tx_branch_in_flight(e->tx, a.b))
        tx_step(e->tx, TXE_UNAVAILABLE, &a);
}

static void on_link_down(void *arg, int shard, const char *why)
{
    struct coord *co = arg;
    struct link_event le = {.shard = shard};

    log_warn("lost participant of shard '%s': %s", co->shard_names[shard], why);
    txtab_each_live(&co->tab, link_lost, &le);
}

static void link_back(void *arg, struct txent *e)
{
    const struct link_event *le = arg;
    struct tx_branch *b = tx_branch_on(e->tx, le->shard);

    if (b && tx_branch_lost(e->tx, b))
        tx_step(e->tx, TXE_RESEND, NULL);
}

static void on_link_up(void *arg, int shard)
{
    struct coord *co = arg;
    struct link_event le = {.shard = shard};

    log_info("participant of shard '%s' connected", co->shard_names[shard]);
    if (!co->accepted_from[shard])
        co->accepted_from[shard] = co->epoch;
    txtab_each_live(&co->tab, link_back, &le);
}

static void on_behind(void *arg, int shard, uint64_t seen)
{
    coord_move_past(arg, shard, seen);
}

void coord_links_start(struct coord *co)
{
    const struct coord_config *cfg = co->cfg;
    struct pc_run run = {
        .node_id = cfg->node_id,
        .epoch = co->epoch,
        .boot = co->boot,
        .peer_token = cfg->peer_token.value,
    };
    struct pc_cbs cbs = {
        .on_frame = on_frame,
        .on_up = on_link_up,
        .on_down = on_link_down,
        .on_behind = on_behind,
        .arg = co,
    };

    co->links = xcalloc(cfg->nshards, sizeof(*co->links));
    co->accepted_from = xcalloc(cfg->nshards, sizeof(*co->accepted_from));
    for (size_t i = 0; i < cfg->nshards; i++)
        co->links[i] = pc_new(&co->dialer, (int)i, &cfg->shards[i], &run, &cbs);
}

void coord_links_set_epoch(struct coord *co)
{
    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_set_epoch(co->links[i], co->epoch);
}

void coord_auth_reloaded(struct coord *co)
{
    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_set_token(co->links[i], co->cfg->peer_token.value);
}

void coord_links_free(struct coord *co)
{
    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_free(co->links[i]);
    free(co->links);
    co->links = NULL;
    free(co->accepted_from);
    co->accepted_from = NULL;
}

bool coord_links_tried(const struct coord *co)
{
    for (size_t i = 0; i < co->cfg->nshards; i++) {
        if (!pc_tried(co->links[i]))
            return false;
    }
    return true;
}

bool coord_link_up(const struct coord *co, int shard)
{
    return co->links && pc_is_up(co->links[shard]);
}

bool coord_link_takes_forget(const struct coord *co, int shard)
{
    return co->links && pc_takes_forget(co->links[shard]);
}

int coord_link_send(struct coord *co, int shard, const char *data, size_t len)
{
    return co->links ? pc_send(co->links[shard], data, len) : DTX_EUNAVAIL;
}

const char *coord_link_state(const struct coord *co, int shard)
{
    return pc_state(co->links[shard]);
}

const char *coord_link_error(const struct coord *co, int shard)
{
    return pc_is_up(co->links[shard]) ? "" : pc_last_error(co->links[shard]);
}

void coord_flush_links(void *arg)
{
    struct coord *co = arg;

    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_flush_sync(co->links[i]);
}
