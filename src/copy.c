/*
 * copy.c - a private copy of an epoll instance, rebuilt from the kernel's own
 * list, for repair mode (repair.c decides when one is made, and says what was
 * done).
 *
 * The copy is a new instance holding the entries whose file this process has
 * open at their number, with the same events and data, read from
 * /proc/self/fdinfo/EPFD (every entry's tfd, events and data), and put at the
 * same fd number by dup3 (close-on-exec kept as it was) and at every alias
 * (dup, dup2, fcntl).  An entry whose number is closed or now holds another
 * file (a ghost), or that the caller excludes (a confirmed ghost whose number
 * was dup2'd back onto the same file), is left out: it could only deliver
 * events for a closed number.
 *
 * Flags survive.  The kernel shows a disarmed EPOLLONESHOT entry with its
 * private bits only (docs/EVIDENCE.md), and every ADD or MOD arms
 * EPOLLERR|EPOLLHUP, so a disarmed entry is disarmed the way the kernel does
 * it: added armed for every readiness bit, in a copy that holds nothing else
 * yet, and its one event consumed by an epoll_wait on the copy.  An entry
 * whose file is ready for nothing at that moment stays armed for
 * EPOLLERR|EPOLLHUP only (counted in the report; README limits).
 * EPOLLEXCLUSIVE entries are re-added with the flag (ADD is the only op that
 * takes it), nested instances like any file.
 *
 * Threads: the copy is built completely at a new fd and dup3 then replaces
 * the number in one step, so no thread sees half of it.  Copies in one
 * process are serialized by a lock taken only here (a cold path); a fork
 * child that inherits it held by a parent thread takes it over.  Everything
 * here is below an entry point: the real calls are ef_real's (never our
 * wrappers), errno is not restored, and the shim's tables change after the
 * kernel's objects did (the copy is a new instance this process holds alone;
 * its registrations move with it; the original is released).
 *
 * Cost: one fdinfo read, and one fstat and one epoll_ctl per entry, plus a
 * kcmp for an entry the shim's interest table does not know (the kernel walks
 * the whole instance for each kcmp: bench/RESULTS.md, "Repair mode").
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
    return ef_sys6(SYS_kcmp, p1, p2, type, (long)a, (long)b, 0);
}

/* ------------------------------------------------------------------ lock */

static _Atomic pid_t lock_owner; /* tid of the thread making a repair, 0 none */

static void lock(void)
{
    pid_t me = (pid_t)ef_sys6(SYS_gettid, 0, 0, 0, 0, 0, 0);
    for (unsigned spin = 0;; spin++) {
        pid_t cur = 0;
        if (atomic_compare_exchange_weak(&lock_owner, &cur, me))
            return;
        /* A fork child inherits the word of a parent thread that was making a
         * repair at the fork: that thread is not one of the child's. */
        if (cur && (spin & 255) == 255 &&
            ef_sys6(SYS_tgkill, ef_sys_getpid(), cur, 0, 0, 0, 0) != 0 && errno == ESRCH)
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
                         : ef_real.mmap(NULL, ncap * sizeof *l->v, PROT_READ | PROT_WRITE,
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
        ef_real.munmap(l->v, l->cap * sizeof *l->v);
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
    if (ef_fstat(t->tfd, &st) != 0 || (uint64_t)st.st_ino != t->ino)
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

int ef_repair_failed(struct ef_repair_rec *rec, enum ef_repair_step step, int err, int fd)
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
    return ef_repair_failed(rec, EF_RSTEP_ADD, errno, x->t.tfd);
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
        return ef_repair_failed(rec, now.err ? EF_RSTEP_MEMORY : EF_RSTEP_FDINFO, now.err ? now.err : errno, c);
    }
    for (size_t i = 0; i < now.n; i++) {
        struct ef_tfd *t = &now.v[i].t;
        if (!(t->events & ~PRIVATE_BITS))
            continue;
        struct epoll_event ev = {.events = t->events & PRIVATE_BITS, .data.u64 = t->data};
        if (ef_real.epoll_ctl(c, EPOLL_CTL_MOD, t->tfd, &ev) != 0) {
            list_free(&now);
            return ef_repair_failed(rec, EF_RSTEP_ADD, errno, t->tfd);
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
        ef_repair_failed(rec, EF_RSTEP_GONE, 0, epfd);
        return 0; /* another thread replaced it while we waited for the lock */
    }
    int fl = ef_real.fcntl(epfd, F_GETFD);
    if (fl < 0)
        return ef_repair_failed(rec, EF_RSTEP_DUP, errno, epfd);
    struct list es = {0};
    if (ef_procfs_epoll_entries(0, epfd, collect, &es) != 0 || es.err) {
        int err = es.err ? es.err : errno;
        list_free(&es);
        return ef_repair_failed(rec, err == ENOMEM ? EF_RSTEP_MEMORY : EF_RSTEP_FDINFO, err, epfd);
    }
    int c = ef_real.epoll_create1(EPOLL_CLOEXEC);
    if (c < 0) {
        int err = errno;
        list_free(&es);
        return ef_repair_failed(rec, EF_RSTEP_CREATE, err, epfd);
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
        return ef_repair_failed(rec, EF_RSTEP_DUP, err, epfd);
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

int ef_copy_make(int epfd, uint32_t idx, const struct ef_repair_excl *excl, int nexcl,
                 void *caller, struct ef_repair_note *note)
{
    lock();
    int r = copy_locked(epfd, idx, excl, nexcl, caller, note);
    unlock();
    return r;
}
