/*
 * test_sdnotify.c - telling the service manager (sdnotify.c), against real
 * datagram sockets standing in for systemd's: one bound to a path in a
 * temporary directory, one in the abstract namespace.
 */
#include "dtx/sdnotify.h"
#include "unit.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* A listening "service manager": its socket, and the name to put in NOTIFY_SOCKET. */
struct manager {
    int fd;
    char name[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
    char dir[64];
};

/* Binds a datagram socket that asks for the sender's credentials, as systemd's does. */
static int manager_bind(struct manager *m, const struct sockaddr_un *sun, socklen_t len)
{
    int on = 1;

    m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (m->fd < 0)
        return -1;
    setsockopt(m->fd, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
    return bind(m->fd, (const struct sockaddr *)sun, len);
}

static void manager_on_path(struct manager *m)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};

    snprintf(m->dir, sizeof(m->dir), "/tmp/dtx-sdnotify-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(m->dir));
    snprintf(m->name, sizeof(m->name), "%s/notify", m->dir);
    memcpy(sun.sun_path, m->name, strlen(m->name) + 1); /* short: a mkdtemp name */
    CU_ASSERT_EQUAL_FATAL(manager_bind(m, &sun, sizeof(sun)), 0);
}

static void manager_abstract(struct manager *m)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    size_t n;

    m->dir[0] = '\0';
    snprintf(m->name, sizeof(m->name), "@dtx-test-sdnotify-%ld", (long)getpid());
    n = strlen(m->name);
    memcpy(sun.sun_path + 1, m->name + 1, n - 1); /* sun_path[0] stays NUL */
    CU_ASSERT_EQUAL_FATAL(
        manager_bind(m, &sun, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)), 0);
}

static void manager_close(struct manager *m)
{
    close(m->fd);
    if (m->dir[0]) {
        unlink(m->name);
        rmdir(m->dir);
    }
}

/*
 * Receives one datagram without waiting into buf; returns its length, or -1
 * when none is there. *pid is the sender's pid as the kernel reports it.
 */
static ssize_t manager_recv(struct manager *m, char *buf, size_t size, pid_t *pid)
{
    union {
        struct cmsghdr h;
        char space[CMSG_SPACE(sizeof(struct ucred))];
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = size - 1};
    struct msghdr msg = {
        .msg_iov = &iov, .msg_iovlen = 1, .msg_control = &ctl, .msg_controllen = sizeof(ctl)};
    struct cmsghdr *c;
    ssize_t n = recvmsg(m->fd, &msg, MSG_DONTWAIT);

    *pid = 0;
    if (n < 0)
        return -1;
    buf[n] = '\0';
    for (c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
            struct ucred cred;

            memcpy(&cred, CMSG_DATA(c), sizeof(cred));
            *pid = cred.pid;
        }
    }
    return n;
}

static void ready_reaches_a_socket_named_by_its_path(void)
{
    struct manager m;
    char buf[256];
    pid_t pid;

    manager_on_path(&m);
    setenv("NOTIFY_SOCKET", m.name, 1);
    CU_ASSERT_EQUAL(sdnotify("READY=1", NULL), 0);
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), 7);
    CU_ASSERT_STRING_EQUAL(buf, "READY=1");
    CU_ASSERT_EQUAL(pid, getpid()); /* what lets systemd tell the main process's message */
    CU_ASSERT_STRING_EQUAL(getenv("NOTIFY_SOCKET"), m.name);
    unsetenv("NOTIFY_SOCKET");
    manager_close(&m);
}

static void ready_reaches_an_abstract_socket_named_with_an_at_sign(void)
{
    struct manager m;
    char buf[256];
    pid_t pid;

    manager_abstract(&m);
    setenv("NOTIFY_SOCKET", m.name, 1);
    CU_ASSERT_EQUAL(sdnotify("READY=1", NULL), 0);
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), 7);
    CU_ASSERT_STRING_EQUAL(buf, "READY=1");
    CU_ASSERT_EQUAL(pid, getpid());
    unsetenv("NOTIFY_SOCKET");
    manager_close(&m);
}

static void several_assignments_arrive_as_one_datagram(void)
{
    struct manager m;
    char buf[256];
    pid_t pid;

    manager_on_path(&m);
    CU_ASSERT_EQUAL(sdnotify_send(m.name, "STOPPING=1\nSTATUS=draining", NULL), 0);
    CU_ASSERT_EQUAL(sdnotify_send(m.name, "READY=1", NULL), 0);
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), 26);
    CU_ASSERT_STRING_EQUAL(buf, "STOPPING=1\nSTATUS=draining");
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), 7);
    CU_ASSERT_STRING_EQUAL(buf, "READY=1");
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), -1);
    manager_close(&m);
}

static void without_notify_socket_nothing_is_sent_and_that_is_no_error(void)
{
    struct manager m;
    char buf[256];
    pid_t pid;

    manager_on_path(&m);
    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT_EQUAL(sdnotify("READY=1", NULL), 0);
    setenv("NOTIFY_SOCKET", "", 1);
    CU_ASSERT_EQUAL(sdnotify("READY=1", NULL), 0);
    unsetenv("NOTIFY_SOCKET");
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), -1);
    CU_ASSERT_EQUAL(errno, EAGAIN);
    manager_close(&m);
}

static void a_socket_nobody_listens_on_is_an_error_naming_it(void)
{
    struct manager m;
    struct dtx_err err;
    char gone[sizeof(m.name)];

    manager_on_path(&m);
    snprintf(gone, sizeof(gone), "%s", m.name);
    manager_close(&m);
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(sdnotify_send(gone, "READY=1", &err), DTX_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, gone));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, strerror(ENOENT)));
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(sdnotify_send("@dtx-test-sdnotify-nobody-listens", "READY=1", &err), DTX_EIO);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "@dtx-test-sdnotify-nobody-listens"));
}

static void names_that_are_no_socket_address_are_refused(void)
{
    char longest_path[120], longest_abstract[120];
    struct dtx_err err;

    memset(longest_path, 'a', sizeof(longest_path));
    longest_path[0] = '/';
    longest_path[108] = '\0'; /* with its NUL, one byte more than sun_path holds */
    memset(longest_abstract, 'a', sizeof(longest_abstract));
    longest_abstract[0] = '@';
    longest_abstract[109] = '\0'; /* 108 bytes of name after the NUL: one more than fits */
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(sdnotify_send("run/notify", "READY=1", &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'run/notify'"));
    CU_ASSERT_EQUAL(sdnotify_send("@", "READY=1", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(sdnotify_send("", "READY=1", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(sdnotify_send("vsock:2:1234", "READY=1", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(sdnotify_send(longest_path, "READY=1", NULL), DTX_EINVAL);
    CU_ASSERT_EQUAL(sdnotify_send(longest_abstract, "READY=1", NULL), DTX_EINVAL);
    setenv("NOTIFY_SOCKET", "run/notify", 1);
    CU_ASSERT_EQUAL(sdnotify("READY=1", NULL), DTX_EINVAL);
    unsetenv("NOTIFY_SOCKET");
}

static void the_longest_names_that_fit_are_accepted(void)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    char name[sizeof(sun.sun_path) + 2];
    struct manager m = {.dir = ""};
    char buf[64];
    pid_t pid;

    /* an abstract name of the whole sun_path: 107 bytes after the NUL, one per pid */
    memset(name, 'x', sizeof(name));
    name[0] = '@';
    snprintf(name + 1, 20, "%ld-", (long)getpid());
    name[strlen(name)] = 'x';
    name[sizeof(sun.sun_path)] = '\0';
    memcpy(sun.sun_path + 1, name + 1, sizeof(sun.sun_path) - 1);
    CU_ASSERT_EQUAL_FATAL(manager_bind(&m, &sun, sizeof(sun)), 0);
    CU_ASSERT_EQUAL(sdnotify_send(name, "READY=1", NULL), 0);
    CU_ASSERT_EQUAL(manager_recv(&m, buf, sizeof(buf), &pid), 7);
    manager_close(&m);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(ready_reaches_a_socket_named_by_its_path),
        UNIT_TEST(ready_reaches_an_abstract_socket_named_with_an_at_sign),
        UNIT_TEST(several_assignments_arrive_as_one_datagram),
        UNIT_TEST(without_notify_socket_nothing_is_sent_and_that_is_no_error),
        UNIT_TEST(a_socket_nobody_listens_on_is_an_error_naming_it),
        UNIT_TEST(names_that_are_no_socket_address_are_refused),
        UNIT_TEST(the_longest_names_that_fit_are_accepted),
    };

    return unit_run("sdnotify", tests, sizeof(tests) / sizeof(tests[0]));
}
