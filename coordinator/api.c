/*
 * api.c - the coordinator's HTTP routes and request validation.
 *
 *   POST /v1/transactions              run a one-shot transaction   (client)
 *   GET  /v1/transactions?status=S     list transactions            (admin)
 *   GET  /v1/transactions/{gtid}       one transaction's state      (client)
 *   GET  /v1/route?key=K               where a key lives            (client)
 *   GET  /healthz, GET /metrics        health and Prometheus metrics (open)
 *
 * Authorisation: tokens are set for every role or for none (auth.h, checked
 * at start). When set, client routes need the client token (or the admin
 * token), admin routes the admin token, peer routes the peer token. No
 * Authorization header, or a token that matches nothing there, is 401; the
 * client token on an admin route is 403. A peer route takes only the peer
 * token (any other is 401), and the peer token is no token elsewhere (401).
 *
 * Validation happens entirely before anything runs: a request that is
 * refused has touched no shard. Runs on the coordinator's loop thread.
 */
#include "dtx/api.h"
#include "dtx/admin.h"
#include "dtx/coord.h"
#include "dtx/dstore_pg.h"
#include "dtx/ev.h"
#include "dtx/hmap.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/route.h"
#include "dtx/sqlcheck.h"
#include "dtx/utf8.h"
#include "dtx/xalloc.h"

#include <ctype.h>
#include <sys/random.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDEM_KEY_MAX 200

static const char *const tx_keys[] = {"protocol", "timeout_ms",  "idempotency_key",
                                      "ops",      "interactive", NULL};
static const char *const op_keys[] = {"shard", "key", "sql", "params", "expect_rows", NULL};

/* ---- request validation ------------------------------------------------- */

static int op_error(struct dtx_err *err, int i)
{
    if (err)
        err->op = i;
    return err ? err->code : DTX_EINVAL;
}

static int check_params(const cJSON *op, const char *where, uint32_t max, struct dtx_err *err)
{
    const cJSON *params = NULL;
    const cJSON *p;
    int n = 0;

    if (jsonx_array(op, where, "params", false, &params, err) < 0)
        return DTX_EINVAL;
    if (!params)
        return 0;
    if ((uint32_t)cJSON_GetArraySize(params) > max)
        return dtx_err_set(err, DTX_EINVAL, "'%s.params' has %d parameters; the limit is %u", where,
                           cJSON_GetArraySize(params), max);
    cJSON_ArrayForEach(p, params)
    {
        if (cJSON_IsNumber(p) && !isfinite(p->valuedouble))
            return dtx_err_set(err, DTX_EINVAL, "'%s.params[%d]' is not a finite number", where, n);
        if (cJSON_IsNumber(p) && p->valuedouble == floor(p->valuedouble) && !jsonx_is_safe_int(p))
            return dtx_err_set(err, DTX_EINVAL,
                               "'%s.params[%d]' is an integer beyond 2^53, which JSON numbers "
                               "cannot carry exactly; pass it as a string",
                               where, n);
        n++;
    }
    return 0;
}

static int check_sql(const cJSON *op, const char *where, uint32_t max, struct dtx_err *err)
{
    const char *sql = NULL;
    bool reads_only;

    if (jsonx_str(op, where, "sql", true, &sql, err) < 0)
        return DTX_EINVAL;
    if (strlen(sql) > max)
        return dtx_err_set(err, DTX_EINVAL, "'%s.sql' is %zu bytes; the limit is %u", where,
                           strlen(sql), max);
    if (sqlcheck(sql, &reads_only, err) < 0)
        return dtx_err_prefix(err, "'%s.sql'", where);
    return 0;
}

static int route_op(const cJSON *op, const char *where, const struct coord_config *cfg, int *shard,
                    struct dtx_err *err)
{
    const char *name = NULL, *key = NULL;

    if (jsonx_str(op, where, "shard", false, &name, err) < 0 ||
        jsonx_str(op, where, "key", false, &key, err) < 0)
        return DTX_EINVAL;
    if (name && key)
        return dtx_err_set(err, DTX_EINVAL, "'%s' gives both \"shard\" and \"key\"; give one",
                           where);
    if (!name && !key)
        return dtx_err_set(err, DTX_EINVAL, "'%s' needs \"shard\" or \"key\"", where);
    if (key) {
        *shard = (int)route_shard(&cfg->route, route_slot(key, strlen(key)));
        return 0;
    }
    *shard = coord_config_shard(cfg, name);
    if (*shard < 0)
        return dtx_err_set(err, DTX_EINVAL, "'%s.shard': unknown shard '%s'", where, name);
    return 0;
}

static int check_op(cJSON *op, int i, const struct coord_config *cfg, struct txreq_op *out,
                    struct dtx_err *err)
{
    char where[32];
    int64_t rows;

    snprintf(where, sizeof(where), "ops[%d]", i);
    if (!cJSON_IsObject(op)) {
        dtx_err_set(err, DTX_EINVAL, "'%s' must be an object", where);
        return op_error(err, i);
    }
    if (jsonx_only_keys(op, where, op_keys, err) < 0 ||
        route_op(op, where, cfg, &out->shard, err) < 0 ||
        check_sql(op, where, cfg->max_sql_bytes, err) < 0 ||
        check_params(op, where, cfg->max_params, err) < 0 ||
        jsonx_int(op, where, "expect_rows", false, 0, INT32_MAX, &rows, err) < 0)
        return op_error(err, i);
    out->op = op;
    return 0;
}

static int parse_protocol(const cJSON *root, struct txreq *r, struct dtx_err *err)
{
    const char *proto = "2pc";
    bool interactive = false;

    if (jsonx_str(root, "", "protocol", false, &proto, err) < 0 ||
        jsonx_bool(root, "", "interactive", false, &interactive, err) < 0)
        return DTX_EINVAL;
    if (strcmp(proto, "2pc") != 0 && strcmp(proto, "3pc") != 0)
        return dtx_err_set(err, DTX_EINVAL, "'protocol' must be \"2pc\" or \"3pc\", not \"%s\"",
                           proto);
    r->interactive = interactive;
    r->protocol = strcmp(proto, "3pc") == 0 ? 3 : 2;
    return 0;
}

static int parse_header(const cJSON *root, const struct coord_config *cfg, struct txreq *r,
                        struct dtx_err *err)
{
    int64_t timeout;
    const char *key = NULL;

    if (!cJSON_IsObject(root))
        return dtx_err_set(err, DTX_EINVAL, "the request body must be a JSON object");
    if (jsonx_only_keys(root, "", tx_keys, err) < 0 || parse_protocol(root, r, err) < 0)
        return err ? err->code : DTX_EINVAL;
    /* For an interactive transaction timeout_ms is how long it may stay idle. */
    timeout = r->interactive ? cfg->interactive_timeout_ms : cfg->prepare_timeout_ms;
    if (jsonx_int(root, "", "timeout_ms", false, 1, cfg->max_timeout_ms, &timeout, err) < 0 ||
        jsonx_str(root, "", "idempotency_key", false, &key, err) < 0)
        return err ? err->code : DTX_EINVAL;
    if (r->interactive && key)
        return dtx_err_set(err, DTX_EINVAL,
                           "'idempotency_key' is for one-shot transactions; an interactive one is "
                           "retried by its gtid");
    if (r->interactive && cJSON_HasObjectItem(root, "ops"))
        return dtx_err_set(err, DTX_EINVAL,
                           "an interactive transaction takes its ops with POST "
                           "/v1/transactions/{gtid}/ops, not with its begin");
    if (key && (!*key || strlen(key) > IDEM_KEY_MAX))
        return dtx_err_set(err, DTX_EINVAL, "'idempotency_key' must be 1 to %d characters",
                           IDEM_KEY_MAX);
    for (const char *c = key; c && *c; c++) {
        if ((unsigned char)*c < 0x20 || *c == 0x7f) /* idemkey.h: a client's namespace */
            return dtx_err_set(err, DTX_EINVAL,
                               "'idempotency_key' holds a control character at byte %d: a key is "
                               "printable text",
                               (int)(c - key) + 1);
    }
    r->timeout_ms = (uint32_t)timeout;
    r->idem_key = key;
    return 0;
}

/*
 * What an idempotency key is compared on: the protocol and the ops, each op's
 * members in op_keys' order whatever order the client wrote them in (a map
 * of Go, say, has none), so that the same request hashes the same. Values
 * are printed as they came: a parameter that is an object is passed as JSON
 * text, and its members' order is part of that text. The ops of a client
 * that wrote them in this order print as they always did.
 */
static uint64_t request_hash(const struct txreq *r, const cJSON *ops)
{
    cJSON *canon = cJSON_CreateArray();
    const cJSON *op;
    char proto[8], *s;
    uint64_t h;

    xnonnull(canon);
    cJSON_ArrayForEach(op, ops)
    {
        cJSON *o = cJSON_CreateObject();

        xnonnull(o);
        for (size_t k = 0; op_keys[k]; k++) {
            const cJSON *v = cJSON_GetObjectItemCaseSensitive(op, op_keys[k]);

            if (v)
                jsonx_add(o, op_keys[k], cJSON_Duplicate(v, true));
        }
        cJSON_AddItemToArray(canon, o);
    }
    s = jsonx_print(canon);
    cJSON_Delete(canon);
    snprintf(proto, sizeof(proto), "%u:", r->protocol);
    h = hmap_hash(proto) ^ hmap_hash(s);
    free(s);
    return h;
}

int api_check_3pc_shards(const struct tx *tx, const struct txreq *r, struct dtx_err *err)
{
    size_t n = tx_shards_with(tx, r);

    if (n <= BALLOT_MAX_SHARDS)
        return 0;
    return dtx_err_set(err, DTX_EINVAL,
                       "a three-phase commit transaction takes at most %d shards (its "
                       "participants' recovery rounds ask every one); this one would have %zu: "
                       "use \"protocol\": \"2pc\", or fewer shards",
                       BALLOT_MAX_SHARDS, n);
}

static int parse_tx(const char *body, size_t len, const struct coord_config *cfg, bool ops_only,
                    struct txreq *out, struct dtx_err *err)
{
    static const char *const ops_keys[] = {"ops", NULL};
    struct txreq r;
    const cJSON *ops = NULL;
    int rc, n;

    memset(&r, 0, sizeof(r));
    memset(out, 0, sizeof(*out));
    rc = jsonx_parse(body, len, &r.root, err);
    if (rc == 0 && ops_only && !cJSON_IsObject(r.root))
        rc = dtx_err_set(err, DTX_EINVAL, "the request body must be a JSON object");
    if (rc == 0)
        rc = ops_only ? jsonx_only_keys(r.root, "", ops_keys, err)
                      : parse_header(r.root, cfg, &r, err);
    if (rc == 0 && r.interactive) {
        *out = r; /* a begin: no ops */
        return 0;
    }
    if (rc == 0)
        rc = jsonx_array(r.root, "", "ops", true, &ops, err);
    if (rc < 0)
        goto out_free;
    n = cJSON_GetArraySize(ops);
    if (n == 0 || (uint32_t)n > cfg->max_ops) {
        rc = dtx_err_set(err, DTX_EINVAL, "'ops' must hold 1 to %u ops", cfg->max_ops);
        goto out_free;
    }
    r.nops = (size_t)n;
    r.ops = xcalloc(r.nops, sizeof(*r.ops));
    for (int i = 0; i < n && rc == 0; i++)
        rc = check_op(cJSON_GetArrayItem(ops, i), i, cfg, &r.ops[i], err);
    if (rc == 0 && r.protocol == 3)
        rc = api_check_3pc_shards(NULL, &r, err);
    if (rc < 0)
        goto out_free;
    if (r.idem_key)
        r.hash = request_hash(&r, ops);
    *out = r;
    return 0;

out_free:
    api_txreq_release(&r);
    return rc;
}

int api_parse_tx(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                 struct dtx_err *err)
{
    return parse_tx(body, len, cfg, false, out, err);
}

int api_parse_ops(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                  struct dtx_err *err)
{
    return parse_tx(body, len, cfg, true, out, err);
}

void api_txreq_release(struct txreq *r)
{
    cJSON_Delete(r->root);
    free(r->ops);
    memset(r, 0, sizeof(*r));
}

/* ---- authorisation ----------------------------------------------------------- */

enum role { ROLE_OPEN, ROLE_CLIENT, ROLE_ADMIN, ROLE_PEER };

/*
 * True when the request may go on; otherwise it has been answered 401/403.
 * *who (when who is not NULL) says whose transactions it may see and act
 * on: NULL for the admin token (every one), a named client's name, or ""
 * for client_token and for a coordinator without tokens (auth.h).
 */
static bool authorized(const struct coord_config *cfg, struct httpd_req *req, enum role need,
                       const char **who)
{
    const struct auth_client *named = NULL;
    const char *bearer;
    bool admin_ok, client_ok;

    if (who)
        *who = "";
    /* every role's token or none (auth.h): without the admin token, none is set */
    if (need == ROLE_OPEN || !auth_token_is_set(&cfg->admin_token))
        return true;
    if (need == ROLE_PEER) {
        if (httpd_req_has_token(req, &cfg->peer_token))
            return true;
        httpd_reply_errorf(req, DTX_EAUTH, "this endpoint needs the peer token");
        return false;
    }
    admin_ok = httpd_req_has_token(req, &cfg->admin_token);
    client_ok = httpd_req_has_token(req, &cfg->client_token);
    bearer = httpd_req_bearer(req);
    if (bearer)
        named = auth_clients_match(&cfg->clients, bearer, strlen(bearer));
    if (admin_ok) {
        if (who)
            *who = NULL;
        return true;
    }
    if (need == ROLE_CLIENT && (client_ok || named)) {
        if (who && named)
            *who = named->name;
        return true;
    }
    if (client_ok || named)
        httpd_reply_errorf(req, DTX_EFORBIDDEN, "this endpoint needs the admin token");
    else if (httpd_req_header(req, "Authorization"))
        httpd_reply_errorf(req, DTX_EAUTH, "the bearer token is not valid");
    else
        httpd_reply_errorf(req, DTX_EAUTH, "missing \"Authorization: Bearer <token>\" header");
    return false;
}

/* ---- peer endpoints ------------------------------------------------------------ */

#define OUTCOMES_MAX 10000

/*
 * Parses {"shard": S, "gtids": [...], "acceptor_rows": [...]?}; returns 0
 * with *root, *shard, *gtids and *rows (NULL when absent), or an error.
 */
static int parse_outcomes_req(struct coord *co, struct httpd_req *req, cJSON **root, int *shard,
                              const cJSON **gtids, const cJSON **rows, struct dtx_err *err)
{
    const char *name = NULL, *body = NULL;
    size_t len = 0;
    int rc = httpd_req_json_body(req, &body, &len, err);

    if (rc == 0)
        rc = jsonx_parse(body, len, root, err);
    if (rc == 0)
        rc = jsonx_str(*root, "", "shard", true, &name, err);
    if (rc == 0)
        rc = jsonx_array(*root, "", "gtids", true, gtids, err);
    if (rc < 0)
        return rc;
    *shard = coord_config_shard(coord_config(co), name);
    if (*shard < 0)
        return dtx_err_set(err, DTX_EINVAL, "unknown shard '%s'", name);
    if (cJSON_GetArraySize(*gtids) > OUTCOMES_MAX)
        return dtx_err_set(err, DTX_EINVAL, "at most %d gtids per request", OUTCOMES_MAX);
    rc = jsonx_array(*root, "", "acceptor_rows", false, rows, err);
    if (rc == 0 && *rows && cJSON_GetArraySize(*rows) > OUTCOMES_MAX)
        return dtx_err_set(err, DTX_EINVAL, "at most %d acceptor_rows per request", OUTCOMES_MAX);
    return rc;
}

/* The gtids among rows (a shard's acceptor rows left behind) that the shard may now delete. */
static cJSON *acceptors_done(const struct coord *co, const cJSON *rows)
{
    cJSON *done = jsonx_new_array();
    const cJSON *g;

    cJSON_ArrayForEach(g, rows)
    {
        if (cJSON_IsString(g) && coord_acceptors_done(co, g->valuestring))
            jsonx_append(done, cJSON_CreateString(g->valuestring));
    }
    return done;
}

/*
 * POST /v1/peer/outcomes {"shard": S, "gtids": [...], "acceptor_rows":
 * [...]?}: a participant's recovery asks what became of the transactions of
 * its prepared branches, and of those whose 3PC acceptor rows it still
 * holds although its branch is not prepared (its sweep). Answers {"node",
 * "epoch", "outcomes": [{"gtid", "outcome", "xid"?, "db"?}], "finished":
 * [...]?}: the node and run answering, since a participant may serve
 * several coordinators and takes each gtid's answer from its own node
 * only; "finished" (with acceptor_rows) lists the rows the shard may
 * delete (coord_acceptors_done).
 */
static void post_outcomes(struct coord *co, struct httpd_req *req)
{
    const cJSON *gtids = NULL, *rows = NULL, *g;
    struct dtx_err err;
    cJSON *root = NULL, *answer, *list;
    int shard = -1;

    dtx_err_clear(&err);
    if (parse_outcomes_req(co, req, &root, &shard, &gtids, &rows, &err) < 0) {
        httpd_reply_error(req, &err);
        cJSON_Delete(root);
        return;
    }
    answer = jsonx_new_object();
    jsonx_add_str(answer, "node", coord_config(co)->node_id);
    jsonx_add_num(answer, "epoch", (double)coord_epoch(co));
    list = jsonx_new_array();
    cJSON_ArrayForEach(g, gtids)
    {
        uint64_t xid = 0;
        char xs[24];
        cJSON *o;

        if (!cJSON_IsString(g))
            continue;
        o = jsonx_new_object();
        jsonx_add_str(o, "gtid", g->valuestring);
        jsonx_add_str(o, "outcome",
                      dtx_decision_name(coord_decision(co, g->valuestring, shard, &xid)));
        if (xid) {
            const struct tx *tx = coord_find(co, g->valuestring);
            const char *db = tx ? tx_branch_db(tx, shard) : NULL;

            snprintf(xs, sizeof(xs), "%llu", (unsigned long long)xid);
            jsonx_add_str(o, "xid", xs);
            if (db)
                jsonx_add_str(o, "db", db);
        }
        jsonx_append(list, o);
    }
    jsonx_add(answer, "outcomes", list);
    if (rows)
        jsonx_add(answer, "finished", acceptors_done(co, rows));
    httpd_reply_json(req, 200, jsonx_print(answer));
    cJSON_Delete(answer);
    cJSON_Delete(root);
}

/* ---- routes ------------------------------------------------------------------- */

/* POST /v1/transactions; who: whose the transaction is (authorized). */
static void post_transaction(struct coord *co, struct httpd_req *req, const char *who)
{
    struct txreq r;
    struct dtx_err err;
    const char *body = NULL;
    size_t len = 0;

    dtx_err_clear(&err);
    if (httpd_req_json_body(req, &body, &len, &err) < 0 ||
        api_parse_tx(body, len, coord_config(co), &r, &err) < 0) {
        httpd_reply_error(req, &err);
        return;
    }
    r.client = who;
    coord_submit(co, &r, req);
    api_txreq_release(&r);
}

static void get_route(struct coord *co, struct httpd_req *req)
{
    const struct coord_config *cfg = coord_config(co);
    const char *key = httpd_req_arg(req, "key");
    cJSON *root;
    uint32_t slot;

    if (!key) {
        httpd_reply_errorf(req, DTX_EINVAL, "missing query parameter 'key'");
        return;
    }
    if (utf8_invalid_at(key, strlen(key)) < strlen(key)) { /* no op could name it: JSON is UTF-8 */
        httpd_reply_errorf(req, DTX_EINVAL, "the key is not valid UTF-8");
        return;
    }
    slot = route_slot(key, strlen(key));
    root = jsonx_new_object();
    jsonx_add_str(root, "key", key);
    jsonx_add_num(root, "slot", slot);
    jsonx_add_str(root, "shard", cfg->shards[route_shard(&cfg->route, slot)].name);
    httpd_reply_json(req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* Whether post_call serves POST /v1/transactions/{gtid}<slash> (gtid_start: its first byte). */
static bool call_served(const char *gtid_start, const char *slash)
{
    size_t n = (size_t)(slash - gtid_start);

    return n > 0 && n <= DTX_GTID_MAX &&
           (strcmp(slash, "/ops") == 0 || strcmp(slash, "/commit") == 0 ||
            strcmp(slash, "/abort") == 0);
}

/* POST /v1/transactions/{gtid}/ops|commit|abort: a call on an interactive transaction. */
static void post_call(struct coord *co, struct httpd_req *req, const char *gtid_start,
                      const char *slash, const char *who)
{
    char gtid[DTX_GTID_MAX + 1];
    size_t len = 0;
    const char *body = NULL;
    struct dtx_err err;
    struct txreq r;

    if (!call_served(gtid_start, slash)) {
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "no such endpoint: POST %s (a transaction's calls are POST "
                           "/v1/transactions/{gtid}/ops, /commit and /abort)",
                           httpd_req_path(req));
        return;
    }
    snprintf(gtid, sizeof(gtid), "%.*s", (int)(slash - gtid_start), gtid_start);
    dtx_err_clear(&err);
    /* commit and abort take no body, but one labelled as something else is refused too */
    if (httpd_req_json_body(req, &body, &len, &err) < 0) {
        httpd_reply_error(req, &err);
    } else if (strcmp(slash, "/ops") == 0) {
        if (api_parse_ops(body, len, coord_config(co), &r, &err) < 0) {
            httpd_reply_error(req, &err);
        } else {
            r.client = who;
            coord_ops(co, gtid, &r, req);
            api_txreq_release(&r);
        }
    } else if (strcmp(slash, "/commit") == 0) {
        coord_commit(co, gtid, who, req);
    } else {
        coord_abort(co, gtid, who, req);
    }
}

/* Why a standby does not serve: it names the node whose active process does. */
static void standby_err(const struct api_ctx *ctx, struct dtx_err *err)
{
    dtx_err_set(err, DTX_ESHUTDOWN,
                "this coordinator is a standby of node '%s': another process of it is active "
                "(its lease is in the decision store); ask that one",
                ctx->cfg->node_id);
}

/*
 * A standby: its node's active process holds the lease. Clients and
 * participants are told to go there (503), once their token and the path
 * are checked as the active would check them; /healthz says "standby".
 */
static void standby_health(struct api_ctx *ctx, struct httpd_req *req)
{
    cJSON *root = jsonx_new_object(), *lease = jsonx_new_object();
    struct dtx_err err;

    dtx_err_clear(&err);
    standby_err(ctx, &err);
    jsonx_add_str(root, "status", "standby");
    jsonx_add(root, "error", jsonx_error_obj(&err));
    jsonx_add_str(root, "role", "standby");
    jsonx_add_str(root, "node_id", ctx->cfg->node_id);
    if (ctx->claim) {
        jsonx_add_str(root, "boot_id", dstore_pg_claim_holder(ctx->claim));
        dstore_pg_claim_describe(ctx->claim, lease);
    }
    jsonx_add(root, "lease", lease);
    httpd_reply_json(req, 503, jsonx_print(root));
    cJSON_Delete(root);
}

/* Whether this process is its node's active one; a standby answers req 503. */
static bool active(struct api_ctx *ctx, struct httpd_req *req)
{
    struct dtx_err err;

    if (ctx->co)
        return true;
    dtx_err_clear(&err);
    standby_err(ctx, &err);
    httpd_reply_error(req, &err);
    return false;
}

/*
 * True when this process is active. A standby answers 404 where the
 * active's handler would (served: whether that handler serves the path),
 * and 503 only after that.
 */
static bool active_for(struct api_ctx *ctx, struct httpd_req *req, bool served)
{
    if (!ctx->co && !served) {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s %s", httpd_req_method(req),
                           httpd_req_path(req));
        return false;
    }
    return active(ctx, req);
}

/* True when req may go on to its handler: authorized for need, and active_for(served). */
static bool may_serve(struct api_ctx *ctx, struct httpd_req *req, enum role need, bool served,
                      const char **who)
{
    return authorized(ctx->cfg, req, need, who) && active_for(ctx, req, served);
}

static void route_transactions(struct api_ctx *ctx, struct httpd_req *req, const char *method,
                               const char *rest)
{
    struct coord *co = ctx->co;
    const char *slash, *who;

    if (*rest == '\0') {
        bool post = strcmp(method, "POST") == 0, get = strcmp(method, "GET") == 0;

        if (!post && !get)
            httpd_reply_errorf(req, DTX_EMETHOD, "use POST or GET on /v1/transactions");
        else if (post && may_serve(ctx, req, ROLE_CLIENT, true, &who))
            post_transaction(co, req, who);
        else if (get && may_serve(ctx, req, ROLE_ADMIN, true, NULL))
            admin_list_transactions(ctx->admin, req);
        return;
    }
    if (!authorized(ctx->cfg, req, ROLE_CLIENT, &who))
        return;
    if (rest[1] == '\0') {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s %s (no gtid)", method,
                           httpd_req_path(req));
        return;
    }
    slash = strchr(rest + 1, '/');
    if (!slash && strcmp(method, "GET") == 0) {
        if (active(ctx, req))
            admin_get_transaction(ctx->admin, req, rest + 1, who);
    } else if (slash && strcmp(method, "POST") == 0) {
        if (active_for(ctx, req, call_served(rest + 1, slash)))
            post_call(co, req, rest + 1, slash, who);
    } else {
        httpd_reply_errorf(req, DTX_EMETHOD, "method %s is not allowed on %s", method,
                           httpd_req_path(req));
    }
}

/* ---- request ids and trace context --------------------------------------------- */

/* A request's id and W3C trace context, as logged, passed on and answered. */
struct api_trace {
    char id[129];
    char parent[56];
};

static bool id_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n == 0 || n > 128)
        return false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && !strchr("._:-", *s))
            return false;
    }
    return true;
}

/* n lowercase hex digits, not all zero. */
static bool hex_ok(const char *s, size_t n)
{
    bool nonzero = false;

    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
            return false;
        nonzero |= s[i] != '0';
    }
    return nonzero;
}

/* Two lowercase hex digits (a version or the flags; zero is fine). */
static bool hex2_ok(const char *s)
{
    return isxdigit((unsigned char)s[0]) && isxdigit((unsigned char)s[1]) &&
           !isupper((unsigned char)s[0]) && !isupper((unsigned char)s[1]);
}

/*
 * "<2 hex version>-<32 hex trace id>-<16 hex parent id>-<2 hex flags>" (W3C Trace
 * Context): version 00 exactly so; a later version (not ff) is read the same way, with
 * whatever follows its first 55 characters after a '-' ignored, as the spec asks.
 */
static bool traceparent_ok(const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n < 55 || !hex2_ok(s) || strncmp(s, "ff", 2) == 0 || s[2] != '-' || s[35] != '-' ||
        s[52] != '-')
        return false;
    if (strncmp(s, "00", 2) == 0 ? n != 55 : n > 55 && s[55] != '-')
        return false;
    return hex_ok(s + 3, 32) && hex_ok(s + 36, 16) && hex2_ok(s + 53);
}

/*
 * n (at most 256) random bytes for ids, taken from the kernel 256 at a time
 * rather than in a call of their own for each id (the loop's thread only).
 */
static void random_bytes(unsigned char *out, size_t n)
{
    static unsigned char pool[256];
    static size_t left;

    if (n > left) {
        if (getrandom(pool, sizeof(pool), 0) != (ssize_t)sizeof(pool))
            for (size_t i = 0; i < sizeof(pool); i++)
                pool[i] = (unsigned char)(ev_clock_us() >> (i % 8));
        left = sizeof(pool);
    }
    memcpy(out, pool + sizeof(pool) - left, n);
    left -= n;
}

static void random_hex(char *out, size_t ndigits)
{
    unsigned char r[32];

    random_bytes(r, (ndigits + 1) / 2);
    for (size_t i = 0; i < ndigits; i++)
        out[i] = "0123456789abcdef"[(r[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
    out[ndigits] = '\0';
}

/*
 * The client's X-Request-Id when it is 1-128 of [A-Za-z0-9._:-], else a new
 * one. The coordinator's span in the client's trace: its trace id and flags
 * with a new parent id (this span's), as W3C Trace Context asks of whoever
 * passes a trace on; a new trace when the client's is missing or malformed
 * (dropped, as the spec says). Both are answered in the reply's headers and
 * passed to the participants.
 */
static void trace_of(struct httpd_req *req, struct api_trace *t)
{
    const char *id = httpd_req_header(req, "X-Request-Id");
    const char *tp = httpd_req_header(req, "traceparent");

    if (id_ok(id))
        snprintf(t->id, sizeof(t->id), "%s", id);
    else
        random_hex(t->id, 16);
    char trace[33], span[17], flags[3] = "00";

    if (traceparent_ok(tp)) {
        memcpy(trace, tp + 3, 32);
        trace[32] = '\0';
        memcpy(flags, tp + 53, 2);
    } else {
        random_hex(trace, 32);
    }
    random_hex(span, 16);
    snprintf(t->parent, sizeof(t->parent), "00-%s-%s-%s", trace, span, flags);
    httpd_req_add_reply_header(req, "X-Request-Id", t->id);
    httpd_req_add_reply_header(req, "traceparent", t->parent);
}

static void route(struct api_ctx *ctx, struct httpd_req *req);

void api_handle(void *arg, struct httpd_req *req)
{
    struct api_trace t;
    struct log_ctx prev;

    trace_of(req, &t);
    prev = log_ctx_set((struct log_ctx){.request_id = t.id, .traceparent = t.parent});
    route(arg, req);
    log_ctx_set(prev);
}

static void route(struct api_ctx *ctx, struct httpd_req *req)
{
    struct coord *co = ctx->co;
    const char *path = httpd_req_path(req);
    const char *method = httpd_req_method(req);
    unsigned status;
    char *body;

    if (strcmp(path, "/v1/transactions") == 0 || strncmp(path, "/v1/transactions/", 17) == 0) {
        route_transactions(ctx, req, method, path + 16);
    } else if (strncmp(path, "/v1/admin/", 10) == 0) {
        if (may_serve(ctx, req, ROLE_ADMIN, admin_endpoint(method, path + 9, NULL) != ADMIN_NONE,
                      NULL))
            admin_handle(ctx->admin, req, method, path + 9);
    } else if (strcmp(path, "/v1/peer/outcomes") == 0 && strcmp(method, "POST") == 0) {
        if (may_serve(ctx, req, ROLE_PEER, true, NULL))
            post_outcomes(co, req);
    } else if (strncmp(path, "/v1/peer/3pc", 12) == 0 && (path[12] == '/' || !path[12])) {
        if (may_serve(ctx, req, ROLE_PEER, coord_acc_serves(method, path + 12), NULL))
            coord_acc_http(co, req, method, path + 12);
    } else if (strcmp(path, "/v1/route") == 0 && strcmp(method, "GET") == 0) {
        if (may_serve(ctx, req, ROLE_CLIENT, true, NULL))
            get_route(co, req);
    } else if (strcmp(path, "/healthz") == 0 && strcmp(method, "GET") == 0) {
        if (!co) {
            standby_health(ctx, req);
            return;
        }
        body = coord_render_health(co, &status);
        httpd_reply_json(req, status, body);
    } else if (strcmp(path, "/metrics") == 0 && strcmp(method, "GET") == 0) {
        body = co ? coord_render_metrics(co) : coord_render_standby_metrics(ctx->cfg->node_id);
        httpd_reply(req, 200, "text/plain; version=0.0.4", body, strlen(body)); /* owns body */
    } else {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s %s", method, path);
    }
}
