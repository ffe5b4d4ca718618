/*
 * dstore_pg.c - the decision store on PostgreSQL (dstore_pg.h): the lease
 * a node's active process holds, its claim by a process that waits, and
 * the store itself.
 *
 * Group commit: the queue (dstore_queue.h) is the file log's; the writer
 * thread writes each batch with one statement, which is one round trip
 * and one commit (made durable, and replicated, as the store's database is
 * configured to do):
 *
 *   SELECT dtx_store.append(node, term, pos, before, snapshot, records, lease_ms)
 *
 * Each non-NULL part becomes one row of dtx_store.records at the next
 * position; a snapshot's row deletes every older row of the node (the
 * checkpoint). The function first locks the node's lease row and refuses
 * (DX002) unless the row still names this term: a takeover updates that
 * row, so it waits for any write in flight, and every write after it is
 * refused. A process cut off from the store can therefore never write a
 * decision once another process has taken over and read the records.
 *
 * The lease: each write renews it as it ends, and the writer renews it
 * when lease_ms / 3 has passed without a write. A renewal that finds
 * another term fails the store at once; one that cannot reach the store is
 * retried (reconnecting) until a quarter of the lease is left, then fails
 * the store. A write whose answer is lost (the connection broke) fails the
 * store too: it may or may not have committed, and only a new run's replay
 * can tell. Every call is bounded by libpq's tcp_user_timeout and
 * keepalives, set from the lease (the conninfo may override them), so a
 * partition fails calls, never hangs them. The lease's calls and the
 * writes are also bounded on this side (exec_bounded: three quarters of
 * the lease), for a server that keeps its connection but answers nothing
 * (stopped, or its disk hung), where neither the server's
 * statement_timeout nor the kernel's timeouts ever fire.
 *
 * A large write's bound grows with its size (write_bound), on both sides:
 * a checkpoint of tens of MB of answers kept for idempotency keys may take
 * the store longer than the lease lasts. Cut at three quarters of the
 * lease, it made every process of the node step down in turn while writing
 * its first checkpoint, so that none ever decided again. Such a write
 * holds the lease row from its start to its commit (write_batch), so the
 * lease cannot run out under it.
 *
 * Thread model: the claim has a thread of its own until it is granted; the
 * store, a writer thread that owns its connection after open; both report
 * to the loop through an ev_async. Replay runs on the loop thread inside
 * dstore_pg_open, before the writer starts.
 */
#include "dtx/dstore_pg.h"

#include "dstore_queue.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BYTEAOID           17
#define CKPT_BYTES         (16u * 1024 * 1024) /* a checkpoint after this much was written */
#define RECONNECT_PAUSE_MS 200
/*
 * A write of LARGE_WRITE_BYTES or more (a checkpoint with answers kept for
 * idempotency keys) gets a bound that grows by its size over the slowest a
 * store may take it and still be thought alive: 128 MiB (the most
 * retention_max_bytes keeps) within 64 s more than a small write. Smaller
 * writes, every group commit, keep three quarters of the lease and cost no
 * more round trips.
 */
#define LARGE_WRITE_BYTES         (1024u * 1024)
#define SLOWEST_STORE_BYTES_PER_S (2u * 1024 * 1024)
/* sql/store/'s version: raise it with every change there (dtx_store.schema_version). */
#define STORE_SCHEMA_VERSION 2

extern const char dstore_pg_schema_sql[]; /* sql/store/, embedded by the Makefile */

/* ---- connections ------------------------------------------------------------------- */

/* What a connection's server is set to, for the warnings of the process that becomes active. */
struct store_settings {
    bool fsync_off;       /* allowed (allow_fsync_off), or the connection was refused */
    char sync_commit[16]; /* the database's synchronous_commit when weaker than on ("": not) */
    bool no_sync_standby; /* synchronous_standby_names is empty */
};

/*
 * The server's notices. A WARNING while a write commits is kept (warning, when not NULL,
 * holds DTX_ERR_MSG_MAX bytes): a cancelled wait for the synchronous standby commits
 * locally with only a warning, and then the record may be missing on the standby that a
 * failover promotes. Everything else is left unsaid.
 */
static void on_notice(void *arg, const PGresult *res)
{
    char *warning = arg;
    const char *sev = PQresultErrorField(res, PG_DIAG_SEVERITY_NONLOCALIZED);
    const char *msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    if (warning && !warning[0] && sev && strcmp(sev, "WARNING") == 0)
        snprintf(warning, DTX_ERR_MSG_MAX, "%s", msg ? msg : "(no message)");
}

/*
 * Refuses a server that runs with fsync = off unless allowed: a crash of it can lose
 * decisions clients were told of, and presumed abort would then split them. A database
 * set to a synchronous_commit weaker than on (off; local and remote_write, which do not
 * wait for the synchronous standby's flush) gets it on for this session: a decision is
 * acknowledged only once it is durable, on the synchronous standby too when the server
 * has one (remote_apply, stronger, is kept).
 */
static int check_settings(PGconn *c, bool allow_fsync_off, struct store_settings *st,
                          struct dtx_err *err)
{
    PGresult *res = PQexec(c, "SELECT current_setting('fsync'), "
                              "current_setting('synchronous_commit'), "
                              "current_setting('synchronous_standby_names')");
    int rc = 0;

    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        rc = dtx_err_set(err, DTX_EIO, "could not read the decision store's settings: %s",
                         PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    st->fsync_off = strcmp(PQgetvalue(res, 0, 0), "off") == 0;
    st->sync_commit[0] = '\0';
    if (strcmp(PQgetvalue(res, 0, 1), "on") != 0 &&
        strcmp(PQgetvalue(res, 0, 1), "remote_apply") != 0)
        snprintf(st->sync_commit, sizeof(st->sync_commit), "%s", PQgetvalue(res, 0, 1));
    st->no_sync_standby = PQgetvalue(res, 0, 2)[0] == '\0';
    PQclear(res);
    if (st->fsync_off && !allow_fsync_off)
        return dtx_err_set(err, DTX_EIO,
                           "the decision store's PostgreSQL runs with fsync = off: a crash of it "
                           "could lose decisions already answered; set fsync = on (or, for a "
                           "throwaway test store only, 'decision_store.allow_fsync_off')");
    if (st->sync_commit[0]) {
        res = PQexec(c, "SET synchronous_commit = on");
        if (PQresultStatus(res) != PGRES_COMMAND_OK)
            rc = dtx_err_set(err, DTX_EIO, "could not set synchronous_commit = on: %s",
                             PQresultErrorMessage(res));
        PQclear(res);
    }
    return rc;
}

/*
 * No statement of the store may wait longer than three quarters of a lease (a lock held on
 * its rows, a server that stopped answering over a healthy connection): by then the lease
 * may be another process's, so the statement fails, and with it the store, and this process
 * steps down instead of hanging while it still looks active.
 */
static int bound_statements(PGconn *c, uint32_t lease_ms, struct dtx_err *err)
{
    char sql[128];
    PGresult *res;
    int rc = 0;

    snprintf(sql, sizeof(sql), "SET statement_timeout = %u; SET lock_timeout = %u",
             lease_ms * 3 / 4, lease_ms * 3 / 4);
    res = PQexec(c, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = dtx_err_set(err, DTX_EIO, "could not bound the decision store's statements: %s",
                         PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

/* The store's schema version (0: none yet), inside ensure_schema's transaction; -1 on error. */
static int schema_version(PGconn *c, struct dtx_err *err)
{
    PGresult *res = PQexec(c, "SELECT to_regclass('dtx_store.schema_version') IS NOT NULL");
    int v = -1;

    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "f") == 0) {
        v = 0;
    } else if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        PQclear(res);
        res = PQexec(c, "SELECT coalesce(max(version), 0) FROM dtx_store.schema_version");
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            v = atoi(PQgetvalue(res, 0, 0));
    }
    if (v < 0)
        dtx_err_set(err, DTX_EIO, "could not read the decision store's schema version: %s",
                    PQresultErrorMessage(res));
    PQclear(res);
    return v;
}

/*
 * Creates the schema (sql/store/) when the store has none or an older version, in one
 * transaction under a lock (coordinators starting together do not race); a store of a newer
 * version is refused: this coordinator does not know its functions.
 */
static int ensure_schema(PGconn *c, struct dtx_err *err)
{
    char upsert[160];
    PGresult *res = PQexec(c, "BEGIN; SELECT pg_advisory_xact_lock(hashtext('dtx_store schema'))");
    int rc = 0, v;

    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        rc = dtx_err_set(err, DTX_EIO, "could not lock the decision store's schema: %s",
                         PQresultErrorMessage(res));
        PQclear(res);
        return rc;
    }
    PQclear(res);
    v = schema_version(c, err);
    if (v < 0)
        return DTX_EIO;
    if (v > STORE_SCHEMA_VERSION)
        return dtx_err_set(err, DTX_EIO,
                           "the decision store's schema (dtx_store) is version %d, newer than "
                           "this coordinator's (%d): run the newer coordinator",
                           v, STORE_SCHEMA_VERSION);
    res = PQexec(c, v == STORE_SCHEMA_VERSION ? "SELECT 1" : dstore_pg_schema_sql);
    if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
        PQclear(res);
        snprintf(upsert, sizeof(upsert),
                 "INSERT INTO dtx_store.schema_version VALUES (true, %d) ON CONFLICT (one) DO "
                 "UPDATE SET version = excluded.version",
                 STORE_SCHEMA_VERSION);
        res = PQexec(c, v == STORE_SCHEMA_VERSION ? "SELECT 1" : upsert);
    }
    if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK) {
        PQclear(res);
        res = PQexec(c, "COMMIT");
    }
    if (PQresultStatus(res) != PGRES_COMMAND_OK)
        rc = dtx_err_set(err, DTX_EIO,
                         "could not create the decision store's schema (dtx_store): %s",
                         PQresultErrorMessage(res));
    PQclear(res);
    return rc;
}

/*
 * Connects with timeouts derived from the lease (the conninfo's own
 * settings win: they come after), checks the server's durability
 * settings (check_settings; st may be NULL), keeps warnings in warning
 * (on_notice; NULL: none kept), and makes sure the schema exists.
 */
static PGconn *store_connect(const char *conninfo, uint32_t lease_ms, bool allow_fsync_off,
                             char *warning, struct store_settings *st, struct dtx_err *err)
{
    struct store_settings unused;
    char user_timeout[16], idle[16], connect[16];
    const char *keys[] = {"application_name", "connect_timeout", "tcp_user_timeout",
                          "keepalives",       "keepalives_idle", "keepalives_interval",
                          "keepalives_count", "dbname",          NULL};
    const char *vals[] = {"dtx-coordinator", connect, user_timeout, "1", idle, "1", "2",
                          conninfo,          NULL};
    PGconn *c;

    snprintf(user_timeout, sizeof(user_timeout), "%u", lease_ms / 3);
    snprintf(idle, sizeof(idle), "%u", lease_ms / 3000 > 0 ? lease_ms / 3000 : 1);
    snprintf(connect, sizeof(connect), "%u", lease_ms / 2000 > 2 ? lease_ms / 2000 : 2);
    c = PQconnectdbParams(keys, vals, 1);
    if (!c || PQstatus(c) != CONNECTION_OK) {
        dtx_err_set(err, DTX_EIO, "could not connect to the decision store: %s",
                    c ? PQerrorMessage(c) : "out of memory");
        PQfinish(c);
        return NULL;
    }
    PQsetNoticeReceiver(c, on_notice, warning);
    if (bound_statements(c, lease_ms, err) < 0 ||
        check_settings(c, allow_fsync_off, st ? st : &unused, err) < 0) {
        PQfinish(c);
        return NULL;
    }
    if (ensure_schema(c, err) < 0) {
        PQfinish(c);
        return NULL;
    }
    return c;
}

/* The error of a failed statement, as one line: its SQLSTATE and message. */
static void statement_error(struct dtx_err *err, int code, const char *what, PGconn *c,
                            const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg =
        res && *PQresultErrorMessage(res) ? PQresultErrorMessage(res) : PQerrorMessage(c);
    size_t n = strcspn(msg, "\n");

    dtx_err_set(err, code, "%s: %.*s%s%s%s", what, (int)n, msg, state ? " (SQLSTATE " : "",
                state ? state : "", state ? ")" : "");
}

/* Waits until c's socket is ready for events; false when deadline_us passed first (*late). */
static bool wait_socket(PGconn *c, short events, uint64_t deadline_us, bool *late)
{
    for (;;) {
        uint64_t now = ev_clock_us();
        struct pollfd p = {.fd = PQsocket(c), .events = events};
        int r;

        if (now >= deadline_us) {
            *late = true;
            return false;
        }
        r = poll(&p, 1, (int)((deadline_us - now + 999) / 1000));
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

/*
 * PQexecParams that gives up after within_ms on this side's clock: NULL,
 * with *late, when the store has not answered by then (the connection is
 * then in the middle of a call: drop it). NULL without *late for a
 * connection that failed (PQerrorMessage says why); else the last result.
 */
static PGresult *exec_bounded(PGconn *c, uint32_t within_ms, const char *sql, int n,
                              const Oid *types, const char *const *vals, const int *lens,
                              const int *fmts, bool *late)
{
    uint64_t deadline = ev_clock_us() + (uint64_t)within_ms * 1000u;
    PGresult *res, *last = NULL;
    int flushing;

    *late = false;
    if (PQsetnonblocking(c, 1) != 0 || !PQsendQueryParams(c, sql, n, types, vals, lens, fmts, 0))
        return NULL;
    while ((flushing = PQflush(c)) == 1) { /* a big batch: the rest as the socket takes it */
        if (!wait_socket(c, POLLOUT | POLLIN, deadline, late) || !PQconsumeInput(c))
            return NULL;
    }
    if (flushing < 0)
        return NULL;
    for (;;) {
        while (PQisBusy(c)) {
            if (!wait_socket(c, POLLIN, deadline, late) || !PQconsumeInput(c)) {
                PQclear(last);
                return NULL;
            }
        }
        if (!(res = PQgetResult(c)))
            break;
        PQclear(last);
        last = res;
    }
    PQsetnonblocking(c, 0);
    return last;
}

/* The error of a bounded call: it timed out (late), or statement_error's. */
static void bounded_error(struct dtx_err *err, int code, const char *what, PGconn *c,
                          const PGresult *res, bool late, uint32_t within_ms)
{
    if (late)
        dtx_err_set(err, code, "%s: the decision store did not answer within %u ms", what,
                    within_ms);
    else
        statement_error(err, code, what, c, res);
}

static bool is_fenced(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    return state && strcmp(state, "DX002") == 0;
}

/* ---- the claim ----------------------------------------------------------------- */

struct dstore_pg_claim {
    char *conninfo, *node, *holder;
    uint32_t lease_ms;
    struct ev_loop *loop;
    dstore_pg_granted_fn granted;
    void *arg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool allow_fsync_off;
    bool stopping;               /* (mu) */
    bool got;                    /* (mu) the lease is this process's ... */
    uint64_t term;               /* (mu) ... under this term (or the holder's) */
    char seen_holder[64];        /* (mu) */
    int64_t expires_in_ms;       /* (mu) */
    char error[DTX_ERR_MSG_MAX]; /* (mu) the last failure to reach the store ("" none) */
    struct ev_async wake;
    bool told;
};

static void claim_wait(struct dstore_pg_claim *c, uint32_t ms)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&c->mu);
    if (!c->stopping)
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    pthread_mutex_unlock(&c->mu);
}

static void claim_error(struct dstore_pg_claim *c, const struct dtx_err *err)
{
    pthread_mutex_lock(&c->mu);
    if (strcmp(c->error, err->msg) != 0)
        log_warn("decision store: %s; trying again", err->msg);
    snprintf(c->error, sizeof(c->error), "%s", err->msg);
    pthread_mutex_unlock(&c->mu);
}

/* One attempt: true once the lease is this process's. */
static bool claim_try(struct dstore_pg_claim *c, PGconn *conn, uint32_t *wait_ms)
{
    char lease[16];
    const char *vals[] = {c->node, c->holder, lease};
    PGresult *res;
    struct dtx_err err;
    bool got, late;

    snprintf(lease, sizeof(lease), "%u", c->lease_ms);
    res = exec_bounded(conn, c->lease_ms * 3 / 4,
                       "SELECT * FROM dtx_store.acquire($1, $2, $3::integer)", 3, NULL, vals, NULL,
                       NULL, &late);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        dtx_err_clear(&err);
        bounded_error(&err, DTX_EIO, "could not ask for the lease", conn, res, late,
                      c->lease_ms * 3 / 4);
        claim_error(c, &err);
        PQclear(res);
        *wait_ms = 0; /* reconnect */
        return false;
    }
    got = PQgetvalue(res, 0, 0)[0] == 't';
    pthread_mutex_lock(&c->mu);
    c->got = got;
    c->term = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
    snprintf(c->seen_holder, sizeof(c->seen_holder), "%s", PQgetvalue(res, 0, 2));
    c->expires_in_ms = strtoll(PQgetvalue(res, 0, 3), NULL, 10);
    c->error[0] = '\0';
    *wait_ms =
        (uint32_t)(c->expires_in_ms < c->lease_ms / 4 ? c->expires_in_ms + 20 : c->lease_ms / 4);
    pthread_mutex_unlock(&c->mu);
    PQclear(res);
    return got;
}

static void *claim_main(void *arg)
{
    struct dstore_pg_claim *c = arg;
    PGconn *conn = NULL;
    bool logged_wait = false;

    for (;;) {
        struct dtx_err err;
        uint32_t wait_ms = c->lease_ms / 4;

        pthread_mutex_lock(&c->mu);
        if (c->stopping) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        pthread_mutex_unlock(&c->mu);
        dtx_err_clear(&err);
        if (!conn && !(conn = store_connect(c->conninfo, c->lease_ms, c->allow_fsync_off, NULL,
                                            NULL, &err))) {
            claim_error(c, &err);
        } else if (claim_try(c, conn, &wait_ms)) {
            ev_async_send(&c->wake);
            break;
        } else if (wait_ms == 0) {
            PQfinish(conn);
            conn = NULL;
            wait_ms = RECONNECT_PAUSE_MS * 5;
        } else if (!logged_wait) {
            log_info("standby: coordinator node '%s' is active elsewhere (%s, term %" PRIu64
                     "); taking over when its lease expires",
                     c->node, c->seen_holder, c->term);
            logged_wait = true;
        }
        claim_wait(c, wait_ms ? wait_ms : RECONNECT_PAUSE_MS);
    }
    PQfinish(conn);
    return NULL;
}

static void on_claim_wake(struct ev_loop *loop, struct ev_async *a)
{
    struct dstore_pg_claim *c = a->data;
    uint64_t term;
    bool got;

    (void)loop;
    pthread_mutex_lock(&c->mu);
    got = c->got;
    term = c->term;
    pthread_mutex_unlock(&c->mu);
    if (got && !c->told) {
        c->told = true;
        c->granted(c->arg, term);
    }
}

int dstore_pg_claim_start(struct dstore_pg_claim **out, const struct dstore_pg_opts *opts,
                          dstore_pg_granted_fn granted, void *arg, struct dtx_err *err)
{
    struct dstore_pg_claim *c = xcalloc(1, sizeof(*c));

    c->conninfo = xstrdup(opts->conninfo);
    c->node = xstrdup(opts->node);
    c->holder = xstrdup(opts->holder);
    c->lease_ms = opts->lease_ms;
    c->allow_fsync_off = opts->allow_fsync_off;
    c->loop = opts->loop;
    c->granted = granted;
    c->arg = arg;
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    if (ev_async_start(c->loop, &c->wake, on_claim_wake, c) < 0) {
        dstore_pg_claim_free(c);
        return dtx_err_set(err, DTX_EIO, "could not create the lease claim's wake-up eventfd");
    }
    if (pthread_create(&c->thread, NULL, claim_main, c) != 0) {
        ev_async_stop(c->loop, &c->wake);
        dstore_pg_claim_free(c);
        return dtx_err_set(err, DTX_EIO, "could not start the lease claim's thread");
    }
    *out = c;
    return 0;
}

const char *dstore_pg_claim_holder(const struct dstore_pg_claim *c)
{
    return c->holder; /* set at creation, never changed */
}

void dstore_pg_claim_describe(struct dstore_pg_claim *c, cJSON *obj)
{
    pthread_mutex_lock(&c->mu);
    if (c->seen_holder[0]) {
        jsonx_add_str(obj, "holder", c->seen_holder);
        jsonx_add_num(obj, "term", (double)c->term);
        jsonx_add_num(obj, "expires_in_ms", (double)c->expires_in_ms);
    }
    if (c->error[0])
        jsonx_add_str(obj, "error", c->error);
    pthread_mutex_unlock(&c->mu);
}

void dstore_pg_claim_free(struct dstore_pg_claim *c)
{
    if (!c)
        return;
    if (c->thread) {
        pthread_mutex_lock(&c->mu);
        c->stopping = true;
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
        ev_async_stop(c->loop, &c->wake);
    }
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->conninfo);
    free(c->node);
    free(c->holder);
    free(c);
}

/* ---- the store ------------------------------------------------------------------- */

static const struct dstore_ops pg_ops;

struct pgs {
    struct dsq_store qs; /* first: a struct pgs is a struct dstore, with its queue */
    char *conninfo, *node, *holder;
    uint32_t lease_ms;
    bool allow_fsync_off;
    uint64_t term;
    pthread_t thread;
    char warning[DTX_ERR_MSG_MAX]; /* a WARNING the server sent while a write ran (on_notice) */
    /* writer thread only (the loop's until the writer starts) */
    PGconn *conn;
    uint64_t next_pos;
    uint64_t renewed_us; /* monotonic time of the last successful renewal */
    uint64_t since_ckpt; /* bytes written since the last checkpoint */
};

static uint64_t get_be64(const char *p)
{
    uint64_t v = 0;

    for (int i = 0; i < 8; i++)
        v = (v << 8) | (unsigned char)p[i];
    return v;
}

/* Reads every record from the node's last checkpoint on into replay; sets next_pos. */
static int replay_all(struct pgs *s, drec_replay_fn replay, void *arg, uint64_t *nrecords,
                      struct dtx_err *err)
{
    const char *vals[] = {s->node};
    struct drec_arena arena = {BUF_INIT, NULL, 0};
    PGresult *res;
    int rc = 0, rows;

    res = PQexecParams(s->conn,
                       "SELECT pos, data FROM dtx_store.records WHERE node = $1 AND pos >= "
                       "coalesce((SELECT max(pos) FROM dtx_store.records WHERE node = $1 AND "
                       "checkpoint), 0) ORDER BY pos",
                       1, NULL, vals, NULL, NULL, 1);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        statement_error(err, DTX_EIO, "could not read the decision store", s->conn, res);
        PQclear(res);
        return DTX_EIO;
    }
    rows = PQntuples(res);
    s->next_pos = 1;
    for (int i = 0; i < rows && rc == 0; i++) {
        uint64_t pos = PQgetlength(res, i, 0) == 8 ? get_be64(PQgetvalue(res, i, 0)) : 0;

        rc = drec_replay_batch((const unsigned char *)PQgetvalue(res, i, 1),
                               (size_t)PQgetlength(res, i, 1), &arena, replay, arg, nrecords, err);
        if (rc == DTX_ECORRUPT)
            dtx_err_prefix(err, "decision store: node '%s', row at position %" PRIu64, s->node,
                           pos);
        s->next_pos = pos + 1;
    }
    PQclear(res);
    drec_arena_release(&arena);
    if (rc == 0 && rows == 0) { /* everything was checkpointed away, or never written */
        res = PQexecParams(
            s->conn, "SELECT coalesce(max(pos), 0) + 1 FROM dtx_store.records WHERE node = $1", 1,
            NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1)
            s->next_pos = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
        PQclear(res);
    }
    return rc;
}

/*
 * Drops the store's connection, left in the middle of a call or a
 * transaction (a late answer, a failed large step): of no more use.
 */
static void drop_conn(struct pgs *s)
{
    PQfinish(s->conn);
    s->conn = NULL;
}

/* Renews the lease: 0; DTX_ELOGFAIL when another term holds it; DTX_EIO when unreachable. */
static int renew(struct pgs *s, struct dtx_err *err)
{
    char term[24], lease[16];
    const char *vals[] = {s->node, term, s->holder, lease};
    PGresult *res;
    int rc = 0;
    bool late;

    snprintf(term, sizeof(term), "%" PRIu64, s->term);
    snprintf(lease, sizeof(lease), "%u", s->lease_ms);
    res = exec_bounded(s->conn, s->lease_ms * 3 / 4,
                       "SELECT dtx_store.renew($1, $2::bigint, $3, $4::integer)", 4, NULL, vals,
                       NULL, NULL, &late);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
        rc = (bounded_error(err, DTX_EIO, "could not renew the lease", s->conn, res, late,
                            s->lease_ms * 3 / 4),
              DTX_EIO);
    else if (PQgetvalue(res, 0, 0)[0] != 't')
        rc = dtx_err_set(err, DTX_ELOGFAIL,
                         "coordinator node '%s' lost its lease (term %" PRIu64
                         "): another process of it took over; this one decides nothing more",
                         s->node, s->term);
    else
        s->renewed_us = ev_clock_us();
    PQclear(res);
    if (late)
        drop_conn(s);
    return rc;
}

/*
 * Renews, reconnecting after a failure to reach the store, until a
 * quarter of the lease is left; 0 or the failure that ends the store.
 */
static int keep_lease(struct pgs *s, struct dtx_err *err)
{
    uint64_t give_up = s->renewed_us + (uint64_t)s->lease_ms * 750u;
    int rc;

    for (;;) {
        rc = s->conn ? renew(s, err) : DTX_EIO;
        if (rc != DTX_EIO)
            return rc;
        if (ev_clock_us() >= give_up)
            return dtx_err_prefix(err,
                                  "the lease of node '%s' runs out (the decision store "
                                  "cannot be reached); stepping down",
                                  s->node);
        PQfinish(s->conn);
        s->conn =
            store_connect(s->conninfo, s->lease_ms, s->allow_fsync_off, s->warning, NULL, err);
        if (!s->conn) {
            struct timespec ts = {0, RECONNECT_PAUSE_MS * 1000000L};

            nanosleep(&ts, NULL);
        }
    }
}

static void set_part(const struct buf *b, bool present, const char **val, int *len)
{
    *val = present ? buf_head(b) : NULL;
    *len = present ? (int)buf_avail(b) : 0;
}

/* How long a write of bytes may take: three quarters of the lease, and a large one's time. */
static uint32_t write_bound(const struct pgs *s, uint64_t bytes)
{
    uint64_t ms = s->lease_ms * 3 / 4;

    if (bytes >= LARGE_WRITE_BYTES)
        ms += bytes * 1000u / SLOWEST_STORE_BYTES_PER_S;
    return ms < UINT32_MAX / 2 ? (uint32_t)ms : UINT32_MAX / 2;
}

/*
 * One step of a large write (write_batch), which fails it as `what` says;
 * false (err set, the connection dropped) if it failed.
 */
static bool large_step(struct pgs *s, const char *sql, int n, const Oid *types,
                       const char *const *vals, const int *lens, const int *fmts,
                       uint32_t within_ms, ExecStatusType want, const char *what,
                       struct dtx_err *err)
{
    bool late, ok;
    PGresult *res = exec_bounded(s->conn, within_ms, sql, n, types, vals, lens, fmts, &late);

    ok = PQresultStatus(res) == want;
    if (!ok && is_fenced(res))
        statement_error(err, DTX_ELOGFAIL, "the decision store refused a write", s->conn, res);
    else if (!ok)
        bounded_error(err, DTX_ELOGFAIL, what, s->conn, res, late, within_ms);
    PQclear(res);
    if (!ok)
        drop_conn(s);
    return ok;
}

/*
 * Writes one batch as one statement, which renews the lease as it ends;
 * 0, or the failure that ends the store.
 *
 * A large batch (a checkpoint with kept answers) runs in a transaction of
 * its own: its first statement takes the lease row (an append of nothing:
 * the term checked, the lease renewed) and the server's statement_timeout
 * is raised to the batch's bound (write_bound) for the rest of it; then the
 * batch, then COMMIT, each within that bound on this side too. Sent as one
 * statement, the batch took the lease row only once the server had it
 * all: the lease ran out while it travelled, and a standby took over.
 */
static int write_batch(struct pgs *s, const struct dsq_batch *b, struct dtx_err *err)
{
    char term[24], pos[24], lease[16], timeout[64];
    const char *vals[7] = {s->node, term, pos, NULL, NULL, NULL, lease};
    int lens[7] = {0}, fmts[7] = {0, 0, 0, 1, 1, 1, 0};
    const Oid types[7] = {0, 0, 0, BYTEAOID, BYTEAOID, BYTEAOID, 0};
    const char *append = "SELECT dtx_store.append($1, $2::bigint, $3::bigint, $4, $5, $6, "
                         "$7::integer)";
    uint64_t sent_us = ev_clock_us(), next = 0;
    uint32_t small = s->lease_ms * 3 / 4;
    uint32_t bound = write_bound(s, b->before.len + b->snap.len + b->work.len);
    bool large = bound > small;
    const char *not_begun = "a large write to the decision store could not begin (nothing of "
                            "it was written)";
    const char *unknown = "a write to the decision store failed, and whether it committed is "
                          "unknown until the next run reads the store";
    PGresult *res;
    int rc = 0;
    bool late;

    if (!s->conn)
        return dtx_err_set(err, DTX_ELOGFAIL, "the decision store's connection is gone");
    snprintf(term, sizeof(term), "%" PRIu64, s->term);
    snprintf(pos, sizeof(pos), "%" PRIu64, s->next_pos);
    snprintf(lease, sizeof(lease), "%u", s->lease_ms);
    s->warning[0] = '\0';
    if (large)
        snprintf(timeout, sizeof(timeout), "SET LOCAL statement_timeout = %u", bound);
    if (large && (!large_step(s, "BEGIN", 0, NULL, NULL, NULL, NULL, small, PGRES_COMMAND_OK,
                              not_begun, err) ||
                  !large_step(s, timeout, 0, NULL, NULL, NULL, NULL, small, PGRES_COMMAND_OK,
                              not_begun, err) ||
                  !large_step(s, append, 7, types, vals, lens, fmts, small, PGRES_TUPLES_OK,
                              not_begun, err)))
        return DTX_ELOGFAIL;
    set_part(&b->before, b->before.len > 0, &vals[3], &lens[3]);
    set_part(&b->snap, b->ckpt, &vals[4], &lens[4]);
    set_part(&b->work, b->work.len > 0, &vals[5], &lens[5]);
    res = exec_bounded(s->conn, bound, append, 7, types, vals, lens, fmts, &late);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        next = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
    } else if (is_fenced(res)) {
        statement_error(err, DTX_ELOGFAIL, "the decision store refused a write", s->conn, res);
        rc = DTX_ELOGFAIL;
    } else {
        bounded_error(err, DTX_ELOGFAIL, unknown, s->conn, res, late, bound);
        rc = DTX_ELOGFAIL;
    }
    PQclear(res);
    if (late || (large && rc))
        drop_conn(s);
    if (!rc && large &&
        !large_step(s, "COMMIT", 0, NULL, NULL, NULL, NULL, bound, PGRES_COMMAND_OK, unknown, err))
        rc = DTX_ELOGFAIL;
    if (!rc && s->warning[0])
        rc = dtx_err_set(err, DTX_ELOGFAIL,
                         "the decision store warned while a write committed (\"%s\"): it may be "
                         "missing on the synchronous standby, so it is not answered",
                         s->warning);
    if (!rc) {
        s->next_pos = next;
        s->renewed_us = sent_us; /* the lease was renewed after this, as the write ended */
    }
    return rc;
}

static void *writer_main(void *arg)
{
    struct pgs *s = arg;
    struct dsq_batch b = {BUF_INIT, BUF_INIT, BUF_INIT, false, 0};
    uint64_t every = (uint64_t)s->lease_ms * 1000u / 3, renew_at = s->renewed_us + every;
    struct dtx_err err;

    dtx_err_clear(&err);
    while (dsq_take(&s->qs.q, &b, renew_at)) {
        uint64_t bytes = b.before.len + b.snap.len + b.work.len, started = ev_clock_us();

        if (bytes || b.ckpt) {
            if (write_batch(s, &b, &err) < 0) {
                dsq_fail(&s->qs.q, &err);
                break;
            }
            dsq_observe(&s->qs.q, -1, ev_clock_us() - started); /* one round trip and commit */
            dsq_done(&s->qs.q, &b, 1, bytes, ev_clock_us() - started);
            s->since_ckpt = b.ckpt ? b.work.len : s->since_ckpt + bytes;
            if (s->since_ckpt >= CKPT_BYTES)
                dsq_want_checkpoint(&s->qs.q);
            renew_at = s->renewed_us + every; /* the write renewed the lease */
        }
        if (ev_clock_us() >= renew_at) {
            if (keep_lease(s, &err) < 0) {
                dsq_fail(&s->qs.q, &err);
                break;
            }
            renew_at = s->renewed_us + every;
        }
    }
    dsq_batch_release(&b);
    return NULL;
}

static void pgs_free(struct pgs *s)
{
    PQfinish(s->conn);
    free(s->conninfo);
    free(s->node);
    free(s->holder);
    free(s);
}

int dstore_pg_open(struct dstore **out, const struct dstore_pg_opts *opts, uint64_t term,
                   drec_replay_fn replay, void *arg, uint64_t *nrecords, struct dtx_err *err)
{
    struct pgs *s = xcalloc(1, sizeof(*s));
    struct store_settings set;
    int rc;

    s->qs.base.ops = &pg_ops;
    s->conninfo = xstrdup(opts->conninfo);
    s->node = xstrdup(opts->node);
    s->holder = xstrdup(opts->holder);
    s->lease_ms = opts->lease_ms;
    s->allow_fsync_off = opts->allow_fsync_off;
    s->term = term;
    s->conn = store_connect(s->conninfo, s->lease_ms, s->allow_fsync_off, s->warning, &set, err);
    if (!s->conn) {
        pgs_free(s);
        return DTX_EIO;
    }
    if (set.fsync_off)
        log_warn("the decision store's PostgreSQL runs with fsync = off, allowed by "
                 "'decision_store.allow_fsync_off': a crash of it can lose decisions; for "
                 "throwaway test stores only");
    if (set.sync_commit[0])
        log_warn("the decision store's database is set to synchronous_commit = %s: this "
                 "coordinator's sessions set it on, so that a decision is durable (on the "
                 "synchronous standby too, when there is one) before it is answered",
                 set.sync_commit);
    if (set.no_sync_standby)
        log_warn("the decision store's PostgreSQL has no synchronous standby "
                 "(synchronous_standby_names is empty): decisions survive its crash, not the "
                 "loss of its disk (docs/operations.md, \"Several coordinators\")");
    rc = replay_all(s, replay, arg, nrecords, err);
    if (rc == 0)
        rc = renew(s, err);
    if (rc < 0) {
        pgs_free(s);
        return rc;
    }
    dsq_init(&s->qs.q, &(struct dsq_opts){.group_delay_us = opts->group_delay_us,
                                          .group_siblings = opts->group_siblings,
                                          .loop = opts->loop,
                                          .cbs = opts->cbs});
    rc = dsq_start(&s->qs.q, err);
    if (rc == 0 && pthread_create(&s->thread, NULL, writer_main, s) != 0)
        rc = dtx_err_set(err, DTX_EIO, "could not start the decision store's writer thread");
    if (rc < 0) {
        dsq_release(&s->qs.q);
        pgs_free(s);
        return rc;
    }
    *out = &s->qs.base;
    return 0;
}

static void pg_describe(struct dstore *st, cJSON *obj)
{
    struct pgs *s = (struct pgs *)st;

    jsonx_add_str(obj, "type", "postgres");
    jsonx_add_str(obj, "node", s->node);
    jsonx_add_num(obj, "term", (double)s->term);
    jsonx_add_num(obj, "lease_ms", s->lease_ms);
}

/*
 * Gives the lease up once the writer is gone (nothing more is written under this term), so
 * that a standby takes over at its next try. A term that lost the lease matches no row.
 */
static void release_lease(struct pgs *s)
{
    char term[24];
    const char *vals[3] = {s->node, term, s->holder};
    PGresult *res;
    bool late;

    if (!s->conn)
        return; /* lost, or dropped in the middle of a call: the lease runs out by itself */
    snprintf(term, sizeof(term), "%" PRIu64, s->term);
    res = exec_bounded(s->conn, s->lease_ms * 3 / 4, "SELECT dtx_store.release($1, $2::bigint, $3)",
                       3, NULL, vals, NULL, NULL, &late);
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1 &&
        strcmp(PQgetvalue(res, 0, 0), "t") == 0)
        log_info("gave up the lease of coordinator node '%s' (term %" PRIu64 ")", s->node, s->term);
    PQclear(res);
}

static void pg_close(struct dstore *st)
{
    struct pgs *s = (struct pgs *)st;

    dsq_stop(&s->qs.q);
    pthread_join(s->thread, NULL);
    dsq_release(&s->qs.q);
    release_lease(s);
    pgs_free(s);
}

static const struct dstore_ops pg_ops = {
    .name = "postgres",
    .append = dsq_op_append,
    .checkpoint = dsq_op_checkpoint,
    .hint_deciding = dsq_op_hint_deciding,
    .failed = dsq_op_failed,
    .flush = dsq_op_flush,
    .stats = dsq_op_stats,
    .describe = pg_describe,
    .close = pg_close,
};
