"""test_core.py - the verdicts of the core issue: conflicts reported once, with
four symbolized stacks, and correct programs left alone."""
import re

from harness import case, check, build, run, expect_one, expect_stacks, expect_silent, functions


def ctl_child(mode, **kw):
    return run([build("ctl_child.c"), mode], **kw)


for _op, _name in (("add", "EPOLL_CTL_ADD"), ("mod", "EPOLL_CTL_MOD"), ("del", "EPOLL_CTL_DEL")):
    def _t(op=_op, name=_name):
        res = ctl_child(op)
        check(res.rc == 0, res.describe())
        r = expect_one(res, op=name, use="epoll_wait", reporter="other")
        expect_stacks(r, call_fn="child_change")
        check(r["owner_pid"] == r["other_pid"], "owner is the parent")
        check(r["modifier_pid"] != r["other_pid"], "modifier is the child")
        check(r["fork_parent_pid"] == r["other_pid"] and r["fork_child_pid"] == r["modifier_pid"],
              "fork stack is the parent's fork of the child: %r" % r)
        check("main" in functions(r["stacks"]["fork"]), "fork stack names main")
        check("main" in functions(r["stacks"]["create"]), "create stack names main")
        check("main" in functions(r["stacks"]["add"]) or "child_change" in functions(r["stacks"]["add"]),
              "add stack is symbolized")
        if op == "add":
            check(r["events"] == "EPOLLIN|EPOLLET", "events decoded: %r" % r["events"])
            check(r["stacks"]["add"] == r["stacks"]["call"], "an ADD's registration is the call itself")
        elif op == "mod":
            check(r["events"] == "EPOLLOUT|EPOLLONESHOT", "events decoded: %r" % r["events"])
        else:
            check(r["events"] == "", "DEL has no events")
        check(r["target"] and r["target"].startswith("pipe:["), "target names the pipe: %r" % r["target"])
        check(r["site"].startswith("child_change("), "site: %r" % r["site"])
    case("core/child-%s-then-parent-waits" % _op)(_t)

@case("core/holder-slots-of-exited-children-come-back")
def _():
    res = ctl_child("reaped-del")
    r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
    check(not res.notices, "no capacity notice after 100 exited children: %r" % res.notices)
    # the 100 children's process record is taken again at each fork (a fork
    # loop then writes no private page, src/hold.c): the deleter's report must
    # still name its own fork and its own pid
    m = re.search(r"deleter (\d+)", res.stdout)
    check(m and r["fork_child_pid"] == int(m.group(1)) == r["modifier_pid"],
          "the deleter is the fork's child: %r, report %r/%r" % (res.stdout, r["fork_child_pid"],
                                                                 r["modifier_pid"]))
    fork = functions(r["stacks"]["fork"])
    check(fork[:1] == ["main"], "the deleter's fork stack, not the loop's: %r" % fork)


for _mode, _use in (("pwait-del", "epoll_wait"), ("pwait2-del", "epoll_wait"), ("ctl-del", "epoll_ctl")):
    def _t(mode=_mode, use=_use):
        r = expect_one(ctl_child(mode), op="EPOLL_CTL_DEL", use=use, reporter="other")
        check(r["stacks"]["use"], "the affected use has a stack")
    case("core/affected-use-%s" % _mode)(_t)

for _mode in ("rawfork-del", "underscore-del"):
    def _t(mode=_mode):
        res = ctl_child(mode)
        r = expect_one(res, op="EPOLL_CTL_DEL", reporter="other")
        expect_stacks(r, call_fn="child_change", names=("call", "create", "add"))
        if mode.startswith("underscore"):
            check("main" in functions(r["stacks"]["fork"]), "_Fork's stack is kept: %r" % r["stack_notes"])
        else:
            check(not r["stacks"]["fork"] and "raw" in r["stack_notes"]["fork"],
                  "a raw fork has no stack and says why: %r" % r["stack_notes"])
    case("core/fork-without-handlers-%s" % _mode)(_t)

for _mode in ("closeonly", "newepoll", "dup2private", "closerange", "closefrom", "closeall",
              "parentonly", "childonly"):
    def _t(mode=_mode):
        res = ctl_child(mode)
        check(res.rc == 0, res.describe())
        expect_silent(res, mode)
    case("core/silent-%s" % _mode)(_t)


@case("core/blocked-parent-reported-at-child-delete")
def _():
    res = run([build("blocked.c"), "child-del"])
    check(res.rc == 0, res.describe())
    r = expect_one(res, op="EPOLL_CTL_DEL", use="blocked-in-wait", reporter="modifier")
    expect_stacks(r, call_fn="child_delete")
    check(r["other_pid"] == r["owner_pid"], "the blocked process is the parent")
    check("parent woke with 0 events" in res.stdout, "the parent really missed the data: %s" % res.stdout)


@case("core/parent-changes-while-child-waits")
def _():
    res = run([build("blocked.c"), "parent-add"])
    r = expect_one(res, op="EPOLL_CTL_ADD", use="blocked-in-wait", reporter="modifier")
    expect_stacks(r, call_fn="parent_add")
    check(r["modifier_pid"] == r["owner_pid"], "the parent changed it")


@case("core/thread-blocked-while-another-thread-forks")
def _():
    res = run([build("blocked.c", libs=["-lpthread"]), "thread-fork"])
    r = expect_one(res, op="EPOLL_CTL_DEL", use="blocked-in-wait", reporter="modifier")
    # child of a multithreaded parent: only the calling frame, and the report says why
    check(len(r["stacks"]["call"]) == 1 and r["stacks"]["call"][0]["function"] == "child_delete",
          "one frame naming the caller: %r" % r["stacks"]["call"])
    check("multithreaded" in r["stack_notes"].get("call", ""), "says why: %r" % r["stack_notes"])


@case("core/siblings")
def _():
    res = run([build("family.c"), "siblings"])
    r = expect_one(res, op="EPOLL_CTL_ADD", use="epoll_ctl", reporter="other")
    expect_stacks(r, call_fn="first_sibling_adds")
    check(r["owner_pid"] not in (r["modifier_pid"], r["other_pid"]), "two children, not the creator")
    check("second_sibling_adds" in functions(r["stacks"]["use"]), "use stack is the second sibling's")


@case("core/grandchild")
def _():
    res = run([build("family.c"), "grandchild"])
    r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
    expect_stacks(r, call_fn="grandchild_deletes")
    check(r["fork_parent_pid"] == r["owner_pid"], "split at the creator's fork: %r" % r)


@case("core/forkpty-seen-through-atfork")
def _():
    res = run([build("family.c", libs=["-lutil"]), "forkpty"])
    r = expect_one(res, op="EPOLL_CTL_DEL", reporter="other")
    expect_stacks(r, call_fn="grandchild_deletes")
    check("forkpty" in functions(r["stacks"]["fork"]), "fork stack shows forkpty: %r" % functions(r["stacks"]["fork"]))
    check(not any(f is None or f.startswith("ef_") for f in functions(r["stacks"]["fork"])[:1]),
          "no shim frame on top")


for _mode in ("exit", "pipe", "daemon"):
    def _t(mode=_mode):
        res = run([build("handoff.c"), mode])
        check(res.rc == 0, res.describe())
        expect_silent(res, "hand-off " + mode)
    case("core/silent-handoff-%s" % _mode)(_t)


for _mode in ("dup", "dup2", "dup3", "fcntl", "fcntl-cloexec", "keepalias"):
    def _t(mode=_mode):
        res = run([build("aliases.c"), mode])
        r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
        check(r["epfd"] != 3 or mode == "keepalias", "epfd is the alias number as the modifier saw it")
        expect_stacks(r, call_fn="delete_through_alias")
    case("core/alias-%s" % _mode)(_t)


@case("core/silent-alias-allclosed")
def _():
    expect_silent(run([build("aliases.c"), "allclosed"]))


@case("core/high-fd-numbers")
def _():
    res = run([build("highfd.c")])
    check(res.rc == 0, res.describe())
    epfd, fd = [int(x.split("=")[1]) for x in res.stdout.split()]
    check(epfd >= 10000, "a high number was possible: %d" % epfd)
    r = expect_one(res, op="EPOLL_CTL_DEL")
    check(r["epfd"] == epfd and r["fd"] == fd, "numbers reported as used: %r" % ((r["epfd"], r["fd"]),))
