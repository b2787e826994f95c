/*
 * lib_uv.c MODE - libuv (Debian's libuv1 1.44) across a fork.
 *
 * The parent runs a loop that reads a pipe (uv_pipe_t + uv_read_start) and
 * turns it once, so that the registration reaches the kernel (libuv 1.44
 * queues watcher changes and applies them in uv__io_poll).  It forks; the
 * child does MODE and exits; the parent writes one byte to its pipe, turns
 * its loop again (UV_RUN_NOWAIT) and prints whether its read callback ran.
 *
 * Conflicts (reported by the parent at its epoll_wait; one report each, but
 * three for pollinit, whose three changes have three call stacks):
 *   start       the child starts a uv_poll on another pipe (initialized by
 *               the parent, see pollinit) and runs the loop:
 *               uv__io_poll applies the queued EPOLL_CTL_ADD to the inherited
 *               instance
 *   readstop    the child stops the parent's read, a byte arrives, the child
 *               runs the loop: uv__io_poll gets an event for an fd without a
 *               watcher and disarms it (EPOLL_CTL_DEL, libuv's lazy delete);
 *               the parent's read callback then never runs
 *   pollstop    the child stops a uv_poll the parent started: uv_poll_stop
 *               deletes at once (uv__platform_invalidate_fd)
 *   pollinit    the child makes a uv_poll on a pipe of its own and starts it:
 *               uv_poll_init probes the fd on the backend (uv__io_check_fd:
 *               EPOLL_CTL_ADD then DEL, at once) before uv__io_poll applies
 *               the real ADD - three changes to the shared list
 * Silent: fork-start, fork-readstop, fork-pollstop - the same after
 *   uv_loop_fork(), which closes the inherited epoll fd and makes a new one
 *   (at the same number) before re-registering every watcher; fork-pollinit.
 */
#include "scen.h"
#include <uv.h>

static uv_loop_t loop;
static uv_pipe_t in;        /* the parent's reader on p[0] */
static uv_poll_t watched;   /* a poll watcher on r[0], started by the parent */
static uv_poll_t extra;     /* a watcher on q[0], initialized (not started) by the parent */
static uv_poll_t own;       /* the child's watcher on a pipe of its own */
static int p[2], q[2], r[2];
static int got;

static void on_alloc(uv_handle_t *h, size_t sz, uv_buf_t *buf)
{
    static char mem[64];
    (void)h;
    (void)sz;
    *buf = uv_buf_init(mem, sizeof mem);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    (void)s;
    (void)buf;
    if (n > 0)
        got += (int)n;
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
}

/* The child drives the inherited loop: the frames the report must show. */
static void child_drives_loop(const char *what)
{
    if (!strcmp(what, "start")) {
        CHECK(uv_poll_start(&extra, UV_READABLE, on_poll) == 0);
    } else if (!strcmp(what, "readstop")) {
        CHECK(uv_read_stop((uv_stream_t *)&in) == 0);
        CHECK(write(p[1], "c", 1) == 1);
    } else if (!strcmp(what, "pollstop")) {
        CHECK(uv_poll_stop(&watched) == 0);
    } else if (!strcmp(what, "pollinit")) {
        int s[2];
        CHECK(pipe(s) == 0);
        CHECK(uv_poll_init(&loop, &own, s[0]) == 0);
        CHECK(uv_poll_start(&own, UV_READABLE, on_poll) == 0);
    }
    uv_run(&loop, UV_RUN_NOWAIT);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "start";
    int reinit = !strncmp(mode, "fork-", 5);
    const char *what = reinit ? mode + 5 : mode;
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK(pipe(p) == 0 && pipe(q) == 0 && pipe(r) == 0);
    CHECK(uv_loop_init(&loop) == 0);
    CHECK(uv_pipe_init(&loop, &in, 0) == 0);
    CHECK(uv_pipe_open(&in, p[0]) == 0);
    CHECK(uv_read_start((uv_stream_t *)&in, on_alloc, on_read) == 0);
    CHECK(uv_poll_init(&loop, &watched, r[0]) == 0);
    CHECK(uv_poll_start(&watched, UV_READABLE, on_poll) == 0);
    /* uv_poll_init probes the fd with EPOLL_CTL_ADD + DEL on the backend
     * (uv__io_check_fd): done here, before the fork, so that the child's
     * only change is the one uv__io_poll applies. */
    CHECK(uv_poll_init(&loop, &extra, q[0]) == 0);
    uv_run(&loop, UV_RUN_NOWAIT); /* applies the queued registrations */
    printf("backend_fd=%d\n", uv_backend_fd(&loop));

    int entries_before = epoll_entries_total();
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        if (reinit)
            CHECK(uv_loop_fork(&loop) == 0);
        child_drives_loop(what);
        printf("child backend_fd=%d read=%d\n", uv_backend_fd(&loop), got);
        _exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    /* what the child did to the parent's list (repair mode: nothing) */
    printf("parent entries before=%d after=%d\n", entries_before, epoll_entries_total());
    CHECK(write(p[1], "p", 1) == 1);
    uv_run(&loop, UV_RUN_NOWAIT);
    printf("parent read=%d\n", got);
    return 0;
}
