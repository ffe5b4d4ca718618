/*
 * rm_pg_setup.c - preparing a shard's database before the agent serves
 * it: connect (waiting up to startup_wait_s for PostgreSQL to come up),
 * check the server (version, max_prepared_transactions), install the
 * agent's schema (sql/, embedded at build time), and make sure this
 * database belongs to this shard (table dtx.agent).
 *
 * Blocking: it runs once, before the event loop.
 */
#include "rm_pg_impl.h"

#include "dtx/ev.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The files in sql/, embedded at build time (build/<variant>/gen/schema_sql.c). */
extern const char rm_pg_schema_sql[];

static PGconn *setup_connect(const char *conninfo, unsigned wait_s, struct dtx_err *err)
{
    uint64_t until = ev_clock_us() + (uint64_t)wait_s * 1000000u;
    PGconn *c;

    for (;;) {
        c = PQconnectdb(conninfo);
        if (PQstatus(c) == CONNECTION_OK)
            return c;
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

static int setup_check(PGconn *c, const char *shard, struct dtx_err *err)
{
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

int rm_pg_setup(const char *conninfo, const char *shard, unsigned wait_s, struct dtx_err *err)
{
    PGconn *c = setup_connect(conninfo, wait_s, err);
    int rc;

    if (!c)
        return DTX_EUNAVAIL;
    rc = setup_check(c, shard, err);
    PQfinish(c);
    return rc;
}
