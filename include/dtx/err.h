/*
 * err.h - error codes and error detail shared by every dtx module.
 *
 * A function that can fail returns int: 0 or a negative DTX_E* code. Detail
 * (a human sentence, the SQLSTATE when PostgreSQL said it, the shard and op
 * it concerns) travels in an optional caller-supplied struct dtx_err. One
 * table (DTX_ERRORS below) maps each code to the HTTP status and the
 * snake_case "code" of the contract's JSON error body.
 */
#ifndef DTX_ERR_H
#define DTX_ERR_H

#include <stdarg.h>
#include <stddef.h>

/* X(name, value, http status, json code) */
#define DTX_ERRORS(X)                                                                              \
    X(DTX_EINVAL, -1, 400, "bad_request")                                                          \
    X(DTX_ENOMEM, -2, 500, "out_of_memory")                                                        \
    X(DTX_EIO, -3, 500, "io_error")                                                                \
    X(DTX_ECORRUPT, -4, 500, "corrupt_log")                                                        \
    X(DTX_ENOTFOUND, -5, 404, "not_found")                                                         \
    X(DTX_EUNAVAIL, -6, 409, "participant_unavailable")                                            \
    X(DTX_ETIMEDOUT, -7, 409, "timeout")                                                           \
    X(DTX_ESQL, -8, 409, "sql_error")                                                              \
    X(DTX_EUNKNOWN, -9, 504, "outcome_unknown")                                                    \
    X(DTX_ESTATE, -10, 409, "invalid_state")                                                       \
    X(DTX_EAUTH, -11, 401, "unauthorized")                                                         \
    X(DTX_EFORBIDDEN, -12, 403, "forbidden")                                                       \
    X(DTX_ETOOBIG, -13, 413, "payload_too_large")                                                  \
    X(DTX_ESHUTDOWN, -14, 503, "unavailable")                                                      \
    X(DTX_EROWS, -15, 409, "expect_rows_mismatch")                                                 \
    X(DTX_EVOTENO, -16, 409, "vote_no")                                                            \
    X(DTX_EIDEMPOTENCY, -17, 422, "idempotency_key_mismatch")                                      \
    X(DTX_EMETHOD, -18, 405, "method_not_allowed")                                                 \
    X(DTX_EPROTO, -19, 502, "protocol_error")                                                      \
    X(DTX_ELOGFAIL, -20, 503, "log_unavailable")                                                   \
    X(DTX_EABORTED, -21, 409, "aborted")                                                           \
    X(DTX_EUNSUPPORTED, -22, 400, "unsupported")                                                   \
    X(DTX_ECONFLICT, -23, 409, "conflict")                                                         \
    X(DTX_EBUSY, -24, 429, "overloaded")                                                           \
    X(DTX_EMEDIATYPE, -25, 415, "unsupported_media_type")                                          \
    X(DTX_ERESULT, -26, 409, "result_too_large")

enum dtx_errcode {
    DTX_OK = 0,
#define DTX_X_ENUM(name, value, status, code) name = value,
    DTX_ERRORS(DTX_X_ENUM)
#undef DTX_X_ENUM
};

#define DTX_ERR_MSG_MAX  512
#define DTX_ERR_NAME_MAX 64 /* PostgreSQL's identifiers are at most 63 bytes (NAMEDATALEN) */

/*
 * Detail of one failure. Every field is a plain array so that a struct
 * dtx_err can live on the stack and be copied; an empty string means "not
 * known". op is the index of the client's op the error concerns, or -1.
 * The fields from sqlstate to column are PostgreSQL's own (PQresultErrorField),
 * cut to fit when longer.
 */
struct dtx_err {
    int code;                          /* DTX_E* or 0 */
    char msg[DTX_ERR_MSG_MAX];         /* lowercase, failure first, cause last */
    char sqlstate[6];                  /* five characters from PostgreSQL, or "" */
    char detail[DTX_ERR_MSG_MAX];      /* PostgreSQL's DETAIL ("Key (id)=(7) already exists.") */
    char hint[DTX_ERR_MSG_MAX];        /* PostgreSQL's HINT */
    char constraint[DTX_ERR_NAME_MAX]; /* the constraint that was violated */
    char table[DTX_ERR_NAME_MAX];      /* the table (without its schema) */
    char column[DTX_ERR_NAME_MAX];     /* the column */
    char shard[64];                    /* shard the failure happened on, or "" */
    int op;                            /* index of the op in the client's request, or -1 */
};

/* Resets *err to "no error". err may be NULL. */
void dtx_err_clear(struct dtx_err *err);

/*
 * Records code and a printf-style message in *err (if err is not NULL) and
 * returns code, so that a caller can write `return dtx_err_set(err, ...)`.
 * PostgreSQL's fields, shard and op are left as they were.
 */
int dtx_err_set(struct dtx_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int dtx_err_setv(struct dtx_err *err, int code, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/*
 * Prepends a printf-style prefix and ": " to err->msg, truncating the end
 * if the result is too long. Returns err->code (DTX_EINVAL if err is NULL).
 */
int dtx_err_prefix(struct dtx_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The contract's snake_case code for an error code ("internal_error" if unknown). */
const char *dtx_err_name(int code);

/* The HTTP status for an error code (500 if unknown). */
int dtx_err_http_status(int code);

/* Maps a contract code name back to its DTX_E* value; returns 0 if unknown. */
int dtx_err_from_name(const char *name);

#endif
