/*
 * fork_faults.c MODE - the parent's page faults per fork in a fork loop.
 *
 * A private page the parent writes after a fork is a copy-on-write fault at
 * the next fork (~30 us on the test VM: bench/RESULTS.md, fork), so the shim
 * writes none in a fork loop whose children exit at once (src/hold.c: the
 * fork's state on the wipe page, the last child's record and slots taken
 * again).  Prints the parent's minor faults per fork over 200 forks, after a
 * warm-up; the test compares it with the same run without the shim.
 *   epoll     the parent holds an epoll instance with a registration
 *   noepoll   the parent never uses epoll
 */
#include <sys/resource.h>

#include "scen.h"

static long minflt(void)
{
    struct rusage ru;
    CHECK(getrusage(RUSAGE_SELF, &ru) == 0);
    return ru.ru_minflt;
}

static void forks(int n)
{
    for (int i = 0; i < n; i++) {
        pid_t c = fork();
        CHECK(c >= 0);
        if (c == 0)
            _exit(0);
        reap(c);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "epoll";
    int p[2];
    CHECK(pipe(p) == 0);
    if (!strcmp(mode, "epoll")) {
        int ep = epoll_create1(EPOLL_CLOEXEC);
        CHECK(ep >= 0);
        add_fd(ep, p[0], EPOLLIN);
    }
    forks(20);
    long before = minflt();
    forks(200);
    printf("parent faults per fork: %.2f\n", (double)(minflt() - before) / 200);
    return 0;
}
