/*
 * agent_impl.h - the participant agent's state, shared by the files that
 * make up the agent; private to them (the daemon speaks agent.h).
 *
 *   agent.c       the agent: coordinators' messages -> branch events,
 *                 prepared-slot accounting, recovery glue, lifecycle
 *   peer.c        coordinator streams: accept, hello, frames, replies
 *   agent_http.c  HTTP routes: the stream upgrade, branch status,
 *                 operators' endpoints, /healthz, /metrics
 *   agent_metrics.c  what /metrics says
 *   branch.c      the branch machine (branch.h), which the agent drives
 *
 * Thread model: the participant's event-loop thread only.
 */
#ifndef DTX_AGENT_IMPL_H
#define DTX_AGENT_IMPL_H

#include "dtx/agent.h"
#include "dtx/branch.h"
#include "dtx/httpc.h"
#include "dtx/list.h"
#include "dtx/msg.h"
#include "dtx/recovery.h"
#include "dtx/stream.h"

/* A coordinator's peer stream (peer.c). */
struct peer {
    struct list_node link; /* on ag->peers, oldest first */
    struct agent *ag;
    struct stream *st;
    struct httpd_upgraded *up;
    char node[DTX_NAME_MAX + 1];
    uint64_t epoch;
    bool hello;
};

struct agent {
    const struct agent_config *cfg;
    struct ev_loop *loop;
    struct dialer dialer; /* agent.c: the loop, a resolver and cfg->tls, for every call it makes */
    struct rm *rm;
    struct recovery *recovery;
    struct terminate *term;       /* terminate.c: three-phase commit without the coordinator */
    struct branch_env env;        /* agent.c */
    struct branches branches;     /* branch.c, driven by agent.c */
    struct list_node peers;       /* peer.c */
    struct list_node admin_calls; /* agent_http.c: struct admin_call waiting for rm */
    /* prepared-transaction slots (agent.c; refreshed every few seconds from the database) */
    int64_t max_prepared;
    int64_t untracked_prepared; /* prepared in the server, not by a branch in memory */
    struct ev_timer slots_timer;
    bool stopping;
};

/* ---- agent.c: what a coordinator's message asks ---- */
void agent_on_message(struct agent *ag, struct peer *peer, struct msg *m);
/* A coordinator said hello: it may have restarted, so recovery runs now. */
void agent_on_hello(struct agent *ag, struct peer *peer);
/* A coordinator's stream closed. */
void agent_on_peer_lost(struct agent *ag, struct peer *peer);
/* An operator finishes gtid's prepared branch (xid from the database); req gets the answer. */
void agent_finish_for(struct agent *ag, const char *gtid, uint64_t xid, bool commit,
                      struct httpd_req *req);

/* ---- terminate.c: three-phase commit, the acceptor and the recovery leader ---- */
struct terminate *terminate_new(struct agent *ag);
void terminate_free(struct terminate *t);
/* A 3PC branch is prepared here (peers: its acceptors, JSON, or NULL: read them from the
 * database): without a decision in time, this shard leads a round to finish it. */
void terminate_watch(struct terminate *t, const char *gtid, const char *peers);
/* The coordinator told the decision: recorded, the transaction no longer watched. */
void terminate_decided(struct terminate *t, const char *gtid, enum ballot_value v);
/* The coordinator's PRE-COMMIT (accept at its initial ballot): accepted or not, on its stream. */
void terminate_on_accept(struct terminate *t, struct peer *peer, const struct msg *m);
/* A coordinator's stream closed: answers for it are dropped. */
void terminate_peer_lost(struct terminate *t, struct peer *peer);
/* /v1/peer/3pc/...: rest is what follows "/v1/peer/3pc". */
void terminate_http(struct terminate *t, struct httpd_req *req, const char *method,
                    const char *rest);
/* Transactions watched; and what is known of gtid's termination, added to o (operators). */
size_t terminate_watching(const struct terminate *t);
void terminate_describe(const struct terminate *t, const char *gtid, cJSON *o);

/* ---- peer.c ---- */
/* Sends m (deleted) and trailer on peer's stream, or the newest coordinator's (peer NULL). */
void peer_send(struct agent *ag, struct peer *peer, cJSON *m, const struct buf *trailer);
/* Takes over an upgraded HTTP connection as a coordinator's stream. */
void peer_accept(struct agent *ag, int fd, const char *extra, size_t extra_len,
                 struct httpd_upgraded *up);
void peer_free(struct peer *p);
/* Coordinators that said hello. */
size_t peers_connected(const struct agent *ag);

/* ---- agent_http.c ---- */
/* Answers an operator who asked to finish a branch (branch_env.finished_for). */
void agent_http_finished(void *ctx, struct httpd_req *req, const char *gtid, bool commit,
                         enum rm_outcome outcome, const struct dtx_err *err);
/* Drops the operators' requests still waiting for the database. */
void agent_http_release(struct agent *ag);
/*
 * Whether the shard's database can take a call now; if not, req is
 * answered 503 at once. Asked only once the call is known to be one this
 * participant serves (a path or gid it never serves is 404, database or not).
 */
bool agent_shard_ready(struct agent *ag, struct httpd_req *req);
/* Answers req with err from a call to the database: one lost while asked is 503, not 409. */
void agent_reply_db_error(struct httpd_req *req, const struct dtx_err *err);

/* ---- agent_metrics.c ---- */
/* The body of GET /metrics (malloc'd Prometheus text). */
char *agent_render_metrics(const struct agent *ag);

#endif
