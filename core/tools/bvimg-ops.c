/*
 * bvimg create / compare / convert / rebase: the subcommands that make or
 * relate images.  Each parses its options into the engine's typed structs,
 * calls one bv_image_* function, and maps the result to qemu-img's messages
 * and exit codes.
 */
#include "tools/bvimg.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- create ---- */

struct create_args {
    const char *fmt, *backing, *backing_fmt, *file, *size;
    struct bvimg_opts o;
    bool quiet;
};

static bool parse_create_args(int argc, char **argv, struct create_args *a)
{
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt(argc, argv, ":f:o:b:F:q")) != -1) {
        switch (c) {
        case 'f': a->fmt = optarg; break;
        case 'o':
            if (!bvimg_parse_o(optarg, "cluster_size,compat,backing_file,backing_fmt,"
                                       "compression_type,extended_l2", &a->o))
                return false;
            break;
        case 'b': a->backing = optarg; break;
        case 'F': a->backing_fmt = optarg; break;
        case 'q': a->quiet = true; break;
        default: bvimg_bad_option(argv[0], c, argv[optind - 1]); return false;
        }
    }
    if (optind >= argc || argc - optind > 2) {
        bvimg_errorf("create: expecting FILE [SIZE]");
        return false;
    }
    a->file = argv[optind];
    a->size = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (!a->backing)
        a->backing = a->o.backing_file;
    if (!a->backing_fmt)
        a->backing_fmt = a->o.backing_fmt;
    return true;
}

static bool fill_create_opts(const struct create_args *a, struct bv_create_opts *co)
{
    memset(co, 0, sizeof(*co));
    co->path = a->file;
    co->cluster_size = a->o.cluster_size;
    co->compat_v2 = a->o.compat_v2;
    co->compression_zstd = a->o.compression_zstd;
    co->extended_l2 = a->o.extended_l2;
    co->backing = a->backing;
    if (!a->fmt) {
        bvimg_errorf("create: -f FMT is required");
        return false;
    }
    if (!bvimg_parse_format(a->fmt, &co->format))
        return false;
    if (a->backing_fmt && !bvimg_parse_format(a->backing_fmt, &co->backing_format))
        return false;
    if (a->size && !bvimg_parse_size(a->size, &co->size))
        return false;
    if (!a->size && !a->backing) {
        bvimg_errorf("Image creation needs a size parameter");
        return false;
    }
    return true;
}

int bvimg_cmd_create(int argc, char **argv)
{
    struct create_args a = { 0 };
    struct bv_create_opts co;
    if (!parse_create_args(argc, argv, &a) || !fill_create_opts(&a, &co))
        return 1;
    /* qemu-img refuses a backing file without its format before it announces
     * the image; the engine refuses it (in its words) before it creates */
    bool refused = co.backing && co.backing_format == BV_FMT_NONE;
    if (!a.quiet && !refused) {
        printf("Formatting '%s', fmt=%s", a.file, bv_format_name(co.format));
        if (co.format == BV_FMT_QCOW2)
            printf(" cluster_size=%" PRIu32, co.cluster_size ? co.cluster_size : BV_DEFAULT_CLUSTER);
        if (co.backing)
            printf(" backing_file=%s backing_fmt=%s", co.backing, bv_format_name(co.backing_format));
        printf(" size=%" PRIu64 "%s\n", co.size, co.compat_v2 ? " compat=0.10" : "");
    }
    bv_error *err = NULL;
    int r = bv_image_create(&co, &err);
    if (r < 0) {
        bvimg_report(err, r, a.file);
        return 1;
    }
    return 0;
}

/* ---- compare ---- */

struct compare_args {
    const char *fmt1, *fmt2;
    bool strict, quiet;
};

static void print_compare(const struct compare_args *a, bv_node *n1, bv_node *n2,
                          bool identical, uint64_t diff)
{
    uint64_t s1 = bv_node_size(n1), s2 = bv_node_size(n2);
    if (a->quiet)
        return;
    if (s1 != s2 && a->strict) {
        printf("Strict mode: Image size mismatch!\n");
        return;
    }
    if (s1 != s2)
        printf("Warning: Image size mismatch!\n");
    if (identical)
        printf("Images are identical.\n");
    else
        printf("Content mismatch at offset %" PRIu64 "!\n", diff);
}

/* Bench-only knobs (bench/bench_compare.sh, bench/README.md): BV_COMPARE_CHUNK
 * (bytes per item), BV_COMPARE_SLOTS, BV_COMPARE_HELPER=0, BV_COMPARE_DIRECT=0. */
static void compare_tuning(struct bv_compare_opts *o)
{
    const char *v;
    if ((v = getenv("BV_COMPARE_CHUNK")))
        o->chunk = strtoul(v, NULL, 0);
    if ((v = getenv("BV_COMPARE_SLOTS")))
        o->slots = (unsigned)strtoul(v, NULL, 0);
    o->no_helper = (v = getenv("BV_COMPARE_HELPER")) && !strcmp(v, "0");
    o->no_direct = (v = getenv("BV_COMPARE_DIRECT")) && !strcmp(v, "0");
}

int bvimg_cmd_compare(int argc, char **argv)
{
    struct compare_args a = { 0 };
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt(argc, argv, ":f:F:sq")) != -1) {
        switch (c) {
        case 'f': a.fmt1 = optarg; break;
        case 'F': a.fmt2 = optarg; break;
        case 's': a.strict = true; break;
        case 'q': a.quiet = true; break;
        default: bvimg_bad_option(argv[0], c, argv[optind - 1]); return 2;
        }
    }
    enum bv_format f1, f2;
    if (argc - optind != 2) {
        bvimg_errorf("compare: expecting two image file names");
        return 2;
    }
    if (!bvimg_parse_format(a.fmt1, &f1) || !bvimg_parse_format(a.fmt2, &f2))
        return 2;
    bv_node *n1 = NULL, *n2 = NULL;
    int status = 2;
    if (bvimg_open(argv[optind], f1, true, false, &n1) < 0 ||
        bvimg_open(argv[optind + 1], f2, true, false, &n2) < 0)
        goto out;
    struct bv_compare_opts o = { .strict = a.strict };
    compare_tuning(&o);
    struct bv_compare_report rep;
    bv_error *err = NULL;
    int r = bv_image_compare_ex(n1, n2, &o, &rep, &err);
    if (r < 0) {
        bvimg_report(err, r, "Error while comparing");
        goto out;
    }
    bv_compare_report_free(&rep);
    print_compare(&a, n1, n2, rep.identical, rep.first_diff);
    status = rep.identical ? 0 : 1;
out:
    bv_node_close(n1, NULL);
    bv_node_close(n2, NULL);
    return status;
}

/* ---- convert ---- */

struct convert_args {
    const char *fmt, *out_fmt, *cache;
    struct bvimg_opts o;
    bool compress, quiet;
};

/* -t: modes that bypass or write through the page cache make the result durable. */
static bool cache_mode(const char *mode, bool *flush)
{
    static const struct { const char *name; bool flush; } modes[] = {
        { "none", true }, { "directsync", true }, { "writethrough", true },
        { "writeback", false }, { "unsafe", false },
    };
    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (!strcmp(mode, modes[i].name)) {
            *flush = modes[i].flush;
            return true;
        }
    }
    bvimg_errorf("Invalid cache option: %s", mode);
    return false;
}

static bool parse_convert_args(int argc, char **argv, struct convert_args *a)
{
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt(argc, argv, ":cf:O:o:t:T:qp")) != -1) {
        switch (c) {
        case 'c': a->compress = true; break;
        case 'f': a->fmt = optarg; break;
        case 'O': a->out_fmt = optarg; break;
        case 'o':
            if (!bvimg_parse_o(optarg, "cluster_size,compression_type,extended_l2", &a->o))
                return false;
            break;
        case 't': a->cache = optarg; break;
        case 'T': break;                 /* source cache mode: reads always use the page cache */
        case 'q': a->quiet = true; break;
        case 'p': break;                 /* progress: not shown */
        default: bvimg_bad_option(argv[0], c, argv[optind - 1]); return false;
        }
    }
    if (argc - optind != 2) {
        bvimg_errorf("convert: expecting SRC DST");
        return false;
    }
    return true;
}

int bvimg_cmd_convert(int argc, char **argv)
{
    struct convert_args a = { 0 };
    if (!parse_convert_args(argc, argv, &a))
        return 1;
    struct bv_convert_opts co = { .cluster_size = a.o.cluster_size, .compress = a.compress,
                                  .compression_zstd = a.o.compression_zstd,
                                  .extended_l2 = a.o.extended_l2 };
    enum bv_format in_fmt;
    if (!bvimg_parse_format(a.fmt, &in_fmt) ||
        !bvimg_parse_format(a.out_fmt ? a.out_fmt : "raw", &co.out_format) ||
        (a.cache && !cache_mode(a.cache, &co.flush)))
        return 1;
    const char *src_path = argv[optind], *dst_path = argv[optind + 1];
    bv_node *src;
    if (bvimg_open(src_path, in_fmt, true, false, &src) < 0)
        return 1;
    bv_error *err = NULL;
    int r = bv_image_convert(src, dst_path, &co, &err);
    if (r < 0) {
        char prefix[300];
        snprintf(prefix, sizeof(prefix), "error while converting to '%s'", dst_path);
        bvimg_report(err, r, prefix);
    }
    bv_node_close(src, NULL);
    return r < 0 ? 1 : 0;
}

/* ---- rebase ---- */

int bvimg_cmd_rebase(int argc, char **argv)
{
    const char *backing = NULL, *backing_fmt = NULL, *fmt = NULL;
    bool unsafe = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt(argc, argv, ":ub:F:f:qp")) != -1) {
        switch (c) {
        case 'u': unsafe = true; break;
        case 'b': backing = optarg; break;
        case 'F': backing_fmt = optarg; break;
        case 'f': fmt = optarg; break;
        case 'q': case 'p': break;
        default: return bvimg_bad_option(argv[0], c, argv[optind - 1]);
        }
    }
    enum bv_format bf = BV_FMT_NONE, f;
    if (argc - optind != 1 || !backing) {
        bvimg_errorf("rebase: expecting -b BACKING and one image file name");
        return 1;
    }
    if (!unsafe) {
        bvimg_errorf("rebase: only unsafe mode (-u) is supported");
        return 1;
    }
    if (!bvimg_parse_format(fmt, &f) || !bvimg_parse_format(backing_fmt, &bf))
        return 1;
    if (fmt && f != BV_FMT_QCOW2) {
        bvimg_errorf("rebase: only qcow2 images have a backing file");
        return 1;
    }
    if (backing[0] && bf == BV_FMT_NONE) {
        bvimg_errorf("rebase: -F FMT is required with a backing file");
        return 1;
    }
    bv_error *err = NULL;
    int r = bv_image_rebase_unsafe(argv[optind], NULL, backing[0] ? backing : NULL, bf, &err);
    if (r < 0)
        bvimg_report(err, r, argv[optind]);
    return r < 0 ? 1 : 0;
}
