/*
 * msg.c - parsing and building peer-stream messages. Stateless.
 */
#include "dtx/msg.h"
#include "dtx/jsonx.h"

#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[] = {
    [MSG_HELLO] = "hello",       [MSG_PREPARE] = "prepare", [MSG_ONE_PHASE] = "one_phase",
    [MSG_COMMIT] = "commit",     [MSG_ABORT] = "abort",     [MSG_VOTE] = "vote",
    [MSG_OUTCOME] = "outcome",   [MSG_ACK] = "ack",         [MSG_EXEC] = "exec",
    [MSG_EXECUTED] = "executed", [MSG_ACCEPT] = "accept",   [MSG_ACCEPTED] = "accepted",
    [MSG_FORGET] = "forget",
};
static const char *const vote_names[] = {"", "yes", "no", "readonly"};
static const char *const outcome_names[] = {"", "committed", "aborted", "unknown"};

#define NTYPES (sizeof(type_names) / sizeof(type_names[0]))

const char *msg_vote_name(enum msg_vote v)
{
    return v <= VOTE_READONLY ? vote_names[v] : "?";
}

const char *msg_outcome_name(enum msg_outcome o)
{
    return o <= OUTCOME_UNKNOWN ? outcome_names[o] : "?";
}

static int lookup(const char *s, const char *const *names, int n)
{
    for (int i = 1; s && i < n; i++) {
        if (names[i] && strcmp(s, names[i]) == 0)
            return i;
    }
    return 0;
}

static int parse_xid(const cJSON *root, uint64_t *xid, struct dtx_err *err)
{
    const char *s = NULL;
    char *end;

    if (jsonx_str(root, "", "xid", false, &s, err) < 0)
        return DTX_EPROTO;
    if (!s)
        return 0;
    *xid = strtoull(s, &end, 10);
    if (*end != '\0' || *s == '\0')
        return dtx_err_set(err, DTX_EPROTO, "message has a malformed xid '%s'", s);
    return 0;
}

/* Copies obj[key], when it is a string, into the n bytes at out (cut to fit). */
static void copy_str(const cJSON *obj, const char *key, char *out, size_t n)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    if (cJSON_IsString(v))
        snprintf(out, n, "%s", v->valuestring);
}

static void parse_error(const cJSON *root, struct dtx_err *e)
{
    const cJSON *obj = cJSON_GetObjectItemCaseSensitive(root, "error");
    const cJSON *v;

    dtx_err_clear(e);
    if (!cJSON_IsObject(obj))
        return;
    v = cJSON_GetObjectItemCaseSensitive(obj, "code");
    e->code = cJSON_IsString(v) ? dtx_err_from_name(v->valuestring) : 0;
    if (!e->code)
        e->code = DTX_EPROTO;
    copy_str(obj, "message", e->msg, sizeof(e->msg));
    copy_str(obj, "sqlstate", e->sqlstate, sizeof(e->sqlstate));
    copy_str(obj, "detail", e->detail, sizeof(e->detail));
    copy_str(obj, "hint", e->hint, sizeof(e->hint));
    copy_str(obj, "constraint", e->constraint, sizeof(e->constraint));
    copy_str(obj, "table", e->table, sizeof(e->table));
    copy_str(obj, "column", e->column, sizeof(e->column));
    v = cJSON_GetObjectItemCaseSensitive(obj, "op");
    /* an index into the request; any other number is no op (converting it to int is undefined) */
    if (jsonx_is_safe_int(v) && v->valuedouble >= 0 && v->valuedouble <= INT_MAX)
        e->op = (int)v->valuedouble;
}

/* Three-phase commit's fields: "protocol", "peers", "ballot"/"promised", "value", "ok". */
static int parse_3pc(struct msg *m, struct dtx_err *err)
{
    const cJSON *root = m->root;
    int64_t protocol = 2;

    if (jsonx_int(root, "", "protocol", false, 2, 3, &protocol, err) < 0 ||
        jsonx_str(root, "", "value", false, &m->value, err) < 0 ||
        jsonx_bool(root, "", "ok", false, &m->ok, err) < 0)
        return DTX_EPROTO;
    m->three_pc = protocol == 3;
    m->peers = cJSON_GetObjectItemCaseSensitive(root, "peers");
    if (m->type == MSG_ACCEPT && ballot_from_json(root, "ballot", &m->ballot, err) < 0)
        return DTX_EPROTO;
    if (m->type == MSG_ACCEPTED && ballot_from_json(root, "promised", &m->ballot, err) < 0)
        return DTX_EPROTO;
    if (m->type == MSG_ACCEPT && ballot_value_parse(m->value) == BV_NONE)
        return dtx_err_set(err, DTX_EPROTO, "accept message without a value");
    if (m->three_pc && m->type == MSG_PREPARE && !m->interactive && !cJSON_IsObject(m->peers))
        return dtx_err_set(err, DTX_EPROTO, "3pc prepare message without its peers");
    return 0;
}

/* A request id or trace context safe to log and pass on: 1..max of [A-Za-z0-9._:-]. */
static bool trace_field_ok(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return false;
    for (; *s; s++) {
        if (!isalnum((unsigned char)*s) && !strchr("._:-", *s))
            return false;
    }
    return true;
}

/* obj's string key when trace_field_ok, else NULL. */
static const char *trace_field(const cJSON *obj, const char *key, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

    return cJSON_IsString(v) && trace_field_ok(v->valuestring, max) ? v->valuestring : NULL;
}

static int parse_fields(struct msg *m, struct dtx_err *err)
{
    const cJSON *root = m->root;
    const char *s = NULL;
    int64_t n = 0;
    int rc = 0;

    /* only for the logs: a bad one (not a string, too long, odd bytes) is dropped, never
     * worth refusing a message for */
    m->request_id = trace_field(root, "request_id", 128);
    m->traceparent = trace_field(root, "traceparent", 55);
    if (jsonx_str(root, "", "gtid", false, &m->gtid, err) < 0 ||
        jsonx_int(root, "", "timeout_ms", false, 0, UINT32_MAX, &n, err) < 0 ||
        jsonx_int(root, "", "epoch", false, 0, INT64_MAX, (int64_t *)&m->epoch, err) < 0)
        return DTX_EPROTO;
    m->timeout_ms = (uint32_t)n;
    n = 0;
    if (jsonx_int(root, "", "idle_ms", false, 0, UINT32_MAX, &n, err) < 0)
        return DTX_EPROTO;
    m->idle_ms = (uint32_t)n;
    if (jsonx_bool(root, "", "interactive", false, &m->interactive, err) < 0 ||
        jsonx_bool(root, "", "takes_forget", false, &m->takes_forget, err) < 0)
        return DTX_EPROTO;
    if (jsonx_str(root, "", "shard", false, &m->name, err) < 0 ||
        (!m->name && jsonx_str(root, "", "node", false, &m->name, err) < 0))
        return DTX_EPROTO;
    rc = parse_xid(root, &m->xid, err);
    if (rc < 0)
        return rc;
    if (jsonx_str(root, "", "db", false, &m->db, err) < 0)
        return DTX_EPROTO;
    if (jsonx_str(root, "", "vote", false, &s, err) < 0)
        return DTX_EPROTO;
    m->vote = (enum msg_vote)lookup(s, vote_names, 4);
    s = NULL;
    if (jsonx_str(root, "", "outcome", false, &s, err) < 0)
        return DTX_EPROTO;
    m->outcome = (enum msg_outcome)lookup(s, outcome_names, 4);
    m->ops = cJSON_GetObjectItemCaseSensitive(root, "ops");
    parse_error(root, &m->err);
    return parse_3pc(m, err);
}

static int check_required(const struct msg *m, struct dtx_err *err)
{
    bool about_tx = m->type != MSG_HELLO;

    if (about_tx && !m->gtid)
        return dtx_err_set(err, DTX_EPROTO, "%s message without a gtid", type_names[m->type]);
    if ((m->type == MSG_PREPARE || m->type == MSG_ONE_PHASE || m->type == MSG_EXEC) &&
        !cJSON_IsArray(m->ops))
        return dtx_err_set(err, DTX_EPROTO, "%s message without ops", type_names[m->type]);
    if (m->type == MSG_VOTE && m->vote == VOTE_NONE)
        return dtx_err_set(err, DTX_EPROTO, "vote message without a valid vote");
    /* The COMMIT record names each yes-voter by its xid; without one it would be left out. */
    if (m->type == MSG_VOTE && m->vote == VOTE_YES && m->xid == 0)
        return dtx_err_set(err, DTX_EPROTO, "yes vote without the branch's xid");
    if ((m->type == MSG_OUTCOME || m->type == MSG_ACK) && m->outcome == OUTCOME_NONE)
        return dtx_err_set(err, DTX_EPROTO, "%s message without a valid outcome",
                           type_names[m->type]);
    if (m->type == MSG_HELLO && !m->name)
        return dtx_err_set(err, DTX_EPROTO, "hello message without a name");
    return 0;
}

int msg_parse(const char *data, size_t len, struct msg *out, struct dtx_err *err)
{
    struct msg m;
    const char *t = NULL, *end = NULL;
    int rc;

    memset(&m, 0, sizeof(m));
    dtx_err_clear(&m.err);
    m.root = len ? cJSON_ParseWithLengthOpts(data, len, &end, 0) : NULL;
    if (!m.root || !end || end < data || end > data + len) {
        cJSON_Delete(m.root);
        return dtx_err_set(err, DTX_EPROTO, "peer sent a frame that is not JSON");
    }
    m.trailer = end;
    m.trailer_len = len - (size_t)(end - data);
    rc = jsonx_str(m.root, "", "t", true, &t, err) < 0 ? DTX_EPROTO : 0;
    if (rc == 0) {
        m.type = (enum msg_type)lookup(t, type_names, (int)NTYPES);
        if (!m.type)
            rc = dtx_err_set(err, DTX_EPROTO, "peer sent a message of unknown type '%s'", t);
    }
    if (rc == 0)
        rc = parse_fields(&m, err);
    if (rc == 0)
        rc = check_required(&m, err);
    if (rc < 0) {
        cJSON_Delete(m.root);
        if (err)
            err->code = DTX_EPROTO;
        return DTX_EPROTO;
    }
    *out = m;
    return 0;
}

void msg_release(struct msg *m)
{
    cJSON_Delete(m->root);
    m->root = NULL;
}

void msg_results_init(struct msg_results *r, const char *trailer, size_t len)
{
    r->s = trailer;
    r->end = trailer + len;
    r->k = 0;
}

bool msg_results_next(struct msg_results *r, const char **p, size_t *n)
{
    const char *start = r->s ? memchr(r->s, '\n', (size_t)(r->end - r->s)) : NULL;
    const char *stop;

    if (!start)
        return false;
    start++;
    stop = memchr(start, '\n', (size_t)(r->end - start));
    if (!stop)
        stop = r->end;
    *p = start;
    *n = (size_t)(stop - start);
    r->s = stop;
    r->k++;
    return true;
}

bool msg_result(const char *trailer, size_t len, size_t k, const char **p, size_t *n)
{
    struct msg_results r;

    msg_results_init(&r, trailer, len);
    while (msg_results_next(&r, p, n)) {
        if (r.k == k + 1)
            return true;
    }
    return false;
}

cJSON *msg_new(enum msg_type type, const char *gtid)
{
    cJSON *m = jsonx_new_object();

    jsonx_add_str(m, "t", type_names[type]);
    if (gtid)
        jsonx_add_str(m, "gtid", gtid);
    return m;
}

void msg_add_xid(cJSON *m, uint64_t xid)
{
    char s[24];

    snprintf(s, sizeof(s), "%" PRIu64, xid);
    jsonx_add_str(m, "xid", s);
}

void msg_add_error(cJSON *m, const struct dtx_err *err)
{
    jsonx_add(m, "error", jsonx_error_obj(err));
}
