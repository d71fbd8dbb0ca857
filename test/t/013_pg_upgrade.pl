
# Copyright: hasched contributors
#
# 013_pg_upgrade.pl: pg_upgrade of a cluster with hasched in use.
#
# pg_upgrade starts both clusters with their shared_preload_libraries and
# then drops and recreates each database of the new one; a background
# worker connected to hasched.database there makes it fail ("database is
# being accessed by other users").  The test upgrades a cluster (here to
# the same PostgreSQL major version: the machine has one, and the steps are
# the same) and proves that
#   (a) pg_upgrade succeeds with hasched preloaded in both clusters;
#   (b) the new cluster has hasched at the same version with every row of
#       the old one (jobs in several states, run history, edited tier,
#       schedules) and its sequences;
#   (c) its scheduler resumes: the SQL job that was running when the old
#       server stopped runs again and succeeds, a new submit gets an id
#       above the old ones, a pending SQL job runs.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/013_pg_upgrade.pl
use strict;
use warnings;

use Cwd;
use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;

my $conf = q{
hasched.max_executors = 2
};

my $old = HaschedCluster->primary('old', conf => $conf);

my @tables = qw(epoch event job job_run queue quota_use schedule state tenant tier);

sub rows
{
	my ($node) = @_;
	my %r;
	for my $t (@tables)
	{
		$r{$t} = $node->safe_psql('postgres',
			"SET TimeZone = 'UTC'; SELECT string_agg(t::text, E'\\n' ORDER BY t::text) FROM hasched.$t t");
	}
	for my $s (qw(job_id_seq lease_id_seq))
	{
		$r{$s} = $node->safe_psql('postgres', "SELECT last_value FROM hasched.$s");
	}
	return \%r;
}

$old->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	UPDATE hasched.tier SET jobs_per_day = 123 WHERE name = 'free';
	INSERT INTO hasched.queue (name, transport, default_max_attempts) VALUES ('sqlq', 'sql', 5);
	INSERT INTO hasched.queue (name) VALUES ('pullq');
	CREATE TABLE public.ran (what text);
	SELECT hasched.submit('pullq', '{"n": 1}');
	SELECT hasched.submit('pullq', '{"n": 2}', run_at => now() + interval '1 day');
	SELECT hasched.schedule('yearly', '0 0 0 1 1 *', 'pullq', '{"n": "new year"}');
});
# runs for an hour in the old cluster, at once anywhere else (a node's
# cluster_name is its name)
my $sleeper = $old->query(
	q{SELECT hasched.submit('sqlq', jsonb_build_object('sql', $s$SELECT pg_sleep(CASE WHEN current_setting('cluster_name') = 'old' THEN 3600 ELSE 0 END)$s$))}
);
my $done = $old->query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.ran VALUES (''before'')"}')});
ok($old->poll_within(60, "SELECT state FROM hasched.job WHERE id = $sleeper", 'running'), 'old: the long SQL job runs');
ok($old->poll_within(60, "SELECT state FROM hasched.job WHERE id = $done", 'succeeded'), 'old: a short SQL job succeeded');
my $version = $old->query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'});
$old->stop('fast');

# The rows of a stopped cluster, read while its scheduler cannot act (it
# serves a database that does not exist), so that nothing changes them.
sub rows_quiet
{
	my ($node) = @_;
	$node->append_conf('postgresql.conf', "hasched.database = 'no_such_database'");
	$node->start;
	my $r = rows($node);
	$node->stop('fast');
	$node->append_conf('postgresql.conf', "hasched.database = 'postgres'");
	return $r;
}
my $before = rows_quiet($old);
is(scalar(split /\n/, $before->{job}), 4, 'old: four jobs (pending, scheduled, running, succeeded)')
  or diag($before->{job});

# the new cluster, configured as the old one (HaschedCluster->primary would
# start it; pg_upgrade needs it stopped)
my $new = HaschedCluster->new('new');
$new->init;
$new->append_conf(
	'postgresql.conf', qq{
shared_preload_libraries = 'hasched'
hasched.database = 'postgres'
max_worker_processes = 16
$conf});

my $bindir = $old->config_data('--bindir');
my $cwd = getcwd;
my $workdir = PostgreSQL::Test::Utils::tempdir;
chdir $workdir;
my ($out, $err) = ('', '');
my $ok = IPC::Run::run(
	[
		'pg_upgrade', '--no-sync', '-d', $old->data_dir, '-D', $new->data_dir,
		'-b', $bindir, '-B', $bindir, '-s', $new->host, '-p', $old->port, '-P', $new->port
	],
	'>', \$out, '2>', \$err);
chdir $cwd;
ok($ok, 'pg_upgrade succeeds with hasched preloaded in both clusters')
  or diag("$out\n$err\n" . join("\n", map { slurp_file($_) } glob($new->data_dir . '/pg_upgrade_output.d/*/log/*dump*.log')));

SKIP:
{
	skip 'pg_upgrade failed', 8 unless $ok;
	is_deeply(rows_quiet($new), $before, 'new: every row of every hasched table and the sequences are as in the old cluster');
	$new->start;
	is($new->query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}),
		$version, "new: hasched at the same version ($version)");
	ok($new->poll_within(60, "SELECT state FROM hasched.job WHERE id = $sleeper", 'succeeded'),
		'new: the SQL job that was running when the old server stopped ran again and succeeded');
	is($new->query("SELECT string_agg(outcome, ',') FROM hasched.job_run WHERE job_id = $sleeper"),
		'executor_exited', 'new: its interrupted attempt is in the run history');
	my $id = $new->query(q{SELECT hasched.submit('sqlq', '{"sql": "INSERT INTO public.ran VALUES (''after'')"}')});
	cmp_ok($id, '>', $sleeper + 1, "new: a new submit gets id $id, above the old ones");
	ok($new->poll_within(60, "SELECT state FROM hasched.job WHERE id = $id", 'succeeded'), 'new: it runs');
	is($new->query(q{SELECT string_agg(what, ',' ORDER BY what) FROM public.ran}), 'after,before',
		'new: each job ran once');
	$new->stop;
}

done_testing();
