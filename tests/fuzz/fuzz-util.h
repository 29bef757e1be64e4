/*
 * Scratch space for the fuzz targets: one directory per process, under
 * $BV_FUZZ_TMPDIR (scripts/fuzz points it at a directory it removes
 * afterwards), else /dev/shm (images written per input cost no disk
 * I/O), else /tmp.  The directory and the files in it are removed at a
 * normal exit; a crash leaves them for the one who looks at it.
 */
#ifndef BV_FUZZ_UTIL_H
#define BV_FUZZ_UTIL_H

#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char fuzz_dir[256];

static void fuzz_dir_remove(void)
{
    DIR *d = opendir(fuzz_dir);
    struct dirent *de;
    char path[512];
    while (d && (de = readdir(d)))
        if (de->d_name[0] != '.') {
            snprintf(path, sizeof(path), "%s/%s", fuzz_dir, de->d_name);
            unlink(path);
        }
    if (d)
        closedir(d);
    rmdir(fuzz_dir);
}

/* Make the directory ("<parent>/<tag>.XXXXXX") once; NULL if that fails. */
static const char *fuzz_scratch_dir(const char *tag)
{
    if (fuzz_dir[0])
        return fuzz_dir;
    const char *parent = getenv("BV_FUZZ_TMPDIR");
    if (!parent || !parent[0])
        parent = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/%s.XXXXXX", parent, tag);
    if (!mkdtemp(fuzz_dir)) {
        fuzz_dir[0] = '\0';
        return NULL;
    }
    atexit(fuzz_dir_remove);
    return fuzz_dir;
}

#endif
