/*
 * Path confinement: what a client may name, what a recorded backing name may,
 * and — the point of bv_root — that a directory swapped for a symlink to the
 * outside is never followed, whether swapped before the call (after any
 * earlier check of the name) or concurrently in a loop.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bv/path.h"

#define RACE_ROUNDS 3000

static char tmp[256], root[300], outside[300];
static struct bv_root *R;

static void put_file(const char *dir, const char *name, const char *text)
{
    char p[700];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
}

static bool exists_in(const char *dir, const char *name)
{
    char p[700];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

static int setup(void **state)
{
    (void)state;
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
    put_file(root, "a.img", "in");
    put_file(outside, "secret", "out");
    snprintf(p, sizeof(p), "%s/escape", root);
    if (symlink(outside, p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/inlink", root);
    if (symlink("a.img", p) < 0)
        return -1;
    snprintf(p, sizeof(p), "%s/dangle", root);
    if (symlink("../outside/created-by-dangle", p) < 0)
        return -1;
    return bv_root_open(root, &R, NULL);
}

static int teardown(void **state)
{
    (void)state;
    bv_root_close(R);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

/* bv_path_open with the error checked against the return; *text gets its message. */
static int popen_(const char *base, const char *path, unsigned flags, int oflags, int *fd,
                  char **name, char *text, size_t tlen)
{
    bv_error *err = NULL;
    int r = bv_path_open(R, base, path, flags, oflags, 0644, fd, name, &err);
    if (r < 0) {
        assert_non_null(err);
        assert_int_equal(err->err, -r);
        assert_int_equal(*fd, -1);
        if (text)
            snprintf(text, tlen, "%s", err->msg);
    } else {
        assert_null(err);
        assert_true(*fd >= 0);
    }
    bv_error_free(err);
    return r;
}

static int try_open(const char *base, const char *path, unsigned flags)
{
    int fd = -1;
    int r = popen_(base, path, flags, O_RDONLY, &fd, NULL, NULL, 0);
    if (fd >= 0)
        close(fd);
    return r;
}

static void read_text(int fd, char *buf, size_t len)
{
    ssize_t n = pread(fd, buf, len - 1, 0);
    assert_true(n >= 0);
    buf[n] = '\0';
}

static void test_plain_relative(void **state)
{
    (void)state;
    int fd = -1;
    char *name = NULL, buf[16];
    assert_int_equal(popen_(NULL, "a.img", 0, O_RDONLY, &fd, &name, NULL, 0), 0);
    assert_string_equal(name, "a.img");            /* root-relative, never the host path */
    read_text(fd, buf, sizeof(buf));
    assert_string_equal(buf, "in");
    close(fd);
    free(name);
    assert_int_equal(popen_(NULL, "./sub//../inlink", BV_PATH_ALLOW_DOTDOT, O_RDONLY, &fd, &name,
                            NULL, 0), 0);
    assert_string_equal(name, "sub/../inlink");    /* "." and empties dropped */
    read_text(fd, buf, sizeof(buf));
    assert_string_equal(buf, "in");                /* symlink inside root is fine */
    close(fd);
    free(name);
    assert_string_equal(root, R->given);
}

static void test_client_refusals(void **state)
{
    (void)state;
    char abs[400], text[512];
    int fd = -1;
    snprintf(abs, sizeof(abs), "%s/a.img", root);
    assert_int_equal(popen_(NULL, abs, 0, O_RDONLY, &fd, NULL, text, sizeof(text)), -EACCES);
    assert_non_null(strstr(text, "absolute path not allowed"));
    assert_int_equal(popen_(NULL, "sub/../a.img", 0, O_RDONLY, &fd, NULL, text, sizeof(text)),
                     -EACCES);
    assert_string_equal(text, "'..' not allowed in path: sub/../a.img");
    assert_int_equal(try_open(NULL, "..", 0), -EACCES);
    assert_int_equal(popen_(NULL, "escape/secret", 0, O_RDONLY, &fd, NULL, text, sizeof(text)),
                     -EACCES);
    assert_string_equal(text, "path leads outside the allowed directory: escape/secret");
    assert_int_equal(try_open(NULL, "", 0), -EINVAL);
    assert_int_equal(popen_(NULL, "nothere", 0, O_RDONLY, &fd, NULL, text, sizeof(text)),
                     -ENOENT);
    assert_string_equal(text, "Could not open 'nothere': No such file or directory");
}

static void test_recorded_names(void **state)
{
    (void)state;
    char abs[400];
    int fd = -1;
    char *name = NULL;
    assert_int_equal(try_open("sub", "../a.img", BV_PATH_RECORDED), 0);
    snprintf(abs, sizeof(abs), "%s/a.img", root);
    assert_int_equal(popen_("sub", abs, BV_PATH_RECORDED, O_RDONLY, &fd, &name, NULL, 0), 0);
    assert_string_equal(name, "a.img");            /* absolute under the root → relative */
    close(fd);
    free(name);
    snprintf(abs, sizeof(abs), "%s/a.img", R->real);
    assert_int_equal(try_open("sub", abs, BV_PATH_RECORDED), 0);
    assert_int_equal(try_open("sub", "../../outside/secret", BV_PATH_RECORDED), -EACCES);
    snprintf(abs, sizeof(abs), "%s/secret", outside);
    assert_int_equal(try_open("sub", abs, BV_PATH_RECORDED), -EACCES);
    snprintf(abs, sizeof(abs), "%s/../outside/secret", root);   /* prefix, then out */
    assert_int_equal(try_open(NULL, abs, BV_PATH_RECORDED), -EACCES);
    assert_int_equal(try_open("sub", "../escape/secret", BV_PATH_RECORDED), -EACCES);
}

static void test_create_exclusive(void **state)
{
    (void)state;
    int fd = -1;
    char *name = NULL, text[512];
    int cr = O_RDWR | O_CREAT;
    assert_int_equal(popen_(NULL, "sub/new.img", 0, cr, &fd, &name, NULL, 0), 0);
    assert_string_equal(name, "sub/new.img");
    close(fd);
    free(name);
    assert_true(exists_in(root, "sub/new.img"));
    assert_int_equal(popen_(NULL, "sub/new.img", 0, cr, &fd, NULL, text, sizeof(text)), -EEXIST);
    assert_string_equal(text, "Could not open 'sub/new.img': File exists");
    assert_int_equal(popen_(NULL, "escape/new.img", 0, cr, &fd, NULL, NULL, 0), -EACCES);
    assert_false(exists_in(outside, "new.img"));
    /* a dangling symlink is a taken name, never a way to create its target */
    assert_int_equal(popen_(NULL, "dangle", 0, cr, &fd, NULL, NULL, 0), -EEXIST);
    assert_false(exists_in(outside, "created-by-dangle"));
    assert_int_equal(popen_(NULL, ".", 0, cr, &fd, NULL, NULL, 0), -EISDIR);
}

static void expect_unlink(const char *path, int want, const char *text)
{
    bv_error *err = NULL;
    assert_int_equal(bv_path_unlink(R, path, &err), want);
    if (want < 0) {
        assert_non_null(err);
        assert_string_equal(err->msg, text);
    }
    bv_error_free(err);
}

static void test_unlink(void **state)
{
    (void)state;
    put_file(root, "gone.img", "x");
    expect_unlink("gone.img", 0, NULL);
    assert_false(exists_in(root, "gone.img"));
    expect_unlink(".", -EISDIR, "'.' is a directory");
    expect_unlink("sub", -EISDIR, "'sub' is a directory");
    expect_unlink("sub/", -EISDIR, "'sub/' is a directory");
    expect_unlink("a.img/", -ENOTDIR, "Could not delete 'a.img/': Not a directory");
    expect_unlink("escape/secret", -EACCES,
                  "path leads outside the allowed directory: escape/secret");
    assert_true(exists_in(outside, "secret"));
    expect_unlink("nothere", -ENOENT, "Could not delete 'nothere': No such file or directory");
    expect_unlink("../outside/secret", -EACCES, "'..' not allowed in path: ../outside/secret");
    /* unlinking a symlink removes the link, not its target */
    char p[400];
    snprintf(p, sizeof(p), "%s/link2", root);
    assert_int_equal(symlink("a.img", p), 0);
    expect_unlink("link2", 0, NULL);
    assert_true(exists_in(root, "a.img"));
}

/* bv_path_sync_parent opens the holding directory as bv_path_open does: inside the root
 * it syncs (a bare name: the root itself), a missing directory is -ENOENT and a name
 * through a symlink or '..' out of the root is refused, never synced. */
static void test_sync_parent(void **state)
{
    (void)state;
    assert_int_equal(bv_path_sync_parent(R, "a.img"), 0);
    assert_int_equal(bv_path_sync_parent(R, "sub/new.img"), 0);
    assert_int_equal(bv_path_sync_parent(R, "nothere/x.img"), -ENOENT);
    assert_int_equal(bv_path_sync_parent(R, "escape/secret"), -EACCES);
    assert_int_equal(bv_path_sync_parent(R, "../outside/secret"), -EACCES);
}

/* Replace root/<dir> (a directory) by a symlink to the outside directory. */
static void swap_for_symlink(const char *dir)
{
    char p[400], q[400];
    snprintf(p, sizeof(p), "%s/%s", root, dir);
    snprintf(q, sizeof(q), "%s/%s.moved", root, dir);
    assert_int_equal(rename(p, q), 0);
    assert_int_equal(symlink(outside, p), 0);
}

/* The name is "checked" (it opens fine), then the directory in its middle
 * is swapped: every later operation on the same name is refused. */
static void test_swap_after_check(void **state)
{
    (void)state;
    char p[400];
    snprintf(p, sizeof(p), "%s/d", root);
    assert_int_equal(mkdir(p, 0755), 0);
    put_file(p, "secret", "in");
    put_file(outside, "victim", "out");
    struct stat st;
    assert_int_equal(bv_path_stat(R, "d/secret", &st, NULL), 0);
    assert_int_equal(try_open(NULL, "d/secret", 0), 0);
    swap_for_symlink("d");
    assert_int_equal(try_open(NULL, "d/secret", 0), -EACCES);
    assert_int_equal(bv_path_stat(R, "d/secret", &st, NULL), -EACCES);
    int fd = -1;
    assert_int_equal(popen_(NULL, "d/new", 0, O_RDWR | O_CREAT, &fd, NULL, NULL, 0), -EACCES);
    assert_false(exists_in(outside, "new"));
    expect_unlink("d/victim", -EACCES, "path leads outside the allowed directory: d/victim");
    assert_true(exists_in(outside, "victim"));
    assert_int_equal(try_open("d", "victim", BV_PATH_RECORDED), -EACCES);
}

/* ---- a thread swaps root/r between a directory and a symlink out ---- */

struct swapper {
    atomic_bool stop;
    unsigned swaps;
};

static void *swap_loop(void *opaque)
{
    struct swapper *s = opaque;
    char r[400], link[400];
    snprintf(r, sizeof(r), "%s/r", root);
    snprintf(link, sizeof(link), "%s/r.link", root);
    while (!atomic_load(&s->stop)) {
        if (renameat2(AT_FDCWD, r, AT_FDCWD, link, RENAME_EXCHANGE) == 0)
            s->swaps++;
    }
    return NULL;
}

struct race_counts {
    unsigned opened, created, unlinked;
};

static void race_round(struct race_counts *c)
{
    int fd = -1;
    char buf[16];
    if (popen_(NULL, "r/f", 0, O_RDONLY, &fd, NULL, NULL, 0) == 0) {
        read_text(fd, buf, sizeof(buf));
        assert_string_equal(buf, "in");            /* never the outside file's bytes */
        close(fd);
        c->opened++;
    }
    if (popen_(NULL, "r/x", 0, O_RDWR | O_CREAT, &fd, NULL, NULL, 0) == 0) {
        close(fd);
        c->created++;
    }
    assert_false(exists_in(outside, "x"));
    if (bv_path_unlink(R, "r/x", NULL) == 0)
        c->unlinked++;
    bv_path_unlink(R, "r/victim", NULL);          /* exists only outside */
    assert_true(exists_in(outside, "victim"));
}

static void test_swap_race(void **state)
{
    (void)state;
    char p[400];
    snprintf(p, sizeof(p), "%s/r", root);
    assert_int_equal(mkdir(p, 0755), 0);
    put_file(p, "f", "in");
    put_file(outside, "f", "out");
    put_file(outside, "victim", "out");
    snprintf(p, sizeof(p), "%s/r.link", root);
    assert_int_equal(symlink(outside, p), 0);
    struct swapper s = { .stop = false };
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, swap_loop, &s), 0);
    struct race_counts c = { 0 };
    for (int i = 0; i < RACE_ROUNDS; i++)
        race_round(&c);
    atomic_store(&s.stop, true);
    pthread_join(t, NULL);
    print_message("swaps %u, opened %u, created %u, unlinked %u of %d rounds\n", s.swaps,
                  c.opened, c.created, c.unlinked, RACE_ROUNDS);
    assert_true(s.swaps > 0);
    assert_true(c.opened > 0 && c.created > 0);    /* the inside path did work meanwhile */
    assert_false(exists_in(outside, "x"));
    assert_true(exists_in(outside, "victim"));
}

/* The fallback walk (kernels without openat2) refuses every symlink. */
static void test_walk_fallback(void **state)
{
    (void)state;
    int fd = bv_path_walk_open(R->fd, "sub/../a.img", O_RDONLY, 0);
    assert_true(fd >= 0);
    char buf[16];
    read_text(fd, buf, sizeof(buf));
    assert_string_equal(buf, "in");
    close(fd);
    assert_int_equal(bv_path_walk_open(R->fd, "escape/secret", O_RDONLY, 0), -ELOOP);
    assert_int_equal(bv_path_walk_open(R->fd, "inlink", O_RDONLY, 0), -ELOOP);
    assert_int_equal(bv_path_walk_open(R->fd, "inlink", O_PATH, 0), -ELOOP);
    assert_int_equal(bv_path_walk_open(R->fd, "../outside/secret", O_RDONLY, 0), -EXDEV);
    assert_int_equal(bv_path_walk_open(R->fd, "sub/../../outside/secret", O_RDONLY, 0), -EXDEV);
    assert_int_equal(bv_path_walk_open(R->fd, "sub/none", O_RDONLY, 0), -ENOENT);
    fd = bv_path_walk_open(R->fd, "sub/walk.img", O_RDWR | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    close(fd);
    assert_true(exists_in(root, "sub/walk.img"));
}

static void test_no_root(void **state)
{
    (void)state;
    char abs[400];
    int fd = -1;
    char *name = NULL;
    snprintf(abs, sizeof(abs), "%s/secret", outside);
    assert_int_equal(bv_path_open(NULL, NULL, abs, 0, O_RDONLY, 0, &fd, &name, NULL), 0);
    char *want = realpath(abs, NULL);
    assert_string_equal(name, want);               /* canonical host path */
    free(want);
    free(name);
    close(fd);
    bv_error *err = NULL;
    assert_int_equal(bv_root_open("/nonexistent/bv-root", &(struct bv_root *){ NULL }, &err),
                     -ENOENT);
    assert_string_equal(err->msg, "root directory /nonexistent/bv-root: No such file or directory");
    bv_error_free(err);
}

static void test_helpers(void **state)
{
    (void)state;
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
    d = bv_path_dirname("z");
    assert_string_equal(d, ".");
    free(d);
    char *n = NULL;
    assert_int_equal(bv_path_name(R, "sub", "./x//y/.", 0, &n, NULL), 0);
    assert_string_equal(n, "sub/x/y");
    free(n);
    assert_int_equal(bv_path_name(R, NULL, "./", 0, &n, NULL), 0);
    assert_string_equal(n, ".");
    free(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_relative),
        cmocka_unit_test(test_client_refusals),
        cmocka_unit_test(test_recorded_names),
        cmocka_unit_test(test_create_exclusive),
        cmocka_unit_test(test_unlink),
        cmocka_unit_test(test_sync_parent),
        cmocka_unit_test(test_swap_after_check),
        cmocka_unit_test(test_swap_race),
        cmocka_unit_test(test_walk_fallback),
        cmocka_unit_test(test_no_root),
        cmocka_unit_test(test_helpers),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
