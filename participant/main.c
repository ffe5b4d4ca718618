/*
 * main.c - dtx-participant: flags, config, start-up checks of the
 * database, signals, and the event loop.
 *
 * Globals: none (signals arrive on a signalfd; the log configuration lives
 * in log.c).
 *
 * Exit status: 0 after a graceful stop, 1 when the agent cannot start
 * (database unreachable or unfit, address in use), 2 for a bad flag or
 * config file.
 */
#include "dtx/agent.h"
#include "dtx/agent_config.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"
#include "dtx/log.h"
#include "dtx/rm.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define DRAIN_MAX_MS 10000

struct daemon {
    struct ev_loop loop;
    struct agent_config cfg;
    struct agent *ag;
    struct httpd *http;
    struct ev_io sig;
    struct ev_timer drain;
    uint64_t drain_until_us;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: dtx-participant --config FILE\n"
               "\n"
               "Runs the dtx agent of one PostgreSQL shard: it runs each transaction's branch,\n"
               "prepares it, and commits or rolls it back as the coordinator decides.\n"
               "\n"
               "  -c, --config FILE   participant config (JSON; see docs/operations.md)\n"
               "  -h, --help          print this help and exit\n");
}

static void on_drain(struct ev_loop *loop, struct ev_timer *t)
{
    struct daemon *d = t->data;

    if (agent_idle(d->ag) || ev_now_us(loop) >= d->drain_until_us) {
        ev_loop_stop(loop);
        return;
    }
    ev_timer_start(loop, t, 20);
}

static void on_signal(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct daemon *d = io->data;
    struct signalfd_siginfo si;

    (void)revents;
    if (read(io->fd, &si, sizeof(si)) != sizeof(si) || ev_timer_is_active(&d->drain))
        return;
    log_info("received %s: stopping once running branches end (prepared ones stay prepared)",
             strsignal((int)si.ssi_signo));
    agent_begin_shutdown(d->ag);
    httpd_quiesce(d->http);
    d->drain_until_us = ev_now_us(loop) + DRAIN_MAX_MS * 1000u;
    ev_timer_start(loop, &d->drain, 0);
}

static int watch_signals(struct daemon *d)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -1;
    signal(SIGPIPE, SIG_IGN);
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -1;
    ev_io_init(&d->sig, on_signal, d);
    return ev_io_start(&d->loop, &d->sig, fd, EPOLLIN);
}

static int parse_args(int argc, char **argv, const char **config)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {0, 0, 0, 0}};
    int c;

    opterr = 0;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            *config = optarg;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            fprintf(stderr, "dtx-participant: bad option '%s' (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dtx-participant: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (!*config) {
        fprintf(stderr, "dtx-participant: --config FILE is required (see --help)\n");
        return -1;
    }
    return 0;
}

static int run(struct daemon *d)
{
    struct httpd_opts hopts = {d->cfg.listen, d->cfg.max_body_bytes, d->cfg.http_conn_limit, 120};
    struct dtx_err err;
    struct rm *rm = NULL;
    int rc;

    dtx_err_clear(&err);
    if (ev_loop_init(&d->loop) < 0 || watch_signals(d) < 0) {
        log_error("could not set up the event loop: %s", strerror(errno));
        return 1;
    }
    ev_timer_init(&d->drain, on_drain, d);
    rc = rm_pg_new(&rm, &d->loop, d->cfg.conninfo, (int)d->cfg.pool_size, d->cfg.name,
                   d->cfg.startup_wait_s, &err);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        return 1;
    }
    d->ag = agent_new(&d->cfg, &d->loop, rm);
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
    ev_io_stop(&d->loop, &d->sig);
    close(d->sig.fd);
    ev_loop_release(&d->loop);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    struct daemon d;
    struct dtx_err err;
    const char *config = "";
    struct rlimit rl;

    memset(&d, 0, sizeof(d));
    log_init("dtx-participant", LOG_INFO);
    if (parse_args(argc, argv, &config) < 0)
        return 2;
    dtx_err_clear(&err);
    if (agent_config_load(config, &d.cfg, &err) < 0) {
        fprintf(stderr, "dtx-participant: %s\n", err.msg);
        return 2;
    }
    log_init("dtx-participant", (enum log_level)log_level_parse(d.cfg.log_level));
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return run(&d);
}
