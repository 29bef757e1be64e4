/*
 * test_verify: the checksum pass of core/job/verify.c.
 *  - bv_verify_blocks over a real qcow2 image (1 MiB + 1000 bytes: a short
 *    last block): a map recorded from the data it holds checks clean, counts
 *    the blocks and bytes it read (present blocks only); a map with two wrong
 *    CRCs (adjacent blocks) and one in the short last block reports exactly
 *    those blocks as two merged extents, whole-block byte counts, the first
 *    bad block's offset and its sample, for 1 and 2 reader threads.
 *  - the direct path (bv_node_pread_host) and its fall-backs: a link over a
 *    backing image (32 KiB clusters) whose blocks are its own data, zeros,
 *    a compressed cluster, half its own and half the backing's, and the
 *    backing's alone, checks clean through every source, with 64 KiB and
 *    128 KiB pieces and 1 and 2 threads, and also under a blkdebug filter
 *    (where bv_node_pread_host is -ENOTSUP); a byte flipped in the link's
 *    file at the host offset of one data block is that block, and only it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <cmocka.h>

#include "bv/blkdebug.h"
#include "bv/crcmap.h"
#include "bv/image.h"
#include "bv/verify.h"

#define SIZE ((uint64_t)(1 << 20) + 1024)   /* qcow2 sizes are multiples of 512 */

struct img {
    char dir[64], path[128];
    bv_node *node;
    uint8_t *data;
};

static void img_make(struct img *m)
{
    snprintf(m->dir, sizeof(m->dir), "/tmp/bv-test-verify.XXXXXX");
    assert_non_null(mkdtemp(m->dir));
    snprintf(m->path, sizeof(m->path), "%s/a.qcow2", m->dir);
    struct bv_create_opts co = { .path = m->path, .format = BV_FMT_QCOW2, .size = SIZE };
    assert_int_equal(bv_image_create(&co, NULL), 0);
    struct bv_open_opts oo = { .path = m->path, .format = BV_FMT_QCOW2 };
    assert_int_equal(bv_node_open(&oo, &m->node, NULL), 0);
    m->data = malloc(SIZE);
    assert_non_null(m->data);
    for (uint64_t i = 0; i < SIZE; i++)
        m->data[i] = (uint8_t)(i * 131 + (i >> 16));
    assert_int_equal(bv_node_pwrite(m->node, m->data, SIZE, 0, 0, NULL), 0);
}

static void img_free(struct img *m)
{
    bv_node_close(m->node, NULL);
    unlink(m->path);
    rmdir(m->dir);
    free(m->data);
}

static void check(struct img *m, unsigned threads, const struct bv_crcmap *map,
                  struct bv_verify_blocks_result *res)
{
    struct bv_verify_blocks_opts o = { .point = m->node, .map = map, .threads = threads };
    assert_int_equal(bv_verify_blocks(&o, res, NULL), 0);
}

static void test_blocks(void **state)
{
    (void)state;
    struct img m;
    img_make(&m);
    struct bv_crcmap *map = NULL;
    assert_int_equal(bv_crcmap_new(SIZE, &map, NULL), 0);
    uint64_t nblocks = bv_crcmap_blocks(map);
    assert_int_equal(nblocks, 17);
    for (uint64_t b = 0; b < nblocks; b++)
        if (b != 3)                                  /* block 3 not written by "the link" */
            bv_crcmap_record(map, b * BV_CRC_BLOCK, bv_crc_block_len(SIZE, b),
                             m.data + b * BV_CRC_BLOCK);
    for (unsigned t = 1; t <= 2; t++) {
        struct bv_verify_blocks_result res;
        check(&m, t, map, &res);
        assert_int_equal(res.blocks_checked, 16);
        assert_int_equal(res.bytes_read, SIZE - BV_CRC_BLOCK);
        assert_int_equal(res.bad_blocks, 0);
        assert_int_equal(res.first_bad, UINT64_MAX);
        assert_int_equal(res.n_extents, 0);
        bv_verify_blocks_free(&res);
    }
    uint32_t crc;
    for (uint64_t b = 5; b <= 6; b++) {
        assert_true(bv_crcmap_get(map, b, &crc));
        bv_crcmap_set(map, b, crc ^ 1);
    }
    assert_true(bv_crcmap_get(map, 16, &crc));
    bv_crcmap_set(map, 16, crc ^ 0x80000000u);
    for (unsigned t = 1; t <= 2; t++) {
        struct bv_verify_blocks_result res;
        check(&m, t, map, &res);
        assert_int_equal(res.bad_blocks, 3);
        assert_int_equal(res.bad_bytes, 2 * BV_CRC_BLOCK + 1024);
        assert_int_equal(res.first_bad, 5 * BV_CRC_BLOCK);
        assert_int_equal(res.n_extents, 2);
        assert_int_equal(res.extents_total, 2);
        assert_int_equal(res.extents[0].offset, 5 * BV_CRC_BLOCK);
        assert_int_equal(res.extents[0].length, 2 * BV_CRC_BLOCK);
        assert_int_equal(res.extents[1].offset, 16 * BV_CRC_BLOCK);
        assert_int_equal(res.extents[1].length, 1024);
        assert_int_equal(res.sample_len, BV_VERIFY_SAMPLE);
        assert_memory_equal(res.sample, m.data + 5 * BV_CRC_BLOCK, BV_VERIFY_SAMPLE);
        bv_verify_blocks_free(&res);
    }
    bv_crcmap_free(map);
    img_free(&m);
}

/* Blocks of the link in test_sources: where each one's bytes come from. */
enum { B_OWN, B_ZERO, B_COMPRESSED, B_HALF, B_BACKING, B_OWN2, NB };

static void test_sources(void **state)
{
    (void)state;
    const uint64_t size = NB * BV_CRC_BLOCK, cl = 32768;
    char dir[64], base[128], top[128];
    snprintf(dir, sizeof(dir), "/tmp/bv-test-verify.XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(base, sizeof(base), "%s/base.qcow2", dir);
    snprintf(top, sizeof(top), "%s/top.qcow2", dir);
    uint8_t *want = malloc(size), *buf = malloc(size);
    assert_non_null(want);
    assert_non_null(buf);
    for (uint64_t i = 0; i < size; i++)
        want[i] = (uint8_t)(i * 7 + (i >> 12) + 1);

    struct bv_create_opts bo = { .path = base, .format = BV_FMT_QCOW2, .size = size,
                                 .cluster_size = (uint32_t)cl };
    assert_int_equal(bv_image_create(&bo, NULL), 0);
    bv_node *n = NULL;
    struct bv_open_opts oo = { .path = base, .format = BV_FMT_QCOW2 };
    assert_int_equal(bv_node_open(&oo, &n, NULL), 0);
    assert_int_equal(bv_node_pwrite(n, want, size, 0, 0, NULL), 0);
    assert_int_equal(bv_node_close(n, NULL), 0);

    struct bv_create_opts to = { .path = top, .format = BV_FMT_QCOW2, .size = size,
                                 .cluster_size = (uint32_t)cl, .backing = "base.qcow2",
                                 .backing_format = BV_FMT_QCOW2 };
    assert_int_equal(bv_image_create(&to, NULL), 0);
    oo.path = top;
    assert_int_equal(bv_node_open(&oo, &n, NULL), 0);
    for (uint64_t i = 0; i < size; i++)         /* the link's own bytes differ from base's */
        want[i] = (uint8_t)(want[i] ^ 0x5a);
    const uint64_t B = BV_CRC_BLOCK;
    assert_int_equal(bv_node_pwrite(n, want + B_OWN * B, B, B_OWN * B, 0, NULL), 0);
    assert_int_equal(bv_node_pwrite(n, want + B_OWN2 * B, B, B_OWN2 * B, 0, NULL), 0);
    memset(want + B_ZERO * B, 0, B);
    assert_int_equal(bv_node_write_zeroes(n, B, B_ZERO * B, 0, NULL), 0);
    memset(want + B_COMPRESSED * B, 0x33, B);   /* compressible */
    assert_int_equal(bv_node_pwrite(n, want + B_COMPRESSED * B, B, B_COMPRESSED * B,
                                    BV_WRITE_COMPRESSED, NULL), 0);
    assert_int_equal(bv_node_pwrite(n, want + B_HALF * B, cl, B_HALF * B, 0, NULL), 0);
    for (uint64_t i = B_HALF * B + cl; i < (B_BACKING + 1) * B; i++)
        want[i] ^= 0x5a;                         /* the rest reads from base */
    assert_int_equal(bv_node_flush(n, NULL), 0);
    struct bv_block_status bs;
    assert_int_equal(bv_node_block_status(n, B_COMPRESSED * B, B, &bs, NULL), 0);
    assert_true(bs.flags & BV_BS_COMPRESSED);
    assert_int_equal(bv_node_block_status(n, B_OWN2 * B, B, &bs, NULL), 0);
    assert_true((bs.flags & BV_BS_DATA) && bs.host_offset);
    const uint64_t own2_host = bs.host_offset;
    assert_int_equal(bv_node_pread(n, buf, size, 0, NULL), 0);
    assert_memory_equal(buf, want, size);
    assert_int_equal(bv_node_close(n, NULL), 0);

    struct bv_crcmap *map = NULL;
    assert_int_equal(bv_crcmap_new(size, &map, NULL), 0);
    for (uint64_t b = 0; b < NB; b++)
        bv_crcmap_record(map, b * B, B, want + b * B);
    const struct bv_blkdebug_config nothing = { 0 };
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) {                          /* flip one byte of B_OWN2 in the file */
            int fd = open(top, O_RDWR);
            assert_true(fd >= 0);
            uint8_t c;
            assert_int_equal(pread(fd, &c, 1, (off_t)own2_host + 100), 1);
            c ^= 0xff;
            assert_int_equal(pwrite(fd, &c, 1, (off_t)own2_host + 100), 1);
            close(fd);
        }
        for (int filtered = 0; filtered < 2; filtered++) {
            struct bv_open_opts ro = { .path = top, .format = BV_FMT_QCOW2, .read_only = true,
                                       .filters = filtered ? BV_FILTERS_BLKDEBUG(&nothing)
                                                           : NULL };
            assert_int_equal(bv_node_open(&ro, &n, NULL), 0);
            bv_error *e = NULL;
            assert_int_equal(bv_node_pread_host(n, buf, 16, own2_host, &e),
                             filtered ? -ENOTSUP : 0);
            bv_error_free(e);
            for (uint32_t piece = 65536; piece <= 131072; piece *= 2) {
                for (unsigned t = 1; t <= 2; t++) {
                    struct bv_verify_blocks_opts o = { .point = n, .map = map, .threads = t,
                                                       .piece = piece };
                    struct bv_verify_blocks_result res;
                    assert_int_equal(bv_verify_blocks(&o, &res, NULL), 0);
                    assert_int_equal(res.blocks_checked, NB);
                    assert_int_equal(res.bytes_read, size);
                    assert_int_equal(res.bad_blocks, pass);
                    if (pass) {
                        assert_int_equal(res.first_bad, B_OWN2 * B);
                        assert_int_equal(res.n_extents, 1);
                        assert_int_equal(res.extents[0].length, B);
                    }
                    bv_verify_blocks_free(&res);
                }
            }
            assert_int_equal(bv_node_close(n, NULL), 0);
        }
    }
    bv_crcmap_free(map);
    unlink(top);
    unlink(base);
    rmdir(dir);
    free(want);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
        cmocka_unit_test(test_sources),
    };
    return cmocka_run_group_tests_name("verify", tests, NULL, NULL);
}
