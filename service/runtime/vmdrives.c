/*
 * VM drives: see vmdrives.h.  What is asked of QEMU and in which order is
 * ../shared/reference/vm-pull.md; names of the objects made in QEMU are
 * "blockvault-tmp-<tag>-<n>" where tag is 8 hex digits of the drive id
 * (QEMU caps node names at 31 characters, drive ids may be 128), so that
 * removing a drive, or a later start-up, finds exactly its leftovers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libnbd.h>

#include "app.h"
#include "bvdb/vmdrives.h"
#include "log.h"
#include "bv/path.h"
#include "qmp/qmp.h"
#include "runtime/drives.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "runtime/vmdrives-int.h"

#define READ_CHUNK   (4u << 20)       /* QEMU's NBD server takes at most 32 MiB a request */
#define EVENT_WAIT_MS 10000

struct bv_vms {
    pthread_mutex_t lock;
    struct bv_vm *vms;
    struct bv_vm_drive *drives;       /* oldest first */
};

int bv_vms_init(struct bv_app *app)
{
    struct bv_vms *v = calloc(1, sizeof(*v));
    if (!v)
        return -ENOMEM;
    pthread_mutex_init(&v->lock, NULL);
    app->vms = v;
    return 0;
}

static void vm_free(struct bv_vm *vm)
{
    bv_qmp_close(vm->q);
    pthread_mutex_destroy(&vm->op_lock);
    free(vm->qmp);
    free(vm);
}

static void drive_free(struct bv_vm_drive *d)
{
    free(d->id);
    free(d->node);
    free(d->scratch_dir);
    free(d);
}

void bv_vms_free(struct bv_app *app)
{
    struct bv_vms *v = app->vms;
    if (!v)
        return;
    while (v->drives) {
        struct bv_vm_drive *d = v->drives;
        v->drives = d->next;
        drive_free(d);
    }
    while (v->vms) {
        struct bv_vm *vm = v->vms;
        v->vms = vm->next;
        vm_free(vm);
    }
    pthread_mutex_destroy(&v->lock);
    free(v);
    app->vms = NULL;
}

/* ---------------- connections ---------------- */

/* The VM behind a socket name, with a reference: the shared connection, or
 * a new one (opened without the lock; a racing opener's copy is dropped). */
static int vm_get(struct bv_app *app, const char *qmp, bool lazy, struct bv_vm **out,
                  bv_error **errp)
{
    struct bv_vms *v = app->vms;
    struct bv_vm *vm, *fresh = NULL;
    pthread_mutex_lock(&v->lock);
    for (vm = v->vms; vm && strcmp(vm->qmp, qmp) != 0; vm = vm->next)
        ;
    if (vm)
        vm->refs++;
    pthread_mutex_unlock(&v->lock);
    if (vm) {
        *out = vm;
        return 0;
    }
    if (!(fresh = calloc(1, sizeof(*fresh))) || !(fresh->qmp = strdup(qmp))) {
        free(fresh);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    pthread_mutex_init(&fresh->op_lock, NULL);
    int r = lazy ? bv_qmp_new(app->qmp_root, qmp, &fresh->q, errp)
                 : bv_qmp_open(app->qmp_root, qmp, 0, &fresh->q, errp);
    if (r < 0) {
        vm_free(fresh);
        return r;
    }
    pthread_mutex_lock(&v->lock);
    for (vm = v->vms; vm && strcmp(vm->qmp, qmp) != 0; vm = vm->next)
        ;
    if (vm) {
        vm->refs++;
    } else {
        fresh->refs = 1;
        fresh->next = v->vms;
        v->vms = vm = fresh;
        fresh = NULL;
    }
    pthread_mutex_unlock(&v->lock);
    if (fresh)
        vm_free(fresh);
    *out = vm;
    return 0;
}

static void vm_put(struct bv_app *app, struct bv_vm *vm)
{
    struct bv_vms *v = app->vms;
    bool last = false;
    pthread_mutex_lock(&v->lock);
    if (--vm->refs == 0) {
        struct bv_vm **pp = &v->vms;
        while (*pp != vm)
            pp = &(*pp)->next;
        *pp = vm->next;
        last = true;
    }
    pthread_mutex_unlock(&v->lock);
    if (last)
        vm_free(vm);
}

/* ---------------- asking QEMU ---------------- */

int vm_qmp(struct bv_vm *vm, const char *cmd, const char *args_json, cJSON **ret,
               char *cls, size_t cap, bv_error **errp)
{
    cJSON *args = args_json ? cJSON_Parse(args_json) : NULL;
    if (args_json && !args)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int r = bv_qmp_execute(vm->q, cmd, args, 0, ret, cls, cap, errp);
    cJSON_Delete(args);
    return r;
}

static const cJSON *find_named(const cJSON *nodes, const char *name)
{
    const cJSON *n;
    cJSON_ArrayForEach(n, nodes) {
        const char *nn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "node-name"));
        if (nn && strcmp(nn, name) == 0)
            return n;
    }
    return NULL;
}

/* The node-name a device (BlockBackend) name stands for, or NULL. */
static const char *device_node(const cJSON *block, const char *device)
{
    const cJSON *b;
    cJSON_ArrayForEach(b, block) {
        const char *dev = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "device"));
        const char *qdev = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(b, "qdev"));
        if ((dev && !strcmp(dev, device)) || (qdev && !strcmp(qdev, device)))
            return cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(b, "inserted"), "node-name"));
    }
    return NULL;
}

/* QEMU's bitmap as the API shows bitmaps (QMP's old status names). */
static cJSON *bitmap_json(const cJSON *bm)
{
    bool recording = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bm, "recording"));
    bool busy = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bm, "busy"));
    bool inconsistent = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bm, "inconsistent"));
    const char *name = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bm, "name"));
    const cJSON *gran = cJSON_GetObjectItemCaseSensitive(bm, "granularity");
    const cJSON *count = cJSON_GetObjectItemCaseSensitive(bm, "count");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", name ? name : "");
    cJSON_AddNumberToObject(o, "granularity", cJSON_IsNumber(gran) ? gran->valuedouble : 0);
    cJSON_AddNumberToObject(o, "count", cJSON_IsNumber(count) ? count->valuedouble : 0);
    cJSON_AddStringToObject(o, "status", inconsistent ? "inconsistent" : busy ? "locked"
                                         : recording ? "active" : "disabled");
    cJSON_AddBoolToObject(o, "recording", recording);
    cJSON_AddBoolToObject(o, "busy", busy);
    cJSON_AddBoolToObject(o, "persistent",
                          cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bm, "persistent")));
    return o;
}

/* Resolve d->node now: the node's name, size and bitmaps.  -ENOENT when
 * QEMU has no such node or device. */
int vm_resolve(struct bv_vm *vm, const char *given, struct bv_vm_drive_info *info,
                   bv_error **errp)
{
    cJSON *nodes = NULL, *block = NULL;
    int r = vm_qmp(vm, "query-named-block-nodes", "{\"flat\":true}", &nodes, NULL, 0, errp);
    const cJSON *n = r == 0 ? find_named(nodes, given) : NULL;
    if (r == 0 && !n && (r = vm_qmp(vm, "query-block", NULL, &block, NULL, 0, errp)) == 0) {
        const char *nn = device_node(block, given);
        n = nn ? find_named(nodes, nn) : NULL;
    }
    if (r == 0 && !n)
        r = bv_error_setf(errp, ENOENT, "QEMU on '%s' has no block node or device '%s'",
                          vm->qmp, given);
    if (r == 0) {
        const cJSON *img = cJSON_GetObjectItemCaseSensitive(n, "image");
        const cJSON *vs = cJSON_GetObjectItemCaseSensitive(img, "virtual-size");
        const cJSON *bm;
        snprintf(info->node_name, sizeof(info->node_name), "%s",
                 cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(n, "node-name")));
        info->size = cJSON_IsNumber(vs) ? (uint64_t)vs->valuedouble : 0;
        info->bitmaps = cJSON_CreateArray();
        cJSON_ArrayForEach(bm, cJSON_GetObjectItemCaseSensitive(n, "dirty-bitmaps"))
            cJSON_AddItemToArray(info->bitmaps, bitmap_json(bm));
    }
    cJSON_Delete(nodes);
    cJSON_Delete(block);
    return r;
}

const char *vm_status(struct bv_vm *vm)
{
    cJSON *ret = NULL;
    if (vm_qmp(vm, "query-status", NULL, &ret, NULL, 0, NULL) < 0)
        return "gone";
    const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ret, "status"));
    const char *out = s && !strcmp(s, "running") ? "running" : "paused";
    cJSON_Delete(ret);
    return out;
}

int bv_vm_drive_info(struct bv_vm_drive *d, struct bv_vm_drive_info *info, bv_error **errp)
{
    memset(info, 0, sizeof(*info));
    info->vm_status = vm_status(d->vm);
    if (strcmp(info->vm_status, "gone") != 0 && vm_resolve(d->vm, d->node, info, NULL) == 0)
        return 0;
    cJSON_Delete(info->bitmaps);
    info->bitmaps = cJSON_CreateArray();
    info->size = 0;
    if (strcmp(info->vm_status, "gone") != 0)
        info->vm_status = "gone";        /* QEMU answers but the node went away */
    return info->bitmaps ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
}

void bv_vm_drive_info_clear(struct bv_vm_drive_info *info)
{
    cJSON_Delete(info->bitmaps);
    info->bitmaps = NULL;
}

/* ---------------- the list ---------------- */

struct bv_vm_drive *bv_vm_drives_get(struct bv_app *app, const char *id)
{
    struct bv_vms *v = app->vms;
    struct bv_vm_drive *d;
    if (!v)
        return NULL;
    pthread_mutex_lock(&v->lock);
    for (d = v->drives; d && (d->removed || strcmp(d->id, id) != 0); d = d->next)
        ;
    if (d)
        d->refs++;
    pthread_mutex_unlock(&v->lock);
    return d;
}

void bv_vm_drives_put(struct bv_app *app, struct bv_vm_drive *d)
{
    struct bv_vms *v = app->vms;
    bool gone = false;
    if (!d)
        return;
    pthread_mutex_lock(&v->lock);
    if (--d->refs == 0 && d->removed) {
        struct bv_vm_drive **pp = &v->drives;
        while (*pp != d)
            pp = &(*pp)->next;
        *pp = d->next;
        gone = true;
    }
    pthread_mutex_unlock(&v->lock);
    if (gone) {
        vm_put(app, d->vm);
        drive_free(d);
    }
}

size_t bv_vm_drives_all(struct bv_app *app, struct bv_vm_drive ***out)
{
    struct bv_vms *v = app->vms;
    size_t n = 0;
    *out = NULL;
    if (!v)
        return 0;
    pthread_mutex_lock(&v->lock);
    for (struct bv_vm_drive *d = v->drives; d; d = d->next)
        n += !d->removed;
    *out = calloc(n ? n : 1, sizeof(**out));
    n = 0;
    for (struct bv_vm_drive *d = v->drives; d && *out; d = d->next) {
        if (d->removed)
            continue;
        d->refs++;
        (*out)[n++] = d;
    }
    pthread_mutex_unlock(&v->lock);
    return n;
}

/* Append d unless the id is taken meanwhile (-EEXIST). */
static int insert(struct bv_app *app, struct bv_vm_drive *d, bv_error **errp)
{
    struct bv_vms *v = app->vms;
    struct bv_vm_drive **pp = &v->drives;
    int r = 0;
    pthread_mutex_lock(&v->lock);
    for (; *pp; pp = &(*pp)->next)
        if (!(*pp)->removed && strcmp((*pp)->id, d->id) == 0)
            r = -EEXIST;
    if (r == 0) {
        d->refs = 2;                 /* the list's and the caller's */
        *pp = d;
    }
    pthread_mutex_unlock(&v->lock);
    return r < 0 ? bv_error_setf(errp, EEXIST, "Drive '%s' already exists", d->id) : 0;
}

/* vm_get for a new drive: every way of not reaching QEMU is the client's
 * to fix (400), escapes and missing sockets included. */
static int connect_vm(struct bv_app *app, const char *qmp, struct bv_vm **vm, bv_error **errp)
{
    bv_error *e = NULL;
    int r = vm_get(app, qmp, false, vm, &e);
    if (r < 0 && r != -ENOMEM && r != -EACCES && r != -ENOENT)
        r = bv_error_setf(errp, EINVAL, "QEMU does not answer on '%s': %s", qmp,
                          e ? e->msg : strerror(-r));
    else if (r < 0)
        bv_error_propagate(errp, &e);
    bv_error_free(e);
    return r;
}

static int check_spec(struct bv_app *app, const struct bv_vm_drive_spec *s, bv_error **errp)
{
    char *name = NULL;
    int r;
    if (!app->qmp_root)
        return bv_error_setf(errp, EINVAL, "VM drives need the service started with "
                             "--qmp-dir DIR (QMP sockets must be beneath it)");
    if ((r = bv_drive_id_check(s->id, errp)) < 0)
        return r;
    if (!s->node[0] || strlen(s->node) > 127)
        return bv_error_setf(errp, EINVAL, "'node' must be a block node or device name "
                             "(1 to 127 characters)");
    r = bv_path_name(app->root, NULL, s->scratch_dir ? s->scratch_dir : "scratch", 0, &name,
                     errp);
    if (r == 0 && (strchr(name, '/') || !strcmp(name, ".")))
        r = bv_error_setf(errp, EINVAL, "'scratch_dir' must be one directory name below the "
                          "data directory, got '%s'", s->scratch_dir);
    free(name);
    return r;
}

static int taken(struct bv_app *app, const char *id, bv_error **errp)
{
    struct bv_drive_entry *e = bv_registry_get(app, id);
    struct bv_vm_drive *d = bv_vm_drives_get(app, id);
    bv_registry_put(app, e);
    bv_vm_drives_put(app, d);
    return e || d ? bv_error_setf(errp, EEXIST, "Drive '%s' already exists", id) : 0;
}

static int record(struct bv_app *app, struct bv_vm_drive *d, bv_error **errp)
{
    char now[32];
    bv_app_now_str(app, now);
    struct bvdb_vm_drive rec = {
        .id = d->id, .qmp = d->vm->qmp, .node = d->node, .scratch_dir = d->scratch_dir,
        .created_at = now,
    };
    if (bvdb_vm_drive_insert(app->db, &rec) < 0)
        return bv_error_setf(errp, EIO, "cannot record drive '%s' in the catalog", d->id);
    return 0;
}

int bv_vm_drives_create(struct bv_app *app, const struct bv_vm_drive_spec *s,
                        struct bv_vm_drive **out, bv_error **errp)
{
    struct bv_vm_drive *d = NULL;
    struct bv_vm *vm = NULL;
    struct bv_vm_drive_info info = { 0 };
    int r = check_spec(app, s, errp);
    if (r == 0)
        r = taken(app, s->id, errp);
    if (r == 0)
        r = connect_vm(app, s->qmp, &vm, errp);
    if (r == 0)
        r = vm_resolve(vm, s->node, &info, errp);
    bv_vm_drive_info_clear(&info);
    if (r == 0 && (!(d = calloc(1, sizeof(*d))) || !(d->id = strdup(s->id)) ||
                   !(d->node = strdup(s->node)) ||
                   !(d->scratch_dir = strdup(s->scratch_dir ? s->scratch_dir : "scratch"))))
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    if (r == 0) {
        d->app = app;
        d->vm = vm;
        r = insert(app, d, errp);
    }
    if (r < 0) {
        if (d)
            drive_free(d);
        if (vm)
            vm_put(app, vm);
        return r;
    }
    if ((r = record(app, d, errp)) < 0) {
        bv_vm_drives_put(app, d);
        bv_vm_drives_remove(app, s->id, NULL);
        return r;
    }
    *out = d;
    return 0;
}

/* ---------------- temporary objects in QEMU ---------------- */

static void tag_of(const char *id, char tag[9])
{
    uint32_t h = 2166136261u;                  /* FNV-1a */
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(tag, 9, "%08x", h);
}

void vm_tmp_prefix(const struct bv_vm_drive *d, char out[32])
{
    char tag[9];
    tag_of(d->id, tag);
    snprintf(out, 32, "blockvault-tmp-%s-", tag);
}

/* Each string member `key` of QEMU's list `cmd` that starts with prefix. */
static int each_named(struct bv_vm *vm, const char *cmd, const char *key, const char *prefix,
                      cJSON **names)
{
    cJSON *list = NULL, *it;
    int r = vm_qmp(vm, cmd, NULL, &list, NULL, 0, NULL);
    *names = cJSON_CreateArray();
    if (r < 0 || !*names) {
        cJSON_Delete(list);
        return r < 0 ? r : -ENOMEM;
    }
    cJSON_ArrayForEach(it, list) {
        const char *s = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, key));
        if (s && !strncmp(s, prefix, strlen(prefix)))
            cJSON_AddItemToArray(*names, cJSON_CreateString(s));
    }
    cJSON_Delete(list);
    return 0;
}

/* Remove what carries prefix, in the teardown order of vm-pull.md: exports,
 * jobs, nodes.  Best effort: what QEMU refuses is left and logged by the
 * caller's next attempt. */
int vm_remove_tmp(struct bv_vm *vm, const char *prefix)
{
    cJSON *names = NULL, *it;
    char args[256];
    int exports = 0;
    if (each_named(vm, "query-block-exports", "id", prefix, &names) == 0) {
        cJSON_ArrayForEach(it, names) {
            exports++;
            snprintf(args, sizeof(args), "{\"id\":\"%s\",\"mode\":\"hard\"}", it->valuestring);
            if (vm_qmp(vm, "block-export-del", args, NULL, NULL, 0, NULL) == 0) {
                cJSON *m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "id", it->valuestring);
                bv_qmp_wait_event(vm->q, "BLOCK_EXPORT_DELETED", m, EVENT_WAIT_MS, NULL, NULL);
                cJSON_Delete(m);
            }
        }
    }
    cJSON_Delete(names);
    if (each_named(vm, "query-block-jobs", "device", prefix, &names) == 0) {
        cJSON_ArrayForEach(it, names) {
            snprintf(args, sizeof(args), "{\"device\":\"%s\",\"force\":true}", it->valuestring);
            if (vm_qmp(vm, "block-job-cancel", args, NULL, NULL, 0, NULL) == 0) {
                cJSON *m = cJSON_CreateObject();
                cJSON_AddStringToObject(m, "device", it->valuestring);
                bv_qmp_wait_event(vm->q, "BLOCK_JOB_CANCELLED", m, EVENT_WAIT_MS, NULL, NULL);
                cJSON_Delete(m);
            }
        }
    }
    cJSON_Delete(names);
    if (each_named(vm, "query-named-block-nodes", "node-name", prefix, &names) == 0) {
        cJSON_ArrayForEach(it, names) {
            snprintf(args, sizeof(args), "{\"node-name\":\"%s\"}", it->valuestring);
            vm_qmp(vm, "blockdev-del", args, NULL, NULL, 0, NULL);
        }
    }
    cJSON_Delete(names);
    return exports;
}

int bv_vm_drives_remove(struct bv_app *app, const char *id, bv_error **errp)
{
    struct bv_vm_drive *d = bv_vm_drives_get(app, id);
    char prefix[32];
    if (!d)
        return bv_error_setf(errp, ENODEV, "Cannot find device='%s' nor node-name='%s'", id, id);
    vm_tmp_prefix(d, prefix);
    pthread_mutex_lock(&d->vm->op_lock);
    if (vm_remove_tmp(d->vm, prefix) > 0)        /* our export: the NBD server was ours */
        vm_qmp(d->vm, "nbd-server-stop", NULL, NULL, NULL, 0, NULL);
    pthread_mutex_unlock(&d->vm->op_lock);
    if (app->db)
        bvdb_vm_drive_delete(app->db, id);       /* -ENOENT for one never recorded */
    pthread_mutex_lock(&app->vms->lock);
    bool was = d->removed;
    d->removed = true;
    if (!was)
        d->refs--;                   /* the list's reference */
    pthread_mutex_unlock(&app->vms->lock);
    bv_vm_drives_put(app, d);
    return was ? bv_error_setf(errp, ENODEV, "Cannot find device='%s'", id) : 0;
}

/* ---------------- short-lived read-only export ---------------- */

/* <data>/<scratch_dir>, made if missing, as an absolute name QEMU can use. */
int vm_scratch_path(struct bv_vm_drive *d, char *out, size_t cap, bv_error **errp)
{
    struct bv_root *data = NULL;
    int r = bv_root_open(d->app->cfg.data_dir, &data, errp);
    if (r < 0)
        return r;
    if (mkdirat(data->fd, d->scratch_dir, 0700) < 0 && errno != EEXIST)
        r = bv_error_setf(errp, errno, "cannot make scratch directory '%s': %s",
                          d->scratch_dir, strerror(errno));
    int fd = -1;
    if (r == 0)
        r = bv_path_open(data, NULL, d->scratch_dir, 0, O_PATH | O_DIRECTORY, 0, &fd, NULL, errp);
    if (fd >= 0)
        close(fd);
    if (r == 0 && (size_t)snprintf(out, cap, "%s/%s", data->real, d->scratch_dir) >= cap)
        r = bv_error_setf(errp, ENAMETOOLONG, "scratch directory name too long");
    bv_root_close(data);
    return r;
}

struct vm_export {
    char id[40];                 /* prefix (24) + up to 7 digits: QEMU's 31-character cap */
    char sock[108];
    bool server, exported;
};

static int export_start(struct bv_vm_drive *d, const char *node_name, struct vm_export *x,
                        bv_error **errp)
{
    char dir[4096], prefix[32], args[512], cls[64];
    int r = vm_scratch_path(d, dir, sizeof(dir), errp);
    if (r < 0)
        return r;
    vm_tmp_prefix(d, prefix);
    snprintf(x->id, sizeof(x->id), "%s%u", prefix, ++d->vm->seq % 10000000u);
    if ((size_t)snprintf(x->sock, sizeof(x->sock), "%s/%s.sock", dir, x->id) >= sizeof(x->sock))
        return bv_error_setf(errp, ENAMETOOLONG, "the NBD socket name under '%s' is longer "
                             "than a Unix socket allows (use a shorter --data)", dir);
    unlink(x->sock);
    cJSON *a = cJSON_CreateObject(), *addr = cJSON_AddObjectToObject(a, "addr");
    cJSON_AddStringToObject(addr, "type", "unix");
    cJSON_AddStringToObject(cJSON_AddObjectToObject(addr, "data"), "path", x->sock);
    r = bv_qmp_execute(d->vm->q, "nbd-server-start", a, 0, NULL, cls, sizeof(cls), errp);
    cJSON_Delete(a);
    if (r < 0) {
        if (r == -EIO && errp && *errp && strstr((*errp)->msg, "already running")) {
            bv_error_free(*errp);
            *errp = NULL;
            r = bv_error_setf(errp, EBUSY, "QEMU on '%s' already runs an NBD server that "
                              "Blockvault did not start", d->vm->qmp);
        }
        return r;
    }
    x->server = true;
    snprintf(args, sizeof(args), "{\"type\":\"nbd\",\"id\":\"%s\",\"node-name\":\"%s\","
             "\"name\":\"%s\",\"writable\":false}", x->id, node_name, x->id);
    if ((r = vm_qmp(d->vm, "block-export-add", args, NULL, NULL, 0, errp)) == 0)
        x->exported = true;
    return r;
}

/* Teardown in vm-pull.md's order; best effort (the first error is kept). */
static void export_stop(struct bv_vm_drive *d, struct vm_export *x)
{
    char args[128];
    if (x->exported) {
        snprintf(args, sizeof(args), "{\"id\":\"%s\",\"mode\":\"hard\"}", x->id);
        if (vm_qmp(d->vm, "block-export-del", args, NULL, NULL, 0, NULL) == 0) {
            cJSON *m = cJSON_CreateObject();
            cJSON_AddStringToObject(m, "id", x->id);
            bv_qmp_wait_event(d->vm->q, "BLOCK_EXPORT_DELETED", m, EVENT_WAIT_MS, NULL, NULL);
            cJSON_Delete(m);
        }
    }
    if (x->server)
        vm_qmp(d->vm, "nbd-server-stop", NULL, NULL, NULL, 0, NULL);
    unlink(x->sock);
}

static int nbd_fail(struct nbd_handle *h, const char *what, bv_error **errp)
{
    int e = nbd_get_errno();
    (void)h;
    return bv_error_setf(errp, e ? e : EIO, "NBD %s: %s", what, nbd_get_error());
}

static int read_export(const struct vm_export *x, void *buf, uint64_t len, uint64_t off,
                       bv_error **errp)
{
    struct nbd_handle *h = nbd_create();
    int r = 0;
    if (!h)
        return nbd_fail(NULL, "create", errp);
    if (nbd_set_export_name(h, x->id) < 0 || nbd_connect_unix(h, x->sock) < 0)
        r = nbd_fail(h, "connect", errp);
    for (uint64_t done = 0; r == 0 && done < len;) {
        size_t n = (size_t)(len - done < READ_CHUNK ? len - done : READ_CHUNK);
        if (nbd_pread(h, (char *)buf + done, n, off + done, 0) < 0)
            r = nbd_fail(h, "read", errp);
        done += n;
    }
    if (r == 0)
        nbd_shutdown(h, 0);
    nbd_close(h);
    return r;
}

int bv_vm_drive_read(struct bv_vm_drive *d, void *buf, uint64_t len, uint64_t off,
                     bv_error **errp)
{
    struct bv_vm_drive_info info = { 0 };
    struct vm_export x = { 0 };
    pthread_mutex_lock(&d->vm->op_lock);
    int r = 0;
    if (!strcmp(vm_status(d->vm), "gone"))
        r = bv_error_setf(errp, EIO, "the VM of drive '%s' is gone (QEMU does not answer on "
                          "'%s')", d->id, d->vm->qmp);
    if (r == 0)
        r = vm_resolve(d->vm, d->node, &info, errp);
    if (r == 0 && (off > info.size || len > info.size - off))
        r = bv_error_setf(errp, EINVAL, "offset %llu + length %llu is beyond the end of the "
                          "drive (%llu bytes)", (unsigned long long)off,
                          (unsigned long long)len, (unsigned long long)info.size);
    if (r == 0)
        r = export_start(d, info.node_name, &x, errp);
    if (r == 0)
        r = read_export(&x, buf, len, off, errp);
    export_stop(d, &x);
    pthread_mutex_unlock(&d->vm->op_lock);
    bv_vm_drive_info_clear(&info);
    return r;
}

/* ---------------- start-up ---------------- */

/* A crash mid-pull leaves two chain bitmaps of one chain in QEMU: the
 * disabled one the pull read (OLD) and the active one it made (NEW).  As for
 * a failed pull, OLD is merged into NEW and removed (one transaction), so
 * the next incremental counts from the last good backup. */
static void merge_leftover_bitmaps(struct bv_vm_drive *d)
{
    struct bv_vm_drive_info info;
    const cJSON *bm, *other;
    if (bv_vm_drive_info(d, &info, NULL) < 0)
        return;
    cJSON_ArrayForEach(bm, info.bitmaps) {
        const char *nm = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(bm, "name"));
        const char *dash = nm ? strrchr(nm, '-') : NULL;
        if (!nm || strncmp(nm, "blockvault-chain-", 17) != 0 || !dash ||
            !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(bm, "recording")))
            continue;
        size_t plen = (size_t)(dash - nm) + 1;   /* "blockvault-chain-<cid>-" */
        cJSON_ArrayForEach(other, info.bitmaps) {
            const char *on = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(other, "name"));
            if (!on || on == nm || strncmp(on, nm, plen) != 0 || strchr(on + plen, '-') ||
                cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(other, "recording")))
                continue;
            char args[1024];
            snprintf(args, sizeof(args), "{\"actions\":["
                     "{\"type\":\"block-dirty-bitmap-merge\",\"data\":{\"node\":\"%s\","
                     "\"target\":\"%s\",\"bitmaps\":[\"%s\"]}},"
                     "{\"type\":\"block-dirty-bitmap-remove\",\"data\":{\"node\":\"%s\","
                     "\"name\":\"%s\"}}]}", info.node_name, nm, on, info.node_name, on);
            if (vm_qmp(d->vm, "transaction", args, NULL, NULL, 0, NULL) == 0)
                log_info("drive '%s': bitmap '%s' left by an interrupted backup merged into "
                         "'%s'", d->id, on, nm);
        }
    }
    bv_vm_drive_info_clear(&info);
}

/* Scratch images and sockets of this drive's interrupted pulls (QEMU has let
 * go of them: vm_remove_tmp ran first). */
static bool remove_scratch(struct bv_vm_drive *d, const char *prefix)
{
    char dir[4096];
    bool sock = false;
    if (vm_scratch_path(d, dir, sizeof(dir), NULL) < 0)
        return false;
    DIR *dh = opendir(dir);
    struct dirent *de;
    while (dh && (de = readdir(dh))) {
        size_t n = strlen(de->d_name);
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        sock |= n > 5 && strcmp(de->d_name + n - 5, ".sock") == 0;
        if (unlinkat(dirfd(dh), de->d_name, 0) == 0)
            log_info("drive '%s': removed %s/%s left by an interrupted backup", d->id,
                     d->scratch_dir, de->d_name);
    }
    if (dh)
        closedir(dh);
    return sock;                                 /* the NBD server on it was ours */
}

static int restore_row(const struct bvdb_vm_drive *r, void *opaque)
{
    struct bv_app *app = opaque;
    struct bv_vm_drive *d = calloc(1, sizeof(*d));
    struct bv_vm *vm = NULL;
    if (!d || !(d->id = strdup(r->id)) || !(d->node = strdup(r->node)) ||
        !(d->scratch_dir = strdup(r->scratch_dir)) ||
        vm_get(app, r->qmp, true, &vm, NULL) < 0 || insert(app, d, NULL) < 0) {
        log_error("cannot restore VM drive '%s'", r->id);
        if (d)
            drive_free(d);
        if (vm)
            vm_put(app, vm);
        return 0;
    }
    d->app = app;
    d->vm = vm;
    bv_vm_drives_put(app, d);                    /* the list keeps its own reference */
    return 0;
}

static int count_row(const struct bvdb_vm_drive *r, void *opaque)
{
    (void)r;
    (*(int *)opaque)++;
    return 0;
}

void bv_vm_drives_restore(struct bv_app *app)
{
    struct bv_vm_drive **all = NULL;
    int rows = 0;
    if (!app->qmp_root) {
        bvdb_vm_drive_list(app->db, count_row, &rows);
        if (rows > 0)
            log_warn("VM drives are recorded but the service runs without --qmp-dir: they are "
                     "not served");
        return;
    }
    bvdb_vm_drive_list(app->db, restore_row, app);
    size_t n = bv_vm_drives_all(app, &all);
    for (size_t i = 0; i < n; i++) {
        struct bv_vm_drive *d = all[i];
        char prefix[32];
        if (strcmp(vm_status(d->vm), "gone") != 0) {
            vm_tmp_prefix(d, prefix);
            pthread_mutex_lock(&d->vm->op_lock);
            bool server = vm_remove_tmp(d->vm, prefix) > 0;
            server |= remove_scratch(d, prefix);
            if (server)
                vm_qmp(d->vm, "nbd-server-stop", NULL, NULL, NULL, 0, NULL);
            merge_leftover_bitmaps(d);
            pthread_mutex_unlock(&d->vm->op_lock);
        } else {
            log_warn("VM drive '%s': QEMU does not answer on '%s' (yet)", d->id, d->vm->qmp);
        }
        bv_vm_drives_put(app, d);
    }
    free(all);
}

/* A label value as Prometheus wants it (\\, \" and \n escaped). */
static void put_label(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"')
            fputc('\\', f);
        if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

void bv_vm_drives_metrics(struct bv_app *app, FILE *f)
{
    struct bv_vm_drive **all = NULL;
    size_t n = bv_vm_drives_all(app, &all);
    static const char *const statuses[] = { "running", "paused", "gone" };
    fprintf(f, "# HELP blockvault_vm_drive_status Each VM drive's VM as QEMU answers now "
               "(1 for its status, 0 for the others).\n# TYPE blockvault_vm_drive_status gauge\n");
    for (size_t i = 0; i < n; i++) {
        const char *st = vm_status(all[i]->vm);
        for (size_t k = 0; k < 3; k++) {
            fputs("blockvault_vm_drive_status{drive=\"", f);
            put_label(f, all[i]->id);
            fprintf(f, "\",status=\"%s\"} %d\n", statuses[k], strcmp(st, statuses[k]) == 0);
        }
    }
    fprintf(f, "# HELP blockvault_vm_pulls_total Pulls (backups read from QEMU) since start, by "
               "outcome.\n# TYPE blockvault_vm_pulls_total counter\n");
    for (size_t i = 0; i < n; i++) {
        for (int ok = 1; ok >= 0; ok--) {
            fputs("blockvault_vm_pulls_total{drive=\"", f);
            put_label(f, all[i]->id);
            fprintf(f, "\",outcome=\"%s\"} %llu\n", ok ? "ok" : "failed",
                    (unsigned long long)(ok ? atomic_load(&all[i]->pulls_ok)
                                            : atomic_load(&all[i]->pulls_failed)));
        }
    }
    fprintf(f, "# HELP blockvault_vm_pulled_bytes_total Bytes read from QEMU and written into "
               "links by pulls since start.\n# TYPE blockvault_vm_pulled_bytes_total counter\n");
    for (size_t i = 0; i < n; i++) {
        fputs("blockvault_vm_pulled_bytes_total{drive=\"", f);
        put_label(f, all[i]->id);
        fprintf(f, "\"} %llu\n", (unsigned long long)atomic_load(&all[i]->pulled_bytes));
    }
    for (size_t i = 0; i < n; i++)
        bv_vm_drives_put(app, all[i]);
    free(all);
}
