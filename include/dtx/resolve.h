/*
 * resolve.h - host names resolved without blocking the event loop.
 *
 * Every connection a daemon dials resolves its URL's host afresh
 * (getaddrinfo, so /etc/hosts and DNS as the system is configured): a
 * peer that moved to another address is found at the next reconnect, and
 * a name that does not resolve (yet) is a failed attempt like a refused
 * connection, retried by whoever dials, never a reason to stop.
 *
 * getaddrinfo blocks, for as long as the system's resolver takes (its
 * timeouts and attempts, /etc/resolv.conf), so it runs in helper threads:
 * at most RESOLVE_THREADS at once, each started for a lookup and ending
 * when no lookup waits. An IP address needs no lookup and is answered
 * without a thread. Answers come back on the loop thread; a caller that
 * gives up (its own timeout) cancels, and is never called back.
 */
#ifndef DTX_RESOLVE_H
#define DTX_RESOLVE_H

#include <stdint.h>
#include <sys/socket.h>

#include "dtx/err.h"
#include "dtx/ev.h"

#define RESOLVE_THREADS 8

struct resolver;
struct resolve_req;

/*
 * A lookup's answer, on the loop thread: err NULL and the first address
 * (port set), or err saying why ("could not resolve host 'x': Name or
 * service not known"). The request is gone after the call.
 */
typedef void (*resolve_cb)(void *arg, const struct sockaddr *sa, socklen_t salen,
                           const struct dtx_err *err);

/* Creates the resolver of loop. Returns 0 and *out, or DTX_EIO (no eventfd). */
int resolver_new(struct resolver **out, struct ev_loop *loop, struct dtx_err *err);
/*
 * Frees r on the loop thread; no callback is called after. Lookups still
 * running in a thread finish there, and their thread frees what is left.
 * NULL is a no-op.
 */
void resolver_free(struct resolver *r);

/* Starts looking up host (a name, or an IP address); cb is never called from inside this call. */
struct resolve_req *resolve_start(struct resolver *r, const char *host, uint16_t port,
                                  resolve_cb cb, void *arg);
/* The caller no longer wants the answer: cb will not be called. */
void resolve_cancel(struct resolve_req *q);
/* How many helper threads are looking names up now (for tests and diagnostics). */
unsigned resolver_threads(struct resolver *r);

#endif
