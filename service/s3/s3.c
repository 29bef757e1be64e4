/*
 * S3 protocol over libcurl (see s3.h for the contract).
 *
 * Every call is one or more "requests" (struct req): method, key, sorted query, extra
 * headers, a body from memory and a sink for the reply.  request() runs one with retries:
 * a transport failure (refused, reset, timeout) or a 5xx waits 200 ms × 2^attempt (at most
 * 5 s) and tries again; anything else is final.  A reply of 300 or more is read into a
 * 64 KiB error buffer and its <Code>/<Message> become the error sentence.
 *
 * Multipart uploads (bv_s3_put_file above part_size): initiate, then `parallel` threads take
 * the next part number from a shared counter, pread it into their own buffer and PUT it with
 * its Content-MD5; the ETags are collected by part number and sent in Complete.  Any failure
 * stops the others at their next part and the upload is aborted.
 */
#include "s3/s3.h"

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>

#define DEFAULT_PART (16u << 20)
#define MIN_PART (5u << 20)
#define MAX_PART (512u << 20)
#define MAX_PARALLEL 16
#define MAX_PARTS 10000
#define ERR_BODY_MAX (64u << 10)
#define XML_BODY_MAX (4u << 20)
#define ETAG_MAX 128

struct bv_s3 {
    char *endpoint, *bucket, *region, *access_key, *secret_key;
    char sigv4[160];
    size_t part_size;
    unsigned parallel;
    int retries;
    long timeout_s;
};

/* A growable buffer with a ceiling fixed at creation. */
struct sink {
    char *buf;
    size_t len, cap, max;
    bool fixed;          /* buf is the caller's, cap == max */
    bool overflow;
};

struct req {
    const char *method;  /* GET HEAD PUT POST DELETE */
    const char *key;     /* NULL: the bucket itself */
    const char *query;   /* sorted, every parameter with '=', or NULL */
    const char *const *headers;  /* NULL-terminated extra headers */
    const void *body;
    size_t body_len;
    bool has_body;
    const char *range;   /* "Range: bytes=a-b" or NULL */
    struct sink *out;    /* 2xx body, or NULL to discard */
    /* results */
    long status;
    char etag[ETAG_MAX];
    uint64_t content_length;
    bool have_length;
};

struct upload {          /* PUT body reader state */
    const char *p;
    size_t left;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- small helpers ---- */

static int sink_put(struct sink *s, const char *data, size_t n)
{
    if (n > s->max - s->len) {
        s->overflow = true;
        return -1;
    }
    if (s->len + n + 1 > s->cap && !s->fixed) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n + 1)
            cap *= 2;
        if (cap > s->max + 1)
            cap = s->max + 1;
        char *nb = realloc(s->buf, cap);
        if (!nb)
            return -1;
        s->buf = nb;
        s->cap = cap;
    }
    memcpy(s->buf + s->len, data, n);
    s->len += n;
    if (!s->fixed)
        s->buf[s->len] = '\0';
    return 0;
}

static void sink_free(struct sink *s)
{
    if (!s->fixed)
        free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
}

static void base64(const unsigned char *in, size_t n, char *out)
{
    static const char tab[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    out[o] = '\0';
}

/* "Content-MD5: <base64>" of buf into hdr (at least 40 bytes). */
static int content_md5(const void *buf, size_t len, char *hdr, size_t hdrlen)
{
    unsigned char md5[16];
    char b64[32];
    if (gnutls_hash_fast(GNUTLS_DIG_MD5, buf, len, md5) < 0)
        return -EIO;
    base64(md5, sizeof(md5), b64);
    snprintf(hdr, hdrlen, "Content-MD5: %s", b64);
    return 0;
}

/* The text of <tag>…</tag> in xml[0..len) starting at *pos, entities decoded unless raw
 * (an element holding elements), into out.  Moves *pos past the element.  Returns false when
 * absent or longer than outlen-1. */
static bool xml_scan(const char *xml, size_t len, size_t *pos, const char *tag, char *out,
                     size_t outlen, bool raw)
{
    char open[64], close[64];
    snprintf(open, sizeof(open), "<%s>", tag);
    snprintf(close, sizeof(close), "</%s>", tag);
    const char *end = xml + len;
    const char *a = memmem(xml + *pos, (size_t)(end - (xml + *pos)), open, strlen(open));
    if (!a)
        return false;
    a += strlen(open);
    const char *b = memmem(a, (size_t)(end - a), close, strlen(close));
    if (!b)
        return false;
    size_t o = 0;
    for (const char *p = a; p < b; p++) {
        char c = *p;
        if (c == '&' && !raw) {
            static const struct { const char *ent; char c; } ents[] = {
                {"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''},
            };
            bool ok = false;
            for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]); i++) {
                size_t el = strlen(ents[i].ent);
                if ((size_t)(b - p) >= el && memcmp(p, ents[i].ent, el) == 0) {
                    c = ents[i].c;
                    p += el - 1;
                    ok = true;
                    break;
                }
            }
            if (!ok)
                return false;
        }
        if (o + 1 >= outlen)
            return false;
        out[o++] = c;
    }
    out[o] = '\0';
    *pos = (size_t)(b + strlen(close) - xml);
    return true;
}

static bool xml_find(const char *xml, size_t len, size_t *pos, const char *tag, char *out,
                     size_t outlen)
{
    return xml_scan(xml, len, pos, tag, out, outlen, false);
}

/* ---- one request ---- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *opaque)
{
    void **ctx = opaque;   /* {CURL *, struct req *, struct sink *errbuf} */
    CURL *c = ctx[0];
    struct req *r = ctx[1];
    struct sink *eb = ctx[2];
    size_t n = size * nmemb;
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 300) {
        if (eb->len < eb->max)
            sink_put(eb, data, n > eb->max - eb->len ? eb->max - eb->len : n);
        return n;
    }
    if (!r->out)
        return n;
    return sink_put(r->out, data, n) == 0 ? n : 0;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *opaque)
{
    struct req *r = opaque;
    size_t n = size * nmemb;
    if (n > 5 && strncasecmp(data, "ETag:", 5) == 0) {
        const char *v = data + 5;
        size_t vl = n - 5;
        while (vl && (*v == ' ' || *v == '\t')) {
            v++;
            vl--;
        }
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl < sizeof(r->etag)) {
            memcpy(r->etag, v, vl);
            r->etag[vl] = '\0';
        }
    }
    return n;
}

static size_t on_read(char *dst, size_t size, size_t nmemb, void *opaque)
{
    struct upload *u = opaque;
    size_t n = size * nmemb;
    if (n > u->left)
        n = u->left;
    memcpy(dst, u->p, n);
    u->p += n;
    u->left -= n;
    return n;
}

/* endpoint/bucket[/key][?query] with the key's bytes percent-encoded except '/'. */
static char *make_url(const struct bv_s3 *s3, const char *key, const char *query)
{
    size_t kl = key ? strlen(key) : 0;
    size_t cap = strlen(s3->endpoint) + strlen(s3->bucket) + 3 * kl +
                 (query ? strlen(query) : 0) + 8;
    char *url = malloc(cap);
    if (!url)
        return NULL;
    size_t o = (size_t)snprintf(url, cap, "%s/%s", s3->endpoint, s3->bucket);
    if (key) {
        url[o++] = '/';
        for (size_t i = 0; i < kl; i++) {
            unsigned char c = (unsigned char)key[i];
            if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.' || c == '~' || c == '/')
                url[o++] = (char)c;
            else
                o += (size_t)snprintf(url + o, cap - o, "%%%02X", c);
        }
    }
    if (query)
        o += (size_t)snprintf(url + o, cap - o, "?%s", query);
    url[o] = '\0';
    return url;
}

static bool transient_curl(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_CONNECT: case CURLE_OPERATION_TIMEDOUT: case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
        return true;
    default:
        return false;
    }
}

/* Turn a final reply of 300+ into an error sentence. */
static int http_error(const struct bv_s3 *s3, const struct req *r, const struct sink *eb,
                      bv_error **errp)
{
    char code[128] = "", msg[256] = "";
    size_t pos = 0;
    if (eb->buf)
        xml_find(eb->buf, eb->len, &pos, "Code", code, sizeof(code));
    pos = 0;
    if (eb->buf)
        xml_find(eb->buf, eb->len, &pos, "Message", msg, sizeof(msg));
    const char *what = r->key ? r->key : s3->bucket;
    if (r->status == 403 && (!strcmp(code, "InvalidAccessKeyId") ||
                             !strcmp(code, "SignatureDoesNotMatch") || !code[0]))
        return bv_error_setf(errp, EACCES, "the remote refused the credentials (%s at %s)",
                             code[0] ? code : "403 Forbidden", s3->endpoint);
    if (r->status == 404 && (!strcmp(code, "NoSuchBucket") || (!r->key && !code[0])))
        return bv_error_setf(errp, ENOENT, "bucket '%s' does not exist at %s", s3->bucket,
                             s3->endpoint);
    if (r->status == 404 && !strcmp(code, "NoSuchUpload"))
        return bv_error_setf(errp, ENOENT, "the remote no longer knows the upload of '%s'",
                             what);
    if (r->status == 404)
        return bv_error_setf(errp, ENOENT, "object '%s' does not exist in bucket '%s'", what,
                             s3->bucket);
    if (r->status >= 500)
        return bv_error_setf(errp, EIO, "the remote failed: %s %s: HTTP %ld%s%s%s%s",
                             r->method, what, r->status, code[0] ? " " : "", code,
                             msg[0] ? ": " : "", msg);
    return bv_error_setf(errp, r->status == 403 ? EACCES : EPROTO,
                         "the remote refused %s %s: HTTP %ld%s%s%s%s", r->method, what,
                         r->status, code[0] ? " " : "", code, msg[0] ? ": " : "", msg);
}

static CURL *setup(const struct bv_s3 *s3, struct req *r, const char *url,
                   struct curl_slist **hl, struct upload *up, void **ctx)
{
    CURL *c = curl_easy_init();
    if (!c)
        return NULL;
    struct curl_slist *h = NULL;
    h = curl_slist_append(h, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (r->range)
        h = curl_slist_append(h, r->range);
    for (const char *const *p = r->headers; p && *p; p++)
        h = curl_slist_append(h, *p);
    *hl = h;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, s3->sigv4);
    curl_easy_setopt(c, CURLOPT_USERNAME, s3->access_key);
    curl_easy_setopt(c, CURLOPT_PASSWORD, s3->secret_key);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, s3->timeout_s);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, ctx);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, r);
    if (!strcmp(r->method, "HEAD")) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (!strcmp(r->method, "PUT")) {
        curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
        curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
        curl_easy_setopt(c, CURLOPT_READDATA, up);
        curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)r->body_len);
    } else if (!strcmp(r->method, "POST")) {
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, r->body ? (const char *)r->body : "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    } else if (strcmp(r->method, "GET")) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, r->method);
    }
    return c;
}

static void backoff(int attempt)
{
    long ms = 200L << (attempt < 5 ? attempt : 5);
    if (ms > 5000)
        ms = 5000;
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int request(const struct bv_s3 *s3, struct req *r, bv_error **errp)
{
    char *url = make_url(s3, r->key, r->query);
    if (!url)
        return bv_error_setf(errp, ENOMEM, "out of memory building an S3 URL");
    int ret = 0;
    for (int attempt = 0;; attempt++) {
        struct sink eb = {.max = ERR_BODY_MAX};
        struct upload up = {r->body, r->body_len};
        struct curl_slist *hl = NULL;
        void *ctx[3] = {NULL, r, &eb};
        if (r->out) {
            r->out->len = 0;
            r->out->overflow = false;
        }
        r->etag[0] = '\0';
        CURL *c = setup(s3, r, url, &hl, &up, ctx);
        if (!c) {
            ret = bv_error_setf(errp, ENOMEM, "out of memory starting an S3 request");
            break;
        }
        ctx[0] = c;
        char cerr[CURL_ERROR_SIZE] = "";
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, cerr);
        CURLcode rc = curl_easy_perform(c);
        r->status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r->status);
        curl_off_t cl = -1;
        curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
        r->have_length = cl >= 0;
        r->content_length = cl >= 0 ? (uint64_t)cl : 0;
        curl_easy_cleanup(c);
        curl_slist_free_all(hl);
        bool last = attempt >= s3->retries;
        if (rc == CURLE_WRITE_ERROR && r->out && r->out->overflow) {
            ret = bv_error_setf(errp, EFBIG, "the remote's reply to %s %s is larger than %zu bytes",
                                r->method, r->key ? r->key : s3->bucket, r->out->max);
        } else if (rc != CURLE_OK && (!transient_curl(rc) || last)) {
            ret = bv_error_setf(errp, rc == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : EHOSTUNREACH,
                                "cannot reach the remote at %s: %s", s3->endpoint,
                                cerr[0] ? cerr : curl_easy_strerror(rc));
        } else if (rc != CURLE_OK || (r->status >= 500 && !last)) {
            sink_free(&eb);
            backoff(attempt);
            continue;
        } else if (r->status >= 300) {
            ret = http_error(s3, r, &eb, errp);
        }
        sink_free(&eb);
        break;
    }
    free(url);
    return ret;
}

/* ---- public calls ---- */

static char *xstrdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int bv_s3_new(const struct bv_s3_config *cfg, struct bv_s3 **out, bv_error **errp)
{
    pthread_once(&curl_once, curl_init_once);
    const char *region = cfg->region && cfg->region[0] ? cfg->region : "us-east-1";
    if (!cfg->endpoint || (strncmp(cfg->endpoint, "http://", 7) &&
                           strncmp(cfg->endpoint, "https://", 8)))
        return bv_error_setf(errp, EINVAL, "endpoint must start with http:// or https://");
    const char *host = cfg->endpoint + (cfg->endpoint[4] == 's' ? 8 : 7);
    if (!host[0] || strchr(host, '/') || strchr(host, '?') || strchr(host, '@'))
        return bv_error_setf(errp, EINVAL, "endpoint must be scheme://host[:port] with no path");
    if (!cfg->bucket || !cfg->bucket[0] || strchr(cfg->bucket, '/') ||
        strlen(cfg->bucket) > 63)
        return bv_error_setf(errp, EINVAL, "bucket must be a bucket name (1-63 characters, no '/')");
    if (!cfg->access_key || !cfg->access_key[0] || !cfg->secret_key || !cfg->secret_key[0])
        return bv_error_setf(errp, EINVAL, "access_key and secret_key must not be empty");
    if (strchr(region, ':') || strlen(region) > 64)
        return bv_error_setf(errp, EINVAL, "region must be a region name");
    struct bv_s3 *s3 = calloc(1, sizeof(*s3));
    if (!s3)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    s3->endpoint = xstrdup(cfg->endpoint);
    s3->bucket = xstrdup(cfg->bucket);
    s3->region = xstrdup(region);
    s3->access_key = xstrdup(cfg->access_key);
    s3->secret_key = xstrdup(cfg->secret_key);
    snprintf(s3->sigv4, sizeof(s3->sigv4), "aws:amz:%s:s3", region);
    s3->part_size = cfg->part_size ? cfg->part_size : DEFAULT_PART;
    if (s3->part_size < MIN_PART)
        s3->part_size = MIN_PART;
    if (s3->part_size > MAX_PART)
        s3->part_size = MAX_PART;
    s3->parallel = cfg->parallel ? cfg->parallel : 4;
    if (s3->parallel > MAX_PARALLEL)
        s3->parallel = MAX_PARALLEL;
    s3->retries = cfg->retries < 0 ? 4 : cfg->retries;
    s3->timeout_s = cfg->timeout_s > 0 ? cfg->timeout_s : 30;
    if (!s3->endpoint || !s3->bucket || !s3->region || !s3->access_key || !s3->secret_key) {
        bv_s3_free(s3);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    *out = s3;
    return 0;
}

void bv_s3_free(struct bv_s3 *s3)
{
    if (!s3)
        return;
    free(s3->endpoint);
    free(s3->bucket);
    free(s3->region);
    if (s3->secret_key)
        explicit_bzero(s3->secret_key, strlen(s3->secret_key));
    free(s3->access_key);
    free(s3->secret_key);
    free(s3);
}

int bv_s3_check_bucket(struct bv_s3 *s3, bool create, bool object_lock, bv_error **errp)
{
    /* ListObjectsV2 with max-keys=0 proves the key and the bucket (a HEAD's 403/404 have no
     * body to tell a wrong key from a missing bucket). */
    struct req r = {.method = "GET", .query = "list-type=2&max-keys=0"};
    bv_error *err = NULL;
    int ret = request(s3, &r, &err);
    if (ret == -ENOENT && create) {
        bv_error_free(err);
        err = NULL;
        static const char *const lock_hdr[] = {"x-amz-bucket-object-lock-enabled: true", NULL};
        struct req mk = {.method = "PUT", .has_body = true,
                         .headers = object_lock ? lock_hdr : NULL};
        ret = request(s3, &mk, &err);
    }
    if (ret < 0)
        bv_error_propagate(errp, &err);
    return ret;
}

int bv_s3_put(struct bv_s3 *s3, const char *key, const void *buf, size_t len,
              bv_error **errp)
{
    char md5[64];
    if (content_md5(buf, len, md5, sizeof(md5)) < 0)
        return bv_error_setf(errp, EIO, "cannot compute an MD5");
    const char *hdrs[] = {md5, NULL};
    struct req r = {.method = "PUT", .key = key, .headers = hdrs, .body = buf,
                    .body_len = len, .has_body = true};
    return request(s3, &r, errp);
}

int bv_s3_get_range(struct bv_s3 *s3, const char *key, uint64_t offset, size_t len,
                    void *buf, bv_error **errp)
{
    if (len == 0)
        return 0;
    if (offset > UINT64_MAX - len)
        return bv_error_setf(errp, EINVAL, "range overflows");
    char range[96];
    snprintf(range, sizeof(range), "Range: bytes=%" PRIu64 "-%" PRIu64, offset,
             offset + len - 1);
    struct sink s = {.buf = buf, .cap = len, .max = len, .fixed = true};
    struct req r = {.method = "GET", .key = key, .range = range, .out = &s};
    int ret = request(s3, &r, errp);
    if (ret == 0 && s.len != len)
        ret = bv_error_setf(errp, EIO, "short read of '%s': %zu of %zu bytes at %" PRIu64,
                            key, s.len, len, offset);
    return ret;
}

int bv_s3_get(struct bv_s3 *s3, const char *key, size_t max, char **out, size_t *len,
              bv_error **errp)
{
    struct sink s = {.max = max};
    struct req r = {.method = "GET", .key = key, .out = &s};
    int ret = request(s3, &r, errp);
    if (ret == 0 && !s.buf) {
        s.buf = calloc(1, 1);
        if (!s.buf)
            ret = bv_error_setf(errp, ENOMEM, "out of memory");
    }
    if (ret < 0) {
        sink_free(&s);
        return ret;
    }
    *out = s.buf;
    *len = s.len;
    return 0;
}

int bv_s3_head(struct bv_s3 *s3, const char *key, uint64_t *size, bv_error **errp)
{
    struct req r = {.method = "HEAD", .key = key};
    bv_error *err = NULL;
    int ret = request(s3, &r, &err);
    if (ret == 0 && !r.have_length)
        ret = bv_error_setf(&err, EPROTO, "the remote sent no Content-Length for '%s'", key);
    if (ret == 0)
        *size = r.content_length;
    if (ret == -ENOENT && !errp)
        bv_error_free(err);
    else
        bv_error_propagate(errp, &err);
    return ret;
}

int bv_s3_delete(struct bv_s3 *s3, const char *key, bv_error **errp)
{
    struct req r = {.method = "DELETE", .key = key};
    return request(s3, &r, errp);
}

int bv_s3_put_retention(struct bv_s3 *s3, const char *key, const char *mode, const char *until,
                        bv_error **errp)
{
    char body[400], md5[64];
    int n = snprintf(body, sizeof(body),
                     "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>%s</Mode>"
                     "<RetainUntilDate>%s</RetainUntilDate></Retention>", mode, until);
    if (n < 0 || (size_t)n >= sizeof(body))
        return bv_error_setf(errp, EINVAL, "retention: mode or date too long");
    if (content_md5(body, (size_t)n, md5, sizeof(md5)) < 0)
        return bv_error_setf(errp, EIO, "cannot compute an MD5");
    const char *hdrs[] = {md5, "Content-Type: application/xml", NULL};
    struct req r = {.method = "PUT", .key = key, .query = "retention=", .headers = hdrs,
                    .body = body, .body_len = (size_t)n, .has_body = true};
    return request(s3, &r, errp);
}

int bv_s3_get_retention(struct bv_s3 *s3, const char *key, char *mode, size_t modelen,
                        char *until, size_t untillen, bv_error **errp)
{
    struct sink s = {.max = XML_BODY_MAX};
    struct req r = {.method = "GET", .key = key, .query = "retention=", .out = &s};
    int ret = request(s3, &r, errp);
    size_t p1 = 0, p2 = 0;
    if (ret == 0 && (!s.buf || !xml_find(s.buf, s.len, &p1, "Mode", mode, modelen) ||
                     !xml_find(s.buf, s.len, &p2, "RetainUntilDate", until, untillen)))
        ret = bv_error_setf(errp, EPROTO, "the remote's retention of '%s' has no Mode or "
                            "RetainUntilDate", key);
    sink_free(&s);
    return ret;
}

/* query value escaped for a URL (curl_easy_escape), NULL on ENOMEM */
static char *escape(const char *s)
{
    return curl_easy_escape(NULL, s, 0);
}

static int list_page(struct bv_s3 *s3, const char *query, bv_s3_list_fn fn, void *opaque,
                     char *token, size_t toklen, bv_error **errp)
{
    struct sink s = {.max = XML_BODY_MAX};
    struct req r = {.method = "GET", .query = query, .out = &s};
    int ret = request(s3, &r, errp);
    if (ret < 0)
        goto out;
    size_t pos = 0;
    for (;;) {
        char item[4096], key[1100], size[32];
        if (!s.buf || !xml_scan(s.buf, s.len, &pos, "Contents", item, sizeof(item), true))
            break;
        size_t ip = 0, sp = 0;
        if (!xml_find(item, strlen(item), &ip, "Key", key, sizeof(key)) ||
            !xml_find(item, strlen(item), &sp, "Size", size, sizeof(size))) {
            ret = bv_error_setf(errp, EPROTO, "the remote's listing has an entry without Key or Size");
            goto out;
        }
        char *end;
        errno = 0;
        unsigned long long sz = strtoull(size, &end, 10);
        if (errno || *end || end == size) {
            ret = bv_error_setf(errp, EPROTO, "the remote's listing has a bad Size '%s'", size);
            goto out;
        }
        ret = fn(opaque, key, sz);
        if (ret)
            goto out;
    }
    char trunc[16] = "";
    pos = 0;
    token[0] = '\0';
    if (s.buf && xml_find(s.buf, s.len, &pos, "IsTruncated", trunc, sizeof(trunc)) &&
        !strcmp(trunc, "true")) {
        pos = 0;
        if (!xml_find(s.buf, s.len, &pos, "NextContinuationToken", token, toklen) || !token[0])
            ret = bv_error_setf(errp, EPROTO, "the remote's truncated listing has no continuation token");
    }
out:
    sink_free(&s);
    return ret;
}

int bv_s3_list(struct bv_s3 *s3, const char *prefix, bv_s3_list_fn fn, void *opaque,
               bv_error **errp)
{
    char token[1024] = "";
    char *ep = escape(prefix ? prefix : "");
    if (!ep)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    int ret = 0;
    do {
        char *et = escape(token);
        char query[3 * 1024 + 2048];
        if (!et) {
            ret = bv_error_setf(errp, ENOMEM, "out of memory");
            break;
        }
        /* sorted: continuation-token < list-type < prefix */
        if (token[0])
            snprintf(query, sizeof(query), "continuation-token=%s&list-type=2&prefix=%s", et, ep);
        else
            snprintf(query, sizeof(query), "list-type=2&prefix=%s", ep);
        curl_free(et);
        ret = list_page(s3, query, fn, opaque, token, sizeof(token), errp);
    } while (ret == 0 && token[0]);
    curl_free(ep);
    return ret;
}

/* ---- multipart ---- */

struct mp {
    struct bv_s3 *s3;
    const char *key;
    const char *upload_id;
    int fd;
    uint64_t size;
    unsigned nparts;
    void (*progress)(void *opaque, uint64_t bytes);
    void *progress_opaque;
    const struct bv_s3_resume *rs;  /* may be NULL */
    pthread_mutex_t lock;     /* guards next, failed, err */
    unsigned next;            /* next part number to take (1-based) */
    bool failed;
    bv_error *err;
    char (*etags)[ETAG_MAX];  /* by part number - 1; each written by one thread */
};

static int put_part(struct mp *m, unsigned part, char *buf, bv_error **errp)
{
    uint64_t off = (uint64_t)(part - 1) * m->s3->part_size;
    size_t len = (size_t)(m->size - off < m->s3->part_size ? m->size - off : m->s3->part_size);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(m->fd, buf + got, len - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return bv_error_setf(errp, n < 0 ? errno : EIO, "reading part %u of '%s': %s", part,
                                 m->key, n < 0 ? strerror(errno) : "unexpected end of file");
        got += (size_t)n;
    }
    char md5[64], query[512];
    if (content_md5(buf, len, md5, sizeof(md5)) < 0)
        return bv_error_setf(errp, EIO, "cannot compute an MD5");
    snprintf(query, sizeof(query), "partNumber=%u&uploadId=%s", part, m->upload_id);
    const char *hdrs[] = {md5, NULL};
    struct req r = {.method = "PUT", .key = m->key, .query = query, .headers = hdrs,
                    .body = buf, .body_len = len, .has_body = true};
    int ret = request(m->s3, &r, errp);
    if (ret == 0 && !r.etag[0])
        ret = bv_error_setf(errp, EPROTO, "the remote sent no ETag for part %u of '%s'", part,
                            m->key);
    if (ret == 0)
        memcpy(m->etags[part - 1], r.etag, ETAG_MAX);
    if (ret == 0 && m->rs && m->rs->part_done)
        m->rs->part_done(m->rs->opaque, part, r.etag, len);
    if (ret == 0 && m->progress)
        m->progress(m->progress_opaque, len);
    return ret;
}

/* BV_TEST_S3_STALL_AFTER_PART=N (tests only): parts above N never start, so that a test can
 * kill the service in the middle of an upload at a known point. */
static void stall_for_tests(unsigned part)
{
    const char *v = getenv("BV_TEST_S3_STALL_AFTER_PART");
    if (!v || !v[0] || part <= (unsigned)strtoul(v, NULL, 10))
        return;
    for (;;)
        sleep(60);
}

static void *part_worker(void *opaque)
{
    struct mp *m = opaque;
    char *buf = malloc(m->s3->part_size);
    for (;;) {
        pthread_mutex_lock(&m->lock);
        unsigned part = m->failed || m->next > m->nparts ? 0 : m->next++;
        if (!buf && part) {
            m->failed = true;
            bv_error_setf(&m->err, ENOMEM, "out of memory for an upload buffer");
            part = 0;
        }
        pthread_mutex_unlock(&m->lock);
        if (!part)
            break;
        if (m->rs && m->rs->have_part &&
            m->rs->have_part(m->rs->opaque, part, m->etags[part - 1]))
            continue;
        stall_for_tests(part);
        bv_error *err = NULL;
        if (put_part(m, part, buf, &err) < 0) {
            pthread_mutex_lock(&m->lock);
            m->failed = true;
            bv_error_propagate(&m->err, &err);
            pthread_mutex_unlock(&m->lock);
            break;
        }
    }
    free(buf);
    return NULL;
}

static int mp_complete(struct mp *m, bv_error **errp)
{
    size_t cap = 64 + (size_t)m->nparts * (ETAG_MAX + 80);
    char *xml = malloc(cap);
    if (!xml)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    size_t o = (size_t)snprintf(xml, cap, "<CompleteMultipartUpload>");
    for (unsigned i = 0; i < m->nparts; i++)
        o += (size_t)snprintf(xml + o, cap - o,
                              "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", i + 1,
                              m->etags[i]);
    o += (size_t)snprintf(xml + o, cap - o, "</CompleteMultipartUpload>");
    char query[512];
    snprintf(query, sizeof(query), "uploadId=%s", m->upload_id);
    struct sink s = {.max = ERR_BODY_MAX};
    struct req r = {.method = "POST", .key = m->key, .query = query, .body = xml,
                    .body_len = o, .has_body = true, .out = &s};
    int ret = request(m->s3, &r, errp);
    /* a 200 may still carry an <Error> body (S3 sends it once the upload is assembled) */
    size_t pos = 0;
    char code[128];
    if (ret == 0 && s.buf && xml_find(s.buf, s.len, &pos, "Code", code, sizeof(code)))
        ret = bv_error_setf(errp, EIO, "completing the upload of '%s' failed: %s", m->key, code);
    sink_free(&s);
    free(xml);
    return ret;
}

static int mp_initiate(struct bv_s3 *s3, const char *key, char *id, size_t idlen,
                       bv_error **errp)
{
    struct sink s = {.max = ERR_BODY_MAX};
    struct req r = {.method = "POST", .key = key, .query = "uploads=", .has_body = true,
                    .out = &s};
    int ret = request(s3, &r, errp);
    size_t pos = 0;
    if (ret == 0 && (!s.buf || !xml_find(s.buf, s.len, &pos, "UploadId", id, idlen) || !id[0]))
        ret = bv_error_setf(errp, EPROTO, "the remote's reply to starting an upload has no UploadId");
    for (const char *p = id; ret == 0 && *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '-' || *p == '_' || *p == '.' || *p == '~'))
            ret = bv_error_setf(errp, EPROTO, "the remote sent an UploadId we cannot put in a URL");
    sink_free(&s);
    return ret;
}

int bv_s3_put_file(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                   void (*progress)(void *opaque, uint64_t bytes), void *opaque,
                   bv_error **errp)
{
    if (size <= s3->part_size) {
        char *buf = malloc(size ? size : 1);
        if (!buf)
            return bv_error_setf(errp, ENOMEM, "out of memory");
        int ret = 0;
        size_t got = 0;
        while (ret == 0 && got < size) {
            ssize_t n = pread(fd, buf + got, size - got, (off_t)got);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                ret = bv_error_setf(errp, n < 0 ? errno : EIO, "reading '%s' to upload: %s",
                                    key, n < 0 ? strerror(errno) : "unexpected end of file");
            else
                got += (size_t)n;
        }
        if (ret == 0)
            ret = bv_s3_put(s3, key, buf, size, errp);
        if (ret == 0 && progress)
            progress(opaque, size);
        free(buf);
        return ret;
    }
    return bv_s3_put_file_resumable(s3, key, fd, size, progress, opaque, NULL, errp);
}

int bv_s3_put_file_resumable(struct bv_s3 *s3, const char *key, int fd, uint64_t size,
                             void (*progress)(void *opaque, uint64_t bytes), void *opaque,
                             const struct bv_s3_resume *rs, bv_error **errp)
{
    if (size <= s3->part_size)
        return bv_s3_put_file(s3, key, fd, size, progress, opaque, errp);
    uint64_t nparts = (size + s3->part_size - 1) / s3->part_size;
    if (nparts > MAX_PARTS)
        return bv_error_setf(errp, EFBIG, "'%s' needs %" PRIu64 " parts of %zu bytes (at most %u)",
                             key, nparts, s3->part_size, MAX_PARTS);
    char id[256];
    int ret = 0;
    if (rs && rs->upload_id) {
        snprintf(id, sizeof(id), "%s", rs->upload_id);
    } else {
        ret = mp_initiate(s3, key, id, sizeof(id), errp);
        if (ret == 0 && rs && rs->started)
            rs->started(rs->opaque, id);
    }
    if (ret < 0)
        return ret;
    struct mp m = {.s3 = s3, .key = key, .upload_id = id, .fd = fd, .size = size,
                   .nparts = (unsigned)nparts, .next = 1, .progress = progress,
                   .progress_opaque = opaque, .rs = rs};
    m.etags = calloc(nparts, ETAG_MAX);
    pthread_mutex_init(&m.lock, NULL);
    pthread_t th[MAX_PARALLEL];
    unsigned nth = 0;
    if (!m.etags) {
        m.failed = true;
        bv_error_setf(&m.err, ENOMEM, "out of memory");
    }
    for (unsigned i = 0; !m.failed && i < s3->parallel && i < nparts; i++)
        if (pthread_create(&th[nth], NULL, part_worker, &m) == 0)
            nth++;
    if (nth == 0 && !m.failed) {
        m.failed = true;
        bv_error_setf(&m.err, EAGAIN, "cannot start upload threads");
    }
    for (unsigned i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    if (!m.failed)
        ret = mp_complete(&m, &m.err);
    else
        ret = -(m.err ? m.err->err : EIO);
    if (ret < 0 && !rs) {
        char query[512];
        snprintf(query, sizeof(query), "uploadId=%s", id);
        struct req r = {.method = "DELETE", .key = key, .query = query};
        request(s3, &r, NULL);
    }
    if (ret < 0)
        bv_error_propagate(errp, &m.err);
    bv_error_free(m.err);
    pthread_mutex_destroy(&m.lock);
    free(m.etags);
    return ret;
}
