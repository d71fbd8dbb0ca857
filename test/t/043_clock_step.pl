
# Copyright: hasched contributors
#
# 043_clock_step.pl: a backward step of the server's wall clock (issue 7,
# item 4) must neither leave a new job unclaimed nor freeze rate limits.
#
# The server runs under libfaketime, its wall clock read from a file that
# the test rewrites (the monotonic clock is left alone, as NTP leaves it);
# hasched.claim_rewind_interval is 1 s.  After a claim, the clock steps
# back 20 s:
#   - a job submitted then (its run_at is 20 s before the last claim's) is
#     handed out by claims within 3 s;
#   - a tenant limited to 2 jobs per second, whose burst was used just
#     before the step, may submit again 1 s after it.
#
# Run (as an ordinary user, hasched installed, libfaketime from
# scripts/deps.sh):
#   make REGRESS= installcheck PROVE_TESTS=test/t/043_clock_step.pl
use strict;
use warnings;

use HaschedCluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep time);

my $lib = '/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1';
ok(-e $lib, 'libfaketime is installed (scripts/deps.sh installs it)')
  or BAIL_OUT("$lib is missing: install the Debian package libfaketime");

my $rc = "${PostgreSQL::Test::Utils::tmp_check}/faketime.rc";
sub set_offset
{
	my ($offset) = @_;
	open my $fh, '>', "$rc.new" or die "cannot write $rc.new: $!";
	print $fh "$offset\n";
	close $fh;
	rename "$rc.new", $rc or die "cannot rename to $rc: $!";
}
set_offset('+0');

# the server runs under libfaketime (initdb too, at offset +0)
my $node;
{
	local $ENV{LD_PRELOAD} = $lib;
	local $ENV{FAKETIME_TIMESTAMP_FILE} = $rc;
	local $ENV{FAKETIME_CACHE_DURATION} = '1';
	local $ENV{FAKETIME_DONT_FAKE_MONOTONIC} = '1';
	$node = HaschedCluster->primary(
		'clock', conf => q{
hasched.claim_rewind_interval = '1s'
fsync = off
});
}
$node->safe_psql(
	'postgres', q{
	INSERT INTO hasched.tenant (name, tier) VALUES (current_user, 'enterprise');
	CREATE ROLE ratey NOLOGIN;
	INSERT INTO hasched.tenant (name, tier, rate_per_second, burst) VALUES ('ratey', 'enterprise', 2, 2);
	INSERT INTO hasched.queue (name, lease) VALUES ('q', '1 hour');
});

sub claim_ids
{
	return $node->safe_psql('postgres',
		"SELECT coalesce(string_agg(job_id::text, ','), '') FROM hasched.claim('q', 'w', 5)");
}

# a job claimed: the cursors stand at the current time
my $j1 = $node->safe_psql('postgres', q{SELECT hasched.submit('q', '{}')});
is(claim_ids(), $j1, 'a job is submitted and claimed');

# the tenant uses its burst
$node->safe_psql('postgres', q{SELECT hasched.submit('q', '{}', tenant => 'ratey')}) for 1 .. 2;
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT hasched.submit('q', '{}', tenant => 'ratey')});
like($err, qr/JQ002|over its rate limit/, 'a third submit in the same second is rate limited');

my $before = $node->safe_psql('postgres', q{SELECT extract(epoch FROM clock_timestamp())});
set_offset('-20s');
# libfaketime rereads the file once its cache (1 s) is old: wait for it
my $after;
my $waited = time();
do
{
	usleep(300_000);
	$after = $node->safe_psql('postgres', q{SELECT extract(epoch FROM clock_timestamp())});
} while ($before - $after < 15 && time() - $waited < 15);
cmp_ok($before - $after, '>', 15, 'the server clock stepped back');

usleep(1_000_000);				# 1 s refills 2 tokens at 2 per second
($ret, $out, $err) = $node->psql('postgres', q{SELECT hasched.submit('q', '{}', tenant => 'ratey')});
is($ret, 0, 'the rate-limited tenant may submit again 1 s after the clock stepped back')
  or diag $err;

my $j2 = $node->safe_psql('postgres', q{SELECT hasched.submit('q', '{}')});
my $t0 = time();
my $found;
while (time() - $t0 < 6 && !defined $found)
{
	my $got = claim_ids();
	$found = time() - $t0 if grep { $_ eq $j2 } split /,/, $got;
	usleep(200_000) unless defined $found;
}
ok(defined $found && $found < 3, 'a job submitted after the step back is handed out within 3 s')
  or diag(defined $found ? sprintf('found after %.3f s', $found) : 'not found in 6 s');

$node->stop;
done_testing();
