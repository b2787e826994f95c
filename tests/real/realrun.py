"""realrun.py - run a real Debian program under the shim, drive it, stop it,
and read every report it wrote, wherever it had to write it.

A Box is one case's world: a temporary directory (mode 0755, so that workers
running as nobody can reach it) holding the program's own config, `var/`
(mode 1777: pid files and logs written after the program dropped privileges)
and `eflog/` (mode 1777), where EPOLLFORK_LOG=eflog/log.%p gives every process
of the tree its own report file, which a worker running as nobody can create.
A process that still cannot open its file reports on its stderr copy, so the
stdout/stderr of everything the Box starts is captured to files and scanned
too, as are the program's own logs that the case names (nginx's error_log, for
one, is where a worker's fd 2 points).

Every wait has a deadline.  Every process the Box starts carries a tag in its
environment (EPF_REAL_TAG) and its own process group; at the end the Box stops
the program by its own pid, and then SIGKILLs whatever is left: the process
groups it started, every process whose environment carries the tag, and every
descendant of those (nginx rewrites its environment for its process title).
Nothing listens beyond 127.0.0.1: ports are picked free on 127.0.0.1, and
each case's config binds that address only.
"""
import atexit
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import types
import uuid

import harness
from harness import Fail, check

INSTALL = os.path.join(harness.ROOT, "scripts", "install-deps.sh")
KEEP = os.environ.get("EPF_REAL_KEEP") == "1"      # keep the temp dirs to look at
# EPF_REAL_REPAIR=1: every program runs in repair mode (EPOLLFORK_REPAIR=1), read
# when a program starts (tests/test_repair.py sets it around the real cases).


def repair_mode():
    return os.environ.get("EPF_REAL_REPAIR") == "1"

# Variables that would change what the programs or their libraries do.
SCRUB = ("LD_PRELOAD", "PYTHONPATH", "PYTHONHOME", "PYTHONASYNCIODEBUG", "NODE_OPTIONS",
         "EVENT_NOEPOLL", "EVENT_NOSELECT", "EVENT_NOPOLL", "LIBEV_FLAGS", "GEVENT_LOOP",
         "UV_THREADPOOL_SIZE", "TMUX", "TMUX_TMPDIR")

_installed = set()


def need(*pkgs):
    """Install the Debian packages a case needs (idempotent, one dpkg-query each)."""
    todo = [p for p in pkgs if p not in _installed]
    if not todo:
        return
    try:
        r = subprocess.run(["sh", INSTALL] + todo, capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        raise Fail("installing %s took too long" % " ".join(todo))
    if r.returncode != 0:
        raise Fail("install-deps %s failed:\n%s" % (" ".join(todo), r.stderr[-2000:]))
    _installed.update(todo)


_given = set()


def free_port():
    """A TCP port free on 127.0.0.1 now (the kernel's pick), never one this
    run handed out before (two picks in a row can otherwise be equal)."""
    for _ in range(50):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _given:
            _given.add(port)
            return port
    raise Fail("no free port on 127.0.0.1")


def as_root():
    return os.geteuid() == 0


def unprivileged():
    """(user, group) the servers drop to when we are root, else None."""
    if not as_root():
        return None
    pw = pwd.getpwnam("nobody")
    import grp
    return "nobody", grp.getgrgid(pw.pw_gid).gr_name


# ------------------------------------------------------------ /proc helpers

def _stat(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
    except OSError:
        return None
    rest = s[s.rindex(")") + 2:].split()
    return {"state": rest[0], "ppid": int(rest[1]), "pgrp": int(rest[2]), "sid": int(rest[3])}


def alive(pid):
    st = _stat(pid)
    return st is not None and st["state"] not in ("Z", "X")


def all_pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pids, zombies=False):
    """pids and all their descendants (by ppid), alive now (or not yet reaped)."""
    table = {}
    for p in all_pids():
        st = _stat(p)
        if st:
            table[p] = st
    out = set(p for p in pids if p in table)
    grew = True
    while grew:
        grew = False
        for p, st in table.items():
            if p not in out and st["ppid"] in out:
                out.add(p)
                grew = True
    return sorted(p for p in out if zombies or table[p]["state"] not in ("Z", "X"))


def children(pid, zombies=False):
    return [p for p in descendants([pid], zombies) if p != pid and (_stat(p) or {}).get("ppid") == pid]


def tagged(tag):
    needle = ("EPF_REAL_TAG=" + tag).encode()
    out = []
    for p in all_pids():
        try:
            with open("/proc/%d/environ" % p, "rb") as f:
                if needle in f.read():
                    out.append(p)
        except OSError:
            pass
    return out


def uid_of(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])      # effective uid
    except OSError:
        pass
    return None


def has_shim(pid):
    try:
        with open("/proc/%d/maps" % pid) as f:
            return "libepollfork.so" in f.read()
    except OSError:
        return False


def epoll_fds(pid):
    """How many epoll instances pid holds (fds whose link is anon_inode:[eventpoll])."""
    n = 0
    d = "/proc/%d/fd" % pid
    try:
        for fd in os.listdir(d):
            try:
                if os.readlink(os.path.join(d, fd)) == "anon_inode:[eventpoll]":
                    n += 1
            except OSError:
                pass
    except OSError:
        pass
    return n


def comm(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def wait_for(pred, timeout, what, step=0.05):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(step)
    if not pred():
        raise Fail("timed out after %.0fs waiting for %s" % (timeout, what))


# ---------------------------------------------------------------- the box

class Box:
    def __init__(self, name):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="epf-real-%s-" % name)
        os.chmod(self.dir, 0o755)
        self.eflog = self.mkdir("eflog", 0o1777)
        self.var = self.mkdir("var", 0o1777)
        self.tag = uuid.uuid4().hex
        self.procs = []          # Popen objects, each its own process group
        self.pids = set()        # every pid we learnt (pid files, workers)
        self.logs = []           # program logs that may hold reports (fd 2 redirected there)
        self.captures = []       # our stdout/stderr capture files
        self.drop = unprivileged()

    # -- files
    def path(self, *rel):
        return os.path.join(self.dir, *rel)

    def mkdir(self, rel, mode=0o755):
        p = self.path(rel)
        os.makedirs(p, exist_ok=True)
        os.chmod(p, mode)
        return p

    def write(self, rel, text, mode=0o644):
        p = self.path(rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "w") as f:
            f.write(text)
        os.chmod(p, mode)
        return p

    # -- processes
    def env(self, shim=True, extra=None):
        e = {k: v for k, v in os.environ.items() if not k.startswith("EPOLLFORK_") and k not in SCRUB}
        e["EPF_REAL_TAG"] = self.tag
        if shim:
            e["LD_PRELOAD"] = harness.public_copy(harness.LIB)  # readable as nobody
            e["EPOLLFORK_FORMAT"] = "json"
            e["EPOLLFORK_LOG"] = os.path.join(self.eflog, "log.%p")
            if repair_mode():
                e["EPOLLFORK_REPAIR"] = "1"
        if extra:
            for k, v in extra.items():
                if v is None:
                    e.pop(k, None)
                else:
                    e[k] = v
        return e

    def _capture(self, label):
        n = len(self.captures) // 2
        out = self.path("%s.%d.out" % (label, n))
        err = self.path("%s.%d.err" % (label, n))
        self.captures += [out, err]
        return open(out, "wb"), open(err, "wb")

    def start(self, cmd, label=None, shim=True, env=None, cwd=None):
        """Start cmd in its own process group; returns the Popen."""
        out, err = self._capture(label or os.path.basename(cmd[0]))
        try:
            p = subprocess.Popen(cmd, env=self.env(shim, env), stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=err, cwd=cwd or self.dir, start_new_session=True)
        except OSError as e:
            raise Fail("cannot start %s: %s" % (cmd, e))
        finally:
            out.close()
            err.close()
        self.procs.append(p)
        self.pids.add(p.pid)
        return p

    def run(self, cmd, timeout=30, label=None, shim=True, env=None, cwd=None):
        """Run cmd to completion (a daemon's launcher, a client); returns the Popen."""
        p = self.start(cmd, label, shim, env, cwd)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Fail("%s did not finish in %ss\n%s" % (cmd, timeout, self.outputs()))
        return p

    def client(self, cmd, timeout=20):
        """A client command without the shim; returns its stdout (text)."""
        try:
            r = subprocess.run(cmd, env=self.env(shim=False), capture_output=True, text=True,
                               timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise Fail("client %s did not finish in %ss" % (cmd, timeout))
        if r.returncode != 0:
            raise Fail("client %s failed (rc %d): %s %s" % (cmd, r.returncode, r.stdout[-500:], r.stderr[-1000:]))
        return r.stdout

    def wait_port(self, port, timeout=20, proc=None):
        """Until 127.0.0.1:port accepts a connection; fail early if proc died."""
        def up():
            if proc is not None and proc.poll() is not None:
                raise Fail("%s exited with %s before listening\n%s" % (proc.args, proc.returncode,
                                                                     self.outputs()))
            s = socket.socket()
            s.settimeout(0.5)
            try:
                s.connect(("127.0.0.1", port))
                return True
            except OSError:
                return False
            finally:
                s.close()
        try:
            wait_for(up, timeout, "127.0.0.1:%d" % port)
        except Fail as e:
            raise Fail("%s\n%s" % (e, self.outputs()))

    def read_pid(self, path, timeout=15):
        def ok():
            try:
                with open(path) as f:
                    return f.read().strip().isdigit()
            except OSError:
                return False
        try:
            wait_for(ok, timeout, "pid file " + path)
        except Fail as e:
            raise Fail("%s\n%s" % (e, self.outputs()))
        with open(path) as f:
            pid = int(f.read().strip())
        self.pids.add(pid)
        return pid

    def send(self, pid, sig):
        check(alive(pid), "pid %d (%s) is gone before %s\n%s" % (pid, comm(pid), sig, self.outputs()))
        os.kill(pid, sig)

    def stop(self, pid, sig=signal.SIGTERM, timeout=15):
        """Stop the program by its own pid and wait until it is gone; returns
        its exit status when it is our child (else None)."""
        procs = [p for p in self.procs if p.pid == pid]
        if alive(pid):
            os.kill(pid, sig)
        if procs:
            try:
                return procs[0].wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise Fail("pid %d did not exit within %ss of %s\n%s" % (pid, timeout, sig, self.outputs()))
        try:
            wait_for(lambda: not alive(pid), timeout, "pid %d to exit after %s" % (pid, sig))
        except Fail as e:
            raise Fail("%s\n%s" % (e, self.outputs()))
        return None

    def wait_gone(self, pids, timeout=10):
        wait_for(lambda: not any(alive(p) for p in pids), timeout,
                 "processes %s to exit" % sorted(pids))

    def tree(self):
        """Every live process of this box: tagged, started, learnt, and their descendants."""
        roots = set(tagged(self.tag)) | set(p for p in self.pids if alive(p))
        return descendants(roots)

    def cleanup(self):
        victims = set(self.tree())
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        if not KEEP:
            shutil.rmtree(self.dir, ignore_errors=True)
        return sorted(victims)

    # -- checks on the running program
    def check_shimmed(self, pids, who, want_epoll=True, want_uid=None):
        """Each of pids has the shim mapped (and an epoll fd, and runs as want_uid)."""
        check(pids, "no %s process found: %s" % (who, self.describe_tree()))
        for pid in pids:
            # a process in the middle of an exec (haproxy's master re-execs
            # itself into wait mode once its workers run) has not mapped its
            # libraries yet: give it a moment
            end = time.time() + 5
            while not has_shim(pid) and time.time() < end and alive(pid):
                time.sleep(0.05)
            check(has_shim(pid), "%s %d (%s) has no libepollfork.so mapped" % (who, pid, comm(pid)))
            if want_epoll:      # a freshly forked worker may not have made it yet
                end = time.time() + 10
                while epoll_fds(pid) == 0 and time.time() < end and alive(pid):
                    time.sleep(0.05)
                check(epoll_fds(pid) > 0, "%s %d (%s) holds no epoll instance: the case tests nothing"
                      % (who, pid, comm(pid)))
            if want_uid is not None:    # a freshly forked child drops privileges a moment later
                end = time.time() + 10
                while uid_of(pid) != want_uid and time.time() < end and alive(pid):
                    time.sleep(0.05)
                check(uid_of(pid) == want_uid or not alive(pid),
                      "%s %d runs as uid %s, not %s" % (who, pid, uid_of(pid), want_uid))
        self.pids.update(pids)

    def describe_tree(self):
        return "; ".join("%d uid=%s %s" % (p, uid_of(p), comm(p)) for p in self.tree())

    # -- the verdict
    def outputs(self, limit=2500):
        parts = []
        for f in self.captures + self.logs:
            try:
                with open(f, errors="replace") as fh:
                    text = fh.read()
            except OSError:
                continue
            if text.strip():
                parts.append("--- %s:\n%s" % (os.path.relpath(f, self.dir), text[-limit:]))
        return "\n".join(parts)

    def result(self):
        """A harness.Result of every report of the tree: the per-process files
        (every line must be a report), plus JSON report lines and epollfork
        notices found in captured stdout/stderr and in the program's logs."""
        lines = []
        for name in sorted(os.listdir(self.eflog)):
            with open(os.path.join(self.eflog, name), errors="replace") as f:
                lines += [l.rstrip("\n") for l in f if l.strip()]
        fallback, notes = [], []
        for f in self.captures + self.logs:
            try:
                with open(f, errors="replace") as fh:
                    for l in fh:
                        l = l.rstrip("\n")
                        if l.startswith('{"tool":"epollfork"'):
                            fallback.append(l)
                            try:   # a notice is a JSON record too, in JSON mode
                                obj = json.loads(l)
                            except ValueError:
                                continue
                            if obj.get("kind") == "notice":
                                notes.append(obj.get("message", ""))
                        elif "epollfork:" in l:
                            notes.append(l)
            except OSError:
                pass
        proc = types.SimpleNamespace(returncode=0)
        res = harness.Result(proc, self.outputs(), "\n".join(notes), lines + fallback, self.eflog)
        res.fallback = fallback      # reports that did not reach their file
        res.sink_notes = notes       # e.g. "cannot open log file ... reporting to stderr"
        return res


def expect_silent(box, res, why):
    """No report anywhere, and the log files hold nothing but reports."""
    if res.reports:
        raise Fail("expected no report (%s), got %d:\n%s\n%s" % (
            why, len(res.reports), "\n".join(json.dumps(r)[:1500] for r in res.reports[:4]),
            box.outputs()))
    check(not res.garbage, "non-JSON lines in the report files: %r" % res.garbage[:3])


_live = []      # boxes not cleaned up yet: killed at exit even if the runner is stopped


def _cleanup_all():
    while _live:
        _live.pop().cleanup()


def _on_sigterm(signum, frame):
    raise SystemExit(128 + signum)     # unwinds the with-blocks, then atexit runs


atexit.register(_cleanup_all)
if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
    signal.signal(signal.SIGTERM, _on_sigterm)


class Case:
    """with Case("name") as box: ... - a Box that is always cleaned up, also
    when the runner is stopped with SIGTERM or exits."""
    def __init__(self, name):
        self.box = Box(name)
        _live.append(self.box)

    def __enter__(self):
        return self.box

    def __exit__(self, etype, exc, tb):
        if self.box in _live:
            _live.remove(self.box)
        if etype is not None and issubclass(etype, Exception):
            # say what every process was doing, and what the programs logged
            box = self.box
            state = []
            for pid in box.tree():
                try:
                    with open("/proc/%d/wchan" % pid) as f:
                        wchan = f.read()
                except OSError:
                    wchan = "?"
                state.append("  %d uid=%s wchan=%s epoll=%d %s" % (pid, uid_of(pid), wchan, epoll_fds(pid),
                                                                  comm(pid)[:100]))
            res = box.result()
            detail = "\nprocesses at failure:\n%s\nreports: %s\n%s" % (
                "\n".join(state) or "  (none)", [json.dumps(r)[:400] for r in res.reports[:3]],
                box.outputs(1500))
            box.cleanup()
            if isinstance(exc, Fail):
                raise Fail(str(exc) + detail) from None
            raise Fail("%s: %s%s" % (etype.__name__, exc, detail)) from exc
        self.box.cleanup()
        return False
