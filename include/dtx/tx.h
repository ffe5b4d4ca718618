/*
 * tx.h - one global transaction and the commit protocol that drives it.
 *
 * The protocol is a table of (state, event) -> (next state, durable,
 * action) executed by tx_step(); see the diagram at the top of tx.c.
 * Everything the protocol does to the outside world (send a message, force
 * a log record, answer the client, arm a timer) goes through struct
 * tx_env, which the coordinator provides and the unit tests stub.
 *
 * Thread model: a tx belongs to the coordinator's event-loop thread.
 */
#ifndef DTX_TX_H
#define DTX_TX_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/gid.h"
#include "dtx/hmap.h"
#include "dtx/list.h"

enum tx_state {
    TX_ACTIVE,     /* created, nothing sent yet */
    TX_PREPARING,  /* phase 1: ops and PREPARE sent, votes awaited */
    TX_LOGGING,    /* every vote yes: the COMMIT record is being forced */
    TX_COMMITTING, /* COMMIT durable: COMMIT PREPARED sent, acks awaited */
    TX_COMMITTED,  /* final */
    TX_ABORTING,   /* abort decided: rollbacks sent, acks awaited */
    TX_ABORTED,    /* final */
    TX_ONE_PHASE,  /* one shard: ops and COMMIT sent, outcome awaited */
    TX_IN_DOUBT,   /* the log failed while forcing COMMIT: settled at restart */
    TX_UNKNOWN,    /* one-phase shard lost while committing: outcome unknown */
    TX_NSTATES
};

enum tx_event {
    TXE_NONE = -1,
    TXE_START_2PC,     /* send ops + PREPARE to every branch */
    TXE_START_1PC,     /* send ops + COMMIT to the only branch */
    TXE_VOTE_YES,      /* a branch prepared */
    TXE_VOTE_READONLY, /* a branch wrote nothing and finished */
    TXE_VOTE_NO,       /* a branch failed and rolled back */
    TXE_UNAVAILABLE,   /* a branch's participant cannot be reached (or was lost) */
    TXE_TIMEOUT,       /* the tx's timer fired */
    TXE_ALL_VOTED,     /* every vote is in, at least one yes */
    TXE_ALL_READONLY,  /* every vote is in, all read-only */
    TXE_LOG_REFUSED,   /* the COMMIT record could not even be queued */
    TXE_DURABLE,       /* the COMMIT record is on disk */
    TXE_LOG_FAILED,    /* the write or fdatasync of the COMMIT record failed */
    TXE_ACK,           /* a branch acknowledged phase 2 */
    TXE_ALL_ACKED,     /* every phase-2 acknowledgement is in */
    TXE_COMMITTED_1PC, /* the one-phase branch committed */
    TXE_ABORTED_1PC,   /* the one-phase branch rolled back (or was never reached) */
    TXE_RESEND,        /* a participant is back: resend what was lost */
    TXE_RECOVER,       /* replay found a COMMIT record without END: finish phase 2 */
    TXE_RECOVER_DONE,  /* replay found a COMMIT record with END */
    TXE_EXEC,          /* interactive: send a call's ops to their branches */
    TXE_EXECUTED,      /* interactive: a branch ran its part of the call */
    TXE_EXEC_FAILED,   /* interactive: a branch's ops failed (it rolled back) */
    TXE_ABORT,         /* interactive: the client asked to abort */
    TX_NEVENTS
};

enum branch_state {
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
    enum branch_state state;
    enum branch_state lost_in; /* for BR_LOST: what must be resent (commit or abort) */
    uint64_t xid;              /* from the yes vote */
    cJSON *ops;                /* array of ops to send; freed once sent */
    char *results;             /* RESULTS trailer of the vote or outcome (msg.h), never parsed */
    size_t results_len;
    uint32_t nops;
    uint32_t sends;   /* phase-2 messages sent (the first and every retry) */
    char *last_error; /* the last problem phase 2 met on this branch (malloc'd), or NULL */
    bool forgotten;   /* an operator gave up on it (dtxctl forget) */
};

/* Where the answer for client op i comes from. */
struct tx_opref {
    uint16_t branch;
    uint16_t index; /* within the branch's results */
};

struct tx;

/* Phase-2 retries back off from TX_RETRY_MIN_MS, doubling up to TX_RETRY_MAX_MS. */
#define TX_RETRY_MIN_MS 200
#define TX_RETRY_MAX_MS 30000

enum tx_send { TX_SEND_PREPARE, TX_SEND_ONE_PHASE, TX_SEND_COMMIT, TX_SEND_ABORT, TX_SEND_EXEC };

/* What the client of an interactive transaction is waiting for. */
enum tx_call { TX_CALL_NONE, TX_CALL_OPS, TX_CALL_COMMIT, TX_CALL_ABORT };

struct tx_env {
    /* Sends a protocol message to b's participant: 0, or DTX_EUNAVAIL if not connected. */
    int (*send)(struct tx *tx, struct tx_branch *b, enum tx_send what);
    /* Queues the COMMIT record; returns its lsn, or 0 if the log has failed. */
    uint64_t (*log_commit)(struct tx *tx);
    /* Queues the END record (not forced). */
    void (*log_end)(struct tx *tx);
    /* Tells whoever waits for this transaction how it stands (see tx_render). */
    void (*answer)(struct tx *tx);
    /* Arms the transaction's timer for ms (0: disarm). */
    void (*arm)(struct tx *tx, uint32_t ms);
    /* The transaction reached a final state (or a terminal unknown one). */
    void (*finished)(struct tx *tx);
    const char *const *shard_names; /* index -> name, for messages */
    void *ctx;
};

struct tx {
    /* owned by the coordinator (coord.c) */
    struct hmap_node by_gtid;
    struct hmap_node by_idem;
    struct list_node link;      /* on the live list, then on the retention list */
    struct list_node wait_link; /* on the log-wait queue while LOGGING */
    struct ev_timer timer;
    void *waiters;     /* client requests waiting for the answer */
    char *answer_body; /* the final answer, kept for idempotent retries */
    unsigned answer_status;
    bool retained;
    bool log_ended;        /* replay saw its END record */
    size_t retained_bytes; /* its answer's share of coord's retained_bytes */
    uint64_t expire_us;
    /* the protocol's state (tx.c) */
    char gtid[DTX_GTID_MAX + 1];
    const struct tx_env *env;
    enum tx_state state;
    uint8_t protocol;  /* 2 */
    bool interactive;  /* begun with "interactive": true; ops arrive call by call */
    enum tx_call call; /* interactive: the request being served */
    uint32_t idle_ms;  /* interactive: aborted when idle this long */
    char *idem_key;    /* may be NULL */
    uint64_t req_hash;
    uint64_t created_wall_us;
    uint64_t decided_wall_us;
    uint64_t lsn;        /* of the COMMIT record, 0 if none */
    uint32_t timeout_ms; /* phase-1 deadline */
    uint32_t commit_wait_ms;
    uint32_t retry_ms;      /* current phase-2 retry interval */
    uint32_t pending;       /* votes or acks still awaited */
    bool answered;          /* the client has been told */
    bool counted;           /* in the metrics (once, even if an unknown outcome resolves later) */
    uint32_t results_limit; /* with idem_key: most results bytes the COMMIT record may carry */
    bool replayed;          /* recreated from the decision log at start */
    size_t nbranches;
    struct tx_branch *branches;
    size_t nops;
    struct tx_opref *ops;
    struct dtx_err *error; /* why it aborted (or is unknown); NULL when nothing went wrong */
    char *stored_results;  /* results from the log, for idempotent replays after restart */
};

/*
 * Allocates a transaction in TX_ACTIVE with room for nbranches branches and
 * nops op references (filled in by the caller). Aborts on allocation failure.
 */
struct tx *tx_new(const char *gtid, const struct tx_env *env, size_t nbranches, size_t nops);
/* Frees tx and everything it owns. NULL is a no-op. */
void tx_free(struct tx *tx);

/*
 * Applies one event. arg describes it: for votes, acks and outcomes the
 * branch (b), its results, xid and error. Executes the transition's action
 * and any follow-up events. Returns 0, or DTX_ESTATE when the event is not
 * defined in the current state (the transaction is then untouched and the
 * refusal is logged).
 */
struct tx_evarg {
    struct tx_branch *b;
    uint64_t xid;
    const char *results; /* RESULTS trailer (copied when kept), or NULL */
    size_t results_len;
    const struct dtx_err *err;
};
int tx_step(struct tx *tx, enum tx_event ev, const struct tx_evarg *arg);

/* The code of tx's error, 0 when it has none. */
static inline int tx_error_code(const struct tx *tx)
{
    return tx->error ? tx->error->code : 0;
}

/* True for TX_COMMITTED and TX_ABORTED. */
bool tx_is_final(const struct tx *tx);
/* True when (state, ev) is in the table. */
bool tx_is_defined(enum tx_state state, enum tx_event ev);
/* The table's next state for a defined pair. */
enum tx_state tx_next_state(enum tx_state state, enum tx_event ev);
/* True when the pair's transition forces a record to disk. */
bool tx_is_durable(enum tx_state state, enum tx_event ev);

const char *tx_state_name(enum tx_state s);
const char *tx_event_name(enum tx_event e);
const char *tx_branch_state_name(enum branch_state s);
/* The contract's status string: "preparing", "committed", ... */
const char *tx_status(const struct tx *tx);

/*
 * The answer for the client as it stands: *status is the HTTP status and
 * the returned string (malloc'd) the JSON body.
 */
char *tx_render_answer(const struct tx *tx, unsigned *status);
/* The body of GET /v1/transactions/{gtid}: as a tree, or printed (malloc'd). */
cJSON *tx_state_json(const struct tx *tx);
char *tx_render_state(const struct tx *tx);
/* The results array of a committed transaction (malloc'd JSON), as logged for idempotency. */
char *tx_render_results(const struct tx *tx);

#endif
