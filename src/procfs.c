/*
 * procfs.c - the kernel's own word, read from /proc and kcmp(2), cold paths only.
 *
 * The shim's fd table can be stale (libc closes fds behind our back: fclose,
 * NSS, getaddrinfo), so before a report the rules ask the kernel: which fds a
 * process has (/proc/PID/fd, read with getdents64: no malloc, unlike opendir),
 * what an epoll instance really holds (/proc/PID/fdinfo/EPFD has one `tfd:`
 * line per entry, including the ghosts of closed fds), whether an fd is an
 * epoll instance, whether two fds are one open file (kcmp), and whether a
 * process is alive.  epollfork-ps reads running processes with the same code.
 *
 * Standalone (procfs.h): no other epollfork header, its own formatting, and
 * fds closed with the raw syscall (inside the shim, a close() of ours would
 * go through the shim's own close wrapper, and syscall() through its syscall
 * wrapper).  Every value read from the kernel
 * is parsed as untrusted text: bounded numbers, bounded lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "procfs.h"

/* A raw syscall, -1 and errno on failure like syscall(2).  Not libc's
 * syscall(): inside the shim that name is a wrapper (wrap.c), which the
 * shim's own calls must never enter. */
static long sys(long n, long a, long b, long c, long d, long e)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8)
                     : "rcx", "r11", "memory");
    if ((unsigned long)r > -4096ul) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

static void close_fd(int fd)
{
    (void)sys(SYS_close, fd, 0, 0, 0, 0);
}

static void fd_path(char *out, size_t len, int pid, int fd, const char *dir)
{
    if (pid > 0)
        snprintf(out, len, "/proc/%d/%s/%d", pid, dir, fd);
    else
        snprintf(out, len, "/proc/self/%s/%d", dir, fd);
}

struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

/* A decimal fd number of at most 10 digits that fits an int; -1 otherwise. */
static int parse_fd_name(const char *s, size_t max)
{
    long v = 0;
    size_t i = 0;
    for (; i < max && s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 10)
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return i == 0 || v > 0x7fffffffL ? -1 : (int)v;
}

int ef_procfs_fds(int pid, ef_procfs_fd_cb cb, void *arg)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/fd", pid);
    else
        snprintf(path, sizeof path, "/proc/self/fd");
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    char buf[4096] __attribute__((aligned(8)));
    int stop = 0;
    while (!stop) {
        long n = sys(SYS_getdents64, dfd, (long)buf, sizeof buf, 0, 0);
        if (n <= 0)
            break;
        for (long off = 0; off < n && !stop;) {
            const struct linux_dirent64 *d = (const struct linux_dirent64 *)(buf + off);
            size_t name_off = offsetof(struct linux_dirent64, d_name);
            if (d->d_reclen <= name_off || off + d->d_reclen > n)
                break; /* never trust a record length */
            off += d->d_reclen;
            int fd = parse_fd_name(d->d_name, d->d_reclen - name_off);
            if (fd < 0 || (fd == dfd && pid <= 0))
                continue;
            stop = cb(fd, arg);
        }
    }
    close_fd(dfd);
    return 0;
}

/* ------------------------------------------------------------ fdinfo */

static const char *field(const char *line, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = line; p + n <= end; p++)
        if (!memcmp(p, name, n))
            return p + n;
    return NULL;
}

/* A number of at most 16 hex or 20 decimal digits, after optional spaces;
 * 0 when there are none (ok set to 0), saturating never wraps. */
static uint64_t num(const char *p, const char *end, int base, int *ok)
{
    uint64_t v = 0;
    int digits = 0;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    for (; p < end; p++) {
        int d;
        if (*p >= '0' && *p <= '9')
            d = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f')
            d = *p - 'a' + 10;
        else
            break;
        if (++digits > (base == 16 ? 16 : 19)) {
            *ok = 0;
            return 0;
        }
        v = v * (uint64_t)base + (uint64_t)d;
    }
    if (!digits)
        *ok = 0;
    return v;
}

int ef_procfs_parse_tfd(const char *line, size_t len, struct ef_tfd *out)
{
    const char *end = line + len;
    if (len < 4 || memcmp(line, "tfd:", 4) != 0)
        return 0;
    memset(out, 0, sizeof *out);
    int ok = 1;
    uint64_t tfd = num(line + 4, end, 10, &ok);
    if (!ok || tfd > 0x7fffffff)
        return 0;
    out->tfd = (int)tfd;
    const char *p;
    if (!(p = field(line, end, "events:")))
        return 0;
    out->events = (uint32_t)num(p, end, 16, &ok);
    if ((p = field(line, end, "data:")))
        out->data = num(p, end, 16, &ok);
    if ((p = field(line, end, "pos:")))
        out->pos = num(p, end, 10, &ok);
    if ((p = field(line, end, "ino:")))
        out->ino = num(p, end, 16, &ok);
    if ((p = field(line, end, "sdev:")))
        out->sdev = num(p, end, 16, &ok);
    return ok;
}

int ef_procfs_epoll_entries(int pid, int epfd, ef_procfs_tfd_cb cb, void *arg)
{
    char path[64];
    fd_path(path, sizeof path, pid, epfd, "fdinfo");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    char buf[8192];
    size_t have = 0;
    int stop = 0, skipping = 0;
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
            struct ef_tfd t;
            if (!skipping && ef_procfs_parse_tfd(buf + start, i - start, &t))
                stop = cb(&t, arg);
            skipping = 0;
            start = i + 1;
        }
        if (stop)
            break;
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have == sizeof buf) { /* a line longer than the buffer: skip it */
            have = 0;
            skipping = 1;
        }
    }
    close_fd(fd);
    return 0;
}

/* ------------------------------------------------------------ fds */

ssize_t ef_procfs_fd_link(int pid, int fd, char *out, size_t len)
{
    char path[64];
    if (!len)
        return -1;
    fd_path(path, sizeof path, pid, fd, "fd");
    ssize_t n = readlink(path, out, len - 1);
    out[n > 0 ? n : 0] = 0;
    return n > 0 ? n : -1;
}

int ef_procfs_fd_stat(int pid, int fd, struct stat *st)
{
    char path[64];
    fd_path(path, sizeof path, pid, fd, "fd");
    return stat(path, st);
}

int ef_procfs_fd_is_eventpoll(int pid, int fd)
{
    char link[64];
    return ef_procfs_fd_link(pid, fd, link, sizeof link) > 0 &&
           strcmp(link, "anon_inode:[eventpoll]") == 0;
}

/* ------------------------------------------------------------ processes */

int ef_procfs_pid_exists(int pid)
{
    if (pid <= 0)
        return 0;
    return kill(pid, 0) == 0 || errno == EPERM;
}

enum ef_pid_state ef_procfs_pid_state(int pid)
{
    if (!ef_procfs_pid_exists(pid))
        return EF_PID_GONE;
    char path[64], buf[512];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return EF_PID_RUNNING; /* exists; /proc hidden from us */
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close_fd(fd);
    if (n <= 0)
        return EF_PID_RUNNING;
    buf[n] = 0;
    const char *p = strrchr(buf, ')'); /* the command name may hold ')' */
    if (p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'))
        return EF_PID_ZOMBIE;
    return EF_PID_RUNNING;
}

/* ------------------------------------------------------------ kcmp */

static int my_pid(int pid)
{
    return pid > 0 ? pid : (int)sys(SYS_getpid, 0, 0, 0, 0, 0);
}

int ef_procfs_same_file(int pid1, int fd1, int pid2, int fd2)
{
    long r = sys(SYS_kcmp, my_pid(pid1), my_pid(pid2), KCMP_FILE, fd1, fd2);
    if (r < 0)
        return -1;
    return r == 0 ? 0 : 1;
}

int ef_procfs_is_registered(int pid, int fd, int epoll_pid, int epfd, int tfd)
{
    struct kcmp_epoll_slot slot = {(uint32_t)epfd, (uint32_t)tfd, 0};
    int unknown = 0;
    for (slot.toff = 0; slot.toff < 4; slot.toff++) {
        long r = sys(SYS_kcmp, my_pid(pid), my_pid(epoll_pid), KCMP_EPOLL_TFD, fd, (long)&slot);
        if (r == 0)
            return 1;
        if (r < 0) {
            unknown = errno != ENOENT;
            break;
        }
    }
    return unknown ? -1 : 0;
}
