#!/bin/sh
# run.sh - the overhead benchmark (`make bench`); BENCH_QUICK=1 for a short run.
#
# Installs what the workloads need on Debian when it is missing (the servers,
# their load generators, strace), builds the micro-workload program next to the
# library in build/, and runs bench/bench.py, which prints one table (also
# written to build/bench/results.md).  Progress goes to stderr.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh gcc python3 strace valgrind nginx-light wrk redis-server redis-tools
mkdir -p build/bench
${CC:-cc} -O2 -g -Wall -Wextra -Werror -o build/bench/micro bench/micro.c
# the host-sized load that epollfork-ps is timed on (the "ps" rows)
${CC:-cc} -O2 -g -Wall -Wextra -Werror -o build/bench/ps_load bench/ps_load.c
# The floor of start-up cost: a preloaded library that does nothing.
echo 'int epollfork_bench_empty;' | ${CC:-cc} -shared -fPIC -O2 -x c -o build/bench/empty.so -
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
exec "$PY" bench/bench.py "$@"
