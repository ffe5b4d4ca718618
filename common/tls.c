/*
 * tls.c - TLS with GnuTLS (tls.h): the "tls" config key, credentials,
 * client sessions on our sockets, and the server sessions libmicrohttpd
 * makes.
 *
 * Credentials (struct tls_creds): one gnutls_certificate_credentials_t
 * holding this daemon's certificate and key and the trust anchors
 * (ca_file, else the system's store), used by client and server sessions
 * alike, with a reference count: the config holds one reference, every
 * session one more. A reload makes a new one; the old one goes with its
 * last session.
 *
 * Client sessions verify the server during the handshake
 * (gnutls_session_set_verify_cert: chain, validity, the URL's host) and
 * always show our certificate (GNUTLS_FORCE_CLIENT_CERT), so that a
 * server that requires one says why it refuses it rather than "no
 * certificate". Sends that would block are repeated with the same length
 * (GnuTLS keeps the record it encrypted and wants the same call again).
 *
 * Server sessions: libmicrohttpd creates the session with its own
 * credentials; before the handshake (its connection notification) httpd.c
 * hands it here, and it gets ours, a client-certificate request and our
 * verify function if require_client_cert, and our transport (recv/send on
 * the connection's socket, as GnuTLS's default), which looks at the first
 * byte: a TLS handshake record begins with 22; anything else is a client
 * speaking plain HTTP, answered 400 in plain text before the connection
 * is dropped. It counts the bytes it moves (tls_server_conn.moved), which
 * tells httpd.c whether re-running libmicrohttpd at once does anything.
 *
 * Nothing here ever waits: every session is non-blocking and runs on an
 * event loop, so the transports pass MSG_DONTWAIT and the pull-timeout
 * callbacks only look (poll with 0); GnuTLS's own handshake timeouts are
 * off (the HTTP client's request timer and the server's deadline bound a
 * handshake).
 *
 * Thread model: loading runs on the thread that reads the config (before
 * the loop, and on the loop for SIGHUP); sessions and reference counts on
 * the loop thread only.
 */
#include "dtx/tls.h"
#include "dtx/addr.h"
#include "dtx/jsonx.h"
#include "dtx/xalloc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define TLS_FILE_MAX         (1024 * 1024) /* a PEM file larger than this is not a certificate */
#define TLS_SEND_CHUNK       16384         /* one record */
#define TLS_HANDSHAKE_RECORD 22

struct tls_creds {
    unsigned refs;
    gnutls_certificate_credentials_t cred;
    bool require_client_cert;
    char subject[256]; /* of our certificate, for the log */
    time_t expires;
    unsigned revoked; /* certificates listed by crl_file's CRLs */
    time_t crl_next;  /* the earliest next update of those CRLs, or -1 */
};

struct tls_session {
    gnutls_session_t s;
    struct tls_creds *creds;
    int fd;
    size_t pending_send; /* the length of a send that would have blocked, to repeat */
    char host[256];
    char error[400];
};

/* ---- credentials --------------------------------------------------------------------- */

static struct tls_creds *creds_ref(struct tls_creds *c)
{
    if (c)
        c->refs++;
    return c;
}

static void creds_unref(struct tls_creds *c)
{
    if (!c || --c->refs > 0)
        return;
    gnutls_certificate_free_credentials(c->cred);
    free(c);
}

/* Reads a whole file (at most TLS_FILE_MAX bytes) into *out (gnutls_free it). */
static int read_file(const char *path, const char *key, gnutls_datum_t *out, struct dtx_err *err)
{
    struct stat st;
    ssize_t n = 0;
    unsigned char *data;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);

    if (fd < 0)
        return dtx_err_set(err, DTX_EIO, "'tls.%s': could not open '%s': %s", key, path,
                           strerror(errno));
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > TLS_FILE_MAX) {
        close(fd);
        return dtx_err_set(err, DTX_EINVAL,
                           "'tls.%s': '%s' is not a regular file of at most %d bytes", key, path,
                           TLS_FILE_MAX);
    }
    data = gnutls_malloc((size_t)st.st_size + 1);
    xnonnull(data);
    while (n < st.st_size) {
        ssize_t r = read(fd, data + n, (size_t)(st.st_size - n));

        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += r;
    }
    close(fd);
    if (n != st.st_size) {
        gnutls_free(data);
        return dtx_err_set(err, DTX_EIO, "'tls.%s': could not read '%s'", key, path);
    }
    data[n] = '\0';
    out->data = data;
    out->size = (unsigned)n;
    return 0;
}

/* The key file is a secret: refused when every user may read it (as token files are). */
static int check_key_mode(const char *path, struct dtx_err *err)
{
    struct stat st;

    if (stat(path, &st) == 0 && (st.st_mode & S_IROTH))
        return dtx_err_set(err, DTX_EINVAL,
                           "'tls.key_file': '%s' is readable by every user (mode %04o): make it "
                           "readable by its owner and group only (chmod o-rwx)",
                           path, (unsigned)(st.st_mode & 07777));
    return 0;
}

static void format_time(time_t t, char *dst, size_t n)
{
    struct tm tm;

    gmtime_r(&t, &tm);
    strftime(dst, n, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

/* Our certificate (the first of cert_file) must be valid now; its subject for the log. */
static int check_validity(const char *path, const gnutls_datum_t *pem, struct tls_creds *c,
                          struct dtx_err *err)
{
    gnutls_x509_crt_t *list = NULL;
    unsigned n = 0;
    time_t now = time(NULL), from, until;
    char when[64];
    size_t len = sizeof(c->subject);
    int rc = gnutls_x509_crt_list_import2(&list, &n, pem, GNUTLS_X509_FMT_PEM, 0);

    if (rc < 0 || n == 0)
        return dtx_err_set(err, DTX_EINVAL, "'tls.cert_file': '%s' holds no PEM certificate: %s",
                           path, rc < 0 ? gnutls_strerror(rc) : "none found");
    from = gnutls_x509_crt_get_activation_time(list[0]);
    until = gnutls_x509_crt_get_expiration_time(list[0]);
    if (gnutls_x509_crt_get_dn(list[0], c->subject, &len) < 0)
        snprintf(c->subject, sizeof(c->subject), "?");
    c->expires = until;
    rc = 0;
    if (until != (time_t)-1 && until < now) {
        format_time(until, when, sizeof(when));
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'tls.cert_file': the certificate in '%s' (%s) expired on %s", path,
                         c->subject, when);
    } else if (from != (time_t)-1 && from > now) {
        format_time(from, when, sizeof(when));
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'tls.cert_file': the certificate in '%s' (%s) is not valid before %s",
                         path, c->subject, when);
    }
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(list[i]);
    gnutls_free(list);
    return rc;
}

static int load_trust(const struct tls_config *cfg, struct tls_creds *c, struct dtx_err *err)
{
    gnutls_datum_t ca = {NULL, 0};
    int rc;

    if (!cfg->ca_file[0]) {
        rc = gnutls_certificate_set_x509_system_trust(c->cred);
        if (rc < 0)
            return dtx_err_set(err, DTX_EIO,
                               "'tls': no 'ca_file', and the system's trusted CAs could not be "
                               "loaded: %s",
                               gnutls_strerror(rc));
        return 0;
    }
    rc = read_file(cfg->ca_file, "ca_file", &ca, err);
    if (rc < 0)
        return rc;
    rc = gnutls_certificate_set_x509_trust_mem(c->cred, &ca, GNUTLS_X509_FMT_PEM);
    gnutls_free(ca.data);
    if (rc < 0)
        return dtx_err_set(err, DTX_EINVAL, "'tls.ca_file': could not load '%s': %s", cfg->ca_file,
                           gnutls_strerror(rc));
    if (rc == 0)
        return dtx_err_set(err, DTX_EINVAL, "'tls.ca_file': '%s' holds no PEM certificate",
                           cfg->ca_file);
    return 0;
}

/*
 * crl_file: revocation lists of the CAs in ca_file, checked whenever a peer's
 * certificate is (both ways). GnuTLS verifies each CRL's signature as it is
 * added (GNUTLS_CERTIFICATE_VERIFY_CRLS) and refuses one that is not signed
 * by a trusted CA or that is past its next update; the next update is
 * checked here first so that the error can say which of the two it was.
 */
static int load_crl(const struct tls_config *cfg, struct tls_creds *c, struct dtx_err *err)
{
    gnutls_datum_t pem = {NULL, 0};
    gnutls_x509_crl_t *list = NULL;
    unsigned n = 0;
    time_t now = time(NULL);
    char when[64];
    int rc = read_file(cfg->crl_file, "crl_file", &pem, err);

    if (rc < 0)
        return rc;
    rc = gnutls_x509_crl_list_import2(&list, &n, &pem, GNUTLS_X509_FMT_PEM, 0);
    if (rc < 0 || n == 0) {
        gnutls_free(pem.data);
        return dtx_err_set(err, DTX_EINVAL, "'tls.crl_file': '%s' holds no PEM CRL: %s",
                           cfg->crl_file, rc < 0 ? gnutls_strerror(rc) : "none found");
    }
    c->crl_next = (time_t)-1;
    for (unsigned i = 0; i < n; i++) {
        time_t next = gnutls_x509_crl_get_next_update(list[i]);
        int count = gnutls_x509_crl_get_crt_count(list[i]);

        c->revoked += count > 0 ? (unsigned)count : 0;
        if (next != (time_t)-1 && (c->crl_next == (time_t)-1 || next < c->crl_next))
            c->crl_next = next;
        gnutls_x509_crl_deinit(list[i]);
    }
    gnutls_free(list);
    if (c->crl_next != (time_t)-1 && c->crl_next < now) {
        gnutls_free(pem.data);
        format_time(c->crl_next, when, sizeof(when));
        return dtx_err_set(err, DTX_EINVAL,
                           "'tls.crl_file': a CRL in '%s' is out of date (its next update was "
                           "%s): put its CA's current CRL in place",
                           cfg->crl_file, when);
    }
    gnutls_certificate_set_flags(c->cred, GNUTLS_CERTIFICATE_VERIFY_CRLS);
    rc = gnutls_certificate_set_x509_crl_mem(c->cred, &pem, GNUTLS_X509_FMT_PEM);
    gnutls_free(pem.data);
    if (rc < 0)
        return dtx_err_set(err, DTX_EINVAL,
                           "'tls.crl_file': a CRL in '%s' is not signed by a CA in 'tls.ca_file' "
                           "'%s': %s",
                           cfg->crl_file, cfg->ca_file, gnutls_strerror(rc));
    return 0;
}

static int load_key_pair(const struct tls_config *cfg, struct tls_creds *c, struct dtx_err *err)
{
    gnutls_datum_t cert = {NULL, 0}, key = {NULL, 0};
    int rc = check_key_mode(cfg->key_file, err);

    if (rc == 0)
        rc = read_file(cfg->cert_file, "cert_file", &cert, err);
    if (rc == 0)
        rc = read_file(cfg->key_file, "key_file", &key, err);
    if (rc == 0)
        rc = check_validity(cfg->cert_file, &cert, c, err);
    if (rc == 0) {
        rc = gnutls_certificate_set_x509_key_mem2(c->cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL,
                                                  0);
        if (rc < 0)
            rc = dtx_err_set(err, DTX_EINVAL,
                             "'tls.cert_file' '%s' with 'tls.key_file' '%s': could not load the "
                             "certificate and its key: %s",
                             cfg->cert_file, cfg->key_file, gnutls_strerror(rc));
        else
            rc = 0;
    }
    gnutls_free(cert.data);
    gnutls_free(key.data);
    return rc;
}

static int creds_load(const struct tls_config *cfg, struct tls_creds **out, struct dtx_err *err)
{
    struct tls_creds *c = xcalloc(1, sizeof(*c));
    int rc = gnutls_certificate_allocate_credentials(&c->cred);

    if (rc < 0) {
        free(c);
        return dtx_err_set(err, DTX_EIO, "'tls': could not set up credentials: %s",
                           gnutls_strerror(rc));
    }
    c->refs = 1;
    c->require_client_cert = cfg->require_client_cert;
    c->expires = (time_t)-1;
    snprintf(c->subject, sizeof(c->subject), "none (a client only)");
    rc = cfg->cert_file[0] ? load_key_pair(cfg, c, err) : 0;
    if (rc == 0)
        rc = load_trust(cfg, c, err);
    if (rc == 0 && cfg->crl_file[0])
        rc = load_crl(cfg, c, err);
    if (rc < 0) {
        creds_unref(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- the config key -------------------------------------------------------------------- */

static const char *const tls_keys[] = {"cert_file",           "key_file", "ca_file", "crl_file",
                                       "require_client_cert", NULL};

static int tls_path(const cJSON *tls, const char *key, bool required, const char *config_dir,
                    char *dst, struct dtx_err *err)
{
    const char *v = NULL;
    int rc = jsonx_str(tls, "tls", key, required, &v, err);

    if (rc < 0 || !v)
        return rc;
    if (!*v)
        return dtx_err_set(err, DTX_EINVAL, "'tls.%s' is empty", key);
    if (strlen(v) + strlen(config_dir) + 2 > TLS_PATH_MAX)
        return dtx_err_set(err, DTX_EINVAL, "'tls.%s' is too long", key);
    if (v[0] == '/') {
        memcpy(dst, v, strlen(v) + 1);
        return 0;
    }
    memcpy(dst, config_dir, strlen(config_dir));
    dst[strlen(config_dir)] = '/';
    memcpy(dst + strlen(config_dir) + 1, v, strlen(v) + 1);
    return 0;
}

int tls_config_load(const cJSON *root, const char *config_path, struct tls_config *out,
                    struct dtx_err *err)
{
    struct tls_config c;
    const cJSON *tls = NULL;
    char config_dir[TLS_PATH_MAX];
    const char *slash = strrchr(config_path, '/');
    int rc = jsonx_object(root, "", "tls", false, &tls, err);

    if (!slash)
        snprintf(config_dir, sizeof(config_dir), ".");
    else if (slash == config_path)
        snprintf(config_dir, sizeof(config_dir), "/");
    else
        snprintf(config_dir, sizeof(config_dir), "%.*s", (int)(slash - config_path), config_path);

    memset(&c, 0, sizeof(c));
    if (rc < 0 || !tls) {
        if (rc == 0)
            *out = c;
        return rc;
    }
    c.on = true;
    rc = jsonx_only_keys(tls, "tls", tls_keys, err);
    if (rc == 0)
        rc = tls_path(tls, "cert_file", true, config_dir, c.cert_file, err);
    if (rc == 0)
        rc = tls_path(tls, "key_file", true, config_dir, c.key_file, err);
    if (rc == 0)
        rc = tls_path(tls, "ca_file", false, config_dir, c.ca_file, err);
    if (rc == 0)
        rc = tls_path(tls, "crl_file", false, config_dir, c.crl_file, err);
    if (rc == 0)
        rc = jsonx_bool(tls, "tls", "require_client_cert", false, &c.require_client_cert, err);
    if (rc == 0 && c.require_client_cert && !c.ca_file[0])
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'tls.require_client_cert' needs 'tls.ca_file': the CA whose "
                         "certificates clients must show");
    if (rc == 0 && c.crl_file[0] && !c.ca_file[0])
        rc = dtx_err_set(err, DTX_EINVAL,
                         "'tls.crl_file' needs 'tls.ca_file': the CAs whose revocation lists "
                         "it holds");
    if (rc == 0)
        rc = creds_load(&c, &c.creds, err);
    if (rc == 0)
        *out = c;
    return rc;
}

int tls_config_client(const char *ca_file, struct tls_config *out, struct dtx_err *err)
{
    struct tls_config c;
    int rc;

    memset(&c, 0, sizeof(c));
    c.on = true;
    if (ca_file && strlen(ca_file) >= sizeof(c.ca_file))
        return dtx_err_set(err, DTX_EINVAL, "'%s' is too long a path", ca_file);
    if (ca_file)
        snprintf(c.ca_file, sizeof(c.ca_file), "%s", ca_file);
    rc = creds_load(&c, &c.creds, err);
    if (rc == 0)
        *out = c;
    return rc;
}

int tls_check_url(const struct tls_config *c, const struct addr *a, const char *key,
                  struct dtx_err *err)
{
    if (a->tls && !c->on)
        return dtx_err_set(err, DTX_EINVAL,
                           "'%s' is an https:// URL, but the config has no 'tls' key "
                           "(cert_file, key_file, ca_file) to talk TLS with",
                           key);
    return 0;
}

int tls_config_can_take(const struct tls_config *to, const struct tls_config *from,
                        struct dtx_err *err)
{
    if (to->on != from->on)
        return dtx_err_set(err, DTX_EINVAL,
                           "the 'tls' key was %s: that takes a restart (the listener serves "
                           "HTTPS or not)",
                           from->on ? "added" : "removed");
    return 0;
}

void tls_config_release(struct tls_config *c)
{
    creds_unref(c->creds);
    c->creds = NULL;
}

void tls_config_take(struct tls_config *to, struct tls_config *from)
{
    struct tls_creds *old = to->creds;

    *to = *from;
    from->creds = NULL;
    creds_unref(old);
}

void tls_config_describe(const struct tls_config *c, char *dst, size_t n)
{
    char when[64] = "?";

    if (!c->on || !c->creds) {
        snprintf(dst, n, "off");
        return;
    }
    if (c->creds->expires != (time_t)-1)
        format_time(c->creds->expires, when, sizeof(when));
    snprintf(dst, n, "certificate '%s' (%s, expires %s), peers verified against %s%s%s",
             c->creds->subject, c->cert_file, when, c->ca_file[0] ? "'" : "",
             c->ca_file[0] ? c->ca_file : "the system's trusted CAs", c->ca_file[0] ? "'" : "");
    if (c->crl_file[0] && n > strlen(dst)) {
        if (c->creds->crl_next != (time_t)-1)
            format_time(c->creds->crl_next, when, sizeof(when));
        snprintf(dst + strlen(dst), n - strlen(dst),
                 ", %u revoked certificates listed in '%s' (next update %s)", c->creds->revoked,
                 c->crl_file, c->creds->crl_next != (time_t)-1 ? when : "none given");
    }
    if (c->require_client_cert && n > strlen(dst))
        snprintf(dst + strlen(dst), n - strlen(dst), ", client certificates required");
}

/* ---- client sessions ----------------------------------------------------------------------- */

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];

    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/*
 * Whether the connection has bytes to read, never waiting: the session is
 * non-blocking and runs on the event loop, which must never sleep inside
 * GnuTLS (whatever ms asks; a wait would stall every connection of the
 * daemon). GnuTLS then answers GNUTLS_E_AGAIN and the loop calls again.
 */
static int poll_now(int fd)
{
    struct pollfd p = {fd, POLLIN, 0};

    return poll(&p, 1, 0);
}

static int client_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    (void)ms;
    return poll_now((int)(intptr_t)ptr);
}

int tls_session_client(const struct tls_config *c, int fd, const char *host,
                       struct tls_session **out, struct dtx_err *err)
{
    struct tls_session *t;
    int rc;

    if (!c || !c->on || !c->creds)
        return dtx_err_set(err, DTX_EINVAL,
                           "https://%s needs TLS: this daemon has no 'tls' key in its config",
                           host);
    t = xcalloc(1, sizeof(*t));
    t->fd = fd;
    snprintf(t->host, sizeof(t->host), "%s", host);
    rc = gnutls_init(&t->s, GNUTLS_CLIENT | GNUTLS_NONBLOCK | GNUTLS_NO_SIGNAL |
                                GNUTLS_FORCE_CLIENT_CERT | GNUTLS_NO_TICKETS);
    if (rc == 0)
        rc = gnutls_set_default_priority(t->s);
    if (rc == 0)
        rc = gnutls_credentials_set(t->s, GNUTLS_CRD_CERTIFICATE, c->creds->cred);
    if (rc == 0 && !is_ip_literal(host))
        rc = gnutls_server_name_set(t->s, GNUTLS_NAME_DNS, host, strlen(host));
    if (rc < 0) {
        if (t->s)
            gnutls_deinit(t->s);
        free(t);
        return dtx_err_set(err, DTX_EIO, "could not set up a TLS session: %s", gnutls_strerror(rc));
    }
    gnutls_session_set_verify_cert(t->s, t->host, 0);
    gnutls_transport_set_int(t->s, fd);
    gnutls_transport_set_pull_timeout_function(t->s, client_pull_timeout);
    gnutls_handshake_set_timeout(t->s, 0); /* the request's own timer bounds it (httpc.c) */
    t->creds = creds_ref(c->creds);
    *out = t;
    return 0;
}

/* Words for a failed GnuTLS call: the verification's result, an alert's name, or the error. */
static void describe_failure(struct tls_session *t, int rc)
{
    gnutls_datum_t out = {NULL, 0};

    if (rc == GNUTLS_E_CERTIFICATE_VERIFICATION_ERROR &&
        gnutls_certificate_verification_status_print(gnutls_session_get_verify_cert_status(t->s),
                                                     GNUTLS_CRT_X509, &out, 0) == 0) {
        snprintf(t->error, sizeof(t->error), "the certificate of %s was refused: %s", t->host,
                 (const char *)out.data);
        gnutls_free(out.data);
    } else if (rc == GNUTLS_E_FATAL_ALERT_RECEIVED) {
        const char *alert = gnutls_alert_get_name(gnutls_alert_get(t->s));

        snprintf(t->error, sizeof(t->error), "%s refused the TLS session: %s", t->host,
                 alert ? alert : "a fatal alert");
    } else {
        snprintf(t->error, sizeof(t->error), "TLS: %s", gnutls_strerror(rc));
    }
}

int tls_session_handshake(struct tls_session *t, struct dtx_err *err)
{
    int rc = gnutls_handshake(t->s);

    if (rc == GNUTLS_E_SUCCESS)
        return 1;
    if (rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED || !gnutls_error_is_fatal(rc))
        return 0;
    describe_failure(t, rc);
    return dtx_err_set(err, DTX_EIO, "%s", t->error);
}

bool tls_session_wants_write(const struct tls_session *t)
{
    return gnutls_record_get_direction(t->s) == 1;
}

/* Maps a GnuTLS record result to recv/send's: -1 with errno. */
static ssize_t io_result(struct tls_session *t, ssize_t rc)
{
    if (rc >= 0)
        return rc;
    if (rc == GNUTLS_E_AGAIN) {
        errno = EAGAIN;
        return -1;
    }
    if (rc == GNUTLS_E_INTERRUPTED) {
        errno = EINTR;
        return -1;
    }
    if (rc == GNUTLS_E_PREMATURE_TERMINATION) {
        snprintf(t->error, sizeof(t->error), "the peer closed the connection without ending TLS");
    } else {
        describe_failure(t, (int)rc);
    }
    errno = EPROTO;
    return -1;
}

ssize_t tls_session_recv(struct tls_session *t, void *buf, size_t n)
{
    for (;;) {
        ssize_t rc = gnutls_record_recv(t->s, buf, n);

        /* a warning alert (or a post-handshake message) is nothing to report */
        if (rc == GNUTLS_E_WARNING_ALERT_RECEIVED || rc == GNUTLS_E_GOT_APPLICATION_DATA)
            continue;
        return io_result(t, rc);
    }
}

ssize_t tls_session_send(struct tls_session *t, const void *buf, size_t n)
{
    size_t len = t->pending_send ? t->pending_send : (n < TLS_SEND_CHUNK ? n : TLS_SEND_CHUNK);
    ssize_t rc;

    if (len > n)
        len = n; /* never happens: the caller repeats with at least as many bytes */
    rc = gnutls_record_send(t->s, buf, len);
    t->pending_send = rc == GNUTLS_E_AGAIN || rc == GNUTLS_E_INTERRUPTED ? len : 0;
    return io_result(t, rc);
}

const char *tls_session_error(const struct tls_session *t)
{
    return t->error[0] ? t->error : "TLS error";
}

void tls_session_free(struct tls_session *t)
{
    if (!t)
        return;
    gnutls_bye(t->s, GNUTLS_SHUT_WR); /* non-blocking: sent only if the socket takes it now */
    gnutls_deinit(t->s);
    creds_unref(t->creds);
    free(t);
}

/* ---- server sessions ----------------------------------------------------------------------- */

/* What a client speaking plain HTTP to the HTTPS port is answered. */
static const char plain_http_body[] =
    "{\"error\":{\"code\":\"bad_request\",\"message\":\"this port serves HTTPS: use an "
    "https:// URL\"}}\n";

static void refused(struct tls_server_conn *conn, const char *why)
{
    if (conn->refused)
        conn->refused(conn->arg, why);
}

/* Best effort: the answer is small and the socket's buffer empty; then the end of the stream. */
static void answer_plain_http(int fd)
{
    char head[200];
    int n = snprintf(head, sizeof(head),
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Connection: close\r\nContent-Length: %zu\r\n\r\n",
                     sizeof(plain_http_body) - 1);
    struct iovec iov[2] = {{head, (size_t)n},
                           {(void *)plain_http_body, sizeof(plain_http_body) - 1}};
    struct msghdr m;

    memset(&m, 0, sizeof(m));
    m.msg_iov = iov;
    m.msg_iovlen = 2;
    if (sendmsg(fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0)
        shutdown(fd, SHUT_WR);
}

/* recv(2) on the connection; its first byte must start a TLS handshake record. */
static ssize_t server_pull(gnutls_transport_ptr_t ptr, void *buf, size_t n)
{
    struct tls_server_conn *conn = ptr;
    ssize_t r = recv(conn->fd, buf, n, MSG_DONTWAIT);

    if (r > 0 && conn->moved)
        *conn->moved += (uint64_t)r;
    if (r <= 0 || conn->started)
        return r;
    conn->started = true;
    if (((const unsigned char *)buf)[0] == TLS_HANDSHAKE_RECORD)
        return r;
    refused(conn, "plain HTTP on the HTTPS port (answered 400: use an https:// URL)");
    answer_plain_http(conn->fd);
    errno = ECONNRESET;
    return -1;
}

static ssize_t server_push(gnutls_transport_ptr_t ptr, const void *buf, size_t n)
{
    const struct tls_server_conn *conn = ptr;
    ssize_t r = send(conn->fd, buf, n, MSG_NOSIGNAL | MSG_DONTWAIT);

    if (r > 0 && conn->moved)
        *conn->moved += (uint64_t)r;
    return r;
}

static ssize_t server_vec_push(gnutls_transport_ptr_t ptr, const giovec_t *iov, int iovcnt)
{
    const struct tls_server_conn *conn = ptr;
    struct msghdr m;
    ssize_t r;

    memset(&m, 0, sizeof(m));
    m.msg_iov = (struct iovec *)(void *)iov;
    m.msg_iovlen = (size_t)iovcnt;
    r = sendmsg(conn->fd, &m, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r > 0 && conn->moved)
        *conn->moved += (uint64_t)r;
    return r;
}

static int server_pull_timeout(gnutls_transport_ptr_t ptr, unsigned ms)
{
    const struct tls_server_conn *conn = ptr;

    (void)ms;
    return poll_now(conn->fd);
}

/* require_client_cert: the client's certificate must chain to ca_file (any name). */
static int server_verify(gnutls_session_t s)
{
    struct tls_server_conn *conn = gnutls_session_get_ptr(s);
    gnutls_datum_t out = {NULL, 0};
    unsigned status = 0, n = 0;
    char why[400];
    int rc = gnutls_certificate_verify_peers3(s, NULL, &status);

    if (rc == GNUTLS_E_NO_CERTIFICATE_FOUND || (rc == 0 && !gnutls_certificate_get_peers(s, &n))) {
        refused(conn, "no client certificate (tls.require_client_cert)");
        return GNUTLS_E_CERTIFICATE_ERROR;
    }
    if (rc == 0 && status == 0)
        return 0;
    if (rc == 0 &&
        gnutls_certificate_verification_status_print(status, GNUTLS_CRT_X509, &out, 0) == 0) {
        snprintf(why, sizeof(why), "its client certificate was refused: %s",
                 (const char *)out.data);
        gnutls_free(out.data);
    } else {
        snprintf(why, sizeof(why), "its client certificate could not be verified: %s",
                 gnutls_strerror(rc));
    }
    refused(conn, why);
    return GNUTLS_E_CERTIFICATE_ERROR;
}

int tls_server_attach(const struct tls_config *c, void *session, struct tls_server_conn *conn)
{
    gnutls_session_t s = session;
    int rc;

    if (!c || !c->creds || !s)
        return DTX_EIO;
    rc = gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, c->creds->cred);
    if (rc < 0)
        return DTX_EIO;
    conn->creds = creds_ref(c->creds);
    gnutls_session_set_ptr(s, conn);
    gnutls_transport_set_ptr(s, conn);
    gnutls_transport_set_pull_function(s, server_pull);
    gnutls_transport_set_pull_timeout_function(s, server_pull_timeout);
    gnutls_transport_set_push_function(s, server_push);
    gnutls_transport_set_vec_push_function(s, server_vec_push);
    gnutls_handshake_set_timeout(s, 0); /* the HTTP server's request deadline bounds it */
    if (conn->creds->require_client_cert) {
        /* REQUEST, not REQUIRE: server_verify then runs for a client that sends none too,
         * refuses it and says why (REQUIRE fails the handshake before, silently) */
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_REQUEST);
        gnutls_session_set_verify_function(s, server_verify);
    } else {
        gnutls_certificate_server_set_request(s, GNUTLS_CERT_IGNORE);
    }
    return 0;
}

void tls_server_detach(struct tls_server_conn *conn)
{
    creds_unref(conn->creds);
    conn->creds = NULL;
}
