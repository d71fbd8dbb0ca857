
# Copyright: hasched contributors
#
# 060_zookeeper_leader.pl: ZooKeeper leadership and its bad inputs.
#
# A three-node ZooKeeper ensemble (test/perl/HaschedZooKeeper.pm) and one
# primary with hasched.zookeeper set.  The test proves that
#   (a) the primary's coordinator joins the election and leads: one
#       ephemeral sequential znode under /hasched/election, the root marked
#       as hasched's, a new epoch whose fencing_token is that znode's
#       sequence number, lease tokens of that epoch, health() saying so;
#       the leader fires schedules, runs SQL jobs and answers the pull API;
#   (b) bad input leaves the server safely not acting, with a clear error
#       in health(), a WARNING in the log, and JQ024 (with the reason) for
#       claims: a root path holding foreign data, a root whose ACL refuses
#       us, a session timeout the ensemble does not grant, a malformed
#       connection string, an unreachable ensemble; no schedule fires and
#       no SQL job runs meanwhile, nothing is lost;
#   (c) with the configuration fixed, the server leads again in a new
#       epoch, and the jobs held back run.
use strict;
use warnings;

use HaschedCluster;
use HaschedZooKeeper;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $zk = HaschedZooKeeper->new('e060');
$zk->start;

my $good = $zk->hasched_conf(timeout_ms => 6000, margin_ms => 2000);
my $node = HaschedCluster->primary('primary', conf => $good);
$node->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('pq', '5 minutes');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.ran (tag text, at timestamptz DEFAULT clock_timestamp());
});

sub coordinator
{
	my ($n) = @_;
	return $n->query(
		"SELECT substring(detail from '^[a-z]+') || ' | ' || detail FROM hasched.health() WHERE component = 'coordinator'");
}

sub wait_status
{
	my ($n, $status, $secs) = @_;
	return $n->poll_within($secs // 60,
		"SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'", $status);
}

# ---------------------------------------------------------------------------
# (a) the primary leads
# ---------------------------------------------------------------------------
ok(wait_status($node, 'leader'), 'the primary leads')
  or diag(coordinator($node));
my (undef, $children) = $zk->client('ls', '/hasched/election');
my @znodes = split /\n/, $children;
is(scalar @znodes, 1, 'one election znode');
like($znodes[0], qr/^n_[0-9a-f]{16}_[0-9a-f]{16}_\d{10}$/,
	'named n_<server>_<session>_<sequence>');
my ($seq) = $znodes[0] =~ /_(\d{10})$/;
is(($zk->client('get', '/hasched'))[1], 'hasched coordination root, version 1',
	'the root znode is marked as hasched\'s');
like(($zk->client('get', "/hasched/election/$znodes[0]"))[1],
	qr/^host=\S+ port=${\ $node->port} data_directory=\S+ started=\d+ pid=\d+ boot=[0-9a-f-]+ dir=\d+:\d+$/,
	'the election znode says which server it is');

my ($epoch, $token) = split /\|/,
  $node->query('SELECT epoch || \'|\' || fencing_token FROM hasched.epoch ORDER BY epoch DESC LIMIT 1');
is($token, $seq + 0, 'the newest epoch records the znode sequence number as its fencing token');
like(coordinator($node), qr/^leader \| leader since .*fencing token $token, epoch $epoch,/,
	'health() names the token and the epoch');
is($node->query(q{SELECT count(*) FROM hasched.event WHERE kind = 'leadership'}), '1',
	'a leadership event');

my $id = $node->query(q{SELECT hasched.submit('pq', '{}')});
my $tok = $node->query(q{SELECT token FROM hasched.claim('pq', 'w1', 1)});
like($tok, qr/^$epoch:1:\d+$/, 'lease tokens of the term name its epoch');
$node->query("SELECT hasched.complete($id, '$tok', '{}')");
is($node->job($id, 'state'), 'succeeded', 'the leader accepts a completion');

$node->query(q{SELECT hasched.schedule('tick', '* * * * * *', 'pq', overlap => 'allow')});
ok($node->poll_within(15, q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'tick'}),
	'the leader fires schedules');
my $sj = $node->submit_sql(q{INSERT INTO public.ran (tag) VALUES ('first')});
ok($node->wait_state($sj, 'succeeded'), 'the leader runs SQL jobs');

# ---------------------------------------------------------------------------
# (b) bad input: the server does not act, and says why
# ---------------------------------------------------------------------------

# Restart with these settings appended; then the coordinator's health row
# must reach $status with a detail matching $detail, claims must fail with
# JQ024 and that reason, no schedule may fire and no SQL job run.
sub refused
{
	my ($what, $settings, $status, $detail, $log) = @_;
	my $log_offset = -s $node->logfile;
	$node->append_conf('postgresql.conf', $settings);
	$node->restart;
	ok(wait_status($node, $status, 30), "$what: coordinator $status")
	  or diag(coordinator($node));
	like(coordinator($node), $detail, "$what: health() says why");
	my $err = $node->query_error(q{SELECT * FROM hasched.claim('pq', 'w1', 1)});
	like($err, qr/ERROR:\s+JQ024: cannot claim jobs: this server does not hold hasched's ZooKeeper leadership/,
		"$what: claim refused with JQ024");
	like($err, $detail, "$what: the refusal gives the reason");
	like($err, qr/HINT:\s+Send the request to the server whose hasched.health\(\) shows the coordinator as leader/,
		"$what: with a hint");
	my $fired = $node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'});
	my $held = $node->submit_sql(qq{INSERT INTO public.ran (tag) VALUES ('$what')});
	sleep 3;
	is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'}), $fired,
		"$what: no schedule fires");
	is($node->job($held, 'state'), 'pending', "$what: no SQL job runs");
	like(slurp_file($node->logfile, $log_offset), $log, "$what: the log says why")
	  if defined $log;
	return $held;
}

$zk->client('create', '/foreign', 'somebody else\'s data');
my @held;
push @held, refused('foreign root', "hasched.zookeeper_path = '/foreign'\n", 'error',
	qr{znode /foreign holds data that is not hasched's \("somebody else's data"\)},
	qr{WARNING:  hasched coordinator: znode /foreign holds data that is not hasched's});

$zk->client('create', '/locked', '', 'readonly');
push @held, refused('ACL refusal', "hasched.zookeeper_path = '/locked'\n", 'error',
	qr{ZooKeeper refused to write /locked: no permission},
	qr{WARNING:  hasched coordinator: ZooKeeper refused to write /locked});

# tickTime 500 ms: the ensemble grants 1 to 10 s
push @held, refused('timeout not granted',
	"hasched.zookeeper_path = '/hasched'\nhasched.zookeeper_session_timeout = 20000\n", 'error',
	qr{the ensemble granted a session timeout of 10000 ms, not the 20000 ms of hasched.zookeeper_session_timeout},
	qr{WARNING:  hasched coordinator: the ensemble granted a session timeout of 10000 ms});

push @held, refused('malformed connection string',
	"hasched.zookeeper_session_timeout = 6000\nhasched.zookeeper = '127.0.0.1:99999'\n", 'error',
	qr{hasched.zookeeper = '127.0.0.1:99999' is malformed: "127.0.0.1:99999" has no valid port},
	qr{WARNING:  hasched coordinator: hasched.zookeeper = '127.0.0.1:99999' is malformed});

my $nowhere = PostgreSQL::Test::Cluster::get_free_port();
push @held, refused('unreachable ensemble', "hasched.zookeeper = '127.0.0.1:$nowhere'\n", 'fenced',
	qr{Not connected to ZooKeeper \(hasched.zookeeper = '127.0.0.1:$nowhere'\)});
like(coordinator($node), qr/refused/, 'unreachable ensemble: health() shows the client\'s complaint');

# ---------------------------------------------------------------------------
# (c) fixed: leads again, in a new epoch, and the held jobs run
# ---------------------------------------------------------------------------
$node->append_conf('postgresql.conf', $good);
$node->restart;
ok(wait_status($node, 'leader'), 'configuration fixed: the primary leads again');
my ($epoch2, $token2) = split /\|/,
  $node->query('SELECT epoch || \'|\' || fencing_token FROM hasched.epoch ORDER BY epoch DESC LIMIT 1');
cmp_ok($epoch2, '>', $epoch, 'in a new epoch');
cmp_ok($token2, '>', $token, 'with a higher fencing token');
ok($node->wait_state($_, 'succeeded'), "held SQL job $_ ran") for @held;
is($node->query(q{SELECT count(*) FROM public.ran}), scalar(@held) + 1,
	'each SQL job ran once');
(undef, $children) = $zk->client('ls', '/hasched/election');
is(scalar(split /\n/, $children), 1,
	'one election znode: the earlier sessions\' znodes are gone');

done_testing();
