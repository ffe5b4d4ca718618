/*
 * stream.c - framed duplex message stream on a non-blocking socket.
 *
 * Thread model: a stream belongs to its loop's thread.
 *
 * Output: stream_send() appends [len][payload] to out and schedules the
 * flush defer; the flush writes what the kernel takes and watches EPOLLOUT
 * for the rest. Input: everything readable is read into in, then each
 * complete frame is handed to on_frame in order.
 *
 * A stream that a client dialled over https:// reads and writes through
 * its TLS session (tls.h), which it owns from stream_new_tls on; a
 * server's upgraded connection is a plain socket (libmicrohttpd keeps the
 * TLS side of it).
 *
 * Re-entrancy: callbacks may free the stream (in_cb / dead, as in
 * httpc.c), and on_close is never called from inside stream_send(): write
 * errors surface from the flush defer.
 */
#include "dtx/stream.h"
#include "dtx/buf.h"
#include "dtx/err.h"
#include "dtx/tls.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define STREAM_IDLE_S 5  /* silence before the first keep-alive probe */
#define STREAM_DEAD_S 12 /* unanswered probes or unacknowledged data: the peer is gone */

struct stream {
    struct ev_loop *loop;
    int fd;
    struct tls_session *tls; /* NULL: plain TCP */
    struct ev_io io;
    struct ev_defer flush;
    struct buf in;
    struct buf out;
    struct stream_cbs cbs;
    bool broken; /* on_close delivered (or pending): no more I/O */
    bool in_cb;
    bool dead;
};

static void stream_break(struct stream *s, int err, const char *why)
{
    if (s->broken)
        return;
    s->broken = true;
    ev_io_stop(s->loop, &s->io);
    ev_defer_cancel(s->loop, &s->flush);
    s->in_cb = true;
    s->cbs.on_close(s->cbs.arg, err, why);
    s->in_cb = false;
}

/* read(2) or send(2), or the TLS session's (-1 and EPROTO for a TLS failure: io_error). */
static ssize_t io_recv(struct stream *s, void *buf, size_t n)
{
    return s->tls ? tls_session_recv(s->tls, buf, n) : read(s->fd, buf, n);
}

static ssize_t io_send(struct stream *s, const void *buf, size_t n)
{
    return s->tls ? tls_session_send(s->tls, buf, n) : send(s->fd, buf, n, MSG_NOSIGNAL);
}

static const char *io_error(const struct stream *s, int e)
{
    return s->tls && e == EPROTO ? tls_session_error(s->tls) : strerror(e);
}

static void stream_dispatch(struct stream *s)
{
    while (!s->broken && !s->dead && buf_avail(&s->in) >= 4) {
        uint32_t len = get_be32((const unsigned char *)buf_head(&s->in));

        if (len > STREAM_MAX_FRAME) {
            stream_break(s, DTX_EPROTO, "peer sent an oversized frame");
            return;
        }
        if (buf_avail(&s->in) < 4 + (size_t)len)
            break;
        s->in_cb = true;
        s->cbs.on_frame(s->cbs.arg, buf_head(&s->in) + 4, len);
        s->in_cb = false;
        buf_consume(&s->in, 4 + (size_t)len);
    }
    if (s->in.off > 65536)
        buf_compact(&s->in);
}

static void stream_read(struct stream *s)
{
    for (;;) {
        ssize_t n;
        int e;

        buf_reserve(&s->in, 65536);
        n = io_recv(s, s->in.data + s->in.len, s->in.cap - s->in.len - 1);
        e = errno; /* the frame callbacks below may change errno */
        if (n > 0) {
            s->in.len += (size_t)n;
            continue;
        }
        if (n < 0 && e == EINTR)
            continue;
        stream_dispatch(s);
        if (s->broken || s->dead)
            return;
        if (n == 0)
            stream_break(s, DTX_EIO, "peer closed the stream");
        else if (e != EAGAIN && e != EWOULDBLOCK)
            stream_break(s, DTX_EIO, io_error(s, e));
        return;
    }
}

static void stream_write(struct stream *s)
{
    while (buf_avail(&s->out) > 0) {
        ssize_t n = io_send(s, buf_head(&s->out), buf_avail(&s->out));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_modify(s->loop, &s->io, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n < 0) {
            stream_break(s, DTX_EIO, io_error(s, errno));
            return;
        }
        buf_consume(&s->out, (size_t)n);
    }
    ev_io_modify(s->loop, &s->io, EPOLLIN);
}

static void on_stream_io(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct stream *s = io->data;

    (void)loop;
    if (revents & EPOLLOUT)
        stream_write(s);
    if (!s->broken && (revents & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        stream_read(s);
    if (s->dead && !s->in_cb)
        stream_free(s);
}

static void on_stream_flush(struct ev_loop *loop, struct ev_defer *d)
{
    struct stream *s = d->data;

    (void)loop;
    stream_dispatch(s); /* frames that arrived with the upgrade answer */
    if (!s->broken && !s->dead)
        stream_write(s);
    if (s->dead && !s->in_cb)
        stream_free(s);
}

/*
 * A peer whose host vanished (power loss, a cut cable) sends no RST, so
 * without this the stream would look open for TCP's ~15 minutes of
 * retransmissions: the coordinator would keep resending commits into it and
 * a participant would keep a dead coordinator's branches. Keep-alive probes
 * after STREAM_IDLE_S seconds of silence, and a limit on unacknowledged
 * data, close such a stream within about STREAM_DEAD_S seconds.
 */
void stream_keep_alive(int fd)
{
    int one = 1, idle = STREAM_IDLE_S, intvl = 2, cnt = 3;
    unsigned int user_timeout_ms = STREAM_DEAD_S * 1000;

    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof(user_timeout_ms));
}

struct stream *stream_new(struct ev_loop *loop, int fd, const char *pre, size_t prelen,
                          const struct stream_cbs *cbs)
{
    return stream_new_tls(loop, fd, NULL, pre, prelen, cbs);
}

struct stream *stream_new_tls(struct ev_loop *loop, int fd, struct tls_session *tls,
                              const char *pre, size_t prelen, const struct stream_cbs *cbs)
{
    struct stream *s = xcalloc(1, sizeof(*s));
    int flags = fcntl(fd, F_GETFL);
    int one = 1;

    s->loop = loop;
    s->fd = fd;
    s->tls = tls;
    s->cbs = *cbs;
    buf_init(&s->in);
    buf_init(&s->out);
    ev_io_init(&s->io, on_stream_io, s);
    ev_defer_init(&s->flush, on_stream_flush, s);
    if (flags >= 0)
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    /* Frames are small and latency-bound: never let Nagle hold one back. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    stream_keep_alive(fd);
    if (ev_io_start(loop, &s->io, fd, EPOLLIN) < 0) {
        s->fd = -1;
        tls_session_free(tls);
        if (cbs->closefd)
            cbs->closefd(cbs->closefd_ctx, fd);
        else
            close(fd);
        free(s);
        return NULL;
    }
    if (prelen) {
        buf_append(&s->in, pre, prelen);
        ev_defer(loop, &s->flush);
    }
    return s;
}

void stream_free(struct stream *s)
{
    if (!s)
        return;
    if (s->in_cb) {
        s->dead = true;
        return;
    }
    ev_io_stop(s->loop, &s->io);
    ev_defer_cancel(s->loop, &s->flush);
    tls_session_free(s->tls);
    if (s->fd >= 0) {
        if (s->cbs.closefd)
            s->cbs.closefd(s->cbs.closefd_ctx, s->fd);
        else
            close(s->fd);
    }
    buf_release(&s->in);
    buf_release(&s->out);
    free(s);
}

void stream_send2(struct stream *s, const char *a, size_t alen, const char *b, size_t blen)
{
    if (s->broken || s->dead)
        return;
    buf_put_be32(&s->out, (uint32_t)(alen + blen));
    buf_append(&s->out, a, alen);
    buf_append(&s->out, b, blen);
    ev_defer(s->loop, &s->flush);
}

void stream_send(struct stream *s, const char *data, size_t len)
{
    stream_send2(s, data, len, NULL, 0);
}

void stream_flush_sync(struct stream *s, int timeout_ms)
{
    uint64_t until = ev_clock_us() + (uint64_t)timeout_ms * 1000u;

    while (!s->broken && !s->dead && buf_avail(&s->out) > 0 && ev_clock_us() < until) {
        struct pollfd p = {s->fd, POLLOUT, 0};
        ssize_t n = io_send(s, buf_head(&s->out), buf_avail(&s->out));

        if (n > 0)
            buf_consume(&s->out, (size_t)n);
        else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
            return;
        else
            poll(&p, 1, 10);
    }
}

size_t stream_pending(const struct stream *s)
{
    return buf_avail(&s->out);
}
