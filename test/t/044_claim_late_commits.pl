
# Copyright: hasched contributors
#
# 044_claim_late_commits.pl: jobs that become claimable by a transaction
# committing after claims passed their place in the queue (issue 7, items
# 5 and 6) are handed out by the very next claim.
#
#   - item 5: a job submitted in a transaction that went through PREPARE
#     TRANSACTION, committed with COMMIT PREPARED after a claim took a
#     later job;
#   - item 6: a waiting job whose priority, or queue, a hand UPDATE changes:
#     to a priority a claim scanned while the UPDATE was open, or to a
#     queue whose claims have passed its run_at.
#
# hasched.claim_rewind_interval is one hour here: no periodic rescan hides
# a cursor moved too far; the claims must get it right by themselves.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/044_claim_late_commits.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'late', conf => q{
hasched.claim_rewind_interval = '1h'
max_prepared_transactions = 4
fsync = off
});
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease)
	     VALUES ('q5', '1 hour'), ('q6', '1 hour'), ('q6a', '1 hour'), ('q6b', '1 hour');
});

sub claim_ids
{
	my ($queue) = @_;
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(job_id::text, ',' ORDER BY job_id), '') FROM hasched.claim('$queue', 'w', 5)");
}

# ---------------------------------------------------------------------------
# item 5: PREPARE TRANSACTION, then COMMIT PREPARED after a claim
# ---------------------------------------------------------------------------
{
	my $p = $node->background_psql('postgres');
	$p->query_safe('BEGIN');
	my $j = $p->query_safe(q{SELECT hasched.submit('q5', '{"n": "prepared"}')});
	$p->query_safe(q{PREPARE TRANSACTION 'late_submit'});
	my $k = $node->safe_psql('postgres', q{SELECT hasched.submit('q5', '{"n": "later"}')});
	is(claim_ids('q5'), $k, 'a claim hands out the later job while the first is prepared');
	$node->safe_psql('postgres', q{COMMIT PREPARED 'late_submit'});
	is(claim_ids('q5'), $j, 'the next claim hands out the job once COMMIT PREPARED made it visible');
	$p->quit;
}

# ---------------------------------------------------------------------------
# item 6: hand UPDATEs of a waiting job's priority or queue
# ---------------------------------------------------------------------------
{
	my $j = $node->safe_psql('postgres', q{SELECT hasched.submit('q6', '{}', priority => 'low')});
	my $u = $node->background_psql('postgres');
	$u->query_safe('BEGIN');
	$u->query_safe("UPDATE hasched.job SET priority = 0 WHERE id = $j");
	is(claim_ids('q6'), '', 'a claim skips the job while an UPDATE of its priority is open');
	$u->query_safe('COMMIT');
	is(claim_ids('q6'), $j, 'the next claim hands out the job at its new priority');
	$u->quit;
}
{
	my $j = $node->safe_psql('postgres', q{SELECT hasched.submit('q6a', '{}')});
	is(claim_ids('q6b'), '', 'a claim on another queue finds nothing (and passes the time of the job)');
	$node->safe_psql('postgres', "UPDATE hasched.job SET queue = 'q6b' WHERE id = $j");
	is(claim_ids('q6b'), $j, 'a job moved to that queue by a hand UPDATE is handed out by its next claim');
}

$node->stop;
done_testing();
