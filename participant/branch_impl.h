/*
 * branch_impl.h - a branch's state, private to branch.c and its unit test
 * (the rest of the participant speaks branch.h).
 */
#ifndef DTX_BRANCH_IMPL_H
#define DTX_BRANCH_IMPL_H

#include "dtx/branch.h"
#include "dtx/gid.h"
#include "dtx/list.h"

enum branch_state {
    B_NEW,             /* created for the event that needs it; nothing runs yet */
    B_PREPARING,       /* ops (or an open transaction's ending) running toward PREPARE */
    B_ONE_PHASE,       /* ops (or an open transaction's ending) running toward COMMIT */
    B_CANCELLING,      /* an abort came while preparing: cancelled, rolled back, acknowledged */
    B_EXECUTING,       /* interactive: a call's ops run in the open transaction */
    B_EXEC_CANCELLING, /* interactive: an abort (deadline, lost stream) came while a call ran */
    B_OPEN,            /* interactive: between calls, its transaction open on its own connection */
    B_ROLLING_BACK,    /* interactive: the open transaction is being rolled back */
    B_PREPARED,        /* voted yes: holds a prepared transaction */
    B_FINISHING,       /* COMMIT/ROLLBACK PREPARED under way */
    B_GONE,            /* nothing left of it here: freed once the step is over */
    B_NSTATES
};

/* A 3PC branch's registration of its acceptors (rm_acceptor REGISTER) under way. */
struct branch_reg {
    struct branch *b; /* NULL once the branch is gone: the answer is dropped */
};

/* One COMMIT/ROLLBACK PREPARED being carried out, and who to tell. */
struct branch_finish {
    struct list_node link; /* on b->finishes */
    struct branch *b;
    struct peer *peer;     /* acknowledged to (NULL: the newest coordinator) */
    struct httpd_req *req; /* an operator's request, answered instead of an ack */
    bool commit;
    uint64_t since_us; /* when it was asked for (the metrics) */
};

struct branch {
    struct hmap_node node;
    struct branches *t;
    struct ev_timer deadline; /* a running branch past this is cancelled, an open one rolled back */
    char gtid[DTX_GTID_MAX + 1];
    char gid[DTX_GID_MAX + 1];
    char request_id[129]; /* the client request it serves (log.h), "" when none */
    char traceparent[56];
    enum branch_state state;
    bool interactive;
    bool ack_rollback;      /* ROLLING_BACK: an abort was asked for; acknowledge it */
    struct rm_run *run;     /* the resource manager's operation in flight, or NULL */
    struct rm_run *session; /* interactive: the open transaction, until it ends */
    struct peer *peer;      /* the coordinator stream to answer (NULL: the newest) */
    uint64_t xid;           /* once prepared */
    char db[RM_DB_ID_MAX];  /* once prepared: the database's identity */
    uint32_t deadline_ms;   /* interactive: the transaction's idle limit */
    uint64_t run_since_us;  /* when the run toward a vote or an outcome began (the metrics) */
    /*
     * Three-phase commit: the branch's acceptors are registered (the
     * peers, durably) while it runs; its yes vote waits for both, the
     * run's result held meanwhile.
     */
    bool three_pc;
    char *peers;
    struct branch_reg *reg; /* registration under way */
    struct dtx_err reg_err; /* why it failed */
    bool holding;           /* the run's result waits for the registration */
    struct rm_result held;
    struct list_node finishes; /* struct branch_finish, while FINISHING */
};

/*
 * One transition of branch_step(): applies ev and runs its action, leaving
 * the follow-up event in *next (BE_NEVENTS: none) unapplied and a gone
 * branch not freed. 0, or DTX_ESTATE for an undefined pair.
 */
int branch_step_one(struct branch *b, enum branch_event ev, const struct branch_evarg *a,
                    enum branch_event *next);
/* Frees b (for tests that stepped it to B_GONE with branch_step_one). */
void branch_free(struct branch *b);

/* The table, for the unit test that walks it. */
bool branch_is_defined(enum branch_state s, enum branch_event ev);
enum branch_state branch_next_state(enum branch_state s, enum branch_event ev);
const char *branch_state_name(enum branch_state s);
const char *branch_event_name(enum branch_event ev);

#endif
