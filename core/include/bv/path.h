/*
 * Path confinement: open, create, stat and unlink files by name so that,
 * with a root, nothing outside the root directory is ever touched — even
 * while someone with write access inside the root swaps directories for
 * symlinks under us.
 *
 * A root is a directory opened once (struct bv_root: an O_PATH descriptor
 * plus its canonical name).  Every confined name is resolved by the kernel
 * beneath that descriptor (openat2 with RESOLVE_BENEATH |
 * RESOLVE_NO_MAGICLINKS), and the operation acts on the resulting
 * descriptor: a file is opened and then only used through its fd; a file is
 * created with O_EXCL and unlinked with unlinkat(2), both on the descriptor
 * of its parent directory resolved the same way.  A name is never checked
 * and then walked again, so there is no window to race.  Symlinks that stay
 * inside the root are followed; a symlink (or "..") leading out — at any
 * moment during the walk — is refused.  Kernels without openat2 get a
 * component-by-component openat(O_NOFOLLOW) walk that refuses every
 * symlink.
 *
 * Names.  Client names (from the REST API or a job request) are relative
 * to the root: absolute names and ".." components are refused by form.
 * Names recorded inside an image (backing files) may be absolute — then
 * they must lie under the root's canonical (or given) name and are turned
 * into root-relative ones — or use ".." relative to the image's directory,
 * as long as the kernel's walk stays beneath the root.
 *
 * The name a confined operation reports (*name out-parameters, node file
 * names, error texts) is root-relative: a server's storage location never
 * shows in what a client sees.
 *
 * Without a root nothing is confined (the bvimg command line): names are
 * relative to the cwd, and *name is the canonical host path.
 */
#ifndef BV_PATH_H
#define BV_PATH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "bv/error.h"

struct bv_root {
    int fd;                      /* O_PATH | O_DIRECTORY descriptor of the root */
    char *real;                  /* canonical path at open time */
    char *given;                 /* the path as given to bv_root_open */
};

/* Identity of an open file: what "the same file" means (names are not). */
struct bv_file_id {
    uint64_t dev, ino;
};

enum {
    BV_PATH_ALLOW_ABSOLUTE = 1 << 0,   /* recorded name: absolute allowed (still inside root) */
    BV_PATH_ALLOW_DOTDOT   = 1 << 1,   /* recorded name: ".." allowed (still inside root) */
};
#define BV_PATH_RECORDED (BV_PATH_ALLOW_ABSOLUTE | BV_PATH_ALLOW_DOTDOT)

/* Open the directory `path` as a root.  *out is owned by the caller
 * (bv_root_close).  Errors: -ENOENT, -ENOTDIR, -ENOMEM. */
int bv_root_open(const char *path, struct bv_root **out, bv_error **errp);
void bv_root_close(struct bv_root *root);

/* The name `path` stands for (relative to base_dir if given, a name as
 * returned in *name by these functions, else to the root or the cwd), after
 * the form checks for flags: root-relative and normalised ("." and empty
 * components dropped, "." for the root itself) with a root, the plain join
 * without.  Nothing is opened.  *name is malloc'd (caller frees).
 * Errors: -EACCES (absolute, "..", outside the root by name), -EINVAL
 * (empty), -ENAMETOOLONG. */
int bv_path_name(const struct bv_root *root, const char *base_dir, const char *path,
                 unsigned flags, char **name, bv_error **errp);

/* Open `path` (as bv_path_name) with oflags (O_CLOEXEC added).  With a root
 * the walk stays beneath it; O_CREAT creates beneath the root and always
 * adds O_EXCL|O_NOFOLLOW (-EEXIST if the name exists, even as a dangling
 * symlink).  *fd is the new descriptor (-1 on failure); *name (if non-NULL)
 * gets the name as above (without a root: canonical).  Errors: -EACCES
 * ("path leads outside the allowed directory: <path>"), -ENOENT,
 * -EEXIST, -ELOOP, and the form errors of bv_path_name. */
int bv_path_open(const struct bv_root *root, const char *base_dir, const char *path,
                 unsigned flags, int oflags, mode_t mode, int *fd, char **name,
                 bv_error **errp);

/* fstat of `path` opened (O_PATH) as bv_path_open would, no follow-up by name. */
int bv_path_stat(const struct bv_root *root, const char *path, struct stat *st,
                 bv_error **errp);

/* Unlink the client name `path`: its parent directory is resolved as in
 * bv_path_open and the entry removed with unlinkat on that descriptor.
 * A directory is -EISDIR "'<path>' is a directory" (nothing is removed). */
int bv_path_unlink(const struct bv_root *root, const char *path, bv_error **errp);

/* fsync the directory that holds `path` (resolved as in bv_path_open), so that a file
 * created, renamed or unlinked there stays so after a power loss: 0 or -errno. */
int bv_path_sync_parent(const struct bv_root *root, const char *path);

/* Directory part of a name (malloc'd): "." for a bare name, "/" for a file in "/". */
char *bv_path_dirname(const char *path);

/* `real` (canonical) is root_real itself or below it. */
bool bv_path_is_inside(const char *root_real, const char *real);

/* The fallback walk used when the kernel has no openat2, exposed so tests can
 * exercise it: open rel (relative, normalised) beneath dirfd, refusing every
 * symlink and any ".." above dirfd (-EXDEV).  Returns the fd or -errno. */
int bv_path_walk_open(int dirfd, const char *rel, int oflags, mode_t mode);

#endif
