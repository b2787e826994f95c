/*
 * take_socket.c - after its first epoll use, the program dup2()s the read end
 * of a pipe of its own over every socket in /proc/self/fd that it did not
 * open (under EPOLLFORK_LOG=journal, the shim's connection to journald) and
 * keeps it there, 64 known bytes in the pipe.  Then the conflict of
 * ctl_child.c 'del', reported by the parent with full stacks (libunwind must
 * not be given up because a socket of the shim's was taken), and each taken
 * number must still be the program's read end holding exactly its 64 bytes.
 * Prints "taken: N" and "damaged: N".
 * Expected: rc 0 and one report (DEL, use epoll_wait, reporter the parent).
 */
#include "scen.h"
#include <dirent.h>

static const char pattern[] = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF";

int main(void)
{
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0); /* the shim's sinks exist from here */
    int taken[16], n = 0;
    DIR *d = opendir("/proc/self/fd");
    CHECK(d);
    struct dirent *de;
    while ((de = readdir(d)) && n < 16) {
        char path[300], target[300];
        snprintf(path, sizeof path, "/proc/self/fd/%s", de->d_name);
        ssize_t k = readlink(path, target, sizeof target - 1);
        if (de->d_name[0] == '.' || k <= 0)
            continue;
        target[k] = 0;
        if (!strncmp(target, "socket:", 7))
            taken[n++] = atoi(de->d_name);
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int q[2];
        CHECK(pipe(q) == 0);
        CHECK(write(q[1], pattern, 64) == 64);
        CHECK(dup2(q[0], taken[i]) == taken[i]);
        CHECK(close(q[0]) == 0 && close(q[1]) == 0);
    }
    child_deletes_parent_waits(ep, p[0]);
    int damaged = 0;
    for (int i = 0; i < n; i++) {
        char buf[128];
        CHECK(fcntl(taken[i], F_SETFL, O_NONBLOCK) == 0);
        ssize_t k = read(taken[i], buf, sizeof buf);
        if (k != 64 || memcmp(buf, pattern, 64) != 0) {
            printf("fd %d: read %zd\n", taken[i], k);
            damaged++;
        }
    }
    printf("taken: %d\ndamaged: %d\n", n, damaged);
    return 0;
}
