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
 * The depot is an open-addressing hash set in the shared registry, so a stack id
 * means the same thing in every process of the tree.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <string.h>
#include <sys/single_threaded.h>
#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include "ef.h"

#define XSTR(x) STR(x)
#define STR(x) #x

static int (*p_backtrace)(void **, int);
/* p_backtrace while unwinding is allowed in this process (NULL otherwise):
 * wrappers call it from their own frame (ef_capture_here in ef.h). */
int (*ef_bt)(void **, int);
EF_TLS int ef_unwinding;
enum uw_state { UW_UNTRIED = 0, UW_LOADING, UW_READY, UW_UNAVAILABLE };
static _Atomic int uw_state;        /* enum uw_state */
static uintptr_t shim_lo, shim_hi;  /* our own text, never shown */
static int drain_failed;            /* the forking thread was (a signal handler) */
static int unsafe_child;            /* see the paragraph on top */
static int ever_mt;

struct range_arg {
    uintptr_t bias;
    uintptr_t lo, hi;
};

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct range_arg *a = arg;
    if (info->dlpi_addr != a->bias)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t lo = a->bias + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (!a->lo || lo < a->lo)
            a->lo = lo;
        if (hi > a->hi)
            a->hi = hi;
    }
    return 1;
}

static void find_shim_range(void)
{
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)&find_shim_range, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return;
    struct range_arg a = {lm->l_addr, 0, 0};
    dl_iterate_phdr(find_self, &a);
    shim_lo = a.lo;
    shim_hi = a.hi;
}

int ef_pc_in_shim(uintptr_t pc)
{
    return pc >= shim_lo && pc < shim_hi;
}

static void load_unwind(void)
{
    int expect = UW_UNTRIED;
    if (!atomic_compare_exchange_strong(&uw_state, &expect, UW_LOADING)) {
        /* Another thread is loading: do not wait for it (we may be in a
         * signal handler that interrupted it). */
        return;
    }
    find_shim_range();
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
    /* libunwind opens a pipe on first use (address validation): the guard
     * makes our pipe2 wrapper move it out of the program's fd numbers. */
    {
        EF_GUARD_SCOPE();
        if (set_policy && as)
            set_policy(*as, UNW_CACHE_PER_THREAD);
        p_backtrace = (int (*)(void **, int))bt;
        void *warm[8];
        p_backtrace(warm, 8); /* the first call costs ~0.2 ms: pay it here, once */
    }
    if (!unsafe_child)
        ef_bt = p_backtrace;
    atomic_store(&uw_state, UW_READY);
}

static uint32_t take(uintptr_t *pcs, int max, enum ef_skip skip, void *caller, enum ef_cut *cut)
{
    *cut = EF_CUT_NONE;
    if (!__libc_single_threaded)
        ever_mt = 1;
    if (atomic_load_explicit(&uw_state, memory_order_acquire) == UW_UNTRIED)
        load_unwind();
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
    int i = 0;
    while (i < n && ef_pc_in_shim((uintptr_t)raw[i]))
        i++;
    if (skip == EF_SKIP_SHIM_AND_ONE && i < n)
        i++;
    uint32_t k = 0;
    for (; i < n && (int)k < max; i++)
        pcs[k++] = (uintptr_t)raw[i];
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

static uint32_t depot_store(const uintptr_t *pcs, uint32_t n);

/* The Python stack of the calling thread (pyframes.c), stored once; the last
 * one this thread stored is remembered by its key, so that a registration
 * made again and again from the same Python lines costs a walk of the frame
 * chain and no string work (bench/RESULTS.md, Python churn). */
static EF_TLS uint64_t py_key;
static EF_TLS uint32_t py_id;
static EF_TLS const struct ef_registry *py_reg;

/* Append the marker of the thread's Python stack to pcs (room for one more
 * word); the new count. */
static uint32_t with_python(uintptr_t *pcs, uint32_t n, int max)
{
    if (atomic_load_explicit(&ef_py_state, memory_order_relaxed) == EF_PY_ABSENT)
        return n; /* a program without Python: this load is all it pays */
    uint64_t words[EF_MAX_FRAMES];
    /* key and id read together, before the walk: a signal handler that
     * captures in between replaces them, and must not pair its id with our
     * frames */
    uint64_t key = py_reg == ef_reg ? py_key : 0;
    uint32_t id = py_id;
    int k = ef_py_capture(words, max, &key);
    if (k == 0)
        return n;
    if (k > 0) {
        id = depot_store((const uintptr_t *)words, (uint32_t)k);
        py_id = id;
        py_key = key;
        py_reg = ef_reg;
    }
    if (id && n)
        pcs[n++] = EF_PY_MARK | id;
    return n;
}

/* Frames a wrapper captured itself (ef_capture_here): drop the wrapper's own
 * frame(s), keep the configured depth, store them once. */
uint32_t ef_stack_from_raw(void *const *raw, int n)
{
    uintptr_t pcs[EF_MAX_FRAMES + 1];
    int max = ef_opt.stack_depth > 0 && ef_opt.stack_depth <= EF_MAX_FRAMES ? ef_opt.stack_depth
                                                                           : EF_MAX_FRAMES;
    int i = 0;
    while (i < n && ef_pc_in_shim((uintptr_t)raw[i]))
        i++;
    uint32_t k = 0;
    for (; i < n && (int)k < max; i++)
        pcs[k++] = (uintptr_t)raw[i];
    last_cut = EF_CUT_NONE;
    k = with_python(pcs, k, EF_MAX_FRAMES);
    return k ? ef_depot_put(pcs, k) : 0;
}

uint32_t ef_stack_capture(enum ef_skip skip, void *caller)
{
    uintptr_t pcs[EF_MAX_FRAMES + 1];
    int max = ef_opt.stack_depth > 0 && ef_opt.stack_depth <= EF_MAX_FRAMES ? ef_opt.stack_depth
                                                                           : EF_MAX_FRAMES;
    uint32_t n = take(pcs, max, skip, caller, &last_cut);
    n = with_python(pcs, n, EF_MAX_FRAMES);
    return ef_depot_put(pcs, n);
}

enum ef_cut ef_stack_last_cut(void)
{
    return last_cut;
}

static uint64_t hash_pcs(const uintptr_t *pcs, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= pcs[i];
        h *= 0x100000001b3ull;
        h ^= h >> 29;
    }
    return h ? h : 1;
}

/* The last stack this thread stored, by hash: a server registers from the
 * same few call sites over and over, and the shared table's probe and compare
 * cost more than the hash (bench/RESULTS.md, connection churn). */
static EF_TLS uint64_t last_hash;
static EF_TLS uint32_t last_id, last_n;
static EF_TLS const struct ef_registry *last_reg;

/* Slots this process found half-written after waiting once: a writer killed
 * in the middle never finishes, and nobody waits for it twice. */
static uint64_t stuck[EF_DEPOT_SLOTS / 64];

/* A depot entry: up to EF_MAX_FRAMES frames and the Python marker. */
#define ENTRY_MAX (EF_MAX_FRAMES + 1)

static uint32_t depot_read(uint32_t id, uint64_t *pcs, uint32_t max);

uint32_t ef_depot_put(const uintptr_t *pcs, uint32_t n)
{
    struct ef_registry *r = ef_reg;
    if (!r || !n)
        return 0;
    if (n > ENTRY_MAX)
        n = ENTRY_MAX;
    uint64_t h = hash_pcs(pcs, n);
    if (h == last_hash && n == last_n && r == last_reg && last_id)
        return last_id;
    uint32_t id = 0;
    for (uint32_t probe = 0; probe < 64 && !id; probe++) {
        uint32_t s = (uint32_t)(h + probe) & (EF_DEPOT_SLOTS - 1);
        struct ef_depot_slot *d = ef_reg_elem(EF_T_DEPOT, s);
        if (!d)
            break;
        uint32_t st = atomic_load_explicit(&d->state, memory_order_acquire);
        if (st == EF_DEPOT_WRITING && (stuck[s / 64] >> (s % 64) & 1))
            continue; /* waited for once already: its writer died */
        for (int spin = 0; st == EF_DEPOT_WRITING && spin < 2000; spin++) {
            ef_cpu_relax();
            st = atomic_load_explicit(&d->state, memory_order_acquire);
        }
        if (st == EF_DEPOT_WRITING)
            stuck[s / 64] |= 1ull << (s % 64);
        if (st == EF_DEPOT_READY) {
            uint64_t have[ENTRY_MAX];
            if (atomic_load_explicit(&d->hash, memory_order_relaxed) == h &&
                depot_read(s + 1, have, ENTRY_MAX) == n &&
                !memcmp(have, pcs, n * sizeof(uint64_t)))
                id = s + 1;
            continue;
        }
        if (st != EF_DEPOT_EMPTY)
            continue;
        if (!atomic_compare_exchange_strong(&d->state, &st, EF_DEPOT_WRITING))
            continue;
        /* frames of one stack never split across chunks of the frame store */
        uint32_t start = ef_reg_reserve(EF_T_FRAMES, &r->depot_frames_used, n);
        uint64_t *dst = start == UINT32_MAX ? NULL : ef_reg_span(EF_T_FRAMES, start, n);
        if (!dst) {
            atomic_store(&d->state, EF_DEPOT_EMPTY);
            if (ef_notice_once(EF_NOTICE_DEPOT_FULL))
                ef_log_notice("epollfork: the stack depot is full; new stacks are not recorded");
            return 0;
        }
        memcpy(dst, pcs, n * sizeof(uint64_t));
        d->start = start;
        d->n = n;
        atomic_store_explicit(&d->hash, h, memory_order_relaxed);
        atomic_store_explicit(&d->state, EF_DEPOT_READY, memory_order_release);
        id = s + 1;
    }
    if (!id) {
        if (ef_notice_once(EF_NOTICE_DEPOT_FULL))
            ef_log_notice("epollfork: the stack depot is full; new stacks are not recorded");
        return 0;
    }
    last_hash = h;
    last_n = n;
    last_id = id;
    last_reg = r;
    return id;
}

/* The words of entry id as stored (the Python marker included). */
static uint32_t depot_read(uint32_t id, uint64_t *pcs, uint32_t max)
{
    if (!ef_reg || !id || id > EF_DEPOT_SLOTS)
        return 0;
    struct ef_depot_slot *d = ef_reg_elem(EF_T_DEPOT, id - 1);
    if (!d || atomic_load_explicit(&d->state, memory_order_acquire) != EF_DEPOT_READY)
        return 0;
    /* Any process of the tree can write the slot: read each value once and
     * check it against the frame store before using it (ef_reg_span: in
     * range, and within one chunk). */
    uint32_t start = *(volatile uint32_t *)&d->start, n = *(volatile uint32_t *)&d->n;
    const uint64_t *src = n <= ENTRY_MAX ? ef_reg_span(EF_T_FRAMES, start, n) : NULL;
    if (!src)
        return 0;
    if (n > max)
        n = max;
    memcpy(pcs, src, n * sizeof(uint64_t));
    return n;
}

static int is_py_mark(uint64_t w)
{
    return (w & ~0xffffffffull) == EF_PY_MARK;
}

uint32_t ef_depot_copy(uint32_t id, uint64_t *pcs, uint32_t max)
{
    uint64_t all[ENTRY_MAX];
    uint32_t n = depot_read(id, all, ENTRY_MAX);
    if (n && is_py_mark(all[n - 1]))
        n--;
    if (n > max)
        n = max;
    memcpy(pcs, all, n * sizeof(uint64_t));
    return n;
}

uint32_t ef_stack_python(uint32_t id, uint64_t *words, uint32_t max)
{
    uint64_t all[ENTRY_MAX];
    uint32_t n = depot_read(id, all, ENTRY_MAX);
    if (!n || !is_py_mark(all[n - 1]))
        return 0;
    uint32_t py = (uint32_t)all[n - 1];
    if (py == id) /* a marker pointing at its own entry: damaged */
        return 0;
    n = depot_read(py, words, max);
    for (uint32_t i = 0; i < n; i++)
        if (is_py_mark(words[i])) /* a native entry where Python words should be */
            return 0;
    return n;
}

/* Python words go to the depot through here, so that storing them does not
 * evict the calling thread's cached native stack (ef_depot_put's). */
static uint32_t depot_store(const uintptr_t *pcs, uint32_t n)
{
    uint64_t h = last_hash;
    uint32_t id = last_id, ln = last_n;
    const struct ef_registry *reg = last_reg;
    uint32_t r = ef_depot_put(pcs, n);
    last_hash = h, last_id = id, last_n = ln, last_reg = reg;
    return r;
}

uint32_t ef_stack_store(const uintptr_t *pcs, uint32_t n, const uint64_t *words, uint32_t nw)
{
    uintptr_t all[ENTRY_MAX];
    if (n > EF_MAX_FRAMES)
        n = EF_MAX_FRAMES;
    memcpy(all, pcs, n * sizeof(uintptr_t));
    uint32_t py = nw ? depot_store((const uintptr_t *)words, nw) : 0;
    if (py && n)
        all[n++] = EF_PY_MARK | py;
    return ef_depot_put(all, n);
}

void ef_stack_before_fork(void)
{
    /* written only when they change: every page written at each fork is a
     * copy-on-write fault at the next one */
    if (!__libc_single_threaded && !ever_mt)
        ever_mt = 1;
    if (drain_failed != ef_unwinding)
        drain_failed = ef_unwinding; /* a signal handler forking in the middle of our unwind */
}

void ef_stack_after_fork_child(int parent_multithreaded)
{
    if (parent_multithreaded || drain_failed) {
        unsafe_child = 1;
        ef_bt = NULL;
    }
    ef_unwinding = 0;
}

/* A fork that no handler saw (raw clone, _Fork): decide from what we knew. */
void ef_stack_after_unseen_fork(void)
{
    if (ever_mt || !__libc_single_threaded || ef_unwinding) {
        unsafe_child = 1;
        ef_bt = NULL;
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

int ef_stack_parent_mt(void)
{
    return ever_mt || !__libc_single_threaded;
}
