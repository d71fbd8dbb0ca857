
# Copyright: hasched contributors
#
# 088_amqp_publish_deadline.pl: a broker that stops reading its sockets
# (here the real RabbitMQ stopped with SIGSTOP: its connections stay open,
# the kernel's buffers fill), as a resource alarm or a hung broker does.
#
#   - the dispatcher's publish of large messages blocks once the buffers
#     are full; hasched.amqp_confirm_timeout is its deadline: the batch
#     fails with "the broker did not read a publish within
#     hasched.amqp_confirm_timeout", recorded as the jobs' last_error, and
#     they stay pending (before, the send waited until the broker read
#     again, with no limit);
#   - meanwhile the dispatcher answers: a reload is taken, and its
#     reconnects to the stopped broker fail on the handshake's timeout;
#   - once the broker reads again, every job is dispatched.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/088_amqp_publish_deadline.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $mq = HaschedRabbitMQ->new('mq088');
$mq->start;

my $node = HaschedCluster->primary('main', conf => $mq->hasched_conf . q{
hasched.amqp_queue_type = 'classic'
hasched.amqp_confirm_timeout = '1s'
hasched.amqp_connect_timeout = '500ms'
hasched.amqp_reconnect_interval = '200ms'
hasched.circuit_open_duration = '1s'
hasched.dispatch_lease = '10min'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('big', 'amqp');
});

my $first = $node->query(q{SELECT hasched.submit('big', '{"n": 0}')});
ok($node->poll_within(60, "SELECT state = 'dispatched' FROM hasched.job WHERE id = $first"),
	'the dispatcher is connected: a job is dispatched');

# 40 messages of 900 kB: more than the socket buffers of both sides hold
ok($mq->pause, 'the broker stopped reading (SIGSTOP to beam.smp)');
my $t0 = time;
my $ids = $node->query(
	q{SELECT string_agg(id::text, ',') FROM unnest(hasched.submit_many('big',
		ARRAY(SELECT jsonb_build_object('n', i, 'blob', repeat('x', 900000))
		        FROM generate_series(1, 40) i))) id});
my $why = 'the broker did not read a publish within hasched.amqp_confirm_timeout (1000 ms)';
ok($node->poll_within(60,
		"SELECT count(*) > 0 FROM hasched.job WHERE id IN ($ids) AND last_error LIKE '%$why%'"),
	'a publish the broker does not read fails after hasched.amqp_confirm_timeout');
my $secs = time - $t0;
note(sprintf('the batch failed %.1f s after the submit', $secs));
cmp_ok($secs, '<', 30, 'within the deadline (and a generous margin), not when the broker reads again');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($ids) AND state <> 'pending'"), '0',
	'the jobs of the failed batch wait pending');

# the dispatcher still answers: a reload is taken (its reconnects to the
# stopped broker then wait for the handshake as long as the new setting)
$node->append_conf('postgresql.conf', "hasched.amqp_connect_timeout = '600ms'\n");
$node->reload;
my $health = '';
my $until = time + 60;
while (time < $until)
{
	$health = $node->query(q{SELECT detail FROM hasched.health() WHERE component = 'dispatcher'});
	last if $health =~ /did not answer the AMQP handshake within hasched\.amqp_connect_timeout \(600 ms\)/;
	usleep(200_000);
}
like($health, qr/did not answer the AMQP handshake within hasched\.amqp_connect_timeout \(600 ms\)/,
	'meanwhile the dispatcher took a reload and reconnects (health names the new timeout)');

$mq->resume;
ok($node->poll_within(180, "SELECT count(*) = 40 FROM hasched.job WHERE id IN ($ids) AND state = 'dispatched'"),
	'the broker reads again: all 40 jobs are dispatched');

$node->stop;
$mq->stop;
done_testing();
