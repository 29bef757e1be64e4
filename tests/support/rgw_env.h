/*
 * A RADOS Gateway for a test process: the one named by BV_S3_ENDPOINT/BV_S3_ACCESS_KEY/
 * BV_S3_SECRET_KEY when set (so several tests can share one), else a throw-away single-node
 * Ceph started with tests/support/ceph-rgw.sh in a temporary directory and stopped by
 * rgw_env_stop().  rgw_env_start() returns 77 when the gateway cannot be had (the script's
 * reason is on stderr), so a test can exit(77) = skipped.  Header-only: unit and e2e tests
 * include it.
 */
#ifndef BV_TEST_RGW_ENV_H
#define BV_TEST_RGW_ENV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

struct rgw_env {
    char endpoint[128];
    char access_key[128];
    char secret_key[128];
    char dir[256];      /* non-empty: we started it (and stop it) */
    char ctl_dir[256];  /* where stop-rgw/start-rgw act: dir, or the shared fixture's */
};

/* BV_S3_ENV_FILE (ctest's fixture, see tests/CMakeLists.txt): the shared gateway's env file. */
static inline int rgw_env_from_file(struct rgw_env *g, const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "rgw_env: %s is missing (did the rgw/start fixture run?): skipping\n",
                path);
        return 77;
    }
    char line[512];
    int rc = 0;
    while (fgets(line, sizeof(line), f)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "BV_S3_UNAVAILABLE=", 18)) {
            fprintf(stderr, "rgw_env: no RADOS Gateway (%s)\n", line + 18);
            rc = 77;
        } else if (!strncmp(line, "BV_S3_ENDPOINT=", 15)) {
            snprintf(g->endpoint, sizeof(g->endpoint), "%s", line + 15);
        } else if (!strncmp(line, "BV_S3_ACCESS_KEY=", 17)) {
            snprintf(g->access_key, sizeof(g->access_key), "%s", line + 17);
        } else if (!strncmp(line, "BV_S3_SECRET_KEY=", 17)) {
            snprintf(g->secret_key, sizeof(g->secret_key), "%s", line + 17);
        } else if (!strncmp(line, "BV_S3_DIR=", 10)) {
            snprintf(g->ctl_dir, sizeof(g->ctl_dir), "%s", line + 10);
        }
    }
    fclose(f);
    return rc == 0 && !g->endpoint[0] ? 77 : rc;
}

static inline int rgw_env_start(struct rgw_env *g)
{
    memset(g, 0, sizeof(*g));
    const char *file = getenv("BV_S3_ENV_FILE");
    if (file && file[0])
        return rgw_env_from_file(g, file);
    const char *e = getenv("BV_S3_ENDPOINT"), *a = getenv("BV_S3_ACCESS_KEY"),
               *s = getenv("BV_S3_SECRET_KEY");
    if (e && a && s) {
        snprintf(g->endpoint, sizeof(g->endpoint), "%s", e);
        snprintf(g->access_key, sizeof(g->access_key), "%s", a);
        snprintf(g->secret_key, sizeof(g->secret_key), "%s", s);
        return 0;
    }
    const char *src = getenv("BV_SOURCE_DIR");
    char tmpl[] = "/tmp/bv-rgw.XXXXXX";
    if (!src || !mkdtemp(tmpl)) {
        fprintf(stderr, "rgw_env: BV_SOURCE_DIR is not set or no temporary directory\n");
        return 77;
    }
    rmdir(tmpl);    /* the script creates it */
    snprintf(g->dir, sizeof(g->dir), "%s", tmpl);
    snprintf(g->ctl_dir, sizeof(g->ctl_dir), "%s", tmpl);
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/support/ceph-rgw.sh' start '%s'", src, g->dir);
    FILE *p = popen(cmd, "r");
    if (!p)
        return 77;
    char line[512];
    while (fgets(line, sizeof(line), p)) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "BV_S3_ENDPOINT=", 15))
            snprintf(g->endpoint, sizeof(g->endpoint), "%s", line + 15);
        else if (!strncmp(line, "BV_S3_ACCESS_KEY=", 17))
            snprintf(g->access_key, sizeof(g->access_key), "%s", line + 17);
        else if (!strncmp(line, "BV_S3_SECRET_KEY=", 17))
            snprintf(g->secret_key, sizeof(g->secret_key), "%s", line + 17);
    }
    int st = pclose(p);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !g->endpoint[0]) {
        fprintf(stderr, "rgw_env: no RADOS Gateway (ceph-rgw.sh start exited %d): skipping\n",
                WIFEXITED(st) ? WEXITSTATUS(st) : -1);
        g->dir[0] = g->ctl_dir[0] = '\0';
        return 77;
    }
    return 0;
}

/* "stop-rgw" / "start-rgw": only for a gateway the tests own (ours or the fixture's; returns 77
 * for an external one), else the script's exit status. */
static inline int rgw_env_ctl(struct rgw_env *g, const char *verb)
{
    if (!g->ctl_dir[0])
        return 77;
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/support/ceph-rgw.sh' %s '%s'",
             getenv("BV_SOURCE_DIR"), verb, g->ctl_dir);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static inline void rgw_env_stop(struct rgw_env *g)
{
    if (!g->dir[0])
        return;
    const char *src = getenv("BV_SOURCE_DIR");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "bash '%s/tests/support/ceph-rgw.sh' stop '%s'", src, g->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "rgw_env: stopping the gateway in %s failed\n", g->dir);
    g->dir[0] = '\0';
}

#endif
