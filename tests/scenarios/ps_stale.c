/*
 * ps_stale.c MODE - a registration that outlives its fd, paused for
 * epollfork-ps.
 *
 * The parent registers file A at number N in an epoll instance and forks; the
 * child keeps a copy of A (and, in some modes, of the instance); the parent
 * then closes N without EPOLL_CTL_DEL, so the entry stays (the kernel removes
 * it only with A's last reference).  The parent prints
 * `READY MODE parent=P child=C ep=E tfd=N` and blocks in epoll_wait; the
 * child blocks in read() and dies with its parent.  data is 0xa for A's entry
 * and 0xb for B's.
 *   stale         the child closed its copy of the instance: no holder has A
 *                 open, the entry is stale (and the child keeps A alive)
 *   stale-del     the same with a DEL before the close: no entry, silent
 *   reused        the child keeps the instance and A; the parent opens pipe B,
 *                 which takes number N: the parent's N is another file than
 *                 the registered one
 *   reused-readd  A and B are eventfds (one anonymous inode for both, so only
 *                 kcmp tells them apart) and the parent registers B at N too:
 *                 two entries numbered N; the parent's N is B, the child's is A
 *   reused-del    the child keeps the instance only; the parent DELs A, closes
 *                 it, and registers pipe B at N: nothing wrong, silent
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(99);
}

static void add(int ep, int fd, unsigned long data)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = data};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev))
        die("EPOLL_CTL_ADD");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "stale";
    int anon = !strcmp(mode, "reused-readd");
    int sync[2], idle[2], a[2];
    if (pipe(sync) || pipe(idle))
        die("pipe");
    if (anon) {
        a[0] = eventfd(0, 0);
        a[1] = -1;
    } else if (pipe(a)) {
        die("pipe");
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    add(ep, a[0], 0xa);
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!strcmp(mode, "stale") || !strcmp(mode, "stale-del"))
            close(ep);
        if (!strcmp(mode, "reused-del"))
            close(a[0]);
        if (write(sync[1], "x", 1) != 1)
            die("write");
        char b;
        for (;;)
            if (read(idle[0], &b, 1) <= 0)
                _exit(0);
    }
    char b;
    if (read(sync[0], &b, 1) != 1)
        die("sync");
    int n = a[0];
    if (!strcmp(mode, "stale-del") || !strcmp(mode, "reused-del"))
        if (epoll_ctl(ep, EPOLL_CTL_DEL, n, NULL))
            die("EPOLL_CTL_DEL");
    close(n); /* no DEL (except the -del modes): the entry outlives the fd */
    if (!strncmp(mode, "reused", 6)) {
        int bfd = anon ? eventfd(0, 0) : -1, bp[2];
        if (!anon) {
            if (pipe(bp))
                die("pipe");
            bfd = bp[0];
        }
        if (bfd != n) {
            fprintf(stderr, "B got fd %d, not %d\n", bfd, n);
            exit(98);
        }
        if (strcmp(mode, "reused"))
            add(ep, bfd, 0xb);
    }
    printf("READY %s parent=%d child=%d ep=%d tfd=%d\n", mode, (int)getpid(), (int)c, ep, n);
    fflush(stdout);
    struct epoll_event out;
    for (;;)
        if (epoll_wait(ep, &out, 1, -1) < 0)
            die("epoll_wait");
}
