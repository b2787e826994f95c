"""py_gevent_prefork.py PORT MODE - the pre-fork gevent WSGI server (Debian's
python3-gevent): the parent binds the listening socket, has its hub running
(a greenlet waits on a pipe: a registration in libev's epoll), forks one
worker (MODE geventfork: gevent.fork(), which reinits the hub; MODE osfork:
plain os.fork(), where libev's EVFLAG_FORKCHECK notices), and then parent and
worker both serve_forever() on the shared socket.  GET / answers
"gevent-ok PID".  SIGTERM stops a process's server; exit 0."""
import os
import signal
import sys

import gevent
import gevent.os
import gevent.pywsgi
from gevent.socket import wait_read


def app(env, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("gevent-ok %d\n" % os.getpid()).encode()]


def main():
    port, mode = int(sys.argv[1]), sys.argv[2]
    server = gevent.pywsgi.WSGIServer(("127.0.0.1", port), app, log=None)
    server.init_socket()
    r, w = os.pipe()
    waiter = gevent.spawn(wait_read, r)
    gevent.sleep(0.01)      # the hub runs: the pipe's ev_io reaches the kernel
    pid = gevent.fork() if mode == "geventfork" else os.fork()
    role = "worker" if pid == 0 else "parent"
    if pid == 0:
        waiter.kill()
    gevent.signal_handler(signal.SIGTERM, server.stop)
    print("%s=%d backend=%s" % (role, os.getpid(), gevent.get_hub().loop.backend), flush=True)
    server.serve_forever()
    if pid:
        os.write(w, b"x")
        waiter.join(timeout=5)
        print("parent waiter woke=%s" % waiter.dead, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
