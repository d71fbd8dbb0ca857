
# Copyright: hasched contributors
#
# 033_interval_bounds.pl: timeouts, leases and delays are bounded by
# hasched.max_timeout, and no interval overflows on its way to
# microseconds (issue 8, items 5 and 10).
#
# Proves, with the real executors:
#   - submit(timeout => '292300 years'), '178000000 years' (which overflowed
#     to a positive number of microseconds) and '300000 years' (which
#     overflowed to a negative one, "must be positive") are refused with
#     JQ013 and a message that names hasched.max_timeout; nothing is
#     written;
#   - so are claim() and heartbeat() leases, and a queue's default_timeout,
#     lease, backoff_base and backoff_max beyond the bound;
#   - a job whose timeout is beyond the bound all the same (a row written
#     before the bound existed) does not stop the executors: another
#     tenant's job runs at once, and the bad job ends dead saying why; a
#     queue whose lease is beyond it stops only itself (its claim failure
#     is reported as an executor_error event).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/033_interval_bounds.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'bounds', conf => q{
hasched.max_executors = 2
});

$node->query(
	q{
	CREATE ROLE alice LOGIN IN ROLE hasched_submitter;
	CREATE ROLE bob LOGIN IN ROLE hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('alice', 'enterprise'), ('bob', 'enterprise'),
		(current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	INSERT INTO hasched.queue (name) VALUES ('work'), ('work2');
	CREATE TABLE public.runs (who name);
	GRANT INSERT ON public.runs TO bob;
});

my (undef, $max_timeout) = $node->psql($node->db, 'SHOW hasched.max_timeout');
is($max_timeout, '7d', 'hasched.max_timeout defaults to 7 days');

# ---------------------------------------------------------------------------
# 1. refused at the door
# ---------------------------------------------------------------------------
my $jobs_before = $node->query('SELECT count(*) FROM hasched.job');
for my $huge ('292300 years', '178000000 years', '300000 years', '8 days')
{
	like(
		$node->query_error("SELECT hasched.submit('work', '{}', timeout => '$huge')"),
		qr/ERROR:  JQ013: timeout '\Q$huge\E' is larger than hasched\.max_timeout \(7d\)/,
		"submit(timeout => '$huge') is refused with JQ013 naming hasched.max_timeout");
}
like(
	$node->query_error(q{SELECT hasched.submit_many('work', ARRAY['{}'::jsonb], timeout => '300000 years')}),
	qr/ERROR:  JQ013: timeout '300000 years' is larger than hasched.max_timeout/,
	'submit_many(timeout => 300000 years) too');
is($node->query('SELECT count(*) FROM hasched.job'), $jobs_before, 'the refused submits wrote no job');
like(
	$node->query_error(q{SELECT hasched.submit('work', '{}', timeout => '-1 second')}),
	qr/ERROR:  JQ013: timeout must be positive/,
	'a negative timeout is still refused as not positive');

my $id = $node->query(q{SELECT hasched.submit('work2', '{}')});
like(
	$node->query_error(q{SELECT * FROM hasched.claim('work2', 'w1', 1, lease => '300000 years')}),
	qr/ERROR:  JQ013: lease '300000 years' is larger than hasched.max_timeout/,
	'claim(lease => 300000 years) is refused with JQ013');
my $token = $node->query(q{SELECT token FROM hasched.claim('work2', 'w1', 1)});
like(
	$node->query_error("SELECT hasched.heartbeat($id, '$token', lease => '178000000 years')"),
	qr/ERROR:  JQ013: lease '178000000 years' is larger than hasched.max_timeout/,
	'heartbeat(lease => 178000000 years) is refused with JQ013');
$node->query("SELECT hasched.complete($id, '$token')");

for my $col ('default_timeout', 'lease', 'backoff_base', 'backoff_max')
{
	like(
		$node->query_error("INSERT INTO hasched.queue (name, $col) VALUES ('q_$col', '300000 years')"),
		qr/ERROR:  JQ013: .*$col '300000 years' is larger than hasched.max_timeout/,
		"a queue with $col = 300000 years is refused with JQ013");
}
is($node->query(q{SELECT count(*) FROM hasched.queue WHERE name LIKE 'q\_%'}), '0', '... and none was created');

# ---------------------------------------------------------------------------
# 2. a bad row that exists all the same does not stop the executors
# ---------------------------------------------------------------------------
# Written as 0.1.0 let it be written: the checks are bypassed for it.
my $bad = $node->query(
	q{SET session_replication_role = replica;
	  INSERT INTO hasched.job (queue, tenant, owner, submitted_by, priority, state, run_at, max_attempts,
	                           timeout, payload)
	  VALUES ('sqlq', 'alice', 'alice', current_user::regrole, 0, 'pending', now(), 1, '292300 years',
	          '{"sql": "SELECT 1"}')
	  RETURNING id;});
my $good = $node->query(
	q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.runs VALUES (current_user)"}', priority => 'low')},
	extra_params => [ '-U', 'bob' ]);
ok($node->poll_within(10, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $good"),
	'another tenant\'s job, submitted after the bad one, runs within 10 s');
is($node->query('SELECT string_agg(who, \',\') FROM public.runs'), 'bob', '... and wrote its row');
ok($node->poll_within(10, "SELECT state = 'dead' FROM hasched.job WHERE id = $bad"),
	'the job with timeout 292300 years ends dead');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $bad"),
	qr/timeout '292300 years' is larger than hasched\.max_timeout/,
	'... saying that its timeout is larger than hasched.max_timeout');

# a queue written the same way, with a lease that cannot be added to a time
my $event_id = $node->query('SELECT coalesce(max(id), 0) FROM hasched.event');
my $badq_job = $node->query(
	q{SET session_replication_role = replica;
	  INSERT INTO hasched.queue (name, transport, lease) VALUES ('badq', 'sql', '300000 years');
	  INSERT INTO hasched.job (queue, tenant, owner, submitted_by, priority, state, run_at, max_attempts,
	                           timeout, payload)
	  VALUES ('badq', 'alice', 'alice', current_user::regrole, 0, 'pending', now(), 1, '1 minute',
	          '{"sql": "SELECT 1"}')
	  RETURNING id;});
my $good2 = $node->query(
	q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.runs VALUES (current_user)"}')},
	extra_params => [ '-U', 'bob' ]);
ok($node->poll_within(10, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $good2"),
	'with a queue whose lease is 300000 years, another queue\'s job still runs within 10 s');
ok( $node->poll_within(10,
		"SELECT count(*) > 0 FROM hasched.event WHERE id > $event_id AND kind = 'executor_error'"
		  . " AND detail->>'queue' = 'badq'"),
	'... and the claim that failed on that queue is reported (an executor_error event naming it)');
is($node->query("SELECT state FROM hasched.job WHERE id = $badq_job"), 'pending',
	'... the job of that queue is left waiting, unchanged');

$node->stop;
done_testing();
