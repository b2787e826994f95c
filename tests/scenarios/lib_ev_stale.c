/*
 * lib_ev_stale.c - libev's documented pattern, with Debian's libev: the parent
 * stops an io watcher and closes its fd, relying on close() to deregister
 * (libev's epoll backend ignores EPOLL_CTL_DEL for stopped watchers), while a
 * forked child holds a copy of the fd.  The registration survives: one
 * stale-registration report at the parent's next ev_run.
 */
#include "scen.h"
#include <ev.h>

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)loop;
    (void)w;
    (void)revents;
}

int main(void)
{
    struct ev_loop *loop = ev_default_loop(EVBACKEND_EPOLL);
    CHECK(loop && ev_backend(loop) == EVBACKEND_EPOLL);
    int p[2], ctl[2];
    CHECK(pipe(p) == 0 && pipe(ctl) == 0);
    ev_io w;
    ev_io_init(&w, on_read, p[0], EV_READ);
    ev_io_start(loop, &w);
    ev_run(loop, EVRUN_NOWAIT); /* libev registers the fd now */
    pid_t c = fork();
    if (c == 0) {
        close(ctl[1]);
        char b;
        CHECK(read(ctl[0], &b, 1) == 0);
        _exit(0);
    }
    close(ctl[0]);
    ev_io_stop(loop, &w);
    CHECK(close(p[0]) == 0);
    CHECK(write(p[1], "x", 1) == 1);
    for (int i = 0; i < 3; i++)
        ev_run(loop, EVRUN_NOWAIT);
    close(ctl[1]);
    reap(c);
    return 0;
}
