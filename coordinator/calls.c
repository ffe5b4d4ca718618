/*
 * calls.c - the calls of an interactive transaction: its ops, its commit
 * and its abort (POST /v1/transactions/{gtid}/ops|commit|abort).
 *
 * Whether a call may run now is the protocol's to say (tx_admit_call);
 * this file finds the transaction, answers what the protocol says to
 * answer, and otherwise hands the call to the protocol with the client
 * waiting for its answer. One call at a time per transaction; an abort may
 * overtake a call still running, which then ends with the abort's outcome.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "coord_impl.h"

#include "dtx/api.h"
#include "dtx/xalloc.h"

#include <stdlib.h>

/*
 * The interactive transaction gtid when call (from who) may run now;
 * otherwise the client has been answered (404 unknown or not who's, 409
 * why, or the outcome) and NULL returned. *admit says which.
 */
static struct txent *admitted(struct coord *co, const char *gtid, const char *who,
                              enum tx_call call, struct httpd_req *client, enum tx_admit *admit)
{
    struct txent *e = txtab_find(&co->tab, gtid);
    struct dtx_err why;
    char *body;

    if (!e || !tx_owned_by(e->tx, who)) { /* another client's is as good as none */
        httpd_reply_errorf(client, DTX_ENOTFOUND,
                           "no transaction '%s' here (never begun, or finished and forgotten)",
                           gtid);
        return NULL;
    }
    dtx_err_clear(&why);
    switch ((*admit = tx_admit_call(e->tx, call, &why))) {
    case TXA_GO:
        return e;
    case TXA_REFUSE:
        httpd_reply_error(client, &why);
        break;
    case TXA_OUTCOME:
        coord_reply_outcome(client, e);
        break;
    case TXA_WAIT:
        txent_add_waiter(e, client);
        break;
    case TXA_ABORTED:
        body = xasprintf("{\"gtid\":\"%s\",\"status\":\"aborted\"}", tx_gtid(e->tx));
        httpd_reply_json(client, 200, body);
        break;
    }
    return NULL;
}

void coord_ops(struct coord *co, const char *gtid, struct txreq *req, struct httpd_req *client)
{
    struct dtx_err err;
    enum tx_admit admit;
    struct txent *e = admitted(co, gtid, req->client, TX_CALL_OPS, client, &admit);

    if (!e)
        return;
    dtx_err_clear(&err);
    if (tx_protocol(e->tx) == 3 && api_check_3pc_shards(e->tx, req, &err) < 0) {
        httpd_reply_error(client, &err); /* refused before it runs: the transaction goes on */
        return;
    }
    tx_reset_ops(e->tx);
    for (size_t i = 0; i < req->nops; i++)
        tx_add_op(e->tx, req->ops[i].shard, req->ops[i].op, i);
    tx_begin_call(e->tx, TX_CALL_OPS);
    txent_add_waiter(e, client);
    tx_step(e->tx, TXE_EXEC, NULL);
}

void coord_commit(struct coord *co, const char *gtid, const char *who, struct httpd_req *client)
{
    enum tx_admit admit;
    struct txent *e = admitted(co, gtid, who, TX_CALL_COMMIT, client, &admit);

    if (!e)
        return;
    tx_begin_call(e->tx, TX_CALL_COMMIT);
    txent_add_waiter(e, client);
    tx_step(e->tx, TXE_COMMIT, NULL);
}

void coord_abort(struct coord *co, const char *gtid, const char *who, struct httpd_req *client)
{
    enum tx_admit admit;
    struct txent *e = admitted(co, gtid, who, TX_CALL_ABORT, client, &admit);
    struct dtx_err err;
    struct tx_evarg a = {.err = &err};
    struct txwaiter *running;
    unsigned status;
    char *body;

    if (!e)
        return;
    dtx_err_clear(&err);
    dtx_err_set(&err, DTX_EABORTED, "the client aborted the transaction");
    running = txent_take_waiters(e); /* a call still running ends with the abort */
    tx_begin_call(e->tx, TX_CALL_ABORT);
    txent_add_waiter(e, client);
    tx_step(e->tx, TXE_ABORT, &a);
    if (!running)
        return;
    body = tx_render_answer(e->tx, &status);
    coord_reply_all(running, status, body);
    free(body);
}
