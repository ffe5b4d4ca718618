/*
 * failpoint.h - named places where the fault tests make a daemon fail on
 * purpose.
 *
 * Configured once at start-up from the environment:
 *
 *   DTX_FAILPOINTS="name=action[@N][,name=action[@N]...]"
 *
 * actions:
 *   crash        _exit(137) at once, like kill -9 (after the crash hook,
 *                which flushes peer streams so a message already "sent"
 *                really leaves: a crash right after send(2))
 *   sleep(MS)    stall the calling thread for MS milliseconds
 *   error        make the operation fail with EIO
 *   error(ENOSPC) / error(EIO)   ... with that errno
 * @N fires only on the N-th time the place is reached (default: every time
 * for sleep and error, the first time for crash).
 *
 * The list of places is in docs/recovery.md. Without DTX_FAILPOINTS a
 * check costs one predictable branch.
 */
#ifndef DTX_FAILPOINT_H
#define DTX_FAILPOINT_H

#include <stdbool.h>

/*
 * Reads DTX_FAILPOINTS, replacing what an earlier call configured (call it
 * while no other thread runs); returns 0, or -1 (with a message on
 * stderr) if it does not parse.
 */
int fp_init(void);

/* Called by a crash action just before _exit (NULL: none). */
void fp_set_crash_hook(void (*hook)(void *arg), void *arg);

/*
 * Evaluates the failpoint name: crashes, sleeps, or returns the errno of
 * an error action (0 when nothing is configured for this hit).
 */
int fp_hit(const char *name);

#endif
