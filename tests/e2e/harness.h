/*
 * End-to-end harness: starts the built daemon (BV_DAEMON) on port 0 with a
 * temporary data directory, waits for /health, and offers small JSON call
 * helpers over libcurl.  The daemon always dies with the test: it is
 * stopped in bvh_stop(), and PR_SET_PDEATHSIG kills it if the test crashes.
 *
 * Tests skip (exit 77) when the daemon binary is missing.
 */
#ifndef BV_E2E_HARNESS_H
#define BV_E2E_HARNESS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <cjson/cJSON.h>

struct bvh {
    pid_t pid;
    unsigned port;
    char dir[256];             /* data directory (removed by bvh_stop unless keep_dir) */
    char images[300];          /* <dir>/images */
    char base[64];             /* http://127.0.0.1:PORT (https:// when the daemon serves TLS) */
    bool tls;                  /* the daemon printed "listening on https://" */
    char tls_fingerprint[128]; /* what it printed after "tls fingerprint sha256 " */
    const char *cainfo;        /* CA file for https (NULL: <dir>/tls/cert.pem) */
    const char *token;         /* sent as Bearer when set */
    bool keep_dir;
    bool path_as_is;           /* send paths as written: curl folds no "." or ".." segments */
    const char *const *args;   /* the extra daemon arguments of bvh_start (borrowed) */
};

struct bvh_opts {
    const char *token_file;    /* --token-file */
    const char *listen;        /* default 127.0.0.1:0 */
    const char *data_dir;      /* reuse a directory (restart); default: a new temp dir */
    const char *const *args;   /* more daemon arguments (NULL-terminated, at most 8), kept for
                                  bvh_restart */
};

/* Start a daemon; returns 0, or -1 with a message on stderr. */
int bvh_start(struct bvh *h, const struct bvh_opts *o);
/* SIGTERM, wait (up to 10 s, then SIGKILL); returns the exit status (or -1).
 * Removes the data directory unless h->keep_dir. */
int bvh_stop(struct bvh *h);
/* kill -9 without clean-up of the directory (to simulate a crash). */
void bvh_kill9(struct bvh *h);
/* Stop (or after kill9) and start again on the same data directory. */
int bvh_restart(struct bvh *h);

struct bvh_resp {
    long status;
    char *body;
    size_t len;
    cJSON *json;               /* parsed body when it is JSON, else NULL */
};
void bvh_resp_free(struct bvh_resp *r);

/* Raw call.  body may be NULL; ctype defaults to application/json. */
int bvh_request(struct bvh *h, const char *method, const char *path, const void *body,
                size_t len, const char *ctype, const char *const *headers,
                struct bvh_resp *r);

/* JSON call with a printf body (fmt NULL for no body); asserts the status
 * (cmocka) and returns the parsed JSON (caller frees; may be NULL for 204). */
cJSON *bvh_json(struct bvh *h, const char *method, long expect_status, const char *path,
                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A blkverify drive `id` whose reads all mismatch from sector 0 on: `test`, a
 * new 1 MiB qcow2 image (zeros), against `ref`, a 1 MiB raw file of 0xcd bytes
 * written into h->images.  Asserts each step. */
void bvh_blkverify_mismatch_drive(struct bvh *h, const char *id, const char *test,
                                  const char *ref);

/* Asserts r is the contract's error envelope with this status and class. */
void bvh_assert_error(const struct bvh_resp *r, long status, const char *cls);

/* Convenience getters on a JSON object (assert the member exists). */
double bvh_num(const cJSON *o, const char *key);
const char *bvh_str(const cJSON *o, const char *key);
bool bvh_bool(const cJSON *o, const char *key);

/* Run a shell command; returns its exit status. */
int bvh_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Is this program on PATH? */
bool bvh_have(const char *prog);

#endif
