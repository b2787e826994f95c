"""test_perf.py - what keeps a short process cheap, as facts that can fail.

Speed itself is measured by `make bench` (never by a timed test); these cases
check the mechanisms the benchmark's figures rest on, by counting, not timing:

- a process that uses epoll never loads libunwind (loading it and liblzma is
  ~2 ms) while its stacks walk from the unwind tables (src/cfi.c), and the
  walk gives exactly libunwind's frames or gives up (cfi-*);
- with EPOLLFORK_UNWIND=libunwind, a stack kept as a copy and unwound later
  gives exactly the frames an unwind at the time gives (same call sites, pc
  for pc);
- a stack too deep to copy is unwound at once and still complete;
- a fork loop whose children exit at once writes no private page in the
  parent (each would be a copy-on-write fault at every fork);
- the fd makers and epoll_ctl never run libc's function under the shim
  (src/direct.h), and do with another interposer after it (test_robust);
- /bin/true under the shim makes at most three system calls more than under
  an empty preloaded library, and takes no more page faults (within two:
  the kernel's fault-around depends on where the libraries land).
"""
import json
import re
import os
import resource
import statistics
import subprocess
import tempfile

from harness import BUILD, LIB, ROOT, case, check, build, run, expect_one, expect_silent, functions

prog = build


def empty_library():
    """A preloaded library that does nothing: the floor of start-up costs."""
    out = os.path.join(BUILD, "tests", "empty_preload.so")
    if not os.path.exists(out):
        r = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-x", "c", "-o", out, "-"],
                           input="int epollfork_test_empty;\n", capture_output=True, text=True)
        check(r.returncode == 0, "cannot build the empty library:\n" + r.stderr)
    return out


def bare_env(preload=None):
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.startswith("EPOLLFORK_")}
    if preload:
        env["LD_PRELOAD"] = preload
    return env


@case("perf/quiet-epoll-process-never-loads-libunwind")
def _():
    res = run([prog("lazy_unwind.c"), "quiet"])
    check(res.rc == 0, res.describe())
    expect_silent(res, "a fork whose child only exits")
    check("libunwind: 0" in res.stdout,
          "libunwind was loaded by a process with nothing to report:\n" + res.describe())
    # nor by one that reports: every stack of it walks from the unwind tables
    res = run([prog("lazy_unwind.c"), "rounds"])
    check(res.rc == 0 and "libunwind: 0" in res.stdout, res.describe())
    check(len(res.kinds("shared-epoll-ctl")) == 1, res.describe())
    # with EPOLLFORK_UNWIND=libunwind, the same report does load it
    res = run([prog("lazy_unwind.c"), "rounds"], env={"EPOLLFORK_UNWIND": "libunwind"})
    check(res.rc == 0 and "libunwind: 1" in res.stdout, res.describe())


def rounds(unwind):
    res = run([prog("lazy_unwind.c"), "rounds"],
              env={"EPOLLFORK_DEDUP": "0", "EPOLLFORK_UNWIND": unwind})
    check(res.rc == 0, res.describe())
    reps = res.kinds("shared-epoll-ctl")
    check(len(reps) == 2, "expected one report per round, got %d\n%s" % (len(reps), res.describe()))
    return reps


@case("perf/kept-stack-unwinds-to-the-same-frames")
def _():
    # EPOLLFORK_UNWIND=libunwind: round 1's stacks are kept as copies of the
    # stack (libunwind is not loaded yet) and unwound at the report, round
    # 2's are unwound at once
    first, second = rounds("libunwind")
    for role in ("create", "add", "fork"):
        a, b = first["stacks"].get(role), second["stacks"].get(role)
        check(a and b, "%s stack missing: %r / %r" % (role, a, b))
        check([f["pc"] for f in a] == [f["pc"] for f in b],
              "%s stack: kept copy %r, unwound at once %r" % (role, functions(a), functions(b)))
    want = {"create": ["make_instance", "one_round", "main"],
            "add": ["register_here", "one_round", "main"]}
    for role, fns in want.items():
        got = functions(first["stacks"][role])
        check(got[:3] == fns and "__libc_start_main" in got,
              "%s stack of the kept copy: %r" % (role, got))


@case("perf/unwind-tables-and-libunwind-give-the-same-frames")
def _():
    # the same program, stacks from the unwind tables (default) and from
    # libunwind: the same frames (function and offset in its module), every
    # stack of both reports
    def frames(stack):
        return [(f.get("function"), f.get("module"), f.get("offset")) for f in stack]
    tables, lib = rounds("tables"), rounds("libunwind")
    for t, l in zip(tables, lib):
        for role in ("create", "add", "fork", "call"):
            a, b = t["stacks"].get(role), l["stacks"].get(role)
            check(a and b and frames(a) == frames(b),
                  "%s stack: tables %r, libunwind %r" % (role, frames(a or []), frames(b or [])))
        check(not t.get("stack_notes"), t.get("stack_notes"))


@case("perf/deep-stack-unwound-at-once")
def _():
    for unwind in ("tables", "libunwind"):
        res = run([prog("lazy_unwind.c"), "deep"], env={"EPOLLFORK_UNWIND": unwind})
        check(res.rc == 0, res.describe())
        r = expect_one(res, op="EPOLL_CTL_DEL")
        got = functions(r["stacks"]["add"])
        check(got[:4] == ["register_here", "register_deep", "one_round", "main"],
              "%s: registration stack from a 20 KiB frame: %r" % (unwind, got))


def cfi_check(opt):
    """tests/scenarios/cfi_check.c built with opt and src/cfi.c: its JSON lines."""
    src = os.path.join(ROOT, "src")
    exe = build("cfi_check.c", out="cfi_check" + opt.replace(" ", "").replace("-", "_"),
                flags=opt.split() + ["-I" + src, os.path.join(src, "cfi.c"),
                                     os.path.join(src, "ehframe.c")],
                libs=["-ldl", "-lpthread"])
    r = subprocess.run([exe], capture_output=True, text=True, timeout=60)
    check(r.returncode == 0, "cfi_check %s failed:\n%s%s" % (opt, r.stdout, r.stderr))
    return {o["scenario"]: o for o in map(json.loads, r.stdout.splitlines())}


# Scenarios whose every frame has the simple rules (the walk must give them),
# and those with a signal frame (the walk must give up: libunwind's).
SIMPLE = ["recursion", "big-frames", "alloca", "saved-registers", "mixed", "same-site-again",
          "same-depth-other-callers", "truncated", "through-libc", "thread", "threads-at-once",
          "after-dlclose"]
SIGNAL = ["signal-handler", "alternate-signal-stack"]

for _opt in ("-O0", "-O2", "-O2 -fno-omit-frame-pointer"):
    def _t(opt=_opt):
        """src/cfi.c's walk against unw_backtrace, frame for frame: it gives
        the same frames or gives up, never others."""
        got = cfi_check(opt)
        check(set(SIMPLE + SIGNAL) <= set(got), "scenarios: %r" % sorted(got))
        bad = {k: v["first_mismatch"] for k, v in got.items() if v["mismatched"]}
        check(not bad, "frames that differ from libunwind's: %r" % bad)
        for k in SIMPLE:
            check(got[k]["probes"] > 0 and got[k]["matched"] == got[k]["probes"],
                  "%s: %r" % (k, got[k]))
        for k in SIGNAL:
            check(got[k]["probes"] > 0 and got[k]["gave_up"] == got[k]["probes"],
                  "%s: the walk crossed a signal frame: %r" % (k, got[k]))
        # the same call site again is checked, not walked again; the same
        # depth through other callers is walked again (and matched above)
        check(got["same-site-again"]["repeats"] >= got["same-site-again"]["probes"] - 1,
              "the last walk was not reused: %r" % got["same-site-again"])
        check(got["same-depth-other-callers"]["repeats"] == 0, got["same-depth-other-callers"])
    case("perf/cfi-walk-matches-libunwind%s" % _opt.replace(" ", "").replace("-fno", "-no"))(_t)


def syscalls(env):
    with tempfile.NamedTemporaryFile("r", prefix="epf-strace-") as t:
        r = subprocess.run(["strace", "-f", "-qq", "-o", t.name, "/bin/true"], env=env,
                           capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "strace /bin/true failed:\n" + r.stderr)
        calls = [l for l in t.read().splitlines() if "(" in l and "+++" not in l]
    first = next((i for i, l in enumerate(calls) if "execve(" in l), 0)
    return calls[first:]


def nofile(limit):
    def set_limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = limit if hard == resource.RLIM_INFINITY else min(limit, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return set_limit


for _limit in (1024, 1 << 20):
    def _t(limit=_limit):
        """At most three system calls beyond an empty library, whatever the
        fd limit (the inherited-fd scan stays bounded)."""
        old = resource.getrlimit(resource.RLIMIT_NOFILE)
        nofile(limit)()
        try:
            empty = syscalls(bare_env(empty_library()))
            shim = syscalls(bare_env(LIB))
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, old)
        check(len(shim) - len(empty) <= 3,
              "/bin/true: %d system calls under the shim, %d under an empty library; the "
              "shim's:\n%s" % (len(shim), len(empty), "\n".join(shim[-12:])))
    case("perf/start-up-at-most-three-system-calls-more-nofile-%d" % _limit)(_t)


def minflt(env, runs=9):
    """Median minor page faults of /bin/true (each run a fresh process)."""
    out = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
        subprocess.run(["/bin/true"], env=env, check=True)
        out.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - before)
    return statistics.median(out)


@case("perf/start-up-takes-no-more-page-faults-than-an-empty-library")
def _():
    # interleaved, so that page-cache state is the same for both
    e, s = [], []
    for _ in range(3):
        e.append(minflt(bare_env(empty_library())))
        s.append(minflt(bare_env(LIB)))
    check(min(s) <= min(e) + 2,
          "/bin/true page faults: shim %r, empty library %r (each a median of 9 runs); a page "
          "of the shim touched at start-up costs 25..45 us here (bench/RESULTS.md)" % (s, e))


@case("perf/direct-calls-do-not-run-libc-function")
def _():
    exe = prog("direct_trap.c", libs=["-ldl"])
    bare = run([exe], shim=False)
    res = run([exe])
    check(bare.rc == 0 and res.rc == 0, bare.describe() + res.describe())
    bl, sl = bare.stdout.splitlines(), res.stdout.splitlines()
    check(len(bl) == 8 and all(l.endswith("ran: yes") for l in bl),
          "bare, every call traps in libc (the check works):\n" + bare.stdout)
    check(all(l.endswith("ran: no") for l in sl),
          "under the shim, no call runs libc's function:\n" + res.stdout)
    check([l.rsplit(",", 1)[0] for l in bl] == [l.rsplit(",", 1)[0] for l in sl],
          "the same results:\n%s\n%s" % (bare.stdout, res.stdout))
    expect_silent(res, "nobody else uses the list")


for _mode in ("epoll", "noepoll"):
    def _t(mode=_mode):
        exe = prog("fork_faults.c")
        pat = re.compile(r"parent faults per fork: ([\d.]+)")
        bare, shim = [], []
        for _ in range(3):  # interleaved; the least of three each
            b = run([exe, mode], shim=False)
            s = run([exe, mode])
            check(b.rc == 0 and s.rc == 0, b.describe() + s.describe())
            bare.append(float(pat.search(b.stdout).group(1)))
            shim.append(float(pat.search(s.stdout).group(1)))
        check(min(shim) <= min(bare) + 0.2,
              "the parent's faults per fork: shim %r, bare %r (a private page written at "
              "each fork is one more)" % (shim, bare))
        expect_silent(s, "nobody else uses the list")
    case("perf/fork-loop-writes-no-private-page-%s" % _mode)(_t)
