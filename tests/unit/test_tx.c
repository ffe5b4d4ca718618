/*
 * test_tx.c - the commit protocol's state table (tx.c), with the outside
 * world (struct tx_env) stubbed: every (state, event) pair is tried, and
 * the orderings that make 2PC safe are checked.
 */
#include "dtx/tx.h"
#include "unit.h"

#include <string.h>

/* What the stub environment saw, in order. */
struct world {
    char calls[64][24];
    int ncalls;
    bool link_down[4]; /* sends to these shards fail */
    bool log_failed;   /* log_commit returns 0 */
    uint64_t next_lsn;
    int answers;
    int finished;
};

static struct world W;

static void record(const char *what)
{
    if (W.ncalls < 64)
        snprintf(W.calls[W.ncalls++], sizeof(W.calls[0]), "%s", what);
}

static int stub_send(struct tx *tx, struct tx_branch *b, enum tx_send what)
{
    static const char *const names[] = {"prepare", "one_phase", "commit", "abort", "exec"};
    char s[24];

    (void)tx;
    if (W.link_down[b->shard])
        return DTX_EUNAVAIL;
    snprintf(s, sizeof(s), "%s:%d", names[what], b->shard);
    record(s);
    return 0;
}

static uint64_t stub_log_commit(struct tx *tx)
{
    (void)tx;
    record("log_commit");
    return W.log_failed ? 0 : ++W.next_lsn;
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

static const char *const names[] = {"s0", "s1", "s2", "s3"};
static const struct tx_env env = {stub_send, stub_log_commit, stub_log_end, stub_answer,
                                  stub_arm,  stub_finished,   names,        NULL};

static int find_call(const char *what)
{
    for (int i = 0; i < W.ncalls; i++) {
        if (strcmp(W.calls[i], what) == 0)
            return i;
    }
    return -1;
}

static struct tx *new_tx(size_t nbranches)
{
    struct tx *tx = tx_new("c1-1-1", &env, nbranches, 0);

    memset(&W, 0, sizeof(W));
    tx->timeout_ms = 1000;
    tx->commit_wait_ms = 1000;
    for (size_t i = 0; i < nbranches; i++) {
        tx->branches[i].shard = (int)i;
        tx->branches[i].ops = cJSON_CreateArray();
    }
    return tx;
}

/* Puts tx in a state the way the protocol would leave it there (see the table). */
static struct tx *tx_in(enum tx_state s)
{
    static const enum branch_state br[TX_NSTATES] = {
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
    tx->lsn = s == TX_LOGGING ? 1 : 0;
    memset(&W, 0, sizeof(W));
    return tx;
}

static void every_defined_pair_moves_to_its_next_state(void)
{
    int defined = 0;

    for (int s = 0; s < TX_NSTATES; s++) {
        for (int e = 0; e < TX_NEVENTS; e++) {
            struct tx *tx;
            struct tx_evarg a = {NULL, 42, NULL, 0, NULL};

            if (!tx_is_defined((enum tx_state)s, (enum tx_event)e))
                continue;
            defined++;
            tx = tx_in((enum tx_state)s);
            a.b = &tx->branches[0];
            CU_ASSERT_EQUAL(tx_step(tx, (enum tx_event)e, &a), 0);
            if (tx->state != tx_next_state((enum tx_state)s, (enum tx_event)e))
                fprintf(stderr, "\n  %s --%s--> %s, table says %s\n", tx_state_name(s),
                        tx_event_name(e), tx_state_name(tx->state),
                        tx_state_name(tx_next_state(s, e)));
            CU_ASSERT_EQUAL(tx->state, tx_next_state((enum tx_state)s, (enum tx_event)e));
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
            struct tx_evarg a = {NULL, 42, NULL, 0, NULL};
            enum branch_state b0;

            if (tx_is_defined((enum tx_state)s, (enum tx_event)e))
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
            bool durable = tx_is_durable((enum tx_state)s, (enum tx_event)e);

            CU_ASSERT_EQUAL(durable, s == TX_PREPARING && e == TXE_ALL_VOTED);
        }
    }
}

static void commit_is_durable_before_any_commit_is_sent(void)
{
    struct tx *tx = new_tx(3);
    struct tx_evarg a = {NULL, 7, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 0, NULL, 0, &e};

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
    struct tx_evarg a = {NULL, 0, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 0, NULL, 0, NULL};

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

static void readonly_branch_takes_no_part_in_phase_two(void)
{
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {NULL, 9, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 1, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 1, NULL, 0, NULL};

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

static void results_too_big_for_the_log_abort_an_idempotent_transaction(void)
{
    static const char results[] = "\n[{\"rows\":[[\"0123456789\"]]}]";
    struct tx *tx = new_tx(2);
    struct tx_evarg a = {NULL, 1, results, sizeof(results) - 1, NULL};

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
    struct tx_evarg a = {NULL, 1, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 1, NULL, 0, NULL};

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
    struct tx_evarg a = {NULL, 0, NULL, 0, NULL};

    CU_ASSERT_EQUAL(tx_step(tx, TXE_START_1PC, NULL), 0);
    CU_ASSERT_EQUAL(tx->state, TX_ONE_PHASE);
    a.b = &tx->branches[0];
    CU_ASSERT_EQUAL(tx_step(tx, TXE_COMMITTED_1PC, &a), 0);
    CU_ASSERT_EQUAL(tx->state, TX_COMMITTED);
    CU_ASSERT_EQUAL(W.ncalls, 2); /* one_phase:0, answer */
    CU_ASSERT_EQUAL(find_call("log_commit"), -1);
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
        UNIT_TEST(readonly_branch_takes_no_part_in_phase_two),
        UNIT_TEST(failed_log_write_leaves_the_transaction_in_doubt),
        UNIT_TEST(log_that_refuses_the_record_aborts_the_transaction),
        UNIT_TEST(results_too_big_for_the_log_abort_an_idempotent_transaction),
        UNIT_TEST(lost_commit_is_resent_when_the_participant_returns),
        UNIT_TEST(prepare_timeout_aborts_and_names_the_late_shard),
        UNIT_TEST(one_phase_commit_sends_one_message_and_no_log_record),
    };

    return unit_run("tx", tests, sizeof(tests) / sizeof(tests[0]));
}
