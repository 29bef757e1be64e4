/*
 * bvimg: entry point, subcommand table and the helpers every subcommand
 * shares (format and size parsing, opening images, error printing, human
 * sizes, JSON strings).  The syntax and exit codes mirror qemu-img so that
 * scripts and tests can swap one for the other; see usage() for the subset.
 */
#include "tools/bvimg.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
} commands[] = {
    { "create",  bvimg_cmd_create },
    { "info",    bvimg_cmd_info },
    { "check",   bvimg_cmd_check },
    { "compare", bvimg_cmd_compare },
    { "convert", bvimg_cmd_convert },
    { "rebase",  bvimg_cmd_rebase },
    { "map",     bvimg_cmd_map },
    { "io",      bvimg_cmd_io },
};

static void usage(FILE *f)
{
    fputs("usage: bvimg COMMAND [OPTIONS] ...\n"
          "  create -f FMT [-o cluster_size=N[,compat=0.10|1.1][,compression_type=zlib|zstd]\n"
          "         [,extended_l2=on|off]] [-b BACKING -F FMT] FILE [SIZE]\n"
          "  info [-f FMT] [--output=human|json] FILE\n"
          "  check [-f FMT] [-r leaks] [--output=human|json] FILE\n"
          "  compare [-f FMT] [-F FMT] [-s] [-q] FILE1 FILE2\n"
          "  convert [-c] [-f FMT] -O FMT [-o cluster_size=N,compression_type=..,extended_l2=..]\n"
          "          [-t CACHE] [-q] SRC DST\n"
          "  rebase -u -b BACKING [-F FMT] [-f FMT] FILE\n"
          "  map [-f FMT] [--output=human|json] FILE\n"
          "  io [-f FMT] [-r] -c CMD [-c CMD ...] FILE\n"
          "io commands: write [-P PAT|-z] OFF LEN, read [-P PAT] OFF LEN, discard OFF LEN, flush\n"
          "FMT is raw or qcow2; sizes take k, M, G, T suffixes (powers of 1024).\n", f);
}

void bvimg_errorf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bvimg: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

void bvimg_report(bv_error *e, int ret, const char *prefix)
{
    const char *msg = e ? e->msg : strerror(ret < 0 ? -ret : ret);
    if (prefix)
        bvimg_errorf("%s: %s", prefix, msg);
    else
        bvimg_errorf("%s", msg);
    bv_error_free(e);
}

int bvimg_bad_option(const char *cmd, int opt, const char *arg)
{
    if (opt == ':')
        bvimg_errorf("%s: option '%s' requires an argument", cmd, arg);
    else
        bvimg_errorf("%s: invalid option '%s'", cmd, arg);
    return 1;
}

bool bvimg_parse_format(const char *name, enum bv_format *out)
{
    if (!name) {
        *out = BV_FMT_NONE;
        return true;
    }
    *out = bv_format_parse(name);
    if (*out == BV_FMT_NONE) {
        bvimg_errorf("Unknown file format '%s'", name);
        return false;
    }
    return true;
}

static int size_shift(char c)
{
    static const char suffixes[] = "KMGTPE";
    const char *p = c ? strchr(suffixes, c >= 'a' ? c - 'a' + 'A' : c) : NULL;
    return p ? 10 * (int)(p - suffixes + 1) : -1;
}

bool bvimg_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    if (s[0] < '0' || s[0] > '9')
        goto bad;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno)
        goto bad;
    if (*end) {
        int shift = size_shift(*end);
        if (shift < 0 || end[1] || v > (UINT64_MAX >> shift))
            goto bad;
        v <<= shift;
    }
    *out = v;
    return true;
bad:
    bvimg_errorf("Invalid image size specified. You may use k, M, G, T, P or E suffixes "
                 "for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
    return false;
}

/* key is one of the comma-separated names in allowed */
static bool key_allowed(const char *allowed, const char *key)
{
    size_t n = strlen(key);
    for (const char *p = allowed; n && (p = strstr(p, key)); p += n)
        if ((p == allowed || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
            return true;
    return false;
}

/* One "-o key=value" whose key is allowed: 1 set, 0 refused (printed),
 * -1 not a key this parser knows. */
static int parse_o_value(const char *k, const char *v, struct bvimg_opts *o)
{
    uint64_t n;
    if (!strcmp(k, "cluster_size")) {
        if (!bvimg_parse_size(v, &n))
            return 0;
        /* 0 means "default" in the engine's options, but an explicit 0 (or one past
         * 32 bits) is a size qemu-img refuses: pass one the engine refuses in its words */
        o->cluster_size = n == 0 ? 1 : n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    } else if (!strcmp(k, "compat")) {
        o->compat_v2 = !strcmp(v, "0.10") || !strcmp(v, "v2");
        if (!o->compat_v2 && strcmp(v, "1.1") && strcmp(v, "v3")) {
            bvimg_errorf("Invalid compatibility level: '%s'", v);
            return 0;
        }
    } else if (!strcmp(k, "compression_type")) {
        o->compression_zstd = !strcmp(v, "zstd");
        if (!o->compression_zstd && strcmp(v, "zlib")) {
            bvimg_errorf("Invalid parameter '%s' for compression_type", v);
            return 0;
        }
    } else if (!strcmp(k, "extended_l2")) {
        o->extended_l2 = !strcmp(v, "on");
        if (!o->extended_l2 && strcmp(v, "off")) {
            bvimg_errorf("Parameter 'extended_l2' expects 'on' or 'off'");
            return 0;
        }
    } else if (!strcmp(k, "backing_file")) {
        o->backing_file = v;
    } else if (!strcmp(k, "backing_fmt")) {
        o->backing_fmt = v;
    } else {
        return -1;
    }
    return 1;
}

bool bvimg_parse_o(char *str, const char *allowed, struct bvimg_opts *o)
{
    char *save = NULL;
    for (char *kv = strtok_r(str, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (eq)
            *eq = '\0';
        int r = eq && key_allowed(allowed, kv) ? parse_o_value(kv, eq + 1, o) : -1;
        if (r < 0)
            bvimg_errorf("Invalid option '%s' (accepted: %s)", kv, allowed);
        if (r <= 0)
            return false;
    }
    return true;
}

int bvimg_open(const char *path, enum bv_format fmt, bool read_only, bool no_backing,
               bv_node **out)
{
    struct bv_open_opts o = {
        .path = path, .format = fmt, .read_only = read_only, .no_backing = no_backing,
    };
    bv_error *err = NULL;
    int r = bv_node_open(&o, out, &err);
    if (r < 0) {
        char prefix[300];
        snprintf(prefix, sizeof(prefix), "Could not open '%s'", path);
        bvimg_report(err, r, prefix);
    }
    return r;
}

void bvimg_human_size(uint64_t v, char *buf, unsigned len)
{
    static const char *const suffixes[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
    /* switch to the next unit once the integer part would reach 1000 */
    double d = (double)v * 1.024;
    int e = 0;
    while (d >= 2.0) {
        d /= 2.0;
        e++;
    }
    int i = e / 10;
    snprintf(buf, len, "%0.3g %sB", (double)v / (double)(1ULL << (i * 10)), suffixes[i]);
}

void bvimg_json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    bvimg_errorf("Command not found: %s", argv[1]);
    usage(stderr);
    return 1;
}
