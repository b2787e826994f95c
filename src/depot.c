/*
 * depot.c - the stack depot: each stack stored once, for the whole tree.
 *
 * An open-addressing hash set in the shared registry (EF_T_DEPOT, its frames
 * in EF_T_FRAMES), so a stack id means the same thing in every process of the
 * tree: records in shared memory name stacks by id, and two identical reports
 * have identical ids (EPOLLFORK_DEDUP compares them).  A stack is the words
 * libunwind gave (return addresses), and, for a registration made from
 * Python, a last word EF_PY_MARK | id of another entry that holds its Python
 * frame words (pyframes.c).
 *
 * Any process of the tree can write the registry: an entry is read once,
 * checked against the frame store (ef_reg_span), and a slot a dead writer
 * left half-written is waited for once, then skipped.  stack.c captures the
 * stacks and owns the ids it hands out before they are here (deferred
 * captures).
 */
#define _GNU_SOURCE
#include <string.h>

#include "ef.h"

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
static uint64_t *stuck;     /* [EF_DEPOT_SLOTS / 64], the zone's, at the first such slot */
_Static_assert(EF_DEPOT_SLOTS / 64 * sizeof(uint64_t) <= EF_Z_BYTES(STUCK), "stuck fits");

static int is_stuck(uint32_t s)
{
    return stuck && (stuck[s / 64] >> (s % 64) & 1);
}

static void set_stuck(uint32_t s)
{
    if (stuck || (stuck = ef_zone(EF_Z_STUCK)))
        stuck[s / 64] |= 1ull << (s % 64);
}

#define ENTRY_MAX EF_DEPOT_ENTRY_MAX


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
        if (st == EF_DEPOT_WRITING && is_stuck(s))
            continue; /* waited for once already: its writer died */
        for (int spin = 0; st == EF_DEPOT_WRITING && spin < 2000; spin++) {
            ef_cpu_relax();
            st = atomic_load_explicit(&d->state, memory_order_acquire);
        }
        if (st == EF_DEPOT_WRITING)
            set_stuck(s);
        if (st == EF_DEPOT_READY) {
            uint64_t have[ENTRY_MAX];
            if (atomic_load_explicit(&d->hash, memory_order_relaxed) == h &&
                ef_depot_read(s + 1, have, ENTRY_MAX) == n &&
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
uint32_t ef_depot_read(uint32_t id, uint64_t *pcs, uint32_t max)
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

uint32_t ef_depot_native(uint32_t id, uint64_t *pcs, uint32_t max)
{
    uint64_t all[ENTRY_MAX];
    uint32_t n = ef_depot_read(id, all, ENTRY_MAX);
    if (n && is_py_mark(all[n - 1]))
        n--;
    if (n > max)
        n = max;
    memcpy(pcs, all, n * sizeof(uint64_t));
    return n;
}

uint32_t ef_depot_python(uint32_t id, uint64_t *words, uint32_t max)
{
    uint64_t all[ENTRY_MAX];
    uint32_t n = ef_depot_read(id, all, ENTRY_MAX);
    if (!n || !is_py_mark(all[n - 1]))
        return 0;
    uint32_t py = (uint32_t)all[n - 1];
    if (py == id) /* a marker pointing at its own entry: damaged */
        return 0;
    n = ef_depot_read(py, words, max);
    for (uint32_t i = 0; i < n; i++)
        if (is_py_mark(words[i])) /* a native entry where Python words should be */
            return 0;
    return n;
}

/* Python words go to the depot through here, so that storing them does not
 * evict the calling thread's cached native stack (ef_depot_put's). */
uint32_t ef_depot_put_aside(const uintptr_t *pcs, uint32_t n)
{
    uint64_t h = last_hash;
    uint32_t id = last_id, ln = last_n;
    const struct ef_registry *reg = last_reg;
    uint32_t r = ef_depot_put(pcs, n);
    last_hash = h, last_id = id, last_n = ln, last_reg = reg;
    return r;
}

