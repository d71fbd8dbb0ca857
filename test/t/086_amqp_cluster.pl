# Copyright: hasched contributors
#
# 086_amqp_cluster.pl: the dispatcher on a three-node RabbitMQ cluster with
# quorum queues (real rabbitmq-server 3.10, test/perl/HaschedRabbitMQ.pm),
# when the broker it publishes to, which also leads the queue, is
# SIGKILLed while jobs fall due:
#   - the dispatcher moves to the next broker of hasched.amqp_url and every
#     job is dispatched while the killed node is still down, within 30 s
#     (the queue's circuit, open after the nacks of the election, probes
#     every 2 s: the figure is printed) (RabbitMQ 3.10
#     nacks every publish of a channel that first published to the queue
#     while its leader was down, until that node is back: the dispatcher
#     publishes on a new channel after a nack; without that, the jobs
#     waited until the node came back);
#   - each job has its message in the surviving brokers.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/086_amqp_cluster.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $m1 = HaschedRabbitMQ->new('c1');
my $m2 = HaschedRabbitMQ->new('c2', cluster_with => $m1);
my $m3 = HaschedRabbitMQ->new('c3', cluster_with => $m1);
my $t0 = time;
$_->start(nowait => 1) for ($m1, $m2, $m3);
$_->wait_started(120) for ($m1, $m2, $m3);
$_->join_cluster($m1) for ($m2, $m3);
my $status = $m1->ctl('cluster_status', '--formatter', 'json') // '';
my ($running) = $status =~ /"running_nodes":\[([^\]]*)\]/;
is(scalar(() = ($running // '') =~ /rabbit\d+\@localhost/g), 3,
	'three brokers run as one cluster');
diag(sprintf('cluster of 3 up in %.1f s', time - $t0));

my $urls = join(',', map { $_->url } ($m1, $m2, $m3));
my $node = HaschedCluster->primary('main', conf => qq{
hasched.amqp_url = '$urls'
hasched.amqp_reconnect_interval = '200ms'
hasched.circuit_open_duration = '2s'
hasched.dispatch_batch = 10
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('cq', 'amqp');
});

# the dispatcher declares the quorum queues on broker 1: it leads them
my $first = $node->query(q{SELECT hasched.submit('cq', '{"first": 1}')});
ok($node->poll_within(60, "SELECT state FROM hasched.job WHERE id = $first", 'dispatched'),
	'a job is dispatched through broker 1');
like($node->query("SELECT detail FROM hasched.health() WHERE component = 'dispatcher'"),
	qr/^connected to broker 1 of 3/, 'the dispatcher publishes to broker 1');
# every member running (a node that had just joined may start its member
# a little later)
my $online = '';
for (1 .. 60)
{
	$online = $m2->ctl('list_queues', '--no-table-headers', 'name', 'online') // '';
	last if $online =~ /hasched\.cq\.medium\s+\[(?:rabbit\d+\@localhost,? ?){3}\]/;
	select(undef, undef, undef, 0.5);
}
like($online, qr/hasched\.cq\.medium\s+\[(?:rabbit\d+\@localhost,? ?){3}\]/,
	'the quorum queue has a running member on each node');

# jobs fall due every 10 ms for 3 s; broker 1 dies 0.5 s into it
my $ids = $node->query(
	q{SELECT string_agg(hasched.submit('cq', jsonb_build_object('i', i),
	         run_at => clock_timestamp() + interval '500 ms' + i * interval '10 ms')::text, ',')
	  FROM generate_series(1, 300) i});
select(undef, undef, undef, 1.0);
$m1->kill9;
my $killed = time;
my $ok = $node->poll_within(30,
	"SELECT count(*) FROM hasched.job WHERE id IN ($ids) AND state = 'dispatched'", '300');
ok($ok, 'with broker 1 down, every job is dispatched through another broker');
diag(sprintf('all 300 dispatched %.1f s after the kill', time - $killed)) if $ok;
diag($node->query("SELECT state, count(*), min(last_error) FROM hasched.job WHERE id IN ($ids) GROUP BY 1")
	  . "\n" . ($m2->ctl('list_queues', 'name', 'leader', 'online', 'members') // 'list_queues failed'))
  unless $ok;
like($node->query("SELECT detail FROM hasched.health() WHERE component = 'dispatcher'"),
	qr/^connected to broker [23] of 3/, 'the dispatcher moved to broker 2 or 3');

my %seen;
for my $m ($m2->get('hasched.cq.medium', 2000))
{
	$seen{$1} = 1 if $m->{body} =~ /^\{"job_id": (\d+),/;
}
is(scalar(grep { !$seen{$_} } split(/,/, $ids)), 0,
	'every job has its message in the surviving brokers');

$node->stop;
$_->stop for ($m3, $m2, $m1);
done_testing();
