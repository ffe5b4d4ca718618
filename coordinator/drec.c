/*
 * drec.c - the byte encoding of decision records (the format is at the top
 * of drec.h). Stateless: a decoder's strings live in the caller's arena.
 *
 * Decoding trusts nothing: every length is checked against the bytes
 * there are, a record of unknown type or with trailing bytes is refused,
 * and nothing is read past the end of the input.
 */
#include "dtx/drec.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>

const char *drec_type_name(enum drec_type type)
{
    switch (type) {
    case DREC_BOOT:
        return "BOOT";
    case DREC_COMMIT:
        return "COMMIT";
    case DREC_END:
        return "END";
    case DREC_OPERATOR:
        return "OPERATOR";
    case DREC_GAP:
        return "GAP";
    case DREC_HEURISTIC:
        return "HEURISTIC";
    case DREC_PRECOMMIT:
        return "PRECOMMIT";
    case DREC_PROMISE:
        return "PROMISE";
    case DREC_ACCEPT:
        return "ACCEPT";
    case DREC_LEARNED:
        return "LEARNED";
    }
    return "?";
}

/* ---- record encoding ------------------------------------------------------- */

static void put_str16(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    if (n > UINT16_MAX)
        n = UINT16_MAX;
    buf_put_le16(b, (uint16_t)n);
    buf_append(b, s ? s : "", n);
}

static void put_str32(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;

    buf_put_le32(b, (uint32_t)n);
    buf_append(b, s ? s : "", n);
}

static void encode_body(struct buf *b, const struct drec *r)
{
    switch (r->type) {
    case DREC_BOOT:
        buf_put_le64(b, r->epoch);
        buf_put_le64(b, r->wall_us);
        put_str16(b, r->node_id);
        break;
    case DREC_COMMIT:
    case DREC_PRECOMMIT:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_u8(b, r->protocol);
        put_str16(b, r->idem_key);
        buf_put_le64(b, r->req_hash);
        buf_put_le16(b, (uint16_t)r->nbranches);
        for (size_t i = 0; i < r->nbranches; i++) {
            put_str16(b, r->branches[i].shard);
            buf_put_le64(b, r->branches[i].xid);
        }
        put_str32(b, r->results);
        for (size_t i = 0; i < r->nbranches; i++)
            put_str16(b, r->branches[i].db);
        break;
    case DREC_END:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        break;
    case DREC_OPERATOR:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_u8(b, r->op_kind);
        buf_put_u8(b, r->op_commit);
        put_str16(b, r->shard);
        put_str16(b, r->who);
        put_str16(b, r->reason);
        break;
    case DREC_GAP:
        buf_put_le64(b, r->epoch);
        buf_put_le64(b, r->epoch_hi);
        buf_put_le64(b, r->wall_us);
        put_str16(b, r->shard);
        break;
    case DREC_HEURISTIC:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        put_str16(b, r->shard);
        buf_put_u8(b, r->heur_kind);
        buf_put_u8(b, r->op_commit);
        put_str16(b, r->reason);
        break;
    case DREC_PROMISE:
    case DREC_ACCEPT:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_le64(b, r->counter);
        put_str16(b, r->node);
        if (r->type == DREC_ACCEPT)
            buf_put_u8(b, r->value);
        break;
    case DREC_LEARNED:
        put_str16(b, r->gtid);
        buf_put_le64(b, r->wall_us);
        buf_put_u8(b, r->value);
        break;
    }
}

/* Appends one record (header and body) to b. */
void drec_encode(struct buf *b, const struct drec *r)
{
    size_t at;

    buf_put_u8(b, (uint8_t)r->type);
    at = b->len;
    buf_put_le32(b, 0);
    encode_body(b, r);
    put_le32((unsigned char *)b->data + at, (uint32_t)(b->len - at - 4));
}

/* ---- record decoding --------------------------------------------------------- */

struct rd {
    const unsigned char *p;
    size_t n;
    bool bad;
    struct buf *arena; /* reserved up front so pointers into it stay valid */
};

static const unsigned char *rd_take(struct rd *r, size_t n)
{
    const unsigned char *p = r->p;

    if (r->bad || r->n < n) {
        r->bad = true;
        return NULL;
    }
    r->p += n;
    r->n -= n;
    return p;
}

static uint64_t rd_u64(struct rd *r)
{
    const unsigned char *p = rd_take(r, 8);

    return p ? get_le64(p) : 0;
}

static uint8_t rd_u8(struct rd *r)
{
    const unsigned char *p = rd_take(r, 1);

    return p ? p[0] : 0;
}

static const char *rd_strn(struct rd *r, size_t n)
{
    const unsigned char *p = rd_take(r, n);
    char *s;

    if (!p)
        return NULL;
    s = r->arena->data + r->arena->len;
    memcpy(s, p, n);
    s[n] = '\0';
    r->arena->len += n + 1;
    return s;
}

static const char *rd_str16(struct rd *r)
{
    const unsigned char *p = rd_take(r, 2);

    return p ? rd_strn(r, get_le16(p)) : NULL;
}

static const char *rd_str32(struct rd *r)
{
    const unsigned char *p = rd_take(r, 4);

    return p ? rd_strn(r, get_le32(p)) : NULL;
}

static int decode_commit(struct rd *r, struct drec *out, struct drec_arena *a)
{
    const unsigned char *p;
    size_t n;

    out->gtid = rd_str16(r);
    out->wall_us = rd_u64(r);
    out->protocol = rd_u8(r);
    out->idem_key = rd_str16(r);
    out->req_hash = rd_u64(r);
    p = rd_take(r, 2);
    n = p ? get_le16(p) : 0;
    if (n > a->cap) {
        a->branches = xrealloc(a->branches, n * sizeof(*a->branches));
        a->cap = n;
    }
    for (size_t i = 0; i < n && !r->bad; i++) {
        a->branches[i].shard = rd_str16(r);
        a->branches[i].xid = rd_u64(r);
        a->branches[i].db = NULL;
    }
    out->branches = a->branches;
    out->nbranches = n;
    out->results = rd_str32(r);
    /* the databases' identities (added in 0.7: absent from older logs) */
    if (r->n > 0) {
        for (size_t i = 0; i < n && !r->bad; i++)
            a->branches[i].db = rd_str16(r); /* all of them, or a malformed record */
    }
    return r->bad ? -1 : 0;
}

int drec_decode_body(uint8_t type, const unsigned char *p, size_t n, struct drec_arena *a,
                     struct drec *out)
{
    struct rd r = {.p = p, .n = n, .bad = false, .arena = &a->strings};

    memset(out, 0, sizeof(*out));
    buf_reset(&a->strings);
    buf_reserve(&a->strings, 2 * n + 16);
    out->type = (enum drec_type)type;
    switch (type) {
    case DREC_BOOT:
        out->epoch = rd_u64(&r);
        out->wall_us = rd_u64(&r);
        out->node_id = rd_str16(&r);
        break;
    case DREC_COMMIT:
    case DREC_PRECOMMIT:
        if (decode_commit(&r, out, a) < 0)
            return -1;
        break;
    case DREC_PROMISE:
    case DREC_ACCEPT:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        out->counter = rd_u64(&r);
        out->node = rd_str16(&r);
        if (type == DREC_ACCEPT && (out->value = rd_u8(&r)) != 1 && out->value != 2)
            return -1;
        break;
    case DREC_LEARNED:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        if ((out->value = rd_u8(&r)) != 1 && out->value != 2)
            return -1;
        break;
    case DREC_END:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        break;
    case DREC_OPERATOR:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        out->op_kind = rd_u8(&r);
        out->op_commit = rd_u8(&r) != 0;
        out->shard = rd_str16(&r);
        out->who = rd_str16(&r);
        out->reason = rd_str16(&r);
        if (out->op_kind != DREC_OP_RESOLVE && out->op_kind != DREC_OP_FORGET)
            return -1;
        break;
    case DREC_GAP:
        out->epoch = rd_u64(&r);
        out->epoch_hi = rd_u64(&r);
        out->wall_us = rd_u64(&r);
        out->shard = rd_str16(&r);
        if (out->epoch_hi < out->epoch)
            return -1;
        break;
    case DREC_HEURISTIC:
        out->gtid = rd_str16(&r);
        out->wall_us = rd_u64(&r);
        out->shard = rd_str16(&r);
        out->heur_kind = rd_u8(&r);
        out->op_commit = rd_u8(&r) != 0;
        out->reason = rd_str16(&r);
        if (out->heur_kind != DREC_HEUR_MIXED && out->heur_kind != DREC_HEUR_HAZARD)
            return -1;
        break;
    default:
        return -1;
    }
    return (r.bad || r.n != 0) ? -1 : 0;
}

int drec_replay_batch(const unsigned char *p, size_t len, struct drec_arena *a,
                      drec_replay_fn replay, void *arg, uint64_t *nrec, struct dtx_err *err)
{
    size_t pos = 0;

    while (pos < len) {
        struct drec rec;
        uint32_t blen;
        int rc;

        if (len - pos < DREC_HDR || (blen = get_le32(p + pos + 1)) > len - pos - DREC_HDR)
            return dtx_err_set(err, DTX_ECORRUPT, "bad record framing at byte %zu", pos);
        if (drec_decode_body(p[pos], p + pos + DREC_HDR, blen, a, &rec) < 0)
            return dtx_err_set(err, DTX_ECORRUPT, "undecodable record of type %u at byte %zu",
                               p[pos], pos);
        rc = replay ? replay(arg, &rec, err) : 0;
        if (rc < 0)
            return rc;
        if (nrec)
            (*nrec)++;
        pos += DREC_HDR + blen;
    }
    return 0;
}

void drec_arena_release(struct drec_arena *a)
{
    buf_release(&a->strings);
    free(a->branches);
    a->branches = NULL;
    a->cap = 0;
}
