"""test_perf.py - what keeps a short process cheap, as facts that can fail.

Speed itself is measured by `make bench` (never by a timed test); these cases
check the mechanisms the benchmark's figures rest on, by counting, not timing:

- a process that uses epoll but never reports never loads libunwind (loading
  it and liblzma is ~2 ms: src/stack.c keeps a copy of the stack instead);
- a stack kept as a copy and unwound later gives exactly the frames an
  unwind at the time gives (same call sites, pc for pc);
- a stack too deep to copy is unwound at once and still complete;
- /bin/true under the shim makes at most three system calls more than under
  an empty preloaded library, and takes no more page faults (within two:
  the kernel's fault-around depends on where the libraries land).
"""
import os
import resource
import statistics
import subprocess
import tempfile

from harness import BUILD, LIB, case, check, build, run, expect_one, expect_silent, functions

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
    # the same program, once a report needs a stack, does load it
    res = run([prog("lazy_unwind.c"), "rounds"])
    check(res.rc == 0 and "libunwind: 1" in res.stdout, res.describe())


@case("perf/kept-stack-unwinds-to-the-same-frames")
def _():
    res = run([prog("lazy_unwind.c"), "rounds"], env={"EPOLLFORK_DEDUP": "0"})
    check(res.rc == 0, res.describe())
    reps = res.kinds("shared-epoll-ctl")
    check(len(reps) == 2, "expected one report per round, got %d\n%s" % (len(reps), res.describe()))
    first, second = reps
    for role in ("create", "add", "fork"):
        a, b = first["stacks"].get(role), second["stacks"].get(role)
        check(a and b, "%s stack missing: %r / %r" % (role, a, b))
        # round 1 was captured before libunwind was loaded (kept, unwound at
        # the report), round 2 after: the same call sites, so the same pcs
        check([f["pc"] for f in a] == [f["pc"] for f in b],
              "%s stack: kept copy %r, unwound at once %r" % (role, functions(a), functions(b)))
    want = {"create": ["make_instance", "one_round", "main"],
            "add": ["register_here", "one_round", "main"]}
    for role, fns in want.items():
        got = functions(first["stacks"][role])
        check(got[:3] == fns and "__libc_start_main" in got,
              "%s stack of the kept copy: %r" % (role, got))


@case("perf/deep-stack-unwound-at-once")
def _():
    res = run([prog("lazy_unwind.c"), "deep"])
    check(res.rc == 0, res.describe())
    r = expect_one(res, op="EPOLL_CTL_DEL")
    got = functions(r["stacks"]["add"])
    check(got[:4] == ["register_here", "register_deep", "one_round", "main"],
          "registration stack from a 20 KiB frame: %r" % got)


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
