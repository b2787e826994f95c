"""py_frames_kinds.py MODE - the other two kinds, from Python, for the Python frames of reports.

  stale     the parent registers a pipe in a select.epoll, forks a child that
            keeps a copy of it, closes the pipe without unregister() and
            polls: stale-registration, whose offending stack is the close
  execleak  an epoll made inheritable (os.set_inheritable) and os.execv():
            epoll-fd-exec-leak, whose offending stack is the exec
  MODE-silent  the same, done right: unregister() before the close; an
            epoll left close-on-exec
tests/test_pyframes.py reads the lines marked `# LINE:...`.
"""
import os
import select
import sys


def close_registered(r):
    os.close(r)                                         # LINE:call:stale


def stale(silent):
    ep = select.epoll()                                 # LINE:create:stale
    r, w = os.pipe()
    ep.register(r, select.EPOLLIN)
    gate_r, gate_w = os.pipe()
    pid = os.fork()                                     # LINE:fork:stale
    if pid == 0:
        os.close(gate_w)
        os.read(gate_r, 1)  # holds its copy of r until the parent is done
        os._exit(0)
    os.close(gate_r)
    if silent:
        ep.unregister(r)
    close_registered(r)
    ep.poll(0)                                          # LINE:use:stale
    os.close(gate_w)
    os.waitpid(pid, 0)
    print("parent done", flush=True)


def exec_true(ep):
    os.execv("/bin/true", ["true"])                     # LINE:call:execleak


def execleak(silent):
    ep = select.epoll()                                 # LINE:create:execleak
    if not silent:
        os.set_inheritable(ep.fileno(), True)
    exec_true(ep)


def main():
    mode = sys.argv[1]
    silent = mode.endswith("-silent")
    mode = mode[:-len("-silent")] if silent else mode
    {"stale": stale, "execleak": execleak}[mode](silent)


if __name__ == "__main__":
    main()
