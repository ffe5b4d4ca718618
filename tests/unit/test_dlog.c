/*
 * test_dlog.c - the decision log's framing and recovery (dlog.c): records
 * round-trip, a torn tail at every byte offset is the end of the log,
 * damage followed by valid data is corruption naming file and offset.
 */
#include "dtx/crc32c.h"
#include "dtx/dlog.h"
#include "dtx/failpoint.h"
#include "dtx/xalloc.h"
#include "unit.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define NFRAMES 5

struct counted {
    uint64_t records;
    uint64_t commits;
    char last_gtid[64];
    char last_results[256];
    char last_shard1[16];
    uint64_t last_xid1;
    char last_idem[64];
};

static int count_records(void *arg, const struct drec *rec, struct dtx_err *err)
{
    struct counted *c = arg;

    (void)err;
    c->records++;
    if (rec->type == DREC_COMMIT) {
        c->commits++;
        snprintf(c->last_gtid, sizeof(c->last_gtid), "%s", rec->gtid);
        snprintf(c->last_results, sizeof(c->last_results), "%s", rec->results);
        snprintf(c->last_idem, sizeof(c->last_idem), "%s", rec->idem_key);
        if (rec->nbranches > 1) {
            snprintf(c->last_shard1, sizeof(c->last_shard1), "%s", rec->branches[1].shard);
            c->last_xid1 = rec->branches[1].xid;
        }
    }
    return 0;
}

static void temp_dir(char *out, size_t n)
{
    snprintf(out, n, "/tmp/dtx-unit-dlog-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(out));
}

static void seg(char *out, size_t n, const char *dir, int segno)
{
    snprintf(out, n, "%s/dlog-%010d.log", dir, segno);
}

static void remove_dir(const char *dir)
{
    char cmd[512];

    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    CU_ASSERT_EQUAL(system(cmd), 0);
}

static struct dstore *open_log(struct ev_loop *loop, const char *dir, struct dlog_scan *scan,
                               struct dtx_err *err)
{
    struct dlog_opts o = {.dir = dir, .segment_bytes = 1u << 20, .loop = loop};
    struct dstore *log = NULL;
    struct counted c;

    memset(&c, 0, sizeof(c));
    if (dlog_open(&log, &o, count_records, &c, scan, err) < 0)
        return NULL;
    return log;
}

static struct drec commit_rec(int i, char *gtid, size_t n)
{
    static const struct drec_branch br[2] = {{"s1", 1000, "7312:1"}, {"s2", 2000, "7313:2"}};
    struct drec r;

    snprintf(gtid, n, "c1-1-%d", i);
    memset(&r, 0, sizeof(r));
    r.type = DREC_COMMIT;
    r.gtid = gtid;
    r.wall_us = 1700000000000000ull + (uint64_t)i;
    r.protocol = 2;
    r.idem_key = i % 2 ? "key" : NULL;
    r.results = "[{\"shard\":\"s1\",\"rows_affected\":1}]";
    r.nbranches = 2;
    r.branches = br;
    return r;
}

static off_t file_size(const char *path)
{
    struct stat st;

    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Writes NFRAMES commit records, one frame each; bounds[i] = file size after frame i. */
static void write_frames(const char *dir, off_t *bounds)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dtx_err err;
    struct dstore *log;
    char path[512], gtid[32];

    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    dtx_err_clear(&err);
    log = open_log(&loop, dir, &scan, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    seg(path, sizeof(path), dir, 1);
    bounds[0] = file_size(path);
    for (int i = 1; i <= NFRAMES; i++) {
        struct drec r = commit_rec(i, gtid, sizeof(gtid));

        CU_ASSERT(dstore_append(log, &r, true) > 0);
        CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
        bounds[i] = file_size(path);
    }
    dstore_close(log);
    ev_loop_release(&loop);
}

static void copy_prefix(const char *from, const char *to, off_t n)
{
    char buf[65536];
    int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    off_t left = n;

    CU_ASSERT_FATAL(in >= 0 && out >= 0);
    while (left > 0) {
        ssize_t r = read(in, buf, left < (off_t)sizeof(buf) ? (size_t)left : sizeof(buf));

        CU_ASSERT_FATAL(r > 0);
        CU_ASSERT_FATAL(write(out, buf, (size_t)r) == r);
        left -= r;
    }
    close(in);
    close(out);
}

static void poke(const char *path, off_t at, unsigned char xor_mask)
{
    int fd = open(path, O_RDWR);
    unsigned char b;

    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(pread(fd, &b, 1, at) == 1);
    b ^= xor_mask;
    CU_ASSERT_FATAL(pwrite(fd, &b, 1, at) == 1);
    close(fd);
}

/* ---- tests ---------------------------------------------------------------- */

static void records_round_trip_through_the_log(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dstore *log;
    char dir[64], gtid[32];
    struct drec boot = {.type = DREC_BOOT, .epoch = 7, .node_id = "c1"};
    struct drec commit = commit_rec(3, gtid, sizeof(gtid));
    struct drec end = {.type = DREC_END, .gtid = "c1-1-3"};

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_EQUAL(dstore_append(log, &boot, true), 1);
    CU_ASSERT_EQUAL(dstore_append(log, &commit, true), 2);
    CU_ASSERT_EQUAL(dstore_append(log, &end, false), 3);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    CU_ASSERT_EQUAL(dlog_durable_lsn(log), 3);
    dstore_close(log);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, 3);
    CU_ASSERT_EQUAL(c.commits, 1);
    CU_ASSERT_STRING_EQUAL(c.last_gtid, "c1-1-3");
    CU_ASSERT_STRING_EQUAL(c.last_idem, "key");
    CU_ASSERT_STRING_EQUAL(c.last_shard1, "s2");
    CU_ASSERT_EQUAL(c.last_xid1, 2000);
    CU_ASSERT_STRING_EQUAL(c.last_results, "[{\"shard\":\"s1\",\"rows_affected\":1}]");
    CU_ASSERT_FALSE(scan.torn);
    ev_loop_release(&loop);
    remove_dir(dir);
}

/* What an OPERATOR record read back said. */
struct op_seen {
    int n;
    struct drec rec;
    char gtid[32], shard[16], who[32], reason[64];
};

static int keep_operator(void *arg, const struct drec *rec, struct dtx_err *err)
{
    struct op_seen *o = arg;

    (void)err;
    if (rec->type != DREC_OPERATOR)
        return 0;
    o->n++;
    o->rec = *rec;
    snprintf(o->gtid, sizeof(o->gtid), "%s", rec->gtid);
    snprintf(o->shard, sizeof(o->shard), "%s", rec->shard);
    snprintf(o->who, sizeof(o->who), "%s", rec->who);
    snprintf(o->reason, sizeof(o->reason), "%s", rec->reason);
    return 0;
}

static void operator_record_round_trips_with_every_field(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dstore *log;
    struct op_seen o;
    char dir[64];
    struct drec forget = {.type = DREC_OPERATOR,
                          .gtid = "c1-4-77",
                          .wall_us = 1700000000123456ull,
                          .op_kind = DREC_OP_FORGET,
                          .op_commit = true,
                          .shard = "s3",
                          .who = "alice@ops1",
                          .reason = "s3's disks are gone"};
    struct drec resolve = {.type = DREC_OPERATOR,
                           .gtid = "zz-1-2",
                           .op_kind = DREC_OP_RESOLVE,
                           .who = "bob",
                           .reason = "orphan"};

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_EQUAL(dstore_append(log, &forget, true), 1);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_close(log);
    memset(&o, 0, sizeof(o));
    CU_ASSERT_EQUAL(dlog_read(dir, keep_operator, &o, &scan, NULL), 0);
    CU_ASSERT_EQUAL(o.n, 1);
    CU_ASSERT_STRING_EQUAL(o.gtid, "c1-4-77");
    CU_ASSERT_EQUAL(o.rec.wall_us, 1700000000123456ull);
    CU_ASSERT_EQUAL(o.rec.op_kind, DREC_OP_FORGET);
    CU_ASSERT_TRUE(o.rec.op_commit);
    CU_ASSERT_STRING_EQUAL(o.shard, "s3");
    CU_ASSERT_STRING_EQUAL(o.who, "alice@ops1");
    CU_ASSERT_STRING_EQUAL(o.reason, "s3's disks are gone");

    log = open_log(&loop, dir, &scan, NULL); /* a second run: abort for every shard */
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_EQUAL(dstore_append(log, &resolve, true), 1);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_close(log);
    memset(&o, 0, sizeof(o));
    CU_ASSERT_EQUAL(dlog_read(dir, keep_operator, &o, &scan, NULL), 0);
    CU_ASSERT_EQUAL(o.n, 2);
    CU_ASSERT_EQUAL(o.rec.op_kind, DREC_OP_RESOLVE);
    CU_ASSERT_FALSE(o.rec.op_commit);
    CU_ASSERT_STRING_EQUAL(o.shard, "");
    CU_ASSERT_STRING_EQUAL(o.reason, "orphan");
    CU_ASSERT_STRING_EQUAL(drec_type_name(DREC_OPERATOR), "OPERATOR");
    ev_loop_release(&loop);
    remove_dir(dir);
}

/* Decodes the one record in b (header and body). */
static int decode_one(const struct buf *b, struct drec_arena *a, struct drec *out)
{
    const unsigned char *p = (const unsigned char *)b->data;

    CU_ASSERT_FATAL(b->len >= DREC_HDR);
    return drec_decode_body(p[0], p + DREC_HDR, b->len - DREC_HDR, a, out);
}

static void a_commit_record_keeps_each_branchs_database_and_reads_older_ones_without(void)
{
    char gtid[32];
    struct drec r = commit_rec(2, gtid, sizeof(gtid)), out;
    struct drec_arena a = {BUF_INIT, NULL, 0};
    struct buf b = BUF_INIT;
    uint32_t len;

    drec_encode(&b, &r);
    CU_ASSERT_EQUAL_FATAL(decode_one(&b, &a, &out), 0);
    CU_ASSERT_EQUAL_FATAL(out.nbranches, 2);
    CU_ASSERT_STRING_EQUAL(out.branches[0].db, "7312:1");
    CU_ASSERT_STRING_EQUAL(out.branches[1].db, "7313:2");
    CU_ASSERT_EQUAL(out.branches[1].xid, 2000);
    /* a record written before 0.7: the same without the identities (two str16 at the end) */
    b.len -= 2 * (2 + 6);
    len = (uint32_t)(b.len - DREC_HDR);
    memcpy(b.data + 1, (unsigned char[4]){len, len >> 8, len >> 16, len >> 24}, 4);
    CU_ASSERT_EQUAL_FATAL(decode_one(&b, &a, &out), 0);
    CU_ASSERT_EQUAL(out.nbranches, 2);
    CU_ASSERT_PTR_NULL(out.branches[0].db);
    CU_ASSERT_PTR_NULL(out.branches[1].db);
    CU_ASSERT_STRING_EQUAL(out.results, r.results);
    /* one identity too few is a malformed record, not a shorter one */
    b.len += 2 + 6;
    len = (uint32_t)(b.len - DREC_HDR);
    memcpy(b.data + 1, (unsigned char[4]){len, len >> 8, len >> 16, len >> 24}, 4);
    CU_ASSERT_EQUAL(decode_one(&b, &a, &out), -1);
    buf_release(&b);
    drec_arena_release(&a);
}

static void a_heuristic_record_round_trips_and_an_unknown_kind_is_refused(void)
{
    struct drec r = {.type = DREC_HEURISTIC,
                     .gtid = "c1-3-9",
                     .wall_us = 1700000000000001ull,
                     .shard = "s2",
                     .heur_kind = DREC_HEUR_HAZARD,
                     .op_commit = true,
                     .reason = "gone from a database that changed"},
                out;
    struct drec_arena a = {BUF_INIT, NULL, 0};
    struct buf b = BUF_INIT;

    drec_encode(&b, &r);
    CU_ASSERT_EQUAL_FATAL(decode_one(&b, &a, &out), 0);
    CU_ASSERT_EQUAL(out.type, DREC_HEURISTIC);
    CU_ASSERT_STRING_EQUAL(out.gtid, "c1-3-9");
    CU_ASSERT_EQUAL(out.wall_us, 1700000000000001ull);
    CU_ASSERT_STRING_EQUAL(out.shard, "s2");
    CU_ASSERT_EQUAL(out.heur_kind, DREC_HEUR_HAZARD);
    CU_ASSERT_TRUE(out.op_commit);
    CU_ASSERT_STRING_EQUAL(out.reason, "gone from a database that changed");
    CU_ASSERT_STRING_EQUAL(drec_type_name(DREC_HEURISTIC), "HEURISTIC");
    buf_reset(&b);
    r.heur_kind = 7;
    drec_encode(&b, &r);
    CU_ASSERT_EQUAL(decode_one(&b, &a, &out), -1);
    buf_release(&b);
    drec_arena_release(&a);
}

#define SEG_HDR_BYTES   32
#define FRAME_HDR_BYTES 9

/* Where frame k (1-based) of a segment starts, walking the frames' length fields. */
static off_t frame_start(const char *path, int k)
{
    int fd = open(path, O_RDONLY);
    off_t off = SEG_HDR_BYTES;
    unsigned char h[FRAME_HDR_BYTES];

    CU_ASSERT_FATAL(fd >= 0);
    for (int i = 1; i < k; i++) {
        CU_ASSERT_FATAL(pread(fd, h, sizeof(h), off) == (ssize_t)sizeof(h));
        off += FRAME_HDR_BYTES + (off_t)(h[4] | h[5] << 8 | h[6] << 16 | (uint32_t)h[7] << 24);
    }
    close(fd);
    return off;
}

/* Zeroes path from offset at to its end (a write torn there, preallocated zeros after). */
static void zero_from(const char *path, off_t at)
{
    static const char z[4096];
    off_t end = file_size(path);
    int fd = open(path, O_RDWR);

    CU_ASSERT_FATAL(fd >= 0);
    for (off_t p = at; p < end; p += (off_t)sizeof(z)) {
        size_t n = end - p < (off_t)sizeof(z) ? (size_t)(end - p) : sizeof(z);

        CU_ASSERT_FATAL(pwrite(fd, z, n, p) == (ssize_t)n);
    }
    close(fd);
}

/*
 * Preallocation: frames go into zeros written ahead. The zeros are the end
 * of the log after a crash (a frame torn anywhere in them too), are trimmed
 * on a clean close, and never stay in a segment that was left behind.
 */
static void preallocated_zeros_are_the_end_of_the_log_and_are_trimmed(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dlog_opts o;
    struct counted c;
    struct dstore *log = NULL;
    char dir[64], copy[64], path[512], cpath[512], path_crashed[600], gtid[32];
    off_t used, start3, crashed_size;

    temp_dir(dir, sizeof(dir));
    temp_dir(copy, sizeof(copy));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    memset(&o, 0, sizeof(o));
    o.dir = dir;
    o.segment_bytes = 1u << 20;
    o.prealloc_bytes = 8192;
    o.loop = &loop;
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL_FATAL(dlog_open(&log, &o, count_records, &c, &scan, NULL), 0);
    seg(path, sizeof(path), dir, 1);
    for (int i = 1; i <= 3; i++) {
        struct drec r = commit_rec(i, gtid, sizeof(gtid));

        CU_ASSERT(dstore_append(log, &r, true) > 0);
        CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
        CU_ASSERT(file_size(path) > 8192); /* zeros ahead of every frame */
    }
    /* a crash now: the copy holds three frames and then zeros */
    seg(cpath, sizeof(cpath), copy, 1);
    crashed_size = file_size(path);
    copy_prefix(path, cpath, crashed_size);
    snprintf(path_crashed, sizeof(path_crashed), "%s/crashed", copy);
    copy_prefix(path, path_crashed, crashed_size);
    dstore_close(log);
    CU_ASSERT(file_size(path) < 8192); /* trimmed on a clean close */
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.commits, 3);
    CU_ASSERT_FALSE(scan.torn);
    used = file_size(path);

    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(copy, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.commits, 3);
    CU_ASSERT_TRUE(scan.torn && scan.torn_zero);
    CU_ASSERT_EQUAL(scan.torn_offset, (uint64_t)used);
    /*
     * The last frame torn at every byte, zeros after it (the rest of the
     * preallocation): the two frames before it remain, and the log ends at
     * the second one.
     */
    start3 = frame_start(cpath, 3);
    CU_ASSERT_FATAL(start3 > SEG_HDR_BYTES && start3 < used);
    for (off_t cut = start3; cut < used; cut++) {
        /*
         * A write that never fully landed leaves its tail as the zeros that
         * were there: from a sector boundary, or (the byte-exact cuts here)
         * more than the 16 bytes a complete frame may end with naturally.
         * Fewer zeros than that at an unaligned offset is what a flipped
         * byte leaves too: corruption (see dlog_reader.c).
         */
        bool torn = cut % 512 == 0 || used - cut > 16;

        copy_prefix(path_crashed, cpath, crashed_size);
        zero_from(cpath, cut);
        memset(&c, 0, sizeof(c));
        memset(&c, 0, sizeof(c));
        CU_ASSERT_EQUAL(dlog_read(copy, count_records, &c, &scan, NULL), torn ? 0 : DTX_ECORRUPT);
        if (!torn)
            continue;
        CU_ASSERT_EQUAL(c.commits, 2);
        CU_ASSERT_TRUE(scan.torn);
        CU_ASSERT_EQUAL(scan.torn_offset, (uint64_t)start3);
    }
    /* reopening cuts the zeros (and the torn frame) off, so the segment is clean when left */
    copy_prefix(path_crashed, cpath, crashed_size);
    zero_from(cpath, start3 + 20);
    memset(&c, 0, sizeof(c));
    o.dir = copy;
    CU_ASSERT_EQUAL_FATAL(dlog_open(&log, &o, count_records, &c, &scan, NULL), 0);
    dstore_close(log);
    CU_ASSERT_EQUAL(file_size(cpath), start3);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(copy, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.commits, 2);
    CU_ASSERT_FALSE(scan.torn);
    ev_loop_release(&loop);
    remove_dir(dir);
    remove_dir(copy);
}

static void torn_tail_at_every_byte_offset_is_end_of_log(void)
{
    off_t bounds[NFRAMES + 1];
    char dir[64], dir2[64], src[512], dst[512];

    temp_dir(dir, sizeof(dir));
    temp_dir(dir2, sizeof(dir2));
    write_frames(dir, bounds);
    seg(src, sizeof(src), dir, 1);
    seg(dst, sizeof(dst), dir2, 1);
    for (off_t k = 0; k < bounds[NFRAMES]; k++) {
        struct dlog_scan scan;
        struct dtx_err err;
        struct counted c;
        uint64_t whole = 0;
        bool at_bound = false;

        for (int i = 1; i <= NFRAMES; i++)
            whole += bounds[i] <= k;
        for (int i = 0; i <= NFRAMES; i++)
            at_bound = at_bound || bounds[i] == k;
        copy_prefix(src, dst, k);
        memset(&c, 0, sizeof(c));
        dtx_err_clear(&err);
        CU_ASSERT_EQUAL(dlog_read(dir2, count_records, &c, &scan, &err), 0);
        CU_ASSERT_EQUAL(c.records, whole);
        CU_ASSERT_EQUAL(scan.torn, !at_bound);
    }
    remove_dir(dir);
    remove_dir(dir2);
}

static void open_cuts_a_torn_tail_and_starts_a_new_segment(void)
{
    off_t bounds[NFRAMES + 1];
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dstore *log;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    CU_ASSERT_EQUAL_FATAL(truncate(path, bounds[3] + 7), 0);
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_TRUE(scan.torn);
    CU_ASSERT_EQUAL(scan.torn_offset, (uint64_t)bounds[3]);
    CU_ASSERT_EQUAL(scan.records, 3);
    dstore_close(log);
    CU_ASSERT_EQUAL(file_size(path), bounds[3]);
    seg(path, sizeof(path), dir, 2);
    CU_ASSERT(file_size(path) > 0);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_FALSE(scan.torn);
    CU_ASSERT_EQUAL(c.records, 3);
    CU_ASSERT_EQUAL(scan.segments, 2);
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void flipped_bit_in_a_middle_frame_is_corruption_naming_file_and_offset(void)
{
    off_t bounds[NFRAMES + 1];
    char dir[64], path[512], want[600];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    snprintf(want, sizeof(want), "'%s' is corrupt", path);
    for (off_t at = bounds[1]; at < bounds[2]; at++) {
        struct dlog_scan scan;
        struct dtx_err err;
        char offset[64];

        poke(path, at, (unsigned char)(1u << (at % 8)));
        dtx_err_clear(&err);
        CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
        snprintf(offset, sizeof(offset), "offset %lld", (long long)bounds[1]);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, offset));
        poke(path, at, (unsigned char)(1u << (at % 8)));
    }
    remove_dir(dir);
}

/*
 * The last frame was fdatasynced (the writer reported it durable): a
 * flipped bit in it, wherever it is (payload, checksum, type, length), is
 * corruption, never a torn write to cut off. A torn write leaves zeros or
 * a short file; a complete frame that fails its checksum was damaged after
 * it landed.
 */
static void a_flipped_bit_in_the_last_frame_is_corruption_not_a_torn_write(void)
{
    static const off_t from_end[] = {3, 40};
    static const off_t from_start[] = {0, 4, 5, 8, 9};
    off_t bounds[NFRAMES + 1];
    struct dlog_scan scan;
    struct dtx_err err;
    char dir[64], path[512], want[600];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    /* zeros after the last frame, as a coordinator that crashed leaves them (preallocated) */
    CU_ASSERT_EQUAL_FATAL(truncate(path, bounds[NFRAMES] + 8192), 0);
    snprintf(want, sizeof(want), "'%s' is corrupt", path);
    for (size_t i = 0; i < sizeof(from_end) / sizeof(from_end[0]) + 5; i++) {
        off_t at = i < 2 ? bounds[NFRAMES] - from_end[i] : bounds[NFRAMES - 1] + from_start[i - 2];

        poke(path, at, 0x10);
        dtx_err_clear(&err);
        CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
        CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
        poke(path, at, 0x10);
    }
    remove_dir(dir);
}

/* A damaged frame with anything but zeros after it was followed by a later write: corruption. */
static void a_damaged_frame_with_a_later_write_after_it_is_corruption(void)
{
    off_t bounds[NFRAMES + 1];
    struct dlog_scan scan;
    struct dtx_err err;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    poke(path, bounds[NFRAMES - 2] + 20, 0x01); /* frame 4 */
    poke(path, bounds[NFRAMES - 1] + 1, 0x01);  /* frame 5 no longer a valid frame either */
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    remove_dir(dir);
}

/*
 * After a damaged frame the reader looks for any valid frame further on (a later write), at
 * every byte. Garbage in which every fourth byte starts a plausible 4 MiB frame once made
 * that one checksum of 4 MiB per candidate: 12 TB for these 16 MiB, hours. It must take
 * time in proportion to the segment, and still find the damage.
 */
static void damage_followed_by_megabytes_of_plausible_frames_is_judged_quickly(void)
{
    static const unsigned char unit[4] = {1 /* a batch frame */, 0x00, 0x40, 0x00};
    const size_t garbage = 16u << 20;
    off_t bounds[NFRAMES + 1];
    struct dlog_scan scan;
    struct dtx_err err;
    struct timespec t0, t1;
    char dir[64], path[512];
    unsigned char *g = xmalloc(garbage);
    int fd;

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    poke(path, bounds[NFRAMES - 1] + 12, 0x01); /* the last frame's payload */
    for (size_t i = 0; i < garbage; i++)
        g[i] = unit[i % 4];
    fd = open(path, O_WRONLY | O_APPEND);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, g, garbage) == (ssize_t)garbage);
    close(fd);
    free(g);
    alarm(120); /* the old search never ends: fail, do not hang the suite */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    alarm(0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is corrupt"));
    CU_ASSERT(t1.tv_sec - t0.tv_sec < 30);
    remove_dir(dir);
}

/* The range arithmetic that search rests on agrees with crc32c itself, for any start value. */
static void a_ranges_checksum_from_prefix_registers_is_its_crc32c(void)
{
    enum { N = 5000 };
    static unsigned char d[N];
    static uint32_t reg[N + 1];
    uint32_t x = 12345;

    for (size_t i = 0; i < N; i++) {
        x = x * 1103515245u + 12345u;
        d[i] = (unsigned char)(x >> 16);
    }
    crc32c_prefixes(d, N, reg);
    CU_ASSERT_EQUAL(~reg[9], crc32c(0xFFFFFFFFu, d, 9)); /* from 0, without the inversions */
    for (int k = 0; k < 2000; k++) {
        size_t a, b;
        uint32_t c;

        x = x * 1103515245u + 12345u;
        a = (x >> 8) % N;
        x = x * 1103515245u + 12345u;
        b = a + (x >> 8) % (N - a + 1);
        c = k % 3 == 0 ? 0 : x;
        CU_ASSERT_EQUAL(~(crc32c_apply(crc32c_zeros(b - a), ~c ^ reg[a]) ^ reg[b]),
                        crc32c(c, d + a, b - a));
    }
}

static void zero_filled_tail_is_end_of_log(void)
{
    off_t bounds[NFRAMES + 1];
    struct dlog_scan scan;
    struct counted c;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    CU_ASSERT_EQUAL_FATAL(truncate(path, bounds[NFRAMES] + 8192), 0);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, NFRAMES);
    CU_ASSERT_TRUE(scan.torn);
    remove_dir(dir);
}

static void wrong_magic_is_corruption(void)
{
    off_t bounds[NFRAMES + 1];
    struct dlog_scan scan;
    struct dtx_err err;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    seg(path, sizeof(path), dir, 1);
    poke(path, 0, 0x20);
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bad magic"));
    remove_dir(dir);
}

static void write_zero_segment(const char *dir, int segno)
{
    char path[512], zeros[32] = {0};
    int fd;

    seg(path, sizeof(path), dir, segno);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, zeros, sizeof(zeros)) == (ssize_t)sizeof(zeros));
    close(fd);
}

/* Power lost before a new segment's header was durable: the file shows zeros. */
static void zero_filled_header_of_the_last_segment_is_a_torn_creation(void)
{
    off_t bounds[NFRAMES + 1];
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dtx_err err;
    struct dstore *log;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    write_zero_segment(dir, 2);
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    dtx_err_clear(&err);
    log = open_log(&loop, dir, &scan, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT(scan.torn);
    CU_ASSERT_EQUAL(scan.records, NFRAMES);
    dstore_close(log);
    seg(path, sizeof(path), dir, 2);
    CU_ASSERT_EQUAL(file_size(path), -1); /* dropped; the log went on in segment 3 */
    /* Not the last segment, a zero-filled header is damage like any other. */
    write_zero_segment(dir, 2);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bad magic"));
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void batch_over_the_frame_limit_is_split_into_frames(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dlog_opts o;
    struct dstore_stats st;
    struct dstore *log;
    struct dtx_err err;
    char dir[64], gtid[32];
    struct drec big;
    char results[800];

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    o = (struct dlog_opts){.dir = dir, .segment_bytes = 1u << 20, .max_frame = 300, .loop = &loop};
    CU_ASSERT_EQUAL_FATAL(dlog_open(&log, &o, NULL, NULL, &scan, NULL), 0);
    for (int i = 1; i <= 10; i++) {
        struct drec r = commit_rec(i, gtid, sizeof(gtid)); /* 111..115 bytes each */

        CU_ASSERT(dstore_append(log, &r, i == 10) > 0);
    }
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_stats(log, &st);
    CU_ASSERT_EQUAL(st.syncs, 5); /* two records to a frame of <= 300 bytes */
    /* the metrics: each frame's write and fdatasync timed, one group of ten records */
    CU_ASSERT_EQUAL(st.write_seconds.count, 5);
    CU_ASSERT_EQUAL(st.sync_seconds.count, 5);
    CU_ASSERT(st.sync_seconds.sum > 0 && st.sync_seconds.sum < 60);
    CU_ASSERT_EQUAL(st.batch_records.count, 1);
    CU_ASSERT_EQUAL(st.batch_records.sum, 10);
    CU_ASSERT_EQUAL(st.batch_records.bucket[4], 1); /* le 16 (1, 2, 4, 8, 16) */
    /* A single record over the limit cannot be split: the log fails, clearly. */
    memset(results, 'x', sizeof(results) - 1);
    results[sizeof(results) - 1] = '\0';
    big = commit_rec(11, gtid, sizeof(gtid));
    big.results = results;
    CU_ASSERT(dstore_append(log, &big, true) > 0);
    dtx_err_clear(&err);
    CU_ASSERT_NOT_EQUAL(dstore_flush(log, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "over the frame limit"));
    dstore_close(log);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.commits, 10);
    CU_ASSERT_STRING_EQUAL(c.last_gtid, "c1-1-10");
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void damage_at_the_end_of_an_older_segment_is_corruption(void)
{
    off_t bounds[NFRAMES + 1];
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dtx_err err;
    struct dstore *log;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds);
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL); /* starts segment 2 */
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    dstore_close(log);
    seg(path, sizeof(path), dir, 1);
    CU_ASSERT_EQUAL_FATAL(truncate(path, bounds[NFRAMES] - 2), 0);
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "dlog-0000000001.log"));
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void unforced_record_waits_for_a_forced_one(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dstore *log;
    char dir[64], gtid[32];
    struct drec end = {.type = DREC_END, .gtid = "c1-1-1"};
    struct drec commit = commit_rec(2, gtid, sizeof(gtid));
    struct dstore_stats st;

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    CU_ASSERT_EQUAL(dstore_append(log, &end, false), 1);
    CU_ASSERT_EQUAL(dlog_durable_lsn(log), 0); /* not written on its own at once */
    CU_ASSERT_EQUAL(dstore_append(log, &commit, true), 2);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_stats(log, &st);
    CU_ASSERT_EQUAL(st.records, 2);
    CU_ASSERT_EQUAL(st.syncs, 1); /* one fdatasync covered both */
    CU_ASSERT_EQUAL(st.sync_seconds.count, 1);
    CU_ASSERT_EQUAL(st.batch_records.count, 1);
    CU_ASSERT_EQUAL(st.batch_records.sum, 2);
    dstore_close(log);
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void unforced_record_is_written_on_its_own_after_the_lazy_delay(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dstore *log;
    char dir[64];
    struct drec end = {.type = DREC_END, .gtid = "c1-1-1"};
    uint64_t start;
    int waited_ms = 0;

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    usleep(50000); /* the writer is idle: nothing wakes it, it looks every DLOG_LAZY_MS */
    start = ev_clock_us();
    CU_ASSERT_EQUAL(dstore_append(log, &end, false), 1);
    while (dlog_durable_lsn(log) < 1 && waited_ms < 2000) {
        usleep(5000);
        waited_ms += 5;
    }
    CU_ASSERT_EQUAL(dlog_durable_lsn(log), 1);
    CU_ASSERT(ev_clock_us() - start >= DLOG_LAZY_MS * 1000u * 9 / 10);
    CU_ASSERT(ev_clock_us() - start < DLOG_LAZY_MS * 1000u * 5);
    dstore_close(log);
    ev_loop_release(&loop);
    remove_dir(dir);
}

static int count_segments(const char *dir)
{
    char pattern[600];
    int n = 0;

    for (int i = 1; i < 20; i++) {
        seg(pattern, sizeof(pattern), dir, i);
        n += file_size(pattern) >= 0;
    }
    return n;
}

/* A snapshot of one BOOT and one COMMIT, as the coordinator would hand over. */
static void snapshot(struct buf *b)
{
    struct drec boot = {.type = DREC_BOOT, .epoch = 9, .node_id = "c1"};
    char gtid[32];
    struct drec commit = commit_rec(99, gtid, sizeof(gtid));

    drec_encode(b, &boot);
    drec_encode(b, &commit);
}

static void checkpoint_opens_a_new_segment_and_removes_older_ones(void)
{
    off_t bounds[NFRAMES + 1];
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dstore *log;
    struct buf snap = BUF_INIT;
    char dir[64], gtid[32];
    struct drec after = commit_rec(100, gtid, sizeof(gtid));

    temp_dir(dir, sizeof(dir));
    write_frames(dir, bounds); /* segment 1 */
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL); /* segment 2, empty */
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    snapshot(&snap);
    CU_ASSERT_EQUAL(dstore_checkpoint(log, &snap), 0);
    CU_ASSERT(dstore_append(log, &after, true) > 0);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_close(log);
    CU_ASSERT_EQUAL(count_segments(dir), 1);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, 3); /* BOOT + COMMIT of the snapshot, then the later COMMIT */
    CU_ASSERT_STRING_EQUAL(c.last_gtid, "c1-1-100");
    CU_ASSERT_EQUAL(scan.checkpoint_segno, 2);
    ev_loop_release(&loop);
    remove_dir(dir);
}

/* Saves segment n's bytes (to put it back later, as a crash before its deletion would). */
static unsigned char *save_segment(const char *dir, int n, size_t *size)
{
    char path[512];
    unsigned char *data;
    FILE *f;

    seg(path, sizeof(path), dir, n);
    *size = (size_t)file_size(path);
    data = malloc(*size);
    f = fopen(path, "rb");
    CU_ASSERT_FATAL(data && f && fread(data, 1, *size, f) == *size);
    fclose(f);
    return data;
}

static void restore_segment(const char *dir, int n, const unsigned char *data, size_t size)
{
    char path[512];
    FILE *f;

    seg(path, sizeof(path), dir, n);
    f = fopen(path, "wb");
    CU_ASSERT_FATAL(f && fwrite(data, 1, size, f) == size);
    fclose(f);
}

static void checkpoint_then_crash(const char *dir, unsigned char **seg1, size_t *size1)
{
    off_t bounds[NFRAMES + 1];
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dstore *log;
    struct buf snap = BUF_INIT;

    write_frames(dir, bounds);
    *seg1 = save_segment(dir, 1, size1);
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    snapshot(&snap);
    CU_ASSERT_EQUAL(dstore_checkpoint(log, &snap), 0);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_close(log);
    ev_loop_release(&loop);
}

static void segments_older_than_the_checkpoint_are_ignored_and_removed(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dstore *log;
    unsigned char *seg1;
    size_t size1;
    char dir[64];

    temp_dir(dir, sizeof(dir));
    checkpoint_then_crash(dir, &seg1, &size1);
    restore_segment(dir, 1, seg1, size1); /* the crash came before segment 1 was deleted */
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, 2);
    CU_ASSERT_EQUAL(scan.obsolete, 1);
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    dstore_close(log);
    CU_ASSERT_EQUAL(count_segments(dir), 2); /* 1 removed; 2 (checkpoint) and the new 3 */
    free(seg1);
    ev_loop_release(&loop);
    remove_dir(dir);
}

/*
 * The older segments are deleted only after the checkpoint that replaces
 * them is durable: a damaged checkpoint with no older segment left was
 * durable, so it is corruption (never cut off: the epoch it carries would
 * go backwards and gtids would be issued again).
 */
static void a_damaged_checkpoint_whose_older_segments_are_gone_is_corruption(void)
{
    struct dlog_scan scan;
    struct dtx_err err;
    struct ev_loop loop;
    struct dstore *log;
    unsigned char *seg1;
    size_t size1;
    char dir[64], path[512], want[600];

    temp_dir(dir, sizeof(dir));
    checkpoint_then_crash(dir, &seg1, &size1);
    free(seg1);
    CU_ASSERT_EQUAL(count_segments(dir), 1);
    seg(path, sizeof(path), dir, 2);
    poke(path, file_size(path) - 30, 0x04); /* inside the checkpoint frame */
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(dlog_read(dir, NULL, NULL, &scan, &err), DTX_ECORRUPT);
    snprintf(want, sizeof(want), "'%s' is corrupt", path);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "offset 32"));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    dtx_err_clear(&err);
    log = open_log(&loop, dir, &scan, &err);
    CU_ASSERT_PTR_NULL(log); /* the coordinator refuses to start */
    CU_ASSERT_EQUAL(err.code, DTX_ECORRUPT);
    dstore_close(log);
    CU_ASSERT_EQUAL(count_segments(dir), 1); /* and changed nothing */
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void torn_checkpoint_falls_back_to_the_older_segments(void)
{
    struct dlog_scan scan;
    struct counted c;
    unsigned char *seg1;
    size_t size1;
    char dir[64], path[512];

    temp_dir(dir, sizeof(dir));
    checkpoint_then_crash(dir, &seg1, &size1);
    restore_segment(dir, 1, seg1, size1);
    seg(path, sizeof(path), dir, 2);
    CU_ASSERT_EQUAL_FATAL(truncate(path, file_size(path) - 4), 0); /* torn while written */
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, NFRAMES); /* segment 1's records: nothing was lost */
    CU_ASSERT_TRUE(scan.torn);
    CU_ASSERT_EQUAL(scan.checkpoint_segno, 0);
    free(seg1);
    remove_dir(dir);
}

struct wanted {
    struct dstore *log;
    int asked;
};

static void on_wanted(void *arg)
{
    struct wanted *w = arg;
    struct buf snap = BUF_INIT;

    w->asked++;
    snapshot(&snap);
    CU_ASSERT_EQUAL(dstore_checkpoint(w->log, &snap), 0);
}

/*
 * A snapshot handed over while the writer is still writing the previous
 * one is written too, after the records that preceded it.
 */
static void snapshot_handed_over_during_a_checkpoint_write_is_written_too(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct counted c;
    struct dstore *log;
    struct buf snap = BUF_INIT;
    struct dstore_stats st;
    char dir[64], g1[32], g2[32];
    struct drec before = commit_rec(50, g1, sizeof(g1));
    struct drec after = commit_rec(51, g2, sizeof(g2));

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    setenv("DTX_FAILPOINTS", "dlog.fdatasync=sleep(200)", 1);
    CU_ASSERT_EQUAL_FATAL(fp_init(), 0);
    log = open_log(&loop, dir, &scan, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    snapshot(&snap);
    CU_ASSERT_EQUAL(dstore_checkpoint(log, &snap), 0);
    usleep(50000); /* the writer is in the first checkpoint's fdatasync */
    CU_ASSERT(dstore_append(log, &before, false) > 0);
    snapshot(&snap);
    CU_ASSERT_EQUAL(dstore_checkpoint(log, &snap), 0);
    CU_ASSERT(dstore_append(log, &after, true) > 0);
    CU_ASSERT_EQUAL(dstore_flush(log, NULL), 0);
    dstore_stats(log, &st);
    CU_ASSERT_EQUAL(st.checkpoints, 2);
    dstore_close(log);
    unsetenv("DTX_FAILPOINTS");
    CU_ASSERT_EQUAL(fp_init(), 0);
    CU_ASSERT_EQUAL(count_segments(dir), 1);
    memset(&c, 0, sizeof(c));
    CU_ASSERT_EQUAL(dlog_read(dir, count_records, &c, &scan, NULL), 0);
    CU_ASSERT_EQUAL(c.records, 3); /* the second snapshot's BOOT + COMMIT, then the later one */
    CU_ASSERT_STRING_EQUAL(c.last_gtid, "c1-1-51");
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void writer_asks_for_a_checkpoint_once_a_segment_was_written(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct wanted w = {NULL, 0};
    struct dlog_opts o;
    char dir[64], gtid[32];
    struct dstore_stats st;

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    o = (struct dlog_opts){.dir = dir,
                           .segment_bytes = 4096,
                           .loop = &loop,
                           .cbs = {.on_checkpoint_wanted = on_wanted, .arg = &w}};
    CU_ASSERT_EQUAL_FATAL(dlog_open(&w.log, &o, NULL, NULL, &scan, NULL), 0);
    for (int i = 0; i < 200 && !w.asked; i++) {
        struct drec r = commit_rec(i, gtid, sizeof(gtid));

        dstore_append(w.log, &r, true);
        dstore_flush(w.log, NULL);
        ev_loop_once(&loop, 10);
    }
    CU_ASSERT_EQUAL(w.asked, 1);
    CU_ASSERT_EQUAL(dstore_flush(w.log, NULL), 0);
    dstore_stats(w.log, &st);
    CU_ASSERT_EQUAL(st.checkpoints, 1);
    dstore_close(w.log);
    CU_ASSERT_EQUAL(count_segments(dir), 1);
    ev_loop_release(&loop);
    remove_dir(dir);
}

static void second_open_of_a_log_in_use_is_refused_and_changes_nothing(void)
{
    struct ev_loop loop;
    struct dlog_scan scan;
    struct dtx_err err;
    struct dstore *log, *other;
    char dir[64], path[512], want[160];

    temp_dir(dir, sizeof(dir));
    CU_ASSERT_EQUAL_FATAL(ev_loop_init(&loop), 0);
    dtx_err_clear(&err);
    log = open_log(&loop, dir, &scan, &err);
    CU_ASSERT_PTR_NOT_NULL_FATAL(log);
    other = open_log(&loop, dir, &scan, &err);
    CU_ASSERT_PTR_NULL(other);
    snprintf(want, sizeof(want), "is in use by another coordinator (pid %ld)", (long)getpid());
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
    seg(path, sizeof(path), dir, 1);
    CU_ASSERT(file_size(path) > 0); /* the first one's segment is still there */
    seg(path, sizeof(path), dir, 2);
    CU_ASSERT_EQUAL(file_size(path), -1); /* and the refused one started none */
    dstore_close(log);
    dtx_err_clear(&err);
    log = open_log(&loop, dir, &scan, &err); /* closing released the lock */
    CU_ASSERT_PTR_NOT_NULL(log);
    dstore_close(log);
    ev_loop_release(&loop);
    remove_dir(dir);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(records_round_trip_through_the_log),
        UNIT_TEST(operator_record_round_trips_with_every_field),
        UNIT_TEST(a_commit_record_keeps_each_branchs_database_and_reads_older_ones_without),
        UNIT_TEST(a_heuristic_record_round_trips_and_an_unknown_kind_is_refused),
        UNIT_TEST(preallocated_zeros_are_the_end_of_the_log_and_are_trimmed),
        UNIT_TEST(torn_tail_at_every_byte_offset_is_end_of_log),
        UNIT_TEST(open_cuts_a_torn_tail_and_starts_a_new_segment),
        UNIT_TEST(flipped_bit_in_a_middle_frame_is_corruption_naming_file_and_offset),
        UNIT_TEST(a_flipped_bit_in_the_last_frame_is_corruption_not_a_torn_write),
        UNIT_TEST(a_damaged_frame_with_a_later_write_after_it_is_corruption),
        UNIT_TEST(damage_followed_by_megabytes_of_plausible_frames_is_judged_quickly),
        UNIT_TEST(a_ranges_checksum_from_prefix_registers_is_its_crc32c),
        UNIT_TEST(zero_filled_tail_is_end_of_log),
        UNIT_TEST(wrong_magic_is_corruption),
        UNIT_TEST(damage_at_the_end_of_an_older_segment_is_corruption),
        UNIT_TEST(zero_filled_header_of_the_last_segment_is_a_torn_creation),
        UNIT_TEST(batch_over_the_frame_limit_is_split_into_frames),
        UNIT_TEST(unforced_record_waits_for_a_forced_one),
        UNIT_TEST(unforced_record_is_written_on_its_own_after_the_lazy_delay),
        UNIT_TEST(checkpoint_opens_a_new_segment_and_removes_older_ones),
        UNIT_TEST(segments_older_than_the_checkpoint_are_ignored_and_removed),
        UNIT_TEST(torn_checkpoint_falls_back_to_the_older_segments),
        UNIT_TEST(a_damaged_checkpoint_whose_older_segments_are_gone_is_corruption),
        UNIT_TEST(snapshot_handed_over_during_a_checkpoint_write_is_written_too),
        UNIT_TEST(writer_asks_for_a_checkpoint_once_a_segment_was_written),
        UNIT_TEST(second_open_of_a_log_in_use_is_refused_and_changes_nothing),
    };

    return unit_run("dlog", tests, sizeof(tests) / sizeof(tests[0]));
}
