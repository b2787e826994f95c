"""py_frames_asyncio.py MODE - asyncio across os.fork(), for the Python frames of reports.

The parent makes an asyncio loop (EpollSelector: epoll_create1), registers a
pipe with add_reader() and forks; the child does MODE and leaves with
os._exit(); the parent then runs its loop (epoll_wait on the shared instance),
where it finds the child's change and reports it.  tests/test_pyframes.py
reads the lines marked `# LINE:...` and expects the report's Python frames to
name them: the child's offending call, the os.fork(), the loop's creation and
the parent's use.

  remove     the child calls loop.remove_reader() (EPOLL_CTL_DEL)
  close      the child calls loop.close() (the self-pipe's EPOLL_CTL_DEL)
  addreader  the child starts its own reader on the inherited loop (EPOLL_CTL_ADD)
  thread     the child calls remove_reader() from a thread of its own: the
             frames are that thread's, not the main thread's (in join())
  mtparent   remove, in the child of a parent that has a second thread
             running at the fork (no native unwinding there: stack.c)
  twolines   the child removes two readers from two lines: two reports
  MODE-silent  the same program, the child makes no call (no report)
"""
import asyncio
import os
import sys
import threading
import traceback


def child_removes(loop, r, r2):
    loop.remove_reader(r)                               # LINE:call:remove


def child_closes(loop, r, r2):
    loop.close()                                        # LINE:call:close


def child_adds(loop, r, r2):
    r3, _ = os.pipe()
    loop.add_reader(r3, print)                          # LINE:call:addreader


def thread_removes(loop, r):
    loop.remove_reader(r)                               # LINE:call:thread


def child_in_thread(loop, r, r2):
    t = threading.Thread(target=thread_removes, args=(loop, r))
    t.start()
    t.join()                                            # LINE:join


def child_removes_two(loop, r, r2):
    loop.remove_reader(r)                               # LINE:call:first
    loop.remove_reader(r2)                              # LINE:call:second


CHILD = {"remove": child_removes, "close": child_closes, "addreader": child_adds,
         "thread": child_in_thread, "mtparent": child_removes, "twolines": child_removes_two}


def main():
    mode = sys.argv[1]
    silent = mode.endswith("-silent")
    mode = mode[:-len("-silent")] if silent else mode
    if mode == "mtparent":
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
    loop = asyncio.new_event_loop()                     # LINE:create
    r, _ = os.pipe()
    r2, _ = os.pipe()
    loop.add_reader(r, print)
    loop.add_reader(r2, print)
    pid = os.fork()                                     # LINE:fork
    if pid == 0:
        code = 0
        try:
            if not silent:
                CHILD[mode](loop, r, r2)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    loop.run_until_complete(asyncio.sleep(0.01))        # LINE:use
    print("parent done", flush=True)


if __name__ == "__main__":
    main()
