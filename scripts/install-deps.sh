#!/bin/sh
# install-deps.sh PKG... - install the Debian packages that are missing, once.
#
# The build and the test suite call this so that `make` and `make test` work on
# a fresh Debian 12 machine.  Packages already installed cost one dpkg-query.
# Root runs apt-get directly; others go through sudo when it exists.
set -eu
missing=""
for p in "$@"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-deps: missing packages:$missing (and no apt-get here); install them by hand" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install-deps: missing packages:$missing; run as root or install them" >&2
        exit 1
    fi
fi
echo "install-deps: installing$missing" >&2
export DEBIAN_FRONTEND=noninteractive
# Server packages (nginx, apache2, lighttpd, memcached, redis...) start their
# service on install, some on every address: the tests run their own copies on
# 127.0.0.1 only, so no service may start here.  A policy-rc.d that says 101
# stops invoke-rc.d and deb-systemd-invoke; if the machine has none, ours is
# there for the install and removed after.
policy=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\n# installed by epollfork scripts/install-deps.sh for one apt-get run\nexit 101\n' |
        $SUDO tee "$policy" >/dev/null && $SUDO chmod 755 "$policy" && ours=1
    trap '[ -n "$ours" ] && $SUDO rm -f "$policy"' EXIT
fi
# An old package index may name versions the mirror no longer has: refresh it.
# Another apt run (a parallel job) holds the lock for a while: wait for it.
$SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq >&2 || true
$SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $missing >&2
