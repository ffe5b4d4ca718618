/*
 * dstore_queue.h - what every decision store (dstore.h) shares: the
 * group-commit queue between the event loop and the store's writer thread,
 * and the report of durable positions, checkpoint requests and failure
 * back to the loop.
 *
 * Loop side: appends encode records into the queue, each getting the next
 * position; a checkpoint snapshot is queued with the records appended
 * before it (which the writer must write first); flush waits until
 * everything queued is durable. Writer side: dsq_take waits until there is
 * something to write (a forced record, after the group-commit delay; a
 * lazy one DSQ_LAZY_MS old; a snapshot; or the writer's own deadline) and
 * hands the whole queue over at once; dsq_done reports it durable,
 * dsq_fail fails the store for good (nothing appended afterwards ever
 * becomes durable, and nothing is retried).
 *
 * Thread model: the dsq_* functions marked (loop) run on the event-loop
 * thread; (writer) on the store's writer thread; the rest on either. The
 * queue's fields are guarded by mu; the callbacks (dstore_cbs) run on the
 * loop thread, from an ev_async the writer signals.
 */
#ifndef DTX_DSTORE_QUEUE_H
#define DTX_DSTORE_QUEUE_H

#include "dtx/buf.h"
#include "dtx/drec.h"
#include "dtx/dstore.h"
#include "dtx/err.h"
#include "dtx/ev.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* A lazy (unforced) record is written within this long. */
#define DSQ_LAZY_MS 100

struct dsq_opts {
    /*
     * Group-commit delay: when a forced record wakes the writer while at
     * least group_siblings other transactions are about to decide (see
     * dstore_hint_deciding), it waits group_delay_us before writing, so
     * their records share the write. 0 disables it.
     */
    uint32_t group_delay_us;
    uint32_t group_siblings;
    struct ev_loop *loop;
    struct dstore_cbs cbs;
};

struct dsq {
    struct dsq_opts opts;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* something to write, or stopping (waits on CLOCK_MONOTONIC) */
    pthread_cond_t done_cv; /* durable_lsn advanced, or failed */
    struct buf pending;     /* encoded records not yet taken by the writer */
    bool pending_forced;    /* pending holds a forced record (or a flush was asked) */
    uint64_t pending_since; /* when the oldest lazy pending record was queued */
    uint64_t last_lsn;      /* position of the last appended record */
    uint64_t durable_lsn;
    bool failed;
    struct dtx_err fail;
    bool stopping;
    struct buf ckpt;        /* snapshot handed over by dsq_checkpoint() */
    struct buf ckpt_before; /* records appended before that snapshot was taken */
    bool ckpt_queued;       /* ckpt waits to be written */
    bool ckpt_writing;      /* the writer took a snapshot and is writing it */
    bool ckpt_wanted;       /* the writer asked the loop for a snapshot */
    bool ckpt_asked;        /* ... and the loop has not been told yet */
    uint64_t syncs;         /* durable writes */
    uint64_t checkpoints;
    uint64_t last_ckpt_us; /* wall-clock time the last checkpoint became durable */
    uint64_t bytes;
    uint64_t sync_us;
    atomic_int deciding; /* transactions whose votes are still awaited (a hint) */
    /* loop thread only */
    struct ev_async wake;
    bool wake_started;
    bool failure_reported;
};

/* What the writer took at once: write before, then snap (if ckpt), then work. */
struct dsq_batch {
    struct buf before;
    struct buf snap;
    struct buf work;
    bool ckpt;
    uint64_t upto; /* the position of the last record in it */
};

void dsq_init(struct dsq *q, const struct dsq_opts *opts);
/* Starts the loop's wake-up; 0, or DTX_EIO with err. (loop) */
int dsq_start(struct dsq *q, struct dtx_err *err);
/* Releases what dsq_init and dsq_start set up; the writer must have exited. (loop) */
void dsq_release(struct dsq *q);

/* dstore ops on the queue (loop) */
uint64_t dsq_append(struct dsq *q, const struct drec *rec, bool force);
int dsq_checkpoint(struct dsq *q, struct buf *records);
void dsq_hint_deciding(struct dsq *q, int delta);
bool dsq_failed(struct dsq *q, struct dtx_err *err);
int dsq_flush(struct dsq *q, struct dtx_err *err);
/* Fills the counters the queue keeps (everything but what a store adds itself). */
void dsq_stats(struct dsq *q, struct dstore_stats *st);
uint64_t dsq_durable_lsn(struct dsq *q);
/* Tells the writer to write what is queued and exit (dsq_take then returns false). */
void dsq_stop(struct dsq *q);

/*
 * (writer) Waits until there is something to write, or until deadline_us
 * on the monotonic clock (0: none), and takes it all into *b (whose buffers
 * it reuses; empty when only the deadline passed). Returns false when the
 * writer should exit: stopping with nothing left, or failed.
 */
bool dsq_take(struct dsq *q, struct dsq_batch *b, uint64_t deadline_us);
/* (writer) Everything in b is durable: written with syncs writes, bytes in us. */
void dsq_done(struct dsq *q, const struct dsq_batch *b, uint64_t syncs, uint64_t bytes,
              uint64_t us);
/* (writer) The store failed for good; the first failure's err is kept. */
void dsq_fail(struct dsq *q, const struct dtx_err *err);
/* (writer) Asks the loop for a checkpoint snapshot (once until it is written). */
void dsq_want_checkpoint(struct dsq *q);
void dsq_batch_release(struct dsq_batch *b);

/*
 * The head of a store built on the queue: a struct that starts with it can
 * use these as its dstore ops (the rest are the store's own).
 */
struct dsq_store {
    struct dstore base;
    struct dsq q;
};

uint64_t dsq_op_append(struct dstore *s, const struct drec *rec, bool force);
int dsq_op_checkpoint(struct dstore *s, struct buf *records);
void dsq_op_hint_deciding(struct dstore *s, int delta);
bool dsq_op_failed(struct dstore *s, struct dtx_err *err);
int dsq_op_flush(struct dstore *s, struct dtx_err *err);
void dsq_op_stats(struct dstore *s, struct dstore_stats *st);

#endif
