"""py_asyncio_churn.py N [CHUNKS] - the Python registration churn of the overhead benchmark.

An asyncio loop (EpollSelector) adds and removes a reader on one end of a
socketpair, over and over: loop.add_reader() is an EPOLL_CTL_ADD,
loop.remove_reader() an EPOLL_CTL_DEL, made from the same few Python lines
each time, as a server's accept/close path makes them.  Under the shim every
ADD keeps its registration stack (native frames, and the Python frames of the
call).  Prints the line micro.c prints, `MODE ns_per_op=X min=Y max=Z` (the
median, fastest and slowest of CHUNKS timed chunks, after a warm-up): bench.py
takes the fastest chunk, for the bare and the shim run alike.
"""
import asyncio
import socket
import sys
import time


def noop():
    pass


def churn(loop, fd, n):
    for _ in range(n):
        loop.add_reader(fd, noop)
        loop.remove_reader(fd)


def main():
    iters = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
    chunks = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    loop = asyncio.new_event_loop()
    a, b = socket.socketpair()
    per = max(1, iters // chunks)
    churn(loop, a.fileno(), per)            # warm-up
    times = []
    for _ in range(chunks):
        t0 = time.perf_counter_ns()
        churn(loop, a.fileno(), per)
        times.append((time.perf_counter_ns() - t0) / per)
    times.sort()
    print("py-asyncio-churn ns_per_op=%.1f min=%.1f max=%.1f" % (times[len(times) // 2], times[0], times[-1]))
    loop.close()


if __name__ == "__main__":
    main()
