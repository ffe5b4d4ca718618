/*
 * recovery.h - the participant's in-doubt resolution: after any crash, and
 * periodically, it finds this shard's prepared dtx branches and asks the
 * coordinator what became of each transaction.
 *
 * It acts only on a definite answer: "commit" commits the branch, "abort"
 * rolls it back (presumed abort: the coordinator has no commit record).
 * "in_flight" (the coordinator is still deciding) and "unknown" leave it
 * prepared; so does a coordinator that cannot be reached (two-phase commit
 * blocks by design): the branch is reported as in doubt in the log and
 * asked about again with backoff.
 */
#ifndef DTX_RECOVERY_H
#define DTX_RECOVERY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/agent_config.h"
#include "dtx/ev.h"
#include "dtx/rm.h"

struct recovery;

struct recovery_ops {
    /* True while the agent itself is carrying out this transaction's branch. */
    bool (*busy)(void *arg, const char *gtid);
    /* Commits or rolls back the branch as the coordinator decided. */
    /* xid and db: the branch's, as the coordinator recorded them (db NULL when not given) */
    void (*finish)(void *arg, const char *gtid, uint64_t xid, const char *db, bool commit);
    /*
     * A three-phase commit branch is prepared here: it is never asked
     * about (its coordinator does not decide it alone); the agent's
     * termination finishes it (terminate.c).
     */
    void (*three_pc)(void *arg, const char *gtid);
    void *arg;
};

/* Creates the recovery loop; its first round runs at once. Aborts on allocation failure. */
struct dialer;
struct recovery *recovery_new(const struct dialer *d, const struct agent_config *cfg, struct rm *rm,
                              const struct recovery_ops *ops);
void recovery_free(struct recovery *r);

/*
 * The URL of the coordinator serving node now (the newest run that
 * answered a round), or, with a single coordinator configured, its URL;
 * NULL when no coordinator of node answered yet.
 */
const char *recovery_coordinator_url(const struct recovery *r, const char *node);

/* Asks for a round as soon as the current one (if any) is over. */
void recovery_kick(struct recovery *r);

/* Branches the last round left in doubt (coordinator unreachable, or it did not know them). */
size_t recovery_in_doubt(const struct recovery *r);
/*
 * How old the oldest prepared dtx branch of this shard is, in seconds:
 * as the last round's listing found them (every recovery_interval_ms, or
 * after a failed round its backoff, at most 30 s), aged since; 0 when it
 * found none. False (*age_s untouched) until a listing succeeded.
 */
bool recovery_oldest_prepared(const struct recovery *r, double *age_s);
/* Rounds run and branches resolved since start. */
uint64_t recovery_rounds(const struct recovery *r);
uint64_t recovery_resolved(const struct recovery *r);
/* Three-phase commit acceptor rows left behind that the sweep handed back to be deleted. */
uint64_t recovery_swept(const struct recovery *r);

#endif
