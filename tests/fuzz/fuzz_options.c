/*
 * fuzz_options.c - libFuzzer target: the EPOLLFORK_* parser (src/options.c).
 *
 * The input is an environment: lines (or NUL-separated strings) such as
 * `EPOLLFORK_LOG=/x`.  Whatever they hold, the parser must not crash, must
 * leave every option valid (a depth in range, a NUL-terminated path), and
 * every complaint it writes must be a single line (no value can forge a line
 * of its own).  Built by `make fuzz` (clang, libFuzzer, ASan, UBSan).
 */
#include <stdlib.h>
#include <string.h>

#include "ef.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    char *copy = malloc(size + 1);
    char *envp[64];
    int n = 0;
    memcpy(copy, data, size);
    copy[size] = 0;
    for (char *p = copy, *end = copy + size; p < end && n < 63;) {
        envp[n++] = p;
        size_t len = strcspn(p, "\n");
        p[len] = 0;
        p += len + 1;
    }
    envp[n] = NULL;
    char err[4096];
    ef_options_parse(envp, err, sizeof err);
    if (ef_opt.stack_depth < 1 || ef_opt.stack_depth > EF_MAX_FRAMES)
        abort();
    /* the two paths are kept in 4 KiB buffers of the parser's own (or are
     * its default literals), never in the environment it was handed */
    if (!ef_opt.log || !ef_opt.suppressions || strnlen(ef_opt.log, 4096) >= 4096 ||
        strnlen(ef_opt.suppressions, 4096) >= 4096)
        abort();
    for (int i = 0; i < n; i++)
        if ((ef_opt.log >= envp[i] && ef_opt.log <= envp[i] + strlen(envp[i])) ||
            (ef_opt.suppressions >= envp[i] && ef_opt.suppressions <= envp[i] + strlen(envp[i])))
            abort();
    /* every complaint is one line, and none holds a control character */
    for (const char *p = err; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\n')
            abort();
    free(copy);
    return 0;
}
