/*
 * log.c - the sink: where reports go, through fds that only the shim owns.
 *
 * The program may close fd 2, dup2 a socket over it, or close every fd from 3
 * up, and reports must still reach the original sink without one byte landing
 * in the program's own fds.  So the sink is the shim's own fd: a close-on-exec
 * copy of the original stderr (and the opened log file), moved to a high number
 * below 1024 and marked in the fd table, where the close/dup2/close_range
 * wrappers hide it from the program (a close of it fails with EBADF, as it would
 * without the shim; a dup2 onto it moves ours away first).  Before each write
 * the fd is checked against the identity we saved, so that if something closed
 * it behind our back we drop the report rather than write into a stranger.
 *
 * The stderr copy is taken when the process first uses epoll, or earlier, just
 * before the program replaces fd 2 through a wrapper we see (close, dup2,
 * dup3, close_range, closefrom): a program that points fd 2 at a socket
 * before its first epoll call must not get reports in it
 * (tests/scenarios/sink_fds.c sock-before), and a process that never uses
 * epoll must not pay for the copy (the fd table grows to 1024 slots: ~18 us
 * at start-up, bench/RESULTS.md).  A replacement we cannot see (freopen(),
 * raw syscalls) before the first epoll call makes the copy point at the new
 * fd 2: those reports go where the program's own stderr goes.
 *
 * Each report is one write() to an O_APPEND file, so processes sharing a log do
 * not interleave lines.  With '%p' each process opens its own file on its first
 * report; if it cannot (it dropped privileges, the directory is gone) it reports
 * through the stderr copy and says once why.
 *
 * EPOLLFORK_LOG=journal is journal.c's, a file above this one: it joins through
 * ef_log_join() (set-up, notices, its fd's number) and, when the journal does
 * not take a record, hands it back to the stderr copy here with its reason.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "ef.h"

struct sink {
    int fd;
    dev_t dev;
    ino_t ino;
    int failed;             /* a write failed: said once, and not used again */
    char path[256];         /* for the notice */
};

static struct sink err_sink = {.fd = -1};   /* copy of the original stderr */
static struct sink file_sink = {.fd = -1};  /* EPOLLFORK_LOG file shared by the tree */
static struct sink own_sink = {.fd = -1};   /* per-process '%p' file */
static struct sink sys_sink = {.fd = -1};   /* syslog datagram socket */
/* The syslog socket's path and the reason a sink could not be used: the
 * zone's (zone.c), made when a sink is set up, or a few bytes of our own when
 * it cannot be made (RLIMIT_AS): the messages are cut, not lost. */
struct log_text {
    char sys_path[200];
    char open_error[600];
};
_Static_assert(sizeof(struct log_text) <= EF_Z_BYTES(LOG), "the texts fit");
EF_HOT static struct log_text *logt;
static struct log_text *log_text(void)
{
    if (!logt)
        logt = ef_zone(EF_Z_LOG);
    return logt;
}
EF_HOT static pid_t own_pid;
enum own_state { OWN_UNTRIED = 0, OWN_OPENING, OWN_OPEN, OWN_FAILED };
EF_HOT static _Atomic int own_state;               /* enum own_state: the per-process file */
EF_HOT static _Atomic int setup_done;
EF_HOT static _Atomic int err_copied;              /* the stderr copy was attempted */

static size_t render_notice(const char *msg, char *buf, size_t len, const char **one);
static int write_all(int fd, const char *buf, size_t len);

/* Once per process: the fd-limit notice (the registry may not exist yet). */
static int fd_limit_said_first_time(void)
{
    static _Atomic int said;
    return !atomic_exchange(&said, 1);
}

/* Keep a close-on-exec copy of fd at a high number as sink s. */
EF_INIT_TEXT static int keep(int fd, struct sink *s)
{
    int hi = ef_fd_copy_high(fd);
    if (hi < 0)
        return -1;
    struct stat st;
    if (ef_fstat(hi, &st) != 0) {
        ef_fd_own(hi, 0);
        ef_sys_close(hi);
        return -1;
    }
    s->fd = hi;
    s->dev = st.st_dev;
    s->ino = st.st_ino;
    return 0;
}

static int still_ours(const struct sink *s)
{
    struct stat st;
    return s->fd >= 0 && ef_fstat(s->fd, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino;
}

EF_INIT_TEXT static int has_pid_pattern(void)
{
    return strstr(ef_opt.log, "%p") != NULL;
}

EF_INIT_TEXT static int use_syslog(void)
{
    return !strcmp(ef_opt.log, "syslog") || !strncmp(ef_opt.log, "syslog:", 7);
}

/* journal.c's: it joins through ef_log_join(), and is not a file. */
EF_INIT_TEXT static int use_journal(void)
{
    return !strcmp(ef_opt.log, "journal") || !strncmp(ef_opt.log, "journal:", 8);
}

EF_INIT_TEXT static int use_file(void)
{
    return strcmp(ef_opt.log, "stderr") != 0 && !use_syslog() && !use_journal();
}

EF_HOT static const struct ef_log_upper *upper;    /* journal.c, when EPOLLFORK_LOG says so */

void ef_log_join(const struct ef_log_upper *u)
{
    upper = u;
}

/* Our own datagram socket to /dev/log (or syslog:PATH): openlog()/syslog()
 * would change the program's own syslog identity and connection. */
static int syslog_connect(char *why, size_t whylen)
{
    struct log_text *t = log_text();
    if (!t)
        return -1; /* no memory for even the path (RLIMIT_AS): stderr */
    char *sys_path = t->sys_path;
    ef_fmt(sys_path, sizeof t->sys_path, "%s", ef_opt.log[6] == ':' ? ef_opt.log + 7 : "/dev/log");
    int fd = ef_real.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: cannot create a syslog socket (%s); "
               "reporting to stderr",
               strerror(errno));
        return -1;
    }
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    ef_fmt(sa.sun_path, sizeof sa.sun_path, "%s", sys_path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: cannot connect to syslog at %s (%s); "
               "reporting to stderr",
               sys_path, strerror(errno));
        ef_sys_close(fd);
        return -1;
    }
    int r = keep(fd, &sys_sink);
    ef_sys_close(fd);
    return r;
}

static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 3164: <PRI>Mmm dd hh:mm:ss TAG[PID]: MSG (user.warning, UTC). */
static int syslog_send(const char *line, size_t len)
{
    char ts[48], msg[4096];
    ef_rfc3339(ef_realtime_ns(), ts, sizeof ts); /* YYYY-MM-DDThh:mm:ss.uuuuuuZ */
    int mon = (ts[5] - '0') * 10 + (ts[6] - '0');
    if (mon < 1 || mon > 12)
        mon = 1;
    size_t n = ef_fmt(msg, sizeof msg, "<%d>%s %c%c %.8s epollfork[%d]: %.*s", 8 | 4,
                      months[mon - 1], ts[8] == '0' ? ' ' : ts[8], ts[9], ts + 11,
                      (int)ef_sys_getpid(), (int)len, line);
    for (int attempt = 0; attempt < 2; attempt++) {
        /* Never block the program on a stalled syslog reader: a full queue
         * sends this record to the stderr sink instead. */
        if (still_ours(&sys_sink)) {
            ssize_t w = send(sys_sink.fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (w == (ssize_t)n)
                return 0;
            if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
                return -1;
        }
        if (attempt == 0) { /* the daemon restarted: reconnect once */
            char why[300];
            if (sys_sink.fd >= 0) {
                /* close the number only while it is still our socket: the
                 * program may have closed it behind our back and got the
                 * number again for one of its own */
                int ours = still_ours(&sys_sink);
                ef_fd_own(sys_sink.fd, 0);
                if (ours)
                    ef_sys_close(sys_sink.fd);
                sys_sink.fd = -1;
            }
            if (syslog_connect(why, sizeof why) != 0)
                return -1;
        }
    }
    return -1;
}

static void expand_path(char *out, size_t len, pid_t pid)
{
    size_t k = 0;
    for (const char *p = ef_opt.log; *p && k + 1 < len; p++) {
        if (p[0] == '%' && p[1] == 'p') {
            k += ef_fmt(out + k, len - k, "%d", (int)pid);
            p++;
        } else {
            out[k++] = *p;
        }
    }
    out[k] = 0;
}

/* Is path's directory world-writable and sticky (/tmp)?  Anyone may have put
 * a symlink, a FIFO or a file of their own at the name there. */
static int in_shared_dir(const char *path)
{
    char dir[4200];
    const char *slash = strrchr(path, '/');
    if (!slash)
        ef_fmt(dir, sizeof dir, ".");
    else if (slash == path)
        ef_fmt(dir, sizeof dir, "/");
    else
        ef_fmt(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct stat st;
    return ef_stat(dir, &st) == 0 && (st.st_mode & S_ISVTX) && (st.st_mode & S_IWOTH);
}

/* Open a log file for appending.  Never blocks (O_NONBLOCK: a FIFO with no
 * reader fails at once).  Where the name may be an attacker's (this process
 * is root, or the file lives in a world-writable sticky directory), a
 * symlink is not followed and the file must be a regular file owned by us
 * or by root: a root program must not create /root/... through a link in
 * /tmp, block on a FIFO, or append to a file another user controls.  New
 * files are created 0600: reports carry addresses and paths. */
static int open_file(const char *path, struct sink *s, char *why, size_t whylen)
{
    uid_t me = geteuid();
    int careful = me == 0 || in_shared_dir(path);
    /* Read access too, where allowed: a record cut by a killed writer is
     * found by reading the file's last byte (end_cut_line). */
    int flags = O_CREAT | O_APPEND | O_CLOEXEC | O_NONBLOCK | (careful ? O_NOFOLLOW : 0);
    int fd = open(path, flags | O_RDWR, 0600);
    if (fd < 0 && errno == EACCES)
        fd = open(path, flags | O_WRONLY, 0600);
    if (fd < 0) {
        int e = errno;
        ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: cannot open log file '%s' (%s); reporting "
               "to stderr", path, e == ELOOP && careful ? "it is a symbolic link"
                                  : e == ENXIO     ? "a FIFO or device with no reader"
                                                   : strerror(e));
        return -1;
    }
    struct stat st;
    const char *bad = NULL;
    char owner[96];
    if (!careful && ef_fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && (flags & O_CREAT)) {
        /* The user's own FIFO or device: opened read-write it would make us
         * a reader of it; write-only, it fails at once when nobody reads. */
        ef_sys_close(fd);
        fd = open(path, (flags & ~O_CREAT) | O_WRONLY);
        if (fd < 0) {
            ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: cannot open log file '%s' (%s); "
                   "reporting to stderr", path,
                   errno == ENXIO ? "a FIFO or device with no reader" : strerror(errno));
            return -1;
        }
    }
    if (ef_fstat(fd, &st) != 0)
        bad = "it cannot be examined";
    else if (careful && !S_ISREG(st.st_mode))
        bad = "it is not a regular file";
    else if (careful && st.st_uid != me && st.st_uid != 0) {
        ef_fmt(owner, sizeof owner, "it belongs to uid %u, not to this process (uid %u) or root",
               (unsigned)st.st_uid, (unsigned)me);
        bad = owner;
    }
    if (bad) {
        ef_sys_close(fd);
        ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: refusing log file '%s' (%s); reporting to "
               "stderr", path, bad);
        return -1;
    }
    int r = keep(fd, s);
    ef_sys_close(fd);
    if (r != 0)
        ef_fmt(why, whylen, "epollfork: EPOLLFORK_LOG: cannot keep log file '%s' open (no fd "
               "number left); reporting to stderr", path);
    else
        ef_fmt(s->path, sizeof s->path, "%s", path);
    return r;
}

/* Copy fd 2 as the process started with it: called by ef_init() (declared
 * there), and again, harmlessly, by ef_log_setup().  If fd 2 was closed at
 * start there is no stderr sink: whatever the program opens at 2 later is its
 * own, not the original stderr. */
EF_INIT_TEXT void ef_log_copy_stderr(void)
{
    /* With a shared log file the copy is only a fallback: take it if the file
     * cannot be opened (ef_log_setup), and do not hold the program's stderr
     * open otherwise (a reader waiting for EOF on it would wait for us). */
    if (use_file() && !has_pid_pattern() && !atomic_load(&setup_done))
        return;
    /* A vfork child has an fd table of its own: a copy taken there would be
     * a number the parent does not hold, marked as ours in its memory. */
    if (ef_in_vfork_child())
        return;
    int expect = 0;
    if (!atomic_compare_exchange_strong(&err_copied, &expect, 1))
        return;
    struct stat st;
    ef_owner_pid = ef_sys_getpid();
    if (ef_fstat(2, &st) == 0 && keep(2, &err_sink) != 0 && fd_limit_said_first_time()) {
        /* No number left above the program's (RLIMIT_NOFILE is tiny): fd 2
         * is still the stderr the process started with at this moment, so
         * the one notice goes there; later reports have no sink. */
        char line[400], msg[300];
        const char *one;
        struct rlimit rl;
        getrlimit(RLIMIT_NOFILE, &rl);
        ef_fmt(msg, sizeof msg, "epollfork: RLIMIT_NOFILE is %llu: no fd number is left for the "
               "shim's own copy of stderr above the program's; reports from this process are "
               "lost", (unsigned long long)rl.rlim_cur);
        size_t n = render_notice(msg, line, sizeof line, &one);
        write_all(2, line, n);
    }
}

EF_INIT_TEXT void ef_log_setup(void)
{
    int expect = 0;
    if (!atomic_compare_exchange_strong(&setup_done, &expect, 1))
        return;
    struct log_text *t = use_file() || use_syslog() ? log_text() : NULL;
    char scratch[1];
    char *why = t ? t->open_error : scratch;
    size_t whylen = t ? sizeof t->open_error : sizeof scratch;
    if (use_file() && !has_pid_pattern()) {
        if (open_file(ef_opt.log, &file_sink, why, whylen) != 0)
            ef_log_copy_stderr();
    } else {
        ef_log_copy_stderr();
    }
    if (use_syslog())
        syslog_connect(why, whylen);
    if (upper)
        upper->setup();
}

void ef_log_after_fork_child(void)
{
    ef_owner_pid = ef_sys_getpid();
    /* A per-process file belongs to the parent: close our copy of it (the
     * number stays hidden until we do) and open our own on first report. */
    if (own_sink.fd >= 0) {
        ef_fd_own(own_sink.fd, 0);
        ef_sys_close(own_sink.fd);
        own_sink.fd = -1;
    }
    own_sink.failed = 0;
    atomic_store(&own_state, OWN_UNTRIED);
}

int ef_log_relocate(int fd)
{
    struct sink *all[] = {&err_sink, &file_sink, &own_sink, &sys_sink};
    /* A vfork child shares our memory until it execs: moving our fd there
     * would rewrite the parent's sink table and fd marks, and the parent
     * would lose its sink (tests/scenarios/spawners.c vfork-dup2high).  The
     * child's fd table is its own copy and ours are close-on-exec: let its
     * dup2 replace its copy, and change nothing here. */
    if (ef_in_vfork_child())
        return 0;
    int sink = 0;
    for (unsigned i = 0; i < 4; i++)
        sink |= all[i]->fd == fd;
    if (!sink)
        return upper ? upper->relocate(fd) : -1;
    int hi = ef_fd_copy_away(fd);
    for (unsigned i = 0; i < 4; i++)
        if (all[i]->fd == fd)
            all[i]->fd = hi;
    ef_sys_close(fd);
    return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) /* a FIFO, full: wait a little, never for ever */
            return -1;
        if (w <= 0)
            return -1;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

/* A record cut by a process killed in the middle of its write() leaves a
 * line without its newline: end it before appending ours, so that the next
 * record still starts a line of its own.  (Regular files only: a pipe or a
 * terminal has no last byte to look at.) */
static void end_cut_line(int fd)
{
    struct stat st;
    char last;
    if (ef_fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 &&
        pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n')
        write_all(fd, "\n", 1);
}

static const struct sink *choose(void)
{
    if (use_file() && has_pid_pattern()) {
        pid_t me = ef_sys_getpid();
        if (own_pid != me) {
            atomic_store(&own_state, OWN_UNTRIED);
            own_pid = me;
        }
        int st = OWN_UNTRIED;
        if (atomic_compare_exchange_strong(&own_state, &st, OWN_OPENING)) {
            char path[4200];
            expand_path(path, sizeof path, me);
            struct log_text *t = log_text();
            char scratch[1];
            int ok = open_file(path, &own_sink, t ? t->open_error : scratch,
                               t ? sizeof t->open_error : sizeof scratch) == 0;
            atomic_store(&own_state, ok ? OWN_OPEN : OWN_FAILED);
        }
        if (atomic_load(&own_state) == OWN_OPEN && !own_sink.failed && still_ours(&own_sink))
            return &own_sink;
    } else if (use_file() && !file_sink.failed && still_ours(&file_sink)) {
        return &file_sink;
    }
    if (still_ours(&err_sink))
        return &err_sink;
    return NULL;
}

/* A notice as a record of the configured format: `==PID== MSG` or a JSON
 * object of kind "notice".  Returns its length; *one is set to the one-line
 * form for syslog (without the "epollfork:" that syslog's tag says). */
static size_t render_notice(const char *msg, char *buf, size_t len, const char **one)
{
    struct ef_out o = {buf, 0, len};
    buf[0] = 0;
    int pid = (int)ef_sys_getpid();
    if (ef_opt.format == EF_FMT_JSON) {
        char ts[48];
        ef_rfc3339(ef_realtime_ns(), ts, sizeof ts);
        ef_put_json_head(&o, "notice");
        ef_putf(&o, ",\"time\":\"%s\",\"pid\":%d,\"message\":", ts, pid);
        ef_put_json_str(&o, msg);
        ef_puts(&o, "}");
        *one = buf;
    } else {
        ef_putf(&o, "==%d== ", pid);
        size_t start = o.len;
        ef_put_vis(&o, msg);
        *one = buf + start;
        if (!strncmp(*one, "epollfork: ", 11))
            *one += 11;
    }
    if (o.len + 1 < len) {
        buf[o.len++] = '\n';
        buf[o.len] = 0;
    }
    return o.len;
}

static _Atomic int open_error_said;

void ef_log_fallback(const char *why)
{
    struct log_text *t = log_text();
    if (t && !atomic_load(&open_error_said))
        ef_fmt(t->open_error, sizeof t->open_error, "%s", why);
}

static void say_open_error(const struct sink *s)
{
    int said = 0;
    if (!atomic_compare_exchange_strong(&open_error_said, &said, 1))
        return;
    char line[1600];
    const char *one;
    if (!logt)
        return;
    size_t n = render_notice(logt->open_error, line, sizeof line, &one);
    write_all(s->fd, line, n);
}

static void write_to_sink(const char *buf, size_t len)
{
    const struct sink *s = choose();
    if (s && logt && logt->open_error[0] && s == &err_sink)
        say_open_error(s);
    if (!s)
        return;
    if (s != &err_sink)
        end_cut_line(s->fd);
    if (write_all(s->fd, buf, len) == 0 || s == &err_sink)
        return;
    /* The log file refused the record (disk full, /dev/full, a FIFO nobody
     * drains): say so once, and this record and the later ones go to stderr. */
    struct sink *f = (struct sink *)s;
    f->failed = 1;
    if (log_text())
        ef_fmt(logt->open_error, sizeof logt->open_error, "epollfork: EPOLLFORK_LOG: writing to "
               "log file '%s' failed (%s); reporting to stderr from now on", f->path,
               strerror(errno));
    atomic_store(&open_error_said, 0);
    if (!atomic_load(&err_copied))
        ef_log_copy_stderr();
    if (still_ours(&err_sink)) {
        say_open_error(&err_sink);
        write_all(err_sink.fd, buf, len);
    }
}

void ef_log_record(const char *full, size_t len, const char *line, size_t linelen)
{
    if (use_syslog() && atomic_load(&setup_done) && syslog_send(line, linelen) == 0)
        return;
    write_to_sink(full, len);
}

void ef_log_notice(const char *fmt, ...)
{
    char msg[700], line[1600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *one;
    size_t n = render_notice(msg, line, sizeof line, &one);
    if (atomic_load(&setup_done) && upper && upper->notice(msg) == 0)
        return;
    if (atomic_load(&setup_done))
        ef_log_record(line, n, one, (size_t)(line + n - 1 - one));
    else
        write_all(2, line, n);
}
