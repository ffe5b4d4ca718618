/*
 * failpoint.c - DTX_FAILPOINTS parsing and evaluation.
 *
 * State: the failpoint table below is process-wide test configuration,
 * written once by fp_init() from main() before any thread starts and only
 * read afterwards; the hit counters are atomic, because the decision log's
 * writer thread evaluates failpoints too.
 */
#include "dtx/failpoint.h"
#include "dtx/xalloc.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FP_MAX 16

enum fp_action { FP_CRASH, FP_SLEEP, FP_ERROR };

struct failpoint {
    char name[64];
    enum fp_action action;
    int arg; /* sleep ms, or errno */
    int nth; /* 0: every hit (crash: the first) */
    atomic_int hits;
};

static struct failpoint fp_table[FP_MAX];
static int fp_count;
static void (*fp_crash_hook)(void *);
static void *fp_crash_arg;

static int parse_action(struct failpoint *fp, const char *a)
{
    if (strcmp(a, "crash") == 0) {
        fp->action = FP_CRASH;
    } else if (sscanf(a, "sleep(%d)", &fp->arg) == 1 && fp->arg >= 0) {
        fp->action = FP_SLEEP;
    } else if (strcmp(a, "error") == 0 || strcmp(a, "error(EIO)") == 0) {
        fp->action = FP_ERROR;
        fp->arg = EIO;
    } else if (strcmp(a, "error(ENOSPC)") == 0) {
        fp->action = FP_ERROR;
        fp->arg = ENOSPC;
    } else {
        return -1;
    }
    return 0;
}

static int parse_one(char *item)
{
    struct failpoint *fp = &fp_table[fp_count];
    char *eq = strchr(item, '=');
    char *at;

    if (!eq || fp_count == FP_MAX || (size_t)(eq - item) >= sizeof(fp->name))
        return -1;
    *eq = '\0';
    snprintf(fp->name, sizeof(fp->name), "%s", item);
    at = strchr(eq + 1, '@');
    if (at) {
        *at = '\0';
        fp->nth = atoi(at + 1);
        if (fp->nth < 1)
            return -1;
    }
    if (parse_action(fp, eq + 1) < 0)
        return -1;
    atomic_init(&fp->hits, 0);
    fp_count++;
    return 0;
}

int fp_init(void)
{
    const char *env = getenv("DTX_FAILPOINTS");
    char *copy, *item, *save = NULL;
    int rc = 0;

    fp_count = 0;
    if (!env || !*env)
        return 0;
    copy = xstrdup(env);
    for (item = strtok_r(copy, ",", &save); item && rc == 0; item = strtok_r(NULL, ",", &save))
        rc = parse_one(item);
    free(copy);
    if (rc < 0)
        fprintf(stderr,
                "DTX_FAILPOINTS: cannot parse '%s' (want "
                "name=crash|sleep(MS)|error[(ENOSPC)][@N],...)\n",
                env);
    else
        fprintf(stderr, "DTX_FAILPOINTS: %d failpoint(s) armed: %s\n", fp_count, env);
    return rc;
}

void fp_set_crash_hook(void (*hook)(void *arg), void *arg)
{
    fp_crash_hook = hook;
    fp_crash_arg = arg;
}

int fp_hit(const char *name)
{
    for (int i = 0; i < fp_count; i++) {
        struct failpoint *fp = &fp_table[i];
        int n;

        if (strcmp(fp->name, name) != 0)
            continue;
        n = atomic_fetch_add(&fp->hits, 1) + 1;
        if (fp->nth ? n != fp->nth : (fp->action == FP_CRASH && n != 1))
            return 0;
        switch (fp->action) {
        case FP_CRASH:
            fprintf(stderr, "failpoint %s: crash\n", name);
            if (fp_crash_hook)
                fp_crash_hook(fp_crash_arg);
            _exit(137);
        case FP_SLEEP:
            fprintf(stderr, "failpoint %s: sleep %d ms\n", name, fp->arg);
            usleep((useconds_t)fp->arg * 1000u);
            return 0;
        case FP_ERROR:
            fprintf(stderr, "failpoint %s: error %s\n", name, strerror(fp->arg));
            return fp->arg;
        }
    }
    return 0;
}
