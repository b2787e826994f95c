"""py_asyncio_fork.py MODE - Python asyncio (Debian's /usr/bin/python3) across os.fork().

asyncio.new_event_loop() makes an EpollSelector (select.epoll: epoll_create1)
and registers the loop's self-pipe (a socketpair) in it at once.  The parent
forks; the child does MODE and exits with os._exit(); the parent then runs its
loop (run_until_complete of a short sleep, after call_soon_threadsafe, which
writes to the self-pipe) and prints whether the wakeup callback ran.

Conflicts (one report, by the parent at its epoll_wait):
  close       the child calls loop.close(): it unregisters the parent's
              self-pipe (EPOLL_CTL_DEL in the shared instance) before closing
              the selector
  addreader   the child keeps the loop and uses it: add_reader() on a pipe
              (EPOLL_CTL_ADD) and run_until_complete()
Silent:
  exit        the child leaves with os._exit(0) without touching the loop
  run         the child runs the inherited loop (run_until_complete of a
              sleep): it waits on the shared instance but never edits it
  newloop     the child leaves the inherited loop alone and makes and uses its
              own new_event_loop() (a new epoll instance)
"""
import asyncio
import os
import sys
import traceback


def child_closes_loop(loop):
    loop.close()


def child_adds_reader(loop, fd):
    loop.add_reader(fd, lambda: None)
    loop.run_until_complete(asyncio.sleep(0))


def child_runs_loop(loop):
    loop.run_until_complete(asyncio.sleep(0))


def child_new_loop(loop):
    mine = asyncio.new_event_loop()
    r, w = os.pipe()
    mine.add_reader(r, lambda: None)
    mine.run_until_complete(asyncio.sleep(0))
    mine.close()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "close"
    loop = asyncio.new_event_loop()
    r, w = os.pipe()
    print("selector=%s epfd=%d" % (type(loop._selector).__name__, loop._selector.fileno()), flush=True)
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if mode == "close":
                child_closes_loop(loop)
            elif mode == "addreader":
                child_adds_reader(loop, r)
            elif mode == "run":
                child_runs_loop(loop)
            elif mode == "newloop":
                child_new_loop(loop)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    woke = []
    loop.call_soon_threadsafe(woke.append, 1)
    loop.run_until_complete(asyncio.sleep(0.01))
    print("parent woke=%d" % len(woke), flush=True)
    loop.close()


if __name__ == "__main__":
    main()
