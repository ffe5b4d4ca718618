/*
 * terminate.c - three-phase commit on the participant's side: the
 * acceptor, and the recovery leader that finishes a transaction without
 * its coordinator (docs/protocol.md, "Three-phase commit").
 *
 * The decision of a 3PC transaction is single-decree Paxos on commit or
 * abort among its acceptors: the coordinator and every participant. This
 * shard's acceptor state lives in its database (rm acceptor,
 * sql/003_acceptors.sql); this file answers for it:
 *   - the coordinator's PRE-COMMIT on the stream (accept at its initial
 *     ballot), answered with "accepted";
 *   - a recovery leader's PROMISE-REQ and ACCEPT, and anyone's DECIDE, on
 *     POST /v1/peer/3pc/promise|accept|decide, and GET /v1/peer/3pc/{gtid}.
 *
 * Recovery leader. A 3PC branch that voted yes is watched: when no
 * decision arrived termination_timeout_ms (plus up to half of it, at
 * random, so that leaders rarely duel) after the vote, or after the
 * coordinator's last sign of life about it, this shard leads a round:
 *   1. a ballot (n, "p:<shard>") with n above every counter seen, promised
 *      to itself first (durably, so a restart never reuses it);
 *   2. PROMISE-REQ to every other acceptor; an acceptor whose branch has
 *      not prepared fences it first (it will never prepare);
 *   3. with the promises of a majority (itself included): the value of the
 *      highest ballot any of them accepted, else abort; a decision one of
 *      them already knows is taken as it is;
 *   4. it accepts the value itself, then sends ACCEPT; with a majority of
 *      acceptances the value is chosen: DECIDE to every acceptor, and this
 *      branch is committed or rolled back.
 * A round without a majority of answers leaves the branch prepared (and
 * says so: dtxctl in-doubt shows why) and is tried again, backing off.
 * Safety needs no timeout; they only decide when to try.
 *
 * State: the watched transactions (t->by_gtid; t->gone while an acceptor
 * operation of a dropped one is still on its way) and the calls in flight.
 * Thread model: the participant's event-loop thread.
 */
#include "agent_impl.h"

#include "dtx/failpoint.h"
#include "dtx/gid.h"
#include "dtx/hmap.h"
#include "dtx/httpc.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define CALL_TIMEOUT_MS      2000
#define ROUND_BACKOFF_MS     250
#define ROUND_BACKOFF_MAX_MS 8000
#define FENCE_RETRY_MS       50
#define FENCE_TRIES          100
#define MAX_ACCEPTORS        (BALLOT_MAX_SHARDS + 1)

/* One acceptor of a transaction, as a leader reaches it. */
struct acceptor {
    char node[BALLOT_NODE_MAX]; /* "c:<node>" or "p:<shard>" */
    char url[256];
    bool self;
};

enum round_phase { RP_IDLE, RP_PROMISE, RP_ACCEPT, RP_DONE };

/* A 3PC transaction whose branch is prepared here and not decided yet. */
struct watched {
    struct hmap_node node;
    struct terminate *t;
    char gtid[DTX_GTID_MAX + 1];
    char gid[DTX_GID_MAX + 1];
    char *peers;          /* JSON, as registered; NULL until read */
    struct acceptor *acc; /* from peers */
    int nacc;
    struct ev_timer timer; /* the next round */
    uint32_t backoff_ms;
    enum round_phase phase;
    uint64_t round;   /* answers of earlier rounds are dropped */
    struct ballot b;  /* this round's ballot */
    uint64_t highest; /* the highest counter seen promised anywhere */
    int answered, granted, accepted;
    enum ballot_value value;      /* phase 2: the value proposed */
    struct ballot best;           /* phase 1: the highest accepted ballot among promises */
    enum ballot_value best_value; /* ... and its value */
    enum ballot_value decided;    /* a decision an acceptor knew */
    char blocked[256];            /* why the last round did not finish ("" if none) */
    unsigned rounds;
    struct list_node calls;     /* struct call in flight */
    unsigned pending;           /* this shard's acceptor operations in flight with w as their arg */
    bool gone;                  /* dropped while some were: freed when the last one answers */
    struct list_node gone_link; /* on t->gone while gone */
};

/* An HTTP request to another acceptor: PROMISE-REQ or ACCEPT of a round, or a DECIDE. */
struct call {
    struct list_node link; /* on w->calls; a DECIDE on t->notices */
    struct terminate *t;
    struct watched *w; /* NULL for a DECIDE: nobody waits for its answer */
    uint64_t round;
    bool accept;
    struct httpc *http;
    char *body;
    struct dtx_err err;      /* why it could not even be sent ... */
    struct ev_defer failing; /* ... reported from the loop, never inside send_call */
};

/* A request to this acceptor waiting for the database. */
struct answer {
    struct list_node link; /* on t->answers */
    struct terminate *t;
    struct httpd_req *req;
    struct peer *peer; /* the stream's PRE-COMMIT is answered there (NULL once it closed) */
    bool stream;       /* a PRE-COMMIT from the stream, not an HTTP request */
    char gtid[DTX_GTID_MAX + 1];
    char gid[DTX_GID_MAX + 1];
    char *peers;
    struct ballot b;
    enum ballot_value v;
    unsigned tries;
    struct ev_timer retry; /* a promise that met a running branch asks again */
};

struct terminate {
    struct agent *ag;
    struct hmap by_gtid;       /* struct watched */
    struct list_node answers;  /* struct answer */
    struct list_node notices;  /* struct call: DECIDEs on their way */
    struct list_node applying; /* struct applying */
    struct list_node gone;     /* struct watched dropped with acceptor operations in flight */
    size_t nwatched;
};

static void round_start(struct watched *w);
static void on_round_timer(struct ev_loop *loop, struct ev_timer *tm);

/* ---- small helpers ---------------------------------------------------------------------- */

static uint32_t jitter(uint32_t max)
{
    uint32_t r = 0;

    if (max == 0 || getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
        return 0;
    return r % max;
}

static const char *self_node(const struct terminate *t, char *buf, size_t n)
{
    ballot_node(buf, n, false, t->ag->cfg->name);
    return buf;
}

static int majority(const struct watched *w)
{
    return w->nacc / 2 + 1;
}

static struct watched *find(const struct terminate *t, const char *gtid)
{
    struct hmap_node *n = hmap_get(&t->by_gtid, gtid);

    return n ? container_of(n, struct watched, node) : NULL;
}

static void call_free(struct call *c)
{
    list_remove(&c->link);
    ev_defer_cancel(c->t->ag->loop, &c->failing);
    httpc_free(c->http);
    free(c->body);
    free(c);
}

static void calls_drop(struct list_node *calls)
{
    while (!list_empty(calls))
        call_free(container_of(calls->next, struct call, link));
}

static void watched_release(struct watched *w)
{
    free(w->peers);
    free(w->acc);
    free(w);
}

/*
 * Stops watching w. An acceptor operation of its round may still be on its
 * way (the database answers later): w is then only marked gone, and freed
 * when the last one answers (watched_answered).
 */
static void watched_free(struct watched *w)
{
    hmap_remove(&w->t->by_gtid, &w->node);
    w->t->nwatched--;
    ev_timer_stop(w->t->ag->loop, &w->timer);
    calls_drop(&w->calls);
    if (w->pending) {
        w->gone = true;
        list_insert_tail(&w->t->gone, &w->gone_link);
        return;
    }
    watched_release(w);
}

/* This shard's acceptor state, for w's round: op on the database, cb(w, ...) once it answers. */
static void watched_acceptor(struct watched *w, enum rm_acc_op op, enum ballot_value v,
                             rm_acceptor_fn cb)
{
    w->pending++;
    rm_acceptor(w->t->ag->rm, op, w->gtid, w->gid, op == RM_ACC_STATE ? NULL : w->peers,
                op == RM_ACC_STATE ? NULL : &w->b, v, cb, w);
}

/* An operation of watched_acceptor answered: false when w was dropped meanwhile (and maybe freed).
 */
static bool watched_answered(struct watched *w)
{
    w->pending--;
    if (!w->gone)
        return true;
    if (w->pending == 0) {
        list_remove(&w->gone_link);
        watched_release(w);
    }
    return false;
}

/*
 * Reads the acceptors from peers ({"coordinator":{"node","url"},
 * "shards":[{"name","url"}..]}); the coordinator is reached at the URL
 * that serves its node now (recovery_coordinator_url; "" while none is
 * known: it then counts as an acceptor that does not answer). Returns
 * false when peers says nothing usable: also for one malformed shard, or
 * more shards than a round takes (MAX_ACCEPTORS), since a majority counted
 * over fewer acceptors than the transaction has is no majority.
 */
static bool read_peers(struct watched *w)
{
    const struct agent_config *cfg = w->t->ag->cfg;
    cJSON *root = NULL;
    const cJSON *co, *shards, *s;
    const char *node = NULL;
    bool ok;

    if (!w->peers || jsonx_parse(w->peers, strlen(w->peers), &root, NULL) < 0)
        return false;
    co = cJSON_GetObjectItemCaseSensitive(root, "coordinator");
    shards = cJSON_GetObjectItemCaseSensitive(root, "shards");
    jsonx_str(co, "", "node", false, &node, NULL);
    free(w->acc);
    w->acc = xcalloc(MAX_ACCEPTORS, sizeof(*w->acc));
    w->nacc = 0;
    if (node && gid_name_ok(node)) {
        const char *url = recovery_coordinator_url(w->t->ag->recovery, node);

        ballot_node(w->acc[0].node, sizeof(w->acc[0].node), true, node);
        snprintf(w->acc[0].url, sizeof(w->acc[0].url), "%s", url ? url : "");
        w->nacc = 1;
    }
    /* every acceptor or none: a majority counted over fewer than all of them is no majority */
    ok = node && w->nacc == 1 && cJSON_GetArraySize(shards) < MAX_ACCEPTORS;
    cJSON_ArrayForEach(s, shards)
    {
        const char *name = NULL, *url = NULL;
        struct acceptor *a = &w->acc[w->nacc];

        if (!ok)
            break;
        if (jsonx_str(s, "", "name", false, &name, NULL) < 0 ||
            jsonx_str(s, "", "url", false, &url, NULL) < 0 || !name || !gid_name_ok(name) || !url) {
            ok = false;
            break;
        }
        ballot_node(a->node, sizeof(a->node), false, name);
        snprintf(a->url, sizeof(a->url), "%s", url);
        a->self = strcmp(name, cfg->name) == 0;
        w->nacc++;
    }
    ok = ok && w->nacc >= 3; /* a coordinator and two shards at least */
    cJSON_Delete(root);
    return ok;
}

/* ---- deciding -------------------------------------------------------------------------- */

static void on_noted(void *arg, int rc, const struct rm_acceptor *st, const struct dtx_err *err)
{
    (void)arg;
    (void)st;
    if (rc < 0)
        log_warn("three-phase commit: could not record a decision: %s", err ? err->msg : "");
}

/* A decision to apply here, once it is on record. */
struct applying {
    struct list_node link; /* on t->answers' neighbour: t->applying */
    struct terminate *t;
    char gtid[DTX_GTID_MAX + 1];
    char gid[DTX_GID_MAX + 1];
    enum ballot_value v;
};

static void on_applied_state(void *arg, int rc, const struct rm_acceptor *st,
                             const struct dtx_err *err)
{
    struct applying *ap = arg;

    (void)err;
    if (rc == 0 && st->prepared)
        agent_finish_for(ap->t->ag, ap->gtid, 0, ap->v == BV_COMMIT, NULL);
    list_remove(&ap->link);
    free(ap);
}

static void on_recorded(void *arg, int rc, const struct rm_acceptor *st, const struct dtx_err *err)
{
    struct applying *ap = arg;

    (void)st;
    if (rc < 0)
        log_warn("transaction %s: could not record its decision (%s): %s", ap->gtid,
                 ballot_value_name(ap->v), err ? err->msg : "");
    rm_acceptor(ap->t->ag->rm, RM_ACC_STATE, ap->gtid, ap->gid, NULL, NULL, BV_NONE,
                on_applied_state, ap);
}

/* The decision v is known here: record it, then finish this shard's branch if it is prepared. */
static void apply_decision(struct terminate *t, const char *gtid, enum ballot_value v)
{
    struct applying *ap = xcalloc(1, sizeof(*ap));

    ap->t = t;
    ap->v = v;
    snprintf(ap->gtid, sizeof(ap->gtid), "%s", gtid);
    gid_format(ap->gid, sizeof(ap->gid), gtid, t->ag->cfg->name);
    list_insert_tail(&t->applying, &ap->link);
    rm_acceptor(t->ag->rm, RM_ACC_DECIDED, ap->gtid, ap->gid, NULL, NULL, v, on_recorded, ap);
}

static void send_call(struct terminate *t, struct watched *w, const char *url, const char *path,
                      cJSON *body, bool accept);

/* The value v is chosen: every other acceptor is told, and this branch finished. */
static void decided(struct watched *w, enum ballot_value v)
{
    struct terminate *t = w->t;
    cJSON *body;

    log_info("transaction %s: decided %s by ballot (%" PRIu64 ", %s) without the coordinator; "
             "telling every acceptor",
             w->gtid, ballot_value_name(v), w->b.counter, w->b.node);
    fp_hit("agent.3pc_decided");
    for (int i = 0; i < w->nacc; i++) {
        if (w->acc[i].self)
            continue;
        body = jsonx_new_object();
        jsonx_add_str(body, "gtid", w->gtid);
        jsonx_add_str(body, "value", ballot_value_name(v));
        send_call(t, NULL, w->acc[i].url, "/v1/peer/3pc/decide", body, false);
    }
    apply_decision(t, w->gtid, v);
    watched_free(w);
}

/* ---- a round -------------------------------------------------------------------------------- */

static void round_failed(struct watched *w, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void round_failed(struct watched *w, const char *fmt, ...)
{
    char why[sizeof(w->blocked)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (strcmp(why, w->blocked) != 0)
        log_warn("transaction %s: three-phase commit cannot finish yet: %s; its branch stays "
                 "prepared, trying again",
                 w->gtid, why);
    snprintf(w->blocked, sizeof(w->blocked), "%s", why);
    w->phase = RP_IDLE;
    w->round++; /* answers still on their way are for nobody */
    calls_drop(&w->calls);
    ev_timer_start(w->t->ag->loop, &w->timer, w->backoff_ms + jitter(w->backoff_ms));
    w->backoff_ms =
        w->backoff_ms * 2 > ROUND_BACKOFF_MAX_MS ? ROUND_BACKOFF_MAX_MS : w->backoff_ms * 2;
}

static cJSON *request_body(const struct watched *w, bool accept)
{
    cJSON *body = jsonx_new_object(), *peers = NULL;

    jsonx_add_str(body, "gtid", w->gtid);
    jsonx_add(body, "ballot", ballot_json(&w->b));
    if (accept)
        jsonx_add_str(body, "value", ballot_value_name(w->value));
    if (w->peers && jsonx_parse(w->peers, strlen(w->peers), &peers, NULL) == 0)
        jsonx_add(body, "peers", peers);
    return body;
}

static void phase2(struct watched *w);

/* A promise from an acceptor (granted or not); the majority starts phase 2. */
static void on_promise(struct watched *w, bool granted, const struct ballot *promised,
                       const struct ballot *ab, enum ballot_value av, enum ballot_value known)
{
    w->answered++;
    if (promised->counter > w->highest)
        w->highest = promised->counter;
    if (granted) {
        w->granted++;
        if (av != BV_NONE && (w->best_value == BV_NONE || ballot_cmp(ab, &w->best) > 0)) {
            w->best = *ab;
            w->best_value = av;
        }
    }
    if (known != BV_NONE)
        w->decided = known;
    if (w->decided != BV_NONE) {
        decided(w, w->decided); /* an acceptor knows the decision: it is the chosen value */
    } else if (w->granted >= majority(w)) {
        phase2(w);
    } else if (w->answered >= w->nacc) {
        round_failed(w, "%d of %d acceptors promised ballot (%" PRIu64 ", %s), %d needed",
                     w->granted, w->nacc, w->b.counter, w->b.node, majority(w));
    }
}

static void on_accepted(struct watched *w, bool ok, const struct ballot *promised)
{
    w->answered++;
    if (promised->counter > w->highest)
        w->highest = promised->counter;
    w->accepted += ok;
    if (w->accepted >= majority(w))
        decided(w, w->value);
    else if (w->answered >= w->nacc)
        round_failed(w, "%d of %d acceptors accepted %s at ballot (%" PRIu64 ", %s), %d needed",
                     w->accepted, w->nacc, ballot_value_name(w->value), w->b.counter, w->b.node,
                     majority(w));
}

static void on_call_done(void *arg, int rc, const struct httpc_resp *resp,
                         const struct dtx_err *err)
{
    struct call *c = arg;
    struct watched *w = c->w;
    cJSON *root = NULL;
    struct ballot promised = {0}, ab = {0};
    const char *v = NULL, *known = NULL;
    bool flag = false, stale = !w || c->round != w->round;
    bool accept = c->accept;

    if (!w && rc < 0)
        log_warn("a three-phase commit decision did not reach an acceptor: %s; it will ask when "
                 "it needs to",
                 err ? err->msg : "");
    call_free(c);
    if (stale)
        return;
    if (rc < 0 || resp->status != 200 || jsonx_parse(resp->body, resp->body_len, &root, NULL) < 0) {
        log_debug("transaction %s: an acceptor did not answer: %s", w->gtid,
                  rc < 0 && err ? err->msg : "bad answer");
        if (accept)
            on_accepted(w, false, &promised);
        else
            on_promise(w, false, &promised, &ab, BV_NONE, BV_NONE);
        cJSON_Delete(root);
        return;
    }
    ballot_from_json(root, "promised", &promised, NULL);
    jsonx_bool(root, "", accept ? "accepted" : "granted", false, &flag, NULL);
    if (accept) {
        on_accepted(w, flag, &promised);
    } else {
        const cJSON *acc = cJSON_GetObjectItemCaseSensitive(root, "accepted");

        if (cJSON_IsObject(acc)) {
            ballot_from_json(acc, "ballot", &ab, NULL);
            jsonx_str(acc, "", "value", false, &v, NULL);
        }
        jsonx_str(root, "", "decided", false, &known, NULL);
        on_promise(w, flag, &promised, &ab, ballot_value_parse(v), ballot_value_parse(known));
    }
    cJSON_Delete(root);
}

/* POSTs body to an acceptor at url; w NULL for a DECIDE (owned by t until it is answered). */
/* A call that could not be sent fails as if it had: from the loop, never inside send_call. */
static void on_call_unsent(struct ev_loop *loop, struct ev_defer *d)
{
    struct call *c = d->data;

    (void)loop;
    on_call_done(c, c->err.code, NULL, &c->err);
}

static void send_call(struct terminate *t, struct watched *w, const char *url, const char *path,
                      cJSON *body, bool accept)
{
    const struct agent_config *cfg = t->ag->cfg;
    struct call *c = xcalloc(1, sizeof(*c));
    struct buf headers = BUF_INIT;
    struct addr a;

    c->t = t;
    c->w = w;
    c->round = w ? w->round : 0;
    c->accept = accept;
    c->body = jsonx_print(body);
    cJSON_Delete(body);
    ev_defer_init(&c->failing, on_call_unsent, c);
    list_insert_tail(w ? &w->calls : &t->notices, &c->link);
    dtx_err_clear(&c->err);
    if (!*url)
        dtx_err_set(&c->err, DTX_EUNAVAIL, "no coordinator of its node is known here yet");
    if (!*url || addr_parse_url(url, &a, &c->err) < 0) {
        ev_defer(t->ag->loop, &c->failing);
        return;
    }
    c->http = httpc_new(&t->ag->dialer, &a);
    buf_puts(&headers, "Content-Type: application/json\r\n");
    if (auth_token_is_set(&cfg->peer_token))
        buf_printf(&headers, "Authorization: Bearer %s\r\n", cfg->peer_token.value);
    httpc_request(c->http, "POST", path, headers.data, c->body, strlen(c->body), CALL_TIMEOUT_MS,
                  on_call_done, c);
    buf_release(&headers);
}

static void on_self_accepted(void *arg, int rc, const struct rm_acceptor *st,
                             const struct dtx_err *err)
{
    struct watched *w = arg;

    if (!watched_answered(w))
        return;
    if (w->phase != RP_ACCEPT)
        return;
    if (rc < 0 || !st->accepted) {
        round_failed(w, "could not accept its own ballot: %s",
                     rc < 0 && err ? err->msg : "a higher ballot was promised here");
        if (rc == 0 && st->promised.counter > w->highest)
            w->highest = st->promised.counter;
        return;
    }
    w->answered = 1;
    w->accepted = 1;
    for (int i = 0; i < w->nacc; i++) {
        if (!w->acc[i].self)
            send_call(w->t, w, w->acc[i].url, "/v1/peer/3pc/accept", request_body(w, true), true);
    }
}

/* Phase 2: the value of the highest accepted ballot among the promises, else abort. */
static void phase2(struct watched *w)
{
    w->phase = RP_ACCEPT;
    w->round++; /* the remaining promises are not needed */
    calls_drop(&w->calls);
    w->value = w->best_value != BV_NONE ? w->best_value : BV_ABORT;
    w->answered = 0;
    w->accepted = 0;
    log_info("transaction %s: %d of %d acceptors promised ballot (%" PRIu64 ", %s): proposing %s",
             w->gtid, w->granted, w->nacc, w->b.counter, w->b.node, ballot_value_name(w->value));
    watched_acceptor(w, RM_ACC_ACCEPT, w->value, on_self_accepted);
}

static void on_self_promised(void *arg, int rc, const struct rm_acceptor *st,
                             const struct dtx_err *err)
{
    struct watched *w = arg;

    if (!watched_answered(w))
        return;
    if (w->phase != RP_PROMISE)
        return;
    if (rc < 0 || !st->granted) {
        if (rc == 0 && st->promised.counter > w->highest)
            w->highest = st->promised.counter;
        round_failed(w, "its own promise: %s",
                     rc < 0 && err ? err->msg : "a higher ballot was promised here meanwhile");
        return;
    }
    if (st->decided != BV_NONE) {
        decided(w, st->decided);
        return;
    }
    w->answered = 0;
    w->granted = 0;
    w->best_value = BV_NONE;
    w->decided = BV_NONE;
    on_promise(w, true, &st->promised, &st->accepted_ballot, st->accepted_value, BV_NONE);
    for (int i = 0; i < w->nacc && w->phase == RP_PROMISE; i++) {
        if (!w->acc[i].self)
            send_call(w->t, w, w->acc[i].url, "/v1/peer/3pc/promise", request_body(w, false),
                      false);
    }
}

static void on_state(void *arg, int rc, const struct rm_acceptor *st, const struct dtx_err *err)
{
    struct watched *w = arg;
    char self[BALLOT_NODE_MAX];

    if (!watched_answered(w))
        return;
    if (rc < 0 || !st->exists) {
        round_failed(w, "its three-phase commit state: %s",
                     rc < 0 && err ? err->msg : "none recorded");
        return;
    }
    if (st->decided != BV_NONE) {
        log_info("transaction %s: the decision (%s) is on record here", w->gtid,
                 ballot_value_name(st->decided));
        apply_decision(w->t, w->gtid, st->decided);
        watched_free(w);
        return;
    }
    if (!w->peers && st->peers && st->peers[0])
        w->peers = xstrdup(st->peers);
    if (!read_peers(w)) {
        round_failed(w, "its acceptors are not known here");
        return;
    }
    if (st->promised.counter > w->highest)
        w->highest = st->promised.counter;
    w->phase = RP_PROMISE;
    w->round++;
    w->rounds++;
    w->b.counter = w->highest + 1;
    snprintf(w->b.node, sizeof(w->b.node), "%s", self_node(w->t, self, sizeof(self)));
    log_warn("transaction %s: no decision from its coordinator; leading ballot (%" PRIu64
             ", %s) to finish it with its %d acceptors",
             w->gtid, w->b.counter, w->b.node, w->nacc);
    watched_acceptor(w, RM_ACC_PROMISE, BV_NONE, on_self_promised);
}

static void round_start(struct watched *w)
{
    if (w->phase != RP_IDLE)
        return;
    w->phase = RP_PROMISE; /* until on_state: nothing else starts a round */
    watched_acceptor(w, RM_ACC_STATE, BV_NONE, on_state);
}

static void on_round_timer(struct ev_loop *loop, struct ev_timer *tm)
{
    (void)loop;
    round_start(tm->data);
}

/* ---- watching --------------------------------------------------------------------------- */

void terminate_watch(struct terminate *t, const char *gtid, const char *peers)
{
    struct watched *w = find(t, gtid);
    uint32_t after = t->ag->cfg->termination_timeout_ms;

    if (!w) {
        w = xcalloc(1, sizeof(*w));
        w->t = t;
        snprintf(w->gtid, sizeof(w->gtid), "%s", gtid);
        gid_format(w->gid, sizeof(w->gid), gtid, t->ag->cfg->name);
        list_init(&w->calls);
        ev_timer_init(&w->timer, on_round_timer, w);
        w->backoff_ms = ROUND_BACKOFF_MS;
        hmap_put(&t->by_gtid, &w->node, w->gtid);
        t->nwatched++;
    }
    if (peers && !w->peers)
        w->peers = xstrdup(peers);
    /* watched again (recovery lists it every round): the first deadline stands */
    if (w->phase == RP_IDLE && !ev_timer_is_active(&w->timer))
        ev_timer_start(t->ag->loop, &w->timer, after + jitter(after / 2 + 1));
}

void terminate_decided(struct terminate *t, const char *gtid, enum ballot_value v)
{
    struct watched *w = find(t, gtid);
    char gid[DTX_GID_MAX + 1];

    if (w)
        watched_free(w);
    gid_format(gid, sizeof(gid), gtid, t->ag->cfg->name);
    rm_acceptor(t->ag->rm, RM_ACC_DECIDED, gtid, gid, NULL, NULL, v, on_noted, NULL);
}

size_t terminate_watching(const struct terminate *t)
{
    return t->nwatched;
}

void terminate_describe(const struct terminate *t, const char *gtid, cJSON *o)
{
    const struct watched *w = find(t, gtid);

    if (!w)
        return;
    jsonx_add_str(o, "protocol", "3pc");
    jsonx_add_str(o, "termination",
                  w->phase == RP_IDLE && w->rounds == 0 ? "waiting for the "
                                                          "coordinator"
                  : w->phase == RP_IDLE                 ? "blocked"
                                                        : "leading");
    if (w->blocked[0])
        jsonx_add_str(o, "blocked", w->blocked);
}

/* ---- answering as an acceptor ------------------------------------------------------------ */

static void ask_promise(struct answer *a);

static void on_promise_retry(struct ev_loop *loop, struct ev_timer *tm)
{
    (void)loop;
    ask_promise(tm->data);
}

static void answer_free(struct answer *a)
{
    list_remove(&a->link);
    ev_timer_stop(a->t->ag->loop, &a->retry);
    free(a->peers);
    free(a);
}

static struct answer *answer_new(struct terminate *t, struct httpd_req *req, const char *gtid)
{
    struct answer *a = xcalloc(1, sizeof(*a));

    ev_timer_init(&a->retry, on_promise_retry, a);
    a->t = t;
    a->req = req;
    snprintf(a->gtid, sizeof(a->gtid), "%s", gtid);
    gid_format(a->gid, sizeof(a->gid), gtid, t->ag->cfg->name);
    list_insert_tail(&t->answers, &a->link);
    return a;
}

static void add_state(cJSON *o, const struct rm_acceptor *st)
{
    ballot_add_state(o, &st->promised, &st->accepted_ballot, st->accepted_value, st->decided);
    jsonx_add_str(o, "branch", st->prepared ? "prepared" : st->fenced ? "fenced" : "none");
}

static void reply(struct answer *a, cJSON *o)
{
    httpd_reply_json(a->req, 200, jsonx_print(o));
    cJSON_Delete(o);
    answer_free(a);
}

static void on_promised(void *arg, int rc, const struct rm_acceptor *st, const struct dtx_err *err)
{
    struct answer *a = arg;
    struct branch *b;
    cJSON *o;

    if (rc < 0) {
        agent_reply_db_error(a->req, err);
        answer_free(a);
        return;
    }
    if (st->busy && ++a->tries < FENCE_TRIES) {
        /* its branch runs here: cancel it (it must never prepare now), then ask again */
        b = branch_find(&a->t->ag->branches, a->gtid);
        if (b && branch_accepts(b, BE_FENCE))
            branch_step(b, BE_FENCE, NULL);
        ev_timer_start(a->t->ag->loop, &a->retry, FENCE_RETRY_MS);
        return;
    }
    if (st->granted) {
        struct watched *w = find(a->t, a->gtid);

        if (w && w->phase != RP_DONE && st->promised.counter > w->highest)
            w->highest = st->promised.counter;
    }
    o = jsonx_new_object();
    jsonx_add_bool(o, "granted", st->granted && !st->busy);
    add_state(o, st);
    reply(a, o);
}

static void ask_promise(struct answer *a)
{
    rm_acceptor(a->t->ag->rm, RM_ACC_PROMISE, a->gtid, a->gid, a->peers, &a->b, BV_NONE,
                on_promised, a);
}

static void on_accept_done(void *arg, int rc, const struct rm_acceptor *st,
                           const struct dtx_err *err)
{
    struct answer *a = arg;
    cJSON *o;

    if (a->stream) { /* the coordinator's PRE-COMMIT, answered on its stream */
        cJSON *m = msg_new(MSG_ACCEPTED, a->gtid);

        if (rc < 0)
            log_warn("transaction %s: could not accept the coordinator's pre-commit: %s", a->gtid,
                     err ? err->msg : "");
        jsonx_add_bool(m, "ok", rc == 0 && st->accepted);
        jsonx_add(m, "promised", ballot_json(rc == 0 ? &st->promised : &a->b));
        if (rc == 0 && st->accepted)
            fp_hit("agent.3pc_accepted");
        if (a->peer)
            peer_send(a->t->ag, a->peer, m, NULL);
        else
            cJSON_Delete(m);
        answer_free(a);
        return;
    }
    if (rc < 0) {
        agent_reply_db_error(a->req, err);
        answer_free(a);
        return;
    }
    o = jsonx_new_object();
    jsonx_add_bool(o, "accepted", st->accepted);
    jsonx_add(o, "promised", ballot_json(&st->promised));
    reply(a, o);
}

void terminate_on_accept(struct terminate *t, struct peer *peer, const struct msg *m)
{
    struct answer *a = answer_new(t, NULL, m->gtid);
    struct watched *w = find(t, m->gtid);

    a->peer = peer;
    a->stream = true;
    a->b = m->ballot;
    if (w && w->phase == RP_IDLE) { /* the coordinator is at work: no round yet */
        ev_timer_stop(t->ag->loop, &w->timer);
        terminate_watch(t, m->gtid, NULL);
    }
    rm_acceptor(t->ag->rm, RM_ACC_ACCEPT, a->gtid, a->gid, NULL, &a->b, BV_COMMIT, on_accept_done,
                a);
}

static void on_state_answer(void *arg, int rc, const struct rm_acceptor *st,
                            const struct dtx_err *err)
{
    struct answer *a = arg;
    cJSON *o;

    if (rc < 0) {
        agent_reply_db_error(a->req, err);
        answer_free(a);
        return;
    }
    o = jsonx_new_object();
    jsonx_add_str(o, "gtid", a->gtid);
    jsonx_add_bool(o, "known", st->exists);
    if (st->exists)
        add_state(o, st);
    reply(a, o);
}

/* Reads {"gtid", "ballot"?, "value"?, "peers"?} of a request to an acceptor endpoint. */
static int read_request(struct httpd_req *req, bool ballot, bool value, struct answer *out,
                        char *gtid, struct dtx_err *err)
{
    const char *body;
    const cJSON *peers;
    cJSON *root = NULL;
    size_t len;
    int rc = httpd_req_json_body(req, &body, &len, err);

    if (rc == 0)
        rc = jsonx_parse(body, len, &root, err);
    if (rc == 0)
        rc = ballot_read_request(root, ballot, value, gtid, &out->b, &out->v, err);
    if (rc == 0) {
        peers = cJSON_GetObjectItemCaseSensitive(root, "peers");
        out->peers = cJSON_IsObject(peers) ? jsonx_print(peers) : NULL;
    }
    cJSON_Delete(root);
    return rc;
}

void terminate_http(struct terminate *t, struct httpd_req *req, const char *method,
                    const char *rest)
{
    struct answer tmp = {0}, *a;
    char gtid[DTX_GTID_MAX + 1];
    struct dtx_err err;
    int op;

    dtx_err_clear(&err);
    if (strcmp(method, "GET") == 0 && rest[0] == '/' &&
        gid_parse_gtid(rest + 1, NULL, NULL, NULL)) {
        if (!agent_shard_ready(t->ag, req))
            return;
        a = answer_new(t, req, rest + 1);
        rm_acceptor(t->ag->rm, RM_ACC_STATE, a->gtid, a->gid, NULL, NULL, BV_NONE, on_state_answer,
                    a);
        return;
    }
    op = strcmp(rest, "/promise") == 0  ? 1
         : strcmp(rest, "/accept") == 0 ? 2
         : strcmp(rest, "/decide") == 0 ? 3
                                        : 0;
    if (strcmp(method, "POST") != 0 || op == 0) {
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "use POST /v1/peer/3pc/promise|accept|decide or GET "
                           "/v1/peer/3pc/{gtid}");
        return;
    }
    if (read_request(req, op != 3, op != 1, &tmp, gtid, &err) < 0) {
        free(tmp.peers);
        httpd_reply_error(req, &err);
        return;
    }
    if (op == 3) {
        struct watched *w = find(t, gtid);

        free(tmp.peers);
        log_info("transaction %s: decided %s (told by another acceptor)", gtid,
                 ballot_value_name(tmp.v));
        if (w)
            watched_free(w);
        apply_decision(t, gtid, tmp.v);
        httpd_reply_json(req, 200, xstrdup("{\"ok\":true}"));
        return;
    }
    if (!agent_shard_ready(t->ag, req)) { /* a promise or acceptance waited for the database */
        free(tmp.peers);
        return;
    }
    a = answer_new(t, req, gtid);
    a->b = tmp.b;
    a->v = tmp.v;
    a->peers = tmp.peers;
    if (op == 1)
        ask_promise(a);
    else
        rm_acceptor(t->ag->rm, RM_ACC_ACCEPT, a->gtid, a->gid, a->peers, &a->b, a->v,
                    on_accept_done, a);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

struct terminate *terminate_new(struct agent *ag)
{
    struct terminate *t = xcalloc(1, sizeof(*t));

    t->ag = ag;
    hmap_init(&t->by_gtid);
    list_init(&t->answers);
    list_init(&t->notices);
    list_init(&t->applying);
    list_init(&t->gone);
    return t;
}

void terminate_peer_lost(struct terminate *t, struct peer *peer)
{
    for (struct list_node *n = t->answers.next; n != &t->answers; n = n->next) {
        struct answer *a = container_of(n, struct answer, link);

        if (a->peer == peer)
            a->peer = NULL; /* its answer is dropped: the coordinator sends again */
    }
}

void terminate_free(struct terminate *t)
{
    struct hmap_iter it;
    struct hmap_node *n;

    if (!t)
        return;
    while ((n = hmap_first(&t->by_gtid, &it)) != NULL)
        watched_free(container_of(n, struct watched, node));
    while (!list_empty(&t->gone)) { /* the database answers no more: rm_free drops its calls */
        struct watched *w = container_of(t->gone.next, struct watched, gone_link);

        list_remove(&w->gone_link);
        watched_release(w);
    }
    while (!list_empty(&t->answers))
        answer_free(container_of(t->answers.next, struct answer, link));
    calls_drop(&t->notices);
    while (!list_empty(&t->applying)) {
        struct applying *ap = container_of(t->applying.next, struct applying, link);

        list_remove(&ap->link);
        free(ap);
    }
    hmap_release(&t->by_gtid);
    free(t);
}
