/*
 * peer.c - the participant's coordinator streams: each coordinator dials
 * GET /v1/peer/stream, which is upgraded to a framed stream (stream.h);
 * the agent says hello first (its shard), the coordinator answers with its
 * own (node and epoch), and from then on every frame is a message
 * (msg.h) for agent.c.
 *
 * Replies go back on the stream the request came on; if that stream
 * closed, on the newest stream of the coordinator node that issued the
 * transaction; if there is none, they are dropped with a log line (the
 * coordinator re-drives what it misses). Each node may have one run
 * connected: a newer run's hello closes its older runs' streams.
 *
 * State: ag->peers, owned here. Thread model: the participant's
 * event-loop thread only.
 */
#include "agent_impl.h"

#include "dtx/failpoint.h"
#include "dtx/gid.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/*
 * Where a message goes: the stream it answers, else the newest stream of
 * the node that issued its gtid (only that node decides it), else nowhere.
 */
static struct peer *reply_peer(struct agent *ag, struct peer *preferred, const cJSON *m)
{
    const cJSON *g = cJSON_GetObjectItemCaseSensitive(m, "gtid");
    char node[DTX_NAME_MAX + 1];
    struct list_node *pos;

    if (preferred)
        return preferred;
    if (!cJSON_IsString(g) || !gid_parse_gtid(g->valuestring, node, NULL, NULL))
        return NULL;
    for (pos = ag->peers.prev; pos != &ag->peers; pos = pos->prev) {
        struct peer *p = container_of(pos, struct peer, link);

        if (p->hello && strcmp(p->node, node) == 0)
            return p;
    }
    return NULL;
}

void peer_send(struct agent *ag, struct peer *preferred, cJSON *m, const struct buf *trailer)
{
    struct peer *p = reply_peer(ag, preferred, m);
    char *s = jsonx_print(m);

    if (p && trailer)
        stream_send2(p->st, s, strlen(s), buf_head(trailer), buf_avail(trailer));
    else if (p)
        stream_send(p->st, s, strlen(s));
    else
        log_warn("no coordinator connected: dropped %s", s);
    free(s);
    cJSON_Delete(m);
}

size_t peers_connected(const struct agent *ag)
{
    size_t n = 0;

    for (const struct list_node *pos = ag->peers.next; pos != &ag->peers; pos = pos->next)
        n += container_of(pos, const struct peer, link)->hello;
    return n;
}

/*
 * A newer run of a node connected (the shard recorded it before the
 * stream was accepted: agent_http.c): its older runs' streams are closed,
 * so that a replaced coordinator (taken over by its standby, or cut off
 * and replaced) can send nothing more here, phase 2 included.
 */
static void retire_older(struct peer *newer)
{
    struct list_node *pos = newer->ag->peers.next;

    while (pos != &newer->ag->peers) {
        struct peer *p = container_of(pos, struct peer, link);

        pos = pos->next;
        if (p == newer || !p->hello || strcmp(p->node, newer->node) != 0 ||
            p->epoch >= newer->epoch)
            continue;
        log_warn("coordinator '%s': epoch %" PRIu64 " connected, closing the stream of its older "
                 "run (epoch %" PRIu64 "): that run was replaced and may decide nothing more",
                 p->node, newer->epoch, p->epoch);
        peer_free(p);
    }
}

static void peer_hello(struct peer *p, const struct msg *m)
{
    snprintf(p->node, sizeof(p->node), "%s", m->name);
    p->epoch = m->epoch;
    p->hello = true;
    log_info("coordinator '%s' (epoch %" PRIu64 ") connected", p->node, p->epoch);
    retire_older(p);
    agent_on_hello(p->ag, p);
}

static void on_peer_frame(void *arg, const char *data, size_t len)
{
    struct peer *p = arg;
    struct dtx_err err;
    struct msg m;

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) < 0) {
        log_warn("coordinator sent a malformed message: %s", err.msg);
        return;
    }
    if (m.type == MSG_HELLO)
        peer_hello(p, &m);
    else if (!p->hello)
        log_warn("coordinator sent a message before its hello; ignored");
    else
        agent_on_message(p->ag, p, &m);
    msg_release(&m);
}

void peer_free(struct peer *p)
{
    list_remove(&p->link);
    agent_on_peer_lost(p->ag, p);
    stream_free(p->st);
    free(p);
}

static void on_peer_close(void *arg, int err, const char *why)
{
    struct peer *p = arg;

    (void)err;
    log_info("coordinator '%s' disconnected: %s", p->hello ? p->node : "?", why);
    peer_free(p);
}

static void close_upgraded(void *ctx, int fd)
{
    (void)fd;
    httpd_upgraded_close(ctx);
}

void peer_accept(struct agent *ag, int fd, const char *extra, size_t extra_len,
                 struct httpd_upgraded *up)
{
    struct peer *p = xcalloc(1, sizeof(*p));
    struct stream_cbs cbs = {
        .on_frame = on_peer_frame,
        .on_close = on_peer_close,
        .arg = p,
        .closefd = close_upgraded,
        .closefd_ctx = up,
    };
    cJSON *hello;

    p->ag = ag;
    p->up = up;
    list_insert_tail(&ag->peers, &p->link);
    p->st = stream_new(ag->loop, fd, extra, extra_len, &cbs);
    if (!p->st) {
        list_remove(&p->link);
        free(p);
        return;
    }
    hello = msg_new(MSG_HELLO, NULL);
    jsonx_add_str(hello, "shard", ag->cfg->name);
    if (!fp_hit("agent.hello_as_before_forget")) /* tests: a participant of an older version */
        jsonx_add_bool(hello, "takes_forget", true);
    peer_send(ag, p, hello, NULL);
}
