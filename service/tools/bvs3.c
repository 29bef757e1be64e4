/*
 * bvs3: the service's S3 client from the command line, for administrators and the bench
 * (bench/bench_s3.sh): fetch an object a remote holds — a backup link, a manifest — into a
 * file with parallel ranged GETs, as the service reads links from a bucket.
 *
 *   BV_S3_ACCESS_KEY=… BV_S3_SECRET_KEY=… \
 *   bvs3 get [--region R] [--part-size BYTES] [--parallel N] ENDPOINT BUCKET KEY FILE
 *
 * The keys come from the environment only (never the command line, which other users see).
 * FILE is created (or truncated) with mode 0600.  Exit status 0, or 1 with the client's
 * sentence on stderr (a wrong key says "the remote refused the credentials").
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "s3/s3.h"
#include "s3/s3get.h"

static int usage(void)
{
    fprintf(stderr, "usage: bvs3 get [--region R] [--part-size BYTES] [--parallel N] "
            "ENDPOINT BUCKET KEY FILE\n(keys from BV_S3_ACCESS_KEY and BV_S3_SECRET_KEY)\n");
    return 2;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static bool parse_num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || end == s || v > max)
        return false;
    *out = v;
    return true;
}

static int get(int argc, char **argv)
{
    struct bv_s3_config cfg = { .region = "us-east-1" };
    struct bv_s3_get_opts go = {0};
    int i = 0;
    unsigned long long v;
    for (; i < argc && !strncmp(argv[i], "--", 2); i += 2) {
        if (i + 1 >= argc)
            return usage();
        if (!strcmp(argv[i], "--region"))
            cfg.region = argv[i + 1];
        else if (!strcmp(argv[i], "--part-size") && parse_num(argv[i + 1], 512u << 20, &v))
            go.part_size = (size_t)v;
        else if (!strcmp(argv[i], "--parallel") && parse_num(argv[i + 1], 16, &v))
            go.parallel = (unsigned)v;
        else
            return usage();
    }
    if (argc - i != 4)
        return usage();
    cfg.endpoint = argv[i];
    cfg.bucket = argv[i + 1];
    cfg.access_key = getenv("BV_S3_ACCESS_KEY");
    cfg.secret_key = getenv("BV_S3_SECRET_KEY");
    if (!cfg.access_key || !cfg.secret_key) {
        fprintf(stderr, "bvs3: set BV_S3_ACCESS_KEY and BV_S3_SECRET_KEY\n");
        return 2;
    }
    struct bv_s3 *s3 = NULL;
    bv_error *e = NULL;
    int fd = -1;
    uint64_t size = 0;
    double t0 = now();
    int r = bv_s3_new(&cfg, &s3, &e);
    if (r == 0) {
        fd = open(argv[i + 3], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            r = bv_error_setf(&e, errno, "cannot create %s: %s", argv[i + 3], strerror(errno));
    }
    if (r == 0)
        r = bv_s3_get_file(s3, argv[i + 2], fd, UINT64_MAX, &go, &size, &e);
    if (fd >= 0 && close(fd) < 0 && r == 0)
        r = bv_error_setf(&e, errno, "cannot write %s: %s", argv[i + 3], strerror(errno));
    bv_s3_free(s3);
    if (r < 0) {
        fprintf(stderr, "bvs3: %s\n", e ? e->msg : strerror(-r));
        bv_error_free(e);
        return 1;
    }
    double dt = now() - t0;
    printf("%llu bytes in %.3f s (%.1f MiB/s)\n", (unsigned long long)size, dt,
           dt > 0 ? (double)size / 1048576.0 / dt : 0.0);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "get"))
        return get(argc - 2, argv + 2);
    return usage();
}
