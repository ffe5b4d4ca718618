/*
 * unit.h - shared helpers for the CUnit suites in tests/unit: one suite per
 * module, each test named as a sentence.
 */
#ifndef DTX_TEST_UNIT_H
#define DTX_TEST_UNIT_H

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>
#include <stdio.h>
#include <stdlib.h>

#include "dtx/log.h"

struct unit_test {
    const char *name;
    void (*fn)(void);
};

#define UNIT_TEST(fn)                                                                              \
    {                                                                                              \
#fn, fn                                                                                    \
    }

/* Runs one suite of tests; returns the process exit status (0: all passed). */
static inline int unit_run(const char *suite, const struct unit_test *tests, size_t n)
{
    CU_pSuite s;
    unsigned failures;

    log_init("unit", LOG_ERROR); /* refusals the tests provoke on purpose are logged as warnings */
    if (CU_initialize_registry() != CUE_SUCCESS)
        return 2;
    s = CU_add_suite(suite, NULL, NULL);
    for (size_t i = 0; s && i < n; i++)
        CU_add_test(s, tests[i].name, tests[i].fn);
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    failures = CU_get_number_of_failures() + CU_get_number_of_tests_failed();
    CU_cleanup_registry();
    return failures ? 1 : 0;
}

#endif
