
# Copyright: hasched contributors
#
# 076_degrade.pl: graceful degradation under overload.
#
# One server with the real scheduler.  The test proves that
#   (a) the automatic read-only mode begins when the backlog of due jobs
#       reaches hasched.readonly_backlog: submits are refused with JQ003
#       saying submission is temporarily disabled and why (the signal, its
#       value and threshold); reads, claims and reports go on; an event
#       row records the entry;
#   (b) hysteresis: it does not end while the backlog is between the exit
#       threshold (hasched.degrade_exit_ratio of the threshold) and the
#       threshold, and ends (an event row) once it is below it;
#   (c) set_mode() takes precedence: set_mode('normal') overrides the
#       automatic mode at once, which begins again only after the backlog
#       fell below the exit threshold; a manual read_only says so in its
#       own words;
#   (d) hasched.degrade_min_dwell: the mode lasts at least that long even
#       when the backlog vanishes at once;
#   (e) the synchronous standby signal: with synchronous_standby_names set
#       and no such standby connected for hasched.readonly_sync_lag,
#       submits are refused at once (JQ003 naming the signal) instead of
#       hanging, and accepted again when the setting is cleared;
#   (f) priority hold-back above hasched.holdback_backlog, with short
#       delays: high jobs are claimed at once, medium ones only once due
#       for hasched.holdback_medium, low ones for hasched.holdback_low,
#       every job is claimed in the end, in that order; once with a low
#       threshold, once with the real 50,000 (the inserts take about a
#       second);
#   (g) pause_queue/resume_queue: claims and executors skip a paused
#       queue, submits to it are accepted, the queues view shows it, an
#       event for each; bad input (unknown queue JQ010, NULL JQ013)
#       changes nothing.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/076_degrade.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $node = HaschedCluster->primary(
	'degrade', conf => q{
hasched.max_executors = 2
hasched.scheduler_naptime = '200ms'
hasched.readonly_backlog = 100
hasched.readonly_sync_lag = 0
hasched.holdback_backlog = 0
hasched.degrade_exit_ratio = 0.5
hasched.degrade_min_dwell = 0
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name) VALUES ('q'), ('filler');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
});

sub query { return $node->query(@_); }
sub query_error { return $node->query_error(@_); }
sub poll_within { return $node->poll_within(@_); }

sub set_conf
{
	my (%set) = @_;
	for my $k (sort keys %set)
	{
		query("ALTER SYSTEM SET $k = '$set{$k}'");
	}
	query('SELECT pg_reload_conf()');
	# the scheduler reads the file at its next wake-up
	usleep(500_000);
}

sub events
{
	my ($kind, $action) = @_;
	return query(
		"SELECT count(*) FROM hasched.event WHERE kind = '$kind' AND detail->>'action' = '$action'");
}

sub submit_n
{
	my ($n, $queue, $prio) = @_;
	$queue //= 'q';
	$prio //= 'medium';
	return query(
		"SELECT array_length(hasched.submit_many('$queue', array_fill('{}'::jsonb, ARRAY[$n]), priority => '$prio'), 1)"
	);
}

# claim and complete n jobs of q: the reports go on in read-only mode
sub drain
{
	my ($n) = @_;
	return query(
		"SELECT count(*) FROM (SELECT hasched.complete(c.job_id, c.token) FROM hasched.claim('q', 'w', $n) c) x"
	);
}

my $submit = q{SELECT hasched.submit('q', '{}')};

# ---------------------------------------------------------------------------
# (a) the automatic read-only mode begins at the backlog threshold
# ---------------------------------------------------------------------------
is(submit_n(99), '99', '99 due jobs: below hasched.readonly_backlog (100)');
sleep(1.2);
is(events('read_only_auto', 'enter'), '0', 'below the threshold: no automatic mode');
is(submit_n(1), '1', 'the 100th job is accepted');
ok(poll_within(10, q{SELECT count(*) = 1 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'enter'}),
	'at 100 due jobs the automatic read-only mode begins: an event row');
my $err = query_error($submit);
like($err, qr/JQ003/, 'a submit is refused with JQ003');
like($err, qr/submission is temporarily disabled/, 'the message says submission is temporarily disabled');
like($err, qr/the backlog is 100 due jobs, hasched.readonly_backlog is 100 \(the mode ends below 50\)/,
	'the detail names the signal, its value and the thresholds');
is(query(q{SELECT detail->>'signal' || ' ' || (detail->>'value') || ' ' || (detail->>'threshold')
	FROM hasched.event WHERE kind = 'read_only_auto'}), 'backlog 100 100', 'the event records the signal');
like(query_error(q{SELECT hasched.submit_many('q', ARRAY['{}'::jsonb])}), qr/JQ003/, 'submit_many is refused too');
is(query(q{SELECT read_only::text || ' ' || backlog || ' ' || holdback::text || ' ' || (read_only_why LIKE 'the backlog is 100 %')::text
	FROM hasched.degradation()}), 'true 100 false true', 'degradation() shows the mode, why, and the backlog');
is(query(q{SELECT count(*) FROM hasched.jobs WHERE queue = 'q'}), '100', 'reads go on');
is(drain(30), '30', 'claims and reports go on: 30 jobs claimed and completed');

# ---------------------------------------------------------------------------
# (b) hysteresis: 70 due jobs is above the exit threshold (50)
# ---------------------------------------------------------------------------
sleep(1.5);
like(query_error($submit), qr/JQ003/, '70 due jobs (exit threshold 50): still read-only');
is(events('read_only_auto', 'leave'), '0', 'no leave event between the thresholds');
is(drain(30), '30', '30 more claimed and completed: 40 due');
ok(poll_within(10, q{SELECT count(*) = 1 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	'below the exit threshold the mode ends: an event row');
like(query(q{SELECT detail->>'reason' FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	qr/below its exit threshold/, 'the leave event says why');
like(query($submit), qr/^\d+$/, 'submits are accepted again');

# ---------------------------------------------------------------------------
# (c) set_mode() takes precedence
# ---------------------------------------------------------------------------
is(submit_n(59), '59', 'back to 100 due jobs');
ok(poll_within(10, q{SELECT count(*) = 2 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'enter'}),
	'the automatic mode begins again');
like(query_error($submit), qr/JQ003/, 'submits refused');
query(q{SELECT hasched.set_mode('normal', 'overload acknowledged')});
like(query($submit), qr/^\d+$/, "set_mode('normal') overrides the automatic mode at once");
ok(poll_within(10, q{SELECT count(*) = 2 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	'the scheduler records the end');
like(query(q{SELECT detail->>'reason' FROM hasched.event WHERE kind = 'read_only_auto' ORDER BY id DESC LIMIT 1}),
	qr/overridden by set_mode\('normal'\)/, 'its reason: overridden');
sleep(1.5);
is(events('read_only_auto', 'enter'), '2', 'overridden: it does not begin again at 101 due jobs');
like(query($submit), qr/^\d+$/, 'submits still accepted');
is(drain(70), '70', 'drained to 32 due jobs, below the exit threshold');
ok(poll_within(10, q{SELECT NOT overridden FROM hasched.degradation()}), 'the scheduler saw it: re-armed');
is(submit_n(68), '68', 'back to 100 due jobs');
ok(poll_within(10, q{SELECT count(*) = 3 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'enter'}),
	'after falling below the exit threshold it begins again');
query(q{SELECT hasched.set_mode('read_only', 'maintenance')});
$err = query_error($submit);
like($err, qr/JQ003.*hasched is in read-only mode/s, 'the manual read-only mode refuses in its own words');
like($err, qr/Reason given: maintenance/, 'with its reason');
query(q{SELECT hasched.set_mode('normal')});
like(query($submit), qr/^\d+$/, "set_mode('normal') after it: accepted");
ok(poll_within(10, q{SELECT count(*) = 3 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	'the automatic mode was overridden');
is(drain(1000), '101', 'every job of q drained');
ok(poll_within(10, q{SELECT NOT overridden FROM hasched.degradation()}), 're-armed');

# ---------------------------------------------------------------------------
# (d) the minimum dwell time
# ---------------------------------------------------------------------------
set_conf('hasched.degrade_min_dwell' => '3s');
is(submit_n(100), '100', '100 due jobs again, with a minimum dwell of 3 s');
ok(poll_within(10, q{SELECT count(*) = 4 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'enter'}),
	'the mode begins');
is(drain(1000), '100', 'the backlog drained at once');
ok(poll_within(15, q{SELECT count(*) = 4 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	'the mode ends');
cmp_ok(
	query(q{SELECT extract(epoch FROM max(at) FILTER (WHERE detail->>'action' = 'leave')
		- max(at) FILTER (WHERE detail->>'action' = 'enter')) FROM hasched.event WHERE kind = 'read_only_auto'}),
	'>=', 3, 'but not before it lasted 3 s');

# ---------------------------------------------------------------------------
# (e) no synchronous standby: refused at once instead of hanging
# ---------------------------------------------------------------------------
set_conf(
	'hasched.degrade_min_dwell' => '0',
	'hasched.readonly_backlog' => '0',
	'hasched.readonly_sync_lag' => '1s',
	'synchronous_standby_names' => 'nosuch');
ok(poll_within(15, q{SELECT count(*) = 1 FROM hasched.event WHERE kind = 'read_only_auto'
	AND detail->>'action' = 'enter' AND detail->>'signal' = 'no_sync_standby'}),
	'synchronous_standby_names names no connected standby: after 1 s the mode begins');
my $t0 = time;
$err = query_error($submit);
like($err, qr/JQ003.*no synchronous standby has been connected for \d+ ms/s,
	'a submit is refused at once, naming the signal');
cmp_ok(time - $t0, '<', 5, 'without waiting for a standby');
set_conf('synchronous_standby_names' => '');
ok(poll_within(15, q{SELECT count(*) = 5 FROM hasched.event WHERE kind = 'read_only_auto' AND detail->>'action' = 'leave'}),
	'synchronous_standby_names cleared: the mode ends');
like(query($submit), qr/^\d+$/, 'submits are accepted again');
is(drain(10), '1', 'drained');

# ---------------------------------------------------------------------------
# (f) priority hold-back
# ---------------------------------------------------------------------------
set_conf(
	'hasched.readonly_sync_lag' => '0',
	'hasched.holdback_medium' => '2s',
	'hasched.holdback_low' => '4s');

# 20 jobs of each class in q, enough filler jobs in another queue (never
# claimed) to keep the backlog above the threshold; claim q in a loop.
sub holdback_order
{
	my ($threshold, $filler, $label) = @_;
	my $enters = events('holdback', 'enter');
	set_conf('hasched.holdback_backlog' => $threshold);
	my $t = time;
	is(submit_n($filler, 'filler', 'low'), $filler, "$label: $filler filler jobs");
	note(sprintf('%s: %d jobs inserted with submit_many in %.2f s', $label, $filler, time - $t));
	is(submit_n(20, 'q', 'low') . submit_n(20, 'q', 'medium') . submit_n(20, 'q', 'high'),
		'202020', "$label: 20 low, 20 medium and 20 high jobs due now");
	ok( poll_within(15,
			"SELECT count(*) = $enters + 1 FROM hasched.event WHERE kind = 'holdback' AND detail->>'action' = 'enter'"),
		"$label: the backlog reached hasched.holdback_backlog ($threshold): the hold-back begins");
	is(query(q{SELECT holdback FROM hasched.degradation()}), 't', "$label: degradation() shows it");
	my $claimed = 0;
	my $deadline = time + 20;
	while ($claimed < 60 && time < $deadline)
	{
		$claimed += query(q{SELECT count(*) FROM hasched.claim('q', 'w', 100)});
		usleep(100_000);
	}
	is($claimed, 60, "$label: every job claimed in the end");
	my $rows = query(
		q{SELECT hasched.priority_name(priority), count(*),
		         round(min(extract(epoch FROM started_at - run_at))::numeric, 2),
		         round(max(extract(epoch FROM started_at - run_at))::numeric, 2),
		         min(started_at), max(started_at)
		    FROM hasched.job WHERE queue = 'q' AND state = 'running'
		   GROUP BY 1 ORDER BY min(priority)});
	note("$label: class|jobs|min wait|max wait|first claim|last claim\n$rows");
	my %w;
	for my $line (split /\n/, $rows)
	{
		my ($class, $n, $min, $max, $first, $last) = split /\|/, $line;
		$w{$class} = { n => $n, min => $min, max => $max, first => $first, last => $last };
	}
	cmp_ok($w{high}{max}, '<', 2, "$label: high jobs claimed at once (longest wait $w{high}{max} s)");
	cmp_ok($w{medium}{min}, '>=', 2, "$label: medium jobs only once due for 2 s (shortest wait $w{medium}{min} s)");
	cmp_ok($w{low}{min}, '>=', 4, "$label: low jobs only once due for 4 s (shortest wait $w{low}{min} s)");
	is( query(
			"SELECT '$w{high}{last}'::timestamptz < '$w{medium}{first}'::timestamptz
			    AND '$w{medium}{last}'::timestamptz < '$w{low}{first}'::timestamptz"),
		't', "$label: every high job before every medium one, every medium one before every low one");
	# end: no filler, no backlog
	query(q{DELETE FROM hasched.job WHERE queue IN ('q', 'filler')});
	ok( poll_within(15,
			"SELECT count(*) = $enters + 1 FROM hasched.event WHERE kind = 'holdback' AND detail->>'action' = 'leave'"),
		"$label: the backlog gone, the hold-back ends");
}

holdback_order(50, 100, 'threshold 50');
holdback_order(50000, 50000, 'threshold 50,000');

# ---------------------------------------------------------------------------
# (g) pausing one queue
# ---------------------------------------------------------------------------
set_conf('hasched.holdback_backlog' => '0');
is(query(q{SELECT hasched.pause_queue('q', 'broker maintenance')}), 't', 'pause_queue(q) returns true');
is(query(q{SELECT hasched.pause_queue('q')}), 'f', 'pausing it again returns false');
is(query(q{SELECT paused::text || '/' || pause_reason FROM hasched.queues WHERE name = 'q'}),
	'true/broker maintenance', 'the queues view shows it paused, and why');
like(query($submit), qr/^\d+$/, 'submits to a paused queue are accepted');
is(query(q{SELECT count(*) FROM hasched.claim('q', 'w', 10)}), '0', 'claims on it hand out nothing');
is(query(q{SELECT hasched.pause_queue('sqlq', 'schema change')}), 't', 'the sql queue paused');
my $job = query(q{SELECT hasched.submit('sqlq', '{"sql": "SELECT 1"}')});
sleep(2);
is($node->job($job, 'state'), 'pending', 'the executors skip a paused queue: its job waits');
is(query(q{SELECT hasched.resume_queue('sqlq')}), 't', 'resume_queue(sqlq) returns true');
ok($node->poll_within(15, "SELECT state = 'succeeded' FROM hasched.job WHERE id = $job"),
	'resumed: its job runs');
is(query(q{SELECT hasched.resume_queue('sqlq')}), 'f', 'resuming it again returns false');
is(query(q{SELECT hasched.resume_queue('q')}), 't', 'q resumed');
is(query(q{SELECT count(*) FROM hasched.claim('q', 'w', 10)}), '1', 'claims hand out its job again');
is(query(q{SELECT string_agg(kind || ':' || (detail->>'queue'), ' ' ORDER BY id) FROM hasched.event
	WHERE kind IN ('queue_paused', 'queue_resumed')}),
	'queue_paused:q queue_paused:sqlq queue_resumed:sqlq queue_resumed:q', 'an event for each pause and resume');
my $before = query(q{SELECT count(*) FROM hasched.event});
like(query_error(q{SELECT hasched.pause_queue('nosuch')}), qr/JQ010.*queue "nosuch" does not exist/s,
	'an unknown queue: JQ010');
like(query_error(q{SELECT hasched.pause_queue(NULL)}), qr/JQ013/, 'NULL: JQ013');
like(query_error(q{SELECT hasched.resume_queue('nosuch')}), qr/JQ010/, 'resume of an unknown queue: JQ010');
is(query(q{SELECT count(*) FROM hasched.event}), $before, 'bad input: no event');
is(query(q{SELECT count(*) FROM hasched.queue WHERE paused_at IS NOT NULL}), '0', 'and no queue paused');

$node->stop;
done_testing();
