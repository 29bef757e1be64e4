/*
 * The web UI: files under the web directory, served read-only.  Paths with
 * ".." or hidden components are refused; files are capped at 4 MiB (the UI
 * is a few small files).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/api.h"
#include "app.h"

#define MAX_STATIC_FILE (4u << 20)

static const char *content_type(const char *path)
{
    static const struct { const char *ext, *type; } types[] = {
        { ".html", "text/html; charset=utf-8" },
        { ".css", "text/css; charset=utf-8" },
        { ".js", "text/javascript; charset=utf-8" },
        { ".mjs", "text/javascript; charset=utf-8" },
        { ".svg", "image/svg+xml" },
        { ".png", "image/png" },
        { ".ico", "image/x-icon" },
        { ".json", "application/json" },
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(dot, types[i].ext) == 0)
            return types[i].type;
    return "application/octet-stream";
}

static bool safe_rel(const char *rel)
{
    if (rel[0] == '/' || rel[0] == '.' || strstr(rel, "/.") || strstr(rel, "//"))
        return false;
    return true;
}

static int read_file(const char *path, char **out, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    int r = 0;
    char *buf = NULL;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        r = -ENOENT;
        goto out;
    }
    if ((uint64_t)st.st_size > MAX_STATIC_FILE) {
        r = -EFBIG;
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    ssize_t n = pread(fd, buf, (size_t)st.st_size, 0);
    if (n != st.st_size) {
        r = -EIO;
        goto out;
    }
    *out = buf;
    *len = (size_t)n;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return r;
}

void api_static(struct bv_request *req, struct bv_reply *rep)
{
    const char *rel = req->nparams ? req->params[0] : "index.html";
    if (!safe_rel(rel) || strncmp(req->path, "/api/", 5) == 0) {
        bv_reply_error(rep, 404, "NotFound", "no such resource: %s", req->path);
        return;
    }
    char path[8400];
    snprintf(path, sizeof(path), "%s/%s", req->app->cfg.web_dir, rel);
    char *buf = NULL;
    size_t len = 0;
    int r = read_file(path, &buf, &len);
    if (r < 0) {
        bv_reply_error(rep, 404, "NotFound", "no such resource: %s", req->path);
        return;
    }
    bv_reply_bytes(rep, 200, content_type(path), buf, len);
}
