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
#     initdb a throwaway cluster in a temp dir and start it with
#     shared_preload_libraries = 'hasched', on a unix socket in that dir only
#     (no TCP);
#  4. submit jobs as a tenant, work them as a pull worker, show fencing,
#     scheduling, retries, lease expiry and read-only mode, with psql;
#  5. stop the server (by its pid, also on failure or Ctrl-C) and remove the
#     temp dir.
# Refusals that are part of the demo are printed with their SQLSTATE; every
# step is checked, and the exit status is 0 only if all of them behaved.
#
# Environment:
#   HASCHED_DEMO_USER   user that runs the server when started as root (hasched)
#   HASCHED_SKIP_DEPS=1   do not run scripts/deps.sh
#   HASCHED_SKIP_BUILD=1  do not run make / make install (use what is installed)
#   HASCHED_KEEP_TMP=1    keep the temp dir (the server is stopped anyway)
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
for b in initdb pg_ctl psql; do
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
# 3. a throwaway server, run by an ordinary user
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
data=$tmp/data
logfile=$tmp/server.log
port=55600
server_pid=

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
show_log() {
    if [ -f "$logfile" ]; then
        echo "---- tail of the server log ----" >&2
        tail -n 40 "$logfile" >&2
        echo "---- end of the server log ----" >&2
    fi
}

# shellcheck disable=SC2317  # called from the EXIT trap
cleanup() {
    local rc=$? n
    trap - EXIT INT TERM HUP
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        log "stopping the server (pid $server_pid)"
        as_runner "$bindir/pg_ctl" stop -D "$data" -m fast -w -t 30 >/dev/null 2>&1 || true
        for n in $(seq 1 20); do
            kill -0 "$server_pid" 2>/dev/null || break
            [ "$n" -eq 1 ] && kill -QUIT "$server_pid" 2>/dev/null
            sleep 0.5
        done
        kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
    fi
    [ "$rc" -ne 0 ] && show_log
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

log "initdb as user $runner in $tmp"
as_runner "$bindir/initdb" -D "$data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$tmp/initdb.log" 2>&1 || { cat "$tmp/initdb.log" >&2; die "initdb failed"; }
cat >>"$data/postgresql.conf" <<EOF
# added by scripts/demo.sh
listen_addresses = ''
port = $port
unix_socket_directories = '$tmp'
shared_preload_libraries = 'hasched'
fsync = off
EOF
if ! as_runner "$bindir/pg_ctl" start -D "$data" -l "$logfile" -w -t 60 >"$tmp/pg_ctl.log" 2>&1; then
    [ -f "$data/postmaster.pid" ] && server_pid=$(head -n 1 "$data/postmaster.pid")
    cat "$tmp/pg_ctl.log" >&2
    die "the server did not start"
fi
server_pid=$(head -n 1 "$data/postmaster.pid")
log "server running: pid $server_pid, socket in $tmp (port $port), no TCP"

# ---------------------------------------------------------------------------
# psql helpers: every statement is printed with the role that runs it
# ---------------------------------------------------------------------------
PSQL=("$bindir/psql" -X -q -h "$tmp" -p "$port" -d postgres -P pager=off)
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
    local role=$1 sql=$2 first=1 line
    while IFS= read -r line; do
        if [ "$first" = 1 ]; then
            printf '%s%s=>%s %s\n' "$Y" "$role" "$N" "$line"
            first=0
        else
            printf '%*s %s\n' "$((${#role} + 2))" '' "$line"
        fi
    done <<<"$sql"
}

# run ROLE SQL: print the statement, run it, print its output as a table;
# an error here is not part of the demo: stop.
run() {
    local role=$1 sql=$2 out
    print_sql "$role" "$sql"
    if ! out=$("${PSQL[@]}" -U "$role" -v ON_ERROR_STOP=1 -c "$sql" 2>&1); then
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
    if ! REPLY=$("${PSQL[@]}" -U "$role" -v ON_ERROR_STOP=1 -At -c "$sql" 2>&1); then
        printf '%s\n' "$REPLY" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    printf '    %s\n' "$REPLY"
}

# call ROLE SQL: a statement without a result worth showing (a void function).
call() {
    local role=$1 sql=$2 out
    print_sql "$role" "$sql"
    if ! out=$("${PSQL[@]}" -U "$role" -v ON_ERROR_STOP=1 -At -c "$sql" 2>&1); then
        printf '%s\n' "$out" | sed 's/^/    /'
        die "unexpected error in the statement above"
    fi
    printf '    %sdone%s\n' "$D" "$N"
}

# quiet ROLE SQL: one value into $REPLY, nothing printed (for checks).
quiet() {
    REPLY=$("${PSQL[@]}" -U "$1" -v ON_ERROR_STOP=1 -At -c "$2" 2>&1) \
        || { printf '%s\n' "$REPLY" >&2; die "check query failed: $2"; }
}

# refused ROLE SQLSTATE SQL: the statement must fail with that SQLSTATE;
# its error is printed, the demo goes on.
refused() {
    local role=$1 want=$2 sql=$3 out state
    print_sql "$role" "$sql"
    out=$("${PSQL[@]}" -U "$role" -v ON_ERROR_STOP=0 -v SHOW_CONTEXT=never \
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
    if ! out=$("${PSQL[@]}" -U "$role" -v ON_ERROR_STOP=1 -At -F $'\t' -c "$sql" 2>&1); then
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

contains() {   # contains WORD LIST...
    local w=$1 x
    shift
    for x in "$@"; do [ "$x" = "$w" ] && return 0; done
    return 1
}

# ---------------------------------------------------------------------------
# 4. the demo
# ---------------------------------------------------------------------------
section "setting up: the extension, a queue, a tenant and its roles"
say "hasched is loaded by shared_preload_libraries; CREATE EXTENSION adds the schema hasched and the roles hasched_submitter, hasched_worker and hasched_admin."
run postgres "CREATE EXTENSION hasched;"
say "A pull queue 'emails': external workers claim its jobs (concurrency 0 = unlimited). Failed attempts back off from 2 s."
run postgres "INSERT INTO hasched.queue (name, transport, concurrency, lease, backoff_base)
VALUES ('emails', 'pull', 0, '30 seconds', '2 seconds');"
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
say "A job for later: run_at 2 seconds from now. It stays 'scheduled' until then."
val app "SELECT hasched.submit('emails', '{\"template\": \"reminder\"}', run_at => now() + interval '2 seconds');"
job_sched=$REPLY
say "An idempotency key: submitting the same key twice returns the same job."
val app "SELECT hasched.submit('emails', '{\"template\": \"receipt\", \"order\": 1001}', idempotency_key => 'order-1001-receipt');"
job_key=$REPLY
val app "SELECT hasched.submit('emails', '{\"template\": \"receipt\", \"order\": 1001}', idempotency_key => 'order-1001-receipt');"
check "the second submit with key order-1001-receipt returned the same id ($job_key)" \
    '[ "$REPLY" = "$job_key" ]'
say "submit_many: five jobs in one call, ids in payload order."
val app "SELECT hasched.submit_many('emails', ARRAY[
  '{\"template\": \"promo\", \"n\": 1}', '{\"template\": \"promo\", \"n\": 2}',
  '{\"template\": \"promo\", \"n\": 3}', '{\"template\": \"promo\", \"n\": 4}',
  '{\"template\": \"promo\", \"n\": 5}']::jsonb[], priority => 'low');"
read -r -a many_ids <<<"$(tr -d '{}' <<<"$REPLY" | tr ',' ' ')"
check "submit_many returned 5 ids" '[ "${#many_ids[@]}" -eq 5 ]'

quiet app "SELECT count(*) FROM hasched.job WHERE queue = 'emails'"
check "10 jobs exist for 11 submits (the repeated key made no new job)" '[ "$REPLY" = 10 ]'

section "what is queued"
run postgres "SELECT name, transport, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;"
quiet postgres "SELECT pending || ' ' || scheduled FROM hasched.queues WHERE name = 'emails'"
sched_claimed_early=0
if [ "$REPLY" != "9 1" ] && quiet postgres "SELECT run_at <= now() FROM hasched.job WHERE id = $job_sched" \
        && [ "$REPLY" = t ]; then
    say "(this machine is slow: the scheduled job is due already, so it counts as pending)"
    quiet postgres "SELECT pending || ' ' || scheduled FROM hasched.queues WHERE name = 'emails'"
    check "emails: 10 pending, 0 scheduled" '[ "$REPLY" = "10 0" ]'
else
    check "emails: 9 pending, 1 scheduled" '[ "$REPLY" = "9 1" ]'
fi
run app "SELECT id, state, priority_class AS priority, idempotency_key AS key, payload
  FROM hasched.jobs ORDER BY id;"

section "a pull worker claims a batch"
say "Most urgent first: the high job, then medium by run_at; low waits."
claim worker worker-1 3
check "a batch of 3 was handed out" '[ "${#CLAIM_IDS[@]}" -eq 3 ]'
[ "${#CLAIM_IDS[@]}" -eq 3 ] || die "cannot go on without 3 claimed jobs"
check "the first claimed job is the high-priority one ($job_high)" '[ "${CLAIM_IDS[0]}" = "$job_high" ]'
check "no low-priority job in a batch of 3 while medium ones wait" \
    '! contains "$job_low" "${CLAIM_IDS[@]}" && ! contains "${many_ids[0]}" "${CLAIM_IDS[@]}"'
if contains "$job_sched" "${CLAIM_IDS[@]}"; then sched_claimed_early=1; fi
first_ids=("${CLAIM_IDS[@]}")
first_tokens=("${CLAIM_TOKENS[@]}")

say "The worker completes two of them ..."
for i in 0 1 2; do
    [ "${first_ids[$i]}" = "$job_medium" ] && continue
    call worker "SELECT hasched.complete(${first_ids[$i]}, '${first_tokens[$i]}', '{\"sent\": true}');"
    done_id=${first_ids[$i]}
    done_token=${first_tokens[$i]}
done
say "... and one fails (the newsletter's SMTP server timed out): it is retried after a backoff."
fail_idx=-1
for i in 0 1 2; do [ "${first_ids[$i]}" = "$job_medium" ] && fail_idx=$i; done
check "the medium 'newsletter' job was in the batch" '[ "$fail_idx" -ge 0 ]'
[ "$fail_idx" -ge 0 ] || die "cannot go on without the newsletter job"
val worker "SELECT hasched.fail($job_medium, '${first_tokens[$fail_idx]}', 'smtp timeout');"
check "fail() returned 'failed' (attempts remain)" '[ "$REPLY" = failed ]'
run app "SELECT id, state, attempt, max_attempts, last_error,
       round(extract(epoch FROM run_at - now())::numeric, 1) AS retry_in_s
  FROM hasched.jobs WHERE id = $job_medium;"

section "fencing: a stale token changes nothing"
say "The worker retries its last report, with the token of an attempt that is already over:"
refused worker JQ006 "SELECT hasched.complete($done_id, '$done_token', '{\"sent\": true}');"
quiet postgres "SELECT count(*) FROM hasched.job_run WHERE job_id = $done_id"
check "job $done_id still has exactly one recorded run" '[ "$REPLY" = 1 ]'

section "the worker drains what is due"
claim worker worker-1 20
drain_ids=("${CLAIM_IDS[@]}")
drain_tokens=("${CLAIM_TOKENS[@]}")
check "the failed job is not handed out during its backoff" '! contains "$job_medium" "${drain_ids[@]}"'
if contains "$job_sched" "${drain_ids[@]}"; then sched_claimed_early=1; fi
for i in "${!drain_ids[@]}"; do
    quiet worker "SELECT hasched.complete(${drain_ids[$i]}, '${drain_tokens[$i]}', '{\"sent\": true}')"
done
say "(completed all ${#drain_ids[@]})"

section "scheduled and retried jobs come due"
quiet postgres "SELECT greatest(0, round(extract(epoch FROM max(run_at) - now())::numeric, 1))
                 FROM hasched.job WHERE id IN ($job_sched, $job_medium)"
say "Waiting ${REPLY} s for the reminder (run_at) and the newsletter (backoff) ..."
for _ in $(seq 1 120); do
    quiet postgres "SELECT count(*) FROM hasched.job WHERE id IN ($job_sched, $job_medium) AND run_at > now()"
    [ "$REPLY" = 0 ] && break
    sleep 0.25
done
check "both are due" '[ "$REPLY" = 0 ]'
claim worker worker-1 10
if [ "$sched_claimed_early" = 1 ]; then
    check "the retried newsletter is handed out again" \
        'contains "$job_medium" "${CLAIM_IDS[@]}" && [ "${#CLAIM_IDS[@]}" -eq 1 ]'
else
    check "exactly the reminder and the retried newsletter are handed out" \
        'contains "$job_sched" "${CLAIM_IDS[@]}" && contains "$job_medium" "${CLAIM_IDS[@]}" && [ "${#CLAIM_IDS[@]}" -eq 2 ]'
fi
quiet postgres "SELECT started_at >= run_at FROM hasched.job WHERE id = $job_sched"
check "the reminder did not start before its run_at" '[ "$REPLY" = t ]'
quiet postgres "SELECT attempt FROM hasched.job WHERE id = $job_medium"
check "the newsletter is on attempt 2" '[ "$REPLY" = 2 ]'
for i in "${!CLAIM_IDS[@]}"; do
    call worker "SELECT hasched.complete(${CLAIM_IDS[$i]}, '${CLAIM_TOKENS[$i]}', '{\"sent\": true}');"
done

section "a worker that dies: its lease expires and the job runs again"
val app "SELECT hasched.submit('emails', '{\"template\": \"export\"}');"
job_export=$REPLY
say "worker-2 claims it with a 1-second lease, then goes silent (no heartbeat) ..."
claim worker worker-2 1 '1 second'
check "worker-2 holds the export job" '[ "${CLAIM_IDS[0]:-}" = "$job_export" ]'
old_token=${CLAIM_TOKENS[0]:-none}
sleep 1.5
say "The scheduler (here: an admin, by hand) requeues expired leases:"
val postgres "SELECT hasched.requeue_expired();"
check "requeue_expired() requeued 1 job" '[ "$REPLY" = 1 ]'
run app "SELECT id, state, attempt, worker, last_error FROM hasched.jobs WHERE id = $job_export;"
quiet postgres "SELECT state || ' ' || attempt FROM hasched.job WHERE id = $job_export"
check "the export job is 'failed' after attempt 1, waiting for its retry" '[ "$REPLY" = "failed 1" ]'
say "worker-2 wakes up and reports success with its old token: refused."
refused worker JQ006 "SELECT hasched.complete($job_export, '$old_token');"
for _ in $(seq 1 120); do
    quiet postgres "SELECT run_at <= now() FROM hasched.job WHERE id = $job_export"
    [ "$REPLY" = t ] && break
    sleep 0.25
done
claim worker worker-1 1
check "worker-1 gets the export job (attempt 2)" '[ "${CLAIM_IDS[0]:-}" = "$job_export" ]'
call worker "SELECT hasched.complete(${CLAIM_IDS[0]:-0}, '${CLAIM_TOKENS[0]:-x}', '{\"rows\": 42}');"

section "read-only mode: submissions refused, claims and reports served"
val app "SELECT hasched.submit('emails', '{\"template\": \"invoice\"}');"
job_invoice=$REPLY
say "An operator sheds load: new submissions are refused, the backlog drains."
call postgres "SELECT hasched.set_mode('read_only', 'demo: maintenance window');"
run app "SELECT mode, reason FROM hasched.state;"
refused app JQ003 "SELECT hasched.submit('emails', '{\"template\": \"late\"}');"
claim worker worker-1 10
check "the queued invoice job is still handed out in read-only mode" \
    '[ "${CLAIM_IDS[*]}" = "$job_invoice" ]'
call worker "SELECT hasched.complete(${CLAIM_IDS[0]:-0}, '${CLAIM_TOKENS[0]:-x}', '{\"sent\": true}');"
say "Back to normal:"
call postgres "SELECT hasched.set_mode('normal');"
val app "SELECT hasched.submit('emails', '{\"template\": \"late\"}');"
job_late=$REPLY
check "after set_mode('normal') submit works again" '[[ "$job_late" =~ ^[0-9]+$ ]]'
say "The tenant changes its mind:"
val app "SELECT hasched.cancel($job_late);"
check "cancel() of a pending job returned true" '[ "$REPLY" = t ]'

section "final status"
run postgres "SELECT name, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;"
run app "SELECT id, state, attempt, priority_class AS priority, result, last_error
  FROM hasched.jobs ORDER BY id;"
run postgres "SELECT tenant, tier, jobs_per_day, used_today, rate_per_second FROM hasched.tenants;"
say "Run history: one row per finished attempt."
run postgres "SELECT job_id, attempt, worker, outcome, error
  FROM hasched.job_run ORDER BY finished_at, job_id;"
run postgres "SELECT at::time(0) AS at, kind, detail FROM hasched.event ORDER BY id;"

quiet postgres "SELECT string_agg(state || ':' || n, ' ' ORDER BY state)
                 FROM (SELECT state, count(*) n FROM hasched.job GROUP BY state) s"
check "every job ended: 12 succeeded, 1 cancelled ($REPLY)" '[ "$REPLY" = "succeeded:12 cancelled:1" ]'
quiet postgres "SELECT string_agg(outcome || ':' || n, ' ' ORDER BY outcome)
                 FROM (SELECT outcome, count(*) n FROM hasched.job_run GROUP BY outcome) s"
check "run history: 12 succeeded, 1 failed, 1 lease expired ($REPLY)" \
    '[ "$REPLY" = "failed:1 lease_expired:1 succeeded:12" ]'
quiet postgres "SELECT used_today FROM hasched.tenants WHERE tenant = 'acme'"
check "acme's quota counts 13 jobs (the idempotent repeat is not counted)" '[ "$REPLY" = 13 ]'

echo
if [ "$failures" -eq 0 ]; then
    printf '%sdemo finished: all %d checks passed%s\n' "$G" "$checks" "$N"
    exit 0
fi
printf '%sdemo finished: %d of %d checks FAILED%s\n' "$R" "$failures" "$checks" "$N"
exit 1
