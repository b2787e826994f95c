/*
 * ps_load.c NPROCS FDS - a host-sized load for epollfork-ps to read.
 *
 * epollfork-ps must read a busy host fast (the budget: 1,000 processes
 * with 100,000 fds in all in under 2 s).  This makes NPROCS processes with
 * about FDS open fds each (pipes, socketpairs, eventfds, /dev/null), each with
 * an epoll instance holding a quarter of its pollable fds; every tenth process
 * is a fork of the one before it and shares that one's instance and fds, the
 * way a pre-fork worker does.  Every process that made its instance blocks in
 * epoll_wait on it, the forked ones in pause().  Nothing is ever wrong in
 * them: a correct epollfork-ps reports no finding.
 *
 * The leader prints `READY procs=N fds=F instances=I shared=S entries=E` when
 * all are set up, then waits until its stdin closes or it is killed; everyone
 * else dies with their parent (PR_SET_PDEATHSIG).  Used by bench/bench.py
 * ("ps" rows) and tests/test_ps.py (ps/scale-*).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    _exit(99);
}

/* Open about n fds in this process and register every fourth pollable one
 * in ep; returns the number of entries. */
static int fill(int ep, int n, int have)
{
    int entries = 0, k = 0;
    while (have < n) {
        int fds[2] = {-1, -1}, pollable = 1;
        switch (k++ % 10) {
        case 0: case 1: case 2: case 3:
            if (pipe(fds))
                die("pipe");
            break;
        case 4: case 5: case 6:
            if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds))
                die("socketpair");
            break;
        case 7: case 8:
            fds[0] = eventfd(0, 0);
            break;
        default:
            fds[0] = open("/dev/null", O_RDONLY);
            pollable = 0; /* no poll method: epoll_ctl says EPERM */
            break;
        }
        if (fds[0] < 0)
            die("open");
        have += fds[1] >= 0 ? 2 : 1;
        if (pollable && k % 4 == 0) {
            struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[0]};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev))
                die("epoll_ctl");
            entries++;
        }
    }
    return entries;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: ps_load NPROCS FDS\n");
        return 2;
    }
    int nprocs = atoi(argv[1]), nfds = atoi(argv[2]);
    if (nprocs < 1 || nprocs > 5000 || nfds < 8 || nfds > 100000) {
        fprintf(stderr, "ps_load: NPROCS 1..5000, FDS 8..100000\n");
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)nfds + 16) {
        rl.rlim_cur = (rlim_t)nfds + 16 <= rl.rlim_max ? (rlim_t)nfds + 16 : rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    int ready[2];
    if (pipe(ready))
        die("pipe");
    int instances = 0, shared = 0, entries = 0, total = 0;
    for (int i = 0; i < nprocs; i++) {
        /* process i % 10 == 9 is the fork of process i - 1 */
        int share = i % 10 == 8 && i + 1 < nprocs;
        pid_t c = fork();
        if (c < 0)
            die("fork");
        if (c == 0) {
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            close(ready[0]);
            int ep = epoll_create1(EPOLL_CLOEXEC);
            if (ep < 0)
                die("epoll_create1");
            /* 0, 1, 2, ready[1], ep, and the fds fill() opens */
            int n = fill(ep, nfds, 5);
            if (write(ready[1], &n, sizeof n) != sizeof n)
                die("write");
            if (share) {
                pid_t g = fork();
                if (g < 0)
                    die("fork");
                if (g == 0) {
                    prctl(PR_SET_PDEATHSIG, SIGKILL);
                    n = -1; /* "a fork, no entries of its own" */
                    if (write(ready[1], &n, sizeof n) != sizeof n)
                        die("write");
                    for (;;)
                        pause();
                }
            }
            struct epoll_event out;
            for (;;)
                if (epoll_wait(ep, &out, 1, -1) < 0 && errno != EINTR)
                    die("epoll_wait");
        }
        instances++;
        if (share) {
            shared++;
            i++;
        }
    }
    close(ready[1]);
    for (int got = 0; got < nprocs;) {
        int n;
        ssize_t r = read(ready[0], &n, sizeof n);
        if (r != sizeof n)
            die("ready");
        got++;
        if (n >= 0)
            entries += n;
    }
    total = nprocs * nfds;
    printf("READY procs=%d fds=%d instances=%d shared=%d entries=%d leader=%d\n", nprocs, total,
           instances, shared, entries, (int)getpid());
    fflush(stdout);
    char b;
    while (read(0, &b, 1) > 0)
        ;
    return 0;
}
