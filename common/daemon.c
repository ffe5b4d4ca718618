/*
 * daemon.c - what both daemons' main() share (daemon.h): command line,
 * config, limits, the loop and HTTP server, the graceful stop (which
 * the service manager hears of: STOPPING=1) and SIGHUP's reload of the
 * tokens.
 * Runs on the event-loop thread (the signalfd is an ordinary watcher).
 *
 * Globals: none. The log configuration (log.c) is set here, once, before
 * any thread starts.
 */
#include "dtx/daemon.h"
#include "dtx/err.h"
#include "dtx/failpoint.h"
#include "dtx/log.h"
#include "dtx/sdnotify.h"
#include "dtx/version.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

int daemon_parse_args(int argc, char **argv, const char *prog, const char *usage,
                      const char **config)
{
    static const struct option opts[] = {{"config", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {"version", no_argument, NULL, 'V'},
                                         {0, 0, 0, 0}};
    int c;

    opterr = 0;
    *config = NULL;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        if (c == 'c') {
            *config = optarg;
        } else if (c == 'h') {
            fputs(usage, stdout);
            exit(0);
        } else if (c == 'V') {
            printf("%s %s\n", prog, DTX_VERSION);
            exit(0);
        } else {
            fprintf(stderr, "%s: bad option '%s' (see --help)\n", prog, argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "%s: unexpected argument '%s' (see --help)\n", prog, argv[optind]);
        return -1;
    }
    if (!*config) {
        fprintf(stderr, "%s: --config FILE is required (see --help)\n", prog);
        return -1;
    }
    return 0;
}

void daemon_tune_process(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /*
     * No glibc fastbins. Each transaction allocates many small short-lived
     * objects (JSON nodes, messages) between the longer-lived ones of the
     * transactions kept for retention; freed fastbin chunks are not merged
     * with their free neighbours, and the heap crept up by ~6 kB/s at 2,400
     * tx/s with the bytes in use flat (malloc_stats: 11.0 -> 13.4 MB of
     * heap for ~8 MB in use, growing linearly for 8 minutes). Without
     * fastbins (tcache still serves the hot sizes) the coordinator's RSS
     * levelled off at 13.2 MB within 100 s.
     */
    mallopt(M_MXFAST, 0);
}

static void on_drain(struct ev_loop *loop, struct ev_timer *t)
{
    struct daemon_stop *ds = t->data;

    if (ds->idle(ds->arg) || ev_now_us(loop) >= ds->until_us) {
        ev_loop_stop(loop);
        return;
    }
    ev_timer_start(loop, t, 20);
}

static void on_signal(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct daemon_stop *ds = io->data;
    struct signalfd_siginfo si;

    (void)revents;
    if (read(io->fd, &si, sizeof(si)) != sizeof(si))
        return;
    if (si.ssi_signo == SIGHUP) {
        if (ds->reload)
            ds->reload(ds->arg);
        else
            log_info("received SIGHUP: nothing to reload");
        return;
    }
    if (ev_timer_is_active(&ds->drain) || ds->until_us)
        return;
    log_info("received %s: stopping gracefully", strsignal((int)si.ssi_signo));
    sdnotify_or_warn("STOPPING=1");
    ds->begin(ds->arg);
    ds->until_us = ev_now_us(loop) + (uint64_t)ds->max_ms * 1000u;
    ev_timer_start(loop, &ds->drain, 0);
}

int daemon_stop_init(struct daemon_stop *ds, struct ev_loop *loop, uint32_t max_ms,
                     void (*begin)(void *), bool (*idle)(void *), void *arg)
{
    sigset_t set;
    int fd;

    memset(ds, 0, sizeof(*ds));
    ds->loop = loop;
    ds->max_ms = max_ms;
    ds->begin = begin;
    ds->idle = idle;
    ds->arg = arg;
    ev_timer_init(&ds->drain, on_drain, ds);
    ev_io_init(&ds->sig, on_signal, ds);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    signal(SIGPIPE, SIG_IGN);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return DTX_EIO;
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return DTX_EIO;
    if (ev_io_start(loop, &ds->sig, fd, EPOLLIN) < 0) {
        close(fd);
        return DTX_EIO;
    }
    return 0;
}

void daemon_stop_release(struct daemon_stop *ds)
{
    int fd = ds->sig.fd;

    ev_timer_stop(ds->loop, &ds->drain);
    ev_io_stop(ds->loop, &ds->sig);
    if (fd >= 0)
        close(fd);
}

bool daemon_stop_timed_out(const struct daemon_stop *ds)
{
    return ds->until_us && !ds->idle(ds->arg);
}

/* ---- the whole main() ------------------------------------------------------------- */

struct running {
    const struct daemon_spec *spec;
    struct ev_loop loop;
    struct daemon_stop stop;
    struct httpd *http;
};

static void begin_stop(void *arg)
{
    struct running *r = arg;

    r->spec->begin_stop(r->spec->arg);
    httpd_quiesce(r->http);
}

static bool idle(void *arg)
{
    struct running *r = arg;

    return r->spec->idle(r->spec->arg);
}

/* SIGHUP: the daemon reloads its tokens and TLS credentials; a failure keeps the ones in use. */
static void reload(void *arg)
{
    struct running *r = arg;
    struct dtx_err err;

    dtx_err_clear(&err);
    if (!r->spec->reload) {
        log_info("received SIGHUP: nothing to reload");
        return;
    }
    log_info("received SIGHUP: reloading the tokens and the TLS certificates");
    if (r->spec->reload(r->spec->arg, &err) < 0)
        log_error("could not reload the tokens or the certificates: %s; the tokens in use are "
                  "kept, and so are the certificates",
                  err.msg);
    else
        log_info("tokens reloaded, and the TLS certificates if any");
}

static int run(struct running *r)
{
    const struct daemon_spec *spec = r->spec;
    struct httpd_opts hopts = {.idle_timeout_s = 120};
    httpd_handler handler = NULL;
    void *ctx = NULL;
    struct dtx_err err;
    int rc;

    dtx_err_clear(&err);
    if (ev_loop_init(&r->loop) < 0 ||
        daemon_stop_init(&r->stop, &r->loop, DAEMON_DRAIN_MAX_MS, begin_stop, idle, r) < 0) {
        log_error("could not set up the event loop: %s", strerror(errno));
        return 1;
    }
    r->stop.reload = reload;
    rc = spec->start(spec->arg, &r->loop, &hopts, &handler, &ctx, &err);
    if (rc == 0 && (rc = httpd_start(&r->http, &r->loop, &hopts, handler, ctx, &err)) < 0)
        spec->stop(spec->arg);
    if (rc < 0) {
        log_error("could not start: %s", err.msg);
        daemon_stop_release(&r->stop);
        ev_loop_release(&r->loop);
        return 1;
    }
    if (spec->started)
        spec->started(spec->arg);
    rc = ev_loop_run(&r->loop);
    if (daemon_stop_timed_out(&r->stop) && spec->drain_note)
        log_warn("%s", spec->drain_note);
    httpd_detach(r->http);
    spec->stop(spec->arg);
    httpd_free(r->http);
    daemon_stop_release(&r->stop);
    ev_loop_release(&r->loop);
    log_info("stopped");
    return rc < 0 ? 1 : 0;
}

int daemon_main(int argc, char **argv, const struct daemon_spec *spec)
{
    struct running r = {.spec = spec};
    struct dtx_err err;
    const char *config;
    int rc;

    xalloc_init();
    log_init(spec->prog, LOG_INFO);
    if (daemon_parse_args(argc, argv, spec->prog, spec->usage, &config) < 0 || fp_init() < 0)
        return 2;
    dtx_err_clear(&err);
    if (spec->load(config, spec->cfg, &err) < 0) {
        fprintf(stderr, "%s: %s\n", spec->prog, err.msg);
        return 2;
    }
    log_init(spec->prog, (enum log_level)log_level_parse(spec->log_level(spec->cfg)));
    if (spec->log_format)
        log_set_format((enum log_format)log_format_parse(spec->log_format(spec->cfg)));
    daemon_tune_process();
    rc = run(&r);
    if (spec->release)
        spec->release(spec->cfg);
    return rc;
}
