/*
 * registry.h - the memory a process tree shares: its layout and allocators.
 *
 * Part of the ground layer (included by ef.h, never on its own): kept apart
 * because it is the one part of the internal API that another process can
 * write.  Every structure here lives in the registry's memfd (registry.c);
 * whoever reads a field checks it where it is used, and nothing here is a
 * pointer.
 */
#ifndef EF_REGISTRY_H
#define EF_REGISTRY_H

#ifndef EF_H
#error "include ef.h, not registry.h"
#endif

/* --------------------------------------------------------------- registry.c */
/* The memory a process tree shares (MAP_SHARED, inherited by fork).  Any
 * process of the tree can write it: every index, count and offset read from
 * it is checked where it is used, and nothing in it is a pointer. */
#define EF_MAX_INST   16384
#define EF_HOLDERS    32
#define EF_RING       16
#define EF_MAX_PROC   65536
#define EF_DEPOT_SLOTS (1u << 16)
#define EF_DEPOT_FRAMES (1u << 21)
#define EF_CLAIM_SLOTS (1u << 14)
#define EF_MAX_FRAMES 64

/* holder slot word: pid << 32 | number of threads of pid blocked in a wait;
 * a slot reserved for a child being forked carries EF_RESERVED in the pid. */
#define EF_RESERVED 0x80000000u

struct ef_target {
    uint32_t mode;
    uint32_t valid;
    uint64_t dev, ino, rdev;
    char anon[32];              /* "anon_inode:[eventfd]": every anon inode shares one inode */
};

/* What repair mode did about one conflict (repair.c), as a change in the ring
 * and a report carry it.  Written by other processes: every value is checked
 * where it is read. */
enum ef_repair_how {
    EF_REPAIR_NONE = 0,         /* not attempted */
    EF_REPAIR_COPIED,           /* the process was given a private copy of the instance */
    EF_REPAIR_REBUILT,          /* its own instance (no other holder) was rebuilt */
    EF_REPAIR_CLOEXEC,          /* FD_CLOEXEC set before the exec */
    EF_REPAIR_CLOSED,           /* closed at start-up, before main() */
    EF_REPAIR_FAILED,           /* could not be made: `step` and `err` say why */
};
enum ef_repair_step {
    EF_RSTEP_NONE = 0,
    EF_RSTEP_FDINFO,            /* /proc/self/fdinfo/EPFD could not be read */
    EF_RSTEP_CREATE,            /* no new epoll instance (fd limit) */
    EF_RSTEP_ADD,               /* an entry could not be re-added (`fd`) */
    EF_RSTEP_DUP,               /* the copy could not take the fd's number */
    EF_RSTEP_MEMORY,            /* no memory for the entry list */
    EF_RSTEP_REENTRY,           /* a signal handler interrupted the shim */
    EF_RSTEP_FCNTL,             /* F_SETFD failed */
    EF_RSTEP_CLOSE,             /* close failed */
    EF_RSTEP_GONE,              /* another thread had replaced the instance meanwhile */
    EF_RSTEP_ALLOWED,           /* shared on purpose (epollfork_allow_shared) */
};
struct ef_repair_rec {
    uint32_t how;               /* enum ef_repair_how */
    uint32_t step;              /* enum ef_repair_step, for EF_REPAIR_FAILED */
    int32_t pid, epfd;          /* the process and fd the repair was for */
    int32_t entries;            /* entries in the copy */
    int32_t left;               /* entries left out: not open at their number here */
    int32_t rearmed;            /* disarmed EPOLLONESHOT entries armed for ERR|HUP */
    int32_t err;                /* errno of the failed step */
    int32_t fd;                 /* the entry that failed; the closed fd of a ghost */
};

/* One successful epoll_ctl on an instance that other processes may rely on. */
/* How a change reached the kernel: libc's epoll_ctl, or an IORING_OP_EPOLL_CTL
 * submitted through an io_uring ring (uring.c). */
enum ef_via { EF_VIA_EPOLL_CTL = 0, EF_VIA_IO_URING = 1 };

struct ef_change {
    _Atomic uint64_t seq;       /* generation of this record, written last */
    int32_t pid;                /* the modifier */
    uint32_t proc;              /* the modifier's process record */
    int32_t op, epfd, fd;
    uint32_t events;
    uint64_t data;
    uint32_t call_stack, add_stack;
    uint32_t add_pid;           /* process that did the ADD (0 unknown) */
    uint32_t cut;               /* enum ef_cut: why the call stack is one frame */
    uint32_t via, add_via;      /* enum ef_via of the change and of the ADD */
    int32_t ring_fd;            /* via io_uring: the ring it was submitted to */
    uint64_t time_ns;           /* CLOCK_REALTIME */
    struct ef_target target;
    struct ef_repair_rec repair; /* repair mode: the modifier's private copy */
};

enum ef_create_how { EF_CREATE_EPOLL_CREATE = 0, EF_CREATE_EPOLL_CREATE1 = 1, EF_CREATE_ADOPTED = 2,
                     EF_CREATE_REPAIR = 3 /* a private copy made by repair mode */ };
enum ef_inst_state { EF_INST_FREE = 0, EF_INST_LIVE = 1 };

/* A page each (chunks are page-aligned mappings): an instance never
 * straddles two pages, so the first epoll instance of a process touches one
 * page of the registry, not two (3,264 bytes at 64-byte alignment put
 * instance 1 across a page boundary: a page fault more at every process's
 * first epoll_create; bench/RESULTS.md).  Padded, not aligned to 4096: a
 * page-aligned type would align the shim's whole .bss (ef_inst_none). */
struct __attribute__((aligned(64))) ef_inst {
  union {
   struct {
    _Atomic uint32_t state;     /* enum ef_inst_state */
    _Atomic uint32_t uid;       /* bumped at each allocation */
    _Atomic uint32_t crossed;   /* held by a process that forked */
    _Atomic uint32_t nholders;  /* occupied holder slots */
    _Atomic uint32_t overflow;  /* a holder found no slot */
    _Atomic uint32_t allowed;   /* epollfork_allow_shared(): shared on purpose */
    int32_t owner_pid;
    uint32_t owner_proc;
    uint32_t create_stack;
    int32_t create_fd;
    int32_t create_how;         /* enum ef_create_how */
    int32_t create_flags;
    _Atomic uint64_t gen;       /* recorded changes so far */
    _Atomic uint64_t holders[EF_HOLDERS];
    struct ef_change ring[EF_RING];
   };
   char page_[4096];
  };
};
_Static_assert(sizeof(struct ef_inst) == 4096, "an instance is one page");

/* How a process came to be, as its process record says. */
enum ef_fork_how {
    EF_FORK_ROOT = 0,        /* the first process of the tree */
    EF_FORK_FORK,            /* our fork() wrapper */
    EF_FORK_ATFORK,          /* a fork inside libc that ran the atfork handlers */
    EF_FORK_UNSEEN,          /* no handler ran (raw clone, syscall(SYS_fork)) */
    EF_FORK_UNDERSCORE,      /* _Fork(): our wrapper, no handlers */
};

struct ef_process {
    _Atomic int32_t pid;
    uint32_t parent;            /* process record of the parent, 0 none */
    uint32_t fork_stack;        /* where the parent forked this process */
    uint32_t depth;
    uint32_t fork_how;          /* enum ef_fork_how */
    _Atomic uint32_t claimed;   /* the process had its first event (hold.c: else reusable) */
};

enum ef_depot_state { EF_DEPOT_EMPTY = 0, EF_DEPOT_WRITING = 1, EF_DEPOT_READY = 2 };
/* One io_uring ring the tree set up (uring.c): who set it up, whether it
 * crossed a fork, and the last process that submitted to or reaped from it
 * since (a seqlock'd record: `use_seq` odd while written). */
#define EF_MAX_RINGS 1024
#define EF_RING_USERS 4
enum ef_ring_state { EF_RING_FREE = 0, EF_RING_LIVE = 1 };
struct __attribute__((aligned(64))) ef_ring { /* a chunk of 64 is whole pages */
    _Atomic uint32_t state;     /* enum ef_ring_state */
    _Atomic uint32_t uid;       /* bumped at each allocation */
    _Atomic uint32_t crossed;   /* held by a process that forked */
    int32_t owner_pid;
    uint32_t owner_proc;
    uint32_t setup_stack;
    int32_t setup_fd;
    uint32_t setup_flags;       /* IORING_SETUP_* */
    uint32_t setup_entries;
    uint32_t setup_how;         /* enum ef_ring_how */
    _Atomic uint64_t use_seq;
    int32_t last_pid;
    uint32_t last_proc;
    uint32_t last_clock;        /* process records allocated at that use (registry nproc) */
    uint32_t last_stack;
    int32_t last_fd;
    uint32_t last_what;         /* enum ef_ring_use */
    _Atomic int32_t users[EF_RING_USERS];  /* processes that used it after it crossed */
};
/* How a ring was set up: io_uring_setup through syscall() or liburing's own
 * io_uring_setup(), or liburing's io_uring_queue_init*() (seen at its
 * io_uring_queue_mmap). */
enum ef_ring_how { EF_RING_SYSCALL = 0, EF_RING_LIBURING_SETUP = 1, EF_RING_LIBURING_QUEUE = 2 };
enum ef_ring_use { EF_RING_SUBMIT = 0, EF_RING_REAP = 1, EF_RING_SUBMIT_REAP = 2 };

struct ef_depot_slot {
    _Atomic uint64_t hash;      /* 0 empty */
    _Atomic uint32_t state;     /* enum ef_depot_state */
    uint32_t start;             /* index into frames */
    uint32_t n;
    uint32_t pad;
};

/* The strings of Python frames (file and function names), each stored once
 * for the tree (pyframes.c): a Python frame is one 64-bit word of two string
 * ids and a line, and stack.c keeps Python stacks of such words in its depot. */
#define EF_PYSTR_SLOTS (1u << 15)
#define EF_PYSTR_BYTES (1u << 22)
#define EF_PYSTR_MAX 1023           /* longer strings are cut */
struct ef_pystr_slot {
    _Atomic uint64_t hash;      /* of the bytes */
    _Atomic uint32_t state;     /* enum ef_depot_state */
    uint32_t off, len;          /* in bytes[] */
    uint32_t pad;
};
/* The registry is a memfd the tree shares: fork keeps the fd and every
 * mapping, exec drops them.  Its header (below) is mapped when it is made;
 * each table after it is mapped in chunks, by each process, on first use, so
 * that a process's address space holds only the parts it touched (RLIMIT_AS
 * counts mappings: one fixed mapping of all of it was 56 MiB).  The shapes are
 * constants of the library, never read from the shared memory. */
struct ef_registry {
    uint64_t magic;
    _Atomic uint32_t ninst_hw;          /* high-water mark of instance indexes */
    _Atomic uint32_t nproc;
    _Atomic uint32_t depot_frames_used;
    _Atomic uint32_t notices;           /* EF_NOTICE_* already printed, tree-wide */
    _Atomic uint64_t free_head;         /* tagged free list of instances */
    _Atomic uint32_t reclaim_next;      /* where the next reclaim scan starts */
    _Atomic uint32_t pystr_used;        /* bytes of EF_T_PYBYTES handed out */
    _Atomic uint32_t epochs;            /* fork epochs handed out (hold.c, ef_epoch) */
    _Atomic uint32_t inst_next[EF_MAX_INST];
};
enum ef_table {
    EF_T_PROCS,     /* struct ef_process[EF_MAX_PROC] */
    EF_T_DEPOT,     /* struct ef_depot_slot[EF_DEPOT_SLOTS] */
    EF_T_CLAIMS,    /* _Atomic uint64_t[EF_CLAIM_SLOTS] */
    EF_T_FRAMES,    /* uint64_t[EF_DEPOT_FRAMES]: the depot's frames */
    EF_T_INST,      /* struct ef_inst[EF_MAX_INST] */
    EF_T_PYSLOTS,   /* struct ef_pystr_slot[EF_PYSTR_SLOTS] */
    EF_T_PYBYTES,   /* char[EF_PYSTR_BYTES]: the Python strings */
    EF_T_RINGS,     /* struct ef_ring[EF_MAX_RINGS]: io_uring rings (uring.c) */
    EF_NTABLES
};
struct ef_table_shape {
    uint32_t elem, count;
    uint32_t shift;             /* 1 << shift elements per chunk: whole pages */
    uint32_t first;             /* its first chunk in ef_reg_chunks[] */
};
static const struct ef_table_shape ef_table_shapes[EF_NTABLES] = {
    [EF_T_PROCS] = {sizeof(struct ef_process), EF_MAX_PROC, 12, 0},
    [EF_T_DEPOT] = {sizeof(struct ef_depot_slot), EF_DEPOT_SLOTS, 12, 16},
    [EF_T_CLAIMS] = {sizeof(uint64_t), EF_CLAIM_SLOTS, 14, 32},
    [EF_T_FRAMES] = {sizeof(uint64_t), EF_DEPOT_FRAMES, 16, 33},
    [EF_T_INST] = {sizeof(struct ef_inst), EF_MAX_INST, 6, 65},
    [EF_T_PYSLOTS] = {sizeof(struct ef_pystr_slot), EF_PYSTR_SLOTS, 12, 321},
    [EF_T_PYBYTES] = {1, EF_PYSTR_BYTES, 16, 329},
    [EF_T_RINGS] = {sizeof(struct ef_ring), EF_MAX_RINGS, 6, 393},
};
#define EF_REG_CHUNKS 409
/* This process's mappings of the tables: chunk 0 of each on a page the loader
 * wrote (EF_HOT: most processes use no other), the others in the zone
 * (zone.c), NULL until one is mapped; ef_reg_nil is the empty slot read
 * meanwhile. */
extern char *_Atomic ef_reg_chunk0[EF_NTABLES];
extern char *_Atomic *_Atomic ef_reg_chunks;       /* [EF_REG_CHUNKS] */
extern char *_Atomic ef_reg_nil;
static inline char *_Atomic *ef_reg_chunk_slot(enum ef_table t, uint32_t chunk)
{
    if (EF_LIKELY(!chunk))
        return &ef_reg_chunk0[t];
    char *_Atomic *c = atomic_load_explicit(&ef_reg_chunks, memory_order_acquire);
    return c ? &c[ef_table_shapes[t].first + chunk] : &ef_reg_nil;
}
char *ef_reg_map_chunk(enum ef_table t, uint32_t chunk); /* NULL when it cannot be mapped */
/* Element i of table t, mapping its chunk on first use; NULL when i is out of
 * range (an index read from shared memory) or the chunk cannot be mapped. */
static inline void *ef_reg_elem(enum ef_table t, uint32_t i)
{
    const struct ef_table_shape *sh = &ef_table_shapes[t];
    if (EF_UNLIKELY(i >= sh->count))
        return NULL;
    char *b = atomic_load_explicit(ef_reg_chunk_slot(t, i >> sh->shift), memory_order_acquire);
    if (EF_UNLIKELY(!b) && !(b = ef_reg_map_chunk(t, i >> sh->shift)))
        return NULL;
    return b + (size_t)(i & ((1u << sh->shift) - 1)) * sh->elem;
}
/* n consecutive elements from start, all in one chunk (stores never split a
 * record across chunks): NULL when they are not, or out of range. */
void *ef_reg_span(enum ef_table t, uint32_t start, uint32_t n);
/* Take n consecutive elements of table t from the shared counter *used,
 * never across a chunk; the first, or UINT32_MAX when the table is full. */
uint32_t ef_reg_reserve(enum ef_table t, _Atomic uint32_t *used, uint32_t n);
int ef_reg_relocate(int fd);            /* dup2 onto the memfd: ours moves; 0, or -1 not ours */
uint64_t ef_reg_file_size(void);        /* the memfd's size: header + every table */
uint64_t ef_reg_table_offset(enum ef_table t);
#define EF_NOTICE_INST_FULL  0x1u
#define EF_NOTICE_PROC_FULL  0x2u
#define EF_NOTICE_DEPOT_FULL 0x4u
#define EF_NOTICE_HOLDERS    0x8u
#define EF_NOTICE_FD_RANGE   0x10u
#define EF_NOTICE_NO_UNWIND  0x20u
#define EF_NOTICE_NO_PROC    0x40u
#define EF_NOTICE_FD_LIMIT   0x80u
#define EF_NOTICE_PYSTR_FULL 0x100u
#define EF_NOTICE_RINGS_FULL 0x200u

extern struct ef_registry *ef_reg;
int ef_registry_create(void);          /* 0 ok, -1 failed (tracking off) */
struct ef_inst *ef_inst_alloc(uint32_t *idx);
void ef_inst_free(uint32_t idx);
uint32_t ef_inst_prune(uint32_t idx);  /* drop dead holders; returns live ones */
struct ef_ring *ef_ring_alloc(uint32_t *idx);  /* NULL when the table is full */
void ef_ring_free(uint32_t idx, uint32_t uid);
/* The ring record of idx; a zeroed record of our own for 0, an index out of
 * range, or one that cannot be mapped (registry.c). */
extern struct ef_ring ef_ring_none;
static inline struct ef_ring *ef_ring_at(uint32_t idx)
{
    struct ef_ring *r = idx ? (struct ef_ring *)ef_reg_elem(EF_T_RINGS, idx) : NULL;
    return EF_LIKELY(r != NULL) ? r : &ef_ring_none;
}
uint32_t ef_process_alloc(pid_t pid, uint32_t parent, uint32_t fork_stack, enum ef_fork_how how);
struct ef_process *ef_process_at(uint32_t idx);
uint32_t ef_process_of_pid(int32_t pid);   /* newest record of pid, 0 none */
/* The process record of the fork that split records a and b (0 unknown). */
uint32_t ef_process_split(uint32_t a, uint32_t b);
/* Claim a 64-bit key in the tree-wide set: 1 the first time, 0 after.  It is
 * what makes a conflict, seen by both sides, reported once (always on); the
 * optional merging of identical reports (EPOLLFORK_DEDUP) uses it too. */
int ef_claim_once(uint64_t key);
/* One-time tree-wide notice; returns 1 the first time bit is raised. */
int ef_notice_once(uint32_t bit);


#endif /* EF_REGISTRY_H */
