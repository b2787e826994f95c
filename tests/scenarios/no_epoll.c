/*
 * no_epoll.c - a program that never uses epoll: it forks, makes pipes, dups
 * and closes fds, closes ranges, and starts /bin/true (fork+exec and
 * posix_spawn).  Under the shim it must behave exactly as without it: the
 * same stdout and stderr (it prints the fd numbers it gets and every result),
 * and no output from the shim at all.
 */
#include "scen.h"
#include <spawn.h>

extern char **environ;

int main(void)
{
    int p[2], q[2];
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    printf("pipes %d %d %d %d\n", p[0], p[1], q[0], q[1]);
    int d = dup(p[0]);
    printf("dup %d dup2 %d dup3 %d fcntl %d\n", d, dup2(p[1], 30), dup3(q[0], 31, O_CLOEXEC),
           fcntl(q[1], F_DUPFD_CLOEXEC, 40));
    int c1 = close(d), c2 = close(30);
    errno = 0;
    int c3 = close(-1), e = errno;
    printf("close %d %d %d errno=%d\n", c1, c2, c3, e);
    printf("close_range %d\n", close_range(31, 40, 0));
    for (int i = 0; i < 3; i++) {
        fflush(stdout);
        pid_t c = fork();
        CHECK(c >= 0);
        if (c == 0) {
            if (i == 0)
                _exit(7);
            if (i == 1) {
                closefrom(3);
                exit(8);
            }
            char *argv[] = {"/bin/true", NULL};
            execve("/bin/true", argv, environ);
            _exit(127);
        }
        int st = reap(c);
        printf("child %d exited %d\n", i, WEXITSTATUS(st));
    }
    pid_t s;
    char *argv[] = {"/bin/true", NULL};
    CHECK(posix_spawn(&s, "/bin/true", NULL, NULL, argv, environ) == 0);
    printf("spawned exited %d\n", WEXITSTATUS(reap(s)));
    fprintf(stderr, "a line on stderr\n");
    int r[2];
    CHECK(pipe(r) == 0);
    printf("last pipe %d %d\n", r[0], r[1]);
    return 0;
}
