/*
 * xalloc.c - the out-of-memory policy (see xalloc.h): abort with one line.
 *
 * No state. Safe from any thread.
 */
#include "dtx/xalloc.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void out_of_memory(size_t n)
{
    char line[96];
    int len = snprintf(line, sizeof(line), "dtx: out of memory (allocating %zu bytes)\n", n);

    if (len > 0 && write(STDERR_FILENO, line, (size_t)len) < 0)
        line[0] = '\0';
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);

    if (!p)
        out_of_memory(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);

    if (!p)
        out_of_memory(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);

    if (!q)
        out_of_memory(n);
    return q;
}

char *xstrdup(const char *s)
{
    char *p = strdup(s);

    if (!p)
        out_of_memory(strlen(s) + 1);
    return p;
}

char *xstrndup(const char *s, size_t n)
{
    char *p = strndup(s, n);

    if (!p)
        out_of_memory(n + 1);
    return p;
}

char *xasprintf(const char *fmt, ...)
{
    va_list ap;
    char *s;
    int n;

    va_start(ap, fmt);
    n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        out_of_memory(strlen(fmt));
    return s;
}

void *xnonnull(void *p)
{
    if (!p)
        out_of_memory(0);
    return p;
}

void xalloc_init(void)
{
    cJSON_Hooks hooks = {.malloc_fn = xmalloc, .free_fn = free};

    cJSON_InitHooks(&hooks);
}
