
# Copyright: hasched contributors
#
# 012_schedule_pause.pl: pausing a schedule without deleting it.
#
# With the real scheduler on one server, the test proves that
#   (a) hasched.alter_schedule(name, active => false) pauses a schedule
#       firing every second: it returns NULL (no next run), the schedules
#       view shows it inactive with no next run, and it fires no more;
#   (b) alter_schedule(name, active => true) resumes it from now: it
#       returns the next run, the runs missed while paused are not made up
#       (misfire run_once has nothing to run, no burst of jobs), and it
#       fires every second again;
#   (c) hasched.schedule(..., active => false) creates a paused schedule,
#       which does not fire until resumed; replace => true without active
#       makes it active again (replace sets every setting);
#   (d) bad input changes nothing: an unknown schedule, another tenant's
#       schedule (JQ022), a NULL name or state (JQ013).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/012_schedule_pause.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'pause', conf => q{
hasched.max_executors = 2
hasched.misfire_threshold = '500ms'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE ROLE acme NOLOGIN;
	CREATE ROLE globex NOLOGIN;
	CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
	CREATE ROLE bob LOGIN IN ROLE globex, hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'enterprise'), ('globex', 'enterprise');
});

sub query
{
	my ($sql, @opt) = @_;
	return $node->query($sql, @opt);
}

sub query_error
{
	my ($sql, @opt) = @_;
	return $node->query_error($sql, @opt);
}

sub poll_within
{
	return $node->poll_within(@_);
}

sub fired
{
	my ($name) = @_;
	return query("SELECT count(*) FROM hasched.job WHERE schedule = '$name'");
}

# ---------------------------------------------------------------------------
# (a) pause
# ---------------------------------------------------------------------------
query(q{SELECT hasched.schedule('beat', '* * * * * *', 'sqlq', '{"sql": "SELECT 1"}', overlap => 'allow')});
ok(poll_within(30, q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'beat'}), 'beat fires every second');

is(query(q{SELECT hasched.alter_schedule('beat', active => false) IS NULL}), 't',
	'alter_schedule(beat, active => false) returns NULL: no next run');
is(query(q{SELECT active::text || '/' || coalesce(next_run_at::text, 'none') FROM hasched.schedules WHERE name = 'beat'}),
	'false/none', 'the schedules view shows beat inactive, with no next run');
my $paused_at = query('SELECT clock_timestamp()');
my $count = fired('beat');
sleep(3);
is(fired('beat'), $count, 'paused for 3 s: beat created no job');
is(query("SELECT count(*) FROM hasched.job WHERE schedule = 'beat' AND fire_at > '$paused_at'"), '0',
	'no run of beat for a time after the pause');

# ---------------------------------------------------------------------------
# (b) resume: from now, nothing made up
# ---------------------------------------------------------------------------
# (the clock read first: resumed_at is not after the resume's own now)
my ($resumed_at, $next) = split /\|/,
  query(q{SELECT clock_timestamp(), hasched.alter_schedule('beat', active => true)});
ok(defined $next && $next ne '', "alter_schedule(beat, active => true) returns the next run ($next)");
is(query("SELECT '$next'::timestamptz > '$resumed_at'::timestamptz AND '$next'::timestamptz <= '$resumed_at'::timestamptz + interval '1.5 seconds'"),
	't', 'the next run is the next second after the resume');
ok(poll_within(30, "SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'beat' AND fire_at > '$resumed_at'"),
	'beat fires every second again');
is(query("SELECT count(*) FROM hasched.job WHERE schedule = 'beat' AND fire_at > '$paused_at' AND fire_at <= '$resumed_at'"),
	'0', 'no run was made up for the paused seconds (no burst)');
is(query(q{SELECT count(*) FROM hasched.event WHERE kind LIKE 'misfire%' AND detail->>'schedule' = 'beat'}), '0',
	'no misfire was recorded for the pause');

# ---------------------------------------------------------------------------
# (c) created paused
# ---------------------------------------------------------------------------
is(query(q{SELECT hasched.schedule('quiet', '* * * * * *', 'sqlq', '{"sql": "SELECT 2"}', active => false) IS NULL}),
	't', 'schedule(..., active => false) returns NULL: created paused');
is(query(q{SELECT active FROM hasched.schedules WHERE name = 'quiet'}), 'f', 'the view shows it inactive');
sleep(2);
is(fired('quiet'), '0', 'a schedule created paused does not fire');
query(q{SELECT hasched.schedule('quiet', '* * * * * *', 'sqlq', '{"sql": "SELECT 3"}', replace => true)});
ok(poll_within(30, q{SELECT count(*) >= 1 FROM hasched.job WHERE schedule = 'quiet'}),
	'replace => true (active defaults to true) makes it fire');

# ---------------------------------------------------------------------------
# (d) bad input
# ---------------------------------------------------------------------------
query(q{SELECT hasched.alter_schedule('beat', active => false)});
# quiet fires every second too: paused, so that its row stays as it is
query(q{SELECT hasched.alter_schedule('quiet', active => false)});
my $before = query(q{SELECT string_agg(s::text, E'\n' ORDER BY name) FROM hasched.schedule s});
like(query_error(q{SELECT hasched.alter_schedule('nosuch', active => false)}),
	qr/ERROR:  JQ022: schedule "nosuch" does not exist/, 'alter_schedule of an unknown schedule: JQ022');
like(query_error(q{SELECT hasched.alter_schedule(NULL, active => false)}),
	qr/ERROR:  JQ013: name must not be null/, 'alter_schedule with a NULL name: JQ013');
like(query_error(q{SELECT hasched.alter_schedule('beat', active => NULL)}),
	qr/ERROR:  JQ013: active must not be null/, 'alter_schedule with a NULL active: JQ013');
query(q{SET ROLE alice; SELECT hasched.schedule('acme-tick', '0 0 * * * *', 'sqlq', '{"sql": "SELECT 1"}', tenant => 'acme')});
like(query_error(q{SELECT hasched.alter_schedule('acme-tick', active => false)}, extra_params => [ '-U', 'bob' ]),
	qr/ERROR:  JQ022: schedule "acme-tick" does not exist/,
	'alter_schedule of another tenant\'s schedule: JQ022, as if it did not exist');
is(query(q{SELECT string_agg(s::text, E'\n' ORDER BY name) FROM hasched.schedule s WHERE name <> 'acme-tick'}),
	$before, 'the refusals changed no schedule');
is(query(q{SELECT hasched.alter_schedule('acme-tick', active => false) IS NULL}, extra_params => [ '-U', 'alice' ]),
	't', 'the owner tenant\'s member pauses it');

$node->stop;
done_testing();
