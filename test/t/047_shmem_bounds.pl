
# Copyright: hasched contributors
#
# 047_shmem_bounds.pl: hasched's shared hash tables stay within their
# settings (issue 7, item 13).  Past the bound they must not take shared
# memory that the lock tables rely on.
#
#   - hasched.max_queues = 16: after claims on 100 queues, at most 16 claim
#     cursors exist (claims on the others still hand out their jobs);
#   - hasched.max_tenants = 16: 40 tenants limited to a burst of 1 each
#     submit twice; at most 16 of them can still have a rate bucket, so at
#     most 16 second submits are refused.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/047_shmem_bounds.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'bounds', conf => q{
hasched.max_queues = 16
hasched.max_tenants = 16
fsync = off
});
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) SELECT 'q' || g, '1 hour' FROM generate_series(1, 100) g;
	SELECT hasched.submit('q' || g, '{}') FROM generate_series(1, 100) g;
});

my $claimed = $node->safe_psql('postgres',
	q{SELECT sum((SELECT count(*) FROM hasched.claim('q' || g, 'w', 1))) FROM generate_series(1, 100) g});
is($claimed, '100', 'claims on 100 queues hand out each queue\'s job');
my $cursors = $node->safe_psql('postgres', q{SELECT count(DISTINCT queue) FROM hasched.claim_cursors()});
cmp_ok($cursors, '<=', 16, "at most hasched.max_queues = 16 claim cursors exist (found $cursors)");

$node->safe_psql(
	'postgres', q{
	DO $$
	BEGIN
		FOR g IN 1 .. 40 LOOP
			EXECUTE format('CREATE ROLE %I NOLOGIN', 't' || g);
			INSERT INTO hasched.tenant (name, tier, rate_per_second, burst)
			     VALUES ('t' || g, 'enterprise', 0.01, 1);
		END LOOP;
	END $$;
});
for my $round (1 .. 2)
{
	my $refused = 0;
	for my $g (1 .. 40)
	{
		my ($ret, $out, $err) = $node->psql('postgres',
			"SELECT hasched.submit('q1', '{}', tenant => 't$g')");
		$refused++ if $ret != 0 && $err =~ /rate limit/;
	}
	if ($round == 1)
	{
		is($refused, 0, 'each of 40 tenants submits its first job');
	}
	else
	{
		cmp_ok($refused, '<=', 16,
			"at most hasched.max_tenants = 16 tenants still have a rate bucket ($refused second submits refused)");
	}
}

$node->stop;
done_testing();
