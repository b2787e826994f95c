/*
 * family.c MODE - conflicts between relatives other than parent and child.
 *   siblings     two children of the creator; the first ADDs an fd, the
 *                second then ADDs the same fd (EEXIST: Tornado's restart loop)
 *   grandchild   a grandchild deletes; the creator then waits
 *   forkpty      the child comes from forkpty() (a fork inside libc, seen
 *                through atfork handlers); it deletes, the parent waits
 */
#include "scen.h"
#include <pty.h>

static int p[2], q[2], ep;

static void first_sibling_adds(void)
{
    add_fd(ep, q[0], EPOLLIN);
}

static void second_sibling_adds(void)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = q[0]};
    int r = epoll_ctl(ep, EPOLL_CTL_ADD, q[0], &ev);
    CHECK(r == -1 && errno == EEXIST);
}

static void grandchild_deletes(void)
{
    CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "siblings";
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    ep = epoll_create1(0);
    add_fd(ep, p[0], EPOLLIN);
    struct epoll_event out;
    if (!strcmp(mode, "siblings")) {
        pid_t a = fork();
        if (a == 0) {
            first_sibling_adds();
            exit(0);
        }
        reap(a);
        pid_t b = fork();
        if (b == 0) {
            second_sibling_adds();
            exit(0);
        }
        reap(b);
        close(ep); /* the creator is done with it: no use after the fork */
    } else if (!strcmp(mode, "grandchild")) {
        pid_t a = fork();
        if (a == 0) {
            pid_t g = fork();
            if (g == 0) {
                grandchild_deletes();
                exit(0);
            }
            reap(g);
            exit(0);
        }
        reap(a);
        CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    } else if (!strcmp(mode, "forkpty")) {
        int master;
        pid_t c = forkpty(&master, NULL, NULL, NULL);
        CHECK(c >= 0);
        if (c == 0) {
            grandchild_deletes();
            exit(0);
        }
        reap(c);
        CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    }
    return 0;
}
