/*
 * Private to runtime/remotes.c, remote-prune.c and remote-import.c: what they share about
 * keys, copies and manifests.  The catalog calls need app->backups_lock where the name says
 * _locked (and the callers hold it around the rest as remotes.h describes).
 */
#ifndef BV_RUNTIME_REMOTES_INT_H
#define BV_RUNTIME_REMOTES_INT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "bv/error.h"

struct bv_app;
struct bv_backup_rec;
struct bv_s3;

/* The object key of a link: <drive>/<chain>/<its file's name>. */
void bv_remote_key_of(const struct bv_backup_rec *b, char *out, size_t len);
/* Is bid's copy present on remote (NULL: on any)? */
bool bv_remote_link_present(struct bv_app *app, const char *remote, const char *bid);
/* The manifest of chain on remote from the catalog's present links (malloc'd, NULL on
 * failure); the upload of such a text as <drive>/<chain>/manifest.json (NULL text: EIO). */
char *bv_remote_manifest_text_locked(struct bv_app *app, const char *remote, const char *drive,
                                     const char *chain);
int bv_remote_upload_manifest(struct bv_s3 *s3, const char *drive, const char *chain,
                              const char *text, bv_error **errp);
/* A string member of o, or NULL. */
const char *bv_remote_jstr(const cJSON *o, const char *k);

#endif
