/*
 * The QMP client (service/qmp): against a scripted monitor in a thread —
 * greeting and capabilities, ids, events queued while a reply is awaited,
 * QEMU's error class and text, a stale reply after a timeout, a closed
 * connection and the reconnect after it, an oversized line, something
 * that is not QMP — then the --qmp-dir confinement (absolute, "..",
 * symlinks out, not a socket, nobody listening), and last a real
 * qemu-system-x86_64 (skipped when it is not installed): block nodes,
 * a bitmap, a write through HMP qemu-io counted by the bitmap, a
 * DeviceNotFound, and quit seen as SHUTDOWN then a lost connection.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "qmp/qmp.h"

static char tmp[256], qdir[300], outside[300];
static struct bv_root *R;

/* ---------------- a scripted monitor ---------------- */

struct fake {
    int lfd;
    pthread_t th;
    atomic_int accepts;
    bool not_qmp;                /* greet with something else */
};

static void say(int fd, const char *line)
{
    size_t n = strlen(line);
    while (n) {
        ssize_t w = send(fd, line, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        line += w;
        n -= (size_t)w;
    }
    (void)!send(fd, "\n", 1, MSG_NOSIGNAL);
}

static void reply(int fd, const char *id, const char *ret_json)
{
    char b[4096];
    snprintf(b, sizeof(b), "{\"return\":%s,\"id\":\"%s\"}", ret_json, id);
    say(fd, b);
}

/* Serve one connection; returns when the client goes or "bye" is asked. */
static void serve(struct fake *f, int cfd)
{
    FILE *in = fdopen(dup(cfd), "r");
    char *line = NULL, stale[64] = "";
    size_t cap = 0;
    say(cfd, f->not_qmp ? "{\"hello\":1}"
                        : "{\"QMP\":{\"version\":{\"qemu\":{\"micro\":0,\"minor\":2,\"major\":7},"
                          "\"package\":\"\"},\"capabilities\":[\"oob\"]}}");
    while (in && getline(&line, &cap, in) > 0) {
        cJSON *cmd = cJSON_Parse(line);
        const char *ex = cJSON_GetStringValue(cJSON_GetObjectItem(cmd, "execute"));
        const char *id = cJSON_GetStringValue(cJSON_GetObjectItem(cmd, "id"));
        bool bye = false;
        if (!ex || !id) {
            cJSON_Delete(cmd);
            break;
        }
        if (stale[0]) {              /* the reply to a command that timed out, late */
            reply(cfd, stale, "{\"late\":true}");
            stale[0] = '\0';
        }
        if (!strcmp(ex, "qmp_capabilities")) {
            reply(cfd, id, "{}");
        } else if (!strcmp(ex, "echo")) {
            char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(cmd, "arguments"));
            reply(cfd, id, a ? a : "{}");
            free(a);
        } else if (!strcmp(ex, "fail")) {
            char b[256];
            snprintf(b, sizeof(b), "{\"error\":{\"class\":\"DeviceNotFound\",\"desc\":"
                     "\"Cannot find device='nope' nor node-name='nope'\"},\"id\":\"%s\"}", id);
            say(cfd, b);
        } else if (!strcmp(ex, "emit")) {
            say(cfd, "{\"event\":\"EV\",\"data\":{\"n\":1,\"k\":\"a\"},\"timestamp\":{}}");
            say(cfd, "{\"event\":\"OTHER\",\"timestamp\":{}}");
            say(cfd, "{\"event\":\"EV\",\"data\":{\"n\":2,\"k\":\"b\"},\"timestamp\":{}}");
            reply(cfd, id, "{}");
        } else if (!strcmp(ex, "slow")) {
            snprintf(stale, sizeof(stale), "%s", id);
        } else if (!strcmp(ex, "big")) {
            size_t n = BV_QMP_MAX_LINE + 16;
            char *b = malloc(n + 1);
            memset(b, 'x', n);
            b[n] = '\0';
            say(cfd, b);
            free(b);
        } else if (!strcmp(ex, "bye")) {
            bye = true;
        } else {
            reply(cfd, id, "{}");
        }
        cJSON_Delete(cmd);
        if (bye)
            break;
    }
    free(line);
    if (in)
        fclose(in);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    for (;;) {
        int cfd = accept(f->lfd, NULL, NULL);
        if (cfd < 0)
            break;
        atomic_fetch_add(&f->accepts, 1);
        serve(f, cfd);
        close(cfd);
    }
    return NULL;
}

static int listen_at(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    unlink(path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(s, 4), 0);
    return s;
}

static void fake_start(struct fake *f, const char *name, bool not_qmp)
{
    char p[400];
    snprintf(p, sizeof(p), "%s/%s", qdir, name);
    memset(f, 0, sizeof(*f));
    f->not_qmp = not_qmp;
    f->lfd = listen_at(p);
    assert_int_equal(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake *f)
{
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->th, NULL);
    close(f->lfd);
}

/* ---------------- setup ---------------- */

static int setup(void **state)
{
    (void)state;
    snprintf(tmp, sizeof(tmp), "/tmp/bvqmpXXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(qdir, sizeof(qdir), "%s/qmp", tmp);
    snprintf(outside, sizeof(outside), "%s/outside", tmp);
    mkdir(qdir, 0700);
    mkdir(outside, 0700);
    return bv_root_open(qdir, &R, NULL) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    (void)state;
    bv_root_close(R);
    char cmd[400];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd) == 0 ? 0 : -1;
}

static cJSON *obj(const char *json)
{
    cJSON *o = cJSON_Parse(json);
    assert_non_null(o);
    return o;
}

/* ---------------- protocol ---------------- */

static void test_commands_and_errors(void **state)
{
    (void)state;
    struct fake f;
    struct bv_qmp *q = NULL;
    bv_error *e = NULL;
    fake_start(&f, "vm.sock", false);
    assert_int_equal(bv_qmp_open(R, "vm.sock", 2000, &q, &e), 0);
    assert_string_equal(bv_qmp_version(q), "7.2.0");
    assert_int_equal(bv_qmp_generation(q), 1);

    cJSON *args = obj("{\"node\":\"disk0\",\"n\":3}"), *ret = NULL;
    assert_int_equal(bv_qmp_execute(q, "echo", args, 0, &ret, NULL, 0, NULL), 0);
    assert_true(cJSON_Compare(ret, args, true));
    cJSON_Delete(ret);
    cJSON_Delete(args);

    char cls[64];
    assert_int_equal(bv_qmp_execute(q, "fail", NULL, 0, &ret, cls, sizeof(cls), &e), -EIO);
    assert_null(ret);
    assert_string_equal(cls, "DeviceNotFound");
    assert_string_equal(e->msg, "QEMU refused fail: Cannot find device='nope' nor "
                        "node-name='nope'");
    bv_error_free(e);
    e = NULL;
    bv_qmp_close(q);
    fake_stop(&f);
}

static void test_events(void **state)
{
    (void)state;
    struct fake f;
    struct bv_qmp *q = NULL;
    fake_start(&f, "vm.sock", false);
    assert_int_equal(bv_qmp_open(R, "vm.sock", 2000, &q, NULL), 0);
    assert_int_equal(bv_qmp_execute(q, "emit", NULL, 0, NULL, NULL, 0, NULL), 0);

    /* the second EV first (by its data), then the first, then OTHER: each
     * wait takes only what it matches and keeps the rest queued */
    cJSON *m = obj("{\"k\":\"b\"}"), *data = NULL;
    assert_int_equal(bv_qmp_wait_event(q, "EV", m, 1000, &data, NULL), 0);
    assert_int_equal(cJSON_GetObjectItem(data, "n")->valueint, 2);
    cJSON_Delete(data);
    cJSON_Delete(m);
    assert_int_equal(bv_qmp_wait_event(q, "EV", NULL, 1000, &data, NULL), 0);
    assert_int_equal(cJSON_GetObjectItem(data, "n")->valueint, 1);
    cJSON_Delete(data);
    assert_int_equal(bv_qmp_wait_event(q, "OTHER", NULL, 1000, &data, NULL), 0);
    assert_true(cJSON_IsObject(data));           /* no data: an empty object */
    cJSON_Delete(data);

    bv_error *e = NULL;
    assert_int_equal(bv_qmp_wait_event(q, "EV", NULL, 100, NULL, &e), -ETIMEDOUT);
    assert_non_null(strstr(e->msg, "EV"));
    bv_error_free(e);

    /* flushed events are gone */
    assert_int_equal(bv_qmp_execute(q, "emit", NULL, 0, NULL, NULL, 0, NULL), 0);
    bv_qmp_flush_events(q);
    assert_int_equal(bv_qmp_wait_event(q, "OTHER", NULL, 100, NULL, NULL), -ETIMEDOUT);
    bv_qmp_close(q);
    fake_stop(&f);
}

static void test_timeout_then_stale_reply(void **state)
{
    (void)state;
    struct fake f;
    struct bv_qmp *q = NULL;
    bv_error *e = NULL;
    fake_start(&f, "vm.sock", false);
    assert_int_equal(bv_qmp_open(R, "vm.sock", 2000, &q, NULL), 0);
    assert_int_equal(bv_qmp_execute(q, "slow", NULL, 150, NULL, NULL, 0, &e), -ETIMEDOUT);
    assert_string_equal(e->msg, "QEMU did not answer slow on 'vm.sock' in time");
    bv_error_free(e);
    /* the late reply to "slow" comes first and must not be taken for echo's */
    cJSON *args = obj("{\"x\":1}"), *ret = NULL;
    assert_int_equal(bv_qmp_execute(q, "echo", args, 0, &ret, NULL, 0, NULL), 0);
    assert_true(cJSON_Compare(ret, args, true));
    cJSON_Delete(ret);
    cJSON_Delete(args);
    assert_true(bv_qmp_connected(q));
    bv_qmp_close(q);
    fake_stop(&f);
}

static void test_loss_and_reconnect(void **state)
{
    (void)state;
    struct fake f;
    struct bv_qmp *q = NULL;
    bv_error *e = NULL;
    fake_start(&f, "vm.sock", false);
    assert_int_equal(bv_qmp_open(R, "vm.sock", 2000, &q, NULL), 0);
    assert_int_equal(bv_qmp_execute(q, "bye", NULL, 1000, NULL, NULL, 0, &e), -ECONNRESET);
    assert_string_equal(e->msg, "QEMU closed the QMP connection on 'vm.sock'");
    bv_error_free(e);
    e = NULL;
    assert_false(bv_qmp_connected(q));
    assert_int_equal(bv_qmp_generation(q), 0);
    assert_int_equal(bv_qmp_wait_event(q, "EV", NULL, 100, NULL, &e), -ECONNRESET);
    bv_error_free(e);
    e = NULL;
    /* the next command reconnects (greeting and capabilities again) */
    assert_int_equal(bv_qmp_execute(q, "emit", NULL, 1000, NULL, NULL, 0, NULL), 0);
    assert_int_equal(bv_qmp_generation(q), 2);
    assert_int_equal(atomic_load(&f.accepts), 2);
    assert_int_equal(bv_qmp_wait_event(q, "EV", NULL, 1000, NULL, NULL), 0);
    bv_qmp_close(q);
    fake_stop(&f);

    /* nobody listening any more: the reconnect fails and says why */
    assert_int_equal(bv_qmp_open(R, "vm.sock", 500, &q, &e), -ECONNREFUSED);
    assert_non_null(strstr(e->msg, "cannot connect to QMP socket 'vm.sock'"));
    bv_error_free(e);
}

static void test_bad_peers(void **state)
{
    (void)state;
    struct fake f;
    struct bv_qmp *q = NULL;
    bv_error *e = NULL;
    fake_start(&f, "notqmp.sock", true);
    assert_int_equal(bv_qmp_open(R, "notqmp.sock", 1000, &q, &e), -EPROTO);
    assert_string_equal(e->msg, "'notqmp.sock' is not a QMP monitor (no greeting)");
    bv_error_free(e);
    e = NULL;
    fake_stop(&f);

    fake_start(&f, "vm.sock", false);
    assert_int_equal(bv_qmp_open(R, "vm.sock", 2000, &q, NULL), 0);
    assert_int_equal(bv_qmp_execute(q, "big", NULL, 5000, NULL, NULL, 0, &e), -EPROTO);
    assert_non_null(strstr(e->msg, "longer than"));
    bv_error_free(e);
    assert_false(bv_qmp_connected(q));
    bv_qmp_close(q);
    fake_stop(&f);
}

/* ---------------- confinement ---------------- */

static void test_confinement(void **state)
{
    (void)state;
    struct fake f, out;
    struct bv_qmp *q = NULL;
    char p[700], t[700];
    bv_error *e = NULL;

    /* a live monitor outside the directory, reachable only by escaping */
    memset(&out, 0, sizeof(out));
    snprintf(p, sizeof(p), "%s/evil.sock", outside);
    out.lfd = listen_at(p);
    assert_int_equal(pthread_create(&out.th, NULL, fake_main, &out), 0);
    fake_start(&f, "vm.sock", false);

    assert_int_equal(bv_qmp_open(R, p, 500, &q, &e), -EACCES);         /* absolute */
    bv_error_free(e);
    e = NULL;
    assert_int_equal(bv_qmp_open(R, "../outside/evil.sock", 500, &q, &e), -EACCES);
    bv_error_free(e);
    e = NULL;
    snprintf(t, sizeof(t), "%s/link.sock", qdir);                       /* symlink out */
    assert_int_equal(symlink(p, t), 0);
    assert_int_equal(bv_qmp_open(R, "link.sock", 500, &q, &e), -EACCES);
    bv_error_free(e);
    e = NULL;
    snprintf(t, sizeof(t), "%s/dirlink", qdir);                         /* directory out */
    assert_int_equal(symlink(outside, t), 0);
    assert_int_equal(bv_qmp_open(R, "dirlink/evil.sock", 500, &q, &e), -EACCES);
    bv_error_free(e);
    e = NULL;
    assert_int_equal(atomic_load(&out.accepts), 0);

    snprintf(t, sizeof(t), "%s/inner.sock", qdir);                      /* symlink inside */
    assert_int_equal(symlink("vm.sock", t), 0);
    assert_int_equal(bv_qmp_open(R, "inner.sock", 1000, &q, NULL), 0);
    bv_qmp_close(q);

    assert_int_equal(bv_qmp_open(R, "missing.sock", 500, &q, &e), -ENOENT);
    bv_error_free(e);
    e = NULL;
    snprintf(t, sizeof(t), "%s/plain", qdir);
    FILE *fp = fopen(t, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(bv_qmp_open(R, "plain", 500, &q, &e), -ENOTSOCK);
    assert_string_equal(e->msg, "'plain' is not a socket");
    bv_error_free(e);

    fake_stop(&f);
    fake_stop(&out);
}

/* ---------------- a real QEMU ---------------- */

static bool have(const char *prog)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
    return system(cmd) == 0;
}

/* Does a Unix socket at path accept a connection now?  (A QEMU monitor
 * accepts and then waits for its one client to go.) */
static bool accepts(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.107s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0;
    if (s >= 0)
        close(s);
    return ok;
}

/* Start qemu-system-x86_64 with a 64 MiB qcow2 disk (node disk0, device
 * drive0) and a monitor at qdir/name; returns its pid once the socket is
 * there, or -1. */
static pid_t start_qemu(const char *name)
{
    char disk[400], sock[400], drive[900], qmp[500], cmd[900];
    snprintf(disk, sizeof(disk), "%s/disk.qcow2", tmp);
    snprintf(sock, sizeof(sock), "%s/%s", qdir, name);
    snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 '%s' 64M", disk);
    if (system(cmd) != 0)
        return -1;
    snprintf(drive, sizeof(drive), "if=none,id=drive0,driver=qcow2,node-name=disk0,"
             "file.driver=file,file.filename=%s", disk);
    snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", sock);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);      /* QEMU dies with the test, whatever happens */
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
               "-display", "none", "-drive", drive, "-qmp", qmp, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {          /* QEMU's start-up, bounded at 10 s */
        if (accepts(sock))                    /* bound and listening: QEMU binds first */
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static bool has_node(const cJSON *nodes, const char *name)
{
    const cJSON *n;
    cJSON_ArrayForEach(n, nodes) {
        const char *nn = cJSON_GetStringValue(cJSON_GetObjectItem(n, "node-name"));
        if (nn && !strcmp(nn, name))
            return true;
    }
    return false;
}

static int64_t bitmap_count(struct bv_qmp *q, const char *bitmap)
{
    cJSON *ret = NULL, *n;
    int64_t count = -1;
    assert_int_equal(bv_qmp_execute(q, "query-named-block-nodes", NULL, 0, &ret, NULL, 0,
                                    NULL), 0);
    cJSON_ArrayForEach(n, ret) {
        const cJSON *bm;
        cJSON_ArrayForEach(bm, cJSON_GetObjectItem(n, "dirty-bitmaps")) {
            const char *nm = cJSON_GetStringValue(cJSON_GetObjectItem(bm, "name"));
            if (nm && !strcmp(nm, bitmap))
                count = (int64_t)cJSON_GetObjectItem(bm, "count")->valuedouble;
        }
    }
    cJSON_Delete(ret);
    return count;
}

static void test_real_qemu(void **state)
{
    (void)state;
    if (!have("qemu-system-x86_64") || !have("qemu-img")) {
        fprintf(stderr, "SKIP: qemu-system-x86_64 or qemu-img is not installed "
                "(scripts/install-deps installs qemu-system-x86)\n");
        skip();
    }
    pid_t pid = start_qemu("qemu.sock");
    if (pid < 0) {
        fprintf(stderr, "SKIP: qemu-system-x86_64 -machine none did not start here\n");
        skip();
    }
    struct bv_qmp *q = NULL;
    bv_error *e = NULL;
    cJSON *ret = NULL;
    char cls[64];
    assert_int_equal(bv_qmp_open(R, "qemu.sock", 5000, &q, &e), 0);
    assert_int_not_equal(bv_qmp_version(q)[0], '\0');
    assert_int_equal(bv_qmp_execute(q, "query-named-block-nodes", NULL, 0, &ret, NULL, 0,
                                    NULL), 0);
    assert_true(has_node(ret, "disk0"));
    cJSON_Delete(ret);

    cJSON *args = obj("{\"node\":\"disk0\",\"name\":\"bm0\"}");
    assert_int_equal(bv_qmp_execute(q, "block-dirty-bitmap-add", args, 0, NULL, NULL, 0, NULL),
                     0);
    assert_int_equal(bitmap_count(q, "bm0"), 0);
    /* the same again: QEMU's GenericError, passed on */
    assert_int_equal(bv_qmp_execute(q, "block-dirty-bitmap-add", args, 0, NULL, cls,
                                    sizeof(cls), &e), -EIO);
    assert_string_equal(cls, "GenericError");
    assert_non_null(strstr(e->msg, "bm0"));
    bv_error_free(e);
    e = NULL;
    cJSON_Delete(args);

    args = obj("{\"command-line\":\"qemu-io drive0 \\\"write -P 0xab 1M 128k\\\"\"}");
    assert_int_equal(bv_qmp_execute(q, "human-monitor-command", args, 0, NULL, NULL, 0, NULL),
                     0);
    cJSON_Delete(args);
    assert_int_equal(bitmap_count(q, "bm0"), 131072);

    args = obj("{\"node\":\"nope\",\"name\":\"bm1\"}");
    assert_int_equal(bv_qmp_execute(q, "block-dirty-bitmap-add", args, 0, NULL, cls,
                                    sizeof(cls), &e), -EIO);
    cJSON_Delete(args);
    bv_error_free(e);
    e = NULL;

    /* quit: SHUTDOWN arrives, then the connection is gone and stays gone */
    assert_int_equal(bv_qmp_execute(q, "quit", NULL, 0, NULL, NULL, 0, NULL), 0);
    int r = bv_qmp_wait_event(q, "SHUTDOWN", NULL, 5000, NULL, NULL);
    assert_int_equal(r, 0);
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(bv_qmp_wait_event(q, "SHUTDOWN", NULL, 2000, NULL, &e), -ECONNRESET);
    bv_error_free(e);
    e = NULL;
    r = bv_qmp_execute(q, "query-status", NULL, 1000, NULL, NULL, 0, &e);
    assert_true(r == -ENOENT || r == -ECONNREFUSED);
    bv_error_free(e);
    bv_qmp_close(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_commands_and_errors),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_timeout_then_stale_reply),
        cmocka_unit_test(test_loss_and_reconnect),
        cmocka_unit_test(test_bad_peers),
        cmocka_unit_test(test_confinement),
        cmocka_unit_test(test_real_qemu),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
