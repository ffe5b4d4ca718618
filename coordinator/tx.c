/*
 * tx.c - the commit protocol: two-phase commit with presumed abort, and
 * one-phase commit for a transaction that touches one shard.
 *
 * State diagram (event -> action in brackets; * = forces a log record):
 *
 *   ACTIVE --START_2PC [act_send_prepares]--> PREPARING
 *   ACTIVE --START_1PC [act_send_one_phase]--> ONE_PHASE
 *   ACTIVE --RECOVER [act_recover]--> COMMITTING             (replay: COMMIT, no END)
 *   ACTIVE --RECOVER_DONE [act_recovered]--> COMMITTED       (replay: COMMIT and END)
 *
 *   PREPARING --VOTE_YES / VOTE_READONLY [act_vote]--> PREPARING
 *   PREPARING --ALL_VOTED [act_log_commit*]--> LOGGING
 *   PREPARING --ALL_READONLY [act_finish]--> COMMITTED      (nothing to commit)
 *   PREPARING --VOTE_NO / UNAVAILABLE / TIMEOUT [act_abort_all]--> ABORTING
 *
 *   LOGGING --DURABLE [act_send_commits]--> COMMITTING
 *   LOGGING --LOG_REFUSED [act_abort_all]--> ABORTING       (record never written: log
 *                                                           failed, or results too big)
 *   LOGGING --LOG_FAILED [act_in_doubt]--> IN_DOUBT         (record may be on disk)
 *   LOGGING --UNAVAILABLE [act_none]--> LOGGING             (handled when sending)
 *
 *   COMMITTING --ACK [act_ack]--> COMMITTING
 *   COMMITTING --ALL_ACKED [act_committed]--> COMMITTED     (END record, not forced)
 *   COMMITTING --TIMEOUT / RESEND [act_phase2_retry]--> COMMITTING
 *   COMMITTING --UNAVAILABLE [act_lost]--> COMMITTING
 *
 *   ABORTING --ACK [act_ack]--> ABORTING
 *   ABORTING --ALL_ACKED [act_finish]--> ABORTED
 *   ABORTING --TIMEOUT / RESEND [act_phase2_retry]--> ABORTING
 *   ABORTING --UNAVAILABLE [act_lost]--> ABORTING
 *   ABORTING --VOTE_* [act_none]--> ABORTING                (late vote; the abort is on its way)
 *
 *   Interactive transactions stay ACTIVE while their client sends calls:
 *   ACTIVE --EXEC [act_exec]--> ACTIVE                      (a call's ops go out)
 *   ACTIVE --EXECUTED [act_executed]--> ACTIVE              (the call is answered when all ran)
 *   ACTIVE --EXEC_FAILED / UNAVAILABLE / TIMEOUT / ABORT [act_abort_all]--> ABORTING
 *   ACTIVE --ALL_READONLY [act_finish]--> COMMITTED         (commit with no branch)
 *   ACTIVE --START_2PC / START_1PC: the commit, as above (prepare ends each open branch)
 *   ABORTING --EXECUTED / EXEC_FAILED [act_none]--> ABORTING (a call overtaken by the abort)
 *
 *   ONE_PHASE --COMMITTED_1PC / ABORTED_1PC [act_1pc_done]--> COMMITTED / ABORTED
 *   ONE_PHASE --TIMEOUT [act_1pc_slow]--> ONE_PHASE         (client told: not known yet)
 *   ONE_PHASE --UNAVAILABLE [act_1pc_lost]--> UNKNOWN
 *   UNKNOWN --COMMITTED_1PC / ABORTED_1PC [act_1pc_done]--> COMMITTED / ABORTED
 *
 * Presumed abort: a decision to commit is durable (LOGGING -> DURABLE)
 * before any COMMIT PREPARED is sent or the client hears of it; an abort is
 * never logged, because a transaction without a COMMIT record is aborted
 * by definition, after any crash.
 *
 * Invariants: tx->pending counts the branches whose vote (PREPARING,
 * ONE_PHASE) or acknowledgement (COMMITTING, ABORTING) is awaited; in
 * COMMITTING and ABORTING a BR_LOST branch is counted too, since its
 * message must still be delivered. The client is answered at most once
 * (tx->answered).
 *
 * Thread model: called only from the coordinator's event-loop thread.
 */
#include "dtx/tx.h"
#include "dtx/buf.h"
#include "dtx/ev.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/msg.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RETRY_MIN_MS TX_RETRY_MIN_MS
#define RETRY_MAX_MS TX_RETRY_MAX_MS

typedef enum tx_event (*tx_action)(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);

struct tx_transition {
    enum tx_state from;
    enum tx_event ev;
    enum tx_state to;
    bool durable; /* the action forces a record; the next step waits for DURABLE */
    tx_action action;
    const char *action_name;
};

static enum tx_event act_none(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_prepares(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_one_phase(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_vote(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_log_commit(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_abort_all(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_commits(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_in_doubt(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_ack(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_committed(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_finish(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_phase2_retry(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_lost(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_1pc_done(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_1pc_slow(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_1pc_lost(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_recover(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_recovered(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_exec(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_executed(struct tx *, enum tx_event, const struct tx_evarg *);

#define T(from, ev, to, durable, action)                                                           \
    {                                                                                              \
        TX_##from, TXE_##ev, TX_##to, durable, action, #action                                     \
    }

static const struct tx_transition transitions[] = {
    T(ACTIVE, START_2PC, PREPARING, false, act_send_prepares),
    T(ACTIVE, START_1PC, ONE_PHASE, false, act_send_one_phase),
    T(ACTIVE, RECOVER, COMMITTING, false, act_recover),
    T(ACTIVE, RECOVER_DONE, COMMITTED, false, act_recovered),
    T(ACTIVE, EXEC, ACTIVE, false, act_exec),
    T(ACTIVE, EXECUTED, ACTIVE, false, act_executed),
    T(ACTIVE, EXEC_FAILED, ABORTING, false, act_abort_all),
    T(ACTIVE, UNAVAILABLE, ABORTING, false, act_abort_all),
    T(ACTIVE, TIMEOUT, ABORTING, false, act_abort_all),
    T(ACTIVE, ABORT, ABORTING, false, act_abort_all),
    T(ACTIVE, ALL_READONLY, COMMITTED, false, act_finish),

    T(PREPARING, VOTE_YES, PREPARING, false, act_vote),
    T(PREPARING, VOTE_READONLY, PREPARING, false, act_vote),
    T(PREPARING, ALL_VOTED, LOGGING, true, act_log_commit),
    T(PREPARING, ALL_READONLY, COMMITTED, false, act_finish),
    T(PREPARING, VOTE_NO, ABORTING, false, act_abort_all),
    T(PREPARING, UNAVAILABLE, ABORTING, false, act_abort_all),
    T(PREPARING, TIMEOUT, ABORTING, false, act_abort_all),

    T(LOGGING, DURABLE, COMMITTING, false, act_send_commits),
    T(LOGGING, LOG_REFUSED, ABORTING, false, act_abort_all),
    T(LOGGING, LOG_FAILED, IN_DOUBT, false, act_in_doubt),
    T(LOGGING, UNAVAILABLE, LOGGING, false, act_none),

    T(COMMITTING, ACK, COMMITTING, false, act_ack),
    T(COMMITTING, ALL_ACKED, COMMITTED, false, act_committed),
    T(COMMITTING, TIMEOUT, COMMITTING, false, act_phase2_retry),
    T(COMMITTING, RESEND, COMMITTING, false, act_phase2_retry),
    T(COMMITTING, UNAVAILABLE, COMMITTING, false, act_lost),

    T(ABORTING, ACK, ABORTING, false, act_ack),
    T(ABORTING, ALL_ACKED, ABORTED, false, act_finish),
    T(ABORTING, TIMEOUT, ABORTING, false, act_phase2_retry),
    T(ABORTING, RESEND, ABORTING, false, act_phase2_retry),
    T(ABORTING, UNAVAILABLE, ABORTING, false, act_lost),
    T(ABORTING, VOTE_YES, ABORTING, false, act_none),
    T(ABORTING, VOTE_READONLY, ABORTING, false, act_none),
    T(ABORTING, VOTE_NO, ABORTING, false, act_none),
    T(ABORTING, EXECUTED, ABORTING, false, act_none),
    T(ABORTING, EXEC_FAILED, ABORTING, false, act_none),

    T(ONE_PHASE, COMMITTED_1PC, COMMITTED, false, act_1pc_done),
    T(ONE_PHASE, ABORTED_1PC, ABORTED, false, act_1pc_done),
    T(ONE_PHASE, TIMEOUT, ONE_PHASE, false, act_1pc_slow),
    T(ONE_PHASE, UNAVAILABLE, UNKNOWN, false, act_1pc_lost),
    T(UNKNOWN, COMMITTED_1PC, COMMITTED, false, act_1pc_done),
    T(UNKNOWN, ABORTED_1PC, ABORTED, false, act_1pc_done),
};

#undef T

#define NTRANSITIONS (sizeof(transitions) / sizeof(transitions[0]))

static const char *const state_names[TX_NSTATES] = {
    "ACTIVE",   "PREPARING", "LOGGING",   "COMMITTING", "COMMITTED",
    "ABORTING", "ABORTED",   "ONE_PHASE", "IN_DOUBT",   "UNKNOWN",
};

static const char *const event_names[TX_NEVENTS] = {
    "START_2PC",    "START_1PC", "VOTE_YES",      "VOTE_READONLY", "VOTE_NO", "UNAVAILABLE",
    "TIMEOUT",      "ALL_VOTED", "ALL_READONLY",  "LOG_REFUSED",   "DURABLE", "LOG_FAILED",
    "ACK",          "ALL_ACKED", "COMMITTED_1PC", "ABORTED_1PC",   "RESEND",  "RECOVER",
    "RECOVER_DONE", "EXEC",      "EXECUTED",      "EXEC_FAILED",   "ABORT",
};

static const char *const branch_names[BR_NSTATES] = {
    "new",        "preparing", "prepared", "readonly", "failed", "unreached", "lost",
    "committing", "committed", "aborting", "aborted",  "open",   "executing",
};

const char *tx_state_name(enum tx_state s)
{
    return (unsigned)s < TX_NSTATES ? state_names[s] : "?";
}

const char *tx_event_name(enum tx_event e)
{
    return (unsigned)e < TX_NEVENTS ? event_names[e] : "?";
}

const char *tx_branch_state_name(enum branch_state s)
{
    return (unsigned)s < BR_NSTATES ? branch_names[s] : "?";
}

static const struct tx_transition *find(enum tx_state s, enum tx_event e)
{
    for (size_t i = 0; i < NTRANSITIONS; i++) {
        if (transitions[i].from == s && transitions[i].ev == e)
            return &transitions[i];
    }
    return NULL;
}

bool tx_is_defined(enum tx_state state, enum tx_event ev)
{
    return find(state, ev) != NULL;
}

enum tx_state tx_next_state(enum tx_state state, enum tx_event ev)
{
    const struct tx_transition *t = find(state, ev);

    return t ? t->to : state;
}

bool tx_is_durable(enum tx_state state, enum tx_event ev)
{
    const struct tx_transition *t = find(state, ev);

    return t && t->durable;
}

bool tx_is_final(const struct tx *tx)
{
    return tx->state == TX_COMMITTED || tx->state == TX_ABORTED;
}

int tx_step(struct tx *tx, enum tx_event ev, const struct tx_evarg *arg)
{
    static const struct tx_evarg none = {NULL, 0, NULL, 0, NULL};
    const struct tx_evarg *a = arg ? arg : &none;

    while (ev != TXE_NONE) {
        const struct tx_transition *t = find(tx->state, ev);
        enum tx_state from = tx->state;

        if (!t) {
            log_warn("tx %s: event %s is not defined in state %s; ignored", tx->gtid,
                     tx_event_name(ev), tx_state_name(tx->state));
            return DTX_ESTATE;
        }
        tx->state = t->to;
        log_debug("tx %s: %s --%s--> %s [%s%s]", tx->gtid, state_names[from], event_names[ev],
                  state_names[t->to], t->action_name, t->durable ? ", forced" : "");
        ev = t->action(tx, ev, a);
        a = &none;
    }
    return 0;
}

/* ---- helpers --------------------------------------------------------------- */

static const char *shard_name(const struct tx *tx, const struct tx_branch *b)
{
    return tx->env->shard_names[b->shard];
}

/* Records the first reason for an abort or an unknown outcome. */
static void set_error(struct tx *tx, const struct tx_branch *b, const struct dtx_err *e, int code,
                      const char *msg)
{
    if (tx_error_code(tx))
        return;
    if (!tx->error && !(tx->error = calloc(1, sizeof(*tx->error))))
        abort();
    if (e && e->code) {
        *tx->error = *e;
    } else {
        dtx_err_clear(tx->error);
        dtx_err_set(tx->error, code, "%s", msg);
    }
    if (b)
        snprintf(tx->error->shard, sizeof(tx->error->shard), "%s", shard_name(tx, b));
}

static void clear_error(struct tx *tx)
{
    free(tx->error);
    tx->error = NULL;
}

static void take_results(struct tx_branch *b, const struct tx_evarg *a)
{
    if (!a->results)
        return;
    free(b->results);
    b->results = strndup(a->results, a->results_len);
    if (!b->results)
        abort();
    b->results_len = a->results_len;
}

static uint32_t count_branches(const struct tx *tx, enum branch_state s1, enum branch_state s2)
{
    uint32_t n = 0;

    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].state == s1 || tx->branches[i].state == s2)
            n++;
    }
    return n;
}

/* Remembers the last problem phase 2 met on b, for operators (dtxctl show). */
static void note_branch_error(struct tx_branch *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void note_branch_error(struct tx_branch *b, const char *fmt, ...)
{
    char msg[DTX_ERR_MSG_MAX];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(b->last_error);
    if (!(b->last_error = strdup(msg)))
        abort();
}

/* Sends what b needs in phase 2 (state: BR_COMMITTING or BR_ABORTING); BR_LOST on failure. */
static void send_phase2(struct tx *tx, struct tx_branch *b, enum branch_state want)
{
    enum tx_send what = want == BR_COMMITTING ? TX_SEND_COMMIT : TX_SEND_ABORT;

    if (tx->env->send(tx, b, what) == 0) {
        b->state = want;
        b->sends++;
    } else {
        b->state = BR_LOST;
        b->lost_in = want;
        note_branch_error(b, "the participant of shard '%s' is not connected", shard_name(tx, b));
    }
}

static void answer(struct tx *tx)
{
    if (tx->answered)
        return;
    tx->env->answer(tx);
    tx->answered = true;
}

/* ---- actions ---------------------------------------------------------------- */

static enum tx_event act_none(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)tx;
    (void)ev;
    (void)a;
    return TXE_NONE;
}

static enum tx_event act_send_prepares(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    enum tx_event next = TXE_NONE;

    (void)ev;
    (void)a;
    tx->pending = 0;
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (tx->env->send(tx, b, TX_SEND_PREPARE) == 0) {
            b->state = BR_PREPARING;
            tx->pending++;
            continue;
        }
        b->state = BR_UNREACHED;
        if (!tx_error_code(tx)) {
            char msg[128];

            snprintf(msg, sizeof(msg), "the participant of shard '%s' is not reachable",
                     shard_name(tx, b));
            set_error(tx, b, NULL, DTX_EUNAVAIL, msg);
        }
        next = TXE_UNAVAILABLE;
    }
    tx->env->arm(tx, tx->timeout_ms);
    return next;
}

static enum tx_event act_send_one_phase(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = &tx->branches[0];
    char msg[128];

    (void)ev;
    (void)a;
    if (tx->env->send(tx, b, TX_SEND_ONE_PHASE) == 0) {
        b->state = BR_PREPARING;
        tx->pending = 1;
        tx->env->arm(tx, tx->timeout_ms + tx->commit_wait_ms);
        return TXE_NONE;
    }
    b->state = BR_UNREACHED;
    snprintf(msg, sizeof(msg), "the participant of shard '%s' is not reachable", shard_name(tx, b));
    set_error(tx, b, NULL, DTX_EUNAVAIL, msg);
    return TXE_ABORTED_1PC;
}

static enum tx_event act_vote(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;

    if (!b || b->state != BR_PREPARING) {
        log_warn("tx %s: unexpected vote from shard '%s' in branch state %s; ignored", tx->gtid,
                 b ? shard_name(tx, b) : "?", b ? tx_branch_state_name(b->state) : "?");
        return act_none(tx, ev, a);
    }
    take_results(b, a);
    b->xid = a->xid;
    b->state = ev == TXE_VOTE_YES ? BR_PREPARED : BR_READONLY;
    if (--tx->pending > 0)
        return TXE_NONE;
    return count_branches(tx, BR_PREPARED, BR_PREPARED) ? TXE_ALL_VOTED : TXE_ALL_READONLY;
}

/* The bytes of results the COMMIT record would carry (an idempotency key's answer). */
static size_t logged_results_bytes(const struct tx *tx)
{
    size_t n = 0;

    if (!tx->idem_key)
        return 0;
    for (size_t i = 0; i < tx->nbranches; i++)
        n += tx->branches[i].results_len;
    return n;
}

static enum tx_event act_log_commit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    size_t results = logged_results_bytes(tx);
    char msg[DTX_ERR_MSG_MAX];

    (void)ev;
    (void)a;
    if (tx->results_limit && results > tx->results_limit) {
        snprintf(msg, sizeof(msg),
                 "the results (%zu bytes) exceed max_logged_results_bytes (%u): a transaction "
                 "with an idempotency key keeps its results in the decision log",
                 results, tx->results_limit);
        set_error(tx, NULL, NULL, DTX_ETOOBIG, msg);
        return TXE_LOG_REFUSED;
    }
    tx->env->arm(tx, 0);
    tx->decided_wall_us = ev_wall_us();
    tx->lsn = tx->env->log_commit(tx);
    if (tx->lsn == 0) {
        set_error(tx, NULL, NULL, DTX_ELOGFAIL,
                  "the decision log is not writable, so the commit could not be recorded");
        return TXE_LOG_REFUSED;
    }
    return TXE_NONE;
}

static void note_abort_cause(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;
    char msg[DTX_ERR_MSG_MAX];

    if ((ev == TXE_VOTE_NO || ev == TXE_EXEC_FAILED) && b) {
        b->state = BR_FAILED;
        set_error(tx, b, a->err, DTX_EVOTENO, "a participant voted no");
    } else if (ev == TXE_ABORT) {
        set_error(tx, NULL, a->err, DTX_EABORTED, "the client aborted the transaction");
    } else if (ev == TXE_TIMEOUT && count_branches(tx, BR_EXECUTING, BR_EXECUTING)) {
        const struct tx_branch *late = NULL;

        for (size_t i = 0; i < tx->nbranches && !late; i++) {
            if (tx->branches[i].state == BR_EXECUTING)
                late = &tx->branches[i];
        }
        snprintf(msg, sizeof(msg), "shard '%s' did not finish the ops within %u ms",
                 shard_name(tx, late), tx->timeout_ms);
        set_error(tx, late, NULL, DTX_ETIMEDOUT, msg);
    } else if (ev == TXE_TIMEOUT && tx->interactive &&
               !count_branches(tx, BR_PREPARING, BR_PREPARING)) {
        snprintf(msg, sizeof(msg),
                 "the transaction was idle for more than %u ms (its timeout_ms) and was aborted",
                 tx->idle_ms);
        set_error(tx, NULL, NULL, DTX_ETIMEDOUT, msg);
    } else if (ev == TXE_UNAVAILABLE && b) {
        b->state = BR_LOST;
        b->lost_in = BR_ABORTING;
        snprintf(msg, sizeof(msg), "the participant of shard '%s' was lost before it %s",
                 shard_name(tx, b), tx->interactive ? "committed" : "voted");
        set_error(tx, b, NULL, DTX_EUNAVAIL, msg);
    } else if (ev == TXE_TIMEOUT) {
        const struct tx_branch *late = NULL;

        for (size_t i = 0; i < tx->nbranches && !late; i++) {
            if (tx->branches[i].state == BR_PREPARING)
                late = &tx->branches[i];
        }
        snprintf(msg, sizeof(msg), "shard '%s' did not vote within %u ms",
                 late ? shard_name(tx, late) : "?", tx->timeout_ms);
        set_error(tx, late, NULL, DTX_ETIMEDOUT, msg);
    }
}

static enum tx_event act_abort_all(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    note_abort_cause(tx, ev, a);
    tx->decided_wall_us = ev_wall_us();
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (b->state == BR_PREPARING || b->state == BR_PREPARED || b->state == BR_OPEN ||
            b->state == BR_EXECUTING)
            send_phase2(tx, b, BR_ABORTING);
    }
    tx->pending = count_branches(tx, BR_ABORTING, BR_LOST);
    tx->retry_ms = RETRY_MIN_MS;
    tx->env->arm(tx, tx->commit_wait_ms ? tx->commit_wait_ms : RETRY_MIN_MS);
    return tx->pending == 0 ? TXE_ALL_ACKED : TXE_NONE;
}

static enum tx_event act_send_commits(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].state == BR_PREPARED)
            send_phase2(tx, &tx->branches[i], BR_COMMITTING);
    }
    tx->pending = count_branches(tx, BR_COMMITTING, BR_LOST);
    tx->retry_ms = RETRY_MIN_MS;
    tx->env->arm(tx, tx->commit_wait_ms ? tx->commit_wait_ms : RETRY_MIN_MS);
    return tx->pending == 0 ? TXE_ALL_ACKED : TXE_NONE;
}

static enum tx_event act_in_doubt(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    set_error(tx, NULL, NULL, DTX_EUNKNOWN,
              "the decision log failed while the commit was being recorded; the outcome is "
              "settled when the coordinator restarts");
    answer(tx);
    return TXE_NONE;
}

static enum tx_event act_ack(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;
    enum branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

    if (!b || (b->state != want && !(b->state == BR_LOST && b->lost_in == want))) {
        log_debug("tx %s: duplicate or stale ack ignored", tx->gtid);
        return act_none(tx, ev, a);
    }
    if (a->err && a->err->code) {
        log_warn("tx %s: shard '%s' acknowledged with a problem: %s", tx->gtid, shard_name(tx, b),
                 a->err->msg);
        note_branch_error(b, "shard '%s' acknowledged with a problem: %s", shard_name(tx, b),
                          a->err->msg);
    }
    b->state = want == BR_COMMITTING ? BR_COMMITTED : BR_ABORTED;
    return --tx->pending == 0 ? TXE_ALL_ACKED : TXE_NONE;
}

static enum tx_event act_finish(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    tx->env->arm(tx, 0);
    answer(tx);
    tx->env->finished(tx);
    return TXE_NONE;
}

static enum tx_event act_committed(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    tx->env->log_end(tx);
    return act_finish(tx, ev, a);
}

static enum tx_event act_phase2_retry(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    enum branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

    (void)a;
    if (ev == TXE_TIMEOUT)
        answer(tx); /* the client has waited commit_wait_ms; it gets what is known */
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (b->state == BR_LOST || (ev == TXE_TIMEOUT && b->state == want))
            send_phase2(tx, b, want);
    }
    if (ev == TXE_TIMEOUT) {
        tx->env->arm(tx, tx->retry_ms);
        tx->retry_ms = tx->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : tx->retry_ms * 2;
    }
    return TXE_NONE;
}

static enum tx_event act_lost(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;
    enum branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

    if (b && b->state == want) {
        b->state = BR_LOST;
        b->lost_in = want;
        note_branch_error(b, "the participant of shard '%s' was lost before it acknowledged",
                          shard_name(tx, b));
    }
    return act_none(tx, ev, a);
}

static enum tx_event act_1pc_done(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = &tx->branches[0];

    take_results(b, a);
    if (ev == TXE_COMMITTED_1PC) {
        b->state = BR_COMMITTED;
        clear_error(tx);
    } else {
        if (b->state != BR_UNREACHED)
            b->state = BR_FAILED;
        if (tx_error_code(tx) == DTX_EUNKNOWN)
            clear_error(tx); /* the outcome is known after all */
        set_error(tx, b, a->err, DTX_EVOTENO, "the shard rolled the transaction back");
    }
    tx->pending = 0;
    tx->decided_wall_us = ev_wall_us();
    return act_finish(tx, ev, a);
}

static enum tx_event act_1pc_slow(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    answer(tx);
    return TXE_NONE;
}

static enum tx_event act_1pc_lost(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = &tx->branches[0];
    char msg[160];

    (void)ev;
    (void)a;
    b->state = BR_LOST;
    snprintf(msg, sizeof(msg),
             "the participant of shard '%s' was lost while committing; the outcome is unknown",
             shard_name(tx, b));
    set_error(tx, b, NULL, DTX_EUNKNOWN, msg);
    tx->env->arm(tx, 0);
    answer(tx);
    tx->env->finished(tx);
    return TXE_NONE;
}

/*
 * Replay of a COMMIT record without END: every branch must be told to
 * commit again (COMMIT PREPARED is idempotent for the participant). They
 * are marked lost; RESEND delivers them as each participant connects.
 */
static enum tx_event act_recover(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    for (size_t i = 0; i < tx->nbranches; i++) {
        tx->branches[i].state = BR_LOST;
        tx->branches[i].lost_in = BR_COMMITTING;
    }
    tx->pending = (uint32_t)tx->nbranches;
    tx->answered = true; /* the client of a previous run cannot be answered */
    tx->retry_ms = RETRY_MIN_MS;
    tx->env->arm(tx, RETRY_MIN_MS);
    return tx->pending == 0 ? TXE_ALL_ACKED : TXE_NONE;
}

static enum tx_event act_recovered(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    for (size_t i = 0; i < tx->nbranches; i++)
        tx->branches[i].state = BR_COMMITTED;
    tx->answered = true;
    tx->env->finished(tx);
    return TXE_NONE;
}

/*
 * Interactive: the branches holding ops (b->ops) get them; the call is
 * answered when every one ran (act_executed). Until then the call's
 * deadline is the transaction's timeout_ms; afterwards its idle limit.
 */
static enum tx_event act_exec(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    char msg[128];

    (void)ev;
    (void)a;
    tx->pending = 0;
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (!b->ops)
            continue;
        if (tx->env->send(tx, b, TX_SEND_EXEC) == 0) {
            b->state = BR_EXECUTING;
            tx->pending++;
            continue;
        }
        cJSON_Delete(b->ops);
        b->ops = NULL;
        if (b->state == BR_NEW)
            b->state = BR_UNREACHED;
        snprintf(msg, sizeof(msg), "the participant of shard '%s' is not reachable",
                 shard_name(tx, b));
        set_error(tx, b, NULL, DTX_EUNAVAIL, msg);
        return TXE_UNAVAILABLE;
    }
    tx->env->arm(tx, tx->timeout_ms);
    return tx->pending ? TXE_NONE : TXE_EXECUTED;
}

static enum tx_event act_executed(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;

    if (b) {
        if (b->state != BR_EXECUTING)
            return act_none(tx, ev, a);
        take_results(b, a);
        b->state = BR_OPEN;
        if (--tx->pending > 0)
            return TXE_NONE;
    }
    tx->env->arm(tx, tx->idle_ms);
    answer(tx);
    return TXE_NONE;
}

/* ---- lifecycle ------------------------------------------------------------------ */

struct tx *tx_new(const char *gtid, const struct tx_env *env, size_t nbranches, size_t nops)
{
    struct tx *tx = calloc(1, sizeof(*tx));

    if (!tx)
        abort();
    snprintf(tx->gtid, sizeof(tx->gtid), "%s", gtid);
    tx->env = env;
    tx->state = TX_ACTIVE;
    tx->protocol = 2;
    list_init(&tx->link);
    list_init(&tx->wait_link);
    tx->nbranches = nbranches;
    tx->branches = nbranches ? calloc(nbranches, sizeof(*tx->branches)) : NULL;
    tx->nops = nops;
    tx->ops = nops ? calloc(nops, sizeof(*tx->ops)) : NULL;
    if ((nbranches && !tx->branches) || (nops && !tx->ops))
        abort();
    return tx;
}

void tx_free(struct tx *tx)
{
    if (!tx)
        return;
    for (size_t i = 0; i < tx->nbranches; i++) {
        cJSON_Delete(tx->branches[i].ops);
        free(tx->branches[i].results);
        free(tx->branches[i].last_error);
    }
    free(tx->branches);
    free(tx->ops);
    free(tx->idem_key);
    free(tx->stored_results);
    free(tx->answer_body);
    free(tx->error);
    free(tx);
}

/* ---- rendering -------------------------------------------------------------------- */

const char *tx_status(const struct tx *tx)
{
    switch (tx->state) {
    case TX_ACTIVE:
        return "active";
    case TX_PREPARING:
    case TX_LOGGING:
    case TX_ONE_PHASE:
    case TX_IN_DOUBT:
        return "preparing";
    case TX_COMMITTING:
        return "committing";
    case TX_COMMITTED:
        return "committed";
    case TX_ABORTING:
        return "aborting";
    case TX_ABORTED:
        return "aborted";
    case TX_UNKNOWN:
        return "unknown";
    case TX_NSTATES:
        break;
    }
    return "unknown";
}

/*
 * The client's results array: each op's result, in op order, as the raw
 * JSON text the participant sent with "shard" put in front. Nothing is
 * parsed, so no value is rounded on the way.
 */
static cJSON *results_array(const struct tx *tx)
{
    cJSON *arr;

    if (tx->stored_results)
        return cJSON_CreateRaw(tx->stored_results);
    arr = jsonx_new_array();
    for (size_t i = 0; i < tx->nops; i++) {
        const struct tx_branch *b = &tx->branches[tx->ops[i].branch];
        const char *p = NULL;
        size_t n = 0;
        struct buf item = BUF_INIT;

        buf_printf(&item, "{\"shard\":\"%s\"", shard_name(tx, b));
        if (b->results && msg_result(b->results, b->results_len, tx->ops[i].index, &p, &n) &&
            n > 2 && p[0] == '{') {
            buf_putc(&item, ',');
            buf_append(&item, p + 1, n - 1);
        } else {
            buf_putc(&item, '}');
        }
        jsonx_append(arr, cJSON_CreateRaw(item.data));
        buf_release(&item);
    }
    return arr;
}

char *tx_render_results(const struct tx *tx)
{
    cJSON *arr = results_array(tx);
    char *s = jsonx_print(arr);

    cJSON_Delete(arr);
    return s;
}

static void add_pending_shards(const struct tx *tx, cJSON *root)
{
    cJSON *arr = NULL;

    for (size_t i = 0; i < tx->nbranches; i++) {
        const struct tx_branch *b = &tx->branches[i];

        if (b->state != BR_COMMITTING && b->state != BR_ABORTING && b->state != BR_LOST)
            continue;
        if (!arr)
            arr = jsonx_new_array();
        jsonx_append(arr, cJSON_CreateString(shard_name(tx, b)));
    }
    if (arr)
        jsonx_add(root, "pending_shards", arr);
}

/* An aborted transaction's error (every abort records one; "aborted" if somehow not). */
static void add_error(cJSON *root, const struct tx *tx)
{
    struct dtx_err e;

    if (tx->error) {
        jsonx_add(root, "error", jsonx_error_obj(tx->error));
        return;
    }
    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_EABORTED, "the transaction was aborted");
    jsonx_add(root, "error", jsonx_error_obj(&e));
}

char *tx_render_answer(const struct tx *tx, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    char *s;

    jsonx_add_str(root, "gtid", tx->gtid);
    switch (tx->state) {
    case TX_COMMITTED:
    case TX_COMMITTING:
        *status = 200;
        jsonx_add_str(root, "status", "committed");
        jsonx_add(root, "results", results_array(tx));
        break;
    case TX_ABORTED:
    case TX_ABORTING:
        *status = tx_error_code(tx) == DTX_EBUSY ? 429 : 409; /* a shard had no room: retry */
        jsonx_add_str(root, "status", "aborted");
        add_error(root, tx);
        break;
    default:
        *status = 504;
        jsonx_add_str(root, "status", tx_status(tx));
        if (tx->error) {
            jsonx_add(root, "error", jsonx_error_obj(tx->error));
        } else {
            struct dtx_err e;

            dtx_err_clear(&e);
            dtx_err_set(&e, DTX_EUNKNOWN,
                        "the outcome is not known yet; ask GET /v1/transactions/%s", tx->gtid);
            jsonx_add(root, "error", jsonx_error_obj(&e));
        }
        break;
    }
    add_pending_shards(tx, root);
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

cJSON *tx_state_json(const struct tx *tx)
{
    cJSON *root = jsonx_new_object();
    cJSON *shards = jsonx_new_array();

    jsonx_add_str(root, "gtid", tx->gtid);
    jsonx_add_str(root, "status", tx_status(tx));
    jsonx_add_str(root, "protocol", tx->protocol == 3 ? "3pc" : "2pc");
    if (tx->nbranches == 1 && tx->lsn == 0 && !tx->replayed)
        jsonx_add_bool(root, "one_phase", true);
    if (tx->state == TX_IN_DOUBT)
        jsonx_add_bool(root, "in_doubt", true);
    if (tx->idem_key)
        jsonx_add_str(root, "idempotency_key", tx->idem_key);
    jsonx_add_time(root, "created_at", tx->created_wall_us);
    jsonx_add_time(root, "decided_at", tx->decided_wall_us);
    for (size_t i = 0; i < tx->nbranches; i++) {
        cJSON *b = jsonx_new_object();

        jsonx_add_str(b, "name", shard_name(tx, &tx->branches[i]));
        jsonx_add_str(b, "state", tx_branch_state_name(tx->branches[i].state));
        if (tx->branches[i].xid) {
            char xid[24];

            snprintf(xid, sizeof(xid), "%" PRIu64, tx->branches[i].xid);
            jsonx_add_str(b, "xid", xid);
        }
        if (tx->branches[i].sends)
            jsonx_add_num(b, "phase2_sends", tx->branches[i].sends);
        if (tx->branches[i].last_error)
            jsonx_add_str(b, "last_error", tx->branches[i].last_error);
        if (tx->branches[i].forgotten)
            jsonx_add_bool(b, "forgotten", true);
        jsonx_append(shards, b);
    }
    jsonx_add(root, "shards", shards);
    if (tx->error)
        jsonx_add(root, "error", jsonx_error_obj(tx->error));
    return root;
}

char *tx_render_state(const struct tx *tx)
{
    cJSON *root = tx_state_json(tx);
    char *s = jsonx_print(root);

    cJSON_Delete(root);
    return s;
}
