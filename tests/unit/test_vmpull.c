/*
 * Pull backups of a VM drive (runtime/vmpull.c) against a real
 * qemu-system-x86_64 -machine none with a 64 MiB qcow2 disk: a full and
 * incrementals, each `qemu-img compare`-identical to a raw copy of the disk
 * taken at its point in time; guest writes made *during* a pull (HMP
 * qemu-io from the progress hook) do not reach it; an incremental copies
 * exactly the dirty granules; a zero write is copied as zeros; the bitmap
 * rules (success drops the old bitmap; a cancelled incremental merges it
 * into the new one, and the next incremental is still right); QEMU killed
 * mid-pull fails the pull with a clear error, removes the link and leaves
 * the chain intact.  After each pull QEMU holds no blockvault- objects.
 * Skips without QEMU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "app.h"
#include "bvdb/catalog.h"
#include "bv/path.h"
#include "qmp/qmp.h"
#include "runtime/registry.h"
#include "runtime/vmdrives.h"
#include "runtime/vmpull.h"

static char tmp[128], disk[200], images[200];
static pid_t qemu = -1;
static struct bv_app app;
static struct bv_root *troot;        /* tmp: the test's own monitor is there */
static struct bv_qmp *mon;
static struct bv_vm_drive *vd;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void hmp(const char *io)
{
    char line[512];
    snprintf(line, sizeof(line), "qemu-io drive0 \"%s\"", io);
    cJSON *a = cJSON_CreateObject(), *ret = NULL;
    cJSON_AddStringToObject(a, "command-line", line);
    assert_int_equal(bv_qmp_execute(mon, "human-monitor-command", a, 0, &ret, NULL, 0, NULL),
                     0);
    cJSON_Delete(a);
    cJSON_Delete(ret);
}

/* A raw copy of the disk now (QEMU holds it; -U reads beside it). */
static void ref(const char *name)
{
    hmp("flush");
    assert_int_equal(sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/%s'", disk, tmp, name), 0);
}

static void identical(const char *link, const char *refname)
{
    int r = sh("qemu-img compare -q -f qcow2 -F raw '%s/%s' '%s/%s'", images, link, tmp, refname);
    if (r != 0)
        fail_msg("%s differs from %s (qemu-img compare exit %d)", link, refname, r);
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

static bool wait_socket(const char *path)
{
    for (int i = 0; i < 1000; i++) {          /* QEMU's start-up, bounded at 10 s */
        if (accepts(path))                    /* bound and listening: QEMU binds first */
            return true;
        if (waitpid(qemu, NULL, WNOHANG) == qemu)
            return false;
        usleep(10000);
    }
    return false;
}

static int start_qemu(void)
{
    char drive[400], q1[300], q2[300], s1[200], s2[200];
    snprintf(disk, sizeof(disk), "%s/vm.qcow2", tmp);
    if (sh("qemu-img create -q -f qcow2 '%s' 64M", disk) != 0)
        return -1;
    snprintf(s1, sizeof(s1), "%s/qmp/vm.sock", tmp);
    snprintf(s2, sizeof(s2), "%s/test.sock", tmp);
    snprintf(drive, sizeof(drive), "if=none,id=drive0,driver=qcow2,node-name=disk0,"
             "file.driver=file,file.filename=%s", disk);
    snprintf(q1, sizeof(q1), "unix:%s,server=on,wait=off", s1);
    snprintf(q2, sizeof(q2), "unix:%s,server=on,wait=off", s2);
    qemu = fork();
    if (qemu == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
               "-display", "none", "-drive", drive, "-qmp", q1, "-qmp", q2, (char *)NULL);
        _exit(127);
    }
    return qemu > 0 && wait_socket(s1) && wait_socket(s2) ? 0 : -1;
}

static int setup(void **state)
{
    (void)state;
    if (sh("command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null")) {
        fprintf(stderr, "SKIP: qemu-system-x86_64 or qemu-img is not installed "
                "(scripts/install-deps installs qemu-system-x86)\n");
        exit(77);
    }
    snprintf(tmp, sizeof(tmp), "/tmp/bvpullXXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    char p[300];
    snprintf(p, sizeof(p), "%s/qmp", tmp);
    mkdir(p, 0700);
    snprintf(images, sizeof(images), "%s/images", tmp);
    mkdir(images, 0700);
    snprintf(p, sizeof(p), "%s/c", images);
    mkdir(p, 0700);
    if (start_qemu() < 0) {
        fprintf(stderr, "SKIP: qemu-system-x86_64 -machine none did not start here\n");
        exit(77);
    }
    snprintf(app.cfg.data_dir, sizeof(app.cfg.data_dir), "%s", tmp);
    char err[256], db[300];
    snprintf(db, sizeof(db), "%s/catalog.db", tmp);
    if (bvdb_open(db, &app.db, err, sizeof(err)) < 0)   /* VM drives are recorded */
        return -1;
    snprintf(p, sizeof(p), "%s/qmp", tmp);
    if (bv_root_open(images, &app.root, NULL) < 0 || bv_root_open(p, &app.qmp_root, NULL) < 0 ||
        bv_root_open(tmp, &troot, NULL) < 0 || !(app.registry = bv_registry_new()) ||
        bv_vms_init(&app) < 0 || bv_qmp_open(troot, "test.sock", 5000, &mon, NULL) < 0)
        return -1;
    struct bv_vm_drive_spec s = { .id = "vm", .qmp = "vm.sock", .node = "drive0" };
    return bv_vm_drives_create(&app, &s, &vd, NULL);
}

static int teardown(void **state)
{
    (void)state;
    bv_vm_drives_put(&app, vd);
    bv_vms_free(&app);
    bv_registry_free(app.registry);
    bvdb_close(app.db);
    bv_qmp_close(mon);
    bv_root_close(app.root);
    bv_root_close(app.qmp_root);
    bv_root_close(troot);
    if (qemu > 0) {
        kill(qemu, SIGKILL);
        waitpid(qemu, NULL, 0);
    }
    return sh("rm -rf '%s'", tmp) == 0 ? 0 : -1;
}

/* blockvault- objects QEMU holds (exports, jobs, nodes), and a bitmap's count (-1: none). */
static int leftovers(void)
{
    const char *cmds[][2] = { { "query-block-exports", "id" }, { "query-block-jobs", "device" },
                              { "query-named-block-nodes", "node-name" } };
    int n = 0;
    for (size_t i = 0; i < 3; i++) {
        cJSON *list = NULL, *it;
        assert_int_equal(bv_qmp_execute(mon, cmds[i][0], NULL, 0, &list, NULL, 0, NULL), 0);
        cJSON_ArrayForEach(it, list) {
            const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(it, cmds[i][1]));
            n += s && !strncmp(s, "blockvault-", 11);
        }
        cJSON_Delete(list);
    }
    return n;
}

static int64_t bitmap_count(const char *name)
{
    struct bv_vm_drive_info info;
    const cJSON *bm;
    int64_t c = -1;
    assert_int_equal(bv_vm_drive_info(vd, &info, NULL), 0);
    cJSON_ArrayForEach(bm, info.bitmaps)
        if (!strcmp(cJSON_GetObjectItem(bm, "name")->valuestring, name))
            c = (int64_t)cJSON_GetObjectItem(bm, "count")->valuedouble;
    bv_vm_drive_info_clear(&info);
    return c;
}

/* Hooks: write into the guest (once) while the pull runs, or cancel, or kill QEMU. */
struct hook {
    const char *io;
    bool cancel, kill_qemu, fired;
};

static void on_progress(void *opaque, uint64_t done, uint64_t total)
{
    struct hook *h = opaque;
    (void)done;
    (void)total;
    if (h->fired)
        return;
    h->fired = true;
    if (h->io)
        hmp(h->io);
    if (h->kill_qemu) {
        kill(qemu, SIGKILL);
        waitpid(qemu, NULL, 0);
        qemu = -1;
    }
}

static bool on_cancelled(void *opaque)
{
    struct hook *h = opaque;
    return h->cancel && h->fired;
}

static int pull(const char *target, const char *backing, const char *old, const char *new,
                struct hook *h, unsigned inflight, struct bv_vm_pull_result *res, bv_error **e)
{
    struct bv_vm_pull_opts o = {
        .target = target, .backing = backing, .old_bitmap = old, .new_bitmap = new,
        .inflight = inflight, .progress = on_progress, .cancelled = on_cancelled, .opaque = h,
    };
    return bv_vm_pull(vd, &o, res, e);
}

static void test_full_and_incrementals(void **state)
{
    (void)state;
    struct bv_vm_pull_result res;
    struct hook h = { .io = "write -P 0x77 0 1M" };   /* lands during the full */
    hmp("write -P 0x11 2M 3M");
    hmp("write -P 0x22 40M 64k");
    ref("p0.raw");
    assert_int_equal(pull("c/full.qcow2", NULL, NULL, "bvc-1", &h, 16, &res, NULL), 0);
    assert_true(h.fired);
    assert_int_equal(res.size, 64 << 20);
    identical("c/full.qcow2", "p0.raw");                /* without the write made during it */
    assert_int_equal(leftovers(), 0);
    assert_int_equal(bitmap_count("bvc-1"), 1 << 20);  /* that write, recorded for the next */

    /* incremental 1: what was written during the full and after it, exactly */
    hmp("write -P 0x33 8M 64k");
    hmp("write -P 0x44 20M 128k");
    ref("p1.raw");
    struct hook h1 = { .io = "write -P 0x55 30M 64k" };
    assert_int_equal(pull("c/inc1.qcow2", "full.qcow2", "bvc-1", "bvc-2", &h1, 4, &res, NULL), 0);
    assert_int_equal(res.copied, (1 << 20) + (64 << 10) + (128 << 10));
    identical("c/inc1.qcow2", "p1.raw");
    assert_int_equal(bitmap_count("bvc-1"), -1);       /* success: the old bitmap goes */
    assert_int_equal(bitmap_count("bvc-2"), 64 << 10);
    assert_int_equal(leftovers(), 0);

    /* incremental 2: a zero write over data is copied as zeros (it must mask
     * the data below it in the backing links) */
    hmp("write -z 2M 1M");
    ref("p2.raw");
    struct hook h2 = { 0 };
    assert_int_equal(pull("c/inc2.qcow2", "inc1.qcow2", "bvc-2", "bvc-3", &h2, 16, &res, NULL), 0);
    assert_int_equal(res.copied, (64 << 10) + (1 << 20));
    identical("c/inc2.qcow2", "p2.raw");
    identical("c/inc1.qcow2", "p1.raw");                /* earlier points unchanged */
    identical("c/full.qcow2", "p0.raw");
}

static void test_cancelled_incremental_merges_bitmap(void **state)
{
    (void)state;
    struct bv_vm_pull_result res;
    bv_error *e = NULL;
    hmp("write -P 0x66 10M 4M");
    int64_t before = bitmap_count("bvc-3");
    struct hook h = { .cancel = true, .io = "write -P 0x67 50M 64k" };
    assert_int_equal(pull("c/inc3.qcow2", "inc2.qcow2", "bvc-3", "bvc-4", &h, 1, &res, &e),
                     -ECANCELED);
    assert_non_null(strstr(e->msg, "cancelled"));
    bv_error_free(e);
    e = NULL;
    struct stat st;
    char p[300];
    snprintf(p, sizeof(p), "%s/c/inc3.qcow2", images);
    assert_int_equal(stat(p, &st), -1);                /* the link is gone */
    assert_int_equal(bitmap_count("bvc-3"), -1);       /* merged into the new one ... */
    assert_true(bitmap_count("bvc-4") >= before + (64 << 10));
    assert_int_equal(leftovers(), 0);

    /* ... so the next incremental still starts at the last good backup */
    ref("p3.raw");
    struct hook h2 = { 0 };
    assert_int_equal(pull("c/inc3.qcow2", "inc2.qcow2", "bvc-4", "bvc-5", &h2, 16, &res, NULL), 0);
    identical("c/inc3.qcow2", "p3.raw");
}

static void test_qemu_killed_mid_pull(void **state)
{
    (void)state;
    struct bv_vm_pull_result res;
    bv_error *e = NULL;
    hmp("write -P 0x88 0 32M");
    struct hook h = { .kill_qemu = true };
    int r = pull("c/inc4.qcow2", "inc3.qcow2", "bvc-5", "bvc-6", &h, 1, &res, &e);
    assert_true(r < 0);
    assert_non_null(e);
    if (!strstr(e->msg, "QEMU went away"))
        fail_msg("unexpected error: %s", e->msg);
    bv_error_free(e);
    assert_true(res.copied < res.total);
    struct stat st;
    char p[300];
    snprintf(p, sizeof(p), "%s/c/inc4.qcow2", images);
    assert_int_equal(stat(p, &st), -1);
    identical("c/inc3.qcow2", "p3.raw");                /* the chain is intact */
    identical("c/full.qcow2", "p0.raw");
    assert_int_equal(sh("qemu-img check -q '%s/c/inc3.qcow2'", images), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_and_incrementals),
        cmocka_unit_test(test_cancelled_incremental_merges_bitmap),
        cmocka_unit_test(test_qemu_killed_mid_pull),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
