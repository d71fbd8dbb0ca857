#!/usr/bin/env bash
# `make stress`: the randomized concurrent checker of the claim path
# (test/stress/stress.c) against a throwaway server.
#
#   bash test/stress/run.sh
#   STRESS_SECONDS=60 STRESS_SEED=42 bash test/stress/run.sh
#
# 1. `make` and `make install` of hasched (as root, or through sudo), unless
#    STRESS_SKIP_BUILD=1; the checker is compiled with libpq into the temp dir.
# 2. A server in a temp dir (mktemp -d), run by an ordinary user (as root:
#    $STRESS_OS_USER, default hasched_test, created if missing), listening on
#    127.0.0.1 at a free port and a unix socket in the temp dir, with
#    shared_preload_libraries = 'hasched', max_prepared_transactions for the
#    clients, and hasched.scheduler_naptime = 100ms (expired leases of the
#    short-lease queue are requeued quickly).
# 3. ./stress for STRESS_SECONDS with STRESS_CLIENTS clients; it prints its
#    report and exits 1 when it found stranded jobs, double hand-outs, stale
#    tokens accepted or concurrency overruns.  That exit status is ours.
# The server is stopped by its pid and the temp dir removed on exit
# (STRESS_KEEP_TMP=1 keeps it, with the clients' logs and the server log).
#
# Environment (defaults in brackets):
#   STRESS_SECONDS     how long the clients run [600]
#   STRESS_CLIENTS     client processes [8]
#   STRESS_SEED        random seed [the time]
#   STRESS_SLACK_MS    stranded = free longer than claim_rewind_interval + this [100]
#   STRESS_REWIND      hasched.claim_rewind_interval of the server [1s]
#   STRESS_ARGS        more arguments for ./stress (--no-pauser, --no-holder, ...)
#   STRESS_EXTRA_CONF  more postgresql.conf lines (e.g. log_statement = 'all')
#   STRESS_OS_USER     system user that runs the server as root [hasched_test]
#   STRESS_SKIP_BUILD=1, STRESS_KEEP_TMP=1, PG_CONFIG
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
# shellcheck source=scripts/lib.sh
. "$top/scripts/lib.sh"

seconds=${STRESS_SECONDS:-600}
clients=${STRESS_CLIENTS:-8}
seed=${STRESS_SEED:-$(date +%s)}
slack=${STRESS_SLACK_MS:-100}
rewind=${STRESS_REWIND:-1s}
os_user=${STRESS_OS_USER:-hasched_test}
bindir=$(hs_pg_bindir)

for v in seconds clients seed slack; do
    case "${!v}" in ''|*[!0-9]*) hs_die "STRESS_${v^^} must be a number, not '${!v}'" ;; esac
done

if [ "${STRESS_SKIP_BUILD:-0}" != 1 ]; then
    hs_log "building and installing hasched (PG_CONFIG=$PG_CONFIG)"
    make -C "$top" -s PG_CONFIG="$PG_CONFIG"
    hs_as_root make -C "$top" -s PG_CONFIG="$PG_CONFIG" install >/dev/null
fi

tmp=$(mktemp -d /tmp/hasched-stress.XXXXXX)
server_pid=
cleanup() {
    local rc=$? i
    set +e
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        as_user "$bindir/pg_ctl" stop -D "$tmp/data" -m fast -w -t 60 >/dev/null 2>&1
        for i in $(seq 1 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$server_pid" 2>/dev/null && kill -QUIT "$server_pid" 2>/dev/null
    fi
    hs_stop_servers_under "$tmp"
    if [ "${STRESS_KEEP_TMP:-0}" = 1 ]; then
        hs_log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if hs_is_root; then
    if ! id -u "$os_user" >/dev/null 2>&1; then
        useradd --system --create-home --home-dir "/var/lib/$os_user" \
            --shell /bin/bash --comment "hasched test runner" "$os_user"
    fi
    chown "$os_user": "$tmp"
fi
as_user() {
    if hs_is_root; then
        runuser -u "$os_user" -- "$@"
    else
        "$@"
    fi
}

incdir=$("$PG_CONFIG" --includedir)
cc -O2 -Wall -Wextra -Wno-unused-parameter -I"$incdir" -o "$tmp/stress" "$here/stress.c" -lpq

port=$(hs_free_port) || hs_die "no free port"
as_user "$bindir/initdb" -D "$tmp/data" -A trust -U postgres --no-sync >"$tmp/initdb.log" 2>&1 ||
    { cat "$tmp/initdb.log"; hs_die "initdb failed"; }
max_prep=$(( clients * 2 + 8 ))
cat >>"$tmp/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
shared_preload_libraries = 'hasched'
max_connections = $(( clients + 30 ))
max_prepared_transactions = $max_prep
hasched.scheduler_naptime = '100ms'
hasched.claim_rewind_interval = '$rewind'
fsync = off
${STRESS_EXTRA_CONF:-}
EOF
as_user "$bindir/pg_ctl" start -D "$tmp/data" -l "$tmp/server.log" -w -t 60 >/dev/null ||
    { tail -n 40 "$tmp/server.log"; hs_die "server did not start"; }
server_pid=$(head -n 1 "$tmp/data/postmaster.pid")
hs_log "server pid $server_pid on 127.0.0.1:$port ($bindir, PG_CONFIG=$PG_CONFIG)"

set +e
as_user "$tmp/stress" --conninfo "host=127.0.0.1 port=$port user=postgres dbname=postgres" \
    --seconds "$seconds" --clients "$clients" --seed "$seed" --slack-ms "$slack" \
    --logdir "$tmp/logs" ${STRESS_ARGS:-}
rc=$?
set -e
if [ "$rc" -eq 2 ]; then
    tail -n 40 "$tmp/server.log"
fi
exit "$rc"
