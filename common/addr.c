/*
 * addr.c - parsing configured addresses, and the socket calls that use
 * them. A listen address is resolved when the config is loaded (the
 * daemon binds it at once); a peer's URL is only parsed: its host is
 * resolved afresh at every connect (resolve.h), so that a name may
 * resolve later, or to another address, than when the config was read.
 *
 * Stateless. Failures (a malformed address, a name that does not resolve,
 * a socket call that fails) are returned as DTX_E* with a message naming
 * the address.
 */
#include "dtx/addr.h"

#include <arpa/inet.h>
#include <ctype.h>
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

/* A host as a URL may name it: an IP address, or a DNS name ([A-Za-z0-9._-], no empty label). */
static bool host_ok(const char *h)
{
    unsigned char buf[sizeof(struct in6_addr)];
    size_t label = 0;

    if (inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1)
        return true;
    for (const char *p = h; *p; p++) {
        if (*p == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if (isalnum((unsigned char)*p) || *p == '-' || *p == '_') {
            label++;
        } else {
            return false;
        }
    }
    return *h != '\0';
}

/* An IP address is known without a lookup: a's sa is set (and the port). */
static void set_numeric(struct addr *a)
{
    struct sockaddr_in *in = (struct sockaddr_in *)(void *)&a->sa;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)(void *)&a->sa;

    if (inet_pton(AF_INET, a->host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(a->port);
        a->salen = sizeof(*in);
    } else if (inet_pton(AF_INET6, a->host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(a->port);
        a->salen = sizeof(*in6);
    }
}

int addr_parse_url(const char *url, struct addr *out, struct dtx_err *err)
{
    char hostport[300];
    struct addr a;
    size_t skip, n;
    long port;

    memset(&a, 0, sizeof(a));
    if (strncmp(url, "http://", 7) == 0) {
        skip = 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        skip = 8;
        a.tls = true;
    } else {
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not an http:// or https:// URL", url);
    }
    n = strlen(url + skip);
    if (n > 0 && url[skip + n - 1] == '/')
        n--;
    if (n == 0 || n >= sizeof(hostport))
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not of the form %.*shost:port", url, (int)skip,
                           url);
    memcpy(hostport, url + skip, n);
    hostport[n] = '\0';
    if (strchr(hostport, '/'))
        return dtx_err_set(err, DTX_EINVAL, "'%s' must not have a path", url);
    if (split_host_port(hostport, a.host, sizeof(a.host), &port) < 0 || !host_ok(a.host))
        return dtx_err_set(err, DTX_EINVAL, "'%s' is not of the form %.*shost:port", url, (int)skip,
                           url);
    a.port = (uint16_t)port;
    set_numeric(&a);
    *out = a;
    return 0;
}

int addr_connect(const struct sockaddr *sa, socklen_t salen, struct dtx_err *err)
{
    int one = 1;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "could not create socket: %s", strerror(errno));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, sa, salen) < 0 && errno != EINPROGRESS) {
        int e = errno;

        close(fd);
        return dtx_err_set(err, DTX_EIO, "could not connect: %s", strerror(e));
    }
    return fd;
}

void addr_format(const struct sockaddr *sa, char *dst, size_t n)
{
    char ip[INET6_ADDRSTRLEN] = "?";

    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;

        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(dst, n, "%s:%u", ip, (unsigned)ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;

        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(dst, n, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
    } else {
        snprintf(dst, n, "?");
    }
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
