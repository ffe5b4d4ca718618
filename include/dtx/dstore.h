/*
 * dstore.h - the decision store: where the coordinator makes its decision
 * records (drec.h) durable. The protocol needs four things of it:
 *
 *   append      queue a record, forced (made durable as soon as possible,
 *               together with whatever else is queued: group commit) or
 *               lazy (durable with the next forced write, or soon); each
 *               record gets a position, and the store reports on the loop
 *               thread which position is durable (on_durable)
 *   replay      every record still needed, in order, when the store opens
 *               (each implementation's open function does it)
 *   checkpoint  replace everything older with a snapshot of what recovery
 *               still needs (asked for by the store: on_checkpoint_wanted)
 *   stats       counters for operators and metrics
 *
 * Failure: after a failed write or sync a store is failed for good
 * (on_failed, once): nothing appended afterwards becomes durable, and a
 * failed sync is never retried on the same data (PostgreSQL's fsyncgate).
 *
 * Implementations: the local file log (dlog.h), the default. A store is a
 * struct dstore followed by the implementation's own state, as a resource
 * manager is a struct rm (rm.h).
 *
 * Thread model: every function and callback runs on the coordinator's
 * event-loop thread; an implementation may write from its own threads.
 */
#ifndef DTX_DSTORE_H
#define DTX_DSTORE_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/drec.h"
#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/prom.h"

/* What every store reports back to the coordinator, on the loop thread. */
struct dstore_cbs {
    /* Records up to position lsn are durable. */
    void (*on_durable)(void *arg, uint64_t lsn);
    /* The store failed (once); err says why. */
    void (*on_failed)(void *arg, const struct dtx_err *err);
    /* A checkpoint is due: call dstore_checkpoint() (NULL: never checkpoint). */
    void (*on_checkpoint_wanted)(void *arg);
    void *arg;
};

/* Counters since the store was opened. */
struct dstore_stats {
    uint64_t syncs;                   /* durable writes (each a group of records) */
    uint64_t records;                 /* records appended */
    uint64_t checkpoints;             /* checkpoints written */
    uint64_t bytes;                   /* bytes written, checkpoints included */
    uint64_t sync_us;                 /* time spent writing and syncing */
    uint64_t last_checkpoint_wall_us; /* when the last checkpoint became durable (0: none yet) */
    /*
     * For the metrics (zeroed: nothing to show): seconds each write of a
     * group took before its sync, seconds each sync took (fdatasync, or
     * whatever makes a group durable), and records per group.
     */
    struct prom_hist write_seconds;
    struct prom_hist sync_seconds;
    struct prom_hist batch_records;
};

struct dstore;

struct dstore_ops {
    const char *name; /* "file" */
    /*
     * Queues rec and returns its position (> 0), or 0 when the store has
     * failed: the record will never be durable.
     */
    uint64_t (*append)(struct dstore *s, const struct drec *rec, bool force);
    /*
     * Takes records (encoded with drec_encode: everything recovery still
     * needs) as the new base of the store; everything appended before this
     * call stays ordered before it. Leaves records empty. 0, or
     * DTX_ELOGFAIL when the store has failed.
     */
    int (*checkpoint)(struct dstore *s, struct buf *records);
    /* How many transactions are about to decide changed by delta (a group-commit hint). */
    void (*hint_deciding)(struct dstore *s, int delta);
    /* True once the store failed; *err (may be NULL) says why. */
    bool (*failed)(struct dstore *s, struct dtx_err *err);
    /* Blocks until everything appended so far is durable; 0 or the failure's code. */
    int (*flush)(struct dstore *s, struct dtx_err *err);
    void (*stats)(struct dstore *s, struct dstore_stats *st);
    /* Adds what an operator should know about this store to obj (dtxctl status). */
    void (*describe)(struct dstore *s, cJSON *obj);
    /* Writes out what is queued, then frees the store. */
    void (*close)(struct dstore *s);
};

struct dstore {
    const struct dstore_ops *ops;
};

static inline uint64_t dstore_append(struct dstore *s, const struct drec *rec, bool force)
{
    return s->ops->append(s, rec, force);
}

static inline int dstore_checkpoint(struct dstore *s, struct buf *records)
{
    return s->ops->checkpoint(s, records);
}

static inline void dstore_hint_deciding(struct dstore *s, int delta)
{
    s->ops->hint_deciding(s, delta);
}

static inline bool dstore_failed(struct dstore *s, struct dtx_err *err)
{
    return s->ops->failed(s, err);
}

static inline int dstore_flush(struct dstore *s, struct dtx_err *err)
{
    return s->ops->flush(s, err);
}

static inline void dstore_stats(struct dstore *s, struct dstore_stats *st)
{
    s->ops->stats(s, st);
}

static inline void dstore_describe(struct dstore *s, cJSON *obj)
{
    s->ops->describe(s, obj);
}

/* NULL is a no-op. */
static inline void dstore_close(struct dstore *s)
{
    if (s)
        s->ops->close(s);
}

#endif
