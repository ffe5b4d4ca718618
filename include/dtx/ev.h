/*
 * ev.h - the event loop every dtx daemon runs on (epoll, one thread).
 *
 * Watchers are embedded in their owner's struct and registered with the
 * loop; the loop never allocates a watcher. One iteration is:
 *   epoll_wait -> fd callbacks -> expired timers -> deferred callbacks.
 * Deferred callbacks run once at the end of the iteration in which they
 * were scheduled; the peer streams use them to send everything queued in
 * one iteration with one write, which is how messages get batched.
 *
 * Everything here must be called from the loop's thread, except
 * ev_async_send(), which any thread may call.
 */
#ifndef DTX_EV_H
#define DTX_EV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>

struct ev_loop;
struct ev_io;
struct ev_timer;
struct ev_defer;
struct ev_async;

typedef void (*ev_io_cb)(struct ev_loop *loop, struct ev_io *io, uint32_t revents);
typedef void (*ev_timer_cb)(struct ev_loop *loop, struct ev_timer *t);
typedef void (*ev_defer_cb)(struct ev_loop *loop, struct ev_defer *d);
typedef void (*ev_async_cb)(struct ev_loop *loop, struct ev_async *a);

struct ev_io {
    int fd;
    uint32_t events; /* EPOLLIN / EPOLLOUT as registered */
    bool active;
    ev_io_cb cb;
    void *data; /* owner's pointer, untouched by the loop */
};

struct ev_timer {
    uint64_t at_us; /* monotonic deadline */
    size_t idx;     /* position in the heap, or SIZE_MAX when not armed */
    ev_timer_cb cb;
    void *data;
};

struct ev_defer {
    struct ev_defer *next;
    bool queued;
    ev_defer_cb cb;
    void *data;
};

struct ev_async {
    struct ev_io io; /* on an eventfd */
    ev_async_cb cb;
    void *data;
};

struct ev_loop {
    int epfd;
    bool stopping;
    uint64_t now_us; /* monotonic clock at the start of this iteration */
    struct ev_timer **heap;
    size_t nheap, capheap;
    struct ev_defer *defer_head;
    struct ev_defer **defer_tail;
    struct epoll_event *events; /* events of the iteration being dispatched */
    int nevents;
};

/* Returns 0, or DTX_EIO when epoll cannot be created. */
int ev_loop_init(struct ev_loop *loop);
/* Closes the epoll fd; watchers must have been stopped by their owners. */
void ev_loop_release(struct ev_loop *loop);
/* Runs iterations until ev_loop_stop(); returns 0 or DTX_EIO if epoll fails. */
int ev_loop_run(struct ev_loop *loop);
/* Runs one iteration, waiting at most timeout_ms (-1: until something happens). */
int ev_loop_once(struct ev_loop *loop, int timeout_ms);
void ev_loop_stop(struct ev_loop *loop);

/* Monotonic time in microseconds, cached per iteration / read now. */
uint64_t ev_now_us(const struct ev_loop *loop);
uint64_t ev_clock_us(void);
/* Wall-clock time in microseconds since the epoch. */
uint64_t ev_wall_us(void);

void ev_io_init(struct ev_io *io, ev_io_cb cb, void *data);
/* Watches fd for events; returns 0 or DTX_EIO. */
int ev_io_start(struct ev_loop *loop, struct ev_io *io, int fd, uint32_t events);
int ev_io_modify(struct ev_loop *loop, struct ev_io *io, uint32_t events);
/* Stops watching (no-op if not active); the fd is not closed. */
void ev_io_stop(struct ev_loop *loop, struct ev_io *io);

void ev_timer_init(struct ev_timer *t, ev_timer_cb cb, void *data);
/* (Re)arms the timer to fire once after ms milliseconds. */
void ev_timer_start(struct ev_loop *loop, struct ev_timer *t, uint64_t ms);
void ev_timer_start_us(struct ev_loop *loop, struct ev_timer *t, uint64_t us);
void ev_timer_stop(struct ev_loop *loop, struct ev_timer *t);
bool ev_timer_is_active(const struct ev_timer *t);

void ev_defer_init(struct ev_defer *d, ev_defer_cb cb, void *data);
/* Schedules d for the end of this iteration; no-op if already scheduled. */
void ev_defer(struct ev_loop *loop, struct ev_defer *d);
void ev_defer_cancel(struct ev_loop *loop, struct ev_defer *d);

/* An eventfd-backed wake-up; returns 0 or DTX_EIO. */
int ev_async_start(struct ev_loop *loop, struct ev_async *a, ev_async_cb cb, void *data);
void ev_async_stop(struct ev_loop *loop, struct ev_async *a);
/* Thread-safe: makes the loop call a->cb soon (coalesced). */
void ev_async_send(struct ev_async *a);

#endif
