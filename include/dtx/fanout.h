/*
 * fanout.h - one question to several participants at once (the operators'
 * endpoints ask every shard's agent over HTTP, peer token, in parallel).
 *
 * Each shard gets its own fresh connection and a time limit
 * (FANOUT_TIMEOUT_MS): operators ask rarely, and a dead shard must only
 * make its own part of an answer fail. done runs once every asked shard
 * answered or failed; the fan-out is freed when it returns.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#ifndef DTX_FANOUT_H
#define DTX_FANOUT_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>

#include "dtx/coord_config.h"
#include "dtx/err.h"
#include "dtx/ev.h"
#include "dtx/list.h"

#define FANOUT_TIMEOUT_MS 5000

/* One shard's part of a fan-out: its answer, or why there is none. */
struct fanout_part {
    bool asked;
    int status;  /* HTTP status, 0 when it could not be asked */
    cJSON *body; /* parsed answer, or NULL */
    char error[DTX_ERR_MSG_MAX + 32];
};

struct fanout;
typedef void (*fanout_done_fn)(void *arg, const struct fanout_part *parts, size_t nparts);

/*
 * Asks method path[i] of shard i's participant (NULL: shard i is not
 * asked); POSTs send "{}". The fan-out waits on pending (a list head of
 * its owner's) until done, so that fanout_abandon can drop it.
 */
struct dialer;
void fanout_start(const struct dialer *d, const struct coord_config *cfg, struct list_node *pending,
                  const char *method, char *const *paths, fanout_done_fn done, void *arg);

/* Drops every fan-out waiting on pending without calling done; release(arg) frees each arg. */
void fanout_abandon(struct list_node *pending, void (*release)(void *arg));

#endif
