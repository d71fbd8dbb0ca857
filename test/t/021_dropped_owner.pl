
# Copyright: hasched contributors
#
# 021_dropped_owner.pl: a schedule belongs to the roles that made it, not to
# their names (issue 8, item 2).
#
# Proves, with the real scheduler and executors:
#   - a schedule whose owner role was dropped stops firing: the scheduler
#     deactivates it and writes an event saying why, instead of making a
#     dead job every second;
#   - a role created afterwards under the dropped owner's name does not run
#     the schedule's SQL, not even when it is made active again;
#   - the same for a schedule whose tenant role was dropped;
#   - a job submitted by a role that is dropped before the job runs does not
#     run as the role later created under that name;
#   - soon after the drop, the rows of the dropped roles name no role (OID
#     0), so that a dump restored elsewhere cannot give them to a role that
#     has the dropped OID there.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/021_dropped_owner.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = HaschedCluster->primary(
	'dropped', conf => q{
hasched.max_executors = 2
});

$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.runs (tag text, who name DEFAULT current_user, at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT ON public.runs TO PUBLIC;
	CREATE ROLE rs LOGIN IN ROLE hasched_submitter;
	CREATE ROLE tt NOLOGIN;
	CREATE ROLE rt LOGIN IN ROLE tt, hasched_submitter;
	CREATE ROLE rj LOGIN IN ROLE hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('rs', 'enterprise'), ('tt', 'enterprise'), ('rj', 'enterprise');
});

sub query { my ($sql, @opt) = @_; return $node->query($sql, @opt); }

sub as_role { my ($role, $sql) = @_; return $node->query($sql, extra_params => [ '-U', $role ]); }

as_role('rs', q{SELECT hasched.schedule('rs-every', '@every 1 second', 'sqlq',
	'{"sql": "INSERT INTO public.runs (tag) VALUES (''rs-every'')"}')});
as_role('rt', q{SELECT hasched.schedule('tt-every', '@every 1 second', 'sqlq',
	'{"sql": "INSERT INTO public.runs (tag) VALUES (''tt-every'')"}', tenant => 'tt')});
# a job of rj's that waits, while rj is dropped and created again
my $rj_job = as_role('rj', q{SELECT hasched.submit('sqlq',
	'{"sql": "INSERT INTO public.runs (tag) VALUES (''rj-job'')"}', run_at => now() + interval '4 seconds')});

ok($node->poll("SELECT count(*) > 0 FROM public.runs WHERE tag = 'rs-every' AND who = 'rs'"),
	'the schedule of rs runs, as rs');
ok($node->poll("SELECT count(*) > 0 FROM public.runs WHERE tag = 'tt-every' AND who = 'rt'"),
	'the schedule of rt for tenant tt runs, as rt');

# drop the owner of one schedule, the tenant of the other, and rj
my $dropped_at = query(q{DROP ROLE rs; DROP ROLE tt; DROP ROLE rj; SELECT clock_timestamp()});
sleep(2.5);
my $created_at = query(q{CREATE ROLE rs LOGIN; CREATE ROLE tt NOLOGIN; GRANT tt TO rt; CREATE ROLE rj LOGIN;
	SELECT clock_timestamp()});

# the scheduler rewrites a dropped role's OID to 0 (no role): pg_dump would
# write the dropped OID as a number, and a restore into another server would
# give the rows to whichever role has that number there
ok($node->poll_within(10, "SELECT owner::oid = 0 AND tenant::oid = 0 AND submitted_by::oid = 0"
	  . " FROM hasched.job WHERE id = $rj_job"),
	'the waiting job of a dropped role names no role (OID 0) soon after the drop');
is(query(q{SELECT string_agg(name || ' ' || owner::text || ' ' || tenant::text, ', ' ORDER BY name)
	FROM hasched.schedule WHERE name IN ('rs-every', 'tt-every')}), 'rs-every - -, tt-every rt -',
	'the schedules of a dropped owner and of a dropped tenant name no such role (regrole shows "-")');
ok($node->poll_within(10, "SELECT NOT active FROM hasched.schedule WHERE name = 'rs-every'"),
	'the schedule of a dropped owner is deactivated');
ok($node->poll_within(10, "SELECT NOT active FROM hasched.schedule WHERE name = 'tt-every'"),
	'the schedule of a dropped tenant is deactivated');
is(query(q{SELECT count(*) > 0 FROM hasched.event WHERE detail->>'schedule' = 'rs-every'
	AND kind = 'schedule_deactivated'}), 't', 'an event says why the schedule of the dropped owner stopped');
is(query(q{SELECT count(*) > 0 FROM hasched.event WHERE detail->>'schedule' = 'tt-every'
	AND kind = 'schedule_deactivated'}), 't', 'an event says why the schedule of the dropped tenant stopped');

# a role created under the dropped one's name gets nothing: not even once
# an administrator turns the schedule on again
query(q{UPDATE hasched.schedule SET active = true, next_run_at = now() WHERE name IN ('rs-every', 'tt-every')});
query('SELECT hasched._wake_workers()');
# rj's job is due 4 s after it was submitted; wait until it has ended
ok($node->poll_within(30,
	"SELECT state NOT IN ('scheduled', 'pending', 'running', 'failed') FROM hasched.job WHERE id = $rj_job"),
	'the job of the dropped rj has ended');
sleep(2);

is(query("SELECT count(*) FROM public.runs WHERE at > '$created_at' AND who IN ('rs', 'rj')"), '0',
	'no SQL ran as a role created under the name of a dropped owner');
is(query("SELECT count(*) FROM public.runs WHERE at > '$dropped_at' AND tag IN ('rs-every', 'tt-every')"), '0',
	'the schedules of the dropped roles ran no more');
is(query("SELECT state FROM hasched.job WHERE id = $rj_job"), 'dead',
	'the job of the dropped owner is dead');
like(query("SELECT last_error FROM hasched.job WHERE id = $rj_job"), qr/no longer exists/,
	'and says that its owner no longer exists');
cmp_ok(query("SELECT count(*) FROM hasched.job WHERE schedule IN ('rs-every', 'tt-every')"
	  . " AND created_at > '$dropped_at'::timestamptz + interval '1 second'"), '==', 0,
	'no dead job every second: the schedules of dropped roles made no jobs after the drop');
is(query(q{SELECT bool_and(NOT active) FROM hasched.schedule WHERE name IN ('rs-every', 'tt-every')}), 't',
	'turned on again, they are deactivated again');

# The rewrite reads every job, so the scheduler does it only when a role it
# knew is gone, not on every change of pg_authid: a row naming an OID that
# no role has (written here by a superuser) keeps it through a CREATE ROLE
# and an ALTER ROLE, and loses it at the next DROP ROLE.
my $probe = query(q{INSERT INTO hasched.event (kind, detail, tenant)
	VALUES ('probe', '{}', 4000000000::oid::regrole) RETURNING id});
query(q{CREATE ROLE probe_a; ALTER ROLE probe_a PASSWORD 'x'});
sleep(2.5);    # the scheduler's naptime is 1 s
is(query("SELECT tenant::oid FROM hasched.event WHERE id = $probe"), '4000000000',
	'a role created and altered: no rewrite of the rows');
query(q{DROP ROLE probe_a});
ok($node->poll_within(10, "SELECT tenant::oid = 0 FROM hasched.event WHERE id = $probe"),
	'a role dropped: the rows of roles that do not exist name no role');

$node->stop;
done_testing();
