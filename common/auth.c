/*
 * auth.c - bearer tokens: loading them (config key, file, environment),
 * the daemons' auth rules, and the constant-time comparison (auth.h).
 *
 * Stateless: every function works on what it is given. Loading runs at
 * start-up and on SIGHUP (daemon.c), on the event-loop thread; matching
 * runs on the event-loop thread for every request that needs a token.
 */
#include "dtx/auth.h"
#include "dtx/addr.h"
#include "dtx/jsonx.h"
#include "dtx/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <nettle/memops.h>
#include <nettle/sha2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool auth_token_is_set(const struct auth_token *t)
{
    return t->value[0] != '\0';
}

static void sha256(const char *s, size_t len, unsigned char out[AUTH_DIGEST_LEN])
{
    struct sha256_ctx ctx;

    sha256_init(&ctx);
    sha256_update(&ctx, len, (const uint8_t *)s);
    sha256_digest(&ctx, AUTH_DIGEST_LEN, out);
}

void auth_token_set(struct auth_token *t, const char *value, const char *source)
{
    snprintf(t->value, sizeof(t->value), "%s", value);
    snprintf(t->source, sizeof(t->source), "%s", *value ? source : "");
    sha256(t->value, strlen(t->value), t->digest);
}

/* Whether t's token is the one whose digest is d (constant time; false when t is unset). */
static bool digest_matches(const struct auth_token *t, const unsigned char d[AUTH_DIGEST_LEN])
{
    bool set = auth_token_is_set(t);
    bool same = memeql_sec(d, t->digest, AUTH_DIGEST_LEN) != 0;

    return set && same;
}

bool auth_token_matches(const struct auth_token *t, const char *presented, size_t len)
{
    unsigned char d[AUTH_DIGEST_LEN];

    sha256(presented, len, d);
    return digest_matches(t, d);
}

int auth_token_check(const char *s, size_t len, const char *what, struct dtx_err *err)
{
    if (len == 0)
        return dtx_err_set(err, DTX_EINVAL, "%s is empty", what);
    if (len >= AUTH_TOKEN_MAX)
        return dtx_err_set(err, DTX_EINVAL, "%s is longer than %d characters", what,
                           AUTH_TOKEN_MAX - 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];

        if (c <= 0x20 || c >= 0x7f)
            return dtx_err_set(err, DTX_EINVAL,
                               "%s holds a space, a control or a non-ASCII character at "
                               "position %zu: a token is 1 to %d visible ASCII characters",
                               what, i + 1, AUTH_TOKEN_MAX - 1);
    }
    return 0;
}

/* Reads at most AUTH_TOKEN_MAX + 2 bytes of fd into buf; returns the length or -errno. */
static ssize_t read_small(int fd, char *buf, size_t cap)
{
    size_t n = 0;

    while (n < cap) {
        ssize_t r = read(fd, buf + n, cap - n);

        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -errno;
        if (r == 0)
            break;
        n += (size_t)r;
    }
    return (ssize_t)n;
}

int auth_token_read_file(const char *path, const char *what, struct auth_token *out,
                         struct dtx_err *err)
{
    char buf[AUTH_TOKEN_MAX + 3], src[AUTH_SOURCE_MAX];
    struct stat st;
    ssize_t n;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    int rc;

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "%s: could not open '%s': %s", what, path,
                           strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return dtx_err_set(err, DTX_EINVAL, "%s: '%s' is not a regular file", what, path);
    }
    if (st.st_mode & S_IROTH) {
        close(fd);
        return dtx_err_set(err, DTX_EINVAL,
                           "%s: '%s' is readable by every user (mode %04o): make it readable by "
                           "its owner and group only (chmod o-rwx)",
                           what, path, (unsigned)(st.st_mode & 07777));
    }
    n = read_small(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n < 0)
        return dtx_err_set(err, DTX_EIO, "%s: could not read '%s': %s", what, path,
                           strerror((int)-n));
    if (n > 0 && buf[n - 1] == '\n')
        n--;
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    snprintf(src, sizeof(src), "%s ('%s')", what, path);
    rc = auth_token_check(buf, (size_t)n, src, err);
    if (rc < 0)
        return rc;
    auth_token_set(out, buf, src);
    return 0;
}

void auth_config_dir(const char *config_path, char *dst, size_t n)
{
    const char *slash = strrchr(config_path, '/');

    if (!slash)
        snprintf(dst, n, ".");
    else if (slash == config_path)
        snprintf(dst, n, "/");
    else
        snprintf(dst, n, "%.*s", (int)(slash - config_path), config_path);
}

/*
 * A token from obj (the config's object at where, "auth" or
 * "auth.clients[2]"): its key "<prefix>token" or "<prefix>token_file"; whose
 * says whose it is ("client", "client 'orders'"). Unset when neither.
 */
static int load_token(const cJSON *obj, const char *where, const char *prefix, const char *whose,
                      const char *config_dir, struct auth_token *out, struct dtx_err *err)
{
    char key[64], fkey[64], what[160], path[4096];
    const char *value = NULL, *file = NULL;
    int rc;

    snprintf(key, sizeof(key), "%stoken", prefix);
    snprintf(fkey, sizeof(fkey), "%stoken_file", prefix);
    rc = jsonx_str(obj, where, key, false, &value, err);
    if (rc == 0)
        rc = jsonx_str(obj, where, fkey, false, &file, err);
    if (rc < 0)
        return rc;
    if (value && file)
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s.%s' and '%s.%s' both give the %s token: give one of them", where,
                           key, where, fkey, whose);
    if (value) {
        snprintf(what, sizeof(what), "'%s.%s'", where, key);
        rc = auth_token_check(value, strlen(value), what, err);
        if (rc == 0)
            auth_token_set(out, value, what);
        return rc;
    }
    if (!file)
        return 0;
    if (!*file)
        return dtx_err_set(err, DTX_EINVAL, "'%s.%s' is empty", where, fkey);
    snprintf(what, sizeof(what), "'%s.%s'", where, fkey);
    if (file[0] == '/')
        snprintf(path, sizeof(path), "%s", file);
    else
        snprintf(path, sizeof(path), "%s/%s", config_dir, file);
    return auth_token_read_file(path, what, out, err);
}

/* The token of one role from the config: "<role>_token" or "<role>_token_file". */
static int load_from_config(const cJSON *auth, const char *role, const char *config_dir,
                            struct auth_token *out, struct dtx_err *err)
{
    char prefix[64];

    snprintf(prefix, sizeof(prefix), "%s_", role);
    return load_token(auth, "auth", prefix, role, config_dir, out, err);
}

void auth_clients_release(struct auth_clients *c)
{
    free(c->v);
    c->v = NULL;
    c->n = 0;
}

const struct auth_client *auth_clients_match(const struct auth_clients *c, const char *presented,
                                             size_t len)
{
    const struct auth_client *found = NULL;
    unsigned char d[AUTH_DIGEST_LEN];

    if (c->n == 0)
        return NULL;           /* no hash at all on a coordinator without named clients */
    sha256(presented, len, d); /* once, not once per client */
    for (size_t i = 0; i < c->n; i++) {
        if (digest_matches(&c->v[i].token, d))
            found = &c->v[i];
    }
    return found;
}

const struct auth_client *auth_clients_find(const struct auth_clients *c, const char *name)
{
    for (size_t i = 0; name && i < c->n; i++) {
        if (strcmp(c->v[i].name, name) == 0)
            return &c->v[i];
    }
    return NULL;
}

static bool client_name_ok(const char *s)
{
    size_t n = strlen(s);

    if (n == 0 || n > AUTH_CLIENT_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return false;
    }
    return true;
}

/* One element of "auth.clients" (at where) into *out, its name distinct from the earlier. */
static int load_client(const cJSON *o, const char *where, const char *config_dir,
                       const struct auth_client *earlier, size_t nearlier, struct auth_client *out,
                       struct dtx_err *err)
{
    static const char *const keys[] = {
        "name", "token", "token_file", "max_active_transactions", "max_retained_keys", NULL};
    const char *name = NULL;
    int64_t max_active = 0, max_keys = 0;
    char whose[AUTH_CLIENT_NAME_MAX + 32];
    int rc;

    if (!cJSON_IsObject(o))
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s' must be an object: {\"name\": ..., \"token\" or "
                           "\"token_file\": ...}",
                           where);
    rc = jsonx_only_keys(o, where, keys, err);
    if (rc == 0)
        rc = jsonx_str(o, where, "name", true, &name, err);
    if (rc == 0)
        rc = jsonx_int(o, where, "max_active_transactions", false, 1, 100000000, &max_active, err);
    if (rc == 0)
        rc = jsonx_int(o, where, "max_retained_keys", false, 1, 100000000, &max_keys, err);
    if (rc < 0)
        return rc;
    out->max_active = (uint32_t)max_active;
    out->max_keys = (uint32_t)max_keys;
    if (!client_name_ok(name))
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s.name' must be 1 to %d letters, digits, '.', '_' or '-'", where,
                           AUTH_CLIENT_NAME_MAX);
    for (size_t i = 0; i < nearlier; i++) {
        if (strcmp(earlier[i].name, name) == 0)
            return dtx_err_set(err, DTX_EINVAL, "'%s.name': a client '%s' comes earlier", where,
                               name);
    }
    snprintf(out->name, sizeof(out->name), "%s", name);
    snprintf(whose, sizeof(whose), "client '%s'", name);
    auth_token_set(&out->token, "", "");
    rc = load_token(o, where, "", whose, config_dir, &out->token, err);
    if (rc == 0 && !auth_token_is_set(&out->token))
        rc =
            dtx_err_set(err, DTX_EINVAL, "'%s' gives no token: set 'token' or 'token_file'", where);
    return rc;
}

/*
 * "auth.client_defaults": the limits of every named client that sets none
 * of its own (0: none), so that no client can take all the room unless the
 * operator says so. Only beside "auth.clients": it would limit nobody.
 */
static int load_client_defaults(const cJSON *auth, bool have_clients, int64_t *max_active,
                                int64_t *max_keys, struct dtx_err *err)
{
    static const char *const keys[] = {"max_active_transactions", "max_retained_keys", NULL};
    const cJSON *d = NULL;
    int rc = jsonx_object(auth, "auth", "client_defaults", false, &d, err);

    *max_active = *max_keys = 0;
    if (rc < 0 || !d)
        return rc;
    if (!have_clients)
        return dtx_err_set(err, DTX_EINVAL,
                           "'auth.client_defaults' without 'auth.clients' would limit nobody: "
                           "name the clients, or leave it out");
    rc = jsonx_only_keys(d, "auth.client_defaults", keys, err);
    if (rc == 0)
        rc = jsonx_int(d, "auth.client_defaults", "max_active_transactions", false, 1, 100000000,
                       max_active, err);
    if (rc == 0)
        rc = jsonx_int(d, "auth.client_defaults", "max_retained_keys", false, 1, 100000000,
                       max_keys, err);
    return rc;
}

/* "auth.clients": every named client, or none; and their defaults. */
static int load_clients(const cJSON *auth, const char *config_dir, struct auth_clients *out,
                        struct dtx_err *err)
{
    const cJSON *arr = NULL, *o;
    int64_t max_active, max_keys;
    char where[64];
    size_t i = 0;
    int rc = auth ? jsonx_array(auth, "auth", "clients", false, &arr, err) : 0;

    if (rc == 0 && auth)
        rc = load_client_defaults(auth, arr != NULL, &max_active, &max_keys, err);
    if (rc < 0 || !arr)
        return rc;
    if (cJSON_GetArraySize(arr) == 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "'auth.clients' is empty: name at least one client, or leave it out");
    out->v = xcalloc((size_t)cJSON_GetArraySize(arr), sizeof(*out->v));
    cJSON_ArrayForEach(o, arr)
    {
        snprintf(where, sizeof(where), "auth.clients[%zu]", i);
        rc = load_client(o, where, config_dir, out->v, i, &out->v[i], err);
        if (rc < 0)
            return rc;
        if (!out->v[i].max_active)
            out->v[i].max_active = (uint32_t)max_active;
        if (!out->v[i].max_keys)
            out->v[i].max_keys = (uint32_t)max_keys;
        out->n = ++i;
    }
    return 0;
}

/* The environment's DTX_<ROLE>_TOKEN: taken when the config gives none, else it must agree. */
static int load_from_env(const char *role, struct auth_token *out, struct dtx_err *err)
{
    char var[64], what[96];
    const char *v;
    int rc;

    snprintf(var, sizeof(var), "DTX_%s_TOKEN", role);
    for (char *p = var; *p; p++)
        *p = (char)toupper((unsigned char)*p);
    v = getenv(var);
    if (!v)
        return 0;
    snprintf(what, sizeof(what), "the environment's %s", var);
    rc = auth_token_check(v, strlen(v), what, err);
    if (rc < 0)
        return rc;
    if (!auth_token_is_set(out)) {
        auth_token_set(out, v, what);
        return 0;
    }
    if (strcmp(out->value, v) != 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "%s and %s give two different %s tokens: give it in one place "
                           "(or the same token in both)",
                           what, out->source, role);
    return 0;
}

static bool is_role_key(const char *k, const struct auth_role *roles, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(roles[i].name);

        if (strncmp(k, roles[i].name, len) == 0 &&
            (strcmp(k + len, "_token") == 0 || strcmp(k + len, "_token_file") == 0))
            return true;
    }
    return false;
}

static int check_keys(const cJSON *auth, const struct auth_role *roles, size_t n,
                      bool takes_clients, struct dtx_err *err)
{
    const cJSON *item;
    char names[256] = "";
    size_t len = 0;

    if (!auth)
        return 0;
    if (!cJSON_IsObject(auth))
        return dtx_err_set(err, DTX_EINVAL, "'auth' must be an object");
    cJSON_ArrayForEach(item, auth)
    {
        if (strcmp(item->string, "allow_unauthenticated") == 0 ||
            (takes_clients && (strcmp(item->string, "clients") == 0 ||
                               strcmp(item->string, "client_defaults") == 0)) ||
            is_role_key(item->string, roles, n))
            continue;
        for (size_t i = 0; i < n && len < sizeof(names); i++)
            len += (size_t)snprintf(names + len, sizeof(names) - len, "%s%s_token[_file]",
                                    i ? ", " : "", roles[i].name);
        return dtx_err_set(err, DTX_EINVAL,
                           "'auth.%.100s' is not a known key (known: %s, %sallow_unauthenticated)",
                           item->string, names, takes_clients ? "clients, client_defaults, " : "");
    }
    return 0;
}

/* Whether role has a token: its own, or for "client" named clients. */
static bool role_set(const struct auth_role *role, const struct auth_clients *clients)
{
    return auth_token_is_set(role->token) ||
           (clients && clients->n > 0 && strcmp(role->name, "client") == 0);
}

/* "'auth.client_token' and 'auth.peer_token'": the roles whose token is (not) set. */
static size_t list_roles(const struct auth_role *roles, size_t n,
                         const struct auth_clients *clients, bool set, char *dst, size_t cap)
{
    size_t count = 0, len = 0;

    dst[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (role_set(&roles[i], clients) != set)
            continue;
        count++;
        if (!auth_token_is_set(roles[i].token) && set) /* named clients stand in for it */
            len += (size_t)snprintf(dst + len, cap > len ? cap - len : 0, "%s'auth.clients'",
                                    len == 0 ? "" : ", ");
        else
            len += (size_t)snprintf(dst + len, cap > len ? cap - len : 0, "%s'auth.%s_token'",
                                    len == 0 ? "" : ", ", roles[i].name);
    }
    return count;
}

static bool is_loopback(const char *listen)
{
    struct addr a;

    return addr_parse(listen, &a, NULL) == 0 && addr_is_loopback(&a);
}

/* No two tokens the same: the roles' (when set) and the named clients'. */
static int check_distinct(const struct auth_role *roles, size_t n,
                          const struct auth_clients *clients, struct dtx_err *err)
{
    size_t nc = clients ? clients->n : 0;

    for (size_t i = 0; i < n; i++) {
        for (size_t j = i + 1; j < n && auth_token_is_set(roles[i].token); j++) {
            if (strcmp(roles[i].token->value, roles[j].token->value) == 0)
                return dtx_err_set(err, DTX_EINVAL,
                                   "the %s token (%s) and the %s token (%s) are the same: "
                                   "whoever holds one could act as the other; give each role "
                                   "its own",
                                   roles[i].name, roles[i].token->source, roles[j].name,
                                   roles[j].token->source);
        }
        for (size_t j = 0; j < nc; j++) {
            if (strcmp(roles[i].token->value, clients->v[j].token.value) == 0)
                return dtx_err_set(err, DTX_EINVAL,
                                   "the %s token (%s) and the token of client '%s' (%s) are "
                                   "the same: give each its own",
                                   roles[i].name, roles[i].token->source, clients->v[j].name,
                                   clients->v[j].token.source);
        }
    }
    for (size_t i = 0; i < nc; i++) {
        for (size_t j = i + 1; j < nc; j++) {
            if (strcmp(clients->v[i].token.value, clients->v[j].token.value) == 0)
                return dtx_err_set(err, DTX_EINVAL,
                                   "the clients '%s' (%s) and '%s' (%s) have the same token: "
                                   "each would see the other's transactions; give each its own",
                                   clients->v[i].name, clients->v[i].token.source,
                                   clients->v[j].name, clients->v[j].token.source);
        }
    }
    return 0;
}

/* The rules once every token is loaded (auth.h). */
static int check_rules(const struct auth_role *roles, size_t n, const struct auth_clients *clients,
                       const char *listen, const struct auth_policy *policy, struct dtx_err *err)
{
    char missing[256], set[256];
    size_t nmissing = list_roles(roles, n, clients, false, missing, sizeof(missing));
    size_t nset = list_roles(roles, n, clients, true, set, sizeof(set));
    int rc;

    if (nset > 0 && nmissing > 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "%s %s not set: once any token is set (here %s), every role needs its "
                           "own, or a role would be open to anyone (each may also come from "
                           "'auth.<role>_token_file' or DTX_<ROLE>_TOKEN)",
                           missing, nmissing == 1 ? "is" : "are", set);
    rc = check_distinct(roles, n, clients, err);
    if (rc < 0)
        return rc;
    if (nset > 0 && policy->allow_unauthenticated)
        return dtx_err_set(err, DTX_EINVAL,
                           "'auth.allow_unauthenticated' is true but tokens are set: remove one "
                           "or the other");
    if (nset == 0 && !policy->allow_unauthenticated && !is_loopback(listen))
        return dtx_err_set(err, DTX_EINVAL,
                           "'listen' %s is not a loopback address and no token is set: set %s "
                           "(or the '_file' keys, or DTX_<ROLE>_TOKEN), or set "
                           "'auth.allow_unauthenticated' to true to serve it without "
                           "authentication",
                           listen, missing);
    return 0;
}

int auth_load(const cJSON *auth, const struct auth_role *roles, size_t nroles,
              struct auth_clients *clients, const char *config_dir, const char *listen,
              struct auth_policy *policy, struct dtx_err *err)
{
    int rc = check_keys(auth, roles, nroles, clients != NULL, err);

    policy->allow_unauthenticated = false;
    for (size_t i = 0; i < nroles; i++)
        auth_token_set(roles[i].token, "", "");
    if (clients) {
        auth_clients_release(clients);
        if (rc == 0)
            rc = load_clients(auth, config_dir, clients, err);
    }
    if (rc == 0 && auth)
        rc = jsonx_bool(auth, "auth", "allow_unauthenticated", false,
                        &policy->allow_unauthenticated, err);
    for (size_t i = 0; i < nroles && rc == 0; i++) {
        rc = auth ? load_from_config(auth, roles[i].name, config_dir, roles[i].token, err) : 0;
        if (rc == 0)
            rc = load_from_env(roles[i].name, roles[i].token, err);
    }
    if (rc == 0)
        rc = check_rules(roles, nroles, clients, listen, policy, err);
    return rc;
}
