"""test_static.py - checks that need no program to run under the shim.

cppcheck on the sources; the library's interface (exactly the wrapped libc
names and epollfork_* are exported, libunwind is not a dependency: it is
dlopen'ed RTLD_LOCAL, docs/EVIDENCE.md); a from-scratch -Werror build into a
temporary BUILD directory (the shipped library and its sanitizer variants, with
gcc and, when installed, clang); and the documentation of every EPOLLFORK_*
variable, compared with the table options.c prints (`make options`).
"""
import atexit
import os
import re
import shutil
import subprocess
import tempfile

from harness import case, check, Fail, ROOT, BUILD

SRC = os.path.join(ROOT, "src")

# The names the brief of the shim started with; wrap.c may add more wrappers
# (each must then be in exports.map too), but never lose one of these.
BASE_EXPORTS = set("""close close_range closefrom dup dup2 dup3 fcntl fcntl64 fork _Fork vfork
epoll_create epoll_create1 epoll_ctl epoll_wait epoll_pwait epoll_pwait2""".split())


def sh(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT, **kw)


_fresh = {}


def fresh_build():
    """`make BUILD=<tmp>` from scratch, once per run: the library, its UBSan and
    ASan variants and `make options`.  WARN in the Makefile has -Werror."""
    if "dir" in _fresh:
        if isinstance(_fresh["dir"], Fail):
            raise _fresh["dir"]
        return _fresh["dir"]
    d = tempfile.mkdtemp(prefix="epf-build-")
    atexit.register(shutil.rmtree, d, True)
    targets = ["all", d + "/ubsan/libepollfork.so", d + "/asan/libepollfork.so"]
    r = sh(["make", "-s", "BUILD=" + d] + targets)
    if r.returncode != 0:
        _fresh["dir"] = Fail("make BUILD=%s %s failed:\n%s%s" % (d, " ".join(targets), r.stdout[-3000:], r.stderr[-6000:]))
        raise _fresh["dir"]
    _fresh["dir"] = d
    return d


def wrapped_names():
    """Every libc name the sources define for export: EXPORT functions of
    wrap.c and wrap_uring.c, and .globl symbols of the assembly files."""
    names = set()
    for name in os.listdir(SRC):
        if name.startswith("wrap") and name.endswith(".c"):
            with open(os.path.join(SRC, name)) as f:
                names |= set(re.findall(r"^EXPORT\s+[\w\s\*]*?\b([A-Za-z_]\w*)\s*\(", f.read(), re.M))
    for name in os.listdir(SRC):
        if name.endswith(".S"):
            with open(os.path.join(SRC, name)) as f:
                names |= set(re.findall(r"^\s*\.globl\s+(\w+)", f.read(), re.M))
    return names


def public_api():
    with open(os.path.join(ROOT, "include", "epollfork.h")) as f:
        return set(re.findall(r"\b(epollfork_\w+)\s*\(", f.read()))


@case("static/cppcheck")
def _():
    r = sh(["make", "-s", "cppcheck"])
    check(r.returncode == 0, "make cppcheck failed (rc %d):\n%s%s" % (r.returncode, r.stdout[-4000:], r.stderr[-8000:]))


@case("static/werror-build-from-scratch")
def _():
    with open(os.path.join(ROOT, "Makefile")) as f:
        warn = re.search(r"^WARN\s*:?=(.*)$", f.read(), re.M)
    check(warn and {"-Wall", "-Wextra", "-Werror"} <= set(warn.group(1).split()),
          "the Makefile's WARN must hold -Wall -Wextra -Werror: %r" % (warn and warn.group(1)))
    d = fresh_build()
    for lib in ("libepollfork.so", "ubsan/libepollfork.so", "asan/libepollfork.so"):
        check(os.path.exists(os.path.join(d, lib)), "%s was not built in %s" % (lib, d))
    r = sh(["make", "-s", "BUILD=" + d, "options"])
    check(r.returncode == 0 and r.stdout.startswith("EPOLLFORK_"),
          "make BUILD=%s options failed:\n%s%s" % (d, r.stdout[-2000:], r.stderr[-4000:]))
    if shutil.which("clang"):
        d2 = tempfile.mkdtemp(prefix="epf-build-clang-")
        try:
            r = sh(["make", "-s", "BUILD=" + d2, "CC=clang", "all"])
            check(r.returncode == 0, "make CC=clang (-Werror) failed:\n%s%s" % (r.stdout[-2000:], r.stderr[-6000:]))
        finally:
            shutil.rmtree(d2, ignore_errors=True)
    else:
        print("    (clang is not installed: the clang build was skipped)")


@case("static/exports-exactly-the-wrapped-names")
def _():
    lib = os.path.join(fresh_build(), "libepollfork.so")
    r = sh(["nm", "-D", "--defined-only", lib])
    check(r.returncode == 0, "nm failed: %s" % r.stderr)
    exported = {line.split()[-1].split("@")[0] for line in r.stdout.splitlines() if line.strip()}
    wrapped = wrapped_names()
    api = {n for n in exported if n.startswith("epollfork_")}
    check(BASE_EXPORTS <= wrapped, "wrappers missing from the sources: %s" % sorted(BASE_EXPORTS - wrapped))
    missing = (wrapped | public_api()) - exported
    extra = exported - wrapped - api
    check(not missing and not extra, "exports differ: missing %s, unexpected %s" % (sorted(missing), sorted(extra)))
    check(api == public_api(), "epollfork_* exported %s, declared in include/epollfork.h %s"
          % (sorted(api), sorted(public_api())))
    with open(os.path.join(SRC, "exports.map")) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    m = re.search(r"global:(.*?)local:", text, re.S)
    check(m, "exports.map has no global:/local: sections")
    listed = {n for n in re.split(r"[\s;]+", m.group(1)) if n}
    listed_libc = {n for n in listed if not n.startswith("epollfork_")}
    check(listed_libc == wrapped and "epollfork_*" in listed,
          "exports.map lists %s beyond the wrappers and misses %s"
          % (sorted(listed_libc - wrapped), sorted(wrapped - listed_libc)))


@case("static/libunwind-is-not-a-dependency")
def _():
    lib = os.path.join(fresh_build(), "libepollfork.so")
    r = sh(["readelf", "-d", lib])
    needed = re.findall(r"\(NEEDED\).*\[(.*)\]", r.stdout)
    check(r.returncode == 0 and needed, "readelf -d: %s%s" % (r.stdout[-2000:], r.stderr))
    check(not [n for n in needed if "unwind" in n], "DT_NEEDED: %s (libunwind must be dlopen'ed RTLD_LOCAL)" % needed)
    r = sh(["ldd", lib])
    check("unwind" not in r.stdout, "ldd shows libunwind:\n%s" % r.stdout)
    r = sh(["nm", "-D", "--undefined-only", lib])
    bad = [l.split()[-1] for l in r.stdout.splitlines()
           if re.search(r"\b(unw_|_U[A-Za-z0-9]*_|_Unwind_)", l)]
    check(not bad, "the library references unwinder symbols directly: %s" % bad)


def option_table():
    out = os.path.join(BUILD, "tests")
    os.makedirs(out, exist_ok=True)
    exe = os.path.join(out, "print-options")
    core = sh(["make", "-s", "--no-print-directory", "core-srcs"]).stdout.split()
    cflags = subprocess.run(["pkg-config", "--cflags", "libunwind"], capture_output=True, text=True).stdout.split()
    r = sh(["cc", "-std=gnu11", "-g", "-Iinclude", "-Isrc"] + cflags +
           ["-o", exe, "tests/unit/print_options.c"] + core + ["-ldl", "-lpthread"])
    check(r.returncode == 0, "print_options build failed:\n%s" % r.stderr[-4000:])
    r = sh([exe])
    check(r.returncode == 0, "print-options failed: %s" % r.stderr)
    rows = [l.split("\t") for l in r.stdout.splitlines()]
    check(rows and all(len(x) == 3 for x in rows), "the table has name, default, help: %r" % r.stdout[:500])
    return rows


@case("static/every-option-documented")
def _():
    rows = option_table()
    readme = os.path.join(ROOT, "README.md")
    if not os.path.exists(readme):
        print("    SKIPPED: README.md does not exist yet; %d variables to document: %s"
              % (len(rows), " ".join(r[0] for r in rows)))
        return
    with open(readme) as f:
        text = f.read()
    problems = []
    for name, default, _help in rows:
        if not re.search(r"\b%s\b" % re.escape(name), text):
            problems.append("%s is not in README.md" % name)
            continue
        # A table row `| `NAME` | `default` | ... |` must give the same default.
        m = re.search(r"^\|\s*`?%s`?\s*\|\s*([^|]*?)\s*\|" % re.escape(name), text, re.M)
        if m:
            cell = m.group(1).strip().strip("`")
            ok = cell == default or (default == "" and cell.lower() in ("", "(none)", "none", "unset"))
            if not ok:
                problems.append("README.md gives %s the default %r, the code %r" % (name, cell, default))
    man = os.path.join(ROOT, "man", "epollfork.1")
    if os.path.exists(man):
        with open(man) as f:
            mtext = f.read().replace("\\-", "-").replace("\\_", "_")
        problems += ["%s is not in man/epollfork.1" % n for n, _d, _h in rows if n not in mtext]
    check(not problems, "\n".join(problems))


@case("static/one-version-everywhere")
def _():
    """include/epollfork_version.h is the one source: the library's
    epollfork_version(), the JSON records, the launcher (in the tree and as
    `make install` writes it) and `make version` all say the same."""
    with open(os.path.join(ROOT, "include", "epollfork_version.h")) as f:
        text = f.read()
    m = re.search(r'^#define EPOLLFORK_VERSION_STRING "([^"]+)"$', text, re.M)
    check(m, "no EPOLLFORK_VERSION_STRING in include/epollfork_version.h")
    ver = m.group(1)
    parts = [re.search(r"^#define EPOLLFORK_VERSION_%s (\d+)$" % k, text, re.M) for k in ("MAJOR", "MINOR", "PATCH")]
    check(all(parts) and ".".join(p.group(1) for p in parts) == ver,
          "MAJOR.MINOR.PATCH do not spell %s" % ver)
    r = sh(["make", "-s", "version"])
    check(r.stdout.strip() == ver, "make version says %r, the header %r" % (r.stdout.strip(), ver))
    r = sh([os.path.join(ROOT, "scripts", "epollfork"), "--version"])
    check(r.stdout.strip() == "epollfork " + ver, "launcher says %r" % r.stdout)
    d = tempfile.mkdtemp(prefix="epf-inst-")
    try:
        r = sh(["make", "-s", "install", "PREFIX=/usr", "DESTDIR=" + d])
        check(r.returncode == 0, "make install failed: %s%s" % (r.stdout, r.stderr))
        r = sh([os.path.join(d, "usr", "bin", "epollfork"), "--version"])
        check(r.stdout.strip() == "epollfork " + ver, "installed launcher says %r" % r.stdout)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    for page in ("epollfork.1", "epollfork.7"):
        with open(os.path.join(ROOT, "man", page)) as f:
            th = f.read().split(".TH ", 1)[1].split("\n", 1)[0]
        check('"epollfork %s"' % ver in th, "man/%s says %r" % (page, th))
    src = os.path.join(BUILD, "tests", "print_version.c")
    os.makedirs(os.path.dirname(src), exist_ok=True)
    with open(src, "w") as f:
        f.write('#include <stdio.h>\n#include "epollfork.h"\nint main(void){'
                'printf("%s %s\\n", EPOLLFORK_VERSION_STRING, EPOLLFORK_LOADED() ? epollfork_version() : "-");'
                'return 0;}\n')
    exe = src[:-2]
    r = sh(["cc", "-I" + os.path.join(ROOT, "include"), "-o", exe, src])
    check(r.returncode == 0, r.stderr)
    env = dict(os.environ, LD_PRELOAD=os.path.join(BUILD, "libepollfork.so"))
    r = sh([exe], env=env)
    check(r.stdout.split() == [ver, ver], "header/library say %r, expected %s twice" % (r.stdout, ver))


def layer_order():
    """The files of the shim, bottom layer first: the Makefile's core (ground,
    then rules), then the interposition layer."""
    core = sh(["make", "-s", "--no-print-directory", "core-srcs"]).stdout.split()
    return [os.path.splitext(os.path.basename(p))[0] for p in core] + ["init", "wrap", "wrap_uring",
                                                                       "vfork_x86_64"]


def symbol_graph(objdir, names):
    """file -> set of files whose global symbols it uses (from nm)."""
    defs, uses = {}, {}
    for n in names:
        out = sh(["nm", os.path.join(objdir, n + ".o")]).stdout
        uses[n] = set()
        for line in out.splitlines():
            p = line.split()
            if len(p) == 3 and p[1] in "TDBRVWG":
                defs[p[2]] = n
            elif len(p) == 2 and p[0] == "U":
                uses[n].add(p[1])
    return {n: {defs[s] for s in u if s in defs and defs[s] != n} for n, u in uses.items()}


@case("static/layers-have-no-circle-and-no-arrow-up")
def _():
    """docs/DESIGN.md draws the layers: a file calls only files below it (the
    order of `make core-srcs`, then init, wrap), so the dependency picture has
    no circle and no arrow that climbs back up; no source file over 700 lines."""
    order = layer_order()
    objdir = os.path.join(fresh_build(), "obj")
    missing = [n for n in order if not os.path.exists(os.path.join(objdir, n + ".o"))]
    check(not missing, "objects not built: %s" % missing)
    listed = {os.path.splitext(f)[0] for f in os.listdir(SRC) if f.endswith((".c", ".S"))}
    check(listed == set(order), "sources not placed in a layer: %s; placed but gone: %s"
          % (sorted(listed - set(order)), sorted(set(order) - listed)))
    g = symbol_graph(objdir, order)
    pos = {n: i for i, n in enumerate(order)}
    # init and wrap are one layer (the interposition layer): wrap calls ef_init
    top = {"init", "wrap", "wrap_uring", "vfork_x86_64"}
    up = sorted("%s -> %s" % (a, b) for a in g for b in g[a]
                if pos[b] > pos[a] and not (a in top and b in top))
    picture = "\n".join("%-12s -> %s" % (a, " ".join(sorted(g[a], key=pos.get))) for a in order)
    check(not up, "arrows that climb back up: %s\n%s" % (up, picture))
    # no circle: with no arrow up, none can exist; say it anyway (Tarjan-free check)
    seen, stack = set(), set()

    def visit(n, path):
        check(n not in stack, "circle: %s" % " -> ".join(path + [n]))
        if n in seen:
            return
        seen.add(n)
        stack.add(n)
        for m in g[n]:
            visit(m, path + [n])
        stack.discard(n)
    for n in order:
        visit(n, [])
    long_files = []
    for d, _dirs, files in os.walk(SRC):
        for f in sorted(files):
            with open(os.path.join(d, f)) as fh:
                n = sum(1 for _ in fh)
            if n > 700:
                long_files.append("%s (%d lines)" % (os.path.relpath(os.path.join(d, f), SRC), n))
    check(not long_files, "files over 700 lines: %s" % long_files)


@case("static/case-names-follow-file-names")
def _():
    """tests/test_NAME.py registers cases named NAME/...: a failing case
    names the file it lives in."""
    bad = []
    for f in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if not (f.startswith("test_") and f.endswith(".py")):
            continue
        prefix = f[len("test_"):-len(".py")] + "/"
        with open(os.path.join(ROOT, "tests", f)) as fh:
            for name in re.findall(r'\bcase\("([^"]+)"', fh.read()):
                if not name.startswith(prefix):
                    bad.append("%s: %s" % (f, name))
    check(not bad, "case names that do not start with their file's name:\n" + "\n".join(bad))
