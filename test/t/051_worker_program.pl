
# Copyright: hasched contributors
#
# 051_worker_program.pl: the hasched-worker program against a real server.
#
#   - bad arguments exit with EX_USAGE (64) and a message naming the
#     problem; a command that does not exist, EX_UNAVAILABLE (69); an
#     unknown queue, EX_CONFIG (78) with the server's JQ010; --help exits 0;
#   - jobs run end to end: the payload on stdin and in HASCHED_PAYLOAD,
#     HASCHED_JOB_ID and HASCHED_ATTEMPT set; stdout that is JSON is the
#     result, other output a JSON string, no output no result; each result
#     recorded once (attempt 1, no run rows); never more commands at
#     once than --concurrency (the successes' reports and the next claim
#     are sent in one transaction while commands run);
#   - a job that always fails ends dead after its attempts, with the exit
#     status and the tail of stderr as its error, and is not run again;
#   - a job past its timeout has its process group killed (the command and
#     what it started in the background) and fails with "timed out";
#   - a command that disappeared after the worker started: the job fails
#     with "cannot run command" (not lost), dead after its attempts;
#   - SIGTERM: no job taken after it, the running ones finish and are
#     recorded, then exit 0; SIGHUP reopens the log file;
#   - GET /health: 200 while idle; 503 naming "progress" when every slot is
#     busy and nothing finished within --stall-timeout; a cancelled job's
#     command is killed at its next heartbeat (lease lost) and health is 200
#     again; 405 for POST, 404 for another path; 503 naming "database" while
#     the server is down, 200 after it is back (the breaker probes); a job
#     that finished while the server was down is recorded once it is back.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/051_worker_program.pl
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
# the server
# ---------------------------------------------------------------------------
my $node = HaschedCluster->primary('main', conf => "hasched.scheduler_naptime = '200ms'\n");
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, lease) VALUES ('e2e', '10 seconds');
	INSERT INTO hasched.queue (name, lease, default_max_attempts, backoff_base, backoff_max)
	     VALUES ('failing', '10 seconds', 3, '50 milliseconds', '100 milliseconds');
	INSERT INTO hasched.queue (name, lease, default_timeout, default_max_attempts)
	     VALUES ('slow', '10 seconds', '1 second', 1);
	INSERT INTO hasched.queue (name, lease, default_max_attempts, backoff_base, backoff_max)
	     VALUES ('gone', '10 seconds', 2, '50 milliseconds', '100 milliseconds');
	INSERT INTO hasched.queue (name, lease) VALUES ('drain', '10 seconds');
	INSERT INTO hasched.queue (name, lease) VALUES ('health', '3 seconds');
});
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';

# The command: what it does depends on the payload's "mode".
my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
payload=\$(cat)
case "\$payload" in
*'"mode": "text"'*) echo "plain text, not JSON" ;;
*'"mode": "empty"'*) ;;
*'"mode": "fail"'*) echo "something broke" >&2; exit 3 ;;
*'"mode": "sleep"'*)
	sleep 300 &
	echo \$! > "$tmp/bg.\$HASCHED_JOB_ID"
	echo \$\$ > "$tmp/fg.\$HASCHED_JOB_ID"
	sleep 300 ;;
*'"mode": "nap"'*) sleep 2; echo '{"napped": true}' ;;
*'"mode": "size"'*) printf '{"bytes": %s}\\n' "\$(printf %s "\$payload" | wc -c)" ;;
*'"mode": "count"'*)
	touch "$tmp/conc/\$\$"
	ls "$tmp/conc" | wc -l >> "$tmp/conc.counts"
	sleep 0.3
	rm -f "$tmp/conc/\$\$" ;;
*) printf '{"stdin": %s, "env": %s, "job": %s, "attempt": %s}\\n' "\$payload" "\$HASCHED_PAYLOAD" "\$HASCHED_JOB_ID" "\$HASCHED_ATTEMPT" ;;
esac
EOS
close $fh;
chmod 0755, $script;

# ---------------------------------------------------------------------------
# bad arguments
# ---------------------------------------------------------------------------
my ($code, $out, $err) = run_worker('--queue', 'e2e', '--', $script);
is($code, 64, 'no --db: EX_USAGE');
like($err, qr/--db CONNSTR is required/, 'and the message names --db');
($code, $out, $err) = run_worker('--db', $db, '--', $script);
like("$code $err", qr/^64 .*--queue QUEUE is required/s, 'no --queue: EX_USAGE naming --queue');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--concurrency', 'lots', '--', $script);
like("$code $err", qr/^64 .*--concurrency must be an integer from 1 to 1024, not "lots"/s,
	'--concurrency lots: EX_USAGE with the allowed range');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--poll-interval', '-1', '--', $script);
like("$code $err", qr/^64 .*--poll-interval must be a number of seconds/s, 'a negative --poll-interval: EX_USAGE');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--frobnicate', '--', $script);
like("$code $err", qr/^64 .*unknown option --frobnicate/s, 'an unknown option: EX_USAGE naming it');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e');
like("$code $err", qr/^64 .*no command given/s, 'no command: EX_USAGE');
($code, $out, $err) = run_worker('--db', 'host=/tmp nosuchkey=1', '--queue', 'e2e', '--', $script);
like("$code $err", qr/^64 .*invalid connection string: invalid connection option "nosuchkey"/s,
	'a malformed connection string: EX_USAGE with libpq\'s reason');
like($err, qr/Try "hasched-worker --help"/, 'usage errors point to --help');
($code, $out, $err) = run_worker('--help');
is($code, 0, '--help exits 0');
like($out, qr/Usage:.*--concurrency.*Exit status/s, '--help prints usage and the exit codes');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'e2e', '--', "$tmp/no-such-command");
is($code, 69, 'a command that does not exist: EX_UNAVAILABLE');
like($err, qr/cannot run command ".*no-such-command": No such file or directory/, 'and says so');
($code, $out, $err) = run_worker('--db', $db, '--queue', 'no_such_queue', '--', $script);
is($code, 78, 'an unknown queue: EX_CONFIG');
like($err, qr/JQ010: queue "no_such_queue" does not exist/, 'with the server\'s message');

# ---------------------------------------------------------------------------
# jobs end to end
# ---------------------------------------------------------------------------
my $w = start_worker(db => $db, queue => 'e2e', args => [ '--concurrency', '4' ], cmd => [$script]);
my @ids = split /\n/, $node->query(
	q{SELECT unnest(hasched.submit_many('e2e',
		ARRAY(SELECT jsonb_build_object('n', i) FROM generate_series(1, 20) i)))});
push @ids, $node->query(q{SELECT hasched.submit('e2e', '{"mode": "text"}')});
push @ids, $node->query(q{SELECT hasched.submit('e2e', '{"mode": "empty"}')});
my $idlist = join(',', @ids);
ok($node->poll_within(60, "SELECT count(*) = 22 FROM hasched.job WHERE id IN ($idlist) AND state = 'succeeded'"),
	'22 jobs succeed through hasched-worker');
is($node->query(
		"SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND payload ? 'n'"
		  . " AND result = jsonb_build_object('stdin', payload, 'env', payload, 'job', id, 'attempt', 1)"),
	'20', 'the payload came on stdin and in HASCHED_PAYLOAD, with HASCHED_JOB_ID and HASCHED_ATTEMPT; JSON stdout is the result');
is($node->query("SELECT result::text FROM hasched.job WHERE id = $ids[20]"),
	'"plain text, not JSON\n"', 'output that is not JSON is recorded as a JSON string');
is($node->query("SELECT result IS NULL FROM hasched.job WHERE id = $ids[21]"), 't', 'no output: no result');
is($node->query("SELECT count(*) FROM hasched.job WHERE id IN ($idlist) AND attempt <> 1"), '0',
	'each job ran once');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($idlist)"), '0',
	'no failed attempt was recorded');

# payloads of every size reach stdin whole: one that the pipe takes at once
# (written before the command starts), one larger than a page, and one
# larger than the pipe and than the environment takes (written as the
# command reads it)
my $sizes = join(',', split /\n/, $node->query(
	q{SELECT unnest(hasched.submit_many('e2e', ARRAY(SELECT jsonb_build_object('mode', 'size', 'pad', repeat('x', n))
	                                                   FROM unnest(ARRAY[3000, 10000, 300000]) n)))}));
ok($node->poll_within(60, "SELECT count(*) = 3 FROM hasched.job WHERE id IN ($sizes) AND state = 'succeeded'"),
	'jobs with payloads of 3 kB, 10 kB and 300 kB succeed');
is($node->query("SELECT string_agg((result->>'bytes' = octet_length(payload::text)::text)::text, ' ' ORDER BY id)"
		  . " FROM hasched.job WHERE id IN ($sizes)"),
	'true true true', 'each command read its whole payload on stdin');

# the slots of jobs whose reports are on their way are not room for more commands
mkdir "$tmp/conc" or die;
my $counted = $node->query(
	q{SELECT string_agg(id::text, ',') FROM unnest(hasched.submit_many('e2e',
		ARRAY(SELECT '{"mode": "count"}'::jsonb FROM generate_series(1, 16)))) id});
ok($node->poll_within(60, "SELECT count(*) = 16 FROM hasched.job WHERE id IN ($counted) AND state = 'succeeded'"),
	'16 jobs of 0.3 s succeed');
my @counts = split /\n/, slurp_file("$tmp/conc.counts");
is(scalar(grep { $_ > 4 } @counts), 0,
	'--concurrency 4: never more than 4 commands at once (' . join(' ', @counts) . ')');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM on an idle worker: exit 0');
like(slurp_log($w), qr/listening on channel "hasched\.e2e"/, 'the worker listened for NOTIFY');

# ---------------------------------------------------------------------------
# a job that always fails
# ---------------------------------------------------------------------------
$w = start_worker(db => $db, queue => 'failing', args => [ '--poll-interval', '0.1' ], cmd => [$script]);
my $id = $node->query(q{SELECT hasched.submit('failing', '{"mode": "fail"}')});
ok($node->wait_state($id, 'dead'), 'a job that always fails ends dead');
is($node->job($id, 'attempt'), '3', 'after its 3 attempts');
is($node->runs_of($id),
	join("\n", map { "$_:failed:command exited with status 3; stderr: something broke" } 1 .. 3),
	'each attempt failed with the exit status and the tail of stderr');
usleep(500_000);
is($node->job($id, q{attempt::text || state::text}), '3dead', 'and it is not run again');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# timeout: the process group is killed
# ---------------------------------------------------------------------------
$w = start_worker(db => $db, queue => 'slow', args => [ '--kill-grace', '1' ], cmd => [$script]);
$id = $node->query(q{SELECT hasched.submit('slow', '{"mode": "sleep"}')});
ok($node->wait_state($id, 'dead'), 'a job past its timeout of 1 s fails (dead: 1 attempt)');
like($node->job($id, 'last_error'), qr/^timed out after 1\.000 s: process group killed/,
	'its error says it timed out');
my $fg = slurp_file("$tmp/fg.$id");
my $bg = slurp_file("$tmp/bg.$id");
chomp($fg, $bg);

sub gone
{
	my ($pid) = @_;
	for (1 .. 100)
	{
		return 1 unless -e "/proc/$pid";
		my $stat = -r "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
		return 1 if $stat =~ /^\d+ \(.*\) Z /;
		usleep(100_000);
	}
	return 0;
}
ok(gone($fg), "the command (pid $fg) was killed");
ok(gone($bg), "and what it started in the background (pid $bg), in its process group");
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# the command disappears after the worker started
# ---------------------------------------------------------------------------
my $doomed = "$tmp/doomed.sh";
open $fh, '>', $doomed or die;
print $fh "#!/bin/sh\necho ok\n";
close $fh;
chmod 0755, $doomed;
$w = start_worker(db => $db, queue => 'gone', args => [ '--poll-interval', '0.1' ], cmd => [$doomed]);
ok($node->poll_within(30, q{SELECT count(*) > 0 FROM pg_stat_activity WHERE application_name = 'hasched-worker'}),
	'the worker is connected');
unlink $doomed;
$id = $node->query(q{SELECT hasched.submit('gone', '{}')});
ok($node->wait_state($id, 'dead'), 'a job whose command is missing fails, dead after its attempts');
like($node->runs_of($id), qr/^1:failed:cannot run command ".*doomed\.sh": No such file or directory\n2:failed:cannot run/,
	'each attempt says the command cannot be run');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

# ---------------------------------------------------------------------------
# SIGTERM drains; SIGHUP reopens the log
# ---------------------------------------------------------------------------
my $logfile = "$tmp/drain.log";
$w = start_worker(db => $db, queue => 'drain', args => [ '--concurrency', '2', '--log', $logfile ],
	cmd => [$script]);
my @naps = split /\n/, $node->query(
	q{SELECT unnest(hasched.submit_many('drain', ARRAY['{"mode": "nap"}', '{"mode": "nap"}']::jsonb[]))});
ok($node->poll_within(30, "SELECT count(*) = 2 FROM hasched.job WHERE id IN ($naps[0], $naps[1]) AND state = 'running'"),
	'two jobs run');
rename $logfile, "$logfile.1";
kill 'HUP', $w->{pid};
ok(within(10, sub { -f $logfile && slurp_file($logfile) =~ /log file reopened/ }),
	'SIGHUP: the log file is opened again under its name');
kill 'TERM', $w->{pid};
usleep(200_000);
my $late = $node->query(q{SELECT hasched.submit('drain', '{"mode": "nap"}')});
is(wait_exit($w, 30), 0, 'SIGTERM: the worker exits 0 once its jobs are done');
is($node->query("SELECT string_agg(state::text || ':' || (result->>'napped'), ',') FROM hasched.job WHERE id IN ($naps[0], $naps[1])"),
	'succeeded:true,succeeded:true', 'the two running jobs finished and were recorded');
is($node->job($late, 'state'), 'pending', 'the job submitted after SIGTERM was not taken');
like(slurp_file($logfile), qr/SIGTERM: taking no more jobs.*drained/s, 'the log tells the drain');

# ---------------------------------------------------------------------------
# GET /health
# ---------------------------------------------------------------------------
my $hport = PostgreSQL::Test::Cluster::get_free_port();
$w = start_worker(db => $db, queue => 'health',
	args => [ '--health-port', $hport, '--stall-timeout', '2', '--poll-interval', '0.2' ], cmd => [$script]);
my $resp = '';
for (1 .. 100)
{
	$resp = http_request($hport, "GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
	last if $resp =~ /^HTTP\/1.1 200/;
	usleep(100_000);
}
like($resp, qr/^HTTP\/1.1 200 OK\r\n.*Content-Type: application\/json.*"status": "ok", "failed": \[\]/s,
	'GET /health: 200 while idle and connected');
like(http_request($hport, "POST /health HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), qr/^HTTP\/1.1 405 .*Allow: GET/s,
	'POST: 405');
like(http_request($hport, "GET /other HTTP/1.1\r\n\r\n"), qr/^HTTP\/1.1 404/, 'another path: 404');

$id = $node->query(q{SELECT hasched.submit('health', '{"mode": "sleep"}')});
ok($node->wait_state($id, 'running'), 'a long job runs on the only slot');
sleep 3;
like(http_request($hport, "GET /health HTTP/1.1\r\n\r\n"),
	qr/^HTTP\/1.1 503 .*"failed": \["progress"\].*"progress": \{"ok": false, "running": 1, "concurrency": 1/s,
	'every slot busy and no job finished within --stall-timeout: 503 naming progress');
$node->query("SELECT hasched.cancel($id)");
$fg = slurp_file("$tmp/fg.$id");
chomp $fg;
ok(gone($fg), 'the cancelled job\'s command is killed (its heartbeat found the lease gone)');
ok(within(10, sub { http_request($hport, "GET /health HTTP/1.1\r\n\r\n") =~ /^HTTP\/1.1 200/ }),
	'health is 200 again');
like(slurp_log($w), qr/job $id: lease lost .*killing its command/, 'the log says why the command was killed');

# the server goes away while a job runs: its report waits for it
$node->query(q{UPDATE hasched.queue SET lease = '60 seconds' WHERE name = 'health'});
my $napper = $node->query(q{SELECT hasched.submit('health', '{"mode": "nap"}')});
ok($node->wait_state($napper, 'running'), 'a job runs');
$node->stop('fast');
my $down = '';
for (1 .. 100)
{
	$down = http_request($hport, "GET /health HTTP/1.1\r\n\r\n");
	last if $down =~ /^HTTP\/1.1 503/;
	usleep(100_000);
}
like($down, qr/^HTTP\/1.1 503 .*"failed": \["database".*"database": \{"ok": false, "breaker": "(open|half-open)"/s,
	'the server down: 503 naming the database, the breaker open');
ok(within(30, sub { slurp_log($w) =~ /job $napper attempt 1: succeeded after/ }),
	'the job finished while the server was down');
$node->start;
ok($node->wait_state($napper, 'succeeded'), 'its success is recorded once the server is back');
is($node->job($napper, q{attempt || ' ' || result::text}), '1 {"napped": true}',
	'by its only attempt, with its result');
is($node->runs_of($napper), '', 'no failed attempt');
my $up = '';
for (1 .. 300)
{
	$up = http_request($hport, "GET /health HTTP/1.1\r\n\r\n");
	last if $up =~ /^HTTP\/1.1 200/;
	usleep(100_000);
}
like($up, qr/^HTTP\/1.1 200 .*"breaker": "closed"/s, 'the server back: a probe reconnects, 200');
$id = $node->query(q{SELECT hasched.submit('health', '{"n": 1}')});
ok($node->wait_state($id, 'succeeded'), 'and jobs run again');
like(slurp_log($w), qr/circuit breaker closed -> open.*next database probe in \d+ ms.*open -> half-open.*half-open -> closed/s,
	'the log shows the breaker open, probe and close');
kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'the worker stops');

done_testing();
