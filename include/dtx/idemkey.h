/*
 * idemkey.h - whose a transaction is, and its idempotency key in that
 * client's own namespace, as the coordinator keeps them and as the
 * decision log carries them.
 *
 * A client is "" (the shared client_token, or a coordinator without
 * tokens) or a named client (auth.h's auth.clients). Two named clients
 * never meet each other's keys: "k" of client "orders" is kept as the slot
 * "\x1forders\x1fk", while "k" of the shared token is kept as "k" itself,
 * as before named clients existed. A key holds no control character
 * (api.c refuses one), so no key of one client can be another's slot.
 *
 * A COMMIT (or PRECOMMIT) record's idem_key field (drec.h) is that slot,
 * or for a named client's transaction without a key "\x1forders\x1f": the
 * record names its client either way. A field without the leading \x1f
 * (a key, or nothing) is the shared token's, in older records too: they
 * were written before named clients existed.
 *
 * Stateless.
 */
#ifndef DTX_IDEMKEY_H
#define DTX_IDEMKEY_H

#include <stdbool.h>

/* The field for client (NULL or "": the shared one) and key (NULL: none); malloc'd, or NULL. */
char *idemkey_compose(const char *client, const char *key);

/*
 * Splits a record's field: *client gets the named client (malloc'd) or
 * NULL; *key points at the key inside field, or is NULL for none.
 */
void idemkey_split(const char *field, char **client, const char **key);

/* The client's own key in a field or slot, as the client gave it (NULL for none). */
const char *idemkey_shown(const char *field);

#endif
