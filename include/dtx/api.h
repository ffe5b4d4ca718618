/*
 * api.h - the coordinator's HTTP API: routes, request validation, and the
 * mapping of every outcome to the contract's status codes and bodies.
 */
#ifndef DTX_API_H
#define DTX_API_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/coord_config.h"
#include "dtx/err.h"
#include "dtx/httpd.h"
#include "dtx/txreq.h"

/*
 * Parses and validates a transaction request against the config (shard
 * names, key routing, limits, SQL checks). Returns 0 and *out (release
 * with api_txreq_release), or DTX_EINVAL with a message
 * naming the offending field; nothing is executed either way and *out is
 * then empty.
 */
int api_parse_tx(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                 struct dtx_err *err);
/* The body of POST /v1/transactions/{gtid}/ops ({"ops":[..]}), validated like the above. */
int api_parse_ops(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                  struct dtx_err *err);
void api_txreq_release(struct txreq *r);
struct tx;
/* DTX_EINVAL when tx (NULL: a new one) with r's ops would be three-phase commit over more
 * shards than BALLOT_MAX_SHARDS; 0 otherwise. */
int api_check_3pc_shards(const struct tx *tx, const struct txreq *r, struct dtx_err *err);

struct coord;
struct admin;

struct dstore_pg_claim;

/*
 * What the HTTP handler serves: the engine and the operators' endpoints;
 * or, while co is NULL, a standby waiting for its node's lease (claim):
 * /healthz and /metrics say so, everything else answers 503.
 */
struct api_ctx {
    struct coord *co;
    struct admin *admin;
    const struct coord_config *cfg;
    struct dstore_pg_claim *claim;
};

/* The httpd handler; ctx is a struct api_ctx. */
void api_handle(void *ctx, struct httpd_req *req);

#endif
