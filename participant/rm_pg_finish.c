/*
 * rm_pg_finish.c - finishing a prepared branch (COMMIT / ROLLBACK
 * PREPARED) and telling what became of one.
 *
 * A finish is retried with backoff until its outcome is known: a lost
 * connection is "unknown, ask again", never "failed". SQLSTATE 42704 (no
 * such prepared transaction) is resolved through pg_xact_status(xid), and
 * only in the database the branch was prepared in: the database's identity
 * (system identifier and timeline) is read in the same pipeline and
 * compared with the one recorded at the vote. A branch to commit that is
 * gone from a changed database, or whose xid PostgreSQL cannot tell about
 * (NULL: too old; "in the future": the database lost the WAL that held it),
 * is a hazard, never a success.
 *
 * State: rm->finishes and rm->statuses (every one not yet delivered).
 * Thread model: the participant's event-loop thread.
 */
#include "rm_pg_impl.h"

#include "dtx/failpoint.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FINISH_BACKOFF_MIN_MS 100
#define FINISH_BACKOFF_MAX_MS 5000

enum finish_stage { FS_MAIN, FS_CHECK };

struct pg_finish {
    struct list_node link; /* on rm->finishes */
    struct pg_rm *rm;
    char gid[RM_GID_MAX];
    uint64_t xid;
    char db[RM_DB_ID_MAX];     /* the database it was prepared in ("": not known) */
    char db_now[RM_DB_ID_MAX]; /* FS_CHECK: the database asked now */
    bool commit;
    enum finish_stage stage;
    struct pgx_stmt stmts[2];
    char sql[2 * RM_GID_MAX + 32];
    char xidbuf[24];
    const char *values[1];
    struct pgx_job job;
    bool known;
    bool retry;
    bool check_only; /* only asks pg_xact_status(xid): nothing is finished */
    enum rm_outcome outcome;
    struct dtx_err err;
    uint32_t backoff_ms;
    unsigned attempts;
    struct ev_timer timer;
    struct ev_defer deliver;
    rm_finish_fn done;
    void *arg;
};

static void finish_send(struct pg_finish *f);

static void finish_free(struct pg_finish *f)
{
    list_remove(&f->link);
    ev_timer_stop(f->rm->loop, &f->timer);
    ev_defer_cancel(f->rm->loop, &f->deliver);
    free(f);
}

static void on_finish_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_finish *f = d->data;

    (void)loop;
    if (f->done)
        f->done(f->arg, f->outcome, f->err.code ? &f->err : NULL);
    finish_free(f);
}

static void finish_known(struct pg_finish *f, enum rm_outcome outcome)
{
    enum rm_outcome want = f->commit ? RM_COMMITTED : RM_ROLLED_BACK;

    f->known = true;
    f->outcome = outcome;
    if (outcome != want && outcome != RM_HAZARD && outcome != RM_UNKNOWN && !f->check_only) {
        dtx_err_set(&f->err, DTX_ESTATE,
                    "heuristic outcome: prepared transaction '%s' was %s, but %s was asked", f->gid,
                    outcome == RM_COMMITTED ? "committed" : "rolled back",
                    f->commit ? "commit" : "rollback");
        log_error("%s", f->err.msg);
    }
}

/*
 * The branch is gone and its fate cannot be proven (why): a hazard for a
 * branch to commit (unknown, for a status check); for one to roll back,
 * nothing of it is in this database, which is what was asked.
 */
static void finish_unproven(struct pg_finish *f, const char *why)
{
    if (!f->commit && !f->check_only) {
        finish_known(f, RM_ROLLED_BACK);
        return;
    }
    dtx_err_set(&f->err, DTX_EUNKNOWN, "%s%s: %s",
                f->check_only ? "" : "heuristic hazard: ", f->gid, why);
    log_error("%s", f->err.msg);
    finish_known(f, f->check_only ? RM_UNKNOWN : RM_HAZARD);
}

/* pg_xact_status's answer s (NULL: SQL NULL) about the xid of a branch no longer prepared. */
static void finish_checked(struct pg_finish *f, const char *s)
{
    char why[300];

    if (f->db[0] && strcmp(f->db, f->db_now) != 0) {
        snprintf(why, sizeof(why),
                 "it is gone from a database that changed since it was prepared (system:timeline "
                 "%s then, %s now: restored from a backup, or a standby promoted)",
                 f->db, f->db_now[0] ? f->db_now : "unknown");
        finish_unproven(f, why);
    } else if (!s) {
        snprintf(why, sizeof(why),
                 "it is gone and PostgreSQL can no longer tell what became of its xid %" PRIu64
                 " (too old)",
                 f->xid);
        finish_unproven(f, why);
    } else if (strcmp(s, "committed") == 0) {
        finish_known(f, RM_COMMITTED);
    } else if (strcmp(s, "aborted") == 0) {
        finish_known(f, RM_ROLLED_BACK);
    } else {
        f->retry = true; /* in progress: ask again */
    }
}

/* "transaction ID is in the future": this database never durably assigned the xid. */
static void finish_xid_unknown(struct pg_finish *f)
{
    char why[300];

    if (f->check_only && (!f->db[0] || strcmp(f->db, f->db_now) == 0)) {
        finish_known(f, RM_ROLLED_BACK); /* the COMMIT cannot have happened here */
        return;
    }
    snprintf(why, sizeof(why),
             "it is gone and this database never durably had its xid %" PRIu64
             " (it lost WAL in a crash, or it is not the database the branch was prepared in)",
             f->xid);
    finish_unproven(f, why);
}

static void finish_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_finish *f = job->data;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    ExecStatusType st = PQresultStatus(res);
    bool row = st == PGRES_TUPLES_OK && PQntuples(res) == 1;

    if (f->stage == FS_MAIN && st == PGRES_COMMAND_OK && f->commit &&
        fp_hit("pg.lose_commit_answer")) {
        f->retry = true; /* as if the connection broke before the answer arrived */
    } else if (f->stage == FS_MAIN && st == PGRES_COMMAND_OK) {
        finish_known(f, f->commit ? RM_COMMITTED : RM_ROLLED_BACK);
    } else if (f->stage == FS_MAIN && state && strcmp(state, "42704") == 0) {
        if (f->xid)
            f->stage = FS_CHECK; /* gone: ask what became of its xid */
        else
            finish_unproven(f, "it is gone, and its xid is not known");
    } else if (f->stage == FS_CHECK && idx == 0 && row) {
        snprintf(f->db_now, sizeof(f->db_now), "%s", PQgetvalue(res, 0, 0));
    } else if (f->stage == FS_CHECK && idx == 1 && row && f->db_now[0]) {
        finish_checked(f, PQgetisnull(res, 0, 0) ? NULL : PQgetvalue(res, 0, 0));
    } else if (f->stage == FS_CHECK && idx == 1 && state && strcmp(state, "22023") == 0 &&
               f->db_now[0]) {
        finish_xid_unknown(f);
    } else {
        f->retry = true;
        if (f->attempts % 10 == 0)
            log_warn("finishing '%s': %s", f->gid, PQresultErrorMessage(res));
    }
    PQclear(res);
}

static void on_finish_retry(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    finish_send(t->data);
}

static void finish_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_finish *f = job->data;

    (void)answered;
    if (f->known) {
        ev_defer(f->rm->loop, &f->deliver);
        return;
    }
    if (rc == 0 && f->stage == FS_CHECK && !f->retry) {
        finish_send(f);
        return;
    }
    if (rc < 0 && f->attempts % 10 == 1)
        log_warn("finishing '%s': outcome unknown (%s); retrying", f->gid, why ? why : "");
    f->retry = false;
    ev_timer_start(f->rm->loop, &f->timer, f->backoff_ms);
    f->backoff_ms =
        f->backoff_ms * 2 > FINISH_BACKOFF_MAX_MS ? FINISH_BACKOFF_MAX_MS : f->backoff_ms * 2;
}

static void finish_send(struct pg_finish *f)
{
    int n = 1;

    f->attempts++;
    if (f->stage == FS_MAIN && f->commit && fp_hit("pg.finish_unproven")) {
        /* tests: the branch vanished from a database that changed (a race with a restore) */
        finish_unproven(f, "failpoint pg.finish_unproven");
        ev_defer(f->rm->loop, &f->deliver);
        return;
    }
    if (f->stage == FS_MAIN) {
        rm_pg_gid_sql(f->sql, sizeof(f->sql), f->commit ? "COMMIT PREPARED" : "ROLLBACK PREPARED",
                      f->gid);
        f->stmts[0] = (struct pgx_stmt){f->sql, 0, NULL, true};
    } else {
        snprintf(f->xidbuf, sizeof(f->xidbuf), "%" PRIu64, f->xid);
        f->values[0] = f->xidbuf;
        f->db_now[0] = '\0';
        f->stmts[0] = (struct pgx_stmt){"SELECT " RM_PG_IDENTITY_SQL, 0, NULL, true};
        f->stmts[1] = (struct pgx_stmt){"SELECT pg_xact_status($1::xid8)", 1, f->values, true};
        n = 2;
    }
    f->job = (struct pgx_job){.stmts = f->stmts,
                              .nstmts = n,
                              .phase2 = true,
                              .on_result = finish_result,
                              .on_done = finish_done,
                              .data = f};
    pgx_submit(f->rm->pool, &f->job);
}

static struct pg_finish *finish_new(struct pg_rm *rm, const char *gid, uint64_t xid, const char *db,
                                    bool commit, rm_finish_fn done, void *arg)
{
    struct pg_finish *f = xcalloc(1, sizeof(*f));
    f->rm = rm;
    snprintf(f->gid, sizeof(f->gid), "%s", gid);
    snprintf(f->db, sizeof(f->db), "%s", db ? db : "");
    f->xid = xid;
    f->commit = commit;
    f->done = done;
    f->arg = arg;
    f->backoff_ms = FINISH_BACKOFF_MIN_MS;
    dtx_err_clear(&f->err);
    ev_timer_init(&f->timer, on_finish_retry, f);
    ev_defer_init(&f->deliver, on_finish_deliver, f);
    list_insert_tail(&rm->finishes, &f->link);
    return f;
}

void rm_pg_finish_start(struct pg_rm *rm, const char *gid, uint64_t xid, const char *db,
                        bool commit, rm_finish_fn done, void *arg)
{
    finish_send(finish_new(rm, gid, xid, db, commit, done, arg));
}

void rm_pg_status_start(struct pg_rm *rm, uint64_t xid, const char *db, rm_finish_fn done,
                        void *arg)
{
    struct pg_finish *f = finish_new(rm, "", xid, db, true, done, arg);

    snprintf(f->gid, sizeof(f->gid), "xid %" PRIu64, xid);
    f->check_only = true;
    f->stage = FS_CHECK;
    finish_send(f);
}

void rm_pg_finish(struct rm *base, const char *gid, uint64_t xid, const char *db, bool commit,
                  rm_finish_fn done, void *arg)
{
    rm_pg_finish_start((struct pg_rm *)base, gid, xid, db, commit, done, arg);
}

/* ---- what became of a branch ---------------------------------------------------- */

struct pg_status {
    struct list_node link; /* on rm->statuses */
    struct pg_rm *rm;
    char gid[RM_GID_MAX];
    char xidbuf[24];
    const char *values[2];
    struct pgx_stmt stmts[2];
    struct pgx_job job;
    bool prepared;
    uint64_t prepared_xid;
    enum rm_branch_state state;
    struct dtx_err err;
    struct ev_defer deliver;
    rm_status_fn done;
    void *arg;
};

static void status_free(struct pg_status *st)
{
    list_remove(&st->link);
    ev_defer_cancel(st->rm->loop, &st->deliver);
    free(st);
}

static void on_status_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_status *st = d->data;

    (void)loop;
    st->done(st->arg, st->err.code, st->state, st->prepared_xid, st->err.code ? &st->err : NULL);
    status_free(st);
}

static void status_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_status *st = job->data;
    const char *s;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        /* pg_xact_status refuses xids it never issued ("in the future"): left unknown */
        if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED && idx == 0 && !st->err.code)
            dtx_err_set(&st->err, DTX_ESQL, "could not read pg_prepared_xacts: %s",
                        PQresultErrorMessage(res));
    } else if (idx == 0 && PQntuples(res) > 0) {
        st->prepared = true;
        st->prepared_xid = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    } else if (idx == 1 && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
        s = PQgetvalue(res, 0, 0);
        if (strcmp(s, "committed") == 0)
            st->state = RM_BRANCH_COMMITTED;
        else if (strcmp(s, "aborted") == 0)
            st->state = RM_BRANCH_ROLLED_BACK;
    }
    PQclear(res);
}

static void status_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_status *st = job->data;

    (void)answered;
    if (rc < 0 && !st->err.code)
        dtx_err_set(&st->err, DTX_EUNAVAIL, "could not ask PostgreSQL: %s", why ? why : "");
    if (st->prepared)
        st->state = RM_BRANCH_PREPARED;
    ev_defer(st->rm->loop, &st->deliver);
}

void rm_pg_status(struct rm *base, const char *gid, uint64_t xid, rm_status_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_status *st = xcalloc(1, sizeof(*st));
    st->rm = rm;
    st->done = done;
    st->arg = arg;
    st->state = RM_BRANCH_UNKNOWN;
    dtx_err_clear(&st->err);
    snprintf(st->gid, sizeof(st->gid), "%s", gid);
    snprintf(st->xidbuf, sizeof(st->xidbuf), "%" PRIu64, xid);
    st->values[0] = st->gid;
    st->values[1] = st->xidbuf;
    /* Only this database's prepared transactions: one PostgreSQL server may hold several shards. */
    st->stmts[0] = (struct pgx_stmt){"SELECT " RM_PG_PREPARED_XID8_SQL " FROM pg_prepared_xacts p "
                                     "WHERE gid = $1 AND database = current_database()",
                                     1, &st->values[0], true};
    st->stmts[1] = (struct pgx_stmt){"SELECT pg_xact_status($1::xid8)", 1, &st->values[1], true};
    st->job = (struct pgx_job){.stmts = st->stmts,
                               .nstmts = xid ? 2 : 1,
                               .phase2 = true,
                               .on_result = status_result,
                               .on_done = status_done,
                               .data = st};
    ev_defer_init(&st->deliver, on_status_deliver, st);
    list_insert_tail(&rm->statuses, &st->link);
    pgx_submit(rm->pool, &st->job);
}

void rm_pg_finishes_free(struct pg_rm *rm)
{
    while (!list_empty(&rm->finishes))
        finish_free(container_of(rm->finishes.next, struct pg_finish, link));
    while (!list_empty(&rm->statuses))
        status_free(container_of(rm->statuses.next, struct pg_status, link));
}
