/*
 * errno_exact.c MODE - every wrapped call returns what libc returns, with the
 * same errno, and leaves errno alone when it succeeds.
 *
 * Each line printed is "CALL -> RET errno=NAME": before every call errno is
 * set to a sentinel (12345, printed as SENTINEL), so a successful call must
 * print errno=SENTINEL, and a failing one the errno libc gives.  Run bare and
 * under the shim, the output must be identical line by line (fd numbers
 * included: the shim must not take low fd numbers from the program).  Built
 * twice by the tests: plain (calls fcntl) and with -D_FILE_OFFSET_BITS=64
 * (calls fcntl64).
 *   plain    on a fresh instance
 *   forked   the same calls after a fork: a child holds every instance (it
 *            blocks reading a pipe until the end, and never touches epoll), so
 *            the parent's epoll_ctl calls are recorded by the shim; silent
 * Also probed: fds 900..1023 (where the shim keeps its own fds) must look
 * closed to fcntl/dup/close, exactly as without the shim.
 */
#include "scen.h"
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#define SENTINEL 12345
/* volatile: the compiler must not see (and refuse) the bad pointer */
static int *volatile bad_fds = (int *)8;

static const char *ename(int e)
{
    if (e == SENTINEL)
        return "SENTINEL";
    const char *n = strerrorname_np(e);
    return n ? n : "?";
}

static long show(const char *what, long r)
{
    int e = errno;
    printf("%-58s -> %ld errno=%s\n", what, r, ename(e));
    return r;
}
/* errno is set before the call and read right after it, before printf */
#define T(expr) show(#expr, (errno = SENTINEL, (long)(expr)))

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "plain";
    int p[2], q[2], gate[2];
    CHECK(pipe(p) == 0 && pipe(q) == 0 && pipe(gate) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    int ep2 = epoll_create(4);
    CHECK(ep2 >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]}, out[4];
    pid_t c = -1;
    if (!strcmp(mode, "forked")) {
        add_fd(ep, q[0], EPOLLIN); /* registered before the fork */
        c = fork();
        CHECK(c >= 0);
        if (c == 0) {
            char b;
            close(gate[1]);
            while (read(gate[0], &b, 1) < 0 && errno == EINTR)
                ;
            _exit(0);
        }
    } else {
        add_fd(ep, q[0], EPOLLIN);
    }
    close(gate[0]);
    printf("fds p=%d,%d q=%d,%d ep=%d ep2=%d\n", p[0], p[1], q[0], q[1], ep, ep2);

    /* successes: errno untouched */
    T(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev));
    ev.events = EPOLLIN | EPOLLET;
    T(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev));
    T(epoll_wait(ep, out, 4, 0));
    T(epoll_pwait(ep, out, 4, 0, NULL));
    struct timespec zero = {0, 0};
    T(epoll_pwait2(ep, out, 4, &zero, NULL));
    T(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL));
    T(write(q[1], "x", 1));
    T(epoll_wait(ep, out, 4, 0));
    T(epoll_wait(ep, out, 4, 100));
    int d = (int)T(dup(ep));
    T(close(d));
    T(dup2(ep, 40));
    T(dup2(ep, ep));
    T(dup3(ep, 41, O_CLOEXEC));
    T(fcntl(ep, F_DUPFD, 50));
    T(fcntl(ep, F_DUPFD_CLOEXEC, 50));
    T(fcntl(51, F_GETFD));
    T(fcntl(50, F_SETFD, FD_CLOEXEC));
    T(fcntl(50, F_GETFD));
    T(fcntl(50, F_SETFD, 0));
    T(fcntl(p[0], F_GETFL) & O_ACCMODE);
    T(epoll_wait(40, out, 4, 0));
    T(epoll_ctl(41, EPOLL_CTL_ADD, p[0], &ev));
    T(close(40));
    T(close(41));
    T(close_range(50, 51, CLOSE_RANGE_CLOEXEC));
    T(fcntl(50, F_GETFD));
    T(close_range(50, 60, 0));
    int e1 = (int)T(epoll_create1(EPOLL_CLOEXEC));
    int e2 = (int)T(epoll_create(1));
    T(epoll_ctl(e1, EPOLL_CTL_ADD, e2, &ev));
    T(close(e2));
    T(close(e1));
    T(dup2(p[0], 70));
    T(dup2(q[0], 71));
    T(close_range(70, 71, 0));
    T(dup2(p[0], 72));
    T(dup2(ep, 73));
    errno = SENTINEL;
    closefrom(72);
    printf("%-58s -> void errno=%s\n", "closefrom(72)", ename(errno));
    T(fcntl(73, F_GETFD));

    /* the fd makers whose system call a wrapper makes itself (direct.h) */
    int sv[2], pp[2];
    T(close((int)T(eventfd(0, EFD_CLOEXEC))));
    T(close((int)T(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0))));
    T(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
    T(close(sv[0]) + close(sv[1]));
    T(pipe2(pp, O_CLOEXEC));
    T(close(pp[0]) + close(pp[1]));
    T(close((int)T(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC))));

    /* failures: the same return value and errno as libc */
    T(eventfd(0, 12345));
    T(socket(12345, SOCK_STREAM, 0));
    T(socket(AF_UNIX, 12345, 0));
    T(socketpair(AF_INET, SOCK_STREAM, 0, sv));
    T(socketpair(AF_UNIX, SOCK_STREAM, 0, bad_fds));
    T(pipe2(bad_fds, 0));
    T(pipe2(pp, 12345));
    T(timerfd_create(12345, 0));
    T(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], (struct epoll_event *)bad_fds));
    T(close(-1));
    T(close(9999));
    T(close(70));
    T(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev)); /* still registered: EEXIST */
    T(epoll_ctl(ep, EPOLL_CTL_DEL, p[1], NULL));
    T(epoll_ctl(ep, EPOLL_CTL_MOD, p[1], &ev));
    T(epoll_ctl(9999, EPOLL_CTL_ADD, p[0], &ev));
    T(epoll_ctl(-1, EPOLL_CTL_ADD, p[0], &ev));
    T(epoll_ctl(ep, EPOLL_CTL_ADD, 9999, &ev));
    T(epoll_ctl(p[0], EPOLL_CTL_ADD, q[0], &ev));
    T(epoll_ctl(ep, EPOLL_CTL_ADD, ep, &ev));
    T(epoll_ctl(ep, 77, p[0], &ev));
    T(epoll_wait(p[0], out, 4, 0));
    T(epoll_wait(9999, out, 4, 0));
    T(epoll_wait(ep, out, 0, 0));
    T(epoll_pwait(p[0], out, 4, 0, NULL));
    T(epoll_pwait2(p[0], out, 4, &zero, NULL));
    T(dup(-1));
    T(dup(9999));
    T(dup2(-1, 20));
    T(dup2(9999, 20));
    T(dup2(9999, 9999));
    T(dup2(p[0], -1));
    T(dup3(p[0], p[0], 0));
    T(dup3(p[0], 20, 12345));
    T(dup3(9999, 20, 0));
    T(epoll_create(0));
    T(epoll_create(-1));
    T(epoll_create1(12345));
    T(fcntl(9999, F_GETFD));
    T(fcntl(-1, F_SETFD, FD_CLOEXEC));
    T(fcntl(9999, F_DUPFD, 0));
    T(fcntl(p[0], F_DUPFD, -1));
    T(fcntl(p[0], 99999));
    T(close_range(10, 5, 0));
    T(close_range(3, 5, 12345));

    /* where the shim keeps its own fds, the program sees closed numbers */
    int open_hi = 0, bad = 0;
    for (int fd = 900; fd < 1024; fd++) {
        errno = SENTINEL;
        if (fcntl(fd, F_GETFD) >= 0)
            open_hi++;
        else if (errno != EBADF)
            bad++;
        errno = SENTINEL;
        if (dup(fd) >= 0 || errno != EBADF)
            bad++;
        errno = SENTINEL;
        if (close(fd) == 0 || errno != EBADF)
            bad++;
    }
    printf("fds 900-1023: open=%d unexpected=%d\n", open_hi, bad);
    /* the lowest free numbers are still the program's */
    T(dup(0));
    T(epoll_create1(0));

    if (c > 0) {
        CHECK(close(gate[1]) == 0);
        int st = reap(c);
        printf("child exited %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    }
    return 0;
}
