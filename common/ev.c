/*
 * ev.c - epoll event loop with a timer heap, deferred callbacks and
 * eventfd wake-ups.
 *
 * Thread model: a loop and every watcher registered with it belong to the
 * thread that runs ev_loop_run(). The only cross-thread entry point is
 * ev_async_send(), which writes to an eventfd.
 *
 * Invariants:
 *   - heap[0..nheap) is a binary min-heap on at_us; heap[i]->idx == i.
 *   - a timer is armed iff idx != SIZE_MAX.
 *   - a defer is queued iff it is on the defer list; queued mirrors that.
 *   - while fd callbacks of one iteration run, loop->events holds the
 *     events not yet dispatched; ev_io_stop() clears the stopped watcher's
 *     entries there so a callback may free another watcher safely.
 */
#include "dtx/ev.h"
#include "dtx/err.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define EV_MAX_EVENTS 256

uint64_t ev_clock_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t ev_wall_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t ev_now_us(const struct ev_loop *loop)
{
    return loop->now_us;
}

int ev_loop_init(struct ev_loop *loop)
{
    memset(loop, 0, sizeof(*loop));
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0)
        return DTX_EIO;
    loop->defer_tail = &loop->defer_head;
    loop->now_us = ev_clock_us();
    return 0;
}

void ev_loop_release(struct ev_loop *loop)
{
    if (loop->epfd >= 0)
        close(loop->epfd);
    loop->epfd = -1;
    free(loop->heap);
    loop->heap = NULL;
    loop->nheap = loop->capheap = 0;
}

void ev_loop_stop(struct ev_loop *loop)
{
    loop->stopping = true;
}

/* ---- fd watchers ---------------------------------------------------- */

void ev_io_init(struct ev_io *io, ev_io_cb cb, void *data)
{
    io->fd = -1;
    io->events = 0;
    io->active = false;
    io->cb = cb;
    io->data = data;
}

int ev_io_start(struct ev_loop *loop, struct ev_io *io, int fd, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};

    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        return DTX_EIO;
    io->fd = fd;
    io->events = events;
    io->active = true;
    return 0;
}

int ev_io_modify(struct ev_loop *loop, struct ev_io *io, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = io};

    if (!io->active || io->events == events)
        return 0;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        return DTX_EIO;
    io->events = events;
    return 0;
}

void ev_io_stop(struct ev_loop *loop, struct ev_io *io)
{
    if (!io->active)
        return;
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);
    io->active = false;
    for (int i = 0; i < loop->nevents; i++) {
        if (loop->events[i].data.ptr == io)
            loop->events[i].data.ptr = NULL;
    }
}

/* ---- timers ----------------------------------------------------------- */

static void heap_swap(struct ev_loop *loop, size_t a, size_t b)
{
    struct ev_timer *t = loop->heap[a];

    loop->heap[a] = loop->heap[b];
    loop->heap[b] = t;
    loop->heap[a]->idx = a;
    loop->heap[b]->idx = b;
}

static void heap_up(struct ev_loop *loop, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;

        if (loop->heap[parent]->at_us <= loop->heap[i]->at_us)
            break;
        heap_swap(loop, parent, i);
        i = parent;
    }
}

static void heap_down(struct ev_loop *loop, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;

        if (l < loop->nheap && loop->heap[l]->at_us < loop->heap[m]->at_us)
            m = l;
        if (r < loop->nheap && loop->heap[r]->at_us < loop->heap[m]->at_us)
            m = r;
        if (m == i)
            return;
        heap_swap(loop, i, m);
        i = m;
    }
}

void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *data)
{
    t->at_us = 0;
    t->idx = SIZE_MAX;
    t->cb = cb;
    t->data = data;
}

bool ev_timer_is_active(const struct ev_timer *t)
{
    return t->idx != SIZE_MAX;
}

void ev_timer_stop(struct ev_loop *loop, struct ev_timer *t)
{
    size_t i = t->idx;

    if (i == SIZE_MAX)
        return;
    loop->nheap--;
    if (i != loop->nheap) {
        loop->heap[i] = loop->heap[loop->nheap];
        loop->heap[i]->idx = i;
        heap_down(loop, i);
        heap_up(loop, i);
    }
    t->idx = SIZE_MAX;
}

void ev_timer_start_us(struct ev_loop *loop, struct ev_timer *t, uint64_t us)
{
    ev_timer_stop(loop, t);
    if (loop->nheap == loop->capheap) {
        size_t cap = loop->capheap ? loop->capheap * 2 : 64;
        struct ev_timer **h = xrealloc(loop->heap, cap * sizeof(*h));
        loop->heap = h;
        loop->capheap = cap;
    }
    t->at_us = ev_clock_us() + us;
    t->idx = loop->nheap;
    loop->heap[loop->nheap++] = t;
    heap_up(loop, t->idx);
}

void ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t ms)
{
    ev_timer_start_us(loop, t, ms * 1000u);
}

static void run_timers(struct ev_loop *loop)
{
    while (loop->nheap > 0 && loop->heap[0]->at_us <= loop->now_us) {
        struct ev_timer *t = loop->heap[0];

        ev_timer_stop(loop, t);
        t->cb(loop, t);
    }
}

/* ---- deferred callbacks ---------------------------------------------- */

void ev_defer_init(struct ev_defer *d, ev_defer_cb cb, void *data)
{
    d->next = NULL;
    d->queued = false;
    d->cb = cb;
    d->data = data;
}

void ev_defer(struct ev_loop *loop, struct ev_defer *d)
{
    if (d->queued)
        return;
    d->queued = true;
    d->next = NULL;
    *loop->defer_tail = d;
    loop->defer_tail = &d->next;
}

void ev_defer_cancel(struct ev_loop *loop, struct ev_defer *d)
{
    struct ev_defer **pp;

    if (!d->queued)
        return;
    for (pp = &loop->defer_head; *pp; pp = &(*pp)->next) {
        if (*pp == d) {
            *pp = d->next;
            if (loop->defer_tail == &d->next)
                loop->defer_tail = pp;
            break;
        }
    }
    d->queued = false;
}

static void run_defers(struct ev_loop *loop)
{
    while (loop->defer_head) {
        struct ev_defer *d = loop->defer_head;

        loop->defer_head = d->next;
        if (!loop->defer_head)
            loop->defer_tail = &loop->defer_head;
        d->queued = false;
        d->cb(loop, d);
    }
}

/* ---- async wake-ups ---------------------------------------------------- */

static void async_ready(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct ev_async *a = io->data;
    uint64_t n;

    (void)revents;
    if (read(io->fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        return;
    a->cb(loop, a);
}

int ev_async_start(struct ev_loop *loop, struct ev_async *a, ev_async_cb cb, void *data)
{
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);

    if (fd < 0)
        return DTX_EIO;
    a->cb = cb;
    a->data = data;
    ev_io_init(&a->io, async_ready, a);
    if (ev_io_start(loop, &a->io, fd, EPOLLIN) < 0) {
        close(fd);
        return DTX_EIO;
    }
    return 0;
}

void ev_async_stop(struct ev_loop *loop, struct ev_async *a)
{
    int fd = a->io.fd;

    ev_io_stop(loop, &a->io);
    if (fd >= 0)
        close(fd);
    a->io.fd = -1;
}

void ev_async_send(struct ev_async *a)
{
    uint64_t one = 1;

    /* EAGAIN means the counter is saturated: a wake-up is pending anyway. */
    if (write(a->io.fd, &one, sizeof(one)) < 0)
        return;
}

/* ---- the loop ------------------------------------------------------------ */

/*
 * How long epoll may wait: until the first timer is due. Measured from the
 * clock now, not from loop->now_us: a timer armed by a slow callback of
 * this iteration took its deadline from the clock too, and would be late
 * by the callback's time otherwise.
 */
static int next_timeout_ms(const struct ev_loop *loop, int timeout_ms)
{
    uint64_t until, now;
    int ms;

    if (loop->defer_head)
        return 0;
    if (loop->nheap == 0)
        return timeout_ms;
    until = loop->heap[0]->at_us;
    now = ev_clock_us();
    if (until <= now)
        return 0;
    ms = (int)((until - now + 999) / 1000);
    if (timeout_ms >= 0 && timeout_ms < ms)
        return timeout_ms;
    return ms;
}

int ev_loop_once(struct ev_loop *loop, int timeout_ms)
{
    struct epoll_event events[EV_MAX_EVENTS];
    int n;

    n = epoll_wait(loop->epfd, events, EV_MAX_EVENTS, next_timeout_ms(loop, timeout_ms));
    if (n < 0 && errno != EINTR)
        return DTX_EIO;
    loop->now_us = ev_clock_us();
    loop->events = events;
    loop->nevents = n > 0 ? n : 0;
    for (int i = 0; i < loop->nevents; i++) {
        struct ev_io *io = events[i].data.ptr;

        if (io)
            io->cb(loop, io, events[i].events);
    }
    loop->events = NULL;
    loop->nevents = 0;
    run_timers(loop);
    run_defers(loop);
    return 0;
}

int ev_loop_run(struct ev_loop *loop)
{
    loop->stopping = false;
    while (!loop->stopping) {
        int rc = ev_loop_once(loop, -1);

        if (rc < 0)
            return rc;
    }
    return 0;
}
