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


/* ---------------------------------------------------------------------------
 * Added for epollfork-ps (src/tools/), which reads other processes from
 * outside.  Nothing below is used by the shim; pid > 0 throughout.
 */

/* cb(n, arg) for every numeric entry of /proc (thread-group leaders) or of
 * /proc/PID/task (threads); cb returns nonzero to stop.  0, or -1 (errno). */
int ef_procfs_pids(ef_procfs_fd_cb cb, void *arg);
int ef_procfs_tasks(int pid, ef_procfs_fd_cb cb, void *arg);

/* Every open fd of pid with the text of its /proc/PID/fd link, in one pass:
 * getdents64 and readlinkat on one directory fd (~3 us per fd on the project's
 * VM, against ~5-7 us for a readlink of the full path).  An fd closed between
 * the two calls is left out.  0, or -1 with errno when /proc/PID/fd cannot be
 * opened or its links cannot be read (EACCES: another user, a process that is
 * not dumpable, or one with capabilities the reader lacks: the links need
 * ptrace-read access, the directory does not always). */
typedef int (*ef_procfs_link_cb)(int fd, const char *link, size_t len, void *arg);
int ef_procfs_fd_links(int pid, ef_procfs_link_cb cb, void *arg);

/* The identity of the file behind an fd, or behind /proc/PID/exe: inode and
 * device, the device in the kernel's own encoding (major << 20 | minor), the
 * one fdinfo's `sdev:` shows.  statx(AT_STATX_DONT_SYNC): a network or FUSE
 * file is answered from the cache, never by asking its server (a hung server
 * must not hang the inspector).  0, or -1 (errno). */
int ef_procfs_fd_ident(int pid, int fd, uint64_t *ino, uint32_t *kdev);
int ef_procfs_exe_ident(int pid, uint64_t *ino, uint32_t *kdev);
/* readlink(/proc/PID/exe) into out (NUL-terminated); its length, or -1. */
ssize_t ef_procfs_exe(int pid, char *out, size_t len);

/* Every line of /proc/PID/fdinfo/FD, without its newline; cb returns nonzero
 * to stop (the header lines come first).  Lines longer than 8 KiB are skipped.
 * 0, or -1 (errno) when it cannot be opened. */
typedef int (*ef_procfs_line_cb)(const char *line, size_t len, void *arg);
int ef_procfs_fdinfo_lines(int pid, int fd, ef_procfs_line_cb cb, void *arg);
/* `flags:\t02000002` (octal; O_CLOEXEC is the fd's close-on-exec flag, which
 * fdinfo folds in).  1 and *flags, or 0 when the line is not that. */
int ef_procfs_parse_fdinfo_flags(const char *line, size_t len, unsigned *flags);

/* What /proc/PID/stat says about a process. */
struct ef_proc_stat {
    char comm[64];      /* as the kernel has it (at most 15 bytes), NUL-terminated */
    char state;         /* R S D Z X T t I ... */
    int ppid;
    unsigned long flags; /* PF_* (PF_KTHREAD = 0x00200000) */
};
/* Parse the text of /proc/PID/stat; 1 when well formed, 0 otherwise.  The
 * command name may hold spaces and ')': it ends at the last ')'. */
int ef_procfs_parse_stat(const char *buf, size_t len, struct ef_proc_stat *out);
/* 0, or -1 (errno: ENOENT when the process is gone). */
int ef_procfs_read_stat(int pid, struct ef_proc_stat *out);

/* /proc/PID/task/TID/syscall: `running`, `-1 SP PC` (blocked, not in a system
 * call), or `NR ARG0 ... ARG5 SP PC` (blocked in system call NR).  Reading it
 * needs ptrace-attach permission; it never stops the thread. */
enum ef_task_where {
    EF_TASK_RUNNING = 0,        /* on a CPU: not blocked anywhere */
    EF_TASK_NOT_IN_SYSCALL = 1, /* blocked outside a system call (a fault) */
    EF_TASK_IN_SYSCALL = 2,
};
struct ef_task_syscall {
    enum ef_task_where where;
    long nr;                    /* EF_TASK_IN_SYSCALL only */
    uint64_t args[6];
};
int ef_procfs_parse_syscall(const char *buf, size_t len, struct ef_task_syscall *out);
int ef_procfs_task_syscall(int pid, int tid, struct ef_task_syscall *out);

/* kcmp(KCMP_FILE) with its order: the kernel compares (obfuscated, but
 * consistently) the two open-file pointers and says which is smaller, so fds
 * can be sorted by the open file they are.  -1, 0 (same open file), 1, or -2
 * unknown (errno: EPERM, ESRCH, ENOSYS, EBADF). */
int ef_procfs_kcmp_file_order(int pid1, int fd1, int pid2, int fd2);
/* Is fd of pid the file of the toff-th entry numbered tfd (in the order the
 * fdinfo lists them, which is the order KCMP_EPOLL_TFD counts in) of epoll fd
 * epfd of epoll_pid?  1 yes, 0 no (or no such entry), -1 unknown (errno). */
int ef_procfs_is_registered_at(int pid, int fd, int epoll_pid, int epfd, int tfd, unsigned toff);

#endif /* EF_PROCFS_H */
