/*
 * rm_pg_list.c - listing this database's prepared dtx branches: for
 * recovery (gid, xid, age) and, with their locks and the server's
 * prepared-transaction headroom, for operators.
 *
 * Only this database's (one PostgreSQL server may hold several shards),
 * only gids starting with "dtx:".
 *
 * State: rm->lists (every listing not yet delivered). Thread model: the
 * participant's event-loop thread.
 */
#include "rm_pg_impl.h"

#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
        struct rm_prepared *p = xcalloc(l->n + 1, sizeof(*p));

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

    l->items = xcalloc((size_t)rows + 1, sizeof(*l->items));
    for (int i = 0; i < rows; i++) {
        struct rm_branch_info *b = &l->items[l->n];

        if (strlen(PQgetvalue(res, i, 0)) >= sizeof(b->p.gid))
            continue;
        snprintf(b->p.gid, sizeof(b->p.gid), "%s", PQgetvalue(res, i, 0));
        b->p.xid = strtoull(PQgetvalue(res, i, 1), NULL, 10);
        b->p.age_ms = (uint32_t)strtoul(PQgetvalue(res, i, 2), NULL, 10);
        b->p.three_pc = PQgetvalue(res, i, 3)[0] == 't';
        if (PQnfields(res) > 4)
            b->locks = xstrdup(PQgetvalue(res, i, 4));
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
    "SELECT gid, " RM_PG_PREPARED_XID8_SQL                                                         \
    ", (extract(epoch FROM now() - prepared) * 1000)::bigint, EXISTS (SELECT 1 FROM "              \
    "dtx.acceptors a WHERE a.gtid = split_part(p.gid, ':', 2))" extra                              \
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
    struct pg_list *l = xcalloc(1, sizeof(*l));
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

void rm_pg_list_prepared(struct rm *base, rm_list_fn done, void *arg)
{
    list_start((struct pg_rm *)base, done, NULL, false, arg);
}

void rm_pg_inspect(struct rm *base, bool locks, rm_inspect_fn done, void *arg)
{
    list_start((struct pg_rm *)base, NULL, done, locks, arg);
}

void rm_pg_lists_free(struct pg_rm *rm)
{
    while (!list_empty(&rm->lists))
        list_free(container_of(rm->lists.next, struct pg_list, link));
}
