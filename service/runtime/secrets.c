/* Secret files beside the catalog; see secrets.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/secrets.h"

int bv_secret_name_check(const char *name, size_t max, bv_error **errp)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > max || name[0] == '.')
        return bv_error_setf(errp, EINVAL, "name: 1 to %zu characters of [A-Za-z0-9._-], not "
                             "starting with '.'", max);
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return bv_error_setf(errp, EINVAL, "name: '%c' is not allowed (use [A-Za-z0-9._-])",
                                 c);
    }
    return 0;
}

static void secret_path(struct bv_app *app, const char *kind, const char *name,
                        const char *suffix, char *out, size_t len)
{
    snprintf(out, len, "%s/%s/%s.secret%s", app->cfg.data_dir, kind, name, suffix);
}

int bv_secret_write(struct bv_app *app, const char *kind, const char *name, const char *secret,
                    bv_error **errp)
{
    char dir[4200], tmp[4400], path[4400];
    snprintf(dir, sizeof(dir), "%s/%s", app->cfg.data_dir, kind);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST)
        return bv_error_setf(errp, errno, "cannot create %s: %s", dir, strerror(errno));
    secret_path(app, kind, name, ".tmp", tmp, sizeof(tmp));
    secret_path(app, kind, name, "", path, sizeof(path));
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return bv_error_setf(errp, errno, "cannot create %s: %s", tmp, strerror(errno));
    size_t n = strlen(secret);
    int r = 0;
    if (write(fd, secret, n) != (ssize_t)n || fsync(fd) < 0)
        r = bv_error_setf(errp, EIO, "cannot write %s: %s", tmp, strerror(errno));
    close(fd);
    if (r == 0 && rename(tmp, path) < 0)
        r = bv_error_setf(errp, errno, "cannot rename %s: %s", tmp, strerror(errno));
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int bv_secret_read(struct bv_app *app, const char *kind, const char *name, char *out,
                   size_t cap)
{
    char path[4400];
    secret_path(app, kind, name, "", path, sizeof(path));
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    ssize_t n = cap > 1 ? read(fd, out, cap - 1) : -1;
    close(fd);
    if (n <= 0)
        return -EIO;
    out[n] = '\0';
    return 0;
}

void bv_secret_remove(struct bv_app *app, const char *kind, const char *name)
{
    char path[4400];
    secret_path(app, kind, name, "", path, sizeof(path));
    unlink(path);
}
