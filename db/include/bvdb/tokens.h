/*
 * Scoped API tokens: plain records (see catalog.h).  Only a hash of each
 * secret is stored; db/ neither makes nor checks secrets.
 */
#ifndef BVDB_TOKENS_H
#define BVDB_TOKENS_H

#include <stdint.h>

#include "bvdb/catalog.h"

struct bvdb_token {
    const char *name;
    const char *role;              /* "admin" | "operator" | "reader" */
    const char *hash;              /* hex SHA-256 of the secret */
    const char *created_at;
    const char *expires_at;        /* RFC 3339 as given, NULL: never */
    int64_t expires_ms;            /* unix ms, 0: never */
};

/* -EEXIST when the name (or, improbably, the hash) is taken. */
int bvdb_token_insert(bvdb *db, const struct bvdb_token *t);
/* -ENOENT when there is no such token. */
int bvdb_token_delete(bvdb *db, const char *name);
/* Every token by name; cb returns non-zero to stop.  Returns the count or -errno. */
int bvdb_token_list(bvdb *db, int (*cb)(const struct bvdb_token *t, void *opaque),
                    void *opaque);

#endif
