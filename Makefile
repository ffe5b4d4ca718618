# dtx - distributed transactions over sharded PostgreSQL.
#
#   make              build bin/dtx-coordinator, bin/dtx-participant, bin/dtxctl
#   make demo         install what is missing, build, run a 3-shard demo
#   make check        install what is missing, build, run every test
#   make bench        install what is missing, build, run the benchmark
#   make bench-compare BASE=DIR
#                     build, then benchmark dtx from DIR (another build's bin/) against bin/
#   make format-check fail if any source is not clang-formatted
#   make check-fresh [RUNS=N]
#                     make check on a new debootstrapped Debian 12 root, N times (tools/fresh-root)
#
# Two build variants share the sources: the release build (build/release,
# binaries in bin/) and the sanitizer build (build/san, binaries in
# build/san/bin), which `make check` uses for the unit and integration tests.

VARIANT ?= release
BUILD   := build/$(VARIANT)

ifeq ($(VARIANT),san)
BINDIR  := $(BUILD)/bin
OPT     := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
LDOPT   := -fsanitize=address,undefined
else
BINDIR  := bin
OPT     := -O2 -g
LDOPT   :=
endif

CC      ?= cc
WARN    := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
           -Wvla -Wimplicit-fallthrough
CPPFLAGS := -D_GNU_SOURCE -Iinclude -I$(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
CFLAGS  := -std=c11 $(OPT) $(WARN) -MMD -MP
LDLIBS_HTTP := -lmicrohttpd -lcjson -lpthread

COMMON_SRC := $(wildcard common/*.c)
COORD_SRC  := $(filter-out coordinator/main.c,$(wildcard coordinator/*.c))
PART_SRC   := $(filter-out participant/main.c,$(wildcard participant/*.c))
CTL_SRC    := $(wildcard dtxctl/*.c)

COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/%.o)
COORD_OBJ  := $(COORD_SRC:%.c=$(BUILD)/%.o)
PART_OBJ   := $(PART_SRC:%.c=$(BUILD)/%.o) $(BUILD)/gen/schema_sql.o
CTL_OBJ    := $(CTL_SRC:%.c=$(BUILD)/%.o)

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)

PROGS := $(BINDIR)/dtx-coordinator $(BINDIR)/dtx-participant $(BINDIR)/dtxctl \
         $(BINDIR)/dtx-loadgen $(BINDIR)/dtx-handrolled

.PHONY: all deps demo check check-fresh unit unit-bin integration fault soak bench bench-compare format format-check clean san

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
	@$(CC) $(CPPFLAGS) -std=c11 $(OPT) -c -o $@ $<

$(BUILD)/libdtxcommon.a: $(COMMON_OBJ)
	@rm -f $@
	@ar rcs $@ $^

$(BINDIR)/dtx-coordinator: $(BUILD)/coordinator/main.o $(COORD_OBJ) $(BUILD)/libdtxcommon.a
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(LDOPT) -o $@ $^ $(LDLIBS_HTTP) -lz

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
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/run.py integration fault
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds 60

# make check as a user would run it on a fresh Debian 12 machine: tools/fresh-root
# debootstraps a root in $(FRESH_DIR), unpacks this checkout's HEAD into it (committed files
# only) and runs make check there RUNS times (about 5 minutes each; needs root and
# debootstrap). FRESH_ARGS passes options, e.g. FRESH_ARGS="--reuse --rev main".
RUNS ?= 1
FRESH_DIR ?= /work/fresh-root
check-fresh:
	@./tools/fresh-root --runs $(RUNS) $(FRESH_ARGS) $(FRESH_DIR)

# The randomized soak test alone, for longer: make soak SECS=600
SECS ?= 300
soak: deps san
	@DTX_BIN=$(CURDIR)/build/san/bin /usr/bin/python3 tests/soak.py --seconds $(SECS)

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
