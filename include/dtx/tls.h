/*
 * tls.h - TLS on every link of dtx (GnuTLS): the "tls" key of both
 * daemons' configs, the credentials loaded from its files, client
 * sessions on dtx's own sockets (httpc.c, stream.c), and the server
 * sessions libmicrohttpd makes (httpd.c).
 *
 * Config: "tls": {"cert_file", "key_file", "ca_file", "crl_file",
 * "require_client_cert"}.
 * cert_file and key_file are this daemon's certificate (chain, PEM) and
 * its key: served on its HTTPS port, and shown as its client certificate
 * whenever it dials a peer. ca_file (PEM, one or more CA certificates) is
 * what peers' certificates are verified against; without it, against the
 * system's trust store. crl_file (needs ca_file): certificate revocation
 * lists (PEM) of those CAs; a peer, server or client, whose certificate one
 * lists is refused. Each must be signed by a CA in ca_file and not past its
 * next update when loaded (at start and at every SIGHUP). require_client_cert
 * (needs ca_file): a client without a certificate issued by ca_file is
 * refused during the handshake.
 *
 * Verification is never skipped: a client checks the server's chain
 * against the trust anchors and the URL's host (its name, or its IP
 * address, against the certificate's subjectAltName), and an expired or
 * not yet valid certificate fails it. GnuTLS's reason is what the error
 * says ("The certificate is NOT trusted. The certificate issuer is
 * unknown.").
 *
 * Credentials are loaded as a whole into a struct tls_creds, counted by
 * reference: every session holds the one it started with, so SIGHUP can
 * put new files in place (tls_config_take) while open connections go on
 * with the old ones, freed with the last of them.
 *
 * Thread model: loading may run anywhere; everything else on the loop
 * thread of the daemon that owns the config.
 */
#ifndef DTX_TLS_H
#define DTX_TLS_H

#include <cjson/cJSON.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dtx/err.h"

#define TLS_PATH_MAX 4096

struct tls_creds;

/* A daemon's "tls" key, and the credentials loaded from its files. */
struct tls_config {
    bool on; /* the key is present: listen serves HTTPS, https:// URLs may be dialled */
    char cert_file[TLS_PATH_MAX];
    char key_file[TLS_PATH_MAX];
    char ca_file[TLS_PATH_MAX];  /* "": peers are verified against the system's trust store */
    char crl_file[TLS_PATH_MAX]; /* "": no revocation list */
    bool require_client_cert;
    struct tls_creds *creds; /* NULL when off */
};

/*
 * Reads root's optional "tls" object into *out and loads its files; a
 * relative path is relative to the directory of config_path (the file
 * root came from). Refused with DTX_EINVAL or
 * DTX_EIO and a message naming the key, the file and GnuTLS's reason: an
 * unknown key, a missing cert_file or key_file, a file that cannot be read
 * or parsed, a key that is not the certificate's, a key file readable by
 * every user, a certificate that has expired or is not valid yet,
 * require_client_cert or crl_file without ca_file, a CRL not signed by a CA
 * in ca_file or past its next update. On error *out holds nothing to
 * release.
 */
int tls_config_load(const cJSON *root, const char *config_path, struct tls_config *out,
                    struct dtx_err *err);
/*
 * A client's TLS without a certificate of its own (dtx-loadgen): servers
 * are verified against ca_file (NULL: the system's trusted CAs) as by the
 * daemons. Returns 0 and *out (tls_config_release it), or the error of
 * loading ca_file; on error *out is not modified.
 */
int tls_config_client(const char *ca_file, struct tls_config *out, struct dtx_err *err);
/*
 * A peer's URL against the config: an https:// URL without the "tls" key
 * is refused (DTX_EINVAL, "'<key>' is an https:// URL, but ..."); 0
 * otherwise.
 */
struct addr;
int tls_check_url(const struct tls_config *c, const struct addr *a, const char *key,
                  struct dtx_err *err);
/*
 * SIGHUP: from (a config just loaded) may replace to unless it turns TLS
 * on or off, which needs a restart (the listener is HTTPS or not):
 * DTX_EINVAL saying so.
 */
int tls_config_can_take(const struct tls_config *to, const struct tls_config *from,
                        struct dtx_err *err);
/* Drops c's reference to its credentials. */
void tls_config_release(struct tls_config *c);
/* SIGHUP: to takes from's settings and credentials (from is left empty); to's old are released. */
void tls_config_take(struct tls_config *to, struct tls_config *from);
/* One line about the certificate in use ("CN=..., expires ..."), for the log. */
void tls_config_describe(const struct tls_config *c, char *dst, size_t n);

/* ---- client sessions, on dtx's own non-blocking sockets ---------------------- */

struct tls_session;

/*
 * Starts a client session on the connected socket fd for host (the URL's:
 * a name is sent as SNI; a name or IP address must match the server's
 * certificate). The session holds c's current credentials. Returns 0 and
 * *out, or DTX_EINVAL when c is off (TLS is not configured) / DTX_EIO.
 */
int tls_session_client(const struct tls_config *c, int fd, const char *host,
                       struct tls_session **out, struct dtx_err *err);
/*
 * Drives the handshake: 1 when done, 0 when it must be called again once
 * the socket is ready (tls_session_wants_write says for what), or a
 * negative DTX_E* with GnuTLS's reason (the certificate's verification,
 * an alert the server sent).
 */
int tls_session_handshake(struct tls_session *s, struct dtx_err *err);
bool tls_session_wants_write(const struct tls_session *s);
/*
 * As recv(2) and send(2): bytes done, 0 at the peer's end of the stream
 * (recv), or -1 with errno EAGAIN, EINTR, or EPROTO (the text is
 * tls_session_error). A send that failed with EAGAIN must be repeated
 * with the same bytes (their start may have moved in memory); it may then
 * take fewer than asked.
 */
ssize_t tls_session_recv(struct tls_session *s, void *buf, size_t n);
ssize_t tls_session_send(struct tls_session *s, const void *buf, size_t n);
/* What went wrong on the last -1/EPROTO, in words. */
const char *tls_session_error(const struct tls_session *s);
/* Sends close_notify if the socket takes it now, frees the session (not the fd). NULL: no-op. */
void tls_session_free(struct tls_session *s);

/* ---- server sessions, made by libmicrohttpd ---------------------------------- */

/* One TLS connection of the HTTP server. */
struct tls_server_conn {
    int fd;                  /* its TCP socket */
    bool started;            /* the first bytes arrived */
    struct tls_creds *creds; /* held while the session lives */
    /* A client was refused (plain HTTP, a client certificate): why, for a rate-limited log. */
    void (*refused)(void *arg, const char *why);
    void *arg;
    uint64_t *moved; /* counts the bytes read and sent (the HTTP server's progress; may be NULL) */
};

/*
 * Takes over the GnuTLS session (a gnutls_session_t) libmicrohttpd made
 * for conn->fd before its handshake: c's current credentials, a client
 * certificate required and verified if c says so, and its transport, so
 * that a client speaking plain HTTP is answered "400: this port serves
 * HTTPS" instead of a broken handshake. Returns 0 or DTX_EIO.
 */
int tls_server_attach(const struct tls_config *c, void *session, struct tls_server_conn *conn);
/* After libmicrohttpd freed the session: drops its credentials. Twice is a no-op. */
void tls_server_detach(struct tls_server_conn *conn);

#endif
