/*
 * epollfork_ps.c - epollfork-ps: the epoll instances of running processes,
 * who shares them, who waits on them, and what is wrong with them, without
 * restarting or preloading anything.
 *
 * The shim (libepollfork.so) sees only programs it was preloaded into from
 * their start, and never static binaries, Go or raw syscalls.  An operator
 * with a worker that stopped getting events, or a process spinning on ghost
 * events, needs the answer now; `lsof` prints anon_inode:[eventpoll] and
 * stops there.  This program reads the kernel's own account (ps.h lists
 * where) and links only src/procfs.c of epollfork, never the shim.
 *
 * Read-only: it opens files under /proc and calls kcmp(2); it never stops,
 * traces or signals a process.  Exit status: 0 no finding, 1 findings, 2 a
 * usage error, 3 it could not run (no /proc, out of memory).
 *
 * --watch samples the instances that are shared at the start every 200 ms
 * (their entries, through one holder's fdinfo, and their holders' threads),
 * prints each change as it sees it, and ends with a fresh scan whose
 * shared-and-waited findings also count the waits seen meanwhile.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ps.h"
#include "epollfork_version.h"

static const char usage_text[] =
    "usage: epollfork-ps [--json] [--all] [--watch[=SECONDS]] [--tree PID]... [PID...]\n"
    "  Lists the epoll instances held by more than one process, and any instance with a\n"
    "  finding (stale entry, entry for a reused fd number, inherited through exec, shared\n"
    "  and waited on by several processes).  No PID: every process it may inspect.\n"
    "  --all            every epoll instance, shared or not\n"
    "  --json           one JSON object per line (instances, skipped processes, notes, summary)\n"
    "  --tree PID       PID and its descendants (may be repeated; adds to PID...)\n"
    "  --watch[=SECS]   sample for SECS seconds (default 5, at most 3600), print changes to\n"
    "                   shared lists and waits as they happen, then the report\n"
    "  --version        print the version\n"
    "Exit status: 0 no finding, 1 findings, 2 usage error, 3 could not run.\n";

#define PS_PID_MAX 4194304 /* the kernel's PID_MAX_LIMIT on 64-bit */
#define TICK_MS 200

static int usage_error(const char *fmt, const char *arg)
{
    fputs("epollfork-ps: ", stderr);
    fprintf(stderr, fmt, arg);
    fputs(" (see epollfork-ps --help)\n", stderr);
    return 2;
}

static int parse_pid(const char *s, int *out)
{
    long v = 0;
    size_t i = 0;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 8)
            return 0;
        v = v * 10 + (s[i] - '0');
    }
    if (!i || v < 1 || v > PS_PID_MAX)
        return 0;
    *out = (int)v;
    return 1;
}

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (!*s || *end || errno || !isfinite(v) || v <= 0 || v > 3600)
        return 0;
    *out = v;
    return 1;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------ --watch */

struct seen_wait {
    int pid, tid, epfd;
    long nr;
};

/* An instance shared at the start, followed through its holders' fds. */
struct watched {
    char key[48];
    struct ps_where *refs; /* (pid, fd), still one instance at the last sample */
    size_t nrefs;
    struct ps_entry *ents;
    size_t nents;
    struct seen_wait *seen;
    size_t nseen;
    int live;
};

struct watch_out {
    FILE *f;
    int json;
    double t0;
};

static void change_head(struct watch_out *o, const struct watched *w, const char *change)
{
    if (o->json)
        fprintf(o->f, "{\"kind\":\"change\",\"time\":%.3f,\"instance\":\"%s\",\"change\":\"%s\"",
                now() - o->t0, w->key, change);
    else
        fprintf(o->f, "+%.2fs instance %s: %s", now() - o->t0, w->key, change);
}

static void change_entry(struct watch_out *o, const struct watched *w, const char *change,
                         const struct ps_entry *e)
{
    char ev[256], link[4097] = "";
    ps_events_str(e->t.events, ev, sizeof ev);
    /* what the anchor holder's fd with that number is now, if it is that inode */
    uint64_t ino;
    uint32_t dev;
    if (!(ef_procfs_fd_ident(w->refs[0].pid, e->t.tfd, &ino, &dev) == 0 && ino == e->t.ino &&
          dev == (uint32_t)e->t.sdev && ef_procfs_fd_link(w->refs[0].pid, e->t.tfd, link, sizeof link) > 0))
        snprintf(link, sizeof link, "inode %llu", (unsigned long long)e->t.ino);
    change_head(o, w, change);
    if (o->json) {
        fprintf(o->f, ",\"entry\":{\"tfd\":%d,\"events\":\"%s\",\"data\":\"0x%llx\",\"ino\":%llu,"
                      "\"target\":",
                e->t.tfd, ev, (unsigned long long)e->t.data, (unsigned long long)e->t.ino);
        ps_json_str(o->f, link);
        fputs("}}\n", o->f);
    } else {
        fprintf(o->f, " tfd %d %s data 0x%llx (", e->t.tfd, ev, (unsigned long long)e->t.data);
        ps_text_str(o->f, link);
        fputs(")\n", o->f);
    }
}

static int cmp_entry_key(const void *a, const void *b)
{
    const struct ps_entry *x = a, *y = b;
    if (x->t.tfd != y->t.tfd)
        return x->t.tfd < y->t.tfd ? -1 : 1;
    if (x->t.sdev != y->t.sdev)
        return x->t.sdev < y->t.sdev ? -1 : 1;
    if (x->t.ino != y->t.ino)
        return x->t.ino < y->t.ino ? -1 : 1;
    return (x->toff > y->toff) - (x->toff < y->toff);
}

/* Print what was added, removed or changed between two samples of a list. */
static void diff_entries(struct watch_out *o, const struct watched *w, struct ps_entry *a, size_t na,
                         struct ps_entry *b, size_t nb)
{
    if (na) /* qsort of a NULL array is undefined, even of 0 elements */
        qsort(a, na, sizeof *a, cmp_entry_key);
    if (nb)
        qsort(b, nb, sizeof *b, cmp_entry_key);
    size_t i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : cmp_entry_key(&a[i], &b[j]);
        if (c < 0) {
            change_entry(o, w, "entry-removed", &a[i++]);
        } else if (c > 0) {
            change_entry(o, w, "entry-added", &b[j++]);
        } else {
            if (a[i].t.events != b[j].t.events || a[i].t.data != b[j].t.data)
                change_entry(o, w, "entry-changed", &b[j]);
            i++;
            j++;
        }
    }
}

/* Keep the refs that are still one instance with some anchor; 0 when no two
 * of them are (the holders closed it, exited, or the numbers were reused). */
static int revalidate(struct watch_out *o, struct watched *w)
{
    int *same = ps_alloc(w->nrefs, sizeof *same);
    for (size_t a = 0; a < w->nrefs; a++) {
        size_t n = 0;
        for (size_t b = 0; b < w->nrefs; b++) {
            same[b] = b == a || ef_procfs_kcmp_file_order(w->refs[a].pid, w->refs[a].fd,
                                                          w->refs[b].pid, w->refs[b].fd) == 0;
            n += same[b] && b != a;
        }
        if (!n)
            continue;
        size_t k = 0;
        struct ps_where anchor = w->refs[a];
        for (size_t b = 0; b < w->nrefs; b++) {
            if (same[b]) {
                w->refs[k++] = w->refs[b];
                continue;
            }
            change_head(o, w, "holder-left");
            if (o->json)
                fprintf(o->f, ",\"pid\":%d,\"fd\":%d}\n", w->refs[b].pid, w->refs[b].fd);
            else
                fprintf(o->f, " process %d no longer holds it at fd %d\n", w->refs[b].pid,
                        w->refs[b].fd);
        }
        w->nrefs = k;
        for (size_t b = 0; b < k; b++) /* the anchor first: it reads fdinfo */
            if (w->refs[b].pid == anchor.pid && w->refs[b].fd == anchor.fd) {
                w->refs[b] = w->refs[0];
                w->refs[0] = anchor;
            }
        free(same);
        same = NULL;
        for (size_t b = 1; b < k; b++)
            if (w->refs[b].pid != anchor.pid)
                return 1;
        break; /* the fds left are one process's (dup'ed): not shared */
    }
    free(same);
    change_head(o, w, "unshared");
    fputs(o->json ? "}\n" : " no two processes hold it any more: no longer followed\n", o->f);
    w->live = 0;
    return 0;
}

static void sample_waits(struct watch_out *o, struct ps_ctx *c, struct watched *w, int quiet)
{
    for (size_t r = 0; r < w->nrefs; r++) {
        if (r && w->refs[r].pid == w->refs[r - 1].pid)
            continue;
        struct ps_proc tmp;
        memset(&tmp, 0, sizeof tmp);
        tmp.pid = w->refs[r].pid;
        struct ps_wait *v;
        size_t n;
        ps_read_waits(c, &tmp, &v, &n);
        for (size_t i = 0; i < n; i++) {
            int ours = 0, known = 0;
            for (size_t k = 0; k < w->nrefs; k++)
                ours |= w->refs[k].pid == tmp.pid && w->refs[k].fd == v[i].epfd;
            for (size_t k = 0; k < w->nseen; k++)
                known |= w->seen[k].pid == tmp.pid && w->seen[k].tid == v[i].tid &&
                         w->seen[k].epfd == v[i].epfd;
            if (!ours || known)
                continue;
            *PS_PUSH(w->seen, w->nseen) = (struct seen_wait){tmp.pid, v[i].tid, v[i].epfd, v[i].nr};
            if (quiet)
                continue;
            change_head(o, w, "waiting");
            if (o->json)
                fprintf(o->f, ",\"pid\":%d,\"tid\":%d,\"call\":\"%s\",\"fd\":%d}\n", tmp.pid,
                        v[i].tid, ps_wait_name(v[i].nr), v[i].epfd);
            else
                fprintf(o->f, " process %d thread %d is in %s on fd %d\n", tmp.pid, v[i].tid,
                        ps_wait_name(v[i].nr), v[i].epfd);
        }
        free(v);
    }
}

static int cmp_where(const void *a, const void *b)
{
    const struct ps_where *x = a, *y = b;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    return (x->fd > y->fd) - (x->fd < y->fd);
}

static int run_watch(struct ps_opts *o)
{
    struct watch_out out = {stdout, o->json, now()};
    setvbuf(stdout, NULL, _IOLBF, 0); /* changes reach a pipe as they happen */
    struct ps_ctx c0;
    ps_ctx_init(&c0, o);
    ps_scan(&c0);
    ps_group(&c0);
    struct watched *ws = NULL;
    size_t nw = 0;
    for (size_t i = 0; i < c0.ninsts; i++) {
        struct ps_inst *in = &c0.insts[i];
        if (!in->selected || in->nholders < 2)
            continue;
        struct watched *w = PS_PUSH(ws, nw);
        memset(w, 0, sizeof *w);
        w->live = 1;
        snprintf(w->key, sizeof w->key, "%d:%d", c0.procs[in->refs[0].proc].pid, in->refs[0].fd);
        w->refs = ps_alloc(in->nrefs, sizeof *w->refs);
        for (size_t k = 0; k < in->nrefs; k++)
            w->refs[w->nrefs++] = (struct ps_where){c0.procs[in->refs[k].proc].pid, in->refs[k].fd};
        w->ents = in->ents; /* taken over */
        w->nents = in->nents;
        in->ents = NULL;
        in->nents = 0;
        sample_waits(&out, &c0, w, 1);
    }
    if (!o->json)
        printf("watching %zu shared instance%s for %.1f s\n", nw, nw == 1 ? "" : "s",
               o->watch_seconds);
    double end = out.t0 + o->watch_seconds;
    while (now() < end) {
        double left = end - now(), step = left < TICK_MS / 1000.0 ? left : TICK_MS / 1000.0;
        struct timespec ts = {(time_t)step, (long)((step - (double)(time_t)step) * 1e9)};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
        for (size_t i = 0; i < nw; i++) {
            struct watched *w = &ws[i];
            if (!w->live || !revalidate(&out, w))
                continue;
            struct ps_ref rep;
            struct ps_ctx one; /* ps_read_entries reads a pid through a ctx */
            memset(&one, 0, sizeof one);
            struct ps_proc p;
            memset(&p, 0, sizeof p);
            p.pid = w->refs[0].pid;
            one.procs = &p;
            one.nprocs = 1;
            rep.proc = 0;
            rep.fd = w->refs[0].fd;
            struct ps_entry *e;
            size_t n;
            if (ps_read_entries(&one, &rep, &e, &n) == 0) {
                diff_entries(&out, w, w->ents, w->nents, e, n);
                ps_free_entries(w->ents, w->nents);
                w->ents = e;
                w->nents = n;
            }
            sample_waits(&out, &c0, w, 0);
        }
    }
    /* the report: a fresh scan, with the waits seen on instances that are
     * still one (the same (pid, fd) pairs land in one instance) */
    struct ps_ctx c;
    ps_ctx_init(&c, o);
    ps_scan(&c);
    ps_group(&c);
    for (size_t i = 0; i < nw; i++) {
        struct watched *w = &ws[i];
        int target = -1, agree = 1;
        size_t found = 0;
        if (w->nrefs)
            qsort(w->refs, w->nrefs, sizeof *w->refs, cmp_where);
        for (size_t k = 0; w->live && k < w->nrefs; k++) {
            struct ps_proc *p = ps_proc_by_pid(&c, w->refs[k].pid);
            struct ps_fd *f = p ? ps_fd_of(p, w->refs[k].fd) : NULL;
            if (!f || f->kind != FK_EPOLL || f->inst < 0)
                continue;
            agree &= target < 0 || target == f->inst;
            target = f->inst;
            found++;
        }
        if (w->live && agree && found >= 2) {
            for (size_t k = 0; k < w->nseen; k++) {
                struct ps_proc *p = ps_proc_by_pid(&c, w->seen[k].pid);
                struct ps_fd *f = p ? ps_fd_of(p, w->seen[k].epfd) : NULL;
                if (f && f->kind == FK_EPOLL && f->inst == target)
                    *PS_PUSH(p->seen, p->nseen) =
                        (struct ps_wait){w->seen[k].tid, w->seen[k].epfd, w->seen[k].nr};
            }
        } else if (w->nseen) {
            ps_note(&c.notes, &c.nnotes,
                    ps_fmt("instance %s is no longer shared by the same fds at the end of the "
                           "watch: the waits seen on it are not counted",
                           w->key));
        }
        free(w->refs);
        ps_free_entries(w->ents, w->nents);
        free(w->seen);
    }
    free(ws);
    ps_ctx_free(&c0);
    ps_judge(&c);
    if (o->json)
        ps_out_json(stdout, &c, now() - out.t0);
    else {
        putchar('\n');
        ps_out_table(stdout, &c, now() - out.t0);
    }
    size_t nf = ps_findings(&c);
    ps_ctx_free(&c);
    return nf ? 1 : 0;
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    struct ps_opts o;
    memset(&o, 0, sizeof o);
    o.watch_seconds = 5;
    int opts_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int pid;
        if (opts_done || a[0] != '-') {
            if (!parse_pid(a, &pid))
                return usage_error("not a process id: '%s'", a);
            *PS_PUSH(o.pids, o.npids) = pid;
        } else if (!strcmp(a, "--")) {
            opts_done = 1;
        } else if (!strcmp(a, "--json")) {
            o.json = 1;
        } else if (!strcmp(a, "--all")) {
            o.all = 1;
        } else if (!strcmp(a, "--watch")) {
            o.watch = 1;
        } else if (!strncmp(a, "--watch=", 8)) {
            o.watch = 1;
            if (!parse_seconds(a + 8, &o.watch_seconds))
                return usage_error("--watch=SECONDS wants a number of seconds above 0 and at "
                                   "most 3600, not '%s'", a + 8);
        } else if (!strcmp(a, "--tree") || !strncmp(a, "--tree=", 7)) {
            const char *v = a[6] == '=' ? a + 7 : i + 1 < argc ? argv[++i] : NULL;
            if (!v)
                return usage_error("%s needs a process id", "--tree");
            if (!parse_pid(v, &pid))
                return usage_error("--tree: not a process id: '%s'", v);
            *PS_PUSH(o.trees, o.ntrees) = pid;
        } else if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (!strcmp(a, "--version")) {
            printf("epollfork-ps %s\n", EPOLLFORK_VERSION_STRING);
            return 0;
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    int rc;
    if (o.watch) {
        rc = run_watch(&o);
    } else {
        double t0 = now();
        struct ps_ctx c;
        ps_ctx_init(&c, &o);
        ps_scan(&c);
        ps_group(&c);
        ps_judge(&c);
        if (o.json)
            ps_out_json(stdout, &c, now() - t0);
        else
            ps_out_table(stdout, &c, now() - t0);
        rc = ps_findings(&c) ? 1 : 0;
        ps_ctx_free(&c);
    }
    free(o.pids);
    free(o.trees);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "epollfork-ps: writing the output failed: %s\n", strerror(errno));
        return 3;
    }
    return rc;
}
