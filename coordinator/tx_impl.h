/*
 * tx_impl.h - the protocol's state, private to the tx module (tx.c,
 * tx_render.c) and its unit test. Nothing else includes this file: the
 * rest of the coordinator speaks tx.h.
 */
#ifndef DTX_TX_IMPL_H
#define DTX_TX_IMPL_H

#include "dtx/ballot.h"
#include "dtx/gid.h"
#include "dtx/tx.h"

enum tx_state {
    TX_ACTIVE,     /* created, nothing sent yet (interactive: open between calls) */
    TX_PREPARING,  /* phase 1: ops and PREPARE sent, votes awaited */
    TX_LOGGING,    /* every vote yes: the COMMIT record is being forced */
    TX_COMMITTING, /* COMMIT durable: COMMIT PREPARED sent, acks awaited */
    TX_COMMITTED,  /* final */
    TX_ABORTING,   /* abort decided: rollbacks sent, acks awaited */
    TX_ABORTED,    /* final */
    TX_ONE_PHASE,  /* one shard: ops and COMMIT sent, outcome awaited */
    TX_IN_DOUBT,   /* the log failed while forcing COMMIT: settled at restart */
    TX_UNKNOWN,    /* one-phase shard lost while committing: outcome unknown */
    /* three-phase commit (tx3pc.c) */
    TX_PRECOMMITTING, /* every vote yes: its PRECOMMIT record is being forced */
    TX_ACCEPTING,     /* the pre-commit sent: acceptances awaited */
    TX_LEARNING,      /* the participants decide (a recovery leader took over): awaited */
    TX_NSTATES
};

/* A branch as the coordinator sees it (the participant has its own, participant/branch.c). */
enum tx_branch_state {
    BR_NEW,        /* nothing sent yet */
    BR_PREPARING,  /* prepare (or one_phase) sent, answer awaited */
    BR_PREPARED,   /* voted yes: holds a prepared transaction */
    BR_READONLY,   /* voted read-only: finished, out of phase 2 */
    BR_FAILED,     /* voted no: the participant rolled it back */
    BR_UNREACHED,  /* could not be sent: nothing ran there */
    BR_LOST,       /* participant lost with a message in flight: must be told again */
    BR_COMMITTING, /* COMMIT PREPARED sent */
    BR_COMMITTED,
    BR_ABORTING, /* rollback sent */
    BR_ABORTED,
    BR_OPEN,      /* interactive: its transaction is open on the participant */
    BR_EXECUTING, /* interactive: a call's ops were sent, the answer is awaited */
    BR_NSTATES
};

struct tx_branch {
    int shard; /* index into the config's shards */
    enum tx_branch_state state;
    enum tx_branch_state lost_in; /* for BR_LOST: what must be resent (commit or abort) */
    uint64_t xid;                 /* from the yes vote */
    char db[DTX_DB_ID_MAX];       /* from the yes vote: the database it prepared in */
    uint8_t heuristic;            /* enum drec_heur_kind of its acknowledgement, 0: none */
    cJSON *ops;                   /* array of ops to send; freed once sent */
    char *results;                /* RESULTS trailer of the vote or outcome (msg.h), never parsed */
    size_t results_len;
    uint32_t nops;
    uint32_t sends;       /* phase-2 messages sent (the first and every retry) */
    char *last_error;     /* the last problem phase 2 met on this branch (malloc'd), or NULL */
    uint8_t accept_state; /* 3PC: enum tx_accept3, its answer to the pre-commit */
    bool forgotten;       /* an operator gave up on it (dtxctl forget) */
};

/* Three-phase commit: a participant's answer to the pre-commit. */
enum tx_accept3 { TXA3_NONE = 0, TXA3_ACCEPTED, TXA3_REJECTED };

/* Where the answer for client op i comes from. */
struct tx_opref {
    uint16_t branch;
    uint16_t index; /* within the branch's results */
};

struct tx {
    char gtid[DTX_GTID_MAX + 1];
    const struct tx_env *env;
    void *owner;
    enum tx_state state;
    uint8_t protocol;  /* 2 */
    bool interactive;  /* begun with "interactive": true; ops arrive call by call */
    enum tx_call call; /* interactive: the request being served */
    uint32_t idle_ms;  /* interactive: aborted when idle this long */
    char *client;      /* the named client whose it is (idemkey.h); NULL: the shared token's */
    char *client_tag;  /* idemkey_compose(client, NULL): a named client's record field */
    char *idem_key;    /* the key's slot (idemkey.h), or NULL */
    char *request_id;  /* the request that began it, for the logs and participants (or NULL) */
    char *traceparent; /* its trace context (or NULL) */
    uint64_t req_hash;
    uint64_t created_wall_us;
    uint64_t decided_wall_us;
    uint64_t born_us;        /* monotonic clock at creation (tx_elapsed_us) */
    uint64_t state_since_us; /* monotonic clock when the current state was entered */
    uint64_t lsn;            /* of the COMMIT record, 0 if none */
    bool durable;            /* the COMMIT record is known durable (TXE_DURABLE, or replayed) */
    bool two_pc_rows;        /* under protocol 3, runs two-phase commit's rows and messages:
                                nothing prepared (KEEP_ANSWER), or one shard with a key (with
                                two acceptors, the shard could never decide without it) */
    bool acceptor_rows;      /* three-phase commit's prepares were sent: each shard registered
                                its acceptor row, read-only branches too */
    bool acceptors_done;     /* this run finished it with every participant's acknowledgement
                                and told the shards to forget their acceptor rows (forget_acceptors) */
    uint64_t forcing;        /* the position of the record being forced (COMMIT or PRECOMMIT) */
    /* three-phase commit (tx3pc.c): this coordinator as an acceptor */
    struct ballot promised; /* the highest ballot promised (initially its own, (0, c:node)) */
    uint64_t pre_lsn;       /* its PRECOMMIT record: it accepted (its ballot, commit) */
    uint32_t accepts;       /* acceptors that accepted the pre-commit (itself included) */
    uint32_t rejects;       /* acceptors that refused it */
    bool learned;           /* the outcome was decided by the participants */
    uint32_t timeout_ms;    /* phase-1 deadline */
    uint32_t commit_wait_ms;
    uint32_t retry_ms;      /* current phase-2 retry interval */
    uint32_t pending;       /* votes or acks still awaited */
    uint32_t sent_in_step;  /* messages sent by the transition being executed */
    bool answered;          /* the client has been told */
    uint32_t results_limit; /* with idem_key: most results bytes the COMMIT record may carry */
    bool replayed;          /* recreated from the decision store at start */
    size_t nbranches;
    struct tx_branch *branches;
    size_t nops;
    struct tx_opref *ops;
    struct dtx_err *error; /* why it aborted (or is unknown); NULL when nothing went wrong */
    char *stored_results;  /* results kept once final, for idempotent replays and checkpoints */
    bool results_dropped;  /* a retained answer's results were dropped (retention_max_bytes) */
};

typedef enum tx_event (*tx_action)(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);

/* One row of a protocol's table: in state from, event ev leads to state to through action. */
struct tx_transition {
    enum tx_state from;
    enum tx_event ev;
    enum tx_state to;
    bool durable; /* the action forces a record; the next step waits for DURABLE */
    tx_action action;
    const char *action_name;
};

#define TX_T(from_, ev_, to_, durable_, action_)                                                   \
    {                                                                                              \
        .from = TX_##from_, .ev = TXE_##ev_, .to = TX_##to_, .durable = durable_,                  \
        .action = action_, .action_name = #action_                                                 \
    }

/* tx3pc.c: three-phase commit's rows, looked up before two-phase commit's (protocol 3). */
const struct tx_transition *tx3pc_find(enum tx_state s, enum tx_event e);
/* Its table, for the unit test that walks it. */
extern const struct tx_transition tx3pc_transitions[];
extern const size_t tx3pc_ntransitions;

/* tx.c's helpers and actions, shared with tx3pc.c. */
const char *tx_shard_name(const struct tx *tx, const struct tx_branch *b);
void tx_set_error(struct tx *tx, const struct tx_branch *b, const struct dtx_err *e, int code,
                  const char *msg);
void tx_clear_error(struct tx *tx);
uint32_t tx_count_branches(const struct tx *tx, enum tx_branch_state s1, enum tx_branch_state s2);
int tx_send(struct tx *tx, struct tx_branch *b, enum tx_send what);
void tx_answer(struct tx *tx);
void tx_finish(struct tx *tx);
/* True (with the error set) when a keyed transaction's results are over results_limit. */
bool tx_results_over_limit(struct tx *tx);
enum tx_event tx_act_none(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);
enum tx_event tx_act_abort_all(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);
enum tx_event tx_act_log_commit(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);
enum tx_event tx_act_in_doubt(struct tx *tx, enum tx_event ev, const struct tx_evarg *a);

/*
 * One transition of tx_step(): applies ev and runs its action, leaving the
 * follow-up event the action yields in *next (TXE_NONE: none) unapplied.
 * 0, or DTX_ESTATE for an undefined pair (nothing changed).
 */
int tx_step_one(struct tx *tx, enum tx_event ev, const struct tx_evarg *a, enum tx_event *next);

/* The state machine's table of protocol (2 or 3), for the unit test that walks it. */
bool tx_is_defined(int protocol, enum tx_state state, enum tx_event ev);
enum tx_state tx_next_state(int protocol, enum tx_state state, enum tx_event ev);
bool tx_is_durable(int protocol, enum tx_state state, enum tx_event ev);
/* The name of the action a defined pair runs ("act_vote"), or NULL. */
const char *tx_action_name(int protocol, enum tx_state state, enum tx_event ev);

const char *tx_state_name(enum tx_state s);
const char *tx_event_name(enum tx_event e);
const char *tx_branch_state_name(enum tx_branch_state s);

#endif
