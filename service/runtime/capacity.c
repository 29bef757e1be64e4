/* Space in the storage directory: see capacity.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "app.h"
#include "bv/path.h"
#include "runtime/backups.h"
#include "runtime/capacity.h"
#include "runtime/notify.h"

#define METADATA_FIXED (1u << 20)
#define CHAIN_DEPTH_MAX 1024

/* The test-only override of the free space; false when unset or not a number. */
static bool test_free(uint64_t *out)
{
    const char *s = getenv("BV_TEST_FREE_BYTES");
    char *end;
    if (!s || !*s)
        return false;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end)
        return false;
    *out = v;
    return true;
}

int bv_capacity_space(struct bv_app *app, struct bv_space *out, bv_error **errp)
{
    struct statvfs sv;
    if (fstatvfs(app->root->fd, &sv) < 0)
        return bv_error_setf(errp, errno, "cannot read the storage directory's file system: %s",
                             strerror(errno));
    uint64_t unit = sv.f_frsize ? sv.f_frsize : sv.f_bsize;
    out->total = (uint64_t)sv.f_blocks * unit;
    out->free = (uint64_t)sv.f_bavail * unit;
    out->used = out->total - (uint64_t)sv.f_bfree * unit;
    uint64_t forced;
    if (test_free(&forced))
        out->free = forced;
    return 0;
}

uint64_t bv_capacity_need(uint64_t data_bytes)
{
    uint64_t meta = data_bytes / 4096 + METADATA_FIXED;
    return data_bytes > UINT64_MAX - meta ? UINT64_MAX : data_bytes + meta;
}

/* One run at off in n's chain: *pnum bytes, *data whether any layer holds them. */
static int alloc_run(bv_node *n, uint64_t off, uint64_t len, uint64_t *pnum, bool *data,
                     bv_error **errp)
{
    for (unsigned depth = 0; depth < CHAIN_DEPTH_MAX; depth++) {
        if (!n || off >= bv_node_size(n)) {
            *pnum = len;
            *data = false;
            return 0;
        }
        uint64_t l = len < bv_node_size(n) - off ? len : bv_node_size(n) - off;
        struct bv_block_status bs;
        int r = bv_node_block_status(n, off, l, &bs, errp);
        if (r < 0)
            return r;
        if (bs.pnum == 0 || bs.pnum > l)
            return bv_error_setf(errp, EIO, "block status returned no progress");
        bv_node *back = bv_node_backing(n);
        if ((bs.flags & (BV_BS_ALLOCATED | BV_BS_DATA | BV_BS_ZERO)) || !back) {
            *pnum = bs.pnum;
            *data = (bs.flags & BV_BS_DATA) && !(bs.flags & BV_BS_ZERO);
            return 0;
        }
        len = bs.pnum;
        n = back;
    }
    return bv_error_setf(errp, ELOOP, "backing chain deeper than %d", CHAIN_DEPTH_MAX);
}

int bv_capacity_allocated(bv_node *n, uint64_t *out, bv_error **errp)
{
    uint64_t size = bv_node_size(n), off = 0, total = 0;
    while (off < size) {
        uint64_t pnum = 0;
        bool data = false;
        int r = alloc_run(n, off, size - off, &pnum, &data, errp);
        if (r < 0)
            return r;
        if (data)
            total += pnum;
        off += pnum;
    }
    *out = total;
    return 0;
}

int bv_capacity_check(struct bv_app *app, uint64_t need, bv_error **errp)
{
    struct bv_space sp;
    int r = bv_capacity_space(app, &sp, errp);
    if (r < 0)
        return r;
    bv_notify_space_checked(app, need <= sp.free, need, sp.free);   /* space_low webhooks */
    if (need > sp.free)
        return bv_error_setf(errp, ENOSPC, "Insufficient space: need %" PRIu64 ", have %" PRIu64,
                             need, sp.free);
    return 0;
}

uint64_t bv_capacity_file_bytes(struct bv_app *app, const char *file)
{
    struct stat st;
    if (!file[0] || bv_path_stat(app->root, file, &st, NULL) < 0)
        return 0;
    return (uint64_t)st.st_blocks * 512;
}

int bv_capacity_chains(struct bv_app *app, struct bv_chain_usage **out)
{
    struct bv_backup_rec *recs = NULL;
    int n = bv_backups_list(app, NULL, &recs);
    if (n < 0)
        return n;
    struct bv_chain_usage *u = calloc((size_t)n + 1, sizeof(*u));
    int nu = 0;
    for (int i = 0; u && i < n; i++) {
        int k = 0;
        while (k < nu && !(strcmp(u[k].chain, recs[i].chain) == 0 &&
                           strcmp(u[k].drive, recs[i].drive) == 0))
            k++;
        if (k == nu) {
            snprintf(u[k].drive, sizeof(u[k].drive), "%s", recs[i].drive);
            snprintf(u[k].chain, sizeof(u[k].chain), "%s", recs[i].chain);
            nu++;
        }
        u[k].bytes += bv_capacity_file_bytes(app, recs[i].file);
    }
    free(recs);
    if (!u)
        return -ENOMEM;
    *out = u;
    return nu;
}

void bv_capacity_metrics(struct bv_app *app, FILE *f)
{
    struct bv_space sp;
    if (bv_capacity_space(app, &sp, NULL) == 0)
        fprintf(f, "# HELP blockvault_storage_bytes The storage directory's file system.\n"
                   "# TYPE blockvault_storage_bytes gauge\n"
                   "blockvault_storage_bytes{kind=\"total\"} %" PRIu64 "\n"
                   "blockvault_storage_bytes{kind=\"used\"} %" PRIu64 "\n"
                   "blockvault_storage_bytes{kind=\"free\"} %" PRIu64 "\n",
                sp.total, sp.used, sp.free);
    struct bv_chain_usage *u = NULL;
    int n = bv_capacity_chains(app, &u);
    if (n < 0)
        return;
    fprintf(f, "# HELP blockvault_chain_bytes Bytes the link files of a backup chain take.\n"
               "# TYPE blockvault_chain_bytes gauge\n");
    for (int i = 0; i < n; i++)
        fprintf(f, "blockvault_chain_bytes{drive=\"%s\",chain=\"%s\"} %" PRIu64 "\n",
                u[i].drive, u[i].chain, u[i].bytes);
    free(u);
}
