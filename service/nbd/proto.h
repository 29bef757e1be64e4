/*
 * The NBD wire format (the NetworkBlockDevice project's doc/proto.md), the
 * part this server speaks: fixed newstyle negotiation, simple and structured
 * replies, meta contexts.  Every integer on the wire is big-endian; the
 * packed structs below are the exact byte layouts (sizes asserted), filled
 * and read with htobe64/be64toh and friends at the edge (server.c).
 */
#ifndef BV_NBD_PROTO_H
#define BV_NBD_PROTO_H

#include <stdint.h>

/* Handshake */
#define NBD_MAGIC              0x4e42444d41474943ULL   /* "NBDMAGIC" */
#define NBD_IHAVEOPT           0x49484156454f5054ULL   /* "IHAVEOPT" */
#define NBD_REP_MAGIC          0x0003e889045565a9ULL

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* Options */
enum {
    NBD_OPT_EXPORT_NAME = 1,
    NBD_OPT_ABORT = 2,
    NBD_OPT_LIST = 3,
    NBD_OPT_STARTTLS = 5,
    NBD_OPT_INFO = 6,
    NBD_OPT_GO = 7,
    NBD_OPT_STRUCTURED_REPLY = 8,
    NBD_OPT_LIST_META_CONTEXT = 9,
    NBD_OPT_SET_META_CONTEXT = 10,
};

/* Option replies; errors have bit 31 set */
#define NBD_REP_ERR(n) (0x80000000u | (n))
enum {
    NBD_REP_ACK = 1,
    NBD_REP_SERVER = 2,
    NBD_REP_INFO = 3,
    NBD_REP_META_CONTEXT = 4,
};
#define NBD_REP_ERR_UNSUP    NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY   NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID  NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN  NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN NBD_REP_ERR(7)
#define NBD_REP_ERR_TOO_BIG  NBD_REP_ERR(9)

/* NBD_REP_INFO types */
enum {
    NBD_INFO_EXPORT = 0,
    NBD_INFO_NAME = 1,
    NBD_INFO_DESCRIPTION = 2,
    NBD_INFO_BLOCK_SIZE = 3,
};

/* Transmission flags */
#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBD_FLAG_CAN_MULTI_CONN    (1u << 8)

/* Commands and their flags */
enum {
    NBD_CMD_READ = 0,
    NBD_CMD_WRITE = 1,
    NBD_CMD_DISC = 2,
    NBD_CMD_FLUSH = 3,
    NBD_CMD_TRIM = 4,
    NBD_CMD_CACHE = 5,
    NBD_CMD_WRITE_ZEROES = 6,
    NBD_CMD_BLOCK_STATUS = 7,
};
#define NBD_CMD_FLAG_FUA     (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)
#define NBD_CMD_FLAG_DF      (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE (1u << 3)

/* Transmission magics */
#define NBD_REQUEST_MAGIC            0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC       0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC   0x668e33efu

/* Structured reply chunks */
#define NBD_REPLY_FLAG_DONE          (1u << 0)
enum {
    NBD_REPLY_TYPE_NONE = 0,
    NBD_REPLY_TYPE_OFFSET_DATA = 1,
    NBD_REPLY_TYPE_OFFSET_HOLE = 2,
    NBD_REPLY_TYPE_BLOCK_STATUS = 5,
    NBD_REPLY_TYPE_ERROR = (1 << 15) + 1,
};

/* base:allocation flags */
#define NBD_STATE_HOLE  (1u << 0)
#define NBD_STATE_ZERO  (1u << 1)
/* qemu:dirty-bitmap:<name> flag */
#define NBD_STATE_DIRTY (1u << 0)

/* NBD errnos (fixed values, not the host's) */
enum {
    NBD_EPERM = 1,
    NBD_EIO = 5,
    NBD_ENOMEM = 12,
    NBD_EINVAL = 22,
    NBD_ENOSPC = 28,
    NBD_EOVERFLOW = 75,
    NBD_ENOTSUP = 95,
    NBD_ESHUTDOWN = 108,
};

/* ---- byte layouts ---- */

struct nbd_hello {               /* S: first message */
    uint64_t magic;              /* NBD_MAGIC */
    uint64_t opt_magic;          /* NBD_IHAVEOPT */
    uint16_t flags;              /* handshake flags */
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_hello) == 18, "nbd_hello");

struct nbd_opt_hdr {             /* C: option request header, then len bytes */
    uint64_t magic;              /* NBD_IHAVEOPT */
    uint32_t option;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_opt_hdr) == 16, "nbd_opt_hdr");

struct nbd_opt_reply {           /* S: option reply header, then len bytes */
    uint64_t magic;              /* NBD_REP_MAGIC */
    uint32_t option;
    uint32_t type;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_opt_reply) == 20, "nbd_opt_reply");

struct nbd_export_name_reply {   /* S: after NBD_OPT_EXPORT_NAME (then 124 zeros
                                    unless NO_ZEROES) */
    uint64_t size;
    uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_export_name_reply) == 10, "nbd_export_name_reply");

struct nbd_info_export {         /* NBD_REP_INFO payload of NBD_INFO_EXPORT */
    uint16_t type;
    uint64_t size;
    uint16_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_info_export) == 12, "nbd_info_export");

struct nbd_info_block_size {     /* NBD_REP_INFO payload of NBD_INFO_BLOCK_SIZE */
    uint16_t type;
    uint32_t minimum, preferred, maximum;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_info_block_size) == 14, "nbd_info_block_size");

struct nbd_request {             /* C: transmission request (then len bytes for WRITE) */
    uint32_t magic;              /* NBD_REQUEST_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_request) == 28, "nbd_request");

struct nbd_simple_reply {        /* S: simple reply (then data for a good READ) */
    uint32_t magic;              /* NBD_SIMPLE_REPLY_MAGIC */
    uint32_t error;
    uint64_t cookie;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_simple_reply) == 16, "nbd_simple_reply");

struct nbd_chunk {               /* S: structured reply chunk header, then len bytes */
    uint32_t magic;              /* NBD_STRUCTURED_REPLY_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint32_t len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_chunk) == 20, "nbd_chunk");

struct nbd_chunk_error {         /* NBD_REPLY_TYPE_ERROR payload (then the message) */
    uint32_t error;
    uint16_t msg_len;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_chunk_error) == 6, "nbd_chunk_error");

struct nbd_block_descriptor {    /* NBD_REPLY_TYPE_BLOCK_STATUS entries, after the id */
    uint32_t length;
    uint32_t flags;
} __attribute__((packed));
_Static_assert(sizeof(struct nbd_block_descriptor) == 8, "nbd_block_descriptor");

#endif
