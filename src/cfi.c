/*
 * cfi.c - backtraces from the unwind tables, without libunwind, for the
 * frames whose rules are simple; the caller falls back to libunwind for any
 * other stack.
 *
 * Every EPOLL_CTL_ADD keeps its registration stack, and every fork its fork
 * stack.  libunwind's unw_backtrace costs ~1,000 instructions for a stack of
 * eight frames (its own set-up, and ~80 a frame in its trace cache), and
 * loading it costs a process two libraries, ~20 mappings and the pages of a
 * 256 KiB cache that every later fork copies (bench/RESULTS.md, churn and
 * fork).  But on x86-64 almost every frame of compiled C, C++ or Rust code has
 * one of two rules in its .eh_frame at a call site: the canonical frame
 * address (CFA) is rsp or rbp plus a constant, the return address is at
 * CFA - 8, and rbp is either unchanged or saved at CFA + a constant.  Those
 * are the frames libunwind's own fast path walks (its "standard" frames);
 * this file walks the same ones, with the rules ehframe.c reads once per
 * return address from the object's .eh_frame (found by _dl_find_object,
 * which takes no lock), kept in a table.  A frame with any other rule (a
 * signal frame, a realigned stack, a CFA expression, a return address not at
 * CFA - 8, no unwind table at all, where libunwind would guess) makes the
 * whole walk give up, and the caller asks libunwind: so a walk either gives
 * exactly the frames unw_backtrace gives, or nothing.
 * tests/test_perf.py (cfi-*) compares the two on stacks of every kind.
 *
 * The table is keyed on the return address and the generation of the loaded
 * code: a dlclose() (wrap.c) starts a new generation, so that a rule is never
 * applied to another object loaded at the same address.  A walk reads only
 * the words its rules name, between the stack pointer and the top of the
 * stack (the thread's descriptor, or the main thread's arguments).
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <string.h>

#include "ef.h"

/* The registers a caller keeps (and the caller's pc and stack pointer) as
 * they are at the return from this function: regs[EF_R_RIP] is its return
 * address, regs[EF_R_RSP] the stack pointer after the return. */
#if defined(__x86_64__)
__asm__(".pushsection .text.hot.ef,\"ax\",@progbits\n"
        ".globl ef_snap_regs\n"
        ".hidden ef_snap_regs\n"
        ".type ef_snap_regs, @function\n"
        "ef_snap_regs:\n"
        "    .cfi_startproc\n"
        "    movq (%rsp), %rax\n"
        "    movq %rax, 0(%rdi)\n"
        "    leaq 8(%rsp), %rax\n"
        "    movq %rax, 8(%rdi)\n"
        "    movq %rbp, 16(%rdi)\n"
        "    movq %rbx, 24(%rdi)\n"
        "    movq %r12, 32(%rdi)\n"
        "    movq %r13, 40(%rdi)\n"
        "    movq %r14, 48(%rdi)\n"
        "    movq %r15, 56(%rdi)\n"
        "    ret\n"
        "    .cfi_endproc\n"
        ".size ef_snap_regs, .-ef_snap_regs\n"
        ".popsection\n");
#endif

EF_HOT static uintptr_t main_top; /* above every frame of the main thread */

EF_INIT_TEXT void ef_stack_set_main_top(uintptr_t top)
{
    main_top = top;
}

EF_INIT_TEXT uintptr_t ef_stack_top(uintptr_t sp, uintptr_t span)
{
    uintptr_t tp = (uintptr_t)__builtin_thread_pointer();
    if (sp < tp && tp - sp <= span)
        return tp;
    if (main_top && sp < main_top && main_top - sp <= span)
        return main_top;
    return 0;
}

#if defined(__x86_64__)

/* Each entry is a sequence lock: a writer makes seq odd (one writer at a
 * time: the others just do not keep what they read), writes, makes it even
 * again; a reader takes the entry only when seq was the same even number
 * before and after it read the rest.  In the zone (zone.c), not .bss: 96 KiB
 * of .bss is a mapping more at every exec (bench/RESULTS.md, start-up). */
#define TABLE_BITS 12
struct entry {
    _Atomic uint32_t seq;
    _Atomic uint32_t gen;  /* the generation of loaded code it was read in */
    _Atomic uint64_t pc;   /* the return address; 0 free */
    _Atomic uint64_t rule;
};
static struct entry *_Atomic table;
_Static_assert((sizeof(struct entry) << TABLE_BITS) <= EF_Z_BYTES(CFI), "the rules fit their part");
static _Atomic uint32_t generation = 1;

void ef_cfi_code_unloaded(void)
{
    atomic_fetch_add(&generation, 1);
}

static unsigned slot_of(uint64_t key)
{
    return (unsigned)((key * 0x9e3779b97f4a7c15ull) >> (64 - TABLE_BITS));
}

static uint64_t rule_for(uintptr_t ret, uint32_t gen)
{
    struct entry *t = atomic_load_explicit(&table, memory_order_acquire);
    if (EF_UNLIKELY(!t)) {
        t = ef_zone(EF_Z_CFI);
        if (!t)
            return ef_eh_rule_at(ret - 1); /* no memory to keep it in */
        atomic_store_explicit(&table, t, memory_order_release);
    }
    struct entry *e = &t[slot_of(ret)];
    uint32_t s1 = atomic_load_explicit(&e->seq, memory_order_acquire);
    if (EF_LIKELY(!(s1 & 1)) && atomic_load_explicit(&e->pc, memory_order_relaxed) == ret &&
        atomic_load_explicit(&e->gen, memory_order_relaxed) == gen) {
        uint64_t r = atomic_load_explicit(&e->rule, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&e->seq, memory_order_relaxed) == s1)
            return r;
    }
    /* the rule of the call instruction: ret - 1 */
    uint64_t r = ef_eh_rule_at(ret - 1);
    if (!(s1 & 1) && atomic_compare_exchange_strong(&e->seq, &s1, s1 + 1)) {
        atomic_store_explicit(&e->gen, gen, memory_order_relaxed);
        atomic_store_explicit(&e->pc, ret, memory_order_relaxed);
        atomic_store_explicit(&e->rule, r, memory_order_relaxed);
        atomic_store_explicit(&e->seq, s1 + 2, memory_order_release);
    }
    return r;
}

/* How far above the stack pointer a walk may read: the stack it is on, as
 * the thread's descriptor or the main thread's arguments bound it. */
#define WALK_SPAN (8u << 20)

/* The thread's last walk, to be checked instead of walked again.  A program
 * registers from the same call sites at the same depth over and over (an
 * accept loop, a fork loop).  A walk is a function of its first pc, stack
 * pointer and rbp, of the rules (a function of each pc and of the loaded
 * code) and of the stack words it reads: return address slots and saved rbp
 * slots.  So when the stack pointer, the top and the generation of the code
 * are the same, rbp is too (if a frame's CFA is rbp-based), and every word
 * the last walk read still holds what it held, the frames are the same,
 * exactly.  Checking costs a load and a compare a word; a walk ~30
 * instructions a frame (bench/RESULTS.md, churn). */
#define MEMO_FRAMES (EF_MAX_FRAMES + 16)
#define MEMO_WORDS (2 * MEMO_FRAMES)
struct memo {
    uintptr_t sp0, top, rbp0;
    uint32_t gen, serial; /* serial 0: nothing kept */
    int max, n, nread, uses_rbp;
    /* each word read, in the order read: where (from sp0), what it held, and
     * whether it is a saved rbp (which matters only if a frame's CFA is
     * rbp-based); together, so that checking reads a few cache lines */
    struct {
        uint32_t off, rbp;
        uintptr_t val;
    } word[MEMO_WORDS];
    uintptr_t pcs[MEMO_FRAMES];
};
static EF_TLS struct memo memo;
/* Odd while a walk writes memo; a walk that finds it odd is a signal
 * handler's inside ours, and gives up.  Read before and after a use of memo:
 * a change means a signal handler's walk rewrote it meanwhile.  Nothing is
 * written when the last walk holds (a private page written after a fork is
 * a copy-on-write fault at the next: bench/RESULTS.md, fork). */
static EF_TLS uint32_t memo_writes;
static EF_TLS uint32_t memo_serials;

static void memo_read(uintptr_t sp0, uintptr_t at, uintptr_t v, int rbp, int *keep)
{
    if (*keep && memo.nread < MEMO_WORDS && at - sp0 <= UINT32_MAX) {
        memo.word[memo.nread].off = (uint32_t)(at - sp0);
        memo.word[memo.nread].rbp = (uint32_t)rbp;
        memo.word[memo.nread++].val = v;
    } else {
        *keep = 0;
    }
}

/* Walk from the frame (pc, sp, rbp) up, into out (each frame's return
 * address, as unw_backtrace gives them), the first skip frames unrecorded;
 * the stack's words are read at their address + delta (0, or where a copy of
 * the stack is), between sp and top.  With memo_it, keep what checking the
 * walk again needs.  -1 when a frame is not one we walk. */
static int walk(uintptr_t pc, uintptr_t sp, uintptr_t rbp, uintptr_t top, uintptr_t delta,
                int skip, uintptr_t *out, int max, uint32_t gen, int memo_it)
{
    uintptr_t sp0 = sp, rbp0 = rbp;
    int n = 0, keep = memo_it, uses_rbp = 0;
    if (memo_it) {
        memo.serial = 0;
        memo.nread = 0;
    }
    while (n < max) {
        if (skip > 0)
            skip--;
        else if ((out[n++] = pc), n == max)
            break; /* no step past the last frame asked for */
        uint64_t r = rule_for(pc, gen);
        unsigned f = EF_RULE_FLAGS(r);
        if (!(f & EF_RULE_KNOWN))
            return -1;
        if (f & EF_RULE_LAST)
            break;
        if (f & EF_RULE_CFA_RBP)
            uses_rbp = 1;
        uintptr_t cfa = ((f & EF_RULE_CFA_RBP) ? rbp : sp) + (uintptr_t)(intptr_t)EF_RULE_OFF(r);
        if (cfa <= sp || cfa > top || (cfa & 7))
            return -1;
        uintptr_t ra = *(const uintptr_t *)(cfa - 8 + delta);
        memo_read(sp0, cfa - 8, ra, 0, &keep);
        if (f & EF_RULE_RBP_SAVED) {
            uintptr_t at = cfa + (uintptr_t)(intptr_t)EF_RULE_RBP_OFF(r);
            if (at < sp || at + 8 > top)
                return -1;
            rbp = *(const uintptr_t *)(at + delta);
            memo_read(sp0, at, rbp, 1, &keep);
        }
        sp = cfa;
        pc = ra;
        if (!pc || pc >> 47)
            return -1; /* where libunwind would stop or fail: let it say */
    }
    if (keep) {
        memo.sp0 = sp0;
        memo.top = top;
        memo.rbp0 = rbp0;
        memo.uses_rbp = uses_rbp;
        memo.gen = gen;
        memo.max = max;
        memo.n = n;
        if (!++memo_serials)
            memo_serials = 1;
        memo.serial = memo_serials;
    }
    return n;
}

int ef_cfi_walk_copy(const uint64_t *regs, const unsigned char *copy, uintptr_t len, uintptr_t *out,
                     int max)
{
    uintptr_t lo = regs[EF_R_RSP];
    if (lo >> 47 || len > WALK_SPAN)
        return -1;
    return walk(regs[EF_R_RIP], lo, regs[EF_R_RBP], lo + len, (uintptr_t)copy - lo, 0, out, max,
                atomic_load_explicit(&generation, memory_order_acquire), 0);
}

/* Is the stack from (sp0, rbp) up the one of the thread's last walk? */
static int memo_holds(uintptr_t sp0, uintptr_t rbp, uintptr_t top, int max, uint32_t gen)
{
    if (!top || top <= sp0 || !memo.serial || memo.sp0 != sp0 || memo.top != top ||
        memo.max != max || memo.gen != gen ||
        (memo.uses_rbp && memo.rbp0 != rbp))
        return 0;
    const unsigned char *base = (const unsigned char *)sp0;
    uint32_t skip_rbp = !memo.uses_rbp;
    /* our own bound, not memo's: a signal handler's walk may be rewriting
     * memo under us (the caller then throws the answer away), and its
     * offsets must not take a read off this stack meanwhile */
    uintptr_t room = top - sp0;
    for (int i = 0; i < memo.nread && i < MEMO_WORDS; i++) {
        uintptr_t w;
        if (memo.word[i].rbp & skip_rbp)
            continue;
        if ((uintptr_t)memo.word[i].off + sizeof w > room)
            return 0;
        memcpy(&w, base + memo.word[i].off, sizeof w);
        if (w != memo.word[i].val)
            return 0;
    }
    return 1;
}

EF_HOT_TEXT __attribute__((noinline)) int ef_cfi_backtrace(int max, struct ef_walk *w)
{
    uint64_t regs[EF_R_COUNT];
    ef_snap_regs(regs);
    uintptr_t sp = regs[EF_R_RSP], top = ef_stack_top(sp, WALK_SPAN);
    uint32_t gen = atomic_load_explicit(&generation, memory_order_acquire);
    uint32_t stamp = memo_writes;
    w->n = 0;
    if (max > MEMO_FRAMES || (stamp & 1))
        return -1;
    int n;
    if (memo_holds(sp, regs[EF_R_RBP], top, max, gen)) {
        n = memo.n;
    } else {
        memo_writes = stamp + 1;
        n = walk(regs[EF_R_RIP], sp, regs[EF_R_RBP], top, 0, 1, memo.pcs, max, gen, 1);
        memo_writes = stamp += 2;
    }
    if (n <= 0)
        return -1;
    w->pcs = memo.pcs;
    w->n = n;
    w->serial = memo.serial;
    w->stamp = stamp;
    /* a signal handler's walk in between: not ours to give */
    if (memo_writes != stamp) {
        w->n = 0;
        w->serial = w->stamp = 0;
        return -1;
    }
    return n;
}

int ef_cfi_still(const struct ef_walk *w)
{
    return memo_writes == w->stamp;
}

#else /* not x86-64: libunwind walks every stack */

void ef_cfi_code_unloaded(void)
{
}

int ef_cfi_backtrace(int max, struct ef_walk *w)
{
    (void)max;
    w->n = 0;
    return -1;
}

int ef_cfi_still(const struct ef_walk *w)
{
    (void)w;
    return 0;
}

int ef_cfi_walk_copy(const uint64_t *regs, const unsigned char *copy, uintptr_t len, uintptr_t *out,
                     int max)
{
    (void)regs, (void)copy, (void)len, (void)out, (void)max;
    return -1;
}
#endif
