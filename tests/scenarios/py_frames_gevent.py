"""py_frames_gevent.py [silent] - a gevent greenlet's selector across gevent.fork().

A greenlet (not the main one, which waits in join()) makes an EpollSelector,
registers a pipe and forks with gevent.fork(); in the child the same greenlet
unregisters the pipe (EPOLL_CTL_DEL on the inherited instance) and exits; the
parent's greenlet then selects on it and finds the change.  The report's
Python frames must be that greenlet's (worker, gevent's Greenlet.run), never
the main greenlet's main() in join(): greenlet switches the thread state's
frame pointer, and pyframes.c reads it at the moment of the call.  With
`silent` the child does not unregister (no report).
"""
import os
import selectors
import sys
import traceback

import gevent


def worker(silent):
    sel = selectors.EpollSelector()                     # LINE:create
    r, _ = os.pipe()
    sel.register(r, selectors.EVENT_READ)
    pid = gevent.fork()                                 # LINE:fork
    if pid == 0:
        code = 0
        try:
            if not silent:
                sel.unregister(r)                       # LINE:call
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    sel.select(0)                                       # LINE:use


def main():
    g = gevent.spawn(worker, len(sys.argv) > 1 and sys.argv[1] == "silent")
    g.join()                                            # LINE:join
    print("parent done ok=%s" % g.successful(), flush=True)


if __name__ == "__main__":
    main()
