/*
 * branch.c - the participant's branch machine (branch.h).
 *
 * State diagram (event -> action in brackets). The unit test
 * tests/unit/test_branch.c checks it against the table below, line by
 * line, and walks every pair with a fake resource manager.
 *
 *   NEW --PREPARE [act_run]--> PREPARING
 *   NEW --ONE_PHASE [act_run]--> ONE_PHASE
 *   NEW --EXEC [act_exec]--> EXECUTING                     (a new interactive session)
 *   NEW --COMMIT [act_finish]--> FINISHING                 (idempotent: by gid and xid)
 *   NEW --ABORT [act_finish]--> FINISHING
 *
 *   PREPARING --PREPARED [act_vote_yes]--> PREPARED
 *   PREPARING --ENDED [act_vote]--> GONE                   (vote no, or read-only)
 *   PREPARING --ABORT [act_cancel]--> CANCELLING
 *   PREPARING --DEADLINE [act_cancel]--> CANCELLING
 *   PREPARING --PEER_LOST [act_cancel]--> CANCELLING       (its coordinator aborts it)
 *   PREPARING --COMMIT [act_too_early]--> PREPARING
 *   PREPARING --FENCE [act_cancel]--> CANCELLING           (3PC: never to prepare here)
 *
 *   ONE_PHASE --ENDED [act_outcome]--> GONE                (committed, aborted or unknown)
 *   ONE_PHASE --ABORT [act_cancel]--> ONE_PHASE            (the outcome still goes out)
 *   ONE_PHASE --DEADLINE [act_cancel]--> ONE_PHASE
 *   ONE_PHASE --PEER_LOST [act_none]--> ONE_PHASE          (told to the next coordinator)
 *   ONE_PHASE --COMMIT [act_too_early]--> ONE_PHASE
 *
 *   CANCELLING --PREPARED [act_roll_back_prepared]--> FINISHING
 *   CANCELLING --ENDED [act_ack_rolled_back]--> GONE
 *   CANCELLING --ABORT [act_repeer]--> CANCELLING
 *   CANCELLING --DEADLINE [act_none]--> CANCELLING
 *   CANCELLING --PEER_LOST [act_none]--> CANCELLING
 *   CANCELLING --COMMIT [act_too_early]--> CANCELLING
 *   CANCELLING --FENCE [act_none]--> CANCELLING
 *
 *   EXECUTING --EXECUTED [act_executed]--> OPEN
 *   EXECUTING --EXEC_FAILED [act_exec_failed]--> GONE
 *   EXECUTING --ABORT [act_cancel]--> EXEC_CANCELLING
 *   EXECUTING --DEADLINE [act_cancel]--> EXEC_CANCELLING
 *   EXECUTING --PEER_LOST [act_cancel]--> EXEC_CANCELLING
 *   EXECUTING --COMMIT [act_too_early]--> EXECUTING
 *   EXECUTING --FENCE [act_cancel]--> EXEC_CANCELLING      (3PC: rolled back, never prepared)
 *
 *   EXEC_CANCELLING --EXECUTED [act_roll_back_open]--> ROLLING_BACK
 *   EXEC_CANCELLING --EXEC_FAILED [act_exec_failed]--> GONE    (and the abort acknowledged)
 *   EXEC_CANCELLING --ABORT [act_repeer]--> EXEC_CANCELLING
 *   EXEC_CANCELLING --DEADLINE [act_none]--> EXEC_CANCELLING
 *   EXEC_CANCELLING --PEER_LOST [act_none]--> EXEC_CANCELLING
 *   EXEC_CANCELLING --COMMIT [act_too_early]--> EXEC_CANCELLING
 *   EXEC_CANCELLING --FENCE [act_none]--> EXEC_CANCELLING
 *
 *   OPEN --EXEC [act_exec]--> EXECUTING
 *   OPEN --END_PREPARE [act_end]--> PREPARING
 *   OPEN --END_COMMIT [act_end]--> ONE_PHASE
 *   OPEN --NO_SLOT [act_roll_back_open]--> ROLLING_BACK
 *   OPEN --ABORT [act_roll_back_open]--> ROLLING_BACK      (acknowledged when rolled back)
 *   OPEN --DEADLINE [act_roll_back_open]--> ROLLING_BACK
 *   OPEN --PEER_LOST [act_roll_back_open]--> ROLLING_BACK
 *   OPEN --COMMIT [act_too_early]--> OPEN
 *   OPEN --FENCE [act_roll_back_open]--> ROLLING_BACK
 *
 *   ROLLING_BACK --ROLLED_BACK [act_rolled_back]--> GONE
 *   ROLLING_BACK --ABORT [act_repeer]--> ROLLING_BACK      (acknowledged when rolled back)
 *   ROLLING_BACK --DEADLINE [act_none]--> ROLLING_BACK
 *   ROLLING_BACK --PEER_LOST [act_none]--> ROLLING_BACK
 *   ROLLING_BACK --COMMIT [act_too_early]--> ROLLING_BACK
 *   ROLLING_BACK --FENCE [act_none]--> ROLLING_BACK
 *
 *   PREPARED --COMMIT [act_finish]--> FINISHING
 *   PREPARED --ABORT [act_finish]--> FINISHING
 *   PREPARED --PEER_LOST [act_none]--> PREPARED            (acks go to the next coordinator)
 *
 *   FINISHING --COMMIT [act_finish]--> FINISHING           (another finish, acknowledged too)
 *   FINISHING --ABORT [act_finish]--> FINISHING
 *   FINISHING --FINISHED [act_finished]--> FINISHING       (then ALL_FINISHED when none is left)
 *   FINISHING --ALL_FINISHED [act_none]--> GONE
 *   FINISHING --PEER_LOST [act_none]--> FINISHING
 *
 * Replies go back on the stream the request came on (b->peer); if that
 * stream closed, to the newest coordinator; if none is connected they are
 * dropped (the coordinator re-drives: a missing vote times out into an
 * abort, a missing ack makes it resend phase 2). Every commit and abort
 * is acknowledged once its outcome is known.
 *
 * A finish (COMMIT/ROLLBACK PREPARED) may outlive its coordinator's stream
 * (it retries for as long as PostgreSQL is down), so it remembers whom to
 * acknowledge, and that is cleared when the stream goes
 * (branches_peer_lost).
 *
 * Metrics (struct branch_metrics): every vote, one-phase outcome and
 * finish is counted, and timed from the request that started it (the
 * monotonic clock): a prepare to its vote, a one_phase to its outcome, a
 * COMMIT or ROLLBACK PREPARED from being asked to its outcome.
 *
 * Thread model: the participant's event-loop thread only.
 */
#include "branch_impl.h"

#include "dtx/failpoint.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/msg.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deadline of a branch whose message named no timeout. */
#define BRANCH_DEFAULT_TIMEOUT_MS 60000

typedef enum branch_event (*branch_action)(struct branch *b, enum branch_event ev,
                                           const struct branch_evarg *a);

struct branch_transition {
    enum branch_state from;
    enum branch_event ev;
    enum branch_state to;
    branch_action action;
    const char *action_name;
};

#define NO_EVENT BE_NEVENTS

static enum branch_event act_none(struct branch *, enum branch_event, const struct branch_evarg *);
static enum branch_event act_run(struct branch *, enum branch_event, const struct branch_evarg *);
static enum branch_event act_exec(struct branch *, enum branch_event, const struct branch_evarg *);
static enum branch_event act_end(struct branch *, enum branch_event, const struct branch_evarg *);
static enum branch_event act_finish(struct branch *, enum branch_event,
                                    const struct branch_evarg *);
static enum branch_event act_vote_yes(struct branch *, enum branch_event,
                                      const struct branch_evarg *);
static enum branch_event act_vote(struct branch *, enum branch_event, const struct branch_evarg *);
static enum branch_event act_outcome(struct branch *, enum branch_event,
                                     const struct branch_evarg *);
static enum branch_event act_cancel(struct branch *, enum branch_event,
                                    const struct branch_evarg *);
static enum branch_event act_too_early(struct branch *, enum branch_event,
                                       const struct branch_evarg *);
static enum branch_event act_roll_back_prepared(struct branch *, enum branch_event,
                                                const struct branch_evarg *);
static enum branch_event act_ack_rolled_back(struct branch *, enum branch_event,
                                             const struct branch_evarg *);
static enum branch_event act_repeer(struct branch *, enum branch_event,
                                    const struct branch_evarg *);
static enum branch_event act_executed(struct branch *, enum branch_event,
                                      const struct branch_evarg *);
static enum branch_event act_exec_failed(struct branch *, enum branch_event,
                                         const struct branch_evarg *);
static enum branch_event act_roll_back_open(struct branch *, enum branch_event,
                                            const struct branch_evarg *);
static enum branch_event act_rolled_back(struct branch *, enum branch_event,
                                         const struct branch_evarg *);
static enum branch_event act_finished(struct branch *, enum branch_event,
                                      const struct branch_evarg *);

#define T(from_, ev_, to_, action_)                                                                \
    {                                                                                              \
        .from = B_##from_, .ev = BE_##ev_, .to = B_##to_, .action = action_,                       \
        .action_name = #action_                                                                    \
    }

static const struct branch_transition transitions[] = {
    T(NEW, PREPARE, PREPARING, act_run),
    T(NEW, ONE_PHASE, ONE_PHASE, act_run),
    T(NEW, EXEC, EXECUTING, act_exec),
    T(NEW, COMMIT, FINISHING, act_finish),
    T(NEW, ABORT, FINISHING, act_finish),

    T(PREPARING, PREPARED, PREPARED, act_vote_yes),
    T(PREPARING, ENDED, GONE, act_vote),
    T(PREPARING, ABORT, CANCELLING, act_cancel),
    T(PREPARING, DEADLINE, CANCELLING, act_cancel),
    T(PREPARING, PEER_LOST, CANCELLING, act_cancel),
    T(PREPARING, COMMIT, PREPARING, act_too_early),
    T(PREPARING, FENCE, CANCELLING, act_cancel),

    T(ONE_PHASE, ENDED, GONE, act_outcome),
    T(ONE_PHASE, ABORT, ONE_PHASE, act_cancel),
    T(ONE_PHASE, DEADLINE, ONE_PHASE, act_cancel),
    T(ONE_PHASE, PEER_LOST, ONE_PHASE, act_none),
    T(ONE_PHASE, COMMIT, ONE_PHASE, act_too_early),

    T(CANCELLING, PREPARED, FINISHING, act_roll_back_prepared),
    T(CANCELLING, ENDED, GONE, act_ack_rolled_back),
    T(CANCELLING, ABORT, CANCELLING, act_repeer),
    T(CANCELLING, DEADLINE, CANCELLING, act_none),
    T(CANCELLING, PEER_LOST, CANCELLING, act_none),
    T(CANCELLING, COMMIT, CANCELLING, act_too_early),
    T(CANCELLING, FENCE, CANCELLING, act_none),

    T(EXECUTING, EXECUTED, OPEN, act_executed),
    T(EXECUTING, EXEC_FAILED, GONE, act_exec_failed),
    T(EXECUTING, ABORT, EXEC_CANCELLING, act_cancel),
    T(EXECUTING, DEADLINE, EXEC_CANCELLING, act_cancel),
    T(EXECUTING, PEER_LOST, EXEC_CANCELLING, act_cancel),
    T(EXECUTING, COMMIT, EXECUTING, act_too_early),
    T(EXECUTING, FENCE, EXEC_CANCELLING, act_cancel),

    T(EXEC_CANCELLING, EXECUTED, ROLLING_BACK, act_roll_back_open),
    T(EXEC_CANCELLING, EXEC_FAILED, GONE, act_exec_failed),
    T(EXEC_CANCELLING, ABORT, EXEC_CANCELLING, act_repeer),
    T(EXEC_CANCELLING, DEADLINE, EXEC_CANCELLING, act_none),
    T(EXEC_CANCELLING, PEER_LOST, EXEC_CANCELLING, act_none),
    T(EXEC_CANCELLING, COMMIT, EXEC_CANCELLING, act_too_early),
    T(EXEC_CANCELLING, FENCE, EXEC_CANCELLING, act_none),

    T(OPEN, EXEC, EXECUTING, act_exec),
    T(OPEN, END_PREPARE, PREPARING, act_end),
    T(OPEN, END_COMMIT, ONE_PHASE, act_end),
    T(OPEN, NO_SLOT, ROLLING_BACK, act_roll_back_open),
    T(OPEN, ABORT, ROLLING_BACK, act_roll_back_open),
    T(OPEN, DEADLINE, ROLLING_BACK, act_roll_back_open),
    T(OPEN, PEER_LOST, ROLLING_BACK, act_roll_back_open),
    T(OPEN, FENCE, ROLLING_BACK, act_roll_back_open),
    T(OPEN, COMMIT, OPEN, act_too_early),

    T(ROLLING_BACK, ROLLED_BACK, GONE, act_rolled_back),
    T(ROLLING_BACK, ABORT, ROLLING_BACK, act_repeer),
    T(ROLLING_BACK, DEADLINE, ROLLING_BACK, act_none),
    T(ROLLING_BACK, PEER_LOST, ROLLING_BACK, act_none),
    T(ROLLING_BACK, COMMIT, ROLLING_BACK, act_too_early),
    T(ROLLING_BACK, FENCE, ROLLING_BACK, act_none),

    T(PREPARED, COMMIT, FINISHING, act_finish),
    T(PREPARED, ABORT, FINISHING, act_finish),
    T(PREPARED, PEER_LOST, PREPARED, act_none),

    T(FINISHING, COMMIT, FINISHING, act_finish),
    T(FINISHING, ABORT, FINISHING, act_finish),
    T(FINISHING, FINISHED, FINISHING, act_finished),
    T(FINISHING, ALL_FINISHED, GONE, act_none),
    T(FINISHING, PEER_LOST, FINISHING, act_none),
};

#undef T

#define NTRANSITIONS (sizeof(transitions) / sizeof(transitions[0]))

static const char *const state_names[B_NSTATES] = {
    [B_NEW] = "NEW",
    [B_PREPARING] = "PREPARING",
    [B_ONE_PHASE] = "ONE_PHASE",
    [B_CANCELLING] = "CANCELLING",
    [B_EXECUTING] = "EXECUTING",
    [B_EXEC_CANCELLING] = "EXEC_CANCELLING",
    [B_OPEN] = "OPEN",
    [B_ROLLING_BACK] = "ROLLING_BACK",
    [B_PREPARED] = "PREPARED",
    [B_FINISHING] = "FINISHING",
    [B_GONE] = "GONE",
};

static const char *const event_names[BE_NEVENTS] = {
    [BE_PREPARE] = "PREPARE",
    [BE_ONE_PHASE] = "ONE_PHASE",
    [BE_EXEC] = "EXEC",
    [BE_END_PREPARE] = "END_PREPARE",
    [BE_END_COMMIT] = "END_COMMIT",
    [BE_NO_SLOT] = "NO_SLOT",
    [BE_PREPARED] = "PREPARED",
    [BE_ENDED] = "ENDED",
    [BE_EXECUTED] = "EXECUTED",
    [BE_EXEC_FAILED] = "EXEC_FAILED",
    [BE_ROLLED_BACK] = "ROLLED_BACK",
    [BE_COMMIT] = "COMMIT",
    [BE_ABORT] = "ABORT",
    [BE_FINISHED] = "FINISHED",
    [BE_ALL_FINISHED] = "ALL_FINISHED",
    [BE_DEADLINE] = "DEADLINE",
    [BE_PEER_LOST] = "PEER_LOST",
    [BE_FENCE] = "FENCE",
};

const char *branch_state_name(enum branch_state s)
{
    return (unsigned)s < B_NSTATES ? state_names[s] : "?";
}

const char *branch_event_name(enum branch_event ev)
{
    return (unsigned)ev < BE_NEVENTS ? event_names[ev] : "?";
}

static const struct branch_transition *find(enum branch_state s, enum branch_event ev)
{
    for (size_t i = 0; i < NTRANSITIONS; i++) {
        if (transitions[i].from == s && transitions[i].ev == ev)
            return &transitions[i];
    }
    return NULL;
}

bool branch_is_defined(enum branch_state s, enum branch_event ev)
{
    return find(s, ev) != NULL;
}

enum branch_state branch_next_state(enum branch_state s, enum branch_event ev)
{
    const struct branch_transition *t = find(s, ev);

    return t ? t->to : s;
}

/* ---- the table of branches, and what each state counts as -------------------------- */

/* Which of the table's counters a state is in. */
struct state_kind {
    bool running, preparing, prepared, finishing, session;
};

static const struct state_kind kinds[B_NSTATES] = {
    [B_PREPARING] = {.running = true, .preparing = true},
    [B_ONE_PHASE] = {.running = true},
    [B_CANCELLING] = {.running = true, .preparing = true},
    [B_EXECUTING] = {.running = true, .session = true},
    [B_EXEC_CANCELLING] = {.running = true, .session = true},
    [B_OPEN] = {.session = true},
    [B_ROLLING_BACK] = {.running = true, .session = true},
    [B_PREPARED] = {.prepared = true},
    [B_FINISHING] = {.finishing = true},
};

static void count(struct branches *t, enum branch_state s, int delta)
{
    const struct state_kind *k = &kinds[s];

    t->running += k->running ? (size_t)delta : 0;
    t->preparing += k->preparing ? (size_t)delta : 0;
    t->prepared += k->prepared ? (size_t)delta : 0;
    t->finishing += k->finishing ? (size_t)delta : 0;
    t->sessions += k->session ? (size_t)delta : 0;
}

void branches_init(struct branches *t, const struct branch_env *env)
{
    memset(t, 0, sizeof(*t));
    t->env = env;
    hmap_init(&t->by_gtid);
    for (int i = 0; i < 3; i++) {
        prom_hist_init(&t->m.prepare[i], &prom_seconds_buckets);
        prom_hist_init(&t->m.one_phase[i], &prom_seconds_buckets);
    }
    prom_hist_init(&t->m.commit_prepared, &prom_seconds_buckets);
    prom_hist_init(&t->m.rollback_prepared, &prom_seconds_buckets);
}

void branch_free(struct branch *b)
{
    struct branches *t = b->t;

    ev_timer_stop(t->env->loop, &b->deadline);
    count(t, b->state, -1);
    while (!list_empty(&b->finishes)) {
        struct branch_finish *f = container_of(b->finishes.next, struct branch_finish, link);

        list_remove(&f->link);
        free(f);
    }
    hmap_remove(&t->by_gtid, &b->node);
    if (b->reg)
        b->reg->b = NULL; /* its answer finds nobody */
    if (b->holding)
        buf_release(&b->held.results);
    free(b->peers);
    free(b);
}

void branches_release(struct branches *t)
{
    struct hmap_iter it;
    struct hmap_node *n;

    for (n = hmap_first(&t->by_gtid, &it); n; n = hmap_next(&t->by_gtid, &it))
        branch_free(container_of(n, struct branch, node));
    hmap_release(&t->by_gtid);
}

struct branch *branch_find(const struct branches *t, const char *gtid)
{
    struct hmap_node *n = hmap_get(&t->by_gtid, gtid);

    return n ? container_of(n, struct branch, node) : NULL;
}

static void on_deadline(struct ev_loop *loop, struct ev_timer *timer);

struct branch *branch_new(struct branches *t, const char *gtid, struct peer *peer)
{
    struct branch *b = xcalloc(1, sizeof(*b));

    b->t = t;
    b->peer = peer;
    b->state = B_NEW;
    snprintf(b->gtid, sizeof(b->gtid), "%s", gtid);
    gid_format(b->gid, sizeof(b->gid), gtid, t->env->shard);
    /* the request its first message serves (agent_on_message set it), for every later line */
    snprintf(b->request_id, sizeof(b->request_id), "%s",
             log_ctx_get().request_id ? log_ctx_get().request_id : "");
    snprintf(b->traceparent, sizeof(b->traceparent), "%s",
             log_ctx_get().traceparent ? log_ctx_get().traceparent : "");
    list_init(&b->finishes);
    ev_timer_init(&b->deadline, on_deadline, b);
    hmap_put(&t->by_gtid, &b->node, b->gtid);
    return b;
}

/* ---- stepping ------------------------------------------------------------------------ */

int branch_step_one(struct branch *b, enum branch_event ev, const struct branch_evarg *a,
                    enum branch_event *next)
{
    const struct branch_transition *t = find(b->state, ev);
    enum branch_state from = b->state;

    if (!t) {
        log_warn("transaction %s: event %s is not defined in branch state %s; ignored", b->gtid,
                 branch_event_name(ev), branch_state_name(b->state));
        return DTX_ESTATE;
    }
    count(b->t, from, -1);
    b->state = t->to;
    count(b->t, t->to, 1);
    log_debug("transaction %s: branch %s --%s--> %s [%s]", b->gtid, state_names[from],
              event_names[ev], state_names[t->to], t->action_name);
    *next = t->action(b, ev, a);
    return 0;
}

int branch_step(struct branch *b, enum branch_event ev, const struct branch_evarg *arg)
{
    static const struct branch_evarg none = {0};
    const struct branch_evarg *a = arg ? arg : &none;
    char gtid[DTX_GTID_MAX + 1], req[sizeof(b->request_id)], tp[sizeof(b->traceparent)];
    struct log_ctx prev = log_ctx_get();
    int rc = 0;

    /* b may be freed below: copies */
    snprintf(gtid, sizeof(gtid), "%s", b->gtid);
    snprintf(req, sizeof(req), "%s", b->request_id);
    snprintf(tp, sizeof(tp), "%s", b->traceparent);
    log_ctx_set((struct log_ctx){.gtid = gtid,
                                 .request_id = prev.request_id ? prev.request_id
                                               : req[0]        ? req
                                                               : NULL,
                                 .traceparent = prev.request_id ? prev.traceparent
                                                : tp[0]         ? tp
                                                                : NULL});
    while (ev != NO_EVENT && (rc = branch_step_one(b, ev, a, &ev)) == 0)
        a = &none;
    if (b->state == B_GONE)
        branch_free(b);
    log_ctx_set(prev);
    return rc;
}

bool branch_accepts(const struct branch *b, enum branch_event ev)
{
    return find(b->state, ev) != NULL;
}

bool branch_is_interactive(const struct branch *b)
{
    return b->interactive;
}

const char *branch_gtid(const struct branch *b)
{
    return b->gtid;
}

bool branch_is_busy(const struct branch *b)
{
    return b->state != B_PREPARED;
}

const char *branch_activity(const struct branch *b)
{
    if (kinds[b->state].running)
        return "running";
    return b->state == B_FINISHING ? "finishing" : "prepared";
}

bool branch_holds_slot(const struct branch *b)
{
    return b->state == B_PREPARED || b->state == B_FINISHING;
}

bool branches_no_slot(const struct branches *t, int64_t max_prepared, int64_t untracked,
                      uint32_t headroom, char *why, size_t n)
{
    int64_t used = untracked + (int64_t)(t->prepared + t->finishing + t->preparing);
    int64_t limit = max_prepared - (int64_t)headroom;

    if (limit < 1)
        limit = 1; /* a headroom as large as the limit would refuse everything */
    if (max_prepared <= 0 || used < limit)
        return false;
    snprintf(why, n,
             "shard '%s' has no prepared-transaction slot to spare (max_prepared_transactions "
             "%" PRId64 ", about %" PRId64 " in use or being prepared, %u kept free); try "
             "again shortly",
             t->env->shard, max_prepared, used, headroom);
    return true;
}

void branches_peer_lost(struct branches *t, struct peer *peer)
{
    struct hmap_iter it;
    struct hmap_node *n = hmap_first(&t->by_gtid, &it);

    while (n) {
        struct branch *b = container_of(n, struct branch, node);

        n = hmap_next(&t->by_gtid, &it); /* b may be gone after its step */
        for (struct list_node *p = b->finishes.next; p != &b->finishes; p = p->next) {
            struct branch_finish *f = container_of(p, struct branch_finish, link);

            if (f->peer == peer)
                f->peer = NULL; /* the ack goes to whichever coordinator is connected */
        }
        if (b->peer != peer)
            continue;
        b->peer = NULL;
        branch_step(b, BE_PEER_LOST, NULL);
    }
}

/* ---- sending ---------------------------------------------------------------------------- */

/* Seconds since since_us (monotonic clock), for the metrics. */
static double elapsed_s(uint64_t since_us)
{
    return (ev_clock_us() - since_us) / 1e6;
}

static void send_to(struct branch *b, struct peer *peer, cJSON *m, const struct buf *trailer)
{
    b->t->env->send(b->t->env->ctx, peer, m, trailer);
}

static void send_ack(struct branch *b, struct peer *peer, enum rm_outcome outcome,
                     const struct dtx_err *err)
{
    cJSON *m = msg_new(MSG_ACK, b->gtid);

    jsonx_add_str(m, "outcome",
                  msg_outcome_name(outcome == RM_COMMITTED ? OUTCOME_COMMITTED
                                   : outcome == RM_HAZARD  ? OUTCOME_UNKNOWN
                                                           : OUTCOME_ABORTED));
    if (err && err->code)
        msg_add_error(m, err);
    send_to(b, peer, m, NULL);
}

static void send_vote(struct branch *b, const struct rm_result *res)
{
    struct branch_metrics *m = &b->t->m;
    cJSON *msg = msg_new(MSG_VOTE, b->gtid);
    enum msg_vote v = res->outcome == RM_PREPARED   ? VOTE_YES
                      : res->outcome == RM_READONLY ? VOTE_READONLY
                                                    : VOTE_NO;

    m->votes_yes += v == VOTE_YES;
    m->votes_no += v == VOTE_NO;
    m->votes_readonly += v == VOTE_READONLY;
    prom_hist_observe(&m->prepare[v - 1], elapsed_s(b->run_since_us));
    jsonx_add_str(msg, "vote", msg_vote_name(v));
    if (v == VOTE_YES) {
        msg_add_xid(msg, res->xid);
        jsonx_add_str(msg, "db", res->db);
    }
    if (v == VOTE_NO)
        msg_add_error(msg, &res->err);
    send_to(b, b->peer, msg, v != VOTE_NO ? &res->results : NULL);
}

static void send_outcome(struct branch *b, const struct rm_result *res)
{
    struct branch_metrics *m = &b->t->m;
    cJSON *msg = msg_new(MSG_OUTCOME, b->gtid);
    enum msg_outcome o = res->outcome == RM_COMMITTED || res->outcome == RM_READONLY
                             ? OUTCOME_COMMITTED
                         : res->outcome == RM_UNKNOWN ? OUTCOME_UNKNOWN
                                                      : OUTCOME_ABORTED;

    m->one_phase_committed += o == OUTCOME_COMMITTED;
    m->one_phase_aborted += o == OUTCOME_ABORTED;
    m->one_phase_unknown += o == OUTCOME_UNKNOWN;
    prom_hist_observe(&m->one_phase[o - 1], elapsed_s(b->run_since_us));
    jsonx_add_str(msg, "outcome", msg_outcome_name(o));
    if (o != OUTCOME_COMMITTED)
        msg_add_error(msg, &res->err);
    send_to(b, b->peer, msg, o == OUTCOME_COMMITTED ? &res->results : NULL);
}

static void send_executed(struct branch *b, const struct dtx_err *err, const struct buf *results)
{
    cJSON *m = msg_new(MSG_EXECUTED, b->gtid);

    if (err && err->code)
        msg_add_error(m, err);
    send_to(b, b->peer, m, err && err->code ? NULL : results);
}

/* ---- the resource manager's answers, as events ----------------------------------------- */

static void on_run_done(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct branch_evarg a = {.res = res};

    b->run = NULL;
    ev_timer_stop(b->t->env->loop, &b->deadline);
    if (b->reg && res->outcome == RM_PREPARED) {
        b->held = *res; /* the vote waits for the registration (on_registered) */
        buf_init(&res->results);
        b->holding = true;
        return;
    }
    branch_step(b, res->outcome == RM_PREPARED ? BE_PREPARED : BE_ENDED, &a);
    buf_release(&res->results);
}

static void on_registered(void *arg, int rc, const struct rm_acceptor *st,
                          const struct dtx_err *err)
{
    struct branch_reg *reg = arg;
    struct branch *b = reg->b;
    struct branch_evarg a = {0};

    (void)st;
    free(reg);
    if (!b)
        return;
    b->reg = NULL;
    if (rc < 0 && err)
        b->reg_err = *err;
    if (!b->holding)
        return; /* the run is not over yet */
    b->holding = false;
    a.res = &b->held;
    branch_step(b, BE_PREPARED, &a);
    buf_release(&b->held.results);
}

/* A 3PC branch starts: its acceptors are registered while it runs. */
static void start_register(struct branch *b, const struct branch_evarg *a)
{
    if (!a->three_pc)
        return;
    b->three_pc = true;
    if (a->peers) {
        free(b->peers);
        b->peers = xstrdup(a->peers);
    }
    dtx_err_clear(&b->reg_err);
    b->reg = xcalloc(1, sizeof(*b->reg));
    b->reg->b = b;
    rm_acceptor(b->t->env->rm, RM_ACC_REGISTER, b->gtid, b->gid, b->peers, NULL, BV_NONE,
                on_registered, b->reg);
}

static void on_exec_done(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct branch_evarg a = {.res = res};

    b->run = NULL;
    ev_timer_stop(b->t->env->loop, &b->deadline);
    if (res->outcome != RM_ACTIVE)
        b->session = NULL; /* the resource manager ended it */
    branch_step(b, res->outcome == RM_ACTIVE ? BE_EXECUTED : BE_EXEC_FAILED, &a);
    buf_release(&res->results);
}

static void on_rolled_back(void *arg, struct rm_result *res)
{
    struct branch *b = arg;
    struct branch_evarg a = {.res = res};

    b->run = NULL;
    branch_step(b, BE_ROLLED_BACK, &a);
    buf_release(&res->results);
}

static void on_finished(void *arg, enum rm_outcome outcome, const struct dtx_err *err)
{
    struct branch_finish *f = arg;
    struct branch_evarg a = {.finish = f, .outcome = outcome, .err = err};

    branch_step(f->b, BE_FINISHED, &a);
}

static void on_deadline(struct ev_loop *loop, struct ev_timer *timer)
{
    (void)loop;
    branch_step(timer->data, BE_DEADLINE, NULL);
}

/*
 * A branch still running at its transaction's timeout (0: the default) is
 * cancelled then, whatever its statements did to their own timeout (SET
 * LOCAL statement_timeout = 0): its locks and its pooled connection go
 * free when the coordinator gives up on it, and a one-phase branch ends
 * as an abort the coordinator still hears of (a timeout, not an unknown
 * outcome).
 */
static void arm_deadline(struct branch *b, uint32_t timeout_ms)
{
    ev_timer_start(b->t->env->loop, &b->deadline,
                   timeout_ms ? timeout_ms : BRANCH_DEFAULT_TIMEOUT_MS);
}

/*
 * An open interactive branch idle for twice its limit plus a second is
 * rolled back. The coordinator has aborted it long before, or vanished
 * without closing its stream (a host that lost power): either way nobody
 * will ask for its vote, so it must not hold its locks (and a connection).
 */
static void arm_idle_deadline(struct branch *b, uint32_t idle_ms)
{
    ev_timer_start(b->t->env->loop, &b->deadline,
                   2 * (uint64_t)(idle_ms ? idle_ms : BRANCH_DEFAULT_TIMEOUT_MS) + 1000);
}

/* ---- actions ----------------------------------------------------------------------------- */

static enum branch_event act_none(struct branch *b, enum branch_event ev,
                                  const struct branch_evarg *a)
{
    (void)b;
    (void)ev;
    (void)a;
    return NO_EVENT;
}

static enum branch_event act_run(struct branch *b, enum branch_event ev,
                                 const struct branch_evarg *a)
{
    bool one_phase = ev == BE_ONE_PHASE;

    b->run_since_us = ev_clock_us();
    arm_deadline(b, a->timeout_ms);
    if (!one_phase)
        start_register(b, a);
    b->run = rm_start(b->t->env->rm, b->gid, a->ops, one_phase, b->three_pc, on_run_done, b);
    return NO_EVENT;
}

static enum branch_event act_exec(struct branch *b, enum branch_event ev,
                                  const struct branch_evarg *a)
{
    (void)ev;
    b->interactive = true;
    b->peer = a->peer;
    b->deadline_ms = a->idle_ms > a->timeout_ms ? a->idle_ms : a->timeout_ms;
    b->three_pc |= a->three_pc;
    arm_deadline(b, a->timeout_ms);
    b->session = rm_exec(b->t->env->rm, b->session, b->gid, b->three_pc, a->ops, a->open_wait_ms,
                         on_exec_done, b);
    b->run = b->session;
    return NO_EVENT;
}

/* The interactive transaction ends here: PREPARE (a vote) or COMMIT (an outcome). */
static enum branch_event act_end(struct branch *b, enum branch_event ev,
                                 const struct branch_evarg *a)
{
    bool commit = ev == BE_END_COMMIT;

    b->run_since_us = ev_clock_us();
    b->peer = a->peer;
    arm_deadline(b, a->timeout_ms);
    if (!commit)
        start_register(b, a);
    b->run = b->session; /* rm_end ends the session, whatever the outcome */
    b->session = NULL;
    rm_end(b->t->env->rm, b->run, commit ? RM_END_COMMIT : RM_END_PREPARE, on_run_done, b);
    return NO_EVENT;
}

/* Starts COMMIT or ROLLBACK PREPARED of b, to be reported to peer (or req). */
static void start_finish(struct branch *b, struct peer *peer, struct httpd_req *req, bool commit,
                         uint64_t xid, const char *db)
{
    struct branch_finish *f = xcalloc(1, sizeof(*f));

    f->b = b;
    f->peer = peer;
    f->req = req;
    f->commit = commit;
    f->since_us = ev_clock_us();
    list_insert_tail(&b->finishes, &f->link);
    rm_finish(b->t->env->rm, b->gid, xid, db, commit, on_finished, f);
}

static enum branch_event act_finish(struct branch *b, enum branch_event ev,
                                    const struct branch_evarg *a)
{
    if (a->req)
        log_warn("operator request: %s the prepared branch of transaction %s",
                 ev == BE_COMMIT ? "committing" : "rolling back", b->gtid);
    start_finish(b, a->peer, a->req, ev == BE_COMMIT, a->xid ? a->xid : b->xid,
                 a->db && *a->db ? a->db : b->db);
    return NO_EVENT;
}

static enum branch_event act_vote_yes(struct branch *b, enum branch_event ev,
                                      const struct branch_evarg *a)
{
    (void)ev;
    b->xid = a->res->xid;
    snprintf(b->db, sizeof(b->db), "%s", a->res->db);
    if (b->three_pc && b->reg_err.code) {
        /* without its acceptors on record it could not finish alone: no */
        struct rm_result no = {.outcome = RM_ROLLED_BACK, .err = b->reg_err};

        snprintf(no.err.shard, sizeof(no.err.shard), "%s", b->t->env->shard);
        send_vote(b, &no);
        return BE_ABORT; /* and the prepared branch is rolled back */
    }
    fp_hit("agent.prepared_before_vote");
    send_vote(b, a->res);
    if (b->three_pc && b->t->env->three_pc_prepared)
        b->t->env->three_pc_prepared(b->t->env->ctx, b->gtid, b->peers);
    return NO_EVENT;
}

static enum branch_event act_vote(struct branch *b, enum branch_event ev,
                                  const struct branch_evarg *a)
{
    (void)ev;
    send_vote(b, a->res);
    return NO_EVENT;
}

static enum branch_event act_outcome(struct branch *b, enum branch_event ev,
                                     const struct branch_evarg *a)
{
    (void)ev;
    send_outcome(b, a->res);
    return NO_EVENT;
}

/* An abort (or a deadline, or its coordinator gone) while b's operation runs: cancel it. */
static enum branch_event act_cancel(struct branch *b, enum branch_event ev,
                                    const struct branch_evarg *a)
{
    if (ev == BE_ABORT)
        b->peer = a->peer;
    if (ev == BE_DEADLINE)
        log_warn("transaction %s: branch still running at its deadline (timeout_ms); cancelling "
                 "it",
                 b->gtid);
    if (ev == BE_FENCE)
        log_warn("transaction %s: a recovery leader is deciding it without this branch; "
                 "cancelling it (it will never prepare here)",
                 b->gtid);
    /* when its run ends, the abort is acknowledged; a fence has nobody to tell */
    b->ack_rollback = ev != BE_FENCE;
    if (b->run)
        rm_cancel(b->t->env->rm, b->run, ev == BE_DEADLINE);
    return NO_EVENT;
}

static enum branch_event act_too_early(struct branch *b, enum branch_event ev,
                                       const struct branch_evarg *a)
{
    (void)ev;
    (void)a;
    log_warn("transaction %s: commit before the branch was prepared; ignored", b->gtid);
    return NO_EVENT;
}

/* An abort overtook the prepare: the prepared branch is rolled back, then the abort acked. */
static enum branch_event act_roll_back_prepared(struct branch *b, enum branch_event ev,
                                                const struct branch_evarg *a)
{
    (void)ev;
    start_finish(b, b->peer, NULL, false, a->res->xid, a->res->db);
    return NO_EVENT;
}

static enum branch_event act_ack_rolled_back(struct branch *b, enum branch_event ev,
                                             const struct branch_evarg *a)
{
    (void)ev;
    (void)a;
    send_ack(b, b->peer, RM_ROLLED_BACK, NULL);
    return NO_EVENT;
}

/* Another abort while one is under way: answer it on the newer stream. */
static enum branch_event act_repeer(struct branch *b, enum branch_event ev,
                                    const struct branch_evarg *a)
{
    (void)ev;
    b->peer = a->peer;
    b->ack_rollback = true;
    return NO_EVENT;
}

static enum branch_event act_executed(struct branch *b, enum branch_event ev,
                                      const struct branch_evarg *a)
{
    (void)ev;
    send_executed(b, NULL, &a->res->results);
    /* the coordinator aborts it after idle_ms; this is for a coordinator that vanished */
    arm_idle_deadline(b, b->deadline_ms);
    return NO_EVENT;
}

/* The call failed and took the transaction with it; an abort that came meanwhile is acked. */
static enum branch_event act_exec_failed(struct branch *b, enum branch_event ev,
                                         const struct branch_evarg *a)
{
    bool abort_asked = b->ack_rollback;

    (void)ev;
    send_executed(b, &a->res->err, NULL);
    if (abort_asked)
        send_ack(b, b->peer, RM_ROLLED_BACK, NULL);
    return NO_EVENT;
}

static enum branch_event act_roll_back_open(struct branch *b, enum branch_event ev,
                                            const struct branch_evarg *a)
{
    if (ev == BE_ABORT) {
        b->peer = a->peer;
        b->ack_rollback = true;
    }
    if (ev == BE_DEADLINE)
        log_warn("transaction %s: open branch idle past its deadline; rolling it back", b->gtid);
    ev_timer_stop(b->t->env->loop, &b->deadline);
    b->run = b->session;
    b->session = NULL;
    rm_end(b->t->env->rm, b->run, RM_END_ROLLBACK, on_rolled_back, b);
    return NO_EVENT;
}

static enum branch_event act_rolled_back(struct branch *b, enum branch_event ev,
                                         const struct branch_evarg *a)
{
    (void)ev;
    (void)a;
    if (b->ack_rollback)
        send_ack(b, b->peer, RM_ROLLED_BACK, NULL);
    return NO_EVENT;
}

static enum branch_event act_finished(struct branch *b, enum branch_event ev,
                                      const struct branch_evarg *a)
{
    struct branch_finish *f = a->finish;
    struct branch_metrics *m = &b->t->m;
    const struct branch_env *env = b->t->env;

    (void)ev;
    list_remove(&f->link);
    m->committed += a->outcome == RM_COMMITTED;
    m->rolled_back += a->outcome == RM_ROLLED_BACK;
    m->heuristic += a->err && a->err->code;
    prom_hist_observe(f->commit ? &m->commit_prepared : &m->rollback_prepared,
                      elapsed_s(f->since_us));
    if (f->req) {
        env->finished_for(env->ctx, f->req, b->gtid, f->commit, a->outcome, a->err);
    } else {
        if (a->outcome == RM_COMMITTED)
            fp_hit("agent.committed_before_ack");
        send_ack(b, f->peer, a->outcome, a->err);
    }
    free(f);
    return list_empty(&b->finishes) ? BE_ALL_FINISHED : NO_EVENT;
}
