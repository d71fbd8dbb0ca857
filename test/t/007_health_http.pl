
# Copyright: hasched contributors
#
# 007_health_http.pl: the HTTP health listener (src/workers/health_listener.c)
# on a primary and a streaming standby, and what it does with hostile
# clients.
#
# Proves:
#   - GET /health answers 200 with a JSON row per component on the primary
#     and on the standby; /primary is 200 only on the primary whose
#     scheduler is active, /replica 200 only on a streaming standby;
#     /metrics is Prometheus text with hasched_up, the epoch, the role;
#   - after a promotion the promoted node answers /primary with 200;
#   - it answers from shared memory: while a session holds an ACCESS
#     EXCLUSIVE lock on hasched.job, /health and /metrics still answer;
#   - hostile or broken requests get a bounded answer and never stop it:
#     POST is 405, garbage 400, an oversized request 431, an unknown path
#     404, a client that never finishes its request is dropped after the
#     request timeout, and with more idle connections than its table holds
#     a new client is still answered;
#   - a port that is already in use: the server starts and works, the log
#     says why the listener cannot listen, health() says so too.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/007_health_http.pl
use strict;
use warnings;

use HaschedCluster;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $pport = PostgreSQL::Test::Cluster::get_free_port();
my $sport = PostgreSQL::Test::Cluster::get_free_port();

my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => "hasched.health_port = $pport\n");
my $standby = HaschedCluster->standby($primary, 'standby',
	conf => "hasched.health_port = $sport\n");

# One request on a fresh connection: (status, headers, body).
sub http
{
	my ($port, $request) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
		Proto => 'tcp', Timeout => 10)
	  or return (0, '', "connect: $!");
	$s->autoflush(1);
	print $s $request;
	my $all = '';
	my $end = time + 10;
	while (time < $end)
	{
		my $buf;
		my $n = sysread($s, $buf, 65536);
		last if !defined $n || $n == 0;
		$all .= $buf;
		if ($all =~ /\r\n\r\n/ && $all =~ /Content-Length: (\d+)/i)
		{
			my ($head, $body) = split /\r\n\r\n/, $all, 2;
			last if length($body) >= $1;
		}
	}
	close $s;
	my ($head, $body) = split /\r\n\r\n/, $all, 2;
	my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
	return ($status // 0, $head // '', $body // '');
}

sub get
{
	my ($port, $path) = @_;
	return http($port, "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

sub wait_status
{
	my ($port, $path, $want) = @_;
	my $end = time + 30;
	while (time < $end)
	{
		my ($st) = get($port, $path);
		return 1 if $st == $want;
		usleep(100_000);
	}
	return 0;
}

# --- the primary and the standby -------------------------------------------
ok(wait_status($pport, '/health', 200), 'primary: GET /health is 200');
my ($st, $head, $body) = get($pport, '/health');
like($head, qr{Content-Type: application/json}i, 'primary: /health is JSON');
like($body, qr/"status": "ok"/, 'primary: overall status ok');
for my $c ('server', 'scheduler', 'executors', 'health listener')
{
	like($body, qr/"component": "$c"/, "primary: /health has the $c component");
}
ok(wait_status($pport, '/primary', 200), 'primary: GET /primary is 200');
($st) = get($pport, '/replica');
is($st, 503, 'primary: GET /replica is 503');
($st, $head, $body) = get($pport, '/metrics');
is($st, 200, 'primary: GET /metrics is 200');
like($head, qr{Content-Type: text/plain; version=0\.0\.4}i, 'metrics in the Prometheus text format');
like($body, qr/^hasched_up 1$/m, 'metrics: hasched_up 1');
like($body, qr/^hasched_active_primary 1$/m, 'metrics: hasched_active_primary 1 on the primary');
like($body, qr/^hasched_epoch [1-9]\d*$/m, 'metrics: the epoch');
like($body, qr/^# TYPE hasched_executors gauge$/m, 'metrics: TYPE lines');

ok(wait_status($sport, '/replica', 200), 'standby: GET /replica is 200 while it streams');
($st) = get($sport, '/primary');
is($st, 503, 'standby: GET /primary is 503');
($st, $head, $body) = get($sport, '/health');
is($st, 200, 'standby: GET /health is 200');
like($body, qr/"component": "server", "status": "ok", "healthy": true, "detail": "standby, /, 'standby: the server row says standby');

# --- it never waits on the database -----------------------------------------
my ($in, $out, $err) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $primary->connstr('postgres') ],
	'<' => \$in, '>' => \$out, '2>' => \$err);
$in .= "BEGIN; LOCK TABLE hasched.job IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n";
my $until = time + 20;
$locker->pump while $out !~ /locked/ && time < $until;
like($out, qr/locked/, 'a session holds an ACCESS EXCLUSIVE lock on hasched.job');
my $t0 = time;
($st) = get($pport, '/health');
my ($mst) = get($pport, '/metrics');
my $took = time - $t0;
ok($st == 200 && $mst == 200, '/health and /metrics answer while hasched.job is locked');
diag(sprintf('/health + /metrics under the lock: %.3f s', $took));
$in .= "ROLLBACK;\n\\q\n";
$locker->finish;

# --- hostile clients -----------------------------------------------------------
($st) = http($pport, "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
is($st, 405, 'POST is 405');
($st) = http($pport, "\x01\x02garbage\r\n\r\n");
is($st, 400, 'garbage is 400');
($st) = http($pport, "GET /" . ('a' x 6000) . " HTTP/1.1\r\n");
is($st, 431, 'a request larger than the limit is 431');
($st) = get($pport, '/nope');
is($st, 404, 'an unknown path is 404');

# a client that never ends its request is dropped after the request timeout
my $slow = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pport, Proto => 'tcp');
print $slow "GET /health HTTP/1.1\r\nHost: x\r\n";
my $dropped_at;
my $begin = time;
$slow->blocking(0);
while (time - $begin < 15)
{
	my $buf;
	my $n = sysread($slow, $buf, 100);
	if (defined $n && $n == 0) { $dropped_at = time - $begin; last; }
	usleep(100_000);
}
ok(defined $dropped_at, 'a request that never ends is dropped');
diag(sprintf('slow client dropped after %.1f s', $dropped_at // -1));

# more idle keep-alive connections than the table holds: still answered
my @idle;
for (1 .. 200)
{
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pport, Proto => 'tcp')
	  or last;
	push @idle, $c;
}
($st) = get($pport, '/health');
is($st, 200, sprintf('with %d idle connections open, a new client is answered', scalar @idle));
close $_ for @idle;

# keep-alive: two requests on one connection
{
	my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $pport, Proto => 'tcp');
	print $c "GET /primary HTTP/1.1\r\nHost: x\r\n\r\nGET /primary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	my $all = '';
	my $end = time + 10;
	while (time < $end)
	{
		my $buf;
		my $n = sysread($c, $buf, 65536);
		last if !defined $n || $n == 0;
		$all .= $buf;
	}
	my $count = () = $all =~ m{HTTP/1\.1 200}g;
	is($count, 2, 'two pipelined requests on one keep-alive connection are both answered');
}

# --- promotion ---------------------------------------------------------------------
$primary->stop('immediate');
$standby->promote;
ok(wait_status($sport, '/primary', 200), 'the promoted standby answers /primary with 200');
($st) = get($sport, '/replica');
is($st, 503, 'the promoted node no longer answers /replica with 200');

# --- a port in use ---------------------------------------------------------------
my $busy = HaschedCluster->primary('busyport', conf => "hasched.health_port = $sport\n");
ok( $busy->poll(
		"SELECT status = 'failed' AND detail LIKE '%could not listen%' FROM hasched.health() WHERE component = 'health listener'"),
	'port in use: health() says the listener is failed and why');
is($busy->query("SELECT hasched.submit('default', '{}') > 0"), 't', 'port in use: the server works');
ok($busy->log_contains(qr/hasched health listener: could not listen on 127\.0\.0\.1 port $sport/),
	'port in use: the log says why');
($st) = get($sport, '/primary');
is($st, 200, 'port in use: the node that holds the port still answers');

done_testing();
