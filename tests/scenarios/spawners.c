/*
 * spawners.c MODE - programs started while the process holds a registered
 * epoll instance (a pipe ADDed); each started program is /bin/true, which
 * runs under the shim too.  After it, the parent edits and waits on its own
 * instance as usual.
 * Silent (nobody else uses the list):
 *   posix_spawn   posix_spawn("/bin/true"), waitpid
 *   system        system("/bin/true")
 *   popen         popen("/bin/true", "r"), read to EOF, pclose
 *   vfork-exec    vfork(); the child execs /bin/true
 * Conflict, exactly one report:
 *   vfork-close   like CPython's subprocess: the vfork child closes fds,
 *                 the epoll fd included (close(), then close_range(3, ~0U, 0)),
 *                 dup2s onto fds 0-2, and execs /bin/true.  The vfork child
 *                 shares the parent's memory, so if the shim's wrappers updated
 *                 their tables there, the parent would have lost its instance.
 *                 Then the parent forks a child that deletes the parent's pipe
 *                 from the list, and the parent waits: reported once.
 *   vfork-dup2high  the vfork child dup2s a pipe onto every fd from 900 to
 *                 1023 (where the shim keeps its own fds) before exec; the
 *                 parent's sink must be untouched, and the same conflict must
 *                 be reported once.
 *   vfork-close2-first  before any epoll use, a vfork child closes fd 2 and
 *                 execs; only then does the parent use epoll and meet the
 *                 conflict.  The child's close must not leave the parent a
 *                 stderr copy made in the child's fd table: the report must
 *                 reach the parent's stderr.
 * Every mode prints "done".
 */
#include "scen.h"
#include <spawn.h>

extern char **environ;
static int p[2], q[2], ep;
static char *const true_argv[] = {"/bin/true", NULL};

static void use_list(void)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.fd = p[0]}, out;
    CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev) == 0);
    CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
}

static void vfork_child_closes(int high)
{
    /* only async-signal-safe calls and no writes to our variables */
    close(ep);
    close(p[0]);
    if (high) {
        for (int fd = 900; fd < 1024; fd++)
            if (dup2(q[1], fd) != fd)
                _exit(97);
    }
    if (dup2(q[0], 0) != 0)
        _exit(96);
    close_range(3, ~0U, 0);
    execve("/bin/true", true_argv, environ);
    _exit(127);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "posix_spawn";
    if (!strcmp(mode, "vfork-close2-first")) {
        pid_t c = vfork();
        if (c == 0) {
            close(2);
            execve("/bin/true", true_argv, environ);
            _exit(127);
        }
        CHECK(c > 0);
        int st = reap(c);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        CHECK(pipe(p) == 0);
        ep = epoll_create1(EPOLL_CLOEXEC);
        CHECK(ep >= 0);
        add_fd(ep, p[0], EPOLLIN);
        child_deletes_parent_waits(ep, p[0]);
        printf("done\n");
        return 0;
    }
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    use_list();
    if (!strcmp(mode, "posix_spawn")) {
        pid_t c;
        CHECK(posix_spawn(&c, "/bin/true", NULL, NULL, true_argv, environ) == 0);
        int st = reap(c);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    } else if (!strcmp(mode, "system")) {
        CHECK(system("/bin/true") == 0);
    } else if (!strcmp(mode, "popen")) {
        FILE *f = popen("/bin/true", "r");
        CHECK(f);
        char buf[64];
        while (fread(buf, 1, sizeof buf, f) > 0)
            ;
        CHECK(pclose(f) == 0);
    } else if (!strcmp(mode, "vfork-exec")) {
        pid_t c = vfork();
        if (c == 0) {
            execve("/bin/true", true_argv, environ);
            _exit(127);
        }
        CHECK(c > 0);
        int st = reap(c);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    } else if (!strcmp(mode, "vfork-close") || !strcmp(mode, "vfork-dup2high")) {
        int high = !strcmp(mode, "vfork-dup2high");
        pid_t c = vfork();
        if (c == 0)
            vfork_child_closes(high);
        CHECK(c > 0);
        int st = reap(c);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        /* the parent still has everything: its fds are its own */
        CHECK(fcntl(ep, F_GETFD) == FD_CLOEXEC && fcntl(p[0], F_GETFD) == 0);
        use_list();
        child_deletes_parent_waits(ep, p[0]);
        struct epoll_event out;
        CHECK(epoll_wait(ep, &out, 1, 0) == 0); /* a second use: still one report */
        printf("done\n");
        return 0;
    } else {
        CHECK(!"unknown mode");
    }
    use_list();
    printf("done\n");
    return 0;
}
