/*
 * test_pgx.c - the libpq pool (pgx.c) against a real, throwaway PostgreSQL:
 * jobs are answered in order, phase-2 jobs go first, a held connection
 * keeps its transaction until released and is refused to a stale
 * generation, a connection released inside a transaction is rolled back
 * before the next job, cancellation, statement_timeout 0 on every
 * connection, and what pgx_pool_up / pgx_pool_queued / pgx_pool_error
 * report.
 *
 * The server comes from tools/run-unit (through tools/unit-pg), which puts
 * its conninfo in DTX_UNIT_PG; without it the suite fails. What the tests
 * check about PostgreSQL they check from a separate, ordinary libpq
 * connection (admin_*), as a user would.
 */
#include "dtx/err.h"
#include "dtx/pgx.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_STMTS 4
#define WAIT_MS   5000

/* The server under test; set once in main() from DTX_UNIT_PG. */
static const char *conninfo;

/* One pool on its own loop, and the order in which probes finished. */
struct rig {
    struct ev_loop loop;
    struct pgx_pool *pool;
    int finished[64]; /* probe ids, in the order their on_done ran */
    int nfinished;
    int connects; /* on_connect calls */
};

/* A job and everything its callbacks saw. */
struct probe {
    struct pgx_job job;
    struct pgx_stmt stmts[MAX_STMTS];
    const char *params[MAX_STMTS][1];
    struct rig *rig;
    int id;
    int results;
    int idx[MAX_STMTS]; /* idx of each result, in arrival order */
    ExecStatusType status[MAX_STMTS];
    char sqlstate[MAX_STMTS][6];
    char value[MAX_STMTS][64]; /* first column of the first row, per statement */
    int singles[MAX_STMTS];    /* PGRES_SINGLE_TUPLE results, per statement */
    int sum[MAX_STMTS];        /* the first column of every one of them, summed */
    int done;                  /* on_done calls */
    int rc, nanswered;
    char why[256];
};

/* ---- a plain connection, to look at the server as a user would ----------- */

static void ignore_notice(void *arg, const char *message)
{
    (void)arg;
    (void)message;
}

static PGconn *admin_connect(void)
{
    PGconn *pg = PQconnectdb(conninfo);

    CU_ASSERT_FATAL(PQstatus(pg) == CONNECTION_OK);
    PQsetNoticeProcessor(pg, ignore_notice, NULL); /* "table pgx_rows does not exist, skipping" */
    return pg;
}

static void admin_exec(const char *sql)
{
    PGconn *pg = admin_connect();
    PGresult *res = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(res);

    CU_ASSERT(st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        fprintf(stderr, "admin: %s: %s", sql, PQerrorMessage(pg));
    PQclear(res);
    PQfinish(pg);
}

/* The first column of the first row of sql as a number, or -1. */
static long admin_number(const char *sql)
{
    PGconn *pg = admin_connect();
    PGresult *res = PQexec(pg, sql);
    long n = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
        n = atol(PQgetvalue(res, 0, 0));
    PQclear(res);
    PQfinish(pg);
    return n;
}

static void fresh_table(void)
{
    admin_exec("DROP TABLE IF EXISTS pgx_rows; CREATE TABLE pgx_rows (k int)");
}

/* ---- the pool under test ------------------------------------------------------ */

static void count_connect(void *arg, PGconn *pg)
{
    struct rig *r = arg;

    CU_ASSERT_EQUAL(PQstatus(pg), CONNECTION_OK);
    r->connects++;
}

static bool run_until_up(struct rig *r, int want)
{
    uint64_t until = ev_clock_us() + WAIT_MS * 1000u;

    while (pgx_pool_up(r->pool) != want && ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(&r->loop, 10), 0);
    return pgx_pool_up(r->pool) == want;
}

static bool run_until(struct rig *r, const int *count, int want)
{
    uint64_t until = ev_clock_us() + WAIT_MS * 1000u;

    while (*count < want && ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(&r->loop, 10), 0);
    return *count >= want;
}

static void run_for(struct rig *r, int ms)
{
    uint64_t until = ev_clock_us() + (uint64_t)ms * 1000u;

    while (ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(&r->loop, 10), 0);
}

/* A pool of size connections to the server under test, all of them up. */
static void rig_open_to(struct rig *r, int size, const char *info, uint32_t check_client_ms)
{
    struct pgx_opts opts = {.conninfo = info,
                            .size = size,
                            .on_connect = count_connect,
                            .arg = r,
                            .check_client_ms = check_client_ms};

    memset(r, 0, sizeof(*r));
    CU_ASSERT_FATAL(ev_loop_init(&r->loop) == 0);
    r->pool = pgx_pool_new(&r->loop, &opts);
    CU_ASSERT_FATAL(run_until_up(r, size));
}

static void rig_open(struct rig *r, int size)
{
    rig_open_to(r, size, conninfo, 0);
}

static void rig_close(struct rig *r)
{
    pgx_pool_free(r->pool);
    ev_loop_release(&r->loop);
}

static void on_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct probe *p = job->data;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

    CU_ASSERT(idx >= 0 && idx < job->nstmts);
    if (p->results < MAX_STMTS)
        p->idx[p->results] = idx;
    p->results++;
    if (idx >= 0 && idx < MAX_STMTS) {
        p->status[idx] = PQresultStatus(res);
        snprintf(p->sqlstate[idx], sizeof(p->sqlstate[idx]), "%s", state ? state : "");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0)
            snprintf(p->value[idx], sizeof(p->value[idx]), "%s", PQgetvalue(res, 0, 0));
        if (PQresultStatus(res) == PGRES_SINGLE_TUPLE) {
            CU_ASSERT_EQUAL(PQntuples(res), 1);
            p->singles[idx]++;
            p->sum[idx] += atoi(PQgetvalue(res, 0, 0));
        }
    }
    PQclear(res);
}

static void on_done(struct pgx_job *job, int rc, int nanswered, const char *why)
{
    struct probe *p = job->data;

    p->done++;
    p->rc = rc;
    p->nanswered = nanswered;
    snprintf(p->why, sizeof(p->why), "%s", why ? why : "");
    if (p->rig->nfinished < 64)
        p->rig->finished[p->rig->nfinished++] = p->id;
}

static void probe_init(struct probe *p, struct rig *r, int id)
{
    memset(p, 0, sizeof(*p));
    p->rig = r;
    p->id = id;
    p->job =
        (struct pgx_job){.stmts = p->stmts, .on_result = on_result, .on_done = on_done, .data = p};
}

/* Adds a statement (with one text parameter if param is not NULL). */
static void probe_add(struct probe *p, const char *sql, const char *param, bool sync)
{
    int i = p->job.nstmts++;

    CU_ASSERT_FATAL(i < MAX_STMTS);
    p->params[i][0] = param;
    p->stmts[i] = (struct pgx_stmt){sql, param ? 1 : 0, param ? p->params[i] : NULL, sync};
}

/* A probe of one statement with a Sync after it. */
static void probe_sql(struct probe *p, struct rig *r, int id, const char *sql)
{
    probe_init(p, r, id);
    probe_add(p, sql, NULL, true);
}

/* Sends p on the connection probe holder holds. */
static int submit_on(struct probe *holder, struct probe *p)
{
    return pgx_submit_on(holder->job.conn, holder->job.conn_gen, &p->job);
}

/* The pid of the backend serving connection-holding probe h (its last statement). */
static int backend_of(const struct probe *h)
{
    return atoi(h->value[h->job.nstmts - 1]);
}

static void terminate_backend(int pid)
{
    char sql[96];

    snprintf(sql, sizeof(sql), "SELECT pg_terminate_backend(%d)::int", pid);
    CU_ASSERT_EQUAL(admin_number(sql), 1);
}

/* Waits until stmt is running on the server. */
static bool run_until_running(struct rig *r, const char *stmt)
{
    char sql[256];
    uint64_t until = ev_clock_us() + WAIT_MS * 1000u;

    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = '%s' "
             "AND pid <> pg_backend_pid()",
             stmt);
    while (admin_number(sql) < 1 && ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(&r->loop, 10), 0);
    return admin_number(sql) >= 1;
}

/* ---- tests ------------------------------------------------------------------------ */

static void pool_up_counts_connections_and_recovers_a_lost_one(void)
{
    struct probe who;
    struct rig r;

    rig_open(&r, 3);
    CU_ASSERT_EQUAL(pgx_pool_up(r.pool), 3);
    CU_ASSERT_EQUAL(r.connects, 3);
    CU_ASSERT_STRING_EQUAL(pgx_pool_error(r.pool), "");
    probe_sql(&who, &r, 0, "SELECT pg_backend_pid()");
    pgx_submit(r.pool, &who.job);
    CU_ASSERT_FATAL(run_until(&r, &who.done, 1));
    terminate_backend(backend_of(&who));
    CU_ASSERT_TRUE(run_until_up(&r, 2));
    CU_ASSERT_PTR_NOT_NULL(strstr(pgx_pool_error(r.pool), "connection lost"));
    CU_ASSERT_TRUE(run_until_up(&r, 3)); /* reconnected after a short back-off */
    CU_ASSERT_EQUAL(r.connects, 4);
    CU_ASSERT_STRING_EQUAL(pgx_pool_error(r.pool), "");
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pg_stat_activity "
                                 "WHERE datname = 'app' AND backend_type = 'client backend' "
                                 "AND pid <> pg_backend_pid()"),
                    3);
    rig_close(&r);
}

static void an_unreachable_server_keeps_jobs_queued_and_says_why(void)
{
    struct pgx_opts opts = {.conninfo = "host=/nonexistent port=1 dbname=app", .size = 2};
    struct probe p;
    struct rig r;

    memset(&r, 0, sizeof(r));
    CU_ASSERT_FATAL(ev_loop_init(&r.loop) == 0);
    r.pool = pgx_pool_new(&r.loop, &opts);
    probe_sql(&p, &r, 0, "SELECT 1");
    pgx_submit(r.pool, &p.job);
    run_for(&r, 150);
    CU_ASSERT_EQUAL(pgx_pool_up(r.pool), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(pgx_pool_error(r.pool), "/nonexistent"));
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 1);
    CU_ASSERT_EQUAL(p.done, 0);
    rig_close(&r); /* drops the queued job without a callback */
    CU_ASSERT_EQUAL(p.done, 0);
}

static void jobs_on_one_connection_are_answered_in_order(void)
{
    enum { N = 20 };
    char text[N][12];
    struct probe p[N], multi;
    struct rig r;

    rig_open(&r, 1);
    for (int i = 0; i < N; i++) {
        snprintf(text[i], sizeof(text[i]), "%d", i);
        probe_init(&p[i], &r, i);
        probe_add(&p[i], "SELECT $1::int", text[i], true);
        pgx_submit(r.pool, &p[i].job);
    }
    probe_init(&multi, &r, N);
    probe_add(&multi, "SELECT 'a'", NULL, false);
    probe_add(&multi, "SELECT 'b'", NULL, true);
    probe_add(&multi, "SELECT 'c'", NULL, true);
    pgx_submit(r.pool, &multi.job);
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), N + 1);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, N + 1));
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 0);
    for (int i = 0; i < N; i++) {
        CU_ASSERT_EQUAL(r.finished[i], i);
        CU_ASSERT_EQUAL(p[i].rc, 0);
        CU_ASSERT_STRING_EQUAL(p[i].value[0], text[i]);
    }
    CU_ASSERT_EQUAL(multi.rc, 0);
    CU_ASSERT_EQUAL(multi.nanswered, 3);
    CU_ASSERT_EQUAL(multi.results, 3);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(multi.idx[i], i);
    CU_ASSERT_STRING_EQUAL(multi.value[0], "a");
    CU_ASSERT_STRING_EQUAL(multi.value[2], "c");
    rig_close(&r);
}

static void a_failed_statement_skips_the_rest_of_its_segment_only(void)
{
    struct probe p, next;
    struct rig r;

    rig_open(&r, 1);
    probe_init(&p, &r, 0);
    probe_add(&p, "SELECT 1", NULL, false);
    probe_add(&p, "SELECT 1/0", NULL, false);
    probe_add(&p, "SELECT 2", NULL, true);
    probe_add(&p, "SELECT 3", NULL, true);
    pgx_submit(r.pool, &p.job);
    probe_sql(&next, &r, 1, "SELECT 4");
    pgx_submit(r.pool, &next.job);
    CU_ASSERT_TRUE(run_until(&r, &next.done, 1));
    CU_ASSERT_EQUAL(p.rc, 0);
    CU_ASSERT_EQUAL(p.nanswered, 4);
    CU_ASSERT_EQUAL(p.status[0], PGRES_TUPLES_OK);
    CU_ASSERT_EQUAL(p.status[1], PGRES_FATAL_ERROR);
    CU_ASSERT_STRING_EQUAL(p.sqlstate[1], "22012");
    CU_ASSERT_EQUAL(p.status[2], PGRES_PIPELINE_ABORTED);
    CU_ASSERT_EQUAL(p.status[3], PGRES_TUPLES_OK); /* after the Sync */
    CU_ASSERT_STRING_EQUAL(p.value[3], "3");
    CU_ASSERT_STRING_EQUAL(next.value[0], "4");
    rig_close(&r);
}

/* A probe that opens a transaction, inserts k and holds its connection. */
static void hold_with_insert(struct probe *h, struct rig *r, int id, const char *k)
{
    probe_init(h, r, id);
    probe_add(h, "BEGIN", NULL, false);
    probe_add(h, "INSERT INTO pgx_rows VALUES ($1::int)", k, false);
    probe_add(h, "SELECT pg_backend_pid()", NULL, true);
    h->job.hold = true;
}

static void phase2_jobs_are_served_before_phase1_jobs(void)
{
    struct probe h, release, p[4];
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    hold_with_insert(&h, &r, 9, "1");
    pgx_submit(r.pool, &h.job);
    CU_ASSERT_FATAL(run_until(&r, &h.done, 1));
    for (int i = 0; i < 4; i++) { /* ids 0, 1: phase 1; 2, 3: phase 2 */
        probe_sql(&p[i], &r, i, "SELECT 1");
        p[i].job.phase2 = i >= 2;
        pgx_submit(r.pool, &p[i].job);
    }
    run_for(&r, 50);
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 4); /* the only connection is held */
    probe_sql(&release, &r, 8, "ROLLBACK");
    CU_ASSERT_EQUAL(submit_on(&h, &release), 0);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 6));
    CU_ASSERT_EQUAL(r.finished[0], 9);
    CU_ASSERT_EQUAL(r.finished[1], 8);
    CU_ASSERT_EQUAL(r.finished[2], 2);
    CU_ASSERT_EQUAL(r.finished[3], 3);
    CU_ASSERT_EQUAL(r.finished[4], 0);
    CU_ASSERT_EQUAL(r.finished[5], 1);
    rig_close(&r);
}

static void a_held_connection_keeps_its_transaction_until_released(void)
{
    struct probe h, waiting, look, commit;
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    hold_with_insert(&h, &r, 0, "7");
    pgx_submit(r.pool, &h.job);
    CU_ASSERT_FATAL(run_until(&r, &h.done, 1));
    CU_ASSERT_EQUAL(h.rc, 0);
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                 "AND state = 'idle in transaction'"),
                    1);
    probe_sql(&waiting, &r, 1, "SELECT count(*) FROM pgx_rows");
    pgx_submit(r.pool, &waiting.job);
    run_for(&r, 100);
    CU_ASSERT_EQUAL(waiting.done, 0); /* the only connection is held */
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 1);
    probe_sql(&look, &r, 2, "SELECT count(*) FROM pgx_rows");
    look.job.hold = true;
    CU_ASSERT_EQUAL(submit_on(&h, &look), 0);
    CU_ASSERT_FATAL(run_until(&r, &look.done, 1));
    CU_ASSERT_STRING_EQUAL(look.value[0], "1");                        /* its own transaction */
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 0); /* not committed yet */
    CU_ASSERT_EQUAL(waiting.done, 0);
    probe_sql(&commit, &r, 3, "COMMIT");
    CU_ASSERT_EQUAL(submit_on(&look, &commit), 0);
    CU_ASSERT_TRUE(run_until(&r, &waiting.done, 1));
    CU_ASSERT_EQUAL(commit.status[0], PGRES_COMMAND_OK);
    CU_ASSERT_STRING_EQUAL(waiting.value[0], "1");
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 1);
    rig_close(&r);
}

static void a_job_that_leaves_its_transaction_open_is_rolled_back_before_the_next(void)
{
    struct probe open_tx, after_open, failed_tx, after_failed;
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    probe_init(&open_tx, &r, 0);
    probe_add(&open_tx, "BEGIN", NULL, false);
    probe_add(&open_tx, "INSERT INTO pgx_rows VALUES (2)", NULL, true);
    pgx_submit(r.pool, &open_tx.job);
    probe_init(&after_open, &r, 1);
    probe_add(&after_open, "SELECT count(*) FROM pgx_rows", NULL, true);
    probe_add(&after_open, "SELECT pg_current_xact_id_if_assigned() IS NULL", NULL, true);
    pgx_submit(r.pool, &after_open.job);
    probe_init(&failed_tx, &r, 2);
    probe_add(&failed_tx, "BEGIN", NULL, false);
    probe_add(&failed_tx, "SELECT 1/0", NULL, true);
    pgx_submit(r.pool, &failed_tx.job);
    probe_sql(&after_failed, &r, 3, "SELECT 1");
    pgx_submit(r.pool, &after_failed.job);
    CU_ASSERT_TRUE(run_until(&r, &after_failed.done, 1));
    CU_ASSERT_EQUAL(open_tx.rc, 0);
    CU_ASSERT_STRING_EQUAL(after_open.value[0], "0"); /* open_tx's row is gone */
    CU_ASSERT_STRING_EQUAL(after_open.value[1], "t"); /* not inside open_tx's transaction */
    CU_ASSERT_EQUAL(failed_tx.status[1], PGRES_FATAL_ERROR);
    CU_ASSERT_EQUAL(after_failed.status[0], PGRES_TUPLES_OK); /* not 25P02 */
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 0);
    rig_close(&r);
}

static void a_held_connection_released_inside_its_transaction_is_rolled_back(void)
{
    struct probe h, release, next;
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    hold_with_insert(&h, &r, 0, "3");
    pgx_submit(r.pool, &h.job);
    CU_ASSERT_FATAL(run_until(&r, &h.done, 1));
    probe_sql(&release, &r, 1, "SELECT 1"); /* hold = false: gives the connection back */
    probe_sql(&next, &r, 2, "SELECT count(*) FROM pgx_rows");
    pgx_submit(r.pool, &next.job);
    CU_ASSERT_EQUAL(submit_on(&h, &release), 0);
    CU_ASSERT_TRUE(run_until(&r, &next.done, 1));
    CU_ASSERT_EQUAL(release.rc, 0);
    CU_ASSERT_STRING_EQUAL(next.value[0], "0");
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 0);
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' "
                                 "AND state LIKE 'idle in transaction%'"),
                    0);
    rig_close(&r);
}

static void a_stale_generation_is_refused_after_the_held_connection_is_lost(void)
{
    struct probe h, late, again, follow;
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    hold_with_insert(&h, &r, 0, "5");
    pgx_submit(r.pool, &h.job);
    CU_ASSERT_FATAL(run_until(&r, &h.done, 1));
    terminate_backend(backend_of(&h));
    CU_ASSERT_TRUE(run_until_up(&r, 0));
    probe_sql(&late, &r, 1, "INSERT INTO pgx_rows VALUES (6)");
    CU_ASSERT_EQUAL(submit_on(&h, &late), DTX_EUNAVAIL); /* while it is down */
    CU_ASSERT_TRUE(run_until_up(&r, 1));
    hold_with_insert(&again, &r, 2, "8"); /* someone else holds the same slot now */
    pgx_submit(r.pool, &again.job);
    CU_ASSERT_FATAL(run_until(&r, &again.done, 1));
    CU_ASSERT_PTR_EQUAL(again.job.conn, h.job.conn);
    CU_ASSERT_NOT_EQUAL(again.job.conn_gen, h.job.conn_gen);
    CU_ASSERT_EQUAL(submit_on(&h, &late), DTX_EUNAVAIL);
    run_for(&r, 50);
    CU_ASSERT_EQUAL(late.done, 0); /* refused jobs are not answered: nothing ran */
    probe_sql(&follow, &r, 3, "COMMIT");
    CU_ASSERT_EQUAL(submit_on(&again, &follow), 0);
    CU_ASSERT_TRUE(run_until(&r, &follow.done, 1));
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 1);
    CU_ASSERT_EQUAL(admin_number("SELECT k FROM pgx_rows"),
                    8); /* neither 5 (lost) nor 6 (refused) */
    rig_close(&r);
}

static void a_queued_job_can_be_cancelled(void)
{
    struct probe h, doomed, release;
    struct rig r;

    fresh_table();
    rig_open(&r, 1);
    hold_with_insert(&h, &r, 0, "1");
    pgx_submit(r.pool, &h.job);
    CU_ASSERT_FATAL(run_until(&r, &h.done, 1));
    probe_sql(&doomed, &r, 1, "INSERT INTO pgx_rows VALUES (42)");
    pgx_submit(r.pool, &doomed.job);
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 1);
    CU_ASSERT_EQUAL(pgx_cancel(r.pool, &doomed.job), 0);
    CU_ASSERT_EQUAL(doomed.done, 1);
    CU_ASSERT_EQUAL(doomed.rc, DTX_EABORTED);
    CU_ASSERT_EQUAL(doomed.nanswered, 0);
    CU_ASSERT_EQUAL(pgx_pool_queued(r.pool), 0);
    probe_sql(&release, &r, 2, "COMMIT");
    CU_ASSERT_EQUAL(submit_on(&h, &release), 0);
    CU_ASSERT_TRUE(run_until(&r, &release.done, 1));
    run_for(&r, 50);
    CU_ASSERT_EQUAL(pgx_cancel(r.pool, &doomed.job), 0); /* again: nothing happens */
    CU_ASSERT_EQUAL(doomed.done, 1);
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows WHERE k = 42"), 0);
    CU_ASSERT_EQUAL(admin_number("SELECT count(*) FROM pgx_rows"), 1);
    rig_close(&r);
}

static void a_running_job_can_be_cancelled(void)
{
    struct probe sleeper, next;
    struct rig r;
    uint64_t start;

    rig_open(&r, 1);
    probe_sql(&sleeper, &r, 0, "SELECT pg_sleep(30)");
    pgx_submit(r.pool, &sleeper.job);
    start = ev_clock_us();
    CU_ASSERT_FATAL(run_until_running(&r, "SELECT pg_sleep(30)"));
    CU_ASSERT_EQUAL(pgx_cancel(r.pool, &sleeper.job), 0);
    CU_ASSERT_TRUE(run_until(&r, &sleeper.done, 1));
    CU_ASSERT(ev_clock_us() - start < 10000000u);
    CU_ASSERT_EQUAL(sleeper.rc, 0); /* answered: with an error */
    CU_ASSERT_EQUAL(sleeper.status[0], PGRES_FATAL_ERROR);
    CU_ASSERT_STRING_EQUAL(sleeper.sqlstate[0], "57014");
    probe_sql(&next, &r, 1, "SELECT 1");
    pgx_submit(r.pool, &next.job);
    CU_ASSERT_TRUE(run_until(&r, &next.done, 1));
    CU_ASSERT_STRING_EQUAL(next.value[0], "1");
    rig_close(&r);
}

/*
 * A bug found by this test (fixed in participant/pgx.c: a cancelled connection is recycled).
 * pgx_cancel() of a job whose results are already on their way sends a cancel request that lands
 * after the next job started on the same backend: that job, which nobody cancelled, fails with
 * 57014. In the participant the next job is another client's branch.
 */
static void cancelling_a_finished_job_never_cancels_the_next_one(void)
{
    struct probe done_already, innocent;
    struct rig r;

    rig_open(&r, 1);
    for (int round = 0; round < 5; round++) {
        probe_sql(&done_already, &r, 0, "SELECT 1");
        probe_sql(&innocent, &r, 1, "SELECT pg_sleep(0.3)");
        pgx_submit(r.pool, &done_already.job);
        pgx_submit(r.pool, &innocent.job);
        CU_ASSERT_EQUAL(ev_loop_once(&r.loop, 0), 0); /* done_already is sent */
        CU_ASSERT_FATAL(done_already.job.sent);
        usleep(50000); /* it has finished on the server; its results wait in the socket */
        CU_ASSERT_EQUAL(pgx_cancel(r.pool, &done_already.job), 0);
        CU_ASSERT_TRUE(run_until(&r, &innocent.done, 1));
        CU_ASSERT_EQUAL(done_already.status[0], PGRES_TUPLES_OK);
        CU_ASSERT_EQUAL(innocent.status[0], PGRES_TUPLES_OK);
        CU_ASSERT_STRING_EQUAL(innocent.sqlstate[0], "");
    }
    rig_close(&r);
}

static void a_job_in_flight_when_its_connection_dies_is_answered_unavailable(void)
{
    struct probe p, next;
    struct rig r;

    rig_open(&r, 1);
    probe_init(&p, &r, 0);
    probe_add(&p, "SELECT pg_backend_pid()", NULL, true);
    probe_add(&p, "SELECT pg_sleep(30)", NULL, true);
    probe_add(&p, "SELECT 3", NULL, true);
    pgx_submit(r.pool, &p.job);
    CU_ASSERT_FATAL(run_until_running(&r, "SELECT pg_sleep(30)"));
    CU_ASSERT_FATAL(run_until(&r, &p.results, 1));
    terminate_backend(atoi(p.value[0]));
    CU_ASSERT_TRUE(run_until(&r, &p.done, 1));
    CU_ASSERT_EQUAL(p.rc, DTX_EUNAVAIL);
    CU_ASSERT_EQUAL(p.nanswered, 2); /* the sleep, by PostgreSQL's "terminating connection" */
    CU_ASSERT_EQUAL(p.results, 2);
    CU_ASSERT_STRING_EQUAL(p.sqlstate[1], "57P01");
    CU_ASSERT(p.why[0] != '\0');
    probe_sql(&next, &r, 1, "SELECT 1"); /* the pool reconnects and serves it */
    pgx_submit(r.pool, &next.job);
    CU_ASSERT_TRUE(run_until(&r, &next.done, 1));
    CU_ASSERT_EQUAL(next.rc, 0);
    CU_ASSERT_STRING_EQUAL(next.value[0], "1");
    rig_close(&r);
}

static void run_probe(struct rig *r, struct probe *p)
{
    pgx_submit(r->pool, &p->job);
    CU_ASSERT_TRUE(run_until(r, &p->done, 1));
}

/*
 * Every connection runs with statement_timeout = 0, whatever the session
 * would otherwise start with (here the conninfo's own options, which stand
 * for a server's or a role's default) and whatever a client's job set: the
 * agent's own statements (COMMIT PREPARED) must never be cut short. The
 * conninfo's other options still hold, and check_client_ms is set.
 */
static void connections_run_without_a_statement_timeout_and_keep_the_conninfos_options(void)
{
    struct probe sleep1, set, sleep2, mem, timeout, check;
    char with_options[1024];
    struct rig r;

    snprintf(with_options, sizeof(with_options),
             "%s options='-c statement_timeout=50 -c work_mem=1234kB'", conninfo);
    rig_open_to(&r, 1, with_options, 1500);
    probe_sql(&sleep1, &r, 0, "SELECT pg_sleep(0.2)");
    run_probe(&r, &sleep1);
    CU_ASSERT_EQUAL(sleep1.status[0], PGRES_TUPLES_OK);
    probe_sql(&set, &r, 1, "SET statement_timeout = 50"); /* a client's, for its session */
    set.job.untrusted = true;
    run_probe(&r, &set);
    CU_ASSERT_EQUAL(set.status[0], PGRES_COMMAND_OK);
    probe_sql(&sleep2, &r, 2, "SELECT pg_sleep(0.2)"); /* DISCARD ALL set it back to 0 */
    run_probe(&r, &sleep2);
    CU_ASSERT_EQUAL(sleep2.status[0], PGRES_TUPLES_OK);
    probe_sql(&timeout, &r, 3, "SELECT current_setting('statement_timeout')");
    run_probe(&r, &timeout);
    CU_ASSERT_STRING_EQUAL(timeout.value[0], "0");
    probe_sql(&mem, &r, 4, "SELECT current_setting('work_mem')");
    run_probe(&r, &mem);
    CU_ASSERT_STRING_EQUAL(mem.value[0], "1234kB");
    probe_sql(&check, &r, 5, "SELECT current_setting('client_connection_check_interval')");
    run_probe(&r, &check);
    CU_ASSERT_STRING_EQUAL(check.value[0], "1500ms");
    rig_close(&r);
}

/*
 * Phase-1 jobs (branches) run on connections of their own, but one of the
 * pool's stays for phase 2: with every other one running a long branch, a
 * COMMIT PREPARED still runs at once (before, it waited for a branch).
 */
static void phase1_jobs_run_on_connections_of_their_own(void)
{
    struct probe p[3], commit;
    struct rig r;

    rig_open(&r, 3);
    for (int i = 0; i < 3; i++) {
        probe_init(&p[i], &r, i);
        probe_add(&p[i], "SELECT pg_sleep(0.3)", NULL, false);
        probe_add(&p[i], "SELECT pg_backend_pid()", NULL, true);
        pgx_submit(r.pool, &p[i].job);
    }
    run_for(&r, 50); /* the branches take their connections */
    probe_init(&commit, &r, 3);
    probe_add(&commit, "SELECT pg_backend_pid()", NULL, true);
    commit.job.phase2 = true;
    pgx_submit(r.pool, &commit.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 4));
    CU_ASSERT_EQUAL(r.finished[0], 3); /* the phase-2 job, on the connection kept for it */
    CU_ASSERT_EQUAL(r.finished[3], 2); /* the third branch, once one of the first two ended */
    CU_ASSERT_STRING_NOT_EQUAL(p[0].value[1], p[1].value[1]);
    CU_ASSERT_STRING_NOT_EQUAL(p[0].value[1], commit.value[0]);
    CU_ASSERT_STRING_NOT_EQUAL(p[1].value[1], commit.value[0]);
    rig_close(&r);
}

static void statements_asked_for_are_read_row_by_row_also_deep_in_a_pipeline(void)
{
    struct probe first, p;
    struct rig r;

    rig_open(&r, 1);
    probe_sql(&first, &r, 0, "SELECT 1"); /* ahead in the same pipeline */
    first.job.phase2 = true;
    probe_init(&p, &r, 1);
    p.job.phase2 = true;
    probe_add(&p, "SELECT 0", NULL, true);
    probe_add(&p, "SELECT g FROM generate_series(1, 5) g", NULL, false);
    probe_add(&p, "SELECT g FROM generate_series(1, 3) g", NULL, false);
    probe_add(&p, "SELECT 'after'", NULL, true);
    p.job.rows_first = 1;
    p.job.rows_count = 1;
    pgx_submit(r.pool, &first.job);
    pgx_submit(r.pool, &p.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 2));
    CU_ASSERT_EQUAL(p.rc, 0);
    CU_ASSERT_EQUAL(p.singles[1], 5); /* one row at a time */
    CU_ASSERT_EQUAL(p.sum[1], 15);
    CU_ASSERT_EQUAL(p.status[1], PGRES_TUPLES_OK); /* the statement's last: no rows */
    CU_ASSERT_EQUAL(p.singles[2], 0);              /* not asked for: whole */
    CU_ASSERT_EQUAL(p.status[2], PGRES_TUPLES_OK);
    CU_ASSERT_STRING_EQUAL(p.value[3], "after");
    CU_ASSERT_EQUAL(p.results, 1 + 6 + 1 + 1);
    rig_close(&r);
}

static void an_untrusted_jobs_session_is_reset_before_the_next_job(void)
{
    struct probe dirty, clean, trusted, after;
    struct rig r;

    rig_open(&r, 1);
    probe_sql(&dirty, &r, 0, "SELECT set_config('search_path', 'nowhere', false)");
    dirty.job.untrusted = true;
    pgx_submit(r.pool, &dirty.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 1));
    probe_sql(&clean, &r, 1, "SHOW search_path");
    pgx_submit(r.pool, &clean.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 2));
    CU_ASSERT_STRING_EQUAL(clean.value[0], "\"$user\", public");
    /* a trusted job's session is left as it is (dtx's own statements) */
    probe_sql(&trusted, &r, 2, "SELECT set_config('search_path', 'kept', false)");
    pgx_submit(r.pool, &trusted.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 3));
    probe_sql(&after, &r, 3, "SHOW search_path");
    pgx_submit(r.pool, &after.job);
    CU_ASSERT_TRUE(run_until(&r, &r.nfinished, 4));
    CU_ASSERT_STRING_EQUAL(after.value[0], "kept");
    rig_close(&r);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(pool_up_counts_connections_and_recovers_a_lost_one),
        UNIT_TEST(an_unreachable_server_keeps_jobs_queued_and_says_why),
        UNIT_TEST(jobs_on_one_connection_are_answered_in_order),
        UNIT_TEST(a_failed_statement_skips_the_rest_of_its_segment_only),
        UNIT_TEST(phase2_jobs_are_served_before_phase1_jobs),
        UNIT_TEST(a_held_connection_keeps_its_transaction_until_released),
        UNIT_TEST(a_job_that_leaves_its_transaction_open_is_rolled_back_before_the_next),
        UNIT_TEST(a_held_connection_released_inside_its_transaction_is_rolled_back),
        UNIT_TEST(a_stale_generation_is_refused_after_the_held_connection_is_lost),
        UNIT_TEST(a_queued_job_can_be_cancelled),
        UNIT_TEST(a_running_job_can_be_cancelled),
        UNIT_TEST(a_job_in_flight_when_its_connection_dies_is_answered_unavailable),
        UNIT_TEST(connections_run_without_a_statement_timeout_and_keep_the_conninfos_options),
        UNIT_TEST(phase1_jobs_run_on_connections_of_their_own),
        UNIT_TEST(statements_asked_for_are_read_row_by_row_also_deep_in_a_pipeline),
        UNIT_TEST(an_untrusted_jobs_session_is_reset_before_the_next_job),
        UNIT_TEST(cancelling_a_finished_job_never_cancels_the_next_one),
    };

    conninfo = getenv("DTX_UNIT_PG");
    if (!conninfo || !*conninfo) {
        fprintf(stderr, "test_pgx: DTX_UNIT_PG is not set: this suite needs a PostgreSQL "
                        "server; run it through tools/run-unit (or tools/unit-pg), or set "
                        "DTX_UNIT_PG to a conninfo\n");
        return 1;
    }
    return unit_run("pgx", tests, sizeof(tests) / sizeof(tests[0]));
}
