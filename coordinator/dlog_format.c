/*
 * dlog_format.c - the decision log's byte format: segment files, their
 * header, and the frames that carry records. Shared by the reader
 * (dlog_reader.c) and the writer (dlog_writer.c); stateless.
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
 *   9  payload  len bytes: one or more records (drec.h)
 *
 * A frame is the unit of atomicity: the writer issues frame N+1 only after
 * frame N was fdatasynced. The salt keeps frames of an older file's
 * contents from passing as valid.
 */
#include "dlog_impl.h"

#include "dtx/crc32c.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

void dlog_seg_header(unsigned char h[DLOG_SEG_HDR], uint32_t salt, uint64_t segno)
{
    memset(h, 0, DLOG_SEG_HDR);
    memcpy(h, DLOG_SEG_MAGIC, 8);
    put_le32(h + 8, DLOG_SEG_VERSION);
    put_le32(h + 12, salt);
    put_le64(h + 16, segno);
    put_le32(h + 28, crc32c(0, h, 28));
}

uint32_t dlog_frame_crc(uint32_t salt, const unsigned char *frame, size_t len)
{
    return dlog_frame_crc_of(salt, frame, frame + DLOG_FRAME_HDR, len);
}

uint32_t dlog_frame_crc_of(uint32_t salt, const unsigned char *h, const unsigned char *payload,
                           size_t len)
{
    unsigned char s[4];

    put_le32(s, salt);
    return crc32c(crc32c(crc32c(0, s, 4), h + 4, DLOG_FRAME_HDR - 4), payload, len);
}

/* True when a complete, checksum-valid frame starts at data[off]. */
bool dlog_frame_valid_at(const unsigned char *data, size_t size, size_t off, uint32_t salt)
{
    uint32_t len;

    if (size - off < DLOG_FRAME_HDR)
        return false;
    len = get_le32(data + off + 4);
    if ((data[off + 8] != DLOG_FRAME_BATCH && data[off + 8] != DLOG_FRAME_CHECKPOINT) || len == 0 ||
        len > DLOG_MAX_FRAME || len > size - off - DLOG_FRAME_HDR)
        return false;
    return dlog_frame_crc(salt, data + off, len) == get_le32(data + off);
}

int dlog_check_header(const unsigned char *h, uint64_t segno, const char *path, uint32_t *salt,
                      struct dtx_err *err)
{
    if (memcmp(h, DLOG_SEG_MAGIC, 8) != 0)
        return dtx_err_set(err, DTX_ECORRUPT, "decision log '%s' is corrupt: bad magic at offset 0",
                           path);
    if (crc32c(0, h, 28) != get_le32(h + 28))
        return dtx_err_set(err, DTX_ECORRUPT,
                           "decision log '%s' is corrupt: header checksum mismatch at offset 0",
                           path);
    if (get_le32(h + 8) != DLOG_SEG_VERSION)
        return dtx_err_set(err, DTX_ECORRUPT,
                           "decision log '%s' has version %u; this coordinator reads version %u",
                           path, get_le32(h + 8), DLOG_SEG_VERSION);
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

int dlog_parse_segno(const char *name, uint64_t *segno)
{
    unsigned long long n;
    int used = 0;

    if (sscanf(name, "dlog-%10llu.log%n", &n, &used) != 1 || used != (int)strlen(name) ||
        strlen(name) != 19)
        return -1;
    *segno = n;
    return 0;
}

void dlog_seg_path(char *out, size_t outsz, const char *dir, uint64_t segno)
{
    snprintf(out, outsz, "%s/dlog-%010" PRIu64 ".log", dir, segno);
}

/* Cuts the torn tail off the last segment (or removes a segment that holds nothing). */
