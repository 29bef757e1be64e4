/*
 * HTTPS material: see tls.h.
 *
 * The self-signed pair is written as key.pem.tmp/cert.pem.tmp (created
 * exclusively, the key 0600 from the start, fsynced) and renamed key first,
 * then certificate; a start that finds only one of the two (a crash between
 * the renames) makes a new pair.  The key never passes through a file with
 * wider permissions.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <gnutls/abstract.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "config.h"
#include "http/tls.h"

#define MAX_PEM_BYTES (1u << 20)
#define CERT_YEARS 10

static int read_pem(const char *path, char **out, char *err, size_t errlen)
{
    int r = -1;
    char *buf = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size <= 0 || st.st_size > (off_t)MAX_PEM_BYTES) {
        snprintf(err, errlen, "%s is not a PEM file of at most %u bytes", path, MAX_PEM_BYTES);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        snprintf(err, errlen, "out of memory reading %s", path);
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n <= 0) {
            snprintf(err, errlen, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "short");
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    buf = NULL;
    r = 0;
out:
    if (buf) {
        explicit_bzero(buf, (size_t)st.st_size);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return r;
}

static int fingerprint(const char *cert_pem, char out[BV_TLS_FINGERPRINT_LEN], char *err,
                       size_t errlen)
{
    gnutls_x509_crt_t crt;
    gnutls_datum_t d = { (unsigned char *)(uintptr_t)cert_pem, (unsigned)strlen(cert_pem) };
    unsigned char fp[32];
    size_t fplen = sizeof(fp);
    int r = gnutls_x509_crt_init(&crt);
    if (r >= 0) {
        r = gnutls_x509_crt_import(crt, &d, GNUTLS_X509_FMT_PEM);
        if (r >= 0)
            r = gnutls_x509_crt_get_fingerprint(crt, GNUTLS_DIG_SHA256, fp, &fplen);
        gnutls_x509_crt_deinit(crt);
    }
    if (r < 0 || fplen != sizeof(fp)) {
        snprintf(err, errlen, "the TLS certificate cannot be read: %s", gnutls_strerror(r));
        return -1;
    }
    for (size_t i = 0; i < sizeof(fp); i++)
        snprintf(out + 3 * i, 4, "%02X%s", fp[i], i + 1 < sizeof(fp) ? ":" : "");
    return 0;
}

/* Write data to dir/name via dir/name.tmp (exclusive, mode), fsynced, renamed. */
static int write_file(const char *dir, const char *name, const gnutls_datum_t *data,
                      mode_t mode, char *err, size_t errlen)
{
    char tmp[4200], dst[4200];
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", dir, name);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    size_t done = 0;
    while (fd >= 0 && done < data->size) {
        ssize_t n = write(fd, data->data + done, data->size - done);
        if (n <= 0)
            break;
        done += (size_t)n;
    }
    bool ok = fd >= 0 && done == data->size && fsync(fd) == 0;
    int saved = errno;
    if (fd >= 0)
        close(fd);
    if (!ok || rename(tmp, dst) < 0) {
        if (ok)
            saved = errno;
        unlink(tmp);
        snprintf(err, errlen, "cannot write %s: %s", dst, strerror(saved));
        return -1;
    }
    return 0;
}

static int add_names(gnutls_x509_crt_t crt)
{
    static const unsigned char v4[4] = { 127, 0, 0, 1 };
    static const unsigned char v6[16] = { [15] = 1 };
    char host[256] = "";
    int r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, "localhost", 9,
                                                 GNUTLS_FSAN_APPEND);
    if (r >= 0)
        r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v4, 4,
                                                 GNUTLS_FSAN_APPEND);
    if (r >= 0)
        r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_IPADDRESS, v6, 16,
                                                 GNUTLS_FSAN_APPEND);
    if (r >= 0 && gethostname(host, sizeof(host) - 1) == 0 && host[0] &&
        strcmp(host, "localhost") != 0)
        r = gnutls_x509_crt_set_subject_alt_name(crt, GNUTLS_SAN_DNSNAME, host,
                                                 (unsigned)strlen(host), GNUTLS_FSAN_APPEND);
    return r;
}

static int fill_cert(gnutls_x509_crt_t crt, gnutls_x509_privkey_t key, gnutls_privkey_t pkey)
{
    unsigned char serial[16];
    time_t now = time(NULL);
    int r = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof(serial));
    serial[0] &= 0x7f;             /* a positive integer */
    if (r >= 0)
        r = gnutls_x509_crt_set_version(crt, 3);
    if (r >= 0)
        r = gnutls_x509_crt_set_serial(crt, serial, sizeof(serial));
    if (r >= 0)
        r = gnutls_x509_crt_set_activation_time(crt, now - 3600);
    if (r >= 0)
        r = gnutls_x509_crt_set_expiration_time(crt, now + (time_t)CERT_YEARS * 365 * 86400);
    if (r >= 0)
        r = gnutls_x509_crt_set_dn_by_oid(crt, GNUTLS_OID_X520_COMMON_NAME, 0, "blockvault", 10);
    if (r >= 0)
        r = gnutls_x509_crt_set_key(crt, key);
    if (r >= 0)
        r = gnutls_x509_crt_set_basic_constraints(crt, 1, 0);
    if (r >= 0)
        r = gnutls_x509_crt_set_key_usage(crt, GNUTLS_KEY_DIGITAL_SIGNATURE |
                                               GNUTLS_KEY_KEY_CERT_SIGN);
    if (r >= 0)
        r = gnutls_x509_crt_set_key_purpose_oid(crt, GNUTLS_KP_TLS_WWW_SERVER, 0);
    if (r >= 0)
        r = add_names(crt);
    if (r >= 0)
        r = gnutls_x509_crt_privkey_sign(crt, crt, pkey, GNUTLS_DIG_SHA256, 0);
    return r;
}

/* Make the pair in memory: an ECDSA P-256 key and a certificate signed by it. */
static int make_pair(gnutls_datum_t *cert, gnutls_datum_t *keyd, char *err, size_t errlen)
{
    gnutls_x509_privkey_t key = NULL;
    gnutls_privkey_t pkey = NULL;
    gnutls_x509_crt_t crt = NULL;
    int r = gnutls_x509_privkey_init(&key);
    if (r >= 0)
        r = gnutls_x509_privkey_generate(key, GNUTLS_PK_ECDSA,
                                         GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0);
    if (r >= 0)
        r = gnutls_x509_crt_init(&crt);
    if (r >= 0)
        r = gnutls_privkey_init(&pkey);
    if (r >= 0)
        r = gnutls_privkey_import_x509(pkey, key, 0);
    if (r >= 0)
        r = fill_cert(crt, key, pkey);
    if (r >= 0)
        r = gnutls_x509_crt_export2(crt, GNUTLS_X509_FMT_PEM, cert);
    if (r >= 0)
        r = gnutls_x509_privkey_export2(key, GNUTLS_X509_FMT_PEM, keyd);
    if (r < 0)
        snprintf(err, errlen, "cannot make a self-signed TLS certificate: %s",
                 gnutls_strerror(r));
    if (crt)
        gnutls_x509_crt_deinit(crt);
    if (pkey)
        gnutls_privkey_deinit(pkey);
    if (key)
        gnutls_x509_privkey_deinit(key);
    return r < 0 ? -1 : 0;
}

static int make_self_signed(const char *dir, char *err, size_t errlen)
{
    gnutls_datum_t cert = { NULL, 0 }, key = { NULL, 0 };
    int r = make_pair(&cert, &key, err, errlen);
    if (r == 0)
        r = write_file(dir, "key.pem", &key, 0600, err, errlen);
    if (r == 0)
        r = write_file(dir, "cert.pem", &cert, 0644, err, errlen);
    if (key.data) {
        explicit_bzero(key.data, key.size);
        gnutls_free(key.data);
    }
    gnutls_free(cert.data);
    return r;
}

/* <data>/tls with a pair in it, made on the first start. */
static int self_signed_paths(const struct bv_config *cfg, char cert[4200], char key[4200],
                             char *err, size_t errlen)
{
    char dir[sizeof(cfg->data_dir) + 4];
    snprintf(dir, sizeof(dir), "%s/tls", cfg->data_dir);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(cert, 4200, "%s/cert.pem", dir);
    snprintf(key, 4200, "%s/key.pem", dir);
    if (access(cert, F_OK) == 0 && access(key, F_OK) == 0)
        return 0;
    return make_self_signed(dir, err, errlen);
}

int bv_tls_load(const struct bv_config *cfg, struct bv_tls *out, char *err, size_t errlen)
{
    char cert[4200], key[4200];
    memset(out, 0, sizeof(*out));
    if (cfg->tls_self_signed) {
        if (self_signed_paths(cfg, cert, key, err, errlen) < 0)
            return -1;
    } else if (cfg->tls_cert[0]) {
        snprintf(cert, sizeof(cert), "%s", cfg->tls_cert);
        snprintf(key, sizeof(key), "%s", cfg->tls_key);
    } else {
        return 0;
    }
    if (read_pem(cert, &out->cert_pem, err, errlen) < 0 ||
        read_pem(key, &out->key_pem, err, errlen) < 0 ||
        fingerprint(out->cert_pem, out->fingerprint, err, errlen) < 0) {
        bv_tls_free(out);
        return -1;
    }
    return 1;
}

void bv_tls_free(struct bv_tls *t)
{
    if (t->key_pem) {
        explicit_bzero(t->key_pem, strlen(t->key_pem));
        free(t->key_pem);
    }
    free(t->cert_pem);
    memset(t, 0, sizeof(*t));
}
