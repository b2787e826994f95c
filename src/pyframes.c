/*
 * pyframes.c - the Python frames of the calling thread, and the shared store
 * of the strings that name them.
 *
 * Most programs that hit these bugs are Python (asyncio, uvloop, gevent,
 * eventlet, Twisted, gunicorn and uWSGI apps), and for them the native stack
 * is twenty frames of _PyEval_EvalFrameDefault: it never names the user's
 * line.  So every stack the shim captures also takes the Python frames of the
 * thread that made the call, innermost first, as (file, line, function).
 *
 * How, and why this way (docs/EVIDENCE.md, "Python frames"):
 *  - "Is Python here?" is decided once per process, at the first capture:
 *    dlsym(RTLD_DEFAULT, "PyGILState_GetThisThreadState"), exported by
 *    Debian's /usr/bin/python3.11 and by every shared libpython.  A program
 *    without it (any C program) pays one look in the loaded objects' symbol
 *    tables (ef_sym_anywhere: a failing dlsym would malloc), once, and a
 *    load and a branch per capture after that.
 *  - The frames are read directly from memory, not through
 *    _Py_DumpTraceback(): that one writes each frame with several
 *    write() calls to an fd (0.3-1.7 ms a dump to a terminal), is not
 *    exported by 3.9, 3.10 or 3.13, and would need an fd of ours per thread.
 *    Reading is what faulthandler's dump does, without the fd: the thread's
 *    PyThreadState (PyGILState_GetThisThreadState: this thread's, whoever
 *    holds the GIL), its frame chain, each frame's code object (co_filename,
 *    co_name) and instruction, and PyCode_Addr2Line() for the line (a pure
 *    function of the code object: faulthandler calls it from signal
 *    handlers).  No lock, no allocation, no syscall: safe with the GIL
 *    released, in any thread, and in the child of a multithreaded parent,
 *    where native unwinding is not (stack.c).  The frames are this thread's
 *    own and it is inside our wrapper, so they cannot change under us;
 *    greenlet and eventlet switch the thread state's frame pointer with the
 *    greenlet, so what we read is the running greenlet's.
 *  - Layouts are version-specific: one row per CPython minor version below
 *    (3.8 to 3.13, 64-bit, default build), whose offsets were printed by a
 *    program compiled against that version's own headers (tests/scenarios/pyoffsets.c;
 *    `pyframes/offsets-match-the-headers` checks them again).  At the probe the
 *    row is checked against the running interpreter (the type objects'
 *    tp_basicsize and tp_name, their ob_type); every frame's code object and
 *    every string is type-checked before it is read.  Any other version, or a
 *    check that fails, means "no Python frames", never a guess.
 *
 * The strings live in the registry (tables EF_T_PYSLOTS, EF_T_PYBYTES): the process that
 * prints a report is often not the one that captured it (the parent reports
 * its child's call), so a Python frame is one 64-bit word of two string ids
 * and a line, and stack.c stores a Python stack as such words in its depot.
 * The store is untrusted input like the rest of the registry: every id,
 * offset and length read back is checked before use.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "ef.h"

/* ---------------------------------------------------------------- layouts */

enum frame_kind {
    FR_OBJECT = 0,  /* 3.8-3.10: PyFrameObject chain, tstate->frame, f_back */
    FR_INTERP,      /* 3.11+: _PyInterpreterFrame chain, ->previous */
};

/* One CPython minor version (x86-64 and other LP64 targets, default build). */
struct layout {
    unsigned minor;             /* 3.minor */
    enum frame_kind kind;
    uint16_t ts_frame;          /* tstate: frame (3.8-3.10), cframe (3.11, 3.12), current_frame (3.13) */
    int16_t cf_current;         /* _PyCFrame.current_frame; -1: ts_frame is the frame itself */
    uint16_t f_prev;            /* f_back / previous */
    uint16_t f_code;            /* f_code / f_executable */
    uint16_t f_instr;           /* f_lasti (int) / prev_instr / instr_ptr */
    uint16_t f_owner;           /* FR_INTERP: owner (char) */
    int8_t cstack_owner;        /* FR_INTERP: owner of the C-stack shim frames, -1 none */
    uint8_t lasti_units;        /* FR_OBJECT: f_lasti counts code units (3.10), not bytes */
    uint16_t co_filename, co_name, co_code, co_firsttraceable;
    uint16_t code_basicsize;    /* PyCode_Type.tp_basicsize */
    uint16_t frame_basicsize;   /* FR_OBJECT: PyFrame_Type.tp_basicsize */
    uint16_t str_ascii;         /* sizeof(PyASCIIObject): compact ASCII data follows */
    uint16_t str_compact;       /* sizeof(PyCompactUnicodeObject): compact data follows */
    uint16_t str_basicsize;     /* PyUnicode_Type.tp_basicsize */
};

/* Printed by tests/scenarios/pyoffsets.c against each version's headers (pyenv 3.8.18,
 * 3.9.18, 3.10.13, 3.11.7, 3.12.1, 3.13.0; Debian's 3.11.2 agrees with
 * 3.11.7). */
static const struct layout layouts[] = {
    {8, FR_OBJECT, 24, -1, 24, 32, 104, 0, -1, 0, 104, 112, 0, 0, 176, 368, 48, 72, 80},
    {9, FR_OBJECT, 24, -1, 24, 32, 104, 0, -1, 0, 104, 112, 0, 0, 176, 368, 48, 72, 80},
    {10, FR_OBJECT, 24, -1, 24, 32, 96, 0, -1, 1, 104, 112, 0, 0, 176, 360, 48, 72, 80},
    {11, FR_INTERP, 56, 8, 48, 32, 56, 69, -1, 0, 112, 120, 184, 168, 184, 0, 48, 72, 80},
    {12, FR_INTERP, 56, 0, 8, 0, 56, 70, 3, 0, 112, 120, 192, 176, 192, 0, 40, 56, 64},
    {13, FR_INTERP, 72, -1, 8, 0, 56, 70, 3, 0, 112, 120, 200, 184, 200, 0, 40, 56, 64},
};

/* The same in every version listed: the object header, the type object's
 * first fields, the unicode object's length and state. */
#define OB_TYPE 8
#define OB_SIZE 16
#define TP_NAME 24
#define TP_BASICSIZE 32
#define STR_LENGTH 16
#define STR_STATE 32
#define FRAME_OWNED_BY_GENERATOR 1

EF_HOT _Atomic int ef_py_state;                /* enum ef_py_state */
static const struct layout *L;
static void *(*get_tstate)(void);
static int (*addr2line)(void *code, int addr);
static uintptr_t code_type, str_type, frame_type;

/* A pointer we may read through: user space, aligned, not NULL. */
static inline int ok_ptr(uintptr_t p)
{
    return p >= 4096 && p < (1ull << 47) && !(p & 7);
}

static inline uintptr_t rd(uintptr_t base, unsigned off)
{
    return *(const uintptr_t *)(base + off);
}

static int type_is(uintptr_t type, uintptr_t type_type, const char *name, long basicsize)
{
    if (!ok_ptr(type) || rd(type, OB_TYPE) != type_type)
        return 0;
    uintptr_t n = rd(type, TP_NAME);
    return n && !strcmp((const char *)n, name) && (long)rd(type, TP_BASICSIZE) == basicsize;
}

/* 3.minor of the interpreter in this process, 0 unknown. */
static unsigned python_minor(void)
{
    const unsigned long *hex = dlsym(RTLD_DEFAULT, "Py_Version"); /* 3.11+ */
    if (hex)
        return (*hex >> 24) == 3 ? (unsigned)((*hex >> 16) & 0xff) : 0;
    const char *(*version)(void) = (const char *(*)(void))dlsym(RTLD_DEFAULT, "Py_GetVersion");
    const char *v = version ? version() : NULL;
    if (!v || v[0] != '3' || v[1] != '.')
        return 0;
    return (unsigned)strtoul(v + 2, NULL, 10);
}

EF_INIT_TEXT static void probe(void)
{
    int expect = EF_PY_UNPROBED;
    if (!atomic_compare_exchange_strong(&ef_py_state, &expect, EF_PY_PROBING))
        return; /* another thread probes: no frames this time */
    int state = EF_PY_ABSENT;
    /* a failing dlsym mallocs: ask the symbol tables first (real.c) */
    if (ef_sym_anywhere("PyGILState_GetThisThreadState") == 0) {
        atomic_store_explicit(&ef_py_state, state, memory_order_release);
        return;
    }
    get_tstate = (void *(*)(void))dlsym(RTLD_DEFAULT, "PyGILState_GetThisThreadState");
    unsigned minor = get_tstate ? python_minor() : 0;
    for (size_t i = 0; minor && i < sizeof layouts / sizeof layouts[0]; i++)
        if (layouts[i].minor == minor)
            L = &layouts[i];
    if (L) {
        uintptr_t type_type = (uintptr_t)dlsym(RTLD_DEFAULT, "PyType_Type");
        code_type = (uintptr_t)dlsym(RTLD_DEFAULT, "PyCode_Type");
        str_type = (uintptr_t)dlsym(RTLD_DEFAULT, "PyUnicode_Type");
        frame_type = (uintptr_t)dlsym(RTLD_DEFAULT, "PyFrame_Type");
        addr2line = (int (*)(void *, int))dlsym(RTLD_DEFAULT, "PyCode_Addr2Line");
        /* the row must describe this interpreter: a free-threaded build (its
         * object header is longer) or a patched one fails here */
        if (addr2line && ok_ptr(type_type) && rd(type_type, OB_TYPE) == type_type &&
            type_is(code_type, type_type, "code", L->code_basicsize) &&
            type_is(str_type, type_type, "str", L->str_basicsize) &&
            (L->kind != FR_OBJECT || type_is(frame_type, type_type, "frame", L->frame_basicsize)))
            state = EF_PY_READY;
    }
    atomic_store_explicit(&ef_py_state, state, memory_order_release);
}

/* ------------------------------------------------------------ frame walk */

struct pyfr {
    uintptr_t code;
    int addr;                   /* byte offset of the instruction, -1 unknown */
};

#define WALK_STEPS 256          /* frames looked at, skipped ones included */

/* The innermost max frames of this thread: their code objects and
 * instruction offsets; *key mixes what identifies them.  No string is read
 * and no line computed here (the cheap pass of a registration). */
static int walk(struct pyfr *out, int max, uint64_t *key)
{
    uintptr_t ts = (uintptr_t)get_tstate();
    if (!ok_ptr(ts))
        return 0;
    uintptr_t f = rd(ts, L->ts_frame);
    if (L->cf_current >= 0)
        f = ok_ptr(f) ? rd(f, (unsigned)L->cf_current) : 0;
    uint64_t k = 0x50595354ull; /* "PYST" */
    int n = 0;
    for (int steps = 0; ok_ptr(f) && n < max && steps < WALK_STEPS; steps++) {
        uintptr_t next = rd(f, L->f_prev), code, instr;
        int addr;
        if (L->kind == FR_OBJECT) {
            if (rd(f, OB_TYPE) != frame_type)
                break;
            code = rd(f, L->f_code);
            int lasti = *(const int *)(f + L->f_instr);
            instr = (uintptr_t)(unsigned)lasti;
            addr = lasti < 0 ? -1 : L->lasti_units ? lasti * 2 : lasti;
        } else {
            int owner = *(const char *)(f + L->f_owner);
            if (owner == L->cstack_owner) { /* a C-stack shim frame: no code */
                f = next;
                continue;
            }
            code = rd(f, L->f_code);
            instr = rd(f, L->f_instr);
            if (!ok_ptr(code) || rd(code, OB_TYPE) != code_type) {
                f = next;
                continue;
            }
            long units = ((long)instr - (long)(code + L->co_code)) / 2;
            /* a frame still in its prologue (the interpreter's
             * _PyFrame_IsIncomplete): not shown by Python's tracebacks either */
            if (owner != FRAME_OWNED_BY_GENERATOR &&
                units < *(const int *)(code + L->co_firsttraceable)) {
                f = next;
                continue;
            }
            long size = (long)rd(code, OB_SIZE); /* in code units */
            addr = units >= 0 && units < size ? (int)units * 2 : -1;
        }
        if (!ok_ptr(code) || rd(code, OB_TYPE) != code_type)
            break;
        out[n++] = (struct pyfr){code, addr};
        k = ef_mix(ef_mix(k, code), instr);
        f = next;
    }
    *key = ef_mix(k, (uint64_t)n);
    return n;
}

/* A str object as UTF-8 (compact strings only: every code object's names
 * are); its length, -1 when it is not one we can read. */
static int read_str(uintptr_t s, char *buf, size_t cap)
{
    if (!ok_ptr(s) || rd(s, OB_TYPE) != str_type || cap < 5)
        return -1;
    uint32_t state = *(const uint32_t *)(s + STR_STATE);
    unsigned kind = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1;
    long len = (long)rd(s, STR_LENGTH);
    if (!compact || len < 0)
        return -1;
    size_t k = 0;
    if (ascii || kind == 1) {
        const unsigned char *d = (const unsigned char *)(s + (ascii ? L->str_ascii : L->str_compact));
        for (long i = 0; i < len && k + 3 < cap; i++) {
            if (d[i] < 0x80) {
                buf[k++] = (char)d[i];
            } else { /* latin-1 */
                buf[k++] = (char)(0xc0 | d[i] >> 6);
                buf[k++] = (char)(0x80 | (d[i] & 0x3f));
            }
        }
    } else if (kind == 2 || kind == 4) {
        const unsigned char *d = (const unsigned char *)(s + L->str_compact);
        for (long i = 0; i < len && k + 5 < cap; i++) {
            uint32_t c = kind == 2 ? ((const uint16_t *)d)[i] : ((const uint32_t *)d)[i];
            if (c < 0x80) {
                buf[k++] = (char)c;
            } else if (c < 0x800) {
                buf[k++] = (char)(0xc0 | c >> 6);
                buf[k++] = (char)(0x80 | (c & 0x3f));
            } else if (c < 0x10000) {
                buf[k++] = (char)(0xe0 | c >> 12);
                buf[k++] = (char)(0x80 | ((c >> 6) & 0x3f));
                buf[k++] = (char)(0x80 | (c & 0x3f));
            } else {
                buf[k++] = (char)(0xf0 | (c >> 18 & 0x7));
                buf[k++] = (char)(0x80 | ((c >> 12) & 0x3f));
                buf[k++] = (char)(0x80 | ((c >> 6) & 0x3f));
                buf[k++] = (char)(0x80 | (c & 0x3f));
            }
        }
    } else {
        return -1;
    }
    buf[k] = 0;
    return (int)k;
}

static uint32_t intern_obj(uintptr_t s)
{
    char buf[EF_PYSTR_MAX + 1];
    int n = read_str(s, buf, sizeof buf);
    return n < 0 ? 0 : ef_pystr_intern(buf, (uint32_t)n);
}

int ef_py_running(void)
{
    if (atomic_load_explicit(&ef_py_state, memory_order_acquire) != EF_PY_READY)
        return 0; /* not probed yet: the first capture probes */
    uintptr_t ts = (uintptr_t)get_tstate();
    if (!ok_ptr(ts))
        return 0;
    uintptr_t f = rd(ts, L->ts_frame);
    if (L->cf_current >= 0)
        f = ok_ptr(f) ? rd(f, (unsigned)L->cf_current) : 0;
    return ok_ptr(f);
}

EF_INIT_TEXT void ef_py_probe(void)
{
    if (atomic_load_explicit(&ef_py_state, memory_order_acquire) == EF_PY_UNPROBED)
        probe();
}

int ef_py_capture(uint64_t *words, int max, uint64_t *key)
{
    int st = atomic_load_explicit(&ef_py_state, memory_order_acquire);
    if (EF_UNLIKELY(st == EF_PY_UNPROBED)) {
        probe();
        st = atomic_load_explicit(&ef_py_state, memory_order_acquire);
    }
    if (st != EF_PY_READY || max <= 0)
        return 0;
    struct pyfr fr[EF_MAX_FRAMES];
    uint64_t k;
    int n = walk(fr, max < EF_MAX_FRAMES ? max : EF_MAX_FRAMES, &k);
    if (!n)
        return 0;
    if (k == *key)
        return -1; /* the same frames as the caller's last capture */
    *key = k;
    for (int i = 0; i < n; i++) {
        int line = addr2line((void *)fr[i].code, fr[i].addr);
        uint32_t file = intern_obj(rd(fr[i].code, L->co_filename));
        uint32_t func = intern_obj(rd(fr[i].code, L->co_name));
        words[i] = ef_py_word_of(file, line, func);
    }
    return n;
}

/* ---------------------------------------------------------- string store */

static uint64_t hash_bytes(const char *s, uint32_t n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ull;
    }
    return h ? h : 1;
}

/* Where the bytes of string id are, after checking the slot: 0 when the id
 * is unknown or its slot does not hold together. */
static const char *pystr_at(uint32_t id, uint32_t *len)
{
    if (!ef_reg || !id || id > EF_PYSTR_SLOTS)
        return NULL;
    struct ef_pystr_slot *sl = ef_reg_elem(EF_T_PYSLOTS, id - 1);
    if (!sl || atomic_load_explicit(&sl->state, memory_order_acquire) != EF_DEPOT_READY)
        return NULL;
    uint32_t off = *(volatile uint32_t *)&sl->off, n = *(volatile uint32_t *)&sl->len;
    if (n > EF_PYSTR_MAX)
        return NULL;
    if (n == 0) {
        *len = 0;
        return "";
    }
    const char *b = ef_reg_span(EF_T_PYBYTES, off, n);
    if (b)
        *len = n;
    return b;
}

uint32_t ef_pystr_intern(const char *s, uint32_t n)
{
    struct ef_registry *r = ef_reg;
    if (!r)
        return 0;
    if (n > EF_PYSTR_MAX)
        n = EF_PYSTR_MAX;
    uint64_t h = hash_bytes(s, n);
    for (uint32_t probe_ = 0; probe_ < 64; probe_++) {
        uint32_t i = (uint32_t)(h + probe_) & (EF_PYSTR_SLOTS - 1);
        struct ef_pystr_slot *sl = ef_reg_elem(EF_T_PYSLOTS, i);
        if (!sl)
            break;
        uint32_t st = atomic_load_explicit(&sl->state, memory_order_acquire);
        for (int spin = 0; st == EF_DEPOT_WRITING && spin < 2000; spin++) {
            ef_cpu_relax();
            st = atomic_load_explicit(&sl->state, memory_order_acquire);
        }
        if (st == EF_DEPOT_READY) {
            uint32_t have;
            const char *b = pystr_at(i + 1, &have);
            if (atomic_load_explicit(&sl->hash, memory_order_relaxed) == h && b && have == n &&
                !memcmp(b, s, n))
                return i + 1;
            continue;
        }
        if (st != EF_DEPOT_EMPTY || !atomic_compare_exchange_strong(&sl->state, &st, EF_DEPOT_WRITING))
            continue;
        /* a string never splits across chunks of the byte store */
        uint32_t off = n ? ef_reg_reserve(EF_T_PYBYTES, &r->pystr_used, n) : 0;
        char *dst = n && off != UINT32_MAX ? ef_reg_span(EF_T_PYBYTES, off, n) : NULL;
        if (n && !dst) {
            atomic_store(&sl->state, EF_DEPOT_EMPTY);
            break;
        }
        if (n)
            memcpy(dst, s, n);
        sl->off = off;
        sl->len = n;
        atomic_store_explicit(&sl->hash, h, memory_order_relaxed);
        atomic_store_explicit(&sl->state, EF_DEPOT_READY, memory_order_release);
        return i + 1;
    }
    if (ef_notice_once(EF_NOTICE_PYSTR_FULL))
        ef_log_notice("epollfork: the store of Python file and function names is full; new "
                      "ones are shown as \"?\"");
    return 0;
}

void ef_pystr_copy(uint32_t id, char *buf, size_t cap)
{
    uint32_t n = 0;
    const char *b = pystr_at(id, &n);
    if (!cap)
        return;
    if (!b) {
        ef_fmt(buf, cap, "?");
        return;
    }
    if (n >= cap)
        n = (uint32_t)cap - 1;
    memcpy(buf, b, n);
    buf[n] = 0;
}

/* -------------------------------------------------------------- frames */

uint64_t ef_py_word_of(uint32_t file, int line, uint32_t function)
{
    uint32_t l = line > 0 ? (uint32_t)line : 0;
    return (uint64_t)(file & 0xffff) << 48 | (uint64_t)(function & 0xffff) << 32 | l;
}

uint64_t ef_py_word(const char *file, int line, const char *function)
{
    return ef_py_word_of(ef_pystr_intern(file, (uint32_t)strlen(file)), line,
                         ef_pystr_intern(function, (uint32_t)strlen(function)));
}

void ef_py_decode(uint64_t word, struct ef_pyframe *out)
{
    ef_pystr_copy((uint32_t)(word >> 48), out->file, sizeof out->file);
    ef_pystr_copy((uint32_t)(word >> 32) & 0xffff, out->function, sizeof out->function);
    out->line = (int)(word & 0x7fffffff);
}

/* The standard library (/usr/lib/python3.11/..., any .../lib[64]/pythonX[.Y]/,
 * frozen modules) and installed packages (site-packages, dist-packages): not
 * the user's own code. */
int ef_py_is_library(const char *file)
{
    if (file[0] == '<') /* "<frozen runpy>" is the stdlib; "<string>", "<stdin>" the user's */
        return !strncmp(file, "<frozen ", 8);
    if (strstr(file, "/site-packages/") || strstr(file, "/dist-packages/"))
        return 1;
    for (const char *p = strstr(file, "/lib"); p; p = strstr(p + 1, "/lib")) {
        const char *q = p + 4;
        if (!strncmp(q, "64", 2))
            q += 2;
        if (strncmp(q, "/python", 7) || q[7] < '0' || q[7] > '9')
            continue;
        for (q += 7; (*q >= '0' && *q <= '9') || *q == '.'; q++)
            ;
        if (*q == '/')
            return 1;
    }
    return 0;
}

void ef_py_site(const struct ef_pyframe *f, char *buf, size_t len)
{
    const char *base = strrchr(f->file, '/');
    ef_fmt(buf, len, "%s:%d(%s)", base ? base + 1 : f->file, f->line, f->function);
}
