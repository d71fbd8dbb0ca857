#!/usr/bin/env bash
# Copyright: hasched contributors
#
# test/chaos/run.sh: `make chaos`, `make soak` and `make chaos-smoke`.
#
#   bash test/chaos/run.sh run|soak|smoke [chaos.py options]
#
# Builds and installs hasched (as scripts/test.sh does; HASCHED_SKIP_BUILD=1
# to skip), copies test/chaos to a fresh temp dir and runs
# test/chaos/chaos.py there as an ordinary user: as root, the system user
# $HASCHED_TEST_USER (default hasched_test, created if missing) through
# runuser, since PostgreSQL and Patroni refuse root. Everything it starts is
# stopped by pid at the end (and leftovers under the temp dir by
# scripts/lib.sh's hs_stop_servers_under). The report is copied to
# CHAOS_REPORT (default test/chaos/out/<command>-report.md).
#
# Environment: PG_CONFIG, CHAOS_PORT_BASE (25000), CHAOS_REPEAT (3),
# CHAOS_SCENARIOS (all), SOAK_MINUTES (30), SOAK_FAULT_EVERY (180),
# CHAOS_RATE (10 submits/s per generator), CHAOS_RABBIT=0 (run without the
# RabbitMQ cluster; the smoke never starts it), CHAOS_CIRCUIT_OPEN (the
# dispatcher's hasched.circuit_open_duration, 10s), HASCHED_KEEP_TMP=1
# keeps the dir.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/lib.sh
. "$root/scripts/lib.sh"

cmd=${1:-run}
shift || true
case "$cmd" in run|soak|smoke) ;; *) hs_die "usage: run.sh run|soak|smoke" ;; esac
test_user=${HASCHED_TEST_USER:-hasched_test}

bindir=$(hs_pg_bindir)
if [ "${HASCHED_SKIP_BUILD:-0}" != 1 ]; then
    hs_log "building and installing (PG_CONFIG=$PG_CONFIG)"
    make -C "$root" -s PG_CONFIG="$PG_CONFIG" || hs_die "build failed"
    hs_as_root make -C "$root" -s PG_CONFIG="$PG_CONFIG" install >/dev/null \
        || hs_die "make install failed"
fi
need=(/usr/bin/patroni /usr/sbin/haproxy /usr/share/java/zookeeper.jar "$bindir/hasched-worker")
if [ "$cmd" != smoke ] && [ "${CHAOS_RABBIT:-1}" != 0 ]; then
    need+=(/usr/lib/rabbitmq/bin/rabbitmq-server /usr/bin/epmd)
fi
for b in "${need[@]}"; do
    [ -e "$b" ] || hs_die "$b is missing (scripts/deps.sh installs patroni, haproxy, zookeeper, rabbitmq-server; make install hasched-worker)"
done

work=$(mktemp -d /tmp/hasched-chaos.XXXXXX) || hs_die "mktemp failed"
pid=
stop_leftovers() {
    local p
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        [ "$p" = "$$" ] && continue
        { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null | grep -qF "$work/" || continue
        kill "-$1" "$p" 2>/dev/null
    done
}
cleanup() {
    trap - EXIT
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    hs_stop_servers_under "$work"
    # whatever else the suite started and left (Patroni, HAProxy, netgate,
    # hasched-worker, load generators): the processes whose command line
    # names this run's directory, by pid
    stop_leftovers TERM
    sleep 2
    stop_leftovers KILL
    if [ "${HASCHED_KEEP_TMP:-0}" = 1 ]; then hs_log "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp -a "$here" "$work/chaos"
rm -rf "$work/chaos/out"
runner=$(id -un)
if hs_is_root; then
    if ! id -u "$test_user" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$test_user" \
            --shell /bin/bash --comment "hasched test runner" "$test_user" \
            || hs_die "could not create user $test_user"
    fi
    chown -R "$test_user": "$work"
    runner=$test_user
fi

args=(--dir "$work/run" --report "$work/report.md")
case "$cmd" in
run)   args+=(--repeat "${CHAOS_REPEAT:-3}")
       [ -n "${CHAOS_SCENARIOS:-}" ] && args+=(--scenarios "$CHAOS_SCENARIOS") ;;
soak)  args+=(--minutes "${SOAK_MINUTES:-30}" --fault-every "${SOAK_FAULT_EVERY:-180}") ;;
esac
hs_log "chaos $cmd as $runner in $work"
(
    cd "$work" || exit 1
    unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGOPTIONS PGPASSWORD
    export PG_BINDIR="$bindir" HOME="$work"
    if hs_is_root; then
        exec runuser -u "$runner" -- /usr/bin/python3 "$work/chaos/chaos.py" "$cmd" "${args[@]}" "$@"
    else
        exec /usr/bin/python3 "$work/chaos/chaos.py" "$cmd" "${args[@]}" "$@"
    fi
) &
pid=$!
wait "$pid"
rc=$?
pid=
out=${CHAOS_REPORT:-$here/out/$cmd-report.md}
if [ -s "$work/report.md" ]; then
    mkdir -p "$(dirname "$out")"
    cp "$work/report.md" "$out" && hs_log "report: $out"
    # the soak's memory samples (chaos.py writes them beside its report)
    if [ -s "$work/report.md.rss.csv" ]; then
        cp "$work/report.md.rss.csv" "${out%.md}-rss.csv" && hs_log "memory samples: ${out%.md}-rss.csv"
    fi
fi
exit "$rc"
