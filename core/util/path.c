/*
 * Path confinement (see include/bv/path.h).  The algorithm: refuse by form
 * what a client may not say, turn the name into a root-relative one (an
 * absolute recorded name must start with the root's name), drop "." and
 * empty components, then let the kernel walk it beneath the root's
 * descriptor: openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) fails with
 * EXDEV the moment a symlink or ".." would take the walk out of the root,
 * whatever was swapped in since any earlier look at the name.  Create and
 * unlink act on the parent directory's descriptor so resolved.
 *
 * openat2 returns EAGAIN when a rename elsewhere on the system raced a walk
 * through ".."; that is retried a bounded number of times.  Without openat2
 * (ENOSYS) bv_path_walk_open walks one component at a time with
 * openat(O_NOFOLLOW), refusing every symlink and counting ".." so that it
 * never climbs above the root.
 *
 * Cost: one syscall per open on the normal path; no realpath, no lstat.
 */
#include "bv/path.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define OPENAT2_RETRIES 64

bool bv_path_is_inside(const char *root_real, const char *real)
{
    size_t n = strlen(root_real);
    if (n == 1 && root_real[0] == '/')
        return real[0] == '/';
    return strncmp(root_real, real, n) == 0 && (real[n] == '/' || real[n] == '\0');
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

/* ---------------- roots ---------------- */

int bv_root_open(const char *path, struct bv_root **out, bv_error **errp)
{
    *out = NULL;
    struct bv_root *r = calloc(1, sizeof(*r));
    int ret = 0;
    if (!r)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    r->fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (r->fd < 0) {
        ret = bv_error_setf(errp, errno, "root directory %s: %s", path, strerror(errno));
        goto out;
    }
    r->real = realpath(path, NULL);
    r->given = strdup(path);
    if (!r->real || !r->given) {
        ret = bv_error_setf(errp, r->real ? ENOMEM : errno, "root directory %s: %s", path,
                            strerror(r->real ? ENOMEM : errno));
        goto out;
    }
    *out = r;
    r = NULL;
out:
    bv_root_close(r);
    return ret;
}

void bv_root_close(struct bv_root *root)
{
    if (!root)
        return;
    if (root->fd >= 0)
        close(root->fd);
    free(root->real);
    free(root->given);
    free(root);
}

/* ---------------- names ---------------- */

static bool is_dotdot(const char *s, size_t n)
{
    return n == 2 && s[0] == '.' && s[1] == '.';
}

static bool has_dotdot(const char *p)
{
    const char *s = p;
    while (*s) {
        const char *e = strchrnul(s, '/');
        if (is_dotdot(s, (size_t)(e - s)))
            return true;
        s = *e ? e + 1 : e;
    }
    return false;
}

static int check_form(const struct bv_root *root, const char *path, unsigned flags,
                      bv_error **errp)
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

static int outside(bv_error **errp, const char *path)
{
    return bv_error_setf(errp, EACCES, "path leads outside the allowed directory: %s", path);
}

/* The part of absolute `path` below prefix (a directory name), or NULL. */
static const char *below(const char *prefix, const char *path)
{
    size_t n = strlen(prefix);
    while (n > 1 && prefix[n - 1] == '/')
        n--;
    if (prefix[0] != '/' || strncmp(prefix, path, n) != 0)
        return NULL;
    if (path[n] == '\0')
        return path + n;
    return path[n] == '/' ? path + n + 1 : NULL;
}

/* Append the components of p to buf (used bytes *len), dropping "." and empties. */
static int append_components(char *buf, size_t *len, const char *p)
{
    const char *s = p;
    while (*s) {
        const char *e = strchrnul(s, '/');
        size_t n = (size_t)(e - s);
        if (n && !(n == 1 && s[0] == '.')) {
            if (*len + n + 2 > PATH_MAX)
                return -ENAMETOOLONG;
            if (*len)
                buf[(*len)++] = '/';
            memcpy(buf + *len, s, n);
            *len += n;
            buf[*len] = '\0';
        }
        s = *e ? e + 1 : e;
    }
    return 0;
}

static int join_rooted(const struct bv_root *root, const char *base_dir, const char *path,
                       char **name, bv_error **errp)
{
    char buf[PATH_MAX];
    size_t len = 0;
    int r = 0;
    buf[0] = '\0';
    if (path[0] == '/') {
        const char *rel = below(root->real, path);
        if (!rel)
            rel = below(root->given, path);
        if (!rel)
            return outside(errp, path);
        r = append_components(buf, &len, rel);
    } else {
        if (base_dir)
            r = append_components(buf, &len, base_dir);
        if (r == 0)
            r = append_components(buf, &len, path);
    }
    if (r < 0)
        return bv_error_setf(errp, ENAMETOOLONG, "path too long");
    *name = strdup(len ? buf : ".");
    return *name ? 0 : bv_error_setf(errp, ENOMEM, "out of memory");
}

static int join_plain(const char *base_dir, const char *path, char **name, bv_error **errp)
{
    int n;
    if (path[0] == '/' || !base_dir)
        n = asprintf(name, "%s", path);
    else
        n = asprintf(name, "%s/%s", base_dir, path);
    if (n < 0) {
        *name = NULL;
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    if (n >= PATH_MAX) {
        free(*name);
        *name = NULL;
        return bv_error_setf(errp, ENAMETOOLONG, "path too long");
    }
    return 0;
}

int bv_path_name(const struct bv_root *root, const char *base_dir, const char *path,
                 unsigned flags, char **name, bv_error **errp)
{
    *name = NULL;
    int r = check_form(root, path, flags, errp);
    if (r < 0)
        return r;
    return root ? join_rooted(root, base_dir, path, name, errp)
                : join_plain(base_dir, path, name, errp);
}

/* ---------------- the walk ---------------- */

/* Open one component beneath cur; symlinks are refused (-ELOOP). */
static int walk_step(int cur, const char *comp, int oflags, mode_t mode)
{
    int fd = openat(cur, comp, oflags | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        int e = errno;
        struct stat st;
        if (e == ENOTDIR && fstatat(cur, comp, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISLNK(st.st_mode))
            e = ELOOP;
        return -e;
    }
    struct stat st;
    if ((oflags & O_PATH) && fstat(fd, &st) == 0 && S_ISLNK(st.st_mode)) {
        close(fd);                   /* O_PATH|O_NOFOLLOW opened the link itself */
        return -ELOOP;
    }
    return fd;
}

int bv_path_walk_open(int dirfd, const char *rel, int oflags, mode_t mode)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof(buf), "%s", rel) >= (int)sizeof(buf))
        return -ENAMETOOLONG;
    if (buf[0] == '/')
        return -EXDEV;
    int cur = dirfd, ret = 0;
    unsigned depth = 0;
    char *s = buf;
    for (;;) {
        char *e = strchrnul(s, '/');
        bool last = *e == '\0';
        *e = '\0';
        bool up = is_dotdot(s, strlen(s));
        if (up && depth == 0) {
            ret = -EXDEV;
            break;
        }
        const char *comp = *s ? s : ".";
        int fd = last ? walk_step(cur, comp, oflags, mode)
                      : walk_step(cur, comp, O_PATH | O_DIRECTORY, 0);
        if (cur != dirfd)
            close(cur);
        cur = dirfd;
        if (fd < 0) {
            ret = fd;
            break;
        }
        if (last)
            return fd;
        cur = fd;
        depth = up ? depth - 1 : depth + 1;
        s = e + 1;
    }
    if (cur != dirfd)
        close(cur);
    return ret;
}

/* Open rel beneath the root; returns the fd or -errno (-EXDEV: it leads out). */
static int beneath(const struct bv_root *root, const char *rel, int oflags, mode_t mode)
{
    struct open_how how = {
        .flags = (uint64_t)(unsigned)(oflags | O_CLOEXEC),
        .mode = (oflags & O_CREAT) ? mode : 0,
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    for (int i = 0; i < OPENAT2_RETRIES; i++) {
        long fd = syscall(SYS_openat2, root->fd, rel, &how, sizeof(how));
        if (fd >= 0)
            return (int)fd;
        if (errno == ENOSYS)
            return bv_path_walk_open(root->fd, rel, oflags, mode);
        if (errno != EAGAIN)
            return -errno;
    }
    return -EAGAIN;
}

static int open_failed(bv_error **errp, const char *path, int r)
{
    if (r == -EXDEV)
        return outside(errp, path);
    return bv_error_setf(errp, -r, "Could not open '%s': %s", path, strerror(-r));
}

/* Split name (normalised, root-relative) into its parent and last component. */
static int split(const char *name, char **parent, const char **base)
{
    const char *slash = strrchr(name, '/');
    *base = slash ? slash + 1 : name;
    *parent = slash ? strndup(name, (size_t)(slash - name)) : strdup(".");
    return *parent ? 0 : -ENOMEM;
}

static bool is_dir_name(const char *base)
{
    return strcmp(base, ".") == 0 || strcmp(base, "..") == 0;
}

/* O_CREAT beneath the root: the parent's fd, then an exclusive create in it. */
static int create_beneath(const struct bv_root *root, const char *name, int oflags, mode_t mode)
{
    char *parent = NULL;
    const char *base = NULL;
    if (split(name, &parent, &base) < 0)
        return -ENOMEM;
    int fd = is_dir_name(base) ? -EISDIR : beneath(root, parent, O_PATH | O_DIRECTORY, 0);
    if (fd >= 0) {
        int pfd = fd;
        fd = openat(pfd, base, oflags | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
        if (fd < 0)
            fd = -errno;
        close(pfd);
    }
    free(parent);
    return fd;
}

/* Without a root: canonical name (for opening an existing file) as before. */
static int open_plain(const char *name, int oflags, mode_t mode, char **real)
{
    int fd;
    if (oflags & O_CREAT) {
        fd = open(name, oflags | O_CLOEXEC, mode);
        if (fd < 0)
            return -errno;
        *real = realpath(name, NULL);
    } else {
        *real = realpath(name, NULL);
        if (!*real)
            return -errno;
        fd = open(*real, oflags | O_CLOEXEC | O_NOFOLLOW, mode);
        if (fd < 0)
            return -errno;
    }
    if (!*real) {
        close(fd);
        return -ENOMEM;
    }
    return fd;
}

int bv_path_open(const struct bv_root *root, const char *base_dir, const char *path,
                 unsigned flags, int oflags, mode_t mode, int *fd, char **name,
                 bv_error **errp)
{
    char *n = NULL, *real = NULL;
    *fd = -1;
    if (name)
        *name = NULL;
    int r = bv_path_name(root, base_dir, path, flags, &n, errp);
    if (r < 0)
        goto out;
    if (!root)
        r = open_plain(n, oflags, mode, &real);
    else if (oflags & O_CREAT)
        r = create_beneath(root, n, oflags, mode);
    else
        r = beneath(root, n, oflags, mode);
    if (r < 0) {
        r = open_failed(errp, path, r);
        goto out;
    }
    *fd = r;
    r = 0;
    if (name) {
        *name = root ? n : real;
        if (root)
            n = NULL;
        else
            real = NULL;
    }
out:
    free(n);
    free(real);
    return r;
}

int bv_path_stat(const struct bv_root *root, const char *path, struct stat *st,
                 bv_error **errp)
{
    int fd = -1;
    int r = bv_path_open(root, NULL, path, 0, O_PATH, 0, &fd, NULL, errp);
    if (r < 0)
        return r;
    if (fstat(fd, st) < 0)
        r = bv_error_setf(errp, errno, "Could not stat '%s': %s", path, strerror(errno));
    close(fd);
    return r;
}

/* ---------------- unlink ---------------- */

static int is_directory(const struct bv_root *root, const char *name)
{
    int fd = root ? beneath(root, name, O_PATH | O_DIRECTORY, 0)
                  : open(name, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return root ? fd : -errno;
    close(fd);
    return 1;
}

/* unlinkat in dirfd; a directory is -EISDIR whatever the kernel says. */
static int unlink_in(int dirfd, const char *base)
{
    if (unlinkat(dirfd, base, 0) == 0)
        return 0;
    int e = errno;
    struct stat st;
    if ((e == EPERM || e == EISDIR) && fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISDIR(st.st_mode))
        e = EISDIR;
    return -e;
}

static int unlink_name(const struct bv_root *root, const char *name)
{
    char *parent = NULL;
    const char *base = NULL;
    if (split(name, &parent, &base) < 0)
        return -ENOMEM;
    int r;
    if (is_dir_name(base)) {
        r = -EISDIR;
    } else if (!root) {
        r = unlink_in(AT_FDCWD, name);
    } else {
        int pfd = beneath(root, parent, O_PATH | O_DIRECTORY, 0);
        r = pfd < 0 ? pfd : unlink_in(pfd, base);
        if (pfd >= 0)
            close(pfd);
    }
    free(parent);
    return r;
}

int bv_path_sync_parent(const struct bv_root *root, const char *path)
{
    char *dir = bv_path_dirname(path);
    int fd = -1;
    int r = dir ? bv_path_open(root, NULL, dir, 0, O_RDONLY | O_DIRECTORY, 0, &fd, NULL, NULL)
                : -ENOMEM;
    if (r == 0) {
        r = fsync(fd) < 0 ? -errno : 0;
        close(fd);
    }
    free(dir);
    return r;
}

int bv_path_unlink(const struct bv_root *root, const char *path, bv_error **errp)
{
    char *n = NULL;
    int r = bv_path_name(root, NULL, path, 0, &n, errp);
    if (r < 0)
        return r;
    size_t len = strlen(path);
    if (path[len - 1] == '/') {      /* names a directory, or nothing */
        r = is_directory(root, n);
        r = r > 0 ? -EISDIR : r == -ENOTDIR ? -ENOTDIR : r;
    } else {
        r = unlink_name(root, n);
    }
    if (r == -EISDIR)
        r = bv_error_setf(errp, EISDIR, "'%s' is a directory", path);
    else if (r == -EXDEV)
        r = outside(errp, path);
    else if (r < 0)
        r = bv_error_setf(errp, -r, "Could not delete '%s': %s", path, strerror(-r));
    free(n);
    return r;
}
