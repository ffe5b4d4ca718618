/*
 * status.c - the status and decision tables (status.h). Stateless.
 */
#include "dtx/status.h"

#include <stdio.h>
#include <string.h>

static const char *const status_names[DTX_NSTATUS] = {
    [DTX_ST_ACTIVE] = "active",
    [DTX_ST_PREPARING] = "preparing",
    [DTX_ST_PRECOMMITTED] = "precommitted",
    [DTX_ST_COMMITTING] = "committing",
    [DTX_ST_COMMITTED] = "committed",
    [DTX_ST_ABORTING] = "aborting",
    [DTX_ST_ABORTED] = "aborted",
    [DTX_ST_UNKNOWN] = "unknown",
};

static const char *const decision_names[DTX_NDECISIONS] = {
    [DTX_DEC_IN_FLIGHT] = "in_flight",
    [DTX_DEC_COMMIT] = "commit",
    [DTX_DEC_ABORT] = "abort",
    [DTX_DEC_UNKNOWN] = "unknown",
};

static int lookup(const char *const *names, int n, const char *name)
{
    for (int i = 0; name && i < n; i++) {
        if (strcmp(names[i], name) == 0)
            return i;
    }
    return -1;
}

const char *dtx_status_name(enum dtx_status s)
{
    return (unsigned)s < DTX_NSTATUS ? status_names[s] : "?";
}

int dtx_status_parse(const char *name)
{
    return lookup(status_names, DTX_NSTATUS, name);
}

void dtx_status_list(char *buf, size_t n)
{
    size_t used = 0;

    if (n)
        buf[0] = '\0';
    for (int i = 0; i < DTX_NSTATUS && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", status_names[i]);
}

const char *dtx_decision_name(enum dtx_decision d)
{
    return (unsigned)d < DTX_NDECISIONS ? decision_names[d] : "?";
}

int dtx_decision_parse(const char *name)
{
    return lookup(decision_names, DTX_NDECISIONS, name);
}
