"""test_ops.py - the operations side: the log summarizer and the symbolizer on
logs of real runs, `make install`/`uninstall` into a temporary DESTDIR, and the
man pages (render cleanly, list every EPOLLFORK_* variable and JSON field).

The summarizer's input is built from real runs of tests/scenarios/workers.c (N
workers with the same bug) in text and in JSON, then made messy the way real
logs are: two text reports interleaved line by line, the programs' own output,
another tool's ==PID== lines, binary junk, a JSON report cut in half, a text
report cut before its SUMMARY, a syslog line.  Expected numbers come from the
real lines, never from the tool under test.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import case, check, build, run, Fail, ROOT, SCEN

REPORT = os.path.join(ROOT, "scripts", "epollfork-report")
SYMBOLIZE = os.path.join(ROOT, "scripts", "epollfork-symbolize")
MAN1 = os.path.join(ROOT, "man", "epollfork.1")
MAN7 = os.path.join(ROOT, "man", "epollfork.7")
PY = "/usr/bin/python3"
SUMMARY = re.compile(r"^==(\d+)== epollfork: SUMMARY: (\S+) .*site=(\S+)$")
TOTALS = re.compile(r"epollfork: TOTALS reports=(\d+) suppressed=(\d+) deduped=(\d+)")
N = 6


def tool(script, args=(), data=b"", env=None):
    p = subprocess.run([PY, script] + list(args), input=data, capture_output=True, env=env)
    check(p.returncode == 0, "%s %s: rc=%d\n%s" % (os.path.basename(script), " ".join(args),
                                                   p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode(errors="replace")


def text_blocks(lines):
    """Split a text log (one write() per report) into per-report line lists."""
    blocks, cur = [], None
    for l in lines:
        if "epollfork: WARNING:" in l:
            cur = [l]
        elif cur is not None:
            cur.append(l)
            if "epollfork: SUMMARY:" in l:
                blocks.append(cur)
                cur = None
    return blocks


def interleave(a, b):
    out = []
    for i in range(max(len(a), len(b))):
        out += a[i:i + 1] + b[i:i + 1]
    return out


def workers_runs():
    exe = build("workers.c")
    txt = run([exe, str(N)], fmt="text", env={"EPOLLFORK_DEDUP": "0"})
    js = run([exe, str(N)], fmt="json", env={"EPOLLFORK_DEDUP": "0"})
    for r in (txt, js):
        check(r.rc == 0, r.describe())
    return exe, txt, js


@case("ops/report-folds-a-messy-multiprocess-log")
def _():
    exe, txt, js = workers_runs()
    blocks = text_blocks(txt.log_lines)
    check(len(blocks) == N, "text run: %d reports, expected %d\n%s" % (len(blocks), N, txt.describe()))
    reps = js.kinds("shared-epoll-ctl")      # js.reports also holds its TOTALS objects
    check(len(reps) == N, "json run: %d reports\n%s" % (len(reps), js.describe()))
    sums = [SUMMARY.match(b[-1]).groups() for b in blocks]
    site = sums[0][2]
    check(site.startswith("helper_cleanup(workers+0x"), "site %r" % site)
    check(all(s[2] == site and s[1] == "shared-epoll-ctl" for s in sums), "one site: %r" % sums)
    check(all(r["site"] == site for r in reps), "json sites differ from text: %r" % site)
    seed = run([build("seed.c")], fmt="text")
    seed_blocks = text_blocks(seed.log_lines)
    check(len(seed_blocks) == 1, seed.describe())

    # The messy log.  Reports 0 and 1 of the text run are interleaved line by line.
    junk = ["==4242== Memcheck, a memory error detector",
            "==4242==    at 0x4C2E0EF: malloc (vg_replace_malloc.c:299)",
            "\x00\x01\x7f garbage \xff\xfe",
            "worker 99: events=0 {\"not\": \"ours\"}"]
    cut_json = json.dumps(reps[0], separators=(",", ":"))[:300]
    cut_text = [re.sub(r"^==\d+==", "==999999==", l) for l in blocks[2][:4]]
    cut_text.append(cut_text[-1][:24])                       # a frame line cut short
    bad_summary = "==999998== epollfork: SUMMARY: shared-epoll-ctl pid=999998 fd="
    syslog = "Nov 22 04:56:29 host epollfork[777]: SUMMARY: shared-epoll-ctl " \
             "pid=777 modifier_pid=778 op=EPOLL_CTL_DEL site=%s" % site
    syslog_notice = "Nov 22 04:56:30 host epollfork[777]: EPOLLFORK_FORMAT='x' is invalid"
    totals = [l for l in txt.log_lines + js.log_lines if "TOTALS" in l or '"totals"' in l]
    log = (junk[:2] + interleave(blocks[0], blocks[1]) + txt.stdout.splitlines()
           + [l for b in blocks[2:] for l in b] + [cut_json] + js.log_lines + [junk[2]]
           + cut_text + seed_blocks[0] + [bad_summary, syslog, syslog_notice, junk[3]]
           + [l for l in txt.log_lines if "TOTALS" in l])
    data = ("\n".join(log) + "\n").encode("utf-8", "surrogateescape")
    logf = os.path.join(txt.logdir, "mixed.log")
    with open(logf, "wb") as f:
        f.write(data)

    want_pids = {int(s[0]) for s in sums} | {r["pid"] for r in reps} | {777}
    # text SUMMARY lines carry time= too (the syslog line and the cut ones do not)
    text_times = [m.group(1) for b in blocks for l in b if "SUMMARY" in l
                  for m in [re.search(r" time=(\S+)", l)] if m]
    times = sorted([r["time"] for r in reps] + text_times)
    got = json.loads(tool(REPORT, ["--json", logf]))
    rows = {(g["kind"], g["site"]): g for g in got["groups"]}
    check(len(rows) == 2, "two groups (workers, seed): %r" % got["groups"])
    g = rows.get(("shared-epoll-ctl", site))
    check(g, "no row for %s: %r" % (site, got["groups"]))
    check(g["count"] == 2 * N + 1, "count %d != %d" % (g["count"], 2 * N + 1))
    check(g["pids"] == len(want_pids), "distinct pids %d != %d" % (g["pids"], len(want_pids)))
    check(g["program"] == exe, "program %r != %r" % (g["program"], exe))
    check((g["first"], g["last"]) == (times[0], times[-1]), "times %r" % ((g["first"], g["last"]),))
    s = rows.get(("shared-epoll-ctl", SUMMARY.match(seed_blocks[0][-1]).group(3)))
    check(s and s["count"] == 1 and s["pids"] == 1, "seed row %r" % s)
    check(got["reports"] == 2 * N + 2, "reports %r" % got["reports"])
    check(got["damaged"] == 3, "damaged: cut JSON, cut frame, bad SUMMARY; got %r" % got["damaged"])
    check(got["incomplete"] == 1, "incomplete: the cut text report; got %r" % got["incomplete"])
    check(got["notices"] >= 1, "the syslog notice: %r" % got["notices"])
    check(got["other_lines"] >= 4 + N, "other lines %r" % got["other_lines"])
    # TOTALS: every TOTALS line of the log, summed; each worker printed its one report.
    want = [0, 0, 0]
    lines = [l for l in log if "TOTALS" in l or '"totals"' in l]
    for l in lines:
        m = TOTALS.search(l)
        v = m.groups() if m else [json.loads(l)[k] for k in ("reports", "suppressed", "deduped")]
        want = [a + int(b) for a, b in zip(want, v)]
    t = got["totals"]
    check(lines and t["processes"] == len(lines), "TOTALS lines %d, summed %r" % (len(lines), t))
    check([t["reports"], t["suppressed"], t["deduped"]] == want, "totals %r != %r" % (t, want))
    check(t["reports"] >= 2 * N, "TOTALS count the workers' %d reports: %r" % (2 * N, totals))
    # The table says the same, and stdin works.
    table = tool(REPORT, [], data)
    row = [l for l in table.splitlines() if site in l]
    check(row and row[0].split()[:2] == [str(2 * N + 1), str(len(want_pids))], table)
    check(exe in row[0], table)
    check("3 damaged lines" in table and "1 incomplete report" in table, table)
    check("TOTALS from %d processes: reports=%d" % (len(lines), want[0]) in table, table)


@case("ops/report-survives-garbage")
def _():
    import random
    rnd = random.Random(7)
    blob = bytes(rnd.randrange(256) for _ in range(200000))
    blob += b'\n{"tool":"epollfork","kind":"totals","pid":1,"reports":"x"}\n==1== epollfork: TOTALS nope\n'
    blob += b'{"tool":"epollfork","kind":"shared-epoll-ctl","pid":5,"site":"f(a+0x1)","stacks":7}\n'
    blob += b'{"tool":"epollfork","kind":"stale-registration","pid":6,"stacks":{"close":[1,"x"]}}\n'
    blob += b"==7== epollfork: SUMMARY: \n==8== epollfork: SUMMARY: k site=\"unterminated\n"
    got = json.loads(tool(REPORT, ["--json"], blob))
    check(got["damaged"] >= 2, "bad totals lines are counted: %r" % got)
    for args in ([], ["--json"]):
        tool(REPORT, args, blob)
    tool(REPORT, [], b"")


@case("ops/report-dedup-totals")
def _():
    res = run([build("workers.c"), "4"])
    check(res.rc == 0, res.describe())
    logf = os.path.join(res.logdir, "log")
    got = json.loads(tool(REPORT, ["--json", logf]))
    t = got["totals"]
    check(t["processes"] >= 1, "TOTALS lines present: %s" % res.describe())
    check(t["reports"] + t["deduped"] + t["suppressed"] == 4,
          "4 workers' conflicts = printed + deduped: %r\n%s" % (t, res.describe()))
    check(got["reports"] == t["reports"], "rows %r vs TOTALS %r" % (got["reports"], t))


def stripped_seed(tmp, how):
    """seed.c built with -g, debug info moved out (objcopy), binary stripped."""
    d = os.path.join(tmp, how)
    os.makedirs(os.path.join(d, "bin"))
    exe = os.path.join(d, "bin", "seed")
    dbg = os.path.join(d, "debug")
    flags = ["-Wl,--build-id=none"] if how == "debuglink" else ["-Wl,--build-id"]
    subprocess.run(["cc", "-O0", "-g", "-o", exe, os.path.join(SCEN, "seed.c")] + flags, check=True)
    if how == "debuglink":      # DIR/<module's dir>/seed.debug, found through the debuglink
        target = os.path.join(dbg + os.path.dirname(exe), "seed.debug")
    else:                       # DIR/.build-id/xx/yyyy.debug
        bid = re.search(r"Build ID: (\w\w)(\w+)", subprocess.run(
            ["readelf", "-n", exe], capture_output=True, text=True).stdout)
        check(bid, "no build id in %s" % exe)
        target = os.path.join(dbg, ".build-id", bid.group(1), bid.group(2) + ".debug")
    os.makedirs(os.path.dirname(target))
    subprocess.run(["objcopy", "--only-keep-debug", exe, target], check=True)
    subprocess.run(["strip", "--strip-all", exe], check=True)
    if how == "debuglink":
        # objcopy reads the file to compute its CRC; the link stores only the name
        subprocess.run(["objcopy", "--add-gnu-debuglink=" + target, exe], check=True)
    return exe, dbg


def call_line():
    with open(os.path.join(SCEN, "seed.c")) as f:
        for n, l in enumerate(f, 1):
            if "epoll_ctl(ep, EPOLL_CTL_DEL" in l:
                return n
    raise Fail("no DEL call in seed.c")


for _how in ("debuglink", "build-id"):
    def _t(how=_how):
        tmp = tempfile.mkdtemp(prefix="epf-sym-")
        try:
            exe, dbg = stripped_seed(tmp, how)
            line = call_line()
            want = "seed.c:%d" % line
            txt = run([exe], fmt="text")
            js = run([exe], fmt="json")
            raw = ("\n".join(txt.log_lines + js.log_lines) + "\nnot a report (x+0x1)\n").encode()
            first = [l for l in txt.log_lines if "#0" in l][0]
            check(exe in first, "the report names the stripped module: %r" % first)
            out = tool(SYMBOLIZE, ["--debug-dir", dbg], raw)
            check(want not in tool(SYMBOLIZE, [], raw), "found without --debug-dir?")
            outl = out.splitlines()
            check(len(outl) == len(raw.decode().splitlines()), "one line out per line in")
            # text: the offending call's frame ends with " at .../seed.c:LINE"
            frame = [l for l in outl if "#0" in l][0]
            check(frame.endswith(want) and "in child_cleanup (" in frame,
                  "text frame not symbolized: %r (was %r)" % (frame, first))
            # lines that are not frames pass through unchanged
            for a, b in zip(raw.decode().splitlines(), outl):
                if not re.search(r"#\d+ 0x", a) and not a.startswith("{"):
                    check(a == b, "changed: %r -> %r" % (a, b))
            # JSON: file and line keys on the frames of the call stack
            rep = [json.loads(l) for l in outl if l.startswith("{") and '"shared-epoll-ctl"' in l]
            check(len(rep) == 1, "one JSON report: %r" % outl)
            top = rep[0]["stacks"]["call"][0]
            check(top.get("file", "").endswith("seed.c") and top.get("line") == line
                  and top.get("function") == "child_cleanup", "json frame: %r" % top)
            # running it again changes nothing
            check(tool(SYMBOLIZE, ["--debug-dir", dbg], out.encode()) == out, "not idempotent")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    case("ops/symbolize-stripped-%s" % _how)(_t)


@case("ops/install-run-uninstall")
def _():
    seed = build("seed.c")
    dest = tempfile.mkdtemp(prefix="epf-inst-")
    try:
        # -o: install the library the suite runs with; never rebuild it mid-suite
        mk = ["make", "-s", "-C", ROOT, "-o", "build/libepollfork.so", "DESTDIR=" + dest,
              "PREFIX=/usr/local"]
        p = subprocess.run(mk + ["install"], capture_output=True, text=True)
        check(p.returncode == 0, "make install: %s%s" % (p.stdout, p.stderr))
        pre = os.path.join(dest, "usr", "local")
        files = sorted(os.path.relpath(os.path.join(d, f), pre)
                       for d, _, fs in os.walk(dest) for f in fs)
        want = sorted(["lib/epollfork/libepollfork.so", "lib/pkgconfig/epollfork.pc",
                       "bin/epollfork", "bin/epollfork-report", "bin/epollfork-symbolize",
                       "bin/epollfork-ps", "include/epollfork.h", "include/epollfork_version.h",
                       "share/man/man1/epollfork.1", "share/man/man1/epollfork-report.1",
                       "share/man/man1/epollfork-symbolize.1", "share/man/man1/epollfork-ps.1",
                       "share/man/man7/epollfork.7"])
        check(files == want, "installed %r" % files)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("EPOLLFORK_") and k != "LD_PRELOAD"}
        launcher = os.path.join(pre, "bin", "epollfork")
        maps = subprocess.run([launcher, "--", "cat", "/proc/self/maps"], env=env, cwd="/",
                              capture_output=True, text=True)
        check(os.path.join(pre, "lib", "epollfork", "libepollfork.so") in maps.stdout,
              "the installed launcher preloads the installed library: %s" % maps.stderr)
        p = subprocess.run([launcher, "--", seed], env=env, cwd="/", capture_output=True, text=True)
        check(p.returncode == 0, p.stderr)
        check("epollfork: WARNING: shared-epoll-ctl:" in p.stderr, "no report: %s" % p.stderr)
        check(re.search(r"SUMMARY: shared-epoll-ctl .* site=child_cleanup\(seed\+0x", p.stderr),
              p.stderr)
        rep = subprocess.run([os.path.join(pre, "bin", "epollfork-report"), "--json"],
                             input=p.stderr, capture_output=True, text=True, env=env)
        check(rep.returncode == 0 and json.loads(rep.stdout)["reports"] == 1, rep.stdout + rep.stderr)
        man = subprocess.run(["man", "-M", os.path.join(pre, "share", "man"), "epollfork-report"],
                             capture_output=True, text=True, env=dict(env, MANWIDTH="80"))
        check("epollfork-report" in man.stdout and not man.stderr, "man alias: %s" % man.stderr)
        # epollfork-ps is installed as the program itself, and its page is the section of epollfork.1
        ps = subprocess.run([os.path.join(pre, "bin", "epollfork-ps"), "--json", str(os.getpid())],
                            capture_output=True, text=True, env=env)
        check(ps.returncode == 0 and json.loads(ps.stdout.splitlines()[-1])["kind"] == "summary",
              "installed epollfork-ps: rc %d %s" % (ps.returncode, ps.stderr))
        man = subprocess.run(["man", "-M", os.path.join(pre, "share", "man"), "epollfork-ps"],
                             capture_output=True, text=True, env=dict(env, MANWIDTH="80"))
        check("epollfork-ps" in man.stdout and "--watch" in man.stdout.replace("\u2010", "-")
              and not man.stderr, "man epollfork-ps: %s" % man.stderr)
        p = subprocess.run(mk + ["uninstall"], capture_output=True, text=True)
        check(p.returncode == 0, "make uninstall: %s%s" % (p.stdout, p.stderr))
        left = [os.path.join(d, f) for d, _, fs in os.walk(dest) for f in fs]
        check(not left, "left behind: %r" % left)
        check(not os.path.exists(os.path.join(pre, "lib", "epollfork")), "lib/epollfork stays")
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def man_deps():
    subprocess.run(["sh", os.path.join(ROOT, "scripts", "install-deps.sh"), "man-db", "groff-base"],
                   check=True, stdout=subprocess.DEVNULL)


@case("ops/man-pages-render-cleanly")
def _():
    man_deps()
    for page in (MAN1, MAN7):
        p = subprocess.run(["man", "-l", page], capture_output=True, text=True,
                           env=dict(os.environ, MANWIDTH="80"))
        check(p.returncode == 0 and not p.stderr.strip() and "SEE ALSO" in p.stdout,
              "man -l %s: %s" % (page, p.stderr))
        p = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
        check(p.returncode == 0 and not p.stderr.strip(), "groff -ww %s: %s" % (page, p.stderr))


def paragraph(src, name):
    """The text of the .TP entry that starts with `.B name`."""
    m = re.search(r"^\.TP\n\.B %s\n(.*?)(?=^\.TP|^\.PP|^\.SH)" % re.escape(name), src, re.M | re.S)
    return m and m.group(1)


@case("ops/man-pages-document-every-option-and-field")
def _():
    p = subprocess.run(["make", "-s", "-C", ROOT, "-o", "build/libepollfork.so", "options"],
                       capture_output=True, text=True)
    check(p.returncode == 0, "make options is broken: %s" % p.stderr)
    rows = [l.split("\t") for l in p.stdout.splitlines() if l.startswith("EPOLLFORK_")]
    check(len(rows) >= 5, "make options printed %r" % p.stdout)
    with open(MAN1) as f:
        man1 = f.read()
    plain = man1.replace("\\-", "-")
    for name, default, _help in rows:
        para = paragraph(man1, name)
        check(para, "epollfork.1 does not document %s" % name)
        text = para.replace("\\-", "-")
        if default:
            check(re.search(r"(?<![\w.])%s(?![\w])" % re.escape(default), text),
                  "epollfork.1: %s does not give its default %r" % (name, default))
        else:
            check("Default: empty" in text, "epollfork.1: %s: say the default is empty" % name)
    usage = subprocess.run([os.path.join(ROOT, "scripts", "epollfork"), "--help"],
                           capture_output=True, text=True).stdout
    for opt in re.findall(r"^\s+(--[a-z-]+)", usage, re.M):
        check(opt in plain, "epollfork.1 does not document the launcher's %s" % opt)
    # Every JSON key the shim writes, for every kind, is in epollfork.7.
    with open(MAN7) as f:
        man7 = f.read().replace("\\-", "-")
    keys = set()
    runs = [run([build("seed.c")]), run([build("stale.c"), "child-copy"]),
            run([build("execleak.c"), "execve"]), run([build("execleak.c"), "system"]),
            run([build("uring.c", out="uring_raw"), "shared-ring"]),
            run([build("uring.c", out="uring_raw"), "child-del"])]
    for r in runs:
        for obj in r.reports + r.notices:
            keys |= set(obj)
            for frames in obj.get("stacks", {}).values():
                keys |= {k for fr in frames for k in fr}
            keys |= set(obj.get("stacks", {}))
    kinds = {o["kind"] for r in runs for o in r.reports if o["kind"] != "totals"}
    check(kinds == {"shared-epoll-ctl", "stale-registration", "epoll-fd-exec-leak", "shared-io-uring"},
          "kinds %r" % kinds)
    for k in sorted(keys):
        check(re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(k), man7),
              "epollfork.7 does not describe the JSON key %r" % k)
