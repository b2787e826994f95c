/*
 * lib_event.c MODE - libevent (Debian's 2.1.12) across a fork, epoll backend.
 *
 * The parent makes an event_base on the epoll backend (select and poll are
 * avoided in the config), adds a persistent read event on a pipe and turns the
 * loop once.  It forks; the child does MODE and exits; the parent writes one
 * byte to its pipe, turns its loop (EVLOOP_NONBLOCK) and prints how many bytes
 * its callback read.
 *
 * MODE is [reinit-][cl-]ACTION.  With "cl-" the base is made with
 * EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST: libevent then queues epoll changes in
 * a changelist and applies them in epoll_dispatch (inside event_base_loop),
 * folding the changes of one fd into one epoll_ctl.  Without it (the default)
 * event_add/event_del call epoll_ctl at once.  The child dispatches once
 * (EVLOOP_NONBLOCK | EVLOOP_NO_EXIT_ON_EMPTY), except in delidle.
 *   add        the child adds an event on another pipe and dispatches
 *   del        the child deletes the parent's event and dispatches: the
 *              parent's callback never runs again
 *   delreadd   the child deletes and re-adds the parent's event, then
 *              dispatches: EPOLL_CTL_DEL + ADD, or with the changelist one
 *              EPOLL_CTL_MOD with the same events (it re-arms the entry)
 *   delidle    the child deletes the parent's event and turns the loop with
 *              EVLOOP_NONBLOCK only: with no event left, event_base_loop
 *              returns before dispatching, so with the changelist the DEL
 *              never reaches the kernel
 * Conflicts (one report, by the parent at its epoll_wait): add, del, delidle,
 * cl-add, cl-del, cl-delreadd (MOD); delreadd gives two (the DEL and the ADD
 * have different call stacks).  Silent: cl-delidle (nothing reached the
 * kernel), and every reinit- mode: event_reinit() closes the inherited epoll
 * fd, makes a new one (the same number) and re-adds every event there.
 */
#include "scen.h"
#include <event2/event.h>

static struct event_base *base;
static struct event *ev_in, *ev_extra;
static int p[2], q[2];
static int got;

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    char buf[64];
    (void)what;
    (void)arg;
    ssize_t n = read(fd, buf, sizeof buf);
    if (n > 0)
        got += (int)n;
}

/* The child drives the inherited base: the frames the report must show. */
static void child_drives_base(const char *action)
{
    if (!strcmp(action, "add")) {
        ev_extra = event_new(base, q[0], EV_READ | EV_PERSIST, on_read, NULL);
        CHECK(ev_extra && event_add(ev_extra, NULL) == 0);
    } else if (!strcmp(action, "del") || !strcmp(action, "delidle")) {
        CHECK(event_del(ev_in) == 0);
    } else if (!strcmp(action, "delreadd")) {
        CHECK(event_del(ev_in) == 0);
        CHECK(event_add(ev_in, NULL) == 0);
    }
    int flags = EVLOOP_NONBLOCK;
    if (strcmp(action, "delidle"))
        flags |= EVLOOP_NO_EXIT_ON_EMPTY;
    CHECK(event_base_loop(base, flags) >= 0);
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "add";
    int reinit = strstr(mode, "reinit-") != NULL;
    int changelist = strstr(mode, "cl-") != NULL;
    const char *action = strrchr(mode, '-') ? strrchr(mode, '-') + 1 : mode;
    setvbuf(stdout, NULL, _IONBF, 0);
    CHECK(pipe(p) == 0 && pipe(q) == 0);
    CHECK(evutil_make_socket_nonblocking(p[0]) == 0);

    struct event_config *cfg = event_config_new();
    CHECK(cfg);
    CHECK(event_config_avoid_method(cfg, "select") == 0);
    CHECK(event_config_avoid_method(cfg, "poll") == 0);
    if (changelist)
        CHECK(event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST) == 0);
    base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    CHECK(base);
    /* "epoll", or "epoll (with changelist)" */
    CHECK(!strncmp(event_base_get_method(base), "epoll", 5));
    ev_in = event_new(base, p[0], EV_READ | EV_PERSIST, on_read, NULL);
    CHECK(ev_in && event_add(ev_in, NULL) == 0);
    CHECK(event_base_loop(base, EVLOOP_NONBLOCK) >= 0); /* applies a changelist */
    printf("method=%s changelist=%d\n", event_base_get_method(base), changelist);

    int entries_before = epoll_entries_total();
    pid_t c = fork();
    CHECK(c >= 0);
    if (c == 0) {
        if (reinit)
            CHECK(event_reinit(base) == 0);
        child_drives_base(action);
        printf("child read=%d\n", got);
        _exit(0);
    }
    CHECK(WIFEXITED(reap(c)));
    /* what the child did to the parent's list (repair mode: nothing) */
    printf("parent entries before=%d after=%d\n", entries_before, epoll_entries_total());
    CHECK(write(p[1], "p", 1) == 1);
    CHECK(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
    printf("parent read=%d\n", got);
    return 0;
}
