/*
 * ehframe.c - the unwind rule of a return address, read from the unwind
 * tables of the object it is in (.eh_frame, found through .eh_frame_hdr's
 * sorted table), for cfi.c's walk.
 *
 * Only what cfi.c walks is answered: the canonical frame address (CFA) is
 * rsp or rbp plus a constant, the return address is at CFA - 8, rbp is the
 * same or saved at CFA + a constant; or the return address is undefined (the
 * outermost frame).  Anything else (a CFA expression, a signal frame's CIE,
 * a 64-bit DWARF length, an encoding we do not read, no table covering the
 * address) answers "not one of those", and the walk gives up for libunwind.
 * The tables are those of objects the loader mapped: _dl_find_object names
 * the object (no lock), and every read is bounded by the object's mapping.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#include "ef.h"

#if defined(__x86_64__)

static uint64_t rule_pack(int32_t off, int16_t rbp_off, unsigned flags)
{
    return (uint64_t)(uint32_t)off | (uint64_t)(uint16_t)rbp_off << 32 | (uint64_t)flags << 48;
}
_Static_assert(EF_RULE_BAD == 0, "a zero word is no rule");

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
        v = (int64_t)((uint64_t)v | ~(uint64_t)0 << shift); /* sign-extend */
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

uint64_t ef_eh_rule_at(uintptr_t pc)
{
    struct dl_find_object fo;
    if (_dl_find_object((void *)pc, &fo) != 0 || !fo.dlfo_eh_frame)
        return EF_RULE_BAD;
    const uint8_t *fde = find_fde(fo.dlfo_eh_frame, pc);
    const uint8_t *limit = fo.dlfo_map_end;
    if (!fde || fde < (const uint8_t *)fo.dlfo_map_start || fde + 8 > limit)
        return EF_RULE_BAD;
    struct cursor c = {fde, limit, 0};
    uint64_t len = fixed(&c, 4);
    if (len == 0 || len >= 0xfffffff0u || (uint64_t)(limit - c.p) < len)
        return EF_RULE_BAD;
    c.end = c.p + len;
    const uint8_t *idp = c.p;
    uint32_t cie_off = (uint32_t)fixed(&c, 4);
    if (!cie_off || (uintptr_t)cie_off > (uintptr_t)(idp - (const uint8_t *)fo.dlfo_map_start))
        return EF_RULE_BAD;
    struct cie cie;
    if (parse_cie(idp - cie_off, limit, &cie) != 0)
        return EF_RULE_BAD;
    uint64_t start = encoded(&c, cie.fde_enc);
    uint64_t range = encoded(&c, (uint8_t)(cie.fde_enc & 0x0f));
    if (c.bad || pc < start || pc - start >= range)
        return EF_RULE_BAD; /* no table covers pc: libunwind would guess */
    if (cie.has_z) {
        uint64_t alen = uleb(&c);
        if (c.bad || (uint64_t)(c.end - c.p) < alen)
            return EF_RULE_BAD;
        c.p += alen;
    }
    struct row r = {.cfa_reg = -1, .rbp_how = HOW_SAME, .ra_how = HOW_SAME};
    struct cursor ic = {cie.init, cie.init_end, 0};
    if (run(&ic, &cie, &r, &r, 0, UINT64_MAX) != 0)
        return EF_RULE_BAD;
    struct row init = r;
    if (run(&c, &cie, &r, &init, start, pc) != 0)
        return EF_RULE_BAD;
    if (r.cfa_expr || (r.cfa_reg != DW_RSP && r.cfa_reg != DW_RBP) || r.cfa_off < 8 ||
        r.cfa_off > INT32_MAX)
        return EF_RULE_BAD;
    unsigned flags = EF_RULE_KNOWN | (r.cfa_reg == DW_RBP ? EF_RULE_CFA_RBP : 0);
    if (r.ra_how == HOW_UNDEFINED)
        flags |= EF_RULE_LAST;
    else if (r.ra_how != HOW_OFFSET || r.ra_off != -8)
        return EF_RULE_BAD;
    if (r.rbp_how == HOW_OFFSET) {
        if (r.rbp_off < INT16_MIN || r.rbp_off > INT16_MAX || (r.rbp_off & 7))
            return EF_RULE_BAD;
        flags |= EF_RULE_RBP_SAVED;
    } else if (r.rbp_how != HOW_SAME) {
        return EF_RULE_BAD;
    }
    return rule_pack((int32_t)r.cfa_off, (int16_t)r.rbp_off, flags);
}

#else

uint64_t ef_eh_rule_at(uintptr_t pc)
{
    (void)pc;
    return EF_RULE_BAD;
}
#endif
