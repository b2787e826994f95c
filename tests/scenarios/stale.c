/*
 * stale.c MODE - closing a registered fd without EPOLL_CTL_DEL.
 * The kernel keeps the registration while another fd of the same open file
 * description lives (a forked child's copy, a dup), and epoll_wait keeps
 * reporting events for the closed number (a ghost).  Prints "ghost" lines for
 * every event epoll_wait returned for the closed number.
 * Reports (stale-registration, at the next use of the instance):
 *   child-copy      a child holds a copy while the parent closes it
 *   dup-copy        a dup in the same process holds a copy
 *   inherited       the fd was inherited from the parent; the child registers
 *                   it in its own instance, closes it, and waits
 * Silent:
 *   del-first       EPOLL_CTL_DEL, then close, while the child holds a copy
 *   no-copy         close without DEL, but no copy exists: the kernel drops it
 *   fresh-after-fork  the fd was created after the fork: no copy
 *   dup-both-closed both the fd and its dup are closed before the next use
 *   instance-closed the registered fd and then the epoll fd are closed
 *   child-closes-all  the child closes every fd (registered fds first) and exits
 */
#include "scen.h"
#include <signal.h>
#include <sys/socket.h>

static int ep, p[2], ctl[2];

static void close_without_del(int fd)
{
    CHECK(close(fd) == 0);
}

static void use_and_count_ghosts(int closed)
{
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 100);
    for (int i = 0; i < n; i++)
        if (out[i].data.fd == closed)
            printf("ghost event for closed fd %d\n", closed);
    errno = 0;
    int r = epoll_ctl(ep, EPOLL_CTL_DEL, closed, NULL);
    printf("DEL after close: %d errno=%d\n", r, r ? errno : 0);
}

static pid_t holder_child(void)
{
    CHECK(pipe(ctl) == 0);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        close(ctl[1]);
        char b;
        CHECK(read(ctl[0], &b, 1) == 0); /* hold every inherited fd until released */
        _exit(0);
    }
    close(ctl[0]);
    return c;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "child-copy";
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN); /* writes to a pipe whose only reader is gone */
    if (!strcmp(mode, "fresh-after-fork")) {
        pid_t c = holder_child();
        ep = epoll_create1(0);
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0);
        add_fd(ep, p[0], EPOLLIN);
        close_without_del(p[0]);
        if (write(p[1], "x", 1) != 1)
            printf("write failed: no reader left (errno %d)\n", errno);
        use_and_count_ghosts(p[0]);
        close(ctl[1]);
        reap(c);
        return 0;
    }
    if (!strcmp(mode, "inherited")) {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, p) == 0);
        CHECK(pipe(ctl) == 0);
        pid_t c = fork();
        if (c == 0) {
            close(ctl[1]);
            ep = epoll_create1(0);
            add_fd(ep, p[0], EPOLLIN);
            close_without_del(p[0]);
            if (write(p[1], "x", 1) != 1)
            printf("write failed: no reader left (errno %d)\n", errno);
            use_and_count_ghosts(p[0]);
            exit(0);
        }
        close(ctl[0]);
        reap(c); /* the parent keeps p[0] open all along */
        return 0;
    }
    ep = epoll_create1(0);
    CHECK(pipe(p) == 0);
    add_fd(ep, p[0], EPOLLIN);
    pid_t c = -1;
    if (!strcmp(mode, "child-copy") || !strcmp(mode, "del-first") || !strcmp(mode, "instance-closed"))
        c = holder_child();
    if (!strcmp(mode, "child-closes-all")) {
        c = fork();
        if (c == 0) {
            for (int fd = 3; fd < 64; fd++)
                close(fd);
            _exit(0);
        }
        reap(c);
        c = -1;
        struct epoll_event out;
        CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
        return 0;
    }
    int d = -1;
    if (!strcmp(mode, "dup-copy") || !strcmp(mode, "dup-both-closed"))
        d = dup(p[0]);
    if (!strcmp(mode, "del-first"))
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
    close_without_del(p[0]);
    if (!strcmp(mode, "dup-both-closed"))
        CHECK(close(d) == 0);
    if (!strcmp(mode, "instance-closed")) {
        CHECK(close(ep) == 0);
    } else {
        if (write(p[1], "x", 1) != 1)
            printf("write failed: no reader left (errno %d)\n", errno);
        use_and_count_ghosts(p[0]);
    }
    if (c > 0) {
        close(ctl[1]);
        reap(c);
    }
    return 0;
}
