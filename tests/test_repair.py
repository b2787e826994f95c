"""test_repair.py - repair mode (EPOLLFORK_REPAIR=1, src/repair.c).

The program's own behaviour is the proof: each true-positive scenario is run
bare (no shim) and under the shim in repair mode, and what the program itself
prints turns from broken to correct (the parent gets its event, the second
sibling's ADD succeeds, no ghost event arrives, the exec'd program holds no
epoll fd...).  The conflict is still reported once, under the same rules, with
"repaired": true and a `repair` line saying what the shim did; a repair that
cannot be made says why, and the call goes through unchanged.  Programs that
were silent stay silent and keep working, the real servers of test_real.py
included (repair/real-*: the same cases with EPF_REAL_REPAIR=1).
"""
import os
import re

import harness
from harness import case, check, build, run, expect_one, expect_silent, Fail

PY = "/usr/bin/python3"
REPAIR = {"EPOLLFORK_REPAIR": "1"}
# the library scenarios decide their backend in code (test_libs.py)
LIB_ENV = {"EVENT_NOEPOLL": None, "EVENT_NOSELECT": None, "EVENT_NOPOLL": None,
           "EVENT_EPOLL_USE_CHANGELIST": None, "LIBEV_FLAGS": None, "PYTHONPATH": None,
           "PYTHONHOME": None, "PYTHONASYNCIODEBUG": None}


def scen(name, flags=(), libs=()):
    return build(name, flags=flags, libs=libs)


def repair_prog():
    return build("repair.c", libs=["-lpthread"])


def script(name):
    return [PY, os.path.join(harness.SCEN, name)]


def bare(cmd, env=None):
    res = run(cmd, shim=False, env=env)
    check(res.rc == 0, "bare run failed:\n" + res.describe())
    return res


def repaired(cmd, env=None):
    res = run(cmd, env=dict(REPAIR, **(env or {})))
    check(res.rc == 0, "run under repair mode failed:\n" + res.describe())
    return res


def expect_repaired(res, kind="shared-epoll-ctl", **kw):
    """Exactly one report of kind, marked repaired, saying what was done."""
    r = expect_one(res, kind=kind, **kw)
    check(r.get("repaired") is True, "the report says repaired: %r" % {k: r.get(k) for k in ("repaired", "repair")})
    check(r.get("repair") and not r["repair"].startswith("not repaired"), "a repair line: %r" % r.get("repair"))
    return r


def copy_line(r):
    """The numbers of "process P was given a private copy of epoll fd N with E entries"."""
    m = re.match(r"process (\d+) was given a private copy of epoll fd (\d+) with (\d+) entr", r["repair"])
    check(m, "repair line: %r" % r["repair"])
    return [int(x) for x in m.groups()]


def line(res, prefix):
    for l in res.stdout.splitlines():
        if l.startswith(prefix):
            return l
    raise Fail("no line starting %r in:\n%s" % (prefix, res.stdout))


# ------------------------------------------------------------ shared-epoll-ctl

@case("repair/seed-parent-gets-its-event")
def _():
    prog = scen("seed.c")
    check("returned 0 event(s)" in bare([prog]).stdout, "bare, the child's DEL hides the data")
    res = repaired([prog])
    check("returned 1 event(s)" in res.stdout, "repaired, the parent gets its event: %s" % res.stdout)
    r = expect_repaired(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")
    pid, epfd, n = copy_line(r)
    check(pid == r["modifier_pid"] and epfd == r["epfd"] and n == 1,
          "the modifier got a copy of the instance with its one entry: %r" % r["repair"])
    check(("process %d" % r["other_pid"]) in r["repair"], "names the process that keeps the original")


@case("repair/text-report-says-what-was-done")
def _():
    res = run([scen("seed.c")], env=REPAIR, fmt="text")
    text = "\n".join(res.log_lines)
    check(re.search(r"^==\d+== epollfork: REPAIRED: process \d+ was given a private copy of epoll fd \d+ "
                    r"with 1 entry", text, re.M), "the REPAIRED line:\n" + text)
    summ = [l for l in res.log_lines if "SUMMARY:" in l]
    check(len(summ) == 1 and " repaired=true repair=\"process " in summ[0] and summ[0].rstrip().split()[-1].startswith("site="),
          "SUMMARY carries repaired and repair before site: %r" % summ)
    plain = run([scen("seed.c")], fmt="text")
    check(not any("REPAIRED" in l or "repaired=" in l for l in plain.log_lines),
          "without repair mode nothing changes")


@case("repair/syslog-line-carries-repaired")
def _():
    import socket
    import tempfile
    import threading
    import time
    d = tempfile.mkdtemp()
    path = os.path.join(d, "log.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(15)
    got = []

    def loop():
        try:
            while True:
                got.append(s.recv(65536).decode())
        except Exception:
            pass
    threading.Thread(target=loop, daemon=True).start()
    res = run([scen("seed.c")], env=dict(REPAIR, EPOLLFORK_LOG="syslog:" + path), fmt="text", log=None)
    for _ in range(100):
        if any("SUMMARY: shared-epoll-ctl" in g for g in got):
            break
        time.sleep(0.05)
    s.close()
    check(res.rc == 0 and "returned 1 event(s)" in res.stdout, res.describe())
    summ = [g for g in got if "SUMMARY: shared-epoll-ctl" in g]
    check(len(summ) == 1 and re.search(r' repaired=true repair="process \d+ was given a private copy of epoll '
                                       r'fd \d+ with 1 entry[^"]*" site=', summ[0]),
          "the syslog line has the same two fields: %r" % got)


for _mode, _op, _bad, _good in (("child-add", "EPOLL_CTL_ADD", "parent: 2 events, p=1 q=1", "parent: 1 events, p=1 q=0"),
                                ("child-mod", "EPOLL_CTL_MOD", "parent: 0 events", "parent: 1 events, p=1 q=0"),
                                ("grandchild", "EPOLL_CTL_DEL", "parent: 0 events", "parent: 1 events, p=1 q=0")):
    def _t(mode=_mode, op=_op, bad=_bad, good=_good):
        prog = repair_prog()
        check(bad in bare([prog, mode]).stdout, "bare: %s" % bad)
        res = repaired([prog, mode])
        check(good in res.stdout, "repaired: %s, got %s" % (good, res.stdout))
        expect_repaired(res, op=op, use="epoll_wait", reporter="other")
    case("repair/%s-parent-list-untouched" % _mode)(_t)


for _mode, _op in (("add", "EPOLL_CTL_ADD"), ("mod", "EPOLL_CTL_MOD"), ("del", "EPOLL_CTL_DEL"),
                   ("rawfork-del", "EPOLL_CTL_DEL"), ("underscore-del", "EPOLL_CTL_DEL"),
                   ("pwait-del", "EPOLL_CTL_DEL"), ("pwait2-del", "EPOLL_CTL_DEL"), ("ctl-del", "EPOLL_CTL_DEL"),
                   ("reaped-del", "EPOLL_CTL_DEL")):
    def _t(mode=_mode, op=_op):
        expect_repaired(repaired([scen("ctl_child.c"), mode]), op=op, reporter="other")
    case("repair/ctl-child-%s-reported-repaired" % _mode)(_t)


@case("repair/blocked-parent-wakes-for-its-data")
def _():
    prog = scen("blocked.c")
    check("parent woke with 0 events" in bare([prog, "child-del"]).stdout, "bare, the parent misses it")
    res = repaired([prog, "child-del"])
    check("parent woke with 1 events" in res.stdout, "repaired, it wakes for its data: %s" % res.stdout)
    r = expect_repaired(res, op="EPOLL_CTL_DEL", use="blocked-in-wait", reporter="modifier")
    check(copy_line(r)[0] == r["modifier_pid"], "the child got the copy")


@case("repair/thread-blocked-while-another-thread-forks")
def _():
    expect_repaired(repaired([build("blocked.c", libs=["-lpthread"]), "thread-fork"]),
                    op="EPOLL_CTL_DEL", use="blocked-in-wait", reporter="modifier")


@case("repair/siblings-second-add-succeeds")
def _():
    prog = repair_prog()
    check("second sibling ADD: -1 errno=17" in bare([prog, "siblings"]).stdout, "bare: EEXIST")
    res = repaired([prog, "siblings"])
    check("second sibling ADD: 0 errno=0" in res.stdout, "repaired: %s" % res.stdout)
    r = expect_repaired(res, op="EPOLL_CTL_ADD", use="epoll_ctl", reporter="other")
    check(r["owner_pid"] not in (r["modifier_pid"], r["other_pid"]), "two children, not the creator")


@case("repair/parent-changes-under-waiting-child")
def _():
    prog = repair_prog()
    check("child: 1 events, p=0 q=1" in bare([prog, "under-waiter"]).stdout, "bare, the child wakes for q")
    res = repaired([prog, "under-waiter"])
    check("child: 0 events" in res.stdout, "repaired, the child's list is its own: %s" % res.stdout)
    r = expect_repaired(res, op="EPOLL_CTL_ADD", use="blocked-in-wait", reporter="modifier")
    check(r["modifier_pid"] == r["owner_pid"], "the parent made the change, and the copy")


@case("repair/family-and-aliases-reported-repaired")
def _():
    expect_repaired(repaired([build("family.c", libs=["-lutil"]), "forkpty"]), op="EPOLL_CTL_DEL", reporter="other")
    for mode in ("dup", "dup2", "dup3", "fcntl", "fcntl-cloexec", "keepalias"):
        res = repaired([scen("aliases.c"), mode])
        expect_repaired(res, op="EPOLL_CTL_DEL", use="epoll_wait", reporter="other")


def entry_lines(out, who):
    """{(tfd, data): (events, ino)} of the lines `WHO entry ...`."""
    got = {}
    for l in out.splitlines():
        m = re.match(r"^%s entry tfd=(\d+) events=([0-9a-f]+) data=([0-9a-f]+) ino=([0-9a-f]+)$" % re.escape(who), l)
        if m:
            got[(int(m.group(1)), m.group(3))] = (int(m.group(2), 16), m.group(4))
    return got


@case("repair/threads-make-one-copy-with-every-add")
def _():
    res = repaired([repair_prog(), "threads"])
    check("thread ADD failed" not in res.stdout, res.stdout)
    child, parent = entry_lines(res.stdout, "child"), entry_lines(res.stdout, "parent")
    check(len(parent) == 1, "the parent's list is as it made it: %r" % parent)
    check(len(child) == 9 and set(parent) <= set(child), "the child's copy has its entry and all 8 ADDs: %r" % child)
    expect_silent(res, "the parent never uses the list again")


@case("repair/flags-survive-the-copy")
def _():
    res = repaired([repair_prog(), "flags"])
    out = res.stdout
    before, after = entry_lines(out, "parent-before"), entry_lines(out, "parent-after")
    cbefore, cafter = entry_lines(out, "child-before"), entry_lines(out, "child-after")
    check(len(before) == 8 and before == after == cbefore, "the parent's list is untouched:\n" + out)
    added = set(cafter) - set(before)
    check(len(added) == 1 and list(added)[0][1] == "7777", "the child's change is in its copy: %r" % added)
    idle = [k for k in before if k[1] == "5555"][0]
    for k, (ev, ino) in before.items():
        cev, cino = cafter[k]
        check(cino == ino, "the same file at %r" % (k,))
        if k == idle:   # disarmed, its file ready for nothing at the copy: ERR|HUP armed (README limits)
            check(ev == 0x40000000 and cev == 0x40000018, "idle disarmed ONESHOT: %x -> %x" % (ev, cev))
        else:
            check(cev == ev, "entry %r: events %x -> %x" % (k, ev, cev))
    kinds = {d: ev for (t, d), (ev, ino) in before.items()}
    check(kinds["4444"] == 0xc0000000, "a disarmed ONESHOT|ET entry, copied disarmed: %x" % kinds["4444"])
    check(kinds["6666"] & 0x10000000 and kinds["2222"] & 0x80000000 and kinds["3333"] & 0x40000019 == 0x40000019
          and kinds["8888"] & 0x2000, "EXCLUSIVE, ET, armed ONESHOT and RDHUP entries: %r" % kinds)
    check("child: disarmed entries that reported: 0" in out, "the disarmed entries stay silent:\n" + out)
    r = expect_repaired(res, op="EPOLL_CTL_ADD", reporter="other")
    check(copy_line(r)[2] == 8 and "1 disarmed EPOLLONESHOT entry" in r["repair"],
          "8 entries copied, one idle disarmed one said: %r" % r["repair"])


@case("repair/a-note-is-its-own-process")
def _():
    """A copy whose first change failed keeps its note for the next change; a
    child forked meanwhile inherits the note's memory (thread-local storage),
    but a change it makes to its own, unshared copy is nobody's conflict."""
    res = repaired([repair_prog(), "note-fork"])
    check("holder: 0 events" in res.stdout, res.stdout)
    expect_silent(res, "the child's DEL touched no list anyone else holds")


@case("repair/allowed-shared-stays-shared")
def _():
    res = repaired([repair_prog(), "allowed"])
    check("parent: 0 events" in res.stdout, "shared on purpose: the child's DEL reaches the parent's list")
    expect_silent(res, "EPOLLFORK_ALLOW_SHARED")


@case("repair/fd-limit-not-repaired-says-why")
def _():
    res = repaired([repair_prog(), "fdlimit"])
    check("parent: 0 events" in res.stdout, "no copy: the DEL went through unchanged: %s" % res.stdout)
    r = expect_one(res, op="EPOLL_CTL_DEL", reporter="other")
    check(r["repaired"] is False and re.match(r"not repaired: cannot read /proc/self/fdinfo/\d+ \(EMFILE\); "
                                              r"the change went through to the shared list$", r["repair"]),
          "says why: %r" % r["repair"])


# ------------------------------------------------------------------ libraries

def libprog(lib):
    if lib == "uv":
        cf = os.popen("pkg-config --cflags libuv").read().split()
        lf = os.popen("pkg-config --libs libuv").read().split()
        return build("lib_uv.c", flags=cf, libs=lf)
    if lib == "event":
        cf = os.popen("pkg-config --cflags libevent").read().split()
        lf = os.popen("pkg-config --libs libevent").read().split()
        return build("lib_event.c", flags=cf, libs=lf)
    return build("lib_ev.c", libs=["-lev"])


def entries_line(out):
    m = re.search(r"^parent entries before=(\d+) after=(\d+)$", out, re.M)
    check(m, "no entries line in:\n" + out)
    return int(m.group(1)), int(m.group(2))


def read_of(out):
    m = re.search(r"^parent read=(\d+)$", out, re.M)
    check(m, "no read line in:\n" + out)
    return int(m.group(1))


# (library, mode, op, parent read bare, repaired): the parent reads its own byte
# again (2: and the child's, in the same pipe); its list stays as it was.
for _lib, _mode, _op, _rb, _rr in (("uv", "start", "EPOLL_CTL_ADD", 1, 1), ("uv", "readstop", "EPOLL_CTL_DEL", 0, 2),
                                   ("uv", "pollstop", "EPOLL_CTL_DEL", 1, 1),
                                   ("event", "add", "EPOLL_CTL_ADD", 1, 1), ("event", "del", "EPOLL_CTL_DEL", 0, 1),
                                   ("event", "delidle", "EPOLL_CTL_DEL", 0, 1), ("event", "cl-add", "EPOLL_CTL_ADD", 1, 1),
                                   ("event", "cl-del", "EPOLL_CTL_DEL", 0, 1), ("event", "cl-delreadd", "EPOLL_CTL_MOD", 1, 1),
                                   ("ev", "start", "EPOLL_CTL_ADD", 1, 1), ("ev", "stop", "EPOLL_CTL_DEL", 0, 2)):
    def _t(lib=_lib, mode=_mode, op=_op, rb=_rb, rr=_rr):
        prog = libprog(lib)
        b = bare([prog, mode], env=LIB_ENV)
        check(read_of(b.stdout) == rb, "bare read: %s" % b.stdout)
        eb = entries_line(b.stdout)
        if op != "EPOLL_CTL_MOD":   # a MOD to the same events changes no count
            check(eb[0] != eb[1], "bare, the child changed the parent's list: %r" % (eb,))
        res = repaired([prog, mode], env=LIB_ENV)
        er = entries_line(res.stdout)
        check(er[0] == er[1], "repaired, the parent's list is untouched: %r" % (er,))
        check(read_of(res.stdout) == rr, "repaired read: %s" % res.stdout)
        r = expect_repaired(res, op=op, use="epoll_wait", reporter="other")
        check(copy_line(r)[0] == r["modifier_pid"], "the child got the copy")
    case("repair/lib-%s-no-fork-handling-%s" % (_lib, _mode))(_t)


for _mode, _delta in (("close", -1), ("addreader", 1)):
    def _t(mode=_mode, delta=_delta):
        cmd = script("py_asyncio_repair.py") + [mode]
        b = bare(cmd, env=LIB_ENV)
        eb = entries_line(b.stdout)
        check(eb[1] - eb[0] == delta, "bare, the child changed the parent's selector: %s" % b.stdout)
        if mode == "close":
            check("woken by the self-pipe: no" in b.stdout, "bare, the self-pipe no longer wakes it")
        res = repaired(cmd, env=LIB_ENV)
        er = entries_line(res.stdout)
        check(er[0] == er[1] and "woken by the self-pipe: yes" in res.stdout,
              "repaired, its selector is its own and wakes: %s" % res.stdout)
        expect_repaired(res, op="EPOLL_CTL_DEL" if mode == "close" else "EPOLL_CTL_ADD", reporter="other")
    case("repair/asyncio-child-%s" % _mode)(_t)


# ------------------------------------------------------------------ ghosts

@case("repair/ghost-child-copy-no-event-for-closed-fd")
def _():
    prog = scen("stale.c")
    check("ghost event for closed fd" in bare([prog, "child-copy"]).stdout, "bare, the ghost is real")
    res = repaired([prog, "child-copy"])
    check("ghost event" not in res.stdout, "repaired, no event for the closed number: %s" % res.stdout)
    check("DEL after close: -1 errno=9" in res.stdout, "a DEL of a closed fd is still EBADF")
    r = expect_repaired(res, kind="stale-registration")
    check(r["holder_pid"] not in (0, -1, r["pid"]), "the child still named as the holder: %r" % r["holder_pid"])
    check(re.match(r"process %d was given a private copy of epoll fd %d with 0 entries, without the entry of "
                   r"the closed fd %d; the other holders keep the original$" % (r["pid"], r["epfd"], r["fd"]),
                   r["repair"]), "repair line: %r" % r["repair"])


for _mode in ("dup-copy", "inherited"):
    def _t(mode=_mode):
        prog = scen("stale.c")
        res = repaired([prog, mode])
        check("ghost event" not in res.stdout, res.stdout)
        r = expect_repaired(res, kind="stale-registration")
        check(re.match(r"epoll fd %d of process %d was rebuilt without the entry of the closed fd %d"
                       % (r["epfd"], r["pid"], r["fd"]), r["repair"]), "nobody else holds it: %r" % r["repair"])
    case("repair/ghost-%s-rebuilt" % _mode)(_t)


@case("repair/ghost-libev-stop-and-close")
def _():
    expect_repaired(repaired([build("lib_ev_stale.c", libs=["-lev"])]), kind="stale-registration")


for _mode in ("dup2back", "dup2back-shared"):
    def _t(mode=_mode):
        prog = repair_prog()
        check("ADD after dup2 back: -1 errno=17" in bare([prog, mode]).stdout, "bare: EEXIST")
        res = repaired([prog, mode])
        check("ADD after dup2 back: 0 errno=0" in res.stdout, "repaired, the ADD succeeds: %s" % res.stdout)
        check("parent: 1 events, p=1" in res.stdout, "and delivers: %s" % res.stdout)
        expect_repaired(res, kind="stale-registration")
    case("repair/ghost-%s-add-succeeds" % _mode)(_t)


@case("repair/ghost-reused-number-gets-no-old-events")
def _():
    prog = repair_prog()
    check("events for the old socket 1" in bare([prog, "reuse"]).stdout, "bare, the old socket's event arrives")
    res = repaired([prog, "reuse"])
    check("events for the old socket 0" in res.stdout, "repaired: %s" % res.stdout)
    expect_repaired(res, kind="stale-registration")


# ------------------------------------------------------------------ exec leaks

for _how, _seen in (("exec", "exec"), ("spawn", "start-up"), ("system", "start-up")):
    def _t(how=_how, seen=_seen):
        prog = repair_prog()
        check("holds 1 epoll fds" in bare([prog, how]).stdout, "bare, the exec'd program holds it")
        res = repaired([prog, how])
        check("holds 0 epoll fds" in res.stdout, "repaired, it does not: %s" % res.stdout)
        ls = res.kinds("epoll-fd-exec-leak")
        check(len(ls) == 1 and ls[0]["exec"] == seen and ls[0]["repaired"] is True, res.describe())
        want = "FD_CLOEXEC was set on epoll fd" if seen == "exec" else "closed at start-up, before main()"
        check(want in ls[0]["repair"], "repair line: %r" % ls[0]["repair"])
    case("repair/exec-leak-%s" % _how)(_t)


@case("repair/exec-leak-scenarios-reported-repaired")
def _():
    for mode in ("execve", "execvp", "execl", "dup", "posix_spawn", "system"):
        res = repaired([scen("execleak.c"), mode])
        ls = res.kinds("epoll-fd-exec-leak")
        check(len(ls) == 1 and ls[0]["repaired"] is True, "%s: %s" % (mode, res.describe()))


# ------------------------------------------------------------ silent stays silent

SILENT = [("ctl_child.c", m) for m in ("closeonly", "newepoll", "dup2private", "closerange", "closefrom",
                                       "closeall", "parentonly", "childonly")] + \
         [("handoff.c", m) for m in ("exit", "pipe", "daemon")] + \
         [("stale.c", m) for m in ("del-first", "no-copy", "fresh-after-fork", "dup-both-closed",
                                   "instance-closed", "child-closes-all")] + \
         [("execleak.c", m) for m in ("cloexec", "setfd", "dup3-cloexec", "closed", "fork-only")] + \
         [("aliases.c", "allclosed")]


@case("repair/silent-scenarios-stay-silent-and-working")
def _():
    for src, mode in SILENT:
        res = run([scen(src), mode], env=REPAIR)
        check(res.rc == 0, "%s %s: %s" % (src, mode, res.describe()))
        expect_silent(res, "%s %s under repair mode" % (src, mode))


@case("repair/silent-libraries-with-fork-handling")
def _():
    for lib, mode, read in (("uv", "fork-start", 1), ("uv", "fork-readstop", 2), ("uv", "fork-pollstop", 1),
                            ("event", "reinit-add", 1), ("event", "reinit-del", 1), ("event", "reinit-cl-del", 1),
                            ("ev", "fork-start", 1), ("ev", "fork-stop", 2), ("ev", "forkcheck-stop", 2)):
        res = run([libprog(lib), mode], env=dict(REPAIR, **LIB_ENV))
        check(res.rc == 0 and read_of(res.stdout) == read, "%s %s: %s" % (lib, mode, res.describe()))
        expect_silent(res, "%s %s" % (lib, mode))
    for mode in ("exit", "run", "newloop"):
        res = run(script("py_asyncio_fork.py") + [mode], env=dict(REPAIR, **LIB_ENV))
        check(res.rc == 0 and "parent woke=1" in res.stdout, res.describe())
        expect_silent(res, "asyncio " + mode)


# ------------------------------------------------------------ real programs
# The cases of test_real.py again, with EPF_REAL_REPAIR=1 (tests/real/realrun.py
# adds EPOLLFORK_REPAIR=1 to the environment of every program it starts): the
# same silence, the same answers.  `EPF_REAL_REPAIR=1 make test-real` runs them
# all that way too.  The canary (the sink's positive control) then checks that
# its worker kept its pipe and that its one report says repaired.

def _under_repair(fn):
    def run_it():
        old = os.environ.get("EPF_REAL_REPAIR")
        os.environ["EPF_REAL_REPAIR"] = "1"
        try:
            fn()
        finally:
            if old is None:
                os.environ.pop("EPF_REAL_REPAIR", None)
            else:
                os.environ["EPF_REAL_REPAIR"] = old
    return run_it


_real = [(n, f) for n, f in harness.CASES if n.startswith("real/")]
for _name, _fn in _real:
    case("repair/real-" + _name[len("real/"):])(_under_repair(_fn))
if not _real:
    @case("repair/real-programs")
    def _():
        raise Fail("no real/ case was registered before test_repair.py (tests/run.py loads test_real.py first)")
