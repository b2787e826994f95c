#!/bin/sh
# demo.sh - `make demo`: the seed bug, run bare and then under the shim.
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/tests
cc -O0 -g -o build/tests/seed tests/scenarios/seed.c
echo "== without epollfork: the parent silently loses its events"
build/tests/seed
echo
echo "== under epollfork (scripts/epollfork -- build/tests/seed):"
scripts/epollfork -- build/tests/seed
