/* The drive write path: bitmaps, before-write notifiers, quiesce, claim, resize. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bv/drive.h"

static char dir[64];

static bv_drive *make_drive(const char *name, uint64_t size)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct bv_create_opts co = { .path = path, .format = BV_FMT_QCOW2, .size = size };
    assert_int_equal(bv_image_create(&co, NULL), 0);
    struct bv_open_opts oo = { .path = path, .format = BV_FMT_QCOW2 };
    bv_node *n = NULL;
    assert_int_equal(bv_node_open(&oo, &n, NULL), 0);
    bv_drive *d = NULL;
    assert_int_equal(bv_drive_new(name, n, &d, NULL), 0);
    return d;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof(dir), "/tmp/bv-drive-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static uint64_t count(bv_drive *d, const char *name)
{
    struct bv_bitmap_set *set = bv_drive_bitmaps(d);
    struct bv_bitmap_info bi;
    bv_bitmap_query(set, bv_bitmap_find(set, name), &bi);
    return bi.count;
}

static void test_writes_mark_bitmaps(void **state)
{
    (void)state;
    bv_drive *d = make_drive("m.qcow2", 64 << 20);
    struct bv_bitmap_set *set = bv_drive_bitmaps(d);
    assert_int_equal(bv_bitmap_add(set, "b", 65536, 0, NULL, NULL), 0);
    char buf[512];
    memset(buf, 0xab, sizeof(buf));
    assert_int_equal(bv_drive_pwrite(d, buf, 512, 0, 0, NULL), 0);
    assert_int_equal(bv_drive_write_zeroes(d, 256 << 10, 16 << 20, 0, NULL), 0);
    assert_int_equal(bv_drive_discard(d, 64 << 10, 32736 << 10, NULL), 0);
    assert_int_equal(count(d, "b"), 458752);    /* P1's shape: 1 + 4 + 2 granules */
    /* reads do not mark; a refused write past the end marks nothing */
    assert_int_equal(bv_drive_pread(d, buf, 512, 8 << 20, NULL), 0);
    bv_error *e = NULL;
    assert_int_equal(bv_drive_pwrite(d, buf, 512, 64 << 20, 0, &e), -EINVAL);
    assert_non_null(strstr(e->msg, "past the end"));
    bv_error_free(e);
    assert_int_equal(count(d, "b"), 458752);
    assert_int_equal(bv_drive_free(d, NULL), 0);
}

struct cbw {
    bv_drive *d;
    int calls;
    uint64_t off, len;
    unsigned char seen;      /* first byte of the old data at the time of the call */
    int fail;
};

static int before_write(void *opaque, uint64_t off, uint64_t len, bv_error **errp)
{
    struct cbw *c = opaque;
    c->calls++;
    c->off = off;
    c->len = len;
    /* the old data is still there: this is where a backup copies it out */
    bv_node_pread(bv_drive_node(c->d), &c->seen, 1, off, NULL);
    if (c->fail)
        return bv_error_setf(errp, EIO, "copy-before-write failed");
    return 0;
}

static void test_notifier_sees_old_data(void **state)
{
    (void)state;
    bv_drive *d = make_drive("n.qcow2", 1 << 20);
    char buf[4096];
    memset(buf, 0x11, sizeof(buf));
    assert_int_equal(bv_drive_pwrite(d, buf, 4096, 0, 0, NULL), 0);
    struct cbw c = { .d = d };
    struct bv_drive_notifier n = { .before_write = before_write, .opaque = &c };
    bv_drive_quiesce(d);
    bv_drive_add_notifier_quiesced(d, &n);
    bv_drive_unquiesce(d);
    memset(buf, 0x22, sizeof(buf));
    assert_int_equal(bv_drive_pwrite(d, buf, 4096, 0, 0, NULL), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.seen, 0x11);
    assert_int_equal(c.off, 0);
    assert_int_equal(c.len, 4096);
    /* a failing notifier fails the write and the data stays */
    c.fail = 1;
    memset(buf, 0x33, sizeof(buf));
    assert_int_equal(bv_drive_pwrite(d, buf, 4096, 0, 0, NULL), -EIO);
    unsigned char b0;
    assert_int_equal(bv_drive_pread(d, &b0, 1, 0, NULL), 0);
    assert_int_equal(b0, 0x22);
    bv_drive_remove_notifier(d, &n);
    assert_int_equal(bv_drive_pwrite(d, buf, 4096, 0, 0, NULL), 0);
    assert_int_equal(c.calls, 2);
    assert_int_equal(bv_drive_free(d, NULL), 0);
}

static void test_claim_and_resize(void **state)
{
    (void)state;
    bv_drive *d = make_drive("drive0", 64 << 20);
    struct bv_bitmap_set *set = bv_drive_bitmaps(d);
    assert_int_equal(bv_bitmap_add(set, "bitmap0", 65536, 0, NULL, NULL), 0);
    assert_int_equal(bv_drive_claim(d, "backup", NULL), 0);
    assert_true(bv_drive_busy(d));
    bv_error *e = NULL;
    assert_int_equal(bv_drive_claim(d, "backup", &e), -EBUSY);
    assert_string_equal(e->msg, "Node 'drive0' is busy: block device is in use by block job: backup");
    bv_error_free(e);
    e = NULL;
    assert_int_equal(bv_drive_resize(d, 65 << 20, false, &e), -EBUSY);
    assert_string_equal(e->msg, "Device 'drive0' is in use");
    bv_error_free(e);
    bv_drive_release(d);
    assert_false(bv_drive_busy(d));
    assert_int_equal(bv_drive_resize(d, 68157440, false, NULL), 0);
    assert_int_equal(bv_drive_size(d), 68157440);
    char buf[65536];
    memset(buf, 0x5, sizeof(buf));
    assert_int_equal(bv_drive_pwrite(d, buf, sizeof(buf), 64 << 20, 0, NULL), 0);
    assert_int_equal(count(d, "bitmap0"), 65536);
    e = NULL;
    assert_int_equal(bv_drive_resize(d, 1 << 20, false, &e), -EINVAL);
    bv_error_free(e);
    assert_int_equal(bv_drive_resize(d, 1 << 20, true, NULL), 0);
    assert_int_equal(bv_drive_size(d), 1 << 20);
    assert_int_equal(count(d, "bitmap0"), 0);       /* bits past the new end dropped */
    assert_int_equal(bv_drive_free(d, NULL), 0);
}

struct writer {
    bv_drive *d;
    int id;
};

static void *writer_main(void *opaque)
{
    struct writer *w = opaque;
    char buf[4096];
    memset(buf, w->id, sizeof(buf));
    for (int i = 0; i < 64; i++) {
        uint64_t off = ((uint64_t)(w->id * 64 + i)) * 65536;
        if (bv_drive_pwrite(w->d, buf, sizeof(buf), off, 0, NULL) < 0)
            return (void *)1;
    }
    return NULL;
}

/* Four writers on distinct granules while a quiescer comes and goes: every
 * write lands and is counted exactly once. */
static void test_concurrent_writers(void **state)
{
    (void)state;
    bv_drive *d = make_drive("c.qcow2", 64 << 20);
    assert_int_equal(bv_bitmap_add(bv_drive_bitmaps(d), "b", 65536, 0, NULL, NULL), 0);
    pthread_t t[4];
    struct writer w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct writer){ d, i + 1 };
        pthread_create(&t[i], NULL, writer_main, &w[i]);
    }
    for (int i = 0; i < 20; i++) {
        bv_drive_quiesce(d);
        bv_drive_unquiesce(d);
    }
    for (int i = 0; i < 4; i++) {
        void *rv;
        pthread_join(t[i], &rv);
        assert_null(rv);
    }
    assert_int_equal(count(d, "b"), 4 * 64 * 65536);
    for (int id = 1; id <= 4; id++) {
        unsigned char b;
        assert_int_equal(bv_drive_pread(d, &b, 1, (uint64_t)(id * 64 + 63) * 65536, NULL), 0);
        assert_int_equal(b, id);
    }
    assert_int_equal(bv_drive_free(d, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_writes_mark_bitmaps),
        cmocka_unit_test(test_notifier_sees_old_data),
        cmocka_unit_test(test_claim_and_resize),
        cmocka_unit_test(test_concurrent_writers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
