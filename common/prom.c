/*
 * prom.c - the Prometheus text format and histograms (prom.h). No state
 * beyond the caller's buffer and histograms.
 */
#include "dtx/prom.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

const struct prom_buckets prom_seconds_buckets = {
    .n = 18,
    .le = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
           5, 10, 30, 60},
};

const struct prom_buckets prom_size_buckets = {
    .n = 13,
    .le = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096},
};

void prom_init(struct prom *p)
{
    buf_init(&p->out);
}

void prom_family(struct prom *p, const char *name, const char *type, const char *help)
{
    buf_printf(&p->out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_escaped(struct buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            buf_printf(b, "\\%c", *s);
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else
            buf_putc(b, *s);
    }
}

static void put_value(struct buf *b, double v)
{
    if (v == floor(v) && fabs(v) < 9007199254740992.0)
        buf_printf(b, " %.0f\n", v);
    else
        buf_printf(b, " %.9g\n", v);
}

/* name{labels...,extra="extra_value"}: the braces only when there is a label. */
static void put_name(struct buf *b, const char *name, const char *suffix,
                     const struct prom_label *labels, size_t n, const char *extra,
                     const char *extra_value)
{
    const char *sep = "{";

    buf_puts(b, name);
    buf_puts(b, suffix);
    for (size_t i = 0; i < n; i++) {
        buf_printf(b, "%s%s=\"", sep, labels[i].name);
        put_escaped(b, labels[i].value);
        buf_putc(b, '"');
        sep = ",";
    }
    if (extra) {
        buf_printf(b, "%s%s=\"", sep, extra);
        put_escaped(b, extra_value);
        buf_putc(b, '"');
        sep = ",";
    }
    if (*sep == ',')
        buf_putc(b, '}');
}

void prom_sample_labels(struct prom *p, const char *name, const struct prom_label *labels, size_t n,
                        double v)
{
    put_name(&p->out, name, "", labels, n, NULL, NULL);
    put_value(&p->out, v);
}

void prom_sample(struct prom *p, const char *name, const char *label, const char *value, double v)
{
    struct prom_label l = {label, value};

    prom_sample_labels(p, name, &l, label ? 1 : 0, v);
}

void prom_counter(struct prom *p, const char *name, const char *help, double v)
{
    prom_family(p, name, "counter", help);
    prom_sample(p, name, NULL, NULL, v);
}

void prom_gauge(struct prom *p, const char *name, const char *help, double v)
{
    prom_family(p, name, "gauge", help);
    prom_sample(p, name, NULL, NULL, v);
}

void prom_histogram(struct prom *p, const char *name, const struct prom_label *labels, size_t n,
                    const struct prom_hist *h)
{
    size_t nb = h->b ? h->b->n : 0;
    uint64_t cum = 0;
    char le[32];

    for (size_t i = 0; i < nb; i++) {
        cum += h->bucket[i];
        snprintf(le, sizeof(le), "%.9g", h->b->le[i]);
        put_name(&p->out, name, "_bucket", labels, n, "le", le);
        put_value(&p->out, (double)cum);
    }
    put_name(&p->out, name, "_bucket", labels, n, "le", "+Inf");
    put_value(&p->out, (double)h->count);
    put_name(&p->out, name, "_sum", labels, n, NULL, NULL);
    put_value(&p->out, h->sum);
    put_name(&p->out, name, "_count", labels, n, NULL, NULL);
    put_value(&p->out, (double)h->count);
}

char *prom_finish(struct prom *p)
{
    return buf_detach(&p->out, NULL);
}

void prom_hist_init(struct prom_hist *h, const struct prom_buckets *b)
{
    memset(h, 0, sizeof(*h));
    h->b = b;
}

void prom_hist_observe(struct prom_hist *h, double v)
{
    size_t nb = h->b ? h->b->n : 0, i = 0;

    if (isnan(v))
        return;
    while (i < nb && v > h->b->le[i])
        i++;
    h->bucket[i]++;
    h->count++;
    h->sum += v;
}
