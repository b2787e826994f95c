# epollfork - see README.md.  `make` builds build/libepollfork.so, `make test`
# runs the whole suite, `make demo` shows a report, `make bench` the overhead.
CC ?= cc
PKG_CONFIG ?= pkg-config
BUILD := build

# Build dependencies are installed on demand (Debian): libunwind's headers from
# the nongnu libunwind (libunwind-dev, found through pkg-config; LLVM's
# libunwind headers may also be present and are not what we want).
BUILD_DEPS := gcc make pkg-config libunwind-dev

UNW_CFLAGS = $(shell $(PKG_CONFIG) --cflags libunwind 2>/dev/null)
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
CFLAGS_COMMON = -std=gnu11 -g -fPIC -ftls-model=initial-exec -Iinclude -Isrc $(UNW_CFLAGS) $(WARN)
CFLAGS ?= -O2
LIB_CFLAGS = $(CFLAGS) $(CFLAGS_COMMON) -fvisibility=hidden -fno-strict-aliasing
LDFLAGS_LIB := -shared -Wl,--version-script=src/exports.map -Wl,-z,defs -Wl,--as-needed

CORE_SRCS := src/real.c src/options.c src/fdtable.c src/registry.c src/track.c \
             src/stack.c src/symbolize.c src/report.c src/log.c src/util.c \
             src/stale.c src/execleak.c src/procfs.c src/suppress.c
LIB_SRCS := src/wrap.c src/init.c $(CORE_SRCS)
ASM_SRCS := src/vfork_x86_64.S
HDRS := src/ef.h src/procfs.h include/epollfork.h include/epollfork_version.h
# The one source of the version (include/epollfork_version.h).
VERSION := $(shell sed -n 's/^\#define EPOLLFORK_VERSION_STRING "\(.*\)"$$/\1/p' include/epollfork_version.h)

LIB := $(BUILD)/libepollfork.so
DEPS_STAMP := $(BUILD)/.deps

# epollfork-ps (src/tools/): reads running processes from /proc; links only the
# standalone procfs layer of the shim, never its internals (src/ef.h).
PS := $(BUILD)/epollfork-ps
PS_SRCS := src/tools/epollfork_ps.c src/tools/ps_scan.c src/tools/ps_judge.c \
           src/tools/ps_out.c src/tools/ps_util.c src/procfs.c
PS_HDRS := src/tools/ps.h src/procfs.h include/epollfork_version.h

.PHONY: all deps test test-real demo bench clean cppcheck options install uninstall version
all: $(LIB) $(PS)

version:
	@echo $(VERSION)

$(DEPS_STAMP):
	@mkdir -p $(BUILD)
	@sh scripts/install-deps.sh $(BUILD_DEPS)
	@$(PKG_CONFIG) --exists libunwind || { echo "libunwind (pkg-config) not found" >&2; exit 1; }
	@touch $@

deps: $(DEPS_STAMP)

LIB_OBJS := $(patsubst src/%.c,$(BUILD)/obj/%.o,$(LIB_SRCS)) $(patsubst src/%.S,$(BUILD)/obj/%.o,$(ASM_SRCS))

$(BUILD)/obj/%.o: src/%.c $(HDRS) | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: src/%.S | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) -c $< -o $@

$(LIB): $(LIB_OBJS) src/exports.map
	$(CC) $(LDFLAGS_LIB) -o $@ $(LIB_OBJS) -ldl -lpthread

# The same library with UBSan (the suite runs scenarios under it) and ASan+UBSan
# (preloaded after libasan, for the scenarios where ASan can run).
$(BUILD)/ubsan/libepollfork.so: $(LIB_SRCS) $(ASM_SRCS) $(HDRS) src/exports.map | $(DEPS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(LIB_CFLAGS) -O1 -fsanitize=undefined -fno-sanitize-recover=undefined \
	    $(LDFLAGS_LIB) -o $@ $(LIB_SRCS) $(ASM_SRCS) -ldl -lpthread

$(BUILD)/asan/libepollfork.so: $(LIB_SRCS) $(ASM_SRCS) $(HDRS) src/exports.map | $(DEPS_STAMP)
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

# Only the real programs (tests/test_real.py), after the same install step.
test-real: $(LIB)
	@sh tests/run.sh real/

bench: $(LIB) $(PS)
	@sh bench/run.sh

cppcheck:
	@sh scripts/install-deps.sh cppcheck
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	    --inline-suppr --std=c11 -Iinclude -Isrc -D__x86_64__ -D__linux__ \
	    --suppress=missingIncludeSystem $(LIB_SRCS)
	cppcheck --quiet --error-exitcode=1 --enable=warning,portability,performance \
	    --inline-suppr --std=c11 -Iinclude -Isrc -Isrc/tools -D__x86_64__ -D__linux__ \
	    --suppress=missingIncludeSystem $(PS_SRCS)

# `make install PREFIX=/usr/local DESTDIR=`: the launcher finds the library at
# ../lib/epollfork/ from its own directory, so the two must stay together.
# epollfork-report(1) and epollfork-symbolize(1) are .so links to epollfork.1.
PREFIX ?= /usr/local
DESTDIR ?=
INST := $(DESTDIR)$(PREFIX)
TOOLS := epollfork epollfork-report epollfork-symbolize
INSTALLED := $(INST)/lib/epollfork/libepollfork.so $(addprefix $(INST)/bin/,$(TOOLS)) \
             $(INST)/bin/epollfork-ps $(INST)/share/man/man1/epollfork-ps.1 \
             $(INST)/include/epollfork.h $(INST)/include/epollfork_version.h \
             $(INST)/share/man/man7/epollfork.7 \
             $(addprefix $(INST)/share/man/man1/,$(addsuffix .1,$(TOOLS)))

install: $(LIB) $(PS)
	install -d $(INST)/lib/epollfork $(INST)/bin $(INST)/include \
	    $(INST)/share/man/man1 $(INST)/share/man/man7
	install -m 755 $(LIB) $(INST)/lib/epollfork/libepollfork.so
	install -m 755 $(addprefix scripts/,$(TOOLS)) $(INST)/bin/
	install -m 755 $(PS) $(INST)/bin/epollfork-ps
	sed 's/@EPOLLFORK_VERSION@/$(VERSION)/' scripts/epollfork > $(INST)/bin/epollfork
	install -m 644 include/epollfork.h include/epollfork_version.h $(INST)/include/
	install -m 644 man/epollfork.1 $(INST)/share/man/man1/
	install -m 644 man/epollfork.7 $(INST)/share/man/man7/
	for t in epollfork-report epollfork-symbolize epollfork-ps; do \
	    echo '.so man1/epollfork.1' > $(INST)/share/man/man1/$$t.1; chmod 644 $(INST)/share/man/man1/$$t.1; done

uninstall:
	rm -f $(INSTALLED)
	-rmdir $(INST)/lib/epollfork 2>/dev/null

clean:
	rm -rf $(BUILD)
