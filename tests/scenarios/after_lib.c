/*
 * after_lib.c - an interposer loaded after the shim (LD_PRELOAD=shim:this).
 *
 * The shim makes some real calls as their system call where libc's own
 * definition is just that (src/direct.h); it must not do so past another
 * library that defines the name after it: dlsym(RTLD_NEXT) finds this one,
 * and every call must reach it.  Counts each call it sees and prints the
 * counts at exit; the test compares them with the counts it prints without
 * the shim.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static unsigned n_ctl, n_eventfd, n_socket, n_socketpair, n_pipe2, n_timerfd;

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int epoll_ctl(int epfd, int op, int fd, struct epoll_event *ev)
{
    n_ctl++;
    return NEXT(epoll_ctl)(epfd, op, fd, ev);
}

int eventfd(unsigned count, int flags)
{
    n_eventfd++;
    int (*f)(unsigned, int) = (int (*)(unsigned, int))dlsym(RTLD_NEXT, "eventfd");
    return f(count, flags);
}

int socket(int d, int t, int p)
{
    n_socket++;
    return NEXT(socket)(d, t, p);
}

int socketpair(int d, int t, int p, int sv[2])
{
    n_socketpair++;
    return NEXT(socketpair)(d, t, p, sv);
}

int pipe2(int p[2], int flags)
{
    n_pipe2++;
    return NEXT(pipe2)(p, flags);
}

int timerfd_create(int clock, int flags)
{
    n_timerfd++;
    int (*f)(int, int) = (int (*)(int, int))dlsym(RTLD_NEXT, "timerfd_create");
    return f(clock, flags);
}

__attribute__((destructor)) static void counts(void)
{
    char b[200];
    int n = snprintf(b, sizeof b,
                     "after_lib: epoll_ctl=%u eventfd=%u socket=%u socketpair=%u pipe2=%u "
                     "timerfd_create=%u\n",
                     n_ctl, n_eventfd, n_socket, n_socketpair, n_pipe2, n_timerfd);
    if (write(2, b, (size_t)n) < 0)
        return;
}
