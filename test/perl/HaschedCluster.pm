
# Copyright: hasched contributors
#
# HaschedCluster.pm: the one place where hasched's TAP tests, the demo and
# the benchmarks start and stop PostgreSQL servers.
#
# IDENTIFICATION
#	test/perl/HaschedCluster.pm

=pod

=head1 NAME

HaschedCluster - PostgreSQL::Test::Cluster nodes with hasched loaded

=head1 SYNOPSIS

  use HaschedCluster;
  use Test::More;

  my $primary = HaschedCluster->primary('primary', streaming => 1,
      conf => "hasched.max_executors = 4\n");
  my $standby = HaschedCluster->standby($primary, 'standby', sync => 1);

  my $id = $primary->query(q{SELECT hasched.submit('default', '{}')});
  like($standby->query_error(q{SELECT hasched.submit('default', '{}')}),
      qr/ERROR:\s+JQ004:/, 'a standby refuses submits');
  ok($primary->wait_scheduler('primary'), 'the scheduler is up');

=head1 DESCRIPTION

A subclass of PostgreSQL::Test::Cluster: every method of that class works on
the nodes made here, and nodes are stopped when the script exits (also on
failure; see teardown_node below).  Two constructors set a node up the way
hasched needs it, and a few methods do what the tests used to write each
for themselves: SQL with the SQLSTATE of its error, polling with and without
a deadline, waiting for the scheduler, a job's state, its run history.

The module finds pg_regress (which PostgreSQL::Test::Cluster's init needs)
from pg_config when PG_REGRESS is not set, so that it also works outside
`make installcheck` (scripts/demo.pl).  Found by `prove` through the
Makefile's PROVE_FLAGS (-I test/perl).

=cut

package HaschedCluster;

use strict;
use warnings;

use Carp;
use File::Basename qw(dirname);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

use parent -norequire, 'PostgreSQL::Test::Cluster';

# PostgreSQL::Test::Cluster::init runs "$PG_REGRESS --config-auth"; PGXS
# sets PG_REGRESS for make installcheck; elsewhere, take the one that ships
# with the server's PGXS files.
BEGIN
{
	if (!defined $ENV{PG_REGRESS} || !-x $ENV{PG_REGRESS})
	{
		my $pgxs = `pg_config --pgxs 2>/dev/null`;
		chomp $pgxs;
		# .../lib/pgxs/src/makefiles/pgxs.mk -> .../lib/pgxs/src/test/regress/pg_regress
		$ENV{PG_REGRESS} = dirname(dirname($pgxs)) . '/test/regress/pg_regress'
		  if $pgxs ne '';
	}
}

=pod

=head1 CONSTRUCTORS

=over

=item HaschedCluster->primary($name, %opt)

initdb, configure and start a node with hasched preloaded; returns it.
Its postgresql.conf gets shared_preload_libraries = 'hasched',
hasched.database = the database below and max_worker_processes = 16
(room for the scheduler, executors and parallel workers), then C<conf>.
Options:

=over

=item conf => text

More postgresql.conf lines, appended last (they win).

=item extension => 1

CREATE EXTENSION hasched in the database (0: leave it to the caller).

=item streaming => 0

1: initdb with allows_streaming (WAL for standbys, wal_log_hints).

=item db => 'postgres'

hasched.database, and the database that the methods below use.

=item initdb => [ ... ]

Extra initdb arguments (e.g. [ '-U', 'postgres' ]).

=item port => N

A fixed port; by default a free one is chosen.

=back

=cut

sub primary
{
	my ($class, $name, %opt) = @_;
	my $db = $opt{db} // 'postgres';

	my $node = $class->new($name, defined $opt{port} ? (port => $opt{port}) : ());
	$node->{hasched_db} = $db;
	$node->init(
		allows_streaming => $opt{streaming} ? 1 : 0,
		extra => $opt{initdb} // []);
	$node->append_conf(
		'postgresql.conf', qq{
# added by HaschedCluster.pm
shared_preload_libraries = 'hasched'
hasched.database = '$db'
max_worker_processes = 16
});
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	$node->start;
	$node->query('CREATE EXTENSION hasched') if $opt{extension} // 1;
	return $node;
}

=pod

=item HaschedCluster->standby($primary, $name, %opt)

A streaming hot standby of $primary (which must have been made with
streaming => 1), from a base backup; started, and caught up with the
primary when this returns.  It keeps the primary's configuration, except
that synchronous_standby_names is emptied: a promoted standby must not wait
for a standby of its own.  Options:

=over

=item conf => text

postgresql.conf lines for the standby, appended last.

=item sync => 0

1: make it the primary's synchronous standby (ALTER SYSTEM SET
synchronous_standby_names = 'FIRST 1 (name)' on the primary, reloaded) and
wait until it is.

=item backup => name

Make it from this backup of the primary: taken if it does not exist yet,
reused if it does (several standbys from one backup).  Default: a fresh
backup named after the standby.

=item port => N

A fixed port; by default a free one is chosen.

=back

=cut

sub standby
{
	my ($class, $primary, $name, %opt) = @_;
	my $backup = $opt{backup} // "for_$name";

	$primary->backup($backup) unless -d $primary->backup_dir . "/$backup";
	my $node = $class->new($name, defined $opt{port} ? (port => $opt{port}) : ());
	$node->{hasched_db} = $primary->db;
	$node->init_from_backup($primary, $backup, has_streaming => 1);
	# postgresql.auto.conf is read last: this wins even over an ALTER SYSTEM
	# of the primary's that came with the backup
	$node->append_conf('postgresql.auto.conf', "synchronous_standby_names = ''");
	$node->append_conf('postgresql.conf', $opt{conf}) if defined $opt{conf};
	$node->start;
	$primary->wait_for_catchup($node);
	if ($opt{sync})
	{
		$primary->safe_psql('postgres',
			"ALTER SYSTEM SET synchronous_standby_names = 'FIRST 1 ($name)'");
		$primary->reload;
		$primary->poll_query_until('postgres',
			"SELECT sync_state = 'sync' FROM pg_stat_replication WHERE application_name = '$name'")
		  or croak "standby $name did not become synchronous";
	}
	return $node;
}

=pod

=back

=head1 METHODS

All of them work on the node's hasched database (C<db> above; 'postgres'
for nodes made with new()).

=over

=item $node->db

The database name.

=cut

sub db
{
	my ($self) = @_;
	return $self->{hasched_db} // 'postgres';
}

=pod

=item $node->query($sql, %psql_opts)

safe_psql on the database: its output, or die on an error.  Options as
for safe_psql (extra_params => [ '-U', $role ], ...).

=cut

sub query
{
	my ($self, $sql, %o) = @_;
	return $self->safe_psql($self->db, $sql, %o);
}

=pod

=item $node->psql_verbose($sql, %psql_opts)

Runs $sql with \set VERBOSITY verbose, stopping at the first error;
returns (exit code, stdout, stderr), the stderr with the SQLSTATE of an
error ("ERROR:  JQ004: ...").

=cut

sub psql_verbose
{
	my ($self, $sql, %o) = @_;
	my ($ret, $out, $err) = $self->psql($self->db, "\\set VERBOSITY verbose\n$sql",
		on_error_stop => 1, %o);
	return ($ret, $out, $err);
}

=pod

=item $node->query_error($sql, %psql_opts)

For SQL expected to fail: its stderr, with the SQLSTATE (see
psql_verbose); if it did not fail, "(no error; output: ...)", which
no error pattern matches.

=cut

sub query_error
{
	my ($self, $sql, %o) = @_;
	my ($ret, $out, $err) = $self->psql_verbose($sql, %o);
	return $ret == 0 ? "(no error; output: $out)" : $err;
}

=pod

=item $node->poll($sql, $expected = 't')

poll_query_until on the database: true once $sql returns $expected
(PostgreSQL::Test::Utils' long default timeout; for what must happen
eventually).

=cut

sub poll
{
	my ($self, $sql, $expected) = @_;
	return $self->poll_query_until($self->db, $sql, $expected);
}

=pod

=item $node->poll_within($secs, $sql, $expected = 't')

Like poll, but gives up after $secs seconds (with a diag of the last
output): for outcomes that must come promptly, not merely eventually.

=cut

sub poll_within
{
	my ($self, $secs, $sql, $expected) = @_;
	$expected //= 't';
	my $end = time + $secs;
	my ($rc, $out, $err) = (0, '', '');
	while (time < $end)
	{
		($rc, $out, $err) = $self->psql($self->db, $sql);
		return 1 if $rc == 0 && $out eq $expected;
		usleep(100_000);
	}
	diag("no '$expected' within $secs s from: $sql\nlast output: $out $err");
	return 0;
}

=pod

=item $node->wait_scheduler($role = 'primary', detail => pattern)

Polls until health() reports the scheduler 'ok' with a detail LIKE
"$role since %" (role 'primary' or 'standby'), or LIKE the given detail
pattern.  True if it did.

=cut

sub wait_scheduler
{
	my ($self, $role, %o) = @_;
	my $like = $o{detail} // (($role // 'primary') . ' since %');
	return $self->poll(
		"SELECT status = 'ok' AND detail LIKE '$like' FROM hasched.health() WHERE component = 'scheduler'");
}

=pod

=item $node->scheduler_pid

The pid of the hasched scheduler process ('' when none runs).

=cut

sub scheduler_pid
{
	my ($self) = @_;
	return $self->query(
		"SELECT pid FROM pg_stat_activity WHERE backend_type = 'hasched scheduler'");
}

=pod

=item $node->submit_sql($sql, %opt)

Submits an SQL job running $sql to a queue with transport 'sql'; returns
its id.  Options: queue ('sqlq'), timeout ('1 minute'), max_attempts (1),
user (connect as that role), tag (a "tag" key in the payload, for jobs that
look themselves up), run_at (an SQL expression).

=cut

sub submit_sql
{
	my ($self, $sql, %o) = @_;
	my $queue = $o{queue} // 'sqlq';
	my $timeout = $o{timeout} // '1 minute';
	my $attempts = $o{max_attempts} // 1;
	my $extra = defined $o{tag} ? qq{{"tag": "$o{tag}"}} : '{}';
	my $run_at = defined $o{run_at} ? ", run_at => $o{run_at}" : '';
	my @params = defined $o{user} ? (extra_params => [ '-U', $o{user} ]) : ();
	return $self->query(
		"SELECT hasched.submit('$queue', jsonb_build_object('sql', \$j\$$sql\$j\$) || '$extra'::jsonb,"
		  . " timeout => '$timeout', max_attempts => $attempts$run_at)",
		@params);
}

=pod

=item $node->job($id, $columns)

One value: SELECT $columns FROM hasched.job WHERE id = $id.

=cut

sub job
{
	my ($self, $id, $cols) = @_;
	return $self->query("SELECT $cols FROM hasched.job WHERE id = $id");
}

=pod

=item $node->wait_state($id, $state)

Polls until job $id is in $state; true if it got there.

=cut

sub wait_state
{
	my ($self, $id, $state) = @_;
	return $self->poll("SELECT state FROM hasched.job WHERE id = $id", $state);
}

=pod

=item $node->runs_of($id)

The run history of job $id, one "attempt:outcome:error" line per row, in
attempt order ('' if it has none).

=cut

sub runs_of
{
	my ($self, $id) = @_;
	return $self->query(
		"SELECT string_agg(attempt || ':' || outcome || ':' || coalesce(error, ''), E'\\n' ORDER BY attempt, finished_at)"
		  . " FROM hasched.job_run WHERE job_id = $id");
}

=pod

=item $node->wait_busy($id)

Waits until an executor is busy with job $id; returns that executor's pid
(undef if none ever was).

=cut

sub wait_busy
{
	my ($self, $id) = @_;
	$self->poll(
		"SELECT count(*) = 1 FROM hasched.workers WHERE state = 'busy' AND job_id = $id")
	  or return undef;
	return $self->query(
		"SELECT pid FROM hasched.workers WHERE state = 'busy' AND job_id = $id");
}

=pod

=item $node->postmaster_pid

The pid of the node's postmaster while it runs (undef when stopped).

=cut

sub postmaster_pid
{
	my ($self) = @_;
	return $self->{_pid};
}

=pod

=item HaschedCluster::http_request($port, $raw, timeout => 10)

Sends $raw (a whole HTTP request, or anything else) to 127.0.0.1:$port on
a fresh connection and reads the answer until its Content-Length is in,
the server closes, or the timeout passes.  Returns (status, headers, body,
seconds taken); status 0 when nothing parseable came back.

=item HaschedCluster::http_get($port, $path)

GET $path with "Connection: close": (status, headers, body, seconds).

=cut

sub http_request
{
	my ($port, $raw, %o) = @_;
	my $t0 = time;
	require IO::Socket::INET;
	my $s = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $port,
		Proto => 'tcp',
		Timeout => $o{timeout} // 10)
	  or return (0, '', "connect: $!", time - $t0);
	$s->autoflush(1);
	print $s $raw;
	my $all = '';
	my $end = time + ($o{timeout} // 10);
	my $sel = '';
	vec($sel, fileno($s), 1) = 1;
	while (time < $end)
	{
		my $r = $sel;
		last unless select($r, undef, undef, $end - time) > 0;
		my $buf;
		my $n = sysread($s, $buf, 65536);
		last if !defined $n || $n == 0;
		$all .= $buf;
		if ($all =~ /\r\n\r\n/ && $all =~ /Content-Length: (\d+)/i)
		{
			my $want = $1;
			my (undef, $body) = split /\r\n\r\n/, $all, 2;
			last if length($body) >= $want;
		}
	}
	close $s;
	my ($head, $body) = split /\r\n\r\n/, $all, 2;
	my ($status) = ($head // '') =~ m{^HTTP/1\.1 (\d+)};
	return ($status // 0, $head // '', $body // '', time - $t0);
}

sub http_get
{
	my ($port, $path) = @_;
	return http_request($port, "GET $path HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

=pod

=item $node->teardown_node

Called for every node that still runs when the script exits (by
PostgreSQL::Test::Cluster's END block; also after a die, or after a
signal handler that calls exit).  An immediate stop with pg_ctl, then, if
the postmaster that this node started is still alive, SIGKILL to that pid
(only a process that is still a postgres one).  Never bails out, so that
every node gets its turn.

=cut

sub teardown_node
{
	my ($self) = @_;
	my $pid = $self->{_pid};
	return unless defined $pid;
	$self->stop('immediate', fail_ok => 1);
	if (kill(0, $pid) && _is_postgres($pid))
	{
		print "# postmaster $pid of node \"" . $self->name . "\" still runs: SIGKILL\n";
		kill 'KILL', $pid;
	}
	$self->{_pid} = undef;
	return;
}

sub _is_postgres
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/comm" or return 1;    # no /proc: trust the pid
	my $comm = <$fh> // '';
	close $fh;
	chomp $comm;
	return $comm eq 'postgres' || $comm eq 'postmaster';
}

=pod

=back

=cut

1;
