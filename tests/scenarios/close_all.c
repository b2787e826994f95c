/*
 * close_all.c MODE - the program closes every fd, and only then makes a
 * conflict: the report must still get out through the shim's own log fds.
 *
 * First an epoll instance is made and used (so the shim has set up its sink:
 * the copy of stderr and the log file), then every fd from 3 up is closed, as
 * MODE says; then fresh pipes and a fresh instance, a fork, the child deletes
 * the parent's pipe from the list and exits, and the parent waits on the list.
 * Printed: "epfd=N fd=M" (the numbers the report must name).
 *   loop        close(fd) for fd = 3 .. RLIMIT_NOFILE soft limit - 1
 *   closerange  close_range(3, ~0U, 0)
 *   closefrom   closefrom(3)
 *   loop012     close(fd) for fd = 0 .. limit - 1, stdin/stdout/stderr too:
 *               nothing is printed; the new pipe is then fds 0 and 1 and the
 *               new instance fd 2, so the report must say epfd=2 fd=0
 * Expected: exactly one report (DEL, use epoll_wait, reporter the parent).
 */
#include "scen.h"
#include <sys/resource.h>

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "loop";
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0);

    struct rlimit rl;
    CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
    int lim = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1u << 20) ? (1 << 20) : (int)rl.rlim_cur;
    if (!strcmp(mode, "loop") || !strcmp(mode, "loop012")) {
        for (int fd = !strcmp(mode, "loop") ? 3 : 0; fd < lim; fd++)
            close(fd);
    } else if (!strcmp(mode, "closerange")) {
        CHECK(close_range(3, ~0U, 0) == 0);
    } else if (!strcmp(mode, "closefrom")) {
        closefrom(3);
    } else {
        CHECK(!"unknown mode");
    }
    /* Nothing of the program's is open above 2 any more (the shim's own fds
     * are hidden: fcntl says EBADF for them, as it would without the shim). */
    for (int fd = 3; fd < 1100; fd++)
        CHECK(fcntl(fd, F_GETFD) == -1 && errno == EBADF);

    CHECK(pipe(p) == 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    if (strcmp(mode, "loop012")) {
        printf("epfd=%d fd=%d\n", ep, p[0]);
        fflush(stdout);
    }
    child_deletes_parent_waits(ep, p[0]);
    return 0;
}
