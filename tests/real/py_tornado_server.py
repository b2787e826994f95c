"""py_tornado_server.py PORT - Tornado's multi-process HTTP server (Debian's
python3-tornado): bind the socket, tornado.process.fork_processes(2), then each
worker runs its own asyncio/IOLoop and serves.  GET / answers "tornado-ok PID";
GET /spawn runs /bin/echo through tornado.process.Subprocess from inside the
running loop (a fork/vfork + exec with the loop's epoll open) and returns its
output.  SIGTERM makes a worker stop its loop and exit 0; the parent exits 0
when both workers did."""
import asyncio
import os
import signal
import sys

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.process
import tornado.web


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("tornado-ok %d\n" % os.getpid())


class Spawn(tornado.web.RequestHandler):
    async def get(self):
        p = tornado.process.Subprocess(["/bin/echo", "spawned-by-%d" % os.getpid()],
                                       stdout=tornado.process.Subprocess.STREAM)
        out = await p.stdout.read_until_close()
        code = await p.wait_for_exit(raise_error=False)
        self.write("%s exit=%d\n" % (out.decode().strip(), code))


def main():
    port = int(sys.argv[1])
    socks = tornado.netutil.bind_sockets(port, address="127.0.0.1")
    print("parent=%d" % os.getpid(), flush=True)
    tornado.process.fork_processes(2, max_restarts=0)

    async def serve():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/", Hello), (r"/spawn", Spawn)]))
        server.add_sockets(socks)
        print("worker=%d ready" % os.getpid(), flush=True)
        await stop.wait()
        server.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
