/* cfi_check.c - src/cfi.c's walk against libunwind's unw_backtrace, frame for
 * frame, on stacks of every kind (tests/test_perf.py, cfi-*).
 *
 * Linked with src/cfi.c and src/ehframe.c themselves (no preload).  At each probe the two walks are
 * taken from the same function, one after the other: their first frame is
 * that function's own pc at each call (two call sites), every later one
 * must be the same.  A walk of cfi.c either matches or gives up (-1: the
 * caller asks libunwind); a mismatch is a bug.
 *
 * One JSON line per scenario:
 *   {"scenario": S, "probes": N, "matched": M, "gave_up": G, "mismatched": X,
 *    "frames": F, "first_mismatch": "..."}
 */
#define _GNU_SOURCE
#include <alloca.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ef.h" /* struct ef_walk, ef_cfi_backtrace(), ef_stack_set_main_top() */

static int (*unw_bt)(void **, int);

/* cfi.c keeps its rules in the shim's zone (zone.c, not linked here) */
void *ef_zone_at(size_t off)
{
    static _Alignas(64) unsigned char rules[EF_Z_BYTES(CFI)];
    return off == offsetof(struct ef_zone_layout, EF_Z_CFI) ? rules : NULL;
}

struct tally {
    const char *name;
    long probes, matched, gave_up, mismatched, frames;
    char first[512];
};
static struct tally cur;
static long repeats; /* probes whose walk was the kept one checked again */
static uint32_t last_serial;
static int max_frames = 64;
static volatile int sink;

static void fmt_frames(char *buf, size_t len, void **f, int n)
{
    size_t k = 0;
    for (int i = 0; i < n && k + 24 < len; i++)
        k += (size_t)snprintf(buf + k, len - k, "%s%p", i ? " " : "", f[i]);
}

static pthread_mutex_t tally_lock = PTHREAD_MUTEX_INITIALIZER;
static void probe_tally(void **a, int na, void **b, int nb, uint32_t serial);

__attribute__((noinline)) static void probe(void)
{
    void *a[128], *b[128];
    struct ef_walk w;
    int na = ef_cfi_backtrace(max_frames, &w);
    uint32_t serial = na > 0 ? w.serial : 0;
    for (int i = 0; i < na; i++)
        a[i] = (void *)w.pcs[i];
    int nb = unw_bt(b, max_frames);
    pthread_mutex_lock(&tally_lock);
    probe_tally(a, na, b, nb, serial);
    pthread_mutex_unlock(&tally_lock);
}

static void probe_tally(void **a, int na, void **b, int nb, uint32_t serial)
{
    cur.probes++;
    if (serial && serial == last_serial)
        repeats++;
    last_serial = serial;
    if (na < 0) {
        cur.gave_up++;
        return;
    }
    int same = na == nb && na > 0;
    for (int i = 1; same && i < na; i++)
        same = a[i] == b[i];
    if (same) {
        cur.matched++;
        cur.frames += na;
        return;
    }
    if (!cur.mismatched++) {
        char x[240], y[240];
        fmt_frames(x, sizeof x, a + 1, na - 1);
        fmt_frames(y, sizeof y, b + 1, nb - 1);
        snprintf(cur.first, sizeof cur.first, "cfi %d [%s] libunwind %d [%s]", na, x, nb, y);
    }
}

static void begin(const char *name)
{
    memset(&cur, 0, sizeof cur);
    cur.name = name;
    repeats = 0;
}

static void end(void)
{
    printf("{\"scenario\": \"%s\", \"probes\": %ld, \"matched\": %ld, \"gave_up\": %ld, "
           "\"mismatched\": %ld, \"frames\": %ld, \"repeats\": %ld, \"first_mismatch\": \"%s\"}\n",
           cur.name, cur.probes, cur.matched, cur.gave_up, cur.mismatched, cur.frames, repeats,
           cur.first);
    fflush(stdout);
}

/* --- plain recursion, frames of several shapes */
__attribute__((noinline)) static int rec_plain(int d)
{
    if (d <= 0) {
        probe();
        return 0;
    }
    return rec_plain(d - 1) + 1;
}

__attribute__((noinline)) static int rec_big(int d)
{
    volatile char buf[3000];
    buf[d % 3000] = (char)d;
    if (d <= 0) {
        probe();
        return buf[0];
    }
    return rec_big(d - 1) + buf[d % 3000];
}

/* rbp-based CFA: a variable-length frame */
__attribute__((noinline)) static int rec_vla(int d)
{
    char *p = alloca(16 + (size_t)(d * 24) % 200);
    p[0] = (char)d;
    sink = p[0];
    if (d <= 0) {
        probe();
        return p[0];
    }
    return rec_vla(d - 1) + p[0];
}

/* callee-saved registers in use across the call (pushes in the prologue) */
__attribute__((noinline)) static long rec_regs(int d, long a, long b, long c)
{
    long x = a * 3 + d, y = b ^ c, z = a + b + c;
    if (d <= 0) {
        probe();
        return x + y + z;
    }
    long r = rec_regs(d - 1, y, z, x);
    return r + x * y - z;
}

/* mutual recursion of the three shapes */
static int mixed(int d);
__attribute__((noinline)) static int mixed_vla(int d)
{
    char *p = alloca(8 + (size_t)d * 8);
    p[0] = 1;
    sink = p[0];
    return mixed(d - 1) + p[0];
}
__attribute__((noinline)) static int mixed(int d)
{
    if (d <= 0) {
        probe();
        return 0;
    }
    if (d % 3 == 0)
        return mixed_vla(d);
    if (d % 3 == 1)
        return (int)rec_regs(0, d, d, d) + mixed(d - 1);
    return mixed(d - 1) + 1;
}

/* the same depth through other callers: the kept walk must not be taken
 * for theirs (two callers of one frame size, one level up or two) */
__attribute__((noinline)) static int leaf(int x)
{
    probe();
    return x + sink;
}
__attribute__((noinline)) static int via_a(int x)
{
    volatile int pad[8];
    pad[0] = x;
    return leaf(pad[0]) + 1;
}
__attribute__((noinline)) static int via_b(int x)
{
    volatile int pad[8];
    pad[0] = x;
    return leaf(pad[0]) + 2;
}
__attribute__((noinline)) static int up_a(int x)
{
    volatile int pad[4];
    pad[0] = x;
    return via_a(pad[0]) + 3;
}
__attribute__((noinline)) static int up_b(int x)
{
    volatile int pad[4];
    pad[0] = x;
    return via_a(pad[0]) + 4;
}

/* through libc: qsort's comparator probes */
static int cmp(const void *x, const void *y)
{
    static int every;
    if (++every % 7 == 0)
        probe();
    return *(const int *)x - *(const int *)y;
}

/* realigned stack: the CFA is an expression (libunwind only) */
__attribute__((noinline, force_align_arg_pointer)) static int realigned(int d)
{
    volatile char buf[64] __attribute__((aligned(64)));
    buf[0] = (char)d;
    probe();
    return buf[0];
}

static void on_signal(int sig)
{
    (void)sig;
    rec_plain(3);
}

/* several threads walking at once through rules read again (a new
 * generation): the table's entries written and read concurrently */
static void *racer(void *arg)
{
    (void)arg;
    for (int round = 0; round < 40; round++)
        for (int d = 0; d < 12; d++) {
            rec_plain(d);
            rec_vla(d);
            mixed(d);
        }
    return NULL;
}

static void *thread_main(void *arg)
{
    (void)arg;
    for (int d = 0; d < 30; d++) {
        rec_plain(d);
        rec_vla(d);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    ef_stack_set_main_top((uintptr_t)argv);
    (void)argc;
    void *h = dlopen("libunwind.so.8", RTLD_NOW | RTLD_LOCAL);
    unw_bt = h ? (int (*)(void **, int))dlsym(h, "unw_backtrace") : NULL;
    if (!unw_bt) {
        fprintf(stderr, "cfi_check: libunwind.so.8 not found\n");
        return 2;
    }

    begin("recursion");
    for (int d = 0; d < 80; d++)
        rec_plain(d);
    end();

    begin("big-frames"); /* beyond the 16 KiB a kept copy takes */
    for (int d = 0; d < 24; d++)
        rec_big(d);
    end();

    begin("alloca");
    for (int d = 0; d < 60; d++)
        rec_vla(d);
    end();

    begin("saved-registers");
    for (int d = 0; d < 60; d++)
        rec_regs(d, d, 2 * d, 3);
    end();

    begin("mixed");
    for (int d = 0; d < 60; d++)
        mixed(d);
    end();

    begin("same-site-again"); /* the kept walk, checked instead of walked */
    for (int i = 0; i < 50; i++)
        leaf(i);
    end();

    begin("same-depth-other-callers");
    for (int i = 0; i < 60; i++) {
        switch (i % 4) {
        case 0: via_a(i); break;
        case 1: via_b(i); break;
        case 2: up_a(i); break;
        default: up_b(i); break;
        }
    }
    end();

    begin("truncated"); /* deeper than asked: both stop at max */
    max_frames = 10;
    for (int d = 10; d < 40; d++)
        rec_plain(d);
    max_frames = 64;
    end();

    begin("through-libc");
    int v[200];
    for (int i = 0; i < 200; i++)
        v[i] = (i * 7919) % 200;
    qsort(v, 200, sizeof v[0], cmp);
    end();

    begin("thread");
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, NULL) == 0)
        pthread_join(t, NULL);
    end();

    begin("threads-at-once");
    ef_cfi_code_unloaded();
    pthread_t rs[4];
    int nr = 0;
    for (int i = 0; i < 4; i++)
        nr += pthread_create(&rs[nr], NULL, racer, NULL) == 0;
    for (int i = 0; i < nr; i++)
        pthread_join(rs[i], NULL);
    end();

    begin("signal-handler"); /* the signal frame: libunwind's */
    signal(SIGUSR1, on_signal);
    for (int i = 0; i < 10; i++)
        raise(SIGUSR1);
    end();

    begin("alternate-signal-stack");
    stack_t ss = {.ss_sp = malloc(1 << 16), .ss_size = 1 << 16};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_ONSTACK};
    sigaction(SIGUSR2, &sa, NULL);
    for (int i = 0; i < 10; i++)
        raise(SIGUSR2);
    end();

    begin("realigned-stack");
    for (int d = 0; d < 10; d++)
        realigned(d);
    end();

    begin("after-dlclose"); /* a new generation of rules: walks again, the same */
    void *m = dlopen("libm.so.6", RTLD_NOW);
    if (m)
        dlclose(m);
    ef_cfi_code_unloaded();
    for (int d = 0; d < 20; d++)
        rec_plain(d);
    end();
    return 0;
}
