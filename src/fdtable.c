/*
 * fdtable.c - fd number -> what the shim knows about it, for any fd number.
 *
 * A two-level table like tsan_fd.cpp's: a first level of 16,384 page pointers
 * in .bss (untouched pages cost no memory) and second-level pages of 4,096
 * entries mapped on first use, so fd 70,000 costs one page, not
 * a 1 MiB array.  (Entries are 32 bytes: 128 KiB a page, of which only the
 * touched 4 KiB pieces cost memory.)  Lookups are two loads and no lock; pages are installed with a
 * compare-and-swap and never freed.  The table is process-private: fork copies
 * it, which is exactly the kernel's fd table semantics.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "ef.h"

#define PAGE_BITS EF_FD_PAGE_BITS
#define PAGE_ENTRIES (1u << PAGE_BITS)
#define L1_ENTRIES (EF_FD_MAX >> PAGE_BITS)

/* The first page (fds 0-4095, all most programs ever use) lives in .bss: no
 * mapping of its own, because every mapping a process has costs ~1.7 us at
 * each fork (bench/RESULTS.md); untouched .bss costs nothing. */
static struct ef_fd page0[PAGE_ENTRIES];
struct ef_fd *_Atomic ef_l1[L1_ENTRIES]; /* .bss: set on first use, not at load */
#define l1 ef_l1
static _Atomic size_t pages_mapped;
static _Atomic unsigned l1_top;   /* 1 + the highest first-level index in use */

struct ef_fd *ef_fd_get(int fd)
{
    if ((unsigned)fd >= EF_FD_MAX)
        return NULL;
    unsigned i = (unsigned)fd >> PAGE_BITS;
    struct ef_fd *p = atomic_load_explicit(&l1[i], memory_order_acquire);
    if (!p) {
        void *m = i == 0 ? (void *)page0
                         : mmap(NULL, PAGE_ENTRIES * sizeof(struct ef_fd), PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        struct ef_fd *expect = NULL;
        if (atomic_compare_exchange_strong(&l1[i], &expect, (struct ef_fd *)m)) {
            p = m;
            atomic_fetch_add(&pages_mapped, 1);
            unsigned top = atomic_load(&l1_top);
            while (top < i + 1 && !atomic_compare_exchange_weak(&l1_top, &top, i + 1))
                ;
        } else {
            if (m != (void *)page0)
                munmap(m, PAGE_ENTRIES * sizeof(struct ef_fd));
            p = expect;
        }
    }
    return &p[(unsigned)fd & (PAGE_ENTRIES - 1)];
}

void ef_fd_foreach(unsigned lo, unsigned hi, void (*fn)(int, struct ef_fd *, void *), void *arg)
{
    if (hi >= EF_FD_MAX)
        hi = EF_FD_MAX - 1;
    /* pages above the highest one ever mapped are empty: do not read their
     * 16,384 first-level pointers (a fresh fork child would fault them in) */
    unsigned top = atomic_load(&l1_top);
    if (!top)
        return;
    if (hi >= (top << PAGE_BITS))
        hi = (top << PAGE_BITS) - 1;
    for (unsigned i = lo >> PAGE_BITS; i <= (hi >> PAGE_BITS) && lo <= hi; i++) {
        struct ef_fd *p = atomic_load_explicit(&l1[i], memory_order_acquire);
        if (!p)
            continue;
        unsigned first = i << PAGE_BITS;
        for (unsigned j = 0; j < PAGE_ENTRIES; j++) {
            unsigned fd = first + j;
            if (fd < lo || fd > hi)
                continue;
            if (atomic_load_explicit(&p[j].flags, memory_order_relaxed))
                fn((int)fd, &p[j], arg);
        }
    }
}

size_t ef_fd_bytes(void)
{
    return atomic_load(&pages_mapped) * PAGE_ENTRIES * sizeof(struct ef_fd);
}
