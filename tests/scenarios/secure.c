/*
 * secure.c - a setuid program under the shim (tests/test_hardening.py makes
 * a setuid-root copy and runs it as nobody): secure-execution mode.  It makes
 * the seed's conflict (a report, whose frames must carry no absolute
 * address), then execs a helper the way a program that became root would,
 * which must not see the caller's EPOLLFORK_* file names.
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/auxv.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void)
{
    printf("secure=%lu\n", getauxval(AT_SECURE));
    fflush(stdout);
    int ep = epoll_create1(EPOLL_CLOEXEC), p[2];
    if (pipe(p))
        return 2;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pid_t c = fork();
    if (c == 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    struct epoll_event out;
    epoll_wait(ep, &out, 1, 0);
    execl("/bin/sh", "sh", "-c",
          "echo helper sees EPOLLFORK_LOG=${EPOLLFORK_LOG:-(unset)} "
          "EPOLLFORK_SUPPRESSIONS=${EPOLLFORK_SUPPRESSIONS:-(unset)}", (char *)NULL);
    return 1;
}
