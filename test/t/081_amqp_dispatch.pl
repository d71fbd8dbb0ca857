# Copyright: hasched contributors
#
# 081_amqp_dispatch.pl: the RabbitMQ dispatcher against a real broker
# (test/perl/HaschedRabbitMQ.pm).
#
#   - jobs of an amqp queue reach the broker's per-band queues as the AMQP
#     contract says (routing key, message_id, persistent, JSON body with the
#     token), and become dispatched; the token in the message starts the job;
#   - a job becomes dispatched only after the broker's confirm: with the
#     broker refusing a queue's messages (a reject-publish policy: basic.nack)
#     the jobs stay pending with the nack in last_error, the queue's circuit
#     opens (an event row, hasched.circuits, health) while another queue goes
#     on; once the broker accepts again, the half-open probe closes the
#     circuit and the jobs drain;
#   - a message the broker returns as unroutable (its queue deleted behind
#     the dispatcher's back) leaves its job pending; the queue is declared
#     again and the job dispatched;
#   - a dispatched job that no worker starts within hasched.dispatch_lease is
#     dispatched again under a new attempt and token; the old token is JQ006;
#   - a paused queue (hasched.pause_queue) is not dispatched until resumed;
#   - a queue's concurrency bounds its jobs dispatched or running: the others
#     wait pending, one more is dispatched when one finishes; 0 = unlimited.
#
# The broker queues are classic here because of the nack case: a quorum
# queue with a reject-publish max-length policy lets a message in first and
# still refuses publishes after the policy is cleared, while it holds it.
# The default, quorum queues, is used by 083.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/081_amqp_dispatch.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

my $mq = HaschedRabbitMQ->new('mq071');
$mq->start;

my $node = HaschedCluster->primary('main', conf => $mq->hasched_conf . q{
hasched.amqp_queue_type = 'classic'
hasched.circuit_open_duration = '2s'
hasched.circuit_min_calls = 3
hasched.dispatch_lease = '4s'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport, default_max_attempts) VALUES
	    ('mq', 'amqp', 10), ('refused', 'amqp', 10), ('other', 'amqp', 10);
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
});

# ---------------------------------------------------------------------------
# dispatch, the message, start()
# ---------------------------------------------------------------------------
my $id = $node->query(q{SELECT hasched.submit('mq', '{"n": 1}', priority => 'high', timeout => '7 seconds')});
my $low = $node->query(q{SELECT hasched.submit('mq', '{"n": 2}', priority => 'low')});
ok($node->poll_within(30, "SELECT count(*) FROM hasched.job WHERE id IN ($id, $low) AND state = 'dispatched'", '2'),
	'the jobs of the amqp queue become dispatched');
my ($token) = $node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $id");
my @m = $mq->get('hasched.mq.high', 10);
is(scalar @m, 1, 'one message in hasched.mq.high');
is($m[0]{message_id}, "$id:1", 'its message_id is job_id:attempt');
my $submitter = $node->query('SELECT current_user');
like($m[0]{body}, qr/^\{"job_id": $id, "attempt": 1, "lease_token": "\Q$token\E", "queue": "mq", "tenant": "\Q$submitter\E", "priority": \d, "timeout_ms": 7000, "payload": \{"n": 1\}\}$/,
	'its body carries the job id, attempt, the token of the row, queue, tenant (the submitting role), priority, timeout and payload');
my @l = $mq->get('hasched.mq.low', 10);
is(scalar @l, 1, 'the low-priority job went to hasched.mq.low');
is($node->query("SELECT payload::text FROM hasched.start($id, '$token')", extra_params => [ '-U', 'wrk' ]),
	'{"n": 1}', 'the token of the message starts the job');
is($node->job($id, 'state'), 'running', 'the job is running');
my $health = $node->query("SELECT status || ' ' || detail FROM hasched.health() WHERE component = 'dispatcher'");
like($health, qr/^ok connected to broker 1 of 1, amqp:\/\/guest:\*\*\*\@127\.0\.0\.1:\d+; pid \d+, \d+ jobs dispatched/,
	'health shows the dispatcher connected, the password hidden');

# ---------------------------------------------------------------------------
# nacks: the broker refuses a queue's messages
# ---------------------------------------------------------------------------
my ($rc, $out, $err) = $mq->ctl('set_policy', '--apply-to', 'queues', 'refuse',
	'^hasched\.refused\.', '{"max-length":0,"overflow":"reject-publish"}');
is($rc, 0, 'a reject-publish policy on the broker') or diag($err);
my @refused = map { $node->query("SELECT hasched.submit('refused', '{\"r\": $_}')") } 1 .. 5;
my $refused = join(',', @refused);
ok($node->poll_within(30,
	"SELECT state = 'open' FROM hasched.circuits WHERE kind = 'queue' AND name = 'refused'"),
	'the circuit of the refused queue opens');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($refused) AND state <> 'dispatched'"),
	'5', 'no refused job is dispatched (nothing without a confirm)');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $refused[0]"),
	qr/basic\.nack/, 'last_error says the broker refused the message');
is($node->query("SELECT count(*) > 0 FROM hasched.event WHERE kind = 'circuit' AND detail->>'circuit' = 'refused' AND detail->>'to' = 'open'"),
	't', 'the transition is an event row');
like($node->query("SELECT status || ' ' || detail FROM hasched.health() WHERE component = 'circuits'"),
	qr/^failed open: queue refused open since/, 'health shows the open circuit');
my $other = $node->query(q{SELECT hasched.submit('other', '{}')});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $other", 'dispatched'),
	'another queue is dispatched meanwhile');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($refused) AND state = 'dispatched'"),
	'0', 'the refused jobs still wait');
# no worker starts it: cancelled, so that its dispatch lease (4 s) cannot
# expire into the returns below and send a second message to the deleted
# queue (two returns of three calls would rightly open the circuit)
is($node->query("SELECT hasched.cancel($other)"), 't', 'the job of "other" is cancelled');

($rc, $out, $err) = $mq->ctl('clear_policy', 'refuse');
is($rc, 0, 'the policy is cleared') or diag($err);
ok($node->poll_within(30, "SELECT count(*) FROM hasched.job WHERE id IN ($refused) AND state = 'dispatched'", '5'),
	'once the broker accepts, the half-open probe passes and the jobs drain');
is($node->query("SELECT string_agg(detail->>'to', ',' ORDER BY id) FROM hasched.event WHERE kind = 'circuit' AND detail->>'circuit' = 'refused'"),
	'open,half_open,closed', 'the circuit went open, half_open, closed: each an event');

# ---------------------------------------------------------------------------
# returns: the broker queue deleted behind the dispatcher's back
# ---------------------------------------------------------------------------
($rc, $out, $err) = $mq->ctl('delete_queue', 'hasched.other.medium');
is($rc, 0, 'the broker queue of "other" is deleted') or diag($err);
my $ret = $node->query(q{SELECT hasched.submit('other', '{"ret": 1}')});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $ret", 'dispatched'),
	'a job of that queue is dispatched in the end');
is($node->query("SELECT count(*) FROM hasched.event WHERE kind = 'circuit' AND detail->>'circuit' = 'other'"),
	'0', 'without opening its circuit');
my @r = $mq->get('hasched.other.medium', 10);
is(scalar(grep { $_->{message_id} =~ /^$ret:/ } @r), 1, 'its message is in the re-declared queue');
# the first publish to the deleted queue (this job's, or the re-dispatch of
# an earlier job of "other" whose dispatch lease ran out) came back
like(slurp_file($node->logfile),
	qr/the message of job \d+ came back: the broker returned the message as unroutable: 312 NO_ROUTE/,
	'the first publish to the deleted queue was returned (NO_ROUTE), logged');
is($node->query("SELECT attempt FROM hasched.job WHERE id = $ret"), '1',
	'a publish the broker did not confirm is not an attempt: the dispatched message of the new job is attempt 1');

# ---------------------------------------------------------------------------
# the dispatch lease: not started within 4 s -> dispatched again
# ---------------------------------------------------------------------------
my $lease_id = $node->query(q{SELECT hasched.submit('mq', '{"lease": 1}')});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $lease_id", 'dispatched'),
	'a job is dispatched');
my $t1 = $node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $lease_id");
ok($node->poll_within(30,
	"SELECT state = 'dispatched' AND attempt = 2 FROM hasched.job WHERE id = $lease_id"),
	'not started within the dispatch lease, it is dispatched again under attempt 2');
like($node->runs_of($lease_id), qr/^1:dispatch_expired:not started within hasched\.dispatch_lease/,
	'the first attempt is recorded as dispatch_expired');
like($node->query_error("SELECT * FROM hasched.start($lease_id, '$t1')"),
	qr/ERROR:\s+JQ006/, 'the first message\'s token is stale (JQ006)');
my $t2 = $node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $lease_id");
is($node->query("SELECT count(*) FROM hasched.start($lease_id, '$t2')"), '1',
	'the second message\'s token starts it');

# ---------------------------------------------------------------------------
# a paused queue (hasched.pause_queue) is not dispatched until resumed
# ---------------------------------------------------------------------------
$node->query(q{SELECT hasched.pause_queue('other', 'test')});
my $paused = $node->query(q{SELECT hasched.submit('other', '{"paused": 1}')});
sleep 2;
is($node->job($paused, 'state'), 'pending', 'a job of a paused amqp queue is not dispatched');
$node->query(q{SELECT hasched.resume_queue('other')});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $paused", 'dispatched'),
	'once the queue is resumed it is');

# ---------------------------------------------------------------------------
# concurrency: at most 3 of the queue's jobs dispatched or running
# ---------------------------------------------------------------------------
$node->query(q{INSERT INTO hasched.queue (name, transport, concurrency, default_max_attempts)
	VALUES ('narrow', 'amqp', 3, 100)});
$node->query(q{SELECT hasched.submit_many('narrow', array_fill('{}'::jsonb, ARRAY[10]))});
my $active = q{SELECT count(*) FROM hasched.job WHERE queue = 'narrow' AND state IN ('dispatched', 'running')};
ok($node->poll_within(30, $active, '3'), 'a queue of concurrency 3: three of its ten jobs are dispatched');
# sampled over 5 s, which spans the 4 s dispatch lease: re-dispatches too
my $most = 0;
for (1 .. 50)
{
	my $n = $node->query($active);
	$most = $n if $n > $most;
	usleep(100_000);
}
is($most, 3, 'never more than three dispatched or running, re-dispatches included');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE queue = 'narrow' AND state IN ('scheduled', 'pending', 'failed')}),
	'7', 'the other seven wait');
my ($nid, $ntoken) = split /\|/, $node->query(
	q{SELECT id || '|' || epoch || ':' || attempt || ':' || lease_id FROM hasched.job
	   WHERE queue = 'narrow' AND state = 'dispatched' ORDER BY id LIMIT 1});
$node->query("SELECT count(*) FROM hasched.start($nid, '$ntoken')", extra_params => [ '-U', 'wrk' ]);
is($node->query($active), '3', 'a started job still takes its place');
$node->query("SELECT hasched.complete($nid, '$ntoken', NULL)", extra_params => [ '-U', 'wrk' ]);
ok($node->poll_within(30,
	"SELECT count(*) FILTER (WHERE state = 'succeeded') || ' ' || count(*) FILTER (WHERE state IN ('dispatched', 'running'))"
	  . " FROM hasched.job WHERE queue = 'narrow'", '1 3'),
	'once it finished, one more is dispatched: three again');
$node->query(q{UPDATE hasched.queue SET concurrency = 0 WHERE name = 'narrow'});
ok($node->poll_within(30, $active, '9'), 'concurrency 0 (unlimited): every job is dispatched');

$node->stop;
$mq->stop;
done_testing();
