/*
 * daemon.h - what the main() of both daemons shares: the command line
 * (--config FILE, --help, --version), loading the config, the log level,
 * the file-descriptor limit, the event loop and HTTP server, and a
 * graceful stop on SIGTERM/SIGINT, read from a signalfd on the event loop
 * (so no signal handler and no global flag), which tells the service
 * manager STOPPING=1 (sdnotify.h). Each daemon describes itself in a
 * struct daemon_spec and calls daemon_main().
 */
#ifndef DTX_DAEMON_H
#define DTX_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"

/* What a daemon is: its name, its config, and how its core starts and stops. */
struct daemon_spec {
    const char *prog;  /* "dtx-coordinator" */
    const char *usage; /* --help text */
    void *cfg;         /* the daemon's config struct, filled by load */
    /* Loads and validates path into cfg: 0, or an error whose message names file and key. */
    int (*load)(const char *path, void *cfg, struct dtx_err *err);
    /* Frees what load allocated (may be NULL). */
    void (*release)(void *cfg);
    /* The configured log level's name ("info", ...). */
    const char *(*log_level)(const void *cfg);
    /*
     * Starts the core on loop and says what the HTTP server serves: its
     * options, handler and ctx. 0, or an error (logged; exit 1), in which
     * case the core is already gone.
     */
    int (*start)(void *arg, struct ev_loop *loop, struct httpd_opts *http, httpd_handler *handler,
                 void **ctx, struct dtx_err *err);
    /*
     * After the HTTP server is up (may be NULL). The core tells the service
     * manager READY=1 (sdnotify.h) itself once it takes work: the
     * coordinator once it has tried every shard's link, the participant
     * once its database is up.
     */
    void (*started)(void *arg);
    /* A stop was asked for: take no new work (the HTTP server stops accepting). */
    void (*begin_stop)(void *arg);
    /* True once nothing is running any more. */
    bool (*idle)(void *arg);
    /* Frees the core; the HTTP server is freed right after. */
    void (*stop)(void *arg);
    const char *drain_note; /* logged when the stop ran out of time with work in flight */
    void *arg;
};

/*
 * The whole main(): arguments, config, loop, HTTP server, run, graceful
 * stop. Returns the exit status: 0 after a graceful stop, 1 when the
 * daemon cannot start, 2 for a bad flag or config file.
 */
int daemon_main(int argc, char **argv, const struct daemon_spec *spec);

/* How long a graceful stop waits for running work before the loop stops anyway. */
#define DAEMON_DRAIN_MAX_MS 10000

/*
 * Parses "--config FILE" / "-c FILE", "--help" and "--version". On --help
 * prints usage to stdout and exits 0; on --version prints "<prog>
 * <version>" and exits 0. Returns 0 with *config set, or -1 after printing
 * one line to stderr (the caller exits 2).
 */
int daemon_parse_args(int argc, char **argv, const char *prog, const char *usage,
                      const char **config);

/* Raises the soft limit on open files to the hard limit; tunes malloc (see daemon.c). */
void daemon_tune_process(void);

/*
 * Graceful stop: on the first SIGTERM/SIGINT, the service manager is told
 * STOPPING=1 and begin(arg) is called (stop taking work), then the loop
 * stops once idle(arg) is true or after max_ms, whichever comes first.
 */
struct daemon_stop {
    struct ev_loop *loop;
    struct ev_io sig;
    struct ev_timer drain;
    uint64_t until_us;
    uint32_t max_ms;
    void (*begin)(void *arg);
    bool (*idle)(void *arg);
    void *arg;
};

/* Blocks SIGTERM/SIGINT, ignores SIGPIPE and watches a signalfd; 0 or DTX_EIO. */
int daemon_stop_init(struct daemon_stop *ds, struct ev_loop *loop, uint32_t max_ms,
                     void (*begin)(void *), bool (*idle)(void *), void *arg);
void daemon_stop_release(struct daemon_stop *ds);
/* True once the loop stopped because the drain ran out of time. */
bool daemon_stop_timed_out(const struct daemon_stop *ds);

#endif
