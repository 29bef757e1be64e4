/*
 * Unit tests for dirty bitmaps (core/bitmap): the numbers and texts of
 * qemu-semantics.md §3 (iotest 124 write sets, the 100 KiB disk, status
 * order, refusals), §4.3/§4.5 (copy bitmap widening, freeze / abdicate /
 * reclaim and the bitmap-mode table), §6 (transaction undo), resize, the
 * zlib persistence round trip with corrupted input, and concurrent marking.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "bv/dirty-bitmap.h"

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)

struct wr {
    uint64_t off, len;
};

/* iotest 124 write sets (§3.3) */
static const struct wr P1[] = { { 0, 512 }, { 16 * MiB, 256 * KiB },
                                { 32736 * KiB, 64 * KiB } };
static const struct wr P2[] = { { 0, 512 }, { 8 * MiB, 352 * KiB },
                                { 15872 * KiB, 1 * MiB } };

static void writes(struct bv_bitmap_set *set, const struct wr *w, size_t n)
{
    for (size_t i = 0; i < n; i++)
        bv_bitmap_set_mark(set, w[i].off, w[i].len);
}

static struct bv_bitmap_set *mkset(uint64_t size)
{
    struct bv_bitmap_set *set = NULL;
    assert_int_equal(bv_bitmap_set_new("drive0", size, &set, NULL), 0);
    return set;
}

static struct bv_dirty_bitmap *add(struct bv_bitmap_set *set, const char *name,
                                   uint32_t g, unsigned flags)
{
    struct bv_dirty_bitmap *bm = NULL;
    assert_int_equal(bv_bitmap_add(set, name, g, flags, &bm, NULL), 0);
    return bm;
}

static uint64_t count(struct bv_bitmap_set *set, struct bv_dirty_bitmap *bm)
{
    struct bv_bitmap_info info;
    bv_bitmap_query(set, bm, &info);
    return info.count;
}

/* Run fn expecting -err and the exact message. */
#define EXPECT_ERR(call, err, text) do {                                 \
        bv_error *e_ = NULL;                                             \
        bv_error **errp = &e_;                                           \
        assert_int_equal((call), -(err));                                \
        assert_non_null(e_);                                             \
        assert_string_equal(e_->msg, (text));                            \
        bv_error_free(e_);                                               \
    } while (0)

static void test_default_granularity(void **state)
{
    (void)state;
    static const uint32_t in[] = { 512, 4096, 16384, 65536, 131072,
                                   2u << 20, 0 };
    static const uint32_t want[] = { 4096, 4096, 16384, 65536, 65536,
                                     65536, 65536 };
    for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
        assert_int_equal(bv_bitmap_default_granularity(in[i]), want[i]);
}

static void test_add_validation(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    static const uint32_t bad[] = { 64000, 256, 0 };
    for (size_t i = 0; i < 3; i++)
        EXPECT_ERR(bv_bitmap_add(set, "b", bad[i], 0, NULL, errp), EINVAL,
                   "Granularity must be power of 2 and at least 512");
    add(set, "big", 1u << 31, 0);
    EXPECT_ERR(bv_bitmap_add(set, "", 65536, 0, NULL, errp), EINVAL,
               "Bitmap name cannot be empty");
    char name[1025];
    memset(name, 'a', 1024);
    name[1024] = '\0';
    bv_error *e = NULL;
    assert_int_equal(bv_bitmap_add(set, name, 65536, 0, NULL, &e), -EINVAL);
    assert_non_null(e);
    assert_memory_equal(e->msg, "Bitmap name too long: aaaa", 26);
    bv_error_free(e);
    e = NULL;
    assert_int_equal(bv_bitmap_add(set, name, 65536, BV_BITMAP_F_PERSISTENT,
                                   NULL, &e), -EINVAL);
    /* bv_error's 512-byte message keeps only the start of this text */
    assert_memory_equal(e->msg, "Can't make bitmap 'aaa", 22);
    bv_error_free(e);
    name[1023] = '\0';
    add(set, name, 65536, 0);                        /* 1023 bytes: fine */
    add(set, "bitmap0", 65536, 0);
    EXPECT_ERR(bv_bitmap_add(set, "bitmap0", 65536, 0, NULL, errp), EEXIST,
               "Bitmap already exists: bitmap0");
    struct bv_dirty_bitmap *bm;
    EXPECT_ERR(bv_bitmap_lookup(set, "zz", &bm, errp), ENOENT,
               "Dirty bitmap 'zz' not found");
    assert_null(bv_bitmap_find(set, "zz"));
    bv_bitmap_set_free(set);
}

static void test_124_counts(void **state)
{
    (void)state;
    static const uint32_t g[] = { 512, 32768, 65536, 131072, 1048576 };
    static const uint64_t p1[] = { 328192, 360448, 458752, 655360, 4194304 };
    static const uint64_t p2[] = { 1409536, 1441792, 1507328, 1572864,
                                   4194304 };
    static const uint64_t both[] = { 1475072, 1507328, 1638400, 1835008,
                                     6291456 };
    for (size_t i = 0; i < 5; i++) {
        struct bv_bitmap_set *a = mkset(64 * MiB), *b = mkset(64 * MiB);
        struct bv_bitmap_set *c = mkset(64 * MiB);
        struct bv_dirty_bitmap *ba = add(a, "bitmap0", g[i], 0);
        struct bv_dirty_bitmap *bb = add(b, "bitmap0", g[i], 0);
        struct bv_dirty_bitmap *bc = add(c, "bitmap0", g[i], 0);
        writes(a, P1, 3);
        writes(b, P2, 3);
        writes(c, P1, 3);
        writes(c, P2, 3);
        assert_int_equal(count(a, ba), p1[i]);
        assert_int_equal(count(b, bb), p2[i]);
        assert_int_equal(count(c, bc), both[i]);
        bv_bitmap_set_free(a);
        bv_bitmap_set_free(b);
        bv_bitmap_set_free(c);
    }
}

static void test_100k_disk(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(100 * KiB);
    struct bv_dirty_bitmap *bm = add(set, "b", 65536, 0);
    bv_bitmap_set_mark(set, 99 * KiB, 512);
    assert_int_equal(count(set, bm), 65536);
    bv_bitmap_set_mark(set, 0, 1);
    bv_bitmap_set_mark(set, 1, 1);
    assert_int_equal(count(set, bm), 131072);        /* more than the disk */
    bv_bitmap_set_mark(set, 5, 0);                   /* len 0: nothing */
    /* extents are guest ranges: clipped to the disk */
    struct bv_extent ex[4];
    size_t n;
    uint64_t cur = 0;
    bv_bitmap_extents(set, bm, &cur, ex, 4, &n);
    assert_int_equal(n, 1);
    assert_int_equal(ex[0].offset, 0);
    assert_int_equal(ex[0].length, 100 * KiB);
    assert_int_equal(cur, 100 * KiB);
    bv_bitmap_set_free(set);
}

static void test_list_and_status(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *a = add(set, "a", 65536, 0);
    add(set, "b", 65536, BV_BITMAP_F_DISABLED);
    struct bv_dirty_bitmap *anon;
    assert_int_equal(bv_bitmap_create_anon(set, 65536, &anon, NULL), 0);
    add(set, "c", 32768, BV_BITMAP_F_PERSISTENT);
    struct bv_bitmap_info info[4];
    assert_int_equal(bv_bitmap_list(set, NULL, 0), 3);
    assert_int_equal(bv_bitmap_list(set, info, 4), 3);
    assert_string_equal(info[0].name, "c");          /* newest first */
    assert_string_equal(info[1].name, "b");
    assert_string_equal(info[2].name, "a");
    assert_true(info[0].persistent);
    assert_int_equal(info[0].granularity, 32768);
    assert_int_equal(info[1].status, BV_BITMAP_DISABLED);
    assert_false(info[1].recording);
    assert_int_equal(info[2].status, BV_BITMAP_ACTIVE);
    assert_true(info[2].recording);
    /* frozen beats locked; the frozen parent reports its successor */
    assert_int_equal(bv_bitmap_freeze(set, a, NULL), 0);
    bv_bitmap_query(set, a, &info[0]);
    assert_int_equal(info[0].status, BV_BITMAP_FROZEN);
    assert_true(info[0].busy && info[0].recording);
    assert_int_equal(bv_bitmap_list(set, NULL, 0), 3); /* successor hidden */
    assert_int_equal(bv_bitmap_reclaim(set, a, NULL), 0);
    assert_int_equal(bv_bitmap_remove_prepare(set, a, NULL), 0);
    bv_bitmap_query(set, a, &info[0]);
    assert_int_equal(info[0].status, BV_BITMAP_LOCKED);
    bv_bitmap_remove_abort(set, a);
    bv_bitmap_query(set, a, &info[0]);
    assert_int_equal(info[0].status, BV_BITMAP_ACTIVE);
    static const char *names[] = { "active", "disabled", "frozen", "locked",
                                   "inconsistent" };
    for (int s = 0; s < BV_BITMAP_STATUS__MAX; s++)
        assert_string_equal(bv_bitmap_status_name(s), names[s]);
    assert_null(bv_bitmap_status_name(BV_BITMAP_STATUS__MAX));
    assert_int_equal(bv_bitmap_sync_mode_parse("always"), BV_BITMAP_SYNC_ALWAYS);
    assert_int_equal(bv_bitmap_sync_mode_parse("nope"), -1);
    bv_bitmap_release(set, anon);
    bv_bitmap_set_free(set);
}

#define BUSY "Bitmap 'b' is currently in use by another operation and cannot be used"
#define INCONS "Bitmap 'pb' is inconsistent and cannot be used"

static void test_busy_refusals(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, 0);
    struct bv_dirty_bitmap *o = add(set, "o", 65536, 0);
    assert_int_equal(bv_bitmap_freeze(set, b, NULL), 0);
    EXPECT_ERR(bv_bitmap_clear(set, b, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_enable(set, b, NULL, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_disable(set, b, NULL, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_merge(set, b, NULL, &o, 1, NULL, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_merge(set, o, NULL, &b, 1, NULL, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_remove(set, b, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_freeze(set, b, errp), EBUSY, BUSY);
    EXPECT_ERR(bv_bitmap_check_usable(set, b, errp), EBUSY, BUSY);
    assert_int_equal(bv_bitmap_abdicate(set, b, NULL), 0);
    assert_int_equal(bv_bitmap_remove(set, b, NULL), 0);
    assert_null(bv_bitmap_find(set, "b"));
    EXPECT_ERR(bv_bitmap_abdicate(set, o, errp), EINVAL,
               "Bitmap 'o' is not frozen");
    bv_bitmap_set_free(set);
}

static void test_inconsistent(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *pb = add(set, "pb", 65536, BV_BITMAP_F_INCONSISTENT);
    struct bv_dirty_bitmap *o = add(set, "o", 65536, 0);
    bv_bitmap_set_mark(set, 0, 1 * MiB);
    struct bv_bitmap_info info;
    bv_bitmap_query(set, pb, &info);
    assert_true(info.inconsistent && info.persistent);
    assert_false(info.recording || info.busy);
    assert_int_equal(info.count, 0);
    assert_int_equal(info.status, BV_BITMAP_INCONSISTENT);
    EXPECT_ERR(bv_bitmap_clear(set, pb, errp), EBUSY, INCONS);
    EXPECT_ERR(bv_bitmap_enable(set, pb, NULL, errp), EBUSY, INCONS);
    EXPECT_ERR(bv_bitmap_disable(set, pb, NULL, errp), EBUSY, INCONS);
    EXPECT_ERR(bv_bitmap_merge(set, pb, NULL, &o, 1, NULL, errp), EBUSY, INCONS);
    EXPECT_ERR(bv_bitmap_merge(set, o, NULL, &pb, 1, NULL, errp), EBUSY, INCONS);
    EXPECT_ERR(bv_bitmap_freeze(set, pb, errp), EBUSY, INCONS);
    assert_int_equal(bv_bitmap_remove(set, pb, NULL), 0);   /* allowed */
    assert_int_equal(count(set, o), 1 * MiB);
    bv_bitmap_set_free(set);
}

static void test_enable_disable(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, BV_BITMAP_F_DISABLED);
    bv_bitmap_set_mark(set, 0, 512);
    assert_int_equal(count(set, b), 0);              /* disabled ignores */
    bool was = true;
    assert_int_equal(bv_bitmap_enable(set, b, &was, NULL), 0);
    assert_false(was);
    assert_int_equal(bv_bitmap_enable(set, b, &was, NULL), 0);  /* idempotent */
    assert_true(was);
    bv_bitmap_set_mark(set, 0, 512);
    assert_int_equal(count(set, b), 65536);
    assert_int_equal(bv_bitmap_disable(set, b, &was, NULL), 0);
    assert_int_equal(bv_bitmap_disable(set, b, NULL, NULL), 0);
    /* transaction abort restores the old state */
    assert_int_equal(bv_bitmap_set_enabled(set, b, was, NULL, NULL), 0);
    struct bv_bitmap_info info;
    bv_bitmap_query(set, b, &info);
    assert_true(info.recording);
    /* clear works on a disabled bitmap too */
    assert_int_equal(bv_bitmap_disable(set, b, NULL, NULL), 0);
    assert_int_equal(bv_bitmap_clear(set, b, NULL), 0);
    assert_int_equal(count(set, b), 0);
    bv_bitmap_set_free(set);
}

static void test_transaction_undo(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "bitmap0", 65536, 0);
    struct bv_dirty_bitmap *s = add(set, "src", 65536, BV_BITMAP_F_DISABLED);
    writes(set, P1, 3);
    assert_int_equal(bv_bitmap_mark_range(set, s, 40 * MiB, 128 * KiB), 0);
    /* clear + abort: nothing changes */
    struct bv_bitmap_backup *bk = NULL;
    assert_int_equal(bv_bitmap_clear_backup(set, b, &bk, NULL), 0);
    assert_int_equal(count(set, b), 0);
    bv_bitmap_restore(set, b, bk);
    assert_int_equal(count(set, b), 458752);
    /* clear + commit */
    assert_int_equal(bv_bitmap_clear_backup(set, b, &bk, NULL), 0);
    bv_bitmap_backup_free(bk);
    assert_int_equal(count(set, b), 0);
    writes(set, P1, 3);
    /* merge + abort */
    assert_int_equal(bv_bitmap_merge(set, b, NULL, &s, 1, &bk, NULL), 0);
    assert_int_equal(count(set, b), 458752 + 131072);
    bv_bitmap_restore(set, b, bk);
    assert_int_equal(count(set, b), 458752);
    /* remove + abort, then remove + commit */
    assert_int_equal(bv_bitmap_remove_prepare(set, b, NULL), 0);
    EXPECT_ERR(bv_bitmap_clear(set, b, errp), EBUSY,
               "Bitmap 'bitmap0' is currently in use by another operation "
               "and cannot be used");
    bv_bitmap_remove_abort(set, b);
    assert_int_equal(count(set, b), 458752);
    assert_int_equal(bv_bitmap_remove_prepare(set, b, NULL), 0);
    bv_bitmap_remove_commit(set, b);
    assert_null(bv_bitmap_find(set, "bitmap0"));
    bv_bitmap_set_free(set);
}

static void test_merge_granularities(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *t = add(set, "t", 65536, BV_BITMAP_F_DISABLED);
    struct bv_dirty_bitmap *f = add(set, "f", 32768, BV_BITMAP_F_DISABLED);
    struct bv_dirty_bitmap *c = add(set, "c", 131072, BV_BITMAP_F_DISABLED);
    assert_int_equal(bv_bitmap_enable(set, f, NULL, NULL), 0);
    writes(set, P1, 3);                              /* f: 11 granules */
    assert_int_equal(bv_bitmap_disable(set, f, NULL, NULL), 0);
    assert_int_equal(bv_bitmap_enable(set, c, NULL, NULL), 0);
    writes(set, P2, 3);                              /* c: 12 granules */
    struct bv_dirty_bitmap *srcs[] = { f, c };
    assert_int_equal(bv_bitmap_merge(set, t, NULL, srcs, 2, NULL, NULL), 0);
    /* P2 at 128K widened to 64K is 24 granules; P1 at 32K adds only the two
     * granules around 32 MiB (its 0 and 16M writes lie inside P2's) */
    assert_int_equal(count(set, t), 26 * 65536ULL);
    /* a source of another drive with another size */
    struct bv_bitmap_set *other = mkset(65 * MiB);
    struct bv_dirty_bitmap *x = add(other, "x", 65536, 0);
    EXPECT_ERR(bv_bitmap_merge(set, t, other, &x, 1, NULL, errp), EINVAL,
               "Bitmaps are of different sizes (destination size is 67108864,"
               " source size is 68157440) and can't be merged");
    /* same size on another drive works */
    struct bv_bitmap_set *same = mkset(64 * MiB);
    struct bv_dirty_bitmap *y = add(same, "y", 512, 0);
    bv_bitmap_set_mark(same, 60 * MiB, 1);
    uint64_t before = count(set, t);
    assert_int_equal(bv_bitmap_merge(set, t, same, &y, 1, NULL, NULL), 0);
    assert_int_equal(count(set, t), before + 65536);
    bv_bitmap_set_free(other);
    bv_bitmap_set_free(same);
    bv_bitmap_set_free(set);
}

static void test_resize(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, 0);
    assert_int_equal(bv_bitmap_set_truncate(set, 65 * MiB, NULL), 0);
    bv_bitmap_set_mark(set, 64 * MiB, 64 * KiB);
    assert_int_equal(count(set, b), 65536);
    bv_bitmap_set_mark(set, 0, 512);
    assert_int_equal(bv_bitmap_set_truncate(set, 32 * MiB, NULL), 0);
    assert_int_equal(count(set, b), 65536);          /* tail dropped */
    assert_int_equal(bv_bitmap_set_disk_size(set), 32 * MiB);
    struct bv_dirty_bitmap *n = add(set, "n", 65536, 0); /* new size */
    bv_bitmap_set_mark(set, 32 * MiB - 1, 1);
    assert_int_equal(count(set, n), 65536);
    bv_bitmap_set_free(set);
}

/* One simulated backup of bitmap0 (P1 at 64 KiB) on a 64 MiB drive. */
struct run {
    enum bv_bitmap_sync_mode mode;
    bool full;                    /* sync=full, else sync=bitmap */
    int outcome;                  /* 0 ok, 1 fail with one cluster left, 2 cancel */
    uint64_t want;
};

static uint64_t simulate(const struct run *r)
{
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "bitmap0", 65536, 0), *copy;
    writes(set, P1, 3);
    assert_int_equal(bv_bitmap_freeze(set, b, NULL), 0);
    assert_int_equal(bv_bitmap_create_copy_bitmap(set, r->full ? NULL : b,
                                                  65536, &copy, NULL), 0);
    uint64_t o, l, pos = 0, copied = 0;
    uint64_t limit = r->outcome == 0 ? UINT64_MAX :
                     r->outcome == 1 ? (r->full ? 61931520 / 65536 : 6) : 1;
    while (copied < limit &&
           bv_bitmap_next_dirty(set, copy, pos, UINT64_MAX, &o, &l)) {
        assert_int_equal(bv_bitmap_reset_range(set, copy, o, 65536), 0);
        pos = o + 65536;
        copied++;
    }
    if (r->outcome == 2)                             /* a write mid-job */
        bv_bitmap_set_mark(set, 48 * MiB, 64 * KiB);
    assert_int_equal(bv_bitmap_job_finish(set, b, r->mode, r->outcome == 0,
                                          copy, NULL), 0);
    bv_bitmap_release(set, copy);
    uint64_t c = count(set, b);
    struct bv_bitmap_info info;
    bv_bitmap_query(set, b, &info);
    assert_int_equal(info.status, BV_BITMAP_ACTIVE);
    assert_int_equal(bv_bitmap_list(set, NULL, 0), 1);
    bv_bitmap_set_free(set);
    return c;
}

static void test_bitmap_mode_table(void **state)
{
    (void)state;
    static const struct run runs[] = {
        { BV_BITMAP_SYNC_ON_SUCCESS, false, 0, 0 },
        { BV_BITMAP_SYNC_ON_SUCCESS, false, 1, 458752 },
        { BV_BITMAP_SYNC_ON_SUCCESS, false, 2, 524288 },
        { BV_BITMAP_SYNC_ALWAYS, false, 0, 0 },
        { BV_BITMAP_SYNC_ALWAYS, false, 1, 65536 },
        { BV_BITMAP_SYNC_ALWAYS, false, 2, 458752 },
        { BV_BITMAP_SYNC_NEVER, false, 0, 458752 },
        { BV_BITMAP_SYNC_NEVER, false, 1, 458752 },
        { BV_BITMAP_SYNC_NEVER, false, 2, 524288 },
        { BV_BITMAP_SYNC_ON_SUCCESS, true, 0, 0 },
        { BV_BITMAP_SYNC_ON_SUCCESS, true, 1, 458752 },
        { BV_BITMAP_SYNC_ON_SUCCESS, true, 2, 524288 },
        { BV_BITMAP_SYNC_ALWAYS, true, 0, 0 },
        { BV_BITMAP_SYNC_ALWAYS, true, 1, 5177344 },
        { BV_BITMAP_SYNC_ALWAYS, true, 2, 67043328 },
    };
    for (size_t i = 0; i < sizeof(runs) / sizeof(runs[0]); i++)
        assert_int_equal(simulate(&runs[i]), runs[i].want);
}

static void test_freeze_successor(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, 0);
    struct bv_dirty_bitmap *d = add(set, "d", 65536, BV_BITMAP_F_DISABLED);
    writes(set, P1, 3);
    assert_int_equal(bv_bitmap_freeze(set, b, NULL), 0);
    assert_int_equal(bv_bitmap_freeze(set, d, NULL), 0);
    struct bv_bitmap_info info;
    bv_bitmap_query(set, d, &info);
    assert_false(info.recording);                    /* inherits disabled */
    bv_bitmap_set_mark(set, 16 * MiB, 1);            /* in P1 already */
    assert_int_equal(count(set, b), 458752);         /* parent keeps bits */
    assert_int_equal(bv_bitmap_abdicate(set, b, NULL), 0);
    assert_int_equal(count(set, b), 65536);          /* writes during job */
    assert_int_equal(bv_bitmap_abdicate(set, d, NULL), 0);
    bv_bitmap_query(set, d, &info);
    assert_int_equal(info.status, BV_BITMAP_DISABLED);
    assert_int_equal(info.count, 0);
    bv_bitmap_set_free(set);
}

static void test_copy_bitmap_widening(void **state)
{
    (void)state;
    static const struct { uint32_t g, job; uint64_t want; } cases[] = {
        { 32768, 65536, 458752 },                    /* §3.3 */
        { 65536, 131072, 655360 },                   /* §4.3 */
        { 131072, 65536, 655360 },
    };
    for (size_t i = 0; i < 3; i++) {
        struct bv_bitmap_set *set = mkset(64 * MiB);
        struct bv_dirty_bitmap *b = add(set, "b", cases[i].g, 0), *copy;
        writes(set, P1, 3);
        assert_int_equal(bv_bitmap_freeze(set, b, NULL), 0);
        assert_int_equal(bv_bitmap_create_copy_bitmap(set, b, cases[i].job,
                                                      &copy, NULL), 0);
        assert_int_equal(count(set, copy), cases[i].want);
        bv_bitmap_set_mark(set, 0, 1);               /* copy does not record */
        assert_int_equal(count(set, copy), cases[i].want);
        bv_bitmap_release(set, copy);
        assert_int_equal(bv_bitmap_reclaim(set, b, NULL), 0);
        bv_bitmap_set_free(set);
    }
}

static void test_extents_paging(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, 0);
    writes(set, P1, 3);
    writes(set, P2, 3);
    struct bv_extent ex[2], all[8];
    size_t n, total = 0;
    uint64_t cur = 0;
    do {
        bv_bitmap_extents(set, b, &cur, ex, 2, &n);
        for (size_t i = 0; i < n; i++)
            all[total++] = ex[i];
    } while (cur < 64 * MiB);
    /* 0..64K, 8M..8M+384K, 15872K..16896K, 32704K..32832K */
    assert_int_equal(total, 4);
    assert_int_equal(all[0].offset, 0);
    assert_int_equal(all[0].length, 64 * KiB);
    assert_int_equal(all[1].offset, 8 * MiB);
    assert_int_equal(all[1].length, 384 * KiB);
    assert_int_equal(all[2].offset, 15872 * KiB);
    assert_int_equal(all[2].length, 1024 * KiB);
    assert_int_equal(all[3].offset, 32704 * KiB);
    assert_int_equal(all[3].length, 128 * KiB);
    bv_bitmap_set_free(set);
}

static void test_persistence(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(64 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, BV_BITMAP_F_PERSISTENT);
    writes(set, P1, 3);
    uint8_t *z = NULL;
    size_t zlen = 0;
    assert_int_equal(bv_bitmap_serialize(set, b, 1 * MiB, &z, &zlen, NULL), 0);
    assert_true(zlen > 0 && zlen < 128);
    EXPECT_ERR(bv_bitmap_serialize(set, b, 4, &z, &zlen, errp), EFBIG,
               "Cannot serialize bitmap 'b': too large");
    struct bv_bitmap_set *dst = mkset(64 * MiB);
    struct bv_dirty_bitmap *l = NULL;
    assert_int_equal(bv_bitmap_load(dst, "b", 65536, BV_BITMAP_F_PERSISTENT,
                                    z, zlen, &l, NULL), 0);
    assert_int_equal(count(dst, l), 458752);
    assert_true(bv_bitmap_test(dst, l, 32768 * KiB));
    const char *bad = "Stored data of bitmap 'c' is invalid";
    /* truncated, trailing garbage, corrupted, empty, wrong size */
    EXPECT_ERR(bv_bitmap_load(dst, "c", 65536, 0, z, zlen - 1, NULL, errp),
               EINVAL, bad);
    uint8_t *big = malloc(zlen + 1);
    assert_non_null(big);
    memcpy(big, z, zlen);
    big[zlen] = 0;
    EXPECT_ERR(bv_bitmap_load(dst, "c", 65536, 0, big, zlen + 1, NULL, errp),
               EINVAL, bad);
    for (size_t i = 0; i < zlen; i++) {               /* every byte flipped */
        memcpy(big, z, zlen);
        big[i] ^= 0x5a;
        bv_error *e = NULL;
        int r = bv_bitmap_load(dst, "c", 65536, 0, big, zlen, NULL, &e);
        assert_true(r == -EINVAL || r == 0);
        if (r == 0)
            assert_int_equal(bv_bitmap_remove(dst, bv_bitmap_find(dst, "c"),
                                              NULL), 0);
        bv_error_free(e);
    }
    EXPECT_ERR(bv_bitmap_load(dst, "c", 65536, 0, z, 0, NULL, errp), EINVAL,
               bad);
    EXPECT_ERR(bv_bitmap_load(dst, "c", 32768, 0, z, zlen, NULL, errp), EINVAL,
               bad);                                 /* inflates to 128 B, wants 256 */
    EXPECT_ERR(bv_bitmap_load(dst, "b", 65536, 0, z, zlen, NULL, errp), EEXIST,
               "Bitmap already exists: b");
    assert_null(bv_bitmap_find(dst, "c"));
    /* a bitmap found in use after a crash: data ignored */
    assert_int_equal(bv_bitmap_load(dst, "pb", 65536, BV_BITMAP_F_INCONSISTENT,
                                    NULL, 0, &l, NULL), 0);
    struct bv_bitmap_info info;
    bv_bitmap_query(dst, l, &info);
    assert_true(info.inconsistent && !info.recording && info.count == 0);
    free(big);
    free(z);
    bv_bitmap_set_free(dst);
    bv_bitmap_set_free(set);
}

static void test_persistence_tail_bits(void **state)
{
    (void)state;
    /* 100 KiB at 64 KiB: 2 bits in 1 byte; a stream with bit 2 set fails */
    struct bv_bitmap_set *set = mkset(100 * KiB), *big = mkset(192 * KiB);
    struct bv_dirty_bitmap *b = add(big, "b", 65536, 0);
    bv_bitmap_set_mark(big, 128 * KiB, 1);
    uint8_t *z;
    size_t zlen;
    assert_int_equal(bv_bitmap_serialize(big, b, 4096, &z, &zlen, NULL), 0);
    EXPECT_ERR(bv_bitmap_load(set, "b", 65536, 0, z, zlen, NULL, errp), EINVAL,
               "Stored data of bitmap 'b' is invalid");
    free(z);
    bv_bitmap_set_free(set);
    bv_bitmap_set_free(big);
}

struct marker {
    struct bv_bitmap_set *set;
    unsigned id;
};

static void *mark_thread(void *p)
{
    struct marker *m = p;
    for (uint64_t i = 0; i < 2000; i++)
        bv_bitmap_set_mark(m->set, (i * 4 + m->id) * 65536, 4096);
    return NULL;
}

static void test_concurrent_marks(void **state)
{
    (void)state;
    struct bv_bitmap_set *set = mkset(1024 * MiB);
    struct bv_dirty_bitmap *b = add(set, "b", 65536, 0);
    pthread_t t[4];
    struct marker m[4];
    for (unsigned i = 0; i < 4; i++) {
        m[i] = (struct marker){ set, i };
        assert_int_equal(pthread_create(&t[i], NULL, mark_thread, &m[i]), 0);
    }
    for (int k = 0; k < 100; k++) {                  /* control plane meanwhile */
        struct bv_bitmap_info info;
        bv_bitmap_query(set, b, &info);
        assert_true(info.count <= 8000 * 65536ULL);
    }
    for (unsigned i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(count(set, b), 8000 * 65536ULL);
    bv_bitmap_set_free(set);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_granularity),
        cmocka_unit_test(test_add_validation),
        cmocka_unit_test(test_124_counts),
        cmocka_unit_test(test_100k_disk),
        cmocka_unit_test(test_list_and_status),
        cmocka_unit_test(test_busy_refusals),
        cmocka_unit_test(test_inconsistent),
        cmocka_unit_test(test_enable_disable),
        cmocka_unit_test(test_transaction_undo),
        cmocka_unit_test(test_merge_granularities),
        cmocka_unit_test(test_resize),
        cmocka_unit_test(test_bitmap_mode_table),
        cmocka_unit_test(test_freeze_successor),
        cmocka_unit_test(test_copy_bitmap_widening),
        cmocka_unit_test(test_extents_paging),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_persistence_tail_bits),
        cmocka_unit_test(test_concurrent_marks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
