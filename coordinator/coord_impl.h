/*
 * coord_impl.h - the coordinator's state, shared by the files that make up
 * the coordinator engine; private to them (the rest of the program speaks
 * coord.h). Each field says which file owns it: only that file writes it.
 *
 *   coord.c     lifecycle, the protocol's environment (tx_env), submit
 *   calls.c     interactive calls (ops, commit, abort)
 *   links.c     participant links: messages -> protocol events, up/down
 *   replay.c    replay of the decision store, recovery, checkpoints, BOOT
 *   decision.c  operator notes, "what is decided about this gtid"
 *   metrics.c   /healthz and /metrics
 *
 * Thread model: everything here belongs to the coordinator's event-loop
 * thread. The decision store may write from its own thread but calls back
 * on the loop (dstore.h).
 */
#ifndef DTX_COORD_IMPL_H
#define DTX_COORD_IMPL_H

#include "dtx/coord.h"
#include "dtx/fanout.h"
#include "dtx/httpc.h"
#include "dtx/dstore.h"
#include "dtx/pc.h"
#include "dtx/prom.h"
#include "dtx/txtab.h"

enum coord_state { CO_STARTING, CO_RUNNING, CO_STOPPING, CO_FAILED };

/* Counters for /metrics (metrics.c reads them; the owner of each event counts it). */
struct coord_metrics {
    uint64_t started;      /* coord.c */
    uint64_t committed;    /* metrics.c: coord_count_final */
    uint64_t aborted;      /* ... */
    uint64_t one_phase;    /* ... */
    uint64_t readonly;     /* ... */
    uint64_t unknown;      /* ... */
    uint64_t in_doubt;     /* metrics.c: the store failed while a commit was forced */
    uint64_t idem_replays; /* coord.c */
    uint64_t refused;      /* coord.c: over max_active_transactions */
    uint64_t aborts_by_code[32];
    uint64_t heuristic[2]; /* heuristic.c: outcomes found in this run: mixed, hazard */
    /* metrics.c: [0] 2PC, [1] 3PC; duration by outcome (committed .. in_doubt), time by phase */
    struct prom_hist duration[2][4];
    struct prom_hist phase[2][TX_NPHASES];
};

/* Epochs this node used that its decision store does not know (decision.c). */
struct coord_gap {
    uint64_t lo, hi;              /* first and last unknown epoch */
    uint64_t wall_us;             /* when it was found */
    char shard[DTX_NAME_MAX + 1]; /* whose participant had seen epoch hi */
};

/* Three-phase commit: this coordinator's acceptor notes and answers waiting (acceptor.c). */
struct coord_acc {
    struct hmap by_gtid;    /* struct acc_note */
    struct list_node waits; /* struct acc_wait, in lsn order */
};

/* Heuristic outcomes (heuristic.c), by gtid. */
struct coord_heurs {
    struct hmap by_gtid; /* struct heured */
};

/* The operator notes (decision.c): durable decisions about gtids, by gtid. */
struct coord_notes {
    struct hmap by_gtid;      /* struct noted */
    struct list_node pending; /* struct op_wait: OPERATOR records being forced, in lsn order */
};

struct coord {
    const struct coord_config *cfg;
    struct ev_loop *loop;
    struct dialer dialer; /* coord.c: the loop, a resolver and cfg->tls, for every link and call */
    const char **shard_names;    /* coord.c: index -> name */
    struct tx_env env;           /* coord.c */
    struct dstore *store;        /* replay.c opens it, coord.c closes it */
    struct dstore_cbs store_cbs; /* coord.c: how the store reports back */
    struct pc **links;           /* links.c */
    uint64_t *accepted_from;     /* links.c: per shard, the first epoch of this run it accepted */
    struct txtab tab;            /* coord.c inserts, the protocol's env retains */
    struct list_node log_wait;   /* coord.c: txents whose COMMIT is being forced, in lsn order */
    struct coord_notes notes;    /* decision.c */
    struct coord_heurs heurs;    /* heuristic.c */
    struct coord_acc acc;        /* acceptor.c */
    struct list_node polls;      /* coord.c: fan-outs asking participants what they decided */
    uint64_t epoch;              /* replay.c: this run's epoch (moved past a gap: a new one) */
    uint64_t run_epoch;          /* replay.c: the epoch this run started with */
    char boot[40];               /* coord.c: a random id of this run (the lease's holder) */
    const struct coord_lease *lease; /* the postgres store's (NULL: the file store) */
    struct coord_gap *gaps;          /* decision.c: epochs used but unknown to the store */
    size_t ngaps;
    uint64_t seq;           /* coord.c: the last gtid issued in this epoch */
    enum coord_state state; /* coord.c; replay.c sets CO_FAILED */
    struct dtx_err fail;    /* why CO_FAILED */
    struct ev_timer tick;   /* coord.c */
    struct coord_metrics m;
};

/* ---- coord.c -------------------------------------------------------------------- */

/* A new transaction entry for params, in the table as live. */
struct txent *coord_new_tx(struct coord *co, const struct tx_params *p);
/* Answers client with e's outcome as it stands. */
void coord_reply_outcome(struct httpd_req *client, const struct txent *e);
/* Answers every waiter in w with (status, a copy of body), and frees the list. */
void coord_reply_all(struct txwaiter *w, unsigned status, const char *body);

/* ---- links.c -------------------------------------------------------------------- */

void coord_links_start(struct coord *co);
/* Every link announces the run's new epoch (dropped and dialled anew). */
void coord_links_set_epoch(struct coord *co);
void coord_links_free(struct coord *co);
bool coord_links_tried(const struct coord *co);
bool coord_link_up(const struct coord *co, int shard);
bool coord_link_takes_forget(const struct coord *co, int shard);
/* Sends one encoded message to shard's participant: 0, or DTX_EUNAVAIL. */
int coord_link_send(struct coord *co, int shard, const char *data, size_t len);

/* ---- heuristic.c ---------------------------------------------------------------- */

void coord_heurs_init(struct coord_heurs *h);
void coord_heurs_release(struct coord_heurs *h);
/* Adds one (from a HEURISTIC record, or just found: then counted in /metrics). */
void coord_heur_add(struct coord *co, const char *gtid, const struct coord_heur *h);
/* tx_env.heuristic: records, logs and counts what a shard did against the decision. */
void coord_on_heuristic(struct tx *tx, int shard, enum drec_heur_kind kind, const char *what);
/* Appends every HEURISTIC record to a checkpoint. */
void coord_heurs_encode(const struct coord *co, struct buf *snap);

/* ---- acceptor.c: three-phase commit, this coordinator as an acceptor and learner ---- */

void coord_acc_init(struct coord_acc *a);
void coord_acc_release(struct coord_acc *a);
/* Records up to lsn are durable: answers waiting for them go out. */
void coord_acc_durable(struct coord *co, uint64_t lsn);
/* The store failed (err), or the coordinator is going away (NULL): answers waiting end. */
void coord_acc_fail(struct coord *co, const struct dtx_err *err);
/* The participants decided gtid: its transaction (if in memory) adopts v. */
void coord_acc_learned(struct coord *co, const char *gtid, enum ballot_value v);
/* A PROMISE or ACCEPT record, replayed. */
void coord_acc_replay(struct coord *co, const struct drec *rec);
/* Appends every note to a checkpoint. */
void coord_acc_encode(const struct coord *co, struct buf *snap);
/* A transaction rebuilt by replay takes the promise its note holds. */
void coord_acc_apply(struct coord *co, struct txent *e);

/* ---- replay.c ------------------------------------------------------------------- */

/* Opens the decision store, replays it, recovers, and makes this run's epoch durable. */
int coord_open_store(struct coord *co, struct dtx_err *err);
/* The store asks for a checkpoint (dstore_cbs.on_checkpoint_wanted). */
void coord_checkpoint_wanted(void *arg);
/*
 * A participant of shard has seen epoch seen of this node from another
 * run: the store is behind. Records the gap (this run's epoch .. seen),
 * moves to epoch seen + 1 durably, and dials every link anew with it.
 * Nothing if the run is past seen already.
 */
void coord_move_past(struct coord *co, int shard, uint64_t seen);

/* ---- decision.c ----------------------------------------------------------------- */

void coord_notes_init(struct coord_notes *n);
void coord_notes_release(struct coord_notes *n);
/* Adds a durable note about gtid (copied). */
void coord_notes_add(struct coord *co, const char *gtid, const struct coord_opnote *note);
/* Applies the forget notes about a transaction that is live again after replay. */
void coord_apply_forgets(struct coord *co, struct txent *e);
/* Records up to lsn are durable: finishes the operator decisions waiting for that. */
void coord_notes_durable(struct coord *co, uint64_t lsn);
/* The store failed (err), or the coordinator is going away (NULL): ends what waits. */
void coord_notes_fail(struct coord *co, const struct dtx_err *err);
/* Appends every note, and those being forced, to a checkpoint; the gaps too. */
void coord_notes_encode(const struct coord *co, struct buf *snap);
/* Adds a gap (from a GAP record, or one just found). */
void coord_gap_add(struct coord *co, const struct coord_gap *g);
/* True when epoch of this node is in a gap: its gtids are never presumed aborted. */
bool coord_in_gap(const struct coord *co, uint64_t epoch);

/* ---- metrics.c ------------------------------------------------------------------ */

/* Empty counters and histograms. */
void coord_metrics_init(struct coord_metrics *m);
/* Counts a transaction that reached an outcome (once; nothing while it has none). */
void coord_count_final(struct coord *co, struct txent *e);
/* tx_env.phase_done: how long a transaction spent in a phase. */
void coord_on_phase(struct tx *tx, enum tx_phase ph, uint64_t us);

#endif
