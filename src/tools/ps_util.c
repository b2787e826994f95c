/*
 * ps_util.c - the plumbing of epollfork-ps: memory, the string arena, notes,
 * and the context a scan fills (ps.h).
 *
 * A host can have millions of fds, so nothing here has a fixed capacity:
 * arrays grow by doubling (ps_push), link texts live in one arena addressed
 * by 32-bit offsets, and running out of memory ends the program with status 3
 * and one line, never with half an answer.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "ps.h"

/* ------------------------------------------------------------ memory */

void ps_oom(void)
{
    fputs("epollfork-ps: out of memory\n", stderr);
    exit(3);
}

void *ps_alloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        ps_oom();
    return p;
}

void *ps_push(void *arr, size_t n, size_t size)
{
    if (n == 0 || (n >= 4 && !(n & (n - 1)))) {
        size_t cap = n ? n * 2 : 4;
        if (cap > SIZE_MAX / size)
            ps_oom();
        arr = realloc(arr, cap * size);
        if (!arr)
            ps_oom();
    }
    return arr;
}

uint32_t ps_str(struct ps_ctx *c, const char *s, size_t len)
{
    if (c->alen + len + 1 > UINT32_MAX)
        ps_oom(); /* offsets are 32-bit: 4 GiB of link text is not a real host */
    if (c->alen + len + 1 > c->acap) {
        size_t cap = c->acap ? c->acap : 65536;
        while (cap < c->alen + len + 1)
            cap *= 2;
        c->arena = realloc(c->arena, cap);
        if (!c->arena)
            ps_oom();
        c->acap = cap;
    }
    uint32_t off = (uint32_t)c->alen;
    memcpy(c->arena + off, s, len);
    c->arena[off + len] = 0;
    c->alen += len + 1;
    return off;
}

char *ps_fmt(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int n = vasprintf(&s, fmt, ap);
    va_end(ap);
    if (n < 0)
        ps_oom();
    return s;
}

void ps_note(char ***notes, size_t *n, char *msg)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp((*notes)[i], msg)) { /* once */
            free(msg);
            return;
        }
    *PS_PUSH(*notes, *n) = msg;
}

/* ------------------------------------------------------------ context */

void ps_ctx_init(struct ps_ctx *c, const struct ps_opts *o)
{
    memset(c, 0, sizeof *c);
    c->o = o;
    c->self = (int)getpid();
    ps_str(c, "", 0); /* offset 0: the empty string */
    /* pipefs and sockfs are single kernel-internal mounts: their device is
     * the same in every process, so an fdinfo entry's sdev says "a pipe" or
     * "a socket" and a link's "[N]" is the inode on it. */
    int p[2];
    struct stat st;
    if (pipe(p) == 0) {
        if (fstat(p[0], &st) == 0)
            c->pipefs_dev = (uint32_t)((major(st.st_dev) << 20) | (minor(st.st_dev) & 0xfffff));
        /* kcmp(2) may be filtered (containers) or absent: ask it once */
        if (ef_procfs_kcmp_file_order(c->self, p[0], c->self, p[0]) != 0)
            c->kcmp_errno = errno ? errno : EIO;
        close(p[0]);
        close(p[1]);
    }
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s >= 0) {
        if (fstat(s, &st) == 0)
            c->sockfs_dev = (uint32_t)((major(st.st_dev) << 20) | (minor(st.st_dev) & 0xfffff));
        close(s);
    }
    if (c->kcmp_errno)
        ps_note(&c->notes, &c->nnotes,
                ps_fmt("kcmp(2) does not work here (%s): epoll fds cannot be told apart or "
                       "grouped into instances, so each is listed alone and no finding that "
                       "needs the kernel's identity of a file is made",
                       strerror(c->kcmp_errno)));
}

void ps_free_entries(struct ps_entry *e, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(e[i].open_in);
        free(e[i].kept_by);
        free(e[i].reused_in);
    }
    free(e);
}

void ps_ctx_free(struct ps_ctx *c)
{
    for (size_t i = 0; i < c->nprocs; i++) {
        struct ps_proc *p = &c->procs[i];
        free(p->fds);
        free(p->waits);
        free(p->seen);
        free((char *)p->why);
    }
    for (size_t i = 0; i < c->ninsts; i++) {
        struct ps_inst *in = &c->insts[i];
        free(in->refs);
        ps_free_entries(in->ents, in->nents);
        for (size_t k = 0; k < in->nfinds; k++) {
            free(in->finds[k].pids);
            free(in->finds[k].detail);
        }
        free(in->finds);
        for (size_t k = 0; k < in->nnotes; k++)
            free(in->notes[k]);
        free(in->notes);
    }
    for (size_t k = 0; k < c->nnotes; k++)
        free(c->notes[k]);
    free(c->notes);
    free(c->procs);
    free(c->insts);
    free(c->arena);
    memset(c, 0, sizeof *c);
}

void ps_uninspected(struct ps_ctx *c, int pid, const char *comm)
{
    if (c->uninspected < sizeof c->unseen / sizeof c->unseen[0]) {
        c->unseen[c->uninspected].pid = pid;
        snprintf(c->unseen[c->uninspected].comm, sizeof c->unseen[0].comm, "%s", comm);
    }
    c->uninspected++;
}

/* "1 (init), 77 (agent) and 3 more": the processes that could not be read. */
char *ps_unseen_list(const struct ps_ctx *c)
{
    char *s = ps_fmt("%s", "");
    size_t shown = sizeof c->unseen / sizeof c->unseen[0];
    for (size_t i = 0; i < c->uninspected && i < shown; i++) {
        char *t = ps_fmt("%s%s%d (%s)", s, i ? ", " : "", c->unseen[i].pid, c->unseen[i].comm);
        free(s);
        s = t;
    }
    if (c->uninspected > shown) {
        char *t = ps_fmt("%s and %zu more", s, c->uninspected - shown);
        free(s);
        s = t;
    }
    return s;
}
