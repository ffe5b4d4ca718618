/*
 * rm_pg_forget.c - three-phase commit: deleting the acceptor state
 * (dtx.acceptors rows) of transactions that every participant has
 * finished, in the background and in batches (rm.h, forget_acceptors).
 *
 * The coordinator asks once it has every participant's acknowledgement of
 * the decision (docs/protocol.md, "Three-phase commit"): no participant is
 * in doubt then, so no recovery round will ask for the state again.
 *
 * The gtids gather in rm->forget for FORGET_GATHER_MS; at most FORGET_MAX
 * wait (more are counted, logged and left behind). Then one statement
 * (dtx.acceptors_forget) deletes up to FORGET_BATCH of them, one
 * statement at a time. A gtid with an acceptor operation still under way
 * here (rm->accepts: its decision being recorded, say, which would write
 * the row again) waits for the next statement. The function keeps a row
 * whose branch is still prepared here, and does not wait for its commit to
 * be flushed: a deletion lost in a crash leaves a row behind, nothing
 * else. A statement that fails is tried again FORGET_RETRY_MS later.
 * Gtids still waiting when the agent stops leave their rows behind, as
 * does a coordinator that dies before it asks.
 *
 * Rows left behind (list_acceptor_rows): recovery's sweep
 * lists the rows not changed for a while whose branch is not prepared here,
 * asks their coordinator, and hands those it has finished back to
 * forget_acceptors (recovery.c).
 *
 * State: rm->forget, rm->sweeps (listings not yet delivered). Thread model:
 * the participant's event-loop thread.
 */
#include "rm_pg_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define FORGET_MAX      100000
#define FORGET_BATCH    1000
#define FORGET_RETRY_MS 1000
/*
 * How long gtids gather before a statement deletes them: one statement per
 * gtid (or per loop iteration) cost PostgreSQL ~10% of 3PC's throughput at
 * 32 clients; one every 100 ms, a few per cent (docs/benchmarks.md).
 */
#define FORGET_GATHER_MS 100

static const char forget_sql[] = "SELECT dtx.acceptors_forget($1::jsonb, $2)";

static void forget_send(struct pg_rm *rm);

static void on_forget_timer(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    forget_send(t->data);
}

void rm_pg_forget_init(struct pg_rm *rm)
{
    memset(&rm->forget, 0, sizeof(rm->forget));
    list_init(&rm->sweeps);
    ev_timer_init(&rm->forget.timer, on_forget_timer, rm);
}

/* Appends gtid to list (an array of *n, room for *cap). */
static void push(char (**list)[DTX_GTID_MAX + 1], size_t *n, size_t *cap, const char *gtid)
{
    if (*n == *cap) {
        *cap = *cap ? *cap * 2 : 64;
        *list = xrealloc(*list, *cap * sizeof(**list));
    }
    snprintf((*list)[(*n)++], sizeof(**list), "%s", gtid);
}

void rm_pg_forget_acceptors(struct rm *base, const char *gtid)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_forget *f = &rm->forget;

    if (f->n + f->nbatch >= FORGET_MAX) {
        if (f->dropped++ == 0)
            log_warn("%d finished three-phase commit transactions wait to have their acceptor "
                     "rows deleted; the rows of more are left in dtx.acceptors",
                     FORGET_MAX);
        return;
    }
    push(&f->gtids, &f->n, &f->cap, gtid);
    if (!f->nbatch && !ev_timer_is_active(&f->timer))
        ev_timer_start(rm->loop, &f->timer, FORGET_GATHER_MS);
}

static void forget_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_rm *rm = job->data;

    (void)idx;
    if (PQresultStatus(res) != PGRES_TUPLES_OK && !rm->forget.error[0])
        snprintf(rm->forget.error, sizeof(rm->forget.error), "%s", PQresultErrorMessage(res));
    PQclear(res);
}

static void forget_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_rm *rm = job->data;
    struct pg_forget *f = &rm->forget;

    (void)answered;
    free(f->json);
    f->json = NULL;
    if (rc < 0 || f->error[0]) {
        if (!f->failing)
            log_warn("could not delete the acceptor rows of %zu finished three-phase commit "
                     "transactions (trying again every %d ms): %s",
                     f->nbatch, FORGET_RETRY_MS,
                     f->error[0] ? f->error
                     : why       ? why
                                 : "");
        f->failing = true;
        for (size_t i = 0; i < f->nbatch; i++)
            push(&f->gtids, &f->n, &f->cap, f->batch[i]);
        f->nbatch = 0;
        ev_timer_start(rm->loop, &f->timer, FORGET_RETRY_MS);
        return;
    }
    if (f->failing)
        log_info("the acceptor rows of finished three-phase commit transactions are deleted "
                 "again");
    f->failing = false;
    f->nbatch = 0;
    if (f->dropped) {
        log_warn("the acceptor rows of %" PRIu64 " finished three-phase commit transactions "
                 "were left in dtx.acceptors (too many waited)",
                 f->dropped);
        f->dropped = 0;
    }
    if (f->n)
        ev_timer_start(rm->loop, &f->timer, f->n >= FORGET_BATCH ? 0 : FORGET_GATHER_MS);
}

/*
 * Whether an operation on gtid's acceptor state is still under way here
 * (a decision being recorded, say): its row is deleted after it, or that
 * operation would write the row again.
 */
static bool busy(const struct pg_rm *rm, const char *gtid)
{
    for (const struct list_node *p = rm->accepts.next; p != &rm->accepts; p = p->next) {
        if (strcmp(rm_pg_acceptor_gtid(p), gtid) == 0)
            return true;
    }
    return false;
}

static void forget_send(struct pg_rm *rm)
{
    struct pg_forget *f = &rm->forget;
    size_t kept = 0;
    cJSON *arr;

    if (f->nbatch || f->n == 0)
        return;
    for (size_t i = 0; i < f->n; i++) {
        if (f->nbatch < FORGET_BATCH && !busy(rm, f->gtids[i]))
            push(&f->batch, &f->nbatch, &f->batch_cap, f->gtids[i]);
        else if (kept++ != i)
            memcpy(f->gtids[kept - 1], f->gtids[i], sizeof(f->gtids[i]));
    }
    f->n = kept;
    if (f->nbatch == 0) { /* every one is busy: look again shortly */
        ev_timer_start(rm->loop, &f->timer, FORGET_RETRY_MS / 10);
        return;
    }
    arr = jsonx_new_array();
    for (size_t i = 0; i < f->nbatch; i++)
        jsonx_append(arr, cJSON_CreateString(f->batch[i]));
    f->json = jsonx_print(arr);
    cJSON_Delete(arr);
    f->error[0] = '\0';
    f->values[0] = f->json;
    f->values[1] = rm->shard;
    f->stmt = (struct pgx_stmt){forget_sql, 2, f->values, true};
    f->job = (struct pgx_job){.stmts = &f->stmt,
                              .nstmts = 1,
                              .on_result = forget_result,
                              .on_done = forget_done,
                              .data = rm};
    pgx_submit(rm->pool, &f->job);
}

/* ---- rows left behind (list_acceptor_rows) ------------------------------------ */

/*
 * Rows of gtids after $1, not changed for $2 ms, whose branch is not
 * prepared here ($3: this shard), in gtid order, at most $4: the primary
 * key's order, so that a sweep pages through every row however many its
 * coordinator does not know. A gtid longer than $5 bytes is none dtx
 * issued: left out here, so that a page is short only at the end.
 */
static const char leftovers_sql[] =
    "SELECT a.gtid FROM dtx.acceptors a WHERE a.gtid > $1 COLLATE \"C\" "
    "AND octet_length(a.gtid) <= $5::int "
    "AND a.updated_at <= now() - make_interval(secs => $2::bigint / 1000.0) "
    "AND NOT EXISTS (SELECT 1 FROM pg_prepared_xacts x WHERE x.database = current_database() "
    "AND x.gid = 'dtx:' || a.gtid || ':' || $3) ORDER BY a.gtid LIMIT $4::bigint";

struct pg_leftovers {
    struct list_node link; /* on rm->sweeps */
    struct pg_rm *rm;
    char after[DTX_GTID_MAX + 1], age[16], max[24], longest[16];
    const char *values[5];
    struct pgx_stmt stmt;
    struct pgx_job job;
    char (*gtids)[DTX_GTID_MAX + 1];
    size_t n;
    struct dtx_err err;
    struct ev_defer deliver;
    rm_gtids_fn done;
    void *arg;
};

static void leftovers_free(struct pg_leftovers *l)
{
    list_remove(&l->link);
    ev_defer_cancel(l->rm->loop, &l->deliver);
    free(l->gtids);
    free(l);
}

static void on_leftovers_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_leftovers *l = d->data;

    (void)loop;
    l->done(l->arg, l->err.code, l->gtids, l->n, l->err.code ? &l->err : NULL);
    leftovers_free(l);
}

static void leftovers_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_leftovers *l = job->data;
    int rows = PQntuples(res);

    (void)idx;
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        if (!l->err.code)
            dtx_err_set(&l->err, DTX_ESQL, "could not read dtx.acceptors: %s",
                        PQresultErrorMessage(res));
        PQclear(res);
        return;
    }
    l->gtids = xcalloc((size_t)rows + 1, sizeof(*l->gtids));
    for (int i = 0; i < rows; i++)
        snprintf(l->gtids[l->n++], sizeof(*l->gtids), "%s", PQgetvalue(res, i, 0));
    PQclear(res);
}

static void leftovers_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_leftovers *l = job->data;

    (void)answered;
    if (rc < 0 && !l->err.code)
        dtx_err_set(&l->err, DTX_EUNAVAIL, "could not ask PostgreSQL: %s", why ? why : "");
    ev_defer(l->rm->loop, &l->deliver);
}

void rm_pg_list_acceptor_rows(struct rm *base, uint32_t min_age_ms, const char *after, size_t max,
                              rm_gtids_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_leftovers *l = xcalloc(1, sizeof(*l));

    l->rm = rm;
    l->done = done;
    l->arg = arg;
    dtx_err_clear(&l->err);
    snprintf(l->after, sizeof(l->after), "%s", after);
    snprintf(l->age, sizeof(l->age), "%" PRIu32, min_age_ms);
    snprintf(l->max, sizeof(l->max), "%zu", max);
    snprintf(l->longest, sizeof(l->longest), "%d", DTX_GTID_MAX);
    l->values[0] = l->after;
    l->values[1] = l->age;
    l->values[2] = rm->shard;
    l->values[3] = l->max;
    l->values[4] = l->longest;
    l->stmt = (struct pgx_stmt){leftovers_sql, 5, l->values, true};
    l->job = (struct pgx_job){.stmts = &l->stmt,
                              .nstmts = 1,
                              .on_result = leftovers_result,
                              .on_done = leftovers_done,
                              .data = l};
    ev_defer_init(&l->deliver, on_leftovers_deliver, l);
    list_insert_tail(&rm->sweeps, &l->link);
    pgx_submit(rm->pool, &l->job);
}

void rm_pg_forget_free(struct pg_rm *rm)
{
    ev_timer_stop(rm->loop, &rm->forget.timer);
    free(rm->forget.gtids);
    free(rm->forget.batch);
    free(rm->forget.json);
    while (!list_empty(&rm->sweeps))
        leftovers_free(container_of(rm->sweeps.next, struct pg_leftovers, link));
}
