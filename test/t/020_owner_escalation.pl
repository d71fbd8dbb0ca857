
# Copyright: hasched contributors
#
# 020_owner_escalation.pl: a member of hasched_admin cannot get SQL run with
# a superuser's rights, or another role's, through the executors (issue 8,
# item 1).
#
# hasched_admin may write hasched.job and hasched.schedule directly. Each
# attacker below is a member of hasched_admin (not a superuser) and tries,
# by another path, to have the SQL "ALTER ROLE <itself> SUPERUSER" run by
# an executor as a superuser:
#   adm_insert     inserts a job row whose owner is the superuser;
#   adm_payload    rewrites the SQL of a superuser's waiting job;
#   adm_queue      moves a superuser's pull job that carries SQL text to an
#                  sql queue;
#   adm_owner      inserts a job of its own, then makes the superuser its owner;
#   adm_schedule   inserts a schedule whose owner is the superuser;
#   adm_sched_sql  rewrites the SQL of a superuser's schedule and makes it due.
# After the executors and the scheduler have had their turn (a canary job
# submitted after the attacks has run, and the 1-second schedules have had
# time to fire), no attacker is a superuser and no attacker's SQL ran.
# Then the executors' own check, behind the trigger: a job written for a
# role by another role that is not a superuser is not run (dead, with the
# reason), and one a superuser wrote for another role runs as that role.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/020_owner_escalation.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);

my $node = HaschedCluster->primary(
	'escalation', conf => q{
hasched.max_executors = 2
});

my @attackers = qw(adm_insert adm_payload adm_queue adm_owner adm_schedule adm_sched_sql);

$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql'), ('pullq', 'pull');
	CREATE TABLE public.ran (tag text, who name DEFAULT current_user, at timestamptz DEFAULT clock_timestamp());
	GRANT INSERT ON public.ran TO PUBLIC;
});
for my $a (@attackers)
{
	$node->safe_psql('postgres', "CREATE ROLE $a LOGIN IN ROLE hasched_admin;"
		  . " INSERT INTO hasched.tenant (name, tier) VALUES ('$a', 'enterprise')");
}

my $superuser = $node->safe_psql('postgres', 'SELECT rolname FROM pg_roles WHERE oid = 10');

sub query { my ($sql, @opt) = @_; return $node->query($sql, @opt); }

# Run SQL as a role; returns "ok" or the error (SQLSTATE first).
sub as_role
{
	my ($role, $sql) = @_;
	my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY sqlstate\n$sql",
		extra_params => [ '-U', $role ]);
	return $rc == 0 ? 'ok' : $err;
}

# The SQL each attacker wants run as a superuser.
sub attack_sql
{
	my ($a) = @_;
	return "ALTER ROLE $a SUPERUSER; INSERT INTO public.ran (tag) VALUES ('$a')";
}

sub attack_payload
{
	my ($a) = @_;
	my $sql = attack_sql($a);
	return "jsonb_build_object('sql', \$s\$$sql\$s\$)";
}

# The superuser's own waiting jobs and schedule that the attackers go after.
my $su_later = query(
	q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.ran (tag) VALUES (''su-later'')"}',
	  run_at => now() + interval '1 hour')});
my $su_pull = query(
	"SELECT hasched.submit('pullq', " . attack_payload('adm_queue') . ")");
query(q{SELECT hasched.schedule('su-hourly', '@every 1 hour', 'sqlq',
	'{"sql": "INSERT INTO public.ran (tag) VALUES (''su-hourly'')"}')});

my %result;
$result{adm_insert} = as_role('adm_insert',
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)"
	  . " VALUES ('sqlq', 'adm_insert', '$superuser', 5, 'pending', now(), 1, '1 minute', "
	  . attack_payload('adm_insert') . ")");
$result{adm_payload} = as_role('adm_payload',
	"UPDATE hasched.job SET payload = " . attack_payload('adm_payload') . ", run_at = now() WHERE id = $su_later");
$result{adm_queue} = as_role('adm_queue', "UPDATE hasched.job SET queue = 'sqlq' WHERE id = $su_pull");
$result{adm_owner} = as_role('adm_owner',
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)"
	  . " VALUES ('sqlq', 'adm_owner', 'adm_owner', 5, 'scheduled', now() + interval '1 hour', 1, '1 minute', "
	  . attack_payload('adm_owner') . ");"
	  . " UPDATE hasched.job SET owner = '$superuser', run_at = now() WHERE tenant = 'adm_owner'");
$result{adm_schedule} = as_role('adm_schedule',
	"INSERT INTO hasched.schedule (name, spec, queue, payload, tenant, owner, next_run_at)"
	  . " VALUES ('adm-every', '\@every 1 second', 'sqlq', "
	  . attack_payload('adm_schedule') . ", 'adm_schedule', '$superuser', now())");
$result{adm_sched_sql} = as_role('adm_sched_sql',
	"UPDATE hasched.schedule SET payload = " . attack_payload('adm_sched_sql') . ", next_run_at = now()"
	  . " WHERE name = 'su-hourly'");
query('SELECT hasched._wake_workers()');
note("attack $_: $result{$_}") for @attackers;

# a canary after the attacks: once it has run, the executors have had their turn
my $canary = query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.ran (tag) VALUES (''canary'')"}')});
ok($node->poll("SELECT state = 'succeeded' FROM hasched.job WHERE id = $canary"),
	'a canary job submitted after the attacks ran');
# the schedules fire every second: give them two rounds, then a second canary
sleep(2.5);
my $canary2 = query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.ran (tag) VALUES (''canary2'')"}')});
ok($node->poll("SELECT state = 'succeeded' FROM hasched.job WHERE id = $canary2"),
	'a second canary ran after the schedules had time to fire');

for my $a (@attackers)
{
	is(query("SELECT rolsuper FROM pg_roles WHERE rolname = '$a'"), 'f',
		"$a (a member of hasched_admin) did not become a superuser through the executor");
	is(query("SELECT count(*) FROM public.ran WHERE tag = '$a'"), '0',
		"no SQL of $a ran with anyone's rights");
}
is(query(q{SELECT count(*) FROM hasched.job WHERE state = 'succeeded' AND payload->>'sql' LIKE '%SUPERUSER%'}), '0',
	"no job with an attacker's SQL succeeded");
is(query("SELECT payload->>'sql' FROM hasched.job WHERE id = $su_later"),
	q{INSERT INTO public.ran (tag) VALUES ('su-later')}, "the superuser's waiting job kept its SQL");
is(query("SELECT queue FROM hasched.job WHERE id = $su_pull"), 'pullq', "the superuser's pull job stayed a pull job");
is(query("SELECT payload->>'sql' FROM hasched.schedule WHERE name = 'su-hourly'"),
	q{INSERT INTO public.ran (tag) VALUES ('su-hourly')}, "the superuser's schedule kept its SQL");

# Behind the trigger, the executors check again: a row that says a role
# that is not a superuser wrote it for another role (written here with the
# triggers off, as only a superuser can) is not run; a superuser may write
# a job for another role.
$node->safe_psql('postgres', q{CREATE ROLE plain LOGIN; GRANT INSERT ON public.ran TO plain;
	INSERT INTO hasched.tenant (name, tier) VALUES ('plain', 'enterprise')});
my $forged = query(
	"SET session_replication_role = replica;"
	  . " INSERT INTO hasched.job (queue, tenant, owner, submitted_by, priority, state, run_at, max_attempts, timeout, payload)"
	  . " VALUES ('sqlq', 'adm_insert', '$superuser', 'adm_insert', 5, 'pending', now(), 1, '1 minute', "
	  . attack_payload('adm_insert') . ") RETURNING id");
my $for_plain = query(
	"INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)"
	  . " VALUES ('sqlq', 'plain', 'plain', 5, 'pending', now(), 1, '1 minute',"
	  . q{ '{"sql": "INSERT INTO public.ran (tag) VALUES (''for-plain'')"}') RETURNING id});
query('SELECT hasched._wake_workers()');
ok($node->poll("SELECT state = 'dead' FROM hasched.job WHERE id = $forged"),
	'a job that a role other than its owner wrote, not a superuser, goes dead');
like(query("SELECT last_error FROM hasched.job WHERE id = $forged"), qr/adm_insert.*not a superuser/,
	'and says who wrote it for whom');
is(query("SELECT rolsuper FROM pg_roles WHERE rolname = 'adm_insert'"), 'f', 'its SQL did not run');
ok($node->poll("SELECT state = 'succeeded' FROM hasched.job WHERE id = $for_plain"),
	'a job a superuser wrote for another role runs');
is(query(q{SELECT who FROM public.ran WHERE tag = 'for-plain'}), 'plain', "with that role's rights");

$node->stop;
done_testing();
