
# Copyright: hasched contributors
#
# 078_scheduler_plans.pl: the scheduler's count of the waiting jobs walks
# job_waiting_idx a chunk at a time whatever the table's statistics say.
#
# Its statements keep their plans for the scheduler's life.  A plan made
# while hasched.job has no statistics (a new install: autovacuum has not
# analyzed it yet) expected a few thousand waiting jobs at most, and read
# them through a bitmap scan, sorted them all and kept a chunk of 5,000:
# each chunk of a count read the whole backlog, and a count of 1.5 million
# jobs never finished in TAP 073 when its plan was made between the
# VACUUM and the ANALYZE there (3 runs of 5 failed).  Here the table is
# never analyzed (autovacuum off), so the plan is made without statistics
# every time: the CPU the count used is compared with a count of the same
# jobs by hand, in one statement.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/078_scheduler_plans.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $backlog = 300_000;

my $node = HaschedCluster->primary(
	'plans', conf => q{
fsync = off
autovacuum = off
hasched.stats_interval = '100ms'
hasched.enforce_quotas = off
hasched.readonly_backlog = 0
hasched.holdback_backlog = 0
});
ok($node->wait_scheduler, 'the scheduler runs');
is($node->query("SELECT reltuples FROM pg_class WHERE oid = 'hasched.job'::regclass"),
	'-1', 'hasched.job has never been vacuumed or analyzed');
ok($node->poll_within(30, "SELECT detail ~ '^0 waiting' FROM hasched.health() WHERE component = 'backlog'"),
	'the scheduler has counted the empty table');

$node->safe_psql(
	'postgres', qq{
	INSERT INTO hasched.queue (name, lease) VALUES ('deep', '1 hour');
	SELECT count(hasched.submit_many('deep', array_fill('{}'::jsonb, ARRAY[10000])))
	  FROM generate_series(1, $backlog / 10000);
});
is($node->query("SELECT count(*) FROM pg_stats WHERE schemaname = 'hasched' AND tablename = 'job'"),
	'0', "$backlog jobs waiting, and still no statistics on hasched.job");

ok($node->poll_within(120, "SELECT detail ~ '^$backlog waiting' FROM hasched.health() WHERE component = 'backlog'"),
	'the backlog is counted')
  or diag($node->query("SELECT detail FROM hasched.health() WHERE component = 'backlog'"));
my $detail = $node->query("SELECT detail FROM hasched.health() WHERE component = 'backlog'");
my ($used) = $detail =~ /the count used ([\d.]+) s of CPU/;
ok(defined $used, 'health says what the count used') or diag($detail);
$used //= 1e9;

# the same jobs counted in one statement (a sequential scan): what reading
# each of them once costs here
my ($ms) = $node->query(
	"EXPLAIN (ANALYZE, TIMING OFF) SELECT queue, state, count(*) FROM hasched.job GROUP BY 1, 2")
  =~ /Execution Time: ([\d.]+) ms/;
diag("count: $detail");
diag("the same jobs counted by hand in one statement: $ms ms");
# in chunks, each job is read once, and the key of each chunk's end once
# more (an index-only scan): a few times the one statement, not the
# sixty times of a plan that reads the whole backlog for every chunk
cmp_ok($used * 1000, '<=', 8 * $ms + 50,
	'the chunked count read each waiting job about once (a walk of the index, not a scan of all of them per chunk)');
is($node->query("SELECT reltuples FROM pg_class WHERE oid = 'hasched.job'::regclass"),
	'-1', 'nothing analyzed hasched.job meanwhile');

$node->stop;
done_testing();
