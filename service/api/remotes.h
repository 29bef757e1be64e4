/* /api/v1/remotes and POST /backups/{bid}/replicate (api/remotes.c). */
#ifndef BV_API_REMOTES_H
#define BV_API_REMOTES_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "http/reply.h"

struct bv_app;
struct bv_backup_rec;

void api_remotes_create(struct bv_request *req, struct bv_reply *rep);
void api_remotes_list(struct bv_request *req, struct bv_reply *rep);
void api_remotes_get(struct bv_request *req, struct bv_reply *rep);
void api_remotes_delete(struct bv_request *req, struct bv_reply *rep);
void api_backups_replicate(struct bv_request *req, struct bv_reply *rep);
void api_remotes_import(struct bv_request *req, struct bv_reply *rep);

/* Drives an import made ("format":"remote-only"): GET /drives appends them to arr; GET
 * /drives/{id} answers for one (true: it was one). */
void api_remote_drives_list(struct bv_request *req, cJSON *arr);
bool api_remote_drives_get(struct bv_request *req, struct bv_reply *rep);

/* Add "remotes":[…] and "local" to a backup object. */
void api_backup_add_remotes(struct bv_app *app, cJSON *o, const struct bv_backup_rec *b);

#endif
