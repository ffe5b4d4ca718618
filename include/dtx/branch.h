/*
 * branch.h - the participant's side of the commit protocol: one branch
 * (this shard's part of a global transaction, gid "dtx:<gtid>:<shard>")
 * and the machine that drives it, with the table of every branch in
 * memory.
 *
 * The machine is a table of (state, event) -> (next state, action)
 * executed by branch_step(); the diagram is at the top of branch.c. The
 * rest of the participant gives branches events (a coordinator's message,
 * a deadline, a lost stream, a recovery or operator decision) and asks
 * predicates; struct branch is opaque here.
 *
 * Everything a branch does to the outside world goes through the resource
 * manager (rm.h) and struct branch_env (messages to a coordinator, an
 * operator's answer); unit tests provide a fake of both.
 *
 * Commit and abort are idempotent and need no branch in memory: after a
 * restart the agent knows nothing, and COMMIT/ROLLBACK PREPARED by gid
 * (with the xid the coordinator logged) does the right thing. A branch is
 * created for the event that needs it and freed when it is gone.
 *
 * Thread model: the participant's event-loop thread only.
 */
#ifndef DTX_BRANCH_H
#define DTX_BRANCH_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/ev.h"
#include "dtx/hmap.h"
#include "dtx/httpd.h"
#include "dtx/rm.h"

struct branch;
struct peer; /* a coordinator's stream (peer.c); opaque to branches */

enum branch_event {
    BE_PREPARE,      /* a prepare: run the ops, then PREPARE TRANSACTION (a vote) */
    BE_ONE_PHASE,    /* a one_phase: run the ops, then COMMIT (an outcome) */
    BE_EXEC,         /* interactive: run a call's ops in the open transaction (begun if new) */
    BE_END_PREPARE,  /* interactive: PREPARE the open transaction (a vote) */
    BE_END_COMMIT,   /* interactive, one shard: COMMIT the open transaction (an outcome) */
    BE_NO_SLOT,      /* interactive: refused its prepare for lack of a prepared slot */
    BE_PREPARED,     /* the resource manager prepared the branch */
    BE_ENDED,        /* the run ended otherwise: failed, read-only, or a one-phase outcome */
    BE_EXECUTED,     /* interactive: the call's ops ran; the transaction stays open */
    BE_EXEC_FAILED,  /* interactive: the call failed; the transaction is gone */
    BE_ROLLED_BACK,  /* an open transaction was rolled back */
    BE_COMMIT,       /* commit the prepared branch (a coordinator, recovery or operator) */
    BE_ABORT,        /* abort: cancel a running branch, roll back an open or prepared one */
    BE_FINISHED,     /* one COMMIT/ROLLBACK PREPARED is done */
    BE_ALL_FINISHED, /* (internal) every finish of the branch is done */
    BE_DEADLINE,     /* the branch outlived its transaction's deadline */
    BE_PEER_LOST,    /* the coordinator stream it answers on closed */
    BE_FENCE,        /* 3PC: a recovery leader decides without it: it must never prepare */
    BE_NEVENTS
};

/* What a branch sends, and to whom. */
struct branch_env {
    struct ev_loop *loop;
    struct rm *rm;
    const char *shard;
    /*
     * Sends m (and deletes it), followed by trailer if not NULL, to peer's
     * coordinator, or to the newest one connected when peer is NULL;
     * dropped with a log line when none is.
     */
    void (*send)(void *ctx, struct peer *peer, cJSON *m, const struct buf *trailer);
    /* Answers an operator who asked to finish the branch (agent_http.c). */
    void (*finished_for)(void *ctx, struct httpd_req *req, const char *gtid, bool commit,
                         enum rm_outcome outcome, const struct dtx_err *err);
    /* A three-phase commit branch voted yes: it may have to finish without its coordinator. */
    void (*three_pc_prepared)(void *ctx, const char *gtid, const char *peers);
    void *ctx;
};

/* Counters for /metrics. */
struct branch_metrics {
    uint64_t votes_yes, votes_no, votes_readonly;
    uint64_t one_phase_committed, one_phase_aborted, one_phase_unknown;
    uint64_t committed, rolled_back, heuristic;
};

/* Every branch in memory, by gtid, and how many are in each kind of state. */
struct branches {
    const struct branch_env *env;
    struct hmap by_gtid;
    size_t running;   /* ops or an ending running (and open ones being rolled back) */
    size_t preparing; /* running toward PREPARE TRANSACTION: will need a prepared slot */
    size_t prepared;
    size_t finishing;
    size_t sessions; /* interactive ones holding a connection of their own */
    struct branch_metrics m;
};

void branches_init(struct branches *t, const struct branch_env *env);
/* Frees every branch (prepared ones stay prepared in the database; nothing is sent). */
void branches_release(struct branches *t);

/* The branch of gtid, or NULL. */
struct branch *branch_find(const struct branches *t, const char *gtid);
/* A new branch of gtid (which has none), in its initial state, answering peer. */
struct branch *branch_new(struct branches *t, const char *gtid, struct peer *peer);

/* What an event carries. */
struct branch_evarg {
    struct peer *peer;       /* who sent it; NULL: recovery, an operator, the agent */
    cJSON *ops;              /* PREPARE, ONE_PHASE, EXEC: the ops (taken) */
    bool three_pc;           /* PREPARE, EXEC, END_PREPARE: a three-phase commit transaction */
    const char *peers;       /* PREPARE, END_PREPARE (3PC): its acceptors, JSON (copied) */
    uint32_t timeout_ms;     /* PREPARE, ONE_PHASE, EXEC, END_*: the transaction's timeout */
    uint32_t idle_ms;        /* EXEC: the transaction's idle limit */
    uint32_t open_wait_ms;   /* EXEC: how long a new session may wait for a connection */
    uint64_t xid;            /* COMMIT, ABORT: the branch's xid if known (0: not) */
    const char *db;          /* COMMIT: the database it was prepared in, if known (NULL: not) */
    struct httpd_req *req;   /* COMMIT, ABORT: an operator's request, answered instead of an ack */
    struct rm_result *res;   /* PREPARED, ENDED, EXECUTED, EXEC_FAILED, ROLLED_BACK */
    void *finish;            /* FINISHED: which finish */
    enum rm_outcome outcome; /* FINISHED */
    const struct dtx_err *err;
};

/*
 * Applies one event to b (and its follow-ups). Returns 0, or DTX_ESTATE
 * when the event is not defined in b's state (nothing changed; logged). A
 * branch that is gone afterwards has been freed: do not touch b again.
 */
int branch_step(struct branch *b, enum branch_event ev, const struct branch_evarg *a);

/* True when ev is defined in b's current state. */
bool branch_accepts(const struct branch *b, enum branch_event ev);
bool branch_is_interactive(const struct branch *b);
const char *branch_gtid(const struct branch *b);
/* True while the agent itself runs or finishes b (recovery and operators keep off). */
bool branch_is_busy(const struct branch *b);
/* "running", "finishing" or "prepared": what the agent is doing with it (for operators). */
const char *branch_activity(const struct branch *b);
/* True when b holds (or is finishing) a prepared transaction: it uses a prepared slot. */
bool branch_holds_slot(const struct branch *b);

/*
 * True when one more prepared branch might not find a prepared-transaction
 * slot, keeping headroom slots free: max_prepared is the server's limit,
 * untracked the slots in use by others (prepared transactions this table
 * does not hold). *why then says so, naming shard.
 */
bool branches_no_slot(const struct branches *t, int64_t max_prepared, int64_t untracked,
                      uint32_t headroom, char *why, size_t n);

/* A coordinator's stream closed: every branch answering it is told (BE_PEER_LOST). */
void branches_peer_lost(struct branches *t, struct peer *peer);

#endif
