/*
 * dstore_pg.h - the decision store on PostgreSQL (dstore.h): a
 * coordinator node's decision records in a database the operator
 * replicates (a synchronous standby), so that losing the coordinator's
 * machine loses no decision and another process of the node can take
 * over. The schema is sql/store/ (schema dtx_store), created at first use.
 *
 * One process of a node is active at a time: it holds the node's lease
 * (dtx_store.leases), under a term that every takeover raises. The claim
 * (dstore_pg_claim_*) is how a process waits for the lease: at start, and
 * as a standby while another process holds it. The store
 * (dstore_pg_open) is opened by the process that got it, for its term: it
 * reads the records, renews the lease every lease_ms / 3, and writes every
 * group commit with one statement that is refused unless the term still
 * holds the lease. A store that cannot renew in time, or whose write was
 * refused or lost, fails for good (on_failed): its process must step down.
 */
#ifndef DTX_DSTORE_PG_H
#define DTX_DSTORE_PG_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stdint.h>

#include "dtx/drec.h"
#include "dtx/dstore.h"
#include "dtx/err.h"
#include "dtx/ev.h"

struct dstore_pg_opts {
    const char *conninfo; /* libpq connection string of the store's database */
    const char *node;     /* the coordinator's node_id */
    const char *holder;   /* this process, as the lease names it (its boot id) */
    uint32_t lease_ms;    /* a lease not renewed for this long may be taken */
    bool allow_fsync_off; /* a server with fsync = off is refused unless this (tests only) */
    uint32_t group_delay_us;
    uint32_t group_siblings;
    struct ev_loop *loop;
    struct dstore_cbs cbs;
};

/* ---- waiting for the lease ------------------------------------------------------- */

struct dstore_pg_claim;

/* Called on the loop thread once the lease is this process's, under term. */
typedef void (*dstore_pg_granted_fn)(void *arg, uint64_t term);

/*
 * Starts trying to take the node's lease, from a thread of its own: at
 * once, then every lease_ms / 4 while another process holds it, and after
 * a failure to reach the store (each failure logged once, until it
 * changes). Creates the schema if missing. Calls granted once. Returns 0
 * and *out, or DTX_EIO.
 */
int dstore_pg_claim_start(struct dstore_pg_claim **out, const struct dstore_pg_opts *opts,
                          dstore_pg_granted_fn granted, void *arg, struct dtx_err *err);
/* What the claim last saw, into obj: "holder", "term", "expires_in_ms", "error". */
void dstore_pg_claim_describe(struct dstore_pg_claim *c, cJSON *obj);
/* This process's boot id, under which it claims the lease (and shows in /healthz). */
const char *dstore_pg_claim_holder(const struct dstore_pg_claim *c);
/* Stops the thread and frees the claim; NULL is a no-op. */
void dstore_pg_claim_free(struct dstore_pg_claim *c);

/* ---- the store ----------------------------------------------------------------- */

/*
 * Opens the store as the holder of term: reads every record of the node
 * from its last checkpoint on, in order, into replay, renews the lease,
 * then starts the writer. Returns 0 and *out (its dstore ops), or:
 *   DTX_EIO       the store cannot be reached or read
 *   DTX_ECORRUPT  a record cannot be decoded (err says which row)
 *   DTX_ELOGFAIL  the lease is no longer term's
 *   any error returned by replay
 * *nrecords (may be NULL) counts the records replayed.
 */
int dstore_pg_open(struct dstore **out, const struct dstore_pg_opts *opts, uint64_t term,
                   drec_replay_fn replay, void *arg, uint64_t *nrecords, struct dtx_err *err);

#endif
