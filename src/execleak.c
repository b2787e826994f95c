/*
 * execleak.c - "epoll-fd-exec-leak": an epoll fd without close-on-exec is
 * inherited by the exec'd program, which then holds the instance (and keeps
 * every registered description alive) without knowing it.
 *
 * Judged at exec, not at creation: programs create the fd without
 * EPOLL_CLOEXEC and set FD_CLOEXEC later (redis does), so the flag is read from
 * the kernel (F_GETFD) at the moment of the exec, for every epoll fd the table
 * knows, and confirmed by the fd's link text.  The report names the program
 * being exec'd and carries the exec and creation stacks.
 *
 * Execs the shim cannot see (inside posix_spawn, system, popen) are caught by
 * the new program's shim at start-up: it scans its fds, and reports an epoll
 * instance it did not create.  "Never twice for one leak": an exec the shim did
 * see passes EPOLLFORK_EXEC_LEAKS=PID:FD,FD... in the new environment (the pid
 * survives exec), and the start-up scan skips those fds and removes the
 * variable from environ before main() runs.  The start-up scan records what it
 * reported so that the program's own exec passes it on too (sh -c 'cmd').
 *
 * Repair mode (repair.c) sets FD_CLOEXEC on each leaking fd before the exec,
 * whether or not this process is the one that reports it, and the fd is then
 * not passed on as a leak; a leak through an exec the shim could not see is
 * closed by the new program's shim at start-up, before main().
 */
#define _GNU_SOURCE
#include <emmintrin.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rules.h"

#define MARKER "EPOLLFORK_EXEC_LEAKS"
#define MAXLEAK 64

extern char **environ;

/* Leaks reported at start-up (or passed to us), and the candidates the
 * start-up poll found: the zone's (zone.c), made when there is one. */
struct leaks {
    int known[MAXLEAK];
    int cand[MAXLEAK];
};
_Static_assert(sizeof(struct leaks) <= EF_Z_BYTES(LEAKS), "the leak lists fit");
EF_HOT static struct leaks *leaks;

static int have_leaks(void)
{
    return leaks || (leaks = ef_zone(EF_Z_LEAKS)) != NULL;
}
EF_HOT static int nknown;      /* in leaks->known */
/* The environment handed to exec when a marker is added.  Per thread and
 * reused: in a vfork child (which shares our memory and, on success, never
 * returns) an mmap per exec would stay mapped in the parent for ever
 * (VmSize +8 MiB after 2,000 vfork+exec rounds). */
static EF_TLS void *env_map;
static EF_TLS size_t env_map_len;

static int still_leaking(int fd)
{
    int fl = ef_real.fcntl(fd, F_GETFD);
    return fl >= 0 && !(fl & FD_CLOEXEC) && ef_procfs_fd_is_eventpoll(0, fd);
}

/* Where execvp would find file: for the report only. */
static void resolve(const char *file, char *out, size_t len)
{
    ef_fmt(out, len, "%s", file ? file : "");
    if (!file || strchr(file, '/'))
        return;
    const char *path = getenv("PATH");
    if (!path)
        path = "/bin:/usr/bin";
    for (const char *p = path; *p;) {
        const char *c = strchr(p, ':');
        size_t n = c ? (size_t)(c - p) : strlen(p);
        char cand[1024];
        ef_fmt(cand, sizeof cand, "%.*s/%s", (int)n, n ? p : ".", file);
        if (access(cand, X_OK) == 0) {
            ef_fmt(out, len, "%s", cand);
            return;
        }
        p += n + (c ? 1 : 0);
        if (!c)
            break;
    }
}

static int count_entry(const struct ef_tfd *t, void *arg)
{
    (void)t;
    (*(int *)arg)++;
    return 0;
}

static int entries_of(int epfd)
{
    int n = 0;
    return ef_procfs_epoll_entries(0, epfd, count_entry, &n) == 0 ? n : -1;
}

static uint64_t leak_key(uint32_t idx, uint32_t uid, int fd, uint32_t stack)
{
    uint64_t k = ef_mix(ef_mix(ef_kinds[EF_KIND_EXEC_LEAK].key_tag, idx), uid);
    k = ef_mix(ef_mix(k, (uint32_t)fd), ef_stack_canon(stack));
    return k ^ (k >> 31);
}

struct scan_arg {
    const char *program;
    char *const *argv;
    uint32_t exec_stack;
    int found[MAXLEAK];
    int nfound;
};

/* entries: registrations it holds (entries_of(), counted before a repair
 * closed it); rec: what repair mode did about it, NULL when off. */
static void report_leak(int fd, uint32_t idx, const char *program, char *const argv[],
                        uint32_t exec_stack, const char *how, int entries,
                        const struct ef_repair_rec *rec)
{
    struct ef_report r;
    ef_report_init(&r, EF_KIND_EXEC_LEAK, idx && ef_reg ? ef_inst_at(idx) : NULL, fd);
    r.fd = -1;
    r.stacks[EF_ST_EXEC] = exec_stack;
    r.exec_how = how;
    r.entries = entries;
    if (rec)
        ef_repair_fill(&r, rec);
    ef_fmt(r.program, sizeof r.program, "%s", program ? program : "");
    if (argv && argv[0])
        ef_fmt(r.argv0, sizeof r.argv0, "%s", argv[0]);
    ef_report_emit(&r);
}

/* Collect the epoll fds that would leak; nothing is reported yet. */
static void check_fd(int fd, struct ef_fd *e, void *arg)
{
    struct scan_arg *a = arg;
    if (!(atomic_load(&e->flags) & EF_FD_EPOLL) || a->nfound >= MAXLEAK || !still_leaking(fd))
        return;
    a->found[a->nfound++] = fd;
}

/* ------------------------------------------------------ the caller's memory */
/* An exec wrapper must not touch path, argv or envp before the kernel has
 * accepted them (a bad pointer gets EFAULT, as without the shim), and on
 * success exec never returns.  So when a leak would be reported, the caller's
 * memory is read through process_vm_readv() on ourselves, which fails instead
 * of faulting; anything unreadable means "let the kernel say EFAULT": no
 * report, no marker. */

static int safe_read(void *dst, const void *src, size_t n)
{
    struct iovec local = {dst, n}, remote = {(void *)src, n};
    return ef_sys6(SYS_process_vm_readv, ef_sys_getpid(), (long)&local, 1, (long)&remote, 1, 0) ==
           (long)n;
}

/* Chunks never cross a 256-byte boundary, so never a page boundary. */
static int readable_str(const char *s, size_t max)
{
    char buf[256];
    for (size_t off = 0; off < max;) {
        size_t chunk = 256 - ((uintptr_t)(s + off) & 255);
        if (!safe_read(buf, s + off, chunk))
            return 0;
        if (memchr(buf, 0, chunk))
            return 1;
        off += chunk;
    }
    return 0;
}

/* A NULL-terminated vector of strings, all readable (NULL itself is fine). */
static int readable_vec(char *const *v, size_t *count)
{
    *count = 0;
    if (!v)
        return 1;
    for (size_t i = 0; i < (1u << 20); i++) {
        char *p;
        if (!safe_read(&p, &v[i], sizeof p))
            return 0;
        if (!p) {
            *count = i;
            return 1;
        }
        if (!readable_str(p, 1u << 21))
            return 0;
    }
    return 0;
}

/* Will this file exec?  Executable, and (without a PATH search, where glibc
 * would fall back to /bin/sh) an ELF file or a #! script: an exec that fails
 * leaks nothing and must not be reported. */
static int will_exec(const char *program, int search)
{
    if (access(program, X_OK) != 0)
        return 0;
    if (search)
        return 1;
    int fd = open(program, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return 1; /* executable but not readable: the kernel may still run it */
    unsigned char h[4] = {0};
    ssize_t n = read(fd, h, sizeof h);
    ef_sys_close(fd);
    return (n == 4 && !memcmp(h, "\177ELF", 4)) || (n >= 2 && h[0] == '#' && h[1] == '!');
}

/* A new environment: envp without any old marker, plus ours. */
static char *const *with_marker(char *const envp[], size_t count, const int *fds, int n)
{
    size_t len = (count + 2) * sizeof(char *) + 64 + (size_t)n * 12;
    if (!env_map || env_map_len < len) {
        size_t want = (len + 65535) & ~(size_t)65535;
        void *m = ef_real.mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return NULL;
        if (env_map)
            ef_real.munmap(env_map, env_map_len);
        env_map = m;
        env_map_len = want;
    }
    char **out = env_map;
    char *text = (char *)env_map + (count + 2) * sizeof(char *);
    size_t k = 0, t = ef_fmt(text, 64, MARKER "=%d:", (int)ef_sys_getpid());
    for (int i = 0; i < n; i++)
        t += ef_fmt(text + t, len - (size_t)(text - (char *)env_map) - t, "%s%d", i ? "," : "",
                    fds[i]);
    for (size_t i = 0; i < count; i++)
        if (strncmp(envp[i], MARKER "=", sizeof MARKER) != 0)
            out[k++] = envp[i];
    out[k++] = text;
    out[k] = NULL;
    return out;
}

char *const *ef_exec_prepare(const char *path, int search, char *const argv[],
                             char *const envp[], void *caller)
{
    struct scan_arg a;
    memset(&a, 0, sizeof a);
    /* Only a process that holds an epoll instance has one to leak, and an fd
     * an earlier start-up scan found: nothing of the caller's is read until
     * one would leak. */
    int holding = ef_tracking() && ef_holds_any() && ef_enter();
    if (holding)
        ef_fd_foreach(0, EF_FD_MAX - 1, check_fd, &a);
    int reported = a.nfound;
    for (int i = 0; i < nknown && a.nfound < MAXLEAK; i++) {
        int dup_ = 0;
        for (int j = 0; j < a.nfound; j++)
            dup_ |= a.found[j] == leaks->known[i];
        if (!dup_ && still_leaking(leaks->known[i]))
            a.found[a.nfound++] = leaks->known[i];
    }
    if (!a.nfound)
        return NULL;
    size_t nargv, nenv;
    if (!path || !readable_str(path, 4096) || !readable_vec(argv, &nargv) ||
        !readable_vec(envp, &nenv))
        return NULL;
    char program[1024];
    resolve(path, program, sizeof program);
    if (!will_exec(program, search))
        return NULL;
    /* The exec stack is captured only once a leak is found (a fork-and-exec
     * child must not pay for it). */
    for (int i = 0; i < reported; i++) {
        int fd = a.found[i];
        struct ef_fd *e = ef_fd_peek(fd);
        uint32_t idx = e ? atomic_load(&e->inst) : 0;
        if (!a.exec_stack)
            a.exec_stack = ef_stack_capture_now(EF_SKIP_SHIM, caller);
        int held = ef_holds(idx);
        uint32_t uid = held ? atomic_load(&ef_local_at(idx)->uid) : 0;
        struct ef_repair_rec rec;
        if (ef_opt.repair)
            ef_repair_cloexec(fd, &rec);
        if (ef_claim_once(leak_key(idx, uid, fd, a.exec_stack)))
            report_leak(fd, held ? idx : 0, program, nargv ? argv : NULL, a.exec_stack, "exec",
                        entries_of(fd), ef_opt.repair ? &rec : NULL);
        if (ef_opt.repair && rec.how == EF_REPAIR_CLOEXEC)
            a.found[i] = -1; /* it no longer leaks: nothing to pass on */
    }
    int k = 0;
    for (int i = 0; i < a.nfound; i++)
        if (a.found[i] >= 0)
            a.found[k++] = a.found[i];
    a.nfound = k;
    if (!a.nfound)
        return NULL;
    return with_marker(envp, nenv, a.found, a.nfound);
}

/* ------------------------------------------------------------ start-up */

/* A leak closed at start-up is not one to pass on at this program's exec. */
static void forget_known(int fd)
{
    for (int i = 0; i < nknown; i++)
        if (leaks->known[i] == fd)
            leaks->known[i] = leaks->known[--nknown];
}

EF_INIT_TEXT static int passed_to_us(int fd, const int *list, int n)
{
    for (int i = 0; i < n; i++)
        if (list[i] == fd)
            return 1;
    return 0;
}

/* What the start-up poll found, for the judging that follows it: anon-inode
 * fds (an epoll fd is one), and whether /proc must be read instead.  Written
 * only when there is something to write (a page touched is a page fault). */
EF_HOT static int nstartup_cand;    /* in leaks->cand */
EF_HOT static int startup_proc;     /* the poll could not list every fd */

/* Every anon inode (eventfd, timerfd, epoll) has no file type bits. */
EF_INIT_TEXT static int anon_inode(int fd)
{
    struct stat st;
    return ef_raw6(SYS_fstat, fd, (long)&st, 0, 0, 0, 0) == 0 && (st.st_mode & S_IFMT) == 0;
}

/* Every open fd, cheaply: every exec'd process asks at start-up (bench/
 * RESULTS.md, start-up), and a process that uses epoll at its first fork
 * (uring.c).  fn gets each open fd and its revents; -1 when the numbers
 * above 1023 may hold some too (read /proc then).  poll() with timeout 0
 * over [0, 1024) says
 * which numbers are open (POLLNVAL for the others), in two system calls of
 * 512 (one of 1,024 needs 8 KiB of stack, a page below the loader's deepest
 * frame: a page fault costs more than a system call here), where opening
 * /proc/self/fd costs ~60 us.  It also rules most of them out without an
 * fstat each: an epoll fd's poll answers POLLIN at most, so an fd that
 * answers POLLHUP, POLLERR or (asked for it) POLLOUT is something else.
 * POLLOUT is asked of the standard streams only (a terminal, a pipe, a file,
 * /dev/null, a socket: none starts anything when polled; a video device
 * polled for output can start streaming, and the other numbers are asked for
 * nothing).  Numbers above 1023 exist only in a process allowed more fds
 * that has nearly a thousand open: then the /proc scan, for all of them.
 * Raw system calls only, and no libc: this part never touches errno. */
#define SCAN_FDS 1024
#define SCAN_CHUNK 512
EF_INIT_TEXT int ef_open_fds(void (*fn)(int fd, short revents, void *arg), void *arg)
{
    /* Filled and read two entries at a time (SSE2 is baseline on x86-64): a
     * loop of 1,024 single stores and loads was 16,000 instructions, most of
     * the start-up cost (bench/RESULTS.md). */
    __m128i v[SCAN_CHUNK / 2];
    struct pollfd *p = (struct pollfd *)v;
    /* the two constants built from registers: as literals the compiler loads
     * them from .rodata, a page no one else reads at start-up (a fault) */
    int k2 = 2, knval = POLLNVAL;
    __asm__("" : "+r"(k2), "+r"(knval));
    const __m128i two = _mm_set_epi32(0, k2, 0, k2), nval = _mm_set1_epi16((short)knval);
    long limit = SCAN_FDS;
    int highest = -1;
    for (long base = 0; base < limit; base += SCAN_CHUNK) {
        __m128i cur = _mm_set_epi32(0, (int)base + 1, 0, (int)base);
        for (int i = 0; i < SCAN_CHUNK / 2; i++) {
            v[i] = cur; /* {fd, events 0, revents 0} x 2 */
            cur = _mm_add_epi32(cur, two);
        }
        if (!base)
            for (int i = 0; i < 3; i++)
                p[i].events = POLLOUT;
        long n = limit - base < SCAN_CHUNK ? limit - base : SCAN_CHUNK;
        long r = ef_raw6(SYS_poll, (long)p, n, 0, 0, 0, 0);
        if (r == -EINVAL) {
            /* RLIMIT_NOFILE below this chunk's end: poll takes at most that */
            struct rlimit rl;
            if (ef_raw6(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&rl, 0, 0) == 0 &&
                rl.rlim_cur < SCAN_FDS && (long)rl.rlim_cur > base)
                limit = (long)rl.rlim_cur, n = limit - base;
            r = ef_raw6(SYS_poll, (long)p, n, 0, 0, 0, 0);
        }
        if (r < 0)
            return -1;
        /* the revents of two entries are 16-bit lanes 3 and 7 of a vector:
         * skip eight entries at a time while all are POLLNVAL (closed) */
        for (int i = 0; i < (n + 7) / 8; i++) {
            const __m128i *q = &v[4 * i];
            __m128i all = _mm_and_si128(_mm_and_si128(_mm_cmpeq_epi16(q[0], nval),
                                                      _mm_cmpeq_epi16(q[1], nval)),
                                        _mm_and_si128(_mm_cmpeq_epi16(q[2], nval),
                                                      _mm_cmpeq_epi16(q[3], nval)));
            if ((_mm_movemask_epi8(all) & 0xc0c0) == 0xc0c0)
                continue;
            for (int k = 8 * i; k < 8 * i + 8 && k < n; k++) {
                if (p[k].revents & POLLNVAL)
                    continue;
                if (!ef_fd_owned((int)base + k)) /* ours sit high on purpose */
                    highest = (int)base + k;
                fn((int)base + k, p[k].revents, arg);
            }
        }
    }
    if (highest >= 960 && limit == SCAN_FDS) {
        struct rlimit rl;
        if (ef_raw6(SYS_prlimit64, 0, RLIMIT_NOFILE, 0, (long)&rl, 0, 0) != 0 ||
            rl.rlim_cur > SCAN_FDS)
            return -1; /* maybe more above 1023 */
    }
    return 0;
}

EF_INIT_TEXT static void startup_one(int fd, short rev, void *arg)
{
    (void)arg;
    ef_stale_note_inherited(fd);
    if (!(rev & (POLLHUP | POLLERR | POLLOUT)) && anon_inode(fd) && nstartup_cand < MAXLEAK &&
        have_leaks())
        leaks->cand[nstartup_cand++] = fd;
}

EF_INIT_TEXT static void startup_poll(void)
{
    if (ef_open_fds(startup_one, NULL) != 0)
        startup_proc = 1; /* every fd again, from /proc */
}

/* ---------------------------------------------- start-up: the judging */

struct startup_arg {
    int passed[MAXLEAK];
    int npassed;
    int leaks[MAXLEAK];
    int nleaks;
};

/* fd is an epoll instance (judged once an fd may be one): note the leak. */
static void startup_epoll(int fd, struct startup_arg *a)
{
    if (!ef_procfs_fd_is_eventpoll(0, fd))
        return;
    if (nknown < MAXLEAK && have_leaks())
        leaks->known[nknown++] = fd;
    if (!passed_to_us(fd, a->passed, a->npassed) && a->nleaks < MAXLEAK)
        a->leaks[a->nleaks++] = fd;
}

static int startup_fd(int fd, void *arg)
{
    ef_stale_note_inherited(fd);
    if (anon_inode(fd))
        startup_epoll(fd, arg);
    return 0;
}

/* A decimal number at *pp, and *pp past it; -1 when there is none. */
static long number(const char **pp)
{
    const char *p = *pp;
    long v = 0;
    if (*p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9' && v < (1L << 40); p++)
        v = v * 10 + (*p - '0');
    *pp = p;
    return v;
}

EF_INIT_TEXT int ef_startup_scan(void)
{
    startup_poll();
    return nstartup_cand || startup_proc || ef_exec_leaks_env;
}

void ef_startup_judge(void)
{
    struct startup_arg a;
    a.npassed = 0;
    a.nleaks = 0;
    const char *m = ef_exec_leaks_env;
    if (m) {
        long pid = number(&m);
        if (pid >= 0 && *m == ':' && pid == (long)ef_sys_getpid()) {
            for (const char *p = m + 1; *p && a.npassed < MAXLEAK;) {
                long fd = number(&p);
                if (fd < 0)
                    break;
                a.passed[a.npassed++] = (int)fd;
                if (*p == ',')
                    p++;
            }
        }
        unsetenv(MARKER); /* the program never sees it */
        ef_exec_leaks_env = NULL;
    }
    if (startup_proc)
        ef_procfs_fds(0, startup_fd, &a);
    else
        for (int i = 0; i < nstartup_cand; i++)
            startup_epoll(leaks->cand[i], &a);
    if (!a.nleaks)
        return;
    ef_log_setup();
    char exe[512], argv0[256];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = 0;
    argv0[0] = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t k = read(fd, argv0, sizeof argv0 - 1);
        argv0[k > 0 ? k : 0] = 0;
        ef_sys_close(fd);
    }
    char *args[2] = {argv0, NULL};
    for (int i = 0; i < a.nleaks; i++) {
        int entries = entries_of(a.leaks[i]);
        if (!ef_opt.repair) {
            report_leak(a.leaks[i], 0, exe, args, 0, "start-up", entries, NULL);
            continue;
        }
        /* Repair mode: counted, closed, then reported: this program did not
         * create it, and only the leak gave it to us. */
        struct ef_repair_rec rec;
        ef_repair_close_inherited(a.leaks[i], &rec);
        if (rec.how == EF_REPAIR_CLOSED)
            forget_known(a.leaks[i]);
        report_leak(a.leaks[i], 0, exe, args, 0, "start-up", entries, &rec);
    }
}
