"""test_robust.py - robustness and transparency: the shim under threads, forks
and signals; a program that takes fds away from it (closes everything, dup2s
over fd 2 or over the shim's own numbers); exact return values and errno;
spawns and vfork; epoll in a library constructor; abort mode; bad and missing
configuration; log destinations; the text format; the sanitizer builds.

Every case parses what the shim wrote (JSON lines, or the text format for the
text cases) and checks exact values, or checks that nothing was written."""
import json
import os
import re
import subprocess

from harness import (BUILD, ROOT, case, check, build, run, expect_one, expect_silent,
                     expect_stacks, functions)

prog = build  # tests/scenarios/<src>, compiled once


def stderr_lines(res):
    return [l for l in res.stderr.splitlines() if l.strip()]


def json_lines(text, kind="shared-epoll-ctl"):
    """The JSON records of kind in text (a process that reported also writes a
    'totals' record when it exits; kind=None returns every record)."""
    out = []
    for l in text.splitlines():
        if l.startswith("{"):
            obj = json.loads(l)
            if kind is None or obj.get("kind") == kind:
                out.append(obj)
    return out


def explanation_then_report(res):
    """stderr holds one explanation (a JSON notice record, as every record in
    JSON mode), then the report (then totals).  Returns the explanation as the
    text format would print it, `==PID== MESSAGE`, and the report."""
    lines = stderr_lines(res)
    check(len(lines) >= 2 and all(l.startswith("{") for l in lines),
          "an explanation, then JSON records, all JSON:\n" + res.stderr)
    first = json.loads(lines[0])
    check(first.get("kind") == "notice" and first.get("message"), "a notice first: %r" % first)
    others = [o for o in json_lines(res.stderr, None)[1:]
              if o["kind"] not in ("shared-epoll-ctl", "totals")]
    check(not others, "unexpected records: %r" % others)
    reps = json_lines(res.stderr)
    check(len(reps) == 1, "one report on stderr, got %d:\n%s" % (len(reps), res.stderr))
    return "==%d== %s" % (first["pid"], first["message"]), reps[0]


def del_conflict(res, epfd=None, fd=None):
    """The usual verdict: the child deleted, the parent waited and reports."""
    check(res.rc == 0, res.describe())
    r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
    if epfd is not None:
        check(r["epfd"] == epfd and r["fd"] == fd,
              "reported epfd/fd %r, the program used %r" % ((r["epfd"], r["fd"]), (epfd, fd)))
    return r


def printed_numbers(res, *names):
    vals = dict(re.findall(r"(\w+)=(-?\d+)", res.stdout))
    check(all(n in vals for n in names), "program did not print %s: %r" % (names, res.stdout))
    return [int(vals[n]) for n in names]


# ------------------------------------------------------------ 1. threads

@case("robust/threads-churn-and-forks-silent")
def _():
    res = run([prog("thread_churn.c", libs=["-lpthread"]), "churn"], timeout=30)
    check(res.rc == 0, res.describe())
    m = re.fullmatch(r"forks=(\d+)\n", res.stdout)
    check(m and int(m.group(1)) >= 100, "bounded run did its forks: %r" % res.stdout)
    expect_silent(res, "nobody shares a list improperly")
    check(not res.notices and not res.stderr, "no notice, nothing on stderr:\n" + res.describe())


@case("robust/threads-children-edit-shared-instance")
def _():
    res = run([prog("thread_churn.c", libs=["-lpthread"]), "shared"], timeout=30)
    check(res.rc == 0, res.describe())
    reps = res.kinds()
    check(1 <= len(reps) <= 2, "one report per call site in child_edits, got %d\n%s" % (
        len(reps), res.describe()))
    check(all(r["kind"] in ("shared-epoll-ctl", "totals") for r in res.reports) and not res.garbage,
          res.describe())
    check(len({r["op"] for r in reps}) == len(reps), "one report per site: %r" % [r["op"] for r in reps])
    for r in reps:
        check(r["op"] in ("EPOLL_CTL_DEL", "EPOLL_CTL_ADD"), "op %r" % r["op"])
        check(r["modifier_pid"] != r["other_pid"], "two processes: %r" % r)
        check(r["pid"] in (r["modifier_pid"], r["other_pid"]), "reported by one of them")
        # a child of a multithreaded parent keeps only the calling frame
        check(functions(r["stacks"]["call"]) == ["child_edits"],
              "call stack is the one frame: %r" % r["stacks"]["call"])
        check("multithreaded" in r["stack_notes"].get("call", ""), "says why: %r" % r["stack_notes"])


# ------------------------------------------------------------ 2. signals

for _mode in ("itimer", "thread"):
    def _t(mode=_mode):
        res = run([prog("signal_churn.c", libs=["-lpthread"]), mode], timeout=30)
        check(res.rc == 0, res.describe())
        m = re.fullmatch(r"signals=(\d+)\n", res.stdout)
        check(m and int(m.group(1)) > 0, "signals were delivered: %r" % res.stdout)
        expect_silent(res, "handler dups and closes, nobody shares")
        check(not res.stderr, res.describe())
    case("robust/signal-handler-dups-and-closes-%s" % _mode)(_t)


# ------------------------------------------------------------ 3. close every fd

for _mode in ("loop", "closerange", "closefrom", "loop012"):
    for _sink in ("file", "stderr"):
        def _t(mode=_mode, sink=_sink):
            res = run([prog("close_all.c"), mode], log=sink)
            if mode == "loop012":
                epfd, fd = 2, 0     # the program closed 0-2 too: its new fds start at 0
            else:
                epfd, fd = printed_numbers(res, "epfd", "fd")
            del_conflict(res, epfd, fd)
            if sink == "stderr":
                check(all(l.startswith("{") for l in stderr_lines(res)),
                      "only the report on stderr:\n" + res.stderr)
        case("robust/closed-every-fd-%s-then-conflict-%s" % (_mode, _sink))(_t)


# ------------------------------------------------------------ 4. fd 2 and the shim's own fds

for _mode in ("sock-after", "sock-before"):
    for _sink in ("stderr", "file"):
        def _t(mode=_mode, sink=_sink):
            res = run([prog("sink_fds.c"), mode], log=sink)
            check("socket bytes: 0\n" in res.stdout,
                  "not one byte may land in the program's socket (fd 2):\n" + res.describe())
            del_conflict(res)
            if sink == "stderr":
                check(all(l.startswith("{") for l in stderr_lines(res)), res.stderr)
        case("robust/fd2-socket-%s-report-on-original-stderr-%s" % (_mode, _sink))(_t)

for _mode in ("dup2-high", "dup2-high-nolimit", "dup2-foreign", "dup2-foreign-keep"):
    for _sink in ("file", "stderr"):
        def _t(mode=_mode, sink=_sink):
            res = run([prog("sink_fds.c"), mode], log=sink)
            check(res.rc == 0, "the program's dup2/fcntl/close on those numbers must succeed\n"
                  + res.describe())
            if mode.startswith("dup2-foreign"):
                n = int(re.search(r"foreign: (\d+)", res.stdout).group(1))
                check(n >= 1, "the shim's own fd was found in /proc/self/fd: %r" % res.stdout)
            if mode == "dup2-foreign-keep":
                # the numbers are the program's now: nothing of the shim may
                # still read, write or close them (libunwind's validation pipe
                # is among them)
                check("damaged: 0\n" in res.stdout, "the program's fds were touched:\n" + res.stdout)
            # every fd of the shim's but libunwind's pipe moves out of the way:
            # the registry's memfd too (a lost memfd meant "cannot map more of
            # the memory" and a fork stack lost in the depot)
            other = [n["message"] for n in res.notices if "libunwind's own pipe" not in n["message"]]
            check(not other, "notices other than libunwind's pipe: %r" % other)
            del_conflict(res)
            fork = [f["function"] for f in res.kinds()[0]["stacks"]["fork"]]
            check(fork[:1] == ["child_deletes_parent_waits"], "fork stack: %r" % fork)
        case("robust/program-takes-shim-fd-numbers-%s-%s" % (_mode, _sink))(_t)


# ------------------------------------------------------------ 5. errno and return values

LINE = re.compile(r"^(.*\S)\s+-> (-?\d+|void) errno=(\S+)$")
# calls whose result is a new fd number: compared by errno only in the errno
# cases, exactly in robust/fd-numbers-as-without-shim
FD_MAKERS = re.compile(r"^(dup\(|dup2\(|dup3\(|epoll_create|fcntl\(.*F_DUPFD|eventfd\(|socket\(|timerfd_create\()")


def errno_runs(binary, mode):
    bare = run([binary, mode], shim=False)
    shim = run([binary, mode])
    check(bare.rc == 0 and shim.rc == 0, "bare:\n%s\nshim:\n%s" % (bare.describe(), shim.describe()))
    return bare, shim


def errno_binary(fcntl64):
    if not fcntl64:
        return prog("errno_exact.c")
    b = prog("errno_exact.c", out="errno_exact64", flags=["-D_FILE_OFFSET_BITS=64"])
    syms = subprocess.run(["nm", "-D", "--undefined-only", b], capture_output=True, text=True).stdout
    check(re.search(r"\bfcntl64\b", syms), "the -D_FILE_OFFSET_BITS=64 build calls fcntl64:\n" + syms)
    return b


for _mode in ("plain", "forked"):
    for _f64 in (False, True):
        def _t(mode=_mode, f64=_f64):
            bare, shim = errno_runs(errno_binary(f64), mode)
            expect_silent(shim, "nobody else uses the lists")
            bl, sl = bare.stdout.splitlines(), shim.stdout.splitlines()
            check(len(bl) == len(sl) and len(bl) > 70, "same number of lines: %d vs %d" % (len(bl), len(sl)))
            calls = 0
            for b, s in zip(bl, sl):
                mb, ms = LINE.match(b), LINE.match(s)
                if not mb:
                    if not b.startswith("fds p="):
                        check(b == s, "line differs:\n  bare: %s\n  shim: %s" % (b, s))
                    continue
                calls += 1
                check(ms and mb.group(1) == ms.group(1), "line differs:\n  bare: %s\n  shim: %s" % (b, s))
                check(mb.group(3) == ms.group(3), "errno differs:\n  bare: %s\n  shim: %s" % (b, s))
                if FD_MAKERS.match(mb.group(1)) and int(mb.group(2)) >= 3:
                    check(int(ms.group(2)) >= 3, "an fd: %s" % s)
                else:
                    check(mb.group(2) == ms.group(2), "return differs:\n  bare: %s\n  shim: %s" % (b, s))
            check(calls > 70, "all calls compared (%d)" % calls)
            check("fds 900-1023: open=0 unexpected=0" in shim.stdout, shim.stdout)
        case("robust/errno-exact-%s%s" % (_mode, "-fcntl64" if _f64 else ""))(_t)


@case("robust/interposer-after-the-shim-sees-every-call")
def _():
    # The shim makes epoll_ctl, eventfd, socket, socketpair, pipe2 and
    # timerfd_create as their system call only where they resolve to libc's
    # own definition (src/direct.h): a library after it that defines them
    # must get every call, as many as without the shim.
    so = prog("after_lib.c", shared=True)
    exe = errno_binary(False)
    alone = run([exe, "plain"], shim=False, env={"LD_PRELOAD": so})
    both = run([exe, "plain"], preload_after=so)
    pat = re.compile(r"after_lib: (.*)")
    a, b = pat.search(alone.stderr), pat.search(both.stderr)
    check(a and b, "counts printed:\n%s\n%s" % (alone.describe(), both.describe()))
    counts = dict(kv.split("=") for kv in a.group(1).split())
    check(all(int(v) >= 1 for v in counts.values()), "every name was called: %s" % a.group(1))
    check(a.group(1) == b.group(1), "the same calls reach it:\n  alone: %s\n  shim first: %s"
          % (a.group(1), b.group(1)))
    check(alone.stdout.splitlines()[1:] == both.stdout.splitlines()[1:], "the same results")
    expect_silent(both, "nobody else uses the lists")


@case("robust/fd-numbers-as-without-shim")
def _():
    # Every fd number the program gets must be the one it gets without the
    # shim: the shim's own fds live high (>= 976), never among the lowest free
    # numbers the kernel hands out.
    for mode in ("plain", "forked"):
        bare, shim = errno_runs(errno_binary(False), mode)
        diffs = [(b, s) for b, s in zip(bare.stdout.splitlines(), shim.stdout.splitlines()) if b != s]
        check(not diffs, "%s: output differs from the bare run:\n%s" % (
            mode, "\n".join("  bare: %s\n  shim: %s" % d for d in diffs[:6])))


@case("robust/unwinder-leaves-program-fds-alone")
def _():
    # A daemon-like program: epoll used (the shim loads its unwinder), then
    # every fd from 3 closed, then 8 pipes each holding "ok", then a conflict.
    # Each pipe must still hold exactly "ok" (nobody read it, closed it or wrote
    # into it behind the program's back).
    res = run([prog("unwind_fds.c")])
    check(res.rc == 0, res.describe())
    check("bad=0\n" in res.stdout, "the program's fds were touched:\n" + res.stdout)
    del_conflict(res)


# ------------------------------------------------------------ 6. spawns and vfork

for _mode in ("posix_spawn", "system", "popen", "vfork-exec"):
    def _t(mode=_mode):
        res = run([prog("spawners.c"), mode])
        check(res.rc == 0 and res.stdout == "done\n", res.describe())
        expect_silent(res, mode + " of /bin/true while holding an instance")
        check(not res.stderr, res.describe())
    case("robust/silent-%s" % _mode)(_t)

for _mode in ("vfork-close", "vfork-dup2high"):
    def _t(mode=_mode):
        res = run([prog("spawners.c"), mode])
        check(res.stdout == "done\n", res.describe())
        del_conflict(res)
    case("robust/%s-child-leaves-parent-tables" % _mode)(_t)


@case("robust/vfork-child-closing-fd2-leaves-the-parent-its-stderr")
def _():
    res = run([prog("spawners.c"), "vfork-close2-first"], log="stderr")
    check(res.rc == 0 and res.stdout == "done\n", res.describe())
    del_conflict(res)


# ------------------------------------------------------------ 7. constructors

def ctor_prog():
    so = prog("ctor_lib.c", shared=True)
    return prog("ctor_main.c", libs=[so, "-Wl,-rpath," + os.path.dirname(so)])


@case("robust/ctor-library-inits-before-the-shim")
def _():
    # The premise of the two cases below: the loader runs ctor_lib.so's
    # constructor before libepollfork.so's.
    res = run([ctor_prog(), "closeonly"], env={"LD_DEBUG": "files"})
    inits = re.findall(r"calling init: (\S+)", res.stderr)
    names = [os.path.basename(p) for p in inits]
    check("ctor_lib.so" in names and "libepollfork.so" in names, "init order: %r" % names)
    check(names.index("ctor_lib.so") < names.index("libepollfork.so"), "init order: %r" % names)


@case("robust/ctor-library-conflict-reported")
def _():
    res = run([ctor_prog(), "conflict"])
    epfd, fd = printed_numbers(res, "epfd", "fd")
    r = del_conflict(res, epfd, fd)
    expect_stacks(r, call_fn="ctor_child_deletes")
    check("ctor" in functions(r["stacks"]["create"]), "created in the constructor: %r" %
          functions(r["stacks"]["create"]))


@case("robust/ctor-library-close-before-shim-init")
def _():
    bare = run([ctor_prog(), "closeonly"], shim=False)
    res = run([ctor_prog(), "closeonly"])
    line = [l for l in bare.stdout.splitlines() if l.startswith("ctor errnos:")]
    check(line and "close(-1)=EBADF" in line[0], bare.describe())
    check(line[0] in res.stdout.splitlines(),
          "errno of calls made before the shim initialized:\n  bare: %s\n  shim: %s" % (
              line[0], [l for l in res.stdout.splitlines() if l.startswith("ctor")]))
    r = del_conflict(res)
    check("main" in functions(r["stacks"]["create"]), "the shim works in main afterwards")


# ------------------------------------------------------------ 8. abort mode

@case("robust/abort-mode-reports-then-aborts")
def _():
    res = run([prog("ctl_child.c"), "del"], env={"EPOLLFORK_ON_REPORT": "abort"})
    check(res.rc == -6, "died of SIGABRT: rc=%s\n%s" % (res.rc, res.describe()))
    r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
    check(any("abort" in n.get("message", "") and n["pid"] == r["pid"] for n in res.notices),
          "says it aborts: %r" % res.notices)


@case("robust/abort-mode-correct-program-runs-to-end")
def _():
    for mode in ("closeonly", "parentonly"):
        res = run([prog("ctl_child.c"), mode], env={"EPOLLFORK_ON_REPORT": "abort"})
        check(res.rc == 0, res.describe())
        expect_silent(res, mode)


# ------------------------------------------------------------ 9. bad configuration

def _pid_of(res, line):
    m = re.match(r"==(\d+)== ", line)
    return int(m.group(1)) if m else -1


BAD = [
    # variable, value, default, scenario, argument
    ("EPOLLFORK_FORMAT", "xml", "text", "ctl_child.c", "del"),
    ("EPOLLFORK_STACK_DEPTH", "0", "24", "deep_stack.c", "40"),
    ("EPOLLFORK_STACK_DEPTH", "abc", "24", "deep_stack.c", "40"),
    ("EPOLLFORK_STACK_DEPTH", "1000", "24", "deep_stack.c", "40"),
    ("EPOLLFORK_STACK_DEPTH", "", "24", "deep_stack.c", "40"),
    ("EPOLLFORK_ON_REPORT", "maybe", "warn", "ctl_child.c", "del"),
    ("EPOLLFORK_DISABLE", "2", "0", "ctl_child.c", "del"),
    ("EPOLLFORK_LOGG", "x", None, "ctl_child.c", "del"),
]

for _var, _val, _def, _src, _arg in BAD:
    def _t(var=_var, val=_val, default=_def, src=_src, arg=_arg):
        fmt = None if var == "EPOLLFORK_FORMAT" else "json"
        res = run([prog(src), arg], env={var: val}, fmt=fmt)
        check(res.rc == 0, "the program runs on:\n" + res.describe())
        lines = stderr_lines(res)
        check(len(lines) == 1, "exactly one line on stderr, got %d:\n%s" % (len(lines), res.stderr))
        line = lines[0]
        if fmt == "json":
            # in JSON mode the complaint is a JSON notice record too
            obj = json.loads(line)
            check(obj.get("kind") == "notice", "a notice record: %r" % line)
            line = "==%d== %s" % (obj["pid"], obj["message"])
        pid = _pid_of(res, line)
        check(pid > 0 and line.startswith("==%d== epollfork: " % pid), "==PID== prefix: %r" % line)
        check(var in line, "names the variable: %r" % line)
        if default is None:
            check("unknown" in line, "says the name is unknown: %r" % line)
        else:
            check("'%s'" % val in line, "names the value: %r" % line)
            check("default '%s'" % default in line, "names the default: %r" % line)
        if var == "EPOLLFORK_FORMAT":
            # behaves as the default: a text report
            check(res.log_lines and all(l.startswith("==") for l in res.log_lines), res.describe())
            check(any("epollfork: WARNING: shared-epoll-ctl: " in l for l in res.log_lines),
                  "a text report:\n" + res.describe())
            return
        r = expect_one(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
        check(r["pid"] == pid, "the complaint came from the program's process %d, not %d" % (r["pid"], pid))
        if var == "EPOLLFORK_STACK_DEPTH":
            check(len(r["stacks"]["call"]) == 24, "default depth 24, got %d" % len(r["stacks"]["call"]))
    case("robust/bad-option-%s=%s" % (_var, _val or "empty"))(_t)


@case("robust/good-stack-depth-honoured")
def _():
    for depth, want in (("5", 5), ("1", 1), ("64", None)):
        res = run([prog("deep_stack.c"), "70"], env={"EPOLLFORK_STACK_DEPTH": depth})
        check(not res.stderr, "a good value is not complained about: %r" % res.stderr)
        r = expect_one(res, op="EPOLL_CTL_DEL")
        n = len(r["stacks"]["call"])
        check(n == (want or 64), "EPOLLFORK_STACK_DEPTH=%s gave %d frames" % (depth, n))
        check(functions(r["stacks"]["call"])[0] == "recurse", "top frame: %r" % r["stacks"]["call"][:2])


@case("robust/two-bad-options-two-lines")
def _():
    res = run([prog("ctl_child.c"), "del"],
              env={"EPOLLFORK_STACK_DEPTH": "abc", "EPOLLFORK_ON_REPORT": "maybe"})
    lines = stderr_lines(res)
    check(len(lines) == 2, "one line per bad variable:\n" + res.stderr)
    check(sum("EPOLLFORK_STACK_DEPTH" in l for l in lines) == 1 and
          sum("EPOLLFORK_ON_REPORT" in l for l in lines) == 1, res.stderr)
    expect_one(res, op="EPOLL_CTL_DEL")


# ------------------------------------------------------------ 10. disabled

@case("robust/disabled-conflict-no-output")
def _():
    bare = run([prog("deep_stack.c"), "40"], shim=False)
    for log in ("file", "stderr"):
        res = run([prog("deep_stack.c"), "40"], env={"EPOLLFORK_DISABLE": "1"}, log=log)
        check(res.rc == 0 and res.stdout == bare.stdout, "same program output:\n" + res.describe())
        check(res.stderr == "", "nothing on stderr: %r" % res.stderr)
        check(not res.log_lines, "nothing in the log: %r" % res.log_lines)
        check(not os.path.exists(os.path.join(res.logdir, "log")), "no log file created")


# ------------------------------------------------------------ 11. log destinations

@case("robust/log-per-pid-files")
def _():
    res = run([prog("two_reporters.c")], log="{dir}/log.%p")
    check(res.rc == 0, res.describe())
    parent, child = printed_numbers(res, "parent", "child")
    files = sorted(os.listdir(res.logdir))
    check(files == sorted(["log.%d" % parent, "log.%d" % child]), "one file per reporter: %r" % files)
    for pid, use in ((parent, "epoll_wait"), (child, "epoll_wait")):
        with open(os.path.join(res.logdir, "log.%d" % pid)) as f:
            objs = json_lines(f.read(), None)
        reps = [o for o in objs if o["kind"] == "shared-epoll-ctl"]
        check(len(reps) == 1, "one report in log.%d: %r" % (pid, objs))
        check(all(o["pid"] == pid for o in objs), "only records of %d in log.%d" % (pid, pid))
        r = reps[0]
        check(r["pid"] == pid and r["other_pid"] == pid and r["other_use"] == use,
              "log.%d holds its own report: %r" % (pid, r))
        check(r["modifier_pid"] == (child if pid == parent else parent), "the other one changed it")
    check(not res.stderr, res.describe())


for _log in ("{dir}/missing/log", "{dir}/missing/log.%p"):
    def _t(log=_log):
        res = run([prog("ctl_child.c"), "del"], log=log)
        check(res.rc == 0, res.describe())
        why, r = explanation_then_report(res)
        m = re.match(r"==(\d+)== epollfork: EPOLLFORK_LOG: cannot open log file '([^']+)' \((.+)\); "
                     r"reporting to stderr$", why)
        check(m, "explains why: %r" % why)
        pid = int(m.group(1))
        check(m.group(2) == log.replace("{dir}", res.logdir).replace("%p", str(pid)), "names the path: %r" % why)
        check(m.group(3) == "No such file or directory", "and the reason: %r" % why)
        check(r["pid"] == pid and r["op"] == "EPOLL_CTL_DEL", "the report follows on stderr: %r" % r)
        check(not os.path.exists(os.path.join(res.logdir, "missing")), "no directory was made")
    case("robust/log-dir-missing-falls-back-to-stderr%s" % ("-pid" if "%p" in _log else ""))(_t)


@case("robust/log-pid-file-after-setuid-falls-back-to-stderr")
def _():
    check(os.getuid() == 0, "this case needs root (the suite runs as root)")
    res = run([prog("drop_privs.c")], log="{dir}/log.%p")
    check(res.rc == 0, res.describe())
    (child,) = printed_numbers(res, "child")
    check("parent woke with 1 events" in res.stdout, res.stdout)
    why, r = explanation_then_report(res)
    check(why.startswith("==%d== epollfork: EPOLLFORK_LOG: cannot open log file '%s/log.%d' (Permission denied)"
                         % (child, res.logdir, child)), "explains why: %r" % why)
    check(r["pid"] == child and r["modifier_pid"] == child and r["other_use"] == "blocked-in-wait",
          "the unprivileged child reported: %r" % r)
    check(os.listdir(res.logdir) == [], "no file was created: %r" % os.listdir(res.logdir))


# ------------------------------------------------------------ 12. text format

FRAME = re.compile(r"^==(\d+)==    #(\d+) 0x[0-9a-f]+ in (\S+) \((.+)\+0x([0-9a-f]+)\)$")
SECTIONS = (("  the change: ", "call"), ("  the fork ", "fork"), ("  the epoll instance ", "create"),
            ("  fd ", "add"), ("  the affected use: ", "use"))


def parse_kv(s):
    out = {}
    for k, v in re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', s):
        out[k] = re.sub(r'\\(.)', r'\1', v[1:-1]) if v.startswith('"') else v
    return out


@case("robust/text-format-matches-json")
def _():
    text = run([prog("ctl_child.c"), "del"], fmt=None)
    js = run([prog("ctl_child.c"), "del"])
    check(text.rc == 0 and js.rc == 0, text.describe())
    j = expect_one(js, op="EPOLL_CTL_DEL")
    lines = text.log_lines
    check(len(lines) > 10, text.describe())
    m = re.match(r"^==(\d+)== ", lines[0])
    check(m, "first line: %r" % lines[0])
    pid = int(m.group(1))
    check(all(l.startswith("==%d== " % pid) for l in lines), "every line starts with ==%d==" % pid)
    check("epollfork: WARNING: shared-epoll-ctl: " in lines[0], lines[0])
    check(sum("WARNING" in l for l in lines) == 1 and sum("SUMMARY" in l for l in lines) == 1,
          "one report:\n" + "\n".join(lines))
    # the report ends with its SUMMARY line; the process's TOTALS line (at
    # exit) may follow
    end = [i for i, l in enumerate(lines) if " epollfork: SUMMARY: " in l][0]
    check(all(" epollfork: TOTALS " in l for l in lines[end + 1:]), "after SUMMARY: %r" % lines[end + 1:])
    summ = lines[end]
    lines = lines[:end + 1]
    check(summ.startswith("==%d== epollfork: SUMMARY: shared-epoll-ctl " % pid), "last line: %r" % summ)
    kv = parse_kv(summ.split("SUMMARY: shared-epoll-ctl ", 1)[1])
    # pids differ between the two runs: compare their relations, the rest exactly
    check(int(kv["pid"]) == pid and int(kv["other_pid"]) == pid and int(kv["owner_pid"]) == pid,
          "reported by the parent, its own instance: %r" % kv)
    check(int(kv["modifier_pid"]) not in (pid, 0), kv)
    check(j["pid"] == j["other_pid"] == j["owner_pid"] != j["modifier_pid"], j)
    # one record, two renderings: the SUMMARY has exactly the JSON's scalar fields
    scalars = {k for k, v in j.items() if not isinstance(v, (dict, list))} - {"tool", "version", "kind"}
    check(set(kv) == scalars, "SUMMARY keys %s, JSON scalar keys %s" % (sorted(kv), sorted(scalars)))
    for k in ("op", "epfd", "fd", "other_use", "site", "lost_changes", "data"):
        check(str(kv.get(k)) == str(j[k]), "SUMMARY %s=%r but JSON %s=%r" % (k, kv.get(k), k, j[k]))
    check(kv.get("events", "") == j["events"], "events %r vs %r" % (kv.get("events"), j["events"]))
    check(re.fullmatch(r"pipe:\[\d+\]", kv["target"]) and re.fullmatch(r"pipe:\[\d+\]", j["target"]),
          "targets: %r %r" % (kv["target"], j["target"]))
    # the stacks: same frames (function, module, offset) in the same order
    stacks, cur = {}, None
    for l in lines[1:-1]:
        body = l[len("==%d==" % pid):]
        f = FRAME.match(l)
        if f:
            check(cur is not None, "frame outside a section: %r" % l)
            check(int(f.group(2)) == len(stacks[cur]), "frames numbered from #0: %r" % l)
            stacks[cur].append((f.group(3), f.group(4), "0x" + f.group(5)))
            continue
        for prefix, key in SECTIONS:
            if body.startswith(prefix):
                cur = key
                stacks[cur] = []
                break
        else:
            check(body.startswith("    <") or body.startswith("    ("), "unexpected line %r" % l)
    for key in j["stacks"]:
        want = [(f["function"] or "??", f["module"], f["offset"]) for f in j["stacks"][key]]
        check(stacks.get(key) == want, "stack %s: text %r\n json %r" % (key, stacks.get(key), want))


# ------------------------------------------------------------ 13. no epoll at all

@case("robust/no-epoll-program-untouched")
def _():
    bare = run([prog("no_epoll.c")], shim=False)
    check(bare.rc == 0, bare.describe())
    for log in ("file", "stderr"):
        res = run([prog("no_epoll.c")], log=log)
        check(res.rc == 0, res.describe())
        check(res.stdout == bare.stdout, "stdout differs:\n%s\n---\n%s" % (bare.stdout, res.stdout))
        check(res.stderr == bare.stderr, "stderr differs:\n%r\n---\n%r" % (bare.stderr, res.stderr))
        path = os.path.join(res.logdir, "log")
        check(not os.path.exists(path) or os.path.getsize(path) == 0, "the shim wrote nothing")


# ------------------------------------------------------------ 14. sanitizers

def variant(kind):
    lib = os.path.join(BUILD, kind, "libepollfork.so")
    r = subprocess.run(["make", "-s", "-C", ROOT, os.path.relpath(lib, ROOT)], capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(lib), "make %s failed:\n%s" % (lib, r.stderr))
    if kind == "asan":
        so = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                            text=True).stdout.strip()
        check(os.path.isabs(so) and os.path.exists(so), "libasan.so not found: %r" % so)
        # libasan must be the first library of the process ("ASan runtime
        # does not come first in initial library list" otherwise, checked):
        # preload_extra puts it ahead of the shim; only the shim is
        # instrumented, the scenario programs are not.
        # detect_leaks=0: LeakSanitizer runs at exit() in every fork child, and
        # in a child of a multithreaded parent it believes the parent's threads
        # still run ("Running thread N was not suspended. False leaks are
        # possible.") and sometimes hangs; with libasan preloaded alone, no
        # shim, thread_churn.c does the same (rc 124 under `timeout 60`).  So
        # it is LSan and fork, not the shim; the shim's own leaks are not what
        # these cases look for (the shim itself never calls malloc).
        return dict(lib=lib, preload_extra=so, env={"ASAN_OPTIONS": "detect_leaks=0"})
    return dict(lib=lib, env={"UBSAN_OPTIONS": "print_stacktrace=1"})


SANITIZER_ERRORS = re.compile(r"runtime error|AddressSanitizer|UndefinedBehaviorSanitizer|LeakSanitizer")

SAN_SCENARIOS = [
    ("ctl_child-del", "ctl_child.c", [], ["del"], "EPOLL_CTL_DEL", "other"),
    ("blocked-child-del", "blocked.c", ["-lpthread"], ["child-del"], "EPOLL_CTL_DEL", "modifier"),
    ("threads-churn", "thread_churn.c", ["-lpthread"], ["churn"], None, None),
    ("threads-shared", "thread_churn.c", ["-lpthread"], ["shared"], "many", None),
    ("close-all-loop", "close_all.c", [], ["loop"], "EPOLL_CTL_DEL", "other"),
    ("vfork-close", "spawners.c", [], ["vfork-close"], "EPOLL_CTL_DEL", "other"),
    # io_uring: the SQEs and CQEs of a ring read under the sanitizers
    ("uring-child-del", "uring.c", [], ["child-del"], "EPOLL_CTL_DEL", "other"),
    ("uring-batch", "uring.c", [], ["batch", "300"], None, None),
]

for _kind in ("ubsan", "asan"):
    for _name, _src, _libs, _args, _op, _rep in SAN_SCENARIOS:
        def _t(kind=_kind, src=_src, libs=_libs, args=_args, op=_op, rep=_rep):
            v = variant(kind)
            res = run([prog(src, libs=libs)] + args, timeout=60, **v)
            check(not SANITIZER_ERRORS.search(res.stderr), "sanitizer error:\n" + res.stderr[-4000:])
            check(res.rc == 0, res.describe())
            if op is None:
                expect_silent(res)
            elif op == "many":
                check(1 <= len(res.kinds()) <= 2 and not res.garbage, res.describe())
            else:
                r = expect_one(res, op=op, reporter=rep)
                expect_stacks(r)
        case("robust/%s-%s" % (_kind, _name))(_t)
