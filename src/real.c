/*
 * real.c - the one table of the real libc functions the shim wraps.
 *
 * Wrappers must always make the real call, even before the constructor ran (a
 * library constructor may call close() first) and even when resolution failed.
 * So every slot starts as a syscall-based fallback and dlsym(RTLD_NEXT) replaces
 * it once; a successful dlsym does not malloc in glibc 2.36 (docs/EVIDENCE.md).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ef.h"

/* The fallbacks' raw syscall (ef_sys6, below) already returns -1 and sets
 * errno on failure, as glibc's syscall() does, so there is nothing to decode:
 * turning a -1 into errno = 1 made every failing fallback report EPERM (a
 * library constructor's close(-1) before our constructor ran;
 * tests/scenarios/ctor_lib.c).  Kept as the one place the fallbacks return. */
static long fb_ret(long r)
{
    return r;
}

/* Raw syscalls: the shim's own calls never go through syscall(), which it
 * wraps (wrap.c), nor through a libc wrapper it interposes. */
#if defined(__x86_64__)
static long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#else
#error "epollfork's raw syscalls are written for x86-64 (as is vfork_x86_64.S)"
#endif

/* Syscalls that never touch errno (they may run between a real call and the
 * wrapper's return, or in an atfork child handler). */
static long raw0(long n) { return raw6(n, 0, 0, 0, 0, 0, 0); }
static long raw1(long n, long a) { return raw6(n, a, 0, 0, 0, 0, 0); }

long ef_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long r = raw6(n, a, b, c, d, e, f);
    if ((unsigned long)r > -4096ul) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* syscall(2)'s shape for the fallbacks below: sys(SYS_x, up to 5 arguments). */
static long sc(long n, long a, long b, long c, long d, long e)
{
    return ef_sys6(n, a, b, c, d, e, 0);
}
#define sys(...) sc_(__VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define sc_(n, a, b, c, d, e, ...)                                                          \
    sc((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e))

int ef_sys_close(int fd) { return raw1(SYS_close, fd) == 0 ? 0 : -1; }
pid_t ef_sys_getpid(void) { return (pid_t)raw0(SYS_getpid); }
pid_t ef_sys_getppid(void) { return (pid_t)raw0(SYS_getppid); }

static int fb_close(int fd) { return (int)fb_ret(sys(SYS_close, fd)); }
static int fb_close_range(unsigned a, unsigned b, int f)
{
    return (int)fb_ret(sys(SYS_close_range, a, b, f));
}
static void fb_closefrom(int lo) { (void)sys(SYS_close_range, (unsigned)lo, ~0u, 0); }
static int fb_dup(int fd) { return (int)fb_ret(sys(SYS_dup, fd)); }
static int fb_dup2(int a, int b)
{
    if (a == b)
        return (int)fb_ret(sys(SYS_fcntl, a, F_GETFD)) < 0 ? -1 : b;
    return (int)fb_ret(sys(SYS_dup3, a, b, 0));
}
static int fb_dup3(int a, int b, int f) { return (int)fb_ret(sys(SYS_dup3, a, b, f)); }
static int fb_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return (int)fb_ret(sys(SYS_fcntl, fd, cmd, arg));
}
static pid_t fb_fork(void) { return (pid_t)fb_ret(sys(SYS_clone, SIGCHLD, 0, 0, 0, 0)); }
static int fb_epoll_create(int n) { return n <= 0 ? (errno = EINVAL, -1) : (int)fb_ret(sys(SYS_epoll_create1, 0)); }
static int fb_epoll_create1(int f) { return (int)fb_ret(sys(SYS_epoll_create1, f)); }
static int fb_epoll_ctl(int e, int op, int fd, void *ev) { return (int)fb_ret(sys(SYS_epoll_ctl, e, op, fd, ev)); }
static int fb_epoll_wait(int e, void *ev, int n, int t) { return (int)fb_ret(sys(SYS_epoll_wait, e, ev, n, t)); }
static int fb_epoll_pwait(int e, void *ev, int n, int t, const void *s)
{
    return (int)fb_ret(sys(SYS_epoll_pwait, e, ev, n, t, s, 8));
}
static int fb_epoll_pwait2(int e, void *ev, int n, const void *t, const void *s)
{
    return (int)fb_ret(sys(SYS_epoll_pwait2, e, ev, n, t, s, 8));
}

static int fb_socket(int d, int t, int p) { return (int)fb_ret(sys(SYS_socket, d, t, p)); }
static int fb_socketpair(int d, int t, int p, int *sv)
{
    return (int)fb_ret(sys(SYS_socketpair, d, t, p, sv));
}
static int fb_accept(int fd, void *a, void *l) { return (int)fb_ret(sys(SYS_accept, fd, a, l)); }
static int fb_accept4(int fd, void *a, void *l, int f)
{
    return (int)fb_ret(sys(SYS_accept4, fd, a, l, f));
}
static int fb_pipe(int *p) { return (int)fb_ret(sys(SYS_pipe2, p, 0)); }
static int fb_pipe2(int *p, int f) { return (int)fb_ret(sys(SYS_pipe2, p, f)); }
static int fb_eventfd(unsigned c, int f) { return (int)fb_ret(sys(SYS_eventfd2, c, f)); }
static int fb_timerfd_create(int c, int f) { return (int)fb_ret(sys(SYS_timerfd_create, c, f)); }
static int fb_execve(const char *p, char *const *a, char *const *e)
{
    return (int)fb_ret(sys(SYS_execve, p, a, e));
}
static int fb_fexecve(int fd, char *const *a, char *const *e)
{
    return (int)fb_ret(sys(SYS_execveat, fd, "", a, e, AT_EMPTY_PATH));
}

static long fb_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    return ef_sys6(n, a, b, c, d, e, f);
}
static void *fb_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    return (void *)ef_sys6(SYS_mmap, (long)a, (long)len, prot, flags, fd, (long)off);
}
static int fb_munmap(void *a, size_t len) { return (int)fb_ret(sys(SYS_munmap, a, len)); }

/* Called by vfork_x86_64.S; a fork is a correct (slower) vfork until resolved. */
void *ef_vfork_fn = (void *)fb_fork;

struct ef_real ef_real = {
    .close = fb_close,
    .close_range = fb_close_range,
    .closefrom = fb_closefrom,
    .dup = fb_dup,
    .dup2 = fb_dup2,
    .dup3 = fb_dup3,
    .fcntl = fb_fcntl,
    .fcntl64 = fb_fcntl,
    .fork = fb_fork,
    ._Fork = fb_fork,
    .vfork = fb_fork, /* only used if dlsym fails: a fork is a correct, slower vfork */
    .epoll_create = fb_epoll_create,
    .epoll_create1 = fb_epoll_create1,
    .epoll_ctl = fb_epoll_ctl,
    .epoll_wait = fb_epoll_wait,
    .epoll_pwait = fb_epoll_pwait,
    .epoll_pwait2 = fb_epoll_pwait2,
    .socket = fb_socket,
    .socketpair = fb_socketpair,
    .accept = fb_accept,
    .accept4 = fb_accept4,
    .pipe = fb_pipe,
    .pipe2 = fb_pipe2,
    .eventfd = fb_eventfd,
    .timerfd_create = fb_timerfd_create,
    .execve = fb_execve,
    .execvpe = fb_execve, /* only if dlsym fails: no PATH search */
    .fexecve = fb_fexecve,
    .syscall = fb_syscall,
    .mmap = fb_mmap,
    .mmap64 = fb_mmap,
    .munmap = fb_munmap,
};

#define RESOLVE(name)                                                         \
    do {                                                                      \
        void *p_ = dlsym(RTLD_NEXT, #name);                                   \
        if (p_)                                                               \
            __atomic_store_n((void **)&ef_real.name, p_, __ATOMIC_RELEASE);   \
    } while (0)

void ef_real_resolve(void)
{
    int saved = errno;
    RESOLVE(close);
    RESOLVE(close_range);
    RESOLVE(closefrom);
    RESOLVE(dup);
    RESOLVE(dup2);
    RESOLVE(dup3);
    RESOLVE(fcntl);
    RESOLVE(fcntl64);
    RESOLVE(fork);
    RESOLVE(_Fork);
    RESOLVE(vfork);
    __atomic_store_n(&ef_vfork_fn, (void *)ef_real.vfork, __ATOMIC_RELEASE);
    RESOLVE(epoll_create);
    RESOLVE(epoll_create1);
    RESOLVE(epoll_ctl);
    RESOLVE(epoll_wait);
    RESOLVE(epoll_pwait);
    RESOLVE(epoll_pwait2);
    RESOLVE(socket);
    RESOLVE(socketpair);
    RESOLVE(accept);
    RESOLVE(accept4);
    RESOLVE(pipe);
    RESOLVE(pipe2);
    RESOLVE(eventfd);
    RESOLVE(timerfd_create);
    RESOLVE(execve);
    RESOLVE(execvpe);
    RESOLVE(fexecve);
    RESOLVE(syscall);
    RESOLVE(mmap);
    RESOLVE(mmap64);
    RESOLVE(munmap);
    errno = saved;
}
