"""test_ps.py - epollfork-ps against running processes ("ps/..." cases).

The scenario programs (tests/scenarios/ps_*.c) reach a known state, print
`READY MODE key=value...` and stay there until they are killed; the case runs
build/epollfork-ps on them with --json, parses every line (the output must be
valid UTF-8 and valid JSON, line by line), and checks what it says against
what the program did and against the kernel seen another way (/proc/PID/wchan
for "blocked in an epoll wait", /proc/PID/fdinfo, stat of /proc/PID/fd/N).
Every positive case has a silent neighbour, and the exit status is checked
each time (0 no finding, 1 findings, 2 usage error).

Real servers (nginx, redis, haproxy -W, memcached) run without the shim, from
tests/real/realrun.py's Box (127.0.0.1 only, deadlines, everything killed at
the end); epollfork-ps must list their instances and find nothing wrong in
them, and must find the epoll fd that haproxy 2.6 leaks into the programs of
its `program` sections, where the kernel can show it.
"""
import json
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "real"))

from harness import case, check, build, Fail, ROOT, BUILD  # noqa: E402
from realrun import Case, need, free_port, children, alive, wait_for, as_root, epoll_fds  # noqa: E402

PS = os.path.join(BUILD, "epollfork-ps")
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
LOAD = os.path.join(ROOT, "bench", "ps_load.c")


# ------------------------------------------------------------ helpers

class Scenario:
    """A scenario program in its own session; info holds its READY line."""

    def __init__(self, argv, prefix=(), wait_gone=False):
        self.wait_gone = wait_gone
        self.p = subprocess.Popen(list(prefix) + list(argv), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                  start_new_session=True)
        line = b""
        end = time.time() + 15
        while not line.endswith(b"\n") and time.time() < end:
            r, _, _ = select.select([self.p.stdout], [], [], 0.2)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 4096)
                if not chunk:
                    break
                line += chunk
        text = line.decode(errors="replace").strip()
        if not text.startswith("READY "):
            self.stop()
            raise Fail("%s did not get ready: %r %s" % (argv, text, self.p.stderr.read()[-2000:]))
        parts = text.split()
        self.mode = parts[1]
        self.info = {k: int(v) for k, v in (x.split("=") for x in parts[2:])}

    def __getitem__(self, k):
        return self.info[k]

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except OSError:
            pass
        self.p.wait(timeout=10)
        if self.wait_gone and hasattr(self, "info"):
            # its orphans too (init reaps them, in its own time): realrun's
            # /proc walk in a later case reads names as UTF-8, and these
            # names can be any bytes
            pids = [v for k, v in self.info.items() if k in ("parent", "child")]
            wait_for(lambda: not any(os.path.exists("/proc/%d" % p) for p in pids), 15,
                     "the scenario's processes to be gone")

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.stop()
        return False


def wchan(pid):
    try:
        with open("/proc/%d/wchan" % pid) as f:
            return f.read()
    except OSError:
        return ""


def wait_in_epoll(*pids):
    """Until each pid sleeps in the kernel's epoll wait (wchan, not the tool)."""
    for pid in pids:
        wait_for(lambda: "epoll" in wchan(pid), 10, "pid %d to block in epoll_wait" % pid)


def wait_not_running(pid):
    """Until pid sleeps somewhere (its READY line comes before the block)."""
    wait_for(lambda: wchan(pid) not in ("", "0"), 10, "pid %d to block" % pid)


def ps(*args, prefix=(), timeout=60):
    """Run epollfork-ps; (exit status, JSON objects, stdout bytes, stderr)."""
    check(os.path.exists(PS), "%s is not built (make)" % PS)
    p = subprocess.run(list(prefix) + [PS] + list(args), capture_output=True, timeout=timeout)
    objs = []
    if "--json" in args and p.returncode in (0, 1):
        try:
            text = p.stdout.decode("utf-8")          # strict: valid UTF-8 or fail
        except UnicodeDecodeError as e:
            raise Fail("output is not UTF-8: %s\n%r" % (e, p.stdout[:2000]))
        for line in text.splitlines():
            try:
                objs.append(json.loads(line))
            except ValueError:
                raise Fail("not a JSON line: %r" % line[:500])
        check(objs and objs[-1]["kind"] == "summary", "the last line is the summary: %r" % objs[-1:])
    if p.returncode != 2:
        check(not p.stderr, "stderr: %r" % p.stderr[-2000:])
    return p.returncode, objs, p.stdout, p.stderr.decode(errors="replace")


def insts(objs):
    return [o for o in objs if o["kind"] == "instance"]


def holder(inst, pid):
    hs = [h for h in inst["holders"] if h["pid"] == pid]
    return hs[0] if hs else None


def findings(objs, kind=None):
    return [f for i in insts(objs) for f in i["findings"] if kind is None or f["kind"] == kind]


def show(objs):
    return "\n".join(json.dumps(o)[:1500] for o in objs)


def fdinfo_tfds(pid, fd):
    """tfd numbers of /proc/PID/fdinfo/FD, read here, not by the tool."""
    with open("/proc/%d/fdinfo/%d" % (pid, fd)) as f:
        return [int(l.split()[1]) for l in f if l.startswith("tfd:")]


def one_instance(objs, pids):
    """The one instance shown, and its holders are exactly pids."""
    ins = insts(objs)
    check(len(ins) == 1, "one instance expected, got %d:\n%s" % (len(ins), show(objs)))
    got = sorted(h["pid"] for h in ins[0]["holders"])
    check(got == sorted(pids), "holders %r, expected %r\n%s" % (got, sorted(pids), show(objs)))
    return ins[0]


# ------------------------------------------------------------ the seed

@case("ps/seed-after-fork-one-instance-two-holders-parent-waiting")
def _():
    exe = build("ps_seed.c")
    with Scenario([exe, "fork"]) as s:
        par, child, ep, fd = s["parent"], s["child"], s["ep"], s["fd"]
        wait_in_epoll(par)
        wait_not_running(child)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 0, "no finding, exit 0: rc %d\n%s" % (rc, show(objs)))
        inst = one_instance(objs, [par, child])
        check(inst["shared"] and inst["key"] == "%d:%d" % (par, ep), "shared, key: %r" % inst["key"])
        hp, hc = holder(inst, par), holder(inst, child)
        check(hp["fds"] == [ep] and hc["fds"] == [ep], "both at fd %d: %r %r" % (ep, hp, hc))
        check(hp["cloexec"] == [True], "EPOLL_CLOEXEC: %r" % hp["cloexec"])
        check(hp["waiting"] == [par] and hp["waits"][0]["call"] == "epoll_wait"
              and hp["waits"][0]["fd"] == ep, "the parent waits on it: %r" % hp)
        check(hc["waiting"] == [], "the child does not: %r" % hc)
        check(hp["comm"] == "ps_seed" and hp["exe"] == exe, "comm/exe %r" % hp)
        ents = inst["entries"]
        ino = os.stat("/proc/%d/fd/%d" % (par, fd)).st_ino
        check(len(ents) == 1, "one entry: %r" % ents)
        e = ents[0]
        check(e["tfd"] == fd and e["data"] == hex(fd) and e["ino"] == ino
              and e["target"] == "pipe:[%d]" % ino, "the pipe: %r" % e)
        check(e["events"].split("|")[0] == "EPOLLIN" and "EPOLLHUP" in e["events"].split("|"),
              "events decoded, EPOLLERR|EPOLLHUP added by the kernel: %r" % e["events"])
        check(e["stale"] is False and e["reused_in"] == []
              and {"pid": par, "fd": fd} in e["open_in"], "held: %r" % e)
        check(inst["findings"] == [], "no finding: %r" % inst["findings"])
        # the table says the same, with the same exit status
        rc2, _, out, _ = ps("--tree", str(par))
        first = out.decode().splitlines()[0]
        check(rc2 == 0 and re.match(r"^epoll instance %d:%d: 2 holders, 1 entry, SHARED$"
                                    % (par, ep), first), "table: rc %d %r" % (rc2, first))


@case("ps/seed-after-child-del-entry-gone-for-both")
def _():
    with Scenario([build("ps_seed.c"), "del"]) as s:
        par, child, ep = s["parent"], s["child"], s["ep"]
        wait_in_epoll(par)
        check(fdinfo_tfds(par, ep) == [] and fdinfo_tfds(child, ep) == [],
              "the kernel: no entry left in either fdinfo")
        rc, objs, _, _ = ps("--json", str(par), str(child))
        check(rc == 0, "rc %d" % rc)
        inst = one_instance(objs, [par, child])
        check(inst["entries"] == [] and inst["entries_read"], "no entry for either: %r" % inst)
        check(holder(inst, par)["waiting"] == [par], "the parent still waits (for nothing)")


@case("ps/two-processes-waiting-shared-and-waited")
def _():
    with Scenario([build("ps_seed.c"), "both"]) as s:
        par, child = s["parent"], s["child"]
        wait_in_epoll(par, child)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "a finding, exit 1: rc %d" % rc)
        inst = one_instance(objs, [par, child])
        f = findings(objs)
        check(len(f) == 1 and f[0]["kind"] == "shared-and-waited" and sorted(f[0]["pids"]) ==
              sorted([par, child]), "shared-and-waited for both: %r" % f)
        check(holder(inst, child)["waiting"] == [child], "the child waits too")


@case("ps/two-processes-waiting-on-their-own-instances-silent")
def _():
    """The neighbour: both wait, each on an instance of its own (the child
    closed the inherited one): nothing shared, nothing shown, exit 0."""
    with Scenario([build("ps_seed.c"), "own"]) as s:
        par, child, fd = s["parent"], s["child"], s["fd"]
        wait_in_epoll(par, child)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 0 and insts(objs) == [], "nothing shown: rc %d\n%s" % (rc, show(objs)))
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(par))
        ins = insts(objs)
        check(rc == 0 and len(ins) == 2, "--all: two instances: %s" % show(objs))
        for i, pid in zip(ins, (par, child)):
            check([h["pid"] for h in i["holders"]] == [pid] and not i["shared"]
                  and i["holders"][0]["waiting"] == [pid], "one holder each, waiting: %r" % i)
            check([e["tfd"] for e in i["entries"]] == [fd], "the same pipe in both: %r" % i)


# ------------------------------------------------------------ stale, reused

@case("ps/stale-entry-shown-stale")
def _():
    with Scenario([build("ps_stale.c"), "stale"]) as s:
        par, child, ep, tfd = s["parent"], s["child"], s["ep"], s["tfd"]
        wait_in_epoll(par)
        check(not os.path.exists("/proc/%d/fd/%d" % (par, tfd)) and fdinfo_tfds(par, ep) == [tfd],
              "the kernel: fd %d closed, its entry still there" % tfd)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "rc %d\n%s" % (rc, show(objs)))
        inst = one_instance(objs, [par])
        e = inst["entries"][0]
        check(e["tfd"] == tfd and e["data"] == "0xa" and e["stale"] is True and e["open_in"] == [],
              "the ghost, stale: %r" % e)
        check({"pid": child, "fd": tfd} in e["kept_open_by"], "kept open by the child: %r" % e)
        f = findings(objs)
        check(len(f) == 1 and f[0]["kind"] == "stale-entry" and f[0]["tfd"] == tfd
              and f[0]["pids"] == [par], "one stale-entry finding: %r" % f)


@case("ps/stale-entry-deleted-first-silent")
def _():
    with Scenario([build("ps_stale.c"), "stale-del"]) as s:
        par, ep = s["parent"], s["ep"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 0 and insts(objs) == [], "nothing to show: %s" % show(objs))
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(par))
        inst = one_instance(objs, [par])
        check(rc == 0 and inst["entries"] == [] and inst["key"] == "%d:%d" % (par, ep),
              "--all: the empty instance: %r" % inst)


@case("ps/reused-number-shown-reused")
def _():
    with Scenario([build("ps_stale.c"), "reused"]) as s:
        par, child, tfd = s["parent"], s["child"], s["tfd"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "rc %d\n%s" % (rc, show(objs)))
        inst = one_instance(objs, [par, child])
        e = inst["entries"][0]
        now = os.stat("/proc/%d/fd/%d" % (par, tfd)).st_ino
        check(e["tfd"] == tfd and e["data"] == "0xa" and e["ino"] != now,
              "the kernel: the parent's fd %d is inode %d, the entry's file %d" % (tfd, now, e["ino"]))
        check(e["reused_in"] == [par] and e["open_in"] == [{"pid": child, "fd": tfd}]
              and e["stale"] is False, "reused in the parent, open in the child: %r" % e)
        f = findings(objs)
        check(len(f) == 1 and f[0]["kind"] == "reused-number" and f[0]["pids"] == [par]
              and f[0]["tfd"] == tfd, "one reused-number finding: %r" % f)


@case("ps/reused-number-deleted-first-silent")
def _():
    with Scenario([build("ps_stale.c"), "reused-del"]) as s:
        par, child, tfd = s["parent"], s["child"], s["tfd"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 0, "rc %d\n%s" % (rc, show(objs)))
        inst = one_instance(objs, [par, child])
        check([(e["tfd"], e["data"], e["reused_in"], e["stale"]) for e in inst["entries"]]
              == [(tfd, "0xb", [], False)], "only B's entry, fine: %r" % inst["entries"])
        check(inst["findings"] == [], "no finding")


@case("ps/reused-number-same-inode-told-apart-by-kcmp")
def _():
    """Two eventfds (one anonymous inode for both) registered under one
    number: only kcmp(KCMP_EPOLL_TFD) at each entry's own rank tells which
    file each entry is; the parent's fd is B, the child's is A."""
    with Scenario([build("ps_stale.c"), "reused-readd"]) as s:
        par, child, tfd = s["parent"], s["child"], s["tfd"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "rc %d" % rc)
        inst = one_instance(objs, [par, child])
        ents = {e["data"]: e for e in inst["entries"]}
        check(sorted(ents) == ["0xa", "0xb"] and all(e["tfd"] == tfd for e in ents.values()),
              "two entries numbered %d: %r" % (tfd, inst["entries"]))
        check(ents["0xa"]["ino"] == ents["0xb"]["ino"], "one inode for both: inodes cannot tell")
        check(ents["0xa"]["open_in"] == [{"pid": child, "fd": tfd}] and ents["0xa"]["reused_in"] == [par],
              "A: the child's, reused in the parent: %r" % ents["0xa"])
        check(ents["0xb"]["open_in"] == [{"pid": par, "fd": tfd}] and ents["0xb"]["reused_in"] == [child],
              "B: the parent's, and the child's %d is A: %r" % (tfd, ents["0xb"]))
        f = sorted((x["kind"], x["pids"]) for x in findings(objs))
        check(f == [("reused-number", [par]), ("reused-number", [child])] or
              f == sorted([("reused-number", [child]), ("reused-number", [par])]), "%r" % f)


# ------------------------------------------------------------ exec

@case("ps/inherited-through-exec")
def _():
    exe = build("ps_exec.c")
    with Scenario([exe, "exec"]) as s:
        par, child, ep = s["parent"], s["child"], s["ep"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "rc %d\n%s" % (rc, show(objs)))
        inst = one_instance(objs, [par, child])
        hc = holder(inst, child)
        check(hc["comm"] == "sleep" and os.path.realpath(hc["exe"]) == os.path.realpath("/bin/sleep")
              and hc["fds"] == [ep] and hc["cloexec"] == [False], "sleep holds it: %r" % hc)
        f = findings(objs)
        check(len(f) == 1 and f[0]["kind"] == "inherited-through-exec" and f[0]["pids"] == [child],
              "inherited-through-exec, the child: %r" % f)


@case("ps/exec-with-cloexec-and-fork-without-exec-silent")
def _():
    exe = build("ps_exec.c")
    with Scenario([exe, "cloexec"]) as s:
        wait_in_epoll(s["parent"])
        check(epoll_fds(s["child"]) == 0, "sleep holds no epoll fd")
        rc, objs, _, _ = ps("--json", "--tree", str(s["parent"]))
        check(rc == 0 and insts(objs) == [], "EPOLL_CLOEXEC: nothing: %s" % show(objs))
    with Scenario([exe, "fork"]) as s:
        wait_in_epoll(s["parent"])
        rc, objs, _, _ = ps("--json", "--tree", str(s["parent"]))
        inst = one_instance(objs, [s["parent"], s["child"]])
        check(rc == 0 and inst["findings"] == [] and holder(inst, s["child"])["cloexec"] == [False],
              "shared without close-on-exec, but one program: no finding: %r" % inst)


# ------------------------------------------------------------ static binary

@case("ps/static-binary-the-shim-cannot-see")
def _():
    exe = build("ps_seed.c", out="ps_seed_static", flags=["-static"])
    r = subprocess.run(["readelf", "-l", exe], capture_output=True, text=True)
    check(r.returncode == 0 and "INTERP" not in r.stdout, "statically linked (no PT_INTERP)")
    from harness import LIB
    env = dict(os.environ, LD_PRELOAD=LIB)
    p = subprocess.Popen([exe, "both"], stdout=subprocess.PIPE, env=env, start_new_session=True)
    try:
        line = p.stdout.readline().decode().split()
        info = {k: int(v) for k, v in (x.split("=") for x in line[2:])}
        par, child = info["parent"], info["child"]
        wait_in_epoll(par, child)
        with open("/proc/%d/maps" % par) as f:
            check("libepollfork" not in f.read(), "LD_PRELOAD does nothing to a static binary")
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "rc %d" % rc)
        inst = one_instance(objs, [par, child])
        check([f["kind"] for f in inst["findings"]] == ["shared-and-waited"],
              "found: %r" % inst["findings"])
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# ------------------------------------------------------------ --watch

@case("ps/watch-reports-changes-and-waits-seen")
def _():
    with Scenario([build("ps_seed.c"), "churn"]) as s:
        par, child, ep = s["parent"], s["child"], s["ep"]
        wait_in_epoll(par)
        t0 = time.time()
        rc, objs, _, _ = ps("--json", "--watch=1.5", "--tree", str(par))
        took = time.time() - t0
        check(1.5 <= took < 6, "bounded in time: %.2f s" % took)
        check(rc == 1, "rc %d\n%s" % (rc, show(objs)))
        ch = [o for o in objs if o["kind"] == "change"]
        key = "%d:%d" % (par, ep)
        kinds = {c["change"] for c in ch if c["instance"] == key}
        check({"entry-added", "entry-removed", "waiting"} <= kinds, "changes %r\n%s" % (kinds, show(ch)))
        churned = [c["entry"] for c in ch if c["change"].startswith("entry-")]
        check(all(e["data"] == "0xc0ffee" and "EPOLLET" in e["events"] for e in churned),
              "only the child's ADD/DEL moved: %r" % churned)
        check(any(c["change"] == "waiting" and c["pid"] == child and c["fd"] == ep for c in ch),
              "the child seen waiting")
        inst = one_instance(objs, [par, child])
        check(child in holder(inst, child)["seen_waiting"], "seen_waiting: %r" % inst)
        f = findings(objs)
        check(len(f) == 1 and f[0]["kind"] == "shared-and-waited" and sorted(f[0]["pids"]) ==
              sorted([par, child]), "counted the waits seen: %r" % f)


@case("ps/watch-holder-leaves")
def _():
    with Scenario([build("ps_seed.c"), "leave"]) as s:
        par, ep = s["parent"], s["ep"]
        wait_in_epoll(par)
        rc, objs, _, _ = ps("--json", "--watch=1.2", "--tree", str(par))
        ch = [(c["change"], c["instance"]) for c in objs if c["kind"] == "change"]
        # the instance is named after one of its holders (after a pid wrap the
        # child's pid can be the smaller one)
        names = ["%d:%d" % (par, ep), "%d:%d" % (s["child"], ep)]
        check(len(ch) == 1 and ch[0][0] == "unshared" and ch[0][1] in names,
              "one change, unshared: %r (instance %s)" % (ch, " or ".join(names)))
        check(rc == 0 and insts(objs) == [], "not shared at the end: nothing shown: %s" % show(objs))
        check(os.path.exists("/proc/%d/fd/%d" % (par, ep)) and not
              os.path.exists("/proc/%d/fd/%d" % (s["child"], ep)), "the kernel: only the parent holds it")


@case("ps/watch-quiet-instance-silent")
def _():
    with Scenario([build("ps_seed.c"), "fork"]) as s:
        wait_in_epoll(s["parent"])
        rc, objs, _, _ = ps("--json", "--watch=0.6", "--tree", str(s["parent"]))
        check(rc == 0, "rc %d" % rc)
        check([o for o in objs if o["kind"] == "change"] == [], "no change: %s" % show(objs))
        check(len(insts(objs)) == 1 and findings(objs) == [], "the instance, no finding")


@case("ps/kcmp-filtered-says-so-and-guesses-nothing")
def _():
    """Under a seccomp filter that makes kcmp(2) fail with ENOSYS (as some
    container profiles do), the two holders of the seed's instance cannot be
    shown to be one instance: each fd is listed alone (identity unknown),
    a note says why, no finding is made, exit 0."""
    wrap = build("ps_nokcmp.c")
    with Scenario([build("ps_seed.c"), "both"]) as s:
        par, child = s["parent"], s["child"]
        wait_in_epoll(par, child)
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(par), prefix=[wrap])
        notes = [o["message"] for o in objs if o["kind"] == "note"]
        check(any("kcmp(2) does not work here" in n for n in notes), "the note: %r" % notes)
        ins = insts(objs)
        check(rc == 0 and not findings(objs), "no finding without kcmp: rc %d %s" % (rc, show(objs)))
        check(sorted(i["holders"][0]["pid"] for i in ins) == sorted([par, child]) and
              all(len(i["holders"]) == 1 and not i["identity_known"] and not i["shared"] for i in ins),
              "each fd alone, identity unknown: %s" % show(objs))
        check(all(e["stale"] is None for i in ins for e in i["entries"]), "entries not judged")
        rc, objs, _, _ = ps("--json", "--tree", str(par))
        check(rc == 1, "with kcmp the same processes give the finding")


# ------------------------------------------------------------ usage, permissions, names

@case("ps/usage-errors-exit-2")
def _():
    for args in (["--bogus"], ["abc"], ["0"], ["-1"], ["99999999999"], ["--watch=0"],
                 ["--watch=x"], ["--watch=3601"], ["--tree"], ["--tree=abc"], ["--json", "12x"]):
        rc, _, out, err = ps(*args)
        check(rc == 2 and not out and len(err.strip().splitlines()) == 1
              and err.startswith("epollfork-ps: "), "%r: rc %d out %r err %r" % (args, rc, out, err))
    rc, _, out, _ = ps("--help")
    check(rc == 0 and out.startswith(b"usage: epollfork-ps"), "--help")
    with open(os.path.join(ROOT, "include", "epollfork_version.h")) as f:
        ver = re.search(r'VERSION_STRING "([^"]+)"', f.read()).group(1)
    rc, _, out, _ = ps("--version")
    check(rc == 0 and out.decode().strip() == "epollfork-ps " + ver, "--version: %r" % out)
    w = subprocess.run([os.path.join(ROOT, "scripts", "epollfork-ps"), "--version"], capture_output=True)
    check(w.returncode == 0 and w.stdout == out, "scripts/epollfork-ps runs the built program: %r" % w)
    # a pid that does not exist is not a usage error: it is listed as skipped
    rc, objs, _, _ = ps("--json", "4194000")
    sk = [o for o in objs if o["kind"] == "skipped"]
    check(rc == 0 and sk and sk[0]["pid"] == 4194000 and sk[0]["reason"] == "no such process",
          "skipped: %r" % objs)


@case("ps/nobody-sees-root-processes-as-skipped")
def _():
    if not as_root():
        print("    SKIPPED: needs root (to start a root process and run as nobody)")
        return
    exe = build("ps_seed.c")
    # nobody must be able to run the binary: the build tree is world-readable
    check(subprocess.run(NOBODY + [PS, "--version"], capture_output=True).returncode == 0,
          "nobody can run %s" % PS)
    with Scenario([exe, "both"]) as s:
        par, child = s["parent"], s["child"]
        wait_in_epoll(par, child)
        rc, objs, _, _ = ps("--json", str(par), str(child), prefix=NOBODY)
        sk = {o["pid"]: o for o in objs if o["kind"] == "skipped"}
        check(rc == 0 and insts(objs) == [] and sorted(sk) == sorted([par, child]),
              "root's processes skipped, exit 0 (no finding among what it could read): rc %d %s"
              % (rc, show(objs)))
        check(all("permission denied" in o["reason"] and o["comm"] == "ps_seed" for o in sk.values()),
              "with the reason: %r" % sk)
        rc, objs, out, _ = ps("--json", prefix=NOBODY)          # the whole host
        check(rc == 0 and {par, child} <= {o["pid"] for o in objs if o["kind"] == "skipped"},
              "the whole host as nobody: root's processes skipped, no crash: rc %d" % rc)
        rc, _, out, _ = ps(prefix=NOBODY)
        check(rc == 0 and b"skipped, permission denied" in out, "the table lists them too")
    # nobody's own processes it does read, findings and all
    with Scenario([exe, "both"], prefix=NOBODY) as s:
        wait_in_epoll(s["parent"], s["child"])
        rc, objs, _, _ = ps("--json", "--tree", str(s["parent"]), prefix=NOBODY)
        check(rc == 1 and [f["kind"] for f in findings(objs)] == ["shared-and-waited"],
              "nobody's own tree: found: rc %d %s" % (rc, show(objs)))


@case("ps/names-with-any-bytes-stay-valid-utf8-and-one-line")
def _():
    d = tempfile.mkdtemp(prefix="epf-ps-")
    path = os.path.join(d.encode(), b"we\xffird\nname\x1b[31m")
    os.mkfifo(path)
    try:
        with Scenario([build("ps_seed.c").encode(), b"fork", path, b"ps\x01\xffseed"],
                      wait_gone=True) as s:
            par, fd = s["parent"], s["fd"]
            wait_in_epoll(par)
            rc, objs, _, _ = ps("--json", "--tree", str(par))     # strict UTF-8, per line
            inst = one_instance(objs, [par, s["child"]])
            want = os.path.join(d, "we\\xffird\nname\x1b[31m")   # invalid byte -> the text \xff
            check(inst["entries"][0]["target"] == want and inst["entries"][0]["tfd"] == fd,
                  "target %r, want %r" % (inst["entries"][0]["target"], want))
            check(holder(inst, par)["comm"] == "ps\x01\\xffseed", "comm %r" % holder(inst, par)["comm"])
            rc2, _, out, _ = ps("--tree", str(par))
            check(rc2 == rc == 0, "rc %d %d" % (rc, rc2))
            check(not re.search(rb"[\x00-\x09\x0b-\x1f\x7f\xff]", out), "no raw control or invalid bytes")
            check(b"we\\xffird\\x0aname\\x1b[31m" in out and b"ps\\x01\\xffseed" in out,
                  "escaped in the table: %r" % out)
    finally:
        os.unlink(path)
        os.rmdir(d)


@case("ps/procfs-parsers-take-only-well-formed-lines")
def _():
    """tests/unit/ps_parse.c, built with ASan+UBSan against src/procfs.c: the
    kernel's lines parse, cut or overflowing ones are refused, random bytes
    are never read past their length."""
    exe = build(os.path.join(ROOT, "tests", "unit", "ps_parse.c"), out="ps_parse",
                flags=["-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
                       "-I" + os.path.join(ROOT, "src"), os.path.join(ROOT, "src", "procfs.c")])
    r = subprocess.run([exe], capture_output=True, text=True, timeout=120)
    check(r.returncode == 0 and "all checks passed" in r.stdout, "ps_parse: rc %d\n%s%s"
          % (r.returncode, r.stdout, r.stderr[-4000:]))


@case("ps/sanitized-build-over-every-scenario")
def _():
    """epollfork-ps built with ASan+UBSan (-Werror), run in every output mode
    over all the scenarios at once, as root and as nobody: no sanitizer
    report, and the same findings as the shipped build."""
    exe = os.path.join(BUILD, "tests", "epollfork-ps-asan")
    srcs = [os.path.join(ROOT, "src", "tools", f) for f in
            ("epollfork_ps.c", "ps_scan.c", "ps_judge.c", "ps_out.c", "ps_util.c")] + [os.path.join(ROOT, "src", "procfs.c")]
    r = subprocess.run(["cc", "-std=gnu11", "-O1", "-g", "-fsanitize=address,undefined",
                        "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-Wall", "-Wextra",
                        "-Werror", "-Wshadow", "-Wno-unused-parameter", "-I" + os.path.join(ROOT, "include"),
                        "-I" + os.path.join(ROOT, "src"), "-I" + os.path.join(ROOT, "src", "tools"),
                        "-o", exe] + srcs, capture_output=True, text=True)
    check(r.returncode == 0, "ASan build: %s" % r.stderr[-3000:])
    runs = [("ps_seed.c", "both"), ("ps_seed.c", "churn"), ("ps_stale.c", "stale"),
            ("ps_stale.c", "reused-readd"), ("ps_exec.c", "exec")]
    scen = [Scenario([build(src), mode]) for src, mode in runs]
    try:
        for s in scen:
            wait_in_epoll(s["parent"])
        tree = []
        for s in scen:
            tree += ["--tree", str(s["parent"])]
        want = None
        for prefix in ((), NOBODY if as_root() else ()):
            for args in ([], ["--all"], ["--json"], ["--json", "--all"], ["--watch=0.4"],
                         ["--json", "--watch=0.4"]):
                p = subprocess.run(list(prefix) + [exe] + args + tree, capture_output=True, timeout=60)
                check(p.returncode in (0, 1) and not p.stderr,
                      "%s %s: rc %d\n%s" % (" ".join(prefix), args, p.returncode, p.stderr.decode()[-3000:]))
                if not prefix and args == ["--json"]:
                    got = sorted(f["kind"] for l in p.stdout.decode().splitlines()
                                 for o in [json.loads(l)] if o["kind"] == "instance" for f in o["findings"])
                    _, objs, _, _ = ps("--json", *tree)
                    want = sorted(f["kind"] for f in findings(objs))
                    # kinds, not counts: the churn scenario is seen waiting at
                    # one sampling and not at the other
                    got, want = sorted(set(got)), sorted(set(want))
                    check(got == want and "stale-entry" in got and "inherited-through-exec" in got,
                          "the sanitized build finds what the shipped one does: %r vs %r" % (got, want))
    finally:
        for s in scen:
            s.stop()


# ------------------------------------------------------------ scale

@case("ps/scale-200-processes-grouped-exactly")
def _():
    """ps_load: 200 processes, 300 fds each, 180 instances of which 20 are
    shared by a process and its fork; every one found, grouped right, no
    finding.  The time bound is loose (a shared 2-core VM); make bench has
    the figures."""
    exe = build(LOAD, out="ps_load", flags=["-O2"])
    p = subprocess.Popen([exe, "200", "300"], stdout=subprocess.PIPE, stdin=subprocess.PIPE,
                         start_new_session=True)
    try:
        line = p.stdout.readline().decode().split()
        check(line and line[0] == "READY", "ps_load: %r" % line)
        info = {k: int(v) for k, v in (x.split("=") for x in line[1:])}
        t0 = time.time()
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(info["leader"]))
        took = time.time() - t0
        ins = insts(objs)
        check(rc == 0 and not findings(objs), "no finding: rc %d %r" % (rc, findings(objs)[:3]))
        check(len(ins) == info["instances"], "%d instances, made %d" % (len(ins), info["instances"]))
        shared = [i for i in ins if i["shared"]]
        check(len(shared) == info["shared"], "%d shared, made %d" % (len(shared), info["shared"]))
        for i in shared:
            a, b = i["holders"]
            check(len(i["holders"]) == 2 and a["fds"] == b["fds"], "a process and its fork: %r" % i)
        check(sum(len(i["entries"]) for i in ins) == info["entries"],
              "every entry: %d vs %d" % (sum(len(i["entries"]) for i in ins), info["entries"]))
        check(all(i["holders"][0]["waiting"] == [i["holders"][0]["pid"]] for i in ins),
              "each maker waits on its instance")
        check(took < 20, "took %.1f s" % took)
        print("    %d processes, %d fds: %.2f s (elapsed_ms %.0f)" % (
            200, info["fds"], took, objs[-1]["elapsed_ms"]))
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


# ------------------------------------------------------------ real servers

def real_listing(root, want_pids):
    """epollfork-ps --all over root's tree: every instance is held inside the
    tree, each of want_pids holds one, nothing is found.  The instances."""
    rc, objs, _, _ = ps("--json", "--all", "--tree", str(root))
    ins = insts(objs)
    check(rc == 0 and not findings(objs), "no finding, exit 0: rc %d\n%s" % (rc, show(objs)))
    held = {h["pid"] for i in ins for h in i["holders"]}
    check(set(want_pids) <= held, "instances of %s listed; held by %s\n%s" % (want_pids, held, show(objs)))
    for pid in want_pids:
        check(epoll_fds(pid) == sum(len(h["fds"]) for i in ins for h in i["holders"] if h["pid"] == pid),
              "every epoll fd of %d is in the listing" % pid)
    return ins


NGINX = """%(user)s
worker_processes 2;
master_process on;
daemon off;
error_log %(var)s/error.log info;
pid %(var)s/nginx.pid;
events { worker_connections 64; }
http {
    access_log %(var)s/access.log;
    client_body_temp_path %(var)s/body;
    proxy_temp_path %(var)s/proxy;
    fastcgi_temp_path %(var)s/fastcgi;
    uwsgi_temp_path %(var)s/uwsgi;
    scgi_temp_path %(var)s/scgi;
    server { listen 127.0.0.1:%(port)d; return 200 "ok\\n"; }
}
"""


@case("ps/real-nginx-master-two-workers")
def _():
    need("nginx")
    with Case("ps-nginx") as box:
        port = free_port()
        conf = box.write("nginx.conf", NGINX % dict(
            user="user %s %s;" % box.drop if box.drop else "", var=box.var, port=port))
        p = box.start(["nginx", "-p", box.dir, "-c", conf, "-e", os.path.join(box.var, "error.log")],
                      label="nginx", shim=False)
        box.wait_port(port, proc=p)
        wait_for(lambda: len(children(p.pid)) == 2 and all(epoll_fds(w) for w in children(p.pid)),
                 10, "two workers with their epoll")
        workers = children(p.pid)
        wait_in_epoll(*workers)
        ins = real_listing(p.pid, workers)
        check(len(ins) == 2 and not any(i["shared"] for i in ins), "one instance per worker, none shared")
        for i in ins:
            check(any(e["target"].startswith("socket:[") for e in i["entries"]), "the listener: %r" % i)


@case("ps/real-redis")
def _():
    need("redis-server", "redis-tools")
    with Case("ps-redis") as box:
        port = free_port()
        p = box.start(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
                       "--save", "", "--appendonly", "no", "--dir", box.var, "--logfile", "",
                       "--unixsocket", ""], label="redis", shim=False)
        box.wait_port(port, proc=p)
        wait_in_epoll(p.pid)
        ins = real_listing(p.pid, [p.pid])
        check(any(e["target"].startswith("socket:[") for i in ins for e in i["entries"]), "listener")


HAPROXY = """global
    %(user)s
    nbthread 2
defaults
    mode http
    timeout connect 2s
    timeout client 5s
    timeout server 5s
frontend fe
    bind 127.0.0.1:%(port)d
    http-request return status 200 content-type text/plain string "ok"
%(programs)s
"""


def haproxy(box, programs=""):
    port = free_port()
    conf = box.write("haproxy.cfg", HAPROXY % dict(
        user="user %s\n    group %s" % box.drop if box.drop else "", port=port, programs=programs))
    p = box.start(["haproxy", "-W", "-db", "-f", conf], label="haproxy", shim=False)
    box.wait_port(port, proc=p)
    return p


@case("ps/real-haproxy-master-worker")
def _():
    need("haproxy")
    with Case("ps-haproxy") as box:
        p = haproxy(box)
        wait_for(lambda: len(children(p.pid)) == 1 and epoll_fds(children(p.pid)[0]) >= 2, 10,
                 "the worker and its pollers")
        # the master re-creates its poller after the fork (close, then
        # epoll_create): look once it is back in its loop
        wait_in_epoll(p.pid, children(p.pid)[0])
        ins = real_listing(p.pid, [p.pid] + children(p.pid))
        check(not any(i["shared"] for i in ins), "none shared: %r" % [i["key"] for i in ins])


@case("ps/real-memcached")
def _():
    need("memcached")
    with Case("ps-memcached") as box:
        port = free_port()
        pidfile = os.path.join(box.var, "memcached.pid")
        cmd = ["memcached", "-d", "-t", "4", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-P", pidfile,
               "-m", "16"] + (["-u", "nobody"] if as_root() else [])
        box.run(cmd, timeout=20, label="memcached", shim=False)
        pid = box.read_pid(pidfile)
        box.wait_port(port)
        wait_in_epoll(pid)
        ins = real_listing(pid, [pid])
        check(len(ins) >= 5, "a libevent base per thread: %d instances" % len(ins))


@case("ps/real-haproxy-program-leaks-its-epoll-through-exec")
def _():
    """haproxy 2.6 creates its master poller without close-on-exec, forks the
    `program` commands, and only then re-creates its own poller: every program
    keeps the old instance (the master does not).  With two programs, a shell
    that starts sleep and a sleep, three processes running two programs hold
    it: found for each.  With one program alone, that it came through the
    exec cannot be shown (the master no longer holds it): a note, no finding."""
    need("haproxy")
    with Case("ps-haproxy-program") as box:
        p = haproxy(box, 'program shell\n    command /bin/sh -c "sleep 1000 & wait"\n'
                         'program direct\n    command /bin/sleep 1001\n')

        def find():
            kids = {c: open("/proc/%d/cmdline" % c, "rb").read() for c in children(p.pid)}
            sh = [c for c, cmd in kids.items() if cmd.startswith(b"/bin/sh")]
            direct = [c for c, cmd in kids.items() if cmd == b"/bin/sleep\x001001\x00"]
            sl = children(sh[0]) if sh else []
            return (sh[0], sl[0], direct[0]) if sh and sl and direct else None
        wait_for(lambda: find() is not None, 10, "the two programs")
        sh, sleep, direct = find()
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(p.pid))
        check(rc == 1, "rc %d\n%s" % (rc, show(objs)))
        leak = [i for i in insts(objs) if holder(i, sleep)]
        check(len(leak) == 1, "one instance holds sleep: %s" % show(objs))
        leak = leak[0]
        check(sorted(h["pid"] for h in leak["holders"]) == sorted([sh, sleep, direct]) and
              all(h["cloexec"] == [False] for h in leak["holders"]) and not holder(leak, p.pid),
              "the programs hold one instance, the master does not: %r" % leak)
        check(holder(leak, sh)["exe"] == "/usr/bin/dash" and holder(leak, sleep)["exe"] == "/usr/bin/sleep",
              "two programs: %r" % leak["holders"])
        f = findings(objs)
        check(sorted(x["pids"][0] for x in f) == sorted([sh, sleep, direct]) and
              all(x["kind"] == "inherited-through-exec" and len(x["pids"]) == 1 for x in f),
              "found for each program: %r" % f)
    with Case("ps-haproxy-one-program") as box:
        p = haproxy(box, "program direct\n    command /bin/sleep 1002\n")
        wait_for(lambda: any(open("/proc/%d/cmdline" % c, "rb").read() == b"/bin/sleep\x001002\x00"
                             for c in children(p.pid)), 10, "the program")
        direct = [c for c in children(p.pid)
                  if open("/proc/%d/cmdline" % c, "rb").read() == b"/bin/sleep\x001002\x00"][0]
        rc, objs, _, _ = ps("--json", "--all", "--tree", str(p.pid))
        alone = [i for i in insts(objs) if holder(i, direct)]
        check(rc == 0 and not findings(objs), "cannot be shown: no finding: rc %d %s" % (rc, show(objs)))
        check(len(alone) == 1 and [h["pid"] for h in alone[0]["holders"]] == [direct] and
              holder(alone[0], direct)["cloexec"] == [False], "sleep alone holds one: %r" % alone)
        check(any("cannot be shown" in n and "haproxy" in n for n in alone[0]["notes"]),
              "a note says what can be shown: %r" % alone[0]["notes"])
