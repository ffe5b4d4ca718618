/*
 * main.c - dtx-coordinator: the coordinator engine (coord.h), the
 * operators' endpoints (admin.h) and the HTTP API (api.h), put together
 * and run by daemon_main (daemon.h).
 *
 * Globals: none. Signals arrive on a signalfd (daemon.c); the log
 * configuration lives in log.c, set once by daemon_main. SIGHUP reloads
 * the tokens (reload below, on the loop thread, like every reader of them).
 *
 * Exit status: 0 after a graceful stop (SIGTERM/SIGINT), 1 when the
 * coordinator cannot start (damaged decision log, address in use, ...),
 * 2 for a bad flag or a bad config file.
 */
#include "dtx/admin.h"
#include "dtx/api.h"
#include "dtx/coord.h"
#include "dtx/coord_config.h"
#include "dtx/daemon.h"
#include "dtx/failpoint.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <stdlib.h>

static const char usage[] =
    "usage: dtx-coordinator --config FILE\n"
    "\n"
    "Runs the dtx coordinator: the HTTP API for distributed transactions, the\n"
    "decision log in log_dir, and two-phase commit across the configured shards.\n"
    "\n"
    "  -c, --config FILE   coordinator config (JSON; see docs/operations.md)\n"
    "  -h, --help          print this help and exit\n"
    "      --version       print the version and exit\n";

struct coordinator {
    struct coord_config cfg;
    struct addr *shard_addrs; /* the participants' addresses, for the HTTP server */
    struct coord *co;
    struct admin *admin;
    struct api_ctx api;
};

static int load(const char *path, void *cfg, struct dtx_err *err)
{
    return coord_config_load(path, cfg, err);
}

static void release(void *cfg)
{
    coord_config_release(cfg);
}

static const char *log_level(const void *cfg)
{
    return ((const struct coord_config *)cfg)->log_level;
}

static int start(void *arg, struct ev_loop *loop, struct httpd_opts *http, httpd_handler *handler,
                 void **ctx, struct dtx_err *err)
{
    struct coordinator *c = arg;
    int rc = coord_new(&c->co, &c->cfg, loop, err);

    if (rc < 0)
        return rc;
    fp_set_crash_hook(coord_flush_links, c->co);
    c->shard_addrs = xcalloc(c->cfg.nshards, sizeof(*c->shard_addrs));
    for (size_t i = 0; i < c->cfg.nshards; i++)
        c->shard_addrs[i] = c->cfg.shards[i].addr;
    if (c->cfg.auth.allow_unauthenticated)
        log_warn("serving %s without authentication ('auth.allow_unauthenticated'): whoever "
                 "reaches it can run SQL on every shard and decide transactions",
                 c->cfg.listen);
    c->admin = admin_new(c->co);
    c->api = (struct api_ctx){.co = c->co, .admin = c->admin};
    http->listen = c->cfg.listen;
    http->max_body = c->cfg.max_body_bytes;
    http->conn_limit = c->cfg.http_conn_limit;
    http->per_ip_limit = c->cfg.http_conn_limit_per_ip;
    http->request_timeout_ms = c->cfg.http_request_timeout_ms;
    http->peers = c->shard_addrs; /* participants reach it too: they have their own reserve */
    http->npeers = c->cfg.nshards;
    *handler = api_handle;
    *ctx = &c->api;
    return 0;
}

static void begin_stop(void *arg)
{
    coord_begin_shutdown(((struct coordinator *)arg)->co);
}

static bool idle(void *arg)
{
    return coord_drained(((struct coordinator *)arg)->co);
}

/* SIGHUP: the tokens again from the config, their files and the environment. */
static int reload(void *arg, struct dtx_err *err)
{
    struct coordinator *c = arg;
    int rc = coord_config_reload_auth(&c->cfg, err);

    if (rc == 0 && c->co)
        coord_auth_reloaded(c->co);
    return rc;
}

static void stop(void *arg)
{
    struct coordinator *c = arg;

    admin_free(c->admin);
    coord_free(c->co);
    free(c->shard_addrs);
    c->shard_addrs = NULL;
    c->admin = NULL;
    c->co = NULL;
}

int main(int argc, char **argv)
{
    static struct coordinator c;
    const struct daemon_spec spec = {
        .prog = "dtx-coordinator",
        .usage = usage,
        .cfg = &c.cfg,
        .load = load,
        .release = release,
        .log_level = log_level,
        .start = start,
        .begin_stop = begin_stop,
        .idle = idle,
        .stop = stop,
        .reload = reload,
        .drain_note = "stopping with transactions still in flight; they resume at restart",
        .arg = &c,
    };

    return daemon_main(argc, argv, &spec);
}
