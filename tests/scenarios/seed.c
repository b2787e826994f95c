/*
 * seed.c - the bug epollfork exists for.
 *
 * The parent registers a pipe in an epoll instance and forks.  The child, as a
 * careless child would, cleans up "its" event loop with EPOLL_CTL_DEL and exits.
 * The interest list lives in the kernel and is shared, so the parent's
 * epoll_wait never sees the data that is then written to the pipe.
 * Prints what the parent saw; exits 0 either way.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

static void child_cleanup(int ep, int fd)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); /* edits the parent's list too */
}

int main(void)
{
    int p[2];
    if (pipe(p) != 0)
        return 1;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pid_t c = fork();
    if (c == 0) {
        child_cleanup(ep, p[0]);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    if (write(p[1], "x", 1) != 1)
        return 1;
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 200);
    printf("parent: epoll_wait returned %d event(s) for a pipe that holds data%s\n", n,
           n == 0 ? " (the child deleted it from the shared list)" : "");
    return 0;
}
