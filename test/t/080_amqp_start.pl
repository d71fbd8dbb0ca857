# Copyright: hasched contributors
#
# 080_amqp_start.pl: hasched.start(job_id, token), what a worker calls when
# it receives a job's message from the broker (the AMQP contract in the
# README, "RabbitMQ transport"); its four cases:
#
#   - a job dispatched under that token becomes running, its lease (the
#     queue's) from now, and start() returns payload, timeout, lease_until;
#   - a job running under that same token (a redelivery after the worker
#     that started it died): succeeds again and renews the lease;
#   - a job whose attempt under that token already recorded its outcome
#     (complete(), or fail()): no row, nothing changed;
#   - any other token (a newer attempt, a cancelled job, a token that never
#     held the job): JQ006, nothing changed; a malformed token JQ013; only
#     hasched_worker may call it;
#   - the array form, start(job_ids[], tokens[], worker): one row per
#     message in their order, with its outcome (run, finished, or stale
#     with the job's state: an outcome, not an error); a dispatch in flight
#     waited for; bad arguments are errors and start nothing.
#
# The dispatch itself (the dispatcher's UPDATE after the broker's confirm)
# is played here by a superuser's UPDATE of the row with a fresh token; the
# dispatcher tests (081-083) dispatch through a real broker.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/080_amqp_start.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $node = HaschedCluster->primary('main');
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport, lease, backoff_base, backoff_max)
	     VALUES ('mq', 'amqp', '10 minutes', '1 hour', '1 hour');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	CREATE ROLE sub LOGIN IN ROLE hasched_submitter;
});

# what the dispatcher does once the broker confirmed the message: a new
# attempt and lease token, state dispatched; returns the token
sub dispatch
{
	my ($id) = @_;
	return $node->query(
		qq{
		UPDATE hasched.job SET state = 'dispatched', attempt = attempt + 1,
		       epoch = (SELECT max(epoch) FROM hasched.epoch),
		       lease_id = nextval('hasched.lease_id_seq'),
		       lease_until = now() + interval '1 minute', started_at = NULL
		 WHERE id = $id
		RETURNING epoch || ':' || attempt || ':' || lease_id});
}

sub start
{
	my ($id, $token) = @_;
	return $node->query(
		"SELECT payload::text || '|' || timeout::text || '|' || (lease_until > now() + interval '9 minutes')::text"
		  . " FROM hasched.start($id, '$token', 'w1')",
		extra_params => [ '-U', 'wrk' ]);
}

# ---------------------------------------------------------------------------
# dispatched -> running
# ---------------------------------------------------------------------------
my $id = $node->query(
	q{SELECT hasched.submit('mq', '{"n": 1}', timeout => '42 seconds')});
my $token = dispatch($id);
is(start($id, $token), '{"n": 1}|00:00:42|true',
	'start() of a dispatched job returns its payload, timeout and the queue lease from now');
is($node->job($id, q{state || ' ' || worker || ' ' || (started_at IS NOT NULL)}),
	'running w1 true', 'the job is running, started, with the worker named');

# ---------------------------------------------------------------------------
# running under the same token (a redelivery): the lease is renewed
# ---------------------------------------------------------------------------
$node->query("UPDATE hasched.job SET lease_until = now() + interval '1 second' WHERE id = $id");
is(start($id, $token), '{"n": 1}|00:00:42|true',
	'start() again with the same token (a redelivery) succeeds');
is($node->job($id, q{state || ' ' || (lease_until > now() + interval '9 minutes')}),
	'running true', 'and renews the lease from now');

# ---------------------------------------------------------------------------
# finished with that token: no row, nothing changes
# ---------------------------------------------------------------------------
$node->query("SELECT hasched.complete($id, '$token', '{\"ok\": 1}')",
	extra_params => [ '-U', 'wrk' ]);
my $before = $node->job($id, q{state || ' ' || result::text || ' ' || finished_at});
is(start($id, $token), '', 'start() after complete() with that token returns no row');
is($node->job($id, q{state || ' ' || result::text || ' ' || finished_at}),
	$before, 'and changes nothing');

my $id2 = $node->query(q{SELECT hasched.submit('mq', '{"n": 2}', max_attempts => 1)});
my $token2 = dispatch($id2);
start($id2, $token2);
$node->query("SELECT hasched.fail($id2, '$token2', 'boom', false)",
	extra_params => [ '-U', 'wrk' ]);
is(start($id2, $token2), '', 'start() after fail() with that token returns no row');
is($node->job($id2, 'state'), 'dead', 'the failed job stays dead');

# ---------------------------------------------------------------------------
# any other token: JQ006
# ---------------------------------------------------------------------------
my $id3 = $node->query(q{SELECT hasched.submit('mq', '{"n": 3}')});
my $old = dispatch($id3);
$node->query("UPDATE hasched.job SET state = 'pending' WHERE id = $id3");
my $new = dispatch($id3);
like($node->query_error("SELECT * FROM hasched.start($id3, '$old')"),
	qr/ERROR:\s+JQ006: stale lease token \Q$old\E for job $id3/,
	'the token of an earlier dispatch (re-dispatched since) is JQ006');
is($node->job($id3, 'state'), 'dispatched', 'and the job stays dispatched');
my ($e, $a, $l) = split /:/, $new;
my $never = "$e:$a:" . ($l + 1000);
like($node->query_error("SELECT * FROM hasched.start($id3, '$never')"),
	qr/ERROR:\s+JQ006/, 'a token that never held the job is JQ006');
$node->query("SELECT hasched.cancel($id3)");
like($node->query_error("SELECT * FROM hasched.start($id3, '$new')"),
	qr/ERROR:\s+JQ006: .*\n.*The job is cancelled/,
	'the token of a job cancelled while dispatched is JQ006, saying it is cancelled');
is($node->job($id3, 'state'), 'cancelled', 'and it stays cancelled');

like($node->query_error("SELECT * FROM hasched.start($id3, 'nonsense')"),
	qr/ERROR:\s+JQ013: malformed lease token/, 'a malformed token is JQ013');
like($node->query_error("SELECT * FROM hasched.start(999999, '$new')"),
	qr/ERROR:\s+JQ014: job 999999 does not exist/, 'an unknown job is JQ014');
like(
	$node->query_error("SELECT * FROM hasched.start($id3, '$new')",
		extra_params => [ '-U', 'sub' ]),
	qr/permission denied for function start/,
	'a submitter may not call start()');

# ---------------------------------------------------------------------------
# the array form: start(job_ids[], tokens[], worker), one row per message
# ---------------------------------------------------------------------------
sub start_many
{
	my ($ids, $tokens, %o) = @_;
	my $sql = "SELECT job_id || '|' || outcome || '|' || coalesce(state, '(null)') || '|'"
	  . " || coalesce(payload::text, '') || '|' || coalesce((lease_until > now() + interval '9 minutes')::text, '')"
	  . " FROM hasched.start(ARRAY[" . join(',', @$ids) . "]::bigint[],"
	  . " ARRAY[" . join(',', map { "'$_'" } @$tokens) . "]::text[], 'w2')";
	return $o{error}
	  ? $node->query_error($sql, extra_params => [ '-U', $o{user} // 'wrk' ])
	  : $node->query($sql, extra_params => [ '-U', $o{user} // 'wrk' ]);
}

my @m = map { $node->query(qq{SELECT hasched.submit('mq', '{"m": $_}')}) } 1 .. 5;
my @t = map { dispatch($_) } @m;
# $m[3]: finished under its token; $m[4]: re-dispatched (its first token stale)
$node->query("UPDATE hasched.job SET state = 'running', started_at = now() WHERE id = $m[3]");
$node->query("SELECT hasched.complete($m[3], '$t[3]', '{}')", extra_params => [ '-U', 'wrk' ]);
$node->query("UPDATE hasched.job SET state = 'pending' WHERE id = $m[4]");
my $t4new = dispatch($m[4]);
my $started = start_many(
	[ $m[1], $m[0], $m[3], $m[4], 999999, $m[0], $m[2] ],
	[ $t[1], $t[0], $t[3], $t[4], $t[0], $t[0], $t[2] ]);
is($started, join("\n",
		"$m[1]|run|running|{\"m\": 2}|true",
		"$m[0]|run|running|{\"m\": 1}|true",
		"$m[3]|finished|succeeded||",
		"$m[4]|stale|dispatched||",
		"999999|stale|(null)||",
		"$m[0]|run|running|{\"m\": 1}|true",
		"$m[2]|run|running|{\"m\": 3}|true"),
	'one row per message in their order: run (twice for a job given twice), finished, stale with the job\'s state, no such job');
is($node->query("SELECT string_agg(state || ' ' || coalesce(worker, '-'), ',' ORDER BY id) FROM hasched.job WHERE id IN ($m[0], $m[1], $m[2], $m[4])"),
	'running w2,running w2,running w2,dispatched -', 'the jobs to run are running under the worker named; the stale one is untouched');
is(start_many([ $m[1] ], [ $t[1] ]), "$m[1]|run|running|{\"m\": 2}|true",
	'a redelivery of a running job runs again (its lease renewed)');

# a dispatch not yet recorded: asked again for up to 20 ms, then stale (pending)
my $p = $node->query(q{SELECT hasched.submit('mq', '{"m": 6}')});
my ($pe) = split /:/, $t[0];
my $t0 = time;
is(start_many([$p], ["$pe:1:999999999"]), "$p|stale|pending||",
	'a token for the next attempt of a pending job (its dispatch in flight) is stale after the wait');
cmp_ok(time - $t0, '>=', 0.02, 'which lasted at least 20 ms');
is($node->job($p, 'state'), 'pending', 'and the job stays pending');

# bad arguments: an error, and nothing starts
my $b = $node->query(q{SELECT hasched.submit('mq', '{"m": 7}')});
my $bt = dispatch($b);
like(start_many([ $b, $m[0] ], [ $bt, 'nonsense' ], error => 1),
	qr/ERROR:\s+JQ013: malformed lease token "nonsense"/, 'a malformed token: JQ013');
like(start_many([ $b, $m[0] ], [$bt], error => 1),
	qr/ERROR:\s+JQ013: 2 job ids given with 1 tokens/, 'arrays of different lengths: JQ013');
like($node->query_error("SELECT * FROM hasched.start(ARRAY[$b, NULL], ARRAY['$bt', '$bt'])", extra_params => [ '-U', 'wrk' ]),
	qr/ERROR:\s+JQ013: job id and token 2 must not be null/, 'a NULL element: JQ013 naming it');
like($node->query_error("SELECT * FROM hasched.start(array_fill(${b}::bigint, ARRAY[10001]), array_fill('${bt}'::text, ARRAY[10001]))",
		extra_params => [ '-U', 'wrk' ]),
	qr/ERROR:\s+JQ013: at most 10000 jobs can be started in one call, not 10001/, 'more than 10000: JQ013');
is($node->job($b, 'state'), 'dispatched', 'after each, the job is still dispatched');
like(start_many([$b], [$bt], user => 'sub', error => 1),
	qr/permission denied for function start/, 'a submitter may not call the array form either');
is($node->query("SELECT count(*) FROM hasched.start(ARRAY[]::bigint[], ARRAY[]::text[])",
		extra_params => [ '-U', 'wrk' ]), '0', 'empty arrays: no row');

done_testing();
