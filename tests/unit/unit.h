/*
 * unit.h - the small framework of the unit-test program (tests/unit/).
 *
 * The program links the core of the shim (the Makefile's CORE_SRCS) without
 * LD_PRELOAD and plays the part of wrap.c, init.c and glibc's atfork handlers
 * itself: the t_*() functions make a real call on a real fd and raise the
 * ef_on_*() events around it in the order the wrappers do; t_fork() is the
 * fork wrapper plus the atfork handlers around a real fork().
 *
 * A check prints nothing when it holds and `file:line: [group pid] check
 * failed: condition (details)` when it does not; checks and failures are
 * counted in memory shared by every process of the test, so a check made in a
 * forked child counts too.  Reports are caught with ef_report_hook and copied
 * to the same shared memory, so a parent can look at what its child reported.
 */
#ifndef UNIT_H
#define UNIT_H
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rules.h"

#define NOINLINE __attribute__((noinline))
/* A function whose name a stack check looks for: never inlined, never cloned
 * (a clone would be called "f.constprop.0"). */
#define SITE __attribute__((noinline, noclone))
/* Keeps a call from being compiled as a tail call, which would drop the
 * caller's frame from the stacks the checks look at. */
#define NOTAIL() __asm__ volatile("" ::: "memory")

int check_(int ok, const char *cond, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
#define CHECK(c) check_(!!(c), #c, __FILE__, __LINE__, NULL)
#define CHECKF(c, ...) check_(!!(c), #c, __FILE__, __LINE__, __VA_ARGS__)

/* ---------------------------------------------------------------- groups */
#define TRACK 0x1   /* start tracking (registry, log, libunwind) before the group */
#define QUIET 0x2   /* the group's log must stay empty: no notice expected */
#define LOGFILE 0x4 /* EPOLLFORK_LOG=DIR/GROUP.log (TRACK implies it) */
struct group {
    const char *name;
    void (*fn)(void);
    int flags;
};
extern const struct group track_groups[], parts_groups[], pyframes_groups[];

extern const char *unit_outdir;      /* where groups write files for the runner */
extern const char *unit_group;       /* the group running */
extern char unit_logpath[];          /* EPOLLFORK_LOG of this group */

/* ---------------------------------------------------------------- reports */
unsigned rep_mark(void);                            /* reports so far */
unsigned rep_count(unsigned mark, const char *kind); /* since mark; kind NULL: any */
const struct ef_report *rep_at(unsigned i);
const struct ef_report *rep_find(unsigned mark, const char *kind, int op); /* first match */
void unit_hook(const struct ef_report *r);

/* ---------------------------------------------------------------- stacks */
/* Function of frame i of depot stack id ("" when unknown), without suffixes. */
const char *stack_fn(uint32_t id, unsigned i, char *buf, size_t len);
/* The first frame that is not one of the t_*() stand-ins for wrap.c. */
const char *stack_site(uint32_t id, char *buf, size_t len);
int stack_site_is(uint32_t id, const char *fn);
int stack_has(uint32_t id, const char *fn);
unsigned stack_len(uint32_t id);

/* ------------------------------------------------- stand-ins for wrap.c */
int t_epoll_create1(int flags);
int t_epoll_create(void);
int t_ctl(int epfd, int op, int fd, uint32_t events, uint64_t data);
int t_wait(int epfd, int timeout);
int t_close(int fd);
int t_close_range(unsigned lo, unsigned hi, int flags, unsigned real_hi);
int t_dup(int fd);
int t_dup2(int fd, int fd2);
int t_dup3(int fd, int fd2, int flags);
int t_fcntl_dupfd(int fd, int cmd, int min);
int t_pipe(int p[2]);
pid_t t_fork(void);          /* fork() through our wrapper: handlers + returned */
pid_t t_fork_atfork(void);   /* daemon()/forkpty(): handlers only */
pid_t t_fork_raw(void);      /* syscall(SYS_fork): no handler at all */
pid_t t_fork_underscore(void); /* _Fork(): our wrapper's stack, no handler */
void t_child_setup(void);    /* in a test child: die with the parent */

/* ----------------------------------------------------------------- misc */
void reap(pid_t pid);                 /* wait; check it exited with 0 */
uint32_t idx_of(int fd);              /* instance of an epoll fd, 0 none */
struct ef_inst *inst_at(uint32_t idx);
int slot_of(const struct ef_inst *in, pid_t pid); /* holder slot of pid, -1 none */
int reserved_slots(const struct ef_inst *in);
void gate_make(int g[2]);
void gate_open(int g[2]);             /* parent: let the children go (EOF) */
void gate_wait(int g[2]);             /* child: block until the gate opens */
int read_file(const char *path, char *buf, size_t len); /* bytes read, -1 */
int count_lines_with(const char *text, const char *needle);
void write_out(const char *name, const char *buf, size_t len);
/* Render r as text and JSON into render-NAME.txt/.json, with the checks every
 * rendering must pass (test_parts.c). */
void render_both(const char *name, const struct ef_report *r);
/* The instance table entry an fd points at, or NULL (never crashes a check). */
struct ef_inst *inst_of_fd(int fd);

#endif
