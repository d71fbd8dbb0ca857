
# Copyright: hasched contributors
#
# The chaos suite's smoke scenario (test/chaos/chaos.py smoke): a 3-node
# ZooKeeper ensemble, three PostgreSQL nodes under Patroni 3.0.2 with
# hasched (synchronous_mode_strict, the third node a DR standby), HAProxy
# routing on GET /primary, two load generators (HAProxy and a multi-host
# string), two hasched-workers and a cron schedule every second; the
# primary's postmaster is killed with SIGKILL once, the load drained, and
# the checker must find nothing lost, nothing recorded or run twice, no
# cron run fired twice and no job stuck. `make chaos` runs every scenario.

use strict;
use warnings;

use Cwd qw(abs_path);
use File::Basename qw(dirname);
use IO::Socket::INET;
use PostgreSQL::Test::Utils;
use Test::More;

for my $need ('/usr/bin/patroni', '/usr/sbin/haproxy', '/usr/share/java/zookeeper.jar')
{
	plan skip_all => "$need is not installed (scripts/deps.sh)" unless -e $need;
}

my $root = abs_path(dirname(__FILE__) . '/../..');
my $dir = "$PostgreSQL::Test::Utils::tmp_check/chaos_smoke";
my $bindir = `pg_config --bindir`;
chomp $bindir;

# fixed ports of this project's range: the first base whose ports are free
sub ports_free
{
	my ($base) = @_;
	for my $off (1 .. 3, 11 .. 13, 21 .. 23, 101 .. 103, 111 .. 113, 121 .. 123,
		131 .. 133, 141 .. 143, 151 .. 153, 211 .. 213, 221 .. 223, 231 .. 233,
		300, 301, 401, 402)
	{
		my $s = IO::Socket::INET->new(
			LocalAddr => '127.0.0.1',
			LocalPort => $base + $off,
			Proto => 'tcp',
			ReuseAddr => 1);
		return 0 unless $s;
		close $s;
	}
	return 1;
}
my ($base) = grep { ports_free($_) } (26000, 26500);
plan skip_all => 'ports 26000-26999 are taken (another chaos run?)' unless $base;

my $out = '';
my $t0 = time;
{
	local $ENV{PG_BINDIR} = $bindir;
	local $ENV{CHAOS_PORT_BASE} = $base;
	$out = `timeout -k 10 240 /usr/bin/python3 $root/test/chaos/chaos.py smoke --dir $dir 2>&1`;
}
my $rc = $? >> 8;
note $out;
note sprintf('the smoke run took %d s', time - $t0);

is($rc, 0, 'chaos smoke exits 0');
like($out, qr/^smoke: ok$/m, 'the checker found no defect');
like($out, qr/\| SIGKILL of the primary's postmaster \| 1 \| [0-9.]+ \|/,
	'a job completed again after the postmaster was killed');
like($out, qr/acknowledged submits lost 0 /, 'no acknowledged submit lost');
like($out, qr/results recorded twice 0 /, 'no result recorded twice');
like($out, qr/SQL effects twice 0;/, 'no SQL effect twice');
like($out, qr/cron runs fired twice 0 /, 'no cron run fired twice');
like($out, qr/jobs stuck in a non-final state after the drain 0;/, 'no job stuck');
like($out, qr/unexpected jobs 0;/, 'no unexpected job');
unlike($out, qr/Traceback/, 'no Python traceback');

done_testing();
