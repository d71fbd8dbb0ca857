
# Copyright: hasched contributors
#
# HaschedZooKeeper.pm: a real ZooKeeper ensemble for hasched's TAP tests
# (and the chaos suite): Debian's zookeeper 3.8 started with java on free
# loopback ports, one data directory with a myid file per node, the
# four-letter words and the admin server off; stopped by pid.
#
# IDENTIFICATION
#	test/perl/HaschedZooKeeper.pm

=pod

=head1 NAME

HaschedZooKeeper - start, stop and break a ZooKeeper ensemble in a test

=head1 SYNOPSIS

  use HaschedZooKeeper;

  my $zk = HaschedZooKeeper->new('zk', nodes => 3, tick_ms => 500);
  $zk->start;                                # all nodes; waits until it serves
  my $conf = $zk->hasched_conf(timeout_ms => 6000, margin_ms => 2000);
  my $primary = HaschedCluster->primary('primary', conf => $conf);

  $zk->kill_node($zk->leader_index);         # SIGKILL one node
  $zk->start_node(2);
  my $holder = $zk->hold('/hasched/workers/w1', 3000);   # an ephemeral znode
  kill 'KILL', $holder;

=head1 DESCRIPTION

Each node gets a directory under the test's tmp_check: zoo.cfg,
log4j.properties (console, into zookeeper.log), data/myid and
zookeeper.pid.  Nodes still running when the script exits are killed (an
END block); scripts/lib.sh stops leftovers found by their zookeeper.pid.

Client operations (hold, create, get, ls, delete) go through
test/perl/hasched_zk.py, a small kazoo client (python3-kazoo).

=cut

package HaschedZooKeeper;

use strict;
use warnings;

use Carp;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

my @ensembles;
my $helper = dirname(__FILE__) . '/hasched_zk.py';

# the java classpath: the configuration directory first (log4j), the
# server, and a logging binding for its slf4j
my @jars = map { "/usr/share/java/$_" }
  qw(zookeeper.jar slf4j-log4j12.jar log4j-1.2.jar);

=pod

=head1 METHODS

=over

=item HaschedZooKeeper->new($name, nodes => 3, tick_ms => 500)

Configures (does not start) an ensemble of C<nodes> servers with that
tickTime: sessions may then last 2 to 20 ticks.

=cut

sub new
{
	my ($class, $name, %opt) = @_;
	my $self = bless {
		name => $name,
		nodes => $opt{nodes} // 3,
		tick_ms => $opt{tick_ms} // 500,
		dir => "$PostgreSQL::Test::Utils::tmp_check/zk_$name",
		node => [],
	}, $class;
	for my $i (1 .. $self->{nodes})
	{
		push @{ $self->{node} }, {
			client => PostgreSQL::Test::Cluster::get_free_port(),
			peer => PostgreSQL::Test::Cluster::get_free_port(),
			election => PostgreSQL::Test::Cluster::get_free_port(),
			dir => "$self->{dir}/node$i",
			pid => 0,
		};
	}
	$self->_configure;
	push @ensembles, $self;
	return $self;
}

sub _configure
{
	my ($self) = @_;
	my $servers = '';
	for my $i (1 .. $self->{nodes})
	{
		my $n = $self->{node}[ $i - 1 ];
		$servers .= "server.$i=127.0.0.1:$n->{peer}:$n->{election}\n";
	}
	for my $i (1 .. $self->{nodes})
	{
		my $n = $self->{node}[ $i - 1 ];
		make_path("$n->{dir}/data");
		PostgreSQL::Test::Utils::append_to_file("$n->{dir}/data/myid", "$i\n")
		  unless -f "$n->{dir}/data/myid";
		open my $fh, '>', "$n->{dir}/zoo.cfg" or croak "zoo.cfg: $!";
		print $fh <<"EOF";
tickTime=$self->{tick_ms}
initLimit=10
syncLimit=5
dataDir=$n->{dir}/data
clientPort=$n->{client}
clientPortAddress=127.0.0.1
4lw.commands.whitelist=
admin.enableServer=false
$servers
EOF
		close $fh;
		open $fh, '>', "$n->{dir}/log4j.properties" or croak "log4j.properties: $!";
		print $fh <<'EOF';
log4j.rootLogger=INFO, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
EOF
		close $fh;
	}
	return;
}

=pod

=item HaschedZooKeeper::tick_for($session_timeout_ms)

A tickTime that grants that session timeout (at most 20 ticks): 500 ms up
to 10 s sessions, longer beyond.

=cut

sub tick_for
{
	my ($timeout_ms) = @_;
	my $tick = int(($timeout_ms + 19) / 20);
	return $tick < 500 ? 500 : $tick;
}

=pod

=item $zk->connect_string

host:port,host:port,... of every node.

=cut

sub connect_string
{
	my ($self) = @_;
	return join(',', map { "127.0.0.1:$_->{client}" } @{ $self->{node} });
}

=pod

=item $zk->hasched_conf(timeout_ms => 6000, margin_ms => 2000, path => '/hasched')

postgresql.conf lines that point hasched's coordinator at this ensemble.

=cut

sub hasched_conf
{
	my ($self, %o) = @_;
	my $path = $o{path} // '/hasched';
	my $timeout = $o{timeout_ms} // 6000;
	my $margin = $o{margin_ms} // 2000;
	my $cs = $o{connect} // $self->connect_string;
	return "hasched.zookeeper = '$cs'\n"
	  . "hasched.zookeeper_path = '$path'\n"
	  . "hasched.zookeeper_session_timeout = $timeout\n"
	  . "hasched.zookeeper_fence_margin = $margin\n";
}

=pod

=item $zk->start

Starts every node that is not running and waits until the ensemble
serves clients.

=cut

sub start
{
	my ($self) = @_;
	$self->start_node($_, nowait => 1) for 1 .. $self->{nodes};
	$self->wait_serving(60) or croak "ZooKeeper ensemble $self->{name} did not start";
	return;
}

=pod

=item $zk->start_node($i, nowait => 0)

Starts node $i (1-based) with java; unless nowait, waits until the
ensemble serves clients.

=cut

sub start_node
{
	my ($self, $i, %o) = @_;
	my $n = $self->{node}[ $i - 1 ];
	return if $n->{pid} && kill(0, $n->{pid});
	my $cp = join(':', $n->{dir}, @jars);
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', "$n->{dir}/zookeeper.log");
		open(STDERR, '>&', \*STDOUT);
		POSIX::setsid();
		exec('java', '-Xmx128m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1',
			'-Djava.net.preferIPv4Stack=true', '-Dzookeeper.jmx.log4j.disable=true',
			'-cp', $cp, 'org.apache.zookeeper.server.quorum.QuorumPeerMain',
			"$n->{dir}/zoo.cfg")
		  or POSIX::_exit(127);
	}
	$n->{pid} = $pid;
	PostgreSQL::Test::Utils::append_to_file("$n->{dir}/zookeeper.pid.new", "$pid\n");
	rename("$n->{dir}/zookeeper.pid.new", "$n->{dir}/zookeeper.pid");
	$self->wait_serving(60) unless $o{nowait};
	return $pid;
}

=pod

=item $zk->kill_node($i, $signal = 'KILL')

Sends $signal to node $i and, for KILL and TERM, reaps it.

=cut

sub kill_node
{
	my ($self, $i, $signal) = @_;
	my $n = $self->{node}[ $i - 1 ];
	$signal //= 'KILL';
	return unless $n->{pid};
	kill $signal, $n->{pid};
	if ($signal eq 'KILL' || $signal eq 'TERM')
	{
		waitpid($n->{pid}, 0);
		$n->{pid} = 0;
		unlink "$n->{dir}/zookeeper.pid";
	}
	return;
}

=pod

=item $zk->stop

Kills every node (SIGTERM, then SIGKILL after 5 s), and the holders of
hold().

=cut

sub stop
{
	my ($self) = @_;
	for my $h (@{ $self->{holders} // [] })
	{
		kill 'KILL', $h;
		waitpid($h, POSIX::WNOHANG());
	}
	$self->{holders} = [];
	for my $n (@{ $self->{node} })
	{
		next unless $n->{pid};
		kill 'TERM', $n->{pid};
	}
	my $end = time + 5;
	for my $n (@{ $self->{node} })
	{
		next unless $n->{pid};
		while (time < $end && waitpid($n->{pid}, POSIX::WNOHANG()) == 0)
		{
			usleep(50_000);
		}
		if (kill(0, $n->{pid}))
		{
			kill 'KILL', $n->{pid};
			waitpid($n->{pid}, 0);
		}
		$n->{pid} = 0;
		unlink "$n->{dir}/zookeeper.pid";
	}
	return;
}

=pod

=item $zk->pid($i)

The pid of node $i (0 when it is not running).

=cut

sub pid
{
	my ($self, $i) = @_;
	return $self->{node}[ $i - 1 ]{pid};
}

=pod

=item $zk->leader_index

The node that leads the ensemble now, by what each running node's log
last said of its role (LEADING or FOLLOWING); undef if none says LEADING.

=cut

sub leader_index
{
	my ($self) = @_;
	for my $i (1 .. $self->{nodes})
	{
		my $n = $self->{node}[ $i - 1 ];
		next unless $n->{pid};
		my $log = PostgreSQL::Test::Utils::slurp_file("$n->{dir}/zookeeper.log");
		my @roles = $log =~ /Peer state changed: (leading|following|looking)/g;
		return $i if @roles && $roles[-1] eq 'leading';
	}
	return undef;
}

=pod

=item $zk->wait_serving($secs)

True once a client can connect (through the running nodes).

=cut

sub wait_serving
{
	my ($self, $secs) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		return 1 if $self->client('wait', 5) == 0;
		usleep(200_000);
	}
	return 0;
}

=pod

=item $zk->client(@args)

Runs test/perl/hasched_zk.py with the connect string and @args; returns
its exit status in scalar context, (status, stdout) in list context.

=cut

sub client
{
	my ($self, @args) = @_;
	my ($out, $err) = ('', '');
	IPC::Run::run([ '/usr/bin/python3', $helper, $self->connect_string, @args ],
		'>', \$out, '2>', \$err);
	my $rc = $? >> 8;
	chomp $out;
	return wantarray ? ($rc, $out, $err) : $rc;
}

=pod

=item $zk->hold($path, $timeout_ms)

Starts a client that creates the ephemeral znode $path and keeps its
session (of $timeout_ms) until killed: an external worker's liveness
znode.  Returns its pid once the znode exists.

=cut

sub hold
{
	my ($self, $path, $timeout_ms) = @_;
	my $out = "$self->{dir}/hold.$$." . int(rand(1e9));
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>', $out);
		open(STDERR, '>&', \*STDOUT);
		exec('/usr/bin/python3', $helper, $self->connect_string, 'hold', $path, $timeout_ms)
		  or POSIX::_exit(127);
	}
	push @{ $self->{holders} }, $pid;
	my $end = time + 30;
	while (time < $end)
	{
		my $text = -f $out ? PostgreSQL::Test::Utils::slurp_file($out) : '';
		return $pid if $text =~ /^held /m;
		croak "hold $path failed: $text" if waitpid($pid, POSIX::WNOHANG()) == $pid;
		usleep(50_000);
	}
	croak "hold $path: no znode after 30 s";
}

END
{
	my $rc = $?;
	$_->stop for @ensembles;
	$? = $rc;
}

=pod

=back

=cut

1;
