/*
 * txreq.h - a validated transaction request, as the API layer (api.c)
 * hands it to the coordinator engine (coord.h). Nothing in it has run
 * yet; every field was checked against the config.
 */
#ifndef DTX_TXREQ_H
#define DTX_TXREQ_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One op of a validated request; op points into the request's tree. */
struct txreq_op {
    int shard;
    cJSON *op;
};

/* A validated POST /v1/transactions (or /ops) body. */
struct txreq {
    cJSON *root;
    bool interactive;
    uint8_t protocol; /* 2 */
    uint32_t timeout_ms;
    const char *client;   /* whose it is (tx.h: tx_params.client); NULL: the admin's call */
    const char *idem_key; /* points into root, or NULL */
    uint64_t hash;        /* of protocol and ops, to detect a reused idempotency key */
    size_t nops;
    struct txreq_op *ops;
};

#endif
