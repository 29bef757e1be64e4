/*
 * Path confinement (see include/bv/path.h).  The algorithm: refuse by form
 * (absolute, "..") what a client may not say, join with the base directory,
 * canonicalise with realpath(3) (for a file still to be created: the parent
 * directory, plus a plain last component), then require the result to be
 * the canonical root or below it.
 */
#include "bv/path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool bv_path_is_inside(const char *root_real, const char *real)
{
    size_t n = strlen(root_real);
    if (n == 1 && root_real[0] == '/')
        return real[0] == '/';
    return strncmp(root_real, real, n) == 0 && (real[n] == '/' || real[n] == '\0');
}

static bool has_dotdot(const char *p)
{
    const char *s = p;
    while (*s) {
        const char *e = strchrnul(s, '/');
        if (e - s == 2 && s[0] == '.' && s[1] == '.')
            return true;
        s = *e ? e + 1 : e;
    }
    return false;
}

char *bv_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

static int check_form(const char *root, const char *path, unsigned flags, bv_error **errp)
{
    if (!path || !*path)
        return bv_error_setf(errp, EINVAL, "empty path");
    if (strlen(path) >= PATH_MAX)
        return bv_error_setf(errp, ENAMETOOLONG, "path too long");
    if (!root)
        return 0;
    if (path[0] == '/' && !(flags & BV_PATH_ALLOW_ABSOLUTE))
        return bv_error_setf(errp, EACCES, "absolute path not allowed: %s", path);
    if (has_dotdot(path) && !(flags & BV_PATH_ALLOW_DOTDOT))
        return bv_error_setf(errp, EACCES, "'..' not allowed in path: %s", path);
    return 0;
}

/* realpath() of a file that may not exist yet: parent's realpath + name. */
static int canon_new(const char *joined, char **out, bv_error **errp)
{
    char *dir = bv_path_dirname(joined);
    const char *base = strrchr(joined, '/');
    base = base ? base + 1 : joined;
    int r = 0;
    char *rdir = dir ? realpath(dir, NULL) : NULL;
    if (!rdir) {
        r = bv_error_setf(errp, dir ? errno : ENOMEM, "Could not open '%s': %s", joined,
                          strerror(dir ? errno : ENOMEM));
        goto out;
    }
    if (!*base || strcmp(base, ".") == 0 || strcmp(base, "..") == 0) {
        r = bv_error_setf(errp, EINVAL, "not a file name: %s", joined);
        goto out;
    }
    if (asprintf(out, "%s%s%s", rdir, strcmp(rdir, "/") ? "/" : "", base) < 0) {
        *out = NULL;
        r = bv_error_setf(errp, ENOMEM, "out of memory");
    }
out:
    free(rdir);
    free(dir);
    return r;
}

static int join(const char *root, const char *base_dir, const char *path, char **out)
{
    const char *dir = base_dir ? base_dir : root;
    int n;
    if (path[0] == '/' || !dir)
        n = asprintf(out, "%s", path);
    else
        n = asprintf(out, "%s/%s", dir, path);
    if (n < 0) {
        *out = NULL;
        return -ENOMEM;
    }
    return 0;
}

static int canonicalise(const char *joined, unsigned flags, char **out, bv_error **errp)
{
    char *real = realpath(joined, NULL);
    if (real) {
        *out = real;
        return 0;
    }
    int e = errno;
    struct stat st;
    if (e == ENOENT && (flags & BV_PATH_MAY_NOT_EXIST) && lstat(joined, &st) != 0)
        return canon_new(joined, out, errp);
    return bv_error_setf(errp, e, "Could not open '%s': %s", joined, strerror(e));
}

int bv_path_resolve(const char *root, const char *base_dir, const char *path, unsigned flags,
                    char **out, bv_error **errp)
{
    char *joined = NULL, *real = NULL, *rroot = NULL;
    *out = NULL;
    int r = check_form(root, path, flags, errp);
    if (r < 0)
        goto out;
    r = join(root, base_dir, path, &joined);
    if (r < 0) {
        bv_error_setf(errp, -r, "out of memory");
        goto out;
    }
    r = canonicalise(joined, flags, &real, errp);
    if (r < 0)
        goto out;
    if (root) {
        rroot = realpath(root, NULL);
        if (!rroot) {
            r = bv_error_setf(errp, errno, "root directory %s: %s", root, strerror(errno));
            goto out;
        }
        if (!bv_path_is_inside(rroot, real)) {
            r = bv_error_setf(errp, EACCES, "path leads outside the allowed directory: %s", path);
            goto out;
        }
    }
    *out = real;
    real = NULL;
out:
    free(joined);
    free(real);
    free(rroot);
    return r;
}

int bv_path_open(const char *root, const char *base_dir, const char *path, unsigned flags,
                 int oflags, mode_t mode, int *fd, char **resolved, bv_error **errp)
{
    char *real = NULL;
    *fd = -1;
    int r = bv_path_resolve(root, base_dir, path, flags, &real, errp);
    if (r < 0)
        goto out;
    int f = open(real, oflags | O_CLOEXEC | O_NOFOLLOW, mode);
    if (f < 0) {
        r = bv_error_setf(errp, errno, "Could not open '%s': %s", path, strerror(errno));
        goto out;
    }
    *fd = f;
    if (resolved) {
        *resolved = real;
        real = NULL;
    }
out:
    free(real);
    return r;
}
