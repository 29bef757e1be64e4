/*
 * The NBD server's sockets and connections: listeners (a Unix socket, and
 * TCP when configured), the acceptor thread, one thread per connection, the
 * transport (plain or GnuTLS-PSK) and the bounds a hostile client meets:
 *   - at most NBD_MAX_CONNS connections; more are closed on accept;
 *   - the whole negotiation (TLS handshake included) within
 *     NBD_NEGOTIATION_MS, so a slow or silent client frees its slot;
 *   - a reply that cannot be sent for NBD_SEND_TIMEOUT_S ends the
 *     connection (a client that stops reading holds one worker, not more);
 *   - payload bytes in flight bounded per connection and server-wide.
 * Shutdown stops reading requests (shutdown(SHUT_RD)), lets the requests
 * already read finish and reply, then closes; a forced disconnect (drive
 * deleted with force) shuts both directions at once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "app.h"
#include "log.h"
#include "nbd/nbd-int.h"

struct nbd_server {
    struct bv_app *app;
    int unix_fd, tcp_fd;
    int wake[2];                        /* the acceptor's stop pipe */
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char tcp_addr[64];
    uint16_t tcp_port;
    bool tcp_tls_required;
    gnutls_psk_server_credentials_t psk;    /* NULL: no TLS */
    gnutls_priority_t prio;
    pthread_t acceptor;
    bool acceptor_running;

    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct nbd_conn *conns;
    unsigned nconns;
    uint64_t budget_used;
    bool stopping;
};

int64_t nbd_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- transport ---- */

static int wait_readable(struct nbd_conn *c)
{
    if (!c->deadline_ms || (c->tls && gnutls_record_check_pending(c->tls) > 0))
        return 0;
    for (;;) {
        int64_t left = c->deadline_ms - nbd_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int r = poll(&p, 1, (int)left);
        if (r > 0)
            return 0;
        if (r == 0 || errno != EINTR)
            return -1;
    }
}

int nbd_conn_read(struct nbd_conn *c, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        if (atomic_load(&c->dead) || wait_readable(c) < 0)
            return -1;
        ssize_t n;
        if (c->tls) {
            n = gnutls_record_recv(c->tls, p, len);
            if (n == GNUTLS_E_INTERRUPTED || n == GNUTLS_E_AGAIN)
                continue;
        } else {
            n = recv(c->fd, p, len, 0);
            if (n < 0 && errno == EINTR)
                continue;
        }
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int nbd_conn_write(struct nbd_conn *c, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        if (atomic_load(&c->dead))
            return -1;
        ssize_t n;
        if (c->tls) {
            n = gnutls_record_send(c->tls, p, len);
            if (n == GNUTLS_E_INTERRUPTED)
                continue;
        } else {
            n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
        }
        if (n <= 0) {
            atomic_store(&c->dead, true);
            shutdown(c->fd, SHUT_RDWR);
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

int nbd_conn_discard(struct nbd_conn *c, uint64_t len)
{
    char buf[16384];
    while (len) {
        size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
        if (nbd_conn_read(c, buf, n) < 0)
            return -1;
        len -= n;
    }
    return 0;
}

bool nbd_server_has_tls(struct nbd_server *srv)
{
    return srv->psk != NULL;
}

bool nbd_server_tls_required(struct nbd_server *srv, struct nbd_conn *c)
{
    return c->is_tcp && srv->tcp_tls_required;
}

int nbd_conn_starttls(struct nbd_conn *c)
{
    struct nbd_server *srv = c->srv;
    gnutls_session_t s;
    if (gnutls_init(&s, GNUTLS_SERVER | GNUTLS_NO_SIGNAL) < 0)
        return -1;
    int r = gnutls_priority_set(s, srv->prio);
    if (r >= 0)
        r = gnutls_credentials_set(s, GNUTLS_CRD_PSK, srv->psk);
    if (r >= 0) {
        gnutls_transport_set_int(s, c->fd);
        int64_t left = c->deadline_ms - nbd_now_ms();
        gnutls_handshake_set_timeout(s, left > 0 ? (unsigned)left : 1);
        do
            r = gnutls_handshake(s);
        while (r < 0 && !gnutls_error_is_fatal(r) && nbd_now_ms() < c->deadline_ms);
    }
    if (r < 0) {
        log_info("nbd: TLS handshake failed: %s", gnutls_strerror(r));
        gnutls_deinit(s);
        return -1;
    }
    c->tls = s;
    return 0;
}

/* ---- bookkeeping ---- */

void nbd_server_set_export(struct nbd_conn *c, const char *name)
{
    pthread_mutex_lock(&c->srv->lock);
    snprintf(c->export_name, sizeof(c->export_name), "%s", name);
    pthread_mutex_unlock(&c->srv->lock);
}

int nbd_server_budget_take(struct nbd_conn *c, uint64_t len)
{
    struct nbd_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    while (!atomic_load(&c->dead) && srv->budget_used + len > NBD_SERVER_BUDGET)
        pthread_cond_wait(&srv->cond, &srv->lock);
    bool ok = !atomic_load(&c->dead);
    if (ok)
        srv->budget_used += len;
    pthread_mutex_unlock(&srv->lock);
    return ok ? 0 : -1;
}

void nbd_server_budget_give(struct nbd_conn *c, uint64_t len)
{
    struct nbd_server *srv = c->srv;
    pthread_mutex_lock(&srv->lock);
    srv->budget_used -= len;
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
}

static void set_timeouts(int fd, unsigned recv_ms)
{
    struct timeval rt = { .tv_sec = recv_ms / 1000, .tv_usec = (recv_ms % 1000) * 1000 };
    struct timeval st = { .tv_sec = NBD_SEND_TIMEOUT_S };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rt, sizeof(rt));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &st, sizeof(st));
}

static void *conn_main(void *arg)
{
    struct nbd_conn *c = arg;
    struct nbd_server *srv = c->srv;
    c->deadline_ms = nbd_now_ms() + NBD_NEGOTIATION_MS;
    set_timeouts(c->fd, NBD_NEGOTIATION_MS);
    if (nbd_negotiate(c) == 0) {
        c->deadline_ms = 0;
        set_timeouts(c->fd, 0);
        nbd_transmit(c);
    }
    if (c->have_export)
        nbd_export_close(c->app, &c->x);
    if (c->tls)
        gnutls_deinit(c->tls);
    pthread_mutex_lock(&srv->lock);
    struct nbd_conn **pp = &srv->conns;
    while (*pp != c)
        pp = &(*pp)->next;
    *pp = c->next;
    srv->nconns--;
    close(c->fd);               /* under the lock: disconnect() never sees a reused fd */
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    pthread_mutex_destroy(&c->lock);
    pthread_mutex_destroy(&c->send_lock);
    pthread_cond_destroy(&c->cond);
    free(c);
    return NULL;
}

/* Called with srv->lock held. */
static int start_conn_locked(struct nbd_server *srv, int fd, bool is_tcp)
{
    struct nbd_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return -1;
    c->srv = srv;
    c->app = srv->app;
    c->fd = fd;
    c->is_tcp = is_tcp;
    pthread_mutex_init(&c->lock, NULL);
    pthread_mutex_init(&c->send_lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int r = pthread_create(&t, &attr, conn_main, c);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        pthread_mutex_destroy(&c->lock);
        pthread_mutex_destroy(&c->send_lock);
        pthread_cond_destroy(&c->cond);
        free(c);
        return -1;
    }
    c->next = srv->conns;
    srv->conns = c;
    srv->nconns++;
    return 0;
}

static void accept_one(struct nbd_server *srv, int lfd, bool is_tcp)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    if (is_tcp) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    pthread_mutex_lock(&srv->lock);
    bool ok = !srv->stopping && srv->nconns < NBD_MAX_CONNS;
    if (ok && start_conn_locked(srv, fd, is_tcp) < 0)
        ok = false;
    pthread_mutex_unlock(&srv->lock);
    if (!ok) {
        log_warn("nbd: connection refused (%s)", srv->stopping ? "stopping" : "too many clients");
        close(fd);
    }
}

static void *acceptor_main(void *arg)
{
    struct nbd_server *srv = arg;
    for (;;) {
        struct pollfd p[3] = {
            { .fd = srv->wake[0], .events = POLLIN },
            { .fd = srv->unix_fd, .events = POLLIN },
            { .fd = srv->tcp_fd, .events = POLLIN },
        };
        int r = poll(p, 3, -1);
        if (r < 0 && errno != EINTR)
            break;
        if (p[0].revents)
            break;
        if (p[1].revents & POLLIN)
            accept_one(srv, srv->unix_fd, false);
        if (p[2].revents & POLLIN)
            accept_one(srv, srv->tcp_fd, true);
    }
    return NULL;
}

/* ---- start and stop ---- */

static int listen_unix(struct nbd_server *srv, char *err, size_t errlen)
{
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    int n = snprintf(a.sun_path, sizeof(a.sun_path), "%s/nbd.sock", srv->app->cfg.data_dir);
    if (n < 0 || (size_t)n >= sizeof(a.sun_path)) {
        log_warn("nbd: data directory path too long for a Unix socket; no nbd.sock");
        return 0;
    }
    struct stat st;
    if (lstat(a.sun_path, &st) == 0 && S_ISSOCK(st.st_mode))
        unlink(a.sun_path);                 /* left by a previous run */
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    mode_t old = umask(0177);               /* born 0600: no window where others connect */
    int r = fd < 0 ? -1 : bind(fd, (struct sockaddr *)&a, sizeof(a));
    umask(old);
    if (r < 0 || chmod(a.sun_path, 0600) < 0 || listen(fd, 64) < 0) {
        snprintf(err, errlen, "nbd: cannot listen on %s: %s", a.sun_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    srv->unix_fd = fd;
    strcpy(srv->sock_path, a.sun_path);
    return 0;
}

static int listen_tcp(struct nbd_server *srv, char *err, size_t errlen)
{
    const struct bv_config *cfg = &srv->app->cfg;
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->nbd_addr, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(cfg->nbd_port);
        sl = sizeof(*a4);
    } else if (inet_pton(AF_INET6, cfg->nbd_addr, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(cfg->nbd_port);
        sl = sizeof(*a6);
    } else {
        snprintf(err, errlen, "--nbd-listen: bad address '%s'", cfg->nbd_addr);
        return -1;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, 64) < 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
        snprintf(err, errlen, "nbd: cannot listen on %s:%u: %s", cfg->nbd_addr,
                 (unsigned)cfg->nbd_port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    srv->tcp_fd = fd;
    snprintf(srv->tcp_addr, sizeof(srv->tcp_addr), "%s", cfg->nbd_addr);
    srv->tcp_port = ntohs(ss.ss_family == AF_INET ? a4->sin_port : a6->sin6_port);
    return 0;
}

/* The PSK file must exist and hold at least one "name:hexkey" line; GnuTLS
 * reads it again at each handshake. */
static int setup_tls(struct nbd_server *srv, char *err, size_t errlen)
{
    const char *path = srv->app->cfg.nbd_tls_psk;
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "--nbd-tls-psk: cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[1024];
    bool good = false;
    while (!good && fgets(line, sizeof(line), f)) {
        char *colon = strchr(line, ':');
        good = colon && colon > line && strspn(colon + 1, "0123456789abcdefABCDEF") >= 2;
    }
    fclose(f);
    if (!good) {
        snprintf(err, errlen, "--nbd-tls-psk: %s has no 'username:hexkey' line", path);
        return -1;
    }
    if (gnutls_psk_allocate_server_credentials(&srv->psk) < 0 ||
        gnutls_psk_set_server_credentials_file(srv->psk, path) < 0 ||
        gnutls_priority_init(&srv->prio, "NORMAL:+ECDHE-PSK:+DHE-PSK:+PSK", NULL) < 0) {
        snprintf(err, errlen, "nbd: cannot set up TLS-PSK credentials from %s", path);
        return -1;
    }
    return 0;
}

static void server_free(struct nbd_server *srv)
{
    if (srv->unix_fd >= 0) {
        close(srv->unix_fd);
        unlink(srv->sock_path);
    }
    if (srv->tcp_fd >= 0)
        close(srv->tcp_fd);
    for (int i = 0; i < 2; i++)
        if (srv->wake[i] >= 0)
            close(srv->wake[i]);
    if (srv->prio)
        gnutls_priority_deinit(srv->prio);
    if (srv->psk)
        gnutls_psk_free_server_credentials(srv->psk);
    pthread_mutex_destroy(&srv->lock);
    pthread_cond_destroy(&srv->cond);
    free(srv);
}

static int tcp_policy(struct bv_app *app, struct nbd_server *srv, char *err, size_t errlen)
{
    const struct bv_config *cfg = &app->cfg;
    if (!cfg->nbd_tcp)
        return 0;
    srv->tcp_tls_required = !bv_config_is_loopback(cfg->nbd_addr) || cfg->token;
    if (srv->tcp_tls_required && !cfg->nbd_tls_psk[0]) {
        snprintf(err, errlen, "refusing NBD over TCP on %s without TLS (%s): use --nbd-tls-psk",
                 cfg->nbd_addr, cfg->token ? "an HTTP token is configured"
                                           : "the address is not loopback");
        return -1;
    }
    return 0;
}

int bv_nbd_start(struct bv_app *app, char *err, size_t errlen)
{
    struct nbd_server *srv = calloc(1, sizeof(*srv));
    if (!srv) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    srv->app = app;
    srv->unix_fd = srv->tcp_fd = srv->wake[0] = srv->wake[1] = -1;
    pthread_mutex_init(&srv->lock, NULL);
    pthread_cond_init(&srv->cond, NULL);
    int r = tcp_policy(app, srv, err, errlen);
    if (r == 0 && app->cfg.nbd_tls_psk[0])
        r = setup_tls(srv, err, errlen);
    if (r == 0)
        r = listen_unix(srv, err, errlen);
    if (r == 0 && app->cfg.nbd_tcp)
        r = listen_tcp(srv, err, errlen);
    if (r == 0 && pipe2(srv->wake, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "nbd: pipe: %s", strerror(errno));
        r = -1;
    }
    if (r == 0 && pthread_create(&srv->acceptor, NULL, acceptor_main, srv) != 0) {
        snprintf(err, errlen, "nbd: cannot start the acceptor thread");
        r = -1;
    }
    if (r < 0) {
        server_free(srv);
        return -1;
    }
    srv->acceptor_running = true;
    app->nbd = srv;
    if (srv->unix_fd >= 0)
        log_info("nbd: serving on unix socket %s", srv->sock_path);
    if (srv->tcp_fd >= 0)
        log_info("nbd: serving on %s:%u%s", srv->tcp_addr, (unsigned)srv->tcp_port,
                 srv->psk ? " (TLS-PSK)" : "");
    return 0;
}

/* Wake every connection: how = SHUT_RD lets read requests finish. */
static void shut_all_locked(struct nbd_server *srv, int how)
{
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (how == SHUT_RDWR)
            atomic_store(&c->dead, true);
        shutdown(c->fd, how);
    }
    pthread_cond_broadcast(&srv->cond);
}

void bv_nbd_stop(struct bv_app *app)
{
    struct nbd_server *srv = app->nbd;
    if (!srv)
        return;
    pthread_mutex_lock(&srv->lock);
    srv->stopping = true;
    pthread_mutex_unlock(&srv->lock);
    if (srv->acceptor_running) {
        ssize_t w = write(srv->wake[1], "x", 1);
        (void)w;
        pthread_join(srv->acceptor, NULL);
    }
    pthread_mutex_lock(&srv->lock);
    shut_all_locked(srv, SHUT_RD);
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 5;
    while (srv->nconns > 0)
        if (pthread_cond_timedwait(&srv->cond, &srv->lock, &dl) == ETIMEDOUT)
            break;
    shut_all_locked(srv, SHUT_RDWR);
    while (srv->nconns > 0)
        pthread_cond_wait(&srv->cond, &srv->lock);
    pthread_mutex_unlock(&srv->lock);
    server_free(srv);
    app->nbd = NULL;
}

/* ---- questions from the REST side ---- */

void bv_nbd_uri(struct bv_app *app, const char *name, char *out, size_t len)
{
    struct nbd_server *srv = app->nbd;
    if (!srv) {
        snprintf(out, len, "%s", "");
    } else if (srv->tcp_fd >= 0) {
        bool v6 = strchr(srv->tcp_addr, ':') != NULL;
        snprintf(out, len, "%s://%s%s%s:%u/%s", srv->psk ? "nbds" : "nbd", v6 ? "[" : "",
                 srv->tcp_addr, v6 ? "]" : "", (unsigned)srv->tcp_port, name);
    } else if (srv->unix_fd >= 0) {
        snprintf(out, len, "nbd+unix:///%s?socket=%s", name, srv->sock_path);
    } else {
        snprintf(out, len, "%s", "");
    }
}

unsigned bv_nbd_clients(struct bv_app *app, const char *name)
{
    struct nbd_server *srv = app->nbd;
    unsigned n = 0;
    if (!srv)
        return 0;
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next)
        n += !atomic_load(&c->dead) && strcmp(c->export_name, name) == 0;
    pthread_mutex_unlock(&srv->lock);
    return n;
}

unsigned bv_nbd_disconnect(struct bv_app *app, const char *name)
{
    struct nbd_server *srv = app->nbd;
    unsigned n = 0;
    if (!srv)
        return 0;
    pthread_mutex_lock(&srv->lock);
    for (struct nbd_conn *c = srv->conns; c; c = c->next) {
        if (strcmp(c->export_name, name) != 0)
            continue;
        atomic_store(&c->dead, true);
        shutdown(c->fd, SHUT_RDWR);
        n++;
    }
    pthread_cond_broadcast(&srv->cond);
    pthread_mutex_unlock(&srv->lock);
    return n;
}
