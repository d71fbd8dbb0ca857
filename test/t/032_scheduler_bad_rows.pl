
# Copyright: hasched contributors
#
# 032_scheduler_bad_rows.pl: one bad row does not stop the scheduler's
# rounds (issue 7, item 11).
#
# Proves, with the real scheduler and executors:
#   - a queue whose backoff_max is '300000 years' (the interval overflows a
#     conversion to microseconds) with a job whose lease expired: the job is
#     requeued, and a 1-second schedule on another queue keeps firing;
#   - a row that one step of a round cannot process (here: a trigger of
#     the user's that refuses one job's requeue) is skipped and reported (a
#     log line and an event naming the job), while the same step requeues
#     the other expired job, the schedule keeps firing and the executors of
#     dead jobs are still recovered.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/032_scheduler_bad_rows.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'badrows', conf => q{
hasched.max_executors = 2
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	INSERT INTO hasched.queue (name) VALUES ('work');
	SELECT hasched.schedule('tick', '* * * * * *', 'sqlq', '{"sql": "SELECT 1"}');
});

# The schedule fires n more times within secs seconds (from now).
sub ticks_go_on
{
	my ($n, $secs, $what) = @_;
	my $now = $node->query('SELECT clock_timestamp()');
	ok( $node->poll_within($secs,
			"SELECT count(*) >= $n FROM hasched.job WHERE schedule = 'tick' AND state = 'succeeded'"
			  . " AND created_at > '$now'"),
		"$what: the 1-second schedule fires and runs $n more times within $secs s");
}

ticks_go_on(2, 10, 'at start');

# Claim one job of the queue with a lease that ends at once; returns its id.
sub claim_expiring
{
	my ($queue, $payload) = @_;
	my $id = $node->query("SELECT hasched.submit('$queue', '$payload', max_attempts => 3)");
	is($node->query("SELECT job_id FROM hasched.claim('$queue', 'w1', 1, lease => '100 ms')"),
		$id, "job $id of queue $queue is claimed with a lease of 100 ms");
	return $id;
}

# ---------------------------------------------------------------------------
# 1. backoff_max = '300000 years'
# ---------------------------------------------------------------------------
# hasched.max_timeout refuses such a queue now; this one was written before
# the bound existed (the check is bypassed for it)
$node->query(
	q{SET session_replication_role = replica;
	  INSERT INTO hasched.queue (name, backoff_max) VALUES ('huge', '300000 years')});
my $huge = claim_expiring('huge', '{}');
ok( $node->poll_within(10,
		"SELECT state = 'failed' AND run_at <= now() + interval '1 year' FROM hasched.job WHERE id = $huge"),
	'the expired job of the queue with backoff_max = 300000 years is requeued for a retry');
is($node->query("SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $huge"),
	'lease_expired', '... its attempt ended lease_expired');
ticks_go_on(3, 10, 'with that queue');

# ---------------------------------------------------------------------------
# 2. a row one step cannot process
# ---------------------------------------------------------------------------
$node->query(
	q{
	CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $f$
	BEGIN
		IF OLD.payload ? 'poison' AND OLD.state = 'running' AND NEW.state <> 'running' THEN
			RAISE EXCEPTION 'job % is poisoned', OLD.id;
		END IF;
		RETURN NEW;
	END $f$;
	CREATE TRIGGER refuse_poison BEFORE UPDATE ON hasched.job
		FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
});
my $log_offset = -s $node->logfile;
my $event_id = $node->query('SELECT coalesce(max(id), 0) FROM hasched.event');
my $poison = claim_expiring('work', '{"poison": true}');
my $fine = claim_expiring('work', '{}');
ok($node->poll_within(10, "SELECT state = 'failed' FROM hasched.job WHERE id = $fine"),
	'the other expired job is requeued in the same step');
is($node->query("SELECT state FROM hasched.job WHERE id = $poison"), 'running',
	'the poisoned job is left as it was (its requeue was refused)');
ok( $node->poll_within(10,
		"SELECT count(*) >= 1 FROM hasched.event WHERE id > $event_id AND kind = 'scheduler_error'"
		  . " AND detail->>'error' LIKE '%job $poison is poisoned%'"),
	'an event of kind scheduler_error names the refused job\'s error');
ok($node->log_contains(qr/job $poison is poisoned/, $log_offset),
	'... and the server log has it');
ticks_go_on(3, 10, 'with the poisoned job');

# the round's other steps: an executor killed mid-job is still recovered
my $sleeper = $node->query(
	q{SELECT hasched.submit('sqlq', jsonb_build_object('sleeper', 1, 'sql',
		$s$SELECT pg_sleep(CASE WHEN attempt = 1 THEN 30 ELSE 0 END) FROM hasched.job WHERE payload ? 'sleeper'$s$),
		max_attempts => 2)});
ok( $node->poll(
		"SELECT count(*) = 1 FROM hasched.workers WHERE state = 'busy' AND job_id = $sleeper"),
	'an executor runs a pg_sleep(30) job');
my $pid = $node->query("SELECT pid FROM hasched.workers WHERE job_id = $sleeper");
$node->query("SELECT pg_terminate_backend($pid)");
ok($node->poll_within(15, "SELECT state = 'succeeded' AND attempt = 2 FROM hasched.job WHERE id = $sleeper"),
	'the job of the terminated executor runs again (orphan recovery goes on) and succeeds');

$node->query('DROP TRIGGER refuse_poison ON hasched.job');
ok($node->poll_within(10, "SELECT state = 'failed' FROM hasched.job WHERE id = $poison"),
	'once the trigger is gone, the poisoned job is requeued too');

$node->stop;
done_testing();
