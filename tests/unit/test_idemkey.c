/* test_idemkey.c - a client's idempotency keys and the client in log records (idemkey.c). */
#include "dtx/idemkey.h"
#include "unit.h"

#include <stdlib.h>
#include <string.h>

static void check_split(const char *field, const char *want_client, const char *want_key)
{
    char *client;
    const char *key;

    idemkey_split(field, &client, &key);
    if (want_client) {
        CU_ASSERT_STRING_EQUAL(client ? client : "(null)", want_client);
    } else {
        CU_ASSERT_PTR_NULL(client);
    }
    if (want_key) {
        CU_ASSERT_STRING_EQUAL(key ? key : "(null)", want_key);
    } else {
        CU_ASSERT_PTR_NULL(key);
    }
    free(client);
}

static void the_shared_client_keeps_its_keys_as_they_are(void)
{
    char *f = idemkey_compose("", "k1");

    CU_ASSERT_STRING_EQUAL(f, "k1"); /* as in records written before named clients */
    check_split(f, NULL, "k1");
    CU_ASSERT_STRING_EQUAL(idemkey_shown(f), "k1");
    free(f);
    CU_ASSERT_PTR_NULL(idemkey_compose(NULL, NULL));
    CU_ASSERT_PTR_NULL(idemkey_compose("", NULL));
    check_split(NULL, NULL, NULL);
    check_split("", NULL, NULL);
}

static void a_named_client_s_key_is_in_its_own_namespace(void)
{
    char *a = idemkey_compose("orders", "k1"), *b = idemkey_compose("billing", "k1");
    char *shared = idemkey_compose("", "k1");

    CU_ASSERT_STRING_NOT_EQUAL(a, b);
    CU_ASSERT_STRING_NOT_EQUAL(a, shared);
    check_split(a, "orders", "k1");
    check_split(b, "billing", "k1");
    CU_ASSERT_STRING_EQUAL(idemkey_shown(a), "k1");
    free(a);
    free(b);
    free(shared);
}

static void a_named_client_without_a_key_is_still_named(void)
{
    char *f = idemkey_compose("orders", NULL);

    CU_ASSERT_PTR_NOT_NULL(f);
    check_split(f, "orders", NULL);
    CU_ASSERT_PTR_NULL(idemkey_shown(f));
    free(f);
}

static void a_key_that_only_looks_like_a_slot_is_a_shared_key(void)
{
    /* api.c refuses control characters in keys; a field without its closing separator is
     * no slot: taken as the shared client's key, as written */
    check_split("\x1forders", NULL, "\x1forders");
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(the_shared_client_keeps_its_keys_as_they_are),
        UNIT_TEST(a_named_client_s_key_is_in_its_own_namespace),
        UNIT_TEST(a_named_client_without_a_key_is_still_named),
        UNIT_TEST(a_key_that_only_looks_like_a_slot_is_a_shared_key),
    };

    return unit_run("idemkey", tests, sizeof(tests) / sizeof(tests[0]));
}
