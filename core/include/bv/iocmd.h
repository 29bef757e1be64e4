/*
 * iocmd: the qemu-io command subset that tests and admins use to poke at an
 * image or a drive.  Parsing is pure (a string becomes a typed struct, or a
 * one-sentence error); execution runs a parsed command against an abstract
 * target, so the service can route writes through its drive layer (which
 * dirties bitmaps) while bvimg runs them straight against a bv_node.
 *
 * Grammar (one command per string, words separated by blanks):
 *     write [-P PAT | -z] OFF LEN     data (default pattern 0xcd) or zeroes
 *     read  [-P PAT] OFF LEN          reads; with -P checks every byte
 *     discard OFF LEN
 *     flush
 * Options come before the operands, value attached or separate ("-P0xab" or
 * "-P 0xab").  PAT is a byte, decimal or 0x hex (0..255).  OFF and LEN are
 * decimal or 0x hex; decimals may carry one suffix k/K, m/M, g/G, t/T
 * (powers of 1024, "32736k").  Anything else is refused with a message.
 *
 * Bounds: LEN ≤ BV_IOCMD_MAX_LEN and OFF+LEN must not overflow.  The executor
 * moves data through one buffer of at most BV_IOCMD_CHUNK bytes, so a 1 GiB
 * write costs 4 MiB of memory, not 1 GiB.
 *
 * Range: as qemu-io (blk_check_byte_request), the whole request is checked
 * against the target's size before the first byte moves, so a write that
 * runs past the end changes nothing; it fails with EIO and a message that
 * names the request.  Cancellation: an optional callback is asked before
 * every chunk, so a caller whose client went away stops a long command.
 */
#ifndef BV_IOCMD_H
#define BV_IOCMD_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/error.h"

#define BV_IOCMD_MAX_LEN   (1ULL << 30)   /* one command moves at most 1 GiB */
#define BV_IOCMD_CHUNK     (4u << 20)     /* executor buffer size */
#define BV_IOCMD_DEFAULT_PATTERN 0xcd     /* write without -P, as qemu-io */

enum bv_iocmd_op {
    BV_IOCMD_READ = 1,
    BV_IOCMD_WRITE,
    BV_IOCMD_DISCARD,
    BV_IOCMD_FLUSH,
};

struct bv_iocmd {
    enum bv_iocmd_op op;
    uint64_t offset;
    uint64_t length;         /* 0 for flush */
    bool has_pattern;        /* read: verify; write: fill byte given */
    uint8_t pattern;         /* write: BV_IOCMD_DEFAULT_PATTERN unless -P */
    bool zero;               /* write -z */
};

/* Parse one command.  On error *cmd is unspecified and *errp says why
 * (-EINVAL). */
int bv_iocmd_parse(const char *line, struct bv_iocmd *cmd, bv_error **errp);

/* "read" / "write" / "discard" / "flush" */
const char *bv_iocmd_op_name(enum bv_iocmd_op op);

/* Where commands run.  Each op returns 0 or a negative errno and may fill
 * *errp.  Ranges given to them are at most BV_IOCMD_CHUNK long for pread and
 * pwrite; write_zeroes and discard get the whole command range.  size is
 * the target's length in bytes (every range must lie inside it); cancelled
 * (may be NULL) returns true when the work should stop.  Initialise with
 * designated initializers. */
struct bv_iocmd_target {
    void *opaque;
    int (*pread)(void *opaque, void *buf, uint64_t len, uint64_t off, bv_error **errp);
    int (*pwrite)(void *opaque, const void *buf, uint64_t len, uint64_t off,
                  bv_error **errp);
    int (*write_zeroes)(void *opaque, uint64_t len, uint64_t off, bv_error **errp);
    int (*discard)(void *opaque, uint64_t len, uint64_t off, bv_error **errp);
    int (*flush)(void *opaque, bv_error **errp);
    uint64_t size;
    bool (*cancelled)(void *opaque);
};

/* Run cmd against t.  Returns the number of bytes processed (the command's
 * length; 0 for flush) or a negative errno.  A range past t->size is -EIO,
 * "Input/output error: write offset=O bytes=N is past the end of the image
 * (S bytes)", before any byte moves.  A cancelled command is -ECANCELED
 * ("write cancelled after D of N bytes"); bytes already moved stay moved.
 * A read whose data differs from
 * its -P pattern returns -EIO with kind BV_ERR_MISMATCH, offset = the
 * command's offset, and qemu-io's wording: "Pattern verification failed at
 * offset N, M bytes". */
int64_t bv_iocmd_exec(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                      bv_error **errp);

#endif
