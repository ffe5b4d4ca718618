/*
 * txtab.c - the transaction table (txtab.h): lookup by gtid and by
 * idempotency key, the live and retained lists, retention and eviction,
 * and the clients waiting for answers.
 *
 * Accounting: tab->retained_bytes is the sum of each retained entry's
 * retained_bytes, its kept answer and results; an evicted entry gives its
 * share back before it is freed.
 *
 * Thread model: the coordinator's event-loop thread; nothing here blocks.
 */
#include "dtx/txtab.h"
#include "dtx/xalloc.h"

#include <stdlib.h>
#include <string.h>

void txtab_init(struct txtab *tab, const struct txtab_limits *lim)
{
    memset(tab, 0, sizeof(*tab));
    tab->lim = *lim;
    hmap_init(&tab->by_gtid);
    hmap_init(&tab->by_idem);
    hmap_init(&tab->by_client);
    list_init(&tab->live);
    list_init(&tab->retained);
}

void txwaiters_free(struct txwaiter *w)
{
    while (w) {
        struct txwaiter *next = w->next;

        free(w);
        w = next;
    }
}

static void entry_free(struct txent *e)
{
    txwaiters_free(txent_take_waiters(e));
    tx_free(e->tx);
    free(e->answer_body);
    free(e);
}

void txtab_release(struct txtab *tab)
{
    struct hmap_iter it;
    struct hmap_node *n;

    for (n = hmap_first(&tab->by_gtid, &it); n; n = hmap_next(&tab->by_gtid, &it))
        entry_free(container_of(n, struct txent, by_gtid));
    for (n = hmap_first(&tab->by_client, &it); n; n = hmap_next(&tab->by_client, &it))
        free(container_of(n, struct txtab_client, node));
    hmap_release(&tab->by_gtid);
    hmap_release(&tab->by_idem);
    hmap_release(&tab->by_client);
    list_init(&tab->live);
    list_init(&tab->retained);
}

struct txent *txtab_entry_new(ev_timer_cb timer_cb)
{
    struct txent *e = xcalloc(1, sizeof(*e));

    list_init(&e->link);
    list_init(&e->wait_link);
    ev_timer_init(&e->timer, timer_cb, e);
    return e;
}

struct txtab_client *txtab_client(struct txtab *tab, const char *client)
{
    struct hmap_node *n;
    struct txtab_client *c;

    if (!client || !*client)
        return NULL;
    n = hmap_get(&tab->by_client, client);
    if (n)
        return container_of(n, struct txtab_client, node);
    c = xcalloc(1, sizeof(*c) + strlen(client) + 1);
    strcpy(c->name, client);
    hmap_put(&tab->by_client, &c->node, c->name);
    return c;
}

void txtab_each_client(const struct txtab *tab, void (*fn)(void *arg, const struct txtab_client *c),
                       void *arg)
{
    struct hmap_iter it;

    for (struct hmap_node *n = hmap_first(&tab->by_client, &it); n;
         n = hmap_next(&tab->by_client, &it))
        fn(arg, container_of(n, struct txtab_client, node));
}

void txtab_insert(struct txtab *tab, struct txent *e, struct tx *tx)
{
    struct txtab_client *c = txtab_client(tab, tx_client(tx));

    e->tx = tx;
    hmap_put(&tab->by_gtid, &e->by_gtid, tx_gtid(tx));
    if (tx_idem_key(tx))
        hmap_put(&tab->by_idem, &e->by_idem, tx_idem_key(tx));
    list_insert_tail(&tab->live, &e->link);
    tab->nlive++;
    if (c)
        c->nlive++;
}

struct txent *txtab_find(const struct txtab *tab, const char *gtid)
{
    struct hmap_node *n = gtid ? hmap_get(&tab->by_gtid, gtid) : NULL;

    return n ? container_of(n, struct txent, by_gtid) : NULL;
}

struct txent *txtab_find_idem(const struct txtab *tab, const char *key)
{
    struct hmap_node *n = key ? hmap_get(&tab->by_idem, key) : NULL;

    return n ? container_of(n, struct txent, by_idem) : NULL;
}

/* Keeps tab->retained_bytes up to date with what e holds (0 once evicted). */
static void account(struct txtab *tab, struct txent *e, bool keep)
{
    size_t n = 0;

    if (keep && e->answer_body)
        n += strlen(e->answer_body);
    if (keep)
        n += tx_retained_bytes(e->tx);
    tab->retained_bytes = tab->retained_bytes - e->retained_bytes + n;
    e->retained_bytes = n;
}

void txtab_retain(struct txtab *tab, struct txent *e, uint64_t now_us)
{
    struct txtab_client *c;

    if (e->retained)
        return;
    if (tx_idem_key(e->tx)) {
        free(e->answer_body);
        e->answer_body = tx_render_answer(e->tx, &e->answer_status);
    }
    list_remove(&e->link);
    tab->nlive--;
    e->retained = true;
    e->expire_us = now_us + (uint64_t)tab->lim.retention_s * 1000000u;
    list_insert_tail(&tab->retained, &e->link);
    tab->nretained++;
    tab->nkeyed += tx_idem_key(e->tx) != NULL;
    if ((c = txtab_client(tab, tx_client(e->tx)))) {
        c->nlive--;
        c->nkeyed += tx_idem_key(e->tx) != NULL;
    }
    account(tab, e, true);
}

void txtab_release_key(struct txtab *tab, struct txent *e)
{
    if (e->retained || !tx_idem_key(e->tx))
        return;
    hmap_remove(&tab->by_idem, &e->by_idem);
    tx_drop_idem_key(e->tx);
}

void txtab_backdate(struct txtab *tab, struct txent *e, uint64_t now_us, uint64_t age_us)
{
    uint64_t keep = (uint64_t)tab->lim.retention_s * 1000000u;

    e->expire_us = age_us >= keep ? 0 : now_us + keep - age_us;
}

static void evict(struct txtab *tab, struct txent *e)
{
    struct txtab_client *c = txtab_client(tab, tx_client(e->tx));

    list_remove(&e->link);
    tab->nretained--;
    tab->nkeyed -= tx_idem_key(e->tx) != NULL;
    if (c)
        c->nkeyed -= tx_idem_key(e->tx) != NULL;
    tab->evicted++;
    account(tab, e, false);
    hmap_remove(&tab->by_gtid, &e->by_gtid);
    if (tx_idem_key(e->tx))
        hmap_remove(&tab->by_idem, &e->by_idem);
    entry_free(e);
}

/*
 * Over the limits, oldest first, one pass each (it runs once a second):
 * beyond retention_max,
 * entries without a key go (a key stays for all its retention time;
 * txtab_keys_full refuses new keys instead); beyond retention_max_bytes,
 * keyed answers lose their results, never their key. An entry without a
 * key keeps no answer: evicting it would free none of those bytes, only
 * cost its client the record.
 */
void txtab_expire(struct txtab *tab, uint64_t now_us)
{
    struct list_node *p, *next;
    struct txent *e;

    while (!list_empty(&tab->retained)) {
        e = container_of(tab->retained.next, struct txent, link);
        if (e->expire_us > now_us)
            break;
        evict(tab, e);
    }
    for (p = tab->retained.next; p != &tab->retained && tab->nretained > tab->lim.retention_max;
         p = next) {
        next = p->next;
        e = container_of(p, struct txent, link);
        if (!tx_idem_key(e->tx))
            evict(tab, e);
    }
    for (p = tab->retained.next;
         p != &tab->retained && tab->retained_bytes > tab->lim.retention_max_bytes; p = p->next) {
        e = container_of(p, struct txent, link);
        if (!tx_idem_key(e->tx) || e->retained_bytes == 0 || tx_results_dropped(e->tx))
            continue;
        tx_drop_results(e->tx);
        free(e->answer_body);
        e->answer_body = tx_render_answer(e->tx, &e->answer_status);
        account(tab, e, true);
    }
}

bool txtab_keys_full(const struct txtab *tab)
{
    return tab->nkeyed >= tab->lim.retention_max;
}

void txtab_each(const struct txtab *tab, void (*fn)(void *arg, struct txent *e), void *arg)
{
    const struct list_node *heads[2] = {&tab->live, &tab->retained};

    for (int h = 0; h < 2; h++) {
        for (const struct list_node *p = heads[h]->next, *next; p != heads[h]; p = next) {
            next = p->next;
            fn(arg, container_of(p, struct txent, link));
        }
    }
}

void txtab_each_live(const struct txtab *tab, void (*fn)(void *arg, struct txent *e), void *arg)
{
    for (const struct list_node *p = tab->live.next, *next; p != &tab->live; p = next) {
        next = p->next;
        fn(arg, container_of(p, struct txent, link));
    }
}

void txent_add_waiter(struct txent *e, struct httpd_req *req)
{
    struct txwaiter *w = xcalloc(1, sizeof(*w));

    w->req = req;
    w->next = e->waiters;
    e->waiters = w;
}

struct txwaiter *txent_take_waiters(struct txent *e)
{
    struct txwaiter *w = e->waiters;

    e->waiters = NULL;
    return w;
}

enum txtab_idem txtab_idem_lookup(const struct txtab *tab, const char *key, uint64_t req_hash,
                                  struct txent **e)
{
    *e = txtab_find_idem(tab, key);
    if (!*e)
        return TXI_NEW;
    if (tx_req_hash((*e)->tx) != req_hash)
        return TXI_MISMATCH;
    return (*e)->answer_body || tx_answered((*e)->tx) ? TXI_ANSWER : TXI_WAIT;
}

struct snapshot {
    struct buf *snap;
};

static void encode_tx(void *arg, struct txent *e)
{
    struct snapshot *s = arg;
    enum tx_keep keep = tx_checkpoint_keep(e->tx);
    struct drec_branch *br;
    struct drec rec;
    char *results;

    if (keep == TXK_NONE)
        return;
    tx_commit_record(e->tx, &rec, &br, &results);
    drec_encode(s->snap, &rec);
    free(results);
    free(br);
    if (keep == TXK_RETAINED) {
        rec = (struct drec){.type = DREC_END, .gtid = tx_gtid(e->tx)};
        drec_encode(s->snap, &rec);
    }
}

void txtab_encode_checkpoint(const struct txtab *tab, struct buf *snap)
{
    struct snapshot s = {.snap = snap};

    txtab_each(tab, encode_tx, &s);
}
