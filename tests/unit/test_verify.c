/*
 * test_verify: the checksum pass of core/job/verify.c.
 *  - bv_verify_blocks over a real qcow2 image (1 MiB + 1000 bytes: a short
 *    last block): a map recorded from the data it holds checks clean, counts
 *    the blocks and bytes it read (present blocks only); a map with two wrong
 *    CRCs (adjacent blocks) and one in the short last block reports exactly
 *    those blocks as two merged extents, whole-block byte counts, the first
 *    bad block's offset and its sample, for 1 and 2 reader threads.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocks),
    };
    return cmocka_run_group_tests_name("verify", tests, NULL, NULL);
}
