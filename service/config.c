/*
 * `blockvault serve` options.  The rule that matters for safety: a listen
 * address that is not loopback needs a token and TLS, so that a backup
 * appliance is never exposed unauthenticated (or its token in clear text) by
 * a typo.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define MAX_TOKEN_BYTES 4096

bool bv_config_is_loopback(const char *addr)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, addr, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6);
    return false;
}

static int parse_addr_port(const char *flag, const char *s, char addr[64], uint16_t *pport,
                           char *err, size_t errlen)
{
    const char *colon = strrchr(s, ':');
    const char *host = s;
    size_t hostlen;
    if (!colon) {
        snprintf(err, errlen, "%s wants ADDR:PORT, got '%s'", flag, s);
        return -1;
    }
    hostlen = (size_t)(colon - s);
    if (hostlen >= 2 && s[0] == '[' && s[hostlen - 1] == ']') {
        host++;
        hostlen -= 2;
    }
    if (hostlen == 0 || hostlen >= 64) {
        snprintf(err, errlen, "%s: bad address in '%s'", flag, s);
        return -1;
    }
    memcpy(addr, host, hostlen);
    addr[hostlen] = '\0';
    if (strcmp(addr, "localhost") == 0)
        strcpy(addr, "127.0.0.1");
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535) {
        snprintf(err, errlen, "%s: bad port in '%s'", flag, s);
        return -1;
    }
    *pport = (uint16_t)port;
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, addr, &a4) != 1 && inet_pton(AF_INET6, addr, &a6) != 1) {
        snprintf(err, errlen, "%s: '%s' is not a numeric IP address", flag, addr);
        return -1;
    }
    return 0;
}

static int parse_listen(const char *s, struct bv_config *cfg, char *err, size_t errlen)
{
    return parse_addr_port("--listen", s, cfg->listen_addr, &cfg->port, err, errlen);
}

static int parse_nbd_listen(const char *s, struct bv_config *cfg, char *err, size_t errlen)
{
    cfg->nbd_tcp = true;
    return parse_addr_port("--nbd-listen", s, cfg->nbd_addr, &cfg->nbd_port, err, errlen);
}

static bool is_blank(char c)
{
    return c == '\n' || c == '\r' || c == ' ' || c == '\t' || c == '\v' || c == '\f';
}

/* Strip white space at both ends, in place (a token file usually ends in a
 * newline; a blank token must come out empty so that it is refused). */
static char *trim_token(char *t)
{
    size_t n = strlen(t), start = 0;
    while (n && is_blank(t[n - 1]))
        t[--n] = '\0';
    while (start < n && is_blank(t[start]))
        start++;
    memmove(t, t + start, n - start + 1);
    return t;
}

/* The token from the environment; set but blank is an error, never "no auth"
 * nor an empty token. */
static int read_token_env(struct bv_config *cfg, char *err, size_t errlen)
{
    const char *env = getenv("BLOCKVAULT_TOKEN");
    if (!env)
        return 0;
    cfg->token = strndup(env, MAX_TOKEN_BYTES);
    if (!cfg->token) {
        snprintf(err, errlen, "out of memory reading BLOCKVAULT_TOKEN");
        return -1;
    }
    if (!trim_token(cfg->token)[0]) {
        snprintf(err, errlen, "BLOCKVAULT_TOKEN is set but empty or blank; set a token or "
                 "unset the variable");
        return -1;
    }
    return 0;
}

static int read_token_file(const char *path, struct bv_config *cfg, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "cannot read --token-file %s: %s", path, strerror(errno));
        return -1;
    }
    char *buf = calloc(1, MAX_TOKEN_BYTES + 1);
    size_t n = buf ? fread(buf, 1, MAX_TOKEN_BYTES, f) : 0;
    fclose(f);
    if (!buf)
        return -1;
    buf[n] = '\0';
    trim_token(buf);
    if (!buf[0]) {
        free(buf);
        snprintf(err, errlen, "--token-file %s is empty or blank", path);
        return -1;
    }
    cfg->token = buf;
    return 0;
}

static int parse_workers(const char *s, struct bv_config *cfg, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (errno || *end || n < 1 || n > 64) {
        snprintf(err, errlen, "--workers wants a number from 1 to 64, got '%s'", s);
        return -1;
    }
    cfg->workers = (unsigned)n;
    return 0;
}

/* --notify-retry-ms, --notify-attempts, --space-low-percent (runtime/notify.h). */
enum { OPT_NOTIFY_RETRY_MS = 1000, OPT_NOTIFY_ATTEMPTS, OPT_SPACE_LOW_PERCENT };

static int parse_uint(const char *s, const char *what, unsigned long min, unsigned long max,
                      unsigned *out, char *err, size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long n = strtoul(s, &end, 10);
    if (errno || *end || !*s || s[0] == '-' || n < min || n > max) {
        snprintf(err, errlen, "%s wants a number from %lu to %lu, got '%s'", what, min, max, s);
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

static int copy_dir(char *dst, size_t cap, const char *src, const char *what,
                    char *err, size_t errlen)
{
    if (!src[0] || strlen(src) >= cap) {
        snprintf(err, errlen, "%s: bad directory '%s'", what, src);
        return -1;
    }
    strcpy(dst, src);
    return 0;
}

/* TLS flags fit together, and a non-loopback address has TLS as well as a
 * token: a bearer token sent in clear text over a network is no protection. */
static int check_tls(const struct bv_config *cfg, char *err, size_t errlen)
{
    bool files = cfg->tls_cert[0] || cfg->tls_key[0];
    if (files && (!cfg->tls_cert[0] || !cfg->tls_key[0])) {
        snprintf(err, errlen, "--tls-cert and --tls-key go together");
        return -1;
    }
    if (files && cfg->tls_self_signed) {
        snprintf(err, errlen, "--tls-self-signed and --tls-cert/--tls-key exclude each other");
        return -1;
    }
    if (!files && !cfg->tls_self_signed && !bv_config_is_loopback(cfg->listen_addr)) {
        snprintf(err, errlen, "refusing to listen on non-loopback address %s without TLS "
                 "(use --tls-cert/--tls-key or --tls-self-signed)", cfg->listen_addr);
        return -1;
    }
    return 0;
}

int bv_config_parse(int argc, char **argv, struct bv_config *cfg, char *err, size_t errlen)
{
    static const struct option opts[] = {
        { "listen", required_argument, NULL, 'l' },
        { "data", required_argument, NULL, 'd' },
        { "token-file", required_argument, NULL, 't' },
        { "workers", required_argument, NULL, 'w' },
        { "web", required_argument, NULL, 'W' },
        { "verbose", no_argument, NULL, 'v' },
        { "timezone", required_argument, NULL, 'z' },
        { "test-clock", required_argument, NULL, 'T' },
        { "nbd-listen", required_argument, NULL, 'N' },
        { "nbd-tls-psk", required_argument, NULL, 'P' },
        { "qmp-dir", required_argument, NULL, 'Q' },
        { "tls-cert", required_argument, NULL, 'C' },
        { "tls-key", required_argument, NULL, 'K' },
        { "tls-self-signed", no_argument, NULL, 'S' },
        { "notify-retry-ms", required_argument, NULL, OPT_NOTIFY_RETRY_MS },
        { "notify-attempts", required_argument, NULL, OPT_NOTIFY_ATTEMPTS },
        { "space-low-percent", required_argument, NULL, OPT_SPACE_LOW_PERCENT },
        { "history-days", required_argument, NULL, 'H' },
        { 0 },
    };
    memset(cfg, 0, sizeof(*cfg));
    strcpy(cfg->listen_addr, "127.0.0.1");
    cfg->port = 8080;
    strcpy(cfg->data_dir, "./var");
    snprintf(cfg->web_dir, sizeof(cfg->web_dir), "%s", BV_WEB_DIR);
    cfg->workers = 2;
    cfg->notify_retry_ms = 30000;
    cfg->notify_attempts = 8;
    cfg->space_low_percent = 10;
    cfg->history_days = 90;
    const char *token_file = NULL;
    int c, r = 0;
    optind = 1;
    opterr = 0;
    while (r == 0 && (c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l': r = parse_listen(optarg, cfg, err, errlen); break;
        case 'd': r = copy_dir(cfg->data_dir, sizeof(cfg->data_dir), optarg, "--data", err, errlen); break;
        case 'W': r = copy_dir(cfg->web_dir, sizeof(cfg->web_dir), optarg, "--web", err, errlen); break;
        case 't': token_file = optarg; break;
        case 'w': r = parse_workers(optarg, cfg, err, errlen); break;
        case 'v': cfg->verbose = true; break;
        case 'N': r = parse_nbd_listen(optarg, cfg, err, errlen); break;
        case 'P':
            r = copy_dir(cfg->nbd_tls_psk, sizeof(cfg->nbd_tls_psk), optarg, "--nbd-tls-psk",
                         err, errlen);
            break;
        case 'Q':
            r = copy_dir(cfg->qmp_dir, sizeof(cfg->qmp_dir), optarg, "--qmp-dir", err, errlen);
            break;
        case 'C':
            r = copy_dir(cfg->tls_cert, sizeof(cfg->tls_cert), optarg, "--tls-cert", err, errlen);
            break;
        case 'K':
            r = copy_dir(cfg->tls_key, sizeof(cfg->tls_key), optarg, "--tls-key", err, errlen);
            break;
        case 'S': cfg->tls_self_signed = true; break;
        case OPT_NOTIFY_RETRY_MS:
            r = parse_uint(optarg, "--notify-retry-ms", 10, 3600000, &cfg->notify_retry_ms, err,
                           errlen);
            break;
        case OPT_NOTIFY_ATTEMPTS:
            r = parse_uint(optarg, "--notify-attempts", 1, 100, &cfg->notify_attempts, err,
                           errlen);
            break;
        case OPT_SPACE_LOW_PERCENT:
            r = parse_uint(optarg, "--space-low-percent", 0, 99, &cfg->space_low_percent, err,
                           errlen);
            break;
        case 'H':
            r = parse_uint(optarg, "--history-days", 0, 36500, &cfg->history_days, err, errlen);
            break;
        case 'z':
            if (strlen(optarg) >= sizeof(cfg->timezone)) {
                snprintf(err, errlen, "--timezone: name too long");
                r = -1;
            } else {
                snprintf(cfg->timezone, sizeof(cfg->timezone), "%s", optarg);
            }
            break;
        case 'T': {
            char *end;
            long long v = strtoll(optarg, &end, 10);
            if (*end || v <= 0 || v > (1LL << 40)) {
                snprintf(err, errlen, "--test-clock wants unix seconds, got '%s'", optarg);
                r = -1;
            } else {
                cfg->test_clock = true;
                cfg->test_clock_start = v;
            }
            break;
        }
        default:
            snprintf(err, errlen, "unknown or incomplete option '%s'", argv[optind - 1]);
            r = -1;
        }
    }
    if (r == 0 && optind < argc) {
        snprintf(err, errlen, "unexpected argument '%s'", argv[optind]);
        r = -1;
    }
    if (r == 0 && token_file)
        r = read_token_file(token_file, cfg, err, errlen);
    if (r == 0 && !cfg->token)
        r = read_token_env(cfg, err, errlen);
    if (r == 0 && !cfg->token && !bv_config_is_loopback(cfg->listen_addr)) {
        snprintf(err, errlen, "refusing to listen on non-loopback address %s without a token "
                 "(use --token-file or BLOCKVAULT_TOKEN)", cfg->listen_addr);
        r = -1;
    }
    if (r == 0)
        r = check_tls(cfg, err, errlen);
    if (r < 0)
        bv_config_free(cfg);
    return r;
}

void bv_config_free(struct bv_config *cfg)
{
    free(cfg->token);
    cfg->token = NULL;
}
