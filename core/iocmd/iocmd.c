/*
 * iocmd: parser and executor for the qemu-io subset (see bv/iocmd.h).
 *
 * The parser splits the line into at most a handful of words (a longer line
 * is refused, not truncated), reads options until the first operand, then
 * exactly the operands the command takes.  Numbers are parsed by hand so
 * that "1.5M", "-1", "0x1k", "1e3" or a value past 2^64 are errors rather than
 * strtoull's silent best effort.
 *
 * The executor first checks the whole range against the target's size (so
 * a failing request changes nothing), then owns one buffer of
 * min(LEN, BV_IOCMD_CHUNK) bytes and walks the range in chunks, asking the
 * cancel callback before each; zero writes and discards go to the target
 * whole.
 */
#include "bv/iocmd.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "util/checked.h"

#define MAX_WORDS 8
#define MAX_WORD  64

struct words {
    unsigned n;
    char w[MAX_WORDS][MAX_WORD];
};

/* Bytes of s to quote, at most max, without cutting a UTF-8 sequence: the
 * text ends up in a JSON error reply, which must stay valid UTF-8. */
static int utf8_cut(const char *s, int max)
{
    int n = (int)strnlen(s, (size_t)max);
    while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
        n--;
    return n;
}

static int split_words(const char *line, struct words *ws, bv_error **errp)
{
    ws->n = 0;
    const char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            return 0;
        size_t len = strcspn(p, " \t\n\r");
        if (ws->n == MAX_WORDS)
            return bv_error_setf(errp, EINVAL, "too many arguments");
        if (len >= MAX_WORD)
            return bv_error_setf(errp, EINVAL, "argument too long: '%.*s...'",
                                 utf8_cut(p, 20), p);
        memcpy(ws->w[ws->n], p, len);
        ws->w[ws->n][len] = '\0';
        ws->n++;
        p += len;
    }
}

static int digit_value(char c, unsigned base)
{
    int v;
    if (c >= '0' && c <= '9')
        v = c - '0';
    else if (c >= 'a' && c <= 'f')
        v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        v = c - 'A' + 10;
    else
        return -1;
    return v < (int)base ? v : -1;
}

/* Digits of s in base; *end points past them.  False on overflow or no digit. */
static bool parse_digits(const char *s, unsigned base, uint64_t *out, const char **end)
{
    uint64_t v = 0;
    const char *p = s;
    int d;
    while ((d = digit_value(*p, base)) >= 0) {
        if (!ck_mul(v, base, &v) || !ck_add(v, (uint64_t)d, &v))
            return false;
        p++;
    }
    *out = v;
    *end = p;
    return p != s;
}

static int suffix_shift(char c)
{
    switch (c) {
    case 'k': case 'K': return 10;
    case 'm': case 'M': return 20;
    case 'g': case 'G': return 30;
    case 't': case 'T': return 40;
    default:            return -1;
    }
}

/* A number: 0x hex, or decimal with an optional single k/M/G/T suffix. */
static int parse_number(const char *s, const char *what, uint64_t *out, bv_error **errp)
{
    const char *end;
    uint64_t v;
    bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    if (!parse_digits(hex ? s + 2 : s, hex ? 16 : 10, &v, &end))
        return bv_error_setf(errp, EINVAL, "invalid %s '%s'", what, s);
    if (*end && !hex) {
        int shift = suffix_shift(*end);
        if (shift < 0 || end[1] != '\0')
            return bv_error_setf(errp, EINVAL, "invalid %s '%s'", what, s);
        if (v > (UINT64_MAX >> shift))
            return bv_error_setf(errp, EINVAL, "%s '%s' is too large", what, s);
        v <<= shift;
        end++;
    }
    if (*end)
        return bv_error_setf(errp, EINVAL, "invalid %s '%s'", what, s);
    *out = v;
    return 0;
}

static int parse_pattern(const char *s, uint8_t *out, bv_error **errp)
{
    const char *end;
    uint64_t v;
    bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
    if (!parse_digits(hex ? s + 2 : s, hex ? 16 : 10, &v, &end) || *end || v > 255)
        return bv_error_setf(errp, EINVAL, "%s is not a valid pattern byte", s);
    *out = (uint8_t)v;
    return 0;
}

static const struct {
    enum bv_iocmd_op op;
    const char *name;
    const char *opts;        /* option letters the command takes; ':' = has a value */
    unsigned noperands;
} commands[] = {
    { BV_IOCMD_READ,    "read",    "P:", 2 },
    { BV_IOCMD_WRITE,   "write",   "P:z", 2 },
    { BV_IOCMD_DISCARD, "discard", "", 2 },
    { BV_IOCMD_FLUSH,   "flush",   "", 0 },
};

const char *bv_iocmd_op_name(enum bv_iocmd_op op)
{
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (commands[i].op == op)
            return commands[i].name;
    return NULL;
}

/* Apply option letter c (value v, or NULL) to cmd. */
static int apply_option(struct bv_iocmd *cmd, char c, const char *v, bv_error **errp)
{
    if (c == 'z') {
        cmd->zero = true;
        return 0;
    }
    cmd->has_pattern = true;
    return parse_pattern(v, &cmd->pattern, errp);
}

/* Options from ws->w[*i] on; leaves *i at the first operand. */
static int parse_options(const struct words *ws, unsigned *i, const char *opts,
                         struct bv_iocmd *cmd, bv_error **errp)
{
    for (; *i < ws->n && ws->w[*i][0] == '-'; (*i)++) {
        const char *w = ws->w[*i];
        const char *spec = w[1] ? strchr(opts, w[1]) : NULL;
        if (!spec || w[1] == ':')
            return bv_error_setf(errp, EINVAL, "invalid option '%s' for %s", w,
                                 ws->w[0]);
        const char *val = NULL;
        if (spec[1] == ':') {
            if (w[2])
                val = w + 2;
            else if (*i + 1 < ws->n)
                val = ws->w[++*i];
            else
                return bv_error_setf(errp, EINVAL, "option '-%c' needs a value", w[1]);
        } else if (w[2]) {
            return bv_error_setf(errp, EINVAL, "invalid option '%s' for %s", w, ws->w[0]);
        }
        int r = apply_option(cmd, w[1], val, errp);
        if (r < 0)
            return r;
    }
    return 0;
}

static int check_command(const struct bv_iocmd *cmd, bv_error **errp)
{
    uint64_t end;
    if (cmd->zero && cmd->has_pattern)
        return bv_error_setf(errp, EINVAL, "-z and -P cannot be specified at the same time");
    if (cmd->length > BV_IOCMD_MAX_LEN)
        return bv_error_setf(errp, EINVAL, "length %" PRIu64 " exceeds the limit of %llu bytes",
                             cmd->length, BV_IOCMD_MAX_LEN);
    if (!ck_add(cmd->offset, cmd->length, &end))
        return bv_error_setf(errp, EINVAL, "offset + length overflows");
    return 0;
}

int bv_iocmd_parse(const char *line, struct bv_iocmd *cmd, bv_error **errp)
{
    struct words ws;
    int r = split_words(line, &ws, errp);
    if (r < 0)
        return r;
    if (ws.n == 0)
        return bv_error_setf(errp, EINVAL, "empty command");
    size_t k;
    for (k = 0; k < sizeof(commands) / sizeof(commands[0]); k++)
        if (!strcmp(ws.w[0], commands[k].name))
            break;
    if (k == sizeof(commands) / sizeof(commands[0]))
        return bv_error_setf(errp, EINVAL, "command \"%s\" not found", ws.w[0]);

    memset(cmd, 0, sizeof(*cmd));
    cmd->op = commands[k].op;
    cmd->pattern = BV_IOCMD_DEFAULT_PATTERN;
    unsigned i = 1;
    r = parse_options(&ws, &i, commands[k].opts, cmd, errp);
    if (r < 0)
        return r;
    if (ws.n - i != commands[k].noperands)
        return bv_error_setf(errp, EINVAL, "%s takes %u arguments after its options, got %u",
                             commands[k].name, commands[k].noperands, ws.n - i);
    if (commands[k].noperands == 2) {
        r = parse_number(ws.w[i], "offset", &cmd->offset, errp);
        if (r == 0)
            r = parse_number(ws.w[i + 1], "length", &cmd->length, errp);
        if (r < 0)
            return r;
    }
    return check_command(cmd, errp);
}

/* ---- executor ---- */

/* The whole request inside the target, checked before the first byte (as
 * QEMU's blk_check_byte_request: EIO, nothing written). */
static int check_range(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                       bv_error **errp)
{
    if (cmd->op == BV_IOCMD_FLUSH)
        return 0;
    if (cmd->offset > t->size || cmd->length > t->size - cmd->offset)
        return bv_error_setf(errp, EIO, "Input/output error: %s offset=%" PRIu64 " bytes=%"
                             PRIu64 " is past the end of the image (%" PRIu64 " bytes)",
                             bv_iocmd_op_name(cmd->op), cmd->offset, cmd->length, t->size);
    return 0;
}

static int check_cancelled(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                           uint64_t done, bv_error **errp)
{
    if (!t->cancelled || !t->cancelled(t->opaque))
        return 0;
    return bv_error_setf(errp, ECANCELED, "%s cancelled after %" PRIu64 " of %" PRIu64
                         " bytes", bv_iocmd_op_name(cmd->op), done, cmd->length);
}

static int exec_read(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                     uint8_t *buf, size_t bufsz, bv_error **errp)
{
    bool mismatch = false;
    for (uint64_t done = 0; done < cmd->length;) {
        size_t n = cmd->length - done < bufsz ? (size_t)(cmd->length - done) : bufsz;
        int r = check_cancelled(cmd, t, done, errp);
        if (r < 0)
            return r;
        r = t->pread(t->opaque, buf, n, cmd->offset + done, errp);
        if (r < 0)
            return r;
        /* every byte equals the pattern iff the first does and each equals its neighbour */
        if (cmd->has_pattern && !mismatch && n > 0)
            mismatch = buf[0] != cmd->pattern || memcmp(buf, buf + 1, n - 1) != 0;
        done += n;
    }
    if (mismatch)
        return bv_error_set_kind(errp, EIO, BV_ERR_MISMATCH, cmd->offset,
                                 "Pattern verification failed at offset %" PRIu64
                                 ", %" PRIu64 " bytes", cmd->offset, cmd->length);
    return 0;
}

static int exec_write(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                      uint8_t *buf, size_t bufsz, bv_error **errp)
{
    memset(buf, cmd->pattern, bufsz);
    for (uint64_t done = 0; done < cmd->length;) {
        size_t n = cmd->length - done < bufsz ? (size_t)(cmd->length - done) : bufsz;
        int r = check_cancelled(cmd, t, done, errp);
        if (r < 0)
            return r;
        r = t->pwrite(t->opaque, buf, n, cmd->offset + done, errp);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

/* Read or data write through one bounded buffer. */
static int exec_buffered(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                         bv_error **errp)
{
    size_t bufsz = cmd->length < BV_IOCMD_CHUNK ? (size_t)cmd->length : BV_IOCMD_CHUNK;
    uint8_t *buf = malloc(bufsz ? bufsz : 1);
    if (!buf)
        return bv_error_setf(errp, ENOMEM, "out of memory for a %zu byte buffer", bufsz);
    int r = cmd->op == BV_IOCMD_READ ? exec_read(cmd, t, buf, bufsz, errp)
                                     : exec_write(cmd, t, buf, bufsz, errp);
    free(buf);
    return r;
}

int64_t bv_iocmd_exec(const struct bv_iocmd *cmd, const struct bv_iocmd_target *t,
                      bv_error **errp)
{
    int r = check_command(cmd, errp);
    if (r == 0)
        r = check_range(cmd, t, errp);
    if (r == 0)
        r = check_cancelled(cmd, t, 0, errp);
    if (r < 0)
        return r;
    switch (cmd->op) {
    case BV_IOCMD_READ:
        r = exec_buffered(cmd, t, errp);
        break;
    case BV_IOCMD_WRITE:
        r = cmd->zero ? t->write_zeroes(t->opaque, cmd->length, cmd->offset, errp)
                      : exec_buffered(cmd, t, errp);
        break;
    case BV_IOCMD_DISCARD:
        r = t->discard(t->opaque, cmd->length, cmd->offset, errp);
        break;
    case BV_IOCMD_FLUSH:
        r = t->flush(t->opaque, errp);
        break;
    default:
        r = bv_error_setf(errp, EINVAL, "unknown io command %d", (int)cmd->op);
    }
    return r < 0 ? r : (int64_t)cmd->length;
}
