/*
 * rm_pg_setup.c - preparing a shard's database before the agent serves
 * it: connect (waiting up to startup_wait_s for PostgreSQL to come up),
 * check the server (version, max_prepared_transactions, durability:
 * fsync off is refused, synchronous_commit off warned about), install the
 * agent's schema (sql/, embedded at build time), and make sure this
 * database belongs to this shard (table dtx.agent).
 *
 * Blocking: it runs once, before the event loop.
 */
#include "rm_pg_impl.h"

#include "dtx/ev.h"
#include "dtx/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The files in sql/, embedded at build time (build/<variant>/gen/schema_sql.c). */
extern const char rm_pg_schema_sql[];

/*
 * Connects for the set-up, whose statements (installing the schema) must not
 * be cut short by a server's, database's or role's statement_timeout (pgx's
 * connections start at 0 the same way).
 */
static PGconn *setup_connect(const char *conninfo, unsigned wait_s, struct dtx_err *err)
{
    uint64_t until = ev_clock_us() + (uint64_t)wait_s * 1000000u;
    PGconn *c;

    for (;;) {
        c = PQconnectdb(conninfo);
        if (PQstatus(c) == CONNECTION_OK) {
            PGresult *res = PQexec(c, "SET statement_timeout = 0");
            bool ok = PQresultStatus(res) == PGRES_COMMAND_OK;

            PQclear(res);
            if (ok)
                return c;
        }
        if (ev_clock_us() >= until)
            break;
        PQfinish(c);
        usleep(200000);
    }
    dtx_err_set(err, DTX_EUNAVAIL, "could not connect to PostgreSQL: %s", PQerrorMessage(c));
    PQfinish(c);
    return NULL;
}

static int setup_exec(PGconn *c, const char *sql, int nparams, const char *const *values,
                      PGresult **out, struct dtx_err *err)
{
    PGresult *res =
        nparams ? PQexecParams(c, sql, nparams, NULL, values, NULL, NULL, 0) : PQexec(c, sql);
    ExecStatusType st = PQresultStatus(res);

    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
        dtx_err_set(err, DTX_EINVAL, "could not prepare the database: %s",
                    PQresultErrorMessage(res));
        PQclear(res);
        return DTX_EINVAL;
    }
    if (out)
        *out = res;
    else
        PQclear(res);
    return 0;
}

/*
 * A prepared branch, or a COMMIT PREPARED acknowledged, must survive a crash
 * of the server: with fsync off a power failure can lose both (refused
 * unless allowed, for tests), with synchronous_commit off a crash can lose
 * an acknowledged COMMIT PREPARED (warned).
 */
static int setup_durability(PGconn *c, const struct rm_pg_opts *o, struct dtx_err *err)
{
    PGresult *res = NULL;
    int rc = setup_exec(c, "SELECT current_setting('fsync'), current_setting('synchronous_commit')",
                        0, NULL, &res, err);

    if (rc < 0)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 0), "off") == 0 && !o->allow_fsync_off) {
        PQclear(res);
        return dtx_err_set(err, DTX_EINVAL,
                           "PostgreSQL (database '%s') runs with fsync = off: a crash of its "
                           "machine can lose prepared branches and committed ones, and dtx "
                           "could not keep its promise; set fsync = on (or, for a throwaway test "
                           "database only, allow_fsync_off in the participant's config)",
                           PQdb(c));
    }
    if (strcmp(PQgetvalue(res, 0, 0), "off") == 0)
        log_warn("PostgreSQL (database '%s') runs with fsync = off, allowed by allow_fsync_off: "
                 "a machine crash can lose prepared and committed branches: for tests only",
                 PQdb(c));
    if (strcmp(PQgetvalue(res, 0, 1), "off") == 0)
        log_warn("PostgreSQL (database '%s') runs with synchronous_commit = off: a crash of the "
                 "server can lose a COMMIT PREPARED it acknowledged, and a branch reported "
                 "committed may come back prepared or be lost; set synchronous_commit = on",
                 PQdb(c));
    PQclear(res);
    return 0;
}

static int setup_check(PGconn *c, const struct rm_pg_opts *o, struct dtx_err *err)
{
    const char *shard = o->shard;
    const char *values[1] = {shard};
    PGresult *res = NULL;
    int rc;

    if (PQserverVersion(c) < 130000)
        return dtx_err_set(err, DTX_EINVAL,
                           "PostgreSQL %d is too old: dtx needs 13 or later (pg_xact_status)",
                           PQserverVersion(c));
    rc = setup_exec(c, "SELECT current_setting('max_prepared_transactions')::int", 0, NULL, &res,
                    err);
    if (rc < 0)
        return rc;
    if (atoi(PQgetvalue(res, 0, 0)) == 0) {
        PQclear(res);
        return dtx_err_set(err, DTX_EINVAL,
                           "PostgreSQL (database '%s') has max_prepared_transactions = 0, so it "
                           "cannot prepare transactions; set max_prepared_transactions (at least "
                           "max_connections) in postgresql.conf and restart PostgreSQL",
                           PQdb(c));
    }
    PQclear(res);
    rc = setup_durability(c, o, err);
    /* the schema's "already exists, skipping" notices at every start are not news */
    if (rc == 0)
        rc = setup_exec(c, "SET client_min_messages = warning", 0, NULL, NULL, err);
    if (rc == 0)
        rc = setup_exec(c, rm_pg_schema_sql, 0, NULL, NULL, err);
    if (rc == 0)
        rc = setup_exec(c, "INSERT INTO dtx.agent (shard) VALUES ($1) ON CONFLICT DO NOTHING", 1,
                        values, NULL, err);
    if (rc == 0)
        rc = setup_exec(c, "SELECT shard FROM dtx.agent", 0, NULL, &res, err);
    if (rc < 0)
        return rc;
    if (strcmp(PQgetvalue(res, 0, 0), shard) != 0) {
        rc = dtx_err_set(err, DTX_EINVAL,
                         "database '%s' belongs to shard '%s' (table dtx.agent), not '%s': is "
                         "conninfo pointing at the wrong database?",
                         PQdb(c), PQgetvalue(res, 0, 0), shard);
    }
    PQclear(res);
    return rc;
}

int rm_pg_setup(const struct rm_pg_opts *o, int *server_version, struct dtx_err *err)
{
    PGconn *c = setup_connect(o->conninfo, o->wait_s, err);
    struct pgx_notices notices = {0};
    int rc;

    if (!c)
        return DTX_EUNAVAIL;
    pgx_log_notices(c, &notices);
    *server_version = PQserverVersion(c);
    rc = setup_check(c, o, err);
    PQfinish(c);
    return rc;
}
