/*
 * dlog.h - the coordinator's decision log: an append-only, checksummed,
 * group-committed record of every commit decision.
 *
 * Presumed abort: only commit decisions are forced to disk. A transaction
 * with no COMMIT record is aborted by definition, so aborts need no record
 * and nothing is written for them. A COMMIT record is durable before any
 * participant or client hears of the decision; an END record (not forced)
 * says every participant acknowledged, so replay need not drive it again.
 *
 * Appends come from the event loop; one writer thread writes and
 * fdatasyncs everything appended since its last write as one frame (group
 * commit) and reports the durable position back to the loop. After a
 * failed write or fdatasync the log is failed for good: nothing appended
 * afterwards becomes durable, and the failure is never retried on the same
 * data (a retried fsync can report success for data the kernel dropped).
 *
 * The byte format is described at the top of dlog.c and in
 * docs/decision-log.md.
 */
#ifndef DTX_DLOG_H
#define DTX_DLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/err.h"
#include "dtx/ev.h"

enum dlog_type {
    DLOG_BOOT = 1,     /* a coordinator start: its epoch */
    DLOG_COMMIT = 2,   /* a commit decision */
    DLOG_END = 3,      /* every participant acknowledged a COMMIT */
    DLOG_OPERATOR = 4, /* an operator's decision (dtxctl resolve / forget) */
};

/* OPERATOR records: what the operator did. */
enum dlog_op_kind {
    DLOG_OP_RESOLVE = 1, /* a (heuristic) decision: commit or abort */
    DLOG_OP_FORGET = 2,  /* gave up on a shard's branch of a decided transaction */
};

struct dlog_branch {
    const char *shard;
    uint64_t xid; /* the branch's PostgreSQL transaction id (xid8) */
};

/*
 * One record. Strings may be NULL for "none"; when a record is decoded the
 * pointers point into the reader's buffer and are valid during the replay
 * callback only.
 */
struct dlog_rec {
    enum dlog_type type;
    uint64_t wall_us;     /* wall-clock time the record was made */
    uint64_t epoch;       /* BOOT */
    const char *node_id;  /* BOOT */
    const char *gtid;     /* COMMIT, END */
    uint8_t protocol;     /* COMMIT: 2 or 3 */
    const char *idem_key; /* COMMIT: the client's idempotency key */
    uint64_t req_hash;    /* COMMIT: hash of the request, to refuse a reused key */
    const char *results;  /* COMMIT: the client's answer (JSON), kept for idempotent replays */
    size_t nbranches;     /* COMMIT: the prepared branches to commit */
    const struct dlog_branch *branches;
    uint8_t op_kind;    /* OPERATOR: enum dlog_op_kind */
    bool op_commit;     /* OPERATOR: the decision it stands for is commit (else abort) */
    const char *shard;  /* OPERATOR: the shard it concerns; NULL or "" for every shard */
    const char *who;    /* OPERATOR: who asked for it */
    const char *reason; /* OPERATOR: why */
};

/* Called for each record in log order while a log is read. Return 0 to go on. */
typedef int (*dlog_replay_fn)(void *arg, const struct dlog_rec *rec, struct dtx_err *err);

/* What reading a log found. */
struct dlog_scan {
    uint64_t records;
    uint64_t frames;
    uint64_t segments;
    uint64_t bytes;
    uint64_t first_segno; /* oldest segment replayed */
    uint64_t last_segno;
    uint64_t checkpoint_segno; /* segment whose checkpoint replay started from (0: none) */
    uint64_t obsolete;         /* older segments skipped (and, when repairing, removed) */
    bool torn;                 /* a torn last frame was found (and, when repairing, cut off) */
    uint64_t torn_offset;      /* where, in the last segment */
    uint64_t torn_bytes;
    bool torn_zero; /* the torn tail is all zeros: preallocated space, or a write that never landed
                     */
};

struct dlog;

struct dlog_opts {
    const char *dir;
    size_t segment_bytes; /* checkpoint after this many bytes */
    /*
     * Group-commit delay: when a forced record wakes the writer while at
     * least group_siblings other transactions are about to decide (see
     * dlog_hint_deciding), it waits group_delay_us before writing, so their
     * records share the fdatasync. 0 disables it.
     */
    uint32_t group_delay_us;
    uint32_t group_siblings;
    /* Largest frame written (0: DLOG_MAX_FRAME, also the most a reader accepts). */
    size_t max_frame;
    /* Zeros kept written ahead of the last frame, so fdatasync need not grow the file (0: none). */
    size_t prealloc_bytes;
    struct ev_loop *loop;
    /* Called on the loop thread when records up to lsn are durable. */
    void (*on_durable)(void *arg, uint64_t lsn);
    /* Called on the loop thread once, when the log fails. */
    void (*on_failed)(void *arg, const struct dtx_err *err);
    /* Called on the loop thread when a checkpoint is due (NULL: never checkpoint). */
    void (*on_checkpoint_wanted)(void *arg);
    void *arg;
};

/*
 * Reads every record of the log in opts->dir (created if missing) in
 * order, handing each to replay, cuts off a torn last frame, then starts
 * the writer on a fresh segment. Returns 0 and *out, or:
 *   DTX_ECORRUPT  a damaged frame before the end of the log; err names the
 *                 file and offset (the coordinator must not start)
 *   DTX_EIO       the directory or a file cannot be read or written
 *   any error returned by replay
 * On error *out is not modified and nothing was written.
 */
int dlog_open(struct dlog **out, const struct dlog_opts *opts, dlog_replay_fn replay, void *arg,
              struct dlog_scan *scan, struct dtx_err *err);

/*
 * Reads the log in dir without changing anything (for `dtxctl log`).
 * Returns 0, DTX_ECORRUPT with file and offset, DTX_EIO, or replay's error.
 */
int dlog_read(const char *dir, dlog_replay_fn replay, void *arg, struct dlog_scan *scan,
              struct dtx_err *err);

/*
 * Queues a record for the writer and returns its log sequence number (>0).
 * A forced record is written and fdatasynced as soon as the writer is free
 * (together with everything queued meanwhile); an unforced one waits for
 * the next forced write, or DLOG_LAZY_MS at most. Returns 0 when the log
 * has failed: the record will never be durable.
 */
uint64_t dlog_append(struct dlog *log, const struct dlog_rec *rec, bool force);

#define DLOG_LAZY_MS 100

/* The largest frame: batches are split to fit, a bigger checkpoint fails the log. */
#define DLOG_MAX_FRAME (256u * 1024 * 1024)

/* Tells the writer how many transactions are about to decide (votes still awaited), by delta. */
void dlog_hint_deciding(struct dlog *log, int delta);

/* Highest lsn known durable. */
uint64_t dlog_durable_lsn(struct dlog *log);

/* True once a write or fdatasync failed; *err (may be NULL) says why. */
bool dlog_failed(struct dlog *log, struct dtx_err *err);

/* Counts since open. */
struct dlog_stats {
    uint64_t syncs;                   /* frames written, each one fdatasync */
    uint64_t records;                 /* records appended */
    uint64_t checkpoints;             /* checkpoints written */
    uint64_t bytes;                   /* bytes written, checkpoints included */
    uint64_t sync_us;                 /* time spent writing and fdatasyncing */
    uint64_t last_checkpoint_wall_us; /* when the last checkpoint became durable (0: none yet) */
    uint64_t zeros_ahead;             /* preallocated bytes after the last frame */
};
void dlog_stats(struct dlog *log, struct dlog_stats *st);

/* Blocks until everything appended so far is durable; 0 or the failure's code. */
int dlog_flush(struct dlog *log, struct dtx_err *err);

/* Flushes what is queued, stops the writer and closes files. NULL is a no-op. */
void dlog_close(struct dlog *log);

/*
 * Hands the writer a snapshot (records encoded with dlog_encode) to write
 * as the CHECKPOINT opening a new segment, after which every older segment
 * is deleted. Everything appended before this call is written before the
 * snapshot. Takes the buffer's contents (records is left empty). Returns 0,
 * or DTX_ELOGFAIL when the log has failed.
 */
int dlog_checkpoint(struct dlog *log, struct buf *records);

/* Appends one encoded record to b (for building a checkpoint). */
void dlog_encode(struct buf *b, const struct dlog_rec *rec);

/* Name of a record type ("BOOT", "COMMIT", "END", or "?"). */
const char *dlog_type_name(enum dlog_type type);

#endif
