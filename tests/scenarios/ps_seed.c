/*
 * ps_seed.c MODE - the seed's fork, paused where epollfork-ps can look at it.
 *
 * The parent registers a pipe in an epoll instance (EPOLL_CLOEXEC) and forks;
 * both then stay put until they are killed, so that a test can run
 * epollfork-ps against a known state.  The parent prints one line,
 * `READY MODE parent=P child=C ep=E fd=F`, once the state is reached, and then
 * blocks in epoll_wait(ep, -1).  The child dies with its parent
 * (PR_SET_PDEATHSIG).
 *   fork   the child blocks in read() on a pipe nobody writes: one instance,
 *          two holders, the parent waiting
 *   del    the child first deletes the pipe from the shared list (the seed's
 *          bug): the entry is gone for both
 *   both   the child also blocks in epoll_wait on the shared instance: two
 *          processes wait on one list
 *   own    the child closes the inherited instance, makes its own with the
 *          same pipe in it and waits on that: two instances, nothing shared
 *   leave  the child closes its copy of the instance after 500 ms: the
 *          instance stops being shared while --watch looks
 *   churn  the child edits the shared list while the parent waits on it, in
 *          a loop of 100 ms steps: ADD a second pipe, wait on the instance
 *          (100 ms timeout), DEL it, sleep (for --watch: entries appear and
 *          vanish, and the child is seen waiting only now and then)
 * ps_seed MODE FIFO [NAME]: the registered file is the FIFO at path FIFO
 * (opened O_RDWR, so that the open does not block) instead of a pipe, and the
 * command name becomes NAME: names with any bytes in them, for the output.
 * Built static as well (tests/test_ps.py): a program the shim never sees.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(99);
}

static void wait_forever(int ep)
{
    struct epoll_event out;
    for (;;)
        if (epoll_wait(ep, &out, 1, -1) < 0)
            die("epoll_wait");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "fork";
    int p[2], sync[2], idle[2];
    if (pipe(p) || pipe(sync) || pipe(idle))
        die("pipe");
    if (argc > 2) { /* the FIFO takes the pipe's place (and number) */
        close(p[0]);
        if (open(argv[2], O_RDWR | O_NONBLOCK) != p[0])
            die("open FIFO");
    }
    if (argc > 3 && prctl(PR_SET_NAME, argv[3]))
        die("PR_SET_NAME");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
        die("epoll");
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (!strcmp(mode, "del") && epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL))
            die("DEL");
        if (!strcmp(mode, "own")) {
            close(ep);
            ep = epoll_create1(EPOLL_CLOEXEC);
            if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
                die("own epoll");
        }
        if (write(sync[1], "x", 1) != 1)
            die("write");
        if (!strcmp(mode, "both") || !strcmp(mode, "own"))
            wait_forever(ep);
        if (!strcmp(mode, "leave")) {
            usleep(500000);
            close(ep);
        }
        if (!strcmp(mode, "churn")) {
            struct epoll_event ev2 = {.events = EPOLLIN | EPOLLET, .data.u64 = 0xc0ffee}, out;
            for (;;) {
                if (epoll_ctl(ep, EPOLL_CTL_ADD, idle[0], &ev2))
                    die("churn ADD");
                usleep(100000);
                if (epoll_wait(ep, &out, 1, 100) < 0)
                    die("churn wait");
                if (epoll_ctl(ep, EPOLL_CTL_DEL, idle[0], NULL))
                    die("churn DEL");
                usleep(100000);
            }
        }
        char b;
        for (;;)
            if (read(idle[0], &b, 1) <= 0)
                _exit(0);
    }
    char b;
    if (read(sync[0], &b, 1) != 1)
        die("sync");
    printf("READY %s parent=%d child=%d ep=%d fd=%d\n", mode, (int)getpid(), (int)c, ep, p[0]);
    fflush(stdout);
    wait_forever(ep);
}
