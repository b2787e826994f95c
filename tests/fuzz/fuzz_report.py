#!/usr/bin/env python3
"""fuzz_report.py - a mutation fuzzer for scripts/epollfork-report, the log reader.

epollfork-report reads logs that are messy by nature (interleaved processes,
cut lines, other programs' output): whatever the bytes, it must finish with
exit status 0 and print a table or JSON, never a Python traceback.  This loads
the script as a module and feeds it mutated logs in-process (bit flips, byte
insertions, truncations, splices of two logs, duplicated and shuffled lines,
random bytes), starting from the corpus in tests/fuzz/corpus/report/, for a
bounded time.  Usage: fuzz_report.py [SECONDS] [SEED]; prints the number of
inputs run; on a failure it writes the input to build/fuzz/crash-report-N and
exits 1.
"""
import importlib.machinery
import importlib.util
import io
import os
import random
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def load_tool():
    path = os.path.join(ROOT, "scripts", "epollfork-report")
    loader = importlib.machinery.SourceFileLoader("epollfork_report", path)
    spec = importlib.util.spec_from_loader("epollfork_report", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def mutate(rng, data, corpus):
    data = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(8)
        if op == 0 and data:                      # flip bits
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1:                             # insert bytes
            i = rng.randrange(len(data) + 1)
            data[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 2 and data:                    # truncate
            del data[rng.randrange(len(data)):]
        elif op == 3:                             # splice another log
            other = rng.choice(corpus)
            i, j = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
            data[i:] = other[j:]
        elif op == 4:                             # duplicate/shuffle lines
            lines = bytes(data).split(b"\n")
            rng.shuffle(lines)
            if lines:
                lines.insert(rng.randrange(len(lines)), rng.choice(lines))
            data = bytearray(b"\n".join(lines))
        elif op == 5 and data:                    # delete a range
            i = rng.randrange(len(data))
            del data[i:i + rng.randint(1, 64)]
        elif op == 6:                             # interesting tokens
            tok = rng.choice([b"==1== ", b"epollfork: SUMMARY: ", b"shared-epoll-ctl", b"{",
                              b'{"tool":"epollfork"', b'"kind":', b"\xff\xfe", b"#0 0x1 in ",
                              b" site=", b"TOTALS reports=", b"\"", b"\\", b"\x00", b"\r"])
            i = rng.randrange(len(data) + 1)
            data[i:i] = tok
        else:                                     # random bytes
            data = bytearray(rng.randbytes(rng.randint(0, 256)))
    return bytes(data)


def run_one(tool, data, as_json):
    with tempfile.NamedTemporaryFile(prefix="epf-fuzz-", delete=False) as f:
        f.write(data)
        path = f.name
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        rc = tool.main(([ "--json"] if as_json else []) + [path])
    finally:
        sys.stdout, sys.stderr = saved
        os.unlink(path)
    if rc != 0:
        raise AssertionError("exit status %r, stderr %r" % (rc, err.getvalue()[-300:]))


def main(argv):
    seconds = float(argv[0]) if argv else 10.0
    seed = int(argv[1]) if len(argv) > 1 else int(time.time())
    rng = random.Random(seed)
    tool = load_tool()
    cdir = os.path.join(HERE, "corpus", "report")
    corpus = [open(os.path.join(cdir, n), "rb").read() for n in sorted(os.listdir(cdir))]
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        data = mutate(rng, rng.choice(corpus), corpus)
        try:
            run_one(tool, data, n % 2 == 1)
        except Exception:
            out = os.path.join(ROOT, "build", "fuzz")
            os.makedirs(out, exist_ok=True)
            path = os.path.join(out, "crash-report-%d" % n)
            with open(path, "wb") as f:
                f.write(data)
            print("epollfork-report failed on %s (seed %d):\n%s" % (path, seed, traceback.format_exc()))
            return 1
        n += 1
    print("fuzz_report: %d inputs in %.0f s, seed %d, no failure" % (n, seconds, seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
