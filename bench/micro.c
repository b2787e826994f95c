/*
 * micro.c - the micro-workloads of the overhead benchmark, one per mode.
 *
 * The same binary runs bare and with the shim in LD_PRELOAD (bench.py runs the
 * two interleaved and takes ratios), so nothing here knows about the shim.  A
 * run is a warm-up followed by CHUNKS timed chunks of ITERS/CHUNKS operations;
 * it prints one line, `MODE ns_per_op=X min=Y max=Z`: the median, fastest and
 * slowest chunk.  bench.py uses the fastest chunk: on this shared 2-core machine
 * a neighbour's burst only ever adds time, so the fastest chunk is the one
 * least disturbed, for the bare and the shim run alike.  Every mode except
 * exec and fork-noepoll first creates an epoll instance, and a warm-up runs
 * before the clock, so the shim is fully started (registry, fd table,
 * libunwind): we measure the steady state of a process that uses epoll, not
 * its first call.  exec and fork-noepoll measure a process that never uses it.
 *
 *   micro mod N [C]           epoll_ctl(EPOLL_CTL_MOD) re-arm of one fd
 *   micro mod-crossed N [C]   the same on an instance a live child also holds
 *   micro close N [C]         eventfd() + close() of an fd the shim never saw
 *   micro close-only N [C]    close() alone: 256 eventfds made untimed, closed timed
 *   micro churn N [C]         eventfd, EPOLL_CTL_ADD, EPOLL_CTL_DEL, close
 *   micro churn-nodel N [C]   eventfd, EPOLL_CTL_ADD, close (close deregisters)
 *   micro churn-sp N [C]      socketpair, ADD one end, DEL, close both
 *   micro wait N [C]          epoll_wait(timeout 0) with one ready fd
 *   micro wait-crossed N [C]  the same while a forked child holds the instance
 *   micro wait-block N [C]    epoll_wait(timeout 1 s) with one ready fd: returns at
 *                             once, but takes the blocking path (servers' loop)
 *   micro fork N [C]          fork + _exit + waitpid with 1,000 registrations
 *   micro fork-noepoll N [C]  fork + _exit + waitpid in a process without epoll
 *   micro exec N [C]          fork + execve(/bin/true) + waitpid
 *   micro exec-epoll N [C]    fork + execve(this program, "one-epoll") + waitpid: a
 *                             whole process whose only work is epoll_create1 (a
 *                             process's first epoll use: the shim's set-up)
 *   micro exec-epoll-fork N [C]  the same, and the exec'd process also forks once
 *                             (the child _exits) and waits
 *                             (both: the exec'd process gets LD_PRELOAD from
 *                             $MICRO_CHILD_PRELOAD when set; this one runs bare)
 *   micro copy N [C]          one EPOLL_CTL_MOD on an instance with 10,000 entries
 *                             that a freshly forked child holds (the fork and the
 *                             child's exit untimed): under EPOLLFORK_REPAIR=1 the
 *                             MOD first copies the instance (src/repair.c)
 *   micro uring N [C]         one io_uring_enter submitting 32 NOPs and 32
 *                             IORING_OP_EPOLL_CTL MODs, and reaping them (the
 *                             way libuv 1.45+ drives its ring: syscall(), mmap)
 *   micro uring-adddel N [C]  the same with 16 ADDs and 16 DELs instead of MODs
 *   micro syscall N [C]       syscall(SYS_getppid): any number but io_uring's
 *   micro rss                 VmSize/VmRSS/RssAnon/RssFile/RssShmem at three stages
 *   micro one-epoll [fork]    (what exec-epoll runs) epoll_create1, [fork], exit
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/io_uring.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

static void die(const char *what)
{
    fprintf(stderr, "micro: %s: %s\n", what, strerror(errno));
    exit(2);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur >= want)
        return;
    if (rl.rlim_max < want && geteuid() == 0)
        rl.rlim_max = want;
    rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
    setrlimit(RLIMIT_NOFILE, &rl);
}

/* ---------------------------------------------------------------- state */

static int ep = -1;          /* the instance every mode uses */
static int efd = -1;         /* a ready eventfd registered in it */
static pid_t holder = -1;    /* child holding the instance (crossed modes) */
static int holder_pipe = -1; /* its wake-up pipe (write end) */

static void setup_epoll(void)
{
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1");
    efd = eventfd(1, EFD_NONBLOCK | EFD_CLOEXEC); /* counter 1: readable */
    if (efd < 0)
        die("eventfd");
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0)
        die("epoll_ctl ADD");
}

/* Fork a child that keeps the instance open, blocked in read() on a pipe, until
 * we close the pipe: the instance has then crossed a fork and has two holders. */
static void start_holder(void)
{
    int p[2];
    if (pipe(p) != 0)
        die("pipe");
    holder = fork();
    if (holder < 0)
        die("fork");
    if (holder == 0) {
        char c;
        close(p[1]);
        while (read(p[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(p[0]);
    holder_pipe = p[1];
}

static void stop_holder(void)
{
    if (holder <= 0)
        return;
    close(holder_pipe);
    int st;
    while (waitpid(holder, &st, 0) < 0 && errno == EINTR)
        ;
    holder = -1;
}

/* ---------------------------------------------------------------- ops */

static void op_mod(long n)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 1};
    for (long i = 0; i < n; i++)
        if (epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev) != 0)
            die("epoll_ctl MOD");
}

static void op_close(long n)
{
    for (long i = 0; i < n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0)
            die("eventfd");
        if (close(fd) != 0)
            die("close");
    }
}

/* Only the closes are timed: creating the fds costs more than closing them and
 * its noise would hide what the close wrapper adds. */
static uint64_t timed_ns; /* set by ops that time themselves */

static void op_close_only(long n)
{
    enum { BATCH = 256 };
    int fds[BATCH];
    uint64_t t = 0;
    for (long done = 0; done < n;) {
        int k = n - done < BATCH ? (int)(n - done) : BATCH;
        for (int i = 0; i < k; i++)
            if ((fds[i] = eventfd(0, EFD_CLOEXEC)) < 0)
                die("eventfd");
        uint64_t t0 = now_ns();
        for (int i = 0; i < k; i++)
            if (close(fds[i]) != 0)
                die("close");
        t += now_ns() - t0;
        done += k;
    }
    timed_ns = t;
}

static void op_churn(long n)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 2};
    for (long i = 0; i < n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0)
            die("eventfd");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl ADD");
        if (epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL) != 0)
            die("epoll_ctl DEL");
        if (close(fd) != 0)
            die("close");
    }
}

static void op_churn_nodel(long n)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 2};
    for (long i = 0; i < n; i++) {
        int fd = eventfd(0, EFD_CLOEXEC);
        if (fd < 0)
            die("eventfd");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            die("epoll_ctl ADD");
        if (close(fd) != 0)
            die("close");
    }
}

static void op_churn_sp(long n)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 3};
    for (long i = 0; i < n; i++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
            die("socketpair");
        if (epoll_ctl(ep, EPOLL_CTL_ADD, sv[0], &ev) != 0)
            die("epoll_ctl ADD");
        if (epoll_ctl(ep, EPOLL_CTL_DEL, sv[0], NULL) != 0)
            die("epoll_ctl DEL");
        if (close(sv[0]) != 0 || close(sv[1]) != 0)
            die("close");
    }
}

static void op_wait(long n)
{
    struct epoll_event out[4];
    for (long i = 0; i < n; i++)
        if (epoll_wait(ep, out, 4, 0) != 1)
            die("epoll_wait");
}

static void op_wait_block(long n)
{
    struct epoll_event out[4];
    for (long i = 0; i < n; i++)
        if (epoll_wait(ep, out, 4, 1000) != 1)
            die("epoll_wait");
}

static void op_fork(long n)
{
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0)
            die("fork");
        if (p == 0)
            _exit(0);
        int st;
        while (waitpid(p, &st, 0) < 0)
            if (errno != EINTR)
                die("waitpid");
    }
}

/* n times: fork, exec path, wait; the program must exit 0. */
static void spawn_n(long n, const char *path, char *const argv[], char *const envp[])
{
    for (long i = 0; i < n; i++) {
        pid_t p = fork();
        if (p < 0)
            die("fork");
        if (p == 0) {
            execve(path, argv, envp);
            _exit(127);
        }
        int st;
        while (waitpid(p, &st, 0) < 0)
            if (errno != EINTR)
                die("waitpid");
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "micro: %s failed (status %d)\n", argv[0], st);
            exit(2);
        }
    }
}

static void op_exec(long n)
{
    static char *const argv[] = {"true", NULL};
    spawn_n(n, "/bin/true", argv, environ);
}

/* A whole short process that uses epoll once: the exec'd side of
 * exec-epoll and exec-epoll-fork. */
static int one_epoll(int do_fork)
{
    int e = epoll_create1(EPOLL_CLOEXEC);
    if (e < 0)
        die("epoll_create1");
    if (do_fork)
        op_fork(1);
    return 0;
}

/* The exec'd process gets LD_PRELOAD=$MICRO_CHILD_PRELOAD when that is set
 * (this process then runs bare: only the measured process has the library). */
static char **child_env(void)
{
    static char *env[512];
    static char pre[4200];
    const char *want = getenv("MICRO_CHILD_PRELOAD");
    if (!want)
        return environ;
    size_t k = 0;
    for (char **e = environ; *e && k < 510; e++)
        if (strncmp(*e, "LD_PRELOAD=", 11) && strncmp(*e, "MICRO_CHILD_PRELOAD=", 20))
            env[k++] = *e;
    snprintf(pre, sizeof pre, "LD_PRELOAD=%s", want);
    env[k++] = pre;
    env[k] = NULL;
    return env;
}

static void op_exec_epoll(long n)
{
    static char *const argv[] = {"micro", "one-epoll", NULL};
    spawn_n(n, "/proc/self/exe", argv, child_env());
}

static void op_exec_epoll_fork(long n)
{
    static char *const argv[] = {"micro", "one-epoll", "fork", NULL};
    spawn_n(n, "/proc/self/exe", argv, child_env());
}

static void op_copy(long n)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = 1};
    uint64_t t = 0;
    for (long i = 0; i < n; i++) {
        start_holder();
        uint64_t t0 = now_ns();
        if (epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev) != 0)
            die("epoll_ctl MOD");
        t += now_ns() - t0;
        stop_holder();
    }
    timed_ns = t;
}

/* ---------------------------------------------------------------- rss */

static void print_status(const char *stage)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        die("/proc/self/status");
    char line[256];
    long vm = -1, rss = -1, anon = -1, file = -1, shmem = -1;
    while (fgets(line, sizeof line, f)) {
        sscanf(line, "VmSize: %ld", &vm);
        sscanf(line, "VmRSS: %ld", &rss);
        sscanf(line, "RssAnon: %ld", &anon);
        sscanf(line, "RssFile: %ld", &file);
        sscanf(line, "RssShmem: %ld", &shmem);
    }
    fclose(f);
    printf("%s VmSize=%ld VmRSS=%ld RssAnon=%ld RssFile=%ld RssShmem=%ld\n", stage, vm, rss, anon,
           file, shmem);
}

static int rss_mode(void)
{
    enum { NREG = 10000 };
    raise_nofile(NREG + 64);
    static int fds[NREG];
    /* Pre-touch what both variants use so it is not counted as the shim's. */
    memset(fds, -1, sizeof fds);
    FILE *f = fopen("/proc/self/status", "r");
    if (f)
        fclose(f);
    print_status("start");
    setup_epoll();
    print_status("epoll");
    struct epoll_event ev = {.events = EPOLLIN};
    for (int i = 0; i < NREG; i++) {
        fds[i] = eventfd(0, EFD_CLOEXEC);
        if (fds[i] < 0)
            die("eventfd (raise RLIMIT_NOFILE)");
        ev.data.u64 = (uint64_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fds[i], &ev) != 0)
            die("epoll_ctl ADD");
    }
    print_status("registered");
    return 0;
}

/* ---------------------------------------------------------------- io_uring */

static struct {
    int fd;
    unsigned *khead, *ktail, *kmask, *array, *cqhead, *cqtail, *cqmask;
    struct io_uring_sqe *sqes;
    struct io_uring_cqe *cqes;
} ring;
static int uring_fds[32];
static struct epoll_event uring_ev[32];

static void setup_ring(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    ring.fd = (int)syscall(__NR_io_uring_setup, 256, &p);
    if (ring.fd < 0)
        die("io_uring_setup");
    size_t sqlen = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqlen = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    size_t len = sqlen > cqlen ? sqlen : cqlen;
    char *sq = mmap(0, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring.fd,
                    IORING_OFF_SQ_RING);
    ring.sqes = mmap(0, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_POPULATE, ring.fd, IORING_OFF_SQES);
    if (sq == MAP_FAILED || ring.sqes == MAP_FAILED)
        die("mmap of the ring");
    ring.khead = (unsigned *)(sq + p.sq_off.head);
    ring.ktail = (unsigned *)(sq + p.sq_off.tail);
    ring.kmask = (unsigned *)(sq + p.sq_off.ring_mask);
    ring.array = (unsigned *)(sq + p.sq_off.array);
    ring.cqhead = (unsigned *)(sq + p.cq_off.head);
    ring.cqtail = (unsigned *)(sq + p.cq_off.tail);
    ring.cqmask = (unsigned *)(sq + p.cq_off.ring_mask);
    ring.cqes = (struct io_uring_cqe *)(sq + p.cq_off.cqes);
    for (int i = 0; i < 32; i++) {
        if ((uring_fds[i] = eventfd(0, EFD_CLOEXEC)) < 0)
            die("eventfd");
        uring_ev[i].events = EPOLLIN;
        uring_ev[i].data.u64 = (uint64_t)i;
    }
}

static struct io_uring_sqe *sqe(unsigned *tail, int op, uint64_t data)
{
    unsigned idx = *tail & *ring.kmask;
    ring.array[idx] = idx;
    struct io_uring_sqe *s = &ring.sqes[idx];
    memset(s, 0, sizeof *s);
    s->opcode = (unsigned char)op;
    s->user_data = data;
    (*tail)++;
    return s;
}

static void ctl_sqe(unsigned *tail, int op, int i)
{
    struct io_uring_sqe *s = sqe(tail, IORING_OP_EPOLL_CTL, (uint64_t)op << 32 | (unsigned)i);
    s->fd = ep;
    s->off = (unsigned)uring_fds[i];
    s->len = (unsigned)op;
    s->addr = op == EPOLL_CTL_DEL ? 0 : (uintptr_t)&uring_ev[i];
}

/* One batch: what libuv's uv__epoll_ctl_flush does, 64 entries. */
static void uring_batch(int adddel)
{
    unsigned tail = *ring.ktail;
    for (int i = 0; i < 32; i++) {
        sqe(&tail, IORING_OP_NOP, 0xff);
        if (!adddel)
            ctl_sqe(&tail, EPOLL_CTL_MOD, i);
        else
            ctl_sqe(&tail, i < 16 ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, i % 16);
    }
    __atomic_store_n(ring.ktail, tail, __ATOMIC_RELEASE);
    if (syscall(__NR_io_uring_enter, ring.fd, 64, 64, IORING_ENTER_GETEVENTS, NULL, 0) != 64)
        die("io_uring_enter");
    unsigned head = *ring.cqhead, end = __atomic_load_n(ring.cqtail, __ATOMIC_ACQUIRE);
    for (; head != end; head++)
        if (ring.cqes[head & *ring.cqmask].res < 0)
            die("an IORING_OP_EPOLL_CTL failed");
    __atomic_store_n(ring.cqhead, head, __ATOMIC_RELEASE);
}

static void op_uring(long n)
{
    for (long i = 0; i < n; i++)
        uring_batch(0);
}

static void op_uring_adddel(long n)
{
    for (long i = 0; i < n; i++)
        uring_batch(1);
}

static void op_syscall(long n)
{
    for (long i = 0; i < n; i++)
        if (syscall(SYS_getppid) <= 0)
            die("getppid");
}

/* ---------------------------------------------------------------- main */

struct mode {
    const char *name;
    void (*op)(long);
    int crossed;     /* a child holds the instance while we measure */
    int regs;        /* extra registrations held during the run */
    int need_epoll;  /* 2: and an io_uring ring, its 32 eventfds registered */
};

static const struct mode modes[] = {
    {"mod", op_mod, 0, 0, 1},
    {"mod-crossed", op_mod, 1, 0, 1},
    {"close", op_close, 0, 0, 1},
    {"close-only", op_close_only, 0, 0, 1},
    {"churn", op_churn, 0, 0, 1},
    {"churn-nodel", op_churn_nodel, 0, 0, 1},
    {"churn-sp", op_churn_sp, 0, 0, 1},
    {"wait", op_wait, 0, 0, 1},
    {"wait-crossed", op_wait, 1, 0, 1},
    {"wait-block", op_wait_block, 0, 0, 1},
    {"fork", op_fork, 0, 1000, 1},
    {"fork-noepoll", op_fork, 0, 0, 0},
    {"exec", op_exec, 0, 0, 0},
    {"exec-epoll", op_exec_epoll, 0, 0, 0},
    {"exec-epoll-fork", op_exec_epoll_fork, 0, 0, 0},
    {"copy", op_copy, 0, 10000, 1},
    {"uring", op_uring, 0, 0, 2},
    {"uring-adddel", op_uring_adddel, 0, 0, 2},
    {"syscall", op_syscall, 0, 0, 1},
};

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && !strcmp(argv[1], "rss"))
        return rss_mode();
    if (argc >= 2 && !strcmp(argv[1], "one-epoll"))
        return one_epoll(argc > 2 && !strcmp(argv[2], "fork"));
    if (argc < 3) {
        fprintf(stderr, "usage: micro MODE ITERS [CHUNKS] | micro rss\n");
        return 2;
    }
    const struct mode *m = NULL;
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++)
        if (!strcmp(argv[1], modes[i].name))
            m = &modes[i];
    if (!m) {
        fprintf(stderr, "micro: unknown mode %s\n", argv[1]);
        return 2;
    }
    long iters = atol(argv[2]);
    int chunks = argc > 3 ? atoi(argv[3]) : 20;
    if (iters <= 0 || chunks <= 0 || chunks > 1000) {
        fprintf(stderr, "micro: bad ITERS or CHUNKS\n");
        return 2;
    }
    long per = iters / chunks;
    if (per < 1)
        per = 1;
    raise_nofile(m->regs > 4000 ? (rlim_t)m->regs + 128 : 4096);

    static int regs[10000];
    if (m->need_epoll)
        setup_epoll();
    if (m->need_epoll == 2) {
        setup_ring();
        struct epoll_event e = {.events = EPOLLIN};
        for (int i = 0; i < 32; i++) /* registered: MOD works; ADD/DEL take 0..15 in and out */
            if (i >= 16 && epoll_ctl(ep, EPOLL_CTL_ADD, uring_fds[i], &e) != 0)
                die("epoll_ctl ADD");
        if (!strcmp(m->name, "uring"))
            for (int i = 0; i < 16; i++)
                if (epoll_ctl(ep, EPOLL_CTL_ADD, uring_fds[i], &e) != 0)
                    die("epoll_ctl ADD");
    }
    struct epoll_event ev = {.events = EPOLLIN};
    for (int i = 0; i < m->regs; i++) {
        regs[i] = eventfd(0, EFD_CLOEXEC);
        if (regs[i] < 0)
            die("eventfd");
        ev.data.u64 = (uint64_t)i;
        if (epoll_ctl(ep, EPOLL_CTL_ADD, regs[i], &ev) != 0)
            die("epoll_ctl ADD");
    }
    if (m->crossed)
        start_holder();

    m->op(per / 10 > 0 ? per / 10 : 1); /* warm-up: caches, stack depot, pages */

    static double ns[1000]; /* static: one-epoll runs in this frame's process too, as a small program */
    for (int c = 0; c < chunks; c++) {
        timed_ns = 0;
        uint64_t t0 = now_ns();
        m->op(per);
        uint64_t t = now_ns() - t0;
        ns[c] = (double)(timed_ns ? timed_ns : t) / (double)per;
    }
    stop_holder();
    qsort(ns, (size_t)chunks, sizeof ns[0], cmp_double);
    double med = chunks % 2 ? ns[chunks / 2] : (ns[chunks / 2 - 1] + ns[chunks / 2]) / 2;
    printf("%s ns_per_op=%.2f min=%.2f max=%.2f ops=%ld\n", m->name, med, ns[0], ns[chunks - 1],
           per * chunks);
    return 0;
}
