/*
 * test_tx.c - the commit protocol's state table (tx.c), with the outside
 * world (struct tx_env) stubbed: every (state, event) pair is tried, and
 * the orderings that make 2PC safe are checked.
 */
#include "diagram.h"
#include "tx_impl.h"
#include "unit.h"

#include "dtx/buf.h"
#include "dtx/xalloc.h"

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* What the stub environment saw, in order. */
struct world {
    char calls[64][24];
    int ncalls;
    bool link_down[4]; /* sends to these shards fail */
    bool log_failed;   /* log_commit returns 0 */
    uint64_t next_lsn;
    int answers;
    int finished;
    enum tx_phase phases[16]; /* tx_env.phase_done, in order */
    int nphases;
};

static struct world W;

static void record(const char *what)
{
    if (W.ncalls < 64)
        snprintf(W.calls[W.ncalls++], sizeof(W.calls[0]), "%s", what);
}

static int stub_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    static const char *const names[] = {"prepare", "one_phase", "commit", "abort",
                                        "exec",    "accept",    "forget"};
    char s[24];

    (void)tx;
    if (W.link_down[b->shard])
        return DTX_EUNAVAIL;
    snprintf(s, sizeof(s), "%s:%d", names[what], b->shard);
    record(s);
    return 0;
}

static int deciding;

static void stub_deciding(struct tx *tx, int delta)
{
    (void)tx;
    deciding += delta;
}

static uint64_t stub_log_commit(struct tx *tx)
{
    (void)tx;
    record("log_commit");
    return W.log_failed ? 0 : ++W.next_lsn;
}

static uint64_t stub_log_precommit(struct tx *tx)
{
    (void)tx;
    record("log_precommit");
    return W.log_failed ? 0 : ++W.next_lsn;
}

static void stub_log_learned(struct tx *tx)
{
    (void)tx;
    record("log_learned");
}

static void stub_poll(struct tx *tx)
{
    (void)tx;
    record("poll");
}

static void stub_log_end(struct tx *tx)
{
    (void)tx;
    record("log_end");
}

static void stub_answer(struct tx *tx)
{
    (void)tx;
    W.answers++;
    record("answer");
}

static void stub_arm(struct tx *tx, uint32_t ms)
{
    (void)tx;
    (void)ms;
}

static void stub_finished(struct tx *tx)
{
    (void)tx;
    W.finished++;
}

static void stub_phase_done(struct tx *tx, enum tx_phase ph, uint64_t us)
{
    (void)tx;
    (void)us;
    if (W.nphases < 16)
        W.phases[W.nphases++] = ph;
}

static const char *const names[] = {"s0", "s1", "s2", "s3"};
static const struct tx_env env = {
    .send = stub_send,
    .log_commit = stub_log_commit,
    .log_end = stub_log_end,
    .log_precommit = stub_log_precommit,
    .log_learned = stub_log_learned,
    .poll = stub_poll,
    .answer = stub_answer,
    .arm = stub_arm,
    .finished = stub_finished,
    .deciding = stub_deciding,
    .phase_done = stub_phase_done,
    .shard_names = names,
};

static int find_call(const char *what)
{
    for (int i = 0; i < W.ncalls; i++) {
        if (strcmp(W.calls[i], what) == 0)
            return i;
    }
    return -1;
}

/* A transaction with one op on each of nbranches shards (s0, s1, ...). */
static struct tx *new_tx(size_t nbranches)
{
    struct tx_params p = {.gtid = "c1-1-1", .timeout_ms = 1000, .commit_wait_ms = 1000};
    struct tx *tx = tx_new(&p, &env, NULL);

    memset(&W, 0, sizeof(W));
    for (size_t i = 0; i < nbranches; i++) {
        cJSON *op = cJSON_CreateObject();

        cJSON_AddStringToObject(op, "sql", "SELECT 1");
        tx_add_op(tx, (int)i, op, i);
        cJSON_Delete(op);
    }
    return tx;
}

/* Puts tx in a state the way the protocol would leave it there (see the table). */
static struct tx *tx_in(enum tx_state s)
{
    static const enum tx_branch_state br[TX_NSTATES] = {
        [TX_ACTIVE] = BR_OPEN,           [TX_PREPARING] = BR_PREPARING, [TX_LOGGING] = BR_PREPARED,
        [TX_COMMITTING] = BR_COMMITTING, [TX_COMMITTED] = BR_COMMITTED, [TX_ABORTING] = BR_ABORTING,
        [TX_ABORTED] = BR_ABORTED,       [TX_ONE_PHASE] = BR_PREPARING, [TX_IN_DOUBT] = BR_PREPARED,
        [TX_UNKNOWN] = BR_LOST,
    };
    size_t n = s == TX_ONE_PHASE || s == TX_UNKNOWN ? 1 : 2;
    struct tx *tx = new_tx(n);

    tx->state = s;
    for (size_t i = 0; i < n; i++)
        tx->branches[i].state = br[s];
    tx->pending = (uint32_t)n;
    tx->lsn = s == TX_LOGGING || s == TX_COMMITTING || s == TX_COMMITTED ? 1 : 0;
    tx->durable = s == TX_COMMITTING || s == TX_COMMITTED; /* as DURABLE left it */
    memset(&W, 0, sizeof(W));
    return tx;
}

static void every_defined_pair_moves_to_its_next_state(void)
{
    int defined = 0;

    for (int s = 0; s < TX_NSTATES; s++) {
        for (int e = 0; e < TX_NEVENTS; e++) {
            struct tx *tx;
            struct tx_evarg a = {.xid = 42};
            enum tx_event next = TXE_NONE;

            if (!tx_is_defined(2, (enum tx_state)s, (enum tx_event)e))
                continue;
            defined++;
            tx = tx_in((enum tx_state)s);
            a.b = &tx->branches[0];
            CU_ASSERT_EQUAL(tx_step_one(tx, (enum tx_event)e, &a, &next), 0);
            if (tx->state != tx_next_state(2, (enum tx_state)s, (enum tx_event)e))
                fprintf(stderr, "\n  %s --%s--> %s, table says %s\n", tx_state_name(s),
                        tx_event_name(e), tx_state_name(tx->state),
                        tx_state_name(tx_next_state(2, s, e)));
            CU_ASSERT_EQUAL(tx->state, tx_next_state(2, (enum tx_state)s, (enum tx_event)e));
            /* a follow-up event is defined where the transition left the transaction */
            CU_ASSERT(next == TXE_NONE || tx_is_defined(2, tx->state, next));
            tx_free(tx);
        }
    }
    CU_ASSERT(defined >= 30);
}

static void every_undefined_pair_is_rejected_and_changes_nothing(void)
{
    for (int s = 0; s < TX_NSTATES; s++) {
        for (int e = 0; e < TX_NEVENTS; e++) {
            struct tx *tx;
            struct tx_evarg a = {.xid = 42};
            enum tx_branch_state b0;

            if (tx_is_defined(2, (enum tx_state)s, (enum tx_event)e))
                continue;
            tx = tx_in((enum tx_state)s);
            a.b = &tx->branches[0];
            a.results = "\n{}";
            a.results_len = 3;
            b0 = tx->branches[0].state;
            CU_ASSERT_EQUAL(tx_step(tx, (enum tx_event)e, &a), DTX_ESTATE);
            CU_ASSERT_EQUAL(tx->state, (enum tx_state)s);
            CU_ASSERT_EQUAL(tx->branches[0].state, b0);
            CU_ASSERT_EQUAL(W.ncalls, 0);
            tx_free(tx);
        }
    }
}

static void only_the_commit_decision_is_forced_to_disk(void)
{
    for (int s = 0; s < TX_NSTATES; s++) {
        for (int e = 0; e < TX_NEVENTS; e++) {
            bool durable = tx_is_durable(2, (enum tx_state)s, (enum tx_event)e);

            CU_ASSERT_EQUAL(durable,
                            s == TX_PREPARING && (e == TXE_ALL_VOTED || e == TXE_KEEP_ANSWER));
        }
    }
}

static void commit_is_durable_before_any_commit_is_sent(void)
{
    struct tx *tx = new_tx(3);
    struct tx_evarg a = {.xid = 7};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 3; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_LOGGING);
    CU_ASSERT(find_call("log_commit") >= 0);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1); /* nothing sent before DURABLE */
    CU_ASSERT_EQUAL(W.answers, 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTING);
    CU_ASSERT(find_call("commit:0") > find_call("log_commit"));
    CU_ASSERT(find_call("commit:2") > find_call("log_commit"));
    CU_ASSERT_EQUAL(W.answers, 0); /* the client hears after the acks */
    for (int i = 0; i < 3; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(W.answers, 1);
    CU_ASSERT(find_call("log_end") > find_call("commit:2"));
    CU_ASSERT_EQUAL(W.finished, 1);
    tx_free(tx);
}

static void vote_no_aborts_every_other_shard_without_a_log_record(void)
{
    struct tx *tx = new_tx(3);
    struct dtx_err e;
    struct tx_evarg a = {.err = &e};

    dtx_err_clear(&e);
    dtx_err_set(&e, DTX_ESQL, "boom");
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_NO, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT(find_call("abort:0") >= 0);
    CU_ASSERT(find_call("abort:2") >= 0);
    CU_ASSERT_EQUAL(find_call("abort:1"), -1); /* it rolled back itself */
    CU_ASSERT_EQUAL(find_call("log_commit"), -1);
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_ESQL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tx->error);
    CU_ASSERT_STRING_EQUAL(tx->error->shard, "s1");
    a.err = NULL;
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    a.b = &tx->branches[2];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
    CU_ASSERT_EQUAL(W.answers, 1);
    tx_free(tx);
}

static void unreachable_participant_aborts_the_transaction(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {};

    W.link_down[1] = true;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT_EQUAL(tx->branches[1].state, BR_UNREACHED);
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_EUNAVAIL);
    CU_ASSERT(find_call("abort:0") > find_call("prepare:0"));
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
    tx_free(tx);
}

static void all_readonly_votes_commit_without_log_or_phase_two(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_READONLY, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(find_call("log_commit"), -1);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1);
    CU_ASSERT_EQUAL(W.answers, 1);
    tx_free(tx);
}

/*
 * With an idempotency key, an all-read-only transaction still gets a COMMIT
 * record (without branches): the key's answer must outlive a restart. It
 * answers once the record is durable and sends no phase two; under 3PC the
 * same (no acceptor has anything to decide), and a record the log refuses
 * aborts it there too, instead of asking the participants to settle it.
 */
static struct tx *new_tx3(size_t n);

static void a_keyed_read_only_transaction_is_recorded_before_its_answer(void)
{
    for (int protocol = 2; protocol <= 3; protocol++) {
        for (int refuse = 0; refuse <= 1; refuse++) {
            struct tx *tx = protocol == 3 ? new_tx3(2) : new_tx(2);
            struct tx_evarg a = {};

            tx->idem_key = strdup("k");
            W.log_failed = refuse;
            CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
            for (int i = 0; i < 2; i++) {
                a.b = &tx->branches[i];
                CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_READONLY, &a), 0);
            }
            CU_ASSERT(find_call("log_commit") >= 0);
            CU_ASSERT_EQUAL(find_call("log_precommit"), -1);
            if (refuse) {
                CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
                CU_ASSERT_EQUAL(tx_error_code(tx), DTX_ELOGFAIL);
                CU_ASSERT_EQUAL(find_call("poll"), -1);
            } else {
                CU_ASSERT_EQUAL(tx->state, TX_LOGGING);
                CU_ASSERT_EQUAL(W.answers, 0); /* not before the record is durable */
                CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
                CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
                CU_ASSERT_EQUAL(tx_path(tx), TXP_READONLY);
                CU_ASSERT(find_call("log_end") >= 0);
            }
            /* under 3PC each branch registered its acceptor row: nobody is in doubt */
            CU_ASSERT_EQUAL(find_call("forget:0") >= 0, protocol == 3);
            CU_ASSERT_EQUAL(find_call("forget:1") >= 0, protocol == 3);
            CU_ASSERT_EQUAL(W.answers, 1);
            CU_ASSERT_EQUAL(find_call("commit:0"), -1);
            CU_ASSERT_EQUAL(find_call("commit:1"), -1);
            CU_ASSERT_EQUAL(find_call("accept:0"), -1);
            tx_free(tx);
        }
    }
}

static void readonly_branch_takes_no_part_in_phase_two(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 9};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_READONLY, &a), 0);
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT(find_call("commit:1") >= 0);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1);
    CU_ASSERT_EQUAL(tx->pending, 1);
    tx_free(tx);
}

static void failed_log_write_leaves_the_transaction_in_doubt(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LOG_FAILED, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_IN_DOUBT);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1);
    CU_ASSERT_EQUAL(find_call("abort:0"), -1); /* the record may be on disk: decide at restart */
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_EUNKNOWN);
    CU_ASSERT_EQUAL(W.answers, 1);
    tx_free(tx);
}

static void log_that_refuses_the_record_aborts_the_transaction(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    W.log_failed = true;
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT(find_call("abort:0") >= 0);
    CU_ASSERT(find_call("abort:1") >= 0);
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_ELOGFAIL);
    tx_free(tx);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

enum { RENDER_OPS = 1000, RENDER_BIG = 16 << 20 };

/*
 * Renders the results of nops ops, the one at big_at a 16 MB value, checks
 * them, and returns the seconds the rendering took.
 */
static double render_with_a_big_result(int nops, int big_at)
{
    const int small_at = big_at == 0 ? nops - 1 : 0;
    struct tx *tx = new_tx(0);
    struct buf results = BUF_INIT;
    struct tx_evarg a = {.xid = 1};
    char *out, *big = xmalloc(RENDER_BIG + 1);
    cJSON *arr, *row;
    double t0, took;

    memset(big, 'z', RENDER_BIG);
    big[RENDER_BIG] = '\0';
    for (int i = 0; i < nops; i++) {
        cJSON *op = cJSON_CreateObject();

        cJSON_AddStringToObject(op, "sql", "SELECT 1");
        tx_add_op(tx, 0, op, (size_t)i);
        cJSON_Delete(op);
        if (i == big_at)
            buf_printf(&results, "\n{\"rows\":[[\"%s\"]]}", big);
        else
            buf_printf(&results, "\n{\"rows\":[[%d]]}", i);
    }
    a.results = results.data;
    a.results_len = results.len;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    t0 = now_s();
    out = tx_render_results(tx);
    took = now_s() - t0;
    arr = cJSON_Parse(out);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(arr), nops);
    row = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, big_at), "rows"), 0);
    CU_ASSERT_EQUAL(strlen(cJSON_GetArrayItem(row, 0)->valuestring), (size_t)RENDER_BIG);
    if (small_at != big_at) {
        row = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetArrayItem(arr, small_at), "rows"), 0);
        CU_ASSERT_EQUAL(cJSON_GetArrayItem(row, 0)->valueint, small_at);
    }
    cJSON_Delete(arr);
    free(out);
    free(big);
    buf_release(&results);
    tx_free(tx);
    return took;
}

static double least(double a, double b)
{
    return a < b ? a : b;
}

/*
 * The answer's results are found in one pass over each branch's: a search
 * from the start for each op took 1,000 scans of a 16 MB result in front
 * of them (half a second or more on the coordinator's loop, every other
 * client waiting). Timed against the big result alone, one op, which any
 * rescan per op (from the start, or of the whole buffer) would not pay for
 * 1,000 times, so that a slow machine slows both sides alike. The best of
 * three each; sanitized build, the big result first / last of 1,000 ops
 * / alone: 0.080 / 0.091 / 0.088 s in one pass; 0.376 / 0.061 / 0.053 s with
 * a search from the start for each op; 0.515 / 0.428 / 0.068 s with a scan
 * of the whole buffer for each op.
 */
static void rendering_the_results_is_linear_in_their_size(void)
{
    double first = 1e9, last = 1e9, alone = 1e9;

    for (int i = 0; i < 3; i++) {
        first = least(first, render_with_a_big_result(RENDER_OPS, 0));
        last = least(last, render_with_a_big_result(RENDER_OPS, RENDER_OPS - 1));
        alone = least(alone, render_with_a_big_result(1, 0));
    }
    CU_ASSERT(first < 2.5 * alone + 0.01);
    CU_ASSERT(last < 2.5 * alone + 0.01);
    if (!(first < 2.5 * alone + 0.01 && last < 2.5 * alone + 0.01))
        fprintf(stderr,
                "rendering took %.3f s with the big result first, %.3f s last, %.3f s alone\n",
                first, last, alone);
}

static void results_too_big_for_the_log_abort_an_idempotent_transaction(void)
{
    static const char results[] = "\n[{\"rows\":[[\"0123456789\"]]}]";
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1, .results = results, .results_len = sizeof(results) - 1};

    tx->idem_key = strdup("k");
    tx->results_limit = sizeof(results); /* one branch's results fit, two do not */
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT_EQUAL(find_call("log_commit"), -1); /* nothing was logged */
    CU_ASSERT(find_call("abort:0") >= 0);
    CU_ASSERT(find_call("abort:1") >= 0);
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_ETOOBIG);
    CU_ASSERT_PTR_NOT_NULL(strstr(tx->error->msg, "max_logged_results_bytes"));
    tx_free(tx);

    tx = new_tx(2); /* without a key the results are not logged: no limit */
    tx->results_limit = 1;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_LOGGING);
    CU_ASSERT(find_call("log_commit") >= 0);
    tx_free(tx);
}

static void lost_commit_is_resent_when_the_participant_returns(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    W.link_down[1] = true;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx->branches[1].state, BR_LOST);
    CU_ASSERT_EQUAL(tx->pending, 2);
    W.link_down[1] = false;
    W.ncalls = 0;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_RESEND, NULL), 0);
    CU_ASSERT(find_call("commit:1") >= 0);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1); /* only what was lost */
    CU_ASSERT_EQUAL(tx->branches[1].state, BR_COMMITTING);
    tx_free(tx);
}

static void prepare_timeout_aborts_and_names_the_late_shard(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_TIMEOUT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT_EQUAL(tx_error_code(tx), DTX_ETIMEDOUT);
    CU_ASSERT_PTR_NOT_NULL_FATAL(tx->error);
    CU_ASSERT_STRING_EQUAL(tx->error->shard, "s1");
    CU_ASSERT(find_call("abort:1") >= 0);
    CU_ASSERT(find_call("abort:0") >= 0);
    tx_free(tx);
}

static void one_phase_commit_sends_one_message_and_no_log_record(void)
{
    struct tx *tx = new_tx(1);
    struct tx_evarg a = {};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_1PC, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ONE_PHASE);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMITTED_1PC, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(W.ncalls, 2); /* one_phase:0, answer */
    CU_ASSERT_EQUAL(find_call("log_commit"), -1);
    tx_free(tx);
}

static int find_state(const char *name)
{
    for (int s = 0; s < TX_NSTATES; s++) {
        if (strcmp(tx_state_name((enum tx_state)s), name) == 0)
            return s;
    }
    return -1;
}

static int find_event(const char *name)
{
    for (int e = 0; e < TX_NEVENTS; e++) {
        if (strcmp(tx_event_name((enum tx_event)e), name) == 0)
            return e;
    }
    return -1;
}

/* Every line of the diagram in tx.c is a row of the table, and every row is a line. */
static void the_diagram_in_tx_c_is_the_table(void)
{
    struct diagram_row rows[128];
    int n = diagram_read(DTX_SRC_DIR "/coordinator/tx.c", rows, 128), defined = 0;

    CU_ASSERT_FATAL(n > 0);
    for (int i = 0; i < n; i++) {
        int from = find_state(rows[i].from), ev = find_event(rows[i].ev),
            to = find_state(rows[i].to);
        const char *action;

        if (from < 0 || ev < 0 || to < 0 || !tx_is_defined(2, from, ev)) {
            fprintf(stderr, "\n  diagram line %s --%s--> %s is not in the table\n", rows[i].from,
                    rows[i].ev, rows[i].to);
            CU_FAIL("a diagram line is not in the table");
            continue;
        }
        action = tx_action_name(2, from, ev);
        CU_ASSERT_EQUAL(tx_next_state(2, from, ev), to);
        CU_ASSERT_STRING_EQUAL(action, rows[i].action);
        CU_ASSERT_EQUAL(tx_is_durable(2, from, ev), rows[i].durable);
    }
    for (int st = 0; st < TX_NSTATES; st++) {
        for (int e = 0; e < TX_NEVENTS; e++)
            defined += tx_is_defined(2, st, e);
    }
    CU_ASSERT_EQUAL(defined, n); /* no row the diagram leaves out */
}

/* The guard in send(): a COMMIT before the decision is durable is a bug that stops the process. */
static void a_commit_without_a_durable_decision_stops_the_process(void)
{
    pid_t pid = fork();
    int status = 0;

    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        struct tx *tx = tx_in(TX_COMMITTING);

        tx->durable = false; /* a state no transition leaves it in */
        tx_step(tx, TXE_TIMEOUT, NULL);
        _exit(0);
    }
    CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
    CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT);
}

static void commit_takes_one_phase_two_phases_or_nothing_by_its_branches(void)
{
    struct tx *tx = new_tx(0);

    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED); /* nothing to commit */
    CU_ASSERT_EQUAL(W.ncalls, 1);             /* only the answer */
    tx_free(tx);

    tx = new_tx(1);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ONE_PHASE);
    CU_ASSERT(find_call("one_phase:0") >= 0);
    tx_free(tx);

    tx = new_tx(1);
    tx->idem_key = strdup("k"); /* its answer must survive a restart: a COMMIT record */
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_PREPARING);
    CU_ASSERT(find_call("prepare:0") >= 0);
    tx_free(tx);

    tx = new_tx(3);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_PREPARING);
    CU_ASSERT(find_call("prepare:2") >= 0);
    tx_free(tx);
}

static void kick_resends_phase_two_now_and_backs_off_afresh(void)
{
    struct tx *tx = tx_in(TX_COMMITTING);

    tx->retry_ms = 8000;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_KICK, NULL), 0);
    CU_ASSERT(find_call("commit:0") >= 0);
    CU_ASSERT(find_call("commit:1") >= 0);
    CU_ASSERT_EQUAL(tx->retry_ms, 2 * TX_RETRY_MIN_MS); /* armed at the minimum, then doubled */
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTING);
    tx_free(tx);
}

static void a_forgotten_branch_counts_as_acknowledged_once(void)
{
    struct tx *tx = tx_in(TX_COMMITTING);
    struct tx_evarg a = {.b = &tx->branches[1]};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_FORGET, &a), 0);
    CU_ASSERT(tx->branches[1].forgotten);
    CU_ASSERT_EQUAL(tx->pending, 1);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_FORGET, &a), 0); /* again: nothing more */
    CU_ASSERT_EQUAL(tx->pending, 1);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT(find_call("log_end") >= 0);
    tx_free(tx);
}

static void presumed_abort_is_only_for_gtids_this_coordinator_issued(void)
{
    CU_ASSERT_EQUAL(tx_presumed("c1-3-7", "c1", 3, 9), DTX_DEC_ABORT);
    CU_ASSERT_EQUAL(tx_presumed("c1-2-900", "c1", 3, 9), DTX_DEC_ABORT);  /* an earlier epoch */
    CU_ASSERT_EQUAL(tx_presumed("c1-3-10", "c1", 3, 9), DTX_DEC_UNKNOWN); /* not issued yet */
    CU_ASSERT_EQUAL(tx_presumed("c1-4-1", "c1", 3, 9), DTX_DEC_UNKNOWN);
    CU_ASSERT_EQUAL(tx_presumed("c9-1-1", "c1", 3, 9), DTX_DEC_UNKNOWN); /* another coordinator */
    CU_ASSERT_EQUAL(tx_presumed("not-a-gtid", "c1", 3, 9), DTX_DEC_UNKNOWN);
}

static void the_decision_follows_the_state(void)
{
    static const struct {
        enum tx_state s;
        enum dtx_decision d;
    } want[] = {
        {TX_ACTIVE, DTX_DEC_IN_FLIGHT},    {TX_PREPARING, DTX_DEC_IN_FLIGHT},
        {TX_LOGGING, DTX_DEC_IN_FLIGHT},   {TX_IN_DOUBT, DTX_DEC_IN_FLIGHT},
        {TX_COMMITTING, DTX_DEC_COMMIT},   {TX_COMMITTED, DTX_DEC_COMMIT},
        {TX_ABORTING, DTX_DEC_ABORT},      {TX_ABORTED, DTX_DEC_ABORT},
        {TX_ONE_PHASE, DTX_DEC_IN_FLIGHT}, {TX_UNKNOWN, DTX_DEC_UNKNOWN},
    };

    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        struct tx *tx = tx_in(want[i].s);
        uint64_t xid = 1;

        tx->branches[0].xid = 77;
        CU_ASSERT_EQUAL(tx_decision(tx, 0, &xid), want[i].d);
        CU_ASSERT_EQUAL(xid, want[i].d == DTX_DEC_COMMIT ? 77u : 0u);
        tx_free(tx);
    }
}

static void a_checkpoint_keeps_decided_commits_and_retained_idempotent_ones(void)
{
    for (int s = 0; s < TX_NSTATES; s++) {
        struct tx *tx = tx_in((enum tx_state)s);
        enum tx_keep want = TXK_NONE;

        tx->lsn = 1;
        if (s == TX_LOGGING || s == TX_COMMITTING)
            want = TXK_DECIDED;
        CU_ASSERT_EQUAL(tx_checkpoint_keep(tx), want);
        tx->idem_key = strdup("k");
        if (s == TX_COMMITTED)
            want = TXK_RETAINED;
        CU_ASSERT_EQUAL(tx_checkpoint_keep(tx), want);
        tx->lsn = 0; /* never recorded: nothing to keep, whatever the state */
        CU_ASSERT_EQUAL(tx_checkpoint_keep(tx), TXK_NONE);
        tx_free(tx);
    }
}

static void interactive_calls_are_admitted_by_state(void)
{
    struct dtx_err why;
    struct tx *tx = tx_in(TX_ACTIVE);

    tx->interactive = true;
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_GO);
    tx_begin_call(tx, TX_CALL_OPS);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_REFUSE); /* one call at a time */
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_COMMIT, &why), TXA_REFUSE);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_ABORT, &why), TXA_GO); /* an abort overtakes it */
    tx->state = TX_ABORTING;
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_OUTCOME);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_ABORT, &why), TXA_ABORTED);
    tx->state = TX_PREPARING;
    tx->call = TX_CALL_NONE;
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_REFUSE);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_COMMIT, &why), TXA_WAIT);  /* a retried commit */
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_ABORT, &why), TXA_REFUSE); /* too late */
    tx->interactive = false;
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.msg, "not begun as interactive"));
    tx_free(tx);

    /* rebuilt from a COMMIT record, which does not say whether it was interactive: a repeated
     * commit gets its outcome, ops and aborts are refused as too late */
    tx = new_tx(0);
    tx_add_prepared_branch(tx, 0, 5, NULL);
    tx_set_replayed(tx, 1, NULL);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_RECOVER_DONE, NULL), 0);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_COMMIT, &why), TXA_OUTCOME);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_OPS, &why), TXA_REFUSE);
    CU_ASSERT_EQUAL(tx_admit_call(tx, TX_CALL_ABORT, &why), TXA_REFUSE);
    CU_ASSERT_PTR_NOT_NULL(strstr(why.msg, "too late to abort"));
    tx_free(tx);
}

/* One shard with a key under "3pc": two-phase commit (a COMMIT record, no pre-commit). */
static void a_keyed_single_shard_three_pc_transaction_takes_two_phase_commit(void)
{
    struct tx *tx = new_tx3(1);
    struct tx_evarg a = {.xid = 3};

    tx->idem_key = strdup("k");
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_PREPARING);
    CU_ASSERT_FALSE(tx_three_pc(tx)); /* its prepare carries no 3PC part */
    CU_ASSERT_EQUAL(tx_protocol(tx), 3);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_LOGGING);
    CU_ASSERT_EQUAL(find_call("log_precommit"), -1);
    CU_ASSERT(find_call("log_commit") >= 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT(find_call("commit:0") >= 0);
    CU_ASSERT_EQUAL(find_call("accept:0"), -1);
    tx_free(tx);

    tx = new_tx3(2); /* two shards: 3PC as asked */
    tx->idem_key = strdup("k");
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_TRUE(tx_three_pc(tx));
    tx_free(tx);
}

static void the_store_hears_how_many_transactions_await_votes(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 5};

    deciding = 0;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    CU_ASSERT_EQUAL(deciding, 1);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    CU_ASSERT_EQUAL(deciding, 1);
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    CU_ASSERT_EQUAL(deciding, 0); /* LOGGING: no longer awaiting votes */
    tx_free(tx);
}

/* ---- three-phase commit (tx3pc.c) ----------------------------------------------------- */

/* A 3PC transaction (gtid c1-1-1) with one op on each of n shards. */
static struct tx *new_tx3(size_t n)
{
    struct tx_params p = {
        .gtid = "c1-1-1", .protocol = 3, .timeout_ms = 1000, .commit_wait_ms = 1000};
    struct tx *tx = tx_new(&p, &env, NULL);

    memset(&W, 0, sizeof(W));
    for (size_t i = 0; i < n; i++) {
        cJSON *op = cJSON_CreateObject();

        cJSON_AddStringToObject(op, "sql", "SELECT 1");
        tx_add_op(tx, (int)i, op, i);
        cJSON_Delete(op);
    }
    return tx;
}

static void all_vote_yes(struct tx *tx)
{
    struct tx_evarg a = {.xid = 7};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    for (size_t i = 0; i < tx->nbranches; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
}

/* Every line of the diagram in tx3pc.c is a row of its table, and every row is a line. */
static void the_diagram_in_tx3pc_c_is_its_table(void)
{
    struct diagram_row rows[128];
    int n = diagram_read(DTX_SRC_DIR "/coordinator/tx3pc.c", rows, 128);

    CU_ASSERT_FATAL(n > 0);
    for (int i = 0; i < n; i++) {
        int from = find_state(rows[i].from), ev = find_event(rows[i].ev),
            to = find_state(rows[i].to);
        const struct tx_transition *t =
            from < 0 || ev < 0 ? NULL : tx3pc_find((enum tx_state)from, (enum tx_event)ev);

        if (!t || to < 0) {
            fprintf(stderr, "\n  diagram line %s --%s--> %s is not in the table\n", rows[i].from,
                    rows[i].ev, rows[i].to);
            CU_FAIL("a diagram line is not in the table");
            continue;
        }
        CU_ASSERT_EQUAL((int)t->to, to);
        CU_ASSERT_STRING_EQUAL(t->action_name, rows[i].action);
        CU_ASSERT_EQUAL(t->durable, rows[i].durable);
    }
    CU_ASSERT_EQUAL((size_t)n, tx3pc_ntransitions); /* no row the diagram leaves out */
}

static void three_pc_commits_once_a_majority_accepted_the_precommit(void)
{
    struct tx *tx = new_tx3(3); /* 4 acceptors with the coordinator: a majority is 3 */
    struct tx_evarg a = {0};

    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx->state, TX_PRECOMMITTING);
    CU_ASSERT(find_call("log_precommit") >= 0);
    CU_ASSERT_EQUAL(find_call("accept:0"), -1); /* nothing sent before it is durable */
    CU_ASSERT_EQUAL(tx_status(tx), DTX_ST_PRECOMMITTED);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ACCEPTING);
    CU_ASSERT(find_call("accept:0") > find_call("log_precommit"));
    CU_ASSERT(find_call("accept:2") > find_call("log_precommit"));
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACCEPTED, &a), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACCEPTED, &a), 0); /* a duplicate counts once */
    CU_ASSERT_EQUAL(tx->state, TX_ACCEPTING);          /* 2 of 4 */
    CU_ASSERT_EQUAL(find_call("log_commit"), -1);
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACCEPTED, &a), 0); /* 3 of 4: commit is chosen */
    CU_ASSERT_EQUAL(tx->state, TX_LOGGING);
    CU_ASSERT(find_call("log_commit") >= 0);
    CU_ASSERT_EQUAL(find_call("commit:0"), -1);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTING);
    CU_ASSERT(find_call("commit:2") > find_call("log_commit"));
    tx_free(tx);
}

/* A 3PC transaction on two shards, committed: both voted, s1 accepted, COMMIT durable. */
static struct tx *tx3_committing(void)
{
    struct tx *tx = new_tx3(2);
    struct tx_evarg a = {.b = &tx->branches[0]};

    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACCEPTED, &a), 0); /* 2 of 3 */
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTING);
    return tx;
}

static void three_pc_tells_the_shards_to_forget_once_every_participant_acknowledged(void)
{
    struct tx *tx = tx3_committing();
    struct tx_evarg a = {.b = &tx->branches[0], .ack = TX_ACK_COMMITTED};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(find_call("forget:0"), -1); /* s2 may still be in doubt */
    CU_ASSERT(!tx_acceptors_done(tx));          /* nor may a shard's sweep delete its row */
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT(tx_acceptors_done(tx));
    CU_ASSERT(find_call("forget:0") > find_call("log_end"));
    CU_ASSERT(find_call("forget:1") > find_call("log_end"));
    tx_free(tx);

    tx = new_tx3(2); /* aborted: s2 votes no, s1 acknowledges the abort */
    a = (struct tx_evarg){.b = &tx->branches[0], .xid = 7};
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_NO, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT_EQUAL(find_call("forget:0"), -1);
    CU_ASSERT(!tx_acceptors_done(tx));
    a = (struct tx_evarg){.b = &tx->branches[0], .ack = TX_ACK_ABORTED};
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
    CU_ASSERT(tx_acceptors_done(tx));
    CU_ASSERT(find_call("forget:0") >= 0);
    CU_ASSERT(find_call("forget:1") >= 0);
    tx_free(tx);

    tx = new_tx3(2); /* read-only everywhere: nothing prepared, the rows go at once */
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    for (size_t i = 0; i < 2; i++) {
        a = (struct tx_evarg){.b = &tx->branches[i]};
        CU_ASSERT_EQUAL(find_call("forget:0"), -1);
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_READONLY, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT(find_call("forget:0") >= 0);
    CU_ASSERT(find_call("forget:1") >= 0);
    tx_free(tx);
}

static void no_shard_forgets_while_a_participant_may_still_be_in_doubt(void)
{
    struct tx *tx = tx3_committing();
    struct tx_evarg a = {.b = &tx->branches[1]};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_FORGET, &a), 0); /* an operator gave up on s2 */
    a = (struct tx_evarg){.b = &tx->branches[0], .ack = TX_ACK_COMMITTED};
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(find_call("forget:0"), -1);
    CU_ASSERT_EQUAL(find_call("forget:1"), -1);
    CU_ASSERT(!tx_acceptors_done(tx)); /* nor does it vouch for a row a sweep asks about */
    tx_free(tx);

    /*
     * Rebuilt from the store already finished (COMMIT and END): an operator's giving up on a
     * branch counted as its acknowledgement and is not all there, so it never vouches either.
     */
    {
        struct tx_params p = {
            .gtid = "c1-1-2", .protocol = 3, .timeout_ms = 1000, .commit_wait_ms = 1000};

        tx = tx_new(&p, &env, NULL);
        tx_add_prepared_branch(tx, 0, 5, NULL);
        tx_add_prepared_branch(tx, 1, 6, NULL);
        tx_set_replayed(tx, 1, NULL);
        CU_ASSERT_EQUAL(tx_step(tx, TXE_RECOVER_DONE, NULL), 0);
        CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
        CU_ASSERT(!tx_acceptors_done(tx));
        tx_free(tx);
    }

    tx = tx_in(TX_COMMITTING); /* two-phase commit keeps no acceptor state */
    for (size_t i = 0; i < 2; i++) {
        a = (struct tx_evarg){.b = &tx->branches[i]};
        CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(find_call("forget:0"), -1);
    CU_ASSERT(!tx_acceptors_done(tx));
    tx_free(tx);
}

static void three_pc_that_cannot_reach_a_majority_learns_the_participants_decision(void)
{
    struct tx *tx = new_tx3(2); /* 3 acceptors: a majority is 2 */
    struct tx_evarg a = {0};

    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_REJECTED, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ACCEPTING); /* itself and s1 could still make 2 */
    a.b = &tx->branches[1];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_REJECTED, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_LEARNING); /* never aborts on its own once pre-committed */
    CU_ASSERT_EQUAL(find_call("abort:0"), -1);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_TIMEOUT, NULL), 0);
    CU_ASSERT(find_call("poll") >= 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LEARNED_ABORT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
    CU_ASSERT(tx_is_learned(tx));
    CU_ASSERT(find_call("log_learned") >= 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LEARNED_COMMIT, NULL), DTX_ESTATE); /* one outcome */
    CU_ASSERT(!tx_acceptors_done(tx)); /* a participant may still be in doubt */
    tx_free(tx);

    /*
     * Learned commit: final, but nobody acknowledged anything here. A participant cut off
     * from the round is still in doubt and needs the others' acceptances: a shard's sweep
     * must not be told that it may delete its row.
     */
    tx = new_tx3(2);
    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LOG_FAILED, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_LEARNING);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LEARNED_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT(!tx_acceptors_done(tx));
    CU_ASSERT_EQUAL(find_call("forget:0"), -1);
    tx_free(tx);
}

static void three_pc_never_precommits_after_promising_a_recovery_leader(void)
{
    struct tx *tx = new_tx3(2);
    struct ballot b = {.counter = 1, .node = "p:s1"};

    CU_ASSERT_TRUE(tx3pc_promise(tx, &b));
    CU_ASSERT_TRUE(tx3pc_promise(tx, &b)); /* asked again: the same promise */
    b.counter = 0;
    CU_ASSERT_FALSE(tx3pc_promise(tx, &b));
    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx->state, TX_ABORTING);
    CU_ASSERT_EQUAL(find_call("log_precommit"), -1);
    CU_ASSERT(find_call("abort:0") >= 0);
    tx_free(tx);
}

static void only_the_precommit_and_the_commit_decision_are_forced_in_three_pc(void)
{
    for (size_t i = 0; i < tx3pc_ntransitions; i++) {
        const struct tx_transition *t = &tx3pc_transitions[i];

        CU_ASSERT_EQUAL(t->durable, (t->from == TX_PREPARING && t->ev == TXE_ALL_VOTED) ||
                                        (t->from == TX_ACCEPTING && t->ev == TXE_MAJORITY));
    }
}

/* The phases W saw are exactly want (n of them), in order. */
static void assert_phases(const enum tx_phase *want, int n)
{
    CU_ASSERT_EQUAL_FATAL(W.nphases, n);
    for (int i = 0; i < n; i++)
        CU_ASSERT_STRING_EQUAL(tx_phase_name(W.phases[i]), tx_phase_name(want[i]));
}

static void each_phase_is_reported_once_when_it_ends(void)
{
    static const enum tx_phase two[] = {TXPH_PREPARE, TXPH_COMMIT_LOG, TXPH_COMMIT};
    static const enum tx_phase three[] = {TXPH_PREPARE, TXPH_PRECOMMIT_LOG, TXPH_PRECOMMIT,
                                          TXPH_COMMIT_LOG, TXPH_COMMIT};
    static const enum tx_phase aborted[] = {TXPH_PREPARE, TXPH_ABORT};
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0); /* the first vote ends nothing */
        CU_ASSERT_EQUAL(W.nphases, i);
    }
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    }
    assert_phases(two, 3);
    tx_free(tx);

    tx = new_tx3(2);
    all_vote_yes(tx);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        tx_step(tx, TXE_ACCEPTED, &a);
    }
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    assert_phases(three, 5);
    CU_ASSERT(tx_phase_is_3pc(TXPH_PRECOMMIT) && !tx_phase_is_3pc(TXPH_COMMIT));
    tx_free(tx);

    tx = new_tx(2);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMIT, NULL), 0);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_TIMEOUT, NULL), 0);
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    }
    CU_ASSERT_EQUAL(tx->state, TX_ABORTED);
    assert_phases(aborted, 2);
    tx_free(tx);
}

static void a_transaction_rebuilt_from_the_store_reports_no_phase(void)
{
    struct tx *tx = new_tx(0);
    struct tx_evarg a = {0};

    tx_add_prepared_branch(tx, 0, 5, NULL);
    tx_set_replayed(tx, 1, NULL);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_RECOVER, NULL), 0);
    a.b = &tx->branches[0];
    tx_step(tx, TXE_RESEND, NULL);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_ACK, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(W.nphases, 0);
    tx_free(tx);
}

static void in_doubt_means_phase_two_cannot_finish_now_or_the_log_failed(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {.xid = 1};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_2PC, NULL), 0);
    CU_ASSERT_FALSE(tx_is_in_doubt(tx)); /* votes awaited: the coordinator still decides */
    for (int i = 0; i < 2; i++) {
        a.b = &tx->branches[i];
        CU_ASSERT_EQUAL(tx_step(tx, TXE_VOTE_YES, &a), 0);
    }
    CU_ASSERT_FALSE(tx_is_in_doubt(tx)); /* forcing its record */
    W.link_down[1] = true;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_DURABLE, NULL), 0);
    CU_ASSERT_TRUE(tx_is_in_doubt(tx)); /* s1's COMMIT PREPARED could not be sent */
    W.link_down[1] = false;
    CU_ASSERT_EQUAL(tx_step(tx, TXE_RESEND, NULL), 0);
    CU_ASSERT_FALSE(tx_is_in_doubt(tx)); /* delivered once: acks are awaited */
    CU_ASSERT_EQUAL(tx_step(tx, TXE_TIMEOUT, NULL), 0);
    CU_ASSERT_TRUE(tx_is_in_doubt(tx)); /* resent: a shard did not acknowledge */
    tx_free(tx);

    tx = tx_in(TX_LOGGING);
    CU_ASSERT_EQUAL(tx_step(tx, TXE_LOG_FAILED, NULL), 0);
    CU_ASSERT_TRUE(tx_is_in_doubt(tx));
    tx_free(tx);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(every_defined_pair_moves_to_its_next_state),
        UNIT_TEST(every_undefined_pair_is_rejected_and_changes_nothing),
        UNIT_TEST(only_the_commit_decision_is_forced_to_disk),
        UNIT_TEST(commit_is_durable_before_any_commit_is_sent),
        UNIT_TEST(vote_no_aborts_every_other_shard_without_a_log_record),
        UNIT_TEST(unreachable_participant_aborts_the_transaction),
        UNIT_TEST(all_readonly_votes_commit_without_log_or_phase_two),
        UNIT_TEST(a_keyed_read_only_transaction_is_recorded_before_its_answer),
        UNIT_TEST(readonly_branch_takes_no_part_in_phase_two),
        UNIT_TEST(failed_log_write_leaves_the_transaction_in_doubt),
        UNIT_TEST(log_that_refuses_the_record_aborts_the_transaction),
        UNIT_TEST(results_too_big_for_the_log_abort_an_idempotent_transaction),
        UNIT_TEST(rendering_the_results_is_linear_in_their_size),
        UNIT_TEST(lost_commit_is_resent_when_the_participant_returns),
        UNIT_TEST(prepare_timeout_aborts_and_names_the_late_shard),
        UNIT_TEST(one_phase_commit_sends_one_message_and_no_log_record),
        UNIT_TEST(the_diagram_in_tx_c_is_the_table),
        UNIT_TEST(a_commit_without_a_durable_decision_stops_the_process),
        UNIT_TEST(commit_takes_one_phase_two_phases_or_nothing_by_its_branches),
        UNIT_TEST(kick_resends_phase_two_now_and_backs_off_afresh),
        UNIT_TEST(a_forgotten_branch_counts_as_acknowledged_once),
        UNIT_TEST(presumed_abort_is_only_for_gtids_this_coordinator_issued),
        UNIT_TEST(the_decision_follows_the_state),
        UNIT_TEST(a_checkpoint_keeps_decided_commits_and_retained_idempotent_ones),
        UNIT_TEST(interactive_calls_are_admitted_by_state),
        UNIT_TEST(a_keyed_single_shard_three_pc_transaction_takes_two_phase_commit),
        UNIT_TEST(the_store_hears_how_many_transactions_await_votes),
        UNIT_TEST(the_diagram_in_tx3pc_c_is_its_table),
        UNIT_TEST(three_pc_commits_once_a_majority_accepted_the_precommit),
        UNIT_TEST(three_pc_that_cannot_reach_a_majority_learns_the_participants_decision),
        UNIT_TEST(three_pc_tells_the_shards_to_forget_once_every_participant_acknowledged),
        UNIT_TEST(no_shard_forgets_while_a_participant_may_still_be_in_doubt),
        UNIT_TEST(three_pc_never_precommits_after_promising_a_recovery_leader),
        UNIT_TEST(only_the_precommit_and_the_commit_decision_are_forced_in_three_pc),
        UNIT_TEST(each_phase_is_reported_once_when_it_ends),
        UNIT_TEST(a_transaction_rebuilt_from_the_store_reports_no_phase),
        UNIT_TEST(in_doubt_means_phase_two_cannot_finish_now_or_the_log_failed),
    };

    return unit_run("tx", tests, sizeof(tests) / sizeof(tests[0]));
}
