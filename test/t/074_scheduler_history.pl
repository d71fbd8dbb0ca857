
# Copyright: hasched contributors
#
# 074_scheduler_history.pl: what the scheduler does every round or every
# minute reads the jobs that are not finished, never the history of
# finished ones (hasched.history_retention keeps a week of it by default:
# millions of rows on a busy server).
#
#   - The figures' count (health, /metrics, the degradation's backlog) is a
#     bitmap OR of the two partial indexes of unfinished jobs.  Before, its
#     one list of five states matched neither index, and each count was a
#     sequential scan of the whole table, with two parallel workers (seen
#     in a benchmark: the scheduler and its workers took a core over six
#     million finished jobs).
#   - The prune of history older than the retention bounds the scan of
#     job_finished_idx with its cutoff.  Before, the cutoff used
#     clock_timestamp() (volatile, so not an index condition) and every
#     prune read the whole index and every row it points to.
#   - The view hasched.queues reads the unfinished jobs only.
#
# Measured with the table's statistics (pg_stat_user_tables,
# pg_stat_user_indexes), which the scheduler flushes at least every few
# seconds.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/074_scheduler_history.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time sleep);

my $finished = 300_000;

my $node = HaschedCluster->primary(
	'history', conf => q{
fsync = off
hasched.stats_interval = '100ms'
hasched.enforce_quotas = off
});
$node->safe_psql(
	'postgres', qq{
	INSERT INTO hasched.queue (name) VALUES ('hist');
	INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, attempt,
	                         max_attempts, timeout, started_at, finished_at, payload)
	SELECT 'hist', current_user::regrole, current_user::regrole, 0, 'succeeded', now(), 1, 3, '1 minute',
	       now(), now(), '{}'
	  FROM generate_series(1, $finished);
	SELECT count(hasched.submit('hist', '{}')) FROM generate_series(1, 5);
	VACUUM ANALYZE hasched.job;
});
ok($node->wait_scheduler, 'the scheduler runs');

# the reads of hasched.job and of its index on finished_at so far
sub reads
{
	my ($seq, $tup, $fin) = split /\|/, $node->query(
		q{SELECT t.seq_scan, t.seq_tup_read, i.idx_tup_read
		    FROM pg_stat_user_tables t, pg_stat_user_indexes i
		   WHERE t.relid = 'hasched.job'::regclass AND i.indexrelid = 'hasched.job_finished_idx'::regclass});
	return { seq => $seq, tup => $tup, fin => $fin };
}

sub counted_at
{
	my ($at) = $node->query("SELECT detail FROM hasched.health() WHERE component = 'backlog'")
	  =~ /counted at (\S+ \S+)/;
	return $at // '';
}

# ------------------------------------------------------------------------
# the first round after a start: the prune reads no finished job
# ------------------------------------------------------------------------

my $r0 = reads();
$node->restart;
ok($node->wait_scheduler, 'the scheduler runs again after a restart');
ok($node->poll_within(30, "SELECT detail ~ '^5 waiting' FROM hasched.health() WHERE component = 'backlog'"),
	'the five waiting jobs are counted');
sleep 3;    # the scheduler's statistics flushed
my $r1 = reads();
cmp_ok($r1->{fin} - $r0->{fin}, '<', 1000,
	"the prune at the first round reads no entry of the $finished finished jobs in job_finished_idx")
  or diag("idx_tup_read of job_finished_idx: $r0->{fin} -> $r1->{fin}");

# ------------------------------------------------------------------------
# the figures' count, many times over
# ------------------------------------------------------------------------

my %seen;
my $t_end = time + 4;
while (time < $t_end)
{
	$seen{ counted_at() } = 1;
	sleep 0.2;
}
delete $seen{''};
sleep 3;    # flushed
my $r2 = reads();
cmp_ok(scalar(keys %seen), '>=', 5, 'the scheduler counted the jobs several times meanwhile');
is($r2->{seq} - $r1->{seq}, 0, 'no count scanned hasched.job')
  or diag("seq_scan $r1->{seq} -> $r2->{seq}, seq_tup_read $r1->{tup} -> $r2->{tup}");
cmp_ok($r2->{tup} - $r1->{tup}, '<', 1000, 'no count read the finished jobs')
  or diag("seq_tup_read $r1->{tup} -> $r2->{tup}");

# ------------------------------------------------------------------------
# the view hasched.queues
# ------------------------------------------------------------------------

is($node->query("SELECT pending FROM hasched.queues WHERE name = 'hist'"), '5', 'hasched.queues counts the waiting jobs');
my $plan = $node->query("EXPLAIN SELECT * FROM hasched.queues");
like($plan, qr/BitmapOr/, 'hasched.queues reads the two partial indexes of unfinished jobs')
  or diag($plan);
unlike($plan, qr/Seq Scan on job/, 'and does not scan hasched.job') or diag($plan);

done_testing();
