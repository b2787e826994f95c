/*
 * fuzz_suppress.c - libFuzzer target: the suppressions file (src/suppress.c).
 *
 * The input is the file.  It is handed to the loader through a memfd (a
 * regular file, as the loader insists), then a report is matched against the
 * rules it kept.  Nothing may crash (run with -close_fd_mask=3: the loader's
 * notices, capped at a few per process, are not the fuzzer's business).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ef.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char *none[] = {NULL};
    char err[64];
    ef_options_parse(none, err, sizeof err);
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    int fd = memfd_create("supp", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ef_suppressions_load(path);
    struct ef_report r;
    ef_report_init(&r, EF_KIND_EXEC_LEAK, NULL, 3);
    snprintf(r.program, sizeof r.program, "/usr/bin/prog");
    ef_suppressed(&r);
    close(fd);
    return 0;
}
