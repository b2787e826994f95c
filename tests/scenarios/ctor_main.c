/*
 * ctor_main.c MODE - the program linked to ctor_lib.so (see there: the
 * library's constructor uses epoll before the shim's constructor runs).
 *   conflict   main() only prints what the constructor did: "ctor epfd=N fd=M";
 *              one report (DEL, use epoll_wait), made in the constructor
 *   closeonly  main() then runs an ordinary conflict (the child deletes, the
 *              parent waits): exactly one report, whose create stack names
 *              main; prints "ctor errnos: CALL=ERRNO ..." (compared with a bare run)
 */
#include "scen.h"

extern int ctor_ran, ctor_epfd, ctor_fd;
extern char ctor_errnos[];

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "conflict";
    CHECK(ctor_ran);
    if (!strcmp(mode, "conflict")) {
        printf("ctor epfd=%d fd=%d\n", ctor_epfd, ctor_fd);
        return 0;
    }
    printf("ctor errnos: %s\n", ctor_errnos);
    int p[2];
    CHECK(pipe(p) == 0);
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    add_fd(ep, p[0], EPOLLIN);
    child_deletes_parent_waits(ep, p[0]);
    return 0;
}
