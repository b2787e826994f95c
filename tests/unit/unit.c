/*
 * unit.c - the unit-test program's runner, its stand-ins for wrap.c, and the
 * helpers the groups share (see unit.h for what a check looks like).
 *
 * Usage: test_track [-o DIR] [--list] [GROUP...]; no group runs them all.
 * Every group runs in a fresh process forked before any tracking started, so
 * it gets its own registry, fd table, options and log (DIR/GROUP.log, through
 * EPOLLFORK_LOG), and is killed by alarm() if it hangs.  Files a group wants
 * checked from Python (rendered JSON) go to DIR, a fresh /tmp directory when
 * -o is not given (removed at the end).  The last line reads
 * `test_track: N checks, N failed (groups: ...)`; the exit status is 1 when a
 * check failed or a group died, 2 on bad usage.
 *
 * Why the core is a shared object here (tests/test_unit.py builds it so):
 * stack.c skips every frame of the module it lives in as "the shim's own".
 * Linked into this executable, that module would be the test itself, and all
 * stacks would collapse to libc's start-up frames: two different call sites
 * got the same depot id when we tried.  As libefcore.so the layout is the real
 * shim's, and stacks start in this program's functions.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#define CALLER __builtin_return_address(0)
#define MAXREP 512
#define GROUP_TIMEOUT 120

struct shared {
    _Atomic unsigned checks, failed;
    _Atomic unsigned nrep, rep_overflow;
    struct ef_report reps[MAXREP];
};
static struct shared *sh;

const char *unit_outdir;
const char *unit_group = "main";
char unit_logpath[PATH_MAX];

/* ----------------------------------------------------------------- checks */

int check_(int ok, const char *cond, const char *file, int line, const char *fmt, ...)
{
    atomic_fetch_add(&sh->checks, 1);
    if (ok)
        return 1;
    atomic_fetch_add(&sh->failed, 1);
    char detail[1536] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    const char *base = strrchr(file, '/');
    dprintf(2, "%s:%d: [%s, pid %d] check failed: %s%s%s%s\n", base ? base + 1 : file, line,
            unit_group, (int)getpid(), cond, fmt ? " (" : "", detail, fmt ? ")" : "");
    return 0;
}

/* ---------------------------------------------------------------- reports */

void unit_hook(const struct ef_report *r)
{
    unsigned i = atomic_fetch_add(&sh->nrep, 1);
    if (i < MAXREP)
        sh->reps[i] = *r; /* exec_how is a literal: valid in every process */
    else
        atomic_store(&sh->rep_overflow, 1);
}

unsigned rep_mark(void)
{
    unsigned n = atomic_load(&sh->nrep);
    return n < MAXREP ? n : MAXREP;
}

unsigned rep_count(unsigned mark, const char *kind)
{
    unsigned n = rep_mark(), c = 0;
    for (unsigned i = mark; i < n; i++)
        if (!kind || !strcmp(ef_kind_name(sh->reps[i].kind), kind))
            c++;
    CHECK(!atomic_load(&sh->rep_overflow));
    return c;
}

const struct ef_report *rep_at(unsigned i)
{
    return i < rep_mark() ? &sh->reps[i] : NULL;
}

const struct ef_report *rep_find(unsigned mark, const char *kind, int op)
{
    unsigned n = rep_mark();
    for (unsigned i = mark; i < n; i++)
        if ((!kind || !strcmp(ef_kind_name(sh->reps[i].kind), kind)) && (op < 0 || sh->reps[i].op == op))
            return &sh->reps[i];
    return NULL;
}

/* ----------------------------------------------------------------- stacks */

static void clean_name(char *s)
{
    char *cut = strpbrk(s, ".@");
    if (cut && cut != s)
        *cut = 0;
}

const char *stack_fn(uint32_t id, unsigned i, char *buf, size_t len)
{
    uint64_t f[EF_MAX_FRAMES];
    uint32_t n = ef_depot_copy(id, f, EF_MAX_FRAMES);
    buf[0] = 0;
    if (i >= n)
        return buf;
    struct ef_symctx *c = ef_sym_begin();
    struct ef_sym sy;
    ef_sym_lookup(c, (uintptr_t)f[i] - 1, &sy);
    ef_sym_end(c);
    snprintf(buf, len, "%s", sy.function);
    clean_name(buf);
    return buf;
}

unsigned stack_len(uint32_t id)
{
    uint64_t f[EF_MAX_FRAMES];
    return ef_depot_copy(id, f, EF_MAX_FRAMES);
}

const char *stack_site(uint32_t id, char *buf, size_t len)
{
    unsigned n = stack_len(id);
    for (unsigned i = 0; i < n; i++) {
        stack_fn(id, i, buf, len);
        if (strncmp(buf, "t_", 2) != 0)
            return buf;
    }
    buf[0] = 0;
    return buf;
}

int stack_site_is(uint32_t id, const char *fn)
{
    char buf[256];
    stack_site(id, buf, sizeof buf);
    return CHECKF(!strcmp(buf, fn), "stack %u starts in '%s', expected '%s'", id, buf, fn);
}

int stack_has(uint32_t id, const char *fn)
{
    char buf[256];
    unsigned n = stack_len(id);
    for (unsigned i = 0; i < n; i++)
        if (!strcmp(stack_fn(id, i, buf, sizeof buf), fn))
            return 1;
    return 0;
}

/* ------------------------------------------------- stand-ins for wrap.c */

static int tracking_on(void)
{
    return atomic_load(&ef_self.tracking) == 2;
}

NOINLINE int t_epoll_create1(int flags)
{
    int r = epoll_create1(flags);
    if (r >= 0)
        ef_on_epoll_create(r, 1, flags, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_epoll_create(void)
{
    int r = epoll_create(16);
    if (r >= 0)
        ef_on_epoll_create(r, 0, 0, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    struct epoll_event *evp = op == EPOLL_CTL_DEL ? NULL : &ev;
    ef_on_ctl_before(epfd, CALLER);
    int r = epoll_ctl(epfd, op, fd, evp);
    if (r == 0)
        ef_on_ctl(epfd, op, fd, evp, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_wait(int epfd, int timeout)
{
    struct ef_wait_token tok;
    struct epoll_event evs[8];
    ef_on_wait_enter(epfd, timeout != 0, &tok, CALLER);
    int r = epoll_wait(epfd, evs, 8, timeout);
    if (tok.slot != -1)
        ef_on_wait_exit(epfd, &tok, r);
    NOTAIL();
    return r;
}

NOINLINE int t_close(int fd)
{
    ef_on_close(fd, CALLER);
    int r = close(fd);
    NOTAIL();
    return r;
}

/* The event covers [lo, hi]; the real call only [lo, real_hi], so that the
 * test does not close libunwind's pipe or the log fd (the real wrapper skips
 * the shim's own fds; here libunwind's pipe is not hidden). */
NOINLINE int t_close_range(unsigned lo, unsigned hi, int flags, unsigned real_hi)
{
    ef_on_close_range(lo, hi, flags, CALLER);
    int r = lo <= real_hi ? close_range(lo, real_hi, flags) : 0;
    NOTAIL();
    return r;
}

NOINLINE int t_dup(int fd)
{
    int r = dup(fd);
    if (r >= 0)
        ef_on_dup(fd, r, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_dup2(int fd, int fd2)
{
    int r = dup2(fd, fd2);
    if (r >= 0 && fd != fd2)
        ef_on_dup(fd, fd2, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_dup3(int fd, int fd2, int flags)
{
    int r = dup3(fd, fd2, flags);
    if (r >= 0)
        ef_on_dup(fd, fd2, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_fcntl_dupfd(int fd, int cmd, int min)
{
    int r = fcntl(fd, cmd, min);
    if (r >= 0)
        ef_on_dup(fd, r, CALLER);
    NOTAIL();
    return r;
}

NOINLINE int t_pipe(int p[2])
{
    int r = pipe(p);
    if (r == 0) {
        ef_on_fd_born(p[0]);
        ef_on_fd_born(p[1]);
    }
    NOTAIL();
    return r;
}

void t_child_setup(void)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
}

/* fork() through our wrapper: its stack, glibc's prepare handler, the fork,
 * the child or parent handler, and the wrapper's ef_on_fork_returned(). */
NOINLINE pid_t t_fork(void)
{
    if (tracking_on()) {
        ef_in_shim++;
        ef_tls_fork_stack = ef_stack_capture(EF_SKIP_SHIM, CALLER);
        ef_tls_fork_how = EF_FORK_FORK;
        ef_in_shim--;
    }
    ef_on_fork_prepare();
    pid_t p = fork();
    if (p == 0) {
        /* no atfork child handler (init.c) */
        if (tracking_on())
            ef_enter();     /* the child's first event: track.c does the child's
                             * bookkeeping there, when the wipe page reads zero */
        t_child_setup();
        return 0;
    }
    ef_tls_fork_stack = 0;
    ef_on_fork_returned(p);
    NOTAIL();
    return p;
}

/* daemon(), forkpty(): glibc runs the handlers; our wrapper is not involved. */
NOINLINE pid_t t_fork_atfork(void)
{
    ef_on_fork_prepare();
    pid_t p = fork();
    if (p == 0) {
        if (tracking_on())
            ef_enter(); /* the child's first event */
        t_child_setup();
        return 0;
    }
    NOTAIL();
    return p;
}

/* syscall(SYS_fork): nothing runs; the child finds out from the wipe page. */
NOINLINE pid_t t_fork_raw(void)
{
    pid_t p = (pid_t)syscall(SYS_fork);
    if (p == 0)
        t_child_setup();
    NOTAIL();
    return p;
}

/* _Fork(): our wrapper leaves its stack in TLS; no handler runs. */
NOINLINE pid_t t_fork_underscore(void)
{
    if (tracking_on()) {
        ef_in_shim++;
        ef_tls_fork_stack = ef_stack_capture(EF_SKIP_SHIM, CALLER);
        ef_tls_fork_how = EF_FORK_UNDERSCORE;
        ef_in_shim--;
    }
    pid_t p = (pid_t)syscall(SYS_fork);
    if (p != 0)
        ef_tls_fork_stack = 0;
    else
        t_child_setup();
    NOTAIL();
    return p;
}

/* ------------------------------------------------------------------- misc */

void reap(pid_t pid)
{
    int st = 0;
    pid_t r;
    do
        r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    CHECKF(r == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d: waitpid %d, status 0x%x",
           (int)pid, (int)r, st);
}

uint32_t idx_of(int fd)
{
    struct ef_fd *e = ef_fd_peek(fd);
    if (!e || !(atomic_load(&e->flags) & EF_FD_EPOLL))
        return 0;
    return atomic_load(&e->inst);
}

struct ef_inst *inst_at(uint32_t idx)
{
    return ef_reg && idx && idx < EF_MAX_INST ? (struct ef_inst *)ef_reg_elem(EF_T_INST, idx) : NULL;
}

struct ef_inst *inst_of_fd(int fd)
{
    return inst_at(idx_of(fd));
}

int slot_of(const struct ef_inst *in, pid_t pid)
{
    for (int i = 0; i < EF_HOLDERS; i++)
        if ((uint32_t)(atomic_load(&in->holders[i]) >> 32) == (uint32_t)pid)
            return i;
    return -1;
}

int reserved_slots(const struct ef_inst *in)
{
    int n = 0;
    for (int i = 0; i < EF_HOLDERS; i++)
        if ((uint32_t)(atomic_load(&in->holders[i]) >> 32) & EF_RESERVED)
            n++;
    return n;
}

void gate_make(int g[2])
{
    if (pipe2(g, O_CLOEXEC) != 0)
        CHECK(!"pipe2 for a gate");
}

void gate_open(int g[2])
{
    close(g[1]);
}

void gate_wait(int g[2])
{
    close(g[1]);
    char c;
    for (;;) {
        ssize_t n = read(g[0], &c, 1);
        if (n > 0 || (n < 0 && errno == EINTR))
            continue;
        break;
    }
}

int read_file(const char *path, char *buf, size_t len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        buf[0] = 0;
        return -1;
    }
    size_t k = 0;
    ssize_t n;
    while (k + 1 < len && (n = read(fd, buf + k, len - 1 - k)) > 0)
        k += (size_t)n;
    buf[k] = 0;
    close(fd);
    return (int)k;
}

int count_lines_with(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        const char *hit = memmem(p, len, needle, strlen(needle));
        if (hit)
            n++;
        p += len + (nl ? 1 : 0);
    }
    return n;
}

void write_out(const char *name, const char *buf, size_t len)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", unit_outdir, name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (!CHECKF(fd >= 0, "cannot write %s", path))
        return;
    CHECK(write(fd, buf, len) == (ssize_t)len);
    close(fd);
}

/* ----------------------------------------------------------------- runner */

/* Start tracking the way the first epoll_create would, but with the lowest
 * fd numbers taken: libunwind opens a pipe on its first use, and without the
 * shim's pipe wrapper to hide it, it would sit among the test's own fds. */
static void warm_up(void)
{
    int null = open("/dev/null", O_RDONLY | O_CLOEXEC);
    static int placed[256];
    int n = 0;
    for (int fd = 3; fd < 200 && null >= 0; fd++)
        if (fd != null && fcntl(fd, F_GETFD) < 0 && dup2(null, fd) == fd)
            placed[n++] = fd;
    CHECK(ef_track_start());
    CHECK(ef_stack_capture(EF_SKIP_SHIM, CALLER) != 0);
    for (int i = 0; i < n; i++)
        close(placed[i]);
    close(null);
}

static int run_group(const struct group *g)
{
    unsigned failed0 = atomic_load(&sh->failed);
    pid_t pid = fork();
    if (pid < 0) {
        dprintf(2, "test_track: fork: %s\n", strerror(errno));
        return 0;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGALRM, SIG_DFL);
        alarm(GROUP_TIMEOUT);
        unit_group = g->name;
        snprintf(unit_logpath, PATH_MAX, "%s/%s.log", unit_outdir, g->name);
        unlink(unit_logpath);
        if (g->flags & (TRACK | LOGFILE)) {
            char env[PATH_MAX + 32], err[1024];
            snprintf(env, sizeof env, "EPOLLFORK_LOG=%s", unit_logpath);
            char *envp[] = {env, NULL};
            ef_options_parse(envp, err, sizeof err);
            CHECKF(!err[0], "%s", err);
        }
        /* as ef_init() does after reading the options */
        ef_log_copy_stderr();
        ef_suppressions_load(ef_opt.suppressions);
        ef_report_hook = unit_hook;
        if (g->flags & TRACK)
            warm_up();
        g->fn();
        if (g->flags & QUIET) {
            static char log[65536];
            read_file(unit_logpath, log, sizeof log);
            CHECKF(!log[0], "the group's log should be empty:\n%s", log);
        }
        _exit(0);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    int ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
    if (!ok) {
        atomic_fetch_add(&sh->failed, 1);
        if (WIFSIGNALED(st))
            dprintf(2, "test_track: group %s: killed by signal %d%s\n", g->name, WTERMSIG(st),
                    WTERMSIG(st) == SIGALRM ? " (timed out)" : "");
        else
            dprintf(2, "test_track: group %s: exit status %d\n", g->name, WEXITSTATUS(st));
    }
    return ok && atomic_load(&sh->failed) == failed0;
}

static const struct group *find_group(const char *name)
{
    const struct group *tables[] = {track_groups, parts_groups, pyframes_groups};
    for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
        for (const struct group *g = tables[t]; g->name; g++)
            if (!strcmp(g->name, name))
                return g;
    return NULL;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(int argc, char **argv)
{
    const struct group *sel[128];
    int nsel = 0, list = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            unit_outdir = argv[++i];
        } else if (!strcmp(argv[i], "--list")) {
            list = 1;
        } else {
            const struct group *g = find_group(argv[i]);
            if (!g || nsel == 128) {
                dprintf(2, "test_track: unknown group '%s' (--list names them)\n", argv[i]);
                return 2;
            }
            sel[nsel++] = g;
        }
    }
    const struct group *tables[] = {track_groups, parts_groups, pyframes_groups};
    if (list) {
        for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
            for (const struct group *g = tables[t]; g->name; g++)
                printf("%s\n", g->name);
        return 0;
    }
    if (!nsel)
        for (size_t t = 0; t < sizeof tables / sizeof tables[0]; t++)
            for (const struct group *g = tables[t]; g->name && nsel < 128; g++)
                sel[nsel++] = g;
    sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) {
        perror("test_track: mmap");
        return 2;
    }
    static char tmpdir[] = "/tmp/ef-unit-XXXXXX";
    int own_dir = 0;
    if (!unit_outdir) {
        if (!mkdtemp(tmpdir)) {
            perror("test_track: mkdtemp");
            return 2;
        }
        unit_outdir = tmpdir;
        own_dir = 1;
    }
    ef_real_resolve(); /* as init.c does first */
    char names[4096] = "";
    size_t k = 0;
    for (int i = 0; i < nsel; i++) {
        if (!run_group(sel[i]))
            k += (size_t)snprintf(names + k, k < sizeof names ? sizeof names - k : 0, " %s",
                                  sel[i]->name);
        if (k >= sizeof names)
            k = sizeof names - 1;
    }
    if (own_dir)
        nftw(tmpdir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
    unsigned checks = atomic_load(&sh->checks), failed = atomic_load(&sh->failed);
    printf("test_track: %u checks, %u failed (%d groups%s%s)\n", checks, failed, nsel,
           names[0] ? "; failing:" : "", names);
    return failed ? 1 : 0;
}
