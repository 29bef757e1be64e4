/*
 * VM drives against a real QEMU (qemu-system-x86_64 -machine none with a
 * qcow2 disk): the daemon runs with --qmp-dir; the test has a monitor of its
 * own (a second -qmp, outside that directory) for guest writes through HMP
 * qemu-io and for looking at what QEMU holds.  Checked: create (size,
 * QEMU's bitmaps, source and vm_status), reads through the short-lived
 * export equal to a raw copy of the disk and leaving nothing in QEMU, the
 * 409s of mutations, the 400s of bad sockets (.., absolute, symlink out,
 * missing, not QEMU) and nodes, the shared id namespace, DELETE removing
 * blockvault-tmp objects, vm_status "gone" after QEMU quits, and a daemon
 * without --qmp-dir refusing VM drives.  Skips (77) without QEMU.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/statvfs.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "harness.h"

static struct bvh H;
static char tmp[256], qdir[300], outside[300], disk[300], qemu_out[300];
static pid_t qemu = -1;
static int mon = -1;             /* the test's own QMP monitor */
static FILE *mon_in;

/* ---------------- the test's monitor ---------------- */

static cJSON *mon_read(void)
{
    char *line = NULL;
    size_t cap = 0;
    cJSON *j = NULL;
    while (getline(&line, &cap, mon_in) > 0) {
        j = cJSON_Parse(line);
        if (j && !cJSON_GetObjectItem(j, "event"))
            break;
        cJSON_Delete(j);
        j = NULL;
    }
    free(line);
    return j;
}

/* Run a command on the test's monitor; returns "return" (caller frees) or
 * fails the test on an error reply. */
static cJSON *mon_cmd(const char *fmt, ...)
{
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    size_t n = strlen(buf);
    buf[n++] = '\n';
    assert_int_equal(write(mon, buf, n), (ssize_t)n);
    cJSON *j = mon_read();
    assert_non_null(j);
    if (cJSON_GetObjectItem(j, "error"))
        fail_msg("QMP %s: %s", buf, cJSON_PrintUnformatted(j));
    cJSON *ret = cJSON_DetachItemFromObject(j, "return");
    cJSON_Delete(j);
    return ret;
}

static void hmp_io(const char *cmd)
{
    cJSON_Delete(mon_cmd("{\"execute\":\"human-monitor-command\",\"arguments\":"
                         "{\"command-line\":\"qemu-io drive0 \\\"%s\\\"\"}}", cmd));
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0 && connect(s, (struct sockaddr *)&sa, sizeof(sa)) == 0)
        return s;
    if (s >= 0)
        close(s);
    return -1;
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
    for (int i = 0; i < 1000; i++) {           /* QEMU's start-up, bounded at 10 s */
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
    char drive[700], q1[500], q2[500], s1[400], s2[400];
    snprintf(disk, sizeof(disk), "%s/vm1.qcow2", tmp);
    snprintf(qemu_out, sizeof(qemu_out), "%s/qemu.out", tmp);
    if (bvh_sh("qemu-img create -q -f qcow2 '%s' 64M", disk) != 0)
        return -1;
    snprintf(s1, sizeof(s1), "%s/vm1.sock", qdir);
    snprintf(s2, sizeof(s2), "%s/test.sock", outside);
    snprintf(drive, sizeof(drive), "if=none,id=drive0,driver=qcow2,node-name=disk0,"
             "file.driver=file,file.filename=%s", disk);
    snprintf(q1, sizeof(q1), "unix:%s,server=on,wait=off", s1);
    snprintf(q2, sizeof(q2), "unix:%s,server=on,wait=off", s2);
    qemu = fork();
    if (qemu == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);      /* QEMU dies with the test, whatever happens */
        int nul = open("/dev/null", O_RDWR);
        int out = open(qemu_out, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
        dup2(nul, 0);
        dup2(out >= 0 ? out : nul, 1);        /* HMP qemu-io prints there, line-buffered */
        execlp("stdbuf", "stdbuf", "-oL", "qemu-system-x86_64", "-machine", "none",
               "-nodefaults", "-display", "none", "-drive", drive, "-qmp", q1, "-qmp", q2,
               (char *)NULL);
        _exit(127);
    }
    if (qemu < 0 || !wait_socket(s1) || !wait_socket(s2) || (mon = connect_unix(s2)) < 0)
        return -1;
    mon_in = fdopen(dup(mon), "r");
    cJSON_Delete(mon_read());                  /* the greeting */
    cJSON_Delete(mon_cmd("{\"execute\":\"qmp_capabilities\"}"));
    return 0;
}

static int setup(void **state)
{
    (void)state;
    if (!bvh_have("qemu-system-x86_64") || !bvh_have("qemu-img") || !bvh_have("stdbuf")) {
        fprintf(stderr, "SKIP: qemu-system-x86_64, qemu-img or stdbuf is not installed "
                "(scripts/install-deps installs qemu-system-x86)\n");
        exit(77);
    }
    snprintf(tmp, sizeof(tmp), "/tmp/bvvmXXXXXX");
    if (!mkdtemp(tmp))
        return -1;
    snprintf(qdir, sizeof(qdir), "%s/qmp", tmp);
    snprintf(outside, sizeof(outside), "%s/out", tmp);
    mkdir(qdir, 0700);
    mkdir(outside, 0700);
    if (start_qemu() < 0) {
        fprintf(stderr, "SKIP: qemu-system-x86_64 -machine none did not start here\n");
        exit(77);
    }
    static char arg[400];
    snprintf(arg, sizeof(arg), "--qmp-dir=%s", qdir);
    static const char *args[2];
    args[0] = arg;
    struct bvh_opts o = { .args = args };
    if (bvh_start(&H, &o) < 0) {
        kill(qemu, SIGKILL);
        waitpid(qemu, NULL, 0);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    int rc = bvh_stop(&H);           /* 0: a clean exit, no sanitizer report */
    if (mon_in)
        fclose(mon_in);
    if (mon >= 0)
        close(mon);
    if (qemu > 0) {
        kill(qemu, SIGKILL);
        waitpid(qemu, NULL, 0);
    }
    bvh_sh("rm -rf '%s'", tmp);
    if (rc != 0)
        fprintf(stderr, "the daemon exited with %d\n", rc);
    return rc == 0 ? 0 : -1;
}

static void expect_error(const char *method, const char *path, const char *body, long status,
                         const char *needle)
{
    struct bvh_resp r = { 0 };
    assert_int_equal(bvh_request(&H, method, path, body, body ? strlen(body) : 0, NULL, NULL,
                                 &r), 0);
    if (r.status != status)
        fail_msg("%s %s %s: %ld %s", method, path, body ? body : "", r.status, r.body);
    if (status != 500)
        bvh_assert_error(&r, status, status == 404 ? "DeviceNotFound" : "GenericError");
    if (needle && !strstr(r.body, needle))
        fail_msg("%s %s: '%s' not in %s", method, path, needle, r.body);
    bvh_resp_free(&r);
}

/* Names of what QEMU holds that start with "blockvault-". */
static int blockvault_objects(void)
{
    int n = 0;
    const char *cmds[][2] = { { "query-block-exports", "id" }, { "query-block-jobs", "device" },
                              { "query-named-block-nodes", "node-name" } };
    for (size_t i = 0; i < 3; i++) {
        cJSON *list = mon_cmd("{\"execute\":\"%s\"}", cmds[i][0]), *it;
        cJSON_ArrayForEach(it, list) {
            const char *s = cJSON_GetStringValue(cJSON_GetObjectItem(it, cmds[i][1]));
            n += s && !strncmp(s, "blockvault-", 11);
        }
        cJSON_Delete(list);
    }
    return n;
}

/* ---------------- tests ---------------- */

static void test_create_get_read(void **state)
{
    (void)state;
    cJSON_Delete(mon_cmd("{\"execute\":\"block-dirty-bitmap-add\",\"arguments\":"
                         "{\"node\":\"disk0\",\"name\":\"bm0\"}}"));
    cJSON *d = bvh_json(&H, "POST", 201, "/api/v1/drives",
                        "{\"id\":\"vm1\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\","
                        "\"node\":\"drive0\"}");
    assert_string_equal(bvh_str(d, "format"), "qemu");
    assert_int_equal((int64_t)bvh_num(d, "size"), 64 << 20);
    const cJSON *src = cJSON_GetObjectItem(d, "source");
    assert_string_equal(bvh_str(src, "qmp"), "vm1.sock");
    assert_string_equal(bvh_str(src, "node"), "drive0");
    assert_string_equal(bvh_str(src, "vm_status"), "running");
    const cJSON *bm = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "bitmaps"), 0);
    assert_string_equal(bvh_str(bm, "name"), "bm0");
    assert_int_equal((int)bvh_num(bm, "count"), 0);
    cJSON_Delete(d);

    hmp_io("write -P 0xab 1M 64k");
    hmp_io("write -P 0x5c 3M 4k");
    hmp_io("flush");
    d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1", NULL);
    bm = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "bitmaps"), 0);
    assert_int_equal((int)bvh_num(bm, "count"), 131072);      /* two 64 KiB granules */
    assert_string_equal(bvh_str(bm, "status"), "active");
    cJSON_Delete(d);

    /* the list holds it beside local drives */
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"local\",\"format\":\"raw\",\"size\":\"1M\"}"));
    cJSON *all = bvh_json(&H, "GET", 200, "/api/v1/drives", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(all, "drives")), 2);
    cJSON_Delete(all);

    /* reads equal a raw copy of the disk (qemu-img -U reads beside QEMU) */
    char ref[400];
    snprintf(ref, sizeof(ref), "%s/ref.raw", tmp);
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s'", disk, ref), 0);
    struct bvh_resp r = { 0 };
    assert_int_equal(bvh_request(&H, "GET", "/api/v1/drives/vm1/data?offset=0&length=4M", NULL,
                                 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 4 << 20);
    FILE *f = fopen(ref, "rb");
    char *want = malloc(4 << 20);
    assert_int_equal(fread(want, 1, 4 << 20, f), 4 << 20);
    fclose(f);
    assert_memory_equal(r.body, want, 4 << 20);
    assert_int_equal((unsigned char)r.body[1 << 20], 0xab);
    assert_int_equal((unsigned char)r.body[3 << 20], 0x5c);
    free(want);
    bvh_resp_free(&r);
    assert_int_equal(blockvault_objects(), 0);               /* the export is gone again */

    expect_error("GET", "/api/v1/drives/vm1/data?offset=64M&length=1", NULL, 400, "beyond");
}

static void test_mutations_refused(void **state)
{
    (void)state;
    const char *msg = "not supported for VM drives";
    expect_error("PUT", "/api/v1/drives/vm1/data?offset=0", "abcd", 409, msg);
    expect_error("POST", "/api/v1/drives/vm1/io", "{\"commands\":[\"write 0 512\"]}", 409, msg);
    expect_error("POST", "/api/v1/drives/vm1/resize", "{\"size\":\"128M\"}", 409, msg);
    expect_error("POST", "/api/v1/drives/vm1/bitmaps", "{\"name\":\"x\"}", 409, msg);
    expect_error("DELETE", "/api/v1/drives/vm1/bitmaps/bm0", NULL, 409, msg);
    expect_error("POST", "/api/v1/jobs", "{\"type\":\"backup\",\"device\":\"vm1\","
                 "\"sync\":\"full\",\"target\":\"x.qcow2\"}", 400, msg);

    /* transactions naming a VM drive: 400, and the actions before it undone */
    expect_error("POST", "/api/v1/transactions", "{\"actions\":[{\"type\":"
                 "\"block-dirty-bitmap-add\",\"data\":{\"node\":\"vm1\",\"name\":\"t\"}}]}",
                 400, msg);
    expect_error("POST", "/api/v1/transactions", "{\"actions\":[{\"type\":\"drive-backup\","
                 "\"data\":{\"device\":\"vm1\",\"sync\":\"full\",\"target\":\"t.qcow2\"}}]}",
                 400, msg);
    expect_error("POST", "/api/v1/transactions", "{\"actions\":[{\"type\":"
                 "\"block-dirty-bitmap-add\",\"data\":{\"node\":\"local\",\"name\":\"t\"}},"
                 "{\"type\":\"block-dirty-bitmap-disable\",\"data\":{\"node\":\"vm1\","
                 "\"name\":\"bm0\"}}]}", 400, msg);
    cJSON *l = bvh_json(&H, "GET", 200, "/api/v1/drives/local/bitmaps", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(l, "bitmaps")), 0);
    cJSON_Delete(l);
    struct stat st;
    char t[700];
    snprintf(t, sizeof(t), "%s/t.qcow2", H.images);
    assert_int_equal(stat(t, &st), -1);                       /* no target made */
    cJSON *bm = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1", NULL), *it;
    cJSON_ArrayForEach(it, cJSON_GetObjectItem(bm, "bitmaps")) {
        assert_string_not_equal(bvh_str(it, "name"), "t");
        if (!strcmp(bvh_str(it, "name"), "bm0"))
            assert_true(bvh_bool(it, "recording"));           /* QEMU's bitmap untouched */
    }
    cJSON_Delete(bm);
}

/* A chain backup of vm1, waited for (bounded); returns the backup object. */
static cJSON *backup(const char *kind, bool verify)
{
    char path[128];
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm1/backups",
                        "{\"kind\":\"%s\",\"verify\":%s}", kind, verify ? "true" : "false");
    const cJSON *job = cJSON_GetObjectItem(r, "job");
    assert_string_equal(bvh_str(job, "type"), "backup");
    snprintf(path, sizeof(path), "/api/v1/backups/%s",
             bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    for (int i = 0; i < 1500; i++) {               /* bounded at 30 s */
        cJSON *b = bvh_json(&H, "GET", 200, path, NULL);
        bool verified = cJSON_IsString(cJSON_GetObjectItem(b, "verified_at"));
        if (strcmp(bvh_str(b, "status"), "running") != 0 &&
            (!verify || verified || strcmp(bvh_str(b, "status"), "complete") != 0))
            return b;
        cJSON_Delete(b);
        usleep(20000);
    }
    fail_msg("backup %s did not end", path);
    return NULL;
}

static void link_identical(const cJSON *b, const char *refname)
{
    int r = bvh_sh("qemu-img compare -q -f qcow2 -F raw '%s/%s' '%s/%s'", H.images,
                   bvh_str(b, "file"), tmp, refname);
    if (r != 0)
        fail_msg("%s differs from %s", bvh_str(b, "file"), refname);
}

/* A job, polled until it is dismissed (bounded at 30 s); its error must be null. */
static void job_ok(const char *id)
{
    char path[128];
    cJSON *job = NULL;
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", id);
    for (int i = 0; i < 1500; i++) {
        job = bvh_json(&H, "GET", 200, path, NULL);
        if (!strcmp(bvh_str(job, "status"), "null"))
            break;
        cJSON_Delete(job);
        job = NULL;
        usleep(20000);
    }
    assert_non_null(job);
    if (cJSON_IsString(cJSON_GetObjectItem(job, "error")))
        fail_msg("job %s failed: %s", id, bvh_str(job, "error"));
    cJSON_Delete(job);
}

/* HMP qemu-io on a block node on the test's monitor: true when QEMU's
 * output says the whole read matched the pattern. */
static bool node_reads(const char *node, int pattern, const char *off, const char *len)
{
    if (truncate(qemu_out, 0) < 0)
        fail_msg("cannot truncate %s", qemu_out);
    cJSON *ret = mon_cmd("{\"execute\":\"human-monitor-command\",\"arguments\":"
                         "{\"command-line\":\"qemu-io %s \\\"read -P %d %s %s\\\"\"}}",
                         node, pattern, off, len);
    if (!cJSON_IsString(ret) || ret->valuestring[0])          /* HMP's own errors come here */
        fail_msg("qemu-io %s: %s", node, cJSON_PrintUnformatted(ret));
    cJSON_Delete(ret);
    return bvh_sh("grep -q '^read ' '%s' && ! grep -q 'Pattern verification failed' '%s'",
                  qemu_out, qemu_out) == 0;
}

/* A VM backup restored into a new (local) drive, the disk as it was; and into
 * a file that the VM then uses: attached to QEMU with blockdev-add, read back
 * with qemu-io read -P (and a wrong pattern is seen as wrong). */
static void restore_into_drive_and_vm(const cJSON *b, const char *refname)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bvh_str(b, "id"));
    expect_error("POST", path, "{\"drive\":\"vm1\"}", 409, "already exists");
    cJSON *job = bvh_json(&H, "POST", 201, path, "{\"drive\":\"vmr\"}");
    job_ok(bvh_str(job, "id"));
    cJSON_Delete(job);
    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/vmr", NULL);
    assert_string_equal(bvh_str(d, "format"), "qcow2");
    assert_int_equal((int64_t)bvh_num(d, "size"), 64 << 20);
    assert_int_equal(bvh_sh("qemu-img compare -q -U -f qcow2 -F raw '%s/%s' '%s/%s'",
                            H.images, bvh_str(d, "file"), tmp, refname), 0);
    cJSON_Delete(d);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/vmr", NULL));

    job = bvh_json(&H, "POST", 201, path, "{\"file\":\"tovm.qcow2\",\"format\":\"qcow2\"}");
    job_ok(bvh_str(job, "id"));
    cJSON_Delete(job);
    cJSON_Delete(mon_cmd("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"qcow2\","
                         "\"node-name\":\"restored0\",\"read-only\":true,\"file\":{\"driver\":"
                         "\"file\",\"filename\":\"%s/tovm.qcow2\"}}}", H.images));
    assert_true(node_reads("restored0", 0, "5M", "64k"));      /* the zero write */
    assert_true(node_reads("restored0", 0x21, "5184k", "960k"));
    assert_true(node_reads("restored0", 0x31, "6M", "64k"));
    assert_true(node_reads("restored0", 0x21, "6208k", "960k"));
    assert_true(node_reads("restored0", 0x32, "50M", "128k"));
    assert_false(node_reads("restored0", 0x99, "6M", "64k")); /* the check can fail */
    cJSON_Delete(mon_cmd("{\"execute\":\"blockdev-del\",\"arguments\":{\"node-name\":"
                         "\"restored0\"}}"));
}

/* Chain backups pulled from the VM: a full and two incrementals, each the
 * disk as it was (raw copies taken at the same moments), the incrementals'
 * data_bytes the dirty granules, readable through /backups/{bid}/data, and
 * nothing of Blockvault's left in QEMU but the chain's one bitmap. */
static void test_backups(void **state)
{
    (void)state;
    hmp_io("write -P 0x21 5M 2M");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/b0.raw'", disk, tmp),
                     0);
    cJSON *b0 = backup("incremental", false);             /* no chain yet: a full, with reason */
    assert_string_equal(bvh_str(b0, "status"), "complete");
    assert_string_equal(bvh_str(b0, "kind"), "full");
    assert_non_null(strstr(bvh_str(b0, "reason"), "no complete backup"));
    link_identical(b0, "b0.raw");

    hmp_io("write -P 0x31 6M 64k");
    hmp_io("write -P 0x32 50M 128k");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/b1.raw'", disk, tmp),
                     0);
    cJSON *b1 = backup("incremental", false);
    assert_string_equal(bvh_str(b1, "status"), "complete");
    assert_string_equal(bvh_str(b1, "kind"), "incremental");
    assert_string_equal(bvh_str(b1, "parent"), bvh_str(b0, "id"));
    assert_int_equal((int64_t)bvh_num(b1, "data_bytes"), 192 << 10);
    link_identical(b1, "b1.raw");

    hmp_io("write -z 5M 64k");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/b2.raw'", disk, tmp),
                     0);
    cJSON *b2 = backup("incremental", true);       /* with a checksum verify after it */
    assert_string_equal(bvh_str(b2, "kind"), "incremental");
    assert_string_equal(bvh_str(b2, "status"), "complete");
    assert_true(cJSON_IsString(cJSON_GetObjectItem(b2, "verified_at")));
    assert_false(bvh_bool(b2, "damaged"));
    assert_int_equal((int64_t)bvh_num(b2, "data_bytes"), 64 << 10);
    link_identical(b2, "b2.raw");
    link_identical(b1, "b1.raw");

    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s/data?offset=5M&length=128k",
             bvh_str(b2, "id"));
    struct bvh_resp r = { 0 };
    assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    for (size_t i = 0; i < (64 << 10); i++)
        if (r.body[i] != 0 || (unsigned char)r.body[i + (64 << 10)] != 0x21)
            fail_msg("backup data differs at %zu", i);
    bvh_resp_free(&r);

    /* QEMU: no temporary objects, one chain bitmap (the newest backup's) */
    assert_int_equal(blockvault_objects(), 0);
    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1", NULL), *bm;
    int chain_bitmaps = 0;
    char want[128];
    snprintf(want, sizeof(want), "blockvault-chain-%s-%s", bvh_str(b2, "chain"),
             bvh_str(b2, "id"));
    cJSON_ArrayForEach(bm, cJSON_GetObjectItem(d, "bitmaps")) {
        if (!strncmp(bvh_str(bm, "name"), "blockvault-chain-", 17)) {
            chain_bitmaps++;
            assert_string_equal(bvh_str(bm, "name"), want);
        }
    }
    assert_int_equal(chain_bitmaps, 1);
    cJSON_Delete(d);

    /* the chain as GET …/backups lists it (the dashboard's timeline reads it) */
    cJSON *list = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1/backups", NULL);
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItem(list, "chains"), 0);
    assert_string_equal(bvh_str(ch, "id"), bvh_str(b0, "chain"));
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(ch, "backups")), 3);
    cJSON_Delete(list);

    /* metrics: the VM's status, three pulls, the bytes they pulled */
    struct bvh_resp m = { 0 };
    assert_int_equal(bvh_request(&H, "GET", "/metrics", NULL, 0, NULL, NULL, &m), 0);
    assert_int_equal(m.status, 200);
    char line[256];
    const char *want_lines[] = {
        "blockvault_vm_drive_status{drive=\"vm1\",status=\"running\"} 1\n",
        "blockvault_vm_drive_status{drive=\"vm1\",status=\"gone\"} 0\n",
        "blockvault_vm_pulls_total{drive=\"vm1\",outcome=\"ok\"} 3\n",
        "blockvault_vm_pulls_total{drive=\"vm1\",outcome=\"failed\"} 0\n",
    };
    for (size_t i = 0; i < 4; i++)
        if (!strstr(m.body, want_lines[i]))
            fail_msg("/metrics lacks %s", want_lines[i]);
    snprintf(line, sizeof(line), "blockvault_vm_pulled_bytes_total{drive=\"vm1\"} %.0f\n",
             bvh_num(b0, "data_bytes") + bvh_num(b1, "data_bytes") + bvh_num(b2, "data_bytes"));
    if (!strstr(m.body, line))
        fail_msg("/metrics lacks %s", line);
    bvh_resp_free(&m);
    /* prune the first incremental: its data merges into the second, every
     * other point stays the disk as it was */
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bvh_str(b1, "id"));
    cJSON *pj = bvh_json(&H, "DELETE", 201, path, NULL);
    char pjob[96];
    snprintf(pjob, sizeof(pjob), "/api/v1/jobs/%s", bvh_str(pj, "id"));
    cJSON_Delete(pj);
    for (int i = 0; i < 1500; i++) {               /* bounded at 30 s */
        pj = bvh_json(&H, "GET", 200, pjob, NULL);
        if (!strcmp(bvh_str(pj, "status"), "null"))
            break;
        cJSON_Delete(pj);
        pj = NULL;
        usleep(20000);
    }
    assert_non_null(pj);
    assert_false(cJSON_IsString(cJSON_GetObjectItem(pj, "error")));
    cJSON_Delete(pj);
    struct bvh_resp gone = { 0 };
    assert_int_equal(bvh_request(&H, "GET", path, NULL, 0, NULL, NULL, &gone), 0);
    bvh_assert_error(&gone, 404, "NotFound");
    bvh_resp_free(&gone);
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bvh_str(b2, "id"));
    cJSON *b2n = bvh_json(&H, "GET", 200, path, NULL);
    link_identical(b2n, "b2.raw");
    link_identical(b0, "b0.raw");
    cJSON_Delete(b2n);

    /* restore the full's point into a file: the disk as it was then */
    snprintf(path, sizeof(path), "/api/v1/backups/%s/restore", bvh_str(b0, "id"));
    cJSON *job = bvh_json(&H, "POST", 201, path, "{\"file\":\"restored.qcow2\","
                          "\"format\":\"qcow2\"}");
    snprintf(path, sizeof(path), "/api/v1/jobs/%s", bvh_str(job, "id"));
    cJSON_Delete(job);
    for (int i = 0; i < 1500; i++) {               /* bounded at 30 s */
        job = bvh_json(&H, "GET", 200, path, NULL);
        if (!strcmp(bvh_str(job, "status"), "null"))
            break;
        cJSON_Delete(job);
        job = NULL;
        usleep(20000);
    }
    assert_non_null(job);
    assert_false(cJSON_IsString(cJSON_GetObjectItem(job, "error")));
    cJSON_Delete(job);
    assert_int_equal(bvh_sh("qemu-img compare -q -f qcow2 -F raw '%s/restored.qcow2' '%s/b0.raw'",
                            H.images, tmp), 0);
    restore_into_drive_and_vm(b2, "b2.raw");
    cJSON_Delete(b0);
    cJSON_Delete(b1);
    cJSON_Delete(b2);
}

/* The chain bitmaps of vm1 in QEMU: their count, the recording one's name. */
static int chain_bitmaps(char *active, size_t cap)
{
    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1", NULL), *bm;
    int n = 0;
    cJSON_ArrayForEach(bm, cJSON_GetObjectItem(d, "bitmaps")) {
        if (strncmp(bvh_str(bm, "name"), "blockvault-chain-", 17) != 0)
            continue;
        n++;
        if (bvh_bool(bm, "recording"))
            snprintf(active, cap, "%s", bvh_str(bm, "name"));
    }
    cJSON_Delete(d);
    return n;
}

/* kill -9 of Blockvault right after an incremental started pulling, then a
 * restart on the same data: the VM drive is back, QEMU holds no temporary
 * objects and one chain bitmap (the interrupted pull's merged back), the
 * backup is not left running, and the next incremental is the disk as it is. */
static void test_crash_restart(void **state)
{
    (void)state;
    hmp_io("write -P 0x42 0 60M");
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm1/backups",
                        "{\"kind\":\"incremental\"}");
    char bid[64], job[96];
    snprintf(bid, sizeof(bid), "%s", bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    snprintf(job, sizeof(job), "/api/v1/jobs/%s", bvh_str(cJSON_GetObjectItem(r, "job"), "id"));
    cJSON_Delete(r);
    bool copying = false;
    for (int i = 0; i < 2000 && !copying; i++) {   /* until bytes move (bounded at ~10 s) */
        cJSON *j = bvh_json(&H, "GET", 200, job, NULL);
        copying = bvh_num(j, "offset") > 0;
        cJSON_Delete(j);
        if (!copying)
            usleep(5000);
    }
    assert_true(copying);
    bvh_kill9(&H);
    /* what the crash left: the scratch image of the pull (QEMU's overlay on it) */
    assert_int_equal(bvh_sh("ls '%s/scratch' | grep -q '^blockvault-tmp-.*qcow2$'", H.dir), 0);
    assert_int_equal(bvh_restart(&H), 0);

    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm1", NULL);
    assert_string_equal(bvh_str(cJSON_GetObjectItem(d, "source"), "vm_status"), "running");
    cJSON_Delete(d);
    assert_int_equal(blockvault_objects(), 0);
    assert_int_equal(bvh_sh("ls '%s/scratch' | grep -q blockvault-tmp", H.dir), 1);  /* none */
    char active[200] = "";
    assert_int_equal(chain_bitmaps(active, sizeof(active)), 1);
    assert_non_null(strstr(active, "blockvault-chain-"));
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    cJSON *b = bvh_json(&H, "GET", 200, path, NULL);
    const char *st = bvh_str(b, "status");
    assert_string_equal(st, "failed");

    cJSON_Delete(b);

    hmp_io("write -P 0x43 1M 64k");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/cr.raw'", disk, tmp),
                     0);
    b = backup("incremental", false);
    assert_string_equal(bvh_str(b, "status"), "complete");
    assert_string_equal(bvh_str(b, "kind"), "incremental");
    link_identical(b, "cr.raw");
    cJSON_Delete(b);
    assert_int_equal(chain_bitmaps(active, sizeof(active)), 1);
}

static cJSON *wait_backup(const char *bid);

/* A QEMU with a raw disk (bitmaps cannot be persistent there), monitor at
 * qdir/<sock>; returns its pid once the monitor accepts, or fails the test. */
static pid_t spawn_raw_qemu(const char *raw, const char *sock)
{
    char drive[700], q[500], path[400];
    snprintf(drive, sizeof(drive), "if=none,id=drive0,driver=raw,node-name=rawdisk0,"
             "file.driver=file,file.filename=%s", raw);
    snprintf(path, sizeof(path), "%s/%s", qdir, sock);
    snprintf(q, sizeof(q), "unix:%s,server=on,wait=off", path);
    unlink(path);
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int nul = open("/dev/null", O_RDWR);
        dup2(nul, 0);
        dup2(nul, 1);
        execlp("qemu-system-x86_64", "qemu-system-x86_64", "-machine", "none", "-nodefaults",
               "-display", "none", "-drive", drive, "-qmp", q, (char *)NULL);
        _exit(127);
    }
    assert_true(pid > 0);
    for (int i = 0; i < 1000 && !accepts(path); i++)   /* bounded at 10 s */
        usleep(10000);
    assert_true(accepts(path));
    return pid;
}

/* A VM with a raw disk restarted between backups: its chain bitmap could not
 * be persistent, so the next backup asked as incremental is a full one with
 * a reason, in a new chain, and still the disk's contents. */
static void test_raw_vm_restarted(void **state)
{
    (void)state;
    char raw[400];
    snprintf(raw, sizeof(raw), "%s/raw1.img", tmp);
    assert_int_equal(bvh_sh("qemu-img create -q -f raw '%s' 16M && qemu-io -f raw -c "
                            "'write -P 0x5a 1M 1M' '%s' >/dev/null", raw, raw), 0);
    pid_t pid = spawn_raw_qemu(raw, "raw1.sock");
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"raw1\",\"format\":\"qemu\",\"qmp\":\"raw1.sock\","
                          "\"node\":\"drive0\"}"));
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/raw1/backups", "{\"kind\":\"full\"}");
    cJSON *b0 = wait_backup(bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    assert_string_equal(bvh_str(b0, "status"), "complete");
    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/raw1", NULL);
    const cJSON *bm = cJSON_GetArrayItem(cJSON_GetObjectItem(d, "bitmaps"), 0);
    assert_false(bvh_bool(bm, "persistent"));
    cJSON_Delete(d);

    kill(pid, SIGKILL);                            /* the VM goes down and comes back */
    waitpid(pid, NULL, 0);
    pid = spawn_raw_qemu(raw, "raw1.sock");
    r = bvh_json(&H, "POST", 201, "/api/v1/drives/raw1/backups", "{\"kind\":\"incremental\"}");
    cJSON *b1 = wait_backup(bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    assert_string_equal(bvh_str(b1, "status"), "complete");
    assert_string_equal(bvh_str(b1, "kind"), "full");
    assert_non_null(strstr(bvh_str(b1, "reason"), "missing"));
    assert_string_not_equal(bvh_str(b1, "chain"), bvh_str(b0, "chain"));
    assert_int_equal(bvh_sh("qemu-img compare -q -f qcow2 -F raw '%s/%s' '%s'", H.images,
                            bvh_str(b1, "file"), raw), 0);
    cJSON_Delete(b0);
    cJSON_Delete(b1);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/raw1?delete_backups=true", NULL));
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* A policy over a VM drive: run now, one incremental made, the disk as it was. */
static void test_policy(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/policies",
                          "{\"name\":\"vmp\",\"drives\":[\"vm1\"],\"schedule\":\"@daily\","
                          "\"retention\":{\"keep_last\":10}}"));
    hmp_io("write -P 0x71 7M 64k");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/pol.raw'", disk, tmp),
                     0);
    cJSON_Delete(bvh_json(&H, "POST", 202, "/api/v1/policies/vmp/run", NULL));
    const cJSON *last = NULL;
    cJSON *runs = NULL;
    for (int i = 0; i < 1500; i++) {               /* bounded at 30 s */
        runs = bvh_json(&H, "GET", 200, "/api/v1/policies/vmp/runs", NULL);
        last = cJSON_GetArrayItem(cJSON_GetObjectItem(runs, "runs"), 0);
        const cJSON *oc = last ? cJSON_GetObjectItem(last, "outcome") : NULL;
        if (cJSON_IsString(oc) && strcmp(oc->valuestring, "running") != 0)
            break;
        cJSON_Delete(runs);
        runs = NULL;
        usleep(20000);
    }
    assert_non_null(runs);
    assert_string_equal(bvh_str(last, "outcome"), "ok");
    const cJSON *made = cJSON_GetObjectItem(last, "backups_made");
    assert_int_equal(cJSON_GetArraySize(made), 1);
    cJSON *b = wait_backup(cJSON_GetArrayItem(made, 0)->valuestring);
    assert_string_equal(bvh_str(b, "status"), "complete");
    assert_string_equal(bvh_str(b, "kind"), "incremental");
    link_identical(b, "pol.raw");
    cJSON_Delete(b);
    cJSON_Delete(runs);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/policies/vmp", NULL));
}

/* Speed limit and cancel of a pull through the job verbs: at 4 MiB/s a 32 MiB
 * incremental is still copying after half a second and has copied at most
 * what the limit allows; cancelled, the backup is failed and its link gone;
 * the next incremental still holds everything since the last good backup. */
static void test_speed_and_cancel(void **state)
{
    (void)state;
    hmp_io("write -P 0x17 16M 32M");
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm1/backups",
                        "{\"kind\":\"incremental\"}");
    char bid[64], job[96], verb[128];
    snprintf(bid, sizeof(bid), "%s", bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    snprintf(job, sizeof(job), "/api/v1/jobs/%s", bvh_str(cJSON_GetObjectItem(r, "job"), "id"));
    cJSON_Delete(r);
    snprintf(verb, sizeof(verb), "%s/set_speed", job);
    cJSON_Delete(bvh_json(&H, "POST", 200, verb, "{\"speed\":%d}", 4 << 20));
    usleep(500000);
    cJSON *j = bvh_json(&H, "GET", 200, job, NULL);
    assert_string_equal(bvh_str(j, "status"), "running");
    double off = bvh_num(j, "offset"), len = bvh_num(j, "len");
    cJSON_Delete(j);
    assert_true(off < len);
    assert_true(off <= 4.0 * (1 << 20) * 2 + (16 << 20));   /* the limit, with the reads in
                                                               flight before it was set */
    snprintf(verb, sizeof(verb), "%s/cancel", job);
    cJSON_Delete(bvh_json(&H, "POST", 200, verb, NULL));
    cJSON *b = wait_backup(bid);
    assert_string_equal(bvh_str(b, "status"), "failed");
    cJSON_Delete(b);
    assert_int_equal(blockvault_objects(), 0);

    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/sc.raw'", disk, tmp),
                     0);
    b = backup("incremental", false);
    assert_string_equal(bvh_str(b, "kind"), "incremental");
    assert_true(bvh_num(b, "data_bytes") >= 32 << 20);
    link_identical(b, "sc.raw");
    cJSON_Delete(b);
}

/* The scratch space fills during a pull: a VM drive whose scratch_dir is
 * an 8 MiB tmpfs, a full pulled slowly (set_speed) while the guest rewrites
 * 12 MiB.  QEMU cannot save the old data of those clusters: the guest's
 * write fails and leaves the disk as it was, the pull fails saying the
 * scratch space ran out, nothing is kept (backup failed, no link, nothing of
 * ours in QEMU or in the scratch directory), and the next pull with room
 * again is complete and the disk as it is. */
static void test_scratch_full(void **state)
{
    (void)state;
    char tiny[400];
    snprintf(tiny, sizeof(tiny), "%s/tiny", H.dir);
    mkdir(tiny, 0700);
    if (mount("tmpfs", tiny, "tmpfs", 0, "size=8m") < 0) {
        rmdir(tiny);
        print_message("cannot mount a tmpfs here: skipped\n");
        skip();
    }
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"vm3\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\","
                          "\"node\":\"disk0\",\"scratch_dir\":\"tiny\"}"));
    hmp_io("write -P 0x3c 0 16M");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/sf0.raw'", disk, tmp),
                     0);
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm3/backups", "{\"kind\":\"full\"}");
    char bid[64], job[96], verb[128];
    snprintf(bid, sizeof(bid), "%s", bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    snprintf(job, sizeof(job), "/api/v1/jobs/%s", bvh_str(cJSON_GetObjectItem(r, "job"), "id"));
    cJSON_Delete(r);
    snprintf(verb, sizeof(verb), "%s/set_speed", job);
    cJSON_Delete(bvh_json(&H, "POST", 200, verb, "{\"speed\":%d}", 1 << 20));
    bool copying = false;
    for (int i = 0; i < 2000 && !copying; i++) {   /* the point in time is fixed (bounded) */
        cJSON *j = bvh_json(&H, "GET", 200, job, NULL);
        copying = bvh_num(j, "offset") > 0;
        cJSON_Delete(j);
        if (!copying)
            usleep(5000);
    }
    assert_true(copying);
    hmp_io("write -P 0x3d 0 12M");                /* old data to save: 12 MiB > 8 MiB */
    struct statvfs sv;
    assert_int_equal(statvfs(tiny, &sv), 0);
    assert_true((uint64_t)sv.f_bavail * sv.f_frsize < (2u << 20));
    cJSON *b = wait_backup(bid);
    assert_string_equal(bvh_str(b, "status"), "failed");
    char p[700];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", H.images, bvh_str(b, "file"));
    assert_int_equal(stat(p, &st), -1);
    cJSON_Delete(b);
    cJSON *j = NULL;
    for (int i = 0; i < 500; i++) {                /* the job's row ends with the backup's */
        j = bvh_json(&H, "GET", 200, job, NULL);
        if (cJSON_IsString(cJSON_GetObjectItem(j, "error")))
            break;
        cJSON_Delete(j);
        j = NULL;
        usleep(20000);
    }
    assert_non_null(j);
    if (!strstr(bvh_str(j, "error"), "scratch space of 'vm3' ran out") ||
        !strstr(bvh_str(j, "error"), "'tiny'"))
        fail_msg("the job's error does not say the scratch space ran out: %s",
                 bvh_str(j, "error"));
    cJSON_Delete(j);
    assert_int_equal(blockvault_objects(), 0);
    assert_int_equal(bvh_sh("ls -A '%s' | grep -q .", tiny), 1);      /* empty again */
    /* what the guest saw: its write failed, the disk is as it was */
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/sf1.raw' && "
                            "cmp -s '%s/sf0.raw' '%s/sf1.raw'", disk, tmp, tmp, tmp), 0);

    /* with room again: the next pull is whole */
    hmp_io("write -P 0x3e 0 1M");
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/sf2.raw'", disk, tmp),
                     0);
    r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm3/backups", "{\"kind\":\"full\"}");
    b = wait_backup(bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    assert_string_equal(bvh_str(b, "status"), "complete");
    assert_int_equal(bvh_sh("qemu-img compare -q -f qcow2 -F raw '%s/%s' '%s/sf2.raw'", H.images,
                            bvh_str(b, "file"), tmp), 0);
    cJSON_Delete(b);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/vm3?delete_backups=true", NULL));
    umount(tiny);

    /* vm3's fulls named the same disk as vm1: vm1's chain bitmap stayed, and
     * its next backup is still an incremental, the disk as it is */
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/sf3.raw'", disk, tmp),
                     0);
    b = backup("incremental", false);
    assert_string_equal(bvh_str(b, "status"), "complete");
    assert_string_equal(bvh_str(b, "kind"), "incremental");
    link_identical(b, "sf3.raw");
    cJSON_Delete(b);
}

static void test_create_refusals(void **state)
{
    (void)state;
    char p[700], body[1024];
    snprintf(p, sizeof(p), "%s/escape.sock", qdir);
    assert_int_equal(symlink("../out/test.sock", p), 0);       /* a live monitor, outside */
    const char *bad[] = { "../out/test.sock", "escape.sock", "missing.sock" };
    for (size_t i = 0; i < 3; i++) {
        snprintf(body, sizeof(body), "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"%s\","
                 "\"node\":\"disk0\"}", bad[i]);
        expect_error("POST", "/api/v1/drives", body, 400, NULL);
    }
    snprintf(body, sizeof(body), "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"%s/test.sock\","
             "\"node\":\"disk0\"}", outside);
    expect_error("POST", "/api/v1/drives", body, 400, NULL);    /* absolute */

    /* a socket with nobody behind it, and one that is not QEMU */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%.90s/dead.sock", qdir);
    assert_int_equal(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(s);
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"dead.sock\",\"node\":\"disk0\"}",
                 400, "QEMU does not answer");

    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"nope\"}",
                 400, "no block node or device 'nope'");
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"vm1\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"disk0\"}",
                 409, "already exists");
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"local\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"disk0\"}",
                 409, "already exists");
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"vm1\",\"format\":\"raw\",\"size\":\"1M\"}", 409, "already exists");
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"disk0\","
                 "\"size\":1}", 400, "size");
    expect_error("POST", "/api/v1/drives",
                 "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"disk0\","
                 "\"scratch_dir\":\"../x\"}", 400, NULL);
}

/* FNV-1a of the id, as runtime/vmdrives.c tags its temporary objects. */
static void tag_of(const char *id, char tag[9])
{
    uint32_t h = 2166136261u;
    for (const char *p = id; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    snprintf(tag, 9, "%08x", h);
}

static void test_delete_cleans_qemu(void **state)
{
    (void)state;
    char tag[9];
    tag_of("vm1", tag);
    /* what a crash mid-operation would leave: a node of ours, and one not ours */
    cJSON_Delete(mon_cmd("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"null-co\","
                         "\"node-name\":\"blockvault-tmp-%s-77\",\"size\":1048576}}", tag));
    cJSON_Delete(mon_cmd("{\"execute\":\"blockdev-add\",\"arguments\":{\"driver\":\"null-co\","
                         "\"node-name\":\"theirs\",\"size\":1048576}}"));
    assert_int_equal(blockvault_objects(), 1);
    expect_error("DELETE", "/api/v1/drives/vm1", NULL, 409, "delete_backups");   /* has chains */
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/vm1?delete_backups=true", NULL));
    assert_int_equal(blockvault_objects(), 0);
    cJSON *nodes = mon_cmd("{\"execute\":\"query-named-block-nodes\"}"), *it;
    int theirs = 0, disk0 = 0;
    cJSON_ArrayForEach(it, nodes) {
        const char *nn = cJSON_GetStringValue(cJSON_GetObjectItem(it, "node-name"));
        theirs += nn && !strcmp(nn, "theirs");
        disk0 += nn && !strcmp(nn, "disk0");
    }
    cJSON_Delete(nodes);
    assert_int_equal(theirs, 1);
    assert_int_equal(disk0, 1);
    expect_error("GET", "/api/v1/drives/vm1", NULL, 404, NULL);
}

/* The backup's end (bounded), as GET /backups/{bid} shows it. */
static cJSON *wait_backup(const char *bid)
{
    char path[128];
    snprintf(path, sizeof(path), "/api/v1/backups/%s", bid);
    for (int i = 0; i < 1500; i++) {               /* bounded at 30 s */
        cJSON *b = bvh_json(&H, "GET", 200, path, NULL);
        if (strcmp(bvh_str(b, "status"), "running") != 0)
            return b;
        cJSON_Delete(b);
        usleep(20000);
    }
    fail_msg("backup %s did not end", bid);
    return NULL;
}

/* QEMU killed (-9) while an incremental is pulled: the job fails saying so,
 * the backup is failed and its link gone, the chain's full is as it was;
 * then the drive reads as gone. */
static void test_gone(void **state)
{
    (void)state;
    cJSON_Delete(bvh_json(&H, "POST", 201, "/api/v1/drives",
                          "{\"id\":\"vm2\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\","
                          "\"node\":\"disk0\"}"));
    hmp_io("flush");
    assert_int_equal(bvh_sh("qemu-img convert -U -f qcow2 -O raw '%s' '%s/g0.raw'", disk, tmp),
                     0);
    cJSON *r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm2/backups", "{\"kind\":\"full\"}");
    cJSON *full = wait_backup(bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    assert_string_equal(bvh_str(full, "status"), "complete");
    link_identical(full, "g0.raw");

    hmp_io("write -P 0x99 0 60M");                 /* enough to pull that the kill lands in it */
    r = bvh_json(&H, "POST", 201, "/api/v1/drives/vm2/backups", "{\"kind\":\"incremental\"}");
    kill(qemu, SIGKILL);
    waitpid(qemu, NULL, 0);
    qemu = -1;
    char job[64];
    snprintf(job, sizeof(job), "/api/v1/jobs/%s", bvh_str(cJSON_GetObjectItem(r, "job"), "id"));
    cJSON *inc = wait_backup(bvh_str(cJSON_GetObjectItem(r, "backup"), "id"));
    cJSON_Delete(r);
    assert_string_equal(bvh_str(inc, "kind"), "incremental");
    assert_string_equal(bvh_str(inc, "status"), "failed");
    struct stat st;
    char p[700];
    snprintf(p, sizeof(p), "%s/%s", H.images, bvh_str(inc, "file"));
    assert_int_equal(stat(p, &st), -1);
    link_identical(full, "g0.raw");
    cJSON *j = NULL;
    for (int i = 0; i < 500; i++) {                /* the job's row ends with the backup's */
        j = bvh_json(&H, "GET", 200, job, NULL);
        if (cJSON_IsString(cJSON_GetObjectItem(j, "error")))
            break;
        cJSON_Delete(j);
        j = NULL;
        usleep(20000);
    }
    assert_non_null(j);
    if (!strstr(bvh_str(j, "error"), "QEMU went away") && !strstr(bvh_str(j, "error"), "gone"))
        fail_msg("the job's error does not say QEMU went away: %s", bvh_str(j, "error"));
    cJSON_Delete(j);
    cJSON_Delete(inc);
    cJSON_Delete(full);

    cJSON *d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm2", NULL);
    assert_string_equal(bvh_str(cJSON_GetObjectItem(d, "source"), "vm_status"), "gone");
    cJSON_Delete(d);
    expect_error("GET", "/api/v1/drives/vm2/data?offset=0&length=512", NULL, 500, "is gone");
    /* QEMU is gone; its backups stay with the drive detached (runtime/drives.h) */
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/vm2?keep_backups=true", NULL));
    d = bvh_json(&H, "GET", 200, "/api/v1/drives/vm2", NULL);
    assert_string_equal(bvh_str(d, "format"), "detached");
    cJSON_Delete(d);
    cJSON *chains = bvh_json(&H, "GET", 200, "/api/v1/drives/vm2/backups", NULL);
    assert_true(cJSON_GetArraySize(cJSON_GetObjectItem(chains, "chains")) >= 1);
    cJSON_Delete(chains);
    cJSON_Delete(bvh_json(&H, "DELETE", 204, "/api/v1/drives/vm2?delete_backups=true", NULL));
}

static void test_without_qmp_dir(void **state)
{
    (void)state;
    struct bvh h2 = { 0 };
    assert_int_equal(bvh_start(&h2, NULL), 0);
    struct bvh_resp r = { 0 };
    const char *body = "{\"id\":\"x\",\"format\":\"qemu\",\"qmp\":\"vm1.sock\",\"node\":\"disk0\"}";
    assert_int_equal(bvh_request(&h2, "POST", "/api/v1/drives", body, strlen(body), NULL, NULL,
                                 &r), 0);
    bvh_assert_error(&r, 400, "GenericError");
    assert_non_null(strstr(r.body, "--qmp-dir"));
    bvh_resp_free(&r);
    assert_int_equal(bvh_stop(&h2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_get_read),
        cmocka_unit_test(test_mutations_refused),
        cmocka_unit_test(test_backups),
        cmocka_unit_test(test_crash_restart),
        cmocka_unit_test(test_raw_vm_restarted),
        cmocka_unit_test(test_policy),
        cmocka_unit_test(test_speed_and_cancel),
        cmocka_unit_test(test_scratch_full),
        cmocka_unit_test(test_create_refusals),
        cmocka_unit_test(test_delete_cleans_qemu),
        cmocka_unit_test(test_gone),
        cmocka_unit_test(test_without_qmp_dir),
    };
    return cmocka_run_group_tests_name("vm_drives", tests, setup, teardown);
}
