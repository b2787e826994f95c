/*
 * init.c - start-up: once-init callable from any wrapper, the atfork handlers,
 * and the exported epollfork_* API.
 *
 * Another library's constructor can call close() or epoll_create() before our
 * constructor runs, so every wrapper calls ef_ensure_init(), and the real
 * function table works (with syscall fallbacks) before init finishes.  Init is
 * cheap on purpose: every exec'd process pays it, epoll or not (resolving the
 * real functions, reading EPOLLFORK_* once, registering atfork handlers, and
 * one dup of fd 2: the stderr sink must be the stderr the process started with,
 * not whatever the program has made of fd 2 by its first epoll call).  The
 * shared registry, the log file and libunwind wait for the first epoll
 * instance (hold.c, log.c, stack.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rules.h"

_Atomic int ef_init_state;

/* errno is restored only if it changed: a write to a page after a fork is a
 * copy-on-write fault, and these run on every fork. */
static void on_prepare(void)
{
    int e = errno;
    ef_on_fork_prepare();
    ef_uring_on_fork_prepare();
    if (errno != e)
        errno = e;
}

void ef_init(void)
{
    int st = 0;
    if (!atomic_compare_exchange_strong(&ef_init_state, &st, 1))
        return; /* done, or running (recursion, another thread): use the fallbacks */
    int saved = errno;
    ef_real_resolve();
    char err[4096];
    ef_options_parse(NULL, err, sizeof err);
    /* One notice per complaint, in the configured format, before anything
     * else happens (the sink is not set up yet: they go to fd 2, the stderr
     * the program started with). */
    for (char *p = err, *nl; *p; p = nl + 1) {
        nl = strchr(p, '\n');
        if (!nl)
            break;
        *nl = 0;
        ef_log_notice("%s", p);
    }
    if (ef_opt.secure) {
        /* A setuid program that becomes root and execs a helper must not
         * hand the caller's file and socket names on to it (glibc removes
         * LD_PRELOAD the same way). */
        unsetenv("EPOLLFORK_LOG");
        unsetenv("EPOLLFORK_SUPPRESSIONS");
    }
    if (!ef_opt.disable) {
        ef_suppressions_load(ef_opt.suppressions);
        ef_journal_init(); /* EPOLLFORK_LOG=journal: join log.c's hooks before its set-up */
        /* Prepare only.  No child handler: every page of code a fork child
         * runs is a page fault in that child (bench/RESULTS.md), and its
         * bookkeeping waits for its first epoll event (hold.c); the parent
         * has nothing left to do after the fork but what our fork wrapper
         * does with the child's pid. */
        pthread_atfork(on_prepare, NULL, NULL);
        ef_startup_scan(); /* epoll fds inherited through an exec we did not see */
    }
    errno = saved;
    atomic_store_explicit(&ef_init_state, 2, memory_order_release);
}

__attribute__((constructor)) static void ef_constructor(void)
{
    ef_init();
}

__attribute__((destructor)) static void ef_destructor(void)
{
    int e = errno;
    if (!ef_opt.disable) {
        ef_uring_on_exit();
        ef_on_exit();
        ef_report_totals();
    }
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
