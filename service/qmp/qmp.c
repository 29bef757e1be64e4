/*
 * QMP client: see qmp.h.  The connection is driven by whoever holds
 * q->lock: a command writes its line and then reads lines until the reply
 * with its id comes, queueing every event it reads on the way; a wait for
 * an event first looks in the queue, then reads.  No reader thread: nothing
 * happens on the socket between calls (QEMU buffers the events meanwhile,
 * and the next call reads them).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "qmp/qmp.h"

struct qmp_event {
    char *name;
    cJSON *data;                 /* owned; an empty object when QEMU sent none */
    struct qmp_event *next;
};

struct bv_qmp {
    pthread_mutex_t lock;
    const struct bv_root *dir;   /* borrowed: outlives the connection */
    char *name;
    int fd;                      /* -1 while lost */
    uint64_t generation;
    uint64_t next_id;
    char version[32];
    char *buf;                   /* bytes read and not yet consumed */
    size_t len, cap;
    struct qmp_event *head, *tail;
    unsigned nevents;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void events_clear(struct bv_qmp *q)
{
    while (q->head) {
        struct qmp_event *ev = q->head;
        q->head = ev->next;
        free(ev->name);
        cJSON_Delete(ev->data);
        free(ev);
    }
    q->tail = NULL;
    q->nevents = 0;
}

static void drop(struct bv_qmp *q)
{
    if (q->fd >= 0)
        close(q->fd);
    q->fd = -1;
    q->len = 0;
    events_clear(q);
}

static int lost(struct bv_qmp *q, bv_error **errp)
{
    drop(q);
    return bv_error_setf(errp, ECONNRESET, "QEMU closed the QMP connection on '%s'", q->name);
}

/* Connect to the O_PATH descriptor of the socket through its /proc link:
 * the kernel resolves the descriptor, not a name we checked earlier. */
static int connect_fd(int pathfd, const char *name, bv_error **errp)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    struct stat st;
    if (fstat(pathfd, &st) < 0 || !S_ISSOCK(st.st_mode))
        return bv_error_setf(errp, ENOTSOCK, "'%s' is not a socket", name);
    snprintf(sa.sun_path, sizeof(sa.sun_path), "/proc/self/fd/%d", pathfd);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return bv_error_setf(errp, errno, "socket: %s", strerror(errno));
    if (connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = errno;
        close(s);
        return bv_error_setf(errp, e, "cannot connect to QMP socket '%s': %s", name,
                             strerror(e));
    }
    return s;
}

static int write_all(struct bv_qmp *q, const char *p, size_t n, bv_error **errp)
{
    while (n) {
        ssize_t w = send(q->fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return lost(q, errp);
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int buf_reserve(struct bv_qmp *q, size_t more, bv_error **errp)
{
    if (q->len + more <= q->cap)
        return 0;
    size_t cap = q->cap ? q->cap : 4096;
    while (cap < q->len + more)
        cap *= 2;
    if (cap > BV_QMP_MAX_LINE + 4096) {
        drop(q);
        return bv_error_setf(errp, EPROTO, "QMP message on '%s' longer than %u bytes",
                             q->name, BV_QMP_MAX_LINE);
    }
    char *b = realloc(q->buf, cap);
    if (!b)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    q->buf = b;
    q->cap = cap;
    return 0;
}

/* Read until a whole line is buffered; *line gets it (malloc'd, no '\n'). */
static int read_line(struct bv_qmp *q, int64_t deadline, const char *what, char **line,
                     bv_error **errp)
{
    for (;;) {
        char *nl = q->len ? memchr(q->buf, '\n', q->len) : NULL;
        if (nl) {
            size_t n = (size_t)(nl - q->buf);
            if (!(*line = strndup(q->buf, n)))
                return bv_error_setf(errp, ENOMEM, "out of memory");
            memmove(q->buf, nl + 1, q->len - n - 1);
            q->len -= n + 1;
            return 0;
        }
        if (q->len >= BV_QMP_MAX_LINE) {
            drop(q);
            return bv_error_setf(errp, EPROTO, "QMP message on '%s' longer than %u bytes",
                                 q->name, BV_QMP_MAX_LINE);
        }
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return bv_error_setf(errp, ETIMEDOUT, "QEMU did not answer %s on '%s' in time",
                                 what, q->name);
        struct pollfd p = { .fd = q->fd, .events = POLLIN };
        int pr = poll(&p, 1, (int)(left > 1000000 ? 1000000 : left));
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr == 0)
            continue;
        int r = buf_reserve(q, 65536, errp);
        if (r < 0)
            return r;
        ssize_t got = recv(q->fd, q->buf + q->len, 65536, 0);
        if (got < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        if (got <= 0)
            return lost(q, errp);
        q->len += (size_t)got;
    }
}

static void queue_event(struct bv_qmp *q, cJSON *msg)
{
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(msg, "event");
    struct qmp_event *ev = calloc(1, sizeof(*ev));
    if (!ev || !(ev->name = strdup(name->valuestring))) {
        free(ev);
        return;                      /* an event lost to ENOMEM: waits time out */
    }
    cJSON *data = cJSON_DetachItemFromObjectCaseSensitive(msg, "data");
    ev->data = cJSON_IsObject(data) ? data : (cJSON_Delete(data), cJSON_CreateObject());
    if (q->nevents == BV_QMP_MAX_EVENTS) {
        struct qmp_event *old = q->head;
        q->head = old->next;
        if (!q->head)
            q->tail = NULL;
        free(old->name);
        cJSON_Delete(old->data);
        free(old);
        q->nevents--;
    }
    if (q->tail)
        q->tail->next = ev;
    else
        q->head = ev;
    q->tail = ev;
    q->nevents++;
}

/* The next message that is not an event (events are queued). */
static int read_message(struct bv_qmp *q, int64_t deadline, const char *what, cJSON **out,
                        bv_error **errp)
{
    for (;;) {
        char *line = NULL;
        int r = read_line(q, deadline, what, &line, errp);
        if (r < 0)
            return r;
        cJSON *msg = cJSON_Parse(line);
        free(line);
        if (!cJSON_IsObject(msg)) {
            cJSON_Delete(msg);
            drop(q);
            return bv_error_setf(errp, EPROTO, "QEMU sent malformed QMP on '%s'", q->name);
        }
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "event"))) {
            queue_event(q, msg);
            cJSON_Delete(msg);
            continue;
        }
        *out = msg;
        return 0;
    }
}

static int send_json(struct bv_qmp *q, cJSON *obj, bv_error **errp)
{
    char *text = cJSON_PrintUnformatted(obj);
    if (!text)
        return bv_error_setf(errp, ENOMEM, "out of memory");
    size_t n = strlen(text);
    int r = write_all(q, text, n, errp);
    if (r == 0)
        r = write_all(q, "\n", 1, errp);
    free(text);
    return r;
}

static int reply_error(struct bv_qmp *q, const char *command, const cJSON *reply,
                       char *err_class, size_t cap, bv_error **errp)
{
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(reply, "error");
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(err, "class");
    const cJSON *desc = cJSON_GetObjectItemCaseSensitive(err, "desc");
    if (err_class && cap)
        snprintf(err_class, cap, "%s", cJSON_IsString(cls) ? cls->valuestring : "GenericError");
    (void)q;
    return bv_error_setf(errp, EIO, "QEMU refused %s: %s", command,
                         cJSON_IsString(desc) ? desc->valuestring : "(no description)");
}

/* Send one command and read its reply (the lock is held, the link is up). */
static int transact(struct bv_qmp *q, const char *command, const cJSON *args, int64_t deadline,
                    cJSON **ret, char *err_class, size_t cap, bv_error **errp)
{
    char id[32];
    snprintf(id, sizeof(id), "bv-%llu", (unsigned long long)++q->next_id);
    cJSON *cmd = cJSON_CreateObject();
    if (!cmd || !cJSON_AddStringToObject(cmd, "execute", command) ||
        (args && !cJSON_AddItemToObject(cmd, "arguments", cJSON_Duplicate(args, true))) ||
        !cJSON_AddStringToObject(cmd, "id", id)) {
        cJSON_Delete(cmd);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    int r = send_json(q, cmd, errp);
    cJSON_Delete(cmd);
    while (r == 0) {
        cJSON *reply = NULL;
        r = read_message(q, deadline, command, &reply, errp);
        if (r < 0)
            break;
        const cJSON *rid = cJSON_GetObjectItemCaseSensitive(reply, "id");
        if (!cJSON_IsString(rid) || strcmp(rid->valuestring, id) != 0) {
            cJSON_Delete(reply);     /* a stale reply (an earlier command timed out) */
            continue;
        }
        if (cJSON_GetObjectItemCaseSensitive(reply, "error")) {
            r = reply_error(q, command, reply, err_class, cap, errp);
        } else if (ret) {
            *ret = cJSON_DetachItemFromObjectCaseSensitive(reply, "return");
            if (!*ret)
                *ret = cJSON_CreateObject();
        }
        cJSON_Delete(reply);
        break;
    }
    return r;
}

static void note_version(struct bv_qmp *q, const cJSON *greeting)
{
    const cJSON *qemu = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(greeting, "QMP"), "version"), "qemu");
    const cJSON *ma = cJSON_GetObjectItemCaseSensitive(qemu, "major");
    const cJSON *mi = cJSON_GetObjectItemCaseSensitive(qemu, "minor");
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(qemu, "micro");
    if (cJSON_IsNumber(ma) && cJSON_IsNumber(mi) && cJSON_IsNumber(mc))
        snprintf(q->version, sizeof(q->version), "%d.%d.%d", ma->valueint, mi->valueint,
                 mc->valueint);
}

/* Connect, read the greeting, negotiate capabilities (lock held). */
static int reconnect(struct bv_qmp *q, int timeout_ms, bv_error **errp)
{
    int pathfd = -1, r;
    int64_t deadline = now_ms() + timeout_ms;
    drop(q);
    r = bv_path_open(q->dir, NULL, q->name, 0, O_PATH, 0, &pathfd, NULL, errp);
    if (r < 0)
        return r;
    r = connect_fd(pathfd, q->name, errp);
    close(pathfd);
    if (r < 0)
        return r;
    q->fd = r;
    cJSON *greeting = NULL;
    r = read_message(q, deadline, "the greeting", &greeting, errp);
    if (r == 0 && !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(greeting, "QMP"))) {
        drop(q);
        r = bv_error_setf(errp, EPROTO, "'%s' is not a QMP monitor (no greeting)", q->name);
    }
    if (r == 0)
        note_version(q, greeting);
    cJSON_Delete(greeting);
    if (r == 0)
        r = transact(q, "qmp_capabilities", NULL, deadline, NULL, NULL, 0, errp);
    if (r < 0) {
        drop(q);
        return r;
    }
    q->generation++;
    return 0;
}

int bv_qmp_new(const struct bv_root *dir, const char *name, struct bv_qmp **out,
               bv_error **errp)
{
    struct bv_qmp *q = calloc(1, sizeof(*q));
    if (!q || !(q->name = strdup(name))) {
        free(q);
        return bv_error_setf(errp, ENOMEM, "out of memory");
    }
    pthread_mutex_init(&q->lock, NULL);
    q->dir = dir;
    q->fd = -1;
    *out = q;
    return 0;
}

int bv_qmp_open(const struct bv_root *dir, const char *name, int timeout_ms,
                struct bv_qmp **out, bv_error **errp)
{
    struct bv_qmp *q = NULL;
    int r = bv_qmp_new(dir, name, &q, errp);
    if (r < 0)
        return r;
    r = reconnect(q, timeout_ms > 0 ? timeout_ms : BV_QMP_TIMEOUT_MS, errp);
    if (r < 0) {
        bv_qmp_close(q);
        return r;
    }
    *out = q;
    return 0;
}

void bv_qmp_close(struct bv_qmp *q)
{
    if (!q)
        return;
    drop(q);
    free(q->buf);
    free(q->name);
    pthread_mutex_destroy(&q->lock);
    free(q);
}

const char *bv_qmp_name(const struct bv_qmp *q)
{
    return q->name;
}

const char *bv_qmp_version(struct bv_qmp *q)
{
    return q->version;         /* written only while connecting; a stable string after */
}

uint64_t bv_qmp_generation(struct bv_qmp *q)
{
    pthread_mutex_lock(&q->lock);
    uint64_t g = q->fd >= 0 ? q->generation : 0;
    pthread_mutex_unlock(&q->lock);
    return g;
}

bool bv_qmp_connected(struct bv_qmp *q)
{
    pthread_mutex_lock(&q->lock);
    bool up = q->fd >= 0;
    pthread_mutex_unlock(&q->lock);
    return up;
}

/* Has the other end closed (EOF pending, nothing left to read before it)?
 * Checked before a command so that a QEMU restarted since the last call is
 * reconnected to, not reported as lost (no command was sent to it). */
static bool peer_gone(struct bv_qmp *q)
{
    struct pollfd p = { .fd = q->fd, .events = POLLIN };
    char c;
    if (poll(&p, 1, 0) <= 0)
        return false;
    if (p.revents & (POLLERR | POLLNVAL))
        return true;
    if (!(p.revents & (POLLIN | POLLHUP)))
        return false;
    ssize_t n = recv(q->fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

int bv_qmp_execute(struct bv_qmp *q, const char *command, const cJSON *args, int timeout_ms,
                   cJSON **ret, char *err_class, size_t cap, bv_error **errp)
{
    int ms = timeout_ms > 0 ? timeout_ms : BV_QMP_TIMEOUT_MS;
    int r = 0;
    if (ret)
        *ret = NULL;
    if (err_class && cap)
        err_class[0] = '\0';
    pthread_mutex_lock(&q->lock);
    if (q->fd >= 0 && peer_gone(q))
        drop(q);                     /* QEMU went away since: nothing was sent, reconnect */
    if (q->fd < 0)
        r = reconnect(q, ms, errp);
    if (r == 0)
        r = transact(q, command, args, now_ms() + ms, ret, err_class, cap, errp);
    pthread_mutex_unlock(&q->lock);
    return r;
}

/* Every member of match is in data with the same value. */
static bool event_matches(const cJSON *data, const cJSON *match)
{
    const cJSON *m;
    cJSON_ArrayForEach(m, match) {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(data, m->string);
        if (!d || !cJSON_Compare(d, m, true))
            return false;
    }
    return true;
}

/* Take the first queued event that matches, or NULL. */
static struct qmp_event *take_queued(struct bv_qmp *q, const char *name, const cJSON *match)
{
    struct qmp_event **pp = &q->head, *prev = NULL;
    for (; *pp; prev = *pp, pp = &(*pp)->next) {
        struct qmp_event *ev = *pp;
        if (strcmp(ev->name, name) != 0 || !event_matches(ev->data, match))
            continue;
        *pp = ev->next;
        if (q->tail == ev)
            q->tail = prev;
        q->nevents--;
        return ev;
    }
    return NULL;
}

/* Read lines until an event arrives (lock held).  A non-event message
 * between commands is a stale reply and is dropped. */
static int pump_one(struct bv_qmp *q, int64_t deadline, const char *name, bv_error **errp)
{
    unsigned before = q->nevents;
    struct qmp_event *tail = q->tail;
    while (q->nevents == before && q->tail == tail) {
        char *line = NULL;
        int r = read_line(q, deadline, name, &line, errp);
        if (r < 0)
            return r;
        cJSON *msg = cJSON_Parse(line);
        free(line);
        if (!cJSON_IsObject(msg)) {
            cJSON_Delete(msg);
            drop(q);
            return bv_error_setf(errp, EPROTO, "QEMU sent malformed QMP on '%s'", q->name);
        }
        if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(msg, "event")))
            queue_event(q, msg);
        cJSON_Delete(msg);
    }
    return 0;
}

int bv_qmp_wait_event(struct bv_qmp *q, const char *name, const cJSON *match, int timeout_ms,
                      cJSON **data, bv_error **errp)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : BV_QMP_TIMEOUT_MS);
    struct qmp_event *ev = NULL;
    int r = 0;
    if (data)
        *data = NULL;
    pthread_mutex_lock(&q->lock);
    while (!(ev = take_queued(q, name, match))) {
        if (q->fd < 0) {
            r = bv_error_setf(errp, ECONNRESET, "the QMP connection on '%s' was lost while "
                              "waiting for %s", q->name, name);
            break;
        }
        if ((r = pump_one(q, deadline, name, errp)) < 0)
            break;
    }
    pthread_mutex_unlock(&q->lock);
    if (ev) {
        if (data)
            *data = ev->data;
        else
            cJSON_Delete(ev->data);
        free(ev->name);
        free(ev);
    }
    return r;
}

void bv_qmp_flush_events(struct bv_qmp *q)
{
    pthread_mutex_lock(&q->lock);
    events_clear(q);
    pthread_mutex_unlock(&q->lock);
}
