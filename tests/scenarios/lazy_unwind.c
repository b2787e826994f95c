/*
 * lazy_unwind.c MODE - stacks captured before libunwind is loaded (kept as a
 * copy of the stack, unwound when a report needs them: src/stack.c) and
 * after it.
 *
 *   quiet      an epoll instance, a registration, a wait, a fork whose child
 *              exits at once: nothing to report, so libunwind must never be
 *              loaded.  Prints "libunwind: 0|1" (is it in /proc/self/maps).
 *   rounds     the same round twice, from the same call sites: a new
 *              instance, a registration, the seed's conflict (a child deletes,
 *              the parent waits).  Round 1's stacks are captured before
 *              libunwind is loaded, round 2's after (round 1's report loaded
 *              it): the two reports must name the same frames, pc for pc.
 *              Prints "libunwind: 1".
 *   deep       a registration from a frame holding 20 KiB of locals (deeper
 *              than a kept copy may be: unwound at once), then the conflict:
 *              the report's registration stack must still name the function.
 */
#include "scen.h"

static int libunwind_mapped(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    CHECK(f);
    char line[512];
    int found = 0;
    while (fgets(line, sizeof line, f))
        found |= strstr(line, "libunwind") != NULL;
    fclose(f);
    return found;
}

__attribute__((noinline)) static int make_instance(void)
{
    int ep = epoll_create1(0);
    CHECK(ep >= 0);
    return ep;
}

__attribute__((noinline)) static void register_here(int ep, int fd)
{
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
    CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
    __asm__ volatile("" ::: "memory"); /* not a tail call: this frame stays */
}

__attribute__((noinline)) static void register_deep(int ep, int fd)
{
    volatile char big[20 * 1024];
    big[0] = 1;
    big[sizeof big - 1] = 1;
    register_here(ep, fd);
    __asm__ volatile("" ::: "memory");
}

__attribute__((noinline)) static void one_round(int deep)
{
    int p[2];
    CHECK(make_pipe(p) == 0);
    int ep = make_instance();
    if (deep)
        register_deep(ep, p[0]);
    else
        register_here(ep, p[0]);
    child_deletes_parent_waits(ep, p[0]);
    __asm__ volatile("" ::: "memory");
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "quiet";
    if (!strcmp(mode, "quiet")) {
        int p[2];
        CHECK(make_pipe(p) == 0);
        int ep = make_instance();
        register_here(ep, p[0]);
        struct epoll_event out;
        CHECK(epoll_wait(ep, &out, 1, 0) == 0);
        pid_t c = fork();
        CHECK(c >= 0);
        if (c == 0)
            _exit(0);
        CHECK(WIFEXITED(reap(c)));
        CHECK(epoll_wait(ep, &out, 1, 0) == 0);
    } else if (!strcmp(mode, "rounds")) {
        for (int i = 0; i < 2; i++)
            one_round(0);
    } else if (!strcmp(mode, "deep")) {
        one_round(1);
    } else {
        fprintf(stderr, "lazy_unwind: unknown mode %s\n", mode);
        return 2;
    }
    printf("libunwind: %d\n", libunwind_mapped());
    return 0;
}
