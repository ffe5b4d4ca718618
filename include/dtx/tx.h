/*
 * tx.h - one global transaction and the commit protocol that drives it.
 *
 * The protocol is a table of (state, event) -> (next state, durable,
 * action) executed by tx_step(); the diagram is at the top of tx.c. Every
 * protocol decision is made in the tx module (tx.c, tx_render.c): the
 * rest of the coordinator gives a transaction events and asks it
 * predicates; it never sees its fields (struct tx is opaque here; the
 * module's own files and its unit test use coordinator/tx_impl.h).
 *
 * Everything the protocol does to the outside world (send a message,
 * force a decision record, answer the client, arm a timer) goes through
 * struct tx_env, which the coordinator provides and the unit tests stub.
 *
 * Durability is enforced, not trusted: a transition marked durable must
 * leave the transaction with a position in the decision store before the
 * step goes on, and a COMMIT is never sent before that position is
 * reported durable (TXE_DURABLE). A violation is a bug and stops the
 * process (tx.c, check_durable()).
 *
 * Thread model: a tx belongs to the coordinator's event-loop thread.
 */
#ifndef DTX_TX_H
#define DTX_TX_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/ballot.h"
#include "dtx/drec.h"
#include "dtx/err.h"
#include "dtx/status.h"

struct txreq;

struct tx;
struct tx_branch;

enum tx_event {
    TXE_NONE = -1,
    TXE_BEGIN,         /* interactive: the transaction is open for calls */
    TXE_COMMIT,        /* the client asked to commit: one phase, two phases or nothing to do */
    TXE_START_2PC,     /* (internal) send ops + PREPARE to every branch */
    TXE_START_1PC,     /* (internal) send ops + COMMIT to the only branch */
    TXE_VOTE_YES,      /* a branch prepared */
    TXE_VOTE_READONLY, /* a branch wrote nothing and finished */
    TXE_VOTE_NO,       /* a branch failed and rolled back */
    TXE_UNAVAILABLE,   /* a branch's participant cannot be reached (or was lost) */
    TXE_TIMEOUT,       /* the tx's timer fired */
    TXE_ALL_VOTED,     /* (internal) every vote is in, at least one yes */
    TXE_ALL_READONLY,  /* (internal) every vote is in, all read-only */
    TXE_KEEP_ANSWER,   /* (internal) ... all read-only, with an idempotency key to keep */
    TXE_LOG_REFUSED,   /* (internal) the COMMIT record could not even be queued */
    TXE_DURABLE,       /* the COMMIT record is durable */
    TXE_LOG_FAILED,    /* the write or sync of the COMMIT record failed */
    TXE_ACK,           /* a branch acknowledged phase 2 */
    TXE_ALL_ACKED,     /* (internal) every phase-2 acknowledgement is in */
    TXE_COMMITTED_1PC, /* the one-phase branch committed */
    TXE_ABORTED_1PC,   /* the one-phase branch rolled back (or was never reached) */
    TXE_RESEND,        /* a participant is back: resend what was lost */
    TXE_KICK,          /* an operator's recover: resend phase 2 now, back off afresh */
    TXE_FORGET,        /* an operator gave up on a branch: it counts as acknowledged */
    TXE_RECOVER,       /* replay found a COMMIT record without END: finish phase 2 */
    TXE_RECOVER_DONE,  /* replay found a COMMIT record with END */
    TXE_EXEC,          /* interactive: send a call's ops to their branches */
    TXE_EXECUTED,      /* interactive: a branch ran its part of the call */
    TXE_EXEC_FAILED,   /* interactive: a branch's ops failed (it rolled back) */
    TXE_ABORT,         /* interactive: the client (or a shutdown) asked to abort */
    /* three-phase commit (tx3pc.c) */
    TXE_ACCEPTED,   /* an acceptor accepted the pre-commit */
    TXE_REJECTED,   /* an acceptor refused it: it promised a recovery leader's ballot */
    TXE_MAJORITY,   /* (internal) a majority accepted the pre-commit: commit is chosen */
    TXE_OUTVOTED,   /* (internal) no majority can accept it any more */
    TXE_TAKEN_OVER, /* (internal) a recovery leader's ballot was promised before the pre-commit */
    TXE_LEARNED_COMMIT,       /* the participants decided commit without the coordinator */
    TXE_LEARNED_ABORT,        /* ... abort */
    TXE_RECOVER_PRECOMMITTED, /* replay found a PRECOMMIT record without COMMIT */
    TX_NEVENTS
};

/* What the protocol asks the coordinator to send to a branch's participant. */
enum tx_send {
    TX_SEND_PREPARE,
    TX_SEND_ONE_PHASE,
    TX_SEND_COMMIT,
    TX_SEND_ABORT,
    TX_SEND_EXEC,
    TX_SEND_ACCEPT, /* three-phase commit: the pre-commit, ACCEPT at the initial ballot */
    TX_SEND_FORGET  /* three-phase commit: every participant acknowledged; no answer */
};

/* The client request an interactive transaction is serving. */
enum tx_call { TX_CALL_NONE, TX_CALL_OPS, TX_CALL_COMMIT, TX_CALL_ABORT };

/* Phase-2 retries back off from TX_RETRY_MIN_MS, doubling up to TX_RETRY_MAX_MS. */
#define TX_RETRY_MIN_MS 200
#define TX_RETRY_MAX_MS 30000

/*
 * Where a transaction spends its time, for the metrics (tx_env.phase_done):
 * each is the time from entering a state of the protocol to leaving it,
 * however it left (a failed write ends its phase too).
 */
enum tx_phase {
    TXPH_PREPARE,       /* ops and PREPARE sent until every vote is in (PREPARING) */
    TXPH_ONE_PHASE,     /* one shard: ops and COMMIT sent until its outcome (ONE_PHASE) */
    TXPH_PRECOMMIT_LOG, /* 3PC: its PRECOMMIT record being forced (PRECOMMITTING) */
    TXPH_PRECOMMIT,     /* 3PC: the pre-commit sent until a majority accepted (ACCEPTING) */
    TXPH_COMMIT_LOG,    /* its COMMIT record being forced (LOGGING) */
    TXPH_COMMIT,        /* phase 2: COMMIT PREPARED sent until every ack (COMMITTING) */
    TXPH_ABORT,         /* rollbacks sent until every ack (ABORTING) */
    TXPH_LEARN,         /* 3PC: waiting for what the participants decide (LEARNING) */
    TX_NPHASES
};
/* "prepare", "one_phase", "precommit_log", "precommit", "commit_log", "commit", "abort", "learn".
 */
const char *tx_phase_name(enum tx_phase ph);
/* True for the phases only three-phase commit has. */
bool tx_phase_is_3pc(enum tx_phase ph);

struct tx_env {
    /*
     * Sends the message what for branch b (built with tx_message()): 0, or
     * DTX_EUNAVAIL when its participant is not connected (nothing sent).
     */
    int (*send)(struct tx *tx, struct tx_branch *b, enum tx_send what);
    /* Queues tx's COMMIT record (tx_commit_record), forced; its position, or 0 if refused. */
    uint64_t (*log_commit)(struct tx *tx);
    /* Three-phase commit: queues tx's PRECOMMIT record, forced; its position, or 0. */
    uint64_t (*log_precommit)(struct tx *tx);
    /* Three-phase commit: queues a LEARNED record (the participants' outcome), not forced. */
    void (*log_learned)(struct tx *tx);
    /* Three-phase commit: asks the participants what they decided (answers come as events). */
    void (*poll)(struct tx *tx);
    /* Queues tx's END record (not forced). */
    void (*log_end)(struct tx *tx);
    /* Tells whoever waits for this transaction how it stands (tx_render_reply). */
    void (*answer)(struct tx *tx);
    /* Arms the transaction's timer for ms (0: disarm); it fires as TXE_TIMEOUT. */
    void (*arm)(struct tx *tx, uint32_t ms);
    /* The transaction reached a final state (or a terminal unknown one). */
    void (*finished)(struct tx *tx);
    /*
     * A participant acknowledged a phase-2 message with an outcome other
     * than the decision (DREC_HEUR_MIXED), or could not prove what became
     * of its branch (DREC_HEUR_HAZARD); what says so. May be NULL.
     */
    void (*heuristic)(struct tx *tx, int shard, enum drec_heur_kind kind, const char *what);
    /* The number of transactions awaiting votes changed by delta (a group-commit hint). */
    void (*deciding)(struct tx *tx, int delta);
    /*
     * The transaction left phase ph after us microseconds in it (never
     * called for one rebuilt from the decision store). May be NULL.
     */
    void (*phase_done)(struct tx *tx, enum tx_phase ph, uint64_t us);
    const char *const *shard_names; /* index -> name, for messages */
    void *ctx;
};

/* What a new transaction is, fixed at creation. */
struct tx_params {
    const char *gtid;
    uint8_t protocol;         /* 2 */
    bool interactive;         /* ops arrive call by call (TXE_EXEC) */
    uint32_t timeout_ms;      /* phase-1 deadline (and an interactive call's) */
    uint32_t idle_ms;         /* interactive: aborted when idle this long */
    uint32_t commit_wait_ms;  /* the client waits this long for phase-2 acks */
    uint32_t results_limit;   /* with idem_key: most results bytes the COMMIT record may carry */
    const char *client;       /* copied: the named client whose it is; NULL or "": shared */
    const char *idem_key;     /* copied, as the client gave it; NULL for none */
    uint64_t req_hash;        /* of the request, to refuse a reused idempotency key */
    uint64_t created_wall_us; /* 0 for a transaction rebuilt from the decision store */
    const char *request_id;   /* copied: the client request that began it (NULL: none) */
    const char *traceparent;  /* copied: its W3C trace context (NULL: none) */
};

/*
 * A new transaction in its initial state, with no branch. owner is the
 * coordinator's handle for it (tx_owner). Never fails (xalloc.h).
 */
struct tx *tx_new(const struct tx_params *p, const struct tx_env *env, void *owner);
/* Frees tx and everything it owns. NULL is a no-op. */
void tx_free(struct tx *tx);

/*
 * Building a transaction (before its first event, or between interactive
 * calls): tx_add_op appends client op number i, run on shard; it takes
 * op's "sql", "params" and "expect_rows" out of op. tx_reset_ops starts an
 * interactive call's list of ops afresh.
 */
void tx_add_op(struct tx *tx, int shard, cJSON *op, size_t i);
void tx_reset_ops(struct tx *tx);
/* A branch rebuilt from a COMMIT record: prepared on shard with xid, in database db (or NULL). */
void tx_add_prepared_branch(struct tx *tx, int shard, uint64_t xid, const char *db);
/* Marks the branch on shard with a heuristic outcome (a HEURISTIC record, replayed). */
void tx_set_heuristic(struct tx *tx, int shard, enum drec_heur_kind kind);
/*
 * Marks a transaction rebuilt from the decision store: decided at wall_us;
 * results may be NULL (for one with an idempotency key: they were dropped).
 */
void tx_set_replayed(struct tx *tx, uint64_t decided_wall_us, const char *results);
/*
 * A finished transaction's answer keeps its outcome but no longer its
 * results (memory: retention_max_bytes); its answer says so from now on.
 */
void tx_drop_results(struct tx *tx);
/* Three-phase commit: a transaction rebuilt from a PRECOMMIT record (its decision not known). */
void tx_set_precommitted(struct tx *tx, uint64_t wall_us, const char *results);
bool tx_results_dropped(const struct tx *tx);

/* What a participant says a phase-2 message did (an ack's outcome). */
enum tx_ack { TX_ACK_NONE = 0, TX_ACK_COMMITTED, TX_ACK_ABORTED, TX_ACK_UNKNOWN };

/* One event's details: the branch it concerns and what its message carried. */
struct tx_evarg {
    struct tx_branch *b;
    uint64_t xid;
    const char *db;      /* VOTE_YES: the database's identity */
    enum tx_ack ack;     /* ACK */
    const char *results; /* RESULTS trailer (copied when kept), or NULL */
    size_t results_len;
    const struct dtx_err *err;
};

/*
 * Applies one event (and the follow-up events its action yields). Returns
 * 0, or DTX_ESTATE when the event is not defined in the current state (the
 * transaction is then untouched and the refusal is logged).
 */
int tx_step(struct tx *tx, enum tx_event ev, const struct tx_evarg *arg);

/* ---- asking the protocol --------------------------------------------------------- */

const char *tx_gtid(const struct tx *tx);
/* Its idempotency key in its client's namespace (idemkey.h's slot); NULL when none. */
const char *tx_idem_key(const struct tx *tx);
/*
 * Whether who may see and act on tx: who NULL (the admin) always, and a
 * client ("" for the shared token, or a name) when tx is its own.
 */
bool tx_owned_by(const struct tx *tx, const char *who);
/* The named client whose it is, or NULL for the shared token's (idemkey.h). */
const char *tx_client(const struct tx *tx);
/* Forgets tx's idempotency key (txtab_release_key): as if it had none. */
void tx_drop_idem_key(struct tx *tx);
uint64_t tx_req_hash(const struct tx *tx);
void *tx_owner(const struct tx *tx);
/* The environment's ctx (struct tx_env). */
void *tx_ctx(const struct tx *tx);
/* The position of the COMMIT record in the decision store (0: none yet). */
uint64_t tx_lsn(const struct tx *tx);
/* The position of the record being forced (COMMIT, or 3PC's PRECOMMIT), 0 when none. */
uint64_t tx_forcing(const struct tx *tx);

/*
 * Three-phase commit: this coordinator as an acceptor of tx (tx3pc.c).
 * promise grants ballot b when it is above every ballot promised (or is
 * the one promised: asked again); accepted says whether it accepted
 * (b0, commit), its PRECOMMIT record, and gives b0.
 */
bool tx3pc_promise(struct tx *tx, const struct ballot *b);
bool tx3pc_accepted(const struct tx *tx, struct ballot *b);
const struct ballot *tx3pc_promised(const struct tx *tx);
/* True when the participants decided tx without the coordinator ("decided_by"). */
bool tx_is_learned(const struct tx *tx);
uint8_t tx_protocol(const struct tx *tx);
/* Runs three-phase commit: protocol 3, unless it takes two-phase commit's path (one shard with
 * an idempotency key, or nothing prepared): its messages carry no 3PC part then. */
bool tx_three_pc(const struct tx *tx);
/* The transaction's branches, in the order they were added. */
size_t tx_branch_count(const struct tx *tx);
const struct tx_branch *tx_branch_at(const struct tx *tx, size_t i);
enum dtx_status tx_status(const struct tx *tx);
bool tx_is_interactive(const struct tx *tx);
/* When it was decided (0: not yet), and when it began (or, rebuilt from the store, was decided). */
uint64_t tx_decided_wall_us(const struct tx *tx);
uint64_t tx_born_wall_us(const struct tx *tx);
bool tx_is_replayed(const struct tx *tx);
/* Microseconds since the transaction was created (monotonic clock; for the metrics). */
uint64_t tx_elapsed_us(const struct tx *tx);
/* The code of the error that aborted it (or left it unknown); 0 when none. */
int tx_error_code(const struct tx *tx);
/* True once the client has been told the outcome (or a call's answer). */
bool tx_answered(const struct tx *tx);
/* True when ev is defined in the transaction's current state. */
bool tx_accepts(const struct tx *tx, enum tx_event ev);
/* True for committed and aborted. */
bool tx_is_final(const struct tx *tx);
/*
 * Three-phase commit: true once the shards may delete their acceptor state
 * of tx: this run finished it with every participant's acknowledgement, no
 * operator having given up on a branch (whose participant may still be in
 * doubt and need the others' state), and sent them forget. Never for one
 * the participants decided (learned: it does not know that every one of
 * them has finished), nor for one rebuilt from the store already
 * finished (what it knew of given-up branches is not all there).
 */
bool tx_acceptors_done(const struct tx *tx);
/*
 * True while the transaction still acts on its own: false once final, when
 * in doubt (it waits for a restart) and for one rebuilt from the store
 * (it only waits for participants to come back).
 */
bool tx_is_running(const struct tx *tx);

/*
 * True when the transaction's branches may be prepared and it cannot be
 * finished now: the decision log failed while its commit was forced
 * (settled at restart), 3PC waits for what the participants decide, or
 * phase 2 waits for a participant that is lost or did not acknowledge the
 * first message (it is being resent). For the metrics.
 */
bool tx_is_in_doubt(const struct tx *tx);

/* How a final transaction ended, for the metrics. */
enum tx_outcome { TXO_NONE, TXO_COMMITTED, TXO_ABORTED, TXO_UNKNOWN, TXO_IN_DOUBT };
enum tx_outcome tx_outcome(const struct tx *tx);
/* Aborted because a shard had no room (DTX_EBUSY): nothing ran; its first answer is 429. */
bool tx_refused_for_room(const struct tx *tx);
/* Committed or aborted, or on its way to either (phase 2 running): there is a decision. */
bool tx_is_decided(const struct tx *tx);
/* The identity of the database tx's branch on shard prepared in, or NULL when not known. */
const char *tx_branch_db(const struct tx *tx, int shard);
/* True when the transaction is decided commit (its COMMIT record exists, or is being forced). */
bool tx_decided_commit(const struct tx *tx);
/* How it committed: one phase, read-only (nothing to prepare), or two phases. */
enum tx_path { TXP_TWO_PHASE, TXP_ONE_PHASE, TXP_READONLY };
enum tx_path tx_path(const struct tx *tx);

/* The branch of tx on shard, or NULL. */
struct tx_branch *tx_branch_on(struct tx *tx, int shard);
/* How many shards tx would have with req's ops added (tx NULL: a new transaction). */
size_t tx_shards_with(const struct tx *tx, const struct txreq *req);
int tx_branch_shard(const struct tx_branch *b);
/* True when losing b's participant changes what tx must do (TXE_UNAVAILABLE). */
bool tx_branch_in_flight(const struct tx *tx, const struct tx_branch *b);
/* True when b lost a phase-2 message that TXE_RESEND would deliver. */
bool tx_branch_lost(const struct tx *tx, const struct tx_branch *b);
/* The branch on shard that phase 2 still waits for (an ACK or FORGET concerns it), or NULL. */
struct tx_branch *tx_waits_for(struct tx *tx, int shard);
/*
 * An operator finished tx's branch on shard by other means: as if the
 * shard had acknowledged, when it went the way that was decided and phase
 * 2 still waits for it; otherwise nothing changes.
 */
void tx_branch_finished(struct tx *tx, int shard, bool committed);

/*
 * What is decided about tx for its branch on shard: commit (with the
 * branch's xid in *xid when known), abort, in flight (still being
 * decided) or unknown (a one-phase commit whose outcome was lost).
 */
enum dtx_decision tx_decision(const struct tx *tx, int shard, uint64_t *xid);
/*
 * What is decided about a gtid nobody has a record of, by presumed abort:
 * one this coordinator (node, which had issued every gtid up to
 * issued_epoch/issued_seq) issued and has no commit record for is aborted;
 * anything else is unknown, never presumed.
 */
enum dtx_decision tx_presumed(const char *gtid, const char *node, uint64_t issued_epoch,
                              uint64_t issued_seq);

/* Why an interactive call may not run now, or what to answer instead. */
enum tx_admit {
    TXA_GO,      /* run it */
    TXA_REFUSE,  /* answer *why (409) */
    TXA_OUTCOME, /* answer with the outcome as it stands (tx_render_answer) */
    TXA_WAIT,    /* the same call is under way: wait for its answer */
    TXA_ABORTED, /* an abort that was already done: answer {"status":"aborted"} */
};
enum tx_admit tx_admit_call(const struct tx *tx, enum tx_call call, struct dtx_err *why);
/* Starts serving call: the answer (env->answer) comes when it is done. */
void tx_begin_call(struct tx *tx, enum tx_call call);

/* What a checkpoint must keep of tx: nothing, its COMMIT record, or COMMIT and END. */
enum tx_keep { TXK_NONE, TXK_DECIDED, TXK_RETAINED };
enum tx_keep tx_checkpoint_keep(const struct tx *tx);

/*
 * Fills rec with tx's COMMIT record: its prepared branches and, with an
 * idempotency key, the client's results. *branches and *results are
 * malloc'd for the caller to free; rec points into them and into tx.
 */
void tx_commit_record(const struct tx *tx, struct drec *rec, struct drec_branch **branches,
                      char **results);

/* ---- rendering (tx_render.c) ----------------------------------------------------------- */

/*
 * The message what for branch b (contract of msg.h); for a prepare,
 * one-phase or exec it takes the branch's ops out of tx.
 */
cJSON *tx_message(struct tx *tx, struct tx_branch *b, enum tx_send what);
/* The answer for the client as it stands: *status is the HTTP status, the body malloc'd JSON. */
char *tx_render_answer(const struct tx *tx, unsigned *status);
/* The answer for whoever waits: an interactive call's own answer, or the outcome. */
char *tx_render_reply(const struct tx *tx, unsigned *status);
/* The answer to an interactive begin (201). */
char *tx_render_begun(const struct tx *tx);
/* The body of GET /v1/transactions/{gtid}, as a tree. */
cJSON *tx_state_json(const struct tx *tx);
/* The results array of a committed transaction (malloc'd JSON), as logged for idempotency. */
char *tx_render_results(const struct tx *tx);
/* Bytes the transaction keeps for idempotent replays after it finished. */
size_t tx_retained_bytes(const struct tx *tx);

#endif
