/*
 * agent_config.h - the participant's configuration file.
 *
 * Keys: name, listen, conninfo, coordinators (or coordinator_url, for one),
 * auth{peer_token[_file], allow_unauthenticated} (auth.h: also DTX_PEER_TOKEN),
 * pool_size, startup_wait_s, max_body_bytes, http_conn_limit, http_conn_limit_per_ip,
 * http_request_timeout_ms, recovery_interval_ms,
 * recovery_min_age_ms, max_open_branches, open_wait_ms, prepared_headroom, allow_fsync_off,
 * max_result_bytes, max_result_rows, termination_timeout_ms, acceptor_sweep_age_ms, log_level.
 * Unknown keys are refused.
 */
#ifndef DTX_AGENT_CONFIG_H
#define DTX_AGENT_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "dtx/addr.h"
#include "dtx/auth.h"
#include "dtx/conf.h"
#include "dtx/err.h"
#include "dtx/gid.h"
#include "dtx/tls.h"

#define AGENT_COORDS_MAX 16

/* A coordinator this agent serves: any process of any node, active or standby. */
struct agent_coord {
    char url[256];
    struct addr addr;
};

struct agent_config {
    char path[4096];
    char name[DTX_NAME_MAX + 1]; /* the shard this agent serves */
    char listen[256];
    char conninfo[4096];
    struct agent_coord coords[AGENT_COORDS_MAX]; /* "coordinators", in config order */
    uint32_t ncoords;                            /* at least 1 */
    /* Written at start and on SIGHUP (agent_config_reload_auth), on the loop thread. The peer
     * token guards every /v1/ endpoint: the peer stream, the 3PC calls, branch status and the
     * operators' endpoints (a participant has no admin token of its own). */
    struct auth_token peer_token;
    struct auth_policy auth;
    uint32_t pool_size;      /* PostgreSQL connections */
    uint32_t startup_wait_s; /* how long to wait for PostgreSQL at start */
    uint32_t max_body_bytes;
    uint32_t http_conn_limit;
    uint32_t http_conn_limit_per_ip;  /* connections from one client address (0: no limit) */
    uint32_t http_request_timeout_ms; /* a complete request must come within this */
    uint32_t recovery_interval_ms;    /* how often prepared branches are checked */
    uint32_t recovery_min_age_ms;     /* younger ones are left to the normal protocol */
    uint32_t max_open_branches; /* interactive branches open at once (each holds a connection) */
    uint32_t open_wait_ms;      /* how long a new one may wait for a free connection */
    uint32_t prepared_headroom; /* prepared-transaction slots never used, per server */
    bool allow_fsync_off;       /* serve a database with fsync = off (tests only; warned) */
    uint32_t max_result_bytes;  /* a branch's results (JSON) at most; more aborts it */
    uint32_t max_result_rows;   /* rows a branch's ops return at most */
    uint32_t termination_timeout_ms; /* 3PC: no decision this long after the vote: lead a round */
    uint32_t acceptor_sweep_age_ms;  /* 3PC: rows left behind this long are asked about; 0: never */
    char log_level[16];
    char log_format[8];
    /* "tls"; its credentials are replaced on SIGHUP (agent_config_reload_auth), loop thread. */
    struct tls_config tls;
};

/* Loads and validates path. Returns 0, or DTX_EIO / DTX_EINVAL with one line naming file and key.
 */
int agent_config_load(const char *path, struct agent_config *out, struct dtx_err *err);
/* Frees what a load holds (the TLS credentials). */
void agent_config_release(struct agent_config *c);

/*
 * SIGHUP: loads c->path again and, when the whole file is still valid,
 * takes its peer token and its TLS credentials (open connections keep
 * the old ones) into c. Returns 0, or the error with c untouched.
 */
int agent_config_reload_auth(struct agent_config *c, struct dtx_err *err);

#endif
