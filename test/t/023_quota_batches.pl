
# Copyright: hasched contributors
#
# 023_quota_batches.pl: concurrent batches cannot take a tenant past its
# daily quota (issue 8, "Also": 20 sessions submitting batches of 10 took
# a tenant of 100 jobs a day to 250).
#
# A batch counts in full against the quota before it is accepted, and so
# do the batches of other sessions that have not committed yet. Proves,
# with 20 sessions that each submit a batch of 10 inside an open
# transaction and commit only after all have tried:
#   - exactly 10 batches are accepted, the other 10 are refused with JQ001,
#     and the tenant ends the day at exactly its quota of 100;
#   - a batch that rolls back frees its share at once: a refused batch is
#     accepted after the open batch it collided with rolls back;
#   - a single submit over the quota is refused.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/023_quota_batches.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = HaschedCluster->primary(
	'quota', conf => q{
max_connections = 40
});

$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.queue (name) VALUES ('pullq');
	-- 100 a day, no rate limit: only the daily quota is at stake
	INSERT INTO hasched.tier (name, jobs_per_day) VALUES ('capped', 100);
	CREATE ROLE acme NOLOGIN;
	CREATE ROLE alice LOGIN IN ROLE acme, hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('acme', 'capped');
	ALTER ROLE alice SET hasched.tenant = 'acme';
});

sub query { return $node->query($_[0]); }

my $batch = q{SELECT cardinality(hasched.submit_many('pullq', array_fill('{}'::jsonb, ARRAY[10])))};

my @s;
for my $i (1 .. 20)
{
	push @s, $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'alice' ]);
}
my ($accepted, $refused, $other) = (0, 0, '');
for my $s (@s)
{
	$s->query_safe('BEGIN');
	my ($out, $err) = $s->query("\\set VERBOSITY sqlstate\n$batch");
	if (!$err && $out eq '10')
	{
		$accepted++;
	}
	elsif ($s->{stderr} =~ /JQ001/)
	{
		$refused++;
	}
	else
	{
		$other .= "[$out $s->{stderr}]";
	}
}
$_->query('COMMIT') for @s;
$_->quit for @s;

is($other, '', 'every batch was either accepted or refused over the quota (JQ001)');
is($accepted, 10, 'of 20 concurrent batches of 10, exactly 10 were accepted');
is($refused, 10, 'the other 10 were refused with JQ001');
is(query(q{SELECT count(*) FROM hasched.job WHERE tenant::text = 'acme'}), '100',
	'the tenant holds exactly its quota of 100 jobs');
is(query(q{SELECT used_today FROM hasched.tenants WHERE tenant = 'acme'}), '100',
	'and 100 are counted');
my ($rc, $out, $err) = $node->psql('postgres', "\\set VERBOSITY sqlstate\nSELECT hasched.submit('pullq', '{}')",
	extra_params => [ '-U', 'alice' ]);
like($err, qr/JQ001/, 'one more submit is refused');

# a batch that rolls back frees its share at once (tenant globex, also
# capped at 100, with 90 used)
query(q{CREATE ROLE globex NOLOGIN;
	CREATE ROLE bob LOGIN IN ROLE globex, hasched_submitter;
	INSERT INTO hasched.tenant (name, tier) VALUES ('globex', 'capped');
	ALTER ROLE bob SET hasched.tenant = 'globex'});
$node->safe_psql('postgres', "SELECT hasched.submit_many('pullq', array_fill('{}'::jsonb, ARRAY[10]))",
	extra_params => [ '-U', 'bob' ])
  for 1 .. 9;
is(query(q{SELECT used_today FROM hasched.tenants WHERE tenant = 'globex'}), '90', '(globex has room for one batch)');
my $a = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'bob' ]);
my $b = $node->background_psql('postgres', on_error_stop => 0, extra_params => [ '-U', 'bob' ]);
$a->query_safe('BEGIN');
is($a->query($batch), '10', 'an open batch takes the last 10');
$b->query_safe('BEGIN');
$b->query("\\set VERBOSITY sqlstate\n$batch");
like($b->{stderr}, qr/JQ001/, 'a second batch meanwhile is refused: the open one counts');
$b->{stderr} = '';    # BackgroundPsql keeps stderr until told
$b->query('ROLLBACK');
$a->query('ROLLBACK');
$b->query_safe('BEGIN');
is($b->query($batch), '10', 'once the open batch rolled back, the second batch is accepted');
$b->query('COMMIT');
$a->quit;
$b->quit;
is(query(q{SELECT count(*) FROM hasched.job WHERE tenant::text = 'globex'}), '100', 'globex is at its quota');

$node->stop;
done_testing();
