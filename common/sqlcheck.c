/*
 * sqlcheck.c - first-keyword classification of a client's SQL statement.
 * Stateless.
 */
#include "dtx/sqlcheck.h"

#include <ctype.h>
#include <string.h>
#include <strings.h>

/* Skips whitespace, "-- ..." line comments and nested C-style comments. */
static const char *skip_space(const char *p)
{
    for (;;) {
        while (isspace((unsigned char)*p))
            p++;
        if (p[0] == '-' && p[1] == '-') {
            while (*p && *p != '\n')
                p++;
        } else if (p[0] == '/' && p[1] == '*') {
            int depth = 1;

            p += 2;
            while (*p && depth > 0) {
                if (p[0] == '/' && p[1] == '*') {
                    depth++;
                    p += 2;
                } else if (p[0] == '*' && p[1] == '/') {
                    depth--;
                    p += 2;
                } else {
                    p++;
                }
            }
        } else {
            return p;
        }
    }
}

/* Copies the keyword at p (letters and '_') into kw, upper-cased; returns the end. */
static const char *keyword(const char *p, char *kw, size_t kwsz)
{
    size_t n = 0;

    while (isalpha((unsigned char)*p) || *p == '_') {
        if (n + 1 < kwsz)
            kw[n++] = (char)toupper((unsigned char)*p);
        p++;
    }
    kw[n] = '\0';
    return p;
}

static bool one_of(const char *kw, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(kw, *list) == 0)
            return true;
    }
    return false;
}

int sqlcheck(const char *sql, bool *reads_only, struct dtx_err *err)
{
    static const char *const refused[] = {"BEGIN",    "START",      "COMMIT",  "END",    "ABORT",
                                          "PREPARE",  "DEALLOCATE", "DISCARD", "RESET",  "LISTEN",
                                          "UNLISTEN", "LOAD",       "COPY",    "VACUUM", NULL};
    static const char *const reading[] = {"SELECT", "VALUES", "TABLE", "SHOW", NULL};
    static const char *const set_ok[] = {"LOCAL", "TRANSACTION", "CONSTRAINTS", NULL};
    char kw[32], kw2[32];
    const char *p = skip_space(sql);

    if (*p == '\0')
        return dtx_err_set(err, DTX_EINVAL, "sql is empty");
    p = keyword(p, kw, sizeof(kw));
    keyword(skip_space(p), kw2, sizeof(kw2));
    if (one_of(kw, refused))
        return dtx_err_set(err, DTX_EINVAL,
                           "statement %s is not allowed in a dtx branch: dtx begins, prepares "
                           "and ends each branch's transaction itself",
                           kw);
    if (strcmp(kw, "ROLLBACK") == 0 && strcmp(kw2, "TO") != 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "statement ROLLBACK is not allowed in a dtx branch (ROLLBACK TO "
                           "SAVEPOINT is); to abort, call the abort endpoint");
    if (strcmp(kw, "SET") == 0 && !one_of(kw2, set_ok))
        return dtx_err_set(err, DTX_EINVAL,
                           "session-level SET is not allowed in a dtx branch: use SET LOCAL, "
                           "which lasts until the branch ends");
    *reads_only = one_of(kw, reading);
    return 0;
}
