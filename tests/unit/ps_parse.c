/*
 * ps_parse.c - the /proc parsers epollfork-ps added to src/procfs.c, fed
 * what the kernel writes, what it could write (a command name with ") (" in
 * it), and what it never should (cut lines, huge numbers, random bytes).
 *
 * Everything read from /proc is untrusted text: a parser must take a buffer
 * that is not NUL-terminated, never read past its length, and refuse what it
 * cannot represent.  Built with ASan+UBSan by tests/test_ps.py
 * (ps/procfs-parsers-take-only-well-formed-lines), so an over-read fails the
 * case; every buffer below is copied into a heap block of its exact length.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "procfs.h"

static int failures;

#define CHECK(x)                                                                       \
    do {                                                                               \
        if (!(x)) {                                                                    \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #x);      \
            failures++;                                                                \
        }                                                                              \
    } while (0)

/* An exact-length heap copy: ASan sees a read one byte past the end. */
static char *exact(const char *s, size_t len)
{
    char *p = malloc(len ? len : 1);
    if (!p)
        abort();
    memcpy(p, s, len);
    return p;
}

static int stat_of(const char *s, struct ef_proc_stat *st)
{
    char *b = exact(s, strlen(s));
    int r = ef_procfs_parse_stat(b, strlen(s), st);
    free(b);
    return r;
}

static int sys_of(const char *s, struct ef_task_syscall *sc)
{
    char *b = exact(s, strlen(s));
    int r = ef_procfs_parse_syscall(b, strlen(s), sc);
    free(b);
    return r;
}

static int flags_of(const char *s, unsigned *f)
{
    char *b = exact(s, strlen(s));
    int r = ef_procfs_parse_fdinfo_flags(b, strlen(s), f);
    free(b);
    return r;
}

int main(void)
{
    struct ef_proc_stat st;
    /* the kernel's own lines (fields 1-9 matter; the rest is ignored) */
    CHECK(stat_of("23987 (t1) S 23986 23976 20541 0 -1 4194304 110 250 0 0\n", &st));
    CHECK(!strcmp(st.comm, "t1") && st.state == 'S' && st.ppid == 23986 && st.flags == 4194304);
    CHECK(stat_of("2 (kthreadd) S 0 0 0 0 -1 2129984 0 0\n", &st));
    CHECK(st.ppid == 0 && (st.flags & 0x00200000UL));
    /* a command name may hold spaces and parentheses: it ends at the last ')' */
    CHECK(stat_of("7 (a) S 1 b) (c) Z 99 1 1 0 -1 64 0\n", &st));
    CHECK(!strcmp(st.comm, "a) S 1 b) (c") && st.state == 'Z' && st.ppid == 99 && st.flags == 64);
    CHECK(stat_of("8 () R 1 1 1 0 -1 0", &st) && st.comm[0] == 0); /* no newline: fine */
    /* malformed */
    CHECK(!stat_of("", &st));
    CHECK(!stat_of("9 (no close S 1 1 1 0 -1 0\n", &st));
    CHECK(!stat_of("9 no open) S 1 1 1 0 -1 0\n", &st)); /* '(' is required */
    CHECK(!stat_of("9 (x) S\n", &st));                            /* cut after the state */
    CHECK(!stat_of("9 (x) S 1 1 1 0 -1\n", &st));                 /* no flags field */
    CHECK(!stat_of("9 (x) S -5 1 1 0 -1 0\n", &st));              /* negative ppid */
    CHECK(!stat_of("9 (x) S 99999999999 1 1 0 -1 0\n", &st));     /* ppid over INT_MAX */
    CHECK(!stat_of("9 (x) S 1 1 1 0 -1 99999999999999999999\n", &st)); /* 20 digits */
    CHECK(!stat_of("9 (x) S 1x 1 1 0 -1 0\n", &st));
    CHECK(!stat_of("9 (0123456789012345678901234567890123456789012345678901234567890123456789) S 1 1 1 0 -1 0\n",
                   &st)); /* longer than the field: refused, not cut */

    struct ef_task_syscall sc;
    CHECK(sys_of("running\n", &sc) && sc.where == EF_TASK_RUNNING);
    CHECK(sys_of("-1 0x7ffd0b4e5638 0x7fc8e2528ef3\n", &sc) && sc.where == EF_TASK_NOT_IN_SYSCALL);
    CHECK(sys_of("232 0x5 0x7ffd0b4e5744 0x1 0xffffffff 0x0 0x0 0x7ffd0b4e5638 0x7fc8e2528ef3\n", &sc));
    CHECK(sc.where == EF_TASK_IN_SYSCALL && sc.nr == 232 && sc.args[0] == 5 && sc.args[3] == 0xffffffff);
    CHECK(sys_of("441 0xffffffffffffffff 0x0 0x0 0x0 0x0 0x0", &sc) && sc.args[0] == ~0ULL);
    CHECK(!sys_of("", &sc));
    CHECK(!sys_of("runnin", &sc));
    CHECK(!sys_of("232 0x5\n", &sc));                                  /* cut */
    CHECK(!sys_of("232 0x5 0x1 0x1 0x1 0x1 5\n", &sc));                /* no 0x */
    CHECK(!sys_of("232 0x5 0x1 0x1 0x1 0x1 0xZZ\n", &sc));
    CHECK(!sys_of("232 0x10000000000000000 0x1 0x1 0x1 0x1 0x1\n", &sc)); /* 17 hex digits */
    CHECK(!sys_of("-2 0x1 0x1\n", &sc));
    CHECK(!sys_of("99999999999999999999 0x1 0x1 0x1 0x1 0x1 0x1\n", &sc));
    CHECK(!sys_of("0x5 0x5\n", &sc));

    unsigned fl;
    CHECK(flags_of("flags:\t02000002", &fl) && fl == 02000002);
    CHECK(flags_of("flags:\t0", &fl) && fl == 0);
    CHECK(flags_of("flags: 02", &fl) && fl == 2);
    CHECK(!flags_of("flags:\t08", &fl));
    CHECK(!flags_of("flags:\t", &fl));
    CHECK(!flags_of("flags:", &fl));
    CHECK(!flags_of("flags:\t077777777777", &fl));   /* 12 octal digits */
    CHECK(!flags_of("flags:\t040000000000", &fl));   /* 2^32: does not fit */
    CHECK(!flags_of("pos:\t0", &fl));
    CHECK(!flags_of("flags:\t02 x", &fl));

    /* random bytes of random lengths: refused or parsed, never read past */
    unsigned seed = 12345;
    for (int i = 0; i < 200000; i++) {
        size_t len = (size_t)(rand_r(&seed) % 96);
        char tmp[96];
        for (size_t k = 0; k < len; k++) {
            int r = rand_r(&seed) % 8;
            static const char alpha[] = "0123456789abcdefx()- \nSZflags:\trunning";
            tmp[k] = r ? alpha[rand_r(&seed) % (sizeof alpha - 1)] : (char)rand_r(&seed);
        }
        if (i % 3 == 0 && len >= 7)
            memcpy(tmp, i % 2 ? "flags:\t" : "232 0x5", 7);
        char *b = exact(tmp, len);
        ef_procfs_parse_stat(b, len, &st);
        ef_procfs_parse_syscall(b, len, &sc);
        ef_procfs_parse_fdinfo_flags(b, len, &fl);
        free(b);
    }
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    puts("ps_parse: all checks passed");
    return 0;
}
