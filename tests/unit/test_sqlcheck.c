/* test_sqlcheck.c - which client statements a branch refuses (sqlcheck.c). */
#include "dtx/sqlcheck.h"
#include "unit.h"

static int check(const char *sql, bool *reads)
{
    bool r = false;
    int rc = sqlcheck(sql, &r, NULL);

    if (reads)
        *reads = r;
    return rc;
}

static void ordinary_statements_are_allowed(void)
{
    bool reads;

    CU_ASSERT_EQUAL(check("UPDATE a SET b = 1", &reads), 0);
    CU_ASSERT_FALSE(reads);
    CU_ASSERT_EQUAL(check("  select * from a", &reads), 0);
    CU_ASSERT_TRUE(reads);
    CU_ASSERT_EQUAL(check("WITH x AS (DELETE FROM a RETURNING *) SELECT * FROM x", &reads), 0);
    CU_ASSERT_FALSE(reads); /* a WITH may write: treated as writing */
    CU_ASSERT_EQUAL(check("INSERT INTO a VALUES (1)", NULL), 0);
    CU_ASSERT_EQUAL(check("SAVEPOINT s1", NULL), 0);
    CU_ASSERT_EQUAL(check("ROLLBACK TO SAVEPOINT s1", NULL), 0);
    CU_ASSERT_EQUAL(check("SET LOCAL lock_timeout = '1s'", NULL), 0);
    CU_ASSERT_EQUAL(check("set transaction isolation level serializable", NULL), 0);
}

static void transaction_control_is_refused(void)
{
    static const char *const bad[] = {"COMMIT",
                                      "commit;",
                                      "END",
                                      "BEGIN",
                                      "start transaction",
                                      "ABORT",
                                      "ROLLBACK",
                                      "rollback work",
                                      "PREPARE TRANSACTION 'x'",
                                      "COMMIT PREPARED 'x'",
                                      "-- c\n/* c /* nested */ */ COMMIT",
                                      NULL};

    for (int i = 0; bad[i]; i++)
        CU_ASSERT_EQUAL(check(bad[i], NULL), DTX_EINVAL);
}

static void session_state_changes_are_refused(void)
{
    static const char *const bad[] = {"SET search_path = x",
                                      "set session role x",
                                      "RESET ALL",
                                      "DISCARD ALL",
                                      "LISTEN ch",
                                      "UNLISTEN *",
                                      "DEALLOCATE ALL",
                                      "LOAD 'x'",
                                      "COPY a FROM STDIN",
                                      "VACUUM a",
                                      NULL};

    for (int i = 0; bad[i]; i++)
        CU_ASSERT_EQUAL(check(bad[i], NULL), DTX_EINVAL);
}

static void empty_statements_are_refused(void)
{
    CU_ASSERT_EQUAL(check("", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(check("   \n\t ", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(check("/* only a comment */", NULL), DTX_EINVAL);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(ordinary_statements_are_allowed),
        UNIT_TEST(transaction_control_is_refused),
        UNIT_TEST(session_state_changes_are_refused),
        UNIT_TEST(empty_statements_are_refused),
    };

    return unit_run("sqlcheck", tests, sizeof(tests) / sizeof(tests[0]));
}
