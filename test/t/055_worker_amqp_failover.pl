
# Copyright: hasched contributors
#
# 055_worker_amqp_failover.pl: a primary failover while jobs of an amqp queue
# are dispatched and running (primary + streaming standby + a real RabbitMQ
# broker, hasched's dispatcher on whichever is primary).
#
#   - hasched-worker --amqp, given both servers with
#     target_session_attrs=read-write, follows the promotion: its database
#     breaker opens while no primary is up, then it reconnects to the
#     promoted standby;
#   - every job submitted (and replicated) before the failover and every job
#     submitted after it succeeds: none lost (jobs dispatched under the old
#     epoch are dispatched again by the new primary; their old messages are
#     stale and dropped at once, not held: they would hold the prefetch
#     window while the new messages' dispatch lease runs out); none recorded
#     twice: each succeeded job's result names the attempt the job row ends
#     with, no run row has the lease that recorded the success, and no
#     attempt ended otherwise than by an unstarted dispatch;
#   - prints the time from the promotion to the last job recorded.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/055_worker_amqp_failover.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedWorker;
use HaschedRabbitMQ;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $bin = worker_bin();
ok(-x $bin, "the hasched-worker program is built ($bin)");
my $tmp = worker_tmp();

# ---------------------------------------------------------------------------
# broker, primary, standby
# ---------------------------------------------------------------------------
my $mq = HaschedRabbitMQ->new('mq055');
$mq->start;
my $url = $mq->url;

my $primary = HaschedCluster->primary('primary', streaming => 1, conf => $mq->hasched_conf . q{
hasched.amqp_queue_type = 'classic'
hasched.scheduler_naptime = '200ms'
hasched.dispatch_lease = '10s'
});
$primary->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('ha', 'amqp', '20 seconds');
});
my $standby = HaschedCluster->standby($primary, 'standby');
my $host = $primary->host;
my $dbs = "host=$host,$host port=" . $primary->port . ',' . $standby->port
  . ' dbname=postgres user=wrk target_session_attrs=read-write connect_timeout=2';

my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
echo "\$HASCHED_ATTEMPT" >> "$tmp/ran.\$HASCHED_JOB_ID"
sleep 0.5
echo "{\\"attempt\\": \$HASCHED_ATTEMPT}"
EOS
close $fh;
chmod 0755, $script;

my $w = start_worker(db => $dbs, amqp => $url, queue => 'ha', args => [ '--concurrency', '4' ],
	cmd => [$script]);

# a stream of jobs; the failover comes while some run and others wait on the broker
my @before = split /\n/, $primary->query(
	q{SELECT unnest(hasched.submit_many('ha', ARRAY(SELECT jsonb_build_object('n', i) FROM generate_series(1, 24) i)))});
$primary->wait_for_catchup($standby);
ok(within(30, sub { $primary->query(q{SELECT count(*) >= 4 FROM hasched.job WHERE queue = 'ha' AND state = 'succeeded'}) eq 't' }),
	'jobs run through the multi-host connection and the broker');
my $states = $primary->query(q{SELECT string_agg(state || ':' || n, ' ' ORDER BY state) FROM (SELECT state::text, count(*) AS n FROM hasched.job WHERE queue = 'ha' GROUP BY 1) s});
diag("at the failover: $states");
like($states, qr/(running|dispatched)/, 'the failover comes while jobs are running or dispatched');
$primary->wait_for_catchup($standby);
$primary->stop('immediate');
usleep(500_000);
$standby->promote;
my $promoted = time;
my @after = split /\n/, $standby->query(
	q{SELECT unnest(hasched.submit_many('ha', ARRAY(SELECT jsonb_build_object('n', i) FROM generate_series(25, 36) i)))});
my $all = join(',', @before, @after);
ok($standby->poll_within(40, "SELECT count(*) = 36 FROM hasched.job WHERE id IN ($all) AND state = 'succeeded'"),
	'every job, from before and after the failover, succeeds on the new primary: none lost')
  or diag($standby->query("SELECT id, state, attempt, last_error FROM hasched.job WHERE id IN ($all) AND state <> 'succeeded'"));
diag(sprintf('all 36 jobs recorded %.1f s after the promotion', time - $promoted));
is($standby->query("SELECT count(*) FROM hasched.job WHERE id IN ($all) AND result <> jsonb_build_object('attempt', attempt)"),
	'0', 'each result was recorded by the attempt the job ends with');
is($standby->query(
		"SELECT count(*) FROM hasched.job j JOIN hasched.job_run r ON r.job_id = j.id"
		  . " AND r.epoch = j.epoch AND r.attempt = j.attempt AND r.lease_id = j.lease_id"
		  . " WHERE j.id IN ($all)"),
	'0', 'no lease that recorded a success also ended otherwise: recorded once');
is($standby->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($all) AND outcome NOT IN ('dispatch_expired')"),
	'0', 'no attempt failed or expired while running');
my $reruns = $standby->query(
	"SELECT string_agg(job_id || ':' || outcome, ' ') FROM hasched.job_run WHERE job_id IN ($all)");
diag('attempts that ended without success: ' . ($reruns eq '' ? 'none' : $reruns));
my $log = slurp_log($w);
like($log, qr/database circuit breaker closed -> open/, 'the worker\'s breaker opened while no primary was up');
like($log, qr/connected to the database \(server [^,]+, port @{[ $standby->port ]}\)/,
	'then it connected to the promoted standby');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');
ok(within(20, sub { my $q = $mq->queues; !grep { $_ } map { $q->{"hasched.ha.$_"} // 0 } qw(high medium low) }),
	'nothing left on the broker');

$mq->stop;
done_testing();
