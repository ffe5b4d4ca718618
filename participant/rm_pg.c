/*
 * rm_pg.c - the PostgreSQL resource manager.
 *
 * A branch is one pipeline on one pooled connection (one round trip):
 *
 *   BEGIN; <ops with bind parameters>; SELECT pg_current_xact_id_if_assigned();
 *   PREPARE TRANSACTION '<gid>'                          (or COMMIT for one phase)
 *
 * What PostgreSQL really did is read from each result, never assumed:
 *   - PREPARE TRANSACTION inside a failed transaction answers with the
 *     command tag ROLLBACK: that is a "no" vote;
 *   - a branch whose transaction id was never assigned wrote nothing: it
 *     is read-only, and its (empty) prepared transaction is committed at
 *     once, so it takes no part in phase 2;
 *   - expect_rows is checked as results arrive; a mismatch after the
 *     PREPARE ran rolls the prepared branch back before the no vote.
 * Two variants cost one more round trip: a branch whose ops all start with
 * SELECT/VALUES/TABLE/SHOW runs its ops first and then prepares only if it
 * wrote something (read-only branches then commit without PREPARE), and a
 * one-phase branch with expect_rows checks the counts before COMMIT.
 *
 * The branch's xid (pg_current_xact_id_if_assigned) goes into the yes vote
 * and the coordinator's COMMIT record. With it, pg_xact_status() tells
 * what became of a branch that is no longer prepared (committed, rolled
 * back), after any crash, without writing anything extra in the branch.
 *
 * Finishing a prepared branch (COMMIT/ROLLBACK PREPARED) is retried with
 * backoff until the outcome is known: a lost connection is "unknown, ask
 * again", never "failed"; SQLSTATE 42704 (no such prepared transaction)
 * is resolved through pg_xact_status(xid).
 *
 * Thread model: the participant's event-loop thread. Callbacks to the
 * agent are delivered from a deferred callback, never from inside the
 * call that started or cancelled the operation.
 */
#include "dtx/rm.h"
#include "dtx/failpoint.h"
#include "dtx/gid.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/pgx.h"
#include "dtx/sqlcheck.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The files in sql/, embedded at build time (build/<variant>/gen/schema_sql.c). */
extern const char rm_pg_schema_sql[];

#define SCHEMA_VERSION        1
#define FINISH_BACKOFF_MIN_MS 100
#define FINISH_BACKOFF_MAX_MS 5000

enum pg_oid {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_JSONB = 3802,
};

struct pg_rm {
    struct rm base;
    struct ev_loop *loop;
    struct pgx_pool *pool;
    char shard[DTX_NAME_MAX + 1];
    struct list_node runs;     /* every pg_run not yet delivered */
    struct list_node finishes; /* every pg_finish not yet delivered */
    struct list_node statuses; /* every pg_status not yet delivered */
    struct list_node lists;    /* every pg_list not yet delivered */
};

enum run_stage { RS_MAIN, RS_END };

struct pg_run {
    struct rm_run base;
    struct list_node link; /* on rm->runs */
    struct pg_rm *rm;
    char gid[DTX_GID_MAX + 1];
    cJSON *ops;
    bool one_phase;
    bool split; /* ops first, then the ending in a second round trip */
    /*
     * Interactive: a session whose transaction stays open between calls
     * (rm exec/end). Its ops start at statement first_op: 1 when this call
     * sends the BEGIN, 0 for later calls into the open transaction.
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
    struct buf results; /* "\n" + JSON text per op */
    struct dtx_err err;
    bool have_xid, xid_null;
    uint64_t xid;
    bool end_ok;   /* PREPARE / COMMIT answered with its own tag */
    bool end_sent; /* the ending statement was sent */
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

enum finish_stage { FS_MAIN, FS_CHECK };

struct pg_finish {
    struct list_node link; /* on rm->finishes */
    struct pg_rm *rm;
    char gid[DTX_GID_MAX + 1];
    uint64_t xid;
    bool commit;
    enum finish_stage stage;
    struct pgx_stmt stmt;
    char sql[DTX_GID_MAX + 32];
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

static void pg_finish_start(struct pg_rm *rm, const char *gid, uint64_t xid, bool commit,
                            rm_finish_fn done, void *arg);
static void pg_status_start(struct pg_rm *rm, uint64_t xid, rm_finish_fn done, void *arg);

/* ---- results as JSON ------------------------------------------------------ */

/* True when an int8's text is within +-(2^53 - 1), where JSON readers keep integers exact. */
static bool int8_is_safe(const char *v)
{
    long long n;
    char *end;

    errno = 0;
    n = strtoll(v, &end, 10);
    return errno == 0 && *end == '\0' && n < 9007199254740992LL && n > -9007199254740992LL;
}

/*
 * One value as JSON. Numbers are emitted as PostgreSQL's own text (cJSON
 * raw items), never through a double, which would round them; an int8
 * beyond 2^53, numeric, NaN and infinities become strings.
 */
static cJSON *value_json(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    char *end;
    double d;

    if (PQgetisnull(res, row, col))
        return cJSON_CreateNull();
    switch ((enum pg_oid)PQftype(res, col)) {
    case OID_BOOL:
        return cJSON_CreateBool(v[0] == 't');
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
        return cJSON_CreateRaw(v);
    case OID_INT8:
        return int8_is_safe(v) ? cJSON_CreateRaw(v) : cJSON_CreateString(v);
    case OID_FLOAT4:
    case OID_FLOAT8:
        d = strtod(v, &end);
        return *end == '\0' && isfinite(d) ? cJSON_CreateRaw(v) : cJSON_CreateString(v);
    case OID_JSON:
    case OID_JSONB: {
        cJSON *j = cJSON_Parse(v);

        return j ? j : cJSON_CreateString(v);
    }
    }
    return cJSON_CreateString(v);
}

/* Appends "\n" and {"rows_affected":n,"columns":[...],"rows":[[...],...]} for one statement. */
static void result_json(const PGresult *res, int64_t *affected, struct buf *out)
{
    cJSON *r = jsonx_new_object();
    cJSON *cols = jsonx_new_array();
    cJSON *rows = jsonx_new_array();
    const char *n = PQcmdTuples((PGresult *)res);
    int nf = PQnfields(res), nt = PQntuples(res);
    char *text;

    *affected = *n ? strtoll(n, NULL, 10) : nt;
    jsonx_add(r, "rows_affected", cJSON_CreateRaw(*n ? n : "0"));
    for (int c = 0; c < nf; c++)
        jsonx_append(cols, cJSON_CreateString(PQfname(res, c)));
    for (int t = 0; t < nt; t++) {
        cJSON *row = jsonx_new_array();

        for (int c = 0; c < nf; c++)
            jsonx_append(row, value_json(res, t, c));
        jsonx_append(rows, row);
    }
    jsonx_add(r, "columns", cols);
    jsonx_add(r, "rows", rows);
    text = jsonx_print(r);
    buf_putc(out, '\n');
    buf_puts(out, text);
    free(text);
    cJSON_Delete(r);
}

/* Records PostgreSQL's error for op (-1: not an op), unless an error is already recorded. */
static void note_pg_error(struct pg_run *r, const PGresult *res, int op)
{
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
    int code = DTX_ESQL;

    if (r->err.code)
        return;
    if (state && strcmp(state, "57014") == 0)
        code = r->cancelled ? DTX_EABORTED : DTX_ETIMEDOUT;
    dtx_err_set(&r->err, code, "%s", primary ? primary : PQresultErrorMessage(res));
    snprintf(r->err.sqlstate, sizeof(r->err.sqlstate), "%s", state ? state : "");
    snprintf(r->err.shard, sizeof(r->err.shard), "%s", r->rm->shard);
    r->err.op = op;
}

/* ---- running a branch --------------------------------------------------------- */

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

static void op_result(struct pg_run *r, int k, const PGresult *res)
{
    ExecStatusType st = PQresultStatus(res);
    int64_t affected;

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        if (st != PGRES_PIPELINE_ABORTED)
            note_pg_error(r, res, r->op_index[k]);
        buf_puts(&r->results, "\nnull");
        return;
    }
    result_json(res, &affected, &r->results);
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
    } else if (idx < r->first_op) {
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            note_pg_error(r, res, -1);
    } else if (idx < r->first_op + r->nops) {
        op_result(r, idx - r->first_op, res);
    } else if (idx == r->first_op + r->nops) {
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
            r->have_xid = true;
            r->xid_null = PQgetisnull(res, 0, 0);
            r->xid = r->xid_null ? 0 : strtoull(PQgetvalue(res, 0, 0), NULL, 10);
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
    pg_finish_start(r->rm, r->gid, r->xid, commit, after_cleanup, r);
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
    r->job.hold = false;
    r->job.timeout_ms = 0;
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

    (void)err;
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
        pg_finish_start(r->rm, r->gid, 0, false, NULL, NULL);
        run_fail(r, DTX_EUNAVAIL, msg);
    } else if (end_unanswered && r->have_xid && !r->xid_null) {
        dtx_err_set(&r->err, DTX_EUNAVAIL, "%s", msg);
        pg_status_start(r->rm, r->xid, on_status_known, r); /* did the COMMIT happen? */
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

    r->values[k] = calloc((size_t)(n ? n : 1), sizeof(char *));
    if (!r->values[k])
        abort();
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

    cJSON_ArrayForEach(op, r->ops)
    {
        total += cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(op, "params"));
    }
    r->nops = cJSON_GetArraySize(r->ops);
    r->first_op = r->began ? 0 : 1;
    r->stmts = calloc((size_t)r->nops + 3, sizeof(*r->stmts));
    r->values = calloc((size_t)r->nops + 1, sizeof(*r->values));
    r->params = calloc((size_t)total + 1, sizeof(*r->params));
    r->expect = calloc((size_t)r->nops + 1, sizeof(*r->expect));
    r->op_index = calloc((size_t)r->nops + 1, sizeof(*r->op_index));
    if (!r->stmts || !r->values || !r->params || !r->expect || !r->op_index)
        abort();
    r->stmts[0] = (struct pgx_stmt){"BEGIN", 0, NULL, false}; /* overwritten when began */
    cJSON_ArrayForEach(op, r->ops)
    {
        const cJSON *sql = cJSON_GetObjectItemCaseSensitive(op, "sql");
        const cJSON *i = cJSON_GetObjectItemCaseSensitive(op, "i");
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(op, "expect_rows");
        bool reads = false;

        r->op_index[k] = jsonx_is_safe_int(i) ? (int)i->valuedouble : k;
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
        if (r->one_phase && r->expect[k] >= 0)
            r->split = true;
        k++;
    }
    if ((!r->one_phase && all_reads) || r->interactive)
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
    struct pg_run *r = calloc(1, sizeof(*r));

    if (!r)
        abort();
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
static void run_job(struct pg_run *r, bool hold, uint32_t timeout_ms)
{
    r->job = (struct pgx_job){.stmts = r->stmts,
                              .nstmts = r->nstmts,
                              .phase2 = false,
                              .hold = hold,
                              .timeout_ms = timeout_ms,
                              .on_result = run_result,
                              .on_done = run_done,
                              .data = r};
}

static struct rm_run *pg_run(struct rm *base, const char *gid, cJSON *ops, bool one_phase,
                             uint32_t timeout_ms, rm_run_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = run_new(rm, gid);

    r->ops = ops;
    r->one_phase = one_phase;
    r->done = done;
    r->arg = arg;
    if (!cJSON_IsArray(ops) || run_build(r) < 0) {
        run_fail(r, DTX_EINVAL, "the branch's ops are malformed");
        return &r->base;
    }
    run_job(r, r->split, timeout_ms);
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

static struct rm_run *pg_exec(struct rm *base, struct rm_run *session, const char *gid, cJSON *ops,
                              uint32_t timeout_ms, uint32_t wait_ms, rm_run_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = (struct pg_run *)session;
    struct pgx_conn *conn;
    uint64_t gen;

    if (!r) {
        r = run_new(rm, gid);
        r->interactive = true;
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
    run_job(r, true, timeout_ms);
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

static void pg_end(struct rm *base, struct rm_run *session, enum rm_end how, rm_run_fn done,
                   void *arg)
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

static void pg_cancel(struct rm *base, struct rm_run *run)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_run *r = (struct pg_run *)run;

    if (r->cancelled || r->deliver.queued)
        return;
    r->cancelled = true;
    pgx_cancel(rm->pool, &r->job);
}

/* ---- finishing a prepared branch ------------------------------------------------ */

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
    if (outcome != want && !f->check_only) {
        dtx_err_set(&f->err, DTX_ESTATE,
                    "heuristic outcome: prepared transaction '%s' was %s, but %s was asked", f->gid,
                    outcome == RM_COMMITTED ? "committed" : "rolled back",
                    f->commit ? "commit" : "rollback");
        log_error("%s", f->err.msg);
    }
}

static void finish_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_finish *f = job->data;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    ExecStatusType st = PQresultStatus(res);

    (void)idx;
    if (f->stage == FS_MAIN && st == PGRES_COMMAND_OK && f->commit &&
        fp_hit("pg.lose_commit_answer")) {
        f->retry = true; /* as if the connection broke before the answer arrived */
    } else if (f->stage == FS_MAIN && st == PGRES_COMMAND_OK) {
        finish_known(f, f->commit ? RM_COMMITTED : RM_ROLLED_BACK);
    } else if (f->stage == FS_MAIN && state && strcmp(state, "42704") == 0) {
        if (f->xid)
            f->stage = FS_CHECK; /* gone: ask what became of its xid */
        else
            finish_known(f, f->commit ? RM_COMMITTED : RM_ROLLED_BACK);
    } else if (f->stage == FS_CHECK && st == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        const char *s = PQgetisnull(res, 0, 0) ? "" : PQgetvalue(res, 0, 0);

        if (strcmp(s, "committed") == 0)
            finish_known(f, RM_COMMITTED);
        else if (strcmp(s, "aborted") == 0)
            finish_known(f, RM_ROLLED_BACK);
        else if (*s == '\0')
            finish_known(f, f->commit ? RM_COMMITTED : RM_ROLLED_BACK); /* too old to tell */
        else
            f->retry = true; /* in progress: ask again */
    } else if (f->stage == FS_CHECK && state && strcmp(state, "22023") == 0) {
        /*
         * "transaction ID is in the future": PostgreSQL crashed and lost the
         * WAL that assigned this xid, so no commit of it can be durable.
         */
        log_warn("'%s': PostgreSQL no longer knows xid %" PRIu64 " (lost in a crash): it never "
                 "committed",
                 f->gid, f->xid);
        finish_known(f, RM_ROLLED_BACK);
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
    f->attempts++;
    if (f->stage == FS_MAIN) {
        snprintf(f->sql, sizeof(f->sql), "%s PREPARED '%s'", f->commit ? "COMMIT" : "ROLLBACK",
                 f->gid);
        f->stmt = (struct pgx_stmt){f->sql, 0, NULL, true};
    } else {
        snprintf(f->xidbuf, sizeof(f->xidbuf), "%" PRIu64, f->xid);
        f->values[0] = f->xidbuf;
        f->stmt = (struct pgx_stmt){"SELECT pg_xact_status($1::xid8)", 1, f->values, true};
    }
    f->job = (struct pgx_job){.stmts = &f->stmt,
                              .nstmts = 1,
                              .phase2 = true,
                              .on_result = finish_result,
                              .on_done = finish_done,
                              .data = f};
    pgx_submit(f->rm->pool, &f->job);
}

static struct pg_finish *finish_new(struct pg_rm *rm, const char *gid, uint64_t xid, bool commit,
                                    rm_finish_fn done, void *arg)
{
    struct pg_finish *f = calloc(1, sizeof(*f));

    if (!f)
        abort();
    f->rm = rm;
    snprintf(f->gid, sizeof(f->gid), "%s", gid);
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

static void pg_finish_start(struct pg_rm *rm, const char *gid, uint64_t xid, bool commit,
                            rm_finish_fn done, void *arg)
{
    finish_send(finish_new(rm, gid, xid, commit, done, arg));
}

/* Asks until it can tell whether transaction xid committed (for a lost one-phase COMMIT). */
static void pg_status_start(struct pg_rm *rm, uint64_t xid, rm_finish_fn done, void *arg)
{
    struct pg_finish *f = finish_new(rm, "", xid, true, done, arg);

    snprintf(f->gid, sizeof(f->gid), "xid %" PRIu64, xid);
    f->check_only = true;
    f->stage = FS_CHECK;
    finish_send(f);
}

static void pg_finish(struct rm *base, const char *gid, uint64_t xid, bool commit,
                      rm_finish_fn done, void *arg)
{
    pg_finish_start((struct pg_rm *)base, gid, xid, commit, done, arg);
}

/* ---- what became of a branch ---------------------------------------------------- */

struct pg_status {
    struct list_node link; /* on rm->statuses */
    struct pg_rm *rm;
    char gid[DTX_GID_MAX + 1];
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

static void pg_status(struct rm *base, const char *gid, uint64_t xid, rm_status_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_status *st = calloc(1, sizeof(*st));

    if (!st)
        abort();
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
    st->stmts[0] = (struct pgx_stmt){"SELECT transaction::text FROM pg_prepared_xacts "
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

/* ---- listing prepared branches ------------------------------------------------- */

/* One listing: for recovery (list_prepared) or, with locks and settings, for operators. */
struct pg_list {
    struct list_node link; /* on rm->lists */
    struct pg_rm *rm;
    struct pgx_stmt stmts[2];
    struct pgx_job job;
    struct rm_branch_info *items;
    size_t n;
    int64_t max_prepared, prepared_total;
    struct dtx_err err;
    struct ev_defer deliver;
    rm_list_fn listed;       /* list_prepared */
    rm_inspect_fn inspected; /* inspect */
    void *arg;
};

static void list_free(struct pg_list *l)
{
    list_remove(&l->link);
    ev_defer_cancel(l->rm->loop, &l->deliver);
    for (size_t i = 0; i < l->n; i++)
        free((char *)l->items[i].locks);
    free(l->items);
    free(l);
}

static void on_list_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_list *l = d->data;
    const struct dtx_err *err = l->err.code ? &l->err : NULL;

    (void)loop;
    if (l->inspected) {
        struct rm_inspection ins = {l->max_prepared, l->prepared_total, l->n, l->items};

        l->inspected(l->arg, l->err.code, &ins, err);
    } else {
        struct rm_prepared *p = calloc(l->n + 1, sizeof(*p));

        if (!p)
            abort();
        for (size_t i = 0; i < l->n; i++)
            p[i] = l->items[i].p;
        l->listed(l->arg, l->err.code, p, l->n, err);
        free(p);
    }
    list_free(l);
}

static void list_rows(struct pg_list *l, const PGresult *res)
{
    int rows = PQntuples(res);

    l->items = calloc((size_t)rows + 1, sizeof(*l->items));
    if (!l->items)
        abort();
    for (int i = 0; i < rows; i++) {
        struct rm_branch_info *b = &l->items[l->n];

        if (strlen(PQgetvalue(res, i, 0)) >= sizeof(b->p.gid))
            continue;
        snprintf(b->p.gid, sizeof(b->p.gid), "%s", PQgetvalue(res, i, 0));
        b->p.xid = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        b->p.age_ms = (uint32_t)strtoul(PQgetvalue(res, i, 2), NULL, 10);
        if (PQnfields(res) > 3 && !(b->locks = strdup(PQgetvalue(res, i, 3))))
            abort();
        l->n++;
    }
}

static void list_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_list *l = job->data;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (!l->err.code)
            dtx_err_set(&l->err, DTX_ESQL, "could not read pg_prepared_xacts: %s",
                        PQresultErrorMessage(res));
    } else if (idx == 0) {
        list_rows(l, res);
    } else if (PQntuples(res) == 1) {
        l->max_prepared = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
        l->prepared_total = strtoll(PQgetvalue(res, 0, 1), NULL, 10);
    }
    PQclear(res);
}

static void list_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_list *l = job->data;

    (void)answered;
    if (rc < 0 && !l->err.code)
        dtx_err_set(&l->err, DTX_EUNAVAIL, "could not ask PostgreSQL: %s", why ? why : "");
    ev_defer(l->rm->loop, &l->deliver);
}

/* This database only (one server may hold several shards), dtx gids only. */
#define LIST_SQL(extra)                                                                            \
    "SELECT gid, transaction::text, (extract(epoch FROM now() - prepared) * 1000)::bigint" extra   \
    " FROM pg_prepared_xacts p WHERE database = current_database() AND starts_with(gid, 'dtx:')"   \
    " ORDER BY prepared"

/*
 * A prepared transaction's locks stay with a dummy process (pid NULL) under
 * the virtual transaction that also holds the lock on its xid.
 */
#define LOCKS_SQL                                                                                  \
    ", coalesce((SELECT json_agg(json_build_object('locktype', l.locktype, 'relation', "           \
    "l.relation::regclass::text, 'mode', l.mode) ORDER BY l.relation, l.mode) FROM pg_locks l "    \
    "WHERE l.pid IS NULL AND l.locktype <> 'transactionid' AND l.virtualtransaction = "            \
    "(SELECT v.virtualtransaction FROM pg_locks v WHERE v.pid IS NULL AND v.locktype = "           \
    "'transactionid' AND v.transactionid = p.transaction LIMIT 1)), '[]')::text"

static void list_start(struct pg_rm *rm, rm_list_fn listed, rm_inspect_fn inspected, bool locks,
                       void *arg)
{
    struct pg_list *l = calloc(1, sizeof(*l));

    if (!l)
        abort();
    l->rm = rm;
    l->listed = listed;
    l->inspected = inspected;
    l->arg = arg;
    dtx_err_clear(&l->err);
    l->stmts[0] =
        (struct pgx_stmt){locks ? LIST_SQL(LOCKS_SQL) : LIST_SQL(""), 0, NULL, !inspected};
    l->stmts[1] = (struct pgx_stmt){"SELECT current_setting('max_prepared_transactions'), "
                                    "(SELECT count(*) FROM pg_prepared_xacts)",
                                    0, NULL, true};
    l->job = (struct pgx_job){.stmts = l->stmts,
                              .nstmts = inspected ? 2 : 1,
                              .phase2 = true,
                              .on_result = list_result,
                              .on_done = list_done,
                              .data = l};
    ev_defer_init(&l->deliver, on_list_deliver, l);
    list_insert_tail(&rm->lists, &l->link);
    pgx_submit(rm->pool, &l->job);
}

static void pg_list_prepared(struct rm *base, rm_list_fn done, void *arg)
{
    list_start((struct pg_rm *)base, done, NULL, false, arg);
}

static void pg_inspect(struct rm *base, bool locks, rm_inspect_fn done, void *arg)
{
    list_start((struct pg_rm *)base, NULL, done, locks, arg);
}

/* ---- health and lifecycle ------------------------------------------------------- */

static bool pg_healthy(const struct rm *base, char *why, size_t whysz)
{
    const struct pg_rm *rm = (const struct pg_rm *)base;

    if (pgx_pool_up(rm->pool) > 0)
        return true;
    snprintf(why, whysz, "no connection to PostgreSQL: %s",
             *pgx_pool_error(rm->pool) ? pgx_pool_error(rm->pool) : "connecting");
    return false;
}

/* Frees everything, including operations still in flight (their callbacks never come). */
static void pg_free(struct rm *base)
{
    struct pg_rm *rm = (struct pg_rm *)base;

    pgx_pool_free(rm->pool);
    while (!list_empty(&rm->runs))
        run_free(container_of(rm->runs.next, struct pg_run, link));
    while (!list_empty(&rm->finishes))
        finish_free(container_of(rm->finishes.next, struct pg_finish, link));
    while (!list_empty(&rm->statuses))
        status_free(container_of(rm->statuses.next, struct pg_status, link));
    while (!list_empty(&rm->lists))
        list_free(container_of(rm->lists.next, struct pg_list, link));
    free(rm);
}

static const struct rm_ops pg_ops = {
    .name = "postgresql",
    .run = pg_run,
    .cancel = pg_cancel,
    .exec = pg_exec,
    .end = pg_end,
    .finish = pg_finish,
    .status = pg_status,
    .list_prepared = pg_list_prepared,
    .inspect = pg_inspect,
    .healthy = pg_healthy,
    .free = pg_free,
};

/* ---- start-up checks (blocking: they run before the event loop) ------------------- */

static PGconn *setup_connect(const char *conninfo, unsigned wait_s, struct dtx_err *err)
{
    uint64_t until = ev_clock_us() + (uint64_t)wait_s * 1000000u;
    PGconn *c;

    for (;;) {
        c = PQconnectdb(conninfo);
        if (PQstatus(c) == CONNECTION_OK)
            return c;
        if (ev_clock_us() >= until)
            break;
        PQfinish(c);
        usleep(200000);
    }
    dtx_err_set(err, DTX_EUNAVAIL, "could not connect to PostgreSQL: %s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

static int setup_exec(PGconn *c, const char *sql, int nparams, const char *const *values,
                      PGresult **out, struct dtx_err *err)
{
    PGresult *res =
        nparams ? PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        dtx_err_set(err, DTX_EINVAL, "could not prepare the database: %s",
                    PQresultErrorMessage(res));
        PQclear(res);
        return DTX_EINVAL;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

static int setup_check(PGconn *c, const char *shard, struct dtx_err *err)
{
    const char *values[1] = {shard};
    PGresult *res = NULL;
    int rc;

    if (PQserverVersion(c) < 130000)
        return dtx_err_set(err, DTX_EINVAL,
                           "PostgreSQL %d is too old: dtx needs 13 or later (pg_xact_status)",
                           PQserverVersion(c));
    rc = setup_exec(c, "SELECT current_setting('max_prepared_transactions')::int", 0, NULL, &res,
                    err);
    if (rc < 0)
        return rc;
    if (atoi(PQgetvalue(res, 0, 0)) == 0) {
        PQclear(res);
        return dtx_err_set(err, DTX_EINVAL,
                           "PostgreSQL (database '%s') has max_prepared_transactions = 0, so it "
                           "cannot prepare transactions; set max_prepared_transactions (at least "
                           "max_connections) in postgresql.conf and restart PostgreSQL",
                           PQdb(c));
    }
    PQclear(res);
    rc = setup_exec(c, rm_pg_schema_sql, 0, NULL, NULL, err);
    if (rc == 0)
        rc = setup_exec(c, "INSERT INTO dtx.agent (shard) VALUES ($1) ON CONFLICT DO NOTHING", 1,
                        values, NULL, err);
    if (rc == 0)
        rc = setup_exec(c, "SELECT shard FROM dtx.agent", 0, NULL, &res, err);
    if (rc < 0)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 0), shard) != 0) {
        rc = dtx_err_set(err, DTX_EINVAL,
                         "database '%s' belongs to shard '%s' (table dtx.agent), not '%s': is "
                         "conninfo pointing at the wrong database?",
                         PQdb(c), PQgetvalue(res, 0, 0), shard);
    }
    PQclear(res);
    return rc;
}

int rm_pg_new(struct rm **out, struct ev_loop *loop, const char *conninfo, int pool_size,
              const char *shard, unsigned wait_s, struct dtx_err *err)
{
    struct pgx_opts po = {conninfo, pool_size, NULL, NULL};
    struct pg_rm *rm;
    PGconn *c;
    int rc;

    c = setup_connect(conninfo, wait_s, err);
    if (!c)
        return DTX_EUNAVAIL;
    rc = setup_check(c, shard, err);
    PQfinish(c);
    if (rc < 0)
        return rc;
    rm = calloc(1, sizeof(*rm));
    if (!rm)
        abort();
    rm->base.ops = &pg_ops;
    rm->loop = loop;
    list_init(&rm->runs);
    list_init(&rm->finishes);
    list_init(&rm->statuses);
    list_init(&rm->lists);
    snprintf(rm->shard, sizeof(rm->shard), "%s", shard);
    rm->pool = pgx_pool_new(loop, &po);
    *out = &rm->base;
    return 0;
}
