# hasched: PGXS build, tests and benchmarks.
#
# make                      build hasched.so (-Wall -Wextra -Werror)
# make install              install into the PostgreSQL found by PG_CONFIG
# make test                 everything (see scripts/test.sh): installs what is
#                           missing, then pg_regress, pgTAP and TAP tests as an
#                           ordinary user
# make demo                 the local demo (scripts/demo.sh)
# make bench                benchmarks (bench/run.sh); prints tables, asserts nothing
# make unittest             unit tests of the cron parser (test/unit)
# make fuzz                 libFuzzer on the cron parser for FUZZ_SECONDS (600)

MODULE_big = hasched
OBJS = src/hasched.o src/job.o src/claim.o src/quota.o src/util.o src/cron.o src/schedule.o src/scheduler.o src/executor.o

EXTENSION = hasched
DATA = sql/hasched--0.1.0.sql

PG_CPPFLAGS = -I$(srcdir)/src
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare -Wno-cast-function-type

REGRESS = setup submit claim quota security schedule
REGRESS_OPTS = --temp-instance=$(CURDIR)/tmp_check_regress --temp-config=$(srcdir)/test/hasched.conf

TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

EXTRA_CLEAN = tmp_check_regress tmp_check results regression.diffs regression.out log

# no LLVM bitcode: clang need not be installed
override with_llvm = no

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

.PHONY: test demo bench unittest fuzz
test:
	bash scripts/test.sh
demo:
	bash scripts/demo.sh
bench:
	bash bench/run.sh
unittest:
	$(MAKE) -C test/unit
# libFuzzer on the cron parser; FUZZ_SECONDS=600 by default
fuzz:
	$(MAKE) -C fuzz run
