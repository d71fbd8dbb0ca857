
# Copyright: hasched contributors
#
# 077_availability.pl: measured availability across a real promotion.
#
# A primary and a streaming standby, both with hasched preloaded.  The test
# proves that
#   (a) bad input changes nothing: availability() with a NULL bound, until
#       not after since, or a window that begins in the future is refused
#       with JQ025; hasched.slo_target outside (0, 100) is refused at SET
#       (22023) and keeps its value;
#   (b) the manual mode shows as an incident: set_mode('paused') for about
#       a second is a 'paused' incident of that length;
#   (c) a scheduler that was down within an epoch (terminated; the
#       postmaster restarts it after 1 s) is a 'scheduler_down' incident,
#       recorded by its first heartbeat after the restart;
#   (d) while the primary is down, availability() asked on the standby
#       shows the outage going on ('no_round': no heartbeat lately);
#   (e) after the standby is promoted, the time without a primary is a
#       'no_primary' incident inferred from the epochs: from the last
#       heartbeat of epoch 1 (at most about a second before the crash) to
#       the first round of epoch 2 (after the promotion); downtime is the
#       union of the incidents, uptime and the error budget follow from it
#       and hasched.slo_target.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/077_availability.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $conf = q{
hasched.scheduler_naptime = '200ms'
hasched.max_executors = 1
};
my $primary = HaschedCluster->primary('avail', streaming => 1, conf => $conf);
my $standby = HaschedCluster->standby($primary, 'avail_standby', backup => 'base', conf => $conf);
ok($primary->wait_scheduler('primary'), 'the primary schedules');
ok($primary->poll_within(10, q{SELECT last_round_at IS NOT NULL FROM hasched.epoch WHERE epoch = 1}),
	'its heartbeat is in epoch 1');
my $since = $primary->query('SELECT now()');
sleep(1);

# ---------------------------------------------------------------------------
# (a) bad input
# ---------------------------------------------------------------------------
like($primary->query_error(q{SELECT * FROM hasched.availability(NULL, now())}),
	qr/JQ025.*needs both since and until/s, 'since NULL: JQ025');
like($primary->query_error(q{SELECT * FROM hasched.availability(now() - interval '1 hour', NULL)}),
	qr/JQ025/, 'until NULL: JQ025');
like($primary->query_error(q{SELECT * FROM hasched.availability(now(), now() - interval '1 hour')}),
	qr/JQ025.*must be after since/s, 'until before since: JQ025');
like($primary->query_error(q{SELECT * FROM hasched.availability(now(), now())}),
	qr/JQ025/, 'an empty window: JQ025');
like($primary->query_error(q{SELECT * FROM hasched.availability(now() + interval '1 hour', now() + interval '2 hours')}),
	qr/JQ025.*not in the past/s, 'a window in the future: JQ025');
for my $v ('100', '0', '150', '-1')
{
	like($primary->query_error("SET hasched.slo_target = $v"), qr/22023/,
		"SET hasched.slo_target = $v is refused (22023)");
}
like($primary->query_error(q{SET hasched.slo_target = 100}), qr/must be above 0 and below 100/,
	'the message says the range');
is($primary->query(q{SHOW hasched.slo_target}), '99.99', 'the default is 99.99');

# ---------------------------------------------------------------------------
# (b) the manual mode
# ---------------------------------------------------------------------------
$primary->query(q{SELECT hasched.set_mode('paused', 'availability test')});
usleep(1_000_000);
$primary->query(q{SELECT hasched.set_mode('normal')});

# ---------------------------------------------------------------------------
# (c) the scheduler down for a moment
# ---------------------------------------------------------------------------
my $pid = $primary->scheduler_pid;
$primary->query("SELECT pg_terminate_backend($pid)");
ok($primary->poll_within(15, q{SELECT count(*) = 1 FROM hasched.event WHERE kind = 'scheduler_down'}),
	'the restarted scheduler records a scheduler_down event');
my $gap = $primary->query(q{SELECT (detail->>'seconds')::numeric FROM hasched.event WHERE kind = 'scheduler_down'});
cmp_ok($gap, '>=', 1, "the gap covers the restart delay ($gap s)");
cmp_ok($gap, '<', 10, 'and not much more');

# ---------------------------------------------------------------------------
# (d) the primary crashes; the standby sees the outage going on
# ---------------------------------------------------------------------------
$primary->wait_for_catchup($standby);
my $last_beat = $standby->query(q{SELECT extract(epoch FROM last_round_at) FROM hasched.epoch WHERE epoch = 1});
my $t_crash = time;
$primary->stop('immediate');
ok( $standby->poll_within(20,
		"SELECT incidents @> '[{\"kind\": \"no_round\"}]' FROM hasched.availability('$since', now())"),
	'on the standby, once no heartbeat came for the allowed gap (5 s), availability() shows an ongoing no_round incident');

# ---------------------------------------------------------------------------
# (e) promotion
# ---------------------------------------------------------------------------
$standby->promote;
my $t_promote = time;
ok($standby->wait_scheduler('primary'), 'the promoted standby schedules');
ok($standby->poll_within(10, q{SELECT last_round_at IS NOT NULL FROM hasched.epoch WHERE epoch = 2}),
	'epoch 2 opened, with its heartbeat');

my $r = $standby->query(
	qq{SELECT extract(epoch FROM measured_until - measured_from), uptime_pct, extract(epoch FROM downtime),
	          slo_target, extract(epoch FROM error_budget), extract(epoch FROM error_budget_left),
	          error_budget_left_pct, jsonb_array_length(incidents)
	     FROM hasched.availability('$since', now())});
my ($total, $uptime, $down, $target, $budget, $left, $left_pct, $n) = split /\|/, $r;
note("availability after the failover: window $total s, uptime $uptime %, downtime $down s, "
	  . "SLO $target %, budget $budget s, left $left s ($left_pct %), $n incidents");
note($standby->query(
	qq{SELECT string_agg(i->>'kind' || ' ' || (i->>'seconds') || ' s', ', ')
	     FROM hasched.availability('$since', now()) a, jsonb_array_elements(a.incidents) i}));

my $np = $standby->query(
	qq{SELECT extract(epoch FROM (i->>'from')::timestamptz), extract(epoch FROM (i->>'until')::timestamptz),
	          i->'detail'->>'from_epoch', i->'detail'->>'to_epoch'
	     FROM hasched.availability('$since', now()) a, jsonb_array_elements(a.incidents) i
	    WHERE i->>'kind' = 'no_primary'});
my ($np_from, $np_until, $from_epoch, $to_epoch) = split /\|/, $np;
ok(defined $np_until, 'a no_primary incident');
is("$from_epoch-$to_epoch", '1-2', 'between epochs 1 and 2');
cmp_ok($np_from, '>=', $last_beat, 'it begins at the last heartbeat of epoch 1 the standby received');
cmp_ok($np_from, '<=', $t_crash, 'no later than the crash');
cmp_ok($t_crash - $np_from, '<', 3, sprintf('and less than 3 s before it (%.2f s)', $t_crash - $np_from));
cmp_ok($np_until, '>=', $t_promote - 1, 'it ends at the first round of epoch 2, after the promotion');
cmp_ok($np_until - $t_promote, '<', 5, sprintf('within seconds of it (%.2f s)', $np_until - $t_promote));

my $kinds = $standby->query(
	qq{SELECT string_agg(DISTINCT i->>'kind', ' ')
	     FROM hasched.availability('$since', now()) a, jsonb_array_elements(a.incidents) i});
is($kinds, 'no_primary paused scheduler_down', 'the incidents: no_primary, paused, scheduler_down');
my $paused = $standby->query(
	qq{SELECT (i->>'seconds')::numeric
	     FROM hasched.availability('$since', now()) a, jsonb_array_elements(a.incidents) i
	    WHERE i->>'kind' = 'paused'});
cmp_ok($paused, '>=', 1, "the paused incident lasted about a second ($paused s)");
cmp_ok($paused, '<', 5, 'not more');
cmp_ok($down, '>=', $np_until - $np_from + $paused, 'downtime covers the incidents');
cmp_ok($down, '<=', $np_until - $np_from + $paused + $gap + 0.01, 'and is their union, no more');
cmp_ok(abs($uptime - 100 * (1 - $down / $total)), '<', 0.001, "uptime is 1 - downtime / window ($uptime %)");
cmp_ok(abs($budget - $total * 0.0001), '<', 0.01, 'the error budget is 0.01 % of the window');
cmp_ok(abs($left - ($budget - $down)), '<', 0.01, 'what is left of it: budget - downtime (negative: overspent)');
my $left99 = $standby->query(
	qq{SET hasched.slo_target = 99; SELECT extract(epoch FROM error_budget)
	     FROM hasched.availability('$since', now())});
cmp_ok(abs($left99 - $total * 0.01), '<', 1, 'with hasched.slo_target = 99, 1 % of the window');

$standby->stop;
done_testing();
