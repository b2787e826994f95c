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

/* out gets s at *at, as far as it fits (one byte is kept for the NUL). */
static void put_str(char *out, size_t len, size_t *at, const char *s)
{
    while (*s && *at + 1 < len)
        out[(*at)++] = *s++;
}

static void put_num(char *out, size_t len, size_t *at, long v)
{
    char d[24];
    int n = 0;
    unsigned long u = v < 0 ? 0ul - (unsigned long)v : (unsigned long)v;
    do
        d[n++] = (char)('0' + u % 10);
    while ((u /= 10) && n < 23);
    if (v < 0)
        d[n++] = '-';
    while (n && *at + 1 < len)
        out[(*at)++] = d[--n];
}

/* /proc/PID/DIR/FD (or /proc/self/...) built by hand: this runs at the start
 * of a process that inherited an fd worth a look, where each libc function
 * called first (snprintf is several pages of libc) costs page faults, the
 * dearest thing at start-up (bench/RESULTS.md). */
static void fd_path(char *out, size_t len, int pid, int fd, const char *dir)
{
    size_t at = 0;
    if (!len)
        return;
    put_str(out, len, &at, "/proc/");
    if (pid > 0)
        put_num(out, len, &at, pid);
    else
        put_str(out, len, &at, "self");
    put_str(out, len, &at, "/");
    put_str(out, len, &at, dir);
    put_str(out, len, &at, "/");
    put_num(out, len, &at, fd);
    out[at] = 0;
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

/* cb(n) for every numeric name n >= min in directory path (fds, pids, tids),
 * read with getdents64; skip_own: leave out the fd of the directory itself
 * (reading our own /proc/self/fd). */
static int numbered_entries(const char *path, int min, int skip_own, ef_procfs_fd_cb cb,
                            void *arg)
{
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
            int v = parse_fd_name(d->d_name, d->d_reclen - name_off);
            if (v < min || (skip_own && v == dfd))
                continue;
            stop = cb(v, arg);
        }
    }
    close_fd(dfd);
    return 0;
}

int ef_procfs_fds(int pid, ef_procfs_fd_cb cb, void *arg)
{
    char path[64];
    if (pid > 0)
        snprintf(path, sizeof path, "/proc/%d/fd", pid);
    else
        snprintf(path, sizeof path, "/proc/self/fd");
    return numbered_entries(path, 0, pid <= 0, cb, arg);
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
    int r = ef_procfs_read_entries(fd, cb, arg);
    close_fd(fd);
    return r;
}

/* Every line of the text read from fd, without its newline, to cb (nonzero
 * stops).  Lines longer than the buffer are skipped whole; a last line
 * without its newline counts.  The one line reader of fdinfo files. */
static int read_lines(int fd, ef_procfs_line_cb cb, void *arg)
{
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
            if (!skipping)
                stop = cb(buf + start, i - start, arg);
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
    if (have && !skipping && !stop)
        cb(buf, have, arg);
    return 0;
}

struct entries_arg {
    ef_procfs_tfd_cb cb;
    void *arg;
};

static int entry_line(const char *line, size_t len, void *arg)
{
    struct entries_arg *a = arg;
    struct ef_tfd t;
    return ef_procfs_parse_tfd(line, len, &t) ? a->cb(&t, a->arg) : 0;
}

int ef_procfs_read_entries(int fd, ef_procfs_tfd_cb cb, void *arg)
{
    struct entries_arg a = {cb, arg};
    return read_lines(fd, entry_line, &a);
}

/* ------------------------------------------------------------ fds */

ssize_t ef_procfs_fd_link(int pid, int fd, char *out, size_t len)
{
    char path[64];
    if (!len)
        return -1;
    fd_path(path, sizeof path, pid, fd, "fd");
    ssize_t n = sys(SYS_readlinkat, AT_FDCWD, (long)path, (long)out, (long)(len - 1), 0);
    out[n > 0 ? n : 0] = 0;
    return n > 0 ? n : -1;
}

int ef_procfs_fd_stat(int pid, int fd, struct stat *st)
{
    char path[64];
    fd_path(path, sizeof path, pid, fd, "fd");
    return (int)sys(SYS_newfstatat, AT_FDCWD, (long)path, (long)st, 0, 0);
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

/* ------------------------------------------------------------ epollfork-ps
 *
 * What the inspector (src/tools/) reads about other processes.  The shim links
 * these too and never calls them.  Same rules as above: no malloc, bounded
 * numbers and lines, fds closed with the raw syscall.
 */

int ef_procfs_pids(ef_procfs_fd_cb cb, void *arg)
{
    return numbered_entries("/proc", 1, 0, cb, arg);
}

int ef_procfs_tasks(int pid, ef_procfs_fd_cb cb, void *arg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    return numbered_entries(path, 1, 0, cb, arg);
}

int ef_procfs_fd_links(int pid, ef_procfs_link_cb cb, void *arg)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -1;
    char buf[4096] __attribute__((aligned(8)));
    char link[4097]; /* d_path() gives at most PATH_MAX (4096) bytes */
    int stop = 0;
    while (!stop) {
        long n = sys(SYS_getdents64, dfd, (long)buf, sizeof buf, 0, 0);
        if (n <= 0)
            break;
        for (long off = 0; off < n && !stop;) {
            const struct linux_dirent64 *d = (const struct linux_dirent64 *)(buf + off);
            size_t name_off = offsetof(struct linux_dirent64, d_name);
            if (d->d_reclen <= name_off || off + d->d_reclen > n)
                break;
            off += d->d_reclen;
            int fd = parse_fd_name(d->d_name, d->d_reclen - name_off);
            if (fd < 0)
                continue;
            ssize_t k = sys(SYS_readlinkat, dfd, (long)d->d_name, (long)link, sizeof link - 1, 0);
            if (k < 0 && (errno == EACCES || errno == EPERM)) {
                /* the directory opens but the links do not: the ptrace access
                 * check refused (e.g. the process has capabilities we lack) */
                int e = errno;
                close_fd(dfd);
                errno = e;
                return -1;
            }
            if (k <= 0)
                continue; /* closed since getdents, or no path (ENAMETOOLONG) */
            link[k] = 0;
            stop = cb(fd, link, (size_t)k, arg);
        }
    }
    close_fd(dfd);
    return 0;
}

/* The kernel's dev_t (MINORBITS 20) from statx's major and minor. */
static uint32_t kdev_of(uint32_t major, uint32_t minor)
{
    return (major << 20) | (minor & 0xfffffu);
}

static int ident_of(const char *path, uint64_t *ino, uint32_t *kdev)
{
    struct statx sx;
    if (sys(SYS_statx, AT_FDCWD, (long)path, AT_STATX_DONT_SYNC, STATX_INO, (long)&sx) != 0)
        return -1;
    if (!(sx.stx_mask & STATX_INO)) {
        errno = ENODATA;
        return -1;
    }
    *ino = sx.stx_ino;
    *kdev = kdev_of(sx.stx_dev_major, sx.stx_dev_minor);
    return 0;
}

int ef_procfs_fd_ident(int pid, int fd, uint64_t *ino, uint32_t *kdev)
{
    char path[64];
    fd_path(path, sizeof path, pid, fd, "fd");
    return ident_of(path, ino, kdev);
}

int ef_procfs_exe_ident(int pid, uint64_t *ino, uint32_t *kdev)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    return ident_of(path, ino, kdev);
}

ssize_t ef_procfs_exe(int pid, char *out, size_t len)
{
    char path[64];
    if (!len)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    ssize_t n = readlink(path, out, len - 1);
    out[n > 0 ? n : 0] = 0;
    return n > 0 ? n : -1;
}

int ef_procfs_fdinfo_lines(int pid, int fd, ef_procfs_line_cb cb, void *arg)
{
    char path[64];
    fd_path(path, sizeof path, pid, fd, "fdinfo");
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    int r = read_lines(f, cb, arg);
    close_fd(f);
    return r;
}

int ef_procfs_parse_fdinfo_flags(const char *line, size_t len, unsigned *flags)
{
    if (len < 7 || memcmp(line, "flags:", 6) != 0)
        return 0;
    const char *p = line + 6, *end = line + len;
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    unsigned long v = 0;
    int digits = 0;
    for (; p < end && *p >= '0' && *p <= '7'; p++) {
        if (++digits > 11) /* 32 bits are 11 octal digits */
            return 0;
        v = v * 8 + (unsigned long)(*p - '0');
    }
    if (!digits || p != end || v > 0xffffffffUL)
        return 0;
    *flags = (unsigned)v;
    return 1;
}

/* A decimal number, optionally negative, then a space or the end; moves *pp. */
static int dec_field(const char **pp, const char *end, long long *out)
{
    const char *p = *pp;
    int neg = 0, digits = 0;
    long long v = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (++digits > 18)
            return 0;
        v = v * 10 + (*p - '0');
    }
    if (!digits || (p < end && *p != ' ' && *p != '\n'))
        return 0;
    while (p < end && *p == ' ')
        p++;
    *out = neg ? -v : v;
    *pp = p;
    return 1;
}

int ef_procfs_parse_stat(const char *buf, size_t len, struct ef_proc_stat *out)
{
    const char *end = buf + len, *open_p = memchr(buf, '(', len), *close_p = NULL;
    if (!open_p)
        return 0;
    for (const char *p = open_p; p < end; p++)
        if (*p == ')')
            close_p = p;
    if (!close_p)
        return 0;
    size_t n = (size_t)(close_p - open_p - 1);
    if (n >= sizeof out->comm)
        return 0;
    memset(out, 0, sizeof *out);
    memcpy(out->comm, open_p + 1, n);
    out->comm[n] = 0;
    const char *p = close_p + 1;
    if (end - p < 3 || p[0] != ' ' || p[2] != ' ')
        return 0;
    out->state = p[1];
    p += 3;
    long long v[6]; /* ppid pgrp session tty_nr tpgid flags */
    for (int i = 0; i < 6; i++)
        if (!dec_field(&p, end, &v[i]))
            return 0;
    if (v[0] < 0 || v[0] > 0x7fffffff || v[5] < 0 || v[5] > 0xffffffffLL)
        return 0;
    out->ppid = (int)v[0];
    out->flags = (unsigned long)v[5];
    return 1;
}

/* Read a small /proc file whole; its length, or -1 (errno). */
static ssize_t read_small(const char *path, char *buf, size_t len)
{
    int f = open(path, O_RDONLY | O_CLOEXEC);
    if (f < 0)
        return -1;
    size_t have = 0;
    while (have < len - 1) {
        ssize_t n = read(f, buf + have, len - 1 - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            close_fd(f);
            errno = e;
            return -1;
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    close_fd(f);
    buf[have] = 0;
    return (ssize_t)have;
}

int ef_procfs_read_stat(int pid, struct ef_proc_stat *out)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n <= 0)
        return -1;
    if (!ef_procfs_parse_stat(buf, (size_t)n, out)) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

/* "0x1f" (lowercase hex, as the kernel prints it), then a space or the end. */
static int hex_field(const char **pp, const char *end, uint64_t *out)
{
    const char *p = *pp;
    if (end - p < 3 || p[0] != '0' || p[1] != 'x')
        return 0;
    p += 2;
    int ok = 1;
    *out = num(p, end, 16, &ok);
    if (!ok)
        return 0;
    while (p < end && ((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
        p++;
    if (p < end && *p != ' ' && *p != '\n')
        return 0;
    while (p < end && *p == ' ')
        p++;
    *pp = p;
    return 1;
}

int ef_procfs_parse_syscall(const char *buf, size_t len, struct ef_task_syscall *out)
{
    const char *p = buf, *end = buf + len;
    memset(out, 0, sizeof *out);
    if (len >= 7 && !memcmp(buf, "running", 7)) {
        out->where = EF_TASK_RUNNING;
        return 1;
    }
    long long nr;
    if (!dec_field(&p, end, &nr))
        return 0;
    if (nr == -1) {
        out->where = EF_TASK_NOT_IN_SYSCALL;
        return 1;
    }
    if (nr < 0 || nr > 100000)
        return 0;
    for (int i = 0; i < 6; i++)
        if (!hex_field(&p, end, &out->args[i]))
            return 0;
    out->where = EF_TASK_IN_SYSCALL;
    out->nr = (long)nr;
    return 1;
}

int ef_procfs_task_syscall(int pid, int tid, struct ef_task_syscall *out)
{
    char path[80], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/syscall", pid, tid);
    ssize_t n = read_small(path, buf, sizeof buf);
    if (n <= 0)
        return -1;
    if (!ef_procfs_parse_syscall(buf, (size_t)n, out)) {
        errno = EPROTO;
        return -1;
    }
    return 0;
}

int ef_procfs_kcmp_file_order(int pid1, int fd1, int pid2, int fd2)
{
    long r = sys(SYS_kcmp, my_pid(pid1), my_pid(pid2), KCMP_FILE, (long)fd1, (long)fd2);
    switch (r) {
    case 0: return 0;
    case 1: return -1; /* the kernel's 1: the first is smaller */
    case 2: return 1;
    default:
        if (r >= 0)
            errno = EPROTO; /* 3, "not equal, no order", is not made for files */
        return -2;
    }
}

int ef_procfs_is_registered_at(int pid, int fd, int epoll_pid, int epfd, int tfd, unsigned toff)
{
    struct kcmp_epoll_slot slot = {(uint32_t)epfd, (uint32_t)tfd, toff};
    long r = sys(SYS_kcmp, my_pid(pid), my_pid(epoll_pid), KCMP_EPOLL_TFD, (long)fd,
                 (long)&slot);
    if (r == 0)
        return 1;
    if (r > 0)
        return 0;
    return errno == ENOENT ? 0 : -1;
}
