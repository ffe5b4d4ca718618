/*
 * rm_pg.c - the PostgreSQL resource manager (rm.h): the struct behind the
 * interface, its operations table, health, and lifecycle. The work is in
 * rm_pg_setup.c (preparing the database), rm_pg_run.c (running branches),
 * rm_pg_finish.c (finishing them, and telling what became of one),
 * rm_pg_list.c (listing prepared branches) and rm_pg_state.c (the
 * participant's own durable state); value conversion is pgval.c.
 *
 * Thread model: the participant's event-loop thread. Callbacks to the
 * agent are delivered from a deferred callback, never from inside the call
 * that started or cancelled the operation.
 */
#include "rm_pg_impl.h"

#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>

void rm_pg_gid_sql(char *out, size_t n, const char *command, const char *gid)
{
    size_t used = (size_t)snprintf(out, n, "%s '", command);

    for (const char *p = gid; *p && used + 3 < n; p++) {
        if (*p == '\'')
            out[used++] = '\'';
        out[used++] = *p;
    }
    if (used + 2 <= n) {
        out[used++] = '\'';
        out[used] = '\0';
    }
}

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
    rm_pg_runs_free(rm);
    rm_pg_finishes_free(rm);
    rm_pg_lists_free(rm);
    rm_pg_states_free(rm);
    rm_pg_accepts_free(rm);
    rm_pg_forget_free(rm);
    free(rm);
}

static const struct rm_ops pg_ops = {
    .name = "postgresql",
    .run = rm_pg_run,
    .cancel = rm_pg_cancel,
    .exec = rm_pg_exec,
    .end = rm_pg_end,
    .finish = rm_pg_finish,
    .status = rm_pg_status,
    .list_prepared = rm_pg_list_prepared,
    .inspect = rm_pg_inspect,
    .healthy = pg_healthy,
    .see_coordinator = rm_pg_see_coordinator,
    .acceptor = rm_pg_acceptor,
    .forget_acceptors = rm_pg_forget_acceptors,
    .list_acceptor_rows = rm_pg_list_acceptor_rows,
    .free = pg_free,
};

int rm_pg_new(struct rm **out, struct ev_loop *loop, const struct rm_pg_opts *o,
              struct dtx_err *err)
{
    /*
     * The database's identity is read once per connection, not per vote (reading the
     * control file cost the server ~130 us, the timeline's expression ~20 us, measured).
     * The timeline changes only when a standby is promoted, and a connection opened to a
     * standby (which could not prepare anything anyway) is refused: it would keep the
     * standby's timeline after a promotion.
     */
    struct pgx_opts po = {
        .conninfo = o->conninfo,
        /* pool_size branches at once, and a connection more that pgx keeps for phase 2 */
        .size = o->pool_size > 1 ? o->pool_size + 1 : o->pool_size,
        .init_sql =
            "SELECT CASE WHEN pg_is_in_recovery() THEN NULL ELSE " RM_PG_IDENTITY_SQL " END",
        .init_null_why = "the server is in recovery (a standby): branches need a primary"};
    struct pg_rm *rm;
    int version = 0;
    int rc = rm_pg_setup(o, &version, err);

    if (rc < 0)
        return rc;
    /* a participant that dies mid-branch frees its backends within a second (14 and later) */
    po.check_client_ms = version >= 140000 ? 1000 : 0;
    rm = xcalloc(1, sizeof(*rm));
    rm->base.ops = &pg_ops;
    rm->loop = loop;
    list_init(&rm->runs);
    list_init(&rm->finishes);
    list_init(&rm->statuses);
    list_init(&rm->lists);
    list_init(&rm->states);
    list_init(&rm->accepts);
    rm_pg_forget_init(rm);
    snprintf(rm->shard, sizeof(rm->shard), "%s", o->shard);
    rm->max_result_bytes = o->max_result_bytes;
    rm->max_result_rows = o->max_result_rows;
    rm->pool = pgx_pool_new(loop, &po);
    *out = &rm->base;
    return 0;
}
