/*
 * main.c - dtx-participant: flags, config, start-up checks of the
 * database, the event loop, graceful stop.
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
#include "dtx/ev.h"
#include "dtx/failpoint.h"
#include "dtx/httpd.h"
#include "dtx/log.h"
#include "dtx/rm.h"

#include <errno.h>
#include <string.h>

#define DRAIN_MAX_MS 10000

static const char usage[] =
    "usage: dtx-participant --config FILE\n"
    "\n"
    "Runs the dtx agent of one PostgreSQL shard: it runs each transaction's branch,\n"
    "prepares it, and commits or rolls it back as the coordinator decides.\n"
    "\n"
    "  -c, --config FILE   participant config (JSON; see docs/operations.md)\n"
    "  -h, --help          print this help and exit\n";

struct daemon {
    struct ev_loop loop;
    struct agent_config cfg;
    struct agent *ag;
    struct httpd *http;
    struct daemon_stop stop;
};

static void begin_stop(void *arg)
{
    struct daemon *d = arg;

    log_info("prepared branches stay prepared; running ones may finish");
    agent_begin_shutdown(d->ag);
    httpd_quiesce(d->http);
}

static bool idle(void *arg)
{
    struct daemon *d = arg;

    return agent_idle(d->ag);
}

static int run(struct daemon *d)
{
    struct httpd_opts hopts = {d->cfg.listen, d->cfg.max_body_bytes, d->cfg.http_conn_limit, 120};
    struct dtx_err err;
    struct rm *rm = NULL;
    int rc;

    dtx_err_clear(&err);
    if (ev_loop_init(&d->loop) < 0 ||
        daemon_stop_init(&d->stop, &d->loop, DRAIN_MAX_MS, begin_stop, idle, d) < 0) {
        log_error("could not set up the event loop: %s", strerror(errno));
        return 1;
    }
    rc = rm_pg_new(&rm, &d->loop, d->cfg.conninfo, (int)d->cfg.pool_size, d->cfg.name,
                   d->cfg.startup_wait_s, &err);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        return 1;
    }
    d->ag = agent_new(&d->cfg, &d->loop, rm);
    fp_set_crash_hook(agent_flush_peers, d->ag);
    rc = httpd_start(&d->http, &d->loop, &hopts, agent_handle_http, d->ag, &err);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        agent_free(d->ag);
        return 1;
    }
    log_info("participant of shard '%s' is listening on %s", d->cfg.name, d->cfg.listen);
    rc = ev_loop_run(&d->loop);
    agent_free(d->ag);
    httpd_free(d->http);
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

    memset(&d, 0, sizeof(d));
    log_init("dtx-participant", LOG_INFO);
    if (daemon_parse_args(argc, argv, "dtx-participant", usage, &config) < 0 || fp_init() < 0)
        return 2;
    dtx_err_clear(&err);
    if (agent_config_load(config, &d.cfg, &err) < 0) {
        fprintf(stderr, "dtx-participant: %s\n", err.msg);
        return 2;
    }
    log_init("dtx-participant", (enum log_level)log_level_parse(d.cfg.log_level));
    daemon_tune_process();
    return run(&d);
}
