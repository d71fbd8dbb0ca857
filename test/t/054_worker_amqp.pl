
# Copyright: hasched contributors
#
# 054_worker_amqp.pl: hasched-worker --amqp against a real RabbitMQ broker
# (test/perl/HaschedRabbitMQ.pm) and hasched's own dispatcher.
#
#   - bad arguments: a malformed --amqp URL, a URL naming the empty vhost,
#     --amqp-no-verify without an amqps URL, a bad --amqp-queue-type,
#     --amqp-queue-type without --amqp: each
#     EX_USAGE (64) with a message naming the problem; wrong broker
#     credentials, and queue arguments that differ from the declared
#     queues': EX_CONFIG (78) saying so;
#   - end to end: jobs submitted to an amqp queue are dispatched by the
#     server, run by the worker (payload on stdin and in the environment)
#     and recorded once (attempt 1, no failed run), every message acked;
#     HASCHED_TENANT is the submitter's role (the message's "tenant");
#     highest band first when several wait;
#   - jobs submitted one at a time to an idle worker: start() waits for
#     the dispatcher's commit of its confirm instead of refusing the token
#     (before, nearly every message got JQ006 "The job is pending" first);
#   - a worker killed with SIGKILL mid-job: its command dies with it, the
#     broker delivers the message again, the next worker starts the job
#     with the same token and its result is recorded once;
#   - a job that always fails is dead after its attempts (each dispatched
#     under a new token) and is not run again;
#   - a message whose job was cancelled while it waited on the broker
#     (its token is stale) is acked and dropped, not run;
#   - messages that are not the dispatcher's (not JSON, no integer job_id,
#     no well-formed token), a finished attempt's, a token that never held
#     its job and a job that does not exist, among good ones: each dropped
#     and named in the log, the good ones run (one start() for them all);
#     one for the next attempt of a job still pending is asked again for
#     5 s (as if its dispatch were not recorded yet), then dropped;
#   - /health: 200 with the broker connected; 503 naming "broker" while
#     the broker is down; back to 200 after the broker restarts (the worker
#     reconnects with backoff) and jobs flow again;
#   - SIGTERM: the running job finishes and is recorded, exit 0.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/054_worker_amqp.pl
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
# the broker and the server
# ---------------------------------------------------------------------------
my $mq = HaschedRabbitMQ->new('mq054');
$mq->start;
my $url = $mq->url;

my $node = HaschedCluster->primary('main', conf => $mq->hasched_conf . q{
hasched.amqp_queue_type = 'classic'
hasched.scheduler_naptime = '200ms'
hasched.dispatch_lease = '30s'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('e2e', 'amqp', '10 seconds');
	INSERT INTO hasched.queue (name, transport, lease, default_max_attempts, backoff_base, backoff_max)
	     VALUES ('failing', 'amqp', '10 seconds', 3, '50 milliseconds', '100 milliseconds');
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('crash', 'amqp', '10 seconds');
});
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';

my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
payload=\$(cat)
echo "\$HASCHED_JOB_ID" >> "$tmp/ran.\$HASCHED_JOB_ID"
printf '%s' "\$HASCHED_TENANT" > "$tmp/tenant.\$HASCHED_JOB_ID"
case "\$payload" in
*'"mode": "fail"'*) echo "always broken" >&2; exit 5 ;;
*'"mode": "sleep"'*)
	echo \$\$ > "$tmp/fg.\$HASCHED_JOB_ID"
	sleep 3
	echo '{"slept": true}' ;;
*) printf '{"stdin": %s, "env": %s, "job": %s, "attempt": %s}\\n' "\$payload" "\$HASCHED_PAYLOAD" "\$HASCHED_JOB_ID" "\$HASCHED_ATTEMPT" ;;
esac
EOS
close $fh;
chmod 0755, $script;

# n jobs submitted to queue e2e at once, payloads {"<key>": 1..n}: their ids
sub submit_e2e
{
	my ($n, $key) = @_;
	return split /\n/, $node->query(
		qq{SELECT unnest(hasched.submit_many('e2e',
			ARRAY(SELECT jsonb_build_object('$key', i) FROM generate_series(1, $n) i)))});
}

sub runs_of_command
{
	my ($id) = @_;
	my $f = "$tmp/ran.$id";
	return 0 unless -f $f;
	my @l = split /\n/, slurp_file($f);
	return scalar @l;
}

# ---------------------------------------------------------------------------
# bad arguments and URLs
# ---------------------------------------------------------------------------
my ($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', 'http://127.0.0.1:5672', '--', $script);
like("$code $err", qr/^64 .*--amqp: "http:\/\/127\.0\.0\.1:5672" is not an AMQP URL/s,
	'a URL that is not amqp://: EX_USAGE naming it');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', "$url/", '--', $script);
like("$code $err", qr/^64 .*names the empty vhost/s, 'a URL naming the empty vhost: EX_USAGE saying so');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', 'amqp://u:p@host:99999', '--', $script);
like("$code $err", qr/^64 .*--amqp: .*(port|not an AMQP URL)/s, 'a port out of range: EX_USAGE');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', $url, '--amqp-no-verify', '--', $script);
like("$code $err", qr/^64 .*--amqp-ca-file and --amqp-no-verify need an amqps:\/\/ URL/s,
	'--amqp-no-verify without an amqps URL: EX_USAGE (amqps itself: 085)');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', $url, '--amqp-queue-type', 'stream', '--', $script);
like("$code $err", qr/^64 .*--amqp-queue-type must be "quorum" or "classic", not "stream"/s,
	'a bad --amqp-queue-type: EX_USAGE');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp-queue-type', 'classic', '--', $script);
like("$code $err", qr/^64 .*--amqp-queue-type needs --amqp/s, '--amqp-queue-type without --amqp: EX_USAGE');
(my $badpw = $url) =~ s/guest:guest/guest:wrong/;
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', $badpw, '--', $script);
is($code, 78, 'wrong broker credentials: EX_CONFIG');
like($err, qr/refused the worker: login: .*check the user, password and vhost/, 'and the log says what to check');
unlike($err, qr/wrong/, 'the password is not logged');
($code, $out, $err) = run_worker('--help');
like($out, qr/--amqp URL.*--amqp-queue-type.*EX_CONFIG/s, '--help documents --amqp and the exit codes');

# ---------------------------------------------------------------------------
# end to end through the dispatcher
# ---------------------------------------------------------------------------
my $w = start_worker(db => $db, amqp => $url, queue => 'e2e',
	args => [ '--concurrency', '4', '--health-port', my $hport = PostgreSQL::Test::Cluster::get_free_port() ],
	cmd => [$script]);
my @ids = submit_e2e(30, 'n');
my $idlist = join(',', @ids);
ok($node->poll_within(20, "SELECT count(*) = 30 FROM hasched.job WHERE id IN ($idlist) AND state = 'succeeded'"),
	'30 jobs of an amqp queue succeed through the dispatcher and hasched-worker');
is($node->query(
		"SELECT count(*) FROM hasched.job WHERE id IN ($idlist)"
		  . " AND result = jsonb_build_object('stdin', payload, 'env', payload, 'job', id, 'attempt', 1)"),
	'30', 'the payload came on stdin and in HASCHED_PAYLOAD; the result recorded');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND attempt <> 1"), '0',
	'each job ran under its first attempt');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($idlist)"), '0',
	'no failed attempt recorded');
is(scalar(grep { runs_of_command($_) != 1 } @ids), 0, 'each command ran once');
my $submitter = $node->query('SELECT current_user');
is(join(',', sort { $a cmp $b } keys %{ { map { (-f "$tmp/tenant.$_" ? slurp_file("$tmp/tenant.$_") : '(none)') => 1 } @ids } }),
	$submitter, 'HASCHED_TENANT is the submitting role (the message carries the tenant)');
ok(within(20, sub { my $q = $mq->queues; ($q->{'hasched.e2e.medium'} // -1) == 0 }),
	'every message was acked (none ready on the broker)');

# Jobs one at a time to the idle worker: the broker delivers each message
# before the dispatcher has committed its confirm; start() waits for that
# commit (a few ms) rather than answering that the token is not the job's
# (before, nearly every message was refused, "The job is pending", and
# cost the worker a retry; the worker logs each one it asks again).
my $wlog_from = length(slurp_log($w));
my @one = map {
	my $id = $node->query(qq{SELECT hasched.submit('e2e', '{"n": 1$_}')});
	usleep(50_000);
	$id
} 1 .. 15;
my $onelist = join(',', @one);
ok($node->poll_within(20, "SELECT count(*) = 15 FROM hasched.job WHERE id IN ($onelist) AND state = 'succeeded'"),
	'15 jobs submitted one at a time succeed');
my $pending_refusals = () = substr(slurp_log($w), $wlog_from) =~ /job \d+ is still pending \(its dispatch not recorded yet\): asked again/g;
cmp_ok($pending_refusals, '<=', 3,
	"start() waited for the dispatcher's commit ($pending_refusals of 15 refused as pending)");
my ($hc, $hb) = health($hport);
is($hc, 200, 'health: 200 with the broker connected');
like($hb, qr/"broker": \{"ok": true/, 'and the broker check is ok');

# ---------------------------------------------------------------------------
# the broker goes away and comes back
# ---------------------------------------------------------------------------
$mq->kill9;
ok(within(20, sub { my ($c, $b) = health($hport); $c == 503 && $b =~ /"failed": \[[^\]]*"broker"/ }),
	'health: 503 naming "broker" while the broker is down');
$mq->start;
ok(within(40, sub { my ($c) = health($hport); $c == 200 }), 'health: 200 again once the worker reconnected');
my $after = $node->query(q{SELECT hasched.submit('e2e', '{"n": 99}')});
ok($node->wait_state($after, 'succeeded'), 'a job submitted after the restart runs');
like(slurp_log($w), qr/broker connection to .* lost/, 'the worker logged the lost connection');

# ---------------------------------------------------------------------------
# SIGTERM drains
# ---------------------------------------------------------------------------
my $slow = $node->query(q{SELECT hasched.submit('e2e', '{"mode": "sleep"}')});
ok(within(20, sub { -f "$tmp/fg.$slow" }), 'a slow job started');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: the worker exits 0 after the running job');
is($node->job($slow, 'state'), 'succeeded', 'and that job was recorded');

# queue arguments that differ from the declared queues' (classic)
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--amqp', $url, '--amqp-queue-type', 'quorum', '--', $script);
is($code, 78, 'quorum queues asked where classic ones exist: EX_CONFIG');
like($err, qr/declaring queue "hasched\.e2e\.high".*PRECONDITION_FAILED.*--amqp-queue-type/,
	'naming the queue and the option');

# ---------------------------------------------------------------------------
# a message whose job was cancelled while it waited on the broker
# ---------------------------------------------------------------------------
my $cid = $node->query(q{SELECT hasched.submit('e2e', '{"n": -1}')});
ok($node->wait_state($cid, 'dispatched'), 'a job is dispatched while no worker runs');
$node->query("SELECT hasched.cancel($cid)");
$w = start_worker(db => $db, amqp => $url, queue => 'e2e', cmd => [$script]);
ok(within(30, sub { slurp_log($w) =~ /job $cid .*(already finished|stale lease token).*acked and dropped|delivery \d+: stale lease token .*acked and dropped/ }),
	'its message is acked and dropped (stale token)')
  or diag(slurp_log($w));
ok(within(20, sub { my $q = $mq->queues; ($q->{'hasched.e2e.medium'} // -1) == 0 }), 'nothing left on the broker');
is(runs_of_command($cid), 0, 'the cancelled job did not run');
is($node->job($cid, 'state'), 'cancelled', 'and stays cancelled');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# messages that are not the dispatcher's, among good ones
# ---------------------------------------------------------------------------
# The worker starts what it received in one statement (start()'s array
# form), sent in the transaction of its reports: a message that is not a
# job's, a finished attempt's, a stale token and a job that does not exist
# must each be settled by itself, without failing the others' start.
my $done = $ids[0];
my $done_token = $node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $done");
my ($de, $da, $dl) = split /:/, $done_token;
my $never_token = "$de:$da:" . ($dl + 100000);
# a job that stays pending (its queue paused), and a message with the token
# of its next attempt: as if the broker delivered before the dispatcher
# recorded the confirm; the worker asks again for 5 s, then drops it
$node->query(q{INSERT INTO hasched.queue (name, transport) VALUES ('held', 'amqp');
	SELECT hasched.pause_queue('held')});
my $held = $node->query(q{SELECT hasched.submit('held', '{"h": 1}')});
my $held_token = "$de:1:999999999";
$mq->publish('hasched.e2e.medium',
	qq({"job_id": $held, "lease_token": "$held_token"}),
	'not json at all',
	'{"job_id": "seven", "lease_token": "1:1:1"}',
	'{"job_id": 7}',
	'{"job_id": 7, "lease_token": "x:y"}',
	qq({"job_id": $done, "lease_token": "$done_token"}),
	qq({"job_id": $done, "lease_token": "$never_token"}),
	'{"job_id": 999999999, "lease_token": "1:1:1"}');
my @mixed = submit_e2e(5, 'm');
my $mixedlist = join(',', @mixed);
ok($node->poll_within(20, "SELECT count(*) = 5 FROM hasched.job WHERE id IN ($mixedlist) AND state = 'dispatched'"),
	'5 jobs dispatched behind 8 messages that are not the dispatcher\'s');
$w = start_worker(db => $db, amqp => $url, queue => 'e2e', args => [ '--concurrency', '16' ],
	cmd => [$script]);
ok($node->poll_within(20, "SELECT count(*) = 5 FROM hasched.job WHERE id IN ($mixedlist) AND state = 'succeeded' AND attempt = 1"),
	'the 5 jobs succeed under their first attempt');
ok(within(20, sub { slurp_log($w) =~ /stale lease token \Q$held_token\E for job $held \(the job is pending\) for 5\.\d s: acked and dropped/ }),
	'a message for a job still pending is asked again for 5 s, then dropped');
like(slurp_log($w), qr/job $held is still pending \(its dispatch not recorded yet\): asked again/,
	'its first retry is logged');
is($node->job($held, 'state'), 'pending', 'and that job stays pending');
ok(within(20, sub { my $q = $mq->queues; ($q->{'hasched.e2e.medium'} // -1) == 0 }),
	'every message was acked, the bad ones too');
my $wl = slurp_log($w);
my $not_jobs = () = $wl =~ /delivery \d+ is not a job message \(no integer job_id and lease token\): acked and dropped/g;
is($not_jobs, 4, 'the 4 bodies that are not the contract\'s are dropped, each named in the log');
like($wl, qr/job $done attempt $da: already finished \(succeeded\): acked and dropped/,
	'a finished attempt\'s message is dropped without running');
like($wl, qr/stale lease token \Q$never_token\E for job $done \(the job is succeeded\): acked and dropped/,
	'a token that never held the job is dropped as stale');
like($wl, qr/stale lease token 1:1:1 for job 999999999 \(no such job\): acked and dropped/,
	'a message for a job that does not exist is dropped');
unlike($wl, qr/refused/, 'no start or report was refused');
is(runs_of_command($done), 1, 'the finished job did not run again');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# a job that always fails
# ---------------------------------------------------------------------------
$w = start_worker(db => $db, amqp => $url, queue => 'failing', cmd => [$script]);
my $id = $node->query(q{SELECT hasched.submit('failing', '{"mode": "fail"}')});
ok($node->wait_state($id, 'dead'), 'a job that always fails ends dead');
is($node->job($id, 'attempt'), '3', 'after its 3 attempts');
is($node->runs_of($id),
	join("\n", map { "$_:failed:command exited with status 5; stderr: always broken" } 1 .. 3),
	'each attempt failed with the exit status and stderr');
usleep(1_500_000);
is(runs_of_command($id), 3, 'the command ran 3 times and not again');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# a worker killed mid-job
# ---------------------------------------------------------------------------
$w = start_worker(db => $db, amqp => $url, queue => 'crash', cmd => [$script]);
$id = $node->query(q{SELECT hasched.submit('crash', '{"mode": "sleep"}')});
ok(within(30, sub { -f "$tmp/fg.$id" }), 'the job runs');
my $token1 = $node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $id");
my $fg = slurp_file("$tmp/fg.$id");
chomp $fg;
kill 'KILL', $w->{pid};
wait_exit($w, 10);
ok(within(10, sub { !kill(0, $fg) }), 'SIGKILL on the worker: its command dies with it');
my $t0 = time;
my $w2 = start_worker(db => $db, amqp => $url, queue => 'crash', cmd => [$script]);
ok($node->wait_state($id, 'succeeded'), 'another worker gets the message again and the job succeeds');
diag(sprintf('redelivered and finished %.1f s after the second worker started', time - $t0));
is($node->query("SELECT epoch || ':' || attempt || ':' || lease_id FROM hasched.job WHERE id = $id"),
	$token1, 'under the same token (a redelivery, not a re-dispatch)');
is($node->job($id, 'result::text'), '{"slept": true}', 'its result recorded');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id = $id"), '0', 'no failed attempt recorded');
is(runs_of_command($id), 2, 'the command ran twice (once per worker)');
kill 'TERM', $w2->{pid};
is(wait_exit($w2, 30), 0, 'the second worker stops');

$mq->stop;
done_testing();
