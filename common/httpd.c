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
 *
 * Connections (struct httpd_conn, one per TCP connection, from MHD's
 * connection notification): a connection is "waiting" from its accept,
 * and again from the end of each answer, until its next request is
 * complete (the final access call). Waiting connections are on
 * srv->waiting and on their address's list, oldest first, each with a
 * deadline (opts.request_timeout_ms later): one timer closes those past
 * it. MHD's own timeout only counts silence, which a byte a second
 * defeats. An answer has the same deadline to be taken: from its queueing
 * until MHD says it went, its connection is on srv->waiting too
 * ("answering", not on its address's list, so never pushed out), and a
 * client that reads it a few bytes at a time is closed with it. Limits
 * are counted here, per client address (struct httpd_client), not by MHD:
 * over a limit, the waiting connection that is oldest goes (of that
 * address, or of the address that holds the most, srv->by_open), so that
 * a flood of idle connections cannot keep anyone out, nor push out a
 * client that has one connection; MHD's own limit sits above ours
 * (HTTPD_SPARE, the reserves) and is only reached while closes are in
 * flight. Closing is a shutdown(2) of the socket: MHD reads the end of
 * the stream and closes the connection itself (it has no call to close
 * one). The configured peers' addresses have HTTPD_PEER_RESERVE
 * connections more than the limits allow, and theirs are never pushed
 * out for others', so a coordinator can always reach its participant.
 * A peer configured by host name is looked up every HTTPD_PEER_LOOKUP_MS
 * (resolve.h), and its reserve goes to the address the name has.
 *
 * HTTPS (opts.tls on): MHD makes a GnuTLS session for each connection;
 * before its handshake (the connection notification) tls_server_attach
 * gives it the credentials in use at that moment (tls.h), so that
 * certificates replaced on SIGHUP serve every handshake from then on while
 * open connections go on with the ones they started with. MHD's own
 * certificate callback is never used: a session that could not be
 * attached fails its handshake. An upgraded connection (a peer stream)
 * reaches the handler as one end of a socket pair; MHD encrypts what
 * passes through it, and TCP keep-alive is set on the real socket here.
 *
 * Thread model: the loop's thread, like everything in this file.
 */
#include "dtx/httpd.h"
#include "dtx/addr.h"
#include "dtx/buf.h"
#include "dtx/hmap.h"
#include "dtx/jsonx.h"
#include "dtx/list.h"
#include "dtx/log.h"
#include "dtx/resolve.h"
#include "dtx/stream.h"
#include "dtx/tls.h"
#include "dtx/xalloc.h"

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

/* MHD's limit is ours plus the peers' reserve, HTTPD_BACKLOG (connections accepted in one go,
 * each pushing out one that MHD closes later) and this. */
#define HTTPD_SPARE 32
/* How long a new connection may be idle before it is pushed out first (victim_of_most). */
#define HTTPD_GRACE_US 100000u
/* The kernel's queue of connections not yet accepted (MHD accepts what is queued in one go). */
#define HTTPD_BACKLOG 1024
/*
 * Looking for a connection to push out costs a system call per connection
 * looked at (conn_peek), on the loop that serves every client: at most
 * HTTPD_PEEK_MAX of one address's (over the per-address limit), and
 * HTTPD_PEEK_BUDGET in each of the two passes over the addresses holding
 * the most (over the whole limit; the second only when the first found
 * none): at most 16 + 2 x 64 for one new connection. Without a bound, an address holding 1,000
 * waiting connections (a flood behind a proxy, with no per-address limit) made every new connection
 * cost 1,000 of them.
 */
#define HTTPD_PEEK_MAX    16
#define HTTPD_PEEK_BUDGET 64
#define ADDR_KEY          INET6_ADDRSTRLEN
/* At most this many immediate re-runs of MHD in a row, then a pause (httpd_schedule). */
#define HTTPD_RERUN_MAX      16
#define HTTPD_RERUN_PAUSE_MS 5
/* A peer named by a host name: looked up again this often (it may move, or resolve only later). */
#define HTTPD_PEER_LOOKUP_MS 10000

/* The kinds of log line a client can cause, each at most once a second. */
enum httpd_note {
    NOTE_DEADLINE,     /* closed: no complete request in time */
    NOTE_ANSWER,       /* closed: an answer not taken in time */
    NOTE_PER_IP,       /* closed: an address over its limit */
    NOTE_FULL,         /* closed: all connections in use */
    NOTE_REFUSED,      /* a request answered 400, 405, 413 or 415 */
    NOTE_UNAUTHORIZED, /* a request answered 401 or 403 */
    NOTE_MHD,          /* libmicrohttpd's own messages */
    NOTE_TLS,          /* a TLS client refused (plain HTTP, its certificate) */
    NOTE_KINDS
};

struct httpd {
    struct ev_loop *loop;
    struct MHD_Daemon *d;
    struct ev_io io;       /* MHD's epoll fd */
    struct ev_timer timer; /* MHD's own timeout */
    struct ev_defer rerun; /* MHD_run at the end of this iteration */
    unsigned reruns;       /* MHD said "run again at once" this many times in a row ... */
    uint64_t moved;        /* ... with no byte moved through a TLS connection (tls.h) */
    uint64_t moved_seen;
    httpd_handler handler;
    void *ctx;
    size_t max_body;
    struct list_node pending; /* suspended requests awaiting a reply */
    /* connections (see the top of this file) */
    unsigned conn_limit, per_ip_limit;
    uint64_t request_timeout_us;
    unsigned open;              /* connections open and not being closed */
    struct list_node waiting;   /* connections waiting for a complete request, oldest first */
    struct ev_timer deadline;   /* for the first of them */
    struct hmap clients;        /* client address -> struct httpd_client */
    struct list_node **by_open; /* [n]: the clients (not peers) with n connections open */
    size_t nby_open;
    size_t max_open; /* no client has more open; by_open[max_open] may be empty */
    char (*peer_keys)[ADDR_KEY];
    size_t npeers;
    struct httpd_peer *peers;     /* [npeers]: where each peer's key comes from */
    struct resolver *resolver;    /* for the peers named by a host name (NULL: none is) */
    struct ev_timer peer_lookup;  /* ... looked up every HTTPD_PEER_LOOKUP_MS */
    const struct tls_config *tls; /* the daemon's (NULL: plain HTTP) */
    struct log_rate notes[NOTE_KINDS];
};

/* A configured peer (opts.peers[i]); one named by a host name is looked up again and again. */
struct httpd_peer {
    struct httpd *srv;
    size_t i;
    struct addr addr;
    struct resolve_req *rq; /* a lookup in progress */
};

/* One client address: its connections. */
struct httpd_client {
    struct hmap_node node;
    char key[ADDR_KEY];
    bool peer;                /* a configured peer: HTTPD_PEER_RESERVE more, never pushed out */
    unsigned conns;           /* connections MHD holds, also those being closed */
    unsigned open;            /* ... not being closed */
    struct list_node waiting; /* its waiting connections, oldest first */
    struct list_node by_open; /* on srv->by_open[open] (not a peer, open > 0) */
};

/* One TCP connection (MHD's socket context). */
struct httpd_conn {
    struct httpd *srv;
    struct httpd_client *client;
    int fd;
    uint64_t deadline_us;       /* while waiting, or answering */
    struct list_node wait_link; /* on srv->waiting while waiting or answering */
    struct list_node addr_link; /* on client->waiting while waiting */
    bool closing;               /* shut down by us; MHD has not closed it yet */
    bool upgraded;              /* handed to another protocol: never waits again */
    bool answering;             /* on srv->waiting for its answer to be taken, not a request */
    struct tls_server_conn tls; /* HTTPS: the credentials its session holds */
};

struct httpd_req {
    struct httpd *srv;
    struct httpd_conn *conn; /* NULL only if MHD gave none */
    struct MHD_Connection *con;
    const char *method; /* owned by MHD, valid until completion */
    const char *path;
    struct buf body;
    bool too_big;
    bool dispatched;
    bool suspended;
    bool answered;
    struct list_node link; /* on srv->pending while suspended */
    struct {
        char name[32];
        char value[160];
    } extra[HTTPD_REPLY_HEADERS_MAX]; /* added to the reply (httpd_req_add_reply_header) */
    int nextra;
};

struct httpd_upgraded {
    struct httpd *srv;
    struct MHD_UpgradeResponseHandle *urh;
    httpd_upgrade_cb cb;
    void *arg;
};

static void httpd_run(struct httpd *srv);

/* ---- driving MHD from the loop ------------------------------------------ */

/*
 * MHD says when to run it again. "At once" is a deferred run in this loop
 * iteration, but not forever: a TLS connection in the middle of its
 * handshake stays on MHD's ready list until the handshake moves on
 * (libmicrohttpd 0.9.75 clears a connection's read-ready state on EAGAIN
 * from its record layer only, never from gnutls_handshake), so a client
 * that sends part of its handshake and waits made MHD say "at once" on
 * every run: the loop re-ran MHD without end, hashing (measured: a
 * coordinator spinning in gnutls_handshake, deaf to SIGTERM). So with
 * TLS, after HTTPD_RERUN_MAX such runs in a row that moved no byte
 * through any TLS connection (tls_server_conn.moved), it waits
 * HTTPD_RERUN_PAUSE_MS (real I/O still runs MHD at once, through its
 * epoll descriptor) until MHD names a real timeout or bytes move again.
 */
static void httpd_schedule(struct httpd *srv)
{
    MHD_UNSIGNED_LONG_LONG ms;

    if (MHD_get_timeout(srv->d, &ms) != MHD_YES) {
        srv->reruns = 0;
        ev_timer_stop(srv->loop, &srv->timer);
        return;
    }
    if (ms > 0 || srv->moved != srv->moved_seen) {
        srv->reruns = 0;
        srv->moved_seen = srv->moved;
    }
    if (ms > 0)
        ev_timer_start(srv->loop, &srv->timer, ms);
    else if (!srv->tls || ++srv->reruns <= HTTPD_RERUN_MAX)
        ev_defer(srv->loop, &srv->rerun);
    else
        ev_timer_start(srv->loop, &srv->timer, HTTPD_RERUN_PAUSE_MS);
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

/* ---- connections: deadlines and limits ------------------------------------- */

static void note(struct httpd *srv, enum httpd_note kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One line of a kind a client can cause: at most one a second, saying how many were left out. */
static void note(struct httpd *srv, enum httpd_note kind, const char *fmt, ...)
{
    unsigned long dropped;
    char msg[700];
    va_list ap;

    if (!log_rate_allow(&srv->notes[kind], &dropped))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (dropped)
        log_warn("%s (and %lu more like it since the last such line)", msg, dropped);
    else
        log_warn("%s", msg);
}

/* The text form of a client's IP address (an IPv4-mapped IPv6 one as IPv4), "?" if unknown. */
static void addr_key(const struct sockaddr *sa, char key[ADDR_KEY])
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

    snprintf(key, ADDR_KEY, "?");
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, key,
                  ADDR_KEY);
    else if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        inet_ntop(AF_INET, &in6->sin6_addr.s6_addr[12], key, ADDR_KEY);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &in6->sin6_addr, key, ADDR_KEY);
}

static void deadline_arm(struct httpd *srv)
{
    const struct httpd_conn *c;
    uint64_t now = ev_clock_us();

    if (list_empty(&srv->waiting) || !srv->request_timeout_us) {
        ev_timer_stop(srv->loop, &srv->deadline);
        return;
    }
    c = container_of(srv->waiting.next, struct httpd_conn, wait_link);
    ev_timer_start_us(srv->loop, &srv->deadline, c->deadline_us > now ? c->deadline_us - now : 0);
}

/* Adds delta (+1 or -1) to cl's open connections, and to the server's. */
static void client_count(struct httpd *srv, struct httpd_client *cl, int delta)
{
    cl->open = (unsigned)((int)cl->open + delta);
    srv->open = (unsigned)((int)srv->open + delta);
    if (cl->peer)
        return;
    list_remove(&cl->by_open);
    if (cl->open == 0)
        return;
    if (cl->open >= srv->nby_open) {
        size_t n = srv->nby_open ? srv->nby_open * 2 : 64;

        while (n <= cl->open)
            n *= 2;
        srv->by_open = xrealloc(srv->by_open, n * sizeof(*srv->by_open));
        for (size_t i = srv->nby_open; i < n; i++) {
            srv->by_open[i] = xmalloc(sizeof(**srv->by_open));
            list_init(srv->by_open[i]);
        }
        srv->nby_open = n;
    }
    list_insert_tail(srv->by_open[cl->open], &cl->by_open);
    if (cl->open > srv->max_open)
        srv->max_open = cl->open;
}

/* c's request is complete (or answered): it waits no more. The timer may fire early; harmless. */
static void conn_served(struct httpd_conn *c)
{
    if (!c)
        return;
    list_remove(&c->wait_link);
    list_remove(&c->addr_link);
    c->answering = false;
}

/* c waits for its next complete request, from now on. */
static void conn_wait(struct httpd_conn *c)
{
    struct httpd *srv;
    bool first;

    if (c && c->answering) /* its answer is taken: now it waits for the next request */
        conn_served(c);
    if (!c || c->closing || c->upgraded || list_linked(&c->wait_link))
        return;
    srv = c->srv;
    first = list_empty(&srv->waiting);
    c->deadline_us = ev_clock_us() + srv->request_timeout_us;
    list_insert_tail(&srv->waiting, &c->wait_link);
    list_insert_tail(&c->client->waiting, &c->addr_link);
    if (first)
        deadline_arm(srv);
}

/*
 * An answer was queued on c: its client must take it within the deadline
 * too, or c is closed, and the answer with it. Not on its address's list:
 * a connection being answered is never pushed out for a newcomer.
 */
static void conn_answering(struct httpd_conn *c)
{
    struct httpd *srv;
    bool first;

    if (!c || c->closing || c->upgraded)
        return;
    srv = c->srv;
    conn_served(c);
    first = list_empty(&srv->waiting);
    c->deadline_us = ev_clock_us() + srv->request_timeout_us;
    c->answering = true;
    list_insert_tail(&srv->waiting, &c->wait_link);
    if (first)
        deadline_arm(srv);
}

/* Closes c: MHD reads the end of the stream and closes the connection (notifying on_connection). */
static void conn_close(struct httpd_conn *c)
{
    struct httpd *srv = c->srv;

    conn_served(c);
    c->closing = true;
    client_count(srv, c->client, -1);
    shutdown(c->fd, SHUT_RDWR);
    ev_defer(srv->loop, &srv->rerun);
}

static void on_deadline(struct ev_loop *loop, struct ev_timer *t)
{
    struct httpd *srv = t->data;
    uint64_t now = ev_clock_us();

    (void)loop;
    while (!list_empty(&srv->waiting)) {
        struct httpd_conn *c = container_of(srv->waiting.next, struct httpd_conn, wait_link);

        if (c->deadline_us > now)
            break;
        if (c->answering)
            note(srv, NOTE_ANSWER,
                 "closed a connection from %s: its answer was not taken within %llu ms "
                 "(http_request_timeout_ms)",
                 c->client->key, (unsigned long long)(srv->request_timeout_us / 1000));
        else
            note(srv, NOTE_DEADLINE,
                 "closed a connection from %s: no complete request within %llu ms of its "
                 "opening or its last answer (http_request_timeout_ms)",
                 c->client->key, (unsigned long long)(srv->request_timeout_us / 1000));
        conn_close(c);
    }
    deadline_arm(srv);
}

/* What the client of a waiting connection is doing, as far as its socket tells (conn_peek). */
enum conn_peek {
    CONN_IDLE,    /* nothing to read: it may be pushed out */
    CONN_SENDING, /* bytes MHD has not read yet (a burst of accepts can come first): spared */
    CONN_GONE,    /* its client has closed it (MHD has not noticed yet): the first to go */
};

static enum conn_peek conn_peek(const struct httpd_conn *c)
{
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

    if (n > 0)
        return CONN_SENDING;
    if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
        return CONN_GONE;
    return CONN_IDLE;
}

/*
 * The connection of cl to push out, other than spare (the newcomer, which
 * has had no time to send yet): one whose client has closed it, whenever
 * it began to wait; else the oldest idle one that began to wait at
 * started_by (ev_clock_us) or before; NULL when there is none. A client
 * that closes its connection after each answer and connects again at once
 * has the old one still counted here for a moment, and that one is gone,
 * not the new one. cl->waiting is in the order the connections began to
 * wait. Only its first HTTPD_PEEK_MAX are looked at, and no more than
 * *budget (which is spent): of a client with few connections, all.
 */
static struct httpd_conn *idle_of(struct httpd_client *cl, const struct httpd_conn *spare,
                                  uint64_t started_by, unsigned *budget)
{
    struct httpd_conn *first = NULL;
    struct list_node *p;
    unsigned looked = 0;

    for (p = cl->waiting.next; p != &cl->waiting; p = p->next) {
        struct httpd_conn *c = container_of(p, struct httpd_conn, addr_link);
        enum conn_peek st;

        if (c == spare)
            continue;
        if (looked == HTTPD_PEEK_MAX || *budget == 0)
            break;
        looked++;
        (*budget)--;
        st = conn_peek(c);
        if (st == CONN_GONE)
            return c;
        if (st == CONN_IDLE && !first && c->deadline_us - c->srv->request_timeout_us <= started_by)
            first = c;
    }
    return first;
}

/*
 * The connection to push out when all are in use: the oldest idle waiting
 * one of the addresses that hold the most connections (a flood's, not a
 * client's with one), never a peer's, never spare (the newcomer). NULL
 * when there is none. A client that closes its connection after each
 * answer and opens the next at once holds two for a moment (the server
 * has not seen the first one's end yet): its new connection, with no
 * bytes read yet, must not be the one pushed out for that.
 */
static struct httpd_conn *oldest_of_most(struct httpd *srv, const struct httpd_conn *spare,
                                         uint64_t started_by, unsigned *budget)
{
    for (size_t n = srv->max_open; n > 0 && *budget > 0; n--) {
        struct list_node *head = srv->by_open[n], *p;
        struct httpd_conn *oldest = NULL;

        if (list_empty(head) && n == srv->max_open) {
            srv->max_open--; /* nobody has that many any more */
            continue;
        }
        for (p = head->next; p != head && *budget > 0; p = p->next) {
            struct httpd_conn *c =
                idle_of(container_of(p, struct httpd_client, by_open), spare, started_by, budget);

            if (c && (!oldest || c->deadline_us < oldest->deadline_us))
                oldest = c;
        }
        if (oldest)
            return oldest;
    }
    return NULL;
}

/*
 * The connection to push out when all are in use (see oldest_of_most):
 * first among those that have waited HTTPD_GRACE_US or more, so that a
 * client connected a moment ago, whose bytes are on their way, is not
 * taken while connections that have idled longer are there; then among
 * all.
 */
static struct httpd_conn *victim_of_most(struct httpd *srv, const struct httpd_conn *spare)
{
    uint64_t now = ev_clock_us();
    struct httpd_conn *c = NULL;
    unsigned budget = HTTPD_PEEK_BUDGET, rest = HTTPD_PEEK_BUDGET; /* one for each pass */

    if (now > HTTPD_GRACE_US)
        c = oldest_of_most(srv, spare, now - HTTPD_GRACE_US, &budget);
    return c ? c : oldest_of_most(srv, spare, UINT64_MAX, &rest);
}

/*
 * A new connection c (already waiting): over its address's limit, the
 * oldest waiting connection of that address goes; over conn_limit, the
 * oldest waiting one of the address holding the most (victim_of_most); c
 * itself when there is none. A peer's connections have
 * HTTPD_PEER_RESERVE more on top of both limits, and are never pushed out
 * for others.
 */
static void conn_enforce(struct httpd *srv, struct httpd_conn *c)
{
    struct httpd_client *cl = c->client;
    unsigned reserve = cl->peer ? HTTPD_PEER_RESERVE : 0;
    unsigned limit = srv->per_ip_limit ? srv->per_ip_limit + reserve : 0;
    struct httpd_conn *victim;

    if (limit && cl->open > limit) {
        unsigned budget = HTTPD_PEEK_BUDGET;

        victim = idle_of(cl, c, UINT64_MAX, &budget);
        if (!victim)
            victim = c;
        note(srv, NOTE_PER_IP,
             "%u connections from %s, over its limit of %u (http_conn_limit_per_ip): closed "
             "the %s",
             cl->open, cl->key, limit,
             victim == c ? "new one (none of the others waits for a request)"
                         : "one that waited longest for a request");
        conn_close(victim);
    }
    if (c->closing || srv->open <= srv->conn_limit ||
        (cl->peer && srv->open <= srv->conn_limit + srv->npeers * HTTPD_PEER_RESERVE))
        return;
    victim = victim_of_most(srv, c);
    if (!victim)
        victim = c; /* a peer beyond the reserve, and nothing else waits */
    note(srv, NOTE_FULL,
         "%u connections open, over the limit of %u (http_conn_limit): closed the %s from %s",
         srv->open, srv->conn_limit,
         victim == c ? "new one (none of the others waits for a request)"
                     : "one that waited longest for a request",
         victim->client->key);
    conn_close(victim);
}

static struct httpd_client *client_get(struct httpd *srv, const char *key)
{
    struct hmap_node *n = hmap_get(&srv->clients, key);
    struct httpd_client *cl;

    if (n)
        return container_of(n, struct httpd_client, node);
    cl = xcalloc(1, sizeof(*cl));
    snprintf(cl->key, sizeof(cl->key), "%s", key);
    list_init(&cl->waiting);
    list_init(&cl->by_open);
    for (size_t i = 0; i < srv->npeers; i++)
        cl->peer = cl->peer || strcmp(srv->peer_keys[i], key) == 0;
    hmap_put(&srv->clients, &cl->node, cl->key);
    return cl;
}

static struct httpd_conn *conn_new(struct httpd *srv, struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *fd =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_CONNECTION_FD);
    const union MHD_ConnectionInfo *sa =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    struct httpd_conn *c;
    char key[ADDR_KEY];

    if (!fd || !sa || !sa->client_addr)
        return NULL;
    addr_key(sa->client_addr, key);
    c = xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->fd = fd->connect_fd;
    c->client = client_get(srv, key);
    c->client->conns++;
    client_count(srv, c->client, +1);
    list_init(&c->wait_link);
    list_init(&c->addr_link);
    return c;
}

static void on_tls_refused(void *arg, const char *why)
{
    struct httpd_conn *c = arg;

    note(c->srv, NOTE_TLS, "refused a TLS connection from %s: %s", c->client->key, why);
}

/* HTTPS: the connection's GnuTLS session gets the credentials in use now (tls.h). */
static void conn_attach_tls(struct httpd *srv, struct httpd_conn *c, struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_GNUTLS_SESSION);

    c->tls = (struct tls_server_conn){
        .fd = c->fd, .refused = on_tls_refused, .arg = c, .moved = &srv->moved};
    if (!i || tls_server_attach(srv->tls, i->tls_session, &c->tls) < 0)
        note(srv, NOTE_TLS, "could not set up TLS for a connection from %s: refused",
             c->client->key);
}

static void conn_free(struct httpd_conn *c)
{
    struct httpd *srv = c->srv;
    struct httpd_client *cl = c->client;

    tls_server_detach(&c->tls);
    conn_served(c);
    if (!c->closing) {
        client_count(srv, cl, -1);
    }
    if (--cl->conns == 0) {
        hmap_remove(&srv->clients, &cl->node);
        free(cl);
    }
    free(c);
}

static void on_connection(void *cls, struct MHD_Connection *con, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
    struct httpd *srv = cls;
    struct httpd_conn *c = *socket_context;

    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        c = conn_new(srv, con);
        *socket_context = c;
        if (c && srv->tls)
            conn_attach_tls(srv, c, con);
        if (c) {
            conn_wait(c);
            conn_enforce(srv, c);
        }
        return;
    }
    if (c)
        conn_free(c);
    *socket_context = NULL;
}

static struct httpd_conn *conn_of(struct MHD_Connection *con)
{
    const union MHD_ConnectionInfo *i =
        MHD_get_connection_info(con, MHD_CONNECTION_INFO_SOCKET_CONTEXT);

    return i ? i->socket_context : NULL;
}

/* ---- replies ------------------------------------------------------------ */

static void req_queue(struct httpd_req *req, unsigned status, struct MHD_Response *resp)
{
    struct httpd *srv = req->srv;

    xnonnull(resp);
    if (status == 429)
        MHD_add_response_header(resp, "Retry-After", "1"); /* every "too busy" says when again */
    for (int i = 0; i < req->nextra; i++)
        MHD_add_response_header(resp, req->extra[i].name, req->extra[i].value);
    req->answered = true;
    conn_answering(req->conn);
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

void httpd_req_add_reply_header(struct httpd_req *req, const char *name, const char *value)
{
    if (req->nextra >= HTTPD_REPLY_HEADERS_MAX || strlen(name) >= sizeof(req->extra[0].name) ||
        strlen(value) >= sizeof(req->extra[0].value))
        return;
    strcpy(req->extra[req->nextra].name, name);
    strcpy(req->extra[req->nextra].value, value);
    req->nextra++;
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
    unsigned status = (unsigned)dtx_err_http_status(err->code);

    if (status == 401 || status == 403 || status == 400 || status == 405 || status == 413 ||
        status == 415)
        note(req->srv, status == 401 || status == 403 ? NOTE_UNAUTHORIZED : NOTE_REFUSED,
             "refused %.16s %.200s from %s: %u %s", req->method, req->path,
             req->conn ? req->conn->client->key : "?", status, err->msg);
    httpd_reply_json(req, status, jsonx_error_body(err));
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
    struct httpd_conn *c = conn_of(con);

    (void)con_cls;
    if (c && up->srv->tls) {
        /* the stream's end is a socket pair; the TCP socket under it is MHD's: no Nagle on it
         * (a frame held back for a delayed ACK costs 40 ms a round trip), and keep-alive */
        int one = 1;

        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        stream_keep_alive(c->fd);
    }
    up->urh = urh;
    MHD_upgrade_action(urh, MHD_UPGRADE_ACTION_CORK_OFF); /* MHD corks while it answers */
    up->cb(up->arg, sock, extra, extra_len, up);
}

void httpd_upgrade(struct httpd_req *req, const char *proto, httpd_upgrade_cb cb, void *arg)
{
    struct httpd_upgraded *up = xcalloc(1, sizeof(*up));
    struct MHD_Response *resp;

    if (req->conn)
        req->conn->upgraded = true;
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
    req->conn = conn_of(con);
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
    conn_served(req->conn);
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
    if (!req)
        return;
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        conn_wait(req->conn); /* keep-alive: the next request has its deadline too */
    list_remove(&req->link);
    buf_release(&req->body);
    free(req);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    char line[512];
    size_t n;

    vsnprintf(line, sizeof(line), fmt, ap);
    n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        line[--n] = '\0';
    note(cls, NOTE_MHD, "http server: %s", line);
}

/* ---- lifecycle ------------------------------------------------------------------ */

/* MHD's certificate callback: never reached while tls_server_attach gave the session ours. */
static int no_certificate(gnutls_session_t s, const gnutls_datum_t *req_ca_dn, int nreqs,
                          const gnutls_pk_algorithm_t *algos, int nalgos, gnutls_pcert_st **pcert,
                          unsigned int *pcert_length, gnutls_privkey_t *key)
{
    (void)s;
    (void)req_ca_dn;
    (void)nreqs;
    (void)algos;
    (void)nalgos;
    (void)pcert;
    (void)key;
    *pcert_length = 0;
    return -1;
}

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

static void httpd_init_limits(struct httpd *srv, const struct httpd_opts *opts)
{
    srv->conn_limit = opts->conn_limit;
    srv->per_ip_limit = opts->per_ip_limit;
    srv->request_timeout_us = (uint64_t)opts->request_timeout_ms * 1000u;
    list_init(&srv->waiting);
    ev_timer_init(&srv->deadline, on_deadline, srv);
    hmap_init(&srv->clients);
    srv->npeers = opts->npeers;
    srv->peer_keys = xcalloc(opts->npeers + 1, sizeof(*srv->peer_keys));
    srv->peers = xcalloc(opts->npeers + 1, sizeof(*srv->peers));
    for (size_t i = 0; i < opts->npeers; i++) {
        srv->peers[i] = (struct httpd_peer){.srv = srv, .i = i, .addr = opts->peers[i]};
        if (opts->peers[i].salen > 0) /* a name: its key once looked up (peers_lookup) */
            addr_key((const struct sockaddr *)&opts->peers[i].sa, srv->peer_keys[i]);
    }
}

static void on_peer_found(void *arg, const struct sockaddr *sa, socklen_t salen,
                          const struct dtx_err *err)
{
    struct httpd_peer *p = arg;

    char key[ADDR_KEY];

    (void)salen;
    p->rq = NULL;
    if (err) /* the link's to report; the reserve waits for the name */
        return;
    addr_key(sa, key);
    if (strcmp(key, p->srv->peer_keys[p->i]) == 0)
        return;
    memcpy(p->srv->peer_keys[p->i], key, sizeof(key));
    log_info("peer '%s' is at %s now: its connections have a reserve of %d", p->addr.host, key,
             HTTPD_PEER_RESERVE);
}

/*
 * The peers named by a host name, looked up now and every
 * HTTPD_PEER_LOOKUP_MS: their reserve follows the address the name has.
 * A client address already known keeps what it was (peer or not) until
 * its last connection closes.
 */
static void on_peer_lookup(struct ev_loop *loop, struct ev_timer *t)
{
    struct httpd *srv = t->data;

    for (size_t i = 0; i < srv->npeers; i++) {
        struct httpd_peer *p = &srv->peers[i];

        if (p->addr.salen == 0 && !p->rq)
            p->rq = resolve_start(srv->resolver, p->addr.host, p->addr.port, on_peer_found, p);
    }
    ev_timer_start(loop, t, HTTPD_PEER_LOOKUP_MS);
}

static void peers_lookup_start(struct httpd *srv)
{
    bool named = false;

    for (size_t i = 0; i < srv->npeers; i++)
        named = named || srv->peers[i].addr.salen == 0;
    ev_timer_init(&srv->peer_lookup, on_peer_lookup, srv);
    if (!named || resolver_new(&srv->resolver, srv->loop, NULL) < 0)
        return;
    ev_timer_start(srv->loop, &srv->peer_lookup, 0);
}

static void peers_lookup_stop(struct httpd *srv)
{
    ev_timer_stop(srv->loop, &srv->peer_lookup);
    for (size_t i = 0; i < srv->npeers; i++)
        resolve_cancel(srv->peers[i].rq);
    resolver_free(srv->resolver);
    srv->resolver = NULL;
}

/* After MHD_stop_daemon, which closed every connection (on_connection freed them). */
static void httpd_release_limits(struct httpd *srv)
{
    ev_timer_stop(srv->loop, &srv->deadline);
    hmap_release(&srv->clients);
    for (size_t i = 0; i < srv->nby_open; i++)
        free(srv->by_open[i]);
    free(srv->by_open);
    free(srv->peer_keys);
    free(srv->peers);
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/*
 * MHD's unescaping of the path and query values (MHD_OPTION_UNESCAPE_CALLBACK),
 * in place: %HH is decoded, except %00 and %2F, which stay as they came. MHD
 * hands on a C string, so a decoded NUL would cut the path short and the
 * request would run on what is left ('.../commit%00junk' as a commit), and a
 * decoded slash would make two path segments of one. Left as text, they name
 * a path that does not exist (404), or a gtid that is not one.
 */
static size_t unescape(void *cls, struct MHD_Connection *c, char *s)
{
    char *w = s;

    (void)cls;
    (void)c;
    for (const char *r = s; *r; r++) {
        int hi = r[0] == '%' ? hex_value(r[1]) : -1, lo = hi >= 0 ? hex_value(r[2]) : -1;
        int v = hi * 16 + lo;

        if (hi < 0 || lo < 0 || v == 0 || v == '/') {
            *w++ = *r;
            continue;
        }
        *w++ = (char)v;
        r += 2;
    }
    *w = '\0';
    return (size_t)(w - s);
}

int httpd_start(struct httpd **out, struct ev_loop *loop, const struct httpd_opts *opts,
                httpd_handler handler, void *ctx, struct dtx_err *err)
{
    struct httpd *srv = NULL;
    struct MHD_OptionItem tls_opts[] = {{MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}};
    struct addr a;
    int fd = -1;
    int rc;

    rc = addr_parse(opts->listen, &a, err);
    if (rc < 0)
        return rc;
    fd = addr_listen(&a, HTTPD_BACKLOG, err);
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
    httpd_init_limits(srv, opts);
    srv->tls = opts->tls && opts->tls->on ? opts->tls : NULL;
    if (srv->tls)
        tls_opts[0] =
            (struct MHD_OptionItem){MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)no_certificate};
    /* The logger first: MHD warns at every start otherwise, and logs earlier options itself. */
    srv->d = MHD_start_daemon(
        MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_ALLOW_UPGRADE | MHD_USE_ERROR_LOG |
            MHD_USE_TURBO | (srv->tls ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_access, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, srv,
        MHD_OPTION_ARRAY, tls_opts, MHD_OPTION_LISTEN_SOCKET, fd, MHD_OPTION_NOTIFY_COMPLETED,
        on_completed, srv, MHD_OPTION_NOTIFY_CONNECTION, on_connection, srv,
        MHD_OPTION_UNESCAPE_CALLBACK, unescape, NULL, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)(opts->conn_limit + srv->npeers * HTTPD_PEER_RESERVE + HTTPD_BACKLOG +
                   HTTPD_SPARE),
        MHD_OPTION_CONNECTION_TIMEOUT, opts->idle_timeout_s, MHD_OPTION_END);
    if (!srv->d) {
        rc = dtx_err_set(err, DTX_EIO, "could not start the HTTP server on %s", opts->listen);
        goto out_close_fd;
    }
    rc = httpd_attach(srv, err);
    if (rc < 0)
        goto out_stop;
    peers_lookup_start(srv);
    *out = srv;
    return 0;

out_stop:
    MHD_stop_daemon(srv->d);
out_close_fd:
    close(fd);
    httpd_release_limits(srv);
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
    peers_lookup_stop(srv);
    MHD_stop_daemon(srv->d);
    httpd_release_limits(srv);
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

bool httpd_parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;

    if (!s || !*s || strlen(s) > 20)
        return false;
    for (const char *p = s; *p; p++) {
        unsigned d = (unsigned)(*p - '0');

        if (*p < '0' || *p > '9' || d > max || v > (max - d) / 10)
            return false; /* not a digit, or v * 10 + d > max */
        v = v * 10 + d;
    }
    *out = v;
    return true;
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

const char *httpd_req_bearer(const struct httpd_req *req)
{
    const char *h = httpd_req_header(req, MHD_HTTP_HEADER_AUTHORIZATION);

    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    return skip_ows(h + 7);
}

bool httpd_req_has_token(const struct httpd_req *req, const struct auth_token *t)
{
    const char *h = httpd_req_bearer(req);

    return h && auth_token_matches(t, h, strlen(h));
}
