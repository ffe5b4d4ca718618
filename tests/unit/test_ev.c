/*
 * test_ev.c - the event loop (ev.c): timers fire in deadline order and never
 * early, a stopped timer never fires, deferred callbacks run once per
 * queueing after the fd and timer callbacks of their iteration, ev_async
 * wakes the loop from another thread, fd watchers report a pipe's readiness,
 * and ev_loop_stop() ends ev_loop_run().
 */
#include "dtx/ev.h"
#include "unit.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MANY 1000

/* A timer that notes when it fired and in which position. */
struct tick {
    struct ev_timer t;
    int id;
    int fired;        /* times the callback ran */
    uint64_t due_us;  /* its deadline, read when it fired */
    uint64_t when_us; /* clock when it fired */
    int *order;       /* ids of the ticks that fired, in firing order */
    int *norder;
};

static void on_tick(struct ev_loop *loop, struct ev_timer *t)
{
    struct tick *k = t->data;

    (void)loop;
    k->fired++;
    k->due_us = t->at_us;
    k->when_us = ev_clock_us();
    if (k->order)
        k->order[(*k->norder)++] = k->id;
}

static void tick_init(struct tick *k, int id, int *order, int *norder)
{
    memset(k, 0, sizeof(*k));
    k->id = id;
    k->order = order;
    k->norder = norder;
    ev_timer_init(&k->t, on_tick, k);
}

/* Runs iterations until *count reaches want or max_ms pass; returns whether it did. */
static bool run_until(struct ev_loop *loop, const int *count, int want, int max_ms)
{
    uint64_t until = ev_clock_us() + (uint64_t)max_ms * 1000u;

    while (*count < want && ev_clock_us() < until)
        CU_ASSERT_EQUAL(ev_loop_once(loop, 10), 0);
    return *count >= want;
}

/* Runs iterations for ms milliseconds. */
static void run_for(struct ev_loop *loop, int ms)
{
    int never = 0;

    run_until(loop, &never, 1, ms);
}

static void busy_wait_ms(int ms)
{
    uint64_t until = ev_clock_us() + (uint64_t)ms * 1000u;

    while (ev_clock_us() < until)
        ;
}

static void timers_fire_in_deadline_order_and_never_early(void)
{
    static const int ms[] = {30, 10, 20, 0, 5};
    static const int want[] = {3, 4, 1, 2, 0};
    struct tick ticks[5];
    int order[5], norder = 0;
    struct ev_loop loop;
    uint64_t start;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    start = ev_clock_us();
    for (int i = 0; i < 5; i++) {
        tick_init(&ticks[i], i, order, &norder);
        ev_timer_start(&loop, &ticks[i].t, (uint64_t)ms[i]);
        CU_ASSERT_TRUE(ev_timer_is_active(&ticks[i].t));
    }
    CU_ASSERT_TRUE(run_until(&loop, &norder, 5, 1000));
    CU_ASSERT_EQUAL(norder, 5);
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(order[i], want[i]);
        CU_ASSERT_EQUAL(ticks[i].fired, 1);
        CU_ASSERT(ticks[i].when_us - start >= (uint64_t)ms[i] * 1000u);
        CU_ASSERT_FALSE(ev_timer_is_active(&ticks[i].t));
    }
    ev_loop_release(&loop);
}

static void a_stopped_timer_never_fires(void)
{
    struct tick ticks[5];
    int order[5], norder = 0;
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    for (int i = 0; i < 5; i++) {
        tick_init(&ticks[i], i, order, &norder);
        ev_timer_start(&loop, &ticks[i].t, (uint64_t)(i + 1) * 5);
    }
    ev_timer_stop(&loop, &ticks[2].t); /* from the middle of the heap */
    ev_timer_stop(&loop, &ticks[2].t); /* twice is harmless */
    ev_timer_stop(&loop, &ticks[0].t); /* the earliest */
    CU_ASSERT_FALSE(ev_timer_is_active(&ticks[2].t));
    run_for(&loop, 60);
    CU_ASSERT_EQUAL(ticks[0].fired, 0);
    CU_ASSERT_EQUAL(ticks[2].fired, 0);
    CU_ASSERT_EQUAL(norder, 3);
    CU_ASSERT_EQUAL(order[0], 1);
    CU_ASSERT_EQUAL(order[1], 3);
    CU_ASSERT_EQUAL(order[2], 4);
    ev_loop_release(&loop);
}

static void stop_other(struct ev_loop *loop, struct ev_timer *t)
{
    ev_timer_stop(loop, t->data);
}

static void a_timer_stopped_by_a_callback_of_the_same_iteration_never_fires(void)
{
    struct ev_timer first;
    struct tick second;
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    tick_init(&second, 1, NULL, NULL);
    ev_timer_init(&first, stop_other, &second.t);
    ev_timer_start(&loop, &first, 0);
    ev_timer_start(&loop, &second.t, 1);
    usleep(5000); /* both are due when the next iteration looks */
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_FALSE(ev_timer_is_active(&first));
    run_for(&loop, 20);
    CU_ASSERT_EQUAL(second.fired, 0);
    ev_loop_release(&loop);
}

static void restarting_a_timer_moves_its_deadline(void)
{
    struct tick later, sooner;
    struct ev_loop loop;
    uint64_t restarted;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    tick_init(&later, 0, NULL, NULL);
    tick_init(&sooner, 1, NULL, NULL);
    ev_timer_start(&loop, &later.t, 10);
    ev_timer_start(&loop, &sooner.t, 5000);
    restarted = ev_clock_us();
    ev_timer_start(&loop, &later.t, 80);
    ev_timer_start(&loop, &sooner.t, 20);
    CU_ASSERT_TRUE(run_until(&loop, &sooner.fired, 1, 1000));
    CU_ASSERT_EQUAL(later.fired, 0); /* not at its first deadline */
    CU_ASSERT(sooner.when_us - restarted < 1000000u);
    CU_ASSERT_TRUE(run_until(&loop, &later.fired, 1, 1000));
    CU_ASSERT(later.when_us - restarted >= 80000u);
    CU_ASSERT_EQUAL(later.fired, 1);
    CU_ASSERT_EQUAL(sooner.fired, 1);
    ev_loop_release(&loop);
}

struct chain {
    struct ev_timer first;
    struct tick second;
    int first_fired;
    uint64_t first_when_us;
};

static void start_second(struct ev_loop *loop, struct ev_timer *t)
{
    struct chain *c = t->data;

    c->first_when_us = ev_clock_us();
    if (++c->first_fired < 3)
        ev_timer_start(loop, &c->first, 2); /* re-arms itself */
    if (c->first_fired == 1)
        ev_timer_start(loop, &c->second.t, 15);
}

static void a_timer_started_from_a_timer_callback_fires(void)
{
    struct chain c;
    struct ev_loop loop;
    uint64_t started;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    memset(&c, 0, sizeof(c));
    tick_init(&c.second, 1, NULL, NULL);
    ev_timer_init(&c.first, start_second, &c);
    ev_timer_start(&loop, &c.first, 1);
    CU_ASSERT_TRUE(run_until(&loop, &c.first_fired, 1, 1000));
    started = c.first_when_us;
    CU_ASSERT_TRUE(run_until(&loop, &c.second.fired, 1, 1000));
    CU_ASSERT(c.second.when_us - started >= 15000u);
    CU_ASSERT_EQUAL(c.first_fired, 3); /* the re-armed timer fired twice more */
    run_for(&loop, 10);
    CU_ASSERT_EQUAL(c.first_fired, 3);
    CU_ASSERT_EQUAL(c.second.fired, 1);
    ev_loop_release(&loop);
}

static void a_zero_ms_timer_fires_on_the_next_iteration_without_waiting(void)
{
    struct tick k;
    struct ev_loop loop;
    uint64_t start;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    tick_init(&k, 0, NULL, NULL);
    ev_timer_start(&loop, &k.t, 0);
    CU_ASSERT_EQUAL(k.fired, 0); /* never from inside ev_timer_start */
    start = ev_clock_us();
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 5000), 0);
    CU_ASSERT_EQUAL(k.fired, 1);
    CU_ASSERT(ev_clock_us() - start < 500000u);
    ev_loop_release(&loop);
}

/* A slow callback that then arms a timer for 20 ms. */
struct slow {
    struct ev_timer t;
    struct tick armed;
    uint64_t armed_us;
};

static void slow_then_arm(struct ev_loop *loop, struct ev_timer *t)
{
    struct slow *s = t->data;

    busy_wait_ms(100);
    s->armed_us = ev_clock_us();
    ev_timer_start(loop, &s->armed.t, 20);
}

/*
 * A bug found by this test (fixed in common/ev.c, next_timeout_ms()). A deadline is "ms after
 * ev_timer_start()". The loop computes how long to wait from the clock it cached at the start of
 * the previous iteration, so a timer armed after a slow callback also waits out that callback.
 */
static void a_timer_armed_after_a_slow_callback_is_not_late(void)
{
    struct slow s;
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    tick_init(&s.armed, 0, NULL, NULL);
    ev_timer_init(&s.t, slow_then_arm, &s);
    ev_timer_start(&loop, &s.t, 0);
    while (!s.armed.fired) /* as ev_loop_run() does: wait as long as the timers say */
        CU_ASSERT_FATAL(ev_loop_once(&loop, -1) == 0);
    CU_ASSERT(s.armed.when_us - s.armed_us >= 20000u);
    CU_ASSERT(s.armed.when_us - s.armed_us < 80000u); /* 20 ms asked; about 120 with the bug */
    ev_loop_release(&loop);
}

static uint32_t next_random(uint32_t *state)
{
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static void a_thousand_random_timers_fire_in_deadline_order(void)
{
    struct tick *ticks = calloc(MANY, sizeof(*ticks));
    bool *stopped = calloc(MANY, sizeof(*stopped));
    int *order = calloc(MANY, sizeof(*order));
    int norder = 0, nstopped = 0;
    uint32_t seed = 20240601;
    struct ev_loop loop;

    CU_ASSERT_FATAL(ticks && stopped && order);
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    for (int i = 0; i < MANY; i++) {
        tick_init(&ticks[i], i, order, &norder);
        ev_timer_start_us(&loop, &ticks[i].t, next_random(&seed) % 40000u);
    }
    for (int i = 0; i < MANY / 4; i++) { /* move some deadlines, stop others */
        int victim = (int)(next_random(&seed) % MANY);

        if (i % 2 == 0) {
            ev_timer_start_us(&loop, &ticks[victim].t, next_random(&seed) % 40000u);
            stopped[victim] = false;
        } else {
            ev_timer_stop(&loop, &ticks[victim].t);
            stopped[victim] = true;
        }
    }
    for (int i = 0; i < MANY; i++)
        nstopped += stopped[i];
    CU_ASSERT_TRUE(run_until(&loop, &norder, MANY - nstopped, 2000));
    run_for(&loop, 45); /* past every deadline: nothing stopped fires late */
    CU_ASSERT_EQUAL(norder, MANY - nstopped);
    for (int i = 0; i < MANY; i++) {
        CU_ASSERT_EQUAL(ticks[i].fired, stopped[i] ? 0 : 1);
        if (ticks[i].fired)
            CU_ASSERT(ticks[i].when_us >= ticks[i].due_us);
    }
    for (int i = 1; i < norder; i++)
        CU_ASSERT(ticks[order[i - 1]].due_us <= ticks[order[i]].due_us);
    ev_loop_release(&loop);
    free(order);
    free(stopped);
    free(ticks);
}

/* A deferred callback noting its runs; again > 0 re-queues it from its own callback. */
struct later {
    struct ev_defer d;
    char name;
    char *trace; /* names of what ran, in order */
    int runs;
    int depth, max_depth;
    int again;
};

static void on_later(struct ev_loop *loop, struct ev_defer *d)
{
    struct later *l = d->data;

    l->depth++;
    l->max_depth = l->depth > l->max_depth ? l->depth : l->max_depth;
    l->runs++;
    if (l->trace)
        strncat(l->trace, &l->name, 1);
    if (l->again > 0) {
        l->again--;
        ev_defer(loop, d);
    }
    l->depth--;
}

static void later_init(struct later *l, char name, char *trace)
{
    memset(l, 0, sizeof(*l));
    l->name = name;
    l->trace = trace;
    ev_defer_init(&l->d, on_later, l);
}

static void a_defer_queued_twice_runs_once_without_the_loop_waiting(void)
{
    struct later l;
    struct ev_loop loop;
    uint64_t start;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    later_init(&l, 'a', NULL);
    ev_defer(&loop, &l.d);
    ev_defer(&loop, &l.d);
    ev_defer(&loop, &l.d);
    CU_ASSERT_EQUAL(l.runs, 0); /* never from inside ev_defer */
    start = ev_clock_us();
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 5000), 0);
    CU_ASSERT(ev_clock_us() - start < 1000000u);
    CU_ASSERT_EQUAL(l.runs, 1);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 10), 0);
    CU_ASSERT_EQUAL(l.runs, 1);
    ev_loop_release(&loop);
}

static void cancelled_defers_never_run_and_the_rest_keep_their_order(void)
{
    char trace[16] = "";
    struct later l[6];
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    for (int i = 0; i < 6; i++)
        later_init(&l[i], (char)('a' + i), trace);
    for (int i = 0; i < 4; i++)
        ev_defer(&loop, &l[i].d);
    ev_defer_cancel(&loop, &l[3].d); /* the tail */
    ev_defer_cancel(&loop, &l[1].d); /* the middle */
    ev_defer_cancel(&loop, &l[1].d); /* twice is harmless */
    ev_defer(&loop, &l[4].d);        /* appended after a cancelled tail */
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_STRING_EQUAL(trace, "ace");
    ev_defer(&loop, &l[5].d);
    ev_defer_cancel(&loop, &l[5].d); /* the only one */
    ev_defer(&loop, &l[1].d);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_STRING_EQUAL(trace, "aceb");
    ev_loop_release(&loop);
}

static void a_defer_requeued_by_its_own_callback_runs_again_but_never_nested(void)
{
    struct later l;
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    later_init(&l, 'a', NULL);
    l.again = 3;
    ev_defer(&loop, &l.d);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(ev_loop_once(&loop, 0), 0);
    CU_ASSERT_EQUAL(l.runs, 4);
    CU_ASSERT_EQUAL(l.max_depth, 1);
    CU_ASSERT_FALSE(l.d.queued);
    ev_loop_release(&loop);
}

/* One iteration's order: fd callbacks, expired timers, then deferred callbacks. */
struct phases {
    char trace[8];
    struct later from_io, from_timer;
    struct ev_io io;
    struct ev_timer t;
};

static void phase_io(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct phases *p = io->data;
    char byte;

    (void)revents;
    CU_ASSERT_EQUAL(read(io->fd, &byte, 1), 1);
    strcat(p->trace, "i");
    ev_defer(loop, &p->from_io.d);
}

static void phase_timer(struct ev_loop *loop, struct ev_timer *t)
{
    struct phases *p = t->data;

    strcat(p->trace, "t");
    ev_defer(loop, &p->from_timer.d);
}

static void a_defer_runs_after_the_fd_and_timer_callbacks_of_its_iteration(void)
{
    struct phases p;
    struct ev_loop loop;
    int fds[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(pipe(fds) == 0);
    memset(&p, 0, sizeof(p));
    later_init(&p.from_io, 'D', p.trace);
    later_init(&p.from_timer, 'd', p.trace);
    ev_io_init(&p.io, phase_io, &p);
    ev_timer_init(&p.t, phase_timer, &p);
    CU_ASSERT_FATAL(ev_io_start(&loop, &p.io, fds[0], EPOLLIN) == 0);
    ev_timer_start(&loop, &p.t, 0);
    CU_ASSERT_EQUAL(write(fds[1], "x", 1), 1);
    usleep(2000);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0); /* one iteration does all of it */
    CU_ASSERT_STRING_EQUAL(p.trace, "itDd");
    ev_io_stop(&loop, &p.io);
    close(fds[0]);
    close(fds[1]);
    ev_loop_release(&loop);
}

struct waker {
    struct ev_async a;
    int woken;
    pthread_t loop_thread, woken_on;
    bool stop_loop;
    int delay_ms;
};

static void on_wake(struct ev_loop *loop, struct ev_async *a)
{
    struct waker *w = a->data;

    w->woken++;
    w->woken_on = pthread_self();
    if (w->stop_loop)
        ev_loop_stop(loop);
}

static void *send_later(void *arg)
{
    struct waker *w = arg;

    usleep((useconds_t)w->delay_ms * 1000u);
    ev_async_send(&w->a);
    return NULL;
}

static void ev_async_wakes_the_loop_from_another_thread(void)
{
    struct waker w = {.delay_ms = 30, .loop_thread = pthread_self()};
    struct ev_loop loop;
    pthread_t sender;
    uint64_t start;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(ev_async_start(&loop, &w.a, on_wake, &w) == 0);
    start = ev_clock_us();
    CU_ASSERT_FATAL(pthread_create(&sender, NULL, send_later, &w) == 0);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 5000), 0); /* blocked until the wake-up */
    CU_ASSERT_EQUAL(w.woken, 1);
    CU_ASSERT(ev_clock_us() - start < 2000000u);
    CU_ASSERT_TRUE(pthread_equal(w.woken_on, w.loop_thread));
    pthread_join(sender, NULL);
    ev_async_stop(&loop, &w.a);
    ev_loop_release(&loop);
}

static void async_sends_before_the_loop_runs_are_coalesced(void)
{
    struct waker w = {.loop_thread = pthread_self()};
    struct ev_loop loop;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(ev_async_start(&loop, &w.a, on_wake, &w) == 0);
    for (int i = 0; i < 100; i++)
        ev_async_send(&w.a);
    CU_ASSERT_EQUAL(w.woken, 0);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
    CU_ASSERT_EQUAL(w.woken, 1);
    run_for(&loop, 20);
    CU_ASSERT_EQUAL(w.woken, 1);
    ev_async_stop(&loop, &w.a);
    ev_loop_release(&loop);
}

struct stopper {
    struct ev_timer t;
    struct later after; /* queued in the stopping iteration */
    int stops;
};

static void stop_loop(struct ev_loop *loop, struct ev_timer *t)
{
    struct stopper *s = t->data;

    s->stops++;
    ev_defer(loop, &s->after.d);
    ev_loop_stop(loop);
}

static void ev_loop_stop_ends_ev_loop_run_after_the_current_iteration(void)
{
    struct stopper s;
    struct tick far;
    struct ev_loop loop;
    uint64_t start;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    memset(&s, 0, sizeof(s));
    later_init(&s.after, 'a', NULL);
    ev_timer_init(&s.t, stop_loop, &s);
    tick_init(&far, 0, NULL, NULL);
    ev_timer_start(&loop, &far.t, 5000);
    ev_timer_start(&loop, &s.t, 5);
    start = ev_clock_us();
    CU_ASSERT_EQUAL(ev_loop_run(&loop), 0);
    CU_ASSERT(ev_clock_us() - start < 1000000u);
    CU_ASSERT_EQUAL(s.stops, 1);
    CU_ASSERT_EQUAL(s.after.runs, 1); /* the iteration finished */
    CU_ASSERT_EQUAL(far.fired, 0);
    ev_timer_start(&loop, &s.t, 5); /* a stopped loop runs again */
    CU_ASSERT_EQUAL(ev_loop_run(&loop), 0);
    CU_ASSERT_EQUAL(s.stops, 2);
    ev_timer_stop(&loop, &far.t);
    ev_loop_release(&loop);
}

static void another_thread_can_stop_ev_loop_run_through_ev_async(void)
{
    struct waker w = {.delay_ms = 20, .loop_thread = pthread_self(), .stop_loop = true};
    struct tick far;
    struct ev_loop loop;
    pthread_t sender;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(ev_async_start(&loop, &w.a, on_wake, &w) == 0);
    tick_init(&far, 0, NULL, NULL);
    ev_timer_start(&loop, &far.t, 5000);
    CU_ASSERT_FATAL(pthread_create(&sender, NULL, send_later, &w) == 0);
    CU_ASSERT_EQUAL(ev_loop_run(&loop), 0);
    CU_ASSERT_EQUAL(w.woken, 1);
    CU_ASSERT_EQUAL(far.fired, 0);
    pthread_join(sender, NULL);
    ev_timer_stop(&loop, &far.t);
    ev_async_stop(&loop, &w.a);
    ev_loop_release(&loop);
}

struct watch {
    struct ev_io io;
    int calls;
    uint32_t revents;
};

static void on_ready(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct watch *w = io->data;

    (void)loop;
    w->calls++;
    w->revents |= revents;
}

static void watch_start(struct ev_loop *loop, struct watch *w, int fd, uint32_t events)
{
    memset(w, 0, sizeof(*w));
    ev_io_init(&w->io, on_ready, w);
    CU_ASSERT_FATAL(ev_io_start(loop, &w->io, fd, events) == 0);
}

static void a_pipe_is_reported_readable_once_written_and_hung_up_once_closed(void)
{
    struct watch rd, wr;
    struct ev_loop loop;
    int fds[2];
    char byte;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(pipe(fds) == 0);
    watch_start(&loop, &rd, fds[0], EPOLLIN);
    watch_start(&loop, &wr, fds[1], EPOLLOUT);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 20), 0);
    CU_ASSERT_EQUAL(rd.calls, 0); /* nothing written yet */
    CU_ASSERT_EQUAL(wr.calls, 1); /* an empty pipe takes writes */
    CU_ASSERT_TRUE(wr.revents & EPOLLOUT);
    ev_io_stop(&loop, &wr.io);
    CU_ASSERT_FALSE(wr.io.active);
    CU_ASSERT_EQUAL(write(fds[1], "x", 1), 1);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
    CU_ASSERT_EQUAL(rd.calls, 1);
    CU_ASSERT_TRUE(rd.revents & EPOLLIN);
    CU_ASSERT_EQUAL(wr.calls, 1); /* stopped */
    CU_ASSERT_EQUAL(read(fds[0], &byte, 1), 1);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 20), 0);
    CU_ASSERT_EQUAL(rd.calls, 1); /* drained: not readable any more */
    close(fds[1]);
    rd.revents = 0;
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
    CU_ASSERT_EQUAL(rd.calls, 2);
    CU_ASSERT_TRUE(rd.revents & EPOLLHUP);
    ev_io_stop(&loop, &rd.io);
    close(fds[0]);
    ev_loop_release(&loop);
}

static void a_stopped_watcher_is_not_called_for_data_already_waiting(void)
{
    struct watch rd;
    struct ev_loop loop;
    int fds[2];

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(pipe(fds) == 0);
    watch_start(&loop, &rd, fds[0], EPOLLIN);
    CU_ASSERT_EQUAL(write(fds[1], "x", 1), 1);
    ev_io_stop(&loop, &rd.io);
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 20), 0);
    CU_ASSERT_EQUAL(rd.calls, 0);
    CU_ASSERT_EQUAL(ev_io_start(&loop, &rd.io, fds[0], EPOLLIN), 0); /* and may watch again */
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0);
    CU_ASSERT_EQUAL(rd.calls, 1);
    ev_io_stop(&loop, &rd.io);
    close(fds[0]);
    close(fds[1]);
    ev_loop_release(&loop);
}

/* Two watchers, each freeing the other when it runs first. */
struct rival {
    struct ev_io io;
    struct rival **other; /* the other watcher, NULL once freed */
    int *calls;
};

static void free_rival(struct ev_loop *loop, struct ev_io *io, uint32_t revents)
{
    struct rival *r = io->data;

    (void)revents;
    (*r->calls)++;
    if (*r->other) {
        ev_io_stop(loop, &(*r->other)->io);
        free(*r->other);
        *r->other = NULL;
    }
}

static void a_callback_may_free_another_watcher_whose_event_is_pending(void)
{
    struct rival *w[2];
    struct ev_loop loop;
    int fds[2][2], calls = 0;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_FATAL(pipe(fds[i]) == 0);
        w[i] = calloc(1, sizeof(*w[i]));
        CU_ASSERT_FATAL(w[i] != NULL);
    }
    for (int i = 0; i < 2; i++) {
        w[i]->other = &w[1 - i];
        w[i]->calls = &calls;
        ev_io_init(&w[i]->io, free_rival, w[i]);
        CU_ASSERT_FATAL(ev_io_start(&loop, &w[i]->io, fds[i][0], EPOLLIN) == 0);
        CU_ASSERT_EQUAL(write(fds[i][1], "x", 1), 1);
    }
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 1000), 0); /* both ready: one runs, frees the other */
    CU_ASSERT_EQUAL(calls, 1);
    CU_ASSERT((w[0] == NULL) != (w[1] == NULL));
    for (int i = 0; i < 2; i++) {
        if (w[i]) {
            ev_io_stop(&loop, &w[i]->io);
            free(w[i]);
        }
        close(fds[i][0]);
        close(fds[i][1]);
    }
    ev_loop_release(&loop);
}

static void ev_loop_once_waits_at_most_its_timeout(void)
{
    struct ev_loop loop;
    uint64_t start, before;

    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    before = ev_now_us(&loop);
    start = ev_clock_us();
    CU_ASSERT_EQUAL(ev_loop_once(&loop, 30), 0);
    CU_ASSERT(ev_clock_us() - start >= 25000u);
    CU_ASSERT(ev_clock_us() - start < 1000000u);
    CU_ASSERT(ev_now_us(&loop) - before >= 25000u); /* the cached clock moved on */
    ev_loop_release(&loop);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(timers_fire_in_deadline_order_and_never_early),
        UNIT_TEST(a_stopped_timer_never_fires),
        UNIT_TEST(a_timer_stopped_by_a_callback_of_the_same_iteration_never_fires),
        UNIT_TEST(restarting_a_timer_moves_its_deadline),
        UNIT_TEST(a_timer_started_from_a_timer_callback_fires),
        UNIT_TEST(a_zero_ms_timer_fires_on_the_next_iteration_without_waiting),
        UNIT_TEST(a_thousand_random_timers_fire_in_deadline_order),
        UNIT_TEST(a_defer_queued_twice_runs_once_without_the_loop_waiting),
        UNIT_TEST(cancelled_defers_never_run_and_the_rest_keep_their_order),
        UNIT_TEST(a_defer_requeued_by_its_own_callback_runs_again_but_never_nested),
        UNIT_TEST(a_defer_runs_after_the_fd_and_timer_callbacks_of_its_iteration),
        UNIT_TEST(ev_async_wakes_the_loop_from_another_thread),
        UNIT_TEST(async_sends_before_the_loop_runs_are_coalesced),
        UNIT_TEST(ev_loop_stop_ends_ev_loop_run_after_the_current_iteration),
        UNIT_TEST(another_thread_can_stop_ev_loop_run_through_ev_async),
        UNIT_TEST(a_pipe_is_reported_readable_once_written_and_hung_up_once_closed),
        UNIT_TEST(a_stopped_watcher_is_not_called_for_data_already_waiting),
        UNIT_TEST(a_callback_may_free_another_watcher_whose_event_is_pending),
        UNIT_TEST(ev_loop_once_waits_at_most_its_timeout),
        UNIT_TEST(a_timer_armed_after_a_slow_callback_is_not_late),
    };

    return unit_run("ev", tests, sizeof(tests) / sizeof(tests[0]));
}
