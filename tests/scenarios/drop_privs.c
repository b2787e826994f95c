/*
 * drop_privs.c - a forked child drops its privileges (setgid/setuid to
 * nobody) and then makes a conflict that it must report itself: it deletes
 * the parent's pipe from the shared list while the parent is blocked in
 * epoll_wait on it (reported at once by the modifier, use blocked-in-wait).
 * Run as root with EPOLLFORK_LOG=DIR/log.%p where DIR is root's 0700 temp
 * dir: the child cannot create its own log file, so the report must come out
 * on the stderr copy, after one line saying why.  The child then wakes the
 * parent through a second registered pipe.  Prints "child=PID" and
 * "parent woke with N events" (N = 1: the wake-up pipe).
 */
#include "scen.h"
#include <grp.h>

int main(void)
{
    int p[2], wake[2];
    CHECK(pipe(p) == 0 && pipe(wake) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    add_fd(ep, wake[0], EPOLLIN);
    CHECK(getuid() == 0);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        CHECK(wait_blocked_in_epoll(getppid()));
        CHECK(setgroups(0, NULL) == 0);
        CHECK(setgid(65534) == 0 && setuid(65534) == 0);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
        CHECK(write(wake[1], "w", 1) == 1);
        exit(0);
    }
    printf("child=%d\n", (int)c);
    fflush(stdout);
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 10000);
    printf("parent woke with %d events\n", n);
    CHECK(WIFEXITED(reap(c)));
    return 0;
}
