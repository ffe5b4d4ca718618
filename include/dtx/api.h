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

/* One op of a validated request; op points into the request's tree. */
struct txreq_op {
    int shard;
    cJSON *op;
};

/* A validated POST /v1/transactions body. */
struct txreq {
    cJSON *root;
    bool interactive;
    uint8_t protocol; /* 2 */
    uint32_t timeout_ms;
    const char *idem_key; /* points into root, or NULL */
    uint64_t hash;        /* of protocol and ops, to detect a reused idempotency key */
    size_t nops;
    struct txreq_op *ops;
};

/*
 * Parses and validates a transaction request against the config (shard
 * names, key routing, limits, SQL checks). Returns 0 and *out (release
 * with api_txreq_release), or DTX_EINVAL / DTX_EUNSUPPORTED with a message
 * naming the offending field; nothing is executed either way and *out is
 * then empty.
 */
int api_parse_tx(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                 struct dtx_err *err);
/* The body of POST /v1/transactions/{gtid}/ops ({"ops":[..]}), validated like the above. */
int api_parse_ops(const char *body, size_t len, const struct coord_config *cfg, struct txreq *out,
                  struct dtx_err *err);
void api_txreq_release(struct txreq *r);

/* The httpd handler; ctx is the struct coord. */
void api_handle(void *ctx, struct httpd_req *req);

/* The operators' endpoints (admin.c), called once the admin token was checked. */
struct coord;
void admin_handle(struct coord *co, struct httpd_req *req, const char *method, const char *rest);
void admin_get_transaction(struct coord *co, struct httpd_req *req, const char *gtid);
void admin_list_transactions(struct coord *co, struct httpd_req *req);

#endif
