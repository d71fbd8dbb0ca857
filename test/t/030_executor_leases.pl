
# Copyright: hasched contributors
#
# 030_executor_leases.pl: an executor's lease and timeout start when the job
# starts, not when the executor claimed it (issue 7, item 9).
#
# Proves, with one real executor (hasched.max_executors = 1):
#   - eight jobs submitted together, each running 0.6 s, on a queue whose
#     lease is 1 s and with a 1 s timeout, all succeed: none goes dead with
#     "lease expired" while it waited for the jobs before it;
#   - each job's started_at is when it really started (after the job before
#     it finished), and a running job's lease ends lease + timeout after
#     its own start.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/030_executor_leases.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'leases', conf => q{
hasched.max_executors = 1
hasched.min_executors = 1
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('sqlq', 'sql', '1 second');
});
ok( $node->poll(
		q{SELECT count(*) = 1 FROM hasched.workers WHERE state IN ('idle', 'woken')}),
	'the one executor is up and idle');

# Eight jobs in one transaction: the executor sees them all at once.  Each
# runs 0.6 s, so the last starts about 4.2 s after the first, long after a
# lease taken for all of them at the first claim (1 s + 1 s) has run out.
my $n = 8;
my @ids = split /\n/, $node->query(
	"BEGIN;\n"
	  . join('',
		map {
			"SELECT hasched.submit('sqlq', jsonb_build_object('sql', 'SELECT pg_sleep(0.6)', 'n', $_),"
			  . " timeout => '1 second', max_attempts => 1);\n"
		} 1 .. $n)
	  . "COMMIT;");
is(scalar(@ids), $n, "$n jobs submitted in one transaction");
my $list = join(',', @ids);

# While the fourth job runs, its lease must be its own.
my $fourth = $ids[3];
ok( $node->poll(
		"SELECT count(*) = 1 FROM hasched.workers WHERE state = 'busy' AND job_id = $fourth"),
	'the executor gets to the fourth job');
my $seen_at = $node->query('SELECT clock_timestamp()');
is( $node->query(
		"SELECT started_at > '$seen_at'::timestamptz - interval '1 second'"
		  . " AND lease_until = started_at + interval '2 seconds'"
		  . " FROM hasched.job WHERE id = $fourth"),
	't',
	'the fourth job, running, started less than 1 s ago and is leased for lease + timeout (2 s) from its start');

ok( $node->poll(
		"SELECT bool_and(state IN ('succeeded', 'dead', 'failed', 'cancelled')) FROM hasched.job WHERE id IN ($list)"
	),
	'every job finished');
is($node->query("SELECT string_agg(state::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($list)"),
	join(',', ('succeeded') x $n), 'all eight succeeded');
is( $node->query(
		"SELECT count(*) FROM hasched.job_run WHERE job_id IN ($list) AND outcome = 'lease_expired'"),
	'0',
	'no attempt ended with "lease expired"');
is($node->query("SELECT string_agg(attempt::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($list)"),
	join(',', ('1') x $n), 'each ran once, in its first attempt');

# started_at is the real start: each job after the one before it finished
is( $node->query(
		"SELECT count(*) FROM (SELECT started_at, lag(finished_at) OVER (ORDER BY started_at) AS prev_end"
		  . " FROM hasched.job WHERE id IN ($list)) s WHERE started_at < prev_end"),
	'0',
	'each job started (started_at) after the previous one finished');
is( $node->query(
		"SELECT bool_and(finished_at - started_at BETWEEN interval '0.55 s' AND interval '3 s')"
		  . " FROM hasched.job WHERE id IN ($list)"),
	't',
	'each job took about its 0.6 s from its started_at to its finished_at');

$node->stop;
done_testing();
