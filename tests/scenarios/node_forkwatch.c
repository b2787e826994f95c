/*
 * node_forkwatch.c - a Node-API addon for tests/test_uring.py: a real libuv
 * (Node 20's bundled 1.46, with UV_USE_IO_URING=1) used wrongly after fork.
 *
 * forkWatch(useLoopFork) makes a pipe and forks.  The child starts a watcher
 * on the read end on the parent's loop and runs the loop once (UV_RUN_NOWAIT:
 * libuv then sends its pending EPOLL_CTL_ADDs through its io_uring ring, and
 * those edit the epoll instance the parent shares); with useLoopFork it calls
 * uv_loop_fork() first, as libuv documents, and gets an epoll and rings of its
 * own.  Node's own phases (check, idle, prepare, timers) are stopped in the
 * child first: they would run JavaScript in a forked copy of V8.  The parent
 * waits for the child and returns its exit status (1000 + signal).
 */
#include <node_api.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

static void on_readable(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
}

static void stop_phase(uv_handle_t *h, void *arg)
{
    (void)arg;
    switch (h->type) {
    case UV_CHECK: uv_check_stop((uv_check_t *)h); break;
    case UV_IDLE: uv_idle_stop((uv_idle_t *)h); break;
    case UV_PREPARE: uv_prepare_stop((uv_prepare_t *)h); break;
    case UV_TIMER: uv_timer_stop((uv_timer_t *)h); break;
    default: break;
    }
}

static void child_watches(uv_loop_t *loop, int fd, bool use_loop_fork)
{
    static uv_poll_t w;
    if (use_loop_fork)
        uv_loop_fork(loop);
    uv_walk(loop, stop_phase, NULL);
    uv_poll_init(loop, &w, fd);
    uv_poll_start(&w, UV_READABLE, on_readable);
    uv_run(loop, UV_RUN_NOWAIT);
    _exit(0);
}

static napi_value fork_watch(napi_env env, napi_callback_info info)
{
    size_t argc = 1;
    napi_value argv[1], r;
    bool use_loop_fork = false;
    uv_loop_t *loop;
    int p[2], st = 0;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc > 0)
        napi_get_value_bool(env, argv[0], &use_loop_fork);
    napi_get_uv_event_loop(env, &loop);
    if (pipe(p) != 0)
        return NULL;
    pid_t c = fork();
    if (c == 0)
        child_watches(loop, p[0], use_loop_fork);
    if (c < 0 || waitpid(c, &st, 0) != c)
        st = 0x7f00;
    napi_create_int32(env, WIFEXITED(st) ? WEXITSTATUS(st) : 1000 + WTERMSIG(st), &r);
    close(p[0]);
    close(p[1]);
    return r;
}

NAPI_MODULE_INIT()
{
    napi_value fn;
    napi_create_function(env, "forkWatch", NAPI_AUTO_LENGTH, fork_watch, NULL, &fn);
    napi_set_named_property(env, exports, "forkWatch", fn);
    return exports;
}
