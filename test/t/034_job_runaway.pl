
# Copyright: hasched contributors
#
# 034_job_runaway.pl: a job cannot outlive its timeout or its cancel
# (issue 8, item 7).
#
# Proves, with the real executors and hasched.job_grace = 1s:
#   - a job whose SQL catches query_canceled (a DO block looping for 20 s
#     with a 1 s timeout) is ended for good within timeout + grace (and a
#     margin for the machine), is recorded as timed out, never as
#     succeeded, and its writes are rolled back; the next job runs;
#   - the same job cancelled with cancel(): within the grace no process
#     runs its SQL any more, it stays cancelled, its writes are rolled back,
#     and it is not run again (orphan recovery leaves a cancelled job alone).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/034_job_runaway.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = HaschedCluster->primary(
	'runaway', conf => q{
hasched.max_executors = 2
hasched.job_grace = '1s'
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.runs (tag text, at timestamptz DEFAULT clock_timestamp());
});

# SQL that writes a row, then sleeps for 20 s in steps of 0.2 s and
# swallows every cancel.
sub runaway_sql
{
	my ($tag) = @_;
	return "INSERT INTO public.runs (tag) VALUES ('$tag');"
	  . " DO \$d\$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN"
	  . " WHILE clock_timestamp() < t0 + interval '20 s' LOOP"
	  . " BEGIN PERFORM pg_sleep(0.2); EXCEPTION WHEN query_canceled THEN NULL; END;"
	  . " END LOOP; END \$d\$";
}

sub submit_sql
{
	my ($sql, $timeout) = @_;
	return $node->query("SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$sql\$j\$),"
		  . " timeout => '$timeout', max_attempts => 1)");
}

# Is any process (but this query's) running the job's SQL?
sub sql_running
{
	my ($tag) = @_;
	return "SELECT count(*) > 0 FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
	  . " AND state = 'active' AND query LIKE '%VALUES (''$tag'')%'";
}

# ---------------------------------------------------------------------------
# 1. past its timeout
# ---------------------------------------------------------------------------
my $t0 = time;
my $id = submit_sql(runaway_sql('timeout'), '1 second');
ok($node->poll_within(10, sql_running('timeout')), 'an executor runs the job that swallows cancels (timeout 1 s)');
ok( $node->poll_within(
		8, "SELECT state NOT IN ('pending', 'running') FROM hasched.job WHERE id = $id"),
	'the job is over within 8 s of its start (timeout 1 s + grace 1 s + margin), not after its 20 s');
my $elapsed = time - $t0;
is($node->query(sql_running('timeout')), 'f',
	sprintf('no process runs its SQL any more (%.1f s after submit)', $elapsed));
is($node->query("SELECT state FROM hasched.job WHERE id = $id"), 'dead', 'the job is dead (max_attempts 1), not succeeded');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $id"), qr/timeout/,
	'its last_error says it ran past its timeout');
like($node->query("SELECT outcome || ': ' || error FROM hasched.job_run WHERE job_id = $id"),
	qr/^(failed|timed_out): .*timeout/, 'the run history has the attempt, ended by the timeout');
is($node->query(q{SELECT count(*) FROM public.runs WHERE tag = 'timeout'}), '0', 'the write the job made was rolled back');
my $next = submit_sql(q{INSERT INTO public.runs (tag) VALUES ('next')}, '1 minute');
ok($node->poll_within(10, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $next"), 'the next job runs and succeeds');

# ---------------------------------------------------------------------------
# 2. cancelled
# ---------------------------------------------------------------------------
$id = submit_sql(runaway_sql('cancel'), '1 minute');
ok($node->poll_within(10, sql_running('cancel')), 'an executor runs the job that swallows cancels (timeout 1 min)');
is($node->query("SELECT hasched.cancel($id)"), 't', 'cancel() of it returns true');
ok($node->poll_within(6, "SELECT NOT (" . sql_running('cancel') . ')'),
	'within 6 s (grace 1 s + margin) no process runs its SQL any more');
is($node->query("SELECT count(*) FROM hasched.workers WHERE job_id = $id"), '0', 'no executor is busy with it');
# a few scheduler rounds later
sleep(3);
is($node->query("SELECT state || ' ' || attempt FROM hasched.job WHERE id = $id"),
	'cancelled 1', 'the job is still cancelled, after one attempt: it was not run again');
is($node->query("SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $id"),
	'cancelled', 'its run history has the one cancelled attempt');
is($node->query(q{SELECT count(*) FROM public.runs WHERE tag = 'cancel'}), '0', 'its write was rolled back');
$next = submit_sql(q{INSERT INTO public.runs (tag) VALUES ('next2')}, '1 minute');
ok($node->poll_within(10, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $next"), 'the next job runs and succeeds');

$node->stop;
done_testing();
