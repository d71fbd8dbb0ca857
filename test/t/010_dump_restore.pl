
# Copyright: hasched contributors
#
# 010_dump_restore.pl: pg_dump -Fc of a busy hasched database, pg_restore
# into a fresh server.
#
# The source is a promoted standby (so it has two epochs and a failover
# event) holding jobs in every state (scheduled, pending, running on a pull
# lease, running in an executor, dispatched, succeeded, failed waiting out a
# backoff, dead, cancelled), run history, quota use, tenants, an edited
# shipped tier, a new tier, an edited shipped queue, schedules (one paused
# while due), mode changes and their events.  Roles come first, as
# pg_dumpall --globals-only writes them; then pg_restore (serial, one
# transaction per item: the case where the scheduler could see a
# half-restored database).  The test proves that
#   (a) pg_restore reports no error, and every row of every hasched table
#       is there as it was dumped, the sequences (job ids, lease ids, event
#       ids) included;
#   (b) the scheduler there resumes correctly: it opens a new epoch for the
#       new server's timeline with one failover event, retries the SQL job
#       that was running at the dump (outcome failover, then it succeeds),
#       changes nothing else; the paused schedule stays paused; a new submit
#       gets an id above every restored one; an idempotency key restored
#       returns its job; a pull worker claims the restored pending jobs in
#       priority order and completes a restored lease with its old token; new
#       leases and events get ids above the restored ones;
#   (c) restore into a server without hasched preloaded, and into a
#       database that is not hasched.database: pg_restore fails with a clear
#       error and nothing of hasched's is restored (no table, no job) that a
#       scheduler could act on;
#   (d) while a pg_restore session is connected to the database, the
#       scheduler acts on nothing (a schedule due every second does not
#       fire) and says why in the log; it goes on when the session ends.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/010_dump_restore.pl
use strict;
use warnings;

use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $conf = q{
hasched.max_executors = 2
hasched.misfire_threshold = '2s'
};

# The hasched tables and the key that identifies their rows.
my @tables = qw(epoch event job job_run queue quota_use schedule state tenant tier);

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------
# Every row of a hasched table as text (UTC, one line each), sorted.  The
# epoch's last_round_at is left out: the scheduler's heartbeat writes it
# every second, also while pg_dump runs (the dump holds one instant of it).
sub rows_of
{
	my ($node, $table, $db) = @_;
	my $row = $table eq 'epoch' ? "(to_jsonb(t) - 'last_round_at')::text" : 't::text';
	my $out = $node->safe_psql($db // 'postgres',
		"SET TimeZone = 'UTC'; SELECT replace($row, E'\\n', '\\n') FROM hasched.$table t ORDER BY 1");
	return [ grep { $_ ne '' } split /\n/, $out ];
}

# The sequences: name => "last_value/is_called".
sub sequences_of
{
	my ($node) = @_;
	my %s;
	for my $seq ('hasched.job_id_seq', 'hasched.lease_id_seq',
		"pg_get_serial_sequence('hasched.event', 'id')")
	{
		my $name = $seq =~ /event/ ? 'event id' : $seq;
		my $rel = $seq =~ /^pg_get/ ? $node->query("SELECT $seq") : $seq;
		$s{$name} = $node->query("SELECT last_value || '/' || is_called FROM $rel");
	}
	return \%s;
}

sub snapshot
{
	my ($node) = @_;
	my %snap = map { $_ => rows_of($node, $_) } @tables;
	$snap{sequences} = sequences_of($node);
	return \%snap;
}

# Rows of $a missing from $b (multiset difference).
sub missing
{
	my ($a, $b) = @_;
	my %n;
	$n{$_}++ for @$b;
	return [ grep { !($n{$_}-- > 0) } @$a ];
}

# ---------------------------------------------------------------------------
# the source: a primary, then its promoted standby
# ---------------------------------------------------------------------------
my $primary = HaschedCluster->primary('primary', streaming => 1, conf => $conf);

# The SQL job that is running at the dump sleeps on the two source servers
# and returns at once anywhere else (the nodes' cluster_name is their name).
my $sleeper = "SELECT pg_sleep(CASE WHEN current_setting('cluster_name') IN ('primary', 'source') THEN 3600 ELSE 0 END)";

$primary->query(
	qq{
	CREATE ROLE acme NOLOGIN;
	CREATE ROLE globex NOLOGIN;
	CREATE ROLE app LOGIN IN ROLE acme, globex, hasched_submitter;
	CREATE ROLE worker LOGIN IN ROLE hasched_worker;
	-- a shipped tier edited, a new one
	UPDATE hasched.tier SET jobs_per_day = 250, burst = 20 WHERE name = 'free';
	INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst) VALUES ('gold', 50000, 500, 5000);
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'gold'), ('globex', 'free');
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	-- the shipped queue edited, and two more
	UPDATE hasched.queue SET concurrency = 7, lease = '2 minutes' WHERE name = 'default';
	INSERT INTO hasched.queue (name, concurrency, lease, backoff_base, backoff_max)
		VALUES ('emails', 0, '1 hour', '1 hour', '2 hours');
	INSERT INTO hasched.queue (name, transport, default_max_attempts, default_timeout)
		VALUES ('sqlq', 'sql', 5, '2 hours');
	SELECT hasched.set_mode('read_only', 'maintenance');
	SELECT hasched.set_mode('normal', 'maintenance done');
});
my $sleeping = $primary->query("SELECT hasched.submit('sqlq', jsonb_build_object('sql', \$s\$$sleeper\$s\$))");
ok($primary->poll_within(60, "SELECT state FROM hasched.job WHERE id = $sleeping", 'running'),
	'source: the long SQL job runs in an executor of the primary');
$primary->query(q{SELECT hasched.schedule('tick', '@every 1 second', 'emails', '{"from": "tick"}', tenant => 'acme', overlap => 'allow')});
ok($primary->poll_within(30, q{SELECT count(*) >= 2 FROM hasched.job WHERE schedule = 'tick'}),
	'source: schedule tick fired on the primary');

my $source = HaschedCluster->standby($primary, 'source');
$primary->stop('immediate');
$source->promote;
ok($source->poll_within(60, 'SELECT max(epoch) FROM hasched.epoch', '2'),
	'source: the promoted standby opened epoch 2');
ok( $source->poll_within(60,
		"SELECT state = 'running' AND attempt = 2 FROM hasched.job WHERE id = $sleeping"),
	'source: the SQL job of the old primary was retried and runs again there');

# Jobs in every state, as the app and a pull worker make them.
my @app = (extra_params => [ '-U', 'app' ]);
my @wrk = (extra_params => [ '-U', 'worker' ]);
my %id;
$id{scheduled} = $source->query(q{SELECT hasched.submit('emails', '{"n": "later"}', run_at => now() + interval '1 day', tenant => 'acme')}, @app);
$id{pending_low} = $source->query(q{SELECT hasched.submit('emails', '{"n": "low"}', priority => 'low', tenant => 'acme')}, @app);
$id{pending_high} = $source->query(q{SELECT hasched.submit('emails', '{"n": "high"}', priority => 'high', tenant => 'acme', idempotency_key => 'k-high')}, @app);
$source->query(q{SELECT hasched.submit_many('emails', ARRAY['{"m": 1}', '{"m": 2}', '{"m": 3}']::jsonb[], tenant => 'globex')}, @app);
for my $what (qw(succeeded failed dead running))
{
	$id{$what} = $source->query(qq{SELECT hasched.submit('default', '{"n": "$what"}', tenant => 'acme')}, @app);
	my $tok = $source->query("SELECT token FROM hasched.claim('default', 'w-$what', 1, lease => '1 hour') WHERE job_id = $id{$what}", @wrk);
	die "claim of job $id{$what} failed" if $tok eq '';
	$source->query("SELECT hasched.complete($id{$what}, '$tok', '{\"ok\": true}')", @wrk) if $what eq 'succeeded';
	$source->query("SELECT hasched.fail($id{$what}, '$tok', 'smtp timeout')", @wrk) if $what eq 'failed';
	$source->query("SELECT hasched.fail($id{$what}, '$tok', 'bad address', retry => false)", @wrk) if $what eq 'dead';
	$id{running_token} = $tok if $what eq 'running';
}
# ('default' has its lease edited to 2 minutes, the claims asked for 1 hour)
$id{cancelled} = $source->query(q{SELECT hasched.submit('emails', '{"n": "cancel me"}', tenant => 'acme')}, @app);
$source->query("SELECT hasched.cancel($id{cancelled})", @app);
# dispatched: no broker here; the transition itself, as the dispatcher makes it
$id{dispatched} = $source->query(q{SELECT hasched.submit('emails', '{"n": "to the broker"}', tenant => 'globex')}, @app);
$source->query("UPDATE hasched.job SET state = 'dispatched', started_at = now() WHERE id = $id{dispatched}");
$id{sql_done} = $source->query(q{SELECT hasched.submit('sqlq', '{"sql": "SELECT 41 + 1"}')});
ok($source->poll_within(60, "SELECT state FROM hasched.job WHERE id = $id{sql_done}", 'succeeded'),
	'source: an SQL job succeeded in an executor');

# Pause tick (due every second, so the restored server would fire it at
# once if it were not kept paused) and add a yearly schedule.
$source->query(q{SELECT hasched.alter_schedule('tick', active => false)});
$source->query(q{SELECT hasched.schedule('yearly', '0 0 0 1 1 *', 'emails', '{"n": "new year"}', tenant => 'acme')});

my $states = $source->query('SELECT string_agg(DISTINCT state::text, \',\' ORDER BY state::text) FROM hasched.job');
is($states, 'cancelled,dead,dispatched,failed,pending,running,scheduled,succeeded',
	'source: jobs in every state');

# ---------------------------------------------------------------------------
# dump
# ---------------------------------------------------------------------------
my $dumpdir = PostgreSQL::Test::Utils::tempdir;
my $dump = "$dumpdir/hasched.dump";
my $globals = "$dumpdir/globals.sql";
usleep(1_100_000);    # let the last fire of tick settle before the snapshot
my $before = snapshot($source);
command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $source->connstr('postgres') ], 'pg_dump -Fc of the source');
command_ok([ 'pg_dumpall', '--globals-only', '-f', $globals, '-d', $source->connstr('postgres') ],
	'pg_dumpall --globals-only of the source');
my $after = snapshot($source);
is_deeply($after, $before, 'the source did not change while it was dumped (the snapshot is what the dump holds)');
my $njobs = scalar @{ $before->{job} };
cmp_ok($njobs, '>=', 15, "source: $njobs jobs dumped");
# what a claim of two on emails should take: by priority, then run_at
my $first_two = $source->query(q{SELECT string_agg(id::text, ',' ORDER BY id) FROM (SELECT id FROM hasched.job WHERE queue = 'emails' AND state = 'pending' AND run_at <= now() ORDER BY priority, run_at, id LIMIT 2) s});
like($first_two, qr/^(\d+,)?$id{pending_high}(,\d+)?$/, 'source: the high priority job is among the two most urgent');
my $nticks = $source->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'});
my %maxid = (
	job => $source->query('SELECT max(id) FROM hasched.job'),
	lease => $source->query('SELECT max(lease_id) FROM hasched.job'),
	event => $source->query('SELECT max(id) FROM hasched.event'),
	epoch => $source->query('SELECT max(epoch) FROM hasched.epoch'));

# ---------------------------------------------------------------------------
# (a) restore into a fresh server
# ---------------------------------------------------------------------------
my $target = HaschedCluster->primary('target', extension => 0, conf => $conf);

# roles first, as pg_dumpall -g wrote them (the bootstrap superuser exists)
$target->psql('postgres', '', on_error_stop => 0, extra_params => [ '-f', $globals ]);
is($target->query(q{SELECT count(*) FROM pg_roles WHERE rolname IN ('acme', 'globex', 'app', 'worker', 'hasched_admin')}),
	'5', 'target: the roles are there before the restore');

# pg_restore as an operator runs it: with its default application_name
# (the test harness sets PGAPPNAME for every program it starts)
my ($stdout, $stderr) = ('', '');
my $rc;
{
	local $ENV{PGAPPNAME};
	delete $ENV{PGAPPNAME};
	$rc = IPC::Run::run([ 'pg_restore', '-d', $target->connstr('postgres'), $dump ],
		'>', \$stdout, '2>', \$stderr);
}
ok($rc, 'pg_restore into the fresh server succeeds') or diag($stderr);
unlike($stderr, qr/ERROR/, 'pg_restore reports no error');

my $restored = $target->query('SELECT count(*) FROM hasched.job');
is($restored, $njobs, "restored jobs: $restored of $njobs");
diag("restored jobs: $restored of $njobs");

# The scheduler resumes: a new epoch for this server's timeline (1, after
# the source's timeline 2), the running SQL job retried and then run here.
my $epoch = $maxid{epoch} + 1;
ok($target->poll_within(60, "SELECT count(*) FROM hasched.epoch WHERE epoch = $epoch AND timeline = 1", '1'),
	"target: the scheduler opened epoch $epoch for timeline 1");
ok($target->poll_within(60, "SELECT state FROM hasched.job WHERE id = $sleeping", 'succeeded'),
	'target: the SQL job that was running at the dump ran again and succeeded');
is($target->query("SELECT string_agg(attempt || ':' || outcome, ',' ORDER BY attempt) FROM hasched.job_run WHERE job_id = $sleeping"),
	'1:failover,2:failover', 'target: its attempt of the source ended as failover (like the first, on the old primary)');
is($target->query("SELECT attempt FROM hasched.job WHERE id = $sleeping"), '3', 'target: attempt 3 succeeded');

my $now = snapshot($target);
for my $t (@tables)
{
	my $lost = missing($before->{$t}, $now->{$t});
	my @lost = @$lost;
	# the one row the scheduler changed on purpose: the retried SQL job
	@lost = grep { !/^\($sleeping,/ } @lost if $t eq 'job';
	is(scalar(@lost), 0, "every row of hasched.$t is intact (" . scalar(@{ $before->{$t} }) . ' rows)')
	  or diag("missing or changed in hasched.$t:\n" . join("\n", @lost));
}
my %extra = map { $_ => missing($now->{$_}, $before->{$_}) } @tables;
is(scalar(@{ $extra{epoch} }), 1, 'target: one new epoch row');
is(scalar(@{ $extra{event} }), 1, 'target: one new event') or diag(join("\n", @{ $extra{event} }));
like($extra{event}[0] // '', qr/,failover,/, 'target: the new event is the failover');
is(scalar(@{ $extra{job_run} }), 1, 'target: one new run row (the retried SQL job)');
is(scalar(@{ $extra{job} }), 1, 'target: one changed job row (the retried SQL job), no new job')
  or diag(join("\n", @{ $extra{job} }));
for my $t (qw(queue quota_use schedule state tenant tier))
{
	is(scalar(@{ $extra{$t} }), 0, "target: hasched.$t has no row that the source lacks")
	  or diag(join("\n", @{ $extra{$t} }));
}
is($target->query('SELECT last_value FROM hasched.job_id_seq'),
	(split m{/}, $before->{sequences}{'hasched.job_id_seq'})[0], 'target: job_id_seq is where the source left it');
is($target->query(q{SELECT mode || '/' || reason FROM hasched.state}), 'normal/maintenance done',
	'target: the mode row is the source\'s');
is($target->query(q{SELECT jobs_per_day || '/' || burst FROM hasched.tier WHERE name = 'free'}), '250/20',
	'target: the edited shipped tier is kept');
is($target->query(q{SELECT concurrency || '/' || lease FROM hasched.queue WHERE name = 'default'}), '7/00:02:00',
	'target: the edited shipped queue is kept');

# ---------------------------------------------------------------------------
# (b) it works on from there
# ---------------------------------------------------------------------------
# (in an eval: with jobs lost, these statements fail; part (c) still runs)
eval {
	my $new = $target->query(q{SELECT hasched.submit('emails', '{"n": "after restore"}', tenant => 'acme')}, @app);
	cmp_ok($new, '>', $maxid{job}, "target: a new submit gets id $new, above every restored id ($maxid{job})");
	is($target->query(q{SELECT hasched.submit('emails', '{}', tenant => 'acme', idempotency_key => 'k-high')}, @app),
		$id{pending_high}, 'target: a restored idempotency key returns its restored job');
	my $claimed = $target->query(q{SELECT string_agg(job_id::text, ',' ORDER BY job_id) FROM hasched.claim('emails', 'w-new', 2, lease => '1 minute')}, @wrk);
	is($claimed, $first_two,
		"target: a pull worker claims the two most urgent restored jobs ($first_two: the high one, then the oldest medium)");
	my $lease = $target->query("SELECT lease_id FROM hasched.job WHERE id = $id{pending_high}");
	cmp_ok($lease, '>', $maxid{lease}, "target: a new lease gets id $lease, above every restored lease id ($maxid{lease})");
	$target->query("SELECT hasched.complete($id{running}, '$id{running_token}', '{\"late\": true}')", @wrk);
	is($target->query("SELECT state FROM hasched.job WHERE id = $id{running}"), 'succeeded',
		'target: a lease taken on the source is completed with its token');
	my $fo_event = $target->query(q{SELECT max(id) FROM hasched.event WHERE kind = 'failover'});
	cmp_ok($fo_event, '>', $maxid{event}, "target: the failover event got id $fo_event, above every restored event id");
	is($target->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'tick'}),
		$nticks, "target: the paused schedule did not fire (still its $nticks jobs of the source)");
	is($target->query(q{SELECT active FROM hasched.schedule WHERE name = 'tick'}), 'f', 'target: tick is still paused');
	1;
} or fail("the restored server works on: $@");

# ---------------------------------------------------------------------------
# (c) a database that is not hasched.database; a server without hasched
# ---------------------------------------------------------------------------
sub restore_refused
{
	my ($node, $db, $what, $pattern) = @_;
	my ($out, $err) = ('', '');
	my $ok = IPC::Run::run([ 'pg_restore', '-d', $node->connstr($db), $dump ], '>', \$out, '2>', \$err);
	ok(!$ok, "$what: pg_restore fails");
	like($err, $pattern, "$what: the error says why") or diag($err);
	is( $node->safe_psql(
			$db,
			q{SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'hasched'}),
		'0',
		"$what: no hasched table or sequence was restored");
	is($node->safe_psql($db, q{SELECT count(*) FROM pg_extension WHERE extname = 'hasched'}),
		'0', "$what: no extension hasched");
	return $err;
}

$target->safe_psql('postgres', 'CREATE DATABASE other');
my $err = restore_refused($target, 'other', 'into database other (hasched.database is postgres)',
	qr/ERROR:  cannot install hasched in database "other"/);
like($err, qr/DETAIL:  .*hasched\.database/s, 'other database: the detail names hasched.database');
like($err, qr/HINT:  .*hasched\.database/s, 'other database: the hint names hasched.database');
is($target->query('SELECT count(*) FROM hasched.job WHERE id > ' . $maxid{job}), '1',
	'other database: the server\'s own hasched (database postgres) is untouched');

my $bare = HaschedCluster->new('bare');    # hasched not preloaded
$bare->init;
$bare->start;
$bare->psql('postgres', '', on_error_stop => 0, extra_params => [ '-f', $globals ]);
restore_refused($bare, 'postgres', 'into a server without hasched preloaded',
	qr/hasched must be loaded via shared_preload_libraries.*\n.*HINT:  Add hasched to shared_preload_libraries/);

# ---------------------------------------------------------------------------
# (d) the scheduler does nothing while a pg_restore is connected
# ---------------------------------------------------------------------------
# (part (a) could pass without that by luck of timing: this proves it)
$target->query(
	q{SELECT hasched.schedule('beat', '* * * * * *', 'emails', '{"n": "beat"}', tenant => 'acme', overlap => 'allow')});
ok($target->poll_within(30, q{SELECT count(*) > 0 FROM hasched.job WHERE schedule = 'beat'}), 'target: beat fires');
my $log_offset = -s $target->logfile;
my $restore = $target->background_psql('postgres');
$restore->query_safe(q{SET application_name = 'pg_restore'});
ok( $target->poll_within(
		30, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'pg_restore'}),
	'a session named pg_restore is connected');
my $waits = qr/hasched: waiting for the restore into database "postgres" to finish \(pg_restore, pid \d+\)/;
my $end = time + 30;
usleep(100_000) while time < $end && slurp_file($target->logfile, $log_offset) !~ $waits;
like(slurp_file($target->logfile, $log_offset), $waits, 'the scheduler logs that it waits for the restore');
my $beats = $target->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'beat'});
sleep(3);
is($target->query(q{SELECT count(*) FROM hasched.job WHERE schedule = 'beat'}), $beats,
	'while it is connected, beat (every second) does not fire');
$restore->quit;
ok($target->poll_within(30, "SELECT count(*) > $beats FROM hasched.job WHERE schedule = 'beat'"),
	'once it is gone, beat fires again');
$target->query(q{SELECT hasched.unschedule('beat')});

$bare->stop;
$target->stop;
$source->stop;
done_testing();
