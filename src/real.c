/*
 * real.c - the one table of the real libc functions the shim wraps.
 *
 * Wrappers must always make the real call, even before the constructor ran (a
 * library constructor may call close() first) and even when resolution failed.
 * So every slot starts as a syscall-based fallback and is replaced once, at
 * start-up, by what dlsym(RTLD_NEXT) would return.
 *
 * Every exec'd process pays that resolution, so it does not call dlsym 33
 * times (~860 instructions each, 28,000 in all: bench/RESULTS.md, start-up):
 * it walks the objects loaded after ours, in the loader's order (the order
 * RTLD_NEXT searches), and looks each name up in their GNU hash tables, taking
 * the default version of a versioned name as dlsym does (~150 instructions a
 * name).  Anything this cannot decide (an object without a GNU hash table, an
 * IFUNC, the shim not found among the objects loaded at start-up) falls back to
 * dlsym(RTLD_NEXT) for that name; a successful dlsym does not malloc in glibc
 * 2.36 (docs/EVIDENCE.md).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ef.h"
#include "direct.h"

/* The fallbacks' raw syscall (ef_sys6, below) already returns -1 and sets
 * errno on failure, as glibc's syscall() does, so there is nothing to decode:
 * turning a -1 into errno = 1 made every failing fallback report EPERM (a
 * library constructor's close(-1) before our constructor ran;
 * tests/scenarios/ctor_lib.c).  Kept as the one place the fallbacks return. */
static long fb_ret(long r)
{
    return r;
}

/* Raw syscalls: the shim's own calls never go through syscall(), which it
 * wraps (wrap.c), nor through a libc wrapper it interposes. */
#if defined(__x86_64__)
EF_INIT_TEXT static long raw6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return r;
}
#else
#error "epollfork's raw syscalls are written for x86-64 (as is vfork_x86_64.S)"
#endif

/* Syscalls that never touch errno (they may run between a real call and the
 * wrapper's return, or in an atfork child handler). */
static long raw0(long n) { return raw6(n, 0, 0, 0, 0, 0, 0); }
static long raw1(long n, long a) { return raw6(n, a, 0, 0, 0, 0, 0); }

EF_INIT_TEXT long ef_sys6(long n, long a, long b, long c, long d, long e, long f)
{
    long r = raw6(n, a, b, c, d, e, f);
    if ((unsigned long)r > -4096ul) {
        errno = (int)-r;
        return -1;
    }
    return r;
}

/* syscall(2)'s shape for the fallbacks below: sys(SYS_x, up to 5 arguments). */
static long sc(long n, long a, long b, long c, long d, long e)
{
    return ef_sys6(n, a, b, c, d, e, 0);
}
#define sys(...) sc_(__VA_ARGS__, 0, 0, 0, 0, 0, 0)
#define sc_(n, a, b, c, d, e, ...)                                                          \
    sc((long)(n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e))

EF_INIT_TEXT long ef_raw6(long n, long a, long b, long c, long d, long e, long f)
{
    return raw6(n, a, b, c, d, e, f);
}

/* fstat and stat as raw system calls (the kernel's struct stat is glibc's on
 * x86-64): libc's are fstat@GLIBC_2.33, one more symbol version for the
 * loader to check in every exec'd process (bench/RESULTS.md, start-up). */
EF_INIT_TEXT int ef_fstat(int fd, struct stat *st)
{
    return (int)ef_sys6(SYS_fstat, fd, (long)st, 0, 0, 0, 0);
}

int ef_stat(const char *path, struct stat *st)
{
    return (int)ef_sys6(SYS_newfstatat, AT_FDCWD, (long)path, (long)st, 0, 0, 0);
}

/* The shim's own mappings and fd moves, as raw system calls: the first epoll
 * use makes several, and each libc function the shim calls first is a lookup
 * in libc's symbol tables (its lazy slot) and a page of libc's text, a page
 * fault each on this VM (bench/RESULTS.md, first epoll use). */
EF_INIT_TEXT void *ef_sys_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    return (void *)ef_sys6(SYS_mmap, (long)a, (long)len, prot, flags, fd, (long)off);
}

EF_INIT_TEXT int ef_sys_munmap(void *a, size_t len)
{
    return (int)ef_sys6(SYS_munmap, (long)a, (long)len, 0, 0, 0, 0);
}

EF_INIT_TEXT int ef_sys_madvise(void *a, size_t len, int advice)
{
    return (int)ef_sys6(SYS_madvise, (long)a, (long)len, advice, 0, 0, 0);
}

EF_INIT_TEXT int ef_sys_ftruncate(int fd, off_t len)
{
    return (int)ef_sys6(SYS_ftruncate, fd, (long)len, 0, 0, 0, 0);
}

EF_INIT_TEXT int ef_sys_dupfd(int fd, int lowest)
{
    return (int)ef_sys6(SYS_fcntl, fd, F_DUPFD_CLOEXEC, lowest, 0, 0, 0);
}

EF_INIT_TEXT long ef_sys_nofile(void)
{
    struct rlimit rl;
    if (ef_raw6(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&rl, 0, 0) != 0 ||
        rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1ul << 30))
        return 1L << 30;
    return (long)rl.rlim_cur;
}

EF_INIT_TEXT int ef_sys_close(int fd) { return raw1(SYS_close, fd) == 0 ? 0 : -1; }
EF_INIT_TEXT pid_t ef_sys_getpid(void) { return (pid_t)raw0(SYS_getpid); }
pid_t ef_sys_getppid(void) { return (pid_t)raw0(SYS_getppid); }

static int fb_close(int fd) { return (int)fb_ret(sys(SYS_close, fd)); }
static int fb_close_range(unsigned a, unsigned b, int f)
{
    return (int)fb_ret(sys(SYS_close_range, a, b, f));
}
static void fb_closefrom(int lo) { (void)sys(SYS_close_range, (unsigned)lo, ~0u, 0); }
static int fb_dup(int fd) { return (int)fb_ret(sys(SYS_dup, fd)); }
static int fb_dup2(int a, int b)
{
    if (a == b)
        return (int)fb_ret(sys(SYS_fcntl, a, F_GETFD)) < 0 ? -1 : b;
    return (int)fb_ret(sys(SYS_dup3, a, b, 0));
}
static int fb_dup3(int a, int b, int f) { return (int)fb_ret(sys(SYS_dup3, a, b, f)); }
static int fb_fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    long arg = va_arg(ap, long);
    va_end(ap);
    return (int)fb_ret(sys(SYS_fcntl, fd, cmd, arg));
}
static pid_t fb_fork(void) { return (pid_t)fb_ret(sys(SYS_clone, SIGCHLD, 0, 0, 0, 0)); }
static int fb_epoll_create(int n) { return n <= 0 ? (errno = EINVAL, -1) : (int)fb_ret(sys(SYS_epoll_create1, 0)); }
static int fb_epoll_create1(int f) { return (int)fb_ret(sys(SYS_epoll_create1, f)); }
static int fb_epoll_ctl(int e, int op, int fd, void *ev) { return (int)fb_ret(sys(SYS_epoll_ctl, e, op, fd, ev)); }
static int fb_epoll_wait(int e, void *ev, int n, int t) { return (int)fb_ret(sys(SYS_epoll_wait, e, ev, n, t)); }
static int fb_epoll_pwait(int e, void *ev, int n, int t, const void *s)
{
    return (int)fb_ret(sys(SYS_epoll_pwait, e, ev, n, t, s, 8));
}
static int fb_epoll_pwait2(int e, void *ev, int n, const void *t, const void *s)
{
    return (int)fb_ret(sys(SYS_epoll_pwait2, e, ev, n, t, s, 8));
}

static int fb_socket(int d, int t, int p) { return (int)fb_ret(sys(SYS_socket, d, t, p)); }
static int fb_socketpair(int d, int t, int p, int *sv)
{
    return (int)fb_ret(sys(SYS_socketpair, d, t, p, sv));
}
static int fb_accept(int fd, void *a, void *l) { return (int)fb_ret(sys(SYS_accept, fd, a, l)); }
static int fb_accept4(int fd, void *a, void *l, int f)
{
    return (int)fb_ret(sys(SYS_accept4, fd, a, l, f));
}
static int fb_pipe(int *p) { return (int)fb_ret(sys(SYS_pipe2, p, 0)); }
static int fb_pipe2(int *p, int f) { return (int)fb_ret(sys(SYS_pipe2, p, f)); }
static int fb_eventfd(unsigned c, int f) { return (int)fb_ret(sys(SYS_eventfd2, c, f)); }
static int fb_timerfd_create(int c, int f) { return (int)fb_ret(sys(SYS_timerfd_create, c, f)); }
static int fb_execve(const char *p, char *const *a, char *const *e)
{
    return (int)fb_ret(sys(SYS_execve, p, a, e));
}
static int fb_fexecve(int fd, char *const *a, char *const *e)
{
    return (int)fb_ret(sys(SYS_execveat, fd, "", a, e, AT_EMPTY_PATH));
}

static long fb_syscall(long n, long a, long b, long c, long d, long e, long f)
{
    return ef_sys6(n, a, b, c, d, e, f);
}
static void *fb_mmap(void *a, size_t len, int prot, int flags, int fd, off_t off)
{
    return (void *)ef_sys6(SYS_mmap, (long)a, (long)len, prot, flags, fd, (long)off);
}
static int fb_munmap(void *a, size_t len) { return (int)fb_ret(sys(SYS_munmap, a, len)); }
/* No object defines dlclose (so the program could not have called it): fail
 * as dlclose fails. */
static int fb_dlclose(void *h) { (void)h; return -1; }

/* ------------------------------------------------ one pass over the symbol tables */

/* One loaded object's dynamic symbol table, as its GNU hash table finds
 * names in it. */
struct symtab {
    const uint32_t *gnu_hash;
    const Elf64_Sym *sym;
    const char *str;
    const Elf64_Half *versym;
};

/* A d_ptr of the dynamic section: glibc rewrites them to addresses in objects
 * whose dynamic section is writable, and leaves them as offsets in the others
 * (the vDSO): an offset is below the load address. */
EF_INIT_TEXT static uintptr_t dyn_ptr(const struct link_map *l, Elf64_Addr v)
{
    return v < l->l_addr ? l->l_addr + v : v;
}

EF_INIT_TEXT static int symtab_of(const struct link_map *l, struct symtab *t)
{
    t->gnu_hash = NULL, t->sym = NULL, t->str = NULL, t->versym = NULL;
    if (!l->l_ld)
        return -1;
    for (const Elf64_Dyn *d = l->l_ld; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_GNU_HASH:
            t->gnu_hash = (const uint32_t *)dyn_ptr(l, d->d_un.d_ptr);
            break;
        case DT_SYMTAB:
            t->sym = (const Elf64_Sym *)dyn_ptr(l, d->d_un.d_ptr);
            break;
        case DT_STRTAB:
            t->str = (const char *)dyn_ptr(l, d->d_un.d_ptr);
            break;
        case DT_VERSYM:
            t->versym = (const Elf64_Half *)dyn_ptr(l, d->d_un.d_ptr);
            break;
        default:
            break;
        }
    }
    return t->gnu_hash && t->sym && t->str ? 0 : -1;
}

EF_INIT_TEXT static uint32_t gnu_hash(const char *s)
{
    uint32_t h = 5381;
    for (; *s; s++)
        h = h * 33 + (unsigned char)*s;
    return h;
}

EF_INIT_TEXT static int same(const char *a, const char *b)
{
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

enum found { FOUND_NONE = 0, FOUND, FOUND_ASK_DLSYM };

/* The definition of name in t, as dlsym would take it: defined, global or
 * weak, and the default version (a hidden, older version is skipped). */
EF_INIT_TEXT static enum found lookup(const struct link_map *l, const struct symtab *t, const char *name,
                         uint32_t h, void **out)
{
    const uint32_t *ht = t->gnu_hash;
    uint32_t nbuckets = ht[0], symoffset = ht[1], bloom_size = ht[2], shift = ht[3];
    if (!nbuckets || !bloom_size)
        return FOUND_NONE;
    const Elf64_Addr *bloom = (const Elf64_Addr *)(ht + 4);
    const uint32_t *buckets = (const uint32_t *)(bloom + bloom_size);
    const uint32_t *chain = buckets + nbuckets;
    const unsigned bits = sizeof(Elf64_Addr) * 8;
    Elf64_Addr word = bloom[(h / bits) % bloom_size];
    Elf64_Addr mask = (Elf64_Addr)1 << (h % bits) | (Elf64_Addr)1 << ((h >> shift) % bits);
    if ((word & mask) != mask)
        return FOUND_NONE;
    uint32_t i = buckets[h % nbuckets];
    if (i < symoffset)
        return FOUND_NONE;
    for (;; i++) {
        uint32_t h2 = chain[i - symoffset];
        const Elf64_Sym *s = &t->sym[i];
        if ((h | 1) == (h2 | 1) && s->st_shndx != SHN_UNDEF && same(name, t->str + s->st_name) &&
            (ELF64_ST_BIND(s->st_info) == STB_GLOBAL || ELF64_ST_BIND(s->st_info) == STB_WEAK) &&
            !(t->versym && (t->versym[i] & 0x8000))) {
            if (ELF64_ST_TYPE(s->st_info) == STT_GNU_IFUNC)
                return FOUND_ASK_DLSYM;
            *out = (void *)(l->l_addr + s->st_value);
            return FOUND;
        }
        if (h2 & 1)
            return FOUND_NONE;
    }
}

/* The names, in the order of the table below. */
#define EF_REAL_NAMES(X)                                                                       \
    X(close) X(close_range) X(closefrom) X(dup) X(dup2) X(dup3) X(fcntl) X(fcntl64) X(fork)    \
    X(_Fork) X(vfork) X(epoll_create) X(epoll_create1) X(epoll_ctl) X(epoll_wait)              \
    X(epoll_pwait) X(epoll_pwait2) X(socket) X(socketpair) X(accept) X(accept4) X(pipe)        \
    X(pipe2) X(eventfd) X(timerfd_create) X(execve) X(execvpe) X(fexecve) X(syscall) X(mmap)   \
    X(mmap64) X(munmap) X(dlclose)
#define EF_NAME_IDX(n) I_##n,
enum { EF_REAL_NAMES(EF_NAME_IDX) NNAMES };

/* Our own entry in the loader's list.  With lazy binding the loader stores
 * it in the second word of our .got.plt (x86-64's elf_machine_runtime_setup:
 * got[1] tells _dl_runtime_resolve which object is asking); bound at load
 * time (-z now, LD_BIND_NOW) that word stays 0, and dladdr1 finds it.  Not
 * _r_debug: it lives in ld.so, and a reference to it makes ld.so a needed
 * library of ours, which costs the loader ~3,000 instructions at every exec. */
extern const Elf64_Addr _GLOBAL_OFFSET_TABLE_[] __attribute__((visibility("hidden")));

EF_INIT_TEXT static const struct link_map *self_map(void)
{
    const struct link_map *l = (const struct link_map *)_GLOBAL_OFFSET_TABLE_[1];
    if (l)
        return l;
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)&self_map, &info, (void **)&lm, RTLD_DL_LINKMAP))
        return NULL;
    return lm;
}

/* name as dlsym(RTLD_NEXT) finds it: in the objects after ours, in the
 * loader's order; FOUND_ASK_DLSYM when an object on the way cannot be read
 * (no GNU hash table) or the definition is an IFUNC. */
EF_INIT_TEXT static enum found lookup_next(const char *name, void **out,
                                           const struct link_map **from)
{
    const struct link_map *l = self_map();
    if (!l)
        return FOUND_ASK_DLSYM;
    uint32_t h = gnu_hash(name);
    int guard = 0;
    for (l = l->l_next; l && guard < 4096; l = l->l_next, guard++) {
        struct symtab t;
        if (symtab_of(l, &t) != 0)
            return FOUND_ASK_DLSYM;
        enum found f = lookup(l, &t, name, h, out);
        if (f != FOUND_NONE) {
            *from = l;
            return f;
        }
    }
    return FOUND_NONE;
}

/* Is name defined anywhere in the process?  1 yes, 0 nowhere, -1 cannot
 * tell (an object without a GNU hash table).  Through dl_iterate_phdr, which
 * holds the loader's lock against a dlclose meanwhile.  A failed dlsym would
 * answer the same, but mallocs (and so initializes malloc) and costs a page
 * fault or two in a process that had not called it yet (pyframes.c asks this
 * of every C program at its first stack). */
struct anywhere {
    const char *name;
    uint32_t h;
    int found;
};

EF_INIT_TEXT static int anywhere_one(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct anywhere *a = arg;
    const Elf64_Dyn *dyn = NULL;
    for (int i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC)
            dyn = (const Elf64_Dyn *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn)
        return 0;
    struct link_map l = {.l_addr = info->dlpi_addr, .l_ld = (Elf64_Dyn *)dyn};
    struct symtab t;
    if (symtab_of(&l, &t) != 0) {
        a->found = -1;
        return 0;
    }
    void *p;
    if (lookup(&l, &t, a->name, a->h, &p) != FOUND_NONE) {
        a->found = 1;
        return 1;
    }
    return 0;
}

EF_INIT_TEXT int ef_sym_anywhere(const char *name)
{
    struct anywhere a = {name, gnu_hash(name), 0};
    dl_iterate_phdr(anywhere_one, &a);
    return a.found;
}

/* ------------------------------------------------------------ the slots */

static void *const fallbacks[NNAMES] = {
    [I_close] = (void *)fb_close,
    [I_close_range] = (void *)fb_close_range,
    [I_closefrom] = (void *)fb_closefrom,
    [I_dup] = (void *)fb_dup,
    [I_dup2] = (void *)fb_dup2,
    [I_dup3] = (void *)fb_dup3,
    [I_fcntl] = (void *)fb_fcntl,
    [I_fcntl64] = (void *)fb_fcntl,
    [I_fork] = (void *)fb_fork,
    [I__Fork] = (void *)fb_fork,
    [I_vfork] = (void *)fb_fork, /* a fork is a correct, slower vfork */
    [I_epoll_create] = (void *)fb_epoll_create,
    [I_epoll_create1] = (void *)fb_epoll_create1,
    [I_epoll_ctl] = (void *)fb_epoll_ctl,
    [I_epoll_wait] = (void *)fb_epoll_wait,
    [I_epoll_pwait] = (void *)fb_epoll_pwait,
    [I_epoll_pwait2] = (void *)fb_epoll_pwait2,
    [I_socket] = (void *)fb_socket,
    [I_socketpair] = (void *)fb_socketpair,
    [I_accept] = (void *)fb_accept,
    [I_accept4] = (void *)fb_accept4,
    [I_pipe] = (void *)fb_pipe,
    [I_pipe2] = (void *)fb_pipe2,
    [I_eventfd] = (void *)fb_eventfd,
    [I_timerfd_create] = (void *)fb_timerfd_create,
    [I_execve] = (void *)fb_execve,
    [I_execvpe] = (void *)fb_execve, /* no PATH search */
    [I_fexecve] = (void *)fb_fexecve,
    [I_syscall] = (void *)fb_syscall,
    [I_mmap] = (void *)fb_mmap,
    [I_mmap64] = (void *)fb_mmap,
    [I_munmap] = (void *)fb_munmap,
    [I_dlclose] = (void *)fb_dlclose,
};

#define EF_SLOT_PTR(n) [I_##n] = (void **)&ef_real.n,
static void **const slots[NNAMES] = {EF_REAL_NAMES(EF_SLOT_PTR)};

/* The names a wrapper may call as their system call (direct.h), when they
 * resolve to libc's own definition. */
EF_HOT uint32_t ef_real_in_libc;

/* direct.h's bit for slot i, 0 for the others; compares, not a table (a
 * table is .rodata, a page the vfork slot's resolution at start-up would
 * fault in). */
EF_INIT_TEXT static uint32_t direct_bit(int i)
{
    uint32_t b = 0;
    b |= i == I_epoll_ctl ? EF_LIBC_EPOLL_CTL : 0;
    b |= i == I_eventfd ? EF_LIBC_EVENTFD : 0;
    b |= i == I_socket ? EF_LIBC_SOCKET : 0;
    b |= i == I_socketpair ? EF_LIBC_SOCKETPAIR : 0;
    b |= i == I_pipe2 ? EF_LIBC_PIPE2 : 0;
    b |= i == I_timerfd_create ? EF_LIBC_TIMERFD_CREATE : 0;
    return b;
}

/* Is this object glibc's libc.so.6 (by the name the loader gave it)? */
EF_INIT_TEXT static int is_libc(const struct link_map *l)
{
    char libc[] = {'l', 'i', 'b', 'c', '.', 's', 'o', '.', '6', 0};
    const char *base = l->l_name;
    if (!base)
        return 0;
    for (const char *n = base; *n; n++)
        if (*n == '/')
            base = n + 1;
    return same(base, libc);
}

/* The real function of slot i, found now and kept: what dlsym(RTLD_NEXT)
 * returns, or the fallback when the name is nowhere. */
EF_INIT_TEXT static void *resolve_as(int i, const char *name)
{
    void *p = NULL;
    const struct link_map *from = NULL;
    enum found f = lookup_next(name, &p, &from);
    uint32_t bit = direct_bit(i);
    if (bit && f == FOUND && from && is_libc(from))
        __atomic_fetch_or(&ef_real_in_libc, bit, __ATOMIC_RELAXED);
    if (f == FOUND_ASK_DLSYM) {
        int saved = errno;
        p = dlsym(RTLD_NEXT, name);
        errno = saved;
    } else if (f == FOUND_NONE) {
        p = NULL;
    }
    if (!p)
        p = fallbacks[i];
    __atomic_store_n(slots[i], p, __ATOMIC_RELEASE);
    return p;
}

/* The name built on the stack from immediates, not read from names[]:
 * .rodata is a page the process would fault in at its first wrapped call,
 * ~10 us on this VM (bench/RESULTS.md, first epoll use). */
#define RESOLVE(name)                                                                       \
    ({                                                                                     \
        char nm_[] = #name;                                                                \
        resolve_as(I_##name, nm_);                                                         \
    })

/* Each slot starts as a stub that resolves its name at its first call and
 * tail-calls the result: the first call of each wrapper pays one lookup
 * (~150 instructions), and a process pays for the names it uses, not for all
 * 33 at start-up.  The lookup takes no lock and allocates nothing (it reads
 * the loader's list and the tables of objects loaded at start-up), so a first
 * call from a signal handler or a vfork child is safe; only an object without
 * a GNU hash table before libc sends it to dlsym, as at start-up before. */
#define LAZY(name, ret, params, args)                                                       \
    EF_INIT_TEXT static ret lazy_##name params                                             \
    {                                                                                      \
        return ((ret(*) params)RESOLVE(name)) args;                                        \
    }
LAZY(close, int, (int a), (a))
LAZY(close_range, int, (unsigned a, unsigned b, int c), (a, b, c))
LAZY(dup, int, (int a), (a))
LAZY(dup2, int, (int a, int b), (a, b))
LAZY(dup3, int, (int a, int b, int c), (a, b, c))
LAZY(fork, pid_t, (void), ())
LAZY(_Fork, pid_t, (void), ())
LAZY(epoll_create, int, (int a), (a))
LAZY(epoll_create1, int, (int a), (a))
LAZY(epoll_ctl, int, (int a, int b, int c, void *d), (a, b, c, d))
LAZY(epoll_wait, int, (int a, void *b, int c, int d), (a, b, c, d))
LAZY(epoll_pwait, int, (int a, void *b, int c, int d, const void *e), (a, b, c, d, e))
LAZY(epoll_pwait2, int, (int a, void *b, int c, const void *d, const void *e), (a, b, c, d, e))
LAZY(socket, int, (int a, int b, int c), (a, b, c))
LAZY(socketpair, int, (int a, int b, int c, int *d), (a, b, c, d))
LAZY(accept, int, (int a, void *b, void *c), (a, b, c))
LAZY(accept4, int, (int a, void *b, void *c, int d), (a, b, c, d))
LAZY(pipe, int, (int *a), (a))
LAZY(pipe2, int, (int *a, int b), (a, b))
LAZY(eventfd, int, (unsigned a, int b), (a, b))
LAZY(timerfd_create, int, (int a, int b), (a, b))
LAZY(execve, int, (const char *a, char *const *b, char *const *c), (a, b, c))
LAZY(execvpe, int, (const char *a, char *const *b, char *const *c), (a, b, c))
LAZY(fexecve, int, (int a, char *const *b, char *const *c), (a, b, c))
LAZY(syscall, long, (long a, long b, long c, long d, long e, long f, long g),
     (a, b, c, d, e, f, g))
LAZY(mmap, void *, (void *a, size_t b, int c, int d, int e, off_t f), (a, b, c, d, e, f))
LAZY(mmap64, void *, (void *a, size_t b, int c, int d, int e, off_t f), (a, b, c, d, e, f))
LAZY(munmap, int, (void *a, size_t b), (a, b))
LAZY(dlclose, int, (void *a), (a))

EF_INIT_TEXT static void lazy_closefrom(int a)
{
    ((void (*)(int))RESOLVE(closefrom))(a);
}

/* fcntl's third argument is an int or a pointer: passed on as a long, as the
 * fallback does. */
#define LAZY_FCNTL(name)                                                                    \
    EF_INIT_TEXT static int lazy_##name(int fd, int cmd, ...)                              \
    {                                                                                      \
        va_list ap;                                                                        \
        va_start(ap, cmd);                                                                 \
        long arg = va_arg(ap, long);                                                       \
        va_end(ap);                                                                        \
        return ((int (*)(int, int, ...))RESOLVE(name))(fd, cmd, arg);                      \
    }
LAZY_FCNTL(fcntl)
LAZY_FCNTL(fcntl64)

/* vfork_x86_64.S calls this: vfork cannot go through a stub (the child would
 * return through the stub's frame, which the parent then reuses), so it is
 * the one name resolved at start-up; a fork is a correct, slower vfork until
 * then. */
void *ef_vfork_fn = (void *)fb_fork;
static pid_t lazy_vfork(void)
{
    return fb_fork(); /* not reached: resolved at start-up, and only ef_vfork_fn is used */
}

#define EF_LAZY_INIT(n) .n = lazy_##n,
struct ef_real ef_real = {
    EF_REAL_NAMES(EF_LAZY_INIT)
};

EF_INIT_TEXT void ef_real_resolve(void)
{
    /* The name on the stack, as RESOLVE does: .rodata is a page nothing else
     * reads at start-up, and a page fault costs more than the whole lookup
     * (bench/RESULTS.md, start-up). */
    char name[8] = {'v', 'f', 'o', 'r', 'k', 0};
    __atomic_store_n(&ef_vfork_fn, resolve_as(I_vfork, name), __ATOMIC_RELEASE);
}
