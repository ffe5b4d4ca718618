/*
 * conf.c - reading and parsing configuration files. Stateless.
 */
#include "dtx/conf.h"
#include "dtx/addr.h"
#include "dtx/buf.h"
#include "dtx/gid.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int conf_error(const char *path, struct dtx_err *err)
{
    return dtx_err_prefix(err, "config '%s'", path);
}

static int read_all(const char *path, struct buf *b, struct dtx_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not open config '%s': %s", path, strerror(errno));
    for (;;) {
        ssize_t n;

        buf_reserve(b, 4096);
        n = read(fd, b->data + b->len, b->cap - b->len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;

            close(fd);
            return dtx_err_set(err, DTX_EIO, "could not read config '%s': %s", path, strerror(e));
        }
        if (n == 0)
            break;
        b->len += (size_t)n;
        if (b->len > CONF_MAX_BYTES) {
            close(fd);
            return dtx_err_set(err, DTX_EINVAL, "config '%s': file is larger than %d bytes", path,
                               CONF_MAX_BYTES);
        }
    }
    close(fd);
    return 0;
}

int conf_read(const char *path, cJSON **out, struct dtx_err *err)
{
    struct buf b = BUF_INIT;
    cJSON *root = NULL;
    int rc;

    rc = read_all(path, &b, err);
    if (rc < 0)
        goto out;
    rc = jsonx_parse(b.data ? b.data : "", b.len, &root, err);
    if (rc < 0) {
        conf_error(path, err);
        goto out;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        rc = dtx_err_set(err, DTX_EINVAL, "config '%s': the top level must be a JSON object", path);
        goto out;
    }
    *out = root;
out:
    buf_release(&b);
    return rc;
}

int conf_load(const char *path, int (*load)(const cJSON *root, void *out, struct dtx_err *err),
              void *out, struct dtx_err *err)
{
    cJSON *root = NULL;
    int rc = conf_read(path, &root, err);

    if (rc < 0)
        return rc;
    rc = load(root, out, err);
    cJSON_Delete(root);
    return rc < 0 ? conf_error(path, err) : 0;
}

int conf_copy(char *dst, size_t dstsz, const char *s, const char *key, struct dtx_err *err)
{
    size_t n = strlen(s);

    if (n >= dstsz)
        return dtx_err_set(err, DTX_EINVAL, "'%s' is longer than %zu characters", key, dstsz - 1);
    memcpy(dst, s, n + 1);
    return 0;
}

int conf_u32s(const cJSON *root, void *base, const struct conf_u32 *keys, size_t n,
              struct dtx_err *err)
{
    for (size_t i = 0; i < n; i++) {
        int64_t v = keys[i].def;
        int rc = jsonx_int(root, "", keys[i].key, false, keys[i].min, keys[i].max, &v, err);

        if (rc < 0)
            return rc;
        *(uint32_t *)(void *)((char *)base + keys[i].offset) = (uint32_t)v;
    }
    return 0;
}

int conf_name(const cJSON *obj, const char *where, const char *key, char *dst, struct dtx_err *err)
{
    const char *s = NULL;
    int rc = jsonx_str(obj, where, key, true, &s, err);

    if (rc < 0)
        return rc;
    if (!gid_name_ok(s))
        return dtx_err_set(err, DTX_EINVAL, "'%s%s%s' must be 1-%d of [A-Za-z0-9_-]", where,
                           *where ? "." : "", key, DTX_NAME_MAX);
    strcpy(dst, s);
    return 0;
}

int conf_listen(const cJSON *obj, const char *key, char *dst, size_t dstsz, struct dtx_err *err)
{
    const char *s = NULL;
    struct addr a;
    int rc = jsonx_str(obj, "", key, true, &s, err);

    if (rc == 0)
        rc = conf_copy(dst, dstsz, s, key, err);
    if (rc == 0 && addr_parse(s, &a, err) < 0)
        rc = dtx_err_prefix(err, "'%s'", key);
    return rc;
}

int conf_log_level(const cJSON *obj, char *dst, struct dtx_err *err)
{
    const char *level = "info";
    int rc = jsonx_str(obj, "", "log_level", false, &level, err);

    if (rc < 0)
        return rc;
    if (log_level_parse(level) < 0)
        return dtx_err_set(err, DTX_EINVAL, "'log_level' must be debug, info, warn or error");
    snprintf(dst, 16, "%s", level);
    return 0;
}

int conf_log_format(const cJSON *obj, char *dst, struct dtx_err *err)
{
    const char *format = "text";
    int rc = jsonx_str(obj, "", "log_format", false, &format, err);

    if (rc < 0)
        return rc;
    if (log_format_parse(format) < 0)
        return dtx_err_set(err, DTX_EINVAL, "'log_format' must be text, logfmt or json");
    snprintf(dst, 8, "%s", format);
    return 0;
}
