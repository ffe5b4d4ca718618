/*
 * admin.h - the operators' endpoints on the coordinator (dtxctl talks to
 * these; every one needs the admin token when auth is configured):
 *
 *   GET  /v1/admin/status                      coordinator, store, shards
 *   GET  /v1/admin/in-doubt                    every prepared dtx branch, with the decision
 *   POST /v1/admin/recover                     {} : resend phase 2 now everywhere
 *                                              {"gtid","shard"} : finish that branch now
 *   POST /v1/admin/transactions/{gtid}/resolve {"decision","shard"?,"reason","operator"?}
 *   POST /v1/admin/transactions/{gtid}/forget  {"shard","reason","operator"?}
 *   GET  /v1/transactions[?status=S&older_than_ms=N], GET /v1/transactions/{gtid}
 *
 * The admin layer calls into the coordinator engine (coord.h) and asks
 * participants (fanout.h); the engine never calls back into it.
 */
#ifndef DTX_ADMIN_H
#define DTX_ADMIN_H

#include "dtx/coord.h"
#include "dtx/httpd.h"

struct admin;

/* The operators' endpoints over co. Never fails (xalloc.h). */
struct admin *admin_new(struct coord *co);
/* Drops the questions to participants still waiting (their requests are gone). NULL: no-op. */
void admin_free(struct admin *ad);

/*
 * The endpoint that method and /v1/admin<rest> name (ADMIN_NONE: none, 404),
 * with the gtid in the path copied to gtid (DTX_GTID_MAX + 1 bytes) when not
 * NULL. A standby asks too, so that it answers 404 where the active would.
 */
enum admin_ep {
    ADMIN_NONE,
    ADMIN_STATUS,
    ADMIN_IN_DOUBT,
    ADMIN_RECOVER,
    ADMIN_RESOLVE,
    ADMIN_FORGET
};
enum admin_ep admin_endpoint(const char *method, const char *rest, char *gtid);
/* Serves /v1/admin<rest>, once the admin token was checked. */
void admin_handle(struct admin *ad, struct httpd_req *req, const char *method, const char *rest);
/*
 * GET /v1/transactions/{gtid} (for who: tx.h's tx_owned_by; 404 when it is
 * another client's) and GET /v1/transactions[?status=S&older_than_ms=N].
 */
void admin_get_transaction(struct admin *ad, struct httpd_req *req, const char *gtid,
                           const char *who);
void admin_list_transactions(struct admin *ad, struct httpd_req *req);

#endif
