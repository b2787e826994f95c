/*
 * ps_scan.c - read the host: every process's fds, and which epoll fds are one
 * instance.
 *
 * All epoll fds show the same link (anon_inode:[eventpoll]) and the same inode,
 * so nothing in /proc tells two instances apart; kcmp(KCMP_FILE) does, and it
 * also says which of two open files is the smaller (kernel pointers, obfuscated
 * but consistently: kernel/kcmp.c).  So the epoll fds of the whole host are
 * sorted with kcmp as the comparison, N log N calls, and equal neighbours are
 * one instance.  A cheaper key from fdinfo (the entry set) cannot be trusted to
 * bucket them: on a busy server the list changes between the reads of two
 * holders' fdinfo, and holders of one instance would land in two buckets.
 *
 * Each process costs a read of /proc/PID/stat and one pass over /proc/PID/fd
 * (getdents64 + readlinkat); socket and pipe links carry their inode in the
 * text ("socket:[123]"), so only the other fds of processes that hold an epoll
 * instance are ever stat'ed (ps_judge.c, when their entries are checked).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ps.h"

/* ------------------------------------------------------------ lookups */

struct ps_proc *ps_proc_by_pid(struct ps_ctx *c, int pid)
{
    size_t lo = 0, hi = c->nprocs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c->procs[mid].pid < pid)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->nprocs && c->procs[lo].pid == pid ? &c->procs[lo] : NULL;
}

struct ps_fd *ps_fd_of(const struct ps_proc *p, int fd)
{
    size_t lo = 0, hi = p->nfds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (p->fds[mid].fd < fd)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < p->nfds && p->fds[lo].fd == fd ? &p->fds[lo] : NULL;
}

int ps_is_wait_nr(long nr)
{
    return nr == PS_NR_EPOLL_WAIT || nr == PS_NR_EPOLL_PWAIT || nr == PS_NR_EPOLL_PWAIT2;
}

const char *ps_wait_name(long nr)
{
    switch (nr) {
    case PS_NR_EPOLL_WAIT: return "epoll_wait";
    case PS_NR_EPOLL_PWAIT: return "epoll_pwait";
    case PS_NR_EPOLL_PWAIT2: return "epoll_pwait2";
    default: return "?";
    }
}

/* ------------------------------------------------------------ processes */

struct intlist {
    int *v;
    size_t n;
};

static int add_int(int v, void *arg)
{
    struct intlist *l = arg;
    *PS_PUSH(l->v, l->n) = v;
    return 0;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static int cmp_fd(const void *a, const void *b)
{
    return cmp_int(&((const struct ps_fd *)a)->fd, &((const struct ps_fd *)b)->fd);
}

/* "socket:[123]" -> 123 when link starts with prefix and is exactly that. */
static int bracket_ino(const char *link, size_t len, const char *prefix, uint64_t *ino)
{
    size_t pl = strlen(prefix);
    if (len < pl + 2 || memcmp(link, prefix, pl) != 0 || link[len - 1] != ']')
        return 0;
    uint64_t v = 0;
    for (size_t i = pl; i < len - 1; i++) {
        if (link[i] < '0' || link[i] > '9' || i - pl >= 19)
            return 0;
        v = v * 10 + (uint64_t)(link[i] - '0');
    }
    *ino = v;
    return 1;
}

struct fdscan {
    struct ps_ctx *c;
    struct ps_proc *p;
};

static int on_link(int fd, const char *link, size_t len, void *arg)
{
    struct fdscan *s = arg;
    struct ps_proc *p = s->p;
    struct ps_fd *f = PS_PUSH(p->fds, p->nfds);
    memset(f, 0, sizeof *f);
    f->fd = fd;
    f->inst = -1;
    f->cloexec = -1;
    f->link = ps_str(s->c, link, len);
    if (len == 22 && !memcmp(link, "anon_inode:[eventpoll]", 22)) {
        f->kind = FK_EPOLL;
        p->nepoll++;
    } else if (bracket_ino(link, len, "socket:[", &f->ino)) {
        f->kind = FK_SOCKET;
        f->dev = s->c->sockfs_dev;
        f->ident = 1;
    } else if (bracket_ino(link, len, "pipe:[", &f->ino)) {
        f->kind = FK_PIPE;
        f->dev = s->c->pipefs_dev;
        f->ident = 1;
    }
    return 0;
}

/* The thread-group id of a pid that /proc does not list (a thread id), or -1. */
static int tgid_of(int pid)
{
    char path[64], line[128];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    int tgid = -1;
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, "Tgid:", 5)) {
            char *end;
            long v = strtol(line + 5, &end, 10);
            if (v > 0 && v <= INT_MAX)
                tgid = (int)v;
            break;
        }
    fclose(f);
    return tgid;
}

static void skip(struct ps_proc *p, char *why)
{
    p->state = PROC_SKIPPED;
    p->why = why;
}

static int named(const struct ps_opts *o, int pid)
{
    for (size_t i = 0; i < o->npids; i++)
        if (o->pids[i] == pid)
            return 1;
    for (size_t i = 0; i < o->ntrees; i++)
        if (o->trees[i] == pid)
            return 1;
    return 0;
}

/* Read one process; 0 when it is to be left out of the picture altogether. */
static int read_proc(struct ps_ctx *c, struct ps_proc *p, int listed)
{
    int asked = named(c->o, p->pid);
    struct ef_proc_stat st;
    if (ef_procfs_read_stat(p->pid, &st) != 0) {
        int e = errno;
        if (e == ENOENT || e == ESRCH) {
            c->gone += !asked;
            if (asked)
                skip(p, ps_fmt("no such process"));
            return asked;
        }
        skip(p, ps_fmt("cannot read /proc/%d/stat: %s", p->pid, strerror(e)));
        ps_uninspected(c, p->pid, "");
        return 1;
    }
    memcpy(p->comm, st.comm, sizeof p->comm);
    p->ppid = st.ppid;
    if (!listed) { /* named, but not a process in /proc's listing: a thread id */
        int tgid = tgid_of(p->pid);
        skip(p, tgid > 0 && tgid != p->pid
                    ? ps_fmt("a thread of process %d, not a process: name %d", tgid, tgid)
                    : ps_fmt("not listed in /proc"));
        return 1;
    }
    if (st.flags & PS_PF_KTHREAD) {
        if (asked)
            skip(p, ps_fmt("kernel thread: holds no files"));
        return asked;
    }
    if (st.state == 'Z' || st.state == 'X') {
        struct intlist tasks = {0};
        ef_procfs_tasks(p->pid, add_int, &tasks);
        free(tasks.v);
        if (tasks.n > 1) {
            /* its main thread exited (pthread_exit), the others run on and
             * hold the files, but /proc/PID/fd reads the main thread's: empty */
            skip(p, ps_fmt("its main thread has exited: the files its other threads hold are "
                           "not shown in /proc/PID/fd"));
            ps_uninspected(c, p->pid, p->comm);
            return 1;
        }
        if (asked)
            skip(p, ps_fmt("zombie: it has exited and holds no files"));
        return asked;
    }
    struct fdscan s = {c, p};
    if (ef_procfs_fd_links(p->pid, on_link, &s) != 0) {
        int e = errno;
        free(p->fds);
        p->fds = NULL;
        p->nfds = p->nepoll = 0;
        if (e == ENOENT || e == ESRCH) {
            c->gone += !asked;
            if (asked)
                skip(p, ps_fmt("exited while it was read"));
            return asked;
        }
        if ((e == EACCES || e == EPERM) && geteuid() != 0)
            skip(p, ps_fmt("permission denied reading /proc/PID/fd: another user's process, or "
                           "one that is not dumpable (run as root)"));
        else if (e == EACCES || e == EPERM)
            skip(p, ps_fmt("permission denied reading /proc/PID/fd, even as root: the kernel's "
                           "ptrace access check refused (the process has capabilities this one "
                           "lacks, another user namespace, or a security module)"));
        else
            skip(p, ps_fmt("cannot read /proc/%d/fd: %s", p->pid, strerror(e)));
        ps_uninspected(c, p->pid, p->comm);
        return 1;
    }
    for (size_t i = 1; i < p->nfds; i++)
        if (p->fds[i - 1].fd >= p->fds[i].fd) { /* getdents gives them in order; check */
            qsort(p->fds, p->nfds, sizeof *p->fds, cmp_fd);
            break;
        }
    p->state = PROC_INSPECTED;
    return 1;
}

struct flags_arg {
    unsigned flags;
    int found;
};

static int on_fdinfo_header(const char *line, size_t len, void *arg)
{
    struct flags_arg *a = arg;
    if (ef_procfs_parse_fdinfo_flags(line, len, &a->flags)) {
        a->found = 1;
        return 1;
    }
    return len >= 4 && !memcmp(line, "tfd:", 4); /* past the header */
}

/* Which processes the user asked about: all, the named ones, and --tree's
 * descendants (by parent pid, to a fixed point). */
static void select_procs(struct ps_ctx *c)
{
    const struct ps_opts *o = c->o;
    int all = !o->npids && !o->ntrees;
    for (size_t i = 0; i < c->nprocs; i++) {
        struct ps_proc *p = &c->procs[i];
        p->selected = all || named(o, p->pid);
    }
    if (!o->ntrees)
        return;
    for (size_t i = 0; i < c->nprocs; i++)
        c->procs[i].mark = 0;
    for (size_t t = 0; t < o->ntrees; t++) {
        struct ps_proc *p = ps_proc_by_pid(c, o->trees[t]);
        if (p)
            p->mark = 1;
    }
    for (int grew = 1; grew;) {
        grew = 0;
        for (size_t i = 0; i < c->nprocs; i++) {
            struct ps_proc *p = &c->procs[i];
            if (p->mark || p->ppid <= 0)
                continue;
            struct ps_proc *parent = ps_proc_by_pid(c, p->ppid);
            if (parent && parent->mark) {
                p->mark = grew = 1;
            }
        }
    }
    for (size_t i = 0; i < c->nprocs; i++) {
        c->procs[i].selected |= c->procs[i].mark;
        c->procs[i].mark = 0;
    }
}

void ps_scan(struct ps_ctx *c)
{
    struct intlist l = {0}, all = {0};
    if (ef_procfs_pids(add_int, &l) != 0) {
        fprintf(stderr, "epollfork-ps: cannot read /proc: %s\n", strerror(errno));
        exit(3);
    }
    if (!l.n) {
        fprintf(stderr, "epollfork-ps: /proc lists no process: is it mounted?\n");
        exit(3);
    }
    qsort(l.v, l.n, sizeof *l.v, cmp_int);
    for (size_t i = 0; i < l.n; i++)
        add_int(l.v[i], &all);
    /* named pids that /proc does not list (threads, gone) still get a line */
    const struct ps_opts *o = c->o;
    for (size_t k = 0; k < o->npids + o->ntrees; k++) {
        int pid = k < o->npids ? o->pids[k] : o->trees[k - o->npids];
        if (!bsearch(&pid, l.v, l.n, sizeof *l.v, cmp_int))
            add_int(pid, &all);
    }
    qsort(all.v, all.n, sizeof *all.v, cmp_int);
    c->procs = ps_alloc(all.n, sizeof *c->procs);
    for (size_t i = 0; i < all.n; i++) {
        if (all.v[i] == c->self || (i && all.v[i] == all.v[i - 1]))
            continue;
        struct ps_proc *p = &c->procs[c->nprocs];
        memset(p, 0, sizeof *p);
        p->pid = all.v[i];
        int listed = bsearch(&p->pid, l.v, l.n, sizeof *l.v, cmp_int) != NULL;
        if (read_proc(c, p, listed))
            c->nprocs++;
        else {
            free(p->fds);
            free((char *)p->why);
        }
    }
    free(all.v);
    free(l.v);
    select_procs(c);
    /* close-on-exec of every epoll fd: the fdinfo header's flags */
    for (size_t i = 0; i < c->nprocs; i++) {
        struct ps_proc *p = &c->procs[i];
        for (size_t k = 0; p->nepoll && k < p->nfds; k++) {
            struct ps_fd *f = &p->fds[k];
            struct flags_arg a = {0, 0};
            if (f->kind == FK_EPOLL && ef_procfs_fdinfo_lines(p->pid, f->fd, on_fdinfo_header, &a) == 0 &&
                a.found)
                f->cloexec = (a.flags & PS_O_CLOEXEC) != 0;
        }
    }
}

/* ------------------------------------------------------------ instances */

/* kcmp order of two epoll fds; on failure *err is set and the order falls
 * back to (pid, fd), so that the sort still ends. */
static int cmp_ref(struct ps_ctx *c, const struct ps_ref *a, const struct ps_ref *b, int *err)
{
    const struct ps_proc *pa = &c->procs[a->proc], *pb = &c->procs[b->proc];
    if (a->proc == b->proc && a->fd == b->fd)
        return 0;
    int r = ef_procfs_kcmp_file_order(pa->pid, a->fd, pb->pid, b->fd);
    if (r != -2)
        return r;
    *err = errno ? errno : EIO;
    if (pa->pid != pb->pid)
        return pa->pid < pb->pid ? -1 : 1;
    return a->fd < b->fd ? -1 : 1;
}

static void merge_sort(struct ps_ctx *c, struct ps_ref *v, struct ps_ref *tmp, size_t n, int *err)
{
    if (n < 2)
        return;
    size_t h = n / 2, i = 0, j = h, k = 0;
    merge_sort(c, v, tmp, h, err);
    merge_sort(c, v + h, tmp, n - h, err);
    while (i < h && j < n)
        tmp[k++] = cmp_ref(c, &v[j], &v[i], err) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int cmp_ref_pidfd(const void *a, const void *b)
{
    const struct ps_ref *x = a, *y = b;
    if (x->proc != y->proc) /* procs are sorted by pid */
        return x->proc < y->proc ? -1 : 1;
    return (x->fd > y->fd) - (x->fd < y->fd);
}

static int cmp_inst(const void *a, const void *b)
{
    return cmp_ref_pidfd(&((const struct ps_inst *)a)->refs[0], &((const struct ps_inst *)b)->refs[0]);
}

static void add_inst(struct ps_ctx *c, const struct ps_ref *refs, size_t n, int alone)
{
    struct ps_inst *in = PS_PUSH(c->insts, c->ninsts);
    memset(in, 0, sizeof *in);
    in->refs = ps_alloc(n, sizeof *in->refs);
    memcpy(in->refs, refs, n * sizeof *refs);
    qsort(in->refs, n, sizeof *in->refs, cmp_ref_pidfd);
    in->nrefs = n;
    in->alone = alone;
    int idx = (int)(c->ninsts - 1);
    for (size_t i = 0; i < n; i++) {
        struct ps_proc *p = &c->procs[refs[i].proc];
        ps_fd_of(p, refs[i].fd)->inst = idx;
        in->selected |= p->selected;
        in->nholders += i == 0 || in->refs[i].proc != in->refs[i - 1].proc;
    }
}

/* A process whose fds kcmp cannot compare (it exited, or became undumpable)
 * is taken out of the sort: gone, or listed fd by fd. */
static int test_kcmp(struct ps_ctx *c, struct ps_proc *p)
{
    for (size_t k = 0; k < p->nfds; k++)
        if (p->fds[k].kind == FK_EPOLL) {
            if (ef_procfs_kcmp_file_order(p->pid, p->fds[k].fd, p->pid, p->fds[k].fd) == 0)
                return 0;
            if (errno == ESRCH || errno == EBADF) {
                if (ef_procfs_pid_state(p->pid) != EF_PID_RUNNING) {
                    p->state = PROC_GONE;
                    c->gone++;
                    return -1;
                }
                if (errno == EBADF)
                    continue; /* that fd was closed: try another */
            }
            p->kcmp_bad = errno ? errno : EIO;
            return -1;
        }
    return 0;
}

void ps_group(struct ps_ctx *c)
{
    struct ps_ref *refs = NULL, *tmp;
    size_t n = 0;
    for (size_t i = 0; i < c->nprocs; i++) {
        struct ps_proc *p = &c->procs[i];
        if (p->state != PROC_INSPECTED || !p->nepoll)
            continue;
        if (!c->kcmp_errno && test_kcmp(c, p) != 0 && p->state == PROC_GONE)
            continue;
        for (size_t k = 0; k < p->nfds; k++)
            if (p->fds[k].kind == FK_EPOLL)
                *PS_PUSH(refs, n) = (struct ps_ref){(int)i, p->fds[k].fd};
    }
    tmp = ps_alloc(n, sizeof *tmp);
    /* Sort those kcmp can compare; a process that fails mid-sort (it exited)
     * is taken out and the rest sorted again. */
    size_t m = 0;
    for (int round = 0; !c->kcmp_errno && round < 3; round++) {
        m = 0;
        for (size_t i = 0; i < n; i++)
            if (!c->procs[refs[i].proc].kcmp_bad && c->procs[refs[i].proc].state == PROC_INSPECTED)
                tmp[m++] = refs[i];
        struct ps_ref *sorted = ps_alloc(m, sizeof *sorted), *scratch = ps_alloc(m, sizeof *scratch);
        memcpy(sorted, tmp, m * sizeof *sorted);
        int err = 0;
        merge_sort(c, sorted, scratch, m, &err);
        free(scratch);
        if (!err) {
            for (size_t i = 0; i < m;) {
                size_t j = i + 1;
                while (j < m && cmp_ref(c, &sorted[j - 1], &sorted[j], &err) == 0)
                    j++;
                add_inst(c, &sorted[i], j - i, 0);
                i = j;
            }
            free(sorted);
            break;
        }
        free(sorted);
        for (size_t i = 0; i < c->nprocs; i++) {
            struct ps_proc *p = &c->procs[i];
            if (p->state == PROC_INSPECTED && p->nepoll && !p->kcmp_bad)
                test_kcmp(c, p);
        }
        if (round == 2) /* still failing: list everything fd by fd */
            for (size_t i = 0; i < c->nprocs; i++)
                if (c->procs[i].nepoll && c->procs[i].state == PROC_INSPECTED)
                    c->procs[i].kcmp_bad = EAGAIN;
    }
    /* the rest: one "instance" per fd, its identity unknown */
    for (size_t i = 0; i < n; i++) {
        struct ps_proc *p = &c->procs[refs[i].proc];
        if (p->state != PROC_INSPECTED || (!c->kcmp_errno && !p->kcmp_bad))
            continue;
        add_inst(c, &refs[i], 1, 1);
        ps_note(&c->insts[c->ninsts - 1].notes, &c->insts[c->ninsts - 1].nnotes,
                ps_fmt("kcmp(2) on process %d failed (%s): whether other fds are this instance "
                       "is unknown", p->pid, strerror(c->kcmp_errno ? c->kcmp_errno : p->kcmp_bad)));
    }
    free(refs);
    free(tmp);
    /* in the order of their first holder (pid, fd), for the output */
    if (c->ninsts)
        qsort(c->insts, c->ninsts, sizeof *c->insts, cmp_inst);
    for (size_t i = 0; i < c->ninsts; i++)
        for (size_t k = 0; k < c->insts[i].nrefs; k++)
            ps_fd_of(&c->procs[c->insts[i].refs[k].proc], c->insts[i].refs[k].fd)->inst = (int)i;
    /* every instance's entries, read once through its first fd */
    for (size_t i = 0; i < c->ninsts; i++) {
        struct ps_inst *in = &c->insts[i];
        in->ents_read = ps_read_entries(c, &in->refs[0], &in->ents, &in->nents) == 0;
        if (!in->ents_read)
            ps_note(&in->notes, &in->nnotes,
                    ps_fmt("its entries could not be read (/proc/%d/fdinfo/%d: %s)",
                           c->procs[in->refs[0].proc].pid, in->refs[0].fd, strerror(errno)));
    }
}

/* ------------------------------------------------------------ entries */

struct ents_arg {
    struct ps_entry *v;
    size_t n;
};

static int on_entry(const struct ef_tfd *t, void *arg)
{
    struct ents_arg *a = arg;
    struct ps_entry *e = PS_PUSH(a->v, a->n);
    memset(e, 0, sizeof *e);
    e->t = *t;
    e->stale = -1;
    return 0;
}

struct rank {
    int tfd;
    size_t idx;
};

static int cmp_rank(const void *a, const void *b)
{
    const struct rank *x = a, *y = b;
    if (x->tfd != y->tfd)
        return x->tfd < y->tfd ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

int ps_read_entries(struct ps_ctx *c, const struct ps_ref *rep, struct ps_entry **out, size_t *n)
{
    struct ents_arg a = {NULL, 0};
    *out = NULL;
    *n = 0;
    if (ef_procfs_epoll_entries(c->procs[rep->proc].pid, rep->fd, on_entry, &a) != 0)
        return -1;
    /* KCMP_EPOLL_TFD names an entry by (number, rank among the entries with
     * that number), counted in the order fdinfo prints them (both walk the
     * instance's tree: fs/eventpoll.c), which matters after a close without
     * DEL left a ghost next to a new entry with the same number. */
    struct rank *r = ps_alloc(a.n, sizeof *r);
    for (size_t i = 0; i < a.n; i++)
        r[i] = (struct rank){a.v[i].t.tfd, i};
    qsort(r, a.n, sizeof *r, cmp_rank);
    for (size_t i = 0; i < a.n; i++)
        a.v[r[i].idx].toff = i && r[i].tfd == r[i - 1].tfd ? a.v[r[i - 1].idx].toff + 1 : 0;
    free(r);
    *out = a.v;
    *n = a.n;
    return 0;
}

/* ------------------------------------------------------------ waits */

struct waits_arg {
    int pid, denied, read;
    struct ps_wait *v;
    size_t n;
};

static int on_task(int tid, void *arg)
{
    struct waits_arg *a = arg;
    struct ef_task_syscall sc;
    if (ef_procfs_task_syscall(a->pid, tid, &sc) != 0) {
        if (errno == EACCES || errno == EPERM) {
            a->denied = 1;
            return 1;
        }
        return 0; /* the thread exited */
    }
    a->read = 1;
    /* arg0 of the waits is the epoll fd, an int: its low 32 bits */
    int epfd = (int)(uint32_t)sc.args[0];
    if (sc.where == EF_TASK_IN_SYSCALL && ps_is_wait_nr(sc.nr) && epfd >= 0)
        *PS_PUSH(a->v, a->n) = (struct ps_wait){tid, epfd, sc.nr};
    return 0;
}

/* Threads of p blocked in an epoll wait now.  *n = 0 and p->waits_read = -1
 * when the kernel does not let us read them (ptrace-attach permission). */
void ps_read_waits(struct ps_ctx *c, struct ps_proc *p, struct ps_wait **out, size_t *n)
{
    struct waits_arg a = {p->pid, 0, 0, NULL, 0};
    (void)c;
    ef_procfs_tasks(p->pid, on_task, &a);
    if (a.denied) {
        free(a.v);
        a.v = NULL;
        a.n = 0;
        p->waits_read = -1;
    } else {
        p->waits_read = 1;
    }
    *out = a.v;
    *n = a.n;
}
