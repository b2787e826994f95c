/*
 * report.c - one report record, two renderers (text and JSON), one write().
 *
 * As in jemalloc's emitter, the facts are gathered once into struct ef_report
 * and rendered by either format, so text and JSON can never disagree.  Text
 * follows the sanitizers: every line starts with ==PID==, frames read
 * `#N 0xPC in FUNCTION (MODULE+0xOFFSET)`, and a one-line SUMMARY with
 * key=value pairs closes the report so that a log scraper needs only that line.
 * JSON is one object per line.  Frames show the return address minus one (the
 * call instruction), as the sanitizers do, so addr2line names the call's line.
 * The whole report is built in one buffer and written once (log.c).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ef.h"

_Atomic unsigned long ef_report_count;
void (*ef_report_hook)(const struct ef_report *r);

void ef_report_init(struct ef_report *r, const char *kind, const struct ef_inst *in, int epfd)
{
    memset(r, 0, sizeof *r);
    r->kind = kind;
    r->pid = ef_sys_getpid();
    r->ppid = ef_sys_getppid();
    r->epfd = epfd;
    r->holder_fd = -1;
    r->time_ns = ef_realtime_ns();
    r->create_how = 2; /* not known until an instance says */
    r->create_fd = epfd;
    if (in) {
        r->owner_pid = in->owner_pid;
        r->create_how = in->create_how;
        r->create_flags = in->create_flags;
        r->create_fd = in->create_fd;
        r->create_stack = in->create_stack;
    }
}

const char *ef_op_name(int op)
{
    switch (op) {
    case EPOLL_CTL_ADD: return "EPOLL_CTL_ADD";
    case EPOLL_CTL_MOD: return "EPOLL_CTL_MOD";
    case EPOLL_CTL_DEL: return "EPOLL_CTL_DEL";
    default: return "EPOLL_CTL_?";
    }
}

size_t ef_events_str(uint32_t ev, char *buf, size_t len)
{
    static const struct { uint32_t bit; const char *name; } names[] = {
        {EPOLLIN, "EPOLLIN"},           {EPOLLPRI, "EPOLLPRI"},
        {EPOLLOUT, "EPOLLOUT"},         {EPOLLERR, "EPOLLERR"},
        {EPOLLHUP, "EPOLLHUP"},         {EPOLLRDNORM, "EPOLLRDNORM"},
        {EPOLLRDBAND, "EPOLLRDBAND"},   {EPOLLWRNORM, "EPOLLWRNORM"},
        {EPOLLWRBAND, "EPOLLWRBAND"},   {EPOLLMSG, "EPOLLMSG"},
        {EPOLLRDHUP, "EPOLLRDHUP"},     {EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"},
        {EPOLLWAKEUP, "EPOLLWAKEUP"},   {EPOLLONESHOT, "EPOLLONESHOT"},
        {EPOLLET, "EPOLLET"},
    };
    size_t k = 0;
    if (len)
        buf[0] = 0;
    uint32_t rest = ev;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(ev & names[i].bit))
            continue;
        k += ef_fmt(buf + k, len - k, "%s%s", k ? "|" : "", names[i].name);
        rest &= ~names[i].bit;
    }
    if (rest)
        k += ef_fmt(buf + k, len - k, "%s0x%x", k ? "|" : "", rest);
    return k;
}

/* ------------------------------------------------------------ buffer */
struct out {
    char *p;
    size_t len, cap;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (!o->cap)
        return;
    if (o->len + n >= o->cap)
        n = o->cap > o->len + 1 ? o->cap - o->len - 1 : 0;
    memcpy(o->p + o->len, s, n);
    o->len += n;
    o->p[o->len] = 0;
}

static void puts_(struct out *o, const char *s) { put(o, s, strlen(s)); }

static void putf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(struct out *o, const char *fmt, ...)
{
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        put(o, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_json_str(struct out *o, const char *s)
{
    puts_(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(o, e, 2);
        } else if (c < 0x20) {
            putf(o, "\\u%04x", c);
        } else {
            put(o, (const char *)&c, 1);
        }
    }
    puts_(o, "\"");
}

/* A value for the key=value SUMMARY line: quoted only when it needs to be. */
static void put_kv(struct out *o, const char *key, const char *val)
{
    putf(o, " %s=", key);
    int plain = *val != 0;
    for (const char *s = val; *s; s++)
        if (*s == ' ' || *s == '"' || *s == '=' || (unsigned char)*s < 0x21)
            plain = 0;
    if (plain) {
        puts_(o, val);
        return;
    }
    puts_(o, "\"");
    for (const char *s = val; *s; s++) {
        if (*s == '"' || *s == '\\')
            puts_(o, "\\");
        if ((unsigned char)*s >= 0x20)
            put(o, s, 1);
    }
    puts_(o, "\"");
}

/* A name for a text line: control characters shown as \n, \t, \xNN, so that a
 * path with a newline cannot start a line without the ==PID== prefix. */
static const char *vis(const char *s, char *buf, size_t len)
{
    size_t k = 0;
    for (; *s && k + 5 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\n')
            k += ef_fmt(buf + k, len - k, "\\n");
        else if (c == '\t')
            k += ef_fmt(buf + k, len - k, "\\t");
        else if (c < 0x20 || c == 0x7f)
            k += ef_fmt(buf + k, len - k, "\\x%02x", c);
        else
            buf[k++] = (char)c;
    }
    buf[k] = 0;
    return buf;
}

/* ------------------------------------------------------------ stacks */
struct stack_desc {
    const char *key;        /* JSON name */
    uint32_t id;
    char title[300];        /* text label */
    const char *missing;    /* why there is no stack */
    const char *note;
};

static const char *create_title(const struct ef_report *r, char *buf, size_t len)
{
    if (r->create_how == 2)
        ef_fmt(buf, len, "the epoll instance (fd %d, first seen in process %d):", r->create_fd,
               r->owner_pid);
    else
        ef_fmt(buf, len, "the epoll instance created by %s(%s) = %d in process %d:",
               r->create_how == 1 ? "epoll_create1" : "epoll_create",
               r->create_how == 1 && (r->create_flags & EPOLL_CLOEXEC) ? "EPOLL_CLOEXEC"
               : r->create_how == 1                                     ? "0"
                                                                        : "...",
               r->create_fd, r->owner_pid);
    return r->create_how == 2 ? "created before the shim was loaded, or without libc: no stack"
                              : "creation stack not recorded";
}

static void fork_desc(const struct ef_report *r, struct stack_desc *s, const char *why)
{
    *s = (struct stack_desc){"fork", r->fork_stack, "", NULL, NULL};
    if (r->fork_child_pid)
        ef_fmt(s->title, sizeof s->title, "the fork of process %d by process %d (%s):",
               r->fork_child_pid, r->fork_parent_pid, why);
    else
        ef_fmt(s->title, sizeof s->title, "the fork (%s):", why);
    s->missing = r->fork_how == EF_FORK_UNSEEN
                     ? "a fork made without fork() (raw clone/syscall): no stack"
                     : "fork stack not recorded";
}

static void add_desc(const struct ef_report *r, struct stack_desc *s)
{
    *s = (struct stack_desc){"add", r->add_stack, "", NULL, NULL};
    if (r->add_pid)
        ef_fmt(s->title, sizeof s->title, "fd %d registered by EPOLL_CTL_ADD in process %d:",
               r->fd, r->add_pid);
    else
        ef_fmt(s->title, sizeof s->title, "fd %d registered by EPOLL_CTL_ADD:", r->fd);
    s->missing = "registered before the shim was loaded, or by a process it did not see: no stack";
}

static void describe(const struct ef_report *r, struct stack_desc *s, int *ns)
{
    int n = 0;
    char ev[256];
    ef_events_str(r->events, ev, sizeof ev);
    static const char *uses[] = {"epoll_wait", "epoll_ctl", "blocked in epoll_wait"};
    if (!strcmp(r->kind, "epoll-fd-exec-leak")) {
        s[n] = (struct stack_desc){"exec", r->exec_stack, "", NULL, NULL};
        char prog[512];
        ef_fmt(s[n].title, sizeof s[n].title, "the exec of %s in process %d:",
               vis(r->program, prog, sizeof prog), r->pid);
        s[n].missing = "exec made where the shim cannot see it (posix_spawn, system, popen, or "
                       "a program without the shim): no stack";
        n++;
        s[n] = (struct stack_desc){"create", r->create_stack, "", NULL, NULL};
        s[n].missing = create_title(r, s[n].title, sizeof s[n].title);
        if (!strcmp(r->exec_how, "start-up")) {
            ef_fmt(s[n].title, sizeof s[n].title, "the epoll instance (fd %d, inherited at exec):",
                   r->epfd);
            s[n].missing = "created by the program that exec'd this one: no stack";
        }
        n++;
    } else if (!strcmp(r->kind, "stale-registration")) {
        s[n] = (struct stack_desc){"close", r->close_stack, "", "stack not recorded", NULL};
        ef_fmt(s[n].title, sizeof s[n].title, "the close of fd %d (without EPOLL_CTL_DEL) in process %d:",
               r->fd, r->pid);
        n++;
        add_desc(r, &s[n++]);
        fork_desc(r, &s[n], "the copy of the fd that keeps the registration alive");
        if (r->holder_pid == r->pid) {
            s[n].missing = "the surviving copy is a dup in the same process: no fork involved";
        } else if (r->holder_pid <= 0) {
            s[n].missing = "the process holding the copy is not known";
        }
        n++;
        s[n] = (struct stack_desc){"create", r->create_stack, "", NULL, NULL};
        s[n].missing = create_title(r, s[n].title, sizeof s[n].title);
        n++;
        if (r->use_stack) {
            s[n] = (struct stack_desc){"use", r->use_stack, "", NULL, NULL};
            ef_fmt(s[n].title, sizeof s[n].title, "the next use of the instance in process %d:",
                   r->pid);
            n++;
        }
    } else {
        s[n] = (struct stack_desc){"call", r->call_stack, "", "stack not recorded", NULL};
        if (r->op == EPOLL_CTL_DEL)
            ef_fmt(s[n].title, sizeof s[n].title, "the change: %s(epfd=%d, fd=%d) in process %d:",
                   ef_op_name(r->op), r->epfd, r->fd, r->modifier_pid);
        else
            ef_fmt(s[n].title, sizeof s[n].title,
                   "the change: %s(epfd=%d, fd=%d, events=%s) in process %d:", ef_op_name(r->op),
                   r->epfd, r->fd, ev[0] ? ev : "0", r->modifier_pid);
        if (r->call_stack_unsafe)
            s[n].note = "only the calling frame: unwinding in a child of a multithreaded parent "
                        "can hang";
        n++;
        fork_desc(r, &s[n++], "where the list became shared");
        s[n] = (struct stack_desc){"create", r->create_stack, "", NULL, NULL};
        s[n].missing = create_title(r, s[n].title, sizeof s[n].title);
        n++;
        add_desc(r, &s[n++]);
        if (r->use_stack) {
            s[n] = (struct stack_desc){"use", r->use_stack, "", NULL, NULL};
            ef_fmt(s[n].title, sizeof s[n].title, "the affected use: %s in process %d:",
                   uses[r->other_use], r->other_pid);
            n++;
        }
    }
    *ns = n;
}

/* "__libc_start_main@GLIBC_2.2.5" (a .symtab name) reads as the function. */
static const char *fname(struct ef_sym *sy)
{
    char *at = strchr(sy->function, '@');
    if (at && at != sy->function)
        *at = 0;
    return sy->function[0] ? sy->function : NULL;
}

static void frame_text(struct out *o, const char *pfx, int i, uintptr_t pc, struct ef_symctx *c)
{
    struct ef_sym sy;
    ef_sym_lookup(c, pc, &sy);
    const char *f = fname(&sy);
    char mod[600];
    putf(o, "%s    #%d 0x%lx in %s (%s+0x%lx)\n", pfx, i, (unsigned long)pc, f ? f : "??",
         sy.have_module ? vis(sy.module, mod, sizeof mod) : "<unknown module>",
         (unsigned long)sy.offset);
}

static void frame_json(struct out *o, uintptr_t pc, struct ef_symctx *c)
{
    struct ef_sym sy;
    ef_sym_lookup(c, pc, &sy);
    putf(o, "{\"pc\":\"0x%lx\",\"module\":", (unsigned long)pc);
    if (sy.have_module)
        put_json_str(o, sy.module);
    else
        puts_(o, "null");
    putf(o, ",\"offset\":\"0x%lx\",\"function\":", (unsigned long)sy.offset);
    const char *f = fname(&sy);
    if (f)
        put_json_str(o, f);
    else
        puts_(o, "null");
    puts_(o, "}");
}

/* The frame a SUMMARY line names: the first one with a function name. */
static void top_frame(uint32_t id, struct ef_symctx *c, char *buf, size_t len)
{
    uint32_t n;
    const uint64_t *f = ef_depot_get(id, &n);
    buf[0] = 0;
    for (uint32_t i = 0; f && i < n; i++) {
        struct ef_sym sy;
        ef_sym_lookup(c, (uintptr_t)f[i] - 1, &sy);
        const char *fn = fname(&sy);
        if (fn || i + 1 == n) {
            const char *base = strrchr(sy.module, '/');
            ef_fmt(buf, len, "%s(%s+0x%lx)", fn ? fn : "??",
                   base ? base + 1 : sy.module, (unsigned long)sy.offset);
            return;
        }
    }
}

static const char *use_word(int u)
{
    return u == EF_USE_BLOCKED ? "blocked-in-wait" : u == EF_USE_CTL ? "epoll_ctl" : "epoll_wait";
}

static void kv_int(struct out *o, const char *key, long v)
{
    char num[32];
    ef_fmt(num, sizeof num, "%ld", v);
    put_kv(o, key, num);
}

static void headline(const struct ef_report *r, struct out *o, const char *pfx)
{
    char prog_[600], target_[600];
    const char *program = vis(r->program, prog_, sizeof prog_);
    const char *target = vis(r->target, target_, sizeof target_);
    if (!strcmp(r->kind, "epoll-fd-exec-leak")) {
        if (!strcmp(r->exec_how, "start-up"))
            putf(o, "%s epollfork: WARNING: epoll-fd-exec-leak: this program (%s) started holding "
                    "epoll fd %d, inherited without close-on-exec from the program that exec'd it "
                    "(%d registrations kept alive)\n",
                 pfx, program, r->epfd, r->entries);
        else
            putf(o, "%s epollfork: WARNING: epoll-fd-exec-leak: epoll fd %d (created by process "
                    "%d) has no close-on-exec and will be inherited by %s (%d registrations kept "
                    "alive)\n",
                 pfx, r->epfd, r->owner_pid, program, r->entries);
        return;
    }
    if (!strcmp(r->kind, "stale-registration")) {
        char who[96];
        if (r->holder_pid == r->pid)
            ef_fmt(who, sizeof who, "this process still holds a copy (fd %d)", r->holder_fd);
        else if (r->holder_pid > 0)
            ef_fmt(who, sizeof who, "process %d still holds a copy (fd %d)", r->holder_pid,
                   r->holder_fd);
        else
            ef_fmt(who, sizeof who, "another copy of it is still open");
        putf(o, "%s epollfork: WARNING: stale-registration: process %d closed fd %d (%s) without "
                "EPOLL_CTL_DEL, but its registration in epoll fd %d survives because %s: "
                "epoll_wait keeps reporting events for the closed number and EPOLL_CTL_DEL fails "
                "with EBADF\n",
             pfx, r->pid, r->fd, target[0] ? target : "unknown target", r->epfd, who);
        return;
    }
    const char *verb = r->op == EPOLL_CTL_ADD ? "added" : r->op == EPOLL_CTL_MOD ? "modified"
                                                                                : "deleted";
    const char *prep = r->op == EPOLL_CTL_ADD ? "to" : r->op == EPOLL_CTL_MOD ? "in" : "from";
    const char *use = r->other_use == EF_USE_BLOCKED ? "was blocked waiting on at that moment"
                      : r->other_use == EF_USE_CTL  ? "then edited"
                                                     : "then waited on";
    putf(o, "%s epollfork: WARNING: shared-epoll-ctl: process %d %s fd %d (%s) %s the interest "
            "list of epoll fd %d, which process %d shares since a fork and %s (instance created "
            "by process %d)\n",
         pfx, r->modifier_pid, verb, r->fd, target[0] ? target : "unknown target", prep,
         r->epfd, r->other_pid, use, r->owner_pid);
    if (r->lost_changes)
        putf(o, "%s   (%u earlier changes could not be read: more changes than the ring keeps "
                "were made before this use)\n",
             pfx, r->lost_changes);
}

static void summary(const struct ef_report *r, struct out *o, const char *pfx, struct ef_symctx *c)
{
    char ev[256], site[400];
    ef_events_str(r->events, ev, sizeof ev);
    const char *kind = r->kind;
    int leak = !strcmp(kind, "epoll-fd-exec-leak"), stale = !strcmp(kind, "stale-registration");
    top_frame(leak ? r->exec_stack : stale ? r->close_stack : r->call_stack, c, site, sizeof site);
    putf(o, "%s epollfork: SUMMARY: %s", pfx, kind);
    char ts[48];
    ef_rfc3339(r->time_ns ? r->time_ns : ef_realtime_ns(), ts, sizeof ts);
    put_kv(o, "time", ts);
    kv_int(o, "pid", r->pid);
    if (leak) {
        kv_int(o, "epfd", r->epfd);
        put_kv(o, "program", r->program[0] ? r->program : "unknown");
        put_kv(o, "exec", r->exec_how);
        kv_int(o, "entries", r->entries);
        kv_int(o, "owner_pid", r->owner_pid);
    } else if (stale) {
        kv_int(o, "epfd", r->epfd);
        kv_int(o, "fd", r->fd);
        put_kv(o, "events", ev);
        put_kv(o, "target", r->target[0] ? r->target : "unknown");
        kv_int(o, "holder_pid", r->holder_pid);
        kv_int(o, "holder_fd", r->holder_fd);
        kv_int(o, "owner_pid", r->owner_pid);
    } else {
        kv_int(o, "modifier_pid", r->modifier_pid);
        kv_int(o, "other_pid", r->other_pid);
        kv_int(o, "owner_pid", r->owner_pid);
        put_kv(o, "op", ef_op_name(r->op));
        kv_int(o, "epfd", r->epfd);
        kv_int(o, "fd", r->fd);
        put_kv(o, "events", r->op == EPOLL_CTL_DEL ? "" : ev);
        put_kv(o, "target", r->target[0] ? r->target : "unknown");
        put_kv(o, "use", use_word(r->other_use));
    }
    put_kv(o, "site", site[0] ? site : "unknown");
    puts_(o, "\n");
}

static void render_text(const struct ef_report *r, struct out *o, struct ef_symctx *c)
{
    char pfx[32];
    ef_fmt(pfx, sizeof pfx, "==%d==", r->pid);
    headline(r, o, pfx);
    struct stack_desc s[6];
    int ns;
    describe(r, s, &ns);
    for (int k = 0; k < ns; k++) {
        putf(o, "%s  %s\n", pfx, s[k].title);
        uint32_t n;
        const uint64_t *f = ef_depot_get(s[k].id, &n);
        if (!f || !n)
            putf(o, "%s    <%s>\n", pfx, s[k].missing);
        for (uint32_t i = 0; f && i < n; i++)
            frame_text(o, pfx, (int)i, (uintptr_t)f[i] - 1, c);
        if (s[k].note)
            putf(o, "%s    (%s)\n", pfx, s[k].note);
    }
    summary(r, o, pfx, c);
}

static void render_json(const struct ef_report *r, struct out *o, struct ef_symctx *c)
{
    char ts[48], ev[256], site[400];
    ef_rfc3339(r->time_ns, ts, sizeof ts);
    ef_events_str(r->events, ev, sizeof ev);
    int leak = !strcmp(r->kind, "epoll-fd-exec-leak"), stale = !strcmp(r->kind, "stale-registration");
    putf(o, "{\"tool\":\"epollfork\",\"version\":\"%s\",\"kind\":\"%s\",\"time\":\"%s\","
            "\"pid\":%d,\"ppid\":%d,\"owner_pid\":%d,\"epfd\":%d",
         EF_VERSION, r->kind, ts, r->pid, r->ppid, r->owner_pid, r->epfd);
    if (leak) {
        puts_(o, ",\"program\":");
        put_json_str(o, r->program);
        puts_(o, ",\"argv0\":");
        put_json_str(o, r->argv0);
        putf(o, ",\"exec\":\"%s\",\"entries\":%d", r->exec_how, r->entries);
    } else {
        putf(o, ",\"fd\":%d,\"events\":", r->fd);
        put_json_str(o, !stale && r->op == EPOLL_CTL_DEL ? "" : ev);
        putf(o, ",\"data\":\"0x%llx\",\"target\":", (unsigned long long)r->data);
        if (r->target[0])
            put_json_str(o, r->target);
        else
            puts_(o, "null");
        if (stale)
            putf(o, ",\"holder_pid\":%d,\"holder_fd\":%d", r->holder_pid, r->holder_fd);
        else
            putf(o, ",\"modifier_pid\":%d,\"other_pid\":%d,\"other_use\":\"%s\",\"op\":\"%s\","
                    "\"lost_changes\":%u",
                 r->modifier_pid, r->other_pid, use_word(r->other_use), ef_op_name(r->op),
                 r->lost_changes);
        putf(o, ",\"fork_parent_pid\":%d,\"fork_child_pid\":%d", r->fork_parent_pid,
             r->fork_child_pid);
    }
    top_frame(leak ? r->exec_stack : stale ? r->close_stack : r->call_stack, c, site, sizeof site);
    puts_(o, ",\"site\":");
    put_json_str(o, site);
    puts_(o, ",\"stacks\":{");
    struct stack_desc s[6];
    int ns;
    describe(r, s, &ns);
    for (int k = 0; k < ns; k++) {
        putf(o, "%s\"%s\":[", k ? "," : "", s[k].key);
        uint32_t n;
        const uint64_t *f = ef_depot_get(s[k].id, &n);
        for (uint32_t i = 0; f && i < n; i++) {
            if (i)
                puts_(o, ",");
            frame_json(o, (uintptr_t)f[i] - 1, c);
        }
        puts_(o, "]");
    }
    puts_(o, "},\"stack_notes\":{");
    int first = 1;
    for (int k = 0; k < ns; k++) {
        uint32_t n;
        const char *why = s[k].note;
        if (!ef_depot_get(s[k].id, &n) || !n)
            why = s[k].missing;
        if (!why)
            continue;
        putf(o, "%s\"%s\":", first ? "" : ",", s[k].key);
        put_json_str(o, why);
        first = 0;
    }
    puts_(o, "}}\n");
}

size_t ef_report_render(const struct ef_report *r, char *buf, size_t len)
{
    struct out o = {buf, 0, len};
    if (len)
        buf[0] = 0;
    struct ef_symctx *c = ef_sym_begin();
    if (ef_opt.format == EF_FMT_JSON)
        render_json(r, &o, c);
    else
        render_text(r, &o, c);
    ef_sym_end(c);
    if (o.len && buf[o.len - 1] != '\n' && o.len + 1 < len) {
        buf[o.len++] = '\n';
        buf[o.len] = 0;
    }
    return o.len;
}

#define REPORT_BUF (512 * 1024)

_Atomic unsigned long ef_suppressed_count, ef_deduped_count;
/* The process the counters belong to: a fork child inherits them and must
 * not print its parent's totals (there is no atfork child handler to reset
 * them: see init.c). */
static pid_t counted_pid;

/* "The same report": its kind and the stacks that say where the bug is. */
static uint64_t content_key(const struct ef_report *r)
{
    uint64_t k = 0xcbf29ce484222325ull;
    for (const char *p = r->kind; *p; p++)
        k = (k ^ (unsigned char)*p) * 0x100000001b3ull;
    uint32_t ids[] = {r->call_stack, r->close_stack, r->exec_stack, r->fork_stack,
                      r->create_stack, r->add_stack};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        k = (k ^ ids[i]) * 0x9e3779b97f4a7c15ull;
    return (k ^ (k >> 33)) | 1;
}

void ef_report_emit(const struct ef_report *r)
{
    pid_t me = ef_sys_getpid(); /* a cold path */
    if (counted_pid != me) {
        ef_report_after_fork_child(); /* the counts so far were the parent's */
        counted_pid = me;
    }
    ef_fork.counted = 1;
    if (ef_suppressed(r)) {
        atomic_fetch_add(&ef_suppressed_count, 1);
        return;
    }
    if (ef_opt.dedup && !ef_dedup_insert(content_key(r))) {
        atomic_fetch_add(&ef_deduped_count, 1);
        return;
    }
    atomic_fetch_add(&ef_report_count, 1);
    if (ef_report_hook) {
        ef_report_hook(r);
        return;
    }
    char *buf = mmap(NULL, REPORT_BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return;
    size_t n = ef_report_render(r, buf, REPORT_BUF);
    /* syslog wants one line: the SUMMARY line of a text report, or the JSON. */
    const char *line = buf;
    if (ef_opt.format == EF_FMT_TEXT) {
        const char *s = strstr(buf, "epollfork: SUMMARY:");
        if (s)
            line = s + sizeof "epollfork:"; /* syslog's tag already says epollfork */
    }
    const char *nl = strchr(line, '\n');
    ef_log_record(buf, n, line, nl ? (size_t)(nl - line) : strlen(line));
    munmap(buf, REPORT_BUF);
    if (ef_opt.on_report == EF_ON_ABORT) {
        ef_log_notice("epollfork: EPOLLFORK_ON_REPORT=abort: aborting after the report above");
        abort();
    }
}

void ef_report_totals(void)
{
    if (!ef_fork.counted || counted_pid != ef_sys_getpid())
        return;
    unsigned long rep = atomic_load(&ef_report_count), sup = atomic_load(&ef_suppressed_count),
                  ded = atomic_load(&ef_deduped_count);
    if (!rep && !sup && !ded)
        return;
    char line[512];
    size_t n;
    int pid = (int)ef_sys_getpid();
    if (ef_opt.format == EF_FMT_JSON) {
        char ts[48];
        ef_rfc3339(ef_realtime_ns(), ts, sizeof ts);
        n = ef_fmt(line, sizeof line,
                   "{\"tool\":\"epollfork\",\"version\":\"%s\",\"kind\":\"totals\",\"time\":\"%s\","
                   "\"pid\":%d,\"reports\":%lu,\"suppressed\":%lu,\"deduped\":%lu}\n",
                   EF_VERSION, ts, pid, rep, sup, ded);
        ef_log_record(line, n, line, n - 1);
    } else {
        n = ef_fmt(line, sizeof line, "==%d== epollfork: TOTALS reports=%lu suppressed=%lu deduped=%lu\n",
                   pid, rep, sup, ded);
        const char *one = strstr(line, "TOTALS");
        ef_log_record(line, n, one, (size_t)(line + n - 1 - one));
    }
}

/* Counters are per process: a child starts from zero. */
void ef_report_after_fork_child(void)
{
    /* Called at a child's first event: write nothing that is already zero
     * (a copy-on-write fault). */
    if (!ef_fork.counted)
        return;
    ef_fork.counted = 0;
    if (atomic_load(&ef_report_count))
        atomic_store(&ef_report_count, 0);
    if (atomic_load(&ef_suppressed_count))
        atomic_store(&ef_suppressed_count, 0);
    if (atomic_load(&ef_deduped_count))
        atomic_store(&ef_deduped_count, 0);
}
