/*
 * drec.h - decision records: what the coordinator makes durable, whatever
 * store keeps them (dstore.h), and their byte encoding.
 *
 * Presumed abort: only commit decisions are recorded. A transaction with
 * no COMMIT record is aborted by definition, so aborts need no record. A
 * COMMIT record is durable before any participant or client hears of the
 * decision; an END record (not forced) says every participant
 * acknowledged, so recovery need not drive it again. BOOT carries the
 * epoch of a coordinator start (gtids are node-epoch-seq, so an epoch is
 * never reused); OPERATOR an operator's decision (dtxctl resolve/forget);
 * GAP epochs this log does not know although they were used (a
 * participant had seen them: the log was restored from an older copy, or
 * lost): no gtid of theirs is ever presumed aborted; HEURISTIC what a
 * shard did against the decision (mixed), or that its branch is gone and
 * its fate cannot be proven (hazard).
 *
 * Encoding (integers little-endian), as stored by the file log (dlog.h):
 *   0  type     u8 (enum drec_type)
 *   1  len      u32, body bytes
 *   5  body:
 *      BOOT    epoch u64 | wall_us u64 | node_id str16
 *      COMMIT  gtid str16 | wall_us u64 | protocol u8 | idem_key str16 |
 *              req_hash u64 | nbranches u16 | { shard str16 | xid u64 } * n |
 *              results str32 | { db str16 } * n (absent in logs before 0.7)
 *      END     gtid str16 | wall_us u64
 *      OPERATOR gtid str16 | wall_us u64 | kind u8 (1 resolve, 2 forget) |
 *              commit u8 (1 commit, 0 abort) | shard str16 ("" = every shard) |
 *              who str16 | reason str16
 *      GAP     epoch u64 (first unknown) | epoch_hi u64 (last) | wall_us u64 |
 *              shard str16 (whose participant had seen epoch_hi)
 *      HEURISTIC gtid str16 | wall_us u64 | shard str16 | kind u8 (1 mixed,
 *              2 hazard) | decision u8 (1 commit, 0 abort) | detail str16
 *      PRECOMMIT as COMMIT (protocol 3): the pre-commit this coordinator accepted
 *      PROMISE gtid str16 | wall_us u64 | counter u64 | node str16
 *      ACCEPT  gtid str16 | wall_us u64 | counter u64 | node str16 | value u8 (1 commit, 2 abort)
 *      LEARNED gtid str16 | wall_us u64 | value u8 (1 commit, 2 abort)
 *   str16 = u16 length + bytes; str32 = u32 length + bytes (no NUL).
 */
#ifndef DTX_DREC_H
#define DTX_DREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/err.h"

enum drec_type {
    DREC_BOOT = 1,      /* a coordinator start: its epoch */
    DREC_COMMIT = 2,    /* a commit decision */
    DREC_END = 3,       /* every participant acknowledged a COMMIT */
    DREC_OPERATOR = 4,  /* an operator's decision (dtxctl resolve / forget) */
    DREC_GAP = 5,       /* epochs used but unknown to this log */
    DREC_HEURISTIC = 6, /* a shard's outcome differs from the decision, or cannot be proven */
    /* three-phase commit: this coordinator as an acceptor (docs/protocol.md) */
    DREC_PRECOMMIT = 7, /* it accepted (b0, commit) for a transaction; a COMMIT's body */
    DREC_PROMISE = 8,   /* it promised a recovery leader's ballot */
    DREC_ACCEPT = 9,    /* it accepted a recovery leader's (ballot, value) */
    DREC_LEARNED = 10,  /* the participants decided a transaction without it */
};

/* HEURISTIC records: what the shard did. */
enum drec_heur_kind {
    DREC_HEUR_MIXED = 1,  /* it did the opposite of the decision */
    DREC_HEUR_HAZARD = 2, /* its branch is gone and what became of it cannot be proven */
};

/* OPERATOR records: what the operator did. */
enum drec_op_kind {
    DREC_OP_RESOLVE = 1, /* a (heuristic) decision: commit or abort */
    DREC_OP_FORGET = 2,  /* gave up on a shard's branch of a decided transaction */
};

struct drec_branch {
    const char *shard;
    uint64_t xid;   /* the branch's PostgreSQL transaction id (xid8) */
    const char *db; /* the identity of the database it prepared in (NULL: not known) */
};

/*
 * One record. Strings may be NULL for "none"; when a record is decoded the
 * pointers point into the decoder's arena and are valid until the next
 * decode with that arena.
 */
struct drec {
    enum drec_type type;
    uint64_t wall_us;     /* wall-clock time the record was made */
    uint64_t epoch;       /* BOOT; GAP: the first unknown epoch */
    uint64_t epoch_hi;    /* GAP: the last unknown epoch */
    const char *node_id;  /* BOOT */
    const char *gtid;     /* COMMIT, END, OPERATOR, HEURISTIC */
    uint8_t protocol;     /* COMMIT: 2 */
    const char *idem_key; /* COMMIT: the client's idempotency key */
    uint64_t req_hash;    /* COMMIT: hash of the request, to refuse a reused key */
    const char *results;  /* COMMIT: the client's answer (JSON), kept for idempotent replays */
    size_t nbranches;     /* COMMIT: the prepared branches to commit */
    const struct drec_branch *branches;
    uint8_t op_kind;   /* OPERATOR: enum drec_op_kind */
    bool op_commit;    /* OPERATOR, HEURISTIC: the decision is commit (else abort) */
    uint8_t heur_kind; /* HEURISTIC: enum drec_heur_kind */
    uint64_t counter;  /* PROMISE, ACCEPT: the ballot's counter */
    const char *node;  /* PROMISE, ACCEPT: the ballot's node */
    uint8_t value;     /* ACCEPT, LEARNED: enum ballot_value */
    const char
        *shard;      /* OPERATOR: the shard it concerns (NULL or "": every shard); GAP; HEURISTIC */
    const char *who; /* OPERATOR: who asked for it */
    const char *reason; /* OPERATOR: why; HEURISTIC: what the shard said */
};

/* Called for each record in order while a store is read. Return 0 to go on. */
typedef int (*drec_replay_fn)(void *arg, const struct drec *rec, struct dtx_err *err);

/* Appends one encoded record (header and body) to b. */
void drec_encode(struct buf *b, const struct drec *rec);

/* What a decoder keeps between records: strings and branch arrays live here. */
struct drec_arena {
    struct buf strings;
    struct drec_branch *branches;
    size_t cap;
};
void drec_arena_release(struct drec_arena *a);

/* Bytes in front of a record's body: type u8 and body length u32. */
#define DREC_HDR 5

/*
 * Decodes the body (n bytes at p) of a record of the given type. Returns 0
 * with *out filled (its strings point into a), or -1 when the body is not
 * one well-formed record of that type. Never reads past p + n.
 */
int drec_decode_body(uint8_t type, const unsigned char *p, size_t n, struct drec_arena *a,
                     struct drec *out);

/*
 * Decodes a batch (len bytes of records as drec_encode wrote them, back to
 * back) and hands each record to replay (NULL: decode only), in order.
 * Returns 0; DTX_ECORRUPT when a record is badly framed or undecodable, err
 * saying which ("... at byte N" of the batch: the caller says where the
 * batch is); or replay's own error. *nrec (may be NULL) counts the records
 * handed over.
 */
int drec_replay_batch(const unsigned char *p, size_t len, struct drec_arena *a,
                      drec_replay_fn replay, void *arg, uint64_t *nrec, struct dtx_err *err);

/* Name of a record type ("BOOT", "COMMIT", "END", "OPERATOR", or "?"). */
const char *drec_type_name(enum drec_type type);

#endif
