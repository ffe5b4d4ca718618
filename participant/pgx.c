/*
 * pgx.c - a pool of non-blocking libpq connections in pipeline mode.
 *
 * Thread model: the participant's event-loop thread only, except that a
 * cancel request is sent from a short-lived detached thread (send_cancel).
 *
 * Connection states:
 *   DOWN --retry timer--> CONNECTING --PQconnectPoll OK--> INIT --init job done--> IDLE
 *   INIT --init_sql gave NULL (the server cannot take work)--> DOWN
 *   IDLE --jobs sent--> BUSY --all results in, nothing held--> IDLE
 *   BUSY --job done with hold--> HELD --submit_on--> BUSY, --release--> IDLE
 *   any --connection broken--> DOWN (every job in flight: on_done(DTX_EUNAVAIL))
 * A connection that leaves BUSY inside a transaction not held by anyone is
 * sent a ROLLBACK (as an internal job) before it is IDLE again; one that
 * ran a client's SQL (an untrusted job) is also sent DISCARD ALL (in the
 * job's own pipeline when the job gives the connection back: in front of its
 * last Sync when it ends its transaction, send_behind, else after it,
 * send_discard), so that nothing of one client's session (a setting, an
 * advisory lock, a temporary table, a WITH HOLD cursor, a LISTEN, a prepared
 * statement) reaches the next. Notifications (a LISTEN before its DISCARD)
 * are read and dropped as they arrive: they never pile up in libpq.
 *
 * Cancelling: a cancel request reaches the backend at some later moment,
 * and PostgreSQL cancels whatever that backend runs then. A job may have
 * finished on the server before the request arrives; had its connection
 * taken the next job meanwhile, that job (another client's branch) would
 * be cancelled instead. So a connection that was sent a cancel request is
 * never given new work: once its owner is done with it, it is closed and
 * a new one is opened (conn_recycle).
 *
 * statement_timeout: every connection starts with statement_timeout = 0
 * (PGX_SESSION_OPTIONS, in its startup packet, behind any options of the
 * operator's conninfo), whatever the server's, database's or role's
 * default: the agent's statements (COMMIT PREPARED, recovery's lists) are
 * never cut short by it, and DISCARD ALL sets it back to that value, not to
 * the server's. A branch's deadline is kept by the participant, which
 * cancels it (rm_pg_run.c).
 *
 * client_connection_check_interval (opts.check_client_ms, in the same
 * options): a backend running a statement (or waiting for a lock) checks
 * that often that its client is still there, so a participant that dies
 * mid-branch frees the branch's backend and locks within that time, not
 * when the statement ends.
 *
 * Notices: every connection's go to the log through on_notice (never to
 * libpq's default printer on stderr), at most PGX_NOTICES_PER_S a second
 * for the whole pool (pool->notices), so a client's RAISE NOTICE loop
 * cannot flood the log.
 *
 * Result parsing (verified against PostgreSQL 15 libpq): in pipeline mode
 * each statement yields exactly one PGresult followed by NULL, skipped
 * statements included (PGRES_PIPELINE_ABORTED); each Sync yields
 * PGRES_PIPELINE_SYNC with no NULL after it. Jobs in flight on a
 * connection are answered strictly in the order they were sent.
 */
#include "dtx/pgx.h"
#include "dtx/err.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BACKOFF_MIN_MS     100
#define BACKOFF_MAX_MS     2000
#define CONNECT_TIMEOUT_MS 10000
/* Session settings every connection starts with (see the top). */
#define PGX_SESSION_OPTIONS "-c statement_timeout=0"
/*
 * Phase-2 jobs one connection may take at once. Each COMMIT PREPARED waits
 * for its WAL flush; run one after another on a single backend they cannot
 * share flushes, while spread over idle backends PostgreSQL flushes them
 * together. Measured at 64 clients on 2 cores with fsync on: batch 1
 * 2,940-3,110 tx/s (p99 32-34 ms), batch 4 2,890-2,940 (p99 36 ms), batch 64
 * slower still at 32 clients (p99 22-24 ms against 18).
 */
#define PHASE2_BATCH 1

/* C_INIT: connected, its init job in flight (not up yet: pgx_pool_up). */
enum conn_state { C_DOWN, C_CONNECTING, C_INIT, C_IDLE, C_BUSY, C_HELD };

struct pgx_conn {
    struct pgx_pool *pool;
    int id;
    PGconn *pg;
    enum conn_state state;
    uint64_t gen; /* bumped each time the connection is lost: a holder's claim is then void */
    struct ev_io io;
    struct ev_timer retry; /* reconnect when DOWN; give up when CONNECTING */
    uint32_t backoff_ms;
    struct list_node inflight; /* jobs sent, in order */
    struct pgx_job cleanup;    /* internal ROLLBACK and/or DISCARD ALL */
    bool cleaning;
    bool dirty;          /* ran a client's SQL since its last DISCARD ALL */
    bool cleanup_failed; /* the DISCARD ALL in flight (cleanup job or behind a job) failed */
    bool doomed;         /* a cancel request was sent for it: closed, never reused */
    bool phase1;         /* runs or holds a phase-1 job (a branch) since it was last idle */
    struct pgx_job init; /* internal, once after connecting: init_sql */
    struct pgx_stmt init_stmt;
    char value[64]; /* what init_sql gave */
    bool init_null; /* init_sql gave NULL: the server cannot take work */
};

struct pgx_pool {
    struct ev_loop *loop;
    struct pgx_opts opts;
    char *conninfo;
    /* The conninfo for PQconnectStartParams, options extended (NULL: it does not parse). */
    char **keys, **vals;
    struct pgx_conn *conns;
    struct list_node queue2; /* phase-2 jobs waiting */
    struct list_node queue1; /* phase-1 jobs waiting */
    struct ev_defer kick;
    int nqueued;
    char last_error[256];
    struct pgx_notices notices; /* shared by every connection */
    uint64_t notifies_dropped, notifies_logged, notifies_log_us;
};

static void conn_connect(struct pgx_conn *c);
static void conn_after_job(struct pgx_conn *c);

/* What cleans a connection up: a ROLLBACK of what is open, then a reset of the session. */
static const struct pgx_stmt cleanup_stmts[2] = {{"ROLLBACK", 0, NULL, true},
                                                 {"DISCARD ALL", 0, NULL, true}};

static void set_error(struct pgx_pool *pool, const char *what, const char *why)
{
    char msg[256];
    size_t n;

    snprintf(msg, sizeof(msg), "%.40s: %.200s", what, why);
    n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = '\0';
    if (strcmp(msg, pool->last_error) != 0)
        log_warn("postgresql: %s", msg);
    memcpy(pool->last_error, msg, sizeof(msg));
}

/* ---- notices ---------------------------------------------------------- */

static void on_notice(void *arg, const PGresult *res)
{
    struct pgx_notices *n = arg;
    const char *severity = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    uint64_t now = ev_clock_us();

    if (now - n->second_us >= 1000000u) {
        if (n->dropped)
            log_warn("postgresql: %u notices were not logged (more than %d a second)", n->dropped,
                     PGX_NOTICES_PER_S);
        n->second_us = now;
        n->logged = n->dropped = 0;
    }
    if (n->logged >= PGX_NOTICES_PER_S) {
        if (n->dropped++ == 0)
            log_warn("postgresql: more than %d notices a second; the rest are counted, not logged",
                     PGX_NOTICES_PER_S);
        return;
    }
    n->logged++;
    /* the whole message, DETAIL and HINT lines included: log.c makes it one line */
    log_msg(severity && strcmp(severity, "WARNING") == 0 ? LOG_WARN : LOG_INFO, "postgresql: %s",
            PQresultErrorMessage(res));
}

void pgx_log_notices(PGconn *pg, struct pgx_notices *n)
{
    PQsetNoticeReceiver(pg, on_notice, n);
}

/* ---- sending ---------------------------------------------------------- */

static int send_stmt(struct pgx_conn *c, const struct pgx_stmt *s)
{
    if (!PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->values, NULL, NULL, 0))
        return -1;
    if (s->sync && !PQpipelineSync(c->pg))
        return -1;
    return 0;
}

static void watch(struct pgx_conn *c, bool want_write)
{
    uint32_t ev = EPOLLIN | (want_write ? EPOLLOUT : 0);

    if (c->io.active)
        ev_io_modify(c->pool->loop, &c->io, ev);
}

static int flush(struct pgx_conn *c)
{
    int rc = PQflush(c->pg);

    if (rc < 0)
        return -1;
    watch(c, rc == 1);
    return 0;
}

static int send_discard(struct pgx_conn *c);

/*
 * The session's reset can ride in the job's last Sync: PostgreSQL commits a
 * statement that ends a transaction at once, even inside a pipeline, and
 * DISCARD ALL then runs in a transaction of its own (it may not run inside
 * another), without a Sync, flush and wake-up of its own (A/B, 32 clients on
 * 2 cores: 2,698 -> 2,760 tx/s). A failed job skips it (the pipeline is
 * aborted): the connection stays dirty and conn_after_job cleans it up.
 */
static bool discard_behind(const struct pgx_job *job)
{
    return job->untrusted && !job->hold && job->ends_xact && job->nstmts > 0 &&
           job->stmts[job->nstmts - 1].sync;
}

static int send_behind(struct pgx_conn *c, const struct pgx_stmt *last, struct pgx_job *job)
{
    struct pgx_stmt s = *last;

    s.sync = false;
    job->trailing = 1;
    c->cleanup_failed = false;
    if (send_stmt(c, &s) < 0)
        return -1;
    return send_stmt(c, &cleanup_stmts[1]);
}

/*
 * Puts a job's statements into the connection's output; 0 or -1
 * (connection broken: the job is in flight, so conn_down() answers it).
 */
static int conn_send(struct pgx_conn *c, struct pgx_job *job)
{
    job->conn = c;
    job->conn_gen = c->gen;
    job->next = 0;
    job->got = false;
    job->row_mode = false;
    job->trailing = 0;
    job->syncs = 0;
    job->sent = true;
    c->dirty |= job->untrusted;
    list_insert_tail(&c->inflight, &job->link);
    for (int i = 0; i < job->nstmts; i++) {
        job->syncs += job->stmts[i].sync;
        if (i == job->nstmts - 1 && discard_behind(job))
            return send_behind(c, &job->stmts[i], job);
        if (send_stmt(c, &job->stmts[i]) < 0)
            return -1;
    }
    if (job->untrusted && !job->hold)
        return send_discard(c);
    return 0;
}

/*
 * DISCARD ALL right behind a client's job that gives its connection back, in the same
 * pipeline: no round trip of its own, no second wake-up of the server (measured: a
 * separate one cost it ~140 us of CPU a branch). It runs after the job's last Sync, so
 * after its PREPARE TRANSACTION or COMMIT; if the job left its transaction open (or
 * failed inside it), the DISCARD fails, the connection stays dirty, and conn_after_job
 * sends ROLLBACK and DISCARD ALL once the results are in, as before.
 */
static int send_discard(struct pgx_conn *c)
{
    c->cleaning = true;
    c->cleanup_failed = false;
    c->cleanup.stmts = &cleanup_stmts[1];
    c->cleanup.nstmts = 1;
    return conn_send(c, &c->cleanup);
}

/* ---- connection failure ------------------------------------------------- */

static void fail_inflight(struct pgx_conn *c, const char *why)
{
    struct list_node failed;

    list_init(&failed);
    while (!list_empty(&c->inflight)) {
        struct list_node *n = c->inflight.next;

        list_remove(n);
        list_insert_tail(&failed, n);
    }
    while (!list_empty(&failed)) {
        struct pgx_job *job = container_of(failed.next, struct pgx_job, link);
        int answered = job->next;

        if (answered > job->nstmts)
            answered = job->nstmts; /* and the DISCARD behind it */
        list_remove(&job->link);
        job->conn = NULL;
        if (job == &c->cleanup)
            continue;
        job->on_done(job, DTX_EUNAVAIL, answered, why);
    }
}

/* Closes c's connection, if any, and forgets its session: the next one starts afresh. */
static void conn_close(struct pgx_conn *c)
{
    ev_io_stop(c->pool->loop, &c->io);
    if (c->pg)
        PQfinish(c->pg);
    c->pg = NULL;
    c->state = C_DOWN;
    c->gen++;
    c->cleaning = false;
    c->doomed = false;
    c->dirty = false;
    c->phase1 = false;
}

/*
 * Copies libpq's message why into dst as one line: its line breaks and the
 * tabs that indent its continuation lines ("...unexpectedly\n\tThis
 * probably means...") become one space each run; none at the end.
 */
static void one_line(char *dst, size_t n, const char *why)
{
    size_t k = 0;
    bool space = false;

    for (; *why && k + 1 < n; why++) {
        bool blank = *why == '\n' || *why == '\r' || *why == '\t' || *why == ' ';

        if (blank) {
            space = k > 0;
            continue;
        }
        if (space && k + 2 >= n)
            break; /* no room for the space and what follows it */
        if (space)
            dst[k++] = ' ';
        space = false;
        dst[k++] = *why;
    }
    dst[k] = '\0';
}

static void conn_down(struct pgx_conn *c, const char *why)
{
    struct pgx_pool *pool = c->pool;
    char reason[256];

    one_line(reason, sizeof(reason), why);
    set_error(pool, "connection lost", reason);
    conn_close(c);
    fail_inflight(c, reason);
    ev_timer_start(pool->loop, &c->retry, c->backoff_ms);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* ---- dispatch ------------------------------------------------------------- */

static struct pgx_job *dequeue(struct pgx_pool *pool, struct list_node *q)
{
    struct pgx_job *job;

    if (list_empty(q))
        return NULL;
    job = container_of(q->next, struct pgx_job, link);
    list_remove(&job->link);
    pool->nqueued--;
    return job;
}

/*
 * Whether a phase-1 job may take one more connection: one of those that can
 * work stays for phase 2, so that branches running long (a client's
 * pg_sleep, a lock wait) never hold back another transaction's COMMIT
 * PREPARED, and with it that transaction's locks. Phase-2 jobs come first
 * from the queue anyway; this keeps a connection for them to come to. (The
 * participant opens pool_size + 1 connections, so pool_size branches still
 * run at once.)
 */
static bool phase1_room(const struct pgx_pool *pool)
{
    int usable = 0, spare = 0;

    for (int i = 0; i < pool->opts.size; i++) {
        const struct pgx_conn *c = &pool->conns[i];

        if (c->state != C_IDLE && c->state != C_BUSY && c->state != C_HELD)
            continue;
        usable++;
        if (!c->phase1 && ++spare == 2)
            return true; /* one for this job, one kept: no need to look further */
    }
    return usable <= 1;
}

/* Gives an idle connection work: a batch of phase-2 jobs, or one phase-1 job. */
static void conn_take_work(struct pgx_conn *c)
{
    struct pgx_pool *pool = c->pool;
    struct pgx_job *job;
    int n = 0;

    while (n < PHASE2_BATCH && (job = dequeue(pool, &pool->queue2)) != NULL) {
        if (conn_send(c, job) < 0)
            goto broken;
        n++;
    }
    if (n == 0 && phase1_room(pool) && (job = dequeue(pool, &pool->queue1)) != NULL) {
        c->phase1 = true;
        if (conn_send(c, job) < 0)
            goto broken;
        n++;
    }
    if (n == 0)
        return;
    c->state = C_BUSY;
    if (flush(c) < 0)
        goto broken;
    return;
broken:
    conn_down(c, PQerrorMessage(c->pg));
}

static void on_kick(struct ev_loop *loop, struct ev_defer *d)
{
    struct pgx_pool *pool = d->data;

    (void)loop;
    for (int i = 0; i < pool->opts.size && pool->nqueued > 0; i++) {
        if (pool->conns[i].state == C_IDLE)
            conn_take_work(&pool->conns[i]);
    }
}

static void kick(struct pgx_pool *pool)
{
    ev_defer(pool->loop, &pool->kick);
}

/* ---- receiving ---------------------------------------------------------------- */

/*
 * Whether statement idx of job is a DISCARD ALL of pgx's: the cleanup job's,
 * or the one behind a client's job (idx == nstmts, send_behind).
 */
static bool is_discard(const struct pgx_conn *c, const struct pgx_job *job, int idx)
{
    if (idx >= job->nstmts)
        return job->trailing > 0;
    return job == &c->cleanup && idx >= 0 && job->stmts[idx].sql == cleanup_stmts[1].sql;
}

/* c's init is done (or it needs none): it takes work. */
static void conn_up(struct pgx_conn *c)
{
    c->backoff_ms = BACKOFF_MIN_MS; /* up: a refused one (job_complete) backs off */
    if (c->pool->last_error[0]) {
        log_info("postgresql: connection %d is up", c->id);
        c->pool->last_error[0] = '\0';
    }
    c->state = C_BUSY;
    conn_after_job(c);
}

/*
 * A job's last result arrived. A holding job leaves the connection HELD
 * before its callback runs, so the callback can send the next job on it;
 * the callback may also free the job, which is not touched afterwards.
 */
static void job_complete(struct pgx_conn *c, struct pgx_job *job)
{
    list_remove(&job->link);
    if (is_discard(c, job, job->nstmts + job->trailing - 1) && !c->cleanup_failed)
        c->dirty = false; /* it ended with a DISCARD ALL, which did its work */
    if (job == &c->init) {
        if (c->init_null) {
            conn_down(c, c->pool->opts.init_null_why ? c->pool->opts.init_null_why
                                                     : "the server cannot take work yet");
            return;
        }
        conn_up(c);
        return;
    }
    if (job == &c->cleanup) {
        c->cleaning = false;
        conn_after_job(c);
        return;
    }
    if (job->hold && list_empty(&c->inflight))
        c->state = C_HELD;
    job->on_done(job, 0, job->nstmts, NULL);
    if (c->state == C_BUSY)
        conn_after_job(c);
}

/* Routes one PGresult (or NULL) to the job at the head of the pipeline. */
static void dispatch_result(struct pgx_conn *c, PGresult *res)
{
    struct pgx_job *job = container_of(c->inflight.next, struct pgx_job, link);

    if (!res) {
        if (job->got) {
            job->got = false;
            job->row_mode = false;
            job->next++;
        }
    } else if (PQresultStatus(res) == PGRES_PIPELINE_SYNC) {
        PQclear(res);
        job->syncs--;
    } else {
        int idx = job->next;

        job->got = true;
        if (is_discard(c, job, idx) && PQresultStatus(res) != PGRES_COMMAND_OK)
            c->cleanup_failed = true; /* the session is not reset */
        if (idx >= job->nstmts || job == &c->cleanup)
            PQclear(res);
        else
            job->on_result(job, idx, res);
    }
    if (job->syncs == 0 && job->next == job->nstmts + job->trailing)
        job_complete(c, job);
}

/* Reads and drops the notifications libpq has (a branch LISTENed); says so at most once a minute.
 */
static void drop_notifies(struct pgx_conn *c)
{
    struct pgx_pool *pool = c->pool;
    PGnotify *n;
    uint64_t now;

    while ((n = PQnotifies(c->pg)) != NULL) {
        pool->notifies_dropped++;
        PQfreemem(n);
    }
    now = ev_clock_us();
    if (pool->notifies_dropped > pool->notifies_logged && now - pool->notifies_log_us > 60000000u) {
        log_warn("postgresql: dropped %" PRIu64 " notification(s) on the pool's connections: a "
                 "branch ran LISTEN; dtx delivers no notifications",
                 pool->notifies_dropped - pool->notifies_logged);
        pool->notifies_logged = pool->notifies_dropped;
        pool->notifies_log_us = now;
    }
}

/*
 * Before libpq parses anything of the next statement's result: single-row
 * mode, when its job asks for it. libpq accepts it only while the
 * statement is the one being processed and nothing of its result was read
 * (before that, a Sync is, and the call is refused: it is tried again).
 */
static void arm_row_mode(struct pgx_conn *c)
{
    struct pgx_job *job = container_of(c->inflight.next, struct pgx_job, link);
    int idx = job->next;

    if (!job->row_mode && !job->got && idx >= job->rows_first &&
        idx < job->rows_first + job->rows_count)
        job->row_mode = PQsetSingleRowMode(c->pg) == 1;
}

static void conn_read(struct pgx_conn *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    while (c->state != C_DOWN && !list_empty(&c->inflight)) {
        arm_row_mode(c);
        if (PQisBusy(c->pg))
            break;
        dispatch_result(c, PQgetResult(c->pg));
    }
    if (c->state != C_DOWN)
        drop_notifies(c);
    if (c->state != C_DOWN && PQstatus(c->pg) == CONNECTION_BAD)
        conn_down(c, PQerrorMessage(c->pg));
}

/* Closes a doomed connection (nothing in flight) and opens a new one in its place. */
static void conn_recycle(struct pgx_conn *c)
{
    conn_close(c);
    conn_connect(c);
}

/* The pipeline emptied and nobody holds the connection: clean up or take new work. */
static void conn_after_job(struct pgx_conn *c)
{
    PGTransactionStatusType ts;

    if (!list_empty(&c->inflight) || c->state != C_BUSY)
        return;
    if (c->doomed) {
        conn_recycle(c); /* a late cancel must not hit the next job (see the top) */
        return;
    }
    ts = PQtransactionStatus(c->pg);
    if (ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR || c->dirty) {
        bool rollback = ts == PQTRANS_INTRANS || ts == PQTRANS_INERROR;

        c->cleaning = true;
        c->cleanup_failed = false;
        c->cleanup.stmts = rollback ? cleanup_stmts : &cleanup_stmts[1];
        c->cleanup.nstmts = (rollback ? 1 : 0) + (c->dirty ? 1 : 0);
        if (conn_send(c, &c->cleanup) < 0 || flush(c) < 0)
            conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = C_IDLE;
    c->phase1 = false;
    if (c->pool->nqueued > 0)
        conn_take_work(c);
}

/* ---- connecting ------------------------------------------------------------------ */

static void conn_ready(struct pgx_conn *c)
{
    struct pgx_pool *pool = c->pool;

    if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    ev_timer_stop(pool->loop, &c->retry);
    c->state = C_IDLE;
    watch(c, false);
    if (pool->opts.on_connect)
        pool->opts.on_connect(pool->opts.arg, c->pg);
    c->value[0] = '\0';
    c->init_null = false;
    if (!pool->opts.init_sql) {
        conn_up(c);
        return;
    }
    c->state = C_INIT; /* the init job first, then the queue */
    if (conn_send(c, &c->init) < 0 || flush(c) < 0)
        conn_down(c, PQerrorMessage(c->pg));
}

/*
 * Watches the connection's socket for events. While connecting, libpq may
 * close its socket and open another (the next host or address of the
 * conninfo, an SSL fallback), possibly under the same number, so the
 * watcher is registered anew after every PQconnectPoll.
 */
static int rewatch(struct pgx_conn *c, uint32_t events)
{
    ev_io_stop(c->pool->loop, &c->io);
    return ev_io_start(c->pool->loop, &c->io, PQsocket(c->pg), events);
}

static void conn_poll(struct pgx_conn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->pg);

    if (st == PGRES_POLLING_FAILED) {
        conn_down(c, PQerrorMessage(c->pg));
    } else if (rewatch(c, st == PGRES_POLLING_WRITING ? EPOLLOUT : EPOLLIN) < 0) {
        conn_down(c, "could not watch the connection's socket");
    } else if (st == PGRES_POLLING_OK) {
        conn_ready(c);
    }
}

static void on_conn_io(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct pgx_conn *c = io->data;

    (void)loop;
    if (c->state == C_CONNECTING) {
        conn_poll(c);
        return;
    }
    if ((revents & EPOLLOUT) && flush(c) < 0) {
        conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    if (revents & (EPOLLIN | EPOLLHUP | EPOLLERR))
        conn_read(c);
}

static void conn_connect(struct pgx_conn *c)
{
    struct pgx_pool *pool = c->pool;

    c->pg = pool->keys ? PQconnectStartParams((const char *const *)pool->keys,
                                              (const char *const *)pool->vals, 0)
                       : PQconnectStart(pool->conninfo); /* to report why it does not parse */
    if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
        conn_down(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
        return;
    }
    pgx_log_notices(c->pg, &pool->notices);
    c->state = C_CONNECTING;
    ev_timer_start(pool->loop, &c->retry, CONNECT_TIMEOUT_MS);
    if (rewatch(c, EPOLLOUT) < 0) /* libpq: before the first poll, wait to write */
        conn_down(c, "could not watch the connection's socket");
}

static void on_retry(struct ev_loop *loop, struct ev_timer *t)
{
    struct pgx_conn *c = t->data;

    (void)loop;
    if (c->state == C_CONNECTING)
        conn_down(c, "timed out connecting");
    else
        conn_connect(c);
}

/* ---- API -------------------------------------------------------------------------- */

static void cleanup_result(struct pgx_job *job, int idx, PGresult *res)
{
    (void)job;
    (void)idx;
    PQclear(res);
}

static void init_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pgx_conn *c = job->data;
    bool one = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) >= 1;

    (void)idx;
    if (one && PQgetisnull(res, 0, 0))
        c->init_null = true;
    else if (one)
        snprintf(c->value, sizeof(c->value), "%s", PQgetvalue(res, 0, 0));
    PQclear(res);
}

const char *pgx_conn_value(const struct pgx_conn *conn)
{
    return conn ? conn->value : "";
}

static void cleanup_done(struct pgx_job *job, int rc, int n, const char *why)
{
    (void)job;
    (void)rc;
    (void)n;
    (void)why;
}

/*
 * The conninfo as keywords and values for PQconnectStartParams, with
 * PGX_SESSION_OPTIONS (and the check interval) behind the operator's own
 * options (a later -c wins over an earlier one for the same setting). A
 * conninfo that does not parse is left to PQconnectStart, which says why at
 * each attempt.
 */
static void parse_conninfo(struct pgx_pool *pool)
{
    PQconninfoOption *parsed = PQconninfoParse(pool->conninfo, NULL);
    size_t n = 0, k = 0;
    char ours[128];

    if (!parsed)
        return;
    if (pool->opts.check_client_ms)
        snprintf(ours, sizeof(ours), "%s -c client_connection_check_interval=%u",
                 PGX_SESSION_OPTIONS, pool->opts.check_client_ms);
    else
        snprintf(ours, sizeof(ours), "%s", PGX_SESSION_OPTIONS);
    for (const PQconninfoOption *o = parsed; o->keyword; o++)
        n++;
    pool->keys = xcalloc(n + 1, sizeof(*pool->keys));
    pool->vals = xcalloc(n + 1, sizeof(*pool->vals));
    for (const PQconninfoOption *o = parsed; o->keyword; o++) {
        if (strcmp(o->keyword, "options") == 0) {
            pool->vals[k] = o->val && o->val[0] ? xasprintf("%s %s", o->val, ours) : xstrdup(ours);
        } else if (o->val) {
            pool->vals[k] = xstrdup(o->val);
        } else {
            continue;
        }
        pool->keys[k++] = xstrdup(o->keyword);
    }
    PQconninfoFree(parsed); /* it lists every keyword libpq knows, "options" too */
}

struct pgx_pool *pgx_pool_new(struct ev_loop *loop, const struct pgx_opts *opts)
{
    struct pgx_pool *pool = xcalloc(1, sizeof(*pool));

    pool->conninfo = xstrdup(opts->conninfo);
    pool->loop = loop;
    pool->opts = *opts;
    pool->opts.conninfo = pool->conninfo;
    parse_conninfo(pool);
    list_init(&pool->queue1);
    list_init(&pool->queue2);
    ev_defer_init(&pool->kick, on_kick, pool);
    pool->conns = xcalloc((size_t)opts->size, sizeof(*pool->conns));
    for (int i = 0; i < opts->size; i++) {
        struct pgx_conn *c = &pool->conns[i];

        c->pool = pool;
        c->id = i;
        c->backoff_ms = BACKOFF_MIN_MS;
        list_init(&c->inflight);
        ev_io_init(&c->io, on_conn_io, c);
        ev_timer_init(&c->retry, on_retry, c);
        c->cleanup = (struct pgx_job){.stmts = cleanup_stmts,
                                      .nstmts = 1,
                                      .phase2 = true,
                                      .on_result = cleanup_result,
                                      .on_done = cleanup_done};
        list_init(&c->cleanup.link);
        c->init_stmt = (struct pgx_stmt){opts->init_sql, 0, NULL, true};
        c->init = (struct pgx_job){.stmts = &c->init_stmt,
                                   .nstmts = 1,
                                   .phase2 = true,
                                   .on_result = init_result,
                                   .on_done = cleanup_done,
                                   .data = c};
        list_init(&c->init.link);
        conn_connect(c);
    }
    return pool;
}

void pgx_pool_free(struct pgx_pool *pool)
{
    if (!pool)
        return;
    for (int i = 0; i < pool->opts.size; i++) {
        struct pgx_conn *c = &pool->conns[i];

        ev_io_stop(pool->loop, &c->io);
        ev_timer_stop(pool->loop, &c->retry);
        if (c->pg)
            PQfinish(c->pg);
    }
    ev_defer_cancel(pool->loop, &pool->kick);
    free(pool->conns);
    for (int i = 0; pool->keys && pool->keys[i]; i++) {
        free(pool->keys[i]);
        free(pool->vals[i]);
    }
    free(pool->keys);
    free(pool->vals);
    free(pool->conninfo);
    free(pool);
}

void pgx_submit(struct pgx_pool *pool, struct pgx_job *job)
{
    job->sent = false;
    job->conn = NULL;
    list_insert_tail(job->phase2 ? &pool->queue2 : &pool->queue1, &job->link);
    pool->nqueued++;
    kick(pool);
}

int pgx_submit_on(struct pgx_conn *c, uint64_t gen, struct pgx_job *job)
{
    if (c->state != C_HELD || c->gen != gen)
        return DTX_EUNAVAIL; /* lost while held (and perhaps held by someone else since) */
    if (conn_send(c, job) < 0) {
        conn_down(c, PQerrorMessage(c->pg));
        return 0; /* in flight: conn_down answered it */
    }
    c->state = C_BUSY;
    if (flush(c) < 0)
        conn_down(c, PQerrorMessage(c->pg));
    return 0;
}

/*
 * Sends a cancel request on a thread of its own: PQcancel() opens a new
 * connection to the server and waits for it, which must not stall the
 * loop when the database host is slow or unreachable.
 */
static void *cancel_main(void *arg)
{
    PGcancel *pc = arg;
    char errbuf[256];

    if (!PQcancel(pc, errbuf, sizeof(errbuf)))
        log_warn("postgresql: could not send a cancel request: %s", errbuf);
    PQfreeCancel(pc);
    return NULL;
}

static void send_cancel(PGconn *pg)
{
    PGcancel *pc = PQgetCancel(pg);
    pthread_attr_t attr;
    pthread_t t;
    int rc;

    if (!pc) {
        log_warn("postgresql: could not prepare a cancel request");
        return;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    rc = pthread_create(&t, &attr, cancel_main, pc);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        cancel_main(pc); /* no thread to be had: block rather than not cancel */
}

int pgx_cancel(struct pgx_pool *pool, struct pgx_job *job)
{
    if (!list_linked(&job->link))
        return 0; /* finished (or holding its connection idle): nothing runs */
    if (!job->sent) {
        list_remove(&job->link);
        pool->nqueued--;
        job->on_done(job, DTX_EABORTED, 0, "cancelled before it started");
        return 0;
    }
    if (job->conn && job->conn->pg) {
        job->conn->doomed = true;
        send_cancel(job->conn->pg);
    }
    return 0;
}

int pgx_pool_up(const struct pgx_pool *pool)
{
    int n = 0;

    for (int i = 0; i < pool->opts.size; i++)
        n += pool->conns[i].state >= C_IDLE;
    return n;
}

const char *pgx_pool_error(const struct pgx_pool *pool)
{
    return pool->last_error;
}

int pgx_pool_queued(const struct pgx_pool *pool)
{
    return pool->nqueued;
}
