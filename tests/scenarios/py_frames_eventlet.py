"""py_frames_eventlet.py [silent] - eventlet's epoll hub across os.fork().

eventlet's epolls hub keeps one select.epoll for the process and has no fork
handling: a child that waits on an fd through the inherited hub registers it
(EPOLL_CTL_ADD, then EPOLL_CTL_DEL) in the parent's instance.  The parent has
a green thread waiting on a pipe; it forks; the child's green thread (spawned,
so the frames must be that greenthread's and not the main greenlet's, which
waits in wait()) waits on a pipe of its own; the parent then wakes its
reader.  Two reports (the ADD and the DEL, from the same line).  With
`silent` the child leaves at once.
"""
import os
import sys
import traceback

import eventlet
import eventlet.hubs

# the hub eventlet made while importing is dropped: this line makes the one used
eventlet.hubs.use_hub("eventlet.hubs.epolls")


def parent_reader(fd, got):
    eventlet.hubs.trampoline(fd, read=True, timeout=10)
    got.append(os.read(fd, 64))


def child_waits(q_r, q_w):
    os.write(q_w, b"c")
    eventlet.hubs.trampoline(q_r, read=True, timeout=5)  # LINE:call


def main():
    silent = len(sys.argv) > 1 and sys.argv[1] == "silent"
    hub = eventlet.hubs.get_hub()                       # LINE:create
    print("hub=%s" % type(hub).__module__, flush=True)
    p_r, p_w = os.pipe()
    q_r, q_w = os.pipe()
    got = []
    reader = eventlet.spawn(parent_reader, p_r, got)
    eventlet.sleep(0.01)
    pid = os.fork()                                     # LINE:fork
    if pid == 0:
        code = 0
        try:
            if not silent:
                eventlet.spawn(child_waits, q_r, q_w).wait()  # LINE:childwait
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    os.write(p_w, b"p")
    reader.wait()                                       # LINE:use
    print("parent read=%r" % got, flush=True)


if __name__ == "__main__":
    main()
