/*
 * ps_out.c - what epollfork-ps prints: a table for people, JSON lines for
 * programs, from the same picture (ps.h) and the same order.
 *
 * Paths and command names are the kernel's bytes: anything.  JSON strings are
 * valid UTF-8 (a byte that is not part of a valid UTF-8 sequence is written as
 * the four characters \xNN, control characters as \u00NN); table cells show
 * control characters and invalid bytes as \xNN, so no name can start a line or
 * move the cursor.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "ps.h"
#include "epollfork_version.h"

/* The kernel's private bits, should the libc headers lack them. */
#ifndef EPOLLEXCLUSIVE
#define EPOLLEXCLUSIVE (1u << 28)
#endif
#ifndef EPOLLWAKEUP
#define EPOLLWAKEUP (1u << 29)
#endif

/* Every flag of epoll_ctl(2), named as the shim's reports name them
 * (src/report.c ef_events_str; this tool does not link the shim). */
size_t ps_events_str(uint32_t ev, char *buf, size_t len)
{
    static const struct {
        uint32_t bit;
        const char *name;
    } names[] = {
        {EPOLLIN, "EPOLLIN"},         {EPOLLPRI, "EPOLLPRI"},       {EPOLLOUT, "EPOLLOUT"},
        {EPOLLERR, "EPOLLERR"},       {EPOLLHUP, "EPOLLHUP"},       {EPOLLRDNORM, "EPOLLRDNORM"},
        {EPOLLRDBAND, "EPOLLRDBAND"}, {EPOLLWRNORM, "EPOLLWRNORM"}, {EPOLLWRBAND, "EPOLLWRBAND"},
        {EPOLLMSG, "EPOLLMSG"},       {EPOLLRDHUP, "EPOLLRDHUP"},   {EPOLLEXCLUSIVE, "EPOLLEXCLUSIVE"},
        {EPOLLWAKEUP, "EPOLLWAKEUP"}, {EPOLLONESHOT, "EPOLLONESHOT"}, {EPOLLET, "EPOLLET"},
    };
    size_t k = 0;
    uint32_t rest = ev;
    if (len)
        buf[0] = 0;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (!(ev & names[i].bit))
            continue;
        int n = snprintf(buf + k, len - k, "%s%s", k ? "|" : "", names[i].name);
        if (n < 0 || (size_t)n >= len - k)
            return k;
        k += (size_t)n;
        rest &= ~names[i].bit;
    }
    int n = rest || !ev ? snprintf(buf + k, len - k, "%s0x%x", k ? "|" : "", rest) : 0;
    if (n > 0 && (size_t)n < len - k)
        k += (size_t)n;
    return k;
}

/* ------------------------------------------------------------ strings */

/* Length of the valid UTF-8 sequence at p (1-4), or 0 (RFC 3629: no overlong
 * forms, no surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned min, cp;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) /* also stops at the NUL */
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

void ps_json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    putc('"', f);
    while (*p) {
        size_t n;
        if (*p == '"' || *p == '\\') {
            putc('\\', f);
            putc(*p++, f);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(f, "\\u%04x", *p++);
        } else if ((n = utf8_len(p)) != 0) {
            fwrite(p, 1, n, f);
            p += n;
        } else {
            fprintf(f, "\\\\x%02x", *p++);
        }
    }
    putc('"', f);
}

void ps_text_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        size_t n;
        if (*p == '\\') {
            fputs("\\\\", f);
            p++;
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(f, "\\x%02x", *p++);
        } else if ((n = utf8_len(p)) != 0) {
            fwrite(p, 1, n, f);
            p += n;
        } else {
            fprintf(f, "\\x%02x", *p++);
        }
    }
}

/* ------------------------------------------------------------ counting */

size_t ps_findings(const struct ps_ctx *c)
{
    size_t n = 0;
    for (size_t i = 0; i < c->ninsts; i++)
        if (ps_inst_shown(c, &c->insts[i]))
            n += c->insts[i].nfinds;
    return n;
}

struct counts {
    size_t inspected, selected, skipped, shown, shared, fds;
};

static struct counts count(const struct ps_ctx *c)
{
    struct counts k = {0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < c->nprocs; i++) {
        k.inspected += c->procs[i].state == PROC_INSPECTED;
        k.fds += c->procs[i].state == PROC_INSPECTED ? c->procs[i].nfds : 0;
        k.selected += c->procs[i].state == PROC_INSPECTED && c->procs[i].selected;
        k.skipped += c->procs[i].state == PROC_SKIPPED && c->procs[i].selected;
    }
    for (size_t i = 0; i < c->ninsts; i++) {
        k.shown += ps_inst_shown(c, &c->insts[i]);
        k.shared += c->insts[i].nholders >= 2;
    }
    return k;
}

/* The holder's fds in the instance (refs from index h on); *out is malloc'd. */
static size_t holder_fds(const struct ps_ctx *c, const struct ps_inst *in, size_t h,
                         const struct ps_fd ***out)
{
    size_t n = 0;
    const struct ps_proc *p = &c->procs[in->refs[h].proc];
    *out = NULL;
    for (size_t k = h; k < in->nrefs && in->refs[k].proc == in->refs[h].proc; k++)
        *PS_PUSH(*out, n) = ps_fd_of(p, in->refs[k].fd);
    return n;
}

/* Threads of p waiting on instance ii now (seen = 0) or during --watch;
 * *out is malloc'd (a thread pool can have hundreds). */
static size_t waits_for(const struct ps_proc *p, int ii, int seen, const struct ps_wait ***out)
{
    const struct ps_wait *v = seen ? p->seen : p->waits;
    size_t n = seen ? p->nseen : p->nwaits, k = 0;
    *out = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct ps_fd *f = ps_fd_of(p, v[i].epfd);
        if (f && f->kind == FK_EPOLL && f->inst == ii)
            *PS_PUSH(*out, k) = &v[i];
    }
    return k;
}

static void key_of(const struct ps_ctx *c, const struct ps_inst *in, char *buf, size_t len)
{
    snprintf(buf, len, "%d:%d", c->procs[in->refs[0].proc].pid, in->refs[0].fd);
}

/* ------------------------------------------------------------ JSON */

static void json_where(FILE *f, const struct ps_where *w, size_t n)
{
    putc('[', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%s{\"pid\":%d,\"fd\":%d}", i ? "," : "", w[i].pid, w[i].fd);
    putc(']', f);
}

static void json_inst(FILE *f, const struct ps_ctx *c, size_t ii, int id)
{
    const struct ps_inst *in = &c->insts[ii];
    char key[64];
    key_of(c, in, key, sizeof key);
    fprintf(f, "{\"kind\":\"instance\",\"id\":%d,\"key\":\"%s\",\"shared\":%s,\"identity_known\":%s,"
               "\"holders\":[",
            id, key, in->nholders >= 2 ? "true" : "false", in->alone ? "false" : "true");
    for (size_t h = 0, first = 1; h < in->nrefs; h++) {
        if (h && in->refs[h].proc == in->refs[h - 1].proc)
            continue;
        const struct ps_proc *p = &c->procs[in->refs[h].proc];
        const struct ps_fd **fds;
        const struct ps_wait **w;
        size_t nf = holder_fds(c, in, h, &fds);
        fprintf(f, "%s{\"pid\":%d,\"comm\":", first ? "" : ",", p->pid);
        first = 0;
        ps_json_str(f, p->comm);
        fprintf(f, ",\"ppid\":%d,\"exe\":", p->ppid);
        if (p->exe_read == 1)
            ps_json_str(f, ps_at(c, p->exe));
        else
            fputs("null", f);
        fputs(",\"fds\":[", f);
        for (size_t k = 0; k < nf; k++)
            fprintf(f, "%s%d", k ? "," : "", fds[k]->fd);
        fputs("],\"cloexec\":[", f);
        for (size_t k = 0; k < nf; k++)
            fprintf(f, "%s%s", k ? "," : "",
                    fds[k]->cloexec < 0 ? "null" : fds[k]->cloexec ? "true" : "false");
        fputs("],\"waiting\":", f);
        free(fds);
        if (p->waits_read == 1) {
            size_t nw = waits_for(p, (int)ii, 0, &w);
            putc('[', f);
            for (size_t k = 0; k < nw; k++)
                fprintf(f, "%s%d", k ? "," : "", w[k]->tid);
            fputs("],\"waits\":[", f);
            for (size_t k = 0; k < nw; k++)
                fprintf(f, "%s{\"tid\":%d,\"call\":\"%s\",\"fd\":%d}", k ? "," : "", w[k]->tid,
                        ps_wait_name(w[k]->nr), w[k]->epfd);
            putc(']', f);
            free(w);
        } else {
            fputs("null,\"waits\":null", f);
        }
        if (c->o->watch) {
            size_t nw = waits_for(p, (int)ii, 1, &w);
            fputs(",\"seen_waiting\":[", f);
            for (size_t k = 0; k < nw; k++)
                fprintf(f, "%s%d", k ? "," : "", w[k]->tid);
            putc(']', f);
            free(w);
        }
        putc('}', f);
    }
    fprintf(f, "],\"entries_read\":%s,\"entries\":[", in->ents_read ? "true" : "false");
    for (size_t i = 0; i < in->nents; i++) {
        const struct ps_entry *e = &in->ents[i];
        char ev[256];
        ps_events_str(e->t.events, ev, sizeof ev);
        fprintf(f, "%s{\"tfd\":%d,\"events\":\"%s\",\"events_hex\":\"0x%x\",\"data\":\"0x%llx\","
                   "\"target\":",
                i ? "," : "", e->t.tfd, ev, e->t.events, (unsigned long long)e->t.data);
        ps_json_str(f, ps_at(c, e->target));
        fprintf(f, ",\"ino\":%llu,\"dev\":\"%u:%u\",\"stale\":%s,\"open_in\":",
                (unsigned long long)e->t.ino, (unsigned)(e->t.sdev >> 20),
                (unsigned)(e->t.sdev & 0xfffff),
                e->stale < 0 ? "null" : e->stale ? "true" : "false");
        json_where(f, e->open_in, e->nopen_in);
        fputs(",\"kept_open_by\":", f);
        json_where(f, e->kept_by, e->nkept_by);
        fputs(",\"reused_in\":[", f);
        for (size_t k = 0; k < e->nreused_in; k++)
            fprintf(f, "%s%d", k ? "," : "", e->reused_in[k]);
        fputs("]}", f);
    }
    fputs("],\"findings\":[", f);
    for (size_t i = 0; i < in->nfinds; i++) {
        const struct ps_finding *x = &in->finds[i];
        fprintf(f, "%s{\"kind\":\"%s\",\"detail\":", i ? "," : "", ps_finding_name(x->kind));
        ps_json_str(f, x->detail);
        fputs(",\"pids\":[", f);
        for (size_t k = 0; k < x->npids; k++)
            fprintf(f, "%s%d", k ? "," : "", x->pids[k]);
        fputs("],\"tfd\":", f);
        if (x->tfd >= 0)
            fprintf(f, "%d", x->tfd);
        else
            fputs("null", f);
        putc('}', f);
    }
    fputs("],\"notes\":[", f);
    for (size_t i = 0; i < in->nnotes; i++) {
        fputs(i ? "," : "", f);
        ps_json_str(f, in->notes[i]);
    }
    fputs("]}\n", f);
}

void ps_out_json(FILE *f, struct ps_ctx *c, double elapsed)
{
    int id = 0;
    for (size_t i = 0; i < c->ninsts; i++)
        if (ps_inst_shown(c, &c->insts[i]))
            json_inst(f, c, i, ++id);
    for (size_t i = 0; i < c->nprocs; i++) {
        const struct ps_proc *p = &c->procs[i];
        if (p->state != PROC_SKIPPED || !p->selected)
            continue;
        fprintf(f, "{\"kind\":\"skipped\",\"pid\":%d,\"comm\":", p->pid);
        if (p->comm[0])
            ps_json_str(f, p->comm);
        else
            fputs("null", f);
        fputs(",\"reason\":", f);
        ps_json_str(f, p->why);
        fputs("}\n", f);
    }
    for (size_t i = 0; i < c->nnotes; i++) {
        fputs("{\"kind\":\"note\",\"message\":", f);
        ps_json_str(f, c->notes[i]);
        fputs("}\n", f);
    }
    struct counts k = count(c);
    fprintf(f, "{\"kind\":\"summary\",\"version\":\"%s\",\"processes_inspected\":%zu,"
               "\"selected\":%zu,\"fds\":%zu,\"skipped\":%zu,\"uninspected\":%zu,\"instances\":%zu,\"shared\":%zu,"
               "\"shown\":%zu,\"findings\":%zu,\"elapsed_ms\":%.1f}\n",
            EPOLLFORK_VERSION_STRING, k.inspected, k.selected, k.fds, k.skipped, c->uninspected, c->ninsts, k.shared,
            k.shown, ps_findings(c), elapsed * 1000);
}

/* ------------------------------------------------------------ table */

static void table_inst(FILE *f, const struct ps_ctx *c, size_t ii)
{
    const struct ps_inst *in = &c->insts[ii];
    char key[64];
    key_of(c, in, key, sizeof key);
    fprintf(f, "epoll instance %s: %zu holder%s, %zu entr%s%s%s\n", key, in->nholders,
            in->nholders == 1 ? "" : "s", in->nents, in->nents == 1 ? "y" : "ies",
            in->nholders >= 2 ? ", SHARED" : "", in->alone ? ", identity unknown" : "");
    fprintf(f, "  %-8s %-16s %-24s %s\n", "PID", "COMM", "FDS", "WAITING");
    for (size_t h = 0; h < in->nrefs; h++) {
        if (h && in->refs[h].proc == in->refs[h - 1].proc)
            continue;
        const struct ps_proc *p = &c->procs[in->refs[h].proc];
        const struct ps_fd **fds;
        const struct ps_wait **w, **now_w;
        size_t nf = holder_fds(c, in, h, &fds);
        char cell[256];
        size_t k = 0;
        cell[0] = 0;
        for (size_t i = 0; i < nf && k < sizeof cell - 32; i++)
            k += (size_t)snprintf(cell + k, sizeof cell - k, "%s%d%s", i ? "," : "", fds[i]->fd,
                                  fds[i]->cloexec == 0 ? " (no O_CLOEXEC)" : "");
        fprintf(f, "  %-8d ", p->pid);
        ps_text_str(f, p->comm);
        free(fds);
        fprintf(f, "%*s %-24s ", (int)(16 - (strlen(p->comm) < 16 ? strlen(p->comm) : 16)), "",
                cell);
        if (p->waits_read != 1) {
            fputs("unknown (no permission to read its threads)", f);
        } else {
            size_t nw = waits_for(p, (int)ii, 0, &now_w), ns = 0;
            for (size_t i = 0; i < nw; i++)
                fprintf(f, "%sthread %d in %s", i ? ", " : "", now_w[i]->tid,
                        ps_wait_name(now_w[i]->nr));
            if (c->o->watch) {
                size_t shown = nw;
                ns = waits_for(p, (int)ii, 1, &w);
                for (size_t i = 0; i < ns; i++) {
                    int dup = 0; /* waiting now too: said already */
                    for (size_t j = 0; j < nw; j++)
                        dup |= now_w[j]->tid == w[i]->tid;
                    if (!dup)
                        fprintf(f, "%sthread %d seen in %s", shown++ ? ", " : "", w[i]->tid,
                                ps_wait_name(w[i]->nr));
                }
                free(w);
            }
            free(now_w);
            if (!nw && !ns)
                fputs("-", f);
        }
        putc('\n', f);
    }
    int evw = 6, dw = 4; /* column widths: the widest cell */
    for (size_t i = 0; i < in->nents; i++) {
        char ev[256];
        int n = (int)ps_events_str(in->ents[i].t.events, ev, sizeof ev);
        int d = snprintf(NULL, 0, "0x%llx", (unsigned long long)in->ents[i].t.data);
        evw = n > evw ? n : evw;
        dw = d > dw ? d : dw;
    }
    if (in->nents)
        fprintf(f, "  %-8s %-*s %-*s %s\n", "TFD", evw, "EVENTS", dw, "DATA", "TARGET");
    for (size_t i = 0; i < in->nents; i++) {
        const struct ps_entry *e = &in->ents[i];
        char ev[256], data[32];
        ps_events_str(e->t.events, ev, sizeof ev);
        snprintf(data, sizeof data, "0x%llx", (unsigned long long)e->t.data);
        fprintf(f, "  %-8d %-*s %-*s ", e->t.tfd, evw, ev, dw, data);
        ps_text_str(f, ps_at(c, e->target));
        if (e->stale == 1)
            fputs("  [STALE]", f);
        if (e->nreused_in)
            fputs("  [REUSED NUMBER]", f);
        putc('\n', f);
    }
    if (!in->ents_read)
        fputs("  (entries could not be read)\n", f);
    for (size_t i = 0; i < in->nfinds; i++) {
        fprintf(f, "  FINDING %s: ", ps_finding_name(in->finds[i].kind));
        ps_text_str(f, in->finds[i].detail);
        putc('\n', f);
    }
    for (size_t i = 0; i < in->nnotes; i++) {
        fputs("  note: ", f);
        ps_text_str(f, in->notes[i]);
        putc('\n', f);
    }
    putc('\n', f);
}

void ps_out_table(FILE *f, struct ps_ctx *c, double elapsed)
{
    for (size_t i = 0; i < c->ninsts; i++)
        if (ps_inst_shown(c, &c->insts[i]))
            table_inst(f, c, i);
    /* skipped processes, one paragraph per reason */
    for (size_t i = 0; i < c->nprocs; i++)
        c->procs[i].mark = 0;
    for (size_t i = 0; i < c->nprocs; i++) {
        struct ps_proc *p = &c->procs[i];
        if (p->state != PROC_SKIPPED || !p->selected || p->mark)
            continue;
        fputs("skipped, ", f);
        ps_text_str(f, p->why);
        fputs(":\n ", f);
        size_t col = 1;
        for (size_t k = i; k < c->nprocs; k++) {
            struct ps_proc *q = &c->procs[k];
            if (q->state != PROC_SKIPPED || !q->selected || q->mark || strcmp(q->why, p->why))
                continue;
            q->mark = 1;
            size_t w = (size_t)snprintf(NULL, 0, " %d (%s)", q->pid, q->comm);
            if (col + w > 100) {
                fputs("\n ", f);
                col = 1;
            }
            fprintf(f, " %d (", q->pid);
            ps_text_str(f, q->comm);
            fputs(")", f);
            col += w;
        }
        fputs("\n", f);
    }
    for (size_t i = 0; i < c->nprocs; i++)
        c->procs[i].mark = 0;
    for (size_t i = 0; i < c->nnotes; i++) {
        fputs("note: ", f);
        ps_text_str(f, c->notes[i]);
        putc('\n', f);
    }
    struct counts k = count(c);
    size_t nf = ps_findings(c);
    char sel[64] = "";
    if (k.selected != k.inspected)
        snprintf(sel, sizeof sel, " (%zu selected)", k.selected);
    fprintf(f, "%zu processes inspected%s, %zu skipped; %zu epoll instances, %zu shared, %zu "
               "shown; %zu finding%s (%.2f s)\n",
            k.inspected, sel, k.skipped, c->ninsts, k.shared, k.shown, nf, nf == 1 ? "" : "s",
            elapsed);
}
