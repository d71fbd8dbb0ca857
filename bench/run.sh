#!/usr/bin/env bash
# hasched benchmarks (`make bench` runs this). Prints tables of measured
# figures and asserts nothing: it is not a test.
#
#   bash bench/run.sh
#   BENCH_SECONDS=3 BENCH_SNAPSHOT_SECONDS=10 bash bench/run.sh   # smoke run
#
# 1. scripts/deps.sh (if present) installs missing Debian packages, then
#    `make` and `make install` (as root, or through sudo).
# 2. A throwaway cluster in a temp dir (mktemp -d), run by an ordinary user:
#    as root the system user $BENCH_OS_USER (default hasched, created with
#    useradd -r -m if missing) through runuser; otherwise the current user.
#    It listens on a unix socket in the temp dir and on 127.0.0.1 at a free
#    port in 55500-55599, with fsync and synchronous_commit on, so every
#    figure includes a real WAL flush per commit.  The database superuser is
#    the role "bench" (not "hasched": a role named like the extension's
#    schema would put that schema first on search_path via "$user").
#    hasched.database = 'bench', so hasched's scheduler background worker
#    serves the bench database as it would in production.
# 3. Measurements, all with pgbench -n -M prepared:
#    1. single-row submit: hasched.submit with quotas on, with quotas off,
#       and a plain INSERT into bench_plain (same columns and indexes);
#    2. submit_many of 100 payloads vs a plain 100-row INSERT ... SELECT;
#    3. claim + complete (one statement, one transaction) with batch 1 and
#       100 vs a plain FOR UPDATE SKIP LOCKED loop on bench_plain, in two
#       shapes: claim-then-complete (two UPDATEs, like hasched) and the
#       one-UPDATE loop; with batch 100 first hasched's batch
#       complete(ids[], tokens[]) (the headline row, where the API has it),
#       then complete(id, token) per job.  Before the first hasched
#       runs, one claim + complete is run under auto_explain (and rolled
#       back) to show which plans claim() and complete() get;
#    4. claim + complete, batch 100, for BENCH_SNAPSHOT_SECONDS while
#       another session sits idle in a REPEATABLE READ transaction holding
#       an old snapshot: mean jobs/s of the first vs the last window.
#    Besides tps, each run reports the server's CPU time per job (all the
#    processes of the bench server), which other load on the machine
#    disturbs less than it disturbs tps.
#    Steps 5-7 run SQL jobs through hasched's own executors (background
#    workers; hasched.max_executors = BENCH_MAX_EXECUTORS) on an sql queue
#    'noop' whose jobs are {"sql": "SELECT 1"}.  Before them the server is
#    restarted once with track_commit_timestamp = on (for step 6; steps 1-4
#    ran without it):
#    5. drain: set_mode('paused'), submit_many BENCH_DRAIN_JOBS jobs in
#       batches of BENCH_DRAIN_BATCH, set_mode('normal'), wait until none is
#       waiting or running.  jobs/s = jobs / (max(finished_at) -
#       min(started_at)); also the wall time from set_mode('normal')
#       (hasched.state.changed_at) to the last finished_at, and the gap
#       from set_mode to the first started_at;
#    6. submit -> start latency with the executors idle: one psql session
#       submits BENCH_LATENCY_JOBS jobs, one per transaction, with
#       pg_sleep(BENCH_LATENCY_GAP_MS) between them.  Main figure:
#       started_at - run_at (run_at is set by submit, just before the
#       commit); also split at the submitting transaction's commit
#       timestamp (pg_xact_commit_timestamp of its xid, taken by the server
#       just before the commit's WAL flush);
#    7. cron jitter: a schedule '* * * * * *' on the sql queue for
#       BENCH_CRON_SECONDS; per run created_at - fire_at (the scheduler's
#       transaction start vs the due time) and started_at - fire_at;
#    8. failover: BENCH_FAILOVER_RUNS times, a primary and a fresh streaming
#       standby (pg_basebackup -R -X stream, as scripts/demo.sh does), unix
#       sockets only, in $tmp/ha; the primary has a stream of SQL jobs due
#       every 100 ms (submitted with run_at ahead of time, so the standby
#       has them too) and runs it for BENCH_FAILOVER_SETTLE s; then
#       pg_ctl stop -m immediate on the primary, and from a client clock
#       reading taken just before pg_ctl promote of the standby to the
#       first job started in the new epoch (min(started_at) of the jobs of
#       the new epoch, read on the new primary; same machine, same clock).
#       The promoted node is the primary of the next run, with a new
#       standby cloned from it; median of the runs.
# 4. A markdown summary (with machine facts and the exact commands).
# The servers are stopped by their pids (pg_ctl stop -m fast, or -m
# immediate for the throwaway nodes of step 8) and the temp dir removed on
# exit.  Raw output: bench/out/<UTC timestamp>/ (run.log,
# summary.md, one file per pgbench run, the server log); bench/out/latest
# points at the newest.
#
# Environment (defaults in brackets):
#   BENCH_SECONDS           length of each run of steps 1-3 [15]
#   BENCH_SNAPSHOT_SECONDS  length of each run of step 4 [60]
#   BENCH_WINDOW            seconds averaged at the start and end of step 4 [10]
#   BENCH_SUBMIT_CLIENTS    pgbench -c for steps 1-2 [8]
#   BENCH_CLAIM_CLIENTS     pgbench -c for steps 3-4; a list runs step 3 once
#                           per value, step 4 uses the first [4]
#   BENCH_THREADS           pgbench -j [2]
#   BENCH_STEPS             which steps to run [1 2 3 4 5 6 7 8]
#   BENCH_SNAPSHOT_LOOPS    loops of step 4, from hasched (complete per job),
#                           hasched_many (one complete(ids[], tokens[]) per
#                           claim), plain2 [hasched plain2]
#   BENCH_CLAIM_RATE_1      jobs/s assumed for prefilling step 3, batch 1 [6000]
#   BENCH_CLAIM_RATE_100    jobs/s assumed for prefilling step 3, batch 100 [50000]
#                           (a run whose queue ran dry is refilled and repeated)
#   BENCH_MAX_EXECUTORS     hasched.max_executors for steps 5-8 [2]
#   BENCH_DRAIN_JOBS        jobs drained in step 5 [20000]
#   BENCH_DRAIN_BATCH       payloads per submit_many in step 5 [1000]
#   BENCH_DRAIN_TIMEOUT     seconds step 5 waits for the drain [300]
#   BENCH_LATENCY_JOBS      jobs submitted one by one in step 6 [200]
#   BENCH_LATENCY_GAP_MS    pause between two submits of step 6 [20]
#   BENCH_CRON_SECONDS      how long the 1-second schedule of step 7 runs [60]
#   BENCH_FAILOVER_RUNS     promotions measured in step 8 [5]
#   BENCH_FAILOVER_SETTLE   seconds the primary runs the job stream before
#                           it is stopped, in step 8 [2]
#   smoke run of the new steps:
#     BENCH_STEPS='5 6 7 8' BENCH_DRAIN_JOBS=2000 BENCH_LATENCY_JOBS=50 \
#       BENCH_CRON_SECONDS=10 BENCH_FAILOVER_RUNS=2 bash bench/run.sh
#   BENCH_OS_USER           system user that runs the server as root [hasched]
#   BENCH_SKIP_DEPS=1       do not run scripts/deps.sh
#   BENCH_SKIP_BUILD=1      do not run make / make install
#   BENCH_KEEP_TMP=1        keep the temp dir (the server is stopped anyway)
#   PG_CONFIG               [/usr/lib/postgresql/15/bin/pg_config]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)

: "${PG_CONFIG:=/usr/lib/postgresql/15/bin/pg_config}"
export PG_CONFIG
PGBIN=/usr/lib/postgresql/15/bin

BENCH_SECONDS=${BENCH_SECONDS:-15}
BENCH_SNAPSHOT_SECONDS=${BENCH_SNAPSHOT_SECONDS:-60}
BENCH_WINDOW=${BENCH_WINDOW:-10}
BENCH_SUBMIT_CLIENTS=${BENCH_SUBMIT_CLIENTS:-8}
BENCH_CLAIM_CLIENTS=${BENCH_CLAIM_CLIENTS:-4}
BENCH_THREADS=${BENCH_THREADS:-2}
BENCH_STEPS=${BENCH_STEPS:-1 2 3 4 5 6 7 8}
BENCH_MAX_EXECUTORS=${BENCH_MAX_EXECUTORS:-2}
BENCH_DRAIN_JOBS=${BENCH_DRAIN_JOBS:-20000}
BENCH_DRAIN_BATCH=${BENCH_DRAIN_BATCH:-1000}
BENCH_DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-300}
BENCH_LATENCY_JOBS=${BENCH_LATENCY_JOBS:-200}
BENCH_LATENCY_GAP_MS=${BENCH_LATENCY_GAP_MS:-20}
BENCH_CRON_SECONDS=${BENCH_CRON_SECONDS:-60}
BENCH_FAILOVER_RUNS=${BENCH_FAILOVER_RUNS:-5}
BENCH_FAILOVER_SETTLE=${BENCH_FAILOVER_SETTLE:-2}
BENCH_SNAPSHOT_LOOPS=${BENCH_SNAPSHOT_LOOPS:-hasched plain2}
BENCH_CLAIM_RATE_1=${BENCH_CLAIM_RATE_1:-6000}
BENCH_CLAIM_RATE_100=${BENCH_CLAIM_RATE_100:-50000}
BENCH_OS_USER=${BENCH_OS_USER:-hasched}
DB_USER=bench
DB_NAME=bench

for v in BENCH_SECONDS BENCH_SNAPSHOT_SECONDS BENCH_WINDOW BENCH_SUBMIT_CLIENTS \
         BENCH_THREADS BENCH_CLAIM_RATE_1 BENCH_CLAIM_RATE_100 BENCH_MAX_EXECUTORS \
         BENCH_DRAIN_JOBS BENCH_DRAIN_BATCH BENCH_DRAIN_TIMEOUT BENCH_LATENCY_JOBS \
         BENCH_LATENCY_GAP_MS BENCH_CRON_SECONDS BENCH_FAILOVER_RUNS BENCH_FAILOVER_SETTLE; do
    case "${!v}" in ''|*[!0-9]*|0) echo "bench: $v must be a positive integer, not '${!v}'" >&2; exit 2 ;; esac
done
for c in $BENCH_CLAIM_CLIENTS; do
    case "$c" in ''|*[!0-9]*|0) echo "bench: BENCH_CLAIM_CLIENTS must list positive integers" >&2; exit 2 ;; esac
done
claim_clients_main=${BENCH_CLAIM_CLIENTS%% *}

# The command as typed, with the BENCH_* overrides that were set.
invocation=""
for v in $(compgen -v BENCH_ | sort); do
    [ -n "${!v+x}" ] && [ "$(printenv "$v" 2>/dev/null || true)" != "" ] &&
        invocation+="$v=$(printf '%q' "$(printenv "$v")") "
done
invocation+="bash bench/run.sh"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
outdir=$top/bench/out/$stamp
mkdir -p "$outdir"
ln -sfn "$stamp" "$top/bench/out/latest"

is_root() { [ "$(id -u)" -eq 0 ]; }
as_root() {
    if is_root; then "$@"; else sudo "$@"; fi
}

tmp=""
tee_pid=""
server_pid=""
holder_pid=""
holder_fd=""
hadir=""                 # step 8: the throwaway primary/standby nodes
declare -A HA_PID=()     # node name -> postmaster pid, while it runs
declare -A R=()          # results: R[name.tps], R[name.lat], ...
declare -a CMDS=()       # every measured pgbench command line
declare -a SQLS=()       # what steps 5-8 ran, for the summary
R_sessions=0             # client sessions that stay open across a run

say() { printf '%s\n' "$*"; }
hdr() { printf '\n== %s ==\n' "$*"; }
die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------
# cleanup: end the snapshot holder, stop the server by its pid, drop tmp
# --------------------------------------------------------------------------
cleanup() {
    local rc=$? i
    set +e
    if [ -n "$holder_fd" ]; then
        eval "exec $holder_fd>&-"
        holder_fd=""
    fi
    if [ -n "$holder_pid" ]; then
        # psql ends once its input (the fifo) is closed; the server ends
        # its transaction when the connection goes.
        for i in $(seq 1 50); do kill -0 "$holder_pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$holder_pid" 2>/dev/null && kill -TERM "$holder_pid" 2>/dev/null
        wait "$holder_pid" 2>/dev/null
        holder_pid=""
    fi
    # step 8's nodes are throwaway: stop them at once (by their pids)
    for i in "${!HA_PID[@]}"; do
        ha_stop "$i" immediate
    done
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        as_pg "$PGBIN/pg_ctl" stop -D "$tmp/data" -m fast -w -t 60 >/dev/null 2>&1
        for i in $(seq 1 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$server_pid" 2>/dev/null; then
            say "bench: server pid $server_pid did not stop, sending SIGQUIT" >&2
            kill -QUIT "$server_pid" 2>/dev/null
            sleep 2
            kill -0 "$server_pid" 2>/dev/null && kill -KILL "$server_pid" 2>/dev/null
        fi
    fi
    if [ -n "$tmp" ] && [ -d "$tmp" ]; then
        [ -f "$tmp/server.log" ] && cp "$tmp/server.log" "$outdir/server.log" 2>/dev/null
        if [ -n "$hadir" ] && [ -d "$hadir" ]; then
            for i in "$hadir"/*.log; do
                [ -f "$i" ] && cp "$i" "$outdir/failover_$(basename "$i")" 2>/dev/null
            done
        fi
        if [ -n "${BENCH_KEEP_TMP:-}" ]; then
            say "bench: kept $tmp"
        else
            rm -rf "$tmp"
        fi
    fi
    # let tee write the last lines to run.log before we go
    if [ -n "$tee_pid" ]; then
        exec 1>&- 2>&-
        wait "$tee_pid" 2>/dev/null
    fi
    return "$rc"
}

# --------------------------------------------------------------------------
# psql / pgbench helpers (run as the server's user)
# --------------------------------------------------------------------------
as_pg() {
    if is_root; then
        runuser -u "$BENCH_OS_USER" -- env PGHOST="$tmp" PGPORT="${port:-}" \
            PGUSER="$DB_USER" PGDATABASE="$DB_NAME" ${PGOPTS:+"PGOPTIONS=$PGOPTS"} "$@"
    else
        env PGHOST="$tmp" PGPORT="${port:-}" PGUSER="$DB_USER" PGDATABASE="$DB_NAME" \
            ${PGOPTS:+"PGOPTIONS=$PGOPTS"} "$@"
    fi
}

# q SQL: one value (or rows, |-separated) from the bench database
q() {
    as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"
}

# quotas off for the sessions of one command (a superuser GUC; bench is one)
QUOTAS_OFF='-c hasched.enforce_quotas=off'

fmt_int() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else printf "%.0f", x }'; }
fmt_2() { awk -v x="$1" 'BEGIN { if (x == "") print "n/a"; else printf "%.2f", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }
mul() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "") print ""; else printf "%.1f", a * b }'; }

# Clock ticks of CPU used so far by the bench server: the postmaster and
# its live children (backends, the hasched scheduler, autovacuum,
# checkpointer, walwriter ...) plus the children it has reaped.  Deltas per
# transaction are less sensitive to other work on the machine than tps.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
cluster_cpu() {
    local t=0 p v pm
    for p in "$server_pid" $(ps -o pid= --ppid "$server_pid" 2>/dev/null); do
        pm=0
        [ "$p" = "$server_pid" ] && pm=1
        v=$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null |
            awk -v pm="$pm" '{ print $12 + $13 + (pm ? $14 + $15 : 0) }') || v=0
        t=$(( t + ${v:-0} ))
    done
    echo "$t"
}

# cpu_per NAME TICKS_BEFORE FILE JOBS_PER_TX: server CPU in microseconds per
# job into R[NAME.cpu], from the transactions pgbench reports in FILE
cpu_per() {
    local name=$1 before=$2 f=$3 per=$4 after n i
    # wait for the backends of the run to exit and be reaped
    for i in $(seq 1 50); do
        [ "$(ps -o args= --ppid "$server_pid" | grep -c '\[local\]')" -le "$R_sessions" ] && break
        sleep 0.1
    done
    after=$(cluster_cpu)
    n=$(awk '/number of transactions actually processed:/ { print $NF; exit }' "$f")
    R[$name.cpu]=$(awk -v d=$(( after - before )) -v hz="$CLK_TCK" -v n="${n:-0}" -v b="$per" \
        'BEGIN { if (n > 0) printf "%.0f", d / hz * 1e6 / (n * b) }')
}

# pgb NAME [pgbench args...]: one measured pgbench run; the raw output goes
# to $outdir/NAME.txt; tps and latency into R[NAME.tps], R[NAME.lat].
pgb() {
    local name=$1 f rc=0
    shift
    f=$outdir/$name.txt
    q "CHECKPOINT" >/dev/null
    local shown="$*"
    CMDS+=("${PGOPTS:+PGOPTIONS='$PGOPTS' }pgbench -n -M prepared ${shown//$tmp\/scripts\//bench/}")
    local before per=1 a
    for a in "$@"; do case "$a" in batch=*) per=${a#batch=} ;; esac; done
    case "$name" in submit_many_100|plain_insert_100) per=100 ;; esac
    before=$(cluster_cpu)
    as_pg "$PGBIN/pgbench" -n -M prepared "$@" >"$f" 2>&1 || rc=$?
    cpu_per "$name" "$before" "$f" "$per"
    R[$name.tps]=$(awk '/^tps = /{ print $3; exit }' "$f")
    R[$name.lat]=$(awk '/^latency average = /{ print $4; exit }' "$f")
    if [ "$rc" -ne 0 ] || [ -z "${R[$name.tps]}" ]; then
        say "  $name: pgbench failed (exit $rc); last lines of $f:"
        tail -n 15 "$f" | sed 's/^/    /'
        R[$name.tps]=""
        R[$name.note]="pgbench failed"
        return 0
    fi
    if grep -q "aborted" "$f"; then
        R[$name.note]="clients aborted"
    fi
    say "  $(printf '%-28s' "$name") tps $(fmt_2 "${R[$name.tps]}")  latency ${R[$name.lat]} ms  server CPU ${R[$name.cpu]:-n/a} us/job${R[$name.note]:+  (${R[$name.note]})}"
}

# waiting jobs in the claim index of hasched.job / bench_plain
waiting() {
    local t=$1
    q "SELECT count(*) FROM $t WHERE queue = 'default' AND state IN ('scheduled', 'pending', 'failed')"
}
table_of() { case "$1" in hasched*) echo hasched.job ;; *) echo bench_plain ;; esac; }

# top_up KIND N: make sure at least N jobs wait in the table of KIND
top_up() {
    local kind=$1 n=$2 t have add
    t=$(table_of "$kind")
    have=$(waiting "$t")
    add=$(( n - have ))
    if [ "$add" -gt 0 ]; then
        local t0=$SECONDS
        if [ "$t" = hasched.job ]; then
            PGOPTS=$QUOTAS_OFF q "SELECT bench_fill_hasched($add)" >/dev/null
        else
            q "SELECT bench_fill_plain($add)" >/dev/null
        fi
        say "  prefill $t: $have waiting, added $add ($(( SECONDS - t0 )) s)"
    else
        say "  prefill $t: $have waiting, enough"
    fi
}

vacuum_all() {
    q "VACUUM (ANALYZE) hasched.job" >/dev/null
    q "VACUUM (ANALYZE) hasched.job_run" >/dev/null
    q "VACUUM (ANALYZE) hasched.quota_use" >/dev/null
    q "VACUUM (ANALYZE) bench_plain" >/dev/null
}

# plans NAME: one claim of 100 + complete with auto_explain (analyze,
# buffers, nested statements) in the state the next run starts from; the
# plans go to $outdir/plans_NAME.txt, and which index each UPDATE of
# hasched.job scanned is printed.  Diagnostics only, not measured.
plans() {
    local name=$1 f lines
    f=$outdir/plans_$name.txt
    lines=$(wc -l <"$tmp/server.log")
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 >/dev/null 2>&1 <<'SQL' || { say "  (plan capture failed)"; return 0; }
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_timing = off;
BEGIN;
SELECT count(hasched.complete(c.job_id, c.token, NULL)) FROM hasched.claim('default', 'w', 100) c;
ROLLBACK;
SELECT to_regprocedure('hasched.complete(bigint[],text[],jsonb[])') IS NOT NULL AS has_many \gset
\if :has_many
BEGIN;
SELECT hasched.complete(array_agg(c.job_id), array_agg(c.token)) FROM hasched.claim('default', 'w', 100) c;
ROLLBACK;
\endif
SQL
    tail -n +"$(( lines + 1 ))" "$tmp/server.log" >"$f"
    # the statements that UPDATE hasched.job, and how they find its rows
    awk '/Query Text:/ { q = $0; sub(/.*Query Text: /, "", q); upd = (q ~ /UPDATE hasched[.]job/)
                         kind = (q ~ /lease_id_seq/) ? "claim()" : (q ~ /succeeded/) ? ((q ~ /unnest/) ? "complete(ids[])" : "complete()") : "other" }
         upd && match($0, /(Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)( Backward)?( using [a-z_]+)? on job( |$)/) {
             line = substr($0, RSTART, RLENGTH); sub(/ $/, "", line)
             if (!seen[kind, line]++) printf "%s UPDATE of hasched.job reads it with: %s\n", kind, line }' "$f" >"$f.summary"
    sed 's/^/  plan: /' "$f.summary"
    R[plans_text]+="$name:"$'\n'"$(sed 's/^/  /' "$f.summary")"$'\n'
    rm -f "$f.summary"
}

# --------------------------------------------------------------------------
# the old-snapshot holder: psql fed through a fifo, idle in transaction
# --------------------------------------------------------------------------
holder_start() {
    local name=$1 table=$2 fifo i xmin
    fifo=$tmp/holder.fifo
    rm -f "$fifo"
    mkfifo -m 600 "$fifo"
    as_pg env PGAPPNAME=bench_snapshot_holder "$PGBIN/psql" -X -v ON_ERROR_STOP=1 \
        <"$fifo" >"$outdir/$name.holder.txt" 2>&1 &
    holder_pid=$!
    exec {holder_fd}>"$fifo"
    printf '%s\n' "BEGIN ISOLATION LEVEL REPEATABLE READ;" \
        "SELECT count(*) AS rows_in_old_snapshot FROM $table;" >&"$holder_fd"
    for i in $(seq 1 600); do
        xmin=$(q "SELECT backend_xmin FROM pg_stat_activity
                   WHERE application_name = 'bench_snapshot_holder'
                     AND state = 'idle in transaction' AND backend_xmin IS NOT NULL")
        [ -n "$xmin" ] && break
        kill -0 "$holder_pid" 2>/dev/null || die "snapshot holder exited: $(cat "$outdir/$name.holder.txt")"
        sleep 0.1
    done
    [ -n "$xmin" ] || die "snapshot holder did not get idle in transaction"
    R[$name.holder_xmin]=$xmin
    say "  snapshot holder: idle in transaction, backend_xmin $xmin"
}

holder_check() {
    q "SELECT coalesce(string_agg(state || ' xmin ' || backend_xmin || ' since ' ||
                         round(extract(epoch FROM now() - xact_start))::text || ' s', ', '), 'gone')
         FROM pg_stat_activity WHERE application_name = 'bench_snapshot_holder'"
}

holder_stop() {
    printf '%s\n' "COMMIT;" >&"$holder_fd"
    eval "exec $holder_fd>&-"
    holder_fd=""
    wait "$holder_pid" || true
    holder_pid=""
}

# --------------------------------------------------------------------------
# steps 5-8: SQL jobs run by hasched's executors
# --------------------------------------------------------------------------
now_s() { date +%s.%N; }
# median of the numbers on stdin (blank lines ignored)
median() {
    grep -E '^[0-9.]+$' | sort -n | awk '{ v[n++] = $1 } END { if (n) printf "%.1f", (n % 2) ? v[(n - 1) / 2] : (v[n / 2 - 1] + v[n / 2]) / 2 }'
}
# ms between two epoch-second readings
ms_between() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "") print ""; else printf "%.1f", (b - a) * 1000 }'; }

# the sql queue of steps 5-7 (and 8), made once
ensure_noop_queue() {
    q "INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql') ON CONFLICT (name) DO NOTHING" >/dev/null
}

# pct_ms EXPR REST: 'n|p50|p90|p99|max' of EXPR (an interval) in ms over
# "SELECT EXPR REST" (REST: FROM ... WHERE ...); percentile_disc
pct_ms() {
    q "SELECT count(v), round(percentile_disc(0.5) WITHIN GROUP (ORDER BY v), 2),
              round(percentile_disc(0.9) WITHIN GROUP (ORDER BY v), 2),
              round(percentile_disc(0.99) WITHIN GROUP (ORDER BY v), 2), round(max(v), 2)
         FROM (SELECT (extract(epoch FROM ($1)) * 1000)::numeric AS v $2) s"
}
# pct_put NAME 'n|p50|p90|p99|max': into R[NAME.n] ... R[NAME.max]
pct_put() {
    local name=$1 n p50 p90 p99 mx
    IFS='|' read -r n p50 p90 p99 mx <<<"$2"
    R[$name.n]=$n R[$name.p50]=$p50 R[$name.p90]=$p90 R[$name.p99]=$p99 R[$name.max]=$mx
}
pct_say() {
    local name=$1 label=$2
    say "  $(printf '%-36s' "$label") n ${R[$name.n]:-0}  p50 ${R[$name.p50]:-n/a}  p90 ${R[$name.p90]:-n/a}  p99 ${R[$name.p99]:-n/a}  max ${R[$name.max]:-n/a} ms"
}

# wait_sql SECONDS SQL: poll (every 0.1 s) until SQL returns t
wait_sql() {
    local secs=$1 sql=$2 i
    for i in $(seq 1 $(( secs * 10 ))); do
        [ "$(q "$sql" 2>/dev/null)" = t ] && return 0
        sleep 0.1
    done
    return 1
}

# true while a job of the noop queue waits or runs; two EXISTS, so that
# each is answered by one of hasched's partial indexes (one IN list of all
# four states matches neither predicate and scans the whole job table)
NOOP_LEFT="(EXISTS (SELECT 1 FROM hasched.job WHERE queue = 'noop' AND state IN ('scheduled', 'pending', 'failed'))
            OR EXISTS (SELECT 1 FROM hasched.job WHERE queue = 'noop' AND state IN ('running', 'dispatched')))"

# an idle executor, and no job of the noop queue waiting or running
wait_idle_executors() {
    wait_sql 60 "SELECT NOT $NOOP_LEFT AND EXISTS (SELECT 1 FROM hasched.executors() WHERE state = 'idle')"
}

# CPU ticks used so far by each live executor: lines "pid ticks"
executor_cpu() {
    local p
    for p in $(q "SELECT string_agg(pid::text, ' ') FROM hasched.executors() WHERE pid <> 0"); do
        sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk -v p="$p" '{ print p, $12 + $13 }'
    done
}

# restart the bench server (a setting that needs it); new pid into server_pid
server_restart() {
    as_pg "$PGBIN/pg_ctl" restart -D "$tmp/data" -m fast -l "$tmp/server.log" -w -t 120 >/dev/null ||
        { tail -n 30 "$tmp/server.log"; die "the server did not restart"; }
    server_pid=$(head -n 1 "$tmp/data/postmaster.pid")
    say "  server restarted: pid $server_pid"
}

# step 8's nodes n0, n1, ...: data dir $hadir/NODE, log $hadir/NODE.log,
# unix socket $hadir/.s.PGSQL.PORT only (no TCP)
ha_port() { echo $(( 56000 + ${1#n} )); }
qn() {   # qn NODE SQL
    as_pg "$PGBIN/psql" -h "$hadir" -p "$(ha_port "$1")" -X -q -A -t -v ON_ERROR_STOP=1 -c "$2"
}
ha_conf() {   # ha_conf NODE: its own port and name, appended to its postgresql.conf
    printf '%s\n' "" "# --- hasched bench step 8 (bench/run.sh): node $1 ---" \
        "listen_addresses = ''" \
        "port = $(ha_port "$1")" \
        "unix_socket_directories = '$hadir'" \
        "unix_socket_permissions = 0700" \
        "cluster_name = '$1'" >>"$hadir/$1/postgresql.conf"
}
ha_start() {   # ha_start NODE
    as_pg "$PGBIN/pg_ctl" start -D "$hadir/$1" -l "$hadir/$1.log" -w -t 120 >/dev/null ||
        { tail -n 30 "$hadir/$1.log"; die "node $1 did not start"; }
    HA_PID[$1]=$(head -n 1 "$hadir/$1/postmaster.pid")
}
ha_stop() {   # ha_stop NODE MODE: pg_ctl stop -m MODE, then by its pid if need be
    local node=$1 mode=$2 pid=${HA_PID[$1]:-} i
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        as_pg "$PGBIN/pg_ctl" stop -D "$hadir/$node" -m "$mode" -w -t 60 >/dev/null 2>&1
        for i in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -QUIT "$pid" 2>/dev/null; sleep 2
            kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
        fi
    fi
    unset "HA_PID[$node]"
    return 0
}
# ha_standby FROM TO: a new streaming standby TO cloned from FROM, started
ha_standby() {
    local from=$1 to=$2
    as_pg "$PGBIN/pg_basebackup" -h "$hadir" -p "$(ha_port "$from")" -U "$DB_USER" \
        -D "$hadir/$to" -R -X stream --checkpoint=fast --no-sync >"$hadir/$to.basebackup.log" 2>&1 ||
        { cat "$hadir/$to.basebackup.log"; die "pg_basebackup of $from into $to failed"; }
    ha_conf "$to"
    ha_start "$to"
}

# --------------------------------------------------------------------------
# 0. packages, build, install
# --------------------------------------------------------------------------
main() {
    local t_start=$SECONDS
    R[load_start]=$(cut -d' ' -f1-3 /proc/loadavg)
    hdr "hasched bench $stamp"
    say "command: $invocation"
    say "raw output: $outdir"

    cd "$top"
    if [ -z "${BENCH_SKIP_DEPS:-}" ] && [ -f scripts/deps.sh ]; then
        hdr "dependencies (scripts/deps.sh)"
        bash scripts/deps.sh
    fi
    if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
        hdr "build and install"
        make -s PG_CONFIG="$PG_CONFIG" >"$outdir/build.log" 2>&1 ||
            { tail -n 30 "$outdir/build.log"; die "make failed"; }
        as_root make -s PG_CONFIG="$PG_CONFIG" install >>"$outdir/build.log" 2>&1 ||
            { tail -n 30 "$outdir/build.log"; die "make install failed"; }
        say "built and installed (log: $outdir/build.log)"
    fi
    [ -x "$PGBIN/pgbench" ] || die "no $PGBIN/pgbench: install postgresql-15 / postgresql-client-15"

    # ----------------------------------------------------------------------
    # 1. the throwaway cluster
    # ----------------------------------------------------------------------
    hdr "server"
    if is_root; then
        if ! id -u "$BENCH_OS_USER" >/dev/null 2>&1; then
            useradd -r -m "$BENCH_OS_USER"
            say "created system user $BENCH_OS_USER"
        fi
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/hasched-bench.XXXXXX")
    if is_root; then chown "$BENCH_OS_USER:" "$tmp"; fi
    chmod 700 "$tmp"
    mkdir "$tmp/scripts"
    cp "$here"/*.pgbench "$here"/setup.sql "$tmp/scripts/"
    if is_root; then chown -R "$BENCH_OS_USER:" "$tmp/scripts"; fi

    port=""
    local p
    for p in $(seq 55500 55599); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
    done
    [ -n "$port" ] || die "no free port in 55500-55599"

    as_pg "$PGBIN/initdb" -D "$tmp/data" -U "$DB_USER" --auth-local=trust --auth-host=reject \
        -E UTF8 --locale=C >"$outdir/initdb.log" 2>&1 ||
        { cat "$outdir/initdb.log"; die "initdb failed"; }
    cat >>"$tmp/data/postgresql.conf" <<EOF

# --- hasched bench (bench/run.sh) ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$tmp'
unix_socket_permissions = 0700
shared_preload_libraries = 'hasched'
# the scheduler background worker serves the bench database, as deployed
hasched.database = '$DB_NAME'
# executors for the SQL jobs of steps 5-8 (none runs before an sql queue exists)
hasched.max_executors = $BENCH_MAX_EXECUTORS
hasched.min_executors = 1
max_worker_processes = $(( BENCH_MAX_EXECUTORS + 8 ))
fsync = on
synchronous_commit = on
full_page_writes = on
shared_buffers = 1GB
max_connections = 50
autovacuum = on
max_wal_size = 4GB
checkpoint_timeout = 15min
log_checkpoints = on
log_autovacuum_min_duration = 0
log_min_duration_statement = -1
EOF
    as_pg "$PGBIN/pg_ctl" start -D "$tmp/data" -l "$tmp/server.log" -w -t 120 >/dev/null ||
        { cat "$tmp/server.log"; die "the server did not start"; }
    server_pid=$(head -n 1 "$tmp/data/postmaster.pid")
    say "server pid $server_pid, socket $tmp, 127.0.0.1:$port, data $tmp/data"

    as_pg "$PGBIN/createdb" "$DB_NAME"
    as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -f "$tmp/scripts/setup.sql" >"$outdir/setup.log" 2>&1 ||
        { cat "$outdir/setup.log"; die "bench/setup.sql failed"; }

    local pgver extver settings
    pgver=$(q "SELECT version()")
    extver=$(q "SELECT extversion FROM pg_extension WHERE extname = 'hasched'")
    settings=$(q "SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name)
                    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers',
                      'max_connections', 'autovacuum', 'wal_sync_method', 'full_page_writes',
                      'hasched.enforce_quotas', 'hasched.submit_synchronous_commit',
                      'hasched.claim_rewind_interval', 'hasched.database',
                      'hasched.max_executors', 'hasched.min_executors', 'hasched.scheduler_naptime',
                      'max_worker_processes')")
    say "$pgver"
    say "hasched $extver; $settings"

    local T=$BENCH_SECONDS C=$BENCH_SUBMIT_CLIENTS J=$BENCH_THREADS S=$tmp/scripts
    local quota_before quota_after has_many
    has_many=$(q "SELECT to_regprocedure('hasched.complete(bigint[],text[],jsonb[])') IS NOT NULL")

    # ----------------------------------------------------------------------
    # step 1: single-row submit
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 1 "* ]]; then
        hdr "1. single-row submit (pgbench -c $C -j $J -T $T)"
        quota_before=$(q "SELECT coalesce(sum(used), 0) FROM hasched.quota_use")
        pgb submit_quotas_on -f "$S/submit.pgbench" -c "$C" -j "$J" -T "$T"
        quota_after=$(q "SELECT coalesce(sum(used), 0) FROM hasched.quota_use")
        R[quota_counted]=$(( quota_after - quota_before ))
        say "  quota accounting: hasched.quota_use counted ${R[quota_counted]} jobs during submit_quotas_on"
        PGOPTS=$QUOTAS_OFF pgb submit_quotas_off -f "$S/submit.pgbench" -c "$C" -j "$J" -T "$T"
        pgb plain_insert -f "$S/plain_insert.pgbench" -c "$C" -j "$J" -T "$T"
    fi

    # ----------------------------------------------------------------------
    # step 2: submit_many of 100
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 2 "* ]]; then
        hdr "2. submit_many of 100 payloads (pgbench -c $C -j $J -T $T)"
        pgb submit_many_100 -f "$S/submit_many.pgbench" -c "$C" -j "$J" -T "$T"
        pgb plain_insert_100 -f "$S/plain_insert_many.pgbench" -c "$C" -j "$J" -T "$T"
    fi

    # ----------------------------------------------------------------------
    # step 3: claim + complete
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 3 "* ]]; then
        local c b kind kinds plan_kind name rate need tries script
        for c in $BENCH_CLAIM_CLIENTS; do
            hdr "3. claim + complete, one statement per transaction (pgbench -c $c -j $J -T $T)"
            for b in 1 100; do
                # batch 100: the headline loop, with the batch complete, first
                kinds="hasched plain2 plain1"
                plan_kind=hasched
                if [ "$b" != 1 ] && [ "$has_many" = t ]; then
                    kinds="hasched_many hasched plain2 plain1"
                    plan_kind=hasched_many
                fi
                for kind in $kinds; do
                    name=claim_${kind}_b${b}_c${c}
                    if [ "$kind" = hasched_many ]; then
                        # the batch complete(job_ids[], tokens[]), where the API has it
                        [ "$b" != 1 ] && [ "$has_many" = t ] || continue
                    fi
                    case "$kind" in
                        hasched) script=claim_complete.pgbench ;;
                        hasched_many) script=claim_complete_many.pgbench ;;
                        plain2) script=plain_claim_complete.pgbench ;;
                        plain1) script=plain_claim_complete_1step.pgbench ;;
                    esac
                    if [ "$b" = 1 ]; then rate=$BENCH_CLAIM_RATE_1; else rate=$BENCH_CLAIM_RATE_100; fi
                    need=$(( rate * T * 12 / 10 ))
                    for tries in 1 2 3; do
                        top_up "$kind" "$need"
                        vacuum_all
                        if [ "$kind" = "$plan_kind" ] && [ "$tries" = 1 ]; then
                            plans "claim_b${b}_c${c}"
                            vacuum_all
                        fi
                        pgb "$name" -f "$S/$script" -D batch="$b" -c "$c" -j "$J" -T "$T"
                        # a queue that ran dry makes the figure meaningless: refill more
                        if [ -n "${R[$name.tps]}" ] &&
                           [ "$(q "SELECT NOT EXISTS (SELECT 1 FROM $(table_of "$kind") WHERE queue = 'default' AND state IN ('scheduled', 'pending', 'failed'))")" = t ]; then
                            say "  $name: the queue ran dry; refilling more and running again"
                            R[$name.note]="queue ran dry"
                            need=$(( need * 3 ))
                            unset "CMDS[$(( ${#CMDS[@]} - 1 ))]"
                            CMDS=("${CMDS[@]}")
                            continue
                        fi
                        unset "R[$name.note]"
                        break
                    done
                    R[$name.jobs]=$(mul "${R[$name.tps]}" "$b")
                done
            done
        done
    fi

    # ----------------------------------------------------------------------
    # step 4: batched claim + complete under an old snapshot
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 4 "* ]]; then
        local SS=$BENCH_SNAPSHOT_SECONDS W=$BENCH_WINDOW c4=$claim_clients_main
        [ "$W" -gt $(( SS / 2 )) ] && W=$(( SS / 2 ))
        [ "$W" -lt 1 ] && W=1
        R[window]=$W
        local kind name script est need f before
        for kind in $BENCH_SNAPSHOT_LOOPS; do
            name=snapshot_$kind
            hdr "4. claim + complete, batch 100, old snapshot held, $kind (pgbench -c $c4 -j $J -T $SS)"
            case "$kind" in
                hasched) script=claim_complete.pgbench ;;
                hasched_many) script=claim_complete_many.pgbench ;;
                plain2) script=plain_claim_complete.pgbench ;;
                plain1) script=plain_claim_complete_1step.pgbench ;;
                *) say "  unknown loop '$kind' in BENCH_SNAPSHOT_LOOPS, skipped"; continue ;;
            esac
            est=${R[claim_${kind}_b100_c${c4}.jobs]:-}
            [ -n "$est" ] || est=$BENCH_CLAIM_RATE_100
            need=$(awk -v r="$est" -v s="$SS" 'BEGIN { n = r * s * 1.3; if (n < 10000) n = 10000; printf "%d", n }')
            top_up "$kind" "$need"
            vacuum_all
            q "CHECKPOINT" >/dev/null
            holder_start "$name" "$(table_of "$kind")"
            f=$outdir/$name.txt
            CMDS+=("pgbench -n -M prepared -f bench/$script -D batch=100 -c $c4 -j $J -T $SS --progress=1   # with the snapshot holder")
            before=$(cluster_cpu)
            as_pg "$PGBIN/pgbench" -n -M prepared -f "$S/$script" -D batch=100 -c "$c4" -j "$J" \
                -T "$SS" --progress=1 >"$f" 2>&1 || R[$name.note]="pgbench failed"
            R_sessions=1   # the holder's
            cpu_per "$name" "$before" "$f" 100
            R_sessions=0
            if [ "$kind" = hasched ]; then plans "$name"; fi
            R[$name.holder_after]=$(holder_check)
            say "  snapshot holder after the run: ${R[$name.holder_after]}"
            holder_stop
            R[$name.tps]=$(awk '/^tps = /{ print $3; exit }' "$f")
            # per-second jobs/s from the progress lines
            awk '/^progress: /{ print $4 * 100 }' "$f" >"$outdir/$name.persec"
            R[$name.first]=$(head -n "$W" "$outdir/$name.persec" | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n }')
            R[$name.last]=$(tail -n "$W" "$outdir/$name.persec" | awk '{ s += $1; n++ } END { if (n) printf "%.1f", s / n }')
            R[$name.jobs]=$(mul "${R[$name.tps]}" 100)
            R[$name.series]=$(awk -v w="$W" '{ s += $1; n++; if (n == w) { printf "%s%.0f", sep, s / n; sep = " "; s = 0; n = 0 } }
                                             END { if (n) printf "%s%.0f", sep, s / n }' "$outdir/$name.persec")
            if [ "$(q "SELECT NOT EXISTS (SELECT 1 FROM $(table_of "$kind") WHERE queue = 'default' AND state IN ('scheduled', 'pending', 'failed'))")" = t ]; then
                R[$name.note]="queue ran dry: raise the prefill"
            fi
            say "  jobs/s: mean ${R[$name.jobs]}; first ${W} s ${R[$name.first]}, last ${W} s ${R[$name.last]}, ratio $(ratio "${R[$name.last]}" "${R[$name.first]}"); server CPU ${R[$name.cpu]:-n/a} us/job${R[$name.note]:+  (${R[$name.note]})}"
            say "  per ${W} s: ${R[$name.series]}"
            # leave nothing for autovacuum to chew on during the next phase
            vacuum_all
        done
    fi

    # ----------------------------------------------------------------------
    # steps 5-7 share the sql queue 'noop'; step 6 needs commit timestamps
    # ----------------------------------------------------------------------
    local E=$BENCH_MAX_EXECUTORS
    if [[ " $BENCH_STEPS " == *" 5 "* || " $BENCH_STEPS " == *" 6 "* || " $BENCH_STEPS " == *" 7 "* ]]; then
        hdr "SQL jobs: queue 'noop' (transport sql), hasched.max_executors = $E"
        if [[ " $BENCH_STEPS " == *" 6 "* ]] && [ "$(q "SHOW track_commit_timestamp")" != on ]; then
            q "ALTER SYSTEM SET track_commit_timestamp = on" >/dev/null
            server_restart
            R[restarted]=1
        fi
        ensure_noop_queue
        vacuum_all
        if ! wait_sql 30 "SELECT EXISTS (SELECT 1 FROM hasched.executors() WHERE state = 'idle')"; then
            say "  (no idle executor after 30 s)"
        fi
        say "  executors: $(q "SELECT string_agg(slot || ':' || state || coalesce(' pid ' || nullif(pid, 0), ''), ', ' ORDER BY slot) FROM hasched.executors()")"
    fi

    # ----------------------------------------------------------------------
    # step 5: drain no-op SQL jobs through the executors
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 5 "* ]]; then
        local N=$BENCH_DRAIN_JOBS B=$BENCH_DRAIN_BATCH first_id f t_a t_b left k out before5 after5
        hdr "5. drain $N no-op SQL jobs (submit_many of $B while paused, then set_mode('normal'); max_executors = $E)"
        R[drain.executors]=$E
        SQLS+=("-- 5. drain (queue: INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql'))"
               "SELECT hasched.set_mode('paused', 'bench step 5: filling');"
               "SELECT cardinality(hasched.submit_many('noop', array_fill('{\"sql\": \"SELECT 1\"}'::jsonb, ARRAY[$B])));   -- $(( (N + B - 1) / B )) times, one transaction each"
               "SELECT hasched.set_mode('normal', 'bench step 5: drain');   -- then, same session, a DO loop: pg_sleep(0.05) until no noop job is scheduled, pending, failed or running"
               "SELECT count(*), max(finished_at) - min(started_at), min(started_at) - (SELECT changed_at FROM hasched.state) FROM hasched.job WHERE queue = 'noop' AND id > <max id before>;")
        q "SELECT hasched.set_mode('paused', 'bench step 5: filling')" >/dev/null
        first_id=$(q "SELECT coalesce(max(id), 0) FROM hasched.job")
        f=$tmp/drain_submit.sql
        : >"$f"
        left=$N
        while [ "$left" -gt 0 ]; do
            k=$(( left < B ? left : B ))
            printf '%s\n' "SELECT cardinality(hasched.submit_many('noop', array_fill('{\"sql\": \"SELECT 1\"}'::jsonb, ARRAY[$k])));" >>"$f"
            left=$(( left - k ))
        done
        if is_root; then chown "$BENCH_OS_USER:" "$f"; fi
        t_a=$(now_s)
        as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -f "$f" >"$outdir/drain_submit.txt" 2>&1 ||
            { tail -n 5 "$outdir/drain_submit.txt"; q "SELECT hasched.set_mode('normal')" >/dev/null; die "step 5: submit_many failed"; }
        t_b=$(now_s)
        R[drain.submit_s]=$(awk -v a="$t_a" -v b="$t_b" 'BEGIN { printf "%.2f", b - a }')
        R[drain.submitted]=$(q "SELECT count(*) FROM hasched.job WHERE queue = 'noop' AND id > $first_id
                                  AND state IN ('scheduled', 'pending')")
        say "  submitted ${R[drain.submitted]} jobs in ${R[drain.submit_s]} s (paused: none started: $(q "SELECT count(*) FROM hasched.job WHERE queue = 'noop' AND id > $first_id AND started_at IS NOT NULL"))"
        q "CHECKPOINT" >/dev/null
        # one session: server clock, set_mode('normal'), a server-side wait
        # (a fresh snapshot per statement) until nothing is left, server clock
        local ex_before ex_after
        ex_before=$(executor_cpu)
        before5=$(cluster_cpu)
        out=$(as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 2>&1 <<SQL
SET statement_timeout = '${BENCH_DRAIN_TIMEOUT}s';
SELECT 'start ' || extract(epoch FROM clock_timestamp());
SELECT hasched.set_mode('normal', 'bench step 5: drain');
DO \$\$
BEGIN
    LOOP
        EXIT WHEN NOT $NOOP_LEFT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
\$\$;
SELECT 'end ' || extract(epoch FROM clock_timestamp());
SQL
        ) || { R[drain.note]="not drained within ${BENCH_DRAIN_TIMEOUT} s"; say "  $out"; }
        after5=$(cluster_cpu)
        ex_after=$(executor_cpu)
        printf '%s\n' "$out" >"$outdir/drain_wait.txt"
        t_a=$(sed -n 's/^start //p' <<<"$out")
        t_b=$(sed -n 's/^end //p' <<<"$out")
        R[drain.wall_poll_s]=$(awk -v a="$t_a" -v b="$t_b" 'BEGIN { if (a != "" && b != "") printf "%.3f", b - a }')
        IFS='|' read -r R[drain.succeeded] R[drain.total] R[drain.busy_s] R[drain.wake_ms] R[drain.wall_s] R[drain.other] <<<"$(q "
            SELECT count(*) FILTER (WHERE j.state = 'succeeded'), count(*),
                   round(extract(epoch FROM max(j.finished_at) - min(j.started_at))::numeric, 3),
                   round((extract(epoch FROM min(j.started_at) - s.changed_at) * 1000)::numeric, 1),
                   round(extract(epoch FROM max(j.finished_at) - s.changed_at)::numeric, 3),
                   coalesce(string_agg(DISTINCT j.state::text, ',') FILTER (WHERE j.state <> 'succeeded'), '')
              FROM hasched.job j, hasched.state s
             WHERE j.queue = 'noop' AND j.id > $first_id
             GROUP BY s.changed_at")"
        R[drain.jobs_s]=$(awk -v n="${R[drain.succeeded]}" -v t="${R[drain.busy_s]}" 'BEGIN { if (t > 0) printf "%.0f", n / t }')
        R[drain.wall_jobs_s]=$(awk -v n="${R[drain.succeeded]}" -v t="${R[drain.wall_s]}" 'BEGIN { if (t > 0) printf "%.0f", n / t }')
        R[drain.cpu]=$(awk -v d=$(( after5 - before5 )) -v hz="$CLK_TCK" -v n="${R[drain.succeeded]:-0}" \
            'BEGIN { if (n > 0) printf "%.0f", d / hz * 1e6 / n }')
        # the executors' own CPU (those alive after the drain; ticks before it subtracted)
        R[drain.exec_cpu]=$(awk -v hz="$CLK_TCK" -v n="${R[drain.succeeded]:-0}" '
            FNR == NR { b[$1] = $2; next } { t += $2 - ($1 in b ? b[$1] : 0) }
            END { if (n > 0) printf "%.0f", t / hz * 1e6 / n }' <(printf '%s\n' "$ex_before") <(printf '%s\n' "$ex_after"))
        R[drain.runs]=$(q "SELECT count(*) FROM hasched.job_run WHERE job_id > $first_id")
        R[drain.workers]=$(q "SELECT string_agg(w || ' ' || n, ', ' ORDER BY w) FROM (SELECT worker w, count(*) n FROM hasched.job
                               WHERE queue = 'noop' AND id > $first_id GROUP BY worker) s")
        say "  succeeded ${R[drain.succeeded]} of ${R[drain.total]}${R[drain.other]:+ (other states: ${R[drain.other]})}; attempts that did not succeed: ${R[drain.runs]}"
        say "  jobs/s = succeeded / (max(finished_at) - min(started_at)) = ${R[drain.succeeded]} / ${R[drain.busy_s]} s = ${R[drain.jobs_s]:-n/a}"
        say "  set_mode('normal') -> first started_at ${R[drain.wake_ms]} ms; -> last finished_at ${R[drain.wall_s]} s (${R[drain.wall_jobs_s]:-n/a} jobs/s); seen drained by the waiting session after ${R[drain.wall_poll_s]:-n/a} s"
        say "  server CPU ${R[drain.cpu]:-n/a} us/job, of which the executors ${R[drain.exec_cpu]:-n/a} us/job; jobs per executor: ${R[drain.workers]}"
        vacuum_all
    fi

    # ----------------------------------------------------------------------
    # step 6: submit -> start latency, executors idle
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 6 "* ]]; then
        local NL=$BENCH_LATENCY_JOBS G=$BENCH_LATENCY_GAP_MS f i ids values
        hdr "6. submit -> start latency: $NL jobs, one per transaction, ${G} ms apart, executors idle"
        wait_idle_executors || say "  (the executors were not idle after 60 s)"
        say "  executors: $(q "SELECT string_agg(slot || ':' || state, ', ' ORDER BY slot) FROM hasched.executors()")"
        SQLS+=("-- 6. latency: one psql session, $NL times, autocommit:"
               "SELECT hasched.submit('noop', '{\"sql\": \"SELECT 1\"}') AS id, txid_current() % 4294967296 AS xid \\gset"
               "SELECT pg_sleep($G / 1000.0);"
               "-- then: started_at - run_at, and pg_xact_commit_timestamp(xid) - run_at, started_at - pg_xact_commit_timestamp(xid), per job")
        f=$tmp/latency.sql
        {
            for i in $(seq 1 "$NL"); do
                printf '%s\n' "SELECT hasched.submit('noop', '{\"sql\": \"SELECT 1\"}') AS id, txid_current() % 4294967296 AS xid \\gset" \
                    '\echo lat :id :xid' \
                    "SELECT pg_sleep($G / 1000.0);"
            done
        } >"$f"
        if is_root; then chown "$BENCH_OS_USER:" "$f"; fi
        as_pg "$PGBIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -f "$f" >"$outdir/latency_ids.txt" 2>&1 ||
            { tail -n 5 "$outdir/latency_ids.txt"; die "step 6: submit failed"; }
        values=$(awk '/^lat [0-9]+ [0-9]+$/ { printf "%s(%s, %s)", sep, $2, $3; sep = ", " }' "$outdir/latency_ids.txt")
        ids=$(awk '/^lat [0-9]+ [0-9]+$/ { printf "%s%s", sep, $2; sep = ", " }' "$outdir/latency_ids.txt")
        [ -n "$ids" ] || die "step 6: no job ids in $outdir/latency_ids.txt"
        wait_sql 30 "SELECT NOT EXISTS (SELECT 1 FROM hasched.job WHERE id IN ($ids) AND started_at IS NULL)" ||
            R[lat.note]="not all started within 30 s"
        local from="FROM hasched.job j JOIN (VALUES $values) v(id, x) ON j.id = v.id
                    CROSS JOIN LATERAL (SELECT pg_xact_commit_timestamp(v.x::text::xid) AS ct) c
                    WHERE j.started_at IS NOT NULL"
        pct_put lat.run "$(pct_ms "j.started_at - j.run_at" "$from")"
        pct_put lat.commit "$(pct_ms "j.started_at - c.ct" "$from AND c.ct IS NOT NULL")"
        pct_put lat.pre "$(pct_ms "c.ct - j.run_at" "$from AND c.ct IS NOT NULL")"
        pct_say lat.run "started_at - run_at (main)"
        pct_say lat.pre "commit timestamp - run_at"
        pct_say lat.commit "started_at - commit timestamp"
        R[lat.states]=$(q "SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state::text, count(*) n FROM hasched.job WHERE id IN ($ids) GROUP BY 1) s")
        say "  jobs: ${R[lat.states]}${R[lat.note]:+  (${R[lat.note]})}"
        q "SELECT j.id, round((extract(epoch FROM j.started_at - j.run_at) * 1000)::numeric, 2) AS start_ms,
                  round((extract(epoch FROM j.started_at - c.ct) * 1000)::numeric, 2) AS after_commit_ms, j.worker
             $from ORDER BY j.id" >"$outdir/latency.txt"
    fi

    # ----------------------------------------------------------------------
    # step 7: cron firing jitter, a 1-second schedule
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 7 "* ]]; then
        local CS=$BENCH_CRON_SECONDS t7 from7 first7
        hdr "7. cron jitter: schedule '* * * * * *' on the sql queue for $CS s"
        wait_idle_executors || say "  (the executors were not idle after 60 s)"
        t7=$(q "SELECT clock_timestamp()")
        first7=$(q "SELECT coalesce(max(id), 0) FROM hasched.job")
        SQLS+=("-- 7. cron"
               "SELECT hasched.schedule('bench-1s', '* * * * * *', 'noop', '{\"sql\": \"SELECT 1\"}', replace => true);   -- then sleep $CS"
               "SELECT hasched.unschedule('bench-1s');"
               "-- per run: created_at - fire_at, started_at - fire_at FROM hasched.job WHERE schedule = 'bench-1s'")
        say "  next run: $(q "SELECT hasched.schedule('bench-1s', '* * * * * *', 'noop', '{\"sql\": \"SELECT 1\"}', replace => true)")"
        sleep "$CS"
        q "SELECT hasched.unschedule('bench-1s')" >/dev/null
        wait_sql 30 "SELECT NOT $NOOP_LEFT" || R[cron.note]="runs still waiting 30 s after unschedule"
        from7="FROM hasched.job j WHERE j.id > $first7 AND j.schedule = 'bench-1s' AND j.created_at >= '$t7'"
        pct_put cron.fire "$(pct_ms "j.created_at - j.fire_at" "$from7")"
        pct_put cron.start "$(pct_ms "j.started_at - j.fire_at" "$from7 AND j.started_at IS NOT NULL")"
        IFS='|' read -r R[cron.runs] R[cron.expected] R[cron.dup] R[cron.ok] <<<"$(q "
            SELECT count(*), round(extract(epoch FROM max(j.fire_at) - min(j.fire_at)))::int + 1,
                   count(*) - count(DISTINCT j.fire_at), count(*) FILTER (WHERE j.state = 'succeeded') $from7")"
        R[cron.skips]=$(q "SELECT coalesce(string_agg(kind || ' ' || n, ', '), 'none') FROM (SELECT kind, count(*) n FROM hasched.event
                            WHERE at >= '$t7' AND detail->>'schedule' = 'bench-1s' GROUP BY kind) s")
        pct_say cron.fire "created_at - fire_at"
        pct_say cron.start "started_at - fire_at"
        say "  runs ${R[cron.runs]} (fire_at spans ${R[cron.expected]} s; fired twice: ${R[cron.dup]}); succeeded ${R[cron.ok]}; schedule events: ${R[cron.skips]}${R[cron.note]:+  (${R[cron.note]})}"
        q "SELECT j.id, j.fire_at, round((extract(epoch FROM j.created_at - j.fire_at) * 1000)::numeric, 2) AS fire_ms,
                  round((extract(epoch FROM j.started_at - j.fire_at) * 1000)::numeric, 2) AS start_ms, j.state, j.worker
             $from7 ORDER BY j.fire_at" >"$outdir/cron.txt"
    fi

    # ----------------------------------------------------------------------
    # step 8: promotion -> first started job
    # ----------------------------------------------------------------------
    if [[ " $BENCH_STEPS " == *" 8 "* ]]; then
        local FR=$BENCH_FAILOVER_RUNS run cur nxt ep_old lsn row t_pro t_done i res
        hdr "8. promotion -> first started job, $FR runs (primary + streaming standby, unix sockets in $tmp/ha)"
        hadir=$tmp/ha
        mkdir -p "$hadir"
        if is_root; then chown "$BENCH_OS_USER:" "$hadir"; fi
        chmod 700 "$hadir"
        as_pg "$PGBIN/initdb" -D "$hadir/n0" -U "$DB_USER" --auth-local=trust --auth-host=reject \
            -E UTF8 --locale=C --no-sync >"$hadir/n0.initdb.log" 2>&1 ||
            { cat "$hadir/n0.initdb.log"; die "step 8: initdb failed"; }
        printf '%s\n' "" "# --- hasched bench step 8 (bench/run.sh): every node ---" \
            "shared_preload_libraries = 'hasched'" \
            "hasched.database = '$DB_NAME'" \
            "hasched.max_executors = $E" \
            "hasched.min_executors = 1" \
            "max_worker_processes = $(( E + 8 ))" \
            "fsync = on" \
            "synchronous_commit = on" \
            "shared_buffers = 128MB" \
            "max_connections = 30" \
            "wal_level = replica" \
            "hot_standby = on" \
            "log_line_prefix = '%m [%p] '" >>"$hadir/n0/postgresql.conf"
        ha_conf n0
        ha_start n0
        as_pg "$PGBIN/createdb" -h "$hadir" -p "$(ha_port n0)" "$DB_NAME"
        qn n0 "CREATE EXTENSION hasched" >/dev/null
        qn n0 "INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst) VALUES ('bench', 1000000000, 1000000, 1000000)" >/dev/null
        qn n0 "INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'bench')" >/dev/null
        qn n0 "INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql')" >/dev/null
        cur=n0
        R[fo.runs]=""
        SQLS+=("-- 8. failover, per run; on the primary:"
               "SELECT count(hasched.submit('noop', '{\"sql\": \"SELECT 1\"}', run_at => clock_timestamp() + g * interval '100 ms')) FROM generate_series(1, 600) g;"
               "-- pg_basebackup -U bench -D <standby> -R -X stream --checkpoint=fast --no-sync; pg_ctl start (standby); wait for streaming and replay; sleep $BENCH_FAILOVER_SETTLE"
               "-- pg_ctl stop -m immediate (primary); t0 = client clock; pg_ctl promote -w (standby); then poll the new primary every 0.1 s:"
               "SELECT e.epoch, extract(epoch FROM e.started_at), (SELECT extract(epoch FROM min(j.started_at)) FROM hasched.job j WHERE j.epoch = e.epoch) FROM hasched.epoch e WHERE e.epoch > <old epoch> ORDER BY e.epoch DESC LIMIT 1;")
        for run in $(seq 1 "$FR"); do
            nxt=n$run
            ep_old=$(qn "$cur" "SELECT max(epoch) FROM hasched.epoch")
            # jobs due every 100 ms from now on, for 60 s: the standby has them too
            qn "$cur" "SELECT count(hasched.submit('noop', '{\"sql\": \"SELECT 1\"}',
                              run_at => clock_timestamp() + g * interval '100 ms'))
                         FROM generate_series(1, 600) g" >/dev/null
            ha_standby "$cur" "$nxt"
            lsn=$(qn "$cur" "SELECT pg_current_wal_lsn()")
            for i in $(seq 1 300); do
                [ "$(qn "$nxt" "SELECT pg_last_wal_replay_lsn() >= '$lsn'" 2>/dev/null)" = t ] &&
                    [ "$(qn "$cur" "SELECT count(*) FROM pg_stat_replication WHERE application_name = '$nxt' AND state = 'streaming'")" = 1 ] && break
                sleep 0.1
            done
            [ "$i" -lt 300 ] || die "step 8: $nxt does not stream from $cur"
            sleep "$BENCH_FAILOVER_SETTLE"
            row=$(qn "$cur" "SELECT count(*) FILTER (WHERE epoch = $ep_old AND state = 'succeeded' AND started_at > now() - interval '${BENCH_FAILOVER_SETTLE} s')
                              FROM hasched.job WHERE queue = 'noop'")
            say "  run $run: primary $cur (epoch $ep_old) ran $row jobs of the stream in the last ${BENCH_FAILOVER_SETTLE} s; standby $nxt streaming"
            ha_stop "$cur" immediate
            t_pro=$(now_s)
            as_pg "$PGBIN/pg_ctl" promote -D "$hadir/$nxt" -w -t 60 >"$hadir/$nxt.promote.log" 2>&1 ||
                { cat "$hadir/$nxt.promote.log"; die "step 8: pg_ctl promote of $nxt failed"; }
            t_done=$(now_s)
            res=""
            for i in $(seq 1 300); do
                res=$(qn "$nxt" "SELECT e.epoch, extract(epoch FROM e.started_at),
                                        (SELECT extract(epoch FROM min(j.started_at)) FROM hasched.job j WHERE j.epoch = e.epoch)
                                   FROM hasched.epoch e WHERE e.epoch > $ep_old ORDER BY e.epoch DESC LIMIT 1" 2>/dev/null) || res=""
                case "$res" in *'|'*'|'[0-9]*) break ;; esac
                sleep 0.1
            done
            local ep_new t_ep t_job
            IFS='|' read -r ep_new t_ep t_job <<<"$res"
            R[fo.$run.promote]=$(ms_between "$t_pro" "$t_done")
            R[fo.$run.epoch]=$(ms_between "$t_pro" "$t_ep")
            R[fo.$run.job]=$(ms_between "$t_pro" "$t_job")
            R[fo.$run.retried]=$(qn "$nxt" "SELECT coalesce(max((detail->>'sql_jobs_retried')::int), 0) FROM hasched.event
                                              WHERE kind = 'failover' AND (detail->>'epoch')::int = ${ep_new:-0}" 2>/dev/null || true)
            say "  run $run: pg_ctl promote returned after ${R[fo.$run.promote]} ms; epoch ${ep_new:-?} opened after ${R[fo.$run.epoch]:-n/a} ms; first job started after ${R[fo.$run.job]:-(none within 30 s)} ms; SQL jobs retried: ${R[fo.$run.retried]:-?}"
            R[fo.runs]+="$run "
            # the promoted node is the next run's primary
            rm -rf "${hadir:?}/$cur"
            cur=$nxt
        done
        ha_stop "$cur" fast
        R[fo.median]=$(for run in ${R[fo.runs]}; do echo "${R[fo.$run.job]:-}"; done | median)
        R[fo.epoch_median]=$(for run in ${R[fo.runs]}; do echo "${R[fo.$run.epoch]:-}"; done | median)
        R[fo.promote_median]=$(for run in ${R[fo.runs]}; do echo "${R[fo.$run.promote]:-}"; done | median)
        say "  median: first job started ${R[fo.median]:-n/a} ms after the promote call (epoch opened: ${R[fo.epoch_median]:-n/a} ms)"
    fi

    # ----------------------------------------------------------------------
    # summary
    # ----------------------------------------------------------------------
    R[load_end]=$(cut -d' ' -f1-3 /proc/loadavg)
    summary "$pgver" "$extver" "$settings" $(( SECONDS - t_start )) | tee "$outdir/summary.md"
}

summary() {
    local pgver=$1 extver=$2 settings=$3 elapsed=$4 T=$BENCH_SECONDS C=$BENCH_SUBMIT_CLIENTS
    local commit dirty c b kind name label target run
    commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
    dirty=$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null | grep -q . && echo " (+ uncommitted changes)" || true)

    printf '\n## hasched bench summary (%s)\n\n' "$stamp"
    printf -- '- command: `%s` (or `make bench`), %s s in all\n' "$invocation" "$elapsed"
    printf -- '- machine: %s cores (%s), %s RAM, kernel %s\n' "$(nproc)" \
        "$(awk -F': ' '/^model name/{ print $2; exit }' /proc/cpuinfo)" \
        "$(free -h | awk '/^Mem:/{ print $2 }')" "$(uname -r)"
    printf -- '- load average (1, 5, 15 min) at the start %s, at the end %s: other work on the machine shows in the figures\n' \
        "${R[load_start]}" "${R[load_end]}"
    printf -- '- %s\n' "$pgver"
    printf -- '- hasched %s, commit %s%s\n' "$extver" "$commit" "$dirty"
    printf -- '- server: %s\n' "$settings"
    printf -- '- every run: pgbench -n -M prepared, -j %s; fsync and synchronous_commit on, so every commit waits for a WAL flush\n' "$BENCH_THREADS"
    printf -- '- server CPU: CPU time of all the bench server'"'"'s processes (backends, the hasched scheduler, autovacuum, walwriter, ...) during the run, per transaction or job; it depends less on other load than tps does\n'

    if [[ " $BENCH_STEPS " == *" 1 "* ]]; then
        printf '\n### 1. single-row submit (-c %s, %s s each)\n\n' "$C" "$T"
        printf '| statement | tps | latency ms | vs plain INSERT | server CPU us/job | target |\n|---|---:|---:|---:|---:|---|\n'
        for name in submit_quotas_on submit_quotas_off plain_insert; do
            case "$name" in
                submit_quotas_on) label="hasched.submit, quotas on"; target=">= 0.90" ;;
                submit_quotas_off) label="hasched.submit, quotas off"; target="" ;;
                plain_insert) label="plain INSERT into bench_plain"; target="" ;;
            esac
            printf '| %s | %s | %s | %s | %s | %s |\n' "$label${R[$name.note]:+ (${R[$name.note]})}" \
                "$(fmt_int "${R[$name.tps]:-}")" "${R[$name.lat]:-n/a}" \
                "$(ratio "${R[$name.tps]:-}" "${R[plain_insert.tps]:-}")" "${R[$name.cpu]:-n/a}" "$target"
        done
        printf '\nQuota accounting ran: hasched.quota_use counted %s jobs during the quotas-on run.\n' "${R[quota_counted]:-n/a}"
    fi

    if [[ " $BENCH_STEPS " == *" 2 "* ]]; then
        printf '\n### 2. 100 jobs per call (-c %s, %s s each)\n\n' "$C" "$T"
        printf '| statement | calls/s | jobs/s | latency ms | vs plain | server CPU us/job |\n|---|---:|---:|---:|---:|---:|\n'
        for name in submit_many_100 plain_insert_100; do
            case "$name" in
                submit_many_100) label="hasched.submit_many, 100 payloads, quotas on" ;;
                plain_insert_100) label="plain INSERT ... SELECT generate_series(1, 100)" ;;
            esac
            printf '| %s | %s | %s | %s | %s | %s |\n' "$label${R[$name.note]:+ (${R[$name.note]})}" \
                "$(fmt_int "${R[$name.tps]:-}")" "$(fmt_int "$(mul "${R[$name.tps]:-}" 100)")" \
                "${R[$name.lat]:-n/a}" "$(ratio "${R[$name.tps]:-}" "${R[plain_insert_100.tps]:-}")" "${R[$name.cpu]:-n/a}"
        done
    fi

    if [[ " $BENCH_STEPS " == *" 3 "* ]]; then
        printf '\n### 3. claim + complete (%s s each; claim and complete in one statement, so in one transaction)\n\n' "$T"
        printf '| clients | batch | loop | tps | jobs/s | latency ms | vs plain 2-step | server CPU us/job | target |\n'
        printf '|---:|---:|---|---:|---:|---:|---:|---:|---|\n'
        for c in $BENCH_CLAIM_CLIENTS; do
            for b in 1 100; do
                # batch 100: the headline row (batch complete) first
                for kind in hasched_many hasched plain2 plain1; do
                    name=claim_${kind}_b${b}_c${c}
                    [ -n "${R[$name.tps]+x}" ] || continue
                    target=""
                    case "$kind" in
                        hasched) label="hasched: complete(id, token) per job FROM claim(...)"
                                 [ "$b" = 100 ] && [ -z "${R[claim_hasched_many_b${b}_c${c}.tps]+x}" ] &&
                                     target=">= 20000 jobs/s" ;;
                        hasched_many) label="headline: hasched, one complete(array_agg(id), array_agg(token)) FROM claim(...)"
                                 target=">= 20000 jobs/s" ;;
                        plain2) label="plain 2-step: claim UPDATE, then complete UPDATE (plpgsql)" ;;
                        plain1) label="plain 1-step: one UPDATE ... FOR UPDATE SKIP LOCKED" ;;
                    esac
                    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$c" "$b" \
                        "$label${R[$name.note]:+ (${R[$name.note]})}" "$(fmt_int "${R[$name.tps]:-}")" \
                        "$(fmt_int "${R[$name.jobs]:-}")" "${R[$name.lat]:-n/a}" \
                        "$(ratio "${R[$name.jobs]:-}" "${R[claim_plain2_b${b}_c${c}.jobs]:-}")" \
                        "${R[$name.cpu]:-n/a}" "$target"
                done
            done
        done
        for c in $BENCH_CLAIM_CLIENTS; do
            name=claim_hasched_many_b100_c${c}
            [ -n "${R[$name.tps]+x}" ] || name=claim_hasched_b100_c${c}
            [ -n "${R[$name.tps]+x}" ] || continue
            printf '\nHeadline (-c %s, batch 100, %s): %s jobs/s (target >= 20000).\n' "$c" \
                "$([ "$name" = "claim_hasched_many_b100_c${c}" ] && echo 'one complete(ids[], tokens[]) per claim' || echo 'complete() per job')" \
                "$(fmt_int "${R[$name.jobs]:-}")"
        done
        printf '\nhasched does more per job than the plain loops (state trigger, lease tokens, claim cursors). The plain 2-step loop is a plpgsql function (bench/setup.sql) so that it too takes one round trip. Each run starts after VACUUM ANALYZE, with no job running.\n'
    fi

    if [[ " $BENCH_STEPS " == *" 4 "* ]]; then
        local W=${R[window]}
        printf '\n### 4. batch-100 claim + complete for %s s with an old snapshot held (-c %s)\n\n' \
            "$BENCH_SNAPSHOT_SECONDS" "$claim_clients_main"
        printf '| loop | mean jobs/s | first %s s jobs/s | last %s s jobs/s | last/first | server CPU us/job | target |\n' "$W" "$W"
        printf '|---|---:|---:|---:|---:|---:|---|\n'
        for kind in $BENCH_SNAPSHOT_LOOPS; do
            name=snapshot_$kind
            [ -n "${R[$name.series]+x}" ] || continue
            case "$kind" in
                hasched) label="hasched: complete(id, token) per job"; target=">= 0.50" ;;
                hasched_many) label="hasched: complete(ids[], tokens[]) per claim"; target=">= 0.50" ;;
                plain2) label="plain 2-step"; target="(expected to degrade)" ;;
                plain1) label="plain 1-step"; target="(expected to degrade)" ;;
            esac
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label${R[$name.note]:+ (${R[$name.note]})}" \
                "$(fmt_int "${R[$name.jobs]:-}")" "$(fmt_int "${R[$name.first]:-}")" "$(fmt_int "${R[$name.last]:-}")" \
                "$(ratio "${R[$name.last]:-}" "${R[$name.first]:-}")" "${R[$name.cpu]:-n/a}" "$target"
        done
        printf '\njobs/s per %s s window:\n\n' "$W"
        for kind in $BENCH_SNAPSHOT_LOOPS; do
            [ -n "${R[snapshot_$kind.series]+x}" ] || continue
            printf -- '- %s: %s\n' "$kind" "${R[snapshot_$kind.series]:-n/a}"
        done
        printf '\nEach loop had its own holder: psql, BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM <table>; then idle in transaction until the run ended. After each run:\n\n'
        for kind in $BENCH_SNAPSHOT_LOOPS; do
            [ -n "${R[snapshot_$kind.series]+x}" ] || continue
            printf -- '- %s: %s\n' "$kind" "${R[snapshot_$kind.holder_after]:-n/a}"
        done
    fi

    if [ -n "${R[restarted]:-}" ]; then
        printf '\nBefore step 5 the server was restarted with track_commit_timestamp = on (for step 6); steps 1-4 ran without it.\n'
    fi

    if [[ " $BENCH_STEPS " == *" 5 "* ]]; then
        printf '\n### 5. drain %s no-op SQL jobs through the executors (hasched.max_executors = %s)\n\n' \
            "$BENCH_DRAIN_JOBS" "${R[drain.executors]:-}"
        printf '| figure | value | target |\n|---|---:|---|\n'
        printf '| jobs/s = succeeded / (max(finished_at) - min(started_at)) | %s | >= 10000 |\n' "${R[drain.jobs_s]:-n/a}"
        printf '| max(finished_at) - min(started_at), s | %s | |\n' "${R[drain.busy_s]:-n/a}"
        printf '| wall: set_mode('"'"'normal'"'"') -> last finished_at, s (jobs/s) | %s (%s) | |\n' \
            "${R[drain.wall_s]:-n/a}" "${R[drain.wall_jobs_s]:-n/a}"
        printf '| set_mode('"'"'normal'"'"') -> first started_at, ms | %s | |\n' "${R[drain.wake_ms]:-n/a}"
        printf '| wall seen by the waiting session (polls every 50 ms), s | %s | |\n' "${R[drain.wall_poll_s]:-n/a}"
        printf '| succeeded / submitted | %s / %s%s | |\n' "${R[drain.succeeded]:-n/a}" "${R[drain.submitted]:-n/a}" \
            "${R[drain.other]:+ (also: ${R[drain.other]})}${R[drain.note]:+ (${R[drain.note]})}"
        printf '| attempts that did not succeed (job_run rows) | %s | |\n' "${R[drain.runs]:-n/a}"
        printf '| server CPU per job, us (of which the executors) | %s (%s) | |\n' "${R[drain.cpu]:-n/a}" "${R[drain.exec_cpu]:-n/a}"
        printf '| submit: %s x submit_many of %s while paused, s | %s | |\n' \
            "$(( (BENCH_DRAIN_JOBS + BENCH_DRAIN_BATCH - 1) / BENCH_DRAIN_BATCH ))" "$BENCH_DRAIN_BATCH" "${R[drain.submit_s]:-n/a}"
        printf '\nJobs per executor: %s. Each job runs in its own transaction (executor commits with synchronous_commit off).\n' \
            "${R[drain.workers]:-n/a}"
    fi

    if [[ " $BENCH_STEPS " == *" 6 "* ]]; then
        printf '\n### 6. submit -> start latency, executors idle (%s jobs, one psql session, one submit per transaction, %s ms apart)\n\n' \
            "$BENCH_LATENCY_JOBS" "$BENCH_LATENCY_GAP_MS"
        printf '| interval | n | p50 ms | p90 ms | p99 ms | max ms | target |\n|---|---:|---:|---:|---:|---:|---|\n'
        for name in lat.run lat.pre lat.commit; do
            case "$name" in
                lat.run) label="started_at - run_at (main figure)"; target="p99 <= 10 ms" ;;
                lat.pre) label="commit timestamp - run_at (rest of submit, up to the commit record)"; target="" ;;
                lat.commit) label="started_at - commit timestamp (WAL flush, wake-up, claim)"; target="" ;;
            esac
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${R[$name.n]:-0}" "${R[$name.p50]:-n/a}" \
                "${R[$name.p90]:-n/a}" "${R[$name.p99]:-n/a}" "${R[$name.max]:-n/a}" "$target"
        done
        printf '\nrun_at is set by submit() (its clock, just before the commit); started_at is the executor'"'"'s claim time. The commit timestamp is pg_xact_commit_timestamp() of the submitting transaction (track_commit_timestamp = on), taken by the server just before the commit'"'"'s WAL flush; the job is visible and the executor woken only after that flush. Jobs: %s%s. Per job: latency.txt.\n' \
            "${R[lat.states]:-n/a}" "${R[lat.note]:+ (${R[lat.note]})}"
    fi

    if [[ " $BENCH_STEPS " == *" 7 "* ]]; then
        printf '\n### 7. cron firing jitter: schedule '"'"'* * * * * *'"'"' on the sql queue for %s s\n\n' "$BENCH_CRON_SECONDS"
        printf '| interval | runs | p50 ms | p90 ms | p99 ms | max ms | target |\n|---|---:|---:|---:|---:|---:|---|\n'
        for name in cron.fire cron.start; do
            case "$name" in
                cron.fire) label="created_at - fire_at (firing)"; target="p99 <= 10 ms" ;;
                cron.start) label="started_at - fire_at (firing + executor start)"; target="p99 <= 10 ms" ;;
            esac
            printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$label" "${R[$name.n]:-0}" "${R[$name.p50]:-n/a}" \
                "${R[$name.p90]:-n/a}" "${R[$name.p99]:-n/a}" "${R[$name.max]:-n/a}" "$target"
        done
        printf '\nfire_at is the due second; created_at is now() of the scheduler transaction that submitted the run. %s runs whose fire_at span %s s; fired twice: %s; succeeded: %s; schedule events (skips): %s%s. Per run: cron.txt.\n' \
            "${R[cron.runs]:-n/a}" "${R[cron.expected]:-n/a}" "${R[cron.dup]:-n/a}" "${R[cron.ok]:-n/a}" "${R[cron.skips]:-n/a}" \
            "${R[cron.note]:+ (${R[cron.note]})}"
    fi

    if [[ " $BENCH_STEPS " == *" 8 "* ]]; then
        printf '\n### 8. promotion -> first started job (%s runs; hasched.max_executors = %s)\n\n' \
            "$BENCH_FAILOVER_RUNS" "$BENCH_MAX_EXECUTORS"
        printf '| run | pg_ctl promote -w returned, ms | new epoch opened, ms | first job started, ms | SQL jobs retried | target |\n'
        printf '|---|---:|---:|---:|---:|---|\n'
        for run in ${R[fo.runs]:-}; do
            printf '| %s | %s | %s | %s | %s | |\n' "$run" "${R[fo.$run.promote]:-n/a}" "${R[fo.$run.epoch]:-n/a}" \
                "${R[fo.$run.job]:-n/a}" "${R[fo.$run.retried]:-n/a}"
        done
        printf '| median | %s | %s | %s | | <= 1000 ms |\n' "${R[fo.promote_median]:-n/a}" "${R[fo.epoch_median]:-n/a}" "${R[fo.median]:-n/a}"
        printf '\nEach run: the primary had jobs of an sql queue due every 100 ms (submitted ahead with run_at, so the standby had them) and ran them for %s s; pg_ctl stop -m immediate on the primary; times from a client clock reading just before pg_ctl promote of the standby to hasched.epoch.started_at of the new epoch and to min(started_at) of the jobs of the new epoch, read on the new primary (same machine, same clock). The standby was a fresh pg_basebackup -R -X stream of the primary; the promoted node was the next run'"'"'s primary. Nodes: fsync on, unix sockets only; logs failover_n*.log.\n' \
            "$BENCH_FAILOVER_SETTLE"
    fi

    if [ -n "${R[plans_text]:-}" ]; then
        printf '\n### plans (auto_explain of one claim of 100 + complete, rolled back; files plans_*.txt)\n\n```\n%s```\n' "${R[plans_text]}"
    fi

    if [ "${#CMDS[@]}" -gt 0 ]; then
        printf '\n### exact pgbench commands\n\n```\n'
        printf '%s\n' "${CMDS[@]}"
        printf '```\n'
    fi
    if [ "${#SQLS[@]}" -gt 0 ]; then
        printf '\n### exact SQL of steps 5-8 (psql -X, as the superuser bench)\n\n```\n'
        printf '%s\n' "${SQLS[@]}"
        printf '```\n'
    fi
}

trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

exec > >(tee -i "$outdir/run.log") 2>&1
tee_pid=$!
main "$@"
