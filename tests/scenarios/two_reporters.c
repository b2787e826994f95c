/*
 * two_reporters.c - two conflicts, each reported by a different process, for
 * the per-process log files (EPOLLFORK_LOG=.../log.%p).
 *   instance A: the child deletes from A; the parent then waits on A
 *               -> reported by the parent
 *   instance B: the parent modifies B; the child then waits on B
 *               -> reported by the child
 * The two processes take turns through two pipes, no sleeps.  Prints
 * "parent=PID child=PID".
 */
#include "scen.h"

int main(void)
{
    int pa[2], pb[2], to_child[2], to_parent[2];
    CHECK(pipe(pa) == 0 && pipe(pb) == 0 && pipe(to_child) == 0 && pipe(to_parent) == 0);
    int A = epoll_create1(0), B = epoll_create1(0);
    CHECK(A >= 0 && B >= 0);
    add_fd(A, pa[0], EPOLLIN);
    add_fd(B, pb[0], EPOLLIN);
    struct epoll_event out;
    char x;
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        CHECK(epoll_ctl(A, EPOLL_CTL_DEL, pa[0], NULL) == 0);
        CHECK(write(to_parent[1], "1", 1) == 1);
        CHECK(read(to_child[0], &x, 1) == 1); /* the parent has changed B */
        CHECK(epoll_wait(B, &out, 1, 0) >= 0);
        exit(0);
    }
    printf("parent=%d child=%d\n", (int)getpid(), (int)c);
    fflush(stdout);
    CHECK(read(to_parent[0], &x, 1) == 1);
    CHECK(epoll_wait(A, &out, 1, 0) == 0);
    struct epoll_event ev = {.events = EPOLLOUT, .data.fd = pb[0]};
    CHECK(epoll_ctl(B, EPOLL_CTL_MOD, pb[0], &ev) == 0);
    CHECK(write(to_child[1], "2", 1) == 1);
    CHECK(WIFEXITED(reap(c)));
    return 0;
}
