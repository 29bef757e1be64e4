/*
 * The pure parts of notifications (runtime/notify.h): the signature (RFC
 * 4231 test case 7, whose data has the '.' that joins timestamp and body,
 * and a webhook-shaped example computed with Python's hmac module), the
 * backoff schedule (doubling from the base, capped at one hour, no
 * overflow), event names to bits, and URL checks.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "runtime/notify.h"

static void test_sign(void **state)
{
    (void)state;
    char sig[BV_NOTIFY_SIG_SIZE];
    const char *body = "{\"event\":\"job_failed\"}";
    assert_int_equal(bv_notify_sign("whsec-0123456789", "1700000000", body, strlen(body), sig), 0);
    assert_string_equal(sig, "sha256=2f4f96dbf693a1bfa36a3f1ac2292710e0841612bf5b753c2b25b1318ba9fb68");

    char key[132];
    memset(key, 0xaa, 131);
    key[131] = '\0';
    const char *ts = "This is a test using a larger than block-size key and a larger than "
                     "block-size data";
    const char *rest = " The key needs to be hashed before being used by the HMAC algorithm.";
    assert_int_equal(bv_notify_sign(key, ts, rest, strlen(rest), sig), 0);
    assert_string_equal(sig, "sha256=9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2");

    /* the body's bytes count, not its C string: a different length, a different MAC */
    char other[BV_NOTIFY_SIG_SIZE];
    assert_int_equal(bv_notify_sign("whsec-0123456789", "1700000000", body, strlen(body) - 1,
                                    other), 0);
    assert_string_not_equal(sig, other);
}

static void test_backoff(void **state)
{
    (void)state;
    assert_int_equal(bv_notify_backoff_ms(30000, 1), 30000);
    assert_int_equal(bv_notify_backoff_ms(30000, 2), 60000);
    assert_int_equal(bv_notify_backoff_ms(30000, 3), 120000);
    assert_int_equal(bv_notify_backoff_ms(30000, 7), 1920000);
    assert_int_equal(bv_notify_backoff_ms(30000, 8), BV_NOTIFY_BACKOFF_MAX_MS);
    assert_int_equal(bv_notify_backoff_ms(30000, 100), BV_NOTIFY_BACKOFF_MAX_MS);
    assert_int_equal(bv_notify_backoff_ms(100, 4), 800);
    assert_int_equal(bv_notify_backoff_ms(3600000, 1), BV_NOTIFY_BACKOFF_MAX_MS);
    assert_int_equal(bv_notify_backoff_ms(10, INT64_MAX), BV_NOTIFY_BACKOFF_MAX_MS);
}

static void test_events(void **state)
{
    (void)state;
    uint32_t set = 0;
    bv_error *e = NULL;
    const char *all[] = { "space_low", "job_failed", "corruption", "protection_stale" };
    assert_int_equal(bv_notify_events_parse(all, 4, &set, NULL), 0);
    assert_int_equal(set, 0xf);
    const char *one[] = { "corruption" };
    assert_int_equal(bv_notify_events_parse(one, 1, &set, NULL), 0);
    assert_int_equal(set, 1u << BV_NOTIFY_CORRUPTION);
    assert_int_equal(bv_notify_events_parse(one, 0, &set, &e), -EINVAL);
    bv_error_free(e);
    e = NULL;
    const char *bad[] = { "job_failed", "job_done" };
    assert_int_equal(bv_notify_events_parse(bad, 2, &set, &e), -EINVAL);
    assert_non_null(strstr(e->msg, "events[1]: 'job_done'"));
    bv_error_free(e);
    e = NULL;
    const char *twice[] = { "space_low", "space_low" };
    assert_int_equal(bv_notify_events_parse(twice, 2, &set, &e), -EINVAL);
    assert_non_null(strstr(e->msg, "given twice"));
    bv_error_free(e);
}

static void test_url(void **state)
{
    (void)state;
    const char *good[] = { "http://127.0.0.1:8080/hook", "https://hooks.example.com/x?y=1",
                           "HTTPS://example.com", "http://[::1]:9/a" };
    const char *bad[] = { "", "ftp://example.com/", "file:///etc/passwd", "http:///x",
                          "http://", "https://?q", "http://a b/", "http://example.com/\n",
                          "example.com/hook", "http://[::1/" };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        assert_int_equal(bv_notify_check_url(good[i], NULL), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        bv_error *e = NULL;
        if (bv_notify_check_url(bad[i], &e) != -EINVAL)
            fail_msg("'%s' was accepted", bad[i]);
        assert_int_equal(strncmp(e->msg, "url:", 4), 0);
        bv_error_free(e);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign),
        cmocka_unit_test(test_backoff),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
