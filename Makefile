# hasched: PGXS build, tests and benchmarks.
#
# make                      build hasched.so and hasched-worker/hasched-worker
#                           (-Wall -Wextra -Werror)
# make install              install into the PostgreSQL found by PG_CONFIG
#                           (hasched-worker into its bindir, pg_config --bindir)
# make test                 everything (see scripts/test.sh): installs what is
#                           missing, then pg_regress, pgTAP and TAP tests as an
#                           ordinary user
# make demo                 the local demo (scripts/demo.sh)
# make bench                benchmarks (bench/run.sh runs bench/bench.pl); prints
#                           tables, asserts nothing; BENCH_QUICK=1: a smoke run
# make unittest             unit tests of the cron parser and the worker's JSON helpers (test/unit)
# make zk-long              the ZooKeeper TAP tests 061-063 with a 20 s session
#                           timeout (the suite uses 6 s)
# make check-layers         the include rules between src/ layers (CI runs it)
# make fuzz                 libFuzzer on the cron parser for FUZZ_SECONDS (600)
# make fuzz-http            libFuzzer on the health listener's request parser
#                           for FUZZ_SECONDS (600)
# make chaos                the chaos suite (test/chaos/run.sh): ZooKeeper x3,
#                           Patroni x3 with hasched, HAProxy, load, every
#                           fault of the failure table CHAOS_REPEAT (3) times,
#                           the checker's table (test/chaos/out/); <= 30 min
# make soak                 SOAK_MINUTES (30) of load with a random fault every
#                           SOAK_FAULT_EVERY (180) s; RSS of every hasched process
# make chaos-smoke          one postmaster SIGKILL under Patroni and the checker
# make stress               the randomized concurrent checker of the claim path
#                           for STRESS_SECONDS (600) against a throwaway server
#                           (test/stress/run.sh); exits 1 when it finds a defect

# The version lives in hasched.control (default_version) only.
EXTENSION = hasched
EXTVERSION := $(shell sed -n "s/^default_version = '\([^']*\)'.*/\1/p" $(dir $(lastword $(MAKEFILE_LIST)))hasched.control)

# Layers (README "Layout"): workers -> core -> common, api -> core.
MODULE_big = hasched
OBJS = $(patsubst %.c,%.o,$(sort $(wildcard src/common/*.c src/core/*.c src/api/*.c src/workers/*.c)))

# The released install script and every upgrade script; a fresh CREATE
# EXTENSION runs hasched--0.1.0.sql and then the upgrades up to EXTVERSION.
DATA = $(sort $(wildcard sql/hasched--*.sql))

PG_CPPFLAGS = -I$(srcdir)/src -I$(srcdir)/src/common -DHASCHED_VERSION='"$(EXTVERSION)"'
# the ZooKeeper coordinator (src/workers/coordinator.c): the single-threaded
# C client, driven from the worker's own wait loop (libzookeeper-st-dev)
SHLIB_LINK = -lzookeeper_st
# the RabbitMQ dispatcher (src/workers/dispatcher.c): librabbitmq-c 0.11
# (librabbitmq-dev), driven from the worker's own wait loop
SHLIB_LINK += -lrabbitmq
# amqps:// (the dispatcher sets the TLS context librabbitmq made)
SHLIB_LINK += -lssl -lcrypto
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type

REGRESS = setup submit claim quota security schedule
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check_regress --temp-config=$(srcdir)/test/hasched.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl
# test/perl/HaschedCluster.pm: the shared server harness of the TAP tests
# (prove runs in $(srcdir)); kept when PROVE_FLAGS is given on the command line
override PROVE_FLAGS += -I $(abspath $(srcdir))/test/perl

EXTRA_CLEAN = tmp_check_regress tmp_check results regression.diffs regression.out log \
	src/core/settings_table.h src/core/settings_variables.h

# no LLVM bitcode: clang need not be installed
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# PGXS does not track headers: an object is rebuilt when any header of src/
# changed (a stale object with an old struct layout crashes at run time)
$(OBJS): $(wildcard $(srcdir)/src/*/*.h)
# the workers compare the installed extension's version with this one
src/core/extension.o: hasched.control
# the rows of the settings table, from the list of settings
src/core/settings.o: src/core/settings_table.h src/core/settings_variables.h
src/core/settings_table.h: src/core/settings.def scripts/gen_settings.awk
	awk -f $(srcdir)/scripts/gen_settings.awk $< > $@.tmp && mv $@.tmp $@
src/core/settings_variables.h: src/core/settings.def scripts/gen_settings.awk
	awk -v part=variables -f $(srcdir)/scripts/gen_settings.awk $< > $@.tmp && mv $@.tmp $@

# hasched-worker/: the external worker program, its own Makefile (libpq and
# src/common); built, installed and cleaned with the extension
.PHONY: hasched-worker install-hasched-worker clean-hasched-worker
all: hasched-worker
hasched-worker:
	$(MAKE) -C $(srcdir)/hasched-worker PG_CONFIG=$(PG_CONFIG)
install: install-hasched-worker
install-hasched-worker: hasched-worker
	$(MAKE) -C $(srcdir)/hasched-worker PG_CONFIG=$(PG_CONFIG) install
clean: clean-hasched-worker
clean-hasched-worker:
	$(MAKE) -C $(srcdir)/hasched-worker clean

.PHONY: test demo bench unittest fuzz fuzz-http check-layers check-version zk-long stress chaos soak chaos-smoke
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash bench/run.sh
unittest:
	$(MAKE) -C test/unit
# the ZooKeeper ensemble tests with production-like timeouts
zk-long:
	HASCHED_ZK_SESSION_MS=20000 HASCHED_SUITES=tap \
		PROVE_TESTS="test/t/061_zookeeper_quorum.pl test/t/062_zookeeper_split_brain.pl test/t/063_zookeeper_hung_primary.pl" \
		bash scripts/test.sh
# libFuzzer on the cron parser; FUZZ_SECONDS=600 by default
fuzz:
	$(MAKE) -C fuzz run
# libFuzzer on the HTTP request parser of the health listener
fuzz-http:
	$(MAKE) -C fuzz run-http
# src/common includes nothing of PostgreSQL's; core only common; api and
# workers only core and common (scripts/check-layers.sh says what is wrong)
check-layers:
	bash scripts/check-layers.sh
# the upgrade chain reaches default_version
check-version:
	@test -f sql/hasched--0.1.0.sql && ls sql/hasched--*--$(EXTVERSION).sql >/dev/null 2>&1 \
		|| { echo "no upgrade script reaches version $(EXTVERSION) (hasched.control)"; exit 1; }
# randomized concurrent checker of the claim path; STRESS_SECONDS=600 by default
stress:
	bash test/stress/run.sh
# the chaos suite (test/chaos/): run, soak, smoke; as root they run as the
# user hasched_test (PostgreSQL and Patroni refuse root)
chaos:
	bash test/chaos/run.sh run
soak:
	bash test/chaos/run.sh soak
chaos-smoke:
	bash test/chaos/run.sh smoke
