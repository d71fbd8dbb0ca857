#!/usr/bin/env bash
# hasched's single test command (`make test` runs it; so does .ci/run).
#
#   bash scripts/test.sh
#
# 1. scripts/deps.sh installs the Debian packages that are missing;
# 2. `make` and `make install` (as root, or through sudo);
# 3. the suites run as an ordinary user in a fresh copy of the tree (without
#    .git and build products) in a temp dir: as root, the system user
#    $HASCHED_TEST_USER (created if missing) runs them through runuser;
#    otherwise the current user does. Suites, in this order:
#      regress  make TAP_TESTS= installcheck  (pg_regress, its own server)
#      pgtap    bash scripts/pgtap.sh          (pgTAP, a throwaway server)
#      tap      make REGRESS= installcheck     (prove test/t/*.pl with
#                                               PostgreSQL::Test::Cluster)
#    (PGXS has no prove_installcheck target: plain `make installcheck` runs
#    pg_regress and then, only if that passed, the TAP tests.)
#    Each result is recorded; a failure does not stop the others.
# 4. A per-suite summary, then the line "N passed, N failed" (N counts suites).
#    Exit status 0 only if every selected suite passed.
# The temp dir is removed at the end, and any server left running under it
# is stopped by its pid first.
#
# Environment:
#   HASCHED_SUITES         suites to run, in order (default "unit regress pgtap tap")
#   PROVE_TESTS            TAP files for the tap suite (default: all, test/t/*.pl)
#   HASCHED_TEST_USER      user that runs the suites when we are root
#                          (default hasched_test; not "hasched": a superuser
#                          named like the extension's schema would put schema
#                          hasched first on search_path via "$user")
#   HASCHED_SUITE_TIMEOUT  seconds per suite before it is killed and failed
#                          (default 1800; 0 = no limit)
#   HASCHED_SKIP_DEPS=1    do not run scripts/deps.sh
#   HASCHED_SKIP_BUILD=1   do not run make / make install (use what is installed)
#   HASCHED_KEEP_TMP=1     keep the temp copy for inspection (servers still stopped)
#   PG_CONFIG              default /usr/lib/postgresql/15/bin/pg_config
#   HASCHED_PGTAP_*        passed through to scripts/pgtap.sh
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

suites=${HASCHED_SUITES:-unit regress pgtap tap}
test_user=${HASCHED_TEST_USER:-hasched_test}
suite_timeout=${HASCHED_SUITE_TIMEOUT:-1800}

for s in $suites; do
    case "$s" in unit|regress|pgtap|tap) ;; *) hs_die "unknown suite '$s' in HASCHED_SUITES (known: unit regress pgtap tap)" ;; esac
done
[ -n "${suites// /}" ] || hs_die "HASCHED_SUITES is empty"
case "$suite_timeout" in ''|*[!0-9]*) hs_die "HASCHED_SUITE_TIMEOUT must be a number of seconds" ;; esac

declare -A result=()
declare -A note=()
passed=0
failed=0

summary_and_exit() {
    local s
    echo
    echo "==== hasched test summary ===="
    for s in $suites; do
        printf '  %-8s %s%s\n' "$s" "${result[$s]:-FAILED}" "${note[$s]:+ (${note[$s]})}"
    done
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] && exit 0
    exit 1
}

# A step before the suites failed: every selected suite counts as failed.
fail_all() {
    local s
    hs_warn "$1"
    for s in $suites; do
        result[$s]=FAILED
        note[$s]="not run: $1"
        failed=$((failed + 1))
    done
    summary_and_exit
}

# ---- 1. dependencies -------------------------------------------------------
if [ "${HASCHED_SKIP_DEPS:-0}" != 1 ]; then
    bash "$here/deps.sh" || fail_all "scripts/deps.sh failed"
fi

bindir=$(hs_pg_bindir)
export PATH="$bindir:$PATH"
command -v runuser >/dev/null 2>&1 || ! hs_is_root || fail_all "runuser not found (util-linux)"

# ---- 2. build and install -----------------------------------------------------
if [ "${HASCHED_SKIP_BUILD:-0}" != 1 ]; then
    hs_log "building (make)"
    make -C "$root" -s PG_CONFIG="$PG_CONFIG" || fail_all "build failed (make)"
    hs_log "installing (make install)"
    hs_as_root make -C "$root" -s PG_CONFIG="$PG_CONFIG" install >/dev/null \
        || fail_all "make install failed"
fi

# ---- 3. a fresh copy for an ordinary user --------------------------------------
suite_pid=
# As root the test user must reach it: always under /tmp then.
tmpbase=${TMPDIR:-/tmp}
hs_is_root && tmpbase=/tmp
work=$(mktemp -d "$tmpbase/hasched-test.XXXXXX") || fail_all "mktemp failed"
# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local n
    trap - EXIT
    if [ -n "$suite_pid" ] && kill -0 "$suite_pid" 2>/dev/null; then
        hs_warn "interrupted: stopping the running suite (pid $suite_pid)"
        kill -TERM "$suite_pid" 2>/dev/null
        for n in $(seq 1 20); do
            kill -0 "$suite_pid" 2>/dev/null || break
            sleep 0.5
        done
        kill -0 "$suite_pid" 2>/dev/null && kill -KILL "$suite_pid" 2>/dev/null
    fi
    hs_stop_servers_under "$work"
    if [ "${HASCHED_KEEP_TMP:-0}" = 1 ]; then
        hs_log "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

src=$work/src
mkdir -p "$src" "$work/tmp"
# Build products and old test output stay behind; unanchored patterns first,
# then top-level ones.
tar -C "$root" -cf - \
    --exclude=.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
    --anchored \
    --exclude=./results --exclude=./tmp_check --exclude=./tmp_check_regress \
    --exclude=./log --exclude=./regression.diffs --exclude=./regression.out \
    --exclude=./bench/out --exclude=./fuzz/out \
    . | tar -C "$src" -xf - || fail_all "could not copy the source tree to $src"

if hs_is_root; then
    if ! id -u "$test_user" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$test_user" \
            --shell /bin/bash --comment "hasched test runner" "$test_user" \
            || fail_all "could not create user $test_user"
        hs_log "created system user $test_user"
    fi
    chown -R "$test_user": "$work" || fail_all "chown of $work failed"
    runner=$test_user
else
    runner=$(id -un)
fi
hs_log "running suites [$suites] as $runner in $src"

# Run a command in the copy as the runner, with a time limit. Connection
# variables of the caller must not leak into the tests.
run_suite_cmd() {
    local limit=() rc
    [ "$suite_timeout" -gt 0 ] && limit=(timeout -k 30 "$suite_timeout")
    # In the background, so that a signal to this script is handled at once
    # (the EXIT trap then stops the suite and its servers).
    (
        cd "$src" || exit 1
        unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGOPTIONS PGPASSWORD PGSSLMODE
        export TMPDIR="$work/tmp"
        if hs_is_root; then
            exec runuser -u "$runner" -- "${limit[@]}" "$@"
        else
            exec "${limit[@]}" "$@"
        fi
    ) &
    suite_pid=$!
    wait "$suite_pid"
    rc=$?
    suite_pid=
    return "$rc"
}

record() {
    local s=$1 rc=$2
    if [ "$rc" -eq 0 ]; then
        result[$s]=passed
        passed=$((passed + 1))
    else
        result[$s]=FAILED
        if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
            note[$s]="timed out after ${suite_timeout}s"
        else
            note[$s]="exit $rc"
        fi
        failed=$((failed + 1))
    fi
    hs_log "suite $s: ${result[$s]}${note[$s]:+ (${note[$s]})}"
}

# ---- 4. the suites ----------------------------------------------------------------
for s in $suites; do
    echo
    hs_log "==== suite $s ===="
    case "$s" in
    unit)
        # the layer rules of src/ and the version chain, then plain C unit
        # tests of the pure functions (the cron parser)
        run_suite_cmd sh -c 'make -s check-layers check-version && make -s -C test/unit'
        rc=$?
        ;;
    regress)
        # Under PGXS, installcheck runs pg_regress and then, if TAP_TESTS is
        # set, the TAP tests: keep those for the tap suite.
        run_suite_cmd make -s PG_CONFIG="$PG_CONFIG" TAP_TESTS= installcheck
        rc=$?
        if [ "$rc" -ne 0 ] && [ -s "$src/regression.diffs" ]; then
            echo "---- regression.diffs ----"
            head -n 2000 "$src/regression.diffs"
            echo "---- end of regression.diffs ----"
        fi
        if [ "$rc" -ne 0 ] && [ -s "$src/log/postmaster.log" ]; then
            echo "---- tail of log/postmaster.log (pg_regress's server) ----"
            tail -n 60 "$src/log/postmaster.log"
            echo "---- end of log/postmaster.log ----"
        fi
        ;;
    pgtap)
        run_suite_cmd bash scripts/pgtap.sh
        rc=$?
        ;;
    tap)
        # PGXS has no prove_installcheck target: installcheck with REGRESS
        # emptied runs only the TAP part (prove over PROVE_TESTS).
        run_suite_cmd make -s PG_CONFIG="$PG_CONFIG" REGRESS= ${PROVE_TESTS:+PROVE_TESTS="$PROVE_TESTS"} installcheck
        rc=$?
        if [ "$rc" -ne 0 ] && [ -d "$src/tmp_check/log" ]; then
            for f in "$src"/tmp_check/log/*; do
                [ -f "$f" ] || continue
                echo "---- tail of tmp_check/log/${f##*/} ----"
                tail -n 80 "$f"
            done
            echo "---- end of tmp_check logs ----"
        fi
        ;;
    esac
    hs_stop_servers_under "$work"
    record "$s" "$rc"
done

summary_and_exit
