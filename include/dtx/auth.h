/*
 * auth.h - bearer tokens: where each role's token comes from, the rules a
 * daemon's "auth" config must obey, and comparing a presented token.
 *
 * A role's token ("client", "admin", "peer") may come from the config key
 * "auth.<role>_token", from the file named by "auth.<role>_token_file", or
 * from the environment variable DTX_<ROLE>_TOKEN. The two config keys
 * exclude each other; the environment may repeat what the config says but
 * not contradict it. A token is 1 to 255 visible ASCII characters (no
 * spaces, no control characters: it goes into HTTP headers as it is).
 *
 * Comparison never looks at the token itself: both sides are hashed
 * (SHA-256, nettle) and the two 32-byte digests are compared in constant
 * time (nettle's memeql_sec), so how long a check takes says nothing about
 * the configured token's content or length, nor about how much of it a
 * guess got right.
 *
 * Stateless; a struct auth_token belongs to its daemon's config.
 */
#ifndef DTX_AUTH_H
#define DTX_AUTH_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/err.h"

#define AUTH_TOKEN_MAX  256 /* bytes, with the terminating NUL */
#define AUTH_DIGEST_LEN 32  /* SHA-256 */
#define AUTH_SOURCE_MAX 600

/* One role's token. Unset: value is "". */
struct auth_token {
    char value[AUTH_TOKEN_MAX];
    unsigned char digest[AUTH_DIGEST_LEN]; /* SHA-256 of value */
    char source[AUTH_SOURCE_MAX];          /* where it came from, for messages */
};

/* The roles a daemon has, and where their tokens go. */
struct auth_role {
    const char *name; /* "client", "admin", "peer" */
    struct auth_token *token;
};

/*
 * Named clients ("auth.clients", the coordinator's): each its own token,
 * so that the coordinator knows which client a request comes from, and one
 * client cannot see or act on another's transactions nor meet its
 * idempotency keys. A name is 1 to AUTH_CLIENT_NAME_MAX letters, digits,
 * '.', '_' or '-'.
 */
#define AUTH_CLIENT_NAME_MAX 64

struct auth_client {
    char name[AUTH_CLIENT_NAME_MAX + 1];
    struct auth_token token;
    /* its own limits, else "auth.client_defaults"'s (0: none but the coordinator's) */
    uint32_t max_active; /* "max_active_transactions": in flight at once */
    uint32_t max_keys;   /* "max_retained_keys": idempotency keys held */
};

struct auth_clients {
    struct auth_client *v; /* malloc'd; NULL when n is 0 */
    size_t n;
};

void auth_clients_release(struct auth_clients *c);

/*
 * The client whose token the len bytes at presented are, or NULL. Compares
 * against every client, in constant time each, whichever matches.
 */
const struct auth_client *auth_clients_match(const struct auth_clients *c, const char *presented,
                                             size_t len);
/* The client called name, or NULL. */
const struct auth_client *auth_clients_find(const struct auth_clients *c, const char *name);

/* What a daemon's "auth" object says besides its tokens. */
struct auth_policy {
    bool allow_unauthenticated; /* serve on a non-loopback address without tokens */
};

bool auth_token_is_set(const struct auth_token *t);

/*
 * Sets t to value (not checked: see auth_token_check) and its digest;
 * source says where it came from ("'auth.peer_token'"). "" unsets t.
 */
void auth_token_set(struct auth_token *t, const char *value, const char *source);

/*
 * True when the len bytes at presented are t's token; always false when t
 * is unset. Takes the same time whatever the configured token is and
 * however close presented comes to it.
 */
bool auth_token_matches(const struct auth_token *t, const char *presented, size_t len);

/*
 * 0 when s (len bytes) is a valid token: 1 to AUTH_TOKEN_MAX - 1 visible
 * ASCII characters. Otherwise DTX_EINVAL with a message naming what (e.g.
 * "'auth.peer_token'"), never quoting the token.
 */
int auth_token_check(const char *s, size_t len, const char *what, struct dtx_err *err);

/*
 * Reads a token file: one token, one trailing newline ("\n" or "\r\n")
 * allowed and dropped. Refused with DTX_EINVAL or DTX_EIO and a message
 * naming what and the path: unreadable, not a regular file, readable by
 * every user (mode o+r), empty, or not a valid token. On error *out is not
 * modified.
 */
int auth_token_read_file(const char *path, const char *what, struct auth_token *out,
                         struct dtx_err *err);

/*
 * Loads a daemon's tokens and checks its auth rules:
 *  - each role's token from "<role>_token", "<role>_token_file" (a
 *    relative path is relative to config_dir) or DTX_<ROLE>_TOKEN;
 *  - with clients (a daemon that takes named clients; NULL otherwise),
 *    "clients": [{"name", "token" or "token_file"}, ...], names distinct;
 *    they stand in for the "client" role's token, which may then be unset;
 *  - "auth" holds no other key than those and "allow_unauthenticated";
 *  - once any token is set, every role's is, and no two are equal (named
 *    clients' included);
 *  - with no token at all, listen must be a loopback address unless
 *    "allow_unauthenticated" is true; that key with tokens set is refused.
 * auth is the config's "auth" object or NULL. listen is the daemon's
 * "listen" value (already parsed once). Returns 0, or DTX_EINVAL / DTX_EIO
 * with a message naming the keys; on error the tokens may be half set.
 */
int auth_load(const cJSON *auth, const struct auth_role *roles, size_t nroles,
              struct auth_clients *clients, const char *config_dir, const char *listen,
              struct auth_policy *policy, struct dtx_err *err);

/* The directory of a config file's path, for auth_load (dst of size n). */
void auth_config_dir(const char *config_path, char *dst, size_t n);

#endif
