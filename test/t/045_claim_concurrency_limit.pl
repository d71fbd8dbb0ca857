
# Copyright: hasched contributors
#
# 045_claim_concurrency_limit.pl: a queue's concurrency limit holds in every
# isolation level, and a claim never waits on another claim or on a lock
# any role can take.
#
#   - issue 7, item 7: a REPEATABLE READ claim whose snapshot predates
#     other claims must not run the queue over its limit (limit 2: at most
#     2 running, whatever it returns);
#   - item 8: claims on a limited queue with room left return at once
#     (within statement_timeout = 3 s) while another transaction that
#     claimed from the queue is open, or prepared and left behind;
#   - issue 8, item 6: an advisory lock taken by an unprivileged role on the
#     key 0.1.0 used for the queue does not block claims.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/045_claim_concurrency_limit.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'limit', conf => q{
max_prepared_transactions = 4
fsync = off
});
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease, concurrency)
	     VALUES ('rr', '1 hour', 2), ('open', '1 hour', 10), ('prep', '1 hour', 10),
	            ('adv', '1 hour', 10);
	SELECT hasched.submit_many('rr', array_fill('{}'::jsonb, ARRAY[4]));
	SELECT hasched.submit_many('open', array_fill('{}'::jsonb, ARRAY[10]));
	SELECT hasched.submit_many('prep', array_fill('{}'::jsonb, ARRAY[10]));
	SELECT hasched.submit_many('adv', array_fill('{}'::jsonb, ARRAY[10]));
	CREATE ROLE nobody LOGIN;
});

sub running
{
	my ($queue) = @_;
	return $node->safe_psql('postgres',
		"SELECT count(*) FROM hasched.job WHERE queue = '$queue' AND state = 'running'");
}

# ---------------------------------------------------------------------------
# item 7: REPEATABLE READ
# ---------------------------------------------------------------------------
{
	my $t = $node->background_psql('postgres', on_error_stop => 0);
	$t->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
	$t->query_safe('SELECT count(*) FROM hasched.job');
	is($node->safe_psql('postgres', q{SELECT count(*) FROM hasched.claim('rr', 'rc', 2)}),
		'2', 'a READ COMMITTED claim fills the limit of 2');
	my $got = $t->query(q{SELECT count(*) FROM hasched.claim('rr', 'rr', 2)});
	note "the REPEATABLE READ claim returned [$got], stderr [$t->{stderr}]";
	$t->query('COMMIT');
	cmp_ok(running('rr'), '<=', 2,
		'after a REPEATABLE READ claim with an older snapshot, no more than 2 jobs run');
	$t->quit;
}

# ---------------------------------------------------------------------------
# item 8: an open claiming transaction, a prepared one
# ---------------------------------------------------------------------------
sub claim_with_timeout
{
	my ($queue, $n) = @_;
	my ($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '3s'; SELECT count(*) FROM hasched.claim('$queue', 'other', $n)");
	return $ret == 0 ? $out : "error: $err";
}
{
	my $a = $node->background_psql('postgres');
	$a->query_safe('BEGIN');
	is($a->query_safe(q{SELECT count(*) FROM hasched.claim('open', 'a', 1)}), '1',
		'a transaction claims one job of a queue limited to 10 and stays open');
	is(claim_with_timeout('open', 5), '5',
		'another claim on that queue returns 5 jobs at once, without waiting for it');
	$a->query_safe('COMMIT');
	$a->quit;

	my $p = $node->background_psql('postgres');
	$p->query_safe('BEGIN');
	$p->query_safe(q{SELECT count(*) FROM hasched.claim('prep', 'p', 1)});
	$p->query_safe(q{PREPARE TRANSACTION 'claimer'});
	is(claim_with_timeout('prep', 5), '5',
		'with a prepared claiming transaction left behind, a claim still returns 5 jobs at once');
	$node->safe_psql('postgres', q{ROLLBACK PREPARED 'claimer'});
	$p->quit;
}

# ---------------------------------------------------------------------------
# issue 8, item 6: advisory locks any role can take
# ---------------------------------------------------------------------------
{
	my $x = $node->background_psql('postgres', connstr => $node->connstr('postgres') . ' user=nobody');
	$x->query_safe(q{SELECT pg_advisory_lock(1212374856, hashtext('adv'))});
	is(claim_with_timeout('adv', 5), '5',
		'an unprivileged role holding an advisory lock on the queue\'s name does not block claims');
	$x->quit;
}

$node->stop;
done_testing();
