/*
 * workers.c N - the seed bug in N worker processes at once.
 *
 * A pre-fork server: the parent forks N workers; each builds its own event
 * loop (an epoll instance with a pipe registered) and forks a helper that, as
 * a careless helper would, "cleans up" the inherited loop with EPOLL_CTL_DEL
 * from one call site (helper_cleanup) and exits; the worker then waits on
 * its list, which has lost the pipe.  So one run gives N conflicts from the
 * same site, each reported by a different worker: the log tools' tests check
 * that the summarizer folds them into one row with N distinct pids.
 * Workers end with exit(), so each writes its TOTALS line.
 * Prints "worker I: events=0" per worker; exits 0.
 */
#include "scen.h"

static void helper_cleanup(int ep, int fd)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
}

static void worker(int i)
{
    int p[2];
    CHECK(make_pipe(p) == 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        helper_cleanup(ep, p[0]);
        _exit(0);
    }
    reap(c);
    CHECK(write(p[1], "x", 1) == 1);
    struct epoll_event out;
    printf("worker %d: events=%d\n", i, epoll_wait(ep, &out, 1, 0));
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 4;
    CHECK(n > 0 && n <= 512);
    pid_t kids[512];
    for (int i = 0; i < n; i++) {
        kids[i] = fork();
        CHECK(kids[i] >= 0);
        if (kids[i] == 0) {
            worker(i);
            exit(0);
        }
    }
    for (int i = 0; i < n; i++)
        reap(kids[i]);
    return 0;
}
