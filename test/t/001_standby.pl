
# Copyright: hasched contributors
#
# 001_standby.pl: hasched on a streaming standby.
#
# A primary with hasched preloaded, some jobs in every interesting state, and
# a hot standby made from a base backup.  The test proves that
#   - every function that writes is refused on the standby with SQLSTATE
#     JQ004 and a hint naming target_session_attrs=read-write, and that the
#     refusal changes nothing (the lease of a running job stays valid);
#   - reading works on the standby: the jobs, queues and tenants views, the
#     run history, row-level security for a tenant role;
#   - what the primary does (submit, complete) reaches the standby with the
#     same ids, payloads and states;
#   - the hint is actionable: a connection string listing both servers with
#     target_session_attrs=read-write lands on the primary and submits.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/001_standby.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

# ---------------------------------------------------------------------------
# primary
# ---------------------------------------------------------------------------
my $primary = HaschedCluster->primary('primary', streaming => 1);
$primary->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	-- a tenant role and a login role that submits for it (RLS on the standby)
	CREATE ROLE acme NOLOGIN;
	CREATE ROLE acme_app LOGIN IN ROLE acme, hasched_submitter, hasched_worker;
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'pro');
	INSERT INTO hasched.queue (name, lease) VALUES ('emails', '10 minutes');
});

# Jobs of the superuser's tenant, in several states.
my %job;
$job{pending} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('default', '{"kind": "pending", "n": 1}')});
$job{to_cancel} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('default', '{"kind": "to_cancel"}', priority => 'low')});
$job{scheduled} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('default', '{"kind": "scheduled"}',
	         run_at => now() + interval '1 day')});
$job{keyed} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('default', '{"kind": "keyed"}', idempotency_key => 'standby-key')});
# the 'emails' queue: one job to be left running with a live lease
$job{running} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('emails', '{"kind": "running"}', priority => 'high')});
my $claimed = $primary->safe_psql('postgres',
	q{SELECT job_id || ' ' || token FROM hasched.claim('emails', 'w-primary', 1)});
my ($running_id, $running_token) = split / /, $claimed;
is($running_id, $job{running}, 'the primary leases the running job to a worker');
like($running_token, qr/^\d+:\d+:\d+$/, 'the lease token has the form epoch:attempt:lease');
# acme's job, submitted by its login role
$job{acme} = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('emails', '{"kind": "acme"}', tenant => 'acme')},
	extra_params => [ '-U', 'acme_app' ]);
ok($job{$_} =~ /^\d+$/, "submit on the primary returned an id for the $_ job")
  for sort keys %job;

# ---------------------------------------------------------------------------
# standby
# ---------------------------------------------------------------------------
my $standby = HaschedCluster->standby($primary, 'standby');
$primary->wait_for_catchup($standby);

is($standby->safe_psql('postgres', 'SELECT pg_is_in_recovery()'),
	't', 'the standby is in recovery (hot standby)');
is( $standby->safe_psql('postgres', q{SHOW shared_preload_libraries}),
	'hasched', 'the standby preloads hasched (configuration came with the backup)');

# A write refused on the standby: an error, SQLSTATE JQ004, the hint.
sub refused_on_standby
{
	my ($what, $sql, %opts) = @_;
	my ($ret, undef, $stderr) = $standby->psql_verbose($sql, %opts);
	isnt($ret, 0, "$what on the standby fails");
	like($stderr, qr/ERROR:\s+JQ004:/,
		"$what on the standby is refused with SQLSTATE JQ004 (not the primary)");
	like($stderr, qr/HINT:.*target_session_attrs=read-write/,
		"$what on the standby hints at target_session_attrs=read-write");
	return $stderr;
}

# Everything that the standby serves, as one comparable text.
my $snapshot_sql = q{
	SELECT (SELECT count(*) FROM hasched.job) || '|' ||
	       (SELECT count(*) FROM hasched.job_run) || '|' ||
	       (SELECT count(*) FROM hasched.event) || '|' ||
	       (SELECT coalesce(string_agg(format('%s/%s/%s/%s/%s/%s/%s', id, state, attempt,
	                 epoch, lease_id, lease_until, payload), ',' ORDER BY id), '')
	          FROM hasched.job) || '|' ||
	       (SELECT mode FROM hasched.state)};
# ... and the id sequence, which the standby cannot advance.  (Not compared
# with the primary: a sequence's WAL record runs up to 32 values ahead.)
my $standby_state_sql = "SELECT ($snapshot_sql) || '|' || (SELECT last_value FROM hasched.job_id_seq)";
my $before = $standby->safe_psql('postgres', $standby_state_sql);
is($standby->safe_psql('postgres', $snapshot_sql), $primary->safe_psql('postgres', $snapshot_sql),
	'after catchup the standby serves the same jobs as the primary');

# ---------------------------------------------------------------------------
# (a), (b): writes are refused with JQ004 and a hint to reach the primary
# ---------------------------------------------------------------------------
my $err = refused_on_standby('submit', q{SELECT hasched.submit('default', '{}')});
like($err, qr/cannot submit jobs on a standby/,
	'the submit refusal says what was refused and why');

refused_on_standby('submit to a missing queue',
	q{SELECT hasched.submit('no_such_queue', '{}')});
refused_on_standby('submit with a known idempotency key',
	q{SELECT hasched.submit('default', '{}', idempotency_key => 'standby-key')});
refused_on_standby('submit_many',
	q{SELECT hasched.submit_many('default', ARRAY['{"n":1}', '{"n":2}']::jsonb[])});
refused_on_standby('claim', q{SELECT * FROM hasched.claim('default', 'w-standby', 10)});
refused_on_standby('complete with the live lease token',
	"SELECT hasched.complete($running_id, '$running_token', '{\"ok\": true}')");
refused_on_standby('fail with the live lease token',
	"SELECT hasched.fail($running_id, '$running_token', 'boom')");
refused_on_standby('heartbeat with the live lease token',
	"SELECT hasched.heartbeat($running_id, '$running_token')");
refused_on_standby('cancel of a pending job', "SELECT hasched.cancel($job{to_cancel})");
refused_on_standby('cancel of a running job', "SELECT hasched.cancel($running_id)");
refused_on_standby('retry', "SELECT hasched.retry($job{pending})");
refused_on_standby('requeue_expired', 'SELECT hasched.requeue_expired()');
refused_on_standby('set_mode read_only', q{SELECT hasched.set_mode('read_only', 'test')});
refused_on_standby('set_mode normal', q{SELECT hasched.set_mode('normal')});

# a tenant's own login role gets the same answer (not a permission error)
refused_on_standby(
	'submit by a tenant login role',
	q{SELECT hasched.submit('emails', '{}')},
	extra_params => [ '-U', 'acme_app' ]);
refused_on_standby(
	'claim by a worker login role',
	q{SELECT * FROM hasched.claim('emails', 'w-standby', 1)},
	extra_params => [ '-U', 'acme_app' ]);

# ---------------------------------------------------------------------------
# (c): reading works on the standby
# ---------------------------------------------------------------------------
my $njobs = scalar keys %job;
is($standby->safe_psql('postgres', 'SELECT count(*) FROM hasched.jobs'),
	$njobs, 'the jobs view counts every job on the standby');
is( $standby->safe_psql(
		'postgres', q{SELECT name || ':' || pending || ':' || scheduled || ':' || running
		                FROM hasched.queues ORDER BY name}),
	"default:3:1:0\nemails:1:0:1",
	'the queues view shows depth per queue on the standby (pending, scheduled, running)');
is( $standby->safe_psql(
		'postgres', "SELECT state FROM hasched.jobs WHERE id = $job{scheduled}"),
	'scheduled', 'a job with a future run_at reads as scheduled on the standby');
is( $standby->safe_psql(
		'postgres',
		"SELECT state || ' ' || worker FROM hasched.jobs WHERE id = $running_id"),
	'running w-primary', 'the running job and its worker read the same on the standby');
is( $standby->safe_psql(
		'postgres', q{SELECT tenant || ':' || tier FROM hasched.tenants ORDER BY tenant}),
	$primary->safe_psql(
		'postgres', q{SELECT tenant || ':' || tier FROM hasched.tenants ORDER BY tenant}),
	'the tenants view reads the same on the standby');
is( $standby->safe_psql(
		'postgres', 'SELECT id FROM hasched.jobs ORDER BY id',
		extra_params => [ '-U', 'acme_app' ]),
	$job{acme},
	'row-level security holds on the standby: a tenant role sees only its own jobs');
is($standby->safe_psql('postgres', q{SELECT hasched.priority_value('high')}),
	'0', 'pure helper functions work on the standby');

# ---------------------------------------------------------------------------
# the refusals changed nothing
# ---------------------------------------------------------------------------
is($standby->safe_psql('postgres', $standby_state_sql),
	$before, 'the refused writes left the standby\'s data unchanged');
is( $primary->safe_psql(
		'postgres',
		"SELECT state || ' ' || attempt FROM hasched.job WHERE id = $running_id"),
	'running 1', 'the lease the standby refused to end is still running on the primary');

# ---------------------------------------------------------------------------
# (c), (d): what the primary does reaches the standby
# ---------------------------------------------------------------------------
$primary->safe_psql('postgres',
	"SELECT hasched.complete($running_id, '$running_token', '{\"sent\": true}')");
pass('the primary accepts the completion with the token the standby refused');
my $new_id = $primary->safe_psql('postgres',
	q{SELECT hasched.submit('default', '{"kind": "late", "to": "x@example.com", "n": [1, 2]}',
	                        priority => 'high')});
my $new_payload = $primary->safe_psql('postgres',
	"SELECT payload FROM hasched.job WHERE id = $new_id");
$primary->safe_psql('postgres', "SELECT hasched.cancel($job{to_cancel})");
$primary->wait_for_catchup($standby);

is( $standby->safe_psql(
		'postgres', "SELECT state FROM hasched.jobs WHERE id = $running_id"),
	'succeeded', 'a job completed on the primary reads succeeded on the standby');
is( $standby->safe_psql(
		'postgres', "SELECT result FROM hasched.jobs WHERE id = $running_id"),
	'{"sent": true}', 'its result reached the standby');
is( $standby->safe_psql(
		'postgres',
		"SELECT attempt || ' ' || worker || ' ' || (finished_at IS NOT NULL) FROM hasched.jobs WHERE id = $running_id"
	),
	'1 w-primary true',
	'its attempt, worker and finish time reached the standby');
is( $standby->safe_psql(
		'postgres', "SELECT state FROM hasched.jobs WHERE id = $job{to_cancel}"),
	'cancelled', 'a job cancelled on the primary reads cancelled on the standby');
is( $standby->safe_psql(
		'postgres', "SELECT id || ' ' || payload FROM hasched.jobs WHERE id = $new_id"),
	"$new_id $new_payload",
	'a job submitted on the primary appears on the standby with the same id and payload');
is( $standby->safe_psql(
		'postgres', "SELECT priority_class || ' ' || state FROM hasched.jobs WHERE id = $new_id"),
	'high pending', 'the new job keeps its priority and state on the standby');
refused_on_standby('cancel of a job that arrived by replication',
	"SELECT hasched.cancel($new_id)");

# (e): the standby holds what the primary holds, no more, no less
is($standby->safe_psql('postgres', 'SELECT count(*) FROM hasched.job'),
	$primary->safe_psql('postgres', 'SELECT count(*) FROM hasched.job'),
	'the standby has as many jobs as the primary');
is($standby->safe_psql('postgres', $snapshot_sql),
	$primary->safe_psql('postgres', $snapshot_sql),
	'the standby\'s jobs, runs, events and mode equal the primary\'s');

# ---------------------------------------------------------------------------
# the hint works: target_session_attrs=read-write finds the primary
# ---------------------------------------------------------------------------
my $both =
    'host=' . $standby->host . ',' . $primary->host
  . ' port=' . $standby->port . ',' . $primary->port
  . ' dbname=postgres target_session_attrs=read-write';
my ($ret, $out, $stderr) = $standby->psql(
	'postgres',
	q{SELECT pg_is_in_recovery() || ' ' || hasched.submit('default', '{"via": "read-write"}')},
	connstr => $both);
is($ret, 0, 'with target_session_attrs=read-write, the standby listed first, submit works')
  or diag($stderr);
like($out, qr/^false \d+$/, 'that connection landed on the primary');

$standby->stop;
$primary->stop;
done_testing();
