/*
 * fanout.c - asking every participant at once (fanout.h).
 *
 * A fan-out holds one reference for each request in flight and one for
 * itself while it sends them, so done cannot run before every request is
 * out; the last reference released runs done and frees it.
 *
 * Thread model: the coordinator's event-loop thread.
 */
#include "dtx/fanout.h"
#include "dtx/httpc.h"
#include "dtx/jsonx.h"
#include "dtx/xalloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fanout {
    struct list_node link; /* on the owner's pending list */
    size_t nparts, left;
    struct fanout_part *parts;
    struct httpc **conns;
    struct ref *refs;
    fanout_done_fn done;
    void *arg;
};

/* What one request's callback needs: its fan-out and which part it fills. */
struct ref {
    struct fanout *f;
    size_t i;
};

static void fanout_free(struct fanout *f)
{
    list_remove(&f->link);
    for (size_t i = 0; i < f->nparts; i++) {
        httpc_free(f->conns[i]);
        cJSON_Delete(f->parts[i].body);
    }
    free(f->conns);
    free(f->refs);
    free(f->parts);
    free(f);
}

static void release(struct fanout *f)
{
    if (--f->left > 0)
        return;
    f->done(f->arg, f->parts, f->nparts);
    fanout_free(f);
}

static void on_answer(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct ref *r = arg;
    struct fanout_part *p = &r->f->parts[r->i];
    cJSON *body = NULL;

    httpc_free(r->f->conns[r->i]);
    r->f->conns[r->i] = NULL;
    if (rc < 0) {
        snprintf(p->error, sizeof(p->error), "%s",
                 err ? err->msg : "the participant did not answer");
    } else {
        p->status = resp->status;
        if (jsonx_parse(resp->body, resp->body_len, &body, NULL) == 0)
            p->body = body;
        if (resp->status >= 400) {
            const cJSON *e = cJSON_GetObjectItemCaseSensitive(body, "error");
            const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");

            snprintf(p->error, sizeof(p->error), "HTTP %d: %s", resp->status,
                     cJSON_IsString(m) ? m->valuestring : "(no message)");
        }
    }
    release(r->f);
}

void fanout_start(const struct dialer *d, const struct coord_config *cfg, struct list_node *pending,
                  const char *method, char *const *paths, fanout_done_fn done, void *arg)
{
    struct fanout *f = xcalloc(1, sizeof(*f));
    bool post = strcmp(method, "POST") == 0;
    char headers[400] = "";

    f->nparts = cfg->nshards;
    f->parts = xcalloc(f->nparts, sizeof(*f->parts));
    f->conns = xcalloc(f->nparts, sizeof(*f->conns));
    f->refs = xcalloc(f->nparts, sizeof(*f->refs));
    f->done = done;
    f->arg = arg;
    list_insert_tail(pending, &f->link);
    snprintf(headers, sizeof(headers), "%s%s%s%s", post ? "Content-Type: application/json\r\n" : "",
             cfg->peer_token.value[0] ? "Authorization: Bearer " : "", cfg->peer_token.value,
             cfg->peer_token.value[0] ? "\r\n" : "");
    f->left = 1; /* held until every request is out */
    for (size_t i = 0; i < f->nparts; i++) {
        if (!paths[i])
            continue;
        f->parts[i].asked = true;
        f->refs[i] = (struct ref){.f = f, .i = i};
        f->left++;
        f->conns[i] = httpc_new(d, &cfg->shards[i].addr);
        if (httpc_request(f->conns[i], method, paths[i], headers, post ? "{}" : NULL, post ? 2 : 0,
                          FANOUT_TIMEOUT_MS, on_answer, &f->refs[i]) < 0) {
            httpc_free(f->conns[i]);
            f->conns[i] = NULL;
            snprintf(f->parts[i].error, sizeof(f->parts[i].error), "could not send the request");
            release(f);
        }
    }
    release(f);
}

void fanout_abandon(struct list_node *pending, void (*release_arg)(void *arg))
{
    while (!list_empty(pending)) {
        struct fanout *f = container_of(pending->next, struct fanout, link);

        if (release_arg)
            release_arg(f->arg);
        fanout_free(f);
    }
}
