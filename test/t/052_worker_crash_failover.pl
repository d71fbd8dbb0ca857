
# Copyright: hasched contributors
#
# 052_worker_crash_failover.pl: hasched-worker when things die.
#
#   - submit -> start latency in pull mode, idle: woken by NOTIFY, and with
#     polling only for comparison (printed with diag; not asserted);
#   - a worker killed with SIGKILL mid-job: its command dies with it; the job
#     runs again on another worker after the lease expired, and its result is
#     recorded once (attempt 2, one lease_expired run row);
#   - a primary failover while a job runs: the worker, given both servers and
#     target_session_attrs=read-write, reconnects to the promoted standby
#     (its breaker probing until the promotion), records the running job's
#     success there with its lease token, and takes new jobs (LISTEN again).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/052_worker_crash_failover.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedWorker;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

# ---------------------------------------------------------------------------
# the program and how to run it
# ---------------------------------------------------------------------------
my $bin = worker_bin();
ok(-x $bin, "the hasched-worker program is built ($bin)");
my $tmp = worker_tmp();

# ---------------------------------------------------------------------------
# primary and standby
# ---------------------------------------------------------------------------
my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => "hasched.scheduler_naptime = '200ms'\n");
$primary->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, lease) VALUES ('fast', '30 seconds');
	INSERT INTO hasched.queue (name, lease) VALUES ('polled', '30 seconds');
	INSERT INTO hasched.queue (name, lease, backoff_base, backoff_max)
	     VALUES ('crash', '2 seconds', '100 milliseconds', '100 milliseconds');
	INSERT INTO hasched.queue (name, lease) VALUES ('ha', '20 seconds');
});
my $standby = HaschedCluster->standby($primary, 'standby');
my $host = $primary->host;
my $db1 = "host=$host port=" . $primary->port . ' dbname=postgres user=wrk';

my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
echo "start \$HASCHED_JOB_ID \$HASCHED_ATTEMPT \$\$" >> "$tmp/starts.\$HASCHED_QUEUE"
case "\$HASCHED_QUEUE" in
crash) [ "\$HASCHED_ATTEMPT" = 1 ] && sleep 300 ;;
ha) sleep 3 ;;
esac
printf '{"attempt": %s}\\n' "\$HASCHED_ATTEMPT"
EOS
close $fh;
chmod 0755, $script;

# ---------------------------------------------------------------------------
# submit -> start latency, idle
# ---------------------------------------------------------------------------
sub latency
{
	my ($queue, $n, $gap_us) = @_;
	my $s = $primary->background_psql('postgres');
	for (1 .. $n)
	{
		$s->query_safe("SELECT hasched.submit('$queue', '{}')");
		usleep($gap_us);
	}
	$s->quit;
	$primary->poll_within(60,
		"SELECT count(*) = $n FROM hasched.job WHERE queue = '$queue' AND state = 'succeeded'")
	  or return undef;
	return $primary->query(
		"SELECT round((1000 * extract(epoch FROM percentile_cont(0.5) WITHIN GROUP (ORDER BY started_at - created_at)))::numeric, 2)"
		  . " || ' ' || round((1000 * extract(epoch FROM percentile_cont(0.99) WITHIN GROUP (ORDER BY started_at - created_at)))::numeric, 2)"
		  . " FROM hasched.job WHERE queue = '$queue'");
}

my $w = start_worker(db => $db1, queue => 'fast', cmd => ['true']);
ok(within(30, sub { slurp_log($w) =~ /listening on channel/ }), 'the worker listens');
my $lat = latency('fast', 200, 20_000);
ok(defined $lat, '200 jobs submitted one by one ran');
my ($p50, $p99) = split / /, $lat // '0 0';
diag("submit -> start, pull mode woken by NOTIFY, idle worker, 200 jobs: p50 $p50 ms, p99 $p99 ms");
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

$w = start_worker(db => $db1, queue => 'polled', args => [ '--no-listen', '--poll-interval', '0.5' ], cmd => ['true']);
$lat = latency('polled', 40, 20_000);
ok(defined $lat, '40 jobs ran with polling only');
($p50, $p99) = split / /, $lat // '0 0';
diag("submit -> start, pull mode polling every 0.5 s (--no-listen), 40 jobs: p50 $p50 ms, p99 $p99 ms");
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# a worker killed mid-job
# ---------------------------------------------------------------------------
$w = start_worker(db => $db1, queue => 'crash', cmd => [$script]);
my $id = $primary->query(q{SELECT hasched.submit('crash', '{}')});
ok(within(30, sub { -f "$tmp/starts.crash" && slurp_file("$tmp/starts.crash") =~ /^start $id 1 (\d+)$/m }),
	'the job\'s first attempt runs');
my ($cmd_pid) = slurp_file("$tmp/starts.crash") =~ /^start $id 1 (\d+)$/m;
kill 'KILL', $w->{pid};
waitpid($w->{pid}, 0);
forget_worker($w);
ok(within(10, sub { !-e "/proc/$cmd_pid" || slurp_file("/proc/$cmd_pid/stat") =~ /^\d+ \(.*\) Z / }),
	'the command died with its worker');
my $w2 = start_worker(db => $db1, queue => 'crash', args => [ '--poll-interval', '0.2' ], cmd => [$script]);
ok($primary->wait_state($id, 'succeeded'), 'the job succeeds on another worker after its lease expired');
is($primary->job($id, q{attempt || ' ' || result::text}), '2 {"attempt": 2}', 'in its second attempt, whose result is recorded');
like($primary->runs_of($id), qr/^1:lease_expired:lease expired at [^\n]+$/,
	'the first attempt is one run row: lease_expired');
my @starts = grep { /^start $id / } split /\n/, slurp_file("$tmp/starts.crash");
is(scalar @starts, 2, 'the command ran twice, once per attempt');
kill 'TERM', $w2->{pid};
is(wait_exit($w2, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# a failover while a job runs
# ---------------------------------------------------------------------------
my $dbs = "host=$host,$host port=" . $primary->port . ',' . $standby->port
  . ' dbname=postgres user=wrk target_session_attrs=read-write connect_timeout=2';
$w = start_worker(db => $dbs, queue => 'ha', cmd => [$script]);
$id = $primary->query(q{SELECT hasched.submit('ha', '{}')});
ok($primary->wait_state($id, 'running'), 'a job runs through the multi-host connection');
$primary->wait_for_catchup($standby);
$primary->stop('immediate');
usleep(500_000);
$standby->promote;
ok($standby->wait_state($id, 'succeeded'), 'its success is recorded on the promoted standby');
is($standby->job($id, q{attempt || ' ' || result::text}), '1 {"attempt": 1}',
	'by the first attempt, with its lease token: the lease outlived the failover');
my $id2 = $standby->query(q{SELECT hasched.submit('ha', '{}')});
ok($standby->wait_state($id2, 'succeeded'), 'new jobs on the new primary run');
my $log = slurp_log($w);
like($log, qr/database circuit breaker closed -> open/, 'the worker\'s breaker opened while no primary was up');
like($log, qr/connected to the database \(server [^,]+, port @{[ $standby->port ]}\)/,
	'then it connected to the promoted standby');
my $listens = () = $log =~ /listening on channel "hasched\.ha"/g;
is($listens, 2, 'and listened again there');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

done_testing();
