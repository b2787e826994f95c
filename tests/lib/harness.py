"""harness.py - build scenario programs, run them under the shim, read the reports.

Tests are plain functions registered with @case.  A test builds the programs it
needs (build()), runs them (run()) and checks what the shim reported by parsing
the JSON-lines log, never by grepping a word.  check() fails the case with a
message; the runner (tests/run.py) prints PASS/FAIL per case and the final
`N passed, N failed` line.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(ROOT, "build")
LIB = os.path.join(BUILD, "libepollfork.so")
TESTBIN = os.path.join(BUILD, "tests")
SCEN = os.path.join(ROOT, "tests", "scenarios")
LAUNCHER = os.path.join(ROOT, "scripts", "epollfork")

CASES = []          # (name, fn)

_public = {}


def public_copy(path):
    """A copy of path in a directory every user can read (mode 0755, file
    0644), for programs that drop privileges and then load or exec it (uWSGI
    re-execs itself as nobody): a checkout under a 0700 directory such as
    /root must not make them fail.  One copy per run, removed at exit."""
    if path in _public:
        return _public[path]
    if not _public.get("_dir"):
        d = tempfile.mkdtemp(prefix="epf-public-")
        os.chmod(d, 0o755)
        _public["_dir"] = d
        import atexit
        atexit.register(shutil.rmtree, d, True)
    dest = os.path.join(_public["_dir"], "%d-%s" % (len(_public), os.path.basename(path)))
    shutil.copy2(path, dest)
    os.chmod(dest, 0o755 if os.access(path, os.X_OK) else 0o644)
    _public[path] = dest
    return dest


class Fail(Exception):
    pass


def case(name):
    def deco(fn):
        CASES.append((name, fn))
        return fn
    return deco


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


_built = {}


def build(src, out=None, flags=(), libs=(), shared=False):
    """Compile tests/scenarios/<src> (or an absolute path) once; return the binary."""
    path = src if os.path.isabs(src) else os.path.join(SCEN, src)
    name = out or os.path.splitext(os.path.basename(path))[0]
    key = (path, name, tuple(flags), tuple(libs), shared)
    if key in _built:
        return _built[key]
    os.makedirs(TESTBIN, exist_ok=True)
    dest = os.path.join(TESTBIN, name + (".so" if shared else ""))
    cmd = ["cc", "-std=gnu11", "-O0", "-fno-inline", "-g", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-I" + os.path.join(ROOT, "include"), "-o", dest, path]
    if shared:
        cmd[1:1] = ["-shared", "-fPIC"]
    cmd += list(flags) + list(libs)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("build of %s failed:\n%s" % (src, r.stderr))
    _built[key] = dest
    return dest


class Result:
    def __init__(self, proc, stdout, stderr, log_lines, logdir):
        self.rc = proc.returncode
        self.stdout = stdout
        self.stderr = stderr
        self.log_lines = log_lines
        self.logdir = logdir
        self.reports = []
        self.notices = []
        self.totals = []        # the per-process TOTALS records written at exit
        self.garbage = []
        for line in log_lines:
            try:
                obj = json.loads(line)
            except ValueError:
                self.garbage.append(line)
                continue
            kind = obj.get("kind")
            (self.notices if kind == "notice" else self.totals if kind == "totals"
             else self.reports).append(obj)

    def kinds(self, kind="shared-epoll-ctl"):
        return [r for r in self.reports if r.get("kind") == kind]

    def describe(self):
        out = "rc=%s\nstdout:\n%s\nstderr:\n%s\nlog:\n%s" % (
            self.rc, self.stdout[-3000:], self.stderr[-3000:], "\n".join(self.log_lines)[-6000:])
        return out


def run(cmd, env=None, shim=True, fmt="json", log="file", timeout=60, lib=None,
        stdin=subprocess.DEVNULL, preload_extra=None, preload_after=None):
    """Run cmd (a list) under the shim.  With log="file" the reports go to a
    fresh file that every process of the tree appends to, and are parsed."""
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("EPOLLFORK_"):
            del e[k]
    e.pop("LD_PRELOAD", None)
    logdir = tempfile.mkdtemp(prefix="epf-test-")
    logfile = os.path.join(logdir, "log")
    if shim:
        pre = [preload_extra] if preload_extra else []
        pre.append(lib or LIB)
        if preload_after:
            pre.append(preload_after)
        e["LD_PRELOAD"] = ":".join(pre)
        if fmt:
            e["EPOLLFORK_FORMAT"] = fmt
        if log == "file":
            e["EPOLLFORK_LOG"] = logfile
        elif log is not None and log != "stderr":
            e["EPOLLFORK_LOG"] = log.replace("{dir}", logdir)
    if env:
        for k, v in env.items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v.replace("{dir}", logdir) if isinstance(v, str) else v
    p = subprocess.Popen(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         stdin=stdin, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise Fail("timed out after %ss: %s\nstdout:%s\nstderr:%s" % (
            timeout, cmd, out.decode(errors="replace")[-2000:], err.decode(errors="replace")[-2000:]))
    lines = []
    # give processes of the tree that outlive the leader a moment to write
    if log == "file" and os.path.exists(logfile):
        with open(logfile, errors="replace") as f:
            lines = [l.rstrip("\n") for l in f if l.strip()]
    elif log not in ("file", "stderr", None):
        for name in sorted(os.listdir(logdir)):
            with open(os.path.join(logdir, name), errors="replace") as f:
                lines += [l.rstrip("\n") for l in f if l.strip()]
    res = Result(p, out.decode(errors="replace"), err.decode(errors="replace"), lines, logdir)
    if log == "stderr" and fmt == "json":
        res.__init__(p, res.stdout, res.stderr,
                     [l for l in res.stderr.splitlines() if l.startswith("{")], logdir)
    return res


def wait_for(pred, timeout=10.0, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


STACKS = ("call", "fork", "create", "add")


def expect_one(res, op=None, use=None, reporter=None, kind="shared-epoll-ctl"):
    """Exactly one report of kind; returns it.  reporter: 'modifier' or 'other'."""
    reps = res.kinds(kind)
    check(len(reps) == 1, "expected exactly one %s report, got %d\n%s" % (kind, len(reps), res.describe()))
    r = reps[0]
    if op:
        check(r["op"] == op, "op %s != %s" % (r["op"], op))
    if use:
        check(r["other_use"] == use, "other_use %s != %s" % (r["other_use"], use))
    if reporter == "modifier":
        check(r["pid"] == r["modifier_pid"], "reported by %s, not the modifier %s" % (r["pid"], r["modifier_pid"]))
    if reporter == "other":
        check(r["pid"] == r["other_pid"], "reported by %s, not the affected %s" % (r["pid"], r["other_pid"]))
    check(not res.garbage, "non-JSON lines in the log: %r" % res.garbage[:3])
    return r


def functions(stack):
    return [f.get("function") for f in stack]


def expect_stacks(r, call_fn=None, names=STACKS):
    """Every named stack present, frames well formed, call stack names call_fn."""
    for k in names:
        st = r["stacks"].get(k)
        check(st, "stack %r empty: %s" % (k, r.get("stack_notes")))
        for f in st:
            check(re.match(r"^0x[0-9a-f]+$", f["pc"]) and re.match(r"^0x[0-9a-f]+$", f["offset"]),
                  "bad frame %r" % f)
            check(f["module"], "frame without module %r" % f)
            # the shim's own frames are never shown: a fork stack taken in the
            # prepare handler instead of the fork wrapper would show the
            # wrapper (and glibc's __libc_fork above it)
            check(os.path.basename(f["module"]) != "libepollfork.so",
                  "stack %r shows the shim's own frame %r" % (k, f))
    if call_fn:
        check(call_fn in functions(r["stacks"]["call"]),
              "%s not in call stack %s" % (call_fn, functions(r["stacks"]["call"])))


def expect_silent(res, why=""):
    check(not res.reports, "expected no report%s, got %d\n%s" % (
        " (" + why + ")" if why else "", len(res.reports), res.describe()))
    check(not res.garbage, "non-JSON lines in the log: %r" % res.garbage[:3])


def cleanup(res):
    shutil.rmtree(res.logdir, ignore_errors=True)
