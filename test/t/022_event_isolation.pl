
# Copyright: hasched contributors
#
# 022_event_isolation.pl: a tenant reads no other tenant's events (issue 8,
# item 4).
#
# The scheduler writes events about schedules: a run refused (the quota of
# the tenant, with its name and limit in the message), a run skipped. With
# the real scheduler, acme's schedule is refused every second (acme's tier
# allows no job); then:
#   - bob, a submitter of tenant globex, reads none of acme's events (nor
#     its schedules);
#   - a worker, which belongs to no tenant, reads none either;
#   - alice, acme's submitter, reads them;
#   - events that concern no tenant (mode changes) are still readable.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/022_event_isolation.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'events', conf => q{
hasched.max_executors = 2
});

$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	INSERT INTO hasched.tier (name, jobs_per_day) VALUES ('nothing', 0);
	CREATE ROLE acme NOLOGIN;
	CREATE ROLE globex NOLOGIN;
	CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
	CREATE ROLE bob LOGIN IN ROLE globex, hasched_submitter;
	CREATE ROLE w LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'nothing'), ('globex', 'enterprise');
});

sub query { my ($sql, @opt) = @_; return $node->query($sql, @opt); }

sub as_role { my ($role, $sql) = @_; return $node->query($sql, extra_params => [ '-U', $role ]); }

as_role('alice', q{SELECT hasched.schedule('acme-secret-report', '@every 1 second', 'sqlq',
	'{"sql": "SELECT 1"}', tenant => 'acme')});
as_role('bob', q{SELECT hasched.schedule('globex-report', '@every 1 hour', 'sqlq',
	'{"sql": "SELECT 1"}', tenant => 'globex')});
query(q{SELECT hasched.set_mode('paused', 'maintenance window'); SELECT hasched.set_mode('normal')});

ok($node->poll(
	q{SELECT count(*) > 0 FROM hasched.event WHERE kind = 'schedule_refused' AND detail->>'schedule' = 'acme-secret-report'}),
	"the scheduler recorded the refused runs of acme's schedule");
like(query(q{SELECT detail->>'detail' FROM hasched.event WHERE detail->>'schedule' = 'acme-secret-report' LIMIT 1}),
	qr/acme/, '(the event names the tenant and its quota)');

my $acme_events = q{SELECT count(*) FROM hasched.event WHERE detail::text LIKE '%acme%'};
is(as_role('bob', $acme_events), '0', "bob, a submitter of globex, reads none of acme's events");
is(as_role('w', $acme_events), '0', "a worker reads none of acme's events");
cmp_ok(as_role('alice', $acme_events), '>', 0, "alice, a submitter of acme, reads acme's events");
is(as_role('bob', q{SELECT count(*) FROM hasched.schedules WHERE name = 'acme-secret-report'}), '0',
	"bob does not see acme's schedule");
is(as_role('bob', q{SELECT count(*) FROM hasched.schedule WHERE name = 'acme-secret-report'}), '0',
	"bob does not see acme's schedule in the table either");
is(as_role('bob', q{SELECT count(*) FROM hasched.event WHERE kind = 'mode' AND detail->>'reason' = 'maintenance window'}), '1',
	'events that concern no tenant (a mode change) are readable by every submitter');
is(as_role('bob', q{SELECT count(*) FROM hasched.quota_use WHERE tenant::text = 'acme'}), '0',
	"bob does not see acme's quota use");
is(as_role('bob', q{SELECT count(*) FROM hasched.tenants WHERE tenant::text = 'acme'}), '0',
	'bob does not see acme in hasched.tenants');

$node->stop;
done_testing();
