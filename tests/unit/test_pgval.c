/*
 * test_pgval.c - PostgreSQL's answers as dtx says them (pgval.c): values
 * as JSON (numbers never rounded), a statement's result, and errors by
 * SQLSTATE. Results are built client-side with libpq's own
 * PQmakeEmptyPGresult/PQsetResultAttrs/PQsetvalue: no server needed.
 */
#include "dtx/jsonx.h"
#include "dtx/pgval.h"
#include "unit.h"

#include <string.h>

enum {
    BOOL = 16,
    INT8 = 20,
    INT2 = 21,
    INT4 = 23,
    TEXT = 25,
    JSON = 114,
    FLOAT8 = 701,
    NUMERIC = 1700,
    JSONB = 3802
};

/* A one-row result with one column per (type, value); value NULL is SQL NULL. */
static PGresult *row(int n, const Oid *types, const char *const *values)
{
    PGresult *res = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    PGresAttDesc cols[8];
    char names[8][16];

    CU_ASSERT_FATAL(res != NULL && n <= 8);
    for (int i = 0; i < n; i++) {
        snprintf(names[i], sizeof(names[i]), "c%d", i);
        cols[i] = (PGresAttDesc){
            .name = names[i], .typid = types[i], .typlen = -1, .atttypmod = -1, .format = 0};
    }
    CU_ASSERT_FATAL(PQsetResultAttrs(res, n, cols));
    for (int i = 0; i < n; i++)
        CU_ASSERT_FATAL(
            PQsetvalue(res, 0, i, (char *)values[i], values[i] ? (int)strlen(values[i]) : -1));
    return res;
}

/* The JSON text of the value in column 0 of a one-column row of type t. */
static char *as_json(Oid t, const char *v)
{
    PGresult *res = row(1, &t, &v);
    cJSON *j = pgval_json(res, 0, 0);
    char *s = jsonx_print(j);

    cJSON_Delete(j);
    PQclear(res);
    return s;
}

static void check(Oid t, const char *v, const char *want)
{
    char *got = as_json(t, v);

    if (strcmp(got, want) != 0)
        fprintf(stderr, "\n  type %u value %s: got %s, want %s\n", t, v ? v : "NULL", got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
    free(got);
}

static void integers_keep_every_digit_and_big_ones_become_strings(void)
{
    check(INT4, "2147483647", "2147483647");
    check(INT2, "-7", "-7");
    check(INT8, "9007199254740991", "9007199254740991");
    check(INT8, "9007199254740993", "\"9007199254740993\""); /* a double would round it */
    check(INT8, "-9223372036854775808", "\"-9223372036854775808\"");
}

static void floats_are_printed_as_postgresql_printed_them(void)
{
    check(FLOAT8, "0.1", "0.1");
    check(FLOAT8, "1e+300", "1e+300");
    check(FLOAT8, "NaN", "\"NaN\"");
    check(FLOAT8, "-Infinity", "\"-Infinity\"");
}

static void numeric_text_and_null_keep_their_meaning(void)
{
    check(NUMERIC, "12345678901234567890.000001", "\"12345678901234567890.000001\"");
    check(TEXT, "say \"hi\"", "\"say \\\"hi\\\"\"");
    check(BOOL, "t", "true");
    check(BOOL, "f", "false");
    check(TEXT, NULL, "null");
}

static void json_values_are_embedded_and_bad_json_stays_a_string(void)
{
    check(JSON, "{\"a\":[1,2]}", "{\"a\":[1,2]}");
    check(JSONB, "[true, null]", "[true, null]"); /* PostgreSQL's text, as it printed it */
    check(JSONB, "{\"n\": 9007199254740993, \"huge\": 1e400}",
          "{\"n\": 9007199254740993, \"huge\": 1e400}");
    check(JSON, "{broken", "\"{broken\"");
}

static void a_result_lists_columns_rows_and_what_it_affected(void)
{
    static const Oid types[2] = {INT4, TEXT};
    static const char *const values[2] = {"7", "seven"};
    PGresult *res = row(2, types, values);
    struct buf out = BUF_INIT;
    int64_t affected = -1;

    pgval_result(res, &affected, &out);
    CU_ASSERT_EQUAL(affected, 1); /* a SELECT affects what it returned */
    CU_ASSERT_STRING_EQUAL(buf_head(&out),
                           "\n{\"columns\":[\"c0\",\"c1\"],\"rows\":[[7,\"seven\"]],"
                           "\"rows_affected\":0}");
    buf_release(&out);
    PQclear(res);
}

static void a_result_written_row_by_row_is_the_same_and_can_be_taken_back(void)
{
    static const Oid types[2] = {INT4, TEXT};
    static const char *const one[2] = {"7", "seven"}, *const two[2] = {"8", "eight"};
    PGresult *r1 = row(2, types, one), *r2 = row(2, types, two);
    PGresult *last = PQmakeEmptyPGresult(NULL, PGRES_TUPLES_OK);
    struct pgval_rows w = {0, 0, false};
    struct buf out = BUF_INIT;
    int64_t affected = -1;

    buf_puts(&out, "\nnull"); /* an earlier op's */
    CU_ASSERT_FATAL(last != NULL);
    PQsetResultAttrs(last, 0, NULL);
    pgval_rows_add(&w, r1, &out);
    pgval_rows_add(&w, r2, &out);
    pgval_rows_end(&w, last, &affected, &out);
    CU_ASSERT_EQUAL(affected, 2);
    CU_ASSERT_STRING_EQUAL(buf_head(&out), "\nnull\n{\"columns\":[\"c0\",\"c1\"],\"rows\":[[7,"
                                           "\"seven\"],[8,\"eight\"]],\"rows_affected\":0}");
    /* a statement that fails half-way: what was written of it is taken back */
    pgval_rows_add(&w, r1, &out);
    pgval_rows_drop(&w, &out);
    CU_ASSERT_EQUAL(strlen(buf_head(&out)), out.len);
    CU_ASSERT_STRING_EQUAL(buf_head(&out) + out.len - 18, "\"rows_affected\":0}");
    buf_release(&out);
    PQclear(r1);
    PQclear(r2);
    PQclear(last);
}

static void errors_carry_postgresqls_message_and_sqlstate(void)
{
    struct pgval_diag d = {.sqlstate = "23505",
                           .primary = "duplicate key value violates unique constraint"};
    struct dtx_err err;

    dtx_err_clear(&err);
    pgval_diag_error(&d, "fallback", false, &err);
    CU_ASSERT_EQUAL(err.code, DTX_ESQL);
    CU_ASSERT_STRING_EQUAL(err.sqlstate, "23505");
    CU_ASSERT_STRING_EQUAL(err.msg, "duplicate key value violates unique constraint");

    d = (struct pgval_diag){0};
    dtx_err_clear(&err);
    pgval_diag_error(&d, "server closed the connection", false, &err);
    CU_ASSERT_STRING_EQUAL(err.msg, "server closed the connection");
    CU_ASSERT_STRING_EQUAL(err.sqlstate, "");
    CU_ASSERT_STRING_EQUAL(err.detail, "");
}

static void errors_carry_postgresqls_detail_hint_and_names(void)
{
    char long_detail[2000];
    struct pgval_diag d = {.sqlstate = "23505",
                           .primary = "duplicate key value violates unique constraint",
                           .detail = "Key (id)=(7) already exists.",
                           .hint = "Drop the row first.",
                           .constraint = "accounts_pkey",
                           .table = "accounts",
                           .column = "id"};
    struct dtx_err err;

    dtx_err_clear(&err);
    pgval_diag_error(&d, "fallback", false, &err);
    CU_ASSERT_STRING_EQUAL(err.detail, "Key (id)=(7) already exists.");
    CU_ASSERT_STRING_EQUAL(err.hint, "Drop the row first.");
    CU_ASSERT_STRING_EQUAL(err.constraint, "accounts_pkey");
    CU_ASSERT_STRING_EQUAL(err.table, "accounts");
    CU_ASSERT_STRING_EQUAL(err.column, "id");
    /* a detail longer than the field is cut, never overflows */
    memset(long_detail, 'k', sizeof(long_detail) - 1);
    long_detail[sizeof(long_detail) - 1] = '\0';
    d.detail = long_detail;
    dtx_err_clear(&err);
    pgval_diag_error(&d, "fallback", false, &err);
    CU_ASSERT_EQUAL(strlen(err.detail), sizeof(err.detail) - 1);
}

static void a_cancelled_statement_is_an_abort_or_a_timeout(void)
{
    struct pgval_diag d = {.sqlstate = "57014", .primary = "canceling statement"};
    struct dtx_err err;

    dtx_err_clear(&err);
    pgval_diag_error(&d, "", true, &err); /* dtx cancelled it */
    CU_ASSERT_EQUAL(err.code, DTX_EABORTED);
    dtx_err_clear(&err);
    pgval_diag_error(&d, "", false, &err); /* statement_timeout */
    CU_ASSERT_EQUAL(err.code, DTX_ETIMEDOUT);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(integers_keep_every_digit_and_big_ones_become_strings),
        UNIT_TEST(floats_are_printed_as_postgresql_printed_them),
        UNIT_TEST(numeric_text_and_null_keep_their_meaning),
        UNIT_TEST(json_values_are_embedded_and_bad_json_stays_a_string),
        UNIT_TEST(a_result_lists_columns_rows_and_what_it_affected),
        UNIT_TEST(a_result_written_row_by_row_is_the_same_and_can_be_taken_back),
        UNIT_TEST(errors_carry_postgresqls_message_and_sqlstate),
        UNIT_TEST(errors_carry_postgresqls_detail_hint_and_names),
        UNIT_TEST(a_cancelled_statement_is_an_abort_or_a_timeout),
    };

    return unit_run("pgval", tests, sizeof(tests) / sizeof(tests[0]));
}
