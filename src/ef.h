/*
 * ef.h - the ground layer of epollfork: everything the rules stand on.
 *
 * Three headers, one per layer (docs/DESIGN.md draws them):
 *   procfs.h  the kernel's word (/proc, kcmp); standalone, shared with
 *             epollfork-ps, which is never preloaded;
 *   ef.h      this one: the real functions, the re-entry guard, options, the
 *             fd table, the sink, the registry shared by a process tree,
 *             stacks and symbols, and the report record with its renderers;
 *   rules.h   the rules about instances, forks and conflicts, and the events
 *             that wrap.c raises.
 * A file of the ground layer never calls into rules.h; wrap.c and init.c are
 * the only files that know about interposition.  Everything internal is hidden
 * (-fvisibility=hidden + a version script).  Only entry points (the wrappers,
 * the atfork handler, the constructor and destructor, the epollfork_* API)
 * save and restore errno; nothing below them does.
 */
#ifndef EF_H
#define EF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "epollfork_version.h"
#include "procfs.h"

#define EF_VERSION EPOLLFORK_VERSION_STRING

#define EF_LIKELY(x) __builtin_expect(!!(x), 1)
#define EF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define EF_TLS __thread __attribute__((tls_model("initial-exec")))
/* Start-up costs pages (bench/RESULTS.md, start-up): every page of the shim a
 * process touches for the first time is a page fault, ~15 us on this VM, and
 * every exec'd process runs the constructor and the destructor.  So the small
 * state they read or write lives in .data (EF_HOT), on the page the loader has
 * already written (relocations), instead of one .bss page per file; and the
 * code they run sits together at the start of .text (EF_INIT_TEXT, next to
 * the constructor and destructor the compiler puts there), where one fault
 * maps it all (the kernel maps 64 KiB around a fault on a file's page). */
#define EF_HOT __attribute__((section(".data.ef_hot")))
#define EF_INIT_TEXT __attribute__((section(".text.startup")))
/* the busiest calls' code, together after it (docs/EVIDENCE.md, costs: PTI) */
#define EF_HOT_TEXT __attribute__((section(".text.hot.ef")))
#if defined(__x86_64__) || defined(__i386__)
#define ef_cpu_relax() __builtin_ia32_pause()
#else
#define ef_cpu_relax() __asm__ volatile("" ::: "memory")
#endif

/* ------------------------------------------------------------------ guard.c */
/* This thread is running shim code: libunwind's own close/pipe2 calls reach
 * our wrappers and must be let through, and a signal handler that interrupts
 * us must not start a second report.  Scoped: the count drops when the
 * enclosing block ends, on every path. */
extern EF_TLS int ef_in_shim;
static inline void ef_guard_leave_(int *unused)
{
    (void)unused;
    ef_in_shim--;
}
#define EF_GUARD_SCOPE()                                                           \
    int ef_guard_scope_ __attribute__((cleanup(ef_guard_leave_), unused)) = ef_in_shim++
/* vforks in flight in this process (vfork_x86_64.S): while nonzero, a
 * wrapper may be running in a vfork child that shares our memory. */
extern _Atomic int ef_vfork_depth;
extern EF_TLS uintptr_t ef_vfork_ret;     /* vfork_x86_64.S's return-address slot */
/* The process the shim's memory belongs to, as its owners last learnt it
 * (0: not yet): set where the log, the registry and the process's tracking
 * ask getpid() anyway, and again in a fork child. */
extern pid_t ef_owner_pid;
/* Running in a vfork child, which shares that memory (and must not write
 * to it)?  One getpid() while a vfork is in flight, nothing otherwise; while
 * the owner is not known yet, yes whenever a vfork is in flight. */
int ef_in_vfork_child(void);

/* ------------------------------------------------------------------- real.c */
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
    /* io_uring (uring.c): the ring's setup and enter reach the kernel through
     * syscall(), its memory through mmap.  The shim's own mappings use these
     * two (ef_real.mmap, ef_real.munmap), never its own wrappers. */
    long (*syscall)(long, long, long, long, long, long, long);
    void *(*mmap)(void *, size_t, int, int, int, off_t);
    void *(*mmap64)(void *, size_t, int, int, int, off_t);
    int (*munmap)(void *, size_t);
    int (*dlclose)(void *); /* cfi.c's rules are per loaded code */
};
extern struct ef_real ef_real;
void ef_real_resolve(void);
extern void *ef_vfork_fn;               /* the real vfork, for vfork_x86_64.S */
/* Syscalls that never re-enter a wrapper and never touch errno. */
int ef_sys_close(int fd);
pid_t ef_sys_getpid(void);
pid_t ef_sys_getppid(void);
/* A raw syscall that never reaches a wrapper (the shim's own calls must not
 * enter its syscall() wrapper): -1 and errno on failure, as syscall(2). */
long ef_sys6(long n, long a, long b, long c, long d, long e, long f);
/* The same, returning -errno and leaving errno alone (start-up: touching
 * errno is a lazy binding of __errno_location and a TLS write). */
long ef_raw6(long n, long a, long b, long c, long d, long e, long f);
struct stat;
int ef_fstat(int fd, struct stat *st);           /* raw fstat */
/* name defined in some loaded object: 1, 0 nowhere, -1 cannot tell (no malloc,
 * unlike a failing dlsym) */
int ef_sym_anywhere(const char *name);
int ef_stat(const char *path, struct stat *st);  /* raw stat */
/* Raw system calls for the shim's own mappings and fds (-1 and errno, as
 * libc's; ef_sys_mmap: MAP_FAILED); ef_sys_dupfd is F_DUPFD_CLOEXEC;
 * ef_sys_nofile the soft RLIMIT_NOFILE (1 << 30 for no limit). */
void *ef_sys_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off);
int ef_sys_munmap(void *a, size_t len);
int ef_sys_madvise(void *a, size_t len, int advice);
int ef_sys_ftruncate(int fd, off_t len);
int ef_sys_dupfd(int fd, int lowest);
long ef_sys_nofile(void);

/* ------------------------------------------------------------------- zone.c */
/* The shim's process-private tables, one lazy mapping (zone.c).  Each part
 * is rounded up to whole pages; its owner checks what it puts there against
 * the size here (_Static_assert). */
#define EF_ZONE_PARTS(X)                                                                   \
    X(SNAP, 96u << 10)          /* stack.c: stacks kept to be unwound later */           \
    X(FD_PAGE0, 128u << 10)     /* fdtable.c: entries of fds 0-4095 */                   \
    X(LOCAL, 512u << 10)        /* hold.c: this process's view of each instance */       \
    X(FD_L1, 128u << 10)        /* fdtable.c: the first level above fd 4095 */            \
    X(REG_CHUNKS, 4u << 10)     /* registry.c: chunks 1.. of the tables mapped here */   \
    X(INST_NONE, 4u << 10)      /* hold.c: the zeroed instance of no index */            \
    X(STUCK, 8u << 10)          /* depot.c: slots whose writer died */                   \
    X(SIDE, 96u << 10)          /* interest.c: fds registered in several instances */    \
    X(GHOSTS, 16u << 10)        /* stale.c: closes awaiting the kernel's word */          \
    X(RINGS, 20u << 10)         /* uring.c: the io_uring rings known here */             \
    X(RULES, 64u << 10)         /* suppress.c: EPOLLFORK_SUPPRESSIONS */                 \
    X(CFI, 96u << 10)           /* cfi.c: the unwind rules read so far */                \
    X(OPTS, 8u << 10)           /* options.c: the two path-valued options */             \
    X(LOG, 1u << 10)            /* log.c: socket path, open error */                     \
    X(LEAKS, 1u << 10)          /* execleak.c: leaks known at start-up */                \
    X(WIPE, 4u << 10)           /* hold.c: zeroed in fork children (MADV_WIPEONFORK) */
#define EF_Z_BYTES_(name, bytes) EF_Z_##name##_BYTES_ = (bytes),
enum { EF_ZONE_PARTS(EF_Z_BYTES_) };
#define EF_Z_BYTES(name) ((size_t)EF_Z_##name##_BYTES_)
/* Where each part is: page-rounded arrays, so that offsets are constants (a
 * table of sizes is .rodata, a page a process would fault in for it). */
#define EF_Z_FIELD(name, bytes) char EF_Z_##name[((bytes) + 4095u) & ~4095u];
struct ef_zone_layout { EF_ZONE_PARTS(EF_Z_FIELD) };
void *ef_zone_at(size_t off);         /* the part at off, zeroed at first; NULL: no memory */
#define ef_zone(part) ef_zone_at(offsetof(struct ef_zone_layout, part))
int ef_zone_wipe_ok(void);            /* the WIPE part is zeroed in fork children */

/* ------------------------------------------------------------------- util.c */
size_t ef_fmt(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
uint64_t ef_realtime_ns(void);
void ef_rfc3339(uint64_t ns, char *buf, size_t len);
/* String helpers for the start-up path, where each libc function called
 * first costs a lazy binding (~700 instructions) and maybe a page of libc's
 * text.  The empty asm keeps the compiler from turning the loops back into
 * calls to strlen/strcmp. */
static inline size_t ef_strlen(const char *s)
{
    size_t n = 0;
    while (s[n]) {
        __asm__("" : "+r"(n));
        n++;
    }
    return n;
}
static inline int ef_streq(const char *a, const char *b)
{
    while (*a && *a == *b) {
        __asm__("" : "+r"(a));
        a++, b++;
    }
    return *a == *b;
}
/* The same against a string literal, unrolled: the literal's bytes become
 * immediates, so that start-up code reads no .rodata (a page fault there
 * costs more than all of the option parsing, bench/RESULTS.md). */
__attribute__((always_inline)) static inline int ef_lit_cmp_(const char *v, const char *lit, size_t n)
{
#pragma GCC unroll 32
    for (size_t i = 0; i < n; i++)
        if (v[i] != lit[i])
            return 0;
    return 1;
}
#define EF_LIT_EQ(v, lit) ef_lit_cmp_((v), "" lit, sizeof(lit))
#define EF_LIT_PREFIX(v, lit) ef_lit_cmp_((v), "" lit, sizeof(lit) - 1)
static inline int ef_strprefix(const char *s, const char *pfx)
{
    while (*pfx && *s == *pfx) {
        __asm__("" : "+r"(s));
        s++, pfx++;
    }
    return !*pfx;
}

/* Mix v into a 64-bit key (claims, dedup). */
static inline uint64_t ef_mix(uint64_t k, uint64_t v)
{
    return (k ^ v) * 0x9e3779b97f4a7c15ull;
}

/* ---------------------------------------------------------------- options.c */
enum ef_format { EF_FMT_TEXT = 0, EF_FMT_JSON = 1 };
enum ef_on_report { EF_ON_WARN = 0, EF_ON_ABORT = 1 };
struct ef_options {
    const char *log;         /* "stderr", "syslog[:PATH]", "journal[:PATH]" or a path (%p) */
    enum ef_format format;
    enum ef_on_report on_report;
    int stack_depth;         /* frames per stack */
    int disable;             /* pure pass-through */
    int dedup;               /* 1: identical reports merged tree-wide (EPOLLFORK_DEDUP) */
    int debug;               /* 1: io_uring counters at exit (EPOLLFORK_DEBUG) */
    const char *suppressions; /* path of the suppressions file, "" none */
    /* secure execution (setuid, AT_SECURE), known at start-up only when an
     * EPOLLFORK_* variable is set: read it through ef_secure() */
    int secure;
    int repair;              /* EPOLLFORK_REPAIR: make the bugs harmless too (repair.c) */
    int unwind;              /* EPOLLFORK_UNWIND: enum ef_unwind */
};
enum ef_unwind { EF_UNWIND_TABLES = 0, EF_UNWIND_LIBUNWIND = 1 };
extern struct ef_options ef_opt;
/* Set every option to its default, then parse EPOLLFORK_* from envp (NULL:
 * the process environment).  Complaints are appended to err, one line each,
 * so that the caller decides where they go. */
void ef_options_parse(char *const *envp, char *err, size_t errlen);
void ef_options_print_table(int fd);   /* `make options` */
int ef_secure(void);                   /* AT_SECURE, asked once */
/* EPOLLFORK_EXEC_LEAKS's value as the parse saw it (set by the shim itself
 * across exec, execleak.c), NULL when unset: not an option. */
extern const char *ef_exec_leaks_env;

/* ---------------------------------------------------------------- fdtable.c */
#define EF_FD_EPOLL    0x1u   /* an alias of an epoll instance */
/* 0x4u was EF_FD_OWNED: the shim's own fds are ef_owned_fds[] now */
#define EF_FD_INTEREST 0x8u   /* registered (ADD) in some instance */
#define EF_FD_DUPED    0x10u  /* dup'ed, or made by a dup: its description may have copies */
#define EF_FD_MULTI    0x20u  /* also registered in other instances (interest.c's side table) */
#define EF_FD_ADD_RING 0x40u  /* registered fd: its last ADD was an IORING_OP_EPOLL_CTL */
#define EF_FD_URING    0x80u  /* an io_uring ring fd: inst/inst_uid name its slot in uring.c */
struct ef_fd {
    _Atomic uint32_t flags;
    _Atomic uint32_t inst;      /* epoll fd: instance index */
    _Atomic uint32_t inst_uid;  /* epoll fd: uid of that instance */
    _Atomic uint32_t add_stack; /* registered fd: depot id of its last ADD */
    _Atomic uint32_t int_inst;  /* registered fd: instance of its last ADD */
    _Atomic uint32_t int_uid;   /* registered fd: uid of that instance */
    _Atomic int32_t add_pid;    /* registered fd: process that did that ADD */
    _Atomic uint32_t born;      /* fork epoch when a wrapped call created it, 0 unknown */
};
#define EF_FD_MAX (1u << 26)
#define EF_FD_PAGE_BITS 12
/* The first level: the entry of fds 0-4095 apart (EF_HOT, on a page the
 * loader wrote anyway: every process reads it at its first close()), the rest
 * in the zone (zone.c), NULL until an fd above 4095 is tracked; ef_fd_nil is
 * the empty entry read meanwhile. */
extern struct ef_fd *_Atomic ef_fd_p0;
extern struct ef_fd *_Atomic *_Atomic ef_fd_l1;
extern struct ef_fd *_Atomic ef_fd_nil;
static inline struct ef_fd *_Atomic *ef_fd_l1_slot(unsigned i)
{
    if (EF_LIKELY(!i))
        return &ef_fd_p0;
    struct ef_fd *_Atomic *l1 = atomic_load_explicit(&ef_fd_l1, memory_order_acquire);
    return l1 ? &l1[i] : &ef_fd_nil;
}
/* Lookup without allocating; NULL when the fd never had an entry.  Inline:
 * every wrapper does it, on the hot path. */
static inline struct ef_fd *ef_fd_peek(int fd)
{
    if (EF_UNLIKELY((unsigned)fd >= EF_FD_MAX))
        return NULL;
    struct ef_fd *p = atomic_load_explicit(ef_fd_l1_slot((unsigned)fd >> EF_FD_PAGE_BITS),
                                           memory_order_acquire);
    return p ? &p[(unsigned)fd & ((1u << EF_FD_PAGE_BITS) - 1)] : NULL;
}
#define EF_MAX_OWNED 8
extern _Atomic int ef_owned_fds[EF_MAX_OWNED];  /* fd + 1, 0 free (fdtable.c) */
extern _Atomic int ef_owned_lo;                 /* the lowest of them */
static inline int ef_fd_owned(int fd)
{
    if (EF_LIKELY(fd < atomic_load_explicit(&ef_owned_lo, memory_order_relaxed)))
        return 0;
    for (int i = 0; i < EF_MAX_OWNED; i++)
        if (atomic_load_explicit(&ef_owned_fds[i], memory_order_relaxed) == fd + 1)
            return 1;
    return 0;
}
/* Lookup, allocating the page; NULL when fd is out of range or mmap failed. */
struct ef_fd *ef_fd_get(int fd);
/* Call fn for every fd in [lo, hi] that has a non-empty entry. */
void ef_fd_foreach(unsigned lo, unsigned hi, void (*fn)(int fd, struct ef_fd *e, void *arg),
                   void *arg);
size_t ef_fd_bytes(void);
/* The shim's own fds (sinks, libunwind's pipe): kept at high numbers, marked
 * in the table so that the wrappers hide them from the program. */
int ef_fd_high_base(void);                /* where the shim's own fds go */
int ef_fd_copy_high(int fd);              /* a close-on-exec owned copy, high; fd or -1 */
int ef_fd_take_high(int fd);              /* the same, and fd is closed; new fd or -1 */
int ef_fd_copy_away(int fd);              /* the program wants fd's number: ours moves */
void ef_fd_own(int fd, int on);           /* mark (or unmark) fd as the shim's */
int ef_fd_owned_list(int *out, int max);  /* every fd the shim owns */

/* -------------------------------------------------------------------- log.c */
/* The sink: where a rendered record goes.  Records arrive whole; each is one
 * write() (or one datagram), so processes sharing a log never interleave. */
void ef_log_copy_stderr(void);            /* the stderr the process started with */
void ef_log_setup(void);                  /* open a shared file, connect syslog */
void ef_log_after_fork_child(void);
/* The program wants number fd, one of our sinks: move ours.  0 done, -1 fd is
 * not a sink (the caller decides: libunwind's pipe). */
int ef_log_relocate(int fd);
/* `full` to a file or stderr, or `line` (one line) to syslog. */
void ef_log_record(const char *full, size_t len, const char *line, size_t linelen);
/* A one-time notice (a capacity limit, a file that cannot be opened), rendered
 * as a `notice` record in the configured format. */
void ef_log_notice(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* A sink that lives above this file (journal.c renders records itself) joins
 * here, from init.c: log.c calls it at set-up, offers it every notice (0: it
 * took it), and lets it move its fd when the program wants that number (0: it
 * was its fd). */
struct ef_log_upper {
    void (*setup)(void);
    int (*notice)(const char *msg);
    int (*relocate)(int fd);
};
void ef_log_join(const struct ef_log_upper *u);
/* Why records now go to the stderr copy instead of their sink: said once, as
 * a notice, before the first record written there. */
void ef_log_fallback(const char *why);

#include "registry.h"

/* --------------------------------------------------------------- pyframes.c */
/* Is there an interpreter whose frames we can read?  Decided once per
 * process, at the first capture; a C program checks this and nothing more. */
enum ef_py_state { EF_PY_UNPROBED = 0, EF_PY_PROBING, EF_PY_ABSENT, EF_PY_READY };
extern _Atomic int ef_py_state;
/* The calling thread's Python frames, innermost first, at most max, as words
 * (ef_py_word_of); *key identifies the frames (code objects, instructions):
 * when it equals the value passed in, nothing is encoded and -1 is returned,
 * so that the caller reuses what it stored for them the last time.  0: no
 * Python frames (no interpreter in this process, a thread not running
 * Python, a version whose layout we do not know). */
int ef_py_capture(uint64_t *words, int max, uint64_t *key);
void ef_py_probe(void);   /* decide ef_py_state now (the first capture does) */
uint32_t ef_pystr_intern(const char *s, uint32_t n);  /* its id, 0 when the store is full */
void ef_pystr_copy(uint32_t id, char *buf, size_t cap);  /* "?" when unknown or damaged */
uint64_t ef_py_word_of(uint32_t file, int line, uint32_t function);
uint64_t ef_py_word(const char *file, int line, const char *function);  /* interns both */
struct ef_pyframe {
    char file[EF_PYSTR_MAX + 1];
    char function[EF_PYSTR_MAX + 1];
    int line;                   /* 0 unknown */
};
void ef_py_decode(uint64_t word, struct ef_pyframe *out);
/* The standard library or an installed package (site-packages,
 * dist-packages): not what `site` names. */
int ef_py_is_library(const char *file);
void ef_py_site(const struct ef_pyframe *f, char *buf, size_t len); /* "worker.py:42(handle)" */
/* Is the calling thread running Python (a thread state with a frame)?  A
 * registration made from Python keeps only the EF_PY_NATIVE_DEPTH native
 * frames nearest the call (ef_capture_here): the interpreter's frames below
 * them are what its Python frames say better, and each one costs libunwind
 * ~100 instructions on the hot path (bench/RESULTS.md, Python churn). */
#define EF_PY_NATIVE_DEPTH 8
int ef_py_running(void);

/* ------------------------------------------------------------------ depot.c */
/* A depot entry: up to EF_MAX_FRAMES frames and the Python marker. */
#define EF_DEPOT_ENTRY_MAX (EF_MAX_FRAMES + 1)
uint32_t ef_depot_put(const uintptr_t *pcs, uint32_t n);      /* its id, 0 none */
/* The same for Python words: does not evict the thread's cached native stack. */
uint32_t ef_depot_put_aside(const uintptr_t *pcs, uint32_t n);
/* The words of depot entry id as stored (the Python marker included). */
uint32_t ef_depot_read(uint32_t id, uint64_t *pcs, uint32_t max);
uint32_t ef_depot_native(uint32_t id, uint64_t *pcs, uint32_t max); /* without the marker */
uint32_t ef_depot_python(uint32_t id, uint64_t *words, uint32_t max); /* its Python words */

/* ---------------------------------------------------------- ehframe.c, cfi.c */
/* The unwind rule of the call at pc (a return address - 1), from .eh_frame,
 * in one word: off (32 bits, signed), rbp_off (16, signed), flags; 0: not a
 * frame cfi.c walks.  CFA = (rbp if CFA_RBP, else rsp) + off; the return
 * address at CFA - 8; rbp saved at CFA + rbp_off if RBP_SAVED; LAST: the
 * return address is undefined (the outermost frame). */
enum { EF_RULE_KNOWN = 1, EF_RULE_CFA_RBP = 2, EF_RULE_RBP_SAVED = 4, EF_RULE_LAST = 8 };
#define EF_RULE_OFF(r) ((int32_t)(uint32_t)(r))
#define EF_RULE_RBP_OFF(r) ((int16_t)(uint16_t)((r) >> 32))
#define EF_RULE_FLAGS(r) ((unsigned)((r) >> 48))
#define EF_RULE_BAD ((uint64_t)0)
uint64_t ef_eh_rule_at(uintptr_t pc);
enum { EF_R_RIP, EF_R_RSP, EF_R_RBP, EF_R_RBX, EF_R_R12, EF_R_R13, EF_R_R14, EF_R_R15, EF_R_COUNT };
/* its return address, rsp after the return, the callee-saved registers */
void ef_snap_regs(uint64_t *regs) __attribute__((visibility("hidden")));
void ef_stack_set_main_top(uintptr_t top); /* init.c: the main thread's arguments */
/* The top of sp's stack if at most span above: the thread's descriptor (above
 * every glibc thread stack) or main's arguments; 0 (a signal stack...). */
uintptr_t ef_stack_top(uintptr_t sp, uintptr_t span);
/* A walk: n frames at pcs (return addresses, as unw_backtrace gives them).
 * From cfi.c, pcs is the thread's last walk (stamp: ef_cfi_still() says if it
 * still is); serial, nonzero, names those frames: the same again, the same. */
struct ef_walk { const uintptr_t *pcs; int n; uint32_t serial, stamp; };
/* The calling stack from the unwind tables, as unw_backtrace(.., max) would
 * give it from here (the first frame is this function's caller's own pc),
 * without libunwind; -1 when a frame's rules are not the simple ones (then
 * only libunwind knows), or in a signal handler that interrupted a walk. */
int ef_cfi_backtrace(int max, struct ef_walk *w);
int ef_cfi_still(const struct ef_walk *w);  /* w's frames are still at w->pcs */
/* The same over a copy of the stack (len bytes at regs' rsp), regs' frame on */
int ef_cfi_walk_copy(const uint64_t *regs, const unsigned char *copy, uintptr_t len, uintptr_t *out,
                     int max);
void ef_cfi_code_unloaded(void); /* wrap.c: dlclose() */

/* ------------------------------------------------------------------ stack.c */
enum ef_skip { EF_SKIP_SHIM = 0, EF_SKIP_SHIM_AND_ONE = 1 };
/* Why a stack holds only the calling frame. */
enum ef_cut {
    EF_CUT_NONE = 0,
    EF_CUT_UNSAFE_CHILD,    /* a fork child where unwinding may hang */
    EF_CUT_NO_UNWINDER,     /* libunwind could not be loaded, or was given up */
    EF_CUT_REENTRY,         /* a signal handler interrupted our own unwinding */
};
const char *ef_cut_why(enum ef_cut cut);  /* the stack note, NULL for EF_CUT_NONE */
/* Capture the calling stack; its id (0 none), maybe of a copy kept to be
 * walked later (EF_STACK_PENDING): what compares ids (a claim, a dedup key)
 * takes ef_stack_canon() of them, which walks it and gives its depot id. */
#define EF_STACK_PENDING 0x80000000u
uint32_t ef_stack_capture(enum ef_skip skip, void *caller);
int ef_stack_keeps_copies(void); /* captures are kept as copies here, for now */
/* The same, walked now: a stack another process will read, or a report's. */
uint32_t ef_stack_capture_now(enum ef_skip skip, void *caller);
uint32_t ef_stack_canon(uint32_t id);
/* hold.c: the process record of the process capturing (a kept capture is
 * named by it; record 0, none: no capture is kept) */
void ef_stack_set_owner(uint32_t proc);
enum ef_cut ef_stack_last_cut(void); /* why this thread's last capture stopped at one frame */
/* The stack of a walk a wrapper made itself (ef_capture_here), its own
 * frame dropped, stored once; 0 when it must be captured again (a signal
 * handler's walk replaced the frames meanwhile). */
uint32_t ef_stack_from_walk(const struct ef_walk *w);
extern int (*ef_bt)(void **, int);  /* libunwind's unw_backtrace, when usable here */
extern int ef_walk_ok;              /* cfi.c's walk may run in this process */
extern EF_TLS int ef_unwinding;     /* this thread is inside unw_backtrace */
/* Unwind from the caller's own frame (a wrapper), from the unwind tables
 * (cfi.c) or, for a stack they cannot walk, with libunwind when it is loaded:
 * every frame of ours walked costs, so a wrapper that captures a stack itself
 * saves the frames of the rules and of stack.c.  0 when unwinding is not
 * available here (then the events capture, with the usual fallbacks). */
#define EF_RAW_FRAMES (EF_MAX_FRAMES + 8)
static inline int ef_capture_here(void **raw, int depth, struct ef_walk *w) /* w zeroed */
{
    if (ef_unwinding || ef_in_shim || ef_stack_keeps_copies())
        return 0;
    if (depth > EF_PY_NATIVE_DEPTH &&
        atomic_load_explicit(&ef_py_state, memory_order_relaxed) == EF_PY_READY && ef_py_running())
        depth = EF_PY_NATIVE_DEPTH;
    int want = depth + 4 < EF_RAW_FRAMES ? depth + 4 : EF_RAW_FRAMES;
    if (ef_walk_ok && ef_opt.unwind == EF_UNWIND_TABLES && ef_cfi_backtrace(want, w) > 0)
        return w->n;
    int (*bt)(void **, int) = ef_bt;
    if (!bt)
        return 0;
    EF_GUARD_SCOPE();
    ef_unwinding = 1;
    int n = bt(raw, want);
    ef_unwinding = 0;
    w->pcs = (const uintptr_t *)raw;
    w->n = n > 0 ? n : 0;
    return w->n;
}
/* The native frames of stack id (a depot id, or one of a capture not yet
 * unwound: it is unwound now) into pcs, at most max; their count, 0 when the
 * id is unknown or its record in the registry does not hold together. */
uint32_t ef_depot_copy(uint32_t id, uint64_t *pcs, uint32_t max);
/* A stack captured while the thread ran Python carries its Python stack: a
 * last word EF_PY_MARK | id of a depot entry of Python frame words.  Copy
 * those words (at most max); their count, 0 none. */
#define EF_PY_MARK 0xef7f000000000000ull
uint32_t ef_stack_python(uint32_t id, uint64_t *words, uint32_t max);
/* A stack of native frames pcs and Python frame words, stored once (tests). */
uint32_t ef_stack_store(const uintptr_t *pcs, uint32_t n, const uint64_t *words, uint32_t nw);
void ef_stack_before_fork(void);
void ef_stack_forking(void);        /* a fork no handler sees (_Fork): no kept captures after it */
void ef_stack_after_fork_child(int parent_multithreaded);
void ef_stack_after_unseen_fork(void);
int ef_stack_parent_mt(void);
int ef_stack_unsafe(void);          /* 1 in a child where unwinding may hang */
void ef_stack_disable(int fd);      /* the program took libunwind's pipe */
int ef_pc_in_shim(uintptr_t pc);

/* -------------------------------------------------------------- symbolize.c */
struct ef_sym {
    char module[512];
    uintptr_t offset;       /* pc - load bias: an ELF address, for addr2line */
    char function[256];     /* "" when unknown; "name@VERSION" cut to "name" */
    int have_module;
};
struct ef_symctx;           /* a small cache of opened ELF files, one report long */
struct ef_symctx *ef_sym_begin(void);
void ef_sym_lookup(struct ef_symctx *c, uintptr_t pc, struct ef_sym *out);
void ef_sym_end(struct ef_symctx *c);

/* ------------------------------------------------------------------- emit.c */
/* A bounded output buffer and the escapers every renderer shares. */
struct ef_out {
    char *p;
    size_t len, cap;
};
void ef_put(struct ef_out *o, const char *s, size_t n);
void ef_puts(struct ef_out *o, const char *s);
void ef_putf(struct ef_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string: quotes, escapes, and invalid UTF-8 as \u00XX of each byte. */
void ef_put_json_str(struct ef_out *o, const char *s);
/* A name for a text line: control characters shown as \n, \t, \xNN, so that
 * no value can start a line without the ==PID== prefix. */
void ef_put_vis(struct ef_out *o, const char *s);
/* ` key=value` for a SUMMARY-style line: quoted only when it needs to be. */
void ef_put_kv(struct ef_out *o, const char *key, const char *val);
/* `{"tool":"epollfork","version":"...","kind":"KIND"` (no closing brace). */
void ef_put_json_head(struct ef_out *o, const char *kind);

/* ----------------------------------------------------------------- record.c */
/* The report record: the facts, gathered once, rendered by every back end. */
enum ef_kind {
    EF_KIND_SHARED_CTL = 0,     /* shared-epoll-ctl */
    EF_KIND_STALE,              /* stale-registration */
    EF_KIND_EXEC_LEAK,          /* epoll-fd-exec-leak */
    EF_KIND_SHARED_URING,       /* shared-io-uring */
    EF_NKINDS
};
/* The labelled stacks a record can carry. */
enum ef_role {
    EF_ST_CALL = 0,     /* the modifying epoll_ctl */
    EF_ST_CLOSE,        /* the close that left a ghost */
    EF_ST_EXEC,         /* the exec an epoll fd leaks into */
    EF_ST_FORK,         /* the fork that split the processes */
    EF_ST_CREATE,       /* the creation of the instance */
    EF_ST_ADD,          /* the registration of the fd */
    EF_ST_USE,          /* the affected use */
    EF_NROLES
};
enum ef_use { EF_USE_WAIT = 0, EF_USE_CTL = 1, EF_USE_BLOCKED = 2, EF_USE_RING_CTL = 3 };
struct ef_report {
    enum ef_kind kind;
    int pid, ppid;
    int owner_pid, modifier_pid, other_pid;
    enum ef_use other_use;
    int op, epfd, fd;
    uint32_t events;
    uint64_t data;
    char target[512];
    int create_how, create_flags, create_fd;
    uint64_t time_ns;
    int fork_parent_pid, fork_child_pid, fork_how;
    uint32_t stacks[EF_NROLES];  /* depot ids, 0 none */
    int add_pid;
    enum ef_via call_via, add_via; /* how the change and the ADD reached the kernel */
    int ring_fd;                 /* the ring they were submitted to (-1 none) */
    enum ef_cut call_cut;        /* why the call stack is one frame */
    uint32_t lost_changes;
    /* stale-registration */
    int holder_pid, holder_fd;
    /* epoll-fd-exec-leak */
    char program[512];
    char argv0[256];
    const char *exec_how;        /* "execve", "execvp"... or "start-up" */
    int entries;                 /* registrations the leaked instance holds, -1 unknown */
    /* repair mode (EPOLLFORK_REPAIR=1): two more fields, and a line */
    int repair_mode;
    int repaired;                /* the shim made the bug harmless */
    char repair[400];            /* what it did, or why it could not */
    /* shared-io-uring */
    enum ef_ring_use ring_use, other_ring_use;
    int other_ring_fd;
    unsigned ring_entries, ring_flags;
};
const char *ef_role_name(enum ef_role role);   /* "call", "fork"...: JSON keys */
/* The fields every report has: kind, pids, time, and what the instance says. */
void ef_report_init(struct ef_report *r, enum ef_kind kind, const struct ef_inst *in, int epfd);
/* The fork that split process records a and b, named in the report. */
void ef_report_fill_fork(struct ef_report *r, uint32_t split);
const char *ef_op_name(int op);
size_t ef_events_str(uint32_t ev, char *buf, size_t len);   /* "EPOLLIN|EPOLLET" */
const char *ef_use_name(enum ef_use u);
const char *ef_via_name(enum ef_via v);             /* "epoll_ctl", "io_uring" */
const char *ef_ring_use_name(enum ef_ring_use u);   /* "submit", "reap", "submit+reap" */

/* The scalar fields of a record, in the one order every back end renders
 * them (SUMMARY, JSON, syslog, journald): a field rendered by one back end
 * and not another cannot happen. */
enum ef_ftype { EF_F_INT, EF_F_STR, EF_F_HEX, EF_F_BOOL };
struct ef_field {
    const char *key;
    enum ef_ftype type;
    long long i;                 /* EF_F_INT; EF_F_HEX as unsigned; EF_F_BOOL 0 or 1 */
    const char *s;               /* EF_F_STR; NULL: unknown (text "unknown", JSON null) */
};
#define EF_MAX_FIELDS 32
struct ef_fields {
    unsigned n;
    struct ef_field f[EF_MAX_FIELDS];
    char time[48], events[256], site[400];
};
void ef_field_int(struct ef_fields *f, const char *key, long long v);
void ef_field_str(struct ef_fields *f, const char *key, const char *v);
void ef_field_hex(struct ef_fields *f, const char *key, unsigned long long v);
void ef_field_bool(struct ef_fields *f, const char *key, int v);
/* time, pid, the kind's own fields, in repair mode `repaired` and `repair`,
 * site. */
void ef_report_fields(const struct ef_report *r, struct ef_symctx *c, struct ef_fields *out);
/* The offending frame, `function(module+0xoffset)`, "" when there is none. */
void ef_report_site(const struct ef_report *r, struct ef_symctx *c, char *buf, size_t len);

/* One labelled stack of a report, as the kind describes it. */
struct ef_stack_desc {
    enum ef_role role;
    char title[300];            /* text label */
    const char *missing;        /* why there is no stack */
    const char *note;           /* said under the frames */
};
#define EF_MAX_STACKS 6
/* One row per kind: a new kind is one row in record.c and its functions. */
struct ef_kind_desc {
    const char *name;            /* as reports, JSON and suppressions spell it */
    enum ef_role offending;      /* the stack that names the site and is suppressed */
    uint64_t key_tag;            /* namespace of the kind's claim keys */
    /* the WARNING line(s), plain words */
    void (*headline)(const struct ef_report *r, struct ef_out *o, const char *pfx);
    /* the labelled stacks, in the order they are shown; their count */
    int (*stacks)(const struct ef_report *r, struct ef_stack_desc *out);
    /* the kind's own scalar fields, between pid and site */
    void (*fields)(const struct ef_report *r, struct ef_fields *f);
};
extern const struct ef_kind_desc ef_kinds[EF_NKINDS];
const char *ef_kind_name(enum ef_kind k);
int ef_kind_by_name(const char *name);       /* enum ef_kind, or -1 */

/* ---------------------------------------------------------------- suppress.c */
void ef_suppressions_load(const char *path);
int ef_suppressed(const struct ef_report *r);

/* ---------------------------------------------------------------- journal.c */
/* EPOLLFORK_LOG=journal[:PATH]: records as native journald entries. */
int ef_journal_on(void);
void ef_journal_init(void);     /* init.c: join log.c's hooks */
/* One report, with its text and JSON renderings; 0 when the journal took
 * it, -1 when the caller must write it elsewhere (the reason is with log.c). */
int ef_journal_report(const struct ef_report *r, const char *text, size_t tlen, const char *json,
                      size_t jlen);
int ef_journal_totals(unsigned long reports, unsigned long suppressed, unsigned long deduped);

/* ----------------------------------------------------------------- report.c */
/* Render a report (text or JSON per ef_opt) into buf; returns its length. */
size_t ef_report_render(const struct ef_report *r, char *buf, size_t len);
/* The one-line form (SUMMARY without the ==PID== prefix, or the JSON). */
size_t ef_report_render_line(const struct ef_report *r, char *buf, size_t len);
/* Emit a report: suppress, merge identical ones, render, write once, count;
 * abort in abort mode. */
void ef_report_emit(const struct ef_report *r);
unsigned long ef_report_count(void);
struct ef_counts {
    unsigned long reports, suppressed, deduped;
};
struct ef_counts ef_report_counts(void);   /* this process's, as TOTALS says them */
void ef_report_totals(void);            /* the TOTALS record, at exit */
void ef_report_after_fork_child(void);  /* counters are per process */
/* Tests may intercept reports before they are rendered. */
extern void (*ef_report_hook)(const struct ef_report *r);

#endif /* EF_H */
