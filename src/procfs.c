/*
 * procfs.c - the kernel's own word, read from /proc on cold paths only.
 *
 * The fd table can be stale (libc closes fds behind our back: fclose, NSS,
 * getaddrinfo), so before a report the rules ask the kernel: which fds a
 * process has (/proc/PID/fd, read with getdents64: no malloc, unlike
 * opendir), what an epoll instance really holds (/proc/self/fdinfo/EPFD has one
 * `tfd:` line per registration, including the ghosts of closed fds), and
 * whether an fd is an epoll instance (all anon inodes share one inode, so only
 * the link text "anon_inode:[eventpoll]" tells).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ef.h"

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

int ef_proc_fds(int pid, ef_fd_cb cb, void *arg)
{
    char path[64];
    if (pid > 0)
        ef_fmt(path, sizeof path, "/proc/%d/fd", pid);
    else
        ef_fmt(path, sizeof path, "/proc/self/fd");
    int e = errno;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        errno = e;
        return -1;
    }
    char buf[4096] __attribute__((aligned(8)));
    int stop = 0;
    for (;;) {
        long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
        if (n <= 0)
            break;
        for (long off = 0; off < n && !stop;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            if (d->d_name[0] < '0' || d->d_name[0] > '9')
                continue;
            int fd = atoi(d->d_name);
            if (fd == dfd && pid <= 0)
                continue;
            stop = cb(fd, arg);
        }
        if (stop)
            break;
    }
    ef_sys_close(dfd);
    errno = e;
    return 0;
}

static const char *field(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = line; p + n <= end; p++)
        if (!memcmp(p, name, n))
            return p + n;
    return NULL;
}

static uint64_t num(const char *p, const char *end, int base)
{
    uint64_t v = 0;
    while (p < end && *p == ' ')
        p++;
    for (; p < end; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else
            break;
        v = v * (uint64_t)base + (uint64_t)d;
    }
    return v;
}

static int parse_line(const char *line, const char *end, ef_tfd_cb cb, void *arg)
{
    if (end - line < 4 || memcmp(line, "tfd:", 4) != 0)
        return 0;
    struct ef_tfd t;
    memset(&t, 0, sizeof t);
    t.tfd = (int)num(line + 4, end, 10);
    const char *p;
    if ((p = field(line, end, "events:")))
        t.events = (uint32_t)num(p, end, 16);
    if ((p = field(line, end, "data:")))
        t.data = num(p, end, 16);
    if ((p = field(line, end, "ino:")))
        t.ino = num(p, end, 16);
    return cb(&t, arg);
}

int ef_fdinfo_entries(int epfd, ef_tfd_cb cb, void *arg)
{
    char path[64];
    ef_fmt(path, sizeof path, "/proc/self/fdinfo/%d", epfd);
    int e = errno;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        errno = e;
        return -1;
    }
    char buf[8192];
    size_t have = 0;
    int stop = 0;
    for (;;) {
        ssize_t n = read(fd, buf + have, sizeof buf - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        have += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < have && !stop; i++) {
            if (buf[i] != '\n')
                continue;
            stop = parse_line(buf + start, buf + i, cb, arg);
            start = i + 1;
        }
        if (stop)
            break;
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have == sizeof buf) /* a line longer than the buffer: skip it */
            have = 0;
    }
    ef_sys_close(fd);
    errno = e;
    return 0;
}

int ef_fd_is_eventpoll(int pid, int fd)
{
    char path[64], link[64];
    if (pid > 0)
        ef_fmt(path, sizeof path, "/proc/%d/fd/%d", pid, fd);
    else
        ef_fmt(path, sizeof path, "/proc/self/fd/%d", fd);
    int e = errno;
    ssize_t n = readlink(path, link, sizeof link - 1);
    errno = e;
    if (n <= 0)
        return 0;
    link[n] = 0;
    return strcmp(link, "anon_inode:[eventpoll]") == 0;
}
