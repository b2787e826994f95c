/*
 * uring.c MODE - IORING_OP_EPOLL_CTL through an io_uring ring, and rings that
 * cross a fork.  Built twice: as uring_raw, the way libuv 1.45+ does it
 * (io_uring_setup and io_uring_enter through libc's syscall(), the rings
 * mapped with mmap), and with -DUSE_LIBURING as uring_lib, through Debian's
 * liburing (io_uring_queue_init, io_uring_prep_epoll_ctl, io_uring_submit_and_wait).
 *
 * The parent makes an epoll instance `ep` and a ring, and registers pipe p
 * through the ring.  Then:
 * Reports (shared-epoll-ctl, by the parent at its epoll_wait after the child exits):
 *   child-add, child-mod, child-del   the child submits the change to the
 *                     inherited epoll through a ring of its own
 *   child-del-shared  the child submits the DEL through the parent's ring
 * Reports (stale-registration):
 *   stale             p[0] (added through the ring) is closed without DEL
 *                     while a child holds a copy
 * Reports (shared-io-uring, by the child):
 *   shared-ring       parent and child both submit to the parent's ring after
 *                     the fork (the parent first)
 *   shared-ring-reap  the same, the child only reaps (enter with GETEVENTS)
 * Silent:
 *   own               the child makes its own ring and its own epoll and uses them
 *   closeonly         the child only closes the inherited ring and epoll
 *   stale-del-first   DEL through the ring, then close, while the child holds a copy
 *   ring-closeonly    the child unmaps and closes the ring; the parent goes on using it
 *   ring-closerange   the child closes every fd from 3 up (close_range)
 *   ring-exec         the child execs /bin/true; the parent goes on using the ring
 *   ring-parentonly   only the parent uses the ring after the fork
 * Notices (uring_raw only):
 *   unseen            a ring set up with a raw syscall instruction, then a fork
 *   registered        an enter through a registered ring fd
 * Other:
 *   sqpoll            an IORING_SETUP_SQPOLL ring: one notice, no crash
 *   batch N           N rounds of 32 NOPs and 32 EPOLL_CTL_MODs (the benchmark)
 *   many N            one batch of N ADDs, then one of N DELs (more changes than
 *                     the shim reads before an enter)
 */
#include "scen.h"
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/io_uring.h>

#ifdef USE_LIBURING
#include <liburing.h>

struct ring {
    struct io_uring u;
    int queued;
};

static int ring_init(struct ring *r, unsigned entries, unsigned flags)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = flags;
    p.sq_thread_idle = 10;
    r->queued = 0;
    return io_uring_queue_init_params(entries, &r->u, &p) == 0 ? 0 : -1;
}

static struct io_uring_sqe *get_sqe(struct ring *r)
{
    struct io_uring_sqe *s = io_uring_get_sqe(&r->u);
    CHECK(s);
    r->queued++;
    return s;
}

static void ring_ctl(struct ring *r, int ep, int op, int fd, struct epoll_event *ev)
{
    struct io_uring_sqe *s = get_sqe(r);
    io_uring_prep_epoll_ctl(s, ep, fd, op, ev);
    io_uring_sqe_set_data64(s, (uint64_t)op | (uint64_t)fd << 32);
}

static void ring_nop(struct ring *r)
{
    struct io_uring_sqe *s = get_sqe(r);
    io_uring_prep_nop(s);
    io_uring_sqe_set_data64(s, 0xff);
}

/* Submit what is queued, wait for all of it, return the first error. */
static int ring_run(struct ring *r)
{
    int n = r->queued, err = 0;
    r->queued = 0;
    CHECK(io_uring_submit_and_wait(&r->u, n) == n);
    struct io_uring_cqe *c;
    while (io_uring_peek_cqe(&r->u, &c) == 0) { /* a forked child's completions too */
        if (c->res < 0 && !err && c->user_data != 0xff)
            err = c->res;
        io_uring_cqe_seen(&r->u, c);
    }
    return err;
}

/* Submit what is queued, wait for nothing (a forked child's copy of
 * liburing's state is stale: waiting could hang for ever). */
static void ring_submit_nowait(struct ring *r)
{
    r->queued = 0;
    CHECK(io_uring_submit(&r->u) >= 0);
}

/* Only take completions (an enter with GETEVENTS, nothing submitted). */
static void ring_reap(struct ring *r)
{
    CHECK(io_uring_get_events(&r->u) == 0);
}

static int ring_fd(struct ring *r)
{
    return r->u.ring_fd;
}

static void ring_close(struct ring *r)
{
    io_uring_queue_exit(&r->u);
}

#else /* the way libuv 1.45+ does it: syscall() and mmap */

struct ring {
    int fd;
    unsigned entries, queued;
    char *sq;
    size_t sqlen;
    struct io_uring_sqe *sqes;
    size_t sqelen;
    unsigned *khead, *ktail, *kmask, *array, *cqhead, *cqtail, *cqmask;
    struct io_uring_cqe *cqes;
};

static int ring_init(struct ring *r, unsigned entries, unsigned flags)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    p.flags = flags;
    p.sq_thread_idle = 10;
    int fd = (int)syscall(__NR_io_uring_setup, entries, &p);
    if (fd < 0)
        return -1;
    CHECK(p.features & IORING_FEAT_SINGLE_MMAP);
    size_t sqlen = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    size_t cqlen = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    r->sqlen = sqlen > cqlen ? sqlen : cqlen;
    r->sq = mmap(0, r->sqlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                 IORING_OFF_SQ_RING);
    CHECK(r->sq != MAP_FAILED);
    r->sqelen = p.sq_entries * sizeof(struct io_uring_sqe);
    r->sqes = mmap(0, r->sqelen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd,
                   IORING_OFF_SQES);
    CHECK(r->sqes != MAP_FAILED);
    r->fd = fd;
    r->entries = p.sq_entries;
    r->queued = 0;
    r->khead = (unsigned *)(r->sq + p.sq_off.head);
    r->ktail = (unsigned *)(r->sq + p.sq_off.tail);
    r->kmask = (unsigned *)(r->sq + p.sq_off.ring_mask);
    r->array = (unsigned *)(r->sq + p.sq_off.array);
    r->cqhead = (unsigned *)(r->sq + p.cq_off.head);
    r->cqtail = (unsigned *)(r->sq + p.cq_off.tail);
    r->cqmask = (unsigned *)(r->sq + p.cq_off.ring_mask);
    r->cqes = (struct io_uring_cqe *)(r->sq + p.cq_off.cqes);
    return 0;
}

static struct io_uring_sqe *get_sqe(struct ring *r)
{
    unsigned tail = *r->ktail;
    CHECK(tail - __atomic_load_n(r->khead, __ATOMIC_ACQUIRE) < r->entries);
    unsigned idx = tail & *r->kmask;
    r->array[idx] = idx;
    struct io_uring_sqe *s = &r->sqes[idx];
    memset(s, 0, sizeof *s);
    __atomic_store_n(r->ktail, tail + 1, __ATOMIC_RELEASE);
    r->queued++;
    return s;
}

static void ring_ctl(struct ring *r, int ep, int op, int fd, struct epoll_event *ev)
{
    struct io_uring_sqe *s = get_sqe(r);
    s->opcode = IORING_OP_EPOLL_CTL;
    s->fd = ep;
    s->off = (unsigned)fd;
    s->len = (unsigned)op;
    s->addr = (uintptr_t)ev;
    s->user_data = (uint64_t)op | (uint64_t)fd << 32;
}

static void ring_nop(struct ring *r)
{
    struct io_uring_sqe *s = get_sqe(r);
    s->opcode = IORING_OP_NOP;
    s->user_data = 0xff;
}

static int reap_all(struct ring *r)
{
    int err = 0;
    unsigned head = *r->cqhead, tail = __atomic_load_n(r->cqtail, __ATOMIC_ACQUIRE);
    for (; head != tail; head++) {
        struct io_uring_cqe *c = &r->cqes[head & *r->cqmask];
        if (c->res < 0 && !err)
            err = c->res;
    }
    __atomic_store_n(r->cqhead, head, __ATOMIC_RELEASE);
    return err;
}

static int ring_run(struct ring *r)
{
    unsigned n = r->queued;
    r->queued = 0;
    /* SQ_WAKEUP: an SQPOLL thread idle for sq_thread_idle ms sleeps until woken */
    CHECK(syscall(__NR_io_uring_enter, r->fd, n, n, IORING_ENTER_GETEVENTS | IORING_ENTER_SQ_WAKEUP,
                  NULL, 0) == (long)n);
    return reap_all(r);
}

static void ring_submit_nowait(struct ring *r)
{
    unsigned n = r->queued;
    r->queued = 0;
    CHECK(syscall(__NR_io_uring_enter, r->fd, n, 0, 0, NULL, 0) >= 0);
}

static void ring_reap(struct ring *r)
{
    CHECK(syscall(__NR_io_uring_enter, r->fd, 0, 0, IORING_ENTER_GETEVENTS, NULL, 0) == 0);
    reap_all(r);
}

static int ring_fd(struct ring *r)
{
    return r->fd;
}

/* A ring set up with the syscall instruction itself (as a static liburing
 * does): no wrapper sees it; the shim finds its fd at the next fork. */
static int unseen(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd, n = __NR_io_uring_setup;
    __asm__ volatile("syscall" : "=a"(fd) : "a"(n), "D"(8L), "S"(&p) : "rcx", "r11", "memory");
    CHECK(fd >= 0);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0)
        _exit(0);
    reap(c);
    printf("unseen ring fd %ld\n", fd);
    return 0;
}

/* io_uring_enter through a registered ring fd (an index, not an fd). */
static int registered(struct ring *r)
{
    struct io_uring_rsrc_update up = {.offset = -1U, .data = (uint64_t)r->fd};
    if (syscall(__NR_io_uring_register, r->fd, IORING_REGISTER_RING_FDS, &up, 1) != 1) {
        printf("no registered rings here (errno %d)\n", errno);
        return 0;
    }
    ring_nop(r);
    r->queued = 0;
    CHECK(syscall(__NR_io_uring_enter, up.offset, 1, 1,
                  IORING_ENTER_GETEVENTS | IORING_ENTER_REGISTERED_RING, NULL, 0) == 1);
    reap_all(r);
    printf("registered ring index %u ok\n", up.offset);
    return 0;
}

static void ring_close(struct ring *r)
{
    munmap(r->sqes, r->sqelen);
    munmap(r->sq, r->sqlen);
    close(r->fd);
}
#endif

static int ep, p[2], q[2], go[2];
static struct ring R;
static struct epoll_event ev_p = {.events = EPOLLIN}, ev_q = {.events = EPOLLIN | EPOLLET};

static void submit_change(struct ring *r, int op)
{
    if (op == EPOLL_CTL_ADD) {
        ev_q.data.fd = q[0];
        ring_ctl(r, ep, EPOLL_CTL_ADD, q[0], &ev_q);
    } else if (op == EPOLL_CTL_MOD) {
        ev_p.events = EPOLLOUT | EPOLLONESHOT;
        ring_ctl(r, ep, EPOLL_CTL_MOD, p[0], &ev_p);
    } else {
        ring_ctl(r, ep, EPOLL_CTL_DEL, p[0], NULL);
    }
    CHECK(ring_run(r) == 0);
}

static void child_change(int op, int shared)
{
    if (shared) {
        submit_change(&R, op);
        return;
    }
    struct ring mine;
    CHECK(ring_init(&mine, 8, 0) == 0);
    submit_change(&mine, op);
    ring_close(&mine);
}

static void own_loop(void)
{
    struct ring mine;
    CHECK(ring_init(&mine, 8, 0) == 0);
    int e = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
    ring_ctl(&mine, e, EPOLL_CTL_ADD, q[0], &ev);
    CHECK(ring_run(&mine) == 0);
    ev.events = EPOLLIN | EPOLLET;
    ring_ctl(&mine, e, EPOLL_CTL_MOD, q[0], &ev);
    ring_ctl(&mine, e, EPOLL_CTL_DEL, q[0], NULL);
    CHECK(ring_run(&mine) == 0);
    struct epoll_event out;
    CHECK(epoll_wait(e, &out, 1, 0) >= 0);
    ring_close(&mine);
}

static void parent_submits(void)
{
    ring_nop(&R);
    CHECK(ring_run(&R) == 0);
}

static void child_submits(void)
{
    ring_nop(&R);
    ring_submit_nowait(&R);
}

static void child_reaps(void)
{
    ring_reap(&R);
}

static pid_t holder_child(int ctl[2])
{
    CHECK(pipe(ctl) == 0);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        close(ctl[1]);
        char b;
        CHECK(read(ctl[0], &b, 1) == 0);
        _exit(0);
    }
    close(ctl[0]);
    return c;
}

static int stale(int del_first)
{
    int ctl[2];
    pid_t c = holder_child(ctl);
    if (del_first) {
        ring_ctl(&R, ep, EPOLL_CTL_DEL, p[0], NULL);
        CHECK(ring_run(&R) == 0);
    }
    int closed = p[0];
    CHECK(close(p[0]) == 0);
    CHECK(write(p[1], "x", 1) == 1);
    struct epoll_event out[4];
    int n = epoll_wait(ep, out, 4, 100);
    for (int i = 0; i < n; i++)
        if (out[i].data.fd == closed)
            printf("ghost event for closed fd %d\n", closed);
    close(ctl[1]);
    reap(c);
    return 0;
}

static int ring_modes(const char *mode)
{
    CHECK(pipe(go) == 0);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        close(go[1]);
        char b;
        CHECK(read(go[0], &b, 1) == 1); /* the parent has used the ring since the fork */
        if (!strcmp(mode, "shared-ring"))
            child_submits();
        else if (!strcmp(mode, "shared-ring-reap"))
            child_reaps();
        else if (!strcmp(mode, "ring-closeonly"))
            ring_close(&R);
        else if (!strcmp(mode, "ring-closerange"))
            close_range(3, ~0U, 0);
        else if (!strcmp(mode, "ring-exec"))
            execl("/bin/true", "true", (char *)NULL);
        else if (!strcmp(mode, "own"))
            own_loop();
        _exit(0);
    }
    close(go[0]);
    parent_submits();
    CHECK(write(go[1], "g", 1) == 1);
    reap(c);
    parent_submits();
    return 0;
}

static int batch(long rounds)
{
    int fds[32][2];
    struct epoll_event ev[32];
    for (int i = 0; i < 32; i++) {
        CHECK(pipe(fds[i]) == 0);
        ev[i].events = EPOLLIN;
        ev[i].data.fd = fds[i][0];
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fds[i][0], &ev[i]) == 0);
    }
    for (long r = 0; r < rounds; r++) {
        for (int i = 0; i < 32; i++) {
            ring_nop(&R);
            ev[i].events = r & 1 ? EPOLLIN : EPOLLIN | EPOLLET;
            ring_ctl(&R, ep, EPOLL_CTL_MOD, fds[i][0], &ev[i]);
        }
        CHECK(ring_run(&R) == 0);
    }
    return 0;
}

static int many(int n)
{
    int (*fds)[2] = calloc((size_t)n, sizeof *fds);
    struct epoll_event *ev = calloc((size_t)n, sizeof *ev);
    CHECK(fds && ev && n <= 200);
    for (int i = 0; i < n; i++) {
        CHECK(pipe(fds[i]) == 0);
        ev[i].events = EPOLLIN;
        ev[i].data.fd = fds[i][0];
        ring_ctl(&R, ep, EPOLL_CTL_ADD, fds[i][0], &ev[i]);
    }
    CHECK(ring_run(&R) == 0);
    for (int i = 0; i < n; i++)
        ring_ctl(&R, ep, EPOLL_CTL_DEL, fds[i][0], NULL);
    CHECK(ring_run(&R) == 0);
    printf("%d added and deleted\n", n);
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "child-del";
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    if (!strcmp(mode, "sqpoll")) {
        if (ring_init(&R, 64, IORING_SETUP_SQPOLL) != 0) {
            printf("no sqpoll here (errno %d)\n", errno);
            return 0;
        }
        ev_p.data.fd = p[0];
        ring_ctl(&R, ep, EPOLL_CTL_ADD, p[0], &ev_p);
        ring_nop(&R);
        CHECK(ring_run(&R) == 0);
        printf("sqpoll ring fd %d ok\n", ring_fd(&R));
        ring_close(&R);
        return 0;
    }
#ifndef USE_LIBURING
    if (!strcmp(mode, "unseen"))
        return unseen();
#endif
    CHECK(ring_init(&R, 256, 0) == 0);
#ifndef USE_LIBURING
    if (!strcmp(mode, "registered"))
        return registered(&R);
#endif
    ev_p.data.fd = p[0];
    ring_ctl(&R, ep, EPOLL_CTL_ADD, p[0], &ev_p);
    CHECK(ring_run(&R) == 0);
    if (!strcmp(mode, "batch"))
        return batch(argc > 2 ? atol(argv[2]) : 1000);
    if (!strcmp(mode, "many"))
        return many(argc > 2 ? atoi(argv[2]) : 100);
    if (!strcmp(mode, "stale") || !strcmp(mode, "stale-del-first"))
        return stale(!strcmp(mode, "stale-del-first"));
    if (!strncmp(mode, "shared-ring", 11) || !strncmp(mode, "ring-", 5) || !strcmp(mode, "own"))
        return ring_modes(mode);
    int op = !strcmp(mode, "child-add") ? EPOLL_CTL_ADD
             : !strcmp(mode, "child-mod") ? EPOLL_CTL_MOD
                                          : EPOLL_CTL_DEL;
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        if (!strcmp(mode, "closeonly")) {
            ring_close(&R);
            close(ep);
        } else {
            child_change(op, !strcmp(mode, "child-del-shared"));
        }
        _exit(0);
    }
    reap(c);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    printf("parent ring fd %d epoll fd %d pipe %d\n", ring_fd(&R), ep, p[0]);
    return 0;
}
