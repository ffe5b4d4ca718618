/*
 * addr.h - network addresses as written in config files: "host:port" for
 * a listen address, "http://host:port" or "https://host:port" for a
 * peer's URL.
 */
#ifndef DTX_ADDR_H
#define DTX_ADDR_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dtx/err.h"

struct addr {
    char host[256];
    uint16_t port;
    bool tls; /* an https:// URL */
    /* A listen address: resolved. A URL: set only when host is an IP address (salen 0 for a
     * name, which is resolved at every connect, resolve.h). */
    struct sockaddr_storage sa;
    socklen_t salen;
};

/*
 * Parses "host:port" (host a name, an IPv4 address or [IPv6]) and resolves
 * it. Returns 0, or DTX_EINVAL with a message; on error *out is unchanged.
 */
int addr_parse(const char *text, struct addr *out, struct dtx_err *err);

/* True when a is a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z). */
bool addr_is_loopback(const struct addr *a);

/*
 * Parses "http://host:port" or "https://host:port" (tls set), with an
 * optional trailing "/": the syntax only (host an IP address, [IPv6], or
 * a name of [A-Za-z0-9._-]); a name is not resolved. Returns 0, or
 * DTX_EINVAL with a message; on error *out is unchanged.
 */
int addr_parse_url(const char *url, struct addr *out, struct dtx_err *err);

/*
 * Opens a non-blocking TCP socket and starts connecting it to sa. Returns
 * the fd (connection possibly still in progress), or DTX_EIO with errno's
 * text.
 */
int addr_connect(const struct sockaddr *sa, socklen_t salen, struct dtx_err *err);

/* "192.0.2.7:7101" or "[2001:db8::1]:7101" (dst of n bytes). */
void addr_format(const struct sockaddr *sa, char *dst, size_t n);

/* Binds and listens on a with SO_REUSEADDR; returns the fd or DTX_EIO. */
int addr_listen(const struct addr *a, int backlog, struct dtx_err *err);

#endif
