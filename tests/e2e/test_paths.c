/*
 * The storage directory holds against a symlink race (issue 9, defect 2): a
 * thread keeps swapping a directory inside <data>/images with a symlink to a
 * directory outside while CLIENTS concurrent clients run POST /images, GET
 * /images/{file}, DELETE /images/{file} and POST /drives through it; nothing
 * outside may ever be created, deleted or read (before the fd-confined paths,
 * these rounds did all three, dozens of times each).  Also: a file is created
 * exclusively (a concurrent POST /drives and POST /images of one name: one
 * 201, one 409), and deleting a directory is a 400 that says so (defect 8).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

#define SWAP_ROUNDS 1200            /* split over CLIENTS concurrent clients */
#define CLIENTS 4
#define CREATE_ROUNDS 30
#define INSIDE_SIZE 1048576         /* d/secret.raw inside; the outside one is 2 MiB */

static struct bvh H;
static char outside[64];

static int setup(void **state)
{
    (void)state;
    snprintf(outside, sizeof(outside), "/tmp/bv-paths-outside-XXXXXX");
    if (!mkdtemp(outside))
        return -1;
    H.path_as_is = true;                 /* DELETE /images/. reaches the daemon as written */
    return bvh_start(&H, NULL);
}

static int teardown(void **state)
{
    (void)state;
    bvh_stop(&H);
    bvh_sh("rm -rf %s", outside);
    return 0;
}

static long call(const char *method, const char *path, const char *body, struct bvh_resp *out)
{
    struct bvh_resp r = { 0 };
    if (bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r) < 0)
        r.status = -1;
    long st = r.status;
    if (out)
        *out = r;
    else
        bvh_resp_free(&r);
    return st;
}

static void expect_desc(const char *method, const char *path, long status, const char *cls,
                        const char *desc)
{
    struct bvh_resp r;
    assert_int_equal(call(method, path, NULL, &r), status);
    bvh_assert_error(&r, status, cls);
    const cJSON *e = cJSON_GetObjectItem(r.json, "error");
    assert_string_equal(bvh_str(e, "desc"), desc);
    bvh_resp_free(&r);
}

static bool exists_at(const char *dir, const char *name)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    return lstat(p, &st) == 0;
}

static void test_delete_directory(void **state)
{
    (void)state;
    assert_int_equal(bvh_sh("mkdir -p %s/adir", H.images), 0);
    expect_desc("DELETE", "/api/v1/images/.", 400, "GenericError", "'.' is a directory");
    expect_desc("DELETE", "/api/v1/images/adir", 400, "GenericError", "'adir' is a directory");
    assert_true(exists_at(H.images, "adir"));
    expect_desc("DELETE", "/api/v1/images/nothere.raw", 404, "NotFound",
                "Could not delete 'nothere.raw': No such file or directory");
}

/* ---- one name, two creators ---- */

struct creator {
    pthread_barrier_t *go;
    const char *path, *body;
    long status;
};

static void *create_one(void *opaque)
{
    struct creator *c = opaque;
    pthread_barrier_wait(c->go);
    c->status = call("POST", c->path, c->body, NULL);
    return NULL;
}

static void test_create_exclusive(void **state)
{
    (void)state;
    unsigned both = 0, drive_won = 0, image_won = 0;
    for (int i = 0; i < CREATE_ROUNDS; i++) {
        char dbody[160], ibody[160], ddel[96];
        snprintf(dbody, sizeof(dbody), "{\"id\":\"cx%d\",\"format\":\"qcow2\",\"size\":\"1M\","
                 "\"file\":\"cx%d.qcow2\"}", i, i);
        snprintf(ibody, sizeof(ibody), "{\"file\":\"cx%d.qcow2\",\"format\":\"raw\","
                 "\"size\":\"2M\"}", i);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct creator d = { &go, "/api/v1/drives", dbody, 0 };
        struct creator m = { &go, "/api/v1/images", ibody, 0 };
        pthread_t td, tm;
        assert_int_equal(pthread_create(&td, NULL, create_one, &d), 0);
        assert_int_equal(pthread_create(&tm, NULL, create_one, &m), 0);
        pthread_join(td, NULL);
        pthread_join(tm, NULL);
        pthread_barrier_destroy(&go);
        if (d.status == 201 && m.status == 201)
            both++;
        else if (d.status == 201 && m.status == 409)
            drive_won++;
        else if (d.status == 409 && m.status == 201)
            image_won++;
        else
            fail_msg("round %d: POST /drives %ld, POST /images %ld", i, d.status, m.status);
        if (d.status == 201) {
            snprintf(ddel, sizeof(ddel), "/api/v1/drives/cx%d", i);
            assert_int_equal(call("DELETE", ddel, NULL, NULL), 204);
        }
    }
    print_message("drive won %u, image won %u, both 201: %u of %d\n", drive_won, image_won, both,
                  CREATE_ROUNDS);
    assert_int_equal(both, 0);
    assert_int_equal(drive_won + image_won, CREATE_ROUNDS);
    /* the loser's file is the winner's: a 2 MiB raw image or a 1 MiB qcow2 drive */
    struct bvh_resp r;
    assert_int_equal(call("POST", "/api/v1/images", "{\"file\":\"cx0.qcow2\",\"format\":\"raw\","
                          "\"size\":\"2M\"}", &r), 409);
    bvh_assert_error(&r, 409, "GenericError");
    assert_string_equal(bvh_str(cJSON_GetObjectItem(r.json, "error"), "desc"),
                        "Image 'cx0.qcow2' already exists");
    bvh_resp_free(&r);
}

/* ---- the swap race ---- */

struct swapper {
    atomic_bool stop;
    unsigned swaps;
    char dir[400], link[400];
};

static void *swap_loop(void *opaque)
{
    struct swapper *s = opaque;
    while (!atomic_load(&s->stop))
        if (renameat2(AT_FDCWD, s->dir, AT_FDCWD, s->link, RENAME_EXCHANGE) == 0)
            s->swaps++;
    return NULL;
}

struct escapes {
    unsigned created, read, deleted;      /* outside: must stay 0 */
    unsigned get_ok, post_ok, drive_ok;   /* the inside path worked meanwhile */
};

/* One client: its own names (rounds first, first + CLIENTS, ...) and counts.
 * No cmocka asserts here: they may only fail on the test's own thread. */
struct client {
    pthread_t t;
    int first;
    struct escapes x;
};

static void race_get(struct escapes *x)
{
    struct bvh_resp r;
    if (call("GET", "/api/v1/images/d/secret.raw", NULL, &r) == 200) {
        x->get_ok++;
        if (cJSON_GetNumberValue(cJSON_GetObjectItem(r.json, "virtual_size")) != INSIDE_SIZE)
            x->read++;
    }
    bvh_resp_free(&r);
}

/* victim.raw exists only outside: a DELETE that reaches it is an escape */
static void race_delete(struct escapes *x)
{
    char victim[128];
    call("DELETE", "/api/v1/images/d/victim.raw", NULL, NULL);
    if (exists_at(outside, "victim.raw"))
        return;
    x->deleted++;
    snprintf(victim, sizeof(victim), "%s/victim.raw", outside);
    close(open(victim, O_WRONLY | O_CREAT, 0644));
}

static void race_round(int i, struct escapes *x)
{
    char body[200], path[128], name[64];
    race_get(x);
    snprintf(body, sizeof(body), "{\"file\":\"d/new%d.raw\",\"format\":\"raw\",\"size\":512}", i);
    if (call("POST", "/api/v1/images", body, NULL) == 201)
        x->post_ok++;
    snprintf(name, sizeof(name), "new%d.raw", i);
    x->created += exists_at(outside, name);
    snprintf(body, sizeof(body), "{\"id\":\"sw%d\",\"format\":\"raw\",\"size\":512,"
             "\"file\":\"d/drv%d.raw\"}", i, i);
    if (call("POST", "/api/v1/drives", body, NULL) == 201) {
        x->drive_ok++;
        snprintf(path, sizeof(path), "/api/v1/drives/sw%d", i);
        call("DELETE", path, NULL, NULL);
    }
    snprintf(name, sizeof(name), "drv%d.raw", i);
    x->created += exists_at(outside, name);
    race_delete(x);
}

static void *client_loop(void *opaque)
{
    struct client *c = opaque;
    for (int i = c->first; i < SWAP_ROUNDS; i += CLIENTS)
        race_round(i, &c->x);
    return NULL;
}

static void test_symlink_swap_race(void **state)
{
    (void)state;
    assert_int_equal(bvh_sh("mkdir %s/d && truncate -s %d %s/d/secret.raw && "
                            "truncate -s 2M %s/secret.raw && truncate -s 512 %s/victim.raw && "
                            "ln -s %s %s/d.link", H.images, INSIDE_SIZE, H.images, outside,
                            outside, outside, H.images), 0);
    struct swapper s = { .stop = false };
    snprintf(s.dir, sizeof(s.dir), "%s/d", H.images);
    snprintf(s.link, sizeof(s.link), "%s/d.link", H.images);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, swap_loop, &s), 0);
    struct client c[CLIENTS];
    for (int k = 0; k < CLIENTS; k++) {
        c[k] = (struct client){ .first = k };
        assert_int_equal(pthread_create(&c[k].t, NULL, client_loop, &c[k]), 0);
    }
    struct escapes x = { 0 };
    for (int k = 0; k < CLIENTS; k++) {
        pthread_join(c[k].t, NULL);
        x.created += c[k].x.created;
        x.read += c[k].x.read;
        x.deleted += c[k].x.deleted;
        x.get_ok += c[k].x.get_ok;
        x.post_ok += c[k].x.post_ok;
        x.drive_ok += c[k].x.drive_ok;
    }
    atomic_store(&s.stop, true);
    pthread_join(t, NULL);
    print_message("swaps %u; outside: created %u, read %u, deleted %u; inside: get %u, "
                  "post %u, drives %u of %d rounds\n", s.swaps, x.created, x.read, x.deleted,
                  x.get_ok, x.post_ok, x.drive_ok, SWAP_ROUNDS);
    assert_true(s.swaps > 0);
    assert_int_equal(x.created, 0);
    assert_int_equal(x.read, 0);
    assert_int_equal(x.deleted, 0);
    assert_true(x.get_ok > 0 && x.post_ok > 0);     /* it was a race, not a lockout */
    /* a name through the symlink itself is refused, with a storage-relative text */
    const char *link = exists_at(H.images, "d.link/secret.raw") &&
                       bvh_sh("test -L %s/d.link", H.images) == 0 ? "d.link" : "d";
    char path[128], want[160];
    snprintf(path, sizeof(path), "/api/v1/images/%s/secret.raw", link);
    snprintf(want, sizeof(want), "path leads outside the allowed directory: %s/secret.raw", link);
    expect_desc("GET", path, 400, "GenericError", want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_delete_directory),
        cmocka_unit_test(test_create_exclusive),
        cmocka_unit_test(test_symlink_swap_race),
    };
    return cmocka_run_group_tests_name("paths", tests, setup, teardown);
}
