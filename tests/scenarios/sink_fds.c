/*
 * sink_fds.c MODE - the program takes over fd 2 or the shim's own fd numbers;
 * a conflict follows (the child deletes the parent's pipe, the parent waits),
 * and its report must reach the original sink and nothing else.
 *
 *   sock-after   an epoll instance is used first (the shim's sink exists), then
 *                fd 2 becomes one end of a socketpair (dup2); after the
 *                conflict the program reads the other end (non-blocking) and
 *                prints "socket bytes: N": N must be 0, and the report must be
 *                on the original stderr (the test's pipe)
 *   sock-before  the same, but fd 2 becomes the socket before the program's
 *                first epoll call: "original stderr" is the fd 2 the process
 *                started with, not whatever fd 2 is when epoll is first used
 *   dup2-high    RLIMIT_NOFILE soft limit set to 1024 (the usual default), an
 *                epoll instance used, then dup2(pipe, fd) for every fd from 900
 *                to 1023: each must return fd, fcntl(fd, F_GETFD) must then
 *                succeed, and close(fd) must return 0
 *   dup2-high-nolimit  the same without touching the limit
 *   dup2-foreign  after an epoll instance is used, every fd >= 3 listed in
 *                /proc/self/fd that the program did not open (the shim's own)
 *                is dup2()ed over; prints "foreign: N" (N >= 1 under the shim,
 *                0 without it)
 *   dup2-foreign-keep  the same, but the program keeps what it put there: a
 *                pipe per number, holding 64 known bytes, read end dup2()ed
 *                onto the number.  Then the conflict, and EPOLL_CTL_ADDs from
 *                deep recursions whose frames span fresh stack pages (the shim
 *                unwinds each: libunwind validates addresses it has not seen
 *                through its pipe).  Each number must still be the program's
 *                read end holding exactly its 64 bytes.  Prints "damaged: N"
 *                (N must be 0).  (64 bytes, not 2: a read of an emptied
 *                blocking pipe by someone else would hang the program.)
 * Expected: rc 0 and exactly one report (DEL, use epoll_wait) in the sink.
 */
#include "scen.h"
#include <sys/resource.h>
#include <sys/socket.h>

static int p[2], ep = -1;

static void start_epoll(void)
{
    CHECK(pipe(p) == 0);
    ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) == 0);
}

static void conflict(void)
{
    child_deletes_parent_waits(ep, p[0]);
}

static int deep_add(int n)
{
    volatile char pad[6000]; /* each level on fresh stack pages */
    pad[0] = (char)n;
    if (n > 0)
        return deep_add(n - 1) + pad[0] - (char)n;
    add_fd(ep, p[1], EPOLLOUT);
    return epoll_ctl(ep, EPOLL_CTL_DEL, p[1], NULL);
}

static const char pattern[] = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789ABCDEF";

static void take_high(int lo, int hi)
{
    for (int fd = lo; fd <= hi; fd++) {
        CHECK(dup2(p[1], fd) == fd);
        CHECK(fcntl(fd, F_GETFD) == 0);
    }
    for (int fd = lo; fd <= hi; fd++)
        CHECK(close(fd) == 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "sock-after";
    if (!strncmp(mode, "sock-", 5)) {
        int sv[2];
        if (!strcmp(mode, "sock-after"))
            start_epoll();
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        CHECK(dup2(sv[0], 2) == 2);
        if (!strcmp(mode, "sock-before"))
            start_epoll();
        conflict();
        CHECK(fcntl(sv[1], F_SETFL, O_NONBLOCK) == 0);
        char buf[4096];
        ssize_t n, total = 0;
        while ((n = read(sv[1], buf, sizeof buf)) > 0)
            total += n;
        printf("socket bytes: %zd\n", total);
    } else if (!strncmp(mode, "dup2-high", 9)) {
        if (!strcmp(mode, "dup2-high")) {
            struct rlimit rl;
            CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
            rl.rlim_cur = 1024;
            CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
        }
        start_epoll();
        take_high(900, 1023);
        conflict();
    } else if (!strncmp(mode, "dup2-foreign", 12)) {
        int keep = !strcmp(mode, "dup2-foreign-keep");
        start_epoll();
        int known[] = {0, 1, 2, p[0], p[1], ep};
        int foreign[64], nf = 0;
        DIR *d = opendir("/proc/self/fd");
        CHECK(d);
        struct dirent *de;
        while ((de = readdir(d)) && nf < 64) {
            if (de->d_name[0] == '.')
                continue;
            int fd = atoi(de->d_name), mine = fd == dirfd(d);
            for (unsigned i = 0; i < sizeof known / sizeof known[0]; i++)
                mine |= fd == known[i];
            if (!mine)
                foreign[nf++] = fd;
        }
        closedir(d);
        int wends[64];
        for (int i = 0; i < nf; i++) {
            int x[2] = {p[1], -1};
            if (keep) {
                CHECK(pipe(x) == 0);
                CHECK(write(x[1], pattern, 64) == 64);
            }
            CHECK(dup2(x[0], foreign[i]) == foreign[i]);
            CHECK(fcntl(foreign[i], F_GETFD) == 0);
            if (keep) {
                CHECK(close(x[0]) == 0);
                wends[i] = x[1];
            }
        }
        if (!keep)
            for (int i = 0; i < nf; i++)
                CHECK(close(foreign[i]) == 0);
        printf("foreign: %d\n", nf);
        conflict();
        for (int i = 0; keep && i < 4; i++)
            CHECK(deep_add(4 + 6 * i) == 0);
        int damaged = 0;
        for (int i = 0; keep && i < nf; i++) {
            char b[128];
            ssize_t n = -1;
            int fl = fcntl(foreign[i], F_GETFL);
            if (fl >= 0 && (fl & O_ACCMODE) == O_RDONLY &&
                fcntl(foreign[i], F_SETFL, fl | O_NONBLOCK) == 0)
                n = read(foreign[i], b, sizeof b);
            if (n != 64 || memcmp(b, pattern, 64)) {
                printf("fd %d: %s, read %zd\n", foreign[i],
                       fl < 0 ? "closed" : (fl & O_ACCMODE) != O_RDONLY ? "replaced" : "data lost", n);
                damaged++;
            }
            close(wends[i]);
        }
        if (keep)
            printf("damaged: %d\n", damaged);
    } else {
        CHECK(!"unknown mode");
    }
    return 0;
}
