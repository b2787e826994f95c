/*
 * test_pyframes.c - the parts of Python frames that need no interpreter: the
 * shared string store, stacks that carry a Python stack, the site rule, and
 * the renderers fed Python frames.
 *
 * The frames themselves are read from real interpreters by
 * tests/test_pyframes.py; here the store and the depot marker are fed what a
 * damaged or hostile registry could hold (any process of the tree can write
 * it: ids out of range, slots whose offset or length runs past the store, a
 * marker pointing at itself or at a native entry), and every read must give
 * "?" or nothing, never a crash.  The rendered report goes to
 * render-python.json and render-python.txt, which tests/test_unit.py parses.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "unit.h"

static int copy_is(uint32_t id, const char *want)
{
    char buf[EF_PYSTR_MAX + 1];
    ef_pystr_copy(id, buf, sizeof buf);
    return CHECKF(!strcmp(buf, want), "string %u is '%s', expected '%s'", id, buf, want);
}

/* ------------------------------------------------------------ the store */

static void g_pystrs(void)
{
    uint32_t a = ef_pystr_intern("/srv/app/worker.py", 18), b = ef_pystr_intern("handle", 6);
    CHECK(a && b && a != b && a <= EF_PYSTR_SLOTS && b <= EF_PYSTR_SLOTS);
    CHECK(ef_pystr_intern("/srv/app/worker.py", 18) == a && ef_pystr_intern("handle", 6) == b);
    copy_is(a, "/srv/app/worker.py");
    copy_is(b, "handle");
    CHECK(ef_pystr_intern("handlf", 6) != b && ef_pystr_intern("", 0));
    /* a short buffer is cut, still terminated */
    char small[4];
    ef_pystr_copy(a, small, sizeof small);
    CHECK(!strcmp(small, "/sr"));
    /* longer than EF_PYSTR_MAX: cut */
    static char big[3000];
    memset(big, 'x', sizeof big - 1);
    uint32_t c = ef_pystr_intern(big, sizeof big - 1);
    char out[EF_PYSTR_MAX + 1];
    ef_pystr_copy(c, out, sizeof out);
    CHECK(c && strlen(out) == EF_PYSTR_MAX);
    /* ids that are no string */
    copy_is(0, "?");
    copy_is(EF_PYSTR_SLOTS + 1, "?");
    copy_is(UINT32_MAX, "?");

    /* Damaged slots: offset or length past the store, a length past the
     * cut, a slot that never became ready. */
    struct ef_pystr_slot *s = ef_reg_elem(EF_T_PYSLOTS, a - 1);
    uint32_t off = s->off, len = s->len;
    s->off = EF_PYSTR_BYTES;
    copy_is(a, "?");
    s->off = EF_PYSTR_BYTES - 2;
    copy_is(a, "?");
    s->off = off;
    s->len = EF_PYSTR_MAX + 1;
    copy_is(a, "?");
    s->len = UINT32_MAX;
    copy_is(a, "?");
    s->len = len;
    atomic_store(&s->state, EF_DEPOT_WRITING);
    copy_is(a, "?");
    atomic_store(&s->state, EF_DEPOT_READY);
    copy_is(a, "/srv/app/worker.py");
    /* a slot whose bytes were changed under it is not the string any more:
     * interning the string again finds another slot */
    *(char *)ef_reg_elem(EF_T_PYBYTES, off) = '#';
    uint32_t a2 = ef_pystr_intern("/srv/app/worker.py", 18);
    CHECK(a2 && a2 != a);
    copy_is(a2, "/srv/app/worker.py");

    /* Shared by the tree: a string a child interned is the parent's too. */
    int pp[2];
    CHECK(pipe(pp) == 0);
    pid_t c2 = fork();
    if (c2 == 0) {
        uint32_t id = ef_pystr_intern("child.py", 8);
        CHECK(write(pp[1], &id, sizeof id) == (ssize_t)sizeof id);
        _exit(0);
    }
    reap(c2);
    uint32_t cid = 0;
    CHECK(read(pp[0], &cid, sizeof cid) == (ssize_t)sizeof cid);
    copy_is(cid, "child.py");
    CHECK(ef_pystr_intern("child.py", 8) == cid);
    close(pp[0]);
    close(pp[1]);

    /* Full: the counter says so (another process may have pushed it
     * anywhere); a new string gets 0, one notice, old ones still read. */
    uint32_t used = atomic_load(&ef_reg->pystr_used);
    atomic_store(&ef_reg->pystr_used, UINT32_MAX - 4);
    CHECK(ef_pystr_intern("never-stored", 12) == 0);
    CHECK(atomic_load(&ef_reg->pystr_used) == EF_PYSTR_BYTES);
    CHECK(ef_pystr_intern("never-either", 12) == 0);
    copy_is(b, "handle");
    char log[8192];
    read_file(unit_logpath, log, sizeof log);
    CHECK(count_lines_with(log, "Python file and function names is full") == 1);
    atomic_store(&ef_reg->pystr_used, used);
}

/* ------------------------------------------------------------- stacks */

SITE static uint32_t native_here(void)
{
    uint32_t id = ef_stack_capture(EF_SKIP_SHIM, __builtin_return_address(0));
    NOTAIL();
    return id;
}

/* The native frames every made-up stack below has. */
static uint32_t native_id;

/* A stack with native frames (native_id's) and Python frames (made up). */
static uint32_t with_py(const uint64_t *words, uint32_t nw)
{
    uint64_t pcs[EF_MAX_FRAMES];
    if (!native_id)
        native_id = native_here();
    uint32_t n = ef_depot_copy(native_id, pcs, EF_MAX_FRAMES);
    CHECK(n > 0);
    return ef_stack_store((const uintptr_t *)pcs, n, words, nw);
}

static void g_pystacks(void)
{
    /* no interpreter in this program: nothing, and no cost after the probe */
    uint64_t words[EF_MAX_FRAMES], key = 0;
    CHECK(ef_py_capture(words, EF_MAX_FRAMES, &key) == 0 && !ef_py_running());
    CHECK(ef_stack_python(native_here(), words, EF_MAX_FRAMES) == 0);

    uint64_t py[3] = {ef_py_word("/usr/lib/python3.11/selectors.py", 368, "unregister"),
                      ef_py_word("/srv/app/worker.py", 42, "handle"),
                      ef_py_word("/srv/app/main.py", 7, "<module>")};
    uint32_t id = with_py(py, 3);
    uint64_t pcs[EF_MAX_FRAMES];
    uint32_t n = ef_depot_copy(id, pcs, EF_MAX_FRAMES);
    uint64_t native[EF_MAX_FRAMES];
    CHECK(n > 0 && n == ef_depot_copy(native_id, native, EF_MAX_FRAMES) &&
          !memcmp(pcs, native, n * sizeof pcs[0]));
    for (uint32_t i = 0; i < n; i++)
        CHECKF((pcs[i] & ~0xffffffffull) != EF_PY_MARK, "frame %u is the marker", i);
    CHECK(ef_stack_python(id, words, EF_MAX_FRAMES) == 3 && !memcmp(words, py, sizeof py));
    CHECK(ef_stack_python(id, words, 2) == 2);
    CHECK(with_py(py, 3) == id && with_py(py, 2) != id && id != native_id);
    struct ef_pyframe f;
    ef_py_decode(py[1], &f);
    CHECK(!strcmp(f.file, "/srv/app/worker.py") && f.line == 42 && !strcmp(f.function, "handle"));
    ef_py_decode(0, &f);
    CHECK(!strcmp(f.file, "?") && !strcmp(f.function, "?") && f.line == 0);
    ef_py_decode(~0ull, &f);
    CHECK(!strcmp(f.file, "?") && f.line == 0x7fffffff);

    /* Damaged markers: past the depot, at the entry itself, at a native
     * entry (a marker inside), at an empty slot. */
    uintptr_t raw[3];
    memcpy(raw, pcs, 2 * sizeof raw[0]);
    raw[2] = (uintptr_t)(EF_PY_MARK | (EF_DEPOT_SLOTS + 5));
    CHECK(ef_stack_python(ef_depot_put(raw, 3), words, EF_MAX_FRAMES) == 0);
    raw[2] = (uintptr_t)(EF_PY_MARK | 0);
    CHECK(ef_stack_python(ef_depot_put(raw, 3), words, EF_MAX_FRAMES) == 0);
    raw[2] = (uintptr_t)(EF_PY_MARK | id);  /* id's entry ends with a marker itself */
    uint32_t nested = ef_depot_put(raw, 3);
    CHECK(nested && ef_stack_python(nested, words, EF_MAX_FRAMES) == 0);
    CHECK(ef_depot_copy(nested, pcs, EF_MAX_FRAMES) == 2);
    /* an entry whose marker names itself: found by probing its own slot */
    struct ef_depot_slot *d = ef_reg_elem(EF_T_DEPOT, nested - 1);
    *(uint64_t *)ef_reg_elem(EF_T_FRAMES, d->start + 2) = EF_PY_MARK | nested;
    CHECK(ef_stack_python(nested, words, EF_MAX_FRAMES) == 0);

    /* The library rule (README "Python frames"). */
    static const char *const lib[] = {
        "/usr/lib/python3.11/asyncio/base_events.py", "/usr/lib/python3/dist-packages/gevent/os.py",
        "/srv/venv/lib/python3.11/site-packages/flask/app.py", "/usr/local/lib/python3.12/x.py",
        "/opt/py/lib64/python3.9/os.py", "/root/.pyenv/versions/3.13.0/lib/python3.13/selectors.py",
        "<frozen importlib._bootstrap>", "/home/u/.local/lib/python3.11/site-packages/a.py"};
    static const char *const user[] = {"/srv/app/worker.py", "<string>", "<stdin>", "worker.py",
                                       "/srv/lib/pythonic/x.py", "/srv/lib/python/x.py",
                                       "/srv/libpython3.11/x.py", "/home/u/lib/python3x/y.py"};
    for (size_t i = 0; i < sizeof lib / sizeof lib[0]; i++)
        CHECKF(ef_py_is_library(lib[i]), "%s is the library", lib[i]);
    for (size_t i = 0; i < sizeof user / sizeof user[0]; i++)
        CHECKF(!ef_py_is_library(user[i]), "%s is the user's", user[i]);
    char site[256];
    ef_py_decode(py[1], &f);
    ef_py_site(&f, site, sizeof site);
    CHECK(!strcmp(site, "worker.py:42(handle)"));

    /* The report's site: the innermost user frame; all library: native. */
    struct ef_report r;
    ef_report_init(&r, EF_KIND_SHARED_CTL, NULL, 5);
    r.stacks[EF_ST_CALL] = id;
    struct ef_symctx *c = ef_sym_begin();
    ef_report_site(&r, c, site, sizeof site);
    CHECKF(!strcmp(site, "worker.py:42(handle)"), "site %s", site);
    r.stacks[EF_ST_CALL] = with_py(py, 1);
    ef_report_site(&r, c, site, sizeof site);
    CHECKF(!strncmp(site, "native_here(", 12), "all library: the native site, not %s", site);
    ef_sym_end(c);
}

/* ------------------------------------------------------------- renderers */

static void g_pyrender(void)
{
    uint64_t call[3] = {ef_py_word("/usr/lib/python3.11/selectors.py", 368, "unregister"),
                        ef_py_word("/srv/app/worker.py", 42, "handle"),
                        ef_py_word("/srv/odd\nname \"q\".py", 9, "f\tg")};
    uint64_t fork_[1] = {ef_py_word("/srv/app/worker.py", 30, "main")};
    struct ef_report r;
    ef_report_init(&r, EF_KIND_SHARED_CTL, NULL, 5);
    r.pid = r.other_pid = r.owner_pid = 4242;
    r.modifier_pid = 4243;
    r.op = EPOLL_CTL_DEL;
    r.fd = 7;
    r.stacks[EF_ST_CALL] = with_py(call, 3);
    r.stacks[EF_ST_FORK] = with_py(fork_, 1);
    r.stacks[EF_ST_CREATE] = native_here(); /* no Python frames: no python_stacks key */
    render_both("python", &r);

    static char text[256 * 1024];
    ef_opt.format = EF_FMT_TEXT;
    ef_report_render(&r, text, sizeof text);
    const char *call_title = strstr(text, "the change:");
    const char *py0 = strstr(text, "==4242==    File \"/usr/lib/python3.11/selectors.py\", line 368, in unregister\n");
    const char *py1 = strstr(text, "==4242==    File \"/srv/app/worker.py\", line 42, in handle\n");
    const char *nat = call_title ? strstr(call_title, "#0 0x") : NULL;
    CHECKF(call_title && py0 && py1 && nat && call_title < py0 && py0 < py1 && py1 < nat,
           "Python frames first, innermost first, then the native ones:\n%s", text);
    CHECK(strstr(text, "File \"/srv/odd\\nname \"q\".py\", line 9, in f\\tg\n"));
    CHECK(strstr(text, "==4242==    File \"/srv/app/worker.py\", line 30, in main\n"));
    CHECK(strstr(text, " site=worker.py:42(handle)\n"));

    static char json[256 * 1024];
    ef_opt.format = EF_FMT_JSON;
    ef_report_render(&r, json, sizeof json);
    CHECK(strstr(json, ",\"site\":\"worker.py:42(handle)\""));
    CHECK(strstr(json, "\"python_stacks\":{\"call\":[{\"file\":\"/usr/lib/python3.11/selectors.py\","
                       "\"line\":368,\"function\":\"unregister\"},{\"file\":\"/srv/app/worker.py\","
                       "\"line\":42,\"function\":\"handle\"},{\"file\":\"/srv/odd\\u000aname \\\"q\\\".py\","
                       "\"line\":9,\"function\":\"f\\u0009g\"}],\"fork\":[{\"file\":\"/srv/app/worker.py\","
                       "\"line\":30,\"function\":\"main\"}]}"));
    /* stacks unchanged: native frames only */
    CHECK(strstr(json, "\"stacks\":{\"call\":[{\"pc\":"));

    /* No Python frames anywhere: no python_stacks key at all. */
    r.stacks[EF_ST_CALL] = r.stacks[EF_ST_FORK] = native_here();
    ef_report_render(&r, json, sizeof json);
    CHECK(!strstr(json, "python_stacks") && strstr(json, "\"site\":\"native_here("));
    ef_opt.format = EF_FMT_TEXT;
}

const struct group pyframes_groups[] = {
    {"pystrs", g_pystrs, TRACK},
    {"pystacks", g_pystacks, TRACK | QUIET},
    {"pyrender", g_pyrender, TRACK | QUIET},
    {NULL, NULL, 0},
};
