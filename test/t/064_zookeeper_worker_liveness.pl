
# Copyright: hasched contributors
#
# 064_zookeeper_worker_liveness.pl: a dead worker's leases come back at once.
#
# External workers register an ephemeral znode <root>/workers/<name> (the
# name percent-encoded) with a session of their own; here a small kazoo
# client (test/perl/hasched_zk.py hold) plays that part.  The test proves
# that the leader's coordinator watches those znodes and that
#   (a) a worker killed with SIGKILL: when its session expires, the jobs
#       leased to that name run again (state failed, due now, a job_run row
#       'worker_lost'), long before their lease ends; the time from the kill
#       to the requeue is measured against the lease and the session
#       timeout;
#   (b) only that worker's jobs: another worker's leases stay, and so do
#       leases of the same name taken after the znode vanished;
#   (c) a worker that closes its session cleanly: its jobs come back at
#       once;
#   (d) a name with characters that a znode name cannot hold (/ and %)
#       works percent-encoded.
use strict;
use warnings;

use HaschedCluster;
use HaschedZooKeeper;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $worker_timeout_ms = 3000;    # the workers' own ZooKeeper sessions
my $lease = '5 minutes';

my $zk = HaschedZooKeeper->new('e064');
$zk->start;
my $node = HaschedCluster->primary('primary',
	conf => $zk->hasched_conf(timeout_ms => 6000, margin_ms => 2000));
$node->query(qq{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('pq', '$lease');
	SELECT count(hasched.submit('pq', '{}')) FROM generate_series(1, 40);
});
ok($node->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'the primary leads');

sub claim
{
	my ($worker, $n) = @_;
	return split /\n/,
	  $node->query("SELECT job_id FROM hasched.claim('pq', '$worker', $n)");
}

sub states
{
	my (@ids) = @_;
	return $node->query('SELECT string_agg(DISTINCT state::text, \',\') FROM hasched.job WHERE id IN ('
		  . join(',', @ids) . ')');
}

# ---------------------------------------------------------------------------
# (a) SIGKILL: requeued when the worker's session expires
# ---------------------------------------------------------------------------
my $w1 = $zk->hold('/hasched/workers/w1', $worker_timeout_ms);
my $w2 = $zk->hold('/hasched/workers/w2', $worker_timeout_ms);
my @mine = claim('w1', 5);
my @other = claim('w2', 5);
my @anon = claim('no-znode', 3);
is(scalar @mine, 5, 'w1 holds 5 leases');
sleep 1;    # the coordinator has seen the znodes

my $t0 = time;
kill 'KILL', $w1;
waitpid($w1, 0);
my $requeued;
while (time < $t0 + 60)
{
	if (states(@mine) eq 'failed')
	{
		$requeued = time;
		last;
	}
	usleep(50_000);
}
ok(defined $requeued, 'w1 killed: its jobs are requeued');
my $ms = int(1000 * (($requeued // time) - $t0));
diag("worker killed with SIGKILL: its 5 jobs requeued after $ms ms"
	  . " (its ZooKeeper session timeout $worker_timeout_ms ms, the lease $lease)");
cmp_ok($ms, '<', $worker_timeout_ms + 10_000,
	'within the worker\'s session timeout (and a margin), not the lease');
is($node->query('SELECT count(*) FROM hasched.job_run WHERE outcome = \'worker_lost\' AND job_id IN ('
		  . join(',', @mine) . ')'), '5', 'each requeued attempt has a worker_lost run row');
like($node->query('SELECT error FROM hasched.job_run WHERE outcome = \'worker_lost\' LIMIT 1'),
	qr/worker w1 lost its ZooKeeper session/, 'saying why');
is($node->query('SELECT count(*) FROM hasched.job WHERE run_at <= now() AND id IN (' . join(',', @mine) . ')'),
	'5', 'due now, without backoff');
is($node->query(q{SELECT detail->>'jobs_requeued' FROM hasched.event WHERE kind = 'worker_lost'}),
	'5', 'a worker_lost event');

# ---------------------------------------------------------------------------
# (b) only that worker's jobs
# ---------------------------------------------------------------------------
is(states(@other), 'running', 'w2 (alive) keeps its leases');
is(states(@anon), 'running', 'a worker without a znode keeps its leases');
my @later = claim('w1', 2);    # the same name, after the znode vanished
sleep 2;
is(states(@later), 'running', 'leases of the same name taken after the znode vanished stay');

# ---------------------------------------------------------------------------
# (c) a clean close
# ---------------------------------------------------------------------------
$t0 = time;
kill 'TERM', $w2;
waitpid($w2, 0);
ok($node->poll_within(10, 'SELECT count(*) = 5 FROM hasched.job WHERE state = \'failed\' AND id IN ('
		  . join(',', @other) . ')'), 'w2 closed its session: its jobs are requeued');
diag(sprintf('worker closed its session: its jobs requeued after %d ms', 1000 * (time - $t0)));

# ---------------------------------------------------------------------------
# (d) a name that needs encoding
# ---------------------------------------------------------------------------
my $odd = 'host/42%x';
my $w3 = $zk->hold('/hasched/workers/host%2F42%25x', $worker_timeout_ms);
my @odd = claim($odd, 2);
sleep 1;
kill 'TERM', $w3;
waitpid($w3, 0);
ok($node->poll_within(10, 'SELECT count(*) = 2 FROM hasched.job WHERE state = \'failed\' AND id IN ('
		  . join(',', @odd) . ')'), "the percent-encoded name '$odd' is decoded");

done_testing();
