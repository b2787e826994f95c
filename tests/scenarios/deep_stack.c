/*
 * deep_stack.c DEPTH - the conflict of ctl_child.c 'del', with the child's
 * EPOLL_CTL_DEL made DEPTH calls deep (recurse() calls itself), so that the
 * reported call stack is longer than any EPOLLFORK_STACK_DEPTH under test and
 * its length is exactly the configured depth (24 by default).
 * Prints "deep DEPTH" and "parent waited" (the same with or without the shim).
 * Expected: one report (DEL, use epoll_wait, reporter the parent).
 */
#include "scen.h"

static int p[2], ep;

static int recurse(int n)
{
    if (n > 0)
        return recurse(n - 1) + 1; /* not a tail call: one frame per level */
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
    return 0;
}

int main(int argc, char **argv)
{
    int depth = argc > 1 ? atoi(argv[1]) : 40;
    printf("deep %d\n", depth);
    fflush(stdout);
    CHECK(pipe(p) == 0);
    ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        CHECK(recurse(depth) == depth);
        exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0);
    printf("parent waited\n");
    return 0;
}
