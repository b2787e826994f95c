/*
 * zone.c - the process-private memory of the shim, in one lazy mapping.
 *
 * The shim's private tables (the fd table's first page and first level, the
 * view of each instance it holds, the copies of stacks kept for later, the
 * registrations' side table, the ghosts, the rings, ...) are about 1 MiB.  In
 * .bss they cost every exec'd process one more mapping at load time, ~15 us
 * on this VM (bench/RESULTS.md, start-up), whether or not it ever uses epoll.
 * Here they are one private anonymous mapping, made at the first need (the
 * first epoll use, mostly), reserved without backing (MAP_NORESERVE):
 * untouched pages cost nothing, and a fork copies it as it would .bss.  The
 * shim's .bss is then small enough to sit in the last page of its data, which
 * the loader writes anyway.
 *
 * Its last page is the wipe page (hold.c): MADV_WIPEONFORK, zero in a fork
 * child, which is how a child knows it is one.  A part is asked for by
 * ef_zone(); NULL when the mapping cannot be made (RLIMIT_AS): the caller
 * does without, as without any other mapping of the shim.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "ef.h"

EF_HOT static char *_Atomic zone;
EF_HOT static int wipe_ok;              /* MADV_WIPEONFORK took on the last page */

EF_INIT_TEXT int ef_zone_wipe_ok(void)
{
    return wipe_ok;
}

EF_INIT_TEXT void *ef_zone_at(size_t off)
{
    char *z = atomic_load_explicit(&zone, memory_order_acquire);
    if (EF_UNLIKELY(!z)) {
        size_t size = sizeof(struct ef_zone_layout);
        char *m = ef_sys_mmap(NULL, size, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        char *expect = NULL;
        if (atomic_compare_exchange_strong(&zone, &expect, m)) {
            z = m;
            wipe_ok = ef_sys_madvise(m + offsetof(struct ef_zone_layout, EF_Z_WIPE), 4096,
                                     MADV_WIPEONFORK) == 0;
        } else {
            ef_sys_munmap(m, size); /* another thread made it first */
            z = expect;
        }
    }
    return off < sizeof(struct ef_zone_layout) ? z + off : NULL;
}
