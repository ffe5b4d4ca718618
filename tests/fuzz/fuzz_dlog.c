/*
 * fuzz_dlog.c - the decision-log reader (dlog_reader.c, dlog_format.c) and
 * the record decoder (drec.c) on any bytes, written as the segment files of
 * a log directory and read as the coordinator reads it at start
 * (dlog_read_dir, with or without repairing the tail) and as dtxctl reads it
 * (without).
 *
 * Input: one control byte, then the segment files' bytes one after the
 * other; a new file begins at every "DTXDLOG\0" (a segment's magic) after
 * the first byte, so a real log's files concatenated are an input. Control:
 *   bit 0      fix up checksums and segment numbers first (the header's
 *              segno and CRC, and the CRC of each frame whose length fits),
 *              so that mutations get past the CRCs to the records
 *   bit 1      repair (as dlog_open: cut a torn tail, remove obsolete files)
 *   bits 2-3   the first file's segment number minus one (later files count up)
 *   bit 4      the replay callback fails at the third record
 *
 * Checks: the reader returns 0, DTX_ECORRUPT or the callback's error, with
 * a message when it fails; every string and branch of every record it hands
 * over is readable; what it says it found fits in the files; and after a
 * successful repair the log reads again cleanly (no torn tail left) with
 * the same records.
 */
#include "dlog_impl.h"
#include "dtx/crc32c.h"

#include "fuzz.h"

#include <fcntl.h>
#include <inttypes.h>

#define MAX_SEGMENTS 8
#define MAGIC_LEN    8

struct replay {
    uint64_t records;
    uint64_t fail_at; /* 0: never */
    size_t total;     /* bytes in all files: no string can be longer */
};

static void check_str(const struct replay *r, const char *s)
{
    FUZZ_CHECK(!s || strlen(s) <= r->total);
}

static int on_record(void *arg, const struct drec *rec, struct dtx_err *err)
{
    struct replay *r = arg;

    if (r->fail_at && r->records + 1 == r->fail_at)
        return dtx_err_set(err, DTX_EINVAL, "replay refuses record %" PRIu64, r->records + 1);
    r->records++;
    FUZZ_CHECK(rec->type >= DREC_BOOT && rec->type <= DREC_LEARNED);
    FUZZ_CHECK(strcmp(drec_type_name(rec->type), "?") != 0);
    check_str(r, rec->node_id);
    check_str(r, rec->gtid);
    check_str(r, rec->idem_key);
    check_str(r, rec->results);
    check_str(r, rec->node);
    check_str(r, rec->shard);
    check_str(r, rec->who);
    check_str(r, rec->reason);
    FUZZ_CHECK(rec->nbranches == 0 || rec->branches);
    for (size_t i = 0; i < rec->nbranches; i++) {
        check_str(r, rec->branches[i].shard);
        check_str(r, rec->branches[i].db);
    }
    return 0;
}

/* Sets each segment header's segno and CRC, and each frame's CRC while the lengths chain. */
static void fix_up(unsigned char *p, size_t n, uint64_t segno)
{
    uint32_t salt;
    size_t off = DLOG_SEG_HDR;

    if (n < DLOG_SEG_HDR)
        return;
    put_le64(p + 16, segno);
    put_le32(p + 28, crc32c(0, p, 28));
    salt = get_le32(p + 12);
    while (n - off >= DLOG_FRAME_HDR) {
        uint32_t len = get_le32(p + off + 4);

        if (len == 0 || len > n - off - DLOG_FRAME_HDR)
            break;
        put_le32(p + off, dlog_frame_crc(salt, p + off, len));
        off += DLOG_FRAME_HDR + len;
    }
}

static void write_segment(const char *dir, uint64_t segno, unsigned char *p, size_t n, bool fix)
{
    char path[PATH_MAX + 32];
    int fd;

    if (fix)
        fix_up(p, n, segno);
    dlog_seg_path(path, sizeof(path), dir, segno);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
    close(fd);
}

/* Where the next segment begins after start: the next magic, or the end. */
static size_t next_segment(const unsigned char *p, size_t n, size_t start)
{
    for (size_t at = start + 1; at + MAGIC_LEN <= n; at++) {
        if (memcmp(p + at, DLOG_SEG_MAGIC, MAGIC_LEN) == 0)
            return at;
    }
    return n;
}

/* Writes the input's files into dir; returns how many. */
static int write_log(const char *dir, unsigned char *p, size_t n, uint64_t segno, bool fix)
{
    size_t at = 0;
    int count = 0;

    while (count < MAX_SEGMENTS && (at < n || count == 0)) {
        size_t end = count + 1 == MAX_SEGMENTS ? n : next_segment(p, n, at);

        write_segment(dir, segno + (uint64_t)count, p + at, end - at, fix);
        count++;
        at = end;
    }
    return count;
}

static void check_scan(const struct dlog_scan *scan, const struct replay *r, int nfiles)
{
    FUZZ_CHECK(scan->records == r->records);
    FUZZ_CHECK(scan->bytes <= r->total);
    FUZZ_CHECK(scan->segments + scan->obsolete <= (uint64_t)nfiles);
    FUZZ_CHECK(!scan->torn || scan->torn_offset + scan->torn_bytes <= r->total);
    FUZZ_CHECK(scan->frames <= r->total / (DLOG_FRAME_HDR + 1));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet("fuzz_dlog");
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    const char *dir = fuzz_tmpdir();
    struct replay r = {0}, again = {0};
    struct dlog_scan scan, scan2;
    struct dtx_err err;
    unsigned char *copy;
    bool fix, repair;
    int nfiles, rc;

    if (size < 1)
        return 0;
    fix = data[0] & 1;
    repair = data[0] & 2;
    r.fail_at = data[0] & 16 ? 3 : 0;
    r.total = size - 1;
    copy = malloc(size); /* fix_up writes into it */
    FUZZ_CHECK(copy != NULL);
    memcpy(copy, data, size);
    nfiles = write_log(dir, copy + 1, size - 1, 1 + ((data[0] >> 2) & 3), fix);
    free(copy);

    dtx_err_clear(&err);
    rc = dlog_read_dir(dir, repair, on_record, &r, &scan, &err);
    FUZZ_CHECK(rc == 0 || rc == DTX_ECORRUPT || rc == DTX_EINVAL);
    FUZZ_CHECK(rc == 0 || (err.code == rc && err.msg[0] != '\0'));
    FUZZ_CHECK(rc != DTX_EINVAL || r.fail_at);
    if (rc == 0)
        check_scan(&scan, &r, nfiles);
    if (rc == 0 && repair) {
        again.total = r.total;
        dtx_err_clear(&err);
        rc = dlog_read_dir(dir, false, on_record, &again, &scan2, &err);
        if (rc != 0)
            fprintf(stderr, "fuzz_dlog: a repaired log does not read: %s\n", err.msg);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(!scan2.torn && again.records == r.records);
    }
    fuzz_empty_dir(dir);
    return 0;
}
