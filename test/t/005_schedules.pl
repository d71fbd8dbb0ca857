
# Copyright: hasched contributors
#
# 005_schedules.pl: cron schedules fired by the scheduler on one server.
#
# Proves, with the real scheduler and executors:
#   - precision: a '* * * * * *' schedule fires once every second, on the
#     whole second, and its jobs are created within a few milliseconds;
#   - overlap policies, with a 1-second schedule whose job takes 2.5 s:
#     skip (runs never overlap; the skipped fires are overlap_skipped
#     events), queue (runs never overlap; the next run starts as soon as the
#     previous one ends; nothing is skipped), allow (runs overlap);
#   - misfire policies across 3 s of downtime: skip (one misfire_skipped
#     event, no catch-up run) and run_once (exactly one catch-up run for the
#     missed time, not one per missed second);
#   - time zones: next runs across the changes to and from summer time in
#     America/New_York, in Asia/Kolkata (+5:30), and live: schedules in
#     Asia/Kolkata and America/New_York fire at the instant their local
#     wall-clock time names, on a server whose own time zone is a third one;
#   - refusals: unknown time zone (JQ020), invalid spec (JQ019), duplicate
#     name (JQ021; replace => true changes it), unknown name (JQ022).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/005_schedules.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = HaschedCluster->primary(
	'cron', conf => q{
hasched.max_executors = 4
hasched.misfire_threshold = '500ms'
# neither UTC nor a zone of the schedules: wall-clock times must come from
# the schedule's time zone, never the server's
timezone = 'Pacific/Chatham'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
});

# Create a schedule on sqlq running $sql; extra named arguments as SQL text.
sub schedule
{
	my ($name, $spec, $sql, $args) = @_;
	$args = defined $args ? ", $args" : '';
	return $node->query(
		"SELECT hasched.schedule('$name', '$spec', 'sqlq', jsonb_build_object('sql', \$j\$$sql\$j\$)$args)");
}

# Remove a schedule and wait until none of its jobs is unfinished.
sub unschedule_and_drain
{
	my ($name) = @_;
	$node->query("SELECT hasched.unschedule('$name')");
	return $node->poll(
		"SELECT count(*) = 0 FROM hasched.job WHERE schedule = '$name'"
		  . " AND state NOT IN ('succeeded', 'dead', 'cancelled')");
}

# Pairs of runs of a schedule whose [started_at, finished_at] intersect.
sub overlapping_pairs
{
	my ($name) = @_;
	return $node->query(
		"SELECT count(*) FROM hasched.job a JOIN hasched.job b"
		  . " ON b.schedule = a.schedule AND b.id > a.id"
		  . " WHERE a.schedule = '$name' AND a.started_at < b.finished_at AND b.started_at < a.finished_at");
}

sub events
{
	my ($kind, $name) = @_;
	return $node->query("SELECT count(*) FROM hasched.event WHERE kind = '$kind' AND detail->>'schedule' = '$name'");
}

ok($node->wait_scheduler('primary'), 'the scheduler reports ok as primary');

# ---------------------------------------------------------------------------
# precision of a 1-second schedule
# ---------------------------------------------------------------------------
schedule('precise', '* * * * * *', 'SELECT 1', q{overlap => 'allow'});
ok($node->poll(q{SELECT count(*) >= 15 FROM hasched.job WHERE schedule = 'precise'}),
	'the 1-second schedule fired 15 times');
ok(unschedule_and_drain('precise'), 'unscheduled; its jobs are done');
my ($n, $whole, $distinct, $span, $p50, $p99, $max, $under100, $min) = split /\|/, $node->query(
	q{SELECT count(*),
	         count(*) FILTER (WHERE fire_at = date_trunc('second', fire_at)),
	         count(DISTINCT fire_at),
	         extract(epoch FROM max(fire_at) - min(fire_at))::int,
	         round(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag)::numeric, 1),
	         round(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag)::numeric, 1),
	         round(max(lag)::numeric, 1),
	         count(*) FILTER (WHERE lag < 100),
	         round(min(lag)::numeric, 1)
	    FROM (SELECT fire_at, 1000 * extract(epoch FROM created_at - fire_at) AS lag
	            FROM hasched.job WHERE schedule = 'precise') s});
diag("1-second schedule: $n runs, created_at - fire_at p50 $p50 ms, p99 $p99 ms, max $max ms, min $min ms;"
	  . " $under100 of $n under 100 ms (a loaded machine can delay single runs)");
is($whole, $n, 'every run fires on a whole second');
is($distinct, $n, 'no second fired twice');
# A second may be left out only after a run that came later than
# hasched.misfire_threshold (a stalled machine): then the schedule goes on
# from now by design.  Any other gap is a lost run.
my ($gaps, $unexplained) = split /\|/, $node->query(
	q{SELECT count(*), count(*) FILTER (WHERE NOT prev_late)
	    FROM (SELECT fire_at - lag(fire_at) OVER w AS step,
	                 lag(created_at - fire_at) OVER w > interval '500 ms' AS prev_late
	            FROM hasched.job WHERE schedule = 'precise' WINDOW w AS (ORDER BY fire_at)) s
	   WHERE step > interval '1 second'});
diag("1-second schedule: $gaps gaps in the seconds (span $span s for $n runs)") if $gaps;
is($unexplained, '0', 'no second was left out (except after a run later than the misfire threshold)');
cmp_ok($p50, '<', 50, "the median delay from fire time to job creation is under 50 ms ($p50 ms)");
cmp_ok($min, '>=', 0, 'no run was created before its fire time');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'precise' AND state <> 'succeeded'}),
	'0', 'every run succeeded');

# ---------------------------------------------------------------------------
# overlap policies: 1-second schedules whose job takes 2.5 s
# ---------------------------------------------------------------------------
schedule('ov_skip', '* * * * * *', 'SELECT pg_sleep(2.5)', q{overlap => 'skip'});
schedule('ov_queue', '* * * * * *', 'SELECT pg_sleep(2.5)', q{overlap => 'queue'});
ok( $node->poll(
		q{SELECT count(*) FILTER (WHERE schedule = 'ov_skip') >= 3 AND count(*) FILTER (WHERE schedule = 'ov_queue') >= 3
		    FROM hasched.job WHERE state = 'succeeded'}),
	'ov_skip and ov_queue each finished 3 runs');
ok(unschedule_and_drain('ov_skip'),  'ov_skip unscheduled; its jobs are done');
ok(unschedule_and_drain('ov_queue'), 'ov_queue unscheduled; its jobs are done');

# skip
is(overlapping_pairs('ov_skip'), '0', 'overlap skip: no two runs overlap');
cmp_ok(events('overlap_skipped', 'ov_skip'), '>=', 2,
	'overlap skip: the fires during a run are recorded as overlap_skipped events');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'ov_skip' AND state <> 'succeeded'}),
	'0', 'overlap skip: every run succeeded');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'ov_skip' AND fire_at <> date_trunc('second', fire_at)}),
	'0', 'overlap skip: the runs are the schedule\'s own whole-second fires');

# queue
is(overlapping_pairs('ov_queue'), '0', 'overlap queue: no two runs overlap');
is(events('overlap_skipped', 'ov_queue'), '0', 'overlap queue: nothing is skipped');
my ($pairs, $max_gap, $gap_list) = split /\|/, $node->query(
	q{SELECT count(*), round(max(gap)::numeric, 3), string_agg(round(gap::numeric, 3)::text, ' ' ORDER BY started_at)
	    FROM (SELECT started_at, extract(epoch FROM started_at - lag(finished_at) OVER (ORDER BY started_at)) AS gap
	            FROM hasched.job WHERE schedule = 'ov_queue') s
	   WHERE gap IS NOT NULL});
diag("overlap queue: gaps between the end of a run and the start of the next (s): $gap_list");
cmp_ok($pairs, '>=', 2, 'overlap queue: at least three runs in a row');
cmp_ok($max_gap, '<', 0.5,
	"overlap queue: each run starts promptly after the previous one ends (queued; max gap $max_gap s)");
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'ov_queue' AND state <> 'succeeded'}),
	'0', 'overlap queue: every run succeeded');

# allow
schedule('ov_allow', '* * * * * *', 'SELECT pg_sleep(2.5)', q{overlap => 'allow'});
ok($node->poll(q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'ov_allow' AND state = 'running'}),
	'overlap allow: two runs of the schedule are running at once');
ok(unschedule_and_drain('ov_allow'), 'ov_allow unscheduled; its jobs are done');
cmp_ok(overlapping_pairs('ov_allow'), '>=', 1, 'overlap allow: the recorded runs overlap');
is(events('overlap_skipped', 'ov_allow'), '0', 'overlap allow: nothing is skipped');
is($node->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'ov_allow' AND state <> 'succeeded'}),
	'0', 'overlap allow: every run succeeded');

# ---------------------------------------------------------------------------
# misfire policies across downtime
# ---------------------------------------------------------------------------
schedule('mf_skip', '* * * * * *', 'SELECT 1', q{misfire => 'skip', overlap => 'allow'});
schedule('mf_once', '* * * * * *', 'SELECT 1', q{misfire => 'run_once', overlap => 'allow'});
ok( $node->poll(
		q{SELECT count(*) FILTER (WHERE schedule = 'mf_skip') >= 2 AND count(*) FILTER (WHERE schedule = 'mf_once') >= 2
		    FROM hasched.job WHERE state = 'succeeded'}),
	'mf_skip and mf_once fire before the downtime');
$node->stop;
sleep 3;
$node->start;
ok($node->wait_scheduler('primary'), 'the scheduler is back after 3 s of downtime');
ok( $node->poll(
		q{SELECT count(*) FILTER (WHERE schedule = 'mf_skip') >= 2 AND count(*) FILTER (WHERE schedule = 'mf_once') >= 2
		    FROM hasched.job WHERE created_at >= pg_postmaster_start_time() AND state = 'succeeded'}),
	'both schedules fire again after the restart');

# The downtime of a schedule: after its last run fired before the stop,
# before the server started again.
my %down;
for my $name ('mf_skip', 'mf_once')
{
	$down{$name} = $node->query(
		"SELECT (SELECT max(fire_at) FROM hasched.job WHERE schedule = '$name' AND created_at < pg_postmaster_start_time())"
		  . " || '|' || pg_postmaster_start_time()");
	diag("$name: last fire before the stop and restart: $down{$name}");
}

sub in_downtime
{
	my ($name, $cols) = @_;
	my ($last, $start) = split /\|/, $down{$name};
	return $node->query("SELECT $cols FROM hasched.job WHERE schedule = '$name'"
		  . " AND fire_at > '$last' AND fire_at < '$start'");
}

is(in_downtime('mf_skip', 'count(*)'), '0', 'misfire skip: no run for a time inside the downtime');
is(events('misfire_skipped', 'mf_skip'), '1', 'misfire skip: one misfire_skipped event');
is( $node->query(
		q{SELECT (detail->>'detail')::timestamptz = (SELECT max(fire_at) FROM hasched.job WHERE schedule = 'mf_skip' AND created_at < pg_postmaster_start_time()) + interval '1 second'
		    FROM hasched.event WHERE kind = 'misfire_skipped' AND detail->>'schedule' = 'mf_skip'}),
	't', 'misfire skip: the event names the first missed second');
is( $node->query(
		q{SELECT min(fire_at) > pg_postmaster_start_time() FROM hasched.job WHERE schedule = 'mf_skip' AND created_at >= pg_postmaster_start_time()}),
	't', 'misfire skip: the schedule goes on from the restart');

is(in_downtime('mf_once', 'count(*)'), '1',
	'misfire run_once: exactly one run for a time inside the downtime (not one per missed second)');
is(in_downtime('mf_once', q{fire_at = '} . (split /\|/, $down{mf_once})[0] . q{'::timestamptz + interval '1 second'}),
	't', 'misfire run_once: it is the first missed second');
is(in_downtime('mf_once', 'created_at >= pg_postmaster_start_time()'),
	't', 'misfire run_once: it was run after the restart');
is(events('misfire_skipped', 'mf_once'), '0', 'misfire run_once: no misfire_skipped event');
is( $node->query(
		q{SELECT count(*) FROM hasched.job WHERE schedule = 'mf_once' AND created_at >= pg_postmaster_start_time()
		     AND fire_at < pg_postmaster_start_time()}),
	'1', 'misfire run_once: every other run after the restart is on schedule from the restart');
ok(unschedule_and_drain('mf_skip'), 'mf_skip unscheduled');
ok(unschedule_and_drain('mf_once'), 'mf_once unscheduled');

# ---------------------------------------------------------------------------
# time zones
# ---------------------------------------------------------------------------
sub next_utc
{
	my ($spec, $tz, $after) = @_;
	return $node->query("SET timezone = 'UTC'; SELECT hasched.schedule_next('$spec', '$tz', '$after')");
}

# America/New_York: EST = UTC-5; EDT = UTC-4 from 2026-03-08 02:00 EST to 2026-11-01 02:00 EDT
is(next_utc('0 0 9 * * *', 'America/New_York', '2026-03-07 12:00:00+00'),
	'2026-03-07 14:00:00+00', '9:00 New York on the day before summer time is 14:00 UTC');
is(next_utc('0 0 9 * * *', 'America/New_York', '2026-03-07 14:00:00+00'),
	'2026-03-08 13:00:00+00', '... the next 9:00 is 23 hours later, 13:00 UTC, across the change');
is(next_utc('0 0 9 * * *', 'America/New_York', '2026-03-08 12:00:00+00'),
	'2026-03-08 13:00:00+00', '9:00 New York on the day of the change is 13:00 UTC');
is(next_utc('0 0 9 * * *', 'America/New_York', '2026-03-09 12:00:00+00'),
	'2026-03-09 13:00:00+00', '9:00 New York the day after is 13:00 UTC');
is(next_utc('0 0 9 * * *', 'America/New_York', '2026-10-31 13:00:00+00'),
	'2026-11-01 14:00:00+00', 'across the change back to standard time the next 9:00 is 25 hours later, 14:00 UTC');
is(next_utc('0 30 2 * * *', 'America/New_York', '2026-03-08 05:00:00+00'),
	'2026-03-08 07:30:00+00', '2:30, skipped by the change to summer time, comes out after it (3:30 EDT)');
my $fallback = next_utc('0 30 1 * * *', 'America/New_York', '2026-11-01 04:00:00+00');
like($fallback, qr/^2026-11-01 0[56]:30:00\+00$/,
	"1:30, which happens twice on 2026-11-01, fires on that day ($fallback)");
is(next_utc('0 30 1 * * *', 'America/New_York', $fallback),
	'2026-11-02 06:30:00+00', '... and only once: the next run is 1:30 EST the day after');
is(next_utc('0 0 9 * * *', 'Asia/Kolkata', '2026-06-01 00:00:00+00'),
	'2026-06-01 03:30:00+00', '9:00 in Kolkata (+5:30) is 03:30 UTC');
is(next_utc('0 0 9 * * *', 'Asia/Kolkata', '2026-06-01 03:30:00+00'),
	'2026-06-02 03:30:00+00', '... and the day after, the same');
is(next_utc('0 0 9 * * *', 'Asia/Kolkata', '2026-12-01 03:29:59+00'),
	'2026-12-01 03:30:00+00', '... in winter too (no summer time in India)');

# live: two schedules for the same instant, named in two zones' wall-clock time
my ($target, $kolkata, $new_york, $kolkata_in_utc) = split /\|/, $node->query(
	q{SET timezone = 'UTC';
	  WITH t AS (SELECT date_trunc('second', clock_timestamp()) + interval '4 seconds' AS at)
	  SELECT at,
	         to_char(at AT TIME ZONE 'Asia/Kolkata', 'FMSS FMMI FMHH24 FMDD FMMM *'),
	         to_char(at AT TIME ZONE 'America/New_York', 'FMSS FMMI FMHH24 FMDD FMMM *'),
	         hasched.schedule_next(to_char(at AT TIME ZONE 'Asia/Kolkata', 'FMSS FMMI FMHH24 FMDD FMMM *'), 'UTC', at - interval '1 day')
	    FROM t});
isnt($kolkata_in_utc, $target, "the Kolkata wall-clock spec '$kolkata' read in UTC is another instant");
is( $node->query(
		"SET timezone = 'UTC'; SELECT hasched.schedule('tz_kolkata', '$kolkata', 'sqlq', '{\"sql\": \"SELECT 1\"}', timezone => 'Asia/Kolkata')"
	),
	$target,
	"schedule '$kolkata' in Asia/Kolkata: the next run is $target");
is( $node->query(
		"SET timezone = 'UTC'; SELECT hasched.schedule('tz_new_york', '$new_york', 'sqlq', '{\"sql\": \"SELECT 1\"}', timezone => 'America/New_York')"
	),
	$target,
	"schedule '$new_york' in America/New_York: the next run is the same instant");
is( $node->query(
		q{SET timezone = 'UTC'; SELECT string_agg(name || ' ' || next_run_at, ',' ORDER BY name) FROM hasched.schedules WHERE name LIKE 'tz_%'}
	),
	"tz_kolkata $target,tz_new_york $target",
	'hasched.schedules shows that next run for both');
ok( $node->poll(
		q{SELECT count(*) = 2 FROM hasched.job WHERE schedule IN ('tz_kolkata', 'tz_new_york') AND state = 'succeeded'}),
	'both schedules fired');
is( $node->query(
		"SET timezone = 'UTC'; SELECT string_agg(schedule || ' ' || fire_at || ' ' || (created_at - fire_at < interval '1 second'), ',' ORDER BY schedule)"
		  . " FROM hasched.job WHERE schedule IN ('tz_kolkata', 'tz_new_york')"),
	"tz_kolkata $target true,tz_new_york $target true",
	'each fired once, at that instant, and on time');
ok(unschedule_and_drain('tz_kolkata'),  'tz_kolkata unscheduled');
ok(unschedule_and_drain('tz_new_york'), 'tz_new_york unscheduled');

# refusals
like($node->query_error(q{SELECT hasched.schedule_next('* * * * *', 'Mars/Olympus', now())}),
	qr/ERROR:  JQ020: unknown time zone "Mars\/Olympus"/, 'schedule_next() with an unknown time zone: JQ020');
like($node->query_error(q{SELECT hasched.schedule('bad_tz', '* * * * *', 'sqlq', '{"sql": "SELECT 1"}', timezone => 'Mars/Olympus')}),
	qr/ERROR:  JQ020: unknown time zone "Mars\/Olympus"/, 'schedule() with an unknown time zone: JQ020');
like($node->query_error(q{SELECT hasched.schedule('bad_spec', '61 * * * *', 'sqlq', '{"sql": "SELECT 1"}')}),
	qr/ERROR:  JQ019: invalid schedule "61 \* \* \* \*"/, 'schedule() with an invalid spec: JQ019');
like($node->query_error(q{SELECT hasched.schedule_next('* * * *', 'UTC', now())}),
	qr/ERROR:  JQ019: invalid schedule/, 'schedule_next() with an invalid spec: JQ019');
is($node->query(q{SELECT count(*) FROM hasched.schedule WHERE name IN ('bad_tz', 'bad_spec')}),
	'0', 'the refused schedules were not written');

schedule('dup', '0 0 * * * *', 'SELECT 1');
like($node->query_error(q{SELECT hasched.schedule('dup', '0 15 * * * *', 'sqlq', '{"sql": "SELECT 2"}')}),
	qr/ERROR:  JQ021: schedule "dup" already exists/, 'a second schedule named dup: JQ021');
is($node->query(q{SELECT spec || ' ' || (payload->>'sql') FROM hasched.schedule WHERE name = 'dup'}),
	'0 0 * * * * SELECT 1', '... which changed nothing');
is( $node->query(
		q{SELECT hasched.schedule('dup', '0 30 * * * *', 'sqlq', '{"sql": "SELECT 2"}', timezone => 'Asia/Kolkata', replace => true)
		       = hasched.schedule_next('0 30 * * * *', 'Asia/Kolkata', now())}),
	't', 'replace => true changes it; it returns the new next run');
is( $node->query(
		q{SELECT s.spec || ' ' || s.timezone || ' ' || (j.payload->>'sql') || ' ' || (s.next_run_at = hasched.schedule_next(s.spec, s.timezone, now()))
		    FROM hasched.schedules s JOIN hasched.schedule j USING (name) WHERE name = 'dup'}),
	'0 30 * * * * Asia/Kolkata SELECT 2 true',
	'hasched.schedules shows the new spec, zone, payload and next run');
$node->query(q{SELECT hasched.unschedule('dup')});
like($node->query_error(q{SELECT hasched.unschedule('dup')}),
	qr/ERROR:  JQ022: schedule "dup" does not exist/, 'unschedule() of a name that does not exist: JQ022');
like($node->query_error(q{SELECT hasched.unschedule('never_was')}),
	qr/ERROR:  JQ022: schedule "never_was" does not exist/, '... nor one that never existed');

$node->stop;
done_testing();
