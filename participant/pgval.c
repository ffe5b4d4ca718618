/*
 * pgval.c - PostgreSQL's answers as dtx says them (pgval.h). Stateless.
 */
#include "dtx/pgval.h"
#include "dtx/jsonx.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum pg_oid {
    OID_BOOL = 16,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_JSON = 114,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_JSONB = 3802,
};

/* True when an int8's text is within +-(2^53 - 1), where JSON readers keep integers exact. */
static bool int8_is_safe(const char *v)
{
    long long n;
    char *end;

    errno = 0;
    n = strtoll(v, &end, 10);
    return errno == 0 && *end == '\0' && n < 9007199254740992LL && n > -9007199254740992LL;
}

cJSON *pgval_json(const PGresult *res, int row, int col)
{
    const char *v = PQgetvalue(res, row, col);
    char *end;
    double d;

    if (PQgetisnull(res, row, col))
        return cJSON_CreateNull();
    switch ((enum pg_oid)PQftype(res, col)) {
    case OID_BOOL:
        return cJSON_CreateBool(v[0] == 't');
    case OID_INT2:
    case OID_INT4:
    case OID_OID:
        return cJSON_CreateRaw(v);
    case OID_INT8:
        return int8_is_safe(v) ? cJSON_CreateRaw(v) : cJSON_CreateString(v);
    case OID_FLOAT4:
    case OID_FLOAT8:
        d = strtod(v, &end);
        return *end == '\0' && isfinite(d) ? cJSON_CreateRaw(v) : cJSON_CreateString(v);
    case OID_JSON:
    case OID_JSONB: {
        /* PostgreSQL's own text, never re-encoded: cJSON would pass its numbers through a
         * double (2^53 + 1 rounded, 1e400 printed as null). Parsed only to be sure it is
         * JSON that readers take (cJSON's nesting limit too); otherwise a string. */
        cJSON *j = cJSON_Parse(v);
        cJSON *raw;

        if (!j)
            return cJSON_CreateString(v);
        cJSON_Delete(j);
        raw = cJSON_CreateRaw(v);
        /* json keeps its input's line breaks (json_agg makes some); a branch's results go
         * one op per line (msg_result). In JSON text PostgreSQL accepted a raw CR or LF can
         * only be whitespace between tokens (inside a string it must be escaped). */
        for (char *c = raw->valuestring; *c; c++) {
            if (*c == '\n' || *c == '\r')
                *c = ' ';
        }
        return raw;
    }
    }
    return cJSON_CreateString(v);
}

/* Appends item's JSON text (and deletes it). */
static void put_json(struct buf *out, cJSON *item)
{
    char *text = jsonx_print(item);

    buf_puts(out, text);
    free(text);
    cJSON_Delete(item);
}

/* "\n{"columns":[...],"rows":[" from res's row description, once. */
static void rows_begin(struct pgval_rows *w, const PGresult *res, struct buf *out)
{
    cJSON *cols;

    if (w->begun)
        return;
    cols = jsonx_new_array();
    w->begun = true;
    w->rows = 0;
    w->start = out->len;
    for (int c = 0; c < PQnfields(res); c++)
        jsonx_append(cols, cJSON_CreateString(PQfname(res, c)));
    buf_puts(out, "\n{\"columns\":");
    put_json(out, cols);
    buf_puts(out, ",\"rows\":[");
}

void pgval_rows_add(struct pgval_rows *w, const PGresult *res, struct buf *out)
{
    int nf = PQnfields(res), nt = PQntuples(res);

    rows_begin(w, res, out);
    for (int t = 0; t < nt; t++) {
        cJSON *row = jsonx_new_array();

        for (int c = 0; c < nf; c++)
            jsonx_append(row, pgval_json(res, t, c));
        if (w->rows++ > 0)
            buf_putc(out, ',');
        put_json(out, row);
    }
}

void pgval_rows_end(struct pgval_rows *w, const PGresult *res, int64_t *affected, struct buf *out)
{
    const char *n = PQcmdTuples((PGresult *)res);

    pgval_rows_add(w, res, out);
    buf_printf(out, "],\"rows_affected\":%s}", *n ? n : "0");
    *affected = *n ? strtoll(n, NULL, 10) : w->rows;
    w->begun = false;
}

void pgval_rows_drop(struct pgval_rows *w, struct buf *out)
{
    if (w->begun)
        buf_truncate(out, w->start);
    w->begun = false;
}

void pgval_result(const PGresult *res, int64_t *affected, struct buf *out)
{
    struct pgval_rows w = {0, 0, false};

    pgval_rows_end(&w, res, affected, out);
}

/* Copies a field of PostgreSQL's into the n bytes at out, cut to fit; "" when absent. */
static void put_field(char *out, size_t n, const char *v)
{
    snprintf(out, n, "%s", v ? v : "");
}

void pgval_diag_error(const struct pgval_diag *d, const char *fallback, bool cancelled,
                      struct dtx_err *err)
{
    int code = DTX_ESQL;

    if (d->sqlstate && strcmp(d->sqlstate, "57014") == 0)
        code = cancelled ? DTX_EABORTED : DTX_ETIMEDOUT;
    dtx_err_set(err, code, "%s", d->primary ? d->primary : fallback);
    put_field(err->sqlstate, sizeof(err->sqlstate), d->sqlstate);
    put_field(err->detail, sizeof(err->detail), d->detail);
    put_field(err->hint, sizeof(err->hint), d->hint);
    put_field(err->constraint, sizeof(err->constraint), d->constraint);
    put_field(err->table, sizeof(err->table), d->table);
    put_field(err->column, sizeof(err->column), d->column);
}

void pgval_error(const PGresult *res, bool cancelled, struct dtx_err *err)
{
    struct pgval_diag d = {
        .sqlstate = PQresultErrorField(res, PG_DIAG_SQLSTATE),
        .primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY),
        .detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL),
        .hint = PQresultErrorField(res, PG_DIAG_MESSAGE_HINT),
        .constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME),
        .table = PQresultErrorField(res, PG_DIAG_TABLE_NAME),
        .column = PQresultErrorField(res, PG_DIAG_COLUMN_NAME),
    };

    pgval_diag_error(&d, PQresultErrorMessage(res), cancelled, err);
}
