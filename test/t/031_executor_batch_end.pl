
# Copyright: hasched contributors
#
# 031_executor_batch_end.pl: what ends an executor's work early gives the
# jobs it has not started back at once, and a cancel signal stops only the
# job it was sent for (issue 7, item 10).
#
# Proves, with one real executor (hasched.max_executors = 1):
#   - an error outside a job's own SQL (here: the cancel of a job whose
#     signal arrives after the job's SQL has ended, while the executor
#     waits to record the outcome) does not strand the jobs submitted with
#     it: they run at once, in their first attempt, with no failed run;
#   - a cancel signal that reaches the executor while it runs another job
#     (as the late signal of an earlier cancel would; sent here with
#     pg_cancel_backend) does not fail that job;
#   - an executor terminated mid-job (pg_terminate_backend) gives the jobs
#     it had not started back at once: they run in their first attempt.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/031_executor_batch_end.pl
use strict;
use warnings;

use IPC::Run;
use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = HaschedCluster->primary(
	'batchend', conf => q{
hasched.max_executors = 1
hasched.min_executors = 1
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.runs (tag text, at timestamptz DEFAULT clock_timestamp());
});

# One job that runs $first, then jobs that insert their tag into
# public.runs, all submitted in one transaction (the first one first).
sub submit_group
{
	my ($first, @tags) = @_;
	my $sql = "BEGIN;\n"
	  . "SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$first\$j\$),"
	  . " priority => 'high', timeout => '1 minute', max_attempts => 3);\n";
	$sql .=
	  "SELECT hasched.submit('sqlq', '{\"sql\": \"INSERT INTO public.runs (tag) VALUES (''$_'')\"}',"
	  . " priority => 'low', timeout => '1 minute', max_attempts => 3);\n"
	  for @tags;
	return split /\n/, $node->query($sql . 'COMMIT;');
}

sub busy_pid
{
	my ($id) = @_;
	$node->poll(
		"SELECT count(*) = 1 FROM hasched.workers WHERE state = 'busy' AND job_id = $id")
	  or return undef;
	return $node->query("SELECT pid FROM hasched.workers WHERE state = 'busy' AND job_id = $id");
}

# The jobs in @ids succeeded in their first attempt, each wrote once, and
# no attempt of theirs failed.
sub ran_once_cleanly
{
	my ($what, $ids, $tags) = @_;
	my $list = join(',', @$ids);
	ok( $node->poll_within(10,
			"SELECT bool_and(state = 'succeeded') FROM hasched.job WHERE id IN ($list)"),
		"$what: the other jobs succeed within 10 s");
	is($node->query("SELECT string_agg(attempt::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($list)"),
		join(',', ('1') x @$ids), "$what: ... in their first attempt");
	is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($list)"),
		'0', "$what: ... with no failed, expired or orphaned attempt");
	my $tag_list = join(',', map { "'$_'" } @$tags);
	is( $node->query(
			"SELECT string_agg(tag || ':' || n, ',' ORDER BY tag) FROM"
			  . " (SELECT tag, count(*) n FROM public.runs WHERE tag IN ($tag_list) GROUP BY tag) s"),
		join(',', map { "$_:1" } sort @$tags),
		"$what: ... and each wrote its row once");
}

ok( $node->poll(
		q{SELECT count(*) = 1 FROM hasched.workers WHERE state IN ('idle', 'woken')}),
	'the one executor is up and idle');

# ---------------------------------------------------------------------------
# 1. a cancel whose signal arrives after the job's SQL ended
# ---------------------------------------------------------------------------
# The cancelling transaction holds the job's row while the job's SQL ends;
# the executor then waits for that row to record the outcome, and the
# cancel's signal (sent when it commits) reaches it there, outside the job.
my ($ja, @rest) = submit_group('SELECT pg_sleep(1)', 'a1', 'a2', 'a3');
my $pid = busy_pid($ja);
ok($pid, 'the executor runs the first job (pg_sleep(1))');
my ($out, $err) = ('', '');
my $canceller = IPC::Run::start(
	[
		'psql', '-X', '-q', '-A', '-t', '-d', $node->connstr($node->db),
		'-c', "BEGIN; SELECT hasched.cancel($ja); SELECT pg_sleep(2.5); COMMIT;"
	],
	'>', \$out, '2>', \$err);
ok( $node->poll_within(10,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid = $pid AND wait_event_type = 'Lock'"),
	'the job\'s SQL ended and the executor waits for the row the cancel holds');
$canceller->finish;
like($out, qr/^t$/m, 'cancel() of the first job returned true and committed');
is($node->query("SELECT state FROM hasched.job WHERE id = $ja"), 'cancelled', 'the first job is cancelled');
ran_once_cleanly('after a cancel that arrived late', \@rest, [ 'a1', 'a2', 'a3' ]);
is($node->query("SELECT count(*) FROM hasched.workers WHERE pid = $pid AND state <> 'free'"),
	'1', 'the same executor goes on');

# ---------------------------------------------------------------------------
# 2. a cancel signal meant for no job the executor runs
# ---------------------------------------------------------------------------
my ($jb, @rest_b) = submit_group(
	q{SELECT pg_sleep(1.5); INSERT INTO public.runs (tag) VALUES ('b0')}, 'b1');
$pid = busy_pid($jb);
ok($pid, 'the executor runs a pg_sleep(1.5) job');
usleep(300_000);
is($node->query("SELECT pg_cancel_backend($pid)"), 't', 'a cancel signal reaches the executor mid-job');
ok($node->poll_within(10, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $jb"),
	'the job nobody cancelled goes on and succeeds');
is($node->query("SELECT attempt || ':' || coalesce(last_error, '-') FROM hasched.job WHERE id = $jb"),
	'1:-', '... in its first attempt, with no error');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id = $jb"), '0', '... and no failed attempt');
ran_once_cleanly('after a stray cancel signal', \@rest_b, ['b1']);

# ---------------------------------------------------------------------------
# 3. an executor terminated mid-job
# ---------------------------------------------------------------------------
# the first job sleeps in its first attempt only
my ($jc, @rest_c) = submit_group(
	q{SELECT pg_sleep(CASE WHEN attempt = 1 THEN 30 ELSE 0 END) FROM hasched.job WHERE payload->>'sql' LIKE '%pg_sleep(CASE%'},
	'c1', 'c2');
$pid = busy_pid($jc);
ok($pid, 'the executor runs a job that sleeps 30 s (in its first attempt)');
is($node->query("SELECT pg_terminate_backend($pid)"), 't', 'pg_terminate_backend() of the executor');
ran_once_cleanly('after the executor was terminated', \@rest_c, [ 'c1', 'c2' ]);
ok($node->poll_within(15, "SELECT state = 'succeeded' AND attempt = 2 FROM hasched.job WHERE id = $jc"),
	'the terminated job itself runs again, in attempt 2, and succeeds');
is( $node->query("SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $jc"),
	'executor_exited', '... after one attempt ended executor_exited');

$node->stop;
done_testing();
