"""test_stale_exec.py - the two other ways epoll and fork bite:
stale registrations (ghost events) and epoll fds leaking across exec."""
from harness import case, check, build, run, expect_one, expect_silent, functions


def stale(mode, **kw):
    return run([build("stale.c"), mode], **kw)


@case("stale_exec/child-copy-reported-and-ghost-is-real")
def _():
    res = stale("child-copy")
    check(res.rc == 0, res.describe())
    check("ghost event for closed fd" in res.stdout, "the kernel really delivers the ghost: %s" % res.stdout)
    check("DEL after close: -1 errno=9" in res.stdout, "DEL fails with EBADF: %s" % res.stdout)
    r = expect_one(res, kind="stale-registration")
    check(r["pid"] == r["owner_pid"], "reported by the closer, the parent")
    check(r["holder_pid"] not in (0, -1, r["pid"]), "the child holds the copy: %r" % r["holder_pid"])
    check(r["holder_fd"] == r["fd"], "the child's copy has the same number")
    check(r["events"] == "EPOLLIN", "registered events from the kernel: %r" % r["events"])
    check(r["target"].startswith("pipe:["), "target: %r" % r["target"])
    for k in ("close", "add", "fork", "create", "use"):
        check(r["stacks"][k], "stack %s present: %r" % (k, r["stack_notes"]))
    check("close_without_del" in functions(r["stacks"]["close"]), "close stack names the caller")
    check(r["fork_child_pid"] == r["holder_pid"], "the fork that made the copy")


@case("stale_exec/dup-copy-in-same-process")
def _():
    res = stale("dup-copy")
    check("ghost event" in res.stdout, res.stdout)
    r = expect_one(res, kind="stale-registration")
    check(r["holder_pid"] == r["pid"] and r["holder_fd"] > r["fd"], "the dup holds it: %r" % r)
    check(not r["stacks"]["fork"] and "dup" in r["stack_notes"]["fork"], "no fork involved")


@case("stale_exec/inherited-fd-registered-in-child")
def _():
    res = stale("inherited")
    r = expect_one(res, kind="stale-registration")
    check(r["holder_pid"] == r["ppid"], "the parent holds the copy: %r" % r)


for _mode in ("del-first", "no-copy", "fresh-after-fork", "dup-both-closed", "instance-closed",
              "child-closes-all"):
    def _t(mode=_mode):
        res = stale(mode)
        check(res.rc == 0, res.describe())
        expect_silent(res, mode)
        if mode in ("no-copy", "fresh-after-fork", "dup-both-closed"):
            check("ghost" not in res.stdout, "the kernel dropped the registration: %s" % res.stdout)
    case("stale_exec/silent-%s" % _mode)(_t)


@case("stale_exec/libev-stop-and-close-while-child-holds-it")
def _():
    res = run([build("lib_ev_stale.c", libs=["-lev"])])
    check(res.rc == 0, res.describe())
    r = expect_one(res, kind="stale-registration")
    check(r["holder_pid"] not in (0, -1, r["pid"]), "the child holds it")
    check(any(f and f.startswith("ev_") or f in ("epoll_poll",) for f in functions(r["stacks"]["use"])),
          "the use is libev's poll: %r" % functions(r["stacks"]["use"]))


def leaks(res):
    return res.kinds("epoll-fd-exec-leak")


for _mode, _prog, _how in (("execve", "/bin/true", "exec"), ("execvp", "/usr/bin/true", "exec"),
                           ("execl", "/bin/true", "exec"), ("dup", "/bin/true", "exec"),
                           ("posix_spawn", "/usr/bin/true", "start-up"),
                           ("system", None, "start-up")):
    def _t(mode=_mode, prog=_prog, how=_how):
        res = run([build("execleak.c"), mode])
        check(res.rc == 0, res.describe())
        ls = leaks(res)
        check(len(ls) == 1, "exactly one leak report, got %d\n%s" % (len(ls), res.describe()))
        r = ls[0]
        check(r["exec"] == how, "seen at %s: %r" % (how, r["exec"]))
        if prog:
            check(r["program"] == prog, "program %r" % r["program"])
        else:
            check(r["program"] in ("/usr/bin/dash", "/bin/dash", "/usr/bin/bash", "/bin/bash"),
                  "system() leaks into the shell: %r" % r["program"])
        check(r["entries"] == 1, "one registration kept alive: %r" % r["entries"])
        if how == "exec":
            check("exec_true" in functions(r["stacks"]["exec"]), "exec stack: %r" % functions(r["stacks"]["exec"]))
            check("main" in functions(r["stacks"]["create"]), "create stack")
        else:
            check(not r["stacks"]["exec"] and r["stack_notes"]["exec"], "no exec stack, and why")
        check(not res.kinds("shared-epoll-ctl"), "nothing else")
    case("stale_exec/exec-leak-%s" % _mode)(_t)

for _mode in ("cloexec", "setfd", "dup3-cloexec", "closed", "fork-only"):
    def _t(mode=_mode):
        res = run([build("execleak.c"), mode])
        check(res.rc == 0, res.describe())
        expect_silent(res, mode)
    case("stale_exec/exec-silent-%s" % _mode)(_t)
