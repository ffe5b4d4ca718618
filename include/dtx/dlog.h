/*
 * dlog.h - the decision log: the default decision store (dstore.h), an
 * append-only, checksummed, group-committed log of decision records in
 * local files.
 *
 * Appends come from the event loop; one writer thread writes and
 * fdatasyncs everything appended since its last write as one frame (group
 * commit) and reports the durable position back to the loop. After a
 * failed write or fdatasync the log is failed for good: nothing appended
 * afterwards becomes durable, and the failure is never retried on the same
 * data (a retried fsync can report success for data the kernel dropped).
 *
 * The module is three files, as LevelDB splits its log: dlog_format.c (the
 * byte format of segments and frames, described there and in
 * docs/decision-log.md), dlog_reader.c (reading and tail repair) and
 * dlog_writer.c (the writer thread, the directory lock, the dstore ops).
 */
#ifndef DTX_DLOG_H
#define DTX_DLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/drec.h"
#include "dtx/dstore.h"
#include "dtx/err.h"
#include "dtx/ev.h"

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

struct dlog_opts {
    const char *dir;
    size_t segment_bytes; /* checkpoint after this many bytes */
    /*
     * Group-commit delay: when a forced record wakes the writer while at
     * least group_siblings other transactions are about to decide (see
     * dstore_hint_deciding), it waits group_delay_us before writing, so
     * their records share the fdatasync. 0 disables it.
     */
    uint32_t group_delay_us;
    uint32_t group_siblings;
    /* Largest frame written (0: DLOG_MAX_FRAME, also the most a reader accepts). */
    size_t max_frame;
    /* Zeros kept written ahead of the last frame, so fdatasync need not grow the file (0: none). */
    size_t prealloc_bytes;
    struct ev_loop *loop;
    struct dstore_cbs cbs;
};

/*
 * Reads every record of the log in opts->dir (created if missing) in
 * order, handing each to replay, cuts off a torn last frame, then starts
 * the writer on a fresh segment. Returns 0 and *out, or:
 *   DTX_ECORRUPT  a damaged frame before the end of the log; err names the
 *                 file and offset (the coordinator must not start)
 *   DTX_EIO       the directory or a file cannot be read or written, or
 *                 another process holds the directory's lock
 *   any error returned by replay
 * On error *out is not modified and nothing was written.
 */
int dlog_open(struct dstore **out, const struct dlog_opts *opts, drec_replay_fn replay, void *arg,
              struct dlog_scan *scan, struct dtx_err *err);

/*
 * Reads the log in dir without changing anything (for `dtxctl log`).
 * Returns 0, DTX_ECORRUPT with file and offset, DTX_EIO, or replay's error.
 */
int dlog_read(const char *dir, drec_replay_fn replay, void *arg, struct dlog_scan *scan,
              struct dtx_err *err);

/* An unforced record waits at most this long for a forced one to carry it. */
#define DLOG_LAZY_MS 100

/* The largest frame: batches are split to fit, a bigger checkpoint fails the log. */
#define DLOG_MAX_FRAME (256u * 1024 * 1024)

/* Highest position known durable (for tests). */
uint64_t dlog_durable_lsn(struct dstore *s);
/* Preallocated bytes after the last frame (for tests and dtxctl status). */
uint64_t dlog_zeros_ahead(struct dstore *s);

#endif
