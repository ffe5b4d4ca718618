/*
 * coord.c - the coordinator engine's core: its lifecycle, the protocol's
 * environment (struct tx_env: what a transaction may do to the world), and
 * the submission of new transactions. The other parts of the engine are
 * listed in coord_impl.h.
 *
 * A transaction's life here: coord_submit validates nothing (api.c did),
 * admits it (max_active_transactions) or answers an idempotent retry from
 * the table, creates it (tx_new, owned by a txtab entry) and gives it its
 * first event. From then on the protocol (tx.c) drives it through the
 * environment below: messages to participants (links.c), COMMIT and END
 * records to the decision store, answers to waiting clients, a timer, and
 * finally "finished", which moves it to the table's retained list.
 *
 * A transaction whose COMMIT record is being forced waits on co->log_wait
 * in position order, which is the order the store makes records durable;
 * on_durable gives each one TXE_DURABLE.
 *
 * Thread model: one event-loop thread runs everything here: HTTP handlers
 * (api.c), peer frames (pc.c), timers and the decision store's callbacks.
 * The store may write on its own thread (dlog_writer.c), which touches none
 * of this state. Nothing here blocks: a slow shard or a slow fsync only
 * delays the transactions that wait for it.
 */
#include "coord_impl.h"

#include "dtx/failpoint.h"
#include "dtx/idemkey.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/sdnotify.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static struct txent *entry_of(const struct tx *tx)
{
    return tx_owner(tx);
}

static struct coord *coord_of(const struct tx *tx)
{
    return tx_ctx(tx);
}

/* ---- tx_env: what the protocol does to the world -------------------------- */

/*
 * Three-phase commit's part of a message: "protocol": 3, and with a
 * prepare the transaction's acceptors (its coordinator and shards).
 */
static void add_3pc(struct coord *co, const struct tx *tx, enum tx_send what, cJSON *m)
{
    cJSON *peers, *shards;

    jsonx_add_num(m, "protocol", 3);
    if (what != TX_SEND_PREPARE)
        return;
    peers = jsonx_new_object();
    shards = jsonx_new_array();
    jsonx_add(peers, "coordinator", jsonx_new_object());
    jsonx_add_str(cJSON_GetObjectItemCaseSensitive(peers, "coordinator"), "node", co->cfg->node_id);
    for (size_t i = 0; i < tx_branch_count(tx); i++) {
        int shard = tx_branch_shard(tx_branch_at(tx, i));
        cJSON *s = jsonx_new_object();

        jsonx_add_str(s, "name", co->cfg->shards[shard].name);
        jsonx_add_str(s, "url", co->cfg->shards[shard].url);
        jsonx_append(shards, s);
    }
    jsonx_add(peers, "shards", shards);
    jsonx_add(m, "peers", peers);
}

/* The request a message serves (tx_step set it: log.h), for the participant's logs. */
static void add_trace(cJSON *m)
{
    struct log_ctx c = log_ctx_get();

    if (c.request_id)
        jsonx_add_str(m, "request_id", c.request_id);
    if (c.traceparent)
        jsonx_add_str(m, "traceparent", c.traceparent);
}

static int env_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    struct coord *co = coord_of(tx);
    int shard = tx_branch_shard(b);
    cJSON *m;
    char *s;
    int rc;

    if (!coord_link_up(co, shard))
        return DTX_EUNAVAIL;
    if (what == TX_SEND_FORGET && !coord_link_takes_forget(co, shard))
        return 0; /* an older participant: it keeps its rows, as it always did */
    if (what == TX_SEND_COMMIT)
        fp_hit("coord.phase2_send"); /* @2: phase 2 reached only the first shard */
    if (what == TX_SEND_ACCEPT)
        fp_hit("coord.precommit_send"); /* @2: the pre-commit reached only the first shard */
    m = tx_message(tx, b, what);
    if (tx_three_pc(tx) && what != TX_SEND_ACCEPT)
        add_3pc(co, tx, what, m);
    add_trace(m);
    s = jsonx_print(m);
    rc = coord_link_send(co, shard, s, strlen(s));
    free(s);
    cJSON_Delete(m);
    return rc;
}

/* Forces the record tx_commit_record gives (COMMIT, or PRECOMMIT under 3PC) after failpoint. */
static uint64_t log_decision(struct tx *tx, const char *failpoint)
{
    struct coord *co = coord_of(tx);
    struct drec_branch *br;
    struct drec rec;
    char *results;
    uint64_t lsn;

    fp_hit(failpoint);
    tx_commit_record(tx, &rec, &br, &results);
    lsn = dstore_append(co->store, &rec, true);
    if (lsn)
        list_insert_tail(&co->log_wait, &entry_of(tx)->wait_link);
    free(results);
    free(br);
    return lsn;
}

static uint64_t env_log_commit(struct tx *tx)
{
    return log_decision(tx, "coord.before_log"); /* every vote is in; the decision is not durable */
}

/* Three-phase commit: the PRECOMMIT record. */
static uint64_t env_log_precommit(struct tx *tx)
{
    return log_decision(tx, "coord.before_precommit"); /* every vote is in; nothing pre-committed */
}

static void env_log_learned(struct tx *tx)
{
    struct drec rec = {.type = DREC_LEARNED,
                       .wall_us = ev_wall_us(),
                       .gtid = tx_gtid(tx),
                       .value = tx_outcome(tx) == TXO_COMMITTED ? BV_COMMIT : BV_ABORT};

    dstore_append(coord_of(tx)->store, &rec, false);
}

/* Three-phase commit: what the participants know of a transaction being learned. */
struct poll {
    struct coord *co;
    char gtid[DTX_GTID_MAX + 1];
};

static void poll_done(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct poll *p = arg;
    enum ballot_value v = BV_NONE;

    for (size_t i = 0; i < nparts && v == BV_NONE; i++) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(parts[i].body, "decided");

        if (parts[i].asked && parts[i].status == 200 && cJSON_IsString(d))
            v = ballot_value_parse(d->valuestring);
    }
    if (v != BV_NONE)
        coord_acc_learned(p->co, p->gtid, v);
    free(p);
}

static void env_poll(struct tx *tx)
{
    struct coord *co = coord_of(tx);
    char **paths = xcalloc(co->cfg->nshards, sizeof(*paths));
    struct poll *p = xcalloc(1, sizeof(*p));

    p->co = co;
    snprintf(p->gtid, sizeof(p->gtid), "%s", tx_gtid(tx));
    for (size_t i = 0; i < tx_branch_count(tx); i++) {
        int shard = tx_branch_shard(tx_branch_at(tx, i));

        free(paths[shard]);
        paths[shard] = xasprintf("/v1/peer/3pc/%s", p->gtid);
    }
    fanout_start(&co->dialer, co->cfg, &co->polls, "GET", paths, poll_done, p);
    for (size_t i = 0; i < co->cfg->nshards; i++)
        free(paths[i]);
    free(paths);
}

static void env_log_end(struct tx *tx)
{
    struct drec rec = {.type = DREC_END, .wall_us = ev_wall_us(), .gtid = tx_gtid(tx)};

    dstore_append(coord_of(tx)->store, &rec, false);
}

void coord_reply_all(struct txwaiter *w, unsigned status, const char *body)
{
    for (struct txwaiter *p = w; p; p = p->next)
        httpd_reply_json(p->req, status, xstrdup(body));
    txwaiters_free(w);
}

static void env_answer(struct tx *tx)
{
    struct txent *e = entry_of(tx);
    unsigned status;
    char *body;

    if (!e->waiters)
        return;
    body = tx_render_reply(tx, &status);
    coord_reply_all(txent_take_waiters(e), status, body);
    free(body);
}

static void env_arm(struct tx *tx, uint32_t ms)
{
    struct coord *co = coord_of(tx);
    struct txent *e = entry_of(tx);

    if (ms == 0)
        ev_timer_stop(co->loop, &e->timer);
    else
        ev_timer_start(co->loop, &e->timer, ms);
}

static void env_finished(struct tx *tx)
{
    struct coord *co = coord_of(tx);
    struct txent *e = entry_of(tx);

    coord_count_final(co, e);
    list_remove(&e->wait_link);
    ev_timer_stop(co->loop, &e->timer);
    /* A shard had no room (429): nothing ran, and the answer says to send it again shortly.
     * Its key goes, or that retry would get this 429 back for the whole retention time. */
    if (tx_refused_for_room(tx))
        txtab_release_key(&co->tab, e);
    txtab_retain(&co->tab, e, ev_now_us(co->loop));
}

static void env_deciding(struct tx *tx, int delta)
{
    struct coord *co = coord_of(tx);

    if (co->store)
        dstore_hint_deciding(co->store, delta);
}

/* ---- transactions ------------------------------------------------------------ */

static void on_tx_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct txent *e = t->data;

    (void)loop;
    tx_step(e->tx, TXE_TIMEOUT, NULL);
}

struct txent *coord_new_tx(struct coord *co, const struct tx_params *p)
{
    struct txent *e = txtab_entry_new(on_tx_timer);

    txtab_insert(&co->tab, e, tx_new(p, &co->env, e));
    return e;
}

void coord_reply_outcome(struct httpd_req *client, const struct txent *e)
{
    unsigned status;
    char *body = tx_render_answer(e->tx, &status);

    /* The call that found no room was told 429: nothing ran, send it again (as a new
     * transaction). Told again, to a later call, the outcome is what it is: aborted. */
    if (status == 429)
        status = 409;
    httpd_reply_json(client, status, body);
}

/* The transaction for a validated request, with its ops (taken from req). */
static struct txent *build_tx(struct coord *co, struct txreq *req)
{
    char gtid[DTX_GTID_MAX + 1];
    struct tx_params p = {
        .gtid = gtid,
        .protocol = req->protocol,
        .interactive = req->interactive,
        .timeout_ms = req->interactive ? co->cfg->prepare_timeout_ms : req->timeout_ms,
        .idle_ms = req->interactive ? req->timeout_ms : 0,
        .commit_wait_ms = co->cfg->commit_wait_ms,
        .results_limit = co->cfg->max_logged_results_bytes,
        .client = req->client, /* the admin token's (NULL) go with the shared token's */
        .idem_key = req->idem_key,
        .req_hash = req->hash,
        .created_wall_us = ev_wall_us(),
        .request_id = log_ctx_get().request_id, /* api.c: the request being served */
        .traceparent = log_ctx_get().traceparent,
    };
    struct txent *e;

    gid_format_gtid(gtid, sizeof(gtid), co->cfg->node_id, co->epoch, ++co->seq);
    e = coord_new_tx(co, &p);
    for (size_t i = 0; i < req->nops; i++)
        tx_add_op(e->tx, req->ops[i].shard, req->ops[i].op, i);
    return e;
}

/*
 * True when req's named client is within its own limits (auth.h); otherwise
 * client has been answered 429: the others' room is not its to take.
 */
static bool admit_client(struct coord *co, const struct txreq *req, struct httpd_req *client)
{
    const struct auth_client *lim = auth_clients_find(&co->cfg->clients, req->client);
    struct txtab_client *c = lim ? txtab_client(&co->tab, lim->name) : NULL;

    if (!c)
        return true;
    if (lim->max_active && c->nlive >= lim->max_active) {
        httpd_reply_errorf(client, DTX_EBUSY,
                           "client '%s' has %zu transactions in flight, the most it may have at "
                           "once (its max_active_transactions); try again shortly",
                           lim->name, c->nlive);
    } else if (req->idem_key && lim->max_keys && c->nkeyed >= lim->max_keys) {
        httpd_reply_errorf(client, DTX_EBUSY,
                           "client '%s' holds %zu finished transactions with an idempotency key, "
                           "the most it may (its max_retained_keys), each until retention_s has "
                           "passed; try again shortly",
                           lim->name, c->nkeyed);
    } else {
        return true;
    }
    c->refused++;
    co->m.refused++;
    return false;
}

/* True when one more transaction may start; otherwise client has been answered (429). */
static bool admit(struct coord *co, const struct txreq *req, struct httpd_req *client)
{
    if (!admit_client(co, req, client))
        return false;
    if (req->idem_key && txtab_keys_full(&co->tab)) {
        /* a key is never forgotten before retention_s: a retry would run it twice */
        httpd_reply_errorf(client, DTX_EBUSY,
                           "%zu finished transactions with an idempotency key are held, the most "
                           "this coordinator keeps (retention_max), each until retention_s has "
                           "passed; try again shortly",
                           co->tab.nkeyed);
        co->m.refused++;
        return false;
    }
    if (co->tab.nlive >= co->cfg->max_active_transactions) {
        httpd_reply_errorf(client, DTX_EBUSY,
                           "%zu transactions are in flight, the most this coordinator takes at "
                           "once (max_active_transactions); try again shortly",
                           co->tab.nlive);
        co->m.refused++;
        return false;
    }
    return true;
}

/* Answers a request that reuses an idempotency key; false when the key is new. */
static bool idem_replay(struct coord *co, const struct txreq *req, struct httpd_req *client)
{
    char *slot = idemkey_compose(req->client, req->idem_key); /* the client's own keys */
    struct txent *e;
    enum txtab_idem found = txtab_idem_lookup(&co->tab, slot, req->hash, &e);

    free(slot);
    switch (found) {
    case TXI_NEW:
        return false;
    case TXI_MISMATCH: /* refused, not answered from the earlier transaction */
        httpd_reply_errorf(client, DTX_EIDEMPOTENCY,
                           "idempotency key '%s' was used for a different request (transaction %s)",
                           req->idem_key, tx_gtid(e->tx));
        return true;
    case TXI_ANSWER:
        if (e->answer_body)
            httpd_reply_json(client, e->answer_status, xstrdup(e->answer_body));
        else
            coord_reply_outcome(client, e);
        break;
    case TXI_WAIT:
        txent_add_waiter(e, client);
        break;
    }
    co->m.idem_replays++;
    return true;
}

void coord_submit(struct coord *co, struct txreq *req, struct httpd_req *client)
{
    struct dtx_err err;
    struct txent *e;

    dtx_err_clear(&err);
    if (!coord_accepting(co, &err)) {
        httpd_reply_error(client, &err);
        return;
    }
    if (req->idem_key && idem_replay(co, req, client))
        return;
    if (!admit(co, req, client))
        return;
    e = build_tx(co, req);
    co->m.started++;
    if (req->interactive) {
        tx_step(e->tx, TXE_BEGIN, NULL);
        httpd_reply_json(client, 201, tx_render_begun(e->tx));
        return;
    }
    txent_add_waiter(e, client);
    tx_step(e->tx, TXE_COMMIT, NULL);
    fp_hit("coord.after_prepare_sent"); /* ops and PREPARE are on their way; no vote yet */
}

/* ---- the decision store's reports ------------------------------------------------ */

static void on_durable(void *arg, uint64_t lsn)
{
    struct coord *co = arg;

    while (!list_empty(&co->log_wait)) {
        struct txent *e = container_of(co->log_wait.next, struct txent, wait_link);

        if (tx_forcing(e->tx) > lsn)
            break;
        list_remove(&e->wait_link);
        fp_hit("coord.after_durable"); /* the decision is durable; no COMMIT PREPARED sent */
        tx_step(e->tx, TXE_DURABLE, NULL);
    }
    coord_notes_durable(co, lsn);
    coord_acc_durable(co, lsn);
}

static void on_store_failed(void *arg, const struct dtx_err *err)
{
    struct coord *co = arg;

    if (co->lease && co->lease->lost)
        co->lease->lost(co->lease->arg, err); /* another process may take over now */
    co->state = CO_FAILED;
    co->fail = *err;
    log_error("no longer taking transactions: %s", err->msg);
    while (!list_empty(&co->log_wait)) {
        struct txent *e = container_of(co->log_wait.next, struct txent, wait_link);

        list_remove(&e->wait_link);
        tx_step(e->tx, TXE_LOG_FAILED, NULL);
        coord_count_final(co, e); /* in doubt, unless 3PC goes on to learn its outcome */
    }
    coord_notes_fail(co, err);
    coord_acc_fail(co, err);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct coord *co = t->data;

    if (co->state == CO_STARTING && coord_links_tried(co)) {
        co->state = CO_RUNNING;
        log_info("coordinator '%s' (epoch %" PRIu64 ") is taking transactions on %s",
                 co->cfg->node_id, co->epoch, co->cfg->listen);
        sdnotify_or_warn("READY=1"); /* a Type=notify unit counts as started from here */
    }
    txtab_expire(&co->tab, ev_now_us(loop));
    ev_timer_start(loop, t, co->state == CO_STARTING ? 20 : 1000);
}

/* A random id for this run, so that a participant tells it from another run at the same epoch. */
void coord_boot_id(char *out, size_t n)
{
    uint64_t r;

    if (getrandom(&r, sizeof(r), 0) != sizeof(r))
        r = ev_wall_us() ^ ((uint64_t)getpid() << 32);
    snprintf(out, n, "%016" PRIx64, r);
}

static void init_coord(struct coord *co, const struct coord_config *cfg, struct ev_loop *loop)
{
    struct txtab_limits lim = {
        .retention_s = cfg->retention_s,
        .retention_max = cfg->retention_max,
        .retention_max_bytes = cfg->retention_max_bytes,
    };

    co->cfg = cfg;
    co->loop = loop;
    co->dialer = (struct dialer){.loop = loop, .tls = &cfg->tls};
    txtab_init(&co->tab, &lim);
    list_init(&co->log_wait);
    coord_notes_init(&co->notes);
    coord_heurs_init(&co->heurs);
    coord_acc_init(&co->acc);
    list_init(&co->polls);
    coord_metrics_init(&co->m);
    co->shard_names = xcalloc(cfg->nshards, sizeof(*co->shard_names));
    for (size_t i = 0; i < cfg->nshards; i++)
        co->shard_names[i] = cfg->shards[i].name;
    co->env = (struct tx_env){
        .send = env_send,
        .log_commit = env_log_commit,
        .log_end = env_log_end,
        .log_precommit = env_log_precommit,
        .log_learned = env_log_learned,
        .poll = env_poll,
        .answer = env_answer,
        .arm = env_arm,
        .finished = env_finished,
        .deciding = env_deciding,
        .phase_done = coord_on_phase,
        .heuristic = coord_on_heuristic,
        .shard_names = co->shard_names,
        .ctx = co,
    };
    co->store_cbs = (struct dstore_cbs){
        .on_durable = on_durable,
        .on_failed = on_store_failed,
        .on_checkpoint_wanted = coord_checkpoint_wanted,
        .arg = co,
    };
    dtx_err_clear(&co->fail);
    coord_boot_id(co->boot, sizeof(co->boot));
    ev_timer_init(&co->tick, on_tick, co);
}

int coord_new(struct coord **out, const struct coord_config *cfg, struct ev_loop *loop,
              const struct coord_lease *lease, struct dtx_err *err)
{
    struct coord *co = xcalloc(1, sizeof(*co));
    int rc;

    init_coord(co, cfg, loop);
    rc = resolver_new(&co->dialer.resolver, loop, err);
    if (rc < 0) {
        coord_free(co);
        return rc;
    }
    co->lease = lease;
    if (lease)
        snprintf(co->boot, sizeof(co->boot), "%s", lease->holder);
    rc = coord_open_store(co, err);
    if (rc < 0) {
        coord_free(co);
        return rc;
    }
    coord_links_start(co);
    ev_timer_start(loop, &co->tick, 20);
    *out = co;
    return 0;
}

static void stop_timer(void *arg, struct txent *e)
{
    struct coord *co = arg;

    ev_timer_stop(co->loop, &e->timer);
}

void coord_free(struct coord *co)
{
    if (!co)
        return;
    ev_timer_stop(co->loop, &co->tick);
    coord_links_free(co);
    txtab_each(&co->tab, stop_timer, co);
    txtab_release(&co->tab);
    coord_notes_fail(co, NULL);
    coord_notes_release(&co->notes);
    coord_acc_fail(co, NULL);
    coord_acc_release(&co->acc);
    fanout_abandon(&co->polls, free);
    coord_heurs_release(&co->heurs);
    dstore_close(co->store);
    free(co->gaps);
    free(co->shard_names);
    resolver_free(co->dialer.resolver);
    free(co);
}

/* An open interactive transaction: nobody could commit it any more. */
static void abort_open(void *arg, struct txent *e)
{
    struct tx_evarg a = {.err = arg};

    if (tx_is_interactive(e->tx) && tx_accepts(e->tx, TXE_ABORT))
        tx_step(e->tx, TXE_ABORT, &a);
}

void coord_begin_shutdown(struct coord *co)
{
    struct dtx_err e;

    if (co->state != CO_FAILED)
        co->state = CO_STOPPING;
    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_ESHUTDOWN, "the coordinator is shutting down");
    txtab_each_live(&co->tab, abort_open, &e);
}

static void note_running(void *arg, struct txent *e)
{
    bool *running = arg;

    *running = *running || tx_is_running(e->tx);
}

bool coord_drained(const struct coord *co)
{
    bool running = false;

    txtab_each_live(&co->tab, note_running, &running);
    return !running;
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

/* ---- questions and operators' actions ---------------------------------------------- */

const struct tx *coord_find(const struct coord *co, const char *gtid)
{
    const struct txent *e = txtab_find(&co->tab, gtid);

    return e ? e->tx : NULL;
}

struct each_tx {
    void (*fn)(void *arg, const struct tx *tx);
    void *arg;
};

static void each_tx_one(void *arg, struct txent *e)
{
    struct each_tx *c = arg;

    c->fn(c->arg, e->tx);
}

void coord_each_tx(const struct coord *co, void (*fn)(void *arg, const struct tx *tx), void *arg)
{
    struct each_tx c = {.fn = fn, .arg = arg};

    txtab_each(&co->tab, each_tx_one, &c);
}

struct kick {
    size_t n;
};

static void kick_one(void *arg, struct txent *e)
{
    struct kick *k = arg;

    if (tx_accepts(e->tx, TXE_KICK) && tx_step(e->tx, TXE_KICK, NULL) == 0)
        k->n++;
}

size_t coord_kick(struct coord *co)
{
    struct kick k = {0};

    txtab_each_live(&co->tab, kick_one, &k);
    return k.n;
}

void coord_branch_finished(struct coord *co, const char *gtid, int shard, bool committed)
{
    struct txent *e = txtab_find(&co->tab, gtid);

    if (e)
        tx_branch_finished(e->tx, shard, committed);
}

bool coord_waits_for(const struct coord *co, const char *gtid, int shard)
{
    struct txent *e = txtab_find(&co->tab, gtid);

    return e && tx_waits_for(e->tx, shard) != NULL;
}

void coord_store_stats(const struct coord *co, struct dstore_stats *st)
{
    dstore_stats(co->store, st);
}

void coord_describe_store(const struct coord *co, cJSON *obj)
{
    dstore_describe(co->store, obj);
}

uint64_t coord_epoch(const struct coord *co)
{
    return co->epoch;
}

const struct dialer *coord_dialer(const struct coord *co)
{
    return &co->dialer;
}

struct ev_loop *coord_loop(const struct coord *co)
{
    return co->loop;
}

const struct coord_config *coord_config(const struct coord *co)
{
    return co->cfg;
}
