/*
 * The HTTP server: libmicrohttpd with a thread per connection (long-polls
 * and event streams hold a connection for up to a minute), request bodies
 * accumulated up to a cap, authentication, then dispatch through the route
 * table.
 *
 * Body limits: JSON bodies 1 MiB; binary bodies (PUT …/data) 64 MiB.
 * Larger bodies get 413 and are discarded as they arrive (never buffered).
 * All connections together buffer at most BV_MAX_BUFFERED_BODIES; an
 * upload that would pass it gets 503 (retry later) instead of memory.
 * Auth, URL strings, routing and the declared body size are checked on the
 * headers, so a refused request never has its body buffered.
 *
 * HTTPS (libmicrohttpd over GnuTLS) when the configuration names a
 * certificate or --tls-self-signed (http/tls.h); the port then speaks only TLS.
 */
#ifndef BV_HTTP_SERVER_H
#define BV_HTTP_SERVER_H

#include <stdint.h>

struct bv_app;
struct bv_http;

#define BV_MAX_JSON_BODY   (1u << 20)
#define BV_MAX_BINARY_BODY (64u << 20)
/* Connection slots: the total, the share of one non-loopback address, and
 * the silence (seconds) after which a connection is closed -- also while its
 * headers are incomplete.  Handlers that wait (long-polls) are not silence. */
#define BV_MAX_CONNECTIONS 1024
#define BV_MAX_CONNECTIONS_PER_ADDRESS 64
#define BV_CONNECTION_TIMEOUT_S 10
/* All connections' buffered bodies together; past it new uploads get 503. */
#define BV_MAX_BUFFERED_BODIES (512u << 20)

/* Bind and start serving.  *port_out gets the bound port (useful with 0). */
struct bv_http *bv_http_start(struct bv_app *app, uint16_t *port_out, char *err, size_t errlen);
/* The certificate's SHA-256 fingerprint ("AA:BB:...") when serving HTTPS,
 * else NULL. */
const char *bv_http_tls_fingerprint(const struct bv_http *h);
/* Stop accepting new connections (first step of shutdown). */
void bv_http_quiesce(struct bv_http *h);
/* Wait for in-flight requests and free everything. */
void bv_http_stop(struct bv_http *h);

#endif
