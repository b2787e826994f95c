/*
 * registry.c - the memory that a process tree shares, and its allocators.
 *
 * Deciding a conflict needs facts from other processes: the parent must learn
 * that its child changed the list, with the child's stack, possibly after the
 * child exited.  So the first process that creates an epoll instance (or
 * forks) makes one memfd and maps its header; every process forked from it
 * inherits the fd and the mappings, and exec drops both.  The tables after the
 * header are mapped by each process in chunks of whole pages, on first use
 * (ef_reg_elem() in ef.h): a process's address space holds what it touched, not
 * the 60 MiB the tables may grow to (the file is sparse: untouched pages cost
 * nothing anywhere).  Nothing in it is locked: records are claimed with
 * compare-and-swap, published with release stores, and every capacity limit
 * degrades to "not tracked" with one notice for the whole tree.
 *
 * Any process of the tree can write it (one that dropped privileges, one
 * running arbitrary code): indexes and counters read from it are checked
 * where they are used, every compare-and-swap loop is bounded, and the shapes
 * of the tables are constants of the library, never read from it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ef.h"

#define EF_MAGIC 0x6570666f726b3032ull /* "epfork02" */
#define PAGE 4096u

EF_HOT struct ef_registry *ef_reg;
EF_HOT char *_Atomic ef_reg_chunk0[EF_NTABLES];
EF_HOT char *_Atomic *_Atomic ef_reg_chunks;
EF_HOT char *_Atomic ef_reg_nil;
_Static_assert(EF_REG_CHUNKS * sizeof(char *) <= EF_Z_BYTES(REG_CHUNKS), "the chunk slots fit");
struct ef_ring ef_ring_none;
static int reg_fd = -1;                  /* the memfd: inherited by fork children */
EF_HOT static _Atomic int map_failed;           /* said once per process */

static uint64_t round_page(uint64_t n)
{
    return (n + PAGE - 1) & ~(uint64_t)(PAGE - 1);
}

EF_INIT_TEXT uint64_t ef_reg_table_offset(enum ef_table t)
{
    uint64_t off = round_page(sizeof(struct ef_registry));
    for (int k = 0; k < (int)t; k++)
        off += round_page((uint64_t)ef_table_shapes[k].elem * ef_table_shapes[k].count);
    return off;
}

EF_INIT_TEXT uint64_t ef_reg_file_size(void)
{
    return ef_reg_table_offset(EF_NTABLES);
}

EF_INIT_TEXT int ef_registry_create(void)
{
    if (ef_reg)
        return 0;
    int fd = (int)ef_sys6(SYS_memfd_create, (long)"epollfork-registry", MFD_CLOEXEC, 0, 0, 0, 0);
    if (fd < 0)
        return -1; /* errno says why: the caller says it once (hold.c) */
    if (ef_sys_ftruncate(fd, (off_t)ef_reg_file_size()) != 0) {
        int e = errno;
        ef_sys_close(fd);
        errno = e;
        return -1;
    }
    int hi = ef_fd_take_high(fd); /* the shim's own fd: hidden from the program */
    if (hi < 0) {
        ef_sys_close(fd);
        errno = EMFILE;
        return -1;
    }
    void *m = ef_sys_mmap(NULL, round_page(sizeof(struct ef_registry)), PROT_READ | PROT_WRITE,
                           MAP_SHARED, hi, 0);
    if (m == MAP_FAILED) {
        int e = errno;
        ef_fd_own(hi, 0);
        ef_sys_close(hi);
        errno = e;
        return -1;
    }
    struct ef_registry *r = m;
    r->magic = EF_MAGIC;
    atomic_store(&r->ninst_hw, 1); /* index 0 means "none" */
    atomic_store(&r->nproc, 1);
    atomic_store(&r->depot_frames_used, 1);
    reg_fd = hi;
    ef_owner_pid = ef_sys_getpid();
    ef_reg = r;
    return 0;
}

/* The program wants the memfd's number (dup2 onto it): ours moves, as the
 * sinks do (log.c), for the chunks not mapped yet.  In a vfork child, which
 * shares our memory but not our fd table, its dup2 replaces only its own
 * copy: change nothing. */
int ef_reg_relocate(int fd)
{
    if (reg_fd < 0 || fd != reg_fd)
        return -1;
    if (ef_in_vfork_child())
        return 0;
    reg_fd = ef_fd_copy_away(fd);
    ef_sys_close(fd);
    return 0;
}

EF_INIT_TEXT char *ef_reg_map_chunk(enum ef_table t, uint32_t chunk)
{
    const struct ef_table_shape *sh = &ef_table_shapes[t];
    if (!ef_reg || reg_fd < 0 || chunk >= sh->count >> sh->shift)
        return NULL;
    if (chunk && !atomic_load(&ef_reg_chunks)) {
        char *_Atomic *c = ef_zone(EF_Z_REG_CHUNKS);
        if (!c)
            return NULL;
        atomic_store(&ef_reg_chunks, c);
    }
    _Atomic(char *) *slot = ef_reg_chunk_slot(t, chunk);
    char *b = atomic_load(slot);
    if (b)
        return b;
    size_t bytes = (size_t)sh->elem << sh->shift;
    uint64_t off = ef_reg_table_offset(t) + (uint64_t)chunk * bytes;
    int e = errno;
    void *m = ef_sys_mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, reg_fd, (off_t)off);
    if (m == MAP_FAILED) {
        /* RLIMIT_AS, or the program closed our fd with a raw syscall: this
         * part of the tree's memory stays out of reach in this process */
        if (!atomic_exchange(&map_failed, 1))
            ef_log_notice("epollfork: cannot map more of the memory shared by the process tree "
                          "(%s); this process tracks less from now on", strerror(errno));
        errno = e;
        return NULL;
    }
    char *expect = NULL;
    if (!atomic_compare_exchange_strong(slot, &expect, (char *)m)) {
        ef_sys_munmap(m, bytes); /* another thread mapped it first */
        return expect;
    }
    return m;
}

void *ef_reg_span(enum ef_table t, uint32_t start, uint32_t n)
{
    const struct ef_table_shape *sh = &ef_table_shapes[t];
    if (!n || start >= sh->count || n > sh->count - start ||
        start >> sh->shift != (start + n - 1) >> sh->shift)
        return NULL;
    return ef_reg_elem(t, start);
}

uint32_t ef_reg_reserve(enum ef_table t, _Atomic uint32_t *used, uint32_t n)
{
    const struct ef_table_shape *sh = &ef_table_shapes[t];
    uint32_t per = 1u << sh->shift;
    if (!n || n > per)
        return UINT32_MAX;
    uint32_t cur = atomic_load(used);
    for (int tries = 0; tries < 4096; tries++) {
        /* The counter is shared: another process may have pushed it anywhere,
         * so nothing here may overflow (start + n can wrap). */
        if (cur >= sh->count) {
            atomic_store(used, sh->count); /* stays full, never wraps */
            return UINT32_MAX;
        }
        uint32_t start = cur;
        if (start / per != (start + n - 1) / per) /* would split a record */
            start = (start / per + 1) * per;
        if (start >= sh->count || n > sh->count - start) {
            atomic_store(used, sh->count); /* stays full, never wraps */
            return UINT32_MAX;
        }
        if (atomic_compare_exchange_weak(used, &cur, start + n))
            return start;
    }
    return UINT32_MAX;
}

int ef_notice_once(uint32_t bit)
{
    if (!ef_reg)
        return 0;
    return !(atomic_fetch_or(&ef_reg->notices, bit) & bit);
}

static int pid_dead(int32_t pid)
{
    return !ef_procfs_pid_exists(pid);
}

/* Drop holder slots of processes that no longer exist; returns live holders. */
static uint32_t prune_holders(struct ef_inst *in)
{
    uint32_t live = 0;
    for (int i = 0; i < EF_HOLDERS; i++) {
        uint64_t w = atomic_load(&in->holders[i]);
        uint32_t pid = (uint32_t)(w >> 32);
        if (!pid)
            continue;
        if (!(pid & EF_RESERVED) && pid_dead((int32_t)pid)) {
            if (atomic_compare_exchange_strong(&in->holders[i], &w, 0)) {
                atomic_fetch_sub(&in->nholders, 1);
                continue;
            }
        }
        live++;
    }
    return live;
}

/* A compare-and-swap loop on a shared word gives up after this many tries: a
 * hostile process rewriting the word forever must not hang us. */
#define CAS_TRIES 4096
#define RECLAIM_PER_CALL 8

static void free_push(uint32_t idx)
{
    uint64_t head = atomic_load(&ef_reg->free_head);
    for (int t = 0; t < CAS_TRIES; t++) {
        atomic_store(&ef_reg->inst_next[idx], (uint32_t)head);
        uint64_t nh = ((head >> 32) + 1) << 32 | idx;
        if (atomic_compare_exchange_weak(&ef_reg->free_head, &head, nh))
            return;
    }
}

/* The list's links are shared words: an index read from them is checked
 * before it indexes anything. */
static uint32_t free_pop(void)
{
    uint64_t head = atomic_load(&ef_reg->free_head);
    for (int t = 0; t < CAS_TRIES; t++) {
        uint32_t idx = (uint32_t)head;
        if (!idx || idx >= EF_MAX_INST)
            return 0;
        uint32_t next = atomic_load(&ef_reg->inst_next[idx]);
        if (next >= EF_MAX_INST)
            next = 0;
        uint64_t nh = ((head >> 32) + 1) << 32 | next;
        if (atomic_compare_exchange_weak(&ef_reg->free_head, &head, nh))
            return idx;
    }
    return 0;
}

EF_INIT_TEXT static struct ef_inst *init_inst(uint32_t idx)
{
    struct ef_inst *in = ef_reg_elem(EF_T_INST, idx);
    if (!in)
        return NULL;
    atomic_store(&in->crossed, 0);
    atomic_store(&in->nholders, 0);
    atomic_store(&in->overflow, 0);
    atomic_store(&in->allowed, 0);
    atomic_store(&in->gen, 0);
    for (int i = 0; i < EF_HOLDERS; i++)
        atomic_store(&in->holders[i], 0);
    for (int i = 0; i < EF_RING; i++)
        atomic_store(&in->ring[i].seq, 0);
    atomic_fetch_add(&in->uid, 1);
    if (!atomic_load(&in->uid))
        atomic_store(&in->uid, 1);
    atomic_store_explicit(&in->state, EF_INST_LIVE, memory_order_release);
    return in;
}

EF_INIT_TEXT struct ef_inst *ef_inst_alloc(uint32_t *idx)
{
    if (!ef_reg)
        return NULL;
    uint32_t i = free_pop();
    if (!i) {
        uint32_t hw = atomic_load(&ef_reg->ninst_hw);
        while (hw < EF_MAX_INST) {
            if (atomic_compare_exchange_weak(&ef_reg->ninst_hw, &hw, hw + 1)) {
                i = hw;
                break;
            }
        }
    }
    if (!i) {
        /* Full: reclaim instances whose every holder has exited without us
         * seeing it (_exit, a signal).  A few per call, from a shared
         * cursor, so that past the limit every epoll_create still costs a
         * bounded amount (a full rescan with a kill() per holder took 20 ms
         * at 16,383 instances). */
        for (int budget = 0; budget < RECLAIM_PER_CALL && !i; budget++) {
            uint32_t k = atomic_fetch_add(&ef_reg->reclaim_next, 1) % (EF_MAX_INST - 1) + 1;
            struct ef_inst *in = ef_reg_elem(EF_T_INST, k);
            if (!in || atomic_load(&in->state) != EF_INST_LIVE || atomic_load(&in->overflow))
                continue;
            if (prune_holders(in) == 0) {
                uint32_t one = EF_INST_LIVE;
                if (atomic_compare_exchange_strong(&in->state, &one, EF_INST_FREE))
                    i = k;
            }
        }
    }
    if (!i) {
        if (ef_notice_once(EF_NOTICE_INST_FULL))
            ef_log_notice("epollfork: more than %d live epoll instances in this process tree; "
                          "new ones are not tracked", EF_MAX_INST - 1);
        return NULL;
    }
    *idx = i;
    return init_inst(i);
}

void ef_inst_free(uint32_t idx)
{
    if (!ef_reg || !idx || idx >= EF_MAX_INST)
        return;
    struct ef_inst *in = ef_reg_elem(EF_T_INST, idx);
    uint32_t one = EF_INST_LIVE;
    if (in && atomic_compare_exchange_strong(&in->state, &one, EF_INST_FREE))
        free_push(idx);
}

uint32_t ef_inst_prune(uint32_t idx)
{
    struct ef_inst *in = ef_reg && idx ? ef_reg_elem(EF_T_INST, idx) : NULL;
    return in ? prune_holders(in) : 0;
}

/* ------------------------------------------------------------ rings */

/* A ring record nobody can use any more: its owner and every process that
 * used it after it crossed a fork are gone. */
static int ring_orphaned(struct ef_ring *r)
{
    if (!pid_dead(r->owner_pid))
        return 0;
    for (int i = 0; i < EF_RING_USERS; i++) {
        int32_t p = atomic_load(&r->users[i]);
        if (p > 0 && !pid_dead(p))
            return 0;
    }
    return 1;
}

/* A free ring record (index 0 is never handed out); when the small table is
 * full, the records of rings whose processes are all gone come back (a child
 * that exits without closing its ring leaves its record behind). */
struct ef_ring *ef_ring_alloc(uint32_t *idx)
{
    if (!ef_reg)
        return NULL;
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 1; i < EF_MAX_RINGS; i++) {
            struct ef_ring *r = ef_reg_elem(EF_T_RINGS, i);
            if (!r)
                continue;
            uint32_t st = EF_RING_FREE;
            if (pass == 1 && atomic_load(&r->state) == EF_RING_LIVE && ring_orphaned(r))
                st = EF_RING_LIVE;
            if (atomic_load(&r->state) != st ||
                !atomic_compare_exchange_strong(&r->state, &st, EF_RING_LIVE))
                continue;
            atomic_fetch_add(&r->uid, 1);
            atomic_store(&r->crossed, 0);
            atomic_store(&r->use_seq, 0);
            r->last_pid = 0;
            r->last_proc = 0;
            r->last_stack = 0;
            for (int u = 0; u < EF_RING_USERS; u++)
                atomic_store(&r->users[u], 0);
            *idx = i;
            return r;
        }
    }
    return NULL;
}

void ef_ring_free(uint32_t idx, uint32_t uid)
{
    if (!ef_reg || !idx || idx >= EF_MAX_RINGS)
        return;
    struct ef_ring *r = ef_reg_elem(EF_T_RINGS, idx);
    if (!r || atomic_load(&r->uid) != uid)
        return;
    uint32_t st = EF_RING_LIVE;
    atomic_compare_exchange_strong(&r->state, &st, EF_RING_FREE);
}

EF_INIT_TEXT uint32_t ef_process_alloc(pid_t pid, uint32_t parent, uint32_t fork_stack, enum ef_fork_how how)
{
    if (!ef_reg)
        return 0;
    uint32_t i = atomic_fetch_add(&ef_reg->nproc, 1);
    if (i >= EF_MAX_PROC) {
        atomic_store(&ef_reg->nproc, EF_MAX_PROC);
        return 0; /* the caller prints the notice outside async-signal context */
    }
    struct ef_process *p = ef_reg_elem(EF_T_PROCS, i);
    if (!p)
        return 0;
    struct ef_process *pp = ef_process_at(parent);
    p->parent = pp ? parent : 0;
    p->fork_stack = fork_stack;
    p->depth = pp ? pp->depth + 1 : 0;
    p->fork_how = (uint32_t)how;
    atomic_store_explicit(&p->pid, pid, memory_order_release);
    return i;
}

struct ef_process *ef_process_at(uint32_t idx)
{
    if (!ef_reg || !idx)
        return NULL;
    return ef_reg_elem(EF_T_PROCS, idx);
}

uint32_t ef_process_of_pid(int32_t pid)
{
    if (!ef_reg)
        return 0;
    uint32_t n = atomic_load(&ef_reg->nproc);
    if (n > EF_MAX_PROC)
        n = EF_MAX_PROC;
    for (uint32_t i = n; i-- > 1;) {
        struct ef_process *p = ef_reg_elem(EF_T_PROCS, i);
        if (p && atomic_load(&p->pid) == pid)
            return i;
    }
    return 0;
}

/* Walk both records up to their common ancestor; the fork is the first one
 * below it on a's side (a is the modifier), or on b's side when a is the
 * ancestor.  Parent links and depths come from shared memory: each step is
 * checked, and the walk is bounded. */
uint32_t ef_process_split(uint32_t a, uint32_t b)
{
    if (!ef_process_at(a) || !ef_process_at(b))
        return 0;
    uint32_t below_a = 0, below_b = 0;
    for (int guard = 0; a != b && guard < 2 * EF_MAX_PROC; guard++) {
        struct ef_process *pa = ef_process_at(a), *pb = ef_process_at(b);
        if (!pa || !pb)
            return 0;
        if (pa->depth >= pb->depth) {
            below_a = a;
            a = pa->parent;
        } else {
            below_b = b;
            b = pb->parent;
        }
    }
    if (a != b)
        return 0;
    return below_a ? below_a : below_b;
}

int ef_claim_once(uint64_t key)
{
    if (!ef_reg)
        return 1;
    if (!key)
        key = 1;
    uint64_t h = key * 0x9e3779b97f4a7c15ull;
    for (uint32_t probe = 0; probe < EF_CLAIM_SLOTS; probe++) {
        uint32_t s = (uint32_t)((h >> 40) + probe) & (EF_CLAIM_SLOTS - 1);
        _Atomic uint64_t *slot = ef_reg_elem(EF_T_CLAIMS, s);
        if (!slot)
            return 1;
        uint64_t cur = atomic_load(slot);
        if (cur == key)
            return 0;
        if (!cur) {
            if (atomic_compare_exchange_strong(slot, &cur, key))
                return 1;
            if (cur == key)
                return 0;
        }
    }
    return 1; /* full: better a repeated report than a lost one */
}
