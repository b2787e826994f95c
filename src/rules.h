/*
 * rules.h - the rules layer: what a process holds, its interest entries, and
 * the three verdicts; and the events that wrap.c and init.c raise.
 *
 *   hold.c      what this process holds: tracking state, instances and their
 *               holder slots, aliases, fork reservations, the child's first
 *               event, exit
 *   interest.c  the interest entries (registrations) this process made
 *   copy.c      a private copy of an instance, rebuilt from the kernel's list
 *   repair.c    repair mode: private copies, ghosts removed, close-on-exec
 *   stale.c     stale-registration
 *   execleak.c  epoll-fd-exec-leak
 *   track.c     shared-epoll-ctl, and the event dispatch below
 *   ringshare.c shared-io-uring
 *   uring.c     io_uring rings: the IORING_OP_EPOLL_CTL they submit
 *
 * Files here call into the ground layer (ef.h) and into files listed above
 * them; never into wrap.c or init.c.
 */
#ifndef EF_RULES_H
#define EF_RULES_H

#include "ef.h"

/* The call an event comes from: its return address, and its stack once
 * captured.  One io_uring_enter can submit many changes: they share one
 * capture. */
struct ef_call {
    void *caller;
    uint32_t stack;             /* depot id, valid once captured */
    enum ef_cut cut;
    int captured;
};
#define EF_CALL(c) ((struct ef_call){(c), 0, EF_CUT_NONE, 0})
static inline uint32_t ef_call_stack(struct ef_call *c)
{
    if (!c->captured) {
        c->stack = ef_stack_capture_now(EF_SKIP_SHIM, c->caller);
        c->cut = ef_stack_last_cut();
        c->captured = 1;
    }
    return c->stack;
}

/* ----------------------------------------------------------------- hold.c */
enum ef_tracking {
    EF_TRACK_OFF = 0,       /* not started (no epoll use yet) */
    EF_TRACK_STARTING = 1,  /* a thread is starting it */
    EF_TRACK_ON = 2,
    EF_TRACK_FAILED = 3,    /* the registry could not be mapped: pass-through */
};
struct ef_self {
    pid_t pid;
    uint32_t proc;               /* my process record (0 none) */
    _Atomic int tracking;        /* enum ef_tracking */
};
extern struct ef_self ef_self;

/* Zeroed in any fork child (MADV_WIPEONFORK): a 0.3 ns check instead of a
 * getpid() per call tells the child that its state is its parent's.  And the
 * one private page a fork never write-protects in the parent (it is not
 * copied): what a fork changes in the parent lives here, so that a fork loop
 * writes no page that the next fork's first write would copy (bench/RESULTS.md,
 * fork: ~30 us a fork on this VM). */
struct ef_wipe {
    uint32_t valid;
    _Atomic uint32_t epoch;     /* ef_epoch(); 0 in a fork child until its first event */
    /* the fork wrapper's stack for the prepare handler of the same thread
     * (owner: its pthread_self(); 0 none) */
    _Atomic uintptr_t handed_owner;
    uint32_t handed_stack;
    int handed_how;
};
extern struct ef_wipe *ef_wipe;

/* Process-private view of one instance (indexed like the registry). */
struct ef_local {
    _Atomic uint32_t uid;        /* uid of the instance we hold; 0 not held */
    _Atomic uint32_t aliases;    /* fds of this process that refer to it */
    _Atomic int32_t slot;        /* my holder slot, -1 none */
    int32_t resv;                /* slot reserved for the child being forked */
    _Atomic uint64_t lastseen;   /* gen as of my last use */
    _Atomic uint32_t ghosts;     /* closes of registered fds awaiting the kernel's word */
    _Atomic uint32_t lost;       /* changes lost since the last report on it, not yet said */
};

/* What the child of the last fork finds of it (its record, its reservations),
 * private: the child reads its copy.  A private page written after a fork
 * costs a copy-on-write fault at the next write (bench/RESULTS.md, fork), so
 * the prepare handler writes a field only when its value changes, and a fork
 * loop whose children are gone when it forks again reuses the last child's
 * record and slots (hold.c): the same values, no write. */
#define EF_FORK_RESV 64
struct ef_fork_state {
    _Atomic uint32_t forked;    /* this process took part in a fork (written once) */
    uint32_t stack;             /* the fork being made: its stack, how, the child's record */
    int how;                    /* enum ef_fork_how */
    uint32_t child_proc;
    int parent_mt;
    int nresv;                  /* holder slots reserved for the child */
    struct {
        uint32_t idx;
        int32_t slot;
    } resv[EF_FORK_RESV];
};
extern struct ef_fork_state ef_fork;
/* The fork wrapper's stack for this thread's prepare handler: on the wipe page
 * when no other thread's fork is handing one over, else in TLS. */
void ef_fork_hand_over(uint32_t stack, int how);
void ef_fork_take_back(void); /* the fork failed, or no handler took it */
/* Set by the fork and _Fork wrappers for the prepare handler (or, after a
 * _Fork, for the child's first event). */
extern EF_TLS uint32_t ef_tls_fork_stack;
extern EF_TLS int ef_tls_fork_how;

int ef_track_start(void);                  /* start tracking (registry, log); 1 on */
/* Called once tracking has started (init.c registers the atfork handler
 * then, not at every start-up: a hook, so that no arrow climbs up). */
extern void (*ef_track_started_hook)(void);
static inline int ef_tracking(void)
{
    return atomic_load_explicit(&ef_self.tracking, memory_order_acquire) == EF_TRACK_ON;
}
/* Is this still the process our state belongs to?  Runs the child's first
 * event after a fork; 0 in a vfork child (which shares our memory). */
int ef_enter(void);
struct ef_local *ef_local_at(uint32_t idx);
int ef_holds(uint32_t idx);                /* idx valid, held, not recycled */
int ef_holds_any(void);                    /* does this process hold an instance? */
/* The instance record of idx; a zeroed record of our own (free, never
 * crossed) for index 0 and for one that cannot be mapped (hold.c). */
extern struct ef_inst *ef_inst_none;
/* ... or an io_uring ring: then a fork needs its stack (uring.c counts). */
extern _Atomic uint32_t ef_rings_held;
int ef_fork_matters(void);
static inline struct ef_inst *ef_inst_at(uint32_t idx)
{
    struct ef_inst *in = idx ? (struct ef_inst *)ef_reg_elem(EF_T_INST, idx) : NULL;
    return EF_LIKELY(in != NULL) ? in : ef_inst_none;
}
/* A new instance at fd (created, or adopted when how == EF_CREATE_ADOPTED);
 * its index, 0 when not tracked.  The old alias at fd must be gone. */
uint32_t ef_hold_create(int fd, struct ef_fd *e, enum ef_create_how how, int flags, void *caller);
/* fd no longer refers to its instance; the index it released (its last
 * alias), or 0. */
uint32_t ef_hold_drop_alias(struct ef_fd *e);
void ef_hold_add_alias(struct ef_fd *n, uint32_t idx);
int ef_hold_claim_wait(uint32_t idx, int *slot);  /* count a blocked waiter; 1 ok */
void ef_hold_release_wait(uint32_t idx, uint32_t uid, int slot);

/* ------------------------------------------------------------- interest.c */
/* One interest entry of an fd in an instance: the fd table holds the first;
 * a side table the others, for an fd that several instances watch. */
struct ef_interest {
    uint32_t idx, uid, add_stack;
    int32_t add_pid;
    enum ef_via via;            /* the ADD was an epoll_ctl or an IORING_OP_EPOLL_CTL */
};
void ef_interest_add(int fd, struct ef_fd *e, uint32_t idx, uint32_t stack, enum ef_via via);
int ef_interest_find(int fd, struct ef_fd *e, uint32_t idx, struct ef_interest *out);
void ef_interest_del(int fd, struct ef_fd *e, uint32_t idx);
/* Every entry of fd (the primary first); clears them when `clear`. */
int ef_interest_collect(int fd, struct ef_fd *e, struct ef_interest *out, int max, int clear);
/* fd's registration in `from` now lives in `to` (a repair copy): same stack. */
void ef_interest_move(int fd, struct ef_fd *e, uint32_t from, uint32_t to);

/* ------------------------------------------------------ copy.c, repair.c */
/* EPOLLFORK_REPAIR=1 (README, "Repair mode").  One repair, as its maker
 * knows it: the instance it left and the copy it took. */
struct ef_repair_note {
    uint32_t orig, orig_uid;     /* the instance this process no longer holds */
    uint32_t copy;               /* its private copy, 0 when none was made */
    int shared;                  /* other live processes keep the original */
    uint32_t epoch;              /* ef_epoch() when the copy was made */
    struct ef_repair_rec rec;    /* what was done, for the ring and the reports */
};
/* A closed registration that must not come back in a copy. */
struct ef_repair_excl {
    int fd;
    uint64_t ino;
};
/* ----------------------------------------------------------------- copy.c */
/* Give this process a private copy of idx at epfd (and at its aliases):
 * entries whose file is open here at their number, minus `excl`; note->shared
 * says which word the record gets (COPIED or REBUILT).  1 done, 0 not needed
 * any more (another thread did it), -1 failed: note->rec says why. */
/* Mark rec as a repair that could not be made, at step, for errno err; -1. */
int ef_repair_failed(struct ef_repair_rec *rec, enum ef_repair_step step, int err, int fd);
int ef_copy_make(int epfd, uint32_t idx, const struct ef_repair_excl *excl, int nexcl,
                 void *caller, struct ef_repair_note *note);

/* --------------------------------------------------------------- repair.c */
/* Does another live process hold idx, epfd's instance?  Asks the kernel
 * (kcmp); holder slots of processes that turn out not to hold it are given
 * back.  1 yes or unknown, 0 no. */
int ef_repair_shared(int epfd, uint32_t idx);
/* ef_copy_make() for stale.c's ghosts: asks who else holds the instance, and
 * makes no copy of one shared on purpose.  The caller holds the re-entry
 * guard. */
int ef_repair_copy(int epfd, uint32_t idx, const struct ef_repair_excl *excl, int nexcl,
                   void *caller, struct ef_repair_note *note);
/* Before an epoll_ctl on epfd (whose instance was `at_entry` when the call
 * began): a change to a list shared with another live process goes to a
 * private copy.  Its note is taken by ef_on_ctl after the first change that
 * succeeds on the copy (idx); a failed repair's note by the same call. */
void ef_repair_before_change(int epfd, uint32_t at_entry, void *caller);
void ef_repair_forget(void);                        /* a new epoll_ctl begins */
const struct ef_repair_note *ef_repair_take(int epfd, uint32_t idx);
/* FD_CLOEXEC on fd before an exec; closed at start-up.  rec says what happened. */
void ef_repair_cloexec(int fd, struct ef_repair_rec *rec);
void ef_repair_close_inherited(int fd, struct ef_repair_rec *rec);
/* The report's `repaired` and `repair` from a record (read from shared memory
 * when it comes from the ring: checked here). */
void ef_repair_fill(struct ef_report *r, const struct ef_repair_rec *rec);

/* ---------------------------------------------------------------- stale.c */
extern _Atomic uint32_t ef_ghosts_pending;       /* any ghost candidates at all? */
int ef_stale_copy_possible(int fd, const struct ef_fd *e, uint32_t flags);
void ef_stale_on_close(int fd, struct ef_fd *e, uint32_t flags, const struct ef_interest *in,
                       void *caller);
void ef_stale_check(uint32_t idx, int epfd, struct ef_call *call);
void ef_stale_drop(uint32_t idx);
void ef_stale_note_inherited(int fd);

/* ------------------------------------------------------------- execleak.c */
/* Before an exec: report the epoll fds that would leak into it and return the
 * environment to use instead (with the marker), or NULL for the caller's.
 * search: execvp-style PATH search.  Reads the caller's memory only through
 * checks that cannot fault. */
char *const *ef_exec_prepare(const char *path, int search, char *const argv[],
                             char *const envp[], void *caller);
/* Start-up: the fds inherited at exec.  The scan makes raw system calls only
 * and never touches errno; it returns nonzero when there is something to
 * judge (a candidate epoll fd, a list from the exec that started us, or /proc
 * to read), which ef_startup_judge() does, with libc. */
int ef_startup_scan(void);
void ef_startup_judge(void);
/* Each open fd below 1024, with what poll() says of it (POLLOUT asked of fds
 * 0-2 only), in two raw system calls; -1 when fds above may be open too. */
int ef_open_fds(void (*fn)(int fd, short revents, void *arg), void *arg);

/* ---------------------------------------------------------------- events */
/* Raised by wrap.c after the real call succeeded, or before it where the
 * table must change before the kernel can hand a number out again (close). */
struct ef_wait_token {
    uint32_t idx, uid;
    int slot;                   /* >= 0 counted as blocked; -1 nothing; -2 adopt */
};
void ef_on_epoll_create(int fd, enum ef_create_how how, int flags, void *caller);
void ef_on_ctl_before(int epfd, void *caller);  /* the use check before epoll_ctl */
void ef_on_ctl(int epfd, int op, int fd, const void *ev, void *caller); /* after success */
/* An IORING_OP_EPOLL_CTL submitted through a ring (uring.c): the use check,
 * and when it succeeded, what ef_on_ctl does, labelled as a ring's. */
void ef_on_ctl_from_ring(int ring_fd, int epfd, int op, int fd, const void *ev, int succeeded,
                         struct ef_call *call);
/* After a successful ADD or DEL on a quiet instance (ef_epoll_quiet), with
 * the ADD's stack already captured by the wrapper. */
void ef_on_ctl_quiet(int epfd, int op, int fd, const struct ef_walk *w, void *caller);
void ef_on_wait_enter(int epfd, int blocking, struct ef_wait_token *t, void *caller);
void ef_on_wait_exit(int epfd, const struct ef_wait_token *t, int result);
void ef_on_close(int fd, void *caller);         /* before the real close */
void ef_on_close_range(unsigned lo, unsigned hi, int flags, void *caller);
void ef_on_dup(int oldfd, int newfd, void *caller); /* after success */
void ef_on_fd_born(int fd);                     /* socket(), accept(), pipe()... */
/* The fork epoch, while tracking: 0 if this process never took part in a
 * fork, else a value of its era since its last fork, unique in the tree (a
 * fd born in it has no copy elsewhere); EF_EPOCH_UNKNOWN in a fork child
 * until its first event (its wipe page is zero), a value no era has. */
#define EF_EPOCH_UNKNOWN UINT32_MAX
static inline uint32_t ef_epoch(void)
{
    if (!atomic_load_explicit(&ef_fork.forked, memory_order_relaxed))
        return 0;
    struct ef_wipe *w = ef_wipe;
    uint32_t e = w ? atomic_load_explicit(&w->epoch, memory_order_relaxed) : 0;
    return e ? e : EF_EPOCH_UNKNOWN;
}
/* The fork epoch an fd born now carries: 0 (unknown: it may have a copy)
 * while nothing is tracked (forks then count no eras) or the era is unknown. */
static inline uint32_t ef_born_epoch(void)
{
    if (!ef_tracking())
        return 0;
    uint32_t e = ef_epoch();
    return e == EF_EPOCH_UNKNOWN ? 0 : e;
}
/* What a number's entry may still say of an fd closed behind our back: a new
 * fd of that number clears it (ef_on_fd_born). */
#define EF_FD_STALE_FLAGS (EF_FD_EPOLL | EF_FD_INTEREST | EF_FD_MULTI | EF_FD_DUPED | EF_FD_URING)
/* Has ef_on_fd_born(fd) anything to do?  Inline, so that the common case
 * (an entry already clean for this fork epoch) touches no errno, no TLS. */
static inline int ef_fd_born_matters(int fd)
{
    uint32_t epoch = ef_born_epoch();
    struct ef_fd *e = ef_fd_peek(fd);
    if (!e)
        return epoch != 0;
    return (atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_STALE_FLAGS) ||
           atomic_load_explicit(&e->born, memory_order_relaxed) != epoch;
}
/* hold.c */
void ef_on_fork_prepare(void);                  /* atfork prepare handler */
void ef_on_fork_returned(pid_t result);         /* our fork wrapper, in the parent */
void ef_on_fork_child(void);                    /* a fork child's first event */
void ef_on_exit(void);
int ef_allow_shared(int epfd);                  /* epollfork_allow_shared() */

/* The fast path of the busiest calls (bench/RESULTS.md): EPOLL_CTL_MOD and a
 * wait with timeout 0 on an instance that never crossed a fork, with no ghost
 * pending, in the process this state belongs to.  There ef_on_ctl_before(),
 * ef_on_ctl() (for MOD) and ef_on_wait_enter() (not blocking) do nothing, so
 * the wrapper makes the real call and returns: no errno save, no events.  A
 * new rule for those calls must make this return 0 in its case.  The checks
 * are those of ef_enter() and of those events, in that order; anything else
 * (a fork seen through the wipe page, a vfork child, ghosts, a crossed
 * instance, an fd we do not know) takes the full path.  Measured on the MOD
 * re-arm loop: +37 ns -> +2 ns per call. */
static inline int ef_epoll_quiet(int epfd)
{
    if (!ef_tracking())
        return 0;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))
        return 0;
    if (EF_UNLIKELY(!ef_wipe->valid) ||
        EF_UNLIKELY(atomic_load_explicit(&ef_vfork_depth, memory_order_relaxed)) ||
        EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        return 0;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    return !atomic_load_explicit(&ef_inst_at(idx)->crossed, memory_order_seq_cst);
}

/* ------------------------------------------------------------- ringshare.c */
/* shared-io-uring: the ring record (idx, uid) if it is still that ring. */
struct ef_ring *ef_ring_record(uint32_t idx, uint32_t uid);
/* This process submitted to or reaped from ring record (idx, uid) at fd. */
void ef_ring_use(uint32_t idx, uint32_t uid, int fd, enum ef_ring_use what, struct ef_call *call);

/* ---------------------------------------------------------------- uring.c */
/* io_uring rings: the IORING_OP_EPOLL_CTL they submit, shared-io-uring. */
extern _Atomic uint32_t ef_uring_nrings;     /* rings known here: the wrappers' fast test */
/* One IORING_OP_EPOLL_CTL about to be submitted, copied out of its SQE. */
struct ef_uring_ctl {
    uint32_t pos;                            /* its place in the submission queue */
    int epfd, op, fd;
    uint64_t addr, user_data;
};
#define EF_URING_PRE 64
struct ef_uring_token {                      /* an enter, as seen before it ran */
    int slot;                                /* -1: nothing to do after it */
    uint32_t gen;
    int fd;
    enum ef_ring_use what;
    uint32_t head, cqtail;                   /* the kernel's SQ head and CQ tail before */
    int scan;                                /* what was submitted is to be judged after */
    uint32_t upto;                           /* the queue was read before the enter up to here */
    int nctl;
    struct ef_uring_ctl ctl[EF_URING_PRE];   /* the changes among them (quiet MODs left out) */
};
/* A ring set up (params as the kernel filled them in). */
void ef_uring_on_setup(int fd, const void *params, enum ef_ring_how how, void *caller);
void ef_uring_on_mmap(void *addr, size_t len, int fd, long off);   /* after success */
void ef_uring_on_munmap(void *addr, size_t len);                   /* before */
/* liburing's io_uring_queue_mmap() done: the ring's mappings, as its struct
 * io_uring says (wrap_uring.c reads them). */
void ef_uring_on_liburing_mmap(int fd, const void *params, void *sq, size_t sq_len, void *cq,
                               size_t cq_len, void *sqes, void *caller);
void ef_uring_on_close(int fd);                                    /* before */
void ef_uring_on_close_range(unsigned lo, unsigned hi);            /* before */
void ef_uring_on_fork_prepare(void);
/* Around io_uring_enter(fd, to_submit, ..., flags); reap: it also waits for
 * or takes completions; tail_now: the program's SQ tail when the kernel's is
 * not it yet (liburing hands its own over inside the call), -1 otherwise.
 * end() only when the token's slot is >= 0. */
void ef_uring_enter_begin(int fd, unsigned to_submit, unsigned flags, int reap, long tail_now,
                          struct ef_uring_token *t);
void ef_uring_enter_end(const struct ef_uring_token *t, long r, void *caller);
void ef_uring_on_exit(void);

/* ------------------------------------------------- init.c (the top layer) */
/* Declared here for wrap.c, the only other file of the top layer. */
extern _Atomic int ef_init_state;        /* 0 none, 1 running, 2 done */
void ef_atfork_register(void);             /* once; init.c */
void ef_init(void);
static inline void ef_ensure_init(void)
{
    if (EF_UNLIKELY(atomic_load_explicit(&ef_init_state, memory_order_acquire) != 2))
        ef_init();
}

#endif /* EF_RULES_H */
