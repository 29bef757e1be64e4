/* The open drives: see registry.h. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "log.h"
#include "runtime/registry.h"

const char *const bv_drive_format_names[] = { BV_FORMAT_NAMES, "blkverify", NULL };
_Static_assert(BV_DRIVE_RAW == BV_FMT_RAW - 1 && BV_DRIVE_QCOW2 == BV_FMT_QCOW2 - 1,
               "drive formats start with the image formats, in bv_format_names order");

struct bv_registry {
    pthread_mutex_t lock;
    struct bv_drive_entry *head;   /* oldest first */
};

struct bv_registry *bv_registry_new(void)
{
    struct bv_registry *reg = calloc(1, sizeof(*reg));
    if (reg)
        pthread_mutex_init(&reg->lock, NULL);
    return reg;
}

void bv_drive_entry_free(struct bv_drive_entry *e)
{
    if (!e)
        return;
    bv_error *err = NULL;
    if (e->drive && bv_drive_free(e->drive, &err) < 0) {
        log_error("drive '%s': flush at close failed: %s", e->id, err ? err->msg : "?");
        bv_error_free(err);
    }
    free(e->id);
    free(e->file);
    free(e->filters);
    free(e);
}

void bv_registry_free(struct bv_registry *reg)
{
    if (!reg)
        return;
    struct bv_drive_entry *e = reg->head;
    while (e) {
        struct bv_drive_entry *next = e->next;
        bv_drive_entry_free(e);
        e = next;
    }
    pthread_mutex_destroy(&reg->lock);
    free(reg);
}

int bv_registry_insert(struct bv_app *app, struct bv_drive_entry *e)
{
    struct bv_registry *reg = app->registry;
    pthread_mutex_lock(&reg->lock);
    struct bv_drive_entry **pp = &reg->head;
    for (; *pp; pp = &(*pp)->next) {
        if (strcmp((*pp)->id, e->id) == 0) {
            pthread_mutex_unlock(&reg->lock);
            return -EEXIST;
        }
    }
    e->refs = 2;            /* the registry's and the caller's */
    e->next = NULL;
    *pp = e;
    pthread_mutex_unlock(&reg->lock);
    return 0;
}

struct bv_drive_entry *bv_registry_get(struct bv_app *app, const char *id)
{
    struct bv_registry *reg = app->registry;
    pthread_mutex_lock(&reg->lock);
    struct bv_drive_entry *e = reg->head;
    while (e && strcmp(e->id, id) != 0)
        e = e->next;
    if (e)
        e->refs++;
    pthread_mutex_unlock(&reg->lock);
    return e;
}

void bv_registry_put(struct bv_app *app, struct bv_drive_entry *e)
{
    if (!e)
        return;
    struct bv_registry *reg = app->registry;
    pthread_mutex_lock(&reg->lock);
    bool last = --e->refs == 0;
    pthread_mutex_unlock(&reg->lock);
    if (last)
        bv_drive_entry_free(e);
}

void bv_registry_unlink(struct bv_app *app, struct bv_drive_entry *e)
{
    struct bv_registry *reg = app->registry;
    bool drop = false;
    pthread_mutex_lock(&reg->lock);
    for (struct bv_drive_entry **pp = &reg->head; *pp; pp = &(*pp)->next) {
        if (*pp == e) {
            *pp = e->next;
            e->removed = true;
            drop = true;
            break;
        }
    }
    pthread_mutex_unlock(&reg->lock);
    if (drop)
        bv_registry_put(app, e);     /* the registry's own reference */
}

size_t bv_registry_all(struct bv_app *app, struct bv_drive_entry ***out)
{
    struct bv_registry *reg = app->registry;
    pthread_mutex_lock(&reg->lock);
    size_t n = 0;
    for (struct bv_drive_entry *e = reg->head; e; e = e->next)
        n++;
    struct bv_drive_entry **arr = calloc(n ? n : 1, sizeof(*arr));
    size_t i = 0;
    for (struct bv_drive_entry *e = reg->head; arr && e; e = e->next) {
        e->refs++;
        arr[i++] = e;
    }
    pthread_mutex_unlock(&reg->lock);
    *out = arr;
    return i;
}

bool bv_registry_file_in_use(struct bv_app *app, const struct bv_file_id *id, char *who,
                             size_t len)
{
    struct bv_registry *reg = app->registry;
    bool used = false;
    pthread_mutex_lock(&reg->lock);
    for (struct bv_drive_entry *e = reg->head; e && !used; e = e->next) {
        for (unsigned i = 0; i < e->nfiles && !used; i++) {
            if (e->files[i].dev == id->dev && e->files[i].ino == id->ino) {
                snprintf(who, len, "drive '%s'", e->id);
                used = true;
            }
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return used;
}

struct bv_drive_entry *bv_registry_get_by_image(struct bv_app *app, const struct bv_file_id *id)
{
    struct bv_registry *reg = app->registry;
    struct bv_drive_entry *found = NULL;
    pthread_mutex_lock(&reg->lock);
    for (struct bv_drive_entry *e = reg->head; e && !found; e = e->next) {
        if (e->removed || e->format == BV_DRIVE_BLKVERIFY || e->nfiles == 0)
            continue;
        if (e->files[0].dev == id->dev && e->files[0].ino == id->ino) {
            e->refs++;
            found = e;
        }
    }
    pthread_mutex_unlock(&reg->lock);
    return found;
}
