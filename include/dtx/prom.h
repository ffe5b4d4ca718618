/*
 * prom.h - writing the Prometheus text exposition format (version 0.0.4),
 * for both daemons' GET /metrics.
 *
 * A metric family is started once (its # HELP and # TYPE lines), then
 * given samples, each with at most one label. Label values are escaped
 * (backslash, double quote, newline), so a shard name can never break a
 * line. Integers print without a fraction.
 */
#ifndef DTX_PROM_H
#define DTX_PROM_H

#include <stdint.h>

#include "dtx/buf.h"

struct prom {
    struct buf out;
};

void prom_init(struct prom *p);
/* Starts a family: type is "counter" or "gauge"; help is one line. */
void prom_family(struct prom *p, const char *name, const char *type, const char *help);
/* A sample of the family just started: name, or name{label="value"} when label is not NULL. */
void prom_sample(struct prom *p, const char *name, const char *label, const char *value, double v);
/* A family with one sample and no label. */
void prom_counter(struct prom *p, const char *name, const char *help, double v);
void prom_gauge(struct prom *p, const char *name, const char *help, double v);
/* The text written so far (malloc'd); p is empty afterwards. */
char *prom_finish(struct prom *p);

#endif
