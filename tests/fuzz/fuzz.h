/*
 * fuzz.h - what the libFuzzer targets in tests/fuzz share: a check that
 * turns a broken invariant into a crash libFuzzer reports, quiet logging,
 * and a private scratch directory for targets that need files.
 *
 * Each target is one fuzz_<name>.c defining LLVMFuzzerTestOneInput; the
 * Makefile links it with every module object (VARIANT=fuzz, clang) and
 * tools/run-fuzz runs it. A target must free everything it allocates
 * (LeakSanitizer runs at exit) and write files only under fuzz_tmpdir().
 */
#ifndef DTX_TEST_FUZZ_H
#define DTX_TEST_FUZZ_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dtx/log.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test; a broken one aborts, and libFuzzer keeps the input. */
#define FUZZ_CHECK(cond)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: fuzz check failed: %s\n", __FILE__, __LINE__, #cond);          \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* Only errors reach stderr: what the code logs about bad input would drown libFuzzer's lines. */
static inline void fuzz_quiet(const char *prog)
{
    log_init(prog, LOG_ERROR);
}

/* Removes every file in dir (not subdirectories: targets make none). */
static inline void fuzz_empty_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;

    if (!d)
        return;
    while ((e = readdir(d)) != NULL) {
        char path[PATH_MAX];

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

static char fuzz_dir[PATH_MAX];

static inline void fuzz_remove_tmpdir(void)
{
    if (!fuzz_dir[0])
        return;
    fuzz_empty_dir(fuzz_dir);
    rmdir(fuzz_dir);
}

/*
 * A directory of this process's own under $TMPDIR (or /tmp), made at the
 * first call and removed at a normal exit. tools/run-fuzz points TMPDIR
 * into build/fuzz, so what a crash leaves behind stays there.
 */
static inline const char *fuzz_tmpdir(void)
{
    const char *tmp = getenv("TMPDIR");

    if (fuzz_dir[0])
        return fuzz_dir;
    snprintf(fuzz_dir, sizeof(fuzz_dir), "%s/dtx-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(fuzz_dir)) {
        perror("fuzz: could not make a scratch directory");
        abort();
    }
    atexit(fuzz_remove_tmpdir);
    return fuzz_dir;
}

#endif
