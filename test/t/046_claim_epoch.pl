
# Copyright: hasched contributors
#
# 046_claim_epoch.pl: claims on a promoted standby before its scheduler has
# opened the new epoch (issue 7, item 12).
#
# A statement trigger on hasched.epoch (made on the primary, replicated)
# holds the scheduler's INSERT of the new epoch for 3 s after the promotion.
# Meanwhile a claim must not hand out a token of the old epoch: it is
# refused with JQ004 (or waits until the epoch is open and carries the new
# one).  A transaction that began while the server was a standby gets JQ004
# too, not SQLSTATE 25006 with hasched's internal SQL.  Once the epoch is
# open, claims carry it.
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/046_claim_epoch.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $primary = HaschedCluster->primary('primary', streaming => 1, conf => "fsync = off\n");
$primary->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	INSERT INTO hasched.queue (name, lease) VALUES ('q', '1 hour');
	SELECT hasched.submit_many('q', array_fill('{}'::jsonb, ARRAY[20]));
	CREATE FUNCTION public.slow_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		PERFORM pg_sleep(3);
		RETURN NULL;
	END $$;
	CREATE TRIGGER slow_epoch BEFORE INSERT ON hasched.epoch
		FOR EACH STATEMENT EXECUTE FUNCTION public.slow_epoch();
});
is($primary->safe_psql('postgres', q{SELECT max(epoch) FROM hasched.epoch}), '1', 'the primary is in epoch 1');

my $standby = HaschedCluster->standby($primary, 'standby');

# a transaction that begins while the server is a standby
my $old = $standby->background_psql('postgres', on_error_stop => 0);
$old->query_safe('BEGIN');
$old->query_safe('SELECT count(*) FROM hasched.job');

$primary->stop('immediate');
$standby->promote;

my ($ret, $out, $err) = $standby->psql('postgres',
	qq{\\set VERBOSITY verbose\nSELECT token FROM hasched.claim('q', 'early', 1)});
note "claim right after the promotion: ret $ret, out [$out], err [$err]";
ok(($ret != 0 && $err =~ /JQ004/) || ($ret == 0 && $out =~ /^2:/),
	'a claim before the new epoch is open is refused with JQ004 or carries the new epoch');

$old->query(qq{\\set VERBOSITY verbose\nSELECT token FROM hasched.claim('q', 'old', 1);});
note "claim in a transaction begun in recovery: [$old->{stderr}]";
like($old->{stderr}, qr/JQ004/, 'a claim in a transaction that began on the standby is refused with JQ004');
unlike($old->{stderr}, qr/25006/, 'and not with SQLSTATE 25006');
$old->quit;

ok($standby->poll_query_until('postgres', q{SELECT max(epoch) = 2 FROM hasched.epoch}),
	'the scheduler opens epoch 2');
like($standby->safe_psql('postgres', q{SELECT token FROM hasched.claim('q', 'late', 1)}),
	qr/^2:/, 'then claims carry epoch 2');

$standby->stop;
done_testing();
