/*
 * agent_config.c - loading and validating the participant's config file.
 * Runs once at start-up.
 */
#include "dtx/agent_config.h"
#include "dtx/jsonx.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>

static const char *const top_keys[] = {"name",
                                       "listen",
                                       "conninfo",
                                       "coordinator_url",
                                       "coordinators",
                                       "auth",
                                       "pool_size",
                                       "startup_wait_s",
                                       "max_body_bytes",
                                       "http_conn_limit",
                                       "log_level",
                                       "recovery_interval_ms",
                                       "recovery_min_age_ms",
                                       "max_open_branches",
                                       "open_wait_ms",
                                       "prepared_headroom",
                                       "allow_fsync_off",
                                       "max_result_bytes",
                                       "max_result_rows",
                                       "termination_timeout_ms",
                                       NULL};
static const char *const auth_keys[] = {"peer_token", NULL};

#define U32_KEY(k, d, lo, hi)                                                                      \
    {                                                                                              \
#k, offsetof(struct agent_config, k), d, lo, hi                                            \
    }

static const struct conf_u32 u32_keys[] = {
    U32_KEY(pool_size, 16, 1, 1000),
    U32_KEY(startup_wait_s, 30, 0, 3600),
    U32_KEY(max_body_bytes, 1048576, 1024, 1073741824),
    U32_KEY(http_conn_limit, 1000, 16, 100000),
    U32_KEY(recovery_interval_ms, 2000, 10, 3600000),
    U32_KEY(recovery_min_age_ms, 1000, 0, 3600000),
    U32_KEY(max_open_branches, 0, 0, 1000),
    U32_KEY(open_wait_ms, 500, 0, 60000),
    U32_KEY(prepared_headroom, 2, 0, 100000),
    U32_KEY(termination_timeout_ms, 5000, 100, 3600000),
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

static int load_keys(const cJSON *root, void *out, struct dtx_err *err)
{
    struct agent_config *c = out;
    const char *conninfo = NULL;
    const cJSON *auth = NULL;
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
        rc = load_coordinators(root, c, err);
    if (rc == 0)
        rc = jsonx_object(root, "", "auth", false, &auth, err);
    if (rc == 0 && auth)
        rc = jsonx_only_keys(auth, "auth", auth_keys, err);
    if (rc == 0 && auth)
        rc = conf_token(auth, "auth", "peer_token", c->peer_token, err);
    if (rc == 0)
        rc = conf_log_level(root, c->log_level, err);
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
    memset(out, 0, sizeof(*out));
    snprintf(out->path, sizeof(out->path), "%s", path);
    return conf_load(path, load_keys, out, err);
}
