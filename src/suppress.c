/*
 * suppress.c - EPOLLFORK_SUPPRESSIONS: known reports a team has decided to live
 * with, counted instead of printed.
 *
 * Like the sanitizers' suppression files: one rule per line, `KIND:GLOB`, where
 * KIND is a report kind or `*` and GLOB (fnmatch) is matched against the
 * function names, module paths and module base names of the offending call's
 * frames (the epoll_ctl for shared-epoll-ctl, the close for
 * stale-registration, the exec for epoll-fd-exec-leak, or the program itself
 * for a leak found at start-up).  When that stack has Python frames
 * (pyframes.c), GLOB is also matched against each one's function, file path,
 * file base name and `file.py:LINE(function)`, the form `site` takes, so that
 * a Python team suppresses by its own line.  `#` starts a comment.  The file
 * is read once at start-up; a bad line is named and ignored, the rest still
 * apply.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ef.h"

#define MAXRULES 256

struct rule {
    int kind;               /* enum ef_kind, or -1 for `*` */
    char glob[224];
};

/* [MAXRULES], the zone's (zone.c): made only when there are rules */
static struct rule *rules;
static int nrules;
_Static_assert(MAXRULES * sizeof(struct rule) <= EF_Z_BYTES(RULES), "the rules fit");

/* The file is read once, at start-up, whatever it is: only a regular file,
 * at most MAX_BYTES of it, and at most MAX_NOTICES lines of complaint (a
 * binary file would otherwise print one per line: 80 MB of notices from
 * /dev/urandom in 5 s). */
#define MAX_BYTES (1 << 20)
#define MAX_NOTICES 5
static int problems;

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        s[--n] = 0;
    return s;
}

static void parse_line(char *line, int lineno, const char *path)
{
    char *hash = strchr(line, '#');
    if (hash)
        *hash = 0;
    line = trim(line);
    if (!*line)
        return;
    char *colon = strchr(line, ':');
    const char *why = NULL;
    if (!colon)
        why = "expected KIND:GLOB";
    else {
        *colon = 0;
        char *kind = trim(line), *glob = trim(colon + 1);
        int k = strcmp(kind, "*") ? ef_kind_by_name(kind) : -1;
        if (k < 0 && strcmp(kind, "*"))
            why = "unknown kind (shared-epoll-ctl, stale-registration, epoll-fd-exec-leak or *)";
        else if (!*glob)
            why = "empty pattern";
        else if (strlen(glob) >= sizeof(((struct rule *)0)->glob))
            why = "pattern too long";
        else if (nrules == MAXRULES)
            why = "too many rules";
        else if (!rules && !(rules = ef_zone(EF_Z_RULES)))
            why = "no memory for the rules";
        else {
            rules[nrules].kind = k;
            ef_fmt(rules[nrules].glob, sizeof rules[nrules].glob, "%s", glob);
            nrules++;
            return;
        }
    }
    if (++problems <= MAX_NOTICES)
        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS: %s:%d: %s; rule ignored", path, lineno,
                      why);
}

static const char *file_type(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" : S_ISCHR(m) ? "a character device"
           : S_ISBLK(m) ? "a block device" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

void ef_suppressions_load(const char *path)
{
    if (!path || !*path)
        return;
    /* O_NONBLOCK: a FIFO must not block the program before main() */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS='%s' cannot be read (%s); no suppressions",
                      path, strerror(errno));
        return;
    }
    struct stat st;
    if (ef_fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS='%s' is %s, not a file of rules; no "
                      "suppressions", path, ef_fstat(fd, &st) == 0 ? file_type(st.st_mode) : "unknown");
        ef_sys_close(fd);
        return;
    }
    if (st.st_size > MAX_BYTES)
        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS='%s' is larger than %d KiB; only its "
                      "beginning is read", path, MAX_BYTES / 1024);
    char buf[4096], line[1024];
    size_t used = 0, total = 0;
    int lineno = 0, long_line = 0;
    ssize_t n;
    while (total < MAX_BYTES && (n = read(fd, buf, sizeof buf)) > 0) {
        total += (size_t)n;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] == '\n') {
                line[used] = 0;
                lineno++;
                if (long_line) {
                    if (++problems <= MAX_NOTICES)
                        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS: %s:%d: line longer than "
                                      "%zu bytes; rule ignored", path, lineno, sizeof line - 1);
                } else {
                    parse_line(line, lineno, path);
                }
                used = 0;
                long_line = 0;
            } else if (used + 1 < sizeof line) {
                line[used++] = buf[i] ? buf[i] : ' ';
            } else {
                long_line = 1;
            }
        }
    }
    if (used && !long_line) {
        line[used] = 0;
        parse_line(line, ++lineno, path);
    }
    if (problems > MAX_NOTICES)
        ef_log_notice("epollfork: EPOLLFORK_SUPPRESSIONS: %s: %d more lines with problems were "
                      "ignored", path, problems - MAX_NOTICES);
    ef_sys_close(fd);
}

static int matches(const char *glob, const char *s)
{
    return s && *s && fnmatch(glob, s, 0) == 0;
}

static int frame_matches(const struct rule *ru, const struct ef_sym *sy)
{
    const char *base = strrchr(sy->module, '/');
    return matches(ru->glob, sy->function) || matches(ru->glob, sy->module) ||
           matches(ru->glob, base ? base + 1 : NULL);
}

static int python_matches(const struct rule *ru, const uint64_t *words, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        struct ef_pyframe f;
        char site[sizeof f.file + 64];
        ef_py_decode(words[i], &f);
        ef_py_site(&f, site, sizeof site);
        const char *base = strrchr(f.file, '/');
        if (matches(ru->glob, f.function) || matches(ru->glob, f.file) ||
            matches(ru->glob, base ? base + 1 : NULL) || matches(ru->glob, site))
            return 1;
    }
    return 0;
}

int ef_suppressed(const struct ef_report *r)
{
    if (!nrules || (unsigned)r->kind >= EF_NKINDS)
        return 0;
    uint64_t words[EF_MAX_FRAMES];
    uint32_t nw = ef_stack_python(r->stacks[ef_kinds[r->kind].offending], words, EF_MAX_FRAMES);
    for (int k = 0; k < nrules && nw; k++)
        if ((rules[k].kind < 0 || rules[k].kind == (int)r->kind) &&
            python_matches(&rules[k], words, nw))
            return 1;
    uint64_t pcs[EF_MAX_FRAMES];
    uint32_t n = ef_depot_copy(r->stacks[ef_kinds[r->kind].offending], pcs, EF_MAX_FRAMES);
    struct ef_symctx *c = n ? ef_sym_begin() : NULL;
    int hit = 0;
    for (int k = 0; k < nrules && !hit; k++) {
        const struct rule *ru = &rules[k];
        if (ru->kind >= 0 && ru->kind != (int)r->kind)
            continue;
        if (!n) { /* a leak found at start-up: the program is all we know */
            struct ef_sym sy;
            memset(&sy, 0, sizeof sy);
            ef_fmt(sy.module, sizeof sy.module, "%s", r->program);
            hit = frame_matches(ru, &sy);
            continue;
        }
        for (uint32_t i = 0; i < n && !hit; i++) {
            struct ef_sym sy;
            ef_sym_lookup(c, (uintptr_t)pcs[i] - 1, &sy);
            hit = frame_matches(ru, &sy);
        }
    }
    ef_sym_end(c);
    return hit;
}
