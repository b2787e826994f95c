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
 *    process also holds gets a private copy first (ef_repair_before_change;
 *    the copy itself is copy.c's).  The wrapper then makes the program's call
 *    on the same number: it changes the copy, and the other holders keep the
 *    original, untouched.  Which processes hold it is the kernel's word (kcmp
 *    KCMP_FILE): a holder slot of a process that exec'd or closed it where
 *    the shim could not see is given back, so a server that forks and execs
 *    copies nothing once its children are gone.  The change is still recorded
 *    in the original's ring, marked repaired (track.c takes the note after the
 *    change succeeded), so the others report it under the usual rules.
 *  - A registration that survived the close of its fd (stale.c's ghost) is
 *    removed before the closer uses the instance again: stale.c finds it and
 *    asks for the same copy without it (or a rebuild, when nobody else holds
 *    the instance).
 *  - An epoll fd about to leak into an exec'd program gets FD_CLOEXEC; one that
 *    leaked through an exec the shim could not see is closed at start-up.
 * Each is still reported; the report says what was done (ef_repair_fill), or
 * why it could not be, and then the call went through unchanged.  An instance
 * shared on purpose (epollfork_allow_shared) is never copied.  Cost: nothing
 * unless a repair is made (bench/RESULTS.md, "Repair mode").
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rules.h"

struct scan_arg {
    pid_t me, pid;
    int epfd, found, unknown;
};

static int scan_fd(int fd, void *arg)
{
    struct scan_arg *a = arg;
    int r = ef_procfs_same_file(a->me, a->epfd, a->pid, fd);
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
    int r = ef_procfs_same_file(me, epfd, pid, epfd);
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
    int r = ef_copy_make(epfd, idx, excl, nexcl, caller, note);
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
        return ef_repair_failed(&note->rec, EF_RSTEP_ALLOWED, 0, epfd);
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
        pending.epoch = ef_epoch();
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
    if (pending.rec.pid != ef_self.pid) {
        pending_set = 0; /* a fork child's copy of its parent's note: not its own */
        return NULL;
    }
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
        if (ef_epoch() == pending.epoch) {
            atomic_store(&c->crossed, 0);
            if (ef_epoch() != pending.epoch)
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
        if (last_set && last.orig == at_entry && last.shared && last.rec.how == EF_REPAIR_COPIED &&
            last.rec.pid == ef_self.pid)
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
        ef_repair_failed(&n.rec, EF_RSTEP_REENTRY, 0, epfd);
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
        ef_repair_failed(rec, EF_RSTEP_FCNTL, errno, fd);
}

void ef_repair_close_inherited(int fd, struct ef_repair_rec *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->pid = ef_sys_getpid();
    rec->epfd = fd;
    if (ef_sys_close(fd) == 0)
        rec->how = EF_REPAIR_CLOSED;
    else
        ef_repair_failed(rec, EF_RSTEP_CLOSE, errno, fd);
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
