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
 *
 * The table also marks the shim's own fds (the log sink, libunwind's
 * validation pipe): they live at high numbers, close-on-exec, and the
 * wrappers hide them from the program (a close of one fails with EBADF, as it
 * would without the shim; a dup2 onto one moves ours away first).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>

#include "ef.h"

#define PAGE_BITS EF_FD_PAGE_BITS
#define PAGE_ENTRIES (1u << PAGE_BITS)
#define L1_ENTRIES (EF_FD_MAX >> PAGE_BITS)

/* The first page (fds 0-4095, all most programs ever use) and the first level
 * are parts of the zone (zone.c): no mapping of their own, because every
 * mapping a process has costs ~1.7 us at each fork (bench/RESULTS.md), and
 * untouched pages cost nothing. */
EF_HOT struct ef_fd *_Atomic ef_fd_p0;             /* fds 0-4095 */
EF_HOT struct ef_fd *_Atomic *_Atomic ef_fd_l1;    /* [L1_ENTRIES], in the zone */
EF_HOT struct ef_fd *_Atomic ef_fd_nil;            /* never set */
_Static_assert(PAGE_ENTRIES * sizeof(struct ef_fd) <= EF_Z_BYTES(FD_PAGE0), "page 0 fits");
_Static_assert(L1_ENTRIES * sizeof(struct ef_fd *) <= EF_Z_BYTES(FD_L1), "the level fits");
EF_HOT static _Atomic size_t pages_mapped;
EF_HOT static _Atomic unsigned l1_top;   /* 1 + the highest first-level index in use */

EF_HOT_TEXT struct ef_fd *ef_fd_get(int fd)
{
    if ((unsigned)fd >= EF_FD_MAX)
        return NULL;
    unsigned i = (unsigned)fd >> PAGE_BITS;
    if (i && !atomic_load_explicit(&ef_fd_l1, memory_order_acquire)) {
        struct ef_fd *_Atomic *l1 = ef_zone(EF_Z_FD_L1);
        if (!l1)
            return NULL;
        atomic_store_explicit(&ef_fd_l1, l1, memory_order_release);
    }
    struct ef_fd *p = atomic_load_explicit(ef_fd_l1_slot(i), memory_order_acquire);
    if (!p) {
        void *page0 = i == 0 ? ef_zone(EF_Z_FD_PAGE0) : NULL;
        if (i == 0 && !page0)
            return NULL;
        void *m = i == 0 ? page0
                         : ef_sys_mmap(NULL, PAGE_ENTRIES * sizeof(struct ef_fd),
                                        PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        struct ef_fd *expect = NULL;
        if (atomic_compare_exchange_strong(ef_fd_l1_slot(i), &expect, (struct ef_fd *)m)) {
            p = m;
            atomic_fetch_add(&pages_mapped, 1);
            unsigned top = atomic_load(&l1_top);
            while (top < i + 1 && !atomic_compare_exchange_weak(&l1_top, &top, i + 1))
                ;
        } else {
            if (m != page0)
                ef_sys_munmap(m, PAGE_ENTRIES * sizeof(struct ef_fd));
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
        struct ef_fd *p = atomic_load_explicit(ef_fd_l1_slot(i), memory_order_acquire);
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

/* ------------------------------------------------------------ owned fds */

/* Every fd the shim owns, stored +1 (0 = free). */
/* Every fd the shim owns, stored +1 (0 = free), and the lowest of them: the
 * wrappers ask ef_fd_owned() (ef.h), a compare for any lower number.  Not
 * flags in the table: the shim's fds sit at the top of the numbers, and their
 * entries would be a page of the table of their own to fault in (at every
 * process's first epoll_create; bench/RESULTS.md). */
EF_HOT _Atomic int ef_owned_fds[EF_MAX_OWNED];
EF_HOT _Atomic int ef_owned_lo = EF_FD_MAX;

EF_INIT_TEXT void ef_fd_own(int fd, int on)
{
    int done = 0;
    for (int i = 0; i < EF_MAX_OWNED && !done; i++) {
        int cur = atomic_load(&ef_owned_fds[i]);
        if (on && cur == 0 && atomic_compare_exchange_strong(&ef_owned_fds[i], &cur, fd + 1))
            done = 1;
        if (!on && cur == fd + 1 && atomic_compare_exchange_strong(&ef_owned_fds[i], &cur, 0))
            done = 1;
    }
    int lo = EF_FD_MAX;
    for (int i = 0; i < EF_MAX_OWNED; i++) {
        int v = atomic_load(&ef_owned_fds[i]);
        if (v > 0 && v - 1 < lo)
            lo = v - 1;
    }
    atomic_store(&ef_owned_lo, lo);
}

int ef_fd_owned_list(int *out, int max)
{
    int n = 0;
    for (int i = 0; i < EF_MAX_OWNED && n < max; i++) {
        int v = atomic_load(&ef_owned_fds[i]);
        if (v > 0)
            out[n++] = v - 1;
    }
    return n;
}

/* The fd limit the shim's numbers live under: 1024 (so that they stay usable
 * by select()), or a lower RLIMIT_NOFILE. */
EF_INIT_TEXT static long fd_limit(void)
{
    long lim = ef_sys_nofile();
    return lim < 1024 ? lim : 1024;
}

/* Where the shim's own fds go: the top of the numbers the program may use.
 * The kernel hands out the lowest free number, so as long as ours sit above
 * everything the program has open, the program gets exactly the numbers it
 * gets without the shim (tests/test_hardening.py, at limits down to 20); it
 * only reaches EMFILE a few fds earlier.  The shim holds at most six (the
 * registry's memfd, the stderr copy, a log file, a syslog or journal socket,
 * libunwind's pipe). */
int ef_fd_high_base(void)
{
    long lim = fd_limit();
    long base = lim >= 64 ? lim - 48 : lim - 8;
    return base < 3 ? 3 : (int)base;
}

EF_INIT_TEXT int ef_fd_copy_high(int fd)
{
    long lim = fd_limit();
    int hi = -1;
    if (lim >= 64) {
        hi = ef_sys_dupfd(fd, (int)lim - 48);
    } else {
        /* Under a low limit, from the very top down: F_DUPFD(lim - k) takes
         * the lowest free number in [lim - k, lim), atomically, so ours never
         * fall between numbers the program holds.  No fallback to low numbers:
         * a number the program would have got is worth more than a sink. */
        for (long k = 1; k <= 8 && lim - k >= 3 && hi < 0; k++)
            hi = ef_sys_dupfd(fd, (int)(lim - k));
    }
    if (hi >= 0)
        ef_fd_own(hi, 1);
    return hi;
}

/* The program wants the number of one of our fds (dup2 onto it): a copy of
 * ours just above it, else anywhere.  A program that dup2s onto every number
 * up to its limit (1024 by default) pushes ours to the top, and then a low
 * number beats losing the fd (tests/scenarios/sink_fds.c dup2-high).  The old
 * number is no longer ours; the caller closes it.  New fd, or -1. */
int ef_fd_copy_away(int fd)
{
    ef_fd_own(fd, 0);
    int hi = ef_sys_dupfd(fd, fd + 1);
    if (hi < 0)
        hi = ef_sys_dupfd(fd, ef_fd_high_base() / 2);
    if (hi < 0)
        hi = ef_sys_dupfd(fd, 3);
    if (hi >= 0)
        ef_fd_own(hi, 1);
    return hi;
}

EF_INIT_TEXT int ef_fd_take_high(int fd)
{
    int hi = ef_fd_copy_high(fd);
    if (hi >= 0)
        ef_sys_close(fd);
    return hi;
}
