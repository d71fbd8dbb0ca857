
# Copyright: hasched contributors
#
# 087_worker_prefetch.pl: hasched-worker's --prefetch in pull mode (jobs
# claimed ahead of a free slot, so that the claim sent while the reports
# commit finds the next jobs waiting).
#
#   - short jobs (0.4 s, --concurrency 1 --prefetch 3): more jobs are
#     running in the database than commands run (claimed ahead), never
#     more than 1 + 3, never more than one command at once; the jobs that
#     wait longer than their queue's 1 s lease keep it (heartbeats): each
#     succeeds at attempt 1, no run row;
#   - long jobs (1.5 s, above the 1 s bound on the average run time): the
#     worker claims nothing ahead, never more than one running job;
#   - across a restart of the server (reports and claims fail, the worker
#     reconnects): never more than one command at once, every job done;
#   - a second SIGTERM fails the jobs claimed ahead at once ("the worker
#     stopped before starting the command"), so they are retried instead
#     of waiting for their lease; --prefetch 0 claims nothing ahead;
#   - --prefetch with a bad value: EX_USAGE.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/087_worker_prefetch.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedWorker;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $bin = worker_bin();
my $tmp = worker_tmp();

my $node = HaschedCluster->primary('main', conf => "hasched.scheduler_naptime = '200ms'\n");
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, lease) VALUES ('ahead', '1 second');
	INSERT INTO hasched.queue (name, lease) VALUES ('long', '10 seconds');
	INSERT INTO hasched.queue (name, lease) VALUES ('back', '30 seconds');
	INSERT INTO hasched.queue (name, lease, backoff_base, backoff_max)
	     VALUES ('stop', '60 seconds', '1 hour', '1 hour');
	INSERT INTO hasched.queue (name, lease) VALUES ('none', '10 seconds');
});
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';

# The command: sleeps for the payload's "secs", counting the commands at once.
mkdir "$tmp/conc" or die;
my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
payload=\$(cat)
secs=\$(printf '%s' "\$payload" | sed -n 's/.*"secs": *\\([0-9.]*\\).*/\\1/p')
touch "$tmp/conc/\$\$"
ls "$tmp/conc" | wc -l >> "$tmp/conc.\$HASCHED_QUEUE"
sleep "\${secs:-0}"
rm -f "$tmp/conc/\$\$"
EOS
close $fh;
chmod 0755, $script;

sub submit
{
	my ($queue, $n, $secs) = @_;
	return $node->query(
		"SELECT string_agg(id::text, ',') FROM unnest(hasched.submit_many('$queue',
		   ARRAY(SELECT '{\"secs\": $secs}'::jsonb FROM generate_series(1, $n)))) id");
}

# The most jobs of $queue running at once in the database, sampled every
# 50 ms until &$done.
sub max_running
{
	my ($queue, $secs, $done) = @_;
	my $max = 0;
	my $end = time + $secs;
	while (time < $end)
	{
		my $n = $node->query("SELECT count(*) FROM hasched.job WHERE queue = '$queue' AND state = 'running'");
		$max = $n if $n > $max;
		last if $done->();
		usleep(50_000);
	}
	return $max;
}

sub counts
{
	my ($queue) = @_;
	return -f "$tmp/conc.$queue" ? split /\n/, slurp_file("$tmp/conc.$queue") : ();
}

# ---------------------------------------------------------------------------
# bad values
# ---------------------------------------------------------------------------
my ($code, $out, $err) = run_worker('--db', $db, '--queue', 'ahead', '--prefetch', '-1', '--', $script);
is($code, 64, '--prefetch -1: EX_USAGE');
like($err, qr/--prefetch must be an integer from 0 to 1024, not "-1"/, 'and the message gives the range');
($code, $out, $err) = run_worker('--help');
like($out, qr/--prefetch N/, '--help describes --prefetch');

# ---------------------------------------------------------------------------
# short jobs: claimed ahead, their leases kept while they wait
# ---------------------------------------------------------------------------
my $ids = submit('ahead', 12, 0.4);
my $w = start_worker(db => $db, queue => 'ahead', args => [ '--concurrency', '1', '--prefetch', '3' ],
	cmd => [$script]);
my $done = sub {
	$node->query("SELECT count(*) = 12 FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'") eq 't';
};
my $max = max_running('ahead', 60, $done);
ok($done->(), '12 jobs of 0.4 s succeed with --concurrency 1 --prefetch 3');
cmp_ok($max, '>', 1, "jobs were claimed ahead of a free slot (up to $max running in the database)");
cmp_ok($max, '<=', 4, "never more than --concurrency + --prefetch claimed ($max)");
my @c = counts('ahead');
is(scalar(grep { $_ > 1 } @c), 0, 'never more than one command at once (' . join(' ', @c) . ')');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($ids) AND attempt <> 1"), '0',
	'each ran at attempt 1: the jobs waiting for a slot longer than the 1 s lease kept it');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($ids)"), '0',
	'no attempt ended (no lease expired)');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: exit 0');

# ---------------------------------------------------------------------------
# long jobs: nothing claimed ahead
# ---------------------------------------------------------------------------
$ids = submit('long', 3, 1.5);
$w = start_worker(db => $db, queue => 'long', args => [ '--concurrency', '1', '--prefetch', '3' ],
	cmd => [$script]);
$done = sub {
	$node->query("SELECT count(*) = 3 FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'") eq 't';
};
$max = max_running('long', 60, $done);
ok($done->(), '3 jobs of 1.5 s succeed');
is($max, 1, 'jobs longer than 1 s on average: none claimed ahead (one running at a time)');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: exit 0');

# ---------------------------------------------------------------------------
# the server restarted while jobs are claimed ahead
# ---------------------------------------------------------------------------
$ids = submit('back', 30, 0.2);
$w = start_worker(db => $db, queue => 'back', args => [ '--concurrency', '1', '--prefetch', '3' ],
	cmd => [$script]);
ok($node->poll_within(60, "SELECT count(*) >= 4 FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'"),
	'short jobs run (their average run time is known)');
$node->restart;
$done = sub {
	$node->query("SELECT count(*) = 30 FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'") eq 't';
};
ok(within(120, $done), '30 jobs succeed across a restart of the server');
like(slurp_log($w), qr/connected to the database.*connected to the database/s, 'the worker reconnected');
@c = counts('back');
is(scalar(grep { $_ > 1 } @c), 0, 'never more than one command at once, after the reconnect too (' . scalar(@c) . ' samples)');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: exit 0');

# ---------------------------------------------------------------------------
# a second SIGTERM: the jobs claimed ahead fail at once and are retried
# ---------------------------------------------------------------------------
my $quick = submit('stop', 3, 0.05);
my $slow = submit('stop', 6, 300);
$w = start_worker(db => $db, queue => 'stop', args => [ '--concurrency', '1', '--prefetch', '3' ],
	cmd => [$script]);
ok($node->poll_within(60,
		"SELECT count(*) = 3 FROM hasched.job WHERE id IN ($quick) AND state = 'succeeded'"
		  . " AND (SELECT count(*) FROM hasched.job WHERE id IN ($slow) AND state = 'running') = 4"),
	'after 3 quick jobs: one slow job runs and 3 wait, claimed ahead');
kill 'TERM', $w->{pid};
ok(within(10, sub { slurp_log($w) =~ /SIGTERM: taking no more jobs/ }), 'first SIGTERM: draining');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'second SIGTERM: the running command killed, everything reported, exit 0');
is($node->query(
		"SELECT count(*) FROM hasched.job_run WHERE job_id IN ($slow)"
		  . " AND error LIKE '%the worker stopped before starting the command%'"),
	'3', 'the 3 jobs claimed ahead failed with "the worker stopped before starting the command"');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($slow) AND state = 'running'"), '0',
	'no job is left running until its lease ends');

# ---------------------------------------------------------------------------
# --prefetch 0
# ---------------------------------------------------------------------------
$ids = submit('none', 10, 0.2);
$w = start_worker(db => $db, queue => 'none', args => [ '--concurrency', '1', '--prefetch', '0' ],
	cmd => [$script]);
$done = sub {
	$node->query("SELECT count(*) = 10 FROM hasched.job WHERE id IN ($ids) AND state = 'succeeded'") eq 't';
};
$max = max_running('none', 60, $done);
ok($done->(), '10 jobs of 0.2 s succeed with --prefetch 0');
is($max, 1, '--prefetch 0: one job running at a time');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: exit 0');

$node->stop;
done_testing();
