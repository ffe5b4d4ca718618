/*
 * rm_pg_state.c - the participant's own durable protocol state, kept in
 * the shard's database (the dtx schema, sql/), each change committed in a
 * local transaction of its own before anything acts on it.
 *
 * Coordinator runs (see_coordinator, rm.h): dtx.coordinators holds the
 * newest run (epoch, boot id) of each coordinator node accepted here. A
 * new run is checked and recorded in one transaction, serialised per node
 * by an advisory lock (taken in a statement of its own, so that the check
 * that follows reads what a concurrent run of the same node committed):
 *
 *   BEGIN;
 *   SELECT pg_advisory_xact_lock(hashtext('dtx.coordinators/' || node));
 *   WITH ... check against the record and the prepared gids, record if
 *   accepted ... SELECT accepted, epoch seen, boot seen;
 *   COMMIT;
 *
 * State: rm->states (every request not yet delivered). Thread model: the
 * participant's event-loop thread; the answer is delivered from a deferred
 * callback, never inside the call.
 */
#include "rm_pg_impl.h"

#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Accept when the epoch is above every one seen, or the same run again; record if accepted. */
#define SEE_SQL                                                                                    \
    "WITH prev AS (SELECT epoch, boot FROM dtx.coordinators WHERE node = $1),"                     \
    " prep AS (SELECT coalesce(max(m[2]::bigint), 0) AS epoch FROM pg_prepared_xacts p,"           \
    "   regexp_match(p.gid, '^dtx:(.+)-([0-9]+)-[0-9]+:[^:]+$') m"                                 \
    "   WHERE p.database = current_database() AND m[1] = $1),"                                     \
    " seen AS (SELECT greatest(coalesce((SELECT epoch FROM prev), 0), (SELECT epoch FROM prep))"   \
    "   AS epoch, coalesce((SELECT boot FROM prev), '') AS boot),"                                 \
    " ok AS (SELECT $2::bigint > seen.epoch OR ($2::bigint = seen.epoch AND $3 = seen.boot"        \
    "   AND (SELECT epoch FROM prev) = $2::bigint) AS yes FROM seen),"                             \
    " up AS (INSERT INTO dtx.coordinators (node, epoch, boot) SELECT $1, $2::bigint, $3 FROM ok"   \
    "   WHERE yes ON CONFLICT (node) DO UPDATE SET epoch = EXCLUDED.epoch, boot = EXCLUDED.boot,"  \
    "   seen_at = now() RETURNING 1)"                                                              \
    " SELECT ok.yes, seen.epoch, seen.boot, (SELECT count(*) FROM up) FROM ok, seen"

struct pg_state {
    struct list_node link; /* on rm->states */
    struct pg_rm *rm;
    char node[DTX_NAME_MAX + 1];
    char epoch[24];
    char boot[40];
    const char *values[3];
    struct pgx_stmt stmts[4];
    struct pgx_job job;
    struct rm_coord_seen seen;
    bool answered;
    struct dtx_err err;
    struct ev_defer deliver;
    rm_seen_fn done;
    void *arg;
};

static void state_free(struct pg_state *st)
{
    list_remove(&st->link);
    ev_defer_cancel(st->rm->loop, &st->deliver);
    free(st);
}

static void on_state_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_state *st = d->data;

    (void)loop;
    st->done(st->arg, st->err.code, &st->seen, st->err.code ? &st->err : NULL);
    state_free(st);
}

static void state_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_state *st = job->data;
    ExecStatusType rs = PQresultStatus(res);

    if (rs != PGRES_COMMAND_OK && rs != PGRES_TUPLES_OK) {
        if (rs != PGRES_PIPELINE_ABORTED && !st->err.code)
            dtx_err_set(&st->err, DTX_ESQL,
                        "could not read or record coordinator '%s' in dtx.coordinators: %s",
                        st->node, PQresultErrorMessage(res));
    } else if (idx == 2 && PQntuples(res) == 1) {
        st->answered = true;
        st->seen.accepted = PQgetvalue(res, 0, 0)[0] == 't';
        st->seen.epoch_seen = strtoull(PQgetvalue(res, 0, 1), NULL, 10);
        snprintf(st->seen.boot_seen, sizeof(st->seen.boot_seen), "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
}

static void state_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_state *st = job->data;

    (void)answered;
    if (rc < 0 && !st->err.code)
        dtx_err_set(&st->err, DTX_EUNAVAIL, "could not ask PostgreSQL: %s", why ? why : "");
    if (!st->err.code && !st->answered)
        dtx_err_set(&st->err, DTX_ESQL, "dtx.coordinators: no answer about coordinator '%s'",
                    st->node);
    ev_defer(st->rm->loop, &st->deliver);
}

void rm_pg_see_coordinator(struct rm *base, const char *node, uint64_t epoch, const char *boot,
                           rm_seen_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_state *st = xcalloc(1, sizeof(*st));

    st->rm = rm;
    st->done = done;
    st->arg = arg;
    dtx_err_clear(&st->err);
    snprintf(st->node, sizeof(st->node), "%s", node);
    snprintf(st->epoch, sizeof(st->epoch), "%" PRIu64, epoch);
    snprintf(st->boot, sizeof(st->boot), "%s", boot);
    st->values[0] = st->node;
    st->values[1] = st->epoch;
    st->values[2] = st->boot;
    st->stmts[0] = (struct pgx_stmt){.sql = "BEGIN"};
    st->stmts[1] = (struct pgx_stmt){
        .sql = "SELECT pg_advisory_xact_lock(hashtext('dtx.coordinators/' || $1))",
        .nparams = 1,
        .values = st->values};
    st->stmts[2] = (struct pgx_stmt){.sql = SEE_SQL, .nparams = 3, .values = st->values};
    st->stmts[3] = (struct pgx_stmt){.sql = "COMMIT", .sync = true};
    st->job = (struct pgx_job){.stmts = st->stmts,
                               .nstmts = 4,
                               .phase2 = true,
                               .on_result = state_result,
                               .on_done = state_done,
                               .data = st};
    ev_defer_init(&st->deliver, on_state_deliver, st);
    list_insert_tail(&rm->states, &st->link);
    pgx_submit(rm->pool, &st->job);
}

void rm_pg_states_free(struct pg_rm *rm)
{
    while (!list_empty(&rm->states))
        state_free(container_of(rm->states.next, struct pg_state, link));
}
