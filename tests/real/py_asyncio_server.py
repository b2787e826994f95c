"""py_asyncio_server.py PORT - a plain asyncio TCP server (Debian's
/usr/bin/python3) that forks while its loop runs, the three ways real asyncio
programs do:
  "pool N"   loop.run_in_executor() on a ProcessPoolExecutor with the fork
             start method: pool workers (forked from the loop's thread while
             the executor's manager thread runs) inherit the loop's epoll and
             never touch it
  "spawn"    asyncio.create_subprocess_exec("/bin/echo"): fork/vfork + exec
  "fork"     a bare os.fork() in a handler; the child writes to a pipe and
             leaves with os._exit() without touching the loop
Each request is one line; the answer is one line.  SIGTERM stops the server
and the pool; exit 0."""
import asyncio
import concurrent.futures
import multiprocessing
import os
import signal
import sys


def work(n):
    return sum(range(n)), os.getpid()


async def handle(reader, writer, pool):
    loop = asyncio.get_running_loop()
    line = (await reader.readline()).decode().split()
    if line and line[0] == "pool":
        total, pid = await loop.run_in_executor(pool, work, int(line[1]))
        answer = "pool sum=%d by=%s" % (total, "child" if pid != os.getpid() else "self")
    elif line and line[0] == "spawn":
        p = await asyncio.create_subprocess_exec("/bin/echo", "spawned", stdout=asyncio.subprocess.PIPE)
        out, _ = await p.communicate()
        answer = "spawn %s exit=%d" % (out.decode().strip(), p.returncode)
    elif line and line[0] == "fork":
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"forked-child")
            os._exit(0)
        os.close(w)
        data = os.read(r, 64)
        os.close(r)
        _, st = await loop.run_in_executor(None, os.waitpid, pid, 0)
        answer = "fork %s status=%d" % (data.decode(), st)
    else:
        answer = "hello %d" % os.getpid()
    writer.write((answer + "\n").encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def main():
    port = int(sys.argv[1])
    pool = concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    server = await asyncio.start_server(lambda r, w: handle(r, w, pool), "127.0.0.1", port)
    print("ready %d" % os.getpid(), flush=True)
    await stop.wait()
    server.close()
    await server.wait_closed()
    pool.shutdown(wait=True)


if __name__ == "__main__":
    asyncio.run(main())
