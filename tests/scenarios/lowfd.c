/*
 * lowfd.c - which fd numbers a program gets, at whatever RLIMIT_NOFILE it
 * runs with: the shim's own fds (the stderr copy, libunwind's pipe) must never
 * take a number the program would have got without the shim.
 *
 * Usage: lowfd LIMIT; prints the numbers of the fds it makes, in order, after
 * using epoll enough for the shim to set itself up (a fork, a conflict, a
 * report), so that the test compares them with a bare run.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    struct rlimit rl = {atoi(argc > 1 ? argv[1] : "20"), atoi(argc > 1 ? argv[1] : "20")};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 2;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int p[2] = {-1, -1};
    if (pipe(p) != 0) /* EMFILE earlier under the shim, at a tiny limit */
        p[0] = p[1] = -1;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pid_t c = fork();
    if (c == 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    struct epoll_event out;
    epoll_wait(ep, &out, 1, 0); /* the report: the shim is all set up now */
    printf("epoll %d pipe %d %d", ep, p[0], p[1]);
    int q[2] = {-1, -1};
    if (pipe(q) != 0)
        q[0] = q[1] = -1;
    printf(" pipe %d %d", q[0], q[1]);
    int e = eventfd(0, 0); /* one at a time, in this order */
    int d = dup(0);
    int o = open("/dev/null", O_RDONLY);
    printf(" eventfd %d dup %d open %d\n", e, d, o);
    return 0;
}
