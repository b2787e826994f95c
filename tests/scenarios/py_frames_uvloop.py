"""py_frames_uvloop.py [silent] - uvloop (libuv) across os.fork().

uvloop is Cython over libuv: no Python frame of its own, so the innermost
Python frame is the user's line.  The parent's reader reaches the kernel in
run_until_complete() (libuv applies registrations in uv__io_poll); the child
calls remove_reader(), whose uv_poll_stop() deletes the fd from the inherited
epoll at once (uv__platform_invalidate_fd: EPOLL_CTL_DEL); the parent then
runs its loop.  With `silent` the child leaves without the call.
"""
import asyncio
import os
import sys
import traceback

import uvloop


def main():
    silent = len(sys.argv) > 1 and sys.argv[1] == "silent"
    loop = uvloop.new_event_loop()                      # LINE:create
    r, _ = os.pipe()
    loop.add_reader(r, print)
    loop.run_until_complete(asyncio.sleep(0))
    pid = os.fork()                                     # LINE:fork
    if pid == 0:
        code = 0
        try:
            if not silent:
                loop.remove_reader(r)                   # LINE:call
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    loop.run_until_complete(asyncio.sleep(0.01))        # LINE:use
    print("parent done", flush=True)


if __name__ == "__main__":
    main()
