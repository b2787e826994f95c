/*
 * options.c - EPOLLFORK_* environment variables, parsed once into ef_opt.
 *
 * One X-macro table names every variable, its default and its help text; the
 * parser, the unknown-name check and the documentation dump (`make options`,
 * checked against README.md by the test suite) all come from it, so they cannot
 * drift.  A bad value never stops the program: it produces one line naming the
 * variable, the value and the default used (libfaketime and the sanitizers kill
 * or ignore silently; a shim left on in production must do neither).  In a
 * secure-execution process (setuid, AT_SECURE) EPOLLFORK_LOG is ignored, as
 * secure_getenv() would, so a user cannot make a privileged program write a file.
 *
 * Every exec'd process parses the table at start-up, so the common case (no
 * EPOLLFORK_* variable set) calls nothing in libc: each libc function the
 * constructor calls first costs a lazy binding (~700 instructions) and often a
 * page of libc's text (bench/RESULTS.md, start-up).  The two long values live
 * in buffers that are touched only when they are set.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include "ef.h"

/* Empty and zero until ef_options_parse() sets every field from the table's defaults
 * (init.c runs it before anything reads an option). */
EF_HOT struct ef_options ef_opt = {.log = "", .suppressions = ""};
EF_HOT const char *ef_exec_leaks_env;
/* The two path-valued options, kept in the zone (zone.c) when they are set */
#define PATH_MAX_OPT 4096
_Static_assert(2 * PATH_MAX_OPT <= EF_Z_BYTES(OPTS), "the paths fit");
static char *opt_buf(int which)
{
    char *z = ef_zone(EF_Z_OPTS);
    return z ? z + which * PATH_MAX_OPT : NULL;
}

/* v copied into the option's buffer (which holds it: checked by the caller),
 * unless it is the default literal itself, which is used as it is. */
EF_INIT_TEXT static const char *keep_value(int which, const char *v, const char *def)
{
    if (v == def || ef_streq(v, def))
        return def; /* def is the table's (EF_HOT) */
    char *buf = opt_buf(which);
    if (!buf)
        return def; /* no memory for it: as if unset */
    for (size_t i = 0;; i++) {
        __asm__("" : "+r"(i)); /* no strcpy call either */
        if (!(buf[i] = v[i]))
            return buf;
    }
}

/* AT_SECURE, asked of the kernel's auxiliary vector once, when something
 * depends on it (a path-valued option, a report): not at every start-up. */
EF_HOT static int secure_state = -1;

/* AT_SECURE from /proc/self/auxv, in raw system calls (getauxval is
 * GLIBC_2.16: one more symbol version for every exec'd process to check);
 * without /proc, a set-id process is a secure one. */
static int read_secure(void)
{
    int e = errno;
    int fd = (int)ef_raw6(SYS_open, (long)"/proc/self/auxv", O_RDONLY | O_CLOEXEC, 0, 0, 0, 0);
    int secure = -1;
    if (fd >= 0) {
        unsigned long av[64];
        long n;
        while (secure < 0 && (n = ef_raw6(SYS_read, fd, (long)av, sizeof av, 0, 0, 0)) > 0) {
            for (long i = 0; i + 1 < n / (long)sizeof av[0]; i += 2) {
                if (av[i] == AT_SECURE) {
                    secure = av[i + 1] != 0;
                    break;
                }
                if (av[i] == AT_NULL)
                    break;
            }
            if (n < (long)sizeof av)
                break;
        }
        ef_sys_close(fd);
    }
    if (secure < 0)
        secure = ef_raw6(SYS_getuid, 0, 0, 0, 0, 0, 0) != ef_raw6(SYS_geteuid, 0, 0, 0, 0, 0, 0) ||
                 ef_raw6(SYS_getgid, 0, 0, 0, 0, 0, 0) != ef_raw6(SYS_getegid, 0, 0, 0, 0, 0, 0);
    errno = e;
    return secure;
}

int ef_secure(void)
{
    if (secure_state < 0)
        secure_state = read_secure();
    return secure_state;
}

typedef int (*ef_parse_fn)(const char *val, char *why, size_t whylen);

/* name, default (as text), parser, help */
#define EF_OPTION_TABLE(X)                                                                     \
    X("EPOLLFORK_LOG", "stderr", parse_log,                                                    \
      "where reports go: 'stderr' (a private copy of the original stderr), a file path "       \
      "(opened append-only and close-on-exec; '%p' in the path becomes the process id), or "   \
      "'syslog' (one-line SUMMARY records to /dev/log; 'syslog:/path' for another socket), "   \
      "or 'journal' (one native journald entry per record, its fields as EPOLLFORK_*; "        \
      "'journal:/path' for another socket)")                                                   \
    X("EPOLLFORK_FORMAT", "text", parse_format,                                                \
      "'text' (==PID== lines, sanitizer-style frames) or 'json' (one JSON object per line)")   \
    X("EPOLLFORK_ON_REPORT", "warn", parse_on_report,                                          \
      "'warn' (report and go on) or 'abort' (report, then abort(); for CI)")                   \
    X("EPOLLFORK_STACK_DEPTH", "24", parse_depth, "frames per stack, 1 to 64")                \
    X("EPOLLFORK_SUPPRESSIONS", "", parse_suppressions,                                        \
      "a file of rules 'KIND:GLOB' ('#' comments); a report whose offending frames have a "    \
      "function or module matching GLOB is counted, not printed; KIND may be '*'")             \
    X("EPOLLFORK_DEDUP", "1", parse_dedup,                                                     \
      "1: an identical report (kind and stacks) is printed once per process tree and "         \
      "repeats are counted; 0: print every one")                                               \
    X("EPOLLFORK_DISABLE", "0", parse_disable, "1: pure pass-through, nothing is tracked")     \
    X("EPOLLFORK_REPAIR", "0", parse_repair,                                                   \
      "1: also make the bugs harmless: a process about to change a shared epoll instance gets "\
      "a private copy of it first, a closed fd's surviving entry is removed before the "       \
      "process uses the instance again, and an epoll fd gets close-on-exec before an exec; "   \
      "each is still reported, with repaired=true")                                            \
    X("EPOLLFORK_UNWIND", "tables", parse_unwind,                                              \
      "'tables': stacks are walked from the unwind tables (.eh_frame) where every frame's "   \
      "rules are the simple ones, by libunwind otherwise; 'libunwind': every stack by "       \
      "libunwind (slower; to compare, or when a stack looks wrong)")                          \
    X("EPOLLFORK_DEBUG", "0", parse_debug,                                                     \
      "1: at exit, a process that set up an io_uring ring says what the shim saw of its rings " \
      "(a 'debug' notice: rings, enters, SQEs read, IORING_OP_EPOLL_CTL by op, outcomes)")

/* The defaults' text in the page the loader writes anyway (EF_HOT), not in
 * .rodata: a process that sets no EPOLLFORK_* variable reads nothing else
 * of .rodata at start-up, and one page fault there costs more than all the
 * parsing (bench/RESULTS.md, start-up). */
#define EF_OPT_DEF(name, def, fn, help) EF_HOT static char def_##fn[] = def;
EF_OPTION_TABLE(EF_OPT_DEF)

EF_INIT_TEXT static int parse_log(const char *v, char *why, size_t n)
{
    if (!*v) {
        ef_fmt(why, n, "expected 'stderr' or a file path");
        return -1;
    }
    if (ef_strlen(v) >= PATH_MAX_OPT) {
        ef_fmt(why, n, "path longer than %d bytes", PATH_MAX_OPT - 1);
        return -1;
    }
    if (EF_LIT_PREFIX(v, "syslog:") && v[7] != '/') {
        ef_fmt(why, n, "'syslog:' must be followed by an absolute socket path");
        return -1;
    }
    if (EF_LIT_PREFIX(v, "syslog:") && ef_strlen(v + 7) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        ef_fmt(why, n, "the socket path is longer than a unix socket address holds (%zu bytes)",
               sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
        return -1;
    }
    if (EF_LIT_PREFIX(v, "journal:") &&
        (v[8] != '/' || ef_strlen(v + 8) >= sizeof((struct sockaddr_un *)0)->sun_path)) {
        ef_fmt(why, n, "'journal:' must be followed by an absolute socket path of at most %zu "
               "bytes", sizeof((struct sockaddr_un *)0)->sun_path - 1);
        return -1;
    }
    if (!EF_LIT_EQ(v, "stderr") && !EF_LIT_EQ(v, "syslog") && !EF_LIT_EQ(v, "journal") && ef_secure()) {
        ef_fmt(why, n, "ignored in a secure-execution (setuid) process");
        return -1;
    }
    ef_opt.log = keep_value(0, v, def_parse_log);
    return 0;
}

EF_INIT_TEXT static int parse_format(const char *v, char *why, size_t n)
{
    if (EF_LIT_EQ(v, "text"))
        ef_opt.format = EF_FMT_TEXT;
    else if (EF_LIT_EQ(v, "json"))
        ef_opt.format = EF_FMT_JSON;
    else {
        ef_fmt(why, n, "expected 'text' or 'json'");
        return -1;
    }
    return 0;
}

EF_INIT_TEXT static int parse_on_report(const char *v, char *why, size_t n)
{
    if (EF_LIT_EQ(v, "warn"))
        ef_opt.on_report = EF_ON_WARN;
    else if (EF_LIT_EQ(v, "abort"))
        ef_opt.on_report = EF_ON_ABORT;
    else {
        ef_fmt(why, n, "expected 'warn' or 'abort'");
        return -1;
    }
    return 0;
}

EF_INIT_TEXT static int parse_int(const char *v, long lo, long hi, long *out, char *why, size_t n)
{
    /* digits only (strtol would take a sign and blanks), and no overflow */
    long x = 0;
    const char *p = v;
    for (; *p >= '0' && *p <= '9' && x <= hi; p++)
        x = x * 10 + (*p - '0');
    if (*v < '0' || *v > '9' || *p || x < lo || x > hi) {
        ef_fmt(why, n, "expected a whole number from %ld to %ld", lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

EF_INIT_TEXT static int parse_depth(const char *v, char *why, size_t n)
{
    long x;
    if (parse_int(v, 1, EF_MAX_FRAMES, &x, why, n))
        return -1;
    ef_opt.stack_depth = (int)x;
    return 0;
}

EF_INIT_TEXT static int parse_dedup(const char *v, char *why, size_t n)
{
    long x;
    if (parse_int(v, 0, 1, &x, why, n))
        return -1;
    ef_opt.dedup = (int)x;
    return 0;
}

EF_INIT_TEXT static int parse_suppressions(const char *v, char *why, size_t n)
{
    if (ef_strlen(v) >= PATH_MAX_OPT) {
        ef_fmt(why, n, "expected the path of a suppressions file, or nothing");
        return -1;
    }
    if (*v && ef_secure()) {
        ef_fmt(why, n, "ignored in a secure-execution (setuid) process");
        return -1;
    }
    ef_opt.suppressions = keep_value(1, v, def_parse_suppressions);
    return 0;
}

EF_INIT_TEXT static int parse_disable(const char *v, char *why, size_t n)
{
    long x;
    if (parse_int(v, 0, 1, &x, why, n))
        return -1;
    ef_opt.disable = (int)x;
    return 0;
}

EF_INIT_TEXT static int parse_repair(const char *v, char *why, size_t n)
{
    long x;
    if (parse_int(v, 0, 1, &x, why, n))
        return -1;
    ef_opt.repair = (int)x;
    return 0;
}

EF_INIT_TEXT static int parse_unwind(const char *v, char *why, size_t n)
{
    if (EF_LIT_EQ(v, "tables"))
        ef_opt.unwind = EF_UNWIND_TABLES;
    else if (EF_LIT_EQ(v, "libunwind"))
        ef_opt.unwind = EF_UNWIND_LIBUNWIND;
    else {
        ef_fmt(why, n, "expected 'tables' or 'libunwind'");
        return -1;
    }
    return 0;
}

EF_INIT_TEXT static int parse_debug(const char *v, char *why, size_t n)
{
    long x;
    if (parse_int(v, 0, 1, &x, why, n))
        return -1;
    ef_opt.debug = (int)x;
    return 0;
}

struct ef_option_desc {
    const char *name, *def;
    ef_parse_fn parse;
    const char *help;
};
#define EF_OPT_ROW(name, def, fn, help) {name, def_##fn, fn, help},
static const struct ef_option_desc options[] = {EF_OPTION_TABLE(EF_OPT_ROW)};
#define NOPT (sizeof options / sizeof options[0])

static void append(char *err, size_t errlen, const char *line)
{
    if (!err || !errlen)
        return;
    size_t used = strlen(err);
    if (used + strlen(line) + 1 < errlen) {
        strcat(err, line);
        strcat(err, "\n");
    }
}

extern char **environ;

/* A value echoed into a complaint, control characters escaped: no value can
 * start a line of its own (a newline in EPOLLFORK_SUPPRESSIONS). */
static const char *visible(const char *v, char *buf, size_t len)
{
    struct ef_out o = {buf, 0, len};
    buf[0] = 0;
    ef_put_vis(&o, v);
    return buf;
}

/* Every option's default, through its own parser: the table is the only
 * place a default is written. */
EF_INIT_TEXT static void set_defaults(void)
{
    char ignored[160];
    for (size_t i = 0; i < NOPT; i++)
        options[i].parse(options[i].def, ignored, sizeof ignored);
}

EF_INIT_TEXT void ef_options_parse(char *const *envp, char *err, size_t errlen)
{
    if (!envp)
        envp = environ;
    if (err && errlen)
        err[0] = 0;
    set_defaults();
    ef_exec_leaks_env = NULL;
    if (!envp)
        return;
    int any = 0;
    for (char *const *e = envp; *e; e++) {
        const char *kv = *e;
        if (kv[0] != 'E' || !EF_LIT_PREFIX(kv, "EPOLLFORK_"))
            continue;
        const char *eq = kv;
        while (*eq && *eq != '=')
            eq++;
        if (!*eq)
            continue;
        size_t nlen = (size_t)(eq - kv);
        if (ef_strprefix(kv, "EPOLLFORK_EXEC_LEAKS=")) {
            ef_exec_leaks_env = eq + 1; /* set by the shim itself across exec (execleak.c) */
            continue;
        }
        if (ef_strprefix(kv, "EPOLLFORK_LIBRARY="))
            continue; /* read by the launcher, not by the library */
        any = 1;
        const struct ef_option_desc *d = NULL;
        for (size_t i = 0; i < NOPT; i++)
            if (ef_strlen(options[i].name) == nlen && ef_strprefix(kv, options[i].name))
                d = &options[i];
        char line[600], shown[300];
        if (!d) {
            char known[400];
            size_t k = 0;
            known[0] = 0;
            for (size_t i = 0; i < NOPT; i++)
                k += ef_fmt(known + k, sizeof known - k, "%s%s", i ? ", " : "", options[i].name);
            char name[64];
            ef_fmt(name, sizeof name, "%.*s", (int)(nlen > 63 ? 63 : nlen), kv);
            ef_fmt(line, sizeof line, "epollfork: unknown variable %s ignored (known: %s)",
                   visible(name, shown, sizeof shown), known);
            append(err, errlen, line);
            continue;
        }
        char why[160];
        why[0] = 0;
        if (d->parse(eq + 1, why, sizeof why) != 0) {
            /* "using the default" must be true even if an earlier copy of the
             * variable set something else */
            char ignored[160];
            d->parse(d->def, ignored, sizeof ignored);
            char val[201];
            ef_fmt(val, sizeof val, "%s", eq + 1);
            ef_fmt(line, sizeof line, "epollfork: %s='%s' is invalid (%s); using the default '%s'",
                   d->name, visible(val, shown, sizeof shown), why, d->def);
            append(err, errlen, line);
        }
    }
    if (any)
        ef_opt.secure = ef_secure(); /* init.c: the path-valued ones are not passed on */
}

void ef_options_print_table(int fd)
{
    char line[1024];
    for (size_t i = 0; i < NOPT; i++) {
        size_t n = ef_fmt(line, sizeof line, "%s\t%s\t%s\n", options[i].name, options[i].def,
                          options[i].help);
        if (write(fd, line, n) < 0)
            return;
    }
}
