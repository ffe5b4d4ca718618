/*
 * test_txtab.c - the coordinator's transaction table (txtab.c): lookups,
 * retention and eviction, idempotent replays, and what a checkpoint keeps.
 * The protocol runs for real (tx.c) over a stub environment whose
 * "finished" retains the transaction, as the coordinator's does.
 */
#include "dtx/txtab.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

static struct txtab tab;
static uint64_t now_us = 1000000;

static int stub_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    cJSON_Delete(tx_message(tx, b, what)); /* what the coordinator would send */
    return 0;
}

static uint64_t next_lsn;

static uint64_t stub_log_commit(struct tx *tx)
{
    (void)tx;
    return ++next_lsn;
}

static void stub_log_end(struct tx *tx)
{
    (void)tx;
}

static void stub_answer(struct tx *tx)
{
    (void)tx;
}

static void stub_arm(struct tx *tx, uint32_t ms)
{
    (void)tx;
    (void)ms;
}

static void stub_finished(struct tx *tx)
{
    txtab_retain(&tab, tx_owner(tx), now_us);
}

static const char *const names[] = {"s0", "s1"};
static const struct tx_env env = {
    .send = stub_send,
    .log_commit = stub_log_commit,
    .log_end = stub_log_end,
    .answer = stub_answer,
    .arm = stub_arm,
    .finished = stub_finished,
    .shard_names = names,
};

static void no_timer(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    (void)t;
}

static void start(uint32_t retention_s, uint32_t max, size_t max_bytes)
{
    struct txtab_limits lim = {
        .retention_s = retention_s, .retention_max = max, .retention_max_bytes = max_bytes};

    txtab_init(&tab, &lim);
    now_us = 1000000;
}

/* A live transaction of client (NULL: not known) with one SELECT on each of nshards shards. */
static struct txent *add_as(const char *client, const char *gtid, const char *key, uint64_t hash,
                            int nshards)
{
    struct tx_params p = {
        .gtid = gtid, .client = client, .idem_key = key, .req_hash = hash, .timeout_ms = 1000};
    struct txent *e = txtab_entry_new(no_timer);

    txtab_insert(&tab, e, tx_new(&p, &env, e));
    for (int i = 0; i < nshards; i++) {
        cJSON *op = cJSON_CreateObject();

        cJSON_AddStringToObject(op, "sql", "SELECT 1");
        tx_add_op(e->tx, i, op, (size_t)i);
        cJSON_Delete(op);
    }
    return e;
}

static struct txent *add(const char *gtid, const char *key, uint64_t hash, int nshards)
{
    return add_as(NULL, gtid, key, hash, nshards);
}

static struct txent *add_for(const char *client, const char *gtid, const char *key)
{
    return add_as(client, gtid, key, 0, 2);
}

/* Drives e's two-phase commit to the end: every vote yes (with results), durable, every ack. */
static void commit(struct txent *e, const char *results)
{
    struct tx_evarg a = {.xid = 10, .results = results, .results_len = strlen(results)};

    CU_ASSERT_EQUAL_FATAL(tx_step(e->tx, TXE_COMMIT, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = tx_branch_on(e->tx, i);
        CU_ASSERT_EQUAL(tx_step(e->tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx_step(e->tx, TXE_DURABLE, NULL), 0);
    for (int i = 0; i < 2; i++) {
        struct tx_evarg ack = {.b = tx_branch_on(e->tx, i)};

        CU_ASSERT_EQUAL(tx_step(e->tx, TXE_ACK, &ack), 0);
    }
    CU_ASSERT(tx_is_final(e->tx));
}

static void abort_it(struct txent *e)
{
    struct dtx_err err;
    struct tx_evarg a = {.err = &err};

    dtx_err_clear(&err);
    dtx_err_set(&err, DTX_ESQL, "boom");
    CU_ASSERT_EQUAL_FATAL(tx_step(e->tx, TXE_COMMIT, NULL), 0);
    a.b = tx_branch_on(e->tx, 0);
    CU_ASSERT_EQUAL(tx_step(e->tx, TXE_VOTE_NO, &a), 0);
    a = (struct tx_evarg){.b = tx_branch_on(e->tx, 1)};
    CU_ASSERT_EQUAL(tx_step(e->tx, TXE_ACK, &a), 0);
    CU_ASSERT(tx_is_final(e->tx));
}

static void a_transaction_is_found_by_gtid_and_by_idempotency_key(void)
{
    struct txent *e;

    start(60, 100, 1 << 20);
    e = add("c1-1-1", "k1", 7, 2);
    add("c1-1-2", NULL, 0, 2);
    CU_ASSERT_PTR_EQUAL(txtab_find(&tab, "c1-1-1"), e);
    CU_ASSERT_PTR_EQUAL(txtab_find_idem(&tab, "k1"), e);
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-3"));
    CU_ASSERT_PTR_NULL(txtab_find_idem(&tab, "k2"));
    CU_ASSERT_EQUAL(tab.nlive, 2);
    txtab_release(&tab);
}

static void a_finished_transaction_is_retained_for_its_time_then_evicted(void)
{
    struct txent *e;

    start(60, 100, 1 << 20);
    e = add("c1-1-1", NULL, 0, 2);
    commit(e, "\n{}\n{}");
    CU_ASSERT(e->retained);
    CU_ASSERT_EQUAL(tab.nlive, 0);
    CU_ASSERT_EQUAL(tab.nretained, 1);
    txtab_expire(&tab, now_us + 59 * 1000000u);
    CU_ASSERT_PTR_NOT_NULL(txtab_find(&tab, "c1-1-1"));
    txtab_expire(&tab, now_us + 60 * 1000000u);
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-1"));
    CU_ASSERT_EQUAL(tab.nretained, 0);
    CU_ASSERT_EQUAL(tab.evicted, 1);
    txtab_release(&tab);
}

static void beyond_the_count_limit_the_oldest_are_evicted_first(void)
{
    char gtid[32];

    start(600, 3, 1 << 20);
    for (int i = 1; i <= 5; i++) {
        snprintf(gtid, sizeof(gtid), "c1-1-%d", i);
        abort_it(add(gtid, NULL, 0, 2));
    }
    txtab_expire(&tab, now_us);
    CU_ASSERT_EQUAL(tab.nretained, 3);
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-1"));
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-2"));
    CU_ASSERT_PTR_NOT_NULL(txtab_find(&tab, "c1-1-3"));
    CU_ASSERT_PTR_NOT_NULL(txtab_find(&tab, "c1-1-5"));
    txtab_release(&tab);
}

static void kept_answers_count_against_the_byte_limit(void)
{
    char gtid[32], key[32];
    struct txent *e;

    start(600, 100, 2500); /* each answer holds ~1.6 KB; without results ~0.2 KB */
    for (int i = 1; i <= 4; i++) {
        snprintf(gtid, sizeof(gtid), "c1-1-%d", i);
        snprintf(key, sizeof(key), "key-%d", i);
        e = add(gtid, key, 1, 2);
        commit(e,
               "\n{\"rows\":[[\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
               "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"]]}"
               "\n{}");
        CU_ASSERT(e->retained_bytes > 500);
        CU_ASSERT_PTR_NOT_NULL(e->answer_body); /* an idempotent one keeps its answer */
    }
    CU_ASSERT(tab.retained_bytes > 2500);
    txtab_expire(&tab, now_us);
    CU_ASSERT(tab.retained_bytes <= 2500);
    /* the oldest keep their key and outcome, without results; the newest keep everything */
    e = txtab_find_idem(&tab, "key-1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_TRUE(tx_results_dropped(e->tx));
    CU_ASSERT_PTR_NOT_NULL(strstr(e->answer_body, "\"results\":null"));
    CU_ASSERT_PTR_NOT_NULL(strstr(e->answer_body, "\"status\":\"committed\""));
    e = txtab_find_idem(&tab, "key-4");
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    CU_ASSERT_FALSE(tx_results_dropped(e->tx));
    CU_ASSERT_EQUAL(tab.nretained, 4);
    txtab_release(&tab);
}

static void keys_are_never_evicted_before_their_time_new_ones_wait_instead(void)
{
    char gtid[32], key[32];

    start(600, 3, 1 << 20);
    for (int i = 1; i <= 5; i++) {
        snprintf(gtid, sizeof(gtid), "c1-1-%d", i);
        snprintf(key, sizeof(key), "key-%d", i);
        commit(add(gtid, key, 1, 2), "\n{}\n{}");
        CU_ASSERT_EQUAL(txtab_keys_full(&tab), i >= 3);
    }
    abort_it(add("c1-1-6", NULL, 0, 2)); /* without a key: it goes first */
    txtab_expire(&tab, now_us);
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-6"));
    for (int i = 1; i <= 5; i++) {
        snprintf(key, sizeof(key), "key-%d", i);
        CU_ASSERT_PTR_NOT_NULL(txtab_find_idem(&tab, key));
    }
    txtab_expire(&tab, now_us + 600 * 1000000u); /* their time is up */
    CU_ASSERT_EQUAL(tab.nretained, 0);
    CU_ASSERT_EQUAL(tab.nkeyed, 0);
    CU_ASSERT_FALSE(txtab_keys_full(&tab));
    txtab_release(&tab);
}

static void a_reused_key_gets_the_first_outcome_or_waits_for_it(void)
{
    struct txent *e, *found;

    start(60, 100, 1 << 20);
    e = add("c1-1-1", "k", 42, 2);
    CU_ASSERT_EQUAL(txtab_idem_lookup(&tab, "other", 42, &found), TXI_NEW);
    CU_ASSERT_PTR_NULL(found);
    CU_ASSERT_EQUAL(txtab_idem_lookup(&tab, "k", 42, &found), TXI_WAIT); /* still running */
    CU_ASSERT_PTR_EQUAL(found, e);
    CU_ASSERT_EQUAL(txtab_idem_lookup(&tab, "k", 43, &found), TXI_MISMATCH); /* another request */
    commit(e, "\n{}\n{}");
    CU_ASSERT_EQUAL(txtab_idem_lookup(&tab, "k", 42, &found), TXI_ANSWER);
    CU_ASSERT_EQUAL(e->answer_status, 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(e->answer_body, "\"status\":\"committed\""));
    txtab_release(&tab);
}

static void waiters_are_taken_all_at_once(void)
{
    struct txent *e;
    struct txwaiter *w;
    int n = 0;

    start(60, 100, 1 << 20);
    e = add("c1-1-1", NULL, 0, 2);
    txent_add_waiter(e, (struct httpd_req *)0x1);
    txent_add_waiter(e, (struct httpd_req *)0x2);
    w = txent_take_waiters(e);
    for (struct txwaiter *p = w; p; p = p->next)
        n++;
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_PTR_NULL(e->waiters);
    txwaiters_free(w);
    txtab_release(&tab);
}

struct visited {
    int n;
    char gtids[8][32];
};

static void visit(void *arg, struct txent *e)
{
    struct visited *v = arg;

    if (v->n < 8)
        snprintf(v->gtids[v->n++], sizeof(v->gtids[0]), "%s", tx_gtid(e->tx));
}

/* Keyed or not, the retained are visited (and expire) oldest first, after the live. */
static void every_entry_is_visited_live_first_then_the_retained_oldest_first(void)
{
    static const char *const want[] = {"c1-1-6", "c1-1-1", "c1-1-2", "c1-1-3", "c1-1-4", "c1-1-5"};
    struct visited v = {0};

    start(600, 100, 1 << 20);
    commit(add("c1-1-1", "k1", 1, 2), "\n{}\n{}");
    now_us += 1000;
    abort_it(add("c1-1-2", NULL, 0, 2));
    now_us += 1000;
    abort_it(add("c1-1-3", NULL, 0, 2));
    now_us += 1000;
    commit(add("c1-1-4", "k4", 1, 2), "\n{}\n{}");
    now_us += 1000;
    commit(add("c1-1-5", NULL, 0, 2), "\n{}\n{}");
    add("c1-1-6", NULL, 0, 2); /* live */
    txtab_each(&tab, visit, &v);
    CU_ASSERT_EQUAL_FATAL(v.n, 6);
    for (int i = 0; i < 6; i++)
        CU_ASSERT_STRING_EQUAL(v.gtids[i], want[i]);
    /* the oldest go first, with a key or without */
    txtab_expire(&tab, 1000000 + 600 * 1000000u);
    CU_ASSERT_PTR_NULL(txtab_find(&tab, "c1-1-1"));
    CU_ASSERT_PTR_NOT_NULL(txtab_find(&tab, "c1-1-2"));
    txtab_expire(&tab, 1000000 + 1000 * 3 + 600 * 1000000u);
    CU_ASSERT_PTR_NULL(txtab_find_idem(&tab, "k4"));
    CU_ASSERT_PTR_NOT_NULL(txtab_find(&tab, "c1-1-5"));
    CU_ASSERT_EQUAL(tab.nretained, 1);
    CU_ASSERT_EQUAL(tab.nkeyed, 0);
    txtab_release(&tab);
}

struct counted {
    int commits, ends;
    char gtids[8][32];
};

static void read_snapshot(const struct buf *snap, struct counted *c)
{
    const unsigned char *p = (const unsigned char *)snap->data;
    struct drec_arena arena = {0};
    size_t pos = 0;

    memset(c, 0, sizeof(*c));
    while (pos < snap->len) {
        uint32_t len = get_le32(p + pos + 1);
        struct drec rec;

        CU_ASSERT_EQUAL_FATAL(drec_decode_body(p[pos], p + pos + DREC_HDR, len, &arena, &rec), 0);
        if (rec.type == DREC_COMMIT && c->commits < 8)
            snprintf(c->gtids[c->commits++], sizeof(c->gtids[0]), "%s", rec.gtid);
        c->ends += rec.type == DREC_END;
        pos += DREC_HDR + len;
    }
    drec_arena_release(&arena);
}

/* Decided commits still in phase 2, and retained idempotent ones (with END); nothing else. */
static void a_checkpoint_keeps_what_recovery_and_retries_need(void)
{
    struct buf snap = BUF_INIT;
    struct tx_evarg a = {.xid = 3};
    struct counted c;
    struct txent *phase2;

    start(60, 100, 1 << 20);
    phase2 = add("c1-1-1", NULL, 0, 2); /* decided, waiting for acks */
    CU_ASSERT_EQUAL(tx_step(phase2->tx, TXE_COMMIT, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = tx_branch_on(phase2->tx, i);
        tx_step(phase2->tx, TXE_VOTE_YES, &a);
    }
    tx_step(phase2->tx, TXE_DURABLE, NULL);
    commit(add("c1-1-2", "kept", 1, 2), "\n{}\n{}"); /* retained with its key */
    commit(add("c1-1-3", NULL, 0, 2), "\n{}\n{}");   /* retained, no key: not kept */
    abort_it(add("c1-1-4", "aborted", 1, 2));        /* aborted: presumed, not kept */
    add("c1-1-5", NULL, 0, 2);                       /* not decided */
    txtab_encode_checkpoint(&tab, &snap);
    read_snapshot(&snap, &c);
    CU_ASSERT_EQUAL(c.commits, 2);
    CU_ASSERT_STRING_EQUAL(c.gtids[0], "c1-1-1");
    CU_ASSERT_STRING_EQUAL(c.gtids[1], "c1-1-2");
    CU_ASSERT_EQUAL(c.ends, 1);
    buf_release(&snap);
    txtab_release(&tab);
}

static void each_named_client_s_share_is_counted(void)
{
    struct txent *a1, *a2, *b1;
    struct txtab_client *a, *b;

    start(60, 100, 1 << 20);
    a1 = add_for("a", "c1-1-1", "k");
    a2 = add_for("a", "c1-1-2", NULL);
    b1 = add_for("b", "c1-1-3", "k"); /* the same key in b's namespace: another slot */
    add_for("", "c1-1-4", "k");       /* the shared token's: no share of its own */
    CU_ASSERT_PTR_EQUAL(txtab_find_idem(&tab, tx_idem_key(b1->tx)), b1);
    CU_ASSERT_PTR_NOT_EQUAL(txtab_find_idem(&tab, tx_idem_key(a1->tx)), b1);
    a = txtab_client(&tab, "a");
    b = txtab_client(&tab, "b");
    CU_ASSERT_PTR_NULL(txtab_client(&tab, ""));
    CU_ASSERT_EQUAL(a->nlive, 2);
    CU_ASSERT_EQUAL(b->nlive, 1);
    commit(a1, "\n{}\n{}");
    abort_it(a2);
    CU_ASSERT_EQUAL(a->nlive, 0);
    CU_ASSERT_EQUAL(a->nkeyed, 1); /* a1 keeps its key; a2 had none */
    CU_ASSERT_EQUAL(b->nkeyed, 0);
    CU_ASSERT_EQUAL(tab.nlive, 2);
    txtab_expire(&tab, now_us + 60 * 1000000u);
    CU_ASSERT_EQUAL(a->nkeyed, 0);
    CU_ASSERT_PTR_EQUAL(txtab_client(&tab, "a"), a); /* kept: the configured clients are few */
    txtab_release(&tab);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(a_transaction_is_found_by_gtid_and_by_idempotency_key),
        UNIT_TEST(a_finished_transaction_is_retained_for_its_time_then_evicted),
        UNIT_TEST(beyond_the_count_limit_the_oldest_are_evicted_first),
        UNIT_TEST(keys_are_never_evicted_before_their_time_new_ones_wait_instead),
        UNIT_TEST(kept_answers_count_against_the_byte_limit),
        UNIT_TEST(every_entry_is_visited_live_first_then_the_retained_oldest_first),
        UNIT_TEST(a_reused_key_gets_the_first_outcome_or_waits_for_it),
        UNIT_TEST(waiters_are_taken_all_at_once),
        UNIT_TEST(a_checkpoint_keeps_what_recovery_and_retries_need),
        UNIT_TEST(each_named_client_s_share_is_counted),
    };

    return unit_run("txtab", tests, sizeof(tests) / sizeof(tests[0]));
}
