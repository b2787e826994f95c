#!/bin/sh
# run.sh - the whole test suite (`make test`, and .ci/run through it).
#
# Installs what the suite needs on Debian when it is missing, builds the shim
# and its sanitizer variants, and runs tests/run.py, which ends with the line
# `N passed, N failed`.  Arguments select cases by substring.
set -eu
cd "$(dirname "$0")/.."
sh scripts/install-deps.sh gcc make pkg-config libunwind-dev python3 binutils cppcheck \
    libuv1-dev libevent-dev libev-dev strace python3-gevent man-db groff-base clang \
    libclang-rt-14-dev util-linux libc6-dev python3-eventlet python3-uvloop python3-dev \
    liburing-dev
# the Debian package and the systemd drop-in (tests/test_package.py); systemd-journald
# and journalctl for tests/test_journal.py (strace, above, too)
sh scripts/install-deps.sh build-essential debhelper dpkg-dev lintian libunwind8 systemd
# the real programs of tests/test_real.py (each case also asks for its own)
sh scripts/install-deps.sh redis-server redis-tools nginx memcached lighttpd haproxy php8.2-fpm \
    uwsgi-core uwsgi-plugin-python3 apache2 python3-twisted python3-tornado nodejs
make -s all build/ubsan/libepollfork.so build/asan/libepollfork.so >/dev/null
exec python3 tests/run.py "$@"
