/*
 * dlog.c - the decision log: format, reader (with torn-tail repair) and the
 * group-commit writer thread.
 *
 * Files: <log_dir>/dlog-<segno, 10 digits>.log, segment numbers increasing.
 * Each start of the coordinator begins a new segment.
 *
 * Segment header (32 bytes, integers little-endian):
 *   0  magic    "DTXDLOG\0"
 *   8  version  u32 = 1
 *  12  salt     u32, random per segment
 *  16  segno    u64, equal to the number in the file name
 *  24  reserved u32 = 0
 *  28  crc      u32, CRC-32C of bytes 0..27
 *
 * Then frames, one per group-commit write:
 *   0  crc      u32, CRC-32C over (salt as 4 LE bytes, bytes 4 .. 9+len)
 *   4  len      u32, payload bytes
 *   8  type     u8 = 1 (BATCH), or 2 (CHECKPOINT, only as a segment's first frame)
 *   9  payload  len bytes: one or more records
 *
 * Record:
 *   0  type     u8 (enum dlog_type)
 *   1  len      u32, body bytes
 *   5  body:
 *      BOOT    epoch u64 | wall_us u64 | node_id str16
 *      COMMIT  gtid str16 | wall_us u64 | protocol u8 | idem_key str16 |
 *              req_hash u64 | nbranches u16 | { shard str16 | xid u64 } * n |
 *              results str32
 *      END     gtid str16 | wall_us u64
 *      OPERATOR gtid str16 | wall_us u64 | kind u8 (1 resolve, 2 forget) |
 *              commit u8 (1 commit, 0 abort) | shard str16 ("" = every shard) |
 *              who str16 | reason str16
 *   str16 = u16 length + bytes; str32 = u32 length + bytes (no NUL).
 *
 * A frame is the unit of atomicity: the writer issues frame N+1 only after
 * frame N was fdatasynced, so only the last frame of the last segment can
 * be torn by a crash. Reading a frame that is short, overlong or fails its
 * CRC, the reader looks for any valid frame after it: if there is one, the
 * damage is in the middle of the log (corruption: refuse, naming file and
 * offset); if not, it is a torn tail, which was never acknowledged and is
 * cut off. The salt keeps frames of an older file's contents from passing
 * as valid.
 *
 * Checkpoints: once segment_bytes have been written since the last one,
 * the writer asks the loop for a snapshot of everything replay would still
 * need (on_checkpoint_wanted); the loop hands it over with
 * dlog_checkpoint(). The writer first writes what was queued before the
 * snapshot was taken, then writes the snapshot as the CHECKPOINT frame
 * opening a new segment, fdatasyncs it, and only then deletes every older
 * segment. Replay starts at the newest segment that opens with a valid
 * CHECKPOINT frame (older ones left behind by a crash are ignored and
 * removed); a torn checkpoint is no checkpoint, so replay then starts
 * further back, at segments that were not deleted yet.
 *
 * Ownership: <log_dir>/dlog.lock holds an exclusive flock() for as long
 * as the log is open, and the holder's pid. A second coordinator pointed
 * at the same directory by mistake is refused before it reads anything:
 * its tail repair and checkpoint would otherwise remove segments the first
 * one is still writing, and its decisions would vanish.
 *
 * Thread model: dlog_append(), dlog_durable_lsn() and the callbacks run on
 * the event loop's thread; the writer thread owns fd, segno, salt and
 * seg_size. Fields marked (mu) are shared and protected by log->mu.
 */
#include "dtx/dlog.h"
#include "dtx/buf.h"
#include "dtx/crc32c.h"
#include "dtx/failpoint.h"
#include "dtx/log.h"

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

#define SEG_MAGIC        "DTXDLOG"
#define SEG_VERSION      1
#define SEG_HDR          32
#define FRAME_HDR        9
#define FRAME_BATCH      1
#define FRAME_CHECKPOINT 2
#define REC_HDR          5
#define MAX_FRAME        DLOG_MAX_FRAME

struct dlog {
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
    /* loop thread only */
    struct ev_async wake;
    bool failure_reported;
};

const char *dlog_type_name(enum dlog_type type)
{
    switch (type) {
    case DLOG_BOOT:
        return "BOOT";
    case DLOG_COMMIT:
        return "COMMIT";
    case DLOG_END:
        return "END";
    case DLOG_OPERATOR:
        return "OPERATOR";
    }
    return "?";
}

/* ---- record encoding ------------------------------------------------------- */

static void put_str16(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n > UINT16_MAX)
        n = UINT16_MAX;
    buf_put_le16(b, (uint16_t)n);
    buf_append(b, s ? s : "", n);
}

static void put_str32(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    buf_put_le32(b, (uint32_t)n);
    buf_append(b, s ? s : "", n);
}

static void encode_body(struct buf *b, const struct dlog_rec *r)
{
    switch (r->type) {
    case DLOG_BOOT:
        buf_put_le64(b, r->epoch);
        buf_put_le64(b, r->wall_us);
        put_str16(b, r->node_id);
        break;
    case DLOG_COMMIT:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_u8(b, r->protocol);
        put_str16(b, r->idem_key);
        buf_put_le64(b, r->req_hash);
        buf_put_le16(b, (uint16_t)r->nbranches);
        for (size_t i = 0; i < r->nbranches; i++) {
            put_str16(b, r->branches[i].shard);
            buf_put_le64(b, r->branches[i].xid);
        }
        put_str32(b, r->results);
        break;
    case DLOG_END:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        break;
    case DLOG_OPERATOR:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_u8(b, r->op_kind);
        buf_put_u8(b, r->op_commit);
        put_str16(b, r->shard);
        put_str16(b, r->who);
        put_str16(b, r->reason);
        break;
    }
}

/* Appends one record (header and body) to b. */
void dlog_encode(struct buf *b, const struct dlog_rec *r)
{
    size_t at;

    buf_put_u8(b, (uint8_t)r->type);
    at = b->len;
    buf_put_le32(b, 0);
    encode_body(b, r);
    put_le32((unsigned char *)b->data + at, (uint32_t)(b->len - at - 4));
}

/* ---- record decoding --------------------------------------------------------- */

struct rd {
    const unsigned char *p;
    size_t n;
    bool bad;
    struct buf *arena; /* reserved up front so pointers into it stay valid */
};

static const unsigned char *rd_take(struct rd *r, size_t n)
{
    const unsigned char *p = r->p;

    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->n -= n;
    return p;
}

static uint64_t rd_u64(struct rd *r)
{
    const unsigned char *p = rd_take(r, 8);

    return p ? get_le64(p) : 0;
}

static uint8_t rd_u8(struct rd *r)
{
    const unsigned char *p = rd_take(r, 1);

    return p ? p[0] : 0;
}

static const char *rd_strn(struct rd *r, size_t n)
{
    const unsigned char *p = rd_take(r, n);
    char *s;

    if (!p)
        return NULL;
    s = r->arena->data + r->arena->len;
    memcpy(s, p, n);
    s[n] = '\0';
    r->arena->len += n + 1;
    return s;
}

static const char *rd_str16(struct rd *r)
{
    const unsigned char *p = rd_take(r, 2);

    return p ? rd_strn(r, get_le16(p)) : NULL;
}

static const char *rd_str32(struct rd *r)
{
    const unsigned char *p = rd_take(r, 4);

    return p ? rd_strn(r, get_le32(p)) : NULL;
}

static int decode_commit(struct rd *r, struct dlog_rec *out, struct dlog_branch **branches,
                         size_t *cap)
{
    const unsigned char *p;
    size_t n;

    out->gtid = rd_str16(r);
    out->wall_us = rd_u64(r);
    out->protocol = rd_u8(r);
    out->idem_key = rd_str16(r);
    out->req_hash = rd_u64(r);
    p = rd_take(r, 2);
    n = p ? get_le16(p) : 0;
    if (n > *cap) {
        struct dlog_branch *b = realloc(*branches, n * sizeof(*b));

        if (!b)
            abort();
        *branches = b;
        *cap = n;
    }
    for (size_t i = 0; i < n && !r->bad; i++) {
        (*branches)[i].shard = rd_str16(r);
        (*branches)[i].xid = rd_u64(r);
    }
    out->branches = *branches;
    out->nbranches = n;
    out->results = rd_str32(r);
    return r->bad ? -1 : 0;
}

/* Decodes one record body; returns 0 or -1 when it does not parse. */
static int decode_body(uint8_t type, const unsigned char *p, size_t n, struct buf *arena,
                       struct dlog_branch **branches, size_t *cap, struct dlog_rec *out)
{
    struct rd r = {p, n, false, arena};

    memset(out, 0, sizeof(*out));
    buf_reset(arena);
    buf_reserve(arena, 2 * n + 16);
    out->type = (enum dlog_type)type;
    switch (type) {
    case DLOG_BOOT:
        out->epoch = rd_u64(&r);
        out->wall_us = rd_u64(&r);
        out->node_id = rd_str16(&r);
        break;
    case DLOG_COMMIT:
        if (decode_commit(&r, out, branches, cap) < 0)
            return -1;
        break;
    case DLOG_END:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        break;
    case DLOG_OPERATOR:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        out->op_kind = rd_u8(&r);
        out->op_commit = rd_u8(&r) != 0;
        out->shard = rd_str16(&r);
        out->who = rd_str16(&r);
        out->reason = rd_str16(&r);
        if (out->op_kind != DLOG_OP_RESOLVE && out->op_kind != DLOG_OP_FORGET)
            return -1;
        break;
    default:
        return -1;
    }
    return (r.bad || r.n != 0) ? -1 : 0;
}

/* ---- reading ------------------------------------------------------------------- */

struct reader {
    const char *dir;
    dlog_replay_fn replay;
    void *arg;
    struct dlog_scan *scan;
    struct buf arena;
    struct dlog_branch *branches;
    size_t cap;
};

static uint32_t frame_crc(uint32_t salt, const unsigned char *frame, size_t len)
{
    unsigned char s[4];

    put_le32(s, salt);
    return crc32c(crc32c(0, s, 4), frame + 4, FRAME_HDR - 4 + len);
}

/* True when a complete, checksum-valid frame starts at data[off]. */
static bool frame_valid_at(const unsigned char *data, size_t size, size_t off, uint32_t salt)
{
    uint32_t len;

    if (size - off < FRAME_HDR)
        return false;
    len = get_le32(data + off + 4);
    if ((data[off + 8] != FRAME_BATCH && data[off + 8] != FRAME_CHECKPOINT) || len == 0 ||
        len > MAX_FRAME || len > size - off - FRAME_HDR)
        return false;
    return frame_crc(salt, data + off, len) == get_le32(data + off);
}

static bool valid_frame_after(const unsigned char *data, size_t size, size_t off, uint32_t salt)
{
    for (size_t at = off + 1; at + FRAME_HDR <= size; at++) {
        if (frame_valid_at(data, size, at, salt))
            return true;
    }
    return false;
}

static int replay_frame(struct reader *rd, const char *path, uint64_t off,
                        const unsigned char *payload, size_t len, struct dtx_err *err)
{
    size_t pos = 0;

    while (pos < len) {
        struct dlog_rec rec;
        uint32_t blen;
        int rc;

        if (len - pos < REC_HDR || (blen = get_le32(payload + pos + 1)) > len - pos - REC_HDR)
            return dtx_err_set(err, DTX_ECORRUPT,
                               "decision log '%s' is corrupt: bad record framing in the frame at "
                               "offset %" PRIu64,
                               path, off);
        if (decode_body(payload[pos], payload + pos + REC_HDR, blen, &rd->arena, &rd->branches,
                        &rd->cap, &rec) < 0)
            return dtx_err_set(err, DTX_ECORRUPT,
                               "decision log '%s' is corrupt: undecodable record of type %u in the "
                               "frame at offset %" PRIu64,
                               path, payload[pos], off);
        rc = rd->replay ? rd->replay(rd->arg, &rec, err) : 0;
        if (rc < 0)
            return rc;
        rd->scan->records++;
        pos += REC_HDR + blen;
    }
    return 0;
}

static int check_header(const unsigned char *h, uint64_t segno, const char *path, uint32_t *salt,
                        struct dtx_err *err)
{
    if (memcmp(h, SEG_MAGIC, 8) != 0)
        return dtx_err_set(err, DTX_ECORRUPT, "decision log '%s' is corrupt: bad magic at offset 0",
                           path);
    if (crc32c(0, h, 28) != get_le32(h + 28))
        return dtx_err_set(err, DTX_ECORRUPT,
                           "decision log '%s' is corrupt: header checksum mismatch at offset 0",
                           path);
    if (get_le32(h + 8) != SEG_VERSION)
        return dtx_err_set(err, DTX_ECORRUPT,
                           "decision log '%s' has version %u; this coordinator reads version %u",
                           path, get_le32(h + 8), SEG_VERSION);
    if (get_le64(h + 16) != segno)
        return dtx_err_set(err, DTX_ECORRUPT,
                           "decision log '%s' is corrupt: header says segment %" PRIu64, path,
                           get_le64(h + 16));
    *salt = get_le32(h + 12);
    return 0;
}

/*
 * Walks the frames of one segment image. For the last segment a damaged
 * frame with nothing valid after it is a torn tail: *valid_end is where
 * the good frames end. Elsewhere any damage is corruption.
 */
static bool all_zero(const unsigned char *p, size_t n)
{
    while (n > 0 && *p == 0) {
        p++;
        n--;
    }
    return n == 0;
}

static int read_frames(struct reader *rd, const char *path, const unsigned char *data, size_t size,
                       uint32_t salt, bool last, size_t *valid_end, struct dtx_err *err)
{
    size_t off = SEG_HDR;
    int rc;

    while (off < size) {
        if (!frame_valid_at(data, size, off, salt)) {
            if (last && !valid_frame_after(data, size, off, salt)) {
                rd->scan->torn = true;
                rd->scan->torn_offset = off;
                rd->scan->torn_bytes = size - off;
                rd->scan->torn_zero = all_zero(data + off, size - off);
                break;
            }
            return dtx_err_set(err, DTX_ECORRUPT,
                               "decision log '%s' is corrupt: damaged frame at offset %zu "
                               "(valid records follow it, so this is not a torn write)",
                               path, off);
        }
        rc = replay_frame(rd, path, off, data + off + FRAME_HDR, get_le32(data + off + 4), err);
        if (rc < 0)
            return rc;
        rd->scan->frames++;
        off += FRAME_HDR + get_le32(data + off + 4);
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
    p = malloc((size_t)st.st_size + 1);
    if (!p)
        abort();
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
static int read_segment(struct reader *rd, const char *path, uint64_t segno, bool last,
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
    if (last &&
        (size < SEG_HDR || (size == SEG_HDR && (memcmp(data, SEG_MAGIC, 8) != 0 ||
                                                crc32c(0, data, 28) != get_le32(data + 28))))) {
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
    if (size < SEG_HDR) {
        rc = dtx_err_set(err, DTX_ECORRUPT,
                         "decision log '%s' is corrupt: %zu bytes, shorter than its header", path,
                         size);
        goto out;
    }
    rc = check_header(data, segno, path, &salt, err);
    if (rc == 0)
        rc = read_frames(rd, path, data, size, salt, last, keep, err);
out:
    free(data);
    return rc;
}

static int parse_segno(const char *name, uint64_t *segno)
{
    unsigned long long n;
    int used = 0;

    if (sscanf(name, "dlog-%10llu.log%n", &n, &used) != 1 || used != (int)strlen(name) ||
        strlen(name) != 19)
        return -1;
    *segno = n;
    return 0;
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

        if (parse_segno(e->d_name, &s) < 0)
            continue;
        if (cnt == cap) {
            cap = cap ? cap * 2 : 16;
            v = realloc(v, cap * sizeof(*v));
            if (!v)
                abort();
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

static void seg_path(char *out, size_t outsz, const char *dir, uint64_t segno)
{
    snprintf(out, outsz, "%s/dlog-%010" PRIu64 ".log", dir, segno);
}

/* Cuts the torn tail off the last segment (or removes a segment that holds nothing). */
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
    yes = size >= SEG_HDR + FRAME_HDR && check_header(data, segno, path, &salt, NULL) == 0 &&
          frame_valid_at(data, size, SEG_HDR, salt) && data[SEG_HDR + 8] == FRAME_CHECKPOINT;
    free(data);
    return yes;
}

/* Removes segments made obsolete by a checkpoint (a crash came before their deletion). */
static int remove_obsolete(const char *dir, const uint64_t *segs, size_t n, struct dtx_err *err)
{
    for (size_t i = 0; i < n; i++) {
        char path[PATH_MAX + 32];

        seg_path(path, sizeof(path), dir, segs[i]);
        if (unlink(path) < 0 && errno != ENOENT)
            return dtx_err_set(err, DTX_EIO, "could not remove obsolete decision log '%s': %s",
                               path, strerror(errno));
    }
    return 0;
}

static int read_dir(const char *dir, bool repair, dlog_replay_fn replay, void *arg,
                    struct dlog_scan *scan, struct dtx_err *err)
{
    struct reader rd = {dir, replay, arg, scan, BUF_INIT, NULL, 0};
    uint64_t *segs = NULL;
    size_t nsegs = 0, start = 0;
    int rc;

    memset(scan, 0, sizeof(*scan));
    rc = list_segments(dir, &segs, &nsegs, err);
    for (size_t i = nsegs; rc == 0 && i-- > 0;) {
        char path[PATH_MAX + 32];

        seg_path(path, sizeof(path), dir, segs[i]);
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

        seg_path(path, sizeof(path), dir, segs[i]);
        rc = read_segment(&rd, path, segs[i], last, &keep, err);
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
    free(rd.branches);
    buf_release(&rd.arena);
    return rc;
}

int dlog_read(const char *dir, dlog_replay_fn replay, void *arg, struct dlog_scan *scan,
              struct dtx_err *err)
{
    return read_dir(dir, false, replay, arg, scan, err);
}

/* ---- writing ------------------------------------------------------------------- */

static void set_failed(struct dlog *log, int e, const char *what)
{
    pthread_mutex_lock(&log->mu);
    if (!log->failed) {
        char path[PATH_MAX + 32];

        seg_path(path, sizeof(path), log->dir, log->segno);
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
    unsigned char h[SEG_HDR];
    struct iovec iov = {h, SEG_HDR};
    uint32_t salt;
    int fd, e;

    if (getrandom(&salt, sizeof(salt), 0) != sizeof(salt))
        salt = (uint32_t)ev_wall_us() ^ (uint32_t)getpid();
    seg_path(path, sizeof(path), log->dir, segno);
    memset(h, 0, sizeof(h));
    memcpy(h, SEG_MAGIC, 8);
    put_le32(h + 8, SEG_VERSION);
    put_le32(h + 12, salt);
    put_le64(h + 16, segno);
    put_le32(h + 28, crc32c(0, h, 28));
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
    log->seg_size = log->alloc_end = SEG_HDR;
    return 0;
}

/* Writes records as one frame and makes it durable; returns 0 or an errno. */
static int write_frame(struct dlog *log, const void *records, size_t len, uint8_t type,
                       const char **what)
{
    unsigned char h[FRAME_HDR];
    struct iovec iov[2];
    unsigned char s[4];
    uint32_t crc;
    int e;

    if (len > log->max_frame) {
        *what = type == FRAME_CHECKPOINT ? "write a checkpoint over the frame limit to"
                                         : "write a record over the frame limit to";
        return EFBIG;
    }
    put_le32(h + 4, (uint32_t)len);
    h[8] = type;
    put_le32(s, log->salt);
    crc = crc32c(crc32c(0, s, 4), h + 4, FRAME_HDR - 4);
    crc = crc32c(crc, records, len);
    put_le32(h, crc);
    iov[0] = (struct iovec){h, FRAME_HDR};
    iov[1] = (struct iovec){(void *)records, len};
    *what = "write";
    e = fp_hit("dlog.write");
    if (!e && log->opts.prealloc_bytes && log->seg_size + FRAME_HDR + len > log->alloc_end)
        e = extend_segment(log, log->seg_size + FRAME_HDR + len);
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
    log->seg_size += FRAME_HDR + len;
    log->since_ckpt += FRAME_HDR + len;
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
        size_t rlen = REC_HDR + (size_t)get_le32(p + pos + 1);

        if (pos > start && pos + rlen - start > log->max_frame) {
            e = write_frame(log, p + start, pos - start, FRAME_BATCH, what);
            if (e)
                return e;
            start = pos;
        }
        pos += rlen;
    }
    return write_frame(log, p + start, pos - start, FRAME_BATCH, what);
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

        seg_path(path, sizeof(path), log->dir, n);
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

    if (log->seg_size > SEG_HDR) {
        *what = "start a new segment of";
        e = create_segment(log, log->segno + 1);
    }
    if (!e)
        e = write_frame(log, snap->data, snap->len, FRAME_CHECKPOINT, what);
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
    if (log->since_ckpt >= log->opts.segment_bytes && log->opts.on_checkpoint_wanted) {
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
        written = (before.len ? before.len + FRAME_HDR : 0) + (ckpt ? snap.len + FRAME_HDR : 0) +
                  (work.len ? work.len + FRAME_HDR : 0);
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
        pthread_mutex_lock(&log->mu);
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
    if (log->opts.on_durable)
        log->opts.on_durable(log->opts.arg, lsn);
    if (ask && !failed)
        log->opts.on_checkpoint_wanted(log->opts.arg);
    if (failed && !log->failure_reported) {
        log->failure_reported = true;
        log_error("%s", fail.msg);
        if (log->opts.on_failed)
            log->opts.on_failed(log->opts.arg, &fail);
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

        seg_path(path, sizeof(path), log->dir, segno);
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

int dlog_open(struct dlog **out, const struct dlog_opts *opts, dlog_replay_fn replay, void *arg,
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
    rc = read_dir(opts->dir, true, replay, arg, scan, err);
    if (rc < 0)
        goto out_close_dir;
    log = calloc(1, sizeof(*log));
    if (!log)
        abort();
    log->opts = *opts;
    snprintf(log->dir, sizeof(log->dir), "%s", opts->dir);
    log->dirfd = dirfd;
    log->lockfd = lockfd;
    log->max_frame = opts->max_frame && opts->max_frame < MAX_FRAME ? opts->max_frame : MAX_FRAME;
    log->fd = -1;
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
    *out = log;
    return 0;

out_close_dir:
    close(lockfd);
    close(dirfd);
    return rc;
}

uint64_t dlog_append(struct dlog *log, const struct dlog_rec *rec, bool force)
{
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
    dlog_encode(&log->pending, rec);
    lsn = ++log->last_lsn;
    if (force && !log->pending_forced) {
        log->pending_forced = true;
        pthread_cond_signal(&log->work_cv);
    }
    pthread_mutex_unlock(&log->mu);
    return lsn;
}

void dlog_hint_deciding(struct dlog *log, int delta)
{
    atomic_fetch_add(&log->deciding, delta);
}

uint64_t dlog_durable_lsn(struct dlog *log)
{
    uint64_t lsn;

    pthread_mutex_lock(&log->mu);
    lsn = log->durable_lsn;
    pthread_mutex_unlock(&log->mu);
    return lsn;
}

void dlog_stats(struct dlog *log, struct dlog_stats *st)
{
    pthread_mutex_lock(&log->mu);
    st->syncs = log->syncs;
    st->records = log->last_lsn;
    st->checkpoints = log->checkpoints;
    st->bytes = log->bytes;
    st->sync_us = log->sync_us;
    st->last_checkpoint_wall_us = log->last_ckpt_us;
    st->zeros_ahead = log->zeros_ahead;
    pthread_mutex_unlock(&log->mu);
}

bool dlog_failed(struct dlog *log, struct dtx_err *err)
{
    bool failed;

    pthread_mutex_lock(&log->mu);
    failed = log->failed;
    if (failed && err)
        *err = log->fail;
    pthread_mutex_unlock(&log->mu);
    return failed;
}

int dlog_checkpoint(struct dlog *log, struct buf *records)
{
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

int dlog_flush(struct dlog *log, struct dtx_err *err)
{
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

void dlog_close(struct dlog *log)
{
    if (!log)
        return;
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
