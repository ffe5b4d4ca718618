/*
 * rm_pg_impl.h - what the files of the PostgreSQL resource manager share
 * (rm_pg.c, rm_pg_setup.c, rm_pg_run.c, rm_pg_finish.c, rm_pg_list.c,
 * rm_pg_state.c, rm_pg_accept.c, rm_pg_forget.c); private to them.
 *
 * Thread model: the participant's event-loop thread. Callbacks to the
 * agent are delivered from a deferred callback, never from inside the call
 * that started or cancelled the operation.
 */
#ifndef DTX_RM_PG_IMPL_H
#define DTX_RM_PG_IMPL_H

#include "dtx/gid.h"
#include "dtx/list.h"
#include "dtx/pgx.h"
#include "dtx/rm.h"

/* rm_pg_forget.c: the gtids whose acceptor rows are to be deleted (a failed batch waits again). */
struct pg_forget {
    char (*gtids)[DTX_GTID_MAX + 1]; /* waiting */
    size_t n, cap;
    char (*batch)[DTX_GTID_MAX + 1]; /* in the statement in flight (nbatch > 0) */
    size_t nbatch, batch_cap;
    uint64_t dropped;
    bool failing; /* the last statement failed (logged once until one works) */
    char error[256];
    char *json; /* the statement's gtids */
    const char *values[2];
    struct pgx_stmt stmt;
    struct pgx_job job;
    struct ev_timer timer; /* gathering, or waiting to try again */
};

struct pg_rm {
    struct rm base;
    struct ev_loop *loop;
    struct pgx_pool *pool;
    char shard[DTX_NAME_MAX + 1];
    uint64_t max_result_bytes; /* rm_pg_opts */
    uint64_t max_result_rows;
    struct list_node runs;     /* every pg_run not yet delivered */
    struct list_node finishes; /* every pg_finish not yet delivered */
    struct list_node statuses; /* every pg_status not yet delivered */
    struct list_node lists;    /* every pg_list not yet delivered */
    struct list_node states;   /* every pg_state (the agent's own state) not yet delivered */
    struct list_node accepts;  /* every pg_acc (three-phase commit state) not yet delivered */
    struct pg_forget forget;
    struct list_node sweeps; /* every listing of acceptor rows left behind not yet delivered */
};

/*
 * The database's identity (rm.h, RM_DB_ID_MAX) as one text column: its
 * system identifier and the timeline it writes WAL on (a primary only).
 */
#define RM_PG_SYSID_SQL "(SELECT system_identifier FROM pg_control_system())::text"
#define RM_PG_TIMELINE_SQL                                                                         \
    "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint"
#define RM_PG_IDENTITY_SQL RM_PG_SYSID_SQL " || ':' || " RM_PG_TIMELINE_SQL

/*
 * pg_prepared_xacts.transaction (a 32-bit xid) of p as an xid8: its epoch
 * is the one of the next xid, or the one before when it wrapped since
 * (a prepared transaction is always older than the next xid).
 */
#define RM_PG_PREPARED_XID8_SQL                                                                    \
    "(SELECT n - (n % 4294967296) + p.transaction::text::bigint - CASE WHEN "                      \
    "p.transaction::text::bigint > n % 4294967296 THEN 4294967296 ELSE 0 END FROM (SELECT "        \
    "pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS n) x)::text"

/*
 * Writes "<command> '<gid>'" into out, the gid's single quotes doubled (a
 * gid is a literal in these commands, which take no parameters).
 */
void rm_pg_gid_sql(char *out, size_t n, const char *command, const char *gid);

/* rm_pg_setup.c: prepares the database (blocking, before the event loop). */
int rm_pg_setup(const struct rm_pg_opts *o, int *server_version, struct dtx_err *err);

/* rm_pg_run.c: running branches (rm ops run, exec, end, cancel). */
struct rm_run *rm_pg_run(struct rm *base, const char *gid, cJSON *ops, bool one_phase,
                         bool three_pc, rm_run_fn done, void *arg);
struct rm_run *rm_pg_exec(struct rm *base, struct rm_run *session, const char *gid, bool three_pc,
                          cJSON *ops, uint32_t wait_ms, rm_run_fn done, void *arg);
void rm_pg_end(struct rm *base, struct rm_run *session, enum rm_end how, rm_run_fn done, void *arg);
void rm_pg_cancel(struct rm *base, struct rm_run *run, bool deadline);
void rm_pg_runs_free(struct pg_rm *rm);

/* rm_pg_finish.c: COMMIT/ROLLBACK PREPARED until the outcome is known, and branch status. */
void rm_pg_finish(struct rm *base, const char *gid, uint64_t xid, const char *db, bool commit,
                  rm_finish_fn done, void *arg);
/* The same from inside the resource manager (done may be NULL: nobody waits). */
void rm_pg_finish_start(struct pg_rm *rm, const char *gid, uint64_t xid, const char *db,
                        bool commit, rm_finish_fn done, void *arg);
/*
 * Asks until it can tell whether transaction xid of database db committed
 * (a lost one-phase COMMIT): RM_COMMITTED, RM_ROLLED_BACK, or RM_UNKNOWN
 * when the database changed or cannot tell.
 */
void rm_pg_status_start(struct pg_rm *rm, uint64_t xid, const char *db, rm_finish_fn done,
                        void *arg);
void rm_pg_status(struct rm *base, const char *gid, uint64_t xid, rm_status_fn done, void *arg);
void rm_pg_finishes_free(struct pg_rm *rm);

/* rm_pg_list.c: listing prepared branches (recovery) and inspecting them (operators). */
void rm_pg_list_prepared(struct rm *base, rm_list_fn done, void *arg);
void rm_pg_inspect(struct rm *base, bool locks, rm_inspect_fn done, void *arg);
void rm_pg_lists_free(struct pg_rm *rm);

/* rm_pg_state.c: the participant's own durable protocol state (the dtx schema). */
void rm_pg_see_coordinator(struct rm *base, const char *node, uint64_t epoch, const char *boot,
                           rm_seen_fn done, void *arg);
void rm_pg_states_free(struct pg_rm *rm);

/* rm_pg_accept.c: three-phase commit's acceptor state (the dtx schema). */
void rm_pg_acceptor(struct rm *base, enum rm_acc_op op, const char *gtid, const char *gid,
                    const char *peers, const struct ballot *b, enum ballot_value v,
                    rm_acceptor_fn done, void *arg);
void rm_pg_accepts_free(struct pg_rm *rm);
/* The gtid of the operation on rm->accepts whose link is p. */
const char *rm_pg_acceptor_gtid(const struct list_node *p);

/* rm_pg_forget.c: deleting the acceptor state of finished transactions. */
void rm_pg_forget_init(struct pg_rm *rm);
void rm_pg_forget_acceptors(struct rm *base, const char *gtid);
void rm_pg_list_acceptor_rows(struct rm *base, uint32_t min_age_ms, const char *after, size_t max,
                              rm_gtids_fn done, void *arg);
void rm_pg_forget_free(struct pg_rm *rm);

#endif
