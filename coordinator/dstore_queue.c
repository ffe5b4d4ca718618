/*
 * dstore_queue.c - the group-commit queue every decision store shares
 * (dstore_queue.h): appends and checkpoints from the loop, batches taken
 * by the store's writer thread, durable positions and failure reported
 * back to the loop through an ev_async.
 *
 * Order: records appended before a snapshot was handed over (ckpt_before)
 * are written before it, the snapshot next, then what was appended after
 * it; a newer snapshot replaces one not yet taken (it describes a later
 * state). A flush waits for all of that.
 *
 * Thread model: see the header; every shared field is guarded by q->mu.
 */
#include "dstore_queue.h"

#include "dtx/log.h"

#include <time.h>

static void init_monotonic_cond(pthread_cond_t *cv)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

/* Waits on work_cv (mu held) until the monotonic time until_us at the latest. */
static void wait_until(struct dsq *q, uint64_t until_us)
{
    struct timespec ts = {.tv_sec = (time_t)(until_us / 1000000u),
                          .tv_nsec = (long)(until_us % 1000000u) * 1000};

    pthread_cond_timedwait(&q->work_cv, &q->mu, &ts);
}

void dsq_init(struct dsq *q, const struct dsq_opts *opts)
{
    q->opts = *opts;
    pthread_mutex_init(&q->mu, NULL);
    init_monotonic_cond(&q->work_cv);
    pthread_cond_init(&q->done_cv, NULL);
    buf_init(&q->pending);
    buf_init(&q->ckpt);
    buf_init(&q->ckpt_before);
    atomic_init(&q->deciding, 0);
    prom_hist_init(&q->write_s, &prom_seconds_buckets);
    prom_hist_init(&q->sync_s, &prom_seconds_buckets);
    prom_hist_init(&q->batch, &prom_size_buckets);
}

static void on_wake(struct ev_loop *loop, struct ev_async *a)
{
    struct dsq *q = a->data;
    uint64_t lsn;
    bool failed, ask;
    struct dtx_err fail;

    (void)loop;
    pthread_mutex_lock(&q->mu);
    lsn = q->durable_lsn;
    failed = q->failed;
    fail = q->fail;
    ask = q->ckpt_asked;
    q->ckpt_asked = false;
    pthread_mutex_unlock(&q->mu);
    if (q->opts.cbs.on_durable)
        q->opts.cbs.on_durable(q->opts.cbs.arg, lsn);
    if (ask && !failed && q->opts.cbs.on_checkpoint_wanted)
        q->opts.cbs.on_checkpoint_wanted(q->opts.cbs.arg);
    if (failed && !q->failure_reported) {
        q->failure_reported = true;
        log_error("%s", fail.msg);
        if (q->opts.cbs.on_failed)
            q->opts.cbs.on_failed(q->opts.cbs.arg, &fail);
    }
}

int dsq_start(struct dsq *q, struct dtx_err *err)
{
    if (ev_async_start(q->opts.loop, &q->wake, on_wake, q) < 0)
        return dtx_err_set(err, DTX_EIO, "could not create the decision store's wake-up eventfd");
    q->wake_started = true;
    return 0;
}

void dsq_release(struct dsq *q)
{
    if (q->wake_started)
        ev_async_stop(q->opts.loop, &q->wake);
    q->wake_started = false;
    pthread_mutex_destroy(&q->mu);
    pthread_cond_destroy(&q->work_cv);
    pthread_cond_destroy(&q->done_cv);
    buf_release(&q->pending);
    buf_release(&q->ckpt);
    buf_release(&q->ckpt_before);
}

/* ---- the loop's side --------------------------------------------------------------- */

/*
 * Only a forced record wakes the writer, and after the mutex is released,
 * so that it does not wake only to wait for it. A lazy one is found by the
 * idle writer's next look (writer_wait), in time for DSQ_LAZY_MS.
 */
uint64_t dsq_append(struct dsq *q, const struct drec *rec, bool force)
{
    uint64_t lsn;
    bool wake = false;

    pthread_mutex_lock(&q->mu);
    if (q->failed || q->stopping) {
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    if (q->pending.len == 0)
        q->pending_since = ev_clock_us();
    drec_encode(&q->pending, rec);
    lsn = ++q->last_lsn;
    if (force && !q->pending_forced)
        wake = q->pending_forced = true;
    pthread_mutex_unlock(&q->mu);
    if (wake)
        pthread_cond_signal(&q->work_cv);
    return lsn;
}

int dsq_checkpoint(struct dsq *q, struct buf *records)
{
    int rc = 0;

    pthread_mutex_lock(&q->mu);
    if (q->failed || q->stopping) {
        rc = DTX_ELOGFAIL;
    } else {
        buf_append(&q->ckpt_before, buf_head(&q->pending), buf_avail(&q->pending));
        buf_reset(&q->pending);
        buf_release(&q->ckpt);
        q->ckpt = *records;
        buf_init(records);
        q->ckpt_queued = true;
        pthread_cond_signal(&q->work_cv);
    }
    pthread_mutex_unlock(&q->mu);
    buf_release(records);
    return rc;
}

void dsq_hint_deciding(struct dsq *q, int delta)
{
    atomic_fetch_add(&q->deciding, delta);
}

bool dsq_failed(struct dsq *q, struct dtx_err *err)
{
    bool failed;

    pthread_mutex_lock(&q->mu);
    failed = q->failed;
    if (failed && err)
        *err = q->fail;
    pthread_mutex_unlock(&q->mu);
    return failed;
}

int dsq_flush(struct dsq *q, struct dtx_err *err)
{
    int rc = 0;

    pthread_mutex_lock(&q->mu);
    if (q->pending.len > 0) {
        q->pending_forced = true;
        pthread_cond_signal(&q->work_cv);
    }
    while (!q->failed && (q->durable_lsn < q->last_lsn || q->ckpt_queued || q->ckpt_writing))
        pthread_cond_wait(&q->done_cv, &q->mu);
    if (q->failed) {
        if (err)
            *err = q->fail;
        rc = DTX_ELOGFAIL;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

void dsq_stats(struct dsq *q, struct dstore_stats *st)
{
    pthread_mutex_lock(&q->mu);
    st->syncs = q->syncs;
    st->records = q->last_lsn;
    st->checkpoints = q->checkpoints;
    st->bytes = q->bytes;
    st->sync_us = q->sync_us;
    st->last_checkpoint_wall_us = q->last_ckpt_us;
    st->write_seconds = q->write_s;
    st->sync_seconds = q->sync_s;
    st->batch_records = q->batch;
    pthread_mutex_unlock(&q->mu);
}

uint64_t dsq_durable_lsn(struct dsq *q)
{
    uint64_t lsn;

    pthread_mutex_lock(&q->mu);
    lsn = q->durable_lsn;
    pthread_mutex_unlock(&q->mu);
    return lsn;
}

void dsq_stop(struct dsq *q)
{
    pthread_mutex_lock(&q->mu);
    q->stopping = true;
    pthread_cond_signal(&q->work_cv);
    pthread_mutex_unlock(&q->mu);
}

/* ---- the writer's side ----------------------------------------------------------- */

/*
 * A forced record is waiting (mu held). If enough other transactions are
 * about to decide, waits group_delay_us for their records to join it in
 * the same write, as PostgreSQL's commit_delay does.
 */
static void group_delay(struct dsq *q)
{
    uint64_t until;

    if (!q->opts.group_delay_us || atomic_load(&q->deciding) < (int)q->opts.group_siblings)
        return;
    until = ev_clock_us() + q->opts.group_delay_us;
    while (!q->stopping && !q->ckpt_queued && ev_clock_us() < until)
        wait_until(q, until);
}

/*
 * Waits (mu held) until there is something to write now: a snapshot, a
 * forced record, a lazy one DSQ_LAZY_MS old, anything at all when
 * stopping, or the deadline. Returns false when the writer should exit.
 */
static bool writer_wait(struct dsq *q, uint64_t deadline_us)
{
    for (;;) {
        uint64_t now = ev_clock_us(), due;

        if (q->failed)
            return false;
        if (q->ckpt_queued)
            return true;
        if (q->pending.len == 0) {
            /* idle: look again within DSQ_LAZY_MS, for a lazy record appended meanwhile */
            uint64_t look = now + DSQ_LAZY_MS * 1000u;

            if (q->stopping)
                return false;
            if (deadline_us && now >= deadline_us)
                return true;
            wait_until(q, deadline_us && deadline_us < look ? deadline_us : look);
            continue;
        }
        if (q->stopping)
            return true;
        if (q->pending_forced) {
            group_delay(q);
            return true;
        }
        due = q->pending_since + DSQ_LAZY_MS * 1000u;
        if (now >= due || (deadline_us && now >= deadline_us))
            return true;
        wait_until(q, deadline_us && deadline_us < due ? deadline_us : due);
    }
}

static void swap_buf(struct buf *a, struct buf *b)
{
    struct buf t = *a;

    *a = *b;
    *b = t;
}

bool dsq_take(struct dsq *q, struct dsq_batch *b, uint64_t deadline_us)
{
    bool go;

    buf_reset(&b->before);
    buf_reset(&b->snap);
    buf_reset(&b->work);
    b->ckpt = false;
    pthread_mutex_lock(&q->mu);
    go = writer_wait(q, deadline_us);
    if (go) {
        swap_buf(&b->work, &q->pending);
        q->pending_forced = false;
        b->upto = q->last_lsn;
        if (q->ckpt_queued) {
            swap_buf(&b->snap, &q->ckpt);
            swap_buf(&b->before, &q->ckpt_before);
            /* Taken: a snapshot handed over while this one is written waits its turn. */
            q->ckpt_queued = false;
            q->ckpt_writing = true;
            b->ckpt = true;
        }
    }
    pthread_mutex_unlock(&q->mu);
    return go;
}

void dsq_done(struct dsq *q, const struct dsq_batch *b, uint64_t syncs, uint64_t bytes, uint64_t us)
{
    pthread_mutex_lock(&q->mu);
    if (b->upto > q->taken_lsn)
        prom_hist_observe(&q->batch, (double)(b->upto - q->taken_lsn));
    q->taken_lsn = b->upto;
    q->durable_lsn = b->upto;
    q->syncs += syncs;
    q->bytes += bytes;
    q->sync_us += us;
    if (b->ckpt) {
        q->ckpt_writing = q->ckpt_wanted = false;
        q->checkpoints++;
        q->last_ckpt_us = ev_wall_us();
    }
    pthread_cond_broadcast(&q->done_cv);
    pthread_mutex_unlock(&q->mu);
    ev_async_send(&q->wake);
}

void dsq_observe(struct dsq *q, int64_t write_us, uint64_t sync_us)
{
    pthread_mutex_lock(&q->mu);
    if (write_us >= 0)
        prom_hist_observe(&q->write_s, write_us / 1e6);
    prom_hist_observe(&q->sync_s, sync_us / 1e6);
    pthread_mutex_unlock(&q->mu);
}

void dsq_fail(struct dsq *q, const struct dtx_err *err)
{
    pthread_mutex_lock(&q->mu);
    if (!q->failed) {
        q->failed = true;
        q->fail = *err;
    }
    pthread_cond_broadcast(&q->done_cv);
    pthread_mutex_unlock(&q->mu);
    ev_async_send(&q->wake);
}

void dsq_want_checkpoint(struct dsq *q)
{
    bool ask = false;

    if (!q->opts.cbs.on_checkpoint_wanted)
        return;
    pthread_mutex_lock(&q->mu);
    if (!q->ckpt_wanted && !q->ckpt_queued)
        ask = q->ckpt_wanted = q->ckpt_asked = true;
    pthread_mutex_unlock(&q->mu);
    if (ask)
        ev_async_send(&q->wake);
}

void dsq_batch_release(struct dsq_batch *b)
{
    buf_release(&b->before);
    buf_release(&b->snap);
    buf_release(&b->work);
}

/* ---- dstore ops of a struct dsq_store ------------------------------------------------ */

static struct dsq *queue_of(struct dstore *s)
{
    return &((struct dsq_store *)s)->q;
}

uint64_t dsq_op_append(struct dstore *s, const struct drec *rec, bool force)
{
    return dsq_append(queue_of(s), rec, force);
}

int dsq_op_checkpoint(struct dstore *s, struct buf *records)
{
    return dsq_checkpoint(queue_of(s), records);
}

void dsq_op_hint_deciding(struct dstore *s, int delta)
{
    dsq_hint_deciding(queue_of(s), delta);
}

bool dsq_op_failed(struct dstore *s, struct dtx_err *err)
{
    return dsq_failed(queue_of(s), err);
}

int dsq_op_flush(struct dstore *s, struct dtx_err *err)
{
    return dsq_flush(queue_of(s), err);
}

void dsq_op_stats(struct dstore *s, struct dstore_stats *st)
{
    dsq_stats(queue_of(s), st);
}
