#!/usr/bin/env perl
# bench/bench.pl: hasched's benchmarks.  `make bench` and `bash bench/run.sh`
# run it (run.sh installs packages, builds, installs, and as root starts this
# program as an ordinary user); it can also be run directly by an ordinary
# user once hasched is installed into the PostgreSQL that PG_CONFIG names:
#
#   perl bench/bench.pl
#   BENCH_QUICK=1 perl bench/bench.pl              # smoke run, a few minutes
#   BENCH_STEPS='drain latency' perl bench/bench.pl
#
# It prints what it measures, then a markdown summary (machine facts, a
# table of the targets, one section per step, the exact commands); it
# asserts nothing: it is not a test.  Each step is one sub below; the
# servers are started and stopped through PostgreSQL::Test::Cluster (the
# few subs under "servers" are what a shared harness module replaces), and
# stopped by their pids on any exit.  Percentiles, medians and window means
# are computed in SQL (percentile_disc, percentile_cont, avg).
#
# Steps (BENCH_STEPS takes the names or the numbers):
#   1 submit       single-row hasched.submit, quotas on and off, vs a plain
#                  INSERT into a table with the same columns and indexes
#   2 submit_many  submit_many of 100 payloads vs a plain 100-row INSERT
#   3 claim        claim + complete, batch 1 and 100, vs plain SKIP LOCKED
#                  loops (and the plans claim() and complete() get)
#   4 snapshot     batch-100 claim + complete while another session holds an
#                  old snapshot: last window / first window
#   5 drain        no-op SQL jobs drained by hasched's executors vs the pull
#                  API's batched claim + complete, measured just before
#   6 latency      submit -> start with the executors idle
#   7 cron         firing jitter of a '* * * * * *' schedule
#   8 failover     promotion of a streaming standby -> first started job
#  10 dispatch     the RabbitMQ dispatcher's confirmed publishes/s vs a bare
#                  librabbitmq publisher with confirms (bench/amqp_publish.c),
#                  same broker, same batch size, same run
#   9 long_drain   BENCH_LONG_DRAIN_SECONDS of executor work on a server of
#                  its own: hasched.job's table and index sizes, n_dead_tup
#  11 worker       hasched-worker running `true`: jobs/s in pull mode and
#                  through RabbitMQ (hasched's dispatcher) vs this machine's
#                  fork + exec + wait rate of `true`; submit -> start latency
#                  with the worker idle, pull (NOTIFY) and through the broker
#  12 health       the health listener: GET /health and /metrics with wrk
#                  (BENCH_HEALTH_CONNECTIONS keep-alive connections), alone
#                  and while the submit benchmark runs (requests/s, p99);
#                  submit throughput with /health and /metrics scraped every
#                  second / without, alternating runs (run after step 7)
#
# Every figure includes a real WAL flush per commit (fsync and
# synchronous_commit on).  Besides throughput, each measured run reports the
# server's CPU time per job (all the processes of the bench server), which
# other load on the machine disturbs less than it disturbs throughput.
#
# Environment (default, then the BENCH_QUICK=1 default where it differs):
#   BENCH_STEPS            steps to run [1-11; quick: 1-8 10 11]
#   BENCH_EXTRA_CONF       postgresql.conf lines added to the bench servers'
#                          (e.g. "hasched.stats_interval = '1h'") [none]
#   BENCH_SECONDS          length of each pgbench run of steps 1-3 and of the
#                          pull-API baseline of step 5 [15; 3]
#   BENCH_SNAPSHOT_SECONDS length of each run of step 4 [60; 10]
#   BENCH_WINDOW           seconds averaged at the start and end of step 4 [10; 3]
#   BENCH_SNAPSHOT_WARMUP  seconds each loop of step 4 runs before the snapshot
#                          holder starts, to bring the buffer pool to its
#                          steady state (0: none, the run starts from a
#                          CHECKPOINT) [30; 5]
#   BENCH_SNAPSHOT_LOOPS   loops of step 4: hasched, hasched_many, plain2,
#                          plain1 [hasched plain2]
#   BENCH_SUBMIT_CLIENTS   pgbench -c of steps 1-2 [8]
#   BENCH_CLAIM_CLIENTS    pgbench -c of steps 3-5; a list runs step 3 once per
#                          value, steps 4-5 use the first [4]
#   BENCH_THREADS          pgbench -j [2]
#   BENCH_CLAIM_RATE_1     jobs/s assumed when prefilling for batch 1 [6000]
#   BENCH_CLAIM_RATE_100   jobs/s assumed when prefilling for batch 100
#                          [50000] (a run of step 3 whose queue ran dry is
#                          refilled and repeated; step 4 prefills twice that)
#   BENCH_MAX_EXECUTORS    hasched.max_executors [2]
#   BENCH_DRAIN_JOBS       jobs drained in step 5 [20000; 2000]
#   BENCH_DRAIN_BATCH      payloads per submit_many in step 5 [1000; 500]
#   BENCH_DRAIN_TIMEOUT    seconds step 5 waits for the drain [300; 120]
#   BENCH_LATENCY_JOBS     jobs submitted one by one in step 6 [200; 50]
#   BENCH_LATENCY_GAP_MS   pause between two submits of step 6 [20]
#   BENCH_CRON_SECONDS     how long the schedule of step 7 runs [60; 10]
#   BENCH_FAILOVER_RUNS    promotions measured in step 8 [5; 1]
#   BENCH_FAILOVER_SETTLE  seconds the primary runs its jobs before it is
#                          stopped, in step 8 [2; 1]
#   BENCH_LONG_DRAIN_SECONDS  length of step 9 [600; 60]
#   BENCH_LONG_DRAIN_RATE     jobs/s the fan-out schedule of step 9 submits [100]
#   BENCH_LONG_DRAIN_SAMPLE   seconds between two samples of step 9 [60; 10]
#   BENCH_LONG_DRAIN_RETENTION hasched.history_retention in step 9, s [60]
#   BENCH_DISPATCH_JOBS    jobs published in step 10 (and by its baseline) [20000; 2000]
#   BENCH_DISPATCH_BATCH   hasched.dispatch_batch and the baseline's batch [100]
#   BENCH_WORKER_JOBS      no-op jobs run by hasched-worker per mode in step 11
#                          (and fork + exec runs of the baseline) [5000; 1000]
#   BENCH_WORKER_CONCURRENCY  hasched-worker --concurrency in step 11 [16]
#   BENCH_WORKER_AMQP_PREFETCH  hasched-worker --prefetch in AMQP mode in step 11
#                          [16, the program's default: --concurrency; pull
#                          mode runs with the default]
#   BENCH_WORKER_LATENCY_JOBS jobs submitted one by one per mode in step 11
#                          [200; 50]
#   BENCH_HEALTH_CONNECTIONS  wrk -c of step 12 [100]
#   BENCH_HEALTH_ROUNDS    pairs of submit runs (scraped, not) of step 12, in the
#                          order ABBA [4; 2]
#   BENCH_OUT              directory for the raw output [bench/out/<UTC stamp>]
#   BENCH_KEEP_TMP=1       keep the data directories (servers stopped anyway)
#   PG_CONFIG              the PostgreSQL to use [/usr/lib/postgresql/15/bin/pg_config]
use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use FindBin;
use File::Copy qw(copy);
use File::Path qw(make_path rmtree);
use File::Temp ();
use List::Util ();
use POSIX ();
use Time::HiRes qw(time sleep);

# PostgreSQL::Test::Utils sends STDOUT and STDERR to its log file when it
# starts (INIT); keep the terminal for what this program prints.  Its
# temp and log directories go under a temp dir of our own (TESTDIR).
our ($TTY, $TTY_ERR, $TMP, $PGBIN);
BEGIN
{
	open($TTY,     '>&', \*STDOUT) or die "bench: dup stdout: $!\n";
	open($TTY_ERR, '>&', \*STDERR) or die "bench: dup stderr: $!\n";
	$TTY->autoflush(1);
	$ENV{PG_CONFIG} ||= '/usr/lib/postgresql/15/bin/pg_config';
	chomp($PGBIN = `"$ENV{PG_CONFIG}" --bindir`);
	chomp(my $pkglib = `"$ENV{PG_CONFIG}" --pkglibdir`);
	die "bench: $ENV{PG_CONFIG} --bindir failed\n" if $? || !-x "$PGBIN/postgres";
	$ENV{PATH} = "$PGBIN:$ENV{PATH}";
	$ENV{PG_REGRESS} = "$pkglib/pgxs/src/test/regress/pg_regress";
	unshift @INC, "$pkglib/pgxs/src/test/perl";
	# (not under perl -c, which runs BEGIN but never END)
	$TMP = $^C ? '/nonexistent' : File::Temp::tempdir('hasched-bench.XXXXXX', TMPDIR => 1);
	$ENV{TESTDIR} = $TMP;
	delete @ENV{qw(PGHOST PGHOSTADDR PGPORT PGDATABASE PGOPTIONS PGSERVICE)};
}
use lib "$FindBin::Bin/../test/perl";
use HaschedCluster;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils ();
use IPC::Run ();

# (PostgreSQL::Test::Utils clears the PG* variables when it loads)
$ENV{PGUSER} = 'bench';    # the superuser of every bench server
my $HERE = dirname(abs_path($0));
my $DB   = 'bench';    # database and superuser; a role named "hasched" would
                       # put schema hasched first on search_path via "$user"
my $HZ   = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

# A bad setting: said on the terminal (STDERR now goes to the harness log).
sub fatal { print $TTY_ERR "bench: $_[0]\n"; exit 2 }
fatal('initdb refuses root: run bench/run.sh (it runs this as an ordinary user)')
  if $> == 0;

# --------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------
my $QUICK = ($ENV{BENCH_QUICK} // '') eq '1';
my @STEP_NAMES = qw(submit submit_many claim snapshot drain latency cron
  failover long_drain dispatch worker health);
my %C;    # lower-case names without BENCH_
{
	# name => [default, quick default]; all positive integers but the lists
	my %defaults = (
		STEPS                => ['1 2 3 4 5 6 7 8 9 10 11 12', '1 2 3 4 5 6 7 8 10 11 12'],
		DISPATCH_JOBS        => [20000, 2000],
		DISPATCH_BATCH       => [100, 100],
		HEALTH_CONNECTIONS   => [100, 100],
		HEALTH_ROUNDS        => [4, 2],
		SECONDS              => [15, 3],
		SNAPSHOT_SECONDS     => [60, 10],
		WINDOW               => [10, 3],
		SNAPSHOT_WARMUP      => [30, 5],
		SNAPSHOT_LOOPS       => ['hasched plain2', 'hasched plain2'],
		SUBMIT_CLIENTS       => [8, 8],
		CLAIM_CLIENTS        => ['4', '4'],
		THREADS              => [2, 2],
		CLAIM_RATE_1         => [6000, 6000],
		CLAIM_RATE_100       => [50000, 50000],
		MAX_EXECUTORS        => [2, 2],
		DRAIN_JOBS           => [20000, 2000],
		DRAIN_BATCH          => [1000, 500],
		DRAIN_TIMEOUT        => [300, 120],
		LATENCY_JOBS         => [200, 50],
		LATENCY_GAP_MS       => [20, 20],
		CRON_SECONDS         => [60, 10],
		FAILOVER_RUNS        => [5, 1],
		FAILOVER_SETTLE      => [2, 1],
		LONG_DRAIN_SECONDS   => [600, 60],
		LONG_DRAIN_RATE      => [100, 100],
		LONG_DRAIN_SAMPLE    => [60, 10],
		LONG_DRAIN_RETENTION => [60, 60],
		WORKER_JOBS          => [5000, 1000],
		WORKER_CONCURRENCY   => [16, 16],
		WORKER_AMQP_PREFETCH => [16, 16],
		WORKER_LATENCY_JOBS  => [200, 50],);
	for my $k (sort keys %defaults)
	{
		my $v = $ENV{"BENCH_$k"};
		$v = $defaults{$k}[$QUICK ? 1 : 0] if !defined $v || $v eq '';
		my @words = split ' ', $v;
		my $list = $k =~ /^(STEPS|SNAPSHOT_LOOPS|CLAIM_CLIENTS)$/;
		for my $w ($k eq 'CLAIM_CLIENTS' || !$list ? @words : ())
		{
			my $zero_ok = $k =~ /^(WORKER_AMQP_PREFETCH|SNAPSHOT_WARMUP)$/;
			fatal("BENCH_$k must be " . ($zero_ok ? 'an integer >= 0' : 'positive integers') . ", not '$v'")
			  unless $w =~ ($zero_ok ? qr/^(0|[1-9][0-9]*)$/ : qr/^[1-9][0-9]*$/);
		}
		fatal("BENCH_$k is empty") unless @words;
		$C{ lc $k } = $list ? [@words] : $v;
	}
	my %number = map { ($_ + 1 => $STEP_NAMES[$_]) } 0 .. $#STEP_NAMES;
	my %known = map { ($_ => 1) } @STEP_NAMES;
	my @steps;
	for my $s (@{ $C{steps} })
	{
		my $name = $number{$s} // $s;
		fatal("unknown step '$s' in BENCH_STEPS (known: 1-12 or @STEP_NAMES)")
		  unless $known{$name};
		push @steps, $name;
	}
	$C{steps} = { map { ($_ => 1) } @steps };
	for my $l (@{ $C{snapshot_loops} })
	{
		fatal("unknown loop '$l' in BENCH_SNAPSHOT_LOOPS (known: hasched hasched_many plain2 plain1)")
		  unless $l =~ /^(hasched|hasched_many|plain2|plain1)$/;
	}
}
sub step_on { return $C{steps}{ $_[0] } }

# The command as typed: the BENCH_* variables that were set.
my $INVOCATION = join(' ',
	(map { "BENCH_$_=" . shell_quote($ENV{"BENCH_$_"}) }
	  grep { ($ENV{"BENCH_$_"} // '') ne '' }
	  map { /^BENCH_(.*)/ ? $1 : () }
	  grep { !/^BENCH_(OUT|COMMIT|OS_USER|INVOKED_AS)$/ } sort keys %ENV),
	$ENV{BENCH_INVOKED_AS} || 'perl bench/bench.pl');

# Raw output: BENCH_OUT (run.sh makes it), else bench/out/<stamp> and a
# link bench/out/latest to it.
my $STAMP = POSIX::strftime('%Y%m%dT%H%M%SZ', gmtime);
my $OUTDIR = $ENV{BENCH_OUT};
if ($OUTDIR)
{
	$STAMP = $1 if $OUTDIR =~ m{/(\d{8}T\d{6}Z)/?$};
}
else
{
	$OUTDIR = "$HERE/out/$STAMP";
	make_path($OUTDIR);
	unlink("$HERE/out/latest");
	symlink($STAMP, "$HERE/out/latest");
}
open(my $RUNLOG, '>>', "$OUTDIR/run.log") or fatal("$OUTDIR/run.log: $!");
$RUNLOG->autoflush(1);

# --------------------------------------------------------------------------
# output
# --------------------------------------------------------------------------
sub out    { my $s = join('', @_); print $TTY $s; print $RUNLOG $s; return }
sub say    { out(@_, "\n"); return }
sub header { say("\n== $_[0] =="); return }

sub shell_quote
{
	my ($s) = @_;
	return $s if $s =~ m{^[-\w./=:,+]+$};
	$s =~ s/'/'\\''/g;
	return "'$s'";
}

sub slurp
{
	my ($f) = @_;
	open(my $fh, '<', $f) or return '';
	local $/;
	return scalar <$fh>;
}

sub spew
{
	my ($f, $s) = @_;
	open(my $fh, '>', $f) or die "bench: $f: $!\n";
	print $fh $s;
	close $fh;
	return;
}

# number formatting; '' and undef print as n/a
sub f0 { my ($x) = @_; return (defined $x && $x ne '') ? sprintf('%.0f', $x) : 'n/a' }
sub f2 { my ($x) = @_; return (defined $x && $x ne '') ? sprintf('%.2f', $x) : 'n/a' }
# microseconds of CPU per job: one decimal below 10
sub fus
{
	my ($x) = @_;
	return 'n/a' unless defined $x && $x ne '';
	return sprintf($x < 10 ? '%.1f' : '%.0f', $x);
}
sub na { my ($x) = @_; return (defined $x && $x ne '') ? $x : 'n/a' }

sub ratio
{
	my ($a, $b) = @_;
	return undef unless defined $a && defined $b && $a ne '' && $b ne '' && $b != 0;
	return $a / $b;
}

# --------------------------------------------------------------------------
# servers: through test/perl/HaschedCluster.pm, the harness the tests and
# the demo use (on PostgreSQL::Test::Cluster).  Every node runs as the current user
# with the superuser "bench"; %PID holds each running postmaster's pid, so
# that END can stop it by its pid whatever happened.
# --------------------------------------------------------------------------
my (@NODES, %PID);

# A new node with hasched preloaded, started, with the database "bench"
# (hasched.database) and the extension in it (bench/setup.sql).
# streaming => 1: a primary that standbys can be cloned from; conf => more
# postgresql.conf lines.
sub node_primary
{
	my ($name, %opt) = @_;
	my $node = HaschedCluster->primary(
		$name,
		db        => $DB,
		extension => 0,    # setup.sql creates it, in the bench database
		streaming => $opt{streaming} ? 1 : 0,
		initdb    => [ '-U', $DB, '-E', 'UTF8', '--locale=C' ],
		conf      => server_conf(%opt));
	push @NODES, $node;
	$PID{ $node->name } = node_pid($node);
	$node->safe_psql('postgres', "CREATE DATABASE $DB");
	psql_script(slurp("$HERE/setup.sql"), $node);
	return $node;
}

sub node_standby
{
	my ($primary, $name) = @_;
	my $node = HaschedCluster->standby($primary, $name);
	push @NODES, $node;
	$PID{ $node->name } = node_pid($node);
	return $node;
}

sub node_start
{
	my ($node) = @_;
	$node->start;
	$PID{ $node->name } = node_pid($node);
	return;
}

sub node_restart
{
	my ($node) = @_;
	$node->restart;
	$PID{ $node->name } = node_pid($node);
	return;
}

sub node_pid
{
	my ($node) = @_;
	my ($pid) = split /\n/, slurp($node->data_dir . '/postmaster.pid');
	die "bench: node " . $node->name . " has no postmaster.pid\n"
	  unless defined $pid && $pid =~ /^\d+$/;
	return $pid;
}

# pg_ctl stop -m MODE, then SIGQUIT and SIGKILL to its pid if it is still there
sub node_stop
{
	my ($node, $mode) = @_;
	my $pid = delete $PID{ $node->name };
	return unless $pid;
	$node->stop($mode // 'fast', fail_ok => 1);
	for my $sig ('QUIT', 'KILL')
	{
		for (1 .. 100)
		{
			last unless kill(0, $pid);
			sleep 0.1;
		}
		last unless kill(0, $pid);
		print $TTY_ERR "bench: postmaster $pid did not stop, sending SIG$sig\n";
		kill($sig, $pid);
	}
	# known stopped: PostgreSQL::Test::Cluster's own END must not try again
	$node->{_pid} = undef;
	return;
}

# The settings every bench server gets, after those of the Cluster module
# (which turns fsync off and logs every statement).
sub server_conf
{
	my (%opt) = @_;
	my $e = $C{max_executors};
	my $conf = <<"EOF";
# --- hasched bench (bench/bench.pl) ---
shared_preload_libraries = 'hasched'
# the scheduler background worker serves the bench database, as deployed
hasched.database = '$DB'
# executors for the SQL jobs (none runs before an sql queue exists)
hasched.max_executors = $e
hasched.min_executors = 1
max_worker_processes = @{[ $e + 8 ]}
fsync = on
synchronous_commit = on
full_page_writes = on
log_statement = none
log_checkpoints = on
log_autovacuum_min_duration = 0
log_min_duration_statement = -1
autovacuum = on
# throughput figures, not overload: the automatic read-only mode and the
# hold-back (which the submit steps' backlogs would trigger) stay off
hasched.readonly_backlog = 0
hasched.holdback_backlog = 0
EOF
	if ($opt{streaming})
	{
		$conf .= "shared_buffers = 128MB\nmax_connections = 30\n";
	}
	else
	{
		$conf .= "wal_level = replica\nmax_wal_senders = 10\n"
		  . "shared_buffers = 1GB\nmax_connections = 50\n"
		  . "max_wal_size = 4GB\ncheckpoint_timeout = 15min\n";
	}
	$conf .= $opt{conf} // '';
	# BENCH_EXTRA_CONF: settings of the bench servers' own, last (to compare)
	$conf .= "# BENCH_EXTRA_CONF\n$ENV{BENCH_EXTRA_CONF}\n" if ($ENV{BENCH_EXTRA_CONF} // '') ne '';
	return $conf;
}

sub stop_everything
{
	node_stop($_, 'fast') for grep { $PID{ $_->name } } reverse @NODES;
	return;
}

# --------------------------------------------------------------------------
# SQL, pgbench, CPU time
# --------------------------------------------------------------------------
my $NODE;           # the bench server of steps 1-7
my (%R, @CMDS, @SQLS, @SECTIONS, @TARGETS, $HAS_MANY);

# query(SQL [, node]): the output of psql -XAtq (rows by line, columns by |)
sub query
{
	my ($sql, $node) = @_;
	return ($node // $NODE)->safe_psql($DB, $sql);
}

# psql_script(SQL, node, timeout): run a script through psql (-X -q -A -t,
# ON_ERROR_STOP); returns its stdout, dies with its stderr
sub psql_script
{
	my ($sql, $node, $timeout) = @_;
	$node //= $NODE;
	my ($stdout, $stderr) = ('', '');
	my @cmd = ('psql', '-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
		'-h', $node->host, '-p', $node->port, '-U', $DB, '-d', $DB);
	my $ok = IPC::Run::run(\@cmd, '<', \$sql, '>', \$stdout, '2>', \$stderr,
		IPC::Run::timeout($timeout // 3600));
	die "psql failed: $stderr\n" unless $ok;
	return $stdout;
}

# wait_sql(SECONDS, SQL, NODE, EVERY): poll every EVERY seconds [0.1] until
# SQL returns t
sub wait_sql
{
	my ($secs, $sql, $node, $every) = @_;
	my $until = time + $secs;
	while (time < $until)
	{
		my $v = eval { query($sql, $node) } // '';
		return 1 if $v eq 't';
		sleep($every // 0.1);
	}
	return 0;
}

# Clock ticks of CPU used so far by a server: the postmaster and its live
# children (backends, hasched's workers, autovacuum, walwriter, ...) plus
# the children it has reaped.
sub proc_stat
{
	my ($pid) = @_;
	my $s = slurp("/proc/$pid/stat");
	return () unless $s =~ s/^.*\) //s;
	return split ' ', $s;    # [1] ppid, [11] utime, [12] stime, [13] cutime, [14] cstime
}

# The machine's CPU ticks from /proc/stat: [idle + iowait, all]
sub machine_ticks
{
	my ($cpu) = slurp('/proc/stat') =~ /^cpu\s+(.*)$/m;
	my @t = split ' ', $cpu // '';
	my $all = 0;
	$all += $_ for @t[ 0 .. 7 ];
	return [ ($t[3] // 0) + ($t[4] // 0), $all ];
}

sub children_of
{
	my ($ppid) = @_;
	opendir(my $d, '/proc') or return ();
	return grep { /^\d+$/ && ((proc_stat($_))[1] // 0) == $ppid } readdir $d;
}

# buffer_writes(): pg_stat_bgwriter's buffers written by the checkpointer,
# by the background writer and by the backends (evicting a dirty buffer)
sub buffer_writes
{
	return [ split /\|/, query('SELECT buffers_checkpoint, buffers_clean, buffers_backend FROM pg_stat_bgwriter') ];
}

sub server_cpu
{
	my ($node) = @_;
	my $pm = $PID{ ($node // $NODE)->name } or return 0;
	my @s = proc_stat($pm);
	my $t = ($s[11] // 0) + ($s[12] // 0) + ($s[13] // 0) + ($s[14] // 0);
	for my $c (children_of($pm))
	{
		my @cs = proc_stat($c);
		$t += ($cs[11] // 0) + ($cs[12] // 0);
	}
	return $t;
}

# The server's CPU ticks by process: { pid => [ticks, title] }; the
# processes that exited (and were reaped) are the postmaster's cutime + cstime
# under pid 0.
sub server_cpu_by_proc
{
	my $pm = $PID{ $NODE->name } or return {};
	my @s = proc_stat($pm);
	my %t = (0 => [ ($s[13] // 0) + ($s[14] // 0), 'exited processes (sessions, ...)' ],
		$pm => [ ($s[11] // 0) + ($s[12] // 0), 'postmaster' ]);
	for my $c (children_of($pm))
	{
		my @cs = proc_stat($c);
		(my $title = slurp("/proc/$c/cmdline")) =~ s/\0+/ /g;
		$title =~ s/^postgres: (\S+: )?//;
		$t{$c} = [ ($cs[11] // 0) + ($cs[12] // 0), $title ];
	}
	return \%t;
}

# The processes that used the most of the server's CPU between two
# server_cpu_by_proc readings: "title ms, ..." (the first $n).
sub top_cpu
{
	my ($from, $to, $n) = @_;
	my @d;
	for my $pid (keys %$to)
	{
		my $d = $to->{$pid}[0] - ($from->{$pid} ? $from->{$pid}[0] : 0);
		push @d, [ $d, $to->{$pid}[1] ] if $d > 0;
	}
	@d = sort { $b->[0] <=> $a->[0] } @d;
	splice(@d, $n) if @d > $n;
	return join(', ', map { sprintf('%s %.0f ms', $_->[1], $_->[0] / $HZ * 1000) } @d) || 'none';
}

# Wait (up to 5 s) until at most $open client sessions are left and every
# backend that exited has been reaped: only then is the CPU of the backends
# of a run in the postmaster's cutime (a zombie shows none of its own).
sub wait_sessions
{
	my ($open) = @_;
	for (1 .. 50)
	{
		my @c = children_of($PID{ $NODE->name });
		my $sessions = grep { slurp("/proc/$_/cmdline") =~ /\[local\]/ } @c;
		my $zombies = grep { ((proc_stat($_))[0] // '') eq 'Z' } @c;
		last if $sessions <= $open && $zombies == 0;
		sleep 0.1;
	}
	return;
}

# The server's CPU ticks once a run's sessions are gone: wait_sessions, then
# read until two readings 0.5 s apart differ by at most a tick (up to 5 s).
# Seen under load: a reading right after the last backend had gone that
# missed most of the run's CPU, and all of it 0.5 s later.
sub settled_cpu
{
	my ($open) = @_;
	wait_sessions($open);
	my $prev = server_cpu();
	for (1 .. 10)
	{
		sleep 0.5;
		my $now = server_cpu();
		return $now if $now - $prev <= 1;
		$prev = $now;
	}
	return $prev;
}

# server CPU microseconds per job between two server_cpu readings
sub cpu_us
{
	my ($ticks, $jobs) = @_;
	return undef unless $jobs;
	return $ticks / $HZ * 1e6 / $jobs;
}

# pgbench_run(NAME, script => F, clients => N, [batch => B, per_job => P,
#   seconds => S, pgoptions => O, progress => 1, sessions => N]):
# one measured pgbench run, raw output in OUTDIR/NAME.txt.  Returns
# { tps, lat, jobs (per second), cpu (us per job), tx, note, output }.
sub pgbench_run
{
	my ($name, %o) = @_;
	my $secs = $o{seconds} // $C{seconds};
	my $per = $o{per_job} // $o{batch} // 1;
	my @args = ('-n', '-M', 'prepared', '-f', "bench/$o{script}",
		($o{batch} ? ('-D', "batch=$o{batch}") : ()),
		'-c', $o{clients}, '-j', $C{threads}, '-T', $secs,
		($o{progress} ? ('--progress=1') : ()));
	push @CMDS,
	  ($o{pgoptions} ? "PGOPTIONS='$o{pgoptions}' " : '')
	  . join(' ', 'pgbench', @args)
	  . ($o{comment} ? "   # $o{comment}" : '');
	s{^bench/}{$HERE/} for @args;

	# (checkpoint => 0: not, the buffer pool stays as it is)
	query('CHECKPOINT') if $o{checkpoint} // 1;
	my $cpu0 = server_cpu();
	my $output = '';
	my @samples;
	{
		local $ENV{PGOPTIONS} = $o{pgoptions} if $o{pgoptions};
		local @ENV{qw(PGHOST PGPORT PGUSER PGDATABASE)} =
		  ($NODE->host, $NODE->port, $DB, $DB);
		my $h = IPC::Run::start([ 'pgbench', @args ], '>', "$OUTDIR/$name.txt", '2>&1');
		# windows => W: the server's CPU ticks, the machine's idle and
		# busy ticks and the buffer writes at 0, W, T - W and T s (step 4:
		# whether the last window cost more CPU per job, or the server
		# waited, and who wrote the buffers in each window)
		if (my $W = $o{windows})
		{
			my $t0 = time;
			for my $at (0, $W, $secs - $W, $secs)
			{
				my $d = $t0 + $at - time;
				sleep $d if $d > 0;
				push @samples, [ server_cpu(), machine_ticks(), buffer_writes() ];
			}
		}
		$h->finish;
		$output = slurp("$OUTDIR/$name.txt");
	}
	my $rc = $? >> 8;    # IPC::Run sets $? as system() does
	my $ticks = settled_cpu($o{sessions} // 0) - $cpu0;

	my %r = (output => $output);
	($r{tps}) = $output =~ /^tps = ([\d.]+)/m;
	($r{lat}) = $output =~ /^latency average = ([\d.]+)/m;
	($r{tx})  = $output =~ /^number of transactions actually processed: (\d+)/m;
	if ($rc != 0 || !defined $r{tps})
	{
		my @last = (split /\n/, $output)[-15 .. -1];
		say("  $name: pgbench failed (exit $rc); last lines of $OUTDIR/$name.txt:");
		say("    $_") for grep { defined } @last;
		return { note => 'pgbench failed' };
	}
	$r{note} = 'clients aborted' if $output =~ /aborted/;
	$r{samples} = \@samples if @samples == 4;
	$r{jobs} = $r{tps} * $per;
	$r{cpu} = cpu_us($ticks, ($r{tx} // 0) * $per);
	say(sprintf('  %-28s tps %s  latency %s ms  server CPU %s us/job%s',
			$name, f2($r{tps}), na($r{lat}), fus($r{cpu}),
			$r{note} ? "  ($r{note})" : ''));
	return \%r;
}

# percentiles(EXPR, FROM): n, p50, p90, p99 and max of EXPR (an interval)
# in ms over "SELECT EXPR FROM"; percentile_disc
sub percentiles
{
	my ($expr, $from) = @_;
	my %p;
	@p{qw(n p50 p90 p99 max)} = split /\|/, query(
		"SELECT count(v), round(percentile_disc(0.5) WITHIN GROUP (ORDER BY v), 2),
		        round(percentile_disc(0.9) WITHIN GROUP (ORDER BY v), 2),
		        round(percentile_disc(0.99) WITHIN GROUP (ORDER BY v), 2), round(max(v), 2)
		   FROM (SELECT (extract(epoch FROM ($expr)) * 1000)::numeric AS v $from) s");
	return \%p;
}

# median(@numbers) in SQL (percentile_cont); undef when there are none
sub median
{
	my @v = grep { defined && /^-?[\d.]+$/ } @_;
	return undef unless @v;
	return query("SELECT round(percentile_cont(0.5) WITHIN GROUP (ORDER BY v)::numeric, 1)
	            FROM unnest('{" . join(',', @v) . "}'::float8[]) v");
}

# The table of a loop, and how many of its jobs wait in the default queue.
my %LOOP_SCRIPT = (
	hasched      => 'claim_complete.pgbench',
	hasched_many => 'claim_complete_many.pgbench',
	plain2       => 'plain_claim_complete.pgbench',
	plain1       => 'plain_claim_complete_1step.pgbench');
sub table_of { return $_[0] =~ /^hasched/ ? 'hasched.job' : 'bench_plain' }

sub waiting
{
	my ($kind) = @_;
	return query("SELECT count(*) FROM " . table_of($kind)
		  . " WHERE queue = 'default' AND state IN ('scheduled', 'pending', 'failed')");
}

# drop_waiting(KIND): the jobs a run left waiting in queue 'default' go.  The
# millions that steps 4 and 5 leave were a backlog beside every later step,
# which the scheduler counts (at most a tenth of a CPU, in bursts that fell
# into the short runs of steps 5 and 11 or not).
sub drop_waiting
{
	my ($kind) = @_;
	my $t0 = time;
	my $left = query("WITH d AS (DELETE FROM " . table_of($kind)
		  . " WHERE queue = 'default' AND state IN ('scheduled', 'pending', 'failed') RETURNING 1)"
		  . " SELECT count(*) FROM d");
	say(sprintf('  deleted the %d jobs left waiting (%.0f s)', $left, time - $t0));
	return;
}

# top_up(KIND, N): at least N jobs wait in the table of KIND (not measured)
sub top_up
{
	my ($kind, $n) = @_;
	my $have = waiting($kind);
	my $add = int($n - $have);
	if ($add <= 0)
	{
		say("  prefill " . table_of($kind) . ": $have waiting, enough");
		return;
	}
	my $t0 = time;
	if ($kind =~ /^hasched/)
	{
		local $ENV{PGOPTIONS} = '-c hasched.enforce_quotas=off';
		query("SELECT bench_fill_hasched($add)");
	}
	else
	{
		query("SELECT bench_fill_plain($add)");
	}
	say(sprintf('  prefill %s: %d waiting, added %d (%.0f s)',
			table_of($kind), $have, $add, time - $t0));
	return;
}

sub vacuum_all
{
	query("VACUUM (ANALYZE) $_") for qw(hasched.job hasched.job_run hasched.quota_use bench_plain);
	return;
}

# plans(LABEL): one claim of 100 + complete under auto_explain (analyze,
# nested statements), rolled back, in the state the next run starts from;
# the plans go to OUTDIR/plans_LABEL.txt and which index each UPDATE of
# hasched.job scanned is printed.  Diagnostics only, not measured.
sub plans
{
	my ($label) = @_;
	my $log = $NODE->logfile;
	my $from = -s $log;
	my $batch = $HAS_MANY ? <<'EOF' : '';
BEGIN;
SELECT hasched.complete(array_agg(c.job_id), array_agg(c.token)) FROM hasched.claim('default', 'w', 100) c;
ROLLBACK;
EOF
	eval {
		psql_script(<<"EOF");
LOAD 'auto_explain';
SET auto_explain.log_min_duration = 0;
SET auto_explain.log_nested_statements = on;
SET auto_explain.log_analyze = on;
SET auto_explain.log_buffers = on;
SET auto_explain.log_timing = off;
BEGIN;
SELECT count(hasched.complete(c.job_id, c.token, NULL)) FROM hasched.claim('default', 'w', 100) c;
ROLLBACK;
$batch
EOF
		1;
	} or do { say("  (plan capture failed: $@)"); return };
	open(my $fh, '<', $log) or return;
	seek($fh, $from, 0);
	my $text = do { local $/; <$fh> } // '';
	spew("$OUTDIR/plans_$label.txt", $text);

	# the statements that UPDATE hasched.job, and how they find its rows
	my ($upd, $kind, %seen, @lines) = (0, '');
	for (split /\n/, $text)
	{
		if (/Query Text: (.*)/)
		{
			my $qt = $1;
			$upd = $qt =~ /UPDATE hasched[.]job/;
			$kind = $qt =~ /lease_id_seq/ ? 'claim()'
			  : $qt =~ /succeeded/ ? ($qt =~ /unnest/ ? 'complete(ids[])' : 'complete()')
			  : 'other';
		}
		if ($upd
			&& /((?:Seq Scan|Index Scan|Index Only Scan|Bitmap Heap Scan)(?: Backward)?(?: using [a-z_]+)? on job)(?: |$)/)
		{
			push @lines, "$kind UPDATE of hasched.job reads it with: $1"
			  unless $seen{"$kind $1"}++;
		}
	}
	say("  plan: $_") for @lines;
	$R{plans} .= "$label:\n" . join('', map { "  $_\n" } @lines);
	return;
}

# The old-snapshot holder: a psql session idle in a REPEATABLE READ
# transaction that has read TABLE.
sub holder_start
{
	my ($table) = @_;
	my $h = $NODE->background_psql($DB, timeout => $C{snapshot_seconds} + 600);
	$h->set_query_timer_restart;
	$h->query_safe("SET application_name = 'bench_snapshot_holder'");
	$h->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$h->query_safe("SELECT count(*) AS rows_in_old_snapshot FROM $table");
	wait_sql(60, "SELECT EXISTS (SELECT 1 FROM pg_stat_activity
	                 WHERE application_name = 'bench_snapshot_holder'
	                   AND state = 'idle in transaction' AND backend_xmin IS NOT NULL)")
	  or die "bench: the snapshot holder did not get idle in transaction\n";
	say("  snapshot holder: idle in transaction, backend_xmin "
		  . query("SELECT backend_xmin FROM pg_stat_activity
	             WHERE application_name = 'bench_snapshot_holder'"));
	return $h;
}

sub holder_state
{
	return query("SELECT coalesce(string_agg(state || ' xmin ' || backend_xmin || ' since ' ||
	                   round(extract(epoch FROM now() - xact_start))::text || ' s', ', '), 'gone')
	            FROM pg_stat_activity WHERE application_name = 'bench_snapshot_holder'");
}

# SQL that is true while a job of the queue waits or runs: two EXISTS, each
# answered by one of hasched's partial indexes (a condition on the finished
# states would read the whole history: after step 4, a poll of
# count(*) ... state = 'succeeded' every 0.1 s took more server CPU than
# the jobs it waited for)
sub jobs_left
{
	my ($queue) = @_;
	return "(EXISTS (SELECT 1 FROM hasched.job WHERE queue = '$queue'
                    AND state IN ('scheduled', 'pending', 'failed'))
             OR EXISTS (SELECT 1 FROM hasched.job WHERE queue = '$queue'
                    AND state IN ('running', 'dispatched')))";
}
my $NOOP_LEFT = jobs_left('noop');

sub wait_idle_executors
{
	my ($node) = @_;
	return wait_sql(60, "SELECT NOT $NOOP_LEFT AND EXISTS
	          (SELECT 1 FROM hasched.executors() WHERE state = 'idle')", $node);
}

# CPU ticks used so far by each live executor: pid => ticks
sub executor_cpu
{
	my %t;
	for my $p (split /\n/, query("SELECT pid FROM hasched.executors() WHERE pid <> 0"))
	{
		my @s = proc_stat($p);
		$t{$p} = ($s[11] // 0) + ($s[12] // 0) if @s;
	}
	return \%t;
}

# A target row of the summary's first table: figure, hasched, base (the
# baseline), ratio with min or max, or value with value_min or value_max;
# cpu => [hasched, baseline]; note => [notes that make the figure doubtful].
sub target
{
	my (%t) = @_;
	my @notes = grep { defined && $_ ne '' } @{ $t{note} // [] };
	my $by_ratio = defined $t{min} || defined $t{max};
	my ($v, $lo, $hi) = $by_ratio ? @t{qw(ratio min max)} : @t{qw(value value_min value_max)};
	$t{target} //= defined $t{min} ? sprintf('>= %.2fx', $t{min}) : sprintf('<= %.2fx', $t{max});
	$t{met} = @notes ? '?'
	  : (!defined $v || $v eq '') ? ''
	  : (defined $lo ? $v >= $lo : $v <= $hi) ? 'yes' : 'no';
	$t{figure} .= ' (' . join('; ', @notes) . ')' if @notes;
	push @TARGETS, \%t;
	return;
}

# A step's section of the summary (markdown), printed now and at the end.
sub section
{
	my $text = join('', @_);
	push @SECTIONS, $text;
	out("\n", $text);
	return;
}

sub md_table
{
	my ($head, $align, @rows) = @_;
	my $s = '| ' . join(' | ', @$head) . " |\n|"
	  . join('|', map { $_ eq 'r' ? '---:' : '---' } split //, $align) . "|\n";
	$s .= '| ' . join(' | ', map { $_ // 'n/a' } @$_) . " |\n" for @rows;
	return $s;
}

# ==========================================================================
# the steps
# ==========================================================================

# That the quotas-on run was counted against the tier: with the bench tier's
# daily limit lowered to the jobs of the day so far, one more submit must be
# refused (JQ001); the limit is put back.
sub quota_probe
{
	my $used = query("SELECT used_today FROM hasched.tenants WHERE tenant = current_user");
	my $limit = query("SELECT jobs_per_day FROM hasched.tier WHERE name = 'bench'");
	query("UPDATE hasched.tier SET jobs_per_day = $used WHERE name = 'bench'");
	my $err = '';
	eval { psql_script("SELECT hasched.submit('default', '{}')"); 1 } or $err = $@;
	query("UPDATE hasched.tier SET jobs_per_day = $limit WHERE name = 'bench'");
	($err) = $err =~ /(ERROR:[^\n]*)/ if $err =~ /ERROR:/;
	return $err =~ /JQ001|quota/
	  ? "with the day's limit lowered to the $used jobs submitted today, the next submit was refused ($err)" =~ s/\s+$//r
	  : "NO: with the day's limit lowered to the $used jobs submitted today, the next submit was not refused ($err)";
}

# 1. Single-row submit, 8 clients: hasched.submit with quotas on (every
# submit counts against the tenant's tier, an effectively unlimited but
# finite one), with quotas off, and a plain INSERT into bench_plain (the
# columns and indexes of hasched.job; no trigger, no RLS).
sub step_submit
{
	my ($c, $T) = ($C{submit_clients}, $C{seconds});
	header("1. single-row submit (pgbench -c $c -j $C{threads} -T $T)");
	my $on = pgbench_run('submit_quotas_on', script => 'submit.pgbench', clients => $c);
	my $counted = quota_probe();
	my $off = pgbench_run('submit_quotas_off', script => 'submit.pgbench', clients => $c,
		pgoptions => '-c hasched.enforce_quotas=off');
	my $plain = pgbench_run('plain_insert', script => 'plain_insert.pgbench', clients => $c);

	my @rows;
	for ([ 'hasched.submit, quotas on', $on, '>= 0.90x tps, <= 1.5x CPU' ],
		[ 'hasched.submit, quotas off', $off, '' ],
		[ 'plain INSERT into bench_plain', $plain, '' ])
	{
		my ($label, $r, $tgt) = @$_;
		push @rows, [ $label . ($r->{note} ? " ($r->{note})" : ''),
			f0($r->{tps}), $r->{lat}, f2(ratio($r->{tps}, $plain->{tps})),
			fus($r->{cpu}), f2(ratio($r->{cpu}, $plain->{cpu})), $tgt ];
	}
	section("### 1. single-row submit (-c $c, $T s each)\n\n",
		md_table([ 'statement', 'tps', 'latency ms', 'vs plain INSERT',
				'server CPU us/job', 'CPU vs plain', 'target' ], 'lrrrrrl', @rows),
		"\nQuota accounting ran: $counted\n");
	target(figure => 'single-row submit, quotas on / plain INSERT (tps, -c ' . $c . ')',
		hasched => f0($on->{tps}), base => f0($plain->{tps}),
		ratio => ratio($on->{tps}, $plain->{tps}), min => 0.9,
		cpu => [ $on->{cpu}, $plain->{cpu} ], note => [ $on->{note}, $plain->{note} ]);
	target(figure => 'server CPU per submitted job / plain INSERT\'s (us)',
		hasched => fus($on->{cpu}), base => fus($plain->{cpu}),
		ratio => ratio($on->{cpu}, $plain->{cpu}), max => 1.5,
		note => [ $on->{note}, $plain->{note} ]);
	return;
}

# 2. submit_many of 100 payloads vs a plain 100-row INSERT ... SELECT
# generate_series, 8 clients, quotas on.
sub step_submit_many
{
	my ($c, $T) = ($C{submit_clients}, $C{seconds});
	header("2. submit_many of 100 payloads (pgbench -c $c -j $C{threads} -T $T)");
	my $many = pgbench_run('submit_many_100', script => 'submit_many.pgbench',
		clients => $c, per_job => 100);
	my $plain = pgbench_run('plain_insert_100', script => 'plain_insert_many.pgbench',
		clients => $c, per_job => 100);
	my @rows;
	for ([ 'hasched.submit_many, 100 payloads, quotas on', $many, '>= 0.90x' ],
		[ 'plain INSERT ... SELECT generate_series(1, 100)', $plain, '' ])
	{
		my ($label, $r, $tgt) = @$_;
		push @rows, [ $label . ($r->{note} ? " ($r->{note})" : ''),
			f0($r->{tps}), f0($r->{jobs}), $r->{lat},
			f2(ratio($r->{tps}, $plain->{tps})), fus($r->{cpu}),
			f2(ratio($r->{cpu}, $plain->{cpu})), $tgt ];
	}
	section("### 2. 100 jobs per call (-c $c, $T s each)\n\n",
		md_table([ 'statement', 'calls/s', 'jobs/s', 'latency ms', 'vs plain',
				'server CPU us/job', 'CPU vs plain', 'target' ], 'lrrrrrrl', @rows));
	target(figure => 'submit_many of 100 / plain 100-row INSERT (jobs/s)',
		hasched => f0($many->{jobs}), base => f0($plain->{jobs}),
		ratio => ratio($many->{tps}, $plain->{tps}), min => 0.9,
		cpu => [ $many->{cpu}, $plain->{cpu} ], note => [ $many->{note}, $plain->{note} ]);
	return;
}

# 3. claim + complete in one statement (so one transaction), batch 1 and
# 100, for each BENCH_CLAIM_CLIENTS: hasched (with batch 100 first the batch
# complete(ids[], tokens[]), the headline), then a plain FOR UPDATE SKIP
# LOCKED loop on bench_plain in two shapes: claim-then-complete (two
# UPDATEs, like hasched, a plpgsql function so it is one round trip too)
# and one UPDATE.  Each run starts after VACUUM ANALYZE with enough jobs
# waiting; a run whose queue ran dry is refilled and run again.
sub step_claim
{
	my $T = $C{seconds};
	for my $c (@{ $C{claim_clients} })
	{
		header("3. claim + complete, one statement per transaction (pgbench -c $c -j $C{threads} -T $T)");
		for my $b (1, 100)
		{
			my @kinds = ($b == 100 && $HAS_MANY) ? qw(hasched_many hasched plain2 plain1)
			  : qw(hasched plain2 plain1);
			for my $kind (@kinds)
			{
				my $name = "claim_${kind}_b${b}_c${c}";
				my $need = ($b == 1 ? $C{claim_rate_1} : $C{claim_rate_100}) * $T * 1.2;
				for my $try (1 .. 3)
				{
					top_up($kind, $need);
					vacuum_all();
					if ($kind eq $kinds[0] && $try == 1)
					{
						plans("claim_b${b}_c${c}");
						vacuum_all();
					}
					my $r = pgbench_run($name, script => $LOOP_SCRIPT{$kind},
						batch => $b, clients => $c);
					$R{$name} = $r;
					# a queue that ran dry makes the figure meaningless
					last if waiting($kind) > 0;
					$r->{note} = 'queue ran dry';
					last if $try == 3;
					say("  $name: the queue ran dry; refilling more and running again");
					pop @CMDS;
					$need *= 3;
				}
			}
		}
	}

	my @rows;
	for my $c (@{ $C{claim_clients} })
	{
		for my $b (1, 100)
		{
			my $plain = $R{"claim_plain2_b${b}_c${c}"};
			for my $kind (qw(hasched_many hasched plain2 plain1))
			{
				my $r = $R{"claim_${kind}_b${b}_c${c}"} or next;
				my $headline = $b == 100 && ($kind eq 'hasched_many'
					|| ($kind eq 'hasched' && !$HAS_MANY));
				my $label = {
					hasched      => 'hasched: complete(id, token) per job FROM claim(...)',
					hasched_many => 'headline: hasched, one complete(array_agg(id), array_agg(token)) FROM claim(...)',
					plain2       => 'plain 2-step: claim UPDATE, then complete UPDATE (plpgsql)',
					plain1       => 'plain 1-step: one UPDATE ... FOR UPDATE SKIP LOCKED' }->{$kind};
				push @rows, [ $c, $b, $label . ($r->{note} ? " ($r->{note})" : ''),
					f0($r->{tps}), f0($r->{jobs}), $r->{lat},
					f2(ratio($r->{jobs}, $plain->{jobs})), fus($r->{cpu}),
					$headline ? '>= 20000 jobs/s' : '' ];
			}
		}
	}
	my $hl = "claim_hasched_many_b100_c$C{claim_clients}[0]";
	$hl = "claim_hasched_b100_c$C{claim_clients}[0]" unless $R{$hl};
	section("### 3. claim + complete ($T s each; claim and complete in one statement, so in one transaction)\n\n",
		md_table([ 'clients', 'batch', 'loop', 'tps', 'jobs/s', 'latency ms',
				'vs plain 2-step', 'server CPU us/job', 'target' ], 'rrlrrrrrl', @rows),
		"\nhasched does more per job than the plain loops (state trigger, lease tokens, claim cursors). ",
		"The plain 2-step loop is a plpgsql function (bench/setup.sql) so that it too takes one round trip. ",
		"Each run starts after VACUUM ANALYZE, with no job running.\n");
	target(figure => "claim 100 + complete, -c $C{claim_clients}[0] (jobs/s)",
		hasched => f0($R{$hl}{jobs}),
		base => f0($R{"claim_plain2_b100_c$C{claim_clients}[0]"}{jobs}) . ' (plain 2-step)',
		ratio => ratio($R{$hl}{jobs}, $R{"claim_plain2_b100_c$C{claim_clients}[0]"}{jobs}),
		value => $R{$hl}{jobs}, value_min => 20000, target => '>= 20000 jobs/s',
		cpu => [ $R{$hl}{cpu}, $R{"claim_plain2_b100_c$C{claim_clients}[0]"}{cpu} ],
		note => [ $R{$hl}{note} ]);
	return;
}

# 4. Batch-100 claim + complete for BENCH_SNAPSHOT_SECONDS while another
# session sits idle in a REPEATABLE READ transaction that has read the
# table: the jobs/s of the first and of the last BENCH_WINDOW seconds (from
# pgbench --progress=1), averaged in SQL.  A plain queue degrades as its
# index fills with dead entries the old snapshot keeps; hasched's claim
# cursors should not.
#
# The same loop runs BENCH_SNAPSHOT_WARMUP seconds first, without the
# holder, and the measured run follows without a CHECKPOINT.  Started from
# a CHECKPOINT instead, the first window had every buffer clean, and the
# drop that came when the buffer pool (1 GB) had no clean buffer left and
# the sessions began to write dirty ones out themselves (22 s into the run,
# at 55,000 jobs/s) was counted as the old snapshot's: 0.1.0 measured 0.77
# so on this machine.  Each window's buffer writes (checkpointer,
# background writer, sessions) are printed beside it.
sub step_snapshot
{
	my ($SS, $c, $WU) = ($C{snapshot_seconds}, $C{claim_clients}[0], $C{snapshot_warmup});
	my $W = $C{window};
	$W = int($SS / 2) if $W > $SS / 2;
	$W = 1 if $W < 1;
	my @rows;
	for my $kind (@{ $C{snapshot_loops} })
	{
		my $name = "snapshot_$kind";
		header("4. claim + complete, batch 100, old snapshot held, $kind (pgbench -c $c -j $C{threads} -T $SS)");
		# twice what step 3 measured (claims under an old snapshot can run
		# faster than those 3-15 s did), or twice BENCH_CLAIM_RATE_100
		my $est = $R{"claim_${kind}_b100_c$c"}{jobs} || $C{claim_rate_100};
		my $need = $est * ($SS + $WU) * 2;
		$need = 10000 if $need < 10000;
		top_up($kind, $need);
		vacuum_all();
		pgbench_run("${name}_warmup", script => $LOOP_SCRIPT{$kind}, batch => 100,
			clients => $c, seconds => $WU, comment => 'warm-up, no holder yet')
		  if $WU > 0;
		my $holder = holder_start(table_of($kind));
		my $r = pgbench_run($name, script => $LOOP_SCRIPT{$kind}, batch => 100,
			clients => $c, seconds => $SS, progress => 1, sessions => 1, windows => $W,
			checkpoint => $WU == 0, comment => 'with the snapshot holder, right after');
		plans($name) if $kind eq 'hasched';
		$r->{holder_after} = holder_state();
		say("  snapshot holder after the run: $r->{holder_after}");
		$holder->query_safe('COMMIT');
		$holder->quit;

		# jobs/s per second, then the windows, in SQL
		my @persec = map { $_ * 100 } ($r->{output} // '') =~ /^progress: [\d.]+ s, ([\d.]+) tps/mg;
		spew("$OUTDIR/$name.persec", join("\n", @persec) . "\n");
		if (@persec)
		{
			my $arr = "'{" . join(',', @persec) . "}'::float8[]";
			($r->{first}, $r->{last}, $r->{series}) = split /\|/, query(
				"SELECT round(avg(v) FILTER (WHERE i <= $W)::numeric, 1),
				        round(avg(v) FILTER (WHERE i > n - $W)::numeric, 1),
				        (SELECT string_agg(round(a)::text, ' ' ORDER BY g)
				           FROM (SELECT (i - 1) / $W AS g, avg(v) AS a
				                   FROM unnest($arr) WITH ORDINALITY u(v, i) GROUP BY 1) w)
				   FROM unnest($arr) WITH ORDINALITY u(v, i),
				        (SELECT cardinality($arr) AS n) c");
		}
		# the first and last windows: server CPU per job, the machine idle
		if (my $sm = $r->{samples} and @persec >= 2 * $W)
		{
			my ($jf, $jl) = (0, 0);
			$jf += $_ for @persec[ 0 .. $W - 1 ];
			$jl += $_ for @persec[ -$W .. -1 ];
			my $idle = sub {
				my ($a, $b) = @_;
				my $all = $b->[1][1] - $a->[1][1];
				return $all > 0 ? 100 * ($b->[1][0] - $a->[1][0]) / $all : undef;
			};
			$r->{cpu_first} = cpu_us($sm->[1][0] - $sm->[0][0], $jf);
			$r->{cpu_last} = cpu_us($sm->[3][0] - $sm->[2][0], $jl);
			$r->{idle_first} = $idle->($sm->[0], $sm->[1]);
			$r->{idle_last} = $idle->($sm->[2], $sm->[3]);
			# buffers written by the checkpointer / bgwriter / sessions
			my $writes = sub {
				my ($a, $b) = @_;
				return join(' / ', map { ($b->[2][$_] // 0) - ($a->[2][$_] // 0) } 0 .. 2);
			};
			$r->{writes_first} = $writes->($sm->[0], $sm->[1]);
			$r->{writes_last} = $writes->($sm->[2], $sm->[3]);
			say(sprintf('  first / last %d s: server CPU %s / %s us per job; machine idle %s%% / %s%%',
					$W, fus($r->{cpu_first}), fus($r->{cpu_last}),
					f0($r->{idle_first}), f0($r->{idle_last})));
			say("  buffers written by the checkpointer / bgwriter / sessions: first $W s $r->{writes_first}; last $W s $r->{writes_last}");
		}
		$r->{note} = 'queue ran dry: raise the prefill' if waiting($kind) == 0;
		$R{$name} = $r;
		drop_waiting($kind);
		# leave nothing for autovacuum to chew on during the next run
		vacuum_all();
		push @rows, [
			{ hasched => 'hasched: complete(id, token) per job',
			  hasched_many => 'hasched: complete(ids[], tokens[]) per claim',
			  plain2 => 'plain 2-step', plain1 => 'plain 1-step' }->{$kind}
			  . ($r->{note} ? " ($r->{note})" : ''),
			f0($r->{jobs}), f0($r->{first}), f0($r->{last}),
			f2(ratio($r->{last}, $r->{first})), fus($r->{cpu}),
			fus($r->{cpu_first}) . ' / ' . fus($r->{cpu_last}),
			f0($r->{idle_first}) . '% / ' . f0($r->{idle_last}) . '%',
			na($r->{writes_first}) . '; ' . na($r->{writes_last}),
			$kind =~ /^hasched/ ? '>= 0.90' : '(expected to degrade)' ];
	}
	my $plain = $R{snapshot_plain2} // $R{snapshot_plain1};
	for my $kind (grep { /^hasched/ } @{ $C{snapshot_loops} })
	{
		my $r = $R{"snapshot_$kind"};
		target(figure => "old snapshot held $SS s: last $W s / first $W s ($kind)",
			hasched => f0($r->{last}) . ' / ' . f0($r->{first}),
			base => $plain ? f0($plain->{last}) . ' / ' . f0($plain->{first})
			  . ' = ' . f2(ratio($plain->{last}, $plain->{first})) . ' (plain)' : undef,
			ratio => ratio($r->{last}, $r->{first}), min => 0.9,
			cpu => [ $r->{cpu}, $plain ? $plain->{cpu} : undef ],
			note => [ $r->{note}, $plain ? $plain->{note} : undef ]);
	}
	section("### 4. batch-100 claim + complete for $SS s with an old snapshot held (-c $c)\n\n",
		md_table([ 'loop', 'mean jobs/s', "first $W s jobs/s", "last $W s jobs/s",
				'last/first', 'server CPU us/job', "server CPU us/job, first / last $W s",
				"machine idle, first / last $W s",
				"buffers written by checkpointer / bgwriter / sessions, first; last $W s",
				'target' ], 'lrrrrrrrrl', @rows),
		"\njobs/s per $W s window:\n\n",
		(map { "- $_: " . na($R{"snapshot_$_"}{series}) . "\n" } @{ $C{snapshot_loops} }),
		($WU > 0 ? "\nEach loop ran $WU s without a holder first (the buffer pool's steady state), then at once with it.\n" : "\nEach run started from a CHECKPOINT (BENCH_SNAPSHOT_WARMUP=0).\n"),
		"Each loop had its own holder: psql, BEGIN ISOLATION LEVEL REPEATABLE READ; ",
		"SELECT count(*) FROM <table>; then idle in transaction until the run ended. After each run:\n\n",
		(map { "- $_: " . na($R{"snapshot_$_"}{holder_after}) . "\n" } @{ $C{snapshot_loops} }));
	return;
}

# Before the executor steps: the sql queue 'noop' (jobs {"sql": "SELECT 1"})
# and track_commit_timestamp = on (step 6 splits its latency at the commit
# timestamp), which needs a restart: steps 1-4 ran without it.
sub prepare_executor_steps
{
	header("SQL jobs: queue 'noop' (transport sql), hasched.max_executors = $C{max_executors}");
	if (query('SHOW track_commit_timestamp') ne 'on')
	{
		query('ALTER SYSTEM SET track_commit_timestamp = on');
		node_restart($NODE);
		$R{restarted} = 1;
		say("  server restarted with track_commit_timestamp = on: pid $PID{$NODE->name}");
	}
	query("INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql') ON CONFLICT (name) DO NOTHING");
	vacuum_all();
	wait_sql(30, "SELECT EXISTS (SELECT 1 FROM hasched.executors() WHERE state = 'idle')")
	  or say('  (no idle executor after 30 s)');
	say('  executors: ' . query("SELECT string_agg(slot || ':' || state || coalesce(' pid ' || nullif(pid, 0), ''), ', ' ORDER BY slot)
	                           FROM hasched.executors()"));
	return;
}

# The baseline of step 5, just before it and on the same server: batch-100
# claim + complete(ids[], tokens[]) from pgbench (-c the first
# BENCH_CLAIM_CLIENTS) on the default queue, the rate an external worker gets.
sub pull_api_baseline
{
	my $c = $C{claim_clients}[0];
	my $kind = $HAS_MANY ? 'hasched_many' : 'hasched';
	header("5. pull API baseline: claim 100 + complete, same server (pgbench -c $c -j $C{threads} -T $C{seconds})");
	top_up($kind, $C{claim_rate_100} * $C{seconds} * 2);
	vacuum_all();
	my $pull = pgbench_run('drain_baseline_pull_api', script => $LOOP_SCRIPT{$kind},
		batch => 100, clients => $c, comment => 'step 5 baseline, after the restart');
	$pull->{note} = 'queue ran dry' if defined $pull->{tps} && waiting($kind) == 0;
	drop_waiting($kind);
	vacuum_all();
	return $pull;
}

# 5. Drain no-op SQL jobs through the executors, against the pull API
# baseline: set_mode('paused'), submit_many BENCH_DRAIN_JOBS jobs in batches
# of BENCH_DRAIN_BATCH, set_mode('normal'), and a session waits on the
# server until none is waiting or running.  jobs/s = succeeded /
# (max(finished_at) - min(started_at)); also the wall time from
# set_mode('normal') to the last finished_at, the gap to the first
# started_at, and the server CPU per job (of which the executors').
sub step_drain
{
	my ($N, $B, $E, $c) = ($C{drain_jobs}, $C{drain_batch}, $C{max_executors},
		$C{claim_clients}[0]);
	my $pull = pull_api_baseline();

	header("5. drain $N no-op SQL jobs (submit_many of $B while paused, then set_mode('normal'); max_executors = $E)");
	my $calls = int(($N + $B - 1) / $B);
	push @SQLS, "-- 5. drain (queue: INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql'))",
	  "SELECT hasched.set_mode('paused', 'bench step 5: filling');",
	  "SELECT cardinality(hasched.submit_many('noop', array_fill('{\"sql\": \"SELECT 1\"}'::jsonb, ARRAY[$B])));   -- $calls times, one transaction each",
	  "SELECT hasched.set_mode('normal', 'bench step 5: drain');   -- then, same session, a DO loop: pg_sleep(0.05) until no noop job is scheduled, pending, failed or running",
	  "SELECT count(*), max(finished_at) - min(started_at), min(started_at) - (SELECT changed_at FROM hasched.state) FROM hasched.job WHERE queue = 'noop' AND id > <max id before>;";
	my %d = (pull => $pull);
	query("SELECT hasched.set_mode('paused', 'bench step 5: filling')");
	my $first_id = query('SELECT coalesce(max(id), 0) FROM hasched.job');
	my $script = '';
	for (my $left = $N; $left > 0; $left -= $B)
	{
		my $k = $left < $B ? $left : $B;
		$script .= "SELECT cardinality(hasched.submit_many('noop', array_fill('{\"sql\": \"SELECT 1\"}'::jsonb, ARRAY[$k])));\n";
	}
	my $t0 = time;
	eval { psql_script($script); 1 } or do {
		query("SELECT hasched.set_mode('normal')");
		die "bench: step 5: submit_many failed: $@";
	};
	$d{submit_s} = time - $t0;
	$d{submitted} = query("SELECT count(*) FROM hasched.job WHERE queue = 'noop' AND id > $first_id
	                     AND state IN ('scheduled', 'pending')");
	say(sprintf('  submitted %d jobs in %.2f s (paused: none started: %s)', $d{submitted},
			$d{submit_s}, query("SELECT count(*) FROM hasched.job WHERE queue = 'noop'
			                   AND id > $first_id AND started_at IS NOT NULL")));
	query('CHECKPOINT');

	# one session: server clock, set_mode('normal'), a server-side wait (a
	# fresh snapshot per statement) until nothing is left, server clock
	my $ex0 = executor_cpu();
	my $cpu0 = server_cpu();
	my $out = eval {
		psql_script(<<"EOF");
SET statement_timeout = '$C{drain_timeout}s';
SELECT 'start ' || extract(epoch FROM clock_timestamp());
SELECT hasched.set_mode('normal', 'bench step 5: drain');
DO \$\$
BEGIN
    LOOP
        EXIT WHEN NOT $NOOP_LEFT;
        PERFORM pg_sleep(0.05);
    END LOOP;
END
\$\$;
SELECT 'end ' || extract(epoch FROM clock_timestamp());
EOF
	} // do { $d{note} = "not drained within $C{drain_timeout} s"; say("  $@"); '' };
	my $ticks = settled_cpu(0) - $cpu0;
	my $ex1 = executor_cpu();
	spew("$OUTDIR/drain_wait.txt", $out);
	my ($ta) = $out =~ /^start ([\d.]+)/m;
	my ($tb) = $out =~ /^end ([\d.]+)/m;
	$d{wall_poll_s} = $tb - $ta if defined $ta && defined $tb;

	@d{qw(succeeded total busy_s wake_ms wall_s other)} = split /\|/, query(
		"SELECT count(*) FILTER (WHERE j.state = 'succeeded'), count(*),
		        round(extract(epoch FROM max(j.finished_at) - min(j.started_at))::numeric, 3),
		        round((extract(epoch FROM min(j.started_at) - s.changed_at) * 1000)::numeric, 1),
		        round(extract(epoch FROM max(j.finished_at) - s.changed_at)::numeric, 3),
		        coalesce(string_agg(DISTINCT j.state::text, ',') FILTER (WHERE j.state <> 'succeeded'), '')
		   FROM hasched.job j, hasched.state s
		  WHERE j.queue = 'noop' AND j.id > $first_id
		  GROUP BY s.changed_at"), -1;
	$d{jobs_s} = ratio($d{succeeded}, $d{busy_s});
	$d{wall_jobs_s} = ratio($d{succeeded}, $d{wall_s});
	$d{cpu} = cpu_us($ticks, $d{succeeded});
	my $ex_ticks = 0;
	$ex_ticks += $ex1->{$_} - ($ex0->{$_} // 0) for keys %$ex1;
	$d{exec_cpu} = cpu_us($ex_ticks, $d{succeeded});
	$d{runs} = query("SELECT count(*) FROM hasched.job_run WHERE job_id > $first_id");
	# the executors' transactions: with track_commit_timestamp (on since the
	# restart before this step), one commit time per transaction
	$d{xacts} = query("SELECT count(DISTINCT pg_xact_commit_timestamp(xmin)) FROM hasched.job
	                   WHERE queue = 'noop' AND id > $first_id AND state = 'succeeded'");
	$d{group_ms} = query("SELECT current_setting('hasched.executor_group_ms')");
	$d{workers} = query("SELECT string_agg(w || ' ' || n, ', ' ORDER BY w) FROM (SELECT worker w, count(*) n
	                   FROM hasched.job WHERE queue = 'noop' AND id > $first_id GROUP BY worker) s");
	$R{drain} = \%d;
	vacuum_all();

	section("### 5. drain $N no-op SQL jobs through the executors (hasched.max_executors = $E)\n\n",
		md_table([ 'figure', 'value', 'target' ], 'lrl',
			[ 'jobs/s = succeeded / (max(finished_at) - min(started_at))', f0($d{jobs_s}), '>= 10000' ],
			[ "pull API on the same server, just before: claim 100 + complete, -c $c, jobs/s"
				  . ($pull->{note} ? " ($pull->{note})" : ''), f0($pull->{jobs}), '' ],
			[ 'executors / pull API (jobs/s)', f2(ratio($d{jobs_s}, $pull->{jobs})), '>= 0.80' ],
			[ 'server CPU per job, us: executors (of which the executors themselves) / pull API',
				fus($d{cpu}) . ' (' . fus($d{exec_cpu}) . ') / ' . fus($pull->{cpu}), '' ],
			[ 'max(finished_at) - min(started_at), s', $d{busy_s}, '' ],
			[ "wall: set_mode('normal') -> last finished_at, s (jobs/s)",
				na($d{wall_s}) . ' (' . f0($d{wall_jobs_s}) . ')', '' ],
			[ "set_mode('normal') -> first started_at, ms", $d{wake_ms}, '' ],
			[ 'wall seen by the waiting session (polls every 50 ms), s', f2($d{wall_poll_s}), '' ],
			[ 'succeeded / submitted', "$d{succeeded} / $d{submitted}"
				  . ($d{other} ? " (also: $d{other})" : '') . ($d{note} ? " ($d{note})" : ''), '' ],
			[ 'attempts that did not succeed (job_run rows)', $d{runs}, '' ],
			[ "executor transactions that committed the jobs (hasched.executor_group_ms = $d{group_ms})",
				na($d{xacts}), '' ],
			[ "submit: $calls x submit_many of $B while paused, s", f2($d{submit_s}), '' ]),
		"\nJobs per executor: " . na($d{workers})
		  . ". Consecutive jobs of one owner share a transaction for up to hasched.executor_group_ms"
		  . " (at most 32; each job a subtransaction, the successes recorded together before the commit;"
		  . " executor commits with synchronous_commit off).\n");
	target(figure => "executors' drain of $N no-op SQL jobs / pull API claim 100 + complete (jobs/s)",
		hasched => f0($d{jobs_s}), base => f0($pull->{jobs}),
		ratio => ratio($d{jobs_s}, $pull->{jobs}), min => 0.8,
		cpu => [ $d{cpu}, $pull->{cpu} ], note => [ $d{note}, $pull->{note} ]);
	target(figure => "executors' drain, jobs/s ($E executors)", hasched => f0($d{jobs_s}),
		value => $d{jobs_s}, value_min => 10000, target => '>= 10000', note => [ $d{note} ]);
	return;
}

# 6. submit -> start latency with the executors idle: one psql session
# submits BENCH_LATENCY_JOBS jobs, one per transaction, BENCH_LATENCY_GAP_MS
# apart.  Main figure: started_at - run_at (run_at is set by submit, just
# before the commit); also split at the submitting transaction's commit
# timestamp (taken by the server just before the commit's WAL flush).
sub step_latency
{
	my ($NL, $G) = ($C{latency_jobs}, $C{latency_gap_ms});
	header("6. submit -> start latency: $NL jobs, one per transaction, $G ms apart, executors idle");
	wait_idle_executors() or say('  (the executors were not idle after 60 s)');
	say('  executors: ' . query("SELECT string_agg(slot || ':' || state, ', ' ORDER BY slot) FROM hasched.executors()"));
	my $submit = "SELECT hasched.submit('noop', '{\"sql\": \"SELECT 1\"}') AS id, txid_current() % 4294967296 AS xid \\gset";
	push @SQLS, "-- 6. latency: one psql session, $NL times, autocommit:", $submit,
	  "SELECT pg_sleep($G / 1000.0);",
	  '-- then: started_at - run_at, and pg_xact_commit_timestamp(xid) - run_at, started_at - pg_xact_commit_timestamp(xid), per job';
	my $out = psql_script(join('', map { "$submit\n\\echo lat :id :xid\nSELECT pg_sleep($G / 1000.0);\n" } 1 .. $NL));
	spew("$OUTDIR/latency_ids.txt", $out);
	my @pairs = $out =~ /^lat (\d+) (\d+)$/mg;
	die "bench: step 6: no job ids in the output of psql\n" unless @pairs;
	my (@values, @ids);
	while (my ($id, $xid) = splice(@pairs, 0, 2))
	{
		push @values, "($id, $xid)";
		push @ids, $id;
	}
	my $ids = join(', ', @ids);
	my %l;
	wait_sql(30, "SELECT NOT EXISTS (SELECT 1 FROM hasched.job WHERE id IN ($ids) AND started_at IS NULL)")
	  or $l{note} = 'not all started within 30 s';
	my $from = "FROM hasched.job j JOIN (VALUES " . join(', ', @values) . ") v(id, x) ON j.id = v.id
	            CROSS JOIN LATERAL (SELECT pg_xact_commit_timestamp(v.x::text::xid) AS ct) c
	            WHERE j.started_at IS NOT NULL";
	$l{run} = percentiles('j.started_at - j.run_at', $from);
	$l{pre} = percentiles('c.ct - j.run_at', "$from AND c.ct IS NOT NULL");
	$l{commit} = percentiles('j.started_at - c.ct', "$from AND c.ct IS NOT NULL");
	$l{states} = query("SELECT string_agg(state || ' ' || n, ', ') FROM (SELECT state::text, count(*) n
	                  FROM hasched.job WHERE id IN ($ids) GROUP BY 1) s");
	spew("$OUTDIR/latency.txt", query("SELECT j.id, round((extract(epoch FROM j.started_at - j.run_at) * 1000)::numeric, 2),
	                                  round((extract(epoch FROM j.started_at - c.ct) * 1000)::numeric, 2), j.worker
	                                $from ORDER BY j.id") . "\n");
	$R{latency} = \%l;

	my @rows = map {
		my ($label, $p, $tgt) = @$_;
		[ $label, $p->{n}, $p->{p50}, $p->{p90}, $p->{p99}, $p->{max}, $tgt ]
	  } ([ 'started_at - run_at (main figure)', $l{run}, 'p99 <= 10 ms' ],
		[ 'commit timestamp - run_at (rest of submit, up to the commit record)', $l{pre}, '' ],
		[ 'started_at - commit timestamp (WAL flush, wake-up, claim)', $l{commit}, '' ]);
	section("### 6. submit -> start latency, executors idle ($NL jobs, one psql session, one submit per transaction, $G ms apart)\n\n",
		md_table([ 'interval', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'target' ], 'lrrrrrl', @rows),
		"\nrun_at is set by submit() (its clock, just before the commit); started_at is the executor's claim time. ",
		"The commit timestamp is pg_xact_commit_timestamp() of the submitting transaction (track_commit_timestamp = on), ",
		"taken by the server just before the commit's WAL flush; the job is visible and the executor woken only after that flush. ",
		"Jobs: " . na($l{states}) . ($l{note} ? " ($l{note})" : '') . ". Per job: latency.txt.\n");
	target(figure => "submit -> start, idle executors ($NL jobs): p99 (p50)",
		hasched => na($l{run}{p99}) . ' ms (' . na($l{run}{p50}) . ')',
		value => $l{run}{p99}, value_max => 10, target => 'p99 <= 10 ms', note => [ $l{note} ]);
	return;
}

# 7. Cron firing jitter: a schedule '* * * * * *' on the sql queue for
# BENCH_CRON_SECONDS; per run created_at - fire_at (the scheduler's
# transaction start vs the due second) and started_at - fire_at.
sub step_cron
{
	my $CS = $C{cron_seconds};
	header("7. cron jitter: schedule '* * * * * *' on the sql queue for $CS s");
	wait_idle_executors() or say('  (the executors were not idle after 60 s)');
	my $t0 = query('SELECT clock_timestamp()');
	my $first = query('SELECT coalesce(max(id), 0) FROM hasched.job');
	my $schedule = "SELECT hasched.schedule('bench-1s', '* * * * * *', 'noop', '{\"sql\": \"SELECT 1\"}', replace => true)";
	push @SQLS, '-- 7. cron', "$schedule;   -- then sleep $CS", "SELECT hasched.unschedule('bench-1s');",
	  "-- per run: created_at - fire_at, started_at - fire_at FROM hasched.job WHERE schedule = 'bench-1s'";
	say('  next run: ' . query($schedule));
	sleep $CS;
	query("SELECT hasched.unschedule('bench-1s')");
	my %k;
	wait_sql(30, "SELECT NOT $NOOP_LEFT") or $k{note} = 'runs still waiting 30 s after unschedule';
	my $from = "FROM hasched.job j WHERE j.id > $first AND j.schedule = 'bench-1s' AND j.created_at >= '$t0'";
	$k{fire} = percentiles('j.created_at - j.fire_at', $from);
	$k{start} = percentiles('j.started_at - j.fire_at', "$from AND j.started_at IS NOT NULL");
	@k{qw(runs span dup ok)} = split /\|/, query(
		"SELECT count(*), round(extract(epoch FROM max(j.fire_at) - min(j.fire_at)))::int + 1,
		        count(*) - count(DISTINCT j.fire_at), count(*) FILTER (WHERE j.state = 'succeeded') $from");
	$k{skips} = query("SELECT coalesce(string_agg(kind || ' ' || n, ', '), 'none') FROM (SELECT kind, count(*) n
	                 FROM hasched.event WHERE at >= '$t0' AND detail->>'schedule' = 'bench-1s' GROUP BY kind) s");
	spew("$OUTDIR/cron.txt", query("SELECT j.id, j.fire_at, round((extract(epoch FROM j.created_at - j.fire_at) * 1000)::numeric, 2),
	                               round((extract(epoch FROM j.started_at - j.fire_at) * 1000)::numeric, 2), j.state, j.worker
	                             $from ORDER BY j.fire_at") . "\n");
	$R{cron} = \%k;

	my @rows = map {
		my ($label, $p) = @$_;
		[ $label, $p->{n}, $p->{p50}, $p->{p90}, $p->{p99}, $p->{max}, 'p99 <= 10 ms' ]
	  } ([ 'created_at - fire_at (firing)', $k{fire} ],
		[ 'started_at - fire_at (firing + executor start)', $k{start} ]);
	section("### 7. cron firing jitter: schedule '* * * * * *' on the sql queue for $CS s\n\n",
		md_table([ 'interval', 'runs', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'target' ], 'lrrrrrl', @rows),
		"\nfire_at is the due second; created_at is now() of the scheduler transaction that submitted the run. ",
		"$k{runs} runs whose fire_at span " . na($k{span}) . " s; fired twice: $k{dup}; succeeded: $k{ok}; ",
		"schedule events (skips): $k{skips}" . ($k{note} ? " ($k{note})" : '') . ". Per run: cron.txt.\n");
	target(figure => "cron '* * * * * *' for $CS s: created - due, p99 (started - due)",
		hasched => na($k{fire}{p99}) . ' ms (' . na($k{start}{p99}) . ' ms)',
		value => $k{start}{p99}, value_max => 10, target => 'p99 <= 10 ms', note => [ $k{note} ]);
	return;
}

# 8. Promotion -> first started job, BENCH_FAILOVER_RUNS times: a primary
# and a fresh streaming standby (pg_basebackup), servers of their own; the
# primary has SQL jobs due every 100 ms (submitted ahead with run_at, so
# the standby has them too) and runs them for BENCH_FAILOVER_SETTLE s; then
# it is stopped (immediate), and from a client clock reading just before
# pg_ctl promote of the standby to the first job started in the new epoch,
# read on the new primary (same machine, same clock).  The promoted node is
# the next run's primary, with a new standby cloned from it.
sub step_failover
{
	my $FR = $C{failover_runs};
	header("8. promotion -> first started job, $FR runs (primary + streaming standby)");
	my $stream = "SELECT count(hasched.submit('noop', '{\"sql\": \"SELECT 1\"}', run_at => clock_timestamp() + g * interval '100 ms')) FROM generate_series(1, 600) g";
	my $epoch_sql = 'SELECT e.epoch, extract(epoch FROM e.started_at), (SELECT extract(epoch FROM min(j.started_at)) FROM hasched.job j WHERE j.epoch = e.epoch) FROM hasched.epoch e WHERE e.epoch > %s ORDER BY e.epoch DESC LIMIT 1';
	push @SQLS, '-- 8. failover, per run; on the primary:', "$stream;",
	  "-- pg_basebackup (PostgreSQL::Test::Cluster->backup: --checkpoint fast --no-sync, WAL streamed); start the standby; wait for replay; sleep $C{failover_settle}",
	  '-- pg_ctl stop -m immediate (primary); t0 = client clock; pg_ctl promote (standby); then poll the new primary every 0.1 s:',
	  sprintf($epoch_sql, '<old epoch>') . ';';

	my $cur = node_primary('fo0', streaming => 1);
	query("INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql')", $cur);
	my @runs;
	for my $run (1 .. $FR)
	{
		my $ep_old = query('SELECT max(epoch) FROM hasched.epoch', $cur);
		query($stream, $cur);    # due every 100 ms for 60 s: the standby has them too
		my $nxt = node_standby($cur, "fo$run");
		$cur->wait_for_catchup($nxt, 'replay', query('SELECT pg_current_wal_lsn()', $cur));
		sleep $C{failover_settle};
		my $ran = query("SELECT count(*) FROM hasched.job WHERE queue = 'noop' AND epoch = $ep_old AND state = 'succeeded'
		               AND started_at > now() - interval '$C{failover_settle} s'", $cur);
		say('  run ' . $run . ': primary ' . $cur->name . " (epoch $ep_old) ran $ran jobs of the stream in the last $C{failover_settle} s; standby "
			  . $nxt->name . ' streaming');
		node_stop($cur, 'immediate');
		my $t_pro = time;
		$nxt->promote;
		my $t_done = time;
		my ($ep_new, $t_ep, $t_job);
		for (1 .. 300)
		{
			($ep_new, $t_ep, $t_job) = split /\|/, (eval { query(sprintf($epoch_sql, $ep_old), $nxt) } // '');
			last if defined $t_job && $t_job ne '';
			sleep 0.1;
		}
		my %r = (run => $run,
			promote => ($t_done - $t_pro) * 1000,
			epoch => ($t_ep // '') ne '' ? ($t_ep - $t_pro) * 1000 : undef,
			job => (defined $t_job && $t_job ne '') ? ($t_job - $t_pro) * 1000 : undef);
		$r{retried} = eval { query("SELECT coalesce(max((detail->>'sql_jobs_retried')::int), 0) FROM hasched.event
		                         WHERE kind = 'failover' AND (detail->>'epoch')::int = " . ($ep_new || 0), $nxt) };
		say("  run $run: pg_ctl promote returned after " . f0($r{promote}) . ' ms; epoch ' . na($ep_new)
			  . ' opened after ' . f0($r{epoch}) . ' ms; first job started after '
			  . (defined $r{job} ? f0($r{job}) : '(none within 30 s)') . ' ms; SQL jobs retried: ' . na($r{retried}));
		push @runs, \%r;
		$cur->clean_node;    # its data directory; the log stays
		$cur = $nxt;
	}
	node_stop($cur, 'fast');
	my %m = map { my $k = $_; ($k => median(map { $_->{$k} } @runs)) } qw(promote epoch job);
	$R{failover} = { runs => \@runs, median => \%m };

	section("### 8. promotion -> first started job ($FR runs; hasched.max_executors = $C{max_executors})\n\n",
		md_table([ 'run', 'pg_ctl promote returned, ms', 'new epoch opened, ms', 'first job started, ms',
				'SQL jobs retried', 'target' ], 'rrrrrl',
			(map { [ $_->{run}, f0($_->{promote}), f0($_->{epoch}), f0($_->{job}), $_->{retried}, '' ] } @runs),
			[ 'median', $m{promote}, $m{epoch}, $m{job}, '', '<= 1000 ms' ]),
		"\nEach run: the primary had jobs of an sql queue due every 100 ms (submitted ahead with run_at, so the standby had them) ",
		"and ran them for $C{failover_settle} s; pg_ctl stop -m immediate on the primary; times from a client clock reading ",
		"just before pg_ctl promote of the standby to hasched.epoch.started_at of the new epoch and to min(started_at) of the ",
		"jobs of the new epoch, read on the new primary (same machine, same clock). The standby was a fresh pg_basebackup of ",
		"the primary; the promoted node was the next run's primary. Nodes: fsync on, unix sockets only; logs failover: *_fo*.log.\n");
	my @jobs = grep { defined } map { $_->{job} } @runs;
	target(figure => "promotion -> first started job, median of $FR"
		  . (@jobs > 1 ? ' (' . join('-', map { f0($_) } (sort { $a <=> $b } @jobs)[0, -1]) . ')' : ''),
		hasched => na($m{job}) . ' ms', value => $m{job}, value_max => 1000, target => '<= 1000 ms');
	return;
}

# 10. The RabbitMQ dispatcher on a server of its own, against a broker of
# its own (test/perl/HaschedRabbitMQ.pm; quorum queues, the default): N
# jobs of an amqp queue are submitted while the server is paused, then
# released; each job's dispatch time is its lease_until less
# hasched.dispatch_lease (set in the transaction that marks it dispatched,
# after the broker's confirm), so the rate is N / (last - first dispatch).
# The baseline: bench/amqp_publish.c, a bare librabbitmq publisher with
# confirms that publishes N persistent messages of the same size in batches
# of the same size to a quorum queue of the same broker, waiting for each
# batch's confirms; run before and after the dispatcher, averaged.
sub step_dispatch
{
	my ($N, $B) = @C{qw(dispatch_jobs dispatch_batch)};
	header("10. dispatcher: confirmed publishes/s vs a bare librabbitmq publisher ($N jobs, batch $B)");
	require HaschedRabbitMQ;
	my $bin = "$TMP/amqp_publish";
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'cc', '-O2', '-o', $bin, "$HERE/amqp_publish.c", '-lrabbitmq' ], '>', \$out, '2>', \$err)
	  or do { say("  cannot build bench/amqp_publish.c: $err"); return; };
	my $mq = HaschedRabbitMQ->new('bench');
	my $up = $mq->start;
	say(sprintf('  broker %s up in %.1f s', $mq->node, $up));
	my $node = node_primary('dispatch', conf => $mq->hasched_conf
		  . "hasched.dispatch_batch = $B\nhasched.dispatch_lease = '1h'\n");
	query("INSERT INTO hasched.queue (name, transport) VALUES ('bq', 'amqp')", $node);
	my $payload = '{"data": "' . ('x' x 100) . '"}';
	# the message the dispatcher sends for this payload, about this size
	my $bytes = length('{"job_id": 100000, "attempt": 1, "lease_token": "1:1:100000", "queue": "bq", "priority": 5, "timeout_ms": 300000, "payload": ')
	  + length($payload) + 1;
	my @base;
	my $baseline = sub {
		my ($o, $e) = ('', '');
		IPC::Run::run([ $bin, '127.0.0.1', $mq->port, 'bench.baseline', 'quorum', $N, $B, $bytes ],
			'>', \$o, '2>', \$e);
		my ($n, $secs, $rate) = split ' ', $o;
		say("  bare publisher: $N messages of $bytes bytes in " . na($secs) . ' s: ' . f0($rate) . ' msg/s' . ($e ? " ($e)" : ''));
		push @base, $rate if defined $rate && $rate > 0;
	};
	$baseline->();

	# the jobs, submitted while nothing is handed out
	query("SELECT hasched.set_mode('paused', 'bench: dispatcher step')", $node);
	wait_sql(60, "SELECT status = 'ok' FROM hasched.health() WHERE component = 'dispatcher'", $node)
	  or say('  the dispatcher did not report ok within 60 s');
	my $per = 1000;
	for (my $done = 0; $done < $N; $done += $per)
	{
		my $k = $N - $done < $per ? $N - $done : $per;
		query("SELECT count(*) FROM hasched.submit_many('bq', array_fill('$payload'::jsonb, ARRAY[$k]))", $node);
	}
	my $dpid = query("SELECT pid FROM pg_stat_activity WHERE backend_type = 'hasched dispatcher'", $node);
	my @c0 = $dpid ? proc_stat($dpid) : ();
	my $t0 = time;
	query("SELECT hasched.set_mode('normal', 'bench')", $node);
	wait_sql(600, "SELECT count(*) = $N FROM hasched.job WHERE queue = 'bq' AND state = 'dispatched'", $node)
	  or say('  not every job was dispatched within 600 s');
	my $wall = time - $t0;
	my ($first, $last, $n) = split /\|/, query(
		"SELECT extract(epoch FROM min(lease_until)), extract(epoch FROM max(lease_until)), count(*)"
		  . " FROM hasched.job WHERE queue = 'bq' AND state = 'dispatched'", $node);
	my $disp = ($last > $first) ? ($n - 1) / ($last - $first) : undef;
	my @c1 = $dpid ? proc_stat($dpid) : ();
	my $cpu_us = (@c0 && @c1 && $n) ? (($c1[11] + $c1[12]) - ($c0[11] + $c0[12])) / $HZ * 1e6 / $n : undef;
	say('  the dispatcher process used ' . f2($cpu_us) . ' us of CPU per job'
		  . (defined $cpu_us && $cpu_us > 0 ? ' (alone on a core: about ' . f0(1e6 / $cpu_us) . ' jobs/s)' : ''));
	say("  dispatcher: $n jobs dispatched, first to last confirm-and-mark " . f2($last - $first) . ' s: '
		  . f0($disp) . ' jobs/s (' . f2($wall) . ' s from the release to the last, polled)');
	$baseline->();
	my $base = @base ? (List::Util::sum(@base) / @base) : undef;
	node_stop($node, 'fast');
	$mq->stop;

	push @SQLS, '-- 10. dispatch: bench/amqp_publish.c 127.0.0.1 <port> bench.baseline quorum N B bytes (before and after);',
	  "SELECT hasched.set_mode('paused', ...); -- then submit_many('bq', ...) of N jobs in 1000s",
	  "SELECT hasched.set_mode('normal', 'bench'); -- then wait until every job of bq is dispatched",
	  "SELECT extract(epoch FROM min(lease_until)), extract(epoch FROM max(lease_until)), count(*) FROM hasched.job WHERE queue = 'bq' AND state = 'dispatched';";
	section("### 10. dispatcher vs a bare librabbitmq publisher ($N jobs, batch $B, quorum queues, one broker)\n\n",
		md_table([ 'publisher', 'msg/s', 'vs bare', 'target' ], 'lrrl',
			[ 'hasched dispatcher (read, publish, confirm, mark dispatched)', f0($disp), f2(ratio($disp, $base)), '>= 0.80x' ],
			[ 'bench/amqp_publish.c (publish, confirm), mean of ' . scalar(@base), f0($base), '1.00', '' ]),
		"\nThe dispatcher's rate counts from the first to the last job marked dispatched (each after its batch's confirms); ",
		"the bare publisher only publishes and waits for confirms, the dispatcher also reads the batch and commits the marks. ",
		"The dispatcher process used " . f2($cpu_us) . " us of CPU per job; load average at the end " . loadavg() . ".\n");
	target(figure => "dispatcher confirmed publishes/s / bare librabbitmq publisher (batch $B)",
		hasched => f0($disp), base => f0($base), ratio => ratio($disp, $base), min => 0.8);
	return;
}

# 9. A long executor run on a server of its own: hasched.job's table and
# index sizes and dead rows over BENCH_LONG_DRAIN_SECONDS.  All the work
# is done by hasched's background workers, as in production: a schedule
# '* * * * * *' whose SQL job submits BENCH_LONG_DRAIN_RATE no-op SQL jobs
# (submit_many), the executors run them, and the scheduler prunes finished
# jobs older than hasched.history_retention (BENCH_LONG_DRAIN_RETENTION s;
# the scheduler deletes at most 10,000 a minute, so the rate must stay well
# under 166 jobs/s for the table to stay bounded by design).  Whether
# autovacuum keeps up depends on the workers reporting their statistics.
sub step_long_drain
{
	my ($S, $rate, $every, $keep) = @C{qw(long_drain_seconds long_drain_rate long_drain_sample long_drain_retention)};
	header("9. long executor run: $S s, $rate jobs/s from a 1-second fan-out schedule, history_retention $keep s");
	my $node = node_primary('longdrain', conf => "hasched.history_retention = $keep\n");
	query("INSERT INTO hasched.queue (name, transport) VALUES ('noop', 'sql')", $node);
	wait_idle_executors($node) or say('  (no idle executor after 60 s)');
	my $fanout = "SELECT hasched.schedule('bench-fanout', '* * * * * *', 'noop', "
	  . "jsonb_build_object('sql', \$q\$SELECT cardinality(hasched.submit_many('noop', "
	  . "array_fill(jsonb_build_object('sql', 'SELECT 1'), ARRAY[$rate])))\$q\$), replace => true)";
	push @SQLS, "-- 9. long executor run, on a server of its own with hasched.history_retention = $keep",
	  "$fanout;   -- then sample every $every s for $S s",
	  "SELECT pg_relation_size('hasched.job'), pg_indexes_size('hasched.job'), n_live_tup, n_dead_tup, n_tup_upd, autovacuum_count FROM pg_stat_user_tables WHERE relid = 'hasched.job'::regclass;";
	my $t0 = time;
	my $sample = sub {
		my %s;
		@s{qw(table idx live dead ins upd del autovac rows waiting submitted)} = split /\|/, query(
			"SELECT pg_relation_size('hasched.job'), pg_indexes_size('hasched.job'), n_live_tup, n_dead_tup,
			        n_tup_ins, n_tup_upd, n_tup_del, autovacuum_count,
			        (SELECT count(*) FROM hasched.job),
			        (SELECT count(*) FROM hasched.job WHERE state IN ('scheduled', 'pending', 'failed')),
			        (SELECT coalesce(max(id), 0) FROM hasched.job)
			   FROM pg_stat_user_tables WHERE relid = 'hasched.job'::regclass", $node);
		$s{t} = time - $t0;
		say(sprintf('  t %4.0f s: table %6.0f kB, indexes %6.0f kB; rows %s (waiting %s); '
				  . 'n_live_tup %s, n_dead_tup %s, n_tup_upd %s, autovacuums %s; jobs submitted %s',
				$s{t}, $s{table} / 1024, $s{idx} / 1024, $s{rows}, $s{waiting},
				$s{live}, $s{dead}, $s{upd}, $s{autovac}, $s{submitted}));
		return \%s;
	};
	my @samples = ($sample->());
	say('  next run: ' . query($fanout, $node));
	while (time - $t0 < $S)
	{
		my $next = $t0 + $every * @samples;
		$next = $t0 + $S if $next > $t0 + $S;
		sleep($next - time) if $next > time;
		push @samples, $sample->();
	}
	query("SELECT hasched.unschedule('bench-fanout')", $node);
	my ($ok, $bad) = split /\|/, query("SELECT count(*) FILTER (WHERE state = 'succeeded'),
	        count(*) FILTER (WHERE state NOT IN ('succeeded', 'scheduled', 'pending', 'running'))
	   FROM hasched.job", $node);
	node_stop($node, 'fast');
	$node->clean_node unless $ENV{BENCH_KEEP_TMP};

	# Compared with the end: the sample in the middle of the run (a table
	# that grows without bound is about twice as big at the end), once the
	# table has filled: after the retention, a prune interval and a minute
	# of autovacuum (in a 600 s run the indexes still grew at 120 s, were
	# flat from 240 s).
	my $warm = $keep + 120;
	my $end = $samples[-1];
	my $mid = $S / 2 > $warm ? $S / 2 : $warm;
	my ($ref) = grep { $_->{t} >= $mid - 1 } @samples[ 0 .. $#samples - 1 ];
	my $ref_is = 'the middle of the run';
	if (!$ref)
	{
		$ref = $samples[ int(@samples / 2) ];
		$ref_is = "the middle sample: shorter than the warm-up of $warm s, the table still fills";
	}
	$R{long_drain} = { samples => \@samples, ref => $ref };
	section("### 9. long executor run: $S s on a server of its own (hasched.max_executors = $C{max_executors})\n\n",
		"A schedule '* * * * * *' whose SQL job submits $rate no-op SQL jobs (submit_many); the executors run them; ",
		"the scheduler prunes finished jobs older than hasched.history_retention = $keep s (at most 10,000 a minute). ",
		"No ordinary session writes to hasched.job: only the workers' statistics tell autovacuum about its dead rows. ",
		"Sizes from pg_relation_size / pg_indexes_size, counters from pg_stat_user_tables.\n\n",
		md_table([ 't, s', 'table kB', 'indexes kB', 'rows', 'waiting', 'n_live_tup', 'n_dead_tup',
				'n_tup_upd', 'autovacuums', 'jobs submitted' ], 'rrrrrrrrrr',
			map { [ f0($_->{t}), f0($_->{table} / 1024), f0($_->{idx} / 1024), @$_{qw(rows waiting live dead upd autovac submitted)} ] } @samples),
		sprintf("\nAt the end / at t = %.0f s (%s): table %s, indexes %s. ", $ref->{t}, $ref_is,
			f2(ratio($end->{table}, $ref->{table})), f2(ratio($end->{idx}, $ref->{idx}))),
		"Jobs in the table at the end: $ok succeeded, $bad neither succeeded nor waiting nor running.\n");
	target(figure => "long executor run, $S s at $rate jobs/s: hasched.job at t = " . f0($ref->{t}) . ' s -> the end',
		hasched => sprintf('table %s -> %s kB, indexes %s -> %s kB, n_dead_tup %s -> %s',
			f0($ref->{table} / 1024), f0($end->{table} / 1024), f0($ref->{idx} / 1024),
			f0($end->{idx} / 1024), na($ref->{dead}), na($end->{dead})),
		ratio => ratio($end->{table} + $end->{idx}, $ref->{table} + $ref->{idx}), max => 1.2,
		target => 'table + indexes bounded (<= 1.20x)',
		note => [ $ref->{t} < $warm - 1 ? "shorter than the warm-up of $warm s" : undef ]);
	return;
}

# ==========================================================================
# summary
# ==========================================================================
sub summary
{
	my ($facts, $elapsed) = @_;
	my $s = "\n## hasched bench summary ($STAMP)\n\n";
	$s .= "- command: `$INVOCATION` (or `make bench`), $elapsed s in all"
	  . ($QUICK ? '; BENCH_QUICK=1: a smoke run, short runs and small counts' : '') . "\n";
	$s .= "- $_\n" for @$facts;
	$s .= "- every pgbench run: -n -M prepared, -j $C{threads}; fsync and synchronous_commit on, so every commit waits for a WAL flush\n";
	$s .= "- server CPU: CPU time of all the bench server's processes (backends, hasched's workers, autovacuum, walwriter, ...) "
	  . "during the run, per job; it depends less on other load than throughput does\n";

	if (@TARGETS)
	{
		$s .= "\n### targets (ratios against baselines measured in this run)\n\n";
		my @rows = map {
			[ $_->{figure}, $_->{hasched}, $_->{base} // '',
				defined $_->{ratio} ? f2($_->{ratio}) : '',
				$_->{cpu} ? join(' / ', map { fus($_) } @{ $_->{cpu} }) . ' = ' . f2(ratio(@{ $_->{cpu} })) : '',
				$_->{target}, $_->{met} ]
		} @TARGETS;
		$s .= md_table([ 'figure', 'hasched', 'baseline (same run)', 'ratio',
				'server CPU us/job: hasched / baseline', 'target', 'met' ], 'lrrrrll', @rows);
	}
	$s .= "\n$_" for @SECTIONS;
	$s .= "\nBefore step 5 the server was restarted with track_commit_timestamp = on (for step 6); steps 1-4 ran without it.\n"
	  if $R{restarted};
	$s .= "\n### plans (auto_explain of one claim of 100 + complete, rolled back; files plans_*.txt)\n\n```\n$R{plans}```\n"
	  if $R{plans};
	$s .= "\n### exact pgbench commands (bench/ is this directory)\n\n```\n" . join("\n", @CMDS) . "\n```\n" if @CMDS;
	$s .= "\n### exact SQL of steps 5-9 (psql -X, as the superuser bench)\n\n```\n" . join("\n", @SQLS) . "\n```\n" if @SQLS;
	return $s;
}

sub machine_facts
{
	my ($model) = slurp('/proc/cpuinfo') =~ /^model name\s*:\s*(.*)$/m;
	my ($mem) = slurp('/proc/meminfo') =~ /^MemTotal:\s*(\d+)/m;
	chomp(my $kernel = `uname -r`);
	my $commit = $ENV{BENCH_COMMIT};
	if (!$commit)
	{
		chomp($commit = `git -C "$HERE" rev-parse --short HEAD 2>/dev/null` || 'unknown');
		$commit .= ' (+ uncommitted changes)'
		  if `git -C "$HERE" status --porcelain --untracked-files=no 2>/dev/null` ne '';
	}
	return (
		sprintf('machine: %s cores (%s), %.1f GiB RAM, kernel %s', scalar(() = slurp('/proc/cpuinfo') =~ /^processor\s*:/mg),
			$model // 'unknown', ($mem // 0) / 1024 / 1024, $kernel),
		"commit $commit");
}

sub loadavg { return join(' ', (split ' ', slurp('/proc/loadavg'))[0 .. 2]) }

# 10. hasched-worker running `true`, --concurrency BENCH_WORKER_CONCURRENCY:
# BENCH_WORKER_JOBS jobs per mode, queued before the worker starts, rate =
# jobs / (last finished_at - first started_at); the baseline, in the same
# run, is bench/forkexec.c forking, exec'ing and reaping `true` as many
# times, one at a time and with as many in flight as the worker's
# concurrency (measured before and after the worker runs: the mean).  Then
# the worker idles and BENCH_WORKER_LATENCY_JOBS jobs are submitted one per
# transaction, BENCH_LATENCY_GAP_MS apart: started_at - run_at (claim() in
# pull mode, woken by NOTIFY; start() after the dispatcher published and
# the broker delivered, in AMQP mode).  The server is restarted with
# hasched.amqp_url pointing at a broker of this step (HaschedRabbitMQ).
sub worker_start
{
	my ($name, $queue, @args) = @_;
	my $log = "$OUTDIR/worker_$name.log";
	my @cmd = ("$PGBIN/hasched-worker", '--db',
		'host=' . $NODE->host . ' port=' . $NODE->port . " dbname=$DB user=$DB",
		'--queue', $queue, '--log-file', $log, @args, '--', 'true');
	push @CMDS, join(' ', map { /[\s']/ ? "'$_'" : $_ } @cmd);
	my $pid = fork // die "bench: fork: $!\n";
	if ($pid == 0)
	{
		open STDIN, '<', '/dev/null';
		open STDOUT, '>>', $log;
		open STDERR, '>&', \*STDOUT;
		exec @cmd or POSIX::_exit(127);
	}
	return $pid;
}

sub worker_stop
{
	my ($pid) = @_;
	kill 'TERM', $pid;
	for (1 .. 300)
	{
		return if waitpid($pid, POSIX::WNOHANG()) == $pid;
		sleep 0.1;
	}
	kill 'KILL', $pid;
	waitpid($pid, 0);
	return;
}

sub forkexec_rate
{
	my ($bin, $n, $c) = @_;
	my $out = '';
	IPC::Run::run([ $bin, $n, $c, 'true' ], '>', \$out, '2>&1');
	chomp $out;
	return $out =~ /^[\d.]+$/ ? $out : undef;
}

# the broker's beam.smp in step 11 (its CPU is printed for the AMQP mode)
my $BROKER_PID;

sub worker_rate
{
	my ($name, $queue, $n, @args) = @_;
	my $batch = 1000;
	# what the steps before left (dead rows, finished jobs) is vacuumed
	# first: the server CPU below is this step's, not their autovacuum's
	vacuum_all();
	for (my $i = 0; $i < $n; $i += $batch)
	{
		my $k = $n - $i < $batch ? $n - $i : $batch;
		query("SELECT hasched.submit_many('$queue', array_fill('{}'::jsonb, ARRAY[$k]))");
	}
	query('CHECKPOINT');
	my $cpu0 = settled_cpu(0);
	my $by0 = server_cpu_by_proc();
	my $load0 = loadavg();
	my @b0 = $BROKER_PID ? proc_stat($BROKER_PID) : ();
	my $pid = worker_start($name, $queue, @args);
	# every 0.5 s: each poll is a psql and a new session (a few ms of CPU),
	# which every 0.1 s took 3-4% of the machine from the worker and its
	# commands (perf, 30,000 jobs), and counted as server CPU; the rate is
	# from the jobs' own times, so a later last poll does not change it
	wait_sql(600, "SELECT NOT " . jobs_left($queue), undef, 0.5);
	# the worker's own CPU (not its commands'): before it exits
	my @ws = proc_stat($pid);
	my $wticks = ($ws[11] // 0) + ($ws[12] // 0);
	worker_stop($pid);
	my %r;
	$r{load} = "$load0 -> " . loadavg();
	$r{wcpu} = cpu_us($wticks, $n);
	$r{scpu} = cpu_us(settled_cpu(0) - $cpu0, $n);
	$r{top} = top_cpu($by0, server_cpu_by_proc(), 4);
	if (@b0 && grep { $_ eq '--amqp' } @args)
	{
		my @b1 = proc_stat($BROKER_PID);
		$r{bcpu} = cpu_us(($b1[11] // 0) + ($b1[12] // 0) - $b0[11] - $b0[12], $n) if @b1;
	}
	@r{qw(n secs)} = split /\|/, query(
		"SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))
		   FROM hasched.job WHERE queue = '$queue' AND state = 'succeeded'");
	$r{rate} = $r{secs} ? $r{n} / $r{secs} : undef;
	$r{note} = $r{n} == $n ? '' : "only $r{n} of $n succeeded within 600 s";
	say(sprintf('  %-6s %s jobs in %s s: %s jobs/s; CPU per job: worker %s us, server %s us; load %s%s',
			$name, $r{n}, f2($r{secs}), f0($r{rate}), f0($r{wcpu}), f0($r{scpu}), $r{load},
			$r{note} ? " ($r{note})" : ''));
	say("         server CPU by process: $r{top}");
	say(sprintf('         the broker (beam.smp): %s us of CPU per job', f0($r{bcpu}))) if defined $r{bcpu};
	query("DELETE FROM hasched.job WHERE queue = '$queue'");
	return \%r;
}

sub worker_latency
{
	my ($name, $queue, $nl, $gap, @args) = @_;
	my $pid = worker_start("${name}_latency", $queue, '--concurrency', '4', @args);
	sleep 2;    # connected, listening or consuming
	my $submit = "SELECT hasched.submit('$queue', '{}') AS id \\gset";
	my $out = psql_script(join('', map { "$submit\n\\echo lat :id\nSELECT pg_sleep($gap / 1000.0);\n" } 1 .. $nl));
	my @ids = $out =~ /^lat (\d+)$/mg;
	my $ids = join(', ', @ids) || 'NULL';
	my $ok = wait_sql(60, "SELECT count(*) = " . scalar(@ids)
		  . " FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'");
	worker_stop($pid);
	my $p = percentiles('j.started_at - j.run_at',
		"FROM hasched.job j WHERE j.id IN ($ids) AND j.started_at IS NOT NULL");
	$p->{note} = $ok ? '' : 'not all succeeded within 60 s';
	spew("$OUTDIR/worker_latency_$name.txt", query(
		"SELECT id, round((extract(epoch FROM started_at - run_at) * 1000)::numeric, 2)
		   FROM hasched.job WHERE id IN ($ids) ORDER BY id") . "\n");
	say(sprintf('  %-6s submit -> start: n %s, p50 %s ms, p99 %s ms, max %s ms%s', $name,
			na($p->{n}), na($p->{p50}), na($p->{p99}), na($p->{max}), $p->{note} ? " ($p->{note})" : ''));
	return $p;
}

sub step_worker
{
	my ($N, $CC, $NL, $G) = @C{qw(worker_jobs worker_concurrency worker_latency_jobs latency_gap_ms)};
	header("10. hasched-worker running `true`: $N jobs per mode, --concurrency $CC; latency $NL jobs, $G ms apart");
	my $fe = "$TMP/forkexec";
	my $cc_out = '';
	IPC::Run::run([ 'cc', '-O2', '-o', $fe, "$HERE/forkexec.c" ], '>', \$cc_out, '2>&1')
	  or do { say("  cannot build bench/forkexec.c: $cc_out"); return };
	push @CMDS, "cc -O2 -o forkexec bench/forkexec.c; forkexec $N 1 true; forkexec $N $CC true";

	require HaschedRabbitMQ;
	my $mq = HaschedRabbitMQ->new('bench');
	my $mq_secs = $mq->start;
	my $url = $mq->url;
	$BROKER_PID = $mq->{pid};
	say(sprintf('  broker %s (started in %.1f s)', $url, $mq_secs // 0));
	$NODE->append_conf('postgresql.conf', $mq->hasched_conf . "hasched.amqp_queue_type = 'classic'\n");
	node_restart($NODE);
	query(q{INSERT INTO hasched.queue (name, lease) VALUES ('wpull', '60 seconds');
	        INSERT INTO hasched.queue (name, transport, lease) VALUES ('wamqp', 'amqp', '60 seconds')});
	my @amqp = ('--amqp', $url, '--amqp-queue-type', 'classic');

	my %w;
	my @f1 = (forkexec_rate($fe, $N, 1));
	my @fc = (forkexec_rate($fe, $N, $CC));
	$w{pull} = worker_rate('pull', 'wpull', $N, '--concurrency', $CC);
	my $APF = $C{worker_amqp_prefetch};
	$w{amqp} = worker_rate('amqp', 'wamqp', $N, '--concurrency', $CC, '--prefetch', $APF, @amqp);
	push @f1, forkexec_rate($fe, $N, 1);
	push @fc, forkexec_rate($fe, $N, $CC);
	my $mean = sub { my @v = grep { defined } @_; @v ? (eval { my $t = 0; $t += $_ for @v; $t }) / @v : undef };
	$w{fork1} = $mean->(@f1);
	$w{forkc} = $mean->(@fc);
	say(sprintf('  fork + exec + wait of true: %s/s one at a time (%s), %s/s with %d in flight (%s)',
			f0($w{fork1}), join(', ', map { f0($_) } @f1), f0($w{forkc}), $CC, join(', ', map { f0($_) } @fc)));
	$w{lat_pull} = worker_latency('pull', 'wpull', $NL, $G);
	$w{lat_amqp} = worker_latency('amqp', 'wamqp', $NL, $G, @amqp);
	$mq->stop;
	$R{worker} = \%w;

	my $ratio = sub { my ($a, $b) = @_; (defined $a && $b) ? sprintf('%.2f', $a / $b) : undef };
	my @rows = (
		[ 'pull (batched complete + claim, one transaction, sent without waiting)', f0($w{pull}{rate}), f0($w{forkc}),
		  $ratio->($w{pull}{rate}, $w{forkc}), f0($w{fork1}), $ratio->($w{pull}{rate}, $w{fork1}),
		  f0($w{pull}{wcpu}), f0($w{pull}{scpu}), $w{pull}{load} ],
		[ "AMQP (dispatcher, broker, start() + batched complete; --prefetch $APF)", f0($w{amqp}{rate}), f0($w{forkc}),
		  $ratio->($w{amqp}{rate}, $w{forkc}), f0($w{fork1}), $ratio->($w{amqp}{rate}, $w{fork1}),
		  f0($w{amqp}{wcpu}), f0($w{amqp}{scpu}), $w{amqp}{load} ]);
	my @lrows = map {
		my ($label, $p, $tgt) = @$_;
		[ $label, $p->{n}, $p->{p50}, $p->{p90}, $p->{p99}, $p->{max}, $tgt ]
	  } ([ 'pull mode, woken by NOTIFY', $w{lat_pull}, 'p99 <= 10 ms' ],
		[ 'AMQP: dispatcher -> broker -> worker -> start()', $w{lat_amqp}, '' ]);
	section("### 10. hasched-worker running `true` (--concurrency $CC, $N jobs per mode)\n\n",
		md_table([ 'mode', 'jobs/s', "fork+exec/s, $CC in flight", 'ratio', 'fork+exec/s, one at a time', 'ratio',
				'worker CPU us/job', 'server CPU us/job', 'load average (1 min)' ],
			'lrrrrrrrl', @rows),
		"\njobs/s: jobs / (last finished_at - first started_at), all queued before the worker starts ",
		"(in AMQP mode the dispatcher publishes them meanwhile). Baseline: bench/forkexec.c, fork + execvp + wait of `true`, ",
		"the mean of a run before and after the worker's (fsync on: every report batch is a WAL flush). ",
		"Worker CPU: the hasched-worker process's own (not its commands'); server CPU: all of the server's processes ",
		"(the dispatcher's too in AMQP mode) from before the worker starts until its session is gone.\n\n",
		"Submit -> start with the worker idle (--concurrency 4), $NL jobs one per transaction, $G ms apart:\n\n",
		md_table([ 'mode', 'n', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'target' ], 'lrrrrrl', @lrows),
		"\nWorker logs: worker_*.log; per job: worker_latency_*.txt.\n");
	target(figure => "hasched-worker pull, `true`: jobs/s / fork+exec/s ($CC in flight)",
		hasched => f0($w{pull}{rate}), base => f0($w{forkc}), ratio => $ratio->($w{pull}{rate}, $w{forkc}),
		min => 0.8, note => [ $w{pull}{note} ]);
	target(figure => "hasched-worker AMQP, `true`: jobs/s / fork+exec/s ($CC in flight)",
		hasched => f0($w{amqp}{rate}), base => f0($w{forkc}), ratio => $ratio->($w{amqp}{rate}, $w{forkc}),
		min => 0.8, note => [ $w{amqp}{note} ]);
	target(figure => "hasched-worker pull: submit -> start, idle ($NL jobs): p99 (p50)",
		hasched => na($w{lat_pull}{p99}) . ' ms (' . na($w{lat_pull}{p50}) . ')',
		value => $w{lat_pull}{p99}, value_max => 10, target => 'p99 <= 10 ms', note => [ $w{lat_pull}{note} ]);
	return;
}

# 12. The health listener (src/workers/health_listener.c) on the bench
# server: wrk with BENCH_HEALTH_CONNECTIONS keep-alive connections on GET
# /health and GET /metrics, alone, then while the submit benchmark of step
# 1 runs (their p99); then the submit benchmark with /health and /metrics
# scraped once a second (as Prometheus and a load balancer would) against
# the same without, BENCH_HEALTH_ROUNDS alternating pairs, the ratio of the
# sums.
my $HEALTH_PORT = PostgreSQL::Test::Cluster::get_free_port();

# wrk_run(NAME, PATH, SECONDS [, start => 1]): wrk's figures (rps, p50, p99
# in ms, non2xx, errors); with start => 1 it returns the running harness
# and a ref to its output instead (finish with wrk_parse)
sub wrk_run
{
	my ($name, $path, $secs, %o) = @_;
	my $c = $C{health_connections};
	my @cmd = ('wrk', '-t', $C{threads}, '-c', $c, '-d', "${secs}s", '--latency',
		"http://127.0.0.1:$HEALTH_PORT$path");
	push @CMDS, join(' ', @cmd) . "   # $name";
	my $output = '';
	my $cpu0 = listener_cpu();
	if ($o{start})
	{
		my $h = IPC::Run::start(\@cmd, '>', \$output, '2>&1');
		return ($h, \$output, $cpu0);
	}
	IPC::Run::run(\@cmd, '>', \$output, '2>&1');
	return wrk_parse($name, $output, $cpu0);
}

# CPU ticks used so far by the health listener process
sub listener_cpu
{
	my ($pid) = query(q{SELECT detail FROM hasched.health() WHERE component = 'health listener'})
	  =~ /pid (\d+)/;
	return undef unless $pid;
	my @s = proc_stat($pid);
	return ($s[11] // 0) + ($s[12] // 0);
}

sub wrk_ms
{
	my ($v, $unit) = @_;
	return $unit eq 'us' ? $v / 1000 : $unit eq 's' ? $v * 1000 : $unit eq 'm' ? $v * 60000 : $v;
}

sub wrk_parse
{
	my ($name, $output, $cpu0) = @_;
	my $cpu1 = listener_cpu();
	spew("$OUTDIR/$name.txt", $output);
	my %r;
	($r{rps}) = $output =~ /^Requests\/sec:\s+([\d.]+)/m;
	my ($n) = $output =~ /^\s*(\d+) requests in /m;
	$r{cpu} = cpu_us($cpu1 - $cpu0, $n) if defined $cpu0 && defined $cpu1 && $n;
	$r{p50} = wrk_ms($1, $2) if $output =~ /^\s+50%\s+([\d.]+)(us|ms|s|m)$/m;
	$r{p99} = wrk_ms($1, $2) if $output =~ /^\s+99%\s+([\d.]+)(us|ms|s|m)$/m;
	($r{non2xx}) = $output =~ /Non-2xx or 3xx responses: (\d+)/;
	($r{errors}) = $output =~ /Socket errors: (.*)$/m;
	$r{note} = 'wrk failed' unless defined $r{rps};
	# say why /health was not 200
	if ($r{non2xx})
	{
		my $why = query(q{SELECT string_agg(component || ': ' || status || ': ' || detail, '; ')
		                    FROM hasched.health() WHERE status <> 'ok'});
		say("  $name: health now: $why");
	}
	say(sprintf('  %-28s %s requests/s  p50 %s ms  p99 %s ms  listener CPU %s us/request%s%s', $name, f0($r{rps}),
			f2($r{p50}), f2($r{p99}), fus($r{cpu}), $r{non2xx} ? "  non-2xx $r{non2xx}" : '',
			$r{errors} ? "  socket errors: $r{errors}" : ''));
	return \%r;
}

# A child that GETs /health and /metrics once a second until killed.
sub start_scraper
{
	my $pid = fork();
	fatal("fork: $!") unless defined $pid;
	return $pid if $pid;
	$SIG{TERM} = sub { POSIX::_exit(0) };
	while (1)
	{
		my $t = time;
		eval { HaschedCluster::http_get($HEALTH_PORT, '/metrics'); 1 };
		eval { HaschedCluster::http_get($HEALTH_PORT, '/health'); 1 };
		my $rest = 1 - (time - $t);
		sleep $rest if $rest > 0;
	}
}

sub step_health
{
	my ($T, $c, $n) = ($C{seconds}, $C{submit_clients}, $C{health_rounds});
	header("12. health listener: wrk -c $C{health_connections} on /health and /metrics; submit while scraped");
	if (system('command -v wrk >/dev/null 2>&1') != 0)
	{
		say('  wrk is not installed (scripts/deps.d/health.list): step skipped');
		return;
	}
	my %w;
	# the scheduler up and counting (it restarts once when the bench database is created)
	wait_sql(30, q{SELECT bool_and(status <> 'failed') AND bool_or(component = 'backlog' AND status = 'ok')
	                 FROM hasched.health()})
	  or say('  health() not ok after 30 s: ' . query(q{SELECT string_agg(component || ': ' || detail, '; ')
	                                                   FROM hasched.health() WHERE status <> 'ok'}));
	for my $path ('/health', '/metrics')
	{
		(my $p = $path) =~ s{/}{};
		$w{"alone_$p"} = wrk_run("wrk_${p}_alone", $path, $T);
	}
	# under the submit benchmark: wrk and pgbench side by side
	for my $path ('/health', '/metrics')
	{
		(my $p = $path) =~ s{/}{};
		my ($h, $out, $cpu0) = wrk_run("wrk_${p}_under_submit", $path, $T, start => 1);
		$w{"submit_$p"} = pgbench_run("submit_under_wrk_$p", script => 'submit.pgbench', clients => $c);
		$h->finish;
		$w{"under_$p"} = wrk_parse("wrk_${p}_under_submit", $$out, $cpu0);
	}
	# scraped once a second / not scraped, in the order ABBA ABBA ... (the
	# job table grows run after run, and throughput drifts with it: the
	# order cancels a steady drift)
	my ($with, $without, $cpu_with, $cpu_without) = (0, 0, 0, 0);
	my @pairs;
	my $scraped = sub {
		my ($i) = @_;
		my $pid = start_scraper();
		my $on = pgbench_run("submit_scraped_$i", script => 'submit.pgbench', clients => $c);
		kill 'TERM', $pid;
		waitpid($pid, 0);
		return $on;
	};
	for my $i (1 .. $n)
	{
		my ($off, $on);
		if ($i % 2)
		{
			$off = pgbench_run("submit_unscraped_$i", script => 'submit.pgbench', clients => $c);
			$on = $scraped->($i);
		}
		else
		{
			$on = $scraped->($i);
			$off = pgbench_run("submit_unscraped_$i", script => 'submit.pgbench', clients => $c);
		}
		push @pairs, [ $off, $on ];
		$without += $off->{tps} // 0;
		$with += $on->{tps} // 0;
		$cpu_without += $off->{cpu} // 0;
		$cpu_with += $on->{cpu} // 0;
	}
	my $ratio = ratio($with, $without);
	my @notes = map { ($_->[0]{note}, $_->[1]{note}) } @pairs;

	my @rows;
	for my $p (qw(health metrics))
	{
		my ($a, $u) = ($w{"alone_$p"}, $w{"under_$p"});
		push @rows, [ "GET /$p", f0($a->{rps}), f2($a->{p50}), f2($a->{p99}), fus($a->{cpu}),
			f0($u->{rps}), f2($u->{p99}), f0($w{"submit_$p"}{tps}),
			join(' ', grep { $_ } map { $_->{non2xx} ? "non-2xx $_->{non2xx}" : $_->{note} } $a, $u) ];
	}
	section("### 12. health listener (wrk -c $C{health_connections} -t $C{threads}, $T s each; submit -c $c)\n\n",
		md_table([ 'request', 'alone: req/s', 'p50 ms', 'p99 ms', 'listener CPU us/request',
				'under submit: req/s', 'p99 ms', 'submit tps meanwhile', 'note' ], 'lrrrrrrrl', @rows),
		"\nSubmit throughput with /metrics and /health scraped once a second, against without, $n pair(s) of $T s (order ABBA): "
		  . join(', ', map { sprintf('%s / %s tps (%s / %s us CPU per job)', f0($_->[1]{tps}), f0($_->[0]{tps}),
					fus($_->[1]{cpu}), fus($_->[0]{cpu})) } @pairs)
		  . sprintf("; ratio of the sums %s (server CPU per job %s).\n", f2($ratio),
			f2(ratio($cpu_with, $cpu_without))));
	target(figure => 'submit tps, listener scraped every second / not scraped',
		hasched => f0($with / ($n || 1)), base => f0($without / ($n || 1)),
		ratio => $ratio, min => 0.98, cpu => [ $cpu_with / ($n || 1), $cpu_without / ($n || 1) ],
		note => \@notes);
	return;
}

# ==========================================================================
# main
# ==========================================================================
sub main
{
	my $t_start = time;
	my $load0 = loadavg();
	header("hasched bench $STAMP");
	say("command: $INVOCATION");
	say("raw output: $OUTDIR");
	my @facts = machine_facts();

	header('server');
	$NODE = node_primary('main', conf => "hasched.health_port = $HEALTH_PORT\n");
	say("server pid $PID{main}, socket " . $NODE->host . ", port " . $NODE->port . ', data ' . $NODE->data_dir);
	my $pgver = query('SELECT version()');
	my $extver = query("SELECT extversion FROM pg_extension WHERE extname = 'hasched'");
	my $settings = query("SELECT string_agg(name || '=' || setting || coalesce(unit, ''), ', ' ORDER BY name)
	                    FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers',
	                      'max_connections', 'autovacuum', 'wal_sync_method', 'full_page_writes', 'wal_level',
	                      'hasched.enforce_quotas', 'hasched.submit_synchronous_commit',
	                      'hasched.claim_rewind_interval', 'hasched.database',
	                      'hasched.max_executors', 'hasched.min_executors', 'hasched.scheduler_naptime',
	                      'max_worker_processes')");
	say($pgver);
	say("hasched $extver; $settings");
	$HAS_MANY = query("SELECT to_regprocedure('hasched.complete(bigint[],text[],jsonb[])') IS NOT NULL") eq 't';

	step_submit() if step_on('submit');
	step_submit_many() if step_on('submit_many');
	step_claim() if step_on('claim');
	step_snapshot() if step_on('snapshot');
	prepare_executor_steps() if grep { step_on($_) } qw(drain latency cron);
	step_drain() if step_on('drain');
	step_latency() if step_on('latency');
	step_cron() if step_on('cron');
	step_health() if step_on('health');
	step_failover() if step_on('failover');
	step_long_drain() if step_on('long_drain');
	step_dispatch() if step_on('dispatch');
	step_worker() if step_on('worker');
	node_stop($NODE, 'fast');

	push @facts, "load average (1, 5, 15 min) at the start $load0, at the end " . loadavg()
	  . ': other work on the machine shows in the figures',
	  $pgver, "hasched $extver", "server: $settings";
	my $summary = summary(\@facts, sprintf('%.0f', time - $t_start));
	spew("$OUTDIR/summary.md", $summary);
	out($summary);
	return;
}

# Stop every server by its pid on any exit; keep the servers' logs.
END
{
	my $rc = $?;
	stop_everything();
	if (defined $OUTDIR && -d $OUTDIR)
	{
		for my $log (glob("$PostgreSQL::Test::Utils::log_path/*"))
		{
			(my $base = $log) =~ s{.*/}{};
			copy($log, "$OUTDIR/$base");
		}
	}
	print $TTY_ERR "bench: the server harness gave up; its log: $OUTDIR/"
	  . ($PostgreSQL::Test::Utils::test_logfile =~ s{.*/}{}r) . "\n"
	  if $rc == 255;
	if ($ENV{BENCH_KEEP_TMP})
	{
		print $TTY "bench: kept $TMP\n";
		$ENV{PG_TEST_NOCLEAN} = 1;
	}
	elsif (!%PID)
	{
		rmtree($TMP);    # data directories, the harness's logs (copied above)
	}
	$? = $rc;
}

$SIG{INT}  = sub { print $TTY_ERR "bench: interrupted\n"; exit 130 };
$SIG{TERM} = sub { print $TTY_ERR "bench: terminated\n"; exit 143 };
$SIG{HUP}  = sub { exit 129 };
$SIG{__WARN__} = sub { print $TTY_ERR "bench: warning: @_"; print $RUNLOG "warning: @_" };
# Test::More's notes (from BackgroundPsql) go to the harness log, not here
open(my $NOTES, '>>', "$PostgreSQL::Test::Utils::log_path/bench_harness_notes.log")
  or die "bench: notes log: $!\n";
Test::More->builder->output($NOTES);
Test::More->builder->todo_output($NOTES);

eval { main(); 1 } or do {
	my $err = $@;
	print $TTY_ERR "bench: error: $err";
	print $RUNLOG "bench: error: $err";
	exit 1;
};
exit 0;
