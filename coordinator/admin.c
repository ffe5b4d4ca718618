/*
 * admin.c - the operators' endpoints on the coordinator (admin.h lists
 * them). dtxctl talks to these; every one needs the admin token when auth
 * is configured (api.c checks it).
 *
 * What lives on a shard (prepared branches, their locks, the headroom in
 * max_prepared_transactions) is asked of its participant over HTTP
 * (/v1/admin/branches, peer token), all shards in parallel (fanout.h).
 *
 * Safety: a branch is finished only as the coordinator's record says
 * (coord_decision: a commit record, presumed abort of its own gtid, or an
 * operator's durable decision); a transaction still being decided is never
 * touched; a branch it has no decision for (another node's gtid, an epoch
 * its store does not know, a gtid not issued) is left to an operator's
 * explicit resolve, and a malformed dtx: branch to an explicit rollback.
 * An operator's decision is forced to the decision store before anything
 * acts on it; one that contradicts a recorded decision, or names a gtid of
 * this node not issued yet, is refused.
 *
 * State: the questions to participants still in flight (ad->pending), so
 * that admin_free can drop them. Thread model: the coordinator's
 * event-loop thread.
 */
#include "dtx/admin.h"
#include "dtx/fanout.h"
#include "dtx/gid.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct admin {
    struct coord *co;
    struct list_node pending; /* fan-outs waiting for participants */
};

/* An operator's request waiting for participants or for a record to be durable. */
struct ask {
    struct admin *ad;
    struct httpd_req *req;
    char gtid[DTX_GTID_MAX + 1];
    char gid[200]; /* a malformed branch's gid (recover --malformed) */
    int shard;     /* -1: every shard */
    bool commit;
    bool heuristic;
};

struct admin *admin_new(struct coord *co)
{
    struct admin *ad = xcalloc(1, sizeof(*ad));

    ad->co = co;
    list_init(&ad->pending);
    return ad;
}

void admin_free(struct admin *ad)
{
    if (!ad)
        return;
    fanout_abandon(&ad->pending, free);
    free(ad);
}

static struct ask *ask_new(struct admin *ad, struct httpd_req *req, const char *gtid, int shard)
{
    struct ask *a = xcalloc(1, sizeof(*a));

    a->ad = ad;
    a->req = req;
    a->shard = shard;
    snprintf(a->gtid, sizeof(a->gtid), "%s", gtid ? gtid : "");
    return a;
}

/* True for a well-formed gtid: nothing else goes into a record or a participant's URL. */
static bool is_gtid(const char *gtid)
{
    uint64_t epoch, seq;

    return gid_parse_gtid(gtid, NULL, &epoch, &seq);
}

/* ---- asking participants ---------------------------------------------------- */

/* Asks every participant for its prepared branches; done gets a (freed by done). */
static void ask_branches(struct ask *a, fanout_done_fn done)
{
    const struct coord_config *cfg = coord_config(a->ad->co);
    char **paths = xcalloc(cfg->nshards, sizeof(*paths));

    for (size_t i = 0; i < cfg->nshards; i++)
        paths[i] = "/v1/admin/branches";
    fanout_start(coord_dialer(a->ad->co), cfg, &a->ad->pending, "GET", paths, done, a);
    free(paths);
}

/* Asks a->shard (or every shard, -1) to commit or roll back a->gtid's prepared branch. */
static void ask_finish(struct ask *a, fanout_done_fn done)
{
    const struct coord_config *cfg = coord_config(a->ad->co);
    char **paths = xcalloc(cfg->nshards, sizeof(*paths));
    char gid[DTX_GID_MAX + 1];

    for (size_t i = 0; i < cfg->nshards; i++) {
        if (a->shard >= 0 && (int)i != a->shard)
            continue;
        gid_format(gid, sizeof(gid), a->gtid, cfg->shards[i].name);
        paths[i] = xasprintf("/v1/admin/branches/%s/%s", gid, a->commit ? "commit" : "rollback");
    }
    fanout_start(coord_dialer(a->ad->co), cfg, &a->ad->pending, "POST", paths, done, a);
    for (size_t i = 0; i < cfg->nshards; i++)
        free(paths[i]);
    free(paths);
}

/* ---- rendering helpers ------------------------------------------------------- */

static cJSON *notes_json(const struct coord_opnote *n)
{
    cJSON *arr = jsonx_new_array();

    for (; n; n = n->next) {
        cJSON *o = jsonx_new_object();

        jsonx_add_str(o, "action", n->kind == DREC_OP_FORGET ? "forget" : "resolve");
        jsonx_add_str(o, "decision", n->commit ? "commit" : "abort");
        if (n->shard[0])
            jsonx_add_str(o, "shard", n->shard);
        jsonx_add_str(o, "operator", n->who);
        jsonx_add_str(o, "reason", n->reason);
        jsonx_add_time(o, "at", n->wall_us);
        jsonx_append(arr, o);
    }
    return arr;
}

static cJSON *heurs_json(const struct coord_heur *h)
{
    cJSON *arr = jsonx_new_array();

    for (; h; h = h->next) {
        cJSON *o = jsonx_new_object();

        jsonx_add_str(o, "kind", h->kind == DREC_HEUR_MIXED ? "mixed" : "hazard");
        jsonx_add_str(o, "shard", h->shard);
        jsonx_add_str(o, "decision", h->commit ? "commit" : "abort");
        jsonx_add_str(o, "detail", h->what);
        jsonx_add_time(o, "at", h->wall_us);
        jsonx_append(arr, o);
    }
    return arr;
}

/* The newest operator resolve among notes n, or NULL. */
static const struct coord_opnote *last_resolve(const struct coord_opnote *n)
{
    const struct coord_opnote *r = NULL;

    for (; n; n = n->next) {
        if (n->kind == DREC_OP_RESOLVE)
            r = n;
    }
    return r;
}

/* True when an operator note about gtid is newer than its newest heuristic outcome h... */
static bool heur_settled(const struct coord_heur *h, const struct coord_opnote *n)
{
    uint64_t newest = 0;

    for (; h; h = h->next)
        newest = h->wall_us > newest ? h->wall_us : newest;
    for (; n; n = n->next) {
        if (n->wall_us >= newest)
            return true;
    }
    return false;
}

/*
 * "heuristic", "decided_by" and their evidence ("heuristics", "operator"):
 * "mixed" or "hazard" when a shard did otherwise than decided, or cannot
 * prove what it did ("heuristic_settled" once an operator recorded a
 * decision about it afterwards, after checking); else the operator's
 * decision when an operator decided (in_memory: the coordinator had a
 * decision of its own, which an operator's resolve could only confirm);
 * "hazard", settled, for a shard an operator forgot.
 */
static void add_heuristic(const struct coord *co, const char *gtid, bool in_memory, cJSON *o)
{
    const struct coord_heur *h = coord_heurs(co, gtid);
    const struct coord_opnote *n = coord_notes(co, gtid), *r = last_resolve(n);
    const char *word = coord_heur_word(h);

    if (!word && r && !in_memory)
        word = r->commit ? "commit" : "abort";
    else if (!word && n && !r)
        word = "hazard"; /* only forgets: a shard's branch was given up on */
    if (word)
        jsonx_add_str(o, "heuristic", word);
    if (word && (h || !r))
        jsonx_add_bool(o, "heuristic_settled", !h || heur_settled(h, n));
    jsonx_add_str(o, "decided_by", r && !in_memory ? "operator" : "coordinator");
    if (h)
        jsonx_add(o, "heuristics", heurs_json(h));
    if (n)
        jsonx_add(o, "operator", notes_json(n));
}

/* tx's state (GET /v1/transactions/{gtid}) with what shards and operators did to it. */
static cJSON *tx_json(const struct coord *co, const struct tx *tx)
{
    cJSON *o = tx_state_json(tx);

    add_heuristic(co, tx_gtid(tx), true, o);
    if (tx_is_learned(tx))
        cJSON_ReplaceItemInObjectCaseSensitive(o, "decided_by", cJSON_CreateString("participants"));
    else if (!tx_is_decided(tx))
        cJSON_DeleteItemFromObjectCaseSensitive(o, "decided_by"); /* nobody has, yet */
    return o;
}

/* The status of a transaction known only from operator notes: what the last one decided. */
static enum dtx_status noted_status(const struct coord_opnote *n)
{
    while (n->next)
        n = n->next;
    return n->commit ? DTX_ST_COMMITTED : DTX_ST_ABORTED;
}

/*
 * A transaction known only from operator notes (an orphan someone
 * resolved) or heuristic outcomes (one that finished, then left memory).
 */
static cJSON *noted_json(const struct coord *co, const char *gtid)
{
    const struct coord_opnote *n = coord_notes(co, gtid);
    const struct coord_heur *h = coord_heurs(co, gtid);
    cJSON *o = jsonx_new_object();

    jsonx_add_str(o, "gtid", gtid);
    if (h)
        jsonx_add_str(o, "status", h->commit ? "committed" : "aborted");
    else
        jsonx_add_str(o, "status", dtx_status_name(noted_status(n)));
    jsonx_add_time(o, "decided_at", n ? n->wall_us : h->wall_us);
    add_heuristic(co, gtid, h && !last_resolve(n), o);
    return o;
}

void admin_get_transaction(struct admin *ad, struct httpd_req *req, const char *gtid,
                           const char *who)
{
    const struct tx *tx = coord_find(ad->co, gtid);
    bool others = tx && !tx_owned_by(tx, who); /* answered as if there were none */
    cJSON *o;

    if (others || (!tx && !coord_notes(ad->co, gtid) && !coord_heurs(ad->co, gtid))) {
        /*
         * No presumed "aborted" here: checkpoints keep only what recovery
         * and idempotent retries need, so a transaction without a record
         * may also be one that committed before the last restart.
         */
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "no record of transaction '%s': it never existed here, it aborted or "
                           "finished before the retention period or the last restart (only "
                           "committed ones with an idempotency key are sure to be kept across a "
                           "restart)",
                           gtid);
        return;
    }
    o = tx ? tx_json(ad->co, tx) : noted_json(ad->co, gtid);
    httpd_reply_json(req, 200, jsonx_print(o));
    cJSON_Delete(o);
}

struct list_ctx {
    const struct coord *co;
    int status;             /* -1: any */
    uint64_t older_than_us; /* 0: any age */
    uint64_t now_us;
    cJSON *arr;
};

static void list_one(void *arg, const struct tx *tx)
{
    struct list_ctx *l = arg;
    uint64_t born = tx_born_wall_us(tx);

    if (l->status >= 0 && l->status != (int)tx_status(tx))
        return;
    if (l->older_than_us && (!born || l->now_us - born < l->older_than_us))
        return;
    jsonx_append(l->arr, tx_json(l->co, tx));
}

static void list_noted(void *arg, const char *gtid, const struct coord_opnote *n)
{
    struct list_ctx *l = arg;
    cJSON *o;

    if (coord_find(l->co, gtid))
        return; /* listed with its transaction */
    if (l->older_than_us && l->now_us - n->wall_us < l->older_than_us)
        return;
    o = noted_json(l->co, gtid);
    if (l->status >= 0 && strcmp(dtx_status_name((enum dtx_status)l->status),
                                 cJSON_GetObjectItemCaseSensitive(o, "status")->valuestring) != 0) {
        cJSON_Delete(o);
        return;
    }
    jsonx_append(l->arr, o);
}

static void list_heured(void *arg, const char *gtid, const struct coord_heur *h)
{
    struct list_ctx *l = arg;

    if (coord_notes(l->co, gtid))
        return; /* listed with its notes */
    list_noted(arg, gtid, &(struct coord_opnote){.wall_us = h->wall_us});
}

void admin_list_transactions(struct admin *ad, struct httpd_req *req)
{
    const char *status = httpd_req_arg(req, "status");
    const char *older = httpd_req_arg(req, "older_than_ms");
    struct list_ctx l = {.co = ad->co, .status = -1, .now_us = ev_wall_us()};
    char names[160];
    cJSON *root;

    if (status && (l.status = dtx_status_parse(status)) < 0) {
        dtx_status_list(names, sizeof(names));
        httpd_reply_errorf(req, DTX_EINVAL, "unknown status '%s' (one of %s)", status, names);
        return;
    }
    if (older) {
        uint64_t ms = 0;

        if (!httpd_parse_u64(older, UINT64_MAX / 1000u, &ms)) { /* in microseconds, it must fit */
            httpd_reply_errorf(req, DTX_EINVAL,
                               "'older_than_ms' must be a number of milliseconds up to %" PRIu64
                               ", not '%s'",
                               UINT64_MAX / 1000u, older);
            return;
        }
        l.older_than_us = ms * 1000u;
    }
    root = jsonx_new_object();
    l.arr = jsonx_new_array();
    coord_each_tx(ad->co, list_one, &l);
    coord_each_noted(ad->co, list_noted, &l);
    coord_each_heured(ad->co, list_heured, &l);
    jsonx_add(root, "transactions", l.arr);
    httpd_reply_json(req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* ---- status and in-doubt ------------------------------------------------------ */

static void count_one(void *arg, const struct tx *tx)
{
    size_t *by = arg;

    by[tx_status(tx)]++;
}

static cJSON *coordinator_json(struct coord *co)
{
    const struct coord_config *cfg = coord_config(co);
    unsigned hstatus;
    cJSON *o = coord_health_json(co, &hstatus), *log = jsonx_new_object(),
          *txs = jsonx_new_object();
    size_t by[DTX_NSTATUS] = {0};
    struct dstore_stats st;

    jsonx_add_str(o, "listen", cfg->listen);
    coord_store_stats(co, &st);
    coord_describe_store(co, log);
    jsonx_add_num(log, "records_since_start", (double)st.records);
    jsonx_add_num(log, "fsyncs_since_start", (double)st.syncs);
    jsonx_add_num(log, "checkpoints_since_start", (double)st.checkpoints);
    jsonx_add_time(log, "last_checkpoint_at", st.last_checkpoint_wall_us);
    jsonx_add(o, "log", log);
    coord_each_tx(co, count_one, by);
    for (int i = 0; i < DTX_NSTATUS; i++)
        jsonx_add_num(txs, dtx_status_name((enum dtx_status)i), (double)by[i]);
    jsonx_add(o, "transactions", txs);
    return o;
}

/* What in-doubt shows as a branch's decision: "none" when the coordinator cannot decide. */
static const char *decision_word(enum dtx_decision d)
{
    return d == DTX_DEC_UNKNOWN ? "none" : dtx_decision_name(d);
}

/* The gtid of a branch a participant listed ("" when it has none). */
static const char *branch_gtid(const cJSON *b)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(b, "gtid");

    return cJSON_IsString(g) ? g->valuestring : "";
}

/* The coordinator's decision for a branch a participant listed. */
static enum dtx_decision branch_decision(struct coord *co, int shard, const cJSON *b)
{
    uint64_t xid;

    return coord_decision(co, branch_gtid(b), shard, &xid);
}

/* One prepared branch as in-doubt shows it: the shard's facts and the coordinator's decision. */
static cJSON *branch_json(struct coord *co, const char *shard_name, int shard, const cJSON *b,
                          size_t *orphans)
{
    cJSON *o = cJSON_Duplicate(b, true);
    const char *gtid = branch_gtid(b);
    enum dtx_decision d = branch_decision(co, shard, b);
    const struct tx *tx = coord_find(co, gtid);
    const struct coord_opnote *n = coord_notes(co, gtid);
    char owner[DTX_NAME_MAX + 1] = "";
    enum coord_gtid kind = coord_gtid_kind(co, gtid, owner);

    if (!cJSON_HasObjectItem(o, "shard"))
        jsonx_add_str(o, "shard", shard_name);
    jsonx_add_str(o, "decision", decision_word(d));
    jsonx_add_bool(o, "orphan", d == DTX_DEC_UNKNOWN);
    if (owner[0])
        jsonx_add_str(o, "owner", owner);
    if (kind == CG_FOREIGN)
        jsonx_add_bool(o, "foreign", true);
    if (kind == CG_GAP)
        jsonx_add_bool(o, "epoch_gap", true);
    if (kind == CG_MALFORMED)
        jsonx_add_bool(o, "malformed", true);
    *orphans += d == DTX_DEC_UNKNOWN;
    if (tx)
        jsonx_add_str(o, "status", dtx_status_name(tx_status(tx)));
    if (n)
        jsonx_add(o, "operator", notes_json(n));
    return o;
}

static void copy_key(cJSON *to, const cJSON *from, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(from, key);

    if (v)
        jsonx_add(to, key, cJSON_Duplicate(v, true));
}

static void status_done(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct ask *a = arg;
    struct coord *co = a->ad->co;
    const struct coord_config *cfg = coord_config(co);
    cJSON *root = jsonx_new_object(), *shards = jsonx_new_array();
    size_t total = 0, orphans = 0;

    jsonx_add(root, "coordinator", coordinator_json(co));
    for (size_t i = 0; i < nparts; i++) {
        const struct fanout_part *p = &parts[i];
        cJSON *s = jsonx_new_object();
        const cJSON *br = cJSON_GetObjectItemCaseSensitive(p->body, "branches"), *b;
        double oldest = 0;
        size_t n = 0;

        jsonx_add_str(s, "name", cfg->shards[i].name);
        jsonx_add_str(s, "url", cfg->shards[i].url);
        jsonx_add_str(s, "link", coord_link_state(co, (int)i));
        if (*coord_link_error(co, (int)i))
            jsonx_add_str(s, "link_error", coord_link_error(co, (int)i));
        jsonx_add_bool(s, "reachable", p->status == 200);
        if (p->status != 200) {
            jsonx_add_str(s, "error", p->error);
            jsonx_append(shards, s);
            continue;
        }
        cJSON_ArrayForEach(b, br)
        {
            const cJSON *age = cJSON_GetObjectItemCaseSensitive(b, "age_ms");

            orphans += branch_decision(co, (int)i, b) == DTX_DEC_UNKNOWN;
            n++;
            if (cJSON_IsNumber(age) && age->valuedouble > oldest)
                oldest = age->valuedouble;
        }
        total += n;
        jsonx_add_num(s, "prepared", (double)n);
        jsonx_add_num(s, "oldest_prepared_age_ms", oldest);
        copy_key(s, p->body, "max_prepared_transactions");
        copy_key(s, p->body, "prepared_total");
        copy_key(s, p->body, "headroom");
        jsonx_append(shards, s);
    }
    jsonx_add(root, "shards", shards);
    jsonx_add_num(root, "in_doubt", (double)total);
    jsonx_add_num(root, "orphans", (double)orphans);
    jsonx_add_num(root, "heuristic", (double)coord_heur_unsettled(co));
    httpd_reply_json(a->req, 200, jsonx_print(root));
    cJSON_Delete(root);
    free(a);
}

static void in_doubt_done(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct ask *a = arg;
    struct coord *co = a->ad->co;
    const struct coord_config *cfg = coord_config(co);
    cJSON *root = jsonx_new_object(), *arr = jsonx_new_array(), *shards = jsonx_new_array();
    size_t orphans = 0;

    for (size_t i = 0; i < nparts; i++) {
        const struct fanout_part *p = &parts[i];
        const cJSON *b;
        cJSON *s = jsonx_new_object();

        jsonx_add_str(s, "name", cfg->shards[i].name);
        jsonx_add_bool(s, "reachable", p->status == 200);
        if (p->status != 200)
            jsonx_add_str(s, "error", p->error);
        jsonx_append(shards, s);
        cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(p->body, "branches"))
        {
            jsonx_append(arr, branch_json(co, cfg->shards[i].name, (int)i, b, &orphans));
        }
    }
    jsonx_add(root, "branches", arr);
    jsonx_add_num(root, "orphans", (double)orphans);
    jsonx_add(root, "shards", shards);
    httpd_reply_json(a->req, 200, jsonx_print(root));
    cJSON_Delete(root);
    free(a);
}

/* ---- acting ------------------------------------------------------------------- */

static bool is_conflict(const cJSON *body)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");

    return cJSON_IsString(code) && strcmp(code->valuestring, "conflict") == 0;
}

/* Parses a JSON object body (no body is {}); NULL when it was answered 400 or 415. */
static cJSON *object_body(struct httpd_req *req)
{
    const char *body = NULL;
    size_t len = 0;
    struct dtx_err err;
    cJSON *root = NULL;

    dtx_err_clear(&err);
    if (httpd_req_json_body(req, &body, &len, &err) < 0) {
        httpd_reply_error(req, &err);
        return NULL;
    }
    if (len == 0)
        return jsonx_new_object();
    if (jsonx_parse(body, len, &root, &err) < 0 || !cJSON_IsObject(root)) {
        if (!err.code)
            dtx_err_set(&err, DTX_EINVAL, "the body must be a JSON object");
        httpd_reply_error(req, &err);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* The shard named by body[key] (required or not); -1 when absent; -2 (answered) when bad. */
static int shard_arg(struct coord *co, struct httpd_req *req, const cJSON *body, bool required)
{
    const char *name = NULL;
    struct dtx_err err;
    int s;

    dtx_err_clear(&err);
    if (jsonx_str(body, "", "shard", required, &name, &err) < 0) {
        httpd_reply_error(req, &err);
        return -2;
    }
    if (!name)
        return -1;
    if ((s = coord_config_shard(coord_config(co), name)) < 0) {
        httpd_reply_errorf(req, DTX_EINVAL, "unknown shard '%s'", name);
        return -2;
    }
    return s;
}

/* Reads reason and operator; answers and returns false when they are not right. */
static bool who_and_why(struct httpd_req *req, const cJSON *body, struct coord_opnote *n)
{
    const char *reason = NULL, *who = "unnamed operator";
    struct dtx_err err;

    dtx_err_clear(&err);
    if (jsonx_str(body, "", "reason", true, &reason, &err) < 0 ||
        jsonx_str(body, "", "operator", false, &who, &err) < 0) {
        httpd_reply_error(req, &err);
        return false;
    }
    if (!*reason) {
        httpd_reply_errorf(req, DTX_EINVAL, "'reason' must say why (it is kept in the log)");
        return false;
    }
    if (!*who) {
        httpd_reply_errorf(req, DTX_EINVAL,
                           "'operator' must name who decides (it is kept in the log); leave "
                           "it out to be recorded as an unnamed operator");
        return false;
    }
    n->reason = (char *)reason;
    n->who = (char *)who;
    return true;
}

/* The outcome of finishing on each asked shard: [{"shard","result",...}]. */
static cJSON *finish_results(const struct ask *a, const struct fanout_part *parts, size_t nparts,
                             bool *all_ok)
{
    const struct coord_config *cfg = coord_config(a->ad->co);
    cJSON *arr = jsonx_new_array();

    *all_ok = true;
    for (size_t i = 0; i < nparts; i++) {
        const struct fanout_part *p = &parts[i];
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(p->body, "outcome");
        cJSON *o;

        if (!p->asked)
            continue;
        o = jsonx_new_object();
        jsonx_add_str(o, "shard", cfg->shards[i].name);
        if (p->status == 200 && cJSON_IsString(out)) {
            jsonx_add_str(o, "result", out->valuestring);
            coord_branch_finished(a->ad->co, a->gtid, (int)i, a->commit);
        } else if (p->status == 404) {
            jsonx_add_str(o, "result", "not_prepared");
        } else if (p->status == 409 && is_conflict(p->body)) {
            jsonx_add_str(o, "result", "in_progress"); /* the participant is finishing it itself */
        } else if (p->status == 409 && cJSON_IsString(out) &&
                   strcmp(out->valuestring, "unknown") == 0) {
            /* gone, and its database cannot prove which way (a heuristic hazard) */
            jsonx_add_str(o, "result", "unknown");
            jsonx_add_str(o, "error", p->error);
            *all_ok = false;
        } else if (p->status == 409 && cJSON_IsString(out)) {
            /* it ended the other way (a heuristic outcome at the database): say so loudly */
            jsonx_add_str(o, "result", "mismatch");
            jsonx_add_str(o, "outcome", out->valuestring);
            jsonx_add_str(o, "error", p->error);
            *all_ok = false;
        } else {
            jsonx_add_str(o, "result", "failed");
            jsonx_add_str(o, "error", p->error);
            *all_ok = false;
        }
        jsonx_append(arr, o);
    }
    return arr;
}

static void recover_one_done(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct ask *a = arg;
    cJSON *root = jsonx_new_object();
    bool ok;

    jsonx_add_str(root, "gtid", a->gtid);
    jsonx_add_str(root, "decision", a->commit ? "commit" : "abort");
    jsonx_add(root, "shards", finish_results(a, parts, nparts, &ok));
    httpd_reply_json(a->req, ok ? 200 : 502, jsonx_print(root));
    cJSON_Delete(root);
    free(a);
}

static void recover_branch(struct admin *ad, struct httpd_req *req, const char *gtid, int shard,
                           bool commit)
{
    struct ask *a = ask_new(ad, req, gtid, shard);

    a->commit = commit;
    log_info("operator: recover %s on shard '%s': %s", gtid,
             coord_config(ad->co)->shards[shard].name, commit ? "commit" : "roll back");
    ask_finish(a, recover_one_done);
}

/* Forces note (coord_record_operator copies it); done then gets a (and frees it). */
static void record_note(struct ask *a, const struct coord_opnote *note, coord_done_fn done)
{
    a->commit = note->commit;
    coord_record_operator(a->ad->co, a->gtid, note, done, a);
}

/*
 * Why a branch with no decision is left alone by recover (answered 409):
 * nothing is presumed about a gtid this coordinator cannot know.
 */
static void refuse_unknown(struct admin *ad, struct httpd_req *req, const char *gtid, int shard)
{
    const char *sname = coord_config(ad->co)->shards[shard].name;
    char owner[DTX_NAME_MAX + 1] = "", last[DTX_GTID_MAX + 1];
    enum coord_gtid kind = coord_gtid_kind(ad->co, gtid, owner);
    const char *why = "its outcome is not known here (a one-phase commit lost with its shard)";
    char buf[300];

    if (kind == CG_FOREIGN) {
        snprintf(buf, sizeof(buf), "it belongs to coordinator '%s', not to this one ('%s')", owner,
                 coord_config(ad->co)->node_id);
        why = buf;
    } else if (kind == CG_GAP) {
        why = "its epoch is one this coordinator's decision log does not know (the log was "
              "restored from an older copy, or lost): its outcome is unknown, never presumed";
    } else if (kind == CG_NOT_ISSUED) {
        coord_last_issued(ad->co, last, sizeof(last));
        snprintf(buf, sizeof(buf), "this coordinator never issued it (it has issued up to %s)",
                 last);
        why = buf;
    }
    httpd_reply_errorf(req, DTX_ECONFLICT,
                       "transaction %s on shard '%s' is left alone: %s; once you know its "
                       "outcome, decide it with dtxctl resolve %s --commit|--abort --shard %s",
                       gtid, sname, why, gtid, sname);
}

/* The path of a participant's branch endpoint for any gid: every byte but [A-Za-z0-9_-:.] escaped.
 */
static char *branch_path(const char *gid, const char *action)
{
    struct buf b = BUF_INIT;

    buf_puts(&b, "/v1/admin/branches/");
    for (const unsigned char *p = (const unsigned char *)gid; *p; p++) {
        if (isalnum(*p) || strchr("_-:.", *p))
            buf_putc(&b, (char)*p);
        else
            buf_printf(&b, "%%%02X", *p);
    }
    buf_printf(&b, "/%s", action);
    return buf_detach(&b, NULL);
}

static void malformed_done(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct ask *a = arg;
    cJSON *root = jsonx_new_object();
    bool ok;

    jsonx_add_str(root, "gid", a->gid);
    jsonx_add_bool(root, "malformed", true);
    jsonx_add(root, "shards", finish_results(a, parts, nparts, &ok));
    httpd_reply_json(a->req, ok ? 200 : 502, jsonx_print(root));
    cJSON_Delete(root);
    free(a);
}

/*
 * {"gid", "shard", "malformed": true}: rolls back a prepared branch whose
 * gid starts with "dtx:" but holds no gtid (nothing can ever decide it).
 * Only on an operator's explicit request.
 */
static void recover_malformed(struct admin *ad, struct httpd_req *req, const cJSON *body, int shard)
{
    const struct coord_config *cfg = coord_config(ad->co);
    const char *gid = NULL, *who = "dtxctl recover --malformed";
    char gtid[DTX_GTID_MAX + 1], sname[DTX_NAME_MAX + 1];
    char **paths;
    struct ask *a;

    jsonx_str(body, "", "gid", false, &gid, NULL);
    jsonx_str(body, "", "operator", false, &who, NULL);
    if (!gid || strncmp(gid, DTX_GID_PREFIX, strlen(DTX_GID_PREFIX)) != 0 || strlen(gid) >= 200 ||
        gid_parse(gid, gtid, sname)) {
        httpd_reply_errorf(req, DTX_EINVAL,
                           "'gid' must be a prepared transaction's gid that starts with \"dtx:\" "
                           "and holds no gtid");
        return;
    }
    log_warn("operator '%s': rolling back the malformed dtx branch '%s' on shard '%s'", who, gid,
             cfg->shards[shard].name);
    a = ask_new(ad, req, NULL, shard);
    snprintf(a->gid, sizeof(a->gid), "%s", gid);
    paths = xcalloc(cfg->nshards, sizeof(*paths));
    paths[shard] = branch_path(gid, "rollback?malformed=1");
    fanout_start(coord_dialer(ad->co), cfg, &ad->pending, "POST", paths, malformed_done, a);
    free(paths[shard]);
    free(paths);
}

static void post_recover(struct admin *ad, struct httpd_req *req)
{
    cJSON *body = object_body(req);
    const char *gtid = NULL;
    bool malformed = false;
    enum dtx_decision decision;
    struct dtx_err err;
    uint64_t xid;
    int shard;

    if (!body)
        return;
    dtx_err_clear(&err);
    if (jsonx_str(body, "", "gtid", false, &gtid, &err) < 0 ||
        jsonx_bool(body, "", "malformed", false, &malformed, &err) < 0) {
        httpd_reply_error(req, &err);
    } else if (malformed) {
        if ((shard = shard_arg(ad->co, req, body, true)) >= 0)
            recover_malformed(ad, req, body, shard);
    } else if (!gtid) {
        httpd_reply_json(req, 200, xasprintf("{\"kicked\":%zu}", coord_kick(ad->co)));
    } else if (!is_gtid(gtid)) {
        httpd_reply_errorf(req, DTX_EINVAL, "'%s' is not a gtid", gtid);
    } else if ((shard = shard_arg(ad->co, req, body, true)) >= 0) {
        decision = coord_decision(ad->co, gtid, shard, &xid);
        switch (decision) {
        case DTX_DEC_IN_FLIGHT:
            httpd_reply_errorf(req, DTX_ECONFLICT,
                               "transaction %s is still being decided; it is left alone", gtid);
            break;
        case DTX_DEC_UNKNOWN:
        case DTX_NDECISIONS:
            refuse_unknown(ad, req, gtid, shard);
            break;
        case DTX_DEC_COMMIT:
        case DTX_DEC_ABORT:
            recover_branch(ad, req, gtid, shard, decision == DTX_DEC_COMMIT);
            break;
        }
    }
    cJSON_Delete(body);
}

static void resolve_applied(void *arg, const struct fanout_part *parts, size_t nparts)
{
    struct ask *a = arg;
    cJSON *root = jsonx_new_object();
    bool ok;

    jsonx_add_str(root, "gtid", a->gtid);
    jsonx_add_str(root, "decision", a->commit ? "commit" : "abort");
    jsonx_add_bool(root, "heuristic", a->heuristic);
    jsonx_add_bool(root, "recorded", true);
    jsonx_add(root, "shards", finish_results(a, parts, nparts, &ok));
    httpd_reply_json(a->req, 200, jsonx_print(root));
    cJSON_Delete(root);
    free(a);
}

static void on_resolve_durable(void *arg, int rc, const struct dtx_err *err)
{
    struct ask *a = arg;

    if (rc < 0 && !err) {
        free(a); /* the coordinator is going away; so is the request */
    } else if (rc < 0) {
        httpd_reply_error(a->req, err);
        free(a);
    } else {
        ask_finish(a, resolve_applied);
    }
}

static void on_forget_durable(void *arg, int rc, const struct dtx_err *err)
{
    struct ask *a = arg;
    const struct tx *tx = coord_find(a->ad->co, a->gtid);

    if (rc < 0 && !err) {
        /* the coordinator is going away; so is the request */
    } else if (rc < 0) {
        httpd_reply_error(a->req, err);
    } else if (tx) {
        cJSON *o = tx_json(a->ad->co, tx);

        httpd_reply_json(a->req, 200, jsonx_print(o));
        cJSON_Delete(o);
    } else {
        httpd_reply_json(a->req, 200, xstrdup("{\"recorded\":true}"));
    }
    free(a);
}

/*
 * Refuses (answering the request) a decision for shard that contradicts
 * what is recorded; sets *heuristic when nothing was recorded.
 */
static bool decision_allowed(struct coord *co, struct httpd_req *req, const char *gtid, int shard,
                             bool commit, bool *heuristic)
{
    const struct coord_config *cfg = coord_config(co);
    uint64_t xid;
    enum dtx_decision d = coord_decision(co, gtid, shard, &xid);
    const struct tx *tx = coord_find(co, gtid);
    char last[DTX_GTID_MAX + 1];

    if (d == DTX_DEC_IN_FLIGHT) {
        httpd_reply_errorf(
            req, DTX_ECONFLICT,
            "refused: transaction %s is still being decided (%s); wait for its "
            "outcome, then use dtxctl recover",
            gtid, tx ? dtx_status_name(tx_status(tx)) : "an operator's decision is being recorded");
        return false;
    }
    if (d == DTX_DEC_UNKNOWN && coord_gtid_kind(co, gtid, NULL) == CG_NOT_ISSUED) {
        coord_last_issued(co, last, sizeof(last));
        httpd_reply_errorf(req, DTX_ECONFLICT,
                           "refused: transaction %s was never issued by this coordinator (it has "
                           "issued up to %s); a decision about it would stand against the "
                           "transaction that gets this gtid later",
                           gtid, last);
        return false;
    }
    if (d == DTX_DEC_UNKNOWN) {
        *heuristic = true;
        return true;
    }
    if ((d == DTX_DEC_COMMIT) != commit) {
        httpd_reply_errorf(
            req, DTX_ECONFLICT,
            "refused: transaction %s is recorded as %s%s; %s it on shard '%s' would leave it "
            "committed on some shards and not on others",
            gtid, d == DTX_DEC_COMMIT ? "committed" : "aborted",
            tx                      ? ""
            : coord_notes(co, gtid) ? " by an operator (dtxctl show)"
                                    : " (it has no commit record: presumed abort)",
            commit ? "committing" : "aborting", cfg->shards[shard].name);
        return false;
    }
    return true;
}

static void post_resolve(struct admin *ad, struct httpd_req *req, const char *gtid)
{
    cJSON *body = object_body(req);
    const char *decision = NULL;
    struct dtx_err err;
    struct coord_opnote n;
    bool heuristic = false, ok = true;
    struct ask *a;
    int shard;

    if (!body)
        return;
    memset(&n, 0, sizeof(n));
    dtx_err_clear(&err);
    if (jsonx_str(body, "", "decision", true, &decision, &err) < 0) {
        httpd_reply_error(req, &err);
        goto out;
    }
    if (strcmp(decision, "commit") != 0 && strcmp(decision, "abort") != 0) {
        httpd_reply_errorf(req, DTX_EINVAL, "'decision' must be \"commit\" or \"abort\"");
        goto out;
    }
    if ((shard = shard_arg(ad->co, req, body, false)) == -2 || !who_and_why(req, body, &n))
        goto out;
    n.kind = DREC_OP_RESOLVE;
    n.commit = dtx_decision_parse(decision) == DTX_DEC_COMMIT;
    for (size_t i = 0; ok && i < coord_config(ad->co)->nshards; i++) {
        if (shard < 0 || (int)i == shard)
            ok = decision_allowed(ad->co, req, gtid, (int)i, n.commit, &heuristic);
    }
    if (!ok)
        goto out;
    if (shard >= 0)
        snprintf(n.shard, sizeof(n.shard), "%s", coord_config(ad->co)->shards[shard].name);
    log_warn("operator '%s': %s transaction %s%s%s (%s): %s", n.who, n.commit ? "commit" : "abort",
             gtid, shard >= 0 ? " on shard " : "", n.shard,
             heuristic ? "a heuristic decision" : "as recorded", n.reason);
    a = ask_new(ad, req, gtid, shard);
    a->heuristic = heuristic;
    record_note(a, &n, on_resolve_durable);
out:
    cJSON_Delete(body);
}

static void post_forget(struct admin *ad, struct httpd_req *req, const char *gtid)
{
    cJSON *body = object_body(req);
    const struct tx *tx = coord_find(ad->co, gtid);
    struct coord_opnote n;
    uint64_t xid;
    int shard;

    if (!body)
        return;
    memset(&n, 0, sizeof(n));
    if ((shard = shard_arg(ad->co, req, body, true)) < 0 || !who_and_why(req, body, &n))
        goto out;
    if (!coord_waits_for(ad->co, gtid, shard)) {
        httpd_reply_errorf(
            req, DTX_ECONFLICT, "refused: transaction %s is not waiting for shard '%s' (%s)", gtid,
            coord_config(ad->co)->shards[shard].name,
            tx ? dtx_status_name(tx_status(tx)) : "no live transaction with that gtid");
        goto out;
    }
    n.kind = DREC_OP_FORGET;
    n.commit = tx_decision(tx, shard, &xid) == DTX_DEC_COMMIT;
    snprintf(n.shard, sizeof(n.shard), "%s", coord_config(ad->co)->shards[shard].name);
    log_warn("operator '%s': forget shard '%s' of %s transaction %s: %s", n.who, n.shard,
             n.commit ? "committed" : "aborted", gtid, n.reason);
    record_note(ask_new(ad, req, gtid, shard), &n, on_forget_durable);
out:
    cJSON_Delete(body);
}

enum admin_ep admin_endpoint(const char *method, const char *rest, char *gtid)
{
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    const char *action;
    size_t n;

    if (strcmp(rest, "/status") == 0 && get)
        return ADMIN_STATUS;
    if (strcmp(rest, "/in-doubt") == 0 && get)
        return ADMIN_IN_DOUBT;
    if (strcmp(rest, "/recover") == 0 && post)
        return ADMIN_RECOVER;
    if (strncmp(rest, "/transactions/", 14) != 0 || !post || !(action = strrchr(rest + 14, '/')) ||
        (n = (size_t)(action - rest - 14)) == 0 || n > DTX_GTID_MAX ||
        (strcmp(action, "/resolve") != 0 && strcmp(action, "/forget") != 0))
        return ADMIN_NONE;
    if (gtid)
        snprintf(gtid, DTX_GTID_MAX + 1, "%.*s", (int)n, rest + 14);
    return strcmp(action, "/resolve") == 0 ? ADMIN_RESOLVE : ADMIN_FORGET;
}

void admin_handle(struct admin *ad, struct httpd_req *req, const char *method, const char *rest)
{
    char gtid[DTX_GTID_MAX + 1];
    enum admin_ep ep = admin_endpoint(method, rest, gtid);

    switch (ep) {
    case ADMIN_STATUS:
        ask_branches(ask_new(ad, req, NULL, -1), status_done);
        break;
    case ADMIN_IN_DOUBT:
        ask_branches(ask_new(ad, req, NULL, -1), in_doubt_done);
        break;
    case ADMIN_RECOVER:
        post_recover(ad, req);
        break;
    case ADMIN_RESOLVE:
    case ADMIN_FORGET:
        if (!is_gtid(gtid))
            httpd_reply_errorf(req, DTX_EINVAL, "'%s' is not a gtid (node-epoch-sequence)", gtid);
        else if (ep == ADMIN_RESOLVE)
            post_resolve(ad, req, gtid);
        else
            post_forget(ad, req, gtid);
        break;
    case ADMIN_NONE:
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s /v1/admin%s", method, rest);
        break;
    }
}
