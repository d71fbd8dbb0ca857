
# Copyright: hasched contributors
#
# 062_zookeeper_split_brain.pl: a standby promoted while the old primary
# stays up: only the ZooKeeper leader acts.
#
# A primary P and its standby S, both with hasched.zookeeper set, a cron
# schedule every second, SQL jobs that come due during the split, and pull
# workers pointed at both servers.  S is promoted behind the ensemble's back
# (as a standby promoted by hand, or a Patroni that was paused) while P stays
# up and reachable.  Both are then primaries; P still holds hasched's
# ZooKeeper leadership (its session lives), so S joins the election behind
# it and does nothing.  The test proves, with a checker over the job rows,
# lease tokens and effects of both servers, that during the split
#   - no pull job had a completion accepted on both (S accepts none: JQ024),
#     and a token handed out by P is refused on S;
#   - no cron run fired on both (S fires none);
#   - no SQL job ran on both (S runs none);
# while P goes on with all of them; S's health() names the leader.  Then S
# is stopped (demoted, as Patroni would), and P carries on.
use strict;
use warnings;

use HaschedCluster;
use HaschedZooKeeper;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $split_secs = 8;
# HASCHED_ZK_SESSION_MS: longer, production-like timeouts (make zk-long)
my $timeout_ms = $ENV{HASCHED_ZK_SESSION_MS} // 6000;
my $zk = HaschedZooKeeper->new('e062', tick_ms => HaschedZooKeeper::tick_for($timeout_ms));
$zk->start;
my $conf = $zk->hasched_conf(timeout_ms => $timeout_ms, margin_ms => int($timeout_ms / 3));
my $p = HaschedCluster->primary('p', streaming => 1, conf => $conf);
$p->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('pq', '5 minutes'), ('cronq', '5 minutes');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.ran (k int, port text, at timestamptz DEFAULT clock_timestamp());
	SELECT count(hasched.submit('pq', jsonb_build_object('n', i))) FROM generate_series(1, 600) i;
});
my $s = HaschedCluster->standby($p, 's');

sub coordinator
{
	my ($n) = @_;
	return $n->query(
		"SELECT substring(detail from '^[a-z]+') || ' | ' || detail FROM hasched.health() WHERE component = 'coordinator'");
}
ok($p->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'P leads') or diag(coordinator($p));
ok($s->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'standby'), 'S is a standby, not in the election') or diag(coordinator($s));

# a cron run every second; 30 SQL jobs due during the split
$p->query(q{SELECT hasched.schedule('tick', '* * * * * *', 'cronq', overlap => 'allow', misfire => 'skip')});
for my $k (1 .. 30)
{
	$p->submit_sql(qq{INSERT INTO public.ran (k, port) VALUES ($k, current_setting('port'))},
		run_at => "now() + interval '4 seconds'");
}
$p->wait_for_catchup($s);

# ---------------------------------------------------------------------------
# the split
# ---------------------------------------------------------------------------
my $t_promote = $s->query('SELECT clock_timestamp()');
$s->promote;
ok($s->poll_within(30, q{SELECT NOT pg_is_in_recovery()}), 'S is promoted: two primaries');
ok($s->poll_within(30, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'fenced'), 'S is fenced');
my $port_p = $p->port;
ok($s->poll_within(30, "SELECT detail LIKE '%Another server holds hasched''s ZooKeeper leadership: host=% port=$port_p %'"
		  . " FROM hasched.health() WHERE component = 'coordinator'"),
	'S joins the election; its health() names the leader, P') or diag(coordinator($s));

my %accepted = (p => 0, s => 0);
my %refused = (p => 0, s => 0);
my ($cross_tries, $cross_accepted) = (0, 0);
my $end = time + $split_secs;
while (time < $end)
{
	for my $pair ([ 'p', $p ], [ 's', $s ])
	{
		my ($name, $n) = @$pair;
		my ($rc, $out, $err) = $n->psql_verbose(
			"SELECT job_id || ' ' || token FROM hasched.claim('pq', 'worker-$name', 3)");
		if ($rc != 0)
		{
			$refused{$name}++ if $err =~ /JQ024/;
			next;
		}
		for my $line (split /\n/, $out)
		{
			my ($id, $tok) = split / /, $line;
			# first try the token on the other server: refused
			if ($name eq 'p')
			{
				$cross_tries++;
				my ($crc) = $s->psql_verbose("SELECT hasched.complete($id, '$tok', '{}')");
				$cross_accepted++ if $crc == 0;
			}
			my ($crc) = $n->psql_verbose("SELECT hasched.complete($id, '$tok', '{}')");
			$accepted{$name}++ if $crc == 0;
		}
	}
}
diag("split of $split_secs s: completions accepted on P $accepted{p}, on S $accepted{s};"
	  . " claims refused on S $refused{s}; P's tokens tried on S $cross_tries, accepted $cross_accepted");
cmp_ok($accepted{p}, '>', 0, 'P, the leader, hands out and takes back jobs');
is($accepted{s}, 0, 'S hands out nothing');
cmp_ok($refused{s}, '>', 0, 'S refuses claims with JQ024');
is($refused{p}, 0, 'P refuses none');
is($cross_accepted, 0, 'no token of P is accepted on S');
ok($p->poll_within(30, q{SELECT count(*) = 30 FROM public.ran}), 'P ran the SQL jobs');

# ---------------------------------------------------------------------------
# the checker, over both servers
# ---------------------------------------------------------------------------
sub set_of
{
	my ($n, $sql) = @_;
	return { map { $_ => 1 } split /\n/, $n->query($sql) };
}
sub both
{
	my ($a, $b) = @_;
	return scalar grep { $b->{$_} } keys %$a;
}
my $pull_sql = qq{SELECT id FROM hasched.job WHERE queue = 'pq' AND state = 'succeeded' AND finished_at > '$t_promote'};
my $cron_sql = qq{SELECT fire_at FROM hasched.job WHERE schedule = 'tick' AND created_at > '$t_promote'};
my $ran_sql = qq{SELECT k FROM public.ran WHERE at > '$t_promote'};
my %pull = (p => set_of($p, $pull_sql), s => set_of($s, $pull_sql));
my %cron = (p => set_of($p, $cron_sql), s => set_of($s, $cron_sql));
my %ran = (p => set_of($p, $ran_sql), s => set_of($s, $ran_sql));
my $pull_both = both($pull{p}, $pull{s});
my $cron_both = both($cron{p}, $cron{s});
my $ran_both = both($ran{p}, $ran{s});
diag(sprintf('split-brain checker: pull jobs with an accepted result on P %d, on S %d, on both %d;'
		  . ' cron runs fired on P %d, on S %d, on both %d; SQL jobs run on P %d, on S %d, on both %d',
		scalar keys %{ $pull{p} }, scalar keys %{ $pull{s} }, $pull_both,
		scalar keys %{ $cron{p} }, scalar keys %{ $cron{s} }, $cron_both,
		scalar keys %{ $ran{p} }, scalar keys %{ $ran{s} }, $ran_both));
is($pull_both, 0, 'no job had two accepted results');
is($cron_both, 0, 'no cron run fired on both');
is($ran_both, 0, 'no SQL job ran on both');
cmp_ok(scalar keys %{ $cron{p} }, '>=', $split_secs - 2, 'P fired the cron runs of the split');
is(scalar keys %{ $cron{s} }, 0, 'S fired none');
is($s->query(qq{SELECT count(*) FROM hasched.epoch WHERE started_at > '$t_promote'}), '0',
	'S opened no epoch');
my (undef, $children) = $zk->client('ls', '/hasched/election');
is(scalar(split /\n/, $children), 2, 'both primaries are in the election, S behind P');

# ---------------------------------------------------------------------------
# S is demoted (stopped, as Patroni would to rewind it); P carries on
# ---------------------------------------------------------------------------
$s->stop('fast');
(undef, $children) = $zk->client('ls', '/hasched/election');
is(scalar(split /\n/, $children), 1, 'S\'s election znode went with its session');
my $fires = $p->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'});
ok($p->poll_within(10, "SELECT count(*) > $fires FROM hasched.job WHERE schedule = 'tick'"),
	'P goes on firing');
is(coordinator($p) =~ /^leader/ ? 1 : 0, 1, 'P still leads');

done_testing();
