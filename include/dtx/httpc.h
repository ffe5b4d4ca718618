/*
 * httpc.h - a small asynchronous HTTP/1.1 client on the event loop.
 *
 * One struct httpc is one connection to one server, used for one request
 * at a time and kept alive between requests. It speaks just enough HTTP
 * for dtx's own peers and the load generator: Content-Length and chunked
 * bodies, "Connection: close", and "101 Switching Protocols", after which
 * the socket can be taken over (httpc_detach) for a peer stream.
 *
 * Every connect resolves the URL's host afresh, in a helper thread
 * (resolve.h), so a name that did not resolve before, or that now names
 * another address, is followed; an https:// URL gets a TLS session (tls.h)
 * that verifies the server before any byte of the request is sent.
 *
 * A failed request is reported, never retried here: whether a POST that
 * got no answer was executed is for the caller to decide.
 */
#ifndef DTX_HTTPC_H
#define DTX_HTTPC_H

#include <stdbool.h>
#include <stddef.h>

#include "dtx/addr.h"
#include "dtx/buf.h"
#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/resolve.h"
#include "dtx/tls.h"

struct httpc;

/*
 * What a daemon's outgoing connections share; owned by the daemon
 * (daemon.c), it outlives every httpc.
 */
struct dialer {
    struct ev_loop *loop;
    struct resolver *resolver;
    const struct tls_config *tls; /* the daemon's (NULL, or off: https:// URLs fail) */
};

struct httpc_resp {
    int status;
    const char *body; /* NUL-terminated; valid during the callback only */
    size_t body_len;
    const char *upgrade;     /* value of the Upgrade header, or NULL */
    const char *retry_after; /* value of the Retry-After header, or NULL */
};

/*
 * Completion of a request: rc is 0 with resp set, or a negative DTX_E*
 * code (DTX_EIO: connect/send/receive failed, DTX_ETIMEDOUT, DTX_EPROTO:
 * malformed answer) with resp NULL and err describing it. The callback may
 * start another request on c, or free c.
 */
typedef void (*httpc_cb)(void *arg, int rc, const struct httpc_resp *resp,
                         const struct dtx_err *err);

/* Creates an unconnected client for a (a URL); connecting happens on the first request. */
struct httpc *httpc_new(const struct dialer *d, const struct addr *a);
/* Closes the connection and frees c without calling a pending callback. NULL is a no-op. */
void httpc_free(struct httpc *c);

/*
 * Sends a request. headers holds extra header lines, each ending in
 * "\r\n" (may be NULL); body may be NULL. timeout_ms bounds the whole
 * exchange (0: no limit). Returns 0, or DTX_ESTATE if a request is already
 * in flight on c.
 */
int httpc_request(struct httpc *c, const char *method, const char *path, const char *headers,
                  const char *body, size_t len, unsigned timeout_ms, httpc_cb cb, void *arg);

/*
 * After a 101 answer (from within its callback): takes the socket out of
 * c, appends any bytes received after the answer to leftover and returns
 * the fd, which the caller now owns, with its TLS session in *tls (NULL
 * for http://), the caller's too. c is left unconnected. Returns
 * DTX_ESTATE when there is no upgraded connection.
 */
int httpc_detach(struct httpc *c, struct buf *leftover, struct tls_session **tls);

#endif
