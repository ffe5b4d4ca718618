/*
 * pc.h - the coordinator's link to one participant: a peer stream that is
 * dialled, upgraded from HTTP, checked (the participant must say it serves
 * the shard the config names) and re-dialled with backoff whenever it
 * breaks.
 *
 * Sending never blocks and never queues while the link is down: a message
 * for a participant that is not connected fails at once (DTX_EUNAVAIL) and
 * the protocol decides what that means (abort in phase 1, resend later in
 * phase 2).
 */
#ifndef DTX_PC_H
#define DTX_PC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dtx/coord_config.h"
#include "dtx/ev.h"

struct pc;

struct pc_cbs {
    /* A frame arrived from the participant (after the handshake). */
    void (*on_frame)(void *arg, int shard, const char *data, size_t len);
    /* The link came up (handshake done). */
    void (*on_up)(void *arg, int shard);
    /* The link went down (it was up before); why says what happened. */
    void (*on_down)(void *arg, int shard, const char *why);
    /*
     * The participant refused this run: it has seen epoch epoch_seen of
     * this node from another run (the decision log is behind). The link
     * keeps re-dialling; it is accepted once pc_set_epoch moved past.
     */
    void (*on_behind)(void *arg, int shard, uint64_t epoch_seen);
    void *arg;
};

/* Who dials: the coordinator node, its run's epoch and boot id, its peer token. */
struct pc_run {
    const char *node_id;
    uint64_t epoch;
    const char *boot; /* a random id of this run: an equal epoch from another run is refused */
    const char *peer_token;
};

/* Creates the link and starts dialling. Never fails (xalloc.h). */
struct dialer;
struct pc *pc_new(const struct dialer *d, int shard, const struct shard_config *sc,
                  const struct pc_run *run, const struct pc_cbs *cbs);
/* The run moved to a new epoch: the link is dropped (if up) and dialled anew with it. */
void pc_set_epoch(struct pc *pc, uint64_t epoch);
/* The peer token changed (SIGHUP): the next dial sends this one; an open link stays open. */
void pc_set_token(struct pc *pc, const char *peer_token);
/* Closes the link. NULL is a no-op. */
void pc_free(struct pc *pc);

/* Queues one frame; returns 0, or DTX_EUNAVAIL if the link is not up. */
int pc_send(struct pc *pc, const char *data, size_t len);
bool pc_is_up(const struct pc *pc);
/* True when the participant is up and its hello said it handles "forget" (msg.h). */
bool pc_takes_forget(const struct pc *pc);
/* Pushes queued frames to the socket now (before a simulated crash). */
void pc_flush_sync(struct pc *pc);
/* True once the first dial finished, one way or the other. */
bool pc_tried(const struct pc *pc);
/* "up", "connecting" or "down", and the last error while not up. */
const char *pc_state(const struct pc *pc);
const char *pc_last_error(const struct pc *pc);

#endif
