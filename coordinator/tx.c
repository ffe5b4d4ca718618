/*
 * tx.c - the commit protocol: two-phase commit with presumed abort, and
 * one-phase commit for a transaction that touches one shard.
 *
 * State diagram (event -> action in brackets; * = forces a record). The
 * unit test tests/unit/test_tx.c checks this diagram against the table:
 * every line of the form "FROM --EVENT [action]--> TO" below is a row of
 * transitions[] and every row is a line here.
 *
 *   ACTIVE --COMMIT [act_commit]--> ACTIVE                  (then START_2PC, START_1PC or
 *                                                           ALL_READONLY: the path)
 *   ACTIVE --START_2PC [act_send_prepares]--> PREPARING
 *   ACTIVE --START_1PC [act_send_one_phase]--> ONE_PHASE
 *   ACTIVE --RECOVER [act_recover]--> COMMITTING             (replay: COMMIT, no END)
 *   ACTIVE --RECOVER_DONE [act_recovered]--> COMMITTED       (replay: COMMIT and END)
 *
 *   PREPARING --VOTE_YES [act_vote]--> PREPARING
 *   PREPARING --VOTE_READONLY [act_vote]--> PREPARING
 *   PREPARING --ALL_VOTED [act_log_commit*]--> LOGGING
 *   PREPARING --ALL_READONLY [act_forget_finish]--> COMMITTED (nothing to commit)
 *   PREPARING --KEEP_ANSWER [act_keep_answer*]--> LOGGING   (nothing to commit, but an
 *                                                           idempotency key's answer
 *                                                           must outlive a restart)
 *   PREPARING --VOTE_NO [act_abort_all]--> ABORTING
 *   PREPARING --UNAVAILABLE [act_abort_all]--> ABORTING
 *   PREPARING --TIMEOUT [act_abort_all]--> ABORTING
 *
 *   LOGGING --DURABLE [act_send_commits]--> COMMITTING
 *   LOGGING --LOG_REFUSED [act_abort_all]--> ABORTING       (record never written: log
 *                                                           failed, or results too big)
 *   LOGGING --LOG_FAILED [act_in_doubt]--> IN_DOUBT         (record may be on disk)
 *   LOGGING --UNAVAILABLE [act_none]--> LOGGING             (handled when sending)
 *
 *   COMMITTING --ACK [act_ack]--> COMMITTING
 *   COMMITTING --FORGET [act_forget]--> COMMITTING          (as an ack, marked forgotten)
 *   COMMITTING --ALL_ACKED [act_committed]--> COMMITTED     (END record, not forced)
 *   COMMITTING --TIMEOUT [act_phase2_retry]--> COMMITTING
 *   COMMITTING --RESEND [act_phase2_retry]--> COMMITTING
 *   COMMITTING --KICK [act_phase2_retry]--> COMMITTING
 *   COMMITTING --UNAVAILABLE [act_lost]--> COMMITTING
 *
 *   ABORTING --ACK [act_ack]--> ABORTING
 *   ABORTING --FORGET [act_forget]--> ABORTING
 *   ABORTING --ALL_ACKED [act_forget_finish]--> ABORTED
 *   ABORTING --TIMEOUT [act_phase2_retry]--> ABORTING
 *   ABORTING --RESEND [act_phase2_retry]--> ABORTING
 *   ABORTING --KICK [act_phase2_retry]--> ABORTING
 *   ABORTING --UNAVAILABLE [act_lost]--> ABORTING
 *   ABORTING --VOTE_YES [act_none]--> ABORTING              (late votes and calls: the
 *   ABORTING --VOTE_READONLY [act_none]--> ABORTING          abort is on its way)
 *   ABORTING --VOTE_NO [act_none]--> ABORTING
 *   ABORTING --EXECUTED [act_none]--> ABORTING
 *   ABORTING --EXEC_FAILED [act_none]--> ABORTING
 *
 *   Interactive transactions stay ACTIVE while their client sends calls:
 *   ACTIVE --BEGIN [act_begin]--> ACTIVE                    (open; the idle timer runs)
 *   ACTIVE --EXEC [act_exec]--> ACTIVE                      (a call's ops go out)
 *   ACTIVE --EXECUTED [act_executed]--> ACTIVE              (the call is answered when all ran)
 *   ACTIVE --EXEC_FAILED [act_abort_all]--> ABORTING
 *   ACTIVE --UNAVAILABLE [act_abort_all]--> ABORTING
 *   ACTIVE --TIMEOUT [act_abort_all]--> ABORTING
 *   ACTIVE --ABORT [act_abort_all]--> ABORTING
 *   ACTIVE --ALL_READONLY [act_finish]--> COMMITTED         (commit with no branch)
 *
 *   ONE_PHASE --COMMITTED_1PC [act_1pc_done]--> COMMITTED
 *   ONE_PHASE --ABORTED_1PC [act_1pc_done]--> ABORTED
 *   ONE_PHASE --TIMEOUT [act_1pc_slow]--> ONE_PHASE         (client told: not known yet)
 *   ONE_PHASE --UNAVAILABLE [act_1pc_lost]--> UNKNOWN
 *   UNKNOWN --COMMITTED_1PC [act_1pc_done]--> COMMITTED
 *   UNKNOWN --ABORTED_1PC [act_1pc_done]--> ABORTED
 *
 * Presumed abort: a decision to commit is durable (LOGGING -> DURABLE)
 * before any COMMIT PREPARED is sent or the client hears of it; an abort is
 * never recorded, because a transaction without a COMMIT record is aborted
 * by definition, after any crash (tx_presumed()).
 *
 * Enforced by tx_step(): a transition marked durable (*) sends nothing and
 * ends with a position in the decision store, or is refused (LOG_REFUSED);
 * a COMMIT is sent only once that position was reported durable. Either
 * violation is a bug in this file and stops the process before anyone
 * hears of an undurable decision.
 *
 * Invariants: tx->pending counts the branches whose vote (PREPARING,
 * ONE_PHASE) or acknowledgement (COMMITTING, ABORTING) is awaited; in
 * COMMITTING and ABORTING a BR_LOST branch is counted too, since its
 * message must still be delivered. The client is answered at most once per
 * request (tx->answered).
 *
 * Time, for the metrics: every change of state ends the phase the old
 * state stood for (phase_of(): PREPARING is "prepare", LOGGING
 * "commit_log", COMMITTING "commit", ...), and tx_step_one() reports how
 * long it took (tx_env.phase_done), from the monotonic clock. Nothing of
 * the protocol depends on it.
 *
 * Thread model: called only from the coordinator's event-loop thread.
 */
#include "tx_impl.h"

#include "dtx/ev.h"
#include "dtx/failpoint.h"
#include "dtx/idemkey.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/txreq.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RETRY_MIN_MS TX_RETRY_MIN_MS
#define RETRY_MAX_MS TX_RETRY_MAX_MS

static enum tx_event act_none(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_begin(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_commit(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_prepares(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_one_phase(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_vote(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_log_commit(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_keep_answer(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_abort_all(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_send_commits(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_in_doubt(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_ack(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_forget(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_committed(struct tx *, enum tx_event, const struct tx_evarg *);
static enum tx_event act_forget_finish(struct tx *, enum tx_event, const struct tx_evarg *);
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

#define T TX_T

static const struct tx_transition transitions[] = {
    T(ACTIVE, COMMIT, ACTIVE, false, act_commit),
    T(ACTIVE, START_2PC, PREPARING, false, act_send_prepares),
    T(ACTIVE, START_1PC, ONE_PHASE, false, act_send_one_phase),
    T(ACTIVE, RECOVER, COMMITTING, false, act_recover),
    T(ACTIVE, RECOVER_DONE, COMMITTED, false, act_recovered),
    T(ACTIVE, BEGIN, ACTIVE, false, act_begin),
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
    T(PREPARING, ALL_READONLY, COMMITTED, false, act_forget_finish),
    T(PREPARING, KEEP_ANSWER, LOGGING, true, act_keep_answer),
    T(PREPARING, VOTE_NO, ABORTING, false, act_abort_all),
    T(PREPARING, UNAVAILABLE, ABORTING, false, act_abort_all),
    T(PREPARING, TIMEOUT, ABORTING, false, act_abort_all),

    T(LOGGING, DURABLE, COMMITTING, false, act_send_commits),
    T(LOGGING, LOG_REFUSED, ABORTING, false, act_abort_all),
    T(LOGGING, LOG_FAILED, IN_DOUBT, false, act_in_doubt),
    T(LOGGING, UNAVAILABLE, LOGGING, false, act_none),

    T(COMMITTING, ACK, COMMITTING, false, act_ack),
    T(COMMITTING, FORGET, COMMITTING, false, act_forget),
    T(COMMITTING, ALL_ACKED, COMMITTED, false, act_committed),
    T(COMMITTING, TIMEOUT, COMMITTING, false, act_phase2_retry),
    T(COMMITTING, RESEND, COMMITTING, false, act_phase2_retry),
    T(COMMITTING, KICK, COMMITTING, false, act_phase2_retry),
    T(COMMITTING, UNAVAILABLE, COMMITTING, false, act_lost),

    T(ABORTING, ACK, ABORTING, false, act_ack),
    T(ABORTING, FORGET, ABORTING, false, act_forget),
    T(ABORTING, ALL_ACKED, ABORTED, false, act_forget_finish),
    T(ABORTING, TIMEOUT, ABORTING, false, act_phase2_retry),
    T(ABORTING, RESEND, ABORTING, false, act_phase2_retry),
    T(ABORTING, KICK, ABORTING, false, act_phase2_retry),
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
    [TX_ACTIVE] = "ACTIVE",
    [TX_PREPARING] = "PREPARING",
    [TX_LOGGING] = "LOGGING",
    [TX_COMMITTING] = "COMMITTING",
    [TX_COMMITTED] = "COMMITTED",
    [TX_ABORTING] = "ABORTING",
    [TX_ABORTED] = "ABORTED",
    [TX_ONE_PHASE] = "ONE_PHASE",
    [TX_IN_DOUBT] = "IN_DOUBT",
    [TX_UNKNOWN] = "UNKNOWN",
    [TX_PRECOMMITTING] = "PRECOMMITTING",
    [TX_ACCEPTING] = "ACCEPTING",
    [TX_LEARNING] = "LEARNING",
};

static const char *const event_names[TX_NEVENTS] = {
    [TXE_BEGIN] = "BEGIN",
    [TXE_COMMIT] = "COMMIT",
    [TXE_START_2PC] = "START_2PC",
    [TXE_START_1PC] = "START_1PC",
    [TXE_VOTE_YES] = "VOTE_YES",
    [TXE_VOTE_READONLY] = "VOTE_READONLY",
    [TXE_VOTE_NO] = "VOTE_NO",
    [TXE_UNAVAILABLE] = "UNAVAILABLE",
    [TXE_TIMEOUT] = "TIMEOUT",
    [TXE_ALL_VOTED] = "ALL_VOTED",
    [TXE_ALL_READONLY] = "ALL_READONLY",
    [TXE_KEEP_ANSWER] = "KEEP_ANSWER",
    [TXE_LOG_REFUSED] = "LOG_REFUSED",
    [TXE_DURABLE] = "DURABLE",
    [TXE_LOG_FAILED] = "LOG_FAILED",
    [TXE_ACK] = "ACK",
    [TXE_ALL_ACKED] = "ALL_ACKED",
    [TXE_COMMITTED_1PC] = "COMMITTED_1PC",
    [TXE_ABORTED_1PC] = "ABORTED_1PC",
    [TXE_RESEND] = "RESEND",
    [TXE_KICK] = "KICK",
    [TXE_FORGET] = "FORGET",
    [TXE_RECOVER] = "RECOVER",
    [TXE_RECOVER_DONE] = "RECOVER_DONE",
    [TXE_EXEC] = "EXEC",
    [TXE_EXECUTED] = "EXECUTED",
    [TXE_EXEC_FAILED] = "EXEC_FAILED",
    [TXE_ABORT] = "ABORT",
    [TXE_ACCEPTED] = "ACCEPTED",
    [TXE_REJECTED] = "REJECTED",
    [TXE_MAJORITY] = "MAJORITY",
    [TXE_OUTVOTED] = "OUTVOTED",
    [TXE_TAKEN_OVER] = "TAKEN_OVER",
    [TXE_LEARNED_COMMIT] = "LEARNED_COMMIT",
    [TXE_LEARNED_ABORT] = "LEARNED_ABORT",
    [TXE_RECOVER_PRECOMMITTED] = "RECOVER_PRECOMMITTED",
};

static const char *const branch_names[BR_NSTATES] = {
    [BR_NEW] = "new",
    [BR_PREPARING] = "preparing",
    [BR_PREPARED] = "prepared",
    [BR_READONLY] = "readonly",
    [BR_FAILED] = "failed",
    [BR_UNREACHED] = "unreached",
    [BR_LOST] = "lost",
    [BR_COMMITTING] = "committing",
    [BR_COMMITTED] = "committed",
    [BR_ABORTING] = "aborting",
    [BR_ABORTED] = "aborted",
    [BR_OPEN] = "open",
    [BR_EXECUTING] = "executing",
};

const char *tx_state_name(enum tx_state s)
{
    return (unsigned)s < TX_NSTATES ? state_names[s] : "?";
}

const char *tx_event_name(enum tx_event e)
{
    return (unsigned)e < TX_NEVENTS ? event_names[e] : "?";
}

const char *tx_branch_state_name(enum tx_branch_state s)
{
    return (unsigned)s < BR_NSTATES ? branch_names[s] : "?";
}

/* The row for (s, e) in protocol's tables: three-phase commit's own rows first. */
static const struct tx_transition *find(int protocol, enum tx_state s, enum tx_event e)
{
    const struct tx_transition *t = protocol == 3 ? tx3pc_find(s, e) : NULL;

    for (size_t i = 0; !t && i < NTRANSITIONS; i++) {
        if (transitions[i].from == s && transitions[i].ev == e)
            t = &transitions[i];
    }
    return t;
}

bool tx_is_defined(int protocol, enum tx_state state, enum tx_event ev)
{
    return find(protocol, state, ev) != NULL;
}

enum tx_state tx_next_state(int protocol, enum tx_state state, enum tx_event ev)
{
    const struct tx_transition *t = find(protocol, state, ev);

    return t ? t->to : state;
}

bool tx_is_durable(int protocol, enum tx_state state, enum tx_event ev)
{
    const struct tx_transition *t = find(protocol, state, ev);

    return t && t->durable;
}

const char *tx_action_name(int protocol, enum tx_state state, enum tx_event ev)
{
    const struct tx_transition *t = find(protocol, state, ev);

    return t ? t->action_name : NULL;
}

/* A broken protocol invariant: stop before anyone hears of an undurable decision. */
static void protocol_bug(const struct tx *tx, const char *what)
{
    log_error("tx %s: protocol bug in state %s: %s; stopping", tx->gtid, state_names[tx->state],
              what);
    abort();
}

/* After a durable transition: nothing was sent, and the record has a position (or was refused). */
static void check_durable(const struct tx *tx, enum tx_event next)
{
    if (tx->sent_in_step)
        protocol_bug(tx, "a transition that forces a record sent a message");
    if (tx->forcing == 0 && next != TXE_LOG_REFUSED && next != TXE_TAKEN_OVER)
        protocol_bug(tx, "a transition that forces a record left none queued");
}

static const char *const phase_names[TX_NPHASES] = {
    [TXPH_PREPARE] = "prepare",
    [TXPH_ONE_PHASE] = "one_phase",
    [TXPH_PRECOMMIT_LOG] = "precommit_log",
    [TXPH_PRECOMMIT] = "precommit",
    [TXPH_COMMIT_LOG] = "commit_log",
    [TXPH_COMMIT] = "commit",
    [TXPH_ABORT] = "abort",
    [TXPH_LEARN] = "learn",
};

const char *tx_phase_name(enum tx_phase ph)
{
    return (unsigned)ph < TX_NPHASES ? phase_names[ph] : "?";
}

bool tx_phase_is_3pc(enum tx_phase ph)
{
    return ph == TXPH_PRECOMMIT_LOG || ph == TXPH_PRECOMMIT || ph == TXPH_LEARN;
}

/* The phase a state stands for (TX_NPHASES: none: open, final, in doubt). */
static enum tx_phase phase_of(enum tx_state s)
{
    switch (s) {
    case TX_PREPARING:
        return TXPH_PREPARE;
    case TX_ONE_PHASE:
        return TXPH_ONE_PHASE;
    case TX_PRECOMMITTING:
        return TXPH_PRECOMMIT_LOG;
    case TX_ACCEPTING:
        return TXPH_PRECOMMIT;
    case TX_LOGGING:
        return TXPH_COMMIT_LOG;
    case TX_COMMITTING:
        return TXPH_COMMIT;
    case TX_ABORTING:
        return TXPH_ABORT;
    case TX_LEARNING:
        return TXPH_LEARN;
    default:
        return TX_NPHASES;
    }
}

/* tx leaves state from: the phase it stood for is over (reported to the metrics). */
static void leave_state(struct tx *tx, enum tx_state from)
{
    uint64_t now = ev_clock_us();
    enum tx_phase ph = phase_of(from);

    if (ph != TX_NPHASES && !tx->replayed && tx->env->phase_done)
        tx->env->phase_done(tx, ph, now - tx->state_since_us);
    tx->state_since_us = now;
}

/* The rows tx follows: three-phase commit's only while its acceptors can decide something. */
static int rows_of(const struct tx *tx)
{
    return tx->two_pc_rows ? 2 : tx->protocol;
}

int tx_step_one(struct tx *tx, enum tx_event ev, const struct tx_evarg *a, enum tx_event *next)
{
    const struct tx_transition *t = find(rows_of(tx), tx->state, ev);
    enum tx_state from = tx->state;

    if (!t) {
        log_warn("tx %s: event %s is not defined in state %s; ignored", tx->gtid, tx_event_name(ev),
                 tx_state_name(tx->state));
        return DTX_ESTATE;
    }
    if (t->to != from)
        leave_state(tx, from);
    tx->state = t->to;
    log_debug("tx %s: %s --%s--> %s [%s%s]", tx->gtid, state_names[from], event_names[ev],
              state_names[t->to], t->action_name, t->durable ? ", forced" : "");
    tx->sent_in_step = 0;
    *next = t->action(tx, ev, a);
    if (t->durable)
        check_durable(tx, *next);
    return 0;
}

int tx_step(struct tx *tx, enum tx_event ev, const struct tx_evarg *arg)
{
    static const struct tx_evarg none = {0};
    const struct tx_evarg *a = arg ? arg : &none;
    bool deciding = tx->state == TX_PREPARING;
    struct log_ctx prev = log_ctx_get();
    int rc = 0;

    /* every line of the step names it, and the request being served (else the one that began
     * it) */
    log_ctx_set((struct log_ctx){
        .gtid = tx->gtid,
        .request_id = prev.request_id ? prev.request_id : tx->request_id,
        .traceparent = prev.request_id ? prev.traceparent : tx->traceparent,
    });

    while (ev != TXE_NONE && (rc = tx_step_one(tx, ev, a, &ev)) == 0)
        a = &none;
    if (deciding != (tx->state == TX_PREPARING) && tx->env->deciding)
        tx->env->deciding(tx, deciding ? -1 : 1);
    log_ctx_set(prev);
    return rc;
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
    if (!tx->error)
        tx->error = xcalloc(1, sizeof(*tx->error));
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
    b->results = xstrndup(a->results, a->results_len);
    b->results_len = a->results_len;
}

static uint32_t count_branches(const struct tx *tx, enum tx_branch_state s1,
                               enum tx_branch_state s2)
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
    b->last_error = xstrdup(msg);
}

/* Every message leaves through here: a COMMIT only once the decision is durable. */
static int send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    if (what == TX_SEND_COMMIT && !tx->durable)
        protocol_bug(tx, "COMMIT about to be sent before the decision is durable");
    tx->sent_in_step++;
    return tx->env->send(tx, b, what);
}

/* Sends what b needs in phase 2 (state: BR_COMMITTING or BR_ABORTING); BR_LOST on failure. */
static void send_phase2(struct tx *tx, struct tx_branch *b, enum tx_branch_state want)
{
    enum tx_send what = want == BR_COMMITTING ? TX_SEND_COMMIT : TX_SEND_ABORT;

    if (send(tx, b, what) == 0) {
        b->state = want;
        b->sends++;
    } else {
        b->state = BR_LOST;
        b->lost_in = want;
        note_branch_error(b, "the participant of shard '%s' is not connected", shard_name(tx, b));
    }
}

/* Tells whoever waits (once per request); an interactive call is then over. */
static void answer(struct tx *tx)
{
    if (tx->answered)
        return;
    tx->env->answer(tx);
    tx->answered = true;
    tx->call = TX_CALL_NONE;
}

/* ---- actions ---------------------------------------------------------------- */

static enum tx_event act_none(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)tx;
    (void)ev;
    (void)a;
    return TXE_NONE;
}

/* Interactive: open; aborted if no call comes within its idle limit. */
static enum tx_event act_begin(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    tx->env->arm(tx, tx->idle_ms);
    return TXE_NONE;
}

/*
 * The commit's path: nothing to do without a branch; one phase for a
 * single branch, unless an idempotency key needs a COMMIT record to keep
 * its answer across a restart; two phases otherwise. A single branch takes
 * them as two-phase commit under "3pc" too: its acceptors would be the
 * coordinator and that one shard, and a shard alone never leads a round
 * (a majority of two is both), so 3PC would only block the same way.
 */
static enum tx_event act_commit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    if (tx->nbranches == 0)
        return TXE_ALL_READONLY;
    if (tx->nbranches > 1)
        return TXE_START_2PC;
    if (!tx->idem_key)
        return TXE_START_1PC;
    tx->two_pc_rows = true;
    return TXE_START_2PC;
}

static enum tx_event act_send_prepares(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    enum tx_event next = TXE_NONE;

    (void)ev;
    (void)a;
    tx->pending = 0;
    tx->acceptor_rows = tx_three_pc(tx);
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (send(tx, b, TX_SEND_PREPARE) == 0) {
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
    if (send(tx, b, TX_SEND_ONE_PHASE) == 0) {
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
    snprintf(b->db, sizeof(b->db), "%s", a->db ? a->db : "");
    b->state = ev == TXE_VOTE_YES ? BR_PREPARED : BR_READONLY;
    if (--tx->pending > 0)
        return TXE_NONE;
    if (count_branches(tx, BR_PREPARED, BR_PREPARED))
        return TXE_ALL_VOTED;
    return tx->idem_key ? TXE_KEEP_ANSWER : TXE_ALL_READONLY;
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

bool tx_results_over_limit(struct tx *tx)
{
    size_t results = logged_results_bytes(tx);
    char msg[DTX_ERR_MSG_MAX];

    if (!tx->results_limit || results <= tx->results_limit)
        return false;
    snprintf(msg, sizeof(msg),
             "the results (%zu bytes) exceed max_logged_results_bytes (%u): a transaction "
             "with an idempotency key keeps its results in the decision log",
             results, tx->results_limit);
    set_error(tx, NULL, NULL, DTX_ETOOBIG, msg);
    return true;
}

static enum tx_event act_log_commit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    if (tx_results_over_limit(tx))
        return TXE_LOG_REFUSED;
    tx->env->arm(tx, 0);
    tx->decided_wall_us = ev_wall_us();
    tx->lsn = tx->env->log_commit(tx);
    tx->forcing = tx->lsn;
    if (tx->lsn == 0) {
        set_error(tx, NULL, NULL, DTX_ELOGFAIL,
                  "the decision log is not writable, so the commit could not be recorded");
        return TXE_LOG_REFUSED;
    }
    return TXE_NONE;
}

/*
 * Every branch was read-only, but the client gave an idempotency key: a
 * COMMIT record without branches keeps its answer (gtid, results), so
 * that a retry after a restart gets it instead of running again. From here
 * the transaction follows two-phase commit's rows under 3PC too: with no
 * branch prepared there is nothing for the acceptors to decide, and a
 * record that cannot be written aborts it (nothing was changed).
 */
static enum tx_event act_keep_answer(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    tx->two_pc_rows = true;
    return act_log_commit(tx, ev, a);
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
    tx->durable = true; /* the store said so: COMMIT may go out */
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

/* b's participant did otherwise than decided (mixed), or cannot prove what it did (hazard). */
static void note_heuristic(struct tx *tx, struct tx_branch *b, enum drec_heur_kind kind,
                           const struct dtx_err *err)
{
    char what[DTX_ERR_MSG_MAX];

    if (kind == DREC_HEUR_MIXED)
        snprintf(what, sizeof(what),
                 "shard '%s' %s the branch although the decision was %s%s%.300s", shard_name(tx, b),
                 b->state == BR_COMMITTED ? "committed" : "rolled back",
                 tx->state == TX_COMMITTING ? "commit" : "abort", err && err->code ? ": " : "",
                 err && err->code ? err->msg : "");
    else
        snprintf(what, sizeof(what), "shard '%s' cannot prove what became of its branch%s%.300s",
                 shard_name(tx, b), err && err->code ? ": " : "", err && err->code ? err->msg : "");
    if (!b->heuristic || kind == DREC_HEUR_MIXED)
        b->heuristic = (uint8_t)kind;
    if (tx->env->heuristic)
        tx->env->heuristic(tx, b->shard, kind, what);
}

static enum tx_event act_ack(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;
    enum tx_branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

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
    if (a->ack == TX_ACK_UNKNOWN) {
        note_heuristic(tx, b, DREC_HEUR_HAZARD, a->err);
    } else if (a->ack != TX_ACK_NONE && (a->ack == TX_ACK_COMMITTED) != (want == BR_COMMITTING)) {
        b->state = a->ack == TX_ACK_COMMITTED ? BR_COMMITTED : BR_ABORTED; /* what it really did */
        note_heuristic(tx, b, DREC_HEUR_MIXED, a->err);
    }
    return --tx->pending == 0 ? TXE_ALL_ACKED : TXE_NONE;
}

/* Frees what only a running transaction needs: the ops to send, the branches' raw results. */
static void release_work(struct tx *tx)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        cJSON_Delete(tx->branches[i].ops);
        free(tx->branches[i].results);
        tx->branches[i].ops = NULL;
        tx->branches[i].results = NULL;
        tx->branches[i].results_len = 0;
    }
}

/*
 * The transaction is done acting: the client is told, a committed one
 * with an idempotency key keeps its results (for retries and checkpoints),
 * and the coordinator hears that it is finished.
 */
static void finish(struct tx *tx)
{
    tx->env->arm(tx, 0);
    answer(tx);
    if (tx->idem_key && tx->state == TX_COMMITTED && !tx->stored_results)
        tx->stored_results = tx_render_results(tx);
    release_work(tx);
    tx->env->finished(tx);
}

/* An operator gave up on b: it counts as acknowledged (once). */
static enum tx_event act_forget(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    if (!a->b || a->b->forgotten)
        return act_none(tx, ev, a);
    a->b->forgotten = true;
    return act_ack(tx, TXE_ACK, a);
}

static enum tx_event act_finish(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    finish(tx);
    return TXE_NONE;
}

/*
 * Three-phase commit: with every participant's acknowledgement in, none is
 * in doubt and no recovery round will ask an acceptor about tx again, so
 * the shards may delete their acceptor state of it (docs/protocol.md,
 * "Three-phase commit"); so may they when every branch was read-only
 * (nothing prepared), key or not. Not when an operator gave up on a branch:
 * its participant may still be in doubt and need the others' state. A shard
 * not connected now keeps its row until its sweep asks (tx_acceptors_done).
 */
static bool acceptors_forgettable(const struct tx *tx)
{
    if (!(tx_three_pc(tx) || tx->acceptor_rows))
        return false;
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].forgotten)
            return false;
    }
    return true;
}

static void forget_acceptors(struct tx *tx)
{
    tx->acceptors_done = acceptors_forgettable(tx);
    if (!tx->acceptors_done || fp_hit("coord.acceptors_forget")) /* tests: the forget is lost */
        return;
    for (size_t i = 0; i < tx->nbranches; i++)
        (void)send(tx, &tx->branches[i], TX_SEND_FORGET);
}

static enum tx_event act_committed(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    tx->env->log_end(tx);
    forget_acceptors(tx);
    return act_finish(tx, ev, a);
}

/*
 * Aborted, or every branch voted read-only (nothing to commit, and nothing
 * for the acceptors to decide): no record to end, the acceptors forgotten.
 */
static enum tx_event act_forget_finish(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    forget_acceptors(tx);
    return act_finish(tx, ev, a);
}

static enum tx_event act_phase2_retry(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    enum tx_branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

    (void)a;
    if (ev == TXE_KICK) {
        tx->retry_ms = RETRY_MIN_MS; /* this retry goes out now; later ones back off afresh */
        ev = TXE_TIMEOUT;
    }
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
    enum tx_branch_state want = tx->state == TX_COMMITTING ? BR_COMMITTING : BR_ABORTING;

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
    finish(tx);
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
    finish(tx);
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
        if (send(tx, b, TX_SEND_EXEC) == 0) {
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

struct tx *tx_new(const struct tx_params *p, const struct tx_env *env, void *owner)
{
    struct tx *tx = xcalloc(1, sizeof(*tx));

    snprintf(tx->gtid, sizeof(tx->gtid), "%s", p->gtid);
    tx->env = env;
    tx->owner = owner;
    tx->state = TX_ACTIVE;
    tx->protocol = p->protocol ? p->protocol : 2;
    if (tx->protocol == 3) {
        char node[DTX_NAME_MAX + 1] = "";

        gid_parse_gtid(tx->gtid, node, NULL, NULL);
        ballot_initial(&tx->promised, node);
    }
    tx->interactive = p->interactive;
    tx->timeout_ms = p->timeout_ms;
    tx->idle_ms = p->idle_ms;
    tx->commit_wait_ms = p->commit_wait_ms;
    tx->results_limit = p->results_limit;
    tx->client = p->client && *p->client ? xstrdup(p->client) : NULL; /* NULL: the shared */
    tx->client_tag = idemkey_compose(p->client, NULL);
    tx->idem_key = p->idem_key ? idemkey_compose(p->client, p->idem_key) : NULL;
    tx->request_id = p->request_id ? xstrdup(p->request_id) : NULL;
    tx->traceparent = p->traceparent ? xstrdup(p->traceparent) : NULL;
    tx->req_hash = p->req_hash;
    tx->created_wall_us = p->created_wall_us;
    tx->born_us = tx->state_since_us = ev_clock_us();
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
    free(tx->client);
    free(tx->client_tag);
    free(tx->idem_key);
    free(tx->request_id);
    free(tx->traceparent);
    free(tx->stored_results);
    free(tx->error);
    free(tx);
}

static struct tx_branch *add_branch(struct tx *tx, int shard)
{
    struct tx_branch *b;

    tx->branches = xrealloc(tx->branches, (tx->nbranches + 1) * sizeof(*tx->branches));
    b = &tx->branches[tx->nbranches++];
    memset(b, 0, sizeof(*b));
    b->shard = shard;
    b->state = BR_NEW;
    return b;
}

/* Appends client op i to b's ops (taking its sql, params and expect_rows); its index there. */
static uint16_t attach_op(struct tx_branch *b, cJSON *op, size_t i)
{
    static const char *const keys[] = {"sql", "params", "expect_rows"};
    cJSON *o = jsonx_new_object();

    if (!b->ops)
        b->ops = jsonx_new_array();
    jsonx_add_num(o, "i", (double)i);
    for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
        if (cJSON_HasObjectItem(op, keys[k]))
            jsonx_add(o, keys[k], cJSON_DetachItemFromObjectCaseSensitive(op, keys[k]));
    }
    jsonx_append(b->ops, o);
    return (uint16_t)b->nops++;
}

void tx_add_op(struct tx *tx, int shard, cJSON *op, size_t i)
{
    struct tx_branch *b = tx_branch_on(tx, shard);

    if (!b)
        b = add_branch(tx, shard);
    tx->ops = xrealloc(tx->ops, (tx->nops + 1) * sizeof(*tx->ops));
    tx->ops[tx->nops].branch = (uint16_t)(b - tx->branches);
    tx->ops[tx->nops].index = attach_op(b, op, i);
    tx->nops++;
}

void tx_reset_ops(struct tx *tx)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        b->nops = 0;
        free(b->results);
        b->results = NULL;
        b->results_len = 0;
    }
    free(tx->ops);
    tx->ops = NULL;
    tx->nops = 0;
}

void tx_add_prepared_branch(struct tx *tx, int shard, uint64_t xid, const char *db)
{
    struct tx_branch *b = add_branch(tx, shard);

    b->xid = xid;
    snprintf(b->db, sizeof(b->db), "%s", db ? db : "");
}

void tx_set_heuristic(struct tx *tx, int shard, enum drec_heur_kind kind)
{
    struct tx_branch *b = tx_branch_on(tx, shard);

    if (b && (!b->heuristic || kind == DREC_HEUR_MIXED))
        b->heuristic = (uint8_t)kind;
}

void tx_set_replayed(struct tx *tx, uint64_t decided_wall_us, const char *results)
{
    tx->replayed = true;
    tx->decided_wall_us = decided_wall_us;
    tx->lsn = 1; /* decided and durable, in an earlier run */
    tx->durable = true;
    free(tx->stored_results);
    tx->stored_results = results && *results ? xstrdup(results) : NULL;
    tx->results_dropped = tx->idem_key && !tx->stored_results;
}

void tx_set_precommitted(struct tx *tx, uint64_t wall_us, const char *results)
{
    tx->replayed = true;
    tx->decided_wall_us = wall_us;
    tx->pre_lsn = 1; /* pre-committed, durably, in an earlier run */
    free(tx->stored_results);
    tx->stored_results = results && *results ? xstrdup(results) : NULL;
}

bool tx_results_dropped(const struct tx *tx)
{
    return tx->results_dropped;
}

void tx_drop_results(struct tx *tx)
{
    free(tx->stored_results);
    tx->stored_results = NULL;
    tx->results_dropped = true;
}

/* ---- questions ------------------------------------------------------------------- */

const char *tx_gtid(const struct tx *tx)
{
    return tx->gtid;
}

const char *tx_idem_key(const struct tx *tx)
{
    return tx->idem_key;
}

bool tx_owned_by(const struct tx *tx, const char *who)
{
    return !who || strcmp(tx->client ? tx->client : "", who) == 0;
}

const char *tx_client(const struct tx *tx)
{
    return tx->client;
}

void tx_drop_idem_key(struct tx *tx)
{
    free(tx->idem_key);
    tx->idem_key = NULL;
}

uint64_t tx_req_hash(const struct tx *tx)
{
    return tx->req_hash;
}

void *tx_owner(const struct tx *tx)
{
    return tx->owner;
}

void *tx_ctx(const struct tx *tx)
{
    return tx->env->ctx;
}

uint64_t tx_lsn(const struct tx *tx)
{
    return tx->lsn;
}

uint64_t tx_forcing(const struct tx *tx)
{
    return tx->forcing;
}

bool tx_three_pc(const struct tx *tx)
{
    return tx->protocol == 3 && !tx->two_pc_rows;
}

uint8_t tx_protocol(const struct tx *tx)
{
    return tx->protocol;
}

size_t tx_branch_count(const struct tx *tx)
{
    return tx->nbranches;
}

const struct tx_branch *tx_branch_at(const struct tx *tx, size_t i)
{
    return &tx->branches[i];
}

bool tx_is_interactive(const struct tx *tx)
{
    return tx->interactive;
}

uint64_t tx_decided_wall_us(const struct tx *tx)
{
    return tx->decided_wall_us;
}

uint64_t tx_born_wall_us(const struct tx *tx)
{
    return tx->created_wall_us ? tx->created_wall_us : tx->decided_wall_us;
}

bool tx_is_replayed(const struct tx *tx)
{
    return tx->replayed;
}

uint64_t tx_elapsed_us(const struct tx *tx)
{
    return ev_clock_us() - tx->born_us;
}

bool tx_is_in_doubt(const struct tx *tx)
{
    if (tx->state == TX_IN_DOUBT || tx->state == TX_LEARNING)
        return true;
    if (tx->state != TX_COMMITTING && tx->state != TX_ABORTING)
        return false;
    for (size_t i = 0; i < tx->nbranches; i++) {
        const struct tx_branch *b = &tx->branches[i];

        if (b->state == BR_LOST ||
            ((b->state == BR_COMMITTING || b->state == BR_ABORTING) && b->sends > 1))
            return true;
    }
    return false;
}

int tx_error_code(const struct tx *tx)
{
    return tx->error ? tx->error->code : 0;
}

bool tx_answered(const struct tx *tx)
{
    return tx->answered;
}

bool tx_accepts(const struct tx *tx, enum tx_event ev)
{
    return find(rows_of(tx), tx->state, ev) != NULL;
}

bool tx_is_final(const struct tx *tx)
{
    return tx->state == TX_COMMITTED || tx->state == TX_ABORTED;
}

bool tx_acceptors_done(const struct tx *tx)
{
    return tx_is_final(tx) && tx->acceptors_done;
}

bool tx_is_running(const struct tx *tx)
{
    return !tx_is_final(tx) && tx->state != TX_IN_DOUBT && tx->state != TX_UNKNOWN && !tx->replayed;
}

enum dtx_status tx_status(const struct tx *tx)
{
    switch (tx->state) {
    case TX_ACTIVE:
        return DTX_ST_ACTIVE;
    case TX_PREPARING:
    case TX_LOGGING:
    case TX_ONE_PHASE:
    case TX_IN_DOUBT:
        return DTX_ST_PREPARING;
    case TX_COMMITTING:
        return DTX_ST_COMMITTING;
    case TX_COMMITTED:
        return DTX_ST_COMMITTED;
    case TX_ABORTING:
        return DTX_ST_ABORTING;
    case TX_ABORTED:
        return DTX_ST_ABORTED;
    case TX_PRECOMMITTING:
    case TX_ACCEPTING:
    case TX_LEARNING:
        return DTX_ST_PRECOMMITTED;
    case TX_UNKNOWN:
    case TX_NSTATES:
        break;
    }
    return DTX_ST_UNKNOWN;
}

bool tx_refused_for_room(const struct tx *tx)
{
    return (tx->state == TX_ABORTING || tx->state == TX_ABORTED) && tx_error_code(tx) == DTX_EBUSY;
}

bool tx_is_decided(const struct tx *tx)
{
    return tx->state == TX_COMMITTING || tx->state == TX_COMMITTED || tx->state == TX_ABORTING ||
           tx->state == TX_ABORTED;
}

enum tx_outcome tx_outcome(const struct tx *tx)
{
    switch (tx->state) {
    case TX_COMMITTED:
        return TXO_COMMITTED;
    case TX_ABORTED:
        return TXO_ABORTED;
    case TX_UNKNOWN:
        return TXO_UNKNOWN;
    case TX_IN_DOUBT:
        return TXO_IN_DOUBT;
    default:
        return TXO_NONE;
    }
}

const char *tx_branch_db(const struct tx *tx, int shard)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].shard == shard)
            return tx->branches[i].db[0] ? tx->branches[i].db : NULL;
    }
    return NULL;
}

bool tx_decided_commit(const struct tx *tx)
{
    return tx->lsn != 0;
}

enum tx_path tx_path(const struct tx *tx)
{
    /* every branch voted read-only (a COMMIT record may have kept a key's answer) */
    if (tx->nbranches && count_branches(tx, BR_READONLY, BR_READONLY) == tx->nbranches)
        return TXP_READONLY;
    if (tx->lsn == 0 && tx->nbranches == 1)
        return TXP_ONE_PHASE;
    if (tx->lsn == 0 && tx->nbranches > 1)
        return TXP_READONLY;
    return TXP_TWO_PHASE;
}

struct tx_branch *tx_branch_on(struct tx *tx, int shard)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].shard == shard)
            return &tx->branches[i];
    }
    return NULL;
}

/* Adds shard to the n distinct ones in seen, unless it is there. */
static void add_distinct(int *seen, size_t *n, int shard)
{
    for (size_t j = 0; j < *n; j++) {
        if (seen[j] == shard)
            return;
    }
    seen[(*n)++] = shard;
}

size_t tx_shards_with(const struct tx *tx, const struct txreq *req)
{
    size_t nb = tx ? tx->nbranches : 0, n = 0;
    int *seen = xcalloc(nb + req->nops + 1, sizeof(*seen));

    for (size_t i = 0; i < nb; i++)
        add_distinct(seen, &n, tx->branches[i].shard);
    for (size_t i = 0; i < req->nops; i++)
        add_distinct(seen, &n, req->ops[i].shard);
    free(seen);
    return n;
}

int tx_branch_shard(const struct tx_branch *b)
{
    return b->shard;
}

bool tx_branch_in_flight(const struct tx *tx, const struct tx_branch *b)
{
    (void)tx;
    switch (b->state) {
    case BR_PREPARING:
    case BR_COMMITTING:
    case BR_ABORTING:
    case BR_OPEN:
    case BR_EXECUTING:
        return true;
    default:
        return false;
    }
}

bool tx_branch_lost(const struct tx *tx, const struct tx_branch *b)
{
    return b->state == BR_LOST && (tx->state == TX_COMMITTING || tx->state == TX_ABORTING);
}

struct tx_branch *tx_waits_for(struct tx *tx, int shard)
{
    struct tx_branch *b = shard >= 0 ? tx_branch_on(tx, shard) : NULL;

    if (!b || (tx->state != TX_COMMITTING && tx->state != TX_ABORTING))
        return NULL;
    return b->state == BR_COMMITTING || b->state == BR_ABORTING || b->state == BR_LOST ? b : NULL;
}

void tx_branch_finished(struct tx *tx, int shard, bool committed)
{
    struct tx_evarg a = {.b = tx_waits_for(tx, shard)};

    if (a.b && committed == (tx->state == TX_COMMITTING))
        tx_step(tx, TXE_ACK, &a);
}

enum dtx_decision tx_decision(const struct tx *tx, int shard, uint64_t *xid)
{
    *xid = 0;
    switch (tx->state) {
    case TX_COMMITTED:
    case TX_COMMITTING:
        for (size_t i = 0; i < tx->nbranches; i++) {
            if (tx->branches[i].shard == shard)
                *xid = tx->branches[i].xid;
        }
        return DTX_DEC_COMMIT;
    case TX_ABORTED:
    case TX_ABORTING:
        return DTX_DEC_ABORT;
    case TX_UNKNOWN:
        return DTX_DEC_UNKNOWN; /* one phase: never prepared anywhere */
    default:
        return DTX_DEC_IN_FLIGHT;
    }
}

enum dtx_decision tx_presumed(const char *gtid, const char *node, uint64_t issued_epoch,
                              uint64_t issued_seq)
{
    char owner[DTX_NAME_MAX + 1];
    uint64_t epoch, seq;

    if (!gid_parse_gtid(gtid, owner, &epoch, &seq) || strcmp(owner, node) != 0)
        return DTX_DEC_UNKNOWN;
    if (epoch < issued_epoch || (epoch == issued_epoch && seq <= issued_seq))
        return DTX_DEC_ABORT;
    return DTX_DEC_UNKNOWN; /* a gtid this coordinator never issued */
}

static enum tx_admit refuse(struct dtx_err *why, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static enum tx_admit refuse(struct dtx_err *why, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    dtx_err_setv(why, DTX_ECONFLICT, fmt, ap);
    va_end(ap);
    return TXA_REFUSE;
}

enum tx_admit tx_admit_call(const struct tx *tx, enum tx_call call, struct dtx_err *why)
{
    bool aborted = tx->state == TX_ABORTING || tx->state == TX_ABORTED;
    const char *status = dtx_status_name(tx_status(tx));

    /* rebuilt from its COMMIT record, which does not say: decided, it answers as one */
    if (!tx->interactive && !tx->replayed)
        return refuse(why, "transaction %s was not begun as interactive; it takes no more calls",
                      tx->gtid);
    if (call == TX_CALL_ABORT) {
        if (aborted)
            return TXA_ABORTED;
        if (tx->state != TX_ACTIVE)
            return refuse(why, "transaction %s is %s; too late to abort it", tx->gtid, status);
        return TXA_GO; /* a call still running ends with the abort */
    }
    if (call == TX_CALL_OPS && aborted)
        return TXA_OUTCOME; /* 409 with the reason */
    if (call == TX_CALL_OPS && tx->state != TX_ACTIVE)
        return refuse(why, "transaction %s is %s; it takes no more ops", tx->gtid, status);
    if (tx->call != TX_CALL_NONE && tx->state == TX_ACTIVE)
        return refuse(why,
                      "another request on transaction %s is still running; send the next one "
                      "when it has been answered",
                      tx->gtid);
    if (tx->state == TX_ACTIVE)
        return TXA_GO;
    /* A commit already under way (a retry after a lost answer): the same outcome. */
    if (tx->answered || tx_is_final(tx) || tx->state == TX_ABORTING || tx->state == TX_COMMITTING)
        return TXA_OUTCOME;
    return TXA_WAIT;
}

void tx_begin_call(struct tx *tx, enum tx_call call)
{
    tx->call = call;
    tx->answered = false;
    if (call == TX_CALL_COMMIT)
        tx->nops = 0; /* the commit's answer carries no results */
}

/* Three-phase commit: pre-committed, the decision not known to it yet. */
static bool precommitted(const struct tx *tx)
{
    return tx->state == TX_PRECOMMITTING || tx->state == TX_ACCEPTING || tx->state == TX_LEARNING;
}

enum tx_keep tx_checkpoint_keep(const struct tx *tx)
{
    if (tx->pre_lsn && precommitted(tx))
        return TXK_DECIDED; /* its PRECOMMIT record */
    if (!tx->lsn && !(tx->learned && tx->state == TX_COMMITTED))
        return TXK_NONE;
    if (tx->state == TX_LOGGING || tx->state == TX_COMMITTING)
        return TXK_DECIDED;
    if (tx->state == TX_COMMITTED && tx->idem_key)
        return TXK_RETAINED;
    return TXK_NONE;
}

void tx_commit_record(const struct tx *tx, struct drec *rec, struct drec_branch **branches,
                      char **results)
{
    size_t n = 0;

    *branches = xcalloc(tx->nbranches ? tx->nbranches : 1, sizeof(**branches));
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (!tx->branches[i].xid)
            continue;
        (*branches)[n].shard = shard_name(tx, &tx->branches[i]);
        (*branches)[n].db = tx->branches[i].db;
        (*branches)[n++].xid = tx->branches[i].xid;
    }
    *results = tx->idem_key && !tx->results_dropped ? tx_render_results(tx) : NULL;
    memset(rec, 0, sizeof(*rec));
    rec->type = precommitted(tx) ? DREC_PRECOMMIT : DREC_COMMIT;
    rec->wall_us = tx->decided_wall_us;
    rec->gtid = tx->gtid;
    rec->protocol = tx->protocol;
    rec->idem_key = tx->idem_key ? tx->idem_key : tx->client_tag; /* names its client */
    rec->req_hash = tx->req_hash;
    rec->results = *results;
    rec->nbranches = n;
    rec->branches = *branches;
}

/* ---- shared with tx3pc.c ----------------------------------------------------------- */

const char *tx_shard_name(const struct tx *tx, const struct tx_branch *b)
{
    return shard_name(tx, b);
}

void tx_set_error(struct tx *tx, const struct tx_branch *b, const struct dtx_err *e, int code,
                  const char *msg)
{
    set_error(tx, b, e, code, msg);
}

void tx_clear_error(struct tx *tx)
{
    clear_error(tx);
}

uint32_t tx_count_branches(const struct tx *tx, enum tx_branch_state s1, enum tx_branch_state s2)
{
    return count_branches(tx, s1, s2);
}

int tx_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    return send(tx, b, what);
}

void tx_answer(struct tx *tx)
{
    answer(tx);
}

void tx_finish(struct tx *tx)
{
    finish(tx);
}

enum tx_event tx_act_none(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    return act_none(tx, ev, a);
}

enum tx_event tx_act_abort_all(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    return act_abort_all(tx, ev, a);
}

enum tx_event tx_act_log_commit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    return act_log_commit(tx, ev, a);
}

enum tx_event tx_act_in_doubt(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    return act_in_doubt(tx, ev, a);
}
