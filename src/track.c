/*
 * track.c - the rule of shared-epoll-ctl, and the events that wrap.c raises.
 *
 * Model.  Each epoll instance has a record in the registry shared by the
 * process tree (registry.c); hold.c keeps who holds it and whether it crossed
 * a fork.  On a crossed instance with more than one holder, every successful
 * epoll_ctl is *recorded*: the generation counter `gen` is bumped and the
 * change (who, op, fd, stack) goes to a 16-entry ring.  Each process
 * remembers, privately, the generation it last saw (`lastseen`).  When a
 * process uses the instance (ctl or wait) and `gen` moved, it reads the ring:
 * a change made by another process is a conflict, reported by the affected
 * process.  When the modifier finds another holder blocked in a wait at the
 * moment of its change, it reports at once (a parent stuck forever because its
 * fd was deleted under it).  Both sides publish before they look (waiter count
 * before gen; gen before waiter counts), so at least one of them sees the
 * other; a tree-wide claim keyed on (instance, modifying stack) makes the
 * report appear exactly once.
 *
 * Why this is silent on correct programs: a child that closes the inherited
 * fd releases its slot (the parent is alone again, nothing is recorded); a new
 * epoll at the same number is a new instance; a hand-off (creator exits or
 * never touches the list again) has no second *user*, so recorded changes are
 * never read by anyone else.
 *
 * The ring is written by other processes: a copy of an entry is used only if
 * its sequence number was the same before and after the copy, every value in
 * it is checked where it is used (record.c, stack.c), and a writer that died
 * between bumping `gen` and publishing its entry is waited for once, briefly,
 * and then counted as a lost change: it can never slow later uses down.
 *
 * Cost.  A process that never forks never touches `gen` or the ring: ctl and
 * wait on an uncrossed instance read one shared flag (ef_epoll_quiet() in
 * rules.h).  The only per-call work kept on the fast path is the registration
 * stack of EPOLL_CTL_ADD.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "rules.h"

#define WRITING (1ull << 63)

/* fd stops referring to its instance; when that was the last alias, the
 * closes awaiting a stale-registration verdict on it go too (nobody is left
 * to receive ghost events). */
static void drop_alias(struct ef_fd *e)
{
    uint32_t idx = ef_hold_drop_alias(e);
    if (idx && atomic_load(&ef_local_at(idx)->ghosts))
        ef_stale_drop(idx);
}

/* ---------------------------------------------------------------- create */

EF_INIT_TEXT void ef_on_epoll_create(int fd, enum ef_create_how how, int flags, void *caller)
{
    if (!ef_track_start() || !ef_enter())
        return;
    struct ef_fd *e = ef_fd_get(fd);
    if (!e) {
        if (ef_notice_once(EF_NOTICE_FD_RANGE))
            ef_log_notice("epollfork: fd %d is beyond the tracked range (%u); it is not tracked",
                          fd, EF_FD_MAX);
        return;
    }
    if (atomic_load(&e->flags) & EF_FD_EPOLL)
        drop_alias(e); /* a close we did not see (libc-internal or raw syscall) */
    ef_hold_create(fd, e, how, flags, caller);
}

/* An epoll fd we never saw created (inherited across exec, made by a raw
 * syscall): a successful epoll_ctl or wait proves it is one.  Adopt it. */
static uint32_t adopt(int epfd, struct ef_fd *e)
{
    static _Atomic unsigned failures;
    if (atomic_load(&ef_reg->notices) & EF_NOTICE_INST_FULL) {
        if (atomic_fetch_add(&failures, 1) % 1024)
            return 0;
    }
    if (atomic_load(&e->flags) & EF_FD_EPOLL)
        drop_alias(e);
    int fl = ef_real.fcntl(epfd, F_GETFD);
    return ef_hold_create(epfd, e, EF_CREATE_ADOPTED,
                          fl > 0 && (fl & FD_CLOEXEC) ? EPOLL_CLOEXEC : 0, NULL);
}

/* --------------------------------------------------------------- reports */

/* Is fd of pid (its link text already read) the file the change recorded?
 * An anon inode (eventfd, timerfd, epoll, signalfd...) is told by its link
 * text, not its inode: all of them share one. */
static int same_file(int pid, int fd, const char *link, const struct ef_target *t,
                     const char *anon)
{
    struct stat st;
    if (!t->valid || ef_procfs_fd_stat(pid, fd, &st) != 0 || st.st_dev != t->dev ||
        st.st_ino != t->ino)
        return 0;
    return (t->mode & S_IFMT) != 0 || !strcmp(link, anon);
}

/* Name the registered fd: from the modifier's fd if it is alive, else from
 * ours, verified against the identity recorded at the change. */
static void describe_target(const struct ef_change *c, char *out, size_t len)
{
    out[0] = 0;
    const struct ef_target *t = &c->target;
    char anon[sizeof t->anon];
    ef_fmt(anon, sizeof anon, "%.*s", (int)sizeof anon - 1, t->anon); /* shared: bounded */
    int pids[2] = {c->pid, ef_self.pid};
    for (int k = 0; k < 2; k++) {
        if (k == 0 && c->pid != ef_self.pid && !ef_procfs_pid_exists(c->pid))
            continue;
        int pid = pids[k] == ef_self.pid ? 0 : pids[k];
        if (ef_procfs_fd_link(pid, c->fd, out, len) > 0 && same_file(pid, c->fd, out, t, anon))
            return;
        out[0] = 0;
    }
    if (!t->valid)
        return;
    if ((t->mode & S_IFMT) == 0 && anon[0]) {
        ef_fmt(out, len, "%s", anon);
        return;
    }
    if (S_ISSOCK(t->mode))
        ef_fmt(out, len, "socket:[%llu]", (unsigned long long)t->ino);
    else if (S_ISFIFO(t->mode))
        ef_fmt(out, len, "pipe:[%llu]", (unsigned long long)t->ino);
    else if (S_ISCHR(t->mode))
        ef_fmt(out, len, "char device %u:%u", major(t->rdev), minor(t->rdev));
    else if (S_ISREG(t->mode))
        ef_fmt(out, len, "file (dev %u:%u inode %llu)", major(t->dev), minor(t->dev),
               (unsigned long long)t->ino);
    else
        ef_fmt(out, len, "anon_inode (inode %llu)", (unsigned long long)t->ino);
}

static uint64_t conflict_key(uint32_t idx, uint32_t uid, const struct ef_change *c)
{
    uint64_t k = ef_mix(ef_mix(ef_kinds[EF_KIND_SHARED_CTL].key_tag, idx), uid);
    uint32_t call = ef_stack_canon(c->call_stack);
    k = ef_mix(k, call ? call : ((uint64_t)c->op << 40 | (uint32_t)c->fd));
    return k ^ (k >> 31);
}

/* Returns 1 when a report was made (the caller's count of lost changes has
 * then been said). */
static int conflict(uint32_t idx, const struct ef_change *c, int32_t other_pid,
                    uint32_t other_proc, enum ef_use use, struct ef_call *call, uint32_t lost)
{
    struct ef_inst *in = ef_inst_at(idx);
    if (atomic_load(&in->allowed))
        return 0; /* the program said it shares this list on purpose */
    if (!ef_claim_once(conflict_key(idx, atomic_load(&in->uid), c)))
        return 0;
    struct ef_report r;
    ef_report_init(&r, EF_KIND_SHARED_CTL, in, c->epfd);
    r.modifier_pid = c->pid;
    r.other_pid = other_pid;
    r.other_use = use;
    r.op = c->op;
    r.fd = c->fd;
    r.events = c->events;
    r.data = c->data;
    describe_target(c, r.target, sizeof r.target);
    ef_report_fill_fork(&r, ef_process_split(c->proc, other_proc));
    r.stacks[EF_ST_CALL] = c->call_stack;
    r.call_cut = (enum ef_cut)c->cut;
    r.stacks[EF_ST_ADD] = c->add_stack;
    r.add_pid = (int)c->add_pid;
    r.call_via = c->via == EF_VIA_IO_URING ? EF_VIA_IO_URING : EF_VIA_EPOLL_CTL;
    r.add_via = c->add_via == EF_VIA_IO_URING ? EF_VIA_IO_URING : EF_VIA_EPOLL_CTL;
    r.ring_fd = c->via == EF_VIA_IO_URING ? c->ring_fd : -1;
    if (use != EF_USE_BLOCKED && call)
        r.stacks[EF_ST_USE] = ef_call_stack(call);
    r.lost_changes = lost;
    if (r.repair_mode)
        ef_repair_fill(&r, &c->repair);
    ef_report_emit(&r);
    return 1;
}

static uint64_t monotonic_ns(void)
{
    /* a raw call (a rare wait): clock_gettime is one more symbol version for
     * every exec'd process to check (bench/RESULTS.md, start-up) */
    struct timespec ts;
    ef_sys6(SYS_clock_gettime, CLOCK_MONOTONIC, (long)&ts, 0, 0, 0, 0);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* How long a reader waits for a writer between bumping gen and publishing:
 * a live writer needs well under a microsecond there (it stats the fd before
 * it bumps), so only a preempted or dead one takes longer. */
#define PUBLISH_WAIT_NS 200000

enum change_read { CHANGE_OK = 1, CHANGE_OVERWRITTEN = 0, CHANGE_UNPUBLISHED = -1 };

/* Copy ring entry g if it is complete. */
static enum change_read read_change(struct ef_inst *in, uint64_t g, struct ef_change *out)
{
    struct ef_change *c = &in->ring[g % EF_RING];
    uint64_t deadline = 0;
    for (unsigned spin = 0;; spin++) {
        uint64_t s1 = atomic_load_explicit(&c->seq, memory_order_acquire);
        if (s1 == g) {
            memcpy((char *)out + sizeof out->seq, (char *)c + sizeof c->seq,
                   sizeof *c - sizeof c->seq);
            atomic_thread_fence(memory_order_acquire);
            if (atomic_load_explicit(&c->seq, memory_order_relaxed) == g)
                return CHANGE_OK;
            return CHANGE_OVERWRITTEN;
        }
        if ((s1 & ~WRITING) > g)
            return CHANGE_OVERWRITTEN;
        if ((spin & 255) == 255) {
            uint64_t now = monotonic_ns();
            if (!deadline)
                deadline = now + PUBLISH_WAIT_NS;
            else if (now > deadline)
                return CHANGE_UNPUBLISHED;
        }
        ef_cpu_relax();
    }
}

/* The use check: has another process changed the list since we last looked? */
static void scan(uint32_t idx, enum ef_use use, struct ef_call *call)
{
    struct ef_local *l = ef_local_at(idx);
    struct ef_inst *in = ef_inst_at(idx);
    uint64_t from = atomic_load(&l->lastseen);
    uint64_t to = atomic_load(&in->gen);
    if (to <= from)
        return;
    if (ef_in_shim)
        return; /* a signal handler inside our own code: look again next time */
    EF_GUARD_SCOPE();
    uint64_t upto = from;
    /* changes lost at earlier uses are said with the next report */
    uint32_t lost = atomic_exchange(&l->lost, 0);
    uint64_t first = from + 1;
    if (to - from > EF_RING) { /* older changes were overwritten: count, do not walk */
        uint64_t skip = to - from - EF_RING;
        lost = skip > UINT32_MAX - lost ? UINT32_MAX : lost + (uint32_t)skip;
        first = to - EF_RING + 1;
        upto = first - 1;
    }
    for (uint64_t g = first; g <= to; g++) {
        struct ef_change c;
        enum change_read rc = read_change(in, g, &c);
        upto = g;
        if (rc != CHANGE_OK) {
            /* overwritten, or its writer never published it (killed in the
             * middle): said as lost, and never waited for again */
            if (lost < UINT32_MAX)
                lost++;
            continue;
        }
        if (c.pid == ef_self.pid)
            continue;
        if (conflict(idx, &c, ef_self.pid, ef_self.proc, use, call, lost))
            lost = 0;
    }
    if (lost)
        atomic_fetch_add(&l->lost, lost);
    uint64_t cur = from;
    while (cur < upto && !atomic_compare_exchange_weak(&l->lastseen, &cur, upto))
        ;
}

/* ------------------------------------------------------------------- ctl */

/* The use check of a change, whichever way it reaches the kernel. */
static void ctl_check(int epfd, enum ef_use use, struct ef_call *call)
{
    if (!ef_tracking())
        return;
    if (EF_UNLIKELY(ef_opt.repair))
        ef_repair_forget(); /* a failed repair's note was its own call's */
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))
        return;
    if (!ef_enter())
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = ef_inst_at(idx);
    /* The use check comes first: a repair below may replace the instance. */
    if (EF_UNLIKELY(atomic_load_explicit(&in->crossed, memory_order_relaxed)) && ef_holds(idx) &&
        atomic_load(&in->gen) != atomic_load_explicit(&ef_local_at(idx)->lastseen,
                                                      memory_order_relaxed))
        scan(idx, use, call);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        ef_stale_check(idx, epfd, call);
    if (EF_UNLIKELY(ef_opt.repair)) {
        ef_repair_before_change(epfd, idx, call->caller);
        if (!ef_holds(idx) && atomic_load(&ef_local_at(idx)->ghosts))
            ef_stale_drop(idx); /* the copy released it: nobody left for its ghosts */
    }
}

void ef_on_ctl_before(int epfd, void *caller)
{
    struct ef_call call = EF_CALL(caller);
    ctl_check(epfd, EF_USE_CTL, &call);
}

/* reg_idx: where fd's registration is now (the copy, after a repair);
 * rep: what repair mode did about this change, NULL nothing. */
static void record(uint32_t idx, uint32_t reg_idx, int epfd, int op, int fd,
                   const struct epoll_event *ev, uint32_t call_stack, enum ef_cut cut,
                   struct ef_fd *t, const struct ef_repair_rec *rep, enum ef_via via,
                   int ring_fd)
{
    struct ef_inst *in = ef_inst_at(idx);
    struct ef_local *l = ef_local_at(idx);
    struct stat st;
    int have = ef_fstat(fd, &st) == 0;
    char anon[sizeof ((struct ef_target *)0)->anon] = "";
    if (have && (st.st_mode & S_IFMT) == 0)
        ef_procfs_fd_link(0, fd, anon, sizeof anon); /* which anon inode: its kind */
    struct ef_interest it;
    int reg = ef_interest_find(fd, t, reg_idx, &it);
    uint64_t now = ef_realtime_ns();
    uint64_t g = atomic_fetch_add(&in->gen, 1) + 1;
    struct ef_change *c = &in->ring[g % EF_RING];
    atomic_store(&c->seq, g | WRITING);
    c->pid = ef_self.pid;
    c->proc = ef_self.proc;
    c->op = op;
    c->epfd = epfd;
    c->fd = fd;
    c->events = ev && op != EPOLL_CTL_DEL ? ev->events : 0;
    c->data = ev && op != EPOLL_CTL_DEL ? ev->data.u64 : 0;
    c->call_stack = call_stack;
    c->add_stack = reg ? it.add_stack : 0;
    c->add_pid = reg ? (uint32_t)it.add_pid : 0;
    c->cut = cut;
    c->via = via;
    c->add_via = reg ? it.via : EF_VIA_EPOLL_CTL;
    c->ring_fd = ring_fd;
    c->time_ns = now;
    memset(&c->target, 0, sizeof c->target);
    if (have) {
        c->target.valid = 1;
        c->target.mode = st.st_mode;
        c->target.dev = st.st_dev;
        c->target.ino = st.st_ino;
        c->target.rdev = st.st_rdev;
        memcpy(c->target.anon, anon, sizeof anon);
    }
    if (rep)
        c->repair = *rep;
    else
        memset(&c->repair, 0, sizeof c->repair);
    atomic_store_explicit(&c->seq, g, memory_order_seq_cst);
    uint64_t prev = g - 1;
    atomic_compare_exchange_strong(&l->lastseen, &prev, g);

    /* Is another holder blocked in a wait right now?  Then it is affected
     * already and may never wake up to notice: report here. */
    int mine = atomic_load(&l->slot);
    for (int i = 0; i < EF_HOLDERS; i++) {
        if (i == mine)
            continue;
        uint64_t w = atomic_load(&in->holders[i]);
        uint32_t pid = (uint32_t)(w >> 32);
        if (!pid || (pid & EF_RESERVED) || pid == (uint32_t)ef_self.pid || !(uint32_t)w)
            continue;
        if (ef_procfs_pid_state((int32_t)pid) != EF_PID_RUNNING)
            continue; /* killed while blocked: its waiter count stayed behind */
        struct ef_change copy;
        if (read_change(in, g, &copy) == CHANGE_OK)
            conflict(idx, &copy, (int32_t)pid, ef_process_of_pid((int32_t)pid), EF_USE_BLOCKED,
                     NULL, 0);
        break;
    }
    if ((g & 63) == 0)
        ef_inst_prune(idx); /* holders that exited without closing (_exit, signals) */
}

/* A change the kernel made: remember the registration, record it where
 * someone else may rely on the list, forget a deleted registration. */
static void ctl_done(int epfd, int op, int fd, const struct epoll_event *ev, enum ef_via via,
                     int ring_fd, struct ef_call *callp)
{
    if (!ef_track_start())
        return;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (EF_UNLIKELY(!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL))) {
        e = ef_fd_get(epfd);
        if (!e || !ef_enter() || !adopt(epfd, e))
            return;
    } else if (!ef_enter()) {
        return;
    }
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = ef_inst_at(idx);
    if (!ef_holds(idx))
        return;
    struct ef_fd *t = ef_fd_peek(fd);
    if (op == EPOLL_CTL_ADD) {
        t = ef_fd_get(fd);
        uint32_t call = ef_call_stack(callp);
        if (t)
            ef_interest_add(fd, t, idx, call, via);
    }
    const struct ef_repair_note *rn = EF_UNLIKELY(ef_opt.repair) ? ef_repair_take(epfd, idx) : NULL;
    if (EF_UNLIKELY(rn && rn->rec.how == EF_REPAIR_COPIED)) {
        /* The change went to this process's private copy; the original, which
         * other processes rely on, is untouched.  It is recorded there all the
         * same, marked repaired, so that they report it under the usual rules. */
        struct ef_inst *orig = ef_inst_at(rn->orig);
        if (atomic_load(&orig->uid) == rn->orig_uid &&
            atomic_load(&orig->state) == EF_INST_LIVE) {
            uint32_t call = ef_call_stack(callp);
            EF_GUARD_SCOPE();
            record(rn->orig, idx, epfd, op, fd, ev, call, callp->cut, t, &rn->rec, via, ring_fd);
        }
    } else if (EF_UNLIKELY(atomic_load_explicit(&in->crossed, memory_order_relaxed))) {
        int mine = atomic_load(&ef_local_at(idx)->slot) >= 0;
        /* Record only when someone else holds it: otherwise a change here can
         * surprise no one. */
        if (atomic_load(&in->nholders) > (uint32_t)mine || atomic_load(&in->overflow)) {
            uint32_t call = ef_call_stack(callp);
            EF_GUARD_SCOPE();
            record(idx, idx, epfd, op, fd, ev, call, callp->cut, t, rn ? &rn->rec : NULL, via,
                   ring_fd);
        }
    }
    if (op == EPOLL_CTL_DEL && t &&
        (atomic_load_explicit(&t->flags, memory_order_relaxed) & (EF_FD_INTEREST | EF_FD_MULTI)))
        ef_interest_del(fd, t, idx);
}

void ef_on_ctl(int epfd, int op, int fd, const void *ev, void *caller)
{
    struct ef_call call = EF_CALL(caller);
    ctl_done(epfd, op, fd, ev, EF_VIA_EPOLL_CTL, -1, &call);
}

/* An IORING_OP_EPOLL_CTL that io_uring_enter submitted (uring.c read it):
 * the same use check and the same bookkeeping as an epoll_ctl, with the
 * enter's stack (one for every change of the batch). */
void ef_on_ctl_from_ring(int ring_fd, int epfd, int op, int fd, const void *ev, int succeeded,
                         struct ef_call *call)
{
    ctl_check(epfd, EF_USE_RING_CTL, call);
    if (succeeded)
        ctl_done(epfd, op, fd, ev, EF_VIA_IO_URING, ring_fd, call);
}

EF_HOT_TEXT void ef_on_ctl_quiet(int epfd, int op, int fd, const struct ef_walk *w, void *caller)
{
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e)
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    if (!ef_holds(idx))
        return;
    if (op == EPOLL_CTL_ADD) {
        struct ef_fd *t = ef_fd_get(fd);
        if (!t)
            return;
        uint32_t call = w->n ? ef_stack_from_walk(w) : 0;
        if (!call)
            call = ef_stack_capture(EF_SKIP_SHIM, caller);
        ef_interest_add(fd, t, idx, call, EF_VIA_EPOLL_CTL);
    } else if (op == EPOLL_CTL_DEL) {
        struct ef_fd *t = ef_fd_peek(fd);
        if (t && (atomic_load_explicit(&t->flags, memory_order_relaxed) &
                  (EF_FD_INTEREST | EF_FD_MULTI)))
            ef_interest_del(fd, t, idx);
    }
}

/* ------------------------------------------------------------------ wait */

void ef_on_wait_enter(int epfd, int blocking, struct ef_wait_token *tok, void *caller)
{
    tok->slot = -1;
    if (!ef_tracking())
        return;
    struct ef_fd *e = ef_fd_peek(epfd);
    if (!e || !(atomic_load_explicit(&e->flags, memory_order_relaxed) & EF_FD_EPOLL)) {
        tok->slot = -2; /* unknown: adopt if the wait succeeds */
        return;
    }
    if (!ef_enter())
        return;
    uint32_t idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
    struct ef_inst *in = ef_inst_at(idx);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)) &&
        EF_UNLIKELY(ef_opt.repair)) {
        /* A ghost is removed before this wait (repair.c): the use check of
         * the original first, then the waiter counts on what it waits on. */
        if (atomic_load(&in->crossed) && ef_holds(idx) &&
            atomic_load(&in->gen) != atomic_load(&ef_local_at(idx)->lastseen))
            scan(idx, EF_USE_WAIT, caller);
        ef_stale_check(idx, epfd, caller);
        idx = atomic_load_explicit(&e->inst, memory_order_relaxed);
        in = ef_inst_at(idx);
    }
    if (blocking && (!__libc_single_threaded ||
                     atomic_load_explicit(&in->crossed, memory_order_relaxed))) {
        /* Publish "I am waiting" before looking at gen (see the top), even on
         * an instance that has not crossed a fork yet: another thread may fork
         * while this one stays blocked.  Not needed when this is the only
         * thread and the instance never crossed a fork: nothing can fork
         * while it is blocked (a signal handler's fork runs after the wait
         * returned EINTR).  A wait with timeout 0 cannot block. */
        int slot;
        if (ef_hold_claim_wait(idx, &slot)) {
            tok->idx = idx;
            tok->uid = atomic_load_explicit(&in->uid, memory_order_relaxed);
            tok->slot = slot;
        }
    }
    struct ef_call call = EF_CALL(caller);
    if (EF_UNLIKELY(atomic_load_explicit(&ef_ghosts_pending, memory_order_relaxed)))
        ef_stale_check(idx, epfd, &call);
    if (EF_LIKELY(!atomic_load_explicit(&in->crossed, memory_order_seq_cst)))
        return;
    if (!ef_holds(idx))
        return;
    if (atomic_load(&in->gen) != atomic_load_explicit(&ef_local_at(idx)->lastseen,
                                                      memory_order_relaxed))
        scan(idx, EF_USE_WAIT, &call);
}

void ef_on_wait_exit(int epfd, const struct ef_wait_token *tok, int result)
{
    if (tok->slot >= 0) {
        ef_hold_release_wait(tok->idx, tok->uid, tok->slot);
        return;
    }
    if (tok->slot == -2 && result >= 0 && ef_tracking()) {
        struct ef_fd *e = ef_fd_get(epfd);
        if (e && !(atomic_load(&e->flags) & EF_FD_EPOLL) && ef_enter())
            adopt(epfd, e);
    }
}

/* ------------------------------------------------------- close and dups */

EF_HOT_TEXT void ef_on_close(int fd, void *caller)
{
    struct ef_fd *e = ef_fd_peek(fd);
    if (!e)
        return;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if (!f)
        return;
    if (!(f & (EF_FD_EPOLL | EF_FD_INTEREST | EF_FD_MULTI))) {
        atomic_fetch_and(&e->flags, ~EF_FD_DUPED);
        return;
    }
    if (!ef_tracking() || !ef_enter())
        return;
    if (f & EF_FD_EPOLL)
        drop_alias(e);
    if ((f & ~EF_FD_ADD_RING) == EF_FD_INTEREST && !ef_stale_copy_possible(fd, e, f)) {
        /* the common case (a connection closed without DEL): one registration,
         * and the kernel drops it with the close */
        atomic_fetch_and(&e->flags, ~(EF_FD_INTEREST | EF_FD_ADD_RING));
    } else if (f & (EF_FD_INTEREST | EF_FD_MULTI)) {
        struct ef_interest ins[16];
        int n = ef_interest_collect(fd, e, ins, 16, 1);
        for (int i = 0; i < n; i++)
            ef_stale_on_close(fd, e, f, &ins[i], caller);
    }
    if (f & EF_FD_DUPED)
        atomic_fetch_and(&e->flags, ~EF_FD_DUPED);
    if (atomic_load_explicit(&e->born, memory_order_relaxed))
        atomic_store(&e->born, 0);
}

static void close_one(int fd, struct ef_fd *e, void *arg)
{
    (void)e;
    ef_on_close(fd, arg);
}

void ef_on_close_range(unsigned lo, unsigned hi, int flags, void *caller)
{
    if (lo > hi || (flags & CLOSE_RANGE_CLOEXEC)) /* CLOEXEC closes nothing now */
        return;
    ef_fd_foreach(lo, hi, close_one, caller);
}

void ef_on_dup(int oldfd, int newfd, void *caller)
{
    if (oldfd == newfd)
        return;
    struct ef_fd *o = ef_fd_peek(oldfd);
    struct ef_fd *n = ef_fd_peek(newfd);
    if (n && atomic_load(&n->flags))
        ef_on_close(newfd, caller); /* dup2/dup3 replaced whatever newfd was */
    /* Two fds now share one open file description: closing one of them no
     * longer removes an epoll registration of it (see stale.c). */
    if (!o)
        o = ef_fd_get(oldfd);
    if (!n)
        n = ef_fd_get(newfd);
    if (!o || !n)
        return;
    uint32_t of = atomic_fetch_or(&o->flags, EF_FD_DUPED);
    atomic_fetch_or(&n->flags, EF_FD_DUPED);
    if (!(of & EF_FD_EPOLL) || !ef_tracking() || !ef_enter())
        return;
    ef_hold_add_alias(n, atomic_load(&o->inst));
}

/* A wrapped call created fd: its number was free, so whatever the table says
 * about it is stale (a close we did not see); and after a fork, an fd created
 * since the last fork has no copy in another process. */
EF_HOT_TEXT void ef_on_fd_born(int fd)
{
    uint32_t epoch = ef_born_epoch();
    struct ef_fd *e = epoch ? ef_fd_get(fd) : ef_fd_peek(fd);
    if (!e)
        return;
    uint32_t f = atomic_load_explicit(&e->flags, memory_order_relaxed);
    if (EF_UNLIKELY(f & EF_FD_STALE_FLAGS)) {
        if ((f & EF_FD_EPOLL) && ef_tracking() && ef_enter())
            drop_alias(e);
        if (f & EF_FD_MULTI) {
            struct ef_interest ins[16];
            ef_interest_collect(fd, e, ins, 16, 1);
        }
        atomic_fetch_and(&e->flags, ~(EF_FD_STALE_FLAGS | EF_FD_ADD_RING));
    }
    if (atomic_load_explicit(&e->born, memory_order_relaxed) != epoch)
        atomic_store_explicit(&e->born, epoch, memory_order_relaxed);
}
