/*
 * main.c - dtx-coordinator: flags, config, signals, and the event loop.
 *
 * Globals: none. Signals are read from a signalfd on the event loop, and
 * the log configuration lives in log.c (set once here).
 *
 * Exit status: 0 after a graceful stop (SIGTERM/SIGINT), 1 when the
 * coordinator cannot start (damaged decision log, address in use, ...),
 * 2 for a bad flag or a bad config file.
 */
#include "dtx/api.h"
#include "dtx/coord.h"
#include "dtx/coord_config.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"
#include "dtx/log.h"

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
    struct coord_config cfg;
    struct coord *co;
    struct httpd *http;
    struct ev_io sig;
    struct ev_timer drain;
    uint64_t drain_until_us;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: dtx-coordinator --config FILE\n"
               "\n"
               "Runs the dtx coordinator: the HTTP API for distributed transactions, the\n"
               "decision log in log_dir, and two-phase commit across the configured shards.\n"
               "\n"
               "  -c, --config FILE   coordinator config (JSON; see docs/operations.md)\n"
               "  -h, --help          print this help and exit\n");
}

static void on_drain(struct ev_loop *loop, struct ev_timer *t)
{
    struct daemon *d = t->data;

    if (coord_drained(d->co) || ev_now_us(loop) >= d->drain_until_us) {
        if (!coord_drained(d->co))
            log_warn("stopping with transactions still in flight; they resume at restart");
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
    if (read(io->fd, &si, sizeof(si)) != sizeof(si))
        return;
    if (ev_timer_is_active(&d->drain))
        return;
    log_info("received %s: stopping after in-flight transactions finish",
             strsignal((int)si.ssi_signo));
    coord_begin_shutdown(d->co);
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

static void raise_fd_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
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
            fprintf(stderr, "dtx-coordinator: bad option '%s' (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dtx-coordinator: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    if (!*config) {
        fprintf(stderr, "dtx-coordinator: --config FILE is required (see --help)\n");
        return -1;
    }
    return 0;
}

static int run(struct daemon *d)
{
    struct httpd_opts hopts = {d->cfg.listen, d->cfg.max_body_bytes, d->cfg.http_conn_limit, 120};
    struct dtx_err err;
    int rc;

    dtx_err_clear(&err);
    if (ev_loop_init(&d->loop) < 0 || watch_signals(d) < 0) {
        log_error("could not set up the event loop: %s", strerror(errno));
        return 1;
    }
    ev_timer_init(&d->drain, on_drain, d);
    rc = coord_new(&d->co, &d->cfg, &d->loop, &err);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        return 1;
    }
    rc = httpd_start(&d->http, &d->loop, &hopts, api_handle, d->co, &err);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        coord_free(d->co);
        return 1;
    }
    rc = ev_loop_run(&d->loop);
    httpd_free(d->http);
    coord_free(d->co);
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
    int rc;

    memset(&d, 0, sizeof(d));
    log_init("dtx-coordinator", LOG_INFO);
    if (parse_args(argc, argv, &config) < 0)
        return 2;
    dtx_err_clear(&err);
    if (coord_config_load(config, &d.cfg, &err) < 0) {
        fprintf(stderr, "dtx-coordinator: %s\n", err.msg);
        return 2;
    }
    log_init("dtx-coordinator", (enum log_level)log_level_parse(d.cfg.log_level));
    raise_fd_limit();
    rc = run(&d);
    coord_config_release(&d.cfg);
    return rc;
}
