/*
 * sdnotify.h - telling the service manager how the daemon is doing, as
 * systemd's sd_notify(3) does, without linking libsystemd: one datagram of
 * "NAME=VALUE" lines ("READY=1", "STOPPING=1") sent to the unix socket that
 * $NOTIFY_SOCKET names. A unit with Type=notify counts the service as
 * started only once READY=1 has arrived.
 */
#ifndef DTX_SDNOTIFY_H
#define DTX_SDNOTIFY_H

#include "dtx/err.h"

/*
 * Sends state as one datagram to the unix socket socket_name: a path
 * ("/run/systemd/notify") or, when it starts with '@', the name of an
 * abstract socket (the '@' stands for the leading NUL byte). Returns 0 once
 * the datagram is sent; DTX_EINVAL when socket_name is neither or too long
 * for a socket address; DTX_EIO when a socket call fails (errno's text in
 * err). Waits at most about a second for room in the receiver's queue.
 */
int sdnotify_send(const char *socket_name, const char *state, struct dtx_err *err);

/*
 * Sends state to the socket named in $NOTIFY_SOCKET. Returns 0 once sent,
 * and 0 without sending anything when $NOTIFY_SOCKET is unset or empty (the
 * process was not started by a service manager that listens); otherwise an
 * error of sdnotify_send. The environment is left as it is.
 */
int sdnotify(const char *state, struct dtx_err *err);

/*
 * sdnotify(), with a failure logged as a warning naming the socket: the
 * daemon carries on (a service manager that misses READY=1 times the start
 * out and says so).
 */
void sdnotify_or_warn(const char *state);

#endif
