/*
 * pyoffsets.c - print the row of src/pyframes.c's layout table for the
 * CPython whose headers this is compiled against (Py_BUILD_CORE, for the
 * internal frame structures).
 *
 * pyframes.c reads a thread's frames without the interpreter's help, so its
 * offsets must be the interpreter's own: tests/test_pyframes.py
 * (`pyframes/offsets-match-the-headers`) compiles this against every Python
 * whose headers it finds (Debian's python3.11-dev; pyenv builds when
 * present) and compares the line it prints with the table.
 */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <frameobject.h>
#if PY_VERSION_HEX >= 0x030B0000
#include "internal/pycore_frame.h"
#endif
#include <stddef.h>
#include <stdio.h>

int main(void)
{
    unsigned minor = (PY_VERSION_HEX >> 16) & 0xff;
#if PY_VERSION_HEX >= 0x030B0000
    const char *kind = "FR_INTERP";
#if PY_VERSION_HEX >= 0x030D0000
    size_t ts_frame = offsetof(PyThreadState, current_frame);
    long cf_current = -1;
    size_t f_code = offsetof(_PyInterpreterFrame, f_executable);
    size_t f_instr = offsetof(_PyInterpreterFrame, instr_ptr);
#else
    size_t ts_frame = offsetof(PyThreadState, cframe);
    long cf_current = (long)offsetof(_PyCFrame, current_frame);
    size_t f_code = offsetof(_PyInterpreterFrame, f_code);
    size_t f_instr = offsetof(_PyInterpreterFrame, prev_instr);
#endif
#if PY_VERSION_HEX >= 0x030C0000
    int cstack_owner = FRAME_OWNED_BY_CSTACK;
#else
    int cstack_owner = -1;
#endif
    size_t f_prev = offsetof(_PyInterpreterFrame, previous);
    size_t f_owner = offsetof(_PyInterpreterFrame, owner);
    int lasti_units = 0;
    size_t co_code = offsetof(PyCodeObject, co_code_adaptive);
    size_t co_firsttraceable = offsetof(PyCodeObject, _co_firsttraceable);
    size_t code_basicsize = offsetof(PyCodeObject, co_code_adaptive);
    size_t frame_basicsize = 0;
#else
    const char *kind = "FR_OBJECT";
    size_t ts_frame = offsetof(PyThreadState, frame);
    long cf_current = -1;
    size_t f_prev = offsetof(PyFrameObject, f_back);
    size_t f_code = offsetof(PyFrameObject, f_code);
    size_t f_instr = offsetof(PyFrameObject, f_lasti);
    size_t f_owner = 0;
    int cstack_owner = -1;
    int lasti_units = PY_VERSION_HEX >= 0x030A0000; /* 3.10 counts code units */
    size_t co_code = 0, co_firsttraceable = 0;
    size_t code_basicsize = sizeof(PyCodeObject);
    size_t frame_basicsize = sizeof(PyFrameObject);
#endif
    printf("{%u, %s, %zu, %ld, %zu, %zu, %zu, %zu, %d, %d, %zu, %zu, %zu, %zu, %zu, %zu, %zu, %zu, "
           "%zu},\n",
           minor, kind, ts_frame, cf_current, f_prev, f_code, f_instr, f_owner, cstack_owner,
           lasti_units, offsetof(PyCodeObject, co_filename), offsetof(PyCodeObject, co_name),
           co_code, co_firsttraceable, code_basicsize, frame_basicsize, sizeof(PyASCIIObject),
           sizeof(PyCompactUnicodeObject), sizeof(PyUnicodeObject));
    return 0;
}
