/*
 * bvimg info / check / map: read-only views of one image, printed the way
 * qemu-img 7.2 prints them (human text or --output=json) so that output can
 * be diffed against the oracle.
 */
#include "tools/bvimg.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { OPT_OUTPUT = 256 };

static const struct option long_output[] = {
    { "output", required_argument, NULL, OPT_OUTPUT },
    { NULL, 0, NULL, 0 },
};

/* Common option loop for info/check/map: -f, --output, plus extra letters. */
struct view_args {
    const char *fmt, *output, *repair;
    const char *file;
    bool json;
};

static bool parse_view_args(int argc, char **argv, const char *optstr, struct view_args *a)
{
    int c;
    memset(a, 0, sizeof(*a));
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, optstr, long_output, NULL)) != -1) {
        switch (c) {
        case 'f': a->fmt = optarg; break;
        case 'r': a->repair = optarg; break;
        case OPT_OUTPUT: a->output = optarg; break;
        default:
            bvimg_bad_option(argv[0], c, argv[optind - 1]);
            return false;
        }
    }
    if (a->output && strcmp(a->output, "json") && strcmp(a->output, "human")) {
        bvimg_errorf("--output must be used with human or json as argument.");
        return false;
    }
    a->json = a->output && !strcmp(a->output, "json");
    if (optind != argc - 1) {
        bvimg_errorf("%s: expecting one image file name", argv[0]);
        return false;
    }
    a->file = argv[optind];
    return true;
}

/* ---- info ---- */

static void print_snapshot_json(const struct bv_snapshot_info *sn, bool last)
{
    printf("        {\n");
    if (sn->icount != UINT64_MAX)
        printf("            \"icount\": %" PRIu64 ",\n", sn->icount);
    printf("            \"vm-clock-nsec\": %" PRIu64 ",\n            \"name\": ",
           sn->vm_clock_ns % 1000000000);
    bvimg_json_string(sn->name);
    printf(",\n            \"date-sec\": %" PRIu32 ",\n            \"date-nsec\": %" PRIu32
           ",\n            \"vm-clock-sec\": %" PRIu64 ",\n            \"id\": ",
           sn->date_sec, sn->date_nsec, sn->vm_clock_ns / 1000000000);
    bvimg_json_string(sn->id);
    printf(",\n            \"vm-state-size\": %" PRIu64 "\n        }%s\n", sn->vm_state_size,
           last ? "" : ",");
}

/* Where the backing file really is, as qemu-img names it: an absolute name
 * as recorded, a relative one joined to the image name's directory part
 * (qemu's path_combine: "sub/t.qcow2" + "../b.qcow2" = "sub/../b.qcow2",
 * not normalised).  malloc'd. */
static char *full_backing_name(const char *file, const char *backing)
{
    const char *slash = strrchr(file, '/');
    size_t dir = backing[0] == '/' || !slash ? 0 : (size_t)(slash + 1 - file);
    size_t n = dir + strlen(backing) + 1;
    char *full = malloc(n);
    if (full)
        snprintf(full, n, "%.*s%s", (int)dir, file, backing);
    return full;
}

static void print_info_json(const char *file, const struct bv_image_info *in,
                            const struct bv_snapshot_list *sl)
{
    printf("{\n");
    if (in->backing[0] && in->backing_format != BV_FMT_NONE)
        printf("    \"backing-filename-format\": \"%s\",\n", bv_format_name(in->backing_format));
    if (sl->count) {
        printf("    \"snapshots\": [\n");
        for (uint32_t i = 0; i < sl->count; i++)
            print_snapshot_json(&sl->sn[i], i + 1 == sl->count);
        printf("    ],\n");
    }
    printf("    \"virtual-size\": %" PRIu64 ",\n    \"filename\": ", in->virtual_size);
    bvimg_json_string(file);
    printf(",\n");
    if (in->cluster_size)
        printf("    \"cluster-size\": %" PRIu32 ",\n", in->cluster_size);
    printf("    \"format\": \"%s\",\n    \"actual-size\": %" PRIu64 ",\n",
           bv_format_name(in->format), in->actual_size);
    if (in->format == BV_FMT_QCOW2) {
        printf("    \"format-specific\": {\n        \"type\": \"qcow2\",\n        \"data\": {\n"
               "            \"compat\": \"%s\",\n            \"compression-type\": \"%s\",\n",
               in->qcow2_version >= 3 ? "1.1" : "0.10", in->compression_zstd ? "zstd" : "zlib");
        if (in->qcow2_version >= 3)
            printf("            \"lazy-refcounts\": %s,\n", in->compatible_features & 1 ? "true" : "false");
        printf("            \"refcount-bits\": %d", in->refcount_bits);
        if (in->qcow2_version >= 3)
            printf(",\n            \"corrupt\": %s,\n            \"extended-l2\": %s",
                   in->corrupt ? "true" : "false", in->extended_l2 ? "true" : "false");
        printf("\n        }\n    },\n");
    }
    char *full = in->backing[0] ? full_backing_name(file, in->backing) : NULL;
    if (full) {
        printf("    \"full-backing-filename\": ");
        bvimg_json_string(full);
        printf(",\n");
        free(full);
    }
    if (in->backing[0]) {
        printf("    \"backing-filename\": ");
        bvimg_json_string(in->backing);
        printf(",\n");
    }
    printf("    \"dirty-flag\": %s\n}\n", in->dirty ? "true" : "false");
}

/* One row of qemu's snapshot table (bdrv_snapshot_dump): the date in local
 * time, the VM clock as h:mm:ss.ms, ICOUNT blank when not recorded; qemu
 * keeps at most 127 bytes of an id and 255 of a name. */
static void print_snapshot_human(const struct bv_snapshot_info *sn)
{
    char size[32], date[64] = "", clock[64], icount[32] = "";
    struct tm tm;
    time_t t = (time_t)sn->date_sec;
    if (localtime_r(&t, &tm))
        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
    uint64_t secs = sn->vm_clock_ns / 1000000000;
    snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
             (int)((secs / 60) % 60), (int)(secs % 60), (int)((sn->vm_clock_ns / 1000000) % 1000));
    bvimg_human_size(sn->vm_state_size, size, sizeof(size));
    if (sn->icount != UINT64_MAX)
        snprintf(icount, sizeof(icount), "%" PRIu64, sn->icount);
    printf("%-9.127s %-16.255s %8s%20s%13s%11s\n", sn->id, sn->name, size, date, clock, icount);
}

static void print_snapshots_human(const struct bv_snapshot_list *sl)
{
    if (!sl->count)
        return;
    printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE",
           "VM CLOCK", "ICOUNT");
    for (uint32_t i = 0; i < sl->count; i++)
        print_snapshot_human(&sl->sn[i]);
}

static void print_info_human(const char *file, const struct bv_image_info *in,
                             const struct bv_snapshot_list *sl)
{
    char vs[32], ds[32];
    bvimg_human_size(in->virtual_size, vs, sizeof(vs));
    bvimg_human_size(in->actual_size, ds, sizeof(ds));
    printf("image: %s\nfile format: %s\nvirtual size: %s (%" PRIu64 " bytes)\ndisk size: %s\n",
           file, bv_format_name(in->format), vs, in->virtual_size, ds);
    if (in->cluster_size)
        printf("cluster_size: %" PRIu32 "\n", in->cluster_size);
    if (in->backing[0]) {
        char *full = full_backing_name(file, in->backing);
        printf("backing file: %s", in->backing);
        if (full && strcmp(full, in->backing) != 0)
            printf(" (actual path: %s)", full);
        printf("\n");
        free(full);
    }
    if (in->backing[0] && in->backing_format != BV_FMT_NONE)
        printf("backing file format: %s\n", bv_format_name(in->backing_format));
    if (in->dirty)
        printf("cleanly shut down: no\n");
    print_snapshots_human(sl);
    if (in->format != BV_FMT_QCOW2)
        return;
    printf("Format specific information:\n    compat: %s\n    compression type: %s\n",
           in->qcow2_version >= 3 ? "1.1" : "0.10", in->compression_zstd ? "zstd" : "zlib");
    if (in->qcow2_version >= 3)
        printf("    lazy refcounts: %s\n", in->compatible_features & 1 ? "true" : "false");
    printf("    refcount bits: %d\n", in->refcount_bits);
    if (in->qcow2_version >= 3)
        printf("    corrupt: %s\n    extended l2: %s\n", in->corrupt ? "true" : "false",
               in->extended_l2 ? "true" : "false");
}

int bvimg_cmd_info(int argc, char **argv)
{
    struct view_args a;
    enum bv_format fmt;
    bv_node *n;
    if (!parse_view_args(argc, argv, ":f:", &a) || !bvimg_parse_format(a.fmt, &fmt))
        return 1;
    if (bvimg_open(a.file, fmt, true, true, &n) < 0)
        return 1;
    struct bv_image_info in;
    struct bv_snapshot_list sl = { 0 };
    memset(&in, 0, sizeof(in));
    bv_error *err = NULL;
    int r = bv_node_info(n, &in, &err);
    if (r == 0)
        r = bv_node_snapshots(n, &sl, &err);
    if (r < 0)
        bvimg_report(err, r, a.file);
    else if (a.json)
        print_info_json(a.file, &in, &sl);
    else
        print_info_human(a.file, &in, &sl);
    bv_snapshot_list_free(&sl);
    bv_node_close(n, NULL);
    return r < 0 ? 1 : 0;
}

/* ---- check ---- */

static void print_check_json(const char *file, enum bv_format fmt,
                             const struct bv_check_result *res)
{
    printf("{\n    \"image-end-offset\": %" PRIu64 ",\n    \"total-clusters\": %" PRIu64
           ",\n    \"check-errors\": %" PRIu64 ",\n",
           res->image_end_offset, res->total_clusters, res->check_errors);
    if (res->corruptions)
        printf("    \"corruptions\": %" PRIu64 ",\n", res->corruptions);
    if (res->leaks)
        printf("    \"leaks\": %" PRIu64 ",\n", res->leaks);
    if (res->leaks_fixed)
        printf("    \"leaks-fixed\": %" PRIu64 ",\n", res->leaks_fixed);
    printf("    \"allocated-clusters\": %" PRIu64 ",\n    \"filename\": ", res->allocated_clusters);
    bvimg_json_string(file);
    printf(",\n    \"format\": \"%s\"\n}\n", bv_format_name(fmt));
}

static void print_check_human(const struct bv_check_result *res)
{
    for (unsigned i = 0; i < res->nmessages; i++)
        fprintf(stderr, "%s\n", res->messages[i]);
    if (res->corruptions)
        printf("\n%" PRIu64 " errors were found on the image.\nData may be corrupted, or "
               "further writes to the image may corrupt it.\n", res->corruptions);
    if (res->leaks)
        printf("\n%" PRIu64 " leaked clusters were found on the image.\nThis means waste of "
               "disk space, but no harm to data.\n", res->leaks);
    if (!res->corruptions && !res->leaks && !res->check_errors)
        printf("No errors were found on the image.\n");
    if (res->total_clusters && res->allocated_clusters)
        printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated\n", res->allocated_clusters,
               res->total_clusters,
               100.0 * (double)res->allocated_clusters / (double)res->total_clusters);
    if (res->image_end_offset)
        printf("Image end offset: %" PRIu64 "\n", res->image_end_offset);
}

/* qemu-img's exit status for a finished check. */
static int check_status(const struct bv_check_result *res)
{
    if (res->check_errors)
        return 1;
    if (res->corruptions)
        return 2;
    return res->leaks ? 3 : 0;
}

/* Check; after a repair that fixed something, check again (as qemu-img does)
 * so that the result describes the image as it is now. */
static int check_repair(bv_node *n, bool repair, bool quiet, struct bv_check_result *res,
                        bv_error **errp)
{
    int r = bv_image_check(n, repair, res, errp);
    if (r < 0 || !repair || !res->leaks_fixed)
        return r;
    if (!quiet)
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n    0 corruptions\n\n"
               "Double checking the fixed image now...\n", res->leaks_fixed);
    uint64_t fixed = res->leaks_fixed;
    bv_check_result_free(res);
    memset(res, 0, sizeof(*res));
    r = bv_image_check(n, false, res, errp);
    res->leaks_fixed = fixed;
    return r;
}

int bvimg_cmd_check(int argc, char **argv)
{
    struct view_args a;
    enum bv_format fmt;
    bv_node *n;
    if (!parse_view_args(argc, argv, ":f:r:", &a) || !bvimg_parse_format(a.fmt, &fmt))
        return 1;
    if (a.repair && strcmp(a.repair, "leaks")) {
        bvimg_errorf("Invalid option for -r: '%s' (only 'leaks' is supported)", a.repair);
        return 1;
    }
    if (bvimg_open(a.file, fmt, !a.repair, true, &n) < 0)
        return 1;
    struct bv_check_result res;
    memset(&res, 0, sizeof(res));
    bv_error *err = NULL;
    int r = check_repair(n, a.repair != NULL, a.json, &res, &err);
    int status;
    if (r == -ENOTSUP) {
        bvimg_report(err, r, NULL);     /* the engine says the format has no checks */
        status = 63;
    } else if (r < 0) {
        bvimg_report(err, r, "Check failed");
        status = 1;
    } else {
        if (a.json)
            print_check_json(a.file, bv_node_format(n), &res);
        else
            print_check_human(&res);
        status = check_status(&res);
    }
    bv_check_result_free(&res);
    err = NULL;
    r = bv_node_close(n, &err);
    if (r < 0) {
        bvimg_report(err, r, a.file);
        status = 1;
    }
    return status;
}

/* ---- map ---- */

struct map_print {
    bv_node *top;
    bool json, first;
};

static bv_node *layer_at(bv_node *top, int depth)
{
    bv_node *n = top;
    for (int i = 0; i < depth && n; i++)
        n = bv_node_backing(n);
    return n;
}

/* qemu's "present": allocated in some layer.  Only a zero run at the bottom is in doubt. */
static bool entry_present(bv_node *layer, const struct bv_map_entry *e)
{
    if (e->data || !layer || e->start >= bv_node_size(layer))
        return e->data;
    struct bv_block_status bs;
    if (bv_node_block_status(layer, e->start, 1, &bs, NULL) < 0)
        return true;
    return (bs.flags & BV_BS_ALLOCATED) != 0;
}

static int print_map_entry(const struct bv_map_entry *e, void *opaque)
{
    struct map_print *mp = opaque;
    bv_node *layer = layer_at(mp->top, e->depth);
    if (!mp->json) {
        if (e->data && e->offset != UINT64_MAX)
            printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length,
                   e->offset, layer ? bv_node_filename(layer) : "?");
        return 0;
    }
    printf("%s{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %d, "
           "\"present\": %s, \"zero\": %s, \"data\": %s",
           mp->first ? "[" : ",\n", e->start, e->length, e->depth,
           entry_present(layer, e) ? "true" : "false", e->zero ? "true" : "false",
           e->data ? "true" : "false");
    if (e->data && e->offset != UINT64_MAX)
        printf(", \"offset\": %" PRIu64, e->offset);
    else if (layer && bv_node_format(layer) == BV_FMT_RAW)
        printf(", \"offset\": %" PRIu64, e->start);    /* raw maps 1:1, holes too */
    printf("}");
    mp->first = false;
    return 0;
}

int bvimg_cmd_map(int argc, char **argv)
{
    struct view_args a;
    enum bv_format fmt;
    bv_node *n;
    if (!parse_view_args(argc, argv, ":f:", &a) || !bvimg_parse_format(a.fmt, &fmt))
        return 1;
    if (bvimg_open(a.file, fmt, true, false, &n) < 0)
        return 1;
    struct map_print mp = { .top = n, .json = a.json, .first = true };
    if (!a.json)
        printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
    bv_error *err = NULL;
    int r = bv_image_map(n, print_map_entry, &mp, &err);
    if (a.json)
        printf("%s]\n", mp.first ? "[" : "");
    if (r < 0)
        bvimg_report(err, r, a.file);
    bv_node_close(n, NULL);
    return r < 0 ? 1 : 0;
}
