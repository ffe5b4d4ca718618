/*
 * addr.c - parsing and resolving configured addresses, and the socket
 * calls that use them. Resolution happens once, when a config is loaded.
 *
 * Stateless. Failures (a malformed address, a name that does not resolve,
 * a socket call that fails) are returned as DTX_E* with a message naming
 * the address.
 */
#include "dtx/addr.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int split_host_port(const char *text, char *host, size_t hostsz, long *port)
{
    const char *colon;
    const char *h = text;
    size_t hlen;
    char *end;

    if (text[0] == '[') {
        const char *close = strchr(text, ']');

        if (!close || close[1] != ':')
            return -1;
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon)
            return -1;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= hostsz)
        return -1;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    errno = 0;
    *port = strtol(colon + 1, &end, 10);
    if (errno || *end != '\0' || colon[1] == '\0' || *port < 1 || *port > 65535)
        return -1;
    return 0;
}

int addr_parse(const char *text, struct addr *out, struct dtx_err *err)
{
    struct addrinfo hints, *res = NULL;
    struct addr a;
    long port;
    int rc;

    memset(&a, 0, sizeof(a));
    if (split_host_port(text, a.host, sizeof(a.host), &port) < 0)
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not of the form host:port", text);
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    rc = getaddrinfo(a.host, NULL, &hints, &res);
    if (rc != 0 || !res)
        return dtx_err_set(err, DTX_EINVAL, "could not resolve host '%s': %s", a.host,
                           gai_strerror(rc));
    memcpy(&a.sa, res->ai_addr, res->ai_addrlen);
    a.salen = res->ai_addrlen;
    freeaddrinfo(res);
    a.port = (uint16_t)port;
    if (a.sa.ss_family == AF_INET)
        ((struct sockaddr_in *)&a.sa)->sin_port = htons(a.port);
    else
        ((struct sockaddr_in6 *)&a.sa)->sin6_port = htons(a.port);
    *out = a;
    return 0;
}

bool addr_is_loopback(const struct addr *a)
{
    if (a->sa.ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)&a->sa;

        return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
    }
    if (a->sa.ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)&a->sa;
        const uint8_t *b = in6->sin6_addr.s6_addr;

        return IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr) ||
               (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr) && b[12] == 127);
    }
    return false;
}

int addr_parse_url(const char *url, struct addr *out, struct dtx_err *err)
{
    char hostport[300];
    size_t n;

    if (strncmp(url, "http://", 7) != 0)
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not an http:// URL", url);
    n = strlen(url + 7);
    if (n > 0 && url[7 + n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(hostport))
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not of the form http://host:port", url);
    memcpy(hostport, url + 7, n);
    hostport[n] = '\0';
    if (strchr(hostport, '/'))
        return dtx_err_set(err, DTX_EINVAL, "'%s' must not have a path", url);
    return addr_parse(hostport, out, err);
}

int addr_connect(const struct addr *a, struct dtx_err *err)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not create socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 && errno != EINPROGRESS) {
        int e = errno;

        close(fd);
        return dtx_err_set(err, DTX_EIO, "could not connect to %s:%u: %s", a->host, a->port,
                           strerror(e));
    }
    return fd;
}

int addr_listen(const struct addr *a, int backlog, struct dtx_err *err)
{
    int one = 1;
    int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not create socket: %s", strerror(errno));
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 || listen(fd, backlog) < 0) {
        int e = errno;

        close(fd);
        return dtx_err_set(err, DTX_EIO, "could not listen on %s:%u: %s", a->host, a->port,
                           strerror(e));
    }
    return fd;
}
