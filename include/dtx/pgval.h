/*
 * pgval.h - what PostgreSQL answered, as dtx says it: result values as
 * JSON (numbers exactly as PostgreSQL printed them), a statement's result
 * as the RESULTS trailer item (msg.h), and an error result as a struct
 * dtx_err. Stateless; works on any PGresult, including ones built by
 * PQmakeEmptyPGresult (the unit test's).
 */
#ifndef DTX_PGVAL_H
#define DTX_PGVAL_H

#include <cjson/cJSON.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/err.h"

/*
 * One value as JSON. Numbers are emitted as PostgreSQL's own text (cJSON
 * raw items), never through a double, which would round them; an int8
 * beyond 2^53, numeric, NaN and infinities become strings; json and jsonb
 * are embedded; NULL is null; everything else is a string.
 */
cJSON *pgval_json(const PGresult *res, int row, int col);

/*
 * One statement's result written as it arrives, row by row (libpq's
 * single-row mode): "\n" and {"columns":[...],"rows":[[...],...],
 * "rows_affected":n}. add takes every row of res (one in single-row mode,
 * all of a whole result); end takes the statement's last result (its
 * command tag) and sets *affected to the rows it affected (or returned);
 * drop takes back what was written of it.
 */
struct pgval_rows {
    size_t start; /* where the statement's text begins in out */
    int64_t rows; /* rows written */
    bool begun;
};
void pgval_rows_add(struct pgval_rows *w, const PGresult *res, struct buf *out);
void pgval_rows_end(struct pgval_rows *w, const PGresult *res, int64_t *affected, struct buf *out);
void pgval_rows_drop(struct pgval_rows *w, struct buf *out);

/* The same for a whole result at once. */
void pgval_result(const PGresult *res, int64_t *affected, struct buf *out);

/* PostgreSQL's own fields of an error (NULL: it did not give that one). */
struct pgval_diag {
    const char *sqlstate;
    const char *primary; /* the message */
    const char *detail;
    const char *hint;
    const char *constraint;
    const char *table;
    const char *column;
};

/*
 * Fills err (which had no error) from an error's fields: DTX_ESQL with
 * PostgreSQL's message (fallback when it gave none), its SQLSTATE, detail,
 * hint, constraint, table and column (each cut to fit, "" when not given);
 * a cancelled statement (57014) is DTX_EABORTED when cancelled says dtx
 * cancelled it, else DTX_ETIMEDOUT (statement_timeout).
 */
void pgval_diag_error(const struct pgval_diag *d, const char *fallback, bool cancelled,
                      struct dtx_err *err);
/* The same for an error result. */
void pgval_error(const PGresult *res, bool cancelled, struct dtx_err *err);

#endif
