/*
 * daemon.h - what the main() of both daemons shares: the command line
 * (--config FILE, --help), the file-descriptor limit, and a graceful stop
 * on SIGTERM/SIGINT, read from a signalfd on the event loop (so no signal
 * handler and no global flag).
 */
#ifndef DTX_DAEMON_H
#define DTX_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dtx/ev.h"

/*
 * Parses "--config FILE" / "-c FILE" and "--help". On --help prints usage
 * to stdout and exits 0. Returns 0 with *config set, or -1 after printing
 * one line to stderr (the caller exits 2).
 */
int daemon_parse_args(int argc, char **argv, const char *prog, const char *usage,
                      const char **config);

/* Raises the soft limit on open files to the hard limit; tunes malloc (see daemon.c). */
void daemon_tune_process(void);

/*
 * Graceful stop: on the first SIGTERM/SIGINT, begin(arg) is called (stop
 * taking work), then the loop stops once idle(arg) is true or after
 * max_ms, whichever comes first.
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
