/* Router matching, token check and start-up configuration rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "http/auth.h"
#include "http/router.h"
#include "json/json.h"

static void h_a(struct bv_request *q, struct bv_reply *r) { (void)q; (void)r; }
static void h_b(struct bv_request *q, struct bv_reply *r) { (void)q; (void)r; }

static const struct bv_route table[] = {
    { "GET", "/api/v1/drives/{id}", h_a, 0 },
    { "GET", "/api/v1/drives/{id}/bitmaps/{name}", h_b, 0 },
    { "POST", "/api/v1/drives/{id}/bitmaps/{name}/clear", h_a, 0 },
    { "GET", "/api/v1/images/{*file}", h_b, 0 },
};

static void test_router(void **state)
{
    (void)state;
    struct bv_request req;
    const struct bv_route *rt = NULL;
    char scratch[256];
    size_t n = sizeof(table) / sizeof(table[0]);
    assert_int_equal(bv_route_find(table, n, "GET", "/api/v1/drives/d0/bitmaps/b1", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_FOUND);
    assert_ptr_equal(rt, &table[1]);
    assert_int_equal(req.nparams, 2);
    assert_string_equal(req.params[0], "d0");
    assert_string_equal(req.params[1], "b1");
    assert_int_equal(bv_route_find(table, n, "GET", "/api/v1/images/sub/dir/x.qcow2", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_FOUND);
    assert_string_equal(req.params[0], "sub/dir/x.qcow2");
    assert_int_equal(bv_route_find(table, n, "DELETE", "/api/v1/drives/d0", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_NO_METHOD);
    assert_int_equal(bv_route_find(table, n, "GET", "/api/v1/drives/", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_NO_PATH);
    assert_int_equal(bv_route_find(table, n, "GET", "/api/v1/drives/d0/x", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_NO_PATH);
    assert_int_equal(bv_route_find(table, n, "GET", "/api/v1/drivesX/d0", &req, &rt,
                                   scratch, sizeof(scratch)), BV_ROUTE_NO_PATH);
}

static void test_auth(void **state)
{
    (void)state;
    assert_true(bv_auth_ok(NULL, NULL));
    assert_false(bv_auth_ok("tok", NULL));
    assert_false(bv_auth_ok("tok", "Bearer to"));
    assert_false(bv_auth_ok("tok", "Bearer tokk"));
    assert_false(bv_auth_ok("tok", "Basic tok"));
    assert_true(bv_auth_ok("tok", "Bearer tok"));
    assert_true(bv_auth_ok("tok", "bearer tok"));
    /* an empty configured token matches nothing, an empty bearer never passes */
    assert_false(bv_auth_ok("", "Bearer "));
    assert_false(bv_auth_ok("", "Bearer"));
    assert_false(bv_auth_ok("", NULL));
    assert_false(bv_auth_ok("tok", "Bearer "));
}

/* A blank token from any source refuses start-up; it never becomes an empty
 * token that "Authorization: Bearer " would match. */
static void test_config_blank_token(void **state)
{
    (void)state;
    struct bv_config cfg;
    char err[256];
    char *nonloop[] = { "serve", "--listen", "0.0.0.0:8080", NULL };
    char *loop[] = { "serve", "--listen", "127.0.0.1:0", NULL };
    static const char *const blanks[] = { "", "   ", "\t\n", " \r\n " };
    for (size_t i = 0; i < sizeof(blanks) / sizeof(blanks[0]); i++) {
        setenv("BLOCKVAULT_TOKEN", blanks[i], 1);
        err[0] = '\0';
        assert_int_equal(bv_config_parse(3, nonloop, &cfg, err, sizeof(err)), -1);
        assert_string_equal(err, "BLOCKVAULT_TOKEN is set but empty or blank; set a token or "
                                 "unset the variable");
        assert_null(cfg.token);
        assert_int_equal(bv_config_parse(3, loop, &cfg, err, sizeof(err)), -1);
    }
    setenv("BLOCKVAULT_TOKEN", "  s3cret \n", 1);
    assert_int_equal(bv_config_parse(3, nonloop, &cfg, err, sizeof(err)), -1);
    assert_string_equal(err, "refusing to listen on non-loopback address 0.0.0.0 without TLS "
                             "(use --tls-cert/--tls-key or --tls-self-signed)");
    char *nonloop_tls[] = { "serve", "--listen", "0.0.0.0:8080", "--tls-self-signed", NULL };
    assert_int_equal(bv_config_parse(4, nonloop_tls, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.token, "s3cret");
    bv_config_free(&cfg);
    unsetenv("BLOCKVAULT_TOKEN");

    char path[] = "/tmp/test_http_tokenXXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, " \t \n\n", 5), 5);
    close(fd);
    char *withfile[] = { "serve", "--listen", "0.0.0.0:8080", "--token-file", path, NULL };
    err[0] = '\0';
    assert_int_equal(bv_config_parse(5, withfile, &cfg, err, sizeof(err)), -1);
    char want[128];
    snprintf(want, sizeof(want), "--token-file %s is empty or blank", path);
    assert_string_equal(err, want);
    unlink(path);
}

static void test_config(void **state)
{
    (void)state;
    assert_true(bv_config_is_loopback("127.0.0.1"));
    assert_true(bv_config_is_loopback("127.9.8.7"));
    assert_true(bv_config_is_loopback("::1"));
    assert_false(bv_config_is_loopback("0.0.0.0"));
    assert_false(bv_config_is_loopback("10.0.0.1"));
    assert_false(bv_config_is_loopback("::"));

    unsetenv("BLOCKVAULT_TOKEN");
    struct bv_config cfg;
    char err[256];
    char *a1[] = { "serve", "--listen", "127.0.0.1:0", "--data", "/tmp/x", "--workers", "3", NULL };
    assert_int_equal(bv_config_parse(7, a1, &cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.port, 0);
    assert_int_equal(cfg.workers, 3);
    assert_string_equal(cfg.data_dir, "/tmp/x");
    bv_config_free(&cfg);

    char *a2[] = { "serve", "--listen", "0.0.0.0:8080", NULL };
    assert_int_equal(bv_config_parse(3, a2, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "without a token"));
    setenv("BLOCKVAULT_TOKEN", "t0k", 1);
    assert_int_equal(bv_config_parse(3, a2, &cfg, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "without TLS"));
    char *a2tls[] = { "serve", "--listen", "0.0.0.0:8080", "--tls-cert", "c", "--tls-key", "k",
                      NULL };
    assert_int_equal(bv_config_parse(7, a2tls, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.token, "t0k");
    assert_string_equal(cfg.tls_cert, "c");
    bv_config_free(&cfg);
    unsetenv("BLOCKVAULT_TOKEN");

    char *a3[] = { "serve", "--listen", "127.0.0.1:99999", NULL };
    assert_int_equal(bv_config_parse(3, a3, &cfg, err, sizeof(err)), -1);
    char *a4[] = { "serve", "--workers", "0", NULL };
    assert_int_equal(bv_config_parse(3, a4, &cfg, err, sizeof(err)), -1);
    char *a5[] = { "serve", "--bogus", NULL };
    assert_int_equal(bv_config_parse(2, a5, &cfg, err, sizeof(err)), -1);
    char *a6[] = { "serve", "--listen", "[::1]:0", NULL };
    assert_int_equal(bv_config_parse(3, a6, &cfg, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen_addr, "::1");
    bv_config_free(&cfg);
}

/* An error reply is valid JSON even when the text it quotes was cut inside
 * a UTF-8 sequence to fit a buffer (found by fuzz_json_body). */
static void assert_reply_parses(struct bv_reply *rep)
{
    char err[256];
    cJSON *o = bvj_parse_object(rep->body, rep->len, err, sizeof(err));
    if (!o)
        fail_msg("reply is not strict JSON: %s", err);
    cJSON_Delete(o);
}

static void test_error_reply_utf8(void **state)
{
    (void)state;
    struct bv_reply rep = { 0 };
    bv_reply_error(&rep, 400, NULL, "%s", "caf\xc3\xa9 \xe2\x82 cut \xc3");
    assert_reply_parses(&rep);
    assert_non_null(strstr(rep.body, "caf\xc3\xa9 ?? cut ?"));
    free(rep.body);

    /* an unknown key of 300 two-byte characters, through a body's field table
     * into api_read_body's 512-byte buffer */
    char body[1024] = "{\"a";
    for (int i = 0; i < 300; i++)
        strcat(body, "\xc3\xa9");
    strcat(body, "\":1}");
    char err[512];
    const char *id = NULL;
    const struct bvj_field f[] = { { "id", BVJ_STRING, false, &id } };
    cJSON *o = bvj_parse_object(body, strlen(body), err, sizeof(err));
    assert_non_null(o);
    assert_int_equal(bvj_read(o, f, 1, err, sizeof(err)), -1);
    cJSON_Delete(o);
    memset(&rep, 0, sizeof(rep));
    bv_reply_error(&rep, 400, NULL, "%s", err);
    assert_reply_parses(&rep);
    free(rep.body);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_router),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_config_blank_token),
        cmocka_unit_test(test_error_reply_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
