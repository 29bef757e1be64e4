/*
 * A QMP client: one connection to one QEMU monitor socket.
 *
 * Why it exists: a VM drive is a disk a running QEMU owns; Blockvault talks
 * to that QEMU through its QMP monitor (../shared/reference/vm-pull.md).  A
 * monitor accepts one client at a time, so the service holds one connection
 * per VM and every user of that VM shares it (commands are serialised on
 * the connection's lock).  No HTTP in here: callers pass and get cJSON.
 *
 * Protocol (QEMU's docs/interop/qmp-spec): the server greets with
 * {"QMP":{"version":…,"capabilities":[…]}}; the client must send
 * {"execute":"qmp_capabilities"} before anything else.  Then each command
 * {"execute":NAME,"arguments":{…},"id":ID} gets exactly one
 * {"return":…,"id":ID} or {"error":{"class","desc"},"id":ID}; asynchronous
 * {"event":NAME,"data":{…},"timestamp":{…}} lines may come at any time,
 * also between a command and its reply.  One JSON object per line.
 *
 * Where the socket is: the name is relative to the --qmp-dir root and is
 * resolved beneath it by descriptor (bv/path.h: absolute names, ".." and
 * symlinks leading out are refused), then connect(2) is made on
 * /proc/self/fd/<fd> of that O_PATH descriptor — never by re-walking a
 * checked name, so a REST client cannot make the service connect to an
 * arbitrary socket.
 *
 * Events read while waiting for a reply are queued (bounded: the oldest are
 * dropped beyond BV_QMP_MAX_EVENTS) for bv_qmp_wait_event.
 *
 * Loss: a close seen before a command is sent (QEMU went away or was
 * restarted since the last call) just reconnects.  When the socket fails or
 * closes during a call, the connection is marked lost,
 * queued events are dropped and the call fails with -ECONNRESET ("QEMU
 * closed the QMP connection").  The next call reconnects (greeting and
 * capabilities again) and bumps the generation, so a caller holding state
 * across calls (a backup in progress) can tell that it may have missed
 * events.  Every wait has a deadline: -ETIMEDOUT names the command.
 *
 * Bounds: a line longer than BV_QMP_MAX_LINE is a protocol error (the
 * connection is dropped).
 *
 * Locking: q->lock guards everything in struct bv_qmp; it is held for the
 * whole of a command or a wait (so commands on one connection are
 * serialised) and is a leaf with respect to the service's other locks:
 * take it after them, never call out while holding it.
 */
#ifndef BV_SERVICE_QMP_H
#define BV_SERVICE_QMP_H

#include <stdbool.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "bv/error.h"
#include "bv/path.h"

#define BV_QMP_MAX_LINE    (4u << 20)
#define BV_QMP_MAX_EVENTS  256
#define BV_QMP_TIMEOUT_MS  10000       /* default deadline of a command */

struct bv_qmp;

/* Open a connection to the monitor socket `name` beneath dir (greeting and
 * qmp_capabilities done, within timeout_ms; 0 = the default).  *out is
 * owned by the caller (bv_qmp_close).  Errors: the form and confinement
 * errors of bv_path_open (-EACCES for an escape, -ENOENT), -ENOTSOCK (not a
 * socket), -ECONNREFUSED (no QEMU listening), -EPROTO (not a QMP greeting),
 * -ETIMEDOUT. */
int bv_qmp_open(const struct bv_root *dir, const char *name, int timeout_ms,
                struct bv_qmp **out, bv_error **errp);
/* The same without connecting now (QEMU may not be up yet): the first
 * command or wait connects.  Only -ENOMEM. */
int bv_qmp_new(const struct bv_root *dir, const char *name, struct bv_qmp **out,
               bv_error **errp);
void bv_qmp_close(struct bv_qmp *q);

/* The socket's name as given (relative to the qmp dir). */
const char *bv_qmp_name(const struct bv_qmp *q);
/* QEMU's version from the greeting ("7.2.0"), "" before a connection. */
const char *bv_qmp_version(struct bv_qmp *q);
/* Bumped by every (re)connection; 0 while lost and never connected. */
uint64_t bv_qmp_generation(struct bv_qmp *q);
/* Is the connection up (does not probe)? */
bool bv_qmp_connected(struct bv_qmp *q);

/* Run a command.  args (may be NULL) is borrowed.  On success *ret (if
 * non-NULL) owns QEMU's "return" value.  A QMP error reply is -EIO with
 * QEMU's desc as the message, and its class in *err_class (if non-NULL,
 * size cap) — e.g. "GenericError", "DeviceNotFound".  A lost connection is
 * reconnected once before sending (never after: a command may have run).
 * timeout_ms 0 = BV_QMP_TIMEOUT_MS. */
int bv_qmp_execute(struct bv_qmp *q, const char *command, const cJSON *args, int timeout_ms,
                   cJSON **ret, char *err_class, size_t cap, bv_error **errp);

/* Wait for an event `name` whose data contains every member of match (may
 * be NULL; members compared by value), taking the first queued or arriving
 * one that matches; queued events that do not match stay queued.  *data (if
 * non-NULL) owns the event's data.  -ETIMEDOUT if none came in time,
 * -ECONNRESET if the connection was lost meanwhile. */
int bv_qmp_wait_event(struct bv_qmp *q, const char *name, const cJSON *match, int timeout_ms,
                      cJSON **data, bv_error **errp);

/* Drop every queued event (before starting something whose events matter). */
void bv_qmp_flush_events(struct bv_qmp *q);

#endif
