/*
 * lib_ev.c MODE - libev (Debian's 4.33) across a fork, epoll backend.
 *
 * The parent makes the default loop with EVBACKEND_EPOLL, starts an ev_io on a
 * pipe and turns the loop once (libev queues fd changes and applies them in
 * fd_reify, at the start of each ev_run iteration).  It forks; the child does
 * MODE and exits; the parent writes one byte to its pipe, turns its loop
 * (EVRUN_NOWAIT) and prints how many bytes its watcher read.
 *
 * MODE is [fork-|forkcheck-]ACTION:
 *   start      the child starts an ev_io on another pipe and runs the loop:
 *              fd_reify -> epoll_modify issues EPOLL_CTL_ADD
 *   stop       the child stops the parent's watcher (libev deletes lazily),
 *              a byte arrives and the child runs the loop: epoll_poll gets an
 *              event nobody wants and disarms it (EPOLL_CTL_DEL); the parent's
 *              watcher never fires again
 * Conflicts (one report, by the parent at its epoll_wait): start, stop.
 * Silent:
 *   fork-ACTION       the child calls ev_loop_fork() first: at the next ev_run,
 *                     epoll_fork() closes the inherited epoll fd, makes a new
 *                     one (same number) and re-arms every fd there
 *   forkcheck-ACTION  no ev_loop_fork(), but the loop was made with
 *                     EVFLAG_FORKCHECK: ev_run sees getpid() change and does
 *                     the same by itself
 */
#include "scen.h"
#include <ev.h>

static struct ev_loop *loop;
static ev_io in, extra;
static int p[2], q[2];
static int got;

static void on_read(struct ev_loop *l, ev_io *w, int revents)
{
    char buf[64];
    (void)l;
    (void)revents;
    ssize_t n = read(w->fd, buf, sizeof buf);
    if (n > 0)
        got += (int)n;
}

/* The child drives the inherited loop: the frames the report must show. */
static void child_drives_loop(const char *action)
{
    if (!strcmp(action, "start")) {
        ev_io_init(&extra, on_read, q[0], EV_READ);
        ev_io_start(loop, &extra);
    } else if (!strcmp(action, "stop")) {
        ev_io_stop(loop, &in);
        CHECK(write(p[1], "c", 1) == 1);
    }
    ev_run(loop, EVRUN_NOWAIT);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "start";
    int reinit = !strncmp(mode, "fork-", 5);
    int forkcheck = !strncmp(mode, "forkcheck-", 10);
    const char *action = strrchr(mode, '-') ? strrchr(mode, '-') + 1 : mode;
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    CHECK(fcntl(p[0], F_SETFL, O_NONBLOCK) == 0);
    loop = ev_default_loop(EVBACKEND_EPOLL | EVFLAG_NOENV | (forkcheck ? EVFLAG_FORKCHECK : 0));
    CHECK(loop && ev_backend(loop) == EVBACKEND_EPOLL);
    ev_io_init(&in, on_read, p[0], EV_READ);
    ev_io_start(loop, &in);
    ev_run(loop, EVRUN_NOWAIT); /* fd_reify: the registration reaches the kernel */
    printf("forkcheck=%d\n", forkcheck);

    int entries_before = epoll_entries_total();
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        if (reinit)
            ev_loop_fork(loop);
        child_drives_loop(action);
        printf("child read=%d\n", got);
        _exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    /* what the child did to the parent's list (repair mode: nothing) */
    printf("parent entries before=%d after=%d\n", entries_before, epoll_entries_total());
    CHECK(write(p[1], "p", 1) == 1);
    ev_run(loop, EVRUN_NOWAIT);
    printf("parent read=%d\n", got);
    return 0;
}
