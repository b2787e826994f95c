/*
 * blocked.c MODE - one process is blocked in epoll_wait on a shared instance
 * while the other changes it.  The waiter may never wake up, so the change
 * must be reported by the process that makes it, at the change.
 *   child-del      the parent blocks; the child deletes the parent's fd
 *   parent-add     the child blocks; the parent adds an fd to the list
 *   thread-fork    a parent thread blocks; another parent thread forks, and
 *                  the child deletes
 */
#include "scen.h"
#include <pthread.h>

static int p[2], q[2], ep;

static void child_delete(void)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
}

static void parent_add(void)
{
    add_fd(ep, q[0], EPOLLIN);
}

static void *waiter(void *arg)
{
    struct epoll_event out;
    int n = epoll_wait(ep, &out, 1, 3000);
    (void)arg;
    return (void *)(long)n;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "child-del";
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    add_fd(ep, p[0], EPOLLIN);
    struct epoll_event out;
    if (!strcmp(mode, "child-del")) {
        pid_t c = fork();
        if (c == 0) {
            CHECK(wait_blocked_in_epoll(getppid()));
            child_delete();
            CHECK(write(p[1], "x", 1) == 1); /* the parent will never see this */
            exit(0);
        }
        int n = epoll_wait(ep, &out, 1, 1500);
        printf("parent woke with %d events\n", n);
        reap(c);
    } else if (!strcmp(mode, "parent-add")) {
        pid_t c = fork();
        if (c == 0) {
            int n = epoll_wait(ep, &out, 1, 1500);
            printf("child woke with %d events\n", n);
            exit(0);
        }
        CHECK(wait_blocked_in_epoll(c));
        parent_add();
        reap(c);
    } else if (!strcmp(mode, "thread-fork")) {
        pthread_t t;
        CHECK(pthread_create(&t, NULL, waiter, NULL) == 0);
        CHECK(wait_blocked_in_epoll(getpid()));
        pid_t c = fork();
        if (c == 0) {
            child_delete();
            exit(0);
        }
        reap(c);
        pthread_join(t, NULL);
    }
    return 0;
}
