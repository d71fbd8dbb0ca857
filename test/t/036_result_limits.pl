
# Copyright: hasched contributors
#
# 036_result_limits.pl: what is kept of a job's result and error is bounded
# (issue 8, item 9).
#
# Proves, with the real executors and hasched.max_result_bytes = 64kB,
# hasched.max_error_bytes = 1kB:
#   - a SQL job that returns 300 rows of 1 MB succeeds (result: the row
#     count) without its executor ever holding the rows: the executor's
#     peak memory grows by far less than the 300 MB;
#   - a SQL job whose error is 1 MB long ends with last_error and the run
#     history cut to 1kB, saying it was cut;
#   - complete() with a result larger than hasched.max_result_bytes is
#     refused with JQ012 naming the setting and changes nothing (one job and
#     a batch);
#   - fail() with a 10 MB error keeps 1kB of it, in last_error and in the
#     run history.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/036_result_limits.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'limits', conf => q{
hasched.max_executors = 1
hasched.min_executors = 1
hasched.max_result_bytes = '64kB'
hasched.max_error_bytes = '1kB'
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	INSERT INTO hasched.queue (name) VALUES ('work');
});

sub wait_final
{
	my ($id) = @_;
	return $node->poll(
		"SELECT state IN ('succeeded', 'dead', 'cancelled') FROM hasched.job WHERE id = $id");
}

# peak resident memory of a process, in kB
sub peak_kb
{
	my ($pid) = @_;
	open(my $fh, '<', "/proc/$pid/status") or return undef;
	while (<$fh>)
	{
		return $1 if /^VmHWM:\s+(\d+)\s+kB/;
	}
	return undef;
}

# ---------------------------------------------------------------------------
# 1. a large result of a SQL job is not held in memory
# ---------------------------------------------------------------------------
my $warm = $node->query(q{SELECT hasched.submit('sqlq', '{"sql": "SELECT repeat(''x'', 1000) FROM generate_series(1, 300)"}')});
ok(wait_final($warm), 'a small job warms the executor up');
my $pid = $node->query("SELECT split_part(worker, '/', 3) FROM hasched.job WHERE id = $warm");
my $before = peak_kb($pid);
ok(defined $before, "the executor's peak memory before: $before kB");
my $big = $node->query(
	q{SELECT hasched.submit('sqlq', '{"sql": "SELECT repeat(''x'', 1000000) FROM generate_series(1, 300)"}')});
ok(wait_final($big), 'the job returning 300 rows of 1 MB finished');
is($node->query("SELECT state || ' ' || result::text || ' ' || split_part(worker, '/', 3) FROM hasched.job WHERE id = $big"),
	"succeeded {\"rows\": 300} $pid", '... it succeeded in the same executor, its result the row count');
my $after = peak_kb($pid);
cmp_ok($after - $before, '<', 100 * 1024,
	"the executor's peak memory grew by less than 100 MB (by " . int(($after - $before) / 1024) . ' MB)');

# ---------------------------------------------------------------------------
# 2. a long error of a SQL job is cut
# ---------------------------------------------------------------------------
my $loud = $node->query(
	q{SELECT hasched.submit('sqlq', '{"sql": "DO $d$BEGIN RAISE EXCEPTION ''%'', repeat(''e'', 1000000); END$d$"}', max_attempts => 1)}
);
ok(wait_final($loud), 'the job raising a 1 MB error finished');
is($node->query("SELECT state FROM hasched.job WHERE id = $loud"), 'dead', '... dead');
is( $node->query(
		"SELECT octet_length(last_error) <= 1024 AND last_error LIKE 'eeee%' AND last_error LIKE '%truncated%'"
		  . " FROM hasched.job WHERE id = $loud"),
	't',
	'its last_error is cut to hasched.max_error_bytes (1kB) and says so');
is($node->query("SELECT octet_length(error) <= 1024 FROM hasched.job_run WHERE job_id = $loud"),
	't', '... and so is the error in the run history');

# ---------------------------------------------------------------------------
# 3. complete() with a result that is too large
# ---------------------------------------------------------------------------
my @ids = split /\n/, $node->query(q{SELECT hasched.submit('work', '{}') FROM generate_series(1, 2)});
my @tokens = split /\n/, $node->query(q{SELECT token FROM hasched.claim('work', 'w1', 2) ORDER BY job_id});
like(
	$node->query_error(
		"SELECT hasched.complete($ids[0], '$tokens[0]', jsonb_build_object('blob', repeat('r', 100000)))"),
	qr/ERROR:  JQ012: the result of job $ids[0] is larger than hasched\.max_result_bytes \(64kB\)/,
	'complete() with a 100 kB result is refused with JQ012 naming hasched.max_result_bytes');
like(
	$node->query_error(
		"SELECT hasched.complete(ARRAY[$ids[0], $ids[1]], ARRAY['$tokens[0]', '$tokens[1]'],"
		  . " ARRAY['{}'::jsonb, jsonb_build_object('blob', repeat('r', 100000))])"),
	qr/ERROR:  JQ012: the result of job $ids[1] is larger than hasched\.max_result_bytes \(64kB\)/,
	'complete(ids[], ...) with one 100 kB result is refused with JQ012 naming that job');
is($node->query("SELECT string_agg(state::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($ids[0], $ids[1])"),
	'running,running', 'both jobs are still running: nothing was recorded');
$node->query("SELECT hasched.complete($ids[1], '$tokens[1]', jsonb_build_object('blob', repeat('r', 60000)))");
is($node->query("SELECT state FROM hasched.job WHERE id = $ids[1]"), 'succeeded', 'a 60 kB result is accepted');

# ---------------------------------------------------------------------------
# 4. fail() with a 10 MB error
# ---------------------------------------------------------------------------
my $fid = $node->query(q{SELECT hasched.submit('work', '{}')});
my $ftoken = $node->query(q{SELECT token FROM hasched.claim('work', 'w1', 1)});
is($node->query("SELECT hasched.fail($fid, '$ftoken', repeat('f', 10000000), retry => false)"),
	'dead', 'fail() with a 10 MB error is recorded (dead)');
is( $node->query(
		"SELECT octet_length(last_error) <= 1024 AND last_error LIKE 'ffff%' AND last_error LIKE '%truncated%'"
		  . " FROM hasched.job WHERE id = $fid"),
	't',
	'last_error keeps 1kB of it and says it was cut');
is($node->query("SELECT octet_length(error) <= 1024 FROM hasched.job_run WHERE job_id = $fid"),
	't', '... and so does the run history');

$node->stop;
done_testing();
