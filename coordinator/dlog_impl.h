/*
 * dlog_impl.h - what the decision log's files share (dlog_format.c,
 * dlog_reader.c, dlog_writer.c); private to them and test_dlog.c.
 */
#ifndef DTX_DLOG_IMPL_H
#define DTX_DLOG_IMPL_H

#include "dtx/buf.h"
#include "dtx/dlog.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DLOG_SEG_MAGIC        "DTXDLOG"
#define DLOG_SEG_VERSION      1
#define DLOG_SEG_HDR          32
#define DLOG_FRAME_HDR        9
#define DLOG_FRAME_BATCH      1
#define DLOG_FRAME_CHECKPOINT 2

/* Writes a segment header for segno with salt into h. */
void dlog_seg_header(unsigned char h[DLOG_SEG_HDR], uint32_t salt, uint64_t segno);
/*
 * Checks the segment header h of the file path, which should be segment
 * segno: 0 and *salt, or DTX_ECORRUPT naming path (err may be NULL).
 */
int dlog_check_header(const unsigned char *h, uint64_t segno, const char *path, uint32_t *salt,
                      struct dtx_err *err);
/* The checksum of the frame at frame (len payload bytes) under salt. */
uint32_t dlog_frame_crc(uint32_t salt, const unsigned char *frame, size_t len);
/* The same for a frame header h (its length and type) and its payload, apart. */
uint32_t dlog_frame_crc_of(uint32_t salt, const unsigned char *h, const unsigned char *payload,
                           size_t len);
/* True when a complete, checksum-valid frame starts at data[off] (size bytes in all). */
bool dlog_frame_valid_at(const unsigned char *data, size_t size, size_t off, uint32_t salt);
/* The segment number in a file name "dlog-NNNNNNNNNN.log": 0, or -1 for another name. */
int dlog_parse_segno(const char *name, uint64_t *segno);
/* The path of segment segno in dir. */
void dlog_seg_path(char *out, size_t outsz, const char *dir, uint64_t segno);

/*
 * Reads the log in dir (dlog_reader.c); with repair, also cuts off a torn
 * tail and removes segments a checkpoint made obsolete.
 */
int dlog_read_dir(const char *dir, bool repair, drec_replay_fn replay, void *arg,
                  struct dlog_scan *scan, struct dtx_err *err);

#endif
