/*
 * VM drives: disks that a running QEMU owns, reached over its QMP monitor
 * (../shared/spec/api.md "VM drives", ../shared/reference/vm-pull.md).
 *
 * Blockvault never opens a VM drive's image: its size and bitmaps are
 * asked from QEMU, its data is read through a short-lived read-only NBD
 * export QEMU serves on a Unix socket, and every mutation is refused (the
 * VM owns the disk).  So a VM drive is not a bv_drive and does not live in
 * the open-drive registry (runtime/registry.h): it has its own list here,
 * and the drive ids of both share one namespace (creation checks both).
 * bv_drives_get() answers 409 "not supported for VM drives" for a VM drive's
 * id, which is how every local-only operation (writes, /io, resize, bitmap
 * verbs, raw jobs) refuses one without knowing about VMs.
 *
 * One QMP connection per VM (per socket name), shared by every VM drive of
 * that VM and held while the drive exists; struct bv_vm's op_lock makes
 * the export-using operations of one VM run one at a time (QEMU has one NBD
 * server).  Objects Blockvault makes in QEMU are named "blockvault-tmp-…".
 *
 * Locking: vms->lock guards the lists, refs and removed flags (a leaf: no
 * QMP call is made while it is held).  vm->op_lock is taken before any QMP
 * call of an export-using operation; the QMP connection has its own lock
 * (qmp/qmp.h), taken after op_lock.
 *
 * VM drives are recorded in the catalog (bvdb/vmdrives.h) and come back at
 * start-up (bv_vm_drives_restore).
 */
#ifndef BV_RUNTIME_VMDRIVES_H
#define BV_RUNTIME_VMDRIVES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "bv/error.h"

struct bv_app;
struct bv_qmp;
struct bv_vms;

struct bv_vm {
    char *qmp;                   /* socket name, relative to --qmp-dir */
    struct bv_qmp *q;            /* the one connection (own lock) */
    pthread_mutex_t op_lock;     /* one export-using operation at a time */
    unsigned seq;                /* names of temporary objects (under op_lock) */
    /* vms->lock */
    unsigned refs;
    struct bv_vm *next;
};

struct bv_vm_drive {
    struct bv_app *app;
    char *id;
    char *node;                  /* as given: a node name or a device (BlockBackend) name */
    char *scratch_dir;           /* relative to <data> */
    struct bv_vm *vm;            /* shared, referenced */
    /* counted by bv_vm_pull since start (atomics: no lock) */
    _Atomic uint64_t pulls_ok, pulls_failed, pulled_bytes;
    /* vms->lock */
    unsigned refs;
    bool removed;
    struct bv_vm_drive *next;
};

struct bv_vm_drive_spec {
    const char *id, *qmp, *node;
    const char *scratch_dir;     /* NULL: "scratch" */
};

/* What QEMU says about a VM drive now. */
struct bv_vm_drive_info {
    uint64_t size;
    const char *vm_status;       /* "running", "paused" or "gone" (static) */
    cJSON *bitmaps;              /* owned: bitmap objects as the API shows them */
    char node_name[128];         /* the block node the drive resolved to */
};

int bv_vms_init(struct bv_app *app);
void bv_vms_free(struct bv_app *app);

/* Create: checks --qmp-dir is set, the id is free, the socket is beneath
 * the qmp dir and QEMU answers on it, and QEMU has the node.  All refusals
 * are -EINVAL/-EACCES/-ENOENT (400) or -EEXIST (409).  *out is a reference
 * (put it). */
int bv_vm_drives_create(struct bv_app *app, const struct bv_vm_drive_spec *s,
                        struct bv_vm_drive **out, bv_error **errp);
/* A reference, or NULL. */
struct bv_vm_drive *bv_vm_drives_get(struct bv_app *app, const char *id);
void bv_vm_drives_put(struct bv_app *app, struct bv_vm_drive *d);
/* References to every VM drive, oldest first (put each, free the array). */
size_t bv_vm_drives_all(struct bv_app *app, struct bv_vm_drive ***out);
/* Remove: deletes what Blockvault made in QEMU (blockvault-tmp-… exports
 * and nodes of this drive's node), then forgets the drive.  -ENODEV if
 * there is no such VM drive. */
int bv_vm_drives_remove(struct bv_app *app, const char *id, bv_error **errp);

/* At start-up: the recorded VM drives (connections made when first used);
 * for each whose QEMU answers, the blockvault-tmp- objects a crash left
 * are removed and a chain bitmap left disabled by an interrupted pull is
 * merged into the chain's active one. */
void bv_vm_drives_restore(struct bv_app *app);

/* Ask QEMU (the connection is re-established if it was lost; an answer of
 * nobody is vm_status "gone", size 0 and no bitmaps, and still 0). */
int bv_vm_drive_info(struct bv_vm_drive *d, struct bv_vm_drive_info *info, bv_error **errp);
void bv_vm_drive_info_clear(struct bv_vm_drive_info *info);

/* Read len bytes at off of the live disk through a short-lived read-only
 * export (nbd-server-start on a Unix socket in the scratch directory,
 * block-export-add, libnbd, then block-export-del, BLOCK_EXPORT_DELETED,
 * nbd-server-stop).  An NBD server QEMU already runs that Blockvault did not
 * start is -EBUSY. */
int bv_vm_drive_read(struct bv_vm_drive *d, void *buf, uint64_t len, uint64_t off,
                     bv_error **errp);

/* Prometheus lines for GET /metrics: each VM drive's vm_status (asked
 * from QEMU now), its pulls by outcome and the bytes they pulled since start. */
void bv_vm_drives_metrics(struct bv_app *app, FILE *f);

#endif
