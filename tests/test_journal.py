"""test_journal.py - EPOLLFORK_LOG=journal against a real systemd-journald.

Each case that needs a journal starts its own systemd-journald (it runs
without systemd as pid 1) and stops it at the end.  It runs in a private
mount namespace (`unshare -m`) where a fresh temporary directory is
bind-mounted on /run, so its sockets (/run/systemd/journal/socket) and its
journal files (/run/log/journal; Storage=volatile, from a drop-in in
/run/systemd/journald.conf.d) all live in that directory, /var/log/journal is
covered by a tmpfs, and the machine's own journal (if it runs one) is never
touched.  `Audit=` (empty) in the drop-in makes journald leave the kernel's
audit setting alone: without it Debian's journald sends AUDIT_SET at start-up
(seen with strace).  SYSTEMD_LOG_TARGET=console keeps journald's own messages
out of the kernel log.

Outside the namespace the socket is reached by its path in the directory
(EPOLLFORK_LOG=journal:PATH); a program started inside it (nsenter) reaches it
at the default path (EPOLLFORK_LOG=journal).  Entries are read back with
`journalctl -D DIR -o json` (with --all where a field is over 4096 bytes:
journalctl prints such fields as null otherwise).  journald takes datagrams
from its socket in order, so after a program has exited, a marker entry sent
by the test and seen in the journal means that everything the program sent
is there too.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from harness import case, check, build, run, wait_for, LIB, LAUNCHER

JOURNALD = "/lib/systemd/systemd-journald"

NAMESPACE_SCRIPT = r"""
set -e
mount --make-rprivate /
mount --bind "$1" /run
if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi
mkdir -p /run/systemd/journal /run/systemd/journald.conf.d /run/log/journal
cat > /run/systemd/journald.conf.d/epollfork-test.conf <<'EOF'
[Journal]
Storage=volatile
Audit=
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitBurst=0
EOF
exec "$2"
"""


def decode(v):
    """journalctl -o json gives a field that is not printable UTF-8 as an
    array of byte values."""
    if isinstance(v, list) and all(isinstance(b, int) for b in v):
        return bytes(v).decode("utf-8", "replace")
    return v


class Journald:
    """A systemd-journald of the test's own, in a private mount namespace."""

    def __init__(self):
        check(os.access(JOURNALD, os.X_OK), "%s is missing (the systemd package)" % JOURNALD)
        check(shutil.which("unshare") and shutil.which("journalctl"), "unshare or journalctl missing")
        self.dir = tempfile.mkdtemp(prefix="epf-journald-")
        self.run_dir = os.path.join(self.dir, "run")
        os.mkdir(self.run_dir)
        self.socket = os.path.join(self.run_dir, "systemd", "journal", "socket")
        self.journal_dir = os.path.join(self.run_dir, "log", "journal")
        self.proc = None
        self.start()

    def start(self):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("EPOLLFORK_", "NOTIFY_SOCKET", "LD_PRELOAD"))}
        env["SYSTEMD_LOG_TARGET"] = "console"
        if os.path.exists(self.socket):
            os.unlink(self.socket)      # a stopped journald leaves it behind
        self.out = open(os.path.join(self.dir, "journald.out"), "ab")
        self.proc = subprocess.Popen(["unshare", "-m", "sh", "-c", NAMESPACE_SCRIPT, "sh",
                                      self.run_dir, JOURNALD],
                                     env=env, stdin=subprocess.DEVNULL, stdout=self.out,
                                     stderr=self.out, start_new_session=True)
        ok = wait_for(lambda: os.path.exists(self.socket) or self.proc.poll() is not None, 15)
        check(ok and self.proc.poll() is None,
              "journald did not start (rc %s):\n%s" % (self.proc.poll(), self.said()))
        self.sync()

    def said(self):
        with open(os.path.join(self.dir, "journald.out"), errors="replace") as f:
            return f.read()[-3000:]

    @property
    def pid(self):
        return self.proc.pid        # unshare and sh exec: the pid is journald's

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def send(self, fields):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.connect(self.socket)
            s.send("".join("%s=%s\n" % kv for kv in fields.items()).encode())
        finally:
            s.close()

    def entries(self, *matches, show_all=True):
        cmd = ["journalctl", "-D", self.journal_dir, "-o", "json", "--no-pager"]
        if show_all:
            cmd.append("--all")
        r = subprocess.run(cmd + list(matches), capture_output=True, text=True, timeout=60)
        check(r.returncode == 0, "journalctl %s: rc %d %s" % (matches, r.returncode, r.stderr))
        return [{k: decode(v) for k, v in json.loads(l).items()} for l in r.stdout.splitlines()
                if l.startswith("{")]

    def sync(self):
        """Everything sent to the socket before now is in the journal."""
        mark = uuid.uuid4().hex
        self.send({"MESSAGE": "epollfork test marker", "EPF_TEST_MARKER": mark})
        check(wait_for(lambda: self.entries("EPF_TEST_MARKER=" + mark), 15),
              "the marker entry never reached the journal:\n" + self.said())

    def ours(self, *matches, show_all=True):
        self.sync()
        return self.entries("SYSLOG_IDENTIFIER=epollfork", *matches, show_all=show_all)


def inside(j, cmd):
    """cmd run in journald's mount namespace, where its socket is at the
    default path /run/systemd/journal/socket."""
    return ["nsenter", "-t", str(j.pid), "-m", "--"] + cmd


def ctl_del():
    return build("ctl_child.c")


def fields_equal_the_json(e):
    """Every key of the entry's JSON record is a field of the entry with the
    same value (null: no field); the record's kind and tool are there too."""
    rec = json.loads(e["EPOLLFORK_JSON"])
    bad = []
    for k, v in rec.items():
        if k in ("stacks", "stack_notes"):
            continue
        if k == "tool":
            if e.get("SYSLOG_IDENTIFIER") != v:
                bad.append("SYSLOG_IDENTIFIER %r, tool %r" % (e.get("SYSLOG_IDENTIFIER"), v))
            continue
        name = "EPOLLFORK_" + k.upper()
        if v is None:
            if name in e:
                bad.append("%s=%r, JSON null" % (name, e[name]))
        elif e.get(name) != str(v):
            bad.append("%s=%r, JSON %r" % (name, e.get(name), v))
    check(not bad, "the entry and its JSON record disagree:\n  " + "\n  ".join(bad))
    return rec


def stacks_text_matches(e, rec):
    """EPOLLFORK_STACKS is the whole text report of the same record: every
    frame of every JSON stack is one of its lines, and it ends with the
    SUMMARY line."""
    text = e["EPOLLFORK_STACKS"]
    lines = text.split("\n")
    pfx = "==%d== " % rec["pid"]
    check(all(l.startswith(pfx) for l in lines), "a line of EPOLLFORK_STACKS without %r" % pfx)
    check(lines[0] == pfx + "epollfork: " + e["MESSAGE"],
          "MESSAGE %r is not the WARNING line %r" % (e["MESSAGE"], lines[0]))
    check(re.match(r"^==\d+== epollfork: SUMMARY: %s time=%s pid=%d " % (
        rec["kind"], re.escape(rec["time"]), rec["pid"]), lines[-1]),
        "the last line is not the SUMMARY: %r" % lines[-1][:300])
    missing = []
    for role, frames in rec["stacks"].items():
        for f in frames:
            want = "%s in %s (%s+%s)" % (f["pc"], f["function"] or "??", f["module"] or "<unknown module>",
                                         f["offset"])
            if want not in text:
                missing.append("%s: %s" % (role, want[:200]))
    check(not missing, "frames of the JSON record not in EPOLLFORK_STACKS:\n  " + "\n  ".join(missing[:5]))


@case("journal/report-fields-equal-the-json-record")
def _():
    """EPOLLFORK_LOG=journal (the default socket, inside journald's
    namespace): one entry per report, every field a scraper asks for,
    equal to the JSON record it carries; TOTALS as an entry of its own."""
    with Journald() as j:
        for fmt in ("text", "json"):
            res = run(inside(j, [ctl_del(), "del"]), env={"EPOLLFORK_LOG": "journal"}, fmt=fmt, log=None)
            check(res.rc == 0 and res.stderr == "", "nothing on stderr (%s): %s" % (fmt, res.describe()))
            # -o json exactly as a scraper would ask, without --all: every field is there
            got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl", show_all=False)
            check(len(got) == 1, "one report entry (%s), got %d" % (fmt, len(got)))
            e = got[0]
            nulls = [k for k, v in e.items() if v is None]
            check(not nulls, "journalctl -o json left out %s" % nulls)
            rec = fields_equal_the_json(e)
            check(rec["kind"] == "shared-epoll-ctl" and rec["op"] == "EPOLL_CTL_DEL", rec)
            for name in ("EPOLLFORK_KIND", "EPOLLFORK_OP", "EPOLLFORK_EPFD", "EPOLLFORK_FD",
                         "EPOLLFORK_MODIFIER_PID", "EPOLLFORK_OTHER_PID", "EPOLLFORK_OWNER_PID",
                         "EPOLLFORK_SITE", "CODE_FUNC", "EPOLLFORK_JSON", "EPOLLFORK_STACKS",
                         "MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "SYSLOG_PID"):
                check(e.get(name), "%s missing: %r" % (name, sorted(e)))
            check(e["PRIORITY"] == "4" and e["SYSLOG_IDENTIFIER"] == "epollfork", e["PRIORITY"])
            check(e["SYSLOG_PID"] == e["_PID"] == str(rec["pid"]) == str(rec["other_pid"]),
                  "sent by the reporting process: %s %s %s" % (e["SYSLOG_PID"], e["_PID"], rec["pid"]))
            check(e["_TRANSPORT"] == "journal", "native protocol: %s" % e["_TRANSPORT"])
            check(e["CODE_FUNC"] == "child_change" and e["EPOLLFORK_SITE"].startswith("child_change("),
                  "the offending frame: %s %s" % (e["CODE_FUNC"], e["EPOLLFORK_SITE"]))
            check(e["MESSAGE"].startswith("WARNING: shared-epoll-ctl: process %d deleted fd %d"
                                          % (rec["modifier_pid"], rec["fd"])), e["MESSAGE"])
            stacks_text_matches(e, rec)
            tot = j.ours("EPOLLFORK_KIND=totals")
            check(len(tot) == 1 and tot[0]["PRIORITY"] == "6" and tot[0]["EPOLLFORK_REPORTS"] == "1"
                  and tot[0]["EPOLLFORK_PID"] == str(rec["pid"])
                  and tot[0]["MESSAGE"] == "TOTALS reports=1 suppressed=0 deduped=0", "TOTALS: %r" % tot)
            # the next round starts from an empty journal
            j.stop()
            shutil.rmtree(j.run_dir)
            os.mkdir(j.run_dir)
            j.start()


@case("journal/correct-program-sends-nothing")
def _():
    """The negative neighbour: programs the shim stays silent about send no
    entry (not even TOTALS) and write nothing on stderr."""
    with Journald() as j:
        for mode in ("closeonly", "parentonly", "newepoll"):
            res = run([ctl_del(), mode], env={"EPOLLFORK_LOG": "journal:" + j.socket}, log=None)
            check(res.rc == 0 and res.stderr == "", "%s: %s" % (mode, res.describe()))
        got = j.ours()
        check(got == [], "entries from silent programs: %r" % [e.get("MESSAGE") for e in got])


def long_path_copy(binary):
    """binary copied under two 200-character directory names: each frame
    line then carries a ~420-byte module path."""
    d = tempfile.mkdtemp(prefix="epf-long-")
    deep = os.path.join(d, "m" * 200, "n" * 200)
    os.makedirs(deep)
    dest = os.path.join(deep, os.path.basename(binary))
    shutil.copy2(binary, dest)
    return d, dest


def traced(j, cmd, trace_file, **kw):
    return run(["strace", "-f", "-qq", "-e", "trace=memfd_create", "-o", trace_file] + cmd,
               env=dict({"EPOLLFORK_LOG": "journal:" + j.socket}, **kw.pop("env", {})),
               log=None, timeout=120, **kw)


@case("journal/large-report-goes-through-a-memfd-and-arrives-whole")
def _():
    """A report over 200 KiB (five stacks of 64 frames, a 240-character
    function name, a 420-byte module path) is larger than a datagram: it
    goes as a sealed memfd, and journald keeps all of it."""
    check(shutil.which("strace"), "strace is not installed")
    d, prog = long_path_copy(build("big_report.c"))
    try:
        with Journald() as j:
            trace = os.path.join(d, "strace.out")
            res = traced(j, [prog], trace, env={"EPOLLFORK_STACK_DEPTH": "64"})
            check(res.rc == 0 and res.stderr == "" and "parent waited" in res.stdout, res.describe())
            with open(trace) as f:
                memfds = [l for l in f if "memfd_create(" in l and "epollfork-journal" in l]
            check(len(memfds) == 1 and '"epollfork-journal"' in memfds[0] and "MFD_ALLOW_SEALING" in memfds[0],
                  "one memfd for the one large entry: %r" % memfds)
            got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
            check(len(got) == 1, "one entry, got %d" % len(got))
            e = got[0]
            check(len(e["EPOLLFORK_STACKS"]) >= 200 * 1024 and len(e["EPOLLFORK_JSON"]) >= 200 * 1024,
                  "sizes %d %d" % (len(e["EPOLLFORK_STACKS"]), len(e["EPOLLFORK_JSON"])))
            rec = fields_equal_the_json(e)
            for role in ("call", "fork", "create", "add", "use"):
                check(len(rec["stacks"].get(role, [])) == 64,
                      "%s: %d frames" % (role, len(rec["stacks"].get(role, []))))
            stacks_text_matches(e, rec)
            check(len(e["CODE_FUNC"]) == 240 and e["CODE_FUNC"].startswith("deep_call_chain"),
                  "CODE_FUNC %r" % e["CODE_FUNC"][:80])
            check(prog in e["EPOLLFORK_STACKS"], "the long module path")
            print("    (entry: EPOLLFORK_STACKS %d bytes, EPOLLFORK_JSON %d bytes)"
                  % (len(e["EPOLLFORK_STACKS"]), len(e["EPOLLFORK_JSON"])))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@case("journal/small-report-is-one-datagram")
def _():
    """The neighbour: an ordinary report fits a datagram, no memfd."""
    check(shutil.which("strace"), "strace is not installed")
    d = tempfile.mkdtemp(prefix="epf-trace-")
    try:
        with Journald() as j:
            trace = os.path.join(d, "strace.out")
            res = traced(j, [ctl_del(), "del"], trace)
            check(res.rc == 0 and res.stderr == "", res.describe())
            with open(trace) as f:
                memfds = [l for l in f if "memfd_create(" in l and "epollfork-journal" in l]
            check(not memfds, "no memfd: %r" % memfds)
            check(len(j.ours("EPOLLFORK_KIND=shared-epoll-ctl")) == 1, "the entry arrived")
    finally:
        shutil.rmtree(d, ignore_errors=True)


def notices_about_the_journal(text):
    return [l for l in text.splitlines() if "EPOLLFORK_LOG=journal" in l and "reporting to stderr" in l]


@case("journal/no-journald-falls-back-to-stderr-with-one-notice")
def _():
    """No journald: every report and TOTALS reach stderr, in the configured
    format, after exactly one notice that names EPOLLFORK_LOG."""
    prog = build("report_twice.c")
    d = tempfile.mkdtemp(prefix="epf-nojournal-")
    try:
        # the default socket, in a namespace whose /run has no journald at all
        res = run(["unshare", "-m", "sh", "-c",
                   'mount --make-rprivate / && mount -t tmpfs tmpfs /run && exec "$0"', prog],
                  env={"EPOLLFORK_LOG": "journal"}, fmt="text", log=None)
        check(res.rc == 0 and "second done" in res.stdout, res.describe())
        notes = notices_about_the_journal(res.stderr)
        check(len(notes) == 1 and "/run/systemd/journal/socket" in notes[0], "one notice: %r" % notes)
        lines = res.stderr.splitlines()
        check(lines[0] == notes[0], "the notice comes first: %r" % lines[:2])
        check(len([l for l in lines if "WARNING: shared-epoll-ctl" in l]) == 2, res.stderr[-3000:])
        check(len([l for l in lines if " TOTALS reports=2 " in l]) == 1, res.stderr[-3000:])
        # a socket path with nothing behind it; JSON format
        res = run([prog], env={"EPOLLFORK_LOG": "journal:" + os.path.join(d, "socket")}, fmt="json",
                  log=None)
        objs = [json.loads(l) for l in res.stderr.splitlines()]
        kinds = [o["kind"] for o in objs]
        check(kinds == ["notice", "shared-epoll-ctl", "shared-epoll-ctl", "totals"], kinds)
        check("EPOLLFORK_LOG=journal:" in objs[0]["message"] and "No such file" in objs[0]["message"],
              objs[0])
    finally:
        shutil.rmtree(d, ignore_errors=True)


@case("journal/full-journal-falls-back-without-blocking")
def _():
    """journald stopped (SIGSTOP) with its socket's queue full: the report
    goes to stderr at once, with one notice, and the program never waits."""
    with Journald() as j:
        os.kill(j.pid, signal.SIGSTOP)
        try:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            s.connect(j.socket)
            s.setblocking(False)
            queued = 0
            try:
                while queued < 100000:
                    s.send(b"MESSAGE=filler\nEPF_FILLER=1\n")
                    queued += 1
            except BlockingIOError:
                pass
            s.close()
            check(queued < 100000, "the queue never filled")
            t0 = time.time()
            res = run([ctl_del(), "del"], env={"EPOLLFORK_LOG": "journal:" + j.socket}, fmt="text",
                      log=None, timeout=30)
            took = time.time() - t0
        finally:
            os.kill(j.pid, signal.SIGCONT)
        check(res.rc == 0 and took < 10, "ran to its end at once (%.1fs): %s" % (took, res.describe()))
        notes = notices_about_the_journal(res.stderr)
        check(len(notes) == 1 and "not keeping up" in notes[0], "one notice: %r\n%s" % (notes, res.stderr[-2000:]))
        check("WARNING: shared-epoll-ctl" in res.stderr and "TOTALS reports=1" in res.stderr, res.stderr[-2000:])
        check(j.ours() == [], "nothing of ours reached the journal as well")
        print("    (queue full after %d datagrams; the program took %.2fs)" % (queued, took))


def start_twice(j, prog):
    p = subprocess.Popen([prog], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict({k: v for k, v in os.environ.items() if not k.startswith("EPOLLFORK_")},
                                  LD_PRELOAD=LIB, EPOLLFORK_LOG="journal:" + j.socket),
                         start_new_session=True)
    check(p.stdout.readline() == b"first done\n", "report_twice did not start")
    return p


def finish_twice(p):
    try:
        out, err = p.communicate(b"\n", timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        out, err = p.communicate()
    return p.returncode, out.decode(), err.decode()


@case("journal/journald-restarted-is-reconnected")
def _():
    """journald restarts between two reports of one process: the second goes
    to the new journald (one reconnection), nothing to stderr."""
    prog = build("report_twice.c")
    with Journald() as j:
        p = start_twice(j, prog)
        try:
            first = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
            check(len(first) == 1 and first[0]["CODE_FUNC"] == "first_change", "first: %r" % first)
            j.stop()
            j.start()
        finally:
            rc, out, err = finish_twice(p)
        check(rc == 0 and err == "", "rc %s, stderr %r" % (rc, err))
        got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
        check([e["CODE_FUNC"] for e in got] == ["first_change", "second_change"],
              "both, in order: %r" % [e.get("CODE_FUNC") for e in got])
        check(got[0]["_BOOT_ID"] == got[1]["_BOOT_ID"] and got[0]["__CURSOR"] != got[1]["__CURSOR"], "two entries")


@case("journal/journald-gone-falls-back-with-one-notice")
def _():
    """The neighbour: journald stops and does not come back: the second
    report goes to stderr after one notice; the first stays in the journal."""
    prog = build("report_twice.c")
    with Journald() as j:
        p = start_twice(j, prog)
        try:
            check(len(j.ours("EPOLLFORK_KIND=shared-epoll-ctl")) == 1, "the first report")
            j.stop()
        finally:
            rc, out, err = finish_twice(p)
        check(rc == 0, "rc %s %s" % (rc, err))
        notes = notices_about_the_journal(err)
        check(len(notes) == 1 and "cannot connect to " + j.socket in notes[0], "one notice: %r\n%s" % (notes, err[-2000:]))
        warn = [l for l in err.splitlines() if "WARNING: shared-epoll-ctl" in l]
        check(len(warn) == 1 and "TOTALS reports=2" in err, err[-3000:])
        check("second_change" in err and "first_change" not in err, "only the second report on stderr")


@case("journal/notices-are-entries")
def _():
    """A notice (here the one EPOLLFORK_ON_REPORT=abort writes after the
    report) is an entry of PRIORITY 5 and kind notice."""
    with Journald() as j:
        res = run([ctl_del(), "del"], env={"EPOLLFORK_LOG": "journal:" + j.socket,
                                            "EPOLLFORK_ON_REPORT": "abort"}, log=None)
        check(res.rc == -signal.SIGABRT and res.stderr == "", res.describe())
        notes = j.ours("EPOLLFORK_KIND=notice")
        check(len(notes) == 1, "one notice entry: %r" % notes)
        n = notes[0]
        check(n["PRIORITY"] == "5" and n["MESSAGE"] == "EPOLLFORK_ON_REPORT=abort: aborting after the report above"
              and n["EPOLLFORK_MESSAGE"] == "epollfork: " + n["MESSAGE"] and n["EPOLLFORK_PID"] == n["_PID"], n)
        check(len(j.ours("EPOLLFORK_KIND=shared-epoll-ctl")) == 1, "the report before it")


def dropin_env(*opts):
    p = subprocess.run([LAUNCHER, "--systemd", "epf-journal-test"] + list(opts), capture_output=True,
                       text=True, cwd="/")
    check(p.returncode == 0, "--systemd: %s" % p.stderr)
    env = {}
    for line in p.stdout.splitlines():
        if line.startswith("Environment="):
            k, v = line[len("Environment="):].strip('"').split("=", 1)
            env[k] = v
    return env


@case("journal/the-systemd-drop-in-value-is-accepted")
def _():
    """`epollfork --systemd UNIT` writes EPOLLFORK_LOG=journal: the library
    takes that value (no complaint) and reports to the journal with the
    drop-in's own environment; bad values are refused with the default."""
    with Journald() as j:
        for opts in ([], ["--json"]):
            env = dropin_env(*opts)
            check(env.get("EPOLLFORK_LOG") == "journal" and env.get("LD_PRELOAD"), env)
            res = run(inside(j, [ctl_del(), "del"]), env=env, shim=False, log=None)
            check(res.rc == 0 and res.stderr == "", "%s: %s" % (opts, res.describe()))
        got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
        check(len(got) == 2, "both runs reported to the journal: %d" % len(got))
    for value, ok in (("journal", True), ("journal:/run/x.sock", True), ("journal:", False),
                      ("journal:relative/sock", False), ("journal:/" + "x" * 120, False)):
        res = run(["true"], env={"EPOLLFORK_LOG": value}, log=None)
        said = [l for l in res.stderr.splitlines() if "EPOLLFORK_LOG" in l]
        if ok:
            check(not said, "%r refused: %r" % (value, said))
        else:
            check(len(said) == 1 and "is invalid" in said[0] and "using the default 'stderr'" in said[0]
                  and "'journal:' must be followed by an absolute socket path" in said[0],
                  "%r: %r" % (value, said))


@case("journal/program-takes-the-socket-number")
def _():
    """A program that dup2()s over the number of the shim's journal socket
    gets it, with nothing of ours touching what it put there; the socket
    moves out of its way as log.c's sinks do, and the report still reaches
    the journal with full stacks and no notice (the number is not mistaken
    for libunwind's pipe, which would cut every stack to one frame)."""
    prog = build("take_socket.c")
    with Journald() as j:
        res = run([prog], env={"EPOLLFORK_LOG": "journal:" + j.socket}, log=None)
        check(res.rc == 0 and res.stderr == "", res.describe())
        check("taken: 1\n" in res.stdout and "damaged: 0\n" in res.stdout,
              "the program's fd was touched, or no socket was taken:\n" + res.stdout)
        got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
        check(len(got) == 1, "one entry, got %d" % len(got))
        rec = json.loads(got[0]["EPOLLFORK_JSON"])
        check("main" in [f["function"] for f in rec["stacks"]["call"]] and not rec["stack_notes"].get("call"),
              "full call stack: %r %r" % (rec["stacks"]["call"], rec["stack_notes"]))
        notes = j.ours("EPOLLFORK_KIND=notice")
        check(not notes, "no notice: %r" % [n["MESSAGE"] for n in notes])
    # the neighbour: with a log file there is no socket of ours to take
    res = run([prog])
    check(res.rc == 0 and "taken: 0\n" in res.stdout and len(res.kinds()) == 1, res.describe())


@case("journal/program-takes-every-high-number")
def _():
    """Programs that dup2() over every number from 900 to 1023, or over every
    fd they did not open (keeping what they put there): the same report, with
    the same stacks and notices, as with a log file."""
    prog = build("sink_fds.c")
    with Journald() as j:
        for mode in ("dup2-high", "dup2-foreign-keep"):
            ref = run([prog, mode])
            check(ref.rc == 0 and len(ref.kinds()) == 1, "with a log file: %s" % ref.describe())
            res = run([prog, mode], env={"EPOLLFORK_LOG": "journal:" + j.socket}, log=None)
            check(res.rc == 0 and res.stderr == "", "%s: %s" % (mode, res.describe()))
            if mode == "dup2-foreign-keep":
                check("damaged: 0\n" in res.stdout, "the program's fds were touched:\n" + res.stdout)
                check(int(re.search(r"foreign: (\d+)", res.stdout).group(1)) >
                      int(re.search(r"foreign: (\d+)", ref.stdout).group(1)),
                      "the journal socket was among the numbers taken: %r %r" % (res.stdout, ref.stdout))
            got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
            check(len(got) == 1, "%s: one entry, got %d" % (mode, len(got)))
            rec = json.loads(got[0]["EPOLLFORK_JSON"])
            want = ref.kinds()[0]
            for role in want["stacks"]:
                check([f["function"] for f in rec["stacks"][role]] == [f["function"] for f in want["stacks"][role]],
                      "%s: %s stack differs from the log file's:\n%r\n%r" % (mode, role, rec["stacks"][role],
                                                                            want["stacks"][role]))
            notes = j.ours("EPOLLFORK_KIND=notice")
            check(len(notes) == len(ref.notices), "%s: notices %r, with a file %r"
                  % (mode, [n["MESSAGE"] for n in notes], [n["message"] for n in ref.notices]))
            j.stop()
            shutil.rmtree(j.run_dir)
            os.mkdir(j.run_dir)
            j.start()


def sanitizer_variant(kind):
    """The library built with UBSan, or ASan+UBSan (libasan preloaded first),
    as test_robust.py's sanitizer cases run it."""
    lib = os.path.join(os.path.dirname(LIB), kind, "libepollfork.so")
    root = os.path.dirname(os.path.dirname(LIB))
    r = subprocess.run(["make", "-s", "-C", root, os.path.relpath(lib, root)], capture_output=True, text=True)
    check(r.returncode == 0 and os.path.exists(lib), "make %s failed:\n%s" % (lib, r.stderr))
    if kind == "asan":
        so = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
        check(os.path.isabs(so) and os.path.exists(so), "libasan.so not found: %r" % so)
        return dict(lib=lib, preload_extra=so, env={"ASAN_OPTIONS": "detect_leaks=0"})
    return dict(lib=lib, env={"UBSAN_OPTIONS": "print_stacktrace=1"})


for _kind in ("ubsan", "asan"):
    def _t(kind=_kind):
        """The journal's code paths (a datagram, a memfd, the fallback) under
        the sanitizers: no error, and the entries arrive."""
        v = sanitizer_variant(kind)
        env = v.pop("env")
        d, big = long_path_copy(build("big_report.c"))
        try:
            with Journald() as j:
                for cmd, extra in (([ctl_del(), "del"], {}), ([big], {"EPOLLFORK_STACK_DEPTH": "64"})):
                    res = run(cmd, env=dict(env, EPOLLFORK_LOG="journal:" + j.socket, **extra), log=None,
                              timeout=120, **v)
                    check(res.rc == 0 and res.stderr == "", "%s: %s" % (cmd[0], res.describe()))
                got = j.ours("EPOLLFORK_KIND=shared-epoll-ctl")
                check(len(got) == 2 and len(got[1]["EPOLLFORK_STACKS"]) > 200 * 1024,
                      "two entries, the second large: %r" % [len(e["EPOLLFORK_STACKS"]) for e in got])
            res = run([ctl_del(), "del"], env=dict(env, EPOLLFORK_LOG="journal:" + os.path.join(d, "none")),
                      log=None, fmt="text", **v)
            check(res.rc == 0 and len(notices_about_the_journal(res.stderr)) == 1
                  and "WARNING: shared-epoll-ctl" in res.stderr and "runtime error" not in res.stderr,
                  res.describe())
        finally:
            shutil.rmtree(d, ignore_errors=True)
    case("journal/sanitizers-%s" % _kind)(_t)


@case("journal/epollfork-report-reads-the-journal")
def _():
    """`journalctl -o cat --output-fields=EPOLLFORK_JSON` gives the JSON lines
    back, one per report (notices and TOTALS have no such field), and
    epollfork-report summarizes them as it does a log file."""
    with Journald() as j:
        res = run([build("report_twice.c")], env={"EPOLLFORK_LOG": "journal:" + j.socket}, log=None)
        check(res.rc == 0 and res.stderr == "", res.describe())
        j.sync()
        cmd = ["journalctl", "-D", j.journal_dir, "SYSLOG_IDENTIFIER=epollfork", "-o", "cat",
               "--output-fields=EPOLLFORK_JSON"]
        lines = [l for l in subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines() if l]
        check(len(lines) == 2 and all(json.loads(l)["kind"] == "shared-epoll-ctl" for l in lines), lines)
        rep = subprocess.run([os.path.join(os.path.dirname(LAUNCHER), "epollfork-report"), "--json"],
                             input="\n".join(lines) + "\n", capture_output=True, text=True)
        check(rep.returncode == 0, rep.stderr)
        sites = sorted(g.get("site", "") for g in json.loads(rep.stdout).get("groups", []))
        check([s.split("(")[0] for s in sites] == ["first_change", "second_change"], rep.stdout[:2000])


@case("journal/every-kind-fields-equal-the-json-record")
def _():
    """stale-registration and epoll-fd-exec-leak too: each report's entry has
    its kind's fields, equal to its JSON record, and its offending frame as
    CODE_FUNC; the same programs with a log file give the same records."""
    runs = (("stale-registration", [build("stale.c"), "child-copy"]),
            ("epoll-fd-exec-leak", [build("execleak.c"), "execve"]))
    with Journald() as j:
        for kind, cmd in runs:
            ref = run(cmd)
            want = ref.kinds(kind)
            check(len(want) == 1, "with a log file: %s" % ref.describe())
            res = run(cmd, env={"EPOLLFORK_LOG": "journal:" + j.socket}, log=None)
            check(res.stderr == "", res.describe())
            got = j.ours("EPOLLFORK_KIND=" + kind)
            check(len(got) == 1, "%s: one entry, got %d" % (kind, len(got)))
            rec = fields_equal_the_json(got[0])
            stacks_text_matches(got[0], rec)
            same = lambda r: {k: v for k, v in r.items() if not k.endswith("pid") and k not in (
                "time", "stacks", "target", "program", "fd", "holder_fd", "epfd", "data")}
            check(same(rec) == same(want[0]), "%s: the journal's record %r, the file's %r"
                  % (kind, same(rec), same(want[0])))
            check(got[0]["CODE_FUNC"] == rec["site"].split("(")[0] and got[0]["PRIORITY"] == "4",
                  "%s: CODE_FUNC %r, site %r" % (kind, got[0].get("CODE_FUNC"), rec["site"]))
