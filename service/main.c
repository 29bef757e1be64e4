/*
 * blockvault: start-up in order (configuration, catalog, workers, HTTP) and
 * shutdown in reverse on SIGTERM/SIGINT: stop accepting, let in-flight
 * requests and workers reach a safe point, close the catalog.
 */
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "http/server.h"
#include "log.h"

static void usage(FILE *f)
{
    fprintf(f,
        "usage: blockvault serve [--listen ADDR:PORT] [--data DIR] [--token-file FILE]\n"
        "                        [--workers N] [--web DIR] [--timezone AREA/CITY] [--verbose]\n"
        "                        [--nbd-listen ADDR:PORT] [--nbd-tls-psk FILE] [--qmp-dir DIR]\n"
        "                        [--tls-cert FILE --tls-key FILE | --tls-self-signed]\n"
        "                        [--notify-retry-ms N] [--notify-attempts N] [--space-low-percent N]\n"
        "                        [--history-days N]\n"
        "  --listen ADDR:PORT  where to listen (default 127.0.0.1:8080; port 0 picks a free port)\n"
        "  --data DIR          data directory: DIR/images and DIR/catalog.db (default ./var)\n"
        "  --token-file FILE   require 'Authorization: Bearer <token>' (or BLOCKVAULT_TOKEN)\n"
        "  --workers N         worker threads for jobs (default 2)\n"
        "  --web DIR           static UI directory (default: the source tree's web/)\n"
        "  --timezone ZONE     time zone of policy schedules and retention periods (default UTC)\n"
        "  --nbd-listen A:P    also serve NBD over TCP (the Unix socket DIR/nbd.sock always)\n"
        "  --nbd-tls-psk FILE  TLS-PSK keys for NBD over TCP (psktool format)\n"
        "  --qmp-dir DIR       QMP sockets of VM drives must resolve beneath DIR\n"
        "  --tls-cert FILE     serve HTTPS with this PEM certificate (chain) ...\n"
        "  --tls-key FILE      ... and this PEM private key\n"
        "  --tls-self-signed   serve HTTPS with a key and certificate made once under\n"
        "                      DIR/tls/ (its SHA-256 fingerprint is printed at start)\n"
        "  --notify-retry-ms N first wait before a webhook is retried, doubling (default 30000)\n"
        "  --notify-attempts N attempts before a webhook delivery fails (default 8)\n"
        "  --space-low-percent N  space_low notification below N%% free (default 10; 0: off)\n"
        "  --history-days N    delete events, job history, reports and policy runs older\n"
        "                      than N days (default 90; 0 keeps them all)\n"
        "  A non-loopback --listen needs both a token and TLS.\n");
}

/* Give the event streams (woken by stopping) a bounded moment to send
 * their last bytes and the chunked end before the server closes their
 * sockets, so that a reader sees a complete response. */
static void wait_streams(struct bv_app *app, int max_ms)
{
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += max_ms / 1000;
    dl.tv_nsec += (long)(max_ms % 1000) * 1000000L;
    if (dl.tv_nsec >= 1000000000L) {
        dl.tv_sec++;
        dl.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&app->events_lock);
    while (app->open_streams > 0)
        if (pthread_cond_timedwait(&app->events_cond, &app->events_lock, &dl) != 0)
            break;
    pthread_mutex_unlock(&app->events_lock);
}

static int serve(int argc, char **argv)
{
    struct bv_app app;
    memset(&app, 0, sizeof(app));
    char err[512];
    if (bv_config_parse(argc, argv, &app.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "blockvault: %s\n", err);
        return 2;
    }
    if (app.cfg.verbose)
        bv_log_set_level(BV_LOG_DEBUG);

    /* Block the stop signals in every thread; main waits for them below. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    struct bv_http *http = NULL;
    if (bv_app_open(&app, err, sizeof(err)) < 0) {
        log_error("%s", err);
        goto out;
    }
    uint16_t port;
    http = bv_http_start(&app, &port, err, sizeof(err));
    if (!http) {
        log_error("%s", err);
        goto out;
    }
    bool v6 = strchr(app.cfg.listen_addr, ':') != NULL;
    const char *fp = bv_http_tls_fingerprint(http);
    if (fp)
        printf("tls fingerprint sha256 %s\n", fp);
    printf("listening on http%s://%s%s%s:%u\n", fp ? "s" : "", v6 ? "[" : "",
           app.cfg.listen_addr, v6 ? "]" : "", port);
    fflush(stdout);
    log_info("data directory %s, catalog schema v%d, %u workers%s", app.cfg.data_dir,
             bvdb_schema_version(app.db), app.cfg.workers, app.cfg.token ? ", token required" : "");

    int sig = 0;
    sigwait(&set, &sig);
    log_info("received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rc = 0;
out:
    atomic_store(&app.stopping, true);
    if (app.db) {
        pthread_mutex_lock(&app.events_lock);
        pthread_cond_broadcast(&app.events_cond);
        pthread_mutex_unlock(&app.events_lock);
    }
    bv_http_quiesce(http);
    if (app.db)
        wait_streams(&app, 2000);
    bv_http_stop(http);
    if (app.db)
        bv_app_close(&app);
    bv_config_free(&app.cfg);
    if (rc == 0)
        log_info("stopped cleanly");
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "serve") == 0)
        return serve(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[1], "--version") == 0) {
        printf("blockvault %s\n", BV_VERSION);
        return 0;
    }
    usage(stderr);
    return 2;
}
