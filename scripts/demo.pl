
# Copyright: hasched contributors
#
# demo.pl: the narrated hasched demo, run by scripts/demo.sh (which installs
# what is missing, builds, and starts this as an ordinary user, from a fresh
# temp dir).  Its servers are started and stopped through the TAP tests'
# harness, test/perl/HaschedCluster.pm.
#
#  1. a throwaway primary with shared_preload_libraries = 'hasched', on a
#     unix socket in the temp dir only (no TCP);
#  2. the pull API: submit jobs as a tenant, work them as a pull worker,
#     fencing, retries, lease expiry (requeued by the scheduler) and
#     read-only mode, with psql;
#  3. high availability: a streaming standby (synchronous), health() on both
#     nodes; SQL jobs run by the executors and a cron schedule every 2
#     seconds; the primary crashes (pg_ctl stop -m immediate), the standby
#     is promoted (pg_ctl promote): its scheduler opens a new epoch, writes
#     a failover event, retries the SQL job that was running, and the
#     schedule goes on firing there;
#  4. both servers stopped, also on failure or Ctrl-C (SIGINT, SIGTERM,
#     SIGHUP end the script through exit, so the END blocks run).
# Every statement is printed with the role and the node that run it;
# refusals that are part of the demo are printed with their SQLSTATE; every
# step is checked, and the exit status is 0 only if all of them behaved.
#
# PostgreSQL::Test::Utils sends this script's STDOUT and STDERR to a log
# file under $TESTDIR/tmp_check/log (with the server's own output); the
# narration goes to the console handles saved before that happens.
#
# Environment (set by scripts/demo.sh):
#   PATH                the PostgreSQL bin directory first
#   TESTDIR, TMPDIR     the temp dir (logs, data directories, sockets)
#   HASCHED_DEMO_PORT   port of the primary (the standby: the next one);
#                       default: free ports
#   HASCHED_DEMO_PIDFILE  where to write this process's pid (for demo.sh's
#                       signal forwarding)
use strict;
use warnings;

our ($CONSOLE, $CONSOLE_ERR);

BEGIN
{
	# before PostgreSQL::Test::Utils's INIT block takes STDOUT and STDERR
	open($CONSOLE, '>&', \*STDOUT) or die "cannot duplicate stdout: $!";
	open($CONSOLE_ERR, '>&', \*STDERR) or die "cannot duplicate stderr: $!";
	$CONSOLE->autoflush(1);
	$CONSOLE_ERR->autoflush(1);
}

use HaschedCluster;
use IPC::Run;
use Text::Wrap ();
use Time::HiRes qw(time usleep);

my ($B, $D, $G, $R, $Y, $N) =
  -t $CONSOLE ? ("\e[1m", "\e[2m", "\e[32m", "\e[31m", "\e[33m", "\e[0m") : ('') x 6;
my $runner = getpwuid($<) // $<;
my $tmp = $ENV{TESTDIR} // '.';

# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------
sub out { print $CONSOLE @_; return; }
sub logmsg { out("${D}demo:$N $_[0]\n"); return; }
sub section { out("\n$B== $_[0] ==$N\n"); return; }

sub narrate
{
	my ($text) = @_;
	local $Text::Wrap::columns = 80;    # as fold -s -w 78 after the indent
	out(Text::Wrap::wrap('  ', '  ', $text), "\n");
	return;
}

sub indented
{
	my ($text) = @_;
	return join('', map { "    $_\n" } split /\n/, $text);
}

# A failure that ends the demo (caught by the eval around main).
sub fatal { die "demo-fatal: $_[0]\n"; }

# ---------------------------------------------------------------------------
# the nodes; `on NODE` picks the node for the statements that follow
# ---------------------------------------------------------------------------
my %node;
my @node_order = ('primary', 'standby');
my $target = 'primary';
sub on { $target = $_[0]; return; }

# psql on the current node as ROLE, with these options, running SQL and
# then the commands in the array @$after; returns (success, output with
# stderr).
sub psql_as
{
	my ($role, $sql, @opts) = @_;
	my $after = ref $opts[-1] eq 'ARRAY' ? pop @opts : [];
	my @cmd = (
		'psql', '-X', '-q', '-d', $node{$target}->connstr('postgres'),
		'-U', $role, '-P', 'pager=off', @opts, '-c', $sql, map { ('-c', $_) } @$after);
	my $out = '';
	my $ok = eval { IPC::Run::run(\@cmd, '<', \undef, '>&', \$out) };
	$out .= $@ if $@;
	$out =~ s/\n+\z//;
	return ($ok, $out);
}

my $checks = 0;
my $failures = 0;

# check DESCRIPTION, CONDITION: the condition holds.
sub check
{
	my ($what, $cond) = @_;
	$checks++;
	if ($cond)
	{
		out("  ${G}ok$N  $what\n");
	}
	else
	{
		$failures++;
		out("  ${R}NOT OK$N  $what\n");
	}
	return $cond;
}

sub print_sql
{
	my ($role, $sql) = @_;
	my $who = "$role\@$target";
	my @lines = split /\n/, $sql;
	out("$Y$who=>$N ", shift(@lines), "\n");
	out(' ' x (length($who) + 2), " $_\n") for @lines;
	return;
}

# run ROLE, SQL: print the statement, run it, print its output as a table;
# an error here is not part of the demo: stop.
sub run
{
	my ($role, $sql) = @_;
	print_sql($role, $sql);
	my ($ok, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=1');
	out(indented($out));
	fatal('unexpected error in the statement above') unless $ok;
	return;
}

# val ROLE, SQL: like run, for one value; it is printed and returned.
sub val
{
	my ($role, $sql) = @_;
	print_sql($role, $sql);
	my ($ok, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=1', '-At');
	out(indented($out));
	fatal('unexpected error in the statement above') unless $ok;
	return $out;
}

# call ROLE, SQL: a statement without a result worth showing (a void function).
sub call
{
	my ($role, $sql) = @_;
	print_sql($role, $sql);
	my ($ok, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=1', '-At');
	if (!$ok)
	{
		out(indented($out));
		fatal('unexpected error in the statement above');
	}
	out("    ${D}done$N\n");
	return;
}

# quiet ROLE, SQL: one value, nothing printed (for checks).
sub quiet
{
	my ($role, $sql) = @_;
	my ($ok, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=1', '-At');
	fatal("check query failed on the $target: $sql\n$out") unless $ok;
	return $out;
}

# wait_for ROLE, SECONDS, SQL: poll until SQL returns t; returns the last
# answer ('t' if it came in time).
sub wait_for
{
	my ($role, $secs, $sql) = @_;
	my $end = time + $secs;
	my $reply = '';
	while (1)
	{
		my ($ok, $out) = psql_as($role, $sql, '-At');
		$reply = $ok ? $out : '';
		return $reply if $reply eq 't' || time >= $end;
		usleep(100_000);
	}
}

# refused ROLE, SQLSTATE, SQL: the statement must fail with that SQLSTATE;
# its error is printed, the demo goes on.
sub refused
{
	my ($role, $want, $sql) = @_;
	print_sql($role, $sql);
	my (undef, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=0', '-v', 'SHOW_CONTEXT=never',
		['\echo __sqlstate=:SQLSTATE']);
	my $state = $out =~ /^__sqlstate=(.*)$/m ? $1 : '';
	out(indented(join("\n", grep { !/^__sqlstate=/ } split /\n/, $out)));
	out("    $D(SQLSTATE $state)$N\n");
	check("refused with SQLSTATE $want", $state eq $want);
	return;
}

# claim ROLE, WORKER, MAX, [LEASE]: claim from 'emails', print the jobs;
# returns their ids and tokens (two array refs).
sub claim
{
	my ($role, $worker, $max, $lease) = @_;
	my $sql =
	  "SELECT job_id, token, attempt, hasched.priority_name(priority) AS priority, payload\n"
	  . "  FROM hasched.claim('emails', '$worker', max_jobs => $max"
	  . (defined $lease ? ", lease => '$lease'" : '') . ');';
	print_sql($role, $sql);
	my ($ok, $out) = psql_as($role, $sql, '-v', 'ON_ERROR_STOP=1', '-At', '-F', "\t");
	if (!$ok)
	{
		out(indented($out));
		fatal('unexpected error in the statement above');
	}
	my (@ids, @tokens);
	out(sprintf("    $D%-6s %-12s %-7s %-8s %s$N\n", qw(job_id token attempt priority payload)));
	for my $line (split /\n/, $out)
	{
		my ($id, $token, $attempt, $prio, $payload) = split /\t/, $line;
		next unless defined $id && $id ne '';
		push @ids, $id;
		push @tokens, $token;
		out(sprintf("    %-6s %-12s %-7s %-8s %s\n", $id, $token, $attempt, $prio, $payload));
	}
	out(@ids == 1 ? "    $D(1 job)$N\n" : sprintf("    $D(%d jobs)$N\n", scalar @ids));
	return (\@ids, \@tokens);
}

sub contains
{
	my ($w, @list) = @_;
	return scalar grep { $_ eq $w } @list;
}

# ---------------------------------------------------------------------------
# the demo
# ---------------------------------------------------------------------------
sub main
{
	my %port;
	if (defined $ENV{HASCHED_DEMO_PORT} && $ENV{HASCHED_DEMO_PORT} ne '')
	{
		fatal('HASCHED_DEMO_PORT must be a number') unless $ENV{HASCHED_DEMO_PORT} =~ /^\d+$/;
		%port = (primary => $ENV{HASCHED_DEMO_PORT}, standby => $ENV{HASCHED_DEMO_PORT} + 1);
	}
	# the superuser is "postgres", whoever runs the servers
	$ENV{PGUSER} = 'postgres';
	# (PostgreSQL::Test::Cluster logs every statement: not needed here)
	my $conf = q{
hasched.max_executors = 4
max_connections = 40
shared_buffers = 16MB
log_statement = none
log_replication_commands = off
};

	logmsg("initdb as user $runner in $tmp");
	$node{primary} = HaschedCluster->primary(
		'primary',
		streaming => 1,
		extension => 0,
		initdb => [ '-U', 'postgres', '-E', 'UTF8', '--locale=C' ],
		conf => $conf,
		defined $port{primary} ? (port => $port{primary}) : ());
	logmsg(sprintf('primary running: pid %s, socket in %s (port %s), no TCP',
		$node{primary}->postmaster_pid, $node{primary}->host, $node{primary}->port));

	pull_api();
	high_availability(\%port);

	out("\n");
	if ($failures == 0)
	{
		out("${G}demo finished: all $checks checks passed$N\n");
		return 0;
	}
	out("${R}demo finished: $failures of $checks checks FAILED$N\n");
	return 1;
}

sub pull_api
{
	section('setting up: the extension, a queue, a tenant and its roles');
	narrate(
		'hasched is loaded by shared_preload_libraries; CREATE EXTENSION adds the schema hasched and the roles hasched_submitter, hasched_worker and hasched_admin. Its scheduler (a background worker) starts working as soon as the extension exists.'
	);
	run('postgres', 'CREATE EXTENSION hasched;');
	narrate("A pull queue 'emails': external workers claim its jobs. Failed attempts back off from 1 s.");
	run('postgres', q{INSERT INTO hasched.queue (name, transport, lease, backoff_base)
VALUES ('emails', 'pull', '30 seconds', '1 second');});
	narrate(
		"Tenants are roles: 'acme' on tier 'pro' (10,000 jobs a day, 100/s). 'app' submits for acme; 'worker' works the queues."
	);
	run('postgres', q{CREATE ROLE acme NOLOGIN;
CREATE ROLE app LOGIN IN ROLE acme, hasched_submitter;
CREATE ROLE worker LOGIN IN ROLE hasched_worker;
INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'pro');
ALTER ROLE app SET hasched.tenant = 'acme';});

	section('submitting jobs (as app, for tenant acme)');
	my $job_high = val('app',
		q{SELECT hasched.submit('emails', '{"template": "welcome", "to": "ann@acme.test"}', priority => 'high');});
	my $job_medium = val('app',
		q{SELECT hasched.submit('emails', '{"template": "newsletter", "to": "bob@acme.test"}', priority => 'medium');});
	my $job_low = val('app',
		q{SELECT hasched.submit('emails', '{"template": "digest", "to": "cy@acme.test"}', priority => 'low');});
	narrate('An idempotency key: submitting the same key twice returns the same job.');
	my $receipt =
	  q{SELECT hasched.submit('emails', '{"template": "receipt", "order": 1001}', idempotency_key => 'order-1001-receipt');};
	my $job_key = val('app', $receipt);
	my $again = val('app', $receipt);
	check("the second submit with key order-1001-receipt returned the same id ($job_key)",
		$again eq $job_key);
	check('4 jobs exist for 5 submits (the repeated key made no new job)',
		quiet('app', q{SELECT count(*) FROM hasched.job WHERE queue = 'emails'}) eq '4');
	run('postgres',
		'SELECT name, transport, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;');

	section('a pull worker claims a batch');
	narrate('Most urgent first: the high job, then the oldest medium one; low waits.');
	my ($ids, $tokens) = claim('worker', 'worker-1', 2);
	check('a batch of 2 was handed out', @$ids == 2)
	  or fatal('cannot go on without 2 claimed jobs');
	check("the high job ($job_high) first, then the newsletter ($job_medium)",
		$ids->[0] eq $job_high && $ids->[1] eq $job_medium);
	fatal('cannot go on without the newsletter job') unless $ids->[1] eq $job_medium;
	my $high_token = $tokens->[0];
	narrate(
		'The worker completes the first; the second fails (the SMTP server timed out): it is retried after a backoff.'
	);
	call('worker', qq{SELECT hasched.complete($job_high, '$high_token', '{"sent": true}');});
	my $r = val('worker', "SELECT hasched.fail($job_medium, '$tokens->[1]', 'smtp timeout');");
	check("fail() returned 'failed' (attempts remain)", $r eq 'failed');

	section('a report retried after its reply was lost changes nothing');
	narrate('The worker sends its last report again with the same token (say its reply was lost):'
		  . ' the outcome is already recorded, so it succeeds and changes nothing.');
	my $row_sql =
	  "SELECT concat_ws('|', state, attempt, finished_at, result) FROM hasched.job WHERE id = $job_high";
	my $before = quiet('postgres', $row_sql);
	call('worker', qq{SELECT hasched.complete($job_high, '$high_token', '{"sent": "twice"}');});
	check("job $job_high is unchanged: succeeded once, with its first result",
		quiet('postgres', $row_sql) eq $before);

	section('a worker that dies: the scheduler requeues its job');
	narrate('worker-2 claims one job with a 1-second lease, then goes silent (no heartbeat) ...');
	($ids, $tokens) = claim('worker', 'worker-2', 1, '1 second');
	check('worker-2 holds the receipt job', ($ids->[0] // '') eq $job_key);
	my $old_token = $tokens->[0] // 'none';
	narrate('... the scheduler requeues expired leases on its own (it wakes at least once a second):');
	wait_for('postgres', 15, "SELECT state = 'failed' FROM hasched.job WHERE id = $job_key");
	run('app', "SELECT id, state, attempt, worker, last_error FROM hasched.jobs WHERE id = $job_key;");
	check(
		"the receipt job is 'failed' after attempt 1, its run recorded as lease_expired",
		quiet('postgres',
			"SELECT state || ' ' || attempt || ' ' || (SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $job_key) FROM hasched.job WHERE id = $job_key"
		) eq 'failed 1 lease_expired');
	narrate('worker-2 wakes up and reports success with its old token: refused.');
	refused('worker', 'JQ006', "SELECT hasched.complete($job_key, '$old_token');");

	section('read-only mode: submissions refused, claims and reports served');
	call('postgres', q{SELECT hasched.set_mode('read_only', 'demo: maintenance window');});
	refused('app', 'JQ003', q{SELECT hasched.submit('emails', '{"template": "late"}');});
	call('postgres', q{SELECT hasched.set_mode('normal');});

	section('the worker drains the queue');
	narrate("Waiting for the two retries' backoff to end ...");
	wait_for('postgres', 15,
		q{SELECT bool_and(run_at <= now()) FROM hasched.job WHERE queue = 'emails' AND state <> 'succeeded'});
	($ids, $tokens) = claim('worker', 'worker-1', 10);
	check('the low job and the two retries are handed out',
		@$ids == 3
		  && contains($job_low, @$ids)
		  && contains($job_medium, @$ids)
		  && contains($job_key, @$ids));
	for my $i (0 .. $#$ids)
	{
		quiet('worker', qq{SELECT hasched.complete($ids->[$i], '$tokens->[$i]', '{"sent": true}')});
	}
	narrate('(completed all ' . scalar(@$ids) . ')');
	run('app', q{SELECT id, state, attempt, priority_class AS priority, result, last_error
  FROM hasched.jobs WHERE queue = 'emails' ORDER BY id;});
	narrate("Run history: one row per attempt that did not succeed (a success is the job's own row).");
	run('postgres',
		'SELECT job_id, attempt, worker, outcome, error FROM hasched.job_run ORDER BY finished_at, job_id;');
	$r = quiet('postgres', q{SELECT string_agg(state || ':' || n, ' ' ORDER BY state)
                 FROM (SELECT state, count(*) n FROM hasched.job WHERE queue = 'emails' GROUP BY state) s});
	check("every emails job succeeded ($r)", $r eq 'succeeded:4');
	$r = quiet('postgres', q{SELECT string_agg(outcome || ':' || n, ' ' ORDER BY outcome)
                 FROM (SELECT outcome, count(*) n FROM hasched.job_run
                        WHERE outcome <> 'succeeded' GROUP BY outcome) s});
	check("attempts that did not succeed: 1 failed, 1 lease expired ($r)",
		$r eq 'failed:1 lease_expired:1');
	return;
}

sub high_availability
{
	my ($port) = @_;
	my $r;

	section('a streaming standby');
	narrate(
		"pg_basebackup copies the primary; the copy starts as a hot standby that streams from it (primary_conninfo, standby.signal), on its own port and with cluster_name 'standby'."
	);
	$node{standby} = HaschedCluster->standby($node{primary}, 'standby',
		defined $port->{standby} ? (port => $port->{standby}) : ());
	logmsg(sprintf('standby running: pid %s, socket in %s (port %s), no TCP',
		$node{standby}->postmaster_pid, $node{standby}->host, $node{standby}->port));
	on('primary');
	wait_for('postgres', 30,
		"SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = 'standby' AND state = 'streaming'"
	) eq 't' or fatal('the standby does not stream from the primary');
	narrate(
		'Synchronous replication: a submit returns only once the standby has it (set after the base backup, so that the standby does not inherit it).'
	);
	call('postgres', q{ALTER SYSTEM SET synchronous_standby_names = 'standby';});
	call('postgres', 'SELECT pg_reload_conf();');
	$r = wait_for('postgres', 30,
		"SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = 'standby'");
	run('postgres', 'SELECT application_name, state, sync_state FROM pg_stat_replication;');
	check('the standby replicates synchronously', $r eq 't');

	section('health() on both nodes');
	narrate('The scheduler runs on every node; on a standby it only watches: no executors, no scheduling.');
	on('primary');
	run('postgres', 'SELECT component, status, detail FROM hasched.health();');
	check("the primary's scheduler is primary",
		quiet('postgres',
			q{SELECT detail LIKE 'primary since %' FROM hasched.health() WHERE component = 'scheduler'}) eq 't');
	on('standby');
	$r = wait_for('postgres', 15,
		q{SELECT detail LIKE 'standby since %' FROM hasched.health() WHERE component = 'scheduler'});
	run('postgres', 'SELECT component, status, detail FROM hasched.health();');
	check("the standby's scheduler is standby", $r eq 't');
	check('no executor runs on the standby (hasched.workers all free)',
		quiet('postgres', q{SELECT bool_and(state = 'free') FROM hasched.workers}) eq 't');
	refused('app', 'JQ004', q{SELECT hasched.submit('emails', '{"template": "on the standby"}');});

	section('SQL jobs: run inside the database by the executors');
	on('primary');
	narrate(
		q{A queue with transport 'sql': its jobs' payload {"sql": ...} runs in the database, as the job's owner (here: app), in the same transaction that records the job's success.}
	);
	run('postgres', q{INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
CREATE TABLE public.demo (
  id bigint GENERATED ALWAYS AS IDENTITY,
  note text NOT NULL,
  ran_on text NOT NULL DEFAULT current_setting('cluster_name'),
  at timestamptz NOT NULL DEFAULT clock_timestamp());
GRANT SELECT, INSERT ON public.demo TO app;});
	$r = val('app', q{SELECT hasched.submit_many('sqlq', ARRAY[
  '{"sql": "INSERT INTO public.demo (note) VALUES (''job 1'')"}',
  '{"sql": "INSERT INTO public.demo (note) VALUES (''job 2'')"}',
  '{"sql": "INSERT INTO public.demo (note) VALUES (''job 3'')"}']::jsonb[]);});
	my @sql_ids = grep { /^\d+$/ } split /[{},]/, $r;
	check('submit_many returned 3 ids', @sql_ids == 3);
	my $sql_list = @sql_ids ? join(',', @sql_ids) : '0';
	$r = wait_for('postgres', 15,
		"SELECT count(*) = 3 FROM hasched.job WHERE id IN ($sql_list) AND state = 'succeeded'");
	check('the 3 SQL jobs succeeded', $r eq 't');
	run('postgres',
		"SELECT id, state, attempt, epoch, worker, result FROM hasched.job WHERE id IN ($sql_list) ORDER BY id;");

	section('a cron schedule: every 2 seconds');
	narrate(
		'Six fields: seconds first. Each run is a job of the sql queue, submitted by the scheduler. (An administrator creates it, for tenant acme.)'
	);
	val('postgres', q{SELECT hasched.schedule('every-2s', '*/2 * * * * *', 'sqlq',
  '{"sql": "INSERT INTO public.demo (note) VALUES (''tick'')"}', tenant => 'acme');});
	narrate('Waiting for two runs ...');
	$r = wait_for('postgres', 15,
		q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'every-2s' AND state = 'succeeded'});
	check('the schedule fired and its jobs succeeded on the primary', $r eq 't');
	run('app',
		'SELECT name, spec, tenant, next_run_at::time(0) AS next_run, last_run_at::time(0) AS last_run, last_job_state FROM hasched.schedules;'
	);
	narrate(
		'And a long SQL job: it sleeps 60 s while the first epoch is the newest, so it is still running when the primary fails.'
	);
	my $job_long = val('app',
		q{SELECT hasched.submit('sqlq', '{"sql": "SELECT pg_sleep(CASE WHEN (SELECT max(epoch) FROM hasched.epoch) > 1 THEN 0 ELSE 60 END); INSERT INTO public.demo (note) VALUES (''long job'')"}', timeout => '2 minutes');}
	);
	$r = wait_for('postgres', 15, "SELECT state = 'running' FROM hasched.job WHERE id = $job_long");
	check("the long job ($job_long) is running on the primary", $r eq 't');
	run('postgres', q{SELECT note, ran_on, count(*), min(at)::time(0) AS first, max(at)::time(0) AS last
  FROM public.demo GROUP BY note, ran_on ORDER BY min(at);});
	on('standby');
	$r = wait_for('postgres', 15, "SELECT state = 'running' FROM hasched.job WHERE id = $job_long");
	check("the standby has replayed the long job's start", $r eq 't');

	section('the primary fails');
	my $pid = $node{primary}->postmaster_pid;
	narrate(
		"pg_ctl stop -m immediate: SIGQUIT to the primary's postmaster (pid $pid); no shutdown checkpoint, nothing more is written."
	);
	$node{primary}->stop('immediate', fail_ok => 1);
	for (1 .. 300)
	{
		last unless kill(0, $pid);
		usleep(100_000);
	}
	fatal('the primary did not stop') if kill(0, $pid);
	logmsg('the primary is down');
	on('standby');
	run('postgres',
		q{SELECT component, status, detail FROM hasched.health() WHERE component = 'scheduler';});
	check("without a primary, the standby's scheduler still only watches",
		quiet('postgres',
			q{SELECT detail LIKE 'standby since %' FROM hasched.health() WHERE component = 'scheduler'}) eq 't');

	section('promoting the standby');
	my $t0 = time;
	out("$Y$runner\$$N pg_ctl promote -D " . $node{standby}->data_dir . "\n");
	$node{standby}->promote;
	out(sprintf("    ${D}server promoted (pg_ctl returned after %.2f s)$N\n", time - $t0));
	my $promoted = wait_for('postgres', 15,
		q{SELECT detail LIKE 'primary since %' FROM hasched.health() WHERE component = 'scheduler'});
	my $t1 = time;
	narrate("(The node is still called 'standby' in the prompts below: it is the primary now.)");
	run('postgres', 'SELECT component, status, detail FROM hasched.health();');
	check("the promoted node's scheduler is primary", $promoted eq 't');
	narrate(sprintf('health() said primary %.2f s after pg_ctl promote was called.', $t1 - $t0));
	narrate(
		"The scheduler opened a new epoch for the new timeline; leases carry their epoch, so the old primary's are told apart:"
	);
	run('postgres', qq{SELECT epoch, timeline, started_at::time(3) AS started_at, reason,
       round((extract(epoch FROM started_at) - $t0)::numeric, 3) AS seconds_after_promote
  FROM hasched.epoch ORDER BY epoch;});
	$r = quiet('postgres', q{SELECT string_agg(epoch || ':' || timeline, ' ' ORDER BY epoch) FROM hasched.epoch});
	check("epochs: 1 on timeline 1, 2 on timeline 2 ($r)", $r eq '1:1 2:2');
	run('postgres', q{SELECT at::time(3) AS at, kind, detail FROM hasched.event WHERE kind = 'failover';});
	check(
		'one failover event: epoch 2, timeline 1 -> 2, SQL jobs retried',
		quiet('postgres',
			q{SELECT count(*) = 1 AND bool_and(detail->>'epoch' = '2' AND detail->>'timeline' = '2'
                   AND detail->>'previous_timeline' = '1' AND (detail->>'sql_jobs_retried')::int >= 1)
                  FROM hasched.event WHERE kind = 'failover'}
		) eq 't');

	section('the scheduler resumes on the new primary');
	narrate(
		"The long job was running on the old primary: its attempt ended with outcome 'failover' and it runs again (no sleep in epoch 2)."
	);
	wait_for('postgres', 15, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $job_long");
	run('postgres', "SELECT id, state, attempt, epoch, worker FROM hasched.job WHERE id = $job_long;");
	run('postgres', "SELECT job_id, attempt, epoch, outcome, error FROM hasched.job_run WHERE job_id = $job_long;");
	$r = quiet('postgres', qq{SELECT j.state || ' ' || j.attempt || ' ' || j.epoch || ' ' ||
                       (SELECT string_agg(r.outcome || '\@' || r.epoch, ',') FROM hasched.job_run r WHERE r.job_id = j.id)
                  FROM hasched.job j WHERE j.id = $job_long});
	check("the long job: attempt 1 ended by the failover, attempt 2 succeeded in epoch 2 ($r)",
		$r eq 'succeeded 2 2 failover@1');
	narrate('The schedule goes on firing, now here (epoch 2):');
	$r = wait_for('postgres', 15,
		q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'every-2s' AND epoch = 2 AND state = 'succeeded'});
	check('the schedule fired twice on the new primary', $r eq 't');
	run('postgres', q{SELECT id, fire_at::time(0) AS fire_at, state, attempt, epoch, worker
  FROM hasched.job WHERE schedule = 'every-2s' ORDER BY id DESC LIMIT 6;});
	check('no run of the schedule was fired twice',
		quiet('postgres', q{SELECT count(*) FROM (SELECT fire_at FROM hasched.job WHERE schedule = 'every-2s'
                                        GROUP BY fire_at HAVING count(*) > 1) d}) eq '0');
	narrate('New submissions go to the new primary:');
	my $job_after = val('app',
		q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.demo (note) VALUES (''after the failover'')"}');});
	$r = wait_for('postgres', 15,
		"SELECT state = 'succeeded' AND epoch = 2 FROM hasched.job WHERE id = $job_after");
	check('a job submitted after the failover succeeded in epoch 2', $r eq 't');
	run('postgres', q{SELECT note, ran_on, count(*), min(at)::time(0) AS first, max(at)::time(0) AS last
  FROM public.demo GROUP BY note, ran_on ORDER BY min(at);});
	check(
		"no job's effect recorded twice (job 1-3, long job, after the failover: once each)",
		quiet('postgres',
			q{SELECT count(*) FROM public.demo WHERE note <> 'tick' GROUP BY note HAVING count(*) > 1}) eq '');
	check('the SQL jobs of the old primary are all there, succeeded',
		quiet('postgres',
			"SELECT count(*) FROM hasched.job WHERE id IN ($sql_list) AND state = 'succeeded'") eq '3');
	run('postgres',
		'SELECT name, transport, pending, scheduled, retrying, running FROM hasched.queues ORDER BY name;');
	return;
}

# ---------------------------------------------------------------------------
# signals, cleanup
# ---------------------------------------------------------------------------
# exit (not the default action) so that the END blocks stop the servers;
# once: further signals (Ctrl-C reaches demo.sh too, which then sends
# SIGTERM) must not cut that short
sub on_signal
{
	my ($what, $rc) = @_;
	$SIG{$_} = 'IGNORE' for qw(INT TERM HUP);
	print $CONSOLE_ERR "\n${R}demo: $what: stopping the servers$N\n";
	exit $rc;
}
$SIG{INT} = sub { on_signal('interrupted', 130) };
$SIG{TERM} = sub { on_signal('terminated', 143) };
$SIG{HUP} = sub { on_signal('hangup', 129) };

if (defined $ENV{HASCHED_DEMO_PIDFILE})
{
	open my $fh, '>', $ENV{HASCHED_DEMO_PIDFILE} or die "cannot write the pid file: $!";
	print $fh "$$\n";
	close $fh;
}

# Runs before PostgreSQL::Test::Cluster's END block, whose teardown stops
# (immediately, then by pid) whatever still runs after this.
END
{
	my $rc = $?;
	# a failure, not an interruption: show what the servers said
	if ($rc != 0 && $rc != 129 && $rc != 130 && $rc != 143)
	{
		for my $name (@node_order)
		{
			my $node = $node{$name} or next;
			next unless -f $node->logfile;
			print $CONSOLE_ERR "---- tail of the ${name}'s server log ----\n";
			my @lines = split /\n/, PostgreSQL::Test::Utils::slurp_file($node->logfile);
			splice(@lines, 0, @lines - 30) if @lines > 30;
			print $CONSOLE_ERR "$_\n" for @lines;
		}
		print $CONSOLE_ERR "---- end of the server logs ----\n" if %node;
	}
	for my $name (reverse @node_order)
	{
		my $node = $node{$name} or next;
		my $pid = $node->postmaster_pid // next;
		logmsg("stopping the $name (pid $pid)");
		$node->stop('fast', fail_ok => 1);
	}
	$? = $rc;
}

my $rc = eval { main() };
if (!defined $rc)
{
	my $err = $@;
	$err =~ s/^demo-fatal: //;
	$err =~ s/\s+\z//;
	print $CONSOLE_ERR "${R}demo: error:$N $err\n";
	$rc = 1;
}
exit $rc;
