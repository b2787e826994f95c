/*
 * ps_judge.c - the findings: only what the kernel shows, never a guess.
 *
 * shared-and-waited: two or more processes hold one instance and more than
 *   one of them has a thread blocked in a wait on it (/proc/PID/task/TID/
 *   syscall: 232/281/441 with arg0 = an fd of that instance), now or at a
 *   --watch sample.
 * stale-entry: no holder has the entry's file open at any fd number
 *   (kcmp(KCMP_EPOLL_TFD) against every holder fd with the entry's inode, and
 *   every holder fd whose inode could not be read).  The file is still open
 *   somewhere (an entry dies with its file's last reference), just not in a
 *   process that could DEL it.  Said only when the list did not change while
 *   we looked and no process that appeared meanwhile holds the instance; it
 *   is a claim about every process, so the text names those that could not
 *   be inspected (one of them might hold the instance and the file).
 * reused-number: a holder's fd tfd is another file than the registered one:
 *   another inode, or kcmp(KCMP_EPOLL_TFD) says so for that exact entry (its
 *   rank among entries with the same number, see ps_read_entries).
 * inherited-through-exec: a holder's fd of the instance has no close-on-exec,
 *   it runs another program than its parent (/proc/PID/exe: another inode),
 *   and its parent holds the same instance (kcmp), or another holder that is
 *   not its descendant runs another program than it.  Holders of one
 *   instance are its creator and what was forked from it, all in one program
 *   unless an exec kept the fd; fd passing over a unix socket is the other
 *   way, and /proc cannot tell it apart (the text says so).  When the holder
 *   is alone (haproxy 2.6's single `program`: the master re-creates its poller
 *   after forking it) that cannot be shown, and a note says what can.
 *
 * Inode equality is only a filter: two opens of one path, or two eventfds
 * (one anonymous inode for all), share an inode; kcmp decides.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "ps.h"

const char *ps_finding_name(enum ps_finding_kind k)
{
    switch (k) {
    case F_SHARED_WAITED: return "shared-and-waited";
    case F_STALE: return "stale-entry";
    case F_REUSED: return "reused-number";
    case F_EXEC: return "inherited-through-exec";
    }
    return "?";
}

static void add_finding(struct ps_inst *in, enum ps_finding_kind kind, int tfd, const int *pids,
                        size_t npids, char *detail)
{
    struct ps_finding *f = PS_PUSH(in->finds, in->nfinds);
    f->kind = kind;
    f->tfd = tfd;
    f->pids = ps_alloc(npids, sizeof *f->pids);
    if (npids)
        memcpy(f->pids, pids, npids * sizeof *pids);
    f->npids = npids;
    f->detail = detail;
}

/* ------------------------------------------------------------ identities */

struct ident {
    uint32_t dev;
    uint64_t ino;
    int proc;
    int fd;
};

static int cmp_ident(const void *a, const void *b)
{
    const struct ident *x = a, *y = b;
    if (x->dev != y->dev)
        return x->dev < y->dev ? -1 : 1;
    if (x->ino != y->ino)
        return x->ino < y->ino ? -1 : 1;
    if (x->proc != y->proc)
        return x->proc < y->proc ? -1 : 1;
    return (x->fd > y->fd) - (x->fd < y->fd);
}

/* Inodes of a holder's fds that the link text does not give (paths, anon
 * inodes, epoll fds themselves: an instance can be registered in another). */
static void read_idents(struct ps_proc *p)
{
    if (p->idented)
        return;
    p->idented = 1;
    for (size_t k = 0; k < p->nfds; k++) {
        struct ps_fd *f = &p->fds[k];
        if (f->ident)
            continue;
        f->ident = ef_procfs_fd_ident(p->pid, f->fd, &f->ino, &f->dev) == 0 ? 1 : -1;
    }
}

/* The first index of (dev, ino) in the sorted table, and how many. */
static size_t ident_range(const struct ident *ix, size_t n, uint32_t dev, uint64_t ino, size_t *count)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (ix[mid].dev < dev || (ix[mid].dev == dev && ix[mid].ino < ino))
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < n && ix[end].dev == dev && ix[end].ino == ino)
        end++;
    *count = end - lo;
    return lo;
}

static char *fmt_dev(uint32_t kdev, char *buf, size_t len)
{
    snprintf(buf, len, "%u:%u", kdev >> 20, kdev & 0xfffff);
    return buf;
}

/* ------------------------------------------------------------ entries */

static void push_where(struct ps_where **v, size_t *n, int pid, int fd)
{
    for (size_t i = 0; i < *n; i++)
        if ((*v)[i].pid == pid && (*v)[i].fd == fd)
            return;
    *PS_PUSH(*v, *n) = (struct ps_where){pid, fd};
}

/* Is (proc, fd) the file of entry e of the instance whose first fd is rep? */
static int registered(struct ps_ctx *c, const struct ps_ref *rep, int proc, int fd,
                      const struct ps_entry *e)
{
    return ef_procfs_is_registered_at(c->procs[proc].pid, fd, c->procs[rep->proc].pid, rep->fd,
                                      e->t.tfd, e->toff);
}

static void judge_entry(struct ps_ctx *c, int ii, struct ps_entry *e, const struct ident *ix,
                        size_t nix, int *undecided)
{
    struct ps_inst *in = &c->insts[ii];
    const struct ps_ref *rep = &in->refs[0];
    int unknown = 0;
    /* 1. each holder's fd with the registered number */
    for (size_t h = 0; h < in->nrefs; h++) {
        if (h && in->refs[h].proc == in->refs[h - 1].proc)
            continue;
        struct ps_proc *p = &c->procs[in->refs[h].proc];
        struct ps_fd *f = ps_fd_of(p, e->t.tfd);
        if (!f)
            continue;
        int r = f->ident == 1 && (f->ino != e->t.ino || f->dev != (uint32_t)e->t.sdev)
                    ? 0 /* another inode: certainly another file */
                    : registered(c, rep, in->refs[h].proc, f->fd, e);
        if (r == 1) {
            push_where(&e->open_in, &e->nopen_in, p->pid, f->fd);
            if (!e->target)
                e->target = f->link;
        } else if (r == 0) {
            *PS_PUSH(e->reused_in, e->nreused_in) = p->pid;
        } else {
            unknown = 1;
        }
    }
    /* 2. the file at another number in a holder, 3. in anyone else: only
     * for an entry no holder has at its number (a stale candidate).  Looking
     * further for every entry would cost a kcmp per same-inode fd of every
     * holder: all eventfds, timerfds and signalfds share one inode. */
    size_t cnt = 0, lo = e->nopen_in ? 0 : ident_range(ix, nix, (uint32_t)e->t.sdev, e->t.ino, &cnt);
    for (size_t i = lo; i < lo + cnt; i++) {
        struct ps_proc *p = &c->procs[ix[i].proc];
        int holder = p->mark == ii + 1;
        if (holder && ix[i].fd == e->t.tfd)
            continue; /* asked above */
        if (!holder && (e->nopen_in || e->nkept_by >= 8))
            continue; /* others only matter for a stale entry; a few suffice */
        int r = registered(c, rep, ix[i].proc, ix[i].fd, e);
        if (r == 1 && holder)
            push_where(&e->open_in, &e->nopen_in, p->pid, ix[i].fd);
        else if (r == 1)
            push_where(&e->kept_by, &e->nkept_by, p->pid, ix[i].fd);
        unknown |= r < 0 && holder;
        if (r == 1 && !e->target)
            e->target = ps_fd_of(p, ix[i].fd)->link;
    }
    /* holder fds whose inode could not be read cannot be filtered: ask each */
    for (size_t h = 0; h < in->nrefs && !e->nopen_in; h++) {
        struct ps_proc *p = &c->procs[in->refs[h].proc];
        if (h && in->refs[h].proc == in->refs[h - 1].proc)
            continue;
        for (size_t k = 0; k < p->nfds; k++)
            if (p->fds[k].ident != 1 && p->fds[k].fd != e->t.tfd) {
                int r = registered(c, rep, in->refs[h].proc, p->fds[k].fd, e);
                if (r == 1)
                    push_where(&e->open_in, &e->nopen_in, p->pid, p->fds[k].fd);
                unknown |= r < 0;
            }
    }
    if (!e->target) {
        char dev[32];
        char *s = (uint32_t)e->t.sdev == c->pipefs_dev
                      ? ps_fmt("pipe:[%llu]", (unsigned long long)e->t.ino)
                  : (uint32_t)e->t.sdev == c->sockfs_dev
                      ? ps_fmt("socket:[%llu]", (unsigned long long)e->t.ino)
                      : ps_fmt("inode %llu on device %s (open in no process we read)",
                               (unsigned long long)e->t.ino,
                               fmt_dev((uint32_t)e->t.sdev, dev, sizeof dev));
        e->target = ps_str(c, s, strlen(s));
        free(s);
    }
    if (e->nopen_in)
        e->stale = 0;
    else if (unknown || c->kcmp_errno)
        *undecided = 1;
    else
        e->stale = 1;
}

static void entry_findings(struct ps_ctx *c, int ii)
{
    struct ps_inst *in = &c->insts[ii];
    for (size_t i = 0; i < in->nents; i++) {
        struct ps_entry *e = &in->ents[i];
        char ev[256];
        ps_events_str(e->t.events, ev, sizeof ev);
        if (e->stale == 1) {
            int *pids = NULL; /* the holders: the ghost's events reach them */
            size_t np = 0;
            for (size_t h = 0; h < in->nrefs; h++)
                if (!h || in->refs[h].proc != in->refs[h - 1].proc)
                    *PS_PUSH(pids, np) = c->procs[in->refs[h].proc].pid;
            char *kept = e->nkept_by
                             ? ps_fmt("; it is kept open by process %d (%s) at fd %d%s",
                                      e->kept_by[0].pid, ps_proc_by_pid(c, e->kept_by[0].pid)->comm,
                                      e->kept_by[0].fd, e->nkept_by > 1 ? " and others" : "")
                             : ps_fmt("%s", "");
            /* "no holder" is a claim about every process: say which ones the
             * kernel would not show us (a process that holds this instance
             * among them would make it not stale) */
            char *unseen = ps_unseen_list(c);
            char *scope = c->uninspected
                              ? ps_fmt(" (%zu process%s could not be inspected: %s; one of them "
                                       "holding this instance and the file would make it not stale)",
                                       c->uninspected, c->uninspected == 1 ? "" : "es", unseen)
                              : ps_fmt("%s", "");
            add_finding(in, F_STALE, e->t.tfd, pids, np,
                        ps_fmt("entry tfd %d (%s, %s, data 0x%llx): no holder of this instance has "
                               "that file open at any fd number, so its events reach processes "
                               "that cannot EPOLL_CTL_DEL it%s%s",
                               e->t.tfd, ps_at(c, e->target), ev, (unsigned long long)e->t.data,
                               kept, scope));
            free(kept);
            free(unseen);
            free(scope);
            free(pids);
        }
        for (size_t k = 0; k < e->nreused_in; k++) {
            struct ps_proc *p = ps_proc_by_pid(c, e->reused_in[k]);
            struct ps_fd *f = ps_fd_of(p, e->t.tfd);
            add_finding(in, F_REUSED, e->t.tfd, &p->pid, 1,
                        ps_fmt("entry tfd %d (%s, %s, data 0x%llx) was registered for another "
                               "file: fd %d of process %d (%s) is now %s",
                               e->t.tfd, ps_at(c, e->target), ev, (unsigned long long)e->t.data,
                               e->t.tfd, p->pid, p->comm, f ? ps_at(c, f->link) : "?"));
        }
    }
}

static void read_waits(struct ps_ctx *c, struct ps_proc *p);
static int waits_on(const struct ps_proc *p, int ii, int seen, const struct ps_wait **w);

/* ------------------------------------------------------------ exec */

static int read_exe(struct ps_ctx *c, struct ps_proc *p)
{
    if (p->exe_read)
        return p->exe_read;
    char buf[4097];
    if (ef_procfs_exe(p->pid, buf, sizeof buf) < 0 ||
        ef_procfs_exe_ident(p->pid, &p->exe_ino, &p->exe_dev) != 0) {
        p->exe_read = -1;
        return -1;
    }
    p->exe = ps_str(c, buf, strlen(buf));
    p->exe_read = 1;
    return 1;
}

/* An fd >= 3 of the parent that is one open file with an fd of the child:
 * files demonstrably crossed from one to the other.  The fd in *pfd. */
static int shares_files(struct ps_ctx *c, struct ps_proc *child, struct ps_proc *parent, int *cfd,
                        int *pfd)
{
    for (size_t k = 0; k < child->nfds; k++) {
        struct ps_fd *f = &child->fds[k];
        if (f->fd < 3 || f->kind == FK_EPOLL)
            continue;
        struct ps_fd *g = ps_fd_of(parent, f->fd);
        if (g && ef_procfs_kcmp_file_order(child->pid, f->fd, parent->pid, g->fd) == 0) {
            *cfd = f->fd;
            *pfd = g->fd;
            return 1;
        }
    }
    return 0;
}

/* Is d a descendant of a (by parent pids, as they are now)? */
static int descends(struct ps_ctx *c, const struct ps_proc *d, const struct ps_proc *a)
{
    for (int depth = 0; d && d->ppid > 0 && depth < 4096; depth++) {
        if (d->ppid == a->pid)
            return 1;
        d = ps_proc_by_pid(c, d->ppid);
    }
    return 0;
}

static void exec_findings(struct ps_ctx *c, int ii)
{
    struct ps_inst *in = &c->insts[ii];
    for (size_t h = 0; h < in->nrefs; h++) {
        struct ps_proc *p = &c->procs[in->refs[h].proc];
        struct ps_fd *f = ps_fd_of(p, in->refs[h].fd);
        int done = 0;
        for (size_t k = 0; k < in->nfinds; k++)
            done |= in->finds[k].kind == F_EXEC && in->finds[k].pids[0] == p->pid;
        if (f->cloexec != 0 || done)
            continue;
        struct ps_proc *parent = p->ppid > 0 ? ps_proc_by_pid(c, p->ppid) : NULL;
        if (!parent || parent->state != PROC_INSPECTED || read_exe(c, p) < 0 ||
            read_exe(c, parent) < 0)
            continue;
        if (p->exe_ino == parent->exe_ino && p->exe_dev == parent->exe_dev)
            continue; /* the same program: a fork, not an exec into another */
        if (parent->mark == ii + 1) {
            int pfd = -1;
            for (size_t k = 0; k < in->nrefs && pfd < 0; k++)
                if (&c->procs[in->refs[k].proc] == parent)
                    pfd = in->refs[k].fd;
            add_finding(in, F_EXEC, -1, &p->pid, 1,
                        ps_fmt("process %d (%s, %s) holds this instance at fd %d without "
                               "close-on-exec, and its parent %d (%s, %s), which runs another "
                               "program, holds it too (fd %d): the instance went through an exec "
                               "that kept the fd (or was passed over a unix socket, which /proc "
                               "does not tell apart)",
                               p->pid, p->comm, ps_at(c, p->exe), f->fd, parent->pid, parent->comm,
                               ps_at(c, parent->exe), pfd));
            continue;
        }
        /* Or a holder that is not its descendant runs another program than
         * it.  Without fd passing, the holders of an instance are its creator
         * and processes forked from it, all in the creator's program unless
         * one of them exec'd with the fd open; so two programs mean some exec
         * kept it.  And p did not make it after an exec of its own, or a
         * process outside its descendants could not hold it. */
        struct ps_proc *q = NULL;
        int qfd = -1;
        for (size_t k = 0; k < in->nrefs && !q; k++) {
            struct ps_proc *o = &c->procs[in->refs[k].proc];
            if (o != p && read_exe(c, o) > 0 && (o->exe_ino != p->exe_ino || o->exe_dev != p->exe_dev) &&
                !descends(c, o, p)) {
                q = o;
                qfd = in->refs[k].fd;
            }
        }
        if (q) {
            add_finding(in, F_EXEC, -1, &p->pid, 1,
                        ps_fmt("process %d (%s, %s) holds this instance at fd %d without "
                               "close-on-exec and runs another program than its parent %d (%s, %s); "
                               "process %d (%s, %s), not its descendant, holds it too (fd %d) and "
                               "runs another program than it: the instance went through an exec "
                               "that kept the fd (or was passed over a unix socket, which /proc "
                               "does not tell apart)",
                               p->pid, p->comm, ps_at(c, p->exe), f->fd, parent->pid, parent->comm,
                               ps_at(c, parent->exe), q->pid, q->comm, ps_at(c, q->exe), qfd));
            continue;
        }
        /* Not provable, but worth a line: it does not use the instance (no
         * thread waits on it) and files did cross an exec from the parent. */
        int cfd, pfd;
        const struct ps_wait *w;
        read_waits(c, p);
        if (p->waits_read == 1 && !waits_on(p, ii, 0, &w) && shares_files(c, p, parent, &cfd, &pfd))
            ps_note(&in->notes, &in->nnotes,
                    ps_fmt("process %d (%s, %s) holds this instance at fd %d without "
                           "close-on-exec and does not wait on it; it runs another program than "
                           "its parent %d (%s, %s) and has some of its parent's files (its fd %d "
                           "is the parent's fd %d), so an exec passed it fds.  The parent does "
                           "not hold this instance now: whether it came through that exec "
                           "cannot be shown",
                           p->pid, p->comm, ps_at(c, p->exe), f->fd, parent->pid, parent->comm,
                           ps_at(c, parent->exe), cfd, pfd));
    }
}

/* ------------------------------------------------------------ waits */

static void read_waits(struct ps_ctx *c, struct ps_proc *p)
{
    if (!p->waits_read)
        ps_read_waits(c, p, &p->waits, &p->nwaits);
}

/* Does p have a thread waiting on instance ii (now, or seen by --watch)? */
static int waits_on(const struct ps_proc *p, int ii, int seen, const struct ps_wait **w)
{
    const struct ps_wait *v = seen ? p->seen : p->waits;
    size_t n = seen ? p->nseen : p->nwaits;
    for (size_t i = 0; i < n; i++) {
        const struct ps_fd *f = ps_fd_of(p, v[i].epfd);
        if (f && f->kind == FK_EPOLL && f->inst == ii) {
            *w = &v[i];
            return 1;
        }
    }
    return 0;
}

static void shared_waited(struct ps_ctx *c, int ii)
{
    struct ps_inst *in = &c->insts[ii];
    if (in->nholders < 2)
        return;
    int *pids = NULL;
    size_t np = 0;
    char *what = ps_fmt("%s", "");
    for (size_t h = 0; h < in->nrefs; h++) {
        if (h && in->refs[h].proc == in->refs[h - 1].proc)
            continue;
        struct ps_proc *p = &c->procs[in->refs[h].proc];
        const struct ps_wait *w;
        int now = waits_on(p, ii, 0, &w);
        if (!now && !waits_on(p, ii, 1, &w))
            continue;
        *PS_PUSH(pids, np) = p->pid;
        char *s = ps_fmt("%s%s%d (%s) thread %d in %s on fd %d%s", what, *what ? ", " : "",
                         p->pid, p->comm, w->tid, ps_wait_name(w->nr), w->epfd,
                         now ? "" : " (seen during --watch)");
        free(what);
        what = s;
    }
    if (np >= 2)
        add_finding(in, F_SHARED_WAITED, -1, pids, np,
                    ps_fmt("%zu processes hold this instance and %zu of them wait on it: %s",
                           in->nholders, np, what));
    free(what);
    free(pids);
}

/* ------------------------------------------------------------ re-checks */

/* The list as read now has the same entries, in the same order, as the one
 * the findings were made from. */
static int same_list(struct ps_ctx *c, struct ps_inst *in)
{
    struct ps_entry *now;
    size_t n;
    if (ps_read_entries(c, &in->refs[0], &now, &n) != 0)
        return 0;
    int same = n == in->nents;
    for (size_t i = 0; same && i < n; i++)
        same = now[i].t.tfd == in->ents[i].t.tfd && now[i].t.ino == in->ents[i].t.ino &&
               now[i].t.sdev == in->ents[i].t.sdev;
    ps_free_entries(now, n);
    return same;
}

struct late_arg {
    struct ps_ctx *c;
    int *v;
    size_t n;
};

static int on_pid(int pid, void *arg)
{
    struct late_arg *a = arg;
    if (pid != a->c->self && !ps_proc_by_pid(a->c, pid))
        *PS_PUSH(a->v, a->n) = pid;
    return 0;
}

struct late_fds {
    int *v;
    size_t n;
};

static int on_late_link(int fd, const char *link, size_t len, void *arg)
{
    struct late_fds *a = arg;
    if (len == 22 && !memcmp(link, "anon_inode:[eventpoll]", 22))
        *PS_PUSH(a->v, a->n) = fd;
    return 0;
}

/* A process that appeared after the scan (a fork) may hold an instance with
 * a stale candidate, and the file with it: then nothing is called stale. */
static void late_processes(struct ps_ctx *c)
{
    struct late_arg a = {c, NULL, 0};
    ef_procfs_pids(on_pid, &a);
    for (size_t i = 0; i < a.n; i++) {
        struct late_fds fds = {NULL, 0};
        struct ef_proc_stat st;
        if (ef_procfs_read_stat(a.v[i], &st) != 0 || (st.flags & PS_PF_KTHREAD) || st.state == 'Z' ||
            st.state == 'X')
            continue; /* gone, a kernel thread or a zombie: holds nothing */
        int readable = ef_procfs_fd_links(a.v[i], on_late_link, &fds) == 0 || errno == ENOENT;
        if (!readable) { /* it might hold anything: the stale texts name it */
            ps_uninspected(c, a.v[i], st.comm);
            free(fds.v);
            continue;
        }
        for (size_t ii = 0; ii < c->ninsts; ii++) {
            struct ps_inst *in = &c->insts[ii];
            int any = 0;
            for (size_t e = 0; e < in->nents; e++)
                any |= in->ents[e].stale == 1;
            int holds = 0;
            for (size_t k = 0; k < fds.n && any && !holds; k++) {
                int r = ef_procfs_kcmp_file_order(a.v[i], fds.v[k], c->procs[in->refs[0].proc].pid,
                                                  in->refs[0].fd);
                holds = r == 0 || r == -2; /* the same instance, or we cannot tell */
            }
            if (holds) {
                for (size_t e = 0; e < in->nents; e++)
                    if (in->ents[e].stale == 1)
                        in->ents[e].stale = -1;
                ps_note(&in->notes, &in->nnotes,
                        ps_fmt("process %d appeared during the scan and holds this instance: no "
                               "entry is called stale; run again", a.v[i]));
            }
        }
        free(fds.v);
    }
    free(a.v);
}

/* ------------------------------------------------------------ all */

int ps_inst_shown(const struct ps_ctx *c, const struct ps_inst *in)
{
    return in->selected && (c->o->all || in->nholders >= 2 || in->nfinds > 0);
}

void ps_judge(struct ps_ctx *c)
{
    struct ident *ix = NULL;
    size_t nix = 0;
    int any_entries = 0;
    for (size_t ii = 0; ii < c->ninsts; ii++) {
        struct ps_inst *in = &c->insts[ii];
        if (in->nents && !in->alone)
            for (size_t h = 0; h < in->nrefs; h++) {
                read_idents(&c->procs[in->refs[h].proc]);
                any_entries = 1;
            }
    }
    if (any_entries) {
        for (size_t i = 0; i < c->nprocs; i++) {
            struct ps_proc *p = &c->procs[i];
            for (size_t k = 0; p->state == PROC_INSPECTED && k < p->nfds; k++)
                if (p->fds[k].ident == 1)
                    *PS_PUSH(ix, nix) = (struct ident){p->fds[k].dev, p->fds[k].ino, (int)i,
                                                       p->fds[k].fd};
        }
        if (nix)
            qsort(ix, nix, sizeof *ix, cmp_ident);
    }
    for (size_t i = 0; i < c->nprocs; i++)
        c->procs[i].mark = 0;
    for (size_t ii = 0; ii < c->ninsts; ii++) {
        struct ps_inst *in = &c->insts[ii];
        if (!in->selected)
            continue;
        for (size_t h = 0; h < in->nrefs; h++)
            c->procs[in->refs[h].proc].mark = (int)ii + 1;
        if (!in->alone) {
            int undecided = 0;
            for (size_t e = 0; e < in->nents; e++)
                judge_entry(c, (int)ii, &in->ents[e], ix, nix, &undecided);
            if (undecided)
                ps_note(&in->notes, &in->nnotes,
                        ps_fmt("an entry is open in no holder whose fds kcmp could compare: it "
                               "is not called stale"));
            exec_findings(c, (int)ii);
        }
        if (in->nholders >= 2 || c->o->all || in->nfinds)
            for (size_t h = 0; h < in->nrefs; h++)
                read_waits(c, &c->procs[in->refs[h].proc]);
        shared_waited(c, (int)ii);
        for (size_t h = 0; h < in->nrefs; h++)
            c->procs[in->refs[h].proc].mark = 0;
    }
    free(ix);
    /* re-check what depends on the list not moving under us, then write the
     * entry findings */
    int stale = 0;
    for (size_t ii = 0; ii < c->ninsts; ii++) {
        struct ps_inst *in = &c->insts[ii];
        int flagged = 0;
        for (size_t e = 0; e < in->nents; e++)
            flagged |= in->ents[e].stale == 1 || in->ents[e].nreused_in;
        if (flagged && !same_list(c, in)) {
            for (size_t e = 0; e < in->nents; e++) {
                in->ents[e].stale = -1;
                in->ents[e].nreused_in = 0;
            }
            ps_note(&in->notes, &in->nnotes,
                    ps_fmt("the list changed while it was read: no entry is called stale or "
                           "reused; run again"));
        }
        for (size_t e = 0; e < in->nents; e++)
            stale |= in->ents[e].stale == 1;
    }
    if (stale)
        late_processes(c);
    for (size_t ii = 0; ii < c->ninsts; ii++)
        if (c->insts[ii].selected && !c->insts[ii].alone)
            entry_findings(c, (int)ii);
    /* what the output shows of every holder */
    for (size_t ii = 0; ii < c->ninsts; ii++)
        if (ps_inst_shown(c, &c->insts[ii]))
            for (size_t h = 0; h < c->insts[ii].nrefs; h++) {
                struct ps_proc *p = &c->procs[c->insts[ii].refs[h].proc];
                read_waits(c, p);
                read_exe(c, p);
            }
}
