/*
 * test_branch.c - the participant's branch machine (branch.c), with a
 * fake resource manager (the rm.h boundary) and a fake environment that
 * records every message a branch sends. Every (state, event) pair of the
 * table is walked, the diagram in branch.c is checked against the table,
 * and the orderings that matter are played out: an abort while a branch
 * runs, a deadline, a refused prepare, a lost coordinator stream.
 */
#include "branch_impl.h"
#include "diagram.h"
#include "dtx/jsonx.h"
#include "dtx/msg.h"
#include "unit.h"

#include <string.h>

/* ---- a fake resource manager --------------------------------------------------------- */

struct fake_rm {
    struct rm base;
    struct rm_run run; /* the one operation handle it hands out */
    rm_run_fn run_done;
    void *run_arg;
    rm_finish_fn finish_done[4];
    void *finish_arg[4];
    int nfinish;
    int runs, execs, cancels, ends, finishes;
    enum rm_end last_end;
    bool last_commit, last_one_phase;
    uint64_t last_xid;
};

static struct fake_rm RM;

static struct rm_run *fake_run(struct rm *rm, const char *gid, cJSON *ops, bool one_phase,
                               bool three_pc, rm_run_fn done, void *arg)
{
    (void)rm;
    (void)gid;
    (void)three_pc;
    cJSON_Delete(ops);
    RM.runs++;
    RM.last_one_phase = one_phase;
    RM.run_done = done;
    RM.run_arg = arg;
    return &RM.run;
}

static void fake_cancel(struct rm *rm, struct rm_run *run, bool deadline)
{
    (void)rm;
    (void)run;
    (void)deadline;
    RM.cancels++;
}

static struct rm_run *fake_exec(struct rm *rm, struct rm_run *session, const char *gid,
                                bool three_pc, cJSON *ops, uint32_t wait_ms, rm_run_fn done,
                                void *arg)
{
    (void)rm;
    (void)session;
    (void)gid;
    (void)three_pc;
    (void)wait_ms;
    cJSON_Delete(ops);
    RM.execs++;
    RM.run_done = done;
    RM.run_arg = arg;
    return &RM.run;
}

static void fake_end(struct rm *rm, struct rm_run *session, enum rm_end how, rm_run_fn done,
                     void *arg)
{
    (void)rm;
    (void)session;
    RM.ends++;
    RM.last_end = how;
    RM.run_done = done;
    RM.run_arg = arg;
}

static void fake_finish(struct rm *rm, const char *gid, uint64_t xid, const char *db, bool commit,
                        rm_finish_fn done, void *arg)
{
    (void)rm;
    (void)gid;
    (void)db;
    RM.finishes++;
    RM.last_commit = commit;
    RM.last_xid = xid;
    if (RM.nfinish < 4) {
        RM.finish_done[RM.nfinish] = done;
        RM.finish_arg[RM.nfinish++] = arg;
    }
}

static const struct rm_ops fake_ops = {
    .name = "fake",
    .run = fake_run,
    .cancel = fake_cancel,
    .exec = fake_exec,
    .end = fake_end,
    .finish = fake_finish,
};

/* The database answers the operation in flight. */
static void rm_answers(enum rm_outcome outcome, uint64_t xid)
{
    struct rm_result res = {.outcome = outcome, .xid = xid};

    buf_init(&res.results);
    if (outcome == RM_PREPARED || outcome == RM_ACTIVE || outcome == RM_COMMITTED)
        buf_puts(&res.results, "\n{}");
    else
        dtx_err_set(&res.err, DTX_ESQL, "it failed");
    RM.run_done(RM.run_arg, &res);
    buf_release(&res.results);
}

/* ---- a fake environment ------------------------------------------------------------------ */

struct sent {
    char what[16][48]; /* "vote:yes", "ack:aborted", "executed:error", ... */
    struct peer *to[16];
    int n;
    int finished_for; /* operators' answers */
};

static struct sent S;

static void fake_send(void *ctx, struct peer *peer, cJSON *m, const struct buf *trailer)
{
    const cJSON *t = cJSON_GetObjectItem(m, "t"), *v = cJSON_GetObjectItem(m, "vote"),
                *o = cJSON_GetObjectItem(m, "outcome"), *e = cJSON_GetObjectItem(m, "error");

    (void)ctx;
    (void)trailer;
    if (S.n < 16) {
        snprintf(S.what[S.n], sizeof(S.what[0]), "%s:%s", t->valuestring,
                 v   ? v->valuestring
                 : o ? o->valuestring
                 : e ? "error"
                     : "ok");
        S.to[S.n++] = peer;
    }
    cJSON_Delete(m);
}

static void fake_finished_for(void *ctx, struct httpd_req *req, const char *gtid, bool commit,
                              enum rm_outcome outcome, const struct dtx_err *err)
{
    (void)ctx;
    (void)req;
    (void)gtid;
    (void)commit;
    (void)outcome;
    (void)err;
    S.finished_for++;
}

static struct ev_loop loop;
static struct branch_env env;
static struct branches T;
static struct peer *const P1 = (struct peer *)0x1001, *const P2 = (struct peer *)0x1002;

static void setup(void)
{
    memset(&RM, 0, sizeof(RM));
    memset(&S, 0, sizeof(S));
    RM.base.ops = &fake_ops;
    RM.run.rm = &RM.base;
    ev_loop_init(&loop);
    env = (struct branch_env){.loop = &loop,
                              .rm = &RM.base,
                              .shard = "s1",
                              .send = fake_send,
                              .finished_for = fake_finished_for};
    branches_init(&T, &env);
}

static void teardown(void)
{
    branches_release(&T);
    ev_loop_release(&loop);
}

static int sent(const char *what)
{
    for (int i = 0; i < S.n; i++) {
        if (strcmp(S.what[i], what) == 0)
            return i;
    }
    return -1;
}

static struct branch *stepped(const char *gtid, enum branch_event ev, struct peer *peer)
{
    struct branch *b = branch_new(&T, gtid, peer);
    struct branch_evarg a = {.peer = peer, .ops = cJSON_CreateArray(), .timeout_ms = 100};

    CU_ASSERT_EQUAL(branch_step(b, ev, &a), 0);
    if (ev != BE_PREPARE && ev != BE_ONE_PHASE && ev != BE_EXEC)
        cJSON_Delete(a.ops); /* taken only by the events that run ops */
    return b;
}

/* ---- the table ------------------------------------------------------------------------- */

static int state_named(const char *name)
{
    for (int s = 0; s < B_NSTATES; s++) {
        if (strcmp(branch_state_name((enum branch_state)s), name) == 0)
            return s;
    }
    return -1;
}

static int event_named(const char *name)
{
    for (int e = 0; e < BE_NEVENTS; e++) {
        if (strcmp(branch_event_name((enum branch_event)e), name) == 0)
            return e;
    }
    return -1;
}

static void the_diagram_in_branch_c_is_the_table(void)
{
    struct diagram_row rows[128];
    int n = diagram_read(DTX_SRC_DIR "/participant/branch.c", rows, 128), defined = 0;

    CU_ASSERT_FATAL(n > 0);
    for (int i = 0; i < n; i++) {
        int from = state_named(rows[i].from), ev = event_named(rows[i].ev),
            to = state_named(rows[i].to);

        if (from < 0 || ev < 0 || to < 0 || !branch_is_defined(from, ev)) {
            fprintf(stderr, "\n  diagram line %s --%s--> %s is not in the table\n", rows[i].from,
                    rows[i].ev, rows[i].to);
            CU_FAIL("a diagram line is not in the table");
            continue;
        }
        CU_ASSERT_EQUAL(branch_next_state(from, ev), to);
    }
    for (int s = 0; s < B_NSTATES; s++) {
        for (int e = 0; e < BE_NEVENTS; e++)
            defined += branch_is_defined(s, e);
    }
    CU_ASSERT_EQUAL(defined, n);
}

/* A branch put in state s as the machine would leave it there. */
static struct branch *branch_in(enum branch_state s)
{
    struct branch *b = branch_new(&T, "c1-1-1", P1);
    struct branch_finish *f;

    b->state = s;
    b->run = &RM.run;
    b->session = s == B_OPEN ? &RM.run : NULL;
    b->interactive =
        s == B_OPEN || s == B_EXECUTING || s == B_EXEC_CANCELLING || s == B_ROLLING_BACK;
    if (s == B_FINISHING) {
        f = calloc(1, sizeof(*f));
        f->b = b;
        f->peer = P1;
        list_insert_tail(&b->finishes, &f->link);
    }
    return b;
}

static void every_defined_pair_moves_to_its_next_state(void)
{
    int defined = 0;

    for (int s = 0; s < B_NSTATES; s++) {
        for (int e = 0; e < BE_NEVENTS; e++) {
            struct rm_result res = {.outcome = RM_PREPARED, .xid = 9};
            struct branch_evarg a = {.peer = P2, .timeout_ms = 100, .res = &res};
            enum branch_event next = BE_NEVENTS;
            struct branch *b;

            if (!branch_is_defined(s, e))
                continue;
            defined++;
            setup();
            b = branch_in((enum branch_state)s);
            buf_init(&res.results);
            a.ops = cJSON_CreateArray();
            a.finish = list_empty(&b->finishes)
                           ? NULL
                           : container_of(b->finishes.next, struct branch_finish, link);
            CU_ASSERT_EQUAL(branch_step_one(b, (enum branch_event)e, &a, &next), 0);
            if (b->state != branch_next_state(s, e))
                fprintf(stderr, "\n  %s --%s--> %s, table says %s\n", branch_state_name(s),
                        branch_event_name(e), branch_state_name(b->state),
                        branch_state_name(branch_next_state(s, e)));
            CU_ASSERT_EQUAL(b->state, branch_next_state(s, e));
            CU_ASSERT(next == BE_NEVENTS || branch_is_defined(b->state, next));
            if (e != BE_PREPARE && e != BE_ONE_PHASE && e != BE_EXEC)
                cJSON_Delete(a.ops);
            teardown();
        }
    }
    CU_ASSERT(defined >= 50);
}

static void every_undefined_pair_is_refused_and_changes_nothing(void)
{
    for (int s = 0; s < B_NSTATES; s++) {
        for (int e = 0; e < BE_NEVENTS; e++) {
            enum branch_event next = BE_NEVENTS;
            struct branch_evarg a = {0};
            struct branch *b;

            if (branch_is_defined(s, e))
                continue;
            setup();
            b = branch_in((enum branch_state)s);
            CU_ASSERT_EQUAL(branch_step_one(b, (enum branch_event)e, &a, &next), DTX_ESTATE);
            CU_ASSERT_EQUAL(b->state, (enum branch_state)s);
            CU_ASSERT_EQUAL(S.n + RM.runs + RM.cancels + RM.finishes + RM.ends, 0);
            teardown();
        }
    }
}

/* ---- what happens in order ---------------------------------------------------------------- */

static void a_prepared_branch_votes_yes_and_commits_when_told(void)
{
    struct branch_evarg commit = {.peer = P2, .xid = 0};
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_PREPARE, P1);
    CU_ASSERT_EQUAL(RM.runs, 1);
    CU_ASSERT(ev_timer_is_active(&b->deadline));
    CU_ASSERT_EQUAL(T.preparing, 1); /* needs a prepared slot */
    rm_answers(RM_PREPARED, 77);
    CU_ASSERT(sent("vote:yes") >= 0);
    CU_ASSERT_PTR_EQUAL(S.to[sent("vote:yes")], P1);
    CU_ASSERT_EQUAL(T.prepared, 1);
    CU_ASSERT(!ev_timer_is_active(&b->deadline));
    CU_ASSERT_EQUAL(branch_step(b, BE_COMMIT, &commit), 0);
    CU_ASSERT_EQUAL(RM.last_xid, 77u); /* the xid from the vote */
    CU_ASSERT(RM.last_commit);
    RM.finish_done[0](RM.finish_arg[0], RM_COMMITTED, NULL);
    CU_ASSERT(sent("ack:committed") >= 0);
    CU_ASSERT_PTR_EQUAL(S.to[sent("ack:committed")], P2);
    CU_ASSERT_PTR_NULL(branch_find(&T, "c1-1-1")); /* gone */
    CU_ASSERT_EQUAL(T.prepared + T.finishing + T.running, 0);
    /* the metrics: one prepare timed to its yes vote, one COMMIT PREPARED timed */
    CU_ASSERT_EQUAL(T.m.prepare[VOTE_YES - 1].count, 1);
    CU_ASSERT_EQUAL(T.m.prepare[VOTE_NO - 1].count + T.m.prepare[VOTE_READONLY - 1].count, 0);
    CU_ASSERT(T.m.prepare[VOTE_YES - 1].sum >= 0 && T.m.prepare[VOTE_YES - 1].sum < 60);
    CU_ASSERT_EQUAL(T.m.commit_prepared.count, 1);
    CU_ASSERT_EQUAL(T.m.rollback_prepared.count, 0);
    teardown();
}

static void an_abort_while_running_cancels_then_rolls_back_and_acknowledges(void)
{
    struct branch_evarg abort_msg = {.peer = P2};
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_PREPARE, P1);
    CU_ASSERT_EQUAL(branch_step(b, BE_ABORT, &abort_msg), 0);
    CU_ASSERT_EQUAL(RM.cancels, 1);
    CU_ASSERT_EQUAL(S.n, 0);    /* nothing until the run ends */
    rm_answers(RM_PREPARED, 5); /* the PREPARE got through before the cancel */
    CU_ASSERT_EQUAL(S.n, 0);    /* never a yes vote */
    CU_ASSERT_EQUAL(RM.finishes, 1);
    CU_ASSERT(!RM.last_commit);
    RM.finish_done[0](RM.finish_arg[0], RM_ROLLED_BACK, NULL);
    CU_ASSERT_EQUAL(S.n, 1);
    CU_ASSERT_STRING_EQUAL(S.what[0], "ack:aborted");
    CU_ASSERT_PTR_EQUAL(S.to[0], P2);

    b = stepped("c1-1-2", BE_PREPARE, P1); /* cancelled in time: rolled back by the run */
    CU_ASSERT_EQUAL(branch_step(b, BE_ABORT, &abort_msg), 0);
    rm_answers(RM_ROLLED_BACK, 0);
    CU_ASSERT_STRING_EQUAL(S.what[1], "ack:aborted");
    CU_ASSERT_PTR_NULL(branch_find(&T, "c1-1-2"));
    /* no vote was sent: nothing timed as a prepare; the ROLLBACK PREPARED was */
    CU_ASSERT_EQUAL(T.m.prepare[0].count + T.m.prepare[1].count + T.m.prepare[2].count, 0);
    CU_ASSERT_EQUAL(T.m.rollback_prepared.count, 1);
    teardown();
}

static void a_branch_past_its_deadline_is_cancelled_and_never_votes_yes(void)
{
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_PREPARE, P1);
    CU_ASSERT_EQUAL(branch_step(b, BE_DEADLINE, NULL), 0);
    CU_ASSERT_EQUAL(RM.cancels, 1);
    rm_answers(RM_PREPARED, 5);
    CU_ASSERT_EQUAL(sent("vote:yes"), -1);
    CU_ASSERT_EQUAL(RM.finishes, 1); /* rolled back */
    CU_ASSERT(!RM.last_commit);
    teardown();
}

static void an_open_branch_past_its_idle_limit_is_rolled_back_without_an_ack(void)
{
    struct rm_result res = {.outcome = RM_ROLLED_BACK};
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_EXEC, P1);
    rm_answers(RM_ACTIVE, 0);
    CU_ASSERT(sent("executed:ok") >= 0);
    CU_ASSERT_EQUAL(T.sessions, 1);
    CU_ASSERT(ev_timer_is_active(&b->deadline));
    CU_ASSERT_EQUAL(branch_step(b, BE_DEADLINE, NULL), 0);
    CU_ASSERT_EQUAL(RM.ends, 1);
    CU_ASSERT_EQUAL(RM.last_end, RM_END_ROLLBACK);
    buf_init(&res.results);
    RM.run_done(RM.run_arg, &res);
    CU_ASSERT_EQUAL(sent("ack:aborted"), -1);
    CU_ASSERT_EQUAL(T.sessions, 0);
    CU_ASSERT_PTR_NULL(branch_find(&T, "c1-1-1"));
    teardown();
}

static void a_prepare_refused_for_lack_of_a_slot_rolls_the_open_branch_back(void)
{
    struct rm_result res = {.outcome = RM_ROLLED_BACK};
    struct branch *b;
    char why[300];

    setup();
    b = stepped("c1-1-1", BE_EXEC, P1);
    rm_answers(RM_ACTIVE, 0);
    CU_ASSERT(!branches_no_slot(&T, 10, 5, 2, why, sizeof(why))); /* 5 used, 8 allowed */
    CU_ASSERT(branches_no_slot(&T, 10, 8, 2, why, sizeof(why)));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "shard 's1' has no prepared-transaction slot"));
    CU_ASSERT(branches_no_slot(&T, 2, 1, 5, why, sizeof(why))); /* headroom >= limit: 1 kept */
    CU_ASSERT(!branches_no_slot(&T, 2, 0, 5, why, sizeof(why)));
    CU_ASSERT(!branches_no_slot(&T, 0, 99, 0, why, sizeof(why))); /* limit unknown yet */
    CU_ASSERT_EQUAL(branch_step(b, BE_NO_SLOT, NULL), 0);
    CU_ASSERT_EQUAL(RM.last_end, RM_END_ROLLBACK);
    buf_init(&res.results);
    RM.run_done(RM.run_arg, &res);
    CU_ASSERT_EQUAL(sent("ack:aborted"), -1);
    CU_ASSERT_PTR_NULL(branch_find(&T, "c1-1-1"));
    teardown();
}

static void branches_being_prepared_count_against_the_slots(void)
{
    char why[300];

    setup();
    stepped("c1-1-1", BE_PREPARE, P1);
    stepped("c1-1-2", BE_PREPARE, P1);
    CU_ASSERT_EQUAL(T.preparing, 2);
    CU_ASSERT(!branches_no_slot(&T, 4, 1, 0, why, sizeof(why)));
    CU_ASSERT(branches_no_slot(&T, 4, 2, 0, why, sizeof(why)));
    teardown();
}

static void a_lost_stream_cancels_prepares_and_rolls_back_open_ones_but_not_one_phase(void)
{
    struct branch *prep, *open, *one, *other;

    setup();
    prep = stepped("c1-1-1", BE_PREPARE, P1);
    one = stepped("c1-1-2", BE_ONE_PHASE, P1);
    open = stepped("c1-1-3", BE_EXEC, P1);
    RM.run_done(RM.run_arg, &(struct rm_result){.outcome = RM_ACTIVE});
    other = stepped("c1-1-4", BE_PREPARE, P2);
    branches_peer_lost(&T, P1);
    CU_ASSERT_EQUAL(prep->state, B_CANCELLING);
    CU_ASSERT_EQUAL(one->state, B_ONE_PHASE); /* its outcome goes to the next coordinator */
    CU_ASSERT_PTR_NULL(one->peer);
    CU_ASSERT_EQUAL(open->state, B_ROLLING_BACK);
    CU_ASSERT_EQUAL(other->state, B_PREPARING); /* another coordinator's: untouched */
    CU_ASSERT_PTR_EQUAL(other->peer, P2);
    CU_ASSERT_EQUAL(RM.cancels, 1);
    teardown();
}

static void commit_of_a_branch_not_in_memory_finishes_it_by_gid(void)
{
    struct branch_evarg commit = {.peer = P1, .xid = 31};
    struct branch *b;

    setup();
    b = branch_new(&T, "c1-1-1", P1);
    CU_ASSERT_EQUAL(branch_step(b, BE_COMMIT, &commit), 0);
    CU_ASSERT_EQUAL(RM.finishes, 1);
    CU_ASSERT_EQUAL(RM.last_xid, 31u);
    CU_ASSERT(branch_is_busy(b)); /* recovery keeps off */
    CU_ASSERT_STRING_EQUAL(branch_activity(b), "finishing");
    commit.peer = P2; /* the coordinator resent it: both are acknowledged */
    CU_ASSERT_EQUAL(branch_step(b, BE_COMMIT, &commit), 0);
    RM.finish_done[0](RM.finish_arg[0], RM_COMMITTED, NULL);
    CU_ASSERT_PTR_NOT_NULL(branch_find(&T, "c1-1-1"));
    RM.finish_done[1](RM.finish_arg[1], RM_COMMITTED, NULL);
    CU_ASSERT_EQUAL(S.n, 2);
    CU_ASSERT_PTR_NULL(branch_find(&T, "c1-1-1"));
    teardown();
}

static void an_operator_finish_is_answered_to_the_operator_not_acked(void)
{
    struct branch_evarg op = {.req = (struct httpd_req *)0x2001};
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_PREPARE, P1);
    rm_answers(RM_PREPARED, 8);
    S.n = 0;
    CU_ASSERT_EQUAL(branch_step(b, BE_ABORT, &op), 0);
    RM.finish_done[0](RM.finish_arg[0], RM_ROLLED_BACK, NULL);
    CU_ASSERT_EQUAL(S.finished_for, 1);
    CU_ASSERT_EQUAL(S.n, 0);
    teardown();
}

static void a_commit_before_the_branch_is_prepared_is_ignored(void)
{
    struct branch_evarg commit = {.peer = P1};
    struct branch *b;

    setup();
    b = stepped("c1-1-1", BE_PREPARE, P1);
    CU_ASSERT_EQUAL(branch_step(b, BE_COMMIT, &commit), 0);
    CU_ASSERT_EQUAL(RM.finishes, 0);
    CU_ASSERT_EQUAL(b->state, B_PREPARING);
    teardown();
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(the_diagram_in_branch_c_is_the_table),
        UNIT_TEST(every_defined_pair_moves_to_its_next_state),
        UNIT_TEST(every_undefined_pair_is_refused_and_changes_nothing),
        UNIT_TEST(a_prepared_branch_votes_yes_and_commits_when_told),
        UNIT_TEST(an_abort_while_running_cancels_then_rolls_back_and_acknowledges),
        UNIT_TEST(a_branch_past_its_deadline_is_cancelled_and_never_votes_yes),
        UNIT_TEST(an_open_branch_past_its_idle_limit_is_rolled_back_without_an_ack),
        UNIT_TEST(a_prepare_refused_for_lack_of_a_slot_rolls_the_open_branch_back),
        UNIT_TEST(branches_being_prepared_count_against_the_slots),
        UNIT_TEST(a_lost_stream_cancels_prepares_and_rolls_back_open_ones_but_not_one_phase),
        UNIT_TEST(commit_of_a_branch_not_in_memory_finishes_it_by_gid),
        UNIT_TEST(an_operator_finish_is_answered_to_the_operator_not_acked),
        UNIT_TEST(a_commit_before_the_branch_is_prepared_is_ignored),
    };

    return unit_run("branch", tests, sizeof(tests) / sizeof(tests[0]));
}
