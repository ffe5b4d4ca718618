/*
 * err.c - the error table: DTX_E* code -> HTTP status and contract code.
 *
 * Stateless; safe from any thread.
 */
#include "dtx/err.h"

#include <stdio.h>
#include <string.h>

struct err_row {
    int value;
    int status;
    const char *name;
};

static const struct err_row err_table[] = {
#define DTX_X_ROW(name, value, status, code) {value, status, code},
    DTX_ERRORS(DTX_X_ROW)
#undef DTX_X_ROW
};

#define ERR_ROWS (sizeof(err_table) / sizeof(err_table[0]))

static const struct err_row *err_row_of(int code)
{
    for (size_t i = 0; i < ERR_ROWS; i++) {
        if (err_table[i].value == code)
            return &err_table[i];
    }
    return NULL;
}

void dtx_err_clear(struct dtx_err *err)
{
    if (!err)
        return;
    err->code = 0;
    err->msg[0] = '\0';
    err->sqlstate[0] = '\0';
    err->detail[0] = '\0';
    err->hint[0] = '\0';
    err->constraint[0] = '\0';
    err->table[0] = '\0';
    err->column[0] = '\0';
    err->shard[0] = '\0';
    err->op = -1;
}

int dtx_err_setv(struct dtx_err *err, int code, const char *fmt, va_list ap)
{
    if (!err)
        return code;
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    return code;
}

int dtx_err_set(struct dtx_err *err, int code, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    dtx_err_setv(err, code, fmt, ap);
    va_end(ap);
    return code;
}

int dtx_err_prefix(struct dtx_err *err, const char *fmt, ...)
{
    char joined[2 * DTX_ERR_MSG_MAX];
    size_t n;
    va_list ap;
    int used;

    if (!err)
        return DTX_EINVAL;
    va_start(ap, fmt);
    used = vsnprintf(joined, DTX_ERR_MSG_MAX, fmt, ap);
    va_end(ap);
    n = used < 0 ? 0 : (size_t)used >= DTX_ERR_MSG_MAX ? DTX_ERR_MSG_MAX - 1 : (size_t)used;
    memcpy(joined + n, ": ", 3);
    n += 2;
    memcpy(joined + n, err->msg, strnlen(err->msg, DTX_ERR_MSG_MAX - 1) + 1);
    n = strnlen(joined, sizeof(joined) - 1);
    if (n >= DTX_ERR_MSG_MAX)
        n = DTX_ERR_MSG_MAX - 1;
    memcpy(err->msg, joined, n);
    err->msg[n] = '\0';
    return err->code;
}

const char *dtx_err_name(int code)
{
    const struct err_row *row = err_row_of(code);

    return row ? row->name : "internal_error";
}

int dtx_err_http_status(int code)
{
    const struct err_row *row = err_row_of(code);

    return row ? row->status : 500;
}

int dtx_err_from_name(const char *name)
{
    for (size_t i = 0; name && i < ERR_ROWS; i++) {
        if (strcmp(err_table[i].name, name) == 0)
            return err_table[i].value;
    }
    return 0;
}
