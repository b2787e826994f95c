/*
 * aliases.c MODE - the child changes the list through an alias of the
 * inherited epoll fd; the parent then waits on the original number.
 * Conflicts: dup, dup2, dup3, fcntl, fcntl-cloexec, keepalias (the child
 * closes the original but keeps the alias, then deletes through it).
 * Silent: allclosed (the child closes the fd and its alias, then builds its
 * own instance at the same numbers).
 */
#include "scen.h"

static int p[2], ep, alias;

static void delete_through_alias(void)
{
    CHECK(epoll_ctl(alias, EPOLL_CTL_DEL, p[0], NULL) == 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "dup";
    CHECK(pipe(p) == 0);
    ep = epoll_create1(0);
    add_fd(ep, p[0], EPOLLIN);
    if (!strcmp(mode, "dup") || !strcmp(mode, "keepalias") || !strcmp(mode, "allclosed"))
        alias = dup(ep);
    else if (!strcmp(mode, "dup2"))
        alias = dup2(ep, 40);
    else if (!strcmp(mode, "dup3"))
        alias = dup3(ep, 41, O_CLOEXEC);
    else if (!strcmp(mode, "fcntl"))
        alias = fcntl(ep, F_DUPFD, 50);
    else if (!strcmp(mode, "fcntl-cloexec"))
        alias = fcntl(ep, F_DUPFD_CLOEXEC, 60);
    CHECK(alias >= 0);
    pid_t c = fork();
    if (c == 0) {
        if (!strcmp(mode, "allclosed")) {
            int a = ep, b = alias;
            CHECK(close(ep) == 0 && close(alias) == 0);
            ep = epoll_create1(0);
            alias = dup(ep);
            CHECK(ep == a && alias == b);
            add_fd(alias, p[0], EPOLLIN);
        } else if (!strcmp(mode, "keepalias")) {
            CHECK(close(ep) == 0);
        }
        delete_through_alias();
        exit(0);
    }
    reap(c);
    if (!strcmp(mode, "dup")) /* one alias closed in the parent: still the same instance */
        CHECK(close(alias) == 0);
    struct epoll_event out;
    CHECK(epoll_wait(ep, &out, 1, 0) >= 0);
    return 0;
}
