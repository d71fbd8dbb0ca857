
# Copyright: hasched contributors
#
# 063_zookeeper_hung_primary.pl: a frozen primary wakes up after another
# server took over, and does nothing.
#
# A primary P (leading) and its standby S, both with hasched.zookeeper set
# (session timeout 6 s, margin 2 s); a cron schedule every second whose
# runs are SQL jobs that record where they ran, and a long SQL job running
# when P freezes.  Every process of P is stopped (SIGSTOP) for longer than
# the session timeout; its session expires; S is promoted and leads.  Then
# P is woken (SIGCONT).  The test proves that
#   - S takes over (its coordinator leads once P's session expired) and
#     fires and runs the schedule;
#   - P, woken, commits nothing: no cron run, no SQL job's effect (not even
#     the long job that was running when it froze), no completion; its
#     claims are refused (JQ024); its health() says another server leads;
#     it rejoins the election behind S.
use strict;
use warnings;

use HaschedCluster;
use HaschedZooKeeper;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# HASCHED_ZK_SESSION_MS: longer, production-like timeouts (make zk-long)
my $timeout_ms = $ENV{HASCHED_ZK_SESSION_MS} // 6000;
my $zk = HaschedZooKeeper->new('e063', tick_ms => HaschedZooKeeper::tick_for($timeout_ms));
$zk->start;
my $conf = $zk->hasched_conf(timeout_ms => $timeout_ms, margin_ms => int($timeout_ms / 3));
my $p = HaschedCluster->primary('p', streaming => 1, conf => $conf);
$p->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('pq', '5 minutes');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.ran (k int, port text, at timestamptz DEFAULT clock_timestamp());
	SELECT count(hasched.submit('pq', '{}')) FROM generate_series(1, 20);
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
$p->query(q{SELECT hasched.schedule('tick', '* * * * * *', 'sqlq',
	'{"sql": "INSERT INTO public.ran (k, port) VALUES (0, current_setting(''port''))"}',
	overlap => 'allow', misfire => 'skip')});
ok($p->poll_within(15, q{SELECT count(*) >= 2 FROM public.ran}), 'P runs the schedule');
my $long = $p->submit_sql(q{SELECT pg_sleep(3); INSERT INTO public.ran (k, port) VALUES (-1, current_setting('port'))});
ok($p->wait_busy($long), 'a long SQL job is running on P');
my $claimed = $p->query(q{SELECT job_id || ' ' || token FROM hasched.claim('pq', 'w', 1)});
$p->wait_for_catchup($s);

# ---------------------------------------------------------------------------
# freeze P: the postmaster and every child
# ---------------------------------------------------------------------------
sub processes_of
{
	my ($pm) = @_;
	my @pids = ($pm);
	opendir(my $d, '/proc') or die "/proc: $!";
	for my $pid (grep { /^\d+$/ } readdir $d)
	{
		open my $fh, '<', "/proc/$pid/stat" or next;
		my $stat = <$fh> // '';
		close $fh;
		push @pids, $pid if $stat =~ /^\d+ \(.*\) \S (\d+) / && $1 == $pm;
	}
	closedir $d;
	return @pids;
}
my @frozen = processes_of($p->postmaster_pid);
my $t_stop = $s->query('SELECT clock_timestamp()');
kill 'STOP', @frozen;
my $t0 = time;
diag(scalar(@frozen) . ' processes of P stopped');

# past the session timeout (the ensemble rounds expiry up to its tick)
sleep(($timeout_ms + 2000) / 1000);
my $t_promote = time;
$s->promote;
ok($s->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'S leads after P\'s session expired') or diag(coordinator($s));
diag(sprintf('S leads %.1f s after P froze, %.2f s after pg_ctl promote was called (health() polled every 0.1 s)',
		time - $t0, time - $t_promote));
ok($s->poll_within(15, qq{SELECT count(*) >= 2 FROM public.ran WHERE at > '$t_stop'}),
	'S runs the schedule');

# ---------------------------------------------------------------------------
# wake P
# ---------------------------------------------------------------------------
my $t_cont = $s->query('SELECT clock_timestamp()');
kill 'CONT', @frozen;
ok($p->poll_within(30, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'fenced'), 'P, woken, is fenced') or diag(coordinator($p));
sleep 4;
like(coordinator($p), qr/Another server holds hasched's ZooKeeper leadership: host=\S+ port=${\ $s->port} /,
	'P\'s health() names S as the leader');
is($p->query(qq{SELECT count(*) FROM public.ran WHERE at > '$t_stop'}), '0',
	'P committed no SQL job\'s effect after it froze (not even the long job)');
is($p->query(qq{SELECT count(*) FROM hasched.job WHERE schedule = 'tick' AND created_at > '$t_stop'}), '0',
	'P fired no cron run');
is($p->query(qq{SELECT count(*) FROM hasched.job WHERE finished_at > '$t_stop' AND state = 'succeeded'}), '0',
	'P recorded no success');
is($p->job($long, 'state'), 'running', 'the long job is left running under the old epoch on P');
my ($id, $tok) = split / /, $claimed;
like($p->query_error("SELECT hasched.complete($id, '$tok', '{}')"), qr/JQ024/,
	'P refuses a completion (JQ024)');
like($p->query_error(q{SELECT * FROM hasched.claim('pq', 'w', 1)}), qr/JQ024/,
	'P refuses claims (JQ024)');
my (undef, $children) = $zk->client('ls', '/hasched/election');
is(scalar(split /\n/, $children), 2, 'P rejoined the election, behind S');
my $log = slurp_file($p->logfile);
like($log, qr/hasched coordinator: ZooKeeper session 0x[0-9a-f]+ expired; starting a new one/,
	'P\'s log: its session expired');
ok($s->poll_within(15, qq{SELECT count(*) >= 2 FROM public.ran WHERE at > '$t_cont'}),
	'S goes on');

done_testing();
