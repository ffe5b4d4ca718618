/*
 * dtxctl - the operator's tool: see what is in doubt and resolve it.
 *
 *   dtxctl [--coordinator URL] [--token T] [--json] COMMAND ...
 *
 * Every command but `log` talks to the coordinator's admin API (admin.c),
 * which asks the participants itself, so an operator needs one URL and
 * one token. `log dump|verify` reads a decision log offline, with the
 * coordinator's own reader (drec.c, dlog_reader.c), and never writes to it.
 *
 * Exit status: 0 success; 1 the command worked and reports a problem (a
 * shard unreachable, branches in doubt, a refusal, corruption); 2 usage.
 * With --json the answer is printed as JSON for scripts, otherwise as text
 * for people.
 */
#include "dtx/dlog.h"
#include "dtx/jsonx.h"
#include "dtx/xalloc.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_PROBLEM 1
#define EXIT_USAGE   2

static const char usage_text[] =
    "usage: dtxctl [--coordinator URL] [--token T] [--json] COMMAND ...\n"
    "\n"
    "commands:\n"
    "  status                          coordinator, decision log and every shard\n"
    "  list [--status S] [--older-than DURATION]\n"
    "                                  transactions the coordinator holds\n"
    "  show GTID                       one transaction: every shard's branch, the decision\n"
    "  in-doubt                        every prepared dtx branch on every shard, with its\n"
    "                                  age, locks and the coordinator's decision\n"
    "  recover                         finish every decided transaction and every orphan now\n"
    "  resolve GTID --commit|--abort [--shard NAME] --reason TEXT [--operator NAME]\n"
    "                                  an operator's (heuristic) decision, logged durably\n"
    "  forget GTID --shard NAME --reason TEXT [--operator NAME]\n"
    "                                  stop waiting for a shard that will never come back\n"
    "  log dump|verify --log-dir DIR   read a decision log offline\n"
    "\n"
    "--coordinator defaults to $DTX_COORDINATOR or http://127.0.0.1:7000, --token to\n"
    "$DTX_TOKEN (the admin token). DURATION: 90s, 15m, 2h, 1d (a bare number is seconds).\n"
    "Exit status: 0 ok, 1 a problem was found and reported, 2 usage error.\n";

struct opts {
    const char *url;
    const char *token;
    bool json;
};

static int usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage(const char *fmt, ...)
{
    va_list ap;

    if (fmt) {
        fputs("dtxctl: ", stderr);
        va_start(ap, fmt);
        vfprintf(stderr, fmt, ap);
        va_end(ap);
        fputs(" (see dtxctl --help)\n", stderr);
        return EXIT_USAGE;
    }
    fputs(usage_text, stderr);
    return EXIT_USAGE;
}

/* ---- talking to the coordinator ------------------------------------------------ */

struct reply {
    long status; /* 0: no answer */
    char *body;
    size_t len;
    cJSON *json;
    char error[CURL_ERROR_SIZE + 64];
};

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
    struct reply *r = arg;
    char *b = realloc(r->body, r->len + size * n + 1);

    if (!b)
        return 0;
    memcpy(b + r->len, p, size * n);
    r->len += size * n;
    b[r->len] = '\0';
    r->body = b;
    return size * n;
}

/* One request; body NULL for GET. Fills r; returns 0 when an HTTP answer came. */
static int call(const struct opts *o, const char *method, const char *path, const char *body,
                long timeout_s, struct reply *r)
{
    CURL *c = curl_easy_init();
    struct curl_slist *h = NULL;
    char url[2048], auth[600], cerr[CURL_ERROR_SIZE] = "";
    CURLcode rc;

    memset(r, 0, sizeof(*r));
    if (!c) {
        snprintf(r->error, sizeof(r->error), "could not start libcurl");
        return -1;
    }
    snprintf(url, sizeof(url), "%s%s", o->url, path);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (o->token && *o->token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", o->token);
        h = curl_slist_append(h, auth);
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 5L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, timeout_s);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        r->json = r->body ? cJSON_Parse(r->body) : NULL;
    } else {
        snprintf(r->error, sizeof(r->error), "cannot reach the coordinator at %s: %s", o->url,
                 *cerr ? cerr : curl_easy_strerror(rc));
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

static void reply_free(struct reply *r)
{
    cJSON_Delete(r->json);
    free(r->body);
}

/* The contract's error message of an answer, or a description of what came instead. */
static const char *reply_error(struct reply *r)
{
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(e, "message");

    if (r->status == 0)
        return r->error;
    if (cJSON_IsString(m))
        snprintf(r->error, sizeof(r->error), "HTTP %ld: %s", r->status, m->valuestring);
    else
        snprintf(r->error, sizeof(r->error), "HTTP %ld: %.200s", r->status, r->body ? r->body : "");
    return r->error;
}

/* GET or POST that must answer 2xx with JSON; prints why not and returns NULL otherwise. */
static cJSON *must(const struct opts *o, const char *method, const char *path, const char *body,
                   struct reply *r)
{
    if (call(o, method, path, body, 60, r) == 0 && r->status / 100 == 2 && r->json)
        return r->json;
    if (o->json && r->json)
        printf("%s\n", r->body);
    fprintf(stderr, "dtxctl: %s\n", reply_error(r));
    return NULL;
}

static void print_json(const cJSON *j)
{
    char *s = cJSON_Print(j);

    printf("%s\n", s ? s : "null");
    free(s);
}

/* ---- small readers of JSON answers ----------------------------------------------- */

static const char *str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsString(v) ? v->valuestring : "";
}

static double num(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

static bool flag(const cJSON *o, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key));
}

static const cJSON *arr(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

/* "1h02m", "3.2s", "140ms" */
static const char *age(double ms, char *buf, size_t n)
{
    if (ms < 1000)
        snprintf(buf, n, "%.0fms", ms);
    else if (ms < 60000)
        snprintf(buf, n, "%ld.%lds", (long)ms / 1000, (long)ms / 100 % 10);
    else if (ms < 3600000)
        snprintf(buf, n, "%ldm%02lds", (long)ms / 60000, (long)ms / 1000 % 60);
    else
        snprintf(buf, n, "%ldh%02ldm", (long)ms / 3600000, (long)ms / 60000 % 60);
    return buf;
}

static void print_locks(const cJSON *locks)
{
    const cJSON *l;
    bool first = true;

    cJSON_ArrayForEach(l, locks)
    {
        printf("%s%s %s", first ? "" : ", ",
               *str(l, "relation") ? str(l, "relation") : str(l, "locktype"), str(l, "mode"));
        first = false;
    }
    if (first)
        printf("-");
}

static void print_operator_notes(const cJSON *notes, const char *indent)
{
    const cJSON *n;

    cJSON_ArrayForEach(n, notes)
    {
        printf("%sHEURISTIC %s %s%s%s by %s at %s: %s\n", indent, str(n, "action"),
               str(n, "decision"), *str(n, "shard") ? " on shard " : "", str(n, "shard"),
               str(n, "operator"), str(n, "at"), str(n, "reason"));
    }
}

/* ---- commands --------------------------------------------------------------------- */

static int cmd_status(const struct opts *o)
{
    struct reply r;
    const cJSON *root = must(o, "GET", "/v1/admin/status", NULL, &r), *co, *s, *t;
    int rc = 0;
    char a[32];

    if (!root)
        return EXIT_PROBLEM;
    co = cJSON_GetObjectItemCaseSensitive(root, "coordinator");
    rc = strcmp(str(co, "status"), "ok") != 0 ? EXIT_PROBLEM : 0;
    cJSON_ArrayForEach(s, arr(root, "shards")) rc |= flag(s, "reachable") ? 0 : EXIT_PROBLEM;
    if (o->json) {
        print_json(root);
        reply_free(&r);
        return rc;
    }
    printf("coordinator %s (epoch %.0f) at %s: %s\n", str(co, "node_id"), num(co, "epoch"), o->url,
           str(co, "status"));
    if (cJSON_HasObjectItem(co, "error"))
        printf("  %s\n", str(cJSON_GetObjectItemCaseSensitive(co, "error"), "message"));
    t = cJSON_GetObjectItemCaseSensitive(co, "log");
    printf("  decision log %s: %.0f bytes used (%.0f on disk with preallocation) in %.0f "
           "segment(s), last checkpoint %s\n",
           str(t, "dir"), num(t, "bytes_used"), num(t, "bytes_on_disk"), num(t, "segments"),
           *str(t, "last_checkpoint_at") ? str(t, "last_checkpoint_at") : "none");
    printf("  transactions:");
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(co, "transactions"))
    {
        printf(" %s %.0f", t->string, t->valuedouble);
    }
    printf("\n\n%-12s %-10s %-9s %-8s %-10s %-8s %s\n", "SHARD", "REACHABLE", "LINK", "PREPARED",
           "OLDEST", "HEADROOM", "MAX_PREPARED");
    cJSON_ArrayForEach(s, arr(root, "shards"))
    {
        if (!flag(s, "reachable")) {
            printf("%-12s %-10s %-9s %s\n", str(s, "name"), "no", str(s, "link"), str(s, "error"));
            continue;
        }
        printf("%-12s %-10s %-9s %-8.0f %-10s %-8.0f %.0f\n", str(s, "name"), "yes", str(s, "link"),
               num(s, "prepared"),
               num(s, "prepared") ? age(num(s, "oldest_prepared_age_ms"), a, sizeof(a)) : "-",
               num(s, "headroom"), num(s, "max_prepared_transactions"));
    }
    printf("\nin doubt: %.0f prepared branch(es), %.0f orphan(s)\n", num(root, "in_doubt"),
           num(root, "orphans"));
    reply_free(&r);
    return rc;
}

static void print_tx_line(const cJSON *t)
{
    const cJSON *s;

    printf("%-22s %-11s %-28s", str(t, "gtid"), str(t, "status"),
           *str(t, "decided_at") ? str(t, "decided_at") : str(t, "created_at"));
    cJSON_ArrayForEach(s, arr(t, "shards")) printf(" %s:%s", str(s, "name"), str(s, "state"));
    printf("%s\n", flag(t, "heuristic") ? "  HEURISTIC" : "");
}

/* "90s", "15m", "2h", "1d", "500ms", "30" (seconds) -> milliseconds; -1 when malformed. */
static long long parse_duration(const char *s)
{
    char *end = NULL;
    double v = strtod(s, &end);

    if (!*s || end == s || v < 0)
        return -1;
    if (!*end || strcmp(end, "s") == 0)
        return (long long)(v * 1000);
    if (strcmp(end, "ms") == 0)
        return (long long)v;
    if (strcmp(end, "m") == 0)
        return (long long)(v * 60000);
    if (strcmp(end, "h") == 0)
        return (long long)(v * 3600000);
    if (strcmp(end, "d") == 0)
        return (long long)(v * 86400000);
    return -1;
}

static int cmd_list(const struct opts *o, int argc, char **argv)
{
    static const struct option lo[] = {{"status", required_argument, NULL, 's'},
                                       {"older-than", required_argument, NULL, 'o'},
                                       {NULL, 0, NULL, 0}};
    const char *status = NULL;
    long long older = -1;
    char path[512];
    struct reply r;
    const cJSON *root, *t;
    int c;

    optind = 0; /* a fresh scan, options and arguments in any order */
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        if (c == 's')
            status = optarg;
        else if (c == 'o' && (older = parse_duration(optarg)) < 0)
            return usage("--older-than: '%s' is not a duration (90s, 15m, 2h, 1d)", optarg);
        else if (c != 'o')
            return usage(NULL);
    }
    if (optind < argc)
        return usage("list: unexpected argument '%s'", argv[optind]);
    snprintf(path, sizeof(path), " %s ", status ? status : "");
    if (status && !strstr(" active preparing precommitted committing committed aborting aborted "
                          "unknown ",
                          path))
        return usage("--status: '%s' is not a status (active, preparing, committing, committed, "
                     "aborting, aborted, unknown)",
                     status);
    snprintf(path, sizeof(path), "/v1/transactions?%s%s%s", status ? "status=" : "",
             status ? status : "", status && older >= 0 ? "&" : "");
    if (older >= 0)
        snprintf(path + strlen(path), sizeof(path) - strlen(path), "older_than_ms=%lld", older);
    if (!(root = must(o, "GET", path, NULL, &r)))
        return EXIT_PROBLEM;
    if (o->json) {
        print_json(root);
    } else {
        printf("%-22s %-11s %-28s %s\n", "GTID", "STATUS", "DECIDED (or created)", "SHARDS");
        cJSON_ArrayForEach(t, arr(root, "transactions")) print_tx_line(t);
        printf("%d transaction(s)\n", cJSON_GetArraySize(arr(root, "transactions")));
    }
    reply_free(&r);
    return 0;
}

static int cmd_show(const struct opts *o, int argc, char **argv)
{
    char path[512];
    struct reply r;
    const cJSON *t, *s, *e;

    if (argc != 2)
        return usage("show needs one GTID");
    snprintf(path, sizeof(path), "/v1/transactions/%s", argv[1]);
    if (!(t = must(o, "GET", path, NULL, &r)))
        return EXIT_PROBLEM;
    if (o->json) {
        print_json(t);
        reply_free(&r);
        return 0;
    }
    printf("transaction %s: %s%s\n", str(t, "gtid"), str(t, "status"),
           flag(t, "heuristic") ? " (HEURISTIC: an operator decided)" : "");
    if (*str(t, "protocol"))
        printf("  protocol %s%s\n", str(t, "protocol"), flag(t, "one_phase") ? ", one phase" : "");
    if (*str(t, "created_at"))
        printf("  created %s\n", str(t, "created_at"));
    if (*str(t, "decided_at"))
        printf("  decided %s\n", str(t, "decided_at"));
    if (*str(t, "idempotency_key"))
        printf("  idempotency key %s\n", str(t, "idempotency_key"));
    if ((e = cJSON_GetObjectItemCaseSensitive(t, "error")))
        printf("  error %s: %s\n", str(e, "code"), str(e, "message"));
    cJSON_ArrayForEach(s, arr(t, "shards"))
    {
        printf("  shard %-10s %-10s", str(s, "name"), str(s, "state"));
        if (*str(s, "xid"))
            printf(" xid %s", str(s, "xid"));
        if (num(s, "phase2_sends"))
            printf(" phase-2 sends %.0f", num(s, "phase2_sends"));
        if (flag(s, "forgotten"))
            printf(" FORGOTTEN");
        printf("\n");
        if (*str(s, "last_error"))
            printf("      last error: %s\n", str(s, "last_error"));
    }
    print_operator_notes(arr(t, "operator"), "  ");
    reply_free(&r);
    return 0;
}

static int cmd_in_doubt(const struct opts *o)
{
    struct reply r;
    const cJSON *root = must(o, "GET", "/v1/admin/in-doubt", NULL, &r), *b, *s;
    int rc = 0;
    char a[32];

    if (!root)
        return EXIT_PROBLEM;
    rc = cJSON_GetArraySize(arr(root, "branches")) ? EXIT_PROBLEM : 0;
    cJSON_ArrayForEach(s, arr(root, "shards")) rc |= flag(s, "reachable") ? 0 : EXIT_PROBLEM;
    if (o->json) {
        print_json(root);
        reply_free(&r);
        return rc;
    }
    printf("%-8s %-28s %-9s %-10s %-9s %s\n", "SHARD", "GID", "AGE", "DECISION", "", "LOCKS");
    cJSON_ArrayForEach(b, arr(root, "branches"))
    {
        printf("%-8s %-28s %-9s %-10s %-9s ", str(b, "shard"), str(b, "gid"),
               age(num(b, "age_ms"), a, sizeof(a)), str(b, "decision"),
               flag(b, "orphan")                    ? "ORPHAN"
               : cJSON_HasObjectItem(b, "operator") ? "HEURISTIC"
                                                    : "");
        print_locks(arr(b, "locks"));
        printf("\n");
    }
    cJSON_ArrayForEach(s, arr(root, "shards"))
    {
        if (!flag(s, "reachable"))
            printf("shard %s is unreachable, its branches are not listed: %s\n", str(s, "name"),
                   str(s, "error"));
    }
    printf("%d prepared branch(es) in doubt, %.0f orphan(s)\n",
           cJSON_GetArraySize(arr(root, "branches")), num(root, "orphans"));
    reply_free(&r);
    return rc;
}

/* How recover's branches ended. */
struct tally {
    size_t done, skipped, failed;
};

/* Asks the coordinator to finish branch b now; writes what happened into result. */
static void recover_one(const struct opts *o, const cJSON *b, char *result, size_t n,
                        struct tally *t)
{
    struct reply one;
    cJSON *req;
    char *body;
    const cJSON *sh;
    const char *res;

    snprintf(result, n, "skipped: still being decided");
    if (strcmp(str(b, "decision"), "in_flight") == 0) {
        t->skipped++;
        return;
    }
    req = jsonx_new_object();
    jsonx_add_str(req, "gtid", str(b, "gtid"));
    jsonx_add_str(req, "shard", str(b, "shard"));
    body = jsonx_print(req);
    cJSON_Delete(req);
    call(o, "POST", "/v1/admin/recover", body, 60, &one);
    free(body);
    sh = cJSON_GetArrayItem(arr(one.json, "shards"), 0);
    res = str(sh, "result");
    if (one.status == 409) {
        t->skipped++;
    } else if (one.status == 200 && strcmp(res, "in_progress") == 0) {
        snprintf(result, n, "skipped: its participant is finishing it");
        t->skipped++;
    } else if (one.status == 200) {
        snprintf(result, n, "%s",
                 strcmp(res, "committed") == 0     ? "committed"
                 : strcmp(res, "rolled_back") == 0 ? "rolled back"
                                                   : "already finished");
        t->done++;
    } else if (strcmp(res, "mismatch") == 0) {
        snprintf(result, n, "MISMATCH: the database says the branch was %s, against the decision",
                 str(sh, "outcome"));
        t->failed++;
    } else {
        snprintf(result, n, "failed: %s", reply_error(&one));
        t->failed++;
    }
    reply_free(&one);
}

static void print_recover_summary(const struct opts *o, cJSON *items, const struct tally *t)
{
    cJSON *sum;

    if (!o->json) {
        printf("recover: %zu finished, %zu left alone (still being decided or finished), %zu "
               "failed\n",
               t->done, t->skipped, t->failed);
        cJSON_Delete(items);
        return;
    }
    sum = jsonx_new_object();
    jsonx_add(sum, "branches", items);
    jsonx_add_num(sum, "finished", (double)t->done);
    jsonx_add_num(sum, "skipped", (double)t->skipped);
    jsonx_add_num(sum, "failed", (double)t->failed);
    print_json(sum);
    cJSON_Delete(sum);
}

static int cmd_recover(const struct opts *o)
{
    struct reply r, k;
    const cJSON *root, *b, *s;
    struct tally t = {0, 0, 0};
    size_t total, i = 0;
    cJSON *items;
    char result[700];

    if (!must(o, "POST", "/v1/admin/recover", "{}", &k))
        return EXIT_PROBLEM;
    if (!o->json)
        printf("phase 2 resent now for %.0f decided transaction(s)\n", num(k.json, "kicked"));
    reply_free(&k);
    if (!(root = must(o, "GET", "/v1/admin/in-doubt", NULL, &r)))
        return EXIT_PROBLEM;
    items = jsonx_new_array();
    total = (size_t)cJSON_GetArraySize(arr(root, "branches"));
    cJSON_ArrayForEach(b, arr(root, "branches"))
    {
        cJSON *item = jsonx_new_object();

        recover_one(o, b, result, sizeof(result), &t);
        jsonx_add_str(item, "gid", str(b, "gid"));
        jsonx_add_str(item, "shard", str(b, "shard"));
        jsonx_add_str(item, "result", result);
        jsonx_append(items, item);
        if (!o->json)
            printf("[%zu/%zu] %-28s %-8s %s%s\n", ++i, total, str(b, "gid"), str(b, "shard"),
                   result, flag(b, "orphan") ? " (orphan)" : "");
        fflush(stdout);
    }
    cJSON_ArrayForEach(s, arr(root, "shards"))
    {
        if (flag(s, "reachable"))
            continue;
        t.failed++;
        if (!o->json)
            printf("shard %s is unreachable: its branches wait until it is back: %s\n",
                   str(s, "name"), str(s, "error"));
    }
    print_recover_summary(o, items, &t);
    reply_free(&r);
    return t.failed ? EXIT_PROBLEM : 0;
}

/* The operator's name for the log: --operator, else user@host. */
static void default_operator(char *out, size_t n)
{
    const char *u = getenv("SUDO_USER") ? getenv("SUDO_USER") : getenv("USER");
    char host[128] = "";

    gethostname(host, sizeof(host) - 1);
    snprintf(out, n, "%s@%s", u ? u : "unknown", *host ? host : "unknown");
}

static int post_operator(const struct opts *o, const char *gtid, const char *action, cJSON *req)
{
    char path[512], *body = jsonx_print(req);
    struct reply r;
    const cJSON *root, *s;

    snprintf(path, sizeof(path), "/v1/admin/transactions/%s/%s", gtid, action);
    root = must(o, "POST", path, body, &r);
    free(body);
    cJSON_Delete(req);
    if (!root)
        return EXIT_PROBLEM;
    if (o->json) {
        print_json(root);
    } else if (strcmp(action, "resolve") == 0) {
        printf("%s: %s recorded in the decision log%s\n", gtid, str(root, "decision"),
               flag(root, "heuristic") ? " as a HEURISTIC decision" : " (as already recorded)");
        cJSON_ArrayForEach(s, arr(root, "shards"))
        {
            printf("  shard %-10s %s%s%s\n", str(s, "shard"), str(s, "result"),
                   *str(s, "error") ? ": " : "", str(s, "error"));
        }
    } else {
        printf("%s: shard forgotten (recorded in the decision log); the transaction is %s\n", gtid,
               *str(root, "status") ? str(root, "status") : "finished");
    }
    reply_free(&r);
    return 0;
}

static int cmd_resolve(const struct opts *o, int argc, char **argv, bool forget)
{
    static const struct option lo[] = {
        {"commit", no_argument, NULL, 'c'},         {"abort", no_argument, NULL, 'a'},
        {"shard", required_argument, NULL, 's'},    {"reason", required_argument, NULL, 'r'},
        {"operator", required_argument, NULL, 'o'}, {NULL, 0, NULL, 0}};
    const char *shard = NULL, *reason = NULL, *decision = NULL, *gtid;
    char who[300];
    cJSON *req;
    int c;

    default_operator(who, sizeof(who));
    optind = 0; /* a fresh scan, options and arguments in any order */
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
        case 'a':
            if (decision || forget)
                return usage("%s", forget ? "forget takes no --commit or --abort"
                                          : "give one of --commit and --abort");
            decision = c == 'c' ? "commit" : "abort";
            break;
        case 's':
            shard = optarg;
            break;
        case 'r':
            reason = optarg;
            break;
        case 'o':
            snprintf(who, sizeof(who), "%s", optarg);
            break;
        default:
            return usage(NULL);
        }
    }
    if (optind != argc - 1)
        return usage("%s needs one GTID", argv[0]);
    gtid = argv[optind];
    if (!forget && !decision)
        return usage("resolve needs --commit or --abort");
    if (forget && !shard)
        return usage("forget needs --shard NAME");
    if (!reason || !*reason)
        return usage("%s needs --reason TEXT (it is kept in the decision log)", argv[0]);
    req = jsonx_new_object();
    if (decision)
        jsonx_add_str(req, "decision", decision);
    if (shard)
        jsonx_add_str(req, "shard", shard);
    jsonx_add_str(req, "reason", reason);
    jsonx_add_str(req, "operator", who);
    return post_operator(o, gtid, forget ? "forget" : "resolve", req);
}

/* ---- offline: the decision log --------------------------------------------------- */

struct dump {
    bool json;
    bool print;
    cJSON *records;
};

static void print_record(const struct drec *rec)
{
    char at[40] = "-";

    if (rec->wall_us)
        jsonx_fmt_time(rec->wall_us, at, sizeof(at));
    printf("%-9s", drec_type_name(rec->type));
    switch (rec->type) {
    case DREC_BOOT:
        printf(" node %s epoch %" PRIu64 " at %s\n", rec->node_id, rec->epoch, at);
        break;
    case DREC_COMMIT:
        printf(" %s at %s %s", rec->gtid, at, rec->protocol == 3 ? "3pc" : "2pc");
        for (size_t i = 0; i < rec->nbranches; i++)
            printf(" %s:%" PRIu64, rec->branches[i].shard, rec->branches[i].xid);
        if (rec->idem_key && *rec->idem_key)
            printf(" key %s", rec->idem_key);
        printf("\n");
        break;
    case DREC_END:
        printf(" %s at %s\n", rec->gtid, at);
        break;
    case DREC_OPERATOR:
        printf(" %s at %s %s %s%s%s by %s: %s\n", rec->gtid, at,
               rec->op_kind == DREC_OP_FORGET ? "forget" : "resolve",
               rec->op_commit ? "commit" : "abort", rec->shard && *rec->shard ? " shard " : "",
               rec->shard ? rec->shard : "", rec->who, rec->reason);
        break;
    }
}

static cJSON *branches_json(const struct drec *rec)
{
    cJSON *br = jsonx_new_array();
    char xid[24];

    for (size_t i = 0; i < rec->nbranches; i++) {
        cJSON *b = jsonx_new_object();

        jsonx_add_str(b, "shard", rec->branches[i].shard);
        snprintf(xid, sizeof(xid), "%" PRIu64, rec->branches[i].xid);
        jsonx_add_str(b, "xid", xid);
        jsonx_append(br, b);
    }
    return br;
}

static cJSON *record_json(const struct drec *rec)
{
    cJSON *o = jsonx_new_object();

    jsonx_add_str(o, "type", drec_type_name(rec->type));
    jsonx_add_time(o, "at", rec->wall_us);
    if (rec->type == DREC_BOOT) {
        jsonx_add_str(o, "node_id", rec->node_id);
        jsonx_add_num(o, "epoch", (double)rec->epoch);
        return o;
    }
    jsonx_add_str(o, "gtid", rec->gtid);
    if (rec->type == DREC_COMMIT) {
        jsonx_add_str(o, "protocol", rec->protocol == 3 ? "3pc" : "2pc");
        jsonx_add(o, "branches", branches_json(rec));
        if (rec->idem_key && *rec->idem_key)
            jsonx_add_str(o, "idempotency_key", rec->idem_key);
    } else if (rec->type == DREC_OPERATOR) {
        jsonx_add_str(o, "action", rec->op_kind == DREC_OP_FORGET ? "forget" : "resolve");
        jsonx_add_str(o, "decision", rec->op_commit ? "commit" : "abort");
        if (rec->shard && *rec->shard)
            jsonx_add_str(o, "shard", rec->shard);
        jsonx_add_str(o, "operator", rec->who);
        jsonx_add_str(o, "reason", rec->reason);
    }
    return o;
}

static int on_record(void *arg, const struct drec *rec, struct dtx_err *err)
{
    struct dump *d = arg;

    (void)err;
    if (d->print && d->json)
        jsonx_append(d->records, record_json(rec));
    else if (d->print)
        print_record(rec);
    return 0;
}

static int cmd_log(const struct opts *o, int argc, char **argv)
{
    static const struct option lo[] = {{"log-dir", required_argument, NULL, 'd'},
                                       {NULL, 0, NULL, 0}};
    const char *dir = NULL;
    struct dump d = {o->json, false, NULL};
    struct dlog_scan scan;
    struct dtx_err err;
    bool dump;
    cJSON *root;
    int c, rc;

    if (argc < 2 || (strcmp(argv[1], "dump") != 0 && strcmp(argv[1], "verify") != 0))
        return usage("log needs 'dump' or 'verify'");
    dump = strcmp(argv[1], "dump") == 0;
    optind = 0; /* a fresh scan, options and arguments in any order */
    while ((c = getopt_long(argc - 1, argv + 1, "", lo, NULL)) != -1) {
        if (c != 'd')
            return usage(NULL);
        dir = optarg;
    }
    if (!dir || optind < argc - 1)
        return usage("log %s needs --log-dir DIR and nothing else", argv[1]);
    if (access(dir, R_OK | X_OK) != 0) {
        fprintf(stderr, "dtxctl: cannot read the log directory '%s'\n", dir);
        return EXIT_PROBLEM;
    }
    d.print = dump;
    d.records = jsonx_new_array();
    memset(&scan, 0, sizeof(scan));
    dtx_err_clear(&err);
    rc = dlog_read(dir, on_record, &d, &scan, &err);
    if (o->json) {
        root = jsonx_new_object();
        jsonx_add_bool(root, "ok", rc == 0);
        if (rc < 0)
            jsonx_add(root, "error", jsonx_error_obj(&err));
        jsonx_add_num(root, "records", (double)scan.records);
        jsonx_add_num(root, "segments", (double)scan.segments);
        jsonx_add_num(root, "bytes", (double)scan.bytes);
        jsonx_add_bool(root, "torn_tail", scan.torn && !scan.torn_zero);
        jsonx_add_bool(root, "preallocated_tail", scan.torn && scan.torn_zero);
        if (scan.torn)
            jsonx_add_num(root, "tail_offset", (double)scan.torn_offset);
        if (dump)
            jsonx_add(root, "entries", d.records);
        else
            cJSON_Delete(d.records);
        print_json(root);
        cJSON_Delete(root);
    } else {
        cJSON_Delete(d.records);
        if (rc < 0)
            printf("CORRUPT: %s\n", err.msg);
        else
            printf("%s: %" PRIu64 " records in %" PRIu64 " segment(s), %" PRIu64 " bytes: ok%s\n",
                   dir, scan.records, scan.segments, scan.bytes,
                   !scan.torn       ? ""
                   : scan.torn_zero ? " (then preallocated zeros: the end of the log)"
                                    : " (then a torn last write, which the coordinator cuts off "
                                      "at start)");
    }
    return rc < 0 ? EXIT_PROBLEM : 0;
}

int main(int argc, char **argv)
{
    static const struct option lo[] = {{"coordinator", required_argument, NULL, 'c'},
                                       {"token", required_argument, NULL, 't'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {NULL, 0, NULL, 0}};
    struct opts o = {getenv("DTX_COORDINATOR"), getenv("DTX_TOKEN"), false};
    const char *cmd;
    int c, rc;

    xalloc_init();
    if (!o.url || !*o.url)
        o.url = "http://127.0.0.1:7000";
    while ((c = getopt_long(argc, argv, "+h", lo, NULL)) != -1) {
        switch (c) {
        case 'c':
            o.url = optarg;
            break;
        case 't':
            o.token = optarg;
            break;
        case 'j':
            o.json = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            return 0;
        default:
            return usage(NULL);
        }
    }
    if (optind >= argc)
        return usage("no command given");
    cmd = argv[optind];
    argc -= optind;
    argv += optind;
    if (strcmp(cmd, "log") == 0)
        return cmd_log(&o, argc, argv);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (strcmp(cmd, "status") == 0 && argc == 1)
        rc = cmd_status(&o);
    else if (strcmp(cmd, "list") == 0)
        rc = cmd_list(&o, argc, argv);
    else if (strcmp(cmd, "show") == 0)
        rc = cmd_show(&o, argc, argv);
    else if (strcmp(cmd, "in-doubt") == 0 && argc == 1)
        rc = cmd_in_doubt(&o);
    else if (strcmp(cmd, "recover") == 0 && argc == 1)
        rc = cmd_recover(&o);
    else if (strcmp(cmd, "resolve") == 0)
        rc = cmd_resolve(&o, argc, argv, false);
    else if (strcmp(cmd, "forget") == 0)
        rc = cmd_resolve(&o, argc, argv, true);
    else
        rc = usage("unknown command or arguments: '%s'", cmd);
    curl_global_cleanup();
    return rc;
}
