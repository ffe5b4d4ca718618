/*
 * prom.h - writing the Prometheus text exposition format (version 0.0.4),
 * for both daemons' GET /metrics, and the histograms behind it.
 *
 * A metric family is started once (its # HELP and # TYPE lines), then
 * given samples, each with any number of labels. Label values are escaped
 * (backslash, double quote, newline), so a shard name can never break a
 * line. Integers print without a fraction.
 *
 * A histogram (struct prom_hist) counts observations into fixed buckets
 * given by an upper-bound table (struct prom_buckets, one constant per
 * metric); it is written as Prometheus expects: cumulative _bucket lines
 * with le="..." in ascending order ending with le="+Inf", then _sum and
 * _count. A zeroed struct prom_hist is an empty histogram; one without a
 * bucket table has the +Inf bucket only.
 *
 * Thread model: a histogram is plain memory with no lock of its own. Its
 * owner says who may touch it: one thread (the event loop: no locking
 * needed), or a lock the owner holds around prom_hist_observe and around
 * the copy it renders.
 */
#ifndef DTX_PROM_H
#define DTX_PROM_H

#include <stddef.h>
#include <stdint.h>

#include "dtx/buf.h"

struct prom {
    struct buf out;
};

/* One label of a sample: name="value" (value escaped when written). */
struct prom_label {
    const char *name;
    const char *value;
};

/* The most upper bounds a histogram may have (the +Inf bucket comes on top). */
#define PROM_HIST_MAX_BOUNDS 24

/* A histogram's bucket upper bounds: n finite values, ascending. */
struct prom_buckets {
    size_t n;
    double le[PROM_HIST_MAX_BOUNDS];
};

struct prom_hist {
    const struct prom_buckets *b;              /* NULL: only the +Inf bucket */
    uint64_t bucket[PROM_HIST_MAX_BOUNDS + 1]; /* per bucket, not cumulative; [b->n] is +Inf */
    uint64_t count;
    double sum;
};

/* Latencies in seconds: 100 us to 60 s, roughly 1-2.5-5 per decade. */
extern const struct prom_buckets prom_seconds_buckets;
/* Sizes (records in a group commit and the like): 1, 2, 4, ... 4096. */
extern const struct prom_buckets prom_size_buckets;

void prom_init(struct prom *p);
/* Starts a family: type is "counter", "gauge" or "histogram"; help is one line. */
void prom_family(struct prom *p, const char *name, const char *type, const char *help);
/* A sample of the family just started: name, or name{label="value"} when label is not NULL. */
void prom_sample(struct prom *p, const char *name, const char *label, const char *value, double v);
/* A sample with n labels (n may be 0). */
void prom_sample_labels(struct prom *p, const char *name, const struct prom_label *labels, size_t n,
                        double v);
/* A family with one sample and no label. */
void prom_counter(struct prom *p, const char *name, const char *help, double v);
void prom_gauge(struct prom *p, const char *name, const char *help, double v);
/*
 * The samples of one histogram of the family name just started (its
 * _bucket, _sum and _count lines), each with the n labels given (plus le).
 */
void prom_histogram(struct prom *p, const char *name, const struct prom_label *labels, size_t n,
                    const struct prom_hist *h);
/* The text written so far (malloc'd); p is empty afterwards. */
char *prom_finish(struct prom *p);

/* An empty histogram with bucket table b (which must outlive it). */
void prom_hist_init(struct prom_hist *h, const struct prom_buckets *b);
/* Counts v in the first bucket whose bound is >= v (+Inf if none), and in the sum. */
void prom_hist_observe(struct prom_hist *h, double v);

#endif
