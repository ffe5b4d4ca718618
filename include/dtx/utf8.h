/*
 * utf8.h - UTF-8 well-formedness (RFC 3629): what JSON text must be
 * (RFC 8259 8.1), checked on what comes in and ensured on what goes out.
 */
#ifndef DTX_UTF8_H
#define DTX_UTF8_H

#include <stddef.h>

/*
 * The length (2 to 4) of the well-formed multi-byte UTF-8 sequence at p,
 * looking at most n bytes; 0 when p starts no such sequence (an ASCII byte
 * included): a stray continuation byte, a sequence cut short, an overlong
 * form, a surrogate, or a code point past U+10FFFF. n must be at least 1.
 */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* The offset of the first byte of s[0..n) that is not well-formed UTF-8, or n if none is. */
size_t utf8_invalid_at(const char *s, size_t n);

/*
 * A copy of the C string s with every byte that is not well-formed UTF-8
 * replaced by U+FFFD, so that it may be put into JSON text. The caller
 * frees it. Out of memory ends the process (xalloc.h).
 */
char *utf8_sanitized(const char *s);

#endif
