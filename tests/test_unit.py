"""test_unit.py - the unit-test program of tests/unit/, built twice, run group by group.

The program links the core of the shim (the Makefile's CORE_SRCS) without
LD_PRELOAD and drives track.c's events itself, with real fds and real forks
(tests/unit/unit.c says how).  It is built plain (the core at -O2, as shipped)
and with ASan+UBSan; every group of checks is one case here, so a failure names
its group and shows the program's own `file:line: check failed` lines.

The core is linked as a shared object, build/tests/unit-*/libefcore.so, not
into the executable: stack.c skips every frame of the module that holds it as
"the shim's own", so inside the test executable all stacks would collapse to
libc's start-up frames.  The JSON that the render and emit groups write is
parsed here, field by field.
"""
import glob
import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import case, check, Fail, ROOT, BUILD

UNIT = os.path.join(ROOT, "tests", "unit")
SOURCES = ["unit.c", "test_track.c", "test_parts.c", "test_pyframes.c"]
WARN = ["-Wall", "-Wextra", "-Werror", "-Wshadow", "-Wstrict-prototypes", "-Wno-unused-parameter"]
SAN = ["-O1", "-fno-omit-frame-pointer", "-fsanitize=address,undefined",
       "-fno-sanitize-recover=undefined"]
VARIANTS = {
    "plain": {"core": ["-O2"], "test": ["-O0"]},
    "asan": {"core": SAN, "test": SAN},
}


def core_srcs():
    """CORE_SRCS as the Makefile has it today (`make core-srcs`)."""
    r = subprocess.run(["make", "-s", "--no-print-directory", "core-srcs"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.split():
        raise Fail("make core-srcs failed:\n" + r.stderr)
    return r.stdout.split()


def group_names():
    """The groups, read from the tables at the end of the sources."""
    names = []
    for src in SOURCES:
        with open(os.path.join(UNIT, src)) as f:
            names += re.findall(r'^\s*\{"([a-z0-9-]+)", g_\w+,', f.read(), re.M)
    return names


def unw_cflags():
    r = subprocess.run(["pkg-config", "--cflags", "libunwind"], capture_output=True, text=True)
    if r.returncode != 0:
        raise Fail("pkg-config --cflags libunwind failed (is libunwind-dev installed?):\n" + r.stderr)
    return r.stdout.split()


_builds = {}


def build(variant):
    """Build libefcore.so and test_track for a variant, once per run."""
    if variant in _builds:
        if isinstance(_builds[variant], Fail):
            raise _builds[variant]
        return _builds[variant]
    out = os.path.join(BUILD, "tests", "unit-" + variant)
    os.makedirs(out, exist_ok=True)
    v = VARIANTS[variant]
    common = ["cc", "-std=gnu11", "-g", "-I" + os.path.join(ROOT, "src"),
              "-I" + os.path.join(ROOT, "include")] + unw_cflags() + WARN
    core = [os.path.join(ROOT, s) for s in core_srcs()]
    lib = os.path.join(out, "libefcore.so")
    exe = os.path.join(out, "test_track")
    steps = [
        common + v["core"] + ["-fPIC", "-shared", "-o", lib] + core + ["-ldl", "-lpthread"],
        common + v["test"] + ["-I" + UNIT, "-o", exe] + [os.path.join(UNIT, s) for s in SOURCES]
        + ["-L" + out, "-lefcore", "-Wl,-rpath,$ORIGIN", "-ldl", "-lpthread"],
    ]
    for cmd in steps:
        r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if r.returncode != 0:
            _builds[variant] = Fail("unit build (%s) failed:\n%s\n%s" % (variant, " ".join(cmd), r.stderr[-6000:]))
            raise _builds[variant]
    _builds[variant] = exe
    return exe


def run_group(variant, group):
    exe = build(variant)
    outdir = tempfile.mkdtemp(prefix="epf-unit-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOLLFORK_") and k != "LD_PRELOAD"}
    env["UBSAN_OPTIONS"] = "print_stacktrace=1"
    try:
        p = subprocess.run([exe, "-o", outdir, group], capture_output=True, text=True, env=env,
                           timeout=300)
    except subprocess.TimeoutExpired as e:
        shutil.rmtree(outdir, ignore_errors=True)
        raise Fail("%s %s: timed out\n%s" % (variant, group, (e.stderr or b"")[-4000:]))
    text = (p.stdout + p.stderr)[-12000:]
    problems = []
    if p.returncode != 0 or not re.search(r"test_track: \d+ checks, 0 failed", p.stdout):
        problems.append("test_track %s (%s) exited %d:\n%s" % (group, variant, p.returncode, text))
    try:
        check_json_files(outdir, group)  # even when C checks failed: report both
    except Fail as e:
        problems.append("JSON written by the %s group: %s" % (group, e))
    finally:
        shutil.rmtree(outdir, ignore_errors=True)
    check(not problems, "\n".join(problems))


# ------------------------------------------------------------------ JSON checks

def load_json(path):
    objs = []
    with open(path, errors="strict") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                objs.append(json.loads(line))
            except ValueError as e:
                raise Fail("%s:%d is not JSON (%s): %r" % (os.path.basename(path), n, e, line[:300]))
    return objs


HEX = re.compile(r"^0x[0-9a-f]+$")


def check_frames(name, obj):
    for key, frames in obj["stacks"].items():
        check(isinstance(frames, list), "%s: stacks.%s is a list" % (name, key))
        for fr in frames:
            check(HEX.match(fr["pc"]) and HEX.match(fr["offset"]), "%s: bad frame %r" % (name, fr))
            check(fr["module"], "%s: frame without module %r" % (name, fr))


def expect(name, obj, **want):
    for k, v in want.items():
        check(obj.get(k) == v, "%s: %s is %r, expected %r" % (name, k, obj.get(k), v))


def first_fn(obj, key):
    st = obj["stacks"].get(key) or [{}]
    return st[0].get("function")


RENDERED = {
    "shared": lambda o: (
        expect("shared", o, tool="epollfork", kind="shared-epoll-ctl",
               time="2026-11-22T04:21:37.123456Z", pid=4242, ppid=1, owner_pid=4242, epfd=5, fd=7,
               events="", data="0x0", target='pipe:[99] "q" \\ t\tx', modifier_pid=4243,
               other_pid=4242, other_use="epoll_wait", op="EPOLL_CTL_DEL", lost_changes=3,
               fork_parent_pid=4242, fork_child_pid=4243, stack_notes={}),
        check(set(o["stacks"]) == {"call", "fork", "create", "add", "use"}, "shared: stacks %r" % list(o["stacks"])),
        check(all(first_fn(o, k) == "where_" + k for k in o["stacks"]),
              "shared: each stack starts in its where_*(): %r" % {k: first_fn(o, k) for k in o["stacks"]}),
        check(o["site"].startswith("where_call("), "shared: site %r" % o["site"])),
    "blocked": lambda o: (
        expect("blocked", o, pid=4243, op="EPOLL_CTL_MOD", events="EPOLLIN|EPOLLET", data="0xfeed",
               target=None, other_use="blocked-in-wait"),
        check("use" not in o["stacks"] and o["stacks"]["fork"] == [] and o["stacks"]["create"] == [],
              "blocked: %r" % o["stacks"].keys()),
        check({"fork", "create", "add"} <= set(o["stack_notes"]), "blocked: notes %r" % o["stack_notes"]),
        check("multithreaded" in o["stack_notes"].get("call", ""), "blocked: call note %r" % o["stack_notes"])),
    "stale": lambda o: (
        expect("stale", o, kind="stale-registration", holder_pid=4243, holder_fd=9, events="EPOLLIN",
               target="socket:[1234]", fd=7, epfd=5),
        check(set(o["stacks"]) == {"close", "add", "fork", "create", "use"}, "stale: %r" % list(o["stacks"])),
        check(first_fn(o, "close") == "where_close" and o["site"].startswith("where_close("),
              "stale: close stack %r" % first_fn(o, "close"))),
    "leak": lambda o: (
        expect("leak", o, kind="epoll-fd-exec-leak", program='/usr/bin/prog with "space"', argv0="prog\\",
               exec="execve", entries=2, epfd=5),
        check(set(o["stacks"]) == {"exec", "create"} and first_fn(o, "exec") == "where_exec",
              "leak: %r" % o["stacks"].keys())),
    "startup": lambda o: (
        expect("startup", o, kind="epoll-fd-exec-leak", exec="start-up"),
        check(o["stacks"] == {"exec": [], "create": []} and {"exec", "create"} <= set(o["stack_notes"]),
              "startup: %r %r" % (o["stacks"], o["stack_notes"]))),
    "empty": lambda o: expect("empty", o, kind="shared-epoll-ctl", pid=4242, target=None),
    "newline": lambda o: expect("newline", o, target="/tmp/odd\nfifo\r\x01"),
    "newline-leak": lambda o: expect("newline-leak", o, program="/tmp/odd\nprogram"),
}


def check_json_files(outdir, group):
    """Every JSON line any group wrote must parse; the render group's, field by field."""
    for path in sorted(glob.glob(os.path.join(outdir, "*.json"))):
        objs = load_json(path)
        name = os.path.basename(path)[len("render-"):-len(".json")]
        check(len(objs) == 1, "%s: one object per report, got %d" % (path, len(objs)))
        check_frames(name, objs[0])
        if name in RENDERED:
            RENDERED[name](objs[0])
    for path in glob.glob(os.path.join(outdir, "*.log")):
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("{"):
                    try:
                        json.loads(line)
                    except ValueError as e:
                        raise Fail("%s: a JSON line does not parse (%s): %r" % (path, e, line[:300]))
    if group == "render":
        missing = [n for n in RENDERED if not os.path.exists(os.path.join(outdir, "render-%s.json" % n))]
        check(not missing, "render wrote no JSON for %s" % missing)
    if group == "emit":
        objs = []
        with open(os.path.join(outdir, "emit.log"), errors="replace") as f:
            objs = [json.loads(l) for l in f if l.startswith("{")]
        check(any(o.get("kind") == "shared-epoll-ctl" for o in objs), "emit: no JSON report in the log")


# ---------------------------------------------------------------------- cases

for _variant in VARIANTS:
    @case("unit/%s/groups-listed" % _variant)
    def _t(variant=_variant):
        """--list names exactly the groups this file registers (no group goes unrun)."""
        r = subprocess.run([build(variant), "--list"], capture_output=True, text=True)
        check(r.returncode == 0 and r.stdout.split() == group_names(),
              "--list: %r, parsed from the sources: %r" % (r.stdout.split(), group_names()))

    for _group in group_names():
        def _t(variant=_variant, group=_group):
            run_group(variant, group)
        case("unit/%s/%s" % (_variant, _group))(_t)
