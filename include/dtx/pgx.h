/*
 * pgx.h - asynchronous libpq: a pool of PostgreSQL connections in pipeline
 * mode, driven by the participant's event loop.
 *
 * Work is submitted as jobs: a list of statements (with a Sync wherever
 * the job says) sent in one pipeline, so a whole branch (BEGIN, its ops,
 * PREPARE TRANSACTION) costs one network round trip. Phase-2 jobs (COMMIT
 * PREPARED and the like) never wait on row locks, so several of them share
 * one connection's pipeline and are served before phase-1 jobs, which each
 * take a connection of their own (a phase-1 statement may wait on a lock).
 *
 * A job may hold its connection when it completes (hold = true): the
 * connection then stays with the job's owner, transaction open, until the
 * owner sends a follow-up job on it or releases it. A connection released
 * (or finishing a job) inside a transaction is rolled back before anyone
 * else gets it; one that ran a client's SQL (untrusted) has its session
 * reset (DISCARD ALL: settings, advisory locks, temporary tables, cursors,
 * LISTEN, prepared statements) before anyone else gets it.
 */
#ifndef DTX_PGX_H
#define DTX_PGX_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/ev.h"
#include "dtx/list.h"

struct pgx_pool;
struct pgx_conn;
struct pgx_job;

struct pgx_stmt {
    const char *sql;
    int nparams;
    const char *const *values; /* text values; NULL entries are SQL NULL */
    bool sync;                 /* a Sync follows this statement */
};

/*
 * Called for each statement's result, in order. res is owned by the callee
 * (PQclear it). A statement skipped because an earlier one failed gets a
 * result with status PGRES_PIPELINE_ABORTED.
 */
typedef void (*pgx_result_fn)(struct pgx_job *job, int idx, PGresult *res);
/*
 * Called once per job: rc 0 when every result arrived; DTX_EUNAVAIL when
 * the connection broke first (answered statements: nanswered; later ones
 * may or may not have run); DTX_EABORTED when the job was cancelled before
 * it was sent.
 */
typedef void (*pgx_done_fn)(struct pgx_job *job, int rc, int nanswered, const char *why);

struct pgx_job {
    /* set by the owner */
    const struct pgx_stmt *stmts;
    int nstmts;
    bool phase2;    /* may share a pipeline; served first */
    bool hold;      /* keep the connection when done (see above) */
    bool untrusted; /* runs a client's SQL: the session is reset before it serves another job */
    /*
     * Its last statement ends its transaction (PREPARE TRANSACTION, COMMIT,
     * ROLLBACK) and is followed by a Sync: an untrusted job's DISCARD ALL is
     * then sent in front of that Sync, in no transaction of the job's.
     */
    bool ends_xact;
    /*
     * Statements [rows_first, rows_first + rows_count) are read row by row
     * (libpq's single-row mode), so a big result never sits whole in
     * memory: on_result gets each row as a PGRES_SINGLE_TUPLE result, then
     * a PGRES_TUPLES_OK with none (or an error), as the statement's last.
     */
    int rows_first, rows_count;
    pgx_result_fn on_result;
    pgx_done_fn on_done;
    void *data;
    /* owned by pgx */
    struct list_node link;
    struct pgx_conn *conn;
    uint64_t conn_gen; /* conn's generation when the job was sent (see pgx_submit_on) */
    int trailing;      /* statements pgx added behind (a DISCARD ALL) */
    int next;          /* statement whose result comes next */
    bool got;          /* its result arrived (its NULL is next) */
    bool row_mode;     /* single-row mode is set for it */
    int syncs;         /* Syncs still to be seen */
    bool sent;
};

struct pgx_opts {
    const char *conninfo;
    int size; /* connections */
    /* Called with each new connection once connected, before it takes jobs. */
    void (*on_connect)(void *arg, PGconn *pg);
    void *arg;
    /*
     * Run once on each new connection before it takes jobs (NULL: nothing): the
     * first value of its one row is kept, for pgx_conn_value, while the
     * connection lives. Something fixed while a connection lives, read once
     * instead of in every job (the database's identity). A NULL value says
     * the server cannot take work (a standby): the connection is closed,
     * init_null_why logged, and another tried later (with backoff). An
     * error leaves the value "".
     */
    const char *init_sql;
    const char *init_null_why;
    /*
     * client_connection_check_interval for every connection (PostgreSQL 14
     * and later; 0: not set): a backend running a statement checks this
     * often that its client is still there.
     */
    uint32_t check_client_ms;
};

/* The connection's init_sql value ("" without one, or when it gave none). */
const char *pgx_conn_value(const struct pgx_conn *conn);

/* Creates the pool and starts connecting. Aborts on allocation failure. */
struct pgx_pool *pgx_pool_new(struct ev_loop *loop, const struct pgx_opts *opts);
/* Closes every connection; pending jobs are dropped without callbacks. NULL is a no-op. */
void pgx_pool_free(struct pgx_pool *pool);

/* Queues job for the next free connection. */
void pgx_submit(struct pgx_pool *pool, struct pgx_job *job);
/*
 * Sends job on conn, which a previous job holds for the caller; gen is that
 * job's conn_gen. Returns DTX_EUNAVAIL, and sends nothing, when the
 * connection was lost meanwhile: its transaction went with it, and the
 * slot may serve someone else by now.
 */
int pgx_submit_on(struct pgx_conn *conn, uint64_t gen, struct pgx_job *job);
/*
 * Cancels job: a queued job is removed and its on_done called with
 * DTX_EABORTED; a running one gets a PostgreSQL cancel request (its
 * statement then fails with SQLSTATE 57014). Returns 0.
 */
int pgx_cancel(struct pgx_pool *pool, struct pgx_job *job);

/*
 * Notices (NOTICE, WARNING, ... that PostgreSQL sends a session, e.g. from a
 * client's RAISE NOTICE) go to the daemon's log instead of libpq's default
 * printer on stderr: one log line each (a multi-line notice included), at
 * most PGX_NOTICES_PER_S a second per struct pgx_notices; how many were
 * left out is logged too. Every connection of a pool shares the pool's.
 */
#define PGX_NOTICES_PER_S 10

struct pgx_notices {
    uint64_t second_us; /* when the current second began (ev_clock_us) */
    unsigned logged;    /* notices logged in it */
    unsigned dropped;   /* notices left out and not yet reported */
};

/* Sends pg's notices to the log, counted against *n, which must outlive pg. */
void pgx_log_notices(PGconn *pg, struct pgx_notices *n);

/* Connections currently usable, and the last connection error ("" if none). */
int pgx_pool_up(const struct pgx_pool *pool);
const char *pgx_pool_error(const struct pgx_pool *pool);
/* Jobs waiting for a connection. */
int pgx_pool_queued(const struct pgx_pool *pool);

#endif
