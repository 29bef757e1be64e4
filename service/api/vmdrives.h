/*
 * The VM-drive side of /api/v1/drives (runtime/vmdrives.h): api/drives.c
 * hands a request here when it names a VM drive (or creates one), so the
 * local-drive handlers stay as they are.  Each api_vm_* that returns bool
 * answered the request when it returns true.
 */
#ifndef BV_API_VMDRIVES_H
#define BV_API_VMDRIVES_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "http/reply.h"

struct bv_vm_drive;

/* POST /drives: true (and answered) when the body says "format":"qemu". */
bool api_vm_drives_create(struct bv_request *req, struct bv_reply *rep);
/* The drive object of a VM drive (asks QEMU). */
cJSON *api_vm_drive_json(struct bv_vm_drive *d);
/* GET /drives: every VM drive's object appended to arr. */
void api_vm_drives_list(struct bv_request *req, cJSON *arr);
/* GET /drives/{id} and GET …/data?offset&length (already checked).  DELETE is
 * bv_drives_delete's for every kind of drive (runtime/drives.h: what happens to backups). */
bool api_vm_drives_get(struct bv_request *req, struct bv_reply *rep);
bool api_vm_drives_data_get(struct bv_request *req, struct bv_reply *rep, uint64_t off,
                            uint64_t len);

#endif
