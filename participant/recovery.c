/*
 * recovery.c - in-doubt resolution on the participant (see recovery.h).
 *
 * One round:
 *   list prepared dtx branches (rm) -> keep this shard's, older than
 *   recovery_min_age_ms, not being handled by the agent -> POST them to
 *   /v1/peer/outcomes of every coordinator this agent serves -> finish the
 *   definite ones.
 * Rounds follow each other every recovery_interval_ms; after a failure to
 * reach a coordinator, with backoff from 500 ms doubling to 30 s.
 *
 * Several coordinators. A gtid names the node that issued it (gid.h), and
 * only that node may decide it. Every coordinator answers with its node
 * and the epoch of its run; an outcome counts only from the gtid's own
 * node, and of two runs of that node answering (an active and one that
 * was replaced but does not know it yet), from the newer. A standby
 * answers 503 and counts as no answer. The answers also tell which URL
 * serves which node now (recovery_coordinator_url): a round runs even when
 * nothing is prepared, so that this stays known.
 *
 * The sweep (three-phase commit). A shard deletes its acceptor row of a
 * transaction when the coordinator says forget (rm.h, forget_acceptors).
 * A forget that never came or was lost (the shard was not connected, the
 * agent stopped before its batch ran, PostgreSQL crashed before the
 * deletion was flushed) left the row for good. So every
 * acceptor_sweep_age_ms / 2, a round also lists up to SWEEP_MAX rows not
 * changed for acceptor_sweep_age_ms whose branch is not prepared here, and
 * sends them along as "acceptor_rows". The owner of each (as for outcomes)
 * answers which of them it has finished with every participant's
 * acknowledgement, and those go as a forget would have sent them. Its word
 * is what makes this safe: a participant's own view (its branch is done)
 * is not enough, as another may still be in doubt and need this row's
 * promise or acceptance (docs/protocol.md, "Three-phase commit"). Rows no
 * coordinator vouches for stay. Listings page through the rows in gtid
 * order, so that rows nobody vouches for never hide the others.
 *
 * Thread model: the participant's event-loop thread.
 */
#include "dtx/recovery.h"
#include "dtx/buf.h"
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

#define BATCH_MAX        1000
#define BACKOFF_MIN_MS   500
#define BACKOFF_MAX_MS   30000
#define QUERY_TIMEOUT_MS 5000
#define REPORT_EVERY_US  (30u * 1000000u)
#define REPORT_NAMES_MAX 10   /* unknown branches named one per line with each report */
#define SWEEP_MAX        1000 /* acceptor rows asked about in one round */

struct asked {
    char gtid[DTX_GTID_MAX + 1];
    uint64_t xid;
    uint32_t age_ms;
    bool unknown; /* the coordinator has no record of it */
    bool unowned; /* no coordinator of the node that issued it answered */
};

/* One coordinator of the config, as this round and the last ones saw it. */
struct rcoord {
    struct recovery *r;
    struct httpc *http;
    cJSON *answer;               /* this round's answer (200, parsed), until the round merges */
    char why[300];               /* this round's failure ("" when it answered) */
    char node[DTX_NAME_MAX + 1]; /* the node it answered as, last time it did ("" never) */
    uint64_t epoch;              /* ... and its run's epoch */
    bool serving;                /* its last answer was a 200 */
    char said[300];              /* the failure last logged ("" after an answer) */
};

struct recovery {
    struct ev_loop *loop;
    const struct agent_config *cfg;
    struct rm *rm;
    struct recovery_ops ops;
    struct rcoord *coords; /* cfg->ncoords */
    uint32_t waiting;      /* answers this round still awaits */
    struct ev_timer timer;
    bool in_round;
    bool kicked;
    uint32_t backoff_ms;
    struct asked *asked; /* this round's batch */
    size_t nasked;
    size_t in_doubt;
    uint64_t rounds, resolved;
    /* the sweep of acceptor rows left behind */
    char (*rows)[DTX_GTID_MAX + 1]; /* this round's, in gtid order */
    size_t nrows;
    char sweep_after[DTX_GTID_MAX + 1]; /* where the next listing goes on ("": the start) */
    char sweep_next[DTX_GTID_MAX + 1];  /* ... once this round's listing was answered */
    bool listed;                        /* this round listed rows (perhaps none) */
    uint64_t swept_us;                  /* when the last listing was asked for (0: never) */
    uint64_t swept;                     /* rows handed back to be deleted */
    uint64_t listed_us;                 /* when the last listing came (0: none succeeded yet) */
    int64_t oldest_ms;                  /* the oldest prepared branch's age then (-1: none) */
    /* what the last "in doubt" line was about: which branches, and why */
    uint64_t last_digest;
    char last_why[300];
    uint64_t last_report_us;
};

static void round_start(struct recovery *r);

static void schedule(struct recovery *r, uint32_t ms)
{
    r->in_round = false;
    if (r->kicked) {
        r->kicked = false;
        ms = 0;
    }
    ev_timer_start(r->loop, &r->timer, ms);
}

/* True when asked[i] is in doubt: every asked branch after a failed round, else the unknown. */
static bool is_in_doubt(const struct recovery *r, size_t i, bool all)
{
    return all || r->asked[i].unknown || r->asked[i].unowned;
}

/* Which branches are in doubt, as one number that does not depend on their order. */
static uint64_t doubt_digest(const struct recovery *r, bool all)
{
    uint64_t sum = 0, mix = 0;

    for (size_t i = 0; i < r->nasked; i++) {
        uint64_t h = is_in_doubt(r, i, all) ? hmap_hash(r->asked[i].gtid) : 0;

        sum += h;
        mix ^= h * 0x9e3779b97f4a7c15u;
    }
    return sum ^ mix ^ r->in_doubt;
}

/*
 * Logs the in-doubt situation (all: every asked branch is in doubt, else
 * the ones the coordinator does not know) when what is in doubt or why
 * changes, and every 30 s while it lasts. Not the branches' age: it grows
 * every round, and a line that compared it would repeat every round.
 */
static void report(struct recovery *r, bool all, const char *why)
{
    uint64_t now = ev_now_us(r->loop), digest = doubt_digest(r, all);
    uint32_t oldest = 0;
    size_t named = 0;

    if (digest == r->last_digest && strcmp(why, r->last_why) == 0 &&
        now - r->last_report_us < REPORT_EVERY_US)
        return;
    for (size_t i = 0; i < r->nasked; i++) {
        if (is_in_doubt(r, i, all) && r->asked[i].age_ms > oldest)
            oldest = r->asked[i].age_ms;
    }
    log_warn("%zu prepared branch(es) in doubt (oldest %u s): %s; they stay prepared and keep "
             "their locks until the coordinator decides",
             r->in_doubt, oldest / 1000, why);
    for (size_t i = 0; i < r->nasked && !all && named < REPORT_NAMES_MAX; i++) {
        char node[DTX_NAME_MAX + 1] = "";

        if (r->asked[i].unknown)
            log_warn("recovery: the coordinator has no record of transaction %s, whose branch is "
                     "prepared here; it stays prepared for an operator to resolve",
                     r->asked[i].gtid);
        else if (r->asked[i].unowned && gid_parse_gtid(r->asked[i].gtid, node, NULL, NULL))
            log_warn("recovery: transaction %s was issued by coordinator node '%s', and no "
                     "coordinator of that node answered (none is configured here, or none is "
                     "up); its branch stays prepared until one does, or an operator resolves it",
                     r->asked[i].gtid, node);
        else
            continue;
        named++;
    }
    r->last_digest = digest;
    snprintf(r->last_why, sizeof(r->last_why), "%s", why);
    r->last_report_us = now;
}

/* Nothing is in doubt any more: the next doubt is news. */
static void report_clear(struct recovery *r)
{
    r->in_doubt = 0;
    r->last_digest = 0;
    r->last_why[0] = '\0';
}

static void round_failed(struct recovery *r, const char *why)
{
    r->in_doubt = r->nasked;
    if (r->nasked) /* a round with nothing to ask only kept track of who serves which node */
        report(r, true, why);
    schedule(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/*
 * Acts on one answer (o: {"gtid","outcome","xid"?,"db"?}, the xid and
 * database identity the coordinator recorded); returns true when the
 * branch stays in doubt (a->unknown).
 */
static bool apply(struct recovery *r, struct asked *a, const cJSON *o)
{
    const char *outcome = NULL, *xs = NULL, *db = NULL;
    uint64_t xid;

    jsonx_str(o, "", "outcome", true, &outcome, NULL);
    jsonx_str(o, "", "xid", false, &xs, NULL);
    jsonx_str(o, "", "db", false, &db, NULL);
    if (!outcome)
        return false;
    a->unknown = false;
    if (strcmp(outcome, "commit") == 0 || strcmp(outcome, "abort") == 0) {
        bool commit = outcome[0] == 'c';

        log_info("recovery: transaction %s was %s: %s its prepared branch", a->gtid,
                 commit ? "committed" : "aborted", commit ? "committing" : "rolling back");
        r->resolved++;
        xid = xs ? strtoull(xs, NULL, 10) : 0;
        if (!r->ops.busy(r->ops.arg, a->gtid))
            r->ops.finish(r->ops.arg, a->gtid, xid ? xid : a->xid, db, commit);
        return false;
    }
    if (strcmp(outcome, "in_flight") == 0)
        return false;  /* still being decided: never race it */
    a->unknown = true; /* report() names it */
    return true;
}

/* The coordinator whose answer decides gtids of node: the newest run of it that answered. */
static const struct rcoord *owner_of(const struct recovery *r, const char *node)
{
    const struct rcoord *best = NULL;

    for (uint32_t i = 0; i < r->cfg->ncoords; i++) {
        const struct rcoord *c = &r->coords[i];

        if (c->answer && strcmp(c->node, node) == 0 && (!best || c->epoch > best->epoch))
            best = c;
    }
    return best;
}

/* What the owner of a->gtid said about it (NULL: not asked of it, or no entry). */
static const cJSON *outcome_from(const struct rcoord *c, const char *gtid)
{
    const cJSON *outcomes = cJSON_GetObjectItemCaseSensitive(c->answer, "outcomes"), *o;

    cJSON_ArrayForEach(o, outcomes)
    {
        const cJSON *g = cJSON_GetObjectItemCaseSensitive(o, "gtid");

        if (cJSON_IsString(g) && strcmp(g->valuestring, gtid) == 0)
            return o;
    }
    return NULL;
}

static int gtid_cmp(const void *a, const void *b)
{
    return strcmp(a, b);
}

/*
 * The sweep's rows that their owner (the newest run of the node that
 * issued them) says it finished: they go, as its forget would have made
 * them go. A gtid in an answer that this round did not ask about, or that
 * another node's coordinator names, counts for nothing.
 */
static void sweep_finished(struct recovery *r)
{
    size_t n = 0;

    for (uint32_t i = 0; i < r->cfg->ncoords && r->nrows; i++) {
        const struct rcoord *c = &r->coords[i];
        const cJSON *finished, *g;

        if (!c->answer)
            continue;
        finished = cJSON_GetObjectItemCaseSensitive(c->answer, "finished");
        cJSON_ArrayForEach(g, finished)
        {
            char node[DTX_NAME_MAX + 1] = "";

            if (!cJSON_IsString(g) || !gid_parse_gtid(g->valuestring, node, NULL, NULL) ||
                owner_of(r, node) != c ||
                !bsearch(g->valuestring, r->rows, r->nrows, sizeof(*r->rows), gtid_cmp))
                continue;
            rm_forget_acceptors(r->rm, g->valuestring);
            n++;
        }
    }
    if (r->listed) /* answered (by some): the next listing goes on after these */
        snprintf(r->sweep_after, sizeof(r->sweep_after), "%s", r->sweep_next);
    r->listed = false;
    if (n)
        log_info("recovery: %zu acceptor row(s) of finished three-phase commit transactions "
                 "were left behind here (their coordinator's forget never came or was lost); "
                 "deleting them",
                 n);
    r->swept += n;
    r->nrows = 0;
}

/* Every coordinator answered or failed: act on the owners' outcomes. */
static void merge(struct recovery *r)
{
    size_t answered = 0;
    const char *why = NULL;

    r->in_doubt = 0;
    for (uint32_t i = 0; i < r->cfg->ncoords; i++) {
        answered += r->coords[i].answer != NULL;
        if (!r->coords[i].answer && !why)
            why = r->coords[i].why;
    }
    if (answered == 0) {
        round_failed(r, why && *why ? why : "no coordinator answered");
        return;
    }
    for (size_t i = 0; i < r->nasked; i++) {
        struct asked *a = &r->asked[i];
        char node[DTX_NAME_MAX + 1] = "";
        const struct rcoord *c;
        const cJSON *o;

        gid_parse_gtid(a->gtid, node, NULL, NULL);
        c = owner_of(r, node);
        o = c ? outcome_from(c, a->gtid) : NULL;
        a->unowned = o == NULL;
        a->unknown = false;
        r->in_doubt += o ? apply(r, a, o) : 1;
    }
    sweep_finished(r);
    for (uint32_t i = 0; i < r->cfg->ncoords; i++) {
        cJSON_Delete(r->coords[i].answer);
        r->coords[i].answer = NULL;
    }
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->in_doubt)
        report(r, false, "the coordinator that issued them does not know them, or did not answer");
    else
        report_clear(r);
    schedule(r, r->cfg->recovery_interval_ms);
}

/*
 * Says when a coordinator stops answering (its name does not resolve, its
 * certificate is refused, it is down) and when it answers again: one line
 * each time the reason changes, not one a round.
 */
static void say_reachable(struct recovery *r, struct rcoord *c)
{
    const char *url = r->cfg->coords[c - r->coords].url;

    if (strcmp(c->why, c->said) == 0)
        return;
    if (c->why[0])
        log_warn("recovery: cannot ask the coordinator at %s (retried every round): %s", url,
                 c->why);
    else
        log_info("recovery: the coordinator at %s answers again", url);
    snprintf(c->said, sizeof(c->said), "%s", c->why);
}

static void on_answer(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct rcoord *c = arg;
    struct recovery *r = c->r;
    const char *node = NULL;
    int64_t epoch = 0;
    cJSON *root = NULL;

    c->why[0] = '\0';
    if (rc < 0) {
        snprintf(c->why, sizeof(c->why), "%.190s",
                 err ? err->msg : "the coordinator did not answer");
    } else if (resp->status != 200 || jsonx_parse(resp->body, resp->body_len, &root, NULL) < 0 ||
               jsonx_str(root, "", "node", true, &node, NULL) < 0 || !gid_name_ok(node) ||
               jsonx_int(root, "", "epoch", true, 0, INT64_MAX, &epoch, NULL) < 0 ||
               !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(root, "outcomes"))) {
        snprintf(c->why, sizeof(c->why), "the coordinator at %s answered HTTP %d: %.100s",
                 r->cfg->coords[c - r->coords].url, resp->status, resp->body);
        cJSON_Delete(root);
        root = NULL;
    }
    c->serving = root != NULL;
    say_reachable(r, c);
    if (root) {
        snprintf(c->node, sizeof(c->node), "%s", node);
        c->epoch = (uint64_t)epoch;
        c->answer = root;
    }
    if (--r->waiting == 0)
        merge(r);
}

static void ask(struct recovery *r)
{
    cJSON *body = jsonx_new_object();
    cJSON *gtids = jsonx_new_array();
    struct buf headers = BUF_INIT;
    char *s;

    jsonx_add_str(body, "shard", r->cfg->name);
    for (size_t i = 0; i < r->nasked; i++)
        jsonx_append(gtids, cJSON_CreateString(r->asked[i].gtid));
    jsonx_add(body, "gtids", gtids);
    if (r->nrows) {
        cJSON *rows = jsonx_new_array();

        for (size_t i = 0; i < r->nrows; i++)
            jsonx_append(rows, cJSON_CreateString(r->rows[i]));
        jsonx_add(body, "acceptor_rows", rows);
    }
    s = jsonx_print(body);
    buf_puts(&headers, "Content-Type: application/json\r\n");
    if (auth_token_is_set(&r->cfg->peer_token))
        buf_printf(&headers, "Authorization: Bearer %s\r\n", r->cfg->peer_token.value);
    r->waiting = r->cfg->ncoords;
    for (uint32_t i = 0; i < r->cfg->ncoords; i++)
        httpc_request(r->coords[i].http, "POST", "/v1/peer/outcomes", headers.data, s, strlen(s),
                      QUERY_TIMEOUT_MS, on_answer, &r->coords[i]);
    buf_release(&headers);
    free(s);
    cJSON_Delete(body);
}

/* Remembers when the oldest of this shard's prepared branches was prepared (the metrics). */
static void note_oldest(struct recovery *r, const struct rm_prepared *items, size_t n)
{
    r->listed_us = ev_clock_us();
    r->oldest_ms = -1;
    for (size_t i = 0; i < n; i++) {
        char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];

        if (gid_parse(items[i].gid, gtid, shard) && strcmp(shard, r->cfg->name) == 0 &&
            (int64_t)items[i].age_ms > r->oldest_ms)
            r->oldest_ms = items[i].age_ms;
    }
}

static void on_rows(void *arg, int rc, const char (*gtids)[DTX_GTID_MAX + 1], size_t n,
                    const struct dtx_err *err)
{
    struct recovery *r = arg;

    r->nrows = 0;
    if (rc < 0) {
        log_warn("recovery: %s", err ? err->msg : "could not list acceptor rows");
    } else {
        free(r->rows);
        r->rows = xcalloc(n ? n : 1, sizeof(*r->rows));
        memcpy(r->rows, gtids, n * sizeof(*r->rows));
        r->nrows = n;
        r->listed = true;
        /* a full page: the next listing goes on after it; else from the start again */
        snprintf(r->sweep_next, sizeof(r->sweep_next), "%s", n == SWEEP_MAX ? gtids[n - 1] : "");
    }
    ask(r);
}

/*
 * Lists acceptor rows left behind when a sweep is due (then on_rows asks);
 * false when none is.
 */
static bool sweep(struct recovery *r)
{
    uint64_t now = ev_clock_us(), every = (uint64_t)r->cfg->acceptor_sweep_age_ms * 500;

    if (!r->cfg->acceptor_sweep_age_ms)
        return false;
    if (!r->sweep_after[0]) { /* a new pass (one that pages on goes on at once) */
        if (r->swept_us && now - r->swept_us < every)
            return false;
        r->swept_us = now;
    }
    rm_list_acceptor_rows(r->rm, r->cfg->acceptor_sweep_age_ms, r->sweep_after, SWEEP_MAX, on_rows,
                          r);
    return true;
}

static void on_listed(void *arg, int rc, const struct rm_prepared *items, size_t n,
                      const struct dtx_err *err)
{
    struct recovery *r = arg;

    r->nasked = 0;
    r->nrows = 0;
    r->listed = false;
    if (rc < 0) {
        log_warn("recovery: %s", err ? err->msg : "could not list prepared transactions");
        schedule(r, r->backoff_ms);
        return;
    }
    note_oldest(r, items, n);
    free(r->asked);
    r->asked = xcalloc(n ? n : 1, sizeof(*r->asked));
    for (size_t i = 0; i < n && r->nasked < BATCH_MAX; i++) {
        char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];
        struct asked *a = &r->asked[r->nasked];

        if (!gid_parse(items[i].gid, gtid, shard) || strcmp(shard, r->cfg->name) != 0 ||
            items[i].age_ms < r->cfg->recovery_min_age_ms || r->ops.busy(r->ops.arg, gtid))
            continue;
        if (items[i].three_pc) {
            r->ops.three_pc(r->ops.arg, gtid);
            continue;
        }
        snprintf(a->gtid, sizeof(a->gtid), "%s", gtid);
        a->xid = items[i].xid;
        a->age_ms = items[i].age_ms;
        r->nasked++;
    }
    if (r->nasked == 0)
        report_clear(r);
    if (!sweep(r))
        ask(r); /* with nothing to ask too: who serves which node stays known */
}

static void round_start(struct recovery *r)
{
    r->in_round = true;
    r->rounds++;
    rm_list_prepared(r->rm, on_listed, r);
}

static void on_timer(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    round_start(t->data);
}

struct recovery *recovery_new(const struct dialer *d, const struct agent_config *cfg, struct rm *rm,
                              const struct recovery_ops *ops)
{
    struct recovery *r = xcalloc(1, sizeof(*r));
    r->loop = d->loop;
    r->cfg = cfg;
    r->rm = rm;
    r->ops = *ops;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->coords = xcalloc(cfg->ncoords, sizeof(*r->coords));
    for (uint32_t i = 0; i < cfg->ncoords; i++) {
        r->coords[i].r = r;
        r->coords[i].http = httpc_new(d, &cfg->coords[i].addr);
    }
    ev_timer_init(&r->timer, on_timer, r);
    ev_timer_start(d->loop, &r->timer, 0);
    return r;
}

void recovery_free(struct recovery *r)
{
    if (!r)
        return;
    ev_timer_stop(r->loop, &r->timer);
    for (uint32_t i = 0; i < r->cfg->ncoords; i++) {
        httpc_free(r->coords[i].http);
        cJSON_Delete(r->coords[i].answer);
    }
    free(r->coords);
    free(r->asked);
    free(r->rows);
    free(r);
}

const char *recovery_coordinator_url(const struct recovery *r, const char *node)
{
    const struct rcoord *best = NULL;

    for (uint32_t i = 0; i < r->cfg->ncoords; i++) {
        const struct rcoord *c = &r->coords[i];

        if (c->serving && strcmp(c->node, node) == 0 && (!best || c->epoch > best->epoch))
            best = c;
    }
    if (best)
        return r->cfg->coords[best - r->coords].url;
    return r->cfg->ncoords == 1 ? r->cfg->coords[0].url : NULL;
}

void recovery_kick(struct recovery *r)
{
    if (r->in_round)
        r->kicked = true;
    else
        ev_timer_start(r->loop, &r->timer, 0);
}

size_t recovery_in_doubt(const struct recovery *r)
{
    return r->in_doubt;
}

bool recovery_oldest_prepared(const struct recovery *r, double *age_s)
{
    if (!r->listed_us)
        return false;
    *age_s = r->oldest_ms < 0 ? 0 : r->oldest_ms / 1e3 + (ev_clock_us() - r->listed_us) / 1e6;
    return true;
}

uint64_t recovery_rounds(const struct recovery *r)
{
    return r->rounds;
}

uint64_t recovery_resolved(const struct recovery *r)
{
    return r->resolved;
}

uint64_t recovery_swept(const struct recovery *r)
{
    return r->swept;
}
