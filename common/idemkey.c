/*
 * idemkey.c - a client's idempotency keys in its own namespace, and the
 * client in the decision log's records (idemkey.h).
 *
 * Stateless.
 */
#include "dtx/idemkey.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>

#define SEP '\x1f' /* the unit separator: no key holds it */

char *idemkey_compose(const char *client, const char *key)
{
    if (!client || !*client)
        return key ? xstrdup(key) : NULL;
    return xasprintf("%c%s%c%s", SEP, client, SEP, key ? key : "");
}

void idemkey_split(const char *field, char **client, const char **key)
{
    const char *end;

    *client = NULL;
    *key = field && *field ? field : NULL;
    if (!field || field[0] != SEP || !(end = strchr(field + 1, SEP)))
        return;
    *client = xstrndup(field + 1, (size_t)(end - field - 1));
    *key = end[1] ? end + 1 : NULL;
}

const char *idemkey_shown(const char *field)
{
    const char *end;

    if (!field || field[0] != SEP || !(end = strchr(field + 1, SEP)))
        return field;
    return end[1] ? end + 1 : NULL;
}
