/*
 * latency.h - what both load generators share: request latencies
 * (microseconds) and their percentiles, their own CPU time, and the cheap
 * random numbers that pick accounts.
 */
#ifndef DTX_BENCH_LATENCY_H
#define DTX_BENCH_LATENCY_H

#include <stddef.h>
#include <stdint.h>

struct latencies {
    uint32_t *us;
    size_t n, cap;
};

struct lat_summary {
    double p50_ms, p99_ms, max_ms;
};

/* Records one latency. Aborts on allocation failure. */
void lat_add(struct latencies *l, uint32_t us);
/* Appends every latency of from to to. */
void lat_merge(struct latencies *to, const struct latencies *from);
/* p50, p99 and max (zeros when empty); sorts l in place. */
void lat_summarize(struct latencies *l, struct lat_summary *s);
void lat_release(struct latencies *l);

/* A 24-bit pseudo-random number from *seed (a linear congruential step: cheap, per thread). */
unsigned bench_rand(unsigned *seed);

/* User plus system CPU seconds this process has used. */
double process_cpu_seconds(void);

#endif
