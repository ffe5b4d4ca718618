/*
 * xalloc.h - memory allocation with one out-of-memory policy for all of dtx.
 *
 * Policy: running out of memory is fatal. The x* functions never return
 * NULL: on failure they write one line to stderr and abort(). A daemon
 * that cannot allocate cannot keep its promises to the transactions in
 * flight, and aborting loses nothing that was acknowledged (decisions are
 * durable before anyone hears of them; the participant's prepared
 * branches live in PostgreSQL). So no caller checks for NULL and no error
 * code stands for "out of memory". (git's xmalloc family.)
 *
 * xalloc_init() installs the same policy into cJSON, so a JSON tree built
 * anywhere in dtx never holds a NULL where an allocation failed.
 */
#ifndef DTX_XALLOC_H
#define DTX_XALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* A malloc'd printf. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Returns p, or applies the policy when a library allocator returned NULL. */
void *xnonnull(void *p);

/* Makes cJSON allocate with xmalloc. Called once by each program before any thread starts. */
void xalloc_init(void);

#endif
