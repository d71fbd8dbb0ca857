#!/usr/bin/env bash
# Run the pgTAP suite (test/pgtap/*.sql) against a throwaway PostgreSQL server.
#
#   bash scripts/pgtap.sh          (as an ordinary user; scripts/test.sh runs
#                                   it as its test user after `make install`)
#
# It initdb's a fresh cluster in a temp dir (under $TMPDIR or /tmp), starts it
# with a unix socket in that dir only (no TCP), hasched preloaded and
# database postgres, runs pg_prove over the test files, then stops the server
# (pg_ctl stop -m fast, then by its pid if needed) and removes the temp dir,
# also on failure or interrupt. The superuser is named "postgres".
#
# Environment:
#   HASCHED_PGTAP_FILES       test files to run instead of test/pgtap/*.sql
#                             (space separated)
#   HASCHED_PGTAP_PRELOAD     1 (default): shared_preload_libraries='hasched';
#                             0: nothing preloaded
#   HASCHED_PGTAP_EXTENSIONS  extensions to create, in order
#                             (default "pgtap hasched"; CASCADE is used)
#   HASCHED_PGTAP_LISTEN      listen_addresses (default '' = unix socket only;
#                             127.0.0.1 gives TCP on a free port too)
#   HASCHED_PGTAP_PROVE_ARGS  extra pg_prove arguments (e.g. --verbose)
#   HASCHED_KEEP_TMP          1: keep the temp dir (server is still stopped)
#   PG_CONFIG                 default /usr/lib/postgresql/15/bin/pg_config
# Extra server settings: a file test/pgtap/pgtap.conf, if present, is
# appended to postgresql.conf.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

if hs_is_root; then
    hs_die "refusing to run as root (initdb refuses root). Run 'bash scripts/test.sh' (it switches to an ordinary user) or run this as an ordinary user."
fi

bindir=$(hs_pg_bindir)
for b in initdb pg_ctl psql; do
    [ -x "$bindir/$b" ] || hs_die "$bindir/$b not found (run scripts/deps.sh)"
done
command -v pg_prove >/dev/null 2>&1 || hs_die "pg_prove not found (package libtap-parser-sourcehandler-pgtap-perl; run scripts/deps.sh)"

files=()
if [ -n "${HASCHED_PGTAP_FILES:-}" ]; then
    # shellcheck disable=SC2206  # word splitting (and globbing) wanted
    files=(${HASCHED_PGTAP_FILES})
else
    shopt -s nullglob
    files=("$root"/test/pgtap/*.sql)
    shopt -u nullglob
fi
if [ "${#files[@]}" -eq 0 ]; then
    hs_die "no pgTAP test files (test/pgtap/*.sql): an empty suite does not pass"
fi
for f in "${files[@]}"; do
    [ -f "$f" ] || hs_die "no such test file: $f"
done

preload=${HASCHED_PGTAP_PRELOAD:-1}
extensions=${HASCHED_PGTAP_EXTENSIONS:-pgtap hasched}
listen=${HASCHED_PGTAP_LISTEN:-}
dbuser=postgres

tmp=$(mktemp -d "${TMPDIR:-/tmp}/hasched-pgtap.XXXXXX")
data=$tmp/data
logfile=$tmp/server.log
server_pid=

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$? n
    trap - EXIT INT TERM HUP
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null 2>&1 || true
        for n in $(seq 1 20); do
            kill -0 "$server_pid" 2>/dev/null || break
            [ "$n" -eq 1 ] && kill -QUIT "$server_pid" 2>/dev/null
            sleep 0.5
        done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
    fi
    if [ "${HASCHED_KEEP_TMP:-0}" = 1 ]; then
        hs_log "kept $tmp"
    else
        rm -rf "$tmp"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

show_log() {
    if [ -f "$logfile" ]; then
        echo "---- tail of server log ($logfile) ----" >&2
        tail -n 60 "$logfile" >&2
        echo "---- end of server log ----" >&2
    fi
}

"$bindir/initdb" -D "$data" -U "$dbuser" -A trust -E UTF8 --locale=C --no-sync >"$tmp/initdb.log" 2>&1 \
    || { cat "$tmp/initdb.log" >&2; hs_die "initdb failed"; }

if [ -n "$listen" ]; then
    port=$(hs_free_port) || hs_die "no free port found"
else
    port=5432   # the socket lives in our private directory: no clash
fi
{
    echo "# added by scripts/pgtap.sh"
    echo "listen_addresses = '$listen'"
    echo "port = $port"
    echo "unix_socket_directories = '$tmp'"
    echo "fsync = off"
    echo "full_page_writes = off"
    echo "max_prepared_transactions = 4"
    if [ "$preload" = 1 ]; then
        echo "shared_preload_libraries = 'hasched'"
    fi
    if [ -f "$root/test/pgtap/pgtap.conf" ]; then
        echo "# from test/pgtap/pgtap.conf"
        cat "$root/test/pgtap/pgtap.conf"
    fi
} >>"$data/postgresql.conf"

if ! "$bindir/pg_ctl" start -D "$data" -l "$logfile" -w -t 60 >"$tmp/pg_ctl.log" 2>&1; then
    [ -f "$data/postmaster.pid" ] && server_pid=$(head -n 1 "$data/postmaster.pid")
    cat "$tmp/pg_ctl.log" >&2
    show_log
    hs_die "the server did not start"
fi
server_pid=$(head -n 1 "$data/postmaster.pid")

psql_cmd=("$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$tmp" -p "$port" -U "$dbuser" -d postgres)
for e in $extensions; do
    if ! "${psql_cmd[@]}" -c "CREATE EXTENSION IF NOT EXISTS \"$e\" CASCADE" >"$tmp/ext.log" 2>&1; then
        cat "$tmp/ext.log" >&2
        show_log
        hs_die "CREATE EXTENSION $e failed"
    fi
done

hs_log "running ${#files[@]} pgTAP file(s) against a server on $tmp port $port"
# shellcheck disable=SC2206  # word splitting wanted
prove_args=(${HASCHED_PGTAP_PROVE_ARGS:-})
rc=0
pg_prove --psql-bin "$bindir/psql" -h "$tmp" -p "$port" -U "$dbuser" -d postgres \
    "${prove_args[@]}" "${files[@]}" || rc=$?
if [ "$rc" -ne 0 ]; then
    show_log
    hs_warn "pgTAP suite failed (pg_prove exit $rc)"
fi
exit "$rc"
