/*
 * jsonx.h - cJSON helpers: parsing with a position in the error, typed
 * field access that names the offending field, and the contract's error
 * body.
 *
 * Field names in errors are written as a path ("ops[2].params"), so a
 * client or an operator reading a config error knows exactly what to fix.
 */
#ifndef DTX_JSONX_H
#define DTX_JSONX_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/err.h"

/*
 * Parses len bytes of JSON text: exactly one document, with nothing but
 * whitespace after it, and no NUL character anywhere (neither a raw 0
 * byte nor a \u0000 escape: every string is a C string). The text must be
 * well-formed UTF-8 without a byte order mark (RFC 8259 8.1), and no
 * object may hold a key twice (cJSON would take the first, other readers
 * the last). On success
 * returns 0 and *out owns the tree (free with cJSON_Delete). On failure
 * returns DTX_EINVAL with the byte offset of the error in err; *out is not
 * modified.
 */
int jsonx_parse(const char *text, size_t len, cJSON **out, struct dtx_err *err);

/*
 * Typed lookups of obj[key]. where names obj in messages ("" for the top
 * level). When the key is absent: DTX_EINVAL "missing ..." if required,
 * otherwise 0 with *out untouched. A value of the wrong type or out of
 * range is DTX_EINVAL naming the field. On error *out is not modified.
 */
int jsonx_str(const cJSON *obj, const char *where, const char *key, bool required, const char **out,
              struct dtx_err *err);
int jsonx_int(const cJSON *obj, const char *where, const char *key, bool required, int64_t min,
              int64_t max, int64_t *out, struct dtx_err *err);
int jsonx_bool(const cJSON *obj, const char *where, const char *key, bool required, bool *out,
               struct dtx_err *err);
/* Requires obj[key], when present, to be an array; *out is the array or stays untouched. */
int jsonx_array(const cJSON *obj, const char *where, const char *key, bool required,
                const cJSON **out, struct dtx_err *err);
/* Requires obj[key], when present, to be an object. */
int jsonx_object(const cJSON *obj, const char *where, const char *key, bool required,
                 const cJSON **out, struct dtx_err *err);

/* Fails with DTX_EINVAL naming the first key of obj not in the NULL-terminated list. */
int jsonx_only_keys(const cJSON *obj, const char *where, const char *const *allowed,
                    struct dtx_err *err);

/* True when a JSON number is an integer that a double holds exactly (|v| <= 2^53). */
bool jsonx_is_safe_int(const cJSON *item);

/*
 * Formats a scalar JSON value as PostgreSQL text input: numbers without
 * exponent when integral, true/false, strings as-is, arrays and objects as
 * JSON text. Returns a malloc'd string, or NULL for JSON null.
 */
char *jsonx_to_param(const cJSON *item);

/* Prints without formatting into a malloc'd string (aborts on allocation failure). */
char *jsonx_print(const cJSON *item);

/*
 * Builds the contract's error object {"code":..,"message":..} plus
 * "shard", "op" and PostgreSQL's "sqlstate", "detail", "hint",
 * "constraint", "table" and "column" when err has them. Returns a new tree.
 */
cJSON *jsonx_error_obj(const struct dtx_err *err);
/* Builds the whole error body {"error":{...}} as a malloc'd string. */
char *jsonx_error_body(const struct dtx_err *err);

/*
 * Shorthand constructors that abort on allocation failure. jsonx_add_str
 * puts U+FFFD for every byte of value that is not well-formed UTF-8, so
 * that an answer echoing what a client sent (a path, a key) stays JSON.
 */
cJSON *jsonx_new_object(void);
cJSON *jsonx_new_array(void);
void jsonx_add_str(cJSON *obj, const char *key, const char *value);
void jsonx_add_num(cJSON *obj, const char *key, double value);
void jsonx_add_bool(cJSON *obj, const char *key, bool value);
void jsonx_add(cJSON *obj, const char *key, cJSON *item);
void jsonx_append(cJSON *array, cJSON *item);
/* Writes wall_us (microseconds since the epoch) as RFC 3339 UTC, e.g. 2026-11-24T03:12:09.500000Z.
 */
void jsonx_fmt_time(uint64_t wall_us, char *buf, size_t n);
/* Adds that as obj[key]; nothing when wall_us is 0. */
void jsonx_add_time(cJSON *obj, const char *key, uint64_t wall_us);

#endif
