# Copyright: hasched contributors
#
# 085_amqp_tls.pl: amqps:// (TLS to the broker) for the dispatcher and for
# hasched-worker, against a real rabbitmq-server with a TLS listener whose
# certificate (for localhost and 127.0.0.1) is signed by a CA that the test
# makes with the openssl command (HaschedRabbitMQ->new(..., tls => 1)).
#
#   - hasched.amqp_tls_ca_file names a CA that did not sign the broker's
#     certificate: no connection; health and hasched.circuits say the
#     certificate does not verify; the job waits pending;
#   - the right CA (a reload): the job is dispatched over TLS;
#   - hasched-worker --amqp amqps://... --amqp-ca-file runs it: it succeeds;
#     with the wrong CA the worker reports the verification failure (health
#     503 naming the broker);
#   - hasched.amqp_tls_verify = off connects despite the wrong CA;
#   - bad input for hasched-worker: --amqp-ca-file without an amqps URL, or
#     a file that cannot be read, is a usage error (exit 64).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/085_amqp_tls.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use HaschedWorker;
use IO::Socket::INET;
use IPC::Run;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $bin = worker_bin();
my $tmp = PostgreSQL::Test::Utils::tempdir;

my $mq = HaschedRabbitMQ->new('mq085', tls => 1);
$mq->start;
my $ca = $mq->ca_file;
my $other = $mq->other_ca_file;
my $tls_url = $mq->tls_url;
my $port = $mq->tls_port;

my $node = HaschedCluster->primary('main', conf => qq{
hasched.amqp_url = '$tls_url'
hasched.amqp_tls_ca_file = '$other'
hasched.amqp_queue_type = 'classic'
hasched.amqp_reconnect_interval = '200ms'
hasched.circuit_open_duration = '500ms'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('tq', 'amqp');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
});
my $id = $node->query(q{SELECT hasched.submit('tq', '{"tls": 1}')});

# ---------------------------------------------------------------------------
# the wrong CA: refused, and said so
# ---------------------------------------------------------------------------
my $health = '';
ok(within(30, sub {
	$health = $node->query(q{SELECT status || ': ' || detail FROM hasched.health() WHERE component = 'dispatcher'});
	$health =~ /certificate does not verify/;
}), 'health: the dispatcher cannot connect over TLS with a CA that did not sign the broker\'s certificate');
like($health,
	qr/broker 1 of 1, amqps:\/\/guest:\*\*\*\@localhost:$port: (circuit open after: )?TLS: the broker's certificate does not verify \(self[- ]signed certificate in certificate chain|unable to get local issuer certificate\); check hasched\.amqp_tls_ca_file/,
	'it names the broker (password hidden), the verification error and the setting to check');
like($node->query(q{SELECT last_error FROM hasched.circuits WHERE kind = 'broker'}),
	qr/TLS: the broker's certificate does not verify/, 'hasched.circuits: the broker circuit\'s last error says so');
is($node->job($id, 'state'), 'pending', 'the job waits, pending');

# ---------------------------------------------------------------------------
# the right CA: dispatched over TLS
# ---------------------------------------------------------------------------
$node->query(qq{ALTER SYSTEM SET hasched.amqp_tls_ca_file = '$ca'; SELECT pg_reload_conf();});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $id", 'dispatched'),
	'with the CA that signed the broker\'s certificate, the job is dispatched');
like($node->query(q{SELECT status || ': ' || detail FROM hasched.health() WHERE component = 'dispatcher'}),
	qr/^ok: connected to broker 1 of 1, amqps:\/\/guest:\*\*\*\@localhost:$port/,
	'health: connected over amqps');
my ($rc, $out) = $mq->ctl('list_connections', '--no-table-headers', 'ssl', 'peer_port');
like($out // '', qr/^true\s/m, 'the broker lists a TLS connection (rabbitmqctl list_connections ssl)');

# ---------------------------------------------------------------------------
# hasched-worker over amqps
# ---------------------------------------------------------------------------
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';
my $hport = PostgreSQL::Test::Cluster::get_free_port();

sub worker
{
	my ($ca_file, $log, @extra) = @_;
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log;
		open STDERR, '>&', \*STDOUT;
		exec($bin, '--db', $db, '--amqp', $tls_url, '--queue', 'tq',
			'--amqp-queue-type', 'classic', '--amqp-ca-file', $ca_file, @extra,
			'--', 'sh', '-c', 'cat >/dev/null; echo "{\"over\": \"tls\"}"')
		  or POSIX::_exit(127);
	}
	return $pid;
}

sub stop_worker
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	my $end = time + 20;
	while (time < $end && waitpid($pid, WNOHANG) == 0) { usleep(50_000); }
	kill 'KILL', $pid if waitpid($pid, WNOHANG) == 0;
	waitpid($pid, 0);
	return;
}

# GET /health of the worker: (status, body)
sub worker_health
{
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $hport, Timeout => 5)
	  or return (0, '');
	print $s "GET /health HTTP/1.0\r\n\r\n";
	local $/;
	my $r = <$s> // '';
	return ($r =~ /^HTTP\/1\.\d (\d+)/ ? $1 : 0, $r);
}

my $wlog = "$tmp/wrong.log";
my $wpid = worker($other, $wlog, '--health-port', $hport);
my $wbody = '';
ok(within(30, sub { my ($c, $b) = worker_health(); $wbody = $b; $c == 503 && $b =~ /broker/ }),
	'hasched-worker with the wrong CA: health 503 naming the broker');
stop_worker($wpid);
like(slurp_file($wlog), qr/amqps:\/\/guest\@localhost:$port.*(certificate|SSL|TLS)/i,
	'and its log says the TLS connection to the broker failed');
is($node->job($id, 'state'), 'dispatched', 'the job was not taken');

my $glog = "$tmp/good.log";
my $gpid = worker($ca, $glog);
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $id", 'succeeded'),
	'hasched-worker --amqp amqps://... --amqp-ca-file: the job succeeds')
  or diag(slurp_file($glog));
is($node->job($id, 'result::text'), '{"over": "tls"}', 'with the command\'s result');
stop_worker($gpid);

# ---------------------------------------------------------------------------
# hasched.amqp_tls_verify = off: the wrong CA is not checked
# ---------------------------------------------------------------------------
$node->query(qq{ALTER SYSTEM SET hasched.amqp_tls_ca_file = '$other';
	ALTER SYSTEM SET hasched.amqp_tls_verify = off; SELECT pg_reload_conf();});
# a new connection: the broker closes the current one
$mq->ctl('close_all_connections', 'test');
my $id2 = $node->query(q{SELECT hasched.submit('tq', '{"tls": 2}')});
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $id2", 'dispatched'),
	'hasched.amqp_tls_verify = off: dispatched despite the wrong CA');

# ---------------------------------------------------------------------------
# bad input for hasched-worker
# ---------------------------------------------------------------------------
my ($err, $o) = ('', '');
IPC::Run::run([ $bin, '--db', $db, '--amqp', $mq->url, '--queue', 'tq', '--amqp-ca-file', $ca, '--', 'true' ],
	'<', \undef, '>', \$o, '2>', \$err, IPC::Run::timeout(30));
is($? >> 8, 64, '--amqp-ca-file with an amqp:// URL only: exit 64 (usage)');
like($err, qr/--amqp-ca-file and --amqp-no-verify need an amqps:\/\/ URL in --amqp/, 'saying why');
IPC::Run::run([ $bin, '--db', $db, '--amqp', $tls_url, '--queue', 'tq', '--amqp-ca-file', "$tmp/none.pem", '--', 'true' ],
	'<', \undef, '>', \$o, '2>', \$err, IPC::Run::timeout(30));
is($? >> 8, 64, 'an --amqp-ca-file that cannot be read: exit 64');
like($err, qr/--amqp-ca-file: cannot read ".*none\.pem": No such file or directory/, 'saying which file and why');

$node->stop;
$mq->stop;
done_testing();
