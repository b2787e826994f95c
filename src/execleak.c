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
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "rules.h"

#define MARKER "EPOLLFORK_EXEC_LEAKS"
#define MAXLEAK 64

extern char **environ;

static int known_leaks[MAXLEAK];   /* reported at start-up (or passed to us) */
static int nknown;
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
    k = ef_mix(ef_mix(k, (uint32_t)fd), stack);
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
    return process_vm_readv(ef_sys_getpid(), &local, 1, &remote, 1, 0) == (ssize_t)n;
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
            dup_ |= a.found[j] == known_leaks[i];
        if (!dup_ && still_leaking(known_leaks[i]))
            a.found[a.nfound++] = known_leaks[i];
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
            a.exec_stack = ef_stack_capture(EF_SKIP_SHIM, caller);
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
        if (known_leaks[i] == fd)
            known_leaks[i] = known_leaks[--nknown];
}

static int passed_to_us(int fd, const int *list, int n)
{
    for (int i = 0; i < n; i++)
        if (list[i] == fd)
            return 1;
    return 0;
}

struct startup_arg {
    int passed[MAXLEAK];
    int npassed;
    int leaks[MAXLEAK];
    int nleaks;
};

static int startup_fd(int fd, void *arg)
{
    struct startup_arg *a = arg;
    ef_stale_note_inherited(fd);
    struct stat st;
    /* Every anon inode (eventfd, timerfd, epoll) has no file type bits. */
    if (fstat(fd, &st) != 0 || (st.st_mode & S_IFMT) != 0)
        return 0;
    if (!ef_procfs_fd_is_eventpoll(0, fd))
        return 0;
    if (nknown < MAXLEAK)
        known_leaks[nknown++] = fd;
    if (!passed_to_us(fd, a->passed, a->npassed) && a->nleaks < MAXLEAK)
        a->leaks[a->nleaks++] = fd;
    return 0;
}

/* Every open fd, at start-up, cheaply: every exec'd process pays for this.
 * poll() over [0, 1024) says which numbers are open (POLLNVAL for the
 * others): ~25 us in a fresh process, where opening /proc/self/fd costs ~60 us
 * (bench/RESULTS.md).  Numbers above 1023 exist only in a process allowed more
 * fds that has nearly a thousand open: then the /proc scan, for all of them. */
static int poll_open_fds(int limit, int *open_fds, int max, int *count)
{
    struct pollfd p[256]; /* on the stack: a static 8 KiB array costs page faults */
    int highest = -1;
    *count = 0;
    for (int base = 0; base < limit; base += 256) {
        int k = limit - base < 256 ? limit - base : 256;
        for (int i = 0; i < k; i++)
            p[i] = (struct pollfd){.fd = base + i, .events = 0, .revents = 0};
        if (poll(p, (nfds_t)k, 0) < 0)
            return -2;
        for (int i = 0; i < k; i++) {
            if (p[i].revents & POLLNVAL)
                continue;
            highest = base + i;
            if (*count < max)
                open_fds[(*count)++] = base + i;
        }
    }
    return highest;
}

static void startup_fds(struct startup_arg *a)
{
    struct rlimit rl;
    long limit = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
                     ? (long)rl.rlim_cur : 1L << 20;
    int fds[1024], n = 0;
    int highest = poll_open_fds(limit < 1024 ? (int)limit : 1024, fds, 1024, &n);
    if (highest == -2 || (limit > 1024 && highest >= 960)) {
        ef_procfs_fds(0, startup_fd, a);
        return;
    }
    for (int i = 0; i < n; i++)
        startup_fd(fds[i], a);
}

void ef_startup_scan(void)
{
    struct startup_arg a;
    memset(&a, 0, sizeof a);
    const char *m = getenv(MARKER);
    if (m) {
        char *end;
        long pid = strtol(m, &end, 10);
        if (*end == ':' && pid == (long)ef_sys_getpid()) {
            for (const char *p = end + 1; *p && a.npassed < MAXLEAK;) {
                long fd = strtol(p, &end, 10);
                if (end == p)
                    break;
                a.passed[a.npassed++] = (int)fd;
                p = *end == ',' ? end + 1 : end;
            }
        }
        unsetenv(MARKER); /* the program never sees it */
    }
    startup_fds(&a);
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
