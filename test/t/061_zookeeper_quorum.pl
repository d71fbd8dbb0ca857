
# Copyright: hasched contributors
#
# 061_zookeeper_quorum.pl: the leader while ZooKeeper nodes die.
#
# A three-node ensemble and one primary (session timeout 6 s, fencing
# margin 2 s), with a pull worker claiming and completing jobs in a loop
# (a procedure that commits after each claim and records each outcome) and
# a cron schedule firing every second.  The test proves that
#   (a) one ZooKeeper node killed (the ensemble's own leader, the harder
#       case: the ensemble elects again): scheduling and dispatch go on,
#       no claim is refused, no cron run is missed; the longest gap between
#       two successful claims and the latest cron run are measured;
#   (b) two of three killed (quorum lost): the primary fences itself within
#       the session timeout (measured from the kill to the first refused
#       claim), health() says why, no schedule fires;
#   (c) quorum back: it leads again, in a new epoch, and fires again.
use strict;
use warnings;

use IPC::Run;
use HaschedCluster;
use HaschedZooKeeper;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# HASCHED_ZK_SESSION_MS: longer, production-like timeouts (make zk-long)
my $timeout_ms = $ENV{HASCHED_ZK_SESSION_MS} // 6000;
my $margin_ms = int($timeout_ms / 3);

my $zk = HaschedZooKeeper->new('e061', tick_ms => HaschedZooKeeper::tick_for($timeout_ms));
$zk->start;
my $node = HaschedCluster->primary('primary',
	conf => $zk->hasched_conf(timeout_ms => $timeout_ms, margin_ms => $margin_ms));
$node->query(q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('pq', '5 minutes'), ('cronq', '5 minutes');
	SELECT count(hasched.submit('pq', '{}')) FROM generate_series(1, 3000);
	CREATE TABLE public.probe (at timestamptz NOT NULL, ok boolean NOT NULL, state text);
	CREATE TABLE public.probe_stop (stop boolean);
	CREATE PROCEDURE public.probe_loop() LANGUAGE plpgsql AS $$
	DECLARE
		r record;
	BEGIN
		LOOP
			EXIT WHEN EXISTS (SELECT 1 FROM public.probe_stop);
			BEGIN
				SELECT * INTO r FROM hasched.claim('pq', 'prober', 1);
				IF r.job_id IS NOT NULL THEN
					PERFORM hasched.complete(r.job_id, r.token, '{}');
				END IF;
				INSERT INTO public.probe VALUES (clock_timestamp(), r.job_id IS NOT NULL, NULL);
			EXCEPTION WHEN OTHERS THEN
				INSERT INTO public.probe VALUES (clock_timestamp(), false, SQLSTATE);
			END;
			COMMIT;
			PERFORM pg_sleep(0.02);
		END LOOP;
	END $$;
});

sub status
{
	return $node->query(
		"SELECT substring(detail from '^[a-z]+') || ' | ' || detail FROM hasched.health() WHERE component = 'coordinator'");
}
ok($node->poll_within(60, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'the primary leads') or diag(status());
my $epoch1 = $node->query('SELECT max(epoch) FROM hasched.epoch');
$node->query(q{SELECT hasched.schedule('tick', '* * * * * *', 'cronq', overlap => 'allow')});

# ---------------------------------------------------------------------------
# (a) one node killed: the ensemble's leader
# ---------------------------------------------------------------------------
my ($out, $err) = ('', '');
my $load = IPC::Run::start(
	[ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'),
		'-c', 'CALL public.probe_loop()' ],
	'>', \$out, '2>', \$err);
ok($node->poll_within(20, q{SELECT count(*) > 20 FROM public.probe WHERE ok}),
	'the pull worker claims and completes');
sleep 1;
my $zleader = $zk->leader_index;
ok(defined $zleader, "ZooKeeper node $zleader leads the ensemble") or $zleader = 1;
my $log_offset = -s $node->logfile;
my $t_kill = $node->query('SELECT clock_timestamp()');
$zk->kill_node($zleader);
my $window = ($timeout_ms - $margin_ms) / 1000 + 2;    # past the point where it would have fenced
sleep $window;
my $t_end = $node->query('SELECT clock_timestamp()');
$zk->start_node($zleader);

is($node->query("SELECT count(*) FROM public.probe WHERE NOT ok AND at > '$t_kill'"), '0',
	'one node lost: no claim refused, none failed, none came back empty');
my $gap = $node->query(qq{
	SELECT round(1000 * extract(epoch FROM max(gap)))::int FROM (
		SELECT at - lag(at) OVER (ORDER BY at) AS gap FROM public.probe
		 WHERE ok AND at BETWEEN '$t_kill'::timestamptz - interval '1 second' AND '$t_end') g});
my $claims = $node->query(
	"SELECT count(*) FROM public.probe WHERE ok AND at BETWEEN '$t_kill' AND '$t_end'");
diag("one ZooKeeper node (the ensemble's leader) killed: $claims claims in $window s,"
	  . " the longest gap between two successful claims $gap ms");
cmp_ok($gap, '<', 2000, 'one node lost: dispatch goes on (no gap near the fencing point)');

my ($fires, $late) = split /\|/, $node->query(qq{
	SELECT count(*) || '|' || round(1000 * extract(epoch FROM max(created_at - fire_at)))::int
	  FROM hasched.job WHERE schedule = 'tick'
	   AND fire_at BETWEEN '$t_kill'::timestamptz + interval '1 second' AND '$t_end'::timestamptz - interval '1 second'});
my $seconds = $node->query(qq{
	SELECT count(*) FROM generate_series(date_trunc('second', '$t_kill'::timestamptz) + interval '2 seconds',
	                                    '$t_end'::timestamptz - interval '1 second', interval '1 second')});
is($fires, $seconds, "one node lost: every cron second fired ($fires)");
diag("one ZooKeeper node killed: $fires cron runs, the latest $late ms after its time");
unlike(slurp_file($node->logfile, $log_offset), qr/hasched coordinator: fenced/,
	'one node lost: the coordinator never fenced');

$node->query('INSERT INTO public.probe_stop VALUES (true)');
$load->finish;
is($?, 0, 'the pull worker\'s procedure ended cleanly') or diag($err);

# ---------------------------------------------------------------------------
# (b) two nodes killed: quorum lost, the primary fences itself
# ---------------------------------------------------------------------------
$zk->wait_serving(30);
ok($node->poll_within(30, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'still leading before the second loss');
my @down = grep { $_ != 1 } 1 .. 3;    # nodes 2 and 3
my $t0 = time;
$zk->kill_node($_) for @down;
my ($t_fenced, $refusal);
while (time < $t0 + 30)
{
	my $e = $node->query_error(q{SELECT * FROM hasched.claim('pq', 'w', 1)});
	if ($e =~ /JQ024/)
	{
		$t_fenced = time;
		$refusal = $e;
		last;
	}
	usleep(50_000);
}
ok(defined $t_fenced, 'quorum lost: claims are refused (JQ024)');
$t_fenced //= time;
my $fence_ms = int(1000 * ($t_fenced - $t0));
diag("two of three ZooKeeper nodes killed: fenced after $fence_ms ms"
	  . " (session timeout $timeout_ms ms, margin $margin_ms ms)");
cmp_ok($fence_ms, '<', $timeout_ms, 'it fenced itself within the session timeout');
like($refusal // '', qr/No answer from ZooKeeper for \d+ ms: this server fenced itself/,
	'the refusal says why');
like(status(), qr/^fenced \| fenced \(\w+\): No answer from ZooKeeper for \d+ ms/,
	'health() says why');
sleep 1;
my $fired = $node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'});
sleep 3;
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'}), $fired,
	'fenced: no schedule fires');

# ---------------------------------------------------------------------------
# (c) quorum back
# ---------------------------------------------------------------------------
my $t1 = time;
$zk->start_node($_, nowait => 1) for @down;
ok($node->poll_within(90, q{SELECT substring(detail from '^[a-z]+') FROM hasched.health() WHERE component = 'coordinator'},
		'leader'), 'quorum back: the primary leads again') or diag(status());
diag(sprintf('quorum back: leading again %.1f s after the two nodes were restarted', time - $t1));
cmp_ok($node->query('SELECT max(epoch) FROM hasched.epoch'), '>', $epoch1, 'in a new epoch');
ok($node->poll_within(15, "SELECT count(*) > $fired FROM hasched.job WHERE schedule = 'tick'"),
	'schedules fire again');
my $id = $node->query(q{SELECT job_id FROM hasched.claim('pq', 'w', 1)});
like($id, qr/^\d+$/, 'claims are answered again');

done_testing();
