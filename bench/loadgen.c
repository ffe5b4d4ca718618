/*
 * loadgen.c - dtx-loadgen: a closed-loop load generator for the
 * coordinator's HTTP API (bank transfers between two accounts on two
 * different shards).
 *
 *   dtx-loadgen --url http://127.0.0.1:7000 --shards s1,s2 --accounts 10000
 *               --concurrency 32 (--seconds 10 | --count 100000)
 *               [--warmup 2] [--idempotency] [--protocol 2pc|3pc] [--json FILE]
 *               [--ca-file FILE]
 *
 * An https:// URL is dialled with TLS, the coordinator verified against
 * --ca-file (else the system's CAs), as the daemons verify each other.
 * Each of the --concurrency connections sends a transfer, waits for the
 * answer, sends the next (keep-alive). Accounts 1..N exist on every shard
 * with a balance; a transfer moves 1 from a random account on one shard to
 * a random account on another. Latency is measured per request; the report
 * gives throughput, p50/p99/max latency, answers by status and the CPU the
 * generator itself used (so a reader can tell it was not the bottleneck).
 *
 * Thread model: one event-loop thread (the project's ev + httpc).
 */
#include "dtx/addr.h"
#include "dtx/buf.h"
#include "dtx/ev.h"
#include "dtx/httpc.h"
#include "dtx/xalloc.h"
#include "latency.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct opts {
    const char *url;
    char shards[16][49];
    int nshards;
    int accounts;
    int concurrency;
    double seconds;
    long count;
    double warmup;
    int per_tx; /* shards each transaction touches (1: one-phase, two accounts on one shard) */
    int idempotency;
    const char *protocol; /* NULL: the coordinator's default (2pc) */
    const char *json;
    const char *ca_file; /* https://: the CAs the coordinator is verified against */
};

struct client;

struct run {
    struct opts o;
    struct ev_loop loop;
    struct addr addr;
    struct dialer dialer;
    struct tls_config tls; /* https:// only */
    struct client *clients;
    uint64_t start_us, measure_us, end_us;
    long sent, done;
    long status[6];       /* 2xx 3xx 4xx(not 409) 409 5xx error */
    struct latencies lat; /* of measured requests */
    uint64_t seq;
    unsigned seed;
    bool stopping;
};

struct client {
    struct run *r;
    struct httpc *c;
    uint64_t t0;
    struct buf body;
};

static void send_next(struct client *cl);

static void add_update(struct run *r, struct buf *b, int shard, int delta)
{
    buf_printf(b,
               "%s{\"shard\":\"%s\",\"sql\":\"UPDATE accounts SET balance = balance + $1 "
               "WHERE id = $2\",\"params\":[%d,%d]}",
               b->data[b->len - 1] == '[' ? "" : ",", r->o.shards[shard], delta,
               1 + (int)(bench_rand(&r->seed) % (unsigned)r->o.accounts));
}

/*
 * A transfer touching per_tx shards, starting at a random one: the first
 * pays per_tx - 1 (1 with per_tx 1), each other one receives 1, so the
 * total is conserved. With per_tx 1 both accounts are on one shard.
 */
static void build_transfer(struct run *r, struct buf *b)
{
    int first = (int)(bench_rand(&r->seed) % (unsigned)r->o.nshards);
    int k = r->o.per_tx;

    buf_reset(b);
    buf_puts(b, "{");
    if (r->o.idempotency)
        buf_printf(b, "\"idempotency_key\":\"lg-%d-%" PRIu64 "\",", (int)getpid(), ++r->seq);
    if (r->o.protocol)
        buf_printf(b, "\"protocol\":\"%s\",", r->o.protocol);
    buf_puts(b, "\"ops\":[");
    add_update(r, b, first, k == 1 ? -1 : -(k - 1));
    for (int i = 1; i < (k == 1 ? 2 : k); i++)
        add_update(r, b, k == 1 ? first : (first + i) % r->o.nshards, 1);
    buf_puts(b, "]}");
}

static void record(struct run *r, uint64_t t0, int rc, int status)
{
    uint64_t now = ev_clock_us();
    int k = rc < 0 ? 5 : status == 409 ? 3 : status >= 500 ? 4 : status / 100 - 2;

    r->done++;
    if (t0 < r->measure_us || now > r->end_us)
        return;
    r->status[k < 0 || k > 5 ? 5 : k]++;
    lat_add(&r->lat, (uint32_t)(now - t0));
}

static void on_answer(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct client *cl = arg;
    struct run *r = cl->r;

    record(r, cl->t0, rc, resp ? resp->status : 0);
    if (rc < 0 && r->status[5] < 5)
        fprintf(stderr, "dtx-loadgen: %s\n", err ? err->msg : "request failed");
    send_next(cl);
}

static void send_next(struct client *cl)
{
    struct run *r = cl->r;
    uint64_t now = ev_clock_us();

    if (now >= r->end_us || (r->o.count && r->sent >= r->o.count)) {
        if (r->done >= r->sent)
            ev_loop_stop(&r->loop);
        return;
    }
    build_transfer(r, &cl->body);
    cl->t0 = now;
    r->sent++;
    httpc_request(cl->c, "POST", "/v1/transactions", "Content-Type: application/json\r\n",
                  cl->body.data, cl->body.len, 30000, on_answer, cl);
}

static void report(struct run *r, double cpu)
{
    double secs = (double)(r->end_us - r->measure_us) / 1e6;
    long ok = r->status[0];
    struct lat_summary l;
    FILE *f;

    lat_summarize(&r->lat, &l);
    printf("dtx-loadgen: concurrency %d, %.1f s measured: %ld committed (%.0f tx/s), %ld aborted, "
           "%ld other 4xx, %ld 5xx, %ld errors; latency p50 %.3f ms p99 %.3f ms max %.3f ms; "
           "generator CPU %.2f s (%.0f%% of one core)\n",
           r->o.concurrency, secs, ok, ok / secs, r->status[3], r->status[2], r->status[4],
           r->status[5], l.p50_ms, l.p99_ms, l.max_ms, cpu, 100.0 * cpu / secs);
    if (!r->o.json || !(f = fopen(r->o.json, "w")))
        return;
    fprintf(f,
            "{\"concurrency\":%d,\"seconds\":%.3f,\"committed\":%ld,\"aborted\":%ld,"
            "\"other_4xx\":%ld,\"errors_5xx\":%ld,\"failed\":%ld,\"tps\":%.1f,\"p50_ms\":%.3f,"
            "\"p99_ms\":%.3f,\"max_ms\":%.3f,\"generator_cpu_s\":%.3f}\n",
            r->o.concurrency, secs, ok, r->status[3], r->status[2], r->status[4], r->status[5],
            ok / secs, l.p50_ms, l.p99_ms, l.max_ms, cpu);
    fclose(f);
}

static int parse_shards(struct opts *o, const char *list)
{
    char copy[1024], *tok, *save = NULL;

    snprintf(copy, sizeof(copy), "%s", list);
    for (tok = strtok_r(copy, ",", &save); tok && o->nshards < 16; tok = strtok_r(NULL, ",", &save))
        snprintf(o->shards[o->nshards++], sizeof(o->shards[0]), "%s", tok);
    return o->nshards >= 2 ? 0 : -1;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"url", 1, NULL, 'u'},
                                       {"shards", 1, NULL, 's'},
                                       {"accounts", 1, NULL, 'a'},
                                       {"concurrency", 1, NULL, 'c'},
                                       {"seconds", 1, NULL, 't'},
                                       {"count", 1, NULL, 'n'},
                                       {"warmup", 1, NULL, 'w'},
                                       {"idempotency", 0, NULL, 'i'},
                                       {"json", 1, NULL, 'j'},
                                       {"protocol", 1, NULL, 'p'},
                                       {"shards-per-tx", 1, NULL, 'k'},
                                       {"ca-file", 1, NULL, 'C'},
                                       {0, 0, 0, 0}};
    int ch;

    *o = (struct opts){.url = "http://127.0.0.1:7000",
                       .accounts = 1000,
                       .concurrency = 8,
                       .seconds = 10,
                       .per_tx = 2};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'u':
            o->url = optarg;
            break;
        case 's':
            if (parse_shards(o, optarg) < 0)
                return -1;
            break;
        case 'a':
            o->accounts = atoi(optarg);
            break;
        case 'c':
            o->concurrency = atoi(optarg);
            break;
        case 't':
            o->seconds = atof(optarg);
            break;
        case 'n':
            o->count = atol(optarg);
            break;
        case 'w':
            o->warmup = atof(optarg);
            break;
        case 'i':
            o->idempotency = 1;
            break;
        case 'j':
            o->json = optarg;
            break;
        case 'p':
            if (strcmp(optarg, "2pc") != 0 && strcmp(optarg, "3pc") != 0)
                return -1;
            o->protocol = optarg;
            break;
        case 'k':
            o->per_tx = atoi(optarg);
            break;
        case 'C':
            o->ca_file = optarg;
            break;
        default:
            return -1;
        }
    }
    if (o->nshards == 0)
        parse_shards(o, "s1,s2");
    return o->accounts > 0 && o->concurrency > 0 && o->per_tx >= 1 && o->per_tx <= o->nshards ? 0
                                                                                              : -1;
}

int main(int argc, char **argv)
{
    struct run r;
    struct dtx_err err;
    double cpu0;

    memset(&r, 0, sizeof(r));
    xalloc_init();
    if (parse_args(argc, argv, &r.o) < 0) {
        fprintf(stderr, "usage: dtx-loadgen --url URL --shards s1,s2 --accounts N --concurrency C "
                        "(--seconds S | --count N) [--warmup S] [--idempotency] "
                        "[--protocol 2pc|3pc] [--json FILE] [--ca-file FILE]\n");
        return 2;
    }
    dtx_err_clear(&err);
    if (addr_parse_url(r.o.url, &r.addr, &err) < 0 || ev_loop_init(&r.loop) < 0 ||
        resolver_new(&r.dialer.resolver, &r.loop, &err) < 0) {
        fprintf(stderr, "dtx-loadgen: %s\n", err.msg);
        return 2;
    }
    r.dialer.loop = &r.loop;
    if (r.addr.tls) {
        if (tls_config_client(r.o.ca_file, &r.tls, &err) < 0) {
            fprintf(stderr, "dtx-loadgen: %s\n", err.msg);
            return 2;
        }
        r.dialer.tls = &r.tls;
    }
    r.seed = (unsigned)getpid() ^ (unsigned)ev_wall_us();
    r.start_us = ev_clock_us();
    r.measure_us = r.start_us + (uint64_t)(r.o.warmup * 1e6);
    r.end_us = r.o.count ? UINT64_MAX : r.measure_us + (uint64_t)(r.o.seconds * 1e6);
    r.clients = xcalloc((size_t)r.o.concurrency, sizeof(*r.clients));
    cpu0 = process_cpu_seconds();
    for (int i = 0; i < r.o.concurrency; i++) {
        r.clients[i].r = &r;
        r.clients[i].c = httpc_new(&r.dialer, &r.addr);
        send_next(&r.clients[i]);
    }
    ev_loop_run(&r.loop);
    if (r.o.count)
        r.end_us = ev_clock_us();
    report(&r, process_cpu_seconds() - cpu0);
    for (int i = 0; i < r.o.concurrency; i++) {
        httpc_free(r.clients[i].c);
        buf_release(&r.clients[i].body);
    }
    free(r.clients);
    lat_release(&r.lat);
    resolver_free(r.dialer.resolver);
    tls_config_release(&r.tls);
    ev_loop_release(&r.loop);
    return r.status[5] || r.status[4] ? 1 : 0;
}
