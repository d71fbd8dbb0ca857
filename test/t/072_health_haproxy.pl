
# Copyright: hasched contributors
#
# 072_health_haproxy.pl: HAProxy (Debian's haproxy) in front of a primary and
# a standby, routing by the health listener's /primary and /replica, as
# doc/operations.md configures it (on loopback ports, faster checks).
#
# Proves:
#   - a connection to HAProxy's write port reaches the primary (its port,
#     not in recovery), one to the read port reaches the standby;
#   - after the primary stops and the standby is promoted, connections to
#     the write port reach the promoted server, without touching HAProxy's
#     configuration (the figure printed: seconds from pg_ctl promote to the
#     first connection routed there).
#
# Run (as an ordinary user, hasched installed):
#   make REGRESS= installcheck PROVE_TESTS=test/t/072_health_haproxy.pl
use strict;
use warnings;

use HaschedCluster;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $haproxy = -x '/usr/sbin/haproxy' ? '/usr/sbin/haproxy' : `command -v haproxy`;
chomp $haproxy;
plan skip_all => 'haproxy is not installed (scripts/deps.d/health.list)' unless $haproxy && -x $haproxy;

my ($ph, $sh, $write, $read) = map { PostgreSQL::Test::Cluster::get_free_port() } 1 .. 4;
my $tcp = "listen_addresses = '127.0.0.1'\n";
my $primary = HaschedCluster->primary('primary', streaming => 1,
	conf => $tcp . "hasched.health_port = $ph\n");
my $standby = HaschedCluster->standby($primary, 'standby', conf => "hasched.health_port = $sh\n");
my ($pport, $sport) = ($primary->port, $standby->port);

my $cfg = $PostgreSQL::Test::Utils::tmp_check . '/haproxy.cfg';
open my $fh, '>', $cfg or die "$cfg: $!";
print $fh <<"EOF";
global
    maxconn 100

defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout check 1s

listen pg_primary
    bind 127.0.0.1:$write
    option httpchk GET /primary
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1 on-marked-down shutdown-sessions
    server primary 127.0.0.1:$pport check port $ph
    server standby 127.0.0.1:$sport check port $sh

listen pg_replicas
    bind 127.0.0.1:$read
    balance roundrobin
    option httpchk GET /replica
    http-check expect status 200
    default-server inter 200ms fall 2 rise 1
    server primary 127.0.0.1:$pport check port $ph
    server standby 127.0.0.1:$sport check port $sh
EOF
close $fh;

my ($hout, $herr) = ('', '');
my $h = IPC::Run::start([ $haproxy, '-f', $cfg, '-db' ], '>', \$hout, '2>', \$herr);
END { $h->kill_kill if $h && $h->pumpable; }

# Which server does a new connection through HAProxy's port reach?  "port|in recovery"
sub through
{
	my ($port) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run(
		[ 'psql', '-XAtq', '-d', "host=127.0.0.1 port=$port dbname=postgres connect_timeout=2",
			'-c', "SELECT inet_server_port() || '|' || pg_is_in_recovery()" ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(10));
	chomp $out;
	return $out;
}

sub wait_through
{
	my ($port, $want, $secs) = @_;
	my $end = time + $secs;
	my $got = '';
	while (time < $end)
	{
		$got = eval { through($port) } // '';
		return (1, $got) if $got eq $want;
		usleep(100_000);
	}
	return (0, $got);
}

my ($ok, $got) = wait_through($write, "$pport|false", 30);
ok($ok, 'the write port reaches the primary') or diag("got '$got'; haproxy: $herr");
($ok, $got) = wait_through($read, "$sport|true", 30);
ok($ok, 'the read port reaches the streaming standby') or diag("got '$got'; haproxy: $herr");
is(through($write), "$pport|false", 'again: the primary');

# --- promotion --------------------------------------------------------------------
$primary->stop('immediate');
my $t0 = time;
$standby->promote;
($ok, $got) = wait_through($write, "$sport|false", 60);
ok($ok, 'after the promotion the write port reaches the promoted server')
  or diag("got '$got'; haproxy: $herr");
diag(sprintf('writes routed to the promoted server %.2f s after pg_ctl promote was called', time - $t0));

$h->kill_kill;
done_testing();
