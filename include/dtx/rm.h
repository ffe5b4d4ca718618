/*
 * rm.h - the resource manager behind a participant: the database a
 * branch runs in.
 *
 * The participant's protocol code (agent.c) speaks only this interface;
 * PostgreSQL implements it (rm_pg.c). Another database would implement the
 * same operations: run a branch's ops and end it by preparing (or, for a
 * one-phase transaction, committing), finish a prepared branch, cancel a
 * running one. Every operation is asynchronous and calls back exactly once.
 *
 * Outcomes are reported as what the database really did. An operation
 * whose outcome cannot be known yet (the connection broke during COMMIT
 * PREPARED) is retried inside the resource manager until it is known; it
 * is never reported as a failure.
 */
#ifndef DTX_RM_H
#define DTX_RM_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/ballot.h"
#include "dtx/buf.h"
#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/gid.h"

struct rm;

/* A running branch; each resource manager embeds this first in its own struct. */
struct rm_run {
    struct rm *rm;
};

enum rm_outcome {
    RM_PREPARED,    /* the branch is prepared under its gid */
    RM_READONLY,    /* the branch wrote nothing and is finished */
    RM_COMMITTED,   /* committed (one phase, or a finished prepared branch) */
    RM_ROLLED_BACK, /* rolled back; nothing of it remains */
    RM_UNKNOWN,     /* one phase: the commit's outcome cannot be determined */
    RM_ACTIVE,      /* interactive: the ops ran, the transaction stays open */
    RM_HAZARD,      /* finish: the branch is gone and what became of it cannot be proven */
};

/*
 * A database's identity, "<system identifier>:<timeline>": a branch's xid
 * means something only in the database, and on the timeline, where it was
 * prepared. A restore from a backup or a promoted standby has another
 * timeline (or system), where the same xid may be an unrelated transaction.
 */
#define RM_DB_ID_MAX DTX_DB_ID_MAX

/* How an interactive branch ends. */
enum rm_end { RM_END_PREPARE, RM_END_COMMIT, RM_END_ROLLBACK };

struct rm_result {
    enum rm_outcome outcome;
    uint64_t xid;          /* RM_PREPARED: the branch's transaction id (xid8) */
    char db[RM_DB_ID_MAX]; /* RM_PREPARED: the identity of the database it is prepared in */
    /*
     * One result per op, each as "\n" followed by its JSON text (msg.h's
     * RESULTS trailer), numbers exactly as the database printed them. The
     * callee owns the buffer (buf_release it).
     */
    struct buf results;
    struct dtx_err err; /* why, for RM_ROLLED_BACK and RM_UNKNOWN */
};

/* What became of a branch, as far as the database can tell. */
enum rm_branch_state {
    RM_BRANCH_PREPARED,    /* still prepared under its gid */
    RM_BRANCH_COMMITTED,   /* not prepared; its xid committed */
    RM_BRANCH_ROLLED_BACK, /* not prepared; its xid rolled back (or never prepared) */
    RM_BRANCH_UNKNOWN,     /* not prepared and no xid to ask about (or too old to tell) */
};

/* The longest gid a prepared transaction may have (PostgreSQL's GIDSIZE, with its NUL). */
#define RM_GID_MAX 200

/* One prepared dtx branch of this database. */
struct rm_prepared {
    char gid[RM_GID_MAX];
    uint64_t xid;
    uint32_t age_ms; /* since it was prepared */
    bool three_pc;   /* a three-phase commit branch: it has acceptor state (see acceptor) */
};

/* Three-phase commit: what is asked of this shard's acceptor state (sql/003_acceptors.sql). */
enum rm_acc_op {
    RM_ACC_REGISTER, /* a branch prepared: keep the transaction's acceptors (peers) */
    RM_ACC_PROMISE,  /* PROMISE-REQ(ballot); fences a branch that has not prepared */
    RM_ACC_ACCEPT,   /* ACCEPT(ballot, value) */
    RM_ACC_DECIDED,  /* the decision is known: value */
    RM_ACC_STATE,    /* read it */
};

/* This shard's acceptor state of one transaction, after an operation. */
struct rm_acceptor {
    bool exists;   /* there is a row (RM_ACC_STATE) */
    bool granted;  /* PROMISE: granted (or already promised this very ballot) */
    bool busy;     /* PROMISE: the branch's transaction runs; cancel it, then ask again */
    bool accepted; /* ACCEPT: accepted */
    bool prepared; /* the branch is prepared here */
    bool fenced;   /* the branch may never prepare here */
    struct ballot promised;
    struct ballot accepted_ballot; /* valid when accepted_value is not BV_NONE */
    enum ballot_value accepted_value;
    enum ballot_value decided;
    const char *peers; /* the acceptors, as registered (JSON), whole; NULL or "" if unknown */
};

/* What an operator needs to see about the database's prepared dtx branches. */
struct rm_branch_info {
    struct rm_prepared p;
    const char *locks; /* JSON array of the locks it holds: [{"locktype","relation","mode"}] */
};
struct rm_inspection {
    int64_t max_prepared;   /* the database's limit on prepared transactions */
    int64_t prepared_total; /* prepared transactions in the server now, dtx's or not */
    size_t n;
    const struct rm_branch_info *branches; /* this database's, gid starting with "dtx:" */
};

/*
 * What the shard knows of a coordinator node's runs (see see_coordinator):
 * whether this run was accepted, and the newest epoch seen before it, from
 * the shard's record and from the gids of its prepared branches.
 */
struct rm_coord_seen {
    bool accepted;
    uint64_t epoch_seen; /* the highest epoch of the node known here before this run (0: none) */
    char boot_seen[40];  /* the boot id recorded with it ("" if none) */
};

typedef void (*rm_run_fn)(void *arg, struct rm_result *res);
/* rc 0 with st (valid during the call), or an error with err. */
typedef void (*rm_acceptor_fn)(void *arg, int rc, const struct rm_acceptor *st,
                               const struct dtx_err *err);
typedef void (*rm_seen_fn)(void *arg, int rc, const struct rm_coord_seen *seen,
                           const struct dtx_err *err);
/* rc 0 with n items (valid during the call), or an error with err. */
typedef void (*rm_list_fn)(void *arg, int rc, const struct rm_prepared *items, size_t n,
                           const struct dtx_err *err);
/* rc 0 with ins (valid during the call), or an error with err. */
typedef void (*rm_inspect_fn)(void *arg, int rc, const struct rm_inspection *ins,
                              const struct dtx_err *err);
typedef void (*rm_finish_fn)(void *arg, enum rm_outcome outcome, const struct dtx_err *err);
/* rc 0 with n gtids (valid during the call), or an error with err. */
typedef void (*rm_gtids_fn)(void *arg, int rc, const char (*gtids)[DTX_GTID_MAX + 1], size_t n,
                            const struct dtx_err *err);
/* rc 0 with state (and the prepared branch's xid when prepared), or an error with err. */
typedef void (*rm_status_fn)(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                             const struct dtx_err *err);

struct rm_ops {
    const char *name;
    /*
     * Runs ops ([{"i","sql","params","expect_rows"}], taken over by the
     * resource manager) in a new transaction and prepares it as gid, or
     * commits it when one_phase. A three_pc branch first makes sure its
     * transaction was not fenced or decided here (see acceptor), and holds
     * that off until it ends. Returns a handle for rm_cancel, valid
     * until done is called. Callbacks never run inside the call that
     * started or cancelled the operation.
     */
    struct rm_run *(*run)(struct rm *rm, const char *gid, cJSON *ops, bool one_phase, bool three_pc,
                          rm_run_fn done, void *arg);
    /*
     * Asks a running branch to stop; its done callback still comes. With
     * deadline, it fails as a timeout (DTX_ETIMEDOUT), else as an abort.
     */
    void (*cancel)(struct rm *rm, struct rm_run *run, bool deadline);
    /*
     * Interactive branches: a transaction left open between calls, on a
     * connection of its own. exec runs ops in session's transaction, or,
     * with session NULL, begins one (waiting at most wait_ms for a free
     * connection) and returns the new session. done gets RM_ACTIVE with the
     * ops' results (the transaction stays open), or RM_ROLLED_BACK with
     * err (an op failed; no connection was free: DTX_EBUSY), after which
     * the session is gone. One call at a time per session.
     */
    struct rm_run *(*exec)(struct rm *rm, struct rm_run *session, const char *gid, bool three_pc,
                           cJSON *ops, uint32_t wait_ms, rm_run_fn done, void *arg);
    /*
     * Ends an open session (no exec running): PREPARE (RM_PREPARED, or
     * RM_READONLY when it wrote nothing), COMMIT (RM_COMMITTED, RM_UNKNOWN)
     * or ROLLBACK (RM_ROLLED_BACK); the session is gone once done is called.
     */
    void (*end)(struct rm *rm, struct rm_run *session, enum rm_end how, rm_run_fn done, void *arg);
    /*
     * Commits (commit) or rolls back the prepared branch gid. For a branch
     * that is no longer prepared, xid and db (the database it was prepared
     * in; 0 and NULL when not known) tell what became of it: its xid's fate
     * counts only in that same database. Calls done with RM_COMMITTED or
     * RM_ROLLED_BACK, err set when that is not what was asked (a heuristic
     * outcome); or RM_HAZARD, err saying why, when a branch to commit is
     * gone and its fate cannot be proven (the database changed, its xid is
     * unknown or too old to tell). A branch to roll back that is gone is
     * rolled back as far as this database is concerned, unless its xid
     * shows it committed here.
     */
    void (*finish)(struct rm *rm, const char *gid, uint64_t xid, const char *db, bool commit,
                   rm_finish_fn done, void *arg);
    /*
     * Tells what became of branch gid: prepared, or (given its xid)
     * committed or rolled back. Works after any crash of the agent.
     */
    void (*status)(struct rm *rm, const char *gid, uint64_t xid, rm_status_fn done, void *arg);
    /* Lists this database's prepared transactions whose gid starts with "dtx:". */
    void (*list_prepared)(struct rm *rm, rm_list_fn done, void *arg);
    /* Like list_prepared, with the prepared-transaction headroom and (locks) what each holds. */
    void (*inspect)(struct rm *rm, bool locks, rm_inspect_fn done, void *arg);
    /* True when the database is reachable; otherwise why says what is wrong. */
    bool (*healthy)(const struct rm *rm, char *why, size_t whysz);

    /*
     * The participant's own durable protocol state, kept in the shard's
     * database (its dtx schema), committed before anything acts on it.
     *
     * see_coordinator: a run (epoch, boot id) of coordinator node wants to
     * connect. It is accepted, and recorded as the newest run seen, when
     * its epoch is higher than any the shard has seen of that node (its
     * record, and the epochs in the gids of its prepared branches), or the
     * same epoch under the same boot id (a reconnect of the same run).
     * Otherwise it is refused: its decision log is behind (restored from an
     * older copy, or lost), and its gtids would collide with ones already
     * used. done gets rc 0 and seen, or an error.
     */
    void (*see_coordinator)(struct rm *rm, const char *node, uint64_t epoch, const char *boot,
                            rm_seen_fn done, void *arg);
    /*
     * Three-phase commit: op on this shard's acceptor state of gtid (its
     * branch is gid), each change committed before done is called. peers
     * (JSON, may be NULL) is kept when the state is new; b and v as op
     * needs them.
     */
    void (*acceptor)(struct rm *rm, enum rm_acc_op op, const char *gtid, const char *gid,
                     const char *peers, const struct ballot *b, enum ballot_value v,
                     rm_acceptor_fn done, void *arg);
    /*
     * Three-phase commit: every participant of gtid has finished its
     * branch (its coordinator had all their acknowledgements), so no
     * recovery round will ask for this shard's acceptor state of gtid
     * again: it goes, in the background (no callback). State whose branch
     * is still prepared here is kept. Best effort: what cannot be deleted
     * (the agent stops first, the database keeps failing) stays, unused.
     */
    void (*forget_acceptors)(struct rm *rm, const char *gtid);
    /*
     * Three-phase commit: acceptor state that forget_acceptors should have
     * removed and may not have (the forget never came, or was lost): at
     * most max gtids, in gtid order after after ("" from the start), whose
     * state was last changed min_age_ms ago or before and whose branch is
     * not prepared here. Recovery asks their coordinator about them.
     */
    void (*list_acceptor_rows)(struct rm *rm, uint32_t min_age_ms, const char *after, size_t max,
                               rm_gtids_fn done, void *arg);
    void (*free)(struct rm *rm);
};

struct rm {
    const struct rm_ops *ops;
};

static inline struct rm_run *rm_start(struct rm *rm, const char *gid, cJSON *ops, bool one_phase,
                                      bool three_pc, rm_run_fn done, void *arg)
{
    return rm->ops->run(rm, gid, ops, one_phase, three_pc, done, arg);
}

static inline void rm_cancel(struct rm *rm, struct rm_run *run, bool deadline)
{
    rm->ops->cancel(rm, run, deadline);
}

static inline struct rm_run *rm_exec(struct rm *rm, struct rm_run *session, const char *gid,
                                     bool three_pc, cJSON *ops, uint32_t wait_ms, rm_run_fn done,
                                     void *arg)
{
    return rm->ops->exec(rm, session, gid, three_pc, ops, wait_ms, done, arg);
}

static inline void rm_end(struct rm *rm, struct rm_run *session, enum rm_end how, rm_run_fn done,
                          void *arg)
{
    rm->ops->end(rm, session, how, done, arg);
}

static inline void rm_finish(struct rm *rm, const char *gid, uint64_t xid, const char *db,
                             bool commit, rm_finish_fn done, void *arg)
{
    rm->ops->finish(rm, gid, xid, db, commit, done, arg);
}

static inline void rm_status(struct rm *rm, const char *gid, uint64_t xid, rm_status_fn done,
                             void *arg)
{
    rm->ops->status(rm, gid, xid, done, arg);
}

static inline void rm_list_prepared(struct rm *rm, rm_list_fn done, void *arg)
{
    rm->ops->list_prepared(rm, done, arg);
}

static inline void rm_inspect(struct rm *rm, bool locks, rm_inspect_fn done, void *arg)
{
    rm->ops->inspect(rm, locks, done, arg);
}

static inline bool rm_healthy(const struct rm *rm, char *why, size_t whysz)
{
    return rm->ops->healthy(rm, why, whysz);
}

static inline void rm_see_coordinator(struct rm *rm, const char *node, uint64_t epoch,
                                      const char *boot, rm_seen_fn done, void *arg)
{
    rm->ops->see_coordinator(rm, node, epoch, boot, done, arg);
}

static inline void rm_acceptor(struct rm *rm, enum rm_acc_op op, const char *gtid, const char *gid,
                               const char *peers, const struct ballot *b, enum ballot_value v,
                               rm_acceptor_fn done, void *arg)
{
    rm->ops->acceptor(rm, op, gtid, gid, peers, b, v, done, arg);
}

static inline void rm_forget_acceptors(struct rm *rm, const char *gtid)
{
    rm->ops->forget_acceptors(rm, gtid);
}

static inline void rm_list_acceptor_rows(struct rm *rm, uint32_t min_age_ms, const char *after,
                                         size_t max, rm_gtids_fn done, void *arg)
{
    rm->ops->list_acceptor_rows(rm, min_age_ms, after, max, done, arg);
}

static inline void rm_free(struct rm *rm)
{
    if (rm)
        rm->ops->free(rm);
}

/* How the PostgreSQL resource manager is set up. */
struct rm_pg_opts {
    const char *conninfo;
    int pool_size;             /* connections */
    const char *shard;         /* the shard this database belongs to */
    unsigned wait_s;           /* how long to wait for PostgreSQL to come up */
    bool allow_fsync_off;      /* serve a database running with fsync = off (warned) */
    uint64_t max_result_bytes; /* a branch's results, as JSON: more fails as DTX_ERESULT */
    uint64_t max_result_rows;  /* rows a branch's ops return, all together */
};

/*
 * The PostgreSQL resource manager: prepares the database (schema in sql/,
 * identity and settings checks; waits up to wait_s for it to come up),
 * then opens a pool of pool_size connections. Returns 0 and *out, or an
 * error that says what to fix (DTX_EUNAVAIL: unreachable; DTX_EINVAL:
 * max_prepared_transactions is 0, fsync is off, the database belongs to
 * another shard, the server is too old).
 */
int rm_pg_new(struct rm **out, struct ev_loop *loop, const struct rm_pg_opts *o,
              struct dtx_err *err);

#endif
