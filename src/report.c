/*
 * report.c - render a record (text, JSON, one line) and emit it, once.
 *
 * Text follows the sanitizers: every line starts with ==PID==, a WARNING line
 * says what happened in plain words, labelled stacks follow with frames as
 * `#N 0xPC in FUNCTION (MODULE+0xOFFSET)`, and a one-line SUMMARY of
 * key=value pairs closes the report, so that a log scraper needs only that
 * line.  JSON is one object per line.  Both take the scalar fields from the
 * record's one field sequence (record.c) and the stacks from the kind's row;
 * the one-line form that syslog carries is the SUMMARY line (or the JSON
 * object) rendered from the same sequence, and the journal's entry
 * (journal.c) carries that sequence as fields with both renderings.  Frames
 * show the return address minus one (the call instruction), as the
 * sanitizers do, so that addr2line names the call's line.
 *
 * Emitting: suppressions, then the optional merge of identical reports
 * (EPOLLFORK_DEDUP), then one buffer, one write (log.c).  Counters are per
 * process and printed at exit as the TOTALS record.
 */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ef.h"

void (*ef_report_hook)(const struct ef_report *r);

/* ------------------------------------------------------------ fields */

static void field_text(struct ef_out *o, const struct ef_field *f)
{
    char num[32];
    switch (f->type) {
    case EF_F_INT:
        ef_fmt(num, sizeof num, "%lld", f->i);
        ef_put_kv(o, f->key, num);
        break;
    case EF_F_HEX:
        ef_fmt(num, sizeof num, "0x%llx", (unsigned long long)f->i);
        ef_put_kv(o, f->key, num);
        break;
    case EF_F_STR:
        ef_put_kv(o, f->key, f->s ? f->s : "unknown");
        break;
    case EF_F_BOOL:
        ef_put_kv(o, f->key, f->i ? "true" : "false");
        break;
    }
}

static void field_json(struct ef_out *o, const struct ef_field *f)
{
    ef_putf(o, ",\"%s\":", f->key);
    switch (f->type) {
    case EF_F_INT:
        ef_putf(o, "%lld", f->i);
        break;
    case EF_F_HEX:
        ef_putf(o, "\"0x%llx\"", (unsigned long long)f->i);
        break;
    case EF_F_STR:
        if (f->s)
            ef_put_json_str(o, f->s);
        else
            ef_puts(o, "null");
        break;
    case EF_F_BOOL:
        ef_puts(o, f->i ? "true" : "false");
        break;
    }
}

/* `SUMMARY: KIND key=value ...` without prefix or newline. */
static void summary(const struct ef_report *r, const struct ef_fields *fs, struct ef_out *o)
{
    ef_putf(o, "SUMMARY: %s", ef_kind_name(r->kind));
    for (unsigned i = 0; i < fs->n; i++)
        field_text(o, &fs->f[i]);
}

/* ------------------------------------------------------------ stacks */

static void frame_text(struct ef_out *o, const char *pfx, int i, uintptr_t pc, struct ef_symctx *c,
                       struct ef_sym *sy)
{
    ef_sym_lookup(c, pc, sy);
    /* A secure-execution process prints no absolute address (they would
     * undo its address-space randomization for whoever reads the log). */
    if (ef_secure())
        ef_putf(o, "%s    #%d in %s (", pfx, i, sy->function[0] ? sy->function : "??");
    else
        ef_putf(o, "%s    #%d 0x%lx in %s (", pfx, i, (unsigned long)pc,
                sy->function[0] ? sy->function : "??");
    if (sy->have_module)
        ef_put_vis(o, sy->module);
    else
        ef_puts(o, "<unknown module>");
    ef_putf(o, "+0x%lx)\n", (unsigned long)sy->offset);
}

/* Python frames, as Python's tracebacks print them, innermost first. */
static uint32_t python_text(struct ef_out *o, const char *pfx, uint32_t id)
{
    uint64_t words[EF_MAX_FRAMES];
    uint32_t n = ef_stack_python(id, words, EF_MAX_FRAMES);
    for (uint32_t i = 0; i < n; i++) {
        struct ef_pyframe f;
        ef_py_decode(words[i], &f);
        ef_putf(o, "%s    File \"", pfx);
        ef_put_vis(o, f.file);
        ef_putf(o, "\", line %d, in ", f.line);
        ef_put_vis(o, f.function);
        ef_puts(o, "\n");
    }
    return n;
}

/* CPython's eval loop: the native frames below it are the interpreter running
 * the Python frames already shown. */
static int eval_loop(const char *fn)
{
    return !strcmp(fn, "_PyEval_EvalFrameDefault") || !strcmp(fn, "PyEval_EvalFrameEx");
}

static void python_json(struct ef_out *o, uint32_t id)
{
    uint64_t words[EF_MAX_FRAMES];
    uint32_t n = ef_stack_python(id, words, EF_MAX_FRAMES);
    for (uint32_t i = 0; i < n; i++) {
        struct ef_pyframe f;
        ef_py_decode(words[i], &f);
        ef_puts(o, i ? ",{\"file\":" : "{\"file\":");
        ef_put_json_str(o, f.file);
        ef_putf(o, ",\"line\":%d,\"function\":", f.line);
        ef_put_json_str(o, f.function);
        ef_puts(o, "}");
    }
}

static void frame_json(struct ef_out *o, uintptr_t pc, struct ef_symctx *c)
{
    struct ef_sym sy;
    ef_sym_lookup(c, pc, &sy);
    if (ef_secure())
        ef_puts(o, "{\"pc\":null,\"module\":");
    else
        ef_putf(o, "{\"pc\":\"0x%lx\",\"module\":", (unsigned long)pc);
    if (sy.have_module)
        ef_put_json_str(o, sy.module);
    else
        ef_puts(o, "null");
    ef_putf(o, ",\"offset\":\"0x%lx\",\"function\":", (unsigned long)sy.offset);
    if (sy.function[0])
        ef_put_json_str(o, sy.function);
    else
        ef_puts(o, "null");
    ef_puts(o, "}");
}

static void render_text(const struct ef_report *r, struct ef_out *o, struct ef_symctx *c)
{
    const struct ef_kind_desc *k = &ef_kinds[r->kind];
    char pfx[32];
    ef_fmt(pfx, sizeof pfx, "==%d==", r->pid);
    k->headline(r, o, pfx);
    if (r->repair_mode) { /* what the shim did about it (the `repair` field, in words) */
        ef_putf(o, "%s epollfork: %s: ", pfx, r->repaired ? "REPAIRED" : "NOT REPAIRED");
        ef_put_vis(o, r->repair[0] ? r->repair : "nothing was done");
        ef_puts(o, "\n");
    }
    struct ef_stack_desc s[EF_MAX_STACKS];
    int ns = k->stacks(r, s);
    for (int i = 0; i < ns; i++) {
        ef_putf(o, "%s  %s\n", pfx, s[i].title);
        uint64_t pcs[EF_MAX_FRAMES];
        uint32_t n = ef_depot_copy(r->stacks[s[i].role], pcs, EF_MAX_FRAMES);
        if (!n)
            ef_putf(o, "%s    <%s>\n", pfx, s[i].missing);
        uint32_t py = python_text(o, pfx, r->stacks[s[i].role]);
        for (uint32_t j = 0; j < n; j++) {
            struct ef_sym sy;
            frame_text(o, pfx, (int)j, (uintptr_t)pcs[j] - 1, c, &sy);
            if (py && j + 1 < n && eval_loop(sy.function)) {
                ef_putf(o, "%s    (%u more native frames of the interpreter)\n", pfx, n - j - 1);
                break;
            }
        }
        if (s[i].note)
            ef_putf(o, "%s    (%s)\n", pfx, s[i].note);
    }
    struct ef_fields fs;
    ef_report_fields(r, c, &fs);
    ef_putf(o, "%s epollfork: ", pfx);
    summary(r, &fs, o);
    ef_puts(o, "\n");
}

static void render_json(const struct ef_report *r, struct ef_out *o, struct ef_symctx *c)
{
    const struct ef_kind_desc *k = &ef_kinds[r->kind];
    struct ef_fields fs;
    ef_report_fields(r, c, &fs);
    ef_put_json_head(o, k->name);
    for (unsigned i = 0; i < fs.n; i++)
        field_json(o, &fs.f[i]);
    struct ef_stack_desc s[EF_MAX_STACKS];
    int ns = k->stacks(r, s);
    uint32_t nframes[EF_MAX_STACKS];
    ef_puts(o, ",\"stacks\":{");
    for (int i = 0; i < ns; i++) {
        ef_putf(o, "%s\"%s\":[", i ? "," : "", ef_role_name(s[i].role));
        uint64_t pcs[EF_MAX_FRAMES];
        nframes[i] = ef_depot_copy(r->stacks[s[i].role], pcs, EF_MAX_FRAMES);
        for (uint32_t j = 0; j < nframes[i]; j++) {
            if (j)
                ef_puts(o, ",");
            frame_json(o, (uintptr_t)pcs[j] - 1, c);
        }
        ef_puts(o, "]");
    }
    ef_puts(o, "}");
    /* python_stacks: the same keys, only for the stacks with Python frames */
    int any = 0;
    for (int i = 0; i < ns; i++) {
        uint64_t w[1];
        if (!ef_stack_python(r->stacks[s[i].role], w, 1))
            continue;
        ef_putf(o, "%s\"%s\":[", any ? "," : ",\"python_stacks\":{", ef_role_name(s[i].role));
        python_json(o, r->stacks[s[i].role]);
        ef_puts(o, "]");
        any = 1;
    }
    if (any)
        ef_puts(o, "}");
    ef_puts(o, ",\"stack_notes\":{");
    int first = 1;
    for (int i = 0; i < ns; i++) {
        const char *why = nframes[i] ? s[i].note : s[i].missing;
        if (!why)
            continue;
        ef_putf(o, "%s\"%s\":", first ? "" : ",", ef_role_name(s[i].role));
        ef_put_json_str(o, why);
        first = 0;
    }
    ef_puts(o, "}}\n");
}

static size_t finish(struct ef_out *o)
{
    if (o->len && o->p[o->len - 1] != '\n' && o->len + 1 < o->cap) {
        o->p[o->len++] = '\n';
        o->p[o->len] = 0;
    }
    return o->len;
}

static size_t render_as(const struct ef_report *r, enum ef_format fmt, char *buf, size_t len)
{
    struct ef_out o = {buf, 0, len};
    if (len)
        buf[0] = 0;
    if ((unsigned)r->kind >= EF_NKINDS)
        return 0;
    struct ef_symctx *c = ef_sym_begin();
    if (fmt == EF_FMT_JSON)
        render_json(r, &o, c);
    else
        render_text(r, &o, c);
    ef_sym_end(c);
    return finish(&o);
}

size_t ef_report_render(const struct ef_report *r, char *buf, size_t len)
{
    return render_as(r, ef_opt.format, buf, len);
}

size_t ef_report_render_line(const struct ef_report *r, char *buf, size_t len)
{
    struct ef_out o = {buf, 0, len};
    if (len)
        buf[0] = 0;
    if ((unsigned)r->kind >= EF_NKINDS)
        return 0;
    if (ef_opt.format == EF_FMT_JSON)
        return ef_report_render(r, buf, len);
    struct ef_symctx *c = ef_sym_begin();
    struct ef_fields fs;
    ef_report_fields(r, c, &fs);
    ef_sym_end(c);
    summary(r, &fs, &o);
    return o.len;
}

/* ------------------------------------------------------------ emit */

#define REPORT_BUF (512 * 1024)

/* Per-process counters.  A fork child inherits them and must not print its
 * parent's totals: there is no atfork child handler to reset them (init.c),
 * so the child's first event does (ef_report_after_fork_child), and an emit
 * in a process that never had one checks the pid. */
EF_HOT static struct {
    _Atomic unsigned long reports, suppressed, deduped;
    pid_t pid;                  /* the process these counts belong to */
    int counted;                /* something was counted in it */
} counts;

unsigned long ef_report_count(void)
{
    return atomic_load(&counts.reports);
}

EF_INIT_TEXT struct ef_counts ef_report_counts(void)
{
    return (struct ef_counts){atomic_load(&counts.reports), atomic_load(&counts.suppressed),
                              atomic_load(&counts.deduped)};
}

/* "The same report": its kind and the stacks that say where the bug is. */
static uint64_t content_key(const struct ef_report *r)
{
    uint64_t k = ef_mix(0x44454455500000ffull /* identical-report merge */, ef_kinds[r->kind].key_tag);
    for (int i = 0; i < EF_NROLES; i++)
        if (i != EF_ST_USE)
            k = ef_mix(k, ef_stack_canon(r->stacks[i]));
    return (k ^ (k >> 33)) | 1;
}

/* A rendered report to log.c's sink: the configured format, and the
 * one-line form for syslog. */
static void emit_log(const struct ef_report *r, char *buf)
{
    size_t n = ef_report_render(r, buf, REPORT_BUF - 8192);
    /* The one-line form for syslog: the JSON object itself, or the SUMMARY
     * line rendered after the report in the same buffer. */
    char *line = buf;
    size_t ln = n;
    if (ef_opt.format == EF_FMT_TEXT) {
        line = buf + n + 1;
        ln = ef_report_render_line(r, line, REPORT_BUF - n - 1);
    }
    while (ln && line[ln - 1] == '\n')
        ln--;
    ef_log_record(buf, n, line, ln);
}

/* To the journal, with both renderings; if it does not take the entry, the
 * configured one goes to the stderr copy (log.c says why, once). */
static void emit_journal(const struct ef_report *r, char *buf)
{
    char *json = buf + REPORT_BUF;
    size_t tn = render_as(r, EF_FMT_TEXT, buf, REPORT_BUF - 8192);
    size_t jn = render_as(r, EF_FMT_JSON, json, REPORT_BUF - 8192);
    if (ef_journal_report(r, buf, tn, json, jn) == 0)
        return;
    if (ef_opt.format == EF_FMT_JSON)
        ef_log_record(json, jn, json, jn);
    else
        ef_log_record(buf, tn, buf, tn);
}

void ef_report_emit(const struct ef_report *r)
{
    if ((unsigned)r->kind >= EF_NKINDS)
        return;
    pid_t me = ef_sys_getpid(); /* a cold path */
    if (counts.pid != me) {
        ef_report_after_fork_child(); /* the counts so far were the parent's */
        counts.pid = me;
    }
    counts.counted = 1;
    if (ef_suppressed(r)) {
        atomic_fetch_add(&counts.suppressed, 1);
        return;
    }
    if (ef_opt.dedup && !ef_claim_once(content_key(r))) {
        atomic_fetch_add(&counts.deduped, 1);
        return;
    }
    atomic_fetch_add(&counts.reports, 1);
    if (ef_report_hook) {
        ef_report_hook(r);
        return;
    }
    /* The journal's entry carries both renderings (journal.c): the text
     * report in the first half, the JSON record in the second. */
    int journal = ef_journal_on();
    size_t cap = journal ? 2 * REPORT_BUF : REPORT_BUF;
    char *buf = ef_real.mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED)
        return;
    if (journal)
        emit_journal(r, buf);
    else
        emit_log(r, buf);
    ef_real.munmap(buf, cap);
    if (ef_opt.on_report == EF_ON_ABORT) {
        ef_log_notice("epollfork: EPOLLFORK_ON_REPORT=abort: aborting after the report above");
        abort();
    }
}

EF_INIT_TEXT void ef_report_totals(void)
{
    if (!counts.counted || counts.pid != ef_sys_getpid())
        return;
    unsigned long rep = atomic_load(&counts.reports), sup = atomic_load(&counts.suppressed),
                  ded = atomic_load(&counts.deduped);
    if (!rep && !sup && !ded)
        return;
    if (ef_journal_on() && ef_journal_totals(rep, sup, ded) == 0)
        return;
    char buf[512];
    struct ef_out o = {buf, 0, sizeof buf};
    buf[0] = 0;
    if (ef_opt.format == EF_FMT_JSON) {
        char ts[48];
        ef_rfc3339(ef_realtime_ns(), ts, sizeof ts);
        ef_put_json_head(&o, "totals");
        ef_putf(&o, ",\"time\":\"%s\",\"pid\":%d,\"reports\":%lu,\"suppressed\":%lu,"
                    "\"deduped\":%lu}\n", ts, (int)counts.pid, rep, sup, ded);
        ef_log_record(buf, o.len, buf, o.len - 1);
    } else {
        ef_putf(&o, "==%d== epollfork: ", (int)counts.pid);
        size_t line = o.len;
        ef_putf(&o, "TOTALS reports=%lu suppressed=%lu deduped=%lu\n", rep, sup, ded);
        ef_log_record(buf, o.len, buf + line, o.len - line - 1);
    }
}

/* Counters are per process: a child starts from zero.  Called at a child's
 * first event: write nothing that is already zero (a copy-on-write fault). */
void ef_report_after_fork_child(void)
{
    if (!counts.counted)
        return;
    counts.counted = 0;
    if (atomic_load(&counts.reports))
        atomic_store(&counts.reports, 0);
    if (atomic_load(&counts.suppressed))
        atomic_store(&counts.suppressed, 0);
    if (atomic_load(&counts.deduped))
        atomic_store(&counts.deduped, 0);
}
