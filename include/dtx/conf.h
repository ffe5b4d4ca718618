/*
 * conf.h - reading a JSON configuration file.
 *
 * Each daemon validates its own keys (coord_config.c, agent_config.c);
 * this module only reads and parses the file and words the errors so that
 * every bad config is reported as one line naming the file, the key and
 * what is wrong.
 */
#ifndef DTX_CONF_H
#define DTX_CONF_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/err.h"

#define CONF_MAX_BYTES (1024 * 1024)

/* An optional integer key stored as uint32_t at offset in a config struct. */
struct conf_u32 {
    const char *key;
    size_t offset;
    uint32_t def, min, max;
};

/*
 * Reads and parses path. Returns 0 and *out (a JSON object, free with
 * cJSON_Delete), or DTX_EIO / DTX_EINVAL with a message that starts with
 * "config '<path>': "; on error *out is not modified.
 */
int conf_read(const char *path, cJSON **out, struct dtx_err *err);

/*
 * Reads path and hands the parsed object to load(root, out, err); an error
 * from either is worded "config '<path>': ...". Returns 0 or the error.
 */
int conf_load(const char *path, int (*load)(const cJSON *root, void *out, struct dtx_err *err),
              void *out, struct dtx_err *err);

/* Prefixes err->msg with "config '<path>': " (for key errors found later). */
int conf_error(const char *path, struct dtx_err *err);

/* Copies s into dst (size dstsz); returns DTX_EINVAL naming key if it does not fit. */
int conf_copy(char *dst, size_t dstsz, const char *s, const char *key, struct dtx_err *err);

/* Sets every key of keys[0..n) in the struct at base (default when absent, else checked range). */
int conf_u32s(const cJSON *root, void *base, const struct conf_u32 *keys, size_t n,
              struct dtx_err *err);

/* Required key holding a node or shard name (gid.h); dst has DTX_NAME_MAX + 1 bytes. */
int conf_name(const cJSON *obj, const char *where, const char *key, char *dst, struct dtx_err *err);

/* Required "host:port" key that resolves; copied into dst. */
int conf_listen(const cJSON *obj, const char *key, char *dst, size_t dstsz, struct dtx_err *err);

/* Optional "log_level" key (default "info"); dst has 16 bytes. */
int conf_log_level(const cJSON *obj, char *dst, struct dtx_err *err);
/* "log_format": "text" (the default), "logfmt" or "json", into dst (8 bytes). */
int conf_log_format(const cJSON *obj, char *dst, struct dtx_err *err);

#endif
