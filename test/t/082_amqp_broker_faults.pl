# Copyright: hasched contributors
#
# 082_amqp_broker_faults.pl: the dispatcher when brokers are missing, wrong
# or killed (real rabbitmq-server, test/perl/HaschedRabbitMQ.pm).
#
#   - hasched.amqp_url with a malformed entry and a broker that is not
#     running when the server starts: the server starts, SQL queues keep
#     working, health says which brokers failed and why, hasched.circuits
#     shows the broker's circuit open; jobs of the amqp queue wait pending;
#     once the broker runs, they are dispatched;
#   - the broker SIGKILLed during a stream of submits: submits go on, the
#     broker's circuit opens, no job is lost: after the restart every job is
#     dispatched and has a message in the broker (prints the time to drain).
#
# The broker queues are classic here: a single-node quorum queue of
# RabbitMQ 3.10.8 recovered after a SIGKILL stayed without a leader ("leader
# not known", rabbitmq/rabbitmq-server#10070) for minutes in our runs, so
# nothing published to it was confirmed.  Classic durable queues keep
# confirmed persistent messages across the SIGKILL.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/082_amqp_broker_faults.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time);

my $mq = HaschedRabbitMQ->new('mq072');
my $dead_port = PostgreSQL::Test::Cluster::get_free_port();
my $hport = PostgreSQL::Test::Cluster::get_free_port();
my $url = $mq->url;

my $node = HaschedCluster->primary('main', conf => qq{
hasched.amqp_url = 'amqp//bad-url, amqp://guest:guest\@127.0.0.1:$dead_port, $url'
hasched.amqp_reconnect_interval = '200ms'
hasched.amqp_connect_timeout = '500ms'
hasched.circuit_open_duration = '2s'
hasched.dispatch_batch = 50
hasched.health_port = $hport
hasched.amqp_queue_type = 'classic'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('mq', 'amqp'), ('sqlq', 'sql');
});

# ---------------------------------------------------------------------------
# no broker at start
# ---------------------------------------------------------------------------
my $sql = $node->submit_sql('SELECT 1');
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $sql", 'succeeded'),
	'an SQL job runs while no broker is reachable');
my $waiting = $node->query(q{SELECT hasched.submit('mq', '{"early": 1}')});
ok($node->poll_within(30,
	"SELECT count(*) FROM hasched.circuits WHERE kind = 'broker' AND state <> 'closed'", '2'),
	'hasched.circuits shows both reachable-looking brokers\' circuits open');
my $health = $node->query("SELECT status || ': ' || detail FROM hasched.health() WHERE component = 'dispatcher'");
like($health, qr/^failed: no broker: no broker reachable \(jobs of amqp queues wait\): broker 1 of 3, amqp\/\/bad-url: malformed broker URL/,
	'health: the dispatcher reaches no broker, and says the first entry is malformed');
like($health, qr/broker 2 of 3, amqp:\/\/guest:\*\*\*\@127\.0\.0\.1:$dead_port: (cannot connect|circuit open)/,
	'and why the second and third fail');
like(slurp_file($node->logfile), qr/broker 1 of hasched.amqp_url, "amqp\/\/bad-url", is unusable: malformed broker URL/,
	'the log says which entry of hasched.amqp_url is malformed');
is($node->job($waiting, 'state'), 'pending', 'the amqp job waits, pending');
my $metrics = '';
if (my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $hport, Timeout => 5))
{
	print $sock "GET /metrics HTTP/1.0\r\n\r\n";
	local $/;
	$metrics = <$sock> // '';
}
like($metrics, qr/^hasched_circuit_state\{kind="broker",name="127\.0\.0\.1:$dead_port\/"\} [12]$/m,
	'GET /metrics shows the circuit state of the broker (open or half open)');
like($metrics, qr/^hasched_component_healthy\{component="dispatcher"\} 0$/m,
	'and the dispatcher unhealthy');

$mq->start;
my $t0 = time;
ok($node->poll_within(60, "SELECT state FROM hasched.job WHERE id = $waiting", 'dispatched'),
	'once the broker runs, the waiting job is dispatched');
diag(sprintf('dispatched %.1f s after the broker accepted connections (circuit_open_duration 2 s)',
		time - $t0));
like($node->query("SELECT detail FROM hasched.health() WHERE component = 'dispatcher'"),
	qr/^connected to broker 3 of 3/, 'through the third broker of the list');

# ---------------------------------------------------------------------------
# SIGKILL during a stream of submits
# ---------------------------------------------------------------------------
my @ids;
my $killed_at;
for my $round (1 .. 30)
{
	push @ids, split /\n/, $node->query(
		"SELECT unnest(hasched.submit_many('mq', array_fill('{\"s\": $round}'::jsonb, ARRAY[10])))");
	if ($round == 10)
	{
		$mq->kill9;
		$killed_at = time;
	}
	select(undef, undef, undef, 0.05);
}
is(scalar @ids, 300, 'every submit of the stream succeeded, broker or not');
ok($node->poll_within(30,
	"SELECT state <> 'closed' FROM hasched.circuits WHERE kind = 'broker' AND name LIKE '%:" . $mq->port . "%'"),
	'the killed broker\'s circuit opens');
my $idlist = join(',', @ids);
my $left = $node->query("SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND state <> 'dispatched'");
cmp_ok($left, '>', 0, "jobs wait while the broker is down ($left of 300)");

my $t_restart = time;
$mq->start;
my $t_up = time;
ok($node->poll_within(90,
	"SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND state = 'dispatched'", '300'),
	'after the restart every job of the stream is dispatched');
my $t_done = time;
diag(sprintf('broker down %.1f s; restart took %.1f s; drained %.1f s after it accepted connections (%d jobs were waiting)',
		$t_restart - $killed_at, $t_up - $t_restart, $t_done - $t_up, $left));

# none lost: each job has a message in the broker (confirmed messages
# survive the SIGKILL; jobs published again may have two)
my %seen;
for my $m ($mq->get('hasched.mq.medium', 2000))
{
	$seen{$1} = 1 if $m->{body} =~ /^\{"job_id": (\d+),/;
}
is(scalar(grep { !$seen{$_} } @ids), 0, 'every job of the stream has a message in the broker');
is($node->query("SELECT count(*) FROM hasched.event WHERE kind = 'circuit' AND detail->>'kind' = 'broker' AND detail->>'to' = 'open'") > 0 ? 1 : 0,
	1, 'the broker circuit\'s opening is an event');

$node->stop;
$mq->stop;
done_testing();
