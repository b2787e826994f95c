/*
 * repair.c MODE - what the program itself sees, bare and under
 * EPOLLFORK_REPAIR=1 (tests/test_repair.py compares the two).  Each mode
 * prints its outcome; none fails on a "wrong" one, so the same binary shows
 * the bug bare and its repair under the shim.
 *
 * shared-epoll-ctl (the parent's list must stay as the parent made it):
 *   child-add     the child adds q[0] to the shared list and exits; data then
 *                 arrives on q: bare, the parent gets an event for an fd it
 *                 never added
 *   child-mod     the child MODs p[0] to EPOLLOUT|EPOLLONESHOT: bare, the
 *                 parent never hears of its pipe's data again
 *   siblings      two children: the first adds q[0]; the second then adds
 *                 q[0] too (bare: EEXIST, Tornado's restart loop)
 *   grandchild    a grandchild deletes p[0]; the creator then waits for data
 *   under-waiter  the child blocks in epoll_wait; the parent adds q[0] and
 *                 writes to it: bare, the child wakes for the parent's fd
 *   threads       the child starts 8 threads that each add a pipe of their own
 *                 at the same moment (one copy, every add lands in it)
 *   flags         entries of every flag kind (level, EPOLLET, armed and
 *                 disarmed EPOLLONESHOT, EPOLLEXCLUSIVE, EPOLLWAKEUP,
 *                 EPOLLRDHUP, a nested epoll) before and after the child's
 *                 change, in the child and in the parent; then whether the
 *                 disarmed ones still say nothing
 * stale-registration (ghosts):
 *   dup2back[-shared]  close a registered fd while a dup lives, dup2 the dup
 *                 back onto the number and ADD it again (libevent's
 *                 test_dup_fd): bare, EEXIST; -shared: a child holds the
 *                 instance too
 *   reuse         close a registered socket while a child holds a copy; a new
 *                 socket gets the number and is added; data then arrives on
 *                 the old one: bare, the parent gets an event meant for it
 *   allowed       EPOLLFORK_ALLOW_SHARED(ep), then the child deletes p[0]:
 *                 shared on purpose, so the change reaches the parent's list
 *   note-fork     the parent's first change after a fork fails (a MOD of an fd
 *                 it never added: its copy is made, nothing recorded yet);
 *                 it forks a child, closes its copy, and the child, now its
 *                 only holder, deletes p[0] from it; the first child, which
 *                 kept the original, then uses it: nothing to report
 *   fdlimit       the child uses up its fd limit, then deletes p[0]: no copy
 *                 can be made (the report says why), the DEL goes through
 * epoll-fd-exec-leak (the exec'd program counts the epoll fds it holds):
 *   exec, spawn, system   an epoll fd without close-on-exec, then execv,
 *                 posix_spawn or system() of this program in `probe` mode
 */
#include "scen.h"
#include "epollfork.h"
#include <pthread.h>
#include <sys/resource.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>

extern char **environ;
static int p[2], q[2], ep;
static char self[4096];

static void events_of(const char *who, int timeout)
{
    struct epoll_event out[8];
    int n = epoll_wait(ep, out, 8, timeout);
    int np = 0, nq = 0;
    for (int i = 0; i < n; i++) {
        np += out[i].data.fd == p[0];
        nq += out[i].data.fd == q[0];
    }
    printf("%s: %d events, p=%d q=%d\n", who, n, np, nq);
}

/* Every entry of epoll fd e, as the kernel shows it, one line each. */
static void entries(const char *who, int e)
{
    char path[64], buf[65536];
    snprintf(path, sizeof path, "/proc/self/fdinfo/%d", e);
    int fd = open(path, O_RDONLY);
    CHECK(fd >= 0);
    ssize_t n = 0, k;
    while ((k = read(fd, buf + n, sizeof buf - 1 - (size_t)n)) > 0)
        n += k;
    close(fd);
    buf[n] = 0;
    for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
        int tfd;
        unsigned events;
        unsigned long long data, ino;
        if (sscanf(l, "tfd: %d events: %x data: %llx pos:%*u ino:%llx", &tfd, &events, &data,
                   &ino) == 4)
            printf("%s entry tfd=%d events=%x data=%llx ino=%llx\n", who, tfd, events, data, ino);
    }
}

static int epoll_fds_held(void)
{
    int n = 0;
    char path[64], link[64];
    for (int fd = 0; fd < 1024; fd++) {
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
        ssize_t k = readlink(path, link, sizeof link - 1);
        if (k > 0) {
            link[k] = 0;
            n += !strcmp(link, "anon_inode:[eventpoll]");
        }
    }
    return n;
}

static pid_t child(void (*fn)(void))
{
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        fn();
        fflush(stdout);
        _exit(0);
    }
    return c;
}

static void child_adds(void)
{
    add_fd(ep, q[0], EPOLLIN);
}

static void child_mods(void)
{
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLONESHOT, .data.fd = p[0]};
    CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, p[0], &ev) == 0);
}

static void second_sibling_adds(void)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev);
    printf("second sibling ADD: %d errno=%d\n", r, r ? errno : 0);
}

static void grandchild_deletes(void)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
}

static void child_deletes_at_fd_limit(void)
{
    struct rlimit rl = {64, 64};
    CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
    while (dup(0) >= 0)
        ;
    CHECK(errno == EMFILE);
    grandchild_deletes();
}

static void middle_child(void)
{
    reap(child(grandchild_deletes));
}

static void child_waits(void)
{
    events_of("child", 1000);
}

/* ------------------------------------------------------------ threads */

static pthread_barrier_t go;

static void *adder(void *arg)
{
    int *fds = arg;
    CHECK(pipe(fds) == 0);
    pthread_barrier_wait(&go);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fds[0]};
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, fds[0], &ev);
    if (r != 0)
        printf("thread ADD failed: errno=%d\n", errno);
    return NULL;
}

static void child_threads(void)
{
    enum { N = 8 };
    pthread_t t[N];
    int fds[N][2];
    pthread_barrier_init(&go, NULL, N);
    for (int i = 0; i < N; i++)
        CHECK(pthread_create(&t[i], NULL, adder, fds[i]) == 0);
    for (int i = 0; i < N; i++)
        pthread_join(t[i], NULL);
    entries("child", ep);
}

/* -------------------------------------------------------------- flags */

static int xs[2], inner, lt[2], et[2], os[2], dis[2], idle[2], rd[2];
static int ctl_pipe[2], done[2];

static void add_data(int fd, unsigned events, unsigned long long data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
}

static void flags_child(void)
{
    char b;
    close(ctl_pipe[1]);
    entries("child-before", ep);
    add_data(q[0], EPOLLIN, 0x7777); /* the change: a private copy first */
    entries("child-after", ep);
    /* the disarmed entries say nothing, even with data now waiting */
    CHECK(write(dis[1], "d", 1) == 1);
    CHECK(write(idle[1], "i", 1) == 1);
    struct epoll_event out[16];
    int n = epoll_wait(ep, out, 16, 0);
    int loud = 0;
    for (int i = 0; i < n; i++)
        loud += out[i].data.u64 == 0x4444 || out[i].data.u64 == 0x5555;
    printf("child: disarmed entries that reported: %d\n", loud);
    fflush(stdout);
    CHECK(write(done[1], "c", 1) == 1);
    CHECK(read(ctl_pipe[0], &b, 1) == 0); /* until the parent has looked */
}

static void flags(void)
{
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, xs) == 0);
    CHECK(pipe(lt) == 0 && pipe(et) == 0 && pipe(os) == 0 && pipe(dis) == 0 &&
          pipe(idle) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, rd) == 0);
    inner = epoll_create1(EPOLL_CLOEXEC);
    CHECK(inner >= 0);
    struct epoll_event iev = {.events = EPOLLIN, .data.u64 = 1};
    CHECK(epoll_ctl(inner, EPOLL_CTL_ADD, lt[0], &iev) == 0);
    add_data(lt[0], EPOLLIN, 0x1111);
    add_data(et[0], EPOLLIN | EPOLLET, 0x2222);
    add_data(os[0], EPOLLIN | EPOLLONESHOT, 0x3333);
    add_data(dis[0], EPOLLIN | EPOLLONESHOT | EPOLLET, 0x4444);
    add_data(idle[0], EPOLLIN | EPOLLONESHOT, 0x5555);
    add_data(xs[0], EPOLLIN | EPOLLEXCLUSIVE, 0x6666);
    add_data(rd[0], EPOLLIN | EPOLLRDHUP | EPOLLWAKEUP, 0x8888);
    add_data(inner, EPOLLIN, 0x9999);
    /* disarm two ONESHOT entries: one whose file is readable at the copy
     * (its data was not read), one whose file is idle by then */
    CHECK(write(dis[1], "x", 1) == 1 && write(idle[1], "y", 1) == 1);
    struct epoll_event out[16];
    int n = epoll_wait(ep, out, 16, 0);
    CHECK(n == 2);
    char b;
    CHECK(read(idle[0], &b, 1) == 1);
    CHECK(pipe(ctl_pipe) == 0 && pipe(done) == 0);
    entries("parent-before", ep);
    pid_t c = child(flags_child);
    close(ctl_pipe[0]);
    CHECK(read(done[0], &b, 1) == 1); /* the child has made its change */
    entries("parent-after", ep);
    close(ctl_pipe[1]);
    reap(c);
    epoll_wait(ep, out, 16, 0); /* a use: the child's change is reported */
}

/* -------------------------------------------------------------- ghosts */

static void holder(void)
{
    char b;
    close(ctl_pipe[1]);
    CHECK(read(ctl_pipe[0], &b, 1) == 0);
}

static void dup2back(int shared)
{
    pid_t c = -1;
    if (shared) {
        CHECK(pipe(ctl_pipe) == 0);
        c = child(holder);
        close(ctl_pipe[0]);
    }
    int d = dup(p[0]);
    CHECK(d > p[0]);
    CHECK(close(p[0]) == 0); /* without EPOLL_CTL_DEL: the dup keeps the entry alive */
    CHECK(dup2(d, p[0]) == p[0]);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    printf("ADD after dup2 back: %d errno=%d\n", r, r ? errno : 0);
    CHECK(write(p[1], "x", 1) == 1);
    events_of("parent", 100);
    if (shared) {
        close(ctl_pipe[1]);
        reap(c);
    }
}

static void reuse(void)
{
    int old[2], fresh[2];
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, old) == 0);
    add_data(old[0], EPOLLIN, 0xdead);
    CHECK(pipe(ctl_pipe) == 0);
    pid_t c = child(holder);
    close(ctl_pipe[0]);
    int number = old[0];
    CHECK(close(old[0]) == 0); /* without EPOLL_CTL_DEL, while the child holds a copy */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, fresh) == 0);
    if (fresh[0] != number)
        CHECK(dup2(fresh[0], number) == number && close(fresh[0]) == 0);
    add_data(number, EPOLLIN, 0xbeef);
    CHECK(write(old[1], "x", 1) == 1); /* for the old socket, which the child holds */
    struct epoll_event out[8];
    int n = epoll_wait(ep, out, 8, 100);
    int ghost = 0, mine = 0;
    for (int i = 0; i < n; i++) {
        ghost += out[i].data.u64 == 0xdead;
        mine += out[i].data.u64 == 0xbeef;
    }
    printf("reused number %d: events for the old socket %d, for the new one %d\n", number,
           ghost, mine);
    close(ctl_pipe[1]);
    reap(c);
}

/* ---------------------------------------------------------- exec leaks */

static void exec_leak(const char *how)
{
    int leaky = epoll_create(4); /* no close-on-exec */
    CHECK(leaky >= 0);
    add_fd(leaky, p[0], EPOLLIN);
    char *args[] = {self, "probe", NULL};
    fflush(stdout);
    if (!strcmp(how, "exec")) {
        pid_t c = fork();
        if (c == 0) {
            execv(self, args);
            _exit(98);
        }
        reap(c);
    } else if (!strcmp(how, "spawn")) {
        pid_t c;
        CHECK(posix_spawn(&c, self, NULL, NULL, args, environ) == 0);
        reap(c);
    } else {
        char cmd[4200];
        snprintf(cmd, sizeof cmd, "'%s' probe", self);
        CHECK(system(cmd) == 0);
    }
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "child-add";
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN);
    if (!strcmp(mode, "probe")) {
        printf("probe: the exec'd program holds %d epoll fds\n", epoll_fds_held());
        return 0;
    }
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(k > 0);
    self[k] = 0;
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    CHECK(ep >= 0);
    if (strcmp(mode, "flags"))
        add_fd(ep, p[0], EPOLLIN);
    if (!strcmp(mode, "child-add") || !strcmp(mode, "child-mod")) {
        reap(child(!strcmp(mode, "child-add") ? child_adds : child_mods));
        CHECK(write(p[1], "p", 1) == 1 && write(q[1], "q", 1) == 1);
        events_of("parent", 100);
    } else if (!strcmp(mode, "siblings")) {
        reap(child(child_adds));
        reap(child(second_sibling_adds));
    } else if (!strcmp(mode, "grandchild")) {
        reap(child(middle_child));
        CHECK(write(p[1], "p", 1) == 1);
        events_of("parent", 100);
    } else if (!strcmp(mode, "under-waiter")) {
        pid_t c = child(child_waits);
        CHECK(wait_blocked_in_epoll(c));
        add_fd(ep, q[0], EPOLLIN);
        CHECK(write(q[1], "q", 1) == 1);
        reap(c);
    } else if (!strcmp(mode, "allowed") || !strcmp(mode, "fdlimit")) {
        if (!strcmp(mode, "allowed"))
            EPOLLFORK_ALLOW_SHARED(ep);
        reap(child(!strcmp(mode, "allowed") ? grandchild_deletes : child_deletes_at_fd_limit));
        CHECK(write(p[1], "p", 1) == 1);
        events_of("parent", 100);
    } else if (!strcmp(mode, "note-fork")) {
        int hgo[2], xgo[2];
        char b;
        CHECK(pipe(hgo) == 0);
        pid_t h = fork(); /* holds the original; uses it at the end */
        CHECK(h >= 0);
        if (h == 0) {
            close(hgo[1]);
            CHECK(read(hgo[0], &b, 1) == 0);
            events_of("holder", 0);
            _exit(0);
        }
        close(hgo[0]);
        CHECK(pipe(xgo) == 0);
        struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
        CHECK(epoll_ctl(ep, EPOLL_CTL_MOD, q[0], &ev) == -1 && errno == ENOENT);
        pid_t x = fork(); /* gets the parent's copy, alone once the parent closed it */
        CHECK(x >= 0);
        if (x == 0) {
            close(xgo[1]);
            CHECK(read(xgo[0], &b, 1) == 0);
            CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
            _exit(0);
        }
        close(xgo[0]);
        CHECK(close(ep) == 0);
        close(xgo[1]);
        reap(x);
        close(hgo[1]);
        reap(h);
    } else if (!strcmp(mode, "threads")) {
        reap(child(child_threads));
        entries("parent", ep);
    } else if (!strcmp(mode, "flags")) {
        flags();
    } else if (!strcmp(mode, "dup2back") || !strcmp(mode, "dup2back-shared")) {
        dup2back(!strcmp(mode, "dup2back-shared"));
    } else if (!strcmp(mode, "reuse")) {
        reuse();
    } else if (!strcmp(mode, "exec") || !strcmp(mode, "spawn") || !strcmp(mode, "system")) {
        exec_leak(mode);
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    return 0;
}
