/*
 * stream.h - a framed, full-duplex message stream over one socket: the
 * transport between the coordinator and each participant.
 *
 * A frame is a 4-byte big-endian length followed by that many bytes (one
 * JSON message). Frames queued during one loop iteration leave with one
 * write at the end of the iteration, so under load many protocol messages
 * share a system call and a TCP segment. Messages are independent: a slow
 * one never holds up another (no head-of-line blocking as with
 * request/response batches).
 *
 * The stream is established by an HTTP upgrade (GET /v1/peer/stream with
 * "Upgrade: dtx-peer/1"); this module only sees the socket afterwards.
 */
#ifndef DTX_STREAM_H
#define DTX_STREAM_H

#include <stddef.h>

#include "dtx/ev.h"

#define STREAM_PROTO     "dtx-peer/1"
#define STREAM_MAX_FRAME (64u * 1024 * 1024)

struct stream;

/* One received frame; data is valid during the call only. */
typedef void (*stream_frame_cb)(void *arg, const char *data, size_t len);
/*
 * The stream broke (EOF, I/O error, oversized frame); err is a DTX_E*
 * code. Called once; the owner must then stream_free() it (it may do so
 * inside this callback).
 */
typedef void (*stream_close_cb)(void *arg, int err, const char *why);
/* Closes the socket when the stream is freed (for sockets MHD must close). */
typedef void (*stream_closefd_fn)(void *ctx, int fd);

struct stream_cbs {
    stream_frame_cb on_frame;
    stream_close_cb on_close;
    void *arg;
    stream_closefd_fn closefd; /* NULL: close(2) */
    void *closefd_ctx;
};

/*
 * Takes over fd (made non-blocking here); pre holds bytes already read
 * from it. Returns the stream, or NULL if the fd cannot be watched (the fd
 * is then closed through closefd).
 */
struct stream *stream_new(struct ev_loop *loop, int fd, const char *pre, size_t prelen,
                          const struct stream_cbs *cbs);
/*
 * The same over the TLS session tls of a dialled https:// connection
 * (httpc_detach): the stream owns tls and frees it with itself, also when
 * it returns NULL.
 */
struct tls_session;
struct stream *stream_new_tls(struct ev_loop *loop, int fd, struct tls_session *tls,
                              const char *pre, size_t prelen, const struct stream_cbs *cbs);
/* Closes the socket and frees the stream; safe inside its own callbacks. NULL is a no-op. */
void stream_free(struct stream *s);

/*
 * Sets fd's TCP keep-alive and user timeout so that a vanished peer ends
 * its stream within seconds (done by stream_new; httpd.c does it for the
 * TCP socket under an upgraded HTTPS connection, whose stream is on a
 * socket pair).
 */
void stream_keep_alive(int fd);

/* Queues one frame (copied); it is sent at the end of this loop iteration. */
void stream_send(struct stream *s, const char *data, size_t len);
/* Queues one frame made of two parts, a then b (copied). */
void stream_send2(struct stream *s, const char *a, size_t alen, const char *b, size_t blen);
/* Writes what is queued now, waiting at most timeout_ms (used just before a simulated crash). */
void stream_flush_sync(struct stream *s, int timeout_ms);

/* Bytes queued but not yet accepted by the kernel. */
size_t stream_pending(const struct stream *s);

#endif
