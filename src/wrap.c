/*
 * wrap.c - the exported libc names, and nothing else.
 *
 * Each wrapper is thin and boring (tsan_interceptors_posix.cpp): make sure init
 * ran, make the real call, hand the facts to an ef_on_*() event (rules.h), and
 * give the program exactly what libc gave: the same return value, the same
 * errno, and errno untouched on success.  The wrappers are where errno is
 * saved and restored around every event; nothing below them does it.  No malloc, no stdio, no lock, no
 * getenv() on these paths.  Where the fd table must change before the kernel
 * can hand a number out again (close), the event runs before the real call.
 *
 * The shim's own fds (the log sink) are hidden here: the program never opened
 * them, so to the program they behave as closed numbers (EBADF), and a dup2 onto
 * one of them moves ours out of the way first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "direct.h"
#include "rules.h"

#define EXPORT __attribute__((visibility("default")))
#define CALLER __builtin_return_address(0)

static inline int active(void)
{
    ef_ensure_init();
    return EF_LIKELY(!ef_opt.disable);
}

static inline int ebadf(void)
{
    errno = EBADF;
    return -1;
}

/* ------------------------------------------------------------- epoll */

EXPORT EF_INIT_TEXT int epoll_create(int size)
{
    int r = ef_real.epoll_create(size);
    if (r >= 0 && active()) {
        int e = errno;
        ef_on_epoll_create(r, EF_CREATE_EPOLL_CREATE, 0, CALLER);
        errno = e;
    }
    return r;
}

EXPORT EF_INIT_TEXT int epoll_create1(int flags)
{
    int r = ef_real.epoll_create1(flags);
    if (r >= 0 && active()) {
        int e = errno;
        ef_on_epoll_create(r, EF_CREATE_EPOLL_CREATE1, flags, CALLER);
        errno = e;
    }
    return r;
}

/* The real epoll_ctl: the system call itself where libc's is just that
 * (direct.h), so that libc's return is not one more after the kernel's. */
static inline __attribute__((always_inline)) int real_epoll_ctl(int epfd, int op, int fd,
                                                                struct epoll_event *ev)
{
    if (ef_direct_ok(EF_LIBC_EPOLL_CTL))
        return (int)ef_direct4(SYS_epoll_ctl, epfd, op, fd, (long)ev);
    return ef_real.epoll_ctl(epfd, op, fd, ev);
}

/* ADD or DEL on a quiet instance: the real call, then the registration
 * bookkeeping, with the ADD's stack captured here.  Reached by a tail call, so
 * this frame replaces the wrapper's: one frame of ours to walk. */
EF_HOT_TEXT __attribute__((noinline)) static int ctl_quiet(int epfd, int op, int fd,
                                                           struct epoll_event *ev, void *caller)
{
    int r = real_epoll_ctl(epfd, op, fd, ev);
    if (r == 0) {
        int e = errno;
        void *raw[EF_RAW_FRAMES]; /* for libunwind's walk */
        struct ef_walk w = {0};   /* no frames (a DEL, or no walk here) */
        if (op == EPOLL_CTL_ADD)
            ef_capture_here(raw, ef_opt.stack_depth, &w);
        ef_on_ctl_quiet(epfd, op, fd, &w, caller);
        errno = e;
    }
    return r;
}

/* The full path: the use check before, the events after. */
__attribute__((noinline)) static int ctl_slow(int epfd, int op, int fd, struct epoll_event *ev,
                                              void *caller)
{
    if (!active())
        return real_epoll_ctl(epfd, op, fd, ev);
    int e = errno;
    ef_on_ctl_before(epfd, caller);
    errno = e;
    int r = real_epoll_ctl(epfd, op, fd, ev);
    if (r == 0) {
        ef_on_ctl(epfd, op, fd, ev, caller);
        errno = e;
    }
    return r;
}

/* Kept tiny (no frame of its own on the fast path): the work is in ctl_quiet
 * and ctl_slow, reached by tail calls. */
EXPORT EF_HOT_TEXT int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    if (ef_epoll_quiet(epfd)) {
        /* never crossed a fork: no use check, nothing to record */
        if (op == EPOLL_CTL_MOD)
            return real_epoll_ctl(epfd, op, fd, ev);
        return ctl_quiet(epfd, op, fd, ev, CALLER);
    }
    return ctl_slow(epfd, op, fd, ev, CALLER);
}

/* The three waits share one begin/end pair around their real call. */
static inline void wait_begin(int epfd, int blocking, struct ef_wait_token *t, void *caller)
{
    int e = errno;
    ef_on_wait_enter(epfd, blocking, t, caller);
    errno = e;
}

static inline int wait_end(int epfd, const struct ef_wait_token *t, int r)
{
    if (EF_UNLIKELY(t->slot != -1)) {
        int e = errno;
        ef_on_wait_exit(epfd, t, r);
        errno = e;
    }
    return r;
}

__attribute__((noinline)) static int wait_slow(int epfd, struct epoll_event *evs, int max,
                                               int timeout, void *caller)
{
    if (!active())
        return ef_real.epoll_wait(epfd, evs, max, timeout);
    struct ef_wait_token t;
    wait_begin(epfd, timeout != 0, &t, caller);
    return wait_end(epfd, &t, ef_real.epoll_wait(epfd, evs, max, timeout));
}

EXPORT EF_HOT_TEXT int epoll_wait(int epfd, struct epoll_event *evs, int max, int timeout)
{
    if (timeout == 0 && ef_epoll_quiet(epfd))
        return ef_real.epoll_wait(epfd, evs, max, timeout);
    return wait_slow(epfd, evs, max, timeout, CALLER);
}

__attribute__((noinline)) static int pwait_slow(int epfd, struct epoll_event *evs, int max,
                                                int timeout, const sigset_t *ss, void *caller)
{
    if (!active())
        return ef_real.epoll_pwait(epfd, evs, max, timeout, ss);
    struct ef_wait_token t;
    wait_begin(epfd, timeout != 0, &t, caller);
    return wait_end(epfd, &t, ef_real.epoll_pwait(epfd, evs, max, timeout, ss));
}

EXPORT int epoll_pwait(int epfd, struct epoll_event *evs, int max, int timeout,
                       const sigset_t *ss)
{
    if (timeout == 0 && ef_epoll_quiet(epfd))
        return ef_real.epoll_pwait(epfd, evs, max, timeout, ss);
    return pwait_slow(epfd, evs, max, timeout, ss, CALLER);
}

/* The timeout is the caller's memory, and the kernel has not looked at it yet:
 * it is never read here (a bad pointer must get EFAULT from the kernel, as
 * without the shim).  So any pwait2 counts as one that may block: the
 * difference is only when a conflict is said, never whether. */
EXPORT int epoll_pwait2(int epfd, struct epoll_event *evs, int max, const struct timespec *to,
                        const sigset_t *ss)
{
    if (!active())
        return ef_real.epoll_pwait2(epfd, evs, max, to, ss);
    struct ef_wait_token t;
    wait_begin(epfd, 1, &t, CALLER);
    return wait_end(epfd, &t, ef_real.epoll_pwait2(epfd, evs, max, to, ss));
}

/* Keep the original stderr before the program lets go of fd 2 (log.c). */
static inline void before_fd2_changes(int fd)
{
    if (EF_UNLIKELY(fd == 2) && active()) {
        int e = errno;
        ef_log_copy_stderr();
        errno = e;
    }
}

EXPORT EF_HOT_TEXT int close(int fd)
{
    before_fd2_changes(fd);
    if (EF_UNLIKELY(ef_fd_owned(fd))) {
        if (!ef_in_shim)
            return ebadf(); /* the program never opened it */
        ef_fd_own(fd, 0);   /* libunwind closing its own pipe */
    }
    struct ef_fd *d = ef_fd_peek(fd);
    if (d) {
        uint32_t f = atomic_load_explicit(&d->flags, memory_order_relaxed);
        if (EF_UNLIKELY(f)) {
            if (active()) {
                int e = errno;
                if (f & EF_FD_URING)
                    ef_uring_on_close(fd);
                ef_on_close(fd, CALLER);
                errno = e;
            }
        }
    }
    return ef_real.close(fd);
}

/* Close [lo, hi] except the shim's own fds, in as many calls as it takes. */
static int close_range_around_ef_fd_owned(unsigned lo, unsigned hi, int flags)
{
    int own[4];
    int n = ef_fd_owned_list(own, 4);
    for (int i = 1; i < n; i++) /* sort, n <= 3 */
        for (int j = i; j > 0 && own[j] < own[j - 1]; j--) {
            int t = own[j];
            own[j] = own[j - 1];
            own[j - 1] = t;
        }
    unsigned from = lo;
    for (int i = 0; i < n; i++) {
        unsigned o = (unsigned)own[i];
        if (o < from || o > hi)
            continue;
        if (o > from && ef_real.close_range(from, o - 1, flags) != 0)
            return -1;
        from = o + 1;
        if (from == 0)
            return 0;
    }
    if (from <= hi)
        return ef_real.close_range(from, hi, flags);
    return 0;
}

EXPORT int close_range(unsigned lo, unsigned hi, int flags)
{
    if (!active() || lo > hi)
        return ef_real.close_range(lo, hi, flags);
    if (lo <= 2 && hi >= 2 && !(flags & CLOSE_RANGE_CLOEXEC))
        before_fd2_changes(2);
    int e = errno;
    ef_on_close_range(lo, hi, flags, CALLER);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_uring_nrings, memory_order_relaxed)) &&
        !(flags & CLOSE_RANGE_CLOEXEC))
        ef_uring_on_close_range(lo, hi);
    errno = e;
    if (flags & CLOSE_RANGE_CLOEXEC)
        return ef_real.close_range(lo, hi, flags); /* ours are close-on-exec anyway */
    return close_range_around_ef_fd_owned(lo, hi, flags);
}

EXPORT void closefrom(int lo)
{
    if (!active() || lo < 0) {
        ef_real.closefrom(lo);
        return;
    }
    int e = errno;
    if (lo <= 2)
        before_fd2_changes(2);
    ef_on_close_range((unsigned)lo, ~0u, 0, CALLER);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_uring_nrings, memory_order_relaxed)))
        ef_uring_on_close_range((unsigned)lo, ~0u);
    int own[4];
    int n = ef_fd_owned_list(own, 4), top = -1;
    for (int i = 0; i < n; i++)
        if (own[i] >= lo && own[i] > top)
            top = own[i];
    if (top < 0) {
        errno = e;
        ef_real.closefrom(lo);
        return;
    }
    if (close_range_around_ef_fd_owned((unsigned)lo, (unsigned)top, 0) != 0) {
        /* No close_range (old kernel): close the gap one by one. */
        for (int fd = lo; fd < top; fd++)
            if (!ef_fd_owned(fd))
                ef_real.close(fd);
    }
    ef_real.closefrom(top + 1);
    errno = e;
}

/* -------------------------------------------------------------- dups */

/* The program wants number fd2, which is one of ours: move ours away first.
 * A sink moves (log.c), and so does the registry's memfd (registry.c);
 * libunwind's pipe is let go, and libunwind with it (it would read and write
 * the program's fd from then on). */
static void make_room(int fd2)
{
    int e = errno;
    if (ef_log_relocate(fd2) != 0 && ef_reg_relocate(fd2) != 0) {
        ef_fd_own(fd2, 0);
        ef_stack_disable(fd2);
    }
    errno = e;
}

EXPORT int dup(int fd)
{
    if (EF_UNLIKELY(ef_fd_owned(fd)))
        return ebadf();
    int r = ef_real.dup(fd);
    if (r >= 0 && active()) {
        int e = errno;
        ef_on_dup(fd, r, CALLER);
        errno = e;
    }
    return r;
}

/* dup2/dup3 onto an io_uring fd closes that ring's fd. */
static inline void before_replace(int fd2)
{
    struct ef_fd *d = ef_fd_peek(fd2);
    if (EF_UNLIKELY(d && (atomic_load_explicit(&d->flags, memory_order_relaxed) & EF_FD_URING)) &&
        active()) {
        int e = errno;
        ef_uring_on_close(fd2);
        errno = e;
    }
}

EXPORT int dup2(int fd, int fd2)
{
    if (EF_UNLIKELY(ef_fd_owned(fd)))
        return ebadf();
    if (fd != fd2) {
        before_fd2_changes(fd2);
        before_replace(fd2);
    }
    if (EF_UNLIKELY(fd != fd2 && ef_fd_owned(fd2)))
        make_room(fd2);
    int r = ef_real.dup2(fd, fd2);
    if (r >= 0 && fd != fd2 && active()) {
        int e = errno;
        ef_on_dup(fd, fd2, CALLER);
        errno = e;
    }
    return r;
}

EXPORT int dup3(int fd, int fd2, int flags)
{
    if (EF_UNLIKELY(ef_fd_owned(fd)))
        return ebadf();
    if (fd != fd2) {
        before_fd2_changes(fd2);
        before_replace(fd2);
    }
    if (EF_UNLIKELY(fd != fd2 && ef_fd_owned(fd2)))
        make_room(fd2);
    int r = ef_real.dup3(fd, fd2, flags);
    if (r >= 0 && active()) {
        int e = errno;
        ef_on_dup(fd, fd2, CALLER);
        errno = e;
    }
    return r;
}

static int do_fcntl(int (*real)(int, int, ...), int fd, int cmd, void *arg, void *caller)
{
    if (EF_UNLIKELY(ef_fd_owned(fd)))
        return ebadf();
    int r = real(fd, cmd, arg);
    if (r < 0 || !active())
        return r;
    if (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) {
        int e = errno;
        ef_on_dup(fd, r, caller);
        errno = e;
    }
    return r;
}

EXPORT int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return do_fcntl(ef_real.fcntl, fd, cmd, arg, CALLER);
}

EXPORT int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    return do_fcntl(ef_real.fcntl64, fd, cmd, arg, CALLER);
}

/* ------------------------------------------------------------- forks */

EXPORT EF_INIT_TEXT pid_t fork(void)
{
    if (!active())
        return ef_real.fork();
    ef_atfork_register(); /* a load and a compare once it is */
    if (!ef_tracking() || !ef_fork_matters())
        return ef_real.fork(); /* the atfork handlers still see it */
    int e = errno;
    ef_fork_hand_over(ef_stack_capture(EF_SKIP_SHIM, CALLER), EF_FORK_FORK);
    if (errno != e)
        errno = e;
    pid_t p = ef_real.fork();
    if (p != 0) {
        /* Only shared pages are written here (and errno only if it changed):
         * a private page written after a fork costs a copy-on-write fault. */
        e = errno;
        ef_fork_take_back(); /* if the prepare handler did not take it */
        ef_on_fork_returned(p);
        if (errno != e)
            errno = e;
    }
    return p;
}

/* _Fork runs no atfork handlers: the child finds out through the wipe page
 * (hold.c) and takes the stack left here in its copy of this thread's TLS. */
EXPORT pid_t _Fork(void)
{
    if (!active() || !ef_tracking() || !ef_fork_matters())
        return ef_real._Fork();
    int e = errno;
    ef_tls_fork_stack = ef_stack_capture(EF_SKIP_SHIM, CALLER);
    ef_tls_fork_how = EF_FORK_UNDERSCORE;
    ef_stack_forking(); /* no handler runs for _Fork */
    errno = e;
    pid_t p = ef_real._Fork();
    if (p != 0)
        ef_tls_fork_stack = 0;
    return p;
}

/* --------------------------------------------- fds that are born here */
/* Only to know that an fd created after the last fork has no copy elsewhere
 * (stale.c); one table store, and nothing at all in a process that never
 * forked and never had the number in its table. */

static inline int born(int r)
{
    if (r >= 0 && EF_LIKELY(!ef_opt.disable) && ef_fd_born_matters(r)) {
        int e = errno;
        ef_on_fd_born(r);
        errno = e;
    }
    return r;
}

EXPORT EF_HOT_TEXT int socket(int domain, int type, int proto)
{
    ef_ensure_init();
    if (ef_direct_ok(EF_LIBC_SOCKET))
        return born((int)ef_direct4(SYS_socket, domain, type, proto, 0));
    return born(ef_real.socket(domain, type, proto));
}

EXPORT EF_HOT_TEXT int accept(int fd, struct sockaddr *addr, socklen_t *len)
{
    ef_ensure_init();
    return born(ef_real.accept(fd, addr, len));
}

EXPORT EF_HOT_TEXT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags)
{
    ef_ensure_init();
    return born(ef_real.accept4(fd, addr, len, flags));
}

EXPORT EF_HOT_TEXT int eventfd(unsigned int count, int flags)
{
    ef_ensure_init();
    if (ef_direct_ok(EF_LIBC_EVENTFD))
        return born((int)ef_direct4(SYS_eventfd2, count, flags, 0, 0));
    return born(ef_real.eventfd(count, flags));
}

EXPORT EF_HOT_TEXT int timerfd_create(int clock, int flags)
{
    ef_ensure_init();
    if (ef_direct_ok(EF_LIBC_TIMERFD_CREATE))
        return born((int)ef_direct4(SYS_timerfd_create, clock, flags, 0, 0));
    return born(ef_real.timerfd_create(clock, flags));
}

EXPORT EF_HOT_TEXT int socketpair(int domain, int type, int proto, int sv[2])
{
    ef_ensure_init();
    int r = ef_direct_ok(EF_LIBC_SOCKETPAIR)
                ? (int)ef_direct4(SYS_socketpair, domain, type, proto, (long)sv)
                : ef_real.socketpair(domain, type, proto, sv);
    if (r == 0) {
        born(sv[0]);
        born(sv[1]);
    }
    return r;
}

/* A pipe made inside the shim (libunwind's memory-validation pipe, created on
 * its first use) must not take the program's lowest free numbers: move it up
 * among the shim's own fds. */
static void hide_pipe(int p[2])
{
    int e = errno;
    for (int i = 0; i < 2; i++) {
        int hi = ef_fd_take_high(p[i]);
        if (hi >= 0)
            p[i] = hi;
    }
    errno = e;
}

EXPORT EF_HOT_TEXT int pipe(int p[2])
{
    ef_ensure_init();
    int r = ef_real.pipe(p);
    if (r == 0 && EF_UNLIKELY(ef_in_shim)) {
        hide_pipe(p);
        return r;
    }
    if (r == 0) {
        born(p[0]);
        born(p[1]);
    }
    return r;
}

EXPORT EF_HOT_TEXT int pipe2(int p[2], int flags)
{
    ef_ensure_init();
    int r = ef_direct_ok(EF_LIBC_PIPE2) ? (int)ef_direct4(SYS_pipe2, (long)p, flags, 0, 0)
                                        : ef_real.pipe2(p, flags);
    if (r == 0) {
        if (EF_UNLIKELY(ef_in_shim)) {
            hide_pipe(p);
            return r;
        }
        born(p[0]);
        born(p[1]);
    }
    return r;
}

/* ------------------------------------------------------------- exec */
/* Judge epoll fds that would leak into the new program (execleak.c), then
 * exec.  If the exec fails, the process goes on as before. */

extern char **environ;

enum { X_EXECVE, X_EXECVPE, X_FEXECVE };

static int real_exec(int kind, const char *path, int fd, char *const argv[], char *const envp[])
{
    if (kind == X_FEXECVE)
        return ef_real.fexecve(fd, argv, envp);
    if (kind == X_EXECVPE)
        return ef_real.execvpe(path, argv, envp);
    return ef_real.execve(path, argv, envp);
}

static int do_exec(int kind, const char *path, int fd, char *const argv[], char *const envp[],
                   void *caller)
{
    if (!active())
        return real_exec(kind, path, fd, argv, envp);
    int e = errno;
    char fdpath[64];
    if (kind == X_FEXECVE) {
        ef_fmt(fdpath, sizeof fdpath, "/proc/self/fd/%d", fd);
        path = fdpath;
    }
    char *const *env = ef_exec_prepare(path, kind == X_EXECVPE, argv, envp, caller);
    errno = e;
    return real_exec(kind, kind == X_FEXECVE ? NULL : path, fd, argv, env ? env : envp);
}

EXPORT int execve(const char *path, char *const argv[], char *const envp[])
{
    return do_exec(X_EXECVE, path, -1, argv, envp, CALLER);
}

EXPORT int execv(const char *path, char *const argv[])
{
    return do_exec(X_EXECVE, path, -1, argv, environ, CALLER);
}

EXPORT int execvpe(const char *file, char *const argv[], char *const envp[])
{
    return do_exec(X_EXECVPE, file, -1, argv, envp, CALLER);
}

EXPORT int execvp(const char *file, char *const argv[])
{
    return do_exec(X_EXECVPE, file, -1, argv, environ, CALLER);
}

EXPORT int fexecve(int fd, char *const argv[], char *const envp[])
{
    return do_exec(X_FEXECVE, NULL, fd, argv, envp, CALLER);
}

/* The execl family is variadic: gather the arguments, then go through the
 * vector forms (glibc's own execl calls execve internally, not through us). */
#define GATHER(arg0, last)                                                    \
    size_t n_ = 1;                                                            \
    va_list ap_;                                                              \
    va_start(ap_, arg0);                                                      \
    while (va_arg(ap_, char *))                                               \
        n_++;                                                                 \
    va_end(ap_);                                                              \
    char *argv_[n_ + 1];                                                      \
    argv_[0] = (char *)(arg0);                                                \
    va_start(ap_, arg0);                                                      \
    for (size_t i_ = 1; i_ <= n_; i_++)                                       \
        argv_[i_] = va_arg(ap_, char *);                                      \
    last;                                                                     \
    va_end(ap_)

EXPORT int execl(const char *path, const char *arg, ...)
{
    GATHER(arg, (void)0);
    return do_exec(X_EXECVE, path, -1, argv_, environ, CALLER);
}

EXPORT int execlp(const char *file, const char *arg, ...)
{
    GATHER(arg, (void)0);
    return do_exec(X_EXECVPE, file, -1, argv_, environ, CALLER);
}

EXPORT int execle(const char *path, const char *arg, ...)
{
    char *const *envp_;
    GATHER(arg, envp_ = va_arg(ap_, char *const *));
    return do_exec(X_EXECVE, path, -1, argv_, envp_, CALLER);
}

/* ------------------------------------------------------------- dlclose */

/* Code may leave the address space: the unwind rules cfi.c kept for it must
 * not serve another object loaded at the same address. */
EXPORT int dlclose(void *handle)
{
    int r = ef_real.dlclose(handle);
    ef_cfi_code_unloaded();
    return r;
}
