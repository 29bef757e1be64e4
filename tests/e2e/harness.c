/* End-to-end harness: see harness.h. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>

#include "harness.h"

/* The printed fingerprint line ("tls fingerprint sha256 AA:..."), if any. */
static void read_fingerprint(const char *buf, struct bvh *h)
{
    const char *f = strstr(buf, "tls fingerprint sha256 ");
    const char *nl = f ? strchr(f, '\n') : NULL;
    if (f && nl) {
        f += strlen("tls fingerprint sha256 ");
        snprintf(h->tls_fingerprint, sizeof(h->tls_fingerprint), "%.*s", (int)(nl - f), f);
    }
}

static int read_port(int fd, unsigned *port, bool *tls, struct bvh *h)
{
    char buf[512];
    size_t len = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);
        if (n <= 0)
            return -1;
        len += (size_t)n;
        buf[len] = '\0';
        char *p = strstr(buf, "listening on http");
        char *nl = p ? strchr(p, '\n') : NULL;
        if (p && nl) {
            *tls = p[strlen("listening on http")] == 's';
            read_fingerprint(buf, h);
            char *colon = strrchr(p, ':');
            *port = (unsigned)strtoul(colon + 1, NULL, 10);
            return *port ? 0 : -1;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (len >= sizeof(buf) - 1 || t1.tv_sec - t0.tv_sec > 30)
            return -1;
    }
}

static pid_t spawn(struct bvh *h, const struct bvh_opts *o, int *out_fd)
{
    const char *daemon = getenv("BV_DAEMON");
    int pfd[2];
    if (pipe(pfd) < 0)
        return -1;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        char log[400];
        snprintf(log, sizeof(log), "%s.log", h->dir);
        int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(pfd[1], 1);
        if (lfd >= 0)
            dup2(lfd, 2);
        close(pfd[0]);
        const char *argv[24];
        int a = 0;
        argv[a++] = daemon;
        argv[a++] = "serve";
        argv[a++] = "--listen";
        argv[a++] = o && o->listen ? o->listen : "127.0.0.1:0";
        argv[a++] = "--data";
        argv[a++] = h->dir;
        if (o && o->token_file) {
            argv[a++] = "--token-file";
            argv[a++] = o->token_file;
        }
        for (int i = 0; h->args && h->args[i] && i < 8; i++)
            argv[a++] = h->args[i];
        argv[a] = NULL;
        execv(daemon, (char *const *)argv);
        _exit(127);
    }
    close(pfd[1]);
    *out_fd = pfd[0];
    return pid;
}

static int wait_health(struct bvh *h)
{
    for (int i = 0; i < 200; i++) {
        struct bvh_resp r;
        if (bvh_request(h, "GET", "/api/v1/health", NULL, 0, NULL, NULL, &r) == 0) {
            long st = r.status;
            bvh_resp_free(&r);
            if (st == 200 || st == 401)
                return 0;
        }
        usleep(50 * 1000);
    }
    return -1;
}

static int start_in_dir(struct bvh *h, const struct bvh_opts *o)
{
    const char *daemon = getenv("BV_DAEMON");
    if (!daemon || access(daemon, X_OK) != 0) {
        fprintf(stderr, "harness: BV_DAEMON not set or not executable; skipping\n");
        exit(77);
    }
    int fd = -1;
    h->pid = spawn(h, o, &fd);
    if (h->pid < 0)
        return -1;
    int r = read_port(fd, &h->port, &h->tls, h);
    close(fd);
    if (r < 0) {
        fprintf(stderr, "harness: daemon did not print its port (log: %s.log)\n", h->dir);
        bvh_kill9(h);
        return -1;
    }
    snprintf(h->base, sizeof(h->base), "%s://127.0.0.1:%u", h->tls ? "https" : "http", h->port);
    snprintf(h->images, sizeof(h->images), "%s/images", h->dir);
    return wait_health(h);
}

int bvh_start(struct bvh *h, const struct bvh_opts *o)
{
    static bool curl_ready;
    if (!curl_ready) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_ready = true;
    }
    struct bvh set = { .token = h->token, .cainfo = h->cainfo, .keep_dir = h->keep_dir, .path_as_is = h->path_as_is,
                       .args = o ? o->args : NULL };
    *h = set;
    if (o && o->data_dir) {
        snprintf(h->dir, sizeof(h->dir), "%s", o->data_dir);
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(h->dir, sizeof(h->dir), "%s/bv-e2e-XXXXXX", tmp ? tmp : "/tmp");
        if (!mkdtemp(h->dir))
            return -1;
    }
    return start_in_dir(h, o);
}

static int reap(struct bvh *h, int timeout_ms)
{
    int st = 0;
    for (int waited = 0; waited <= timeout_ms; waited += 20) {
        pid_t p = waitpid(h->pid, &st, WNOHANG);
        if (p == h->pid) {
            h->pid = 0;
            return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        usleep(20 * 1000);
    }
    return -1;
}

int bvh_stop(struct bvh *h)
{
    int rc = -1;
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        rc = reap(h, 10000);
        if (rc < 0) {
            kill(h->pid, SIGKILL);
            reap(h, 5000);
        }
    }
    if (!h->keep_dir && h->dir[0]) {
        bvh_sh("rm -rf '%s' '%s.log'", h->dir, h->dir);
        h->dir[0] = '\0';
    }
    return rc;
}

void bvh_kill9(struct bvh *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGKILL);
        reap(h, 5000);
    }
}

int bvh_restart(struct bvh *h)
{
    if (h->pid > 0) {
        kill(h->pid, SIGTERM);
        if (reap(h, 10000) < 0)
            bvh_kill9(h);
    }
    return start_in_dir(h, NULL);
}

void bvh_resp_free(struct bvh_resp *r)
{
    free(r->body);
    cJSON_Delete(r->json);
    memset(r, 0, sizeof(*r));
}

static size_t on_data(char *p, size_t sz, size_t n, void *opaque)
{
    struct bvh_resp *r = opaque;
    size_t add = sz * n;
    char *b = realloc(r->body, r->len + add + 1);
    if (!b)
        return 0;
    memcpy(b + r->len, p, add);
    r->body = b;
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

int bvh_request(struct bvh *h, const char *method, const char *path, const void *body,
                size_t len, const char *ctype, const char *const *headers,
                struct bvh_resp *r)
{
    memset(r, 0, sizeof(*r));
    CURL *c = curl_easy_init();
    if (!c)
        return -1;
    char url[1024], ct[128], auth[512];
    snprintf(url, sizeof(url), "%s%s", h->base, path);
    struct curl_slist *hl = NULL;
    snprintf(ct, sizeof(ct), "Content-Type: %s", ctype ? ctype : "application/json");
    hl = curl_slist_append(hl, ct);
    hl = curl_slist_append(hl, "Expect:");
    if (h->token) {
        snprintf(auth, sizeof(auth), "Authorization: Bearer %s", h->token);
        hl = curl_slist_append(hl, auth);
    }
    for (int i = 0; headers && headers[i]; i++)
        hl = curl_slist_append(hl, headers[i]);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 300L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PATH_AS_IS, h->path_as_is ? 1L : 0L);
    char ca[400];
    if (h->tls) {
        snprintf(ca, sizeof(ca), "%s/tls/cert.pem", h->dir);
        curl_easy_setopt(c, CURLOPT_CAINFO, h->cainfo ? h->cainfo : ca);
    }
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode cc = curl_easy_perform(c);
    if (cc == CURLE_OK)
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(hl);
    curl_easy_cleanup(c);
    if (cc != CURLE_OK)
        return -1;
    if (r->body)
        r->json = cJSON_ParseWithLength(r->body, r->len);
    return 0;
}

cJSON *bvh_json(struct bvh *h, const char *method, long expect_status, const char *path,
                const char *fmt, ...)
{
    char *body = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        if (vasprintf(&body, fmt, ap) < 0)
            body = NULL;
        va_end(ap);
    }
    struct bvh_resp r;
    int rc = bvh_request(h, method, path, body, body ? strlen(body) : 0, NULL, NULL, &r);
    if (rc != 0 || r.status != expect_status)
        fprintf(stderr, "harness: %s %s %s -> %ld (want %ld): %s\n", method, path,
                body ? body : "", r.status, expect_status, r.body ? r.body : "(no body)");
    free(body);
    assert_int_equal(rc, 0);
    assert_int_equal(r.status, expect_status);
    cJSON *j = r.json;
    r.json = NULL;
    bvh_resp_free(&r);
    return j;
}

void bvh_blkverify_mismatch_drive(struct bvh *h, const char *id, const char *test,
                                  const char *ref)
{
    char path[512];
    static unsigned char cd[1 << 20];
    memset(cd, 0xcd, sizeof(cd));
    snprintf(path, sizeof(path), "%s/%s", h->images, ref);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(cd, 1, sizeof(cd), f), sizeof(cd));
    assert_int_equal(fclose(f), 0);
    cJSON_Delete(bvh_json(h, "POST", 201, "/api/v1/images",
                          "{\"file\":\"%s\",\"format\":\"qcow2\",\"size\":\"1M\"}", test));
    cJSON *d = bvh_json(h, "POST", 201, "/api/v1/drives",
                        "{\"id\":\"%s\",\"format\":\"blkverify\",\"test\":{\"file\":\"%s\","
                        "\"format\":\"qcow2\"},\"raw\":{\"file\":\"%s\"}}", id, test, ref);
    assert_string_equal(bvh_str(d, "format"), "blkverify");
    cJSON_Delete(d);
}

void bvh_assert_error(const struct bvh_resp *r, long status, const char *cls)
{
    if (r->status != status)
        fprintf(stderr, "harness: want %ld, got %ld: %s\n", status, r->status,
                r->body ? r->body : "");
    assert_int_equal(r->status, status);
    assert_non_null(r->json);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(r->json, "error");
    assert_true(cJSON_IsObject(e));
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "class");
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(e, "desc");
    assert_true(cJSON_IsString(c));
    assert_true(cJSON_IsString(d));
    assert_true(strlen(d->valuestring) > 0);
    assert_string_equal(c->valuestring, cls);
    assert_int_equal(cJSON_GetArraySize(e), 2);
}

double bvh_num(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(it))
        fprintf(stderr, "harness: no number '%s'\n", key);
    assert_true(cJSON_IsNumber(it));
    return it->valuedouble;
}

const char *bvh_str(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(it))
        fprintf(stderr, "harness: no string '%s'\n", key);
    assert_true(cJSON_IsString(it));
    return it->valuestring;
}

bool bvh_bool(const cJSON *o, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    assert_true(cJSON_IsBool(it));
    return cJSON_IsTrue(it);
}

int bvh_sh(const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&cmd, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    int st = system(cmd);
    free(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

bool bvh_have(const char *prog)
{
    return bvh_sh("command -v '%s' >/dev/null 2>&1", prog) == 0;
}
