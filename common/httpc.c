/*
 * httpc.c - asynchronous HTTP/1.1 client connection.
 *
 * Thread model: a struct httpc belongs to its loop's thread.
 *
 * States:
 *   CLOSED --request--> RESOLVING --address--> CONNECTING --connected-->
 *     HANDSHAKING (https:// only) --verified--> SENDING --sent--> RECEIVING
 *   RECEIVING --complete, keep-alive--> IDLE --request--> SENDING
 *   RECEIVING --complete, close / 101--> CLOSED (101: socket kept for detach)
 *   any --error or timeout--> CLOSED
 * An IDLE connection that becomes readable was closed by the server (or
 * sent garbage) and is dropped, so the next request connects afresh.
 *
 * The host is looked up at every connect (resolve.h; an IP address needs
 * no lookup): a name that does not resolve fails that request like a
 * refused connection. With TLS, every read and write goes through the
 * session (tls.h), which verified the server's certificate and the URL's
 * host during the handshake, before the request's first byte.
 *
 * Re-entrancy: the completion callback may free c or start a new request.
 * While it runs, in_cb is set; httpc_free() then only marks c dead and the
 * dispatcher frees it when the callback returns.
 */
#include "dtx/httpc.h"
#include "dtx/addr.h"
#include "dtx/xalloc.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

enum hc_state {
    HC_CLOSED,
    HC_RESOLVING,
    HC_CONNECTING,
    HC_HANDSHAKING,
    HC_SENDING,
    HC_RECEIVING,
    HC_IDLE,
    HC_UPGRADED
};
enum hc_body { BODY_NONE, BODY_LENGTH, BODY_CHUNKED, BODY_UNTIL_CLOSE };

#define HC_MAX_HEAD (64 * 1024)
#define HC_MAX_BODY (256u * 1024 * 1024)

struct httpc {
    struct ev_loop *loop;
    const struct dialer *d;
    struct addr addr;
    struct resolve_req *rq;  /* while RESOLVING */
    struct tls_session *tls; /* https://, from CONNECTING on */
    enum hc_state state;
    int fd;
    struct ev_io io;
    struct ev_timer timer;
    struct ev_defer fail_later; /* reports a connect that failed at once */
    struct dtx_err fail_err;
    struct buf out;
    struct buf in;
    httpc_cb cb;
    void *arg;
    bool head_only; /* HEAD request: no body follows */
    bool in_cb;
    bool dead;
    /* response being parsed */
    bool have_head;
    int status;
    enum hc_body body_mode;
    size_t content_length;
    size_t chunk_left; /* bytes left in the current chunk; SIZE_MAX: expect a size line */
    bool conn_close;
    char upgrade[64];
    char retry_after[32];
    struct buf body;
};

static void hc_close_fd(struct httpc *c)
{
    if (c->rq)
        resolve_cancel(c->rq);
    c->rq = NULL;
    ev_io_stop(c->loop, &c->io);
    tls_session_free(c->tls);
    c->tls = NULL;
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->state = HC_CLOSED;
    buf_reset(&c->in);
    buf_reset(&c->out);
}

static void hc_reset_response(struct httpc *c)
{
    c->have_head = false;
    c->status = 0;
    c->body_mode = BODY_NONE;
    c->content_length = 0;
    c->chunk_left = SIZE_MAX;
    c->conn_close = false;
    c->upgrade[0] = '\0';
    c->retry_after[0] = '\0';
    buf_reset(&c->body);
}

/*
 * Calls the completion callback once, tolerating httpc_free() inside it;
 * returns false when c was freed (and must not be touched).
 */
static bool hc_finish(struct httpc *c, int rc, const struct httpc_resp *resp,
                      const struct dtx_err *err)
{
    httpc_cb cb = c->cb;
    void *arg = c->arg;

    ev_timer_stop(c->loop, &c->timer);
    c->cb = NULL;
    if (!cb)
        return true;
    c->in_cb = true;
    cb(arg, rc, resp, err);
    c->in_cb = false;
    if (!c->dead)
        return true;
    httpc_free(c);
    return false;
}

/* Fails the request with "<what> host:port[: detail]". */
static void hc_fail(struct httpc *c, int code, const char *what, const char *detail)
{
    struct dtx_err err;

    dtx_err_clear(&err);
    dtx_err_set(&err, code, "%s %s:%u%s%s", what, c->addr.host, (unsigned)c->addr.port,
                detail ? ": " : "", detail ? detail : "");
    hc_close_fd(c);
    hc_finish(c, code, NULL, &err);
}

/* ---- response parsing ------------------------------------------------------- */

static void hc_header(struct httpc *c, const char *name, size_t nlen, const char *val)
{
    if (nlen == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
        c->body_mode = BODY_LENGTH;
        c->content_length = strtoull(val, NULL, 10);
    } else if (nlen == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0) {
        if (strcasestr(val, "chunked"))
            c->body_mode = BODY_CHUNKED;
    } else if (nlen == 10 && strncasecmp(name, "Connection", 10) == 0) {
        if (strcasestr(val, "close"))
            c->conn_close = true;
    } else if (nlen == 7 && strncasecmp(name, "Upgrade", 7) == 0) {
        snprintf(c->upgrade, sizeof(c->upgrade), "%s", val);
    } else if (nlen == 11 && strncasecmp(name, "Retry-After", 11) == 0) {
        snprintf(c->retry_after, sizeof(c->retry_after), "%s", val);
    }
}

/* Parses the status line and headers in head (NUL-terminated, CRLF lines). */
static int hc_parse_head(struct httpc *c, char *head)
{
    char *line, *save = NULL;

    line = strtok_r(head, "\r\n", &save);
    if (!line || strncmp(line, "HTTP/1.", 7) != 0 || strlen(line) < 12)
        return DTX_EPROTO;
    c->status = atoi(line + 9);
    if (c->status < 100 || c->status > 599)
        return DTX_EPROTO;
    c->body_mode = BODY_UNTIL_CLOSE;
    while ((line = strtok_r(NULL, "\r\n", &save)) != NULL) {
        char *colon = strchr(line, ':');
        char *val;

        if (!colon)
            return DTX_EPROTO;
        val = colon + 1;
        while (*val == ' ' || *val == '\t')
            val++;
        hc_header(c, line, (size_t)(colon - line), val);
    }
    if (c->head_only || c->status == 101 || c->status == 204 || c->status == 304 ||
        (c->status >= 100 && c->status < 200))
        c->body_mode = BODY_NONE;
    else if (c->body_mode == BODY_UNTIL_CLOSE)
        c->conn_close = true;
    return 0;
}

/* Returns 1 when the head is complete, 0 when more bytes are needed, <0 on error. */
static int hc_take_head(struct httpc *c)
{
    const char *start = buf_head(&c->in);
    const char *end = memmem(start, buf_avail(&c->in), "\r\n\r\n", 4);
    size_t n;
    char *head;
    int rc;

    if (!end)
        return buf_avail(&c->in) > HC_MAX_HEAD ? DTX_EPROTO : 0;
    n = (size_t)(end - start) + 4;
    head = xstrndup(start, n);
    rc = hc_parse_head(c, head);
    free(head);
    buf_consume(&c->in, n);
    if (rc < 0)
        return rc;
    c->have_head = true;
    return 1;
}

/*
 * Parses a chunk-size line (hex digits, then optional ";extensions") up to
 * eol; -1 unless it is well formed and at most max.
 */
static int parse_chunk_size(const char *p, const char *eol, size_t max, size_t *out)
{
    size_t v = 0;
    int digits = 0;

    for (; p < eol && isxdigit((unsigned char)*p); p++, digits++) {
        v = v * 16 + (size_t)(isdigit((unsigned char)*p) ? *p - '0' : (*p | 0x20) - 'a' + 10);
        if (v > max)
            return -1;
    }
    if (digits == 0 || (p < eol && *p != ';' && *p != ' ' && *p != '\t'))
        return -1;
    *out = v;
    return 0;
}

/* Decodes as much chunked body as has arrived; 1 when the last chunk is in. */
static int hc_take_chunks(struct httpc *c)
{
    for (;;) {
        const char *p = buf_head(&c->in);
        size_t avail = buf_avail(&c->in);
        const char *eol;

        if (c->chunk_left != SIZE_MAX) {
            size_t want = c->chunk_left + 2;

            if (avail < want)
                return 0;
            buf_append(&c->body, p, c->chunk_left);
            buf_consume(&c->in, want);
            c->chunk_left = SIZE_MAX;
            continue;
        }
        eol = memmem(p, avail, "\r\n", 2);
        if (!eol)
            return avail > 1024 ? DTX_EPROTO : 0;
        if (parse_chunk_size(p, eol, HC_MAX_BODY - c->body.len, &c->chunk_left) < 0)
            return DTX_EPROTO;
        if (c->chunk_left == 0) {
            const char *trailer_end = memmem(p, avail, "\r\n\r\n", 4);

            if (!trailer_end) {
                c->chunk_left = SIZE_MAX; /* re-read the size line when more arrives */
                return 0;
            }
            buf_consume(&c->in, (size_t)(trailer_end - p) + 4);
            return 1;
        }
        buf_consume(&c->in, (size_t)(eol - p) + 2);
    }
}

/* Returns 1 when the whole body is in, 0 when more is needed, <0 on error. */
static int hc_take_body(struct httpc *c, bool eof)
{
    size_t avail = buf_avail(&c->in);

    switch (c->body_mode) {
    case BODY_NONE:
        return 1;
    case BODY_LENGTH:
        if (c->content_length > HC_MAX_BODY)
            return DTX_EPROTO;
        if (avail < c->content_length)
            return eof ? DTX_EIO : 0;
        buf_append(&c->body, buf_head(&c->in), c->content_length);
        buf_consume(&c->in, c->content_length);
        return 1;
    case BODY_CHUNKED:
        return eof ? DTX_EIO : hc_take_chunks(c);
    case BODY_UNTIL_CLOSE:
        buf_append(&c->body, buf_head(&c->in), avail);
        buf_consume(&c->in, avail);
        return eof ? 1 : 0;
    }
    return DTX_EPROTO;
}

static void hc_complete(struct httpc *c)
{
    struct httpc_resp resp;

    memset(&resp, 0, sizeof(resp));
    resp.status = c->status;
    resp.body = c->body.data ? c->body.data : "";
    resp.body_len = c->body.len;
    resp.upgrade = c->upgrade[0] ? c->upgrade : NULL;
    resp.retry_after = c->retry_after[0] ? c->retry_after : NULL;
    if (c->status == 101) {
        ev_io_stop(c->loop, &c->io);
        c->state = HC_UPGRADED;
    } else if (c->conn_close || buf_avail(&c->in) > 0) {
        hc_close_fd(c);
    } else {
        c->state = HC_IDLE;
        ev_io_modify(c->loop, &c->io, EPOLLIN);
    }
    if (hc_finish(c, 0, &resp, NULL) && c->state == HC_UPGRADED)
        hc_close_fd(c); /* the callback did not take the socket */
}

/* Parses what has arrived; completes or fails the request when it can. */
static void hc_parse(struct httpc *c, bool eof)
{
    int rc = 1;

    if (!c->have_head) {
        rc = hc_take_head(c);
        if (rc == 0 && eof)
            rc = DTX_EIO;
    }
    if (rc > 0)
        rc = hc_take_body(c, eof);
    if (rc > 0)
        hc_complete(c);
    else if (rc == DTX_EPROTO)
        hc_fail(c, DTX_EPROTO, "malformed HTTP answer from", NULL);
    else if (rc < 0)
        hc_fail(c, DTX_EIO, "connection closed before a complete answer from", NULL);
}

/* ---- I/O ---------------------------------------------------------------------------- */

/* read(2) or the TLS session's; -1 with errno EPROTO for a TLS failure (hc_io_error says it). */
static ssize_t hc_recv(struct httpc *c, void *buf, size_t n)
{
    return c->tls ? tls_session_recv(c->tls, buf, n) : read(c->fd, buf, n);
}

static ssize_t hc_send(struct httpc *c, const void *buf, size_t n)
{
    return c->tls ? tls_session_send(c->tls, buf, n) : send(c->fd, buf, n, MSG_NOSIGNAL);
}

static const char *hc_io_error(const struct httpc *c, int e)
{
    return c->tls && e == EPROTO ? tls_session_error(c->tls) : strerror(e);
}

static void hc_read(struct httpc *c)
{
    for (;;) {
        ssize_t n;

        buf_reserve(&c->in, 16384);
        n = hc_recv(c, c->in.data + c->in.len, c->in.cap - c->in.len - 1);
        if (n > 0) {
            c->in.len += (size_t)n;
            c->in.data[c->in.len] = '\0';
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            hc_parse(c, false);
            return;
        }
        if (n < 0) {
            hc_fail(c, DTX_EIO, "could not read from", hc_io_error(c, errno));
            return;
        }
        hc_parse(c, true);
        return;
    }
}

static void hc_write(struct httpc *c)
{
    while (buf_avail(&c->out) > 0) {
        ssize_t n = hc_send(c, buf_head(&c->out), buf_avail(&c->out));

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_modify(c->loop, &c->io, EPOLLIN | EPOLLOUT);
            return;
        }
        if (n < 0) {
            hc_fail(c, DTX_EIO, "could not send to", hc_io_error(c, errno));
            return;
        }
        buf_consume(&c->out, (size_t)n);
    }
    c->state = HC_RECEIVING;
    ev_io_modify(c->loop, &c->io, EPOLLIN);
}

/* The TLS handshake, verifying the server, then the request. */
static void hc_handshake(struct httpc *c)
{
    struct dtx_err err;
    int rc;

    dtx_err_clear(&err);
    rc = tls_session_handshake(c->tls, &err);
    if (rc < 0) {
        hc_fail(c, DTX_EIO, "TLS handshake failed with", err.msg);
        return;
    }
    if (rc == 0) {
        ev_io_modify(c->loop, &c->io, tls_session_wants_write(c->tls) ? EPOLLOUT : EPOLLIN);
        return;
    }
    c->state = HC_SENDING;
    hc_write(c);
}

static void hc_connected(struct httpc *c)
{
    int soerr = 0;
    socklen_t len = sizeof(soerr);

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        soerr = errno;
    if (soerr) {
        hc_fail(c, DTX_EIO, "could not connect to", strerror(soerr));
        return;
    }
    if (c->addr.tls) {
        struct dtx_err err;

        dtx_err_clear(&err);
        if (tls_session_client(c->d->tls, c->fd, c->addr.host, &c->tls, &err) < 0) {
            hc_fail(c, DTX_EINVAL, "could not talk TLS to", err.msg);
            return;
        }
        c->state = HC_HANDSHAKING;
        hc_handshake(c);
        return;
    }
    c->state = HC_SENDING;
    hc_write(c);
}

static void on_hc_io(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct httpc *c = io->data;

    (void)loop;
    switch (c->state) {
    case HC_CONNECTING:
        hc_connected(c);
        break;
    case HC_HANDSHAKING:
        hc_handshake(c);
        break;
    case HC_SENDING:
        if (revents & EPOLLOUT)
            hc_write(c);
        else
            hc_read(c); /* an early answer or an error */
        break;
    case HC_RECEIVING:
        hc_read(c);
        break;
    case HC_IDLE:
        hc_close_fd(c); /* the server closed an idle connection */
        break;
    default:
        break;
    }
}

static void on_hc_fail_later(struct ev_loop *loop, struct ev_defer *d)
{
    struct httpc *c = d->data;
    struct dtx_err err = c->fail_err;

    (void)loop;
    hc_finish(c, err.code, NULL, &err);
}

static void on_hc_timeout(struct ev_loop *loop, struct ev_timer *t)
{
    struct httpc *c = t->data;

    (void)loop;
    hc_fail(c, DTX_ETIMEDOUT, "no answer in time from", NULL);
}

/* ---- API ------------------------------------------------------------------------------ */

struct httpc *httpc_new(const struct dialer *d, const struct addr *a)
{
    struct httpc *c = xcalloc(1, sizeof(*c));
    c->loop = d->loop;
    c->d = d;
    c->addr = *a;
    c->fd = -1;
    ev_io_init(&c->io, on_hc_io, c);
    ev_timer_init(&c->timer, on_hc_timeout, c);
    ev_defer_init(&c->fail_later, on_hc_fail_later, c);
    buf_init(&c->out);
    buf_init(&c->in);
    buf_init(&c->body);
    return c;
}

void httpc_free(struct httpc *c)
{
    if (!c)
        return;
    if (c->in_cb) {
        c->dead = true;
        return;
    }
    ev_timer_stop(c->loop, &c->timer);
    ev_defer_cancel(c->loop, &c->fail_later);
    hc_close_fd(c);
    buf_release(&c->out);
    buf_release(&c->in);
    buf_release(&c->body);
    free(c);
}

static int hc_connect(struct httpc *c, const struct sockaddr *sa, socklen_t salen,
                      struct dtx_err *err)
{
    int fd = addr_connect(sa, salen, err);

    if (fd < 0) {
        dtx_err_prefix(err, "could not connect to '%s:%u'", c->addr.host, (unsigned)c->addr.port);
        return fd;
    }
    c->fd = fd;
    if (ev_io_start(c->loop, &c->io, fd, EPOLLOUT) < 0) {
        close(fd);
        c->fd = -1;
        return dtx_err_set(err, DTX_EIO, "could not watch socket");
    }
    c->state = HC_CONNECTING;
    return 0;
}

static void on_hc_resolved(void *arg, const struct sockaddr *sa, socklen_t salen,
                           const struct dtx_err *rerr)
{
    struct httpc *c = arg;
    struct dtx_err err;

    c->rq = NULL;
    if (rerr) {
        hc_close_fd(c);
        hc_finish(c, DTX_EIO, NULL, rerr);
        return;
    }
    dtx_err_clear(&err);
    if (hc_connect(c, sa, salen, &err) < 0) {
        hc_close_fd(c);
        hc_finish(c, err.code, NULL, &err);
    }
}

/* Connects to an IP address at once, or looks the name up first (RESOLVING). */
static int hc_open(struct httpc *c, struct dtx_err *err)
{
    if (c->addr.salen > 0)
        return hc_connect(c, (const struct sockaddr *)&c->addr.sa, c->addr.salen, err);
    if (!c->d->resolver)
        return dtx_err_set(err, DTX_EINVAL, "could not look up '%s': no resolver", c->addr.host);
    c->state = HC_RESOLVING;
    c->rq = resolve_start(c->d->resolver, c->addr.host, c->addr.port, on_hc_resolved, c);
    return 0;
}

int httpc_request(struct httpc *c, const char *method, const char *path, const char *headers,
                  const char *body, size_t len, unsigned timeout_ms, httpc_cb cb, void *arg)
{
    int rc;

    if (c->cb || c->state == HC_UPGRADED)
        return DTX_ESTATE;
    hc_reset_response(c);
    buf_reset(&c->out);
    buf_printf(&c->out, "%s %s HTTP/1.1\r\nHost: %s:%u\r\n", method, path, c->addr.host,
               (unsigned)c->addr.port);
    if (headers)
        buf_puts(&c->out, headers);
    if (body || strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0)
        buf_printf(&c->out, "Content-Length: %zu\r\n", len);
    buf_puts(&c->out, "\r\n");
    if (body)
        buf_append(&c->out, body, len);
    c->cb = cb;
    c->arg = arg;
    c->head_only = strcmp(method, "HEAD") == 0;
    if (timeout_ms)
        ev_timer_start(c->loop, &c->timer, timeout_ms);
    if (c->state == HC_IDLE) {
        c->state = HC_SENDING;
        hc_write(c);
        return 0;
    }
    dtx_err_clear(&c->fail_err);
    rc = hc_open(c, &c->fail_err);
    if (rc < 0)
        ev_defer(c->loop, &c->fail_later); /* the callback never runs inside this call */
    return 0;
}

int httpc_detach(struct httpc *c, struct buf *leftover, struct tls_session **tls)
{
    int fd;

    if (c->state != HC_UPGRADED || c->fd < 0)
        return DTX_ESTATE;
    if (buf_avail(&c->in) > 0)
        buf_append(leftover, buf_head(&c->in), buf_avail(&c->in));
    buf_reset(&c->in);
    fd = c->fd;
    c->fd = -1;
    *tls = c->tls;
    c->tls = NULL;
    c->state = HC_CLOSED;
    return fd;
}
