"""test_pyframes.py - Python frames in reports (src/pyframes.c): the user's own file and line.

Real Python programs under Debian's /usr/bin/python3 (3.11) make each bug
across a fork (asyncio, gevent, eventlet, uvloop: tests/scenarios/py_frames_*.py).
The scripts mark their lines (`# LINE:call`, `# LINE:fork`, `# LINE:create`,
`# LINE:use`); each case checks that the JSON report's python_stacks name
exactly those lines (the child's offending call, the os.fork(), the line that
created the loop, the parent's use), that `site` names the call's line, and
that the text report shows the same `File "...", line N, in F` lines.  Every
positive case has a silent neighbour (the same program, the child makes no
call).  stale-registration and epoll-fd-exec-leak made from Python name the
close and the exec (py_frames_kinds.py).  Other cases: the frames are the calling thread's and the calling
greenlet's; a child of a parent with a second thread gets its Python frames
and a Python site though no native unwinding is done there; a C program has
no python_stacks at all; suppressions and epollfork-report work on the Python
site; the layout table is the interpreters' own (pyoffsets.c), and other
CPython versions (pyenv builds, when present) give the same lines or,
for a version without a layout, no Python frames and an unchanged report;
the frame walk runs clean under UBSan and ASan.
"""
import glob
import json
import os
import re
import subprocess
import tempfile

from harness import case, check, build, run, expect_one, expect_silent, Fail, ROOT, SCEN

PY = "/usr/bin/python3"     # Debian's python3.11, with gevent, eventlet and uvloop
PYENV = "/root/.pyenv/versions"
ENV = {"PYTHONPATH": None, "PYTHONHOME": None, "PYTHONASYNCIODEBUG": None,
       "GEVENT_LOOP": None, "EVENTLET_HUB": None, "PYTHONHASHSEED": "0",
       "EVENTLET_NO_GREENDNS": "yes"}   # eventlet imports in 0.6 s instead of 1.3 s
FRAME_LINE = re.compile(r'^==(\d+)==    File "(.*)", line (\d+), in (.*)$')


def script(name):
    return os.path.join(SCEN, name)


def marks(path):
    """`# LINE:name` -> line number, for every mark of a scenario script."""
    out = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            m = re.search(r"# LINE:([\w:]+)\s*$", line)
            if m:
                out[m.group(1)] = n
    return out


def py_frames(r, role):
    return [(f["file"], f["line"], f["function"]) for f in (r.get("python_stacks") or {}).get(role, [])]


def expect_line(r, role, path, line, fn=None, innermost_user=False):
    """python_stacks[role] has a frame of path at line (in fn); with
    innermost_user, it is the innermost frame outside the library."""
    frames = py_frames(r, role)
    hits = [f for f in frames if f[0] == path and f[1] == line and (fn is None or f[2] == fn)]
    check(hits, "python_stacks.%s has no frame %s:%d%s: %r" % (
        role, os.path.basename(path), line, " in %s" % fn if fn else "", frames))
    if innermost_user:
        user = [f for f in frames if "/python3" not in f[0] and not f[0].startswith("<frozen")]
        check(user and user[0][:2] == (path, line),
              "the innermost user frame of %s is %r, not line %d" % (role, user[:1], line))


def py_site(path, line, fn):
    return "%s:%d(%s)" % (os.path.basename(path), line, fn)


def text_frames(res):
    """The Python frame lines of a text log: (file, line, function)."""
    return {(m.group(2), int(m.group(3)), m.group(4))
            for m in (FRAME_LINE.match(l) for l in res.log_lines) if m}


def python_ok(module):
    r = subprocess.run([PY, "-c", "import " + module], capture_output=True, text=True)
    check(r.returncode == 0, "%s missing for %s (tests/run.sh installs it): %s" % (module, PY, r.stderr[-300:]))


def report_lines(path, mode_args, call_key, fn, op=None, reporter="other", text=True, py=PY,
                 fork_key="fork"):
    """Run a scenario (JSON, then text); the one report names the marked lines."""
    m = marks(path)
    res = run([py, path] + mode_args, env=ENV)
    check(res.rc == 0, res.describe())
    r = expect_one(res, op=op, reporter=reporter)
    expect_line(r, "call", path, m[call_key], fn, innermost_user=True)
    expect_line(r, "fork", path, m[fork_key])
    expect_line(r, "create", path, m["create"])
    check(r["site"] == py_site(path, m[call_key], fn), "site %r, expected %r" % (
        r["site"], py_site(path, m[call_key], fn)))
    check(set(r["python_stacks"]) <= set(r["stacks"]), "python_stacks keys %r are stacks keys %r" % (
        sorted(r["python_stacks"]), sorted(r["stacks"])))
    if text:
        t = run([py, path] + mode_args, env=ENV, fmt="text")
        check(t.rc == 0, t.describe())
        tf = text_frames(t)
        for key in (call_key, fork_key, "create"):
            check(any(f[0] == path and f[1] == m[key] for f in tf),
                  "the text report has no `File \"%s\", line %d` (%s):\n%s" % (
                      path, m[key], key, "\n".join(t.log_lines)[-4000:]))
        check(any(("site=" + py_site(path, m[call_key], fn)) in l for l in t.log_lines
                  if "SUMMARY:" in l), "text SUMMARY site:\n%s" % "\n".join(t.log_lines)[-2000:])
        # native frames stop at the eval loop: the Python frames say the rest
        check(any(re.search(r"==\d+==    \(\d+ more native frames of the interpreter\)$", l)
                  for l in t.log_lines), "no shortened native stack:\n%s" % "\n".join(t.log_lines)[-3000:])
    return r, res


# ---------------------------------------------------------------- asyncio

ASYNCIO = script("py_frames_asyncio.py")
for _mode, _key, _fn, _op in (("remove", "call:remove", "child_removes", "EPOLL_CTL_DEL"),
                              ("close", "call:close", "child_closes", "EPOLL_CTL_DEL"),
                              ("addreader", "call:addreader", "child_adds", "EPOLL_CTL_ADD")):
    def _t(mode=_mode, key=_key, fn=_fn, op=_op):
        r, _ = report_lines(ASYNCIO, [mode], key, fn, op=op)
        expect_line(r, "use", ASYNCIO, marks(ASYNCIO)["use"])
    case("pyframes/asyncio-child-%s-names-the-lines" % _mode)(_t)

    def _t(mode=_mode):
        res = run([PY, ASYNCIO, mode + "-silent"], env=ENV)
        check(res.rc == 0, res.describe())
        expect_silent(res, "asyncio child without " + mode)
    case("pyframes/asyncio-silent-child-%s" % _mode)(_t)


@case("pyframes/asyncio-thread-frames-are-the-calling-threads")
def _():
    # the child's remove_reader() runs in a thread of its own, while the
    # child's main thread waits in join(): the frames are the thread's
    m = marks(ASYNCIO)
    r, _ = report_lines(ASYNCIO, ["thread"], "call:thread", "thread_removes", op="EPOLL_CTL_DEL",
                        text=False)
    frames = py_frames(r, "call")
    check(not [f for f in frames if f[2] in ("child_in_thread", "main", "<module>")],
          "the main thread's frames in the thread's call stack: %r" % frames)
    check(any(f[2] == "_bootstrap_inner" and f[0].endswith("/threading.py") for f in frames),
          "threading's bootstrap frames: %r" % frames)
    check(m["join"] not in [f[1] for f in frames if f[0] == ASYNCIO], "join line")


@case("pyframes/asyncio-thread-silent")
def _():
    expect_silent(run([PY, ASYNCIO, "thread-silent"], env=ENV))


@case("pyframes/mt-parent-child-has-python-frames-and-site")
def _():
    # a parent with a second thread at the fork: the child does no native
    # unwinding (stack.c), and still names its Python line
    r, _ = report_lines(ASYNCIO, ["mtparent"], "call:remove", "child_removes", op="EPOLL_CTL_DEL")
    check(len(r["stacks"]["call"]) == 1, "native call stack is the calling frame only: %r" % r["stacks"]["call"])
    check("multithreaded" in r["stack_notes"].get("call", ""), "note: %r" % r["stack_notes"])
    check(not r["site"].startswith("??"), "site %r" % r["site"])


@case("pyframes/mt-parent-silent")
def _():
    expect_silent(run([PY, ASYNCIO, "mtparent-silent"], env=ENV))


@case("pyframes/two-python-lines-are-two-reports")
def _():
    # the same native stack from two Python lines: two call sites, two reports
    # (the claim is keyed on the stack, which carries its Python frames)
    m = marks(ASYNCIO)
    res = run([PY, ASYNCIO, "twolines"], env=ENV)
    check(res.rc == 0, res.describe())
    reps = res.kinds()
    sites = sorted(r["site"] for r in reps)
    want = sorted(py_site(ASYNCIO, m[k], "child_removes_two") for k in ("call:first", "call:second"))
    check(sites == want, "sites %r, expected %r\n%s" % (sites, want, res.describe()))


# ------------------------------------------------------------ gevent, eventlet, uvloop

GEVENT = script("py_frames_gevent.py")


@case("pyframes/gevent-greenlet-frames")
def _():
    python_ok("gevent")
    r, res = report_lines(GEVENT, [], "call", "worker", op="EPOLL_CTL_DEL")
    frames = py_frames(r, "call")
    # the greenlet's frames, not the main greenlet's (main(), in join())
    check(not [f for f in frames if f[2] in ("main", "<module>")],
          "main greenlet frames in the greenlet's call stack: %r" % frames)
    check("ok=True" in res.stdout, res.stdout)


@case("pyframes/gevent-silent")
def _():
    python_ok("gevent")
    expect_silent(run([PY, GEVENT, "silent"], env=ENV))


EVENTLET = script("py_frames_eventlet.py")


@case("pyframes/eventlet-greenthread-frames")
def _():
    python_ok("eventlet")
    m = marks(EVENTLET)
    res = run([PY, EVENTLET], env=ENV)
    check(res.rc == 0 and "parent read=[b'p']" in res.stdout, res.describe())
    reps = res.kinds()
    check(sorted(r["op"] for r in reps) == ["EPOLL_CTL_ADD", "EPOLL_CTL_DEL"],
          "the child's ADD and DEL through the inherited hub: %s" % res.describe())
    for r in reps:
        check(r["pid"] == r["other_pid"] != r["modifier_pid"], "reported by the parent: %r" % r)
        expect_line(r, "call", EVENTLET, m["call"], "child_waits", innermost_user=True)
        expect_line(r, "fork", EVENTLET, m["fork"])
        expect_line(r, "create", EVENTLET, m["create"])
        check(r["site"] == py_site(EVENTLET, m["call"], "child_waits"), "site %r" % r["site"])
        frames = py_frames(r, "call")
        check(not [f for f in frames if f[2] in ("main", "<module>") and f[0] == EVENTLET],
              "the main greenlet's frames (waiting in wait()) in the greenthread's: %r" % frames)
    t = run([PY, EVENTLET], env=ENV, fmt="text")
    check(any(f[0] == EVENTLET and f[1] == m["call"] for f in text_frames(t)),
          "text report:\n%s" % "\n".join(t.log_lines)[-3000:])


@case("pyframes/eventlet-silent")
def _():
    python_ok("eventlet")
    res = run([PY, EVENTLET, "silent"], env=ENV)
    check("parent read=[b'p']" in res.stdout, res.describe())
    expect_silent(res)


UVLOOP = script("py_frames_uvloop.py")


@case("pyframes/uvloop-names-the-lines")
def _():
    python_ok("uvloop")
    r, _ = report_lines(UVLOOP, [], "call", "main", op="EPOLL_CTL_DEL")
    expect_line(r, "use", UVLOOP, marks(UVLOOP)["use"])
    check("uv_poll_stop" in [f["function"] for f in r["stacks"]["call"]],
          "native frames below the Python ones: %r" % r["stacks"]["call"])


@case("pyframes/uvloop-silent")
def _():
    python_ok("uvloop")
    expect_silent(run([PY, UVLOOP, "silent"], env=ENV))


# --------------------------------------------------- the other two kinds

KINDS = script("py_frames_kinds.py")


@case("pyframes/stale-registration-names-the-close")
def _():
    m = marks(KINDS)
    res = run([PY, KINDS, "stale"], env=ENV)
    check(res.rc == 0, res.describe())
    r = expect_one(res, kind="stale-registration")
    expect_line(r, "close", KINDS, m["call:stale"], "close_registered", innermost_user=True)
    expect_line(r, "fork", KINDS, m["fork:stale"])
    expect_line(r, "create", KINDS, m["create:stale"])
    expect_line(r, "use", KINDS, m["use:stale"])
    check(r["site"] == py_site(KINDS, m["call:stale"], "close_registered"), "site %r" % r["site"])


@case("pyframes/stale-registration-silent")
def _():
    expect_silent(run([PY, KINDS, "stale-silent"], env=ENV))


@case("pyframes/exec-leak-names-the-exec")
def _():
    m = marks(KINDS)
    res = run([PY, KINDS, "execleak"], env=ENV)
    check(res.rc == 0, res.describe())
    r = expect_one(res, kind="epoll-fd-exec-leak")
    expect_line(r, "exec", KINDS, m["call:execleak"], "exec_true", innermost_user=True)
    expect_line(r, "create", KINDS, m["create:execleak"])
    check(r["site"] == py_site(KINDS, m["call:execleak"], "exec_true"), "site %r" % r["site"])


@case("pyframes/exec-leak-silent")
def _():
    expect_silent(run([PY, KINDS, "execleak-silent"], env=ENV))


# ------------------------------------------------------------------ C programs

@case("pyframes/c-program-has-no-python-stacks")
def _():
    res = run([build("seed.c")])
    r = expect_one(res)
    check("python_stacks" not in r, "python_stacks in a C program's report: %r" % r.get("python_stacks"))
    check(not r["site"].endswith(")") or "+0x" in r["site"], "native site: %r" % r["site"])
    t = run([build("seed.c")], fmt="text")
    check(not text_frames(t) and any("SUMMARY:" in l for l in t.log_lines),
          "Python frame lines in a C program's text report:\n%s" % "\n".join(t.log_lines))


# ------------------------------------------------- suppressions, epollfork-report

def suppressions(rules):
    d = tempfile.mkdtemp(prefix="epf-supp-")
    path = os.path.join(d, "supp")
    with open(path, "w") as f:
        f.write("\n".join(rules) + "\n")
    return path


@case("pyframes/suppressed-by-python-site")
def _():
    m = marks(ASYNCIO)
    for rule in ("shared-epoll-ctl:py_frames_asyncio.py:%d(child_removes)" % m["call:remove"],
                 "*:child_removes", "shared-epoll-ctl:*/py_frames_asyncio.py"):
        res = run([PY, ASYNCIO, "remove"], env=dict(ENV, EPOLLFORK_SUPPRESSIONS=suppressions([rule])))
        check(res.rc == 0, res.describe())
        check(not res.kinds(), "rule %r: still reported\n%s" % (rule, res.describe()))
        check(sum(t["suppressed"] for t in res.totals) == 1, "rule %r: totals %r" % (rule, res.totals))


@case("pyframes/not-suppressed-by-another-line")
def _():
    m = marks(ASYNCIO)
    rule = "shared-epoll-ctl:py_frames_asyncio.py:%d(*)" % m["call:close"]
    res = run([PY, ASYNCIO, "remove"], env=dict(ENV, EPOLLFORK_SUPPRESSIONS=suppressions([rule])))
    expect_one(res)


@case("pyframes/epollfork-report-groups-by-python-site")
def _():
    m = marks(ASYNCIO)
    want = py_site(ASYNCIO, m["call:remove"], "child_removes")
    for fmt in ("text", "json"):
        res = run([PY, ASYNCIO, "remove"], env=ENV, fmt=fmt)
        r = subprocess.run([os.path.join(ROOT, "scripts", "epollfork-report"), "--json"],
                           input="\n".join(res.log_lines) + "\n", capture_output=True, text=True)
        check(r.returncode == 0, r.stderr)
        rows = json.loads(r.stdout)["groups"]
        check([x["site"] for x in rows] == [want], "%s: rows %r" % (fmt, rows))
        check(all("python3" in (x.get("program") or "") for x in rows),
              "%s: the program is the interpreter: %r" % (fmt, rows))


# -------------------------------------------------------- CPython versions

@case("pyframes/offsets-match-the-headers")
def _():
    """pyframes.c's layout table, row by row, against what pyoffsets.c prints
    when compiled against each interpreter's own headers."""
    with open(os.path.join(ROOT, "src", "pyframes.c")) as f:
        rows = {int(m.group(1)): m.group(0).strip()
                for m in re.finditer(r"^\s*\{(\d+), FR_\w+,[^}]*\},", f.read(), re.M)}
    incs = ["/usr/include/python3.11"] + sorted(glob.glob(PYENV + "/3.*/include/python3.*"))
    checked = []
    for inc in incs:
        if not os.path.exists(os.path.join(inc, "Python.h")):
            check(inc != "/usr/include/python3.11", "python3.11-dev is not installed (tests/run.sh installs it)")
            continue
        ver = re.search(r"python3\.(\d+)", inc)
        if not ver or int(ver.group(1)) < 8:
            continue
        exe = build(os.path.join(SCEN, "pyoffsets.c"), out="pyoffsets-" + inc.replace("/", "_"),
                    flags=["-I" + inc])
        out = subprocess.run([exe], capture_output=True, text=True).stdout.strip()
        minor = int(ver.group(1))
        check(minor in rows, "no row for 3.%d in pyframes.c; the headers say %s" % (minor, out))
        check(rows[minor] == out, "3.%d (%s): table %s, headers %s" % (minor, inc, rows[minor], out))
        checked.append(inc)
    print("    (checked: %s)" % ", ".join(checked))


def pyenv_python(minor):
    found = sorted(glob.glob("%s/3.%d.*/bin/python3.%d" % (PYENV, minor, minor)))
    return found[-1] if found else None


for _minor in (8, 9, 10, 11, 12, 13):
    def _t(minor=_minor):
        py = pyenv_python(minor)
        if not py:
            print("    (no %s/3.%d.*: skipped)" % (PYENV, minor))
            return
        report_lines(ASYNCIO, ["remove"], "call:remove", "child_removes", op="EPOLL_CTL_DEL", py=py)
    case("pyframes/cpython-3.%d-names-the-lines" % _minor)(_t)


@case("pyframes/unknown-version-has-no-python-frames")
def _():
    # a CPython with no row in the table (3.7): the report as before, no guess
    py = pyenv_python(7)
    if not py:
        print("    (no %s/3.7.*: skipped)" % PYENV)
        return
    res = run([py, ASYNCIO, "remove"], env=ENV)
    check(res.rc == 0, res.describe())
    r = expect_one(res, op="EPOLL_CTL_DEL")
    check("python_stacks" not in r, "python_stacks for 3.7: %r" % r.get("python_stacks"))
    check("+0x" in r["site"], "native site: %r" % r["site"])


# ------------------------------------------------------------ sanitizers

SANITIZER_ERRORS = re.compile(r"runtime error|AddressSanitizer|UndefinedBehaviorSanitizer")


def sanitized(kind):
    """The shim built with UBSan, or with ASan+UBSan (libasan preloaded first),
    as tests/test_robust.py runs it."""
    lib = os.path.join(ROOT, "build", kind, "libepollfork.so")
    r = subprocess.run(["make", "-s", "-C", ROOT, os.path.relpath(lib, ROOT)], capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(lib), "make %s failed:\n%s" % (lib, r.stderr))
    if kind == "asan":
        so = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        check(os.path.isabs(so) and os.path.exists(so), "libasan.so not found: %r" % so)
        return dict(lib=lib, preload_extra=so, env=dict(ENV, ASAN_OPTIONS="detect_leaks=0"))
    return dict(lib=lib, env=dict(ENV, UBSAN_OPTIONS="print_stacktrace=1"))


for _kind in ("ubsan", "asan"):
    for _mode, _key, _fn in (("remove", "call:remove", "child_removes"),
                             ("mtparent", "call:remove", "child_removes"),
                             ("thread", "call:thread", "thread_removes")):
        def _t(kind=_kind, mode=_mode, key=_key, fn=_fn):
            # the frame walk and the string store under the sanitizers, reading
            # the interpreter's memory and the registry
            res = run([PY, ASYNCIO, mode], timeout=60, **sanitized(kind))
            check(not SANITIZER_ERRORS.search(res.stderr), "sanitizer error:\n" + res.stderr[-4000:])
            check(res.rc == 0, res.describe())
            r = expect_one(res, op="EPOLL_CTL_DEL")
            expect_line(r, "call", ASYNCIO, marks(ASYNCIO)[key], fn, innermost_user=True)
            check(r["site"] == py_site(ASYNCIO, marks(ASYNCIO)[key], fn), "site %r" % r["site"])
        case("pyframes/%s-asyncio-%s" % (_kind, _mode))(_t)
