/*
 * highfd.c - an epoll fd and a registered fd at numbers in the tens of
 * thousands (as far as RLIMIT_NOFILE allows); the child deletes, the parent
 * waits.  Prints the two numbers used.
 */
#include "scen.h"
#include <sys/resource.h>

int main(void)
{
    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    rlim_t want = 100000;
    struct rlimit up = {want, want};
    if (setrlimit(RLIMIT_NOFILE, &up) != 0) {
        up.rlim_cur = up.rlim_max = rl.rlim_max;
        CHECK(setrlimit(RLIMIT_NOFILE, &up) == 0);
    }
    int top = (int)(up.rlim_cur > 100000 ? 100000 : up.rlim_cur) - 10;
    int p[2];
    CHECK(pipe(p) == 0);
    int e = epoll_create1(0);
    int ep = dup2(e, top);
    CHECK(ep == top);
    close(e);
    int rfd = dup2(p[0], top - 5000);
    CHECK(rfd == top - 5000);
    add_fd(ep, rfd, EPOLLIN);
    printf("epfd=%d fd=%d\n", ep, rfd);
    fflush(stdout);
    pid_t c = fork();
    if (c == 0) {
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, rfd, NULL) == 0);
        exit(0);
    }
    reap(c);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    return 0;
}
