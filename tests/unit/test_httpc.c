/*
 * test_httpc.c - the asynchronous HTTP client (httpc.c) against a scripted
 * server on a loopback socket: chunked bodies are decoded, hostile chunk
 * sizes are refused, and a callback may free its client.
 */
#include "dtx/httpc.h"
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct answer {
    bool done;
    int rc;
    int status;
    char body[256];
    char err[600];
    struct httpc *free_me; /* freed inside the callback when set */
};

static void on_answer(void *arg, int rc, const struct httpc_resp *resp, const struct dtx_err *err)
{
    struct answer *a = arg;

    a->done = true;
    a->rc = rc;
    if (resp) {
        a->status = resp->status;
        snprintf(a->body, sizeof(a->body), "%s", resp->body);
    }
    if (err)
        snprintf(a->err, sizeof(a->err), "%s", err->msg);
    if (a->free_me)
        httpc_free(a->free_me);
}

/*
 * Sends one GET to a server that answers with reply; returns the answer.
 * With free_in_cb, the callback frees the client.
 */
static struct answer exchange(const char *reply, bool free_in_cb)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    struct answer a;
    struct ev_loop loop;
    struct httpc *c;
    struct dialer dialer;
    struct addr addr;
    char text[64], req[1024] = "";
    int lfd, sfd = -1;
    size_t got = 0;

    memset(&a, 0, sizeof(a));
    lfd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_FATAL(lfd >= 0);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) == 0);
    CU_ASSERT_FATAL(listen(lfd, 1) == 0);
    CU_ASSERT_FATAL(getsockname(lfd, (struct sockaddr *)&sin, &len) == 0);
    snprintf(text, sizeof(text), "127.0.0.1:%u", (unsigned)ntohs(sin.sin_port));
    CU_ASSERT_FATAL(addr_parse(text, &addr, NULL) == 0);
    CU_ASSERT_FATAL(ev_loop_init(&loop) == 0);
    dialer = (struct dialer){.loop = &loop};
    c = httpc_new(&dialer, &addr);
    a.free_me = free_in_cb ? c : NULL;
    CU_ASSERT_FATAL(httpc_request(c, "GET", "/x", NULL, NULL, 0, 2000, on_answer, &a) == 0);
    for (int i = 0; i < 200 && !a.done; i++) {
        ev_loop_once(&loop, 10);
        if (sfd < 0)
            sfd = accept(lfd, NULL, NULL);
        if (sfd >= 0 && got < sizeof(req) && !strstr(req, "\r\n\r\n")) {
            ssize_t n = recv(sfd, req + got, sizeof(req) - 1 - got, MSG_DONTWAIT);

            got += n > 0 ? (size_t)n : 0;
            req[got] = '\0';
            if (strstr(req, "\r\n\r\n"))
                CU_ASSERT(send(sfd, reply, strlen(reply), 0) == (ssize_t)strlen(reply));
        }
    }
    CU_ASSERT(a.done);
    if (!free_in_cb)
        httpc_free(c);
    if (sfd >= 0)
        close(sfd);
    close(lfd);
    ev_loop_release(&loop);
    return a;
}

static void chunked_body_is_decoded(void)
{
    struct answer a = exchange("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                               "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n",
                               false);

    CU_ASSERT_EQUAL(a.rc, 0);
    CU_ASSERT_EQUAL(a.status, 200);
    CU_ASSERT_STRING_EQUAL(a.body, "hello, world");
}

static void chunk_size_beyond_the_body_limit_is_refused(void)
{
    static const char *const sizes[] = {
        "ffffffffffffffff", "fffffffffffffffe", "10000000000000001", "7fffffff", "zz", ""};

    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        char reply[256];
        struct answer a;

        snprintf(reply, sizeof(reply),
                 "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%s\r\nabc\r\n", sizes[i]);
        a = exchange(reply, false);
        CU_ASSERT_EQUAL(a.rc, DTX_EPROTO);
        CU_ASSERT_PTR_NOT_NULL(strstr(a.err, "malformed HTTP answer"));
    }
}

static void callback_may_free_its_client(void)
{
    struct answer a = exchange("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true);

    CU_ASSERT_EQUAL(a.rc, 0);
    CU_ASSERT_STRING_EQUAL(a.body, "ok"); /* and no use after free (ASan) */
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(chunked_body_is_decoded),
        UNIT_TEST(chunk_size_beyond_the_body_limit_is_refused),
        UNIT_TEST(callback_may_free_its_client),
    };

    return unit_run("httpc", tests, sizeof(tests) / sizeof(tests[0]));
}
