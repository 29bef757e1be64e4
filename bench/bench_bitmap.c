/*
 * bench_bitmap: dirty-bitmap cost on a 16 TiB virtual drive at 64 KiB
 * granularity (2^28 granules) with 1 % of it dirty, in three write patterns:
 *
 *   runs      1 % as 1 GiB extents at random places (backups of big files)
 *   hot       1 % as random 64 KiB writes inside hot zones covering 10 %
 *             of the disk (a VM's active files)
 *   uniform   1 % as random 64 KiB writes anywhere: the worst case, every
 *             4 KiB leaf of the sparse bitmap holds a set bit
 *
 * For each: set_mark rate (through the locked public API, as the I/O path
 * calls it), count queries, next-dirty lookups at random offsets, a full
 * extent listing, zlib serialization, and memory (the structure's own
 * accounting and the RSS delta after the marks; each pattern runs in a
 * forked child so the RSS starts from a fresh heap).
 *
 * Build and run from the repository root (not part of the CMake build):
 *   cc -O2 -D_GNU_SOURCE -I core/include -I core bench/bench_bitmap.c \
 *      core/util/hbitmap.c core/bitmap/dirty-bitmap.c \
 *      core/bitmap/dirty-bitmap-store.c core/util/error.c \
 *      -lz -lpthread -o /tmp/bench_bitmap && /tmp/bench_bitmap
 * (bench/run-bitmap does exactly this.)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bitmap/dirty-bitmap-int.h"
#include "bv/dirty-bitmap.h"
#include "util/hbitmap.h"

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define GiB (1024ULL * MiB)
#define TiB (1024ULL * GiB)

#define DISK   (16 * TiB)
#define GRAN   (64 * KiB)
#define NGRAN  (DISK / GRAN)
#define TARGET (NGRAN / 100)                /* 1 % of the granules */

static uint64_t rng = 0x2545F4914F6CDD1DULL;

static uint64_t rnd(uint64_t n)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng % n;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rss_bytes(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(f);
    return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t dirty_granules(struct bv_bitmap_set *set,
                               struct bv_dirty_bitmap *bm)
{
    struct bv_bitmap_info info;
    bv_bitmap_query(set, bm, &info);
    return info.count / GRAN;
}

/* Issue writes of the pattern until 1 % of the granules is dirty, or
 * exactly limit writes when limit != 0 (a replay). */
static uint64_t fill(const char *pattern, struct bv_bitmap_set *set,
                     struct bv_dirty_bitmap *bm, uint64_t limit)
{
    uint64_t writes = 0;
    const uint64_t zone = 16 * GiB, nzones = DISK / zone;
    for (; limit ? writes < limit : dirty_granules(set, bm) < TARGET; writes++) {
        if (strcmp(pattern, "runs") == 0) {
            bv_bitmap_set_mark(set, rnd(NGRAN) * GRAN, 1 * GiB);
        } else if (strcmp(pattern, "hot") == 0) {
            /* every 10th zone is hot */
            uint64_t z = rnd(nzones / 10) * 10;
            bv_bitmap_set_mark(set, z * zone + rnd(zone / GRAN) * GRAN, GRAN);
        } else {
            bv_bitmap_set_mark(set, rnd(NGRAN) * GRAN, GRAN);
        }
    }
    return writes;
}

static void run(const char *pattern)
{
    struct bv_bitmap_set *set;
    struct bv_dirty_bitmap *bm;
    if (bv_bitmap_set_new("bench", DISK, &set, NULL) < 0 ||
        bv_bitmap_add(set, "b", GRAN, 0, &bm, NULL) < 0) {
        fprintf(stderr, "setup failed\n");
        exit(1);
    }
    uint64_t rss0 = rss_bytes();
    uint64_t seed = rng;
    double t0 = now();
    uint64_t writes = fill(pattern, set, bm, 0);
    double t_mark = now() - t0;
    uint64_t mem = hbitmap_mem_usage(bm->hb);
    uint64_t rss = rss_bytes() - rss0;

    /* the same writes again: granules already dirty, a busy disk's steady
     * state */
    rng = seed;
    t0 = now();
    fill(pattern, set, bm, writes);
    double t_remark = now() - t0;

    t0 = now();
    uint64_t sum = 0;
    for (int i = 0; i < 1000000; i++)
        sum += dirty_granules(set, bm);
    double t_count = now() - t0;

    t0 = now();
    uint64_t ro, rl, found = 0;
    for (int i = 0; i < 1000000; i++)
        found += bv_bitmap_next_dirty(set, bm, rnd(DISK), UINT64_MAX, &ro, &rl);
    double t_next = now() - t0;

    struct bv_extent ex[4096];
    size_t n;
    uint64_t cur = 0, runs = 0;
    t0 = now();
    while (cur < DISK) {
        bv_bitmap_extents(set, bm, &cur, ex, 4096, &n);
        runs += n;
    }
    double t_iter = now() - t0;

    uint8_t *z = NULL;
    size_t zlen = 0;
    t0 = now();
    int r = bv_bitmap_serialize(set, bm, 256 * MiB, &z, &zlen, NULL);
    double t_ser = now() - t0;
    free(z);

    printf("%-8s dirty %5.2f%% | mark %7.0f k writes/s (%" PRIu64 " writes), "
           "re-mark %5.2f M/s | count %6.1f M/s | next-dirty %5.2f M/s | "
           "iterate %" PRIu64 " runs in %.3f s (%.1f M runs/s) | "
           "serialize %s %.3f s -> %zu B | mem %.2f MiB (rss +%.2f MiB)\n",
           pattern, 100.0 * (double)dirty_granules(set, bm) / (double)NGRAN,
           (double)writes / t_mark / 1e3, writes,
           (double)writes / t_remark / 1e6,
           1.0 / t_count, 1.0 / t_next, runs, t_iter,
           (double)runs / t_iter / 1e6, r == 0 ? "ok" : "FAILED", t_ser, zlen,
           (double)mem / (double)MiB, (double)rss / (double)MiB);
    if (sum == 0 || found == 0)
        printf("(unexpected: nothing found)\n");
    bv_bitmap_set_free(set);
}

int main(void)
{
    printf("16 TiB drive, 64 KiB granularity (%" PRIu64 " granules), "
           "flat bitmap would be %" PRIu64 " MiB\n", NGRAN, NGRAN / 8 / MiB);
    static const char *const patterns[] = { "runs", "hot", "uniform" };
    for (int i = 0; i < 3; i++) {
        fflush(stdout);
        pid_t pid = fork();                  /* a fresh heap for each RSS */
        if (pid == 0) {
            run(patterns[i]);
            fflush(stdout);
            _exit(0);
        }
        if (pid < 0 || waitpid(pid, NULL, 0) < 0)
            return 1;
    }
    return 0;
}
