# Copyright: hasched contributors
#
# 083_amqp_failover.pl: a primary failover while jobs are dispatched
# (primary + streaming standby + a real broker, quorum queues).
#
#   - on the standby the dispatcher does not run (health says standby);
#   - after the primary dies and the standby is promoted, the new primary's
#     dispatcher takes over: the jobs the old primary dispatched that no
#     worker started are dispatched again under the new epoch (attempt 2);
#     their old messages' tokens are stale (JQ006); jobs started before the
#     failover keep their lease and complete with their token;
#   - a worker that drains the broker afterwards (start, then complete, and
#     drops what start() refuses) records every job exactly once: none lost,
#     none recorded twice.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/083_amqp_failover.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);

my $mq = HaschedRabbitMQ->new('mq073');
$mq->start;

my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => $mq->hasched_conf . "hasched.dispatch_lease = '10min'\n");
$primary->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('mq', 'amqp', '10 minutes');
});
my $standby = HaschedCluster->standby($primary, 'standby');

my @ids = split /\n/, $primary->query(
	q{SELECT unnest(hasched.submit_many('mq', array_fill('{"f": 1}'::jsonb, ARRAY[20])))});
my $idlist = join(',', @ids);
ok($primary->poll_within(30, "SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND state = 'dispatched'", '20'),
	'20 jobs dispatched by the primary');
my %old_token = map { split /\|/ } split /\n/, $primary->query(
	"SELECT id || '|' || epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id IN ($idlist)");

# a worker started 5 of them, and completed 2
my @started = @ids[ 0 .. 4 ];
for my $id (@started)
{
	$primary->query("SELECT count(*) FROM hasched.start($id, '$old_token{$id}', 'w-old')");
}
for my $id (@started[ 0 .. 1 ])
{
	$primary->query("SELECT hasched.complete($id, '$old_token{$id}', '{\"by\": \"old\"}')");
}
$primary->wait_for_catchup($standby);
is($standby->query("SELECT status || ' ' || split_part(detail, ':', 1) FROM hasched.health() WHERE component = 'dispatcher'"),
	'ok standby', 'on the standby the dispatcher is not running (health: ok, standby)');
my $old_epoch = $primary->query('SELECT max(epoch) FROM hasched.epoch');

# ---------------------------------------------------------------------------
# failover
# ---------------------------------------------------------------------------
$primary->stop('immediate');
my $t0 = time;
$standby->promote;
ok($standby->wait_scheduler('primary'), 'the standby is promoted and its scheduler active');
my $new_epoch = $standby->query('SELECT max(epoch) FROM hasched.epoch');
cmp_ok($new_epoch, '>', $old_epoch, 'a new epoch is open');
my @unstarted = @ids[ 5 .. 19 ];
my $unlist = join(',', @unstarted);
ok($standby->poll_within(60,
	"SELECT count(*) FROM hasched.job WHERE id IN ($unlist) AND state = 'dispatched' AND epoch = $new_epoch AND attempt = 2",
	'15'),
	'the 15 unstarted jobs are dispatched again by the new primary, under the new epoch, attempt 2');
diag(sprintf('re-dispatched %.1f s after the promotion', time - $t0));
like($standby->runs_of($unstarted[0]), qr/^1:dispatch_expired:dispatched under epoch $old_epoch and not started before the failover/,
	'their first attempt is recorded as not started before the failover');
like($standby->query_error("SELECT * FROM hasched.start($unstarted[0], '$old_token{$unstarted[0]}')"),
	qr/ERROR:\s+JQ006/, 'an old message\'s token is stale on the new primary');
is($standby->query("SELECT count(*) FROM hasched.job WHERE id IN ($started[2], $started[3], $started[4]) AND state = 'running'"),
	'3', 'the jobs started before the failover are still running');

# ---------------------------------------------------------------------------
# a worker drains the broker: start, complete; stale or finished: drop
# ---------------------------------------------------------------------------
my (%ran, $stale, $finished) = ((), 0, 0);
for my $id (@started[ 2 .. 4 ])
{
	# the old worker finishes the jobs it started
	$standby->query("SELECT hasched.complete($id, '$old_token{$id}', '{\"by\": \"old\"}')");
	$ran{$id}++;
}
for my $m ($mq->get('hasched.mq.medium', 100))
{
	my ($id, $token) = $m->{body} =~ /^\{"job_id": (\d+), "attempt": \d+, "lease_token": "([^"]+)"/
	  or next;
	my ($rc, $out, $err) = $standby->psql_verbose("SELECT count(*) FROM hasched.start($id, '$token', 'w-new')");
	if ($rc != 0)
	{
		$stale++ if $err =~ /JQ006/;
		next;
	}
	if ($out eq '0')
	{
		$finished++;
		next;
	}
	$standby->query("SELECT hasched.complete($id, '$token', '{\"by\": \"new\"}')");
	$ran{$id}++;
}
is(scalar(grep { ($ran{$_} // 0) > 1 } @ids), 0, 'no job ran twice');
is($standby->query("SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND state = 'succeeded'"),
	'20', 'every job succeeded: none lost');
is($standby->query("SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND result->>'by' = 'new'"),
	'15', 'the re-dispatched ones by the new messages');
cmp_ok($stale, '>=', 15, "the old messages of the re-dispatched jobs were refused as stale ($stale)");
diag("messages: $stale stale, $finished already finished");

$standby->stop;
$mq->stop;
done_testing();
