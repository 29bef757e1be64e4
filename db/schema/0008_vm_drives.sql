-- VM drives (issue 15): disks a running QEMU owns, reached over its QMP
-- monitor.  Blockvault never opens their image, so they have no file, size
-- or bitmap rows here: QEMU is asked.  Chains and backups of a VM drive use
-- the same tables as any drive (drive_id is the VM drive's id).
CREATE TABLE vm_drives (
    id           TEXT PRIMARY KEY,
    qmp          TEXT NOT NULL,          -- socket name, relative to --qmp-dir
    node         TEXT NOT NULL,          -- block node or device name in that QEMU
    scratch_dir  TEXT NOT NULL,          -- relative to <data>
    created_at   TEXT NOT NULL
);
