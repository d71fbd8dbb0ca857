
# Copyright: hasched contributors
#
# 002_pull_api.pl: the pull API under concurrency, on one server.
#
#   - two sessions submitting the same idempotency key at once get the same
#     job, and exactly one job exists (commit and rollback of the first);
#   - two workers claiming from one queue at once never get the same job,
#     and together they get every job once; a queue's concurrency limit
#     holds against concurrent claims;
#   - an expired lease is requeued by requeue_expired(); the old token is
#     then refused (JQ006) and changes nothing; a heartbeat keeps a lease.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/002_pull_api.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $node = HaschedCluster->primary('main');
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('work', '1 hour');
	INSERT INTO hasched.queue (name, lease, concurrency) VALUES ('capped', '1 hour', 15);
	INSERT INTO hasched.queue (name, lease, concurrency) VALUES ('capped2', '1 hour', 15);
	INSERT INTO hasched.queue (name, lease, backoff_base, backoff_max)
	     VALUES ('short', '30 seconds', '1 second', '1 second');
});

# Send SQL to a background session without waiting for it; a marker line
# (echoed after the SQL) tells wait_done() when it has finished.
my $marker_no = 0;

sub send_sql
{
	my ($s, $sql) = @_;
	my $marker = 'done-' . ++$marker_no;
	$s->{stdin} .= "$sql\n\\echo $marker\n";
	$s->{run}->pump_nb;
	return $marker;
}

# Output of the SQL before the marker; output after it stays for the next.
sub wait_done
{
	my ($s, $marker) = @_;
	$s->{timeout}->start;
	until ($s->{stdout} =~ /^\Q$marker\E\n/m)
	{
		die "timed out waiting for $marker" if $s->{timeout}->is_expired;
		$s->{run}->pump;
	}
	$s->{stdout} =~ s/\A(.*?)^\Q$marker\E\n//ms;
	return $1;
}

sub backend_waits_on_lock
{
	my ($pid) = @_;
	return $node->poll("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $pid");
}

# ---------------------------------------------------------------------------
# idempotency keys under concurrency
# ---------------------------------------------------------------------------
my $s1 = $node->background_psql('postgres', on_error_stop => 0);
my $s2 = $node->background_psql('postgres', on_error_stop => 0);
my $pid2 = $s2->query_safe('SELECT pg_backend_pid()');

# A submits in an open transaction; B submits the same key and must wait.
$s1->query_safe('BEGIN');
my $id_a = $s1->query_safe(
	q{SELECT hasched.submit('default', '{"from": "A"}', idempotency_key => 'race-commit')});
like($id_a, qr/^\d+$/, 'session A submits with a key inside an open transaction');
my $m = send_sql($s2,
	q{SELECT hasched.submit('default', '{"from": "B"}', idempotency_key => 'race-commit');});
ok(backend_waits_on_lock($pid2),
	'session B, submitting the same key, waits for A\'s transaction');
$s1->query_safe('COMMIT');
my $id_b = wait_done($s2, $m);
chomp $id_b;
is($id_b, $id_a, 'after A commits, B gets the same job id');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || ' ' || min(payload->>'from') FROM hasched.job
		   WHERE idempotency_key = 'race-commit'}),
	'1 A',
	'exactly one job exists for the key, with the payload of the first submit');

# A rolls back: B's submit then creates the job.
$s1->query_safe('BEGIN');
my $id_a2 = $s1->query_safe(
	q{SELECT hasched.submit('default', '{"from": "A"}', idempotency_key => 'race-rollback')});
$m = send_sql($s2,
	q{SELECT hasched.submit('default', '{"from": "B"}', idempotency_key => 'race-rollback');});
ok(backend_waits_on_lock($pid2), 'session B waits again for A\'s open submit');
$s1->query_safe('ROLLBACK');
my $id_b2 = wait_done($s2, $m);
chomp $id_b2;
like($id_b2, qr/^\d+$/, 'after A rolls back, B\'s submit returns an id');
isnt($id_b2, $id_a2, 'B\'s job is a new one, not the rolled-back job');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || ' ' || min(id) || ' ' || min(payload->>'from') FROM hasched.job
		   WHERE idempotency_key = 'race-rollback'}),
	"1 $id_b2 B",
	'exactly one job exists for the key: B\'s');

# Many keys, both sessions at the same moment, no transaction blocks.
my (@m1, @m2);
for my $k (1 .. 30)
{
	push @m1, send_sql($s1,
		"SELECT hasched.submit('default', '{\"from\": \"A\"}', idempotency_key => 'burst-$k');");
	push @m2, send_sql($s2,
		"SELECT hasched.submit('default', '{\"from\": \"B\"}', idempotency_key => 'burst-$k');");
}
my (@ids1, @ids2);
for my $k (0 .. 29)
{
	my $a = wait_done($s1, $m1[$k]);
	my $b = wait_done($s2, $m2[$k]);
	chomp($a, $b);
	push @ids1, $a;
	push @ids2, $b;
}
is_deeply(\@ids2, \@ids1,
	'30 keys submitted by two sessions at once: both get the same id for every key');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(*) || ' ' || count(DISTINCT idempotency_key) FROM hasched.job
		   WHERE idempotency_key LIKE 'burst-%'}),
	'30 30', 'and exactly one job exists per key');
is($s1->{stderr} . $s2->{stderr}, '', 'no session saw an error while racing');

# ---------------------------------------------------------------------------
# concurrent claims
# ---------------------------------------------------------------------------
$node->safe_psql('postgres',
	q{SELECT hasched.submit_many('work',
	         array(SELECT jsonb_build_object('n', g) FROM generate_series(1, 200) g))});
is($node->safe_psql('postgres', q{SELECT pending FROM hasched.queues WHERE name = 'work'}),
	'200', '200 jobs wait in the work queue');

# Each worker: claim batches of 10, "work" 10 ms per batch, 25 times (more
# than enough for 200 jobs between the two).
my $claim_loop = sub {
	my ($worker) = @_;
	return join "\n",
	  map {
		"SELECT job_id FROM hasched.claim('work', '$worker', 10);\nSELECT pg_sleep(0.01);"
	  } 1 .. 25;
};
my $ma = send_sql($s1, $claim_loop->('worker-a'));
my $mb = send_sql($s2, $claim_loop->('worker-b'));
my @got_a = grep { /^\d+$/ } split /\n/, wait_done($s1, $ma);
my @got_b = grep { /^\d+$/ } split /\n/, wait_done($s2, $mb);
is($s1->{stderr} . $s2->{stderr}, '', 'no claim failed');
note 'worker-a claimed ' . scalar(@got_a) . ', worker-b claimed ' . scalar(@got_b);

my %seen;
my @dups = grep { $seen{$_}++ } (@got_a, @got_b);
is(scalar(@dups), 0, 'no job was handed to both workers (or twice to one)');
is(scalar(keys %seen), 200, 'together the workers claimed all 200 jobs');
ok(@got_a > 0 && @got_b > 0, 'both workers got jobs (the claims did overlap)');
is( $node->safe_psql(
		'postgres',
		q{SELECT string_agg(worker || ':' || n, ' ' ORDER BY worker)
		    FROM (SELECT worker, count(*) n FROM hasched.job
		           WHERE queue = 'work' AND state = 'running' GROUP BY worker) s}),
	'worker-a:' . scalar(@got_a) . ' worker-b:' . scalar(@got_b),
	'the table records each job as running for the worker that claimed it');
is( $node->safe_psql(
		'postgres',
		q{SELECT count(DISTINCT lease_id) FROM hasched.job WHERE queue = 'work'}),
	'200', 'every claim got its own lease id');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hasched.claim('work', 'late', 10)}),
	'0', 'the drained queue hands out nothing more');

# A queue limited to 15 running jobs, claimed by both at once.
$node->safe_psql('postgres',
	q{SELECT hasched.submit_many('capped',
	         array(SELECT jsonb_build_object('n', g) FROM generate_series(1, 100) g))});
my $cap_loop = sub {
	my ($worker) = @_;
	return join "\n",
	  map { "SELECT job_id FROM hasched.claim('capped', '$worker', 10);" } 1 .. 5;
};
$ma = send_sql($s1, $cap_loop->('worker-a'));
$mb = send_sql($s2, $cap_loop->('worker-b'));
@got_a = grep { /^\d+$/ } split /\n/, wait_done($s1, $ma);
@got_b = grep { /^\d+$/ } split /\n/, wait_done($s2, $mb);
%seen = ();
@dups = grep { $seen{$_}++ } (@got_a, @got_b);
is(scalar(@got_a) + scalar(@got_b), 15,
	'concurrent claims on a queue with concurrency 15 hand out exactly 15 jobs');
is(scalar(@dups), 0, 'none of them twice');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM hasched.job WHERE queue = 'capped' AND state = 'running'}),
	'15', 'the table agrees: 15 running in the capped queue');

# The same, step by step: A claims 10 in an open transaction; B's claim
# does not wait for A (a claim never waits on another claim): it gets at
# once the 5 that A's reservation leaves.
$node->safe_psql('postgres',
	q{SELECT hasched.submit_many('capped2',
	         array(SELECT jsonb_build_object('n', g) FROM generate_series(1, 100) g))});
$s1->query_safe('BEGIN');
is($s1->query_safe(q{SELECT count(*) FROM hasched.claim('capped2', 'worker-a', 10)}),
	'10', 'worker A claims 10 of 15 allowed in an open transaction');
$m = send_sql($s2, q{SELECT count(*) FROM hasched.claim('capped2', 'worker-b', 10);});
my $b_got = wait_done($s2, $m);
chomp $b_got;
is($b_got, '5', 'worker B, while A is still open, gets at once only the 5 jobs the limit leaves');
$s1->query_safe('COMMIT');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hasched.claim('capped2', 'worker-c', 10)}),
	'0', 'after A commits, a third claim gets nothing');
is( $node->safe_psql(
		'postgres', q{SELECT count(*) FROM hasched.job WHERE queue = 'capped2' AND state = 'running'}),
	'15', 'the limited queue has 15 running jobs, not more');

$s1->quit;
$s2->quit;

# ---------------------------------------------------------------------------
# lease expiry, requeue, fencing
# ---------------------------------------------------------------------------
my $job = $node->safe_psql('postgres', q{SELECT hasched.submit('short', '{"task": "x"}')});
my ($cid, $token) = split /\|/,
  $node->safe_psql('postgres',
	q{SELECT job_id, token FROM hasched.claim('short', 'slow-worker', 1, lease => '1 second')});
is($cid, $job, 'a worker claims the job with a 1-second lease');
is($node->safe_psql('postgres', 'SELECT hasched.requeue_expired()'),
	'0', 'requeue_expired() leaves a live lease alone');
usleep(1_500_000);
# the scheduler's own round may have requeued it first: either way, once
my $requeued = $node->safe_psql('postgres', 'SELECT hasched.requeue_expired()');
ok($requeued eq '1' || $node->safe_psql('postgres',
		"SELECT state FROM hasched.job WHERE id = $job") eq 'failed',
	'after the lease has run out, the job is requeued (by requeue_expired() or the scheduler)');
is( $node->safe_psql(
		'postgres', "SELECT state || ' ' || attempt || ' ' || (last_error LIKE 'lease expired%')
		               FROM hasched.job WHERE id = $job"),
	'failed 1 true', 'the job is failed after attempt 1, with the lease expiry as its error');
is( $node->safe_psql(
		'postgres', "SELECT outcome FROM hasched.job_run WHERE job_id = $job"),
	'lease_expired', 'the run history records the expired attempt');
is($node->safe_psql('postgres', 'SELECT hasched.requeue_expired()'),
	'0', 'a second requeue_expired() finds nothing more');

my ($ret, $out, $err) =
  $node->psql_verbose("SELECT hasched.complete($job, '$token', '{\"late\": true}')");
isnt($ret, 0, 'completing with the expired token fails');
like($err, qr/ERROR:\s+JQ006:/, 'completing with the expired token is refused with JQ006');
($ret, $out, $err) = $node->psql_verbose("SELECT hasched.heartbeat($job, '$token')");
like($err, qr/ERROR:\s+JQ006:/, 'a heartbeat with the expired token is refused with JQ006');
($ret, $out, $err) = $node->psql_verbose("SELECT hasched.fail($job, '$token', 'late failure')");
like($err, qr/ERROR:\s+JQ006:/, 'failing with the expired token is refused with JQ006');
is( $node->safe_psql(
		'postgres',
		"SELECT state || ' ' || attempt || ' ' || (result IS NULL) || ' ' ||
		        (SELECT count(*) FROM hasched.job_run r WHERE r.job_id = j.id)
		   FROM hasched.job j WHERE id = $job"),
	'failed 1 true 1', 'the refused reports changed nothing');

# The retry: a new attempt, a new token; the old one stays refused.
ok( $node->poll_query_until(
		'postgres', "SELECT run_at <= now() FROM hasched.job WHERE id = $job"),
	'the requeued job comes due after its backoff');
my ($cid2, $token2, $attempt2) = split /\|/,
  $node->safe_psql('postgres',
	q{SELECT job_id, token, attempt FROM hasched.claim('short', 'fast-worker', 1)});
is("$cid2 $attempt2", "$job 2", 'another worker claims it again, as attempt 2');
isnt($token2, $token, 'with a new token');
($ret, $out, $err) = $node->psql_verbose("SELECT hasched.complete($job, '$token', '{\"late\": true}')");
like($err, qr/ERROR:\s+JQ006:/, 'the first attempt\'s token is refused while attempt 2 runs');
$node->safe_psql('postgres', "SELECT hasched.complete($job, '$token2', '{\"ok\": true}')");
is( $node->safe_psql(
		'postgres', "SELECT state || ' ' || result FROM hasched.job WHERE id = $job"),
	'succeeded {"ok": true}', 'the new token completes the job, with its result');
is( $node->safe_psql(
		'postgres',
		"SELECT string_agg(attempt || ':' || outcome || ':' || worker, ' ' ORDER BY attempt)
		   FROM hasched.job_run WHERE job_id = $job")
	  . ' ' . $node->safe_psql('postgres',
		"SELECT attempt || ':' || state || ':' || worker FROM hasched.job WHERE id = $job"),
	'1:lease_expired:slow-worker 2:succeeded:fast-worker',
	'the run history has the expired attempt, the job row the successful one');
($ret, $out, $err) = $node->psql_verbose("SELECT hasched.complete($job, '$token2', '{\"twice\": true}')");
is($ret, 0, 'a second completion with the same token is a no-op (idempotent reports)');
is($node->safe_psql('postgres', "SELECT result FROM hasched.job WHERE id = $job"),
	'{"ok": true}', 'the result is recorded exactly once');

# A heartbeat keeps a lease alive past its first end.
$job = $node->safe_psql('postgres', q{SELECT hasched.submit('short', '{"task": "y"}')});
($cid, $token) = split /\|/,
  $node->safe_psql('postgres',
	q{SELECT job_id, token FROM hasched.claim('short', 'w', 1, lease => '1 second')});
is($cid, $job, 'a worker claims a job with a 1-second lease');
$node->safe_psql('postgres', "SELECT hasched.heartbeat($job, '$token', lease => '1 hour')");
usleep(1_500_000);
is($node->safe_psql('postgres', 'SELECT hasched.requeue_expired()'),
	'0', 'after a heartbeat extended it, the lease is not requeued');
$node->safe_psql('postgres', "SELECT hasched.complete($job, '$token')");
is($node->safe_psql('postgres', "SELECT state FROM hasched.job WHERE id = $job"),
	'succeeded', 'the heartbeating worker completes its job with its token');

$node->stop;
done_testing();
