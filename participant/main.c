/*
 * main.c - dtx-participant: the PostgreSQL resource manager (rm.h) and
 * the agent (agent.h) over it, run by daemon_main (daemon.h).
 *
 * Globals: none (signals arrive on a signalfd, see daemon.c; the log
 * configuration lives in log.c).
 *
 * Exit status: 0 after a graceful stop, 1 when the agent cannot start
 * (database unreachable or unfit, address in use), 2 for a bad flag or
 * config file.
 */
#include "dtx/agent.h"
#include "dtx/agent_config.h"
#include "dtx/daemon.h"
#include "dtx/failpoint.h"
#include "dtx/log.h"
#include "dtx/rm.h"
#include "dtx/sdnotify.h"

#include <stdlib.h>

static const char usage[] =
    "usage: dtx-participant --config FILE\n"
    "\n"
    "Runs the dtx agent of one PostgreSQL shard: it runs each transaction's branch,\n"
    "prepares it, and commits or rolls it back as the coordinator decides.\n"
    "\n"
    "  -c, --config FILE   participant config (JSON; see docs/operations.md)\n"
    "  -h, --help          print this help and exit\n"
    "      --version       print the version and exit\n";

struct participant {
    struct agent_config cfg;
    struct agent *ag;
    struct rm *rm; /* the agent's, borrowed while it lives */
    struct ev_loop *loop;
    struct ev_timer ready; /* until the database is up: then READY=1 (sdnotify.h) */
    struct addr coord_addrs[AGENT_COORDS_MAX]; /* its coordinators', for the HTTP server */
};

static int load(const char *path, void *cfg, struct dtx_err *err)
{
    return agent_config_load(path, cfg, err);
}

static void release(void *cfg)
{
    agent_config_release(cfg);
}

static const char *log_level(const void *cfg)
{
    return ((const struct agent_config *)cfg)->log_level;
}

static const char *log_format(const void *cfg)
{
    return ((const struct agent_config *)cfg)->log_format;
}

/*
 * The agent serves once its connection pool has a connection up (its
 * /healthz answers 200): then the service manager hears READY=1. Until
 * then, checked every 20 ms.
 */
static void on_ready_check(struct ev_loop *loop, struct ev_timer *t)
{
    struct participant *p = t->data;
    char why[300];

    if (!rm_healthy(p->rm, why, sizeof(why))) {
        ev_timer_start(loop, t, 20);
        return;
    }
    sdnotify_or_warn("READY=1");
}

static int start(void *arg, struct ev_loop *loop, struct httpd_opts *http, httpd_handler *handler,
                 void **ctx, struct dtx_err *err)
{
    struct participant *p = arg;
    struct rm *rm = NULL;
    struct rm_pg_opts o = {.conninfo = p->cfg.conninfo,
                           .pool_size = (int)p->cfg.pool_size,
                           .shard = p->cfg.name,
                           .wait_s = p->cfg.startup_wait_s,
                           .allow_fsync_off = p->cfg.allow_fsync_off,
                           .max_result_bytes = p->cfg.max_result_bytes,
                           .max_result_rows = p->cfg.max_result_rows};
    int rc = rm_pg_new(&rm, loop, &o, err);

    if (rc < 0)
        return rc;
    p->ag = agent_new(&p->cfg, loop, rm);
    p->rm = rm;
    p->loop = loop;
    ev_timer_init(&p->ready, on_ready_check, p);
    fp_set_crash_hook(agent_flush_peers, p->ag);
    if (p->cfg.auth.allow_unauthenticated)
        log_warn("serving %s without authentication ('auth.allow_unauthenticated'): whoever "
                 "reaches it can act as a coordinator: run SQL on this shard, commit or roll "
                 "back its prepared branches",
                 p->cfg.listen);
    http->listen = p->cfg.listen;
    http->max_body = p->cfg.max_body_bytes;
    http->conn_limit = p->cfg.http_conn_limit;
    http->per_ip_limit = p->cfg.http_conn_limit_per_ip;
    http->request_timeout_ms = p->cfg.http_request_timeout_ms;
    for (uint32_t i = 0; i < p->cfg.ncoords; i++)
        p->coord_addrs[i] = p->cfg.coords[i].addr;
    http->peers = p->coord_addrs; /* its coordinators always find room to dial it */
    http->npeers = p->cfg.ncoords;
    http->tls = &p->cfg.tls;
    if (p->cfg.tls.on) {
        char what[1024];

        tls_config_describe(&p->cfg.tls, what, sizeof(what));
        log_info("serving HTTPS on %s: %s", p->cfg.listen, what);
    }
    *handler = agent_handle_http;
    *ctx = p->ag;
    return 0;
}

static void started(void *arg)
{
    struct participant *p = arg;

    log_info("participant of shard '%s' is listening on %s", p->cfg.name, p->cfg.listen);
    ev_timer_start(p->loop, &p->ready, 0);
}

static void begin_stop(void *arg)
{
    log_info("prepared branches stay prepared; running ones may finish");
    agent_begin_shutdown(((struct participant *)arg)->ag);
}

static bool idle(void *arg)
{
    return agent_idle(((struct participant *)arg)->ag);
}

/* SIGHUP: the peer token again from the config, its file or the environment. */
static int reload(void *arg, struct dtx_err *err)
{
    struct participant *p = arg;
    int rc = agent_config_reload_auth(&p->cfg, err);
    char tls[1024];

    if (rc == 0 && p->cfg.tls.on) {
        tls_config_describe(&p->cfg.tls, tls, sizeof(tls));
        log_info("TLS from now on: %s", tls);
    }
    return rc;
}

static void stop(void *arg)
{
    struct participant *p = arg;

    ev_timer_stop(p->loop, &p->ready);
    agent_free(p->ag);
    p->ag = NULL;
    p->rm = NULL;
}

int main(int argc, char **argv)
{
    static struct participant p;
    const struct daemon_spec spec = {
        .prog = "dtx-participant",
        .usage = usage,
        .cfg = &p.cfg,
        .load = load,
        .release = release,
        .log_level = log_level,
        .log_format = log_format,
        .start = start,
        .started = started,
        .begin_stop = begin_stop,
        .idle = idle,
        .stop = stop,
        .reload = reload,
        .arg = &p,
    };

    return daemon_main(argc, argv, &spec);
}
