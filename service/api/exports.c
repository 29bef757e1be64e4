/*
 * GET /api/v1/exports: what the NBD server exports (nbd/nbd.h) and how many
 * clients each has — drives read-write under their id, complete backup
 * points read-only under "backup/<bid>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "app.h"
#include "nbd/nbd.h"
#include "runtime/backups.h"
#include "runtime/registry.h"

static cJSON *export_json(struct bv_app *app, const char *name, const char *kind,
                          const char *id, bool ro)
{
    cJSON *o = cJSON_CreateObject();
    char uri[4400];
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddStringToObject(o, kind, id);
    cJSON_AddBoolToObject(o, "read_only", ro);
    cJSON_AddNumberToObject(o, "clients", bv_nbd_clients(app, name));
    bv_nbd_uri(app, name, uri, sizeof(uri));
    cJSON_AddStringToObject(o, "uri", uri);
    return o;
}

void api_exports_list(struct bv_request *req, struct bv_reply *rep)
{
    struct bv_app *app = req->app;
    cJSON *o = cJSON_CreateObject();
    cJSON *arr = cJSON_AddArrayToObject(o, "exports");
    struct bv_drive_entry **all = NULL;
    size_t n = bv_registry_all(app, &all);
    for (size_t i = 0; i < n; i++) {
        cJSON_AddItemToArray(arr, export_json(app, all[i]->id, "drive", all[i]->id, false));
        bv_registry_put(app, all[i]);
    }
    free(all);
    struct bv_backup_rec *b = NULL;
    int nb = bv_backups_list(app, NULL, &b);
    for (int i = 0; i < nb; i++) {
        if (strcmp(b[i].status, "complete") != 0)
            continue;
        char name[BV_BACKUP_ID_MAX + 8];
        snprintf(name, sizeof(name), "backup/%s", b[i].id);
        cJSON_AddItemToArray(arr, export_json(app, name, "backup", b[i].id, true));
    }
    free(b);
    bv_reply_json(rep, 200, o);
}
