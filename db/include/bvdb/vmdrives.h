/*
 * VM drive rows (db/schema/0008_vm_drives.sql).  Plain records: strings are
 * copied by SQLite; those a list callback sees live only during the
 * callback.  Locking: see catalog.h.
 */
#ifndef BVDB_VMDRIVES_H
#define BVDB_VMDRIVES_H

#include "bvdb/catalog.h"

struct bvdb_vm_drive {
    const char *id, *qmp, *node, *scratch_dir, *created_at;
};

int bvdb_vm_drive_insert(bvdb *db, const struct bvdb_vm_drive *d);
/* -ENOENT if there was no such row. */
int bvdb_vm_drive_delete(bvdb *db, const char *id);
/* Oldest first.  cb returns non-zero to stop.  Returns the count or -errno. */
int bvdb_vm_drive_list(bvdb *db, int (*cb)(const struct bvdb_vm_drive *d, void *opaque),
                       void *opaque);

#endif
