/*
 * pc.c - coordinator -> participant links.
 *
 * States:
 *   DOWN --retry timer--> DIALING --101 Switching Protocols--> HANDSHAKE
 *   HANDSHAKE --participant's hello names our shard--> UP
 *   any --error, EOF, wrong hello--> DOWN (retry after backoff: 50 ms
 *   doubling to 2 s, reset once up)
 *
 * Thread model: the coordinator's event-loop thread only.
 */
#include "dtx/pc.h"
#include "dtx/httpc.h"
#include "dtx/jsonx.h"
#include "dtx/log.h"
#include "dtx/msg.h"
#include "dtx/stream.h"
#include "dtx/xalloc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BACKOFF_MIN_MS  50
#define BACKOFF_MAX_MS  2000
#define DIAL_TIMEOUT_MS 3000

enum pc_state { PC_DOWN, PC_DIALING, PC_HANDSHAKE, PC_UP };

struct pc {
    struct ev_loop *loop;
    int shard;
    const struct shard_config *sc;
    char node_id[DTX_NAME_MAX + 1];
    uint64_t epoch;
    char boot[40];
    uint64_t dial_epoch; /* the epoch the dial in flight announced */
    char peer_token[AUTH_TOKEN_MAX];
    char headers[768];
    struct pc_cbs cbs;
    enum pc_state state;
    bool tried;
    bool takes_forget; /* its hello said so (msg.h) */
    struct httpc *http;
    struct stream *st;
    struct ev_timer retry;
    uint32_t backoff_ms;
    char last_error[256];
};

static void pc_dial(struct pc *pc);

static void pc_set_error(struct pc *pc, const char *why)
{
    if (strcmp(pc->last_error, why) != 0)
        log_warn("participant link to shard '%s' (%s): %s", pc->sc->name, pc->sc->url, why);
    snprintf(pc->last_error, sizeof(pc->last_error), "%s", why);
}

static void pc_down(struct pc *pc, const char *why)
{
    bool was_up = pc->state == PC_UP;

    stream_free(pc->st);
    pc->st = NULL;
    pc->state = PC_DOWN;
    pc->tried = true;
    pc_set_error(pc, why);
    ev_timer_start(pc->loop, &pc->retry, pc->backoff_ms);
    pc->backoff_ms = pc->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : pc->backoff_ms * 2;
    if (was_up)
        pc->cbs.on_down(pc->cbs.arg, pc->shard, why);
}

static void pc_check_hello(struct pc *pc, const char *data, size_t len)
{
    struct msg m;
    struct dtx_err err;
    char why[300];

    dtx_err_clear(&err);
    if (msg_parse(data, len, &m, &err) < 0) {
        pc_down(pc, err.msg);
        return;
    }
    if (m.type != MSG_HELLO || strcmp(m.name, pc->sc->name) != 0) {
        snprintf(why, sizeof(why), "the participant at this URL serves shard '%s', not '%s'",
                 m.type == MSG_HELLO ? m.name : "?", pc->sc->name);
        msg_release(&m);
        pc_down(pc, why);
        return;
    }
    pc->takes_forget = m.takes_forget;
    msg_release(&m);
    pc->state = PC_UP;
    pc->tried = true;
    pc->backoff_ms = BACKOFF_MIN_MS;
    if (pc->last_error[0])
        log_info("participant link to shard '%s' is up again", pc->sc->name);
    pc->last_error[0] = '\0';
    pc->cbs.on_up(pc->cbs.arg, pc->shard);
}

static void on_frame(void *arg, const char *data, size_t len)
{
    struct pc *pc = arg;

    if (pc->state == PC_HANDSHAKE)
        pc_check_hello(pc, data, len);
    else if (pc->state == PC_UP)
        pc->cbs.on_frame(pc->cbs.arg, pc->shard, data, len);
}

static void on_close(void *arg, int err, const char *why)
{
    struct pc *pc = arg;

    (void)err;
    pc_down(pc, why);
}

static void pc_send_hello(struct pc *pc)
{
    cJSON *m = msg_new(MSG_HELLO, NULL);
    char *s;

    jsonx_add_str(m, "node", pc->node_id);
    jsonx_add_num(m, "epoch", (double)pc->epoch);
    s = jsonx_print(m);
    stream_send(pc->st, s, strlen(s));
    free(s);
    cJSON_Delete(m);
}

/* A 409 that says which epoch of this node the participant has seen: the run is behind. */
static void check_behind(struct pc *pc, const struct httpc_resp *resp)
{
    cJSON *body = NULL;
    const cJSON *e, *seen;

    if (jsonx_parse(resp->body, resp->body_len, &body, NULL) < 0)
        return;
    e = cJSON_GetObjectItemCaseSensitive(body, "error");
    seen = cJSON_GetObjectItemCaseSensitive(e, "epoch_seen");
    if (jsonx_is_safe_int(seen) && seen->valuedouble >= 1 && pc->cbs.on_behind)
        pc->cbs.on_behind(pc->cbs.arg, pc->shard, (uint64_t)seen->valuedouble);
    cJSON_Delete(body);
}

static void on_upgraded(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct pc *pc = arg;
    struct stream_cbs cbs = {on_frame, on_close, pc, NULL, NULL};
    struct buf extra = BUF_INIT;
    struct tls_session *tls = NULL;
    char why[300];
    int fd;

    if (rc < 0) {
        pc_down(pc, err ? err->msg : "could not connect");
        return;
    }
    if (resp->status != 101) {
        snprintf(why, sizeof(why), "upgrade refused with HTTP %d: %.200s", resp->status,
                 resp->body);
        pc_down(pc, why);
        if (resp->status == 409)
            check_behind(pc, resp);
        return;
    }
    fd = httpc_detach(pc->http, &extra, &tls);
    if (pc->dial_epoch != pc->epoch) {
        /* accepted at the epoch this run has since moved past: announce the new one first */
        tls_session_free(tls);
        if (fd >= 0)
            close(fd);
        buf_release(&extra);
        pc_down(pc, "this coordinator moved to a new epoch while dialling; dialling again");
        return;
    }
    pc->st = fd >= 0 ? stream_new_tls(pc->loop, fd, tls, extra.data, extra.len, &cbs) : NULL;
    buf_release(&extra);
    if (!pc->st) {
        pc_down(pc, "could not set up the peer stream");
        return;
    }
    pc->state = PC_HANDSHAKE;
    pc_send_hello(pc);
}

static void pc_dial(struct pc *pc)
{
    pc->state = PC_DIALING;
    pc->dial_epoch = pc->epoch;
    if (httpc_request(pc->http, "GET", "/v1/peer/stream", pc->headers, NULL, 0, DIAL_TIMEOUT_MS,
                      on_upgraded, pc) < 0)
        pc_down(pc, "could not start dialling");
}

static void on_retry(struct ev_loop *loop, struct ev_timer *t)
{
    (void)loop;
    pc_dial(t->data);
}

static void set_headers(struct pc *pc)
{
    int n = snprintf(pc->headers, sizeof(pc->headers),
                     "Connection: Upgrade\r\nUpgrade: %s\r\nX-Dtx-Node: %s\r\n"
                     "X-Dtx-Epoch: %" PRIu64 "\r\nX-Dtx-Boot: %s\r\n",
                     STREAM_PROTO, pc->node_id, pc->epoch, pc->boot);

    if (pc->peer_token[0] && n > 0 && (size_t)n < sizeof(pc->headers))
        snprintf(pc->headers + n, sizeof(pc->headers) - (size_t)n, "Authorization: Bearer %s\r\n",
                 pc->peer_token);
}

struct pc *pc_new(const struct dialer *d, int shard, const struct shard_config *sc,
                  const struct pc_run *run, const struct pc_cbs *cbs)
{
    struct pc *pc = xcalloc(1, sizeof(*pc));

    pc->loop = d->loop;
    pc->shard = shard;
    pc->sc = sc;
    snprintf(pc->node_id, sizeof(pc->node_id), "%s", run->node_id);
    snprintf(pc->boot, sizeof(pc->boot), "%s", run->boot);
    snprintf(pc->peer_token, sizeof(pc->peer_token), "%s", run->peer_token ? run->peer_token : "");
    pc->epoch = run->epoch;
    pc->cbs = *cbs;
    pc->backoff_ms = BACKOFF_MIN_MS;
    set_headers(pc);
    pc->http = httpc_new(d, &sc->addr);
    ev_timer_init(&pc->retry, on_retry, pc);
    pc_dial(pc);
    return pc;
}

void pc_set_epoch(struct pc *pc, uint64_t epoch)
{
    pc->epoch = epoch;
    set_headers(pc);
    if (pc->state == PC_UP || pc->state == PC_HANDSHAKE)
        pc_down(pc, "this coordinator moved to a new epoch; dialling again");
    pc->backoff_ms = BACKOFF_MIN_MS;
    if (pc->state == PC_DOWN) {
        ev_timer_stop(pc->loop, &pc->retry);
        pc_dial(pc);
    }
}

void pc_set_token(struct pc *pc, const char *peer_token)
{
    snprintf(pc->peer_token, sizeof(pc->peer_token), "%s", peer_token);
    set_headers(pc);
}

void pc_free(struct pc *pc)
{
    if (!pc)
        return;
    ev_timer_stop(pc->loop, &pc->retry);
    stream_free(pc->st);
    httpc_free(pc->http);
    free(pc);
}

int pc_send(struct pc *pc, const char *data, size_t len)
{
    if (pc->state != PC_UP)
        return DTX_EUNAVAIL;
    stream_send(pc->st, data, len);
    return 0;
}

void pc_flush_sync(struct pc *pc)
{
    if (pc->st)
        stream_flush_sync(pc->st, 1000);
}

bool pc_is_up(const struct pc *pc)
{
    return pc->state == PC_UP;
}

bool pc_takes_forget(const struct pc *pc)
{
    return pc->state == PC_UP && pc->takes_forget;
}

bool pc_tried(const struct pc *pc)
{
    return pc->tried;
}

const char *pc_state(const struct pc *pc)
{
    switch (pc->state) {
    case PC_UP:
        return "up";
    case PC_DIALING:
    case PC_HANDSHAKE:
        return pc->tried ? "down" : "connecting";
    case PC_DOWN:
        return "down";
    }
    return "down";
}

const char *pc_last_error(const struct pc *pc)
{
    return pc->last_error;
}
