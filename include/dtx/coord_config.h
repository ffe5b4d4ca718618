/*
 * coord_config.h - the coordinator's configuration file.
 *
 * Keys (see docs/operations.md for each one's meaning and default):
 *   node_id, listen, log_dir, shards[{name, url, slots?}],
 *   prepare_timeout_ms, max_timeout_ms, commit_wait_ms, max_body_bytes,
 *   max_ops, max_params, max_sql_bytes, max_logged_results_bytes,
 *   retention_s, retention_max, retention_max_bytes, log_segment_bytes,
 *   log_group_delay_us, log_group_siblings, http_conn_limit,
 *   http_conn_limit_per_ip, http_request_timeout_ms, log_level, log_format,
 *   auth{client_token[_file], admin_token[_file], peer_token[_file],
 *        clients[{name, token[_file]}], allow_unauthenticated} (auth.h: also
 *   DTX_*_TOKEN; every role's token or none, named clients standing in for
 *   client_token, and none only on loopback unless allowed),
 *   decision_store{type: "file" | "postgres", conninfo, lease_ms}
 * Unknown keys are refused, so a misspelt key never silently falls back to
 * a default.
 */
#ifndef DTX_COORD_CONFIG_H
#define DTX_COORD_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "dtx/addr.h"
#include "dtx/auth.h"
#include "dtx/conf.h"
#include "dtx/err.h"
#include "dtx/gid.h"
#include "dtx/route.h"
#include "dtx/tls.h"

#define CONF_MAX_SHARDS 256

struct shard_config {
    char name[DTX_NAME_MAX + 1];
    char url[256];
    struct addr addr;
    struct route_range slots;
};

/* Where decisions are kept (dstore.h). */
enum coord_store_type {
    COORD_STORE_FILE = 0, /* the local decision log in log_dir (dlog.h), the default */
    COORD_STORE_POSTGRES, /* a PostgreSQL database the operator replicates (dstore_pg.h) */
};

struct coord_config {
    char path[4096]; /* the file it came from */
    char node_id[DTX_NAME_MAX + 1];
    char listen[256];
    char log_dir[4096]; /* file store only */
    enum coord_store_type store_type;
    char store_conninfo[4096];  /* postgres store */
    uint32_t store_lease_ms;    /* postgres store: a lease not renewed this long may be taken */
    bool store_allow_fsync_off; /* postgres store: its server may run with fsync = off (tests) */
    struct shard_config *shards;
    size_t nshards;
    struct route route;
    uint32_t prepare_timeout_ms; /* votes must arrive within this (or the request's timeout_ms) */
    uint32_t max_timeout_ms;     /* the largest timeout_ms a request may ask for */
    uint32_t commit_wait_ms;     /* a client waits this long for phase-2 acks */
    uint32_t max_body_bytes;
    uint32_t max_ops;
    uint32_t max_params;
    uint32_t max_sql_bytes;
    uint32_t retention_s;              /* finished transactions are remembered this long ... */
    uint32_t retention_max;            /* ... up to this many */
    uint32_t retention_max_bytes;      /* ... holding at most this many bytes of answers */
    uint32_t max_logged_results_bytes; /* results an idempotency key's COMMIT record may hold */
    uint32_t log_segment_bytes;
    uint32_t log_prealloc_bytes; /* zeros written ahead in the decision log (0: none) */
    uint32_t log_group_delay_us; /* group-commit delay of the decision log (0: none) */
    uint32_t log_group_siblings; /* ... applied when this many transactions await votes */
    uint32_t http_conn_limit;
    uint32_t http_conn_limit_per_ip;  /* connections from one client address (0: no limit) */
    uint32_t http_request_timeout_ms; /* a complete request must come within this */
    uint32_t max_active_transactions; /* more in flight at once are refused with 429 */
    uint32_t interactive_timeout_ms;  /* an interactive one idle this long is aborted */
    char log_level[16];
    char log_format[8];
    /* Written at start and on SIGHUP (coord_config_reload_auth), on the loop thread. */
    struct auth_token client_token;
    struct auth_token admin_token;
    struct auth_token peer_token;
    struct auth_clients clients; /* each with its own token: its transactions are its own */
    struct auth_policy auth;
    /* "tls"; its credentials are replaced on SIGHUP (coord_config_reload_auth), loop thread. */
    struct tls_config tls;
};

/*
 * Loads and validates path into *out. Returns 0, or DTX_EIO / DTX_EINVAL
 * with a one-line message naming the file, the key and the problem. On
 * error *out holds nothing that needs releasing.
 */
int coord_config_load(const char *path, struct coord_config *out, struct dtx_err *err);
void coord_config_release(struct coord_config *c);

/*
 * SIGHUP: loads c->path again and, when the whole file is still valid,
 * takes its tokens (the config's, their files', the environment's) and its
 * TLS credentials (tls.h: open connections keep the old ones) into c.
 * Returns 0, or the error of the new file with c untouched. Other keys
 * take effect at the next start only.
 */
int coord_config_reload_auth(struct coord_config *c, struct dtx_err *err);

/* Index of the shard called name, or -1. */
int coord_config_shard(const struct coord_config *c, const char *name);

#endif
