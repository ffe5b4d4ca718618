/*
 * recovery.c - in-doubt resolution on the participant (see recovery.h).
 *
 * One round:
 *   list prepared dtx branches (rm) -> keep this shard's, older than
 *   recovery_min_age_ms, not being handled by the agent -> POST them to
 *   the coordinator's /v1/peer/outcomes -> finish the definite ones.
 * Rounds follow each other every recovery_interval_ms; after a failure to
 * reach the coordinator, with backoff from 500 ms doubling to 30 s.
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
#define REPORT_NAMES_MAX 10 /* unknown branches named one per line with each report */

struct asked {
    char gtid[DTX_GTID_MAX + 1];
    uint64_t xid;
    uint32_t age_ms;
    bool unknown; /* the coordinator has no record of it */
};

struct recovery {
    struct ev_loop *loop;
    const struct agent_config *cfg;
    struct rm *rm;
    struct recovery_ops ops;
    struct httpc *http;
    struct ev_timer timer;
    bool in_round;
    bool kicked;
    uint32_t backoff_ms;
    struct asked *asked; /* this round's batch */
    size_t nasked;
    size_t in_doubt;
    uint64_t rounds, resolved;
    uint64_t listed_us; /* when the last listing came (0: none succeeded yet) */
    int64_t oldest_ms;  /* the oldest prepared branch's age then (-1: none) */
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
    return all || r->asked[i].unknown;
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
        if (!r->asked[i].unknown)
            continue;
        log_warn("recovery: the coordinator has no record of transaction %s, whose branch is "
                 "prepared here; it stays prepared for an operator to resolve",
                 r->asked[i].gtid);
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
    report(r, true, why);
    schedule(r, r->backoff_ms);
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

static struct asked *find_asked(struct recovery *r, const char *gtid)
{
    for (size_t i = 0; i < r->nasked; i++) {
        if (strcmp(r->asked[i].gtid, gtid) == 0)
            return &r->asked[i];
    }
    return NULL;
}

/*
 * Acts on one answer (o: {"gtid","outcome","xid"?,"db"?}, the xid and
 * database identity the coordinator recorded); returns true when the
 * branch stays in doubt (a->unknown).
 */
static bool apply(struct recovery *r, const cJSON *o)
{
    const char *gtid = NULL, *outcome = NULL, *xs = NULL, *db = NULL;
    struct asked *a;
    uint64_t xid;

    jsonx_str(o, "", "gtid", true, &gtid, NULL);
    jsonx_str(o, "", "outcome", true, &outcome, NULL);
    jsonx_str(o, "", "xid", false, &xs, NULL);
    jsonx_str(o, "", "db", false, &db, NULL);
    a = gtid ? find_asked(r, gtid) : NULL;

    if (!a || !outcome)
        return false;
    a->unknown = false;
    if (strcmp(outcome, "commit") == 0 || strcmp(outcome, "abort") == 0) {
        bool commit = outcome[0] == 'c';

        log_info("recovery: transaction %s was %s: %s its prepared branch", gtid,
                 commit ? "committed" : "aborted", commit ? "committing" : "rolling back");
        r->resolved++;
        xid = xs ? strtoull(xs, NULL, 10) : 0;
        if (!r->ops.busy(r->ops.arg, gtid))
            r->ops.finish(r->ops.arg, gtid, xid ? xid : a->xid, db, commit);
        return false;
    }
    if (strcmp(outcome, "in_flight") == 0)
        return false;  /* still being decided: never race it */
    a->unknown = true; /* report() names it */
    return true;
}

static void on_answer(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct recovery *r = arg;
    const cJSON *outcomes = NULL, *o;
    cJSON *root = NULL;
    char why[300];

    if (rc < 0) {
        round_failed(r, err ? err->msg : "the coordinator did not answer");
        return;
    }
    if (resp->status != 200 || jsonx_parse(resp->body, resp->body_len, &root, NULL) < 0 ||
        jsonx_array(root, "", "outcomes", true, &outcomes, NULL) < 0) {
        snprintf(why, sizeof(why), "the coordinator answered HTTP %d: %.200s", resp->status,
                 resp->body);
        cJSON_Delete(root);
        round_failed(r, why);
        return;
    }
    r->in_doubt = 0;
    cJSON_ArrayForEach(o, outcomes) r->in_doubt += apply(r, o);
    cJSON_Delete(root);
    r->backoff_ms = BACKOFF_MIN_MS;
    if (r->in_doubt)
        report(r, false, "the coordinator does not know them");
    else
        report_clear(r);
    schedule(r, r->cfg->recovery_interval_ms);
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
    s = jsonx_print(body);
    buf_puts(&headers, "Content-Type: application/json\r\n");
    if (r->cfg->peer_token[0])
        buf_printf(&headers, "Authorization: Bearer %s\r\n", r->cfg->peer_token);
    httpc_request(r->http, "POST", "/v1/peer/outcomes", headers.data, s, strlen(s),
                  QUERY_TIMEOUT_MS, on_answer, r);
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

static void on_listed(void *arg, int rc, const struct rm_prepared *items, size_t n,
                      const struct dtx_err *err)
{
    struct recovery *r = arg;

    r->nasked = 0;
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
    if (r->nasked == 0) {
        report_clear(r);
        schedule(r, r->cfg->recovery_interval_ms);
        return;
    }
    ask(r);
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

struct recovery *recovery_new(struct ev_loop *loop, const struct agent_config *cfg, struct rm *rm,
                              const struct recovery_ops *ops)
{
    struct recovery *r = xcalloc(1, sizeof(*r));
    r->loop = loop;
    r->cfg = cfg;
    r->rm = rm;
    r->ops = *ops;
    r->backoff_ms = BACKOFF_MIN_MS;
    r->http = httpc_new(loop, &cfg->coordinator);
    ev_timer_init(&r->timer, on_timer, r);
    ev_timer_start(loop, &r->timer, 0);
    return r;
}

void recovery_free(struct recovery *r)
{
    if (!r)
        return;
    ev_timer_stop(r->loop, &r->timer);
    httpc_free(r->http);
    free(r->asked);
    free(r);
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
