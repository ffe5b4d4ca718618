/*
 * test_tls.c - the "tls" config key and sessions (tls.c), with
 * certificates that openssl makes for the run: bad configs are refused
 * naming the key and the file, a client verifies the server's chain and
 * host during the handshake (never skipped), a server that requires client
 * certificates refuses a client without one, and a reload serves the next
 * handshake while a session made before keeps its credentials.
 */
#include "dtx/addr.h"
#include "dtx/tls.h"
#include "unit.h"

#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/dtx-unit-tls-XXXXXX";
static bool have_certs;

/* A CA, a server certificate for 127.0.0.1 and localhost, one of another CA. */
static void make_certs(void)
{
    char cmd[4096];
    const char *req = "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

    if (!mkdtemp(dir))
        return;
    snprintf(cmd, sizeof(cmd),
             "cd %s && for ca in ca rogue; do openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:P-256 -nodes -keyout $ca.key -out $ca.pem -days 2 -subj /CN=$ca "
             "-addext basicConstraints=critical,CA:TRUE 2>/dev/null || exit 1; done && "
             "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth,"
             "clientAuth\\n' > ext && "
             "for c in srv:ca other:rogue cli:ca; do n=${c%%:*}; ca=${c#*:}; "
             "%s -keyout $n.key -out $n.csr -subj /CN=$n 2>/dev/null && openssl x509 -req -in "
             "$n.csr -CA $ca.pem -CAkey $ca.key -CAcreateserial -days 2 -out $n.pem "
             "-extfile ext 2>/dev/null || exit 1; done && chmod 600 *.key",
             dir, req);
    have_certs = system(cmd) == 0;
}

static void path_of(char *dst, size_t n, const char *name)
{
    snprintf(dst, n, "%s/%s", dir, name);
}

/* Loads {"tls": body} as if from dir/dtx.json. */
static int load(const char *body, struct tls_config *out, struct dtx_err *err)
{
    char text[2048], cfg[300];
    cJSON *root;
    int rc;

    snprintf(text, sizeof(text), "{\"tls\": %s}", body);
    path_of(cfg, sizeof(cfg), "dtx.json");
    root = cJSON_Parse(text);
    CU_ASSERT_PTR_NOT_NULL_FATAL(root);
    dtx_err_clear(err);
    rc = tls_config_load(root, cfg, out, err);
    cJSON_Delete(root);
    return rc;
}

static void no_tls_key_is_plain_http_and_refuses_https_urls(void)
{
    struct tls_config c;
    struct dtx_err err;
    struct addr a;
    cJSON *root = cJSON_Parse("{}");

    CU_ASSERT_EQUAL(tls_config_load(root, "/x/dtx.json", &c, &err), 0);
    CU_ASSERT_FALSE(c.on);
    cJSON_Delete(root);
    CU_ASSERT_EQUAL(addr_parse_url("https://db1.example:7101/", &a, &err), 0);
    CU_ASSERT_TRUE(a.tls);
    CU_ASSERT_STRING_EQUAL(a.host, "db1.example");
    CU_ASSERT_EQUAL(a.port, 7101);
    CU_ASSERT_EQUAL(a.salen, 0); /* a name: looked up at every connect */
    dtx_err_clear(&err);
    CU_ASSERT_EQUAL(tls_check_url(&c, &a, "coordinator_url", &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'coordinator_url' is an https:// URL, but the config "
                                           "has no 'tls' key"));
    CU_ASSERT_EQUAL(addr_parse_url("http://127.0.0.1:7000", &a, &err), 0);
    CU_ASSERT_FALSE(a.tls);
    CU_ASSERT(a.salen > 0); /* an IP address: known without a lookup */
    CU_ASSERT_EQUAL(addr_parse_url("ftp://h:1", &a, &err), DTX_EINVAL);
    CU_ASSERT_EQUAL(addr_parse_url("https://bad host:1", &a, &err), DTX_EINVAL);
}

static void bad_tls_configs_are_refused_naming_the_key_and_the_file(void)
{
    struct tls_config c;
    struct dtx_err err;
    char body[1500], key[300];

    CU_ASSERT_EQUAL(load("{\"key_file\": \"srv.key\"}", &c, &err), DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "cert_file"));
    CU_ASSERT_EQUAL(
        load("{\"cert_file\": \"a\", \"key_file\": \"b\", \"verify\": false}", &c, &err),
        DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "verify"));
    CU_ASSERT_EQUAL(load("{\"cert_file\": \"srv.pem\", \"key_file\": \"srv.key\", "
                         "\"require_client_cert\": true}",
                         &c, &err),
                    DTX_EINVAL);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'tls.require_client_cert' needs 'tls.ca_file'"));
    CU_ASSERT_NOT_EQUAL(load("{\"cert_file\": \"nope.pem\", \"key_file\": \"srv.key\"}", &c, &err),
                        0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'tls.cert_file'"));
    path_of(key, sizeof(key), "nope.pem");
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, key)); /* relative to the config's directory */
    CU_ASSERT_TRUE_FATAL(have_certs); /* openssl made them (tools/install-deps installs it) */
    /* another certificate's key */
    CU_ASSERT_NOT_EQUAL(load("{\"cert_file\": \"srv.pem\", \"key_file\": \"other.key\"}", &c, &err),
                        0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'tls.key_file'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "other.key"));
    /* a key every user may read */
    path_of(key, sizeof(key), "cli.key");
    chmod(key, 0644);
    CU_ASSERT_NOT_EQUAL(load("{\"cert_file\": \"cli.pem\", \"key_file\": \"cli.key\"}", &c, &err),
                        0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "readable by every user"));
    chmod(key, 0600);
    /* a CA file that holds no certificate */
    snprintf(body, sizeof(body),
             "{\"cert_file\": \"srv.pem\", \"key_file\": \"srv.key\", \"ca_file\": \"ext\"}");
    CU_ASSERT_NOT_EQUAL(load(body, &c, &err), 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "'tls.ca_file'"));
}

/* ---- handshakes over a socket pair -------------------------------------------------- */

struct pair {
    struct tls_session *client;
    gnutls_session_t server;
    struct tls_server_conn conn;
    int fds[2];
    char refused[400];
    int client_rc, server_rc;
    struct dtx_err err;
};

static void on_refused(void *arg, const char *why)
{
    struct pair *p = arg;

    snprintf(p->refused, sizeof(p->refused), "%s", why);
}

/* A server session (as libmicrohttpd makes one) and a client for host, then both handshakes. */
static void handshake(struct pair *p, const struct tls_config *srv, const struct tls_config *cli,
                      const char *host)
{
    memset(p, 0, sizeof(*p));
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, p->fds) == 0);
    CU_ASSERT_FATAL(gnutls_init(&p->server, GNUTLS_SERVER | GNUTLS_NONBLOCK) == 0);
    gnutls_set_default_priority(p->server);
    p->conn = (struct tls_server_conn){.fd = p->fds[0], .refused = on_refused, .arg = p};
    CU_ASSERT_FATAL(tls_server_attach(srv, p->server, &p->conn) == 0);
    dtx_err_clear(&p->err);
    CU_ASSERT_FATAL(tls_session_client(cli, p->fds[1], host, &p->client, &p->err) == 0);
    for (int i = 0; i < 1000 && (p->client_rc == 0 || p->server_rc == 0); i++) {
        if (p->client_rc == 0)
            p->client_rc = tls_session_handshake(p->client, &p->err);
        if (p->server_rc == 0) {
            int rc = gnutls_handshake(p->server);

            p->server_rc = rc == 0 ? 1 : gnutls_error_is_fatal(rc) ? -1 : 0;
        }
        usleep(1000);
    }
}

static void pair_release(struct pair *p)
{
    tls_session_free(p->client);
    gnutls_deinit(p->server);
    tls_server_detach(&p->conn);
    close(p->fds[0]);
    close(p->fds[1]);
}

static int load_pair(struct tls_config *c, const char *cert, bool require)
{
    char body[600];
    struct dtx_err err;

    snprintf(body, sizeof(body),
             "{\"cert_file\": \"%s.pem\", \"key_file\": \"%s.key\", \"ca_file\": \"ca.pem\"%s}",
             cert, cert, require ? ", \"require_client_cert\": true" : "");
    return load(body, c, &err);
}

static void a_client_verifies_the_chain_and_the_host_never_skipping_it(void)
{
    struct tls_config srv, cli, rogue;
    struct pair p;
    char msg[] = "hello", got[16] = "";

    CU_ASSERT_TRUE_FATAL(have_certs); /* openssl made them (tools/install-deps installs it) */
    CU_ASSERT_FATAL(load_pair(&srv, "srv", false) == 0);
    CU_ASSERT_FATAL(load_pair(&cli, "cli", false) == 0);
    CU_ASSERT_FATAL(load_pair(&rogue, "other", false) == 0);
    handshake(&p, &srv, &cli, "127.0.0.1");
    CU_ASSERT_EQUAL(p.client_rc, 1);
    CU_ASSERT_EQUAL(p.server_rc, 1);
    CU_ASSERT_EQUAL(tls_session_send(p.client, msg, sizeof(msg)), (ssize_t)sizeof(msg));
    for (int i = 0; i < 100 && gnutls_record_recv(p.server, got, sizeof(got)) < 0; i++)
        usleep(1000);
    CU_ASSERT_STRING_EQUAL(got, "hello");
    pair_release(&p);
    handshake(&p, &srv, &cli, "localhost");
    CU_ASSERT_EQUAL(p.client_rc, 1);
    pair_release(&p);
    /* the right CA, another name */
    handshake(&p, &srv, &cli, "db9.example");
    CU_ASSERT(p.client_rc < 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.err.msg, "the certificate of db9.example was refused"));
    CU_ASSERT_PTR_NOT_NULL(strstr(p.err.msg, "does not match"));
    pair_release(&p);
    /* a certificate of another CA */
    handshake(&p, &rogue, &cli, "127.0.0.1");
    CU_ASSERT(p.client_rc < 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.err.msg, "issuer is unknown"));
    pair_release(&p);
    tls_config_release(&srv);
    tls_config_release(&cli);
    tls_config_release(&rogue);
}

static void a_server_requiring_client_certificates_refuses_one_of_another_ca(void)
{
    struct tls_config srv, cli, rogue;
    struct pair p;

    CU_ASSERT_TRUE_FATAL(have_certs); /* openssl made them (tools/install-deps installs it) */
    CU_ASSERT_FATAL(load_pair(&srv, "srv", true) == 0);
    CU_ASSERT_FATAL(load_pair(&cli, "cli", false) == 0);
    handshake(&p, &srv, &cli, "127.0.0.1");
    CU_ASSERT_EQUAL(p.client_rc, 1);
    CU_ASSERT_EQUAL(p.server_rc, 1);
    CU_ASSERT_STRING_EQUAL(p.refused, "");
    pair_release(&p);
    /* a client of another CA (that trusts the server's CA) */
    CU_ASSERT_FATAL(
        load("{\"cert_file\": \"other.pem\", \"key_file\": \"other.key\", \"ca_file\": \"ca.pem\"}",
             &rogue, &p.err) == 0);
    handshake(&p, &srv, &rogue, "127.0.0.1");
    CU_ASSERT_EQUAL(p.server_rc, -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(p.refused, "its client certificate was refused"));
    pair_release(&p);
    tls_config_release(&srv);
    tls_config_release(&cli);
    tls_config_release(&rogue);
}

static void a_reload_serves_the_next_handshake_and_open_sessions_keep_theirs(void)
{
    struct tls_config srv, cli, fresh;
    struct pair before, after;

    CU_ASSERT_TRUE_FATAL(have_certs); /* openssl made them (tools/install-deps installs it) */
    CU_ASSERT_FATAL(load_pair(&srv, "srv", false) == 0);
    CU_ASSERT_FATAL(load_pair(&cli, "cli", false) == 0);
    handshake(&before, &srv, &cli, "127.0.0.1");
    CU_ASSERT_EQUAL(before.client_rc, 1);
    /* the server now shows another CA's certificate: the next client refuses it */
    CU_ASSERT_FATAL(load_pair(&fresh, "other", false) == 0);
    tls_config_take(&srv, &fresh);
    handshake(&after, &srv, &cli, "127.0.0.1");
    CU_ASSERT(after.client_rc < 0);
    pair_release(&after);
    /* the session made before still works (its credentials are held, not freed) */
    CU_ASSERT_EQUAL(tls_session_send(before.client, "x", 1), 1);
    pair_release(&before);
    tls_config_release(&srv);
    tls_config_release(&cli);
}

int main(void)
{
    static const struct unit_test tests[] = {
        UNIT_TEST(no_tls_key_is_plain_http_and_refuses_https_urls),
        UNIT_TEST(bad_tls_configs_are_refused_naming_the_key_and_the_file),
        UNIT_TEST(a_client_verifies_the_chain_and_the_host_never_skipping_it),
        UNIT_TEST(a_server_requiring_client_certificates_refuses_one_of_another_ca),
        UNIT_TEST(a_reload_serves_the_next_handshake_and_open_sessions_keep_theirs),
    };
    char cmd[200];
    int rc;

    make_certs();
    if (!have_certs)
        fprintf(stderr, "test_tls: openssl could not make certificates in %s\n", dir);
    rc = unit_run("tls", tests, sizeof(tests) / sizeof(tests[0]));
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        rc = rc ? rc : 1;
    return rc;
}
