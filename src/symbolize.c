/*
 * symbolize.c - addresses to `function (module+0xoffset)`, only at report time.
 *
 * dladdr() knows only exported symbols, so static functions and main() of a
 * PIE come back unnamed; libunwind's unw_get_proc_name() reads .symtab but
 * costs ~60 us a frame, mallocs and calls close() through the PLT
 * (docs/EVIDENCE.md).
 * So we use dladdr1() for the module and its load bias (cheap, safe in a fork
 * child) and read the ELF symbol table ourselves from an mmap of the file:
 * .symtab when present, else .dynsym, else the separate debug file that
 * /usr/lib/debug/.build-id holds.  Nothing here mallocs.  `offset` is pc minus
 * the load bias, i.e. an ELF virtual address that addr2line accepts as is.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ef.h"

struct elf_syms {
    void *map;
    size_t size;
    const ElfW(Sym) *syms;
    size_t nsyms;
    const char *str;
    size_t strsz;
};

struct mod {
    uintptr_t bias;
    char path[512];
    struct elf_syms s;
    int loaded;
};

#define NMOD 24
struct ef_symctx {
    struct mod mods[NMOD];
    int n;
    char exe[512];
};

static int in_map(const struct elf_syms *s, const void *p, size_t len)
{
    /* Integer arithmetic: a pointer-overflow test (q + len >= q) is undefined
     * behaviour and compilers may drop it (cppcheck invalidTestForOverflow). */
    uintptr_t b = (uintptr_t)s->map, q = (uintptr_t)p;
    return q >= b && len <= s->size && q - b <= s->size - len;
}

/* Find the symbol table of kind `type` in an mmap'd ELF file. */
static int pick_table(struct elf_syms *s, unsigned type)
{
    const ElfW(Ehdr) *eh = s->map;
    if (s->size < sizeof *eh || memcmp(eh->e_ident, ELFMAG, SELFMAG) ||
        eh->e_ident[EI_CLASS] != (sizeof(void *) == 8 ? ELFCLASS64 : ELFCLASS32))
        return -1;
    const ElfW(Shdr) *sh = (const ElfW(Shdr) *)((const char *)s->map + eh->e_shoff);
    if (!eh->e_shoff || !in_map(s, sh, (size_t)eh->e_shnum * sizeof *sh))
        return -1;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != type || sh[i].sh_link >= eh->e_shnum)
            continue;
        const ElfW(Shdr) *st = &sh[sh[i].sh_link];
        const void *syms = (const char *)s->map + sh[i].sh_offset;
        const char *str = (const char *)s->map + st->sh_offset;
        if (!in_map(s, syms, sh[i].sh_size) || !in_map(s, str, st->sh_size))
            continue;
        s->syms = syms;
        s->nsyms = sh[i].sh_size / sizeof(ElfW(Sym));
        s->str = str;
        s->strsz = st->sh_size;
        return 0;
    }
    return -1;
}

static int map_file(const char *path, struct elf_syms *s)
{
    memset(s, 0, sizeof *s);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct stat st;
    void *m = MAP_FAILED;
    if (ef_fstat(fd, &st) == 0 && st.st_size > 0)
        m = ef_real.mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    ef_sys_close(fd);
    if (m == MAP_FAILED)
        return -1;
    s->map = m;
    s->size = (size_t)st.st_size;
    return 0;
}

static void unmap(struct elf_syms *s)
{
    if (s->map)
        ef_real.munmap(s->map, s->size);
    memset(s, 0, sizeof *s);
}

/* The build-id note of an mmap'd file, as hex, into out; 0 when found. */
static int build_id(const struct elf_syms *s, char *out, size_t len)
{
    const ElfW(Ehdr) *eh = s->map;
    const ElfW(Shdr) *sh = (const ElfW(Shdr) *)((const char *)s->map + eh->e_shoff);
    if (!eh->e_shoff || !in_map(s, sh, (size_t)eh->e_shnum * sizeof *sh))
        return -1;
    for (unsigned i = 0; i < eh->e_shnum; i++) {
        if (sh[i].sh_type != SHT_NOTE)
            continue;
        const char *p = (const char *)s->map + sh[i].sh_offset, *end = p + sh[i].sh_size;
        if (!in_map(s, p, sh[i].sh_size))
            continue;
        while (p + sizeof(ElfW(Nhdr)) <= end) {
            const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
            const char *name = p + sizeof *nh;
            const unsigned char *desc = (const unsigned char *)name + ((nh->n_namesz + 3) & ~3u);
            if ((const char *)desc + nh->n_descsz > end)
                break;
            if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4) &&
                nh->n_descsz * 2 + 1 <= len) {
                static const char hx[] = "0123456789abcdef";
                for (unsigned k = 0; k < nh->n_descsz; k++) {
                    out[2 * k] = hx[desc[k] >> 4];
                    out[2 * k + 1] = hx[desc[k] & 15];
                }
                out[nh->n_descsz * 2] = 0;
                return 0;
            }
            p = (const char *)desc + ((nh->n_descsz + 3) & ~3u);
        }
    }
    return -1;
}

static void load_mod(struct mod *m)
{
    m->loaded = 1;
    if (map_file(m->path, &m->s) != 0)
        return;
    if (pick_table(&m->s, SHT_SYMTAB) == 0)
        return;
    /* No .symtab: a separate debug file may have one. */
    char id[128], dbg[300];
    if (build_id(&m->s, id, sizeof id) == 0 && strlen(id) > 2) {
        ef_fmt(dbg, sizeof dbg, "/usr/lib/debug/.build-id/%.2s/%s.debug", id, id + 2);
        struct elf_syms d;
        if (map_file(dbg, &d) == 0) {
            if (pick_table(&d, SHT_SYMTAB) == 0) {
                unmap(&m->s);
                m->s = d;
                return;
            }
            unmap(&d);
        }
    }
    if (pick_table(&m->s, SHT_DYNSYM) != 0)
        unmap(&m->s);
}

static const char *find_func(const struct elf_syms *s, uintptr_t addr)
{
    const char *best = NULL;
    uintptr_t best_start = 0;
    for (size_t i = 0; i < s->nsyms; i++) {
        const ElfW(Sym) *y = &s->syms[i];
        unsigned t = ELF64_ST_TYPE(y->st_info);
        if ((t != STT_FUNC && t != STT_GNU_IFUNC) || y->st_shndx == SHN_UNDEF || !y->st_size)
            continue;
        if (addr < y->st_value || addr >= y->st_value + y->st_size)
            continue;
        if (y->st_name >= s->strsz)
            continue;
        /* Prefer the innermost (latest-starting) and a global over a local alias. */
        if (!best || y->st_value > best_start ||
            (y->st_value == best_start && ELF64_ST_BIND(y->st_info) == STB_GLOBAL)) {
            best = s->str + y->st_name;
            best_start = y->st_value;
        }
    }
    return best;
}

struct ef_symctx *ef_sym_begin(void)
{
    void *m = ef_real.mmap(NULL, sizeof(struct ef_symctx), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED)
        return NULL;
    struct ef_symctx *c = m;
    ssize_t k = readlink("/proc/self/exe", c->exe, sizeof c->exe - 1);
    c->exe[k > 0 ? k : 0] = 0;
    return c;
}

void ef_sym_lookup(struct ef_symctx *c, uintptr_t pc, struct ef_sym *out)
{
    memset(out, 0, sizeof *out);
    out->offset = pc;
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1((void *)pc, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return;
    const char *path = lm->l_name && lm->l_name[0] ? lm->l_name : (c ? c->exe : "");
    if (!path[0] && info.dli_fname)
        path = info.dli_fname;
    out->have_module = 1;
    ef_fmt(out->module, sizeof out->module, "%s", path);
    out->offset = pc - lm->l_addr;
    if (!c)
        return;
    struct mod *m = NULL;
    for (int i = 0; i < c->n; i++)
        if (c->mods[i].bias == lm->l_addr && !strcmp(c->mods[i].path, path))
            m = &c->mods[i];
    if (!m && c->n < NMOD) {
        m = &c->mods[c->n++];
        m->bias = lm->l_addr;
        ef_fmt(m->path, sizeof m->path, "%s", path);
    }
    if (!m)
        return;
    if (!m->loaded)
        load_mod(m);
    if (m->s.map) {
        const char *f = find_func(&m->s, out->offset);
        if (f)
            ef_fmt(out->function, sizeof out->function, "%s", f);
        /* "__libc_start_main@GLIBC_2.2.5" (a .symtab name) reads as the function */
        char *at = strchr(out->function, '@');
        if (at && at != out->function)
            *at = 0;
    }
}

void ef_sym_end(struct ef_symctx *c)
{
    if (!c)
        return;
    for (int i = 0; i < c->n; i++)
        unmap(&c->mods[i].s);
    ef_real.munmap(c, sizeof *c);
}
