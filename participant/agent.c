/*
 * agent.c - the participant's side of the commit protocol.
 *
 * A branch is this shard's part of one global transaction (gid
 * "dtx:<gtid>:<shard>"). Its life here:
 *
 *   prepare   --> RUNNING --prepared--> PREPARED (vote yes) --commit/abort--> FINISHING --> gone
 *                         --read-only or failed--> gone (vote readonly / no)
 *   one_phase --> RUNNING --> gone (outcome committed / aborted / unknown)
 *   abort while RUNNING: the running statement is cancelled; when the run
 *   ends, a prepared result is rolled back; then the abort is acknowledged.
 *
 * Commit and abort are idempotent and need no branch in memory: after a
 * restart the agent knows nothing, and COMMIT/ROLLBACK PREPARED by gid
 * (with the xid the coordinator logged) does the right thing. Every commit
 * and abort message is acknowledged once its outcome is known.
 *
 * Replies go back on the stream the request came on; if that stream closed,
 * on the newest stream from a coordinator; if there is none, they are
 * dropped (the coordinator re-drives: a missing vote times out into an
 * abort, a missing ack makes it resend phase 2).
 *
 * Thread model: the participant's event-loop thread only.
 */
#include "dtx/agent.h"
#include "dtx/buf.h"
#include "dtx/failpoint.h"
#include "dtx/hmap.h"
#include "dtx/jsonx.h"
#include "dtx/list.h"
#include "dtx/log.h"
#include "dtx/msg.h"
#include "dtx/recovery.h"
#include "dtx/stream.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deadline of a branch whose prepare message named no timeout. */
#define BRANCH_DEFAULT_TIMEOUT_MS 60000
/* How often the prepared-transaction slots in use are counted again. */
#define SLOTS_REFRESH_MS 2000

struct peer {
    struct list_node link;
    struct agent *ag;
    struct stream *st;
    struct httpd_upgraded *up;
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch;
    bool hello;
};

/*
 * AB_OPEN: an interactive branch between calls, its transaction open on a
 * connection of its own (b->session); it runs again (AB_RUNNING) for each
 * exec, and for the prepare, one_phase or abort that ends it.
 */
enum branch_state { AB_RUNNING, AB_OPEN, AB_PREPARED, AB_FINISHING };

struct branch {
    struct hmap_node node;
    struct agent *ag;
    struct ev_timer deadline; /* a RUNNING branch past this is cancelled */
    char gtid[DTX_GTID_MAX + 1];
    char gid[DTX_GID_MAX + 1];
    enum branch_state state;
    bool one_phase;
    bool abort_requested;
    bool interactive;
    bool preparing; /* counted in ag->preparing: its run ends in PREPARE TRANSACTION */
    struct rm_run *run;
    struct rm_run *session; /* interactive: the open transaction, until it ends */
    struct peer *peer;
    uint64_t xid;
    uint32_t deadline_ms; /* interactive: the transaction's idle limit */
};

/*
 * One COMMIT/ROLLBACK PREPARED being carried out, and who to acknowledge.
 * It may outlive that coordinator's stream (a finish retries for as long
 * as PostgreSQL is down), so the agent keeps every one on a list and
 * forget_peer() clears the peer of those it was to acknowledge.
 */
struct finishing {
    struct list_node link;
    struct agent *ag;
    char gtid[DTX_GTID_MAX + 1];
    struct peer *peer;
    struct httpd_req *req; /* an operator's request (admin), answered instead of an ack */
    bool commit;
};

struct agent_metrics {
    uint64_t votes_yes, votes_no, votes_readonly;
    uint64_t one_phase_committed, one_phase_aborted, one_phase_unknown;
    uint64_t committed, rolled_back, heuristic;
};

struct agent {
    const struct agent_config *cfg;
    struct ev_loop *loop;
    struct rm *rm;
    struct recovery *recovery;
    struct hmap branches;
    struct list_node peers;
    struct list_node finishes;
    struct list_node admin_calls; /* struct admin_call waiting for the resource manager */
    size_t running, prepared, finishing;
    size_t preparing; /* running branches that will end in PREPARE TRANSACTION */
    size_t sessions;  /* interactive branches holding a connection */
    /* prepared-transaction slots (refreshed every few seconds from the database) */
    int64_t max_prepared;
    int64_t untracked_prepared; /* prepared in the server, not by a branch in memory */
    struct ev_timer slots_timer;
    bool stopping;
    struct agent_metrics m;
};

/* ---- sending ------------------------------------------------------------- */

static struct peer *reply_peer(struct agent *ag, struct peer *preferred)
{
    struct list_node *pos;

    if (preferred)
        return preferred;
    for (pos = ag->peers.prev; pos != &ag->peers; pos = pos->prev) {
        struct peer *p = container_of(pos, struct peer, link);

        if (p->hello)
            return p;
    }
    return NULL;
}

/*
 * Sends m (and deletes it) to the coordinator, followed by a RESULTS
 * trailer if given; dropped with a log line if no coordinator is connected.
 */
static void send_msg_with(struct agent *ag, struct peer *preferred, cJSON *m,
                          const struct buf *trailer)
{
    struct peer *p = reply_peer(ag, preferred);
    char *s = jsonx_print(m);

    if (p && trailer)
        stream_send2(p->st, s, strlen(s), buf_head(trailer), buf_avail(trailer));
    else if (p)
        stream_send(p->st, s, strlen(s));
    else
        log_warn("no coordinator connected: dropped %s", s);
    free(s);
    cJSON_Delete(m);
}

static void send_msg(struct agent *ag, struct peer *preferred, cJSON *m)
{
    send_msg_with(ag, preferred, m, NULL);
}

static void send_ack(struct agent *ag, struct peer *peer, const char *gtid, enum rm_outcome outcome,
                     const struct dtx_err *err)
{
    cJSON *m = msg_new(MSG_ACK, gtid);

    jsonx_add_str(m, "outcome",
                  msg_outcome_name(outcome == RM_COMMITTED ? OUTCOME_COMMITTED : OUTCOME_ABORTED));
    if (err && err->code)
        msg_add_error(m, err);
    send_msg(ag, peer, m);
}

/* ---- branches ---------------------------------------------------------------- */

static struct branch *find_branch(struct agent *ag, const char *gtid)
{
    struct hmap_node *n = hmap_get(&ag->branches, gtid);

    return n ? container_of(n, struct branch, node) : NULL;
}

static void branch_set_state(struct branch *b, enum branch_state s)
{
    struct agent *ag = b->ag;

    ag->running -= b->state == AB_RUNNING;
    ag->prepared -= b->state == AB_PREPARED;
    ag->finishing -= b->state == AB_FINISHING;
    b->state = s;
    ag->running += s == AB_RUNNING;
    ag->prepared += s == AB_PREPARED;
    ag->finishing += s == AB_FINISHING;
}

static void set_preparing(struct branch *b, bool on)
{
    if (b->preparing != on)
        b->ag->preparing += on ? 1 : (size_t)-1;
    b->preparing = on;
}

static void branch_free(struct branch *b)
{
    struct agent *ag = b->ag;

    ev_timer_stop(ag->loop, &b->deadline);
    set_preparing(b, false);
    ag->running -= b->state == AB_RUNNING;
    ag->prepared -= b->state == AB_PREPARED;
    ag->finishing -= b->state == AB_FINISHING;
    hmap_remove(&ag->branches, &b->node);
    free(b);
}

static void admin_reply_finished(struct httpd_req *req, const char *gtid, const char *shard,
                                 bool commit, enum rm_outcome outcome, const struct dtx_err *err);

/*
 * A branch still running at twice its transaction's timeout (0: the
 * default) plus a second is cancelled; an open interactive one idle that
 * long is rolled back (on_branch_deadline).
 */
static void arm_deadline(struct branch *b, uint32_t timeout_ms)
{
    ev_timer_start(b->ag->loop, &b->deadline,
                   2 * (uint64_t)(timeout_ms ? timeout_ms : BRANCH_DEFAULT_TIMEOUT_MS) + 1000);
}

static void on_branch_deadline(struct ev_loop *loop, struct ev_timer *t);

/* A new RUNNING branch of transaction gtid on this shard. Aborts on allocation failure. */
static struct branch *branch_new(struct agent *ag, const char *gtid, struct peer *peer)
{
    struct branch *b = calloc(1, sizeof(*b));

    if (!b)
        abort();
    b->ag = ag;
    b->peer = peer;
    snprintf(b->gtid, sizeof(b->gtid), "%s", gtid);
    gid_format(b->gid, sizeof(b->gid), gtid, ag->cfg->name);
    hmap_put(&ag->branches, &b->node, b->gtid);
    b->state = AB_RUNNING;
    ag->running++;
    ev_timer_init(&b->deadline, on_branch_deadline, b);
    return b;
}

/* ---- phase 2 ---------------------------------------------------------------------- */

static void on_finished(void *arg, enum rm_outcome outcome, const struct dtx_err *err)
{
    struct finishing *f = arg;
    struct agent *ag = f->ag;
    struct branch *b = find_branch(ag, f->gtid);

    list_remove(&f->link);
    if (outcome == RM_COMMITTED)
        ag->m.committed++;
    else
        ag->m.rolled_back++;
    ag->m.heuristic += err && err->code;
    if (b && b->state == AB_FINISHING)
        branch_free(b);
    if (f->req) {
        admin_reply_finished(f->req, f->gtid, ag->cfg->name, f->commit, outcome, err);
    } else {
        if (outcome == RM_COMMITTED)
            fp_hit("agent.committed_before_ack");
        send_ack(ag, f->peer, f->gtid, outcome, err);
    }
    free(f);
}

static struct finishing *start_finish(struct agent *ag, struct peer *peer, const char *gtid,
                                      uint64_t xid, bool commit)
{
    struct finishing *f = calloc(1, sizeof(*f));
    char gid[DTX_GID_MAX + 1];

    if (!f)
        abort();
    f->ag = ag;
    f->peer = peer;
    f->commit = commit;
    snprintf(f->gtid, sizeof(f->gtid), "%s", gtid);
    list_insert_tail(&ag->finishes, &f->link);
    gid_format(gid, sizeof(gid), gtid, ag->cfg->name);
    rm_finish(ag->rm, gid, xid, commit, on_finished, f);
    return f;
}

/* ---- phase 1 ------------------------------------------------------------------------- */

static void send_outcome(struct branch *b, struct rm_result *res)
{
    struct agent *ag = b->ag;
    cJSON *m = msg_new(MSG_OUTCOME, b->gtid);
    enum msg_outcome o = res->outcome == RM_COMMITTED || res->outcome == RM_READONLY
                             ? OUTCOME_COMMITTED
                         : res->outcome == RM_UNKNOWN ? OUTCOME_UNKNOWN
                                                      : OUTCOME_ABORTED;

    ag->m.one_phase_committed += o == OUTCOME_COMMITTED;
    ag->m.one_phase_aborted += o == OUTCOME_ABORTED;
    ag->m.one_phase_unknown += o == OUTCOME_UNKNOWN;
    jsonx_add_str(m, "outcome", msg_outcome_name(o));
    if (o != OUTCOME_COMMITTED)
        msg_add_error(m, &res->err);
    send_msg_with(ag, b->peer, m, o == OUTCOME_COMMITTED ? &res->results : NULL);
}

static void send_vote(struct branch *b, struct rm_result *res)
{
    struct agent *ag = b->ag;
    cJSON *m = msg_new(MSG_VOTE, b->gtid);
    enum msg_vote v = res->outcome == RM_PREPARED   ? VOTE_YES
                      : res->outcome == RM_READONLY ? VOTE_READONLY
                                                    : VOTE_NO;

    ag->m.votes_yes += v == VOTE_YES;
    ag->m.votes_no += v == VOTE_NO;
    ag->m.votes_readonly += v == VOTE_READONLY;
    jsonx_add_str(m, "vote", msg_vote_name(v));
    if (v == VOTE_YES)
        msg_add_xid(m, res->xid);
    if (v == VOTE_NO)
        msg_add_error(m, &res->err);
    send_msg_with(ag, b->peer, m, v != VOTE_NO ? &res->results : NULL);
}

static void on_run_done(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct agent *ag = b->ag;

    b->run = NULL;
    ev_timer_stop(ag->loop, &b->deadline);
    set_preparing(b, false);
    if (b->one_phase) {
        send_outcome(b, res);
        branch_free(b);
    } else if (b->abort_requested && res->outcome == RM_PREPARED) {
        branch_set_state(b, AB_FINISHING);
        start_finish(ag, b->peer, b->gtid, res->xid, false);
    } else if (b->abort_requested) {
        send_ack(ag, b->peer, b->gtid, RM_ROLLED_BACK, NULL);
        branch_free(b);
    } else if (res->outcome == RM_PREPARED) {
        b->xid = res->xid;
        branch_set_state(b, AB_PREPARED);
        fp_hit("agent.prepared_before_vote");
        send_vote(b, res);
    } else {
        send_vote(b, res);
        branch_free(b);
    }
    buf_release(&res->results);
}

static void refuse_with(struct agent *ag, struct peer *peer, const struct msg *m, int code,
                        const char *why)
{
    cJSON *r = msg_new(m->type == MSG_ONE_PHASE ? MSG_OUTCOME : MSG_VOTE, m->gtid);
    struct dtx_err err;

    dtx_err_clear(&err);
    dtx_err_set(&err, code, "%s", why);
    snprintf(err.shard, sizeof(err.shard), "%s", ag->cfg->name);
    jsonx_add_str(r, m->type == MSG_ONE_PHASE ? "outcome" : "vote",
                  m->type == MSG_ONE_PHASE ? "aborted" : "no");
    msg_add_error(r, &err);
    send_msg(ag, peer, r);
}

static void refuse(struct agent *ag, struct peer *peer, const struct msg *m, const char *why)
{
    refuse_with(ag, peer, m, DTX_EVOTENO, why);
}

static void end_open(struct branch *b);

/*
 * A branch still running well past its transaction's timeout: the
 * coordinator has aborted it, or vanished without closing its stream (a
 * host that lost power). Either way nobody will ask for its vote, so it is
 * cancelled rather than left holding locks (and a pooled connection).
 */
static void on_branch_deadline(struct ev_loop *loop, struct ev_timer *t)
{
    struct branch *b = t->data;

    (void)loop;
    if (b->state == AB_OPEN) {
        log_warn("transaction %s: open branch idle past its deadline; rolling it back", b->gtid);
        end_open(b);
        return;
    }
    if (b->state != AB_RUNNING || !b->run || b->abort_requested)
        return;
    log_warn("transaction %s: branch still running past its deadline; cancelling it", b->gtid);
    b->abort_requested = !b->one_phase;
    rm_cancel(b->ag->rm, b->run);
}

/* ---- interactive branches ------------------------------------------------------------ */

static void send_executed(struct agent *ag, struct peer *peer, const char *gtid,
                          const struct dtx_err *err, struct buf *results)
{
    cJSON *m = msg_new(MSG_EXECUTED, gtid);

    if (err && err->code)
        msg_add_error(m, err);
    send_msg_with(ag, peer, m, err && err->code ? NULL : results);
}

static void refuse_exec(struct agent *ag, struct peer *peer, const char *gtid, int code,
                        const char *why)
{
    struct dtx_err err;

    dtx_err_clear(&err);
    dtx_err_set(&err, code, "%s", why);
    snprintf(err.shard, sizeof(err.shard), "%s", ag->cfg->name);
    send_executed(ag, peer, gtid, &err, NULL);
}

static void session_gone(struct branch *b)
{
    if (b->session) {
        b->session = NULL;
        b->ag->sessions--;
    }
}

static void on_rolled_back(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct agent *ag = b->ag;

    session_gone(b);
    if (b->abort_requested)
        send_ack(ag, b->peer, b->gtid, RM_ROLLED_BACK, NULL);
    buf_release(&res->results);
    branch_free(b);
}

/* Rolls an open interactive branch back; acknowledges the abort if one was asked for. */
static void end_open(struct branch *b)
{
    branch_set_state(b, AB_RUNNING);
    ev_timer_stop(b->ag->loop, &b->deadline);
    rm_end(b->ag->rm, b->session, RM_END_ROLLBACK, on_rolled_back, b);
}

static void on_exec_done(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct agent *ag = b->ag;

    b->run = NULL;
    ev_timer_stop(ag->loop, &b->deadline);
    if (res->outcome != RM_ACTIVE) {
        session_gone(b);
        send_executed(ag, b->peer, b->gtid, &res->err, NULL);
        if (b->abort_requested)
            send_ack(ag, b->peer, b->gtid, RM_ROLLED_BACK, NULL);
        branch_free(b);
    } else if (b->abort_requested) {
        end_open(b);
    } else {
        branch_set_state(b, AB_OPEN);
        send_executed(ag, b->peer, b->gtid, NULL, &res->results);
        /* the coordinator aborts it after idle_ms; this is for a coordinator that vanished */
        arm_deadline(b, b->deadline_ms);
    }
    buf_release(&res->results);
}

/* exec: run ops in the transaction's open branch here, beginning it if new. */
static void on_exec(struct agent *ag, struct peer *peer, struct msg *m)
{
    struct branch *b = find_branch(ag, m->gtid);
    char why[200];

    if (b && (!b->interactive || b->state != AB_OPEN)) {
        refuse_exec(ag, peer, m->gtid, DTX_ESTATE, "the branch is busy or no longer open");
        return;
    }
    if (!b && ag->stopping) {
        refuse_exec(ag, peer, m->gtid, DTX_ESHUTDOWN, "the participant is shutting down");
        return;
    }
    if (!b && ag->sessions >= ag->cfg->max_open_branches) {
        snprintf(why, sizeof(why),
                 "shard '%s' has %zu interactive transactions open, its limit "
                 "(max_open_branches); try again shortly",
                 ag->cfg->name, ag->sessions);
        refuse_exec(ag, peer, m->gtid, DTX_EBUSY, why);
        return;
    }
    if (!b) {
        b = branch_new(ag, m->gtid, peer);
        b->interactive = true;
        ag->sessions++;
    } else {
        branch_set_state(b, AB_RUNNING);
    }
    b->peer = peer;
    b->deadline_ms = m->idle_ms > m->timeout_ms ? m->idle_ms : m->timeout_ms;
    arm_deadline(b, b->deadline_ms);
    b->session =
        rm_exec(ag->rm, b->session, b->gid, cJSON_DetachItemFromObjectCaseSensitive(m->root, "ops"),
                m->timeout_ms, ag->cfg->open_wait_ms, on_exec_done, b);
    b->run = b->session;
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
            const struct branch *b =
                gid_parse(ins->branches[i].p.gid, gtid, shard) ? find_branch(ag, gtid) : NULL;

            tracked += b && (b->state == AB_PREPARED || b->state == AB_FINISHING);
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
    int64_t used = ag->untracked_prepared + (int64_t)(ag->prepared + ag->finishing + ag->preparing);
    int64_t limit = ag->max_prepared - (int64_t)ag->cfg->prepared_headroom;

    if (limit < 1)
        limit = 1; /* a headroom as large as the limit would refuse everything */
    if (ag->max_prepared <= 0 || used < limit)
        return false;
    snprintf(why, n,
             "shard '%s' has no prepared-transaction slot to spare (max_prepared_transactions "
             "%" PRId64 ", about %" PRId64 " in use or being prepared, %u kept free); try "
             "again shortly",
             ag->cfg->name, ag->max_prepared, used, ag->cfg->prepared_headroom);
    return true;
}

/* prepare / one_phase of an interactive transaction: end its open branch here. */
static void end_interactive(struct agent *ag, struct peer *peer, const struct msg *m,
                            struct branch *b)
{
    bool one_phase = m->type == MSG_ONE_PHASE;
    char why[300];

    if (!b || !b->interactive || b->state != AB_OPEN) {
        /* Its writes are gone with it (a restart, an idle rollback): never vote read-only. */
        refuse(ag, peer, m,
               b ? "the branch is busy"
                 : "the open transaction of this branch is gone (the "
                   "participant restarted or rolled it back)");
        return;
    }
    if (!one_phase && no_prepared_slot(ag, why, sizeof(why))) {
        refuse_with(ag, peer, m, DTX_EBUSY, why);
        end_open(b);
        return;
    }
    branch_set_state(b, AB_RUNNING);
    b->peer = peer;
    b->one_phase = one_phase;
    arm_deadline(b, m->timeout_ms);
    b->run = b->session;
    set_preparing(b, !one_phase);
    ag->sessions--; /* rm_end ends the session, whatever the outcome */
    b->session = NULL;
    rm_end(ag->rm, b->run, one_phase ? RM_END_COMMIT : RM_END_PREPARE, on_run_done, b);
}

static void on_prepare(struct agent *ag, struct peer *peer, struct msg *m)
{
    uint64_t epoch, seq;
    struct branch *b = find_branch(ag, m->gtid);
    char why[300];

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
                 m->type == MSG_ONE_PHASE ? "one_phase" : "prepare");
        return;
    }
    if (m->type == MSG_PREPARE && no_prepared_slot(ag, why, sizeof(why))) {
        refuse_with(ag, peer, m, DTX_EBUSY, why);
        return;
    }
    if (ag->stopping) {
        refuse(ag, peer, m, "the participant is shutting down");
        return;
    }
    b = branch_new(ag, m->gtid, peer);
    b->one_phase = m->type == MSG_ONE_PHASE;
    arm_deadline(b, m->timeout_ms);
    set_preparing(b, !b->one_phase);
    b->run = rm_start(ag->rm, b->gid, cJSON_DetachItemFromObjectCaseSensitive(m->root, "ops"),
                      b->one_phase, m->timeout_ms, on_run_done, b);
}

static void on_commit(struct agent *ag, struct peer *peer, const struct msg *m)
{
    struct branch *b = find_branch(ag, m->gtid);

    if (b && (b->state == AB_RUNNING || b->state == AB_OPEN)) {
        log_warn("transaction %s: commit before the branch was prepared; ignored", m->gtid);
        return;
    }
    if (b)
        branch_set_state(b, AB_FINISHING);
    start_finish(ag, peer, m->gtid, m->xid ? m->xid : (b ? b->xid : 0), true);
}

static void on_abort(struct agent *ag, struct peer *peer, const struct msg *m)
{
    struct branch *b = find_branch(ag, m->gtid);

    if (b && b->state == AB_OPEN) {
        b->abort_requested = true;
        b->peer = peer;
        end_open(b);
        return;
    }
    if (b && b->state == AB_RUNNING) {
        b->abort_requested = true;
        b->peer = peer;
        if (b->run)
            rm_cancel(ag->rm, b->run);
        return;
    }
    if (b)
        branch_set_state(b, AB_FINISHING);
    start_finish(ag, peer, m->gtid, b ? b->xid : 0, false);
}

/* ---- streams ------------------------------------------------------------------------- */

static void peer_hello(struct peer *p, const struct msg *m)
{
    snprintf(p->node, sizeof(p->node), "%s", m->name);
    p->epoch = m->epoch;
    p->hello = true;
    log_info("coordinator '%s' (epoch %" PRIu64 ") connected", p->node, p->epoch);
    recovery_kick(p->ag->recovery); /* it may have restarted: settle what it left prepared */
}

static void on_peer_frame(void *arg, const char *data, size_t len)
{
    struct peer *p = arg;
    struct agent *ag = p->ag;
    struct dtx_err err;
    struct msg m;

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) < 0) {
        log_warn("coordinator sent a malformed message: %s", err.msg);
        return;
    }
    if (m.type == MSG_HELLO)
        peer_hello(p, &m);
    else if (!p->hello)
        log_warn("coordinator sent a message before its hello; ignored");
    else if (m.type == MSG_PREPARE || m.type == MSG_ONE_PHASE)
        on_prepare(ag, p, &m);
    else if (m.type == MSG_COMMIT)
        on_commit(ag, p, &m);
    else if (m.type == MSG_ABORT)
        on_abort(ag, p, &m);
    else if (m.type == MSG_EXEC)
        on_exec(ag, p, &m);
    else
        log_warn("coordinator sent an unexpected message");
    msg_release(&m);
}

/*
 * A coordinator's stream closed. It aborts every transaction still
 * preparing with this shard when it loses the stream, so the branches it
 * was running here are cancelled at once instead of running on to a
 * prepared state nobody will ask for. One-phase branches are left to end:
 * their outcome is reported to whichever coordinator connects next.
 */
static void forget_peer(struct agent *ag, struct peer *p)
{
    struct hmap_iter it;
    struct hmap_node *n;
    struct list_node *pos;

    for (pos = ag->finishes.next; pos != &ag->finishes; pos = pos->next) {
        struct finishing *f = container_of(pos, struct finishing, link);

        if (f->peer == p)
            f->peer = NULL; /* the ack goes to whichever coordinator is connected */
    }
    for (n = hmap_first(&ag->branches, &it); n; n = hmap_next(&ag->branches, &it)) {
        struct branch *b = container_of(n, struct branch, node);

        if (b->peer != p)
            continue;
        b->peer = NULL;
        if (b->state == AB_OPEN) {
            end_open(b); /* its coordinator aborts it on losing the stream */
            continue;
        }
        if (b->state == AB_RUNNING && !b->one_phase && !b->abort_requested && b->run) {
            b->abort_requested = true;
            rm_cancel(ag->rm, b->run);
        }
    }
}

static void peer_free(struct peer *p)
{
    list_remove(&p->link);
    forget_peer(p->ag, p);
    stream_free(p->st);
    free(p);
}

static void on_peer_close(void *arg, int err, const char *why)
{
    struct peer *p = arg;

    (void)err;
    log_info("coordinator '%s' disconnected: %s", p->hello ? p->node : "?", why);
    peer_free(p);
}

static void close_upgraded(void *ctx, int fd)
{
    (void)fd;
    httpd_upgraded_close(ctx);
}

static void on_upgraded(void *arg, int fd, const char *extra, size_t extra_len,
                        struct httpd_upgraded *up)
{
    struct agent *ag = arg;
    struct peer *p = calloc(1, sizeof(*p));
    struct stream_cbs cbs = {on_peer_frame, on_peer_close, p, close_upgraded, up};
    cJSON *hello;
    char *s;

    if (!p)
        abort();
    p->ag = ag;
    p->up = up;
    list_insert_tail(&ag->peers, &p->link);
    p->st = stream_new(ag->loop, fd, extra, extra_len, &cbs);
    if (!p->st) {
        list_remove(&p->link);
        free(p);
        return;
    }
    hello = msg_new(MSG_HELLO, NULL);
    jsonx_add_str(hello, "shard", ag->cfg->name);
    s = jsonx_print(hello);
    stream_send(p->st, s, strlen(s));
    free(s);
    cJSON_Delete(hello);
}

/* ---- HTTP routes ------------------------------------------------------------------------- */

/* Every route but /healthz and /metrics is for the coordinator: it needs the peer token. */
static bool peer_authorized(const struct agent *ag, struct httpd_req *req)
{
    const char *token = ag->cfg->peer_token;

    if (!token[0] || httpd_req_has_token(req, token))
        return true;
    httpd_reply_errorf(req, DTX_EAUTH, "this endpoint needs the peer token");
    return false;
}

static void accept_stream(struct agent *ag, struct httpd_req *req)
{
    const char *upgrade = httpd_req_header(req, "Upgrade");

    if (!upgrade || strcmp(upgrade, STREAM_PROTO) != 0) {
        httpd_reply_errorf(req, DTX_EINVAL, "this endpoint needs \"Upgrade: %s\"", STREAM_PROTO);
        return;
    }
    if (ag->stopping) {
        httpd_reply_errorf(req, DTX_ESHUTDOWN, "the participant is shutting down");
        return;
    }
    httpd_upgrade(req, STREAM_PROTO, on_upgraded, ag);
}

static const char *const branch_state_names[] = {"prepared", "committed", "rolled_back", "unknown"};

static void on_branch_status(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                             const struct dtx_err *err)
{
    struct httpd_req *req = arg;
    cJSON *root;
    char s[24];

    if (rc < 0) {
        httpd_reply_error(req, err);
        return;
    }
    root = jsonx_new_object();
    jsonx_add_str(root, "state", branch_state_names[state]);
    if (xid) {
        snprintf(s, sizeof(s), "%" PRIu64, xid);
        jsonx_add_str(root, "xid", s);
    }
    httpd_reply_json(req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* GET /v1/branches/{gid}[?xid=N]: what became of one of this shard's branches. */
static void branch_status(struct agent *ag, struct httpd_req *req, const char *gid)
{
    char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];
    const char *xs = httpd_req_arg(req, "xid");
    char *end = NULL;
    uint64_t xid = xs ? strtoull(xs, &end, 10) : 0;

    if (xs && (!*xs || *end)) {
        httpd_reply_errorf(req, DTX_EINVAL, "'xid' must be a transaction id (a decimal number)");
    } else if (!gid_parse(gid, gtid, shard) || strcmp(shard, ag->cfg->name) != 0) {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "'%s' is not a dtx branch of shard '%s'", gid,
                           ag->cfg->name);
    } else {
        rm_status(ag->rm, gid, xid, on_branch_status, req);
    }
}

/* ---- operators (admin) ---------------------------------------------------------------- */

/* What the agent itself is doing with a transaction's branch, or NULL when nothing. */
static const char *agent_activity(const struct agent *ag, const char *gtid)
{
    const struct branch *b = find_branch((struct agent *)ag, gtid);
    const struct list_node *pos;

    if (b && b->state == AB_RUNNING)
        return "running";
    if (b && b->state == AB_FINISHING)
        return "finishing";
    for (pos = ag->finishes.next; pos != &ag->finishes; pos = pos->next) {
        if (strcmp(container_of(pos, const struct finishing, link)->gtid, gtid) == 0)
            return "finishing";
    }
    return b ? "prepared" : NULL;
}

struct admin_call {
    struct list_node link; /* on ag->admin_calls */
    struct agent *ag;
    struct httpd_req *req;
    char gtid[DTX_GTID_MAX + 1];
    bool commit;
};

static void on_inspected(void *arg, int rc, const struct rm_inspection *ins,
                         const struct dtx_err *err)
{
    struct admin_call *c = arg;
    cJSON *root, *arr;

    list_remove(&c->link);
    if (rc < 0) {
        httpd_reply_error(c->req, err);
        free(c);
        return;
    }
    root = jsonx_new_object();
    arr = jsonx_new_array();
    jsonx_add_str(root, "shard", c->ag->cfg->name);
    jsonx_add_num(root, "max_prepared_transactions", (double)ins->max_prepared);
    jsonx_add_num(root, "prepared_total", (double)ins->prepared_total);
    jsonx_add_num(root, "headroom", (double)(ins->max_prepared - ins->prepared_total));
    for (size_t i = 0; i < ins->n; i++) {
        const struct rm_branch_info *b = &ins->branches[i];
        char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1], xid[24];
        cJSON *o = jsonx_new_object(), *locks = cJSON_Parse(b->locks ? b->locks : "[]");
        const char *doing;

        jsonx_add_str(o, "gid", b->p.gid);
        if (gid_parse(b->p.gid, gtid, shard)) {
            jsonx_add_str(o, "gtid", gtid);
            jsonx_add_str(o, "shard", shard);
            if ((doing = agent_activity(c->ag, gtid)))
                jsonx_add_str(o, "agent", doing);
        }
        snprintf(xid, sizeof(xid), "%" PRIu64, b->p.xid);
        jsonx_add_str(o, "xid", xid);
        jsonx_add_num(o, "age_ms", b->p.age_ms);
        jsonx_add(o, "locks", locks ? locks : jsonx_new_array());
        jsonx_append(arr, o);
    }
    jsonx_add(root, "branches", arr);
    httpd_reply_json(c->req, 200, jsonx_print(root));
    cJSON_Delete(root);
    free(c);
}

static void admin_reply_finished(struct httpd_req *req, const char *gtid, const char *shard,
                                 bool commit, enum rm_outcome outcome, const struct dtx_err *err)
{
    cJSON *root = jsonx_new_object();
    char gid[DTX_GID_MAX + 1];
    bool as_asked = (outcome == RM_COMMITTED) == commit;

    gid_format(gid, sizeof(gid), gtid, shard);
    jsonx_add_str(root, "gid", gid);
    jsonx_add_str(root, "outcome", outcome == RM_COMMITTED ? "committed" : "rolled_back");
    if (!as_asked || (err && err->code)) {
        struct dtx_err e;

        dtx_err_clear(&e);
        if (err && err->code)
            e = *err;
        else
            dtx_err_set(&e, DTX_ESTATE, "'%s' was %s, not %s as asked", gid,
                        outcome == RM_COMMITTED ? "committed" : "rolled back",
                        commit ? "committed" : "rolled back");
        jsonx_add(root, "error", jsonx_error_obj(&e));
    }
    httpd_reply_json(req, as_asked ? 200 : 409, jsonx_print(root));
    cJSON_Delete(root);
}

static void on_admin_status(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                            const struct dtx_err *err)
{
    struct admin_call *c = arg;
    struct agent *ag = c->ag;
    const char *doing = agent_activity(ag, c->gtid);
    struct branch *b = find_branch(ag, c->gtid);

    list_remove(&c->link);
    if (rc < 0) {
        httpd_reply_error(c->req, err);
    } else if (state != RM_BRANCH_PREPARED) {
        httpd_reply_errorf(c->req, DTX_ENOTFOUND,
                           "transaction %s has no prepared branch on shard '%s' (it is %s)",
                           c->gtid, ag->cfg->name,
                           state == RM_BRANCH_COMMITTED     ? "committed"
                           : state == RM_BRANCH_ROLLED_BACK ? "rolled back"
                                                            : "not prepared");
    } else if (doing && strcmp(doing, "prepared") != 0) {
        httpd_reply_errorf(c->req, DTX_ECONFLICT,
                           "the participant of shard '%s' is %s transaction %s's branch itself; "
                           "try again shortly",
                           ag->cfg->name, doing, c->gtid);
    } else {
        log_warn("operator request: %s the prepared branch of transaction %s",
                 c->commit ? "committing" : "rolling back", c->gtid);
        if (b)
            branch_set_state(b, AB_FINISHING);
        start_finish(ag, NULL, c->gtid, xid, c->commit)->req = c->req;
    }
    free(c);
}

/*
 * GET /v1/admin/branches: this shard's prepared dtx branches with their
 * locks, and the prepared-transaction headroom.
 * POST /v1/admin/branches/{gid}/commit|rollback: finish one prepared
 * branch now (the coordinator's recover and resolve; never a branch the
 * agent is running or finishing itself).
 */
static void admin_branches(struct agent *ag, struct httpd_req *req, const char *method,
                           const char *rest)
{
    struct admin_call *c;
    char gid[DTX_GID_MAX + 1], shard[DTX_NAME_MAX + 1], why[300];
    const char *slash = strrchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : 0;

    if (!rm_healthy(ag->rm, why, sizeof(why))) {
        httpd_reply_errorf(req, DTX_ESHUTDOWN, "shard '%s': %s", ag->cfg->name, why);
        return;
    }
    if (*rest == '\0' && strcmp(method, "GET") == 0) {
        if (!(c = calloc(1, sizeof(*c))))
            abort();
        c->ag = ag;
        c->req = req;
        list_insert_tail(&ag->admin_calls, &c->link);
        rm_inspect(ag->rm, true, on_inspected, c);
        return;
    }
    if (strcmp(method, "POST") != 0 || *rest != '/' || !slash || slash == rest ||
        (strcmp(slash, "/commit") != 0 && strcmp(slash, "/rollback") != 0)) {
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "use GET /v1/admin/branches or POST "
                           "/v1/admin/branches/{gid}/commit|rollback");
        return;
    }
    if (!(c = calloc(1, sizeof(*c))))
        abort();
    snprintf(gid, sizeof(gid), "%.*s", (int)(n - 1), rest + 1);
    if (n - 1 >= sizeof(gid) || !gid_parse(gid, c->gtid, shard) ||
        strcmp(shard, ag->cfg->name) != 0) {
        free(c);
        httpd_reply_errorf(req, DTX_ENOTFOUND, "'%.*s' is not a dtx branch of shard '%s'",
                           (int)(n - 1), rest + 1, ag->cfg->name);
        return;
    }
    c->ag = ag;
    c->req = req;
    c->commit = strcmp(slash, "/commit") == 0;
    list_insert_tail(&ag->admin_calls, &c->link);
    rm_status(ag->rm, gid, 0, on_admin_status, c);
}

static char *render_health(const struct agent *ag, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    char why[300] = "";
    bool ok = rm_healthy(ag->rm, why, sizeof(why));
    size_t coordinators = 0;
    const struct list_node *pos;
    char *s;

    for (pos = ag->peers.next; pos != &ag->peers; pos = pos->next)
        coordinators += container_of(pos, const struct peer, link)->hello;
    *status = ok ? 200 : 503;
    jsonx_add_str(root, "status", ok ? "ok" : "unavailable");
    jsonx_add_str(root, "shard", ag->cfg->name);
    jsonx_add_str(root, "database", ok ? "up" : "down");
    if (!ok)
        jsonx_add_str(root, "error", why);
    jsonx_add_num(root, "coordinators", (double)coordinators);
    jsonx_add_num(root, "branches_running", (double)ag->running);
    jsonx_add_num(root, "branches_prepared", (double)ag->prepared);
    jsonx_add_num(root, "in_doubt", (double)recovery_in_doubt(ag->recovery));
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

static char *render_metrics(const struct agent *ag)
{
    struct buf b = BUF_INIT;
    const struct agent_metrics *m = &ag->m;
    char why[8];

    buf_printf(&b,
               "# TYPE dtx_agent_votes_total counter\n"
               "dtx_agent_votes_total{vote=\"yes\"} %" PRIu64 "\n"
               "dtx_agent_votes_total{vote=\"no\"} %" PRIu64 "\n"
               "dtx_agent_votes_total{vote=\"readonly\"} %" PRIu64 "\n",
               m->votes_yes, m->votes_no, m->votes_readonly);
    buf_printf(&b,
               "# TYPE dtx_agent_one_phase_total counter\n"
               "dtx_agent_one_phase_total{outcome=\"committed\"} %" PRIu64 "\n"
               "dtx_agent_one_phase_total{outcome=\"aborted\"} %" PRIu64 "\n"
               "dtx_agent_one_phase_total{outcome=\"unknown\"} %" PRIu64 "\n",
               m->one_phase_committed, m->one_phase_aborted, m->one_phase_unknown);
    buf_printf(&b,
               "# TYPE dtx_agent_finished_total counter\n"
               "dtx_agent_finished_total{outcome=\"committed\"} %" PRIu64 "\n"
               "dtx_agent_finished_total{outcome=\"rolled_back\"} %" PRIu64 "\n"
               "# TYPE dtx_agent_heuristic_outcomes_total counter\n"
               "dtx_agent_heuristic_outcomes_total %" PRIu64 "\n",
               m->committed, m->rolled_back, m->heuristic);
    buf_printf(&b,
               "# TYPE dtx_agent_branches gauge\n"
               "dtx_agent_branches{state=\"running\"} %zu\n"
               "dtx_agent_branches{state=\"prepared\"} %zu\n"
               "# TYPE dtx_agent_database_up gauge\ndtx_agent_database_up %d\n",
               ag->running, ag->prepared, rm_healthy(ag->rm, why, sizeof(why)));
    buf_printf(&b,
               "# TYPE dtx_agent_in_doubt gauge\ndtx_agent_in_doubt %zu\n"
               "# TYPE dtx_agent_recovery_rounds_total counter\n"
               "dtx_agent_recovery_rounds_total %" PRIu64 "\n"
               "# TYPE dtx_agent_recovery_resolved_total counter\n"
               "dtx_agent_recovery_resolved_total %" PRIu64 "\n",
               recovery_in_doubt(ag->recovery), recovery_rounds(ag->recovery),
               recovery_resolved(ag->recovery));
    return buf_detach(&b, NULL);
}

void agent_handle_http(void *ctx, struct httpd_req *req)
{
    struct agent *ag = ctx;
    const char *path = httpd_req_path(req);
    const char *method = httpd_req_method(req);
    unsigned status;
    char *body;

    if (strncmp(path, "/v1/", 4) == 0 && !peer_authorized(ag, req)) {
        return;
    } else if (strncmp(path, "/v1/admin/branches", 18) == 0) {
        admin_branches(ag, req, method, path + 18);
    } else if (strcmp(method, "GET") != 0) {
        httpd_reply_errorf(req, DTX_EMETHOD, "method %s is not allowed on %s", method, path);
    } else if (strcmp(path, "/v1/peer/stream") == 0) {
        accept_stream(ag, req);
    } else if (strncmp(path, "/v1/branches/", 13) == 0) {
        branch_status(ag, req, path + 13);
    } else if (strcmp(path, "/healthz") == 0) {
        body = render_health(ag, &status);
        httpd_reply_json(req, status, body);
    } else if (strcmp(path, "/metrics") == 0) {
        body = render_metrics(ag);
        httpd_reply(req, 200, "text/plain; version=0.0.4", body, strlen(body));
    } else {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s %s", method, path);
    }
}

/* ---- lifecycle ---------------------------------------------------------------------------- */

/* Recovery must not touch a branch the agent is running or finishing itself. */
static bool recovery_busy(void *arg, const char *gtid)
{
    struct branch *b = find_branch(arg, gtid);

    return b && b->state != AB_PREPARED;
}

static void recovery_finish(void *arg, const char *gtid, uint64_t xid, bool commit)
{
    struct agent *ag = arg;
    struct branch *b = find_branch(ag, gtid);

    if (b)
        branch_set_state(b, AB_FINISHING);
    start_finish(ag, NULL, gtid, xid, commit);
}

struct agent *agent_new(const struct agent_config *cfg, struct ev_loop *loop, struct rm *rm)
{
    struct agent *ag = calloc(1, sizeof(*ag));
    struct recovery_ops rops;

    if (!ag)
        abort();
    ag->cfg = cfg;
    ag->loop = loop;
    ag->rm = rm;
    hmap_init(&ag->branches);
    list_init(&ag->peers);
    list_init(&ag->finishes);
    list_init(&ag->admin_calls);
    rops = (struct recovery_ops){recovery_busy, recovery_finish, ag};
    ag->recovery = recovery_new(loop, cfg, rm, &rops);
    ev_timer_init(&ag->slots_timer, on_slots_timer, ag);
    ev_timer_start(loop, &ag->slots_timer, 0);
    return ag;
}

void agent_flush_peers(void *arg)
{
    struct agent *ag = arg;
    struct list_node *pos;

    for (pos = ag->peers.next; pos != &ag->peers; pos = pos->next)
        stream_flush_sync(container_of(pos, struct peer, link)->st, 1000);
}

void agent_begin_shutdown(struct agent *ag)
{
    ag->stopping = true;
}

bool agent_idle(const struct agent *ag)
{
    return ag->running == 0;
}

void agent_free(struct agent *ag)
{
    struct hmap_iter it;
    struct hmap_node *n;

    if (!ag)
        return;
    ev_timer_stop(ag->loop, &ag->slots_timer);
    recovery_free(ag->recovery);
    while (!list_empty(&ag->peers))
        peer_free(container_of(ag->peers.next, struct peer, link));
    for (n = hmap_first(&ag->branches, &it); n; n = hmap_next(&ag->branches, &it)) {
        struct branch *b = container_of(n, struct branch, node);

        ev_timer_stop(ag->loop, &b->deadline);
        free(b);
    }
    hmap_release(&ag->branches);
    rm_free(ag->rm); /* drops its jobs without calling back */
    while (!list_empty(&ag->admin_calls)) {
        struct admin_call *c = container_of(ag->admin_calls.next, struct admin_call, link);

        list_remove(&c->link);
        free(c);
    }
    while (!list_empty(&ag->finishes)) {
        struct finishing *f = container_of(ag->finishes.next, struct finishing, link);

        list_remove(&f->link);
        free(f);
    }
    free(ag);
}
