/*
 * buf.h - a growable byte buffer (in the manner of git's strbuf).
 *
 * data[len] is always '\0' once anything has been appended, so a buffer of
 * text can be used as a C string. Bytes can be consumed from the front
 * (network input) without moving the rest until the buffer is compacted.
 * Allocation failure aborts the process: a daemon that cannot allocate a
 * few bytes for a message cannot make progress, and half-built messages are
 * worse than a restart, which loses nothing acknowledged.
 */
#ifndef DTX_BUF_H
#define DTX_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    char *data; /* NULL until something is appended */
    size_t off; /* bytes consumed from the front */
    size_t len; /* bytes in use, including the consumed ones */
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0, 0                                                                              \
    }

void buf_init(struct buf *b);
/* Frees the memory; the buffer is empty and reusable afterwards. */
void buf_release(struct buf *b);
/* Empties the buffer but keeps its memory. */
void buf_reset(struct buf *b);
/* Makes room for at least n more bytes after len. */
void buf_reserve(struct buf *b, size_t n);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_puts(struct buf *b, const char *s);
void buf_putc(struct buf *b, char c);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Little-endian and big-endian fixed-width appends for wire and disk formats. */
void buf_put_u8(struct buf *b, uint8_t v);
void buf_put_le16(struct buf *b, uint16_t v);
void buf_put_le32(struct buf *b, uint32_t v);
void buf_put_le64(struct buf *b, uint64_t v);
void buf_put_be32(struct buf *b, uint32_t v);

/* Unconsumed bytes: buf_head() .. buf_head() + buf_avail(). */
static inline const char *buf_head(const struct buf *b)
{
    return b->data + b->off;
}
static inline size_t buf_avail(const struct buf *b)
{
    return b->len - b->off;
}
/* Marks n unconsumed bytes as consumed; compacts when everything is consumed. */
void buf_consume(struct buf *b, size_t n);
/* Moves unconsumed bytes to the front so that off is 0. */
void buf_compact(struct buf *b);
/* Drops everything after the first len bytes (len <= the length in use). */
void buf_truncate(struct buf *b, size_t len);
/* Takes the memory out of the buffer (NUL-terminated); the buffer is left empty. */
char *buf_detach(struct buf *b, size_t *len);

/* Fixed-width reads from a byte array (no bounds check: callers check length). */
uint16_t get_le16(const unsigned char *p);
uint32_t get_le32(const unsigned char *p);
uint64_t get_le64(const unsigned char *p);
uint32_t get_be32(const unsigned char *p);
void put_le32(unsigned char *p, uint32_t v);
void put_le64(unsigned char *p, uint64_t v);
void put_be32(unsigned char *p, uint32_t v);

#endif
