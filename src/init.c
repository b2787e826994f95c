/*
 * init.c - start-up: once-init callable from any wrapper, the atfork handlers,
 * and the exported epollfork_* API.
 *
 * Another library's constructor can call close() or epoll_create() before our
 * constructor runs, so every wrapper calls ef_ensure_init(), and the real
 * function table works (with syscall fallbacks) before init finishes.  Init is
 * cheap on purpose: every exec'd process pays it, epoll or not (resolving the
 * real functions, reading EPOLLFORK_* once, and the scan for inherited epoll
 * fds); bench/RESULTS.md counts it, in instructions, system calls and pages.
 * The shared registry, the stderr copy, the log file and libunwind wait for
 * the first epoll instance (hold.c, log.c, stack.c), and so does the atfork
 * handler: registering it touches two pages of libc and one of ours, and it
 * has nothing to do in a process that never tracked anything, except at a
 * fork() it makes itself, which our fork wrapper sees and registers it for
 * first.  (A fork inside libc, daemon() or forkpty(), in a process that has
 * not used epoll yet, is therefore not seen: its child starts a tree of its
 * own; README, limits.)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules.h"

EF_HOT _Atomic int ef_init_state;
EF_HOT static _Atomic int atfork_state; /* 0 not registered, 1 registered */

/* errno is restored only if it changed: a write to a page after a fork is a
 * copy-on-write fault, and these run on every fork. */
EF_INIT_TEXT static void on_prepare(void)
{
    int e = errno;
    ef_on_fork_prepare();
    ef_uring_on_fork_prepare();
    if (errno != e)
        errno = e;
}

/* What pthread_atfork() does (glibc's libc_nonshared.a): called directly,
 * because that stub sits at the far end of our text, a page the process
 * would fault in only for it. */
extern int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void),
                             void *dso);
extern void *__dso_handle __attribute__((visibility("hidden")));

EF_INIT_TEXT void ef_atfork_register(void)
{
    int expect = 0;
    if (atomic_load_explicit(&atfork_state, memory_order_relaxed) ||
        !atomic_compare_exchange_strong(&atfork_state, &expect, 1))
        return;
    /* Prepare only.  No child handler: every page of code a fork child
     * runs is a page fault in that child (bench/RESULTS.md), and its
     * bookkeeping waits for its first epoll event (hold.c); the parent
     * has nothing left to do after the fork but what our fork wrapper
     * does with the child's pid. */
    __register_atfork(on_prepare, NULL, NULL, __dso_handle);
}

/* The options, and one notice per complaint, in the configured format,
 * before anything else happens (the sink is not set up yet: they go to fd 2,
 * the stderr the program started with).  A frame of its own: the start-up
 * scan reuses its 4 KiB of stack (a page below the loader's deepest frame
 * is a page fault). */
EF_INIT_TEXT __attribute__((noinline)) static void init_options(void)
{
    char err[4096];
    ef_options_parse(NULL, err, sizeof err);
    if (!err[0])
        return;
    int e = errno;
    for (char *p = err, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        ef_log_notice("%s", p);
    }
    errno = e;
}

EF_INIT_TEXT void ef_init(void)
{
    int st = 0;
    if (!atomic_compare_exchange_strong(&ef_init_state, &st, 1))
        return; /* done, or running (recursion, another thread): use the fallbacks */
    /* errno is read only where something may change it: the first use of
     * errno in a process is a lazy binding of __errno_location (~700
     * instructions) and a page of stack, and most processes never get there */
    ef_real_resolve(); /* keeps errno itself */
    init_options();
    if (ef_opt.secure) {
        /* A setuid program that becomes root and execs a helper must not
         * hand the caller's file and socket names on to it (glibc removes
         * LD_PRELOAD the same way). */
        int e = errno;
        unsetenv("EPOLLFORK_LOG");
        unsetenv("EPOLLFORK_SUPPRESSIONS");
        errno = e;
    }
    if (!ef_opt.disable) {
        if (ef_opt.suppressions[0]) {
            int e = errno;
            ef_suppressions_load(ef_opt.suppressions);
            errno = e;
        }
        ef_journal_init(); /* EPOLLFORK_LOG=journal: join log.c's hooks before its set-up */
        ef_track_started_hook = ef_atfork_register;
        /* epoll fds inherited through an exec we did not see */
        if (ef_startup_scan()) {
            int e = errno;
            ef_startup_judge();
            errno = e;
        }
    }
    atomic_store_explicit(&ef_init_state, 2, memory_order_release);
}

/* DT_FINI (the Makefile's -fini): crti's _fini does nothing either, but sits
 * at the far end of .text, a page the process would fault in at exit. */
EF_INIT_TEXT void ef_fini(void);
EF_INIT_TEXT void ef_fini(void)
{
}

/* glibc calls constructors with the program's arguments: the main thread's
 * frames all lie below them (stack.c keeps copies of the stack up to there). */
__attribute__((constructor)) static void ef_constructor(int argc, char **argv, char **envp)
{
    (void)argc, (void)envp;
    ef_stack_set_main_top((uintptr_t)argv);
    ef_init();
}

__attribute__((destructor)) static void ef_destructor(void)
{
    if (ef_opt.disable)
        return;
    /* A process that tracked nothing and reported nothing has nothing to do
     * here, and does not touch errno (its first use is a lazy binding) */
    /* errno is read only when something will be written: its first use is a
     * lazy binding, which writes our GOT (a copy-on-write fault after a
     * fork); ef_on_exit() leaves it alone */
    ef_on_exit();
    struct ef_counts c = ef_report_counts();
    if (!ef_opt.debug && !c.reports && !c.suppressed && !c.deduped)
        return;
    int e = errno;
    ef_uring_on_exit();
    ef_report_totals();
    errno = e;
}

__attribute__((visibility("default"))) const char *epollfork_version(void)
{
    return EF_VERSION;
}

__attribute__((visibility("default"))) unsigned long epollfork_report_count(void)
{
    return ef_report_count();
}

__attribute__((visibility("default"))) int epollfork_allow_shared(int epfd)
{
    ef_ensure_init();
    if (ef_opt.disable)
        return 0;
    int e = errno;
    int r = ef_allow_shared(epfd);
    errno = e;
    return r;
}
