
# Copyright: hasched contributors
#
# HaschedWorker.pm: running the hasched-worker program in TAP tests: the
# program to run, workers started in the background with a log file each
# (killed when the test ends), their exit status, one run in the
# foreground, and GET /health on a worker's health port.
#
# IDENTIFICATION
#	test/perl/HaschedWorker.pm

=pod

=head1 NAME

HaschedWorker - start, stop and ask hasched-worker processes in a test

=head1 SYNOPSIS

  use HaschedWorker;

  my $bin = worker_bin();                     # HASCHED_WORKER_BIN, the build, or pg_config's
  my $tmp = worker_tmp();                     # this test's directory (logs, scripts)
  my $w = start_worker(db => $connstr, queue => 'q', args => ['--concurrency', '4'],
                       cmd => ['/path/to/script']);   # amqp => URL: --amqp URL, classic queues
  within(20, sub { slurp_log($w) =~ /connected/ }) or die;
  kill 'TERM', $w->{pid};
  my $status = wait_exit($w, 30);             # its exit status, or undef
  my ($code, $out, $err) = run_worker('--help');
  my ($http, $body) = health($port);          # GET /health: (status, body)
  my $raw = http_request($port, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");

A worker killed and reaped by the test itself: forget_worker($w).  When
the test fails, the end of each worker's log is printed (diag).

=cut

package HaschedWorker;

use strict;
use warnings;

use Exporter 'import';
use IO::Socket::INET;
use IPC::Run;
use POSIX qw(WNOHANG);
use PostgreSQL::Test::Utils ();
use Test::More ();
use Time::HiRes qw(time usleep);

our @EXPORT = qw(worker_bin worker_tmp within start_worker forget_worker wait_exit
  slurp_log run_worker http_request health);

my $bin;
my $tmp;
my @started;    # pids still to kill at the end
my @logs;       # every worker's log, in start order

# The program: HASCHED_WORKER_BIN, else the build tree's, else pg_config's.
sub worker_bin
{
	return $bin if defined $bin;
	$bin = $ENV{HASCHED_WORKER_BIN};
	if (!defined $bin)
	{
		$bin = 'hasched-worker/hasched-worker';
		if (!-x $bin)
		{
			my $bindir = `pg_config --bindir`;
			chomp $bindir;
			$bin = "$bindir/hasched-worker";
		}
	}
	return $bin;
}

# The test's temporary directory: the workers' logs, and the test's own files.
sub worker_tmp
{
	$tmp //= PostgreSQL::Test::Utils::tempdir;
	return $tmp;
}

# Wait up to $secs for &$cond to be true.
sub within
{
	my ($secs, $cond) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

# Start a worker in the background; its output goes to its own log file.
# db, queue, cmd (array), args (array, optional); amqp => URL adds --amqp
# URL and --amqp-queue-type (amqp_queue_type, default classic).
sub start_worker
{
	my (%o) = @_;
	my $log = worker_tmp() . '/worker-' . (@logs + 1) . '.log';
	my @amqp = defined $o{amqp}
	  ? ('--amqp', $o{amqp}, '--amqp-queue-type', $o{amqp_queue_type} // 'classic')
	  : ();
	my @cmd = (worker_bin(), '--db', $o{db}, @amqp, '--queue', $o{queue}, @{ $o{args} // [] },
		'--', @{ $o{cmd} });
	my $pid = fork // die "fork: $!";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log;
		open STDERR, '>&', \*STDOUT;
		exec @cmd or POSIX::_exit(127);
	}
	push @started, $pid;
	push @logs, $log;
	return { pid => $pid, log => $log };
}

# The test reaped the worker itself: nothing to kill at the end.
sub forget_worker
{
	my ($w) = @_;
	@started = grep { $_ != $w->{pid} } @started;
	return;
}

# Wait up to $secs for the worker to exit: its exit status, or undef.
sub wait_exit
{
	my ($w, $secs) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		my $r = waitpid($w->{pid}, WNOHANG);
		if ($r == $w->{pid})
		{
			forget_worker($w);
			return $? >> 8;
		}
		usleep(50_000);
	}
	return undef;
}

sub slurp_log
{
	my ($w) = @_;
	return -f $w->{log} ? PostgreSQL::Test::Utils::slurp_file($w->{log}) : '';
}

# Run the program in the foreground: (exit status, stdout, stderr).
sub run_worker
{
	my @args = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ worker_bin(), @args ], '<', \undef, '>', \$out, '2>', \$err,
		IPC::Run::timeout(60));
	return ($? >> 8, $out, $err);
}

# Send a raw HTTP request to 127.0.0.1:$port: the whole response, or
# "no connection: ..." when nothing listens.
sub http_request
{
	my ($port, $request) = @_;
	my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 10)
	  or return "no connection: $!";
	print $s $request;
	local $/;
	my $resp = <$s> // '';
	close $s;
	return $resp;
}

# GET /health: (status, body); (0, '') when nothing listens.
sub health
{
	my ($port) = @_;
	my $r = http_request($port, "GET /health HTTP/1.0\r\n\r\n");
	my ($code) = $r =~ m{^HTTP/1\.[01] (\d+)};
	my ($body) = $r =~ /\r\n\r\n(.*)$/s;
	return ($code // 0, $body // '');
}

END
{
	# any worker a failed test left behind
	kill 'KILL', $_ for @started;
	# the workers' own words, for a failure
	if (@logs && !Test::More->builder->is_passing)
	{
		for my $i (0 .. $#logs)
		{
			next unless -f $logs[$i];
			my @lines = split /\n/, PostgreSQL::Test::Utils::slurp_file($logs[$i]);
			splice(@lines, 0, @lines - 40) if @lines > 40;
			Test::More::diag('worker-' . ($i + 1) . ".log (the end):\n" . join("\n", @lines));
		}
	}
}

1;
