/*
 * msgcheck.h - one peer frame through msg_parse (msg.c), as the
 * coordinator (pc.c, links.c) and the participant (peer.c) parse every
 * frame they receive, with what msg.h promises checked: a parsed message
 * has a known type and the fields that type requires, its strings are C
 * strings inside the parsed tree, its RESULTS trailer lies inside the
 * frame and msg_result finds each result inside the trailer; a refused
 * frame has a DTX_EPROTO error with a message. Shared by fuzz_msg.c (one
 * frame) and fuzz_stream.c (frames cut from a byte stream).
 */
#ifndef DTX_TEST_MSGCHECK_H
#define DTX_TEST_MSGCHECK_H

#include "dtx/msg.h"

#include "fuzz.h"

#include <string.h>

/* Every result in the trailer (at most one per byte of it) lies inside it. */
static inline void msgcheck_trailer(const struct msg *m)
{
    const char *p;
    size_t n, k;

    for (k = 0; k <= m->trailer_len && msg_result(m->trailer, m->trailer_len, k, &p, &n); k++)
        FUZZ_CHECK(p >= m->trailer && n <= m->trailer_len && p + n <= m->trailer + m->trailer_len);
    FUZZ_CHECK(k <= m->trailer_len);
}

static inline void msgcheck_accepted(const struct msg *m, const char *data, size_t len)
{
    FUZZ_CHECK(m->type >= MSG_HELLO && m->type <= MSG_FORGET);
    FUZZ_CHECK(m->type == MSG_HELLO || (m->gtid && strlen(m->gtid) < len));
    FUZZ_CHECK(m->type != MSG_HELLO || (m->name && strlen(m->name) < len));
    FUZZ_CHECK(!m->db || strlen(m->db) < len);
    FUZZ_CHECK(!m->value || strlen(m->value) < len);
    FUZZ_CHECK((m->type != MSG_PREPARE && m->type != MSG_ONE_PHASE && m->type != MSG_EXEC) ||
               cJSON_IsArray(m->ops));
    FUZZ_CHECK(m->type != MSG_VOTE || m->vote != VOTE_NONE);
    FUZZ_CHECK(m->type != MSG_VOTE || m->vote != VOTE_YES || m->xid != 0);
    FUZZ_CHECK((m->type != MSG_OUTCOME && m->type != MSG_ACK) || m->outcome != OUTCOME_NONE);
    FUZZ_CHECK(m->type != MSG_ACCEPT || ballot_value_parse(m->value) != BV_NONE);
    FUZZ_CHECK(strlen(m->ballot.node) < sizeof(m->ballot.node));
    FUZZ_CHECK(strlen(msg_vote_name(m->vote)) < 16 && strlen(msg_outcome_name(m->outcome)) < 16);
    FUZZ_CHECK(strlen(m->err.msg) < sizeof(m->err.msg));
    FUZZ_CHECK(m->trailer >= data && m->trailer + m->trailer_len == data + len);
    msgcheck_trailer(m);
}

/* Parses one frame (len bytes at data) and checks the result. */
static inline void msgcheck_frame(const char *data, size_t len)
{
    struct dtx_err err;
    struct msg m;

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) == 0) {
        msgcheck_accepted(&m, data, len);
        msg_release(&m);
        return;
    }
    FUZZ_CHECK(err.code == DTX_EPROTO && err.msg[0] != '\0');
}

#endif
