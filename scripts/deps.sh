#!/usr/bin/env bash
# Install the Debian 12 packages that hasched's build and tests need, if any
# are missing. Idempotent: when everything is present it only says so.
#
#   bash scripts/deps.sh
#
# It never starts a PostgreSQL service: while it installs, a temporary
# /usr/sbin/policy-rc.d (exit 101) stops Debian's maintainer scripts from
# starting one (written only if none exists, removed afterwards), and any
# cluster that came online during the install is stopped again.
#
# More packages (RabbitMQ, ZooKeeper, Patroni, client libraries, ...):
#   - add them to EXTRA_PACKAGES below, or
#   - list them, one per line (# comments allowed), in a file
#     scripts/deps.d/<name>.list, or
#   - pass them for one run: HASCHED_EXTRA_PACKAGES="pkg1 pkg2" bash scripts/deps.sh
set -euo pipefail

# What the build, pg_regress, pgTAP and the TAP tests need.
PACKAGES=(
    postgresql-15 postgresql-client-15 postgresql-server-dev-15
    postgresql-15-pgtap libipc-run-perl libtap-parser-sourcehandler-pgtap-perl
    make gcc perl util-linux procps
    libpq-dev   # hasched-worker links libpq
)
# Packages for later parts of the project (brokers, coordination, ...).
EXTRA_PACKAGES=(
)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/lib.sh
. "$here/lib.sh"

wanted=("${PACKAGES[@]}" "${EXTRA_PACKAGES[@]}")
if [ -d "$here/deps.d" ]; then
    for f in "$here"/deps.d/*.list; do
        [ -f "$f" ] || continue
        while read -r line; do
            line=${line%%#*}
            for p in $line; do wanted+=("$p"); done
        done <"$f"
    done
fi
# shellcheck disable=SC2206  # word splitting wanted
[ -n "${HASCHED_EXTRA_PACKAGES:-}" ] && wanted+=(${HASCHED_EXTRA_PACKAGES})

missing=()
for p in "${wanted[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
    case "$status" in
        ii*) ;;
        *) case " ${missing[*]} " in *" $p "*) ;; *) missing+=("$p") ;; esac ;;
    esac
done

if [ "${#missing[@]}" -eq 0 ]; then
    hs_log "all ${#wanted[@]} packages already installed, nothing to do"
    exit 0
fi

if ! hs_is_root && ! command -v sudo >/dev/null 2>&1; then
    hs_die "missing packages: ${missing[*]}; run this as root or install them: apt-get install ${missing[*]}"
fi

online_clusters() {
    command -v pg_lsclusters >/dev/null 2>&1 || return 0
    pg_lsclusters -h 2>/dev/null | awk '$4 == "online" { print $1 "/" $2 }' || true
}

policy=/usr/sbin/policy-rc.d
made_policy=0
aptlog=$(mktemp "${TMPDIR:-/tmp}/hasched-deps.XXXXXX")
cleanup() {
    if [ "$made_policy" = 1 ]; then hs_as_root rm -f "$policy" || true; fi
    rm -f "$aptlog"
}
trap cleanup EXIT

before=$(online_clusters)
if [ ! -e "$policy" ]; then
    hs_as_root sh -c "printf '#!/bin/sh\n# temporary, from hasched scripts/deps.sh\nexit 101\n' >'$policy' && chmod 755 '$policy'"
    made_policy=1
fi

apt() {
    hs_as_root env DEBIAN_FRONTEND=noninteractive "$@" >>"$aptlog" 2>&1
}
if ! apt apt-get update || ! apt apt-get install -y --no-install-recommends "${missing[@]}"; then
    tail -n 40 "$aptlog" >&2
    hs_die "could not install: ${missing[*]}"
fi

# Nothing we installed may leave a server running.
after=$(online_clusters)
for c in $after; do
    case " $(echo "$before" | tr '\n' ' ') " in *" $c "*) continue ;; esac
    hs_warn "stopping cluster $c that the install started"
    hs_as_root pg_ctlcluster "${c%%/*}" "${c#*/}" stop || true
done

hs_log "installed ${#missing[@]} missing packages: ${missing[*]}"
