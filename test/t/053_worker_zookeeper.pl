
# Copyright: hasched contributors
#
# 053_worker_zookeeper.pl: hasched-worker --zookeeper, against a real
# three-node ZooKeeper ensemble (HaschedZooKeeper.pm) and a server whose
# coordinator watches the workers' znodes (hasched.zookeeper).
#
#   - a worker registers its ephemeral znode <path>/workers/<name> (the
#     name percent-encoded; seen with kazoo) before it takes a job, /health
#     shows it, and jobs run end to end;
#   - SIGKILL mid-job: the job is requeued (worker_lost) when the worker's
#     ZooKeeper session expires, long before the queue's lease (5 minutes;
#     the time is printed), and succeeds on a second worker, its result
#     recorded once;
#   - SIGTERM drains: the running job finishes and is reported, then the
#     znode is deleted (the leader requeues nothing);
#   - a name whose znode another session holds: the worker says so, takes
#     no job and fails /health until that znode is gone, then registers and
#     works;
#   - its own session expired (the worker frozen with SIGSTOP past the
#     session timeout): a new session, the znode registered again, jobs run;
#   - the ensemble without quorum: the worker takes no new jobs, /health
#     fails "zookeeper"; quorum back: it works again;
#   - bad input: a malformed connection string (exit 64), an unreachable
#     ensemble and a root znode holding foreign data (the worker waits,
#     takes nothing, /health 503 says why).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/053_worker_zookeeper.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedWorker qw(worker_bin worker_tmp within start_worker forget_worker wait_exit slurp_log run_worker http_request);
use HaschedZooKeeper;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $worker_timeout_ms = 3000;    # the workers' ZooKeeper sessions
my $lease = '5 minutes';

# ---------------------------------------------------------------------------
# the program and how to run it
# ---------------------------------------------------------------------------
my $bin = worker_bin();
ok(-x $bin, "the hasched-worker program is built ($bin)");
my $tmp = worker_tmp();

sub health
{
	my ($port) = @_;
	return http_request($port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
}

# ---------------------------------------------------------------------------
# the ensemble, the server, the command
# ---------------------------------------------------------------------------
my $zk = HaschedZooKeeper->new('e053');
$zk->start;
my $cs = $zk->connect_string;
my $node = HaschedCluster->primary('primary',
	conf => $zk->hasched_conf(timeout_ms => 6000, margin_ms => 2000)
	  . "hasched.scheduler_naptime = '200ms'\n");
$node->query(qq{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, lease) VALUES ('zq', '$lease');
});
ok($node->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'the primary leads');
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';

my $starts = "$tmp/starts";
my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
payload=\$(cat)
echo "start \$HASCHED_JOB_ID \$HASCHED_ATTEMPT \$\$ \$HASCHED_WORKER" >> "$starts"
case "\$payload" in
*'"hang"'*) [ "\$HASCHED_ATTEMPT" = 1 ] && sleep 300 ;;
*'"nap"'*) sleep 2 ;;
esac
printf '{"attempt": %s, "worker": "%s"}\\n' "\$HASCHED_ATTEMPT" "\$HASCHED_WORKER"
EOS
close $fh;
chmod 0755, $script;

sub zk_worker
{
	my ($name, @more) = @_;
	return start_worker(db => $db, queue => 'zq', cmd => [$script],
		args => [ '--name', $name, '--zookeeper', $cs,
			'--zookeeper-session-timeout', $worker_timeout_ms, '--poll-interval', '0.2', @more ]);
}

sub registered
{
	my ($w, $n) = @_;
	$n //= 1;
	return within(30, sub { my @r = slurp_log($w) =~ /ZooKeeper: znode \S+ registered/g; @r >= $n });
}

sub znodes
{
	my ($rc, $out) = $zk->client('ls', '/hasched/workers');
	return $rc == 0 ? $out : "ls failed ($rc)";
}

sub submit
{
	my ($payload) = @_;
	return $node->query("SELECT hasched.submit('zq', '$payload')");
}

sub starts_of
{
	my ($id) = @_;
	return grep { /^start $id / } split /\n/, (-f $starts ? slurp_file($starts) : '');
}

# ---------------------------------------------------------------------------
# registration, then jobs end to end
# ---------------------------------------------------------------------------
my $hport1 = PostgreSQL::Test::Cluster::get_free_port();
my $w1 = zk_worker('w/1', '--health-port', $hport1);
ok(registered($w1), 'a worker with --zookeeper registers its znode');
like(znodes(), qr/^w%2F1$/m, 'as <path>/workers/<name>, the name percent-encoded (w/1 -> w%2F1)');
my (undef, $data) = $zk->client('get', '/hasched/workers/w%2F1');
like($data, qr/^hasched-worker host=\S+ pid=$w1->{pid} queue=zq$/, 'its data says who holds it');
my $log = slurp_log($w1);
ok(index($log, 'no jobs taken until it exists') < index($log, 'registered'),
	'it takes no job before the znode exists');
like(health($hport1), qr/^HTTP\/1.1 200 .*"zookeeper": \{"ok": true, "state": "registered", "znode": "\/hasched\/workers\/w%2F1", "session": "0x[0-9a-f]{16}", "session_timeout_ms": $worker_timeout_ms\}/s,
	'/health shows the registration');

my @ids = map { submit('{}') } 1 .. 5;
ok($node->poll_within(30, 'SELECT count(*) = 5 FROM hasched.job WHERE state = \'succeeded\' AND worker = \'w/1\' AND id IN ('
		  . join(',', @ids) . ')'), 'jobs run end to end');

# ---------------------------------------------------------------------------
# SIGKILL mid-job: requeued at the session's expiry, done by a second worker
# ---------------------------------------------------------------------------
my $id = submit('{"hang": true}');
ok(within(30, sub { scalar starts_of($id) == 1 }), 'w/1 runs a job that hangs');
my ($cmd_pid) = (starts_of($id))[0] =~ /^start \d+ 1 (\d+)/;
my $w2 = zk_worker('w2');
ok(registered($w2), 'a second worker registers');
is($node->job($id, 'state || \' \' || worker'), 'running w/1', 'the job is still w/1\'s');

my $t0 = time;
kill 'KILL', $w1->{pid};
waitpid($w1->{pid}, 0);
forget_worker($w1);
my $requeued;
while (time < $t0 + 60)
{
	if ($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id = $id AND outcome = 'worker_lost'") eq '1')
	{
		$requeued = time;
		last;
	}
	usleep(50_000);
}
ok(defined $requeued, 'w/1 killed with SIGKILL: its job is requeued');
my $ms = int(1000 * (($requeued // time) - $t0));
diag("worker killed with SIGKILL mid-job: its job requeued after $ms ms"
	  . " (the worker's ZooKeeper session timeout $worker_timeout_ms ms; the queue's lease $lease)");
cmp_ok($ms, '<', 60_000, 'well before the lease ends');
ok(within(10, sub { !-e "/proc/$cmd_pid" || slurp_file("/proc/$cmd_pid/stat") =~ /^\d+ \(.*\) Z / }),
	'the command died with its worker');
ok($node->wait_state($id, 'succeeded'), 'the job then succeeds');
is($node->job($id, q{attempt || ' ' || worker || ' ' || (result->>'attempt') || ' ' || (result->>'worker')}), '2 w2 2 w2',
	'on the second worker, in its second attempt, whose result is recorded');
is($node->runs_of($id), '1:worker_lost:worker w/1 lost its ZooKeeper session',
	'the first attempt is one run row: worker_lost');
is(scalar starts_of($id), 2, 'the command ran twice, once per attempt');
is($node->query(q{SELECT detail->>'jobs_requeued' FROM hasched.event WHERE kind = 'worker_lost' AND detail->>'worker' = 'w/1'}),
	'1', 'a worker_lost event for w/1');
unlike(znodes(), qr/^w%2F1$/m, 'its znode is gone');

# ---------------------------------------------------------------------------
# SIGTERM drains, then deletes the znode
# ---------------------------------------------------------------------------
$id = submit('{"nap": true}');
ok(within(30, sub { scalar starts_of($id) == 1 }), 'w2 runs a job');
kill 'TERM', $w2->{pid};
is(wait_exit($w2, 30), 0, 'SIGTERM: w2 drains and exits 0');
unlike(znodes(), qr/^w2$/m, 'its znode is deleted');
like(slurp_log($w2), qr/ZooKeeper: znode deleted, session closed/, 'it says so');
is($node->job($id, q{state || ' ' || attempt}), 'succeeded 1', 'the running job finished and was reported');
ok($node->poll_within(10, q{SELECT count(*) = 1 FROM hasched.event WHERE kind = 'worker_lost' AND detail->>'worker' = 'w2'}),
	'the leader saw the znode go');
is($node->query(q{SELECT detail->>'jobs_requeued' FROM hasched.event WHERE kind = 'worker_lost' AND detail->>'worker' = 'w2'}),
	'0', 'and had nothing to requeue');
is($node->runs_of($id), '', 'no run row for the drained job');

# ---------------------------------------------------------------------------
# the name held by another session: wait, take nothing, then register
# ---------------------------------------------------------------------------
my $holder = $zk->hold('/hasched/workers/w3', $worker_timeout_ms);
my $hport3 = PostgreSQL::Test::Cluster::get_free_port();
my $w3 = zk_worker('w3', '--health-port', $hport3);
ok(within(30, sub { slurp_log($w3) =~ /znode \/hasched\/workers\/w3 already exists, held by ZooKeeper session 0x[0-9a-f]{16} \(""\), not this worker's/ }),
	'a worker whose name another session holds says so');
$id = submit('{}');
sleep 2;
is($node->job($id, 'state'), 'pending', 'and takes no job');
like(health($hport3), qr/^HTTP\/1.1 503 .*"failed": \["zookeeper"\].*"state": "name taken"/s,
	'/health fails "zookeeper": the name is taken');
kill 'TERM', $holder;
waitpid($holder, 0);
ok(registered($w3), 'the other session closed: the worker registers');
ok($node->wait_state($id, 'succeeded'), 'and takes the job');
is($node->job($id, 'worker'), 'w3', 'as w3');
like(health($hport3), qr/^HTTP\/1.1 200 /, '/health is 200');

# ---------------------------------------------------------------------------
# its own session expired: a new session, registered again
# ---------------------------------------------------------------------------
kill 'STOP', $w3->{pid};
sleep(2 * $worker_timeout_ms / 1000);
kill 'CONT', $w3->{pid};
ok(within(30, sub { slurp_log($w3) =~ /ZooKeeper: session 0x[0-9a-f]+ expired/ }),
	'frozen past its session timeout: the worker learns its session expired')
  or diag(slurp_log($w3));
ok(registered($w3, 2), 'and registers again in a new session');
my @sessions = slurp_log($w3) =~ /ZooKeeper: session (0x[0-9a-f]+) on /g;
is(scalar @sessions, 2, 'two sessions');
isnt($sessions[0], $sessions[1], 'different ones');
$id = submit('{}');
ok($node->wait_state($id, 'succeeded'), 'it takes jobs again');

# ---------------------------------------------------------------------------
# the ensemble without quorum: no new jobs; back: jobs again
# ---------------------------------------------------------------------------
my $t_loss = time;
my $off = length(slurp_log($w3));
$zk->kill_node(1);
$zk->kill_node(2);
ok(within(30, sub { substr(slurp_log($w3), $off) =~ /ZooKeeper: taking no new jobs: no connection to ZooKeeper/ }),
	'two of three ZooKeeper nodes killed: the worker takes no new jobs');
# the last node serves until it notices that it lost its peers: wait until
# the worker has been without a connection for a while
my $down_re = qr/^HTTP\/1.1 503 .*"failed": \[[^]]*"zookeeper"[^]]*\].*"state": "connecting"/s;
ok(within(30, sub { health($hport3) =~ $down_re && do { usleep(500_000); 1 } && health($hport3) =~ $down_re }),
	'/health fails "zookeeper" while there is no connection');
$id = submit('{}');
sleep 1;
is($node->job($id, 'state'), 'pending', 'a job submitted meanwhile is not taken');
like(health($hport3), $down_re, 'still no connection');
$zk->start_node(1, nowait => 1);
$zk->start_node(2, nowait => 1);
ok($zk->wait_serving(60), 'the ensemble is back');
ok(within(60, sub { health($hport3) =~ /^HTTP\/1.1 200 .*"state": "registered"/s }),
	'the worker is registered and healthy again');
ok($node->poll_within(60, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $id"),
	'and takes the job');
diag(sprintf('quorum lost and back: the worker took jobs again after %.1f s', time - $t_loss));
kill 'TERM', $w3->{pid};
is(wait_exit($w3, 30), 0, 'w3 stops');

# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------
my ($out, $err) = ('', '');
IPC::Run::run([ $bin, '--db', $db, '--queue', 'zq', '--zookeeper', 'zk1,zk2:2181', '--', 'true' ],
	'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout(30));
is($? >> 8, 64, 'a malformed --zookeeper: exit 64 (EX_USAGE)');
like($err, qr/--zookeeper "zk1,zk2:2181" is malformed: "zk1" is not host:port/, 'naming the fault');

my $dead = '127.0.0.1:' . PostgreSQL::Test::Cluster::get_free_port();
my $hport4 = PostgreSQL::Test::Cluster::get_free_port();
my $w4 = start_worker(db => $db, queue => 'zq', cmd => [$script],
	args => [ '--name', 'w4', '--zookeeper', $dead, '--zookeeper-session-timeout', '1000',
		'--poll-interval', '0.2', '--health-port', $hport4 ]);
$zk->client('create', '/foreign', 'not hasched');
my $hport5 = PostgreSQL::Test::Cluster::get_free_port();
my $w5 = zk_worker('w5', '--zookeeper-path', '/foreign', '--health-port', $hport5);
$id = submit('{}');
ok(within(30, sub { slurp_log($w4) =~ /ZooKeeper: not registered for \d+\.\d s \(cannot reach the ensemble: .*refused/ }),
	'an unreachable ensemble: the worker waits and says why');
like(health($hport4), qr/^HTTP\/1.1 503 .*"failed": \["zookeeper"\].*"state": "connecting"/s,
	'/health 503: connecting');
ok(within(30, sub { slurp_log($w5) =~ /ZooKeeper: znode \/foreign holds data that is not hasched's \("not hasched"\)/ }),
	'a root znode holding foreign data: the worker says so');
like(health($hport5), qr/^HTTP\/1.1 503 .*"failed": \["zookeeper"\].*"state": "error"/s,
	'/health 503: error');
sleep 1;
is($node->job($id, 'state'), 'pending', 'neither takes a job');
like(znodes(), qr/^$/, 'nothing registered');
kill 'TERM', $w4->{pid}, $w5->{pid};
is(wait_exit($w4, 30), 0, 'the waiting worker stops on SIGTERM');
is(wait_exit($w5, 30), 0, 'so does the other');

done_testing();
