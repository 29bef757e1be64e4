/*
 * Path confinement: turn a path into a canonical absolute host path that is
 * guaranteed to lie inside a root directory, or refuse it.
 *
 * Client paths (from the REST API or a job request) are always relative to
 * the root: absolute paths and ".." components are refused outright, and the
 * canonical result (symlinks resolved with realpath) must still be inside the
 * root, so a symlink pointing out is refused too.  Names recorded inside an
 * image (backing files) are "trusted" in form only: they may be absolute or
 * use "..", but the resolved file must be inside the root as well.
 *
 * Without a root nothing is confined (the bvimg command line): the path is
 * only made canonical.
 *
 * Limits: the check is done on the resolved name and the file is then opened
 * with O_NOFOLLOW, so only a directory swapped between the two steps by
 * someone with write access inside the root could escape.
 */
#ifndef BV_PATH_H
#define BV_PATH_H

#include <stdbool.h>
#include <sys/types.h>

#include "bv/error.h"

enum {
    BV_PATH_ALLOW_ABSOLUTE = 1 << 0,   /* recorded name: absolute allowed (still inside root) */
    BV_PATH_ALLOW_DOTDOT   = 1 << 1,   /* recorded name: ".." allowed (still inside root) */
    BV_PATH_MAY_NOT_EXIST  = 1 << 2,   /* to be created: the parent directory must exist */
};

/* Resolve `path` (relative to base_dir if given, else to root if set, else
 * to the cwd).  On success *out is a malloc'd canonical absolute path (the
 * caller frees).  Errors: -EACCES (outside root, absolute, ".."), -ENOENT,
 * -EINVAL (empty), -ENAMETOOLONG. */
int bv_path_resolve(const char *root, const char *base_dir, const char *path, unsigned flags,
                    char **out, bv_error **errp);

/* bv_path_resolve (flags as there) then open(2) with O_CLOEXEC|O_NOFOLLOW
 * added.  *fd is the new descriptor; *resolved (if non-NULL) gets the path. */
int bv_path_open(const char *root, const char *base_dir, const char *path, unsigned flags,
                 int oflags, mode_t mode, int *fd, char **resolved, bv_error **errp);

/* Directory part of a canonical path (malloc'd), "/" for a file in "/". */
char *bv_path_dirname(const char *path);

/* `real` (canonical) is root_real itself or below it. */
bool bv_path_is_inside(const char *root_real, const char *real);

#endif
