/*
 * repair.c - repair mode (EPOLLFORK_REPAIR=1): make the three bugs harmless in
 * a program that cannot be changed today, and still report them.
 *
 * FreeBSD's kqueue shows semantics that avoid the first two by design: a kqueue
 * is not inherited by a fork child, so a child can never edit its parent's
 * list, and closing an fd removes its events.  This file gives an unmodified
 * epoll program the same semantics, from outside, one process at a time:
 *
 *  - A process about to change (ADD, MOD, DEL) an instance that another live
 *    process also holds gets a private copy first (ef_repair_before_change): a
 *    new instance rebuilt from the kernel's own list (/proc/self/fdinfo/EPFD
 *    gives every entry's tfd, events and data), holding the entries whose file
 *    this process has open at their number (kcmp KCMP_EPOLL_TFD says so
 *    exactly), with the same events and data, put at the same fd number by
 *    dup3 (keeping close-on-exec as it was) and at every alias.  The wrapper
 *    then makes the program's call on that number: it changes the copy.  The
 *    other holders keep the original, untouched.  Which processes hold it is
 *    the kernel's word too (kcmp KCMP_FILE): a holder slot of a process that
 *    exec'd or closed it where the shim could not see is given back, so a
 *    server that forks and execs copies nothing once its children are gone.
 *  - A registration that survived the close of its fd (stale.c's ghost) is
 *    removed before the closer uses the instance again: stale.c finds it and
 *    asks for the same copy without it (or a rebuild, when nobody else holds
 *    the instance).  An entry whose number is closed or holds another file is
 *    never copied: it could only deliver events for a closed number.
 *  - An epoll fd about to leak into an exec'd program gets FD_CLOEXEC; one that
 *    leaked through an exec the shim could not see is closed at start-up.
 * Each is still reported under the same rules; the report says what was done
 * (ef_repair_fill), or why it could not be, and then the call went through
 * unchanged.
 *
 * Flags survive the copy.  The kernel shows a disarmed EPOLLONESHOT entry
 * with its private bits only (docs/EVIDENCE.md), and every ADD or MOD arms
 * EPOLLERR|EPOLLHUP, so a disarmed entry is disarmed the way the kernel does
 * it: added armed for every readiness bit, in a copy that holds nothing else
 * yet, and its one event consumed by an epoll_wait on the copy.  An entry whose
 * file is ready for nothing at that moment stays armed for EPOLLERR|EPOLLHUP
 * only (counted in the report; README limits).  EPOLLEXCLUSIVE entries are
 * re-added with the flag (ADD is the only op that takes it), nested instances
 * like any file.
 *
 * Threads: the copy is built completely at a new fd and dup3 then replaces
 * the number in one step, so no thread sees half of it.  Repairs of one
 * process are serialized by a lock taken only here (a cold path); a fork child
 * that inherits it held by a parent thread takes it over.  Everything below an
 * entry point: the real calls are ef_real's (never our wrappers), errno is
 * not restored here, and the shim's tables are updated after the kernel
 * changed (the copy is a new instance this process holds alone; its
 * registrations move with it; the original is released).
 *
 * Cost: nothing unless a repair is made.  A copy reads fdinfo once and makes
 * one fstat, one kcmp and one epoll_ctl per entry (bench/RESULTS.md: a
 * 10,000-entry instance).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sched.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rules.h"

/* The bits the kernel keeps on a disarmed EPOLLONESHOT entry (EP_PRIVATE_BITS). */
#define PRIVATE_BITS ((uint32_t)(EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE))
/* Every readiness bit: a disarmed entry is re-added with them, to be disarmed
 * by its first event. */
#define ALL_READY ((uint32_t)(EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDNORM | EPOLLRDBAND |    \
                              EPOLLWRNORM | EPOLLWRBAND | EPOLLMSG | EPOLLRDHUP))
#define MAX_ALIASES 64

static long kcmp(pid_t p1, pid_t p2, int type, unsigned long a, unsigned long b)
{
    return syscall(SYS_kcmp, p1, p2, type, a, b);
}

/* ------------------------------------------------------------------ lock */

static _Atomic pid_t lock_owner; /* tid of the thread making a repair, 0 none */

static void lock(void)
{
    pid_t me = (pid_t)syscall(SYS_gettid);
    for (unsigned spin = 0;; spin++) {
        pid_t cur = 0;
        if (atomic_compare_exchange_weak(&lock_owner, &cur, me))
            return;
        /* A fork child inherits the word of a parent thread that was making a
         * repair at the fork: that thread is not one of the child's. */
        if (cur && (spin & 255) == 255 &&
            syscall(SYS_tgkill, ef_sys_getpid(), cur, 0) != 0 && errno == ESRCH)
            atomic_compare_exchange_strong(&lock_owner, &cur, 0);
        if (spin < 128)
            ef_cpu_relax();
        else
            sched_yield();
    }
}

static void unlock(void)
{
    atomic_store(&lock_owner, 0);
}

/* ------------------------------------------------- who holds the instance */

struct scan_arg {
    pid_t me, pid;
    int epfd, found, unknown;
};

static int scan_fd(int fd, void *arg)
{
    struct scan_arg *a = arg;
    long r = kcmp(a->me, a->pid, KCMP_FILE, (unsigned long)a->epfd, (unsigned long)fd);
    if (r == 0)
        a->found = 1;
    else if (r < 0 && errno != EBADF)
        a->unknown = 1;
    return a->found || a->unknown;
}

/* Does pid have our epfd's open file description?  At the same number first (a
 * fork child's copy), then at any of its fds.  1 yes, 0 no, -1 unknown (kcmp
 * refused: a process that is not dumpable, a filtered kcmp). */
static int pid_holds(pid_t pid, int epfd, pid_t me)
{
    long r = kcmp(me, pid, KCMP_FILE, (unsigned long)epfd, (unsigned long)epfd);
    if (r == 0)
        return 1;
    if (r < 0 && errno != EBADF)
        return -1;
    struct scan_arg a = {me, pid, epfd, 0, 0};
    if (ef_procfs_fds(pid, scan_fd, &a) != 0)
        return -1;
    return a.found ? 1 : a.unknown ? -1 : 0;
}

int ef_repair_shared(int epfd, uint32_t idx)
{
    struct ef_inst *in = ef_inst_at(idx);
    if (!ef_holds(idx) || !atomic_load(&in->crossed))
        return 0;
    if (atomic_load(&in->overflow))
        return 1; /* holders beyond the slots are not told apart */
    pid_t me = ef_self.pid;
    int mine = atomic_load(&ef_local_at(idx)->slot);
    int shared = 0;
    for (int i = 0; i < EF_HOLDERS && !shared; i++) {
        uint64_t w = atomic_load(&in->holders[i]);
        uint32_t pid = (uint32_t)(w >> 32);
        if (!pid || i == mine || pid == (uint32_t)me)
            continue;
        if (pid & EF_RESERVED)
            return 1; /* a fork in flight: its child will hold it */
        if (ef_procfs_pid_state((int)pid) == EF_PID_RUNNING &&
            pid_holds((pid_t)pid, epfd, me) != 0) {
            shared = 1;
            continue;
        }
        /* Gone, a zombie, or alive without it (it exec'd, or closed it where
         * the shim could not see): its slot is given back, as registry.c does
         * for the dead, so the next change does not ask again. */
        if (atomic_compare_exchange_strong(&in->holders[i], &w, 0))
            atomic_fetch_sub(&in->nholders, 1);
    }
    return shared;
}

/* ------------------------------------------------------------ the entries */

enum ent_state { ENT_KEEP = 0, ENT_LEFT, ENT_EXCLUDED, ENT_COPIED };
struct ent {
    struct ef_tfd t;
    int state;                  /* enum ent_state */
};
/* The entries of an instance, in an anonymous mapping that grows (no malloc:
 * the program's allocator may be what we interrupted). */
struct list {
    struct ent *v;
    size_t n, cap;
    int err;
};

static int collect(const struct ef_tfd *t, void *arg)
{
    struct list *l = arg;
    if (l->n == l->cap) {
        size_t ncap = l->cap ? l->cap * 2 : 1024;
        void *m = l->v ? mremap(l->v, l->cap * sizeof *l->v, ncap * sizeof *l->v, MREMAP_MAYMOVE)
                       : mmap(NULL, ncap * sizeof *l->v, PROT_READ | PROT_WRITE,
                              MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) {
            l->err = ENOMEM;
            return 1;
        }
        l->v = m;
        l->cap = ncap;
    }
    l->v[l->n].t = *t;
    l->v[l->n].state = ENT_KEEP;
    l->n++;
    return 0;
}

static void list_free(struct list *l)
{
    if (l->v)
        munmap(l->v, l->cap * sizeof *l->v);
    l->v = NULL;
}

/* Is this process's fd t->tfd the file the entry was registered for?  The inode
 * first (cheap, and it tells most reused numbers apart), then the shim's own
 * word: an fd registered in this instance through our wrappers and not
 * closed since (a close or a new fd at that number clears it, track.c) is
 * that file.  Otherwise kcmp KCMP_EPOLL_TFD decides (both ends of a pipe, and
 * every eventfd, timerfd or epoll, share an inode).  kcmp is the last resort
 * because the kernel walks the instance's whole tree for it (ep_find_tfd):
 * 52 us a call at 10,000 entries, where a copy must stay O(entries).  Where
 * kcmp is refused (filtered in a container), the inode decides. */
static int held_here(int epfd, uint32_t idx, const struct ef_tfd *t, pid_t me)
{
    struct stat st;
    if (fstat(t->tfd, &st) != 0 || (uint64_t)st.st_ino != t->ino)
        return 0;
    struct ef_interest it;
    if (ef_interest_find(t->tfd, ef_fd_peek(t->tfd), idx, &it) &&
        it.uid == atomic_load(&ef_inst_at(idx)->uid))
        return 1;
    struct kcmp_epoll_slot slot = {(uint32_t)epfd, (uint32_t)t->tfd, 0};
    for (slot.toff = 0; slot.toff < 8; slot.toff++) {
        long r = kcmp(me, me, KCMP_EPOLL_TFD, (unsigned long)t->tfd, (unsigned long)&slot);
        if (r == 0)
            return 1;
        if (r < 0)
            return errno != ENOENT; /* ENOENT: no more entries with that number */
    }
    return 0;
}

static int excluded(const struct ef_tfd *t, const struct ef_repair_excl *x, int n)
{
    for (int i = 0; i < n; i++)
        if (x[i].fd == t->tfd && x[i].ino == t->ino)
            return 1;
    return 0;
}

static int disarmed(const struct ef_tfd *t)
{
    return (t->events & EPOLLONESHOT) && !(t->events & ~PRIVATE_BITS);
}

static int fail(struct ef_repair_rec *rec, enum ef_repair_step step, int err, int fd)
{
    rec->how = EF_REPAIR_FAILED;
    rec->step = step;
    rec->err = err;
    rec->fd = fd;
    return -1;
}

/* ADD one entry to the copy c.  0 done, 1 left out (the same file at the same
 * number twice: two lines of one entry), -1 failed. */
static int add_one(int c, struct ent *x, uint32_t events, struct ef_repair_rec *rec)
{
    struct epoll_event ev = {.events = events, .data.u64 = x->t.data};
    if (ef_real.epoll_ctl(c, EPOLL_CTL_ADD, x->t.tfd, &ev) == 0) {
        x->state = ENT_COPIED;
        rec->entries++;
        return 0;
    }
    if (errno == EEXIST) {
        x->state = ENT_LEFT;
        rec->left++;
        return 1;
    }
    return fail(rec, EF_RSTEP_ADD, errno, x->t.tfd);
}

static void drain(int c)
{
    struct epoll_event evs[64];
    while (ef_real.epoll_wait(c, evs, 64, 0) == 64)
        ;
}

/* The disarmed EPOLLONESHOT entries, alone in the copy: armed for everything,
 * then disarmed by their own event; those that had none stay armed for
 * EPOLLERR|EPOLLHUP only (a MOD always arms those), and one more drain
 * disarms those of them that have an error or hang-up pending. */
static int add_disarmed(int c, struct list *es, struct ef_repair_rec *rec)
{
    for (size_t i = 0; i < es->n; i++) {
        struct ent *x = &es->v[i];
        if (x->state == ENT_KEEP && disarmed(&x->t) &&
            add_one(c, x, (x->t.events & PRIVATE_BITS) | ALL_READY, rec) < 0)
            return -1;
    }
    drain(c);
    struct list now = {0};
    if (ef_procfs_epoll_entries(0, c, collect, &now) != 0 || now.err) {
        list_free(&now);
        return fail(rec, now.err ? EF_RSTEP_MEMORY : EF_RSTEP_FDINFO, now.err ? now.err : errno, c);
    }
    for (size_t i = 0; i < now.n; i++) {
        struct ef_tfd *t = &now.v[i].t;
        if (!(t->events & ~PRIVATE_BITS))
            continue;
        struct epoll_event ev = {.events = t->events & PRIVATE_BITS, .data.u64 = t->data};
        if (ef_real.epoll_ctl(c, EPOLL_CTL_MOD, t->tfd, &ev) != 0) {
            list_free(&now);
            return fail(rec, EF_RSTEP_ADD, errno, t->tfd);
        }
    }
    drain(c);
    now.n = 0;
    if (ef_procfs_epoll_entries(0, c, collect, &now) == 0)
        for (size_t i = 0; i < now.n; i++)
            rec->rearmed += (now.v[i].t.events & ~PRIVATE_BITS) != 0;
    list_free(&now);
    return 0;
}

/* Fill the copy c with the entries of epfd that this process still holds. */
static int build(int c, int epfd, uint32_t idx, struct list *es, const struct ef_repair_excl *excl,
                 int nexcl, struct ef_repair_rec *rec)
{
    pid_t me = ef_sys_getpid();
    int ndisarmed = 0;
    for (size_t i = 0; i < es->n; i++) {
        struct ent *x = &es->v[i];
        if (excluded(&x->t, excl, nexcl)) {
            x->state = ENT_EXCLUDED;
        } else if (!held_here(epfd, idx, &x->t, me)) {
            x->state = ENT_LEFT;
            rec->left++;
        } else {
            ndisarmed += disarmed(&x->t);
        }
    }
    if (ndisarmed && add_disarmed(c, es, rec) < 0)
        return -1;
    for (size_t i = 0; i < es->n; i++) {
        struct ent *x = &es->v[i];
        if (x->state == ENT_KEEP && add_one(c, x, x->t.events, rec) < 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the copy */

struct alias_arg {
    int epfd;
    uint32_t idx;
    pid_t me;
    int n;
    int fds[MAX_ALIASES];
};

/* Another fd of ours for the same instance (dup, dup2, fcntl): the table
 * says so, kcmp confirms it. */
static void find_alias(int fd, struct ef_fd *e, void *arg)
{
    struct alias_arg *a = arg;
    if (fd == a->epfd || a->n >= MAX_ALIASES ||
        !(atomic_load(&e->flags) & EF_FD_EPOLL) || atomic_load(&e->inst) != a->idx)
        return;
    if (kcmp(a->me, a->me, KCMP_FILE, (unsigned long)a->epfd, (unsigned long)fd) == 0)
        a->fds[a->n++] = fd;
}

static int copy_locked(int epfd, uint32_t idx, const struct ef_repair_excl *excl, int nexcl,
                       void *caller, struct ef_repair_note *note)
{
    struct ef_repair_rec *rec = &note->rec;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load(&e->flags) & EF_FD_EPOLL) || atomic_load(&e->inst) != idx ||
        !ef_holds(idx)) {
        fail(rec, EF_RSTEP_GONE, 0, epfd);
        return 0; /* another thread replaced it while we waited for the lock */
    }
    int fl = ef_real.fcntl(epfd, F_GETFD);
    if (fl < 0)
        return fail(rec, EF_RSTEP_DUP, errno, epfd);
    struct list es = {0};
    if (ef_procfs_epoll_entries(0, epfd, collect, &es) != 0 || es.err) {
        int err = es.err ? es.err : errno;
        list_free(&es);
        return fail(rec, err == ENOMEM ? EF_RSTEP_MEMORY : EF_RSTEP_FDINFO, err, epfd);
    }
    int c = ef_real.epoll_create1(EPOLL_CLOEXEC);
    if (c < 0) {
        int err = errno;
        list_free(&es);
        return fail(rec, EF_RSTEP_CREATE, err, epfd);
    }
    struct alias_arg aa = {.epfd = epfd, .idx = idx, .me = ef_sys_getpid(), .n = 0};
    if (build(c, epfd, idx, &es, excl, nexcl, rec) < 0) {
        ef_sys_close(c);
        list_free(&es);
        rec->entries = rec->left = rec->rearmed = 0;
        return -1;
    }
    /* Aliases are found while they still refer to the original. */
    if (atomic_load(&ef_local_at(idx)->aliases) > 1)
        ef_fd_foreach(0, EF_FD_MAX - 1, find_alias, &aa);
    int cloexec = fl & FD_CLOEXEC;
    if (ef_real.dup3(c, epfd, cloexec ? O_CLOEXEC : 0) < 0) {
        int err = errno;
        ef_sys_close(c);
        list_free(&es);
        rec->entries = rec->left = rec->rearmed = 0;
        return fail(rec, EF_RSTEP_DUP, err, epfd);
    }
    for (int i = 0; i < aa.n; i++) {
        int afl = ef_real.fcntl(aa.fds[i], F_GETFD);
        if (afl < 0 || ef_real.dup3(c, aa.fds[i], (afl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0)
            aa.fds[i] = -1; /* it keeps the original (and the table says so) */
    }
    ef_sys_close(c);

    /* The shim's picture: epfd and its aliases refer to a new instance that
     * this process holds alone; the original is released. */
    ef_hold_drop_alias(e);
    for (int i = 0; i < aa.n; i++)
        if (aa.fds[i] >= 0)
            ef_hold_drop_alias(ef_fd_peek(aa.fds[i]));
    uint32_t nidx = ef_hold_create(epfd, e, EF_CREATE_REPAIR, cloexec ? EPOLL_CLOEXEC : 0, caller);
    if (nidx) {
        for (int i = 0; i < aa.n; i++)
            if (aa.fds[i] >= 0)
                ef_hold_add_alias(ef_fd_peek(aa.fds[i]), nidx);
        for (size_t i = 0; i < es.n; i++)
            if (es.v[i].state == ENT_COPIED)
                ef_interest_move(es.v[i].t.tfd, ef_fd_peek(es.v[i].t.tfd), idx, nidx);
    }
    list_free(&es);
    note->copy = nidx;
    rec->how = note->shared ? EF_REPAIR_COPIED : EF_REPAIR_REBUILT;
    return 1;
}

/* The last repair this thread made, and the note ef_on_ctl takes to record
 * the change in the original's ring.  A copy's note waits for the first
 * change that succeeds on the copy (a program's first call may fail: libuv
 * DELs before it ADDs); a failure's note belongs to its own call only. */
static EF_TLS struct ef_repair_note last, pending;
static EF_TLS int last_set, pending_set, pending_epfd;

static int copy(int epfd, uint32_t idx, int shared, const struct ef_repair_excl *excl, int nexcl,
                void *caller, struct ef_repair_note *note)
{
    memset(note, 0, sizeof *note);
    note->orig = idx;
    note->orig_uid = atomic_load(&ef_inst_at(idx)->uid);
    note->shared = shared;
    note->rec.pid = ef_self.pid;
    note->rec.epfd = epfd;
    lock();
    int r = copy_locked(epfd, idx, excl, nexcl, caller, note);
    unlock();
    last = *note;
    last_set = 1;
    return r;
}

int ef_repair_copy(int epfd, uint32_t idx, const struct ef_repair_excl *excl, int nexcl,
                   void *caller, struct ef_repair_note *note)
{
    if (atomic_load(&ef_inst_at(idx)->allowed)) {
        memset(note, 0, sizeof *note);
        note->rec.pid = ef_self.pid;
        note->rec.epfd = epfd;
        return fail(&note->rec, EF_RSTEP_ALLOWED, 0, epfd);
    }
    return copy(epfd, idx, ef_repair_shared(epfd, idx), excl, nexcl, caller, note);
}

static void keep(int epfd, const struct ef_repair_note *n)
{
    pending = *n;
    pending_epfd = epfd;
    pending_set = 1;
    if (n->rec.how == EF_REPAIR_COPIED && n->copy) {
        /* Off the quiet path (rules.h) until ef_on_ctl has taken the note:
         * the change to record may be a later call's (ef_repair_take). */
        pending.epoch = atomic_load(&ef_fork.epoch);
        atomic_store(&ef_inst_at(n->copy)->crossed, 1);
    }
}

void ef_repair_forget(void)
{
    if (pending_set && pending.rec.how != EF_REPAIR_COPIED)
        pending_set = 0;
    if (last_set)
        last_set = 0;
}

const struct ef_repair_note *ef_repair_take(int epfd, uint32_t idx)
{
    if (EF_LIKELY(!pending_set))
        return NULL;
    if (pending.rec.how == EF_REPAIR_COPIED ? pending.copy != idx : pending_epfd != epfd)
        return NULL;
    pending_set = 0;
    if (pending.rec.how == EF_REPAIR_COPIED && pending.copy) {
        /* Back to the quiet path, unless this process forked since the copy
         * (then the copy did cross a fork).  A fork in another thread bumps
         * the epoch before it looks at crossed: either we see the new epoch
         * and put the flag back, or its prepare handler sees our 0 and sets
         * it (hold.c). */
        struct ef_inst *c = ef_inst_at(pending.copy);
        if (atomic_load(&ef_fork.epoch) == pending.epoch) {
            atomic_store(&c->crossed, 0);
            if (atomic_load(&ef_fork.epoch) != pending.epoch)
                atomic_store(&c->crossed, 1);
        }
    }
    return &pending;
}

void ef_repair_before_change(int epfd, uint32_t at_entry, void *caller)
{
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load(&e->flags) & EF_FD_EPOLL))
        return;
    uint32_t idx = atomic_load(&e->inst);
    if (idx != at_entry) {
        /* stale.c rebuilt it in this call (a ghost); if others kept the
         * original, this change would have reached them: a repaired conflict */
        if (last_set && last.orig == at_entry && last.shared && last.rec.how == EF_REPAIR_COPIED)
            keep(epfd, &last);
        return;
    }
    struct ef_inst *in = ef_inst_at(idx);
    if (!atomic_load(&in->crossed) || atomic_load(&in->allowed) || !ef_holds(idx))
        return; /* never shared, or shared on purpose (epollfork_allow_shared) */
    uint32_t mine = atomic_load(&ef_local_at(idx)->slot) >= 0;
    if (atomic_load(&in->nholders) <= mine && !atomic_load(&in->overflow))
        return;
    if (ef_in_shim) {
        /* a signal handler that interrupted the shim: no repair from here, but
         * the report will say so */
        struct ef_repair_note n = {.orig = idx, .shared = 1};
        n.rec.pid = ef_self.pid;
        n.rec.epfd = epfd;
        fail(&n.rec, EF_RSTEP_REENTRY, 0, epfd);
        keep(epfd, &n);
        return;
    }
    EF_GUARD_SCOPE();
    if (!ef_repair_shared(epfd, idx))
        return;
    struct ef_repair_note n;
    if (copy(epfd, idx, 1, NULL, 0, caller, &n) != 0)
        keep(epfd, &n);
}

/* ------------------------------------------------------------ exec leaks */

void ef_repair_cloexec(int fd, struct ef_repair_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->pid = ef_sys_getpid();
    rec->epfd = fd;
    int fl = ef_real.fcntl(fd, F_GETFD);
    if (fl >= 0 && ef_real.fcntl(fd, F_SETFD, fl | FD_CLOEXEC) == 0)
        rec->how = EF_REPAIR_CLOEXEC;
    else
        fail(rec, EF_RSTEP_FCNTL, errno, fd);
}

void ef_repair_close_inherited(int fd, struct ef_repair_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->pid = ef_sys_getpid();
    rec->epfd = fd;
    if (ef_sys_close(fd) == 0)
        rec->how = EF_REPAIR_CLOSED;
    else
        fail(rec, EF_RSTEP_CLOSE, errno, fd);
}

/* ----------------------------------------------------------------- words */

static const char *errname(int err, char *buf, size_t len)
{
    const char *n = err ? strerrorname_np(err) : NULL;
    if (n)
        return n;
    ef_fmt(buf, len, "errno %d", err);
    return buf;
}

static void failure(const struct ef_repair_rec *rec, char *out, size_t len)
{
    char e[32];
    const char *why = errname(rec->err, e, sizeof e);
    switch (rec->step) {
    case EF_RSTEP_FDINFO:
        ef_fmt(out, len, "cannot read /proc/self/fdinfo/%d (%s)", rec->epfd, why);
        break;
    case EF_RSTEP_CREATE:
        ef_fmt(out, len, "cannot create a new epoll instance (%s)", why);
        break;
    case EF_RSTEP_ADD:
        ef_fmt(out, len, "cannot re-add fd %d to the copy (%s)", rec->fd, why);
        break;
    case EF_RSTEP_DUP:
        ef_fmt(out, len, "cannot put the copy at fd %d (%s)", rec->epfd, why);
        break;
    case EF_RSTEP_MEMORY:
        ef_fmt(out, len, "no memory for the list of entries");
        break;
    case EF_RSTEP_REENTRY:
        ef_fmt(out, len, "the call came from a signal handler that interrupted the shim");
        break;
    case EF_RSTEP_FCNTL:
        ef_fmt(out, len, "cannot set FD_CLOEXEC on fd %d (%s)", rec->epfd, why);
        break;
    case EF_RSTEP_CLOSE:
        ef_fmt(out, len, "cannot close fd %d (%s)", rec->epfd, why);
        break;
    case EF_RSTEP_ALLOWED:
        ef_fmt(out, len, "epoll fd %d is shared on purpose (EPOLLFORK_ALLOW_SHARED): no private "
               "copy is made of it", rec->epfd);
        break;
    case EF_RSTEP_GONE:
        ef_fmt(out, len, "another thread had replaced epoll fd %d meanwhile", rec->epfd);
        break;
    default:
        ef_fmt(out, len, "no repair was attempted");
        break;
    }
}

void ef_repair_fill(struct ef_report *r, const struct ef_repair_rec *from)
{
    struct ef_repair_rec rec = *from; /* may come from the ring: used as a copy */
    char extra[256] = "", what[200];
    size_t k = 0;
    int entries = rec.entries > 0 ? rec.entries : 0;
    r->repaired = rec.how == EF_REPAIR_COPIED || rec.how == EF_REPAIR_REBUILT ||
                  rec.how == EF_REPAIR_CLOEXEC || rec.how == EF_REPAIR_CLOSED;
    if (rec.left > 0)
        k += ef_fmt(extra + k, sizeof extra - k, "; %d entr%s whose file it no longer had open at "
                    "that number left out", rec.left, rec.left == 1 ? "y" : "ies");
    if (rec.rearmed > 0)
        ef_fmt(extra + k, sizeof extra - k, "; %d disarmed EPOLLONESHOT entr%s, ready for nothing "
               "then, armed for EPOLLERR|EPOLLHUP only", rec.rearmed, rec.rearmed == 1 ? "y" : "ies");
    const char *ies = entries == 1 ? "y" : "ies";
    switch (rec.how) {
    case EF_REPAIR_COPIED:
        if (r->kind == EF_KIND_STALE)
            ef_fmt(r->repair, sizeof r->repair, "process %d was given a private copy of epoll fd "
                   "%d with %d entr%s, without the entry of the closed fd %d%s; the other "
                   "holders keep the original", rec.pid, rec.epfd, entries, ies, rec.fd, extra);
        else
            ef_fmt(r->repair, sizeof r->repair, "process %d was given a private copy of epoll fd "
                   "%d with %d entr%s%s, and its change went to the copy: the list process %d "
                   "uses was not touched", rec.pid, rec.epfd, entries, ies, extra, r->other_pid);
        break;
    case EF_REPAIR_REBUILT:
        ef_fmt(r->repair, sizeof r->repair, "epoll fd %d of process %d was rebuilt without the "
               "entry of the closed fd %d: a new instance with %d entr%s%s", rec.epfd, rec.pid,
               rec.fd, entries, ies, extra);
        break;
    case EF_REPAIR_CLOEXEC:
        ef_fmt(r->repair, sizeof r->repair, "FD_CLOEXEC was set on epoll fd %d before the exec: "
               "the new program does not inherit it", rec.epfd);
        break;
    case EF_REPAIR_CLOSED:
        ef_fmt(r->repair, sizeof r->repair, "epoll fd %d was closed at start-up, before main(): "
               "this program did not create it and no longer holds the instance", rec.epfd);
        break;
    default:
        failure(&rec, what, sizeof what);
        ef_fmt(r->repair, sizeof r->repair, "not repaired: %s; %s", what,
               r->kind == EF_KIND_STALE       ? "the entry of the closed fd stays"
               : r->kind == EF_KIND_EXEC_LEAK ? "the new program inherits the fd"
                                              : "the change went through to the shared list");
        break;
    }
}
