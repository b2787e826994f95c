/*
 * canary.c - the positive control of the real-program cases: a process that
 * starts using epoll only after it dropped its privileges (the way an nginx
 * worker does: setuid to nobody, then epoll_create) makes a conflict that it
 * must report itself, under exactly the sink configuration of the real cases.
 * If the real programs are silent, this shows that it is not because their
 * workers' reports could not get out.
 *
 * The root process forks a worker; the worker drops to nobody (when run as
 * root), creates an epoll instance with a pipe in it, forks a helper, and the
 * helper deletes the pipe from the shared list and exits; the worker then
 * waits on the instance: it is the affected process and reports (other_use
 * epoll_wait).  Prints "worker=PID uid=UID" and "worker woke with N events"
 * (N = 0: the helper took its pipe out of the list).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s (errno %d)\n", __FILE__,      \
                    __LINE__, #x, errno);                                          \
            exit(99);                                                              \
        }                                                                          \
    } while (0)

static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        CHECK(errno == EINTR);
    return st;
}

static void drop_privileges(void)
{
    if (geteuid() != 0)
        return;
    struct passwd *pw = getpwnam("nobody");
    CHECK(pw);
    CHECK(setgroups(0, NULL) == 0);
    CHECK(setgid(pw->pw_gid) == 0 && setuid(pw->pw_uid) == 0);
}

static void helper_deletes(int ep, int fd)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
    _exit(0);
}

static int worker(void)
{
    drop_privileges();
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev) == 0);
    printf("worker=%d uid=%d\n", (int)getpid(), (int)getuid());
    fflush(stdout);
    pid_t h = fork();
    CHECK(h >= 0);
    if (h == 0)
        helper_deletes(ep, p[0]);
    CHECK(WIFEXITED(reap(h)));
    CHECK(write(p[1], "x", 1) == 1);
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 200);
    printf("worker woke with %d events\n", n);
    fflush(stdout);
    return 0;
}

int main(void)
{
    pid_t w = fork();
    CHECK(w >= 0);
    if (w == 0)
        _exit(worker());
    int st = reap(w);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return 0;
}
