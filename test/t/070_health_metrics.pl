
# Copyright: hasched contributors
#
# 070_health_metrics.pl: hasched.health()'s components and GET /metrics
# (src/core/health.c, src/core/metrics.c, src/workers/health_listener.c) on
# a primary with a synchronous standby.
#
# Proves:
#   - health() has an overall row and a row per component (server,
#     replication, scheduler, executors, backlog, mode, health listener),
#     each ok, degraded or failed, on the primary and on the standby; GET
#     /health has the same rows;
#   - replication: the synchronous standby shows on the primary; when it
#     stops, replication (and overall) is failed with a detail naming
#     synchronous_standby_names, /health is 503; when it is back, ok;
#     on the standby the row says it streams;
#   - backlog: the jobs submitted show as waiting on both servers (the
#     standby counts what it replayed), with the oldest due job; past
#     hasched.health_due_age the row is degraded naming the queue;
#   - mode: set_mode('read_only') makes the mode row degraded with the
#     reason, and /metrics hasched_mode{mode="read_only"} 1; so do the
#     automatic read-only mode and the priority hold-back (degrade.c), with
#     hasched_auto_read_only and hasched_holdback 1, and the automatic
#     refusal counts as read_only;
#   - /metrics passes a strict check of the Prometheus text format (every
#     line a HELP, TYPE or sample; HELP and TYPE once per family, before its
#     samples; names hasched_*; labels quoted and escaped; values numbers;
#     no sample twice; histogram buckets cumulative and +Inf == _count),
#     and every family is listed in doc/operations.md;
#   - the counters count committed transitions only: a rolled-back submit
#     and a submit rolled back to a savepoint are not counted; submitted,
#     started, completed, failed, dead are exact; the start delay
#     histogram counts every start; refused submits by reason (read_only,
#     quota, rate);
#   - jobs by queue and state: past hasched.metrics_max_queues (2 here) the
#     smaller queues are summed into queue="(other)";
#   - executors: with no room in max_worker_processes, the row is degraded
#     and says what to raise.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/070_health_metrics.pl
use strict;
use warnings;

use File::Basename qw(dirname);
use HaschedCluster;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $pport = PostgreSQL::Test::Cluster::get_free_port();
my $sport = PostgreSQL::Test::Cluster::get_free_port();
my $conf = "hasched.stats_interval = '200ms'\nhasched.metrics_max_queues = 2\n";

my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => $conf . "hasched.health_port = $pport\n");
my $standby = HaschedCluster->standby($primary, 'standby', sync => 1,
	conf => "hasched.health_port = $sport\n");

my %want = map { $_ => 1 }
  ('overall', 'server', 'replication', 'scheduler', 'executors', 'backlog', 'mode', 'health listener');

sub rows
{
	my ($node) = @_;
	my %r;
	for my $line (split /\n/,
		$node->query(q{SELECT component || '|' || status || '|' || detail FROM hasched.health()}))
	{
		my ($c, $st, $d) = split /\|/, $line, 3;
		$r{$c} = [ $st, $d ];
	}
	return \%r;
}

sub status_of
{
	my ($node, $component) = @_;
	return $node->query(
		"SELECT status || ' | ' || detail FROM hasched.health() WHERE component = '$component'");
}

# --- the components, on both servers ---------------------------------------
ok($primary->poll_within(30, q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'overall'}),
	'primary: overall ok') or diag($primary->query('SELECT * FROM hasched.health()'));
my $r = rows($primary);
is_deeply([ sort keys %$r ], [ sort keys %want ], 'primary: a row per component');
is($primary->query(q{SELECT component FROM hasched.health() LIMIT 1}), 'overall',
	'the first row is overall');
like($r->{replication}[1], qr/1 standby\(s\) stream, 1 of them synchronous \(1 needed\)/,
	'primary: replication names the synchronous standby');
like($r->{scheduler}[1], qr/^primary since .*last round [\d.]+ s ago/, 'primary: scheduler row');

ok($standby->poll_within(30, q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'overall'}),
	'standby: overall ok') or diag($standby->query('SELECT * FROM hasched.health()'));
$r = rows($standby);
is_deeply([ sort keys %$r ], [ sort keys %want ], 'standby: a row per component');
like($r->{replication}[1], qr/^streaming from .*bytes received and not yet replayed/,
	'standby: replication says it streams');
like($r->{executors}[1], qr/^standby/, 'standby: executors only on the primary');

my ($st, $head, $body) = HaschedCluster::http_get($pport, '/health');
is($st, 200, 'GET /health 200');
for my $c (sort keys %want)
{
	like($body, qr/"component": "$c", "status": "ok"/, "GET /health has $c ok");
}
my ($curl_health) = $body;

# --- backlog ------------------------------------------------------------------
# the test's role submits without the free tier's rate limit
$primary->query(q{INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise')});
$primary->query(q{INSERT INTO hasched.queue (name) VALUES ('qa'), ('qb'), ('qc')});
$primary->query(q{SELECT hasched.submit('qa', '{}') FROM generate_series(1, 5)});
$primary->query(q{SELECT hasched.submit('qb', '{}') FROM generate_series(1, 3)});
$primary->query(q{SELECT hasched.submit('qc', '{}')});
$primary->query(q{SELECT hasched.submit('qc', '{}', run_at => now() + interval '1 hour')});
ok($primary->poll_within(30, q{SELECT detail LIKE '10 waiting (9 pending, 1 scheduled, 0 to retry), 0 running, 0 dispatched in 3 queue(s); the oldest due job has waited %'
	FROM hasched.health() WHERE component = 'backlog'}),
	'primary: backlog counts the waiting jobs') or diag(status_of($primary, 'backlog'));
$primary->wait_for_catchup($standby);
ok($standby->poll_within(30, q{SELECT detail LIKE '10 waiting (9 pending, %' FROM hasched.health() WHERE component = 'backlog'}),
	'standby: backlog counts the replayed jobs') or diag(status_of($standby, 'backlog'));

$primary->query(q{ALTER SYSTEM SET hasched.health_due_age = '1s'; SELECT pg_reload_conf()});
ok($primary->poll_within(30, q{SELECT status = 'degraded' AND detail LIKE 'a due job has waited % s in queue "%" (more than hasched.health_due_age)%'
	FROM hasched.health() WHERE component = 'backlog'}),
	'a due job waiting longer than hasched.health_due_age: backlog degraded')
  or diag(status_of($primary, 'backlog'));
($st, $head, $body) = HaschedCluster::http_get($pport, '/health');
is($st, 200, 'degraded is still 200');
like($body, qr/^\{"status": "degraded"/, 'GET /health says degraded');
$primary->query(q{ALTER SYSTEM RESET hasched.health_due_age; SELECT pg_reload_conf()});

# --- counters: committed transitions only ---------------------------------------
sub metrics
{
	my ($port) = @_;
	my ($s, $h, $b) = HaschedCluster::http_get($port, '/metrics');
	return $b;
}

sub sample
{
	my ($text, $series) = @_;
	my $re = quotemeta($series);
	return $text =~ /^$re (\S+)$/m ? $1 : undef;
}

my $m0 = metrics($pport);
is(sample($m0, 'hasched_jobs_submitted_total'), 10, 'submitted_total: the 10 jobs');
$primary->query(q{BEGIN; SELECT hasched.submit('qa', '{}'); ROLLBACK;});
$primary->query(q{BEGIN; SELECT hasched.submit('qa', '{}'); SAVEPOINT s;
	SELECT hasched.submit('qa', '{}'); SELECT hasched.submit('qa', '{}');
	ROLLBACK TO SAVEPOINT s; COMMIT;});
my $m1 = metrics($pport);
is(sample($m1, 'hasched_jobs_submitted_total'), 11,
	'a rolled-back submit and the submits of a rolled-back savepoint are not counted');

# claim 3 of qa: complete one, fail one (retry), fail one for good
my @claimed = split /\n/, $primary->query(q{SELECT job_id || ' ' || token FROM hasched.claim('qa', 'w1', 3)});
is(scalar @claimed, 3, 'three jobs claimed');
my @c = map { [ split / / ] } @claimed;
$primary->query("SELECT hasched.complete($c[0][0], '$c[0][1]')");
$primary->query("SELECT hasched.fail($c[1][0], '$c[1][1]', 'boom')");
$primary->query("SELECT hasched.fail($c[2][0], '$c[2][1]', 'boom', retry => false)");
my $m2 = metrics($pport);
is(sample($m2, 'hasched_jobs_started_total'), 3, 'started_total 3');
is(sample($m2, 'hasched_jobs_completed_total'), 1, 'completed_total 1');
is(sample($m2, 'hasched_jobs_failed_total'), 1, 'failed_total 1 (to be retried)');
is(sample($m2, 'hasched_jobs_dead_total'), 1, 'dead_total 1');
is(sample($m2, 'hasched_job_start_delay_seconds_count'), 3, 'the start delay histogram counts the 3 starts');
is(sample($m2, 'hasched_job_start_delay_seconds_bucket{le="+Inf"}'), 3, 'its +Inf bucket too');
is(sample(metrics($sport), 'hasched_jobs_submitted_total'), 0, 'a standby counts no submits of its own');

# refusals: read-only, quota, rate
$primary->query(q{SELECT hasched.set_mode('read_only', 'disk full drill')});
ok($primary->poll_within(30, q{SELECT status = 'degraded' AND detail LIKE 'read_only since %, reason: disk full drill: submissions are refused%'
	FROM hasched.health() WHERE component = 'mode'}), 'read_only: the mode row says so, with the reason')
  or diag(status_of($primary, 'mode'));
like($primary->query_error(q{SELECT hasched.submit('qa', '{}')}), qr/JQ003/, 'read_only: a submit is refused');
my $m3 = metrics($pport);
is(sample($m3, 'hasched_mode{mode="read_only"}'), 1, 'metrics: hasched_mode read_only 1');
is(sample($m3, 'hasched_mode{mode="normal"}'), 0, 'metrics: hasched_mode normal 0');
is(sample($m3, 'hasched_submits_refused_total{reason="read_only"}'), 1, 'refused read_only 1');
$primary->query(q{SELECT hasched.set_mode('normal')});
ok($primary->poll_within(30, q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'mode'}), 'normal again: mode ok');

$primary->query(q{CREATE ROLE small NOLOGIN; CREATE ROLE slow NOLOGIN;
	INSERT INTO hasched.tier (name, jobs_per_day) VALUES ('two', 2);
	INSERT INTO hasched.tier (name, jobs_per_day, rate_per_second, burst) VALUES ('trickle', 1000, 0.001, 1);
	INSERT INTO hasched.tenant (name, tier) VALUES ('small', 'two'), ('slow', 'trickle');});
$primary->query(q{SELECT hasched.submit('qb', '{}', tenant => 'small') FROM generate_series(1, 2)});
like($primary->query_error(q{SELECT hasched.submit('qb', '{}', tenant => 'small')}), qr/JQ001/, 'over quota: JQ001');
$primary->query(q{SELECT hasched.submit('qb', '{}', tenant => 'slow')});
like($primary->query_error(q{SELECT hasched.submit('qb', '{}', tenant => 'slow')}), qr/JQ002/, 'over rate: JQ002');
my $m4 = metrics($pport);
is(sample($m4, 'hasched_submits_refused_total{reason="quota"}'), 1, 'refused quota 1');
is(sample($m4, 'hasched_submits_refused_total{reason="rate"}'), 1, 'refused rate 1');

# --- jobs by queue and state, bounded ---------------------------------------------
ok( $primary->poll_within(
		20, q{SELECT detail LIKE '12 waiting (10 pending, 1 scheduled, 1 to retry)%' FROM hasched.health() WHERE component = 'backlog'}),
	'counted again: the claims and the later submits show') or diag(status_of($primary, 'backlog'));
my $m5 = metrics($pport);
my @queues = sort keys %{ { map { $_ => 1 } $m5 =~ /^hasched_jobs\{queue="([^"]+)"/mg } };
is_deeply(\@queues, [ '(other)', 'qa', 'qb' ],
	'hasched.metrics_max_queues = 2: the two deepest queues, the rest as "(other)"');
is(sample($m5, 'hasched_jobs{queue="(other)",state="scheduled"}'), 1, '(other) sums the smaller queues');
is(sample($m5, 'hasched_queues_counted'), 3, 'hasched_queues_counted: every queue with jobs');

# --- the text format, strictly -----------------------------------------------------------
sub check_exposition
{
	my ($text) = @_;
	my (%type, %help, %seen, @errors, %family_done);
	my $name_re = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
	my $value_re = qr/(?:[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN)/;
	my $last_family = '';
	push @errors, 'does not end with a newline' unless $text =~ /\n\z/;
	for my $line (split /\n/, $text)
	{
		if ($line =~ /^# HELP ($name_re) (.*)$/)
		{
			push @errors, "HELP twice for $1" if $help{$1}++;
			push @errors, "HELP of $1 after its samples" if $family_done{$1};
			next;
		}
		if ($line =~ /^# TYPE ($name_re) (counter|gauge|histogram|summary|untyped)$/)
		{
			push @errors, "TYPE twice for $1" if $type{$1};
			push @errors, "TYPE of $1 after its samples" if $family_done{$1};
			$type{$1} = $2;
			next;
		}
		if ($line =~ /^#/) { push @errors, "bad comment line: $line"; next; }
		if ($line !~ /^($name_re)(\{(.*)\})? ($value_re)$/)
		{
			push @errors, "not a sample: $line";
			next;
		}
		my ($name, $labels) = ($1, $3 // '');
		push @errors, "name without hasched_ prefix: $name" unless $name =~ /^hasched_/;
		my $family = $name;
		$family =~ s/_(bucket|sum|count)$// if !$type{$name};
		push @errors, "sample of $name before its TYPE" unless $type{$family};
		if ($family ne $last_family)
		{
			push @errors, "samples of $family are not together" if $family_done{$family};
			$family_done{$last_family} = 1 if $last_family ne '';
			$last_family = $family;
		}
		my $rest = $labels;
		while ($rest ne '')
		{
			if ($rest =~ s/^($name_re)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)//) { next; }
			push @errors, "bad labels in: $line";
			last;
		}
		push @errors, "sample twice: $name\{$labels\}" if $seen{"$name\{$labels\}"}++;
	}
	# histograms: cumulative buckets, +Inf == _count
	for my $h (grep { $type{$_} eq 'histogram' } keys %type)
	{
		my @b = $text =~ /^${h}_bucket\{le="([^"]+)"\} (\S+)$/mg;
		my $prev = -1;
		my $inf;
		while (my ($le, $v) = splice(@b, 0, 2))
		{
			push @errors, "$h buckets not cumulative at le=$le" if $v < $prev;
			$prev = $v;
			$inf = $v if $le eq '+Inf';
		}
		my ($count) = $text =~ /^${h}_count (\S+)$/m;
		push @errors, "$h: +Inf bucket != _count"
		  unless defined $inf && defined $count && $inf == $count;
		push @errors, "$h: no _sum" unless $text =~ /^${h}_sum \S+$/m;
	}
	return (\@errors, [ sort keys %type ]);
}

my ($errors, $families) = check_exposition($m5);
is_deeply($errors, [], 'GET /metrics passes the strict text format check') or diag(join("\n", @$errors));
my ($serrors) = check_exposition(metrics($sport));
is_deeply($serrors, [], 'the standby\'s /metrics too') or diag(join("\n", @$serrors));
ok(@$families >= 25, scalar(@$families) . ' metric families');
# the check can fail: a broken exposition is caught
my ($bad) = check_exposition("# TYPE hasched_x gauge\nhasched_x{a=\"1} 2\nhasched_y 1\nhasched_x 1\n");
is(scalar @$bad, 3, 'the check catches bad labels, a sample before its TYPE, a family split in two')
  or diag(join("\n", @$bad));

# doc/operations.md lists every family
my $doc = slurp_file(dirname(__FILE__) . '/../../doc/operations.md');
my @missing = grep { $doc !~ /`\Q$_\E[`{]/ } @$families;
is_deeply(\@missing, [], 'doc/operations.md lists every metric family');

# --- the synchronous standby goes away ----------------------------------------------------
$standby->stop('fast');
ok($primary->poll_within(30, q{SELECT status = 'failed' AND detail LIKE 'synchronous_standby_names asks for 1 synchronous standby(s) and 0 stream: commits, submits among them, wait%'
	FROM hasched.health() WHERE component = 'replication'}),
	'synchronous standby gone: replication failed, saying why')
  or diag(status_of($primary, 'replication'));
($st, $head, $body) = HaschedCluster::http_get($pport, '/health');
is($st, 503, 'GET /health 503 while commits wait');
like($body, qr/^\{"status": "failed"/, 'overall failed');
$standby->start;
ok($primary->poll_within(30, q{SELECT status = 'ok' FROM hasched.health() WHERE component = 'replication'}),
	'it is back: replication ok');

# --- the automatic modes (degrade.c) show in the mode row and /metrics ---------------------------
# 12 jobs wait: thresholds of 5 put the primary in both automatic modes
$primary->query(q{ALTER SYSTEM SET hasched.readonly_backlog = 5;
	ALTER SYSTEM SET hasched.holdback_backlog = 5; SELECT pg_reload_conf()});
ok($primary->poll_within(30, q{SELECT status = 'degraded' AND detail LIKE '%; automatic read-only since % (%): submissions are refused (JQ003)%; priority hold-back since %: a due job of medium priority waits 300 s, of low priority 3600 s'
	FROM hasched.health() WHERE component = 'mode'}),
	'overload: the mode row shows the automatic read-only mode and the hold-back')
  or diag(status_of($primary, 'mode'));
my $m6 = metrics($pport);
is(sample($m6, 'hasched_auto_read_only') . sample($m6, 'hasched_holdback'), '11',
	'metrics: hasched_auto_read_only 1, hasched_holdback 1');
like($primary->query_error(q{SELECT hasched.submit('qa', '{}')}), qr/JQ003/, 'automatic read-only: a submit is refused');
is(sample(metrics($pport), 'hasched_submits_refused_total{reason="read_only"}'), 2,
	'the automatic refusal counts as read_only too');
$primary->query(q{ALTER SYSTEM RESET hasched.readonly_backlog;
	ALTER SYSTEM RESET hasched.holdback_backlog; SELECT pg_reload_conf()});

# --- executors that cannot start -------------------------------------------------------------
# room for the scheduler and the logical replication launcher only
my $tight = HaschedCluster->primary('tight', conf => "max_worker_processes = 2\n");
$tight->query(q{INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, transport) VALUES ('sq', 'sql')});
$tight->query(q{SELECT hasched.submit('sq', '{"sql": "SELECT 1"}')});
ok($tight->poll_within(30, q{SELECT status = 'degraded' AND detail LIKE 'could not start an executor % s ago: raise max_worker_processes; 0 running%'
	FROM hasched.health() WHERE component = 'executors'}),
	'no room for an executor: executors degraded, saying what to raise')
  or diag(status_of($tight, 'executors'));
$tight->stop;

diag("GET /health on the primary:\n$curl_health");
diag("GET /metrics on the primary (excerpt):\n" . join("\n", grep { !/^#/ } split /\n/, $m5));

done_testing();
