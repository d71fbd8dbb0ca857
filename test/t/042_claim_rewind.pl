
# Copyright: hasched contributors
#
# 042_claim_rewind.pl: the periodic rescan from the head of a queue (the
# rewind) finds a job the claim cursors passed, within
# hasched.claim_rewind_interval (1 s here), however the claims go:
#
#   - item 2 of issue 7: claims that fill their batch in a higher priority
#     must not use up the rescan of the lower priorities they never reach;
#   - item 3: a claim that waited 3 s on LOCK TABLE ... IN SHARE MODE (what
#     CREATE INDEX takes) must not turn rescans off for a minute.
#
# The job is passed the way only a rescan can find it: a session outside
# hasched holds it with SELECT ... FOR UPDATE while claims skip it, then
# rolls back.  After that, claims that come back short must hand it out
# within the interval (the test allows 3 s).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/042_claim_rewind.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = HaschedCluster->primary(
	'rewind', conf => q{
hasched.claim_rewind_interval = '1s'
fsync = off
});
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('q2', '1 hour'), ('q3', '1 hour');
});

sub claim_ids
{
	my ($queue, $worker, $n) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(job_id::text, ','), '') FROM hasched.claim('$queue', '$worker', $n)");
}

# A job passed by the cursors: held FOR UPDATE by a user session while a
# claim scans past it; returns the job and the session (still holding it).
sub passed_job
{
	my ($queue, $priority) = @_;
	my $j = $node->safe_psql('postgres', "SELECT hasched.submit('$queue', '{}', priority => '$priority')");
	my $u = $node->background_psql('postgres');
	$u->query_safe('BEGIN');
	$u->query_safe("SELECT 1 FROM hasched.job WHERE id = $j FOR UPDATE");
	is(claim_ids($queue, 'first', 5), '', "a claim on $queue skips the job held FOR UPDATE");
	return ($j, $u);
}

# ---------------------------------------------------------------------------
# item 2: claims that fill their batch in a higher priority
# ---------------------------------------------------------------------------
{
	my ($j, $u) = passed_job('q2', 'low');
	$u->query_safe('ROLLBACK');
	my $free = time();
	my $found;

	# each round: a pause, then a claim of one job that a new high-priority
	# job fills, then a claim that comes back short
	while (time() - $free < 5 && !defined $found)
	{
		usleep(200_000);
		$node->safe_psql('postgres', q{SELECT hasched.submit('q2', '{}', priority => 'high')});
		claim_ids('q2', 'full', 1);
		my $got = claim_ids('q2', 'short', 5);
		$found = time() - $free if grep { $_ eq $j } split /,/, $got;
	}
	ok(defined $found && $found < 3,
		'a low-priority job passed by the cursors is handed out within 3 s while claims fill their batch in a higher priority'
	) or diag(defined $found ? sprintf('found after %.3f s', $found) : 'not found in 5 s');
	$u->quit;
}

# ---------------------------------------------------------------------------
# item 3: a rescan that waited on LOCK TABLE ... IN SHARE MODE
# ---------------------------------------------------------------------------
{
	my ($j, $u) = passed_job('q3', 'medium');
	usleep(1_200_000);			# the next claim rescans from the head

	my $p = $node->background_psql('postgres');
	$p->query_safe('BEGIN');
	$p->query_safe('LOCK TABLE hasched.job IN SHARE MODE');
	my $c = $node->background_psql('postgres');
	my $cpid = $c->query_safe('SELECT pg_backend_pid()');
	$c->{stdin} .= "SELECT count(*) FROM hasched.claim('q3', 'waiting', 5);\n\\echo CLAIM-DONE\n";
	$c->{run}->pump_nb;
	ok( $node->poll_query_until(
			'postgres', "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = $cpid"),
		'a claim waits on the table lock');
	sleep 3;
	$p->query_safe('COMMIT');
	$c->{timeout}->start;
	until ($c->{stdout} =~ /CLAIM-DONE/)
	{
		die 'the claim did not end' if $c->{timeout}->is_expired;
		$c->{run}->pump;
	}
	$u->query_safe('ROLLBACK');
	my $free = time();
	my $found;
	while (time() - $free < 5 && !defined $found)
	{
		usleep(200_000);
		my $got = claim_ids('q3', 'short', 5);
		$found = time() - $free if grep { $_ eq $j } split /,/, $got;
	}
	ok(defined $found && $found < 3,
		'after a claim waited 3 s on LOCK TABLE ... IN SHARE MODE, a passed job is still handed out within 3 s'
	) or diag(defined $found ? sprintf('found after %.3f s', $found) : 'not found in 5 s');
	$u->quit;
	$p->quit;
	$c->quit;
}

$node->stop;
done_testing();
