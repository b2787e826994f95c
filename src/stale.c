/*
 * stale.c - "stale-registration": an fd closed without EPOLL_CTL_DEL whose
 * registration survives, so epoll_wait keeps returning events for a closed
 * (maybe reused) number and a later DEL fails with EBADF.
 *
 * The kernel keys an interest entry on the open file description and drops it
 * only when every fd of that description is closed.  So a close() leaves a
 * ghost only when a copy of the description lives on: in a forked process, or
 * in a dup.  The fast path decides "no copy possible" from the fd table alone:
 * the fd was never dup'ed, was not inherited at exec, and was created (by a
 * wrapped socket/accept/pipe/eventfd...) after this process's last fork.  Only
 * otherwise does close() take a snapshot (stack, inode) of a *candidate*.
 *
 * The verdict waits for the closer's next use of the instance (its next wait or
 * epoll_ctl), and asks the kernel: /proc/self/fdinfo/EPFD still lists the
 * closed number with the closed file's inode -> report; gone -> silent.  If the
 * process closes the instance itself first (a child closing every fd), the
 * candidates are dropped: nobody is left to receive ghost events.  Waiting for
 * the use is what keeps "close every fd" loops silent whatever their order.
 *
 * Repair mode removes a confirmed ghost right there, before the call that
 * uses the instance (repair.c): the closer gets the instance rebuilt without
 * it (a private copy when others hold it; they keep their entry, which may be
 * theirs).  Deciding at the use, not at the close, is what costs nothing for
 * the many closes that leave no ghost, and keeps the verdict the kernel's.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rules.h"

#define NGHOST 64

enum ghost_state { GHOST_FREE = 0, GHOST_WRITING, GHOST_READY };
struct ghost {
    _Atomic int state;          /* enum ghost_state */
    uint32_t idx, uid;
    int fd;
    uint64_t dev, ino;
    uint32_t close_stack, add_stack;
    int32_t add_pid;
    enum ef_via add_via;
    char target[200];
};

/* [NGHOST], the zone's (zone.c), made at the first candidate */
EF_HOT static struct ghost *ghosts;
_Static_assert(NGHOST * sizeof(struct ghost) <= EF_Z_BYTES(GHOSTS), "the ghosts fit");
_Atomic uint32_t ef_ghosts_pending;      /* ready ghosts in all instances (rules.h) */
/* fds open when the program started: [0, 1024) exactly, and whether any
 * number above was (then every number above counts). */
EF_HOT static uint64_t inherited[1024 / 64];
EF_HOT static int inherited_high;

EF_INIT_TEXT void ef_stale_note_inherited(int fd)
{
    if ((unsigned)fd < 1024)
        inherited[fd / 64] |= 1ull << (fd % 64);
    else
        inherited_high = 1;
}

static int was_inherited(int fd)
{
    if ((unsigned)fd < 1024)
        return (int)(inherited[fd / 64] >> (fd % 64) & 1);
    return inherited_high;
}

/* Can a copy of fd's open file description live on after its close?  Only
 * if it was dup'ed (or made by a dup), inherited at exec, or created before
 * this process's last fork.  Everything else is the common case: no copy, and
 * the kernel drops the registration with the close. */
EF_HOT_TEXT int ef_stale_copy_possible(int fd, const struct ef_fd *e, uint32_t flags)
{
    uint32_t epoch = ef_epoch();
    return (flags & EF_FD_DUPED) || (epoch && atomic_load(&e->born) != epoch) || was_inherited(fd);
}

void ef_stale_on_close(int fd, struct ef_fd *e, uint32_t flags, const struct ef_interest *reg,
                       void *caller)
{
    uint32_t idx = reg->idx;
    if (!ef_holds(idx) || atomic_load(&ef_local_at(idx)->uid) != reg->uid)
        return;
    if (EF_LIKELY(!ef_stale_copy_possible(fd, e, flags)))
        return;
    struct stat st;
    if (ef_fstat(fd, &st) != 0)
        return;
    if (!ghosts && !(ghosts = ef_zone(EF_Z_GHOSTS)))
        return;
    struct ghost *g = NULL;
    for (int i = 0; i < NGHOST && !g; i++) {
        int z = GHOST_FREE;
        if (atomic_compare_exchange_strong(&ghosts[i].state, &z, GHOST_WRITING))
            g = &ghosts[i];
    }
    if (!g)
        return; /* more pending closes than we keep: this one is not judged */
    g->idx = idx;
    g->uid = reg->uid;
    g->fd = fd;
    g->dev = st.st_dev;
    g->ino = st.st_ino;
    g->add_stack = reg->add_stack;
    g->add_pid = reg->add_pid;
    g->add_via = reg->via;
    if (S_ISSOCK(st.st_mode)) {
        ef_fmt(g->target, sizeof g->target, "socket:[%llu]", (unsigned long long)st.st_ino);
    } else if (S_ISFIFO(st.st_mode)) {
        ef_fmt(g->target, sizeof g->target, "pipe:[%llu]", (unsigned long long)st.st_ino);
    } else {
        ef_procfs_fd_link(0, fd, g->target, sizeof g->target);
    }
    g->close_stack = ef_stack_capture(EF_SKIP_SHIM, caller);
    atomic_store(&g->state, GHOST_READY);
    atomic_fetch_add(&ef_local_at(idx)->ghosts, 1);
    atomic_fetch_add(&ef_ghosts_pending, 1);
}

static void forget(struct ghost *g)
{
    struct ef_local *l = ef_local_at(g->idx);
    int ready = GHOST_READY;
    if (!atomic_compare_exchange_strong(&g->state, &ready, GHOST_FREE))
        return;
    if (atomic_load(&l->ghosts))
        atomic_fetch_sub(&l->ghosts, 1);
    if (atomic_load(&ef_ghosts_pending))
        atomic_fetch_sub(&ef_ghosts_pending, 1);
}

void ef_stale_drop(uint32_t idx)
{
    for (int i = 0; ghosts && i < NGHOST; i++)
        if (atomic_load(&ghosts[i].state) == GHOST_READY && ghosts[i].idx == idx)
            forget(&ghosts[i]);
}

struct find_arg {
    const struct ghost *g;
    int found;
    uint32_t events;
    uint64_t data;
};

static int find_tfd(const struct ef_tfd *t, void *arg)
{
    struct find_arg *a = arg;
    if (t->tfd == a->g->fd && t->ino == a->g->ino) {
        a->found = 1;
        a->events = t->events;
        a->data = t->data;
        return 1;
    }
    return 0;
}

struct holder_arg {
    int pid;        /* 0: this process */
    int epfd, closed;  /* an fd of ours for the instance that holds the ghost */
    uint64_t dev, ino;
    int fd;
};

/* Is fd of h->pid the very file registered in our epfd under the closed
 * number?  kcmp(KCMP_EPOLL_TFD) answers exactly; inode numbers cannot (both
 * ends of a pipe share one).  Where kcmp is filtered (containers), say no. */
static int match_fd(int fd, void *arg)
{
    struct holder_arg *h = arg;
    struct stat st;
    if (ef_procfs_fd_stat(h->pid, fd, &st) != 0 || st.st_dev != h->dev || st.st_ino != h->ino)
        return 0;
    if (ef_procfs_is_registered(h->pid, fd, 0, h->epfd, h->closed) != 1)
        return 0;
    h->fd = fd;
    return 1;
}

static int try_holder(struct holder_arg *h, int pid)
{
    h->pid = pid;
    h->fd = -1;
    return ef_procfs_fds(pid, match_fd, h) == 0 && h->fd >= 0;
}

/* Who keeps the description alive: this process (a dup), its parent, or
 * another process of the tree.  -1 when it cannot be known. */
static int find_holder(const struct ghost *g, int epfd, int *fd_out)
{
    struct holder_arg h = {0, epfd, g->fd, g->dev, g->ino, -1};
    int found = -1;
    pid_t ppid = ef_sys_getppid();
    if (try_holder(&h, 0))
        found = ef_self.pid;
    else if (ppid > 1 && try_holder(&h, ppid))
        found = ppid;
    else if (ef_reg) {
        uint32_t n = atomic_load(&ef_reg->nproc); /* shared: bounded below */
        if (n > EF_MAX_PROC)
            n = EF_MAX_PROC;
        int tried = 0;
        for (uint32_t i = n; i-- > 1 && tried < 128 && found < 0;) {
            struct ef_process *pr = ef_process_at(i);
            int32_t pid = pr ? atomic_load(&pr->pid) : 0;
            if (pid <= 0 || pid == ef_self.pid || pid == ppid || !ef_procfs_pid_exists(pid))
                continue;
            tried++;
            if (try_holder(&h, pid))
                found = pid;
        }
    }
    *fd_out = found >= 0 ? h.fd : -1;
    return found;
}

static uint64_t stale_key(const struct ghost *g)
{
    uint64_t k = ef_mix(ef_mix(ef_kinds[EF_KIND_STALE].key_tag, g->idx), g->uid);
    uint32_t close = ef_stack_canon(g->close_stack);
    k = ef_mix(k, close ? close : 0x80000000u | (uint32_t)g->fd);
    return k ^ (k >> 29);
}

/* in: the instance as it was (a repair may have released it since); hold: an
 * fd of ours for the instance that still holds the ghost (epfd, or the
 * original kept open while a repair replaced epfd); note: the repair. */
static void report(const struct ghost *g, const struct find_arg *f, const struct ef_inst *in,
                   int epfd, int hold, const struct ef_repair_note *note,
                   struct ef_call *call)
{
    if (!ef_claim_once(stale_key(g)))
        return;
    struct ef_report r;
    ef_report_init(&r, EF_KIND_STALE, in, epfd);
    r.modifier_pid = ef_self.pid;
    r.other_pid = ef_self.pid;
    r.fd = g->fd;
    r.events = f->events & ~(uint32_t)(EPOLLERR | EPOLLHUP);
    r.data = f->data;
    ef_fmt(r.target, sizeof r.target, "%s", g->target);
    r.stacks[EF_ST_CLOSE] = g->close_stack;
    r.stacks[EF_ST_ADD] = g->add_stack;
    r.add_pid = g->add_pid;
    r.add_via = g->add_via;
    r.holder_pid = find_holder(g, hold, &r.holder_fd);
    if (r.holder_pid > 0 && r.holder_pid != ef_self.pid)
        ef_report_fill_fork(&r, ef_process_split(ef_self.proc, ef_process_of_pid(r.holder_pid)));
    r.stacks[EF_ST_USE] = ef_call_stack(call);
    if (note) {
        struct ef_repair_rec rec = note->rec;
        rec.fd = rec.how == EF_REPAIR_FAILED ? rec.fd : g->fd;
        ef_repair_fill(&r, &rec);
    }
    ef_report_emit(&r);
}

void ef_stale_check(uint32_t idx, int epfd, struct ef_call *call)
{
    struct ef_local *l = ef_local_at(idx);
    if (!atomic_load_explicit(&l->ghosts, memory_order_relaxed) || ef_in_shim)
        return;
    EF_GUARD_SCOPE();
    struct ghost *found[NGHOST];
    struct find_arg fa[NGHOST];
    int n = 0;
    for (int i = 0; ghosts && i < NGHOST; i++) {
        struct ghost *g = &ghosts[i];
        if (atomic_load(&g->state) != GHOST_READY || g->idx != idx)
            continue;
        if (g->uid == atomic_load(&l->uid)) {
            fa[n] = (struct find_arg){g, 0, 0, 0};
            if (ef_procfs_epoll_entries(0, epfd, find_tfd, &fa[n]) == 0 && fa[n].found) {
                found[n++] = g;
                continue;
            }
        }
        forget(g);
    }
    if (!n)
        return;
    /* What the report says of the instance, as it is before any repair. */
    struct ef_inst was;
    memcpy(&was, ef_inst_at(idx), sizeof was);
    int hold = epfd;
    struct ef_repair_note note;
    if (ef_opt.repair) {
        /* The original stays open here until the reports are made: they name
         * the process holding the copy, which kcmp finds through the ghost. */
        hold = ef_real.fcntl(epfd, F_DUPFD_CLOEXEC, 0);
        if (hold < 0)
            hold = epfd;
        struct ef_repair_excl excl[NGHOST];
        for (int i = 0; i < n; i++)
            excl[i] = (struct ef_repair_excl){found[i]->fd, found[i]->ino};
        ef_repair_copy(epfd, idx, excl, n, call->caller, &note);
    }
    for (int i = 0; i < n; i++) {
        report(found[i], &fa[i], &was, epfd, hold, ef_opt.repair ? &note : NULL, call);
        forget(found[i]);
    }
    if (hold != epfd)
        ef_sys_close(hold);
}
