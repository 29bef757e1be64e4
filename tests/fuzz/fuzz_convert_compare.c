/*
 * fuzz_convert_compare: libFuzzer target for the image operations over a
 * fuzzed image: info, check, map, compare and convert.
 *
 * Input: byte 0 picks the convert options (output format raw/qcow2,
 * cluster size, compression zlib/zstd, extended L2, threads); the rest is
 * the source image, probed (raw or qcow2) and opened read-only beneath a
 * scratch directory (made once per process, see fuzz-util.h) that also holds base.raw, so a
 * fuzzed backing name may name it and nothing outside.
 *
 * Oracles, beyond "no crash, no sanitizer report, no hang": when convert
 * succeeds, its output must have the source's size (rounded up to 512 for
 * qcow2), compare identical to the source (what the source reads as, chain
 * included) and check clean (no corruption, no leak).  Sources larger than MAX_VIRTUAL are only inspected, not
 * converted: the target is about parsing and copying logic, not about
 * moving gigabytes.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>

#include "bv/image.h"
#include "bv/path.h"
#include "fuzz-util.h"

#define MAX_VIRTUAL (16u << 20)
#define BASE_SIZE   (256u << 10)

static const char *dir;
static struct bv_root *root;

static bool write_file(const char *name, const void *p, size_t n)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return false;
    bool ok = write(fd, p, n) == (ssize_t)n;
    close(fd);
    return ok;
}

static bool setup(void)
{
    static uint8_t base[BASE_SIZE];
    if (root)
        return true;
    if (!(dir = fuzz_scratch_dir("fuzz-convert")) || bv_root_open(dir, &root, NULL) < 0)
        return false;
    for (uint32_t i = 0; i < BASE_SIZE; i++)
        base[i] = (uint8_t)(i / 4096 % 2 ? 0 : 0x40 + i / 512);
    return write_file("base.raw", base, BASE_SIZE);
}

static int count_entry(const struct bv_map_entry *e, void *opaque)
{
    unsigned *n = opaque;
    return ++*n >= 4096 || e->length == 0;       /* a bounded walk */
}

/* What any image supports, whatever its state. */
static void inspect(bv_node *n)
{
    struct bv_image_info info;
    bv_node_info(n, &info, NULL);
    struct bv_check_result res;
    if (bv_image_check(n, false, &res, NULL) == 0 || res.nmessages)
        bv_check_result_free(&res);
    unsigned entries = 0;
    bv_image_map(n, count_entry, &entries, NULL);
}

static int open_image(const char *name, enum bv_format fmt, bv_node **out)
{
    struct bv_open_opts o = { .path = name, .root = root, .format = fmt, .read_only = true };
    return bv_node_open(&o, out, NULL);
}

static __attribute__((noreturn)) void fail(const char *what, const struct bv_convert_opts *o,
                                           int r, const char *msg)
{
    fprintf(stderr, "fuzz_convert_compare: %s (out %s, cluster %u, compress %d zstd %d "
            "extl2 %d): %d %s\n", what, bv_format_name(o->out_format), o->cluster_size,
            o->compress, o->compression_zstd, o->extended_l2, r, msg ? msg : "");
    abort();
}

/* A converted image reads as its source and checks clean. */
static void verify_output(bv_node *src, const struct bv_convert_opts *o)
{
    bv_node *out = NULL;
    bv_error *err = NULL;
    if (open_image("out.img", o->out_format, &out) < 0)
        fail("output does not open", o, -1, NULL);
    /* qcow2 sizes are multiples of 512 (a raw source's is not): the output
     * may be longer by that rounding, and the extra part must read as zeros */
    uint64_t ss = bv_node_size(src), os = bv_node_size(out);
    if (os < ss || os > (ss + 511) / 512 * 512)
        fail("output size differs from its source's", o, (int)(os - ss), NULL);
    bool same = false;
    uint64_t diff = 0;
    int r = bv_image_compare(src, out, false, &same, &diff, &err);
    if (r == 0 && !same) {
        char at[64];
        snprintf(at, sizeof(at), "first difference at %llu", (unsigned long long)diff);
        fail("output differs from its source", o, r, at);
    }
    if (o->out_format == BV_FMT_QCOW2) {
        struct bv_check_result res;
        if (bv_image_check(out, false, &res, NULL) < 0 || res.corruptions || res.leaks)
            fail("output does not check clean", o, (int)res.corruptions,
                 res.nmessages ? res.messages[0] : NULL);
        bv_check_result_free(&res);
    }
    inspect(out);
    bv_error_free(err);
    bv_node_close(out, NULL);
}

static void convert(bv_node *src, uint8_t sel)
{
    struct bv_convert_opts o = {
        .out_format = sel & 1 ? BV_FMT_QCOW2 : BV_FMT_RAW,
        .cluster_size = (sel & 6) == 0 ? 0 : 512u << (sel & 6),   /* default, 2k, 8k, 32k */
        .compress = sel & 8, .compression_zstd = sel & 16, .extended_l2 = sel & 32,
        .threads = sel & 64 ? 2 : 1,
    };
    if (o.extended_l2 && o.cluster_size && o.cluster_size < 16384)
        o.cluster_size = 16384;
    char out[512];
    snprintf(out, sizeof(out), "%s/out.img", dir);
    unlink(out);
    bv_error *err = NULL;
    if (bv_image_convert(src, out, &o, &err) == 0)
        verify_output(src, &o);
    bv_error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || !setup() || !write_file("src.img", data + 1, size - 1))
        return 0;
    bv_node *src = NULL, *base = NULL;
    if (open_image("src.img", BV_FMT_NONE, &src) == 0) {
        inspect(src);
        bool small = bv_node_size(src) <= MAX_VIRTUAL;
        if (small && open_image("base.raw", BV_FMT_RAW, &base) == 0) {
            bool same;
            uint64_t diff;
            bv_image_compare(src, base, data[0] & 128, &same, &diff, NULL);
        }
        if (small)
            convert(src, data[0]);
    }
    bv_node_close(base, NULL);
    bv_node_close(src, NULL);
    return 0;
}
