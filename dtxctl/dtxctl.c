/*
 * dtxctl - the operator's tool: see what is in doubt and resolve it.
 *
 *   dtxctl [--coordinator [NODE=]URL[,...]]... [--token T | --token-file F] [--ca-file F]
 *          [--crl-file F]
 *          [--json] COMMAND ...
 *
 * Every command but `log` talks to the coordinator's admin API (admin.c),
 * which asks the participants itself, so an operator needs one URL and
 * one token. `log dump|verify` reads a decision log offline, with the
 * coordinator's own reader (drec.c, dlog_reader.c), and never writes to it.
 *
 * Given several coordinators (several nodes, each maybe with standbys),
 * dtxctl shows the whole cluster: see "several coordinators" below. With
 * one, every command and every answer is exactly as with one coordinator.
 *
 * Exit status: 0 success; 1 the command worked and reports a problem (a
 * shard unreachable, branches in doubt, a refusal, corruption); 2 usage.
 * With --json the answer is printed as JSON for scripts, otherwise as text
 * for people.
 */
#include "dtx/auth.h"
#include "dtx/ballot.h"
#include "dtx/dlog.h"
#include "dtx/gid.h"
#include "dtx/idemkey.h"
#include "dtx/jsonx.h"
#include "dtx/status.h"
#include "dtx/version.h"
#include "dtx/xalloc.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_PROBLEM 1
#define EXIT_USAGE   2
#define MAX_COORDS   32

static const char usage_text[] =
    "usage: dtxctl [OPTIONS] COMMAND [ARGS] [OPTIONS]   (options may stand anywhere)\n"
    "\n"
    "commands:\n"
    "  status                          coordinator, decision log and every shard\n"
    "  list [--status S] [--older-than DURATION]\n"
    "                                  transactions the coordinator holds\n"
    "  show GTID                       one transaction: every shard's branch, the decision\n"
    "  in-doubt [--participant URL]... every prepared dtx branch on every shard, with its\n"
    "                                  age, locks and the coordinator's decision; with\n"
    "                                  --participant, asks those agents directly (the\n"
    "                                  coordinator may be down; the peer token from\n"
    "                                  --peer-token, --peer-token-file or $DTX_PEER_TOKEN)\n"
    "  recover [--malformed] [--operator NAME]\n"
    "                                  finish every branch the coordinator has a decision for;\n"
    "                                  branches it cannot decide (another coordinator's, of an\n"
    "                                  epoch its log lost) are listed and left alone;\n"
    "                                  --malformed also rolls back dtx: branches with no gtid\n"
    "  resolve GTID --commit|--abort [--shard NAME] --reason TEXT [--operator NAME]\n"
    "                                  an operator's (heuristic) decision, logged durably\n"
    "  forget GTID --shard NAME --reason TEXT [--operator NAME]\n"
    "                                  stop waiting for a shard that will never come back\n"
    "  log dump|verify --log-dir DIR   read a decision log offline\n"
    "\n"
    "options: --coordinator URL (default $DTX_COORDINATOR or http://127.0.0.1:7000),\n"
    "  repeated or comma-separated for several coordinators (each URL may be written\n"
    "  NODE=URL, naming its node for when it does not answer): status, list, in-doubt and\n"
    "  recover then ask an active process of every node and merge the answers, with the\n"
    "  owning node beside each transaction; show, resolve and forget go to an active\n"
    "  process of the node that issued the GTID (its prefix). A coordinator that is down\n"
    "  is reported (exit 1), not fatal, unless none answers.\n"
    "  --token T or --token-file FILE (the admin token; default $DTX_TOKEN, then\n"
    "  $DTX_ADMIN_TOKEN; a file keeps it out of ps), --json, --help, --version.\n"
    "https:// URLs: the server's certificate is verified against --ca-file FILE (default\n"
    "  $DTX_CA_FILE, else the system's CAs) and must name the URL's host, and is refused\n"
    "  when a CRL in --crl-file FILE (default $DTX_CRL_FILE; PEM, of those CAs) revokes it;\n"
    "  --cert-file and --key-file (default $DTX_CERT_FILE, $DTX_KEY_FILE) show a client\n"
    "  certificate to a participant that requires one.\n"
    "--operator defaults to the OS user at this host. DURATION: 90s, 15m, 2h, 1d (a bare\n"
    "number is seconds). Exit status: 0 ok, 1 a problem was found and reported, 2 usage error.\n";

/*
 * The coordinator processes to ask: every --coordinator, else the
 * comma-separated $DTX_COORDINATOR, else the default. Each may say which
 * node it is ("c2=http://..."), for when it does not answer.
 */
struct targets {
    size_t n;
    const char *url[MAX_COORDS];
    const char *label[MAX_COORDS]; /* the NODE= given before the URL; "" for none */
    char text[8192];               /* the strings above */
    size_t used;
};

#define MAX_ARGS 16 /* a command and its arguments: "resolve GTID" is the longest */

/* Every option, wherever it stands on the command line (before or after the command). */
struct opts {
    const char *url;         /* the (first) coordinator */
    struct targets *targets; /* every coordinator given */
    const char *token;
    const char *peer_token;      /* in-doubt --participant: the participants' token */
    const char *token_file;      /* --token-file */
    const char *peer_token_file; /* --peer-token-file */
    const char *ca_file;         /* --ca-file: https:// servers are verified against it */
    const char *crl_file;        /* --crl-file: ... and refused when its CRLs revoke them */
    const char *cert_file;       /* --cert-file, --key-file: a client certificate */
    const char *key_file;
    struct auth_token from_file; /* what the files held */
    struct auth_token peer_from_file;
    bool json;
    unsigned given;        /* OPT_* bits of the options the command line holds */
    const char *status;    /* list */
    long long older_ms;    /* list: -1 for none */
    const char *decision;  /* resolve: "commit" or "abort" */
    const char *shard;     /* resolve, forget */
    const char *reason;    /* resolve, forget */
    char who[300];         /* resolve, forget: --operator, or the OS user at the host */
    const char *log_dir;   /* log */
    bool malformed;        /* recover */
    const char *parts[32]; /* in-doubt: --participant URLs, asked directly */
    size_t nparts;
    char *args[MAX_ARGS]; /* the command and its arguments, wherever they stood among options */
    int nargs;
};

/* The options each command takes, beyond the global ones. */
enum {
    OPT_STATUS = 1u << 0,
    OPT_OLDER = 1u << 1,
    OPT_DECISION = 1u << 2,
    OPT_SHARD = 1u << 3,
    OPT_REASON = 1u << 4,
    OPT_OPERATOR = 1u << 5,
    OPT_LOG_DIR = 1u << 6,
    OPT_MALFORMED = 1u << 7,
    OPT_PARTICIPANT = 1u << 8,
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

/* True when base is one of the coordinators given (not a participant's URL). */
static bool is_coordinator(const struct opts *o, const char *base)
{
    for (size_t i = 0; i < o->targets->n; i++) {
        if (base == o->targets->url[i])
            return true;
    }
    return base == o->url;
}

/* The length of base without the slashes it may end with (after its "scheme://"). */
static int base_len(const char *base)
{
    const char *host = strstr(base, "://");
    size_t n = strlen(base), min = host ? (size_t)(host - base) + 3 : 0;

    while (n > min && base[n - 1] == '/')
        n--;
    return (int)n;
}

/* One request to base (a coordinator's or participant's URL); body NULL for GET. */
static int call_at(const struct opts *o, const char *base, const char *token, const char *method,
                   const char *path, const char *body, long timeout_s, struct reply *r)
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
    /* "http://h:7000/" names the server "http://h:7000" does: no "//v1/..." (a 404) */
    snprintf(url, sizeof(url), "%.*s%s", base_len(base), base, path);
    h = curl_slist_append(h, "Content-Type: application/json");
    if (token && *token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
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
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    /* verification stays on (libcurl's default): the chain and the URL's host */
    if (o->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, o->ca_file);
    if (o->crl_file)
        curl_easy_setopt(c, CURLOPT_CRLFILE, o->crl_file);
    if (o->cert_file)
        curl_easy_setopt(c, CURLOPT_SSLCERT, o->cert_file);
    if (o->key_file)
        curl_easy_setopt(c, CURLOPT_SSLKEY, o->key_file);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    }
    rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        r->json = r->body ? cJSON_Parse(r->body) : NULL;
    } else {
        snprintf(r->error, sizeof(r->error), "cannot reach %s %s: %s",
                 is_coordinator(o, base) ? "the coordinator at" : "the participant at", base,
                 *cerr ? cerr : curl_easy_strerror(rc));
    }
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    return rc == CURLE_OK ? 0 : -1;
}

/* One request to the coordinator; fills r; returns 0 when an HTTP answer came. */
static int call(const struct opts *o, const char *method, const char *path, const char *body,
                long timeout_s, struct reply *r)
{
    return call_at(o, o->url, o->token, method, path, body, timeout_s, r);
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

/*
 * A three-phase commit branch's own progress, as its participant reports it:
 * waiting for the coordinator, leading a round without it, or blocked (no
 * majority of acceptors answered) and why.
 */
static void print_termination(const cJSON *b)
{
    if (!*str(b, "termination"))
        return;
    printf("\n         3pc: %s", str(b, "termination"));
    if (*str(b, "blocked"))
        printf(": %s", str(b, "blocked"));
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

/*
 * status's table of shards; with seen_by (several coordinators), the nodes
 * whose coordinator reached each shard.
 */
static void print_shard_table(const cJSON *shards, bool seen_by)
{
    const cJSON *s, *n;
    char a[32];

    printf("\n%-12s %-10s %-9s %-8s %-10s %-8s %s\n", "SHARD", "REACHABLE", "LINK", "PREPARED",
           "OLDEST", "HEADROOM", seen_by ? "MAX_PREPARED REACHED BY" : "MAX_PREPARED");
    cJSON_ArrayForEach(s, shards)
    {
        if (!flag(s, "reachable")) {
            printf("%-12s %-10s %-9s %s\n", str(s, "name"), "no", str(s, "link"), str(s, "error"));
            continue;
        }
        printf("%-12s %-10s %-9s %-8.0f %-10s %-8.0f %*.0f", str(s, "name"), "yes", str(s, "link"),
               num(s, "prepared"),
               num(s, "prepared") ? age(num(s, "oldest_prepared_age_ms"), a, sizeof(a)) : "-",
               num(s, "headroom"), seen_by ? -12 : 0, num(s, "max_prepared_transactions"));
        cJSON_ArrayForEach(n, arr(s, "seen_by")) printf(" %s", n->valuestring);
        printf("\n");
    }
}

static void print_heuristic_total(double n)
{
    if (n > 0)
        printf("HEURISTIC: %.0f transaction(s) where a shard did otherwise than decided, or cannot "
               "prove what it did (dtxctl list, then dtxctl show GTID)\n",
               n);
}

static int cmd_status(const struct opts *o)
{
    struct reply r;
    const cJSON *root = must(o, "GET", "/v1/admin/status", NULL, &r), *co, *s, *t;
    int rc = 0;

    if (!root)
        return EXIT_PROBLEM;
    co = cJSON_GetObjectItemCaseSensitive(root, "coordinator");
    rc = strcmp(str(co, "status"), "ok") != 0 || num(root, "heuristic") > 0 ? EXIT_PROBLEM : 0;
    cJSON_ArrayForEach(s, arr(root, "shards")) rc |= flag(s, "reachable") ? 0 : EXIT_PROBLEM;
    rc |= num(root, "orphans") > 0 ? EXIT_PROBLEM : 0; /* branches with no decision */
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
    printf("\n");
    print_shard_table(arr(root, "shards"), false);
    printf("\nin doubt: %.0f prepared branch(es), %.0f orphan(s)\n", num(root, "in_doubt"),
           num(root, "orphans"));
    print_heuristic_total(num(root, "heuristic"));
    reply_free(&r);
    return rc;
}

/* True when t's shards did otherwise than decided, or cannot prove what they did, unsettled. */
static bool bad_heuristic(const cJSON *t)
{
    return (strcmp(str(t, "heuristic"), "mixed") == 0 ||
            strcmp(str(t, "heuristic"), "hazard") == 0) &&
           !flag(t, "heuristic_settled");
}

/* One transaction of list; owner: its node, in a column of its own (NULL: no such column). */
static void print_tx_line(const cJSON *t, const char *owner)
{
    const cJSON *s;

    printf("%-22s ", str(t, "gtid"));
    if (owner)
        printf("%-8s ", owner);
    printf("%-11s %-28s", str(t, "status"),
           *str(t, "decided_at") ? str(t, "decided_at") : str(t, "created_at"));
    cJSON_ArrayForEach(s, arr(t, "shards")) printf(" %s:%s", str(s, "name"), str(s, "state"));
    if (*str(t, "heuristic"))
        printf("  HEURISTIC %s", str(t, "heuristic"));
    printf("\n");
}

static void print_heuristics(const cJSON *list, const char *indent)
{
    const cJSON *h;

    cJSON_ArrayForEach(h, list)
    {
        printf("%sHEURISTIC %s on shard %s at %s (decision %s): %s\n", indent,
               strcmp(str(h, "kind"), "mixed") == 0 ? "MIXED" : "HAZARD", str(h, "shard"),
               str(h, "at"), str(h, "decision"), str(h, "detail"));
    }
}

#define OLDER_MAX_MS (100LL * 365 * 86400000) /* --older-than: a century is plenty */

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

/* "/v1/...PREFIX" + arg percent-encoded (one path segment, whatever it holds) + suffix. */
static void path_with(char *path, size_t n, const char *prefix, const char *arg, const char *suffix)
{
    char *e = curl_easy_escape(NULL, arg, 0);

    snprintf(path, n, "%s%s%s", prefix, e ? e : "", suffix);
    curl_free(e);
}

/* The path list asks a coordinator for (n bytes at path); EXIT_USAGE after saying why not. */
static int list_path(const struct opts *o, int argc, char **argv, char *path, size_t n)
{
    const char *status = o->status;
    long long older = o->older_ms;

    if (argc > 1)
        return usage("list: unexpected argument '%s'", argv[1]);
    if (status && dtx_status_parse(status) < 0) {
        dtx_status_list(path, n);
        return usage("--status: '%s' is not a status (%s)", status, path);
    }
    snprintf(path, n, "/v1/transactions?%s%s%s", status ? "status=" : "", status ? status : "",
             status && older >= 0 ? "&" : "");
    if (older >= 0)
        snprintf(path + strlen(path), n - strlen(path), "older_than_ms=%lld", older);
    return 0;
}

static int cmd_list(const struct opts *o, int argc, char **argv)
{
    char path[512];
    struct reply r;
    const cJSON *root, *t;
    int rc = 0;

    if ((rc = list_path(o, argc, argv, path, sizeof(path))) != 0)
        return rc;
    if (!(root = must(o, "GET", path, NULL, &r)))
        return EXIT_PROBLEM;
    cJSON_ArrayForEach(t, arr(root, "transactions")) rc |= bad_heuristic(t) ? EXIT_PROBLEM : 0;
    if (o->json) {
        print_json(root);
    } else {
        printf("%-22s %-11s %-28s %s\n", "GTID", "STATUS", "DECIDED (or created)", "SHARDS");
        cJSON_ArrayForEach(t, arr(root, "transactions")) print_tx_line(t, NULL);
        printf("%d transaction(s)%s\n", cJSON_GetArraySize(arr(root, "transactions")),
               rc ? "; HEURISTIC outcomes among them (dtxctl show GTID)" : "");
    }
    reply_free(&r);
    return rc;
}

static int cmd_show(const struct opts *o, int argc, char **argv)
{
    char path[512];
    struct reply r;
    const cJSON *t, *s, *e;
    int rc;

    if (argc != 2)
        return usage("show needs one GTID");
    path_with(path, sizeof(path), "/v1/transactions/", argv[1], "");
    if (!(t = must(o, "GET", path, NULL, &r)))
        return EXIT_PROBLEM;
    rc = bad_heuristic(t) ? EXIT_PROBLEM : 0;
    if (o->json) {
        print_json(t);
        reply_free(&r);
        return rc;
    }
    printf("transaction %s: %s", str(t, "gtid"), str(t, "status"));
    if (strcmp(str(t, "heuristic"), "mixed") == 0)
        printf(" (HEURISTIC MIXED: a shard did the opposite of the decision)");
    else if (strcmp(str(t, "heuristic"), "hazard") == 0)
        printf(" (HEURISTIC HAZARD: a shard cannot prove what became of its branch)");
    else if (*str(t, "heuristic"))
        printf(" (HEURISTIC: an operator decided %s)", str(t, "heuristic"));
    if (*str(t, "decided_by"))
        printf(", decided by %s\n", str(t, "decided_by"));
    else
        printf(", not decided yet\n");
    if (*str(t, "protocol"))
        printf("  protocol %s%s\n", str(t, "protocol"), flag(t, "one_phase") ? ", one phase" : "");
    if (*str(t, "created_at"))
        printf("  created %s\n", str(t, "created_at"));
    if (*str(t, "decided_at"))
        printf("  decided %s\n", str(t, "decided_at"));
    if (*str(t, "client"))
        printf("  client %s\n", str(t, "client"));
    if (*str(t, "idempotency_key"))
        printf("  idempotency key %s\n", str(t, "idempotency_key"));
    if ((e = cJSON_GetObjectItemCaseSensitive(t, "error"))) {
        printf("  error %s: %s\n", str(e, "code"), str(e, "message"));
        if (*str(e, "detail"))
            printf("    detail: %s\n", str(e, "detail"));
        if (*str(e, "hint"))
            printf("    hint: %s\n", str(e, "hint"));
    }
    cJSON_ArrayForEach(s, arr(t, "shards"))
    {
        printf("  shard %-10s %-10s", str(s, "name"), str(s, "state"));
        if (*str(s, "xid"))
            printf(" xid %s", str(s, "xid"));
        if (num(s, "phase2_sends"))
            printf(" phase-2 sends %.0f", num(s, "phase2_sends"));
        if (flag(s, "forgotten"))
            printf(" FORGOTTEN");
        if (*str(s, "heuristic"))
            printf(" HEURISTIC %s", str(s, "heuristic"));
        printf("\n");
        if (*str(s, "last_error"))
            printf("      last error: %s\n", str(s, "last_error"));
    }
    print_heuristics(arr(t, "heuristics"), "  ");
    print_operator_notes(arr(t, "operator"), "  ");
    reply_free(&r);
    return rc;
}

/* Why in-doubt's branch b has no decision, or that an operator decided it; "" for neither. */
static const char *branch_mark(const cJSON *b)
{
    return flag(b, "malformed")                 ? "MALFORMED"
           : cJSON_HasObjectItem(b, "operator") ? "HEURISTIC"
           : flag(b, "foreign")                 ? "FOREIGN"
           : flag(b, "epoch_gap")               ? "LOG-GAP"
           : flag(b, "orphan")                  ? "ORPHAN"
                                                : "";
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
               age(num(b, "age_ms"), a, sizeof(a)), str(b, "decision"), branch_mark(b));
        print_locks(arr(b, "locks"));
        print_termination(b);
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

/*
 * in-doubt --participant URL...: asks the participants themselves, for when
 * the coordinator is down. They know what is prepared, not what was
 * decided: the decision column says so.
 */
static int cmd_in_doubt_direct(const struct opts *o)
{
    cJSON *all = jsonx_new_array(), *shards = jsonx_new_array(), *root;
    const cJSON *b;
    struct reply r;
    int rc = 0;
    char a[32];

    for (size_t i = 0; i < o->nparts; i++) {
        cJSON *s = jsonx_new_object();

        jsonx_add_str(s, "participant", o->parts[i]);
        if (call_at(o, o->parts[i], o->peer_token, "GET", "/v1/admin/branches", NULL, 30, &r) ==
                0 &&
            r.status == 200 && r.json) {
            jsonx_add_str(s, "name", str(r.json, "shard"));
            jsonx_add_bool(s, "reachable", true);
            cJSON_ArrayForEach(b, arr(r.json, "branches"))
            {
                cJSON *c = cJSON_Duplicate(b, true);

                if (!cJSON_HasObjectItem(c, "shard"))
                    jsonx_add_str(c, "shard", str(r.json, "shard"));
                jsonx_add_str(c, "decision", "unknown");
                jsonx_append(all, c);
            }
        } else {
            jsonx_add_bool(s, "reachable", false);
            jsonx_add_str(s, "error", reply_error(&r));
            rc = EXIT_PROBLEM;
        }
        reply_free(&r);
        jsonx_append(shards, s);
    }
    rc |= cJSON_GetArraySize(all) ? EXIT_PROBLEM : 0;
    root = jsonx_new_object();
    jsonx_add_bool(root, "coordinator_asked", false);
    jsonx_add(root, "branches", all);
    jsonx_add(root, "shards", shards);
    if (o->json) {
        print_json(root);
        cJSON_Delete(root);
        return rc;
    }
    printf("asked the participants directly: the DECISION column is the coordinator's, which "
           "was not asked\n");
    printf("%-8s %-28s %-9s %-10s %s\n", "SHARD", "GID", "AGE", "DECISION", "LOCKS");
    cJSON_ArrayForEach(b, all)
    {
        printf("%-8s %-28s %-9s %-10s ", str(b, "shard"), str(b, "gid"),
               age(num(b, "age_ms"), a, sizeof(a)), "unknown");
        print_locks(arr(b, "locks"));
        print_termination(b);
        printf("\n");
    }
    cJSON_ArrayForEach(b, shards)
    {
        if (!flag(b, "reachable"))
            printf("participant %s is unreachable, its branches are not listed: %s\n",
                   str(b, "participant"), str(b, "error"));
    }
    printf("%d prepared branch(es)\n", cJSON_GetArraySize(all));
    cJSON_Delete(root);
    return rc;
}

/* How recover's branches ended. */
struct tally {
    size_t done, skipped, undecided, failed; /* undecided: needs an operator */
};

/* Why recover leaves a branch with no decision alone ("" when it has a decision). */
static const char *why_undecided(const struct opts *o, const cJSON *b, char *buf, size_t n)
{
    if (flag(b, "malformed") && !o->malformed)
        return "left alone: its gid holds no gtid, nothing can decide it (dtxctl recover "
               "--malformed rolls such branches back)";
    if (flag(b, "malformed"))
        return "";
    /* decided, by this coordinator or by an operator (another node's gtid, one from a gap in
     * the log: an operator's resolve): carried out */
    if (strcmp(str(b, "decision"), "commit") == 0 || strcmp(str(b, "decision"), "abort") == 0)
        return "";
    if (flag(b, "foreign"))
        snprintf(buf, n,
                 "left alone: it belongs to coordinator '%s'; that coordinator, or an operator "
                 "(dtxctl resolve), decides it",
                 str(b, "owner"));
    else if (flag(b, "epoch_gap"))
        snprintf(buf, n,
                 "left alone: its epoch is missing from the decision log (restored or "
                 "lost); check every shard, then dtxctl resolve");
    else if (strcmp(str(b, "decision"), "none") == 0)
        snprintf(buf, n, "left alone: the coordinator has no decision for it; dtxctl resolve");
    else if (strcmp(str(b, "decision"), "in_flight") == 0)
        snprintf(buf, n, "skipped: still being decided");
    else
        return "";
    return buf;
}

/* Asks the coordinator to finish branch b now; writes what happened into result. */
static void recover_one(const struct opts *o, const cJSON *b, char *result, size_t n,
                        struct tally *t)
{
    struct reply one;
    cJSON *req;
    char *body;
    const cJSON *sh;
    const char *res, *why = why_undecided(o, b, result, n);

    if (*why) {
        if (why != result)
            snprintf(result, n, "%s", why);
        if (strcmp(str(b, "decision"), "in_flight") == 0)
            t->skipped++;
        else
            t->undecided++;
        return;
    }
    req = jsonx_new_object();
    if (flag(b, "malformed")) {
        jsonx_add_str(req, "gid", str(b, "gid"));
        jsonx_add_bool(req, "malformed", true);
        jsonx_add_str(req, "operator", o->who);
    } else {
        jsonx_add_str(req, "gtid", str(b, "gtid"));
    }
    jsonx_add_str(req, "shard", str(b, "shard"));
    body = jsonx_print(req);
    cJSON_Delete(req);
    call(o, "POST", "/v1/admin/recover", body, 60, &one);
    free(body);
    sh = cJSON_GetArrayItem(arr(one.json, "shards"), 0);
    res = str(sh, "result");
    if (one.status == 409) {
        snprintf(result, n, "left alone: %s", reply_error(&one));
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
    } else if (strcmp(res, "unknown") == 0) {
        snprintf(result, n,
                 "UNKNOWN: shard %s's database cannot tell what became of the branch (a "
                 "heuristic hazard): %s",
                 str(sh, "shard"), str(sh, "error"));
        t->failed++;
    } else {
        snprintf(result, n, "failed: %s", reply_error(&one));
        t->failed++;
    }
    reply_free(&one);
}

/* Prints recover's outcome; takes items and coordinators (NULL with one coordinator). */
static void print_recover_summary(const struct opts *o, cJSON *items, const struct tally *t,
                                  cJSON *coordinators)
{
    cJSON *sum;

    if (!o->json) {
        printf("recover: %zu finished, %zu left alone for now, %zu need an operator, %zu "
               "failed\n",
               t->done, t->skipped, t->undecided, t->failed);
        cJSON_Delete(items);
        cJSON_Delete(coordinators);
        return;
    }
    sum = jsonx_new_object();
    if (coordinators)
        jsonx_add(sum, "coordinators", coordinators);
    jsonx_add(sum, "branches", items);
    jsonx_add_num(sum, "finished", (double)t->done);
    jsonx_add_num(sum, "skipped", (double)t->skipped);
    jsonx_add_num(sum, "need_operator", (double)t->undecided);
    jsonx_add_num(sum, "failed", (double)t->failed);
    print_json(sum);
    cJSON_Delete(sum);
}

static int cmd_recover(const struct opts *o)
{
    struct reply r, k;
    const cJSON *root, *b, *s;
    struct tally t = {0, 0, 0, 0};
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
            printf("[%zu/%zu] %-28s %-8s %s\n", ++i, total, str(b, "gid"), str(b, "shard"), result);
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
    print_recover_summary(o, items, &t, NULL);
    reply_free(&r);
    return t.failed || t.undecided ? EXIT_PROBLEM : 0;
}

/* The operator's name for the log without --operator: the OS user at this host. */
static void default_operator(char *out, size_t n)
{
    const char *u = getenv("SUDO_USER");
    const struct passwd *pw;
    char host[128] = "", uid[32];

    if (!u || !*u)
        u = getenv("USER");
    if ((!u || !*u) && (pw = getpwuid(geteuid())))
        u = pw->pw_name;
    if (!u || !*u) {
        snprintf(uid, sizeof(uid), "uid%u", (unsigned)geteuid());
        u = uid;
    }
    gethostname(host, sizeof(host) - 1);
    snprintf(out, n, "%s@%s", u, *host ? host : "localhost");
}

static int post_operator(const struct opts *o, const char *gtid, const char *action, cJSON *req)
{
    char path[768], *body = jsonx_print(req), suffix[16];
    struct reply r;
    const cJSON *root, *s;
    int rc = 0;

    snprintf(suffix, sizeof(suffix), "/%s", action);
    path_with(path, sizeof(path), "/v1/admin/transactions/", gtid, suffix);
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
    /* recorded, but a shard did not (or could not) carry it out: dtxctl recover finishes it */
    cJSON_ArrayForEach(s, arr(root, "shards"))
    {
        if (strcmp(str(s, "result"), "failed") == 0 || strcmp(str(s, "result"), "mismatch") == 0 ||
            strcmp(str(s, "result"), "unknown") == 0)
            rc = EXIT_PROBLEM;
    }
    reply_free(&r);
    return rc;
}

/* The usage errors of resolve and forget, found before anything is sent: EXIT_USAGE, or 0. */
static int check_resolve(const struct opts *o, int argc, char **argv, bool forget)
{
    if (argc != 2)
        return usage("%s needs one GTID", argv[0]);
    if (forget && o->decision)
        return usage("forget takes no --commit or --abort");
    if (!forget && !o->decision)
        return usage("resolve needs --commit or --abort");
    if (forget && !o->shard)
        return usage("forget needs --shard NAME");
    if (!o->reason || !*o->reason)
        return usage("%s needs --reason TEXT (it is kept in the decision log)", argv[0]);
    return 0;
}

static int cmd_resolve(const struct opts *o, int argc, char **argv, bool forget)
{
    cJSON *req;
    int rc;

    if ((rc = check_resolve(o, argc, argv, forget)) != 0)
        return rc;
    req = jsonx_new_object();
    if (o->decision)
        jsonx_add_str(req, "decision", o->decision);
    if (o->shard)
        jsonx_add_str(req, "shard", o->shard);
    jsonx_add_str(req, "reason", o->reason);
    jsonx_add_str(req, "operator", o->who);
    return post_operator(o, argv[1], forget ? "forget" : "resolve", req);
}

/* ---- offline: the decision log --------------------------------------------------- */

struct dump {
    bool json;
    bool print;
    cJSON *records;
};

/* A COMMIT record's client and key (idemkey.h: the field carries both), as " client C key K". */
static void print_client_key(const char *field)
{
    char *client;
    const char *key;

    idemkey_split(field, &client, &key);
    if (client)
        printf(" client %s", client);
    if (key)
        printf(" key %s", key);
    free(client);
}

/* The same into a record's JSON: "client", "idempotency_key". */
static void add_client_key(cJSON *o, const char *field)
{
    char *client;
    const char *key;

    idemkey_split(field, &client, &key);
    if (client)
        jsonx_add_str(o, "client", client);
    if (key)
        jsonx_add_str(o, "idempotency_key", key);
    free(client);
}

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
    case DREC_PRECOMMIT:
        printf(" %s at %s %s", rec->gtid, at, rec->protocol == 3 ? "3pc" : "2pc");
        for (size_t i = 0; i < rec->nbranches; i++)
            printf(" %s:%" PRIu64 "%s%s", rec->branches[i].shard, rec->branches[i].xid,
                   rec->branches[i].db ? "@" : "", rec->branches[i].db ? rec->branches[i].db : "");
        print_client_key(rec->idem_key);
        printf("\n");
        break;
    case DREC_END:
        printf(" %s at %s\n", rec->gtid, at);
        break;
    case DREC_PROMISE:
    case DREC_ACCEPT:
        printf(" %s at %s ballot (%" PRIu64 ", %s)%s%s\n", rec->gtid, at, rec->counter, rec->node,
               rec->type == DREC_ACCEPT ? " value " : "",
               rec->type == DREC_ACCEPT ? ballot_value_name(rec->value) : "");
        break;
    case DREC_LEARNED:
        printf(" %s at %s %s (decided by the participants)\n", rec->gtid, at,
               ballot_value_name(rec->value));
        break;
    case DREC_OPERATOR:
        printf(" %s at %s %s %s%s%s by %s: %s\n", rec->gtid, at,
               rec->op_kind == DREC_OP_FORGET ? "forget" : "resolve",
               rec->op_commit ? "commit" : "abort", rec->shard && *rec->shard ? " shard " : "",
               rec->shard ? rec->shard : "", rec->who, rec->reason);
        break;
    case DREC_GAP:
        printf(" epochs %" PRIu64 "..%" PRIu64 " unknown to this log (shard %s had seen %" PRIu64
               ") at %s\n",
               rec->epoch, rec->epoch_hi, rec->shard, rec->epoch_hi, at);
        break;
    case DREC_HEURISTIC:
        printf(" %s at %s %s on shard %s (decision %s): %s\n", rec->gtid, at,
               rec->heur_kind == DREC_HEUR_MIXED ? "MIXED" : "HAZARD", rec->shard,
               rec->op_commit ? "commit" : "abort", rec->reason);
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
        if (rec->branches[i].db)
            jsonx_add_str(b, "db", rec->branches[i].db);
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
    if (rec->type == DREC_GAP) {
        jsonx_add_num(o, "from", (double)rec->epoch);
        jsonx_add_num(o, "to", (double)rec->epoch_hi);
        jsonx_add_str(o, "shard", rec->shard);
        return o;
    }
    jsonx_add_str(o, "gtid", rec->gtid);
    if (rec->type == DREC_HEURISTIC) {
        jsonx_add_str(o, "kind", rec->heur_kind == DREC_HEUR_MIXED ? "mixed" : "hazard");
        jsonx_add_str(o, "shard", rec->shard);
        jsonx_add_str(o, "decision", rec->op_commit ? "commit" : "abort");
        jsonx_add_str(o, "detail", rec->reason);
    } else if (rec->type == DREC_PROMISE || rec->type == DREC_ACCEPT) {
        struct ballot b = {.counter = rec->counter};

        snprintf(b.node, sizeof(b.node), "%s", rec->node);
        jsonx_add(o, "ballot", ballot_json(&b));
        if (rec->type == DREC_ACCEPT)
            jsonx_add_str(o, "value", ballot_value_name(rec->value));
    } else if (rec->type == DREC_LEARNED) {
        jsonx_add_str(o, "decision", ballot_value_name(rec->value));
    } else if (rec->type == DREC_COMMIT || rec->type == DREC_PRECOMMIT) {
        jsonx_add_str(o, "protocol", rec->protocol == 3 ? "3pc" : "2pc");
        jsonx_add(o, "branches", branches_json(rec));
        add_client_key(o, rec->idem_key);
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
    struct dump d = {.json = o->json};
    const char *dir = o->log_dir;
    struct dlog_scan scan;
    struct dtx_err err;
    bool dump;
    cJSON *root;
    int rc;

    if (argc < 2 || (strcmp(argv[1], "dump") != 0 && strcmp(argv[1], "verify") != 0))
        return usage("log needs 'dump' or 'verify'");
    dump = strcmp(argv[1], "dump") == 0;
    if (!dir || argc > 2)
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
    if (rc == 0 && scan.segments == 0)
        rc = dtx_err_set(&err, DTX_ENOTFOUND,
                         "'%s' holds no decision log (no segment file): is --log-dir right?", dir);
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
            printf("%s: %s\n", err.code == DTX_ENOTFOUND ? "NO LOG" : "CORRUPT", err.msg);
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

/* ---- several coordinators: the whole cluster -------------------------------------- */

/*
 * With more than one --coordinator, dtxctl first asks every one its
 * /healthz: its node and whether it is that node's active process or a
 * standby. The cluster commands (status, list, in-doubt, recover) then ask
 * one active process of every node and merge the answers; the commands on
 * one transaction (show, resolve, forget) go to an active process of the
 * node that issued the gtid (its prefix). A coordinator that does not
 * answer is reported, not fatal, unless no node answers at all.
 */

/* One coordinator process given on the command line, as its /healthz describes it. */
struct member {
    const char *url;
    char node[DTX_NAME_MAX + 1]; /* from /healthz, else the NODE= given; "" when unknown */
    const char *role;            /* "active", "standby" or "unreachable" */
    bool asked;                  /* the one active process of its node the cluster asks */
    bool failed;                 /* asked, and its answer did not come */
    char error[CURL_ERROR_SIZE + 200];
};

struct cluster {
    size_t n;
    struct member m[MAX_COORDS];
    struct reply r[MAX_COORDS]; /* each asked member's answer */
};

/* Asks every coordinator given its /healthz and picks one active process per node. */
static void cluster_probe(const struct opts *o, struct cluster *cl)
{
    const struct targets *t = o->targets;
    struct reply h;

    memset(cl, 0, sizeof(*cl));
    cl->n = t->n;
    for (size_t i = 0; i < t->n; i++) {
        struct member *m = &cl->m[i];

        m->url = t->url[i];
        snprintf(m->node, sizeof(m->node), "%s", t->label[i]);
        m->role = "unreachable";
        if (call_at(o, m->url, o->token, "GET", "/healthz", NULL, 10, &h) != 0) {
            snprintf(m->error, sizeof(m->error), "%s", reply_error(&h));
        } else if (!h.json || !gid_name_ok(str(h.json, "node_id"))) {
            snprintf(m->error, sizeof(m->error),
                     "%s answers /healthz with HTTP %ld but names no node_id: not a dtx "
                     "coordinator",
                     m->url, h.status);
        } else {
            snprintf(m->node, sizeof(m->node), "%s", str(h.json, "node_id"));
            m->role = strcmp(str(h.json, "role"), "standby") == 0 ? "standby" : "active";
        }
        reply_free(&h);
    }
    for (size_t i = 0; i < cl->n; i++) {
        size_t j = 0;

        for (; j < i && !(cl->m[j].asked && strcmp(cl->m[j].node, cl->m[i].node) == 0); j++)
            ;
        cl->m[i].asked = j == i && strcmp(cl->m[i].role, "active") == 0;
    }
}

static void cluster_release(struct cluster *cl)
{
    for (size_t i = 0; i < cl->n; i++)
        reply_free(&cl->r[i]);
}

/* The active process of node that the cluster asks; NULL when there is none. */
static struct member *node_member(struct cluster *cl, const char *node)
{
    for (size_t i = 0; i < cl->n; i++) {
        if (cl->m[i].asked && strcmp(cl->m[i].node, node) == 0)
            return &cl->m[i];
    }
    return NULL;
}

/*
 * Sends method path (body NULL for none) to every member asked, their
 * answers in cl->r. Returns how many answered 2xx with JSON; a member that
 * did not is marked failed, with why. When none answered, says so on
 * stderr (with every member's state) and returns 0.
 */
static size_t cluster_ask(const struct opts *o, struct cluster *cl, const char *method,
                          const char *path, const char *body)
{
    size_t ok = 0;

    for (size_t i = 0; i < cl->n; i++) {
        struct member *m = &cl->m[i];
        struct reply *r = &cl->r[i];

        if (!m->asked)
            continue;
        reply_free(r);
        m->failed = false;
        m->error[0] = '\0';
        if (call_at(o, m->url, o->token, method, path, body, 60, r) == 0 && r->status / 100 == 2 &&
            r->json) {
            ok++;
            continue;
        }
        m->failed = true;
        snprintf(m->error, sizeof(m->error), "%s", reply_error(r));
    }
    if (ok)
        return ok;
    fprintf(stderr, "dtxctl: no coordinator answered:\n");
    for (size_t i = 0; i < cl->n; i++)
        fprintf(stderr, "  %s (%s): %s\n", cl->m[i].url, *cl->m[i].node ? cl->m[i].node : "?",
                *cl->m[i].error ? cl->m[i].error : cl->m[i].role);
    return 0;
}

/* True when member i was asked and answered. */
static bool answered(const struct cluster *cl, size_t i)
{
    return cl->m[i].asked && !cl->m[i].failed;
}

/* True when an asked process of node answered. */
static bool node_heard(const struct cluster *cl, const char *node)
{
    for (size_t i = 0; i < cl->n; i++) {
        if (answered(cl, i) && *node && strcmp(cl->m[i].node, node) == 0)
            return true;
    }
    return false;
}

/*
 * EXIT_PROBLEM when a coordinator given did not answer, or a node has no
 * active process that answered (a standby beside an active one is no
 * problem); else 0. Call it after the cluster was asked.
 */
static int cluster_rc(const struct cluster *cl)
{
    for (size_t i = 0; i < cl->n; i++) {
        if (strcmp(cl->m[i].role, "unreachable") == 0 || cl->m[i].failed ||
            !node_heard(cl, cl->m[i].node))
            return EXIT_PROBLEM;
    }
    return 0;
}

static cJSON *members_json(const struct cluster *cl)
{
    cJSON *a = jsonx_new_array();

    for (size_t i = 0; i < cl->n; i++) {
        const struct member *m = &cl->m[i];
        cJSON *j = jsonx_new_object();

        jsonx_add_str(j, "url", m->url);
        jsonx_add_str(j, "node", m->node);
        jsonx_add_str(j, "role", m->role);
        jsonx_add_bool(j, "asked", m->asked);
        if (*m->error)
            jsonx_add_str(j, "error", m->error);
        jsonx_append(a, j);
    }
    return a;
}

/* Says, after a merged listing of what, which coordinators were not heard and what is missing. */
static void print_unheard(const struct cluster *cl, const char *what)
{
    for (size_t i = 0; i < cl->n; i++) {
        const struct member *m = &cl->m[i];
        const char *node = *m->node ? m->node : "?";

        if (answered(cl, i) || (strcmp(m->role, "active") == 0 && !m->asked))
            continue;
        if (node_heard(cl, m->node) && strcmp(m->role, "standby") != 0)
            printf("coordinator %s (node %s) did not answer: %s\n", m->url, node, m->error);
        else if (node_heard(cl, m->node))
            continue;
        else if (strcmp(m->role, "standby") == 0)
            printf("coordinator %s (node %s) is a standby and no active process of its node "
                   "answered: the %s of node %s are not listed\n",
                   m->url, node, what, node);
        else
            printf("coordinator %s (node %s) did not answer, the %s of its node are not "
                   "listed: %s\n",
                   m->url, node, what, m->error);
    }
}

/* The node that issued gtid (its prefix) into node (DTX_NAME_MAX + 1); "" when malformed. */
static const char *gtid_node(const char *gtid, char *node)
{
    if (!gid_parse_gtid(gtid, node, NULL, NULL))
        node[0] = '\0';
    return node;
}

/* The item of list whose key is v (and, with key2, whose key2 is v2); NULL when none. */
static cJSON *find_item(const cJSON *list, const char *key, const char *v, const char *key2,
                        const char *v2)
{
    cJSON *it;

    cJSON_ArrayForEach(it, list)
    {
        if (strcmp(str(it, key), v) == 0 && (!key2 || strcmp(str(it, key2), v2) == 0))
            return it;
    }
    return NULL;
}

/* Adds name to item's array key (made when missing), once. */
static void add_name(cJSON *item, const char *key, const char *name)
{
    cJSON *list = cJSON_GetObjectItemCaseSensitive(item, key);
    const cJSON *s;

    if (!list) {
        list = jsonx_new_array();
        jsonx_add(item, key, list);
    }
    cJSON_ArrayForEach(s, list)
    {
        if (cJSON_IsString(s) && strcmp(s->valuestring, name) == 0)
            return;
    }
    jsonx_append(list, cJSON_CreateString(name));
}

/*
 * Every prepared branch the asked coordinators listed, once (by shard and
 * gid), each with "node" (its owner, the gtid's prefix) and "seen_by".
 * A branch's decision is its owner's answer when the owner answered,
 * else another coordinator's (which says "foreign": it cannot decide).
 */
static cJSON *merge_branches(const struct cluster *cl)
{
    cJSON *all = jsonx_new_array();
    const cJSON *b;
    char node[DTX_NAME_MAX + 1];

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cl->n; i++) {
            if (!answered(cl, i))
                continue;
            cJSON_ArrayForEach(b, arr(cl->r[i].json, "branches"))
            {
                bool own = strcmp(gtid_node(str(b, "gtid"), node), cl->m[i].node) == 0;
                cJSON *have = find_item(all, "shard", str(b, "shard"), "gid", str(b, "gid"));

                if (own != (pass == 0))
                    continue;
                if (!have) {
                    have = cJSON_Duplicate(b, true);
                    jsonx_add_str(have, "node", node);
                    jsonx_append(all, have);
                }
                add_name(have, "seen_by", cl->m[i].node);
            }
        }
    }
    return all;
}

/* Every shard, once: as a coordinator that reached it saw it, else unreachable from all. */
static cJSON *merge_shards(const struct cluster *cl)
{
    cJSON *all = jsonx_new_array();
    const cJSON *s;

    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < cl->n; i++) {
            if (!answered(cl, i))
                continue;
            cJSON_ArrayForEach(s, arr(cl->r[i].json, "shards"))
            {
                cJSON *have = find_item(all, "name", str(s, "name"), NULL, NULL);

                if (flag(s, "reachable") != (pass == 0))
                    continue;
                if (!have) {
                    have = cJSON_Duplicate(s, true);
                    cJSON_DeleteItemFromObjectCaseSensitive(have, "seen_by");
                    jsonx_append(all, have);
                }
                if (pass == 0)
                    add_name(have, "seen_by", cl->m[i].node);
            }
        }
    }
    return all;
}

/* in-doubt with several coordinators: every node's branches, merged, with the owning node. */
static int cluster_in_doubt(const struct opts *o, struct cluster *cl)
{
    cJSON *root, *branches, *shards;
    const cJSON *b, *s;
    int rc;
    double orphans = 0;
    char a[32];

    if (!cluster_ask(o, cl, "GET", "/v1/admin/in-doubt", NULL))
        return EXIT_PROBLEM;
    rc = cluster_rc(cl);
    branches = merge_branches(cl);
    shards = merge_shards(cl);
    cJSON_ArrayForEach(b, branches) orphans += flag(b, "orphan");
    rc |= cJSON_GetArraySize(branches) ? EXIT_PROBLEM : 0;
    cJSON_ArrayForEach(s, shards) rc |= flag(s, "reachable") ? 0 : EXIT_PROBLEM;
    root = jsonx_new_object();
    jsonx_add(root, "coordinators", members_json(cl));
    jsonx_add(root, "branches", branches);
    jsonx_add(root, "shards", shards);
    jsonx_add_num(root, "orphans", orphans);
    if (o->json) {
        print_json(root);
        cJSON_Delete(root);
        return rc;
    }
    printf("%-8s %-28s %-8s %-9s %-10s %-9s %s\n", "SHARD", "GID", "NODE", "AGE", "DECISION", "",
           "LOCKS");
    cJSON_ArrayForEach(b, branches)
    {
        printf("%-8s %-28s %-8s %-9s %-10s %-9s ", str(b, "shard"), str(b, "gid"),
               *str(b, "node") ? str(b, "node") : "-", age(num(b, "age_ms"), a, sizeof(a)),
               str(b, "decision"), branch_mark(b));
        print_locks(arr(b, "locks"));
        print_termination(b);
        printf("\n");
    }
    cJSON_ArrayForEach(s, shards)
    {
        if (!flag(s, "reachable"))
            printf("shard %s is unreachable, its branches are not listed: %s\n", str(s, "name"),
                   str(s, "error"));
    }
    print_unheard(cl, "decisions");
    printf("%d prepared branch(es) in doubt, %.0f orphan(s)\n", cJSON_GetArraySize(branches),
           orphans);
    cJSON_Delete(root);
    return rc;
}

/* list with several coordinators: every node's transactions, each once, with its node. */
static int cluster_list(const struct opts *o, struct cluster *cl, const char *path)
{
    cJSON *root, *all = jsonx_new_array();
    const cJSON *t;
    int rc, heur = 0;
    char node[DTX_NAME_MAX + 1];

    if (!cluster_ask(o, cl, "GET", path, NULL)) {
        cJSON_Delete(all);
        return EXIT_PROBLEM;
    }
    rc = cluster_rc(cl);
    for (size_t i = 0; i < cl->n; i++) {
        if (!answered(cl, i))
            continue;
        cJSON_ArrayForEach(t, arr(cl->r[i].json, "transactions"))
        {
            cJSON *c;

            if (find_item(all, "gtid", str(t, "gtid"), NULL, NULL))
                continue;
            c = cJSON_Duplicate(t, true);
            jsonx_add_str(c, "node", gtid_node(str(t, "gtid"), node));
            jsonx_append(all, c);
            heur |= bad_heuristic(t);
        }
    }
    rc |= heur ? EXIT_PROBLEM : 0;
    root = jsonx_new_object();
    jsonx_add(root, "coordinators", members_json(cl));
    jsonx_add(root, "transactions", all);
    if (o->json) {
        print_json(root);
        cJSON_Delete(root);
        return rc;
    }
    printf("%-22s %-8s %-11s %-28s %s\n", "GTID", "NODE", "STATUS", "DECIDED (or created)",
           "SHARDS");
    cJSON_ArrayForEach(t, all) print_tx_line(t, str(t, "node"));
    print_unheard(cl, "transactions");
    printf("%d transaction(s)%s\n", cJSON_GetArraySize(all),
           heur ? "; HEURISTIC outcomes among them (dtxctl show GTID)" : "");
    cJSON_Delete(root);
    return rc;
}

/* One line of cluster status per coordinator process: its role and, if asked, its summary. */
static void print_member_status(const struct cluster *cl, size_t i)
{
    const struct member *m = &cl->m[i];
    const cJSON *co = cJSON_GetObjectItemCaseSensitive(cl->r[i].json, "coordinator"), *t;

    printf("%-8s %-12s %s", *m->node ? m->node : "?", m->role, m->url);
    if (!answered(cl, i)) {
        if (*m->error)
            printf(": %s", m->error);
        else if (strcmp(m->role, "active") == 0)
            printf(" (another active process of node %s was asked)", m->node);
        printf("\n");
        return;
    }
    printf(" (epoch %.0f): %s\n", num(co, "epoch"), str(co, "status"));
    if (cJSON_HasObjectItem(co, "error"))
        printf("  %s\n", str(cJSON_GetObjectItemCaseSensitive(co, "error"), "message"));
    t = cJSON_GetObjectItemCaseSensitive(co, "log");
    printf("  decisions: %s store%s%s, last checkpoint %s\n",
           *str(t, "type") ? str(t, "type") : "file", *str(t, "dir") ? " " : "", str(t, "dir"),
           *str(t, "last_checkpoint_at") ? str(t, "last_checkpoint_at") : "none");
    printf("  transactions:");
    cJSON_ArrayForEach(t, cJSON_GetObjectItemCaseSensitive(co, "transactions"))
    {
        printf(" %s %.0f", t->string, t->valuedouble);
    }
    printf("\n");
}

/* The cluster's totals for status: processes by role, prepared branches, heuristics. */
static cJSON *cluster_summary(const struct cluster *cl, const cJSON *shards)
{
    cJSON *sum = jsonx_new_object();
    double active = 0, standby = 0, down = 0, prepared = 0, heur = 0;
    const cJSON *s;

    for (size_t i = 0; i < cl->n; i++) {
        const struct member *m = &cl->m[i];

        active += strcmp(m->role, "active") == 0;
        standby += strcmp(m->role, "standby") == 0;
        down += strcmp(m->role, "unreachable") == 0;
        if (*m->node)
            add_name(sum, "nodes", m->node);
        if (answered(cl, i))
            heur += num(cl->r[i].json, "heuristic");
    }
    cJSON_ArrayForEach(s, shards) prepared += num(s, "prepared");
    jsonx_add_num(sum, "active", active);
    jsonx_add_num(sum, "standby", standby);
    jsonx_add_num(sum, "unreachable", down);
    jsonx_add_num(sum, "in_doubt", prepared);
    jsonx_add_num(sum, "heuristic", heur);
    return sum;
}

/* status with several coordinators: each process (its role, its summary), the shards, the cluster.
 */
static int cluster_status(const struct opts *o, struct cluster *cl)
{
    cJSON *root, *members, *shards, *sum;
    const cJSON *s;
    int rc;

    if (!cluster_ask(o, cl, "GET", "/v1/admin/status", NULL))
        return EXIT_PROBLEM;
    rc = cluster_rc(cl);
    members = members_json(cl);
    for (size_t i = 0; i < cl->n; i++) {
        const cJSON *co = cJSON_GetObjectItemCaseSensitive(cl->r[i].json, "coordinator");

        if (!answered(cl, i))
            continue;
        rc |= strcmp(str(co, "status"), "ok") != 0 ? EXIT_PROBLEM : 0;
        jsonx_add(cJSON_GetArrayItem(members, (int)i), "status",
                  cJSON_Duplicate(cl->r[i].json, true));
    }
    shards = merge_shards(cl);
    sum = cluster_summary(cl, shards);
    rc |= num(sum, "heuristic") > 0 ? EXIT_PROBLEM : 0;
    cJSON_ArrayForEach(s, shards) rc |= flag(s, "reachable") ? 0 : EXIT_PROBLEM;
    root = jsonx_new_object();
    jsonx_add(root, "coordinators", members);
    jsonx_add(root, "shards", shards);
    jsonx_add(root, "cluster", sum);
    if (o->json) {
        print_json(root);
        cJSON_Delete(root);
        return rc;
    }
    printf("%-8s %-12s %s\n", "NODE", "ROLE", "COORDINATOR");
    for (size_t i = 0; i < cl->n; i++)
        print_member_status(cl, i);
    print_shard_table(shards, true);
    printf("\ncluster: %d node(s), coordinator processes: %.0f active, %.0f standby, %.0f "
           "unreachable\n",
           cJSON_GetArraySize(arr(sum, "nodes")), num(sum, "active"), num(sum, "standby"),
           num(sum, "unreachable"));
    printf("in doubt: %.0f prepared branch(es) (dtxctl in-doubt shows whose)\n",
           num(sum, "in_doubt"));
    print_heuristic_total(num(sum, "heuristic"));
    cJSON_Delete(root);
    return rc;
}

/* recover with several coordinators: each node kicked, then each branch sent to its owner. */
static int cluster_recover(const struct opts *o, struct cluster *cl)
{
    struct tally t = {0, 0, 0, 0};
    cJSON *branches, *shards, *items;
    const cJSON *b, *s;
    size_t total, k = 0;
    char result[700];

    if (!cluster_ask(o, cl, "POST", "/v1/admin/recover", "{}"))
        return EXIT_PROBLEM;
    for (size_t i = 0; i < cl->n && !o->json; i++) {
        if (answered(cl, i))
            printf("node %s: phase 2 resent now for %.0f decided transaction(s)\n", cl->m[i].node,
                   num(cl->r[i].json, "kicked"));
    }
    if (!cluster_ask(o, cl, "GET", "/v1/admin/in-doubt", NULL))
        return EXIT_PROBLEM;
    branches = merge_branches(cl);
    shards = merge_shards(cl);
    items = jsonx_new_array();
    total = (size_t)cJSON_GetArraySize(branches);
    cJSON_ArrayForEach(b, branches)
    {
        const struct member *m = node_member(cl, str(b, "node"));
        struct opts one = *o;
        cJSON *item = jsonx_new_object();

        for (size_t i = 0; (!m || m->failed) && i < cl->n; i++)
            m = answered(cl, i) ? &cl->m[i] : m; /* not its owner: says whose it is */
        one.url = m->url;
        recover_one(&one, b, result, sizeof(result), &t);
        jsonx_add_str(item, "gid", str(b, "gid"));
        jsonx_add_str(item, "shard", str(b, "shard"));
        jsonx_add_str(item, "node", str(b, "node"));
        jsonx_add_str(item, "result", result);
        jsonx_append(items, item);
        if (!o->json)
            printf("[%zu/%zu] %-28s %-8s %s\n", ++k, total, str(b, "gid"), str(b, "shard"), result);
        fflush(stdout);
    }
    cJSON_ArrayForEach(s, shards)
    {
        if (flag(s, "reachable"))
            continue;
        t.failed++;
        if (!o->json)
            printf("shard %s is unreachable: its branches wait until it is back: %s\n",
                   str(s, "name"), str(s, "error"));
    }
    if (!o->json)
        print_unheard(cl, "decided transactions");
    print_recover_summary(o, items, &t, members_json(cl));
    cJSON_Delete(branches);
    cJSON_Delete(shards);
    return t.failed || t.undecided || cluster_rc(cl) ? EXIT_PROBLEM : 0;
}

/*
 * With several coordinators, points o->url at an active process of the node
 * that issued gtid (its prefix). Returns 0; EXIT_USAGE for a malformed gtid;
 * EXIT_PROBLEM after saying which coordinators of that node were given and
 * why none of them can take it (o->url is then untouched).
 */
static int route_to_owner(struct opts *o, struct cluster *cl, const char *gtid)
{
    char node[DTX_NAME_MAX + 1];
    const struct member *m;
    bool any = false;

    if (!gid_parse_gtid(gtid, node, NULL, NULL))
        return usage("'%s' is not a gtid (NODE-EPOCH-SEQ); with several coordinators its node "
                     "says which one to ask",
                     gtid);
    cluster_probe(o, cl);
    if ((m = node_member(cl, node))) {
        o->url = m->url;
        return 0;
    }
    fprintf(stderr,
            "dtxctl: %s belongs to node '%s', and no coordinator given is an active one "
            "of it",
            gtid, node);
    for (size_t i = 0; i < cl->n; i++) {
        if (strcmp(cl->m[i].node, node) != 0)
            continue;
        fprintf(stderr, "%s %s: %s", any ? ";" : ":", cl->m[i].url,
                *cl->m[i].error ? cl->m[i].error : cl->m[i].role);
        any = true;
    }
    if (!any)
        fprintf(stderr, " (give its URL with --coordinator, or NODE=URL for one that is down)");
    fprintf(stderr, "\n");
    return EXIT_PROBLEM;
}

/* Runs an HTTP command against several coordinators (more than one --coordinator). */
static int run_cluster(struct opts *o, const char *cmd, int argc, char **argv)
{
    struct cluster *cl = xcalloc(1, sizeof(*cl));
    bool one_tx =
        strcmp(cmd, "show") == 0 || strcmp(cmd, "resolve") == 0 || strcmp(cmd, "forget") == 0;
    char path[512];
    int rc = 0;

    if (strcmp(cmd, "show") == 0 && argc != 2)
        rc = usage("show needs one GTID");
    else if (one_tx && strcmp(cmd, "show") != 0)
        rc = check_resolve(o, argc, argv, strcmp(cmd, "forget") == 0);
    else if (strcmp(cmd, "list") == 0)
        rc = list_path(o, argc, argv, path, sizeof(path));
    if (rc != 0)
        goto out;
    if (one_tx) {
        if ((rc = route_to_owner(o, cl, argv[1])) == 0)
            rc = strcmp(cmd, "show") == 0 ? cmd_show(o, argc, argv)
                                          : cmd_resolve(o, argc, argv, strcmp(cmd, "forget") == 0);
        goto out;
    }
    if (strcmp(cmd, "in-doubt") == 0 && o->nparts) {
        rc = cmd_in_doubt_direct(o); /* the participants, not the coordinators */
        goto out;
    }
    cluster_probe(o, cl);
    if (strcmp(cmd, "status") == 0)
        rc = cluster_status(o, cl);
    else if (strcmp(cmd, "list") == 0)
        rc = cluster_list(o, cl, path);
    else if (strcmp(cmd, "in-doubt") == 0)
        rc = cluster_in_doubt(o, cl);
    else
        rc = cluster_recover(o, cl);
out:
    cluster_release(cl);
    free(cl);
    return rc;
}

/* The options each command takes, beyond the global ones (OPT_* bits). */
static const struct command {
    const char *name;
    unsigned opts;
    bool http; /* talks to a daemon */
} commands[] = {
    {"status", 0, true},
    {"list", OPT_STATUS | OPT_OLDER, true},
    {"show", 0, true},
    {"in-doubt", OPT_PARTICIPANT, true},
    {"recover", OPT_MALFORMED | OPT_OPERATOR, true},
    {"resolve", OPT_DECISION | OPT_SHARD | OPT_REASON | OPT_OPERATOR, true},
    {"forget", OPT_SHARD | OPT_REASON | OPT_OPERATOR, true},
    {"log", OPT_LOG_DIR, false},
};

static const char *opt_name(unsigned bit)
{
    static const char *const names[] = {"--status",  "--older-than", "--commit/--abort",
                                        "--shard",   "--reason",     "--operator",
                                        "--log-dir", "--malformed",  "--participant"};

    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (bit == 1u << i)
            return names[i];
    }
    return "?";
}

/* Keeps a copy of the n bytes at s in t->text; NULL when there is no room. */
static const char *keep(struct targets *t, const char *s, size_t n)
{
    char *c = t->text + t->used;

    if (n >= sizeof(t->text) - t->used)
        return NULL;
    memcpy(c, s, n);
    c[n] = '\0';
    t->used += n + 1;
    return c;
}

/* http://HOST[:PORT][/] or https://...: a scheme dtxctl speaks, a host, no blanks. */
static bool url_ok(const char *url)
{
    const char *rest = strncmp(url, "http://", 7) == 0    ? url + 7
                       : strncmp(url, "https://", 8) == 0 ? url + 8
                                                          : NULL;

    return rest && *rest && *rest != '/' && *rest != ':' && !strpbrk(url, " \t?#");
}

/*
 * Adds the coordinators of list ("URL", "NODE=URL", comma-separated, blanks
 * around each ignored) to t, each once; what names the option or variable
 * for a usage error. Returns 0, or EXIT_USAGE after saying why.
 */
static int add_targets(struct targets *t, const char *list, const char *what)
{
    const char *p = list, *end, *eq, *scheme;
    size_t n, i;

    for (; *p; p = *end ? end + 1 : end) {
        const char *url, *label = "";

        end = p + strcspn(p, ",");
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        for (n = (size_t)(end - p); n && (p[n - 1] == ' ' || p[n - 1] == '\t'); n--)
            ;
        if (!n)
            continue;
        eq = memchr(p, '=', n);
        scheme = strstr(p, "://");
        if (eq && (!scheme || eq < scheme)) {
            if (!(label = keep(t, p, (size_t)(eq - p))) || !gid_name_ok(label))
                return usage("%s: '%.*s' is not a node name (NODE=URL)", what, (int)(eq - p), p);
            n -= (size_t)(eq + 1 - p);
            p = eq + 1;
        }
        if (!n || !(url = keep(t, p, n)))
            return usage("%s: a coordinator's URL is missing or too long", what);
        if (!url_ok(url))
            return usage("%s: '%s' is not an http:// or https:// URL of a coordinator", what, url);
        for (i = 0; i < t->n && strcmp(t->url[i], url) != 0; i++)
            ;
        if (i < t->n)
            continue; /* given twice */
        if (t->n == MAX_COORDS)
            return usage("%s: at most %d coordinators", what, MAX_COORDS);
        t->label[t->n] = label;
        t->url[t->n++] = url;
    }
    return 0;
}

/*
 * The coordinators when no --coordinator was given: $DTX_COORDINATOR's, else
 * the default. Sets o->url to the first. Returns 0 or EXIT_USAGE.
 */
static int pick_coordinators(struct opts *o)
{
    const char *env = getenv("DTX_COORDINATOR");

    if (!o->targets->n && env && add_targets(o->targets, env, "$DTX_COORDINATOR") != 0)
        return EXIT_USAGE;
    if (!o->targets->n && add_targets(o->targets, "http://127.0.0.1:7000", "default") != 0)
        return EXIT_USAGE;
    o->url = o->targets->url[0];
    return 0;
}

/* Reads every option, before or after the command; returns EXIT_USAGE after saying why. */
static int parse_opts(struct opts *o, int argc, char **argv)
{
    static const struct option lo[] = {{"coordinator", required_argument, NULL, 'c'},
                                       {"token", required_argument, NULL, 't'},
                                       {"peer-token", required_argument, NULL, 'p'},
                                       {"token-file", required_argument, NULL, 'T'},
                                       {"peer-token-file", required_argument, NULL, 'F'},
                                       {"ca-file", required_argument, NULL, 'a'},
                                       {"crl-file", required_argument, NULL, 'R'},
                                       {"cert-file", required_argument, NULL, 'e'},
                                       {"key-file", required_argument, NULL, 'k'},
                                       {"json", no_argument, NULL, 'j'},
                                       {"help", no_argument, NULL, 'h'},
                                       {"version", no_argument, NULL, 'V'},
                                       {"status", required_argument, NULL, 's'},
                                       {"older-than", required_argument, NULL, 'o'},
                                       {"commit", no_argument, NULL, 'C'},
                                       {"abort", no_argument, NULL, 'A'},
                                       {"shard", required_argument, NULL, 'S'},
                                       {"reason", required_argument, NULL, 'r'},
                                       {"operator", required_argument, NULL, 'O'},
                                       {"log-dir", required_argument, NULL, 'l'},
                                       {"malformed", no_argument, NULL, 'M'},
                                       {"participant", required_argument, NULL, 'P'},
                                       {NULL, 0, NULL, 0}};
    int c;

    opterr = 0;
    /* "-": every argument in order, options or not, whatever POSIXLY_CORRECT says */
    while ((c = getopt_long(argc, argv, "-:h", lo, NULL)) != -1) {
        switch (c) {
        case 1:
            if (o->nargs == MAX_ARGS)
                return usage("too many arguments");
            o->args[o->nargs++] = optarg;
            break;
        case 'c':
            if (!optarg[strspn(optarg, " \t,")])
                return usage("--coordinator needs a URL");
            if (add_targets(o->targets, optarg, "--coordinator") != 0)
                return EXIT_USAGE;
            break;
        case 't':
            o->token = optarg;
            break;
        case 'p':
            o->peer_token = optarg;
            break;
        case 'T':
            o->token_file = optarg;
            break;
        case 'F':
            o->peer_token_file = optarg;
            break;
        case 'a':
            o->ca_file = optarg;
            break;
        case 'R':
            o->crl_file = optarg;
            break;
        case 'e':
            o->cert_file = optarg;
            break;
        case 'k':
            o->key_file = optarg;
            break;
        case 'j':
            o->json = true;
            break;
        case 'h':
            fputs(usage_text, stdout);
            exit(0);
        case 'V':
            printf("dtxctl %s\n", DTX_VERSION);
            exit(0);
        case 's':
            o->status = optarg;
            o->given |= OPT_STATUS;
            break;
        case 'o':
            if ((o->older_ms = parse_duration(optarg)) < 0 || o->older_ms > OLDER_MAX_MS)
                return usage("--older-than: '%s' is not a duration (90s, 15m, 2h, 1d; at most "
                             "100 years)",
                             optarg);
            o->given |= OPT_OLDER;
            break;
        case 'C':
        case 'A':
            if (o->decision && strcmp(o->decision, c == 'C' ? "commit" : "abort") != 0)
                return usage("--commit and --abort exclude each other");
            o->decision = c == 'C' ? "commit" : "abort";
            o->given |= OPT_DECISION;
            break;
        case 'S':
            o->shard = optarg;
            o->given |= OPT_SHARD;
            break;
        case 'r':
            o->reason = optarg;
            o->given |= OPT_REASON;
            break;
        case 'O':
            if (!*optarg)
                return usage("--operator needs a name (without it, the OS user at this host)");
            snprintf(o->who, sizeof(o->who), "%s", optarg);
            o->given |= OPT_OPERATOR;
            break;
        case 'l':
            o->log_dir = optarg;
            o->given |= OPT_LOG_DIR;
            break;
        case 'M':
            o->malformed = true;
            o->given |= OPT_MALFORMED;
            break;
        case 'P':
            if (o->nparts == sizeof(o->parts) / sizeof(o->parts[0]))
                return usage("at most %zu --participant URLs", o->nparts);
            if (!url_ok(optarg))
                return usage("--participant: '%s' is not an http:// or https:// URL", optarg);
            o->parts[o->nparts++] = optarg;
            o->given |= OPT_PARTICIPANT;
            break;
        case ':':
            return usage("%s needs a value", argv[optind - 1]);
        default:
            return usage("unknown option '%s'", argv[optind - 1]);
        }
    }
    while (optind < argc) { /* after "--" */
        if (o->nargs == MAX_ARGS)
            return usage("too many arguments");
        o->args[o->nargs++] = argv[optind++];
    }
    return 0;
}

/*
 * One token: from --OPT or --OPT-file (which exclude each other), else from
 * the environment: env, or env2, which must agree when both are set. A file
 * is read as the daemons read theirs (auth.h). Returns 0 with *token (NULL:
 * none), or EXIT_USAGE after saying why.
 */
static int pick_token(const char **token, const char *file, struct auth_token *held,
                      const char *opt, const char *env, const char *env2)
{
    const char *e1 = getenv(env), *e2 = env2 ? getenv(env2) : NULL;
    struct dtx_err err;
    char what[64];

    dtx_err_clear(&err);
    if (*token && file)
        return usage("--%s and --%s-file exclude each other", opt, opt);
    snprintf(what, sizeof(what), "--%s-file", opt);
    if (file && auth_token_read_file(file, what, held, &err) < 0)
        return usage("%s", err.msg);
    if (file) {
        *token = held->value;
        return 0;
    }
    if (!*token && e1 && e2 && strcmp(e1, e2) != 0)
        return usage("$%s and $%s give two different tokens: set one", env, env2);
    snprintf(what, sizeof(what), *token ? "--%s" : "$%s", *token ? opt : e1 ? env : env2);
    if (!*token)
        *token = e1 ? e1 : e2;
    if (*token && auth_token_check(*token, strlen(*token), what, &err) < 0)
        return usage("%s", err.msg);
    return 0;
}

/*
 * --ca-file, --crl-file, --cert-file, --key-file: a file that cannot be
 * read is a usage error, said now.
 */
static int check_tls_files(const struct opts *o)
{
    const char *files[] = {o->ca_file, o->crl_file, o->cert_file, o->key_file};
    const char *names[] = {"ca-file", "crl-file", "cert-file", "key-file"};

    for (size_t i = 0; i < 4; i++) {
        if (files[i] && access(files[i], R_OK) != 0)
            return usage("--%s: could not read '%s': %s", names[i], files[i], strerror(errno));
    }
    if (!o->cert_file != !o->key_file)
        return usage("--cert-file and --key-file go together");
    return 0;
}

int main(int argc, char **argv)
{
    struct targets targets = {.n = 0};
    struct opts o = {.targets = &targets,
                     .ca_file = getenv("DTX_CA_FILE"),
                     .crl_file = getenv("DTX_CRL_FILE"),
                     .cert_file = getenv("DTX_CERT_FILE"),
                     .key_file = getenv("DTX_KEY_FILE"),
                     .older_ms = -1};
    const struct command *cmd = NULL;
    unsigned extra;
    int rc;

    xalloc_init();
    if (parse_opts(&o, argc, argv) != 0 || pick_coordinators(&o) != 0 ||
        pick_token(&o.token, o.token_file, &o.from_file, "token", "DTX_TOKEN", "DTX_ADMIN_TOKEN") !=
            0 ||
        pick_token(&o.peer_token, o.peer_token_file, &o.peer_from_file, "peer-token",
                   "DTX_PEER_TOKEN", NULL) != 0 ||
        check_tls_files(&o) != 0)
        return EXIT_USAGE;
    if (o.nargs == 0)
        return usage("no command given");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        if (strcmp(o.args[0], commands[i].name) == 0)
            cmd = &commands[i];
    }
    if (!cmd)
        return usage("unknown command '%s'", o.args[0]);
    if ((extra = o.given & ~cmd->opts))
        return usage("%s does not take %s", cmd->name, opt_name(extra & -extra));
    if (!(o.given & OPT_OPERATOR))
        default_operator(o.who, sizeof(o.who));
    argc = o.nargs;
    argv = o.args;
    if (!cmd->http)
        return cmd_log(&o, argc, argv);
    if (argc > 1 && strcmp(cmd->name, "show") != 0 && strcmp(cmd->name, "resolve") != 0 &&
        strcmp(cmd->name, "forget") != 0)
        return usage("%s: unexpected argument '%s'", cmd->name, argv[1]);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (o.targets->n > 1)
        rc = run_cluster(&o, cmd->name, argc, argv);
    else if (strcmp(cmd->name, "status") == 0)
        rc = cmd_status(&o);
    else if (strcmp(cmd->name, "list") == 0)
        rc = cmd_list(&o, argc, argv);
    else if (strcmp(cmd->name, "show") == 0)
        rc = cmd_show(&o, argc, argv);
    else if (strcmp(cmd->name, "in-doubt") == 0)
        rc = o.nparts ? cmd_in_doubt_direct(&o) : cmd_in_doubt(&o);
    else if (strcmp(cmd->name, "recover") == 0)
        rc = cmd_recover(&o);
    else
        rc = cmd_resolve(&o, argc, argv, strcmp(cmd->name, "forget") == 0);
    curl_global_cleanup();
    return rc;
}
