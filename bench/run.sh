#!/usr/bin/env bash
# hasched benchmarks: `make bench` runs this.  It prepares, then runs
# bench/bench.pl, which measures and prints the tables (see its header for
# the steps and the BENCH_* settings).  It asserts nothing.
#
#   bash bench/run.sh
#   BENCH_QUICK=1 bash bench/run.sh        # smoke run: every step but the
#                                          # long drain, a few seconds each
#
# 1. scripts/deps.sh installs missing Debian packages (BENCH_SKIP_DEPS=1:
#    not), then `make` and `make install` into the PostgreSQL that PG_CONFIG
#    names (BENCH_SKIP_BUILD=1: not).
# 2. bench.pl runs as an ordinary user: as root, the system user
#    $BENCH_OS_USER (default hasched, created with useradd -r -m if missing)
#    through runuser, from a copy of bench/ it can read; otherwise the
#    current user.  Raw output: bench/out/<UTC stamp>/ (run.log, summary.md,
#    one file per run, the servers' logs); bench/out/latest is the newest.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$top/scripts/lib.sh"
hs_prog=bench

os_user=${BENCH_OS_USER:-hasched}

cd "$top"
if [ "${BENCH_SKIP_DEPS:-0}" != 1 ] && [ -f scripts/deps.sh ]; then
    bash scripts/deps.sh
fi

stamp=$(date -u +%Y%m%dT%H%M%SZ)
out=$top/bench/out/$stamp
mkdir -p "$out"
ln -sfn "$stamp" "$top/bench/out/latest"

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
    hs_log "make, make install (PG_CONFIG=$PG_CONFIG; log: $out/build.log)"
    make -s PG_CONFIG="$PG_CONFIG" >"$out/build.log" 2>&1 ||
        { tail -n 30 "$out/build.log"; hs_die "make failed"; }
    hs_as_root make -s PG_CONFIG="$PG_CONFIG" install >>"$out/build.log" 2>&1 ||
        { tail -n 30 "$out/build.log"; hs_die "make install failed"; }
fi

commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
if git -C "$top" status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then
    commit+=" (+ uncommitted changes)"
fi
export BENCH_OUT=$out BENCH_COMMIT=$commit BENCH_INVOKED_AS="bash bench/run.sh"
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGDATA PGSERVICE PGOPTIONS PGPASSWORD

if ! hs_is_root; then
    exec perl "$here/bench.pl"
fi

# As root: an ordinary user runs the servers (initdb refuses root), from a
# copy of bench/ that it can read, writing into the output directory.
if ! id -u "$os_user" >/dev/null 2>&1; then
    useradd -r -m "$os_user"
    hs_log "created system user $os_user"
fi
copy=$(mktemp -d /tmp/hasched-bench-src.XXXXXX)
trap 'rm -rf "$copy"' EXIT
mkdir -p "$copy/bench" "$copy/test/perl"
cp "$here"/bench.pl "$here"/setup.sql "$here"/*.pgbench "$here"/*.c "$copy/bench/"
cp "$here"/../test/perl/*.pm "$here"/../test/perl/*.c "$copy/test/perl/"
chown -R "$os_user:" "$copy" "$out"
chmod -R a+rX "$copy"
vars=()
while IFS= read -r v; do
    vars+=("$v=${!v}")
done < <(compgen -e | grep -E '^(BENCH_|PG_CONFIG$)')
# In the background, so that a signal here is handled at once: SIGTERM goes
# to bench.pl itself (runuser would SIGKILL it 2 s after passing a SIGTERM
# on), which stops its servers by their pids and exits; runuser follows.
runuser -u "$os_user" -- env TMPDIR=/tmp "${vars[@]}" perl "$copy/bench/bench.pl" &
child=$!
stop_bench() {
    local p
    for p in $(ps -o pid= --ppid "$child" 2>/dev/null); do kill -TERM "$p" 2>/dev/null; done
    wait "$child"
}
trap 'stop_bench; exit 130' INT
trap 'stop_bench; exit 143' TERM
rc=0
wait "$child" || rc=$?
exit "$rc"
