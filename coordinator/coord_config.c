/*
 * coord_config.c - loading and validating the coordinator's config file.
 * Runs once at start-up, before any thread exists.
 */
#include "dtx/coord_config.h"
#include "dtx/conf.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const top_keys[] = {"node_id",
                                       "tls",
                                       "listen",
                                       "log_dir",
                                       "shards",
                                       "prepare_timeout_ms",
                                       "max_timeout_ms",
                                       "commit_wait_ms",
                                       "max_body_bytes",
                                       "max_ops",
                                       "max_params",
                                       "max_sql_bytes",
                                       "retention_s",
                                       "retention_max",
                                       "retention_max_bytes",
                                       "max_logged_results_bytes",
                                       "log_segment_bytes",
                                       "log_prealloc_bytes",
                                       "log_group_delay_us",
                                       "log_group_siblings",
                                       "http_conn_limit",
                                       "http_conn_limit_per_ip",
                                       "http_request_timeout_ms",
                                       "max_active_transactions",
                                       "interactive_timeout_ms",
                                       "log_level",
                                       "log_format",
                                       "auth",
                                       "decision_store",
                                       NULL};
static const char *const shard_keys[] = {"name", "url", "slots", NULL};
static const char *const store_keys[] = {"type", "conninfo", "lease_ms", "allow_fsync_off", NULL};

#define U32_KEY(k, d, lo, hi)                                                                      \
    {                                                                                              \
#k, offsetof(struct coord_config, k), d, lo, hi                                            \
    }

/* The shortest retention_s: below it a retry after a lost answer could miss its key. */
#define RETENTION_MIN_S 60

static const struct conf_u32 u32_keys[] = {
    U32_KEY(prepare_timeout_ms, 5000, 1, 3600000),
    U32_KEY(max_timeout_ms, 300000, 1, 86400000),
    U32_KEY(commit_wait_ms, 5000, 0, 3600000),
    U32_KEY(max_body_bytes, 1048576, 1024, 1073741824),
    U32_KEY(max_ops, 1000, 1, 100000),
    U32_KEY(max_params, 1000, 0, 65535),
    U32_KEY(max_sql_bytes, 65536, 16, 16777216),
    U32_KEY(retention_s, 3600, 0, 31536000),
    U32_KEY(retention_max, 100000, 0, 100000000),
    /* Retained answers go into every checkpoint, which must fit one log frame (256 MiB). */
    U32_KEY(retention_max_bytes, 67108864, 0, 134217728),
    U32_KEY(max_logged_results_bytes, 1048576, 1024, 67108864),
    U32_KEY(log_segment_bytes, 67108864, 4096, 2147483647),
    U32_KEY(log_prealloc_bytes, 1048576, 0, 67108864),
    U32_KEY(log_group_delay_us, 200, 0, 100000),
    U32_KEY(log_group_siblings, 4, 1, 100000),
    U32_KEY(http_conn_limit, 10000, 16, 1000000),
    U32_KEY(http_conn_limit_per_ip, 1000, 0, 1000000),
    U32_KEY(http_request_timeout_ms, 30000, 100, 3600000),
    U32_KEY(max_active_transactions, 10000, 1, 10000000),
    U32_KEY(interactive_timeout_ms, 30000, 1, 86400000),
};

static int load_slots(const cJSON *s, const char *where, struct shard_config *sh,
                      struct dtx_err *err)
{
    const cJSON *slots = NULL;
    const cJSON *lo, *hi;
    int rc = jsonx_array(s, where, "slots", true, &slots, err);

    if (rc < 0)
        return rc;
    lo = cJSON_GetArrayItem(slots, 0);
    hi = cJSON_GetArrayItem(slots, 1);
    if (cJSON_GetArraySize(slots) != 2 || !jsonx_is_safe_int(lo) || !jsonx_is_safe_int(hi) ||
        lo->valuedouble < 0 || hi->valuedouble >= ROUTE_SLOTS)
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s.slots' must be [first, last] with 0 <= first <= "
                           "last <= %d",
                           where, ROUTE_SLOTS - 1);
    sh->slots.lo = (uint32_t)lo->valuedouble;
    sh->slots.hi = (uint32_t)hi->valuedouble;
    return 0;
}

static int load_shard(const cJSON *s, size_t i, struct coord_config *c, bool *explicit_slots,
                      struct dtx_err *err)
{
    struct shard_config *sh = &c->shards[i];
    const char *name = NULL, *url = NULL;
    char where[32], url_where[40];
    int rc;

    snprintf(where, sizeof(where), "shards[%zu]", i);
    if (!cJSON_IsObject(s))
        return dtx_err_set(err, DTX_EINVAL, "'%s' must be an object", where);
    rc = jsonx_only_keys(s, where, shard_keys, err);
    if (rc == 0)
        rc = jsonx_str(s, where, "name", true, &name, err);
    if (rc == 0)
        rc = jsonx_str(s, where, "url", true, &url, err);
    if (rc < 0)
        return rc;
    if (!gid_name_ok(name))
        return dtx_err_set(err, DTX_EINVAL, "'%s.name' must be 1-%d of [A-Za-z0-9_-]", where,
                           DTX_NAME_MAX);
    if (coord_config_shard(c, name) >= 0)
        return dtx_err_set(err, DTX_EINVAL, "'%s.name': shard '%s' is listed twice", where, name);
    strcpy(sh->name, name);
    rc = conf_copy(sh->url, sizeof(sh->url), url, "url", err);
    if (rc == 0)
        rc = addr_parse_url(url, &sh->addr, err);
    if (rc < 0)
        return dtx_err_prefix(err, "'%s.url'", where);
    snprintf(url_where, sizeof(url_where), "%s.url", where);
    rc = tls_check_url(&c->tls, &sh->addr, url_where, err);
    if (rc < 0)
        return rc;
    *explicit_slots = cJSON_GetObjectItemCaseSensitive(s, "slots") != NULL;
    return *explicit_slots ? load_slots(s, where, sh, err) : 0;
}

static int load_shards(const cJSON *root, struct coord_config *c, struct dtx_err *err)
{
    const cJSON *arr = NULL;
    struct route_range ranges[CONF_MAX_SHARDS];
    size_t n, explicit_count = 0;
    int rc = jsonx_array(root, "", "shards", true, &arr, err);

    if (rc < 0)
        return rc;
    n = (size_t)cJSON_GetArraySize(arr);
    if (n == 0 || n > CONF_MAX_SHARDS)
        return dtx_err_set(err, DTX_EINVAL, "'shards' must list 1 to %d shards", CONF_MAX_SHARDS);
    c->shards = xcalloc(n, sizeof(*c->shards));
    for (size_t i = 0; i < n; i++) {
        bool explicit_slots = false;

        rc = load_shard(cJSON_GetArrayItem(arr, (int)i), i, c, &explicit_slots, err);
        if (rc < 0)
            return rc;
        c->nshards++;
        explicit_count += explicit_slots;
    }
    if (explicit_count != 0 && explicit_count != n)
        return dtx_err_set(err, DTX_EINVAL,
                           "'shards': either every shard has \"slots\" or none has");
    for (size_t i = 0; i < n; i++) {
        if (explicit_count == 0)
            c->shards[i].slots = route_default_range(i, n);
        ranges[i] = c->shards[i].slots;
    }
    rc = route_build(&c->route, ranges, n, err);
    if (rc < 0)
        return dtx_err_prefix(err, "'shards'");
    return 0;
}

/* auth{...}: the three roles' tokens, the named clients and the rules of auth.h. */
static int load_auth(const cJSON *root, struct coord_config *c, struct dtx_err *err)
{
    const struct auth_role roles[] = {
        {"client", &c->client_token}, {"admin", &c->admin_token}, {"peer", &c->peer_token}};
    const cJSON *auth = NULL;
    char dir[4096];
    int rc = jsonx_object(root, "", "auth", false, &auth, err);

    if (rc < 0)
        return rc;
    auth_config_dir(c->path, dir, sizeof(dir));
    return auth_load(auth, roles, sizeof(roles) / sizeof(roles[0]), &c->clients, dir, c->listen,
                     &c->auth, err);
}

static int load_names(const cJSON *root, struct coord_config *c, struct dtx_err *err)
{
    const char *dir = NULL;
    int rc = jsonx_only_keys(root, "", top_keys, err);

    if (rc == 0)
        rc = conf_name(root, "", "node_id", c->node_id, err);
    if (rc == 0)
        rc = conf_listen(root, "listen", c->listen, sizeof(c->listen), err);
    if (rc == 0)
        rc = jsonx_str(root, "", "log_dir", c->store_type == COORD_STORE_FILE, &dir, err);
    if (rc == 0 && dir && !*dir)
        rc = dtx_err_set(err, DTX_EINVAL, "'log_dir' must not be empty");
    if (rc == 0 && dir)
        rc = conf_copy(c->log_dir, sizeof(c->log_dir), dir, "log_dir", err);
    if (rc == 0)
        rc = conf_log_level(root, c->log_level, err);
    if (rc == 0)
        rc = conf_log_format(root, c->log_format, err);
    return rc;
}

/*
 * "decision_store": {"type": "file"} (the default: the log in log_dir) or
 * {"type": "postgres", "conninfo": "...", "lease_ms": N, "allow_fsync_off": false}.
 */
static int load_store(const cJSON *root, struct coord_config *c, struct dtx_err *err)
{
    const cJSON *st = NULL;
    const char *type = NULL, *conninfo = NULL;
    int64_t lease = 5000;
    int rc = jsonx_object(root, "", "decision_store", false, &st, err);

    c->store_type = COORD_STORE_FILE;
    c->store_lease_ms = (uint32_t)lease;
    if (rc < 0 || !st)
        return rc;
    rc = jsonx_only_keys(st, "decision_store", store_keys, err);
    if (rc == 0)
        rc = jsonx_str(st, "decision_store", "type", true, &type, err);
    if (rc < 0)
        return rc;
    if (strcmp(type, "file") == 0) {
        if (cJSON_GetObjectItemCaseSensitive(st, "conninfo") ||
            cJSON_GetObjectItemCaseSensitive(st, "lease_ms") ||
            cJSON_GetObjectItemCaseSensitive(st, "allow_fsync_off"))
            return dtx_err_set(err, DTX_EINVAL,
                               "'decision_store': \"conninfo\", \"lease_ms\" and "
                               "\"allow_fsync_off\" belong to the \"postgres\" store; the "
                               "\"file\" store is log_dir");
        return 0;
    }
    if (strcmp(type, "postgres") != 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "'decision_store.type' must be \"file\" or \"postgres\", not \"%s\"",
                           type);
    c->store_type = COORD_STORE_POSTGRES;
    rc = jsonx_str(st, "decision_store", "conninfo", true, &conninfo, err);
    if (rc == 0)
        rc = conf_copy(c->store_conninfo, sizeof(c->store_conninfo), conninfo,
                       "decision_store.conninfo", err);
    if (rc == 0)
        rc = jsonx_int(st, "decision_store", "lease_ms", false, 1000, 600000, &lease, err);
    if (rc == 0)
        c->store_lease_ms = (uint32_t)lease;
    if (rc == 0)
        rc = jsonx_bool(st, "decision_store", "allow_fsync_off", false, &c->store_allow_fsync_off,
                        err);
    return rc;
}

static int load_all(const cJSON *root, void *out, struct dtx_err *err)
{
    struct coord_config *c = out;
    int rc = load_store(root, c, err);

    if (rc == 0)
        rc = load_names(root, c, err);

    if (rc == 0)
        rc = conf_u32s(root, c, u32_keys, sizeof(u32_keys) / sizeof(u32_keys[0]), err);
    if (rc == 0 && c->prepare_timeout_ms > c->max_timeout_ms)
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'prepare_timeout_ms' (%u) is above 'max_timeout_ms' (%u): the default "
                         "would exceed the most a request may ask for",
                         c->prepare_timeout_ms, c->max_timeout_ms);
    if (rc == 0 && c->interactive_timeout_ms > c->max_timeout_ms)
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'interactive_timeout_ms' (%u) is above 'max_timeout_ms' (%u): the "
                         "default would exceed the most a request may ask for",
                         c->interactive_timeout_ms, c->max_timeout_ms);
    if (rc == 0 && c->retention_s < RETENTION_MIN_S)
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'retention_s' must be at least %d: finished transactions and their "
                         "idempotency keys are kept this long, and a client's retry after a lost "
                         "answer must still find its key (with less it would run again)",
                         RETENTION_MIN_S);
    if (rc == 0)
        rc = tls_config_load(root, c->path, &c->tls, err);
    if (rc == 0)
        rc = load_shards(root, c, err);
    if (rc == 0)
        rc = load_auth(root, c, err);
    return rc;
}

int coord_config_load(const char *path, struct coord_config *out, struct dtx_err *err)
{
    int rc;

    memset(out, 0, sizeof(*out));
    snprintf(out->path, sizeof(out->path), "%s", path);
    rc = conf_load(path, load_all, out, err);
    if (rc < 0)
        coord_config_release(out);
    return rc;
}

void coord_config_release(struct coord_config *c)
{
    tls_config_release(&c->tls);
    auth_clients_release(&c->clients);
    free(c->shards);
    c->shards = NULL;
    c->nshards = 0;
}

int coord_config_reload_auth(struct coord_config *c, struct dtx_err *err)
{
    struct coord_config *fresh = xcalloc(1, sizeof(*fresh));
    int rc = coord_config_load(c->path, fresh, err);

    if (rc == 0)
        rc = tls_config_can_take(&c->tls, &fresh->tls, err);
    if (rc == 0) {
        tls_config_take(&c->tls, &fresh->tls);
        c->client_token = fresh->client_token;
        c->admin_token = fresh->admin_token;
        c->peer_token = fresh->peer_token;
        auth_clients_release(&c->clients);
        c->clients = fresh->clients;
        fresh->clients = (struct auth_clients){0};
        c->auth = fresh->auth;
    }
    coord_config_release(fresh);
    free(fresh);
    return rc;
}

int coord_config_shard(const struct coord_config *c, const char *name)
{
    for (size_t i = 0; i < c->nshards; i++) {
        if (strcmp(c->shards[i].name, name) == 0)
            return (int)i;
    }
    return -1;
}
