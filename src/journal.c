/*
 * journal.c - EPOLLFORK_LOG=journal: each record as one native journal entry.
 *
 * Servers run under systemd (`epollfork --systemd UNIT` writes
 * EPOLLFORK_LOG=journal into their drop-in), and there a report is most
 * useful as one journal entry whose fields a scraper can ask for without
 * parsing text: `journalctl EPOLLFORK_KIND=shared-epoll-ctl -o json`.  The
 * fields are the record's one field sequence (record.c), each named
 * EPOLLFORK_<KEY> (so journald and the JSON lines cannot disagree: a null
 * there is an absent field here), with the journal's own MESSAGE (the WARNING
 * line), PRIORITY (4 for a report, 5 for a notice, 6 for TOTALS),
 * SYSLOG_IDENTIFIER, SYSLOG_PID and CODE_FUNC (the offending frame's
 * function), the whole JSON record (EPOLLFORK_JSON) and the text report with
 * its stacks (EPOLLFORK_STACKS), whatever EPOLLFORK_FORMAT says.
 *
 * The protocol is journald's native one (https://systemd.io/
 * JOURNAL_NATIVE_PROTOCOL/): one datagram per entry on
 * /run/systemd/journal/socket, KEY=value lines, and a value that holds a
 * newline written as KEY, '\n', its length (64 bits, little-endian), the
 * bytes, '\n'.  An entry larger than a datagram may be (the send fails with
 * EMSGSIZE: 300,000 bytes did, with the default 212,992-byte send buffer)
 * goes in a sealed memfd, passed with SCM_RIGHTS in an empty datagram.  No
 * libsystemd: the protocol is these few lines, and the library would join the
 * program's symbol scope.
 *
 * Never blocking: the socket is the shim's own (SOCK_NONBLOCK, close-on-exec,
 * moved high and hidden from the program as log.c's sinks are, and checked to
 * be the same socket before each send), every send is MSG_DONTWAIT, and a
 * journal that is absent or full (EAGAIN) loses nothing: the record goes to
 * the stderr copy in the configured format, after one notice naming
 * EPOLLFORK_LOG (log.c says it).  A journald that restarted is reconnected
 * once, as log.c does for syslog.  All of it is tested against a real
 * systemd-journald (tests/test_journal.py).
 *
 * Layers: above record.c (it renders the field sequence), below report.c
 * (whose emit and TOTALS call it).  log.c, below, reaches it only through
 * the hooks this file joins it with (ef_log_join, called from init.c): the
 * connection at set-up, the notices, and the program wanting the socket's
 * fd number.
 */
#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ef.h"

#define DEFAULT_SOCKET "/run/systemd/journal/socket"

static struct {
    int fd;                 /* -1 not connected */
    dev_t dev;
    ino_t ino;              /* what fd must still be before we send on it */
} sock = {-1, 0, 0};

/* "journal" or "journal:/path"; NULL for any other EPOLLFORK_LOG. */
EF_INIT_TEXT static const char *socket_path(void)
{
    if (ef_streq(ef_opt.log, "journal"))
        return DEFAULT_SOCKET;
    if (ef_strprefix(ef_opt.log, "journal:"))
        return ef_opt.log + 8;
    return NULL;
}

EF_INIT_TEXT int ef_journal_on(void)
{
    return socket_path() != NULL;
}

/* ------------------------------------------------------------ the socket */

static int still_ours(void)
{
    struct stat st;
    return sock.fd >= 0 && ef_fstat(sock.fd, &st) == 0 && st.st_dev == sock.dev &&
           st.st_ino == sock.ino;
}

/* Let the socket go.  Closed only if the number still holds our socket: if
 * something replaced it behind our back (a raw dup2 we never saw), the number
 * is the program's now, and closing it would take the program's file away
 * (with journal_relocate() switched off, tests/test_journal.py's
 * program-takes-the-socket-number saw exactly that: "damaged: 1"). */
static void drop(void)
{
    if (sock.fd < 0)
        return;
    int ours = still_ours();
    ef_fd_own(sock.fd, 0);
    if (ours)
        ef_sys_close(sock.fd);
    sock.fd = -1;
}

/* why: what went wrong, for the notice; 0 connected. */
static int connect_journal(char *why, size_t whylen)
{
    const char *path = socket_path();
    drop();
    int fd = ef_real.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        ef_fmt(why, whylen, "cannot create a socket (%s)", strerror(errno));
        return -1;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ef_fmt(sa.sun_path, sizeof sa.sun_path, "%s", path); /* options.c checked the length */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        ef_fmt(why, whylen, "cannot connect to %s (%s)", path, strerror(errno));
        ef_sys_close(fd);
        return -1;
    }
    int hi = ef_fd_take_high(fd);
    struct stat st;
    if (hi < 0 || ef_fstat(hi, &st) != 0) {
        ef_fmt(why, whylen, "cannot keep a socket to %s", path);
        if (hi >= 0) {
            ef_fd_own(hi, 0);
            ef_sys_close(hi);
        } else {
            ef_sys_close(fd);
        }
        return -1;
    }
    sock.fd = hi;
    sock.dev = st.st_dev;
    sock.ino = st.st_ino;
    return 0;
}

/* The entry in a sealed memfd, passed in an empty datagram: journald reads
 * it from there (the native protocol's way for entries of any size). */
static int send_memfd(const char *buf, size_t len, char *why, size_t whylen)
{
    int m = (int)ef_sys6(SYS_memfd_create, (long)"epollfork-journal",
                         MFD_CLOEXEC | MFD_ALLOW_SEALING, 0, 0, 0, 0);
    if (m < 0) {
        ef_fmt(why, whylen, "an entry of %zu bytes needs a memfd, and memfd_create failed (%s)",
               len, strerror(errno));
        return -1;
    }
    /* Owned and high while it lives, so that a program thread closing or
     * reusing low numbers can never make us write the entry into its file. */
    int hi = ef_fd_take_high(m);
    if (hi >= 0)
        m = hi;
    int ok = 1;
    for (size_t off = 0; ok && off < len;) {
        ssize_t w = write(m, buf + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        ok = w > 0;
        off += ok ? (size_t)w : 0;
    }
    ok = ok && ef_real.fcntl(m, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
                                                 F_SEAL_SEAL) == 0;
    if (ok) {
        union {
            struct cmsghdr h;
            char space[CMSG_SPACE(sizeof(int))];
        } ctl;
        memset(&ctl, 0, sizeof ctl);
        struct msghdr mh = {.msg_control = &ctl, .msg_controllen = sizeof ctl};
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &m, sizeof(int));
        ok = sendmsg(sock.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) >= 0;
        if (!ok)
            ef_fmt(why, whylen, "the journal did not take an entry of %zu bytes (%s)", len,
                   strerror(errno));
    } else {
        ef_fmt(why, whylen, "cannot fill a memfd for an entry of %zu bytes (%s)", len,
               strerror(errno));
    }
    if (hi >= 0)
        ef_fd_own(m, 0);
    ef_sys_close(m);
    return ok ? 0 : -1;
}

/* Send one entry; 0 when the journal took it.  On failure the reason is
 * handed to log.c, which says it once before the first record it writes to
 * stderr instead. */
static int send_entry(const char *buf, size_t len)
{
    char why[300];
    ef_fmt(why, sizeof why, "not connected");
    for (int attempt = 0; attempt < 2; attempt++) {
        if (still_ours()) {
            ssize_t w = send(sock.fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w == (ssize_t)len)
                return 0;
            if (w < 0 && (errno == EMSGSIZE || errno == ENOBUFS)) {
                if (send_memfd(buf, len, why, sizeof why) == 0)
                    return 0;
                break;
            }
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
                ef_fmt(why, sizeof why, "the journal is not keeping up (%s)", strerror(errno));
                break; /* full: waiting is what we must never do */
            }
            ef_fmt(why, sizeof why, "sending to %s failed (%s)", socket_path(),
                   w < 0 ? strerror(errno) : "a short send");
        }
        /* journald restarted (ECONNREFUSED), or the socket was never
         * connected or was taken from us: connect once more */
        if (attempt == 0 && connect_journal(why, sizeof why) != 0)
            break;
    }
    char line[500];
    ef_fmt(line, sizeof line, "epollfork: EPOLLFORK_LOG=%s: %s; reporting to stderr", ef_opt.log,
           why);
    ef_log_fallback(line);
    return -1;
}

/* ------------------------------------------------------------ entries */

/* An entry being built in a buffer the caller owns; fields past its end are
 * dropped (the caller sizes it for what it puts in). */
struct entry {
    char *p;
    size_t len, cap;
};

static void put(struct entry *e, const void *s, size_t n)
{
    if (n > e->cap - e->len)
        return;
    memcpy(e->p + e->len, s, n);
    e->len += n;
}

/* NAME=value, or the binary form when the value holds a newline.  A field
 * that does not fit whole is not sent at all: journald must never get half
 * a length-prefixed value. */
static void field(struct entry *e, const char *name, const char *v, size_t n)
{
    size_t nl = strlen(name);
    if (nl + n + 10 > e->cap - e->len)
        return;
    put(e, name, nl);
    if (memchr(v, '\n', n)) {
        uint64_t le = htole64((uint64_t)n);
        put(e, "\n", 1);
        put(e, &le, sizeof le);
    } else {
        put(e, "=", 1);
    }
    put(e, v, n);
    put(e, "\n", 1);
}

static void field_s(struct entry *e, const char *name, const char *v)
{
    field(e, name, v, strlen(v));
}

static void field_i(struct entry *e, const char *name, long long v)
{
    char num[32];
    field(e, name, num, ef_fmt(num, sizeof num, "%lld", v));
}

/* EPOLLFORK_<KEY uppercased>: the JSON key, in the journal's field-name
 * alphabet (A-Z, 0-9, _). */
static void record_field(struct entry *e, const struct ef_field *f)
{
    char name[80] = "EPOLLFORK_", num[32];
    size_t k = 10;
    for (const char *s = f->key; *s && k + 1 < sizeof name; s++)
        name[k++] = (*s >= 'a' && *s <= 'z') ? (char)(*s - 'a' + 'A')
                    : ((*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')) ? *s : '_';
    name[k] = 0;
    switch (f->type) {
    case EF_F_INT:
        field_i(e, name, f->i);
        break;
    case EF_F_HEX:
        field(e, name, num, ef_fmt(num, sizeof num, "0x%llx", (unsigned long long)f->i));
        break;
    case EF_F_STR:
        if (f->s) /* unknown: JSON says null, the journal has no such field */
            field_s(e, name, f->s);
        break;
    case EF_F_BOOL:
        field_s(e, name, f->i ? "true" : "false");
        break;
    }
}

/* The fields every entry of ours starts with. */
static void head(struct entry *e, const char *message, int priority, const char *kind)
{
    field_s(e, "MESSAGE", message);
    field_i(e, "PRIORITY", priority);
    field_s(e, "SYSLOG_IDENTIFIER", "epollfork");
    field_i(e, "SYSLOG_PID", ef_sys_getpid());
    field_s(e, "EPOLLFORK_KIND", kind);
    field_s(e, "EPOLLFORK_VERSION", EF_VERSION);
}

static size_t trim(const char *s, size_t n)
{
    while (n && s[n - 1] == '\n')
        n--;
    return n;
}

int ef_journal_report(const struct ef_report *r, const char *text, size_t tlen, const char *json,
                      size_t jlen)
{
    if ((unsigned)r->kind >= EF_NKINDS)
        return -1;
    const struct ef_kind_desc *k = &ef_kinds[r->kind];
    struct ef_symctx *c = ef_sym_begin();
    struct ef_fields fs;
    ef_report_fields(r, c, &fs);
    ef_sym_end(c);
    /* MESSAGE: the first WARNING line, without the ==PID== prefix and the
     * "epollfork:" that SYSLOG_IDENTIFIER says. */
    char hl[4096];
    struct ef_out o = {hl, 0, sizeof hl};
    hl[0] = 0;
    k->headline(r, &o, "");
    char *msg = hl, *nl = strchr(hl, '\n');
    if (nl)
        *nl = 0;
    while (*msg == ' ')
        msg++;
    if (!strncmp(msg, "epollfork: ", 11))
        msg += 11;
    /* CODE_FUNC: the function of the offending frame, as `site` names it
     * ("function(module+0xoffset)"; "??" when the frame has no name). */
    char func[256] = "";
    if (fs.site[0] && strncmp(fs.site, "?\?(", 3) != 0) {
        const char *paren = strchr(fs.site, '(');
        ef_fmt(func, sizeof func, "%.*s", (int)(paren ? paren - fs.site : 0), fs.site);
    }
    size_t cap = tlen + jlen + 64 * 1024;
    cap = (cap + 4095) & ~(size_t)4095;
    char *buf = ef_real.mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (buf == MAP_FAILED) {
        ef_log_fallback("epollfork: EPOLLFORK_LOG=journal: no memory for an entry; reporting "
                        "to stderr");
        return -1;
    }
    struct entry e = {buf, 0, cap};
    head(&e, msg, 4, k->name);
    if (func[0])
        field_s(&e, "CODE_FUNC", func);
    for (unsigned i = 0; i < fs.n; i++)
        record_field(&e, &fs.f[i]);
    field(&e, "EPOLLFORK_JSON", json, trim(json, jlen));
    field(&e, "EPOLLFORK_STACKS", text, trim(text, tlen));
    int rc = send_entry(buf, e.len);
    ef_real.munmap(buf, cap);
    return rc;
}

/* A notice from log.c (a capacity limit, the abort that follows a report):
 * PRIORITY 5, its words as MESSAGE, and the fields of its JSON record. */
static int journal_notice(const char *msg)
{
    char buf[4096], ts[48];
    struct entry e = {buf, 0, sizeof buf};
    ef_rfc3339(ef_realtime_ns(), ts, sizeof ts);
    head(&e, !strncmp(msg, "epollfork: ", 11) ? msg + 11 : msg, 5, "notice");
    field_s(&e, "EPOLLFORK_TIME", ts);
    field_i(&e, "EPOLLFORK_PID", ef_sys_getpid());
    field_s(&e, "EPOLLFORK_MESSAGE", msg);
    return send_entry(buf, e.len);
}

int ef_journal_totals(unsigned long reports, unsigned long suppressed, unsigned long deduped)
{
    char buf[2048], ts[48], msg[160];
    struct entry e = {buf, 0, sizeof buf};
    ef_rfc3339(ef_realtime_ns(), ts, sizeof ts);
    ef_fmt(msg, sizeof msg, "TOTALS reports=%lu suppressed=%lu deduped=%lu", reports, suppressed,
           deduped);
    head(&e, msg, 6, "totals");
    field_s(&e, "EPOLLFORK_TIME", ts);
    field_i(&e, "EPOLLFORK_PID", ef_sys_getpid());
    field_i(&e, "EPOLLFORK_REPORTS", (long long)reports);
    field_i(&e, "EPOLLFORK_SUPPRESSED", (long long)suppressed);
    field_i(&e, "EPOLLFORK_DEDUPED", (long long)deduped);
    return send_entry(buf, e.len);
}

/* ------------------------------------------------------------ hooks for log.c */

/* At the first epoll use, as the other sinks: a program that chroots or
 * drops privileges later still reaches the journal.  A failure here is
 * said only if a record ever has to go to stderr instead. */
static void journal_setup(void)
{
    char why[300];
    connect_journal(why, sizeof why);
}

/* The program wants our socket's number (dup2 onto it): move ours above it,
 * as log.c moves its sinks; if that fails, let it go and connect again at
 * the next entry. */
static int journal_relocate(int fd)
{
    if (sock.fd < 0 || fd != sock.fd)
        return -1;
    sock.fd = ef_fd_copy_away(fd);
    ef_sys_close(fd);
    return 0;
}

static const struct ef_log_upper journal_hooks = {journal_setup, journal_notice,
                                                  journal_relocate};

EF_INIT_TEXT void ef_journal_init(void)
{
    if (ef_journal_on())
        ef_log_join(&journal_hooks);
}
