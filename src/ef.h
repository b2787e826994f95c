/*
 * ef.h - the internal interfaces of epollfork, in one place.
 *
 * The shim is split by responsibility (see ../shared/STYLE.md): wrap.c holds the
 * exported libc names and nothing else; track.c holds every rule about epoll
 * instances, forks and conflicts and can be linked into a unit test without
 * LD_PRELOAD; registry.c is the memory shared by a process tree; fdtable.c the
 * per-process fd map; stack.c captures backtraces and keeps them in a depot;
 * symbolize.c turns addresses into names at report time; report.c renders one
 * record as text or JSON; log.c owns the output fds; options.c reads EPOLLFORK_*
 * once.  Everything internal is hidden (-fvisibility=hidden + version script).
 */
#ifndef EF_H
#define EF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "procfs.h"

#include "epollfork_version.h"
#define EF_VERSION EPOLLFORK_VERSION_STRING

#define EF_LIKELY(x) __builtin_expect(!!(x), 1)
#define EF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define EF_TLS __thread __attribute__((tls_model("initial-exec")))
#if defined(__x86_64__) || defined(__i386__)
#define ef_cpu_relax() __builtin_ia32_pause()
#else
#define ef_cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/* ------------------------------------------------------------------ real.c */
struct ef_real {
    int (*close)(int);
    int (*close_range)(unsigned, unsigned, int);
    void (*closefrom)(int);
    int (*dup)(int);
    int (*dup2)(int, int);
    int (*dup3)(int, int, int);
    int (*fcntl)(int, int, ...);
    int (*fcntl64)(int, int, ...);
    pid_t (*fork)(void);
    pid_t (*_Fork)(void);
    pid_t (*vfork)(void);
    int (*epoll_create)(int);
    int (*epoll_create1)(int);
    int (*epoll_ctl)(int, int, int, void *);
    int (*epoll_wait)(int, void *, int, int);
    int (*epoll_pwait)(int, void *, int, int, const void *);
    int (*epoll_pwait2)(int, void *, int, const void *, const void *);
    int (*socket)(int, int, int);
    int (*socketpair)(int, int, int, int *);
    int (*accept)(int, void *, void *);
    int (*accept4)(int, void *, void *, int);
    int (*pipe)(int *);
    int (*pipe2)(int *, int);
    int (*eventfd)(unsigned, int);
    int (*timerfd_create)(int, int);
    int (*execve)(const char *, char *const *, char *const *);
    int (*execvpe)(const char *, char *const *, char *const *);
    int (*fexecve)(int, char *const *, char *const *);
};
extern struct ef_real ef_real;
void ef_real_resolve(void);
extern void *ef_vfork_fn;               /* the real vfork, for vfork_x86_64.S */
/* Syscall-level helpers that never re-enter a wrapper and keep errno. */
int ef_sys_close(int fd);
pid_t ef_sys_getpid(void);
pid_t ef_sys_getppid(void);

/* --------------------------------------------------------------- options.c */
enum ef_format { EF_FMT_TEXT = 0, EF_FMT_JSON = 1 };
enum ef_on_report { EF_ON_WARN = 0, EF_ON_ABORT = 1 };
struct ef_options {
    char log[4096];     /* "stderr" or a path, may hold %p */
    int format;         /* enum ef_format */
    int on_report;      /* enum ef_on_report */
    int stack_depth;    /* frames per stack */
    int disable;        /* pure pass-through */
    int dedup;          /* 1: one print per identical report per process tree */
    char suppressions[4096]; /* path of the suppressions file, "" none */
};
extern struct ef_options ef_opt;
/* Parse EPOLLFORK_* from envp (NULL: the process environment). Complaints are
 * appended to err (one line each) so that the caller decides where they go. */
void ef_options_parse(char *const *envp, char *err, size_t errlen);
/* For documentation checks: print the option table. */
void ef_options_print_table(int fd);

/* ----------------------------------------------------------------- fdtable.c */
#define EF_FD_EPOLL   0x1u   /* the fd is an alias of an epoll instance */
#define EF_FD_OWNED   0x4u   /* the shim's own fd (log sink): hidden from the program */
#define EF_FD_REG     0x8u   /* registered (ADD) in some instance */
#define EF_FD_DUPED   0x10u  /* dup'ed, or made by a dup: its description may have copies */
#define EF_FD_MULTI   0x20u  /* also registered in other instances (track.c's side table) */
struct ef_fd {
    _Atomic uint32_t flags;
    _Atomic uint32_t inst;      /* epoll fd: instance index */
    _Atomic uint32_t inst_uid;  /* epoll fd: uid of that instance */
    _Atomic uint32_t add_stack; /* registered fd: depot id of its last ADD */
    _Atomic uint32_t reg_inst;  /* registered fd: instance of its last ADD */
    _Atomic uint32_t reg_uid;   /* registered fd: uid of that instance */
    _Atomic int32_t add_pid;    /* registered fd: process that did that ADD */
    _Atomic uint32_t born;      /* fork epoch when a wrapped call created it, 0 unknown */
};
#define EF_FD_MAX (1u << 26)
/* Lookup without allocating; NULL when the fd never had an entry.  Inline:
 * every wrapper does it, on the hot path. */
#define EF_FD_PAGE_BITS 12
extern struct ef_fd *_Atomic ef_l1[EF_FD_MAX >> EF_FD_PAGE_BITS];
static inline struct ef_fd *ef_fd_peek(int fd)
{
    if (EF_UNLIKELY((unsigned)fd >= EF_FD_MAX))
        return NULL;
    struct ef_fd *p = atomic_load_explicit(&ef_l1[(unsigned)fd >> EF_FD_PAGE_BITS],
                                           memory_order_acquire);
    return p ? &p[(unsigned)fd & ((1u << EF_FD_PAGE_BITS) - 1)] : NULL;
}
/* Lookup, allocating the page; NULL when fd is out of range or mmap failed. */
struct ef_fd *ef_fd_get(int fd);
/* Call fn for every fd in [lo, hi] that has a non-empty entry. */
void ef_fd_foreach(unsigned lo, unsigned hi, void (*fn)(int fd, struct ef_fd *e, void *arg),
                   void *arg);
size_t ef_fd_bytes(void);

/* ---------------------------------------------------------------- registry.c */
#define EF_MAX_INST   16384
#define EF_HOLDERS    32
#define EF_RING       16
#define EF_MAX_PROC   65536
#define EF_DEPOT_SLOTS (1u << 16)
#define EF_DEPOT_FRAMES (1u << 21)
#define EF_DEDUP_SLOTS (1u << 14)
#define EF_MAX_FRAMES 64

/* holder slot word: pid << 32 | number of threads of pid blocked in a wait */
#define EF_RESERVED 0x80000000u

struct ef_target {
    uint32_t mode;
    uint32_t valid;
    uint64_t dev, ino, rdev;
};

/* One successful epoll_ctl on an instance that other processes may rely on. */
struct ef_change {
    _Atomic uint64_t seq;       /* generation of this record, written last */
    int32_t pid;                /* the modifier */
    uint32_t proc;              /* the modifier's process record */
    int32_t op, epfd, fd;
    uint32_t events;
    uint64_t data;
    uint32_t call_stack, add_stack;
    uint32_t add_proc;          /* process that did the ADD (0 unknown) */
    uint32_t flags;             /* EF_CHG_* */
    uint64_t time_ns;           /* CLOCK_REALTIME */
    struct ef_target target;
};
#define EF_CHG_UNSAFE_STACK 0x1u  /* call stack cut to one frame (see stack.c) */

struct ef_inst {
    _Atomic uint32_t state;     /* 0 free, 1 live */
    _Atomic uint32_t uid;       /* bumped at each allocation */
    _Atomic uint32_t crossed;   /* held by a process that forked */
    _Atomic uint32_t nholders;  /* occupied holder slots */
    _Atomic uint32_t overflow;  /* a holder found no slot */
    _Atomic uint32_t allowed;   /* epollfork_allow_shared(): shared on purpose */
    int32_t owner_pid;
    uint32_t owner_proc;
    uint32_t create_stack;
    int32_t create_fd;
    int32_t create_how;         /* 0 epoll_create, 1 epoll_create1, 2 adopted */
    int32_t create_flags;
    _Atomic uint64_t gen;       /* recorded changes so far */
    _Atomic uint64_t holders[EF_HOLDERS];
    struct ef_change ring[EF_RING];
};

struct ef_proc {
    _Atomic int32_t pid;
    uint32_t parent;            /* process record of the parent, 0 none */
    uint32_t fork_stack;        /* where the parent forked this process */
    uint32_t depth;
    uint32_t fork_how;          /* EF_FORK_* */
    uint32_t pad;
};
enum { EF_FORK_ROOT = 0, EF_FORK_FORK, EF_FORK_ATFORK, EF_FORK_UNSEEN, EF_FORK_UNDERSCORE };

struct ef_depot_slot {
    _Atomic uint64_t hash;      /* 0 empty */
    _Atomic uint32_t state;     /* 0 empty, 1 writing, 2 ready */
    uint32_t start;             /* index into frames */
    uint32_t n;
    uint32_t pad;
};

struct ef_registry {
    uint64_t magic;
    _Atomic uint32_t ninst_hw;          /* high-water mark of instance indexes */
    _Atomic uint32_t nproc;
    _Atomic uint32_t depot_frames_used;
    _Atomic uint32_t notices;           /* EF_NOTICE_* already printed, tree-wide */
    _Atomic uint64_t free_head;         /* tagged free list of instances */
    _Atomic uint32_t inst_next[EF_MAX_INST];
    struct ef_proc procs[EF_MAX_PROC];
    struct ef_depot_slot depot[EF_DEPOT_SLOTS];
    _Atomic uint64_t dedup[EF_DEDUP_SLOTS];
    uint64_t frames[EF_DEPOT_FRAMES];
    struct ef_inst inst[EF_MAX_INST];
};
#define EF_NOTICE_INST_FULL  0x1u
#define EF_NOTICE_PROC_FULL  0x2u
#define EF_NOTICE_DEPOT_FULL 0x4u
#define EF_NOTICE_HOLDERS    0x8u
#define EF_NOTICE_FD_RANGE   0x10u
#define EF_NOTICE_NO_UNWIND  0x20u

extern struct ef_registry *ef_reg;
int ef_registry_create(void);          /* 0 ok, -1 failed (tracking off) */
struct ef_inst *ef_inst_alloc(uint32_t *idx);
void ef_inst_free(uint32_t idx);
uint32_t ef_inst_prune(uint32_t idx);  /* drop dead holders; returns live ones */
uint32_t ef_proc_alloc(pid_t pid, uint32_t parent, uint32_t fork_stack, uint32_t how);
struct ef_proc *ef_proc_at(uint32_t idx);
/* Try to insert a 64-bit key in the tree-wide dedup set; 1 if new. */
int ef_dedup_insert(uint64_t key);
/* One-time tree-wide notice; returns 1 the first time bit is raised. */
int ef_notice_once(uint32_t bit);

extern EF_TLS int ef_in_shim;            /* re-entrancy guard (track.c) */

/* ------------------------------------------------------------------- stack.c */
enum ef_skip { EF_SKIP_SHIM = 0, EF_SKIP_SHIM_AND_ONE = 1 };
/* Capture the calling stack into the depot; returns its id (0 none). */
uint32_t ef_stack_capture(enum ef_skip skip, void *caller);
int ef_stack_last_cut(void);        /* did this thread's last capture stop at one frame? */
uint32_t ef_stack_from_raw(void *const *raw, int n);
extern int (*ef_bt)(void **, int);  /* libunwind's unw_backtrace, when usable here */
extern EF_TLS int ef_unwinding;
/* Unwind from the caller's own frame (a wrapper): every frame of ours that
 * libunwind walks costs ~100 instructions, so a wrapper that captures a
 * stack itself saves the frames of track.c and stack.c.  0 when unwinding is
 * not available here (then the events capture, with the usual fallbacks). */
#define EF_RAW_FRAMES (EF_MAX_FRAMES + 8)
static inline int ef_capture_here(void **raw, int depth)
{
    int (*bt)(void **, int) = ef_bt;
    if (!bt || ef_unwinding || ef_in_shim)
        return 0;
    ef_unwinding = 1;
    ef_in_shim++;
    int n = bt(raw, depth + 4 < EF_RAW_FRAMES ? depth + 4 : EF_RAW_FRAMES);
    ef_in_shim--;
    ef_unwinding = 0;
    return n > 0 ? n : 0;
}
uint32_t ef_depot_put(const uintptr_t *pcs, uint32_t n);
/* Returns the frames of id (pointer into the registry) and their count. */
const uint64_t *ef_depot_get(uint32_t id, uint32_t *n);
void ef_stack_before_fork(void);
void ef_stack_after_fork_child(int parent_multithreaded);
void ef_stack_after_unseen_fork(void);
int ef_stack_parent_mt(void);
int ef_stack_unsafe(void);          /* 1 in a child where unwinding may hang */
void ef_stack_disable(int fd);      /* the program took libunwind's pipe */
int ef_pc_in_shim(uintptr_t pc);

/* --------------------------------------------------------------- symbolize.c */
struct ef_sym {
    char module[512];
    uintptr_t offset;       /* pc - load bias: an ELF address, for addr2line */
    char function[256];     /* "" when unknown */
    int have_module;
};
struct ef_symctx;           /* a small cache of opened ELF files, one report long */
struct ef_symctx *ef_sym_begin(void);
void ef_sym_lookup(struct ef_symctx *c, uintptr_t pc, struct ef_sym *out);
void ef_sym_end(struct ef_symctx *c);

/* ------------------------------------------------------------------- log.c */
void ef_log_copy_stderr(void);            /* at init: the stderr the process started with */
void ef_log_setup(void);                  /* open a shared file, syslog */
void ef_log_after_fork_child(void);
int ef_log_relocate(int fd);              /* the program wants this number */
void ef_log_write(const char *buf, size_t len);
/* A report or notice: `full` to a file/stderr, or the one line to syslog. */
void ef_log_record(const char *full, size_t len, const char *line, size_t linelen);
void ef_log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int ef_log_fds(int *out, int max);       /* every fd the shim owns */
void ef_own_fd(int fd, int on);           /* hide fd from the program (or stop) */
int ef_high_fd_base(void);                /* where the shim's own fds go */

/* ------------------------------------------------------------------ report.c */
enum ef_use { EF_USE_WAIT = 0, EF_USE_CTL = 1, EF_USE_BLOCKED = 2 };
struct ef_report {
    const char *kind;            /* "shared-epoll-ctl", "stale-registration", "epoll-fd-exec-leak" */
    int pid, ppid;
    int owner_pid, modifier_pid, other_pid;
    int other_use;          /* enum ef_use */
    int op, epfd, fd;
    uint32_t events;
    uint64_t data;
    char target[512];
    int create_how, create_flags, create_fd;
    uint64_t time_ns;
    int fork_parent_pid, fork_child_pid, fork_how;
    uint32_t call_stack, fork_stack, create_stack, add_stack, use_stack;
    int add_pid;
    int call_stack_unsafe;
    uint32_t lost_changes;
    /* stale-registration */
    int holder_pid, holder_fd;
    uint32_t close_stack;
    const char *close_how;       /* "close", "close_range", "dup2"... */
    /* epoll-fd-exec-leak */
    uint32_t exec_stack;
    char program[512];
    char argv0[256];
    const char *exec_how;        /* "execve", "execvp"... or "start-up" */
    int entries;                 /* registrations the leaked instance holds, -1 unknown */
};
/* The fields every report has: kind, pids, time, and what the instance says. */
void ef_report_init(struct ef_report *r, const char *kind, const struct ef_inst *in, int epfd);
/* Mix v into a 64-bit dedup key. */
static inline uint64_t ef_mix(uint64_t k, uint64_t v)
{
    return (k ^ v) * 0x9e3779b97f4a7c15ull;
}
const char *ef_op_name(int op);
/* Decode epoll event flags as "EPOLLIN|EPOLLET" into buf. */
size_t ef_events_str(uint32_t ev, char *buf, size_t len);
/* Render a report (text or JSON per ef_opt) into buf; returns its length. */
size_t ef_report_render(const struct ef_report *r, char *buf, size_t len);
/* Emit a report: render, write once, count; abort in abort mode. */
void ef_report_emit(const struct ef_report *r);
/* Per-process counters, printed at exit as the TOTALS line. */
extern _Atomic unsigned long ef_suppressed_count, ef_deduped_count;
void ef_report_totals(void);
void ef_report_after_fork_child(void);
/* suppress.c */
void ef_suppressions_load(const char *path);
int ef_suppressed(const struct ef_report *r);
extern _Atomic unsigned long ef_report_count;
/* Tests may intercept reports before they are rendered. */
extern void (*ef_report_hook)(const struct ef_report *r);

/* ------------------------------------------------------------------- track.c */
/* Process-private view of one instance (indexed like the registry). */
struct ef_local {
    _Atomic uint32_t uid;        /* uid of the instance we hold; 0 not held */
    _Atomic uint32_t aliases;    /* fds of this process that refer to it */
    _Atomic int32_t slot;        /* my holder slot, -1 none */
    int32_t resv;                /* slot reserved for the child being forked */
    _Atomic uint64_t lastseen;   /* gen as of my last use */
    _Atomic uint32_t ghosts;     /* closes of registered fds awaiting the kernel's word */
};

struct ef_proc_state {
    pid_t pid;
    uint32_t proc;               /* my process record (0 none) */
    _Atomic int tracking;        /* 0 not started, 1 starting, 2 on, 3 failed */
};
extern struct ef_proc_state ef_self;
extern _Atomic int ef_vfork_depth;
extern EF_TLS uintptr_t ef_vfork_ret;     /* vfork_x86_64.S spill slot */

/* Events, each called by a wrapper after the real call succeeded (or before,
 * where the table must change before the kernel reuses a number). */
struct ef_wait_token {
    uint32_t idx, uid;
    int slot;
};
int ef_track_start(void);                       /* lazily create the registry */
void ef_on_epoll_create(int fd, int how, int flags, void *caller);
void ef_on_ctl_before(int epfd, void *caller);  /* the use check before epoll_ctl */
void ef_on_ctl(int epfd, int op, int fd, const void *ev, void *caller); /* after success */
/* After a successful ADD or DEL on a quiet instance (ef_epoll_quiet), with
 * the ADD's stack already captured by the wrapper. */
void ef_on_ctl_quiet(int epfd, int op, int fd, void *const *raw, int nraw, void *caller);
void ef_on_wait_enter(int epfd, int blocking, struct ef_wait_token *t, void *caller);
void ef_on_wait_exit(int epfd, const struct ef_wait_token *t, int result);
void ef_on_close(int fd, void *caller);         /* before the real close */
void ef_on_close_range(unsigned lo, unsigned hi, int flags, void *caller);
void ef_on_dup(int oldfd, int newfd, void *caller); /* after success */
void ef_on_fork_prepare(void);
void ef_on_fork_returned(pid_t result);         /* our fork wrapper, in the parent */
void ef_on_fork_detected(void);                 /* a fork no handler saw */
void ef_on_exit(void);
int ef_allow_shared(int epfd);                  /* epollfork_allow_shared() */
int ef_holds_any(void);                         /* does this process hold an instance? */
/* One registration of an fd in an instance (the fd table holds the first; a
 * side table the others, for an fd that several instances watch). */
struct ef_regrec {
    uint32_t idx, uid, add_stack;
    int32_t add_pid;
};
int ef_reg_find(int fd, struct ef_fd *e, uint32_t idx, struct ef_regrec *out);
int ef_reg_all(int fd, struct ef_fd *e, struct ef_regrec *out, int max);

/* What a fork writes in the parent, on one page (track.c). */
#define EF_FORK_RESV 64
struct ef_fork_state {
    _Atomic uint32_t epoch;     /* forks this process took part in (parent or child) */
    uint32_t stack;             /* the fork being made: its stack, how, the child's record */
    int how;
    uint32_t child_proc;
    int parent_mt;
    int counted;                /* this process counted a report (report.c) */
    int nresv;                  /* holder slots reserved for the child */
    struct {
        uint32_t idx;
        int32_t slot;
    } resv[EF_FORK_RESV];
};
extern struct ef_fork_state ef_fork;
#define ef_fork_epoch ef_fork.epoch
extern _Atomic uint32_t ef_ghosts_pending;       /* any ghost candidates at all? */
/* Internals shared by the rule files (track.c, stale.c, execleak.c). */
struct ef_local *ef_local_at(uint32_t idx);
int ef_holds(uint32_t idx);
int ef_enter(void);
int ef_pid_alive(int32_t pid);
uint32_t ef_proc_of_pid(int32_t pid);
uint32_t ef_split_fork(uint32_t a, uint32_t b);
void ef_fill_fork(struct ef_report *r, uint32_t split);
void ef_on_fd_born(int fd);                      /* socket(), accept(), pipe()... */
/* stale.c */
void ef_stale_on_close(int fd, struct ef_fd *e, uint32_t flags, const struct ef_regrec *reg,
                       void *caller);
void ef_stale_check(uint32_t idx, int epfd, void *caller);
int ef_stale_copy_possible(int fd, const struct ef_fd *e, uint32_t flags);
void ef_stale_drop(uint32_t idx);
void ef_startup_note_inherited(int fd);
/* execleak.c */
char *const *ef_exec_prepare(const char *path, char *const argv[], char *const envp[],
                             void *caller);
void ef_exec_failed(char *const *env_used, char *const envp[]);
void ef_startup_scan(void);

/* State used by wrap.c fast paths. */
extern EF_TLS int ef_in_shim;            /* re-entrancy guard */
extern EF_TLS uint32_t ef_tls_fork_stack; /* set by the fork wrapper */
extern EF_TLS int ef_tls_fork_how;
struct ef_wipe { uint32_t valid; };
extern struct ef_wipe *ef_wipe;           /* zeroed in any fork child (MADV_WIPEONFORK) */

/* The fast path of the busiest calls (bench/RESULTS.md), owned by track.c:
 * EPOLL_CTL_MOD and a wait with timeout 0 on an instance that never crossed a
 * fork, with no ghost pending, in the process this state belongs to.  There
 * ef_on_ctl_before(), ef_on_ctl() (for MOD) and ef_on_wait_enter() (not
 * blocking) do nothing, so the wrapper makes the real call and returns: no
 * errno save, no events.  A new rule in track.c for those calls must make
 * this return 0 in its case.  The
 * checks are those of track.c's enter() and of those events, in that order;
 * anything else (a fork seen through the wipe page, a vfork child, ghosts, a
 * crossed instance, an fd we do not know) takes the full path.  Measured on
 * the MOD re-arm loop: +37 ns -> +2 ns per call. */
static inline int ef_epoll_quiet(int epfd)
{
    if (atomic_load_explicit(&ef_self.tracking, memory_order_acquire) != 2)
        return 0;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))
        return 0;
    if (EF_UNLIKELY(!ef_wipe->valid) ||
        EF_UNLIKELY(atomic_load_explicit(&ef_vfork_depth, memory_order_relaxed)) ||
        EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        return 0;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    return !atomic_load_explicit(&ef_reg->inst[idx].crossed, memory_order_seq_cst);
}


/* -------------------------------------------------------------------- init.c */
extern _Atomic int ef_init_state;        /* 0 none, 1 running, 2 done */
void ef_init(void);
static inline void ef_ensure_init(void)
{
    if (EF_UNLIKELY(atomic_load_explicit(&ef_init_state, memory_order_acquire) != 2))
        ef_init();
}

/* -------------------------------------------------------------------- util */
size_t ef_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t ef_realtime_ns(void);
void ef_rfc3339(uint64_t ns, char *buf, size_t len);

#endif /* EF_H */
