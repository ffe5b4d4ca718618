/*
 * httpd.c - libmicrohttpd in "external polling" epoll mode on an ev loop.
 *
 * Thread model: MHD runs no threads of its own; every MHD call and every
 * handler runs on the loop's thread, so handlers may touch daemon state
 * without locks. MHD's internal epoll fd is watched by the loop; whenever it
 * is readable, when MHD's own timeout expires, or after a suspended
 * connection is resumed, MHD_run() is called.
 *
 * Request lifecycle (struct httpd_req, one per HTTP request):
 *   first access call   -> allocated; an oversized Content-Length is
 *                          answered 413 at once
 *   upload calls        -> body appended (or discarded once over the limit)
 *   final access call   -> handler runs; if it did not reply, the
 *                          connection is suspended and req waits on
 *                          srv->pending
 *   httpd_reply()       -> response queued; a suspended connection is
 *                          resumed and MHD run again
 *   completion callback -> req freed
 *
 * Keep-alive: no response is ever queued on the first access call of a
 * request with a body, because libmicrohttpd 0.9.75 then answers
 * "Connection: close" (checked with curl -v, two requests on one
 * connection); the only exception is the 413 for
 * an announced oversized body, where closing is intended.
 */
#include "dtx/httpd.h"
#include "dtx/addr.h"
#include "dtx/buf.h"
#include "dtx/jsonx.h"
#include "dtx/list.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

struct httpd {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    struct ev_io io;       /* MHD's epoll fd */
    struct ev_timer timer; /* MHD's own timeout */
    struct ev_defer rerun; /* MHD_run at the end of this iteration */
    httpd_handler handler;
    void *ctx;
    size_t max_body;
    struct list_node pending; /* suspended requests awaiting a reply */
};

struct httpd_req {
    struct httpd *srv;
    struct MHD_Connection *con;
    const char *method; /* owned by MHD, valid until completion */
    const char *path;
    struct buf body;
    bool too_big;
    bool dispatched;
    bool suspended;
    bool answered;
    struct list_node link; /* on srv->pending while suspended */
};

struct httpd_upgraded {
    struct httpd *srv;
    struct MHD_UpgradeResponseHandle *urh;
    httpd_upgrade_cb cb;
    void *arg;
};

static void httpd_run(struct httpd *srv);

/* ---- driving MHD from the loop ------------------------------------------ */

static void httpd_schedule(struct httpd *srv)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (MHD_get_timeout(srv->d, &ms) != MHD_YES) {
        ev_timer_stop(srv->loop, &srv->timer);
        return;
    }
    if (ms == 0)
        ev_defer(srv->loop, &srv->rerun);
    else
        ev_timer_start(srv->loop, &srv->timer, ms);
}

static void httpd_run(struct httpd *srv)
{
    MHD_run(srv->d);
    httpd_schedule(srv);
}

static void on_mhd_io(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    (void)loop;
    (void)revents;
    httpd_run(io->data);
}

static void on_mhd_timer(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    httpd_run(t->data);
}

static void on_mhd_rerun(struct ev_loop *loop, struct ev_defer *d)
{
    (void)loop;
    httpd_run(d->data);
}

/* ---- replies ------------------------------------------------------------ */

static void req_queue(struct httpd_req *req, unsigned status, struct MHD_Response *resp)
{
    struct httpd *srv = req->srv;

    xnonnull(resp);
    if (status == 429)
        MHD_add_response_header(resp, "Retry-After", "1"); /* every "too busy" says when again */
    req->answered = true;
    if (MHD_queue_response(req->con, status, resp) != MHD_YES)
        log_warn("could not queue HTTP %u response for %s %s", status, req->method, req->path);
    MHD_destroy_response(resp);
    if (req->suspended) {
        req->suspended = false;
        list_remove(&req->link);
        MHD_resume_connection(req->con);
        ev_defer(srv->loop, &srv->rerun);
    }
}

void httpd_reply(struct httpd_req *req, unsigned status, const char *content_type, char *body,
                 size_t len)
{
    struct MHD_Response *resp;

    if (req->answered) {
        free(body);
        return;
    }
    resp = MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                           body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (resp && content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    req_queue(req, status, resp);
}

void httpd_reply_json(struct httpd_req *req, unsigned status, char *body)
{
    httpd_reply(req, status, "application/json", body, strlen(body));
}

void httpd_reply_error(struct httpd_req *req, const struct dtx_err *err)
{
    httpd_reply_json(req, (unsigned)dtx_err_http_status(err->code), jsonx_error_body(err));
}

void httpd_reply_errorf(struct httpd_req *req, int code, const char *fmt, ...)
{
    struct dtx_err err;
    va_list ap;

    dtx_err_clear(&err);
    va_start(ap, fmt);
    dtx_err_setv(&err, code, fmt, ap);
    va_end(ap);
    httpd_reply_error(req, &err);
}

/* ---- protocol upgrade ----------------------------------------------------- */

static void on_upgraded(void *cls, struct MHD_Connection *con, void *con_cls, const char *extra,
                        size_t extra_len, MHD_socket sock, struct MHD_UpgradeResponseHandle *urh)
{
    struct httpd_upgraded *up = cls;

    (void)con;
    (void)con_cls;
    up->urh = urh;
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CORK_OFF); /* MHD corks while it answers */
    up->cb(up->arg, sock, extra, extra_len, up);
}

void httpd_upgrade(struct httpd_req *req, const char *proto, httpd_upgrade_cb cb, void *arg)
{
    struct httpd_upgraded *up = xcalloc(1, sizeof(*up));
    struct MHD_Response *resp;

    up->srv = req->srv;
    up->cb = cb;
    up->arg = arg;
    resp = MHD_create_response_for_upgrade(on_upgraded, up);
    if (resp) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_UPGRADE, proto);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "Upgrade");
    }
    req_queue(req, MHD_HTTP_SWITCHING_PROTOCOLS, resp);
}

void httpd_upgraded_close(struct httpd_upgraded *up)
{
    if (!up)
        return;
    MHD_upgrade_action(up->urh, MHD_UPGRADE_ACTION_CLOSE);
    ev_defer(up->srv->loop, &up->srv->rerun);
    free(up);
}

/* ---- MHD callbacks ---------------------------------------------------------- */

static struct httpd_req *req_new(struct httpd *srv, struct MHD_Connection *con, const char *method,
                                 const char *path)
{
    struct httpd_req *req = xcalloc(1, sizeof(*req));
    req->srv = srv;
    req->con = con;
    req->method = method;
    req->path = path;
    buf_init(&req->body);
    list_init(&req->link);
    return req;
}

static bool announced_too_big(struct httpd *srv, struct MHD_Connection *con)
{
    const char *cl = MHD_lookup_connection_value(con, MHD_HEADER_KIND, "Content-Length");

    return cl && strtoull(cl, NULL, 10) > srv->max_body;
}

static void req_take_upload(struct httpd_req *req, const char *data, size_t *size)
{
    if (!req->too_big && req->body.len + *size > req->srv->max_body) {
        req->too_big = true;
        buf_release(&req->body);
    }
    if (!req->too_big)
        buf_append(&req->body, data, *size);
    *size = 0;
}

static void reply_too_big(struct httpd_req *req)
{
    httpd_reply_errorf(req, DTX_ETOOBIG, "request body exceeds the limit of %zu bytes",
                       req->srv->max_body);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *con, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls)
{
    struct httpd *srv = cls;
    struct httpd_req *req = *con_cls;

    (void)version;
    if (!req) {
        *con_cls = req = req_new(srv, con, method, url);
        if (announced_too_big(srv, con))
            reply_too_big(req);
        return MHD_YES;
    }
    if (*upload_size) {
        req_take_upload(req, upload, upload_size);
        return MHD_YES;
    }
    if (req->dispatched || req->answered)
        return MHD_YES;
    req->dispatched = true;
    if (req->too_big) {
        reply_too_big(req);
        return MHD_YES;
    }
    if (srv->handler)
        srv->handler(srv->ctx, req);
    else
        httpd_reply_errorf(req, DTX_ESHUTDOWN, "the server is shutting down");
    if (!req->answered) {
        req->suspended = true;
        list_insert_tail(&srv->pending, &req->link);
        MHD_suspend_connection(con);
    }
    return MHD_YES;
}

static void on_completed(void *cls, struct MHD_Connection *con, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct httpd_req *req = *con_cls;

    (void)cls;
    (void)con;
    (void)toe;
    if (!req)
        return;
    list_remove(&req->link);
    buf_release(&req->body);
    free(req);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    (void)cls;
    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    log_warn("http server: %s", line);
}

/* ---- lifecycle ------------------------------------------------------------------ */

static int httpd_attach(struct httpd *srv, struct dtx_err *err)
{
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->d, MHD_DAEMON_INFO_EPOLL_FD);

    if (!info)
        return dtx_err_set(err, DTX_EIO, "could not get the HTTP server's epoll descriptor");
    ev_io_init(&srv->io, on_mhd_io, srv);
    if (ev_io_start(srv->loop, &srv->io, info->epoll_fd, EPOLLIN) < 0)
        return dtx_err_set(err, DTX_EIO, "could not watch the HTTP server's epoll descriptor");
    httpd_schedule(srv);
    return 0;
}

int httpd_start(struct httpd **out, struct ev_loop *loop, const struct httpd_opts *opts,
                httpd_handler handler, void *ctx, struct dtx_err *err)
{
    struct httpd *srv = NULL;
    struct addr a;
    int fd = -1;
    int rc;

    rc = addr_parse(opts->listen, &a, err);
    if (rc < 0)
        return rc;
    fd = addr_listen(&a, 1024, err);
    if (fd < 0)
        return fd;
    srv = xcalloc(1, sizeof(*srv));
    srv->loop = loop;
    srv->handler = handler;
    srv->ctx = ctx;
    srv->max_body = opts->max_body;
    list_init(&srv->pending);
    ev_timer_init(&srv->timer, on_mhd_timer, srv);
    ev_defer_init(&srv->rerun, on_mhd_rerun, srv);
    /* The logger first: MHD warns at every start otherwise, and logs earlier options itself. */
    srv->d = MHD_start_daemon(MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE |
                                  MHD_USE_ERROR_LOG | MHD_USE_TURBO,
                              0, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
                              srv, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
                              on_completed, srv, MHD_OPTION_CONNECTION_LIMIT, opts->conn_limit,
                              MHD_OPTION_CONNECTION_TIMEOUT, opts->idle_timeout_s, MHD_OPTION_END);
    if (!srv->d) {
        rc = dtx_err_set(err, DTX_EIO, "could not start the HTTP server on %s", opts->listen);
        goto out_close_fd;
    }
    rc = httpd_attach(srv, err);
    if (rc < 0)
        goto out_stop;
    *out = srv;
    return 0;

out_stop:
    MHD_stop_daemon(srv->d);
out_close_fd:
    close(fd);
    free(srv);
    return rc;
}

void httpd_quiesce(struct httpd *srv)
{
    int fd = MHD_quiesce_daemon(srv->d);

    if (fd >= 0)
        close(fd);
}

void httpd_detach(struct httpd *srv)
{
    srv->handler = NULL;
}

void httpd_free(struct httpd *srv)
{
    if (!srv)
        return;
    while (!list_empty(&srv->pending)) {
        struct httpd_req *req = container_of(srv->pending.next, struct httpd_req, link);

        httpd_reply_errorf(req, DTX_ESHUTDOWN, "the server is shutting down");
    }
    for (int i = 0; i < 4; i++)
        MHD_run(srv->d);
    ev_io_stop(srv->loop, &srv->io);
    ev_timer_stop(srv->loop, &srv->timer);
    ev_defer_cancel(srv->loop, &srv->rerun);
    MHD_stop_daemon(srv->d);
    free(srv);
}

/* ---- request accessors ------------------------------------------------------------ */

const char *httpd_req_method(const struct httpd_req *req)
{
    return req->method;
}

const char *httpd_req_path(const struct httpd_req *req)
{
    return req->path;
}

const char *httpd_req_arg(const struct httpd_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->con, MHD_GET_ARGUMENT_KIND, name);
}

const char *httpd_req_header(const struct httpd_req *req, const char *name)
{
    return MHD_lookup_connection_value(req->con, MHD_HEADER_KIND, name);
}

const char *httpd_req_body(const struct httpd_req *req, size_t *len)
{
    *len = req->body.len;
    return req->body.data ? req->body.data : "";
}

/* Skips optional whitespace (RFC 9110 OWS). */
static const char *skip_ows(const char *p)
{
    while (*p == ' ' || *p == '\t')
        p++;
    return p;
}

/*
 * Reads one media-type parameter at p (after its ';' and spaces): *name and
 * *value (without quotes) as pointer and length. Returns the end, or NULL
 * when it is malformed.
 */
static const char *media_param(const char *p, const char **name, size_t *nlen, const char **value,
                               size_t *vlen)
{
    *name = p;
    *nlen = strcspn(p, "=; \t");
    p += *nlen;
    if (*nlen == 0 || *p != '=')
        return NULL;
    p++;
    if (*p == '"') {
        *value = ++p;
        *vlen = strcspn(p, "\"\\");
        p += *vlen;
        return *p == '"' ? skip_ows(p + 1) : NULL;
    }
    *value = p;
    *vlen = strcspn(p, "; \t");
    return skip_ows(p + *vlen);
}

/*
 * True when ct names JSON: "application/json" in any case, with optional
 * parameters, of which a charset must be UTF-8 (the only encoding of JSON,
 * RFC 8259).
 */
static bool is_json_type(const char *ct)
{
    const char *p = skip_ows(ct);

    if (strncasecmp(p, "application/json", 16) != 0)
        return false;
    p = skip_ows(p + 16);
    while (*p == ';') {
        const char *name, *value;
        size_t nlen, vlen;

        p = skip_ows(p + 1);
        if (*p == '\0' || *p == ';') /* an empty parameter */
            continue;
        p = media_param(p, &name, &nlen, &value, &vlen);
        if (!p)
            return false;
        if (nlen == 7 && strncasecmp(name, "charset", 7) == 0 &&
            !(vlen == 5 && strncasecmp(value, "utf-8", 5) == 0) &&
            !(vlen == 4 && strncasecmp(value, "utf8", 4) == 0))
            return false;
    }
    return *p == '\0';
}

int httpd_req_json_body(const struct httpd_req *req, const char **body, size_t *len,
                        struct dtx_err *err)
{
    const char *ct = httpd_req_header(req, MHD_HTTP_HEADER_CONTENT_TYPE);

    if (req->body.len > 0 && ct && !is_json_type(ct))
        return dtx_err_set(err, DTX_EMEDIATYPE,
                           "request body of type '%.100s' is not accepted: send JSON with "
                           "'Content-Type: application/json'",
                           ct);
    *body = httpd_req_body(req, len);
    return 0;
}

bool httpd_req_has_token(const struct httpd_req *req, const char *token)
{
    const char *h = httpd_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    size_t n = strlen(token);
    unsigned char diff = 0;

    if (!h || strncmp(h, "Bearer ", 7) != 0)
        return false;
    h += 7;
    if (strlen(h) != n)
        return false;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(h[i] ^ token[i]);
    return diff == 0;
}
