/* Path confinement: what a client may name, and what a recorded backing name may. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bv/path.h"

static char tmp[256], root[300], outside[300];

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/bvpathXXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(root, sizeof(root), "%s/root", tmp);
    snprintf(outside, sizeof(outside), "%s/outside", tmp);
    char p[400];
    mkdir(root, 0755);
    mkdir(outside, 0755);
    snprintf(p, sizeof(p), "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/a.img", root);
    close(open(p, O_CREAT | O_WRONLY, 0644));
    snprintf(p, sizeof(p), "%s/secret", outside);
    close(open(p, O_CREAT | O_WRONLY, 0644));
    snprintf(p, sizeof(p), "%s/escape", root);
    if (symlink(outside, p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/inlink", root);
    if (symlink("a.img", p) < 0)
        return -1;
    return 0;
}

static int teardown(void **state)
{
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static int resolve(const char *base, const char *path, unsigned flags, char **out)
{
    bv_error *err = NULL;
    int r = bv_path_resolve(root, base, path, flags, out, &err);
    if (r < 0) {
        assert_non_null(err);
        assert_int_equal(err->err, -r);
    }
    bv_error_free(err);
    return r;
}

static void test_plain_relative(void **state)
{
    char *out = NULL, want[400];
    assert_int_equal(resolve(NULL, "a.img", 0, &out), 0);
    char *rr = realpath(root, NULL);
    snprintf(want, sizeof(want), "%s/a.img", rr);
    assert_string_equal(out, want);
    free(out);
    assert_int_equal(resolve(NULL, "inlink", 0, &out), 0);
    assert_string_equal(out, want);       /* symlink inside root is fine */
    free(out);
    free(rr);
}

static void test_client_refusals(void **state)
{
    char *out = (char *)1, abs[400];
    snprintf(abs, sizeof(abs), "%s/a.img", root);
    assert_int_equal(resolve(NULL, abs, 0, &out), -EACCES);
    assert_null(out);
    assert_int_equal(resolve(NULL, "sub/../a.img", 0, &out), -EACCES);
    assert_int_equal(resolve(NULL, "..", 0, &out), -EACCES);
    assert_int_equal(resolve(NULL, "escape/secret", 0, &out), -EACCES);
    assert_int_equal(resolve(NULL, "", 0, &out), -EINVAL);
    assert_int_equal(resolve(NULL, "nothere", 0, &out), -ENOENT);
}

static void test_recorded_names(void **state)
{
    char *out = NULL, sub[400], abs[400];
    snprintf(sub, sizeof(sub), "%s/sub", root);
    unsigned f = BV_PATH_ALLOW_ABSOLUTE | BV_PATH_ALLOW_DOTDOT;
    assert_int_equal(resolve(sub, "../a.img", f, &out), 0);
    free(out);
    snprintf(abs, sizeof(abs), "%s/a.img", root);
    assert_int_equal(resolve(sub, abs, f, &out), 0);
    free(out);
    assert_int_equal(resolve(sub, "../../outside/secret", f, &out), -EACCES);
    snprintf(abs, sizeof(abs), "%s/secret", outside);
    assert_int_equal(resolve(sub, abs, f, &out), -EACCES);
    assert_int_equal(resolve(sub, "../escape/secret", f, &out), -EACCES);
}

static void test_create_and_open(void **state)
{
    char *out = NULL;
    int fd = -1;
    bv_error *err = NULL;
    assert_int_equal(resolve(NULL, "new.img", BV_PATH_MAY_NOT_EXIST, &out), 0);
    assert_non_null(strstr(out, "/root/new.img"));
    free(out);
    assert_int_equal(resolve(NULL, "escape/new.img", BV_PATH_MAY_NOT_EXIST, &out), -EACCES);
    assert_int_equal(bv_path_open(root, NULL, "sub/x.img", BV_PATH_MAY_NOT_EXIST,
                                  O_RDWR | O_CREAT, 0644, &fd, &out, &err), 0);
    assert_true(fd >= 0);
    assert_non_null(strstr(out, "/root/sub/x.img"));
    close(fd);
    free(out);
    assert_int_equal(bv_path_open(root, NULL, "escape/secret", 0, O_RDONLY, 0, &fd, NULL, &err),
                     -EACCES);
    assert_int_equal(fd, -1);
    bv_error_free(err);
    /* without a root nothing is confined */
    char abs[400];
    snprintf(abs, sizeof(abs), "%s/secret", outside);
    assert_int_equal(bv_path_resolve(NULL, NULL, abs, 0, &out, NULL), 0);
    free(out);
}

static void test_helpers(void **state)
{
    assert_true(bv_path_is_inside("/a/b", "/a/b"));
    assert_true(bv_path_is_inside("/a/b", "/a/b/c"));
    assert_false(bv_path_is_inside("/a/b", "/a/bc"));
    assert_true(bv_path_is_inside("/", "/x"));
    char *d = bv_path_dirname("/x/y/z");
    assert_string_equal(d, "/x/y");
    free(d);
    d = bv_path_dirname("/z");
    assert_string_equal(d, "/");
    free(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_relative),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_recorded_names),
        cmocka_unit_test(test_create_and_open),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
