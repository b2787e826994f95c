/*
 * interest.c - the interest entries this process made: which fd it registered
 * in which instance, with the stack of the EPOLL_CTL_ADD.
 *
 * A report about a change names the ADD that registered the fd, and a close
 * of a registered fd is where a stale registration starts (stale.c), so every
 * ADD is remembered until its DEL or close.  The fd table keeps one entry per
 * fd (the common case, no extra cost: int_inst, int_uid, add_stack, add_pid);
 * an fd that several instances watch (threads with one epoll each on a shared
 * listener) keeps the others in a side table here, keyed on (fd, instance).
 * Process-private, like the fd table: a fork copies it, as the kernel copies
 * fds.
 */
#define _GNU_SOURCE
#include "rules.h"

#define SIDE 4096
#define SIDE_TOMB (~0ull)
struct side_entry {
    _Atomic uint64_t key;
    uint32_t uid, add_stack;
    int32_t add_pid;
    uint32_t via;               /* enum ef_via of the ADD */
};
/* [SIDE], the zone's (zone.c), made at the first fd registered twice */
EF_HOT static struct side_entry *side;
_Static_assert(SIDE * sizeof(struct side_entry) <= EF_Z_BYTES(SIDE), "the side table fits");

static uint64_t side_key(int fd, uint32_t idx)
{
    return (uint64_t)(uint32_t)fd << 32 | idx;
}

static int side_slot(uint64_t key, int create)
{
    if (!side && (!create || !(side = ef_zone(EF_Z_SIDE))))
        return -1;
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

static enum ef_via primary_via(uint32_t flags)
{
    return flags & EF_FD_ADD_RING ? EF_VIA_IO_URING : EF_VIA_EPOLL_CTL;
}

/* Does the fd table's own entry describe a registration in a live instance? */
static int primary_valid(struct ef_fd *e)
{
    if (!(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_INTEREST))
        return 0;
    uint32_t idx = atomic_load_explicit(&e->int_inst, memory_order_relaxed);
    return ef_holds(idx) && atomic_load(&ef_local_at(idx)->uid) == atomic_load(&e->int_uid);
}

EF_HOT_TEXT void ef_interest_add(int fd, struct ef_fd *e, uint32_t idx, uint32_t stack, enum ef_via via)
{
    uint32_t uid = atomic_load_explicit(&ef_inst_at(idx)->uid, memory_order_relaxed);
    if (!primary_valid(e) || atomic_load_explicit(&e->int_inst, memory_order_relaxed) == idx) {
        atomic_store_explicit(&e->add_stack, stack, memory_order_relaxed);
        atomic_store_explicit(&e->add_pid, ef_self.pid, memory_order_relaxed);
        atomic_store_explicit(&e->int_inst, idx, memory_order_relaxed);
        atomic_store_explicit(&e->int_uid, uid, memory_order_relaxed);
        if (EF_UNLIKELY(via == EF_VIA_IO_URING))
            atomic_fetch_or_explicit(&e->flags, EF_FD_INTEREST | EF_FD_ADD_RING,
                                     memory_order_relaxed);
        else
            atomic_fetch_or_explicit(&e->flags, EF_FD_INTEREST, memory_order_relaxed);
        if (via != EF_VIA_IO_URING &&
            EF_UNLIKELY(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_ADD_RING))
            atomic_fetch_and(&e->flags, ~EF_FD_ADD_RING);
        return;
    }
    int s = side_slot(side_key(fd, idx), 1);
    if (s < 0)
        return; /* full: this registration's ADD stack will be missing */
    side[s].uid = uid;
    side[s].add_stack = stack;
    side[s].add_pid = ef_self.pid;
    side[s].via = via;
    atomic_fetch_or(&e->flags, EF_FD_MULTI);
}

int ef_interest_find(int fd, struct ef_fd *e, uint32_t idx, struct ef_interest *out)
{
    if (!e)
        return 0;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if ((f & EF_FD_INTEREST) && atomic_load_explicit(&e->int_inst, memory_order_relaxed) == idx) {
        *out = (struct ef_interest){idx, atomic_load(&e->int_uid), atomic_load(&e->add_stack),
                                    atomic_load(&e->add_pid), primary_via(f)};
        return 1;
    }
    if (!(f & EF_FD_MULTI))
        return 0;
    int s = side_slot(side_key(fd, idx), 0);
    if (s < 0)
        return 0;
    *out = (struct ef_interest){idx, side[s].uid, side[s].add_stack, side[s].add_pid,
                                (enum ef_via)side[s].via};
    return 1;
}

EF_HOT_TEXT void ef_interest_del(int fd, struct ef_fd *e, uint32_t idx)
{
    uint32_t f = atomic_load(&e->flags);
    if ((f & EF_FD_INTEREST) && atomic_load(&e->int_inst) == idx) {
        atomic_fetch_and(&e->flags, ~(EF_FD_INTEREST | EF_FD_ADD_RING));
        atomic_store(&e->add_stack, 0);
        return;
    }
    if (!(f & EF_FD_MULTI))
        return;
    int s = side_slot(side_key(fd, idx), 0);
    if (s >= 0)
        atomic_store(&side[s].key, SIDE_TOMB);
}

int ef_interest_collect(int fd, struct ef_fd *e, struct ef_interest *out, int max, int clear)
{
    int n = 0;
    uint32_t f = atomic_load(&e->flags);
    if ((f & EF_FD_INTEREST) && n < max)
        out[n++] = (struct ef_interest){atomic_load(&e->int_inst), atomic_load(&e->int_uid),
                                        atomic_load(&e->add_stack), atomic_load(&e->add_pid),
                                        primary_via(f)};
    if ((f & EF_FD_MULTI) && side) {
        for (uint32_t s = 0; s < SIDE; s++) {
            uint64_t k = atomic_load(&side[s].key);
            if (!k || k == SIDE_TOMB || (uint32_t)(k >> 32) != (uint32_t)fd)
                continue;
            if (n < max)
                out[n++] = (struct ef_interest){(uint32_t)k, side[s].uid, side[s].add_stack,
                                                side[s].add_pid, (enum ef_via)side[s].via};
            if (clear)
                atomic_store(&side[s].key, SIDE_TOMB);
        }
    }
    if (clear) {
        atomic_fetch_and(&e->flags, ~(EF_FD_INTEREST | EF_FD_MULTI | EF_FD_ADD_RING));
        atomic_store(&e->add_stack, 0);
    }
    return n;
}

/* Repair mode gave this process a private copy of instance `from` (repair.c):
 * the registration moves with it, with its ADD stack and the process that
 * made it, so that a later report about the copy still names the ADD. */
void ef_interest_move(int fd, struct ef_fd *e, uint32_t from, uint32_t to)
{
    struct ef_interest it;
    if (!e || !ef_interest_find(fd, e, from, &it))
        return;
    ef_interest_del(fd, e, from);
    ef_interest_add(fd, e, to, it.add_stack, it.via);
    if ((atomic_load(&e->flags) & EF_FD_INTEREST) && atomic_load(&e->int_inst) == to) {
        atomic_store(&e->add_pid, it.add_pid);
        return;
    }
    int s = side_slot(side_key(fd, to), 0);
    if (s >= 0)
        side[s].add_pid = it.add_pid;
}
