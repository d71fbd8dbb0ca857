
# Copyright: hasched contributors
#
# 011_upgrade.pl: from the released 0.1.0 to this version.
#
# One server with this build of hasched preloaded.  The test proves that
#   (a) a database created at 0.1.0 (CREATE EXTENSION hasched VERSION
#       '0.1.0', as a server of the 0.1.0 release left it) with jobs and a
#       due schedule is not touched by the new library until it is updated:
#       the scheduler logs one line saying it waits for ALTER EXTENSION
#       hasched UPDATE, runs no job, fires no schedule and changes no row;
#   (b) ALTER EXTENSION hasched UPDATE brings it to this version (the
#       control file's default_version, newer than 0.1.0); the scheduler
#       then resumes: the waiting job runs, the schedule fires, no row of
#       before is lost;
#   (c) the schema after the update equals a fresh CREATE EXTENSION hasched
#       of this version: pg_dump --schema-only --binary-upgrade (the mode in
#       which pg_dump writes an extension's member objects), normalised
#       (OIDs, comments and the dump's random \restrict key removed), and
#       the configuration tables pg_dump keeps, with their filters;
#   (d) the renamed view: hasched.executor_slots lists the executors;
#       hasched.workers, its old name, stays as a deprecated alias;
#   (e) bad input gets PostgreSQL's own refusal: an update to an unknown
#       version or back to 0.1.0, CREATE EXTENSION of an unknown version;
#       updating twice does nothing; the upgrade script run by hand stops at
#       its guard;
#   (f) CREATE EXTENSION hasched in a database other than hasched.database
#       is refused (JQ023) with a detail and a hint naming the setting, and
#       leaves nothing behind; so is ALTER EXTENSION hasched UPDATE of a
#       0.1.0 installed there;
#   (g) a pg_dump taken at 0.1.0 restores into this version, every job;
#   (h) ALTER EXTENSION hasched UPDATE in a server without hasched preloaded
#       is refused with an error that says so.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/011_upgrade.pl
use strict;
use warnings;

use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# the extension is created below, at 0.1.0
my $node = HaschedCluster->primary(
	'upgrade',
	extension => 0,
	conf => q{
hasched.max_executors = 2
hasched.scheduler_naptime = '200ms'
});

sub query
{
	my ($sql, @opt) = @_;
	return $node->query($sql, @opt);
}

# SQL expected to fail (or to say something) in database $db: its stderr,
# with the SQLSTATE (VERBOSITY verbose).
sub query_stderr
{
	my ($db, $sql) = @_;
	my ($rc, $out, $err) = $node->psql($db, "\\set VERBOSITY verbose\n$sql");
	return $rc == 0 ? "(no error; output: $out) $err" : $err;
}

my @tables = qw(epoch event job job_run queue quota_use schedule state tenant tier);

sub table_rows
{
	my %r;
	for my $t (@tables)
	{
		# hasched.queue as JSON without its NULLs: the columns 0.2.0 adds to it
		# (paused_at, ...) are NULL in the rows of 0.1.0
		my $row = $t eq 'queue' ? 'jsonb_strip_nulls(to_jsonb(t))::text' : 't::text';
		$r{$t} = query("SET TimeZone = 'UTC'; SELECT string_agg($row, E'\\n' ORDER BY t::text) FROM hasched.$t t");
	}
	return \%r;
}

# The schema of database postgres as pg_dump writes an extension's
# members, normalised: statements sorted; OIDs, comments, freeze
# horizons and sequence positions out.
sub schema_dump
{
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'pg_dump', '--schema-only', '--binary-upgrade', '--exclude-schema=public', '-d', $node->connstr('postgres') ],
		'>', \$out, '2>', \$err)
	  or die "pg_dump failed: $err";
	my @stmts;
	for my $stmt (split /;\n/, $out)
	{
		my @lines = grep {
			$_ ne ''
			  && !/^--/
			  && !/^\\(un)?restrict /
			  && !/binary_upgrade_set_next_/
			  && !/binary_upgrade_set_record_init_privs/
		} split /\n/, $stmt;
		next unless @lines;
		my $s = join("\n", @lines);
		# data, not schema: freeze horizons of tables, sequence positions
		next if $s =~ /relfrozenxid|pg_catalog\.setval\(/;
		# the OIDs of the configuration tables (compared by name below)
		$s =~ s/(binary_upgrade_create_empty_extension\('hasched', 'hasched', false, '[^']*', )'\{[0-9,]*\}'/$1'{oids}'/;
		push @stmts, $s;
	}
	return join(";\n", sort @stmts) . "\n";
}

sub config_tables
{
	return query(
		q{SELECT string_agg(c::regclass::text || ' ' || coalesce(x.extcondition[i], ''), E'\n' ORDER BY c::regclass::text)
		    FROM pg_extension x, unnest(x.extconfig) WITH ORDINALITY AS u(c, i)
		   WHERE x.extname = 'hasched'});
}

my $default_version = query(q{SELECT default_version FROM pg_available_extensions WHERE name = 'hasched'});
isnt($default_version, '0.1.0', "this build's version ($default_version) is newer than the released 0.1.0");

# ---------------------------------------------------------------------------
# (a) the new library against a 0.1.0 schema
# ---------------------------------------------------------------------------
my $log_offset = -s $node->logfile;
query(q{
	CREATE EXTENSION hasched VERSION '0.1.0';
	CREATE TABLE public.ran (what text, at timestamptz DEFAULT clock_timestamp());
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	UPDATE hasched.tier SET jobs_per_day = 300 WHERE name = 'free';
	INSERT INTO hasched.queue (name, transport) VALUES ('sqlq', 'sql');
	INSERT INTO hasched.queue (name) VALUES ('pullq');
	-- the rows 0.1.0's submit(), claim() and schedule() wrote, written here
	-- by hand: this library's functions need the updated schema (its jobs
	-- and schedules name their roles by OID, and jobs their writer)
	INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	VALUES ('pullq', current_user, current_user, 5, 'pending', now(), 3, '5 minutes', '{"n": 1}'),
		   ('pullq', current_user, current_user, 5, 'pending', now(), 3, '5 minutes', '{"n": 2}');
	UPDATE hasched.job SET state = 'running', attempt = 1, epoch = 1,
		   lease_id = nextval('hasched.lease_id_seq'), lease_until = now() + interval '1 hour',
		   worker = 'w', started_at = now()
	 WHERE id = (SELECT min(id) FROM hasched.job);
});
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}), '0.1.0', 'installed at 0.1.0');
my $job = query(q{INSERT INTO hasched.job (queue, tenant, owner, priority, state, run_at, max_attempts, timeout, payload)
	VALUES ('sqlq', current_user, current_user, 5, 'pending', now(), 3, '5 minutes',
			'{"sql": "INSERT INTO public.ran VALUES (''job'')"}') RETURNING id});
query(q{INSERT INTO hasched.schedule (name, spec, queue, payload, tenant, owner, next_run_at)
	VALUES ('every-second', '* * * * * *', 'sqlq', '{"sql": "INSERT INTO public.ran VALUES (''tick'')"}',
			current_user, current_user, now() + interval '1 second')});
my $rows_before = table_rows();

my $waiting = qr/hasched: waiting for ALTER EXTENSION hasched UPDATE in database "postgres": [^\n]*version 0\.1\.0/;
my $seen = 0;
my $end = time + 30;
while (time < $end)
{
	$seen = 1, last if slurp_file($node->logfile, $log_offset) =~ $waiting;
	usleep(100_000);
}
ok($seen, 'the scheduler logs that it waits for ALTER EXTENSION hasched UPDATE (schema 0.1.0)')
  or diag(slurp_file($node->logfile, $log_offset));
sleep(3);    # fifteen scheduler naptimes
is(query(q{SELECT state FROM hasched.job WHERE id = } . $job), 'pending', 'the SQL job waits: no executor ran it');
is(query(q{SELECT count(*) FROM public.ran}), '0', 'nothing ran: no job, no schedule fire');
is_deeply(table_rows(), $rows_before, 'no row of any hasched table changed while it waited');
my @lines = (slurp_file($node->logfile, $log_offset) =~ /$waiting/g);
is(scalar(@lines), 1, 'the waiting line is logged once, not once per round');

# a dump of this 0.1.0 database, restored into this version in (g)
my $dump010 = PostgreSQL::Test::Utils::tempdir . '/hasched-0.1.0.dump';
my ($jobs010, $max010) = split /\|/, query('SELECT count(*), max(id) FROM hasched.job');
{
	my ($o, $e) = ('', '');
	IPC::Run::run([ 'pg_dump', '-Fc', '-f', $dump010, '-d', $node->connstr('postgres') ], '>', \$o, '2>', \$e)
	  or die "pg_dump failed: $e";
}

# ---------------------------------------------------------------------------
# (b) ALTER EXTENSION hasched UPDATE
# ---------------------------------------------------------------------------
query('ALTER EXTENSION hasched UPDATE');
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}),
	$default_version, "ALTER EXTENSION hasched UPDATE: now at $default_version");
ok($node->poll_within(30, "SELECT state FROM hasched.job WHERE id = $job", 'succeeded'),
	'after the update the waiting SQL job runs');
ok($node->poll_within(30, q{SELECT count(*) > 0 FROM public.ran WHERE what = 'tick'}),
	'after the update the schedule fires');
my $rows_after = table_rows();
for my $t (qw(queue tenant tier))
{
	is($rows_after->{$t}, $rows_before->{$t}, "hasched.$t is as before the update");
}
like($rows_after->{job}, qr/""n"": 1/, 'the pull job of 0.1.0 is still there');

my $upgraded_schema = schema_dump();
my $upgraded_config = config_tables();

# ---------------------------------------------------------------------------
# (d) the executors' view
# ---------------------------------------------------------------------------
eval {
	is(query(q{SELECT count(*) FROM hasched.executor_slots}), '2',
		'hasched.executor_slots has a row per executor slot (hasched.max_executors = 2)');
	is(query(q{SELECT count(*) FROM (SELECT slot, pid, state FROM hasched.workers EXCEPT SELECT slot, pid, state FROM hasched.executor_slots) d}),
		'0', 'hasched.workers, the old name, shows the same');
	like(query(q{SELECT obj_description('hasched.workers'::regclass)}), qr/deprecated/i,
		'hasched.workers is marked deprecated');
	1;
} or fail("the executors' view: $@");

# ---------------------------------------------------------------------------
# (e) PostgreSQL's own refusals
# ---------------------------------------------------------------------------
like(query_stderr('postgres', 'ALTER EXTENSION hasched UPDATE'),
	qr/version "\Q$default_version\E" of extension "hasched" is already installed/,
	'updating twice: PostgreSQL says the version is already installed');
like(query_stderr('postgres', q{ALTER EXTENSION hasched UPDATE TO '0.1.0'}),
	qr/ERROR:  22023: extension "hasched" has no update path from version "\Q$default_version\E" to version "0\.1\.0"/,
	'an update back to 0.1.0: no update path');
like(query_stderr('postgres', q{ALTER EXTENSION hasched UPDATE TO '9.9.9'}),
	qr/ERROR:  22023: extension "hasched" has no update path from version "\Q$default_version\E" to version "9\.9\.9"/,
	'an update to an unknown version: no update path');
my $sharedir = query(q{SELECT setting FROM pg_config WHERE name = 'SHAREDIR'});
my ($script) = glob("$sharedir/extension/hasched--0.1.0--*.sql");
ok(defined $script && -f $script, 'the upgrade script from 0.1.0 is installed');
my ($rc, $out, $err) = $node->psql('postgres', '', extra_params => [ '-f', $script // '/nonexistent' ]);
like("$out$err", qr/Use "ALTER EXTENSION hasched UPDATE[^"]*" to load this file/,
	'the upgrade script run by hand stops at its guard');
is(schema_dump(), $upgraded_schema, 'and changed nothing');

# ---------------------------------------------------------------------------
# (c) the updated schema equals a fresh one
# ---------------------------------------------------------------------------
query('DROP EXTENSION hasched CASCADE');
query('DROP SCHEMA IF EXISTS hasched CASCADE');
like(query_stderr('postgres', q{CREATE EXTENSION hasched VERSION '0.0.1'}),
	qr/ERROR:  22023: extension "hasched" has no installation script nor update path for version "0\.0\.1"/,
	'CREATE EXTENSION of an unknown version: no installation script');
query('CREATE EXTENSION hasched');
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}), $default_version,
	"a fresh CREATE EXTENSION hasched installs $default_version");
my $fresh_schema = schema_dump();
my @diff = ();
{
	my @u = split /\n/, $upgraded_schema;
	my @f = split /\n/, $fresh_schema;
	my %f = map { $_ => 1 } @f;
	my %u = map { $_ => 1 } @u;
	push @diff, map { "only after the update: $_" } grep { !$f{$_} } @u;
	push @diff, map { "only in a fresh install: $_" } grep { !$u{$_} } @f;
}
ok($upgraded_schema eq $fresh_schema,
	'pg_dump --schema-only --binary-upgrade, normalised: the updated schema equals a fresh install ('
	  . scalar(split /\n/, $fresh_schema) . ' lines)')
  or diag(join("\n", @diff[ 0 .. ($#diff < 40 ? $#diff : 40) ]));
is(config_tables(), $upgraded_config, 'the tables pg_dump keeps, and their filters, are the same');

# ---------------------------------------------------------------------------
# (f) another database than hasched.database
# ---------------------------------------------------------------------------
query('CREATE DATABASE other');
my $refusal = query_stderr('other', 'CREATE EXTENSION hasched');
like($refusal, qr/ERROR:  JQ023: cannot install hasched in database "other"/,
	'CREATE EXTENSION hasched in database other: refused (JQ023)');
like($refusal, qr/DETAIL:  [^\n]*hasched\.database is "postgres"/, 'the detail names hasched.database and its value');
like($refusal, qr/HINT:  [^\n]*hasched\.database/, 'the hint names hasched.database');
is($node->safe_psql('other', q{SELECT count(*) FROM pg_namespace WHERE nspname = 'hasched'}), '0',
	'nothing is left behind in database other (no schema hasched)');
$node->safe_psql('other', q{CREATE EXTENSION hasched VERSION '0.1.0'});
like(query_stderr('other', 'ALTER EXTENSION hasched UPDATE'),
	qr/ERROR:  JQ023: cannot install hasched in database "other"/,
	'ALTER EXTENSION hasched UPDATE of a 0.1.0 in database other: refused too');
is($node->safe_psql('other', q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}), '0.1.0',
	'and it stays at 0.1.0');

# ---------------------------------------------------------------------------
# (g) a dump taken at 0.1.0 restores into this version
# ---------------------------------------------------------------------------
query('DROP EXTENSION hasched CASCADE; DROP SCHEMA hasched CASCADE; DROP TABLE public.ran');
{
	my ($o, $e) = ('', '');
	local $ENV{PGAPPNAME};
	delete $ENV{PGAPPNAME};
	ok(IPC::Run::run([ 'pg_restore', '-d', $node->connstr('postgres'), $dump010 ], '>', \$o, '2>', \$e),
		'a dump taken at 0.1.0: pg_restore succeeds')
	  or diag($e);
}
is(query(q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}), $default_version,
	"it comes back at $default_version");
# (its every-second schedule may fire as soon as the restore is over)
is(query("SELECT count(*) FROM hasched.job WHERE id <= $max010"), $jobs010, "with its $jobs010 jobs");
is(query(q{SELECT count(*) FROM hasched.job WHERE state = 'running'}), '1', 'the leased one still running');

# ---------------------------------------------------------------------------
# (h) ALTER EXTENSION hasched UPDATE in a server without hasched preloaded
# ---------------------------------------------------------------------------
$node->append_conf('postgresql.conf', "shared_preload_libraries = ''");
$node->restart;
like(query_stderr('other', 'ALTER EXTENSION hasched UPDATE'),
	qr/ERROR:  (JQ023: hasched is not loaded in this server|55000: hasched must be loaded via shared_preload_libraries)/,
	'ALTER EXTENSION hasched UPDATE without hasched preloaded: refused, saying so');
is($node->safe_psql('other', q{SELECT extversion FROM pg_extension WHERE extname = 'hasched'}), '0.1.0',
	'and it stays at 0.1.0');

$node->stop;
done_testing();
