
# Copyright: hasched contributors
#
# 050_idempotent_reports.pl: reports that a worker sends again after losing
# the reply, and the NOTIFY that wakes pull workers.
#
#   - complete() repeated with the token that recorded the success (its reply
#     lost in a failover) succeeds and changes nothing: the first result
#     stays, finished_at stays; a token that never held the job, or one whose
#     attempt ended otherwise (expired, cancelled), is refused with JQ006;
#   - the same for fail(): the repeat records no second run row and returns
#     the job's state; complete() with the token of a recorded failure is
#     JQ006 (that attempt failed);
#   - complete(ids[], tokens[]) repeated returns the whole count; one truly
#     stale token among them is JQ006 naming it, nothing recorded;
#   - a repeat racing the first report (blocked on its row lock) succeeds
#     once the first commits: it reads with a fresh snapshot;
#   - hasched.listen(queue): refuses unknown and non-pull queues; a listener
#     gets a NOTIFY when a submit of a due job commits, none on rollback,
#     none for a job due later; only hasched_worker may call it.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/050_idempotent_reports.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary('main');
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease, backoff_base, backoff_max)
	     VALUES ('work', '1 hour', '1 hour', '1 hour');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	CREATE ROLE sub LOGIN IN ROLE hasched_submitter;
});

sub claim_one
{
	my ($queue) = @_;
	my ($id, $token) = split /\|/,
	  $node->query("SELECT job_id || '|' || token FROM hasched.claim('$queue', 'w1', 1)");
	return ($id, $token);
}

# ---------------------------------------------------------------------------
# complete()
# ---------------------------------------------------------------------------
my $id = $node->query(q{SELECT hasched.submit('work', '{"n": 1}')});
my ($cid, $token) = claim_one('work');
is($cid, $id, 'the job is claimed');
$node->query("SELECT hasched.complete($id, '$token', '{\"first\": true}')");
my $before = $node->job($id, q{state || ' ' || result::text || ' ' || finished_at});
my ($rc, $out, $err) =
  $node->psql_verbose("SELECT hasched.complete($id, '$token', '{\"second\": true}')");
is($rc, 0, 'complete() repeated with the same token succeeds') or diag($err);
is($node->job($id, q{state || ' ' || result::text || ' ' || finished_at}),
	$before, 'the repeat changed nothing: the first result and finished_at stay');
like($before, qr/^succeeded \{"first": true\}/, 'the first result is the recorded one');

my ($e, $a, $l) = split /:/, $token;
my $other = "$e:$a:" . ($l + 1000);
like($node->query_error("SELECT hasched.complete($id, '$other', '{}')"),
	qr/ERROR:\s+JQ006: stale lease token \Q$other\E for job $id/,
	'a token that never held the job is refused with JQ006');
my $earlier = "$e:" . ($a + 1) . ":$l";
like($node->query_error("SELECT hasched.complete($id, '$earlier', '{}')"),
	qr/ERROR:\s+JQ006/, 'a token of another attempt is refused with JQ006');
like($node->query_error("SELECT hasched.fail($id, '$token', 'late')"),
	qr/ERROR:\s+JQ006/, 'fail() with the token of a recorded success is JQ006');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id = $id"),
	'0', 'no run row was written by any of them');

# an attempt that ended otherwise: expired lease, then requeued
$id = $node->query(q{SELECT hasched.submit('work', '{"n": 2}')});
(undef, $token) = claim_one('work');
$node->query("UPDATE hasched.job SET lease_until = now() - interval '1 second' WHERE id = $id");
is($node->query('SELECT hasched.requeue_expired()'), '1', 'the expired lease is requeued');
like($node->query_error("SELECT hasched.complete($id, '$token', '{}')"),
	qr/ERROR:\s+JQ006: stale lease token .*\n.*The job is failed/,
	'complete() of an expired attempt is still JQ006');
like($node->query_error("SELECT hasched.fail($id, '$token', 'x')"),
	qr/ERROR:\s+JQ006/, 'fail() of an expired attempt is still JQ006 (its outcome was lease_expired)');

# cancelled while running
$id = $node->query(q{SELECT hasched.submit('work', '{"n": 3}')});
(undef, $token) = claim_one('work');
$node->query("SELECT hasched.cancel($id)");
like($node->query_error("SELECT hasched.complete($id, '$token', '{}')"),
	qr/ERROR:\s+JQ006/, 'complete() of a cancelled attempt is JQ006');

# ---------------------------------------------------------------------------
# fail()
# ---------------------------------------------------------------------------
$id = $node->query(q{SELECT hasched.submit('work', '{"n": 4}', max_attempts => 3)});
(undef, $token) = claim_one('work');
is($node->query("SELECT hasched.fail($id, '$token', 'boom')"), 'failed', 'fail() records a failed attempt');
my $runs = $node->runs_of($id);
($rc, $out, $err) = $node->psql_verbose("SELECT hasched.fail($id, '$token', 'boom again')");
is($rc, 0, 'fail() repeated with the same token succeeds') or diag($err);
is($out, 'failed', 'and returns the job\'s state');
is($node->runs_of($id), $runs, 'no second run row: the failure is recorded once');
is($node->job($id, 'last_error'), 'boom', 'the first error stays');
like($node->query_error("SELECT hasched.complete($id, '$token', '{}')"),
	qr/ERROR:\s+JQ006/, 'complete() with the token of a recorded failure is JQ006');

# the last attempt: dead; the repeat returns dead
$node->query("UPDATE hasched.job SET run_at = now() WHERE id = $id");
(undef, $token) = claim_one('work');
is($node->query("SELECT hasched.fail($id, '$token', 'no', retry => false)"), 'dead', 'the job is dead');
is($node->query("SELECT hasched.fail($id, '$token', 'no', retry => false)"), 'dead',
	'the repeat returns dead and changes nothing');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id = $id"), '2',
	'one run row per failed attempt');

# ---------------------------------------------------------------------------
# complete(ids[], tokens[])
# ---------------------------------------------------------------------------
$node->query(q{SELECT hasched.submit_many('work', ARRAY['{"b":1}', '{"b":2}', '{"b":3}']::jsonb[])});
my @batch = split /\n/,
  $node->query(q{SELECT job_id || '|' || token FROM hasched.claim('work', 'w1', 3) ORDER BY job_id});
is(scalar @batch, 3, 'three jobs claimed for the batch');
my @ids = map { (split /\|/)[0] } @batch;
my @toks = map { (split /\|/)[1] } @batch;
my $ids = join(',', @ids);
my $toks = join(',', map { "'$_'" } @toks);
is($node->query("SELECT hasched.complete(ARRAY[$ids]::bigint[], ARRAY[$toks])"), '3', 'the batch is recorded');
is($node->query("SELECT hasched.complete(ARRAY[$ids]::bigint[], ARRAY[$toks])"), '3',
	'the batch repeated returns the whole count');
my @bad = @toks;
$bad[1] = "$e:1:999999";
my $badtoks = join(',', map { "'$_'" } @bad);
like($node->query_error("SELECT hasched.complete(ARRAY[$ids]::bigint[], ARRAY[$badtoks])"),
	qr/ERROR:\s+JQ006: stale lease tokens for 1 of 3 jobs\n.*Jobs with a stale token: $ids[1]\./,
	'one truly stale token among repeats: JQ006 naming only it');

# ---------------------------------------------------------------------------
# a repeat racing the first report
# ---------------------------------------------------------------------------
$id = $node->query(q{SELECT hasched.submit('work', '{"n": 5}')});
(undef, $token) = claim_one('work');
my $first = $node->background_psql('postgres', on_error_stop => 1);
$first->query_safe('BEGIN');
$first->query_safe("SELECT hasched.complete($id, '$token', '{\"racer\": 1}')");
my $second = $node->background_psql('postgres', on_error_stop => 0);
$second->query_until(qr/started/, "\\echo started\nSELECT hasched.complete($id, '$token', '{\"racer\": 2}');\n\\echo done-second\n");
ok($node->poll(
		"SELECT count(*) > 0 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%racer\": 2%'"),
	'the repeat waits for the first report\'s row lock');
$first->query_safe('COMMIT');
$second->{timeout}->start;
$second->{run}->pump until $second->{stdout} =~ /done-second/ || $second->{timeout}->is_expired;
unlike($second->{stderr}, qr/ERROR/, 'the repeat succeeds once the first commits')
  or diag($second->{stderr});
is($node->job($id, 'result::text'), '{"racer": 1}', 'the first result is the one recorded');
$first->quit;
$second->quit;

# ---------------------------------------------------------------------------
# hasched.listen()
# ---------------------------------------------------------------------------
like($node->query_error(q{SELECT hasched.listen('nope')}), qr/ERROR:\s+JQ010: queue "nope" does not exist/,
	'listen() on an unknown queue is JQ010');
like($node->query_error(q{SELECT hasched.listen('sqlq')}),
	qr/ERROR:\s+JQ016: queue "sqlq" is not a pull queue/, 'listen() on an sql queue is JQ016');
like($node->query_error(q{SELECT hasched.listen('work')}, extra_params => [ '-U', 'sub' ]),
	qr/ERROR:\s+42501: permission denied for function listen/, 'a submitter may not listen');

my $listener = $node->background_psql('postgres', on_error_stop => 1, extra_params => [ '-U', 'wrk' ]);
is($listener->query_safe(q{SELECT hasched.listen('work')}), 'hasched.work', 'listen() returns the channel');

# psql prints notifications that arrived when it runs the next command
sub notified
{
	my $out = $listener->query_safe('SELECT 1');
	return $out =~ /Asynchronous notification "hasched.work"/ ? 1 : 0;
}
is(notified(), 0, 'no notification before any submit');
$node->query(q{SELECT hasched.submit('work', '{"n": 6}')});
is(notified(), 1, 'a committed submit of a due job notifies the listener');
$node->query(q{BEGIN; SELECT hasched.submit('work', '{"n": 7}'); ROLLBACK;});
is(notified(), 0, 'a rolled-back submit notifies nobody');
$node->query(q{SELECT hasched.submit('work', '{"n": 8}', run_at => now() + interval '1 hour')});
is(notified(), 0, 'a job due later notifies nobody (polling finds it)');
$node->query(q{SELECT hasched.submit_many('work', ARRAY['{}', '{}', '{}']::jsonb[])});
is(notified(), 1, 'submit_many notifies (once per transaction)');
$node->query(q{INSERT INTO hasched.queue (name) VALUES ('unlistened'); SELECT hasched.submit('unlistened', '{}')});
is(notified(), 0, 'a submit to a queue nobody listens to notifies nobody');
$listener->quit;

done_testing();
