#!/bin/sh
# demo.sh - the seed bug, run bare and then under the shim (`make demo`).
# Installs what it needs on Debian (make and the compiler included), so that it
# works as the first command on a fresh machine.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh gcc make pkg-config libunwind-dev
make -s all
mkdir -p build/tests
cc -O0 -g -o build/tests/seed tests/scenarios/seed.c
echo "== without epollfork: the parent silently loses its events"
build/tests/seed
echo
echo "== under epollfork (scripts/epollfork -- build/tests/seed):"
scripts/epollfork -- build/tests/seed
