/*
 * latency.c - latencies and CPU time for the load generators (latency.h).
 */
#include "latency.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void lat_reserve(struct latencies *l, size_t more)
{
    if (l->n + more <= l->cap)
        return;
    while (l->cap < l->n + more)
        l->cap = l->cap ? l->cap * 2 : 16384;
    l->us = xrealloc(l->us, l->cap * sizeof(*l->us));
}

void lat_add(struct latencies *l, uint32_t us)
{
    lat_reserve(l, 1);
    l->us[l->n++] = us;
}

void lat_merge(struct latencies *to, const struct latencies *from)
{
    if (!from->n)
        return;
    lat_reserve(to, from->n);
    memcpy(to->us + to->n, from->us, from->n * sizeof(*from->us));
    to->n += from->n;
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

void lat_summarize(struct latencies *l, struct lat_summary *s)
{
    memset(s, 0, sizeof(*s));
    if (!l->n)
        return;
    qsort(l->us, l->n, sizeof(*l->us), cmp_u32);
    s->p50_ms = l->us[l->n / 2] / 1e3;
    s->p99_ms = l->us[(size_t)((double)l->n * 0.99)] / 1e3;
    s->max_ms = l->us[l->n - 1] / 1e3;
}

void lat_release(struct latencies *l)
{
    free(l->us);
    memset(l, 0, sizeof(*l));
}

unsigned bench_rand(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (*seed >> 8) & 0xffffff;
}

double process_cpu_seconds(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}
