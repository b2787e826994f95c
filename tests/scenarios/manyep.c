/*
 * manyep.c - more live epoll instances than the registry tracks (16,383):
 * past the limit every epoll_create1 must still cost a bounded amount (a full
 * rescan of the table, with a kill() per holder, took ~20 ms each).
 *
 * Usage: manyep N; keeps N instances open, then times 200 more.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 17000;
    struct rlimit rl = {(rlim_t)n + 400, (rlim_t)n + 400};
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 2;
    for (int i = 0; i < n; i++)
        if (epoll_create1(0) < 0)
            return 3;
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 200; i++) {
        int e = epoll_create1(0);
        struct epoll_event ev = {.events = EPOLLIN};
        epoll_ctl(e, EPOLL_CTL_ADD, 0, &ev);
        close(e);
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("past the limit: 200 epoll_create1 in %.3f s\n",
           (b.tv_sec - a.tv_sec) + (b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
