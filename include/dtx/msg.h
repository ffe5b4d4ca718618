/*
 * msg.h - the messages coordinator and participants exchange on a peer
 * stream (one JSON object per frame; see stream.h and docs/protocol.md).
 *
 *   coordinator -> participant
 *     hello      {"t":"hello","node":N,"epoch":E}
 *     prepare    {"t":"prepare","gtid":G,"ops":[OP..],"timeout_ms":T,"interactive":B}
 *     one_phase  {"t":"one_phase","gtid":G,"ops":[OP..],"timeout_ms":T}
 *     commit     {"t":"commit","gtid":G,"xid":"X","db":D}
 *     abort      {"t":"abort","gtid":G}
 *     exec       {"t":"exec","gtid":G,"ops":[OP..],"timeout_ms":T,"idle_ms":I,"protocol":3?}
 *                (interactive: run ops in the branch's open transaction, beginning
 *                it if new; roll it back if no message about it comes for I ms.
 *                A later prepare / one_phase with "ops":[] ends that transaction,
 *                an abort rolls it back)
 *     three-phase commit ("protocol":3 on prepare and exec; prepare also carries
 *     "peers":PEERS, the transaction's acceptors):
 *     accept     {"t":"accept","gtid":G,"ballot":B,"value":"commit"}
 *                (PRE-COMMIT: the coordinator's proposal at its initial ballot)
 *     forget     {"t":"forget","gtid":G,"protocol":3}
 *                (every participant acknowledged G's decision: the shard's
 *                acceptor state of G is no longer needed; no answer. A
 *                participant that does not know the type logs and ignores it)
 *   participant -> coordinator
 *     hello      {"t":"hello","shard":S,"takes_forget":true}
 *                (takes_forget: it handles "forget"; one that does not say so
 *                is never sent it, so an older participant is not flooded
 *                with messages it would log as unknown)
 *     vote       {"t":"vote","gtid":G,"vote":"yes|no|readonly","xid":"X","db":D,"error":E}
 *                RESULTS
 *     outcome    {"t":"outcome","gtid":G,"outcome":"committed|aborted|unknown","error":E}
 *                RESULTS
 *     ack        {"t":"ack","gtid":G,"outcome":"committed|aborted|unknown","error":E}
 *                (unknown: the branch is gone and its fate cannot be proven, a
 *                heuristic hazard; committed/aborted against the decision is a
 *                heuristic outcome, with E saying so)
 *     executed   {"t":"executed","gtid":G,"error":E} RESULTS
 *     accepted   {"t":"accepted","gtid":G,"ok":true|false,"promised":B}
 *                (false: the branch promised a higher ballot to a recovery leader)
 *                (the exec's ops ran, or with E they failed and the branch was
 *                rolled back)
 *
 *   OP = {"i":index in the client's request,"sql":..,"params":[..],"expect_rows":n}
 *   RESULTS = the trailer after the JSON object: for each op, "\n" and its result
 *        R = {"rows_affected":n,"columns":[..],"rows":[[..]..]} (or null), as
 *        JSON text that the coordinator splices into the client's answer
 *        without parsing it, so values (bigints, floats) reach the client
 *        exactly as PostgreSQL printed them
 *   E  = the contract's error object {"code","message","op"?,"sqlstate"?,"detail"?,
 *        "hint"?,"constraint"?,"table"?,"column"?} (jsonx_error_obj)
 *   X  = a PostgreSQL xid8 as a decimal string (JSON numbers lose digits)
 *   D  = the database's identity where the branch prepared: "<system id>:<timeline>"
 *        (rm.h); an xid means something only there
 *   B  = a ballot {"counter":n,"node":"c:<node>"|"p:<shard>"} (ballot.h)
 *   PEERS = {"coordinator":{"node","url"},"shards":[{"name","url"}..]}
 *
 * Every message about a transaction is idempotent for its receiver: a
 * second commit of a committed branch is acknowledged again, an abort of an
 * unknown branch is acknowledged as aborted.
 */
#ifndef DTX_MSG_H
#define DTX_MSG_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/ballot.h"
#include "dtx/err.h"

enum msg_type {
    MSG_HELLO = 1,
    MSG_PREPARE,
    MSG_ONE_PHASE,
    MSG_COMMIT,
    MSG_ABORT,
    MSG_VOTE,
    MSG_OUTCOME,
    MSG_ACK,
    MSG_EXEC,
    MSG_EXECUTED,
    MSG_ACCEPT,
    MSG_ACCEPTED,
    MSG_FORGET,
};

enum msg_vote { VOTE_NONE = 0, VOTE_YES, VOTE_NO, VOTE_READONLY };
enum msg_outcome { OUTCOME_NONE = 0, OUTCOME_COMMITTED, OUTCOME_ABORTED, OUTCOME_UNKNOWN };

/* A parsed message; the pointers point into root. */
struct msg {
    enum msg_type type;
    cJSON *root;
    const char *gtid;
    const char *name; /* hello: the shard (from a participant) or node (from a coordinator) */
    uint64_t epoch;
    const cJSON *ops;
    uint32_t timeout_ms;
    uint32_t idle_ms;
    bool interactive;        /* prepare / one_phase: end the branch's open transaction */
    uint64_t xid;            /* 0: none */
    const char *db;          /* vote, commit: the database's identity (NULL: none) */
    bool three_pc;           /* prepare, exec: "protocol": 3 */
    const cJSON *peers;      /* prepare (3PC): the transaction's acceptors */
    struct ballot ballot;    /* accept: the ballot; accepted: the promise it holds */
    const char *value;       /* accept: "commit" */
    bool ok;                 /* accepted */
    bool takes_forget;       /* hello from a participant: it handles "forget" */
    const char *request_id;  /* prepare, one_phase, exec, commit, abort: the client request it
                                serves (NULL: none), for the logs */
    const char *traceparent; /* ... and its W3C trace context */
    enum msg_vote vote;
    enum msg_outcome outcome;
    const char *trailer; /* RESULTS: "\n" R per op; points into the frame */
    size_t trailer_len;
    struct dtx_err err; /* code 0 when the message carries no error */
};

/*
 * Parses one frame. Returns 0 and *out (release with msg_release), or
 * DTX_EPROTO with a message saying what is malformed; *out is then empty.
 */
int msg_parse(const char *data, size_t len, struct msg *out, struct dtx_err *err);
void msg_release(struct msg *m);

/*
 * Finds result k in a RESULTS trailer; returns false when there is none.
 * *p and *n delimit its JSON text.
 */
bool msg_result(const char *trailer, size_t len, size_t k, const char **p, size_t *n);
/* Reads a RESULTS trailer's results in order, each once: linear in the trailer. */
struct msg_results {
    const char *s, *end;
    size_t k; /* the index of the next result */
};
void msg_results_init(struct msg_results *r, const char *trailer, size_t len);
/* Result r->k (then r->k + 1 is next); false when there is none. */
bool msg_results_next(struct msg_results *r, const char **p, size_t *n);

/* Starts a message {"t":type,"gtid":gtid} (gtid may be NULL). */
cJSON *msg_new(enum msg_type type, const char *gtid);
void msg_add_xid(cJSON *m, uint64_t xid);
void msg_add_error(cJSON *m, const struct dtx_err *err);

const char *msg_vote_name(enum msg_vote v);
const char *msg_outcome_name(enum msg_outcome o);

#endif
