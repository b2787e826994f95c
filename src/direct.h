/*
 * direct.h - the real call made in the wrapper itself, where libc's own
 * definition is nothing but that system call.
 *
 * A wrapper that does its bookkeeping after the real call returns through
 * libc's function, and on this kind of machine that return is where the cost
 * is: the kernel empties the return-address predictor and (PTI without PCID)
 * the TLB at each system call, so libc's `ret` back into the wrapper is
 * mispredicted and its text page is walked again, ~40 ns a call
 * (docs/EVIDENCE.md, costs: the return after a system call).  A program
 * calling libc directly pays one mispredicted return (libc's, to it); a
 * wrapper calling libc pays two.  Making the system call here leaves one.
 *
 * Only for calls whose glibc definition is one plain system call, no
 * cancellation point (a cancellation point is more than its system call in a
 * threaded process): epoll_ctl, eventfd (eventfd2), socket, socketpair, pipe2
 * and timerfd_create.  And only when the name resolved to libc's own
 * definition (real.c sets ef_real_in_libc's bit): another interposer loaded
 * after us keeps getting its call through ef_real.
 */
#ifndef EF_DIRECT_H
#define EF_DIRECT_H

#include <errno.h>
#include <stdint.h>

enum {
    EF_LIBC_EPOLL_CTL = 1u << 0,
    EF_LIBC_EVENTFD = 1u << 1,
    EF_LIBC_SOCKET = 1u << 2,
    EF_LIBC_SOCKETPAIR = 1u << 3,
    EF_LIBC_PIPE2 = 1u << 4,
    EF_LIBC_TIMERFD_CREATE = 1u << 5,
};
/* Which of those names resolved to libc's own definition (real.c). */
extern uint32_t ef_real_in_libc;

#if defined(__x86_64__)
/* The system call, with errno set and -1 returned on failure, as glibc's
 * INLINE_SYSCALL does; inlined, so no call and no return of its own. */
static inline __attribute__((always_inline)) long ef_direct4(long n, long a, long b, long c, long d)
{
    register long r10 __asm__("r10") = d;
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10)
                     : "rcx", "r11", "memory");
    if (__builtin_expect((unsigned long)r > -4096ul, 0)) {
        errno = (int)-r;
        return -1;
    }
    return r;
}
#define ef_direct_ok(bit) __builtin_expect((ef_real_in_libc & (bit)) != 0, 1)
#else
static inline long ef_direct4(long n, long a, long b, long c, long d)
{
    (void)n, (void)a, (void)b, (void)c, (void)d;
    return -1;
}
#define ef_direct_ok(bit) 0
#endif

#endif
