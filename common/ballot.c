/*
 * ballot.c - ballots of three-phase commit's consensus (ballot.h).
 * Stateless.
 */
#include "dtx/ballot.h"
#include "dtx/jsonx.h"

#include <stdio.h>
#include <string.h>

int ballot_cmp(const struct ballot *a, const struct ballot *b)
{
    if (a->counter != b->counter)
        return a->counter < b->counter ? -1 : 1;
    return strcmp(a->node, b->node);
}

void ballot_initial(struct ballot *b, const char *node_id)
{
    b->counter = 0;
    ballot_node(b->node, sizeof(b->node), true, node_id);
}

void ballot_node(char *out, size_t n, bool coordinator, const char *name)
{
    snprintf(out, n, "%s:%s", coordinator ? "c" : "p", name);
}

cJSON *ballot_json(const struct ballot *b)
{
    cJSON *o = jsonx_new_object();

    jsonx_add_num(o, "counter", (double)b->counter);
    jsonx_add_str(o, "node", b->node);
    return o;
}

int ballot_from_json(const cJSON *obj, const char *key, struct ballot *b, struct dtx_err *err)
{
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(obj, key);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "counter");
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "node");

    if (!cJSON_IsObject(o) || !jsonx_is_safe_int(c) || c->valuedouble < 0 || !cJSON_IsString(n) ||
        strlen(n->valuestring) >= sizeof(b->node) || strlen(n->valuestring) < 3 ||
        n->valuestring[1] != ':' || (n->valuestring[0] != 'c' && n->valuestring[0] != 'p'))
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s' must be a ballot {\"counter\": n, \"node\": \"c:...\"|\"p:...\"}",
                           key);
    b->counter = (uint64_t)c->valuedouble;
    snprintf(b->node, sizeof(b->node), "%s", n->valuestring);
    return 0;
}

const char *ballot_value_name(enum ballot_value v)
{
    return v == BV_COMMIT ? "commit" : v == BV_ABORT ? "abort" : "none";
}

void ballot_add_state(cJSON *o, const struct ballot *promised, const struct ballot *accepted,
                      enum ballot_value value, enum ballot_value decided)
{
    jsonx_add(o, "promised", ballot_json(promised));
    if (value != BV_NONE) {
        cJSON *acc = jsonx_new_object();

        jsonx_add(acc, "ballot", ballot_json(accepted));
        jsonx_add_str(acc, "value", ballot_value_name(value));
        jsonx_add(o, "accepted", acc);
    } else {
        jsonx_add(o, "accepted", cJSON_CreateNull());
    }
    if (decided != BV_NONE)
        jsonx_add_str(o, "decided", ballot_value_name(decided));
}

int ballot_read_request(const cJSON *root, bool want_ballot, bool want_value, char *gtid,
                        struct ballot *b, enum ballot_value *v, struct dtx_err *err)
{
    const char *g = NULL, *s = NULL;
    int rc = jsonx_str(root, "", "gtid", true, &g, err);

    if (rc == 0 && !gid_parse_gtid(g, NULL, NULL, NULL))
        rc = dtx_err_set(err, DTX_EINVAL, "'%s' is not a gtid", g);
    if (rc == 0 && want_ballot)
        rc = ballot_from_json(root, "ballot", b, err);
    if (rc == 0 && want_value)
        rc = jsonx_str(root, "", "value", true, &s, err);
    if (rc == 0 && want_value && (*v = ballot_value_parse(s)) == BV_NONE)
        rc = dtx_err_set(err, DTX_EINVAL, "'value' must be \"commit\" or \"abort\"");
    if (rc == 0)
        snprintf(gtid, DTX_GTID_MAX + 1, "%s", g);
    return rc;
}

enum ballot_value ballot_value_parse(const char *name)
{
    if (name && strcmp(name, "commit") == 0)
        return BV_COMMIT;
    if (name && strcmp(name, "abort") == 0)
        return BV_ABORT;
    return BV_NONE;
}
