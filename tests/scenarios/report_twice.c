/*
 * report_twice.c - two conflicts in one process, with a pause between them
 * (tests/test_journal.py restarts or stops journald there).  Each is the
 * conflict of ctl_child.c 'del' on an instance of its own, made at a call
 * site of its own (first_change, second_change), and reported by the parent
 * at its wait.  Between them the parent prints "first done" and reads stdin
 * until a newline or EOF (with no stdin it goes straight on).
 * Prints "first done", "second done".
 * Expected: two reports by one process (sites first_change, second_change).
 */
#include "scen.h"

static void first_change(int ep, int fd)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
}

static void second_change(int ep, int fd)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
}

static void conflict(void (*change)(int, int))
{
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        change(ep, p[0]);
        _exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0);
    CHECK(close(ep) == 0 && close(p[0]) == 0 && close(p[1]) == 0);
}

int main(void)
{
    conflict(first_change);
    printf("first done\n");
    fflush(stdout);
    char ch;
    while (read(0, &ch, 1) == 1 && ch != '\n')
        ;
    conflict(second_change);
    printf("second done\n");
    return 0;
}
