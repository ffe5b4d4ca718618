/*
 * rm_pg_run.c - running a branch in PostgreSQL: one pipeline on one pooled
 * connection (one round trip):
 *
 *   BEGIN;
 *   <ops with bind parameters>;
 *   SELECT pg_current_xact_id_if_assigned();
 *   PREPARE TRANSACTION '<gid>'                          (or COMMIT for one phase)
 *
 * The branch's deadline (its transaction's timeout_ms) is kept by the
 * participant, which cancels a branch still running then (branch.c), not by
 * a statement_timeout: a client's SET LOCAL could turn that off, it would
 * cost the server a statement per branch (A/B at 32 clients on 2 cores:
 * 1.026 without it), and it could not free the branch's locks anyway (they
 * stay until the transaction ends, which takes the participant). A
 * participant that dies mid-branch is noticed by PostgreSQL within a second
 * (pgx's client_connection_check_interval).
 *
 * What PostgreSQL really did is read from each result, never assumed:
 *   - PREPARE TRANSACTION inside a failed transaction answers with the
 *     command tag ROLLBACK: that is a "no" vote;
 *   - a branch whose transaction id was never assigned wrote nothing: it
 *     is read-only, and its (empty) prepared transaction is committed at
 *     once, so it takes no part in phase 2;
 *   - expect_rows is checked as results arrive; a mismatch after the
 *     PREPARE ran rolls the prepared branch back before the no vote;
 *   - so are the limits on a branch's results (max_result_bytes, rows),
 *     read row by row (pgx single-row mode): the statement that goes over
 *     is cancelled and the branch fails with DTX_ERESULT.
 * Two variants cost one more round trip: a branch whose ops all start with
 * SELECT/VALUES/TABLE/SHOW runs its ops first and then prepares only if it
 * wrote something (read-only branches then commit without PREPARE), and a
 * one-phase branch runs its ops first and commits only once their results
 * are checked (expect_rows, the limits): a COMMIT in the same pipeline
 * would have run before a result over the limit could stop it.
 *
 * Interactive branches (rm exec/end) keep their transaction open on a held
 * connection between calls; each call is one more pipeline into it.
 *
 * The branch's xid (pg_current_xact_id_if_assigned) and the database's
 * identity (system identifier, timeline) go into the yes vote and the
 * coordinator's COMMIT record. With them, pg_xact_status() tells what
 * became of a branch that is no longer prepared, in that database only
 * (rm_pg_finish.c). Both are fixed while a connection lives: the system
 * identifier for the server's life, the timeline until a standby is
 * promoted, and pgx keeps no connection to a standby (rm_pg.c). So they are
 * read once per connection (pgx init_sql), not in every vote.
 *
 * State: rm->runs (every run not yet delivered). Thread model: the
 * participant's event-loop thread.
 */
#include "rm_pg_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/pgval.h"
#include "dtx/sqlcheck.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum run_stage { RS_MAIN, RS_END };

struct pg_run {
    struct rm_run base;
    struct list_node link; /* on rm->runs */
    struct pg_rm *rm;
    char gid[DTX_GID_MAX + 1];
    char gtid[DTX_GTID_MAX + 1]; /* three_pc: dtx.branch_begin's argument */
    const char *gtid_value[1];
    cJSON *ops;
    bool one_phase;
    bool three_pc; /* BEGIN is followed by dtx.branch_begin(gtid) (sql/003_acceptors.sql) */
    bool split;    /* ops first, then the ending in a second round trip */
    /*
     * Interactive: a session whose transaction stays open between calls
     * (rm exec/end). Its ops start at statement first_op: 1 (2 for three_pc)
     * when this call sends the BEGIN, 0 for later calls into the open
     * transaction.
     */
    bool interactive;
    bool began;
    uint32_t wait_ms;
    int first_op;
    struct ev_timer wait_timer;
    int nops;
    struct pgx_stmt *stmts;
    int nstmts;
    char **params; /* every parameter value, owned */
    int nparams;
    const char ***values;
    int64_t *expect;
    int *op_index;
    struct buf results;     /* "\n" + JSON text per op */
    struct pgval_rows rows; /* the op whose result is arriving */
    uint64_t nrows;         /* rows the ops returned so far */
    struct dtx_err err;
    bool have_xid, xid_null;
    uint64_t xid;
    char db[RM_DB_ID_MAX]; /* the database's identity, read with the xid */
    bool end_ok;           /* PREPARE / COMMIT answered with its own tag */
    bool end_sent;         /* the ending statement was sent */
    bool cancelled;
    enum run_stage stage;
    struct pgx_stmt end_stmt;
    char end_sql[DTX_GID_MAX + 32];
    struct pgx_job job;
    struct rm_result result;
    struct ev_defer deliver;
    rm_run_fn done;
    void *arg;
};

/* Records PostgreSQL's error for op (-1: not an op), unless an error is already recorded. */
static void note_pg_error(struct pg_run *r, const PGresult *res, int op)
{
    if (r->err.code)
        return;
    pgval_error(res, r->cancelled, &r->err);
    snprintf(r->err.shard, sizeof(r->err.shard), "%s", r->rm->shard);
    r->err.op = op;
}

/* Frees what one call's ops needed (an interactive session makes several calls). */
static void run_free_ops(struct pg_run *r)
{
    for (int i = 0; i < r->nparams; i++)
        free(r->params[i]);
    free(r->params);
    for (int i = 0; i < r->nops; i++)
        free(r->values[i]);
    free(r->values);
    free(r->stmts);
    free(r->expect);
    free(r->op_index);
    cJSON_Delete(r->ops);
    r->params = NULL;
    r->values = NULL;
    r->stmts = NULL;
    r->expect = NULL;
    r->op_index = NULL;
    r->ops = NULL;
    r->nparams = r->nops = r->nstmts = 0;
}

static void run_free(struct pg_run *r)
{
    list_remove(&r->link);
    ev_defer_cancel(r->rm->loop, &r->deliver);
    ev_timer_stop(r->rm->loop, &r->wait_timer);
    run_free_ops(r);
    buf_release(&r->results);
    buf_release(&r->result.results);
    free(r);
}

static void on_run_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_run *r = d->data;
    struct rm_result res = r->result;
    bool open = res.outcome == RM_ACTIVE; /* the session lives on for the next call */

    (void)loop;
    buf_init(&r->result.results);
    r->done(r->arg, &res);
    if (!open)
        run_free(r);
}

/* Ends the run with an outcome; the agent hears of it at the end of this iteration. */
static void run_finish(struct pg_run *r, enum rm_outcome outcome)
{
    r->result.outcome = outcome;
    r->result.xid = r->xid;
    snprintf(r->result.db, sizeof(r->result.db), "%s", r->db);
    r->result.err = r->err;
    if (outcome == RM_PREPARED || outcome == RM_READONLY || outcome == RM_COMMITTED ||
        outcome == RM_ACTIVE) {
        r->result.results = r->results;
        buf_init(&r->results);
        r->result.err.code = 0;
    }
    ev_defer(r->rm->loop, &r->deliver);
}

static void run_fail(struct pg_run *r, int code, const char *msg)
{
    if (!r->err.code) {
        dtx_err_set(&r->err, code, "%s", msg);
        snprintf(r->err.shard, sizeof(r->err.shard), "%s", r->rm->shard);
    }
    run_finish(r, RM_ROLLED_BACK);
}

/*
 * Op k's result went over max_result_bytes or max_result_rows: the branch
 * fails with DTX_ERESULT, and its statement is cancelled, so that
 * PostgreSQL stops sending what nobody will read.
 */
static void result_too_large(struct pg_run *r, int k)
{
    struct pg_rm *rm = r->rm;

    pgval_rows_drop(&r->rows, &r->results);
    if (!r->err.code) {
        dtx_err_set(&r->err, DTX_ERESULT,
                    "op %d's result is over the limit of shard '%s' (max_result_bytes %" PRIu64
                    ", max_result_rows %" PRIu64 " for a branch's results): the transaction is "
                    "aborted; select fewer rows, or page through them",
                    r->op_index[k], rm->shard, rm->max_result_bytes, rm->max_result_rows);
        snprintf(r->err.shard, sizeof(r->err.shard), "%s", rm->shard);
        r->err.op = r->op_index[k];
    }
    if (!r->cancelled) {
        r->cancelled = true;
        pgx_cancel(rm->pool, &r->job);
    }
}

static bool over_limits(const struct pg_run *r)
{
    return r->results.len > r->rm->max_result_bytes || r->nrows > r->rm->max_result_rows;
}

/* A lower bound of the JSON text of res's first row: each value's text, never shorter encoded. */
static size_t row_text_bytes(const PGresult *res)
{
    size_t n = 0;

    for (int c = 0; c < PQnfields(res); c++)
        n += (size_t)PQgetlength(res, 0, c);
    return n;
}

static void op_result(struct pg_run *r, int k, const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    int64_t affected;
    size_t start;

    if (st == PGRES_SINGLE_TUPLE) { /* one row of many: the statement goes on */
        if (r->err.code)
            return; /* the branch has failed already: its results are not sent */
        if (r->results.len + row_text_bytes(res) > r->rm->max_result_bytes) {
            result_too_large(r, k); /* before it is encoded: 6 times its size as \u0001s */
            return;
        }
        pgval_rows_add(&r->rows, res, &r->results);
        r->nrows++;
        if (over_limits(r))
            result_too_large(r, k);
        return;
    }
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        pgval_rows_drop(&r->rows, &r->results);
        if (st != PGRES_PIPELINE_ABORTED)
            note_pg_error(r, res, r->op_index[k]);
        buf_puts(&r->results, "\nnull");
        return;
    }
    if (r->err.code) {
        pgval_rows_drop(&r->rows, &r->results);
        buf_puts(&r->results, "\nnull");
        return;
    }
    start = r->rows.begun ? r->rows.start : r->results.len;
    r->nrows += (uint64_t)PQntuples(res);
    pgval_rows_end(&r->rows, res, &affected, &r->results);
    if (over_limits(r)) {
        buf_truncate(&r->results, start);
        buf_puts(&r->results, "\nnull");
        result_too_large(r, k);
        return;
    }
    if (r->expect[k] >= 0 && affected != r->expect[k] && !r->err.code) {
        dtx_err_set(&r->err, DTX_EROWS, "op %d affected %" PRId64 " rows; expected %" PRId64,
                    r->op_index[k], affected, r->expect[k]);
        snprintf(r->err.shard, sizeof(r->err.shard), "%s", r->rm->shard);
        r->err.op = r->op_index[k];
    }
}

static void end_result(struct pg_run *r, const PGresult *res)
{
    const char *tag = PQcmdStatus((PGresult *)res);
    const char *want =
        strncmp(r->end_stmt.sql, "PREPARE", 7) == 0 ? "PREPARE TRANSACTION" : "COMMIT";

    if (PQresultStatus(res) == PGRES_COMMAND_OK && strcmp(tag, want) == 0) {
        r->end_ok = true;
    } else if (PQresultStatus(res) == PGRES_COMMAND_OK) {
        if (!r->err.code)
            dtx_err_set(&r->err, DTX_EVOTENO,
                        "%s answered '%s': the transaction had failed and was rolled back", want,
                        tag);
    } else if (PQresultStatus(res) != PGRES_PIPELINE_ABORTED) {
        note_pg_error(r, res, -1);
    }
}

static void run_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_run *r = job->data;

    if (r->stage == RS_END) {
        if (strcmp(r->end_stmt.sql, "ROLLBACK") != 0)
            end_result(r, res);
    } else if (idx < r->first_op) { /* BEGIN, a 3PC branch's dtx.branch_begin */
        if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
            note_pg_error(r, res, -1);
    } else if (idx < r->first_op + r->nops) {
        op_result(r, idx - r->first_op, res);
    } else if (idx == r->first_op + r->nops) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            r->have_xid = true;
            r->xid_null = PQgetisnull(res, 0, 0);
            r->xid = r->xid_null ? 0 : strtoull(PQgetvalue(res, 0, 0), NULL, 10);
            /* the identity, as the connection read it ("": not known, never compared) */
            snprintf(r->db, sizeof(r->db), "%s", pgx_conn_value(job->conn));
        }
    } else {
        end_result(r, res);
    }
    PQclear(res);
}

/* Continuation of run_finish once an internal finish (of the prepared branch) is done. */
static void after_cleanup(void *arg, enum rm_outcome outcome, const struct dtx_err *err)
{
    struct pg_run *r = arg;

    (void)err;
    if (r->result.outcome == RM_READONLY && outcome != RM_COMMITTED)
        log_warn("read-only branch %s: its empty prepared transaction was not committed", r->gid);
    run_finish(r, r->result.outcome);
}

/* The branch is prepared but must not stay so: finish it, then report outcome. */
static void finish_prepared_then(struct pg_run *r, bool commit, enum rm_outcome outcome)
{
    r->result.outcome = outcome;
    rm_pg_finish_start(r->rm, r->gid, r->xid, r->db, commit, after_cleanup, r);
}

#define CONN_LOST_OPEN                                                                             \
    "the connection to PostgreSQL broke while the transaction was open between calls, and "        \
    "PostgreSQL rolled it back"

static void run_send_end(struct pg_run *r, const char *sql)
{
    snprintf(r->end_sql, sizeof(r->end_sql), "%s", sql);
    r->end_stmt = (struct pgx_stmt){r->end_sql, 0, NULL, true};
    r->stage = RS_END;
    r->job.stmts = &r->end_stmt;
    r->job.nstmts = 1;
    r->job.rows_count = 0;
    r->job.hold = false;
    r->job.ends_xact = true; /* PREPARE TRANSACTION, COMMIT or ROLLBACK */
    if (pgx_submit_on(r->job.conn, r->job.conn_gen, &r->job) < 0) {
        run_fail(r, DTX_EUNAVAIL, CONN_LOST_OPEN);
        return;
    }
    r->end_sent = strcmp(sql, "ROLLBACK") != 0;
}

/* Ends the branch's open transaction: COMMIT for one phase or when it wrote nothing, else PREPARE.
 */
static void send_ending(struct pg_run *r)
{
    char sql[DTX_GID_MAX + 32];

    if (r->one_phase || r->xid_null) {
        run_send_end(r, "COMMIT");
        return;
    }
    snprintf(sql, sizeof(sql), "PREPARE TRANSACTION '%s'", r->gid);
    run_send_end(r, sql);
}

/* The first round trip of a split branch came back; the connection is held. */
static void split_continue(struct pg_run *r)
{
    if (r->err.code || r->cancelled || !r->have_xid) {
        if (!r->err.code)
            dtx_err_set(&r->err, DTX_EABORTED, "the branch was cancelled");
        run_send_end(r, "ROLLBACK");
        return;
    }
    if (r->interactive) {
        r->began = true;
        run_finish(r, RM_ACTIVE); /* open until the next exec or end */
        return;
    }
    send_ending(r);
}

static void run_complete(struct pg_run *r)
{
    bool preparing = !r->one_phase;

    if (r->stage == RS_MAIN && r->split) {
        split_continue(r);
        return;
    }
    if (!r->end_ok) {
        if (!r->err.code)
            dtx_err_set(&r->err, DTX_EVOTENO, "the branch did not %s",
                        preparing ? "prepare" : "commit");
        run_finish(r, RM_ROLLED_BACK);
    } else if (!preparing) {
        run_finish(r, r->xid_null ? RM_READONLY : RM_COMMITTED);
    } else if (strcmp(r->end_sql, "COMMIT") == 0) {
        run_finish(r, RM_READONLY); /* split read-only branch: committed without PREPARE */
    } else if (r->err.code) {
        finish_prepared_then(r, false, RM_ROLLED_BACK); /* expect_rows mismatch */
    } else if (r->xid_null) {
        finish_prepared_then(r, true, RM_READONLY);
    } else {
        run_finish(r, RM_PREPARED);
    }
}

static void on_status_known(void *arg, enum rm_outcome outcome, const struct dtx_err *err)
{
    struct pg_run *r = arg;

    if (outcome == RM_UNKNOWN) {
        char lost[sizeof(r->err.msg)];

        snprintf(lost, sizeof(lost), "%s", r->err.msg);
        dtx_err_set(&r->err, DTX_EUNKNOWN, "%s; the commit's outcome cannot be determined: %s",
                    lost, err ? err->msg : "");
        run_finish(r, RM_UNKNOWN);
        return;
    }
    run_finish(r, outcome == RM_COMMITTED ? RM_COMMITTED : RM_ROLLED_BACK);
}

/* The connection broke during the branch. */
static void run_lost(struct pg_run *r, int answered, const char *why)
{
    int end_idx = r->stage == RS_END ? 0 : r->first_op + r->nops + 1;
    bool end_unanswered = r->end_sent && answered <= end_idx;
    char msg[300];

    if (r->end_sent && r->end_ok) {
        /* PREPARE / COMMIT answered with its tag; only the Sync after it was lost. */
        run_complete(r);
        return;
    }
    snprintf(msg, sizeof(msg), "lost the connection to PostgreSQL: %.200s", why ? why : "");
    if (end_unanswered && !r->one_phase && strcmp(r->end_sql, "COMMIT") != 0) {
        /* PREPARE may have run: roll it back in the background, vote no now. */
        rm_pg_finish_start(r->rm, r->gid, 0, NULL, false, NULL, NULL);
        run_fail(r, DTX_EUNAVAIL, msg);
    } else if (end_unanswered && r->have_xid && !r->xid_null) {
        dtx_err_set(&r->err, DTX_EUNAVAIL, "%s", msg);
        rm_pg_status_start(r->rm, r->xid, r->db, on_status_known, r); /* did COMMIT happen? */
    } else if (end_unanswered) {
        dtx_err_set(&r->err, DTX_EUNKNOWN, "%s; the commit's outcome cannot be determined", msg);
        run_finish(r, RM_UNKNOWN);
    } else {
        run_fail(r, DTX_EUNAVAIL, msg);
    }
}

static void run_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_run *r = job->data;

    ev_timer_stop(r->rm->loop, &r->wait_timer);
    if (rc == DTX_EABORTED) /* keeps an error already set: no connection within wait_ms */
        run_fail(r, DTX_EABORTED, "the branch was cancelled before it started");
    else if (rc < 0)
        run_lost(r, answered, why);
    else
        run_complete(r);
}

/* Converts one op's params to text; returns the number of values. */
static int op_params(struct pg_run *r, const cJSON *params, int k)
{
    int n = cJSON_GetArraySize(params);
    const cJSON *p;
    int i = 0;

    r->values[k] = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    cJSON_ArrayForEach(p, params)
    {
        char *v = jsonx_to_param(p);

        r->values[k][i++] = v;
        if (v)
            r->params[r->nparams++] = v;
    }
    return n;
}

/* Validates and lays out the branch's statements; 0 or DTX_EINVAL with r->err set. */
static int run_build(struct pg_run *r)
{
    const cJSON *op;
    bool all_reads = true;
    int total = 0, k = 0;
    char shard[DTX_NAME_MAX + 1];

    cJSON_ArrayForEach(op, r->ops)
    {
        total += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(op, "params"));
    }
    r->nops = cJSON_GetArraySize(r->ops);
    r->first_op = r->began ? 0 : r->three_pc ? 2 : 1;
    r->nrows = 0; /* the limits hold for each call's results */
    r->rows = (struct pgval_rows){0, 0, false};
    r->stmts = xcalloc((size_t)r->nops + 4, sizeof(*r->stmts)); /* BEGIN, 3PC row, xid, end */
    r->values = xcalloc((size_t)r->nops + 1, sizeof(*r->values));
    r->params = xcalloc((size_t)total + 1, sizeof(*r->params));
    r->expect = xcalloc((size_t)r->nops + 1, sizeof(*r->expect));
    r->op_index = xcalloc((size_t)r->nops + 1, sizeof(*r->op_index));
    /* BEGIN and a 3PC branch's row: overwritten by the ops when began */
    r->stmts[0] = (struct pgx_stmt){"BEGIN", 0, NULL, false};
    if (r->first_op == 2) {
        gid_parse(r->gid, r->gtid, shard);
        r->gtid_value[0] = r->gtid;
        r->stmts[1] = (struct pgx_stmt){"SELECT dtx.branch_begin($1)", 1, r->gtid_value, false};
    }
    cJSON_ArrayForEach(op, r->ops)
    {
        const cJSON *sql = cJSON_GetObjectItemCaseSensitive(op, "sql");
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(op, "i");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(op, "expect_rows");
        bool reads = false;

        /* an index an int cannot hold is none (converting it would be undefined) */
        r->op_index[k] = jsonx_is_safe_int(i) && i->valuedouble >= 0 && i->valuedouble <= INT_MAX
                             ? (int)i->valuedouble
                             : k;
        r->expect[k] = jsonx_is_safe_int(e) ? (int64_t)e->valuedouble : -1;
        if (!cJSON_IsString(sql) || sqlcheck(sql->valuestring, &reads, &r->err) < 0) {
            if (!r->err.code)
                dtx_err_set(&r->err, DTX_EINVAL, "op %d has no sql", r->op_index[k]);
            r->err.op = r->op_index[k];
            return DTX_EINVAL;
        }
        all_reads = all_reads && reads;
        r->stmts[r->first_op + k].sql = sql->valuestring;
        r->stmts[r->first_op + k].nparams =
            op_params(r, cJSON_GetObjectItemCaseSensitive(op, "params"), k);
        r->stmts[r->first_op + k].values = r->values[k];
        k++;
    }
    if (r->one_phase || all_reads || r->interactive)
        r->split = true;
    r->stmts[r->first_op + r->nops] =
        (struct pgx_stmt){"SELECT pg_current_xact_id_if_assigned()", 0, NULL, r->split};
    r->nstmts = r->first_op + r->nops + 1;
    if (!r->split) {
        if (r->one_phase)
            snprintf(r->end_sql, sizeof(r->end_sql), "COMMIT");
        else
            snprintf(r->end_sql, sizeof(r->end_sql), "PREPARE TRANSACTION '%s'", r->gid);
        r->end_stmt = (struct pgx_stmt){r->end_sql, 0, NULL, true};
        r->stmts[r->nstmts++] = r->end_stmt;
        r->end_sent = true;
    }
    return 0;
}

static void on_wait_timeout(struct ev_loop *loop, struct ev_timer *t);

/* A run of branch gid, on rm->runs until delivered (or, interactive, until it ends). */
static struct pg_run *run_new(struct pg_rm *rm, const char *gid)
{
    struct pg_run *r = xcalloc(1, sizeof(*r));
    r->base.rm = &rm->base;
    r->rm = rm;
    snprintf(r->gid, sizeof(r->gid), "%s", gid);
    buf_init(&r->results);
    dtx_err_clear(&r->err);
    ev_defer_init(&r->deliver, on_run_deliver, r);
    ev_timer_init(&r->wait_timer, on_wait_timeout, r);
    list_insert_tail(&rm->runs, &r->link);
    return r;
}

/* The job for r's statements (built by run_build). */
static void run_job(struct pg_run *r, bool hold)
{
    r->job = (struct pgx_job){.stmts = r->stmts,
                              .nstmts = r->nstmts,
                              .phase2 = false,
                              .hold = hold,
                              .untrusted = true,  /* a client's SQL: reset the session after */
                              .ends_xact = !hold, /* with its PREPARE TRANSACTION or COMMIT */
                              .rows_first = r->first_op, /* the ops, read row by row */
                              .rows_count = r->nops,
                              .on_result = run_result,
                              .on_done = run_done,
                              .data = r};
}

struct rm_run *rm_pg_run(struct rm *base, const char *gid, cJSON *ops, bool one_phase,
                         bool three_pc, rm_run_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = run_new(rm, gid);

    r->ops = ops;
    r->one_phase = one_phase;
    r->three_pc = three_pc;
    r->done = done;
    r->arg = arg;
    if (!cJSON_IsArray(ops) || run_build(r) < 0) {
        run_fail(r, DTX_EINVAL, "the branch's ops are malformed");
        return &r->base;
    }
    run_job(r, r->split);
    pgx_submit(rm->pool, &r->job);
    return &r->base;
}

/* ---- interactive branches ------------------------------------------------------- */

static void on_wait_timeout(struct ev_loop *loop, struct ev_timer *t)
{
    struct pg_run *r = t->data;

    (void)loop;
    if (r->job.sent)
        return; /* it got a connection just in time */
    dtx_err_set(&r->err, DTX_EBUSY,
                "shard '%s': no PostgreSQL connection was free within %u ms (every one is held "
                "by an open transaction); try again shortly",
                r->rm->shard, r->wait_ms);
    snprintf(r->err.shard, sizeof(r->err.shard), "%s", r->rm->shard);
    pgx_cancel(r->rm->pool, &r->job);
}

struct rm_run *rm_pg_exec(struct rm *base, struct rm_run *session, const char *gid, bool three_pc,
                          cJSON *ops, uint32_t wait_ms, rm_run_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = (struct pg_run *)session;
    struct pgx_conn *conn;
    uint64_t gen;

    if (!r) {
        r = run_new(rm, gid);
        r->interactive = true;
        r->three_pc = three_pc;
    }
    run_free_ops(r);
    r->ops = ops;
    r->done = done;
    r->arg = arg;
    r->cancelled = false;
    r->have_xid = false;
    r->stage = RS_MAIN;
    dtx_err_clear(&r->err);
    if (!cJSON_IsArray(ops) || run_build(r) < 0) {
        if (r->began) {
            run_send_end(r, "ROLLBACK");
            return &r->base;
        }
        run_fail(r, DTX_EINVAL, "the branch's ops are malformed");
        return &r->base;
    }
    conn = r->began ? r->job.conn : NULL;
    gen = r->job.conn_gen;
    run_job(r, true);
    if (conn) {
        if (pgx_submit_on(conn, gen, &r->job) < 0)
            run_fail(r, DTX_EUNAVAIL, CONN_LOST_OPEN);
    } else {
        r->wait_ms = wait_ms;
        pgx_submit(rm->pool, &r->job);
        if (wait_ms && !r->job.sent)
            ev_timer_start(rm->loop, &r->wait_timer, wait_ms);
    }
    return &r->base;
}

void rm_pg_end(struct rm *base, struct rm_run *session, enum rm_end how, rm_run_fn done, void *arg)
{
    struct pg_run *r = (struct pg_run *)session;

    (void)base;
    r->done = done;
    r->arg = arg;
    run_free_ops(r);
    dtx_err_clear(&r->err);
    if (how == RM_END_ROLLBACK) {
        dtx_err_set(&r->err, DTX_EABORTED, "rolled back as asked");
        run_send_end(r, "ROLLBACK");
    } else {
        r->one_phase = how == RM_END_COMMIT;
        send_ending(r);
    }
}

void rm_pg_cancel(struct rm *base, struct rm_run *run, bool deadline)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = (struct pg_run *)run;

    if (r->cancelled || r->deliver.queued)
        return;
    r->cancelled = true;
    if (deadline && !r->err.code) {
        dtx_err_set(&r->err, DTX_ETIMEDOUT,
                    "shard '%s': the branch was still running at its transaction's deadline "
                    "(timeout_ms) and was cancelled",
                    rm->shard);
        snprintf(r->err.shard, sizeof(r->err.shard), "%s", rm->shard);
    }
    pgx_cancel(rm->pool, &r->job);
}

void rm_pg_runs_free(struct pg_rm *rm)
{
    while (!list_empty(&rm->runs))
        run_free(container_of(rm->runs.next, struct pg_run, link));
}
