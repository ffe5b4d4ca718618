/*
 * agent.c - the participant agent: turns what coordinators ask into
 * events for this shard's branches (branch.c), refuses up front what
 * cannot be done (a malformed gtid, no prepared-transaction slot, too many
 * open sessions, a shutdown), and lets recovery (recovery.c) and operators
 * (agent_http.c) finish prepared branches through the same machine.
 *
 * Prepared-transaction slots: PostgreSQL fails PREPARE TRANSACTION when
 * max_prepared_transactions are in use, after the branch's ops ran and
 * took their locks. The agent counts the slots in use (its own branches,
 * plus what the server reports as prepared by others, refreshed every
 * SLOTS_REFRESH_MS) and refuses a prepare that might not find one,
 * keeping prepared_headroom slots free.
 *
 * Thread model: the participant's event-loop thread only.
 */
#include "agent_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* How often the prepared-transaction slots in use are counted again. */
#define SLOTS_REFRESH_MS 2000

static void env_send(void *ctx, struct peer *peer, cJSON *m, const struct buf *trailer)
{
    peer_send(ctx, peer, m, trailer);
}

/* ---- refusals ------------------------------------------------------------------------ */

/* Answers a prepare or one_phase that will not run: a no vote, or an aborted outcome. */
static void refuse_with(struct agent *ag, struct peer *peer, const struct msg *m, int code,
                        const char *why)
{
    bool one_phase = m->type == MSG_ONE_PHASE;
    cJSON *r = msg_new(one_phase ? MSG_OUTCOME : MSG_VOTE, m->gtid);
    struct dtx_err err;

    dtx_err_clear(&err);
    dtx_err_set(&err, code, "%s", why);
    snprintf(err.shard, sizeof(err.shard), "%s", ag->cfg->name);
    jsonx_add_str(r, one_phase ? "outcome" : "vote", one_phase ? "aborted" : "no");
    msg_add_error(r, &err);
    peer_send(ag, peer, r, NULL);
}

static void refuse(struct agent *ag, struct peer *peer, const struct msg *m, const char *why)
{
    refuse_with(ag, peer, m, DTX_EVOTENO, why);
}

static void refuse_exec(struct agent *ag, struct peer *peer, const char *gtid, int code,
                        const char *why)
{
    cJSON *m = msg_new(MSG_EXECUTED, gtid);
    struct dtx_err err;

    dtx_err_clear(&err);
    dtx_err_set(&err, code, "%s", why);
    snprintf(err.shard, sizeof(err.shard), "%s", ag->cfg->name);
    msg_add_error(m, &err);
    peer_send(ag, peer, m, NULL);
}

/* ---- prepared-transaction slots ------------------------------------------------------- */

static void on_slots(void *arg, int rc, const struct rm_inspection *ins, const struct dtx_err *err)
{
    struct agent *ag = arg;
    int64_t tracked = 0;

    (void)err;
    if (rc == 0) {
        for (size_t i = 0; i < ins->n; i++) {
            char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];
            const struct branch *b = gid_parse(ins->branches[i].p.gid, gtid, shard)
                                         ? branch_find(&ag->branches, gtid)
                                         : NULL;

            tracked += b && branch_holds_slot(b);
        }
        ag->max_prepared = ins->max_prepared;
        ag->untracked_prepared = ins->prepared_total - tracked;
    }
    ev_timer_start(ag->loop, &ag->slots_timer, SLOTS_REFRESH_MS);
}

static void on_slots_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct agent *ag = t->data;

    (void)loop;
    rm_inspect(ag->rm, false, on_slots, ag); /* counts only: no locks */
}

/*
 * True when one more branch might not find a prepared-transaction slot:
 * PostgreSQL would fail its PREPARE ("maximum number of prepared
 * transactions reached") after its ops ran and its locks were taken. It is
 * refused up front instead, keeping prepared_headroom slots free.
 */
static bool no_prepared_slot(const struct agent *ag, char *why, size_t n)
{
    return branches_no_slot(&ag->branches, ag->max_prepared, ag->untracked_prepared,
                            ag->cfg->prepared_headroom, why, n);
}

/* ---- coordinators' messages ------------------------------------------------------------- */

/* prepare / one_phase of an interactive transaction: end its open branch here. */
static void end_interactive(struct agent *ag, struct peer *peer, const struct msg *m,
                            struct branch *b)
{
    bool one_phase = m->type == MSG_ONE_PHASE;
    char *peers = m->three_pc && m->peers ? jsonx_print(m->peers) : NULL;
    struct branch_evarg a = {
        .peer = peer, .timeout_ms = m->timeout_ms, .three_pc = m->three_pc, .peers = peers};
    char why[300];

    if (!b || !branch_is_interactive(b) || !branch_accepts(b, BE_END_PREPARE)) {
        /* Its writes are gone with it (a restart, an idle rollback): never vote read-only. */
        refuse(ag, peer, m,
               b ? "the branch is busy"
                 : "the open transaction of this branch is gone (the "
                   "participant restarted or rolled it back)");
    } else if (!one_phase && no_prepared_slot(ag, why, sizeof(why))) {
        refuse_with(ag, peer, m, DTX_EBUSY, why);
        branch_step(b, BE_NO_SLOT, NULL);
    } else {
        branch_step(b, one_phase ? BE_END_COMMIT : BE_END_PREPARE, &a);
    }
    free(peers);
}

static void on_prepare(struct agent *ag, struct peer *peer, struct msg *m)
{
    struct branch *b = branch_find(&ag->branches, m->gtid);
    bool one_phase = m->type == MSG_ONE_PHASE;
    struct branch_evarg a = {.peer = peer, .timeout_ms = m->timeout_ms};
    uint64_t epoch, seq;
    char why[300], *peers = NULL;

    if (!gid_parse_gtid(m->gtid, NULL, &epoch, &seq)) {
        refuse(ag, peer, m, "malformed gtid");
        return;
    }
    if (m->interactive) {
        end_interactive(ag, peer, m, b);
        return;
    }
    if (b) {
        log_warn("transaction %s: duplicate %s ignored", m->gtid,
                 one_phase ? "one_phase" : "prepare");
        return;
    }
    if (!one_phase && no_prepared_slot(ag, why, sizeof(why))) {
        refuse_with(ag, peer, m, DTX_EBUSY, why);
        return;
    }
    if (ag->stopping) {
        refuse(ag, peer, m, "the participant is shutting down");
        return;
    }
    a.ops = cJSON_DetachItemFromObjectCaseSensitive(m->root, "ops");
    a.three_pc = m->three_pc && !one_phase;
    a.peers = a.three_pc ? peers = jsonx_print(m->peers) : NULL;
    branch_step(branch_new(&ag->branches, m->gtid, peer), one_phase ? BE_ONE_PHASE : BE_PREPARE,
                &a);
    free(peers);
}

/* exec: run ops in the transaction's open branch here, beginning it if new. */
static void on_exec(struct agent *ag, struct peer *peer, struct msg *m)
{
    struct branch *b = branch_find(&ag->branches, m->gtid);
    struct branch_evarg a = {
        .peer = peer,
        .timeout_ms = m->timeout_ms,
        .idle_ms = m->idle_ms,
        .open_wait_ms = ag->cfg->open_wait_ms,
        .three_pc = m->three_pc,
    };
    char why[200];

    if (b && (!branch_is_interactive(b) || !branch_accepts(b, BE_EXEC))) {
        refuse_exec(ag, peer, m->gtid, DTX_ESTATE, "the branch is busy or no longer open");
        return;
    }
    if (!b && ag->stopping) {
        refuse_exec(ag, peer, m->gtid, DTX_ESHUTDOWN, "the participant is shutting down");
        return;
    }
    if (!b && ag->branches.sessions >= ag->cfg->max_open_branches) {
        snprintf(why, sizeof(why),
                 "shard '%s' has %zu interactive transactions open, its limit "
                 "(max_open_branches); try again shortly",
                 ag->cfg->name, ag->branches.sessions);
        refuse_exec(ag, peer, m->gtid, DTX_EBUSY, why);
        return;
    }
    a.ops = cJSON_DetachItemFromObjectCaseSensitive(m->root, "ops");
    branch_step(b ? b : branch_new(&ag->branches, m->gtid, peer), BE_EXEC, &a);
}

/* Commit or abort of gtid's branch here, in memory or not (idempotent by gid and xid). */
static void finish(struct agent *ag, struct peer *peer, const char *gtid, uint64_t xid,
                   const char *db, bool commit, struct httpd_req *req)
{
    struct branch *b = branch_find(&ag->branches, gtid);
    struct branch_evarg a = {.peer = peer, .xid = xid, .db = db, .req = req};

    branch_step(b ? b : branch_new(&ag->branches, gtid, peer), commit ? BE_COMMIT : BE_ABORT, &a);
}

/*
 * Three-phase commit: every participant acknowledged gtid's decision, so
 * this shard's acceptor state of it may go (msg.h, forget). Only the
 * coordinator that issued gtid may say so.
 */
static void forget_acceptors(struct agent *ag, const struct peer *peer, const char *gtid)
{
    char node[DTX_NAME_MAX + 1];

    if (!gid_parse_gtid(gtid, node, NULL, NULL) || strcmp(node, peer->node) != 0) {
        log_warn("coordinator '%s' asked to forget the acceptor state of '%s', which it did "
                 "not issue; ignored",
                 peer->node, gtid);
        return;
    }
    rm_forget_acceptors(ag->rm, gtid);
}

void agent_on_message(struct agent *ag, struct peer *peer, struct msg *m)
{
    /* what this message's lines are about, and what a branch it begins remembers */
    struct log_ctx prev = log_ctx_set((struct log_ctx){
        .gtid = m->gtid, .request_id = m->request_id, .traceparent = m->traceparent});

    switch (m->type) {
    case MSG_PREPARE:
    case MSG_ONE_PHASE:
        on_prepare(ag, peer, m);
        break;
    case MSG_COMMIT:
    case MSG_ABORT:
        if (m->three_pc)
            terminate_decided(ag->term, m->gtid, m->type == MSG_COMMIT ? BV_COMMIT : BV_ABORT);
        finish(ag, peer, m->gtid, m->xid, m->db, m->type == MSG_COMMIT, NULL);
        break;
    case MSG_ACCEPT:
        terminate_on_accept(ag->term, peer, m);
        break;
    case MSG_EXEC:
        on_exec(ag, peer, m);
        break;
    case MSG_FORGET:
        forget_acceptors(ag, peer, m->gtid);
        break;
    default:
        log_warn("coordinator sent an unexpected message");
        break;
    }
    log_ctx_set(prev);
}

void agent_on_hello(struct agent *ag, struct peer *peer)
{
    (void)peer;
    recovery_kick(ag->recovery); /* it may have restarted: settle what it left prepared */
}

void agent_on_peer_lost(struct agent *ag, struct peer *peer)
{
    branches_peer_lost(&ag->branches, peer);
    terminate_peer_lost(ag->term, peer);
}

void agent_finish_for(struct agent *ag, const char *gtid, uint64_t xid, bool commit,
                      struct httpd_req *req)
{
    finish(ag, NULL, gtid, xid, NULL, commit, req);
}

/* ---- recovery ------------------------------------------------------------------------------ */

/* Recovery must not touch a branch the agent is running or finishing itself. */
static bool recovery_busy(void *arg, const char *gtid)
{
    struct agent *ag = arg;
    const struct branch *b = branch_find(&ag->branches, gtid);

    return b && branch_is_busy(b);
}

static void recovery_finish(void *arg, const char *gtid, uint64_t xid, const char *db, bool commit)
{
    finish(arg, NULL, gtid, xid, db, commit, NULL);
}

static void recovery_three_pc(void *arg, const char *gtid)
{
    struct agent *ag = arg;

    terminate_watch(ag->term, gtid, NULL);
}

static void env_three_pc_prepared(void *ctx, const char *gtid, const char *peers)
{
    struct agent *ag = ctx;

    terminate_watch(ag->term, gtid, peers);
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

struct agent *agent_new(const struct agent_config *cfg, struct ev_loop *loop, struct rm *rm)
{
    struct agent *ag = xcalloc(1, sizeof(*ag));
    struct recovery_ops rops = {
        .busy = recovery_busy, .finish = recovery_finish, .three_pc = recovery_three_pc, .arg = ag};
    struct dtx_err err;

    ag->cfg = cfg;
    ag->loop = loop;
    ag->rm = rm;
    ag->dialer = (struct dialer){.loop = loop, .tls = &cfg->tls};
    dtx_err_clear(&err);
    if (resolver_new(&ag->dialer.resolver, loop, &err) < 0)
        log_error("%s: coordinators named by a host name cannot be reached", err.msg);
    ag->env = (struct branch_env){
        .loop = loop,
        .rm = rm,
        .shard = cfg->name,
        .send = env_send,
        .finished_for = agent_http_finished,
        .three_pc_prepared = env_three_pc_prepared,
        .ctx = ag,
    };
    branches_init(&ag->branches, &ag->env);
    list_init(&ag->peers);
    list_init(&ag->admin_calls);
    ag->term = terminate_new(ag);
    ag->recovery = recovery_new(&ag->dialer, cfg, rm, &rops);
    ev_timer_init(&ag->slots_timer, on_slots_timer, ag);
    ev_timer_start(loop, &ag->slots_timer, 0);
    return ag;
}

void agent_flush_peers(void *arg)
{
    struct agent *ag = arg;

    for (struct list_node *pos = ag->peers.next; pos != &ag->peers; pos = pos->next)
        stream_flush_sync(container_of(pos, struct peer, link)->st, 1000);
}

void agent_begin_shutdown(struct agent *ag)
{
    ag->stopping = true;
}

bool agent_idle(const struct agent *ag)
{
    return ag->branches.running == 0;
}

void agent_free(struct agent *ag)
{
    if (!ag)
        return;
    ev_timer_stop(ag->loop, &ag->slots_timer);
    recovery_free(ag->recovery);
    while (!list_empty(&ag->peers))
        peer_free(container_of(ag->peers.next, struct peer, link));
    terminate_free(ag->term); /* after the peers: a closing stream tells it */
    branches_release(&ag->branches);
    rm_free(ag->rm); /* drops its jobs without calling back */
    agent_http_release(ag);
    resolver_free(ag->dialer.resolver);
    free(ag);
}
