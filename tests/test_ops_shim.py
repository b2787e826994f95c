"""test_ops_shim.py - the operations side inside the shim: suppressions, dedup
across a process tree, the TOTALS line, syslog, and the public header's
annotations with and without the shim."""
import json
import os
import re
import socket
import tempfile
import threading

from harness import case, check, build, run, expect_one, expect_silent


def totals(res):
    return res.totals


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def ctl_del(**kw):
    return run([build("ctl_child.c"), "del"], **kw)


@case("ops_shim/suppression-by-function-silences-and-counts")
def _():
    d = tempfile.mkdtemp()
    sup = write(os.path.join(d, "sup"), "# known bug, ticket 42\nshared-epoll-ctl:child_change\n")
    res = ctl_del(env={"EPOLLFORK_SUPPRESSIONS": sup})
    check(not res.kinds(), "suppressed: %s" % res.describe())
    t = [x for x in totals(res) if x["suppressed"]]
    check(len(t) == 1 and t[0]["suppressed"] == 1 and t[0]["reports"] == 0,
          "one process counted it: %r" % totals(res))


@case("ops_shim/suppression-by-module-glob")
def _():
    d = tempfile.mkdtemp()
    sup = write(os.path.join(d, "sup"), "*:*ctl_child*\n")
    res = ctl_del(env={"EPOLLFORK_SUPPRESSIONS": sup})
    check(not res.kinds(), "module glob matched: %s" % res.describe())


@case("ops_shim/suppression-not-matching-does-not-silence")
def _():
    d = tempfile.mkdtemp()
    sup = write(os.path.join(d, "sup"), "shared-epoll-ctl:some_other_function\n"
                                        "stale-registration:child_change\n")
    res = ctl_del(env={"EPOLLFORK_SUPPRESSIONS": sup})
    expect_one(res, op="EPOLL_CTL_DEL")
    t = [x for x in totals(res) if x["reports"]]
    check(len(t) == 1 and t[0]["suppressed"] == 0, "counts: %r" % totals(res))


@case("ops_shim/suppression-file-errors-are-named-and-the-rest-applies")
def _():
    d = tempfile.mkdtemp()
    sup = write(os.path.join(d, "sup"), "no colon here\nbogus-kind:x\nshared-epoll-ctl:child_change\n")
    res = ctl_del(env={"EPOLLFORK_SUPPRESSIONS": sup}, log="stderr", fmt="text")
    lines = [l for l in res.stderr.splitlines() if "EPOLLFORK_SUPPRESSIONS" in l]
    check(len(lines) == 2 and ":1:" in lines[0] and ":2:" in lines[1], "two named errors: %r" % lines)
    check("WARNING" not in res.stderr, "the good rule still applies")
    res = ctl_del(env={"EPOLLFORK_SUPPRESSIONS": "/nonexistent/sup"}, log="stderr", fmt="text")
    check(res.stderr.count("cannot be read") == 1 and "WARNING: shared-epoll-ctl" in res.stderr,
          "unreadable file: one line, then no suppressions\n" + res.stderr)


@case("ops_shim/dedup-identical-reports-across-tree")
def _():
    res = run([build("annotate.c"), "many", "4"])
    reps = res.kinds()
    check(len(reps) == 1, "one printed: %d\n%s" % (len(reps), res.describe()))
    t = [x for x in totals(res) if x["pid"] == reps[0]["pid"]]
    check(t and t[0]["deduped"] == 3 and t[0]["reports"] == 1, "repeats counted: %r" % totals(res))
    res = run([build("annotate.c"), "many", "4"], env={"EPOLLFORK_DEDUP": "0"})
    check(len(res.kinds()) == 4, "EPOLLFORK_DEDUP=0 prints all: %d" % len(res.kinds()))


@case("ops_shim/totals-line-text-format")
def _():
    res = ctl_del(log="stderr", fmt="text")
    lines = [l for l in res.stderr.splitlines() if "TOTALS" in l]
    check(len(lines) == 1 and re.match(r"^==\d+== epollfork: TOTALS reports=1 suppressed=0 deduped=0$", lines[0]),
          "one TOTALS line from the reporting process: %r" % lines)


@case("ops_shim/no-totals-when-nothing-happened")
def _():
    res = run([build("ctl_child.c"), "closeonly"], log="stderr", fmt="text")
    check("TOTALS" not in res.stderr and not res.stderr, "silent: %r" % res.stderr)


def syslog_listener(path, got):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(15)

    def loop():
        try:
            while True:
                got.append(s.recv(65536).decode())
        except Exception:
            pass
    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return s, t


@case("ops_shim/syslog-records-through-a-local-socket")
def _():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "log.sock")
    got = []
    s, t = syslog_listener(path, got)
    res = ctl_del(env={"EPOLLFORK_LOG": "syslog:" + path}, fmt="text", log=None)
    import time
    for _ in range(100):
        if len(got) >= 2:
            break
        time.sleep(0.05)
    s.close()
    check(res.stderr == "", "nothing on stderr: %r" % res.stderr)
    summ = [g for g in got if "SUMMARY: shared-epoll-ctl" in g]
    check(len(summ) == 1, "one SUMMARY record: %r" % got)
    check(re.match(r"^<12>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d epollfork\[\d+\]: SUMMARY: shared-epoll-ctl time=\S+Z pid=\d+ ", summ[0]),
          "RFC 3164 record: %r" % summ[0])
    check("\n" not in summ[0], "one line")
    check(any("TOTALS reports=1" in g for g in got), "TOTALS too: %r" % got)
    # JSON format: the record is the JSON object
    got.clear()
    os.unlink(path)
    s, t = syslog_listener(path, got)
    ctl_del(env={"EPOLLFORK_LOG": "syslog:" + path}, fmt="json", log=None)
    for _ in range(100):
        if got:
            break
        time.sleep(0.05)
    s.close()
    objs = [json.loads(g.split(": ", 1)[1]) for g in got if '"kind":"shared-epoll-ctl"' in g]
    check(len(objs) == 1 and objs[0]["op"] == "EPOLL_CTL_DEL", "JSON record: %r" % got)


@case("ops_shim/syslog-unreachable-falls-back-to-stderr")
def _():
    res = ctl_del(env={"EPOLLFORK_LOG": "syslog:/nonexistent/sock"}, fmt="text", log=None)
    check(res.stderr.count("cannot connect to syslog") == 1, res.stderr)
    check("WARNING: shared-epoll-ctl" in res.stderr, "the report still gets out")


@case("ops_shim/allow-shared-annotation")
def _():
    prog = build("annotate.c")
    res = run([prog, "allow"])
    expect_silent(res, "shared on purpose")
    check("loaded=1 allow=0 reports=0" in res.stdout, res.stdout)
    res = run([prog, "noallow"])
    expect_one(res)
    check("loaded=1 allow=0 reports=1" in res.stdout, "the parent counted its report: " + res.stdout)


@case("ops_shim/annotations-without-the-shim")
def _():
    res = run([build("annotate.c"), "allow"], shim=False)
    check(res.rc == 0 and "loaded=0 allow=0 reports=0" in res.stdout, res.describe())
