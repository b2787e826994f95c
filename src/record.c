/*
 * record.c - the report record: one row per kind, one field sequence.
 *
 * As in jemalloc's emitter, the facts of a report are gathered once into
 * struct ef_report, and every back end (the text report with its SUMMARY line,
 * JSON lines, syslog, journald) renders the same sequence of fields from
 * ef_report_fields(): a field shown by one back end and missing from another
 * cannot happen.  What differs between kinds is one row of ef_kinds[] (the
 * sanitizers' report-kind table): the name, which stack is the offending one
 * (it names `site` and is what suppressions match), the headline in plain
 * words, the labelled stacks, and the kind's own fields.  A new kind is one
 * row and its three functions.
 */
#define _GNU_SOURCE
#include <string.h>
#include <sys/epoll.h>

#include "ef.h"

static const char *const role_names[EF_NROLES] = {
    [EF_ST_CALL] = "call", [EF_ST_CLOSE] = "close", [EF_ST_EXEC] = "exec",
    [EF_ST_FORK] = "fork", [EF_ST_CREATE] = "create", [EF_ST_ADD] = "add",
    [EF_ST_USE] = "use",
};

const char *ef_role_name(enum ef_role role)
{
    return (unsigned)role < EF_NROLES ? role_names[role] : "?";
}

const char *ef_kind_name(enum ef_kind k)
{
    return (unsigned)k < EF_NKINDS ? ef_kinds[k].name : "?";
}

int ef_kind_by_name(const char *name)
{
    for (int k = 0; k < EF_NKINDS; k++)
        if (!strcmp(name, ef_kinds[k].name))
            return k;
    return -1;
}

void ef_report_init(struct ef_report *r, enum ef_kind kind, const struct ef_inst *in, int epfd)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->pid = ef_sys_getpid();
    r->ppid = ef_sys_getppid();
    r->epfd = epfd;
    r->holder_fd = -1;
    r->time_ns = ef_realtime_ns();
    r->create_how = EF_CREATE_ADOPTED; /* not known until an instance says */
    r->create_fd = epfd;
    r->repair_mode = ef_opt.repair;
    r->ring_fd = -1;
    r->other_ring_fd = -1;
    if (in) {
        r->owner_pid = in->owner_pid;
        r->create_how = in->create_how;
        r->create_flags = in->create_flags;
        r->create_fd = in->create_fd;
        r->stacks[EF_ST_CREATE] = in->create_stack;
    }
}

void ef_report_fill_fork(struct ef_report *r, uint32_t split)
{
    struct ef_process *fp = ef_process_at(split);
    if (!fp)
        return;
    r->stacks[EF_ST_FORK] = fp->fork_stack;
    r->fork_child_pid = fp->pid;
    struct ef_process *pp = ef_process_at(fp->parent);
    r->fork_parent_pid = pp ? pp->pid : 0;
    r->fork_how = (int)fp->fork_how;
}

const char *ef_op_name(int op)
{
    switch (op) {
    case EPOLL_CTL_ADD: return "EPOLL_CTL_ADD";
    case EPOLL_CTL_MOD: return "EPOLL_CTL_MOD";
    case EPOLL_CTL_DEL: return "EPOLL_CTL_DEL";
    default: return "EPOLL_CTL_?";
    }
}

const char *ef_use_name(enum ef_use u)
{
    switch (u) {
    case EF_USE_BLOCKED: return "blocked-in-wait";
    case EF_USE_CTL: return "epoll_ctl";
    case EF_USE_RING_CTL: return "io_uring-epoll-ctl";
    default: return "epoll_wait";
    }
}

const char *ef_via_name(enum ef_via v)
{
    return v == EF_VIA_IO_URING ? "io_uring" : "epoll_ctl";
}

const char *ef_ring_use_name(enum ef_ring_use u)
{
    return u == EF_RING_REAP ? "reap" : u == EF_RING_SUBMIT_REAP ? "submit+reap" : "submit";
}

size_t ef_events_str(uint32_t ev, char *buf, size_t len)
{
    static const struct { uint32_t bit; const char *name; } names[] = {
        {EPOLLIN, "EPOLLIN"},           {EPOLLPRI, "EPOLLPRI"},
        {EPOLLOUT, "EPOLLOUT"},         {EPOLLERR, "EPOLLERR"},
        {EPOLLHUP, "EPOLLHUP"},         {EPOLLRDNORM, "EPOLLRDNORM"},
        {EPOLLRDBAND, "EPOLLRDBAND"},   {EPOLLWRNORM, "EPOLLWRNORM"},
        {EPOLLWRBAND, "EPOLLWRBAND"},   {EPOLLMSG, "EPOLLMSG"},
        {EPOLLRDHUP, "EPOLLRDHUP"},     {EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"},
        {EPOLLWAKEUP, "EPOLLWAKEUP"},   {EPOLLONESHOT, "EPOLLONESHOT"},
        {EPOLLET, "EPOLLET"},
    };
    size_t k = 0;
    if (len)
        buf[0] = 0;
    uint32_t rest = ev;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(ev & names[i].bit))
            continue;
        k += ef_fmt(buf + k, len - k, "%s%s", k ? "|" : "", names[i].name);
        rest &= ~names[i].bit;
    }
    if (rest)
        k += ef_fmt(buf + k, len - k, "%s0x%x", k ? "|" : "", rest);
    return k;
}

/* ------------------------------------------------------------ fields */

static void field(struct ef_fields *f, const char *key, enum ef_ftype t, long long i,
                  const char *s)
{
    if (f->n < EF_MAX_FIELDS)
        f->f[f->n++] = (struct ef_field){key, t, i, s};
}

void ef_field_int(struct ef_fields *f, const char *key, long long v)
{
    field(f, key, EF_F_INT, v, NULL);
}

void ef_field_str(struct ef_fields *f, const char *key, const char *v)
{
    field(f, key, EF_F_STR, 0, v);
}

void ef_field_hex(struct ef_fields *f, const char *key, unsigned long long v)
{
    field(f, key, EF_F_HEX, (long long)v, NULL);
}

/* The site of a Python program is the user's own line: the innermost Python
 * frame outside the standard library and installed packages
 * (ef_py_is_library), `worker.py:42(handle)`; without one, the native rule. */
static int python_site(uint32_t id, char *buf, size_t len)
{
    uint64_t words[EF_MAX_FRAMES];
    uint32_t n = ef_stack_python(id, words, EF_MAX_FRAMES);
    for (uint32_t i = 0; i < n; i++) {
        struct ef_pyframe f;
        ef_py_decode(words[i], &f);
        if (strcmp(f.file, "?") && !ef_py_is_library(f.file)) {
            ef_py_site(&f, buf, len);
            return 1;
        }
    }
    return 0;
}

void ef_field_bool(struct ef_fields *f, const char *key, int v)
{
    field(f, key, EF_F_BOOL, v != 0, NULL);
}

void ef_report_site(const struct ef_report *r, struct ef_symctx *c, char *buf, size_t len)
{
    uint64_t pcs[EF_MAX_FRAMES];
    buf[0] = 0;
    if (python_site(r->stacks[ef_kinds[r->kind].offending], buf, len))
        return;
    uint32_t n = ef_depot_copy(r->stacks[ef_kinds[r->kind].offending], pcs, EF_MAX_FRAMES);
    for (uint32_t i = 0; i < n; i++) {
        struct ef_sym sy;
        ef_sym_lookup(c, (uintptr_t)pcs[i] - 1, &sy);
        if (sy.function[0] || i + 1 == n) {
            const char *base = strrchr(sy.module, '/');
            ef_fmt(buf, len, "%s(%s+0x%lx)", sy.function[0] ? sy.function : "??",
                   base ? base + 1 : sy.module, (unsigned long)sy.offset);
            return;
        }
    }
}

void ef_report_fields(const struct ef_report *r, struct ef_symctx *c, struct ef_fields *f)
{
    f->n = 0;
    ef_rfc3339(r->time_ns, f->time, sizeof f->time); /* ef_report_init() set it */
    ef_field_str(f, "time", f->time);
    ef_field_int(f, "pid", r->pid);
    ef_kinds[r->kind].fields(r, f);
    if (r->repair_mode) {
        ef_field_bool(f, "repaired", r->repaired);
        ef_field_str(f, "repair", r->repair[0] ? r->repair : NULL);
    }
    ef_report_site(r, c, f->site, sizeof f->site);
    ef_field_str(f, "site", f->site[0] ? f->site : NULL);
}

static const char *or_null(const char *s)
{
    return s && s[0] ? s : NULL;
}

static void shared_fields(const struct ef_report *r, struct ef_fields *f)
{
    ef_events_str(r->events, f->events, sizeof f->events);
    ef_field_int(f, "modifier_pid", r->modifier_pid);
    ef_field_int(f, "other_pid", r->other_pid);
    ef_field_int(f, "owner_pid", r->owner_pid);
    ef_field_str(f, "op", ef_op_name(r->op));
    ef_field_int(f, "epfd", r->epfd);
    ef_field_int(f, "fd", r->fd);
    ef_field_str(f, "events", r->op == EPOLL_CTL_DEL ? "" : f->events);
    ef_field_str(f, "target", or_null(r->target));
    ef_field_str(f, "other_use", ef_use_name(r->other_use));
    ef_field_int(f, "ppid", r->ppid);
    ef_field_hex(f, "data", r->data);
    ef_field_int(f, "lost_changes", r->lost_changes);
    ef_field_int(f, "fork_parent_pid", r->fork_parent_pid);
    ef_field_int(f, "fork_child_pid", r->fork_child_pid);
    ef_field_str(f, "via", ef_via_name(r->call_via));
    ef_field_str(f, "add_via", ef_via_name(r->add_via));
    ef_field_int(f, "ring_fd", r->ring_fd);
}

static void stale_fields(const struct ef_report *r, struct ef_fields *f)
{
    ef_events_str(r->events, f->events, sizeof f->events);
    ef_field_int(f, "epfd", r->epfd);
    ef_field_int(f, "fd", r->fd);
    ef_field_str(f, "events", f->events);
    ef_field_str(f, "target", or_null(r->target));
    ef_field_int(f, "holder_pid", r->holder_pid);
    ef_field_int(f, "holder_fd", r->holder_fd);
    ef_field_int(f, "owner_pid", r->owner_pid);
    ef_field_int(f, "ppid", r->ppid);
    ef_field_hex(f, "data", r->data);
    ef_field_int(f, "fork_parent_pid", r->fork_parent_pid);
    ef_field_int(f, "fork_child_pid", r->fork_child_pid);
    ef_field_str(f, "add_via", ef_via_name(r->add_via));
}

static void leak_fields(const struct ef_report *r, struct ef_fields *f)
{
    ef_field_int(f, "epfd", r->epfd);
    ef_field_str(f, "program", or_null(r->program));
    ef_field_str(f, "exec", r->exec_how ? r->exec_how : "exec");
    ef_field_int(f, "entries", r->entries);
    ef_field_int(f, "owner_pid", r->owner_pid);
    ef_field_int(f, "ppid", r->ppid);
    ef_field_str(f, "argv0", r->argv0);
}

/* ------------------------------------------------------------ headlines */

/* A value for a text line, control characters escaped. */
static const char *vis(const char *s, char *buf, size_t len)
{
    struct ef_out o = {buf, 0, len};
    if (len)
        buf[0] = 0;
    ef_put_vis(&o, s);
    return buf;
}

static void shared_headline(const struct ef_report *r, struct ef_out *o, const char *pfx)
{
    char target_[600];
    const char *target = vis(r->target, target_, sizeof target_);
    const char *verb = r->op == EPOLL_CTL_ADD ? "added" : r->op == EPOLL_CTL_MOD ? "modified"
                                                                                : "deleted";
    const char *prep = r->op == EPOLL_CTL_ADD ? "to" : r->op == EPOLL_CTL_MOD ? "in" : "from";
    const char *use = r->other_use == EF_USE_BLOCKED ? "was blocked waiting on at that moment"
                      : r->other_use == EF_USE_CTL || r->other_use == EF_USE_RING_CTL
                          ? "then edited"
                          : "then waited on";
    ef_putf(o, "%s epollfork: WARNING: shared-epoll-ctl: process %d %s fd %d (%s) %s the interest "
               "list of epoll fd %d, which process %d shares since a fork and %s (instance "
               "created by process %d)\n",
            pfx, r->modifier_pid, verb, r->fd, target[0] ? target : "unknown target", prep,
            r->epfd, r->other_pid, use, r->owner_pid);
    if (r->lost_changes)
        ef_putf(o, "%s   (%u earlier changes could not be read: more changes than the ring keeps "
                   "were made before this use)\n",
                pfx, r->lost_changes);
}

static void stale_headline(const struct ef_report *r, struct ef_out *o, const char *pfx)
{
    char target_[600], who[96];
    const char *target = vis(r->target, target_, sizeof target_);
    if (r->holder_pid == r->pid)
        ef_fmt(who, sizeof who, "this process still holds a copy (fd %d)", r->holder_fd);
    else if (r->holder_pid > 0)
        ef_fmt(who, sizeof who, "process %d still holds a copy (fd %d)", r->holder_pid,
               r->holder_fd);
    else
        ef_fmt(who, sizeof who, "another copy of it is still open");
    ef_putf(o, "%s epollfork: WARNING: stale-registration: process %d closed fd %d (%s) without "
               "EPOLL_CTL_DEL, but its registration in epoll fd %d survives because %s: "
               "epoll_wait keeps reporting events for the closed number and EPOLL_CTL_DEL fails "
               "with EBADF\n",
            pfx, r->pid, r->fd, target[0] ? target : "unknown target", r->epfd, who);
}

static int at_startup(const struct ef_report *r)
{
    return r->exec_how && !strcmp(r->exec_how, "start-up");
}

static void leak_headline(const struct ef_report *r, struct ef_out *o, const char *pfx)
{
    char prog_[600];
    const char *program = vis(r->program, prog_, sizeof prog_);
    if (at_startup(r))
        ef_putf(o, "%s epollfork: WARNING: epoll-fd-exec-leak: this program (%s) started holding "
                   "epoll fd %d, inherited without close-on-exec from the program that exec'd it "
                   "(%d registrations kept alive)\n",
                pfx, program, r->epfd, r->entries);
    else
        ef_putf(o, "%s epollfork: WARNING: epoll-fd-exec-leak: epoll fd %d (created by process "
                   "%d) has no close-on-exec and will be inherited by %s (%d registrations kept "
                   "alive)\n",
                pfx, r->epfd, r->owner_pid, program, r->entries);
}

/* ------------------------------------------------------------ stacks */

static struct ef_stack_desc *desc(struct ef_stack_desc *s, enum ef_role role, const char *missing)
{
    *s = (struct ef_stack_desc){role, "", missing, NULL};
    return s;
}

static void create_desc(const struct ef_report *r, struct ef_stack_desc *s)
{
    desc(s, EF_ST_CREATE, NULL);
    if (r->create_how == EF_CREATE_ADOPTED) {
        ef_fmt(s->title, sizeof s->title, "the epoll instance (fd %d, first seen in process %d):",
               r->create_fd, r->owner_pid);
        s->missing = "created before the shim was loaded, or without libc: no stack";
        return;
    }
    if (r->create_how == EF_CREATE_REPAIR) {
        ef_fmt(s->title, sizeof s->title, "the epoll instance (fd %d): a private copy that repair "
               "mode made for process %d, at:", r->create_fd, r->owner_pid);
        s->missing = "creation stack not recorded";
        return;
    }
    int one = r->create_how == EF_CREATE_EPOLL_CREATE1;
    ef_fmt(s->title, sizeof s->title, "the epoll instance created by %s(%s) = %d in process %d:",
           one ? "epoll_create1" : "epoll_create",
           one && (r->create_flags & EPOLL_CLOEXEC) ? "EPOLL_CLOEXEC" : one ? "0" : "...",
           r->create_fd, r->owner_pid);
    s->missing = "creation stack not recorded";
}

static void fork_desc(const struct ef_report *r, struct ef_stack_desc *s, const char *why)
{
    desc(s, EF_ST_FORK, r->fork_how == EF_FORK_UNSEEN
                            ? "a fork made without fork() (raw clone/syscall): no stack"
                            : "fork stack not recorded");
    if (r->fork_child_pid)
        ef_fmt(s->title, sizeof s->title, "the fork of process %d by process %d (%s):",
               r->fork_child_pid, r->fork_parent_pid, why);
    else
        ef_fmt(s->title, sizeof s->title, "the fork (%s):", why);
}

static void add_desc(const struct ef_report *r, struct ef_stack_desc *s)
{
    desc(s, EF_ST_ADD, "registered before the shim was loaded, or by a process it did not see: "
                       "no stack");
    const char *how = r->add_via == EF_VIA_IO_URING
                          ? " (an IORING_OP_EPOLL_CTL: the io_uring_enter that submitted it; the "
                            "SQE was prepared elsewhere)"
                          : "";
    if (r->add_pid)
        ef_fmt(s->title, sizeof s->title, "fd %d registered by EPOLL_CTL_ADD%s in process %d:",
               r->fd, how, r->add_pid);
    else
        ef_fmt(s->title, sizeof s->title, "fd %d registered by EPOLL_CTL_ADD%s:", r->fd, how);
}

static int shared_stacks(const struct ef_report *r, struct ef_stack_desc *s)
{
    int n = 0;
    char ev[256];
    ef_events_str(r->events, ev, sizeof ev);
    desc(&s[n], EF_ST_CALL, "stack not recorded");
    char how[160] = "";
    if (r->call_via == EF_VIA_IO_URING)
        ef_fmt(how, sizeof how, ", an IORING_OP_EPOLL_CTL submitted through io_uring fd %d (the "
               "io_uring_enter that submitted it; the SQE was prepared elsewhere)", r->ring_fd);
    if (r->op == EPOLL_CTL_DEL)
        ef_fmt(s[n].title, sizeof s[n].title, "the change: %s(epfd=%d, fd=%d) in process %d%s:",
               ef_op_name(r->op), r->epfd, r->fd, r->modifier_pid, how);
    else
        ef_fmt(s[n].title, sizeof s[n].title,
               "the change: %s(epfd=%d, fd=%d, events=%s) in process %d%s:", ef_op_name(r->op),
               r->epfd, r->fd, ev[0] ? ev : "0", r->modifier_pid, how);
    s[n].note = ef_cut_why(r->call_cut);
    n++;
    fork_desc(r, &s[n++], "where the list became shared");
    create_desc(r, &s[n++]);
    add_desc(r, &s[n++]);
    if (r->stacks[EF_ST_USE]) {
        static const char *const uses[] = {"epoll_wait", "epoll_ctl", "blocked in epoll_wait",
                                           "an IORING_OP_EPOLL_CTL submitted by io_uring_enter"};
        desc(&s[n], EF_ST_USE, NULL);
        ef_fmt(s[n].title, sizeof s[n].title, "the affected use: %s in process %d:",
               uses[(unsigned)r->other_use < 4 ? r->other_use : 0], r->other_pid);
        n++;
    }
    return n;
}

static int stale_stacks(const struct ef_report *r, struct ef_stack_desc *s)
{
    int n = 0;
    desc(&s[n], EF_ST_CLOSE, "stack not recorded");
    ef_fmt(s[n].title, sizeof s[n].title,
           "the close of fd %d (without EPOLL_CTL_DEL) in process %d:", r->fd, r->pid);
    n++;
    add_desc(r, &s[n++]);
    fork_desc(r, &s[n], "the copy of the fd that keeps the registration alive");
    if (r->holder_pid == r->pid)
        s[n].missing = "the surviving copy is a dup in the same process: no fork involved";
    else if (r->holder_pid <= 0)
        s[n].missing = "the process holding the copy is not known";
    n++;
    create_desc(r, &s[n++]);
    if (r->stacks[EF_ST_USE]) {
        desc(&s[n], EF_ST_USE, NULL);
        ef_fmt(s[n].title, sizeof s[n].title, "the next use of the instance in process %d:",
               r->pid);
        n++;
    }
    return n;
}

static int leak_stacks(const struct ef_report *r, struct ef_stack_desc *s)
{
    char prog[512];
    desc(&s[0], EF_ST_EXEC, "exec made where the shim cannot see it (posix_spawn, system, "
                            "popen, or a program without the shim): no stack");
    ef_fmt(s[0].title, sizeof s[0].title, "the exec of %s in process %d:",
           vis(r->program, prog, sizeof prog), r->pid);
    create_desc(r, &s[1]);
    if (at_startup(r)) {
        ef_fmt(s[1].title, sizeof s[1].title, "the epoll instance (fd %d, inherited at exec):",
               r->epfd);
        s[1].missing = "created by the program that exec'd this one: no stack";
    }
    return 2;
}

/* ------------------------------------------------------------ shared-io-uring */

static void uring_fields(const struct ef_report *r, struct ef_fields *f)
{
    ef_field_int(f, "ring_fd", r->ring_fd);
    ef_field_str(f, "ring_use", ef_ring_use_name(r->ring_use));
    ef_field_int(f, "other_pid", r->other_pid);
    ef_field_int(f, "other_ring_fd", r->other_ring_fd);
    ef_field_str(f, "other_use", ef_ring_use_name(r->other_ring_use));
    ef_field_int(f, "owner_pid", r->owner_pid);
    ef_field_int(f, "ring_entries", r->ring_entries);
    ef_field_hex(f, "ring_flags", r->ring_flags);
    ef_field_int(f, "ppid", r->ppid);
    ef_field_int(f, "fork_parent_pid", r->fork_parent_pid);
    ef_field_int(f, "fork_child_pid", r->fork_child_pid);
}

static const char *ring_verb(enum ef_ring_use u)
{
    return u == EF_RING_REAP          ? "reaped from"
           : u == EF_RING_SUBMIT_REAP ? "submitted to and reaped from"
                                      : "submitted to";
}

static void uring_headline(const struct ef_report *r, struct ef_out *o, const char *pfx)
{
    ef_putf(o, "%s epollfork: WARNING: shared-io-uring: process %d %s io_uring fd %d, whose "
               "submission and completion queues process %d shares since a fork and also %s "
               "after it (ring set up by process %d): each can take the other's completions "
               "and submit the other's half-prepared entries\n",
            pfx, r->pid, ring_verb(r->ring_use), r->ring_fd, r->other_pid,
            ring_verb(r->other_ring_use), r->owner_pid);
}

static int uring_stacks(const struct ef_report *r, struct ef_stack_desc *s)
{
    int n = 0;
    desc(&s[n], EF_ST_CALL, "stack not recorded");
    ef_fmt(s[n].title, sizeof s[n].title, "the io_uring_enter (%s) on fd %d in process %d:",
           ef_ring_use_name(r->ring_use), r->ring_fd, r->pid);
    s[n].note = ef_cut_why(r->call_cut);
    n++;
    fork_desc(r, &s[n++], "where the ring became shared");
    desc(&s[n], EF_ST_CREATE, "set up before the shim was loaded, or where it could not see: "
                              "no stack");
    if (r->create_how == EF_RING_LIBURING_QUEUE)
        ef_fmt(s[n].title, sizeof s[n].title,
               "the ring set up by liburing's io_uring_queue_init (entries=%u, flags=0x%x, fd %d) "
               "in process %d:", r->ring_entries, r->ring_flags, r->create_fd, r->owner_pid);
    else
        ef_fmt(s[n].title, sizeof s[n].title,
               "the ring set up by io_uring_setup(entries=%u, flags=0x%x) = %d in process %d:",
               r->ring_entries, r->ring_flags, r->create_fd, r->owner_pid);
    n++;
    desc(&s[n], EF_ST_USE, "stack not recorded");
    ef_fmt(s[n].title, sizeof s[n].title, "the other process's use: io_uring_enter (%s) on fd %d "
           "in process %d:", ef_ring_use_name(r->other_ring_use), r->other_ring_fd, r->other_pid);
    n++;
    return n;
}

/* The claim-key tags spell the kind in ASCII, so that keys of two kinds can
 * never meet in the tree-wide claim set. */
const struct ef_kind_desc ef_kinds[EF_NKINDS] = {
    [EF_KIND_SHARED_CTL] = {"shared-epoll-ctl", EF_ST_CALL, 0x5348415245440001ull,
                            shared_headline, shared_stacks, shared_fields},
    [EF_KIND_STALE] = {"stale-registration", EF_ST_CLOSE, 0x5354414c45000002ull,
                       stale_headline, stale_stacks, stale_fields},
    [EF_KIND_EXEC_LEAK] = {"epoll-fd-exec-leak", EF_ST_EXEC, 0x4c45414b00000003ull,
                           leak_headline, leak_stacks, leak_fields},
    [EF_KIND_SHARED_URING] = {"shared-io-uring", EF_ST_CALL, 0x5552494e47000004ull,
                              uring_headline, uring_stacks, uring_fields},
};
