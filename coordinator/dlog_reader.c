/*
 * dlog_reader.c - reading the decision log and repairing its tail.
 *
 * Replay starts at the newest segment that opens with a valid CHECKPOINT
 * frame (older ones left behind by a crash are ignored and removed); a
 * torn checkpoint is no checkpoint, so replay then starts further back, at
 * segments that were not deleted yet.
 *
 * Torn or corrupt: only what was written after the last completed
 * fdatasync of the newest segment can be torn by a crash, and the writer
 * has at most one frame in flight. So a damaged frame is corruption
 * (refuse, naming file and offset) when anything shows it was durable:
 *   - it is not in the newest segment (a later segment began after it);
 *   - a valid frame, or any non-zero byte, follows it (a later write);
 *   - it is the checkpoint opening the newest segment and no older segment
 *     is left (they are deleted only once that checkpoint is durable);
 *   - it is complete: its bytes all landed but the checksum fails (a
 *     flipped bit, in the payload, the checksum, the type or the length).
 * Only a last frame that shows what an interrupted write leaves is cut off
 * as torn, never acknowledged: the file ends inside it, or its tail is
 * still the zeros that were there before the write (preallocated, or a
 * file extension that never landed) from a sector boundary, or for more
 * than the 16 bytes a complete frame may end with. A write torn in its
 * last few bytes, off a sector boundary, cannot be told from a flipped
 * bit there and is reported as corruption: the safe side. Without
 * preallocation (log_prealloc_bytes 0) a flipped bit in the length of the
 * very last frame looks like a short file, and is cut off.
 *
 * Thread model: whoever calls it (the coordinator at start, before the
 * writer runs; dtxctl offline). Touches nothing but the files.
 */
#include "dlog_impl.h"

#include "dtx/crc32c.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Where a segment stands, which says what in it may be torn. */
enum seg_place {
    SEG_OLDER,                 /* a later segment exists: nothing in it can be torn */
    SEG_NEWEST,                /* its last frame may be torn */
    SEG_ONLY_AFTER_CHECKPOINT, /* newest and only, segno > 1: its checkpoint was durable */
};

struct reader {
    const char *dir;
    drec_replay_fn replay;
    void *arg;
    struct dlog_scan *scan;
    struct drec_arena arena;
};

/*
 * True when a valid frame starts anywhere after off. Any byte may start one, and each
 * candidate's checksum may cover up to DLOG_MAX_FRAME bytes: checked one by one, damaged
 * megabytes of plausible headers took hours. So the CRC registers of every prefix after off
 * are computed once (four bytes of memory per byte, on this path only) and each
 * candidate's checksum is two of them and one shift (crc32c.h): time in proportion to
 * the segment.
 */
static bool valid_frame_after(const unsigned char *data, size_t size, size_t off, uint32_t salt)
{
    size_t from = off + 1, n;
    unsigned char s[4];
    uint32_t *reg, salted, op = 0, op_len = 0;
    bool found = false;

    if (from + DLOG_FRAME_HDR > size)
        return false;
    n = size - from;
    reg = xmalloc((n + 1) * sizeof(*reg)); /* reg[i]: over data[from .. from + i) */
    crc32c_prefixes(data + from, n, reg);
    put_le32(s, salt);
    salted = ~crc32c(0, s, 4); /* the register once the salt is in */
    for (size_t at = from; at + DLOG_FRAME_HDR <= size && !found; at++) {
        uint32_t len = get_le32(data + at + 4);
        size_t a = at + 4 - from, b;

        if ((data[at + 8] != DLOG_FRAME_BATCH && data[at + 8] != DLOG_FRAME_CHECKPOINT) ||
            len == 0 || len > DLOG_MAX_FRAME || len > size - at - DLOG_FRAME_HDR)
            continue;
        b = a + 5 + len; /* the checksum covers the length, the type and the payload */
        if (len != op_len) {
            op = crc32c_zeros((uint64_t)len + 5);
            op_len = len;
        }
        found = ~(crc32c_apply(op, salted ^ reg[a]) ^ reg[b]) == get_le32(data + at);
    }
    free(reg);
    return found;
}

static int replay_frame(struct reader *rd, const char *path, uint64_t off,
                        const unsigned char *payload, size_t len, struct dtx_err *err)
{
    int rc =
        drec_replay_batch(payload, len, &rd->arena, rd->replay, rd->arg, &rd->scan->records, err);

    if (rc == DTX_ECORRUPT)
        return dtx_err_prefix(err, "decision log '%s' is corrupt: in the frame at offset %" PRIu64,
                              path, off);
    return rc;
}

static bool all_zero(const unsigned char *p, size_t n)
{
    while (n > 0 && *p == 0) {
        p++;
        n--;
    }
    return n == 0;
}

/* Bytes a complete frame may end with that are zero (a record's empty string, an xid's top). */
#define NATURAL_ZEROS 16
#define SECTOR        512

/* The checksum the frame at off would have if its length were len (a length that flipped). */
static bool complete_with_length(const unsigned char *d, size_t off, uint32_t salt, size_t len)
{
    unsigned char h[9];

    memcpy(h, d + off, sizeof(h));
    put_le32(h + 4, (uint32_t)len);
    return dlog_frame_crc_of(salt, h, d + off + DLOG_FRAME_HDR, len) == get_le32(d + off);
}

/*
 * True when the damaged frame at off, nothing valid after it, shows an
 * interrupted write (see the top): its tail, from z on, never landed.
 */
static bool torn_write(const unsigned char *d, size_t size, size_t off, uint32_t salt)
{
    size_t z = size, end;
    uint32_t len;

    while (z > off && d[z - 1] == 0)
        z--; /* d[z..size) is zero: the zeros after the last write */
    if (size - off < DLOG_FRAME_HDR || z < off + DLOG_FRAME_HDR)
        return true; /* the file ends in its header, or not even its header landed */
    len = get_le32(d + off + 4);
    if (len == 0 || len > DLOG_MAX_FRAME ||
        (d[off + 8] != DLOG_FRAME_BATCH && d[off + 8] != DLOG_FRAME_CHECKPOINT))
        return false; /* a header that landed but was never written so */
    end = off + DLOG_FRAME_HDR + len;
    if (z > end)
        return false; /* something was written after it */
    /* also when the file seems to end inside it: a clean stop trims the zeros kept ahead
     * of the log, so its last frame ends the file, and a flipped length points past it */
    for (size_t e = z; e <= z + NATURAL_ZEROS && e <= size; e++) {
        if (e != end && e >= off + DLOG_FRAME_HDR &&
            complete_with_length(d, off, salt, e - off - DLOG_FRAME_HDR))
            return false; /* complete, with a flipped length */
    }
    if (end > size)
        return true; /* the file ends inside it */
    if (z % SECTOR != 0 && end - z <= NATURAL_ZEROS)
        return false; /* all of it landed: damaged since */
    return true;
}

/* Why the damaged frame at off cannot be a torn write, or NULL when it can. */
static const char *durable_because(const unsigned char *data, size_t size, size_t off,
                                   uint32_t salt, enum seg_place place)
{
    if (place == SEG_OLDER)
        return "a later segment follows it, so this is not a torn write";
    if (valid_frame_after(data, size, off, salt))
        return "valid records follow it, so this is not a torn write";
    if (place == SEG_ONLY_AFTER_CHECKPOINT && off == DLOG_SEG_HDR)
        return "it is the checkpoint the older segments were deleted for, so it was durable";
    if (!torn_write(data, size, off, salt))
        return "it is complete, so it was damaged after it was written, not torn";
    return NULL;
}

static int read_frames(struct reader *rd, const char *path, const unsigned char *data, size_t size,
                       uint32_t salt, enum seg_place place, size_t *valid_end, struct dtx_err *err)
{
    size_t off = DLOG_SEG_HDR;
    const char *why;
    int rc;

    while (off < size) {
        if (!dlog_frame_valid_at(data, size, off, salt)) {
            if ((why = durable_because(data, size, off, salt, place)))
                return dtx_err_set(err, DTX_ECORRUPT,
                                   "decision log '%s' is corrupt: damaged frame at offset %zu (%s)",
                                   path, off, why);
            rd->scan->torn = true;
            rd->scan->torn_offset = off;
            rd->scan->torn_bytes = size - off;
            rd->scan->torn_zero = all_zero(data + off, size - off);
            break;
        }
        rc =
            replay_frame(rd, path, off, data + off + DLOG_FRAME_HDR, get_le32(data + off + 4), err);
        if (rc < 0)
            return rc;
        rd->scan->frames++;
        off += DLOG_FRAME_HDR + get_le32(data + off + 4);
    }
    *valid_end = off;
    return 0;
}

static int read_file(const char *path, unsigned char **data, size_t *size, struct dtx_err *err)
{
    struct stat st;
    unsigned char *p;
    size_t got = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not open decision log '%s': %s", path,
                           strerror(errno));
    if (fstat(fd, &st) < 0) {
        close(fd);
        return dtx_err_set(err, DTX_EIO, "could not stat decision log '%s': %s", path,
                           strerror(errno));
    }
    p = xmalloc((size_t)st.st_size + 1);
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, p + got, (size_t)st.st_size - got);

        if (n == 0)
            break; /* the live log's writer trimmed its preallocated zeros meanwhile */
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            free(p);
            close(fd);
            return dtx_err_set(err, DTX_EIO, "could not read decision log '%s': %s", path,
                               strerror(e));
        }
        got += (size_t)n;
    }
    close(fd);
    *data = p;
    *size = got;
    return 0;
}

/* Reads one segment; *keep is the byte length of its valid prefix (0: drop the file). */
static int read_segment(struct reader *rd, const char *path, uint64_t segno, enum seg_place place,
                        size_t *keep, struct dtx_err *err)
{
    unsigned char *data = NULL;
    size_t size = 0;
    uint32_t salt = 0;
    int rc;

    rc = read_file(path, &data, &size, err);
    if (rc < 0)
        return rc;
    rd->scan->bytes += size;
    *keep = size;
    if (place == SEG_NEWEST &&
        (size < DLOG_SEG_HDR ||
         (size == DLOG_SEG_HDR &&
          (memcmp(data, DLOG_SEG_MAGIC, 8) != 0 || crc32c(0, data, 28) != get_le32(data + 28))))) {
        /*
         * A crash while the segment was being created, before its header was
         * durable (a file system may then show it short, or zero-filled): it
         * held nothing, as no record goes in before the header is synced.
         */
        rd->scan->torn = true;
        rd->scan->torn_offset = 0;
        rd->scan->torn_bytes = size;
        *keep = 0;
        goto out;
    }
    if (size < DLOG_SEG_HDR) {
        rc = dtx_err_set(err, DTX_ECORRUPT,
                         "decision log '%s' is corrupt: %zu bytes, shorter than its header", path,
                         size);
        goto out;
    }
    rc = dlog_check_header(data, segno, path, &salt, err);
    if (rc == 0)
        rc = read_frames(rd, path, data, size, salt, place, keep, err);
out:
    free(data);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

    return x < y ? -1 : x > y;
}

/* Lists segment numbers in dir, sorted. *segs is malloc'd. */
static int list_segments(const char *dir, uint64_t **segs, size_t *n, struct dtx_err *err)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    uint64_t *v = NULL;
    size_t cnt = 0, cap = 0;

    if (!d)
        return dtx_err_set(err, DTX_EIO, "could not open decision log directory '%s': %s", dir,
                           strerror(errno));
    while ((e = readdir(d)) != NULL) {
        uint64_t s;

        if (dlog_parse_segno(e->d_name, &s) < 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = xrealloc(v, cap * sizeof(*v));
        }
        v[cnt++] = s;
    }
    closedir(d);
    if (cnt)
        qsort(v, cnt, sizeof(*v), cmp_u64);
    *segs = v;
    *n = cnt;
    return 0;
}

static int repair_tail(const char *path, size_t keep, struct dtx_err *err)
{
    int fd;

    if (keep == 0) {
        if (unlink(path) < 0)
            return dtx_err_set(err, DTX_EIO, "could not remove empty decision log '%s': %s", path,
                               strerror(errno));
        return 0;
    }
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || ftruncate(fd, (off_t)keep) < 0 || fdatasync(fd) < 0) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        return dtx_err_set(err, DTX_EIO, "could not cut the torn tail of decision log '%s': %s",
                           path, strerror(e));
    }
    close(fd);
    return 0;
}

/* True when the segment's header is sound and its first frame is a valid CHECKPOINT. */
static bool opens_with_checkpoint(const char *path, uint64_t segno)
{
    unsigned char *data = NULL;
    size_t size = 0;
    uint32_t salt = 0;
    bool yes;

    if (read_file(path, &data, &size, NULL) < 0)
        return false;
    yes = size >= DLOG_SEG_HDR + DLOG_FRAME_HDR &&
          dlog_check_header(data, segno, path, &salt, NULL) == 0 &&
          dlog_frame_valid_at(data, size, DLOG_SEG_HDR, salt) &&
          data[DLOG_SEG_HDR + 8] == DLOG_FRAME_CHECKPOINT;
    free(data);
    return yes;
}

/*
 * Deletes segs[0..n), made obsolete by segs[n], which opens with a
 * checkpoint (a crash came before their deletion).
 * That checkpoint is flushed first: it may still be only in the page cache
 * (a crash between its write and its fdatasync), and the older segments
 * must not go before what replaces them is on disk.
 */
static int remove_obsolete(const char *dir, const uint64_t *segs, size_t n, struct dtx_err *err)
{
    char ckpt[PATH_MAX + 32];
    int fd;

    dlog_seg_path(ckpt, sizeof(ckpt), dir, segs[n]);
    fd = open(ckpt, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fdatasync(fd) < 0) {
        int e = errno;

        if (fd >= 0)
            close(fd);
        return dtx_err_set(err, DTX_EIO,
                           "could not flush decision log '%s' before removing the segments its "
                           "checkpoint replaces: %s",
                           ckpt, strerror(e));
    }
    close(fd);
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];

        dlog_seg_path(path, sizeof(path), dir, segs[i]);
        if (unlink(path) < 0 && errno != ENOENT)
            return dtx_err_set(err, DTX_EIO, "could not remove obsolete decision log '%s': %s",
                               path, strerror(errno));
    }
    return 0;
}

static enum seg_place place_of(const uint64_t *segs, size_t nsegs, size_t i)
{
    if (i + 1 < nsegs)
        return SEG_OLDER;
    return nsegs == 1 && segs[i] > 1 ? SEG_ONLY_AFTER_CHECKPOINT : SEG_NEWEST;
}

int dlog_read_dir(const char *dir, bool repair, drec_replay_fn replay, void *arg,
                  struct dlog_scan *scan, struct dtx_err *err)
{
    struct reader rd = {.dir = dir, .replay = replay, .arg = arg, .scan = scan};
    uint64_t *segs = NULL;
    size_t nsegs = 0, start = 0;
    int rc;

    memset(scan, 0, sizeof(*scan));
    rc = list_segments(dir, &segs, &nsegs, err);
    for (size_t i = nsegs; rc == 0 && i-- > 0;) {
        char path[PATH_MAX + 32];

        dlog_seg_path(path, sizeof(path), dir, segs[i]);
        if (opens_with_checkpoint(path, segs[i])) {
            start = i;
            scan->checkpoint_segno = segs[i];
            break;
        }
    }
    scan->obsolete = start;
    scan->first_segno = nsegs ? segs[start] : 0;
    if (rc == 0 && repair && start > 0)
        rc = remove_obsolete(dir, segs, start, err);
    for (size_t i = start; rc == 0 && i < nsegs; i++) {
        char path[PATH_MAX + 32];
        bool last = i + 1 == nsegs;
        size_t keep;

        dlog_seg_path(path, sizeof(path), dir, segs[i]);
        rc = read_segment(&rd, path, segs[i], place_of(segs, nsegs, i), &keep, err);
        scan->segments++;
        scan->last_segno = segs[i];
        if (rc == 0 && last && scan->torn && scan->torn_zero) {
            log_info("decision log '%s': %" PRIu64 " zero bytes at offset %" PRIu64
                     " (preallocated, or a write that never reached the disk) are the end of "
                     "the log%s",
                     path, scan->torn_bytes, scan->torn_offset, repair ? "; cut off" : "");
            if (repair)
                rc = repair_tail(path, keep, err);
        } else if (rc == 0 && last && scan->torn) {
            log_warn("decision log '%s': torn write of %" PRIu64 " bytes at offset %" PRIu64
                     " is %s; it was never acknowledged",
                     path, scan->torn_bytes, scan->torn_offset, repair ? "cut off" : "ignored");
            if (repair)
                rc = repair_tail(path, keep, err);
        }
    }
    free(segs);
    drec_arena_release(&rd.arena);
    return rc;
}

int dlog_read(const char *dir, drec_replay_fn replay, void *arg, struct dlog_scan *scan,
              struct dtx_err *err)
{
    return dlog_read_dir(dir, false, replay, arg, scan, err);
}
