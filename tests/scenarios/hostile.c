/*
 * hostile.c - a process of the tree that writes garbage into the registry the
 * tree shares, as a process that dropped privileges and runs arbitrary code
 * could.  The other processes must survive it: no crash, no hang, no lasting
 * slowdown; false or missing reports are all such a process can cause.
 *
 * The registry is found the way an attacker would: the shim's memfd, named in
 * /proc/self/fd, opened again through its link and mapped whole.  Its layout
 * comes from src/ef.h (this is our own test).
 *
 * Usage: hostile MODE; prints "ok" and exits 0 when the parent survived.
 *   depot-counter   the frame-store counter pushed near 2^32, then new stacks and forks
 *   depot-slot      a ready depot slot pointed out of range (and at the very end)
 *   dead-writer     a holder bumps gen, marks its ring entry as being written, dies
 *   free-list       the instance free list pointed at nonsense
 *   proc-table      process records that loop and point nowhere
 *   gen-huge        the change generation pushed near 2^64 with a garbage ring
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ef.h"

#define MAGIC 0x6570666f726b3032ull

/* The whole registry file, as an attacker maps it: the memfd the shim keeps
 * (its link names it), mapped from end to end. */
static char *base;

static uint64_t table_offset(enum ef_table t)
{
    uint64_t off = (sizeof(struct ef_registry) + 4095) & ~4095ull;
    for (int k = 0; k < (int)t; k++)
        off += ((uint64_t)ef_table_shapes[k].elem * ef_table_shapes[k].count + 4095) & ~4095ull;
    return off;
}

static void *elem(enum ef_table t, uint32_t i)
{
    return base + table_offset(t) + (uint64_t)i * ef_table_shapes[t].elem;
}

static struct ef_registry *find_registry(void)
{
    char link[256], path[64];
    for (int fd = 3; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n <= 0)
            continue;
        link[n] = 0;
        if (!strstr(link, "memfd:epollfork-registry"))
            continue;
        /* the shim hides its fd from us (EBADF): open the link instead */
        int again = open(path, O_RDWR);
        if (again < 0)
            continue;
        void *m = mmap(NULL, table_offset(EF_NTABLES), PROT_READ | PROT_WRITE, MAP_SHARED, again, 0);
        close(again);
        if (m != MAP_FAILED && *(unsigned long long *)m == MAGIC) {
            base = m;
            return m;
        }
    }
    return NULL;
}

/* The instance our epoll fd maps to: the live one owned by `owner`. */
static struct ef_inst *instance_of(struct ef_registry *r, int owner)
{
    uint32_t hw = atomic_load(&r->ninst_hw);
    for (uint32_t i = 1; i < hw && i < EF_MAX_INST; i++) {
        struct ef_inst *in = elem(EF_T_INST, i);
        if (atomic_load(&in->state) == EF_INST_LIVE && in->owner_pid == owner)
            return in;
    }
    return NULL;
}

static int ep, p[2], q[2];

__attribute__((noinline)) static void add_from_a_new_site(int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void child_deletes(void)
{
    epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL);
    __asm__ volatile("" ::: "memory");
}

static void run_child(void (*fn)(struct ef_registry *), struct ef_registry *r)
{
    pid_t c = fork();
    if (c == 0) {
        fn(r);
        _exit(0);
    }
    int st;
    waitpid(c, &st, 0);
}

static void wait_once(void)
{
    struct epoll_event out;
    epoll_wait(ep, &out, 1, 0);
}

static int parent;

static void corrupt_counter(struct ef_registry *r)
{
    atomic_store(&r->depot_frames_used, 0xfffffff0u);
    add_from_a_new_site(q[0]); /* a new stack: the depot must refuse it cleanly */
}

static void corrupt_slots(struct ef_registry *r)
{
    struct ef_inst *in = instance_of(r, parent);
    if (!in)
        return;
    uint32_t id = in->create_stack;
    if (id && id <= EF_DEPOT_SLOTS) {
        struct ef_depot_slot *d = elem(EF_T_DEPOT, id - 1);
        d->start = 0xffffff00u; /* far past the frame store */
        d->n = 60;
    }
    /* every other ready slot: the last frame and one more, or across chunks */
    for (uint32_t s = 0; s < EF_DEPOT_SLOTS; s++) {
        struct ef_depot_slot *d = elem(EF_T_DEPOT, s);
        if (atomic_load(&d->state) == EF_DEPOT_READY && s + 1 != id) {
            d->start = s % 2 ? EF_DEPOT_FRAMES - 1 : (1u << ef_table_shapes[EF_T_FRAMES].shift) - 1;
            d->n = 2;
        }
    }
    child_deletes();
}

static void die_while_writing(struct ef_registry *r)
{
    struct ef_inst *in = instance_of(r, parent);
    if (!in)
        _exit(3);
    uint64_t g = atomic_fetch_add(&in->gen, 1) + 1;
    atomic_store(&in->ring[g % EF_RING].seq, g | (1ull << 63));
    raise(SIGKILL);
}

static void corrupt_free_list(struct ef_registry *r)
{
    atomic_store(&r->free_head, 0x12345678ffffffffull);
    for (uint32_t i = 0; i < EF_MAX_INST; i += 7)
        atomic_store(&r->inst_next[i], 0xdeadbeefu);
}

static void corrupt_procs(struct ef_registry *r)
{
    atomic_store(&r->nproc, 0xffffffffu);
    for (uint32_t i = 0; i < EF_MAX_PROC; i++) {
        struct ef_process *p_ = elem(EF_T_PROCS, i);
        p_->parent = i;                    /* loops on itself */
        p_->depth = 0xffffffffu - i;
        p_->fork_stack = 0xfffffff0u;
    }
    child_deletes();
}

static void corrupt_gen(struct ef_registry *r)
{
    struct ef_inst *in = instance_of(r, parent);
    if (!in)
        return;
    atomic_store(&in->gen, ~0ull - 3);
    for (int i = 0; i < EF_RING; i++) {
        memset((char *)&in->ring[i] + sizeof in->ring[i].seq, 0xa5,
               sizeof in->ring[i] - sizeof in->ring[i].seq);
        atomic_store(&in->ring[i].seq, ~0ull - 3 - (uint64_t)i);
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    parent = getpid();
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (pipe(p) || pipe(q))
        return 2;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    struct ef_registry *r = find_registry();
    if (!r) {
        printf("no registry\n");
        return 2;
    }
    if (!strcmp(mode, "depot-counter")) {
        run_child(corrupt_counter, r);
        for (int i = 0; i < 3; i++) { /* forks capture stacks; so does a new site */
            pid_t c = fork();
            if (c == 0)
                _exit(0);
            waitpid(c, NULL, 0);
        }
        add_from_a_new_site(q[1]);
        wait_once();
    } else if (!strcmp(mode, "depot-slot")) {
        run_child(corrupt_slots, r);
        wait_once(); /* the report of the child's DEL renders every stack */
    } else if (!strcmp(mode, "dead-writer")) {
        run_child(die_while_writing, r);
        wait_once(); /* waits for the dead writer once, briefly */
        double t0 = now();
        for (int i = 0; i < 20000; i++)
            wait_once();
        printf("20000 waits after the dead writer: %.3f s\n", now() - t0);
        run_child((void (*)(struct ef_registry *))child_deletes, r);
        wait_once();
    } else if (!strcmp(mode, "free-list")) {
        run_child(corrupt_free_list, r);
        for (int i = 0; i < 20; i++) {
            int e = epoll_create1(0);
            add_from_a_new_site(e);
            close(e);
        }
        wait_once();
    } else if (!strcmp(mode, "proc-table")) {
        run_child(corrupt_procs, r);
        wait_once();
        pid_t c = fork(); /* a fork after: records are full of nonsense */
        if (c == 0)
            _exit(0);
        waitpid(c, NULL, 0);
    } else if (!strcmp(mode, "gen-huge")) {
        run_child(corrupt_gen, r);
        wait_once();
        wait_once();
    } else {
        fprintf(stderr, "usage: hostile MODE\n");
        return 2;
    }
    printf("ok\n");
    return 0;
}
