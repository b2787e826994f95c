/*
 * anon_target.c - the target of a report is an eventfd (an anon inode, like
 * every epoll, timerfd and signalfd: they all share one inode).  The child
 * deletes it from the shared list, closes it and creates an epoll that takes
 * the same number: the report must still say anon_inode:[eventfd], the kind
 * recorded at the change, not what the number holds by the time it is read.
 */
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int e = eventfd(0, 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = e};
    epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
    pid_t c = fork();
    if (c == 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, e, NULL);
        close(e);
        int other = epoll_create1(0); /* the same number, another anon inode */
        (void)other;
        sleep(1);                     /* alive while the parent reports */
        _exit(0);
    }
    usleep(200000);
    struct epoll_event out;
    epoll_wait(ep, &out, 1, 0);
    waitpid(c, NULL, 0);
    return 0;
}
