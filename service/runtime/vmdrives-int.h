/*
 * What runtime/vmdrives.c shares with runtime/vmpull.c: asking QEMU about a
 * VM drive and naming the temporary objects made in it.  The callers hold
 * vm->op_lock around anything that makes objects in QEMU.
 */
#ifndef BV_RUNTIME_VMDRIVES_INT_H
#define BV_RUNTIME_VMDRIVES_INT_H

#include "runtime/vmdrives.h"

/* A QMP command with arguments as JSON text (NULL: none). */
int vm_qmp(struct bv_vm *vm, const char *cmd, const char *args_json, cJSON **ret, char *cls,
           size_t cap, bv_error **errp);
/* The node a name stands for, its size and bitmaps (-ENOENT if none). */
int vm_resolve(struct bv_vm *vm, const char *given, struct bv_vm_drive_info *info,
               bv_error **errp);
/* "running", "paused" or "gone". */
const char *vm_status(struct bv_vm *vm);
/* <data>/<scratch_dir> (made if missing) as an absolute name. */
int vm_scratch_path(struct bv_vm_drive *d, char *out, size_t cap, bv_error **errp);
/* "blockvault-tmp-<tag>-": every temporary object of this drive starts so. */
void vm_tmp_prefix(const struct bv_vm_drive *d, char out[32]);
/* Remove every export, job and node whose name starts with prefix;
 * returns how many exports there were (then the NBD server was ours). */
int vm_remove_tmp(struct bv_vm *vm, const char *prefix);

#endif
