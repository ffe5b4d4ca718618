# dtx - distributed transactions over sharded PostgreSQL.
#
#   make              build bin/dtx-coordinator, bin/dtx-participant, bin/dtxctl
#   make demo         install what is missing, build, run a 3-shard demo
#   make check        install what is missing, build, run every test
#   make fuzz FUZZ_SECS=N
#                     run each libFuzzer target (tests/fuzz) for N seconds (default 60)
#   make bench        install what is missing, build, run the benchmark
#   make model        model-check three-phase commit in depth (SPIN; 15-20 min, ~10 GB)
#   make bench-compare BASE=DIR
#                     build, then benchmark dtx from DIR (another build's bin/) against bin/
#   make format-check fail if any source is not clang-formatted
#   make install      install programs, man pages, example configs and systemd
#                     units under PREFIX (default /usr/local), into DESTDIR if set
#   make deb          build a Debian package of HEAD into build/deb/ (tools/make-deb)
#   make check-fresh [RUNS=N]
#                     make check on a new debootstrapped Debian 12 root, N times (tools/fresh-root)
#
# Three build variants share the sources: the release build (build/release,
# binaries in bin/), the sanitizer build (build/san, binaries in
# build/san/bin), which `make check` uses for the unit and integration tests,
# and the fuzz build (build/fuzz, clang and libFuzzer) for tests/fuzz.

VARIANT ?= release
BUILD   := build/$(VARIANT)

ifeq ($(VARIANT),san)
BINDIR  := $(BUILD)/bin
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDOPT   := -fsanitize=address,undefined
else ifeq ($(VARIANT),fuzz)
# libFuzzer (tests/fuzz, tools/run-fuzz): clang only; every module object carries coverage
# instrumentation.
CC      := clang
BINDIR  := $(BUILD)/bin
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
           -fno-sanitize-recover=undefined
LDOPT   := -fsanitize=fuzzer,address,undefined
else
BINDIR  := bin
OPT     := -O2 -g
LDOPT   :=
endif

CC      ?= cc
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wvla -Wimplicit-fallthrough
CPPFLAGS := -D_GNU_SOURCE -Iinclude -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
# Flags added from outside: tools/make-deb passes Debian's hardening flags and maps the
# build directory away (so that one commit builds to the same bytes anywhere).
EXTRA_CFLAGS  ?=
EXTRA_LDFLAGS ?=
CFLAGS  := -std=c11 $(OPT) $(WARN) -MMD -MP $(EXTRA_CFLAGS)
ifeq ($(VARIANT),fuzz)
# clang's -Wformat=2 also flags the vsnprintf in libmicrohttpd's log callback (common/httpd.c),
# whose format comes from the library.
CFLAGS  += -Wno-format-nonliteral
endif
LDOPT   += $(EXTRA_LDFLAGS)
LDLIBS_HTTP := -lmicrohttpd -lcjson -lnettle -lpthread

COMMON_SRC := $(wildcard common/*.c)
COORD_SRC  := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
PART_SRC   := $(filter-out participant/main.c,$(wildcard participant/*.c))
CTL_SRC    := $(wildcard dtxctl/*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
COORD_OBJ  := $(COORD_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/store_sql.o
PART_OBJ   := $(PART_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/schema_sql.o
CTL_OBJ    := $(CTL_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PROGS := $(BINDIR)/dtx-coordinator $(BINDIR)/dtx-participant $(BINDIR)/dtxctl \
         $(BINDIR)/dtx-loadgen $(BINDIR)/dtx-handrolled

.PHONY: all deps demo check check-fresh unit unit-bin integration fault soak model bench bench-compare format format-check clean san \
        install uninstall deb fuzz fuzz-bin fuzz-short

all: $(PROGS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC      $@"
	@$(CC) $(CPPFLAGS) $(CFLAGS) -c -o $@ $<

# sql/*.sql embedded in the participant as one C string (applied at start-up).
$(BUILD)/gen/schema_sql.c: $(sort $(wildcard sql/*.sql))
	@mkdir -p $(dir $@)
	@{ echo '/* Generated from the files in sql/ by the Makefile; do not edit. */'; \
	   echo 'const char rm_pg_schema_sql[] ='; \
	   cat $^ | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/'; \
	   echo '    ;'; } > $@

$(BUILD)/gen/schema_sql.o: $(BUILD)/gen/schema_sql.c
	@$(CC) $(CPPFLAGS) -std=c11 $(OPT) $(EXTRA_CFLAGS) -c -o $@ $<

# sql/store/*.sql embedded in the coordinator: the postgres decision store's schema.
$(BUILD)/gen/store_sql.c: $(sort $(wildcard sql/store/*.sql))
	@mkdir -p $(dir $@)
	@{ echo '/* Generated from the files in sql/store/ by the Makefile; do not edit. */'; \
	   echo 'extern const char dstore_pg_schema_sql[];'; \
	   echo 'const char dstore_pg_schema_sql[] ='; \
	   cat $^ | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$$/\\n"/'; \
	   echo '    ;'; } > $@

$(BUILD)/gen/store_sql.o: $(BUILD)/gen/store_sql.c
	@$(CC) $(CPPFLAGS) -std=c11 $(OPT) $(EXTRA_CFLAGS) -c -o $@ $<

$(BUILD)/libdtxcommon.a: $(COMMON_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(BINDIR)/dtx-coordinator: $(BUILD)/coordinator/main.o $(COORD_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ $(LDLIBS_HTTP) -lz -lpq

$(BINDIR)/dtx-participant: $(BUILD)/participant/main.o $(PART_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ $(LDLIBS_HTTP) -lpq

# dtxctl reads decision logs offline with the coordinator's own reader.
DLOG_READ_OBJ := $(BUILD)/coordinator/drec.o $(BUILD)/coordinator/dlog_format.o \
                 $(BUILD)/coordinator/dlog_reader.o
$(BINDIR)/dtxctl: $(CTL_OBJ) $(DLOG_READ_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ $(LDLIBS_HTTP) -lcurl

$(BINDIR)/dtx-loadgen: $(BUILD)/bench/loadgen.o $(BUILD)/bench/latency.o $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ $(LDLIBS_HTTP)

$(BINDIR)/dtx-handrolled: $(BUILD)/bench/handrolled.o $(BUILD)/bench/latency.o $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ -lpq -lpthread -lcjson

# Unit tests: one CUnit program per module, linked with every module object
# except the daemons' main.c (tests stub module boundaries themselves).
$(BUILD)/tests/test_%: tests/unit/test_%.c $(COORD_OBJ) $(PART_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CPPFLAGS) -Icoordinator -Iparticipant -DDTX_SRC_DIR='"$(CURDIR)"' $(CFLAGS) $(LDOPT) \
		-o $@ $^ -lcunit $(LDLIBS_HTTP) -lz -lpq

unit-bin: $(UNIT_BIN)

# libFuzzer targets (VARIANT=fuzz): each tests/fuzz/fuzz_NAME.c with every module object, as
# the unit tests; tools/run-fuzz runs them on their seed corpora (tests/fuzz/corpus/NAME).
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=$(BUILD)/tests/%)

# (clang's -MMD names the headers too, as prerequisites of the program: they are no inputs.)
$(BUILD)/tests/fuzz_%: tests/fuzz/fuzz_%.c $(COORD_OBJ) $(PART_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(CPPFLAGS) -Icoordinator -Iparticipant $(CFLAGS) $(LDOPT) \
		-o $@ $(filter-out %.h,$^) $(LDLIBS_HTTP) -lz -lpq

fuzz-bin: $(FUZZ_BIN)

deps:
	@./tools/install-deps

san:
	@$(MAKE) --no-print-directory VARIANT=san all unit-bin

unit: deps san
	@./tools/run-unit build/san/tests

integration: deps san
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/run.py integration

fault: deps san
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/run.py fault

check: deps
	@$(MAKE) --no-print-directory all
	@$(MAKE) --no-print-directory format-check
	@$(MAKE) --no-print-directory VARIANT=san all unit-bin
	@./tools/run-unit build/san/tests
	@./tools/run-model quick
	@$(MAKE) --no-print-directory fuzz-short
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/run.py integration fault
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds 45
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds 30 --protocol 3pc
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds 30 --ha

# The three-phase commit protocol model-checked in depth with SPIN (model/README.md):
# 15-20 minutes and up to ~10 GB of memory. make check runs the quick checks (~25 s).
model: deps
	@./tools/run-model full

# make check as a user would run it on a fresh Debian 12 machine: tools/fresh-root
# debootstraps a root in $(FRESH_DIR), unpacks this checkout's HEAD into it (committed files
# only) and runs make check there RUNS times (about 5 minutes each; needs root and
# debootstrap). FRESH_ARGS passes options, e.g. FRESH_ARGS="--reuse --rev main".
RUNS ?= 1
FRESH_DIR ?= /work/fresh-root
check-fresh:
	@./tools/fresh-root --runs $(RUNS) $(FRESH_ARGS) $(FRESH_DIR)

# The randomized soak test alone, for longer: make soak SECS=600 [PROTOCOL=3pc] [SOAK_ARGS=--ha]
SECS ?= 300
PROTOCOL ?= 2pc
SOAK_ARGS ?=
soak: deps san
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds $(SECS) \
		--protocol $(PROTOCOL) $(SOAK_ARGS)

# Every fuzz target for FUZZ_SECS seconds (tools/run-fuzz says how to keep what it found);
# fuzz-short (in make check) runs each for a few seconds.
FUZZ_SECS ?= 60
fuzz: deps
	@$(MAKE) --no-print-directory VARIANT=fuzz fuzz-bin
	@./tools/run-fuzz --seconds $(FUZZ_SECS) build/fuzz

fuzz-short: deps
	@$(MAKE) --no-print-directory VARIANT=fuzz fuzz-bin
	@./tools/run-fuzz --seconds 8 build/fuzz

demo: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 tools/demo.py

# The benchmark (about 20 minutes; see docs/benchmarks.md). BENCH_ARGS passes options to
# bench/run.py, e.g. make bench BENCH_ARGS="--memory-seconds 0 --seconds 5".
bench: deps
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/run.py $(BENCH_ARGS)

# A/B: another build's dtx (BASE, a directory holding its binaries, or a checkout with bin/)
# against this one's, alternating on two clusters; e.g.
#   make bench-compare BASE=/tmp/dtx-main/bin BENCH_ARGS="--levels 1,32 --rounds 4"
bench-compare: deps
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=DIR [BENCH_ARGS=...]" >&2; exit 2; }
	@$(MAKE) --no-print-directory all
	@/usr/bin/python3 bench/run.py --compare-bin "$(BASE)" $(BENCH_ARGS)

# ---- install ----------------------------------------------------------------------
# GNU-style directories; each may be overridden (make install PREFIX=/usr DESTDIR=/tmp/x).
# The configs live in SYSCONFDIR/dtx (/etc/dtx) whatever PREFIX is: the units read
# them there. The units' ExecStart= and config paths are filled in from these.
PREFIX         ?= /usr/local
DESTDIR        ?=
bindir         ?= $(PREFIX)/bin
sbindir        ?= $(PREFIX)/sbin
mandir         ?= $(PREFIX)/share/man
docdir         ?= $(PREFIX)/share/doc/dtx
SYSCONFDIR     ?= /etc
systemdunitdir ?= $(PREFIX)/lib/systemd/system
sysusersdir    ?= $(PREFIX)/lib/sysusers.d

UNITS := dtx-coordinator.service dtx-participant@.service
MANS  := dtx-coordinator.8 dtx-participant.8 dtxctl.1
SUBST := sed -e 's|@SBINDIR@|$(sbindir)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' \
             -e 's|@DOCDIR@|$(docdir)|g'

$(BUILD)/inst/%: packaging/systemd/%.in
	@mkdir -p $(dir $@)
	@$(SUBST) $< > $@.tmp && mv $@.tmp $@

$(BUILD)/inst/%: packaging/man/%.in
	@mkdir -p $(dir $@)
	@$(SUBST) $< > $@.tmp && mv $@.tmp $@

# Units and man pages are made again at every install: another PREFIX means other
# paths in them.
install: all
	@rm -rf $(BUILD)/inst
	@$(MAKE) --no-print-directory $(UNITS:%=$(BUILD)/inst/%) $(MANS:%=$(BUILD)/inst/%)
	install -d $(DESTDIR)$(bindir) $(DESTDIR)$(sbindir) $(DESTDIR)$(mandir)/man1 \
		$(DESTDIR)$(mandir)/man8 $(DESTDIR)$(docdir)/examples $(DESTDIR)$(systemdunitdir) \
		$(DESTDIR)$(sysusersdir)
	install -m 0755 $(BINDIR)/dtxctl $(DESTDIR)$(bindir)/dtxctl
	install -m 0755 $(BINDIR)/dtx-coordinator $(BINDIR)/dtx-participant $(DESTDIR)$(sbindir)/
	install -m 0644 $(BUILD)/inst/dtxctl.1 $(DESTDIR)$(mandir)/man1/
	install -m 0644 $(BUILD)/inst/dtx-coordinator.8 $(BUILD)/inst/dtx-participant.8 \
		$(DESTDIR)$(mandir)/man8/
	install -m 0644 packaging/examples/coordinator.json packaging/examples/participant-s1.json \
		$(DESTDIR)$(docdir)/examples/
	install -m 0644 README.md docs/operations.md docs/api.md docs/recovery.md $(DESTDIR)$(docdir)/
	install -d $(DESTDIR)$(docdir)/grafana
	install -m 0644 docs/grafana/dtx.json $(DESTDIR)$(docdir)/grafana/
	install -m 0644 $(UNITS:%=$(BUILD)/inst/%) $(DESTDIR)$(systemdunitdir)/
	install -m 0644 packaging/systemd/dtx.sysusers.conf $(DESTDIR)$(sysusersdir)/dtx.conf

uninstall:
	rm -f $(DESTDIR)$(bindir)/dtxctl $(DESTDIR)$(sbindir)/dtx-coordinator \
		$(DESTDIR)$(sbindir)/dtx-participant $(DESTDIR)$(mandir)/man1/dtxctl.1 \
		$(DESTDIR)$(mandir)/man8/dtx-coordinator.8 $(DESTDIR)$(mandir)/man8/dtx-participant.8 \
		$(UNITS:%=$(DESTDIR)$(systemdunitdir)/%) $(DESTDIR)$(sysusersdir)/dtx.conf
	rm -rf $(DESTDIR)$(docdir)

# A Debian package of the committed HEAD, built in a clean export (tools/make-deb);
# DEB_ARGS passes options, e.g. make deb DEB_ARGS=--tree for the working tree.
deb: deps
	@./tools/make-deb $(DEB_ARGS)

# The sources clang-format owns, found without git: a tree unpacked from a tarball or
# `git archive`, or a machine without git, checks the same files as a clone.
FMT_SRC := $(sort $(shell find common coordinator participant dtxctl include bench tests \
                        -name '*.[ch]' 2>/dev/null))

format:
	clang-format -i $(FMT_SRC)

format-check:
	@test -n "$(FMT_SRC)" || { echo "format-check: no sources found" >&2; exit 1; }
	@clang-format --dry-run -Werror $(FMT_SRC) && echo "format-check: $(words $(FMT_SRC)) files ok"

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
