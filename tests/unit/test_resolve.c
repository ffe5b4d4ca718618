/*
 * test_resolve.c - host names looked up off the loop (resolve.c): an IP
 * address needs no lookup, a name is answered on the loop thread, never
 * from inside resolve_start, a name that does not resolve is an error
 * naming it, and a cancelled lookup or a freed resolver calls nobody.
 */
#include "dtx/resolve.h"
#include "unit.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <string.h>

struct answer {
    int calls;
    char addr[64];
    uint16_t port;
    char err[600];
};

static void on_answer(void *arg, const struct sockaddr *sa, socklen_t salen,
                      const struct dtx_err *err)
{
    struct answer *a = arg;

    (void)salen;
    a->calls++;
    if (err) {
        snprintf(a->err, sizeof(a->err), "%s", err->msg);
        return;
    }
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        inet_ntop(AF_INET, &in->sin_addr, a->addr, sizeof(a->addr));
        a->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, a->addr, sizeof(a->addr));
        a->port = ntohs(in6->sin6_port);
    }
}

/* Runs loop until a has been answered n times, at most 10 s. */
static void wait_answer_n(struct ev_loop *loop, const struct answer *a, int n)
{
    for (int i = 0; i < 1000 && a->calls < n; i++)
        ev_loop_once(loop, 10);
}

static void wait_answer(struct ev_loop *loop, const struct answer *a)
{
    wait_answer_n(loop, a, 1);
}

/* Threads of this process now (/proc/self/task). */
static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    struct dirent *e;
    int n = 0;

    if (!d)
        return -1;
    while ((e = readdir(d)))
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void an_ip_address_is_answered_on_the_loop_without_a_lookup(void)
{
    struct ev_loop loop;
    struct resolver *r = NULL;
    struct answer a;

    memset(&a, 0, sizeof(a));
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(resolver_new(&r, &loop, NULL) == 0);
    CU_ASSERT_PTR_NOT_NULL(resolve_start(r, "127.0.0.1", 7101, on_answer, &a));
    CU_ASSERT_EQUAL(a.calls, 0);              /* never from inside resolve_start */
    CU_ASSERT_EQUAL(resolver_threads(r), 0u); /* no lookup: no helper thread */
    wait_answer(&loop, &a);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_STRING_EQUAL(a.addr, "127.0.0.1");
    CU_ASSERT_EQUAL(a.port, 7101);
    resolve_start(r, "::1", 7102, on_answer, &a);
    CU_ASSERT_EQUAL(resolver_threads(r), 0u);
    wait_answer_n(&loop, &a, 2);
    CU_ASSERT_STRING_EQUAL(a.addr, "::1");
    CU_ASSERT_EQUAL(a.port, 7102);
    resolver_free(r);
    ev_loop_release(&loop);
}

static void a_name_is_looked_up_and_answered_with_the_port(void)
{
    struct ev_loop loop;
    struct resolver *r = NULL;
    struct answer a;

    memset(&a, 0, sizeof(a));
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(resolver_new(&r, &loop, NULL) == 0);
    resolve_start(r, "localhost", 7000, on_answer, &a);
    CU_ASSERT_EQUAL(a.calls, 0);
    wait_answer(&loop, &a);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_STRING_EQUAL(a.err, "");
    CU_ASSERT(strcmp(a.addr, "127.0.0.1") == 0 || strcmp(a.addr, "::1") == 0);
    CU_ASSERT_EQUAL(a.port, 7000);
    resolver_free(r);
    ev_loop_release(&loop);
}

static void a_name_that_does_not_resolve_is_an_error_naming_it(void)
{
    struct ev_loop loop;
    struct resolver *r = NULL;
    struct answer a;

    memset(&a, 0, sizeof(a));
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(resolver_new(&r, &loop, NULL) == 0);
    resolve_start(r, "no-such-host.invalid", 1, on_answer, &a);
    wait_answer(&loop, &a);
    CU_ASSERT_EQUAL(a.calls, 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "could not resolve host 'no-such-host.invalid'"));
    resolver_free(r);
    ev_loop_release(&loop);
}

static void a_cancelled_lookup_is_never_answered(void)
{
    struct ev_loop loop;
    struct resolver *r = NULL;
    struct answer a, b;
    struct resolve_req *q;

    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(resolver_new(&r, &loop, NULL) == 0);
    q = resolve_start(r, "localhost", 1, on_answer, &a);
    resolve_cancel(q);
    q = resolve_start(r, "127.0.0.1", 1, on_answer, &a);
    resolve_cancel(q);
    resolve_start(r, "localhost", 2, on_answer, &b);
    wait_answer(&loop, &b);
    for (int i = 0; i < 20; i++)
        ev_loop_once(&loop, 10);
    CU_ASSERT_EQUAL(a.calls, 0);
    CU_ASSERT_EQUAL(b.calls, 1);
    resolver_free(r);
    ev_loop_release(&loop);
}

static void a_freed_resolver_calls_nobody_and_its_threads_finish(void)
{
    struct ev_loop loop;
    struct resolver *r = NULL;
    struct answer a;

    int before = threads_now(), left = -1;

    memset(&a, 0, sizeof(a));
    CU_ASSERT_FATAL(before > 0);
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    CU_ASSERT_FATAL(resolver_new(&r, &loop, NULL) == 0);
    for (int i = 0; i < 2 * RESOLVE_THREADS; i++)
        resolve_start(r, "localhost", (uint16_t)i, on_answer, &a);
    CU_ASSERT(resolver_threads(r) <= RESOLVE_THREADS);
    resolver_free(r); /* lookups still running: their thread frees what is left */
    for (int i = 0; i < 500 && (left = threads_now()) != before; i++)
        ev_loop_once(&loop, 10);
    CU_ASSERT_EQUAL(left, before); /* every helper thread ended, within 5 s */
    CU_ASSERT_EQUAL(a.calls, 0);
    ev_loop_release(&loop);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(an_ip_address_is_answered_on_the_loop_without_a_lookup),
        UNIT_TEST(a_name_is_looked_up_and_answered_with_the_port),
        UNIT_TEST(a_name_that_does_not_resolve_is_an_error_naming_it),
        UNIT_TEST(a_cancelled_lookup_is_never_answered),
        UNIT_TEST(a_freed_resolver_calls_nobody_and_its_threads_finish),
    };

    return unit_run("resolve", tests, sizeof(tests) / sizeof(tests[0]));
}
