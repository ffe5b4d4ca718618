/*
 * sqlcheck.h - what a client's SQL statement may be, decided before it runs.
 *
 * A branch is one PostgreSQL transaction that dtx begins, prepares and
 * finishes itself, on a pooled connection. A statement that ends or
 * prepares a transaction, or changes the session for whoever uses the
 * connection next, would break that, so it is refused with a 400 before
 * anything runs (the participant checks again). Everything else is left to
 * PostgreSQL, whose error comes back as sql_error.
 *
 * Refused (first keyword, after whitespace and comments): BEGIN, START,
 * COMMIT, END, ABORT, ROLLBACK (but ROLLBACK TO is allowed), PREPARE,
 * DEALLOCATE, DISCARD, RESET, LISTEN, UNLISTEN, LOAD, COPY, VACUUM, and SET
 * unless it is SET LOCAL, SET TRANSACTION or SET CONSTRAINTS.
 */
#ifndef DTX_SQLCHECK_H
#define DTX_SQLCHECK_H

#include <stdbool.h>

#include "dtx/err.h"

/*
 * Checks one statement. Returns 0 and sets *reads_only to true when the
 * statement starts with SELECT, VALUES, TABLE or SHOW (a hint: whether the
 * branch wrote is decided from its transaction id after it ran). Returns
 * DTX_EINVAL with a message for an empty or refused statement; *reads_only
 * is then untouched.
 */
int sqlcheck(const char *sql, bool *reads_only, struct dtx_err *err);

#endif
