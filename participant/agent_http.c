/*
 * agent_http.c - the participant's HTTP routes:
 *
 *   GET  /v1/peer/stream                       a coordinator's stream (upgraded; peer.c)
 *   GET  /v1/branches/{gid}[?xid=N]            what became of one of this shard's branches
 *   GET  /v1/admin/branches                    prepared dtx branches, their locks, the headroom
 *   POST /v1/admin/branches/{gid}/commit|rollback   finish one now (an operator, via the
 *                                                   coordinator's recover and resolve)
 *   GET  /healthz, GET /metrics                open
 *
 * Every route but /healthz and /metrics is for a coordinator: it needs the
 * peer token when one is configured.
 *
 * State: the operators' requests waiting for the database
 * (ag->admin_calls). Thread model: the participant's event-loop thread.
 */
#include "agent_impl.h"

#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <stdint.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- HTTP routes ------------------------------------------------------------------------- */

/* Every route but /healthz and /metrics is for the coordinator: it needs the peer token. */
static bool peer_authorized(const struct agent *ag, struct httpd_req *req)
{
    const struct auth_token *token = &ag->cfg->peer_token;

    if (!auth_token_is_set(token) || httpd_req_has_token(req, token))
        return true;
    httpd_reply_errorf(req, DTX_EAUTH, "this endpoint needs the peer token");
    return false;
}

/* A request waiting for the database (an operator's, or a coordinator's stream). */
struct admin_call {
    struct list_node link; /* on ag->admin_calls */
    struct agent *ag;
    struct httpd_req *req;
    char gtid[DTX_GTID_MAX + 1];
    bool commit;
    char node[DTX_NAME_MAX + 1]; /* a stream: the coordinator that asks for it */
    uint64_t epoch;
    char gid[RM_GID_MAX]; /* a malformed branch an operator rolls back */
};

static struct admin_call *call_new(struct agent *ag, struct httpd_req *req)
{
    struct admin_call *c = xcalloc(1, sizeof(*c));

    c->ag = ag;
    c->req = req;
    list_insert_tail(&ag->admin_calls, &c->link);
    return c;
}

/*
 * Answers req with err, the failure of a call to the shard's database: a
 * database lost while it was asked (DTX_EUNAVAIL) is 503, as
 * agent_shard_ready answers one already down, not 409.
 */
void agent_reply_db_error(struct httpd_req *req, const struct dtx_err *err)
{
    if (err && err->code == DTX_EUNAVAIL)
        httpd_reply_errorf(req, DTX_ESHUTDOWN, "%s", err->msg);
    else
        httpd_reply_error(req, err);
}

static void on_upgraded(void *arg, int fd, const char *extra, size_t extra_len,
                        struct httpd_upgraded *up)
{
    peer_accept(arg, fd, extra, extra_len, up);
}

/* The coordinator run that dials may connect: upgrade; or why not (409, with the epoch seen). */
static void on_coordinator_seen(void *arg, int rc, const struct rm_coord_seen *seen,
                                const struct dtx_err *err)
{
    struct admin_call *c = arg;
    struct dtx_err e;
    cJSON *root, *obj;

    list_remove(&c->link);
    if (rc < 0) {
        agent_reply_db_error(c->req, err);
    } else if (seen->accepted) {
        httpd_upgrade(c->req, STREAM_PROTO, on_upgraded, c->ag);
    } else {
        log_error("refused coordinator '%s' at epoch %" PRIu64 ": this shard has seen its epoch "
                  "%" PRIu64 " (of another run): its decision log is behind (restored from an "
                  "older copy, or lost); it must move past that epoch",
                  c->node, c->epoch, seen->epoch_seen);
        dtx_err_clear(&e);
        dtx_err_set(&e, DTX_ECONFLICT,
                    "shard '%s' has seen epoch %" PRIu64 " of coordinator '%s' from another run: "
                    "a run at epoch %" PRIu64 " would issue gtids already used (its decision log "
                    "is behind: restored from an older copy, or lost)",
                    c->ag->cfg->name, seen->epoch_seen, c->node, c->epoch);
        obj = jsonx_error_obj(&e);
        jsonx_add_num(obj, "epoch_seen", (double)seen->epoch_seen);
        root = jsonx_new_object();
        jsonx_add(root, "error", obj);
        httpd_reply_json(c->req, 409, jsonx_print(root));
        cJSON_Delete(root);
    }
    free(c);
}

/*
 * GET /v1/peer/stream from a coordinator run (X-Dtx-Node, X-Dtx-Epoch,
 * X-Dtx-Boot): accepted, and recorded in the shard, only when the run is
 * not behind one the shard has seen (rm.h, see_coordinator).
 */
static void accept_stream(struct agent *ag, struct httpd_req *req)
{
    const char *upgrade = httpd_req_header(req, "Upgrade");
    const char *node = httpd_req_header(req, "X-Dtx-Node");
    const char *epoch = httpd_req_header(req, "X-Dtx-Epoch");
    const char *boot = httpd_req_header(req, "X-Dtx-Boot");
    struct admin_call *c;
    uint64_t e = 0;

    if (!upgrade || strcmp(upgrade, STREAM_PROTO) != 0) {
        httpd_reply_errorf(req, DTX_EINVAL, "this endpoint needs \"Upgrade: %s\"", STREAM_PROTO);
        return;
    }
    if (!node || !gid_name_ok(node) || !httpd_parse_u64(epoch, INT64_MAX, &e) || e == 0 || !boot ||
        !*boot || strlen(boot) >= sizeof(((struct rm_coord_seen *)0)->boot_seen)) {
        httpd_reply_errorf(req, DTX_EINVAL,
                           "a coordinator's stream needs X-Dtx-Node (a name), X-Dtx-Epoch (a "
                           "positive number) and X-Dtx-Boot (its run's id)");
        return;
    }
    if (ag->stopping) {
        httpd_reply_errorf(req, DTX_ESHUTDOWN, "the participant is shutting down");
        return;
    }
    c = call_new(ag, req);
    snprintf(c->node, sizeof(c->node), "%s", node);
    c->epoch = e;
    rm_see_coordinator(ag->rm, node, e, boot, on_coordinator_seen, c);
}

/* An operator's call, a question about a branch, an acceptor's: 503 rather than wait. */
bool agent_shard_ready(struct agent *ag, struct httpd_req *req)
{
    char why[300];

    if (rm_healthy(ag->rm, why, sizeof(why)))
        return true;
    httpd_reply_errorf(req, DTX_ESHUTDOWN, "shard '%s': %s", ag->cfg->name, why);
    return false;
}

static const char *const branch_state_names[] = {"prepared", "committed", "rolled_back", "unknown"};

static void on_branch_status(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                             const struct dtx_err *err)
{
    struct httpd_req *req = arg;
    cJSON *root;
    char s[24];

    if (rc < 0) {
        agent_reply_db_error(req, err);
        return;
    }
    root = jsonx_new_object();
    jsonx_add_str(root, "state", branch_state_names[state]);
    if (xid) {
        snprintf(s, sizeof(s), "%" PRIu64, xid);
        jsonx_add_str(root, "xid", s);
    }
    httpd_reply_json(req, 200, jsonx_print(root));
    cJSON_Delete(root);
}

/* GET /v1/branches/{gid}[?xid=N]: what became of one of this shard's branches. */
static void branch_status(struct agent *ag, struct httpd_req *req, const char *gid)
{
    char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];
    const char *xs = httpd_req_arg(req, "xid");
    uint64_t xid = 0;

    if (xs && !httpd_parse_u64(xs, INT64_MAX, &xid)) { /* PostgreSQL's xid8 is a bigint */
        httpd_reply_errorf(req, DTX_EINVAL,
                           "'xid' must be a transaction id (a decimal number up to 2^63 - 1)");
    } else if (!gid_parse(gid, gtid, shard) || strcmp(shard, ag->cfg->name) != 0) {
        httpd_reply_errorf(req, DTX_ENOTFOUND, "'%s' is not a dtx branch of shard '%s'", gid,
                           ag->cfg->name);
    } else if (agent_shard_ready(ag, req)) {
        rm_status(ag->rm, gid, xid, on_branch_status, req);
    }
}

/* ---- operators (admin) ---------------------------------------------------------------- */

/* What the agent itself is doing with a transaction's branch, or NULL when nothing. */
static const char *agent_activity(const struct agent *ag, const char *gtid)
{
    const struct branch *b = branch_find(&ag->branches, gtid);

    return b ? branch_activity(b) : NULL;
}

static void on_inspected(void *arg, int rc, const struct rm_inspection *ins,
                         const struct dtx_err *err)
{
    struct admin_call *c = arg;
    cJSON *root, *arr;

    list_remove(&c->link);
    if (rc < 0) {
        agent_reply_db_error(c->req, err);
        free(c);
        return;
    }
    root = jsonx_new_object();
    arr = jsonx_new_array();
    jsonx_add_str(root, "shard", c->ag->cfg->name);
    jsonx_add_num(root, "max_prepared_transactions", (double)ins->max_prepared);
    jsonx_add_num(root, "prepared_total", (double)ins->prepared_total);
    jsonx_add_num(root, "headroom", (double)(ins->max_prepared - ins->prepared_total));
    for (size_t i = 0; i < ins->n; i++) {
        const struct rm_branch_info *b = &ins->branches[i];
        char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1], xid[24];
        cJSON *o = jsonx_new_object(), *locks = cJSON_Parse(b->locks ? b->locks : "[]");
        const char *doing;

        jsonx_add_str(o, "gid", b->p.gid);
        if (gid_parse(b->p.gid, gtid, shard)) {
            jsonx_add_str(o, "gtid", gtid);
            jsonx_add_str(o, "shard", shard);
            if ((doing = agent_activity(c->ag, gtid)))
                jsonx_add_str(o, "agent", doing);
            terminate_describe(c->ag->term, gtid, o);
        }
        snprintf(xid, sizeof(xid), "%" PRIu64, b->p.xid);
        jsonx_add_str(o, "xid", xid);
        jsonx_add_num(o, "age_ms", b->p.age_ms);
        jsonx_add(o, "locks", locks ? locks : jsonx_new_array());
        jsonx_append(arr, o);
    }
    jsonx_add(root, "branches", arr);
    httpd_reply_json(c->req, 200, jsonx_print(root));
    cJSON_Delete(root);
    free(c);
}

void agent_http_finished(void *ctx, struct httpd_req *req, const char *gtid, bool commit,
                         enum rm_outcome outcome, const struct dtx_err *err)
{
    const char *shard = ((struct agent *)ctx)->cfg->name;
    cJSON *root = jsonx_new_object();
    char gid[DTX_GID_MAX + 1];
    bool as_asked = (outcome == RM_COMMITTED) == commit;

    gid_format(gid, sizeof(gid), gtid, shard);
    jsonx_add_str(root, "gid", gid);
    jsonx_add_str(root, "outcome",
                  outcome == RM_COMMITTED ? "committed"
                  : outcome == RM_HAZARD  ? "unknown"
                                          : "rolled_back");
    if (!as_asked || (err && err->code)) {
        struct dtx_err e;

        dtx_err_clear(&e);
        if (err && err->code)
            e = *err;
        else
            dtx_err_set(&e, DTX_ESTATE, "'%s' was %s, not %s as asked", gid,
                        outcome == RM_COMMITTED ? "committed" : "rolled back",
                        commit ? "committed" : "rolled back");
        jsonx_add(root, "error", jsonx_error_obj(&e));
    }
    httpd_reply_json(req, as_asked ? 200 : 409, jsonx_print(root));
    cJSON_Delete(root);
}

static void on_admin_status(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                            const struct dtx_err *err)
{
    struct admin_call *c = arg;
    struct agent *ag = c->ag;
    const char *doing = agent_activity(ag, c->gtid);

    list_remove(&c->link);
    if (rc < 0) {
        agent_reply_db_error(c->req, err);
    } else if (state != RM_BRANCH_PREPARED) {
        httpd_reply_errorf(c->req, DTX_ENOTFOUND,
                           "transaction %s has no prepared branch on shard '%s' (it is %s)",
                           c->gtid, ag->cfg->name,
                           state == RM_BRANCH_COMMITTED     ? "committed"
                           : state == RM_BRANCH_ROLLED_BACK ? "rolled back"
                                                            : "not prepared");
    } else if (doing && strcmp(doing, "prepared") != 0) {
        httpd_reply_errorf(c->req, DTX_ECONFLICT,
                           "the participant of shard '%s' is %s transaction %s's branch itself; "
                           "try again shortly",
                           ag->cfg->name, doing, c->gtid);
    } else {
        agent_finish_for(ag, c->gtid, xid, c->commit, c->req);
    }
    free(c);
}

/* A malformed branch rolled back (or found gone): answered like any finish. */
static void on_malformed_finished(void *arg, enum rm_outcome outcome, const struct dtx_err *err)
{
    struct admin_call *c = arg;
    cJSON *root = jsonx_new_object();

    list_remove(&c->link);
    jsonx_add_str(root, "gid", c->gid);
    jsonx_add_str(root, "outcome",
                  outcome == RM_COMMITTED ? "committed"
                  : outcome == RM_HAZARD  ? "unknown"
                                          : "rolled_back");
    if (err && err->code)
        jsonx_add(root, "error", jsonx_error_obj(err));
    httpd_reply_json(c->req, outcome == RM_COMMITTED ? 409 : 200, jsonx_print(root));
    cJSON_Delete(root);
    free(c);
}

static void on_malformed_status(void *arg, int rc, enum rm_branch_state state, uint64_t xid,
                                const struct dtx_err *err)
{
    struct admin_call *c = arg;

    (void)xid;
    if (rc < 0 || state != RM_BRANCH_PREPARED) {
        list_remove(&c->link);
        if (rc < 0)
            agent_reply_db_error(c->req, err);
        else
            httpd_reply_errorf(c->req, DTX_ENOTFOUND, "'%s' is not prepared on shard '%s'", c->gid,
                               c->ag->cfg->name);
        free(c);
        return;
    }
    log_warn("operator request: rolling back the malformed dtx branch '%s'", c->gid);
    rm_finish(c->ag->rm, c->gid, 0, NULL, false, on_malformed_finished, c);
}

/*
 * POST /v1/admin/branches/{gid}/rollback?malformed=1: a prepared branch
 * whose gid starts with "dtx:" but holds no gtid (nothing can ever decide
 * it) is rolled back when an operator names it. True when req was such a
 * request (it is then answered).
 */
static bool malformed_rollback(struct agent *ag, struct httpd_req *req, const char *gid, size_t n,
                               const char *action)
{
    char gtid[DTX_GTID_MAX + 1], shard[DTX_NAME_MAX + 1];
    struct admin_call *c;

    if (!httpd_req_arg(req, "malformed"))
        return false;
    c = call_new(ag, req);
    snprintf(c->gid, sizeof(c->gid), "%.*s", (int)n, gid);
    if (strcmp(action, "/rollback") != 0 || n >= sizeof(c->gid) ||
        strncmp(c->gid, DTX_GID_PREFIX, strlen(DTX_GID_PREFIX)) != 0 ||
        gid_parse(c->gid, gtid, shard)) {
        list_remove(&c->link);
        free(c);
        httpd_reply_errorf(req, DTX_EINVAL,
                           "?malformed=1 is for rolling back a dtx: gid that holds no gtid");
        return true;
    }
    if (!agent_shard_ready(ag, req)) {
        list_remove(&c->link);
        free(c);
        return true;
    }
    rm_status(ag->rm, c->gid, 0, on_malformed_status, c);
    return true;
}

/*
 * GET /v1/admin/branches: this shard's prepared dtx branches with their
 * locks, and the prepared-transaction headroom.
 * POST /v1/admin/branches/{gid}/commit|rollback: finish one prepared
 * branch now (the coordinator's recover and resolve; never a branch the
 * agent is running or finishing itself).
 */
static void admin_branches(struct agent *ag, struct httpd_req *req, const char *method,
                           const char *rest)
{
    struct admin_call *c;
    char gid[DTX_GID_MAX + 1], shard[DTX_NAME_MAX + 1];
    const char *slash = strrchr(rest, '/');
    size_t n = slash ? (size_t)(slash - rest) : 0;

    if (*rest == '\0' && strcmp(method, "GET") == 0) {
        if (!agent_shard_ready(ag, req))
            return;
        c = call_new(ag, req);
        rm_inspect(ag->rm, true, on_inspected, c);
        return;
    }
    if (strcmp(method, "POST") != 0 || *rest != '/' || !slash || slash == rest ||
        (strcmp(slash, "/commit") != 0 && strcmp(slash, "/rollback") != 0)) {
        httpd_reply_errorf(req, DTX_ENOTFOUND,
                           "use GET /v1/admin/branches or POST "
                           "/v1/admin/branches/{gid}/commit|rollback");
        return;
    }
    if (malformed_rollback(ag, req, rest + 1, n - 1, slash))
        return;
    c = xcalloc(1, sizeof(*c));
    snprintf(gid, sizeof(gid), "%.*s", (int)(n - 1), rest + 1);
    if (n - 1 >= sizeof(gid) || !gid_parse(gid, c->gtid, shard) ||
        strcmp(shard, ag->cfg->name) != 0) {
        free(c);
        httpd_reply_errorf(req, DTX_ENOTFOUND, "'%.*s' is not a dtx branch of shard '%s'",
                           (int)(n - 1), rest + 1, ag->cfg->name);
        return;
    }
    if (!agent_shard_ready(ag, req)) {
        free(c);
        return;
    }
    c->ag = ag;
    c->req = req;
    c->commit = strcmp(slash, "/commit") == 0;
    list_insert_tail(&ag->admin_calls, &c->link);
    rm_status(ag->rm, gid, 0, on_admin_status, c);
}

static char *render_health(const struct agent *ag, unsigned *status)
{
    cJSON *root = jsonx_new_object();
    char why[300] = "";
    bool ok = rm_healthy(ag->rm, why, sizeof(why));
    size_t coordinators = peers_connected(ag);
    char *s;

    *status = ok ? 200 : 503;
    jsonx_add_str(root, "status", ok ? "ok" : "unavailable");
    jsonx_add_str(root, "shard", ag->cfg->name);
    jsonx_add_str(root, "database", ok ? "up" : "down");
    if (!ok)
        jsonx_add_str(root, "error", why);
    jsonx_add_num(root, "coordinators", (double)coordinators);
    jsonx_add_num(root, "branches_running", (double)ag->branches.running);
    jsonx_add_num(root, "branches_prepared", (double)ag->branches.prepared);
    jsonx_add_num(root, "in_doubt", (double)recovery_in_doubt(ag->recovery));
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

static void get_stream(struct agent *ag, struct httpd_req *req, const char *rest)
{
    (void)rest;
    accept_stream(ag, req);
}

static void get_health(struct agent *ag, struct httpd_req *req, const char *rest)
{
    unsigned status;
    char *body = render_health(ag, &status);

    (void)rest;
    httpd_reply_json(req, status, body);
}

static void get_metrics(struct agent *ag, struct httpd_req *req, const char *rest)
{
    char *body = agent_render_metrics(ag);

    (void)rest;
    httpd_reply(req, 200, "text/plain; version=0.0.4", body, strlen(body));
}

/* What a participant serves for GET, beyond the admin and 3PC calls (prefix: rest follows). */
static const struct get_route {
    const char *path;
    bool prefix;
    void (*serve)(struct agent *ag, struct httpd_req *req, const char *rest);
} get_routes[] = {
    {"/v1/peer/stream", false, get_stream},
    {"/v1/branches/", true, branch_status},
    {"/healthz", false, get_health},
    {"/metrics", false, get_metrics},
};

static const struct get_route *get_route(const char *path)
{
    for (size_t i = 0; i < sizeof(get_routes) / sizeof(get_routes[0]); i++) {
        const struct get_route *r = &get_routes[i];

        if (r->prefix ? strncmp(path, r->path, strlen(r->path)) == 0 : strcmp(path, r->path) == 0)
            return r;
    }
    return NULL;
}

void agent_handle_http(void *ctx, struct httpd_req *req)
{
    struct agent *ag = ctx;
    const char *path = httpd_req_path(req);
    const char *method = httpd_req_method(req);
    const struct get_route *r;

    if (strncmp(path, "/v1/", 4) == 0 && !peer_authorized(ag, req))
        return;
    if (strncmp(path, "/v1/admin/branches", 18) == 0) {
        admin_branches(ag, req, method, path + 18);
    } else if (strncmp(path, "/v1/peer/3pc", 12) == 0 && (path[12] == '/' || !path[12])) {
        terminate_http(ag->term, req, method, path + 12);
    } else if (!(r = get_route(path))) { /* 404 whatever the method */
        httpd_reply_errorf(req, DTX_ENOTFOUND, "no such endpoint: %s %s", method, path);
    } else if (strcmp(method, "GET") != 0) {
        httpd_reply_errorf(req, DTX_EMETHOD, "method %s is not allowed on %s", method, path);
    } else {
        r->serve(ag, req, path + strlen(r->path));
    }
}

void agent_http_release(struct agent *ag)
{
    while (!list_empty(&ag->admin_calls)) {
        struct admin_call *c = container_of(ag->admin_calls.next, struct admin_call, link);

        list_remove(&c->link);
        free(c);
    }
}
