/*
 * txtab.h - the coordinator's table of transactions: every transaction in
 * memory, live or retained, found by gtid or idempotency key, with the
 * clients waiting for each one's answer.
 *
 * A transaction is live (on tab->live) until the protocol says it is
 * finished; it is then retained (on tab->retained, oldest first) for
 * retention_s seconds, to answer GET and idempotent retries; then it is
 * evicted and freed. Over the limits (retention_max entries,
 * retention_max_bytes of kept answers) the oldest without an idempotency
 * key go first; one with a key is never evicted before its time (a retry
 * would run it again): the oldest such answers lose their results instead
 * (tx_drop_results), and new keyed transactions are refused while
 * retention_max keyed ones are held (txtab_keys_full). The table owns its
 * entries and their transactions.
 *
 * The table decides nothing about the protocol: it keeps, finds, counts
 * and forgets (struct tx is opaque here).
 *
 * Thread model: the coordinator's event-loop thread.
 */
#ifndef DTX_TXTAB_H
#define DTX_TXTAB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/buf.h"
#include "dtx/ev.h"
#include "dtx/hmap.h"
#include "dtx/list.h"
#include "dtx/tx.h"

struct httpd_req;

/* A client request waiting for a transaction's answer (the table never touches the request). */
struct txwaiter {
    struct txwaiter *next;
    struct httpd_req *req;
};

/* One transaction in the table, with what the coordinator keeps beside it. */
struct txent {
    struct tx *tx;
    struct hmap_node by_gtid;
    struct hmap_node by_idem;
    struct list_node link;      /* on the live list, then on the retained list */
    struct list_node wait_link; /* on the coordinator's log-wait queue while its COMMIT is forced */
    struct ev_timer timer;      /* the protocol's timer (tx_env.arm) */
    struct txwaiter *waiters;   /* client requests waiting for the answer */
    char *answer_body;          /* an idempotent transaction's final answer, for retries */
    unsigned answer_status;
    bool retained;
    bool counted;          /* in the metrics (once, even if an unknown outcome resolves later) */
    bool log_ended;        /* replay saw its END record */
    uint8_t learned;       /* replay saw a LEARNED record: enum ballot_value (3PC) */
    size_t retained_bytes; /* its share of tab->retained_bytes */
    uint64_t expire_us;    /* retained: evicted after this (loop clock) */
};

/*
 * What one named client (tx_client, not NULL) holds in the
 * table, for its own limits (auth.h's auth_client). Made at its first
 * transaction and kept until the table is released: the clients are the
 * configured ones, a bounded set.
 */
struct txtab_client {
    struct hmap_node node;
    size_t nlive;     /* its live transactions */
    size_t nkeyed;    /* its retained ones with an idempotency key */
    uint64_t refused; /* its requests refused over its own limits (the coordinator counts) */
    char name[];
};

struct txtab_limits {
    uint32_t retention_s;
    uint32_t retention_max;
    size_t retention_max_bytes;
};

struct txtab {
    struct txtab_limits lim;
    struct hmap by_gtid;
    struct hmap by_idem;
    struct hmap by_client; /* struct txtab_client */
    struct list_node live;
    struct list_node retained;
    size_t nlive;
    size_t nretained;
    size_t nkeyed;         /* retained ones with an idempotency key */
    size_t retained_bytes; /* answers and results kept for idempotent retries */
    uint64_t evicted;      /* final transactions dropped from memory since start */
};

void txtab_init(struct txtab *tab, const struct txtab_limits *lim);
/* Frees every entry and its transaction (waiting clients are dropped, not answered). */
void txtab_release(struct txtab *tab);

/*
 * A new entry, for a transaction created with it as owner (tx_new), then
 * added to the table as live with txtab_insert (its gtid must be new).
 * timer_cb is the entry's protocol timer callback (its data is the entry).
 */
struct txent *txtab_entry_new(ev_timer_cb timer_cb);
void txtab_insert(struct txtab *tab, struct txent *e, struct tx *tx);

struct txent *txtab_find(const struct txtab *tab, const char *gtid);
struct txent *txtab_find_idem(const struct txtab *tab, const char *key);

/*
 * A live transaction finished: it is retained from now (now_us, loop
 * clock) for the retention time; an idempotent one keeps its final answer
 * for retries. Calling it again is a no-op.
 */
void txtab_retain(struct txtab *tab, struct txent *e, uint64_t now_us);
/*
 * e's idempotency key is no longer bound to it (before txtab_retain): a
 * retry with that key runs afresh. For an outcome that tells its client to
 * send the request again.
 */
void txtab_release_key(struct txtab *tab, struct txent *e);
/* A retained transaction decided age_us ago (found by replay) keeps only what is left. */
void txtab_backdate(struct txtab *tab, struct txent *e, uint64_t now_us, uint64_t age_us);
/*
 * Evicts what is past its retention; beyond the count and byte limits,
 * evicts the oldest without a key, then drops the results of the oldest
 * with one (see the top).
 */
void txtab_expire(struct txtab *tab, uint64_t now_us);
/* True when retention_max transactions with a key are held: a new one must wait. */
bool txtab_keys_full(const struct txtab *tab);
/* What the named client holds (made empty at the first question), or NULL for "" and NULL. */
struct txtab_client *txtab_client(struct txtab *tab, const char *client);
/* Calls fn for every named client the table has seen. */
void txtab_each_client(const struct txtab *tab, void (*fn)(void *arg, const struct txtab_client *c),
                       void *arg);

/* Calls fn for every entry, live first (oldest first), then retained; fn may retain its entry. */
void txtab_each(const struct txtab *tab, void (*fn)(void *arg, struct txent *e), void *arg);
/* Calls fn for every live entry; fn may step its transaction (and so retain it). */
void txtab_each_live(const struct txtab *tab, void (*fn)(void *arg, struct txent *e), void *arg);

/* Waiting clients: added one by one, taken all at once (oldest last) to be answered. */
void txent_add_waiter(struct txent *e, struct httpd_req *req);
struct txwaiter *txent_take_waiters(struct txent *e);
/* Frees a list of waiters taken from an entry (their requests are the caller's). */
void txwaiters_free(struct txwaiter *w);

/* What a request reusing an idempotency key gets. */
enum txtab_idem {
    TXI_NEW,      /* the key is not in the table: run the request */
    TXI_MISMATCH, /* the key was used for a different request: refuse it (422) */
    TXI_ANSWER,   /* the same request, answered: give it the first outcome now */
    TXI_WAIT,     /* the same request, still running: wait for its outcome */
};
/* Looks up key for a request hashing to req_hash; *e is its entry (TXI_NEW: NULL). */
enum txtab_idem txtab_idem_lookup(const struct txtab *tab, const char *key, uint64_t req_hash,
                                  struct txent **e);

/*
 * Appends to snap (drec_encode) what the table must keep across a
 * checkpoint: each transaction's COMMIT record, and END when only its
 * answer is retained (tx_checkpoint_keep says which).
 */
void txtab_encode_checkpoint(const struct txtab *tab, struct buf *snap);

#endif
