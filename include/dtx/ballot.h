/*
 * ballot.h - ballots of three-phase commit's consensus (docs/protocol.md,
 * "Three-phase commit"): single-decree Paxos on the value commit or abort,
 * among the coordinator and the transaction's participants.
 *
 * A ballot is (counter, node), ordered by counter, then by node name
 * (bytewise). The coordinator's proposal is the initial ballot (0, its
 * node) and needs no promises; a recovery leader takes (n, itself) with n
 * above every counter it has promised. Node names are "c:<node_id>" for a
 * coordinator and "p:<shard>" for a participant, so no two acceptors ever
 * share one.
 */
#ifndef DTX_BALLOT_H
#define DTX_BALLOT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/err.h"
#include "dtx/gid.h"

#define BALLOT_NODE_MAX (DTX_NAME_MAX + 3) /* "c:" or "p:", the name, NUL */
/*
 * The shards of one three-phase commit transaction at most: a recovery round
 * asks every acceptor (these and the coordinator), and counts its majority
 * over all of them. The coordinator refuses a transaction over more.
 */
#define BALLOT_MAX_SHARDS 64

struct ballot {
    uint64_t counter;
    char node[BALLOT_NODE_MAX];
};

/* What a ballot may carry. */
enum ballot_value { BV_NONE = 0, BV_COMMIT, BV_ABORT };

/* <0, 0, >0 as a is below, equal to, above b. */
int ballot_cmp(const struct ballot *a, const struct ballot *b);
/* The coordinator's initial ballot (0, "c:<node_id>"). */
void ballot_initial(struct ballot *b, const char *node_id);
/* A participant's or coordinator's name in ballots: "p:<shard>", "c:<node_id>". */
void ballot_node(char *out, size_t n, bool coordinator, const char *name);

/* {"counter": n, "node": "..."}; the counter as a number (< 2^53). */
cJSON *ballot_json(const struct ballot *b);
/* Reads key of obj as a ballot; DTX_EINVAL with err naming key when it is not one. */
int ballot_from_json(const cJSON *obj, const char *key, struct ballot *b, struct dtx_err *err);

const char *ballot_value_name(enum ballot_value v);
/*
 * Adds an acceptor's state to o as both sides answer it: "promised", "accepted"
 * ({"ballot", "value"}, or null before any), and "decided" once known.
 */
void ballot_add_state(cJSON *o, const struct ballot *promised, const struct ballot *accepted,
                      enum ballot_value value, enum ballot_value decided);
/*
 * Reads the body of a request to an acceptor endpoint, on either side: "gtid" (required,
 * copied to gtid, DTX_GTID_MAX + 1 bytes), "ballot" into *b when want_ballot, "value" into
 * *v when want_value. 0, or DTX_EINVAL with err naming what is wrong.
 */
int ballot_read_request(const cJSON *root, bool want_ballot, bool want_value, char *gtid,
                        struct ballot *b, enum ballot_value *v, struct dtx_err *err);
/* The value called name ("commit", "abort"), or BV_NONE. */
enum ballot_value ballot_value_parse(const char *name);

#endif
