#!/usr/bin/env bash
# hasched demo: the README's first command (`make demo` runs it too).
#
#   bash scripts/demo.sh
#
# On a fresh Debian 12 machine, from a clone, as root or as a user with sudo:
#  1. scripts/deps.sh installs the Debian packages that are missing;
#  2. make, make install (as root, or through sudo);
#  3. as an ordinary user (as root: the system user $HASCHED_DEMO_USER,
#     default "hasched", created if missing; otherwise the current user)
#     scripts/demo.pl runs the narrated demo in a temp dir: a throwaway
#     primary and then a streaming standby, started and stopped through the
#     TAP tests' harness (test/perl/HaschedCluster.pm on
#     PostgreSQL::Test::Cluster), on unix sockets in that dir only (no TCP):
#       - the pull API: submit jobs as a tenant, work them as a pull worker,
#         fencing, retries, lease expiry (requeued by the scheduler) and
#         read-only mode, with psql;
#       - high availability: the standby (synchronous), health() on both
#         nodes; SQL jobs run by the executors and a cron schedule every 2
#         seconds; the primary crashes (pg_ctl stop -m immediate: SIGQUIT),
#         the standby is promoted (pg_ctl promote): its scheduler opens a new
#         epoch, writes a failover event, retries the SQL job that was
#         running, and the schedule goes on firing there;
#  4. both servers are stopped (by demo.pl; then, as a safety net, any
#     server left under the temp dir by the pid in its postmaster.pid), also
#     on failure or Ctrl-C, and the temp dir is removed.
# Refusals that are part of the demo are printed with their SQLSTATE; every
# step is checked, and the exit status is 0 only if all of them behaved.
#
# Environment:
#   HASCHED_DEMO_USER   user that runs the demo when started as root (hasched)
#   HASCHED_SKIP_DEPS=1   do not run scripts/deps.sh
#   HASCHED_SKIP_BUILD=1  do not run make / make install (use what is installed)
#   HASCHED_KEEP_TMP=1    keep the temp dir (the servers are stopped anyway)
#   HASCHED_DEMO_PORT     port of the primary (the standby uses the next one;
#                         default: free ports); unix sockets in the temp dir only
#   PG_CONFIG           default /usr/lib/postgresql/15/bin/pg_config
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
: "${PG_CONFIG:=/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG
demo_user=${HASCHED_DEMO_USER:-hasched}
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

# ---------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------
if [ -t 1 ]; then
    B=$'\e[1m' D=$'\e[2m' R=$'\e[31m' N=$'\e[0m'
else
    B='' D='' R='' N=''
fi
log() { printf '%sdemo:%s %s\n' "$D" "$N" "$*"; }
die() { printf '%sdemo: error:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }

is_root() { [ "$(id -u)" -eq 0 ]; }
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "needs root for: $* (run as root, or install sudo)"
    fi
}

# ---------------------------------------------------------------------------
# 1. dependencies, 2. build and install
# ---------------------------------------------------------------------------
section "preparing: packages, build, install"
if [ "${HASCHED_SKIP_DEPS:-0}" = 1 ]; then
    log "HASCHED_SKIP_DEPS=1: not checking packages"
elif [ -f "$here/deps.sh" ]; then
    log "checking Debian packages (scripts/deps.sh)"
    bash "$here/deps.sh" || die "scripts/deps.sh failed"
else
    log "note: scripts/deps.sh is missing; assuming the packages are installed"
fi

[ -x "$PG_CONFIG" ] || command -v "$PG_CONFIG" >/dev/null 2>&1 \
    || die "pg_config not found at $PG_CONFIG (package postgresql-server-dev-15)"
bindir=$("$PG_CONFIG" --bindir)
for b in initdb pg_ctl psql pg_basebackup; do
    [ -x "$bindir/$b" ] || die "$bindir/$b not found (package postgresql-15)"
done
# PostgreSQL::Test::Cluster and pg_regress (which its initdb step runs) come
# with the server's PGXS files; IPC::Run with libipc-run-perl
pgxs_src=$(cd "$(dirname "$("$PG_CONFIG" --pgxs)")/.." && pwd)
[ -f "$pgxs_src/test/perl/PostgreSQL/Test/Cluster.pm" ] \
    || die "$pgxs_src/test/perl/PostgreSQL/Test/Cluster.pm not found (package postgresql-server-dev-15)"
[ -x "$pgxs_src/test/regress/pg_regress" ] \
    || die "$pgxs_src/test/regress/pg_regress not found (package postgresql-server-dev-15)"
perl -MIPC::Run -e 1 2>/dev/null || die "the Perl module IPC::Run is missing (package libipc-run-perl)"

if [ "${HASCHED_SKIP_BUILD:-0}" = 1 ]; then
    log "HASCHED_SKIP_BUILD=1: using the installed hasched"
else
    log "building (make)"
    make -C "$root" -s PG_CONFIG="$PG_CONFIG" >/dev/null || die "build failed (make)"
    log "installing (make install)"
    as_root make -C "$root" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || die "make install failed"
fi


# ---------------------------------------------------------------------------
# 3. the demo, run by an ordinary user in a temp dir
# ---------------------------------------------------------------------------
if is_root; then
    command -v runuser >/dev/null 2>&1 || die "runuser not found (package util-linux)"
    if ! id -u "$demo_user" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$demo_user" \
            --shell /bin/bash --comment "hasched demo server" "$demo_user" \
            || die "could not create user $demo_user"
        log "created system user $demo_user"
    fi
    runner=$demo_user
    tmp=$(mktemp -d /tmp/hasched-demo.XXXXXX)
else
    runner=$(id -un)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/hasched-demo.XXXXXX")
fi
case "${HASCHED_DEMO_PORT:-}" in *[!0-9]*) die "HASCHED_DEMO_PORT must be a number" ;; esac
demo_pid=

# shellcheck disable=SC2317  # called from the traps
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM HUP
    if [ -n "$demo_pid" ] && kill -0 "$demo_pid" 2>/dev/null; then
        # demo.pl stops its servers when it gets a signal (once; it
        # ignores more while it stops them); give it the time to
        pid=$(cat "$tmp/demo.pid" 2>/dev/null || true)
        case "$pid" in ''|*[!0-9]*) pid=$demo_pid ;; esac
        # only the runner's own process (the file is the runner's)
        [ "$(stat -c %U "/proc/$pid" 2>/dev/null)" = "$runner" ] || pid=$demo_pid
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 60); do
            kill -0 "$demo_pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    # by pid: any server that the demo could not stop
    hs_stop_servers_under "$tmp"
    if [ "${HASCHED_KEEP_TMP:-0}" = 1 ]; then
        log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The runner reads the demo from the temp dir (the clone may be closed to it).
mkdir "$tmp/lib"
cp "$here/demo.pl" "$root/test/perl/HaschedCluster.pm" "$tmp/lib/"
is_root && chown -R "$runner": "$tmp"

# In the background, so that a signal to this script is handled at once.
# From the temp dir, without the caller's connection settings; the logs,
# data directories and sockets of PostgreSQL::Test::Cluster go under it.
(
    cd "$tmp"
    demo_cmd=(env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGDATA
        -u PGSERVICE -u PGOPTIONS -u PGPASSWORD -u PGSSLMODE
        PATH="$bindir:$PATH" TESTDIR="$tmp" TMPDIR="$tmp"
        PG_REGRESS="$pgxs_src/test/regress/pg_regress"
        HASCHED_DEMO_PIDFILE="$tmp/demo.pid" HASCHED_DEMO_PORT="${HASCHED_DEMO_PORT:-}"
        perl -I "$pgxs_src/test/perl" -I "$tmp/lib" "$tmp/lib/demo.pl")
    [ "${HASCHED_KEEP_TMP:-0}" = 1 ] && demo_cmd=(env PG_TEST_NOCLEAN=1 "${demo_cmd[@]}")
    if is_root; then
        exec runuser -u "$runner" -- "${demo_cmd[@]}"
    else
        exec "${demo_cmd[@]}"
    fi
) &
demo_pid=$!
rc=0
wait "$demo_pid" || rc=$?
demo_pid=
exit "$rc"
