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
 * this file walks the same ones, with the rules it reads once per return
 * address from the object's .eh_frame_hdr (found by _dl_find_object, which
 * takes no lock) and keeps in a table.  A frame with any other rule (a
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
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "ef.h"

/* The registers a caller keeps (and the caller's pc and stack pointer) as
 * they are at the return from this function: regs[EF_R_RIP] is its return
 * address, regs[EF_R_RSP] the stack pointer after the return. */
#if defined(__x86_64__)
__asm__(".text\n"
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
        ".size ef_snap_regs, .-ef_snap_regs\n");
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

/* ---------------------------------------------------------- the rules */

enum {
    RULE_KNOWN = 1,     /* the entry holds a rule (else: give up) */
    RULE_CFA_RBP = 2,   /* CFA = rbp + off (else rsp + off) */
    RULE_RBP_SAVED = 4, /* rbp saved at CFA + rbp_off */
    RULE_LAST = 8,      /* the return address is undefined: the outermost frame */
};
/* A rule in one word: off (32 bits, signed), rbp_off (16, signed), flags. */
static uint64_t rule_pack(int32_t off, int16_t rbp_off, unsigned flags)
{
    return (uint64_t)(uint32_t)off | (uint64_t)(uint16_t)rbp_off << 32 | (uint64_t)flags << 48;
}
#define RULE_OFF(r) ((int32_t)(uint32_t)(r))
#define RULE_RBP_OFF(r) ((int16_t)(uint16_t)((r) >> 32))
#define RULE_FLAGS(r) ((unsigned)((r) >> 48))
#define RULE_BAD rule_pack(0, 0, 0)

#if defined(__x86_64__)

/* Each entry is written key 0, rule, key and read key, rule, key (x86
 * keeps stores in order): a reader that sees the same key twice has the
 * rule written with it.  .bss: a process touches the pages it uses. */
#define TABLE_BITS 12
struct entry {
    _Atomic uint64_t key; /* the return address | generation << 48; 0 free */
    _Atomic uint64_t rule;
};
static struct entry table[1u << TABLE_BITS];
static _Atomic uint32_t generation = 1;

void ef_cfi_code_unloaded(void)
{
    atomic_fetch_add(&generation, 1);
}

static unsigned slot_of(uint64_t key)
{
    return (unsigned)((key * 0x9e3779b97f4a7c15ull) >> (64 - TABLE_BITS));
}

/* --------------------------------------------- reading the unwind tables */

struct cursor {
    const uint8_t *p, *end;
    int bad;
};

static uint8_t u8(struct cursor *c)
{
    if (c->p >= c->end) {
        c->bad = 1;
        return 0;
    }
    return *c->p++;
}

static uint64_t uleb(struct cursor *c)
{
    uint64_t v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        uint8_t b = u8(c);
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return v;
    }
    c->bad = 1;
    return 0;
}

static int64_t sleb(struct cursor *c)
{
    int64_t v = 0;
    unsigned shift = 0;
    uint8_t b;
    do {
        b = u8(c);
        if (shift < 64)
            v |= (int64_t)((uint64_t)(b & 0x7f) << shift);
        shift += 7;
    } while ((b & 0x80) && !c->bad && shift < 70);
    if (shift < 64 && (b & 0x40))
        v |= -((int64_t)1 << shift);
    return v;
}

static uint64_t fixed(struct cursor *c, unsigned n)
{
    if ((size_t)(c->end - c->p) < n) {
        c->bad = 1;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, n); /* little-endian */
    c->p += n;
    return v;
}

/* A pointer in DWARF EH encoding enc (absolute, or relative to where it is);
 * indirect and other bases are refused. */
static uint64_t encoded(struct cursor *c, uint8_t enc)
{
    const uint8_t *at = c->p;
    uint64_t v;
    if (enc == 0xff) { /* DW_EH_PE_omit */
        c->bad = 1;
        return 0;
    }
    switch (enc & 0x0f) {
    case 0x00: /* absptr */
    case 0x04: /* udata8 */
    case 0x0c: /* sdata8 */
        v = fixed(c, 8);
        break;
    case 0x03: /* udata4 */
        v = fixed(c, 4);
        break;
    case 0x0b: /* sdata4 */
        v = (uint64_t)(int64_t)(int32_t)fixed(c, 4);
        break;
    case 0x02: /* udata2 */
        v = fixed(c, 2);
        break;
    case 0x0a: /* sdata2 */
        v = (uint64_t)(int64_t)(int16_t)fixed(c, 2);
        break;
    case 0x01: /* uleb128 */
        v = uleb(c);
        break;
    case 0x09: /* sleb128 */
        v = (uint64_t)sleb(c);
        break;
    default:
        c->bad = 1;
        return 0;
    }
    switch (enc & 0x70) {
    case 0x00:
        break;
    case 0x10: /* pcrel */
        v += (uint64_t)(uintptr_t)at;
        break;
    default:
        c->bad = 1;
    }
    if (enc & 0x80) /* indirect */
        c->bad = 1;
    return v;
}

/* What the rules of one row say about the registers that matter. */
enum reg_how { HOW_SAME = 0, HOW_OFFSET, HOW_UNDEFINED, HOW_OTHER };
struct row {
    int cfa_reg;   /* 6 rbp, 7 rsp; anything else: give up */
    int64_t cfa_off;
    int cfa_expr;  /* a CFA expression: give up */
    int rbp_how, ra_how;
    int64_t rbp_off, ra_off;
};
#define DW_RBP 6
#define DW_RSP 7
#define DW_RA 16

struct cie {
    uint64_t code_align;
    int64_t data_align;
    uint8_t fde_enc;
    int has_z;
    const uint8_t *init, *init_end;
};

static void reg_rule(struct row *r, uint64_t reg, int how, int64_t off)
{
    if (reg == DW_RBP) {
        r->rbp_how = how;
        r->rbp_off = off;
    } else if (reg == DW_RA) {
        r->ra_how = how;
        r->ra_off = off;
    }
}

#define STATES 8
/* Run the instructions in [c) on row r up to pc (loc is where the row
 * starts); init: the CIE's initial row, for DW_CFA_restore.  0 on success. */
static int run(struct cursor *c, const struct cie *cie, struct row *r, const struct row *init,
               uint64_t loc, uint64_t pc)
{
    struct row saved[STATES];
    int nsaved = 0;
    while (c->p < c->end && !c->bad) {
        uint8_t op = u8(c);
        uint64_t reg, delta = 0;
        switch (op & 0xc0) {
        case 0x40: /* advance_loc */
            delta = (op & 0x3f) * cie->code_align;
            goto advance;
        case 0x80: /* offset */
            reg_rule(r, op & 0x3f, HOW_OFFSET, (int64_t)uleb(c) * cie->data_align);
            continue;
        case 0xc0: /* restore */
            reg = op & 0x3f;
            if (reg == DW_RBP)
                r->rbp_how = init->rbp_how, r->rbp_off = init->rbp_off;
            else if (reg == DW_RA)
                r->ra_how = init->ra_how, r->ra_off = init->ra_off;
            continue;
        }
        switch (op) {
        case 0x00: /* nop */
            break;
        case 0x02: /* advance_loc1 */
            delta = fixed(c, 1) * cie->code_align;
            goto advance;
        case 0x03: /* advance_loc2 */
            delta = fixed(c, 2) * cie->code_align;
            goto advance;
        case 0x04: /* advance_loc4 */
            delta = fixed(c, 4) * cie->code_align;
            goto advance;
        case 0x05: /* offset_extended */
            reg = uleb(c);
            reg_rule(r, reg, HOW_OFFSET, (int64_t)uleb(c) * cie->data_align);
            break;
        case 0x11: /* offset_extended_sf */
            reg = uleb(c);
            reg_rule(r, reg, HOW_OFFSET, sleb(c) * cie->data_align);
            break;
        case 0x06: /* restore_extended */
            reg = uleb(c);
            if (reg == DW_RBP)
                r->rbp_how = init->rbp_how, r->rbp_off = init->rbp_off;
            else if (reg == DW_RA)
                r->ra_how = init->ra_how, r->ra_off = init->ra_off;
            break;
        case 0x07: /* undefined */
            reg_rule(r, uleb(c), HOW_UNDEFINED, 0);
            break;
        case 0x08: /* same_value */
            reg_rule(r, uleb(c), HOW_SAME, 0);
            break;
        case 0x09: /* register */
            reg = uleb(c);
            (void)uleb(c);
            reg_rule(r, reg, HOW_OTHER, 0);
            break;
        case 0x0a: /* remember_state */
            if (nsaved == STATES)
                return -1;
            saved[nsaved++] = *r;
            break;
        case 0x0b: /* restore_state */
            if (!nsaved)
                return -1;
            *r = saved[--nsaved];
            break;
        case 0x0c: /* def_cfa */
            r->cfa_reg = (int)uleb(c);
            r->cfa_off = (int64_t)uleb(c);
            r->cfa_expr = 0;
            break;
        case 0x12: /* def_cfa_sf */
            r->cfa_reg = (int)uleb(c);
            r->cfa_off = sleb(c) * cie->data_align;
            r->cfa_expr = 0;
            break;
        case 0x0d: /* def_cfa_register */
            r->cfa_reg = (int)uleb(c);
            break;
        case 0x0e: /* def_cfa_offset */
            r->cfa_off = (int64_t)uleb(c);
            break;
        case 0x13: /* def_cfa_offset_sf */
            r->cfa_off = sleb(c) * cie->data_align;
            break;
        case 0x0f: /* def_cfa_expression */
            r->cfa_expr = 1;
            delta = uleb(c);
            if ((uint64_t)(c->end - c->p) < delta)
                return -1;
            c->p += delta;
            delta = 0;
            break;
        case 0x10: /* expression */
        case 0x16: /* val_expression */
            reg = uleb(c);
            reg_rule(r, reg, HOW_OTHER, 0);
            delta = uleb(c);
            if ((uint64_t)(c->end - c->p) < delta)
                return -1;
            c->p += delta;
            delta = 0;
            break;
        case 0x14: /* val_offset */
            reg = uleb(c);
            (void)uleb(c);
            reg_rule(r, reg, HOW_OTHER, 0);
            break;
        case 0x15: /* val_offset_sf */
            reg = uleb(c);
            (void)sleb(c);
            reg_rule(r, reg, HOW_OTHER, 0);
            break;
        case 0x2e: /* GNU_args_size */
            (void)uleb(c);
            break;
        case 0x2f: /* GNU_negative_offset_extended */
            reg = uleb(c);
            reg_rule(r, reg, HOW_OFFSET, -(int64_t)uleb(c) * cie->data_align);
            break;
        default: /* set_loc, and anything newer: not ours to guess */
            return -1;
        }
        continue;
    advance:
        if (loc + delta > pc)
            return 0; /* the row that holds pc is complete */
        loc += delta;
    }
    return c->bad ? -1 : 0;
}

static int parse_cie(const uint8_t *at, const uint8_t *limit, struct cie *cie)
{
    struct cursor c = {at, limit, 0};
    uint64_t len = fixed(&c, 4);
    if (c.bad || len == 0 || len >= 0xfffffff0u || (uint64_t)(limit - c.p) < len)
        return -1;
    c.end = c.p + len;
    if (fixed(&c, 4) != 0) /* a CIE's id */
        return -1;
    uint8_t version = u8(&c);
    if (version != 1 && version != 3)
        return -1;
    const char *aug = (const char *)c.p;
    size_t alen = strnlen(aug, (size_t)(c.end - c.p));
    if (alen == (size_t)(c.end - c.p))
        return -1;
    c.p += alen + 1;
    cie->code_align = uleb(&c);
    cie->data_align = sleb(&c);
    uint64_t ra = version == 1 ? u8(&c) : uleb(&c);
    if (ra != DW_RA)
        return -1;
    cie->fde_enc = 0;
    cie->has_z = aug[0] == 'z';
    if (alen && !cie->has_z)
        return -1; /* "eh" and other old forms */
    if (cie->has_z) {
        uint64_t dlen = uleb(&c);
        if (c.bad || (uint64_t)(c.end - c.p) < dlen)
            return -1;
        struct cursor d = {c.p, c.p + dlen, 0};
        for (size_t i = 1; i < alen; i++) {
            switch (aug[i]) {
            case 'R':
                cie->fde_enc = u8(&d);
                break;
            case 'L':
                (void)u8(&d);
                break;
            case 'P': {
                uint8_t penc = u8(&d);
                (void)encoded(&d, (uint8_t)(penc & 0x7f)); /* skipped: indirect is fine */
                break;
            }
            default: /* 'S' (a signal frame) and anything unknown */
                return -1;
            }
        }
        if (d.bad)
            return -1;
        c.p += dlen;
    }
    if (c.bad)
        return -1;
    cie->init = c.p;
    cie->init_end = c.end;
    return 0;
}

/* The FDE for pc in the sorted table of .eh_frame_hdr at hdr; NULL none. */
static const uint8_t *find_fde(const uint8_t *hdr, uintptr_t pc)
{
    if (hdr[0] != 1 || hdr[2] != 0x03 || hdr[3] != 0x3b)
        return NULL; /* version 1, udata4 count, datarel sdata4 table */
    struct cursor c = {hdr + 4, hdr + 4 + 16, 0};
    (void)encoded(&c, hdr[1]); /* eh_frame_ptr */
    if (c.bad)
        return NULL;
    uint32_t count;
    memcpy(&count, c.p, 4);
    const int32_t *t = (const int32_t *)(const void *)(c.p + 4);
    intptr_t rel = (intptr_t)(pc - (uintptr_t)hdr);
    if (!count || rel < t[0])
        return NULL;
    uint32_t lo = 0, hi = count; /* the last entry whose start <= pc */
    while (hi - lo > 1) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (t[2 * mid] <= rel)
            lo = mid;
        else
            hi = mid;
    }
    return hdr + t[2 * lo + 1];
}

/* The rule at pc, read from the unwind tables. */
static uint64_t rule_at(uintptr_t pc)
{
    struct dl_find_object fo;
    if (_dl_find_object((void *)pc, &fo) != 0 || !fo.dlfo_eh_frame)
        return RULE_BAD;
    const uint8_t *fde = find_fde(fo.dlfo_eh_frame, pc);
    const uint8_t *limit = fo.dlfo_map_end;
    if (!fde || fde < (const uint8_t *)fo.dlfo_map_start || fde + 8 > limit)
        return RULE_BAD;
    struct cursor c = {fde, limit, 0};
    uint64_t len = fixed(&c, 4);
    if (len == 0 || len >= 0xfffffff0u || (uint64_t)(limit - c.p) < len)
        return RULE_BAD;
    c.end = c.p + len;
    const uint8_t *idp = c.p;
    uint32_t cie_off = (uint32_t)fixed(&c, 4);
    if (!cie_off || (uintptr_t)cie_off > (uintptr_t)(idp - (const uint8_t *)fo.dlfo_map_start))
        return RULE_BAD;
    struct cie cie;
    if (parse_cie(idp - cie_off, limit, &cie) != 0)
        return RULE_BAD;
    uint64_t start = encoded(&c, cie.fde_enc);
    uint64_t range = encoded(&c, (uint8_t)(cie.fde_enc & 0x0f));
    if (c.bad || pc < start || pc - start >= range)
        return RULE_BAD; /* no table covers pc: libunwind would guess */
    if (cie.has_z) {
        uint64_t alen = uleb(&c);
        if (c.bad || (uint64_t)(c.end - c.p) < alen)
            return RULE_BAD;
        c.p += alen;
    }
    struct row r = {.cfa_reg = -1, .rbp_how = HOW_SAME, .ra_how = HOW_SAME};
    struct cursor ic = {cie.init, cie.init_end, 0};
    if (run(&ic, &cie, &r, &r, 0, UINT64_MAX) != 0)
        return RULE_BAD;
    struct row init = r;
    if (run(&c, &cie, &r, &init, start, pc) != 0)
        return RULE_BAD;
    if (r.cfa_expr || (r.cfa_reg != DW_RSP && r.cfa_reg != DW_RBP) || r.cfa_off < 8 ||
        r.cfa_off > INT32_MAX)
        return RULE_BAD;
    unsigned flags = RULE_KNOWN | (r.cfa_reg == DW_RBP ? RULE_CFA_RBP : 0);
    if (r.ra_how == HOW_UNDEFINED)
        flags |= RULE_LAST;
    else if (r.ra_how != HOW_OFFSET || r.ra_off != -8)
        return RULE_BAD;
    if (r.rbp_how == HOW_OFFSET) {
        if (r.rbp_off < INT16_MIN || r.rbp_off > INT16_MAX || (r.rbp_off & 7))
            return RULE_BAD;
        flags |= RULE_RBP_SAVED;
    } else if (r.rbp_how != HOW_SAME) {
        return RULE_BAD;
    }
    return rule_pack((int32_t)r.cfa_off, (int16_t)r.rbp_off, flags);
}

static uint64_t rule_for(uintptr_t ret, uint32_t gen)
{
    uint64_t key = (uint64_t)ret | (uint64_t)(gen & 0xffff) << 48;
    struct entry *e = &table[slot_of(key)];
    uint64_t k1 = atomic_load_explicit(&e->key, memory_order_acquire);
    if (EF_LIKELY(k1 == key)) {
        uint64_t r = atomic_load_explicit(&e->rule, memory_order_acquire);
        if (atomic_load_explicit(&e->key, memory_order_acquire) == k1)
            return r;
    }
    /* the rule of the call instruction: ret - 1 */
    uint64_t r = rule_at(ret - 1);
    atomic_store_explicit(&e->key, 0, memory_order_release);
    atomic_store_explicit(&e->rule, r, memory_order_release);
    atomic_store_explicit(&e->key, key, memory_order_release);
    return r;
}

/* Walk from the frame (pc, sp, rbp) up, the first skip frames unrecorded;
 * pcs as unw_backtrace gives them (each frame's return address), or -1 when
 * a frame is not one we walk. */
int ef_cfi_walk(uintptr_t pc, uintptr_t sp, uintptr_t rbp, uintptr_t top, int skip, void **out,
                int max)
{
    uint32_t gen = atomic_load_explicit(&generation, memory_order_acquire);
    int n = 0;
    if (pc >> 47 || !top)
        return -1;
    while (n < max) {
        if (skip > 0)
            skip--;
        else if ((out[n++] = (void *)pc), n == max)
            break; /* no step past the last frame asked for */
        uint64_t r = rule_for(pc, gen);
        unsigned f = RULE_FLAGS(r);
        if (!(f & RULE_KNOWN))
            return -1;
        if (f & RULE_LAST)
            break;
        uintptr_t cfa = ((f & RULE_CFA_RBP) ? rbp : sp) + (uintptr_t)(intptr_t)RULE_OFF(r);
        if (cfa <= sp || cfa > top || (cfa & 7))
            return -1;
        uintptr_t ra = *(const uintptr_t *)(cfa - 8);
        if (f & RULE_RBP_SAVED) {
            uintptr_t at = cfa + (uintptr_t)(intptr_t)RULE_RBP_OFF(r);
            if (at < sp || at + 8 > top)
                return -1;
            rbp = *(const uintptr_t *)at;
        }
        sp = cfa;
        pc = ra;
        if (!pc || pc >> 47)
            return -1; /* where libunwind would stop or fail: let it say */
    }
    return n;
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
    int max, n, nread, nrbp, uses_rbp;
    /* each word read, from sp0, and what it held: the return address slots
     * first, then from MEMO_FRAMES on the saved rbp slots (which matter only
     * if a frame's CFA is rbp-based) */
    uint32_t off[MEMO_WORDS];
    uintptr_t val[MEMO_WORDS];
    uintptr_t pcs[MEMO_FRAMES];
};
static EF_TLS struct memo memo;
static EF_TLS int memo_busy;     /* a signal handler's walk leaves it alone */
static EF_TLS uint32_t memo_serials;

static void memo_read(uintptr_t sp0, uintptr_t at, uintptr_t v, int *count, int base, int *keep)
{
    if (*keep && *count < MEMO_FRAMES && at - sp0 <= UINT32_MAX) {
        memo.off[base + *count] = (uint32_t)(at - sp0);
        memo.val[base + (*count)++] = v;
    } else {
        *keep = 0;
    }
}

/* The walk that keeps what checking it needs; -1 as ef_cfi_walk. */
static int walk_kept(uintptr_t pc, uintptr_t sp, uintptr_t rbp, uintptr_t top, void **out,
                     int max, uint32_t gen)
{
    uintptr_t sp0 = sp, rbp0 = rbp;
    int n = 0, keep = 1, skip = 1, uses_rbp = 0;
    memo.serial = 0;
    memo.nread = memo.nrbp = 0;
    while (n < max) {
        if (skip)
            skip = 0;
        else if ((out[n++] = (void *)pc), n == max)
            break;
        uint64_t r = rule_for(pc, gen);
        unsigned f = RULE_FLAGS(r);
        if (!(f & RULE_KNOWN))
            return -1;
        if (f & RULE_LAST)
            break;
        if (f & RULE_CFA_RBP)
            uses_rbp = 1;
        uintptr_t cfa = ((f & RULE_CFA_RBP) ? rbp : sp) + (uintptr_t)(intptr_t)RULE_OFF(r);
        if (cfa <= sp || cfa > top || (cfa & 7))
            return -1;
        uintptr_t ra = *(const uintptr_t *)(cfa - 8);
        memo_read(sp0, cfa - 8, ra, &memo.nread, 0, &keep);
        if (f & RULE_RBP_SAVED) {
            uintptr_t at = cfa + (uintptr_t)(intptr_t)RULE_RBP_OFF(r);
            if (at < sp || at + 8 > top)
                return -1;
            rbp = *(const uintptr_t *)at;
            memo_read(sp0, at, rbp, &memo.nrbp, MEMO_FRAMES, &keep);
        }
        sp = cfa;
        pc = ra;
        if (!pc || pc >> 47)
            return -1; /* where libunwind would stop or fail: let it say */
    }
    if (keep) {
        memcpy(memo.pcs, out, (size_t)n * sizeof(uintptr_t));
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

/* Is the stack from (sp0, rbp) up the one of the thread's last walk? */
static int memo_holds(uintptr_t sp0, uintptr_t rbp, uintptr_t top, int max, uint32_t gen)
{
    if (!memo.serial || memo.sp0 != sp0 || memo.top != top || memo.max != max || memo.gen != gen ||
        (memo.uses_rbp && memo.rbp0 != rbp))
        return 0;
    const unsigned char *base = (const unsigned char *)sp0;
    for (int i = 0; i < memo.nread; i++) {
        uintptr_t w;
        memcpy(&w, base + memo.off[i], sizeof w);
        if (w != memo.val[i])
            return 0;
    }
    for (int i = MEMO_FRAMES; memo.uses_rbp && i < MEMO_FRAMES + memo.nrbp; i++) {
        uintptr_t w;
        memcpy(&w, base + memo.off[i], sizeof w);
        if (w != memo.val[i])
            return 0;
    }
    return 1;
}

__attribute__((noinline)) int ef_cfi_backtrace(void **out, int max, uint32_t *serial)
{
    uint64_t regs[EF_R_COUNT];
    ef_snap_regs(regs);
    uintptr_t sp = regs[EF_R_RSP], top = ef_stack_top(sp, WALK_SPAN);
    uint32_t gen = atomic_load_explicit(&generation, memory_order_acquire);
    *serial = 0;
    if (max > MEMO_FRAMES || memo_busy) /* our own frame is not one unw_backtrace shows */
        return ef_cfi_walk(regs[EF_R_RIP], sp, regs[EF_R_RBP], top, 1, out, max);
    memo_busy = 1;
    int n;
    if (memo_holds(sp, regs[EF_R_RBP], top, max, gen)) {
        n = memo.n;
        memcpy(out, memo.pcs, (size_t)n * sizeof(uintptr_t));
    } else {
        n = walk_kept(regs[EF_R_RIP], sp, regs[EF_R_RBP], top, out, max, gen);
    }
    if (n > 0)
        *serial = memo.serial;
    memo_busy = 0;
    return n;
}

#else /* not x86-64: libunwind walks every stack */

void ef_cfi_code_unloaded(void)
{
}

int ef_cfi_walk(uintptr_t pc, uintptr_t sp, uintptr_t rbp, uintptr_t top, int skip, void **out,
                int max)
{
    (void)pc, (void)sp, (void)rbp, (void)top, (void)skip, (void)out, (void)max;
    return -1;
}

int ef_cfi_backtrace(void **out, int max, uint32_t *serial)
{
    (void)out, (void)max;
    *serial = 0;
    return -1;
}
#endif
