/*
 * coord.h - the coordinator engine: transactions in flight and retained,
 * the decision store, the participant links, and the glue that lets the
 * protocol (tx.h) act on them. The HTTP layers (api.c, admin.c) call in
 * here; nothing here calls up into them.
 *
 * Thread model: every function runs on the coordinator's event-loop
 * thread.
 */
#ifndef DTX_COORD_H
#define DTX_COORD_H

#include <stdbool.h>

#include "dtx/coord_config.h"
#include "dtx/drec.h"
#include "dtx/dstore.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"
#include "dtx/status.h"
#include "dtx/tx.h"
#include "dtx/txreq.h"

struct coord;

/*
 * With the postgres decision store, the lease this process took (its
 * claim: dstore_pg.h) and whom to tell when it is lost: the store failed,
 * or another run of this node was seen by a participant. The process must
 * then step down; nothing more is decided (the store refuses it).
 */
struct coord_lease {
    uint64_t term;
    const char *holder; /* this process's id in the lease; also this run's boot id */
    void (*lost)(void *arg, const struct dtx_err *why);
    void *arg;
};

/*
 * Opens the decision store (replaying it), makes this run's epoch
 * durable, and starts dialling every participant. lease: the postgres
 * store's (NULL for the file store). Returns 0 and *out, or an error
 * (DTX_ECORRUPT for a damaged log, DTX_EIO) with a message; on error
 * nothing is left running. cfg and lease must outlive the coordinator.
 */
int coord_new(struct coord **out, const struct coord_config *cfg, struct ev_loop *loop,
              const struct coord_lease *lease, struct dtx_err *err);
/* A random id for a run of the coordinator (16 hex digits), as coord_new makes for itself. */
void coord_boot_id(char *out, size_t n);
/* Stops everything and frees the coordinator. NULL is a no-op. */
void coord_free(struct coord *co);

/* Pushes every queued peer message out now (a failpoint's crash hook; arg is the coord). */
void coord_flush_links(void *arg);

/* Starts a graceful stop: refuse new transactions, let running ones finish. */
void coord_begin_shutdown(struct coord *co);
/* The config's tokens were reloaded (SIGHUP): links dial with the new peer token from now on. */
void coord_auth_reloaded(struct coord *co);
/* True when a shutdown was asked for and no transaction is running any more. */
bool coord_drained(const struct coord *co);

/*
 * True when new transactions are accepted; otherwise *why (may be NULL)
 * gets the reason (starting, stopping, decision store failed).
 */
bool coord_accepting(const struct coord *co, struct dtx_err *why);

/*
 * Runs a validated request and eventually answers client (now or later).
 * Takes the ops' sql, params and expect_rows out of req's tree; req stays
 * the caller's to release.
 */
void coord_submit(struct coord *co, struct txreq *req, struct httpd_req *client);

/*
 * Interactive transactions (begun by coord_submit with req->interactive):
 * a call's ops (taken from req as above), the commit, the abort. Each
 * answers client now or later; one call at a time per transaction. Only
 * its client (req->client, who: tx.h's tx_owned_by) finds the transaction;
 * anyone else is answered 404 as for a gtid that never existed.
 */
void coord_ops(struct coord *co, const char *gtid, struct txreq *req, struct httpd_req *client);
void coord_commit(struct coord *co, const char *gtid, const char *who, struct httpd_req *client);
void coord_abort(struct coord *co, const char *gtid, const char *who, struct httpd_req *client);

/*
 * What a participant holding a prepared branch of gtid on shard must do:
 * commit (with the branch's xid in *xid when known), abort, in flight
 * (still being decided, or an operator's decision about it is being
 * recorded: ask again later, never guess), or unknown (not a transaction
 * this coordinator can decide: leave it to an operator). Presumed abort
 * (tx_presumed): a gtid this coordinator issued that has no commit record
 * is aborted; a committed transaction is kept in memory until every
 * branch acknowledged, so no branch that is still prepared can belong to
 * one that was forgotten.
 */
enum dtx_decision coord_decision(const struct coord *co, const char *gtid, int shard,
                                 uint64_t *xid);

/*
 * Three-phase commit: true when the shards may delete their acceptor state
 * of gtid, which was left behind (the forget was lost): this run holds the
 * transaction and finished it with every participant's acknowledgement
 * and no branch given up on (tx_acceptors_done). False for anything else:
 * forgotten after its retention, rebuilt after a restart, decided by the
 * participants, another node's. Not knowing is never a yes.
 */
bool coord_acceptors_done(const struct coord *co, const char *gtid);

/* Whose a gtid is, as this coordinator sees it. */
enum coord_gtid {
    CG_ISSUED,     /* this node's, issued (by this run or one its store knows) */
    CG_GAP,        /* this node's, of an epoch its store does not know (restored or lost) */
    CG_NOT_ISSUED, /* this node's, beyond anything it has issued */
    CG_FOREIGN,    /* another coordinator node's */
    CG_MALFORMED,  /* not a gtid at all */
};
/* The kind of gtid; *owner (DTX_NAME_MAX + 1 bytes, may be NULL) gets its node. */
enum coord_gtid coord_gtid_kind(const struct coord *co, const char *gtid, char *owner);
/* The newest gtid this coordinator has issued, "node-epoch-seq" (DTX_GTID_MAX + 1 bytes). */
void coord_last_issued(const struct coord *co, char *out, size_t n);

/*
 * True when gtid is this node's and of an epoch its decision store does
 * not know (its log was restored or lost: decision.c). Such a gtid is never
 * presumed aborted.
 */
bool coord_gtid_in_gap(const struct coord *co, const char *gtid);
/* Adds "epoch_gaps": [{"from","to","shard","found_at"}] to obj when there are any. */
void coord_gaps_json(const struct coord *co, cJSON *obj);

/*
 * Three-phase commit: the endpoints where this coordinator is an acceptor
 * for participants' recovery leaders (acceptor.c); rest is what follows
 * "/v1/peer/3pc" in the path. The peer token was checked.
 */
void coord_acc_http(struct coord *co, struct httpd_req *req, const char *method, const char *rest);
/* Whether coord_acc_http serves method on rest (else it answers 404); a standby asks too. */
bool coord_acc_serves(const char *method, const char *rest);

/* The transaction with this gtid, live or retained, or NULL. */
const struct tx *coord_find(const struct coord *co, const char *gtid);
const struct coord_config *coord_config(const struct coord *co);
/* The epoch of the gtids this run issues now. */
uint64_t coord_epoch(const struct coord *co);
struct ev_loop *coord_loop(const struct coord *co);
/* How co dials its participants (httpc.h): its loop, resolver and TLS config. */
struct dialer;
const struct dialer *coord_dialer(const struct coord *co);

/* ---- operators (dtxctl; the HTTP side is admin.c) ---- */

/* An operator's decision about one transaction, recorded in the decision store. */
struct coord_opnote {
    struct coord_opnote *next;    /* the transaction's next note, oldest first */
    enum drec_op_kind kind;       /* resolve or forget */
    bool commit;                  /* the decision it stands for */
    char shard[DTX_NAME_MAX + 1]; /* the shard it concerns; "" for every shard */
    char *who;
    char *reason;
    uint64_t wall_us;
};

/* The durable operator notes about gtid, oldest first, or NULL. */
const struct coord_opnote *coord_notes(const struct coord *co, const char *gtid);
/* Calls fn for every gtid that has notes. */
void coord_each_noted(const struct coord *co,
                      void (*fn)(void *arg, const char *gtid, const struct coord_opnote *notes),
                      void *arg);

/*
 * Forces an OPERATOR record for gtid, then (on the loop thread) adds the
 * note, applies a forget (the branch on note->shard counts as finished),
 * and calls done with 0; or with an error when the store has failed. The
 * caller has checked that the note contradicts nothing recorded. When the
 * coordinator is freed first, done gets DTX_ESHUTDOWN and err NULL: the
 * client's request is gone, only arg is to be released.
 */
typedef void (*coord_done_fn)(void *arg, int rc, const struct dtx_err *err);
void coord_record_operator(struct coord *co, const char *gtid, const struct coord_opnote *note,
                           coord_done_fn done, void *arg);

/* What a shard did against the decision (heuristic.c), kept for operators. */
struct coord_heur {
    struct coord_heur *next;      /* the transaction's next one, oldest first */
    enum drec_heur_kind kind;     /* mixed or hazard */
    bool commit;                  /* the decision was commit (else abort) */
    bool counted;                 /* found in this run (counted in /metrics) */
    char shard[DTX_NAME_MAX + 1]; /* the shard that reported it */
    char *what;                   /* what it said */
    uint64_t wall_us;
};

/* The heuristic outcomes of gtid, oldest first, or NULL. */
const struct coord_heur *coord_heurs(const struct coord *co, const char *gtid);
/* "mixed" when any shard did the opposite of the decision, else "hazard"; NULL for none. */
const char *coord_heur_word(const struct coord_heur *h);
/*
 * Transactions with a heuristic outcome that no operator has settled yet:
 * none of their operator notes (dtxctl resolve, after checking the shard)
 * is newer than their latest heuristic outcome.
 */
size_t coord_heur_unsettled(const struct coord *co);
/* Calls fn for every gtid with heuristic outcomes. */
void coord_each_heured(const struct coord *co,
                       void (*fn)(void *arg, const char *gtid, const struct coord_heur *list),
                       void *arg);

/* Calls fn for every transaction in memory (live first, then retained, oldest first). */
void coord_each_tx(const struct coord *co, void (*fn)(void *arg, const struct tx *tx), void *arg);

/* Resends phase 2 now to every decided transaction still waiting for a shard; how many. */
size_t coord_kick(struct coord *co);

/*
 * Tells a live transaction that its branch on shard was finished by other
 * means (an operator's recover): as if the shard had acknowledged, when
 * that is what the transaction waits for.
 */
void coord_branch_finished(struct coord *co, const char *gtid, int shard, bool committed);
/* True when gtid is a decided transaction whose phase 2 still waits for shard. */
bool coord_waits_for(const struct coord *co, const char *gtid, int shard);

/* The participant link's state ("up", "connecting", "down"), and why it is not up ("" if up). */
const char *coord_link_state(const struct coord *co, int shard);
const char *coord_link_error(const struct coord *co, int shard);
/* The decision store's counters, and what an operator should know about it. */
void coord_store_stats(const struct coord *co, struct dstore_stats *st);
void coord_describe_store(const struct coord *co, cJSON *obj);

/* Bodies for /healthz (status in *status) and /metrics (malloc'd); the former as a tree too. */
cJSON *coord_health_json(const struct coord *co, unsigned *status);
char *coord_render_health(const struct coord *co, unsigned *status);
char *coord_render_metrics(const struct coord *co);
/* /metrics of a process that is no node's active coordinator (yet): a standby. */
char *coord_render_standby_metrics(const char *node_id);

#endif
