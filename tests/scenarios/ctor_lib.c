/*
 * ctor_lib.c - a shared library that uses epoll from its constructor, linked
 * into ctor_main.c.  The dynamic loader runs this constructor before the
 * preloaded shim's own constructor (dependencies of the program initialize
 * first; the test checks that order with LD_DEBUG=files), so the shim's
 * wrappers see their first calls before its constructor ran.  The mode is
 * the program's argv[1], which glibc passes to constructors.
 *   conflict   the constructor makes an instance, ADDs a pipe, forks; the
 *              child deletes the pipe and _exits; the constructor reaps it
 *              and waits on the list: one report, made during start-up
 *   closeonly  the constructor only calls close(), dup*, fcntl, epoll_create*
 *              on bad fds and arguments (recording each errno), then closes a
 *              pipe and makes and closes an epoll fd: nothing to report, the
 *              errnos must be libc's, and the shim must work for main() after
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

int ctor_ran, ctor_epfd = -1, ctor_fd = -1;
char ctor_errnos[256]; /* "call=ERRNO ..." for calls that fail on purpose */

static void note(const char *call, int r, int e)
{
    size_t n = strlen(ctor_errnos);
    const char *name = r == -1 ? strerrorname_np(e) : "no-error";
    snprintf(ctor_errnos + n, sizeof ctor_errnos - n, "%s%s=%s", n ? " " : "", call,
             name ? name : "?");
}

static void die(int code)
{
    _exit(code);
}

static void ctor_child_deletes(int ep, int fd)
{
    if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) != 0)
        _exit(3);
    _exit(0);
}

__attribute__((constructor)) static void ctor(int argc, char **argv, char **envp)
{
    (void)envp;
    const char *mode = argc > 1 ? argv[1] : "";
    ctor_ran = 1;
    if (!strcmp(mode, "conflict")) {
        int p[2];
        if (pipe(p) != 0)
            die(90);
        int ep = epoll_create1(0);
        if (ep < 0)
            die(91);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) != 0)
            die(92);
        pid_t c = fork();
        if (c < 0)
            die(93);
        if (c == 0)
            ctor_child_deletes(ep, p[0]);
        int st;
        if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
            die(94);
        struct epoll_event out;
        if (epoll_wait(ep, &out, 1, 0) != 0)
            die(95);
        ctor_epfd = ep;
        ctor_fd = p[0];
    } else if (!strcmp(mode, "closeonly")) {
        /* failing calls first: the wrappers that do not initialize the shim
         * use the real functions as they are before it resolved them */
        int r;
        errno = 0, r = close(-1), note("close(-1)", r, errno);
        errno = 0, r = close(9999), note("close(9999)", r, errno);
        errno = 0, r = dup(-1), note("dup(-1)", r, errno);
        errno = 0, r = dup2(9999, 20), note("dup2(9999,20)", r, errno);
        errno = 0, r = dup3(9999, 20, 0), note("dup3(9999,20,0)", r, errno);
        errno = 0, r = fcntl(9999, F_GETFD), note("fcntl(9999,F_GETFD)", r, errno);
        errno = 0, r = epoll_create(0), note("epoll_create(0)", r, errno);
        errno = 0, r = epoll_create1(-1), note("epoll_create1(-1)", r, errno);
        int p[2];
        if (pipe(p) != 0 || close(p[1]) != 0 || close(p[0]) != 0)
            die(97);
        int ep = epoll_create(1);
        if (ep < 0 || close(ep) != 0)
            die(98);
    }
}
