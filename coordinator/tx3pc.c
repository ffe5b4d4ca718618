/*
 * tx3pc.c - three-phase commit (protocol 3): the coordinator's side of
 * single-decree Paxos on commit or abort (docs/protocol.md,
 * "Three-phase commit"; the model is model/dtx3pc.pml).
 *
 * The acceptors are the coordinator and every participant of the
 * transaction; a majority of them decides. The coordinator proposes at the
 * initial ballot b0 = (0, c:<node>), which needs no promises: after every
 * vote yes it accepts (b0, commit) itself by forcing a PRECOMMIT record
 * (only while it has promised no higher ballot to a recovery leader), then
 * sends the pre-commit (ACCEPT) to every participant. With a majority of
 * acceptances commit is chosen: the COMMIT record is forced and phase 2
 * runs as in two-phase commit. An abort before the PRECOMMIT record is
 * decided directly: commit can only ever be chosen after it. Once
 * pre-committed, the coordinator never aborts on its own: when acceptors
 * refuse (they promised a recovery leader) so that no majority can accept
 * b0 any more, or after a restart, it learns what the participants decide.
 *
 * These rows are looked up before two-phase commit's (tx.c), which serve
 * everything else: phase 1, the COMMIT record and phase 2, aborts.
 *
 * State diagram (read like tx.c's; test_tx.c checks it against the table):
 *
 *   PREPARING --ALL_VOTED [act_precommit*]--> PRECOMMITTING   (PRECOMMIT forced)
 *   PREPARING --LEARNED_ABORT [act_learned]--> ABORTED         (a leader decided first)
 *
 *   PRECOMMITTING --DURABLE [act_send_accepts]--> ACCEPTING
 *   PRECOMMITTING --TAKEN_OVER [tx_act_abort_all]--> ABORTING  (a leader's ballot was
 *                                                              promised: never pre-commit)
 *   PRECOMMITTING --LOG_REFUSED [tx_act_abort_all]--> ABORTING (record never written)
 *   PRECOMMITTING --LOG_FAILED [act_learn]--> LEARNING         (it may be on disk)
 *   PRECOMMITTING --UNAVAILABLE [tx_act_none]--> PRECOMMITTING
 *   PRECOMMITTING --LEARNED_ABORT [act_learned]--> ABORTED
 *
 *   ACCEPTING --ACCEPTED [act_count]--> ACCEPTING
 *   ACCEPTING --REJECTED [act_count]--> ACCEPTING
 *   ACCEPTING --MAJORITY [tx_act_log_commit*]--> LOGGING      (commit is chosen)
 *   ACCEPTING --OUTVOTED [act_learn]--> LEARNING
 *   ACCEPTING --TIMEOUT [act_accept_retry]--> ACCEPTING       (client told: being settled)
 *   ACCEPTING --RESEND [act_accept_retry]--> ACCEPTING
 *   ACCEPTING --UNAVAILABLE [tx_act_none]--> ACCEPTING
 *   ACCEPTING --LEARNED_COMMIT [act_learned]--> COMMITTED
 *   ACCEPTING --LEARNED_ABORT [act_learned]--> ABORTED
 *
 *   LOGGING --LOG_REFUSED [act_learn]--> LEARNING              (commit is chosen: the
 *   LOGGING --LOG_FAILED [act_learn]--> LEARNING                participants finish it)
 *   LOGGING --ACCEPTED [act_note]--> LOGGING
 *   LOGGING --REJECTED [act_note]--> LOGGING
 *   LOGGING --LEARNED_COMMIT [tx_act_none]--> LOGGING
 *
 *   LEARNING --LEARNED_COMMIT [act_learned]--> COMMITTED
 *   LEARNING --LEARNED_ABORT [act_learned]--> ABORTED
 *   LEARNING --TIMEOUT [act_poll]--> LEARNING                  (asks the participants)
 *   LEARNING --RESEND [tx_act_none]--> LEARNING
 *   LEARNING --UNAVAILABLE [tx_act_none]--> LEARNING
 *   LEARNING --ACCEPTED [act_note]--> LEARNING
 *   LEARNING --REJECTED [act_note]--> LEARNING
 *
 *   COMMITTING --LEARNED_COMMIT [tx_act_none]--> COMMITTING
 *   COMMITTING --ACCEPTED [act_note]--> COMMITTING
 *   COMMITTING --REJECTED [act_note]--> COMMITTING
 *   COMMITTED --LEARNED_COMMIT [tx_act_none]--> COMMITTED
 *   COMMITTED --ACCEPTED [act_note]--> COMMITTED               (late answers to the
 *   COMMITTED --REJECTED [act_note]--> COMMITTED                pre-commit: shown, not
 *   ABORTING --LEARNED_ABORT [tx_act_none]--> ABORTING           counted)
 *   ABORTING --ACCEPTED [act_note]--> ABORTING
 *   ABORTING --REJECTED [act_note]--> ABORTING
 *   ABORTED --LEARNED_ABORT [tx_act_none]--> ABORTED
 *   ABORTED --ACCEPTED [act_note]--> ABORTED
 *   ABORTED --REJECTED [act_note]--> ABORTED
 *
 *   ACTIVE --RECOVER_PRECOMMITTED [act_learn]--> LEARNING      (replay: PRECOMMIT, no COMMIT)
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "tx_impl.h"

#include "dtx/ev.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#define POLL_MIN_MS 500
#define POLL_MAX_MS 10000

/* The acceptors: the coordinator and every participant that voted. */
static uint32_t acceptors(const struct tx *tx)
{
    return (uint32_t)tx->nbranches + 1;
}

static uint32_t majority(const struct tx *tx)
{
    return acceptors(tx) / 2 + 1;
}

/* Every vote was yes (or read-only): pre-commit, unless a recovery leader was promised first. */
static enum tx_event act_precommit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    if (tx->promised.counter > 0) {
        tx_set_error(tx, NULL, NULL, DTX_EABORTED,
                     "a participant took over the decision before the coordinator could "
                     "pre-commit (its coordinator was presumed gone): aborted");
        return TXE_TAKEN_OVER;
    }
    if (tx_results_over_limit(tx))
        return TXE_LOG_REFUSED;
    tx->env->arm(tx, 0);
    tx->pre_lsn = tx->env->log_precommit(tx);
    tx->forcing = tx->pre_lsn;
    if (tx->pre_lsn == 0) {
        tx_set_error(tx, NULL, NULL, DTX_ELOGFAIL,
                     "the decision log is not writable, so the pre-commit could not be recorded");
        return TXE_LOG_REFUSED;
    }
    return TXE_NONE;
}

/* Sends the pre-commit to every branch that has not answered it. */
static void send_accepts(struct tx *tx)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (b->accept_state == TXA3_NONE)
            tx_send(tx, b, TX_SEND_ACCEPT);
    }
}

/* The pre-commit is durable: this coordinator accepted (b0, commit); the participants now. */
static enum tx_event act_send_accepts(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    tx->forcing = 0;
    tx->accepts = 1; /* itself */
    tx->rejects = 0;
    tx->retry_ms = TX_RETRY_MIN_MS;
    send_accepts(tx);
    tx->env->arm(tx, tx->commit_wait_ms ? tx->commit_wait_ms : TX_RETRY_MIN_MS);
    return tx->accepts >= majority(tx) ? TXE_MAJORITY : TXE_NONE;
}

static enum tx_event act_count(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    struct tx_branch *b = a->b;

    if (!b || b->accept_state != TXA3_NONE)
        return TXE_NONE; /* a duplicate */
    if (ev == TXE_ACCEPTED) {
        b->accept_state = TXA3_ACCEPTED;
        tx->accepts++;
    } else {
        b->accept_state = TXA3_REJECTED;
        tx->rejects++;
        log_info("tx %s: shard '%s' refused the pre-commit: it promised a recovery leader's "
                 "ballot",
                 tx->gtid, tx_shard_name(tx, b));
    }
    if (tx->accepts >= majority(tx))
        return TXE_MAJORITY;
    if (acceptors(tx) - tx->rejects < majority(tx))
        return TXE_OUTVOTED;
    return TXE_NONE;
}

/* A pre-commit answer after the outcome was settled: shown in the transaction's state only. */
static enum tx_event act_note(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)tx;
    if (a->b && a->b->accept_state == TXA3_NONE)
        a->b->accept_state = ev == TXE_ACCEPTED ? TXA3_ACCEPTED : TXA3_REJECTED;
    return TXE_NONE;
}

static enum tx_event act_accept_retry(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)a;
    if (ev == TXE_TIMEOUT) {
        tx_answer(tx); /* the client has waited commit_wait_ms: it is being settled */
        tx->env->arm(tx, tx->retry_ms);
        tx->retry_ms = tx->retry_ms * 2 > TX_RETRY_MAX_MS ? TX_RETRY_MAX_MS : tx->retry_ms * 2;
    }
    send_accepts(tx);
    return TXE_NONE;
}

/* The participants decide (or have decided): wait for it, and ask now and then. */
static enum tx_event act_learn(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)a;
    if (ev != TXE_RECOVER_PRECOMMITTED)
        log_warn("tx %s: pre-committed, but no majority can accept it at the coordinator's "
                 "ballot (%s); the participants decide it",
                 tx->gtid,
                 ev == TXE_OUTVOTED ? "acceptors promised a recovery leader"
                                    : "the "
                                      "decision "
                                      "log "
                                      "failed");
    else
        tx->answered = true; /* the client of a previous run cannot be answered */
    tx->forcing = 0;
    tx_answer(tx);
    tx->retry_ms = POLL_MIN_MS;
    tx->env->arm(tx, tx->retry_ms);
    return TXE_NONE;
}

static enum tx_event act_poll(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    (void)ev;
    (void)a;
    if (tx->env->poll)
        tx->env->poll(tx);
    tx->env->arm(tx, tx->retry_ms);
    tx->retry_ms = tx->retry_ms * 2 > POLL_MAX_MS ? POLL_MAX_MS : tx->retry_ms * 2;
    return TXE_NONE;
}

/* The participants decided without the coordinator: adopt it, record it, answer. */
static enum tx_event act_learned(struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    bool commit = ev == TXE_LEARNED_COMMIT;

    (void)a;
    tx->learned = true;
    tx->forcing = 0;
    tx->decided_wall_us = ev_wall_us();
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        if (b->state != BR_READONLY)
            b->state = commit ? BR_COMMITTED : BR_ABORTED;
    }
    if (commit) {
        tx_clear_error(tx);
    } else {
        tx_clear_error(tx);
        tx_set_error(tx, NULL, NULL, DTX_EABORTED,
                     "the participants decided abort without the coordinator (a recovery "
                     "leader finished the transaction)");
    }
    log_info("tx %s: the participants decided %s; the coordinator adopts it", tx->gtid,
             commit ? "commit" : "abort");
    tx->env->log_learned(tx);
    tx_finish(tx);
    return TXE_NONE;
}

#define T TX_T

const struct tx_transition tx3pc_transitions[] = {
    T(PREPARING, ALL_VOTED, PRECOMMITTING, true, act_precommit),
    T(PREPARING, LEARNED_ABORT, ABORTED, false, act_learned),

    T(PRECOMMITTING, DURABLE, ACCEPTING, false, act_send_accepts),
    T(PRECOMMITTING, TAKEN_OVER, ABORTING, false, tx_act_abort_all),
    T(PRECOMMITTING, LOG_REFUSED, ABORTING, false, tx_act_abort_all),
    T(PRECOMMITTING, LOG_FAILED, LEARNING, false, act_learn),
    T(PRECOMMITTING, UNAVAILABLE, PRECOMMITTING, false, tx_act_none),
    T(PRECOMMITTING, LEARNED_ABORT, ABORTED, false, act_learned),

    T(ACCEPTING, ACCEPTED, ACCEPTING, false, act_count),
    T(ACCEPTING, REJECTED, ACCEPTING, false, act_count),
    T(ACCEPTING, MAJORITY, LOGGING, true, tx_act_log_commit),
    T(ACCEPTING, OUTVOTED, LEARNING, false, act_learn),
    T(ACCEPTING, TIMEOUT, ACCEPTING, false, act_accept_retry),
    T(ACCEPTING, RESEND, ACCEPTING, false, act_accept_retry),
    T(ACCEPTING, UNAVAILABLE, ACCEPTING, false, tx_act_none),
    T(ACCEPTING, LEARNED_COMMIT, COMMITTED, false, act_learned),
    T(ACCEPTING, LEARNED_ABORT, ABORTED, false, act_learned),

    T(LOGGING, LOG_REFUSED, LEARNING, false, act_learn),
    T(LOGGING, LOG_FAILED, LEARNING, false, act_learn),
    T(LOGGING, ACCEPTED, LOGGING, false, act_note),
    T(LOGGING, REJECTED, LOGGING, false, act_note),
    T(LOGGING, LEARNED_COMMIT, LOGGING, false, tx_act_none),

    T(LEARNING, LEARNED_COMMIT, COMMITTED, false, act_learned),
    T(LEARNING, LEARNED_ABORT, ABORTED, false, act_learned),
    T(LEARNING, TIMEOUT, LEARNING, false, act_poll),
    T(LEARNING, RESEND, LEARNING, false, tx_act_none),
    T(LEARNING, UNAVAILABLE, LEARNING, false, tx_act_none),
    T(LEARNING, ACCEPTED, LEARNING, false, act_note),
    T(LEARNING, REJECTED, LEARNING, false, act_note),

    T(COMMITTING, LEARNED_COMMIT, COMMITTING, false, tx_act_none),
    T(COMMITTING, ACCEPTED, COMMITTING, false, act_note),
    T(COMMITTING, REJECTED, COMMITTING, false, act_note),
    T(COMMITTED, LEARNED_COMMIT, COMMITTED, false, tx_act_none),
    T(COMMITTED, ACCEPTED, COMMITTED, false, act_note),
    T(COMMITTED, REJECTED, COMMITTED, false, act_note),
    T(ABORTING, LEARNED_ABORT, ABORTING, false, tx_act_none),
    T(ABORTING, ACCEPTED, ABORTING, false, act_note),
    T(ABORTING, REJECTED, ABORTING, false, act_note),
    T(ABORTED, LEARNED_ABORT, ABORTED, false, tx_act_none),
    T(ABORTED, ACCEPTED, ABORTED, false, act_note),
    T(ABORTED, REJECTED, ABORTED, false, act_note),

    T(ACTIVE, RECOVER_PRECOMMITTED, LEARNING, false, act_learn),
};

#undef T

const size_t tx3pc_ntransitions = sizeof(tx3pc_transitions) / sizeof(tx3pc_transitions[0]);

const struct tx_transition *tx3pc_find(enum tx_state s, enum tx_event e)
{
    for (size_t i = 0; i < tx3pc_ntransitions; i++) {
        if (tx3pc_transitions[i].from == s && tx3pc_transitions[i].ev == e)
            return &tx3pc_transitions[i];
    }
    return NULL;
}

/* ---- this coordinator as an acceptor ---------------------------------------------------- */

bool tx3pc_promise(struct tx *tx, const struct ballot *b)
{
    if (ballot_cmp(b, &tx->promised) <= 0)
        return ballot_cmp(b, &tx->promised) == 0; /* this very ballot: granted before */
    tx->promised = *b;
    return true;
}

bool tx3pc_accepted(const struct tx *tx, struct ballot *b)
{
    char node[DTX_NAME_MAX + 1] = "";

    if (!tx->pre_lsn)
        return false;
    gid_parse_gtid(tx->gtid, node, NULL, NULL);
    ballot_initial(b, node); /* it accepted (b0, commit) */
    return true;
}

const struct ballot *tx3pc_promised(const struct tx *tx)
{
    return &tx->promised;
}

bool tx_is_learned(const struct tx *tx)
{
    return tx->learned;
}
