/*
 * ps.h - epollfork-ps's picture of a running host: processes, their fds, the
 * epoll instances those fds are, and what the kernel shows about each.
 *
 * The shim sees only the programs it was preloaded into from their start.  An
 * operator looking at a server that misbehaves now needs the same answers
 * without a restart, also for static binaries, Go and raw syscalls.  The
 * kernel has them: /proc/PID/fd and fdinfo list every epoll instance and its
 * entries, kcmp(2) says which fds are one open file and whether a file is the
 * one registered in an instance, /proc/PID/task/TID/syscall says who is
 * blocked in a wait.  This tool reads only those (src/procfs.h), never stops
 * or signals anyone, and states as findings only what they show.
 *
 * The files: ps_scan.c reads processes and groups epoll fds into instances,
 * ps_judge.c makes the findings, ps_out.c writes the table and the JSON lines,
 * epollfork_ps.c has the options, --watch and the exit status, ps_util.c the
 * memory, the string arena and the context.
 */
#ifndef EF_PS_H
#define EF_PS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "procfs.h"

/* x86-64 system call numbers of the waits (FACTS.md; arg0 is the epoll fd). */
#define PS_NR_EPOLL_WAIT 232
#define PS_NR_EPOLL_PWAIT 281
#define PS_NR_EPOLL_PWAIT2 441
#define PS_PF_KTHREAD 0x00200000UL /* /proc/PID/stat flags: a kernel thread */
#define PS_O_CLOEXEC 02000000U     /* fdinfo flags: the fd's close-on-exec */

enum ps_fd_kind { FK_OTHER = 0, FK_EPOLL, FK_SOCKET, FK_PIPE };

/* One open fd of an inspected process. */
struct ps_fd {
    int fd;
    uint8_t kind;     /* enum ps_fd_kind */
    int8_t ident;     /* inode/device: 1 known, 0 not read yet, -1 unreadable */
    int8_t cloexec;   /* epoll fds: 1, 0, or -1 unknown */
    uint32_t dev;     /* kernel encoding (major << 20 | minor), as fdinfo's sdev */
    uint64_t ino;
    uint32_t link;    /* offset of the /proc/PID/fd link text in the arena */
    int inst;         /* epoll fds: index of its instance, else -1 */
};

enum ps_proc_state { PROC_INSPECTED = 0, PROC_SKIPPED, PROC_GONE };

/* A thread blocked in an epoll wait: tid, the epoll fd it waits on, which call. */
struct ps_wait {
    int tid;
    int epfd;
    long nr;
};

struct ps_proc {
    int pid, ppid;
    char comm[64];
    enum ps_proc_state state;
    const char *why;          /* PROC_SKIPPED: the reason, one line */
    int selected;             /* named on the command line (or all) */
    struct ps_fd *fds;        /* sorted by fd */
    size_t nfds, nepoll;
    int idented;              /* identities of its fds read */
    int kcmp_bad;             /* kcmp on its fds fails: not grouped */
    int exe_read;             /* 0 not yet, 1 read, -1 unreadable */
    uint32_t exe;             /* arena offset of the /proc/PID/exe link */
    uint64_t exe_ino;
    uint32_t exe_dev;
    int waits_read;           /* 0 not yet, 1 read, -1 unreadable (permission) */
    struct ps_wait *waits;    /* blocked in a wait now */
    size_t nwaits;
    struct ps_wait *seen;     /* --watch: seen blocked at some sample */
    size_t nseen;
    int mark;                 /* scratch for ps_judge.c */
};

/* An fd of an instance: the process (index) and its fd number. */
struct ps_ref {
    int proc;
    int fd;
};

/* (pid, fd) where a file was found open. */
struct ps_where {
    int pid;
    int fd;
};

struct ps_entry {
    struct ef_tfd t;          /* as fdinfo shows it */
    unsigned toff;            /* its rank among the entries numbered t.tfd */
    uint32_t target;          /* arena offset: what the file is */
    int8_t stale;             /* 1, 0, -1 not judged */
    struct ps_where *open_in; /* holders that have the file open (kcmp) */
    size_t nopen_in;
    struct ps_where *kept_by; /* other processes that keep it open */
    size_t nkept_by;
    int *reused_in;           /* pids whose fd t.tfd is another file */
    size_t nreused_in;
};

enum ps_finding_kind { F_SHARED_WAITED = 0, F_STALE, F_REUSED, F_EXEC };
const char *ps_finding_name(enum ps_finding_kind k);

struct ps_finding {
    enum ps_finding_kind kind;
    int tfd;                  /* entry findings: the entry's number, else -1 */
    int *pids;                /* the processes it is about */
    size_t npids;
    char *detail;
};

struct ps_inst {
    struct ps_ref *refs;      /* sorted by pid, then fd; refs[0] reads fdinfo */
    size_t nrefs, nholders;
    int alone;                /* kcmp could not say what it is one with */
    int ents_read;            /* 1 read, 0 not (fdinfo unreadable) */
    struct ps_entry *ents;
    size_t nents;
    struct ps_finding *finds;
    size_t nfinds;
    char **notes;
    size_t nnotes;
    int selected;             /* a holder was selected */
};

struct ps_opts {
    int json, all, watch;
    double watch_seconds;
    int *pids;                /* named PIDs */
    size_t npids;
    int *trees;               /* --tree PIDs */
    size_t ntrees;
};

struct ps_ctx {
    const struct ps_opts *o;
    struct ps_proc *procs;    /* sorted by pid */
    size_t nprocs;
    struct ps_inst *insts;
    size_t ninsts;
    char *arena;              /* link texts and descriptions, NUL-separated */
    size_t alen, acap;
    uint32_t pipefs_dev, sockfs_dev;
    int kcmp_errno;           /* kcmp(2) unusable here: why; 0 when it works */
    size_t uninspected;       /* processes (anywhere) that could not be read */
    struct {
        int pid;
        char comm[64];
    } unseen[4];              /* the first of them, for the texts */
    size_t gone;              /* processes that exited while we looked */
    char **notes;             /* about the whole run */
    size_t nnotes;
    int self;
};

/* ps_util.c */
void *ps_alloc(size_t n, size_t size);
void ps_oom(void) __attribute__((noreturn));
/* Room for one more element in an array of n: the capacity is implicit (n
 * rounded up to a power of two, at least 4), so arrays need no cap field. */
void *ps_push(void *arr, size_t n, size_t size);
#define PS_PUSH(arr, n) ((arr) = ps_push((arr), (n), sizeof *(arr)), &(arr)[(n)++])
uint32_t ps_str(struct ps_ctx *c, const char *s, size_t len);
static inline const char *ps_at(const struct ps_ctx *c, uint32_t off)
{
    return c->arena + off;
}
char *ps_fmt(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ps_note(char ***notes, size_t *n, char *msg);
void ps_uninspected(struct ps_ctx *c, int pid, const char *comm);
char *ps_unseen_list(const struct ps_ctx *c);

void ps_ctx_init(struct ps_ctx *c, const struct ps_opts *o);
void ps_ctx_free(struct ps_ctx *c);
void ps_free_entries(struct ps_entry *e, size_t n);

/* ps_scan.c */
void ps_scan(struct ps_ctx *c);
void ps_group(struct ps_ctx *c);
int ps_read_entries(struct ps_ctx *c, const struct ps_ref *rep, struct ps_entry **out, size_t *n);
void ps_read_waits(struct ps_ctx *c, struct ps_proc *p, struct ps_wait **out, size_t *n);
struct ps_proc *ps_proc_by_pid(struct ps_ctx *c, int pid);
struct ps_fd *ps_fd_of(const struct ps_proc *p, int fd);
int ps_is_wait_nr(long nr);
const char *ps_wait_name(long nr);

/* ps_judge.c */
void ps_judge(struct ps_ctx *c);
int ps_inst_shown(const struct ps_ctx *c, const struct ps_inst *in);

/* ps_out.c */
size_t ps_events_str(uint32_t ev, char *buf, size_t len);
void ps_out_json(FILE *f, struct ps_ctx *c, double elapsed);
void ps_out_table(FILE *f, struct ps_ctx *c, double elapsed);
void ps_json_str(FILE *f, const char *s);
void ps_text_str(FILE *f, const char *s);
size_t ps_findings(const struct ps_ctx *c);

#endif /* EF_PS_H */
