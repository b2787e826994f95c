"""test_uring.py - io_uring: IORING_OP_EPOLL_CTL submitted through a ring is an
epoll_ctl like any other (shared-epoll-ctl, stale-registration), rings shared
across a fork (shared-io-uring), what cannot be seen is said once, and Node 20's
libuv with UV_USE_IO_URING=1 runs unchanged and seen.

tests/scenarios/uring.c is built twice: uring_raw drives the ring the way
libuv 1.45+ does (io_uring_setup and io_uring_enter through libc's syscall(),
the rings mapped with mmap), uring_lib through Debian's liburing
(liburing-dev: io_uring_queue_init, io_uring_prep_epoll_ctl, io_uring_submit_and_wait)."""
import json
import os
import re
import shutil
import subprocess

from harness import (case, check, build, run, expect_one, expect_stacks, expect_silent, functions,
                     SCEN, BUILD, ROOT)


def prog(flavour):
    if flavour == "lib":
        return build("uring.c", out="uring_lib", flags=["-DUSE_LIBURING"], libs=["-luring"])
    return build("uring.c", out="uring_raw")


def uring(flavour, mode, **kw):
    return run([prog(flavour), mode], timeout=60, **kw)


FLAVOURS = ("raw", "lib")

# ---------------------------------------------------------- shared-epoll-ctl

for _fl in FLAVOURS:
    for _mode, _op, _fd_is in (("child-add", "EPOLL_CTL_ADD", "q"), ("child-mod", "EPOLL_CTL_MOD", "p"),
                               ("child-del", "EPOLL_CTL_DEL", "p"), ("child-del-shared", "EPOLL_CTL_DEL", "p")):
        def _t(fl=_fl, mode=_mode, op=_op):
            res = uring(fl, mode)
            check(res.rc == 0, res.describe())
            r = expect_one(res, op=op, use="epoll_wait", reporter="other")
            expect_stacks(r, call_fn="child_change")
            check(r["via"] == "io_uring" and r["ring_fd"] >= 0, "submitted through a ring: %r" % r)
            check(r["add_via"] == "io_uring", "the ADD came through the ring too: %r" % r["add_via"])
            check(r["modifier_pid"] != r["other_pid"] == r["owner_pid"], "the child changed it: %r" % r)
            m = re.search(r"epoll fd (\d+) pipe (\d+)", res.stdout)
            check(m and r["epfd"] == int(m.group(1)), "epfd as the program saw it: %r" % res.stdout)
            if op == "EPOLL_CTL_ADD":
                check(r["fd"] not in (int(m.group(2)),) and r["events"] == "EPOLLIN|EPOLLET",
                      "the ADDed fd and its events: %r" % r)
            else:
                check(r["fd"] == int(m.group(2)), "fd %r is the parent's pipe %s" % (r["fd"], m.group(2)))
            if op == "EPOLL_CTL_MOD":
                check(r["events"] == "EPOLLOUT|EPOLLONESHOT", "events read from the SQE's addr: %r" % r["events"])
            if op != "EPOLL_CTL_ADD":
                # the registration's stack: the parent's enter, not "before the shim was loaded"
                check(r["stacks"]["add"] and "ring_run" in functions(r["stacks"]["add"]),
                      "the ADD through the ring has its stack: %r" % r["stack_notes"])
            check(r["target"].startswith("pipe:["), "target: %r" % r["target"])
            check(not res.kinds("shared-io-uring"), "no ring is shared here: %s" % res.describe())
        case("uring/%s-%s-reported-once" % (_fl, _mode))(_t)

    for _mode in ("own", "closeonly"):
        def _t(fl=_fl, mode=_mode):
            res = uring(fl, mode)
            check(res.rc == 0, res.describe())
            expect_silent(res, mode)
            check(not res.notices, "no notice: %r" % res.notices)
        case("uring/%s-silent-%s" % (_fl, _mode))(_t)

# ---------------------------------------------------------- stale-registration

for _fl in FLAVOURS:
    def _t(fl=_fl):
        res = uring(fl, "stale")
        check(res.rc == 0, res.describe())
        r = expect_one(res, kind="stale-registration")
        check("ghost event" in res.stdout, "the kernel really kept it: %r" % res.stdout)
        check(r["add_via"] == "io_uring" and r["fd"] >= 3 and r["holder_pid"] > 0, "%r" % r)
        check(r["stacks"]["add"] and "ring_run" in functions(r["stacks"]["add"]),
              "the ADD's stack is the ring's enter: %r" % r["stack_notes"])
        expect_stacks(r, names=("close", "add", "fork", "create", "use"))
    case("uring/%s-stale-registration-reported-once" % _fl)(_t)

    def _t(fl=_fl):
        res = uring(fl, "stale-del-first")
        check(res.rc == 0, res.describe())
        expect_silent(res, "DEL through the ring before the close")
    case("uring/%s-silent-stale-del-first" % _fl)(_t)

# ---------------------------------------------------------- shared-io-uring

for _fl in FLAVOURS:
    for _mode, _use in (("shared-ring", "submit"), ("shared-ring-reap", "reap")):
        def _t(fl=_fl, mode=_mode, use=_use):
            res = uring(fl, mode)
            check(res.rc == 0, res.describe())
            reps = res.kinds("shared-io-uring")
            check(len(reps) == 1 and len(res.reports) == 1, "one shared-io-uring report:\n" + res.describe())
            r = reps[0]
            check(r["pid"] != r["owner_pid"] == r["other_pid"], "the child noticed the parent: %r" % r)
            check(r["ring_use"] == use and r["other_use"] == "submit+reap", "%r" % r)
            check(r["fork_parent_pid"] == r["owner_pid"] and r["fork_child_pid"] == r["pid"], "%r" % r)
            expect_stacks(r, names=("call", "fork", "create", "use"))
            check("child_" + ("submits" if use == "submit" else "reaps") in functions(r["stacks"]["call"]),
                  "call: %r" % functions(r["stacks"]["call"]))
            check("parent_submits" in functions(r["stacks"]["use"]), "use: %r" % functions(r["stacks"]["use"]))
            check("ring_init" in functions(r["stacks"]["create"]), "create: %r" % functions(r["stacks"]["create"]))
            check("ring_modes" in functions(r["stacks"]["fork"]), "fork: %r" % functions(r["stacks"]["fork"]))
            check(r["site"].startswith("ring_"), "site: %r" % r["site"])
        case("uring/%s-%s-reported-once" % (_fl, _mode))(_t)

    for _mode in ("ring-closeonly", "ring-closerange", "ring-exec", "ring-parentonly"):
        def _t(fl=_fl, mode=_mode):
            res = uring(fl, mode)
            check(res.rc == 0, res.describe())
            expect_silent(res, mode)
        case("uring/%s-silent-%s" % (_fl, _mode))(_t)


@case("uring/text-report-names-the-ring")
def _():
    res = uring("raw", "shared-ring", fmt="text")
    text = "\n".join(res.log_lines)
    check("WARNING: shared-io-uring: process" in text and "io_uring fd" in text, text[-3000:])
    check("SUMMARY: shared-io-uring" in text and " ring_use=submit " in text, text[-3000:])
    for title in ("the io_uring_enter (submit)", "the fork of process", "the ring set up by io_uring_setup",
                  "the other process's use"):
        check(title in text, "%r missing:\n%s" % (title, text[-3000:]))
    res = uring("raw", "child-del", fmt="text")
    text = "\n".join(res.log_lines)
    check("an IORING_OP_EPOLL_CTL submitted through io_uring fd" in text and " via=io_uring " in text,
          text[-3000:])
    check("registered by EPOLL_CTL_ADD (an IORING_OP_EPOLL_CTL" in text, text[-3000:])
    check("before the shim was loaded" not in text, "the ADD is known:\n" + text[-3000:])

@case("uring/liburing-layout-is-the-shims")
def _():
    """src/wrap_uring.c reads liburing's struct io_uring through a mirror of
    its layout (offsets asserted there): the installed liburing.h must agree."""
    src = os.path.join(BUILD, "tests", "liburing_layout.c")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    with open(src, "w") as f:
        f.write('#include <liburing.h>\n#include <stdio.h>\n#include <stddef.h>\n'
                'int main(void) { printf("%zu %zu %zu %zu %zu %zu %zu\\n",'
                ' offsetof(struct io_uring, sq.sqes), offsetof(struct io_uring, sq.sqe_tail),'
                ' offsetof(struct io_uring, sq.ring_sz), offsetof(struct io_uring, sq.ring_ptr),'
                ' offsetof(struct io_uring, cq.ring_sz), offsetof(struct io_uring, cq.ring_ptr),'
                ' offsetof(struct io_uring, ring_fd)); return 0; }\n')
    exe = build(src, out="liburing_layout")
    out = subprocess.run([exe], capture_output=True, text=True).stdout.split()
    with open(os.path.join(ROOT, "src", "wrap_uring.c")) as f:
        mirror = re.findall(r"offsetof\(struct liburing_ring, [\w.]+\) == (\d+)", f.read())
    check(len(mirror) == 7 and out == mirror,
          "liburing.h says %s, src/wrap_uring.c's mirror %s" % (out, mirror))


# ---------------------------------------------------------- what cannot be seen


def expect_notice(res, words):
    hits = [n for n in res.notices if words in n.get("message", "")]
    check(len(hits) == 1, "one notice with %r, got %r\n%s" % (words, res.notices, res.describe()))


for _fl in FLAVOURS:
    def _t(fl=_fl):
        res = uring(fl, "sqpoll")
        check(res.rc == 0, res.describe())
        if "no sqpoll here" in res.stdout:
            print("    (SQPOLL is not allowed here: %s)" % res.stdout.strip())
            return
        check("sqpoll ring fd" in res.stdout, res.describe())
        expect_silent(res)
        expect_notice(res, "IORING_SETUP_SQPOLL")
    case("uring/%s-sqpoll-one-notice" % _fl)(_t)


@case("uring/raw-unseen-ring-one-notice")
def _():
    res = uring("raw", "unseen")
    check(res.rc == 0 and "unseen ring fd" in res.stdout, res.describe())
    expect_silent(res)
    expect_notice(res, "set up where the shim could not see it")


@case("uring/raw-registered-ring-one-notice")
def _():
    res = uring("raw", "registered")
    check(res.rc == 0, res.describe())
    if "no registered rings here" in res.stdout:
        print("    (IORING_REGISTER_RING_FDS is not available: %s)" % res.stdout.strip())
        return
    expect_silent(res)
    expect_notice(res, "IORING_ENTER_REGISTERED_RING")


@case("uring/debug-counters-see-the-ring")
def _():
    res = uring("raw", "batch", env={"EPOLLFORK_DEBUG": "1"})
    check(res.rc == 0, res.describe())
    expect_silent(res)
    nums = debug_counters(res)
    check(nums["rings"] == 1 and nums["enters"] == 1001 and nums["epoll_ctl_mod"] == 32000
          and nums["epoll_ctl_add"] == 1 and nums["sqes"] == 64001 and nums["failed"] == 0,
          "counters: %r" % nums)

def debug_counters(res):
    dbg = [n["message"] for n in res.notices if "debug: io_uring" in n.get("message", "")]
    check(len(dbg) == 1, "one debug line: %r" % res.notices)
    return dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", dbg[0]))


for _fl in FLAVOURS:
    def _t(fl=_fl):
        # what an enter submits is read before it runs, up to 64 changes; the
        # rest after it: both parts judged, the same way
        res = uring(fl, "many", env={"EPOLLFORK_DEBUG": "1"})
        check(res.rc == 0 and "100 added and deleted" in res.stdout, res.describe())
        expect_silent(res)
        nums = debug_counters(res)
        check(nums["epoll_ctl_add"] == 101 and nums["epoll_ctl_del"] == 100 and nums["failed"] == 0,
              "counters: %r" % nums)
        check(nums["read_before"] > 0 and nums["read_after"] > 0 and
              nums["read_before"] + nums["read_after"] == 201, "before and after: %r" % nums)
        res = uring(fl, "child-add", env={"EPOLLFORK_DEBUG": "1"})
        nums = debug_counters(res)
        check(nums["read_before"] == 1 and nums["read_after"] == 0,
              "a small batch is read before its enter (liburing's tail too): %r" % nums)
    case("uring/%s-changes-read-before-and-after-the-enter" % _fl)(_t)

# ---------------------------------------------------------- Node 20, UV_USE_IO_URING=1

NODE_SCRIPT = os.path.join(SCEN, "node_uring.js")


def node_with_uring():
    """node, when its libuv sends epoll_ctl through io_uring (1.45+); None
    (and why, printed) otherwise."""
    node = shutil.which("node")
    check(node, "node is not installed (tests/run.sh installs nodejs)")
    uv = subprocess.run([node, "-p", "process.versions.uv"], capture_output=True, text=True).stdout.strip()
    if tuple(int(x) for x in uv.split(".")[:2]) < (1, 45):
        print("    (node's libuv %s has no io_uring epoll_ctl: nothing to see)" % uv)
        return None
    return node


for _mode in ("skip", "loopfork"):
    def _t(mode=_mode):
        node = node_with_uring()
        if not node:
            return
        if not os.path.exists("/usr/include/node/node_api.h"):
            print("    (no Node headers in /usr/include/node: the addon cannot be built)")
            return
        addon = build("node_forkwatch.c", shared=True, flags=["-I/usr/include/node"])
        res = run([node, os.path.join(SCEN, "node_forkwatch.js"), addon, mode],
                  env={"UV_USE_IO_URING": "1"}, timeout=60)
        check(res.rc == 0 and "child exit 0" in res.stdout and "parent done" in res.stdout,
              res.describe())
        if mode == "loopfork":
            expect_silent(res, "the child called uv_loop_fork")
            return
        ring = [r for r in res.kinds() if r["via"] == "io_uring"]
        check(len(ring) == 1, "one change through the ring reported:\n" + res.describe())
        r = ring[0]
        check(r["op"] == "EPOLL_CTL_ADD" and r["pid"] == r["owner_pid"] != r["modifier_pid"], "%r" % r)
        check("uv__epoll_ctl_flush" in functions(r["stacks"]["call"]), "libuv's own frames: %r"
              % functions(r["stacks"]["call"]))
        check(len(res.kinds("shared-io-uring")) == 1, "the ring is shared too:\n" + res.describe())
    case("uring/node-child-%s" % {"skip": "skips-uv_loop_fork-reported",
                                  "loopfork": "calls-uv_loop_fork-silent"}[_mode])(_t)


@case("uring/node-io-uring-unchanged-and-seen")
def _():
    node = node_with_uring()
    if not node:
        return
    env = {"UV_USE_IO_URING": "1"}
    bare = run([node, NODE_SCRIPT], shim=False, env=env, timeout=60)
    check(bare.rc == 0 and "echo: ping" in bare.stdout, bare.describe())
    res = run([node, NODE_SCRIPT], env=dict(env, EPOLLFORK_DEBUG="1"), timeout=60)
    check(res.rc == 0, res.describe())
    check(res.stdout == bare.stdout and res.stderr == bare.stderr,
          "output differs under the shim:\n%s\n---\n%s" % (bare.stdout + bare.stderr, res.stdout + res.stderr))
    expect_silent(res, "node with io_uring")
    dbg = [n["message"] for n in res.notices if "debug: io_uring" in n.get("message", "")]
    check(dbg, "the shim saw no ring: %r" % res.notices)
    nums = {}
    for line in dbg:
        for k, v in re.findall(r"(\w+)=(\d+)", line):
            nums[k] = nums.get(k, 0) + int(v)
    check(nums["rings"] >= 2 and nums["enters"] >= 1 and nums["epoll_ctl_add"] >= 1 and nums["outcome_cqe"] >= 1,
          "node's epoll_ctl ring is seen: %r" % nums)
    other = [n for n in res.notices if "debug: io_uring" not in n.get("message", "")]
    check(all("IORING_SETUP_SQPOLL" in n["message"] for n in other),
          "only the SQPOLL notice of libuv's file ring: %r" % other)
