/*
 * thread_churn.c MODE - threads churn epoll fds while other threads fork.
 *
 * Three churn threads loop: epoll_create1 (with and without EPOLL_CLOEXEC) or
 * epoll_create, a pipe and an eventfd, ADD both, MOD, write, epoll_wait(0),
 * DEL, sometimes a dup/dup2/fcntl alias of the epoll fd, close everything.
 * Two forker threads and the main thread fork in a loop; each child exits at
 * once, in one of several ways: _exit(0), exit(0), close every fd up to 1024
 * then _exit, close_range(3, ~0U, 0) then exit, closefrom(3) then _exit.
 * Every child is reaped by the thread that forked it; at the end the program
 * checks that no child is left (waitpid(-1) fails with ECHILD) and prints
 * "forks=N".  The run is bounded: a fixed number of iterations and a 1.5 s cap.
 *   churn    nobody edits a list another process uses: silent
 *   shared   in addition, an instance S made before the threads is inherited by
 *            every child; some children DEL (or re-ADD) S's pipe and exit, and
 *            the churn threads poll S with epoll_wait(0): reports (the children's
 *            edits, seen by the parent or by a sibling's epoll_ctl), at most one
 *            per call site of child_edits, and never a crash
 */
#include "scen.h"
#include <pthread.h>
#include <stdatomic.h>
#include <sys/eventfd.h>

#define CHURN_THREADS 3
#define FORK_THREADS 2
#define FORKS_PER_THREAD 150
#define CHURN_ITERS 4000

static int shared_mode;
static int S = -1, sp[2];
static _Atomic int forks_done, stop;
static struct timespec t0;

static double elapsed(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0.tv_sec) + (double)(t.tv_nsec - t0.tv_nsec) / 1e9;
}

/* What a child does to the shared instance in shared mode (two call sites). */
static void child_edits(void)
{
    if (epoll_ctl(S, EPOLL_CTL_DEL, sp[0], NULL) != 0) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = sp[0]};
        epoll_ctl(S, EPOLL_CTL_ADD, sp[0], &ev);
    }
}

static void child_body(int kind)
{
    if (shared_mode && kind % 3 == 0)
        child_edits();
    switch (kind % 5) {
    case 0:
        _exit(0);
    case 1:
        exit(0);
    case 2:
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        _exit(0);
    case 3:
        if (close_range(3, ~0U, 0) != 0)
            _exit(98);
        exit(0);
    default:
        closefrom(3);
        _exit(0);
    }
}

static void fork_loop(int seed)
{
    for (int i = 0; i < FORKS_PER_THREAD && !atomic_load(&stop); i++) {
        pid_t c = fork();
        CHECK(c >= 0);
        if (c == 0)
            child_body(seed + i);
        int st = reap(c);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        atomic_fetch_add(&forks_done, 1);
        if (elapsed() > 1.5)
            break;
    }
}

static void *forker(void *arg)
{
    fork_loop((int)(long)arg);
    return NULL;
}

static void *churner(void *arg)
{
    int id = (int)(long)arg;
    struct epoll_event out[4];
    for (int i = 0; i < CHURN_ITERS && !atomic_load(&stop); i++) {
        int ep;
        if (i % 3 == 0)
            ep = epoll_create1(EPOLL_CLOEXEC);
        else if (i % 3 == 1)
            ep = epoll_create1(0);
        else
            ep = epoll_create(8);
        CHECK(ep >= 0);
        int p[2];
        CHECK(pipe(p) == 0);
        int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        CHECK(efd >= 0);
        add_fd(ep, p[0], EPOLLIN);
        add_fd(ep, efd, EPOLLIN);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u64 = (uint64_t)i};
        CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, efd, &ev) == 0);
        uint64_t one = 1;
        CHECK(write(efd, &one, sizeof one) == sizeof one);
        CHECK(epoll_wait(ep, out, 4, 0) >= 0);
        if (shared_mode && i % 16 == id)
            CHECK(epoll_wait(S, out, 4, 0) >= 0);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
        int alias = -1;
        if (i % 4 == 1)
            alias = dup(ep);
        else if (i % 4 == 2)
            alias = fcntl(ep, F_DUPFD_CLOEXEC, 100 + id * 10);
        if (alias >= 0) {
            CHECK(epoll_wait(alias, out, 4, 0) >= 0);
            CHECK(close(alias) == 0);
        }
        if (i % 2)
            CHECK(close(ep) == 0);
        CHECK(close(p[0]) == 0 && close(p[1]) == 0);
        CHECK(close(efd) == 0);
        if (!(i % 2))
            CHECK(close(ep) == 0);
        if ((i & 63) == 0 && elapsed() > 1.5)
            break;
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "churn";
    shared_mode = !strcmp(mode, "shared");
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (shared_mode) {
        CHECK(pipe(sp) == 0);
        S = epoll_create1(0);
        CHECK(S >= 0);
        add_fd(S, sp[0], EPOLLIN);
    }
    pthread_t ct[CHURN_THREADS], ft[FORK_THREADS];
    for (long i = 0; i < CHURN_THREADS; i++)
        CHECK(pthread_create(&ct[i], NULL, churner, (void *)i) == 0);
    for (long i = 0; i < FORK_THREADS; i++)
        CHECK(pthread_create(&ft[i], NULL, forker, (void *)(i * 7 + 1)) == 0);
    fork_loop(3);
    for (int i = 0; i < FORK_THREADS; i++)
        CHECK(pthread_join(ft[i], NULL) == 0);
    atomic_store(&stop, 1);
    for (int i = 0; i < CHURN_THREADS; i++)
        CHECK(pthread_join(ct[i], NULL) == 0);
    if (shared_mode) {
        struct epoll_event out;
        CHECK(epoll_wait(S, &out, 1, 0) >= 0);
    }
    CHECK(waitpid(-1, NULL, WNOHANG) == -1 && errno == ECHILD); /* no zombie, no child left */
    printf("forks=%d\n", atomic_load(&forks_done));
    return 0;
}
