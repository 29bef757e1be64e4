/*
 * HTTPS material for the HTTP server: a certificate and key in PEM, either
 * read from --tls-cert/--tls-key or, with --tls-self-signed, made once under
 * <data>/tls/ (key.pem mode 0600, cert.pem) with GnuTLS and reused on every
 * later start, so that a pinned fingerprint stays valid.
 *
 * The self-signed certificate names localhost, 127.0.0.1, ::1 and the host
 * name, is valid for ten years, and is a CA of its own (clients pin it or
 * use it as their CA file).
 */
#ifndef BV_HTTP_TLS_H
#define BV_HTTP_TLS_H

#include <stddef.h>

struct bv_config;

/* "AA:BB:..." for 32 bytes, and its NUL */
#define BV_TLS_FINGERPRINT_LEN (32 * 3)

struct bv_tls {
    char *cert_pem;                /* owned, NUL-terminated */
    char *key_pem;                 /* owned, NUL-terminated */
    char fingerprint[BV_TLS_FINGERPRINT_LEN];   /* SHA-256 of the certificate's DER */
};

/* Load (or make, see above) the material that cfg asks for.  Returns 1 with
 * *out filled, 0 when cfg asks for no TLS, -1 with a sentence in err. */
int bv_tls_load(const struct bv_config *cfg, struct bv_tls *out, char *err, size_t errlen);
void bv_tls_free(struct bv_tls *t);

#endif
