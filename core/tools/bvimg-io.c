/*
 * bvimg io: run qemu-io style commands (bv/iocmd.h) against one image.
 * The image is opened with its backing chain, read-write unless -r; each -c
 * command is parsed and run in order, printing what qemu-io prints
 * ("wrote N/N bytes at offset M", "Pattern verification failed at ...").
 * A failing command does not stop the rest; the exit status is 1 if any
 * command failed, as with qemu-io.
 */
#include "tools/bvimg.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "bv/iocmd.h"

#define MAX_CMDS 256

static int node_pread(void *o, void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_node_pread(o, buf, len, off, errp);
}

static int node_pwrite(void *o, const void *buf, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_node_pwrite(o, buf, len, off, 0, errp);
}

static int node_zero(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_node_write_zeroes(o, len, off, 0, errp);
}

static int node_discard(void *o, uint64_t len, uint64_t off, bv_error **errp)
{
    return bv_node_discard(o, len, off, errp);
}

static int node_flush(void *o, bv_error **errp)
{
    return bv_node_flush(o, errp);
}

static void print_done(const struct bv_iocmd *cmd)
{
    const char *verb = cmd->op == BV_IOCMD_READ ? "read" :
                       cmd->op == BV_IOCMD_WRITE ? "wrote" : "discard";
    if (cmd->op == BV_IOCMD_FLUSH)
        return;
    printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", verb, cmd->length,
           cmd->length, cmd->offset);
}

/* Parse and run one command; false if it failed (after printing why). */
static bool run_one(const struct bv_iocmd_target *t, const char *line)
{
    struct bv_iocmd cmd;
    bv_error *err = NULL;
    int r = bv_iocmd_parse(line, &cmd, &err);
    if (r < 0) {
        bvimg_report(err, r, NULL);
        return false;
    }
    int64_t n = bv_iocmd_exec(&cmd, t, &err);
    if (n < 0 && err && err->kind == BV_ERR_MISMATCH) {
        printf("%s\n", err->msg);          /* qemu-io prints it on stdout, then the summary */
        bv_error_free(err);
        print_done(&cmd);
        return false;
    }
    if (n < 0) {
        char prefix[32];
        snprintf(prefix, sizeof(prefix), "%s failed", bv_iocmd_op_name(cmd.op));
        bvimg_report(err, (int)n, prefix);
        return false;
    }
    print_done(&cmd);
    return true;
}

int bvimg_cmd_io(int argc, char **argv)
{
    const char *cmds[MAX_CMDS], *fmt = NULL;
    unsigned ncmds = 0;
    bool read_only = false;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt(argc, argv, ":c:f:r")) != -1) {
        switch (c) {
        case 'c':
            if (ncmds == MAX_CMDS) {
                bvimg_errorf("io: at most %d commands", MAX_CMDS);
                return 1;
            }
            cmds[ncmds++] = optarg;
            break;
        case 'f': fmt = optarg; break;
        case 'r': read_only = true; break;
        default: return bvimg_bad_option(argv[0], c, argv[optind - 1]);
        }
    }
    enum bv_format f;
    if (argc - optind != 1) {
        bvimg_errorf("io: expecting one image file name");
        return 1;
    }
    if (!bvimg_parse_format(fmt, &f))
        return 1;
    bv_node *n;
    if (bvimg_open(argv[optind], f, read_only, false, &n) < 0)
        return 1;
    struct bv_iocmd_target t = {
        .opaque = n, .pread = node_pread, .pwrite = node_pwrite, .write_zeroes = node_zero,
        .discard = node_discard, .flush = node_flush, .size = bv_node_size(n),
    };
    bool ok = true;
    for (unsigned i = 0; i < ncmds; i++)
        ok = run_one(&t, cmds[i]) && ok;
    bv_error *err = NULL;
    int r = bv_node_close(n, &err);
    if (r < 0) {
        bvimg_report(err, r, argv[optind]);
        ok = false;
    }
    return ok ? 0 : 1;
}
