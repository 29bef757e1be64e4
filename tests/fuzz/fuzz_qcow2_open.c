/*
 * fuzz_qcow2_open: libFuzzer target for the image open and read paths.
 *
 * Each input is written to one scratch file (created once per process in
 * the directory fuzz-util.h makes; a memfd cannot be used because images
 * are opened with O_NOFOLLOW, which refuses /proc/self/fd links) and opened
 * as a qcow2 image (read-only, no backing chain: a fuzzed backing name must
 * not make us open arbitrary files).  If the open succeeds we read a few spread
 * ranges, walk block status, and take info, exercising the metadata parsers
 * (header, extensions, L1/L2, refcounts, compressed descriptors).  Any error
 * return is fine; a crash, sanitizer report or hang is a bug.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "bv/image.h"
#include "fuzz-util.h"

#define READ_LEN 65536

static void exercise(bv_node *n)
{
    static uint8_t buf[READ_LEN];
    uint64_t size = bv_node_size(n);
    uint64_t offs[] = { 0, size / 3, size / 2, size > READ_LEN ? size - READ_LEN : 0 };
    for (size_t i = 0; i < sizeof(offs) / sizeof(offs[0]); i++) {
        uint64_t len = size - offs[i] < READ_LEN ? size - offs[i] : READ_LEN;
        if (len)
            bv_node_pread(n, buf, len, offs[i], NULL);
    }
    /* a bounded walk of the mapping */
    uint64_t off = 0;
    for (int steps = 0; steps < 64 && off < size; steps++) {
        struct bv_block_status bs;
        if (bv_node_block_status(n, off, size - off, &bs, NULL) < 0 || bs.pnum == 0)
            break;
        off += bs.pnum;
    }
    struct bv_image_info info;
    bv_node_info(n, &info, NULL);
    struct bv_check_result res;
    memset(&res, 0, sizeof(res));
    if (bv_image_check(n, false, &res, NULL) == 0 || res.nmessages)
        bv_check_result_free(&res);
}

/* The scratch file's path, created on first use; NULL if that failed. */
static const char *scratch_path(void)
{
    static char path[512];
    const char *dir;
    if (!path[0] && (dir = fuzz_scratch_dir("fuzz-qcow2-open"))) {
        snprintf(path, sizeof(path), "%s/image", dir);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0)
            return NULL;
        close(fd);
    }
    return path[0] ? path : NULL;
}

static bool write_input(const char *path, const uint8_t *data, size_t size)
{
    int fd = open(path, O_WRONLY | O_TRUNC);
    if (fd < 0)
        return false;
    bool ok = write(fd, data, size) == (ssize_t)size;
    close(fd);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = scratch_path();
    if (!path || !write_input(path, data, size))
        return 0;
    struct bv_open_opts o = {
        .path = path, .format = BV_FMT_QCOW2, .read_only = true, .no_backing = true,
    };
    bv_node *n = NULL;
    bv_error *err = NULL;
    if (bv_node_open(&o, &n, &err) == 0)
        exercise(n);
    bv_error_free(err);
    bv_node_close(n, NULL);
    return 0;
}
