/*
 * main.c - dtx-coordinator: the coordinator engine (coord.h), the
 * operators' endpoints (admin.h) and the HTTP API (api.h), put together
 * and run by daemon_main (daemon.h).
 *
 * Globals: none. Signals arrive on a signalfd (daemon.c); the log
 * configuration lives in log.c, set once by daemon_main. SIGHUP reloads
 * the tokens (reload below, on the loop thread, like every reader of them).
 *
 * Roles: with the file store the process is its node's coordinator from
 * the start. With the postgres store it first claims the node's lease
 * (dstore_pg.h); while another process holds it, this one is a standby
 * (api.c answers 503, /healthz says "standby"); once granted, it reads the
 * store and becomes active. An active process that loses its lease (the
 * store refused or failed it, or a participant saw a newer run of its node)
 * steps down: it stops and exits with status 3, for its service manager to
 * start it again, as a standby.
 *
 * Exit status: 0 after a graceful stop (SIGTERM/SIGINT), 1 when the
 * coordinator cannot start (damaged decision log, address in use, ...),
 * 2 for a bad flag or a bad config file, 3 after stepping down.
 */
#include "dtx/admin.h"
#include "dtx/api.h"
#include "dtx/coord.h"
#include "dtx/coord_config.h"
#include "dtx/daemon.h"
#include "dtx/dstore_pg.h"
#include "dtx/failpoint.h"
#include "dtx/log.h"
#include "dtx/sdnotify.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

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
    struct ev_loop *loop;
    struct coord *co;         /* NULL while a standby */
    struct addr *shard_addrs; /* the participants' addresses, for the HTTP server */
    struct admin *admin;
    struct api_ctx api;
    /* the postgres decision store: the lease this process waits for, then holds */
    struct dstore_pg_claim *claim;
    struct coord_lease lease;
    char holder[40];
    bool stepped_down; /* the lease was lost: exit with EXIT_STEPPED_DOWN */
    bool damaged;      /* the store could not be read: exit 1, as a damaged log does */
};

/* Exit status of a process that lost its lease (docs/operations.md): restart it as a standby. */
#define EXIT_STEPPED_DOWN 3

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

static const char *log_format(const void *cfg)
{
    return ((const struct coord_config *)cfg)->log_format;
}

/* The store failed or another process of this node took over: decide nothing more, exit. */
static void on_lease_lost(void *arg, const struct dtx_err *why)
{
    struct coordinator *c = arg;

    if (c->stepped_down)
        return;
    c->stepped_down = true;
    log_error("stepping down: %s; exiting with status %d so that this process comes back as a "
              "standby",
              why->msg, EXIT_STEPPED_DOWN);
    kill(getpid(), SIGTERM); /* the daemon's graceful stop; idle() lets it end at once */
}

/* Takes the role of the active coordinator: replay, epoch, links. */
static int become_active(struct coordinator *c, const struct coord_lease *lease,
                         struct dtx_err *err)
{
    int rc = coord_new(&c->co, &c->cfg, c->loop, lease, err);

    if (rc < 0)
        return rc;
    fp_set_crash_hook(coord_flush_links, c->co);
    c->admin = admin_new(c->co);
    c->api.co = c->co;
    c->api.admin = c->admin;
    return 0;
}

static void on_granted(void *arg, uint64_t term)
{
    struct coordinator *c = arg;
    struct dtx_err err;
    char status[160];

    log_info("took the lease of coordinator node '%s' (term %" PRIu64 "): reading the decision "
             "store",
             c->cfg.node_id, term);
    c->lease =
        (struct coord_lease){.term = term, .holder = c->holder, .lost = on_lease_lost, .arg = c};
    dtx_err_clear(&err);
    if (become_active(c, &c->lease, &err) < 0) {
        dtx_err_prefix(&err, "could not become active");
        if (err.code == DTX_ECORRUPT) { /* no other process would read it better: exit 1 */
            log_error("%s", err.msg);
            c->damaged = true;
            kill(getpid(), SIGTERM);
            return;
        }
        on_lease_lost(c, &err);
        return;
    }
    log_info("active: coordinator node '%s', term %" PRIu64, c->cfg.node_id, term);
    snprintf(status, sizeof(status), "STATUS=active: coordinator node '%s', term %" PRIu64,
             c->cfg.node_id, term);
    sdnotify_or_warn(status);
}

/*
 * After the HTTP server is up. A process waiting for the lease serves too (its /healthz
 * says standby), so a Type=notify unit must count it as started: without READY=1 systemd
 * would stop it as a failed start and restart it, over and over. The active coordinator
 * says READY=1 itself once it takes transactions (coord.c).
 */
static void started(void *arg)
{
    struct coordinator *c = arg;
    char msg[160];

    if (c->co)
        return;
    snprintf(msg, sizeof(msg),
             "READY=1\nSTATUS=standby: waiting for the lease of coordinator node '%s'",
             c->cfg.node_id);
    sdnotify_or_warn(msg);
}

static void log_tls(const struct tls_config *t, const char *listen)
{
    char what[1024];

    if (!t->on)
        return;
    tls_config_describe(t, what, sizeof(what));
    log_info("serving HTTPS on %s: %s", listen, what);
}

static int start(void *arg, struct ev_loop *loop, struct httpd_opts *http, httpd_handler *handler,
                 void **ctx, struct dtx_err *err)
{
    struct coordinator *c = arg;
    int rc = 0;

    c->loop = loop;
    c->api = (struct api_ctx){.cfg = &c->cfg};
    c->shard_addrs = xcalloc(c->cfg.nshards, sizeof(*c->shard_addrs));
    for (size_t i = 0; i < c->cfg.nshards; i++)
        c->shard_addrs[i] = c->cfg.shards[i].addr;
    if (c->cfg.auth.allow_unauthenticated)
        log_warn("serving %s without authentication ('auth.allow_unauthenticated'): whoever "
                 "reaches it can run SQL on every shard and decide transactions",
                 c->cfg.listen);
    if (c->cfg.store_type == COORD_STORE_POSTGRES) {
        struct dstore_pg_opts o = {.conninfo = c->cfg.store_conninfo,
                                   .node = c->cfg.node_id,
                                   .holder = c->holder,
                                   .lease_ms = c->cfg.store_lease_ms,
                                   .allow_fsync_off = c->cfg.store_allow_fsync_off,
                                   .loop = loop};

        coord_boot_id(c->holder, sizeof(c->holder));
        rc = dstore_pg_claim_start(&c->claim, &o, on_granted, c, err);
        c->api.claim = c->claim;
    } else {
        rc = become_active(c, NULL, err);
    }
    if (rc < 0)
        return rc;
    http->listen = c->cfg.listen;
    http->max_body = c->cfg.max_body_bytes;
    http->conn_limit = c->cfg.http_conn_limit;
    http->per_ip_limit = c->cfg.http_conn_limit_per_ip;
    http->request_timeout_ms = c->cfg.http_request_timeout_ms;
    http->peers = c->shard_addrs; /* participants reach it too: they have their own reserve */
    http->npeers = c->cfg.nshards;
    http->tls = &c->cfg.tls;
    log_tls(&c->cfg.tls, c->cfg.listen);
    *handler = api_handle;
    *ctx = &c->api;
    return 0;
}

static void begin_stop(void *arg)
{
    struct coordinator *c = arg;

    if (c->co)
        coord_begin_shutdown(c->co);
}

static bool idle(void *arg)
{
    struct coordinator *c = arg;

    /* a process that stepped down has nothing it could still finish */
    return !c->co || c->stepped_down || coord_drained(c->co);
}

/* SIGHUP: the tokens again from the config, their files and the environment. */
static int reload(void *arg, struct dtx_err *err)
{
    struct coordinator *c = arg;
    int rc = coord_config_reload_auth(&c->cfg, err);
    char tls[1024];

    if (rc == 0 && c->co)
        coord_auth_reloaded(c->co);
    if (rc == 0 && c->cfg.tls.on) {
        tls_config_describe(&c->cfg.tls, tls, sizeof(tls));
        log_info("TLS from now on: %s", tls);
    }
    return rc;
}

static void stop(void *arg)
{
    struct coordinator *c = arg;

    admin_free(c->admin);
    coord_free(c->co);
    dstore_pg_claim_free(c->claim);
    free(c->shard_addrs);
    c->shard_addrs = NULL;
    c->admin = NULL;
    c->co = NULL;
    c->claim = NULL;
    c->api = (struct api_ctx){.cfg = &c->cfg};
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
        .log_format = log_format,
        .start = start,
        .started = started,
        .begin_stop = begin_stop,
        .idle = idle,
        .stop = stop,
        .reload = reload,
        .drain_note = "stopping with transactions still in flight; they resume at restart",
        .arg = &c,
    };

    int rc = daemon_main(argc, argv, &spec);

    return c.damaged ? 1 : c.stepped_down ? EXIT_STEPPED_DOWN : rc;
}
