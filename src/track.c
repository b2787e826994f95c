/*
 * track.c - the rules: which epoll instances cross a fork, and when a change to
 * a shared interest list is a conflict worth reporting.
 *
 * Model.  Each epoll instance has a record in the registry shared by the process
 * tree (registry.c).  A process *holds* an instance while one of its fds refers
 * to it; holders are listed in 32 holder slots (pid, and how many of its threads
 * are blocked in a wait on it).  An instance is *crossed* once a holder forked.
 * On a crossed instance with more than one holder, every successful epoll_ctl is
 * *recorded*: the generation counter `gen` is bumped and the change (who, op,
 * fd, stack) goes to a 16-entry ring.  Each process remembers, privately, the
 * generation it last saw (`lastseen`).  When a process uses the instance (ctl or
 * wait) and `gen` moved, it reads the ring: a change made by another process is
 * a conflict, reported by the affected process.  When the modifier finds another
 * holder blocked in a wait at the moment of its change, it reports at once (a
 * parent stuck forever because its fd was deleted under it).  Both sides
 * publish before they look (waiter count before gen; gen before waiter counts),
 * so at least one of them sees the other; a tree-wide dedup set keyed on
 * (instance, modifying stack) makes the report appear exactly once.
 *
 * Why this is silent on correct programs: a child that closes the inherited fd
 * releases its slot (the parent is alone again, nothing is recorded); a new
 * epoll at the same number is a new instance; a hand-off (creator exits or
 * never touches the list again) has no second *user*, so recorded changes are
 * never read by anyone else.
 *
 * Cost.  A process that never forks never touches `gen` or the ring: ctl and
 * wait on an uncrossed instance read one shared flag (ef_epoll_quiet() in
 * ef.h).  The only per-call work kept on the fast path is the registration
 * stack of EPOLL_CTL_ADD.  A fork child does nothing in the fork itself: its
 * bookkeeping (its process record, the holder slots reserved for it) waits for
 * its first epoll event, found through the wipe page, because every page a
 * child runs or writes is a page fault and most children exec or exit first.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ef.h"

#define WRITING (1ull << 63)

struct ef_proc_state ef_self;
_Atomic int ef_vfork_depth;
EF_TLS uintptr_t ef_vfork_ret;
EF_TLS int ef_in_shim;
EF_TLS uint32_t ef_tls_fork_stack;
EF_TLS int ef_tls_fork_how;
struct ef_wipe *ef_wipe;

/* Everything a fork writes in the parent, together: a private page written
 * after a fork costs a copy-on-write fault at the next write (~2.5 us here),
 * so fork-time state shares one page instead of five (bench/RESULTS.md). */
struct ef_fork_state ef_fork;

_Atomic uint32_t ef_ghosts_pending;
/* Process-private, in .bss: no mapping of its own (each costs at every fork),
 * and untouched entries cost nothing. */
static struct ef_local local_arr[EF_MAX_INST];
static struct ef_local *local;
static _Atomic uint32_t held_count;     /* instances this process holds */
#define pending_fork_stack ef_fork.stack
#define pending_fork_how ef_fork.how
#define pending_child_proc ef_fork.child_proc /* allocated before the fork */
#define pending_parent_mt ef_fork.parent_mt

/* ------------------------------------------------------------------ start */

int ef_track_start(void)
{
    int st = atomic_load_explicit(&ef_self.tracking, memory_order_acquire);
    if (EF_LIKELY(st == 2))
        return 1;
    if (st != 0)
        return 0;
    if (!atomic_compare_exchange_strong(&ef_self.tracking, &st, 1))
        return 0;
    int saved = errno;
    int ok = ef_registry_create() == 0;
    if (ok) {
        void *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        ok = w != MAP_FAILED && madvise(w, 4096, MADV_WIPEONFORK) == 0;
        if (ok) {
            local = local_arr;
            ef_wipe = w;
            ef_wipe->valid = 1;
        }
    }
    if (ok) {
        ef_self.pid = ef_sys_getpid();
        ef_self.proc = ef_proc_alloc(ef_self.pid, 0, 0, EF_FORK_ROOT);
        ef_log_setup();
    }
    errno = saved;
    atomic_store_explicit(&ef_self.tracking, ok ? 2 : 3, memory_order_release);
    return ok;
}

static inline int tracking(void)
{
    return atomic_load_explicit(&ef_self.tracking, memory_order_acquire) == 2;
}

/* Every event that touches per-process state first makes sure this is still
 * the process that state belongs to: a fork no handler saw leaves the wipe page
 * zeroed, and a vfork child shares our memory and must not write to it. */
static inline int enter(void)
{
    if (EF_UNLIKELY(!ef_wipe->valid))
        ef_on_fork_detected();
    if (EF_UNLIKELY(atomic_load_explicit(&ef_vfork_depth, memory_order_relaxed)) &&
        ef_sys_getpid() != ef_self.pid)
        return 0;
    return 1;
}

int ef_enter(void)
{
    return enter();
}

struct ef_local *ef_local_at(uint32_t idx)
{
    return &local[idx];
}

static inline struct ef_inst *inst_of(uint32_t idx)
{
    return &ef_reg->inst[idx];
}

/* Is the local view of idx current (we hold it, and it was not recycled)? */
static inline int holds(uint32_t idx)
{
    uint32_t u = atomic_load_explicit(&local[idx].uid, memory_order_relaxed);
    return u && u == atomic_load_explicit(&inst_of(idx)->uid, memory_order_relaxed);
}

int ef_holds(uint32_t idx)
{
    return idx && idx < EF_MAX_INST && local && holds(idx);
}

/* --------------------------------------------------------------- holders */

static int claim_free_slot(struct ef_inst *in, uint64_t word)
{
    for (int i = 0; i < EF_HOLDERS; i++) {
        uint64_t z = 0;
        if (atomic_load_explicit(&in->holders[i], memory_order_relaxed) == 0 &&
            atomic_compare_exchange_strong(&in->holders[i], &z, word)) {
            atomic_fetch_add(&in->nholders, 1);
            return i;
        }
    }
    return -1;
}

static int claim_slot(struct ef_inst *in, uint64_t word)
{
    int s = claim_free_slot(in, word);
    /* Full: children that _exit()ed or were killed left their slots (a
     * prefork server reaps thousands); give back those of dead processes. */
    if (s < 0 && ef_inst_prune((uint32_t)(in - ef_reg->inst)) < EF_HOLDERS)
        s = claim_free_slot(in, word);
    if (s >= 0)
        return s;
    /* No slot: this holder is counted instead, so that the instance is never
     * freed under it and every change on it is recorded. */
    if (atomic_fetch_add(&in->overflow, 1) == 0 && ef_notice_once(EF_NOTICE_HOLDERS))
        ef_log_notice("epollfork: an epoll instance is held by more than %d processes; the "
                      "others are not told apart (no reports are lost or invented)", EF_HOLDERS);
    return -1;
}

static void release_slot(struct ef_inst *in, int slot, uint32_t pid)
{
    if (slot < 0)
        return;
    uint64_t w = atomic_load(&in->holders[slot]);
    while ((uint32_t)(w >> 32) == pid) {
        if (atomic_compare_exchange_weak(&in->holders[slot], &w, 0)) {
            atomic_fetch_sub(&in->nholders, 1);
            return;
        }
    }
}

/* This process no longer holds idx (its last alias was closed). */
static void release(uint32_t idx)
{
    struct ef_local *l = &local[idx];
    struct ef_inst *in = inst_of(idx);
    if (atomic_load(&l->ghosts))
        ef_stale_drop(idx); /* the instance itself is being closed: no ghost to report */
    uint32_t uid = atomic_exchange(&l->uid, 0);
    int slot = atomic_exchange(&l->slot, -1);
    if (uid && atomic_load(&held_count))
        atomic_fetch_sub(&held_count, 1);
    if (!uid || uid != atomic_load(&in->uid))
        return;
    if (slot >= 0)
        release_slot(in, slot, (uint32_t)ef_self.pid);
    else if (atomic_load(&in->overflow))
        atomic_fetch_sub(&in->overflow, 1); /* we were one of the slot-less holders */
    if (atomic_load(&in->nholders) == 0 && !atomic_load(&in->overflow))
        ef_inst_free(idx);
}

static void drop_alias(struct ef_fd *e)
{
    uint32_t f = atomic_fetch_and(&e->flags, ~EF_FD_EPOLL);
    if (!(f & EF_FD_EPOLL))
        return;
    uint32_t idx = atomic_load(&e->inst);
    uint32_t uid = atomic_load(&e->inst_uid);
    if (!idx || idx >= EF_MAX_INST || atomic_load(&local[idx].uid) != uid)
        return;
    if (atomic_fetch_sub(&local[idx].aliases, 1) == 1)
        release(idx);
}

static void set_alias(struct ef_fd *e, uint32_t idx)
{
    atomic_store(&e->inst, idx);
    atomic_store(&e->inst_uid, atomic_load(&local[idx].uid));
    atomic_fetch_or(&e->flags, EF_FD_EPOLL);
}

/* ---------------------------------------------------------------- create */

static uint32_t new_instance(int fd, struct ef_fd *e, int how, int flags, void *caller)
{
    if (atomic_load(&e->flags) & EF_FD_EPOLL)
        drop_alias(e); /* a close we did not see (libc-internal or raw syscall) */
    uint32_t idx;
    struct ef_inst *in = ef_inst_alloc(&idx);
    if (!in)
        return 0;
    in->owner_pid = ef_self.pid;
    in->owner_proc = ef_self.proc;
    in->create_fd = fd;
    in->create_how = how;
    in->create_flags = flags;
    in->create_stack = how == 2 ? 0 : ef_stack_capture(EF_SKIP_SHIM, caller);
    struct ef_local *l = &local[idx];
    atomic_fetch_add(&held_count, 1);
    int slot = claim_slot(in, (uint64_t)(uint32_t)ef_self.pid << 32);
    atomic_store(&l->slot, slot);
    l->resv = -1;
    atomic_store(&l->lastseen, 0);
    atomic_store(&l->aliases, 1);
    atomic_store(&l->uid, atomic_load(&in->uid));
    set_alias(e, idx);
    return idx;
}

void ef_on_epoll_create(int fd, int how, int flags, void *caller)
{
    if (!ef_track_start() || !enter())
        return;
    struct ef_fd *e = ef_fd_get(fd);
    if (!e) {
        if (ef_notice_once(EF_NOTICE_FD_RANGE))
            ef_log_notice("epollfork: fd %d is beyond the tracked range (%u); it is not tracked",
                          fd, EF_FD_MAX);
        return;
    }
    ef_in_shim++;
    new_instance(fd, e, how, flags, caller);
    ef_in_shim--;
}

/* An epoll fd we never saw created (inherited across exec, made by a raw
 * syscall): a successful epoll_ctl or wait proves it is one.  Adopt it. */
static uint32_t adopt(int epfd, struct ef_fd *e)
{
    static _Atomic unsigned failures;
    if (atomic_load(&ef_reg->notices) & EF_NOTICE_INST_FULL) {
        if (atomic_fetch_add(&failures, 1) % 1024)
            return 0;
    }
    int fl = ef_real.fcntl(epfd, F_GETFD);
    return new_instance(epfd, e, 2, fl > 0 && (fl & FD_CLOEXEC) ? EPOLL_CLOEXEC : 0, NULL);
}

/* --------------------------------------------------------------- reports */

int ef_pid_alive(int32_t pid)
{
    int e = errno;
    int alive = ef_procfs_pid_exists(pid);
    errno = e;
    return alive;
}

/* Alive and not a zombie: a process killed while blocked in a wait leaves its
 * waiter count behind, and must not be reported as blocked. */
static int pid_running(int32_t pid)
{
    int e = errno;
    int running = ef_procfs_pid_state(pid) == EF_PID_RUNNING;
    errno = e;
    return running;
}

uint32_t ef_proc_of_pid(int32_t pid)
{
    if (!ef_reg)
        return 0;
    uint32_t n = atomic_load(&ef_reg->nproc);
    if (n > EF_MAX_PROC)
        n = EF_MAX_PROC;
    for (uint32_t i = n; i-- > 1;)
        if (atomic_load(&ef_reg->procs[i].pid) == pid)
            return i;
    return 0;
}

/* The fork that split processes a (the modifier) and b: walk both up to their
 * common ancestor; the fork is the first one below it on a's side, or on b's
 * side when a is the ancestor. */
uint32_t ef_split_fork(uint32_t a, uint32_t b)
{
    struct ef_proc *pa = ef_proc_at(a), *pb = ef_proc_at(b);
    if (!pa || !pb)
        return 0;
    uint32_t below_a = 0, below_b = 0;
    for (int guard = 0; a != b && guard < 2 * EF_MAX_PROC; guard++) {
        pa = ef_proc_at(a);
        pb = ef_proc_at(b);
        if (!pa || !pb)
            return 0;
        if (pa->depth >= pb->depth) {
            below_a = a;
            a = pa->parent;
        } else {
            below_b = b;
            b = pb->parent;
        }
    }
    if (a != b)
        return 0;
    return below_a ? below_a : below_b;
}

void ef_fill_fork(struct ef_report *r, uint32_t split)
{
    struct ef_proc *fp = ef_proc_at(split);
    if (!fp)
        return;
    r->fork_stack = fp->fork_stack;
    r->fork_child_pid = fp->pid;
    struct ef_proc *pp = ef_proc_at(fp->parent);
    r->fork_parent_pid = pp ? pp->pid : 0;
    r->fork_how = (int)fp->fork_how;
}

static int same_file(int pid, int fd, const struct ef_target *t)
{
    struct stat st;
    return t->valid && ef_procfs_fd_stat(pid, fd, &st) == 0 && st.st_dev == t->dev &&
           st.st_ino == t->ino;
}

/* Name the registered fd: from the modifier's fd if it is alive, else from
 * ours, verified against the identity recorded at the change. */
static void describe_target(const struct ef_change *c, char *out, size_t len)
{
    out[0] = 0;
    const struct ef_target *t = &c->target;
    int pids[2] = {c->pid, ef_self.pid};
    for (int k = 0; k < 2; k++) {
        if (k == 0 && c->pid != ef_self.pid && !ef_pid_alive(c->pid))
            continue;
        int pid = pids[k] == ef_self.pid ? 0 : pids[k];
        if (ef_procfs_fd_link(pid, c->fd, out, len) > 0 && same_file(pid, c->fd, t))
            return;
        out[0] = 0;
    }
    if (!t->valid)
        return;
    if (S_ISSOCK(t->mode))
        ef_fmt(out, len, "socket:[%llu]", (unsigned long long)t->ino);
    else if (S_ISFIFO(t->mode))
        ef_fmt(out, len, "pipe:[%llu]", (unsigned long long)t->ino);
    else if (S_ISCHR(t->mode))
        ef_fmt(out, len, "char device %u:%u", major(t->rdev), minor(t->rdev));
    else if (S_ISREG(t->mode))
        ef_fmt(out, len, "file (dev %u:%u inode %llu)", major(t->dev), minor(t->dev),
               (unsigned long long)t->ino);
    else
        ef_fmt(out, len, "anon_inode (inode %llu)", (unsigned long long)t->ino);
}

static uint64_t conflict_key(uint32_t idx, uint32_t uid, const struct ef_change *c)
{
    uint64_t k = ef_mix(ef_mix(0x5348415245440001ull /* shared-epoll-ctl */, idx), uid);
    k = ef_mix(k, c->call_stack ? c->call_stack : ((uint64_t)c->op << 40 | (uint32_t)c->fd));
    return k ^ (k >> 31);
}

/* Returns 1 when a report was made (the caller's count of lost changes has
 * then been said). */
static int conflict(uint32_t idx, const struct ef_change *c, int32_t other_pid,
                    uint32_t other_proc, int use, void *caller, uint32_t lost)
{
    struct ef_inst *in = inst_of(idx);
    if (atomic_load(&in->allowed))
        return 0; /* the program said it shares this list on purpose */
    if (!ef_dedup_insert(conflict_key(idx, atomic_load(&in->uid), c)))
        return 0;
    struct ef_report r;
    ef_report_init(&r, "shared-epoll-ctl", in, c->epfd);
    r.modifier_pid = c->pid;
    r.other_pid = other_pid;
    r.other_use = use;
    r.op = c->op;
    r.fd = c->fd;
    r.events = c->events;
    r.data = c->data;
    describe_target(c, r.target, sizeof r.target);
    ef_fill_fork(&r, ef_split_fork(c->proc, other_proc));
    r.call_stack = c->call_stack;
    r.call_stack_unsafe = (c->flags & EF_CHG_UNSAFE_STACK) != 0;
    r.add_stack = c->add_stack;
    r.add_pid = (int)c->add_proc;
    if (use != EF_USE_BLOCKED)
        r.use_stack = ef_stack_capture(EF_SKIP_SHIM, caller);
    r.lost_changes = lost;
    ef_report_emit(&r);
    return 1;
}

/* Copy ring entry g if it is complete; 1 ok, 0 lost (overwritten), -1 not yet
 * written (its writer is between bumping gen and publishing). */
static int read_change(struct ef_inst *in, uint64_t g, struct ef_change *out)
{
    struct ef_change *c = &in->ring[g % EF_RING];
    for (int spin = 0; spin < 20000; spin++) {
        uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (s1 == g) {
            memcpy((char *)out + sizeof out->seq, (char *)c + sizeof c->seq,
                   sizeof *c - sizeof c->seq);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&c->seq, memory_order_relaxed) == g)
                return 1;
            return 0;
        }
        if ((s1 & ~WRITING) > g)
            return 0;
        ef_cpu_relax();
    }
    return -1;
}

/* The use check: has another process changed the list since we last looked? */
static void scan(uint32_t idx, int use, void *caller)
{
    struct ef_local *l = &local[idx];
    struct ef_inst *in = inst_of(idx);
    uint64_t from = atomic_load(&l->lastseen);
    uint64_t to = atomic_load(&in->gen);
    if (to <= from)
        return;
    if (ef_in_shim)
        return; /* a signal handler inside our own code: look again next time */
    ef_in_shim++;
    uint64_t upto = from;
    uint32_t lost = 0;
    uint64_t first = from + 1;
    if (to - from > EF_RING) { /* older changes were overwritten: count, do not walk */
        uint64_t skip = to - from - EF_RING;
        lost = skip > UINT32_MAX ? UINT32_MAX : (uint32_t)skip;
        first = to - EF_RING + 1;
        upto = first - 1;
    }
    for (uint64_t g = first; g <= to; g++) {
        struct ef_change c;
        int rc = read_change(in, g, &c);
        if (rc < 0)
            break;
        upto = g;
        if (rc == 0) {
            lost++;
            continue;
        }
        if (c.pid == ef_self.pid)
            continue;
        if (conflict(idx, &c, ef_self.pid, ef_self.proc, use, caller, lost))
            lost = 0;
    }
    uint64_t cur = from;
    while (cur < upto && !atomic_compare_exchange_weak(&l->lastseen, &cur, upto))
        ;
    ef_in_shim--;
}

/* --------------------------------------------------------- registrations */
/* The fd table keeps one registration per fd (the common case, no extra
 * cost); an fd that several instances watch (threads with one epoll each on a
 * shared listener) keeps the others here, keyed on (fd, instance). */

#define SIDE 4096
#define SIDE_TOMB (~0ull)
static struct {
    _Atomic uint64_t key;
    uint32_t uid, add_stack;
    int32_t add_pid;
} side[SIDE];

static uint64_t side_key(int fd, uint32_t idx)
{
    return (uint64_t)(uint32_t)fd << 32 | idx;
}

static int side_slot(uint64_t key, int create)
{
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    int tomb = -1;
    for (uint32_t p = 0; p < SIDE; p++) {
        uint32_t s = (uint32_t)((h >> 40) + p) & (SIDE - 1);
        uint64_t cur = atomic_load(&side[s].key);
        if (cur == key)
            return (int)s;
        if (cur == SIDE_TOMB && tomb < 0)
            tomb = (int)s;
        if (cur == 0) {
            if (!create)
                return -1;
            if (tomb >= 0) {
                uint64_t t_ = SIDE_TOMB;
                if (atomic_compare_exchange_strong(&side[tomb].key, &t_, key))
                    return tomb;
            }
            if (atomic_compare_exchange_strong(&side[s].key, &cur, key))
                return (int)s;
        }
    }
    return -1;
}

static int primary_valid(struct ef_fd *e)
{
    if (!(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_REG))
        return 0;
    uint32_t idx = atomic_load_explicit(&e->reg_inst, memory_order_relaxed);
    return holds(idx) && atomic_load(&local[idx].uid) == atomic_load(&e->reg_uid);
}

static void reg_add(int fd, struct ef_fd *e, uint32_t idx, uint32_t uid, uint32_t stack)
{
    if (!primary_valid(e) || atomic_load_explicit(&e->reg_inst, memory_order_relaxed) == idx) {
        atomic_store_explicit(&e->add_stack, stack, memory_order_relaxed);
        atomic_store_explicit(&e->add_pid, ef_self.pid, memory_order_relaxed);
        atomic_store_explicit(&e->reg_inst, idx, memory_order_relaxed);
        atomic_store_explicit(&e->reg_uid, uid, memory_order_relaxed);
        atomic_fetch_or_explicit(&e->flags, EF_FD_REG, memory_order_relaxed);
        return;
    }
    int s = side_slot(side_key(fd, idx), 1);
    if (s < 0)
        return; /* full: this registration's ADD stack will be missing */
    side[s].uid = uid;
    side[s].add_stack = stack;
    side[s].add_pid = ef_self.pid;
    atomic_fetch_or(&e->flags, EF_FD_MULTI);
}

int ef_reg_find(int fd, struct ef_fd *e, uint32_t idx, struct ef_regrec *out)
{
    if (!e)
        return 0;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if ((f & EF_FD_REG) && atomic_load_explicit(&e->reg_inst, memory_order_relaxed) == idx) {
        *out = (struct ef_regrec){idx, atomic_load(&e->reg_uid), atomic_load(&e->add_stack),
                                  atomic_load(&e->add_pid)};
        return 1;
    }
    if (!(f & EF_FD_MULTI))
        return 0;
    int s = side_slot(side_key(fd, idx), 0);
    if (s < 0)
        return 0;
    *out = (struct ef_regrec){idx, side[s].uid, side[s].add_stack, side[s].add_pid};
    return 1;
}

static void reg_del(int fd, struct ef_fd *e, uint32_t idx)
{
    uint32_t f = atomic_load(&e->flags);
    if ((f & EF_FD_REG) && atomic_load(&e->reg_inst) == idx) {
        atomic_fetch_and(&e->flags, ~EF_FD_REG);
        atomic_store(&e->add_stack, 0);
        return;
    }
    if (!(f & EF_FD_MULTI))
        return;
    int s = side_slot(side_key(fd, idx), 0);
    if (s >= 0)
        atomic_store(&side[s].key, SIDE_TOMB);
}

/* Every registration of fd (the primary first); clears them when `clear`. */
static int reg_collect(int fd, struct ef_fd *e, struct ef_regrec *out, int max, int clear)
{
    int n = 0;
    uint32_t f = atomic_load(&e->flags);
    if ((f & EF_FD_REG) && n < max)
        out[n++] = (struct ef_regrec){atomic_load(&e->reg_inst), atomic_load(&e->reg_uid),
                                      atomic_load(&e->add_stack), atomic_load(&e->add_pid)};
    if (f & EF_FD_MULTI) {
        for (uint32_t s = 0; s < SIDE; s++) {
            uint64_t k = atomic_load(&side[s].key);
            if (!k || k == SIDE_TOMB || (uint32_t)(k >> 32) != (uint32_t)fd)
                continue;
            if (n < max)
                out[n++] = (struct ef_regrec){(uint32_t)k, side[s].uid, side[s].add_stack,
                                              side[s].add_pid};
            if (clear)
                atomic_store(&side[s].key, SIDE_TOMB);
        }
    }
    if (clear) {
        atomic_fetch_and(&e->flags, ~(EF_FD_REG | EF_FD_MULTI));
        atomic_store(&e->add_stack, 0);
    }
    return n;
}

int ef_reg_all(int fd, struct ef_fd *e, struct ef_regrec *out, int max)
{
    return e ? reg_collect(fd, e, out, max, 0) : 0;
}

/* ------------------------------------------------------------------- ctl */

void ef_on_ctl_before(int epfd, void *caller)
{
    if (!tracking())
        return;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))
        return;
    if (!enter())
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = inst_of(idx);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        ef_stale_check(idx, epfd, caller);
    if (EF_LIKELY(!atomic_load_explicit(&in->crossed, memory_order_relaxed)))
        return;
    if (!holds(idx))
        return;
    if (atomic_load(&in->gen) != atomic_load_explicit(&local[idx].lastseen, memory_order_relaxed))
        scan(idx, EF_USE_CTL, caller);
}

static void record(uint32_t idx, int epfd, int op, int fd, const struct epoll_event *ev,
                   uint32_t call_stack, int cut, struct ef_fd *t)
{
    struct ef_inst *in = inst_of(idx);
    struct ef_local *l = &local[idx];
    struct stat st;
    int have = fstat(fd, &st) == 0;
    uint64_t g = atomic_fetch_add(&in->gen, 1) + 1;
    struct ef_change *c = &in->ring[g % EF_RING];
    atomic_store(&c->seq, g | WRITING);
    c->pid = ef_self.pid;
    c->proc = ef_self.proc;
    c->op = op;
    c->epfd = epfd;
    c->fd = fd;
    c->events = ev && op != EPOLL_CTL_DEL ? ev->events : 0;
    c->data = ev && op != EPOLL_CTL_DEL ? ev->data.u64 : 0;
    c->call_stack = call_stack;
    struct ef_regrec rr;
    int reg = ef_reg_find(fd, t, idx, &rr);
    c->add_stack = reg ? rr.add_stack : 0;
    c->add_proc = reg ? (uint32_t)rr.add_pid : 0;
    c->flags = cut ? EF_CHG_UNSAFE_STACK : 0;
    c->time_ns = ef_realtime_ns();
    memset(&c->target, 0, sizeof c->target);
    if (have) {
        c->target.valid = 1;
        c->target.mode = st.st_mode;
        c->target.dev = st.st_dev;
        c->target.ino = st.st_ino;
        c->target.rdev = st.st_rdev;
    }
    atomic_store_explicit(&c->seq, g, memory_order_seq_cst);
    uint64_t prev = g - 1;
    atomic_compare_exchange_strong(&l->lastseen, &prev, g);

    /* Is another holder blocked in a wait right now?  Then it is affected
     * already and may never wake up to notice: report here. */
    int mine = atomic_load(&l->slot);
    for (int i = 0; i < EF_HOLDERS; i++) {
        if (i == mine)
            continue;
        uint64_t w = atomic_load(&in->holders[i]);
        uint32_t pid = (uint32_t)(w >> 32);
        if (!pid || (pid & EF_RESERVED) || pid == (uint32_t)ef_self.pid || !(uint32_t)w)
            continue;
        if (!pid_running((int32_t)pid))
            continue;
        struct ef_change copy;
        if (read_change(in, g, &copy) == 1)
            conflict(idx, &copy, (int32_t)pid, ef_proc_of_pid((int32_t)pid), EF_USE_BLOCKED, NULL, 0);
        break;
    }
    if ((g & 63) == 0)
        ef_inst_prune(idx); /* holders that exited without closing (_exit, signals) */
}

void ef_on_ctl(int epfd, int op, int fd, const void *evp, void *caller)
{
    const struct epoll_event *ev = evp;
    if (!ef_track_start())
        return;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (EF_UNLIKELY(!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))) {
        e = ef_fd_get(epfd);
        if (!e || !enter() || !adopt(epfd, e))
            return;
    } else if (!enter()) {
        return;
    }
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = inst_of(idx);
    if (!holds(idx))
        return;
    struct ef_fd *t = ef_fd_peek(fd);
    uint32_t call = 0;
    int cut = 0;
    if (op == EPOLL_CTL_ADD) {
        t = ef_fd_get(fd);
        ef_in_shim++;
        call = ef_stack_capture(EF_SKIP_SHIM, caller);
        cut = ef_stack_last_cut();
        ef_in_shim--;
        if (t)
            reg_add(fd, t, idx, atomic_load_explicit(&in->uid, memory_order_relaxed), call);
    }
    if (EF_UNLIKELY(atomic_load_explicit(&in->crossed, memory_order_relaxed))) {
        int mine = atomic_load(&local[idx].slot) >= 0;
        /* Record only when someone else holds it: otherwise a change here can
         * surprise no one. */
        if (atomic_load(&in->nholders) > (uint32_t)mine || atomic_load(&in->overflow)) {
            ef_in_shim++;
            if (op != EPOLL_CTL_ADD) {
                call = ef_stack_capture(EF_SKIP_SHIM, caller);
                cut = ef_stack_last_cut();
            }
            record(idx, epfd, op, fd, ev, call, cut, t);
            ef_in_shim--;
        }
    }
    if (op == EPOLL_CTL_DEL && t &&
        (atomic_load_explicit(&t->flags, memory_order_relaxed) & (EF_FD_REG | EF_FD_MULTI)))
        reg_del(fd, t, idx);
}

/* An ADD or DEL on an instance that never crossed a fork (the wrapper checked
 * ef_epoll_quiet and captured the ADD's stack from its own frame): only the
 * registration bookkeeping, nothing is recorded or reported. */
void ef_on_ctl_quiet(int epfd, int op, int fd, void *const *raw, int nraw, void *caller)
{
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e)
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    if (!holds(idx))
        return;
    if (op == EPOLL_CTL_ADD) {
        struct ef_fd *t = ef_fd_get(fd);
        if (!t)
            return;
        uint32_t call;
        if (nraw) {
            call = ef_stack_from_raw(raw, nraw);
        } else {
            ef_in_shim++;
            call = ef_stack_capture(EF_SKIP_SHIM, caller);
            ef_in_shim--;
        }
        reg_add(fd, t, idx, atomic_load_explicit(&inst_of(idx)->uid, memory_order_relaxed), call);
    } else if (op == EPOLL_CTL_DEL) {
        struct ef_fd *t = ef_fd_peek(fd);
        if (t && (atomic_load_explicit(&t->flags, memory_order_relaxed) & (EF_FD_REG | EF_FD_MULTI)))
            reg_del(fd, t, idx);
    }
}

/* ------------------------------------------------------------------ wait */

void ef_on_wait_enter(int epfd, int blocking, struct ef_wait_token *tok, void *caller)
{
    tok->slot = -1;
    if (!tracking())
        return;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL)) {
        tok->slot = -2; /* unknown: adopt if the wait succeeds */
        return;
    }
    if (!enter())
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = inst_of(idx);
    struct ef_local *l = &local[idx];
    if (blocking && (!__libc_single_threaded ||
                     atomic_load_explicit(&in->crossed, memory_order_relaxed))) {
        /* Publish "I am waiting" before looking at gen (see the top), even on
         * an instance that has not crossed a fork yet: another thread may fork
         * while this one stays blocked.  Not needed when this is the only
         * thread and the instance never crossed a fork: nothing can fork
         * while it is blocked (a signal handler's fork runs after the wait
         * returned EINTR).  A wait with timeout 0 cannot block. */
        int slot = atomic_load_explicit(&l->slot, memory_order_relaxed);
        if (slot >= 0 && holds(idx)) {
            uint64_t w = atomic_load_explicit(&in->holders[slot], memory_order_relaxed);
            while ((uint32_t)(w >> 32) == (uint32_t)ef_self.pid) {
                if (atomic_compare_exchange_weak(&in->holders[slot], &w, w + 1)) {
                    tok->idx = idx;
                    tok->uid = atomic_load_explicit(&in->uid, memory_order_relaxed);
                    tok->slot = slot;
                    break;
                }
            }
        }
    }
    if (EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        ef_stale_check(idx, epfd, caller);
    if (EF_LIKELY(!atomic_load_explicit(&in->crossed, memory_order_seq_cst)))
        return;
    if (!holds(idx))
        return;
    if (atomic_load(&in->gen) != atomic_load_explicit(&l->lastseen, memory_order_relaxed))
        scan(idx, EF_USE_WAIT, caller);
}

void ef_on_wait_exit(int epfd, const struct ef_wait_token *tok, int result)
{
    if (tok->slot >= 0) {
        struct ef_inst *in = inst_of(tok->idx);
        if (atomic_load(&in->uid) != tok->uid)
            return;
        uint64_t w = atomic_load(&in->holders[tok->slot]);
        while ((uint32_t)(w >> 32) == (uint32_t)ef_self.pid && (uint32_t)w) {
            if (atomic_compare_exchange_weak(&in->holders[tok->slot], &w, w - 1))
                break;
        }
        return;
    }
    if (tok->slot == -2 && result >= 0 && tracking()) {
        struct ef_fd *e = ef_fd_get(epfd);
        if (e && !(atomic_load(&e->flags) & EF_FD_EPOLL) && enter())
            adopt(epfd, e);
    }
}

/* ------------------------------------------------------- close and dups */

void ef_on_close(int fd, void *caller)
{
    struct ef_fd *e = ef_fd_peek(fd);
    if (!e)
        return;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if (!f)
        return;
    if (!(f & (EF_FD_EPOLL | EF_FD_REG | EF_FD_MULTI))) {
        atomic_fetch_and(&e->flags, ~EF_FD_DUPED);
        return;
    }
    if (!tracking() || !enter())
        return;
    if (f & EF_FD_EPOLL)
        drop_alias(e);
    if (f == EF_FD_REG && !ef_stale_copy_possible(fd, e, f)) {
        /* the common case (a connection closed without DEL): one registration,
         * and the kernel drops it with the close */
        atomic_fetch_and(&e->flags, ~EF_FD_REG);
    } else if (f & (EF_FD_REG | EF_FD_MULTI)) {
        struct ef_regrec regs[16];
        int n = reg_collect(fd, e, regs, 16, 1);
        for (int i = 0; i < n; i++)
            ef_stale_on_close(fd, e, f, &regs[i], caller);
    }
    if (f & EF_FD_DUPED)
        atomic_fetch_and(&e->flags, ~EF_FD_DUPED);
    if (atomic_load_explicit(&e->born, memory_order_relaxed))
        atomic_store(&e->born, 0);
}

static void close_one(int fd, struct ef_fd *e, void *arg)
{
    (void)e;
    ef_on_close(fd, arg);
}

void ef_on_close_range(unsigned lo, unsigned hi, int flags, void *caller)
{
    if (lo > hi || (flags & CLOSE_RANGE_CLOEXEC)) /* CLOEXEC closes nothing now */
        return;
    ef_fd_foreach(lo, hi, close_one, caller);
}

void ef_on_dup(int oldfd, int newfd, void *caller)
{
    if (oldfd == newfd)
        return;
    struct ef_fd *o = ef_fd_peek(oldfd);
    struct ef_fd *n = ef_fd_peek(newfd);
    if (n && atomic_load(&n->flags))
        ef_on_close(newfd, caller); /* dup2/dup3 replaced whatever newfd was */
    /* Two fds now share one open file description: closing one of them no
     * longer removes an epoll registration of it (see stale.c). */
    if (!o)
        o = ef_fd_get(oldfd);
    if (!n)
        n = ef_fd_get(newfd);
    if (!o || !n)
        return;
    uint32_t of = atomic_fetch_or(&o->flags, EF_FD_DUPED);
    atomic_fetch_or(&n->flags, EF_FD_DUPED);
    if (!(of & EF_FD_EPOLL) || !tracking() || !enter())
        return;
    uint32_t idx = atomic_load(&o->inst);
    if (!holds(idx))
        return;
    atomic_fetch_add(&local[idx].aliases, 1);
    set_alias(n, idx);
}

/* A wrapped call created fd: its number was free, so whatever the table says
 * about it is stale (a close we did not see); and after a fork, an fd created
 * since the last fork has no copy in another process. */
void ef_on_fd_born(int fd)
{
    uint32_t epoch = atomic_load_explicit(&ef_fork_epoch, memory_order_relaxed);
    struct ef_fd *e = epoch ? ef_fd_get(fd) : ef_fd_peek(fd);
    if (!e)
        return;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if (EF_UNLIKELY(f & (EF_FD_EPOLL | EF_FD_REG | EF_FD_MULTI | EF_FD_DUPED))) {
        if ((f & EF_FD_EPOLL) && tracking() && enter())
            drop_alias(e);
        if (f & EF_FD_MULTI) {
            struct ef_regrec regs[16];
            reg_collect(fd, e, regs, 16, 1);
        }
        atomic_fetch_and(&e->flags,
                         ~(EF_FD_EPOLL | EF_FD_REG | EF_FD_MULTI | EF_FD_DUPED));
    }
    if (atomic_load_explicit(&e->born, memory_order_relaxed) != epoch)
        atomic_store_explicit(&e->born, epoch, memory_order_relaxed);
}

/* ------------------------------------------------------------------ fork */

static uint32_t hw(void)
{
    uint32_t h = atomic_load(&ef_reg->ninst_hw);
    return h > EF_MAX_INST ? EF_MAX_INST : h;
}

/* In the parent, before the fork (under glibc's atfork lock, so forks that run
 * handlers are serialized and `resv` cannot be mixed up between two forks). */
int ef_holds_any(void)
{
    return atomic_load_explicit(&held_count, memory_order_relaxed) != 0;
}

/* Reservations made for the child being forked: (instance, slot) pairs in
 * ef_fork (one page), or local[].resv for a process holding very many. */
static void resv_set(uint32_t i, int slot)
{
    if (ef_fork.nresv < EF_FORK_RESV) {
        ef_fork.resv[ef_fork.nresv].idx = i;
        ef_fork.resv[ef_fork.nresv].slot = slot;
        ef_fork.nresv++;
    } else {
        local[i].resv = slot;
    }
}

static int resv_get(uint32_t i)
{
    for (int k = 0; k < ef_fork.nresv && k < EF_FORK_RESV; k++)
        if (ef_fork.resv[k].idx == i)
            return ef_fork.resv[k].slot;
    return ef_fork.nresv >= EF_FORK_RESV ? local[i].resv : -1;
}

/* Was this process forked through our handlers?  Its record, prepared by the
 * parent, still waits for it (pid 0: daemon(), whose parent cannot know the
 * pid) or already names it (our fork wrapper wrote it).  A fork that ran no
 * handler finds the record of an earlier child instead.  No flag that the
 * parent would have to clear after the fork (a copy-on-write fault). */
static int forked_through_handlers(pid_t me)
{
    struct ef_proc *p = ef_proc_at(pending_child_proc);
    if (!p || p->parent != ef_self.proc)
        return 0;
    int32_t pid = atomic_load(&p->pid);
    return pid == 0 || pid == me;
}

void ef_on_fork_prepare(void)
{
    atomic_fetch_add(&ef_fork_epoch, 1); /* every fd open now gets a copy */
    if (!tracking()) {
        /* Workers forked before any epoll instance exists must still form
         * one process tree (identical reports from 500 workers printed
         * once): the registry is mapped at the first fork.  One mmap, and
         * nothing else until the process really uses epoll. */
        if (!ef_reg && !ef_opt.disable)
            ef_registry_create();
        return;
    }
    if (!enter())
        return;
    ef_in_shim++;
    if (ef_tls_fork_stack) {
        pending_fork_stack = ef_tls_fork_stack;
        pending_fork_how = ef_tls_fork_how;
        ef_tls_fork_stack = 0;
    } else if (ef_holds_any()) {
        /* daemon(), forkpty(): skip our frames and glibc's handler runner. */
        pending_fork_stack = ef_stack_capture(EF_SKIP_SHIM_AND_ONE, __builtin_return_address(0));
        pending_fork_how = EF_FORK_ATFORK;
    } else {
        pending_fork_stack = 0; /* nothing crosses this fork: no stack needed */
        pending_fork_how = EF_FORK_ATFORK;
    }
    ef_in_shim--;
    pending_parent_mt = ef_stack_parent_mt();
    /* The child's process record exists before the child runs, so that the
     * parent can name it at once (our fork wrapper stores its pid). */
    pending_child_proc = ef_proc_alloc(0, ef_self.proc, pending_fork_stack,
                                       (uint32_t)pending_fork_how);
    uint32_t h = hw();
    uint64_t word = (uint64_t)(EF_RESERVED | (uint32_t)ef_self.pid) << 32;
    ef_fork.nresv = 0;
    for (uint32_t i = 1; i < h; i++) {
        if (!holds(i))
            continue;
        struct ef_inst *in = inst_of(i);
        if (!atomic_load_explicit(&in->crossed, memory_order_relaxed))
            atomic_store(&in->crossed, 1);
        resv_set(i, claim_slot(in, word));
    }
    ef_stack_before_fork();
}

/* Our own fork wrapper knows the child's pid (daemon() does not): turn the
 * reservations into the child's slots, or free them if the fork failed.
 * Only shared pages are written: a private page written after fork costs a
 * copy-on-write fault (the reservations in `local` are left as they are;
 * the next prepare rewrites them). */
void ef_on_fork_returned(pid_t child)
{
    if (!tracking() || !enter())
        return;
    struct ef_proc *cp = ef_proc_at(pending_child_proc);
    if (cp && child > 0) {
        int32_t zero = 0;
        atomic_compare_exchange_strong(&cp->pid, &zero, child);
    }
    uint32_t h = hw();
    uint64_t resv = (uint64_t)(EF_RESERVED | (uint32_t)ef_self.pid) << 32;
    for (uint32_t i = 1; i < h; i++) {
        int s = resv_get(i);
        if (s < 0 || !holds(i))
            continue;
        struct ef_inst *in = inst_of(i);
        uint64_t w = resv;
        if (child > 0) {
            atomic_compare_exchange_strong(&in->holders[s], &w, (uint64_t)(uint32_t)child << 32);
        } else if (atomic_compare_exchange_strong(&in->holders[s], &w, 0)) {
            atomic_fetch_sub(&in->nholders, 1);
        }
    }
}

/* The first event in a child (the wipe page reads zero in any fork child).
 * Through our handlers (fork_seen): take the reserved slots and the process
 * record prepared for us.  Through a fork that ran no handler
 * (syscall(SYS_fork), clone without CLONE_VM, _Fork): become a holder of what
 * we inherited; the parent did not know, so changes it made in between were
 * not recorded. */
void ef_on_fork_detected(void)
{
    ef_wipe->valid = 1;
    ef_report_after_fork_child();
    atomic_store(&ef_vfork_depth, 0);
    pid_t parent = ef_self.pid;
    ef_self.pid = ef_sys_getpid();
    uint64_t mine = (uint64_t)(uint32_t)ef_self.pid << 32;
    uint32_t h = hw();
    int seen = forked_through_handlers(ef_self.pid);
    if (seen) {
        ef_self.proc = pending_child_proc;
        struct ef_proc *me = ef_proc_at(ef_self.proc);
        if (me)
            atomic_store(&me->pid, ef_self.pid);
    } else {
        atomic_fetch_add(&ef_fork_epoch, 1);
        uint32_t fs = ef_tls_fork_stack;
        ef_tls_fork_stack = 0;
        ef_self.proc = ef_proc_alloc(ef_self.pid, ef_self.proc, fs,
                                     fs ? EF_FORK_UNDERSCORE : EF_FORK_UNSEEN);
    }
    uint64_t resv = (uint64_t)(EF_RESERVED | (uint32_t)parent) << 32;
    for (uint32_t i = 1; i < h; i++) {
        struct ef_local *l = &local[i];
        int s = seen ? resv_get(i) : -1;
        if (!atomic_load(&l->uid))
            continue;
        struct ef_inst *in = inst_of(i);
        if (!holds(i) || atomic_load(&in->state) != 1) {
            atomic_store(&l->uid, 0);
            if (atomic_load(&held_count))
                atomic_fetch_sub(&held_count, 1);
            continue;
        }
        if (seen) {
            /* reserved for us by the parent, or already ours (its wrapper
             * knew our pid); a failed reservation was counted as overflow */
            uint64_t w = resv;
            if (s >= 0 && !atomic_compare_exchange_strong(&in->holders[s], &w, mine) && w != mine)
                s = -1;
            atomic_store(&l->slot, s);
        } else {
            atomic_store(&in->crossed, 1);
            atomic_store(&l->slot, claim_slot(in, mine));
        }
    }
    ef_fork.nresv = 0;
    if (seen)
        ef_stack_after_fork_child(pending_parent_mt);
    else
        ef_stack_after_unseen_fork();
    ef_log_after_fork_child();
}

void ef_on_exit(void)
{
    if (!tracking())
        return;
    pid_t me = ef_sys_getpid();
    if (!ef_wipe->valid && forked_through_handlers(me)) {
        /* A child that exits without ever touching epoll: give back what
         * the parent reserved for it, without the rest of the bookkeeping. */
        uint64_t resv = (uint64_t)(EF_RESERVED | (uint32_t)ef_self.pid) << 32;
        uint64_t mine = (uint64_t)(uint32_t)me << 32;
        for (uint32_t i = 1; i < hw(); i++) {
            int s = resv_get(i);
            if (s < 0 || !holds(i))
                continue;
            struct ef_inst *in = inst_of(i);
            uint64_t w = resv;
            if (atomic_compare_exchange_strong(&in->holders[s], &w, 0) ||
                (w == mine && atomic_compare_exchange_strong(&in->holders[s], &w, 0)))
                atomic_fetch_sub(&in->nholders, 1);
        }
        return;
    }
    if (!enter())
        return;
    uint32_t h = hw();
    for (uint32_t i = 1; i < h; i++)
        if (holds(i))
            release(i);
}

int ef_allow_shared(int epfd)
{
    if (!tracking())
        return -1;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load(&e->flags) & EF_FD_EPOLL) || !enter())
        return -1;
    uint32_t idx = atomic_load(&e->inst);
    if (!holds(idx))
        return -1;
    atomic_store(&inst_of(idx)->allowed, 1);
    return 0;
}
