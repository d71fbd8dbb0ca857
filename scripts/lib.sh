# shellcheck shell=bash
# Shared helpers for scripts/deps.sh, scripts/test.sh and scripts/pgtap.sh.
# Source it; it defines functions and a few variables and runs nothing else.
#
# Environment understood here:
#   PG_CONFIG   pg_config of the PostgreSQL to build and test against
#               (default: /usr/lib/postgresql/15/bin/pg_config; Debian's
#               /usr/bin/pg_config is a wrapper that picks the newest version)

: "${PG_CONFIG:=/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG

hs_prog=$(basename "${0:-hasched}")

hs_log() { printf '%s: %s\n' "$hs_prog" "$*"; }
hs_warn() { printf '%s: %s\n' "$hs_prog" "$*" >&2; }
hs_die() { printf '%s: error: %s\n' "$hs_prog" "$*" >&2; exit 1; }

hs_is_root() { [ "$(id -u)" -eq 0 ]; }

# Run a command as root: directly when we are root, through sudo otherwise.
hs_as_root() {
    if hs_is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        hs_warn "needs root for: $*"
        hs_warn "run as root, or install sudo"
        return 1
    fi
}

# The bin directory of the PostgreSQL that PG_CONFIG describes.
hs_pg_bindir() {
    if [ -x "$PG_CONFIG" ] || command -v "$PG_CONFIG" >/dev/null 2>&1; then
        "$PG_CONFIG" --bindir
    else
        echo /usr/lib/postgresql/15/bin
    fi
}

# A TCP port on 127.0.0.1 that nobody listens on right now (best effort:
# a refused connection means free).
hs_free_port() {
    local port i
    for i in $(seq 1 200); do
        port=$(( 20000 + (RANDOM * 32768 + RANDOM + i) % 40000 ))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    return 1
}

# Stop every PostgreSQL server whose data directory lies under DIR, by the
# pid in its postmaster.pid: pg_ctl stop -m fast first, then SIGQUIT/SIGKILL
# to that pid. Used as a safety net after suites and in traps; servers that
# were stopped properly have no postmaster.pid any more. ZooKeeper nodes of
# the TAP tests (java, by their zookeeper.pid) and RabbitMQ brokers (by
# rabbitmq.pid and epmd.pid) are killed too.
hs_stop_servers_under() {
    local dir=$1 pidfile datadir pid bindir n
    [ -d "$dir" ] || return 0
    bindir=$(hs_pg_bindir)
    while IFS= read -r pidfile; do
        datadir=$(dirname "$pidfile")
        pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
        case "$pid" in ''|*[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null || continue
        # only a postgres process, never whatever reused the pid
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in postgres|postmaster) ;; *) continue ;; esac
        hs_warn "stopping leftover server pid $pid (data directory $datadir)"
        if hs_is_root; then
            runuser -u "$(stat -c %U "$datadir")" -- "$bindir/pg_ctl" stop -D "$datadir" -m fast -w -t 30 >/dev/null 2>&1 || true
        else
            "$bindir/pg_ctl" stop -D "$datadir" -m fast -w -t 30 >/dev/null 2>&1 || true
        fi
        for n in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            [ "$n" -eq 1 ] && kill -QUIT "$pid" 2>/dev/null
            sleep 1
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    done < <(find "$dir" -name postmaster.pid -type f 2>/dev/null)
    # ZooKeeper nodes of the TAP tests (test/perl/HaschedZooKeeper.pm)
    while IFS= read -r pidfile; do
        pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
        case "$pid" in ''|*[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null || continue
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in java) ;; *) continue ;; esac
        hs_warn "stopping leftover ZooKeeper pid $pid ($(dirname "$pidfile"))"
        kill -KILL "$pid" 2>/dev/null
    done < <(find "$dir" -name zookeeper.pid -type f 2>/dev/null)
    # RabbitMQ brokers of the TAP tests (test/perl/HaschedRabbitMQ.pm): the
    # beam.smp process by rabbitmq.pid and the private epmd by epmd.pid
    while IFS= read -r pidfile; do
        pid=$(head -n 1 "$pidfile" 2>/dev/null || true)
        case "$pid" in ''|*[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null || continue
        case "$(cat "/proc/$pid/comm" 2>/dev/null)" in beam.smp|epmd|rabbitmq-serve*) ;; *) continue ;; esac
        hs_warn "stopping leftover RabbitMQ process $pid ($pidfile)"
        kill -KILL "$pid" 2>/dev/null
    done < <(find "$dir" \( -name rabbitmq.pid -o -name epmd.pid \) -type f 2>/dev/null)
    return 0
}
