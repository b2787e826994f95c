/*
 * hold.c - what this process holds: tracking state, epoll instances and their
 * holder slots, aliases, and what a fork does to all of them.
 *
 * A process *holds* an instance while one of its fds refers to it (any number
 * of aliases: dup, dup2, fcntl).  Holders are listed in the instance's 32
 * holder slots in the registry (pid, and how many of its threads are blocked
 * in a wait on it), so that another process can tell whether anyone else
 * relies on a list.  An instance is *crossed* once a holder forked.  The
 * process-private view of each instance (struct ef_local, in .bss: untouched
 * entries cost nothing, and no mapping of its own to copy at each fork) says
 * which instances we hold and what we last saw of them.
 *
 * Forks.  Before a fork (the atfork prepare handler, under glibc's atfork
 * lock) the parent marks what it holds as crossed and reserves a holder slot
 * for the child in each, and prepares the child's process record, so that
 * the parent can name the child at once and a change made before the child
 * runs is already seen as shared.  The child does nothing in the fork itself:
 * its bookkeeping waits for its first event (ef_on_fork_child), found through
 * the wipe page, because every page a child runs or writes is a page fault and
 * most children exec or exit first (bench/RESULTS.md).  A fork that ran no
 * handler (syscall(SYS_fork), clone, _Fork) is found the same way; the child
 * then claims slots of its own, and changes its parent made in between were
 * not recorded (README, limits).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <sys/epoll.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/single_threaded.h>
#include <unistd.h>

#include "rules.h"

EF_HOT struct ef_self ef_self;
EF_HOT void (*ef_track_started_hook)(void);
/* The instance of no index, all zero: read where an index does not name one
 * (ef_inst_at), so a page of .rodata before tracking starts (nothing writes
 * it then), the zone's after (zone.c). */
static const struct ef_inst inst_none_ro;
EF_HOT struct ef_inst *ef_inst_none = (struct ef_inst *)&inst_none_ro;
EF_HOT struct ef_wipe *ef_wipe;
/* In .data, on the page the loader wrote (EF_HOT): after a fork the parent's
 * first write to that page is a copy-on-write fault whatever it writes, so
 * the fork state shares it instead of costing a page of its own. */
EF_HOT struct ef_fork_state ef_fork;
EF_TLS uint32_t ef_tls_fork_stack;
EF_TLS int ef_tls_fork_how;

EF_HOT static struct ef_local *local;   /* [EF_MAX_INST], the zone's (zone.c), at tracking */
static struct ef_local local_none;      /* ef_local_at() before that */
_Static_assert(EF_MAX_INST * sizeof(struct ef_local) <= EF_Z_BYTES(LOCAL), "local fits");
_Static_assert(sizeof(struct ef_inst) <= EF_Z_BYTES(INST_NONE), "the none instance fits");
EF_HOT static _Atomic uint32_t held_count;     /* instances this process holds */
EF_HOT _Atomic uint32_t ef_rings_held;         /* io_uring rings it holds (uring.c counts them) */

/* ------------------------------------------------------------------ start */

/* The process table of the tree is full: later processes have no fork stack
 * in reports (they are still tracked).  Said once per tree, never from the
 * fork itself (the prepare handler may not write logs in a child). */
EF_INIT_TEXT static void process_table_full(void)
{
    if (ef_notice_once(EF_NOTICE_PROC_FULL))
        ef_log_notice("epollfork: more than %d processes in this process tree; later ones are "
                      "tracked, but reports name no fork for them", EF_MAX_PROC - 1);
}

/* A fork epoch no process of the tree had before (ef_epoch).  From the
 * shared registry: a hostile value can only make two eras equal (a stale
 * registration then goes unjudged), never more. */
EF_INIT_TEXT static uint32_t fresh_epoch(void)
{
    uint32_t e = ef_reg ? atomic_fetch_add(&ef_reg->epochs, 1) + 1 : 1;
    return e == 0 || e == EF_EPOCH_UNKNOWN ? 1 : e;
}

EF_INIT_TEXT int ef_track_start(void)
{
    int st = atomic_load_explicit(&ef_self.tracking, memory_order_acquire);
    if (EF_LIKELY(st == EF_TRACK_ON))
        return 1;
    if (st != EF_TRACK_OFF)
        return 0;
    if (!atomic_compare_exchange_strong(&ef_self.tracking, &st, EF_TRACK_STARTING))
        return 0;
    /* the private tables first: one mapping, its last page the wipe page */
    struct ef_local *lz = ef_zone(EF_Z_LOCAL);
    struct ef_inst *nz = ef_zone(EF_Z_INST_NONE);
    struct ef_wipe *w = ef_zone(EF_Z_WIPE);
    int ok = lz && nz && w && ef_zone_wipe_ok() && ef_registry_create() == 0;
    if (!ok) {
        /* RLIMIT_AS, or no memory: say so once, where reports would go. */
        int why = errno;
        ef_log_setup();
        ef_log_notice("epollfork: cannot map the memory shared by the process tree (%s); "
                      "this process is not tracked", strerror(why));
    }
    if (ok) {
        local = lz;
        ef_inst_none = nz;
        ef_wipe = w;
        ef_wipe->valid = 1;
        if (atomic_load(&ef_fork.forked))
            atomic_store(&ef_wipe->epoch, fresh_epoch()); /* forked before: a new era */
    }
    if (ok) {
        ef_self.pid = ef_owner_pid = ef_sys_getpid();
        ef_self.proc = ef_process_alloc(ef_self.pid, 0, 0, EF_FORK_ROOT);
        ef_stack_set_owner(ef_self.proc);
        ef_log_setup();
        if (!ef_self.proc)
            process_table_full();
        /* Without /proc the kernel's word is unreadable: stale registrations
         * and exec leaks cannot be judged.  Say it, do not go quiet.  Asked
         * with statfs("/proc") (is procfs mounted there?), which the kernel
         * answers from the cached root: a first access() under /proc/self
         * costs a process ~30 us (its /proc/PID directory is made then). */
        struct statfs sf;
        int e = 0;
        if (ef_sys6(SYS_statfs, (long)"/proc", (long)&sf, 0, 0, 0, 0) != 0)
            e = errno;
        else if (sf.f_type != PROC_SUPER_MAGIC)
            e = ENOENT;
        if (e && ef_notice_once(EF_NOTICE_NO_PROC))
            ef_log_notice("epollfork: /proc is not readable here (%s): stale-registration and "
                          "epoll-fd-exec-leak cannot be judged, and reports name fewer targets",
                          strerror(e));
    }
    atomic_store_explicit(&ef_self.tracking, ok ? EF_TRACK_ON : EF_TRACK_FAILED,
                          memory_order_release);
    if (ok && ef_track_started_hook)
        ef_track_started_hook();
    return ok;
}

/* Every event that touches per-process state first makes sure this is still
 * the process that state belongs to: a fork leaves the wipe page zeroed, and
 * a vfork child shares our memory and must not write to it. */
EF_HOT_TEXT int ef_enter(void)
{
    if (EF_UNLIKELY(!ef_wipe->valid))
        ef_on_fork_child();
    if (ef_in_vfork_child())
        return 0;
    return 1;
}

EF_HOT_TEXT struct ef_local *ef_local_at(uint32_t idx)
{
    return local ? &local[idx < EF_MAX_INST ? idx : 0] : &local_none;
}

/* Is the local view of idx current (we hold it, and it was not recycled)? */
static inline int holds(uint32_t idx)
{
    uint32_t u = atomic_load_explicit(&local[idx].uid, memory_order_relaxed);
    return u && u == atomic_load_explicit(&ef_inst_at(idx)->uid, memory_order_relaxed);
}

EF_HOT_TEXT int ef_holds(uint32_t idx)
{
    return idx && idx < EF_MAX_INST && ef_reg && local && holds(idx);
}

EF_INIT_TEXT int ef_holds_any(void)
{
    return atomic_load_explicit(&held_count, memory_order_relaxed) != 0;
}

EF_INIT_TEXT int ef_fork_matters(void)
{
    return ef_holds_any() || atomic_load_explicit(&ef_rings_held, memory_order_relaxed) != 0;
}

/* The instance indexes in use: [1, hw()). */
static uint32_t hw(void)
{
    uint32_t h = atomic_load(&ef_reg->ninst_hw);
    return h > EF_MAX_INST ? EF_MAX_INST : h;
}

/* --------------------------------------------------------------- holders */

EF_INIT_TEXT static int claim_free_slot(struct ef_inst *in, uint64_t word)
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

EF_INIT_TEXT static int claim_slot(uint32_t idx, uint64_t word)
{
    struct ef_inst *in = ef_inst_at(idx);
    int s = claim_free_slot(in, word);
    /* Full: children that _exit()ed or were killed left their slots (a
     * prefork server reaps thousands); give back those of dead processes. */
    if (s < 0 && ef_inst_prune(idx) < EF_HOLDERS)
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

EF_INIT_TEXT static void release_slot(struct ef_inst *in, int slot, uint32_t pid)
{
    if (slot < 0 || slot >= EF_HOLDERS)
        return;
    uint64_t w = atomic_load(&in->holders[slot]);
    while ((uint32_t)(w >> 32) == pid) {
        if (atomic_compare_exchange_weak(&in->holders[slot], &w, 0)) {
            atomic_fetch_sub(&in->nholders, 1);
            return;
        }
    }
}

/* The slot that parent reserved for its child in `s` becomes the child's
 * (child_pid), or is freed (child_pid 0: the fork failed).  1 when the slot
 * now holds the child, whichever side settled it first. */
EF_INIT_TEXT static int settle_slot(struct ef_inst *in, int s, uint32_t parent, uint32_t child_pid)
{
    if (s < 0 || s >= EF_HOLDERS)
        return 0;
    uint64_t resv = (uint64_t)(EF_RESERVED | parent) << 32;
    uint64_t want = (uint64_t)child_pid << 32;
    uint64_t w = resv;
    if (atomic_compare_exchange_strong(&in->holders[s], &w, want)) {
        if (!child_pid)
            atomic_fetch_sub(&in->nholders, 1);
        return child_pid != 0;
    }
    return child_pid && w == want;
}

/* What this process's hold of idx kept in the instance: its holder slot, or
 * its count among the slot-less holders; the instance is freed when no one
 * holds it.  Shared memory only. */
EF_INIT_TEXT static void release_shared(uint32_t idx, uint32_t uid, int slot)
{
    struct ef_inst *in = ef_inst_at(idx);
    if (!uid || uid != atomic_load(&in->uid))
        return;
    if (slot >= 0)
        release_slot(in, slot, (uint32_t)ef_self.pid);
    else if (atomic_load(&in->overflow))
        atomic_fetch_sub(&in->overflow, 1); /* we were one of the slot-less holders */
    if (atomic_load(&in->nholders) == 0 && !atomic_load(&in->overflow))
        ef_inst_free(idx);
}

/* This process no longer holds idx (its last alias was closed). */
static void release(uint32_t idx)
{
    struct ef_local *l = &local[idx];
    struct ef_inst *in = ef_inst_at(idx);
    uint32_t uid = atomic_exchange(&l->uid, 0);
    int slot = atomic_exchange(&l->slot, -1);
    if (uid && atomic_load(&held_count))
        atomic_fetch_sub(&held_count, 1);
    (void)in;
    release_shared(idx, uid, slot);
}

uint32_t ef_hold_drop_alias(struct ef_fd *e)
{
    uint32_t f = atomic_fetch_and(&e->flags, ~EF_FD_EPOLL);
    if (!(f & EF_FD_EPOLL))
        return 0;
    uint32_t idx = atomic_load(&e->inst);
    uint32_t uid = atomic_load(&e->inst_uid);
    if (!idx || idx >= EF_MAX_INST || atomic_load(&local[idx].uid) != uid)
        return 0;
    if (atomic_fetch_sub(&local[idx].aliases, 1) != 1)
        return 0;
    release(idx);
    return idx;
}

static void set_alias(struct ef_fd *e, uint32_t idx)
{
    atomic_store(&e->inst, idx);
    atomic_store(&e->inst_uid, atomic_load(&local[idx].uid));
    atomic_fetch_or(&e->flags, EF_FD_EPOLL);
}

void ef_hold_add_alias(struct ef_fd *n, uint32_t idx)
{
    if (!ef_holds(idx))
        return;
    atomic_fetch_add(&local[idx].aliases, 1);
    set_alias(n, idx);
}

EF_INIT_TEXT uint32_t ef_hold_create(int fd, struct ef_fd *e, enum ef_create_how how, int flags, void *caller)
{
    uint32_t idx;
    struct ef_inst *in = ef_inst_alloc(&idx);
    if (!in)
        return 0;
    in->owner_pid = ef_self.pid;
    in->owner_proc = ef_self.proc;
    in->create_fd = fd;
    in->create_how = how;
    in->create_flags = flags;
    in->create_stack = how == EF_CREATE_ADOPTED ? 0 : ef_stack_capture(EF_SKIP_SHIM, caller);
    struct ef_local *l = &local[idx];
    atomic_fetch_add(&held_count, 1);
    atomic_store(&l->slot, claim_slot(idx, (uint64_t)(uint32_t)ef_self.pid << 32));
    l->resv = -1;
    atomic_store(&l->lastseen, 0);
    atomic_store(&l->lost, 0);
    atomic_store(&l->aliases, 1);
    atomic_store(&l->uid, atomic_load(&in->uid));
    set_alias(e, idx);
    return idx;
}

/* Count one more thread of ours blocked in a wait on idx. */
int ef_hold_claim_wait(uint32_t idx, int *slot_out)
{
    struct ef_inst *in = ef_inst_at(idx);
    int slot = atomic_load_explicit(&local[idx].slot, memory_order_relaxed);
    if (slot < 0 || slot >= EF_HOLDERS || !holds(idx))
        return 0;
    uint64_t w = atomic_load_explicit(&in->holders[slot], memory_order_relaxed);
    while ((uint32_t)(w >> 32) == (uint32_t)ef_self.pid) {
        if (atomic_compare_exchange_weak(&in->holders[slot], &w, w + 1)) {
            *slot_out = slot;
            return 1;
        }
    }
    return 0;
}

void ef_hold_release_wait(uint32_t idx, uint32_t uid, int slot)
{
    struct ef_inst *in = ef_inst_at(idx);
    if (slot < 0 || slot >= EF_HOLDERS || atomic_load(&in->uid) != uid)
        return;
    uint64_t w = atomic_load(&in->holders[slot]);
    while ((uint32_t)(w >> 32) == (uint32_t)ef_self.pid && (uint32_t)w) {
        if (atomic_compare_exchange_weak(&in->holders[slot], &w, w - 1))
            break;
    }
}

/* ------------------------------------------------------------------ fork */

/* Reservations made for the child being forked: (instance, slot) pairs in
 * ef_fork (one page), or local[].resv for a process holding very many. */
EF_INIT_TEXT static int resv_get(uint32_t i)
{
    for (int k = 0; k < ef_fork.nresv && k < EF_FORK_RESV; k++)
        if (ef_fork.resv[k].idx == i)
            return ef_fork.resv[k].slot;
    return ef_fork.nresv >= EF_FORK_RESV ? local[i].resv : -1;
}

/* Slot s of idx, which the dead child prev_pid held (or nobody, once pruned),
 * reserved again with word: the slot index stays what ef_fork says. */
EF_INIT_TEXT static int retake_slot(uint32_t idx, int s, uint32_t prev_pid, uint64_t word)
{
    if (s < 0 || s >= EF_HOLDERS || !prev_pid)
        return 0;
    struct ef_inst *in = ef_inst_at(idx);
    uint64_t w = atomic_load(&in->holders[s]);
    if (!w) {
        if (!atomic_compare_exchange_strong(&in->holders[s], &w, word))
            return 0;
        atomic_fetch_add(&in->nholders, 1);
        return 1;
    }
    return (uint32_t)(w >> 32) == prev_pid && atomic_compare_exchange_strong(&in->holders[s], &w, word);
}

/* The record of our last child, for the child of this fork, when that child
 * is gone (reaped) without ever having had an event: nothing refers to it
 * (its own children, reports, a wait would all have claimed it).  A fork loop
 * whose children exit or exec at once then keeps ef_fork as it is, and
 * writes no private page at all.  Its pid, for its slots; 0: not reusable. */
EF_INIT_TEXT static uint32_t reuse_child_record(uint32_t stack, int how, uint32_t *prev_pid)
{
    struct ef_process *p = ef_process_at(ef_fork.child_proc);
    if (!p || p->parent != ef_self.proc || atomic_load(&p->claimed))
        return 0;
    int32_t pid = atomic_load(&p->pid);
    if (pid <= 0 || pid == ef_self.pid)
        return 0;
    /* gone: reaped (a zombie still answers); a raw kill(pid, 0), which sets
     * no errno (the thread's errno page is private too) */
    long r = ef_raw6(SYS_kill, pid, 0, 0, 0, 0, 0);
    if (r != -ESRCH)
        return 0;
    *prev_pid = (uint32_t)pid;
    p->fork_stack = stack;
    p->fork_how = (uint32_t)how;
    atomic_store(&p->pid, 0);
    return ef_fork.child_proc;
}

#define SET_IF_CHANGED(lv, v)                                                                   \
    do {                                                                                       \
        if ((lv) != (v))                                                                       \
            (lv) = (v);                                                                        \
    } while (0)

/* The child's first EF_FORK_RESV reservations (of n) into ef_fork, each
 * field written only if it changed (a private page). */
EF_INIT_TEXT static void resv_store(const uint32_t *idx, const int32_t *slot, int n)
{
    int kept = n < EF_FORK_RESV ? n : EF_FORK_RESV;
    for (int k = 0; k < kept; k++) {
        SET_IF_CHANGED(ef_fork.resv[k].idx, idx[k]);
        SET_IF_CHANGED(ef_fork.resv[k].slot, slot[k]);
    }
    SET_IF_CHANGED(ef_fork.nresv, kept);
}

/* Every reservation the parent made for its child at the last fork becomes
 * the child's slot (child_pid), or is freed (0). */
EF_INIT_TEXT static void settle_reservations(uint32_t parent, uint32_t child_pid)
{
    uint32_t h = hw();
    for (uint32_t i = 1; i < h; i++) {
        int s = resv_get(i);
        if (s >= 0 && holds(i))
            settle_slot(ef_inst_at(i), s, parent, child_pid);
    }
}

/* Was this process forked through our handlers?  Its record, prepared by the
 * parent, still waits for it (pid 0: daemon(), whose parent cannot know the
 * pid) or already names it (our fork wrapper wrote it).  A fork that ran no
 * handler finds the record of an earlier child instead.  No flag that the
 * parent would have to clear after the fork (a copy-on-write fault). */
EF_INIT_TEXT static int forked_through_handlers(pid_t me)
{
    struct ef_process *p = ef_process_at(ef_fork.child_proc);
    if (!p || p->parent != ef_self.proc)
        return 0;
    int32_t pid = atomic_load(&p->pid);
    return pid == 0 || pid == me;
}

EF_INIT_TEXT void ef_fork_hand_over(uint32_t stack, int how)
{
    uintptr_t none = 0, self = (uintptr_t)pthread_self();
    struct ef_wipe *w = ef_wipe;
    if (w && atomic_compare_exchange_strong(&w->handed_owner, &none, self)) {
        w->handed_stack = stack;
        w->handed_how = how;
        return;
    }
    ef_tls_fork_stack = stack; /* another thread is forking: its own slot */
    ef_tls_fork_how = how;
}

EF_INIT_TEXT void ef_fork_take_back(void)
{
    /* reads only, unless a slot is still ours: a private page written
     * after a fork is a copy-on-write fault */
    uintptr_t self = (uintptr_t)pthread_self();
    struct ef_wipe *w = ef_wipe;
    if (w && atomic_load_explicit(&w->handed_owner, memory_order_relaxed) == self)
        atomic_store_explicit(&w->handed_owner, 0, memory_order_release);
    if (ef_tls_fork_stack)
        ef_tls_fork_stack = 0;
}

EF_INIT_TEXT void ef_on_fork_prepare(void)
{
    /* written at the first fork only: while nothing is tracked, fds carry no
     * epoch (ef_born_epoch), and this is all a fork changes (a shell forks
     * at every command) */
    if (!atomic_load_explicit(&ef_fork.forked, memory_order_relaxed))
        atomic_store(&ef_fork.forked, 1);
    if (!ef_tracking()) {
        /* Workers forked before any epoll instance exists must still form
         * one process tree (identical reports from 500 workers printed
         * once): the registry is mapped at the first fork.  One mmap, and
         * nothing else until the process really uses epoll. */
        if (!ef_reg && !ef_opt.disable)
            ef_registry_create();
        return;
    }
    if (!ef_enter())
        return;
    /* every fd open now gets a copy: a new era, on the wipe page (a fork
     * does not write-protect it in the parent) */
    atomic_store(&ef_wipe->epoch, fresh_epoch());
    /* TLS first: a wrapper's stack is there when the slot in the wipe page
     * was taken, by another thread or by this one's fork that a signal
     * handler's fork interrupted (the handler's is the fork being made) */
    uint32_t stack;
    int how;
    if (ef_tls_fork_stack) {
        stack = ef_tls_fork_stack;
        how = ef_tls_fork_how;
        ef_tls_fork_stack = 0;
    } else if (atomic_load_explicit(&ef_wipe->handed_owner, memory_order_acquire) ==
               (uintptr_t)pthread_self()) {
        stack = ef_wipe->handed_stack;
        how = ef_wipe->handed_how;
        atomic_store_explicit(&ef_wipe->handed_owner, 0, memory_order_release);
    } else if (ef_fork_matters()) {
        /* daemon(), forkpty(): skip our frames and glibc's handler runner. */
        stack = ef_stack_capture(EF_SKIP_SHIM_AND_ONE, __builtin_return_address(0));
        how = EF_FORK_ATFORK;
    } else {
        stack = 0; /* nothing crosses this fork: no stack needed */
        how = EF_FORK_ATFORK;
    }
    SET_IF_CHANGED(ef_fork.stack, stack);
    SET_IF_CHANGED(ef_fork.how, how);
    SET_IF_CHANGED(ef_fork.parent_mt, ef_stack_parent_mt());
    /* The child's process record exists before the child runs, so that the
     * parent can name it at once (our fork wrapper stores its pid). */
    uint32_t prev_pid = 0;
    uint32_t cp = reuse_child_record(stack, how, &prev_pid);
    if (!cp)
        cp = ef_process_alloc(0, ef_self.proc, stack, (enum ef_fork_how)how);
    SET_IF_CHANGED(ef_fork.child_proc, cp);
    if (!cp)
        process_table_full();
    uint32_t h = hw();
    uint64_t word = (uint64_t)(EF_RESERVED | (uint32_t)ef_self.pid) << 32;
    /* the first EF_FORK_RESV in ef_fork, written once all are read (the last
     * fork's are where this one's may be taken again from), the others in
     * local[] (one each) */
    uint32_t idx[EF_FORK_RESV];
    int32_t slot[EF_FORK_RESV];
    int n = 0;
    for (uint32_t i = 1; i < h; i++) {
        if (!holds(i))
            continue;
        struct ef_inst *in = ef_inst_at(i);
        if (!atomic_load_explicit(&in->crossed, memory_order_relaxed))
            atomic_store(&in->crossed, 1);
        int prev = prev_pid ? resv_get(i) : -1;
        int s = prev >= 0 && retake_slot(i, prev, prev_pid, word) ? prev : claim_slot(i, word);
        if (n < EF_FORK_RESV) {
            idx[n] = i;
            slot[n] = s;
        } else {
            SET_IF_CHANGED(local[i].resv, s);
        }
        n++;
    }
    resv_store(idx, slot, n);
    ef_stack_before_fork();
}

/* Our own fork wrapper knows the child's pid (daemon() does not): turn the
 * reservations into the child's slots, or free them if the fork failed.
 * Only shared pages are written: a private page written after fork costs a
 * copy-on-write fault (the reservations in `local` are left as they are;
 * the next prepare rewrites them). */
EF_INIT_TEXT void ef_on_fork_returned(pid_t child)
{
    if (!ef_tracking() || !ef_enter())
        return;
    struct ef_process *cp = ef_process_at(ef_fork.child_proc);
    if (cp && child > 0) {
        int32_t zero = 0;
        atomic_compare_exchange_strong(&cp->pid, &zero, child);
    }
    settle_reservations((uint32_t)ef_self.pid, child > 0 ? (uint32_t)child : 0);
}

void ef_on_fork_child(void)
{
    ef_wipe->valid = 1;
    ef_report_after_fork_child();
    atomic_store(&ef_vfork_depth, 0);
    pid_t parent = ef_self.pid;
    ef_self.pid = ef_owner_pid = ef_sys_getpid();
    uint64_t mine = (uint64_t)(uint32_t)ef_self.pid << 32;
    uint32_t h = hw();
    int seen = forked_through_handlers(ef_self.pid);
    atomic_store(&ef_wipe->epoch, fresh_epoch()); /* its own era from now on */
    if (seen) {
        ef_self.proc = ef_fork.child_proc;
        struct ef_process *me = ef_process_at(ef_self.proc);
        if (me) {
            atomic_store(&me->pid, ef_self.pid);
            atomic_store(&me->claimed, 1); /* no longer reusable (reuse_child_record) */
        }
    } else {
        uint32_t fs = ef_tls_fork_stack;
        ef_tls_fork_stack = 0;
        ef_self.proc = ef_process_alloc(ef_self.pid, ef_self.proc, fs,
                                        fs ? EF_FORK_UNDERSCORE : EF_FORK_UNSEEN);
        if (!ef_self.proc)
            process_table_full();
    }
    ef_stack_set_owner(ef_self.proc);
    for (uint32_t i = 1; i < h; i++) {
        struct ef_local *l = &local[i];
        if (!atomic_load(&l->uid))
            continue;
        struct ef_inst *in = ef_inst_at(i);
        if (!holds(i) || atomic_load(&in->state) != EF_INST_LIVE) {
            atomic_store(&l->uid, 0);
            if (atomic_load(&held_count))
                atomic_fetch_sub(&held_count, 1);
            continue;
        }
        if (seen) {
            /* reserved for us by the parent, or already ours (its wrapper
             * knew our pid); a failed reservation was counted as overflow */
            int s = resv_get(i);
            atomic_store(&l->slot, settle_slot(in, s, (uint32_t)parent, (uint32_t)ef_self.pid)
                                       ? s : -1);
        } else {
            atomic_store(&in->crossed, 1);
            atomic_store(&l->slot, claim_slot(i, mine));
        }
    }
    ef_fork.nresv = 0;
    if (seen)
        ef_stack_after_fork_child(ef_fork.parent_mt);
    else
        ef_stack_after_unseen_fork();
    ef_log_after_fork_child();
}

EF_INIT_TEXT void ef_on_exit(void)
{
    /* Shared memory and raw system calls only: no private page written (each
     * one is a copy-on-write fault in a process that forked), errno left
     * alone (init.c reads it only when something may change it). */
    if (!ef_tracking())
        return;
    if (!ef_wipe->valid) {
        /* A child that exits without ever touching epoll: give back what
         * the parent reserved for it, without the rest of the bookkeeping
         * (one forked without handlers holds no slot of its own yet). */
        pid_t me = ef_sys_getpid();
        if (!forked_through_handlers(me))
            return;
        uint32_t h = hw();
        for (uint32_t i = 1; i < h; i++) {
            int s = resv_get(i);
            if (s >= 0 && holds(i) &&
                settle_slot(ef_inst_at(i), s, (uint32_t)ef_self.pid, (uint32_t)me))
                release_slot(ef_inst_at(i), s, (uint32_t)me);
        }
        return;
    }
    if (ef_in_vfork_child())
        return; /* a vfork child: the holds are its parent's */
    uint32_t h = hw();
    for (uint32_t i = 1; i < h; i++)
        if (holds(i))
            release_shared(i, atomic_load(&local[i].uid), atomic_load(&local[i].slot));
}

int ef_allow_shared(int epfd)
{
    if (!ef_tracking())
        return -1;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load(&e->flags) & EF_FD_EPOLL) || !ef_enter())
        return -1;
    uint32_t idx = atomic_load(&e->inst);
    if (!ef_holds(idx))
        return -1;
    atomic_store(&ef_inst_at(idx)->allowed, 1);
    return 0;
}
