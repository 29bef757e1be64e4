/*
 * Secrets kept out of the catalog (S3 secret keys, webhook HMAC secrets):
 * <data>/<kind>/<name>.secret, mode 0600 in a 0700 directory, readable only
 * by the service.  A write goes to <name>.secret.tmp, is fsynced, renamed over
 * the old file and the directory fsynced, so a crash leaves the old secret or
 * the new one, never half of one.
 *
 * kind is a fixed directory name ("remotes", "notifications"); name has passed
 * bv_secret_name_check ([A-Za-z0-9._-], not starting with '.'), so the path
 * stays inside <data>/<kind>/.  No lock: each secret belongs to one
 * catalog row, whose owner serialises create and delete.
 */
#ifndef BV_RUNTIME_SECRETS_H
#define BV_RUNTIME_SECRETS_H

#include <stddef.h>

#include "app.h"
#include "bv/error.h"

/* The names of objects that own a secret file (remotes, notifications): 1 to max
 * characters of [A-Za-z0-9._-], not starting with '.'; a 400-style error naming "name". */
int bv_secret_name_check(const char *name, size_t max, bv_error **errp);

int bv_secret_write(struct bv_app *app, const char *kind, const char *name, const char *secret,
                    bv_error **errp);

/* Reads the secret into out (NUL-terminated, at most cap - 1 bytes): 0, -errno when the file
 * cannot be opened, -EIO when it is empty. */
int bv_secret_read(struct bv_app *app, const char *kind, const char *name, char *out,
                   size_t cap);

/* Removes the secret's file (nothing if there is none). */
void bv_secret_remove(struct bv_app *app, const char *kind, const char *name);

#endif
