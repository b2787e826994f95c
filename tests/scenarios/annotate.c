/*
 * annotate.c MODE - the public header's annotations, with or without the shim.
 *   allow     EPOLLFORK_ALLOW_SHARED(ep) before the fork, then a child DEL and
 *             a parent wait: the sharing is deliberate, so no report
 *   noallow   the same without the annotation: one report
 *   many N    N instances made at one call site, each one shared and changed
 *             at one call site: N identical reports (dedup prints one)
 * Prints "loaded=L allow=A reports=R" (from the weak API) at the end.
 */
#include "scen.h"
#include "epollfork.h"

static void child_delete(int ep, int fd)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
}

static int make_instance(int fd)
{
    int ep = epoll_create1(0);
    add_fd(ep, fd, EPOLLIN);
    return ep;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "allow";
    int n = !strcmp(mode, "many") && argc > 2 ? atoi(argv[2]) : 1;
    int p[2];
    CHECK(pipe(p) == 0);
    int eps[16];
    CHECK(n >= 1 && n <= 16);
    int allow = 0;
    for (int i = 0; i < n; i++) {
        eps[i] = make_instance(p[0]);
        if (!strcmp(mode, "allow"))
            allow = EPOLLFORK_ALLOW_SHARED(eps[i]);
    }
    pid_t c = fork();
    if (c == 0) {
        for (int i = 0; i < n; i++)
            child_delete(eps[i], p[0]);
        exit(0);
    }
    reap(c);
    struct epoll_event out;
    for (int i = 0; i < n; i++)
        CHECK(epoll_wait(eps[i], &out, 1, 0) >= 0);
    printf("loaded=%d allow=%d reports=%lu\n", EPOLLFORK_LOADED(), allow, EPOLLFORK_REPORT_COUNT());
    return 0;
}
