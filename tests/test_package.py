"""test_package.py - the Debian package and the systemd drop-in.

`make deb` builds build/epollfork_VERSION_ARCH.deb with debhelper and
dpkg-buildpackage, and lintian finds no error and no warning in it (the ones
we accept are overridden in debian/epollfork.lintian-overrides); the package is
installed with dpkg -i, the installed launcher is run from another directory
on the seed program, the header and epollfork.pc are used the way a program
would, and dpkg -r / dpkg -P leave none of its files behind.  These cases
change the machine (CI is a throwaway Debian 12 machine, run as root): they
need root and say so when they do not have it, and the package is removed in a
`finally`, whatever happened.

`epollfork --systemd UNIT` prints a drop-in: systemd itself checks it.
`systemd-analyze verify` (which works without systemd as pid 1) reads the
drop-in next to a throwaway unit in a temporary directory and must say
nothing (a broken neighbour must make it speak: the control that it read the
file), and `systemd --test` (the manager's dry run, which refuses root, so as
nobody) dumps the unit as systemd parsed it: its Environment= values must be
exactly what the launcher was asked for, quotes, spaces and % included.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile

from harness import case, check, build, Fail, ROOT, BUILD, LIB

LAUNCHER = os.path.join(ROOT, "scripts", "epollfork")
CHANGELOG = os.path.join(ROOT, "debian", "changelog")
NOBODY = 65534


def header_version():
    with open(os.path.join(ROOT, "include", "epollfork_version.h")) as f:
        m = re.search(r'^#define EPOLLFORK_VERSION_STRING "([^"]+)"$', f.read(), re.M)
    check(m, "no EPOLLFORK_VERSION_STRING in include/epollfork_version.h")
    return m.group(1)


def changelog_version():
    with open(CHANGELOG) as f:
        m = re.match(r"^epollfork \(([^)]+)\) \S+; urgency=\w+$", f.readline().rstrip("\n"))
    check(m, "debian/changelog: the first line is not `epollfork (VERSION) DIST; urgency=U`")
    return m.group(1)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("EPOLLFORK_") and k != "LD_PRELOAD"}
    env.update(extra)
    return env


def need_root():
    if os.geteuid() != 0:
        raise Fail("this case installs packages and a .deb: run it as root (CI does)")


def deps(*pkgs):
    p = subprocess.run(["sh", os.path.join(ROOT, "scripts", "install-deps.sh")] + list(pkgs),
                       capture_output=True, text=True)
    check(p.returncode == 0, "install-deps %s: %s" % (" ".join(pkgs), p.stderr[-2000:]))


def multiarch():
    p = subprocess.run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"], capture_output=True, text=True)
    check(p.returncode == 0 and p.stdout.strip(), "dpkg-architecture: %s" % p.stderr)
    return p.stdout.strip()


@case("package/changelog-version-is-the-header-version")
def _():
    ver = header_version()
    deb = changelog_version()
    check(deb.rsplit("-", 1)[0] == ver and "-" in deb,
          "debian/changelog says %s, include/epollfork_version.h %s: the package must be %s-N"
          % (deb, ver, ver))
    if shutil.which("dpkg-parsechangelog"):
        p = subprocess.run(["dpkg-parsechangelog", "-l", CHANGELOG, "-S", "Version"],
                           capture_output=True, text=True)
        check(p.returncode == 0 and p.stdout.strip() == deb,
              "dpkg-parsechangelog says %r, the first line %r: %s" % (p.stdout, deb, p.stderr))
    # `make deb` names the file from the same line
    p = subprocess.run(["make", "-s", "-C", ROOT, "--eval", "print-deb: ; @echo $(DEB)", "print-deb"],
                       capture_output=True, text=True)
    arch = subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()
    check(p.stdout.strip() == "build/epollfork_%s_%s.deb" % (deb, arch),
          "make deb would write %r" % p.stdout)


# --- the systemd drop-in --------------------------------------------------

def dropin(args, env=None, launcher=LAUNCHER):
    p = subprocess.run([launcher] + list(args), capture_output=True, text=True,
                       env=env or clean_env(), cwd="/")
    return p


def env_lines(text):
    """The Environment= lines of a drop-in, unquoted the simple way (the
    systemd --test dump is the real check)."""
    return [l for l in text.splitlines() if l.startswith("Environment=")]


UNIT = "epf-dropin-test"
TRICKY_LOG = "/var/log/epf dir/it's \"x\" \\ %p.log"


def systemd_dump(unitdir, unit):
    """The unit as systemd's manager parses it (`systemd --test`, as nobody):
    (drop-in paths, Environment values)."""
    exe = "/lib/systemd/systemd"
    check(os.access(exe, os.X_OK), "%s is missing (the systemd package)" % exe)
    p = subprocess.run(["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
                        exe, "--test", "--system", "--unit=" + unit, "--no-pager"],
                       capture_output=True, text=True, timeout=120,
                       env=dict(clean_env(), SYSTEMD_UNIT_PATH=unitdir + ":"))
    check(p.returncode == 0, "systemd --test: rc %d\n%s" % (p.returncode, p.stderr[-3000:]))
    m = re.search(r"^\t-> Unit %s:\n(.*?)(?=^\t-> |\Z)" % re.escape(unit), p.stdout, re.M | re.S)
    check(m, "systemd --test did not dump %s:\n%s" % (unit, p.stderr[-2000:]))
    block = m.group(1)
    dropins = re.findall(r"^\t\tDropIn Path: (.*)$", block, re.M)
    envs = re.findall(r"^\t\tEnvironment: (.*)$", block, re.M)
    return dropins, envs


@case("package/systemd-drop-in-is-valid-and-says-what-was-asked")
def _():
    deps("systemd")
    check(shutil.which("systemd-analyze"), "systemd-analyze is not installed")
    lib = os.path.realpath(LIB)
    check(os.path.exists(lib), "build the library first (make)")
    d = tempfile.mkdtemp(prefix="epf-unit-")
    os.chmod(d, 0o755)          # systemd --test runs as nobody
    try:
        unit = UNIT + ".service"
        with open(os.path.join(d, unit), "w") as f:
            f.write("[Unit]\nDescription=epollfork drop-in test\n\n[Service]\nType=oneshot\n"
                    "ExecStart=/bin/true\n")
        conf_dir = os.path.join(d, unit + ".d")
        os.mkdir(conf_dir)
        os.chmod(conf_dir, 0o755)
        conf = os.path.join(conf_dir, "epollfork.conf")
        cases = [
            ([], ["LD_PRELOAD=" + lib, "EPOLLFORK_LOG=journal"]),
            (["--json", "--abort", "--depth=12", "--disable", "--log=" + TRICKY_LOG],
             ["LD_PRELOAD=" + lib, "EPOLLFORK_LOG=" + TRICKY_LOG, "EPOLLFORK_FORMAT=json",
              "EPOLLFORK_ON_REPORT=abort", "EPOLLFORK_STACK_DEPTH=12", "EPOLLFORK_DISABLE=1"]),
            (["--log=/var/log/epollfork/%p.log"],
             ["LD_PRELOAD=" + lib, "EPOLLFORK_LOG=/var/log/epollfork/%p.log"]),
        ]
        for opts, want in cases:
            p = dropin(["--systemd", UNIT] + opts)
            check(p.returncode == 0 and not p.stderr, "--systemd %s: rc %d %s" % (opts, p.returncode, p.stderr))
            text = p.stdout
            # the header says where it goes and how it comes out
            etc = "/etc/systemd/system/%s.d/epollfork.conf" % unit
            for must in ("systemctl edit " + unit, "systemctl revert " + unit, etc,
                         "systemctl daemon-reload", "systemctl restart " + unit,
                         "LD_PRELOAD set here replaces any LD_PRELOAD"):
                check(must in text, "the drop-in's comments do not say %r:\n%s" % (must, text))
            body = [l for l in text.splitlines() if l and not l.startswith("#")]
            check(body[0] == "[Service]" and all(l.startswith("Environment=") for l in body[1:]),
                  "a [Service] section of Environment= lines only:\n%s" % text)
            check(len(env_lines(text)) == len(want), "lines %r, want %r" % (env_lines(text), want))
            with open(conf, "w") as f:
                f.write(text)
            os.chmod(conf, 0o644)
            v = subprocess.run(["systemd-analyze", "verify", os.path.join(d, unit)],
                               capture_output=True, text=True, timeout=120, env=clean_env())
            said = [l for l in (v.stdout + v.stderr).splitlines() if d in l or UNIT in l]
            check(v.returncode == 0 and not said, "systemd-analyze verify (%s): rc %d\n%s\n%s"
                  % (opts, v.returncode, "\n".join(said), text))
            dropins, envs = systemd_dump(d, unit)
            check(dropins == [conf], "systemd did not read the drop-in: %r" % dropins)
            check(envs == want, "systemd parsed Environment=\n  %r\nasked for\n  %r\n%s" % (envs, want, text))
        # The control: verify reads the drop-in, and complains about a bad one.
        with open(conf, "a") as f:
            f.write("Environment=LD_PRELOAD\nNoSuchKey=1\n")
        v = subprocess.run(["systemd-analyze", "verify", os.path.join(d, unit)],
                           capture_output=True, text=True, timeout=120, env=clean_env())
        check(conf in v.stdout + v.stderr, "systemd-analyze verify did not notice a broken drop-in:\n%s%s"
              % (v.stdout, v.stderr))
    finally:
        shutil.rmtree(d, ignore_errors=True)


@case("package/systemd-drop-in-names-and-errors")
def _():
    lib = os.path.realpath(LIB)
    # names: a bare one is a service; other unit types are refused
    for name, unit in (("nginx", "nginx.service"), ("php8.2-fpm.service", "php8.2-fpm.service"),
                       ("my.app", "my.app.service"), ("getty@", "getty@.service"),
                       ("getty@tty1", "getty@tty1.service"), ("a\\x2db", "a\\x2db.service")):
        p = dropin(["--systemd", name])
        check(p.returncode == 0, "--systemd %r: rc %d %s" % (name, p.returncode, p.stderr))
        check(p.stdout.splitlines()[0] == "# /etc/systemd/system/%s.d/epollfork.conf" % unit,
              "--systemd %r: %r" % (name, p.stdout.splitlines()[:1]))
        check("systemctl edit %s\n" % unit in p.stdout, "--systemd %r names %s" % (name, unit))
    # bad names, a missing name, a command after it, a newline in a value:
    # exit 2, nothing on stdout, one line on stderr
    bad = [["--systemd", ""], ["--systemd", "/etc/systemd/system/x.service"], ["--systemd", "a b"],
           ["--systemd", "a\tb"], ["--systemd", "a\nb"], ["--systemd", "x.socket"],
           ["--systemd", "x.timer"], ["--systemd", "x*y"], ["--systemd", ".service"],
           ["--systemd", "x" * 250], ["--systemd"], ["--systemd", "x", "--", "true"],
           ["--systemd", "x", "--log=a\nb"], ["--json", "--systemd"]]
    for args in bad:
        p = dropin(args)
        check(p.returncode == 2 and not p.stdout and len(p.stderr.splitlines()) == 1
              and p.stderr.startswith("epollfork: "),
              "%r: rc %d, stdout %r, stderr %r" % (args, p.returncode, p.stdout[:200], p.stderr))
    # the library: EPOLLFORK_LIBRARY (made absolute), or exit 2 when none is found
    p = dropin(["--systemd", "x"], env=clean_env(EPOLLFORK_LIBRARY=os.path.relpath(LIB, ROOT)))
    # (the launcher runs with cwd /, so a path relative to ROOT does not exist there)
    check(p.returncode == 2 and "not found" in p.stderr, "relative path from /: %r" % p.stderr)
    p = subprocess.run([LAUNCHER, "--systemd", "x"], capture_output=True, text=True, cwd=ROOT,
                       env=clean_env(EPOLLFORK_LIBRARY=os.path.relpath(LIB, ROOT)))
    check(p.returncode == 0 and "Environment=LD_PRELOAD=%s\n" % lib in p.stdout,
          "a relative EPOLLFORK_LIBRARY becomes absolute: %s%s" % (p.stdout[-300:], p.stderr))
    p = dropin(["--systemd", "x"], env=clean_env(EPOLLFORK_LIBRARY="/nonexistent/libepollfork.so"))
    check(p.returncode == 2 and not p.stdout and "not found" in p.stderr, "missing library: %r" % p.stderr)
    d = tempfile.mkdtemp(prefix="epf-nolib-")
    try:
        os.mkdir(os.path.join(d, "bin"))
        lone = os.path.join(d, "bin", "epollfork")
        shutil.copy(LAUNCHER, lone)
        p = dropin(["--systemd", "x"], launcher=lone)
        check(p.returncode == 2 and not p.stdout and len(p.stderr.splitlines()) == 1
              and "libepollfork.so not found" in p.stderr, "a launcher with no library: %r" % p.stderr)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- the package -----------------------------------------------------------

DEB_TOOLS = ("build-essential", "debhelper", "dpkg-dev", "lintian")
_deb = {}


def the_deb():
    """`make deb`, once per run; returns the path of the .deb."""
    if "path" in _deb:
        if isinstance(_deb["path"], Fail):
            raise _deb["path"]
        return _deb["path"]
    need_root()
    path = os.path.join(BUILD, "epollfork_%s_%s.deb" % (changelog_version(), subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True).stdout.strip()))
    if os.path.exists(path):
        os.unlink(path)
    parent = os.path.dirname(ROOT)
    before = set(os.listdir(parent))
    r = subprocess.run(["make", "-s", "-C", ROOT, "deb"], capture_output=True, text=True, timeout=1200)
    after = set(os.listdir(parent))
    if r.returncode != 0 or not os.path.exists(path):
        _deb["path"] = Fail("make deb: rc %d, %s %s\n%s%s" % (r.returncode, path,
                            "missing" if not os.path.exists(path) else "there",
                            r.stdout[-4000:], r.stderr[-4000:]))
        raise _deb["path"]
    # dpkg-buildpackage's results (epollfork_*.deb, .buildinfo, .changes) go to
    # the parent of the directory it runs in: not this tree's parent
    new = [n for n in after - before if n.startswith("epollfork")]
    check(not new, "make deb left files next to the tree: %s" % sorted(new))
    _deb["path"] = path
    return path


def deb_files(deb):
    """Paths in the .deb (leading ./ dropped), and which are symlinks."""
    p = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True)
    check(p.returncode == 0, p.stderr)
    files, links = set(), set()
    for line in p.stdout.splitlines():
        name = line.split(None, 5)[5].split(" -> ")[0]
        name = name[1:].rstrip("/") or "/"
        files.add(name)
        if line.startswith("l"):
            links.add(name)
    return files, links


def makefile_tools():
    with open(os.path.join(ROOT, "Makefile")) as f:
        m = re.search(r"^TOOLS\s*:?=(.*)$", f.read(), re.M)
    check(m, "no TOOLS in the Makefile")
    return m.group(1).split()


@case("package/make-deb-builds-lintian-clean")
def _():
    deb = the_deb()
    ver, debver = header_version(), changelog_version()
    # nothing of the build stays in debian/ (it ran in a copy of the tree)
    st = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--ignored", "--", "debian"],
                        capture_output=True, text=True)
    check(st.returncode == 0 and not [l for l in st.stdout.splitlines() if l[:2] in ("??", "!!")],
          "make deb left files in debian/:\n%s" % st.stdout)
    check(not os.path.exists(os.path.join(BUILD, "deb")), "build/deb/ (the copy) was not removed")
    # lintian: no error, no warning; every override is used
    lt = subprocess.run(["lintian", "-I", "--show-overrides", deb], capture_output=True, text=True,
                        timeout=600)
    tags = [l for l in lt.stdout.splitlines() if re.match(r"^[EWIO]: ", l)]
    check(lt.returncode == 0 and not [t for t in tags if t[0] in "EW"],
          "lintian: rc %d\n%s\n%s" % (lt.returncode, lt.stdout, lt.stderr[-2000:]))
    check(not [t for t in tags if "unused-override" in t or "mismatched-override" in t],
          "lintian: overrides that no longer apply:\n%s" % "\n".join(tags))
    with open(os.path.join(ROOT, "debian", "epollfork.lintian-overrides")) as f:
        overrides = [l.split()[0] for l in f if l.strip() and not l.startswith("#")]
    for o in overrides:
        check([t for t in tags if t.startswith("O: epollfork: %s" % o)],
              "override %s was not used by lintian:\n%s" % (o, lt.stdout))
    # control fields
    info = {}
    for field in ("Package", "Version", "Architecture", "Depends"):
        info[field] = subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True,
                                     text=True).stdout.strip()
    check(info["Package"] == "epollfork" and info["Version"] == debver, "control: %r" % info)
    depends = {d.strip().split()[0] for d in info["Depends"].split(",")}
    check({"libc6", "libunwind8", "python3"} <= depends, "Depends: %s" % info["Depends"])
    # the layout
    ma = multiarch()
    files, links = deb_files(deb)
    want = {"/usr/lib/%s/epollfork/libepollfork.so" % ma, "/usr/lib/%s/pkgconfig/epollfork.pc" % ma,
            "/usr/include/epollfork.h", "/usr/include/epollfork_version.h",
            "/usr/share/man/man7/epollfork.7.gz", "/usr/share/doc/epollfork/copyright"}
    want |= {"/usr/bin/" + t for t in makefile_tools()}
    want |= {"/usr/share/man/man1/%s.1.gz" % t for t in makefile_tools()}
    check(want <= files, "missing from the .deb: %s" % sorted(want - files))
    check("/usr/share/man/man1/epollfork.1.gz" not in links, "epollfork.1 is the page itself")
    stray = [f for f in files if re.match(r"^/usr/lib/%s/libepollfork" % re.escape(ma), f)]
    check(not stray, "no SONAME links in the public libdir: %s" % stray)
    # the launcher and epollfork.pc in the .deb carry the version and the path
    x = tempfile.mkdtemp(prefix="epf-deb-")
    try:
        subprocess.run(["dpkg-deb", "-x", deb, x], check=True)
        with open(os.path.join(x, "usr", "bin", "epollfork")) as f:
            launcher = f.read()
        check("version=%s\n" % ver in launcher and "@EPOLLFORK" not in launcher,
              "the packaged launcher was not given its version and library path")
        check("preload='/usr/lib/%s/epollfork/libepollfork.so'" % ma in launcher, "library path in the launcher")
    finally:
        shutil.rmtree(x, ignore_errors=True)


def dpkg_status():
    p = subprocess.run(["dpkg-query", "-W", "-f=${db:Status-Status}", "epollfork"],
                       capture_output=True, text=True)
    return p.stdout.strip() if p.returncode == 0 else "not-installed"


@case("package/install-run-remove-leaves-nothing")
def _():
    deb = the_deb()
    deps("pkg-config", "man-db", "groff-base", "libunwind8", "python3")
    ver = header_version()
    ma = multiarch()
    preload = "/usr/lib/%s/epollfork/libepollfork.so" % ma
    seed = build("seed.c")
    files, _links = deb_files(deb)
    if dpkg_status() != "not-installed":     # a run that was killed: start from scratch
        subprocess.run(["dpkg", "-P", "epollfork"], capture_output=True)
    check(dpkg_status() == "not-installed", "epollfork is installed and dpkg -P fails")
    existed = {f for f in files if os.path.lexists(f)}
    tmp = tempfile.mkdtemp(prefix="epf-pkg-")
    env = clean_env(PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        p = subprocess.run(["dpkg", "-i", deb], capture_output=True, text=True, timeout=300)
        check(p.returncode == 0, "dpkg -i: %s%s" % (p.stdout[-2000:], p.stderr[-2000:]))
        p = subprocess.run(["dpkg", "-L", "epollfork"], capture_output=True, text=True)
        listed = [os.path.normpath(l) for l in p.stdout.splitlines() if l.startswith("/")]
        check(p.returncode == 0 and preload in listed, "dpkg -L: %s" % p.stdout)

        # the seed bug, from another directory, through the installed launcher
        r = subprocess.run(["epollfork", "--json", "--", seed], capture_output=True, text=True,
                           cwd=tmp, env=env, timeout=60)
        check(r.returncode == 0, "epollfork -- seed: rc %d %s" % (r.returncode, r.stderr))
        objs = [json.loads(l) for l in r.stderr.splitlines() if l.startswith("{")]
        reps = [o for o in objs if o.get("kind") == "shared-epoll-ctl"]
        check(len(reps) == 1, "one shared-epoll-ctl report from the installed package:\n%s" % r.stderr)
        rep = reps[0]
        check(rep["op"] == "EPOLL_CTL_DEL" and rep["version"] == ver
              and rep["site"].startswith("child_cleanup(seed+0x"), "report %r" % rep)
        check("child_cleanup" in [f.get("function") for f in rep["stacks"]["call"]], "call stack %r" % rep)
        t = subprocess.run(["epollfork", "--", seed], capture_output=True, text=True, cwd=tmp, env=env,
                           timeout=60)
        check(t.returncode == 0 and "epollfork: WARNING: shared-epoll-ctl:" in t.stderr
              and re.search(r"SUMMARY: shared-epoll-ctl .* site=child_cleanup\(seed\+0x", t.stderr),
              "the text report from the installed package:\n%s" % t.stderr)
        maps = subprocess.run(["epollfork", "--", "cat", "/proc/self/maps"], capture_output=True,
                              text=True, cwd=tmp, env=env)
        check(preload in maps.stdout and os.path.realpath(LIB) not in maps.stdout,
              "the installed launcher preloads %s:\n%s" % (preload, maps.stderr))
        v = subprocess.run(["epollfork", "--version"], capture_output=True, text=True, env=env)
        check(v.stdout.strip() == "epollfork " + ver, "epollfork --version: %r" % v.stdout)
        s = subprocess.run(["epollfork", "--systemd", "nginx"], capture_output=True, text=True, env=env, cwd=tmp)
        check(s.returncode == 0 and "Environment=LD_PRELOAD=%s\n" % preload in s.stdout
              and "outside /usr" not in s.stdout, "installed --systemd: %s%s" % (s.stdout, s.stderr))
        rp = subprocess.run(["epollfork-report", "--json"], input=r.stderr, capture_output=True,
                            text=True, env=env)
        check(rp.returncode == 0 and json.loads(rp.stdout)["reports"] == 1, "epollfork-report: %s%s"
              % (rp.stdout, rp.stderr))

        # pkg-config and the header, as a program would use them
        pc = subprocess.run(["pkg-config", "--modversion", "epollfork"], capture_output=True, text=True, env=env)
        check(pc.stdout.strip() == ver, "pkg-config --modversion: %r %s" % (pc.stdout, pc.stderr))
        pv = subprocess.run(["pkg-config", "--variable=preload", "epollfork"], capture_output=True,
                            text=True, env=env)
        check(pv.stdout.strip() == preload, "pkg-config --variable=preload: %r" % pv.stdout)
        cflags = subprocess.run(["pkg-config", "--cflags", "epollfork"], capture_output=True,
                                text=True, env=env).stdout.split()
        src = os.path.join(tmp, "uses_header.c")
        with open(src, "w") as f:
            f.write('#include <stdio.h>\n#include <epollfork.h>\nint main(void){'
                    'printf("%s %s\\n", EPOLLFORK_VERSION_STRING, EPOLLFORK_LOADED() ? epollfork_version() : "-");'
                    'return 0;}\n')
        exe = os.path.join(tmp, "uses_header")
        c = subprocess.run(["cc", "-Wall", "-Werror"] + cflags + ["-o", exe, src, "-MD", "-MF", exe + ".d"],
                           capture_output=True, text=True, cwd=tmp, env=env)
        check(c.returncode == 0, "cc with pkg-config --cflags epollfork: %s" % c.stderr)
        with open(exe + ".d") as f:
            check("/usr/include/epollfork.h" in f.read(), "the header used is not /usr/include/epollfork.h")
        a = subprocess.run([exe], capture_output=True, text=True, env=env)
        b = subprocess.run([exe], capture_output=True, text=True, env=dict(env, LD_PRELOAD=pv.stdout.strip()))
        check(a.stdout.split() == [ver, "-"] and b.stdout.split() == [ver, ver],
              "header without/with the shim: %r %r" % (a.stdout, b.stdout))

        # the man pages, gzip'd, and the aliases
        for page in ("epollfork", "epollfork-report", "epollfork-symbolize"):
            w = subprocess.run(["man", "-w", page], capture_output=True, text=True, env=env)
            check(w.stdout.strip().startswith("/usr/share/man/man1/"), "man -w %s: %r" % (page, w.stdout))
        m = subprocess.run(["man", "epollfork-symbolize"], capture_output=True, text=True,
                           env=dict(env, MANWIDTH="80"))
        check("--systemd" in m.stdout and not m.stderr, "man epollfork-symbolize: %s" % m.stderr)

        # remove, then purge: nothing of the package stays
        p = subprocess.run(["dpkg", "-r", "epollfork"], capture_output=True, text=True, timeout=300)
        check(p.returncode == 0, "dpkg -r: %s%s" % (p.stdout, p.stderr))
        left = [f for f in listed if f not in existed and os.path.lexists(f)]
        check(not left, "dpkg -r left behind: %s" % left)
        p = subprocess.run(["dpkg", "-P", "epollfork"], capture_output=True, text=True, timeout=300)
        check(p.returncode == 0 and dpkg_status() == "not-installed",
              "dpkg -P: %s%s, status %s" % (p.stdout, p.stderr, dpkg_status()))
        left = [f for f in listed if f not in existed and os.path.lexists(f)]
        check(not left, "dpkg -P left behind: %s" % left)
    finally:
        if dpkg_status() != "not-installed":
            subprocess.run(["dpkg", "-P", "epollfork"], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
