/*
 * sdnotify.c - the service manager's readiness protocol (sdnotify.h),
 * written against the socket interface rather than libsystemd, so that
 * the daemons need no library that a machine without systemd lacks.
 *
 * The protocol (systemd's sd_notify(3)): the service manager passes the
 * name of a datagram socket in $NOTIFY_SOCKET; the service sends it
 * newline-separated "NAME=VALUE" assignments, one datagram per message.
 * The kernel attaches the sender's pid (the manager asks for SO_PASSCRED),
 * which is how the manager knows the message comes from the main process.
 *
 * Stateless: each call opens, uses and closes its own socket, so any
 * thread may call it. A daemon sends two messages in its life (READY=1,
 * STOPPING=1): no point keeping a socket open.
 */
#include "dtx/sdnotify.h"
#include "dtx/log.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

/* The longest a send waits for room in the receiver's queue. */
#define SEND_TIMEOUT_MS 1000

/*
 * Fills *sun with the address socket_name names and *len with its length;
 * returns 0, or DTX_EINVAL. A path's length counts its NUL; an abstract
 * name's does not (the name is exactly the bytes after the leading NUL).
 */
static int make_address(const char *socket_name, struct sockaddr_un *sun, socklen_t *len,
                        struct dtx_err *err)
{
    size_t n = strlen(socket_name);

    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    if ((socket_name[0] != '/' && socket_name[0] != '@') || n < 2)
        return dtx_err_set(err, DTX_EINVAL,
                           "bad notify socket '%s': neither a path nor an abstract socket "
                           "name ('@...')",
                           socket_name);
    if (n >= sizeof(sun->sun_path) + (socket_name[0] == '@'))
        return dtx_err_set(err, DTX_EINVAL,
                           "bad notify socket '%s': %zu bytes, too long for a socket address",
                           socket_name, n);
    memcpy(sun->sun_path, socket_name, n);
    if (socket_name[0] == '@') {
        sun->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

int sdnotify_send(const char *socket_name, const char *state, struct dtx_err *err)
{
    struct timeval tv = {.tv_sec = SEND_TIMEOUT_MS / 1000,
                         .tv_usec = (SEND_TIMEOUT_MS % 1000) * 1000};
    struct sockaddr_un sun;
    size_t n = strlen(state);
    socklen_t len = 0;
    ssize_t sent;
    int fd, rc;

    if ((rc = make_address(socket_name, &sun, &len, err)) < 0)
        return rc;
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return dtx_err_set(err, DTX_EIO,
                           "could not create a socket to send to notify socket '%s': %s",
                           socket_name, strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    do
        sent = sendto(fd, state, n, MSG_NOSIGNAL, (const struct sockaddr *)&sun, len);
    while (sent < 0 && errno == EINTR);
    if (sent < 0)
        rc = dtx_err_set(err, DTX_EIO, "could not send to notify socket '%s': %s", socket_name,
                         strerror(errno));
    else if ((size_t)sent != n)
        rc =
            dtx_err_set(err, DTX_EIO, "could not send to notify socket '%s': sent %zd of %zu bytes",
                        socket_name, sent, n);
    close(fd);
    return rc;
}

int sdnotify(const char *state, struct dtx_err *err)
{
    const char *name = getenv("NOTIFY_SOCKET");

    if (!name || !name[0])
        return 0;
    return sdnotify_send(name, state, err);
}

void sdnotify_or_warn(const char *state)
{
    struct dtx_err err;

    dtx_err_clear(&err);
    if (sdnotify(state, &err) < 0)
        log_warn("could not tell the service manager '%s': %s", state, err.msg);
    else if (getenv("NOTIFY_SOCKET"))
        log_debug("told the service manager '%s'", state);
}
