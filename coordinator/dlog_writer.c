/*
 * dlog_writer.c - the decision log's writer: the group-commit thread, the
 * directory lock, checkpoints and segment rotation, and the dstore ops of
 * the file store (dstore.h).
 *
 * Group commit (dstore_queue.h, shared with the other stores): appends
 * (loop thread) queue encoded records; the writer thread takes everything
 * queued at once, writes it as one frame and fdatasyncs it, then reports
 * the durable position to the loop.
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
 * thread; the writer thread owns fd, segno, salt and seg_size; the queue
 * (log->q) is shared and guards itself.
 */
#include "dlog_impl.h"
#include "dstore_queue.h"

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

struct dlog {
    struct dsq_store qs; /* first: a struct dlog is a struct dstore, with its queue */
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
    pthread_t thread;
    _Atomic uint64_t zeros_ahead; /* preallocated bytes after the last frame */
};

/* ---- writing ------------------------------------------------------------------- */

static void set_failed(struct dlog *log, int e, const char *what)
{
    char path[PATH_MAX + 32];
    struct dtx_err err;

    dlog_seg_path(path, sizeof(path), log->dir, log->segno);
    dtx_err_clear(&err);
    dtx_err_set(&err, DTX_ELOGFAIL, "could not %s decision log '%s': %s", what, path, strerror(e));
    dsq_fail(&log->qs.q, &err);
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
    e = fp_hit("dlog.write");
    if (!e && log->opts.prealloc_bytes && log->seg_size + DLOG_FRAME_HDR + len > log->alloc_end)
        e = extend_segment(log, log->seg_size + DLOG_FRAME_HDR + len);
    if (!e)
        e = write_all(log->fd, iov, 2, log->seg_size);
    if (e)
        return e;
    *what = "fdatasync";
    e = fp_hit("dlog.fdatasync"); /* crash here: written, never synced */
    if (e)
        return e;
    if (fdatasync(log->fd) < 0)
        return errno;
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
    if (log->seg_size >= 2 * (uint64_t)log->opts.segment_bytes) {
        *what = "start a new segment of"; /* the loop is late with its snapshot */
        return create_segment(log, log->segno + 1);
    }
    if (log->since_ckpt >= log->opts.segment_bytes)
        dsq_want_checkpoint(&log->qs.q);
    return 0;
}

static void *writer_main(void *arg)
{
    struct dlog *log = arg;
    struct dsq_batch b = {BUF_INIT, BUF_INIT, BUF_INIT, false, 0};

    while (dsq_take(&log->qs.q, &b, 0)) {
        const char *what = "write";
        uint64_t frames = log->frames, written, started_us = ev_clock_us();
        int e = 0;

        /* Order: what came before the snapshot, the snapshot, what came after it. */
        written = (b.before.len ? b.before.len + DLOG_FRAME_HDR : 0) +
                  (b.ckpt ? b.snap.len + DLOG_FRAME_HDR : 0) +
                  (b.work.len ? b.work.len + DLOG_FRAME_HDR : 0);
        if (b.before.len)
            e = write_batch(log, &b.before, &what);
        if (!e && b.ckpt)
            e = write_checkpoint(log, &b.snap, &what);
        if (!e && b.work.len)
            e = write_batch(log, &b.work, &what);
        if (!e)
            e = after_write(log, &what);
        if (e) {
            set_failed(log, e, what);
            break;
        }
        atomic_store(&log->zeros_ahead,
                     log->alloc_end > log->seg_size ? log->alloc_end - log->seg_size : 0);
        dsq_done(&log->qs.q, &b, log->frames - frames, written, ev_clock_us() - started_us);
    }
    dsq_batch_release(&b);
    return NULL;
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
    if (dsq_start(&log->qs.q, err) < 0)
        return DTX_EIO;
    if (pthread_create(&log->thread, NULL, writer_main, log) != 0)
        return dtx_err_set(err, DTX_EIO, "could not start the decision log writer thread");
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
    log->qs.base.ops = &dlog_ops;
    log->opts = *opts;
    snprintf(log->dir, sizeof(log->dir), "%s", opts->dir);
    log->dirfd = dirfd;
    log->lockfd = lockfd;
    log->max_frame =
        opts->max_frame && opts->max_frame < DLOG_MAX_FRAME ? opts->max_frame : DLOG_MAX_FRAME;
    log->fd = -1;
    dsq_init(&log->qs.q, &(struct dsq_opts){.group_delay_us = opts->group_delay_us,
                                            .group_siblings = opts->group_siblings,
                                            .loop = opts->loop,
                                            .cbs = opts->cbs});
    log->first_segno = scan->first_segno ? scan->first_segno : scan->last_segno + 1;
    rc = dlog_start(log, scan->last_segno + 1, err);
    if (rc < 0) {
        if (log->fd >= 0)
            close(log->fd);
        dsq_release(&log->qs.q);
        free(log);
        goto out_close_dir;
    }
    *out = &log->qs.base;
    return 0;

out_close_dir:
    close(lockfd);
    close(dirfd);
    return rc;
}

uint64_t dlog_durable_lsn(struct dstore *s)
{
    return dsq_durable_lsn(&((struct dlog *)s)->qs.q);
}

static void dlog_close(struct dstore *s)
{
    struct dlog *log = (struct dlog *)s;

    dsq_stop(&log->qs.q);
    pthread_join(log->thread, NULL);
    if (!dsq_failed(&log->qs.q, NULL))
        trim_segment(log); /* a clean stop leaves no zeros to cut at the next start */
    dsq_release(&log->qs.q);
    if (log->fd >= 0)
        close(log->fd);
    close(log->dirfd);
    close(log->lockfd); /* releases the lock: the last thing done with the log */
    free(log);
}

uint64_t dlog_zeros_ahead(struct dstore *s)
{
    return atomic_load(&((struct dlog *)s)->zeros_ahead);
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
    .append = dsq_op_append,
    .checkpoint = dsq_op_checkpoint,
    .hint_deciding = dsq_op_hint_deciding,
    .failed = dsq_op_failed,
    .flush = dsq_op_flush,
    .stats = dsq_op_stats,
    .describe = dlog_describe,
    .close = dlog_close,
};
