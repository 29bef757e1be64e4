/*
 * HTTPS: --tls-self-signed makes a key (0600) and certificate once under
 * <data>/tls/ and prints the certificate's SHA-256 fingerprint, which
 * matches the file (checked with openssl when it is installed) and stays the
 * same across restarts; a client that trusts that certificate gets answers,
 * one that does not or that speaks plain HTTP on the port gets none;
 * --tls-cert/--tls-key serve a given pair; a non-loopback --listen needs a
 * token and TLS.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static const char *const self_signed[] = { "--tls-self-signed", NULL };

static void expect_health(struct bvh *h)
{
    cJSON *j = bvh_json(h, "GET", 200, "/api/v1/health", NULL);
    assert_string_equal(bvh_str(j, "status"), "ok");
    cJSON_Delete(j);
}

/* A request that must not get any HTTP answer. */
static void expect_no_answer(struct bvh *h)
{
    struct bvh_resp r = { 0 };
    int rc = bvh_request(h, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r);
    assert_true(rc != 0 || r.status == 0);
    bvh_resp_free(&r);
}

static void test_self_signed(void **state)
{
    (void)state;
    struct bvh h = { .keep_dir = true };
    struct bvh_opts o = { .args = self_signed };
    assert_int_equal(bvh_start(&h, &o), 0);
    assert_true(h.tls);
    assert_int_equal(strncmp(h.base, "https://", 8), 0);
    assert_int_equal(strlen(h.tls_fingerprint), 32 * 3 - 1);
    expect_health(&h);

    char key[400], cert[400];
    snprintf(key, sizeof(key), "%s/tls/key.pem", h.dir);
    snprintf(cert, sizeof(cert), "%s/tls/cert.pem", h.dir);
    struct stat st;
    assert_int_equal(stat(key, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    if (bvh_have("openssl"))
        assert_int_equal(bvh_sh("openssl x509 -in '%s' -noout -fingerprint -sha256 | "
                                "grep -qx 'sha256 Fingerprint=%s'", cert, h.tls_fingerprint), 0);
    else
        print_message("openssl not installed: fingerprint not cross-checked\n");

    /* a client that does not trust the certificate, and plain HTTP */
    struct bvh untrusting = h;
    untrusting.cainfo = "/dev/null";
    expect_no_answer(&untrusting);
    struct bvh plain = h;
    plain.tls = false;
    snprintf(plain.base, sizeof(plain.base), "http://127.0.0.1:%u", h.port);
    expect_no_answer(&plain);
    expect_health(&h);             /* and the server is still fine */

    /* made once: a restart serves the same certificate */
    char fp[128];
    snprintf(fp, sizeof(fp), "%s", h.tls_fingerprint);
    h.args = self_signed;
    assert_int_equal(bvh_restart(&h), 0);
    assert_string_equal(h.tls_fingerprint, fp);
    expect_health(&h);
    h.keep_dir = false;
    assert_int_equal(bvh_stop(&h), 0);
}

static void test_given_pair(void **state)
{
    (void)state;
    if (!bvh_have("openssl"))
        skip();
    char dir[] = "/tmp/bv-tlspair-XXXXXX";
    assert_non_null(mkdtemp(dir));
    assert_int_equal(bvh_sh("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
                            "-nodes -keyout '%s/k.pem' -out '%s/c.pem' -days 2 "
                            "-subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 "
                            ">/dev/null 2>&1", dir, dir), 0);
    char c[128], k[128];
    snprintf(c, sizeof(c), "%s/c.pem", dir);
    snprintf(k, sizeof(k), "%s/k.pem", dir);
    const char *const args[] = { "--tls-cert", c, "--tls-key", k, NULL };
    struct bvh h = { .cainfo = c };
    struct bvh_opts o = { .args = args };
    assert_int_equal(bvh_start(&h, &o), 0);
    assert_true(h.tls);
    expect_health(&h);
    assert_int_equal(bvh_sh("openssl x509 -in '%s' -noout -fingerprint -sha256 | "
                            "grep -qx 'sha256 Fingerprint=%s'", c, h.tls_fingerprint), 0);
    assert_int_equal(bvh_stop(&h), 0);
    bvh_sh("rm -rf '%s'", dir);
}

/* Start-up refusals: the exit status (2: bad flags, 1: start-up failed) and
 * the sentence on stderr. */
static void expect_refused(const char *dir, int status, const char *args, const char *msg)
{
    int rc = bvh_sh("BLOCKVAULT_TOKEN=t0ken '%s' serve --data '%s' %s >'%s/out' 2>'%s/err'",
                    getenv("BV_DAEMON"), dir, args, dir, dir);
    assert_int_equal(rc, status);
    assert_int_equal(bvh_sh("grep -qF -- '%s' '%s/err'", msg, dir), 0);
    assert_int_equal(bvh_sh("grep -q listening '%s/out'", dir), 1);
}

static void test_refusals(void **state)
{
    (void)state;
    char dir[] = "/tmp/bv-tlsno-XXXXXX";
    assert_non_null(mkdtemp(dir));
    expect_refused(dir, 2, "--listen 0.0.0.0:0",
                   "refusing to listen on non-loopback address 0.0.0.0 without TLS");
    expect_refused(dir, 2, "--listen 127.0.0.1:0 --tls-cert /nonexistent",
                   "--tls-cert and --tls-key go together");
    expect_refused(dir, 2, "--listen 127.0.0.1:0 --tls-self-signed --tls-cert a --tls-key b",
                   "--tls-self-signed and --tls-cert/--tls-key exclude each other");
    expect_refused(dir, 1, "--listen 127.0.0.1:0 --tls-cert /nonexistent --tls-key /nonexistent",
                   "cannot read /nonexistent");
    bvh_sh("rm -rf '%s'", dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_self_signed),
        cmocka_unit_test(test_given_pair),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
