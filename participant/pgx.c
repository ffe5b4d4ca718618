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
 * statement_timeout: a job's SET is sent in front of it with its own
 * Sync, so it commits on its own and no rollback of the job's transaction
 * can undo it; the connection remembers the value to skip the SET next
 * time (TIMEOUT_UNKNOWN after a failed SET). The session's default, which
 * DISCARD ALL sets it back to, is read once after connecting (the init job).
 * (A branch sets its own with SET LOCAL inside its transaction and asks
 * pgx for none: rm_pg_run.c.)
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
#define TIMEOUT_UNKNOWN    UINT32_MAX
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
    uint32_t timeout_ms;       /* the session's statement_timeout, or TIMEOUT_UNKNOWN */
    struct pgx_job cleanup;    /* internal ROLLBACK and/or DISCARD ALL */
    bool cleaning;
    bool dirty;          /* ran a client's SQL since its last DISCARD ALL */
    bool cleanup_failed; /* the DISCARD ALL in flight (cleanup job or behind a job) failed */
    bool doomed;         /* a cancel request was sent for it: closed, never reused */
    char set_timeout[64];
    struct pgx_stmt pre[1];
    struct pgx_job init; /* internal, once after connecting: the default timeout, init_sql */
    struct pgx_stmt init_stmts[2];
    uint32_t default_timeout_ms; /* statement_timeout after DISCARD ALL, or TIMEOUT_UNKNOWN */
    char value[64];              /* what init_sql gave */
    bool init_null;              /* init_sql gave NULL: the server cannot take work */
};

struct pgx_pool {
    struct ev_loop *loop;
    struct pgx_opts opts;
    char *conninfo;
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

/*
 * The statement_timeout job needs set first, or 0 to send it as is. Never
 * inside an open transaction block (a held connection), where a SET would
 * roll back with the transaction.
 */
static uint32_t timeout_to_set(struct pgx_conn *c, const struct pgx_job *job)
{
    if (list_empty(&c->inflight) && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return 0;
    if (job->timeout_ms)
        return job->timeout_ms != c->timeout_ms ? job->timeout_ms : 0;
    if (c->timeout_ms == TIMEOUT_UNKNOWN ||
        (c->timeout_ms != 0 && c->timeout_ms < PGX_RELAXED_TIMEOUT_MS))
        return TIMEOUT_UNKNOWN; /* stands for "SET statement_timeout = 0" */
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
    uint32_t set = job == &c->init ? 0 : timeout_to_set(c, job); /* init reads the default */

    job->conn = c;
    job->conn_gen = c->gen;
    job->next = 0;
    job->got = false;
    job->row_mode = false;
    job->internal = 0;
    job->trailing = 0;
    job->syncs = 0;
    job->sent = true;
    c->dirty |= job->untrusted;
    list_insert_tail(&c->inflight, &job->link);
    if (set) {
        c->timeout_ms = set == TIMEOUT_UNKNOWN ? 0 : set;
        snprintf(c->set_timeout, sizeof(c->set_timeout), "SET statement_timeout = %u",
                 c->timeout_ms);
        c->pre[0] = (struct pgx_stmt){c->set_timeout, 0, NULL, true};
        job->internal = 1;
        job->syncs = 1;
        if (send_stmt(c, &c->pre[0]) < 0)
            return -1;
    }
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
    c->cleanup.timeout_ms = c->timeout_ms == TIMEOUT_UNKNOWN ? 0 : c->timeout_ms; /* no SET */
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
        int answered = job->next - job->internal;

        if (answered > job->nstmts)
            answered = job->nstmts; /* and the DISCARD behind it */
        list_remove(&job->link);
        job->conn = NULL;
        if (job == &c->cleanup)
            continue;
        job->on_done(job, DTX_EUNAVAIL, answered < 0 ? 0 : answered, why);
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
    c->timeout_ms = TIMEOUT_UNKNOWN;
    c->cleaning = false;
    c->doomed = false;
    c->dirty = false;
}

static void conn_down(struct pgx_conn *c, const char *why)
{
    struct pgx_pool *pool = c->pool;
    char reason[256];

    snprintf(reason, sizeof(reason), "%s", why);
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
    if (n == 0 && (job = dequeue(pool, &pool->queue1)) != NULL) {
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
 * A job's last result arrived. A holding job leaves the connection HELD
 * before its callback runs, so the callback can send the next job on it;
 * the callback may also free the job, which is not touched afterwards.
 */
static void job_complete(struct pgx_conn *c, struct pgx_job *job)
{
    list_remove(&job->link);
    if (job == &c->init) {
        if (c->init_null) {
            conn_down(c, c->pool->opts.init_null_why ? c->pool->opts.init_null_why
                                                     : "the server cannot take work yet");
            return;
        }
        c->backoff_ms = BACKOFF_MIN_MS; /* up: a refused one (above) backs off */
        if (c->pool->last_error[0]) {
            log_info("postgresql: connection %d is up", c->id);
            c->pool->last_error[0] = '\0';
        }
        c->timeout_ms = c->default_timeout_ms;
        c->state = C_BUSY;
        conn_after_job(c);
        return;
    }
    if (job == &c->cleanup) {
        c->cleaning = false;
        if (job->stmts + job->nstmts == cleanup_stmts + 2 && !c->cleanup_failed) {
            c->dirty = false; /* it ended with DISCARD ALL, which did its work */
            c->timeout_ms = c->default_timeout_ms; /* DISCARD ALL reset it */
        }
        conn_after_job(c);
        return;
    }
    if (job->trailing && !c->cleanup_failed) {
        c->dirty = false; /* its DISCARD ALL did its work */
        c->timeout_ms = c->default_timeout_ms;
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
        int idx = job->next - job->internal;

        job->got = true;
        if (idx < 0 && PQresultStatus(res) != PGRES_COMMAND_OK)
            c->timeout_ms = TIMEOUT_UNKNOWN; /* the SET failed */
        if (((job == &c->cleanup && idx >= 0 && job->stmts[idx].sql == cleanup_stmts[1].sql) ||
             idx >= job->nstmts) &&
            PQresultStatus(res) != PGRES_COMMAND_OK)
            c->cleanup_failed = true; /* a DISCARD ALL: the session is not reset */
        if (idx < 0 || idx >= job->nstmts || job == &c->cleanup)
            PQclear(res);
        else
            job->on_result(job, idx, res);
    }
    if (job->syncs == 0 && job->next == job->nstmts + job->internal + job->trailing)
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
    int idx = job->next - job->internal;

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
        c->cleanup.timeout_ms = 0;
        if (conn_send(c, &c->cleanup) < 0 || flush(c) < 0)
            conn_down(c, PQerrorMessage(c->pg));
        return;
    }
    c->state = C_IDLE;
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
    c->timeout_ms = TIMEOUT_UNKNOWN;
    c->state = C_IDLE;
    watch(c, false);
    if (pool->opts.on_connect)
        pool->opts.on_connect(pool->opts.arg, c->pg);
    c->value[0] = '\0';
    c->init_null = false;
    c->default_timeout_ms = TIMEOUT_UNKNOWN;
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

    c->pg = PQconnectStart(pool->conninfo);
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

/* statement_timeout as PostgreSQL shows it ("0", "250ms", "5s", "2min", "1h", "1d") in ms. */
static uint32_t parse_timeout(const char *s)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"", 1}, {"ms", 1}, {"s", 1000}, {"min", 60000}, {"h", 3600000}, {"d", 86400000}};
    char *end;
    uint64_t n;

    errno = 0;
    n = strtoull(s, &end, 10);
    if (errno || end == s)
        return TIMEOUT_UNKNOWN;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (strcmp(end, units[i].unit) == 0)
            return n * units[i].ms < TIMEOUT_UNKNOWN ? (uint32_t)(n * units[i].ms)
                                                     : TIMEOUT_UNKNOWN;
    }
    return TIMEOUT_UNKNOWN;
}

static void init_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pgx_conn *c = job->data;
    bool one = PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 && PQnfields(res) >= 1;

    if (one && idx == 0) /* what DISCARD ALL will set it back to: no SET needed for that */
        c->default_timeout_ms = parse_timeout(PQgetvalue(res, 0, 0));
    else if (one && PQgetisnull(res, 0, 0))
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

struct pgx_pool *pgx_pool_new(struct ev_loop *loop, const struct pgx_opts *opts)
{
    struct pgx_pool *pool = xcalloc(1, sizeof(*pool));

    pool->conninfo = xstrdup(opts->conninfo);
    pool->loop = loop;
    pool->opts = *opts;
    pool->opts.conninfo = pool->conninfo;
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
        c->init_stmts[0] =
            (struct pgx_stmt){"SELECT current_setting('statement_timeout')", 0, NULL, true};
        c->init_stmts[1] = (struct pgx_stmt){opts->init_sql, 0, NULL, true};
        c->init = (struct pgx_job){.stmts = c->init_stmts,
                                   .nstmts = opts->init_sql ? 2 : 1,
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
