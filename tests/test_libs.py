"""test_libs.py - real event libraries from Debian (libuv, libevent, libev,
Python asyncio, gevent) across a fork: one report when the child edits the
inherited epoll instance, silence when it uses the library's fork handling.

Every case is checked twice: the shim's JSON reports, and ground truth from
strace -f run without the shim (did the child make a successful epoll_ctl on
an epoll fd it inherited and had not closed?).  A disagreement between the two
fails the case, so a case cannot pass because a library changed its
behaviour under us (libuv, for one, batches its changes).

The scenario programs (tests/scenarios/lib_*.c, py_*.py) document each mode.
"""
import os
import re
import shutil
import subprocess
import tempfile

import harness
from harness import case, check, build, run, expect_one, expect_stacks, expect_silent, functions, Fail

PY = "/usr/bin/python3"     # Debian's python3.11 (the pyenv one on PATH has no gevent)

# Environment variables the libraries read that would change their backend or
# behaviour; the cases decide these in code, so drop any from the caller.
LIB_ENV = {"EVENT_NOEPOLL": None, "EVENT_NOSELECT": None, "EVENT_NOPOLL": None,
           "EVENT_EPOLL_USE_CHANGELIST": None, "EVENT_SHOW_METHOD": None,
           "LIBEV_FLAGS": None, "UV_THREADPOOL_SIZE": None,
           "PYTHONPATH": None, "PYTHONHOME": None, "PYTHONASYNCIODEBUG": None,
           "GEVENT_LOOP": None, "GEVENT_BACKEND": None}


def pkg(name):
    def q(what):
        r = subprocess.run(["pkg-config", what, name], capture_output=True, text=True)
        if r.returncode != 0:
            raise Fail("pkg-config %s %s failed (is the -dev package installed? tests/run.sh "
                       "installs it): %s" % (what, name, r.stderr))
        return r.stdout.split()
    return q("--cflags"), q("--libs")


def prog(lang):
    if lang == "uv":
        cf, lf = pkg("libuv")
        return build("lib_uv.c", flags=cf, libs=lf)
    if lang == "event":
        cf, lf = pkg("libevent")
        return build("lib_event.c", flags=cf, libs=lf)
    if lang == "ev":
        return build("lib_ev.c", libs=["-lev"])
    raise ValueError(lang)


def script(name):
    return [PY, os.path.join(os.path.dirname(os.path.abspath(__file__)), "scenarios", name)]


# ------------------------------------------------------------ strace oracle

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_CALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+|\?)")
TRACED = "epoll_create,epoll_create1,epoll_ctl,close,close_range,dup2,dup3,clone,clone3,fork,vfork"


def strace_shared_ctls(cmd, timeout=60):
    """Run cmd under strace -f, with the shim preloaded into the traced
    program only; return the successful epoll_ctl calls (pid, op, epfd, fd)
    that a process made on an epoll fd it inherited through a fork and still
    had (the ground truth of a change to a list shared with its parent), and
    the harness Result of that run.  The shim is there so that fd numbers are
    the ones of the shim's runs (libunwind opens a pipe of its own)."""
    if not shutil.which("strace"):
        raise Fail("strace is needed for the ground truth (tests/run.sh installs it)")
    d = tempfile.mkdtemp(prefix="epf-strace-")
    out = os.path.join(d, "trace")
    env = dict(LIB_ENV, LD_PRELOAD=None)
    try:
        res = run(["strace", "-f", "-qq", "-o", out, "-e", "trace=" + TRACED,
                   "-E", "LD_PRELOAD=" + harness.LIB] + cmd, env=env, timeout=timeout)
        check(res.rc == 0, "strace run failed: %s" % res.describe())
        with open(out, errors="replace") as f:
            raw = [l.rstrip("\n") for l in f]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    # join "<unfinished ...>" with its "<... resumed>" line, per pid
    calls, pending = [], {}
    for line in raw:
        m = _LINE.match(line)
        if not m:
            continue
        pid, text = int(m.group(1)), m.group(2)
        if text.endswith("<unfinished ...>"):
            pending[pid] = (len(calls), text[:-len("<unfinished ...>")].rstrip())
            calls.append(None)              # keep the call's place (it started here)
            continue
        rm = re.match(r"^<\.\.\. \w+ resumed>\s*(.*)$", text)
        if rm and pid in pending:
            idx, head = pending.pop(pid)
            calls[idx] = (pid, head + rm.group(1))
            continue
        calls.append((pid, text))
    procs = {}          # pid -> {epoll fd: "own" | "inherited"}; threads share their leader's
    shared = []
    for item in calls:
        if item is None:
            continue
        pid, text = item
        m = _CALL.match(text)
        if not m:
            continue
        name, args, ret = m.group(1), m.group(2), m.group(3)
        mine = procs.setdefault(pid, {})
        ok = ret != "?" and int(ret) >= 0
        argv = [a.strip() for a in args.split(",")]
        if name in ("epoll_create", "epoll_create1") and ok:
            mine[int(ret)] = "own"
        elif name == "close" and ok:
            mine.pop(int(argv[0]), None)
        elif name in ("dup2", "dup3") and ok:
            mine.pop(int(argv[1]), None)
            if int(argv[0]) in mine:
                mine[int(argv[1])] = mine[int(argv[0])]
        elif name == "close_range" and ok:
            lo, hi = int(argv[0]), int(argv[1]) if argv[1].isdigit() else 1 << 31
            if "CLOSE_RANGE_CLOEXEC" not in args:
                for fd in [fd for fd in mine if lo <= fd <= hi]:
                    del mine[fd]
        elif name in ("clone", "clone3", "fork", "vfork") and ok and int(ret) > 0:
            child = int(ret)
            if "CLONE_THREAD" in args:
                procs[child] = mine                     # the same fd table
            else:
                procs[child] = {fd: "inherited" for fd in mine}
        elif name == "epoll_ctl" and ok:
            epfd = int(argv[0])
            if mine.get(epfd) == "inherited":
                shared.append((pid, argv[1], epfd, int(argv[2])))
    return shared, res


def ground_truth(cmd):
    """The shared changes strace saw, as (op, epfd, fd); the shim's reports of
    that same run must name only those changes, and exist iff one exists."""
    truth, res = strace_shared_ctls(cmd)
    seen = [(r["modifier_pid"], r["op"], r["epfd"], r["fd"]) for r in res.kinds()]
    # every report is a change strace saw, and there is one iff there is a
    # change (several changes from one call stack make one report)
    check(set(seen) <= set(truth) and bool(seen) == bool(truth),
          "under strace, the shim reported %r; strace saw %r\n%s" % (seen, truth, res.describe()))
    return [t[1:] for t in truth]


# ---------------------------------------------------------------- verdicts

def conflict(cmd, op, lib_module, lib_functions, driver, read=None, extra_ok=None):
    """One report, by the parent at its epoll_wait, of the child's op; the
    call stack starts in the library and shows lib_functions and driver."""
    truth = ground_truth(cmd)
    check(truth and all(t[0] == op for t in truth),
          "strace: the child should make %s on the inherited instance, saw %r" % (op, truth))
    res = run(cmd, env=LIB_ENV)
    check(res.rc == 0, res.describe())
    r = expect_one(res, op=op, use="epoll_wait", reporter="other")
    check(r["owner_pid"] == r["other_pid"], "the affected process is the creator (parent): %r" % r)
    check(r["modifier_pid"] != r["other_pid"], "the modifier is the child")
    check((op, r["epfd"], r["fd"]) in truth,
          "the report names the change strace saw: %r vs %r" % ((op, r["epfd"], r["fd"]), truth))
    check(r["fork_parent_pid"] == r["other_pid"] and r["fork_child_pid"] == r["modifier_pid"],
          "split at the parent's fork of the child: %r" % r)
    expect_stacks(r, names=("call", "fork", "create", "use"))
    call = r["stacks"]["call"]
    check(os.path.basename(call[0]["module"]).startswith(lib_module),
          "the call stack starts in %s: %r" % (lib_module, call[0]))
    names = functions(call)
    for fn in list(lib_functions) + ([driver] if driver else []):
        check(fn in names, "%s not in the call stack %s" % (fn, names))
    if read is not None:
        check("parent read=%s\n" % read in res.stdout, "parent read %s: %s" % (read, res.stdout))
    return r, res


def silent(cmd, read=None, why=""):
    truth = ground_truth(cmd)
    check(not truth, "strace: the child should not touch the inherited instance, saw %r" % truth)
    res = run(cmd, env=LIB_ENV)
    check(res.rc == 0, res.describe())
    expect_silent(res, why)
    if read is not None:
        check("parent read=%s\n" % read in res.stdout, "parent read %s: %s" % (read, res.stdout))
    return res


# ------------------------------------------------------------------- libuv
# parent read: 1 = its read callback got the byte it wrote; 0 = the child's
# lazy DEL took its pipe out of the shared list; 2 = it also got the child's.

for _mode, _op, _fn, _read in (("start", "EPOLL_CTL_ADD", "uv_run", 1),
                               ("readstop", "EPOLL_CTL_DEL", "uv_run", 0),
                               ("pollstop", "EPOLL_CTL_DEL", "uv_poll_stop", 1)):
    def _t(mode=_mode, op=_op, fn=_fn, read=_read):
        conflict([prog("uv"), mode], op, "libuv.so", [fn], "child_drives_loop", read)
    case("libs/uv-no-loop-fork-%s" % _mode)(_t)

    def _t(mode=_mode, read=_read):
        silent([prog("uv"), "fork-" + mode], 2 if mode == "readstop" else 1, "uv_loop_fork")
    case("libs/uv-loop-fork-silent-%s" % _mode)(_t)


@case("libs/uv-no-loop-fork-pollinit-three-changes")
def _():
    # uv_poll_init in the child probes with ADD+DEL (uv__io_check_fd) before
    # uv__io_poll applies the real ADD: three changes from three call stacks,
    # so three reports (the dedup key is the instance and the call stack)
    cmd = [prog("uv"), "pollinit"]
    truth = ground_truth(cmd)
    check([t[0] for t in truth] == ["EPOLL_CTL_ADD", "EPOLL_CTL_DEL", "EPOLL_CTL_ADD"], "strace: %r" % (truth,))
    res = run(cmd, env=LIB_ENV)
    check(res.rc == 0, res.describe())
    reps = res.kinds()
    check(sorted(r["op"] for r in reps) == ["EPOLL_CTL_ADD", "EPOLL_CTL_ADD", "EPOLL_CTL_DEL"],
          "one report per change: %s" % res.describe())
    for r in reps:
        check(r["pid"] == r["other_pid"] != r["modifier_pid"], "reported by the parent: %r" % r)
        check((r["op"], r["epfd"], r["fd"]) in truth, "as strace saw: %r" % r)
        check("child_drives_loop" in functions(r["stacks"]["call"]), "driver in the stack")
    check(sum("uv_poll_init" in functions(r["stacks"]["call"]) for r in reps) == 2, "two from the probe")
    check(sum("uv_run" in functions(r["stacks"]["call"]) for r in reps) == 1, "one from uv__io_poll")


@case("libs/uv-loop-fork-silent-pollinit")
def _():
    silent([prog("uv"), "fork-pollinit"], 1, "uv_loop_fork")


# ---------------------------------------------------------------- libevent
# Without the changelist, event_add/event_del call epoll_ctl at once (the
# stack shows event_add / evmap_io_del_); with it, the change is applied by
# epoll_dispatch inside event_base_loop.

for _mode, _op, _fns, _read in (("add", "EPOLL_CTL_ADD", ["event_add"], 1),
                                ("del", "EPOLL_CTL_DEL", ["evmap_io_del_"], 0),
                                ("delidle", "EPOLL_CTL_DEL", ["evmap_io_del_"], 0),
                                ("cl-add", "EPOLL_CTL_ADD", ["event_base_loop"], 1),
                                ("cl-del", "EPOLL_CTL_DEL", ["event_base_loop"], 0),
                                ("cl-delreadd", "EPOLL_CTL_MOD", ["event_base_loop"], 1)):
    def _t(mode=_mode, op=_op, fns=_fns, read=_read):
        conflict([prog("event"), mode], op, "libevent", fns, "child_drives_base", read)
    case("libs/event-no-reinit-%s" % _mode)(_t)

for _mode in ("add", "del", "delreadd", "delidle", "cl-add", "cl-del", "cl-delreadd", "cl-delidle"):
    def _t(mode=_mode):
        silent([prog("event"), "reinit-" + mode], 1, "event_reinit")
    case("libs/event-reinit-silent-%s" % _mode)(_t)


@case("libs/event-no-reinit-delreadd-two-changes")
def _():
    # no changelist: a DEL and then an ADD, two changes with two call stacks
    cmd = [prog("event"), "delreadd"]
    truth = ground_truth(cmd)
    check([t[0] for t in truth] == ["EPOLL_CTL_DEL", "EPOLL_CTL_ADD"], "strace: %r" % (truth,))
    res = run(cmd, env=LIB_ENV)
    reps = res.kinds()
    check(sorted(r["op"] for r in reps) == ["EPOLL_CTL_ADD", "EPOLL_CTL_DEL"],
          "one report per change: %s" % res.describe())
    for r in reps:
        check(r["pid"] == r["other_pid"] != r["modifier_pid"], "reported by the parent: %r" % r)
        check("child_drives_base" in functions(r["stacks"]["call"]), "driver in the stack")


@case("libs/event-changelist-delidle-silent")
def _():
    # with the changelist, a DEL queued by a loop that returns before
    # dispatching (no event left) never reaches the kernel: nothing to report
    silent([prog("event"), "cl-delidle"], 1, "queued DEL never applied")


# ------------------------------------------------------------------- libev

for _mode, _op, _read in (("start", "EPOLL_CTL_ADD", 1), ("stop", "EPOLL_CTL_DEL", 0)):
    def _t(mode=_mode, op=_op, read=_read):
        conflict([prog("ev"), mode], op, "libev.so", ["ev_run"], "child_drives_loop", read)
    case("libs/ev-no-loop-fork-%s" % _mode)(_t)

    def _t(mode=_mode, read=_read):
        silent([prog("ev"), "fork-" + mode], 2 if mode == "stop" else 1, "ev_loop_fork")
    case("libs/ev-loop-fork-silent-%s" % _mode)(_t)

    def _t(mode=_mode, read=_read):
        silent([prog("ev"), "forkcheck-" + mode], 2 if mode == "stop" else 1, "EVFLAG_FORKCHECK")
    case("libs/ev-forkcheck-silent-%s" % _mode)(_t)


# ---------------------------------------------------------- Python asyncio

def python_stack(r):
    """The modifier's stack is native: CPython's interpreter frames, named
    from python3.11's dynamic symbols (Python function names are not there)."""
    call = r["stacks"]["call"]
    mods = {os.path.basename(f["module"]) for f in call}
    check(any(m.startswith("python3.11") or m.startswith("libpython3.11") for m in mods),
          "python frames in the call stack: %r" % mods)
    names = functions(call)
    for fn in ("_PyEval_EvalFrameDefault", "Py_RunMain"):
        check(fn in names, "%s not in the call stack %s" % (fn, names))


for _mode, _op in (("close", "EPOLL_CTL_DEL"), ("addreader", "EPOLL_CTL_ADD")):
    def _t(mode=_mode, op=_op):
        cmd = script("py_asyncio_fork.py") + [mode]
        truth = ground_truth(cmd)
        check(truth and all(t[0] == op for t in truth), "strace: %r" % (truth,))
        res = run(cmd, env=LIB_ENV)
        check(res.rc == 0, res.describe())
        r = expect_one(res, op=op, use="epoll_wait", reporter="other")
        check((op, r["epfd"], r["fd"]) in truth, "as strace saw: %r %r" % (r, truth))
        check(r["owner_pid"] == r["other_pid"] and r["fork_child_pid"] == r["modifier_pid"], repr(r))
        expect_stacks(r, names=("call", "fork", "create", "use"))
        python_stack(r)
        check("_PyEval_EvalFrameDefault" in functions(r["stacks"]["use"]), "the parent's use is python's")
        if op == "EPOLL_CTL_DEL":
            check(r["target"].startswith("socket:["), "the self-pipe is a socketpair: %r" % r["target"])
    case("libs/asyncio-child-%s" % _mode)(_t)

for _mode in ("exit", "run", "newloop"):
    def _t(mode=_mode):
        silent(script("py_asyncio_fork.py") + [mode], why="asyncio child " + mode)
    case("libs/asyncio-silent-child-%s" % _mode)(_t)


# ------------------------------------------------------------------- gevent
# gevent's libev loop always has EVFLAG_FORKCHECK: with or without
# gevent.os.fork (reinit), the child's first ev_run replaces the epoll fd.

for _mode in ("geventfork", "osfork"):
    def _t(mode=_mode):
        r = subprocess.run([PY, "-c", "import gevent"], capture_output=True)
        check(r.returncode == 0, "python3-gevent missing (tests/run.sh installs it)")
        res = silent(script("py_gevent_fork.py") + [mode], why="gevent " + mode)
        check("parent read=b'p'" in res.stdout, "the parent's greenlet woke: %s" % res.stdout)
    case("libs/gevent-silent-%s" % _mode)(_t)
