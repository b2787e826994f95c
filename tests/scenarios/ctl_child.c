/*
 * ctl_child.c MODE - a forked child does MODE to the inherited epoll instance,
 * exits, and then the parent uses the instance (epoll_wait with timeout 0).
 *
 * Conflicts (one report, by the parent at its wait):
 *   add, mod, del               the child edits the shared list
 *   rawfork-del, underscore-del the same through syscall(SYS_fork) / _Fork()
 *   pwait-del, pwait2-del        the parent's use is epoll_pwait / epoll_pwait2
 *   ctl-del                      the parent's use is an epoll_ctl
 *   signal-del    the child deletes from a signal handler (a stack that only
 *                 libunwind walks: the signal frame)
 *   reaped-del    first 100 children that _exit() at once (their holder slots
 *                 must come back, their process record is reused), then one
 *                 that deletes; it prints "deleter N", its pid
 * Silent:
 *   closeonly     the child only closes the inherited epoll fd
 *   newepoll      the child closes it and gets a new epoll at the same number
 *   dup2private   the child dup2()s a private epoll over the inherited number
 *   closerange    the child calls close_range(3, ~0U, 0) and then makes its own
 *   closefrom     the child calls closefrom(3) and then makes its own
 *   closeall      the child closes every fd from 3 to 4095 with close()
 *   parentonly    the child never touches epoll; the parent keeps editing
 *   childonly     the parent never uses the list again after the fork
 */
#include "scen.h"
#include <sys/syscall.h>

static int p[2], q[2], ep;

static void child_change(const char *mode)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLET, .data.fd = q[0]};
    if (!strcmp(mode, "add"))
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev) == 0);
    else if (!strcmp(mode, "mod")) {
        ev.events = EPOLLOUT | EPOLLONESHOT;
        ev.data.fd = p[0];
        CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev) == 0);
    } else
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
}

static void own_loop(void)
{
    /* what a correct child does: a private instance, used for real */
    int mine = epoll_create1(EPOLL_CLOEXEC);
    CHECK(mine >= 0);
    add_fd(mine, q[0], EPOLLIN);
    struct epoll_event out;
    CHECK(epoll_wait(mine, &out, 1, 0) >= 0);
    CHECK(epoll_ctl(mine, EPOLL_CTL_DEL, q[0], NULL) == 0);
}

static void on_usr1(int sig)
{
    (void)sig;
    child_change("del");
}

static void child(const char *mode)
{
    if (!strcmp(mode, "signal-del")) {
        /* the DEL made in a signal handler: its stack crosses the signal
         * frame, which only libunwind walks */
        signal(SIGUSR1, on_usr1);
        raise(SIGUSR1);
    } else if (!strcmp(mode, "closeonly")) {
        CHECK(close(ep) == 0);
    } else if (!strcmp(mode, "newepoll")) {
        int old = ep;
        CHECK(close(ep) == 0);
        ep = epoll_create1(0);
        CHECK(ep == old);
        add_fd(ep, p[0], EPOLLIN);
        add_fd(ep, q[0], EPOLLIN);
        struct epoll_event out;
        CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
    } else if (!strcmp(mode, "dup2private")) {
        int mine = epoll_create1(0);
        CHECK(dup2(mine, ep) == ep);
        CHECK(close(mine) == 0);
        add_fd(ep, q[0], EPOLLIN);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, q[0], NULL) == 0);
    } else if (!strcmp(mode, "closerange")) {
        CHECK(close_range(3, ~0U, 0) == 0);
        CHECK(pipe(q) == 0);
        own_loop();
    } else if (!strcmp(mode, "closefrom")) {
        closefrom(3);
        CHECK(pipe(q) == 0);
        own_loop();
    } else if (!strcmp(mode, "closeall")) {
        for (int fd = 3; fd < 4096; fd++)
            close(fd);
        CHECK(pipe(q) == 0);
        own_loop();
    } else if (!strcmp(mode, "parentonly")) {
        own_loop();
    } else if (!strcmp(mode, "childonly")) {
        for (int i = 0; i < 50; i++) {
            child_change(i % 2 ? "add" : "del");
            struct epoll_event out;
            CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
        }
    } else {
        child_change(strchr(mode, '-') ? strchr(mode, '-') + 1 : mode);
    }
}

/* A child that exits at once, reaped: its process record is taken again by
 * the next fork (src/hold.c), which must then name its own stack and child. */
__attribute__((noinline)) static void fork_exit_reap(void)
{
    pid_t k = fork();
    CHECK(k >= 0);
    if (k == 0)
        _exit(0);
    reap(k);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "del";
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    if (!strcmp(mode, "reaped-del"))
        for (int i = 0; i < 100; i++)
            fork_exit_reap();
    pid_t c;
    if (!strncmp(mode, "rawfork", 7))
        c = (pid_t)syscall(SYS_fork);
    else if (!strncmp(mode, "underscore", 10))
        c = _Fork();
    else
        c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        if (!strcmp(mode, "reaped-del")) {
            printf("deleter %d\n", (int)getpid());
            fflush(stdout);
        }
        child(mode);
        if (!strncmp(mode, "rawfork", 7) || !strncmp(mode, "underscore", 10))
            _exit(0); /* no atexit handlers in a raw child */
        exit(0);
    }
    CHECK(WIFEXITED(reap(c)) );
    struct epoll_event out;
    if (!strcmp(mode, "childonly"))
        return 0;
    if (!strcmp(mode, "parentonly")) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
        CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev) == 0);
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
    }
    if (!strncmp(mode, "pwait2", 6)) {
        struct timespec ts = {0, 0};
        CHECK(epoll_pwait2(ep, &out, 1, &ts, NULL) >= 0);
    } else if (!strncmp(mode, "pwait", 5)) {
        CHECK(epoll_pwait(ep, &out, 1, 0, NULL) >= 0);
    } else if (!strncmp(mode, "ctl", 3)) {
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
        epoll_ctl(ep, EPOLL_CTL_MOD, q[0], &ev); /* may fail; it is a use either way */
    } else {
        CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    }
    return 0;
}
