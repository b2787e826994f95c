/*
 * uring.c - io_uring rings: the IORING_OP_EPOLL_CTL they submit (README
 * "io_uring"; shared-io-uring is ringshare.c).
 *
 * Since libuv 1.45 a loop's EPOLL_CTL_ADD and _MOD are SQEs of a ring.  The
 * shim follows the rings the program sets up (io_uring_setup through
 * syscall() or liburing, the program's own mmaps of the ring fd, liburing's
 * io_uring_queue_mmap) and every io_uring_enter.  Before an enter it reads
 * the entries being submitted, from the kernel's SQ head to the program's
 * tail (liburing's own tail when liburing submits), once, while they are in
 * the cache, copying out each IORING_OP_EPOLL_CTL (epfd in `fd`, target in
 * `off`, op in `len`, events at `addr`); after it, the kernel's head says
 * which were consumed (what was consumed beyond the part read before is read
 * then).  Each becomes the event an epoll_ctl raises (ef_on_ctl_from_ring:
 * the use check, the registration, the record), with the enter's stack.  Its
 * outcome is the CQE with its user_data among those the enter posted, else
 * the kernel's list (/proc/self/fdinfo/EPFD): only an entry found there (for
 * DEL, gone) counts as a success.
 *
 * Ring memory is the program's and the kernel's: offsets from io_uring_params
 * are checked against the mappings' lengths, indexes before indexing, each
 * change is copied out of its SQE before use, and `addr` is read only after
 * the kernel accepted it (a CQE with res 0: it copied from there).  What
 * cannot be seen (SQPOLL, registered ring fds, rings set up out of sight,
 * queues mapped out of sight) is said once per process.  Cost: a compare in
 * the syscall, mmap and munmap wrappers until a ring exists; then one pass
 * over what each enter submits (bench/bench.py: 9a).
 */
#define _GNU_SOURCE
#include <linux/io_uring.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rules.h"

#ifndef IORING_SETUP_NO_MMAP
#define IORING_SETUP_NO_MMAP (1u << 14)
#endif
#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1u << 16)
#endif

EF_HOT _Atomic uint32_t ef_uring_nrings;       /* rings this process knows: the wrappers' fast test */

/* ------------------------------------------------------------ the rings */

#define NRING 64
enum slot_state { SLOT_FREE = 0, SLOT_WRITING, SLOT_LIVE };
struct ring {
    /* what every enter reads, first: two cache lines */
    _Atomic uint32_t state;     /* enum slot_state */
    _Atomic uint32_t gen;       /* bumped at each use of the slot (fd table: inst_uid) */
    int fd;
    uint32_t idx, uid;          /* its record in the registry, 0 none */
    uint32_t flags, entries, cq_entries;
    /* set up here, and no fork since (ef_epoch()): no one else can use it */
    int solo;
    uint32_t solo_epoch;
    /* the last epfd found quiet (ef_epoll_quiet) and what made it so */
    int q_epfd;
    uint32_t q_inst, q_uid, q_epoch;
    /* checked views of the mappings, valid while `ready` */
    _Atomic int ready;
    uint32_t sq_mask, cq_mask, sqe_size, cqe_size;
    const _Atomic uint32_t *khead, *ktail, *cqhead, *cqtail;
    const uint32_t *array;
    const char *sqes, *cqes;
    /* the program's mappings (0 until seen), and what the params said */
    char *sq_map, *cq_map, *sqe_map;
    size_t sq_len, cq_len, sqe_len;
    uint32_t features;
    struct io_sqring_offsets sq_off;
    struct io_cqring_offsets cq_off;
};
/* [NRING], the zone's (zone.c), made at the first ring: every use below
 * follows one (a URING fd, ef_uring_nrings) */
EF_HOT static struct ring *rings;
_Static_assert(NRING * sizeof(struct ring) <= EF_Z_BYTES(RINGS), "the rings fit");

/* What the shim saw (EPOLLFORK_DEBUG prints it at exit). */
static _Atomic uint64_t n_rings, n_enters, n_sqes, n_ctl[4], n_cqe, n_fdinfo, n_failed, n_before,
    n_after;

/* ------------------------------------------------------------ notices */

enum { N_SQPOLL = 1, N_REGISTERED = 2, N_UNSEEN = 4, N_NO_SQES = 8, N_FULL = 16, N_NO_MMAP = 32 };
EF_HOT static _Atomic uint32_t noticed;
EF_HOT static _Atomic int32_t noticed_pid;

/* Once per process: a fork child says it again for itself. */
static int notice_once(uint32_t bit)
{
    int32_t me = ef_self.pid;
    if (atomic_load(&noticed_pid) != me) {
        atomic_store(&noticed, 0);
        atomic_store(&noticed_pid, me);
    }
    return !(atomic_fetch_or(&noticed, bit) & bit);
}

/* Said already, by this process? */
static int noticed_here(uint32_t bit)
{
    return atomic_load(&noticed_pid) == ef_self.pid && (atomic_load(&noticed) & bit);
}

#define BLIND "its IORING_OP_EPOLL_CTL submissions are not seen (notice given once per process)"

/* ------------------------------------------------------------ lookup */

EF_INIT_TEXT static struct ring *ring_of_fd(int fd)
{
    struct ef_fd *e = ef_fd_peek(fd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_URING))
        return NULL;
    uint32_t s = atomic_load_explicit(&e->inst, memory_order_relaxed);
    if (s >= NRING || !rings)
        return NULL;
    struct ring *g = &rings[s];
    if (atomic_load_explicit(&g->state, memory_order_acquire) != SLOT_LIVE || g->fd != fd ||
        atomic_load_explicit(&g->gen, memory_order_relaxed) != atomic_load(&e->inst_uid))
        return NULL;
    return g;
}

static struct ef_ring *record_of(const struct ring *g)
{
    return ef_ring_record(g->idx, g->uid);
}

/* ------------------------------------------------------------ setup */

static int pow2(uint32_t v)
{
    return v && !(v & (v - 1));
}

/* Are the three mappings there and do the offsets hold together?  Then the
 * views are made and the ring is `ready`. */
static void check_maps(struct ring *g)
{
    atomic_store(&g->ready, 0);
    if (!g->sq_map || !g->cq_map || !g->sqe_map || !pow2(g->entries) || !pow2(g->cq_entries))
        return;
    const struct io_sqring_offsets *so = &g->sq_off;
    const struct io_cqring_offsets *co = &g->cq_off;
    uint32_t sqe = g->flags & IORING_SETUP_SQE128 ? 128 : 64;
    uint32_t cqe = g->flags & IORING_SETUP_CQE32 ? 32 : 16;
    uint32_t sq_need[] = {so->head, so->tail, so->ring_mask};
    for (unsigned i = 0; i < 3; i++)
        if ((sq_need[i] & 3) || (size_t)sq_need[i] + 4 > g->sq_len)
            return;
    int no_array = (g->flags & IORING_SETUP_NO_SQARRAY) != 0;
    if (!no_array && ((so->array & 3) || (size_t)so->array + 4ull * g->entries > g->sq_len))
        return;
    uint32_t cq_need[] = {co->head, co->tail, co->ring_mask};
    for (unsigned i = 0; i < 3; i++)
        if ((cq_need[i] & 3) || (size_t)cq_need[i] + 4 > g->cq_len)
            return;
    if ((co->cqes & 7) || (size_t)co->cqes + (size_t)cqe * g->cq_entries > g->cq_len)
        return;
    if ((size_t)sqe * g->entries > g->sqe_len)
        return;
    /* the kernel wrote the masks: they must be what the params said */
    if (*(const uint32_t *)(g->sq_map + so->ring_mask) != g->entries - 1 ||
        *(const uint32_t *)(g->cq_map + co->ring_mask) != g->cq_entries - 1)
        return;
    g->khead = (const _Atomic uint32_t *)(g->sq_map + so->head);
    g->ktail = (const _Atomic uint32_t *)(g->sq_map + so->tail);
    g->array = no_array ? NULL : (const uint32_t *)(g->sq_map + so->array);
    g->cqhead = (const _Atomic uint32_t *)(g->cq_map + co->head);
    g->cqtail = (const _Atomic uint32_t *)(g->cq_map + co->tail);
    g->sqes = g->sqe_map;
    g->cqes = g->cq_map + co->cqes;
    g->sq_mask = g->entries - 1;
    g->cq_mask = g->cq_entries - 1;
    g->sqe_size = sqe;
    g->cqe_size = cqe;
    atomic_store(&g->ready, 1);
}

static void drop(struct ring *g)
{
    uint32_t live = SLOT_LIVE;
    if (!atomic_compare_exchange_strong(&g->state, &live, SLOT_WRITING))
        return;
    atomic_store(&g->ready, 0);
    struct ef_fd *e = ef_fd_peek(g->fd);
    if (e && atomic_load(&e->inst) == (uint32_t)(g - rings))
        atomic_fetch_and(&e->flags, ~EF_FD_URING);
    struct ef_ring *R = record_of(g);
    /* A ring that crossed a fork may still be used by the other side. */
    if (R && !atomic_load(&R->crossed) && R->owner_pid == ef_self.pid)
        ef_ring_free(g->idx, g->uid);
    if (atomic_load(&ef_rings_held))
        atomic_fetch_sub(&ef_rings_held, 1);
    if (atomic_load(&ef_uring_nrings))
        atomic_fetch_sub(&ef_uring_nrings, 1);
    atomic_store(&g->state, SLOT_FREE);
}

void ef_uring_on_setup(int fd, const void *params, enum ef_ring_how how, void *caller)
{
    const struct io_uring_params *p = params;
    if (!ef_track_start() || !ef_enter())
        return;
    atomic_fetch_add(&n_rings, 1); /* always: it says whether to print the debug line */
    struct ef_fd *e = ef_fd_get(fd);
    struct ring *old = ring_of_fd(fd);
    if (old)
        drop(old); /* a close we did not see */
    struct ring *g = NULL;
    if (!rings)
        rings = ef_zone(EF_Z_RINGS);
    for (int i = 0; rings && i < NRING && !g; i++) {
        uint32_t z = SLOT_FREE;
        if (atomic_compare_exchange_strong(&rings[i].state, &z, SLOT_WRITING))
            g = &rings[i];
    }
    if (!g || !e) {
        if (notice_once(N_FULL))
            ef_log_notice("epollfork: io_uring fd %d: this process has more than %d rings (or an "
                          "fd beyond the tracked range); " BLIND, fd, NRING);
        if (g)
            atomic_store(&g->state, SLOT_FREE);
        return;
    }
    uint32_t gen = atomic_fetch_add(&g->gen, 1) + 1;
    g->fd = fd;
    g->flags = p->flags;
    g->features = p->features;
    g->entries = p->sq_entries;
    g->cq_entries = p->cq_entries;
    g->sq_off = p->sq_off;
    g->cq_off = p->cq_off;
    g->sq_map = g->cq_map = g->sqe_map = NULL;
    g->sq_len = g->cq_len = g->sqe_len = 0;
    atomic_store(&g->ready, 0);
    g->idx = g->uid = 0;
    g->solo = 1;
    g->solo_epoch = ef_epoch();
    g->q_epfd = -1;
    uint32_t idx;
    struct ef_ring *R = ef_ring_alloc(&idx);
    if (R) {
        R->owner_pid = ef_self.pid;
        R->owner_proc = ef_self.proc;
        R->setup_fd = fd;
        R->setup_flags = p->flags;
        R->setup_entries = p->sq_entries;
        R->setup_how = how;
        R->setup_stack = ef_stack_capture(EF_SKIP_SHIM, caller);
        g->idx = idx;
        g->uid = atomic_load(&R->uid);
    } else if (ef_notice_once(EF_NOTICE_RINGS_FULL)) {
        ef_log_notice("epollfork: more than %d io_uring rings in this process tree: later ones "
                      "are not checked for shared-io-uring", EF_MAX_RINGS - 1);
    }
    atomic_store(&e->inst, (uint32_t)(g - rings));
    atomic_store(&e->inst_uid, gen);
    atomic_fetch_or(&e->flags, EF_FD_URING);
    atomic_fetch_add(&ef_rings_held, 1);
    atomic_fetch_add(&ef_uring_nrings, 1);
    atomic_store_explicit(&g->state, SLOT_LIVE, memory_order_release);
    if ((p->flags & IORING_SETUP_SQPOLL) && notice_once(N_SQPOLL))
        ef_log_notice("epollfork: io_uring fd %d was set up with IORING_SETUP_SQPOLL: a kernel "
                      "thread takes its submissions without io_uring_enter, so " BLIND, fd);
    if ((p->flags & IORING_SETUP_NO_MMAP) && notice_once(N_NO_MMAP))
        ef_log_notice("epollfork: io_uring fd %d was set up with IORING_SETUP_NO_MMAP: its queues "
                      "live in memory the shim did not see mapped, so " BLIND, fd);
}

/* The program mapped part of a ring (mmap of a ring fd). */
void ef_uring_on_mmap(void *addr, size_t len, int fd, long off)
{
    struct ring *g = ring_of_fd(fd);
    if (!g || !ef_enter())
        return;
    if (off == (long)IORING_OFF_SQ_RING) {
        g->sq_map = addr;
        g->sq_len = len;
        if (g->features & IORING_FEAT_SINGLE_MMAP) {
            g->cq_map = addr;
            g->cq_len = len;
        }
    } else if (off == (long)IORING_OFF_CQ_RING) {
        g->cq_map = addr;
        g->cq_len = len;
    } else if (off == (long)IORING_OFF_SQES) {
        g->sqe_map = addr;
        g->sqe_len = len;
    } else {
        return;
    }
    check_maps(g);
}

static int overlaps(const char *m, size_t mlen, const char *a, size_t len)
{
    return m && a < m + mlen && m < a + len;
}

/* The program unmaps memory: a ring's view there is gone. */
void ef_uring_on_munmap(void *addr, size_t len)
{
    for (int i = 0; rings && i < NRING; i++) {
        struct ring *g = &rings[i];
        if (atomic_load_explicit(&g->state, memory_order_acquire) != SLOT_LIVE)
            continue;
        int hit = 0;
        if (overlaps(g->sq_map, g->sq_len, addr, len)) {
            g->sq_map = NULL;
            hit = 1;
        }
        if (overlaps(g->cq_map, g->cq_len, addr, len)) {
            g->cq_map = NULL;
            hit = 1;
        }
        if (overlaps(g->sqe_map, g->sqe_len, addr, len)) {
            g->sqe_map = NULL;
            hit = 1;
        }
        if (hit)
            atomic_store(&g->ready, 0);
    }
}

/* liburing set up a ring (its setup and mmaps are raw syscalls inside the
 * library; io_uring_queue_mmap is where it hands them over: wrap_uring.c
 * reads them out of its struct io_uring). */
void ef_uring_on_liburing_mmap(int fd, const void *params, void *sq, size_t sq_len, void *cq,
                               size_t cq_len, void *sqes, void *caller)
{
    const struct io_uring_params *p = params;
    struct ring *g = ring_of_fd(fd);
    if (!g) {
        ef_uring_on_setup(fd, params, EF_RING_LIBURING_QUEUE, caller);
        g = ring_of_fd(fd);
    }
    if (!g)
        return;
    g->sq_map = sq;
    g->sq_len = sq_len;
    g->cq_map = cq;
    g->cq_len = cq_len;
    g->sqe_map = sqes;
    g->sqe_len = (size_t)p->sq_entries * (p->flags & IORING_SETUP_SQE128 ? 128 : 64);
    check_maps(g);
}

/* close_range, closefrom: every ring whose fd is in [lo, hi]. */
void ef_uring_on_close_range(unsigned lo, unsigned hi)
{
    if (!ef_tracking() || !ef_enter())
        return;
    for (int i = 0; rings && i < NRING; i++) {
        struct ring *g = &rings[i];
        if (atomic_load(&g->state) == SLOT_LIVE && (unsigned)g->fd >= lo && (unsigned)g->fd <= hi)
            drop(g);
    }
}

void ef_uring_on_close(int fd)
{
    struct ring *g = ring_of_fd(fd);
    if (g && ef_tracking() && ef_enter())
        drop(g);
}

/* ------------------------------------------------------------ fork */

static int unseen_ring(int fd, void *arg)
{
    (void)arg;
    char link[64];
    struct ef_fd *e = ef_fd_peek(fd);
    uint32_t f = e ? atomic_load_explicit(&e->flags, memory_order_relaxed) : 0;
    if ((f & (EF_FD_EPOLL | EF_FD_INTEREST | EF_FD_MULTI)) || ef_fd_owned(fd) || ring_of_fd(fd) ||
        ef_procfs_fd_link(0, fd, link, sizeof link) <= 0 || strcmp(link, "anon_inode:[io_uring]"))
        return 0;
    if (notice_once(N_UNSEEN))
        ef_log_notice("epollfork: io_uring fd %d was set up where the shim could not see it (raw "
                      "syscall instructions, a statically linked liburing, or before the shim "
                      "was loaded): " BLIND, fd);
    return 1;
}

EF_INIT_TEXT static void unseen_candidate(int fd, short revents, void *arg)
{
    (void)revents;
    if (ef_fd_owned(fd))
        return;
    /* every anon inode (io_uring, eventfd, epoll) has no file type bits */
    struct stat st;
    if (ef_fstat(fd, &st) != 0 || (st.st_mode & S_IFMT) != 0)
        return;
    struct ef_fd *e = ef_fd_peek(fd);
    uint32_t f = e ? atomic_load_explicit(&e->flags, memory_order_relaxed) : 0;
    if (!(f & (EF_FD_EPOLL | EF_FD_INTEREST | EF_FD_MULTI)) && !ring_of_fd(fd))
        unseen_ring(fd, arg);
}

/* Before a fork (the atfork prepare handler): the rings we hold cross it;
 * and the first fork of a process looks for rings it never saw set up. */
EF_INIT_TEXT void ef_uring_on_fork_prepare(void)
{
    EF_HOT static _Atomic int32_t scanned;
    if (!ef_tracking() || !ef_enter())
        return;
    if (atomic_load(&ef_uring_nrings))
        for (int i = 0; rings && i < NRING; i++) {
            struct ring *g = &rings[i];
            if (atomic_load(&g->state) != SLOT_LIVE)
                continue;
            struct ef_ring *R = record_of(g);
            if (R && !atomic_load(&R->crossed))
                atomic_store(&R->crossed, 1);
        }
    if (atomic_load(&scanned) != ef_self.pid) {
        atomic_store(&scanned, ef_self.pid);
        /* poll() lists the open fds (two system calls, where opening
         * /proc/self/fd and a readlink per fd cost ~100 us at every first
         * fork); only an unknown anon inode gets its link read */
        if (!noticed_here(N_UNSEEN) && ef_open_fds(unseen_candidate, NULL) != 0)
            ef_procfs_fds(0, unseen_ring, NULL);
    }
}

/* ------------------------------------------------------------ enter */

struct outcome_arg {
    int fd, found;
    struct epoll_event ev;
};

static int find_target(const struct ef_tfd *t, void *arg)
{
    struct outcome_arg *a = arg;
    if (t->tfd != a->fd)
        return 0;
    a->found = 1;
    a->ev.events = t->events;
    a->ev.data.u64 = t->data;
    return 1;
}

#define COUNT(x, n)                                                                \
    do {                                                                           \
        if (EF_UNLIKELY(ef_opt.debug))                                             \
            atomic_fetch_add_explicit(&(x), (n), memory_order_relaxed);            \
    } while (0)

/* Is epfd quiet (ef_epoll_quiet: never crossed a fork, nothing pending)?
 * The answer is kept per ring until a fork, or until epfd stops being that
 * instance: it can only change by a fork of this process (the instance
 * crosses), a ghost, or the fd becoming something else.  Saves the
 * registry's cache line on every enter (bench/RESULTS.md). */
static int quiet_epfd(struct ring *g, int epfd)
{
    uint32_t epoch = ef_epoch();
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e)
        return 0;
    uint32_t inst = atomic_load_explicit(&e->inst, memory_order_relaxed);
    uint32_t uid = atomic_load_explicit(&e->inst_uid, memory_order_relaxed);
    if (epfd == g->q_epfd && epoch == g->q_epoch && inst == g->q_inst && uid == g->q_uid &&
        (atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL) &&
        !atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed))
        return 1;
    if (!ef_epoll_quiet(epfd)) {
        g->q_epfd = -1;
        return 0;
    }
    g->q_epfd = epfd;
    g->q_epoch = epoch;
    g->q_inst = inst;
    g->q_uid = uid;
    return 1;
}

/* Its outcome: the CQE with its user_data among those the enter posted
 * (*cursor: where the search starts; completions come in submission order,
 * so a whole batch is one pass), else the kernel's own list. */
static int outcome(const struct ring *g, const struct ef_uring_token *t,
                   const struct ef_uring_ctl *c, uint32_t cqend, uint32_t *cursor,
                   struct epoll_event *ev)
{
    uint32_t n = cqend - t->cqtail;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = t->cqtail + (*cursor - t->cqtail + k) % n;
        const struct io_uring_cqe *q =
            (const void *)(g->cqes + (size_t)(i & g->cq_mask) * g->cqe_size);
        if (q->user_data != c->user_data)
            continue;
        *cursor = i + 1;
        COUNT(n_cqe, 1);
        int ok = q->res == 0;
        /* the kernel copied the events from addr at submission: readable */
        if (ok && c->op != EPOLL_CTL_DEL && c->addr)
            memcpy(ev, (const void *)(uintptr_t)c->addr, sizeof *ev);
        return ok;
    }
    COUNT(n_fdinfo, 1);
    struct outcome_arg a = {c->fd, 0, {0, {0}}};
    if (ef_procfs_epoll_entries(0, c->epfd, find_target, &a) != 0)
        return 0;
    *ev = a.ev;
    ev->events &= ~(uint32_t)(EPOLLERR | EPOLLHUP); /* the kernel adds them to every entry */
    return c->op == EPOLL_CTL_DEL ? !a.found : a.found;
}

/* Read the queue from position `from` to `to` (the kernel's head up to the
 * program's tail): each IORING_OP_EPOLL_CTL that is not a MOD of a quiet
 * instance is copied into out[] (max entries).  Returns the position reached
 * (`to`, or where out[] filled up).  One pass, the ring's shape in locals: a
 * NOP costs an index, a bound and a byte compare (specialized below for
 * rings with and without the SQ array). */
static inline __attribute__((always_inline)) uint32_t
collect_(struct ring *g, uint32_t from, uint32_t to, struct ef_uring_ctl *out, int max, int *nout,
         const int has_array)
{
    const volatile uint32_t *array = g->array;
    const char *sqes = g->sqes;
    uint32_t mask = g->sq_mask, entries = g->entries, shift = g->sqe_size == 128 ? 7 : 6;
    int quiet_fd = -1, quiet = 0, n = 0;
    uint32_t i = from, mods = 0;
    for (; i != to; i++) {
        uint32_t idx = has_array ? array[i & mask] : i & mask;
        if (EF_UNLIKELY(idx >= entries))
            continue; /* the kernel drops it too */
        const volatile struct io_uring_sqe *s = (const void *)(sqes + ((size_t)idx << shift));
        if (EF_LIKELY(s->opcode != IORING_OP_EPOLL_CTL))
            continue;
        struct ef_uring_ctl c = {i, s->fd, (int)s->len, -1, 0, 0};
        if (c.op == EPOLL_CTL_MOD) {
            if (EF_UNLIKELY(c.epfd != quiet_fd)) {
                quiet_fd = c.epfd;
                quiet = quiet_epfd(g, c.epfd);
            }
            if (quiet) {
                mods++;
                continue; /* as the epoll_ctl wrapper: nothing to check, nothing to record */
            }
        }
        uint64_t off = s->off;
        if (c.op < EPOLL_CTL_ADD || c.op > EPOLL_CTL_MOD || off > 0x7fffffff)
            continue; /* the kernel refuses it */
        if (n == max)
            break;
        c.fd = (int)off;
        c.addr = s->addr;
        c.user_data = s->user_data;
        out[n++] = c;
        quiet_fd = -1; /* an ADD or DEL may change what the instance is */
    }
    COUNT(n_ctl[EPOLL_CTL_MOD], mods);
    *nout = n;
    return i;
}

static uint32_t collect(struct ring *g, uint32_t from, uint32_t to, struct ef_uring_ctl *out,
                        int max, int *nout)
{
    if (g->array)
        return collect_(g, from, to, out, max, nout, 1);
    return collect_(g, from, to, out, max, nout, 0);
}

/* What an enter will submit, read before it runs: the program has just
 * written those entries (they are in its cache, and ours). */
void ef_uring_enter_begin(int fd, unsigned to_submit, unsigned flags, int reap, long tail_now,
                          struct ef_uring_token *t)
{
    t->slot = -1;
    if (!ef_tracking() || !ef_enter())
        return;
    if (flags & IORING_ENTER_REGISTERED_RING) {
        if (notice_once(N_REGISTERED))
            ef_log_notice("epollfork: io_uring_enter through a registered ring fd "
                          "(IORING_ENTER_REGISTERED_RING, index %d): the shim cannot tell which "
                          "ring it is, so " BLIND, fd);
        return;
    }
    struct ring *g = ring_of_fd(fd);
    if (!g) {
        if (!noticed_here(N_UNSEEN))
            unseen_ring(fd, NULL); /* an enter on a ring whose setup we never saw */
        return;
    }
    t->slot = (int)(g - rings);
    t->gen = atomic_load(&g->gen);
    t->fd = fd;
    t->what = !to_submit ? EF_RING_REAP : reap ? EF_RING_SUBMIT_REAP : EF_RING_SUBMIT;
    t->scan = 0;
    t->nctl = 0;
    if (!to_submit || (g->flags & IORING_SETUP_SQPOLL))
        return;
    if (!atomic_load_explicit(&g->ready, memory_order_acquire)) {
        if (notice_once(N_NO_SQES))
            ef_log_notice("epollfork: the submission queue of io_uring fd %d was mapped where the "
                          "shim could not see it: " BLIND, fd);
        return;
    }
    t->head = atomic_load_explicit(g->khead, memory_order_acquire);
    t->cqtail = atomic_load_explicit(g->cqtail, memory_order_acquire);
    /* the program's tail: the kernel's, or the one liburing is about to give it */
    uint32_t tail = tail_now >= 0 ? (uint32_t)tail_now
                                  : atomic_load_explicit(g->ktail, memory_order_acquire);
    if (tail - t->head > g->entries)
        tail = t->head; /* does not hold together: read after the enter, if anything */
    t->upto = collect(g, t->head, tail, t->ctl, EF_URING_PRE, &t->nctl);
    t->scan = 1;
}

/* One change the enter submitted: its outcome, then the event. */
static void judge(const struct ring *g, const struct ef_uring_token *t,
                  const struct ef_uring_ctl *c, uint32_t cqend, uint32_t *cursor,
                  struct ef_call *call)
{
    COUNT(n_ctl[c->op], 1);
    struct epoll_event ev = {0, {0}};
    int ok = outcome(g, t, c, cqend, cursor, &ev);
    if (!ok)
        COUNT(n_failed, 1);
    ef_on_ctl_from_ring(t->fd, c->epfd, c->op, c->fd, c->op == EPOLL_CTL_DEL ? NULL : &ev, ok,
                        call);
}

void ef_uring_enter_end(const struct ef_uring_token *t, long r, void *caller)
{
    if (!rings)
        return;
    struct ring *g = &rings[t->slot < NRING && t->slot >= 0 ? t->slot : 0];
    if (atomic_load_explicit(&g->state, memory_order_acquire) != SLOT_LIVE ||
        atomic_load(&g->gen) != t->gen || g->fd != t->fd)
        return;
    COUNT(n_enters, 1);
    struct ef_call call = EF_CALL(caller);
    if (r >= 0 && !(g->solo && g->solo_epoch == ef_epoch()))
        ef_ring_use(g->idx, g->uid, g->fd, t->what, &call);
    if (!t->scan || !atomic_load_explicit(&g->ready, memory_order_acquire))
        return;
    /* what the kernel consumed: from its head before to its head now */
    uint32_t head = atomic_load_explicit(g->khead, memory_order_acquire);
    uint32_t cqend = atomic_load_explicit(g->cqtail, memory_order_acquire);
    uint32_t n = head - t->head;
    if (n > g->entries || cqend - t->cqtail > g->cq_entries) {
        if (notice_once(N_NO_SQES))
            ef_log_notice("epollfork: the queues of io_uring fd %d do not hold together (head "
                          "%u -> %u): " BLIND, t->fd, t->head, head);
        return;
    }
    COUNT(n_sqes, n);
    uint32_t cursor = t->cqtail;
    for (int k = 0; k < t->nctl && k < EF_URING_PRE; k++)
        if (t->ctl[k].pos - t->head < n) {
            COUNT(n_before, 1);
            judge(g, t, &t->ctl[k], cqend, &cursor, &call);
        }
    /* consumed beyond what was read before (more changes than the token
     * holds, or a tail that moved): read now, while the program waits */
    uint32_t from = t->upto;
    while (from - t->head < n) {
        struct ef_uring_ctl more[16];
        int m;
        from = collect(g, from, head, more, 16, &m);
        COUNT(n_after, m);
        for (int k = 0; k < m; k++)
            judge(g, t, &more[k], cqend, &cursor, &call);
    }
}

/* ------------------------------------------------------------ exit */

EF_INIT_TEXT void ef_uring_on_exit(void)
{
    if (!ef_opt.debug || !atomic_load(&n_rings))
        return;
    ef_log_notice("epollfork: debug: io_uring rings=%llu enters=%llu sqes=%llu epoll_ctl_add=%llu "
                  "epoll_ctl_mod=%llu epoll_ctl_del=%llu outcome_cqe=%llu outcome_fdinfo=%llu "
                  "failed=%llu read_before=%llu read_after=%llu",
                  (unsigned long long)n_rings, (unsigned long long)n_enters,
                  (unsigned long long)n_sqes, (unsigned long long)n_ctl[EPOLL_CTL_ADD],
                  (unsigned long long)n_ctl[EPOLL_CTL_MOD],
                  (unsigned long long)n_ctl[EPOLL_CTL_DEL],
                  (unsigned long long)n_cqe, (unsigned long long)n_fdinfo,
                  (unsigned long long)n_failed, (unsigned long long)n_before,
                  (unsigned long long)n_after);
}
