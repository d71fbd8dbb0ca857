
# Copyright: hasched contributors
#
# 089_worker_amqp_prefetch.pl: hasched-worker's --prefetch with --amqp: the
# broker's prefetch count follows the commands' run time.
#
#   - short jobs (20 of 0.3 s, --concurrency 1 --prefetch 3): the worker consumes
#     again with prefetch 4 (RabbitMQ shows it), starts deliveries ahead
#     (more than one job running in the table, never more than 4), runs
#     one command at a time, and each job once;
#   - long jobs (5 s): once the average passes 1 s it consumes with
#     prefetch 1 again and gives the deliveries not started back to the
#     broker; every job succeeds once, none re-dispatched (no run row);
#   - before any job finished the count is --concurrency alone.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/089_worker_amqp_prefetch.pl
use strict;
use warnings;

use HaschedCluster;
use HaschedWorker;
use HaschedRabbitMQ;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $tmp = worker_tmp();
my $mq = HaschedRabbitMQ->new('mq089');
$mq->start;
my $url = $mq->url;

my $node = HaschedCluster->primary('main', conf => $mq->hasched_conf . q{
hasched.amqp_queue_type = 'classic'
hasched.scheduler_naptime = '200ms'
});
$node->query(
	q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE wrk LOGIN IN ROLE hasched_worker;
	INSERT INTO hasched.queue (name, transport, lease) VALUES ('aq', 'amqp', '30 seconds');
});
my $db = 'host=' . $node->host . ' port=' . $node->port . ' dbname=postgres user=wrk';

mkdir "$tmp/conc" or die;
my $script = "$tmp/job.sh";
open my $fh, '>', $script or die;
print $fh <<"EOS";
#!/bin/sh
payload=\$(cat)
secs=\$(printf '%s' "\$payload" | sed -n 's/.*"secs": *\\([0-9.]*\\).*/\\1/p')
echo "\$HASCHED_JOB_ID" >> "$tmp/ran.\$HASCHED_JOB_ID"
touch "$tmp/conc/\$\$"
ls "$tmp/conc" | wc -l >> "$tmp/conc.counts"
sleep "\${secs:-0}"
rm -f "$tmp/conc/\$\$"
EOS
close $fh;
chmod 0755, $script;

sub submit
{
	my ($n, $secs) = @_;
	return $node->query(
		"SELECT string_agg(id::text, ',') FROM unnest(hasched.submit_many('aq',
		   ARRAY(SELECT '{\"secs\": $secs}'::jsonb FROM generate_series(1, $n)))) id");
}

sub runs
{
	my ($ids) = @_;
	my $twice = 0;
	for my $id (split /,/, $ids)
	{
		my $f = "$tmp/ran.$id";
		my @l = -f $f ? split(/\n/, slurp_file($f)) : ();
		$twice++ if @l != 1;
	}
	return $twice;
}

# the prefetch count of the worker's consumers, as RabbitMQ has it
sub prefetch_counts
{
	my $out = $mq->ctl('list_consumers', '--no-table-headers', 'consumer_tag', 'prefetch_count') // '';
	my %c;
	for my $line (split /\n/, $out)
	{
		my ($tag, $n) = split /\s+/, $line;
		$c{$tag} = $n if defined $n && $tag =~ /^band\d$/;
	}
	return join(' ', map { $c{$_} // '-' } qw(band0 band1 band2));
}

my $w = start_worker(db => $db, amqp => $url, queue => 'aq',
	args => [ '--concurrency', '1', '--prefetch', '3' ], cmd => [$script]);
ok(within(30, sub { slurp_log($w) =~ /consuming hasched\.aq\.\{high,medium,low\} on .* \(prefetch 1, classic queues\)/ }),
	'before any job finished: prefetch 1 (--concurrency)');
is(prefetch_counts(), '1 1 1', 'RabbitMQ shows the three consumers with prefetch 1');

# short jobs: the count grows
my $short = submit(20, 0.3);
my ($max, $end) = (0, time + 60);
while (time < $end)
{
	my ($running, $done) = split /\|/, $node->query(
		"SELECT count(*) FILTER (WHERE state = 'running'), count(*) FILTER (WHERE state = 'succeeded')
		   FROM hasched.job WHERE id IN ($short)");
	$max = $running if $running > $max;
	last if $done == 20;
	usleep(50_000);
}
ok($node->poll_within(5, "SELECT count(*) = 20 FROM hasched.job WHERE id IN ($short) AND state = 'succeeded'"),
	'20 jobs of 0.3 s succeed');
cmp_ok($max, '>', 1, "deliveries were started ahead of a free slot (up to $max running in the database)");
cmp_ok($max, '<=', 4, "never more than --concurrency + --prefetch started ($max)");
like(slurp_log($w), qr/prefetch count now 4 \(--concurrency 1 \+ 3\)/, 'the commands are short: prefetch 4');
is(prefetch_counts(), '4 4 4', 'RabbitMQ shows the new consumers with prefetch 4');
my @c = -f "$tmp/conc.counts" ? split(/\n/, slurp_file("$tmp/conc.counts")) : ();
is(scalar(grep { $_ > 1 } @c), 0, 'never more than one command at once (' . join(' ', @c) . ')');
is(runs($short), 0, 'each command ran once');

# long jobs: back to --concurrency, what waits given back
my $long = submit(4, 5);
ok(within(60, sub { slurp_log($w) =~ /prefetch count now 1 \(--concurrency 1 \+ 0\)/ }),
	'the commands got long (5 s): prefetch 1 again');
ok(within(20, sub { prefetch_counts() eq '1 1 1' }), 'RabbitMQ shows the consumers with prefetch 1');
ok($node->poll_within(60, "SELECT count(*) = 4 FROM hasched.job WHERE id IN ($long) AND state = 'succeeded'"),
	'the 4 long jobs succeed');
is(runs($long), 0, 'each long command ran once');
is($node->query("SELECT count(*) FROM hasched.job_run WHERE job_id IN ($short, $long)"), '0',
	'no attempt ended early: none re-dispatched');

kill 'TERM', $w->{pid};
is(wait_exit($w, 30), 0, 'SIGTERM: exit 0');
$node->stop;
$mq->stop;
done_testing();
