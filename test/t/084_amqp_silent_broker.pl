# Copyright: hasched contributors
#
# 084_amqp_silent_broker.pl: a broker host that accepts TCP connections and
# never answers AMQP (a hung RabbitMQ; here a real TCP listener that
# accepts, reads and says nothing: HaschedRabbitMQ->silent_listener).
#
#   - health and hasched.circuits say which broker fails and why: it
#     accepted the connection and did not answer the AMQP handshake within
#     hasched.amqp_connect_timeout; the job waits pending;
#   - with long timeouts (10 minutes) and the dispatcher waiting in the
#     handshake, a fast shutdown (pg_ctl stop -m fast) still ends the server
#     at once: the SIGTERM interrupts the wait (the target is about 1 s; the
#     bound asserted is generous for a loaded machine, and the time is
#     printed);
#   - the same while the TCP connect itself hangs (a listener whose accept
#     queue is full: the kernel drops the SYNs).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/084_amqp_silent_broker.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use IO::Socket::INET;
use Time::HiRes qw(time usleep);

my $silent = HaschedRabbitMQ->silent_listener;
my $port = $silent->port;

my $node = HaschedCluster->primary('main', conf => qq{
hasched.amqp_url = '@{[ $silent->url ]}'
hasched.amqp_connect_timeout = '300ms'
hasched.amqp_reconnect_interval = '100ms'
hasched.circuit_open_duration = '100ms'
hasched.amqp_queue_type = 'classic'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('mq', 'amqp');
});
my $id = $node->query(q{SELECT hasched.submit('mq', '{"n": 1}')});

# ---------------------------------------------------------------------------
# health says why
# ---------------------------------------------------------------------------
my $why = qr/broker 1 of 1, amqp:\/\/guest:\*\*\*\@127\.0\.0\.1:$port: (circuit open after: )?the broker accepted the connection but did not answer the AMQP handshake within hasched\.amqp_connect_timeout \(300 ms\)/;
my $health = '';
my $until = time + 30;
while (time < $until)
{
	$health = $node->query(
		q{SELECT status || ': ' || detail FROM hasched.health() WHERE component = 'dispatcher'});
	last if $health =~ $why;
	usleep(100_000);
}
like($health, qr/^failed: no broker: no broker reachable \(jobs of amqp queues wait\): $why/,
	'health: the dispatcher fails, saying the broker accepted and did not answer the handshake');
cmp_ok($silent->accepted, '>=', 1, 'the dispatcher did connect to the listener');
like($node->query(q{SELECT last_error FROM hasched.circuits WHERE kind = 'broker'}),
	qr/did not answer the AMQP handshake/, 'hasched.circuits: the broker circuit\'s last error says so');
is($node->job($id, 'state'), 'pending', 'the job waits, pending');

# ---------------------------------------------------------------------------
# fast shutdown while the dispatcher waits in the handshake
# ---------------------------------------------------------------------------
$node->query(
	q{
	ALTER SYSTEM SET hasched.amqp_connect_timeout = '10min';
	ALTER SYSTEM SET hasched.amqp_confirm_timeout = '10min';
	SELECT pg_reload_conf();
});
# the attempt under way may still have the old timeout: wait until a
# connection stays in its handshake for a second (no new one comes)
my $seen = $silent->accepted;
my $end = time + 30;
my $quiet = 0;
while (!$quiet && time < $end)
{
	my $n = $silent->accepted;
	usleep(1_000_000);
	$quiet = $silent->accepted == $n && $n > $seen;
}
ok($quiet, 'after the reload the dispatcher connects and waits in the handshake');
my $accepted = $silent->accepted;

my $t0 = time;
my $stopped;
{
	# pg_ctl gives up after 30 s (the fix's target is about 1 s)
	local $ENV{PGCTLTIMEOUT} = 30;
	$stopped = $node->stop('fast', fail_ok => 1);
}
my $took = time - $t0;
ok($stopped, 'pg_ctl stop -m fast succeeded');
diag(sprintf('fast shutdown took %.2f s with the dispatcher in a 10-minute handshake wait', $took));
cmp_ok($took, '<', 10, 'the server stopped within 10 s (a SIGTERM interrupts the handshake wait)');
is($silent->accepted, $accepted, 'no connection attempt after the SIGTERM');
$node->stop('immediate', fail_ok => 1) unless $stopped;

# ---------------------------------------------------------------------------
# fast shutdown while the TCP connect itself does not complete: a listener
# whose accept queue is full (it never accepts) drops the SYNs
# ---------------------------------------------------------------------------
my $full = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
  or die "listen: $!";
my $fport = $full->sockport;
my @fillers;
for (1 .. 8)
{
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $fport,
		Blocking => 0);
	push @fillers, $c if $c;
}
usleep(200_000);
my $probe = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $fport, Timeout => 1);
SKIP:
{
	skip('this kernel completes connections to a full accept queue', 3) if $probe;
	$node->append_conf('postgresql.conf', qq{
hasched.amqp_url = 'amqp://guest:guest\@127.0.0.1:$fport'
hasched.amqp_connect_timeout = '10min'
});
	$node->start;
	my $detail = '';
	$until = time + 30;
	while (time < $until)
	{
		$detail = $node->query(q{SELECT detail FROM hasched.health() WHERE component = 'dispatcher'});
		last if $detail =~ /^connecting: broker 1 of 1/;
		usleep(100_000);
	}
	like($detail, qr/^connecting: broker 1 of 1, amqp:\/\/guest:\*\*\*\@127\.0\.0\.1:$fport/,
		'the dispatcher waits in the TCP connect');
	usleep(500_000);
	$t0 = time;
	{
		local $ENV{PGCTLTIMEOUT} = 30;
		$stopped = $node->stop('fast', fail_ok => 1);
	}
	$took = time - $t0;
	ok($stopped, 'pg_ctl stop -m fast succeeded');
	diag(sprintf('fast shutdown took %.2f s with the dispatcher in a 10-minute TCP connect', $took));
	cmp_ok($took, '<', 10, 'the server stopped within 10 s (a SIGTERM interrupts the connect)');
	$node->stop('immediate', fail_ok => 1) unless $stopped;
}
close $_ for @fillers;
close $full;

$silent->stop;
done_testing();
