/*
 * unwind_fds.c - a daemon-like program: it uses epoll (so the shim has loaded
 * its unwinder and set up its sink), closes every fd from 3 to 1023 (as
 * daemons and CPython's subprocess children do), opens 8 pipes and writes
 * "ok" into each, then makes the usual conflict (the child deletes the
 * parent's pipe, the parent waits), which makes the shim unwind in both
 * processes.  Then it reads every pipe back (non-blocking): each must still
 * hold exactly "ok".  Prints one line per damaged pipe and "bad=N".
 * Expected: bad=0 and one report (DEL, use epoll_wait).
 */
#include "scen.h"

int main(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    for (int fd = 3; fd < 1024; fd++)
        close(fd);
    int r[8], w[8];
    for (int i = 0; i < 8; i++) {
        int x[2];
        CHECK(pipe(x) == 0);
        r[i] = x[0];
        w[i] = x[1];
        CHECK(write(w[i], "ok", 2) == 2);
    }
    CHECK(pipe(p) == 0);
    ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    child_deletes_parent_waits(ep, p[0]);
    int bad = 0;
    for (int i = 0; i < 8; i++) {
        char b[16];
        ssize_t n = -1;
        if (fcntl(r[i], F_SETFL, O_NONBLOCK) == 0)
            n = read(r[i], b, sizeof b);
        int wr = fcntl(w[i], F_GETFL);
        if (n != 2 || memcmp(b, "ok", 2) || wr < 0 || (wr & O_ACCMODE) != O_WRONLY) {
            printf("pipe %d (fds %d,%d): read %zd bytes, write end %s\n", i, r[i], w[i], n,
                   wr < 0 ? "closed" : (wr & O_ACCMODE) != O_WRONLY ? "replaced" : "ok");
            bad++;
        }
    }
    printf("bad=%d\n", bad);
    return 0;
}
