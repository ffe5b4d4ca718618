/*
 * jsonx.c - cJSON helpers shared by both daemons and dtxctl.
 *
 * Stateless; safe from any thread (parsing uses the re-entrant
 * cJSON_ParseWithLengthOpts, never cJSON_GetErrorPtr).
 */
#include "dtx/jsonx.h"
#include "dtx/utf8.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SAFE_INT_MAX 9007199254740992.0 /* 2^53: 2^53 + 1 rounds to it, so it is not exact */

/*
 * The offset of the first character the text may not carry, or len; *nul
 * says which kind:
 * - a NUL, raw or as a \u0000 escape inside a string (an escaped backslash
 *   followed by "u0000" is text, not an escape): cJSON turns either into a
 *   C string that ends early, which would silently cut a statement, a
 *   parameter or a key;
 * - another raw control character: JSON allows none in a string, and only
 *   tab, LF and CR between tokens (RFC 8259 2, 7); cJSON takes any of them
 *   as whitespace, or into the string.
 */
static size_t forbidden_offset(const char *text, size_t len, bool *nul)
{
    bool in_string = false;

    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];

        *nul = c == 0;
        if (c < 0x20 && (c == 0 || in_string || (c != '\t' && c != '\n' && c != '\r')))
            return i;
        if (c == '"') {
            in_string = !in_string;
        } else if (in_string && c == '\\') {
            *nul = len - i > 5 && memcmp(text + i + 1, "u0000", 5) == 0;
            if (*nul)
                return i;
            i++; /* the escaped character */
        }
    }
    return len;
}

/* The first byte from p on that is not JSON whitespace, or end. */
static const char *skip_space(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

static int cmp_keys(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The first key that some object of the tree at item holds twice, or NULL.
 * cJSON keeps both and its lookups find the first, while other readers
 * take the last: a request must not mean one thing to dtx and another to
 * whoever checked it on the way. Recursion is bounded by cJSON's nesting
 * limit (CJSON_NESTING_LIMIT, 1000).
 */
static const char *duplicate_key(const cJSON *item)
{
    const cJSON *c;
    const char *dup = NULL;
    size_t n = 0;

    cJSON_ArrayForEach(c, item)
    {
        if ((dup = duplicate_key(c)) != NULL)
            return dup;
        n++;
    }
    if (!cJSON_IsObject(item) || n < 2)
        return NULL;
    {
        const char **keys = xmalloc(n * sizeof(*keys));
        size_t i = 0;

        cJSON_ArrayForEach(c, item) keys[i++] = c->string;
        qsort(keys, n, sizeof(*keys), cmp_keys);
        for (i = 1; i < n && !dup; i++) {
            if (strcmp(keys[i - 1], keys[i]) == 0)
                dup = keys[i];
        }
        free(keys);
    }
    return dup;
}

/* Refuses text that is not UTF-8 (RFC 8259 8.1), or that starts with a byte order mark. */
static int check_utf8(const char *text, size_t len, struct dtx_err *err)
{
    size_t bad = utf8_invalid_at(text, len);

    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "malformed JSON: a byte order mark at byte 0 is not "
                           "accepted (RFC 8259 8.1)");
    if (bad < len)
        return dtx_err_set(err, DTX_EINVAL,
                           "malformed JSON: byte %zu (0x%02x) is not valid UTF-8, which JSON text "
                           "must be (RFC 8259 8.1)",
                           bad, (unsigned char)text[bad]);
    return 0;
}

int jsonx_parse(const char *text, size_t len, cJSON **out, struct dtx_err *err)
{
    const char *end = NULL;
    const char *dup;
    cJSON *root;
    size_t at;
    bool nul;

    if (len == 0)
        return dtx_err_set(err, DTX_EINVAL, "request body is empty; expected a JSON object");
    if (check_utf8(text, len, err) < 0)
        return DTX_EINVAL;
    root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root)
        return dtx_err_set(err, DTX_EINVAL, "malformed JSON at byte %zu",
                           end && end >= text ? (size_t)(end - text) : (size_t)0);
    end = end ? skip_space(end, text + len) : text;
    if (end != text + len) {
        cJSON_Delete(root);
        return dtx_err_set(err, DTX_EINVAL, "malformed JSON: data after the document at byte %zu",
                           (size_t)(end - text));
    }
    at = forbidden_offset(text, len, &nul);
    if (at < len && nul) {
        cJSON_Delete(root);
        return dtx_err_set(err, DTX_EINVAL,
                           "a NUL character (\\u0000) at byte %zu is not accepted: it would cut "
                           "its string short",
                           at);
    }
    if (at < len) {
        cJSON_Delete(root);
        return dtx_err_set(err, DTX_EINVAL,
                           "malformed JSON: a raw control character (0x%02x) at byte %zu; in a "
                           "string it must be escaped (\\u%04x), between tokens it may not "
                           "stand (RFC 8259)",
                           (unsigned char)text[at], at, (unsigned char)text[at]);
    }
    dup = duplicate_key(root);
    if (dup) {
        dtx_err_set(err, DTX_EINVAL, "malformed JSON: the key '%s' appears twice in one object",
                    dup);
        cJSON_Delete(root);
        return DTX_EINVAL;
    }
    *out = root;
    return 0;
}

static int field_error(struct dtx_err *err, const char *where, const char *key, const char *what)
{
    return dtx_err_set(err, DTX_EINVAL, "'%s%s%s' %s", where, *where ? "." : "", key, what);
}

static const cJSON *field(const cJSON *obj, const char *key)
{
    return cJSON_IsObject(obj) ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
}

int jsonx_str(const cJSON *obj, const char *where, const char *key, bool required, const char **out,
              struct dtx_err *err)
{
    const cJSON *v = field(obj, key);

    if (!v)
        return required ? field_error(err, where, key, "is missing") : 0;
    if (!cJSON_IsString(v))
        return field_error(err, where, key, "must be a string");
    *out = v->valuestring;
    return 0;
}

int jsonx_int(const cJSON *obj, const char *where, const char *key, bool required, int64_t min,
              int64_t max, int64_t *out, struct dtx_err *err)
{
    const cJSON *v = field(obj, key);
    double d;

    if (!v)
        return required ? field_error(err, where, key, "is missing") : 0;
    if (!cJSON_IsNumber(v) || !jsonx_is_safe_int(v))
        return field_error(err, where, key, "must be an integer");
    d = v->valuedouble;
    if (d < (double)min || d > (double)max) {
        char what[96];

        snprintf(what, sizeof(what), "must be between %" PRId64 " and %" PRId64, min, max);
        return field_error(err, where, key, what);
    }
    *out = (int64_t)d;
    return 0;
}

int jsonx_bool(const cJSON *obj, const char *where, const char *key, bool required, bool *out,
               struct dtx_err *err)
{
    const cJSON *v = field(obj, key);

    if (!v)
        return required ? field_error(err, where, key, "is missing") : 0;
    if (!cJSON_IsBool(v))
        return field_error(err, where, key, "must be true or false");
    *out = cJSON_IsTrue(v);
    return 0;
}

int jsonx_array(const cJSON *obj, const char *where, const char *key, bool required,
                const cJSON **out, struct dtx_err *err)
{
    const cJSON *v = field(obj, key);

    if (!v)
        return required ? field_error(err, where, key, "is missing") : 0;
    if (!cJSON_IsArray(v))
        return field_error(err, where, key, "must be an array");
    *out = v;
    return 0;
}

int jsonx_object(const cJSON *obj, const char *where, const char *key, bool required,
                 const cJSON **out, struct dtx_err *err)
{
    const cJSON *v = field(obj, key);

    if (!v)
        return required ? field_error(err, where, key, "is missing") : 0;
    if (!cJSON_IsObject(v))
        return field_error(err, where, key, "must be an object");
    *out = v;
    return 0;
}

int jsonx_only_keys(const cJSON *obj, const char *where, const char *const *allowed,
                    struct dtx_err *err)
{
    const cJSON *item;

    cJSON_ArrayForEach(item, obj)
    {
        bool known = false;

        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, item->string) == 0;
        if (!known)
            return field_error(err, where, item->string, "is not a known key");
    }
    return 0;
}

bool jsonx_is_safe_int(const cJSON *item)
{
    double d;

    if (!cJSON_IsNumber(item))
        return false;
    d = item->valuedouble;
    return isfinite(d) && d == floor(d) && fabs(d) < SAFE_INT_MAX;
}

char *jsonx_to_param(const cJSON *item)
{
    char num[64];

    if (cJSON_IsNull(item))
        return NULL;
    if (cJSON_IsString(item))
        return strdup(item->valuestring);
    if (cJSON_IsBool(item))
        return strdup(cJSON_IsTrue(item) ? "true" : "false");
    if (cJSON_IsNumber(item)) {
        if (jsonx_is_safe_int(item)) {
            snprintf(num, sizeof(num), "%" PRId64, (int64_t)item->valuedouble);
        } else {
            /* the shortest text that reads back as the same double: 19.99 stays 19.99 (%.17g
             * gives 19.989999999999998, which a numeric column would take as it is) */
            for (int prec = 1; prec <= 17; prec++) {
                snprintf(num, sizeof(num), "%.*g", prec, item->valuedouble);
                if (strtod(num, NULL) == item->valuedouble)
                    break;
            }
        }
        return strdup(num);
    }
    return jsonx_print(item);
}

char *jsonx_print(const cJSON *item)
{
    return xnonnull(cJSON_PrintUnformatted(item));
}

cJSON *jsonx_error_obj(const struct dtx_err *err)
{
    cJSON *e = jsonx_new_object();

    jsonx_add_str(e, "code", dtx_err_name(err->code));
    jsonx_add_str(e, "message", err->msg[0] ? err->msg : dtx_err_name(err->code));
    if (err->shard[0])
        jsonx_add_str(e, "shard", err->shard);
    if (err->op >= 0)
        jsonx_add_num(e, "op", err->op);
    if (err->sqlstate[0])
        jsonx_add_str(e, "sqlstate", err->sqlstate);
    if (err->detail[0])
        jsonx_add_str(e, "detail", err->detail);
    if (err->hint[0])
        jsonx_add_str(e, "hint", err->hint);
    if (err->constraint[0])
        jsonx_add_str(e, "constraint", err->constraint);
    if (err->table[0])
        jsonx_add_str(e, "table", err->table);
    if (err->column[0])
        jsonx_add_str(e, "column", err->column);
    return e;
}

char *jsonx_error_body(const struct dtx_err *err)
{
    cJSON *root = jsonx_new_object();
    char *s;

    jsonx_add(root, "error", jsonx_error_obj(err));
    s = jsonx_print(root);
    cJSON_Delete(root);
    return s;
}

cJSON *jsonx_new_object(void)
{
    return xnonnull(cJSON_CreateObject());
}

cJSON *jsonx_new_array(void)
{
    return xnonnull(cJSON_CreateArray());
}

void jsonx_add(cJSON *obj, const char *key, cJSON *item)
{
    if (!cJSON_AddItemToObject(obj, key, xnonnull(item)))
        xnonnull(NULL);
}

void jsonx_append(cJSON *array, cJSON *item)
{
    if (!cJSON_AddItemToArray(array, xnonnull(item)))
        xnonnull(NULL);
}

void jsonx_add_str(cJSON *obj, const char *key, const char *value)
{
    char *clean;

    if (utf8_invalid_at(value, strlen(value)) == strlen(value)) {
        jsonx_add(obj, key, cJSON_CreateString(value));
        return;
    }
    clean = utf8_sanitized(value); /* a path or a key echoed in a message, say */
    jsonx_add(obj, key, cJSON_CreateString(clean));
    free(clean);
}

void jsonx_add_num(cJSON *obj, const char *key, double value)
{
    jsonx_add(obj, key, cJSON_CreateNumber(value));
}

void jsonx_add_bool(cJSON *obj, const char *key, bool value)
{
    jsonx_add(obj, key, cJSON_CreateBool(value));
}

void jsonx_fmt_time(uint64_t wall_us, char *buf, size_t n)
{
    time_t secs = (time_t)(wall_us / 1000000u);
    struct tm tm;
    size_t used;

    gmtime_r(&secs, &tm);
    used = strftime(buf, n, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + used, n - used, ".%06uZ", (unsigned)(wall_us % 1000000u));
}

void jsonx_add_time(cJSON *root, const char *key, uint64_t wall_us)
{
    char buf[40];

    if (!wall_us)
        return;
    jsonx_fmt_time(wall_us, buf, sizeof(buf));
    jsonx_add_str(root, key, buf);
}
