
# Copyright: hasched contributors
#
# 041_claim_newer_version.pl: a claim that locks a row whose newest version
# committed after the claim's snapshot (issue 7, item 1).
#
# FOR UPDATE then locks the newest version, which the claim's UPDATE cannot
# see: the claim locks a job it does not hand out.  That must not be taken
# for "every priority was scanned to its end": the claim and the claims
# after it still hand out the due job and the two low-priority jobs that
# wait.  hasched.claim_rewind_interval is one hour here, so no periodic
# rescan can hide a cursor moved too far.
#
# To stop the claim between its snapshot and its scan, a statement-level
# BEFORE UPDATE trigger on hasched.job (it fires when the claim's UPDATE
# starts, before the claim's CTE locks rows) waits on an advisory lock held
# by the test, in the claiming session only.  Meanwhile a hand UPDATE of
# the due job's payload commits.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/041_claim_newer_version.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $node = HaschedCluster->primary(
	'newer', conf => q{
hasched.claim_rewind_interval = '1h'
fsync = off
});
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('q', '1 hour');
});

# the pause: in sessions with hasched_test.pause = on, an UPDATE of
# hasched.job waits for advisory lock 4242 when it starts
$node->safe_psql(
	'postgres', q{
	CREATE FUNCTION public.pause_claim() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF current_setting('hasched_test.pause', true) = 'on' THEN
			PERFORM pg_advisory_lock(4242);
			PERFORM pg_advisory_unlock(4242);
		END IF;
		RETURN NULL;
	END $$;
	CREATE TRIGGER pause_claim BEFORE UPDATE ON hasched.job
		FOR EACH STATEMENT EXECUTE FUNCTION public.pause_claim();
});

my $ja = $node->safe_psql('postgres', q{SELECT hasched.submit('q', '{"n": "A"}', priority => 'high')});
my $jl1 = $node->safe_psql('postgres', q{SELECT hasched.submit('q', '{"n": "L1"}', priority => 'low')});
my $jl2 = $node->safe_psql('postgres', q{SELECT hasched.submit('q', '{"n": "L2"}', priority => 'low')});

my $gate = $node->background_psql('postgres');
$gate->query_safe('SELECT pg_advisory_lock(4242)');

# C claims one job: it takes its snapshot and stops before its scan
my $c = $node->background_psql('postgres');
my $cpid = $c->query_safe('SELECT pg_backend_pid()');
$c->query_safe('SET hasched_test.pause = on');
my $t0 = time();
$c->{stdin} .= "SELECT string_agg(job_id::text, ',') FROM hasched.claim('q', 'c', 1);\n\\echo CLAIM-DONE\n";
$c->{run}->pump_nb;
ok( $node->poll_query_until(
		'postgres',
		"SELECT wait_event = 'advisory' FROM pg_stat_activity WHERE pid = $cpid"),
	'the claim stops after its snapshot, before its scan');

# meanwhile a hand UPDATE of the due job commits
$node->safe_psql('postgres', qq{UPDATE hasched.job SET payload = '{"n": "A2"}' WHERE id = $ja});
$gate->query_safe('SELECT pg_advisory_unlock(4242)');
$c->{timeout}->start;
until ($c->{stdout} =~ /CLAIM-DONE/)
{
	die 'the claim did not end' if $c->{timeout}->is_expired;
	$c->{run}->pump;
}
my $took = time() - $t0;
my ($got_c) = $c->{stdout} =~ /^([\d,]*)\n?CLAIM-DONE/m;
$got_c //= '';
$c->{stdout} = '';
note sprintf('the racing claim took %.3f s and returned [%s]', $took, $got_c);

my $got_next = $node->safe_psql('postgres',
	q{SELECT string_agg(job_id::text, ',') FROM hasched.claim('q', 'next', 3)});
my %got = map { $_ => 1 } grep { $_ ne '' } split(/,/, "$got_c,$got_next");
is_deeply(
	[ sort { $a <=> $b } keys %got ],
	[ sort { $a <=> $b } ($ja, $jl1, $jl2) ],
	'the racing claim and the next one hand out the due job and both low-priority jobs');
is($node->safe_psql('postgres', q{SELECT count(*) FROM hasched.job WHERE queue = 'q' AND state = 'pending'}),
	'0', 'no job of the queue is left waiting');

$gate->quit;
$c->quit;
$node->stop;
done_testing();
