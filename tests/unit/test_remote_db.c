/* Catalog rows of remote operations (issue 16): backups.local (tiering), the remote side of a
 * prune intent, remote-only drives, link records deleted per backup, id counters raised by an
 * import inside a transaction, and a policy's replicate settings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "bvdb/backups.h"
#include "bvdb/catalog.h"
#include "bvdb/policies.h"
#include "bvdb/remotes.h"

static char path[64];
static bvdb *db;

static int setup(void **state)
{
    (void)state;
    snprintf(path, sizeof(path), "/tmp/bv-rdb-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0)
        return -1;
    close(fd);
    unlink(path);
    char err[256];
    return bvdb_open(path, &db, err, sizeof(err)) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    bvdb_close(db);
    char p[96];
    unlink(path);
    snprintf(p, sizeof(p), "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof(p), "%s-shm", path);
    unlink(p);
    return 0;
}

static void add_chain(const char *chain, const char *const *ids, int n)
{
    struct bvdb_chain c = { .id = chain, .drive_id = "d0", .dir = "chains/d0/c1",
                            .created_at = "2026-12-01T00:00:00.000Z" };
    assert_int_equal(bvdb_chain_insert(db, &c), 0);
    for (int i = 0; i < n; i++) {
        char file[64];
        snprintf(file, sizeof(file), "chains/d0/%s/%s.qcow2", chain, ids[i]);
        struct bvdb_backup b = {
            .id = ids[i], .drive_id = "d0", .chain_id = chain,
            .parent_id = i ? ids[i - 1] : NULL, .kind = i ? "incremental" : "full",
            .file = file, .status = "complete", .created_at = "2026-12-01T00:00:00.000Z",
            .seq = i + 1,
        };
        assert_int_equal(bvdb_backup_insert(db, &b), 0);
    }
}

struct ids {
    char v[8][32];
    int n;
};

static int id_cb(const char *id, const char *file, void *opaque)
{
    struct ids *a = opaque;
    assert_non_null(file);
    if (a->n < 8)
        snprintf(a->v[a->n++], sizeof(a->v[0]), "%s", id);
    return 0;
}

static void test_backup_local(void **state)
{
    (void)state;
    static const char *const ids[] = { "b1", "b2", "b3" };
    add_chain("c1", ids, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(bvdb_backup_get_local(db, ids[i]), 1);   /* the default */
    assert_int_equal(bvdb_begin(db), 0);
    assert_int_equal(bvdb_backup_set_local(db, "b1", false), 0);
    assert_int_equal(bvdb_backup_set_local(db, "b2", false), 0);
    assert_int_equal(bvdb_commit(db), 0);
    assert_int_equal(bvdb_backup_get_local(db, "b1"), 0);
    assert_int_equal(bvdb_backup_get_local(db, "b3"), 1);
    assert_int_equal(bvdb_backup_get_local(db, "nope"), -ENOENT);
    assert_int_equal(bvdb_backup_set_local(db, "nope", false), -ENOENT);
    struct ids a = { .n = 0 };
    assert_int_equal(bvdb_backup_list_remote_only(db, id_cb, &a), 2);
    assert_int_equal(a.n, 2);
    assert_string_equal(a.v[0], "b1");
    assert_string_equal(a.v[1], "b2");
}

static int count_links(const struct bvdb_remote_link *l, void *opaque)
{
    (void)l;
    (*(int *)opaque)++;
    return 0;
}

static void test_link_delete_and_intent(void **state)
{
    (void)state;
    struct bvdb_remote r = { .name = "r1", .endpoint = "http://127.0.0.1:1", .bucket = "b",
                             .region = "us-east-1", .access_key = "k",
                             .created_at = "2026-12-01T00:00:00.000Z" };
    assert_int_equal(bvdb_remote_insert(db, &r), 0);
    r.name = "r2";
    assert_int_equal(bvdb_remote_insert(db, &r), 0);
    const char *remotes[2] = { "r1", "r2" };
    for (int i = 0; i < 2; i++) {
        struct bvdb_remote_link l = { .remote = remotes[i], .backup_id = "b1", .key = "d0/c1/b1",
                                      .state = "present", .locked_until = "2026-12-09T00:00:00Z",
                                      .updated_at = "x" };
        assert_int_equal(bvdb_remote_link_put(db, &l), 0);
        l.backup_id = "b2";
        assert_int_equal(bvdb_remote_link_put(db, &l), 0);
    }
    assert_int_equal(bvdb_remote_link_delete(db, "r1", "b1"), 0);
    int n = 0;
    bvdb_remote_link_list(db, NULL, "b1", count_links, &n);
    assert_int_equal(n, 1);
    assert_int_equal(bvdb_remote_link_delete(db, NULL, "b2"), 0);
    n = 0;
    bvdb_remote_link_list(db, NULL, "b2", count_links, &n);
    assert_int_equal(n, 0);

    char *out = NULL;
    assert_int_equal(bvdb_prune_intent_get_remote_objects(db, "b1", &out), -ENOENT);
    struct bvdb_prune_intent in = { .backup_id = "b1", .step = "copying", .old_files = "[]",
                                    .created_at = "x" };
    assert_int_equal(bvdb_prune_intent_insert(db, &in), 0);
    assert_int_equal(bvdb_prune_intent_get_remote_objects(db, "b1", &out), 0);
    assert_string_equal(out, "[]");
    free(out);
    assert_int_equal(bvdb_prune_intent_set_remote_objects(db, "b1", "[{\"remote\":\"r1\"}]"), 0);
    assert_int_equal(bvdb_prune_intent_get_remote_objects(db, "b1", &out), 0);
    assert_string_equal(out, "[{\"remote\":\"r1\"}]");
    free(out);
    assert_int_equal(bvdb_prune_intent_set_remote_objects(db, "b9", "[]"), -ENOENT);
}

struct drives {
    char ids[4][16];
    int n;
};

static int drive_cb(const struct bvdb_remote_drive *d, void *opaque)
{
    struct drives *a = opaque;
    if (a->n < 4)
        snprintf(a->ids[a->n++], sizeof(a->ids[0]), "%s", d->id);
    return 0;
}

static void one_drive(const struct bvdb_remote_drive *d, void *opaque)
{
    *(long long *)opaque = (long long)d->size;
}

static void test_remote_drives_and_seq(void **state)
{
    (void)state;
    struct bvdb_remote_drive d = { .id = "d2", .remote = "r1", .size = 8 << 20,
                                   .created_at = "x" };
    assert_int_equal(bvdb_remote_drive_insert(db, &d), 0);
    d.id = "d0";
    assert_int_equal(bvdb_remote_drive_insert(db, &d), 0);
    assert_int_equal(bvdb_remote_drive_insert(db, &d), -EEXIST);
    struct drives a = { .n = 0 };
    assert_int_equal(bvdb_remote_drive_list(db, drive_cb, &a), 2);
    assert_string_equal(a.ids[0], "d0");
    assert_string_equal(a.ids[1], "d2");
    long long size = 0;
    assert_int_equal(bvdb_remote_drive_get(db, "d2", one_drive, &size), 0);
    assert_int_equal(size, 8 << 20);
    assert_int_equal(bvdb_remote_drive_get(db, "zz", one_drive, &size), -ENOENT);

    /* raised inside a transaction (bvdb_next_seq opens its own), never lowered */
    int64_t v = 0;
    assert_int_equal(bvdb_next_seq(db, "backup", &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(bvdb_begin(db), 0);
    assert_int_equal(bvdb_seq_at_least(db, "backup", 41), 0);
    assert_int_equal(bvdb_seq_at_least(db, "chain", 7), 0);
    assert_int_equal(bvdb_seq_at_least(db, "backup", 3), 0);
    assert_int_equal(bvdb_commit(db), 0);
    assert_int_equal(bvdb_next_seq(db, "backup", &v), 0);
    assert_int_equal(v, 42);
    assert_int_equal(bvdb_next_seq(db, "chain", &v), 0);
    assert_int_equal(v, 8);
}

static void got_policy(const struct bvdb_policy *p, void *opaque)
{
    snprintf(opaque, 128, "%s", p->replicate ? p->replicate : "(null)");
}

static void test_policy_replicate(void **state)
{
    (void)state;
    struct bvdb_policy p = { .name = "p", .drives = "[\"d0\"]", .schedule = "0 0 * * *",
                             .retention = "{}", .verify = "none", .enabled = true,
                             .created_at = "x", .updated_at = "x",
                             .replicate = "{\"remote\":\"r1\",\"keep_local\":1}" };
    assert_int_equal(bvdb_policy_insert(db, &p), 0);
    char got[128];
    assert_int_equal(bvdb_policy_get(db, "p", got_policy, got), 0);
    assert_string_equal(got, "{\"remote\":\"r1\",\"keep_local\":1}");
    p.replicate = NULL;
    assert_int_equal(bvdb_policy_update(db, &p), 0);
    assert_int_equal(bvdb_policy_get(db, "p", got_policy, got), 0);
    assert_string_equal(got, "(null)");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_backup_local, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_delete_and_intent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_remote_drives_and_seq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy_replicate, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
