/*
 * resolve.c - getaddrinfo in helper threads, answered on the loop (resolve.h).
 *
 * State shared by the loop and the helper threads, all under r->mu:
 *   r->waiting   lookups no thread has taken yet (RQ_WAITING)
 *   q->state     RQ_RUNNING while a thread looks it up (the thread owns
 *                it: a cancel only marks it, the thread frees it)
 *   r->done      answered lookups for the loop (RQ_DONE)
 *   r->threads   helper threads running; r->closed once resolver_free ran
 * A thread takes waiting lookups until there is none, then ends; at most
 * RESOLVE_THREADS run. The loop learns of answers through r->wake (an
 * eventfd, ev_async), sent under the lock and only while the resolver is
 * open, so that it is never written after resolver_free closed it. After
 * resolver_free, the last thread to end frees r.
 *
 * Callbacks run on the loop thread, one answer at a time taken off r->done
 * under the lock, so a callback may cancel any other request (or free
 * whatever owns it) safely.
 */
#include "dtx/resolve.h"
#include "dtx/list.h"
#include "dtx/xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum rq_state { RQ_WAITING, RQ_RUNNING, RQ_DONE };

struct resolver {
    pthread_mutex_t mu;
    struct ev_loop *loop;
    struct ev_async wake;
    struct list_node waiting; /* struct resolve_req, oldest first */
    struct list_node done;
    unsigned threads;
    bool closed;
};

struct resolve_req {
    struct list_node link;
    struct resolver *r;
    enum rq_state state;
    bool cancelled; /* while RQ_RUNNING: the thread frees it */
    char host[256];
    uint16_t port;
    resolve_cb cb;
    void *arg;
    int gai; /* getaddrinfo's result */
    int sys_errno;
    struct sockaddr_storage sa;
    socklen_t salen;
};

static void set_port(struct sockaddr_storage *sa, uint16_t port)
{
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)(void *)sa)->sin_port = htons(port);
    else if (sa->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)(void *)sa)->sin6_port = htons(port);
}

/* An IP address needs no lookup: true with q's address set. */
static bool numeric(struct resolve_req *q)
{
    struct sockaddr_in *in = (struct sockaddr_in *)(void *)&q->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&q->sa;

    if (inet_pton(AF_INET, q->host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        q->salen = sizeof(*in);
    } else if (inet_pton(AF_INET6, q->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        q->salen = sizeof(*in6);
    } else {
        return false;
    }
    set_port(&q->sa, q->port);
    return true;
}

/* The blocking part, in a helper thread, without the lock. */
static void lookup(struct resolve_req *q)
{
    struct addrinfo hints, *res = NULL;

    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    q->gai = getaddrinfo(q->host, NULL, &hints, &res);
    q->sys_errno = errno;
    if (q->gai == 0 && res && res->ai_addrlen <= sizeof(q->sa)) {
        memcpy(&q->sa, res->ai_addr, res->ai_addrlen);
        q->salen = res->ai_addrlen;
        set_port(&q->sa, q->port);
    } else if (q->gai == 0) {
        q->gai = EAI_FAIL;
    }
    if (res)
        freeaddrinfo(res);
}

static void resolver_destroy(struct resolver *r)
{
    pthread_mutex_destroy(&r->mu);
    free(r);
}

/* Under r->mu: an answer for the loop (or for nobody). */
static void finished(struct resolver *r, struct resolve_req *q)
{
    if (r->closed || q->cancelled) {
        free(q);
        return;
    }
    q->state = RQ_DONE;
    list_insert_tail(&r->done, &q->link);
    ev_async_send(&r->wake);
}

static void *thread_main(void *arg)
{
    struct resolver *r = arg;
    bool last;

    pthread_mutex_lock(&r->mu);
    while (!list_empty(&r->waiting)) {
        struct resolve_req *q = container_of(r->waiting.next, struct resolve_req, link);

        list_remove(&q->link);
        q->state = RQ_RUNNING;
        pthread_mutex_unlock(&r->mu);
        lookup(q);
        pthread_mutex_lock(&r->mu);
        finished(r, q);
    }
    r->threads--;
    last = r->closed && r->threads == 0;
    pthread_mutex_unlock(&r->mu);
    if (last)
        resolver_destroy(r);
    return NULL;
}

/* Under r->mu: a thread more for the waiting lookups, unless enough run. */
static void spawn(struct resolver *r)
{
    pthread_attr_t attr;
    pthread_t t;

    if (r->threads >= RESOLVE_THREADS)
        return;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, thread_main, r) == 0)
        r->threads++;
    pthread_attr_destroy(&attr);
}

static void on_wake(struct ev_loop *loop, struct ev_async *a)
{
    struct resolver *r = a->data;

    (void)loop;
    for (;;) {
        struct resolve_req *q;
        struct dtx_err err;

        pthread_mutex_lock(&r->mu);
        if (list_empty(&r->done)) {
            pthread_mutex_unlock(&r->mu);
            return;
        }
        q = container_of(r->done.next, struct resolve_req, link);
        list_remove(&q->link);
        pthread_mutex_unlock(&r->mu);
        if (q->gai != 0) {
            dtx_err_clear(&err);
            dtx_err_set(&err, DTX_EIO, "could not resolve host '%s': %s", q->host,
                        q->gai == EAI_SYSTEM ? strerror(q->sys_errno) : gai_strerror(q->gai));
            q->cb(q->arg, NULL, 0, &err);
        } else {
            q->cb(q->arg, (const struct sockaddr *)&q->sa, q->salen, NULL);
        }
        free(q);
    }
}

int resolver_new(struct resolver **out, struct ev_loop *loop, struct dtx_err *err)
{
    struct resolver *r = xcalloc(1, sizeof(*r));

    r->loop = loop;
    list_init(&r->waiting);
    list_init(&r->done);
    pthread_mutex_init(&r->mu, NULL);
    if (ev_async_start(loop, &r->wake, on_wake, r) < 0) {
        resolver_destroy(r);
        return dtx_err_set(err, DTX_EIO, "could not set up the resolver: %s", strerror(errno));
    }
    *out = r;
    return 0;
}

static void free_list(struct list_node *head)
{
    while (!list_empty(head)) {
        struct resolve_req *q = container_of(head->next, struct resolve_req, link);

        list_remove(&q->link);
        free(q);
    }
}

void resolver_free(struct resolver *r)
{
    bool last;

    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->closed = true;
    free_list(&r->waiting);
    free_list(&r->done);
    last = r->threads == 0;
    pthread_mutex_unlock(&r->mu);
    ev_async_stop(r->loop, &r->wake);
    if (last)
        resolver_destroy(r);
}

struct resolve_req *resolve_start(struct resolver *r, const char *host, uint16_t port,
                                  resolve_cb cb, void *arg)
{
    struct resolve_req *q = xcalloc(1, sizeof(*q));

    q->r = r;
    snprintf(q->host, sizeof(q->host), "%s", host);
    q->port = port;
    q->cb = cb;
    q->arg = arg;
    list_init(&q->link);
    pthread_mutex_lock(&r->mu);
    if (numeric(q)) {
        finished(r, q);
    } else {
        q->state = RQ_WAITING;
        list_insert_tail(&r->waiting, &q->link);
        spawn(r);
        if (r->threads == 0) { /* no thread could be started: say so, from the loop */
            list_remove(&q->link);
            q->gai = EAI_SYSTEM;
            q->sys_errno = EAGAIN;
            finished(r, q);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return q;
}

void resolve_cancel(struct resolve_req *q)
{
    struct resolver *r;

    if (!q)
        return;
    r = q->r;
    pthread_mutex_lock(&r->mu);
    if (q->state == RQ_RUNNING) {
        q->cancelled = true;
    } else {
        list_remove(&q->link);
        free(q);
    }
    pthread_mutex_unlock(&r->mu);
}

unsigned resolver_threads(struct resolver *r)
{
    unsigned n;

    pthread_mutex_lock(&r->mu);
    n = r->threads;
    pthread_mutex_unlock(&r->mu);
    return n;
}
