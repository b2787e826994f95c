/*
 * procfs.h - the kernel's own word about processes, fds and epoll instances.
 *
 * Standalone on purpose: it includes no other epollfork header, so the shim's
 * rules (stale registrations, exec leaks, liveness of holders) and the
 * inspection tool (epollfork-ps, which is never preloaded) read the kernel the
 * same way.  Everything here is a cold path: it opens files under /proc or asks
 * kcmp(2), does not malloc, and does not touch errno's meaning for the caller
 * beyond what a failed call sets (entry points of the shim restore errno).
 *
 * pid <= 0 means "this process" (/proc/self) throughout.
 */
#ifndef EF_PROCFS_H
#define EF_PROCFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Call cb(fd, arg) for every open fd of pid (/proc/PID/fd, read with
 * getdents64); cb returns nonzero to stop.  0, or -1 when unreadable. */
typedef int (*ef_procfs_fd_cb)(int fd, void *arg);
int ef_procfs_fds(int pid, ef_procfs_fd_cb cb, void *arg);

/* One interest entry of an epoll instance, as /proc/PID/fdinfo/EPFD shows it:
 * `tfd: N events: HEX data: HEX pos:N ino:HEX sdev:HEX`. */
struct ef_tfd {
    int tfd;
    uint32_t events;    /* includes EPOLLERR|EPOLLHUP and the private bits */
    uint64_t data;
    uint64_t pos;
    uint64_t ino;
    uint64_t sdev;
};
/* Parse one fdinfo line (without its newline).  1 and *out filled when it is
 * a well-formed `tfd:` line, 0 otherwise.  Pure: the fuzz target's entry. */
int ef_procfs_parse_tfd(const char *line, size_t len, struct ef_tfd *out);
typedef int (*ef_procfs_tfd_cb)(const struct ef_tfd *t, void *arg);
/* Every entry of epoll fd epfd of pid; cb returns nonzero to stop.  0, or -1
 * when the fdinfo cannot be read. */
int ef_procfs_epoll_entries(int pid, int epfd, ef_procfs_tfd_cb cb, void *arg);
/* The same, reading fdinfo text from an open fd (the fuzz target's entry). */
int ef_procfs_read_entries(int fd, ef_procfs_tfd_cb cb, void *arg);

/* Is fd of pid an epoll instance?  All anon inodes share one inode, so only the
 * link text "anon_inode:[eventpoll]" tells. */
int ef_procfs_fd_is_eventpoll(int pid, int fd);
/* readlink(/proc/PID/fd/FD) into out (NUL-terminated); its length, or -1. */
ssize_t ef_procfs_fd_link(int pid, int fd, char *out, size_t len);
/* stat(2) of what /proc/PID/fd/FD refers to; 0 or -1. */
struct stat;
int ef_procfs_fd_stat(int pid, int fd, struct stat *st);

/* Liveness of a process, from kill(pid, 0) and /proc/PID/stat. */
enum ef_pid_state {
    EF_PID_GONE = 0,     /* no such process (ESRCH), or pid <= 0 */
    EF_PID_RUNNING = 1,  /* exists and is not a zombie (or we cannot tell) */
    EF_PID_ZOMBIE = 2,   /* exited, not yet reaped: it holds nothing any more */
};
/* kill(pid, 0) only: exists (EPERM counts as existing).  Cheap. */
int ef_procfs_pid_exists(int pid);
/* Exists and is not a zombie: reads /proc/PID/stat. */
enum ef_pid_state ef_procfs_pid_state(int pid);

/* kcmp(2).  0 same, 1 different, -1 unknown (EPERM, ESRCH, ENOSYS, EBADF:
 * containers may filter kcmp; a process may be non-dumpable). */
int ef_procfs_same_file(int pid1, int fd1, int pid2, int fd2);
/* Is fd of pid the file registered as `tfd` in epoll fd epfd of epoll_pid?
 * (KCMP_EPOLL_TFD, trying the first few entries with that number: after a
 * close-without-DEL an instance can hold two entries for one number.)
 * 1 yes, 0 no, -1 unknown. */
int ef_procfs_is_registered(int pid, int fd, int epoll_pid, int epfd, int tfd);

#endif /* EF_PROCFS_H */
