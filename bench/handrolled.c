/*
 * handrolled.c - dtx-handrolled: the baselines dtx is measured against.
 *
 *   dtx-handrolled --mode 2pc|local --conninfo CI1 --conninfo CI2 --accounts N
 *                  --concurrency C --seconds S [--warmup W] [--json FILE]
 *
 * 2pc:   what a team would write instead of using dtx. Each client thread
 *        holds one libpq connection per shard and moves 1 between random
 *        accounts on the two shards: BEGIN, the UPDATE and PREPARE TRANSACTION
 *        are sent to both shards in parallel (each statement a round trip),
 *        then COMMIT PREPARED on both. No coordinator, no decision log.
 * local: the non-distributed upper bound: one transaction on the first shard
 *        doing both UPDATEs (BEGIN, UPDATE, UPDATE, COMMIT).
 *
 * Thread model: one thread per client, blocking libpq.
 */
#include "dtx/xalloc.h"
#include "latency.h"

#include <getopt.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct opts {
    const char *conninfo[2];
    int nconninfo;
    int local;
    int accounts;
    int concurrency;
    double seconds, warmup;
    const char *json;
};

struct shared {
    struct opts o;
    uint64_t measure_us, end_us;
    atomic_long committed, failed;
};

struct worker {
    struct shared *sh;
    PGconn *c[2];
    unsigned seed;
    int id;
    struct latencies lat;
};

static uint64_t now_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Sends one statement (with optional params) on each connection, then reads both results. */
static int both(struct worker *w, const char *sql0, const char *p0, const char *sql1,
                const char *p1)
{
    const char *const *v0 = p0 ? &p0 : NULL, *const *v1 = p1 ? &p1 : NULL;
    int ok = 1;

    if (!PQsendQueryParams(w->c[0], sql0, p0 ? 1 : 0, NULL, v0, NULL, NULL, 0) ||
        !PQsendQueryParams(w->c[1], sql1, p1 ? 1 : 0, NULL, v1, NULL, NULL, 0))
        return 0;
    for (int i = 0; i < 2; i++) {
        PGresult *r;

        while ((r = PQgetResult(w->c[i])) != NULL) {
            if (PQresultStatus(r) != PGRES_COMMAND_OK && PQresultStatus(r) != PGRES_TUPLES_OK)
                ok = 0;
            PQclear(r);
        }
    }
    return ok;
}

static int one(PGconn *c, const char *sql, const char *p)
{
    const char *const *v = p ? &p : NULL;
    PGresult *r = PQexecParams(c, sql, p ? 1 : 0, NULL, v, NULL, NULL, 0);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;

    PQclear(r);
    return ok;
}

static int tx_2pc(struct worker *w, uint64_t n)
{
    char a[16], b[16], gid[64], prep[96], fin[96];
    int ok;

    snprintf(a, sizeof(a), "%u", 1 + bench_rand(&w->seed) % (unsigned)w->sh->o.accounts);
    snprintf(b, sizeof(b), "%u", 1 + bench_rand(&w->seed) % (unsigned)w->sh->o.accounts);
    snprintf(gid, sizeof(gid), "hr-%d-%d-%" PRIu64, (int)getpid(), w->id, n);
    snprintf(prep, sizeof(prep), "PREPARE TRANSACTION '%s'", gid);
    ok = both(w, "BEGIN", NULL, "BEGIN", NULL) &&
         both(w, "UPDATE accounts SET balance = balance - 1 WHERE id = $1", a,
              "UPDATE accounts SET balance = balance + 1 WHERE id = $1", b) &&
         both(w, prep, NULL, prep, NULL);
    if (!ok) {
        both(w, "ROLLBACK", NULL, "ROLLBACK", NULL);
        snprintf(fin, sizeof(fin), "ROLLBACK PREPARED '%s'", gid);
        both(w, fin, NULL, fin, NULL);
        return 0;
    }
    snprintf(fin, sizeof(fin), "COMMIT PREPARED '%s'", gid);
    return both(w, fin, NULL, fin, NULL);
}

static int tx_local(struct worker *w)
{
    char a[16], b[16];

    snprintf(a, sizeof(a), "%u", 1 + bench_rand(&w->seed) % (unsigned)w->sh->o.accounts);
    snprintf(b, sizeof(b), "%u", 1 + bench_rand(&w->seed) % (unsigned)w->sh->o.accounts);
    if (one(w->c[0], "BEGIN", NULL) &&
        one(w->c[0], "UPDATE accounts SET balance = balance - 1 WHERE id = $1", a) &&
        one(w->c[0], "UPDATE accounts SET balance = balance + 1 WHERE id = $1", b) &&
        one(w->c[0], "COMMIT", NULL))
        return 1;
    one(w->c[0], "ROLLBACK", NULL);
    return 0;
}

static void *run_worker(void *arg)
{
    struct worker *w = arg;
    struct shared *sh = w->sh;

    for (uint64_t n = 0;; n++) {
        uint64_t t0 = now_us(), t1;
        int ok;

        if (t0 >= sh->end_us)
            break;
        ok = sh->o.local ? tx_local(w) : tx_2pc(w, n);
        t1 = now_us();
        if (t0 < sh->measure_us || t1 > sh->end_us)
            continue;
        if (!ok) {
            atomic_fetch_add(&sh->failed, 1);
            continue;
        }
        atomic_fetch_add(&sh->committed, 1);
        lat_add(&w->lat, (uint32_t)(t1 - t0));
    }
    return NULL;
}

static void report(struct shared *sh, struct worker *ws, double cpu)
{
    double secs = (double)(sh->end_us - sh->measure_us) / 1e6;
    long ok = atomic_load(&sh->committed);
    struct latencies all = {NULL, 0, 0};
    struct lat_summary l;
    FILE *f;

    for (int i = 0; i < sh->o.concurrency; i++)
        lat_merge(&all, &ws[i].lat);
    lat_summarize(&all, &l);
    lat_release(&all);
    printf("dtx-handrolled %s: concurrency %d, %.1f s: %ld committed (%.0f tx/s), %ld failed; "
           "latency p50 %.3f ms p99 %.3f ms max %.3f ms; client CPU %.2f s\n",
           sh->o.local ? "local" : "2pc", sh->o.concurrency, secs, ok, ok / secs,
           atomic_load(&sh->failed), l.p50_ms, l.p99_ms, l.max_ms, cpu);
    if (!sh->o.json || !(f = fopen(sh->o.json, "w")))
        return;
    fprintf(f,
            "{\"concurrency\":%d,\"seconds\":%.3f,\"committed\":%ld,\"failed\":%ld,"
            "\"tps\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
            "\"generator_cpu_s\":%.3f}\n",
            sh->o.concurrency, secs, ok, atomic_load(&sh->failed), ok / secs, l.p50_ms, l.p99_ms,
            l.max_ms, cpu);
    fclose(f);
}

static int parse_args(int argc, char **argv, struct opts *o)
{
    static const struct option lo[] = {{"mode", 1, NULL, 'm'},     {"conninfo", 1, NULL, 'c'},
                                       {"accounts", 1, NULL, 'a'}, {"concurrency", 1, NULL, 'n'},
                                       {"seconds", 1, NULL, 's'},  {"warmup", 1, NULL, 'w'},
                                       {"json", 1, NULL, 'j'},     {0, 0, 0, 0}};
    int ch;

    *o = (struct opts){.accounts = 1000, .concurrency = 1, .seconds = 10};
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (ch == 'm')
            o->local = strcmp(optarg, "local") == 0;
        else if (ch == 'c' && o->nconninfo < 2)
            o->conninfo[o->nconninfo++] = optarg;
        else if (ch == 'a')
            o->accounts = atoi(optarg);
        else if (ch == 'n')
            o->concurrency = atoi(optarg);
        else if (ch == 's')
            o->seconds = atof(optarg);
        else if (ch == 'w')
            o->warmup = atof(optarg);
        else if (ch == 'j')
            o->json = optarg;
        else
            return -1;
    }
    return o->nconninfo >= (o->local ? 1 : 2) && o->concurrency > 0 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct shared sh;
    struct worker *ws;
    pthread_t *th;
    double cpu0;
    uint64_t start;

    memset(&sh, 0, sizeof(sh));
    if (parse_args(argc, argv, &sh.o) < 0) {
        fprintf(stderr, "usage: dtx-handrolled --mode 2pc|local --conninfo CI [--conninfo CI2] "
                        "--accounts N --concurrency C --seconds S [--warmup W] [--json FILE]\n");
        return 2;
    }
    ws = xcalloc((size_t)sh.o.concurrency, sizeof(*ws));
    th = xcalloc((size_t)sh.o.concurrency, sizeof(*th));
    for (int i = 0; i < sh.o.concurrency; i++) {
        ws[i].sh = &sh;
        ws[i].id = i;
        ws[i].seed = (unsigned)(getpid() * 7919 + i * 104729);
        for (int k = 0; k < (sh.o.local ? 1 : 2); k++) {
            ws[i].c[k] = PQconnectdb(sh.o.conninfo[k]);
            if (PQstatus(ws[i].c[k]) != CONNECTION_OK) {
                fprintf(stderr, "dtx-handrolled: %s", PQerrorMessage(ws[i].c[k]));
                return 1;
            }
        }
    }
    start = now_us();
    sh.measure_us = start + (uint64_t)(sh.o.warmup * 1e6);
    sh.end_us = sh.measure_us + (uint64_t)(sh.o.seconds * 1e6);
    cpu0 = process_cpu_seconds();
    for (int i = 0; i < sh.o.concurrency; i++)
        pthread_create(&th[i], NULL, run_worker, &ws[i]);
    for (int i = 0; i < sh.o.concurrency; i++)
        pthread_join(th[i], NULL);
    report(&sh, ws, process_cpu_seconds() - cpu0);
    for (int i = 0; i < sh.o.concurrency; i++) {
        PQfinish(ws[i].c[0]);
        if (ws[i].c[1])
            PQfinish(ws[i].c[1]);
        lat_release(&ws[i].lat);
    }
    free(ws);
    free(th);
    return 0;
}
