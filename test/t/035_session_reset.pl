
# Copyright: hasched contributors
#
# 035_session_reset.pl: nothing a job sets in its executor's session
# reaches the next job (issue 8, item 8).
#
# Proves, with one real executor (so that consecutive jobs share its
# session), a job of tenant alice and then one of tenant bob:
#   - alice's session-level advisory locks (exclusive and shared) are
#     released when her job ends: another session can take them, and bob's
#     job holds no advisory lock;
#   - alice's setseed() does not make bob's random() predictable;
#   - the sequence values alice's job drew are not bob's currval()/lastval();
#   - a job cannot LISTEN (it runs as a security-restricted operation), so
#     no notification meant for a job's session reaches a later one.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/035_session_reset.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'reset', conf => q{
hasched.max_executors = 1
hasched.min_executors = 1
});

$node->query(
	q{
	CREATE ROLE alice LOGIN IN ROLE hasched_submitter;
	CREATE ROLE bob LOGIN IN ROLE hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('alice', 'enterprise'), ('bob', 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE SEQUENCE public.s;
	GRANT USAGE, SELECT ON SEQUENCE public.s TO alice, bob;
	CREATE TABLE public.probe (who name, r float8, locks bigint, cur bigint, last bigint);
	GRANT INSERT ON public.probe TO bob;
	-- currval/lastval, or NULL where the session has none
	CREATE FUNCTION public.try_currval() RETURNS bigint LANGUAGE plpgsql AS $f$
	BEGIN RETURN currval('public.s'); EXCEPTION WHEN object_not_in_prerequisite_state THEN RETURN NULL; END $f$;
	CREATE FUNCTION public.try_lastval() RETURNS bigint LANGUAGE plpgsql AS $f$
	BEGIN RETURN lastval(); EXCEPTION WHEN object_not_in_prerequisite_state THEN RETURN NULL; END $f$;
});

sub submit_as
{
	my ($role, $sql, $priority) = @_;
	return $node->query(
		"SET ROLE $role; SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$sql\$j\$),"
		  . " priority => '$priority', max_attempts => 1)");
}

# alice's job, then bob's, committed together so that the one executor runs
# them one after the other in its session
my $alice_sql = q{SELECT pg_advisory_lock(4242), pg_advisory_lock_shared(4343), setseed(0.25), nextval('public.s')};
my $bob_sql =
  q{INSERT INTO public.probe SELECT current_user, random(),}
  . q{ (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()),}
  . q{ public.try_currval(), public.try_lastval()};
my ($ja, $jb) = split /\n/, $node->query(
	"BEGIN; SET LOCAL ROLE alice;"
	  . " SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$alice_sql\$j\$), priority => 'high', max_attempts => 1);"
	  . " SET LOCAL ROLE bob;"
	  . " SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$bob_sql\$j\$), priority => 'low', max_attempts => 1);"
	  . " COMMIT;");
ok( $node->poll(
		"SELECT bool_and(state IN ('succeeded', 'dead')) FROM hasched.job WHERE id IN ($ja, $jb)"),
	'both jobs finished');
is($node->query("SELECT string_agg(state::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($ja, $jb)"),
	'succeeded,succeeded', 'both succeeded');
is($node->query("SELECT count(DISTINCT worker) FROM hasched.job WHERE id IN ($ja, $jb)"),
	'1', 'one executor ran both, alice\'s first');
my $pid = $node->query("SELECT split_part(worker, '/', 3) FROM hasched.job WHERE id = $ja");

is( $node->query(
		"SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = $pid"),
	'0', 'the executor holds no advisory lock after alice\'s job');
is($node->query('SELECT pg_try_advisory_lock(4242)'), 't', 'another session can take the exclusive lock alice took');
is($node->query('SELECT pg_try_advisory_lock(4343)'), 't', '... and an exclusive lock on the key she locked shared');

my ($who, $r, $locks, $cur, $last) = split /\|/, $node->query('SELECT who, r, locks, cur, last FROM public.probe');
is($who, 'bob', 'bob\'s job wrote its probe');
is($locks, '0', 'bob\'s job holds no advisory lock');
my $predicted = (split /\n/, $node->query('SELECT setseed(0.25); SELECT random()'))[-1];
isnt($r, $predicted, "bob's random() ($r) is not the one that follows alice's setseed(0.25) ($predicted)");
is($cur // '', '', 'bob\'s job has no currval() of the sequence alice\'s job used');
is($last // '', '', '... and no lastval()');

my $listen = submit_as('bob', 'LISTEN hasched_probe', 'medium');
ok($node->poll( "SELECT state = 'dead' FROM hasched.job WHERE id = $listen"),
	'a job that runs LISTEN fails');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $listen"),
	qr/cannot execute LISTEN within security-restricted operation/,
	'... because jobs run as security-restricted operations');

$node->stop;
done_testing();
