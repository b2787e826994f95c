/*
 * guard.c - who is running shim code right now.
 *
 * Two facts every layer needs and no single rule owns.  The re-entry guard
 * (ef_in_shim, per thread): libunwind calls close() and pipe2() through the
 * PLT while we unwind (it opens a validation pipe on first use), and a signal
 * handler can interrupt a report and call epoll_ctl; our wrappers must let the
 * first through (their fds are ours) and must not start a second report in
 * the second.  It is taken with EF_GUARD_SCOPE() (ef.h), which gives it back
 * when the block ends, on every path.  And the vforks in flight: a vfork child
 * shares our memory until it execs, so while one is in flight a wrapper must
 * check that it runs in the process the state belongs to before writing
 * (vfork_x86_64.S counts them; tests/scenarios/spawners.c is the proof).
 */
#include "ef.h"

EF_TLS int ef_in_shim;
EF_HOT _Atomic int ef_vfork_depth;
EF_TLS uintptr_t ef_vfork_ret;
EF_HOT pid_t ef_owner_pid;

EF_HOT_TEXT int ef_in_vfork_child(void)
{
    /* owner not known yet: cannot tell a thread of ours from a vfork
     * child, so leave the memory alone in both */
    return EF_UNLIKELY(atomic_load_explicit(&ef_vfork_depth, memory_order_relaxed)) &&
           (!ef_owner_pid || ef_sys_getpid() != ef_owner_pid);
}
