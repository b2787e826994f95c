/*
 * stack.c - cheap backtraces (libunwind) and a depot that stores each once.
 *
 * Stacks are captured on hot-ish paths (every EPOLL_CTL_ADD keeps its
 * registration stack) and printed rarely, so, like heaptrack, we record raw
 * return addresses only and leave names to symbolize.c at report time.
 *
 * libunwind is dlopen()ed RTLD_LOCAL on first need instead of linked: linking it
 * puts its unversioned _Unwind_* and weak backtrace() in the program's global
 * scope and changes how C++ exceptions unwind (tests/test_static.py
 * libunwind-is-not-a-dependency; docs/EVIDENCE.md).  Its first call costs
 * ~0.2 ms, so loading waits for the first epoll instance: a process that never
 * uses epoll never pays it.
 *
 * Unwinding in a fork child can hang for ever (libunwind's mutex and glibc's
 * dl_load_write_lock are inherited locked; docs/EVIDENCE.md).  So a child of a
 * multithreaded parent, where another thread may have held those locks, does
 * not unwind at all: it records the calling frame only, and reports say so.
 * In a single-threaded parent the only unwind that can be in flight at a fork
 * is one that a signal handler interrupted in the forking thread itself: a
 * thread-local flag tells, and that child does not unwind either.  (No global
 * counter: two locked instructions per capture cost more than the rest of an
 * EPOLL_CTL_ADD's bookkeeping, bench/RESULTS.md.)
 *
 * Three ways to a stack, cheapest first (bench/RESULTS.md, rounds 2 and 3):
 *
 * - Kept copies, while a process is young.  Most processes that use epoll
 *   never report anything (one that never forks, dups a registered fd or
 *   execs cannot), and the first walk of a call chain reads its objects'
 *   unwind tables, pages nothing else reads: a page fault each.  So a
 *   process's first captures (32, until it forks) keep what walking needs
 *   instead: the callee-saved registers, the program counter and the stack
 *   above the stack pointer (a C program's is a few KiB), copied into a
 *   private buffer, and hand out an id that names the copy (EF_PENDING |
 *   owner | slot).  When a report needs the stack (ef_depot_copy,
 *   ef_stack_python, and the keys that compare stacks through
 *   ef_stack_canon), the copy is walked from the unwind tables (cfi.c reads
 *   it at the stack's addresses), or by libunwind, loaded then, its pointers
 *   into the stack moved to the copy: the frames unw_backtrace would have
 *   given; the result goes to the depot, so the id stands for the same depot
 *   entry as a capture walked at once.  A fork child inherits the buffer, so
 *   either side can walk what was captured before the fork; a multithreaded
 *   process walks everything before it forks (its child must not).  A stack
 *   deeper than the buffer takes (16 KiB) or not on a stack we know the top
 *   of (a signal stack, a coroutine) is walked at once.
 * - The walk from the unwind tables (cfi.c), at once: no libunwind, no lock,
 *   and the thread's last walk is checked instead of walked again (its depot
 *   id kept here, last_walk).
 * - libunwind, for a stack with a frame the tables cannot walk (a signal
 *   frame, a realigned stack, code without tables), or every stack with
 *   EPOLLFORK_UNWIND=libunwind.  Loading it and its first unwind cost a
 *   process ~2 ms here (two libraries mapped and relocated, a 256 KiB trace
 *   cache written page by page: 90 page faults).
 *
 * Stacks are stored once, in the depot (depot.c), shared by the tree.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <sys/single_threaded.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "ef.h"

#define XSTR(x) STR(x)
#define STR(x) #x

static int (*p_backtrace)(void **, int);
/* p_backtrace while unwinding is allowed in this process (NULL otherwise):
 * wrappers call it from their own frame (ef_capture_here in ef.h). */
EF_HOT int (*ef_bt)(void **, int);
/* cfi.c's walk may run here: not in a child where _dl_find_object's state
 * may have been copied in the middle of another thread's dlopen. */
EF_HOT int ef_walk_ok = 1;
EF_TLS int ef_unwinding;
enum uw_state { UW_UNTRIED = 0, UW_LOADING, UW_READY, UW_UNAVAILABLE };
EF_HOT static _Atomic int uw_state;        /* enum uw_state */
EF_HOT static uintptr_t shim_lo, shim_hi;  /* our own text, never shown */
EF_HOT static int drain_failed;            /* the forking thread was (a signal handler) */
static int (*p_init_local)(unw_cursor_t *, unw_context_t *);
static int (*p_step)(unw_cursor_t *);
static int (*p_get_reg)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
EF_HOT static int unsafe_child;            /* see the paragraph on top */
EF_HOT static int ever_mt;

/* Our own object's mapping (_dl_find_object takes no lock). */
static void find_shim_range(void)
{
    struct dl_find_object fo;
    if (_dl_find_object((void *)&find_shim_range, &fo) != 0)
        return;
    shim_lo = (uintptr_t)fo.dlfo_map_start;
    shim_hi = (uintptr_t)fo.dlfo_map_end;
}

int ef_pc_in_shim(uintptr_t pc)
{
    if (EF_UNLIKELY(!shim_hi))
        find_shim_range();
    return pc >= shim_lo && pc < shim_hi;
}

static void load_unwind(int warm)
{
    int expect = UW_UNTRIED;
    if (!atomic_compare_exchange_strong(&uw_state, &expect, UW_LOADING)) {
        /* Another thread is loading: do not wait for it (we may be in a
         * signal handler that interrupted it). */
        return;
    }
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        h = dlopen("libunwind.so", RTLD_NOW | RTLD_LOCAL);
    void *bt = h ? dlsym(h, "unw_backtrace") : NULL;
    if (!bt) {
        atomic_store(&uw_state, UW_UNAVAILABLE);
        if (ef_notice_once(EF_NOTICE_NO_UNWIND))
            ef_log_notice("epollfork: libunwind.so.8 could not be loaded (%s); stacks will show "
                          "the calling frame only", h ? "no unw_backtrace" : dlerror());
        return;
    }
    int (*set_policy)(unw_addr_space_t, unw_caching_policy_t) =
        (int (*)(unw_addr_space_t, unw_caching_policy_t))dlsym(h, XSTR(unw_set_caching_policy));
    unw_addr_space_t *as = (unw_addr_space_t *)dlsym(h, XSTR(unw_local_addr_space));
    p_init_local = (int (*)(unw_cursor_t *, unw_context_t *))dlsym(h, XSTR(unw_init_local));
    p_step = (int (*)(unw_cursor_t *))dlsym(h, XSTR(unw_step));
    p_get_reg = (int (*)(unw_cursor_t *, unw_regnum_t, unw_word_t *))dlsym(h, XSTR(unw_get_reg));
    /* libunwind opens a pipe on first use (address validation): the guard
     * makes our pipe2 wrapper move it out of the program's fd numbers. */
    {
        EF_GUARD_SCOPE();
        if (set_policy && as)
            set_policy(*as, UNW_CACHE_PER_THREAD);
        p_backtrace = (int (*)(void **, int))bt;
        void *first[8];
        if (warm)
            p_backtrace(first, 8); /* the first call costs ~0.2 ms: pay it here, once */
    }
    if (!unsafe_child)
        ef_bt = p_backtrace;
    atomic_store(&uw_state, UW_READY);
}

/* Frames a stack keeps (EPOLLFORK_STACK_DEPTH). */
static int stack_max(void)
{
    return ef_opt.stack_depth > 0 && ef_opt.stack_depth <= EF_MAX_FRAMES ? ef_opt.stack_depth
                                                                        : EF_MAX_FRAMES;
}

/* Keep the frames raw[0..n) that are not the shim's (and one more for
 * EF_SKIP_SHIM_AND_ONE), at most max; their count. */
static uint32_t keep(uintptr_t *pcs, int max, enum ef_skip skip, void *const *raw, int n)
{
    int i = 0;
    while (i < n && ef_pc_in_shim((uintptr_t)raw[i]))
        i++;
    if (skip == EF_SKIP_SHIM_AND_ONE && i < n)
        i++;
    uint32_t k = 0;
    for (; i < n && (int)k < max; i++)
        pcs[k++] = (uintptr_t)raw[i];
    return k;
}

static uint32_t take(uintptr_t *pcs, int max, enum ef_skip skip, void *caller, enum ef_cut *cut)
{
    *cut = EF_CUT_NONE;
    if (!__libc_single_threaded)
        ever_mt = 1;
    uint32_t k;
    if (atomic_load_explicit(&uw_state, memory_order_acquire) == UW_UNTRIED)
        load_unwind(1);
    if (unsafe_child)
        *cut = EF_CUT_UNSAFE_CHILD;
    else if (atomic_load_explicit(&uw_state, memory_order_acquire) != UW_READY)
        *cut = EF_CUT_NO_UNWINDER;
    else if (ef_unwinding)
        *cut = EF_CUT_REENTRY;
    if (*cut != EF_CUT_NONE) {
        pcs[0] = (uintptr_t)caller;
        return 1;
    }
    /* our own frames (at most a few) plus the frames wanted: libunwind walks
     * only as far as asked */
    void *raw[EF_MAX_FRAMES + 16];
    int want = max + 16 < (int)(sizeof raw / sizeof raw[0]) ? max + 16 : (int)(sizeof raw / sizeof raw[0]);
    int n;
    {
        EF_GUARD_SCOPE();
        ef_unwinding = 1;
        n = p_backtrace(raw, want);
        ef_unwinding = 0;
    }
    k = keep(pcs, max, skip, raw, n);
    if (!k) {
        pcs[0] = (uintptr_t)caller;
        k = 1;
    }
    return k;
}

const char *ef_cut_why(enum ef_cut cut)
{
    switch (cut) {
    case EF_CUT_UNSAFE_CHILD:
        return "only the calling frame: unwinding in a child of a multithreaded parent can hang";
    case EF_CUT_NO_UNWINDER:
        return "only the calling frame: libunwind could not be loaded, or was given up";
    case EF_CUT_REENTRY:
        return "only the calling frame: a signal handler interrupted the shim's own unwinding";
    default:
        return NULL;
    }
}

static EF_TLS enum ef_cut last_cut;


/* The Python stack of the calling thread (pyframes.c), stored once; the last
 * one this thread stored is remembered by its key, so that a registration
 * made again and again from the same Python lines costs a walk of the frame
 * chain and no string work (bench/RESULTS.md, Python churn). */
static EF_TLS uint64_t py_key;
static EF_TLS uint32_t py_id;
static EF_TLS const struct ef_registry *py_reg;

/* The depot id of the calling thread's Python stack, 0 none. */
EF_INIT_TEXT static uint32_t python_id(int max)
{
    int st = atomic_load_explicit(&ef_py_state, memory_order_relaxed);
    if (EF_UNLIKELY(st == EF_PY_UNPROBED)) {
        ef_py_probe();
        st = atomic_load_explicit(&ef_py_state, memory_order_relaxed);
    }
    if (st == EF_PY_ABSENT)
        return 0; /* a program without Python: this load is all it pays */
    uint64_t words[EF_MAX_FRAMES];
    /* key and id read together, before the walk: a signal handler that
     * captures in between replaces them, and must not pair its id with our
     * frames */
    uint64_t key = py_reg == ef_reg ? py_key : 0;
    uint32_t id = py_id;
    int k = ef_py_capture(words, max, &key);
    if (k == 0)
        return 0;
    if (k > 0) {
        id = ef_depot_put_aside((const uintptr_t *)words, (uint32_t)k);
        py_id = id;
        py_key = key;
        py_reg = ef_reg;
    }
    return id;
}

/* Append the marker of the thread's Python stack to pcs (room for one more
 * word); the new count. */
static uint32_t with_python(uintptr_t *pcs, uint32_t n, int max)
{
    uint32_t id = python_id(max);
    if (id && n)
        pcs[n++] = EF_PY_MARK | id;
    return n;
}

/* The depot id of the thread's last walk from the unwind tables, by cfi.c's
 * serial: the same walk again (checked there) with the same skip and depth
 * is the same frames again, so the same id, without hashing and storing
 * them (bench/RESULTS.md, churn).  Not with Python frames: those are the
 * thread's Python stack's, which this does not know.  Only read when it
 * holds: nothing is written (bench/RESULTS.md, fork). */
static EF_TLS struct walk_id {
    uint32_t serial, id;
    int skip, max;
    const struct ef_registry *reg;
} last_walk;
static EF_TLS int walk_nest; /* a signal handler's capture leaves it alone */

EF_HOT_TEXT static uint32_t store_walk(const struct ef_walk *w, enum ef_skip skip, int max)
{
    int cache = w->serial && !walk_nest &&
                atomic_load_explicit(&ef_py_state, memory_order_relaxed) == EF_PY_ABSENT;
    if (cache && last_walk.serial == w->serial && last_walk.skip == (int)skip &&
        last_walk.max == max && last_walk.reg == ef_reg && last_walk.id)
        return last_walk.id;
    walk_nest++;
    uintptr_t pcs[EF_MAX_FRAMES + 1];
    uint32_t k = keep(pcs, max, skip, (void *const *)w->pcs, w->n);
    uint32_t id = 0;
    if (w->stamp && !ef_cfi_still(w)) {
        k = 0; /* a signal handler's walk replaced the frames as we copied them */
        cache = 0;
    }
    if (k)
        k = with_python(pcs, k, EF_MAX_FRAMES);
    if (k)
        id = ef_depot_put(pcs, k);
    if (cache && id)
        last_walk = (struct walk_id){w->serial, id, (int)skip, max, ef_reg};
    walk_nest--;
    return id;
}

/* The stack from the unwind tables (cfi.c): no libunwind, no lock, so it is
 * tried first wherever libunwind could run; 0 when a frame needs libunwind. */
static uint32_t capture_cfi(enum ef_skip skip, int max)
{
    if (!ef_walk_ok || ef_opt.unwind != EF_UNWIND_TABLES)
        return 0;
    struct ef_walk w;
    int want = max + 16 < EF_MAX_FRAMES + 16 ? max + 16 : EF_MAX_FRAMES + 16;
    return ef_cfi_backtrace(want, &w) > 0 ? store_walk(&w, skip, max) : 0;
}

/* Frames a wrapper captured itself (ef_capture_here): drop the wrapper's own
 * frame(s), keep the configured depth, store them once. */
EF_HOT_TEXT uint32_t ef_stack_from_walk(const struct ef_walk *w)
{
    if (last_cut != EF_CUT_NONE)
        last_cut = EF_CUT_NONE;
    return store_walk(w, EF_SKIP_SHIM, stack_max());
}

/* ------------------------------------------------- deferred captures */

#define PENDING_SLOTS 32                /* captures kept before libunwind is loaded */
#define SNAP_BYTES (96 * 1024)          /* their stack bytes, in all */
#define SNAP_ONE_MAX (16 * 1024)        /* a deeper stack is unwound at once */
#define SNAP_SLACK 256                  /* zeroes after each copy: libunwind may
                                           read a word or two past the top */
enum pend_state { PEND_FREE = 0, PEND_WRITING, PEND_READY, PEND_UNWINDING, PEND_DONE };
struct pending {
    _Atomic uint32_t state;             /* enum pend_state */
    uint32_t owner;                     /* ef_stack_tag of the capturing process */
    uint32_t skip;                      /* enum ef_skip */
    uint32_t py;                        /* depot id of its Python words, 0 none */
    uint64_t regs[EF_R_COUNT];          /* at the capture */
    uint32_t off, len;                  /* its stack bytes in snap */
    uintptr_t caller;                   /* shown when it cannot be unwound */
    uint32_t depot;                     /* PEND_DONE: its depot id */
};
/* Process-private (.bss: untouched pages cost nothing), inherited by fork
 * children, who may unwind what their parent captured.  Each slot's record
 * sits in the buffer just before its stack bytes, so that a first capture
 * touches one page, not two. */
/* 1 + where slot i's record is in snap; 0: none (yet) */
EF_HOT static _Atomic uint32_t pend_off[PENDING_SLOTS];
EF_HOT static _Atomic uint32_t npend;
EF_HOT static _Atomic uint32_t snap_used;
EF_HOT static unsigned char *snap_mem;  /* the zone's part (zone.c), made at the first copy */
_Static_assert(SNAP_BYTES <= EF_Z_BYTES(SNAP), "the copies fit their part of the zone");
static unsigned char *snap_base(void)
{
    return snap_mem;
}

static struct pending *pend_at(uint32_t i)
{
    uint32_t o = atomic_load_explicit(&pend_off[i], memory_order_acquire);
    return o ? (struct pending *)(snap_base() + o - 1) : NULL;
}
EF_HOT static uint32_t ef_stack_tag;           /* this process's record, 0 none */
EF_INIT_TEXT void ef_stack_set_owner(uint32_t proc)
{
    ef_stack_tag = proc;
}

static int is_pending(uint32_t id)
{
    return (id & EF_STACK_PENDING) != 0;
}

/* Keep what unwinding the caller's stack needs; its id, 0 when it cannot be
 * kept (the caller unwinds at once).  Not inlined: the registers are taken
 * in this frame, and the copy starts at its stack pointer. */
EF_INIT_TEXT __attribute__((noinline)) static uint32_t capture_later(enum ef_skip skip, void *caller)
{
    uint32_t tag = ef_stack_tag;
    if (!tag || tag > 0xffff || unsafe_child || ef_unwinding)
        return 0;
    if (!snap_mem && !(snap_mem = ef_zone(EF_Z_SNAP)))
        return 0;
    uint64_t regs[EF_R_COUNT];
    ef_snap_regs(regs);
    uintptr_t sp = regs[EF_R_RSP], top = ef_stack_top(sp, SNAP_ONE_MAX);
    if (!top)
        return 0;
    uint32_t len = (uint32_t)(top - sp);
    uint32_t i = atomic_fetch_add(&npend, 1);
    if (i >= PENDING_SLOTS) {
        atomic_store(&npend, PENDING_SLOTS);
        return 0;
    }
    uint32_t head = (sizeof(struct pending) + 15) & ~15u;
    uint32_t need = head + ((len + SNAP_SLACK + 15) & ~15u);
    uint32_t at = atomic_fetch_add(&snap_used, need);
    if (at > SNAP_BYTES - need) {
        atomic_store(&snap_used, SNAP_BYTES);
        return 0;
    }
    uint32_t off = at + head;
    struct pending *p = (struct pending *)(snap_base() + at);
    atomic_store_explicit(&p->state, PEND_WRITING, memory_order_relaxed);
    /* read through the kernel: a stack shorter than we think (a signal
     * stack right below a thread's descriptor) fails instead of faulting */
    struct iovec to = {snap_base() + off, len}, from = {(void *)sp, len};
    if (ef_raw6(SYS_process_vm_readv, ef_sys_getpid(), (long)&to, 1, (long)&from, 1, 0) != len)
        return 0; /* the slot stays WRITING: never unwound */
    p->owner = tag;
    p->skip = (uint32_t)skip;
    p->py = python_id(EF_MAX_FRAMES);
    for (int r = 0; r < EF_R_COUNT; r++)
        p->regs[r] = regs[r];
    p->off = off;
    p->len = len;
    p->caller = (uintptr_t)caller;
    atomic_store_explicit(&p->state, PEND_READY, memory_order_release);
    atomic_store_explicit(&pend_off[i], at + 1, memory_order_release);
    if (last_cut != EF_CUT_NONE)
        last_cut = EF_CUT_NONE;
    return EF_STACK_PENDING | tag << 8 | i;
}

EF_HOT_TEXT int ef_stack_keeps_copies(void)
{
    return ef_stack_tag && atomic_load_explicit(&npend, memory_order_relaxed) < PENDING_SLOTS &&
           atomic_load_explicit(&uw_state, memory_order_relaxed) == UW_UNTRIED && !unsafe_child &&
           !ef_unwinding;
}

/* Walk the copy of slot p with libunwind: its stack pointers moved to the
 * copy, the walk stops where a frame leaves it.  The frames unw_backtrace
 * would give, from the capture up (the first is capture_later's own pc). */
static int unwind_copy(struct pending *p, uintptr_t *raw, int want)
{
    unsigned char *copy = snap_base() + p->off;
    uintptr_t lo = p->regs[EF_R_RSP], hi = lo + p->len, delta = (uintptr_t)copy - lo;
    for (uint32_t o = 0; o + 8 <= p->len; o += 8) {
        uint64_t w;
        memcpy(&w, copy + o, 8);
        if (w >= lo && w < hi) {
            w += delta;
            memcpy(copy + o, &w, 8);
        }
    }
#define MOVED(v) ((v) >= lo && (v) < hi ? (v) + delta : (v))
    unw_context_t uc;
    memset(&uc, 0, sizeof uc);
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)p->regs[EF_R_RIP];
    uc.uc_mcontext.gregs[REG_RSP] = (greg_t)(lo + delta);
    uc.uc_mcontext.gregs[REG_RBP] = (greg_t)MOVED(p->regs[EF_R_RBP]);
    uc.uc_mcontext.gregs[REG_RBX] = (greg_t)MOVED(p->regs[EF_R_RBX]);
    uc.uc_mcontext.gregs[REG_R12] = (greg_t)MOVED(p->regs[EF_R_R12]);
    uc.uc_mcontext.gregs[REG_R13] = (greg_t)MOVED(p->regs[EF_R_R13]);
    uc.uc_mcontext.gregs[REG_R14] = (greg_t)MOVED(p->regs[EF_R_R14]);
    uc.uc_mcontext.gregs[REG_R15] = (greg_t)MOVED(p->regs[EF_R_R15]);
#undef MOVED
    unw_cursor_t cur;
    int n = 0;
    EF_GUARD_SCOPE();
    ef_unwinding = 1;
    if (p_init_local(&cur, &uc) == 0) {
        raw[n++] = (uintptr_t)p->regs[EF_R_RIP];
        while (n < want && p_step(&cur) > 0) {
            unw_word_t ip = 0, sp = 0;
            if (p_get_reg(&cur, UNW_REG_SP, &sp) < 0 || sp < (uintptr_t)copy ||
                sp > (uintptr_t)copy + p->len || p_get_reg(&cur, UNW_REG_IP, &ip) < 0 || !ip)
                break;
            raw[n++] = (uintptr_t)ip;
        }
    }
    ef_unwinding = 0;
    return n;
}

/* The depot id of slot i, unwinding it now if it was not yet; 0 when it is
 * not a capture this process can see. */
static uint32_t pending_depot(uint32_t id)
{
    uint32_t i = id & 0xff, tag = (id >> 8) & 0xffff;
    if (i >= PENDING_SLOTS || i >= atomic_load(&npend))
        return 0;
    struct pending *p = pend_at(i);
    if (!p)
        return 0;
    uint32_t st = atomic_load_explicit(&p->state, memory_order_acquire);
    if (st == PEND_DONE)
        return p->owner == tag ? p->depot : 0;
    if (st != PEND_READY || p->owner != tag)
        return 0;
    if (!atomic_compare_exchange_strong(&p->state, &st, PEND_UNWINDING)) {
        /* another thread is at it: wait a little for it, not for ever (we
         * may be a signal handler that interrupted it) */
        for (int spin = 0; spin < 100000 && st == PEND_UNWINDING; spin++) {
            ef_cpu_relax();
            st = atomic_load_explicit(&p->state, memory_order_acquire);
        }
        return st == PEND_DONE ? p->depot : 0;
    }
    uintptr_t pcs[EF_MAX_FRAMES + 1];
    int max = stack_max();
    uint32_t n = 0;
    /* Not here: in a child where unwinding may hang, or inside our own
     * unwind (a signal handler).  The calling frame is shown, and the slot
     * stays for a process that can.  (A vfork child unwinds, as it captured
     * eagerly before: it shares this memory, and the result, with its
     * parent.) */
    int here = !unsafe_child && !ef_unwinding;
    uintptr_t raw[EF_MAX_FRAMES + 16];
    int k = -1;
    /* the unwind tables first (cfi.c), over the copy as it is */
    if (here && ef_walk_ok && ef_opt.unwind == EF_UNWIND_TABLES)
        k = ef_cfi_walk_copy(p->regs, snap_base() + p->off, p->len, raw, max + 16);
    if (k <= 0) {
        if (here && atomic_load_explicit(&uw_state, memory_order_acquire) == UW_UNTRIED)
            load_unwind(0);
        here = here && atomic_load_explicit(&uw_state, memory_order_acquire) == UW_READY;
        if (here && p_init_local && p_step && p_get_reg)
            k = unwind_copy(p, raw, max + 16);
    }
    if (k > 0)
        n = keep(pcs, max, (enum ef_skip)p->skip, (void *const *)raw, k);
    if (!n)
        pcs[n++] = p->caller; /* as an eager capture that could not unwind */
    if (p->py)
        pcs[n++] = EF_PY_MARK | p->py;
    uint32_t d = ef_depot_put(pcs, n);
    if (!here && atomic_load(&uw_state) != UW_UNAVAILABLE) {
        atomic_store_explicit(&p->state, PEND_READY, memory_order_release);
        return d;
    }
    p->depot = d;
    atomic_store_explicit(&p->state, PEND_DONE, memory_order_release);
    return d;
}

uint32_t ef_stack_canon(uint32_t id)
{
    return is_pending(id) ? pending_depot(id) : id;
}

/* Unwind every capture this process kept (a multithreaded process about to
 * fork: its child must not unwind). */
static void unwind_all_pending(void)
{
    uint32_t n = atomic_load(&npend);
    for (uint32_t i = 0; i < n && i < PENDING_SLOTS; i++) {
        struct pending *p = pend_at(i);
        if (p && atomic_load(&p->state) == PEND_READY)
            pending_depot(EF_STACK_PENDING | p->owner << 8 | i);
    }
}

/* Unwound now by libunwind (or the calling frame, with the reason). */
static uint32_t capture_unwound(enum ef_skip skip, void *caller)
{
    uintptr_t pcs[EF_MAX_FRAMES + 1];
    uint32_t n = take(pcs, stack_max(), skip, caller, &last_cut);
    n = with_python(pcs, n, EF_MAX_FRAMES);
    return ef_depot_put(pcs, n);
}

EF_INIT_TEXT uint32_t ef_stack_capture(enum ef_skip skip, void *caller)
{
    /* A young process keeps copies (most never report, and the first walk
     * of a call chain reads its objects' unwind tables: a page fault each),
     * then walks at once. */
    uint32_t id = ef_stack_keeps_copies() ? capture_later(skip, caller) : 0;
    if (id)
        return id;
    id = capture_cfi(skip, stack_max());
    if (id) {
        if (last_cut != EF_CUT_NONE)
            last_cut = EF_CUT_NONE;
        return id;
    }
    return capture_unwound(skip, caller);
}


uint32_t ef_stack_capture_now(enum ef_skip skip, void *caller)
{
    uint32_t id = capture_cfi(skip, stack_max());
    if (id) {
        if (last_cut != EF_CUT_NONE)
            last_cut = EF_CUT_NONE;
        return id;
    }
    return capture_unwound(skip, caller);
}

enum ef_cut ef_stack_last_cut(void)
{
    return last_cut;
}

uint32_t ef_stack_store(const uintptr_t *pcs, uint32_t n, const uint64_t *words, uint32_t nw)
{
    uintptr_t all[EF_DEPOT_ENTRY_MAX];
    if (n > EF_MAX_FRAMES)
        n = EF_MAX_FRAMES;
    memcpy(all, pcs, n * sizeof(uintptr_t));
    uint32_t py = nw ? ef_depot_put_aside((const uintptr_t *)words, nw) : 0;
    if (py && n)
        all[n++] = EF_PY_MARK | py;
    return ef_depot_put(all, n);
}

EF_INIT_TEXT void ef_stack_forking(void)
{
    /* What this process keeps from now on could be read by a process that
     * does not have its copy (the child forked now, when the capture comes
     * after the fork): captures are eager from here on.  What it kept so far,
     * the child inherits. */
    if (ef_stack_tag)
        ef_stack_tag = 0;
    if (!__libc_single_threaded && atomic_load_explicit(&npend, memory_order_relaxed))
        unwind_all_pending();
}

EF_INIT_TEXT void ef_stack_before_fork(void)
{
    ef_stack_forking();
    /* written only when they change: every page written at each fork is a
     * copy-on-write fault at the next one */
    if (!__libc_single_threaded && !ever_mt)
        ever_mt = 1;
    if (drain_failed != ef_unwinding)
        drain_failed = ef_unwinding; /* a signal handler forking in the middle of our unwind */
}

void ef_stack_after_fork_child(int parent_multithreaded)
{
    ef_stack_tag = 0;
    if (parent_multithreaded || drain_failed) {
        unsafe_child = 1;
        ef_bt = NULL;
        ef_walk_ok = 0;
    }
    ef_unwinding = 0;
}

/* A fork that no handler saw (raw clone, _Fork): decide from what we knew. */
void ef_stack_after_unseen_fork(void)
{
    ef_stack_tag = 0; /* its parent's: a fork child keeps nothing for later */
    if (ever_mt || !__libc_single_threaded || ef_unwinding) {
        unsafe_child = 1;
        ef_bt = NULL;
        ef_walk_ok = 0;
    }
    ef_unwinding = 0;
}

/* The program took the number of libunwind's validation pipe (dup2 onto it):
 * libunwind would read and write the program's fd from now on.  Stop calling
 * it; stacks keep their calling frame. */
void ef_stack_disable(int fd)
{
    ef_bt = NULL;
    if (atomic_exchange(&uw_state, UW_UNAVAILABLE) == UW_UNAVAILABLE)
        return;
    ef_log_notice("epollfork: the program took fd %d, libunwind's own pipe; stacks show the "
                  "calling frame only from now on", fd);
}

int ef_stack_unsafe(void)
{
    return unsafe_child;
}

EF_INIT_TEXT int ef_stack_parent_mt(void)
{
    return ever_mt || !__libc_single_threaded;
}

uint32_t ef_depot_copy(uint32_t id, uint64_t *pcs, uint32_t max)
{
    return ef_depot_native(ef_stack_canon(id), pcs, max);
}

uint32_t ef_stack_python(uint32_t id, uint64_t *words, uint32_t max)
{
    return ef_depot_python(ef_stack_canon(id), words, max);
}
