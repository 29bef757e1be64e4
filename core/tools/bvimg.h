/*
 * bvimg: a qemu-img-like command line over the image engine (bv/image.h).
 * Private header shared by bvimg*.c.  Each subcommand is one function taking
 * (argc, argv) with argv[0] the subcommand name, returning the process exit
 * status.  Only bvimg prints: errors go to stderr prefixed "bvimg: ".
 */
#ifndef BV_TOOLS_BVIMG_H
#define BV_TOOLS_BVIMG_H

#include <stdbool.h>
#include <stdint.h>

#include "bv/error.h"
#include "bv/image.h"

/* Print "bvimg: <fmt>" to stderr. */
void bvimg_errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "bvimg: <prefix>: <e->msg>" (or strerror(-ret) without e) and free e. */
void bvimg_report(bv_error *e, int ret, const char *prefix);

/* "qcow2"/"raw" into *out (NULL keeps BV_FMT_NONE = probe); false after printing an error. */
bool bvimg_parse_format(const char *name, enum bv_format *out);
/* Size with optional k/K/M/G/T/P/E suffix (powers of 1024); false after printing an error. */
bool bvimg_parse_size(const char *s, uint64_t *out);
/* Open path; on failure prints "Could not open 'path': ..." and returns < 0. */
int bvimg_open(const char *path, enum bv_format fmt, bool read_only, bool no_backing,
               bv_node **out);
/* qemu's human size: "64 MiB", "1.5 GiB", "196 KiB", "0 B". */
void bvimg_human_size(uint64_t v, char *buf, unsigned len);
/* Print s as a JSON string literal (with quotes). */
void bvimg_json_string(const char *s);
/* The unknown-option / missing-argument message for getopt's '?' or ':'. */
int bvimg_bad_option(const char *cmd, int opt, const char *arg);

/* "-o a=b,c=d" options */
struct bvimg_opts {
    uint32_t cluster_size;
    bool compat_v2;
    bool compression_zstd;
    bool extended_l2;
    const char *backing_file;
    const char *backing_fmt;
};
/* Parse into o; `allowed` lists accepted keys ("cluster_size,compat"). */
bool bvimg_parse_o(char *str, const char *allowed, struct bvimg_opts *o);

int bvimg_cmd_create(int argc, char **argv);
int bvimg_cmd_info(int argc, char **argv);
int bvimg_cmd_check(int argc, char **argv);
int bvimg_cmd_compare(int argc, char **argv);
int bvimg_cmd_convert(int argc, char **argv);
int bvimg_cmd_rebase(int argc, char **argv);
int bvimg_cmd_map(int argc, char **argv);
int bvimg_cmd_io(int argc, char **argv);

#endif
