/*
 * fuzz_api.c - the coordinator's request parser and validator (api.c) on
 * any bytes: each input is tried as a POST /v1/transactions body (one-shot
 * or interactive begin, api_parse_tx) and as a POST .../{gtid}/ops body
 * (api_parse_ops), against a fixed config of three shards with small
 * limits, so that the limit checks are within reach.
 *
 * Beyond "no crash, no leak", what the API promises is checked: an accepted
 * request has 1..max_ops ops (none for an interactive begin), each routed to
 * a shard of the config, with a string sql within the limit; a refused one
 * has a DTX_EINVAL error whose message and JSON body can be built. Params
 * are turned into the text the participant binds (jsonx_to_param), as pc.c
 * would.
 */
#include "dtx/api.h"
#include "dtx/coord_config.h"
#include "dtx/jsonx.h"

#include "fuzz.h"

#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

static struct coord_config cfg;

static const char config_json[] =
    "{\"node_id\":\"c1\",\"listen\":\"127.0.0.1:7000\",\"log_dir\":\"/nonexistent/dtx-fuzz\","
    "\"max_ops\":16,\"max_params\":8,\"max_sql_bytes\":512,\"max_timeout_ms\":60000,"
    "\"prepare_timeout_ms\":5000,\"interactive_timeout_ms\":30000,"
    "\"shards\":[{\"name\":\"s1\",\"url\":\"http://127.0.0.1:7101\"},"
    "{\"name\":\"s2\",\"url\":\"http://127.0.0.1:7102\"},"
    "{\"name\":\"s-3_x\",\"url\":\"http://127.0.0.1:7103\"}]}";

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char path[PATH_MAX];
    struct dtx_err err;
    int fd;

    (void)argc;
    (void)argv;
    fuzz_quiet("fuzz_api");
    snprintf(path, sizeof(path), "%s/coordinator.json", fuzz_tmpdir());
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FUZZ_CHECK(fd >= 0);
    FUZZ_CHECK(write(fd, config_json, strlen(config_json)) == (ssize_t)strlen(config_json));
    close(fd);
    dtx_err_clear(&err);
    if (coord_config_load(path, &cfg, &err) < 0) {
        fprintf(stderr, "fuzz_api: test config: %s\n", err.msg);
        abort();
    }
    unlink(path);
    return 0;
}

static void check_params(const cJSON *op)
{
    const cJSON *p;

    cJSON_ArrayForEach(p, cJSON_GetObjectItemCaseSensitive(op, "params"))
    {
        char *text = jsonx_to_param(p);

        FUZZ_CHECK(text || cJSON_IsNull(p));
        free(text);
    }
}

static void check_accepted(const struct txreq *r, bool ops_only)
{
    FUZZ_CHECK(r->root != NULL);
    if (r->interactive) {
        FUZZ_CHECK(!ops_only && r->nops == 0 && r->ops == NULL && r->idem_key == NULL);
        return;
    }
    FUZZ_CHECK(r->nops >= 1 && r->nops <= cfg.max_ops);
    FUZZ_CHECK(ops_only || r->protocol == 2 || r->protocol == 3);
    FUZZ_CHECK(ops_only || (r->timeout_ms >= 1 && r->timeout_ms <= cfg.max_timeout_ms));
    FUZZ_CHECK(!r->idem_key || (strlen(r->idem_key) >= 1 && strlen(r->idem_key) <= 200));
    for (size_t i = 0; i < r->nops; i++) {
        const cJSON *sql = cJSON_GetObjectItemCaseSensitive(r->ops[i].op, "sql");

        FUZZ_CHECK(r->ops[i].shard >= 0 && (size_t)r->ops[i].shard < cfg.nshards);
        FUZZ_CHECK(cJSON_IsString(sql) && strlen(sql->valuestring) <= cfg.max_sql_bytes);
        check_params(r->ops[i].op);
    }
}

static void check_refused(int rc, const struct dtx_err *err)
{
    char *body;

    FUZZ_CHECK(rc == DTX_EINVAL && err->code == DTX_EINVAL);
    FUZZ_CHECK(err->msg[0] != '\0' && strlen(err->msg) < sizeof(err->msg));
    body = jsonx_error_body(err);
    FUZZ_CHECK(body != NULL);
    free(body);
}

static void one(const char *body, size_t len, bool ops_only)
{
    struct dtx_err err;
    struct txreq r;
    int rc;

    dtx_err_clear(&err);
    rc = ops_only ? api_parse_ops(body, len, &cfg, &r, &err)
                  : api_parse_tx(body, len, &cfg, &r, &err);
    if (rc == 0) {
        check_accepted(&r, ops_only);
        api_txreq_release(&r);
    } else {
        check_refused(rc, &err);
    }
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    one((const char *)data, size, false);
    one((const char *)data, size, true);
    return 0;
}
