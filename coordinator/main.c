/*
 * main.c - dtx-coordinator: flags, config, the event loop, graceful stop.
 *
 * Globals: none. Signals arrive on a signalfd (daemon.c); the log
 * configuration lives in log.c, set once here.
 *
 * Exit status: 0 after a graceful stop (SIGTERM/SIGINT), 1 when the
 * coordinator cannot start (damaged decision log, address in use, ...),
 * 2 for a bad flag or a bad config file.
 */
#include "dtx/api.h"
#include "dtx/coord.h"
#include "dtx/coord_config.h"
#include "dtx/daemon.h"
#include "dtx/ev.h"
#include "dtx/failpoint.h"
#include "dtx/httpd.h"
#include "dtx/log.h"

#include <errno.h>
#include <string.h>

#define DRAIN_MAX_MS 10000

static const char usage[] =
    "usage: dtx-coordinator --config FILE\n"
    "\n"
    "Runs the dtx coordinator: the HTTP API for distributed transactions, the\n"
    "decision log in log_dir, and two-phase commit across the configured shards.\n"
    "\n"
    "  -c, --config FILE   coordinator config (JSON; see docs/operations.md)\n"
    "  -h, --help          print this help and exit\n";

struct daemon {
    struct ev_loop loop;
    struct coord_config cfg;
    struct coord *co;
    struct httpd *http;
    struct daemon_stop stop;
};

static void begin_stop(void *arg)
{
    struct daemon *d = arg;

    coord_begin_shutdown(d->co);
    httpd_quiesce(d->http);
}

static bool drained(void *arg)
{
    struct daemon *d = arg;

    return coord_drained(d->co);
}

static int run(struct daemon *d)
{
    struct httpd_opts hopts = {d->cfg.listen, d->cfg.max_body_bytes, d->cfg.http_conn_limit, 120};
    struct dtx_err err;
    int rc;

    dtx_err_clear(&err);
    if (ev_loop_init(&d->loop) < 0 ||
        daemon_stop_init(&d->stop, &d->loop, DRAIN_MAX_MS, begin_stop, drained, d) < 0) {
        log_error("could not set up the event loop: %s", strerror(errno));
        return 1;
    }
    rc = coord_new(&d->co, &d->cfg, &d->loop, &err);
    if (rc == 0) {
        fp_set_crash_hook(coord_flush_links, d->co);
        rc = httpd_start(&d->http, &d->loop, &hopts, api_handle, d->co, &err);
    }
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        coord_free(d->co);
        daemon_stop_release(&d->stop);
        ev_loop_release(&d->loop);
        return 1;
    }
    rc = ev_loop_run(&d->loop);
    if (daemon_stop_timed_out(&d->stop))
        log_warn("stopping with transactions still in flight; they resume at restart");
    httpd_free(d->http);
    coord_free(d->co);
    daemon_stop_release(&d->stop);
    ev_loop_release(&d->loop);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct daemon d;
    struct dtx_err err;
    const char *config;
    int rc;

    memset(&d, 0, sizeof(d));
    log_init("dtx-coordinator", LOG_INFO);
    if (daemon_parse_args(argc, argv, "dtx-coordinator", usage, &config) < 0 || fp_init() < 0)
        return 2;
    dtx_err_clear(&err);
    if (coord_config_load(config, &d.cfg, &err) < 0) {
        fprintf(stderr, "dtx-coordinator: %s\n", err.msg);
        return 2;
    }
    log_init("dtx-coordinator", (enum log_level)log_level_parse(d.cfg.log_level));
    daemon_tune_process();
    rc = run(&d);
    coord_config_release(&d.cfg);
    return rc;
}
