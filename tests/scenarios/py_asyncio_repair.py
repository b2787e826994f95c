"""py_asyncio_repair.py MODE - what an asyncio parent sees after its forked
child touched the inherited loop, bare and under EPOLLFORK_REPAIR=1.

The parent makes a loop (an EpollSelector with the loop's self-pipe
registered), forks, and reaps the child, which does MODE and leaves with
os._exit():
  close      loop.close(): unregisters the self-pipe (EPOLL_CTL_DEL in the
             shared instance) before closing the selector
  addreader  add_reader() on a pipe and one turn of the loop (EPOLL_CTL_ADD)
Then a thread calls call_soon_threadsafe() 0.1 s later, which wakes a loop
blocked in epoll_wait through the self-pipe, while the loop waits for that
callback for at most 2 s.  Prints the parent's interest list before the fork
and after the child, and whether the self-pipe woke it (bare, after `close`,
it does not: the loop sleeps until its 2 s timer).
"""
import asyncio
import os
import sys
import threading
import time


def entries(loop):
    with open("/proc/self/fdinfo/%d" % loop._selector.fileno()) as f:
        return sum(1 for line in f if line.startswith("tfd:"))


def child_closes_loop(loop):
    loop.close()


def child_adds_reader(loop, fd):
    loop.add_reader(fd, lambda: None)
    loop.run_until_complete(asyncio.sleep(0))


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "close"
    loop = asyncio.new_event_loop()
    r, w = os.pipe()
    before = entries(loop)
    pid = os.fork()
    if pid == 0:
        if mode == "close":
            child_closes_loop(loop)
        else:
            child_adds_reader(loop, r)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    print("parent entries before=%d after=%d" % (before, entries(loop)), flush=True)
    fut = loop.create_future()
    threading.Timer(0.1, loop.call_soon_threadsafe, (fut.set_result, 1)).start()
    t0 = time.monotonic()
    try:
        loop.run_until_complete(asyncio.wait_for(fut, 2.0))
    except asyncio.TimeoutError:
        pass
    took = time.monotonic() - t0
    print("parent woken by the self-pipe: %s (%.2f s)" % ("yes" if took < 1.0 else "no", took),
          flush=True)
    loop.close()


if __name__ == "__main__":
    main()
