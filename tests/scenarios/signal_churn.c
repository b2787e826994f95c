/*
 * signal_churn.c MODE - a signal handler closes and dups fds while the main
 * loop churns epoll (create, ADD, MOD, wait, DEL, close).
 *
 * Before the loop the program makes a long-lived instance L (a pipe
 * registered) and forks a child that only blocks reading a pipe until the end,
 * so L has crossed a fork and has two holders: the main loop's MODs on L are
 * recorded, and the handler's aliases of L change its alias count in the
 * middle of those records.  The handler (errno saved) does: dup(L) and close
 * it, fcntl(F_DUPFD_CLOEXEC) of L and close it, dup2 of its own pipe onto a
 * fixed number and close it, dup3 onto another, and a create+close of an epoll
 * fd; every call's result is checked (a failure sets a flag the main loop
 * reports).  The loop is bounded (20,000 iterations or 1 s) and prints
 * "signals=N" (N > 0 is checked).
 *   itimer   SIGALRM from setitimer(ITIMER_REAL, 200 us)
 *   thread   SIGUSR1 sent to the main thread by another thread, in a loop
 * Expected: rc 0, no report (nobody else uses a list the program changes).
 */
#include "scen.h"
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/time.h>

static int L, hp[2];
static volatile sig_atomic_t handler_failed, nsignals;
static _Atomic int stop;
static pthread_t main_thread;

static void handler(int sig)
{
    int e = errno;
    (void)sig;
    nsignals++;
    int d = dup(L);
    if (d < 0 || close(d) != 0)
        handler_failed = 1;
    d = fcntl(L, F_DUPFD_CLOEXEC, 500);
    if (d < 500 || close(d) != 0)
        handler_failed = 2;
    if (dup2(hp[0], 600) != 600 || close(600) != 0)
        handler_failed = 3;
    if (dup3(hp[1], 601, O_CLOEXEC) != 601 || close(601) != 0)
        handler_failed = 4;
    d = epoll_create1(EPOLL_CLOEXEC);
    if (d < 0 || close(d) != 0)
        handler_failed = 5;
    if (close(-1) != -1 || errno != EBADF)
        handler_failed = 6;
    errno = e;
}

static void *kicker(void *arg)
{
    (void)arg;
    while (!atomic_load(&stop)) {
        pthread_kill(main_thread, SIGUSR1);
        struct timespec ts = {0, 50000};
        nanosleep(&ts, NULL);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "itimer";
    int p[2], gate[2];
    CHECK(pipe(p) == 0 && pipe(hp) == 0 && pipe(gate) == 0);
    L = epoll_create1(0);
    CHECK(L >= 0);
    add_fd(L, p[0], EPOLLIN);
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        char b;
        close(gate[1]);
        while (read(gate[0], &b, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(gate[0]);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    pthread_t t;
    if (!strcmp(mode, "thread")) {
        CHECK(sigaction(SIGUSR1, &sa, NULL) == 0);
        main_thread = pthread_self();
        CHECK(pthread_create(&t, NULL, kicker, NULL) == 0);
    } else {
        CHECK(sigaction(SIGALRM, &sa, NULL) == 0);
        struct itimerval it = {{0, 200}, {0, 200}};
        CHECK(setitimer(ITIMER_REAL, &it, NULL) == 0);
    }

    struct timespec t0, now;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct epoll_event out[4];
    for (int i = 0; i < 20000; i++) {
        int ep = epoll_create1(i % 2 ? EPOLL_CLOEXEC : 0);
        CHECK(ep >= 0);
        int q[2];
        CHECK(pipe(q) == 0);
        add_fd(ep, q[0], EPOLLIN);
        struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.u32 = (uint32_t)i};
        CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, q[0], &ev) == 0);
        CHECK(epoll_ctl(L, EPOLL_CTL_MOD, p[0], &ev) == 0);
        /* a wait with a timeout may be interrupted: EINTR is a result too */
        int n = epoll_wait(ep, out, 4, i % 8 ? 0 : 1);
        CHECK(n >= 0 || errno == EINTR);
        n = epoll_wait(L, out, 4, 0);
        CHECK(n >= 0 || errno == EINTR);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, q[0], NULL) == 0);
        CHECK(close(q[0]) == 0 && close(q[1]) == 0);
        CHECK(close(ep) == 0);
        CHECK(!handler_failed);
        clock_gettime(CLOCK_MONOTONIC, &now);
        if ((now.tv_sec - t0.tv_sec) * 1000 + (now.tv_nsec - t0.tv_nsec) / 1000000 > 1000)
            break;
    }
    if (!strcmp(mode, "thread")) {
        atomic_store(&stop, 1);
        CHECK(pthread_join(t, NULL) == 0);
    } else {
        struct itimerval off = {{0, 0}, {0, 0}};
        CHECK(setitimer(ITIMER_REAL, &off, NULL) == 0);
    }
    CHECK(!handler_failed);
    CHECK(close(gate[1]) == 0);
    CHECK(WIFEXITED(reap(c)));
    printf("signals=%d\n", (int)nsignals);
    CHECK(nsignals > 0);
    return 0;
}
