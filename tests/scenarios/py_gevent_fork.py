"""py_gevent_fork.py MODE - gevent (Debian's python3-gevent on the system libev) across a fork.

gevent's hub runs libev's default loop (epoll backend here) and always sets
EVFLAG_FORKCHECK.  The parent has a greenlet blocked in wait_read() on a pipe
(an ev_io registered in the epoll instance); it forks; the child kills that
greenlet (stopping its watcher), waits on a pipe of its own (a new ev_io) and
exits; the parent then writes to its pipe and its greenlet must wake up.

  geventfork  gevent.os.fork(): the child calls gevent.hub.reinit(), i.e.
              ev_loop_fork(); the next ev_run closes the inherited epoll fd
              and makes a new one at the same number
  osfork      plain os.fork() without reinit(): EVFLAG_FORKCHECK makes the
              child's first ev_run notice the new pid and do the same
Both are expected silent.
"""
import os
import sys
import traceback

import gevent
import gevent.os
from gevent.socket import wait_read


def parent_reader(fd, got):
    wait_read(fd, timeout=10)
    got.append(os.read(fd, 64))


def child_uses_hub(reader, q_r, q_w):
    reader.kill(block=True)
    os.write(q_w, b"c")
    wait_read(q_r, timeout=5)
    return os.read(q_r, 64)


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "geventfork"
    p_r, p_w = os.pipe()
    q_r, q_w = os.pipe()
    got = []
    reader = gevent.spawn(parent_reader, p_r, got)
    gevent.sleep(0.001)     # the hub turns its loop: the ev_io reaches the kernel
    loop = gevent.get_hub().loop
    print("backend=%s" % loop.backend, flush=True)
    pid = gevent.os.fork() if mode == "geventfork" else os.fork()
    if pid == 0:
        code = 0
        try:
            data = child_uses_hub(reader, q_r, q_w)
            print("child read=%r" % data, flush=True)
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    os.write(p_w, b"p")
    reader.join(timeout=10)
    print("parent read=%r" % (got[0] if got else None), flush=True)


if __name__ == "__main__":
    main()
