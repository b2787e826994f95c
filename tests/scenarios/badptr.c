/*
 * badptr.c - bad pointers handed to wrapped calls, and execs that fail.
 *
 * libc answers a bad pointer with EFAULT; a wrapper that reads the caller's
 * memory before the kernel has accepted it would crash instead.  Each mode
 * holds an epoll fd without close-on-exec (so the exec wrappers would want to
 * report a leak), makes the call and prints what came back; the test runs it
 * bare and under the shim and compares.  An exec that fails must not be
 * reported as a leak: nothing was inherited.
 *
 * Usage: badptr MODE   (pwait2-timeout, execve-path, execv-path, execve-argv,
 *                       execve-argv-string, execve-envp, execve-envp-string,
 *                       execve-noexec, execvp-missing, vfork-exec-rounds)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;
/* volatile: the compiler must not see (and refuse) the bad pointer */
static void *volatile bad_ptr = (void *)8;
#define BAD bad_ptr

static void say(const char *what, int r)
{
    printf("%s: %d %s\n", what, r, r < 0 ? strerror(errno) : "");
    fflush(stdout);
}

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
    const char *mode = argc > 1 ? argv[1] : "";
    int ep = epoll_create(1); /* no close-on-exec: every exec would leak it */
    int p[2];
    if (ep < 0 || pipe(p))
        return 2;
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = p[0]};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &ev);
    char *args[] = {"true", NULL};
    char *bad_string[] = {"true", BAD, NULL};
    if (!strcmp(mode, "pwait2-timeout")) {
        struct epoll_event out;
        say("epoll_pwait2", epoll_pwait2(ep, &out, 1, BAD, NULL));
    } else if (!strcmp(mode, "execve-path")) {
        say("execve", execve(BAD, args, environ));
    } else if (!strcmp(mode, "execv-path")) {
        say("execv", execv(BAD, args));
    } else if (!strcmp(mode, "execve-argv")) {
        say("execve", execve("/bin/true", BAD, environ));
    } else if (!strcmp(mode, "execve-argv-string")) {
        say("execve", execve("/bin/true", bad_string, environ));
    } else if (!strcmp(mode, "execve-envp")) {
        say("execve", execve("/bin/true", args, BAD));
    } else if (!strcmp(mode, "execve-envp-string")) {
        say("execve", execve("/bin/true", args, bad_string));
    } else if (!strcmp(mode, "execve-noexec")) {
        say("execve", execve("/etc/hostname", args, environ)); /* not executable */
    } else if (!strcmp(mode, "execvp-missing")) {
        say("execvp", execvp("no-such-program-epollfork", args));
    } else if (!strcmp(mode, "vfork-exec-rounds")) {
        /* This process started holding an inherited epoll fd (a leak the
         * start-up scan found: every exec of ours passes it on, with the
         * marker in a new environment); vfork + exec, many times: the
         * parent's address space must not grow with the rounds. */
        if (argc < 3) {
            char *again[] = {argv[0], "vfork-exec-rounds", "inherited", NULL};
            execv("/proc/self/exe", again);
            return 2;
        }
        close(ep); /* only the inherited one is left */
        long before = 0;
        for (int i = 0; i < 2000; i++) {
            if (i == 100)
                before = vmsize_kib();
            pid_t c = vfork();
            if (c == 0) {
                execv("/bin/true", args);
                _exit(127);
            }
            int st;
            waitpid(c, &st, 0);
        }
        long grown = vmsize_kib() - before;
        printf("vmsize grew %s\n", grown < 1024 ? "less than 1 MiB" : "by more than 1 MiB");
        fprintf(stderr, "vmsize grew by %ld KiB over 1900 rounds\n", grown);
    } else {
        fprintf(stderr, "usage: badptr MODE\n");
        return 2;
    }
    return 0;
}
