/*
 * agent.h - the participant: one agent per database shard. It accepts
 * peer streams from the coordinator, runs each transaction's branch in the
 * resource manager, votes, and carries out the coordinator's decisions.
 */
#ifndef DTX_AGENT_H
#define DTX_AGENT_H

#include <stdbool.h>

#include "dtx/agent_config.h"
#include "dtx/ev.h"
#include "dtx/httpd.h"
#include "dtx/rm.h"

struct agent;

/* Creates the agent over rm (which it then owns). Aborts on allocation failure. */
struct agent *agent_new(const struct agent_config *cfg, struct ev_loop *loop, struct rm *rm);
/* Closes streams, frees branches' memory (prepared branches stay prepared) and rm. */
void agent_free(struct agent *ag);

/* Starts a graceful stop; agent_idle() is true once no branch is running. */
void agent_begin_shutdown(struct agent *ag);
bool agent_idle(const struct agent *ag);

/* Pushes every queued message to the coordinators now (a failpoint's crash hook). */
void agent_flush_peers(void *arg);

/* The httpd handler for the participant's routes; ctx is the struct agent. */
void agent_handle_http(void *ctx, struct httpd_req *req);

#endif
