/*
 * dlog_writer.c - the decision log's writer: the group-commit thread, the
 * directory lock, checkpoints and segment rotation, and the dstore ops of
 * the file store (dstore.h).
 *
 * Group commit: appends (loop thread) encode records into log->pending;
 * the writer thread takes everything pending at once, writes it as one
 * frame and fdatasyncs it, then reports the durable position to the loop
 * through an eventfd (on_wake -> cbs.on_durable).
 *
 * Checkpoints: once segment_bytes have been written since the last one,
 * the writer asks the loop for a snapshot of everything replay would still
 * need (cbs.on_checkpoint_wanted); the loop hands it over with
 * dstore_checkpoint(). The writer first writes what was queued before the
 * snapshot was taken, then writes the snapshot as the CHECKPOINT frame
 * opening a new segment, fdatasyncs it, and only then deletes every older
 * segment.
 *
 * Ownership: <log_dir>/dlog.lock holds an exclusive flock() for as long
 * as the log is open, and the holder's pid. A second coordinator pointed
 * at the same directory by mistake is refused before it reads anything:
 * its tail repair and checkpoint would otherwise remove segments the first
 * one is still writing, and its decisions would vanish.
 *
 * Thread model: the dstore ops and the callbacks run on the event loop's
 * thread; the writer thread owns fd, segno, salt and seg_size, and times
 * its writes into its own histograms (w), which it copies to the shared
 * ones (timing) after each group, under mu. Fields marked (mu) are shared
 * and protected by log->mu.
 */
#include "dlog_impl.h"

#include "dtx/crc32c.h"
#include "dtx/failpoint.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static const struct dstore_ops dlog_ops;

/* What the metrics show of the writer: write and fdatasync time per frame, records per group. */
struct dlog_timing {
    struct prom_hist write_s, sync_s, batch;
};

struct dlog {
    struct dstore base; /* first: a struct dlog is a struct dstore */
    struct dlog_opts opts;
    char dir[PATH_MAX];
    int dirfd;
    int lockfd; /* dlog.lock, flock()ed exclusively while open */
    size_t max_frame;
    /* writer thread only */
    int fd;
    uint64_t segno;
    uint32_t salt;
    uint64_t seg_size;
    uint64_t alloc_end;   /* the segment's zero-filled size (>= seg_size): prealloc_bytes ahead */
    uint64_t first_segno; /* oldest segment still on disk */
    uint64_t since_ckpt;  /* bytes written since the last checkpoint */
    uint64_t frames;      /* frames written and fdatasynced */
    uint64_t taken_lsn;   /* the last record taken from pending */
    struct dlog_timing w; /* this thread's histograms, copied to timing after each group */
    /* shared */
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t work_cv; /* pending non-empty or stopping */
    pthread_cond_t done_cv; /* durable_lsn advanced or failed */
    struct buf pending;     /* (mu) encoded records not yet taken by the writer */
    bool pending_forced;    /* (mu) pending holds a forced record (or a flush was asked) */
    uint64_t pending_since; /* (mu) when the oldest unforced pending record was queued */
    uint64_t last_lsn;      /* (mu) lsn of the last appended record */
    uint64_t durable_lsn;   /* (mu) */
    bool failed;            /* (mu) */
    struct dtx_err fail;    /* (mu) */
    bool stopping;          /* (mu) */
    uint64_t syncs;         /* (mu) frames written and fdatasynced */
    struct buf ckpt;        /* (mu) snapshot handed over by dlog_checkpoint() */
    struct buf ckpt_before; /* (mu) records appended before that snapshot was taken */
    bool ckpt_queued;       /* (mu) ckpt waits to be written */
    bool ckpt_writing;      /* (mu) the writer took a snapshot and is writing it */
    bool ckpt_wanted;       /* (mu) the writer asked the loop for a snapshot */
    bool ckpt_asked;        /* (mu) ... and the loop has not been told yet */
    uint64_t checkpoints;   /* (mu) checkpoints written */
    uint64_t last_ckpt_us;  /* (mu) wall-clock time the last one became durable */
    uint64_t zeros_ahead;   /* (mu) preallocated bytes after the last frame */
    uint64_t bytes;         /* (mu) bytes written */
    uint64_t sync_us;       /* (mu) time spent in write + fdatasync */
    atomic_int deciding;    /* transactions whose votes are still awaited (a hint) */
    /* (mu) the writer's histograms as of its last group */
    struct dlog_timing timing;
    /* loop thread only */
    struct ev_async wake;
    bool failure_reported;
};

/* ---- writing ------------------------------------------------------------------- */

static void set_failed(struct dlog *log, int e, const char *what)
{
    pthread_mutex_lock(&log->mu);
    if (!log->failed) {
        char path[PATH_MAX + 32];

        dlog_seg_path(path, sizeof(path), log->dir, log->segno);
        log->failed = true;
        dtx_err_set(&log->fail, DTX_ELOGFAIL, "could not %s decision log '%s': %s", what, path,
                    strerror(e));
    }
    pthread_cond_broadcast(&log->done_cv);
    pthread_mutex_unlock(&log->mu);
    ev_async_send(&log->wake);
}

/* Writes iov (at most 2 entries) at offset off; 0 or an errno. */
static int write_all(int fd, const struct iovec *iov, int iovcnt, uint64_t off)
{
    struct iovec v[2];
    int cnt = iovcnt;

    memcpy(v, iov, sizeof(*iov) * (size_t)iovcnt);
    while (cnt > 0) {
        ssize_t n = pwritev(fd, v, cnt, (off_t)off);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno;
        if (n == 0)
            return EIO;
        off += (uint64_t)n;
        while (cnt > 0 && (size_t)n >= v[0].iov_len) {
            n -= (ssize_t)v[0].iov_len;
            v[0] = v[1];
            cnt--;
        }
        if (cnt > 0) {
            v[0].iov_base = (char *)v[0].iov_base + n;
            v[0].iov_len -= (size_t)n;
        }
    }
    return 0;
}

/*
 * Preallocation: an fdatasync that must also record a larger file size
 * costs a journal commit; one into blocks already written and synced does
 * not (on this machine's ext4: ~350 against ~260 us). So the writer keeps
 * prealloc_bytes of zeros written ahead of the last frame, extending them
 * in one go when a frame would cross the end, and trims them off when the
 * segment is left (a new segment, a clean close). After a crash the zeros
 * are the end of the log, as a torn tail is, and are cut off at start; an
 * older segment never has any.
 */
static int write_zeros(struct dlog *log, uint64_t end)
{
    static const char zeros[65536];

    while (log->alloc_end < end) {
        size_t n =
            end - log->alloc_end < sizeof(zeros) ? (size_t)(end - log->alloc_end) : sizeof(zeros);
        ssize_t w = pwrite(log->fd, zeros, n, (off_t)log->alloc_end);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        log->alloc_end += (uint64_t)w;
    }
    return 0; /* made durable by the frame's fdatasync */
}

/*
 * Zeros up to need plus prealloc_bytes; on a full disk, no more than the
 * frame needs (whose own write then decides), so that preallocation never
 * fails the log earlier than plain appends would.
 */
static int extend_segment(struct dlog *log, uint64_t need)
{
    int e = write_zeros(log, need + log->opts.prealloc_bytes);

    if (e == ENOSPC || e == EDQUOT)
        e = log->alloc_end >= need ? 0 : write_zeros(log, need);
    return e;
}

/* Cuts the current segment's unused zeros off, durably, before it is left. */
static int trim_segment(struct dlog *log)
{
    if (log->fd < 0 || log->alloc_end <= log->seg_size)
        return 0;
    /* fsync, not fdatasync: the smaller size must be durable before the next segment */
    if (ftruncate(log->fd, (off_t)log->seg_size) < 0 || fsync(log->fd) < 0)
        return errno;
    log->alloc_end = log->seg_size;
    return 0;
}

/* Creates segment segno with its header, durably (file and directory entry). */
static int create_segment(struct dlog *log, uint64_t segno)
{
    char path[PATH_MAX + 32];
    unsigned char h[DLOG_SEG_HDR];
    struct iovec iov = {h, DLOG_SEG_HDR};
    uint32_t salt;
    int fd, e;

    if (getrandom(&salt, sizeof(salt), 0) != sizeof(salt))
        salt = (uint32_t)ev_wall_us() ^ (uint32_t)getpid();
    dlog_seg_path(path, sizeof(path), log->dir, segno);
    dlog_seg_header(h, salt, segno);
    e = trim_segment(log);
    if (e)
        return e;
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno;
    e = write_all(fd, &iov, 1, 0);
    if (!e && fdatasync(fd) < 0)
        e = errno;
    if (!e && fsync(log->dirfd) < 0)
        e = errno;
    if (e) {
        close(fd);
        return e;
    }
    if (log->fd >= 0)
        close(log->fd);
    log->fd = fd;
    log->segno = segno;
    log->salt = salt;
    log->seg_size = log->alloc_end = DLOG_SEG_HDR;
    return 0;
}

/* Writes records as one frame and makes it durable; returns 0 or an errno. */
static int write_frame(struct dlog *log, const void *records, size_t len, uint8_t type,
                       const char **what)
{
    unsigned char h[DLOG_FRAME_HDR];
    struct iovec iov[2];
    unsigned char s[4];
    uint32_t crc;
    uint64_t t0, t1;
    int e;

    if (len > log->max_frame) {
        *what = type == DLOG_FRAME_CHECKPOINT ? "write a checkpoint over the frame limit to"
                                              : "write a record over the frame limit to";
        return EFBIG;
    }
    put_le32(h + 4, (uint32_t)len);
    h[8] = type;
    put_le32(s, log->salt);
    crc = crc32c(crc32c(0, s, 4), h + 4, DLOG_FRAME_HDR - 4);
    crc = crc32c(crc, records, len);
    put_le32(h, crc);
    iov[0] = (struct iovec){h, DLOG_FRAME_HDR};
    iov[1] = (struct iovec){(void *)records, len};
    *what = "write";
    t0 = ev_clock_us();
    e = fp_hit("dlog.write");
    if (!e && log->opts.prealloc_bytes && log->seg_size + DLOG_FRAME_HDR + len > log->alloc_end)
        e = extend_segment(log, log->seg_size + DLOG_FRAME_HDR + len);
    if (!e)
        e = write_all(log->fd, iov, 2, log->seg_size);
    if (e)
        return e;
    *what = "fdatasync";
    t1 = ev_clock_us();
    e = fp_hit("dlog.fdatasync"); /* crash here: written, never synced */
    if (e)
        return e;
    if (fdatasync(log->fd) < 0)
        return errno;
    prom_hist_observe(&log->w.write_s, (t1 - t0) / 1e6);
    prom_hist_observe(&log->w.sync_s, (ev_clock_us() - t1) / 1e6);
    log->seg_size += DLOG_FRAME_HDR + len;
    log->since_ckpt += DLOG_FRAME_HDR + len;
    log->frames++;
    return 0;
}

/*
 * Writes queued records as BATCH frames, split at record boundaries to stay
 * within max_frame (each frame synced before the next, as always).
 */
static int write_batch(struct dlog *log, const struct buf *records, const char **what)
{
    const unsigned char *p = (const unsigned char *)records->data;
    size_t start = 0, pos = 0;
    int e;

    while (pos < records->len) {
        size_t rlen = DREC_HDR + (size_t)get_le32(p + pos + 1);

        if (pos > start && pos + rlen - start > log->max_frame) {
            e = write_frame(log, p + start, pos - start, DLOG_FRAME_BATCH, what);
            if (e)
                return e;
            start = pos;
        }
        pos += rlen;
    }
    return write_frame(log, p + start, pos - start, DLOG_FRAME_BATCH, what);
}

/*
 * A forced record is waiting (mu held). If enough other transactions are
 * about to decide, waits group_delay_us for their records to join it in
 * the same write, as PostgreSQL's commit_delay does; returns true.
 */
static bool group_delay(struct dlog *log)
{
    struct timespec ts;
    uint64_t until;

    if (!log->opts.group_delay_us || atomic_load(&log->deciding) < (int)log->opts.group_siblings)
        return true;
    until = ev_clock_us() + log->opts.group_delay_us;
    ts.tv_sec = (time_t)(until / 1000000u);
    ts.tv_nsec = (long)(until % 1000000u) * 1000;
    while (!log->stopping && !log->ckpt_queued && ev_clock_us() < until)
        pthread_cond_timedwait(&log->work_cv, &log->mu, &ts);
    return true;
}

/*
 * Waits (mu held) until there is something to write now: a forced record,
 * an unforced one older than DLOG_LAZY_MS, or anything at all when
 * stopping. Returns false when the writer should exit.
 */
static bool writer_wait(struct dlog *log)
{
    for (;;) {
        struct timespec ts;
        uint64_t due;

        if (log->failed)
            return false;
        if (log->ckpt_queued)
            return true;
        if (log->pending.len == 0) {
            if (log->stopping)
                return false;
            pthread_cond_wait(&log->work_cv, &log->mu);
            continue;
        }
        if (log->stopping)
            return true;
        if (log->pending_forced)
            return group_delay(log);
        due = log->pending_since + DLOG_LAZY_MS * 1000u;
        if (ev_clock_us() >= due)
            return true;
        ts.tv_sec = (time_t)(due / 1000000u);
        ts.tv_nsec = (long)(due % 1000000u) * 1000;
        pthread_cond_timedwait(&log->work_cv, &log->mu, &ts);
    }
}

/* Removes segments older than keep, then syncs the directory; 0 or an errno. */
static int drop_segments_before(struct dlog *log, uint64_t keep)
{
    for (uint64_t n = log->first_segno; n < keep; n++) {
        char path[PATH_MAX + 32];

        dlog_seg_path(path, sizeof(path), log->dir, n);
        if (unlink(path) < 0 && errno != ENOENT)
            return errno;
    }
    log->first_segno = keep;
    return fsync(log->dirfd) < 0 ? errno : 0;
}

/* Writes a snapshot as the first frame of a fresh segment, then drops older segments. */
static int write_checkpoint(struct dlog *log, const struct buf *snap, const char **what)
{
    int e = 0;

    if (log->seg_size > DLOG_SEG_HDR) {
        *what = "start a new segment of";
        e = create_segment(log, log->segno + 1);
    }
    if (!e)
        e = write_frame(log, snap->data, snap->len, DLOG_FRAME_CHECKPOINT, what);
    if (!e) {
        *what = "remove old segments of";
        e = drop_segments_before(log, log->segno);
    }
    log->since_ckpt = 0;
    return e;
}

/* After a write: rotate a full segment, and ask for a checkpoint once enough was written. */
static int after_write(struct dlog *log, const char **what)
{
    bool ask = false;

    if (log->seg_size >= 2 * (uint64_t)log->opts.segment_bytes) {
        *what = "start a new segment of"; /* the loop is late with its snapshot */
        return create_segment(log, log->segno + 1);
    }
    if (log->since_ckpt >= log->opts.segment_bytes && log->opts.cbs.on_checkpoint_wanted) {
        pthread_mutex_lock(&log->mu);
        if (!log->ckpt_wanted && !log->ckpt_queued)
            ask = log->ckpt_wanted = log->ckpt_asked = true;
        pthread_mutex_unlock(&log->mu);
        if (ask)
            ev_async_send(&log->wake);
    }
    return 0;
}

static void *writer_main(void *arg)
{
    struct dlog *log = arg;
    struct buf work = BUF_INIT, snap = BUF_INIT, before = BUF_INIT;

    pthread_mutex_lock(&log->mu);
    while (writer_wait(log)) {
        struct buf tmp = log->pending;
        uint64_t upto = log->last_lsn;
        bool ckpt = log->ckpt_queued;
        const char *what = "write";
        uint64_t written, started_us, written_us;
        int e = 0;

        log->pending = work;
        log->pending_forced = false;
        work = tmp;
        if (ckpt) {
            tmp = log->ckpt;
            log->ckpt = snap;
            snap = tmp;
            tmp = log->ckpt_before;
            log->ckpt_before = before;
            before = tmp;
            /* Taken: a snapshot handed over while this one is written waits its turn. */
            log->ckpt_queued = false;
            log->ckpt_writing = true;
        }
        pthread_mutex_unlock(&log->mu);

        /* Order: what came before the snapshot, the snapshot, what came after it. */
        written = (before.len ? before.len + DLOG_FRAME_HDR : 0) +
                  (ckpt ? snap.len + DLOG_FRAME_HDR : 0) +
                  (work.len ? work.len + DLOG_FRAME_HDR : 0);
        started_us = ev_clock_us();
        if (before.len)
            e = write_batch(log, &before, &what);
        if (!e && ckpt)
            e = write_checkpoint(log, &snap, &what);
        if (!e && work.len)
            e = write_batch(log, &work, &what);
        if (!e)
            e = after_write(log, &what);
        written_us = ev_clock_us() - started_us;
        buf_reset(&work);
        buf_reset(&snap);
        buf_reset(&before);
        if (e) {
            set_failed(log, e, what);
            pthread_mutex_lock(&log->mu);
            break;
        }
        if (upto > log->taken_lsn)
            prom_hist_observe(&log->w.batch, (double)(upto - log->taken_lsn));
        log->taken_lsn = upto;
        pthread_mutex_lock(&log->mu);
        log->timing = log->w;
        log->durable_lsn = upto;
        log->zeros_ahead = log->alloc_end > log->seg_size ? log->alloc_end - log->seg_size : 0;
        log->syncs = log->frames;
        log->bytes += written;
        log->sync_us += written_us;
        if (ckpt) {
            log->ckpt_writing = log->ckpt_wanted = false;
            log->checkpoints++;
            log->last_ckpt_us = ev_wall_us();
        }
        pthread_cond_broadcast(&log->done_cv);
        pthread_mutex_unlock(&log->mu);
        ev_async_send(&log->wake);
        pthread_mutex_lock(&log->mu);
    }
    pthread_mutex_unlock(&log->mu);
    buf_release(&work);
    buf_release(&snap);
    buf_release(&before);
    return NULL;
}

static void on_wake(struct ev_loop *loop, struct ev_async *a)
{
    struct dlog *log = a->data;
    uint64_t lsn;
    bool failed, ask;
    struct dtx_err fail;

    (void)loop;
    pthread_mutex_lock(&log->mu);
    lsn = log->durable_lsn;
    failed = log->failed;
    fail = log->fail;
    ask = log->ckpt_asked;
    log->ckpt_asked = false;
    pthread_mutex_unlock(&log->mu);
    if (log->opts.cbs.on_durable)
        log->opts.cbs.on_durable(log->opts.cbs.arg, lsn);
    if (ask && !failed)
        log->opts.cbs.on_checkpoint_wanted(log->opts.cbs.arg);
    if (failed && !log->failure_reported) {
        log->failure_reported = true;
        log_error("%s", fail.msg);
        if (log->opts.cbs.on_failed)
            log->opts.cbs.on_failed(log->opts.cbs.arg, &fail);
    }
}

/* work_cv waits with deadlines on CLOCK_MONOTONIC, the clock ev_clock_us() reads. */
static void init_monotonic_cond(pthread_cond_t *cv)
{
    pthread_condattr_t attr;

    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(cv, &attr);
    pthread_condattr_destroy(&attr);
}

static int open_dir(const char *dir, struct dtx_err *err)
{
    int fd;

    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return dtx_err_set(err, DTX_EIO, "could not create decision log directory '%s': %s", dir,
                           strerror(errno));
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not open decision log directory '%s': %s", dir,
                           strerror(errno));
    return fd;
}

/* Takes dlog.lock in the directory; returns its fd, or a negative error. */
static int lock_dir(const char *dir, int dirfd, struct dtx_err *err)
{
    int fd = openat(dirfd, "dlog.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    char pid[24] = "";
    ssize_t n;

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not open '%s/dlog.lock': %s", dir, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;

        n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        if (e == EWOULDBLOCK)
            return dtx_err_set(err, DTX_EIO,
                               "decision log directory '%s' is in use by another coordinator "
                               "(pid %s): two coordinators must never share a log",
                               dir, pid[0] ? pid : "unknown");
        return dtx_err_set(err, DTX_EIO, "could not lock '%s/dlog.lock': %s", dir, strerror(e));
    }
    n = snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)n, 0) != n)
        log_warn("could not write the pid into '%s/dlog.lock': %s", dir, strerror(errno));
    return fd;
}

static int dlog_start(struct dlog *log, uint64_t segno, struct dtx_err *err)
{
    int e = create_segment(log, segno);

    if (e) {
        char path[PATH_MAX + 32];

        dlog_seg_path(path, sizeof(path), log->dir, segno);
        return dtx_err_set(err, DTX_EIO, "could not create decision log '%s': %s", path,
                           strerror(e));
    }
    if (ev_async_start(log->opts.loop, &log->wake, on_wake, log) < 0)
        return dtx_err_set(err, DTX_EIO, "could not create the decision log's wake-up eventfd");
    if (pthread_create(&log->thread, NULL, writer_main, log) != 0) {
        ev_async_stop(log->opts.loop, &log->wake);
        return dtx_err_set(err, DTX_EIO, "could not start the decision log writer thread");
    }
    return 0;
}

int dlog_open(struct dstore **out, const struct dlog_opts *opts, drec_replay_fn replay, void *arg,
              struct dlog_scan *scan, struct dtx_err *err)
{
    struct dlog *log;
    int dirfd, lockfd, rc;

    if (strlen(opts->dir) >= PATH_MAX)
        return dtx_err_set(err, DTX_EINVAL, "decision log directory name is too long");
    dirfd = open_dir(opts->dir, err);
    if (dirfd < 0)
        return dirfd;
    lockfd = lock_dir(opts->dir, dirfd, err);
    if (lockfd < 0) {
        close(dirfd);
        return lockfd;
    }
    rc = dlog_read_dir(opts->dir, true, replay, arg, scan, err);
    if (rc < 0)
        goto out_close_dir;
    log = xcalloc(1, sizeof(*log));
    log->base.ops = &dlog_ops;
    log->opts = *opts;
    snprintf(log->dir, sizeof(log->dir), "%s", opts->dir);
    log->dirfd = dirfd;
    log->lockfd = lockfd;
    log->max_frame =
        opts->max_frame && opts->max_frame < DLOG_MAX_FRAME ? opts->max_frame : DLOG_MAX_FRAME;
    log->fd = -1;
    prom_hist_init(&log->w.write_s, &prom_seconds_buckets);
    prom_hist_init(&log->w.sync_s, &prom_seconds_buckets);
    prom_hist_init(&log->w.batch, &prom_size_buckets);
    log->timing = log->w;
    pthread_mutex_init(&log->mu, NULL);
    init_monotonic_cond(&log->work_cv);
    pthread_cond_init(&log->done_cv, NULL);
    buf_init(&log->pending);
    log->first_segno = scan->first_segno ? scan->first_segno : scan->last_segno + 1;
    rc = dlog_start(log, scan->last_segno + 1, err);
    if (rc < 0) {
        if (log->fd >= 0)
            close(log->fd);
        free(log);
        goto out_close_dir;
    }
    *out = &log->base;
    return 0;

out_close_dir:
    close(lockfd);
    close(dirfd);
    return rc;
}

static uint64_t dlog_append(struct dstore *s, const struct drec *rec, bool force)
{
    struct dlog *log = (struct dlog *)s;
    uint64_t lsn;

    pthread_mutex_lock(&log->mu);
    if (log->failed || log->stopping) {
        pthread_mutex_unlock(&log->mu);
        return 0;
    }
    if (log->pending.len == 0) {
        log->pending_since = ev_clock_us();
        if (!force) /* an idle writer waits with no deadline: give it one */
            pthread_cond_signal(&log->work_cv);
    }
    drec_encode(&log->pending, rec);
    lsn = ++log->last_lsn;
    if (force && !log->pending_forced) {
        log->pending_forced = true;
        pthread_cond_signal(&log->work_cv);
    }
    pthread_mutex_unlock(&log->mu);
    return lsn;
}

static void dlog_hint_deciding(struct dstore *s, int delta)
{
    struct dlog *log = (struct dlog *)s;

    atomic_fetch_add(&log->deciding, delta);
}

uint64_t dlog_durable_lsn(struct dstore *s)
{
    struct dlog *log = (struct dlog *)s;
    uint64_t lsn;

    pthread_mutex_lock(&log->mu);
    lsn = log->durable_lsn;
    pthread_mutex_unlock(&log->mu);
    return lsn;
}

static void dlog_stats(struct dstore *s, struct dstore_stats *st)
{
    struct dlog *log = (struct dlog *)s;

    pthread_mutex_lock(&log->mu);
    st->syncs = log->syncs;
    st->records = log->last_lsn;
    st->checkpoints = log->checkpoints;
    st->bytes = log->bytes;
    st->sync_us = log->sync_us;
    st->last_checkpoint_wall_us = log->last_ckpt_us;
    st->write_seconds = log->timing.write_s;
    st->sync_seconds = log->timing.sync_s;
    st->batch_records = log->timing.batch;
    pthread_mutex_unlock(&log->mu);
}

static bool dlog_failed(struct dstore *s, struct dtx_err *err)
{
    struct dlog *log = (struct dlog *)s;
    bool failed;

    pthread_mutex_lock(&log->mu);
    failed = log->failed;
    if (failed && err)
        *err = log->fail;
    pthread_mutex_unlock(&log->mu);
    return failed;
}

static int dlog_checkpoint(struct dstore *s, struct buf *records)
{
    struct dlog *log = (struct dlog *)s;
    int rc = 0;

    pthread_mutex_lock(&log->mu);
    if (log->failed || log->stopping) {
        rc = DTX_ELOGFAIL;
    } else {
        /* Records appended so far precede the snapshot; later ones follow it. A newer
         * snapshot replaces one not yet written (it describes a later state). */
        buf_append(&log->ckpt_before, buf_head(&log->pending), buf_avail(&log->pending));
        buf_reset(&log->pending);
        buf_release(&log->ckpt);
        log->ckpt = *records;
        buf_init(records);
        log->ckpt_queued = true;
        pthread_cond_signal(&log->work_cv);
    }
    pthread_mutex_unlock(&log->mu);
    buf_release(records);
    return rc;
}

static int dlog_flush(struct dstore *s, struct dtx_err *err)
{
    struct dlog *log = (struct dlog *)s;
    int rc = 0;

    pthread_mutex_lock(&log->mu);
    if (log->pending.len > 0) {
        log->pending_forced = true;
        pthread_cond_signal(&log->work_cv);
    }
    while (!log->failed &&
           (log->durable_lsn < log->last_lsn || log->ckpt_queued || log->ckpt_writing))
        pthread_cond_wait(&log->done_cv, &log->mu);
    if (log->failed) {
        if (err)
            *err = log->fail;
        rc = DTX_ELOGFAIL;
    }
    pthread_mutex_unlock(&log->mu);
    return rc;
}

static void dlog_close(struct dstore *s)
{
    struct dlog *log = (struct dlog *)s;

    pthread_mutex_lock(&log->mu);
    log->stopping = true;
    pthread_cond_signal(&log->work_cv);
    pthread_mutex_unlock(&log->mu);
    pthread_join(log->thread, NULL);
    ev_async_stop(log->opts.loop, &log->wake);
    if (!log->failed)
        trim_segment(log); /* a clean stop leaves no zeros to cut at the next start */
    if (log->fd >= 0)
        close(log->fd);
    close(log->dirfd);
    close(log->lockfd); /* releases the lock: the last thing done with the log */
    pthread_mutex_destroy(&log->mu);
    pthread_cond_destroy(&log->work_cv);
    pthread_cond_destroy(&log->done_cv);
    buf_release(&log->pending);
    buf_release(&log->ckpt);
    buf_release(&log->ckpt_before);
    free(log);
}

uint64_t dlog_zeros_ahead(struct dstore *s)
{
    struct dlog *log = (struct dlog *)s;
    uint64_t n;

    pthread_mutex_lock(&log->mu);
    n = log->zeros_ahead;
    pthread_mutex_unlock(&log->mu);
    return n;
}

/* Bytes and segment files of the log on disk, for operators. */
static void dlog_describe(struct dstore *s, cJSON *obj)
{
    struct dlog *log = (struct dlog *)s;
    uint64_t bytes = 0, segments = 0, zeros = dlog_zeros_ahead(s);
    DIR *d = opendir(log->dir);
    struct dirent *e;
    char path[PATH_MAX + 32];
    struct stat st;

    while (d && (e = readdir(d))) {
        uint64_t segno;

        if (dlog_parse_segno(e->d_name, &segno) < 0)
            continue;
        dlog_seg_path(path, sizeof(path), log->dir, segno);
        if (stat(path, &st) == 0) {
            bytes += (uint64_t)st.st_size;
            segments++;
        }
    }
    if (d)
        closedir(d);
    jsonx_add_str(obj, "type", "file");
    jsonx_add_str(obj, "dir", log->dir);
    jsonx_add_num(obj, "bytes_on_disk", (double)bytes);
    jsonx_add_num(obj, "bytes_used", (double)(bytes > zeros ? bytes - zeros : 0));
    jsonx_add_num(obj, "segments", (double)segments);
}

static const struct dstore_ops dlog_ops = {
    .name = "file",
    .append = dlog_append,
    .checkpoint = dlog_checkpoint,
    .hint_deciding = dlog_hint_deciding,
    .failed = dlog_failed,
    .flush = dlog_flush,
    .stats = dlog_stats,
    .describe = dlog_describe,
    .close = dlog_close,
};
