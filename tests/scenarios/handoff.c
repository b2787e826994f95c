/*
 * handoff.c MODE - correct programs in which only one process uses the list
 * after the fork.  All must stay silent.
 *   exit      the creator forks and exits at once; the child runs the loop
 *   pipe      the creator blocks on a pipe until the child is done, then
 *             exits without touching epoll again (lighttpd's restart)
 *   daemon    daemon(1, 1) (a fork inside libc); the daemon runs the loop
 */
#include "scen.h"

static int p[2], q[2], ep;

static void run_loop(void)
{
    struct epoll_event out, ev = {.events = EPOLLIN, .data.fd = q[0]};
    for (int i = 0; i < 20; i++) {
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev) == 0);
        CHECK(epoll_wait(ep, &out, 1, 1) >= 0);
        ev.events = EPOLLIN | EPOLLOUT;
        CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, q[0], &ev) == 0);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, q[0], NULL) == 0);
        ev.events = EPOLLIN;
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exit";
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(0);
    add_fd(ep, p[0], EPOLLIN);
    if (!strcmp(mode, "exit")) {
        pid_t c = fork();
        if (c != 0)
            exit(0);
        msleep(50); /* let the creator go */
        run_loop();
    } else if (!strcmp(mode, "pipe")) {
        int done[2];
        CHECK(pipe(done) == 0);
        pid_t c = fork();
        if (c == 0) {
            close(done[0]);
            run_loop();
            exit(0); /* closes done[1]: the creator wakes up */
        }
        close(done[1]);
        char b;
        CHECK(read(done[0], &b, 1) == 0);
        reap(c);
    } else if (!strcmp(mode, "daemon")) {
        CHECK(daemon(1, 1) == 0);
        msleep(50);
        run_loop();
    }
    return 0;
}
