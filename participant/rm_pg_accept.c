/*
 * rm_pg_accept.c - three-phase commit: this shard's acceptor state, kept
 * in its database (sql/003_acceptors.sql) by the functions there, one
 * statement each, committed on its own before the answer is delivered.
 *
 * A statement whose answer was lost (the connection broke) may have
 * committed: the operation is asked again. That is safe because each one
 * can be repeated: a promise or an acceptance of the same ballot again
 * finds it recorded (and is reported as granted, accepted), a registration
 * or a decision recorded twice is the same record.
 *
 * State: rm->accepts (every operation not yet delivered). Thread model: the
 * participant's event-loop thread; answers come from a deferred callback.
 */
#include "rm_pg_impl.h"

#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ACC_RETRY_MS 200
#define ACC_TRIES    25

struct pg_acc {
    struct list_node link; /* on rm->accepts */
    struct pg_rm *rm;
    enum rm_acc_op op;
    char gtid[DTX_GTID_MAX + 1];
    char gid[RM_GID_MAX];
    char *peers;       /* NULL: none given */
    char *state_peers; /* st.peers of an RM_ACC_STATE answer (owned here) */
    struct ballot b;
    enum ballot_value v;
    char counter[24];
    const char *values[5];
    struct pgx_stmt stmt;
    struct pgx_job job;
    struct rm_acceptor st;
    bool answered;
    unsigned tries;
    struct dtx_err err;
    struct ev_timer retry;
    struct ev_defer deliver;
    rm_acceptor_fn done;
    void *arg;
};

static const char *const op_sql[] = {
    [RM_ACC_REGISTER] = "SELECT dtx.acceptor_register($1, $2::jsonb)",
    [RM_ACC_PROMISE] = "SELECT * FROM dtx.acceptor_promise($1, $2::jsonb, $3::bigint, $4, $5)",
    [RM_ACC_ACCEPT] = "SELECT * FROM dtx.acceptor_accept($1, $2::jsonb, $3::bigint, $4, $5)",
    [RM_ACC_DECIDED] = "SELECT dtx.acceptor_decided($1, $2)",
    [RM_ACC_STATE] = "SELECT a.promised_counter, a.promised_node, a.accepted_counter, "
                     "a.accepted_node, a.accepted_value, a.fenced, a.decided, a.peers::text, "
                     "EXISTS (SELECT 1 FROM pg_prepared_xacts x WHERE x.gid = $2 AND x.database "
                     "= current_database()) FROM dtx.acceptors a WHERE a.gtid = $1",
};

static void acc_free(struct pg_acc *a)
{
    list_remove(&a->link);
    ev_timer_stop(a->rm->loop, &a->retry);
    ev_defer_cancel(a->rm->loop, &a->deliver);
    free(a->peers);
    free(a->state_peers);
    free(a);
}

static void on_acc_deliver(struct ev_loop *loop, struct ev_defer *d)
{
    struct pg_acc *a = d->data;

    (void)loop;
    a->done(a->arg, a->err.code, &a->st, a->err.code ? &a->err : NULL);
    acc_free(a);
}

static void get_ballot(const PGresult *res, int c, int n, struct ballot *b)
{
    b->counter = PQgetisnull(res, 0, c) ? 0 : strtoull(PQgetvalue(res, 0, c), NULL, 10);
    snprintf(b->node, sizeof(b->node), "%s", PQgetisnull(res, 0, n) ? "" : PQgetvalue(res, 0, n));
}

static enum ballot_value get_value(const PGresult *res, int c)
{
    return PQgetisnull(res, 0, c) ? BV_NONE : ballot_value_parse(PQgetvalue(res, 0, c));
}

static bool is_true(const PGresult *res, int c)
{
    return !PQgetisnull(res, 0, c) && PQgetvalue(res, 0, c)[0] == 't';
}

/* Reads the answer of a's statement into a->st. */
static void read_answer(struct pg_acc *a, const PGresult *res)
{
    struct rm_acceptor *st = &a->st;

    a->answered = true;
    switch (a->op) {
    case RM_ACC_PROMISE:
        st->busy = is_true(res, 1);
        st->prepared = strcmp(PQgetvalue(res, 0, 2), "prepared") == 0;
        st->fenced = strcmp(PQgetvalue(res, 0, 2), "fenced") == 0;
        get_ballot(res, 3, 4, &st->promised);
        get_ballot(res, 5, 6, &st->accepted_ballot);
        st->accepted_value = get_value(res, 7);
        st->decided = get_value(res, 8);
        /* asked again after a lost answer: this very ballot is the promise */
        st->granted = is_true(res, 0) || (!st->busy && ballot_cmp(&st->promised, &a->b) == 0);
        st->exists = true;
        break;
    case RM_ACC_ACCEPT:
        st->accepted = is_true(res, 0);
        get_ballot(res, 1, 2, &st->promised);
        st->exists = true;
        break;
    case RM_ACC_STATE:
        if (PQntuples(res) != 1)
            break; /* no row: nothing promised, accepted or known here */
        st->exists = true;
        get_ballot(res, 0, 1, &st->promised);
        get_ballot(res, 2, 3, &st->accepted_ballot);
        st->accepted_value = get_value(res, 4);
        st->fenced = is_true(res, 5);
        st->decided = get_value(res, 6);
        free(a->state_peers);
        a->state_peers = xstrdup(PQgetvalue(res, 0, 7));
        st->peers = a->state_peers;
        st->prepared = is_true(res, 8);
        break;
    case RM_ACC_REGISTER:
    case RM_ACC_DECIDED:
        break;
    }
}

static void acc_result(struct pgx_job *job, int idx, PGresult *res)
{
    struct pg_acc *a = job->data;
    ExecStatusType rs = PQresultStatus(res);

    (void)idx;
    if (rs == PGRES_TUPLES_OK && (PQntuples(res) == 1 || a->op == RM_ACC_STATE)) {
        read_answer(a, res);
    } else if (rs != PGRES_PIPELINE_ABORTED && !a->err.code) {
        dtx_err_set(&a->err, DTX_ESQL, "three-phase commit state of %s (dtx.acceptors): %s",
                    a->gtid, PQresultErrorMessage(res));
    }
    PQclear(res);
}

static void acc_send(struct pg_acc *a);

static void on_acc_retry(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    acc_send(t->data);
}

static void acc_done(struct pgx_job *job, int rc, int answered, const char *why)
{
    struct pg_acc *a = job->data;

    (void)answered;
    if (rc < 0 && !a->answered && ++a->tries < ACC_TRIES) {
        /* the answer was lost: the statement may have committed; ask again */
        ev_timer_start(a->rm->loop, &a->retry, ACC_RETRY_MS);
        return;
    }
    if (rc < 0 && !a->err.code)
        dtx_err_set(&a->err, DTX_EUNAVAIL, "could not reach PostgreSQL for %s: %s", a->gtid,
                    why ? why : "");
    if (!a->err.code && !a->answered)
        dtx_err_set(&a->err, DTX_ESQL, "dtx.acceptors: no answer about %s", a->gtid);
    ev_defer(a->rm->loop, &a->deliver);
}

static void acc_send(struct pg_acc *a)
{
    a->answered = false;
    memset(&a->st, 0, sizeof(a->st));
    a->job = (struct pgx_job){.stmts = &a->stmt,
                              .nstmts = 1,
                              .phase2 = true,
                              .on_result = acc_result,
                              .on_done = acc_done,
                              .data = a};
    pgx_submit(a->rm->pool, &a->job);
}

void rm_pg_acceptor(struct rm *base, enum rm_acc_op op, const char *gtid, const char *gid,
                    const char *peers, const struct ballot *b, enum ballot_value v,
                    rm_acceptor_fn done, void *arg)
{
    struct pg_rm *rm = (struct pg_rm *)base;
    struct pg_acc *a = xcalloc(1, sizeof(*a));

    a->rm = rm;
    a->op = op;
    a->done = done;
    a->arg = arg;
    dtx_err_clear(&a->err);
    snprintf(a->gtid, sizeof(a->gtid), "%s", gtid);
    snprintf(a->gid, sizeof(a->gid), "%s", gid ? gid : "");
    a->peers = peers && op != RM_ACC_STATE ? xstrdup(peers) : NULL;
    if (b)
        a->b = *b;
    a->v = v;
    snprintf(a->counter, sizeof(a->counter), "%" PRIu64, a->b.counter);
    a->values[0] = a->gtid;
    switch (op) {
    case RM_ACC_REGISTER:
        a->values[1] = a->peers ? a->peers : "{}";
        a->stmt.nparams = 2;
        break;
    case RM_ACC_PROMISE:
    case RM_ACC_ACCEPT:
        a->values[1] = a->peers;
        a->values[2] = a->counter;
        a->values[3] = a->b.node;
        a->values[4] = op == RM_ACC_PROMISE ? a->gid : ballot_value_name(v);
        a->stmt.nparams = 5;
        break;
    case RM_ACC_DECIDED:
        a->values[1] = ballot_value_name(v);
        a->stmt.nparams = 2;
        break;
    case RM_ACC_STATE:
        a->values[1] = a->gid;
        a->stmt.nparams = 2;
        break;
    }
    a->stmt.sql = op_sql[op];
    a->stmt.values = a->values;
    a->stmt.sync = true;
    ev_timer_init(&a->retry, on_acc_retry, a);
    ev_defer_init(&a->deliver, on_acc_deliver, a);
    list_insert_tail(&rm->accepts, &a->link);
    acc_send(a);
}

const char *rm_pg_acceptor_gtid(const struct list_node *p)
{
    return container_of(p, struct pg_acc, link)->gtid;
}

void rm_pg_accepts_free(struct pg_rm *rm)
{
    while (!list_empty(&rm->accepts))
        acc_free(container_of(rm->accepts.next, struct pg_acc, link));
}
