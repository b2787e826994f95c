# epollfork - see README.md.  `make` builds build/libepollfork.so, `make test`
# runs the whole suite, `make demo` shows a report, `make bench` the overhead.
CC ?= cc
PKG_CONFIG ?= pkg-config
BUILD := build

# What building needs on Debian (libunwind's headers from the nongnu libunwind,
# libunwind-dev, found through pkg-config; LLVM's libunwind headers may also be
# present and are not what we want).  `make` never installs anything: `make
# deps` does, and so do the README's two commands (tests/demo.sh, tests/run.sh).
BUILD_DEPS := gcc make pkg-config libunwind-dev

UNW_CFLAGS = $(shell $(PKG_CONFIG) --cflags libunwind 2>/dev/null)
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_COMMON = -std=gnu11 -g -fPIC -ftls-model=initial-exec -Iinclude -Isrc $(UNW_CFLAGS) $(WARN)
CFLAGS ?= -O2
LIB_CFLAGS = $(CFLAGS) $(CFLAGS_COMMON) -fvisibility=hidden -fno-strict-aliasing
# -fini: DT_FINI names an empty function next to the destructor (init.c,
# ef_fini) instead of crti's _fini at the far end of .text: a page fault less
# at every process's exit (bench/RESULTS.md, start-up).
LDFLAGS_LIB := -shared -Wl,--version-script=src/exports.map -Wl,-z,defs -Wl,--as-needed \
               -Wl,-fini=ef_fini

# The layers, bottom up (docs/DESIGN.md; tests/test_static.py checks the order).
GROUND_SRCS := src/util.c src/emit.c src/real.c src/zone.c src/guard.c src/options.c src/procfs.c \
               src/fdtable.c src/log.c src/registry.c src/symbolize.c src/pyframes.c src/depot.c \
               src/ehframe.c src/cfi.c src/stack.c \
               src/record.c src/suppress.c src/journal.c src/report.c
RULES_SRCS := src/hold.c src/interest.c src/copy.c src/repair.c src/stale.c src/execleak.c \
              src/track.c src/ringshare.c src/uring.c
CORE_SRCS := $(GROUND_SRCS) $(RULES_SRCS)
LIB_SRCS := src/wrap.c src/wrap_uring.c src/init.c $(CORE_SRCS)
ASM_SRCS := src/vfork_x86_64.S
HDRS := src/ef.h src/direct.h src/registry.h src/rules.h src/procfs.h include/epollfork.h include/epollfork_version.h
# The one source of the version (include/epollfork_version.h).
VERSION := $(shell sed -n 's/^\#define EPOLLFORK_VERSION_STRING "\(.*\)"$$/\1/p' include/epollfork_version.h)

LIB := $(BUILD)/libepollfork.so

# epollfork-ps (src/tools/): reads running processes from /proc; links only the
# standalone procfs layer of the shim, never its internals (src/ef.h).
PS := $(BUILD)/epollfork-ps
PS_SRCS := src/tools/epollfork_ps.c src/tools/ps_scan.c src/tools/ps_judge.c \
           src/tools/ps_out.c src/tools/ps_util.c src/procfs.c
PS_HDRS := src/tools/ps.h src/procfs.h include/epollfork_version.h

.PHONY: all deps check test test-real demo bench clean cppcheck options install uninstall version \
        core-srcs deb fuzz fuzz-run
all: $(LIB) $(PS)

version:
	@echo $(VERSION)

# The core (every source but the interposition layer), bottom layer first: the
# unit tests link it directly, tests/test_static.py checks its layering.
core-srcs:
	@echo $(CORE_SRCS)

deps:
	@sh scripts/install-deps.sh $(BUILD_DEPS)

# Without libunwind's headers nothing builds: say so in one line.
UNW_CHECK = @$(PKG_CONFIG) --exists libunwind || { echo "libunwind-dev (pkg-config libunwind) is \
not installed: run 'make deps' (Debian) or install it" >&2; exit 1; }

LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(patsubst src/%.S,$(BUILD)/obj/%.o,$(ASM_SRCS))

$(BUILD)/obj/%.o: src/%.c $(HDRS)
	$(UNW_CHECK)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: src/%.S
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@

# CPPFLAGS and LDFLAGS are empty unless the environment sets them, as
# dpkg-buildflags does for the Debian package (fortify, relro, bindnow).
$(LIB): $(LIB_OBJS) src/exports.map
	$(CC) $(LDFLAGS) $(LDFLAGS_LIB) -o $@ $(LIB_OBJS) -ldl -lpthread

# The same library with UBSan (the suite runs scenarios under it) and ASan+UBSan
# (preloaded after libasan, for the scenarios where ASan can run).
$(BUILD)/ubsan/libepollfork.so: $(LIB_SRCS) $(ASM_SRCS) $(HDRS) src/exports.map
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -O1 -fsanitize=undefined -fno-sanitize-recover=undefined \
	    $(LDFLAGS_LIB) -o $@ $(LIB_SRCS) $(ASM_SRCS) -ldl -lpthread

$(BUILD)/asan/libepollfork.so: $(LIB_SRCS) $(ASM_SRCS) $(HDRS) src/exports.map
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	    -fno-omit-frame-pointer -shared -Wl,--version-script=src/exports.map \
	    -o $@ $(LIB_SRCS) $(ASM_SRCS) -ldl -lpthread

$(PS): $(PS_SRCS) $(PS_HDRS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -std=gnu11 -g $(WARN) -Iinclude -Isrc -Isrc/tools -o $@ $(PS_SRCS)

options: $(LIB)
	@$(CC) $(CFLAGS_COMMON) -o $(BUILD)/print-options tests/unit/print_options.c $(CORE_SRCS) -ldl -lpthread
	@$(BUILD)/print-options

demo: $(LIB)
	@sh tests/demo.sh

test: $(LIB)
	@sh tests/run.sh

# Static checks, unit tests and the core scenarios: no network, no servers,
# nothing installed (run `make deps` once, and have cppcheck for static/).
check: $(LIB) $(BUILD)/ubsan/libepollfork.so $(BUILD)/asan/libepollfork.so
	@python3 tests/run.py static/ unit/ core/

# Only the real programs (tests/test_real.py), after the same install step.
test-real: $(LIB)
	@sh tests/run.sh real/

bench: $(LIB) $(PS)
	@sh bench/run.sh

# Fuzz targets (libFuzzer + ASan + UBSan, Debian's clang and libclang-rt-14-dev):
# the option parser, the suppressions file, the fdinfo reader; the log reader
# (scripts/epollfork-report, Python) has a mutation fuzzer of its own.
# `make fuzz` builds them; `make fuzz-run FUZZ_SECONDS=N` runs each for N s.
FUZZ_CC ?= clang
FUZZ_FLAGS := -std=gnu11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
              -Iinclude -Isrc $(UNW_CFLAGS) -Wall -Wextra -Werror -Wno-unused-parameter
FUZZERS := $(BUILD)/fuzz/fuzz_options $(BUILD)/fuzz/fuzz_suppress $(BUILD)/fuzz/fuzz_fdinfo
FUZZ_SECONDS ?= 10

fuzz: $(FUZZERS)

$(BUILD)/fuzz/fuzz_fdinfo: tests/fuzz/fuzz_fdinfo.c src/procfs.c src/procfs.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ tests/fuzz/fuzz_fdinfo.c src/procfs.c

$(BUILD)/fuzz/%: tests/fuzz/%.c $(CORE_SRCS) $(HDRS)
	$(UNW_CHECK)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(CORE_SRCS) -ldl -lpthread

fuzz-run: $(FUZZERS)
	@for f in $(FUZZERS); do t=$$(basename $$f); mkdir -p $(BUILD)/fuzz/corpus-$$t; \
	    $$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 -close_fd_mask=3 \
	        -artifact_prefix=$(BUILD)/fuzz/$$t- $(BUILD)/fuzz/corpus-$$t \
	        tests/fuzz/corpus/$${t#fuzz_} 2>$(BUILD)/fuzz/$$t.log || \
	        { tail -30 $(BUILD)/fuzz/$$t.log; exit 1; }; echo "$$t: $$(grep -c . $(BUILD)/fuzz/corpus-$$t/* 2>/dev/null | wc -l) inputs in its corpus, no failure in $(FUZZ_SECONDS) s"; done
	@python3 tests/fuzz/fuzz_report.py $(FUZZ_SECONDS)

cppcheck:
	@command -v cppcheck >/dev/null || { echo "cppcheck is not installed (apt-get install cppcheck)" >&2; exit 1; }
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	    --inline-suppr --std=c11 -Iinclude -Isrc -D__x86_64__ -D__linux__ \
	    --suppress=missingIncludeSystem $(LIB_SRCS)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	    --inline-suppr --std=c11 -Iinclude -Isrc -Isrc/tools -D__x86_64__ -D__linux__ \
	    --suppress=missingIncludeSystem $(PS_SRCS)

# `make install PREFIX=/usr/local DESTDIR= LIBDIR=$(PREFIX)/lib`: the library
# goes to LIBDIR/epollfork/ (a private directory: it is a preload module, not a
# library to link against; the Debian package passes the multiarch libdir).
# The installed launcher gets the library's place written in, relative to its
# bin directory when LIBDIR is inside PREFIX (a staged DESTDIR or a moved
# prefix still works) and absolute, and the version; epollfork.pc gets both.
# epollfork-report(1) and epollfork-symbolize(1) are .so links to epollfork.1.
PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
DESTDIR ?=
INST := $(DESTDIR)$(PREFIX)
INSTLIB := $(DESTDIR)$(LIBDIR)
PRELOAD := $(LIBDIR)/epollfork/libepollfork.so
PRELOAD_FROM_BIN := $(if $(filter $(PREFIX)/%,$(LIBDIR)),../$(patsubst $(PREFIX)/%,%,$(LIBDIR))/epollfork/libepollfork.so,$(PRELOAD))
PC_LIBDIR := $(if $(filter $(PREFIX)/%,$(LIBDIR)),$${prefix}/$(patsubst $(PREFIX)/%,%,$(LIBDIR)),$(LIBDIR))
TOOLS := epollfork epollfork-report epollfork-symbolize
INSTALLED := $(INSTLIB)/epollfork/libepollfork.so $(INSTLIB)/pkgconfig/epollfork.pc \
             $(addprefix $(INST)/bin/,$(TOOLS)) \
             $(INST)/bin/epollfork-ps $(INST)/share/man/man1/epollfork-ps.1 \
             $(INST)/include/epollfork.h $(INST)/include/epollfork_version.h \
             $(INST)/share/man/man7/epollfork.7 \
             $(addprefix $(INST)/share/man/man1/,$(addsuffix .1,$(TOOLS)))

install: $(LIB) $(PS)
	install -d $(INSTLIB)/epollfork $(INSTLIB)/pkgconfig $(INST)/bin $(INST)/include \
	    $(INST)/share/man/man1 $(INST)/share/man/man7
	install -m 644 $(LIB) $(INSTLIB)/epollfork/libepollfork.so
	install -m 755 $(addprefix scripts/,$(TOOLS)) $(INST)/bin/
	install -m 755 $(PS) $(INST)/bin/epollfork-ps
	sed -e 's|@EPOLLFORK_VERSION@|$(VERSION)|' -e 's|@EPOLLFORK_PRELOAD_FROM_BIN@|$(PRELOAD_FROM_BIN)|' \
	    -e 's|@EPOLLFORK_PRELOAD@|$(PRELOAD)|' scripts/epollfork > $(INST)/bin/epollfork
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    epollfork.pc.in > $(INSTLIB)/pkgconfig/epollfork.pc
	chmod 644 $(INSTLIB)/pkgconfig/epollfork.pc
	install -m 644 include/epollfork.h include/epollfork_version.h $(INST)/include/
	install -m 644 man/epollfork.1 $(INST)/share/man/man1/
	install -m 644 man/epollfork.7 $(INST)/share/man/man7/
	for t in epollfork-report epollfork-symbolize epollfork-ps; do \
	    echo '.so man1/epollfork.1' > $(INST)/share/man/man1/$$t.1; chmod 644 $(INST)/share/man/man1/$$t.1; done

uninstall:
	rm -f $(INSTALLED)
	-rmdir $(INSTLIB)/epollfork 2>/dev/null

# `make deb`: build/epollfork_<debian version>_<arch>.deb, built by Debian's
# own tooling (debian/, debhelper, dpkg-buildpackage -b -us -uc) and checked
# with lintian (no error, no warning: the ones we accept are overridden in
# debian/epollfork.lintian-overrides, with the reason).  The build runs in a
# copy of the tree in build/deb/, because the package's `debian/rules clean`
# runs `make clean` (which would delete build/ under a running test suite) and
# dpkg-buildpackage writes its results into the parent of the source
# directory: here that is build/deb/, whence they move to build/.  The only
# target that installs packages, through scripts/install-deps.sh (no fakeroot:
# debian/control says Rules-Requires-Root: no).
DEB_TOOLS := build-essential debhelper dpkg-dev lintian libunwind-dev pkg-config
DEB_VERSION = $(shell head -n 1 debian/changelog | cut -d'(' -f2 | cut -d')' -f1)
DEB_ARCH = $(shell dpkg --print-architecture)
DEB = $(BUILD)/epollfork_$(DEB_VERSION)_$(DEB_ARCH).deb

deb:
	@sh scripts/install-deps.sh $(DEB_TOOLS)
	@case "$(DEB_VERSION)" in $(VERSION)-*) ;; *) echo "make deb: debian/changelog says" \
	    "'$(DEB_VERSION)', include/epollfork_version.h '$(VERSION)': add a changelog entry" >&2; exit 1 ;; esac
	rm -rf $(BUILD)/deb
	mkdir -p $(BUILD)/deb/epollfork-$(VERSION)
	tar -cf - --exclude=./build --exclude=./$(BUILD) --exclude=./.git --exclude=__pycache__ . | \
	    tar -xf - -C $(BUILD)/deb/epollfork-$(VERSION)
	cd $(BUILD)/deb/epollfork-$(VERSION) && dpkg-buildpackage -b -us -uc
	rm -rf $(BUILD)/deb/epollfork-$(VERSION)
	mv $(BUILD)/deb/* $(BUILD)/
	rmdir $(BUILD)/deb
	lintian --fail-on error,warning $(DEB)
	@echo "make deb: $(DEB)"

clean:
	rm -rf $(BUILD)
