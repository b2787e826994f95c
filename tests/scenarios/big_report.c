/*
 * big_report.c [DEPTH] - the conflict of ctl_child.c 'del', with every stack of
 * the report (create, add, fork, the child's DEL, the parent's wait) made
 * DEPTH calls deep (default 70) in one function with a 240-character name.
 * With EPOLLFORK_STACK_DEPTH=64 and the binary at a long path, each frame line
 * is ~700 bytes and the report ~230 KiB as text and as JSON: larger than a
 * datagram to journald may be (tests/test_journal.py, the memfd path).
 * Prints "parent waited" (the same with or without the shim).
 * Expected: one report (DEL, use epoll_wait, reporter the parent).
 */
#include "scen.h"

#define DEEP                                                                                       \
    deep_call_chain_with_a_name_long_enough_to_make_every_frame_of_the_report_hundreds_of_bytes_\
deep_call_chain_with_a_name_long_enough_to_make_every_frame_of_the_report_hundreds_of_bytes_deep\
_call_chain_with_a_name_long_enough_to_make_every_fr

enum step { CREATE, ADD, FORK, DEL, WAIT };
static int p[2], ep, depth;
static pid_t child;

static int DEEP(int n, enum step s)
{
    if (n > 0)
        return DEEP(n - 1, s) + 1; /* not a tail call: one frame per level */
    struct epoll_event out;
    switch (s) {
    case CREATE:
        CHECK(pipe(p) == 0);
        ep = epoll_create1(0);
        CHECK(ep >= 0);
        break;
    case ADD:
        add_fd(ep, p[0], EPOLLIN);
        break;
    case FORK:
        child = fork();
        CHECK(child >= 0);
        if (child == 0) {
            DEEP(depth, DEL);
            _exit(0);
        }
        break;
    case DEL:
        CHECK(epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL) == 0);
        break;
    case WAIT:
        CHECK(epoll_wait(ep, &out, 1, 0) == 0);
        break;
    }
    return 0;
}

int main(int argc, char **argv)
{
    depth = argc > 1 ? atoi(argv[1]) : 70;
    DEEP(depth, CREATE);
    DEEP(depth, ADD);
    DEEP(depth, FORK);
    CHECK(WIFEXITED(reap(child)));
    DEEP(depth, WAIT);
    printf("parent waited\n");
    return 0;
}
