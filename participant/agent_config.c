/*
 * agent_config.c - loading and validating the participant's config file.
 * Runs once at start-up.
 */
#include "dtx/agent_config.h"
#include "dtx/jsonx.h"
#include "dtx/xalloc.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_keys[] = {"name",
                                       "tls",
                                       "listen",
                                       "conninfo",
                                       "coordinator_url",
                                       "coordinators",
                                       "auth",
                                       "pool_size",
                                       "startup_wait_s",
                                       "max_body_bytes",
                                       "http_conn_limit",
                                       "http_conn_limit_per_ip",
                                       "http_request_timeout_ms",
                                       "log_level",
                                       "log_format",
                                       "recovery_interval_ms",
                                       "recovery_min_age_ms",
                                       "max_open_branches",
                                       "open_wait_ms",
                                       "prepared_headroom",
                                       "allow_fsync_off",
                                       "max_result_bytes",
                                       "max_result_rows",
                                       "termination_timeout_ms",
                                       "acceptor_sweep_age_ms",
                                       NULL};

#define U32_KEY(k, d, lo, hi)                                                                      \
    {                                                                                              \
#k, offsetof(struct agent_config, k), d, lo, hi                                            \
    }

static const struct conf_u32 u32_keys[] = {
    U32_KEY(pool_size, 16, 1, 1000),
    U32_KEY(startup_wait_s, 30, 0, 3600),
    U32_KEY(max_body_bytes, 1048576, 1024, 1073741824),
    U32_KEY(http_conn_limit, 1000, 16, 100000),
    U32_KEY(http_conn_limit_per_ip, 100, 0, 100000),
    U32_KEY(http_request_timeout_ms, 30000, 100, 3600000),
    U32_KEY(recovery_interval_ms, 2000, 10, 3600000),
    U32_KEY(recovery_min_age_ms, 1000, 0, 3600000),
    U32_KEY(max_open_branches, 0, 0, 1000),
    U32_KEY(open_wait_ms, 500, 0, 60000),
    U32_KEY(prepared_headroom, 2, 0, 100000),
    U32_KEY(termination_timeout_ms, 5000, 100, 3600000),
    U32_KEY(acceptor_sweep_age_ms, 60000, 0, 86400000),
    /* under the peer stream's frame limit (64 MiB), with room for the rest of the message */
    U32_KEY(max_result_bytes, 16777216, 1024, 60u * 1024 * 1024),
    U32_KEY(max_result_rows, 100000, 1, 100000000),
};

static int add_coordinator(struct agent_config *c, const char *url, const char *key,
                           struct dtx_err *err)
{
    struct agent_coord *co = &c->coords[c->ncoords];

    if (c->ncoords >= AGENT_COORDS_MAX)
        return dtx_err_set(err, DTX_EINVAL, "'%s' lists more than %d coordinators", key,
                           AGENT_COORDS_MAX);
    if (conf_copy(co->url, sizeof(co->url), url, key, err) < 0)
        return DTX_EINVAL;
    if (addr_parse_url(url, &co->addr, err) < 0)
        return dtx_err_prefix(err, "'%s'", key);
    if (tls_check_url(&c->tls, &co->addr, key, err) < 0)
        return DTX_EINVAL;
    for (uint32_t i = 0; i < c->ncoords; i++) {
        if (strcmp(c->coords[i].url, url) == 0)
            return dtx_err_set(err, DTX_EINVAL, "'%s' lists '%s' twice", key, url);
    }
    c->ncoords++;
    return 0;
}

/*
 * "coordinators": every coordinator process this agent serves (each node's
 * active and standbys), or "coordinator_url" for a single one; not both.
 */
static int load_coordinators(const cJSON *root, struct agent_config *c, struct dtx_err *err)
{
    const cJSON *list = NULL, *e;
    const char *url = NULL;
    int rc = jsonx_array(root, "", "coordinators", false, &list, err);

    if (rc == 0)
        rc = jsonx_str(root, "", "coordinator_url", false, &url, err);
    if (rc < 0)
        return rc;
    if (list && url)
        return dtx_err_set(err, DTX_EINVAL,
                           "give either 'coordinators' or 'coordinator_url', not both");
    if (url)
        return add_coordinator(c, url, "coordinator_url", err);
    if (!list || cJSON_GetArraySize(list) == 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "'coordinators' (a list of coordinator URLs) is missing or empty");
    cJSON_ArrayForEach(e, list)
    {
        if (!cJSON_IsString(e))
            return dtx_err_set(err, DTX_EINVAL, "'coordinators' must list URLs (strings)");
        if (add_coordinator(c, e->valuestring, "coordinators", err) < 0)
            return DTX_EINVAL;
    }
    return 0;
}

/*
 * auth{peer_token[_file], allow_unauthenticated}: a participant has one
 * role. Its operators' endpoints (/v1/admin/...) are called by the coordinator (recover,
 * resolve) and by dtxctl in-doubt --participant, both with the peer
 * token: a client or admin token here would be a key that does nothing.
 */
static int load_auth(const cJSON *root, struct agent_config *c, struct dtx_err *err)
{
    static const char *const other[] = {"client_token", "client_token_file", "admin_token",
                                        "admin_token_file"};
    const struct auth_role roles[] = {{"peer", &c->peer_token}};
    const cJSON *auth = NULL;
    char dir[4096];
    int rc = jsonx_object(root, "", "auth", false, &auth, err);

    if (rc < 0)
        return rc;
    for (size_t i = 0; auth && i < sizeof(other) / sizeof(other[0]); i++) {
        if (cJSON_GetObjectItemCaseSensitive(auth, other[i]))
            return dtx_err_set(err, DTX_EINVAL,
                               "'auth.%s': a participant has no %s token: every endpoint of "
                               "it but /healthz and /metrics, its /v1/admin/* too, takes the "
                               "peer token ('auth.peer_token')",
                               other[i], i < 2 ? "client" : "admin");
    }
    auth_config_dir(c->path, dir, sizeof(dir));
    return auth_load(auth, roles, 1, NULL, dir, c->listen, &c->auth, err);
}

static int load_keys(const cJSON *root, void *out, struct dtx_err *err)
{
    struct agent_config *c = out;
    const char *conninfo = NULL;
    int rc = jsonx_only_keys(root, "", top_keys, err);

    if (rc == 0)
        rc = conf_name(root, "", "name", c->name, err);
    if (rc == 0)
        rc = conf_listen(root, "listen", c->listen, sizeof(c->listen), err);
    if (rc == 0)
        rc = jsonx_str(root, "", "conninfo", true, &conninfo, err);
    if (rc == 0)
        rc = conf_copy(c->conninfo, sizeof(c->conninfo), conninfo, "conninfo", err);
    if (rc == 0)
        rc = tls_config_load(root, c->path, &c->tls, err);
    if (rc == 0)
        rc = load_coordinators(root, c, err);
    if (rc == 0)
        rc = load_auth(root, c, err);
    if (rc == 0)
        rc = conf_log_level(root, c->log_level, err);
    if (rc == 0)
        rc = conf_log_format(root, c->log_format, err);
    if (rc == 0)
        rc = conf_u32s(root, c, u32_keys, sizeof(u32_keys) / sizeof(u32_keys[0]), err);
    if (rc == 0)
        rc = jsonx_bool(root, "", "allow_fsync_off", false, &c->allow_fsync_off, err);
    /* Open interactive branches each hold a connection; two stay for the rest (phase 2). */
    if (rc == 0 && c->max_open_branches == 0)
        c->max_open_branches = c->pool_size > 3 ? c->pool_size - 2 : 1;
    if (rc == 0 && c->max_open_branches >= c->pool_size && c->pool_size > 1)
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'max_open_branches' (%u) must be below 'pool_size' (%u): open "
                         "interactive branches would leave no connection for committing others",
                         c->max_open_branches, c->pool_size);
    return rc;
}

int agent_config_load(const char *path, struct agent_config *out, struct dtx_err *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    snprintf(out->path, sizeof(out->path), "%s", path);
    rc = conf_load(path, load_keys, out, err);
    if (rc < 0)
        agent_config_release(out);
    return rc;
}

void agent_config_release(struct agent_config *c)
{
    tls_config_release(&c->tls);
}

int agent_config_reload_auth(struct agent_config *c, struct dtx_err *err)
{
    struct agent_config *fresh = xcalloc(1, sizeof(*fresh));
    int rc = agent_config_load(c->path, fresh, err);

    if (rc == 0)
        rc = tls_config_can_take(&c->tls, &fresh->tls, err);
    if (rc == 0) {
        tls_config_take(&c->tls, &fresh->tls);
        c->peer_token = fresh->peer_token;
        c->auth = fresh->auth;
    }
    agent_config_release(fresh);
    free(fresh);
    return rc;
}
