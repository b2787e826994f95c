/*
 * test_parts.c - the parts under the rules: fd table, dedup set, stack depot,
 * options, event names, timestamps, and the two report renderers.
 *
 * Each is small and has edges that scenario tests never reach: fd numbers on
 * page boundaries and past the end, a full dedup set, a full stack depot,
 * every bad value of every variable, every epoll flag and unknown bits,
 * leap days, and renderers fed odd strings and too-small buffers.  The
 * rendered reports also go to files (render-*.json, render-*.txt) that
 * tests/test_unit.py parses as JSON.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "unit.h"

#define LD(x) atomic_load(&(x))

/* ---------------------------------------------------------------- fdtable */

struct seen {
    int fds[16];
    int n;
};

/* Entries that existed before the test (the shim's own: the stderr copy that
 * ef_log_copy_stderr() made at "init") are not the test's. */
static int preexisting[16], npre;

static void note_pre(int fd, struct ef_fd *e, void *arg)
{
    (void)e;
    (void)arg;
    if (npre < 16)
        preexisting[npre++] = fd;
}

static void collect(int fd, struct ef_fd *e, void *arg)
{
    struct seen *s = arg;
    CHECKF(e == ef_fd_peek(fd), "foreach passes the entry of fd %d", fd);
    for (int i = 0; i < npre; i++)
        if (preexisting[i] == fd)
            return;
    if (s->n < 16)
        s->fds[s->n] = fd;
    s->n++;
}

static int visits(unsigned lo, unsigned hi, const int *want, int nwant)
{
    struct seen s = {{0}, 0};
    ef_fd_foreach(lo, hi, collect, &s);
    int ok = s.n == nwant;
    for (int i = 0; ok && i < nwant; i++)
        ok = s.fds[i] == want[i];
    char got[256] = "";
    size_t k = 0;
    for (int i = 0; i < s.n && i < 16 && k < sizeof got; i++)
        k += (size_t)snprintf(got + k, sizeof got - k, " %d", s.fds[i]);
    return CHECKF(ok, "foreach(%u, %u) visited%s (%d fds), expected %d", lo, hi, got, s.n, nwant);
}

static void g_fdtable(void)
{
    const size_t page = 4096 * sizeof(struct ef_fd);
    ef_fd_foreach(0, ~0u, note_pre, NULL);
    for (int i = 0; i < npre; i++)
        CHECKF(ef_fd_owned(preexisting[i]), "fd %d: only the shim's own", preexisting[i]);
    CHECK(ef_fd_peek(70000) == NULL); /* never touched: no page */
    const int fds[] = {0, 4095, 4096, 70000, (int)EF_FD_MAX - 1};
    struct ef_fd *e[5];
    for (int i = 0; i < 5; i++) {
        size_t before = ef_fd_bytes();
        int mapped = ef_fd_peek(fds[i]) != NULL;
        e[i] = ef_fd_get(fds[i]);
        CHECKF(e[i] != NULL, "fd %d", fds[i]);
        CHECKF(ef_fd_bytes() - before == (mapped ? 0 : page), "fd %d: %zu more bytes, page %d",
               fds[i], ef_fd_bytes() - before, !mapped);
        CHECKF(ef_fd_peek(fds[i]) == e[i] && ef_fd_get(fds[i]) == e[i], "fd %d", fds[i]);
        CHECKF(e[i] && LD(e[i]->flags) == 0 && LD(e[i]->inst) == 0, "fd %d starts empty", fds[i]);
        for (int j = 0; j < i; j++)
            CHECK(e[i] != e[j]);
    }
    CHECK(ef_fd_get(4095) - ef_fd_get(0) == 4095); /* one page */
    size_t b = ef_fd_bytes();
    CHECK(ef_fd_get(100) && ef_fd_bytes() == b);
    const int bad[] = {(int)EF_FD_MAX, (int)EF_FD_MAX + 1, -1, INT_MAX, INT_MIN};
    for (int i = 0; i < 5; i++)
        CHECKF(!ef_fd_get(bad[i]) && !ef_fd_peek(bad[i]), "fd %d is out of range", bad[i]);

    for (int i = 0; i < 5; i++)
        if (e[i])
            atomic_store(&e[i]->flags, 0x100u);
    /* fd 100 has an entry, but an empty one: never visited */
    visits(0, ~0u, fds, 5);
    visits(0, EF_FD_MAX, fds, 5);
    visits(1, 4095, fds + 1, 1);
    visits(0, 0, fds, 1);
    visits(4096, 4096, fds + 2, 1);
    visits(4095, 4096, fds + 1, 2);
    visits(4097, 69999, NULL, 0);
    visits(70000, 70000, fds + 3, 1);
    visits(EF_FD_MAX - 1, ~0u, fds + 4, 1);
    visits(EF_FD_MAX, ~0u, NULL, 0);
    visits(5, 3, NULL, 0);

    /* The table is per process, like the kernel's. */
    pid_t c = fork();
    if (c == 0) {
        atomic_store(&ef_fd_get(5)->flags, 0x100u);
        atomic_store(&e[0]->flags, 0);
        _exit(0);
    }
    reap(c);
    CHECK(LD(ef_fd_get(5)->flags) == 0 && LD(e[0]->flags) == 0x100u);
    for (int i = 0; i < 5; i++)
        if (e[i])
            atomic_store(&e[i]->flags, 0);
}

/* --------------------------------------------------------------- dedupset */

static uint64_t mix(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void g_dedupset(void)
{
    /* Before the registry exists: everything is new, nothing is stored. */
    uint32_t idx;
    uintptr_t pc = 0x1234;
    CHECK(ef_reg == NULL);
    CHECK(ef_claim_once(5) == 1 && ef_claim_once(5) == 1);
    CHECK(ef_notice_once(0x40000000u) == 0);
    CHECK(ef_inst_alloc(&idx) == NULL && ef_process_at(1) == NULL && ef_depot_put(&pc, 1) == 0);

    CHECK(ef_track_start());
    CHECK(ef_claim_once(42) == 1 && ef_claim_once(42) == 0);
    CHECK(ef_claim_once(0) == 1 && ef_claim_once(1) == 0); /* 0 is kept as 1 */

    /* Tree-wide: what a child inserted, its parent knows, and the reverse. */
    pid_t c = fork();
    if (c == 0) {
        CHECK(ef_claim_once(777) == 1 && ef_claim_once(42) == 0);
        _exit(0);
    }
    reap(c);
    CHECK(ef_claim_once(777) == 0);
    CHECK(ef_notice_once(0x40000000u) == 1 && ef_notice_once(0x40000000u) == 0);
    c = fork();
    if (c == 0) {
        CHECK(ef_notice_once(0x40000000u) == 0);
        _exit(0);
    }
    reap(c);

    /* Fill it: every new key is new until the set is full... */
    unsigned stored = 3, wrong = 0;
    for (uint64_t i = 1; stored < EF_CLAIM_SLOTS; i++) {
        uint64_t k = mix(i);
        if (k <= 1 || k == 42 || k == 777)
            continue;
        wrong += ef_claim_once(k) != 1;
        stored++;
    }
    CHECK(wrong == 0);
    unsigned used = 0;
    for (unsigned s = 0; s < EF_CLAIM_SLOTS; s++)
        used += atomic_load((_Atomic uint64_t *)ef_reg_elem(EF_T_CLAIMS, s)) != 0;
    CHECKF(used == EF_CLAIM_SLOTS, "%u of %u slots used", used, EF_CLAIM_SLOTS);
    /* ...then a new key is still "new" (a repeated report beats a lost one)
     * and a known key is still known. */
    uint64_t fresh = mix(1ull << 40);
    CHECK(ef_claim_once(fresh) == 1 && ef_claim_once(fresh) == 1);
    CHECK(ef_claim_once(42) == 0 && ef_claim_once(mix(5)) == 0 && ef_claim_once(777) == 0);
}

/* ------------------------------------------------------------------ depot */

SITE static uint32_t capture_a(void)
{
    uint32_t id = ef_stack_capture(EF_SKIP_SHIM, NULL);
    NOTAIL();
    return id;
}

SITE static uint32_t capture_b(void)
{
    uint32_t id = ef_stack_capture(EF_SKIP_SHIM, NULL);
    NOTAIL();
    return id;
}

SITE static uint32_t inner_skip(void)
{
    uint32_t id = ef_stack_capture(EF_SKIP_SHIM_AND_ONE, NULL);
    NOTAIL();
    return id;
}

SITE static uint32_t outer_skip(void)
{
    uint32_t id = inner_skip();
    NOTAIL();
    return id;
}

SITE static uint32_t capture_deep(int n)
{
    uint32_t id = n > 0 ? capture_deep(n - 1) : ef_stack_capture(EF_SKIP_SHIM, NULL);
    NOTAIL();
    return id;
}

static int same_frames(uint32_t id, const uintptr_t *pcs, uint32_t n)
{
    uint64_t f[EF_MAX_FRAMES];
    uint32_t got = ef_depot_copy(id, f, EF_MAX_FRAMES);
    if (!got || got != n)
        return 0;
    for (uint32_t i = 0; i < n; i++)
        if (f[i] != pcs[i])
            return 0;
    return 1;
}

static void g_depot(void)
{
    uintptr_t a[3] = {0x1000, 0x2000, 0x3000}, b[3] = {0x1000, 0x2000, 0x3001};
    uint32_t n = 99;
    CHECK(ef_depot_put(a, 0) == 0);
    uint32_t ida = ef_depot_put(a, 3), idb = ef_depot_put(b, 3), idc = ef_depot_put(a, 2);
    CHECK(ida && idb && idc && ida != idb && ida != idc && idb != idc);
    CHECK(ef_depot_put(a, 3) == ida && ef_depot_put(b, 3) == idb && ef_depot_put(a, 2) == idc);
    CHECK(ida <= EF_DEPOT_SLOTS && same_frames(ida, a, 3) && same_frames(idb, b, 3));
    CHECK(same_frames(idc, a, 2));
    uint64_t out[EF_MAX_FRAMES];
    CHECK(ef_depot_copy(0, out, EF_MAX_FRAMES) == 0);
    CHECK(ef_depot_copy(EF_DEPOT_SLOTS + 1, out, EF_MAX_FRAMES) == 0);
    CHECK(ef_depot_copy(UINT32_MAX, out, EF_MAX_FRAMES) == 0);
    CHECK(n == 99);

    /* Many stacks: all different ids, all round trips. */
    static uint32_t ids[1000];
    for (int i = 0; i < 1000; i++) {
        uintptr_t pcs[4] = {0x5000u + (uintptr_t)i, 0x6000, 0x7000, (uintptr_t)i * 16};
        ids[i] = ef_depot_put(pcs, 1 + (uint32_t)(i % 4));
        CHECKF(ids[i] && same_frames(ids[i], pcs, 1 + (uint32_t)(i % 4)), "stack %d", i);
    }
    int dup = 0;
    for (int i = 0; i < 1000; i++)
        for (int j = 0; j < i; j++)
            dup += ids[i] == ids[j];
    CHECK(dup == 0);

    /* Shared by the tree: a child's stack is readable by the parent. */
    int pp[2];
    CHECK(pipe2(pp, O_CLOEXEC) == 0);
    uintptr_t child_pcs[2] = {0xc0de, 0xbeef};
    pid_t c = fork();
    if (c == 0) {
        uint32_t id = ef_depot_put(child_pcs, 2);
        CHECK(ef_depot_put(a, 3) == ida);
        CHECK(write(pp[1], &id, sizeof id) == (ssize_t)sizeof id);
        _exit(0);
    }
    reap(c);
    uint32_t cid = 0;
    CHECK(read(pp[0], &cid, sizeof cid) == (ssize_t)sizeof cid);
    CHECK(cid && same_frames(cid, child_pcs, 2) && ef_depot_put(child_pcs, 2) == cid);

    /* Captured stacks: one call site, one id; two sites, two ids. */
    uint32_t sa[2], sb;
    for (int i = 0; i < 2; i++)
        sa[i] = capture_a();
    sb = capture_b();
    CHECK(sa[0] && sa[0] == sa[1] && sb && sb != sa[0]);
    stack_site_is(sa[0], "capture_a");
    stack_site_is(sb, "capture_b");
    CHECK(stack_has(sa[0], "g_depot") && stack_has(sa[0], "main"));
    CHECK(!ef_stack_last_cut());
    char fn[256];
    CHECKF(!strcmp(stack_fn(outer_skip(), 0, fn, sizeof fn), "outer_skip"),
           "EF_SKIP_SHIM_AND_ONE skips one more frame: frame 0 is %s", fn);
    /* EPOLLFORK_STACK_DEPTH */
    CHECKF(stack_len(capture_deep(40)) == 24, "default depth: %u", stack_len(capture_deep(40)));
    ef_opt.stack_depth = 2;
    CHECK(stack_len(capture_deep(40)) == 2);
    ef_opt.stack_depth = 1;
    CHECK(stack_len(capture_deep(40)) == 1);
    ef_opt.stack_depth = EF_MAX_FRAMES;
    CHECK(stack_len(capture_deep(100)) == EF_MAX_FRAMES);
    ef_opt.stack_depth = 24;

    /* Full: new stacks get no id (one notice), known stacks keep theirs. */
    uintptr_t big[64];
    unsigned puts = 0;
    uint32_t id = 1;
    for (; id && puts < EF_DEPOT_FRAMES / 64 + 16; puts++) {
        for (int j = 0; j < 64; j++)
            big[j] = (uintptr_t)0x100000 * (puts + 1) + (uintptr_t)j;
        id = ef_depot_put(big, 64);
    }
    CHECKF(id == 0, "the depot filled up after %u stacks of 64 frames", puts);
    big[0] = 0xdead;
    CHECK(ef_depot_put(big, 64) == 0 && ef_depot_put(big, 1) == 0);
    CHECK(ef_depot_put(a, 3) == ida && same_frames(ida, a, 3) && same_frames(cid, child_pcs, 2));
    uint64_t fr[EF_MAX_FRAMES];
    uint32_t nf = ef_depot_copy(sa[0], fr, EF_MAX_FRAMES);
    uintptr_t again[EF_MAX_FRAMES];
    for (uint32_t i = 0; i < nf; i++)
        again[i] = (uintptr_t)fr[i];
    CHECK(nf && ef_depot_put(again, nf) == sa[0]);
    CHECK(capture_b() == 0); /* a new call site */
    static char log[8192];
    read_file(unit_logpath, log, sizeof log);
    CHECKF(count_lines_with(log, "stack depot is full") == 1, "one notice:\n%s", log);
    CHECKF(count_lines_with(log, "epollfork") == 1, "no other notice:\n%s", log);
}

/* ---------------------------------------------------------------- options */

#define LONGVAL "<long>"
static const struct optcase {
    const char *name;
    const char *good[6];
    const char *bad[8];
} optcases[] = {
    {"EPOLLFORK_LOG",
     {"stderr", "/tmp/ef.log", "/tmp/ef-%p.log", "syslog", "syslog:/dev/log"},
     {"", "syslog:", "syslog:relative/path", LONGVAL}},
    {"EPOLLFORK_FORMAT", {"text", "json"}, {"", "xml", "JSON", "text "}},
    {"EPOLLFORK_ON_REPORT", {"warn", "abort"}, {"", "crash", "Abort"}},
    {"EPOLLFORK_STACK_DEPTH",
     {"1", "24", "64"},
     {"", "0", "65", "-1", "abc", "12x", "99999999999999999999"}},
    {"EPOLLFORK_SUPPRESSIONS", {"/tmp/ef.supp", ""}, {LONGVAL}},
    {"EPOLLFORK_DEDUP", {"0", "1"}, {"", "2", "-1", "yes"}},
    {"EPOLLFORK_DISABLE", {"0", "1"}, {"", "2", "-1", "yes"}},
    {"EPOLLFORK_REPAIR", {"0", "1"}, {"", "2", "-1", "on"}},
    {"EPOLLFORK_UNWIND", {"tables", "libunwind"}, {"", "frames", "Tables", "libunwind "}},
    {"EPOLLFORK_DEBUG", {"0", "1"}, {"", "2", "-1", "yes"}},
};
#define NCASES (sizeof optcases / sizeof optcases[0])

/* The current value of a variable, as its text would read. */
static const char *opt_value(const char *name, char *buf, size_t len)
{
    if (!strcmp(name, "EPOLLFORK_LOG"))
        return ef_opt.log;
    if (!strcmp(name, "EPOLLFORK_FORMAT"))
        return ef_opt.format == EF_FMT_JSON ? "json" : ef_opt.format == EF_FMT_TEXT ? "text" : "?";
    if (!strcmp(name, "EPOLLFORK_ON_REPORT"))
        return ef_opt.on_report == EF_ON_ABORT ? "abort" : ef_opt.on_report == EF_ON_WARN ? "warn" : "?";
    if (!strcmp(name, "EPOLLFORK_SUPPRESSIONS"))
        return ef_opt.suppressions;
    if (!strcmp(name, "EPOLLFORK_UNWIND"))
        return ef_opt.unwind == EF_UNWIND_LIBUNWIND ? "libunwind"
               : ef_opt.unwind == EF_UNWIND_TABLES  ? "tables"
                                                    : "?";
    int v = !strcmp(name, "EPOLLFORK_STACK_DEPTH") ? ef_opt.stack_depth
            : !strcmp(name, "EPOLLFORK_DEDUP")     ? ef_opt.dedup
            : !strcmp(name, "EPOLLFORK_DISABLE")   ? ef_opt.disable
            : !strcmp(name, "EPOLLFORK_REPAIR")    ? ef_opt.repair
            : !strcmp(name, "EPOLLFORK_DEBUG")     ? ef_opt.debug
                                                   : INT_MIN;
    if (v == INT_MIN)
        return NULL;
    snprintf(buf, len, "%d", v);
    return buf;
}

struct optrow {
    char name[64], def[256], help[512];
};

static int read_table(struct optrow *rows, int max)
{
    int p[2];
    if (!CHECK(pipe(p) == 0))
        return 0;
    ef_options_print_table(p[1]);
    close(p[1]);
    static char text[16384];
    size_t k = 0;
    ssize_t n;
    while (k + 1 < sizeof text && (n = read(p[0], text + k, sizeof text - 1 - k)) > 0)
        k += (size_t)n;
    text[k] = 0;
    close(p[0]);
    int nrows = 0;
    for (char *line = text, *nl; *line && nrows < max; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!CHECKF(nl, "the table ends with a newline"))
            break;
        *nl = 0;
        char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
        if (!CHECKF(t1 && t2 && !strchr(t2 + 1, '\t'), "three tab-separated fields: %s", line))
            continue;
        *t1 = *t2 = 0;
        snprintf(rows[nrows].name, sizeof rows[nrows].name, "%.63s", line);
        snprintf(rows[nrows].def, sizeof rows[nrows].def, "%.255s", t1 + 1);
        snprintf(rows[nrows].help, sizeof rows[nrows].help, "%.511s", t2 + 1);
        nrows++;
    }
    return nrows;
}

static struct ef_options defaults;

static int nlines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}
static char longval[5000];

static int parse_env(char *const *envp, char *err, size_t len)
{
    ef_opt = defaults;
    ef_options_parse(envp, err, len);
    return count_lines_with(err, "epollfork:");
}

static int parse1(const char *name, const char *value, char *err, size_t len)
{
    static char kv[6000];
    snprintf(kv, sizeof kv, "%s=%s", name, value);
    char *envp[] = {kv, NULL};
    return parse_env(envp, err, len);
}

static void g_options(void)
{
    /* ef_opt holds nothing before the first parse: every default comes from
     * the table, through the parser (options.c). */
    char none_err[8];
    char *none[] = {NULL};
    ef_options_parse(none, none_err, sizeof none_err);
    CHECK(!none_err[0]);
    defaults = ef_opt;
    memset(longval, 'a', sizeof longval - 1);
    longval[0] = '/';
    struct optrow rows[32];
    int nrows = read_table(rows, 32);
    CHECK(nrows >= 5);
    char buf[64], err[8192];
    for (int i = 0; i < nrows; i++) {
        const struct optrow *r = &rows[i];
        CHECKF(!strncmp(r->name, "EPOLLFORK_", 10) && r->help[0], "row %s", r->name);
        for (int j = 0; j < i; j++)
            CHECKF(strcmp(r->name, rows[j].name), "%s listed twice", r->name);
        const struct optcase *oc = NULL;
        for (size_t k = 0; k < NCASES; k++)
            if (!strcmp(optcases[k].name, r->name))
                oc = &optcases[k];
        const char *now = opt_value(r->name, buf, sizeof buf);
        if (!CHECKF(oc && now, "option %s has no case in test_parts.c: add its good and bad values",
                    r->name))
            continue;
        CHECKF(!strcmp(now, r->def), "%s: the table says default '%s', ef_opt holds '%s'", r->name,
               r->def, now);
        for (int g = 0; g < 6 && oc->good[g]; g++) {
            int lines = parse1(r->name, oc->good[g], err, sizeof err);
            now = opt_value(r->name, buf, sizeof buf);
            CHECKF(lines == 0 && !err[0], "%s=%s: %s", r->name, oc->good[g], err);
            CHECKF(!strcmp(now, oc->good[g]), "%s=%s gave '%s'", r->name, oc->good[g], now);
        }
        for (int b = 0; b < 8 && oc->bad[b]; b++) {
            const char *v = strcmp(oc->bad[b], LONGVAL) ? oc->bad[b] : longval;
            int lines = parse1(r->name, v, err, sizeof err);
            now = opt_value(r->name, buf, sizeof buf);
            char named[128], def[300];
            snprintf(named, sizeof named, "%s='%.60s", r->name, v);
            snprintf(def, sizeof def, "default '%s'", r->def);
            CHECKF(lines == 1 && nlines(err) == 1,
                   "%s='%.40s': %d lines: %s", r->name, v, lines, err);
            CHECKF(strstr(err, named) && strstr(err, def),
                   "the complaint names the variable, the value and the default: %s", err);
            CHECKF(!strcmp(now, r->def), "%s='%.40s' left '%s', not the default '%s'", r->name, v,
                   now, r->def);
        }
    }

    /* Unknown names: one warning each; names that only look alike too. */
    const char *unknown[] = {"EPOLLFORK_FOO=1", "EPOLLFORK_LOGX=/tmp/x", "EPOLLFORK_LO=x",
                             "EPOLLFORK_=1", "EPOLLFORK_STACK_DEPTH_MAX=3"};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        char *envp[] = {(char *)unknown[i], NULL};
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(strchr(unknown[i], '=') - unknown[i]), unknown[i]);
        int lines = parse_env(envp, err, sizeof err);
        CHECKF(lines == 1 && strstr(err, name) && strstr(err, "unknown"), "%s: %s", unknown[i], err);
        CHECK(!memcmp(&ef_opt, &defaults, sizeof defaults));
    }
    /* Not ours, or ours but not for the library: silence. */
    char *quiet[] = {"PATH=/bin", "epollfork_log=/tmp/x", "EPOLLFORKLOG=x", "EPOLLFORK_LOG",
                     "EPOLLFORK_EXEC_LEAKS=1:3,4", "EPOLLFORK_LIBRARY=/x/lib.so", NULL};
    CHECKF(parse_env(quiet, err, sizeof err) == 0 && !err[0], "%s", err);
    CHECK(!memcmp(&ef_opt, &defaults, sizeof defaults));
    /* Several at once: one line per complaint, good values applied. */
    char *mixed[] = {"EPOLLFORK_FORMAT=json", "EPOLLFORK_STACK_DEPTH=0", "EPOLLFORK_NOPE=1",
                     "EPOLLFORK_DEDUP=0", "EPOLLFORK_ON_REPORT=maybe", NULL};
    int lines = parse_env(mixed, err, sizeof err);
    CHECKF(lines == 3 && nlines(err) == 3, "%s", err);
    CHECK(ef_opt.format == EF_FMT_JSON && ef_opt.dedup == 0);
    CHECK(ef_opt.stack_depth == defaults.stack_depth && ef_opt.on_report == defaults.on_report);
    /* A small buffer: lines that do not fit are dropped, never overflowed. */
    char *small = malloc(16);
    if (CHECK(small)) {
        memset(small, 'X', 16);
        parse_env(mixed, small, 16);
        CHECK(memchr(small, 0, 16) != NULL);
        free(small);
    }
    /* NULL: the process environment. */
    setenv("EPOLLFORK_STACK_DEPTH", "7", 1);
    ef_opt = defaults;
    ef_options_parse(NULL, err, sizeof err);
    CHECKF(ef_opt.stack_depth == 7 && !err[0], "%d %s", ef_opt.stack_depth, err);
    unsetenv("EPOLLFORK_STACK_DEPTH");
    ef_opt = defaults;
}

/* ----------------------------------------------------------------- events */

static void g_events(void)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } flags[] = {
        {EPOLLIN, "EPOLLIN"},         {EPOLLPRI, "EPOLLPRI"},
        {EPOLLOUT, "EPOLLOUT"},       {EPOLLERR, "EPOLLERR"},
        {EPOLLHUP, "EPOLLHUP"},       {EPOLLRDNORM, "EPOLLRDNORM"},
        {EPOLLRDBAND, "EPOLLRDBAND"}, {EPOLLWRNORM, "EPOLLWRNORM"},
        {EPOLLWRBAND, "EPOLLWRBAND"}, {EPOLLMSG, "EPOLLMSG"},
        {EPOLLRDHUP, "EPOLLRDHUP"},   {EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"},
        {EPOLLWAKEUP, "EPOLLWAKEUP"}, {EPOLLONESHOT, "EPOLLONESHOT"},
        {EPOLLET, "EPOLLET"},
    };
    enum { NF = sizeof flags / sizeof flags[0] };
    char buf[512], want[512];
    uint32_t known = 0;
    for (int i = 0; i < NF; i++) {
        size_t n = ef_events_str(flags[i].bit, buf, sizeof buf);
        CHECKF(!strcmp(buf, flags[i].name) && n == strlen(buf), "0x%x: '%s'", flags[i].bit, buf);
        known |= flags[i].bit;
    }
    CHECK(ef_events_str(0, buf, sizeof buf) == 0 && !buf[0]);
    CHECK(ef_events_str(EPOLLIN | EPOLLOUT | EPOLLET, buf, sizeof buf) && !strcmp(buf, "EPOLLIN|EPOLLOUT|EPOLLET"));
    CHECK(ef_events_str(EPOLLET | EPOLLIN, buf, sizeof buf) && !strcmp(buf, "EPOLLIN|EPOLLET"));
    /* Bits no flag names are shown as hex, never dropped. */
    uint32_t unknown = ~known;
    CHECK(unknown != 0);
    for (int b = 0; b < 32; b++) {
        uint32_t bit = 1u << b;
        if (!(unknown & bit))
            continue;
        ef_events_str(bit, buf, sizeof buf);
        snprintf(want, sizeof want, "0x%x", bit);
        CHECKF(!strcmp(buf, want), "unknown bit 0x%x: '%s'", bit, buf);
        ef_events_str(EPOLLIN | bit, buf, sizeof buf);
        snprintf(want, sizeof want, "EPOLLIN|0x%x", bit);
        CHECKF(!strcmp(buf, want), "EPOLLIN|0x%x: '%s'", bit, buf);
    }
    size_t k = 0;
    for (int i = 0; i < NF; i++)
        k += (size_t)snprintf(want + k, sizeof want - k, "%s%s", i ? "|" : "", flags[i].name);
    snprintf(want + k, sizeof want - k, "|0x%x", unknown);
    CHECKF(ef_events_str(~0u, buf, sizeof buf) == strlen(want) && !strcmp(buf, want), "all bits: '%s'", buf);
    /* Small buffers: cut, terminated, never overrun. */
    for (size_t len = 1; len < 40; len++) {
        char *b = malloc(len);
        if (!b)
            continue;
        size_t n = ef_events_str(~0u, b, len);
        CHECKF(n < len && strlen(b) == n && !strncmp(b, want, n), "len %zu: %zu '%s'", len, n, b);
        free(b);
    }
    buf[0] = 'X';
    CHECK(ef_events_str(EPOLLIN, buf, 0) == 0 && buf[0] == 'X');
    CHECK(!strcmp(ef_op_name(EPOLL_CTL_ADD), "EPOLL_CTL_ADD") && !strcmp(ef_op_name(EPOLL_CTL_MOD), "EPOLL_CTL_MOD"));
    CHECK(!strcmp(ef_op_name(EPOLL_CTL_DEL), "EPOLL_CTL_DEL") && !strcmp(ef_op_name(99), "EPOLL_CTL_?"));
}

/* ---------------------------------------------------------------- rfc3339 */

static void g_rfc3339(void)
{
    static const struct {
        uint64_t ns;
        const char *want;
    } t[] = {
        {0, "1970-01-01T00:00:00.000000Z"},
        {999, "1970-01-01T00:00:00.000000Z"},
        {1000, "1970-01-01T00:00:00.000001Z"},
        {1000000000ull, "1970-01-01T00:00:01.000000Z"},
        {951782400ull * 1000000000ull, "2000-02-29T00:00:00.000000Z"},
        {1795321297ull * 1000000000ull + 123456789ull, "2026-11-22T04:21:37.123456Z"},
        {1795321297ull * 1000000000ull + 123456000ull, "2026-11-22T04:21:37.123456Z"},
        {946684799ull * 1000000000ull + 999999999ull, "1999-12-31T23:59:59.999999Z"},
        {1709208000ull * 1000000000ull, "2024-02-29T12:00:00.000000Z"},
        {2147483648ull * 1000000000ull, "2038-01-19T03:14:08.000000Z"},
        {4107542399ull * 1000000000ull, "2100-02-28T23:59:59.000000Z"},
        {4107542400ull * 1000000000ull, "2100-03-01T00:00:00.000000Z"},
        {13574563200ull * 1000000000ull, "2400-02-29T00:00:00.000000Z"},
        {UINT64_MAX, "2554-07-21T23:34:33.709551Z"},
    };
    char buf[64];
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        memset(buf, 'X', sizeof buf);
        ef_rfc3339(t[i].ns, buf, sizeof buf);
        CHECKF(!strcmp(buf, t[i].want), "%llu ns: '%s', expected '%s'", (unsigned long long)t[i].ns,
               buf, t[i].want);
    }
    char *small = malloc(10);
    if (CHECK(small)) {
        ef_rfc3339(1795321297ull * 1000000000ull, small, 10);
        CHECKF(!strcmp(small, "2026-11-2"), "'%s'", small);
        free(small);
    }
    /* now is now */
    uint64_t now = ef_realtime_ns();
    CHECK(now > 1700000000ull * 1000000000ull);
}

/* ----------------------------------------------------------------- render */

/* One function per stack of a report, so that each stack names its own site. */
#define WHERE(name)                                                            \
    SITE static uint32_t name(void)                                            \
    {                                                                          \
        uint32_t id = ef_stack_capture(EF_SKIP_SHIM, NULL);                    \
        NOTAIL();                                                              \
        return id;                                                             \
    }
WHERE(where_call)
WHERE(where_fork)
WHERE(where_create)
WHERE(where_add)
WHERE(where_use)
WHERE(where_close)
WHERE(where_exec)
WHERE(where_supp)

#define RPID 4242
#define T2026 (1795321297ull * 1000000000ull + 123456789ull)
/* Characters JSON must escape and text must show as they are. */
#define ODD_TARGET "pipe:[99] \"q\" \\ t\tx"

static void fill_shared(struct ef_report *r)
{
    memset(r, 0, sizeof *r);
    r->kind = EF_KIND_SHARED_CTL;
    r->pid = RPID;
    r->ppid = 1;
    r->owner_pid = RPID;
    r->modifier_pid = RPID + 1;
    r->other_pid = RPID;
    r->other_use = EF_USE_WAIT;
    r->op = EPOLL_CTL_DEL;
    r->epfd = 5;
    r->fd = 7;
    snprintf(r->target, sizeof r->target, "%s", ODD_TARGET);
    r->create_how = 1;
    r->create_flags = EPOLL_CLOEXEC;
    r->create_fd = 5;
    r->time_ns = T2026;
    r->fork_parent_pid = RPID;
    r->fork_child_pid = RPID + 1;
    r->fork_how = EF_FORK_FORK;
    r->stacks[EF_ST_CALL] = where_call();
    r->stacks[EF_ST_FORK] = where_fork();
    r->stacks[EF_ST_CREATE] = where_create();
    r->stacks[EF_ST_ADD] = where_add();
    r->stacks[EF_ST_USE] = where_use();
    r->add_pid = RPID;
    r->lost_changes = 3;
}

static void fill_blocked(struct ef_report *r)
{
    fill_shared(r);
    r->op = EPOLL_CTL_MOD;
    r->events = EPOLLIN | EPOLLET;
    r->data = 0xfeed;
    r->other_use = EF_USE_BLOCKED;
    r->pid = RPID + 1;
    r->stacks[EF_ST_USE] = 0;
    r->stacks[EF_ST_FORK] = r->stacks[EF_ST_CREATE] = r->stacks[EF_ST_ADD] = 0;
    r->create_how = 2;
    r->call_cut = 1;
    r->lost_changes = 0;
    r->target[0] = 0;
}

static void fill_stale(struct ef_report *r)
{
    memset(r, 0, sizeof *r);
    r->kind = EF_KIND_STALE;
    r->pid = RPID;
    r->ppid = 1;
    r->owner_pid = RPID;
    r->modifier_pid = r->other_pid = RPID;
    r->epfd = 5;
    r->fd = 7;
    r->events = EPOLLIN;
    r->data = 7;
    snprintf(r->target, sizeof r->target, "socket:[1234]");
    r->create_how = 0;
    r->create_fd = 5;
    r->time_ns = T2026;
    r->stacks[EF_ST_CLOSE] = where_close();
    r->stacks[EF_ST_ADD] = where_add();
    r->add_pid = RPID;
    r->stacks[EF_ST_CREATE] = where_create();
    r->stacks[EF_ST_USE] = where_use();
    r->holder_pid = RPID + 1;
    r->holder_fd = 9;
    r->fork_parent_pid = RPID;
    r->fork_child_pid = RPID + 1;
    r->stacks[EF_ST_FORK] = where_fork();
}

static void fill_leak(struct ef_report *r, int startup)
{
    memset(r, 0, sizeof *r);
    r->kind = EF_KIND_EXEC_LEAK;
    r->pid = RPID;
    r->ppid = 1;
    r->owner_pid = RPID;
    r->epfd = 5;
    r->time_ns = T2026;
    snprintf(r->program, sizeof r->program, "/usr/bin/prog with \"space\"");
    snprintf(r->argv0, sizeof r->argv0, "prog\\");
    r->exec_how = startup ? "start-up" : "execve";
    r->stacks[EF_ST_EXEC] = startup ? 0 : where_exec();
    r->stacks[EF_ST_CREATE] = startup ? 0 : where_create();
    r->create_how = startup ? 2 : 1;
    r->create_fd = 5;
    r->entries = 2;
}

static int check_text(const char *name, const char *buf, size_t n, int pid, const char *kind)
{
    char pfx[32], sum[96];
    snprintf(pfx, sizeof pfx, "==%d== ", pid);
    snprintf(sum, sizeof sum, "==%d== epollfork: SUMMARY: %s ", pid, kind);
    int ok = CHECKF(n && n == strlen(buf) && buf[n - 1] == '\n', "%s: one string ending in a newline", name);
    int lineno = 0, summaries = 0;
    const char *last = buf;
    for (const char *p = buf; *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        lineno++;
        ok &= CHECKF(!strncmp(p, pfx, strlen(pfx)), "%s: line %d does not start with %s: %.*s", name,
                     lineno, pfx, (int)len, p);
        if (memmem(p, len, "epollfork: SUMMARY:", 19)) {
            summaries++;
            ok &= CHECKF(!strncmp(p, sum, strlen(sum)), "%s: %.*s", name, (int)len, p);
        }
        last = p;
        p += len + (nl ? 1 : 0);
    }
    ok &= CHECKF(summaries == 1 && !strncmp(last, sum, strlen(sum)), "%s: one SUMMARY line, the last",
                 name);
    char warn[96];
    snprintf(warn, sizeof warn, "==%d== epollfork: WARNING: %s: ", pid, kind);
    ok &= CHECKF(!strncmp(buf, warn, strlen(warn)), "%s: starts with %s", name, warn);
    return ok;
}

static int check_json(const char *name, const char *buf, size_t n, const char *kind)
{
    int ok = CHECKF(n && n == strlen(buf) && buf[0] == '{' && n >= 3 && !strcmp(buf + n - 2, "}\n"),
                    "%s: one object and a newline", name);
    for (size_t i = 0; i + 1 < n; i++)
        if ((unsigned char)buf[i] < 0x20) {
            ok &= CHECKF(0, "%s: raw control character 0x%02x at %zu", name, (unsigned)buf[i], i);
            break;
        }
    char k[96];
    snprintf(k, sizeof k, "\"kind\":\"%s\"", kind);
    ok &= CHECKF(strstr(buf, k) != NULL, "%s: %s", name, k);
    return ok;
}

/* Render r both ways, check, save for the Python side; small buffers too. */
void render_both(const char *name, const struct ef_report *r)
{
    static char buf[512 * 1024];
    char file[128];
    int fmt = ef_opt.format;
    ef_opt.format = EF_FMT_TEXT;
    size_t n = ef_report_render(r, buf, sizeof buf);
    check_text(name, buf, n, r->pid, ef_kind_name(r->kind));
    snprintf(file, sizeof file, "render-%s.txt", name);
    write_out(file, buf, n);
    const size_t sizes[] = {1, 2, 16, 100, 700};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *small = malloc(sizes[i]);
        if (!small)
            continue;
        size_t m = ef_report_render(r, small, sizes[i]);
        CHECKF(m < sizes[i] && strlen(small) == m && !strncmp(small, buf, m), "%s: text in %zu bytes",
               name, sizes[i]);
        free(small);
    }
    ef_opt.format = EF_FMT_JSON;
    n = ef_report_render(r, buf, sizeof buf);
    check_json(name, buf, n, ef_kind_name(r->kind));
    snprintf(file, sizeof file, "render-%s.json", name);
    write_out(file, buf, n);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        char *small = malloc(sizes[i]);
        if (!small)
            continue;
        size_t m = ef_report_render(r, small, sizes[i]);
        CHECKF(m < sizes[i] && strlen(small) == m && !strncmp(small, buf, m), "%s: JSON in %zu bytes",
               name, sizes[i]);
        free(small);
    }
    ef_opt.format = fmt;
}

static void g_render(void)
{
    static char text[512 * 1024];
    struct ef_report r;
    fill_shared(&r);
    render_both("shared", &r);
    ef_opt.format = EF_FMT_TEXT;
    ef_report_render(&r, text, sizeof text);
    /* the tab of ODD_TARGET is shown as \t: no control character in a text line */
    CHECK(strstr(text, "==4242== epollfork: WARNING: shared-epoll-ctl: process 4243 deleted fd 7 (pipe:[99] \"q\" \\ t\\tx)"));
    CHECK(strstr(text, "3 earlier changes could not be read"));
    CHECK(strstr(text, " in where_call (") && strstr(text, " in where_fork (") && strstr(text, " in where_use ("));
    CHECK(strstr(text, " op=EPOLL_CTL_DEL") && strstr(text, " site=where_call("));
    CHECK(strstr(text, " modifier_pid=4243 other_pid=4242 owner_pid=4242"));
    CHECK(strstr(text, "#0 0x") && !strstr(text, "<stack not recorded>"));

    fill_blocked(&r);
    render_both("blocked", &r);
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, "modified fd 7 (unknown target) in") && strstr(text, "was blocked waiting on"));
    CHECK(strstr(text, "events=EPOLLIN|EPOLLET") && strstr(text, "only the calling frame"));
    CHECK(strstr(text, "==4243==    <") && strstr(text, " other_use=blocked-in-wait"));
    CHECK(!strstr(text, "the affected use"));

    fill_stale(&r);
    render_both("stale", &r);
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, "process 4243 still holds a copy (fd 9)") && strstr(text, " in where_close ("));
    CHECK(strstr(text, " holder_pid=4243 holder_fd=9") && strstr(text, " site=where_close("));

    fill_leak(&r, 0);
    render_both("leak", &r);
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, "will be inherited by /usr/bin/prog with \"space\"") && strstr(text, " in where_exec ("));
    CHECK(strstr(text, " exec=execve entries=2"));
    fill_leak(&r, 1);
    render_both("startup", &r);
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, "started holding epoll fd 5") && strstr(text, " exec=start-up"));

    /* Nothing known at all: still well formed. */
    memset(&r, 0, sizeof r);
    r.kind = EF_KIND_SHARED_CTL;
    r.pid = RPID;
    render_both("empty", &r);

    /* A name with a newline (a FIFO's path can hold one, so can a program's):
     * every text line must still start with ==PID==, and JSON must escape it. */
    fill_shared(&r);
    snprintf(r.target, sizeof r.target, "/tmp/odd\nfifo\r\x01");
    render_both("newline", &r);
    fill_leak(&r, 0);
    snprintf(r.program, sizeof r.program, "/tmp/odd\nprogram");
    render_both("newline-leak", &r);
    ef_opt.format = EF_FMT_TEXT;
}

/* ------------------------------------------------------------ repair words */

/* ef_repair_fill() reads a record that may come from the shared ring (any
 * process of the tree can write it): every `how` and `step`, in range or not,
 * with nonsense numbers, gives a sentence and a well-formed report in text and
 * JSON; `repaired` is true exactly for the four repairs. */
static void g_repairwords(void)
{
    static char text[512 * 1024];
    struct ef_report r;
    const int32_t odd[] = {0, 1, -1, INT32_MAX, INT32_MIN};
    for (uint32_t how = 0; how <= EF_REPAIR_FAILED + 2; how++) {
        for (uint32_t step = 0; step <= EF_RSTEP_ALLOWED + 2; step++) {
            for (int kind = 0; kind < EF_NKINDS; kind++) {
                int32_t v = odd[(how + step + (uint32_t)kind) % 5];
                struct ef_repair_rec rec = {how, step, v, v, v, v, v, v ? EMFILE : 0, v};
                if (kind == EF_KIND_STALE)
                    fill_stale(&r);
                else if (kind == EF_KIND_EXEC_LEAK)
                    fill_leak(&r, (int)(how & 1));
                else
                    fill_shared(&r);
                r.repair_mode = 1;
                ef_repair_fill(&r, &rec);
                int ok = how == EF_REPAIR_COPIED || how == EF_REPAIR_REBUILT ||
                         how == EF_REPAIR_CLOEXEC || how == EF_REPAIR_CLOSED;
                CHECKF(r.repaired == ok && r.repair[0] &&
                           (ok ? strncmp(r.repair, "not repaired", 12) != 0
                               : strncmp(r.repair, "not repaired: ", 14) == 0),
                       "how %u step %u kind %d: %d %s", how, step, kind, r.repaired, r.repair);
                char name[64];
                snprintf(name, sizeof name, "repair-%u-%u-%d", how, step, kind);
                render_both(name, &r);
            }
        }
    }
    /* a garbage `how` straight from the ring */
    struct ef_repair_rec junk;
    memset(&junk, 0xa5, sizeof junk);
    fill_shared(&r);
    r.repair_mode = 1;
    ef_repair_fill(&r, &junk);
    CHECK(!r.repaired && !strncmp(r.repair, "not repaired: no repair was attempted", 37));
    /* the text line and the two fields, before site, in both renderings */
    struct ef_repair_rec good = {EF_REPAIR_COPIED, 0, 4243, 5, 3, 1, 1, 0, 7};
    ef_repair_fill(&r, &good);
    ef_opt.format = EF_FMT_TEXT;
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, "==4242== epollfork: REPAIRED: process 4243 was given a private copy of "
                       "epoll fd 5 with 3 entries; 1 entry whose file it no longer had open at "
                       "that number left out; 1 disarmed EPOLLONESHOT entry"));
    CHECK(strstr(text, " repaired=true repair=\"process 4243 ") && strstr(text, "\" site=where_call("));
    ef_opt.format = EF_FMT_JSON;
    ef_report_render(&r, text, sizeof text);
    CHECK(strstr(text, ",\"repaired\":true,\"repair\":\"process 4243 ") &&
          strstr(text, "\",\"site\":\"where_call("));
    /* without repair mode, neither field */
    r.repair_mode = 0;
    ef_report_render(&r, text, sizeof text);
    CHECK(!strstr(text, "\"repaired\"") && !strstr(text, "\"repair\""));
    ef_opt.format = EF_FMT_TEXT;
    ef_report_render(&r, text, sizeof text);
    CHECK(!strstr(text, "REPAIRED") && !strstr(text, "repaired="));
}

/* ------------------------------------------------------------------- emit */

static size_t log_size(void)
{
    struct stat st;
    return stat(unit_logpath, &st) == 0 ? (size_t)st.st_size : 0;
}

/* ef_report_emit(): the real path to the log, EPOLLFORK_DEDUP, suppressions,
 * and EPOLLFORK_ON_REPORT=abort. */
static void g_emit(void)
{
    static char log[256 * 1024];
    struct ef_report r;
    unsigned long count0 = ef_report_counts().reports;

    /* 1. No hook: rendered and written to EPOLLFORK_LOG, one report per write. */
    ef_report_hook = NULL;
    ef_opt.format = EF_FMT_JSON;
    fill_shared(&r);
    size_t before = log_size();
    ef_report_emit(&r);
    read_file(unit_logpath, log, sizeof log);
    const char *added = log + (before < sizeof log ? before : 0);
    CHECKF(nlines(added) == 1 && added[0] == '{' && strstr(added, "\"kind\":\"shared-epoll-ctl\""),
           "one JSON line: %s", added);
    ef_opt.format = EF_FMT_TEXT;
    fill_stale(&r);
    before = log_size();
    ef_report_emit(&r);
    read_file(unit_logpath, log, sizeof log);
    added = log + (before < sizeof log ? before : 0);
    check_text("emitted", added, strlen(added), RPID, "stale-registration");
    CHECK(ef_report_counts().reports == count0 + 2);

    /* 2. EPOLLFORK_DEDUP: the same kind and stacks are printed once. */
    ef_report_hook = unit_hook;
    unsigned m = rep_mark();
    unsigned long deduped = ef_report_counts().deduped;
    ef_report_emit(&r); /* emitted above */
    CHECK(rep_count(m, NULL) == 0 && ef_report_counts().deduped == deduped + 1);
    fill_leak(&r, 0);
    ef_report_emit(&r);
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 1 && ef_report_counts().deduped == deduped + 2);
    r.kind = EF_KIND_STALE; /* same stacks, another kind: another report */
    r.exec_how = "execve";
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 2);
    ef_opt.dedup = 0;
    fill_leak(&r, 1);
    ef_report_emit(&r);
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 4);
    ef_opt.dedup = 1;

    /* 3. Suppressions: counted, not printed; bad lines named, the rest kept. */
    char supp[PATH_MAX];
    snprintf(supp, sizeof supp, "%s/emit.supp", unit_outdir);
    const char *rules = "# known and accepted\n"
                        "shared-epoll-ctl:where_supp*  \n"
                        "stale-registration: libc.so*\n"
                        "not a rule\n"
                        "bogus-kind:x\n"
                        "*:\n"
                        "epoll-fd-exec-leak:zzz\n";
    int fd = open(supp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(fd >= 0 && write(fd, rules, strlen(rules)) == (ssize_t)strlen(rules));
    close(fd);
    before = log_size();
    ef_suppressions_load(supp);
    read_file(unit_logpath, log, sizeof log);
    added = log + (before < sizeof log ? before : 0);
    CHECKF(count_lines_with(added, "EPOLLFORK_SUPPRESSIONS") == 3 && count_lines_with(added, ":4: ") == 1 &&
               count_lines_with(added, ":5: ") == 1 && count_lines_with(added, ":6: ") == 1,
           "one notice per bad line, with its number:\n%s", added);
    m = rep_mark();
    unsigned long supp0 = ef_report_counts().suppressed;
    fill_shared(&r);
    r.stacks[EF_ST_CALL] = where_supp();
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 0 && ef_report_counts().suppressed == supp0 + 1);
    r.stacks[EF_ST_CALL] = where_call();
    r.stacks[EF_ST_FORK] = 0; /* not the report of part 1 */
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 1);
    fill_stale(&r); /* its close stack runs through libc's start-up frames */
    r.stacks[EF_ST_USE] = 0;
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 1 && ef_report_counts().suppressed == supp0 + 2);
    fill_leak(&r, 1);
    snprintf(r.program, sizeof r.program, "/usr/bin/zzz");
    ef_report_emit(&r);
    CHECK(rep_count(m, NULL) == 1 && ef_report_counts().suppressed == supp0 + 3);

    /* 4. EPOLLFORK_ON_REPORT=abort: report, say why, abort. */
    pid_t c = fork();
    if (c == 0) {
        struct rlimit no_core = {0, 0};
        setrlimit(RLIMIT_CORE, &no_core);
        ef_report_hook = NULL;
        ef_opt.on_report = EF_ON_ABORT;
        ef_opt.dedup = 0;
        fill_shared(&r);
        ef_report_emit(&r);
        _exit(0);
    }
    int st = 0;
    while (waitpid(c, &st, 0) < 0 && errno == EINTR)
        ;
    CHECKF(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT, "status 0x%x", st);
    read_file(unit_logpath, log, sizeof log);
    CHECK(count_lines_with(log, "aborting after the report above") == 1);
    ef_opt.format = EF_FMT_TEXT;
}

const struct group parts_groups[] = {
    {"fdtable", g_fdtable, QUIET},
    {"dedupset", g_dedupset, LOGFILE | QUIET},
    {"depot", g_depot, TRACK},
    {"options", g_options, QUIET},
    {"events", g_events, QUIET},
    {"rfc3339", g_rfc3339, QUIET},
    {"render", g_render, TRACK | QUIET},
    {"repairwords", g_repairwords, TRACK | QUIET},
    {"emit", g_emit, TRACK},
    {NULL, NULL, 0},
};
