/*
 * The NBD server: drives (read-write, under their id) and complete backup
 * points (read-only, under "backup/<bid>") exported to NBD clients (qemu,
 * qemu-img, qemu-io, nbdcopy, nbdinfo, a VM's -drive file=nbd://…).  Every
 * write goes through the drive's write path (bv/drive.h), so bitmaps,
 * copy-before-write of a running backup and blkdebug events see NBD writes
 * exactly as REST writes.  No HTTP here; the REST side asks only the
 * questions below.
 *
 * Listeners: a Unix socket <data>/nbd.sock (mode 0600) always, and TCP with
 * --nbd-listen.  TCP needs TLS-PSK (--nbd-tls-psk) when its address is not
 * loopback or an HTTP token is configured: bv_nbd_start refuses otherwise.
 *
 * Threads: one acceptor thread; one thread per connection (negotiation,
 * then it reads requests) and up to NBD_CONN_WORKERS workers per connection
 * that run requests and send replies (out of order).  The server's lock
 * guards the connection list and the payload budget (server.c).
 */
#ifndef BV_NBD_H
#define BV_NBD_H

#include <stdbool.h>
#include <stddef.h>

struct bv_app;

/* Start the server (app->nbd).  -1 with a sentence in err. */
int bv_nbd_start(struct bv_app *app, char *err, size_t errlen);
/* Stop accepting, let in-flight requests finish, close every connection.
 * Idempotent; NULL app->nbd is fine. */
void bv_nbd_stop(struct bv_app *app);

/* The URI a client uses for export name ("drive0", "backup/b3"): TCP if
 * configured, else the Unix socket.  "" when there is no server. */
void bv_nbd_uri(struct bv_app *app, const char *name, char *out, size_t len);
/* Clients attached to an export (in transmission or negotiating it). */
unsigned bv_nbd_clients(struct bv_app *app, const char *name);
/* Disconnect every client of an export; returns how many there were. */
unsigned bv_nbd_disconnect(struct bv_app *app, const char *name);

#endif
