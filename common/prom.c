/*
 * prom.c - the Prometheus text format (prom.h). No state beyond the
 * caller's buffer.
 */
#include "dtx/prom.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

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

void prom_sample(struct prom *p, const char *name, const char *label, const char *value, double v)
{
    buf_puts(&p->out, name);
    if (label) {
        buf_printf(&p->out, "{%s=\"", label);
        put_escaped(&p->out, value);
        buf_puts(&p->out, "\"}");
    }
    put_value(&p->out, v);
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

char *prom_finish(struct prom *p)
{
    return buf_detach(&p->out, NULL);
}
