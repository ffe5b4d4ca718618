/*
 * coord.h - the coordinator: transactions in flight and retained, the
 * decision log, the participant links, and the glue that lets the protocol
 * (tx.c) act on them.
 */
#ifndef DTX_COORD_H
#define DTX_COORD_H

#include <stdbool.h>

#include "dtx/api.h"
#include "dtx/coord_config.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"
#include "dtx/tx.h"

struct coord;

/*
 * Opens the decision log (replaying it), writes this run's BOOT record,
 * and starts dialling every participant. Returns 0 and *out, or an error
 * (DTX_ECORRUPT for a damaged log, DTX_EIO) with a message; on error
 * nothing is left running. cfg must outlive the coordinator.
 */
int coord_new(struct coord **out, const struct coord_config *cfg, struct ev_loop *loop,
              struct dtx_err *err);
/* Stops everything and frees the coordinator. NULL is a no-op. */
void coord_free(struct coord *co);

/* Pushes every queued peer message out now (a failpoint's crash hook; arg is the coord). */
void coord_flush_links(void *arg);

/* Starts a graceful stop: refuse new transactions, let running ones finish. */
void coord_begin_shutdown(struct coord *co);
/* True when a shutdown was asked for and no transaction is in flight any more. */
bool coord_drained(const struct coord *co);

/*
 * True when new transactions are accepted; otherwise *why (may be NULL)
 * gets the reason (starting, stopping, decision log failed).
 */
bool coord_accepting(const struct coord *co, struct dtx_err *why);

/*
 * Runs a validated request and eventually answers client (now or later).
 * Takes over req's contents; req is left empty.
 */
void coord_submit(struct coord *co, struct txreq *req, struct httpd_req *client);

/*
 * What a participant holding a prepared branch of gtid on shard must do:
 * "commit" (with the branch's xid in *xid when known), "abort",
 * "in_flight" (still being decided: ask again later, never guess), or
 * "unknown" (not a transaction of this coordinator: leave it to an
 * operator). Presumed abort: a gtid this coordinator issued that has no
 * commit record is "abort"; a committed transaction is kept in memory
 * until every branch acknowledged, so no branch that is still prepared can
 * belong to one that was forgotten.
 */
const char *coord_outcome(const struct coord *co, const char *gtid, int shard, uint64_t *xid);

/* The transaction with this gtid, live or retained, or NULL. */
const struct tx *coord_find(const struct coord *co, const char *gtid);
const struct coord_config *coord_config(const struct coord *co);

/* Bodies for /healthz (status in *status), /metrics and the admin list (malloc'd). */
char *coord_render_health(const struct coord *co, unsigned *status);
char *coord_render_metrics(const struct coord *co);
char *coord_render_list(const struct coord *co, const char *status_filter);

#endif
