/*
 * ps_exec.c MODE - an epoll fd that crosses an exec, paused for epollfork-ps.
 *
 * The parent makes an epoll instance with a pipe in it and forks; the child
 * runs /bin/sleep (another program).  A close-on-exec pipe tells the parent
 * that the exec happened (its write end closes then); the parent prints
 * `READY MODE parent=P child=C ep=E` and blocks in epoll_wait.  The child
 * dies with its parent (PR_SET_PDEATHSIG survives the exec).
 *   exec     epoll_create1(0): the instance has no close-on-exec, sleep
 *            inherits it: inherited through exec
 *   cloexec  EPOLL_CLOEXEC: sleep holds nothing, silent
 *   fork     epoll_create1(0), but the child stays this program (no exec):
 *            shared, not inherited through exec
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <unistd.h>

static void die(const char *what)
{
    perror(what);
    exit(99);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "exec";
    int p[2], gate[2];
    if (pipe(p) || pipe2(gate, O_CLOEXEC))
        die("pipe");
    int ep = epoll_create1(!strcmp(mode, "cloexec") ? EPOLL_CLOEXEC : 0);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev))
        die("epoll");
    pid_t c = fork();
    if (c < 0)
        die("fork");
    if (c == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        close(gate[0]);
        if (!strcmp(mode, "fork")) {
            close(gate[1]); /* "exec'd" */
            for (;;)
                pause();
        }
        execl("/bin/sleep", "sleep", "1000", (char *)NULL);
        die("execl");
    }
    close(gate[1]);
    char b;
    if (read(gate[0], &b, 1) != 0) /* EOF: the exec happened */
        die("gate");
    printf("READY %s parent=%d child=%d ep=%d\n", mode, (int)getpid(), (int)c, ep);
    fflush(stdout);
    struct epoll_event out;
    for (;;)
        if (epoll_wait(ep, &out, 1, -1) < 0)
            die("epoll_wait");
}
