/*
 * scen.h - helpers shared by the scenario programs (header-only).
 *
 * Scenario programs are small, deterministic and bounded: when one process
 * must act while another is blocked in epoll_wait, it waits until the kernel
 * says so (/proc/PID/wchan) instead of sleeping a guessed time.
 */
#ifndef SCEN_H
#define SCEN_H
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        if (!(x)) {                                                                \
            fprintf(stderr, "%s:%d: check failed: %s (errno %d)\n", __FILE__,      \
                    __LINE__, #x, errno);                                          \
            exit(99);                                                              \
        }                                                                          \
    } while (0)

static inline void msleep(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Wait (up to 10 s) until some thread of pid sleeps in an epoll wait. */
static inline int wait_blocked_in_epoll(pid_t pid)
{
    char path[300], buf[128];
    for (int i = 0; i < 1000; i++) {
        snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        struct dirent *de;
        while (d && (de = readdir(d))) {
            if (de->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "/proc/%d/task/%s/wchan", (int)pid, de->d_name);
            int fd = open(path, O_RDONLY);
            if (fd < 0)
                continue;
            ssize_t n = read(fd, buf, sizeof buf - 1);
            close(fd);
            if (n > 0) {
                buf[n] = 0;
                if (strstr(buf, "epoll")) {
                    closedir(d);
                    return 1;
                }
            }
        }
        if (d)
            closedir(d);
        msleep(10);
    }
    return 0;
}

/* Interest entries in all of this process's epoll instances, as the kernel
 * lists them (/proc/self/fdinfo): what a child's change did to our lists. */
static inline int epoll_entries_total(void)
{
    int total = 0;
    char path[64], buf[8192];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, buf, sizeof buf - 1);
        if (k <= 0)
            continue;
        buf[k] = 0;
        if (strcmp(buf, "anon_inode:[eventpoll]"))
            continue;
        snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
        int f = open(path, O_RDONLY);
        if (f < 0)
            continue;
        ssize_t n = read(f, buf, sizeof buf - 1);
        close(f);
        buf[n > 0 ? n : 0] = 0;
        for (char *l = buf; (l = strstr(l, "tfd:")); l += 4)
            total++;
    }
    return total;
}

static inline int make_pipe(int p[2])
{
    return pipe(p);
}

static inline void add_fd(int ep, int fd, unsigned events)
{
    struct epoll_event ev = {.events = events, .data.fd = fd};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
}

static inline int reap(pid_t c)
{
    int st = 0;
    while (waitpid(c, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

/* The seed's conflict in its smallest form: a child deletes fd from the shared
 * list and exits; the parent then waits on the list (and finds nothing). */
static inline void child_deletes_parent_waits(int ep, int fd)
{
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) == 0);
        _exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0);
}
#endif
