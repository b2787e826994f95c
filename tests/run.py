#!/usr/bin/env python3
"""run.py - the epollfork test runner.

Imports every tests/test_*.py (each registers cases with harness.case), runs
them, prints one PASS/FAIL line per case and ends with `N passed, N failed`.
Arguments are substrings: only cases whose name contains one of them run.
"""
import glob
import importlib.util
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))
import harness  # noqa: E402


def main(argv):
    for path in sorted(glob.glob(os.path.join(HERE, "test_*.py"))):
        name = os.path.splitext(os.path.basename(path))[0]
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    passed = failed = 0
    failures = []
    for name, fn in harness.CASES:
        if argv and not any(a in name for a in argv):
            continue
        t0 = time.time()
        try:
            fn()
        except harness.Fail as e:
            failed += 1
            failures.append(name)
            print("FAIL %s (%.1fs)\n    %s" % (name, time.time() - t0, str(e).replace("\n", "\n    ")), flush=True)
            continue
        except Exception:
            failed += 1
            failures.append(name)
            print("FAIL %s (%.1fs)\n    %s" % (name, time.time() - t0,
                  traceback.format_exc().replace("\n", "\n    ")), flush=True)
            continue
        passed += 1
        print("PASS %s (%.1fs)" % (name, time.time() - t0), flush=True)
    if failures:
        print("failed: " + ", ".join(failures))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
