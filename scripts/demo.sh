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
#     initdb a throwaway primary in a temp dir and start it with
#     shared_preload_libraries = 'hasched', on a unix socket in that dir only
#     (no TCP);
#  4. the pull API: submit jobs as a tenant, work them as a pull worker, show
#     fencing, retries, lease expiry (requeued by the scheduler) and
#     read-only mode, with psql;
#  5. high availability: a streaming standby (pg_basebackup -R, its own
#     port, synchronous), health() on both nodes; SQL jobs run by the
#     executors and a cron schedule every 2 seconds; the primary crashes
#     (SIGQUIT, as pg_ctl stop -m immediate), the standby is promoted
#     (pg_ctl promote): its scheduler opens a new epoch, writes a failover
#     event, retries the SQL job that was running, and the schedule goes on
#     firing there;
#  6. stop both servers (by their pids, also on failure or Ctrl-C) and remove
#     the temp dir.
# Refusals that are part of the demo are printed with their SQLSTATE; every
# step is checked, and the exit status is 0 only if all of them behaved.
#
# Environment:
#   HASCHED_DEMO_USER   user that runs the server when started as root (hasched)
#   HASCHED_SKIP_DEPS=1   do not run scripts/deps.sh
#   HASCHED_SKIP_BUILD=1  do not run make / make install (use what is installed)
#   HASCHED_KEEP_TMP=1    keep the temp dir (the servers are stopped anyway)
#   HASCHED_DEMO_PORT     port of the primary (default 55600; the standby
#                         uses the next one); unix sockets in the temp dir only
#   PG_CONFIG           default /usr/lib/postgresql/15/bin/pg_config
#
# shellcheck disable=SC2016,SC2034  # check() evaluates single-quoted conditions later
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
: "${PG_CONFIG:=/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG
demo_user=${HASCHED_DEMO_USER:-hasched}

# ---------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------
if [ -t 1 ]; then
    B=$'\e[1m' D=$'\e[2m' G=$'\e[32m' R=$'\e[31m' Y=$'\e[33m' N=$'\e[0m'
else
    B='' D='' G='' R='' Y='' N=''
fi
log() { printf '%sdemo:%s %s\n' "$D" "$N" "$*"; }
die() { printf '%sdemo: error:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }
section() { printf '\n%s== %s ==%s\n' "$B" "$*" "$N"; }
say() { printf '%s\n' "$*" | fold -s -w 78 | sed 's/^/  /'; }

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

if [ "${HASCHED_SKIP_BUILD:-0}" = 1 ]; then
    log "HASCHED_SKIP_BUILD=1: using the installed hasched"
else
    log "building (make)"
    make -C "$root" -s PG_CONFIG="$PG_CONFIG" >/dev/null || die "build failed (make)"
    log "installing (make install)"
    as_root make -C "$root" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || die "make install failed"
fi


# ---------------------------------------------------------------------------
# 3. a throwaway primary (and later a standby), run by an ordinary user
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
    chown "$runner": "$tmp"
else
    runner=$(id -un)
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/hasched-demo.XXXXXX")
fi
base_port=${HASCHED_DEMO_PORT:-55600}
case "$base_port" in ''|*[!0-9]*) die "HASCHED_DEMO_PORT must be a number" ;; esac
# per node: data directory, port, log file, postmaster pid (empty: not running)
declare -A data_of=([primary]=$tmp/primary [standby]=$tmp/standby)
declare -A port_of=([primary]=$base_port [standby]=$((base_port + 1)))
declare -A log_of=([primary]=$tmp/primary.log [standby]=$tmp/standby.log)
declare -A pid_of=([primary]='' [standby]='')

# Run a server program as the runner, from the temp dir (the caller's
# directory may be closed to that user).
as_runner() {
    if is_root; then
        (cd "$tmp" && runuser -u "$runner" -- "$@")
    else
        (cd "$tmp" && "$@")
    fi
}

# shellcheck disable=SC2317  # called from the EXIT trap
show_logs() {
    local node
    for node in primary standby; do
        [ -f "${log_of[$node]}" ] || continue
        echo "---- tail of the $node's server log ----" >&2
        tail -n 30 "${log_of[$node]}" >&2
    done
    echo "---- end of the server logs ----" >&2
}

# Stop a node's server: pg_ctl stop -m fast, then signals to its postmaster
# pid; only that pid, which this script started.
# shellcheck disable=SC2317  # also called from the EXIT trap
stop_node() {
    local node=$1 pid n
    pid=${pid_of[$node]}
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping the $node (pid $pid)"
        as_runner "$bindir/pg_ctl" stop -D "${data_of[$node]}" -m fast -w -t 30 >/dev/null 2>&1 || true
        for n in $(seq 1 20); do
            kill -0 "$pid" 2>/dev/null || break
            [ "$n" -eq 1 ] && kill -QUIT "$pid" 2>/dev/null
            sleep 0.5
        done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
    pid_of[$node]=
    return 0
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_node standby
    stop_node primary
    [ "$rc" -ne 0 ] && show_logs
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

# start_node NODE: start its server and remember the postmaster's pid.
start_node() {
    local node=$1 data=${data_of[$1]}
    if ! as_runner "$bindir/pg_ctl" start -D "$data" -l "${log_of[$node]}" -w -t 60 \
            >"$tmp/pg_ctl.$node.log" 2>&1; then
        [ -f "$data/postmaster.pid" ] && pid_of[$node]=$(head -n 1 "$data/postmaster.pid")
        cat "$tmp/pg_ctl.$node.log" >&2
        die "the $node did not start"
    fi
    pid_of[$node]=$(head -n 1 "$data/postmaster.pid")
    log "$node running: pid ${pid_of[$node]}, socket in $tmp (port ${port_of[$node]}), no TCP"
}

log "initdb as user $runner in $tmp"
as_runner "$bindir/initdb" -D "${data_of[primary]}" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }
cat >>"${data_of[primary]}/postgresql.conf" <<EOF
# added by scripts/demo.sh
listen_addresses = ''
port = ${port_of[primary]}
unix_socket_directories = '$tmp'
cluster_name = 'primary'
shared_preload_libraries = 'hasched'
hasched.database = 'postgres'
max_worker_processes = 16
hasched.max_executors = 4
fsync = off
EOF
start_node primary

# ---------------------------------------------------------------------------
# psql helpers: every statement is printed with the role and the node that
# run it; `on NODE` picks the node for the statements that follow
# ---------------------------------------------------------------------------
target=primary
on() { target=$1; }
psql_at() { "$bindir/psql" -X -q -h "$tmp" -p "${port_of[$target]}" -d postgres -P pager=off "$@"; }
checks=0
failures=0

# check DESCRIPTION CONDITION: CONDITION (shell code, evaluated now) holds.
check() {
    local what=$1 cond=$2
    checks=$((checks + 1))
    if eval "$cond"; then
        printf '  %sok%s  %s\n' "$G" "$N" "$what"
    else
        failures=$((failures + 1))
        printf '  %sNOT OK%s  %s\n' "$R" "$N" "$what"
    fi
}

print_sql() {
    local who="$1@$target" sql=$2 first=1 line
    while IFS= read -r line; do
        if [ "$first" = 1 ]; then
            printf '%s%s=>%s %s\n' "$Y" "$who" "$N" "$line"
            first=0
        else
            printf '%*s %s\n' "$((${#who} + 2))" '' "$line"
        fi
    done <<<"$sql"
}

# run ROLE SQL: print the statement, run it, print its output as a table;
# an error here is not part of the demo: stop.
run() {
    local role=$1 sql=$2 out
    print_sql "$role" "$sql"
    if ! out=$(psql_at -U "$role" -v ON_ERROR_STOP=1 -c "$sql" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    [ -n "$out" ] && printf '%s\n' "$out" | sed 's/^/    /'
    return 0
}

# val ROLE SQL: like run, for one value; it is printed and left in $REPLY.
val() {
    local role=$1 sql=$2
    print_sql "$role" "$sql"
    if ! REPLY=$(psql_at -U "$role" -v ON_ERROR_STOP=1 -At -c "$sql" 2>&1); then
        printf '%s\n' "$REPLY" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    printf '    %s\n' "$REPLY"
}

# call ROLE SQL: a statement without a result worth showing (a void function).
call() {
    local role=$1 sql=$2 out
    print_sql "$role" "$sql"
    if ! out=$(psql_at -U "$role" -v ON_ERROR_STOP=1 -At -c "$sql" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    printf '    %sdone%s\n' "$D" "$N"
}

# quiet ROLE SQL: one value into $REPLY, nothing printed (for checks).
quiet() {
    REPLY=$(psql_at -U "$1" -v ON_ERROR_STOP=1 -At -c "$2" 2>&1) \
        || { printf '%s\n' "$REPLY" >&2; die "check query failed on the $target: $2"; }
}

# wait_for ROLE SECONDS SQL: poll until SQL returns t; true if it did.
wait_for() {
    local role=$1 secs=$2 sql=$3 n
    for n in $(seq 1 $((secs * 10))); do
        REPLY=$(psql_at -U "$role" -At -c "$sql" 2>/dev/null) || REPLY=
        [ "$REPLY" = t ] && return 0
        sleep 0.1
    done
    return 1
}

# refused ROLE SQLSTATE SQL: the statement must fail with that SQLSTATE;
# its error is printed, the demo goes on.
refused() {
    local role=$1 want=$2 sql=$3 out state
    print_sql "$role" "$sql"
    out=$(psql_at -U "$role" -v ON_ERROR_STOP=0 -v SHOW_CONTEXT=never \
        -c "$sql" -c '\echo __sqlstate=:SQLSTATE' 2>&1) || true
    state=$(printf '%s\n' "$out" | sed -n 's/^__sqlstate=//p')
    printf '%s\n' "$out" | grep -v '^__sqlstate=' | sed 's/^/    /'
    printf '    %s(SQLSTATE %s)%s\n' "$D" "$state" "$N"
    check "refused with SQLSTATE $want" '[ "$state" = "$want" ]'
}

# claim ROLE WORKER MAX [LEASE]: claim from 'emails', print the jobs; their
# ids and tokens are left in CLAIM_IDS and CLAIM_TOKENS.
CLAIM_IDS=()
CLAIM_TOKENS=()
claim() {
    local role=$1 worker=$2 max=$3 lease=${4:-} sql out id token attempt prio payload
    sql="SELECT job_id, token, attempt, hasched.priority_name(priority) AS priority, payload
  FROM hasched.claim('emails', '$worker', max_jobs => $max${lease:+, lease => '$lease'});"
    print_sql "$role" "$sql"
    if ! out=$(psql_at -U "$role" -v ON_ERROR_STOP=1 -At -F $'\t' -c "$sql" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    CLAIM_IDS=()
    CLAIM_TOKENS=()
    printf '    %s%-6s %-12s %-7s %-8s %s%s\n' "$D" job_id token attempt priority payload "$N"
    while IFS=$'\t' read -r id token attempt prio payload; do
        [ -n "$id" ] || continue
        CLAIM_IDS+=("$id")
        CLAIM_TOKENS+=("$token")
        printf '    %-6s %-12s %-7s %-8s %s\n' "$id" "$token" "$attempt" "$prio" "$payload"
    done <<<"$out"
    if [ "${#CLAIM_IDS[@]}" -eq 1 ]; then
        printf '    %s(1 job)%s\n' "$D" "$N"
    else
        printf '    %s(%d jobs)%s\n' "$D" "${#CLAIM_IDS[@]}" "$N"
    fi
}

# shellcheck disable=SC2317  # called from the conditions that check() evaluates
contains() {   # contains WORD LIST...
    local w=$1 x
    shift
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

now_s() { date +%s.%N; }

# ---------------------------------------------------------------------------
# 4. the pull API
# ---------------------------------------------------------------------------
section "setting up: the extension, a queue, a tenant and its roles"
say "hasched is loaded by shared_preload_libraries; CREATE EXTENSION adds the schema hasched and the roles hasched_submitter, hasched_worker and hasched_admin. Its scheduler (a background worker) starts working as soon as the extension exists."
run postgres "CREATE EXTENSION hasched;"
say "A pull queue 'emails': external workers claim its jobs. Failed attempts back off from 1 s."
run postgres "INSERT INTO hasched.queue (name, transport, lease, backoff_base)
VALUES ('emails', 'pull', '30 seconds', '1 second');"
say "Tenants are roles: 'acme' on tier 'pro' (10,000 jobs a day, 100/s). 'app' submits for acme; 'worker' works the queues."
run postgres "CREATE ROLE acme NOLOGIN;
CREATE ROLE app LOGIN IN ROLE acme, hasched_submitter;
CREATE ROLE worker LOGIN IN ROLE hasched_worker;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'pro');
ALTER ROLE app SET hasched.tenant = 'acme';"

section "submitting jobs (as app, for tenant acme)"
val app "SELECT hasched.submit('emails', '{\"template\": \"welcome\", \"to\": \"ann@acme.test\"}', priority => 'high');"
job_high=$REPLY
val app "SELECT hasched.submit('emails', '{\"template\": \"newsletter\", \"to\": \"bob@acme.test\"}', priority => 'medium');"
job_medium=$REPLY
val app "SELECT hasched.submit('emails', '{\"template\": \"digest\", \"to\": \"cy@acme.test\"}', priority => 'low');"
job_low=$REPLY
say "An idempotency key: submitting the same key twice returns the same job."
val app "SELECT hasched.submit('emails', '{\"template\": \"receipt\", \"order\": 1001}', idempotency_key => 'order-1001-receipt');"
job_key=$REPLY
val app "SELECT hasched.submit('emails', '{\"template\": \"receipt\", \"order\": 1001}', idempotency_key => 'order-1001-receipt');"
check "the second submit with key order-1001-receipt returned the same id ($job_key)" \
    '[ "$REPLY" = "$job_key" ]'
quiet app "SELECT count(*) FROM hasched.job WHERE queue = 'emails'"
check "4 jobs exist for 5 submits (the repeated key made no new job)" '[ "$REPLY" = 4 ]'
run postgres "SELECT name, transport, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;"

section "a pull worker claims a batch"
say "Most urgent first: the high job, then the oldest medium one; low waits."
claim worker worker-1 2
check "a batch of 2 was handed out" '[ "${#CLAIM_IDS[@]}" -eq 2 ]'
[ "${#CLAIM_IDS[@]}" -eq 2 ] || die "cannot go on without 2 claimed jobs"
check "the high job ($job_high) first, then the newsletter ($job_medium)" \
    '[ "${CLAIM_IDS[0]}" = "$job_high" ] && [ "${CLAIM_IDS[1]}" = "$job_medium" ]'
[ "${CLAIM_IDS[1]}" = "$job_medium" ] || die "cannot go on without the newsletter job"
high_token=${CLAIM_TOKENS[0]}
say "The worker completes the first; the second fails (the SMTP server timed out): it is retried after a backoff."
call worker "SELECT hasched.complete($job_high, '$high_token', '{\"sent\": true}');"
val worker "SELECT hasched.fail($job_medium, '${CLAIM_TOKENS[1]}', 'smtp timeout');"
check "fail() returned 'failed' (attempts remain)" '[ "$REPLY" = failed ]'

section "fencing: a stale token changes nothing"
say "The worker retries its last report, with the token of an attempt that is already over:"
quiet postgres "SELECT concat_ws('|', state, attempt, finished_at, result) FROM hasched.job WHERE id = $job_high"
before=$REPLY
refused worker JQ006 "SELECT hasched.complete($job_high, '$high_token', '{\"sent\": \"twice\"}');"
quiet postgres "SELECT concat_ws('|', state, attempt, finished_at, result) FROM hasched.job WHERE id = $job_high"
check "job $job_high is unchanged: succeeded once, with its first result" '[ "$REPLY" = "$before" ]'

section "a worker that dies: the scheduler requeues its job"
say "worker-2 claims one job with a 1-second lease, then goes silent (no heartbeat) ..."
claim worker worker-2 1 '1 second'
check "worker-2 holds the receipt job" '[ "${CLAIM_IDS[0]:-}" = "$job_key" ]'
old_token=${CLAIM_TOKENS[0]:-none}
say "... the scheduler requeues expired leases on its own (it wakes at least once a second):"
wait_for postgres 15 "SELECT state = 'failed' FROM hasched.job WHERE id = $job_key" || true
run app "SELECT id, state, attempt, worker, last_error FROM hasched.jobs WHERE id = $job_key;"
quiet postgres "SELECT state || ' ' || attempt || ' ' || (SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $job_key) FROM hasched.job WHERE id = $job_key"
check "the receipt job is 'failed' after attempt 1, its run recorded as lease_expired" \
    '[ "$REPLY" = "failed 1 lease_expired" ]'
say "worker-2 wakes up and reports success with its old token: refused."
refused worker JQ006 "SELECT hasched.complete($job_key, '$old_token');"

section "read-only mode: submissions refused, claims and reports served"
call postgres "SELECT hasched.set_mode('read_only', 'demo: maintenance window');"
refused app JQ003 "SELECT hasched.submit('emails', '{\"template\": \"late\"}');"
call postgres "SELECT hasched.set_mode('normal');"

section "the worker drains the queue"
say "Waiting for the two retries' backoff to end ..."
wait_for postgres 15 "SELECT bool_and(run_at <= now()) FROM hasched.job WHERE queue = 'emails' AND state <> 'succeeded'" || true
claim worker worker-1 10
check "the low job and the two retries are handed out" \
    '[ "${#CLAIM_IDS[@]}" -eq 3 ] && contains "$job_low" "${CLAIM_IDS[@]}" && contains "$job_medium" "${CLAIM_IDS[@]}" && contains "$job_key" "${CLAIM_IDS[@]}"'
for i in "${!CLAIM_IDS[@]}"; do
    quiet worker "SELECT hasched.complete(${CLAIM_IDS[$i]}, '${CLAIM_TOKENS[$i]}', '{\"sent\": true}')"
done
say "(completed all ${#CLAIM_IDS[@]})"
run app "SELECT id, state, attempt, priority_class AS priority, result, last_error
  FROM hasched.jobs WHERE queue = 'emails' ORDER BY id;"
say "Run history: one row per attempt that did not succeed (a success is the job's own row)."
run postgres "SELECT job_id, attempt, worker, outcome, error FROM hasched.job_run ORDER BY finished_at, job_id;"
quiet postgres "SELECT string_agg(state || ':' || n, ' ' ORDER BY state)
                 FROM (SELECT state, count(*) n FROM hasched.job WHERE queue = 'emails' GROUP BY state) s"
check "every emails job succeeded ($REPLY)" '[ "$REPLY" = "succeeded:4" ]'
quiet postgres "SELECT string_agg(outcome || ':' || n, ' ' ORDER BY outcome)
                 FROM (SELECT outcome, count(*) n FROM hasched.job_run
                        WHERE outcome <> 'succeeded' GROUP BY outcome) s"
check "attempts that did not succeed: 1 failed, 1 lease expired ($REPLY)" \
    '[ "$REPLY" = "failed:1 lease_expired:1" ]'

# ---------------------------------------------------------------------------
# 5. high availability: a standby, SQL jobs, a schedule, a failover
# ---------------------------------------------------------------------------
section "a streaming standby"
say "pg_basebackup -R copies the primary and configures the copy as a standby streaming from it; it gets its own port (${port_of[standby]}) and cluster_name 'standby'."
if ! as_runner "$bindir/pg_basebackup" -h "$tmp" -p "${port_of[primary]}" -U postgres \
        -D "${data_of[standby]}" -R -X stream --checkpoint=fast --no-sync \
        >"$tmp/basebackup.log" 2>&1; then
    cat "$tmp/basebackup.log" >&2
    die "pg_basebackup failed"
fi
cat >>"${data_of[standby]}/postgresql.conf" <<EOF
# added by scripts/demo.sh for the standby
port = ${port_of[standby]}
cluster_name = 'standby'
EOF
start_node standby
on primary
wait_for postgres 30 "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = 'standby' AND state = 'streaming'" \
    || die "the standby does not stream from the primary"
say "Synchronous replication: a submit returns only once the standby has it (set after the base backup, so that the standby does not inherit it)."
call postgres "ALTER SYSTEM SET synchronous_standby_names = 'standby';"
call postgres "SELECT pg_reload_conf();"
wait_for postgres 30 "SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'" || true
run postgres "SELECT application_name, state, sync_state FROM pg_stat_replication;"
check "the standby replicates synchronously" '[ "$REPLY" = t ]'

section "health() on both nodes"
say "The scheduler runs on every node; on a standby it only watches: no executors, no scheduling."
on primary
run postgres "SELECT component, status, detail FROM hasched.health();"
quiet postgres "SELECT detail LIKE 'primary since %' FROM hasched.health() WHERE component = 'scheduler'"
check "the primary's scheduler is primary" '[ "$REPLY" = t ]'
on standby
wait_for postgres 15 "SELECT detail LIKE 'standby since %' FROM hasched.health() WHERE component = 'scheduler'" || true
run postgres "SELECT component, status, detail FROM hasched.health();"
check "the standby's scheduler is standby" '[ "$REPLY" = t ]'
quiet postgres "SELECT bool_and(state = 'free') FROM hasched.workers"
check "no executor runs on the standby (hasched.workers all free)" '[ "$REPLY" = t ]'
refused app JQ004 "SELECT hasched.submit('emails', '{\"template\": \"on the standby\"}');"

section "SQL jobs: run inside the database by the executors"
on primary
say "A queue with transport 'sql': its jobs' payload {\"sql\": ...} runs in the database, as the job's owner (here: app), in the same transaction that records the job's success."
run postgres "INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
CREATE TABLE public.demo (
  id bigint GENERATED ALWAYS AS IDENTITY,
  note text NOT NULL,
  ran_on text NOT NULL DEFAULT current_setting('cluster_name'),
  at timestamptz NOT NULL DEFAULT clock_timestamp());
GRANT SELECT, INSERT ON public.demo TO app;"
val app "SELECT hasched.submit_many('sqlq', ARRAY[
  '{\"sql\": \"INSERT INTO public.demo (note) VALUES (''job 1'')\"}',
  '{\"sql\": \"INSERT INTO public.demo (note) VALUES (''job 2'')\"}',
  '{\"sql\": \"INSERT INTO public.demo (note) VALUES (''job 3'')\"}']::jsonb[]);"
read -r -a sql_ids <<<"$(tr -d '{}' <<<"$REPLY" | tr ',' ' ')"
check "submit_many returned 3 ids" '[ "${#sql_ids[@]}" -eq 3 ]'
sql_list=$(IFS=,; echo "${sql_ids[*]:-0}")
wait_for postgres 15 "SELECT count(*) = 3 FROM hasched.job WHERE id IN ($sql_list) AND state = 'succeeded'" || true
check "the 3 SQL jobs succeeded" '[ "$REPLY" = t ]'
run postgres "SELECT id, state, attempt, epoch, worker, result FROM hasched.job WHERE id IN ($sql_list) ORDER BY id;"

section "a cron schedule: every 2 seconds"
say "Six fields: seconds first. Each run is a job of the sql queue, submitted by the scheduler. (An administrator creates it, for tenant acme.)"
val postgres "SELECT hasched.schedule('every-2s', '*/2 * * * * *', 'sqlq',
  '{\"sql\": \"INSERT INTO public.demo (note) VALUES (''tick'')\"}', tenant => 'acme');"
say "Waiting for two runs ..."
wait_for postgres 15 "SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'every-2s' AND state = 'succeeded'" || true
check "the schedule fired and its jobs succeeded on the primary" '[ "$REPLY" = t ]'
run app "SELECT name, spec, tenant, next_run_at::time(0) AS next_run, last_run_at::time(0) AS last_run, last_job_state FROM hasched.schedules;"
say "And a long SQL job: it sleeps 60 s while the first epoch is the newest, so it is still running when the primary fails."
val app "SELECT hasched.submit('sqlq', '{\"sql\": \"SELECT pg_sleep(CASE WHEN (SELECT max(epoch) FROM hasched.epoch) > 1 THEN 0 ELSE 60 END); INSERT INTO public.demo (note) VALUES (''long job'')\"}', timeout => '2 minutes');"
job_long=$REPLY
wait_for postgres 15 "SELECT state = 'running' FROM hasched.job WHERE id = $job_long" || true
check "the long job ($job_long) is running on the primary" '[ "$REPLY" = t ]'
run postgres "SELECT note, ran_on, count(*), min(at)::time(0) AS first, max(at)::time(0) AS last
  FROM public.demo GROUP BY note, ran_on ORDER BY min(at);"
on standby
wait_for postgres 15 "SELECT state = 'running' FROM hasched.job WHERE id = $job_long" || true
check "the standby has replayed the long job's start" '[ "$REPLY" = t ]'

section "the primary fails"
say "SIGQUIT to the primary's postmaster (pid ${pid_of[primary]}): what pg_ctl stop -m immediate sends; no shutdown checkpoint, nothing more is written."
kill -QUIT "${pid_of[primary]}" 2>/dev/null || die "could not signal the primary"
for _ in $(seq 1 300); do
    kill -0 "${pid_of[primary]}" 2>/dev/null || break
    sleep 0.1
done
kill -0 "${pid_of[primary]}" 2>/dev/null && die "the primary did not stop"
pid_of[primary]=
log "the primary is down"
on standby
run postgres "SELECT component, status, detail FROM hasched.health() WHERE component = 'scheduler';"
quiet postgres "SELECT detail LIKE 'standby since %' FROM hasched.health() WHERE component = 'scheduler'"
check "without a primary, the standby's scheduler still only watches" '[ "$REPLY" = t ]'

section "promoting the standby"
t0=$(now_s)
printf '%s%s$%s pg_ctl promote -D %s\n' "$Y" "$runner" "$N" "${data_of[standby]}"
as_runner "$bindir/pg_ctl" promote -D "${data_of[standby]}" -w -t 60 >"$tmp/promote.log" 2>&1 \
    || { cat "$tmp/promote.log" >&2; die "pg_ctl promote failed"; }
sed 's/^/    /' "$tmp/promote.log"
wait_for postgres 15 "SELECT detail LIKE 'primary since %' FROM hasched.health() WHERE component = 'scheduler'" || true
promoted=$REPLY
t1=$(now_s)
say "(The node is still called 'standby' in the prompts below: it is the primary now.)"
run postgres "SELECT component, status, detail FROM hasched.health();"
check "the promoted node's scheduler is primary" '[ "$promoted" = t ]'
say "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "health() said primary %.2f s after pg_ctl promote was called.", b - a }')"
say "The scheduler opened a new epoch for the new timeline; leases carry their epoch, so the old primary's are told apart:"
run postgres "SELECT epoch, timeline, started_at::time(3) AS started_at, reason,
       round((extract(epoch FROM started_at) - $t0)::numeric, 3) AS seconds_after_promote
  FROM hasched.epoch ORDER BY epoch;"
quiet postgres "SELECT string_agg(epoch || ':' || timeline, ' ' ORDER BY epoch) FROM hasched.epoch"
check "epochs: 1 on timeline 1, 2 on timeline 2 ($REPLY)" '[ "$REPLY" = "1:1 2:2" ]'
run postgres "SELECT at::time(3) AS at, kind, detail FROM hasched.event WHERE kind = 'failover';"
quiet postgres "SELECT count(*) = 1 AND bool_and(detail->>'epoch' = '2' AND detail->>'timeline' = '2'
                   AND detail->>'previous_timeline' = '1' AND (detail->>'sql_jobs_retried')::int >= 1)
                  FROM hasched.event WHERE kind = 'failover'"
check "one failover event: epoch 2, timeline 1 -> 2, SQL jobs retried" '[ "$REPLY" = t ]'

section "the scheduler resumes on the new primary"
say "The long job was running on the old primary: its attempt ended with outcome 'failover' and it runs again (no sleep in epoch 2)."
wait_for postgres 15 "SELECT state = 'succeeded' FROM hasched.job WHERE id = $job_long" || true
run postgres "SELECT id, state, attempt, epoch, worker FROM hasched.job WHERE id = $job_long;"
run postgres "SELECT job_id, attempt, epoch, outcome, error FROM hasched.job_run WHERE job_id = $job_long;"
quiet postgres "SELECT j.state || ' ' || j.attempt || ' ' || j.epoch || ' ' ||
                       (SELECT string_agg(r.outcome || '@' || r.epoch, ',') FROM hasched.job_run r WHERE r.job_id = j.id)
                  FROM hasched.job j WHERE j.id = $job_long"
check "the long job: attempt 1 ended by the failover, attempt 2 succeeded in epoch 2 ($REPLY)" \
    '[ "$REPLY" = "succeeded 2 2 failover@1" ]'
say "The schedule goes on firing, now here (epoch 2):"
wait_for postgres 15 "SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'every-2s' AND epoch = 2 AND state = 'succeeded'" || true
check "the schedule fired twice on the new primary" '[ "$REPLY" = t ]'
run postgres "SELECT id, fire_at::time(0) AS fire_at, state, attempt, epoch, worker
  FROM hasched.job WHERE schedule = 'every-2s' ORDER BY id DESC LIMIT 6;"
quiet postgres "SELECT count(*) FROM (SELECT fire_at FROM hasched.job WHERE schedule = 'every-2s'
                                        GROUP BY fire_at HAVING count(*) > 1) d"
check "no run of the schedule was fired twice" '[ "$REPLY" = 0 ]'
say "New submissions go to the new primary:"
val app "SELECT hasched.submit('sqlq', '{\"sql\": \"INSERT INTO public.demo (note) VALUES (''after the failover'')\"}');"
job_after=$REPLY
wait_for postgres 15 "SELECT state = 'succeeded' AND epoch = 2 FROM hasched.job WHERE id = $job_after" || true
check "a job submitted after the failover succeeded in epoch 2" '[ "$REPLY" = t ]'
run postgres "SELECT note, ran_on, count(*), min(at)::time(0) AS first, max(at)::time(0) AS last
  FROM public.demo GROUP BY note, ran_on ORDER BY min(at);"
quiet postgres "SELECT count(*) FROM public.demo WHERE note <> 'tick' GROUP BY note HAVING count(*) > 1"
check "no job's effect recorded twice (job 1-3, long job, after the failover: once each)" '[ -z "$REPLY" ]'
quiet postgres "SELECT count(*) FROM hasched.job WHERE id IN ($sql_list) AND state = 'succeeded'"
check "the SQL jobs of the old primary are all there, succeeded" '[ "$REPLY" = 3 ]'
run postgres "SELECT name, transport, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;"

echo
if [ "$failures" -eq 0 ]; then
    printf '%sdemo finished: all %d checks passed%s\n' "$G" "$checks" "$N"
    exit 0
fi
printf '%sdemo finished: %d of %d checks FAILED%s\n' "$R" "$failures" "$checks" "$N"
exit 1
