
# Copyright: hasched contributors
#
# 071_health_hostile.pl: the HTTP health listener under hostile clients,
# while the database is locked (src/workers/health_listener.c,
# src/common/http_request.c).
#
# Proves, while a session holds an ACCESS EXCLUSIVE lock on hasched.job the
# whole time:
#   - GET /health is answered, each time within 2 s (the figure printed is
#     the slowest), while 130 slowloris clients trickle partial requests a
#     byte at a time (more than the listener's 128 slots: every slot is
#     partway through a request), 200 idle connections sit open, and bad
#     requests arrive;
#   - each bad request gets its answer and the connection closed: non-GET
#     methods 405, binary garbage and NUL bytes 400 (at once, without
#     waiting for more bytes), an HTTP/2 preface 400, a header without a
#     colon 400, a GET with a body 400, a request line of 300 bytes 431,
#     64 kB of headers 431;
#   - every slowloris client is dropped within the request timeout (5 s)
#     plus a margin, however slowly it keeps sending;
#   - the listener's memory stays bounded (VmRSS grows by less than 16 MB);
#   - while the lock holds the scheduler (it cannot count the jobs), /health
#     goes on answering and, after the stall bound, says the scheduler is
#     failed (503, "stalled"); when the lock is released it is 200 again;
#   - a client that pipelines 150 requests in one write and reads late
#     gets all 150 answers (the listener goes on with the requests it holds
#     once an answer that did not fit in the socket is sent).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/071_health_hostile.pl
use strict;
use warnings;

use HaschedCluster;
use IO::Socket::INET;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# a client that writes to a connection the server closed gets EPIPE, not a signal
$SIG{PIPE} = 'IGNORE';

my $port = PostgreSQL::Test::Cluster::get_free_port();
my $node = HaschedCluster->primary('hostile', conf => "hasched.health_port = $port\n");

ok($node->poll(q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'health listener'}),
	'the listener listens');
my ($lpid) = $node->query(q{SELECT detail FROM hasched.health() WHERE component = 'health listener'})
  =~ /pid (\d+)/;
ok($lpid, "listener pid $lpid");

sub rss_kb
{
	open my $fh, '<', "/proc/$lpid/status" or return 0;
	while (<$fh>) { return $1 if /^VmRSS:\s+(\d+) kB/ }
	return 0;
}

sub connect_one
{
	return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp');
}

# Has the server closed this socket (EOF or reset)?  Reads what is there.
sub closed_by_server
{
	my ($s) = @_;
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	while (select(my $r = $rin, undef, undef, 0) > 0)
	{
		my $n = sysread($s, my $buf, 65536);
		return 1 if !defined $n || $n == 0;
	}
	return 0;
}

# one bad request: (status, seconds, closed afterwards)
sub bad
{
	my ($raw) = @_;
	my ($st, $head, $body, $took) = HaschedCluster::http_request($port, $raw, timeout => 10);
	return ($st, $took, $head =~ /^Connection: close/mi ? 1 : 0);
}

# --- lock the job table ----------------------------------------------------------
my ($in, $out, $err) = ('', '', '');
my $locker = IPC::Run::start(
	[ 'psql', '-XAtq', '-d', $node->connstr('postgres') ],
	'<' => \$in, '>' => \$out, '2>' => \$err);
$in .= "BEGIN; LOCK TABLE hasched.job IN ACCESS EXCLUSIVE MODE; SELECT 'locked';\n";
my $until = time + 20;
$locker->pump while $out !~ /locked/ && time < $until;
like($out, qr/locked/, 'a session holds an ACCESS EXCLUSIVE lock on hasched.job');
my $locked_at = time;
my $rss0 = rss_kb();

# --- 200 idle connections, 130 slowloris clients --------------------------------------
my @idle;
for (1 .. 200)
{
	my $c = connect_one() or last;
	push @idle, $c;
}
is(scalar @idle, 200, '200 idle connections opened');

my @slow;
for (1 .. 130)
{
	my $c = connect_one() or last;
	$c->autoflush(1);
	syswrite($c, "GET /health HTTP/1.1\r\nX-Slow: ");
	push @slow, { sock => $c, start => time, closed => undef };
}
is(scalar @slow, 130, '130 slowloris clients started');

# --- bad requests, answered at once and closed ----------------------------------------
my @cases = (
	[ 'POST',                 "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n",      405 ],
	[ 'PUT',                  "PUT /health HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",     405 ],
	[ 'DELETE',               "DELETE /metrics HTTP/1.1\r\n\r\n",                         405 ],
	[ 'OPTIONS',              "OPTIONS /health HTTP/1.1\r\n\r\n",                         405 ],
	[ 'TRACE',                "TRACE / HTTP/1.1\r\n\r\n",                                 405 ],
	[ 'binary garbage',       join('', map { chr(int(rand(256))) } 1 .. 512) . "\x00",    400 ],
	[ 'garbage, no CRLF',     "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",            400 ],
	[ 'a NUL in the path',    "GET /hea\x00lth HTTP/1.1\r\n\r\n",                         400 ],
	[ 'HTTP/2 preface',       "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",                         400 ],
	[ 'a header without :',   "GET /health HTTP/1.1\r\nHost x\r\n\r\n",                   400 ],
	[ 'a GET with a body',    "GET /health HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",   400 ],
	[ 'a 300-byte target',    "GET /" . ('a' x 300) . " HTTP/1.1\r\n\r\n",                431 ],
	[ '64 kB of headers',     "GET /health HTTP/1.1\r\n" . ("X-Pad: " . ('p' x 1000) . "\r\n") x 64 . "\r\n", 431 ],
);
my $max_bad = 0;
for my $c (@cases)
{
	my ($name, $raw, $want) = @$c;
	my ($st, $took, $closed) = bad($raw);
	is($st, $want, "$name: $want");
	ok($closed, "$name: the connection is closed");
	$max_bad = $took if $took > $max_bad;
}
diag(sprintf('slowest answer to a bad request: %.3f s', $max_bad));

# --- meanwhile: GET /health answers; the slowloris clients are dropped ----------------
my ($answered, $asked, $max_health) = (0, 0, 0);
my $end = time + 9;
while (time < $end)
{
	for my $s (grep { !defined $_->{closed} } @slow)
	{
		if (closed_by_server($s->{sock}))
		{
			$s->{closed} = time - $s->{start};
			next;
		}
		syswrite($s->{sock}, 'x');    # one more byte, never the end
	}
	my ($st, undef, undef, $took) = HaschedCluster::http_get($port, '/health');
	$asked++;
	$answered++ if ($st == 200 || $st == 503) && $took < 2;
	$max_health = $took if $took > $max_health;
	usleep(250_000);
}
is($answered, $asked, "GET /health answered within 2 s every time ($asked times) under the hostile load");
diag(sprintf('slowest GET /health meanwhile: %.3f s', $max_health));
my @open = grep { !defined $_->{closed} } @slow;
is(scalar @open, 0, 'every slowloris client was dropped');
my ($longest) = sort { $b <=> $a } map { $_->{closed} // 99 } @slow;
ok($longest < 8, sprintf('within the 5 s request timeout and a margin (the last after %.1f s)', $longest));

my $rss1 = rss_kb();
diag("listener VmRSS: $rss0 kB before, $rss1 kB after");
ok($rss1 - $rss0 < 16 * 1024, 'the listener\'s memory stays bounded');
close $_ for @idle;
close $_->{sock} for @slow;

# --- the lock holds the scheduler: /health says so, and answers -----------------------
my $stalled = 0;
my $t;
$end = $locked_at + 40;
while (time < $end)
{
	my ($st, undef, $body, $took) = HaschedCluster::http_get($port, '/health');
	if ($st == 503 && $body =~ /"component": "scheduler", "status": "failed", "healthy": false, "detail": "stalled: no round for/)
	{
		$stalled = 1;
		$t = time - $locked_at;
		last;
	}
	usleep(250_000);
}
ok($stalled, 'while the lock holds the scheduler, /health answers 503: scheduler failed, stalled');
diag(sprintf('stalled shown %.1f s after the lock was taken', $t // -1));
my ($mst, undef, $mbody) = HaschedCluster::http_get($port, '/metrics');
is($mst, 200, '/metrics answers too');
like($mbody, qr/^hasched_component_status\{component="scheduler",status="failed"\} 1$/m,
	'/metrics: the scheduler failed');

$in .= "ROLLBACK;\n\\q\n";
$locker->finish;
ok($node->poll_within(30, q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'scheduler'}),
	'lock released: the scheduler is ok again');
my ($st) = HaschedCluster::http_get($port, '/health');
is($st, 200, 'GET /health 200 again');

# --- a client that pipelines requests and reads late ---------------------------------
# 150 requests in one write (all held by the listener at once), answers of
# about 48 kB each (100 queues with jobs): more than the socket buffers
# take before the client reads.  The listener must go on with the requests
# it holds once the client reads again (before the fix it stopped after
# the answer that had not fit, at 87 of 150, until the connection timed
# out).
$node->query(q{INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name) SELECT 'queue_with_a_long_name_' || i FROM generate_series(1, 100) i;
	SELECT hasched.submit('queue_with_a_long_name_' || i, '{}') FROM generate_series(1, 100) i;});
ok($node->poll_within(30, q{SELECT detail LIKE '% in 100 queue(s)%' FROM hasched.health() WHERE component = 'backlog'}),
	'100 queues counted');
{
	my (undef, undef, $body) = HaschedCluster::http_get($port, '/metrics');
	my $n = 150;
	my $c = connect_one();
	syswrite($c, "GET /metrics HTTP/1.1\r\n\r\n" x $n);
	sleep 1;    # the answers back up
	my ($got, $bytes, $tail) = (0, 0, '');
	my $end = time + 20;
	my $rin = '';
	vec($rin, fileno($c), 1) = 1;
	while (time < $end && $got < $n)
	{
		last unless select(my $r = $rin, undef, undef, $end - time) > 0;
		my $k = sysread($c, my $buf, 1 << 20);
		last if !defined $k || $k == 0;
		$bytes += $k;
		my $scan = $tail . $buf;
		$got += () = $scan =~ m{HTTP/1\.1 200 OK}g;
		$tail = substr($scan, -14);    # shorter than a match: none counted twice
	}
	is($got, $n, sprintf('%d pipelined GET /metrics of %d bytes, read late: all answered (%d bytes)',
			$n, length $body, $bytes));
	close $c;
}

done_testing();
