/* Command line and environment of `blockvault serve`. */
#ifndef BV_SERVICE_CONFIG_H
#define BV_SERVICE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

struct bv_config {
    char listen_addr[64];      /* numeric IPv4/IPv6 address */
    uint16_t port;             /* 0: pick a free one and print it */
    char data_dir[4096];
    char web_dir[4096];
    char *token;               /* NULL: no auth; never empty or blank; owned */
    unsigned workers;
    bool verbose;
    char timezone[128];        /* "" = UTC; an IANA name (Area/City) for schedules and
                                  retention periods */
    bool test_clock;           /* --test-clock=UNIX_SECONDS: the service's clock starts there
                                  and moves only by POST /api/v1/test/clock (tests only) */
    int64_t test_clock_start;
    unsigned history_days;     /* --history-days N (default 90; 0: keep all history) */
    bool nbd_tcp;              /* --nbd-listen given (the Unix socket <data>/nbd.sock is
                                  always served) */
    char nbd_addr[64];         /* numeric address of --nbd-listen */
    uint16_t nbd_port;         /* 0: pick a free one (nbd_uri names it) */
    char nbd_tls_psk[4096];    /* --nbd-tls-psk FILE ("" none): psktool's username:hexkey */
    char tls_cert[4096];       /* --tls-cert FILE ("" none; needs --tls-key) */
    char tls_key[4096];        /* --tls-key FILE */
    bool tls_self_signed;      /* --tls-self-signed: a pair made once under <data>/tls/ */
    unsigned notify_retry_ms;  /* --notify-retry-ms: first wait between webhook attempts
                                  (default 30000; doubles each time, runtime/notify.h) */
    unsigned notify_attempts;  /* --notify-attempts: attempts before a delivery fails (8) */
    unsigned space_low_percent;/* --space-low-percent: space_low below this % free (10; 0 off) */
    char qmp_dir[4096];        /* --qmp-dir DIR ("" none: VM drives are refused): every QMP
                                  socket name resolves beneath it (service/qmp/qmp.h) */
};

/* Parse `serve` arguments (argv[0] is "serve").  On error returns -1 and
 * writes a sentence into err.  Reads BLOCKVAULT_TOKEN when no --token-file. */
int bv_config_parse(int argc, char **argv, struct bv_config *cfg, char *err, size_t errlen);
void bv_config_free(struct bv_config *cfg);

/* true when addr is a loopback address (127.0.0.0/8, ::1). */
bool bv_config_is_loopback(const char *addr);

#endif
