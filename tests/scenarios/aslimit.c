/*
 * aslimit.c - a program under a tight RLIMIT_AS (address space: what
 * mappings count, touched or not).  The shim's shared memory is mapped in
 * pieces as it is used, so such a program can still allocate what it could
 * without the shim, and is still tracked.
 *
 * Usage: aslimit room MIB   the limit is the current address space plus MIB;
 *                           the seed conflict, then malloc(8 MiB) must work
 *        aslimit none       the limit is the current address space plus 16 KiB:
 *                           nothing more can be mapped at all (the program
 *                           itself needs nothing more); it must run to its end
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static long vmsize_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmSize: %ld", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

int main(int argc, char **argv)
{
    int room = argc > 2 ? atoi(argv[2]) : 0;
    int none = argc > 1 && !strcmp(argv[1], "none");
    int p[2];
    if (pipe(p))
        return 2;
    char *early = malloc(1 << 20); /* the heap grows before the limit */
    free(early);
    long kib = vmsize_kib();
    struct rlimit rl;
    rl.rlim_cur = rl.rlim_max = (rlim_t)(kib * 1024 + (none ? 16 * 1024 : (long)room << 20));
    if (setrlimit(RLIMIT_AS, &rl))
        return 2;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    pid_t c = fork();
    if (c == 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, p[0], NULL);
        _exit(0);
    }
    waitpid(c, NULL, 0);
    struct epoll_event out;
    epoll_wait(ep, &out, 1, 0);
    if (!none) {
        char *big = malloc(8 << 20);
        printf("malloc(8 MiB) %s\n", big ? "ok" : "failed");
        if (big)
            memset(big, 1, 8 << 20);
    }
    printf("done\n");
    return 0;
}
