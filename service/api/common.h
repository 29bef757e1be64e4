/* Helpers shared by the API handlers: error mapping and common JSON shapes. */
#ifndef BV_API_COMMON_H
#define BV_API_COMMON_H

#include "bv/error.h"
#include "bv/image.h"
#include "http/reply.h"
#include "json/json.h"

/* The contract's HTTP status and error class (NULL: the status's default)
 * for a failed operation's -errno (or e->err).  The one place an errno
 * becomes a status: runtime/ and core/ pick the errno that says what
 * happened (ENODEV: no such drive or bitmap → 404 DeviceNotFound). */
int api_status(int r, const bv_error *e, const char **cls);

/* Reply with a core or runtime error: status = override if > 0, else
 * api_status().  Frees e. */
void api_fail(struct bv_reply *rep, int status, int r, bv_error *e);

/* Parse the JSON body and read it against fields; on failure the 400 is
 * sent and NULL returned.  The caller deletes the returned tree. */
cJSON *api_read_body(struct bv_request *req, struct bv_reply *rep,
                     const struct bvj_field *fields, size_t n);

/* Identity of the file a client names (relative to the storage directory),
 * resolved beneath it (bv_path_stat): for "is this file in use" checks. */
struct bv_app;
struct bv_file_id;
int api_file_id(struct bv_app *app, const char *path, struct bv_file_id *id, bv_error **errp);

/* ---- drives and bitmaps (api/drives.c, api/bitmaps.c) ---- */
struct bv_drive_entry;
struct bv_app;
struct bv_dirty_bitmap;
typedef struct bv_drive bv_drive;

/* The drive named in the URL (params[0]) with a reference, or NULL after
 * a 404.  Drop it with bv_registry_put. */
struct bv_drive_entry *api_drive_get(struct bv_request *req, struct bv_reply *rep);
cJSON *api_drive_json(struct bv_drive_entry *e);
/* Every named bitmap of a drive, newest first. */
cJSON *api_bitmaps_array(bv_drive *d);

/* "qcow2" / "raw" table for BVJ_ENUM fields (core's, bv/image.h). */
#define api_format_names bv_format_names
static inline enum bv_format api_format(int idx) { return bv_format_from_index(idx); }

/* ---- jobs (api/jobs.c) ---- */
struct bv_backup_spec;
struct bv_job_view;
/* Read a backup job's body (with_type: POST /jobs, else a transaction's
 * drive-backup data) into *s (strings borrowed from obj).  -1 with err. */
int api_backup_spec_read(const cJSON *obj, bool with_type, struct bv_backup_spec *s, char *err,
                         size_t errlen);
cJSON *api_job_json(const struct bv_job_view *v);
struct bv_job_info;
/* 201 with the job an operation just started (the job object, as GET /jobs/{id}); a job that
 * already ended and was dismissed (a fast one) is answered with its id and type. */
void api_reply_started_job(struct bv_request *req, struct bv_reply *rep,
                           const struct bv_job_info *info, const char *type);
/* ---- backups (api/backups.c) ---- */
struct bv_backup_rec;
cJSON *api_backup_json(const struct bv_backup_rec *b);

#endif
