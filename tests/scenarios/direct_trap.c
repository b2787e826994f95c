/*
 * direct_trap.c - which calls reach libc's own function.
 *
 * The shim makes epoll_ctl, eventfd, socket, socketpair, pipe2 and
 * timerfd_create as their system call when libc's definition is just that
 * (src/direct.h): one mispredicted return less after the kernel's.  To see
 * it without a debugger, each name's first instruction in libc is replaced
 * by ud2 for one call; the SIGILL handler puts the bytes back (the call then
 * goes on from there) and counts.  Bare, every call traps (the check itself
 * works); under the shim, none does, and the results are the same.  Each
 * name is called once before: the shim resolves a name at its first call
 * (src/real.c), and that call is libc's.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/timerfd.h>

#include "scen.h"

static unsigned char *target;
static unsigned char saved[2];
static volatile sig_atomic_t hits;

static void on_trap(int sig, siginfo_t *si, void *uc)
{
    (void)sig, (void)si, (void)uc;
    memcpy(target, saved, sizeof saved);
    hits++;
}

static void arm(const char *name)
{
    void *libc = dlopen("libc.so.6", RTLD_NOLOAD | RTLD_LAZY);
    CHECK(libc);
    target = dlsym(libc, name);
    CHECK(target);
    uintptr_t page = (uintptr_t)target & ~(uintptr_t)4095;
    CHECK(mprotect((void *)page, 8192, PROT_READ | PROT_WRITE | PROT_EXEC) == 0);
    memcpy(saved, target, sizeof saved);
    target[0] = 0x0f; /* ud2 */
    target[1] = 0x0b;
    hits = 0;
}

static void said(const char *name, long r)
{
    printf("%s: %s, libc's function ran: %s\n", name, r >= 0 ? "ok" : strerror(errno),
           hits ? "yes" : "no");
    fflush(stdout);
}

int main(void)
{
    struct sigaction sa = {.sa_sigaction = on_trap, .sa_flags = SA_SIGINFO};
    CHECK(sigaction(SIGILL, &sa, NULL) == 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    int sv[2], pp[2];

    for (int round = 0; round < 2; round++) {
        int armed = round == 1;
        if (armed)
            arm("eventfd");
        int e = eventfd(0, EFD_CLOEXEC);
        if (armed)
            said("eventfd", e);
        struct epoll_event ev = {.events = EPOLLIN};
        if (armed)
            arm("epoll_ctl");
        long r = epoll_ctl(ep, EPOLL_CTL_ADD, e, &ev);
        if (armed) {
            said("epoll_ctl ADD", r);
            arm("epoll_ctl");
        }
        r = epoll_ctl(ep, EPOLL_CTL_DEL, e, NULL);
        if (armed) {
            said("epoll_ctl DEL", r);
            arm("socket");
        }
        r = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (armed) {
            said("socket", r);
            arm("socketpair");
        }
        r = socketpair(AF_UNIX, SOCK_STREAM, 0, sv);
        if (armed) {
            said("socketpair", r);
            arm("pipe2");
        }
        r = pipe2(pp, O_CLOEXEC);
        if (armed) {
            said("pipe2", r);
            arm("timerfd_create");
        }
        r = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC);
        if (armed) {
            said("timerfd_create", r);
            arm("epoll_ctl");
        }
        r = epoll_ctl(-1, EPOLL_CTL_ADD, e, &ev);
        if (armed)
            said("epoll_ctl EBADF", r);
    }
    return 0;
}
