/*
 * fdtable.c - fd number -> what the shim knows about it, for any fd number.
 *
 * A two-level table like tsan_fd.cpp's: a first level of 16,384 page pointers
 * in .bss (untouched pages cost no memory) and second-level pages of 4,096
 * 16-byte entries mapped on first use, so fd 70,000 costs one 64 KiB page, not
 * a 1 MiB array.  Lookups are two loads and no lock; pages are installed with a
 * compare-and-swap and never freed.  The table is process-private: fork copies
 * it, which is exactly the kernel's fd table semantics.
 */
#define _GNU_SOURCE
#include <sys/mman.h>

#include "ef.h"

#define PAGE_BITS 12
#define PAGE_ENTRIES (1u << PAGE_BITS)
#define L1_ENTRIES (EF_FD_MAX >> PAGE_BITS)

static struct ef_fd *_Atomic l1[L1_ENTRIES];
static _Atomic size_t pages_mapped;

struct ef_fd *ef_fd_peek(int fd)
{
    if (EF_UNLIKELY((unsigned)fd >= EF_FD_MAX))
        return NULL;
    struct ef_fd *p = atomic_load_explicit(&l1[(unsigned)fd >> PAGE_BITS], memory_order_acquire);
    return p ? &p[(unsigned)fd & (PAGE_ENTRIES - 1)] : NULL;
}

struct ef_fd *ef_fd_get(int fd)
{
    if ((unsigned)fd >= EF_FD_MAX)
        return NULL;
    unsigned i = (unsigned)fd >> PAGE_BITS;
    struct ef_fd *p = atomic_load_explicit(&l1[i], memory_order_acquire);
    if (!p) {
        void *m = mmap(NULL, PAGE_ENTRIES * sizeof(struct ef_fd), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        struct ef_fd *expect = NULL;
        if (atomic_compare_exchange_strong(&l1[i], &expect, (struct ef_fd *)m)) {
            p = m;
            atomic_fetch_add(&pages_mapped, 1);
        } else {
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
