/*
 * test_track.c - the rules of track.c, through its events, with real epoll
 * fds, real pipes and real forks (see unit.h for how the program stands in for
 * wrap.c and glibc's atfork handlers).
 *
 * Each group is one question about the model on top of track.c: is a child's
 * change reported exactly once to the parent that uses the list afterwards,
 * with the right facts and stacks; is a correct program (a child that closes
 * its copy, a new instance at an old number, a hand-off) left alone; and does
 * every capacity limit (ring, holder slots, instance table) degrade without a
 * crash or a false report.  A parent's "use" is a non-blocking wait from
 * parent_waits(), so that the use stack has a name to check.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <pthread.h>
#include <sys/single_threaded.h>

#include "unit.h"

#define SHARED "shared-epoll-ctl"
#define LD(x) atomic_load(&(x))

/* ------------------------------------------------------------- call sites */

SITE static void parent_waits(int ep)
{
    t_wait(ep, 0);
    NOTAIL();
}

SITE static void child_del(int ep, int fd)
{
    CHECKF(t_ctl(ep, EPOLL_CTL_DEL, fd, 0, 0) == 0, "DEL fd %d from %d: %s", fd, ep, strerror(errno));
    NOTAIL();
}

SITE static void child_mod(int ep, int fd, uint32_t events)
{
    CHECKF(t_ctl(ep, EPOLL_CTL_MOD, fd, events, 0x55) == 0, "MOD: %s", strerror(errno));
    NOTAIL();
}

SITE static void child_two_sites(int ep, int fd)
{
    CHECK(t_ctl(ep, EPOLL_CTL_DEL, fd, 0, 0) == 0);
    CHECK(t_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN | EPOLLET, 0xabc) == 0);
    NOTAIL();
}

/* An epoll instance with the read end of a fresh pipe registered. */
struct fixture {
    int ep, p[2];
    uint32_t idx;
    struct ef_inst *in;
};

static int setup(struct fixture *f)
{
    f->ep = t_epoll_create1(0);
    CHECK(f->ep >= 0 && t_pipe(f->p) == 0);
    CHECK(t_ctl(f->ep, EPOLL_CTL_ADD, f->p[0], EPOLLIN, 1) == 0);
    f->idx = idx_of(f->ep);
    f->in = inst_at(f->idx);
    return CHECKF(f->in != NULL, "epoll fd %d is not tracked", f->ep);
}

static const char *pipe_name(int fd, char *buf, size_t len)
{
    struct stat st;
    buf[0] = 0;
    if (fstat(fd, &st) == 0)
        snprintf(buf, len, "pipe:[%llu]", (unsigned long long)st.st_ino);
    return buf;
}

/* ------------------------------------------------------------------ basic */

/* A child deletes a registration of the list it shares with its parent; the
 * parent's next use reports it once, with every fact and stack. */
static void g_basic(void)
{
    pid_t parent = getpid();
    uint64_t t0 = ef_realtime_ns();
    int ep = t_epoll_create1(EPOLL_CLOEXEC), p[2];
    CHECK(ep >= 0 && t_pipe(p) == 0);
    CHECK(t_ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 0x1234) == 0);
    uint32_t idx = idx_of(ep);
    struct ef_inst *in = inst_at(idx);
    if (!CHECK(in))
        return;
    CHECK(LD(in->state) == 1 && !LD(in->crossed) && LD(in->nholders) == 1);
    CHECK(slot_of(in, parent) >= 0 && LD(in->gen) == 0);
    CHECK(in->owner_pid == parent && in->owner_proc == ef_self.proc);
    CHECK(in->create_fd == ep && in->create_how == 1 && in->create_flags == EPOLL_CLOEXEC);
    stack_site_is(in->create_stack, "g_basic");
    struct ef_fd *e = ef_fd_peek(ep), *t = ef_fd_peek(p[0]);
    CHECK(e && (LD(e->flags) & EF_FD_EPOLL));
    CHECK(e && LD(e->inst_uid) == LD(in->uid));
    CHECK(t && (LD(t->flags) & EF_FD_INTEREST) && LD(t->int_inst) == idx && LD(t->add_pid) == parent);
    if (t)
        stack_site_is(LD(t->add_stack), "g_basic");
    struct ef_local *l = ef_local_at(idx);
    CHECK(LD(l->aliases) == 1 && LD(l->uid) == LD(in->uid) && LD(l->slot) >= 0);

    /* Alone with its instance, a process records nothing. */
    CHECK(t_ctl(ep, EPOLL_CTL_MOD, p[0], EPOLLIN | EPOLLOUT, 0x1234) == 0);
    CHECK(LD(in->gen) == 0);

    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        struct ef_process *pr = ef_process_at(ef_self.proc);
        CHECK(ef_self.pid == getpid());
        CHECK(pr && pr->pid == getpid() && pr->fork_how == EF_FORK_FORK);
        CHECK(LD(in->crossed) && LD(in->nholders) == 2);
        CHECK(slot_of(in, getpid()) >= 0 && reserved_slots(in) == 0 && ef_holds(idx));
        child_del(ep, p[0]);
        CHECK(LD(in->gen) == 1);
        CHECKF(rep_count(m, NULL) == 0, "nobody was blocked: the modifier stays silent");
        _exit(0);
    }
    CHECK(LD(in->crossed) && slot_of(in, c) >= 0 && reserved_slots(in) == 0);
    reap(c);
    CHECK(LD(in->gen) == 1);
    CHECKF(rep_count(m, NULL) == 0, "no report before the parent uses the list");
    parent_waits(ep);
    if (!CHECKF(rep_count(m, NULL) == 1, "%u reports", rep_count(m, NULL)))
        return;
    const struct ef_report *r = rep_at(m);
    char want[64];
    CHECK(r->kind == EF_KIND_SHARED_CTL);
    CHECK(r->pid == parent && r->ppid == getppid());
    CHECK(r->owner_pid == parent && r->modifier_pid == c && r->other_pid == parent);
    CHECK(r->other_use == EF_USE_WAIT);
    CHECK(r->op == EPOLL_CTL_DEL && r->epfd == ep && r->fd == p[0]);
    CHECK(r->events == 0 && r->data == 0);
    CHECKF(!strcmp(r->target, pipe_name(p[0], want, sizeof want)), "target '%s', expected '%s'",
           r->target, want);
    CHECK(r->create_how == 1 && r->create_flags == EPOLL_CLOEXEC && r->create_fd == ep);
    CHECK(r->time_ns >= t0 && r->time_ns <= ef_realtime_ns());
    CHECK(r->fork_parent_pid == parent && r->fork_child_pid == c && r->fork_how == EF_FORK_FORK);
    CHECK(r->stacks[EF_ST_CALL] && r->stacks[EF_ST_FORK] && r->stacks[EF_ST_CREATE] && r->stacks[EF_ST_ADD] && r->stacks[EF_ST_USE]);
    CHECK(r->stacks[EF_ST_CALL] != r->stacks[EF_ST_ADD] && r->stacks[EF_ST_USE] != r->stacks[EF_ST_CALL]);
    stack_site_is(r->stacks[EF_ST_CALL], "child_del");
    stack_site_is(r->stacks[EF_ST_FORK], "g_basic");
    stack_site_is(r->stacks[EF_ST_CREATE], "g_basic");
    stack_site_is(r->stacks[EF_ST_ADD], "g_basic");
    stack_site_is(r->stacks[EF_ST_USE], "parent_waits");
    CHECK(stack_has(r->stacks[EF_ST_CALL], "main"));
    CHECK(r->add_pid == parent);
    CHECK(!r->call_cut && r->lost_changes == 0);

    /* Using the list again, any way, does not repeat the report. */
    parent_waits(ep);
    t_wait(ep, 0);
    CHECK(t_ctl(ep, EPOLL_CTL_ADD, p[0], EPOLLIN, 7) == 0); /* the child deleted it */
    parent_waits(ep);
    CHECKF(rep_count(m, NULL) == 1, "%u reports", rep_count(m, NULL));
    CHECK(ef_report_counts().reports == 1);
}

/* ------------------------------------------------------------------ sites */

SITE static void make_pair(int eps[2], int fd)
{
    for (int i = 0; i < 2; i++) {
        eps[i] = t_epoll_create1(0);
        CHECK(t_ctl(eps[i], EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)i) == 0);
    }
    NOTAIL();
}

SITE static void child_del_each(int eps[2], int fd)
{
    for (int i = 0; i < 2; i++)
        child_del(eps[i], fd);
    NOTAIL();
}

/* Two instances made, registered and changed from the same call sites. */
static unsigned pair_round(int fd)
{
    int eps[2];
    make_pair(eps, fd);
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        child_del_each(eps, fd);
        _exit(0);
    }
    reap(c);
    for (int i = 0; i < 2; i++)
        parent_waits(eps[i]);
    for (int i = 0; i < 2; i++)
        t_close(eps[i]);
    return rep_count(m, SHARED);
}

/* Exactly once per (instance, modifying call site), tree-wide: the
 * conflict-level dedup of track.c, and report.c's EPOLLFORK_DEDUP on top. */
static void g_sites(void)
{
    ef_opt.dedup = 0; /* first only track.c's own dedup set */
    struct fixture f;
    if (!setup(&f))
        return;
    unsigned m = rep_mark();
    pid_t first = 0;
    for (int round = 0; round < 3; round++) {
        pid_t c = t_fork();
        if (c == 0) {
            child_two_sites(f.ep, f.p[0]);
            _exit(0);
        }
        if (!first)
            first = c;
        reap(c);
        parent_waits(f.ep);
        parent_waits(f.ep);
        CHECKF(rep_count(m, SHARED) == 2 && rep_count(m, NULL) == 2,
               "round %d: %u reports (two call sites, any number of children and uses: two)",
               round, rep_count(m, NULL));
    }
    const struct ef_report *del = rep_find(m, SHARED, EPOLL_CTL_DEL);
    const struct ef_report *add = rep_find(m, SHARED, EPOLL_CTL_ADD);
    if (!CHECK(del && add))
        return;
    CHECK(del->modifier_pid == first && add->modifier_pid == first);
    CHECK(del->stacks[EF_ST_CALL] && add->stacks[EF_ST_CALL] && del->stacks[EF_ST_CALL] != add->stacks[EF_ST_CALL]);
    stack_site_is(del->stacks[EF_ST_CALL], "child_two_sites");
    stack_site_is(add->stacks[EF_ST_CALL], "child_two_sites");
    CHECK(add->events == (EPOLLIN | EPOLLET) && add->data == 0xabc);
    CHECKF(add->stacks[EF_ST_ADD] == add->stacks[EF_ST_CALL], "an ADD's registration is the call itself");
    CHECK(del->stacks[EF_ST_ADD] && del->stacks[EF_ST_ADD] != del->stacks[EF_ST_CALL]);

    /* The same change from another call site is another report. */
    pid_t c = t_fork();
    if (c == 0) {
        child_del(f.ep, f.p[0]);
        _exit(0);
    }
    reap(c);
    parent_waits(f.ep);
    CHECK(rep_count(m, SHARED) == 3);
    const struct ef_report *r = rep_at(m + 2);
    if (CHECK(r && r->op == EPOLL_CTL_DEL && r->modifier_pid == c))
        stack_site_is(r->stacks[EF_ST_CALL], "child_del");

    /* One call site, two instances: one report each... */
    CHECKF(pair_round(f.p[0]) == 2, "two instances changed from one site: two reports");
    /* ...unless EPOLLFORK_DEDUP=1 merges reports with the same stacks. */
    ef_opt.dedup = 1;
    unsigned long deduped = ef_report_counts().deduped;
    CHECKF(pair_round(f.p[0]) == 1, "EPOLLFORK_DEDUP=1: identical stacks, one report");
    CHECK(ef_report_counts().deduped == deduped + 1);
}

/* ---------------------------------------------------------------- release */

/* A child that lets go of the instance leaves the parent alone with it. */
static void g_release(void)
{
    struct fixture f;
    if (!setup(&f))
        return;
    struct ef_inst *in = f.in;
    uint32_t idx = f.idx;
    unsigned m = rep_mark();

    /* 1. The child closes its only alias. */
    pid_t c = t_fork();
    if (c == 0) {
        t_close(f.ep);
        CHECK(!ef_holds(idx) && LD(in->nholders) == 1 && slot_of(in, getpid()) < 0);
        CHECK(LD(in->state) == 1); /* the parent still holds it */
        _exit(0);
    }
    reap(c);
    CHECK(LD(in->nholders) == 1 && LD(in->crossed));
    uint64_t g0 = LD(in->gen);
    CHECK(t_ctl(f.ep, EPOLL_CTL_MOD, f.p[0], EPOLLOUT, 5) == 0);
    CHECK(t_ctl(f.ep, EPOLL_CTL_DEL, f.p[0], 0, 0) == 0);
    CHECK(t_ctl(f.ep, EPOLL_CTL_ADD, f.p[0], EPOLLIN, 6) == 0);
    CHECKF(LD(in->gen) == g0, "changes of a process alone are not recorded: gen %llu -> %llu",
           (unsigned long long)g0, (unsigned long long)LD(in->gen));
    parent_waits(f.ep);
    CHECK(rep_count(m, NULL) == 0);

    /* 2. Two aliases in the child: closing one keeps the instance, a change
     *    through the other is a conflict, closing that one lets go. */
    c = t_fork();
    if (c == 0) {
        int ep2 = t_dup2(f.ep, 150);
        CHECK(ep2 == 150 && idx_of(ep2) == idx && LD(ef_local_at(idx)->aliases) == 2);
        t_close(f.ep);
        CHECK(ef_holds(idx) && LD(in->nholders) == 2 && LD(ef_local_at(idx)->aliases) == 1);
        child_del(ep2, f.p[0]);
        CHECK(LD(in->gen) == g0 + 1);
        t_close(ep2);
        CHECK(!ef_holds(idx) && LD(in->nholders) == 1);
        _exit(0);
    }
    reap(c);
    parent_waits(f.ep);
    const struct ef_report *r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    CHECKF(r && r->epfd == 150 && r->modifier_pid == c, "epfd is the number the modifier used");

    /* 3. A normal exit (the destructor's ef_on_exit) lets go too: of the
     *    shared slots (an exiting process writes no private page), both for a
     *    child that never had an event and for one that had. */
    c = t_fork();
    if (c == 0) {
        ef_on_exit();
        CHECK(LD(in->nholders) == 1);
        _exit(0);
    }
    reap(c);
    CHECK(LD(in->nholders) == 1);
    c = t_fork();
    if (c == 0) {
        CHECK(t_ctl(f.ep, EPOLL_CTL_MOD, f.p[1], EPOLLOUT, 9) != 0 || 1); /* an event: a holder */
        CHECK(ef_holds(idx) && LD(in->nholders) == 2);
        ef_on_exit();
        CHECK(LD(in->nholders) == 1);
        _exit(0);
    }
    reap(c);
    CHECK(LD(in->nholders) == 1);
    CHECK(t_ctl(f.ep, EPOLL_CTL_ADD, f.p[0], EPOLLIN, 8) == 0); /* deleted by child 2 */

    /* 4. _exit without closing: the slot stays until a prune (every 64th
     *    recorded change) finds the process gone. */
    c = t_fork();
    if (c == 0)
        _exit(0);
    reap(c);
    CHECK(LD(in->nholders) == 2);
    uint64_t g1 = LD(in->gen);
    for (int i = 0; i < 70; i++)
        CHECK(t_ctl(f.ep, EPOLL_CTL_MOD, f.p[0], i & 1 ? EPOLLIN : EPOLLOUT, (uint64_t)i) == 0);
    uint64_t want = (g1 / 64 + 1) * 64;
    CHECKF(LD(in->gen) == want && LD(in->nholders) == 1,
           "gen %llu (expected to stop at %llu), %u holders", (unsigned long long)LD(in->gen),
           (unsigned long long)want, LD(in->nholders));
    CHECK(rep_count(m, NULL) == 1);
}

/* ---------------------------------------------------------------- aliases */

/* dup, dup2, dup3, F_DUPFD(_CLOEXEC): aliases of one instance are counted,
 * the instance lives until the last one is closed. */
static void g_aliases(void)
{
    int ep = t_epoll_create1(0);
    uint32_t idx = idx_of(ep);
    struct ef_inst *in = inst_at(idx);
    if (!CHECK(in))
        return;
    struct ef_local *l = ef_local_at(idx);
#define ALIASES(n) CHECKF((int)LD(l->aliases) == (n), "aliases %u, expected %d", LD(l->aliases), (n))
#define FLAGS(fd) (ef_fd_peek(fd) ? LD(ef_fd_peek(fd)->flags) : 0u)
    ALIASES(1);
    int a = t_dup(ep);
    CHECK(a >= 0 && idx_of(a) == idx);
    ALIASES(2);
    CHECK(ef_fd_peek(a) && LD(ef_fd_peek(a)->inst_uid) == LD(in->uid));
    CHECK((FLAGS(a) & EF_FD_DUPED) && (FLAGS(ep) & EF_FD_DUPED));
    int b = t_dup3(ep, 150, O_CLOEXEC);
    CHECK(b == 150 && idx_of(b) == idx && (FLAGS(b) & EF_FD_EPOLL));
    ALIASES(3);
    int c = t_fcntl_dupfd(ep, F_DUPFD_CLOEXEC, 160);
    CHECK(c >= 160 && idx_of(c) == idx && (FLAGS(c) & EF_FD_EPOLL));
    ALIASES(4);

    /* A number on another page of the fd table. */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rlim_t want = rl.rlim_max < 70001 ? rl.rlim_max : 70001;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = want;
        setrlimit(RLIMIT_NOFILE, &rl);
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    int high = (int)(rl.rlim_cur - 1);
    int h = -1;
    if (high >= 4096) {
        h = t_dup2(ep, high);
        CHECK(h == high && idx_of(h) == idx);
        ALIASES(5);
    }
    int nal = h >= 0 ? 5 : 4;

    /* dup2 over an alias of another instance: that one is let go. */
    int other = t_epoll_create1(0);
    uint32_t oidx = idx_of(other);
    struct ef_inst *oin = inst_at(oidx);
    if (!CHECK(oin))
        return;
    uint32_t ouid = LD(oin->uid);
    CHECK(t_dup2(ep, other) == other);
    CHECK(idx_of(other) == idx && !ef_holds(oidx));
    CHECKF(LD(oin->state) == 0 || LD(oin->uid) != ouid, "the replaced instance was freed");
    nal++;
    ALIASES(nal);
    ef_on_dup(ep, ep, NULL); /* dup2(fd, fd) changes nothing */
    ALIASES(nal);

    /* A dup of a plain fd makes no alias, but marks both as dup'ed. */
    int p[2];
    CHECK(t_pipe(p) == 0);
    int pd = t_dup(p[0]);
    CHECK(pd >= 0 && !idx_of(pd) && (FLAGS(pd) & EF_FD_DUPED) && (FLAGS(p[0]) & EF_FD_DUPED));
    t_close(pd);
    CHECK(!(FLAGS(pd) & EF_FD_DUPED));

    /* Closing the aliases one by one: the instance lives until the last. */
    int all[7] = {a, b, c, other, ep, h, -1};
    for (int i = 0; all[i] >= 0; i++) {
        CHECKF(ef_holds(idx) && LD(in->state) == 1, "alive before closing alias %d", all[i]);
        t_close(all[i]);
        CHECK(!idx_of(all[i]) && !(FLAGS(all[i]) & EF_FD_EPOLL));
        if (all[i + 1] >= 0)
            ALIASES(nal - 1 - i);
    }
    CHECKF(!ef_holds(idx) && LD(in->state) == 0, "freed with its last alias");
#undef ALIASES
#undef FLAGS
}

/* ------------------------------------------------------------- closerange */

static void g_closerange(void)
{
    int e1 = t_epoll_create1(0), e2 = t_epoll_create1(0), e3 = t_epoll_create1(0);
    uint32_t i1 = idx_of(e1), i2 = idx_of(e2), i3 = idx_of(e3);
    struct ef_inst *n1 = inst_at(i1), *n3 = inst_at(i3);
    if (!CHECK(e1 < e2 && e2 < e3 && n1 && inst_at(i2) && n3))
        return;
#define FLAGS(fd) (ef_fd_peek(fd) ? LD(ef_fd_peek(fd)->flags) : 0u)
    /* CLOSE_RANGE_CLOEXEC closes nothing: every instance is still held. */
    CHECK(t_close_range((unsigned)e1, (unsigned)e2, CLOSE_RANGE_CLOEXEC, (unsigned)e2) == 0);
    CHECK((FLAGS(e1) & EF_FD_EPOLL) && (FLAGS(e2) & EF_FD_EPOLL) && ef_holds(i1) && ef_holds(i2) &&
          LD(n1->state) == 1);
    CHECK(fcntl(e1, F_GETFD) & FD_CLOEXEC);
    /* A real close of [e1, e2] lets both go and leaves e3 alone. */
    CHECK(t_close_range((unsigned)e1, (unsigned)e2, 0, (unsigned)e2) == 0);
    CHECK(!idx_of(e1) && !idx_of(e2) && !ef_holds(i1) && !ef_holds(i2));
    CHECK(!(FLAGS(e1) & EF_FD_EPOLL));
    CHECK(idx_of(e3) == i3 && ef_holds(i3));
    ef_on_close_range((unsigned)e3, (unsigned)e3 - 1, 0, NULL); /* lo > hi: nothing */
    CHECK(idx_of(e3) == i3 && ef_holds(i3));

    /* A child that closes every fd from 3 up (closefrom) lets go: the
     * parent's later changes stay private. */
    int p[2];
    CHECK(t_pipe(p) == 0 && t_ctl(e3, EPOLL_CTL_ADD, p[0], EPOLLIN, 1) == 0);
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        t_close_range(3, ~0u, 0, 199);
        CHECK(!ef_holds(i3) && LD(n3->nholders) == 1 && !idx_of(e3));
        _exit(0);
    }
    reap(c);
    CHECK(LD(n3->nholders) == 1);
    uint64_t g0 = LD(n3->gen);
    CHECK(t_ctl(e3, EPOLL_CTL_MOD, p[0], EPOLLOUT, 2) == 0);
    CHECK(t_ctl(e3, EPOLL_CTL_DEL, p[0], 0, 0) == 0);
    CHECK(t_ctl(e3, EPOLL_CTL_ADD, p[0], EPOLLIN, 3) == 0);
    CHECK(LD(n3->gen) == g0);
    parent_waits(e3);
    CHECK(rep_count(m, NULL) == 0);

    /* With CLOSE_RANGE_CLOEXEC the child still holds it: a change is a conflict. */
    c = t_fork();
    if (c == 0) {
        t_close_range(3, ~0u, CLOSE_RANGE_CLOEXEC, 199);
        CHECK(ef_holds(i3) && (FLAGS(e3) & EF_FD_EPOLL));
        child_del(e3, p[0]);
        _exit(0);
    }
    reap(c);
    parent_waits(e3);
    CHECK(rep_count(m, SHARED) == 1 && rep_count(m, NULL) == 1);
#undef FLAGS
}

/* ---------------------------------------------------------------- newinst */

/* A new epoll at an old number is a new instance, whoever closed the old one. */
static void g_newinst(void)
{
    int ep = t_epoll_create1(0);
    uint32_t i1 = idx_of(ep);
    if (!CHECK(inst_at(i1)))
        return;
    uint32_t u1 = LD(inst_at(i1)->uid);
    t_close(ep);
    CHECK(!ef_holds(i1) && LD(inst_at(i1)->state) == 0);
    int ep2 = t_epoll_create1(0);
    CHECK(ep2 == ep);
    uint32_t i2 = idx_of(ep2);
    struct ef_inst *n2 = inst_at(i2);
    if (!CHECK(n2))
        return;
    CHECK(i2 != i1 || LD(n2->uid) != u1);
    CHECK(!LD(n2->crossed) && LD(n2->gen) == 0 && LD(n2->nholders) == 1);
    CHECK(ef_fd_peek(ep2) && LD(ef_fd_peek(ep2)->inst_uid) == LD(n2->uid));

    /* A close the shim did not see (libc-internal, raw syscall): the new
     * epoll at that number replaces the stale entry and lets the old go. */
    uint32_t u2 = LD(n2->uid);
    close(ep2);
    int ep3 = t_epoll_create1(0);
    CHECK(ep3 == ep2);
    uint32_t i3 = idx_of(ep3);
    CHECK(i3 && (i3 != i2 || LD(inst_at(i3)->uid) != u2));
    CHECKF(LD(n2->state) == 0 || LD(n2->uid) != u2, "the unseen close released the old instance");

    /* After a fork: the parent replaces its epoll at the same number while
     * the child keeps the old one and changes it: nobody is affected. */
    int p[2], g[2];
    CHECK(t_pipe(p) == 0 && t_ctl(ep3, EPOLL_CTL_ADD, p[0], EPOLLIN, 1) == 0);
    gate_make(g);
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        gate_wait(g);
        child_del(ep3, p[0]); /* the old instance, which only this process holds now */
        CHECK(LD(inst_at(i3)->gen) == 0);
        _exit(0);
    }
    t_close(ep3);
    CHECK(LD(inst_at(i3)->state) == 1 && LD(inst_at(i3)->nholders) == 1);
    int ep4 = t_epoll_create1(0);
    uint32_t i4 = idx_of(ep4);
    CHECK(ep4 == ep3 && i4 && i4 != i3);
    CHECK(inst_at(i4) && !LD(inst_at(i4)->crossed));
    CHECK(t_ctl(ep4, EPOLL_CTL_ADD, p[0], EPOLLIN, 2) == 0);
    CHECK(t_ctl(ep4, EPOLL_CTL_MOD, p[0], EPOLLOUT, 3) == 0);
    CHECK(inst_at(i4) && LD(inst_at(i4)->gen) == 0);
    gate_open(g);
    reap(c);
    parent_waits(ep4);
    CHECK(rep_count(m, NULL) == 0);
}

/* ------------------------------------------------------------------- ring */

SITE static void change_at_depth(int depth, int ep, int fd)
{
    if (depth > 1)
        change_at_depth(depth - 1, ep, fd);
    else
        CHECK(t_ctl(ep, EPOLL_CTL_ADD, fd, EPOLLIN, (uint64_t)fd) == 0);
    NOTAIL();
}

/* More changes than the ring holds before the other process looks: what is
 * still in the ring is reported, the rest is counted as lost. */
static void g_ring(void)
{
    ef_opt.stack_depth = EF_MAX_FRAMES; /* each depth below is a different stack */
    enum { N = EF_RING + 4 };
    int ep = t_epoll_create1(0), p[N][2];
    for (int i = 0; i < N; i++)
        CHECK(t_pipe(p[i]) == 0);
    struct ef_inst *in = inst_of_fd(ep);
    if (!CHECK(in))
        return;
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        for (int i = 0; i < N; i++)
            change_at_depth(i + 1, ep, p[i][0]);
        CHECK(LD(in->gen) == N);
        _exit(0);
    }
    reap(c);
    CHECK(LD(in->gen) == N);
    parent_waits(ep);
    unsigned n = rep_count(m, SHARED);
    CHECKF(n == EF_RING, "%u reports for %d changes with a ring of %d", n, N, EF_RING);
    for (int i = 0; i < N; i++) {
        int found = 0;
        for (unsigned k = m; k < rep_mark(); k++)
            found += rep_at(k)->fd == p[i][0];
        CHECKF(found == (i >= N - EF_RING), "change %d (fd %d) reported %d times", i, p[i][0], found);
    }
    unsigned lost = 0;
    for (unsigned k = m; k < rep_mark(); k++) {
        if (rep_at(k)->lost_changes > lost)
            lost = rep_at(k)->lost_changes;
        CHECK(rep_at(k)->modifier_pid == c && rep_at(k)->op == EPOLL_CTL_ADD);
    }
    CHECKF(lost == N - EF_RING,
           "%d changes fell out of the ring, but no report says so (largest lost_changes: %u)",
           N - EF_RING, lost);
    parent_waits(ep);
    CHECK(rep_count(m, NULL) == n);
}

/* ---------------------------------------------------------------- holders */

/* More holders than holder slots: the extra ones have no slot, the instance
 * is marked overflowed, changes are still recorded, nothing crashes, and
 * nothing is reported that did not happen. */
static void g_holders(void)
{
    enum { N = EF_HOLDERS + 8 };
    struct fixture f;
    int hold[2];
    if (!setup(&f))
        return;
    struct ef_inst *in = f.in;
    gate_make(hold);
    pid_t kids[N];
    unsigned m = rep_mark();
    for (int i = 0; i < N - 1; i++) {
        kids[i] = t_fork();
        if (kids[i] == 0) {
            int slot = LD(ef_local_at(f.idx)->slot);
            CHECK(ef_holds(f.idx));
            CHECKF(i < EF_HOLDERS - 1 ? slot >= 0 : slot == -1, "child %d: slot %d", i, slot);
            gate_wait(hold);
            t_close(f.ep);
            CHECK(!ef_holds(f.idx));
            ef_on_exit();
            _exit(0);
        }
        CHECK(kids[i] > 0);
    }
    /* overflow counts the holders without a slot (8 here), and the tree is
     * told once */
    CHECK(LD(in->nholders) == EF_HOLDERS && LD(in->overflow) == N - EF_HOLDERS &&
          reserved_slots(in) == 0);
    static char log[65536];
    CHECK(read_file(unit_logpath, log, sizeof log) > 0 &&
          strstr(log, "held by more than 32 processes") && !strstr(strstr(log, "held by") + 1, "held by"));
    for (int i = 0; i < N - 1; i++)
        CHECKF((slot_of(in, kids[i]) >= 0) == (i < EF_HOLDERS - 1), "child %d's slot", i);

    /* A holder without a slot changes the list: recorded all the same. */
    pid_t last = t_fork();
    if (last == 0) {
        CHECK(LD(ef_local_at(f.idx)->slot) == -1 && ef_holds(f.idx));
        child_del(f.ep, f.p[0]);
        CHECK(LD(in->gen) == 1);
        _exit(0);
    }
    reap(last);
    CHECK(rep_count(m, NULL) == 0);
    parent_waits(f.ep);
    CHECK(rep_count(m, SHARED) == 1 && rep_count(m, NULL) == 1);
    const struct ef_report *r = rep_at(m);
    CHECK(r && r->modifier_pid == last && r->fork_child_pid == last && r->other_pid == getpid());

    /* Every child lets go; the parent alone changes and waits: silent.  The
     * slot-less holders that closed gave their count back; `last` _exit()ed
     * holding it, and a holder without a slot cannot be found dead. */
    gate_open(hold);
    for (int i = 0; i < N - 1; i++)
        reap(kids[i]);
    CHECK(LD(in->nholders) == 1 && LD(in->state) == 1 && LD(in->overflow) == 1);
    CHECK(t_ctl(f.ep, EPOLL_CTL_ADD, f.p[0], EPOLLIN, 9) == 0);
    CHECK(t_ctl(f.ep, EPOLL_CTL_MOD, f.p[0], EPOLLOUT, 9) == 0);
    parent_waits(f.ep);
    CHECK(rep_count(m, NULL) == 1);
}

/* --------------------------------------------------------------- capacity */

/* A full instance table: new instances are not tracked (one notice for the
 * tree), existing ones still are, and space comes back when holders die.  An
 * fd number beyond the fd table: not tracked, one notice. */
static void g_capacity(void)
{
    struct fixture f;
    int ready[2], go[2];
    if (!setup(&f) || !CHECK(pipe2(ready, O_CLOEXEC) == 0))
        return;
    gate_make(go);
    pid_t filler = t_fork();
    if (filler == 0) {
        close(ready[0]);
        unsigned n = 0;
        uint32_t idx;
        struct ef_inst *in;
        while (n <= EF_MAX_INST && (in = ef_inst_alloc(&idx)) != NULL) {
            /* a live holder, as a real instance of this process would have */
            atomic_store(&in->holders[0], (uint64_t)(uint32_t)getpid() << 32);
            atomic_store(&in->nholders, 1);
            in->owner_pid = getpid();
            n++;
        }
        CHECK(write(ready[1], &n, sizeof n) == (ssize_t)sizeof n);
        gate_wait(go);
        _exit(0);
    }
    close(ready[1]);
    unsigned n = 0;
    CHECK(read(ready[0], &n, sizeof n) == (ssize_t)sizeof n);
    CHECKF(n == EF_MAX_INST - 2, "the filler got %u instances", n);

    /* Full: a new epoll fd is not tracked, nor adopted later; nothing breaks. */
    int ep1 = t_epoll_create1(0);
    CHECK(ep1 >= 0 && !idx_of(ep1));
    CHECK(t_ctl(ep1, EPOLL_CTL_ADD, f.p[0], EPOLLIN, 1) == 0);
    CHECK(!idx_of(ep1));
    CHECK(t_wait(ep1, 0) == 0 && !idx_of(ep1));
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        child_del(ep1, f.p[0]);
        child_del(f.ep, f.p[0]);
        _exit(0);
    }
    reap(c);
    parent_waits(ep1);
    parent_waits(f.ep);
    CHECKF(rep_count(m, SHARED) == 1, "the tracked instance still works: %u reports",
           rep_count(m, SHARED));
    CHECK(rep_count(m, NULL) == 1 && rep_at(m) && rep_at(m)->epfd == f.ep);

    static char log[16384];
    read_file(unit_logpath, log, sizeof log);
    CHECKF(count_lines_with(log, "live epoll instances") == 1, "one notice for the tree:\n%s", log);

    /* Once the holders are gone, their instances are reclaimed. */
    gate_open(go);
    reap(filler);
    int ep2 = t_epoll_create1(0);
    CHECKF(idx_of(ep2) != 0, "an instance whose holders died is reused");

    /* Beyond the fd table: not tracked, one notice. */
    ef_on_epoll_create((int)EF_FD_MAX + 5, 1, 0, NULL);
    ef_on_epoll_create((int)EF_FD_MAX + 6, 1, 0, NULL);
    CHECK(!ef_fd_peek((int)EF_FD_MAX + 5));
    read_file(unit_logpath, log, sizeof log);
    CHECKF(count_lines_with(log, "beyond the tracked range") == 1, "%s", log);
    CHECKF(count_lines_with(log, "epollfork") == 2, "no other notice:\n%s", log);
}

/* ---------------------------------------------------------------- blocked */

/* The modifier reports at once when another holder is blocked in a wait; the
 * waiter's own look afterwards finds the same conflict and stays silent.  A
 * holder that died while waiting (a zombie) is not blocked. */
static void g_blocked(void)
{
    pid_t parent = getpid();
    struct fixture f;
    if (!setup(&f))
        return;
    int slot = LD(ef_local_at(f.idx)->slot);
    unsigned m = rep_mark();
    struct ef_wait_token tok;
    int go[2];
    gate_make(go);
    pid_t c = t_fork();
    if (c == 0) {
        gate_wait(go);
        child_del(f.ep, f.p[0]);
        CHECKF(rep_count(m, SHARED) == 1, "reported at once, by the modifier");
        _exit(0);
    }
    /* The parent waits after the fork (a single-threaded process cannot fork
     * while it is blocked), as if blocked in epoll_wait; then the child deletes. */
    ef_on_wait_enter(f.ep, 1, &tok, NULL);
    CHECK(tok.slot == slot && (uint32_t)LD(f.in->holders[slot]) == 1);
    gate_open(go);
    reap(c);
    ef_on_wait_exit(f.ep, &tok, 0);
    CHECK((uint32_t)LD(f.in->holders[slot]) == 0);
    const struct ef_report *r = rep_at(m);
    if (CHECK(r && rep_count(m, NULL) == 1)) {
        CHECK(r->pid == c && r->modifier_pid == c && r->other_pid == parent);
        CHECK(r->other_use == EF_USE_BLOCKED && r->stacks[EF_ST_USE] == 0);
        CHECK(r->op == EPOLL_CTL_DEL && r->owner_pid == parent);
        CHECK(r->fork_parent_pid == parent && r->fork_child_pid == c);
        stack_site_is(r->stacks[EF_ST_CALL], "child_del");
    }
    parent_waits(f.ep); /* wakes up and looks: the same conflict */
    CHECK(rep_count(m, NULL) == 1);

    /* A waiter that exited (a zombie, not reaped yet) is not blocked. */
    struct fixture f2;
    if (!setup(&f2))
        return;
    m = rep_mark();
    pid_t z = t_fork();
    if (z == 0) {
        struct ef_wait_token tk;
        ef_on_wait_enter(f2.ep, 1, &tk, NULL);
        _exit(0);
    }
    siginfo_t si;
    CHECK(waitid(P_PID, (id_t)z, &si, WEXITED | WNOWAIT) == 0);
    int zs = slot_of(f2.in, z);
    CHECK(zs >= 0 && (uint32_t)LD(f2.in->holders[zs]) == 1);
    pid_t d = t_fork();
    if (d == 0) {
        child_del(f2.ep, f2.p[0]);
        CHECKF(rep_count(m, NULL) == 0, "a zombie waiter is not reported as blocked");
        _exit(0);
    }
    reap(d);
    reap(z);
    parent_waits(f2.ep);
    r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    CHECK(r && r->other_use == EF_USE_WAIT && r->other_pid == parent && r->modifier_pid == d);
}

/* ------------------------------------------------------------------ forks */

/* Process records, the reservation of holder slots across a fork, failed
 * forks, grandchildren, and forks that run no handler. */
static void g_forks(void)
{
    pid_t root = getpid();
    uint32_t root_proc = ef_self.proc;
    struct ef_process *rp = ef_process_at(root_proc);
    CHECK(rp && rp->pid == root && rp->parent == 0 && rp->depth == 0 && rp->fork_how == EF_FORK_ROOT);
    struct fixture f;
    if (!setup(&f))
        return;
    struct ef_inst *in = f.in;

    /* The child's record and slot exist before it runs. */
    int g[2];
    gate_make(g);
    pid_t c = t_fork();
    if (c == 0) {
        struct ef_process *pr = ef_process_at(ef_self.proc);
        CHECK(pr && pr->pid == getpid() && pr->parent == root_proc && pr->depth == 1);
        CHECK(pr && pr->fork_how == EF_FORK_FORK);
        if (pr)
            stack_site_is(pr->fork_stack, "g_forks");
        CHECK(ef_process_of_pid(getpid()) == ef_self.proc);
        gate_wait(g);
        _exit(0);
    }
    uint32_t cp = ef_process_of_pid(c);
    CHECK(cp && ef_process_at(cp) && ef_process_at(cp)->parent == root_proc);
    CHECK(slot_of(in, c) >= 0 && reserved_slots(in) == 0 && LD(in->nholders) == 2);
    gate_open(g);
    reap(c);

    /* A fork that fails gives its reservations back. */
    uint32_t nh = LD(in->nholders);
    ef_on_fork_prepare();
    CHECK(reserved_slots(in) == 1 && LD(in->nholders) == nh + 1);
    ef_on_fork_returned(-1);
    CHECK(reserved_slots(in) == 0 && LD(in->nholders) == nh);

    /* A grandchild's change: the fork that split it from the root is the
     * root's fork of the child. */
    unsigned m = rep_mark();
    int gp[2];
    CHECK(pipe2(gp, O_CLOEXEC) == 0);
    pid_t c1 = t_fork();
    if (c1 == 0) {
        pid_t gc = t_fork();
        if (gc == 0) {
            CHECK(ef_process_at(ef_self.proc) && ef_process_at(ef_self.proc)->depth == 2);
            child_del(f.ep, f.p[0]);
            _exit(0);
        }
        reap(gc);
        CHECK(write(gp[1], &gc, sizeof gc) == (ssize_t)sizeof gc);
        _exit(0);
    }
    reap(c1);
    pid_t gc = 0;
    CHECK(read(gp[0], &gc, sizeof gc) == (ssize_t)sizeof gc);
    parent_waits(f.ep);
    const struct ef_report *r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    CHECKF(r && r->modifier_pid == gc && r->fork_parent_pid == root && r->fork_child_pid == c1,
           "modifier %d fork %d -> %d", r ? r->modifier_pid : 0, r ? r->fork_parent_pid : 0,
           r ? r->fork_child_pid : 0);
    CHECK(t_ctl(f.ep, EPOLL_CTL_ADD, f.p[0], EPOLLIN, 2) == 0);

    /* daemon()/forkpty(): the handlers run, our wrapper does not. */
    m = rep_mark();
    pid_t d = t_fork_atfork();
    if (d == 0) {
        CHECK(slot_of(in, getpid()) >= 0);
        CHECK(ef_process_at(ef_self.proc) && ef_process_at(ef_self.proc)->fork_how == EF_FORK_ATFORK);
        child_mod(f.ep, f.p[0], EPOLLOUT);
        _exit(0);
    }
    reap(d);
    parent_waits(f.ep);
    r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    if (CHECK(r && r->fork_how == EF_FORK_ATFORK && r->fork_child_pid == d && r->op == EPOLL_CTL_MOD))
        stack_site_is(r->stacks[EF_ST_FORK], "g_forks");

    /* syscall(SYS_fork): nothing ran; the child notices on its first event. */
    m = rep_mark();
    pid_t rf = t_fork_raw();
    if (rf == 0) {
        child_mod(f.ep, f.p[0], EPOLLIN);
        CHECK(ef_self.pid == getpid() && slot_of(in, getpid()) >= 0);
        CHECK(ef_process_at(ef_self.proc) && ef_process_at(ef_self.proc)->fork_how == EF_FORK_UNSEEN);
        _exit(0);
    }
    reap(rf);
    parent_waits(f.ep);
    r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    CHECK(r && r->fork_how == EF_FORK_UNSEEN && r->stacks[EF_ST_FORK] == 0);
    CHECK(r && r->fork_child_pid == rf && r->fork_parent_pid == root && r->modifier_pid == rf);

    /* A vfork child shares the parent's memory: it must leave every record
     * alone (here a forked child that looks like one: wipe page intact,
     * ef_vfork_depth raised, its pid not ef_self.pid). */
    uint64_t gen0 = LD(in->gen);
    uint32_t nh0 = LD(in->nholders);
    pid_t vf = t_fork_raw();
    if (vf == 0) {
        ef_wipe->valid = 1;
        atomic_store(&ef_vfork_depth, 1);
        CHECK(t_ctl(f.ep, EPOLL_CTL_MOD, f.p[0], EPOLLOUT, 0x77) == 0);
        CHECK(t_close(f.ep) == 0);
        _exit(LD(in->gen) == gen0 && LD(in->nholders) == nh0 && ef_self.pid != getpid() ? 0 : 1);
    }
    reap(vf);
    CHECK(LD(in->gen) == gen0 && LD(in->nholders) == nh0);

    /* _Fork() through our wrapper: no handler, but the stack survives. */
    m = rep_mark();
    pid_t uf = t_fork_underscore();
    if (uf == 0) {
        child_mod(f.ep, f.p[0], EPOLLOUT | EPOLLET);
        _exit(0);
    }
    reap(uf);
    parent_waits(f.ep);
    r = rep_find(m, SHARED, -1);
    CHECK(rep_count(m, NULL) == 1);
    if (CHECK(r && r->fork_how == EF_FORK_UNDERSCORE && r->fork_child_pid == uf))
        stack_site_is(r->stacks[EF_ST_FORK], "g_forks");
}

/* ---------------------------------------------------------------- mtfork */

static void *thread_fn(void *arg)
{
    return arg;
}

/* In a child of a multithreaded parent, unwinding can hang (docs/EVIDENCE.md): the
 * child records the calling frame only, and the report says so. */
static void g_mtfork(void)
{
    struct fixture f;
    if (!setup(&f))
        return;
    pthread_t th;
    CHECK(pthread_create(&th, NULL, thread_fn, NULL) == 0 && pthread_join(th, NULL) == 0);
    CHECK(ef_stack_parent_mt());
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        CHECK(ef_stack_unsafe());
        child_del(f.ep, f.p[0]);
        _exit(0);
    }
    reap(c);
    parent_waits(f.ep);
    const struct ef_report *r = rep_find(m, SHARED, -1);
    if (!CHECK(r && rep_count(m, NULL) == 1))
        return;
    char fn[256];
    CHECK(r->call_cut == 1);
    CHECKF(stack_len(r->stacks[EF_ST_CALL]) == 1, "%u frames", stack_len(r->stacks[EF_ST_CALL]));
    CHECKF(!strcmp(stack_fn(r->stacks[EF_ST_CALL], 0, fn, sizeof fn), "child_del"), "frame 0: %s", fn);
    CHECK(stack_len(r->stacks[EF_ST_FORK]) > 1 && stack_len(r->stacks[EF_ST_USE]) > 1);
}

/* ------------------------------------------------------------- interleave */

/* The parent's check before its epoll_ctl ran before the child's change, its
 * own change is recorded after it: the next look finds both, reports the
 * child's, and never the parent's own. */
static void g_interleave(void)
{
    struct fixture f;
    int g[2], q[2];
    if (!setup(&f) || !CHECK(t_pipe(q) == 0))
        return;
    gate_make(g);
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        gate_wait(g);
        child_del(f.ep, f.p[0]);
        _exit(0);
    }
    ef_on_ctl_before(f.ep, NULL); /* the parent's epoll_ctl begins */
    gate_open(g);
    reap(c); /* the child's DEL lands meanwhile */
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 9};
    CHECK(epoll_ctl(f.ep, EPOLL_CTL_ADD, q[0], &ev) == 0);
    ef_on_ctl(f.ep, EPOLL_CTL_ADD, q[0], &ev, NULL); /* recorded after the child's */
    CHECK(LD(f.in->gen) == 2 && LD(ef_local_at(f.idx)->lastseen) == 0);
    CHECK(rep_count(m, NULL) == 0);
    parent_waits(f.ep);
    const struct ef_report *r = rep_find(m, SHARED, -1);
    CHECKF(rep_count(m, NULL) == 1, "%u reports", rep_count(m, NULL));
    CHECK(r && r->modifier_pid == c && r->op == EPOLL_CTL_DEL && r->other_pid == getpid());
    CHECK(LD(ef_local_at(f.idx)->lastseen) == 2);
}

/* ------------------------------------------------------------------- wait */

static void *noop_thread(void *arg)
{
    return arg;
}

/* Wait tokens count blocked threads; a wait or ctl on an epoll fd the shim
 * never saw created adopts it. */
static void g_wait(void)
{
    struct fixture f;
    if (!setup(&f))
        return;
    int slot = LD(ef_local_at(f.idx)->slot);
    _Atomic uint64_t *w = &f.in->holders[slot];
#define WAITERS() ((uint32_t)atomic_load(w))
    struct ef_wait_token a, b, nb;
    /* The only thread, on an instance that never crossed a fork: nothing can
     * fork while it is blocked, so the wait is not published. */
    if (__libc_single_threaded) {
        ef_on_wait_enter(f.ep, 1, &a, NULL);
        CHECK(a.slot == -1 && WAITERS() == 0);
        ef_on_wait_exit(f.ep, &a, 0);
        pthread_t th;
        CHECK(pthread_create(&th, NULL, noop_thread, NULL) == 0 && pthread_join(th, NULL) == 0);
    }
    CHECK(!__libc_single_threaded); /* from now on waits are counted */
    ef_on_wait_enter(f.ep, 1, &a, NULL);
    CHECK(a.slot == slot && a.idx == f.idx && a.uid == LD(f.in->uid) && WAITERS() == 1);
    ef_on_wait_enter(f.ep, 1, &b, NULL);
    CHECK(WAITERS() == 2);
    ef_on_wait_enter(f.ep, 0, &nb, NULL);
    CHECK(nb.slot == -1 && WAITERS() == 2);
    ef_on_wait_exit(f.ep, &b, 0);
    CHECK(WAITERS() == 1);
    ef_on_wait_exit(f.ep, &a, 0);
    CHECK(WAITERS() == 0);
    ef_on_wait_exit(f.ep, &a, 0);
    CHECK(WAITERS() == 0 && (uint32_t)(atomic_load(w) >> 32) == (uint32_t)getpid());
#undef WAITERS

    /* A wait that outlives its instance (closed, its slot reused by a new
     * instance at the same index) leaves the new one alone. */
    int ep = t_epoll_create1(0);
    uint32_t idx = idx_of(ep);
    ef_on_wait_enter(ep, 1, &a, NULL);
    CHECK(a.slot >= 0 && a.idx == idx);
    t_close(ep);
    int ep2 = t_epoll_create1(0);
    struct ef_inst *in2 = inst_of_fd(ep2);
    if (CHECK(in2) && idx_of(ep2) == idx) {
        int s2 = slot_of(in2, getpid());
        CHECK(s2 >= 0 && LD(in2->uid) != a.uid);
        ef_on_wait_enter(ep2, 1, &b, NULL);
        ef_on_wait_exit(ep, &a, 0); /* the old wait returns (EBADF) */
        CHECK(s2 < 0 || (uint32_t)LD(in2->holders[s2]) == 1);
        ef_on_wait_exit(ep2, &b, 0);
    }

    /* Adopted by a successful wait... */
    struct epoll_event ev;
    int raw = epoll_create1(0);
    ef_on_wait_enter(raw, 1, &a, NULL);
    CHECK(a.slot == -2);
    int n = epoll_wait(raw, &ev, 1, 0);
    ef_on_wait_exit(raw, &a, n);
    struct ef_inst *in = inst_of_fd(raw);
    CHECK(in && in->create_how == 2 && in->create_stack == 0 && in->create_fd == raw);
    CHECK(in && in->owner_pid == getpid() && LD(in->nholders) == 1);
    /* ...not by a failed one... */
    int raw2 = epoll_create1(0);
    ef_on_wait_enter(raw2, 1, &a, NULL);
    ef_on_wait_exit(raw2, &a, -1);
    CHECK(!idx_of(raw2));
    /* ...and by a successful epoll_ctl, which reads close-on-exec from the kernel. */
    int raw3 = epoll_create1(EPOLL_CLOEXEC);
    CHECK(t_ctl(raw3, EPOLL_CTL_ADD, f.p[1], EPOLLOUT, 3) == 0);
    in = inst_of_fd(raw3);
    CHECK(in && in->create_how == 2 && in->create_flags == EPOLL_CLOEXEC);
    /* Not an epoll fd at all: a failed ctl adopts nothing. */
    CHECK(t_ctl(f.p[0], EPOLL_CTL_ADD, f.p[1], EPOLLOUT, 4) < 0 && !idx_of(f.p[0]));
}

/* ------------------------------------------------------------------ allow */

/* epollfork_allow_shared(): the program says the sharing is deliberate. */
static void g_allow(void)
{
    struct fixture f;
    if (!setup(&f))
        return;
    CHECK(ef_allow_shared(f.ep) == 0 && LD(f.in->allowed) == 1);
    CHECK(ef_allow_shared(f.p[0]) == -1 && ef_allow_shared(-1) == -1);
    CHECK(ef_allow_shared((int)EF_FD_MAX + 1) == -1);
    unsigned m = rep_mark();
    pid_t c = t_fork();
    if (c == 0) {
        child_del(f.ep, f.p[0]);
        _exit(0);
    }
    reap(c);
    parent_waits(f.ep);
    CHECK(rep_count(m, NULL) == 0);
    /* A new instance at that number is not allowed. */
    t_close(f.ep);
    int ep2 = t_epoll_create1(0);
    CHECK(ep2 == f.ep && inst_of_fd(ep2) && !LD(inst_of_fd(ep2)->allowed));
}

const struct group track_groups[] = {
    {"basic", g_basic, TRACK | QUIET},
    {"sites", g_sites, TRACK | QUIET},
    {"release", g_release, TRACK | QUIET},
    {"aliases", g_aliases, TRACK | QUIET},
    {"closerange", g_closerange, TRACK | QUIET},
    {"newinst", g_newinst, TRACK | QUIET},
    {"ring", g_ring, TRACK | QUIET},
    {"holders", g_holders, TRACK},
    {"capacity", g_capacity, TRACK},
    {"blocked", g_blocked, TRACK | QUIET},
    {"interleave", g_interleave, TRACK | QUIET},
    {"forks", g_forks, TRACK | QUIET},
    {"mtfork", g_mtfork, TRACK | QUIET},
    {"wait", g_wait, TRACK | QUIET},
    {"allow", g_allow, TRACK | QUIET},
    {NULL, NULL, 0},
};
