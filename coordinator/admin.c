/*
 * admin.c - the operators' endpoints on the coordinator (dtxctl talks to
 * these; every one needs the admin token when auth is configured).
 *
 *   GET  /v1/admin/status                      coordinator, log, shards
 *   GET  /v1/admin/in-doubt                    every prepared dtx branch, with the decision
 *   POST /v1/admin/recover                     {} : resend phase 2 now everywhere
 *                                              {"gtid","shard"} : finish that branch now
 *   POST /v1/admin/transactions/{gtid}/resolve {"decision","shard"?,"reason","operator"?}
 *   POST /v1/admin/transactions/{gtid}/forget  {"shard","reason","operator"?}
 *   GET  /v1/transactions[?status=S&older_than_ms=N], GET /v1/transactions/{gtid}
 *
 * What lives on a shard (prepared branches, their locks, the headroom in
 * max_prepared_transactions) is asked of its participant over HTTP
 * (/v1/admin/branches, peer token), all shards in parallel, with a fresh
 * connection per question: operators ask rarely, and a dead shard must
 * only make its own part of an answer fail.
 *
 * Safety: a branch is finished only as the coordinator's record says
 * (coord_outcome: a commit record, presumed abort, or an operator's
 * durable decision); a transaction still being decided is never touched;
 * a branch the coordinator never heard of (an orphan) is rolled back,
 * since a shard has one coordinator and this one holds no commit record
 * for it. An operator's decision is forced to the decision log before
 * anything acts on it, and one that contradicts a recorded decision is
 * refused.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "dtx/api.h"
#include "dtx/coord.h"
#include "dtx/gid.h"
#include "dtx/httpc.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SHARD_TIMEOUT_MS 5000

/* True for a well-formed gtid: nothing else goes into a log record or a participant's URL. */
static bool is_gtid(const char *gtid)
{
    uint64_t epoch, seq;

    return gid_parse_gtid(gtid, NULL, &epoch, &seq);
}

/* ---- asking participants ---------------------------------------------------- */

struct fan;
typedef void (*fan_done_fn)(struct fan *f);

/* One shard's part of a fan-out: its answer, or why there is none. */
struct fan_part {
    struct fan *fan;
    bool asked;
    struct httpc *c;
    int status;  /* HTTP status, 0 when it could not be asked */
    cJSON *body; /* parsed answer, or NULL */
    char error[DTX_ERR_MSG_MAX + 32];
};

/* A question to several participants at once, answered when all have answered. */
struct fan {
    struct list_node link; /* on coord_admin_pending() */
    struct coord *co;
    struct httpd_req *req;
    size_t nparts, left;
    struct fan_part *parts;
    fan_done_fn done;
    /* what the question was about */
    char gtid[DTX_GTID_MAX + 1];
    bool commit;
    bool heuristic;
};

static void fan_free(struct fan *f)
{
    list_remove(&f->link);
    for (size_t i = 0; i < f->nparts; i++) {
        httpc_free(f->parts[i].c);
        cJSON_Delete(f->parts[i].body);
    }
    free(f->parts);
    free(f);
}

static struct fan *fan_new(struct coord *co, struct httpd_req *req, fan_done_fn done)
{
    struct fan *f = calloc(1, sizeof(*f));

    if (!f)
        abort();
    f->co = co;
    f->req = req;
    f->done = done;
    f->nparts = coord_config(co)->nshards;
    if (!(f->parts = calloc(f->nparts, sizeof(*f->parts))))
        abort();
    list_insert_tail(coord_admin_pending(co), &f->link);
    for (size_t i = 0; i < f->nparts; i++) {
        f->parts[i].fan = f;
    }
    return f;
}

static void fan_release(struct fan *f)
{
    if (--f->left == 0) {
        f->done(f);
        fan_free(f);
    }
}

static void on_part_answer(void *arg, int rc, const struct httpc_resp *resp,
                           const struct dtx_err *err)
{
    struct fan_part *p = arg;
    cJSON *body = NULL;

    httpc_free(p->c);
    p->c = NULL;
    if (rc < 0) {
        snprintf(p->error, sizeof(p->error), "%s",
                 err ? err->msg : "the participant did not answer");
    } else {
        p->status = resp->status;
        if (jsonx_parse(resp->body, resp->body_len, &body, NULL) == 0)
            p->body = body;
        if (resp->status >= 400) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");

            snprintf(p->error, sizeof(p->error), "HTTP %d: %s", resp->status,
                     cJSON_IsString(m) ? m->valuestring : "(no message)");
        }
    }
    fan_release(p->fan);
}

/*
 * Sends method path (path[i] for shard i; NULL: shard i is not asked) to
 * the participants; f->done runs once every one answered or failed.
 */
static void fan_send(struct fan *f, const char *method, char *const *paths)
{
    const struct coord_config *cfg = coord_config(f->co);
    char headers[400] = "";

    if (cfg->peer_token[0])
        snprintf(headers, sizeof(headers), "Authorization: Bearer %s\r\n", cfg->peer_token);
    f->left = 1; /* held until every request is out, so done cannot run early */
    for (size_t i = 0; i < f->nparts; i++) {
        struct fan_part *p = &f->parts[i];

        if (!paths[i])
            continue;
        p->asked = true;
        f->left++;
        p->c = httpc_new(coord_loop(f->co), &cfg->shards[i].addr);
        if (httpc_request(p->c, method, paths[i], headers, method[0] == 'P' ? "{}" : NULL,
                          method[0] == 'P' ? 2 : 0, SHARD_TIMEOUT_MS, on_part_answer, p) < 0) {
            httpc_free(p->c);
            p->c = NULL;
            snprintf(p->error, sizeof(p->error), "could not send the request");
            fan_release(p->fan);
        }
    }
    fan_release(f);
}

/* Asks every participant for its prepared branches. */
static void fan_branches(struct fan *f)
{
    char **paths = calloc(f->nparts, sizeof(*paths));

    if (!paths)
        abort();
    for (size_t i = 0; i < f->nparts; i++)
        paths[i] = "/v1/admin/branches";
    fan_send(f, "GET", paths);
    free(paths);
}

/* Asks shard (or every shard, -1) to commit or roll back the gtid's prepared branch. */
static void fan_finish(struct fan *f, int shard, bool commit)
{
    const struct coord_config *cfg = coord_config(f->co);
    char **paths = calloc(f->nparts, sizeof(*paths));
    char gid[DTX_GID_MAX + 1];

    if (!paths)
        abort();
    for (size_t i = 0; i < f->nparts; i++) {
        if (shard >= 0 && (int)i != shard)
            continue;
        gid_format(gid, sizeof(gid), f->gtid, cfg->shards[i].name);
        if (asprintf(&paths[i], "/v1/admin/branches/%s/%s", gid, commit ? "commit" : "rollback") <
            0)
            abort();
    }
    fan_send(f, "POST", paths);
    for (size_t i = 0; i < f->nparts; i++)
        free(paths[i]);
    free(paths);
}

/* ---- rendering helpers ------------------------------------------------------- */

static cJSON *notes_json(const struct coord_opnote *n)
{
    cJSON *arr = jsonx_new_array();

    for (; n; n = n->next) {
        cJSON *o = jsonx_new_object();

        jsonx_add_str(o, "action", n->kind == DLOG_OP_FORGET ? "forget" : "resolve");
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

/* tx's state (GET /v1/transactions/{gtid}) with what operators did to it. */
static cJSON *tx_json(const struct coord *co, const struct tx *tx)
{
    cJSON *o = tx_state_json(tx);
    const struct coord_opnote *n = coord_notes(co, tx->gtid);

    if (n) {
        jsonx_add_bool(o, "heuristic", true);
        jsonx_add(o, "operator", notes_json(n));
    }
    return o;
}

/* A transaction known only from operator notes (an orphan someone resolved). */
static cJSON *noted_json(const char *gtid, const struct coord_opnote *n)
{
    cJSON *o = jsonx_new_object();
    const struct coord_opnote *last = n;

    while (last->next)
        last = last->next;
    jsonx_add_str(o, "gtid", gtid);
    jsonx_add_str(o, "status", last->commit ? "committed" : "aborted");
    jsonx_add_bool(o, "heuristic", true);
    jsonx_add_time(o, "decided_at", n->wall_us);
    jsonx_add(o, "operator", notes_json(n));
    return o;
}

void admin_get_transaction(struct coord *co, struct httpd_req *req, const char *gtid)
{
    const struct tx *tx = coord_find(co, gtid);
    const struct coord_opnote *n = coord_notes(co, gtid);
    cJSON *o;

    if (!tx && !n) {
        /*
         * No presumed "aborted" here: checkpoints keep only what recovery
         * and idempotent retries need, so a transaction without a record
         * may also be one that committed before the last restart.
         */
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "no record of transaction '%s': it never existed here, it aborted or "
                           "finished before the retention period or the last restart (only those "
                           "with an idempotency key are kept across restarts)",
                           gtid);
        return;
    }
    o = tx ? tx_json(co, tx) : noted_json(gtid, n);
    httpd_reply_json(req, 200, jsonx_print(o));
    cJSON_Delete(o);
}

struct list_ctx {
    const struct coord *co;
    const char *status;
    uint64_t older_than_us; /* 0: any age */
    uint64_t now_us;
    cJSON *arr;
};

static void list_one(void *arg, const struct tx *tx)
{
    struct list_ctx *l = arg;
    uint64_t born = tx->created_wall_us ? tx->created_wall_us : tx->decided_wall_us;

    if (l->status && strcmp(l->status, tx_status(tx)) != 0)
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
    o = noted_json(gtid, n);
    if (l->status && strcmp(l->status, cJSON_GetObjectItem(o, "status")->valuestring) != 0) {
        cJSON_Delete(o);
        return;
    }
    jsonx_append(l->arr, o);
}

void admin_list_transactions(struct coord *co, struct httpd_req *req)
{
    static const char *const statuses[] = {"active",     "preparing", "precommitted",
                                           "committing", "committed", "aborting",
                                           "aborted",    "unknown",   NULL};
    const char *status = httpd_req_arg(req, "status");
    const char *older = httpd_req_arg(req, "older_than_ms");
    struct list_ctx l = {co, status, 0, ev_wall_us(), NULL};
    bool known = status == NULL;
    cJSON *root;
    char *end = NULL;

    for (int i = 0; statuses[i] && !known; i++)
        known = strcmp(statuses[i], status) == 0;
    if (!known) {
        httpd_reply_errorf(req, DTX_EINVAL,
                           "unknown status '%s' (one of active, preparing, precommitted, "
                           "committing, committed, aborting, aborted, unknown)",
                           status);
        return;
    }
    if (older) {
        unsigned long long ms = strtoull(older, &end, 10);

        if (!*older || *end || older[0] == '-') {
            httpd_reply_errorf(req, DTX_EINVAL,
                               "'older_than_ms' must be a number of milliseconds, not '%s'", older);
            return;
        }
        l.older_than_us = (uint64_t)ms * 1000u;
    }
    root = jsonx_new_object();
    l.arr = jsonx_new_array();
    coord_each_tx(co, list_one, &l);
    coord_each_noted(co, list_noted, &l);
    jsonx_add(root, "transactions", l.arr);
    httpd_reply_json(req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* ---- status and in-doubt ------------------------------------------------------ */

struct counts {
    size_t by[16];
};

static const char *const count_names[] = {"active",   "preparing", "committing", "committed",
                                          "aborting", "aborted",   "unknown",    NULL};

static void count_one(void *arg, const struct tx *tx)
{
    struct counts *c = arg;

    for (int i = 0; count_names[i]; i++) {
        if (strcmp(count_names[i], tx_status(tx)) == 0)
            c->by[i]++;
    }
}

/* Bytes and segment files of the decision log on disk. */
static void log_on_disk(const char *dir, uint64_t *bytes, uint64_t *segments)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4400];
    struct stat st;

    *bytes = *segments = 0;
    while (d && (e = readdir(d))) {
        if (strncmp(e->d_name, "dlog-", 5) != 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (stat(path, &st) == 0) {
            *bytes += (uint64_t)st.st_size;
            (*segments)++;
        }
    }
    if (d)
        closedir(d);
}

static cJSON *coordinator_json(struct coord *co)
{
    const struct coord_config *cfg = coord_config(co);
    unsigned hstatus;
    cJSON *o = coord_health_json(co, &hstatus), *log = jsonx_new_object(),
          *txs = jsonx_new_object();
    struct counts c;
    struct dlog_stats st;
    uint64_t bytes, segments;

    jsonx_add_str(o, "listen", cfg->listen);
    coord_log_stats(co, &st);
    log_on_disk(cfg->log_dir, &bytes, &segments);
    jsonx_add_str(log, "dir", cfg->log_dir);
    jsonx_add_num(log, "bytes_on_disk", (double)bytes);
    jsonx_add_num(log, "bytes_used", (double)(bytes > st.zeros_ahead ? bytes - st.zeros_ahead : 0));
    jsonx_add_num(log, "segments", (double)segments);
    jsonx_add_num(log, "records_since_start", (double)st.records);
    jsonx_add_num(log, "fsyncs_since_start", (double)st.syncs);
    jsonx_add_num(log, "checkpoints_since_start", (double)st.checkpoints);
    jsonx_add_time(log, "last_checkpoint_at", st.last_checkpoint_wall_us);
    jsonx_add(o, "log", log);
    memset(&c, 0, sizeof(c));
    coord_each_tx(co, count_one, &c);
    for (int i = 0; count_names[i]; i++)
        jsonx_add_num(txs, count_names[i], (double)c.by[i]);
    jsonx_add(o, "transactions", txs);
    return o;
}

static const char *decision_name(const char *outcome)
{
    return strcmp(outcome, "unknown") == 0 ? "none" : outcome;
}

/* One prepared branch as in-doubt shows it: the shard's facts and the coordinator's decision. */
/* The coordinator's outcome for a branch a participant listed (coord_outcome's words). */
static const char *branch_outcome(struct coord *co, int shard, const cJSON *b)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(b, "gtid");
    uint64_t xid;

    return coord_outcome(co, cJSON_IsString(g) ? g->valuestring : "", shard, &xid);
}

static cJSON *branch_json(struct coord *co, const char *shard_name, int shard, const cJSON *b,
                          size_t *orphans)
{
    cJSON *o = cJSON_Duplicate(b, true);
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(b, "gtid");
    const char *gtid = cJSON_IsString(g) ? g->valuestring : "";
    const char *outcome = branch_outcome(co, shard, b);
    const struct tx *tx = coord_find(co, gtid);
    const struct coord_opnote *n = coord_notes(co, gtid);

    if (!cJSON_HasObjectItem(o, "shard"))
        jsonx_add_str(o, "shard", shard_name);
    jsonx_add_str(o, "decision", decision_name(outcome));
    jsonx_add_bool(o, "orphan", strcmp(outcome, "unknown") == 0);
    *orphans += strcmp(outcome, "unknown") == 0;
    if (tx)
        jsonx_add_str(o, "status", tx_status(tx));
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

static void status_done(struct fan *f)
{
    const struct coord_config *cfg = coord_config(f->co);
    cJSON *root = jsonx_new_object(), *shards = jsonx_new_array();
    size_t total = 0, orphans = 0;

    jsonx_add(root, "coordinator", coordinator_json(f->co));
    for (size_t i = 0; i < f->nparts; i++) {
        const struct fan_part *p = &f->parts[i];
        cJSON *s = jsonx_new_object();
        const cJSON *br = cJSON_GetObjectItemCaseSensitive(p->body, "branches"), *b;
        double oldest = 0;
        size_t n = 0;

        jsonx_add_str(s, "name", cfg->shards[i].name);
        jsonx_add_str(s, "url", cfg->shards[i].url);
        jsonx_add_str(s, "link", coord_link_state(f->co, (int)i));
        jsonx_add_bool(s, "reachable", p->status == 200);
        if (p->status != 200) {
            jsonx_add_str(s, "error", p->error);
            jsonx_append(shards, s);
            continue;
        }
        cJSON_ArrayForEach(b, br)
        {
            const cJSON *age = cJSON_GetObjectItemCaseSensitive(b, "age_ms");

            orphans += strcmp(branch_outcome(f->co, (int)i, b), "unknown") == 0;
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
    httpd_reply_json(f->req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

static void in_doubt_done(struct fan *f)
{
    const struct coord_config *cfg = coord_config(f->co);
    cJSON *root = jsonx_new_object(), *arr = jsonx_new_array(), *shards = jsonx_new_array();
    size_t orphans = 0;

    for (size_t i = 0; i < f->nparts; i++) {
        const struct fan_part *p = &f->parts[i];
        const cJSON *b;
        cJSON *s = jsonx_new_object();

        jsonx_add_str(s, "name", cfg->shards[i].name);
        jsonx_add_bool(s, "reachable", p->status == 200);
        if (p->status != 200)
            jsonx_add_str(s, "error", p->error);
        jsonx_append(shards, s);
        cJSON_ArrayForEach(b, cJSON_GetObjectItemCaseSensitive(p->body, "branches"))
        {
            jsonx_append(arr, branch_json(f->co, cfg->shards[i].name, (int)i, b, &orphans));
        }
    }
    jsonx_add(root, "branches", arr);
    jsonx_add_num(root, "orphans", (double)orphans);
    jsonx_add(root, "shards", shards);
    httpd_reply_json(f->req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* ---- acting ------------------------------------------------------------------- */

static bool is_conflict(const cJSON *body)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
    const cJSON *code = cJSON_GetObjectItemCaseSensitive(e, "code");

    return cJSON_IsString(code) && strcmp(code->valuestring, "conflict") == 0;
}

/* The outcome of finishing on each asked shard: [{"shard","outcome"|"error"}]. */
static cJSON *finish_results(struct fan *f, bool *all_ok)
{
    const struct coord_config *cfg = coord_config(f->co);
    cJSON *arr = jsonx_new_array();

    *all_ok = true;
    for (size_t i = 0; i < f->nparts; i++) {
        const struct fan_part *p = &f->parts[i];
        const cJSON *out = cJSON_GetObjectItemCaseSensitive(p->body, "outcome");
        cJSON *o;

        if (!p->asked)
            continue;
        o = jsonx_new_object();
        jsonx_add_str(o, "shard", cfg->shards[i].name);
        if (p->status == 200 && cJSON_IsString(out)) {
            jsonx_add_str(o, "result", out->valuestring);
            coord_branch_finished(f->co, f->gtid, (int)i, f->commit);
        } else if (p->status == 404) {
            jsonx_add_str(o, "result", "not_prepared");
        } else if (p->status == 409 && is_conflict(p->body)) {
            jsonx_add_str(o, "result", "in_progress"); /* the participant is finishing it itself */
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

static void recover_one_done(struct fan *f)
{
    cJSON *root = jsonx_new_object();
    bool ok;

    jsonx_add_str(root, "gtid", f->gtid);
    jsonx_add_str(root, "decision", f->heuristic ? "none" : f->commit ? "commit" : "abort");
    jsonx_add_bool(root, "orphan", f->heuristic);
    jsonx_add(root, "shards", finish_results(f, &ok));
    httpd_reply_json(f->req, ok ? 200 : 502, jsonx_print(root));
    cJSON_Delete(root);
}

/* Parses a JSON object body (an empty body is {}). */
static cJSON *object_body(struct httpd_req *req)
{
    size_t len;
    const char *body = httpd_req_body(req, &len);
    struct dtx_err err;
    cJSON *root = NULL;

    dtx_err_clear(&err);
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

static void recover_branch(struct coord *co, struct httpd_req *req, const char *gtid, int shard,
                           bool commit, bool orphan)
{
    struct fan *f = fan_new(co, req, recover_one_done);

    snprintf(f->gtid, sizeof(f->gtid), "%s", gtid);
    f->commit = commit;
    f->heuristic = orphan;
    log_info("operator: recover %s on shard '%s': %s", gtid, coord_config(co)->shards[shard].name,
             commit   ? "commit"
             : orphan ? "roll back the orphan"
                      : "roll back");
    fan_finish(f, shard, commit);
}

static void record_orphan_abort(struct coord *co, struct httpd_req *req, const cJSON *body,
                                const char *gtid, int shard);

static void post_recover(struct coord *co, struct httpd_req *req)
{
    cJSON *body = object_body(req);
    const char *gtid = NULL, *outcome;
    struct dtx_err err;
    uint64_t xid;
    int shard;

    if (!body)
        return;
    dtx_err_clear(&err);
    if (jsonx_str(body, "", "gtid", false, &gtid, &err) < 0) {
        httpd_reply_error(req, &err);
    } else if (!gtid) {
        char out[64];

        snprintf(out, sizeof(out), "{\"kicked\":%zu}", coord_kick(co));
        httpd_reply_json(req, 200, strdup(out));
    } else if (!is_gtid(gtid)) {
        httpd_reply_errorf(req, DTX_EINVAL, "'%s' is not a gtid", gtid);
    } else if ((shard = shard_arg(co, req, body, true)) >= 0) {
        outcome = coord_outcome(co, gtid, shard, &xid);
        if (strcmp(outcome, "in_flight") == 0)
            httpd_reply_errorf(req, DTX_ECONFLICT,
                               "transaction %s is still being decided; it is left alone", gtid);
        else if (strcmp(outcome, "unknown") == 0)
            record_orphan_abort(co, req, body, gtid, shard);
        else
            recover_branch(co, req, gtid, shard, strcmp(outcome, "commit") == 0, false);
    }
    cJSON_Delete(body);
}

/* An operator's request waiting for its OPERATOR record to be durable. */
struct op_ctx {
    struct coord *co;
    struct httpd_req *req;
    char gtid[DTX_GTID_MAX + 1];
    int shard; /* -1: every shard */
    bool commit;
    bool heuristic;
};

/* Forces note (coord_record_operator copies it), then calls done with a new op_ctx. */
static void record_note(struct coord *co, struct httpd_req *req, const char *gtid, int shard,
                        const struct coord_opnote *note, bool heuristic, coord_done_fn done)
{
    struct op_ctx *c = calloc(1, sizeof(*c));

    if (!c)
        abort();
    c->co = co;
    c->req = req;
    c->shard = shard;
    c->commit = note->commit;
    c->heuristic = heuristic;
    snprintf(c->gtid, sizeof(c->gtid), "%s", gtid);
    coord_record_operator(co, gtid, note, done, c);
}

static void on_orphan_durable(void *arg, int rc, const struct dtx_err *err)
{
    struct op_ctx *c = arg;

    if (rc < 0 && err)
        httpd_reply_error(c->req, err);
    else if (rc == 0)
        recover_branch(c->co, c->req, c->gtid, c->shard, false, true);
    free(c);
}

/*
 * An orphan (a gtid this coordinator never issued or has no record of) is
 * rolled back by presumed abort, but first that decision is logged like an
 * operator's: every shard of the transaction then gets the same answer,
 * and a later resolve --commit is refused instead of splitting it.
 */
static void record_orphan_abort(struct coord *co, struct httpd_req *req, const cJSON *body,
                                const char *gtid, int shard)
{
    struct coord_opnote n = {.kind = DLOG_OP_RESOLVE, .commit = false, .who = "dtxctl recover"};

    jsonx_str(body, "", "operator", false, (const char **)&n.who, NULL);
    n.reason = "recover: an orphan (no record of this transaction here), rolled back by presumed "
               "abort";
    record_note(co, req, gtid, shard, &n, true, on_orphan_durable);
}

static void resolve_applied(struct fan *f)
{
    cJSON *root = jsonx_new_object();
    bool ok;

    jsonx_add_str(root, "gtid", f->gtid);
    jsonx_add_str(root, "decision", f->commit ? "commit" : "abort");
    jsonx_add_bool(root, "heuristic", f->heuristic);
    jsonx_add_bool(root, "recorded", true);
    jsonx_add(root, "shards", finish_results(f, &ok));
    httpd_reply_json(f->req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

void admin_abandon(struct coord *co)
{
    struct list_node *head = coord_admin_pending(co);

    while (!list_empty(head))
        fan_free(container_of(head->next, struct fan, link));
}

static void on_resolve_durable(void *arg, int rc, const struct dtx_err *err)
{
    struct op_ctx *c = arg;
    struct fan *f;

    if (rc < 0 && !err) {
        /* the coordinator is going away; so is the request */
    } else if (rc < 0) {
        httpd_reply_error(c->req, err);
    } else {
        f = fan_new(c->co, c->req, resolve_applied);
        snprintf(f->gtid, sizeof(f->gtid), "%s", c->gtid);
        f->commit = c->commit;
        f->heuristic = c->heuristic;
        fan_finish(f, c->shard, c->commit);
    }
    free(c);
}

static void on_forget_durable(void *arg, int rc, const struct dtx_err *err)
{
    struct op_ctx *c = arg;
    const struct tx *tx = coord_find(c->co, c->gtid);

    if (rc < 0 && !err) {
        /* the coordinator is going away; so is the request */
    } else if (rc < 0) {
        httpd_reply_error(c->req, err);
    } else if (tx) {
        cJSON *o = tx_json(c->co, tx);

        httpd_reply_json(c->req, 200, jsonx_print(o));
        cJSON_Delete(o);
    } else {
        httpd_reply_json(c->req, 200, strdup("{\"recorded\":true}"));
    }
    free(c);
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
    n->reason = (char *)reason;
    n->who = (char *)who;
    return true;
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
    const char *o = coord_outcome(co, gtid, shard, &xid);
    const struct tx *tx = coord_find(co, gtid);

    if (strcmp(o, "in_flight") == 0) {
        httpd_reply_errorf(req, DTX_ECONFLICT,
                           "refused: transaction %s is still being decided (%s); wait for its "
                           "outcome, then use dtxctl recover",
                           gtid, tx ? tx_status(tx) : "an operator's decision is being recorded");
        return false;
    }
    if (strcmp(o, "unknown") == 0) {
        *heuristic = true;
        return true;
    }
    if ((strcmp(o, "commit") == 0) != commit) {
        httpd_reply_errorf(
            req, DTX_ECONFLICT,
            "refused: transaction %s is recorded as %s%s; %s it on shard '%s' would leave it "
            "committed on some shards and not on others",
            gtid, o[0] == 'c' ? "committed" : "aborted",
            tx                      ? ""
            : coord_notes(co, gtid) ? " by an operator (dtxctl show)"
                                    : " (it has no commit record: presumed abort)",
            commit ? "committing" : "aborting", cfg->shards[shard].name);
        return false;
    }
    return true;
}

static void post_resolve(struct coord *co, struct httpd_req *req, const char *gtid)
{
    cJSON *body = object_body(req);
    const char *decision = NULL;
    struct dtx_err err;
    struct coord_opnote n;
    bool heuristic = false, ok = true;
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
    if ((shard = shard_arg(co, req, body, false)) == -2 || !who_and_why(req, body, &n))
        goto out;
    n.kind = DLOG_OP_RESOLVE;
    n.commit = decision[0] == 'c';
    for (size_t i = 0; ok && i < coord_config(co)->nshards; i++) {
        if (shard < 0 || (int)i == shard)
            ok = decision_allowed(co, req, gtid, (int)i, n.commit, &heuristic);
    }
    if (!ok)
        goto out;
    if (shard >= 0)
        snprintf(n.shard, sizeof(n.shard), "%s", coord_config(co)->shards[shard].name);
    log_warn("operator '%s': %s transaction %s%s%s (%s): %s", n.who, n.commit ? "commit" : "abort",
             gtid, shard >= 0 ? " on shard " : "", n.shard,
             heuristic ? "a heuristic decision" : "as recorded", n.reason);
    record_note(co, req, gtid, shard, &n, heuristic, on_resolve_durable);
out:
    cJSON_Delete(body);
}

static void post_forget(struct coord *co, struct httpd_req *req, const char *gtid)
{
    cJSON *body = object_body(req);
    const struct tx *tx = coord_find(co, gtid);
    struct coord_opnote n;
    int shard;

    if (!body)
        return;
    memset(&n, 0, sizeof(n));
    if ((shard = shard_arg(co, req, body, true)) < 0 || !who_and_why(req, body, &n))
        goto out;
    if (!coord_waits_for(co, gtid, shard)) {
        httpd_reply_errorf(req, DTX_ECONFLICT,
                           "refused: transaction %s is not waiting for shard '%s' (%s)", gtid,
                           coord_config(co)->shards[shard].name,
                           tx ? tx_status(tx) : "no live transaction with that gtid");
        goto out;
    }
    n.kind = DLOG_OP_FORGET;
    n.commit = tx->state == TX_COMMITTING;
    snprintf(n.shard, sizeof(n.shard), "%s", coord_config(co)->shards[shard].name);
    log_warn("operator '%s': forget shard '%s' of %s transaction %s: %s", n.who, n.shard,
             n.commit ? "committed" : "aborted", gtid, n.reason);
    record_note(co, req, gtid, shard, &n, false, on_forget_durable);
out:
    cJSON_Delete(body);
}

void admin_handle(struct coord *co, struct httpd_req *req, const char *method, const char *rest)
{
    bool get = strcmp(method, "GET") == 0, post = strcmp(method, "POST") == 0;
    const char *action;
    char gtid[DTX_GTID_MAX + 1];
    size_t n;

    if (strcmp(rest, "/status") == 0 && get) {
        fan_branches(fan_new(co, req, status_done));
    } else if (strcmp(rest, "/in-doubt") == 0 && get) {
        fan_branches(fan_new(co, req, in_doubt_done));
    } else if (strcmp(rest, "/recover") == 0 && post) {
        post_recover(co, req);
    } else if (strncmp(rest, "/transactions/", 14) == 0 && post &&
               (action = strrchr(rest + 14, '/')) && (n = (size_t)(action - rest - 14)) > 0 &&
               n < sizeof(gtid) &&
               (strcmp(action, "/resolve") == 0 || strcmp(action, "/forget") == 0)) {
        snprintf(gtid, sizeof(gtid), "%.*s", (int)n, rest + 14);
        if (!is_gtid(gtid))
            httpd_reply_errorf(req, DTX_EINVAL, "'%s' is not a gtid (node-epoch-sequence)", gtid);
        else if (strcmp(action, "/resolve") == 0)
            post_resolve(co, req, gtid);
        else
            post_forget(co, req, gtid);
    } else {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s /v1/admin%s", method, rest);
    }
}
