/* See s3_util.h. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "s3_util.h"

static size_t collect(char *d, size_t s, size_t n, void *opaque)
{
    return fwrite(d, s, n, opaque);
}

long s3u_request(const struct rgw_env *g, const char *method, const char *path,
                 const void *body, size_t blen, char **out, size_t *len)
{
    char url[1024], user[300];
    snprintf(url, sizeof(url), "%s/%s", g->endpoint, path);
    snprintf(user, sizeof(user), "%s:%s", g->access_key, g->secret_key);
    bool head = strcmp(method, "HEAD") == 0;
    CURL *c = curl_easy_init();
    struct curl_slist *h = curl_slist_append(NULL, "x-amz-content-sha256: UNSIGNED-PAYLOAD");
    if (body)
        h = curl_slist_append(h, "Content-Type: application/octet-stream");
    char *buf = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&buf, &n);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_AWS_SIGV4, "aws:amz:us-east-1:s3");
    curl_easy_setopt(c, CURLOPT_USERPWD, user);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_NOBODY, head ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, f);
    if (!head && strcmp(method, "GET") != 0)
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    }
    long status = -1;
    curl_off_t cl = -1;
    if (curl_easy_perform(c) == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(c, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    }
    fclose(f);
    curl_slist_free_all(h);
    curl_easy_cleanup(c);
    if (len)
        *len = head ? (size_t)(cl < 0 ? 0 : cl) : n;
    if (out)
        *out = buf;
    else
        free(buf);
    return status;
}
