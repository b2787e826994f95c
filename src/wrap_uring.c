/*
 * wrap_uring.c - the exported names through which a program sets up, maps
 * and enters io_uring rings, and nothing else (the rules are in uring.c).
 *
 * libuv 1.45+ calls io_uring_setup and io_uring_enter through libc's
 * syscall() and maps the rings with mmap; liburing makes those syscalls with
 * raw syscall instructions inside the library (Debian's 2.3 imports neither
 * syscall nor mmap), but its exported functions reach one another through
 * the PLT, so its io_uring_queue_mmap, submit and wait functions are where
 * the shim sees its rings.  As in wrap.c: the real call always happens, with
 * the same result and errno, and errno is restored around every event.  A
 * program that never sets up a ring pays a compare in syscall(), mmap() and
 * munmap().
 */
#define _GNU_SOURCE
/* unistd.h declares syscall() variadic; ours takes the seven longs that
 * reach it in registers and one stack slot (x86-64), so its prototype is
 * renamed out of the way. */
#define syscall ef_libc_syscall_prototype_
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
#undef syscall

#include "rules.h"

#define EXPORT __attribute__((visibility("default")))
#define CALLER __builtin_return_address(0)
#define IORING_ENTER_GETEVENTS_ 1u  /* <linux/io_uring.h>'s IORING_ENTER_GETEVENTS */

/* Does this process know a ring?  Until it does, mmap and munmap pass. */
static inline int ef_uring_known(void)
{
    return atomic_load_explicit(&ef_uring_nrings, memory_order_relaxed) != 0;
}

static inline int active(void)
{
    ef_ensure_init();
    return EF_LIKELY(!ef_opt.disable);
}

/* This thread is inside a ring call we see: one that calls another (a
 * liburing function calling another through the PLT, a library's own
 * io_uring_enter calling syscall()) is seen once. */
static EF_TLS int in_ring_call;

/* Around one io_uring_enter: what it will submit before, what it did after. */
#define AROUND_ENTER(fd, to_submit, flags, reap, call, caller)                    \
    do {                                                                          \
        if (in_ring_call)                                                         \
            return (call);                                                        \
        in_ring_call++;                                                           \
        struct ef_uring_token t_;                                                 \
        int e_ = errno;                                                           \
        ef_uring_enter_begin((fd), (to_submit), (flags), (reap), -1, &t_);        \
        errno = e_;                                                               \
        long r_ = (call);                                                         \
        if (t_.slot >= 0) {                                                       \
            e_ = errno;                                                           \
            ef_uring_enter_end(&t_, r_, (caller));                                \
            errno = e_;                                                           \
        }                                                                         \
        in_ring_call--;                                                           \
        return r_;                                                                \
    } while (0)

__attribute__((noinline)) static long uring_syscall(long n, long a, long b, long c, long d,
                                                    long e, long f, void *caller)
{
    if (!active() || in_ring_call)
        return ef_real.syscall(n, a, b, c, d, e, f);
    if (n == SYS_io_uring_setup) {
        long r = ef_real.syscall(n, a, b, c, d, e, f);
        if (r >= 0) {
            int er = errno;
            ef_uring_on_setup((int)r, (const void *)b, EF_RING_SYSCALL, caller);
            errno = er;
        }
        return r;
    }
    AROUND_ENTER((int)a, (unsigned)b, (unsigned)d, (d & IORING_ENTER_GETEVENTS_) != 0,
                 ef_real.syscall(n, a, b, c, d, e, f), caller);
}

_Static_assert(SYS_io_uring_enter == SYS_io_uring_setup + 1, "one range of two numbers");

/* io_uring_setup and io_uring_enter (425, 426) go the slow way; any other
 * number is a compare and a tail call.  errno and the result are libc's. */
EXPORT long syscall(long n, long a, long b, long c, long d, long e, long f)
{
    if (EF_LIKELY((unsigned long)(n - SYS_io_uring_setup) > 1))
        return ef_real.syscall(n, a, b, c, d, e, f);
    return uring_syscall(n, a, b, c, d, e, f, CALLER);
}

typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);

__attribute__((noinline)) static void *mmap_slow(mmap_fn real, void *addr, size_t len, int prot,
                                                 int flags, int fd, off_t off)
{
    void *r = real(addr, len, prot, flags, fd, off);
    if (r != MAP_FAILED && active()) {
        int e = errno;
        ef_uring_on_mmap(r, len, fd, (long)off);
        errno = e;
    }
    return r;
}

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (EF_LIKELY(fd < 0) || EF_LIKELY(!ef_uring_known()))
        return ef_real.mmap(addr, len, prot, flags, fd, off);
    return mmap_slow(ef_real.mmap, addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    if (EF_LIKELY(fd < 0) || EF_LIKELY(!ef_uring_known()))
        return ef_real.mmap64(addr, len, prot, flags, fd, off);
    return mmap_slow(ef_real.mmap64, addr, len, prot, flags, fd, off);
}

__attribute__((noinline)) static int munmap_slow(void *addr, size_t len)
{
    if (active()) {
        int e = errno;
        ef_uring_on_munmap(addr, len);
        errno = e;
    }
    return ef_real.munmap(addr, len);
}

EXPORT int munmap(void *addr, size_t len)
{
    if (EF_LIKELY(!ef_uring_known()))
        return ef_real.munmap(addr, len);
    return munmap_slow(addr, len);
}

/* liburing (2.3 on Debian 12) makes its setup, mmap and enter syscalls with
 * raw syscall instructions inside the library, where no wrapper sees them;
 * but its exported functions call one another through the PLT.  So the
 * shim wraps those: io_uring_queue_mmap hands over a ring (fd, params, the
 * mappings in struct io_uring), and each submit or wait is an enter.  They
 * are looked up on first use (the program may never load liburing); one
 * that calls another is seen once (in_ring_call). */
/* liburing's struct io_uring (liburing.h, the same layout since 2.0: its
 * inline functions are ABI).  Only what io_uring_queue_mmap() wrote and the
 * tail liburing hands the kernel at its next submit are read. */
struct liburing_sq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *kdropped, *array;
    void *sqes;
    unsigned sqe_head, sqe_tail;
    size_t ring_sz;
    void *ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct liburing_cq {
    unsigned *khead, *ktail, *kring_mask, *kring_entries, *kflags, *koverflow;
    void *cqes;
    size_t ring_sz;
    void *ring_ptr;
    unsigned ring_mask, ring_entries, pad[2];
};
struct liburing_ring {
    struct liburing_sq sq;
    struct liburing_cq cq;
    unsigned flags;
    int ring_fd;
};
/* The offsets of liburing 2.x on x86-64; tests/test_uring.py checks them
 * against the installed liburing.h (uring/liburing-layout-is-the-shims). */
_Static_assert(offsetof(struct liburing_ring, sq.sqes) == 56, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, sq.sqe_tail) == 68, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, sq.ring_sz) == 72, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, sq.ring_ptr) == 80, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, cq.ring_sz) == 160, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, cq.ring_ptr) == 168, "liburing layout");
_Static_assert(offsetof(struct liburing_ring, ring_fd) == 196, "liburing layout");

static int ring_fd_of(const void *ring)
{
    return ((const struct liburing_ring *)ring)->ring_fd;
}

#define LIBURING(name, ...)                                                       \
    static int (*p_)(__VA_ARGS__);                                                \
    if (!p_)                                                                      \
        __atomic_store_n(&p_, (int (*)(__VA_ARGS__))dlsym(RTLD_NEXT, name),       \
                         __ATOMIC_RELEASE);                                       \
    if (!p_)                                                                      \
        return -ENOSYS

/* One liburing call that may submit (`submit`) and may take completions
 * (`reap`), on ring: seen as an enter unless it runs inside another. */
#define AROUND_LIBURING(ring, submit, reap, call)                                 \
    do {                                                                          \
        if (in_ring_call || !active())                                            \
            return (call);                                                        \
        in_ring_call++;                                                           \
        struct ef_uring_token t_;                                                 \
        int e_ = errno;                                                           \
        const volatile struct liburing_ring *lr_ = (ring);                        \
        ef_uring_enter_begin(lr_->ring_fd, (submit), 0, (reap), lr_->sq.sqe_tail, &t_); \
        errno = e_;                                                               \
        int r_ = (call);                                                          \
        if (t_.slot >= 0) {                                                       \
            e_ = errno;                                                           \
            ef_uring_enter_end(&t_, r_, CALLER);                                  \
            errno = e_;                                                           \
        }                                                                         \
        in_ring_call--;                                                           \
        return r_;                                                                \
    } while (0)

EXPORT int io_uring_setup(unsigned entries, void *p)
{
    LIBURING("io_uring_setup", unsigned, void *);
    if (in_ring_call)
        return p_(entries, p);
    in_ring_call++;
    int r = p_(entries, p);
    in_ring_call--;
    if (r >= 0 && active()) {
        int e = errno;
        ef_uring_on_setup(r, p, EF_RING_LIBURING_SETUP, CALLER);
        errno = e;
    }
    return r;
}

EXPORT int io_uring_enter(unsigned fd, unsigned to_submit, unsigned min, unsigned flags, void *sig)
{
    LIBURING("io_uring_enter", unsigned, unsigned, unsigned, unsigned, void *);
    if (!active())
        return p_(fd, to_submit, min, flags, sig);
    AROUND_ENTER((int)fd, to_submit, flags, (flags & IORING_ENTER_GETEVENTS_) != 0,
                 p_(fd, to_submit, min, flags, sig), CALLER);
}

EXPORT int io_uring_enter2(unsigned fd, unsigned to_submit, unsigned min, unsigned flags,
                           void *sig, size_t sz)
{
    LIBURING("io_uring_enter2", unsigned, unsigned, unsigned, unsigned, void *, size_t);
    if (!active())
        return p_(fd, to_submit, min, flags, sig, sz);
    AROUND_ENTER((int)fd, to_submit, flags, (flags & IORING_ENTER_GETEVENTS_) != 0,
                 p_(fd, to_submit, min, flags, sig, sz), CALLER);
}

EXPORT int io_uring_queue_mmap(int fd, void *p, void *ring)
{
    LIBURING("io_uring_queue_mmap", int, void *, void *);
    int r = p_(fd, p, ring);
    if (r == 0 && active()) {
        int e = errno;
        const struct liburing_ring *r_ = ring;
        ef_uring_on_liburing_mmap(fd, p, r_->sq.ring_ptr, r_->sq.ring_sz, r_->cq.ring_ptr,
                                  r_->cq.ring_sz, r_->sq.sqes, CALLER);
        errno = e;
    }
    return r;
}

EXPORT void io_uring_queue_exit(void *ring)
{
    static void (*q_)(void *);
    if (!q_)
        __atomic_store_n(&q_, (void (*)(void *))dlsym(RTLD_NEXT, "io_uring_queue_exit"),
                         __ATOMIC_RELEASE);
    if (active()) { /* liburing unmaps and closes with raw syscalls */
        int e = errno;
        ef_uring_on_close(ring_fd_of(ring));
        errno = e;
    }
    if (q_)
        q_(ring);
}

EXPORT int io_uring_submit(void *ring)
{
    LIBURING("io_uring_submit", void *);
    AROUND_LIBURING(ring, 1, 0, p_(ring));
}

EXPORT int io_uring_submit_and_wait(void *ring, unsigned wait_nr)
{
    LIBURING("io_uring_submit_and_wait", void *, unsigned);
    AROUND_LIBURING(ring, 1, 1, p_(ring, wait_nr));
}

EXPORT int io_uring_submit_and_wait_timeout(void *ring, void *cqe_ptr, unsigned wait_nr, void *ts,
                                            void *sigmask)
{
    LIBURING("io_uring_submit_and_wait_timeout", void *, void *, unsigned, void *, void *);
    AROUND_LIBURING(ring, 1, 1, p_(ring, cqe_ptr, wait_nr, ts, sigmask));
}

EXPORT int io_uring_submit_and_get_events(void *ring)
{
    LIBURING("io_uring_submit_and_get_events", void *);
    AROUND_LIBURING(ring, 1, 1, p_(ring));
}

EXPORT int __io_uring_get_cqe(void *ring, void *cqe_ptr, unsigned submit, unsigned wait_nr,
                              void *sigmask)
{
    LIBURING("__io_uring_get_cqe", void *, void *, unsigned, unsigned, void *);
    AROUND_LIBURING(ring, submit, 1, p_(ring, cqe_ptr, submit, wait_nr, sigmask));
}

EXPORT int io_uring_wait_cqes(void *ring, void *cqe_ptr, unsigned wait_nr, void *ts, void *sigmask)
{
    LIBURING("io_uring_wait_cqes", void *, void *, unsigned, void *, void *);
    AROUND_LIBURING(ring, 1, 1, p_(ring, cqe_ptr, wait_nr, ts, sigmask));
}

EXPORT int io_uring_wait_cqe_timeout(void *ring, void *cqe_ptr, void *ts)
{
    LIBURING("io_uring_wait_cqe_timeout", void *, void *, void *);
    AROUND_LIBURING(ring, 1, 1, p_(ring, cqe_ptr, ts));
}

EXPORT int io_uring_get_events(void *ring)
{
    LIBURING("io_uring_get_events", void *);
    AROUND_LIBURING(ring, 0, 1, p_(ring));
}
