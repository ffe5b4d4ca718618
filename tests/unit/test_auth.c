/* test_auth.c - tokens: where they come from, the auth rules, and their comparison (auth.c). */
#include "dtx/auth.h"
#include "unit.h"

#include <fcntl.h>
#include <stdbool.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/dtx-test-auth-XXXXXX";

static const char *write_file(const char *name, const char *text, mode_t mode)
{
    static char path[256];
    int fd;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
    fchmod(fd, mode);
    close(fd);
    return path;
}

static bool matches(const struct auth_token *t, const char *s)
{
    return auth_token_matches(t, s, strlen(s));
}

static void only_the_same_token_matches(void)
{
    struct auth_token t;

    auth_token_set(&t, "s3cret-Token", "test");
    CU_ASSERT_TRUE(matches(&t, "s3cret-Token"));
    CU_ASSERT_FALSE(matches(&t, "s3cret-Toke"));   /* a prefix */
    CU_ASSERT_FALSE(matches(&t, "s3cret-Token2")); /* an extension */
    CU_ASSERT_FALSE(matches(&t, "s3cret-token"));  /* case */
    CU_ASSERT_FALSE(matches(&t, "X3cret-Token"));  /* the first byte */
    CU_ASSERT_FALSE(matches(&t, ""));
    CU_ASSERT_FALSE(auth_token_matches(&t, "s3cret-Token\0x", 14)); /* an embedded NUL */
}

static void the_comparison_uses_fixed_size_digests(void)
{
    struct auth_token a, b;

    /* what is compared is 32 bytes of SHA-256, whatever the token's length */
    CU_ASSERT_EQUAL(sizeof(a.digest), 32);
    auth_token_set(&a, "x", "test");
    auth_token_set(&b, "x", "test");
    CU_ASSERT_EQUAL(memcmp(a.digest, b.digest, sizeof(a.digest)), 0);
    /* SHA-256("abc"), FIPS 180-2's first example */
    auth_token_set(&a, "abc", "test");
    CU_ASSERT_EQUAL(a.digest[0], 0xba);
    CU_ASSERT_EQUAL(a.digest[1], 0x78);
    CU_ASSERT_EQUAL(a.digest[31], 0xad);
}

static void an_unset_token_matches_nothing(void)
{
    struct auth_token t;

    auth_token_set(&t, "", "");
    CU_ASSERT_FALSE(auth_token_is_set(&t));
    CU_ASSERT_FALSE(matches(&t, ""));
    CU_ASSERT_FALSE(matches(&t, "anything"));
}

static void a_token_is_visible_ascii_of_bounded_length(void)
{
    char long_token[AUTH_TOKEN_MAX + 1];

    CU_ASSERT_EQUAL(auth_token_check("abc-DEF_0.9~+/=", 15, "t", NULL), 0);
    CU_ASSERT_EQUAL(auth_token_check("", 0, "t", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(auth_token_check("a b", 3, "t", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(auth_token_check("a\r\nX-Evil: 1", 13, "t", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(auth_token_check("caf\xc3\xa9", 5, "t", NULL), DTX_EINVAL);
    memset(long_token, 'a', sizeof(long_token));
    CU_ASSERT_EQUAL(auth_token_check(long_token, AUTH_TOKEN_MAX - 1, "t", NULL), 0);
    CU_ASSERT_EQUAL(auth_token_check(long_token, AUTH_TOKEN_MAX, "t", NULL), DTX_EINVAL);
}

static void a_token_file_loses_one_trailing_newline(void)
{
    struct auth_token t;

    CU_ASSERT_EQUAL(auth_token_read_file(write_file("a", "tok\n", 0600), "f", &t, NULL), 0);
    CU_ASSERT_STRING_EQUAL(t.value, "tok");
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("b", "tok\r\n", 0640), "f", &t, NULL), 0);
    CU_ASSERT_STRING_EQUAL(t.value, "tok");
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("c", "tok", 0400), "f", &t, NULL), 0);
    CU_ASSERT_STRING_EQUAL(t.value, "tok");
    CU_ASSERT_TRUE(matches(&t, "tok"));
    /* only one: a second line is not part of a token */
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("d", "tok\n\n", 0600), "f", &t, NULL),
                    DTX_EINVAL);
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("e", "tok\nmore\n", 0600), "f", &t, NULL),
                    DTX_EINVAL);
}

static void bad_token_files_are_refused_and_say_why(void)
{
    struct auth_token t;
    struct dtx_err err;

    auth_token_set(&t, "kept", "test");
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("empty", "", 0600), "'k'", &t, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "is empty"));
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("nl", "\n", 0600), "'k'", &t, &err),
                    DTX_EINVAL);
    CU_ASSERT_EQUAL(auth_token_read_file(write_file("world", "tok\n", 0644), "'k'", &t, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "readable by every user (mode 0644)"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "/world'"));
    CU_ASSERT_EQUAL(auth_token_read_file("/nonexistent/token", "'k'", &t, &err), DTX_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "could not open '/nonexistent/token'"));
    CU_ASSERT_EQUAL(auth_token_read_file(dir, "'k'", &t, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "not a regular file"));
    CU_ASSERT_STRING_EQUAL(t.value, "kept"); /* untouched on error */
}

/* Loads {roles} from JSON text as a daemon would (listen on loopback unless given). */
static int load(const char *json, const char *listen, struct auth_token *client,
                struct auth_token *peer, struct dtx_err *err)
{
    const struct auth_role roles[] = {{"client", client}, {"peer", peer}};
    struct auth_policy policy;
    cJSON *auth = cJSON_Parse(json);
    int rc = auth_load(auth, roles, 2, NULL, dir, listen ? listen : "127.0.0.1:1", &policy, err);

    cJSON_Delete(auth);
    return rc;
}

static void tokens_come_from_a_key_a_file_or_the_environment(void)
{
    struct auth_token c, p;
    struct dtx_err err;

    write_file("peer.token", "from-file\n", 0600);
    dtx_err_clear(&err);
    unsetenv("DTX_CLIENT_TOKEN");
    unsetenv("DTX_PEER_TOKEN");
    /* a relative file is found beside the config */
    CU_ASSERT_EQUAL(
        load("{\"client_token\":\"c\",\"peer_token_file\":\"peer.token\"}", NULL, &c, &p, &err), 0);
    CU_ASSERT_STRING_EQUAL(p.value, "from-file");
    setenv("DTX_CLIENT_TOKEN", "from-env", 1);
    CU_ASSERT_EQUAL(load("{\"peer_token\":\"p\"}", NULL, &c, &p, &err), 0);
    CU_ASSERT_STRING_EQUAL(c.value, "from-env");
    /* the environment may repeat the config, not contradict it */
    CU_ASSERT_EQUAL(
        load("{\"client_token\":\"from-env\",\"peer_token\":\"p\"}", NULL, &c, &p, &err), 0);
    CU_ASSERT_EQUAL(load("{\"client_token\":\"other\",\"peer_token\":\"p\"}", NULL, &c, &p, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "DTX_CLIENT_TOKEN and 'auth.client_token'"));
    unsetenv("DTX_CLIENT_TOKEN");
    /* a key and its file exclude each other */
    CU_ASSERT_EQUAL(load("{\"client_token\":\"c\",\"peer_token\":\"p\","
                         "\"peer_token_file\":\"peer.token\"}",
                         NULL, &c, &p, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'auth.peer_token' and 'auth.peer_token_file'"));
}

static void auth_never_fails_open(void)
{
    struct auth_token c, p;
    struct dtx_err err;

    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(load("{\"client_token\":\"c\"}", NULL, &c, &p, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'auth.peer_token' is not set"));
    CU_ASSERT_EQUAL(load("{\"client_token\":\"x\",\"peer_token\":\"x\"}", NULL, &c, &p, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "are the same"));
    /* no token: loopback only, unless allowed */
    CU_ASSERT_EQUAL(load("{}", "[::1]:1", &c, &p, &err), 0);
    CU_ASSERT_EQUAL(load(NULL, "127.0.0.2:1", &c, &p, &err), 0);
    CU_ASSERT_EQUAL(load(NULL, "0.0.0.0:1", &c, &p, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'auth.allow_unauthenticated'"));
    CU_ASSERT_EQUAL(load("{\"allow_unauthenticated\":true}", "0.0.0.0:1", &c, &p, &err), 0);
    CU_ASSERT_EQUAL(load("{\"allow_unauthenticated\":true,\"client_token\":\"c\","
                         "\"peer_token\":\"p\"}",
                         NULL, &c, &p, &err),
                    DTX_EINVAL);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(only_the_same_token_matches),
        UNIT_TEST(the_comparison_uses_fixed_size_digests),
        UNIT_TEST(an_unset_token_matches_nothing),
        UNIT_TEST(a_token_is_visible_ascii_of_bounded_length),
        UNIT_TEST(a_token_file_loses_one_trailing_newline),
        UNIT_TEST(bad_token_files_are_refused_and_say_why),
        UNIT_TEST(tokens_come_from_a_key_a_file_or_the_environment),
        UNIT_TEST(auth_never_fails_open),
    };
    char rm[128];
    int rc;

    if (!mkdtemp(dir))
        return 2;
    rc = unit_run("auth", tests, sizeof(tests) / sizeof(tests[0]));
    snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
    if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return rc;
}
