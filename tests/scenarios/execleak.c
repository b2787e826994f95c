/*
 * execleak.c MODE - an epoll fd crosses exec (or does not).
 * Leaks (one epoll-fd-exec-leak report in all, whatever runs after):
 *   execve, execvp, execl    no close-on-exec, exec through the shim
 *   posix_spawn, system      exec the shim cannot see: the new program's
 *                            shim reports at start-up
 *   dup                      the epoll fd has EPOLL_CLOEXEC, but a plain dup
 *                            of it does not
 * Silent:
 *   cloexec                  EPOLL_CLOEXEC
 *   setfd                    epoll_create(), then fcntl(F_SETFD, FD_CLOEXEC)
 *   dup3-cloexec             only a dup3(O_CLOEXEC) alias besides the original
 *   closed                   closed before the exec
 *   fork-only                a fork without exec
 */
#include "scen.h"
#include <spawn.h>

extern char **environ;

static void exec_true(const char *how)
{
    char *args[] = {"true", NULL};
    if (!strcmp(how, "execvp"))
        execvp("true", args);
    else if (!strcmp(how, "execl"))
        execl("/bin/true", "true", (char *)NULL);
    else
        execve("/bin/true", args, environ);
    perror("exec");
    exit(98);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "execve";
    int p[2];
    CHECK(pipe(p) == 0);
    int ep;
    if (!strcmp(mode, "cloexec") || !strcmp(mode, "dup") || !strcmp(mode, "dup3-cloexec"))
        ep = epoll_create1(EPOLL_CLOEXEC);
    else
        ep = epoll_create(8);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    if (!strcmp(mode, "setfd"))
        CHECK(fcntl(ep, F_SETFD, FD_CLOEXEC) == 0);
    if (!strcmp(mode, "dup"))
        CHECK(dup(ep) > ep);
    if (!strcmp(mode, "dup3-cloexec"))
        CHECK(dup3(ep, 50, O_CLOEXEC) == 50);
    if (!strcmp(mode, "closed"))
        CHECK(close(ep) == 0);
    if (!strcmp(mode, "fork-only")) {
        pid_t c = fork();
        if (c == 0)
            _exit(0);
        reap(c);
        return 0;
    }
    if (!strcmp(mode, "posix_spawn")) {
        pid_t c;
        char *args[] = {"true", NULL};
        CHECK(posix_spawn(&c, "/bin/true", NULL, NULL, args, environ) == 0);
        reap(c);
        return 0;
    }
    if (!strcmp(mode, "system")) {
        CHECK(system("true") == 0);
        return 0;
    }
    pid_t c = fork();
    if (c == 0)
        exec_true(mode);
    int st = reap(c);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    return 0;
}
