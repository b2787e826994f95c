/*
 * fuzz_fdinfo.c - libFuzzer target: the reader of /proc/PID/fdinfo/EPFD
 * (src/procfs.c), through the same chunked line reader the shim and
 * epollfork-ps use.  The kernel's text is trusted by nobody here: any bytes,
 * any line length, numbers of any size.  Each entry handed to the callback
 * must come from a well-formed `tfd:` line.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "procfs.h"

static int count(const struct ef_tfd *t, void *arg)
{
    if (t->tfd < 0)
        abort();
    ++*(int *)arg;
    return 0;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    struct ef_tfd t;
    ef_procfs_parse_tfd((const char *)data, size, &t);
    int fd = memfd_create("fdinfo", 0);
    if (fd < 0)
        return 0;
    if (write(fd, data, size) == (ssize_t)size && lseek(fd, 0, SEEK_SET) == 0) {
        int n = 0;
        ef_procfs_read_entries(fd, count, &n);
    }
    close(fd);
    return 0;
}
