/*
 * tx_render.c - what the protocol says to the outside world: the peer
 * messages for a branch, the client's answers, and the transaction's state
 * as GET /v1/transactions/{gtid} shows it. Part of the tx module (it reads
 * struct tx, tx_impl.h); it decides nothing and changes nothing but the
 * branch ops a message takes.
 *
 * Results are never parsed: each branch's RESULTS trailer (msg.h) is
 * spliced into the client's answer as the participant sent it, so values
 * reach the client exactly as PostgreSQL printed them.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "tx_impl.h"

#include "dtx/buf.h"
#include "dtx/idemkey.h"
#include "dtx/jsonx.h"
#include "dtx/msg.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *shard_name(const struct tx *tx, const struct tx_branch *b)
{
    return tx->env->shard_names[b->shard];
}

/* ---- peer messages ------------------------------------------------------------------ */

static cJSON *take_ops(struct tx_branch *b)
{
    cJSON *ops = b->ops ? b->ops : jsonx_new_array();

    b->ops = NULL;
    return ops;
}

cJSON *tx_message(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    cJSON *m;

    switch (what) {
    case TX_SEND_PREPARE:
    case TX_SEND_ONE_PHASE:
        m = msg_new(what == TX_SEND_PREPARE ? MSG_PREPARE : MSG_ONE_PHASE, tx->gtid);
        jsonx_add(m, "ops", take_ops(b));
        jsonx_add_num(m, "timeout_ms", tx->timeout_ms);
        if (tx->interactive)
            jsonx_add_bool(m, "interactive", true); /* end the open branch, never a new one */
        return m;
    case TX_SEND_EXEC:
        m = msg_new(MSG_EXEC, tx->gtid);
        jsonx_add(m, "ops", take_ops(b));
        jsonx_add_num(m, "timeout_ms", tx->timeout_ms);
        jsonx_add_num(m, "idle_ms", tx->idle_ms);
        return m;
    case TX_SEND_COMMIT:
        m = msg_new(MSG_COMMIT, tx->gtid);
        msg_add_xid(m, b->xid);
        if (b->db[0])
            jsonx_add_str(m, "db", b->db);
        return m;
    case TX_SEND_ACCEPT: {
        struct ballot b0;

        tx3pc_accepted(tx, &b0);
        m = msg_new(MSG_ACCEPT, tx->gtid);
        jsonx_add(m, "ballot", ballot_json(&b0));
        jsonx_add_str(m, "value", "commit");
        return m;
    }
    case TX_SEND_FORGET:
        return msg_new(MSG_FORGET, tx->gtid);
    case TX_SEND_ABORT:
        break;
    }
    return msg_new(MSG_ABORT, tx->gtid);
}

/* ---- rendering -------------------------------------------------------------------- */

/*
 * The client's results array: each op's result, in op order, as the raw
 * JSON text the participant sent with "shard" put in front. Nothing is
 * parsed, so no value is rounded on the way.
 */
static cJSON *results_array(const struct tx *tx)
{
    cJSON *arr;

    struct msg_results *next; /* each branch's: its ops come in op order */

    if (tx->stored_results)
        return cJSON_CreateRaw(tx->stored_results);
    arr = jsonx_new_array();
    next = xcalloc(tx->nbranches ? tx->nbranches : 1, sizeof(*next));
    for (size_t j = 0; j < tx->nbranches; j++)
        msg_results_init(&next[j], tx->branches[j].results, tx->branches[j].results_len);
    for (size_t i = 0; i < tx->nops; i++) {
        const struct tx_branch *b = &tx->branches[tx->ops[i].branch];
        struct msg_results *r = &next[tx->ops[i].branch];
        const char *p = NULL;
        size_t n = 0;
        bool found = false;
        struct buf item = BUF_INIT;

        buf_printf(&item, "{\"shard\":\"%s\"", shard_name(tx, b));
        /* forward only, one pass over each branch's results (a scan from the start for
         * each op was quadratic in them) */
        while (!found && r->k <= tx->ops[i].index && msg_results_next(r, &p, &n))
            found = r->k == (size_t)tx->ops[i].index + 1;
        if (found && n > 2 && p[0] == '{') {
            buf_putc(&item, ',');
            buf_append(&item, p + 1, n - 1);
        } else {
            buf_putc(&item, '}');
        }
        jsonx_append(arr, cJSON_CreateRaw(item.data));
        buf_release(&item);
    }
    free(next);
    return arr;
}

char *tx_render_results(const struct tx *tx)
{
    cJSON *arr = results_array(tx);
    char *s = jsonx_print(arr);

    cJSON_Delete(arr);
    return s;
}

static void add_pending_shards(const struct tx *tx, cJSON *root)
{
    cJSON *arr = NULL;

    for (size_t i = 0; i < tx->nbranches; i++) {
        const struct tx_branch *b = &tx->branches[i];

        if (b->state != BR_COMMITTING && b->state != BR_ABORTING && b->state != BR_LOST)
            continue;
        if (!arr)
            arr = jsonx_new_array();
        jsonx_append(arr, cJSON_CreateString(shard_name(tx, b)));
    }
    if (arr)
        jsonx_add(root, "pending_shards", arr);
}

/* An aborted transaction's error (every abort records one; "aborted" if somehow not). */
static void add_error(cJSON *root, const struct tx *tx)
{
    struct dtx_err e;

    if (tx->error) {
        jsonx_add(root, "error", jsonx_error_obj(tx->error));
        return;
    }
    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_EABORTED, "the transaction was aborted");
    jsonx_add(root, "error", jsonx_error_obj(&e));
}

char *tx_render_answer(const struct tx *tx, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    char *s;

    jsonx_add_str(root, "gtid", tx->gtid);
    switch (tx->state) {
    case TX_COMMITTED:
    case TX_COMMITTING:
        *status = 200;
        jsonx_add_str(root, "status", "committed");
        if (tx->results_dropped) {
            jsonx_add(root, "results", cJSON_CreateNull());
            jsonx_add_str(root, "results_dropped",
                          "the results of this answer were dropped to keep the answers held for "
                          "retries within retention_max_bytes; the outcome stands");
        } else {
            jsonx_add(root, "results", results_array(tx));
        }
        break;
    case TX_ABORTED:
    case TX_ABORTING:
        *status = tx_refused_for_room(tx) ? 429 : 409; /* a shard had no room: retry */
        jsonx_add_str(root, "status", "aborted");
        add_error(root, tx);
        break;
    default:
        *status = 504;
        jsonx_add_str(root, "status", dtx_status_name(tx_status(tx)));
        if (tx->error) {
            jsonx_add(root, "error", jsonx_error_obj(tx->error));
        } else {
            struct dtx_err e;

            dtx_err_clear(&e);
            dtx_err_set(&e, DTX_EUNKNOWN,
                        "the outcome is not known yet; ask GET /v1/transactions/%s", tx->gtid);
            jsonx_add(root, "error", jsonx_error_obj(&e));
        }
        break;
    }
    add_pending_shards(tx, root);
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

cJSON *tx_state_json(const struct tx *tx)
{
    cJSON *root = jsonx_new_object();
    cJSON *shards = jsonx_new_array();

    jsonx_add_str(root, "gtid", tx->gtid);
    jsonx_add_str(root, "status", dtx_status_name(tx_status(tx)));
    jsonx_add_str(root, "protocol", tx->protocol == 3 ? "3pc" : "2pc");
    if (tx->state == TX_ONE_PHASE || tx->state == TX_UNKNOWN ||
        (tx->state == TX_COMMITTED && !tx->replayed && tx_path(tx) == TXP_ONE_PHASE))
        jsonx_add_bool(root, "one_phase", true); /* the one-phase path, or committed on it */
    if (tx->state == TX_IN_DOUBT)
        jsonx_add_bool(root, "in_doubt", true);
    if (tx->client)
        jsonx_add_str(root, "client", tx->client);
    if (tx->idem_key)
        jsonx_add_str(root, "idempotency_key", idemkey_shown(tx->idem_key));
    jsonx_add_time(root, "created_at", tx->created_wall_us);
    jsonx_add_time(root, "decided_at", tx->decided_wall_us);
    for (size_t i = 0; i < tx->nbranches; i++) {
        cJSON *b = jsonx_new_object();

        jsonx_add_str(b, "name", shard_name(tx, &tx->branches[i]));
        jsonx_add_str(b, "state", tx_branch_state_name(tx->branches[i].state));
        if (tx->branches[i].xid) {
            char xid[24];

            snprintf(xid, sizeof(xid), "%" PRIu64, tx->branches[i].xid);
            jsonx_add_str(b, "xid", xid);
        }
        if (tx->branches[i].sends)
            jsonx_add_num(b, "phase2_sends", tx->branches[i].sends);
        if (tx->branches[i].last_error)
            jsonx_add_str(b, "last_error", tx->branches[i].last_error);
        if (tx->branches[i].forgotten)
            jsonx_add_bool(b, "forgotten", true);
        if (tx->branches[i].heuristic)
            jsonx_add_str(b, "heuristic",
                          tx->branches[i].heuristic == DREC_HEUR_MIXED ? "mixed" : "hazard");
        if (tx->branches[i].accept_state != TXA3_NONE) /* three-phase commit's pre-commit */
            jsonx_add_str(b, "precommit",
                          tx->branches[i].accept_state == TXA3_ACCEPTED ? "accepted" : "refused");
        jsonx_append(shards, b);
    }
    jsonx_add(root, "shards", shards);
    if (tx->error)
        jsonx_add(root, "error", jsonx_error_obj(tx->error));
    return root;
}

/* The answer to an interactive transaction's call, when it is not the outcome's. */
char *tx_render_reply(const struct tx *tx, unsigned *status)
{
    char *res, *s;

    if (tx->interactive && tx->call == TX_CALL_OPS && tx->state == TX_ACTIVE) {
        res = tx_render_results(tx);
        *status = 200;
        s = xasprintf("{\"gtid\":\"%s\",\"results\":%s}", tx->gtid, res);
        free(res);
        return s;
    }
    if (tx->interactive && tx->call == TX_CALL_ABORT &&
        (tx->state == TX_ABORTED || tx->state == TX_ABORTING)) {
        *status = 200;
        return xasprintf("{\"gtid\":\"%s\",\"status\":\"aborted\"}", tx->gtid);
    }
    return tx_render_answer(tx, status);
}

char *tx_render_begun(const struct tx *tx)
{
    return xasprintf("{\"gtid\":\"%s\",\"status\":\"active\",\"timeout_ms\":%u}", tx->gtid,
                     tx->idle_ms);
}

size_t tx_retained_bytes(const struct tx *tx)
{
    return tx->stored_results ? strlen(tx->stored_results) : 0;
}
