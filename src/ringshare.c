/*
 * ringshare.c - shared-io-uring: one io_uring ring used by two processes
 * after a fork.
 *
 * After a fork both processes map the same submission and completion queues
 * (and liburing's private copy of its indexes goes stale in one of them), so
 * one can take the other's completions and submit the other's half-prepared
 * entries (liburing #612: a ring must not be used on both sides of a fork).
 * A ring record in the registry (registry.c, set up by uring.c) keeps who set
 * it up, whether it crossed a fork, and the last process that submitted to
 * or reaped from it since, with that use's stack and the number of process
 * records that existed at that moment (the registry's `nproc`: process
 * records are allocated at each fork and never reused, so a use recorded
 * with a count above the index of the record of the fork that split two
 * processes happened after that split).  A use by another process whose
 * last recorded use came after the split is a conflict: reported once per
 * ring and fork (either side may notice first; identical reports of many
 * children merge under EPOLLFORK_DEDUP).  A child that only closes the ring
 * or execs never uses it: silent.  A process that keeps using a ring with no
 * fork since its last recorded use pays a few loads, no stack.
 */
#define _GNU_SOURCE
#include "rules.h"

struct ef_ring *ef_ring_record(uint32_t idx, uint32_t uid)
{
    if (!idx || idx >= EF_MAX_RINGS || !ef_reg)
        return NULL;
    struct ef_ring *R = ef_ring_at(idx);
    return atomic_load(&R->uid) == uid && atomic_load(&R->state) == EF_RING_LIVE ? R : NULL;
}

struct last_use {
    int32_t pid, fd;
    uint32_t proc, clock, stack, what;
};

static int read_last(struct ef_ring *R, struct last_use *out)
{
    for (int tries = 0; tries < 64; tries++) {
        uint64_t s1 = atomic_load_explicit(&R->use_seq, memory_order_acquire);
        if (s1 & 1) {
            ef_cpu_relax();
            continue;
        }
        out->pid = R->last_pid;
        out->fd = R->last_fd;
        out->proc = R->last_proc;
        out->clock = R->last_clock;
        out->stack = R->last_stack;
        out->what = R->last_what;
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&R->use_seq, memory_order_relaxed) == s1)
            return 1;
    }
    return 0;
}

static void publish_use(struct ef_ring *R, int fd, enum ef_ring_use what, uint32_t clock,
                        uint32_t stack)
{
    uint64_t s = atomic_load(&R->use_seq);
    for (int tries = 0; tries < 64; tries++) {
        if (!(s & 1) && atomic_compare_exchange_weak(&R->use_seq, &s, s + 1))
            break;
        if (tries == 63)
            return; /* a writer died in the middle: leave the record as it is */
        ef_cpu_relax();
        s = atomic_load(&R->use_seq);
    }
    R->last_pid = ef_self.pid;
    R->last_fd = fd;
    R->last_proc = ef_self.proc;
    R->last_clock = clock;
    R->last_stack = stack;
    R->last_what = what;
    atomic_store_explicit(&R->use_seq, s + 2, memory_order_release);
    /* remembered as a user, so that its record is not reclaimed under it */
    int32_t me = ef_self.pid;
    for (int i = 0; i < EF_RING_USERS; i++)
        if (atomic_load(&R->users[i]) == me)
            return;
    for (int i = 0; i < EF_RING_USERS; i++) {
        int32_t u = atomic_load(&R->users[i]);
        if ((u <= 0 || !ef_procfs_pid_exists(u)) &&
            atomic_compare_exchange_strong(&R->users[i], &u, me))
            return;
    }
}

static void report(uint32_t idx, uint32_t uid, int fd, struct ef_ring *R,
                   const struct last_use *l, uint32_t split, enum ef_ring_use what,
                   struct ef_call *call)
{
    /* One conflict, seen by both sides (each at its own call site): claimed
     * by the ring and the fork that split the two processes. */
    uint64_t k = ef_mix(ef_mix(ef_kinds[EF_KIND_SHARED_URING].key_tag, idx), uid);
    k = ef_mix(k, split);
    if (!ef_claim_once(k ^ (k >> 29)))
        return;
    uint32_t stack = ef_call_stack(call);
    struct ef_report r;
    ef_report_init(&r, EF_KIND_SHARED_URING, NULL, fd);
    r.ring_fd = fd;
    r.ring_use = what;
    r.owner_pid = R->owner_pid;
    r.create_fd = R->setup_fd;
    r.create_how = (int)R->setup_how;
    r.ring_entries = R->setup_entries;
    r.ring_flags = R->setup_flags;
    r.stacks[EF_ST_CREATE] = R->setup_stack;
    r.other_pid = l->pid;
    r.other_ring_fd = l->fd;
    r.other_ring_use = l->what <= EF_RING_SUBMIT_REAP ? (enum ef_ring_use)l->what : EF_RING_SUBMIT;
    r.stacks[EF_ST_USE] = l->stack;
    r.stacks[EF_ST_CALL] = stack;
    r.call_cut = call->cut;
    ef_report_fill_fork(&r, split);
    ef_report_emit(&r);
}

void ef_ring_use(uint32_t idx, uint32_t uid, int fd, enum ef_ring_use what, struct ef_call *call)
{
    struct ef_ring *R = ef_ring_record(idx, uid);
    if (!R)
        return;
    if (!atomic_load_explicit(&R->crossed, memory_order_relaxed)) {
        if (R->owner_pid == ef_self.pid)
            return;
        atomic_store(&R->crossed, 1); /* forked without our handlers */
    }
    uint32_t clock = atomic_load(&ef_reg->nproc);
    struct last_use l;
    if (!read_last(R, &l))
        return;
    if (l.pid == ef_self.pid && l.clock == clock)
        return; /* nothing new: no fork since our last recorded use */
    if (ef_in_shim)
        return;
    EF_GUARD_SCOPE();
    if (l.pid > 0 && l.pid != ef_self.pid && ef_self.proc) {
        uint32_t split = ef_process_split(ef_self.proc, l.proc);
        if (split && l.clock > split)
            report(idx, uid, fd, R, &l, split, what, call);
    }
    publish_use(R, fd, what, clock, ef_call_stack(call));
}
