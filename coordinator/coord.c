/*
 * coord.c - the coordinator engine: owns every transaction, the decision
 * log and the participant links, and implements the protocol's tx_env.
 *
 * Thread model: one event-loop thread runs everything here: HTTP handlers
 * (api.c), peer frames (pc.c), timers and the decision log's durability
 * callbacks. The only other thread is the decision log's writer (dlog.c),
 * which touches none of this state. Nothing here blocks: a slow shard or a
 * slow fsync only delays the transactions that wait for it.
 *
 * Transactions live in co->txs (by gtid) and, with an idempotency key, in
 * co->idem. Until final a transaction is on co->live; then it moves to
 * co->retained (oldest first), where it stays retention_s seconds (at most
 * retention_max of them) to answer GET and idempotent retries. A
 * transaction whose COMMIT record is being forced also waits on
 * co->log_wait, in lsn order, which is the order the log makes records
 * durable.
 *
 * Start-up: the decision log is replayed. A COMMIT record without an END
 * record is a decided commit whose phase 2 may be unfinished: it becomes a
 * live transaction in COMMITTING that resends COMMIT PREPARED as each
 * participant connects. Then a BOOT record with a new epoch is forced, so
 * gtids (node-epoch-seq) never repeat across restarts.
 */
#include "dtx/coord.h"
#include "dtx/buf.h"
#include "dtx/dlog.h"
#include "dtx/failpoint.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/msg.h"
#include "dtx/pc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum coord_state { CO_STARTING, CO_RUNNING, CO_STOPPING, CO_FAILED };

struct waiter {
    struct waiter *next;
    struct httpd_req *req;
};

struct metrics {
    uint64_t started;
    uint64_t committed;
    uint64_t aborted;
    uint64_t one_phase;
    uint64_t readonly;
    uint64_t unknown;
    uint64_t in_doubt;
    uint64_t idem_replays;
    uint64_t refused; /* over max_active_transactions */
    uint64_t aborts_by_code[32];
};

/* The operator notes about one transaction (co->notes, by gtid). */
struct noted {
    struct hmap_node node;
    char gtid[DTX_GTID_MAX + 1];
    struct coord_opnote *notes;
};

/* An OPERATOR record on its way to disk. */
struct op_wait {
    struct list_node link; /* on co->op_wait, in lsn order */
    uint64_t lsn;
    char gtid[DTX_GTID_MAX + 1];
    struct coord_opnote note;
    coord_done_fn done;
    void *arg;
};

struct coord {
    const struct coord_config *cfg;
    struct ev_loop *loop;
    struct dlog *log;
    struct pc **links;
    const char **shard_names;
    struct tx_env env;
    struct hmap txs;
    struct hmap idem;
    struct list_node live;
    struct list_node retained;
    struct list_node log_wait;
    struct hmap notes;        /* struct noted, by gtid */
    struct list_node op_wait; /* struct op_wait */
    struct list_node admin;   /* admin.c's pending questions to participants */
    size_t nlive;
    size_t nretained;
    size_t retained_bytes; /* answers and results kept for idempotent retries */
    uint64_t evicted;      /* final transactions dropped from memory since start */
    uint64_t epoch;
    uint64_t seq;
    enum coord_state state;
    struct dtx_err fail;
    struct ev_timer tick;
    struct metrics m;
};

/* ---- waiting clients ------------------------------------------------------ */

static void add_waiter(struct tx *tx, struct httpd_req *req)
{
    struct waiter *w = calloc(1, sizeof(*w));

    if (!w)
        abort();
    w->req = req;
    w->next = tx->waiters;
    tx->waiters = w;
}

static void reply_waiters(struct tx *tx, unsigned status, const char *body)
{
    struct waiter *w = tx->waiters;

    tx->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;

        httpd_reply_json(w->req, status, strdup(body));
        free(w);
        w = next;
    }
}

/* Answers client with tx's outcome as it stands. */
static void reply_rendered(struct httpd_req *client, const struct tx *tx)
{
    unsigned status;
    char *body = tx_render_answer(tx, &status);

    httpd_reply_json(client, status, body);
}

static void drop_waiters(struct tx *tx)
{
    struct waiter *w = tx->waiters;

    tx->waiters = NULL;
    while (w) {
        struct waiter *next = w->next;

        free(w);
        w = next;
    }
}

/* ---- operator notes ------------------------------------------------------- */

static struct noted *find_noted(const struct coord *co, const char *gtid)
{
    struct hmap_node *n = hmap_get(&co->notes, gtid);

    return n ? container_of(n, struct noted, node) : NULL;
}

static void add_note(struct coord *co, const char *gtid, const struct coord_opnote *src)
{
    struct noted *nd = find_noted(co, gtid);
    struct coord_opnote *n = calloc(1, sizeof(*n)), **tail;

    if (!n)
        abort();
    *n = *src;
    n->next = NULL;
    n->who = strdup(src->who ? src->who : "");
    n->reason = strdup(src->reason ? src->reason : "");
    if (!n->who || !n->reason)
        abort();
    if (!nd) {
        if (!(nd = calloc(1, sizeof(*nd))))
            abort();
        snprintf(nd->gtid, sizeof(nd->gtid), "%s", gtid);
        hmap_put(&co->notes, &nd->node, nd->gtid);
    }
    for (tail = &nd->notes; *tail; tail = &(*tail)->next)
        ;
    *tail = n;
}

static void free_notes(struct coord_opnote *n)
{
    while (n) {
        struct coord_opnote *next = n->next;

        free(n->who);
        free(n->reason);
        free(n);
        n = next;
    }
}

static void note_rec(struct dlog_rec *rec, const char *gtid, const struct coord_opnote *n)
{
    memset(rec, 0, sizeof(*rec));
    rec->type = DLOG_OPERATOR;
    rec->gtid = gtid;
    rec->wall_us = n->wall_us;
    rec->op_kind = (uint8_t)n->kind;
    rec->op_commit = n->commit;
    rec->shard = n->shard;
    rec->who = n->who;
    rec->reason = n->reason;
}

/* ---- tx_env: what the protocol does to the world -------------------------- */

static cJSON *build_message(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    cJSON *m;

    switch (what) {
    case TX_SEND_PREPARE:
    case TX_SEND_ONE_PHASE:
        m = msg_new(what == TX_SEND_PREPARE ? MSG_PREPARE : MSG_ONE_PHASE, tx->gtid);
        jsonx_add(m, "ops", b->ops ? b->ops : jsonx_new_array());
        b->ops = NULL;
        jsonx_add_num(m, "timeout_ms", tx->timeout_ms);
        if (tx->interactive)
            jsonx_add_bool(m, "interactive", true); /* end the open branch, never a new one */
        return m;
    case TX_SEND_EXEC:
        m = msg_new(MSG_EXEC, tx->gtid);
        jsonx_add(m, "ops", b->ops ? b->ops : jsonx_new_array());
        b->ops = NULL;
        jsonx_add_num(m, "timeout_ms", tx->timeout_ms);
        jsonx_add_num(m, "idle_ms", tx->idle_ms);
        return m;
    case TX_SEND_COMMIT:
        m = msg_new(MSG_COMMIT, tx->gtid);
        msg_add_xid(m, b->xid);
        return m;
    case TX_SEND_ABORT:
        break;
    }
    return msg_new(MSG_ABORT, tx->gtid);
}

static int env_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    struct coord *co = tx->env->ctx;
    struct pc *pc = co->links[b->shard];
    cJSON *m;
    char *s;
    int rc;

    if (!pc_is_up(pc))
        return DTX_EUNAVAIL;
    if (what == TX_SEND_COMMIT)
        fp_hit("coord.phase2_send"); /* @2: phase 2 reached only the first shard */
    m = build_message(tx, b, what);
    s = jsonx_print(m);
    rc = pc_send(pc, s, strlen(s));
    free(s);
    cJSON_Delete(m);
    return rc;
}

/*
 * Fills rec with tx's COMMIT record: its branches that voted yes (they have
 * an xid) and, for an idempotency key, the client's results. *br and
 * *results are malloc'd for the caller to free.
 */
static void commit_rec(const struct coord *co, const struct tx *tx, struct dlog_rec *rec,
                       struct dlog_branch **br, char **results)
{
    size_t n = 0;

    *br = calloc(tx->nbranches ? tx->nbranches : 1, sizeof(**br));
    if (!*br)
        abort();
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (!tx->branches[i].xid)
            continue;
        (*br)[n].shard = co->shard_names[tx->branches[i].shard];
        (*br)[n++].xid = tx->branches[i].xid;
    }
    *results = tx->idem_key ? tx_render_results(tx) : NULL;
    memset(rec, 0, sizeof(*rec));
    rec->type = DLOG_COMMIT;
    rec->wall_us = tx->decided_wall_us;
    rec->gtid = tx->gtid;
    rec->protocol = tx->protocol;
    rec->idem_key = tx->idem_key;
    rec->req_hash = tx->req_hash;
    rec->results = *results;
    rec->nbranches = n;
    rec->branches = *br;
}

static uint64_t env_log_commit(struct tx *tx)
{
    struct coord *co = tx->env->ctx;
    struct dlog_branch *br;
    struct dlog_rec rec;
    char *results;
    uint64_t lsn;

    fp_hit("coord.before_log"); /* every vote is in; the decision is not durable */
    commit_rec(co, tx, &rec, &br, &results);
    lsn = dlog_append(co->log, &rec, true);
    if (lsn)
        list_insert_tail(&co->log_wait, &tx->wait_link);
    free(results);
    free(br);
    return lsn;
}

static void env_log_end(struct tx *tx)
{
    struct coord *co = tx->env->ctx;
    struct dlog_rec rec;

    memset(&rec, 0, sizeof(rec));
    rec.type = DLOG_END;
    rec.wall_us = ev_wall_us();
    rec.gtid = tx->gtid;
    dlog_append(co->log, &rec, false);
}

/* The answer to an interactive transaction's call, when it is not the outcome's. */
static char *render_call(const struct tx *tx, unsigned *status)
{
    cJSON *root;
    char *s, *res;

    if (tx->call == TX_CALL_OPS && tx->state == TX_ACTIVE) {
        res = tx_render_results(tx);
        *status = 200;
        if (asprintf(&s, "{\"gtid\":\"%s\",\"results\":%s}", tx->gtid, res) < 0)
            abort();
        free(res);
        return s;
    }
    if (tx->call == TX_CALL_ABORT && (tx->state == TX_ABORTED || tx->state == TX_ABORTING)) {
        root = jsonx_new_object();
        jsonx_add_str(root, "gtid", tx->gtid);
        jsonx_add_str(root, "status", "aborted");
        *status = 200;
        s = jsonx_print(root);
        cJSON_Delete(root);
        return s;
    }
    return tx_render_answer(tx, status);
}

static void env_answer(struct tx *tx)
{
    unsigned status;
    char *body;

    if (!tx->waiters)
        return;
    body = tx->interactive ? render_call(tx, &status) : tx_render_answer(tx, &status);
    reply_waiters(tx, status, body);
    free(body);
    tx->call = TX_CALL_NONE;
}

static void env_arm(struct tx *tx, uint32_t ms)
{
    struct coord *co = tx->env->ctx;

    if (ms == 0)
        ev_timer_stop(co->loop, &tx->timer);
    else
        ev_timer_start(co->loop, &tx->timer, ms);
}

static void count_final(struct coord *co, struct tx *tx)
{
    int code = -tx_error_code(tx);

    if (tx->replayed || tx->counted)
        return;
    tx->counted = true;
    if (tx->state == TX_COMMITTED) {
        co->m.committed++;
        co->m.one_phase += tx->nbranches == 1 && tx->lsn == 0;
        co->m.readonly += tx->lsn == 0 && tx->nbranches > 1;
    } else if (tx->state == TX_ABORTED) {
        co->m.aborted++;
        if (code > 0 && code < 32)
            co->m.aborts_by_code[code]++;
    } else if (tx->state == TX_UNKNOWN) {
        co->m.unknown++;
    }
}

static void retain(struct coord *co, struct tx *tx)
{
    if (tx->retained)
        return;
    list_remove(&tx->link);
    co->nlive--;
    tx->retained = true;
    tx->expire_us = ev_now_us(co->loop) + (uint64_t)co->cfg->retention_s * 1000000u;
    list_insert_tail(&co->retained, &tx->link);
    co->nretained++;
}

/* Keeps co->retained_bytes up to date with what a retained transaction holds (0: evicted). */
static void account_retained(struct coord *co, struct tx *tx, bool keep)
{
    size_t n = 0;

    if (keep && tx->answer_body)
        n += strlen(tx->answer_body);
    if (keep && tx->stored_results)
        n += strlen(tx->stored_results);
    co->retained_bytes = co->retained_bytes - tx->retained_bytes + n;
    tx->retained_bytes = n;
}

static void env_finished(struct tx *tx)
{
    struct coord *co = tx->env->ctx;

    count_final(co, tx);
    list_remove(&tx->wait_link);
    ev_timer_stop(co->loop, &tx->timer);
    if (tx->idem_key) {
        if (!tx->stored_results && tx->state == TX_COMMITTED)
            tx->stored_results = tx_render_results(tx); /* for checkpoints */
        free(tx->answer_body);
        tx->answer_body = tx_render_answer(tx, &tx->answer_status);
    }
    for (size_t i = 0; i < tx->nbranches; i++) {
        cJSON_Delete(tx->branches[i].ops);
        free(tx->branches[i].results);
        tx->branches[i].ops = NULL;
        tx->branches[i].results = NULL;
    }
    retain(co, tx);
    account_retained(co, tx, true);
}

/* ---- transaction table ---------------------------------------------------- */

/*
 * Every protocol step goes through here, so that the decision log knows
 * how many transactions are about to decide (its group-commit delay waits
 * for them only when there are enough).
 */
static int step(struct coord *co, struct tx *tx, enum tx_event ev, const struct tx_evarg *a)
{
    bool was = tx->state == TX_PREPARING;
    int rc = tx_step(tx, ev, a);
    bool is = tx->state == TX_PREPARING;

    if (was != is && co->log)
        dlog_hint_deciding(co->log, is ? 1 : -1);
    return rc;
}

static struct tx *find_tx(const struct coord *co, const char *gtid)
{
    struct hmap_node *n = gtid ? hmap_get(&co->txs, gtid) : NULL;

    return n ? container_of(n, struct tx, by_gtid) : NULL;
}

static void on_tx_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct tx *tx = t->data;

    (void)loop;
    step(tx->env->ctx, tx, TXE_TIMEOUT, NULL);
}

static void insert_tx(struct coord *co, struct tx *tx)
{
    ev_timer_init(&tx->timer, on_tx_timer, tx);
    hmap_put(&co->txs, &tx->by_gtid, tx->gtid);
    if (tx->idem_key)
        hmap_put(&co->idem, &tx->by_idem, tx->idem_key);
    list_insert_tail(&co->live, &tx->link);
    co->nlive++;
}

static void evict(struct coord *co, struct tx *tx)
{
    list_remove(&tx->link);
    co->nretained--;
    co->evicted++;
    account_retained(co, tx, false);
    hmap_remove(&co->txs, &tx->by_gtid);
    if (tx->idem_key)
        hmap_remove(&co->idem, &tx->by_idem);
    drop_waiters(tx);
    tx_free(tx);
}

static void expire_retained(struct coord *co)
{
    uint64_t now = ev_now_us(co->loop);

    while (!list_empty(&co->retained)) {
        struct tx *tx = container_of(co->retained.next, struct tx, link);

        if (co->nretained <= co->cfg->retention_max &&
            co->retained_bytes <= co->cfg->retention_max_bytes && tx->expire_us > now)
            break;
        evict(co, tx);
    }
}

/* Appends client op i to b's ops (taking its sql, params and expect_rows); its index there. */
static uint16_t attach_op(struct tx_branch *b, cJSON *op, size_t i)
{
    cJSON *o = jsonx_new_object();

    if (!b->ops)
        b->ops = jsonx_new_array();
    jsonx_add_num(o, "i", (double)i);
    jsonx_add(o, "sql", cJSON_DetachItemFromObjectCaseSensitive(op, "sql"));
    if (cJSON_HasObjectItem(op, "params"))
        jsonx_add(o, "params", cJSON_DetachItemFromObjectCaseSensitive(op, "params"));
    if (cJSON_HasObjectItem(op, "expect_rows"))
        jsonx_add(o, "expect_rows", cJSON_DetachItemFromObjectCaseSensitive(op, "expect_rows"));
    jsonx_append(b->ops, o);
    return (uint16_t)b->nops++;
}

/* Builds the transaction for a validated request; takes the request's ops. */
static struct tx *build_tx(struct coord *co, struct txreq *req)
{
    int branch_of[CONF_MAX_SHARDS];
    size_t nb = 0;
    char gtid[DTX_GTID_MAX + 1];
    struct tx *tx;

    for (size_t i = 0; i < co->cfg->nshards; i++)
        branch_of[i] = -1;
    for (size_t i = 0; i < req->nops; i++) {
        if (branch_of[req->ops[i].shard] < 0)
            branch_of[req->ops[i].shard] = (int)nb++;
    }
    gid_format_gtid(gtid, sizeof(gtid), co->cfg->node_id, co->epoch, ++co->seq);
    tx = tx_new(gtid, &co->env, nb, req->nops);
    for (size_t i = 0; i < req->nops; i++) {
        struct tx_branch *b = &tx->branches[branch_of[req->ops[i].shard]];

        b->shard = req->ops[i].shard;
        tx->ops[i].branch = (uint16_t)branch_of[req->ops[i].shard];
        tx->ops[i].index = attach_op(b, req->ops[i].op, i);
    }
    tx->protocol = req->protocol;
    tx->interactive = req->interactive;
    tx->timeout_ms = req->interactive ? co->cfg->prepare_timeout_ms : req->timeout_ms;
    tx->idle_ms = req->interactive ? req->timeout_ms : 0;
    tx->commit_wait_ms = co->cfg->commit_wait_ms;
    tx->results_limit = co->cfg->max_logged_results_bytes;
    tx->created_wall_us = ev_wall_us();
    tx->req_hash = req->hash;
    if (req->idem_key && !(tx->idem_key = strdup(req->idem_key)))
        abort();
    return tx;
}

/* Answers a request that reuses an idempotency key; true when handled. */
static bool idem_replay(struct coord *co, struct txreq *req, struct httpd_req *client)
{
    struct hmap_node *n = hmap_get(&co->idem, req->idem_key);
    struct tx *tx;

    if (!n)
        return false;
    tx = container_of(n, struct tx, by_idem);
    co->m.idem_replays++;
    if (tx->req_hash != req->hash) {
        httpd_reply_errorf(client, DTX_EIDEMPOTENCY,
                           "idempotency key '%s' was used for a different request (transaction %s)",
                           req->idem_key, tx->gtid);
        return true;
    }
    if (tx->answer_body) {
        httpd_reply_json(client, tx->answer_status, strdup(tx->answer_body));
    } else if (tx->answered) {
        reply_rendered(client, tx);
    } else {
        add_waiter(tx, client);
    }
    return true;
}

void coord_submit(struct coord *co, struct txreq *req, struct httpd_req *client)
{
    struct dtx_err err;
    struct tx *tx;

    dtx_err_clear(&err);
    if (!coord_accepting(co, &err)) {
        httpd_reply_error(client, &err);
        goto out;
    }
    if (req->idem_key && idem_replay(co, req, client))
        goto out;
    if (co->nlive >= co->cfg->max_active_transactions) {
        httpd_reply_errorf(client, DTX_EBUSY,
                           "%zu transactions are in flight, the most this coordinator takes at "
                           "once (max_active_transactions); try again shortly",
                           co->nlive);
        co->m.refused++;
        goto out;
    }
    tx = build_tx(co, req);
    insert_tx(co, tx);
    co->m.started++;
    if (tx->interactive) {
        char body[160];

        env_arm(tx, tx->idle_ms);
        snprintf(body, sizeof(body), "{\"gtid\":\"%s\",\"status\":\"active\",\"timeout_ms\":%u}",
                 tx->gtid, tx->idle_ms);
        httpd_reply_json(client, 201, strdup(body));
        goto out;
    }
    add_waiter(tx, client);
    step(co, tx, tx->nbranches == 1 && !tx->idem_key ? TXE_START_1PC : TXE_START_2PC, NULL);
    fp_hit("coord.after_prepare_sent"); /* ops and PREPARE are on their way; no vote yet */
out:
    api_txreq_release(req);
}

/* ---- interactive transactions ----------------------------------------------- */

static struct tx_branch *branch_on(struct tx *tx, int shard);

/*
 * The interactive transaction gtid, ready for a new call; otherwise the
 * client has been answered (404 unknown, 409 with why) and NULL returned.
 */
static struct tx *interactive_tx(struct coord *co, const char *gtid, struct httpd_req *client,
                                 bool ending, bool busy_ok)
{
    struct tx *tx = find_tx(co, gtid);

    if (!tx) {
        httpd_reply_errorf(client, DTX_ENOTFOUND,
                           "no transaction '%s' here (never begun, or finished and forgotten)",
                           gtid);
        return NULL;
    }
    if (!tx->interactive) {
        httpd_reply_errorf(client, DTX_ECONFLICT,
                           "transaction %s was not begun as interactive; it takes no more calls",
                           gtid);
        return NULL;
    }
    if (!ending && (tx->state == TX_ABORTING || tx->state == TX_ABORTED)) {
        reply_rendered(client, tx); /* 409 with the reason */
        return NULL;
    }
    if (!ending && tx->state != TX_ACTIVE) {
        httpd_reply_errorf(client, DTX_ECONFLICT, "transaction %s is %s; it takes no more ops",
                           gtid, tx_status(tx));
        return NULL;
    }
    if (!busy_ok && tx->call != TX_CALL_NONE && tx->state == TX_ACTIVE) {
        httpd_reply_errorf(client, DTX_ECONFLICT,
                           "another request on transaction %s is still running; send the next "
                           "one when it has been answered",
                           gtid);
        return NULL;
    }
    return tx;
}

void coord_ops(struct coord *co, const char *gtid, struct txreq *req, struct httpd_req *client)
{
    struct tx *tx = interactive_tx(co, gtid, client, false, false);

    if (!tx)
        goto out;
    for (size_t i = 0; i < tx->nbranches; i++) {
        struct tx_branch *b = &tx->branches[i];

        b->nops = 0;
        free(b->results);
        b->results = NULL;
        b->results_len = 0;
    }
    free(tx->ops);
    if (!(tx->ops = calloc(req->nops, sizeof(*tx->ops))))
        abort();
    tx->nops = req->nops;
    for (size_t i = 0; i < req->nops; i++) {
        struct tx_branch *b = branch_on(tx, req->ops[i].shard);

        if (!b) {
            struct tx_branch *nb = realloc(tx->branches, (tx->nbranches + 1) * sizeof(*nb));

            if (!nb)
                abort();
            tx->branches = nb;
            b = &tx->branches[tx->nbranches++];
            memset(b, 0, sizeof(*b));
            b->shard = req->ops[i].shard;
            b->state = BR_NEW;
        }
        tx->ops[i].branch = (uint16_t)(b - tx->branches);
        tx->ops[i].index = attach_op(b, req->ops[i].op, i);
    }
    tx->call = TX_CALL_OPS;
    tx->answered = false;
    add_waiter(tx, client);
    step(co, tx, TXE_EXEC, NULL);
out:
    api_txreq_release(req);
}

void coord_commit(struct coord *co, const char *gtid, struct httpd_req *client)
{
    struct tx *tx = interactive_tx(co, gtid, client, true, false);

    if (!tx)
        return;
    if (tx->state != TX_ACTIVE) {
        /* A commit already under way (a retry after a lost answer): the same outcome. */
        if (tx->answered || tx_is_final(tx) || tx->state == TX_ABORTING ||
            tx->state == TX_COMMITTING)
            reply_rendered(client, tx);
        else
            add_waiter(tx, client);
        return;
    }
    tx->call = TX_CALL_COMMIT;
    tx->answered = false;
    tx->nops = 0; /* the commit's answer carries no results */
    add_waiter(tx, client);
    step(co, tx,
         tx->nbranches == 0   ? TXE_ALL_READONLY
         : tx->nbranches == 1 ? TXE_START_1PC
                              : TXE_START_2PC,
         NULL);
}

void coord_abort(struct coord *co, const char *gtid, struct httpd_req *client)
{
    struct tx *tx = interactive_tx(co, gtid, client, true, true);
    struct dtx_err e;
    struct tx_evarg a = {NULL, 0, NULL, 0, &e};
    struct waiter *running;
    unsigned status;
    char *body;

    if (!tx)
        return;
    if (tx->state == TX_ABORTING || tx->state == TX_ABORTED) {
        if (asprintf(&body, "{\"gtid\":\"%s\",\"status\":\"aborted\"}", tx->gtid) < 0)
            abort();
        httpd_reply_json(client, 200, body);
        return;
    }
    if (tx->state != TX_ACTIVE) {
        httpd_reply_errorf(client, DTX_ECONFLICT, "transaction %s is %s; too late to abort it",
                           gtid, tx_status(tx));
        return;
    }
    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_EABORTED, "the client aborted the transaction");
    running = tx->waiters; /* a call still running ends with the abort */
    tx->waiters = NULL;
    tx->call = TX_CALL_ABORT;
    tx->answered = false;
    add_waiter(tx, client);
    step(co, tx, TXE_ABORT, &a);
    if (running) {
        struct waiter *abort_call = tx->waiters;

        tx->waiters = running;
        body = tx_render_answer(tx, &status);
        reply_waiters(tx, status, body);
        free(body);
        tx->waiters = abort_call;
    }
}

/* ---- messages from participants ------------------------------------------- */

static struct tx_branch *branch_on(struct tx *tx, int shard)
{
    for (size_t i = 0; i < tx->nbranches; i++) {
        if (tx->branches[i].shard == shard)
            return &tx->branches[i];
    }
    return NULL;
}

/* A yes vote for a transaction this coordinator does not know: presumed abort. */
static void abort_unknown(struct coord *co, int shard, const char *gtid)
{
    cJSON *m = msg_new(MSG_ABORT, gtid);
    char *s = jsonx_print(m);

    log_info("shard '%s' voted yes for unknown transaction %s: telling it to abort",
             co->shard_names[shard], gtid);
    pc_send(co->links[shard], s, strlen(s));
    free(s);
    cJSON_Delete(m);
}

static enum tx_event event_of(const struct msg *m)
{
    switch (m->type) {
    case MSG_VOTE:
        return m->vote == VOTE_YES  ? TXE_VOTE_YES
               : m->vote == VOTE_NO ? TXE_VOTE_NO
                                    : TXE_VOTE_READONLY;
    case MSG_OUTCOME:
        return m->outcome == OUTCOME_COMMITTED ? TXE_COMMITTED_1PC
               : m->outcome == OUTCOME_ABORTED ? TXE_ABORTED_1PC
                                               : TXE_UNAVAILABLE;
    case MSG_ACK:
        return TXE_ACK;
    case MSG_EXECUTED:
        return m->err.code ? TXE_EXEC_FAILED : TXE_EXECUTED;
    default:
        return TXE_NONE;
    }
}

static void on_frame(void *arg, int shard, const char *data, size_t len)
{
    struct coord *co = arg;
    struct tx_evarg a = {NULL, 0, NULL, 0, NULL};
    struct dtx_err err;
    struct msg m;
    struct tx *tx;
    enum tx_event ev;

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) < 0) {
        log_warn("shard '%s' sent a malformed message: %s", co->shard_names[shard], err.msg);
        return;
    }
    ev = event_of(&m);
    tx = find_tx(co, m.gtid);
    if (ev == TXE_NONE) {
        log_warn("shard '%s' sent an unexpected message", co->shard_names[shard]);
    } else if (!tx) {
        if (ev == TXE_VOTE_YES)
            abort_unknown(co, shard, m.gtid);
    } else if (!(a.b = branch_on(tx, shard))) {
        log_warn("shard '%s' sent a message about %s, which has no branch there",
                 co->shard_names[shard], tx->gtid);
    } else {
        a.xid = m.xid;
        a.err = &m.err;
        snprintf(m.err.shard, sizeof(m.err.shard), "%s", co->shard_names[shard]);
        a.results = m.trailer_len ? m.trailer : NULL;
        a.results_len = m.trailer_len;
        step(co, tx, ev, &a);
    }
    msg_release(&m);
}

/* The branch of tx on shard that phase 2 still waits for, or NULL. */
static struct tx_branch *waiting_branch(struct tx *tx, int shard)
{
    struct tx_branch *b = tx && shard >= 0 ? branch_on(tx, shard) : NULL;

    if (!b || (tx->state != TX_COMMITTING && tx->state != TX_ABORTING))
        return NULL;
    return b->state == BR_COMMITTING || b->state == BR_ABORTING || b->state == BR_LOST ? b : NULL;
}

/* b's phase 2 is done by other means (an operator): as if its shard had acknowledged. */
static void ack_branch(struct coord *co, struct tx *tx, struct tx_branch *b)
{
    struct tx_evarg a = {b, 0, NULL, 0, NULL};

    step(co, tx, TXE_ACK, &a);
}

/*
 * An operator gave up on tx's branch on shard (dtxctl forget): it counts as
 * acknowledged, so the transaction can finish without it.
 */
static void apply_forget(struct coord *co, struct tx *tx, const char *shard)
{
    struct tx_branch *b = waiting_branch(tx, coord_config_shard(co->cfg, shard));

    if (!b || b->forgotten)
        return;
    b->forgotten = true;
    ack_branch(co, tx, b);
}

/* Applies the forget notes about a transaction that is live again after replay. */
static void apply_forgets(struct coord *co, struct tx *tx)
{
    const struct noted *nd = find_noted(co, tx->gtid);

    for (const struct coord_opnote *n = nd ? nd->notes : NULL; n; n = n->next) {
        if (n->kind == DLOG_OP_FORGET)
            apply_forget(co, tx, n->shard);
    }
}

/* ---- participant links ----------------------------------------------------- */

static void on_link_down(void *arg, int shard, const char *why)
{
    struct coord *co = arg;
    struct list_node *pos, *tmp;

    log_warn("lost participant of shard '%s': %s", co->shard_names[shard], why);
    list_for_each_safe(pos, tmp, &co->live)
    {
        struct tx *tx = container_of(pos, struct tx, link);
        struct tx_branch *b = branch_on(tx, shard);
        struct tx_evarg a = {b, 0, NULL, 0, NULL};

        if (b && (b->state == BR_PREPARING || b->state == BR_COMMITTING ||
                  b->state == BR_ABORTING || b->state == BR_OPEN || b->state == BR_EXECUTING))
            step(co, tx, TXE_UNAVAILABLE, &a);
    }
}

static void on_link_up(void *arg, int shard)
{
    struct coord *co = arg;
    struct list_node *pos, *tmp;

    log_info("participant of shard '%s' connected", co->shard_names[shard]);
    list_for_each_safe(pos, tmp, &co->live)
    {
        struct tx *tx = container_of(pos, struct tx, link);
        struct tx_branch *b = branch_on(tx, shard);

        if (b && b->state == BR_LOST && (tx->state == TX_COMMITTING || tx->state == TX_ABORTING))
            step(co, tx, TXE_RESEND, NULL);
    }
}

/* ---- decision log callbacks ------------------------------------------------- */

static void on_durable(void *arg, uint64_t lsn)
{
    struct coord *co = arg;

    while (!list_empty(&co->log_wait)) {
        struct tx *tx = container_of(co->log_wait.next, struct tx, wait_link);

        if (tx->lsn > lsn)
            break;
        list_remove(&tx->wait_link);
        fp_hit("coord.after_durable"); /* the decision is durable; no COMMIT PREPARED sent */
        step(co, tx, TXE_DURABLE, NULL);
    }
    while (!list_empty(&co->op_wait)) {
        struct op_wait *w = container_of(co->op_wait.next, struct op_wait, link);
        struct tx *tx = find_tx(co, w->gtid);

        if (w->lsn > lsn)
            break;
        list_remove(&w->link);
        add_note(co, w->gtid, &w->note);
        if (w->note.kind == DLOG_OP_FORGET && tx)
            apply_forget(co, tx, w->note.shard);
        w->done(w->arg, 0, NULL);
        free(w->note.who);
        free(w->note.reason);
        free(w);
    }
}

/* Ends the operator records still waiting for the disk: with err, or (NULL) as shutting down. */
static void fail_op_waits(struct coord *co, const struct dtx_err *err)
{
    while (!list_empty(&co->op_wait)) {
        struct op_wait *w = container_of(co->op_wait.next, struct op_wait, link);

        list_remove(&w->link);
        w->done(w->arg, err ? err->code : DTX_ESHUTDOWN, err);
        free(w->note.who);
        free(w->note.reason);
        free(w);
    }
}

static void on_log_failed(void *arg, const struct dtx_err *err)
{
    struct coord *co = arg;

    co->state = CO_FAILED;
    co->fail = *err;
    log_error("no longer taking transactions: %s", err->msg);
    while (!list_empty(&co->log_wait)) {
        struct tx *tx = container_of(co->log_wait.next, struct tx, wait_link);

        list_remove(&tx->wait_link);
        co->m.in_doubt++;
        step(co, tx, TXE_LOG_FAILED, NULL);
    }
    fail_op_waits(co, err);
}

/* ---- replay ---------------------------------------------------------------- */

static int replay_commit(struct coord *co, const struct dlog_rec *rec, struct dtx_err *err)
{
    struct tx *tx;

    if (find_tx(co, rec->gtid))
        return 0;
    tx = tx_new(rec->gtid, &co->env, rec->nbranches, 0);
    tx->replayed = true;
    tx->protocol = rec->protocol;
    tx->decided_wall_us = rec->wall_us;
    tx->lsn = 1;
    tx->req_hash = rec->req_hash;
    if (rec->idem_key && *rec->idem_key && !(tx->idem_key = strdup(rec->idem_key)))
        abort();
    if (rec->results && *rec->results && !(tx->stored_results = strdup(rec->results)))
        abort();
    for (size_t i = 0; i < rec->nbranches; i++) {
        int s = coord_config_shard(co->cfg, rec->branches[i].shard);

        tx->branches[i].shard = s;
        tx->branches[i].xid = rec->branches[i].xid;
        if (s < 0) {
            tx_free(tx);
            return dtx_err_set(err, DTX_EINVAL,
                               "decision log: committed transaction %s has a branch on shard "
                               "'%s', which is not in the config",
                               rec->gtid, rec->branches[i].shard);
        }
    }
    insert_tx(co, tx);
    return 0;
}

static void replay_operator(struct coord *co, const struct dlog_rec *rec)
{
    struct coord_opnote n;

    memset(&n, 0, sizeof(n));
    n.kind = rec->op_kind;
    n.commit = rec->op_commit;
    snprintf(n.shard, sizeof(n.shard), "%s", rec->shard ? rec->shard : "");
    n.who = (char *)rec->who;
    n.reason = (char *)rec->reason;
    n.wall_us = rec->wall_us;
    add_note(co, rec->gtid, &n);
}

static int on_replay(void *arg, const struct dlog_rec *rec, struct dtx_err *err)
{
    struct coord *co = arg;
    struct tx *tx;

    switch (rec->type) {
    case DLOG_BOOT:
        if (rec->epoch > co->epoch)
            co->epoch = rec->epoch;
        return 0;
    case DLOG_COMMIT:
        return replay_commit(co, rec, err);
    case DLOG_END:
        tx = find_tx(co, rec->gtid);
        if (tx)
            tx->log_ended = true;
        return 0;
    case DLOG_OPERATOR:
        replay_operator(co, rec);
        return 0;
    }
    return 0;
}

/* Turns what replay found into live or retained transactions. */
static void recover(struct coord *co)
{
    struct list_node *pos, *tmp;
    size_t unfinished = 0;

    list_for_each_safe(pos, tmp, &co->live)
    {
        struct tx *tx = container_of(pos, struct tx, link);

        if (tx->log_ended) {
            uint64_t keep = (uint64_t)co->cfg->retention_s * 1000000u;
            uint64_t age =
                ev_wall_us() > tx->decided_wall_us ? ev_wall_us() - tx->decided_wall_us : 0;

            step(co, tx, TXE_RECOVER_DONE, NULL);
            tx->expire_us = age >= keep ? 0 : ev_now_us(co->loop) + keep - age;
        } else {
            unfinished++;
            step(co, tx, TXE_RECOVER, NULL);
            apply_forgets(co, tx);
        }
    }
    if (unfinished)
        log_info("recovery: %zu committed transactions still need COMMIT PREPARED on some shard",
                 unfinished);
}

/*
 * Operator notes are kept for good (they are few, and a branch resolved by
 * hand may turn up again when its shard comes back), including those whose
 * record is still being forced.
 */
static void encode_notes(const struct coord *co, struct buf *snap)
{
    struct hmap_iter it;
    struct dlog_rec rec;

    for (struct hmap_node *h = hmap_first(&co->notes, &it); h; h = hmap_next(&co->notes, &it)) {
        const struct noted *nd = container_of(h, const struct noted, node);

        for (const struct coord_opnote *n = nd->notes; n; n = n->next) {
            note_rec(&rec, nd->gtid, n);
            dlog_encode(snap, &rec);
        }
    }
    for (const struct list_node *p = co->op_wait.next; p != &co->op_wait; p = p->next) {
        const struct op_wait *w = container_of(p, const struct op_wait, link);

        note_rec(&rec, w->gtid, &w->note);
        dlog_encode(snap, &rec);
    }
}

/*
 * Writes a checkpoint: everything replay still needs, so that the log's
 * older segments can go. That is the epoch (BOOT), every decided commit not
 * yet acknowledged by all its shards, including those whose record is
 * still being forced (their record is written before the snapshot, so the
 * snapshot can only be durable after it), and the committed transactions
 * with an idempotency key still retained (COMMIT and END), so retries keep
 * getting their answer. Aborted and retained transactions without a key are
 * left out: a status query about those answers 404 after a restart.
 */
static int take_checkpoint(struct coord *co)
{
    const struct list_node *heads[2] = {&co->live, &co->retained};
    struct buf snap = BUF_INIT;
    struct dlog_rec rec;

    memset(&rec, 0, sizeof(rec));
    rec.type = DLOG_BOOT;
    rec.epoch = co->epoch;
    rec.wall_us = ev_wall_us();
    rec.node_id = co->cfg->node_id;
    dlog_encode(&snap, &rec);
    for (int h = 0; h < 2; h++) {
        for (const struct list_node *p = heads[h]->next; p != heads[h]; p = p->next) {
            const struct tx *tx = container_of(p, const struct tx, link);
            bool decided = tx->state == TX_LOGGING || tx->state == TX_COMMITTING;
            bool keep = tx->state == TX_COMMITTED && tx->idem_key;
            struct dlog_branch *br;
            char *results;

            if (!tx->lsn || !(decided || keep))
                continue;
            commit_rec(co, tx, &rec, &br, &results);
            dlog_encode(&snap, &rec);
            free(results);
            free(br);
            if (keep) {
                memset(&rec, 0, sizeof(rec));
                rec.type = DLOG_END;
                rec.gtid = tx->gtid;
                dlog_encode(&snap, &rec);
            }
        }
    }
    encode_notes(co, &snap);
    return dlog_checkpoint(co->log, &snap);
}

static void on_checkpoint_wanted(void *arg)
{
    struct coord *co = arg;

    if (take_checkpoint(co) == 0)
        log_debug("decision log: checkpoint handed to the writer");
}

/* The first checkpoint of a run carries the new epoch, so gtids never repeat. */
static int write_boot(struct coord *co, struct dtx_err *err)
{
    co->epoch++;
    if (take_checkpoint(co) < 0)
        return dlog_failed(co->log, err) ? err->code : DTX_EIO;
    return dlog_flush(co->log, err);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct coord *co = t->data;
    bool tried = true;

    if (co->state == CO_STARTING) {
        for (size_t i = 0; i < co->cfg->nshards; i++)
            tried = tried && pc_tried(co->links[i]);
        if (tried) {
            co->state = CO_RUNNING;
            log_info("coordinator '%s' (epoch %" PRIu64 ") is taking transactions on %s",
                     co->cfg->node_id, co->epoch, co->cfg->listen);
        }
    }
    expire_retained(co);
    ev_timer_start(loop, t, co->state == CO_STARTING ? 20 : 1000);
}

static void init_coord(struct coord *co, const struct coord_config *cfg, struct ev_loop *loop)
{
    co->cfg = cfg;
    co->loop = loop;
    hmap_init(&co->txs);
    hmap_init(&co->idem);
    list_init(&co->live);
    list_init(&co->retained);
    list_init(&co->log_wait);
    hmap_init(&co->notes);
    list_init(&co->op_wait);
    list_init(&co->admin);
    co->shard_names = calloc(cfg->nshards, sizeof(*co->shard_names));
    co->links = calloc(cfg->nshards, sizeof(*co->links));
    if (!co->shard_names || !co->links)
        abort();
    for (size_t i = 0; i < cfg->nshards; i++)
        co->shard_names[i] = cfg->shards[i].name;
    co->env = (struct tx_env){env_send, env_log_commit, env_log_end,     env_answer,
                              env_arm,  env_finished,   co->shard_names, co};
    dtx_err_clear(&co->fail);
    ev_timer_init(&co->tick, on_tick, co);
}

static int open_log(struct coord *co, struct dtx_err *err)
{
    struct dlog_opts o = {.dir = co->cfg->log_dir,
                          .segment_bytes = co->cfg->log_segment_bytes,
                          .prealloc_bytes = co->cfg->log_prealloc_bytes,
                          .group_delay_us = co->cfg->log_group_delay_us,
                          .group_siblings = co->cfg->log_group_siblings,
                          .loop = co->loop,
                          .on_durable = on_durable,
                          .on_failed = on_log_failed,
                          .on_checkpoint_wanted = on_checkpoint_wanted,
                          .arg = co};
    struct dlog_scan scan;
    int rc;

    rc = dlog_open(&co->log, &o, on_replay, co, &scan, err);
    if (rc < 0)
        return rc;
    log_info("decision log '%s': %" PRIu64 " records in %" PRIu64 " segments (%" PRIu64 " bytes)%s",
             co->cfg->log_dir, scan.records, scan.segments, scan.bytes,
             !scan.torn       ? ""
             : scan.torn_zero ? "; its preallocated zeros were cut off"
                              : "; a torn last write was cut off");
    return 0;
}

int coord_new(struct coord **out, const struct coord_config *cfg, struct ev_loop *loop,
              struct dtx_err *err)
{
    struct coord *co = calloc(1, sizeof(*co));
    struct pc_cbs cbs;
    int rc;

    if (!co)
        abort();
    init_coord(co, cfg, loop);
    rc = open_log(co, err);
    if (rc == 0) {
        recover(co);
        rc = write_boot(co, err);
    }
    if (rc < 0) {
        coord_free(co);
        return rc;
    }
    cbs = (struct pc_cbs){on_frame, on_link_up, on_link_down, co};
    for (size_t i = 0; i < cfg->nshards; i++)
        co->links[i] =
            pc_new(loop, (int)i, &cfg->shards[i], cfg->node_id, co->epoch, cfg->peer_token, &cbs);
    ev_timer_start(loop, &co->tick, 20);
    *out = co;
    return 0;
}

void coord_free(struct coord *co)
{
    struct hmap_iter it;
    struct hmap_node *n;

    if (!co)
        return;
    ev_timer_stop(co->loop, &co->tick);
    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_free(co->links[i]);
    for (n = hmap_first(&co->txs, &it); n; n = hmap_next(&co->txs, &it)) {
        struct tx *tx = container_of(n, struct tx, by_gtid);

        ev_timer_stop(co->loop, &tx->timer);
        drop_waiters(tx);
        tx_free(tx);
    }
    fail_op_waits(co, NULL);
    admin_abandon(co);
    for (n = hmap_first(&co->notes, &it); n; n = hmap_next(&co->notes, &it)) {
        struct noted *nd = container_of(n, struct noted, node);

        free_notes(nd->notes);
        free(nd);
    }
    hmap_release(&co->notes);
    dlog_close(co->log);
    hmap_release(&co->txs);
    hmap_release(&co->idem);
    free(co->links);
    free(co->shard_names);
    free(co);
}

void coord_flush_links(void *arg)
{
    struct coord *co = arg;

    for (size_t i = 0; co->links && i < co->cfg->nshards; i++)
        pc_flush_sync(co->links[i]);
}

void coord_begin_shutdown(struct coord *co)
{
    struct list_node *pos, *tmp;
    struct dtx_err e;
    struct tx_evarg a = {NULL, 0, NULL, 0, &e};

    if (co->state != CO_FAILED)
        co->state = CO_STOPPING;
    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_ESHUTDOWN, "the coordinator is shutting down");
    list_for_each_safe(pos, tmp, &co->live)
    {
        struct tx *tx = container_of(pos, struct tx, link);

        if (tx->interactive && tx->state == TX_ACTIVE)
            step(co, tx, TXE_ABORT, &a); /* nobody could commit it any more */
    }
}

bool coord_drained(const struct coord *co)
{
    const struct list_node *pos;

    for (pos = co->live.next; pos != &co->live; pos = pos->next) {
        const struct tx *tx = container_of(pos, const struct tx, link);

        if (tx->state != TX_IN_DOUBT && !tx->replayed)
            return false;
    }
    return true;
}

bool coord_accepting(const struct coord *co, struct dtx_err *why)
{
    switch (co->state) {
    case CO_RUNNING:
        return true;
    case CO_STARTING:
        dtx_err_set(why, DTX_ESHUTDOWN, "the coordinator is starting");
        return false;
    case CO_STOPPING:
        dtx_err_set(why, DTX_ESHUTDOWN, "the coordinator is shutting down");
        return false;
    case CO_FAILED:
        dtx_err_set(why, DTX_ELOGFAIL, "the coordinator takes no transactions: %s", co->fail.msg);
        return false;
    }
    return false;
}

const struct tx *coord_find(const struct coord *co, const char *gtid)
{
    return find_tx(co, gtid);
}

static const char *outcome_of_known(const struct tx *tx, int shard, uint64_t *xid)
{
    switch (tx->state) {
    case TX_COMMITTED:
    case TX_COMMITTING:
        for (size_t i = 0; i < tx->nbranches; i++) {
            if (tx->branches[i].shard == shard)
                *xid = tx->branches[i].xid;
        }
        return "commit";
    case TX_ABORTED:
    case TX_ABORTING:
        return "abort";
    case TX_UNKNOWN:
        return "unknown"; /* one phase: never prepared anywhere */
    default:
        return "in_flight";
    }
}

/* True while an OPERATOR record about gtid is being forced. */
static bool note_pending(const struct coord *co, const char *gtid)
{
    for (const struct list_node *p = co->op_wait.next; p != &co->op_wait; p = p->next) {
        if (strcmp(container_of(p, const struct op_wait, link)->gtid, gtid) == 0)
            return true;
    }
    return false;
}

const char *coord_outcome(const struct coord *co, const char *gtid, int shard, uint64_t *xid)
{
    const struct tx *tx = find_tx(co, gtid);
    const struct coord_opnote *n;
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch, seq;

    *xid = 0;
    if (tx)
        return outcome_of_known(tx, shard, xid);
    /* An operator decided: a transaction has one outcome, whichever shard the note named. */
    if ((n = coord_notes(co, gtid)))
        return n->commit ? "commit" : "abort";
    if (note_pending(co, gtid))
        return "in_flight"; /* an operator's decision is being forced: it is being decided */
    if (!gid_parse_gtid(gtid, node, &epoch, &seq) || strcmp(node, co->cfg->node_id) != 0)
        return "unknown";
    if (epoch < co->epoch || (epoch == co->epoch && seq <= co->seq))
        return "abort";
    return "unknown"; /* a gtid this coordinator never issued */
}

const struct coord_opnote *coord_notes(const struct coord *co, const char *gtid)
{
    const struct noted *nd = find_noted(co, gtid);

    return nd ? nd->notes : NULL;
}

void coord_each_noted(const struct coord *co,
                      void (*fn)(void *arg, const char *gtid, const struct coord_opnote *notes),
                      void *arg)
{
    struct hmap_iter it;

    for (struct hmap_node *h = hmap_first(&co->notes, &it); h; h = hmap_next(&co->notes, &it)) {
        const struct noted *nd = container_of(h, const struct noted, node);

        fn(arg, nd->gtid, nd->notes);
    }
}

void coord_record_operator(struct coord *co, const char *gtid, const struct coord_opnote *note,
                           coord_done_fn done, void *arg)
{
    struct op_wait *w = calloc(1, sizeof(*w));
    struct dlog_rec rec;
    struct dtx_err err;

    if (!w)
        abort();
    snprintf(w->gtid, sizeof(w->gtid), "%s", gtid);
    w->note = *note;
    w->note.next = NULL;
    w->note.wall_us = ev_wall_us();
    w->note.who = strdup(note->who ? note->who : "");
    w->note.reason = strdup(note->reason ? note->reason : "");
    if (!w->note.who || !w->note.reason)
        abort();
    w->done = done;
    w->arg = arg;
    note_rec(&rec, w->gtid, &w->note);
    w->lsn = dlog_append(co->log, &rec, true);
    if (w->lsn == 0) {
        dtx_err_clear(&err);
        if (!dlog_failed(co->log, &err))
            dtx_err_set(&err, DTX_ELOGFAIL, "the decision log is not writable");
        err.code = DTX_ELOGFAIL;
        done(arg, err.code, &err);
        free(w->note.who);
        free(w->note.reason);
        free(w);
        return;
    }
    list_insert_tail(&co->op_wait, &w->link);
}

void coord_each_tx(const struct coord *co, void (*fn)(void *arg, const struct tx *tx), void *arg)
{
    const struct list_node *heads[2] = {&co->live, &co->retained};

    for (int h = 0; h < 2; h++) {
        for (const struct list_node *p = heads[h]->next; p != heads[h]; p = p->next)
            fn(arg, container_of(p, const struct tx, link));
    }
}

size_t coord_kick(struct coord *co)
{
    struct list_node *pos, *tmp;
    size_t n = 0;

    list_for_each_safe(pos, tmp, &co->live)
    {
        struct tx *tx = container_of(pos, struct tx, link);

        if (tx->state != TX_COMMITTING && tx->state != TX_ABORTING)
            continue;
        tx->retry_ms = TX_RETRY_MIN_MS; /* this retry goes out now; later ones back off afresh */
        step(co, tx, TXE_TIMEOUT, NULL);
        n++;
    }
    return n;
}

void coord_branch_finished(struct coord *co, const char *gtid, int shard, bool committed)
{
    struct tx *tx = find_tx(co, gtid);
    struct tx_branch *b = waiting_branch(tx, shard);

    if (b && committed == (tx->state == TX_COMMITTING))
        ack_branch(co, tx, b);
}

bool coord_waits_for(const struct coord *co, const char *gtid, int shard)
{
    return waiting_branch(find_tx(co, gtid), shard) != NULL;
}

const char *coord_link_state(const struct coord *co, int shard)
{
    return pc_state(co->links[shard]);
}

void coord_log_stats(const struct coord *co, struct dlog_stats *st)
{
    dlog_stats(co->log, st);
}

struct list_node *coord_admin_pending(struct coord *co)
{
    return &co->admin;
}

struct ev_loop *coord_loop(const struct coord *co)
{
    return co->loop;
}

const struct coord_config *coord_config(const struct coord *co)
{
    return co->cfg;
}

/* ---- rendering --------------------------------------------------------------- */

/* The coordinator's own part of /healthz (the shards' links are added by coord_render_health). */
cJSON *coord_health_json(const struct coord *co, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    struct dtx_err why;

    dtx_err_clear(&why);
    *status = coord_accepting(co, &why) ? 200 : 503;
    jsonx_add_str(root, "status", *status == 200 ? "ok" : "unavailable");
    if (*status != 200)
        jsonx_add(root, "error", jsonx_error_obj(&why));
    jsonx_add_str(root, "node_id", co->cfg->node_id);
    jsonx_add_num(root, "epoch", (double)co->epoch);
    jsonx_add_num(root, "live_transactions", (double)co->nlive);
    return root;
}

char *coord_render_health(const struct coord *co, unsigned *status)
{
    cJSON *root = coord_health_json(co, status);
    cJSON *shards = jsonx_new_object();
    char *s;

    for (size_t i = 0; i < co->cfg->nshards; i++)
        jsonx_add_str(shards, co->shard_names[i], pc_state(co->links[i]));
    jsonx_add(root, "shards", shards);
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

char *coord_render_metrics(const struct coord *co)
{
    struct buf b = BUF_INIT;
    struct dlog_stats ls;

    dlog_stats(co->log, &ls);
    buf_puts(&b, "# HELP dtx_transactions_total Transactions by outcome.\n"
                 "# TYPE dtx_transactions_total counter\n");
    buf_printf(&b, "dtx_transactions_total{outcome=\"started\"} %" PRIu64 "\n", co->m.started);
    buf_printf(&b, "dtx_transactions_total{outcome=\"committed\"} %" PRIu64 "\n", co->m.committed);
    buf_printf(&b, "dtx_transactions_total{outcome=\"aborted\"} %" PRIu64 "\n", co->m.aborted);
    buf_printf(&b, "dtx_transactions_total{outcome=\"unknown\"} %" PRIu64 "\n", co->m.unknown);
    buf_printf(&b, "dtx_transactions_total{outcome=\"in_doubt\"} %" PRIu64 "\n", co->m.in_doubt);
    buf_puts(&b, "# TYPE dtx_aborts_total counter\n");
    for (int code = 1; code < 32; code++) {
        if (co->m.aborts_by_code[code])
            buf_printf(&b, "dtx_aborts_total{code=\"%s\"} %" PRIu64 "\n", dtx_err_name(-code),
                       co->m.aborts_by_code[code]);
    }
    buf_printf(
        &b,
        "# TYPE dtx_one_phase_commits_total counter\ndtx_one_phase_commits_total %" PRIu64
        "\n# TYPE dtx_readonly_commits_total counter\ndtx_readonly_commits_total %" PRIu64
        "\n# TYPE dtx_idempotent_replays_total counter\ndtx_idempotent_replays_total %" PRIu64 "\n",
        co->m.one_phase, co->m.readonly, co->m.idem_replays);
    buf_printf(&b, "# TYPE dtx_transactions_live gauge\ndtx_transactions_live %zu\n", co->nlive);
    buf_printf(&b,
               "# TYPE dtx_transactions_refused_total counter\ndtx_transactions_refused_total "
               "%" PRIu64 "\n",
               co->m.refused);
    buf_printf(&b,
               "# TYPE dtx_transactions_retained gauge\ndtx_transactions_retained %zu\n"
               "# TYPE dtx_retained_bytes gauge\ndtx_retained_bytes %zu\n",
               co->nretained, co->retained_bytes);
    buf_printf(
        &b,
        "# TYPE dtx_decision_log_records_total counter\ndtx_decision_log_records_total %" PRIu64
        "\n# TYPE dtx_decision_log_syncs_total counter\ndtx_decision_log_syncs_total %" PRIu64
        "\n# TYPE dtx_decision_log_checkpoints_total counter\ndtx_decision_log_checkpoints_total "
        "%" PRIu64
        "\n# TYPE dtx_decision_log_bytes_total counter\ndtx_decision_log_bytes_total %" PRIu64
        "\n# TYPE dtx_decision_log_sync_seconds_total counter\ndtx_decision_log_sync_seconds_total "
        "%.6f"
        "\n# TYPE dtx_decision_log_failed gauge\ndtx_decision_log_failed %d\n",
        ls.records, ls.syncs, ls.checkpoints, ls.bytes, ls.sync_us / 1e6, co->state == CO_FAILED);
    buf_puts(&b, "# TYPE dtx_participant_up gauge\n");
    for (size_t i = 0; i < co->cfg->nshards; i++)
        buf_printf(&b, "dtx_participant_up{shard=\"%s\"} %d\n", co->shard_names[i],
                   pc_is_up(co->links[i]));
    return buf_detach(&b, NULL);
}
