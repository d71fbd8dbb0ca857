
# Copyright: hasched contributors
#
# 038_executor_groups.pl: an executor runs consecutive SQL jobs of one
# owner in one transaction (hasched.executor_group_ms), each in a
# subtransaction, and records their successes together just before the
# commit; a job's effects still commit exactly with its success (issue 6,
# the executors' drain).
#
# Proves, with one real executor and hasched.executor_group_ms = 10 s (so
# that only the batch and the owner end a group here):
#   - jobs submitted together run in one transaction (one txid_current()),
#     and with hasched.executor_group_ms = 0 each in its own;
#   - a job cancelled after its SQL ended, while a later job of its group
#     runs, never has its effects committed: cancel() returns true at once
#     (the executor holds no lock on the job), the group rolls back, and
#     its other jobs run again one per transaction, each writing once, in
#     their first attempt;
#   - a job whose SQL fails in a group fails alone, the others of the group
#     succeed in one transaction;
#   - when recording the group's successes fails (here a trigger refuses
#     one), the group rolls back and runs again one job per transaction: the
#     failure falls on that job alone, the others write once;
#   - jobs of another owner are not run in the same transaction;
#   - a cursor a job left open is closed before the next job of its group,
#     and a job that sets constraint modes runs in a transaction of its own;
#   - after a job of a queue that ran longer than executor_group_ms, the
#     next jobs of that queue do not join groups.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/038_executor_groups.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'groups', conf => q{
hasched.max_executors = 1
hasched.min_executors = 1
hasched.executor_group_ms = 10000
});

$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	CREATE TABLE public.runs (tag text, xid bigint DEFAULT txid_current(),
		at timestamptz DEFAULT clock_timestamp());
	GRANT ALL ON public.runs TO PUBLIC;
});

ok( $node->poll(
		q{SELECT count(*) = 1 FROM hasched.workers WHERE state IN ('idle', 'woken')}),
	'the one executor is up and idle');

# Jobs submitted in one transaction, in this order (priorities 0, 1, ...,
# so that the executor runs them in this order); returns their ids.
sub submit_together
{
	my (@sqls) = @_;
	my $sql = "BEGIN;\n";
	for my $i (0 .. $#sqls)
	{
		my $p = $i < 9 ? $i : 9;
		$sql .= "SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$$sqls[$i]\$j\$),"
		  . " priority => '$p', timeout => '1 minute', max_attempts => 1);\n";
	}
	return split /\n/, $node->query($sql . 'COMMIT;');
}

sub insert_tag { return "INSERT INTO public.runs (tag) VALUES ('$_[0]')"; }

sub all_succeeded
{
	my ($what, @ids) = @_;
	my $list = join(',', @ids);
	ok( $node->poll_within(15,
			"SELECT bool_and(state = 'succeeded') FROM hasched.job WHERE id IN ($list)"),
		"$what: the jobs succeed");
}

sub tag_counts
{
	my (@tags) = @_;
	my $list = join(',', map { "'$_'" } @tags);
	return $node->query("SELECT coalesce(string_agg(tag || ':' || n, ',' ORDER BY tag), '')"
		  . " FROM (SELECT tag, count(*) n FROM public.runs WHERE tag IN ($list) GROUP BY tag) s");
}

# ---------------------------------------------------------------------------
# 1. one transaction for the jobs of a batch; one each with the setting 0
# ---------------------------------------------------------------------------
my @g = submit_together(map { insert_tag("g$_") } 1 .. 5);
all_succeeded('five jobs submitted together', @g);
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag LIKE 'g%'"),
	'1', 'they ran in one transaction');
is(tag_counts(map { "g$_" } 1 .. 5), join(',', map { "g$_:1" } 1 .. 5), '... each wrote once');

$node->query("ALTER SYSTEM SET hasched.executor_group_ms = 0; SELECT pg_reload_conf();");
$node->poll("SELECT current_setting('hasched.executor_group_ms') = '0'");
my @s = submit_together(map { insert_tag("s$_") } 1 .. 5);
all_succeeded('with hasched.executor_group_ms = 0', @s);
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag LIKE 's%'"),
	'5', '... each job ran in its own transaction');
$node->query("ALTER SYSTEM SET hasched.executor_group_ms = '10s'; SELECT pg_reload_conf();");
$node->poll("SELECT current_setting('hasched.executor_group_ms') = '10s'");

# ---------------------------------------------------------------------------
# 2. a cancel that comes after the job's SQL ended, before its group commits
# ---------------------------------------------------------------------------
my ($ja, $jb, $jc) = submit_together(insert_tag('A'),
	'SELECT pg_sleep(2); ' . insert_tag('B'), insert_tag('C'));
ok( $node->poll_within(10,
		"SELECT count(*) = 1 FROM hasched.workers WHERE state = 'busy' AND job_id = $jb"),
	'the executor runs the second job (pg_sleep(2)), the first one done');
is( $node->query("SELECT state FROM hasched.job WHERE id = $ja"),
	'running', 'the first job is still running: its success commits with its group');
my $t0 = time;
is($node->query("SELECT hasched.cancel($ja)"), 't', 'cancel() of the first job returns true');
ok(time - $t0 < 2, '... at once: the executor holds no lock on it');
all_succeeded('the other jobs of the group', $jb, $jc);
is($node->query("SELECT state FROM hasched.job WHERE id = $ja"), 'cancelled', 'the first job stays cancelled');
is(tag_counts('A', 'B', 'C'), 'B:1,C:1', 'its effects never committed; the others wrote once');
is( $node->query("SELECT string_agg(attempt::text, ',' ORDER BY id) FROM hasched.job WHERE id IN ($jb, $jc)"),
	'1,1', '... in their first attempt');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($jb, $jc)"),
	'0', '... with no failed attempt');
isnt($node->query("SELECT xid FROM public.runs WHERE tag = 'B'"),
	$node->query("SELECT xid FROM public.runs WHERE tag = 'C'"),
	'... run again one per transaction');
ok($node->log_contains(qr/rolled back 2 jobs run together and runs them again one per transaction: a lease was no longer/),
	'the server log says why (the third job, stamped again as it started 2 s after its claim, ran in a group of its own)');

# ---------------------------------------------------------------------------
# 3. a job that fails in a group fails alone
# ---------------------------------------------------------------------------
my ($e1, $ef, $e2) = submit_together(insert_tag('E1'), 'SELECT 1/0', insert_tag('E2'));
ok($node->poll_within(15, "SELECT state = 'dead' FROM hasched.job WHERE id = $ef"),
	'a job whose SQL fails in a group fails (dead: max_attempts 1)');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $ef"),
	qr/division by zero/, '... with its error');
all_succeeded('the jobs before and after it', $e1, $e2);
is(tag_counts('E1', 'E2'), 'E1:1,E2:1', '... which wrote once');
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag IN ('E1', 'E2')"),
	'1', '... in one transaction');

# ---------------------------------------------------------------------------
# 4. the record of a group's successes fails
# ---------------------------------------------------------------------------
# A trigger refuses the success of one job: the group rolls back, its jobs
# run again one per transaction, and the failure falls on that job alone.
$node->query(
	q{
	CREATE FUNCTION public.refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF NEW.state = 'succeeded' AND NEW.payload->>'sql' LIKE '%poison%' THEN
			RAISE EXCEPTION 'refused success of job %', NEW.id;
		END IF;
		RETURN NEW;
	END $$;
	CREATE TRIGGER refuse_poison BEFORE UPDATE ON hasched.job
		FOR EACH ROW EXECUTE FUNCTION public.refuse_poison();
});
my ($p1, $pp, $p2) = submit_together(insert_tag('P1'), insert_tag('poison'), insert_tag('P2'));
ok($node->poll_within(15, "SELECT state = 'dead' FROM hasched.job WHERE id = $pp"),
	'the job whose success is refused fails');
like($node->query("SELECT last_error FROM hasched.job WHERE id = $pp"),
	qr/could not finish the attempt: refused success of job $pp/, '... with the error of its record');
all_succeeded('the other jobs of its group', $p1, $p2);
is(tag_counts('P1', 'P2', 'poison'), 'P1:1,P2:1', '... which wrote once; the refused one left nothing');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($p1, $p2)"),
	'0', '... with no failed attempt');
ok($node->log_contains(qr/rolled back 3 jobs run together and runs them again one per transaction: refused success/),
	'the server log says why the group rolled back');
$node->query('DROP TRIGGER refuse_poison ON hasched.job');

# ---------------------------------------------------------------------------
# 5. another owner: another transaction
# ---------------------------------------------------------------------------
$node->query(
	q{
	CREATE ROLE other LOGIN IN ROLE hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('other', 'enterprise');
});
my ($o1, $o2) = split /\n/, $node->query(
	"BEGIN;\n"
	  . "SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$" . insert_tag('o1') . "\$j\$), priority => 'high');\n"
	  . "SET ROLE other;\n"
	  . "SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$j\$" . insert_tag('o2') . "\$j\$), priority => 'low');\n"
	  . "RESET ROLE;\nCOMMIT;");
all_succeeded('jobs of two owners, submitted together', $o1, $o2);
ok($node->poll_within(15, "SELECT count(*) = 2 FROM public.runs WHERE tag IN ('o1', 'o2')"),
	'both wrote');
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag IN ('o1', 'o2')"),
	'2', '... in two transactions');

# ---------------------------------------------------------------------------
# 6. what a job leaves in its transaction does not reach the next job
# ---------------------------------------------------------------------------
# A cursor it left open (closed as at a commit), and constraint modes it set
# (such a job runs in a transaction of its own).
$node->query(
	q{
	CREATE TABLE public.parent (id int PRIMARY KEY);
	CREATE TABLE public.child (pid int REFERENCES public.parent DEFERRABLE INITIALLY IMMEDIATE);
	GRANT ALL ON public.parent, public.child TO PUBLIC;
	INSERT INTO public.parent VALUES (1);
});
my ($c1, $c2, $c3, $c4) = submit_together(
	'DECLARE c CURSOR FOR SELECT 1; ' . insert_tag('K1'),
	'DECLARE c CURSOR FOR SELECT 2; ' . insert_tag('K2'),
	'SET CONSTRAINTS ALL DEFERRED; ' . insert_tag('K3'),
	'INSERT INTO public.child VALUES (1); ' . insert_tag('K4'));
all_succeeded('a job that leaves a cursor open, one that declares the same cursor, '
	  . 'one that defers all constraints, and one that then inserts a row checked by a deferrable foreign key',
	$c1, $c2, $c3, $c4);
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag IN ('K1', 'K2')"),
	'1', '... the cursor jobs in one transaction');
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag IN ('K3', 'K4')"),
	'2', '... the job that sets constraint modes in a transaction of its own');

# SET CONSTRAINTS hidden in a function (the job's SQL does not name
# constraints): refused in a job that joined a group, which rolls back and
# runs again one job per transaction; the first job of a group that runs it
# keeps the group to itself.
$node->query(
	q{
	CREATE FUNCTION public.defer_all() RETURNS void LANGUAGE plpgsql
		AS $f$ BEGIN SET CONSTRAINTS ALL DEFERRED; END $f$;
});
my @h = submit_together(
	insert_tag('H1'),
	'SELECT public.defer_all(); ' . insert_tag('H2'),
	'INSERT INTO public.child VALUES (1); ' . insert_tag('H3'),
	insert_tag('H4'),
	'DO $d$ BEGIN PERFORM public.defer_all(); EXCEPTION WHEN OTHERS THEN NULL; END $d$; '
	  . insert_tag('H5'),
	insert_tag('H6'));
all_succeeded('jobs around two that run SET CONSTRAINTS from a function', @h);
is(tag_counts(map { "H$_" } 1 .. 6), 'H1:1,H2:1,H3:1,H4:1,H5:1,H6:1',
	'... each wrote once (what the rolled-back group wrote is gone)');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN (" . join(',', @h) . ")"
	  . " AND outcome <> 'succeeded'"), '0', '... no attempt failed');
is($node->query("SELECT count(*) FROM public.runs a JOIN public.runs b ON a.xid = b.xid"
	  . " WHERE a.tag IN ('H2', 'H5') AND b.tag LIKE 'H_' AND b.tag <> a.tag"),
	'0', '... and each job that ran SET CONSTRAINTS had its transaction to itself');

# A job whose SQL catches the refusal is run again all the same (a fresh
# queue: its first job starts a group, the next joins it).
$node->query("INSERT INTO hasched.queue (name, transport) VALUES ('cq', 'sql')");
my @cq = split /\n/, $node->query(
	"BEGIN;\n"
	  . join('', map {
			"SELECT hasched.submit('cq', jsonb_build_object('sql', \$j\$$_->[1]\$j\$), priority => '$_->[0]',"
			  . " max_attempts => 1);\n"
		} ([ 0, insert_tag('C1') ],
			[ 1, 'DO $d$ BEGIN PERFORM public.defer_all(); EXCEPTION WHEN OTHERS THEN NULL; END $d$; '
				  . insert_tag('C2') ],
			[ 2, insert_tag('C3') ]))
	  . "COMMIT;");
all_succeeded('a job that catches the refusal of SET CONSTRAINTS, between two others', @cq);
is(tag_counts('C1', 'C2', 'C3'), 'C1:1,C2:1,C3:1', '... each wrote once');
is($node->query("SELECT count(*) FROM public.runs a JOIN public.runs b ON a.xid = b.xid"
	  . " WHERE a.tag = 'C2' AND b.tag IN ('C1', 'C3')"),
	'0', '... and it had its transaction to itself');

# ---------------------------------------------------------------------------
# 7. after a job that ran long, its queue's jobs do not join groups
# ---------------------------------------------------------------------------
$node->query(
	q{
	INSERT INTO hasched.queue (name, transport) VALUES ('mixq', 'sql');
	ALTER SYSTEM SET hasched.executor_group_ms = '100ms'; SELECT pg_reload_conf();
});
$node->poll("SELECT current_setting('hasched.executor_group_ms') = '100ms'");
my $slow = $node->query("SELECT hasched.submit('mixq', '{\"sql\": \"SELECT pg_sleep(0.4)\"}')");
all_succeeded('a job of queue mixq that runs 0.4 s', $slow);
my ($m1, $m2) = split /\n/, $node->query(
	"BEGIN;\n"
	  . "SELECT hasched.submit('mixq', jsonb_build_object('sql', \$j\$" . insert_tag('M1') . "\$j\$), priority => '0');\n"
	  . "SELECT hasched.submit('mixq', jsonb_build_object('sql', \$j\$" . insert_tag('M2') . "\$j\$), priority => '1');\n"
	  . "COMMIT;");
all_succeeded('two quick jobs of mixq submitted together after it', $m1, $m2);
is($node->query("SELECT count(DISTINCT xid) FROM public.runs WHERE tag IN ('M1', 'M2')"),
	'2', '... ran in two transactions: the slow job keeps its queue out of groups for a while');

$node->stop;
done_testing();
