
# Copyright: hasched contributors
#
# 004_scheduler.pl: the executors and the scheduler process on one server.
#
# Proves, with the real background workers:
#   - SQL jobs run in the database as their owner, with the owner's rights
#     and no more: a non-superuser's job writes as that role; its attempts
#     to become superuser, to switch role or to read a table it has no rights
#     on fail with the permission error in last_error and the run history;
#     nothing a job leaves in its session (settings, temporary tables and
#     their triggers) reaches the next job of the same executor: otherwise a
#     role's temporary table traps a later superuser's job;
#   - a run-time error is a failed attempt, retried after backoff per
#     max_attempts, then dead; SQL that does not parse is refused at submit
#     (JQ018) and writes nothing;
#   - the job's timeout is its statement timeout;
#   - cancel() of a running job stops it at once, frees the executor, rolls
#     back its writes, and nothing more is recorded for the job; a cancel()
#     whose transaction rolls back leaves the job running to its end;
#   - a job cannot lift its own timeout with SET statement_timeout;
#   - an executor killed mid-job (SIGKILL: the postmaster restarts every
#     backend; SIGTERM: only that worker exits) leaves its job to be run
#     again (outcome executor_exited), and the killed attempt's writes are
#     rolled back, so the effects of the job commit exactly once;
#   - the scheduler killed with SIGKILL: the server restarts, the scheduler
#     comes back, finished jobs keep their state, no job is lost, jobs queued
#     before the kill run, a 1-second schedule keeps firing, and a crash
#     restart opens no new epoch.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/004_scheduler.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = HaschedCluster->primary(
	'sched', conf => q{
hasched.max_executors = 4
hasched.misfire_threshold = '500ms'
# PostgreSQL::Test::Cluster turns it off; a killed backend must restart all
restart_after_crash = on
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	-- what jobs write: one row per attempt that committed
	CREATE TABLE public.runs (tag text, attempt int, at timestamptz DEFAULT clock_timestamp());
	CREATE TABLE public.flush (at timestamptz DEFAULT clock_timestamp());
});

my $superuser = $node->safe_psql('postgres', 'SELECT rolname FROM pg_roles WHERE oid = 10');

ok($node->wait_scheduler('primary'), 'the scheduler reports ok as primary after start');

# ---------------------------------------------------------------------------
# 1. SQL jobs run as their owner, with the owner's rights and no more
# ---------------------------------------------------------------------------
$node->query(
	q{
	CREATE ROLE app_r LOGIN IN ROLE hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('app_r', 'enterprise');
	CREATE TABLE public.t (who name, super boolean);
	GRANT SELECT, INSERT ON public.t TO app_r;
	CREATE TABLE public.secret (x int);
	INSERT INTO public.secret VALUES (42);
});

my $id = $node->submit_sql(
	q{INSERT INTO public.t SELECT current_user, (SELECT rolsuper FROM pg_roles WHERE rolname = current_user)},
	user => 'app_r');
ok($node->wait_state($id, 'succeeded'), 'a job of app_r that inserts into public.t succeeds');
is($node->query('SELECT who || ' . "'/'" . ' || super FROM public.t'),
	'app_r/false', 'the job ran as its owner app_r (current_user), who is no superuser');
is($node->job($id, q{owner || '/' || tenant || '/' || result::text}),
	'app_r/app_r/{"rows": 1}', 'the job is owned by and billed to app_r; its result counts the row');

my %denied = (
	'ALTER ROLE app_r SUPERUSER' =>
	  'must be superuser to alter superuser roles or change superuser attribute',
	"SET ROLE $superuser" =>
	  'cannot set parameter "role" within security-definer function',
	'SELECT x FROM public.secret' => 'permission denied for table secret',);
for my $sql (sort keys %denied)
{
	my $jid = $node->submit_sql($sql, user => 'app_r');
	ok($node->wait_state($jid, 'dead'), "a job of app_r running '$sql' goes dead (max_attempts 1)");
	is($node->job($jid, 'last_error'), $denied{$sql}, "'$sql': last_error is the permission error");
	is($node->runs_of($jid), "1:failed:$denied{$sql}", "'$sql': the run history has the failed attempt with the error");
}
is($node->query(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_r'}),
	'f', 'app_r is still no superuser after its jobs');

# A job's session state (settings, temporary objects) must not reach the
# next job that the same executor runs, least of all another owner's: a
# temporary table of app_r's shadows the tables of the same name in a later
# job of the superuser, and a trigger on it then runs as the superuser.
#
# Submit a job of app_r and then one of the superuser in one transaction,
# app_r's first by priority, so that one executor claims both in one batch;
# again (up to 5 times) until one executor ran both.  %TRY% in the second
# job's SQL is replaced by the try number.  Returns the two job ids, the try,
# and whether the pair is a fair probe: one executor ran both, or the
# first job's executor has exited (an executor per job isolates jobs too).
sub pair_in_one_executor
{
	my ($sql_a, $sql_b) = @_;
	my ($ja, $jb, $fair);
	for my $try (1 .. 5)
	{
		my $sql_b_try = $sql_b =~ s/%TRY%/$try/gr;
		($ja, $jb) = split /\n/, $node->query(
			"BEGIN; SET ROLE app_r;"
			  . " SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$sql_a\$j\$), priority => 'high', max_attempts => 1);"
			  . " RESET ROLE;"
			  . " SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$sql_b_try\$j\$), priority => 'low', max_attempts => 1);"
			  . " COMMIT;");
		$node->poll("SELECT bool_and(state IN ('succeeded', 'dead')) FROM hasched.job WHERE id IN ($ja, $jb)");
		return ($ja, $jb, $try, 1)
		  if $node->query("SELECT count(DISTINCT worker) = 1 FROM hasched.job WHERE id IN ($ja, $jb)") eq 't';
		$fair = $node->query(
			"SELECT NOT EXISTS (SELECT 1 FROM pg_stat_activity a JOIN hasched.job j"
			  . " ON a.pid = split_part(j.worker, '/', 3)::int WHERE j.id = $ja)") eq 't';
		return ($ja, $jb, $try, $fair) if $try == 5;
	}
}

my ($probe_a, $probe_b, $try, $fair) = pair_in_one_executor(
	'SET search_path = public, pg_catalog; SET work_mem = \'77MB\'',
	q{INSERT INTO public.runs (tag, attempt) SELECT 'probe%TRY% ' || current_setting('search_path') || ' ' || current_setting('work_mem'), 0});
ok($fair, 'a job of app_r and then one of the superuser ran in the same executor (or the first one\'s executor exited)');
is($node->job($probe_a, 'owner') . ' ' . $node->job($probe_b, 'owner'), "app_r $superuser", '... owned by app_r and the superuser');
is($node->job($probe_a, 'state') . ' ' . $node->job($probe_b, 'state'), 'succeeded succeeded', '... both succeeded');
is( $node->query("SELECT regexp_replace(tag, '^probe$try ', '') FROM public.runs WHERE tag LIKE 'probe$try %'"),
	'"$user", public 4MB',
	'the second job sees the default search_path and work_mem: the settings of the first job were undone');

# a job cannot leave temporary objects behind: it runs as a security-restricted operation
my $tmpjob = $node->query(q{SET ROLE app_r; SELECT hasched.submit('sqlq', '{"sql": "CREATE TEMP TABLE probe_tmp (x int)"}', max_attempts => 1)});
ok($node->wait_state($tmpjob, 'dead'), 'a job that creates a temporary table fails');
like($node->job($tmpjob, 'last_error'), qr/cannot create temporary table within security-restricted operation/,
	'... because jobs run as security-restricted operations');

# the same, as an attack: app_r's temporary table "runs" with a trigger that
# makes app_r superuser, then a superuser's job inserting into "runs"
my ($esc_a, $esc_b);
($esc_a, $esc_b, $try, $fair) = pair_in_one_executor(
	q{CREATE FUNCTION pg_temp.escalate() RETURNS trigger LANGUAGE plpgsql AS $f$BEGIN ALTER ROLE app_r SUPERUSER; RETURN NULL; END$f$;}
	  . q{ CREATE TEMP TABLE runs (tag text, attempt int, at timestamptz);}
	  . q{ CREATE TRIGGER escalate BEFORE INSERT ON pg_temp.runs FOR EACH ROW EXECUTE FUNCTION pg_temp.escalate()},
	q{INSERT INTO runs (tag, attempt) VALUES ('escalate%TRY%', 0)});
ok($fair, 'app_r\'s trap and the superuser\'s insert ran in the same executor (or the first one\'s executor exited)');
is($node->query(q{SELECT rolsuper FROM pg_roles WHERE rolname = 'app_r'}),
	'f', 'a temporary table left by app_r\'s job does not make app_r superuser through a later job');
is($node->query("SELECT count(*) FROM public.runs WHERE tag = 'escalate$try'"),
	'1', 'the superuser\'s job wrote into public.runs, not into app_r\'s temporary table');
$node->query('ALTER ROLE app_r NOSUPERUSER');

# ---------------------------------------------------------------------------
# 2. run-time errors are failed attempts, retried per max_attempts
# ---------------------------------------------------------------------------
$id = $node->submit_sql('SELECT 1/0', max_attempts => 3);
ok($node->wait_state($id, 'dead'), 'a job that divides by zero ends dead');
is($node->job($id, q{attempt || ' ' || last_error}), '3 division by zero',
	'it was tried max_attempts = 3 times; last_error has the error');
is( $node->runs_of($id),
	"1:failed:division by zero\n2:failed:division by zero\n3:failed:division by zero",
	'the run history has the three failed attempts with the error');
# backoff of the queue: base 1 s, so 0.5..1 s after attempt 1, 1..2 s after attempt 2
is( $node->query(
		"SELECT string_agg((extract(epoch FROM b.started_at - a.finished_at) >= a.attempt * 0.5 - 0.05)::text, ',' ORDER BY a.attempt)"
		  . " FROM hasched.job_run a JOIN hasched.job_run b ON b.job_id = a.job_id AND b.attempt = a.attempt + 1"
		  . " WHERE a.job_id = $id"),
	'true,true',
	'the retries waited out the backoff (>= 0.5 s, then >= 1 s)');

my $jobs_before = $node->query('SELECT count(*) FROM hasched.job');
like(
	$node->query_error(q{SELECT hasched.submit('sqlq', '{"sql": "SELEC 1"}')}),
	qr/ERROR:  JQ018: the SQL of the job does not parse/,
	'SQL that does not parse is refused at submit with JQ018');
is($node->query('SELECT count(*) FROM hasched.job'), $jobs_before, 'the refused submit wrote no job');

# ---------------------------------------------------------------------------
# 3. the timeout is the statement timeout
# ---------------------------------------------------------------------------
my $t0 = time;
$id = $node->submit_sql('SELECT pg_sleep(10)', timeout => '300 ms', max_attempts => 1);
ok($node->wait_state($id, 'dead'), 'pg_sleep(10) with timeout 300 ms ends dead');
my $elapsed = time - $t0;
cmp_ok($elapsed, '<', 5, sprintf('... well before 10 s (%.2f s after submit)', $elapsed));
is($node->job($id, 'last_error'), 'canceling statement due to statement timeout',
	'last_error says statement timeout');
is($node->job($id, q{extract(epoch FROM finished_at - started_at) BETWEEN 0.29 AND 5}),
	't', 'the attempt lasted about the timeout (0.3 s), not 10 s');
is($node->runs_of($id), '1:failed:canceling statement due to statement timeout',
	'one failed attempt in the run history');

$t0 = time;
$id = $node->submit_sql('SET statement_timeout = 0; SELECT pg_sleep(10)', timeout => '300 ms', max_attempts => 1);
ok($node->wait_state($id, 'dead'), 'a job that sets statement_timeout = 0 itself still ends dead');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 5, sprintf('... within its timeout, not after 10 s (%.2f s)', $elapsed));
is($node->job($id, 'last_error'), 'canceling statement due to statement timeout', '... by the statement timeout');

# ---------------------------------------------------------------------------
# 4. cancel() of a running job
# ---------------------------------------------------------------------------
$id = $node->submit_sql(q{INSERT INTO public.runs (tag, attempt) VALUES ('cancelme', 1); SELECT pg_sleep(30)},
	timeout => '60 s', max_attempts => 3);
my $pid = $node->wait_busy($id);
ok($pid, 'an executor is busy with the pg_sleep(30) job');
is($node->job($id, 'state'), 'running', 'the job is running');
$t0 = time;
is($node->query("SELECT hasched.cancel($id)"), 't', 'cancel() of the running job returns true');
ok( $node->poll("SELECT state IN ('idle', 'woken', 'busy') AND job_id IS DISTINCT FROM $id FROM hasched.workers WHERE pid = $pid"
	),
	'the executor lets go of the job and lives on (same pid)');
$elapsed = time - $t0;
cmp_ok($elapsed, '<', 5, sprintf('... quickly (%.2f s after cancel)', $elapsed));
my $after_cancel = $node->job($id, q{state || '/' || attempt || '/' || finished_at || '/' || coalesce(last_error, '-') || '/' || coalesce(result::text, '-')});
like($after_cancel, qr{^cancelled/1/}, 'the job is cancelled after its first attempt');
is($node->runs_of($id), "1:cancelled:cancelled by $superuser", 'the run history has one cancelled attempt');
my $next = $node->submit_sql(q{INSERT INTO public.runs (tag, attempt) VALUES ('after-cancel', 1)});
ok($node->wait_state($next, 'succeeded'), 'the next job runs and succeeds');
is($node->query("SELECT count(*) FROM hasched.workers WHERE pid = $pid AND state <> 'free'"),
	'1', 'the executor that ran the cancelled job is still there');
is( $node->job($id, q{state || '/' || attempt || '/' || finished_at || '/' || coalesce(last_error, '-') || '/' || coalesce(result::text, '-')}),
	$after_cancel,
	'nothing more was recorded for the cancelled job (state, attempt, finish, error, result)');
is($node->runs_of($id), "1:cancelled:cancelled by $superuser", '... and still one run row, cancelled');
is($node->query(q{SELECT count(*) FROM public.runs WHERE tag = 'cancelme'}), '0',
	'the write the cancelled job made before its pg_sleep was rolled back');

# cancel() in a transaction that rolls back has not happened: the job goes on
$id = $node->submit_sql(q{INSERT INTO public.runs (tag, attempt) VALUES ('uncancelled', 1); SELECT pg_sleep(2)},
	timeout => '60 s', max_attempts => 3);
$pid = $node->wait_busy($id);
ok($pid, 'an executor is busy with a pg_sleep(2) job');
is($node->query("BEGIN; SELECT hasched.cancel($id); ROLLBACK;"), 't', 'cancel() of it returns true, then its transaction rolls back');
is($node->job($id, 'state'), 'running', 'the job is still running as far as the database knows');
ok($node->poll_within(10, "SELECT state FROM hasched.job WHERE id = $id", 'succeeded'),
	'the job whose cancel was rolled back goes on and succeeds (within 10 s)');
is($node->job($id, 'attempt'), '1', '... in its first attempt');
is($node->runs_of($id), '', '... with no failed, expired or cancelled attempt');
is($node->query(q{SELECT count(*) FROM public.runs WHERE tag = 'uncancelled'}), '1', '... and its write committed once');

# ---------------------------------------------------------------------------
# 5. an executor killed mid-job: the job runs again
# ---------------------------------------------------------------------------
# The job writes a row with its attempt, then sleeps only on attempt 1.
sub sleepy_once
{
	my ($tag) = @_;
	return "INSERT INTO public.runs (tag, attempt) SELECT '$tag', attempt FROM hasched.job WHERE payload->>'tag' = '$tag';"
	  . " SELECT pg_sleep(CASE WHEN attempt = 1 THEN 30 ELSE 0 END) FROM hasched.job WHERE payload->>'tag' = '$tag'";
}

# 5a. SIGKILL: the postmaster restarts all backends
$id = $node->submit_sql(sleepy_once('kill9'), tag => 'kill9', timeout => '60 s', max_attempts => 2);
$pid = $node->wait_busy($id);
ok($pid, 'an executor runs the kill9 job');
is($node->job($id, q{state || ' ' || attempt || ' ' || worker}),
	"running 1 executor/" . $node->query("SELECT slot FROM hasched.workers WHERE pid = $pid") . "/$pid",
	'the job is running, attempt 1, under that executor\'s name');
# the claim committed asynchronously: make it durable before the crash
$node->query('INSERT INTO public.flush DEFAULT VALUES');
my $log_offset = -s $node->logfile;
my $sched_pid = $node->scheduler_pid();
kill 'KILL', $pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok(1, 'SIGKILL of the executor made the postmaster reinitialize');
ok($node->poll('SELECT true'), 'the server accepts connections again');
ok($node->wait_scheduler('primary'), 'the scheduler is back');
isnt($node->scheduler_pid(), $sched_pid, '... as a new process');
ok($node->wait_state($id, 'succeeded'), 'the killed job runs again and succeeds');
is($node->job($id, 'attempt'), '2', 'on attempt 2');
is( $node->runs_of($id),
	'1:executor_exited:the executor running the attempt exited',
	'attempt 1 is recorded as executor_exited');
is($node->query(q{SELECT string_agg(attempt::text, ',') FROM public.runs WHERE tag = 'kill9'}),
	'2', 'the killed attempt\'s write was rolled back: the job\'s effect is there once, from attempt 2');

# 5b. SIGTERM (pg_terminate_backend): only that executor exits
$id = $node->submit_sql(sleepy_once('term'), tag => 'term', timeout => '60 s', max_attempts => 2);
$pid = $node->wait_busy($id);
ok($pid, 'an executor runs the term job');
$sched_pid = $node->scheduler_pid();
$log_offset = -s $node->logfile;
is($node->query("SELECT pg_terminate_backend($pid)"), 't', 'pg_terminate_backend() of the executor');
ok($node->wait_state($id, 'succeeded'), 'the terminated job runs again and succeeds');
is($node->job($id, 'attempt'), '2', 'on attempt 2');
is( $node->runs_of($id),
	'1:executor_exited:the executor running the attempt exited',
	'attempt 1 is recorded as executor_exited');
is($node->query(q{SELECT string_agg(attempt::text, ',') FROM public.runs WHERE tag = 'term'}),
	'2', 'the terminated attempt\'s write was rolled back');
is($node->scheduler_pid(), $sched_pid, 'no crash restart: the scheduler is the same process');
ok(!$node->log_contains(qr/reinitializing/, $log_offset), '... and the log shows no reinitialization');

# ---------------------------------------------------------------------------
# 6. the scheduler killed with SIGKILL
# ---------------------------------------------------------------------------
$node->query(q{SELECT hasched.schedule('tick', '* * * * * *', 'sqlq', '{"sql": "SELECT 1"}')});
ok( $node->poll(q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'tick' AND state = 'succeeded'}),
	'the 1-second schedule tick fires before the kill');
# jobs waiting at the time of the kill
my @queued = map {
	$node->submit_sql("INSERT INTO public.runs (tag, attempt) VALUES ('queued$_', 0)",
		run_at => q{now() + interval '3 seconds'})
} 1 .. 3;
is($node->query("SELECT string_agg(state::text, ',') FROM hasched.job WHERE id IN (" . join(',', @queued) . ')'),
	'scheduled,scheduled,scheduled', 'three jobs are queued for 3 s from now');

# what must survive: read it, then make it durable with a synchronous commit
my ($succeeded_ids, $finished, $max_id, $count, $epochs) = split /\|/, $node->query(
	q{SELECT (SELECT string_agg(id::text, ',' ORDER BY id) FROM hasched.job WHERE state = 'succeeded'),
	         (SELECT string_agg(id || ':' || state || ':' || attempt, ',' ORDER BY id) FROM hasched.job
	           WHERE state IN ('succeeded', 'dead', 'cancelled')),
	         (SELECT max(id) FROM hasched.job),
	         (SELECT count(*) FROM hasched.job),
	         (SELECT count(*) FROM hasched.epoch);
	  INSERT INTO public.flush DEFAULT VALUES;});
my $n_succeeded = scalar(split /,/, $succeeded_ids);

$sched_pid = $node->scheduler_pid();
like($node->query(q{SELECT detail FROM hasched.health() WHERE component = 'scheduler'}),
	qr/, pid $sched_pid,/, 'health() names the scheduler pid that pg_stat_activity shows');
$log_offset = -s $node->logfile;
kill 'KILL', $sched_pid;
$node->wait_for_log(qr/all server processes terminated; reinitializing/, $log_offset);
ok(1, 'SIGKILL of the scheduler made the postmaster reinitialize');
ok($node->poll('SELECT true'), 'the server accepts connections again');
ok($node->wait_scheduler('primary'), 'the scheduler is back, health ok as primary');
my $new_pid = $node->scheduler_pid();
isnt($new_pid, $sched_pid, '... as a new process');
like($node->query(q{SELECT detail FROM hasched.health() WHERE component = 'scheduler'}),
	qr/, pid $new_pid,/, 'health() names the new pid');
my $back_at = $node->query('SELECT now()');

is($node->query("SELECT count(*) FROM hasched.job WHERE state = 'succeeded' AND id IN ($succeeded_ids)"),
	$n_succeeded, "the $n_succeeded jobs that had succeeded are still succeeded");
my $finished_ids = join(',', map { (split /:/)[0] } split /,/, $finished);
is( $node->query(
		"SELECT string_agg(id || ':' || state || ':' || attempt, ',' ORDER BY id) FROM hasched.job WHERE id IN ($finished_ids)"
	),
	$finished,
	'every finished job (succeeded, dead, cancelled) keeps its state and attempt count');
is($node->query("SELECT count(*) FROM hasched.job WHERE id <= $max_id"),
	$count, "none of the $count jobs submitted before the kill is lost");
ok( $node->poll("SELECT count(*) = 3 FROM hasched.job WHERE state = 'succeeded' AND id IN (" . join(',', @queued) . ')'),
	'the jobs queued before the kill run after the restart');
is( $node->query(q{SELECT string_agg(tag || ':' || attempt, ',' ORDER BY tag) FROM public.runs WHERE tag LIKE 'queued%'}),
	'queued1:0,queued2:0,queued3:0',
	'... each exactly once');
ok( $node->poll("SELECT count(*) >= 3 FROM hasched.job WHERE schedule = 'tick' AND state = 'succeeded' AND fire_at > '$back_at'"
	),
	'the 1-second schedule keeps firing after the restart');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick' AND fire_at > now() - interval '30 s' AND state IN ('dead', 'cancelled')}),
	'0', 'no run of tick died');
is($node->query('SELECT count(*) FROM hasched.epoch'), $epochs, 'a crash restart is no failover: no new epoch');
is($node->query(q{SELECT count(*) FROM hasched.event WHERE kind = 'failover'}), '0', '... and no failover event');

$node->query(q{SELECT hasched.unschedule('tick')});

$node->stop;
done_testing();
