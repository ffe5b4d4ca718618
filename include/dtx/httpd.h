/*
 * httpd.h - the HTTP server of both daemons: libmicrohttpd driven from the
 * daemon's own event loop (no MHD threads), with asynchronous replies.
 *
 * The handler is called once per request, after the whole body has
 * arrived. It may reply at once (httpd_reply*) or keep the request and
 * reply later from any loop callback; in between, the connection is
 * suspended and costs nothing but memory. Every request must get exactly
 * one reply. Bodies over the configured limit are answered 413 without
 * reaching the handler.
 *
 * A handler can instead switch the connection to another protocol
 * (httpd_upgrade): after the 101 answer, the raw socket is handed to a
 * callback; the peer streams run on such sockets.
 *
 * Nobody can starve the others: a connection must deliver each complete
 * request (headers and body) within request_timeout_ms of its opening or
 * of its previous answer, or it is closed (slow senders and idle
 * keep-alive connections alike); one client address holds at most
 * per_ip_limit connections and all together at most conn_limit: a new
 * connection over either limit pushes out the one that has waited longest
 * for a complete request, of its own address, or of the address that
 * holds the most connections, and is not sending (or is refused when
 * there is none). The
 * addresses in peers (the daemon's own coordinators or participants) have
 * HTTPD_PEER_RESERVE connections more, and theirs are never pushed out for
 * others'. Such closes, and requests
 * refused as malformed or unauthorised, are logged at most once a second
 * per kind.
 */
#ifndef DTX_HTTPD_H
#define DTX_HTTPD_H

#include <stdbool.h>
#include <stddef.h>

#include "dtx/addr.h"
#include "dtx/auth.h"
#include "dtx/err.h"
#include "dtx/ev.h"

struct httpd;
struct tls_config;
struct httpd_req;
struct httpd_upgraded;

/* Connections each of opts.peers may have beyond conn_limit and per_ip_limit. */
#define HTTPD_PEER_RESERVE 64

struct httpd_opts {
    const char *listen;           /* "host:port" */
    size_t max_body;              /* larger bodies are answered 413 */
    unsigned conn_limit;          /* simultaneous connections */
    unsigned per_ip_limit;        /* ... from one client address (0: no limit of its own) */
    unsigned request_timeout_ms;  /* a complete request must come within this (0: no deadline) */
    unsigned idle_timeout_s;      /* a connection with no traffic at all is closed after this */
    const struct addr *peers;     /* addresses with a reserve of their own (may be NULL) */
    const struct tls_config *tls; /* on: HTTPS (NULL or off: HTTP); read at every handshake */
    size_t npeers;
};

typedef void (*httpd_handler)(void *ctx, struct httpd_req *req);

/* Called with the socket of an upgraded connection; extra holds bytes already read from it. */
typedef void (*httpd_upgrade_cb)(void *arg, int fd, const char *extra, size_t extra_len,
                                 struct httpd_upgraded *up);

/*
 * Starts listening. Returns 0 and *out, or DTX_EIO / DTX_EINVAL with a
 * message (address in use, bad address); on error *out is not modified.
 */
int httpd_start(struct httpd **out, struct ev_loop *loop, const struct httpd_opts *opts,
                httpd_handler handler, void *ctx, struct dtx_err *err);
/* Stops accepting connections (graceful shutdown); open connections go on. */
void httpd_quiesce(struct httpd *srv);
/* The handler is never called again: requests from now on are answered 503 (before the
 * handler's ctx goes away). */
void httpd_detach(struct httpd *srv);
/*
 * Answers 503 to every request still waiting for a reply, closes all
 * connections and frees the server. NULL is a no-op. Upgraded sockets must
 * have been closed (httpd_upgraded_close) before.
 */
void httpd_free(struct httpd *srv);

/* Request accessors; strings stay valid until the reply. */
const char *httpd_req_method(const struct httpd_req *req);
const char *httpd_req_path(const struct httpd_req *req);
/* A query-string argument or request header, or NULL. */
const char *httpd_req_arg(const struct httpd_req *req, const char *name);
const char *httpd_req_header(const struct httpd_req *req, const char *name);
const char *httpd_req_body(const struct httpd_req *req, size_t *len);
/*
 * A number from a query argument or a header: true with *out when s is 1
 * to 20 decimal digits (no sign, no space, nothing else) of a value at
 * most max; false otherwise (NULL included), with *out not modified.
 * strtoull alone takes "-1" as 2^64 - 1 and saturates silently.
 */
bool httpd_parse_u64(const char *s, uint64_t max, uint64_t *out);
/*
 * The body of a request that takes JSON. Returns 0 with *body and *len
 * (len 0 when there is no body), or DTX_EMEDIATYPE (415) when the body is
 * labelled as something else: a Content-Type other than application/json
 * (any case, parameters allowed, a charset must be UTF-8). A body without
 * a Content-Type is taken as JSON, as the API has no other kind. On error
 * *body and *len are not modified.
 */
int httpd_req_json_body(const struct httpd_req *req, const char **body, size_t *len,
                        struct dtx_err *err);
/*
 * True when the request carries "Authorization: Bearer <token>" with t's
 * token (the scheme in any case; compared as auth.h says, in constant
 * time). False when t is unset.
 */
bool httpd_req_has_token(const struct httpd_req *req, const struct auth_token *t);
/* The token of "Authorization: Bearer <token>" (the scheme in any case), or NULL. */
const char *httpd_req_bearer(const struct httpd_req *req);

#define HTTPD_REPLY_HEADERS_MAX 4

/*
 * A header the reply will carry, whenever and however it is sent (names
 * under 32 bytes, values under 160; beyond HTTPD_REPLY_HEADERS_MAX, or
 * longer, it is dropped). The caller checks that value is a valid header
 * value (no CR, LF).
 */
void httpd_req_add_reply_header(struct httpd_req *req, const char *name, const char *value);

/*
 * Sends the reply. body is malloc'd and owned by the server from here on
 * (NULL with len 0 for an empty body). After this call req is gone.
 */
void httpd_reply(struct httpd_req *req, unsigned status, const char *content_type, char *body,
                 size_t len);
/* Replies with a JSON body (body owned as above). */
void httpd_reply_json(struct httpd_req *req, unsigned status, char *body);
/* Replies with the contract's error body for err; the status comes from err->code. */
void httpd_reply_error(struct httpd_req *req, const struct dtx_err *err);
/* Same with a status, code and message given directly. */
void httpd_reply_errorf(struct httpd_req *req, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Answers 101 Switching Protocols with "Upgrade: proto" and hands the
 * socket to cb once the answer is sent. After this call req is gone.
 */
void httpd_upgrade(struct httpd_req *req, const char *proto, httpd_upgrade_cb cb, void *arg);
/* Closes an upgraded socket (never close() it directly). */
void httpd_upgraded_close(struct httpd_upgraded *up);

#endif
