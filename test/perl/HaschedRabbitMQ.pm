# Copyright: hasched contributors
#
# HaschedRabbitMQ.pm: a real RabbitMQ broker for hasched's TAP tests (and
# the bench): Debian's rabbitmq-server 3.10 started as the ordinary user
# that runs the tests, on free loopback ports, with its own mnesia, log and
# configuration directories, its own HOME (the .erlang.cookie) and its own
# epmd on a private port, so that brokers of concurrent tests never meet.
# Stopped by pid (the process group of the server and the epmd's pid).
#
# IDENTIFICATION
#	test/perl/HaschedRabbitMQ.pm

=pod

=head1 NAME

HaschedRabbitMQ - start, stop, kill and restart a RabbitMQ broker in a test

=head1 SYNOPSIS

  use HaschedRabbitMQ;

  my $mq = HaschedRabbitMQ->new('mq');
  $mq->start;                          # waits until it accepts AMQP (~9 s)
  my $url = $mq->url;                  # amqp://guest:guest@127.0.0.1:PORT
  my $primary = HaschedCluster->primary('primary',
      conf => "hasched.amqp_url = '$url'\n");

  $mq->kill9;                          # SIGKILL the broker (epmd stays)
  $mq->start;                          # same ports, same data: restart
  my @rows = $mq->queues;              # [name, messages] from rabbitmqctl
  my @bodies = $mq->get('hasched.q.high', 10);   # basic.get and ack
  $mq->stop;                           # graceful, then SIGKILL

  # a cluster of three: one epmd and one cookie, started in parallel
  my $m1 = HaschedRabbitMQ->new('m1');
  my $m2 = HaschedRabbitMQ->new('m2', cluster_with => $m1);
  my $m3 = HaschedRabbitMQ->new('m3', cluster_with => $m1);
  $_->start(nowait => 1) for ($m1, $m2, $m3);
  $_->wait_started(120) for ($m1, $m2, $m3);
  $_->join_cluster($m1) for ($m2, $m3);   # stop_app, join_cluster, start_app

=head1 DESCRIPTION

Each broker gets a directory under the test's tmp_check: etc/
(rabbitmq.conf, rabbitmq-env.conf, enabled_plugins), mnesia/, log/, home/,
server.out, and two pid files: rabbitmq.pid (the beam.smp process) and
epmd.pid.  Brokers still running when the script exits are killed (an END
block); scripts/lib.sh stops leftovers found by their pid files.

The node name is rabbit<amqp port>@localhost, so two brokers on one
machine never share a name; the distribution port and the epmd port are
free ports of their own.  The broker's CLI (rabbitmqctl) reaches the node
through the same environment (ctl()).

get() consumes with a small C client (test/perl/hasched_amqp_get.c, built
once per test run with librabbitmq), so tests can read what the
dispatcher published.

=cut

package HaschedRabbitMQ;

use strict;
use warnings;

use Carp;
use Cwd ();
use File::Basename qw(dirname);
use File::Path qw(make_path);
use IO::Socket::INET;
use POSIX ();
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Time::HiRes qw(time usleep);

my @brokers;
my $sbin = '/usr/lib/rabbitmq/bin';
my $get_src = dirname(__FILE__) . '/hasched_amqp_get.c';

=pod

=head1 METHODS

=over

=item HaschedRabbitMQ->new($name, amqp_port => undef, tls => 0, cluster_with => undef)

Configures (does not start) a broker; ports are free loopback ports
unless given.  With tls => 1 it also listens for amqps on tls_port, with a
certificate for localhost and 127.0.0.1 signed by a CA made by the openssl
command for this broker (ca_file; other_ca_file is a CA that signed
nothing).  With cluster_with => $other, the broker uses $other's epmd
(started and stopped by $other) and HOME (so the same .erlang.cookie), so
that it can join $other's cluster.

=cut

sub new
{
	my ($class, $name, %opt) = @_;
	my $peer = $opt{cluster_with};
	my $self = bless {
		name => $name,
		# absolute: the broker resolves relative paths (logs, the quorum
		# queues' Ra log) against directories of its own
		dir => Cwd::abs_path($PostgreSQL::Test::Utils::tmp_check) . "/rmq_$name",
		port => $opt{amqp_port} // PostgreSQL::Test::Cluster::get_free_port(),
		tls_port => $opt{tls} ? PostgreSQL::Test::Cluster::get_free_port() : 0,
		dist_port => PostgreSQL::Test::Cluster::get_free_port(),
		epmd_port => $peer ? $peer->{epmd_port} : PostgreSQL::Test::Cluster::get_free_port(),
		epmd_shared => $peer ? 1 : 0,
		pgid => 0,
		pid => 0,
		epmd_pid => 0,
	}, $class;
	$self->{node} = "rabbit$self->{port}\@localhost";
	$self->{home} = $peer ? $peer->{home} : "$self->{dir}/home";
	$self->_configure;
	push @brokers, $self;
	return $self;
}

sub _configure
{
	my ($self) = @_;
	my $d = $self->{dir};
	make_path("$d/etc", "$d/mnesia", "$d/log", "$d/home");
	my $tls = '';
	if ($self->{tls_port})
	{
		_make_certs("$d/tls");
		$tls = <<"EOF";
listeners.ssl.default = 127.0.0.1:$self->{tls_port}
ssl_options.cacertfile = $d/tls/ca.pem
ssl_options.certfile = $d/tls/server.pem
ssl_options.keyfile = $d/tls/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
	}
	_write("$d/etc/rabbitmq.conf", $tls . <<"EOF");
listeners.tcp.1 = 127.0.0.1:$self->{port}
loopback_users = none
log.console = false
log.file.level = info
disk_free_limit.absolute = 1MB
vm_memory_high_watermark.relative = 0.6
EOF
	# read by rabbitmq-env instead of /etc/rabbitmq/rabbitmq-env.conf
	_write("$d/etc/rabbitmq-env.conf", "# hasched test broker $self->{name}\n");
	_write("$d/etc/enabled_plugins", "[].\n");
	_write("$d/etc/advanced.config", "[].\n");
	# one cookie for the nodes of a cluster, written before any starts
	my $cookie = "$self->{home}/.erlang.cookie";
	if (!-e $cookie)
	{
		make_path($self->{home});
		_write($cookie, sprintf('HASCHEDTEST%d%d', $$, $self->{port}));
		chmod 0400, $cookie;
	}
	return;
}

# a CA (ca.pem), the broker's certificate signed by it for localhost and
# 127.0.0.1 (server.pem, server.key), and a second CA that signed nothing
# (other-ca.pem), made with the openssl command
sub _make_certs
{
	my ($dir) = @_;
	make_path($dir);
	my @run = (
		[ qw(openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=hasched-test-ca),
			'-keyout', "$dir/ca.key", '-out', "$dir/ca.pem" ],
		[ qw(openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=hasched-other-ca),
			'-keyout', "$dir/other-ca.key", '-out', "$dir/other-ca.pem" ],
		[ qw(openssl req -newkey rsa:2048 -nodes -subj /CN=localhost),
			'-keyout', "$dir/server.key", '-out', "$dir/server.csr" ],
	);
	for my $cmd (@run)
	{
		my ($out, $err) = ('', '');
		IPC::Run::run($cmd, '>', \$out, '2>', \$err) or croak "@$cmd: $err";
	}
	_write("$dir/san.ext", "subjectAltName = DNS:localhost, IP:127.0.0.1\n");
	my ($out, $err) = ('', '');
	IPC::Run::run([ qw(openssl x509 -req -days 2 -CAcreateserial),
			'-in', "$dir/server.csr", '-CA', "$dir/ca.pem", '-CAkey', "$dir/ca.key",
			'-extfile', "$dir/san.ext", '-out', "$dir/server.pem" ],
		'>', \$out, '2>', \$err) or croak "openssl x509: $err";
	chmod 0644, glob("$dir/*");
	return;
}

sub _write
{
	my ($path, $text) = @_;
	open my $fh, '>', $path or croak "$path: $!";
	print $fh $text;
	close $fh;
	return;
}

# the environment of the server and of its CLI
sub _env
{
	my ($self) = @_;
	my $d = $self->{dir};
	return (
		HOME => $self->{home},
		RABBITMQ_CONF_ENV_FILE => "$d/etc/rabbitmq-env.conf",
		RABBITMQ_CONFIG_FILE => "$d/etc/rabbitmq.conf",
		RABBITMQ_ADVANCED_CONFIG_FILE => "$d/etc/advanced.config",
		RABBITMQ_ENABLED_PLUGINS_FILE => "$d/etc/enabled_plugins",
		RABBITMQ_MNESIA_BASE => "$d/mnesia",
		RABBITMQ_LOG_BASE => "$d/log",
		RABBITMQ_PID_FILE => "$d/mnesia/beam.pid",
		RABBITMQ_NODENAME => $self->{node},
		RABBITMQ_NODE_IP_ADDRESS => '127.0.0.1',
		RABBITMQ_NODE_PORT => $self->{port},
		RABBITMQ_DIST_PORT => $self->{dist_port},
		RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS =>
		  '-kernel inet_dist_use_interface {127,0,0,1}',
		ERL_EPMD_PORT => $self->{epmd_port},
		ERL_EPMD_ADDRESS => '127.0.0.1',
	);
}

=pod

=item $mq->port, $mq->url, $mq->node, $mq->dir

The AMQP port, amqp://guest:guest@127.0.0.1:PORT (vhost /; guest may log in
from loopback), the Erlang node name, the broker's directory.

=cut

sub port { return $_[0]{port}; }
sub tls_port { return $_[0]{tls_port}; }

# amqps://guest:guest@localhost:TLS_PORT (made with tls => 1), and the CA
# file its certificate chains to; other_ca_file: a CA that did not sign it
sub tls_url { return "amqps://guest:guest\@localhost:$_[0]{tls_port}"; }
sub ca_file { return "$_[0]{dir}/tls/ca.pem"; }
sub other_ca_file { return "$_[0]{dir}/tls/other-ca.pem"; }
sub node { return $_[0]{node}; }
sub dir  { return $_[0]{dir}; }

sub url
{
	my ($self) = @_;
	return "amqp://guest:guest\@127.0.0.1:$self->{port}";
}

=pod

=item $mq->hasched_conf(%extra)

postgresql.conf lines that point hasched's dispatcher at this broker.

=cut

sub hasched_conf
{
	my ($self) = @_;
	return "hasched.amqp_url = '" . $self->url . "'\n";
}

=pod

=item $mq->start(wait => 60, nowait => 0)

Starts the private epmd (unless running, or shared) and the broker
(unless running); waits until the broker answers an AMQP protocol header
with connection.start.  Restarting after kill9() keeps the ports and data.
Returns the seconds it took.  With nowait => 1 it returns at once:
wait_started() waits (so that several brokers start in parallel).

=cut

sub start
{
	my ($self, %o) = @_;
	my $t0 = time;
	$self->_start_epmd;
	if (!($self->{pid} && kill(0, $self->{pid})))
	{
		my %env = $self->_env;
		my $pid = fork();
		croak "fork: $!" unless defined $pid;
		if ($pid == 0)
		{
			POSIX::setsid();
			open(STDIN, '<', '/dev/null');
			open(STDOUT, '>>', "$self->{dir}/server.out");
			open(STDERR, '>&', \*STDOUT);
			@ENV{ keys %env } = values %env;
			exec("$sbin/rabbitmq-server") or POSIX::_exit(127);
		}
		$self->{pgid} = $pid;
		$self->{pid} = 0;
	}
	return 0 if $o{nowait};
	$self->wait_started($o{wait} // 60);
	return time - $t0;
}

=pod

=item $mq->wait_started($secs)

Waits until the broker started by start(nowait => 1) accepts AMQP (croaks
after $secs) and notes its pid.

=cut

sub wait_started
{
	my ($self, $secs) = @_;
	$self->wait_ready($secs)
	  or croak "RabbitMQ $self->{name} did not accept AMQP on port $self->{port}"
	  . " (see $self->{dir}/server.out and log/)";
	$self->{pid} = $self->_beam_pid || $self->{pgid};
	_write("$self->{dir}/rabbitmq.pid", "$self->{pid}\n");
	return;
}

=pod

=item $mq->join_cluster($other)

Makes this (running, fresh) broker a member of $other's cluster:
rabbitmqctl stop_app, join_cluster, start_app; croaks on failure.

=cut

sub join_cluster
{
	my ($self, $other) = @_;
	for my $args ([ 'stop_app' ], [ 'join_cluster', $other->node ], [ 'start_app' ])
	{
		my ($rc, $out, $err) = $self->ctl(@$args);
		croak "rabbitmqctl -n $self->{node} @$args: $err" if $rc != 0;
	}
	$self->wait_ready(60)
	  or croak "RabbitMQ $self->{name} did not accept AMQP after joining";
	return;
}

sub _start_epmd
{
	my ($self) = @_;
	return if $self->{epmd_shared};
	return if $self->{epmd_pid} && kill(0, $self->{epmd_pid});
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		POSIX::setsid();
		open(STDIN, '<', '/dev/null');
		open(STDOUT, '>>', "$self->{dir}/epmd.out");
		open(STDERR, '>&', \*STDOUT);
		$ENV{HOME} = $self->{home};
		exec('epmd', '-port', $self->{epmd_port}, '-address', '127.0.0.1')
		  or POSIX::_exit(127);
	}
	$self->{epmd_pid} = $pid;
	_write("$self->{dir}/epmd.pid", "$pid\n");
	# epmd listens within milliseconds; the server retries anyway
	my $end = time + 5;
	while (time < $end)
	{
		my $s = IO::Socket::INET->new(
			PeerAddr => '127.0.0.1',
			PeerPort => $self->{epmd_port},
			Timeout => 1);
		last if $s;
		usleep(50_000);
	}
	return;
}

# the beam.smp process in the server's process group
sub _beam_pid
{
	my ($self) = @_;
	opendir(my $dh, '/proc') or return 0;
	for my $p (grep { /^\d+$/ } readdir $dh)
	{
		open my $fh, '<', "/proc/$p/stat" or next;
		my $stat = <$fh>;
		close $fh;
		next unless defined $stat && $stat =~ /^\d+ \(([^)]*)\) \S+ \d+ (\d+)/;
		return $p + 0 if $1 eq 'beam.smp' && $2 == $self->{pgid};
	}
	return 0;
}

=pod

=item $mq->wait_ready($secs)

True once the broker answers the AMQP 0-9-1 protocol header with a
method frame (connection.start).

=cut

sub wait_ready
{
	my ($self, $secs) = @_;
	my $end = time + $secs;
	while (time < $end)
	{
		return 1 if $self->accepts_amqp;
		return 0 if $self->{pgid} && waitpid($self->{pgid}, POSIX::WNOHANG()) > 0;
		usleep(200_000);
	}
	return 0;
}

=pod

=item $mq->accepts_amqp

True when the broker's port answers the protocol header now.

=cut

sub accepts_amqp
{
	my ($self) = @_;
	my $s = IO::Socket::INET->new(
		PeerAddr => '127.0.0.1',
		PeerPort => $self->{port},
		Timeout => 2) or return 0;
	$s->autoflush(1);
	print $s "AMQP\x00\x00\x09\x01";
	my $buf = '';
	my $rin = '';
	vec($rin, fileno($s), 1) = 1;
	return 0 unless select(my $rout = $rin, undef, undef, 3) > 0;
	sysread($s, $buf, 7);
	close $s;
	return length($buf) == 7 && ord(substr($buf, 0, 1)) == 1;
}

=pod

=item $mq->kill9

SIGKILL to the broker's process group (the server, its shell and helper
processes); epmd keeps running, as it would on a real host.

=cut

sub kill9
{
	my ($self) = @_;
	return unless $self->{pgid};
	kill 'KILL', -$self->{pgid};
	waitpid($self->{pgid}, 0);
	$self->{pgid} = 0;
	$self->{pid} = 0;
	unlink "$self->{dir}/rabbitmq.pid";
	return;
}

=pod

=item $mq->pause, $mq->resume

SIGSTOP / SIGCONT to the broker's beam.smp: a broker that stops reading
its sockets (its connections stay open, the kernel's buffers fill) and
comes back.  pause returns the pid it stopped (0: none found).

=cut

sub pause
{
	my ($self) = @_;
	my $pid = $self->_beam_pid;
	kill 'STOP', $pid if $pid;
	$self->{paused} = $pid;
	return $pid;
}

sub resume
{
	my ($self) = @_;
	kill 'CONT', $self->{paused} if $self->{paused};
	$self->{paused} = 0;
	return;
}

=pod

=item $mq->stop

SIGTERM to the server (a clean shutdown), SIGKILL to its group after
20 s; then the private epmd.

=cut

sub stop
{
	my ($self) = @_;
	$self->resume;
	if ($self->{pgid})
	{
		kill 'TERM', ($self->{pid} || $self->{pgid});
		my $end = time + 20;
		while (time < $end && waitpid($self->{pgid}, POSIX::WNOHANG()) == 0)
		{
			usleep(100_000);
		}
		$self->kill9;
	}
	if ($self->{epmd_pid})
	{
		kill 'KILL', $self->{epmd_pid};
		waitpid($self->{epmd_pid}, 0);
		$self->{epmd_pid} = 0;
		unlink "$self->{dir}/epmd.pid";
	}
	return;
}

=pod

=item $mq->ctl(@args)

Runs rabbitmqctl against this node; returns its output (undef on
failure) in scalar context, (status, stdout, stderr) in list context.

=cut

sub ctl
{
	my ($self, @args) = @_;
	my %env = $self->_env;
	local @ENV{ keys %env } = values %env;
	my ($out, $err) = ('', '');
	IPC::Run::run([ "$sbin/rabbitmqctl", '-n', $self->{node}, '-q', @args ],
		'>', \$out, '2>', \$err);
	my $rc = $? >> 8;
	return wantarray ? ($rc, $out, $err) : ($rc == 0 ? $out : undef);
}

=pod

=item $mq->queues

The broker's queues as a hash: name => ready messages (rabbitmqctl
list_queues).

=cut

sub queues
{
	my ($self) = @_;
	my $out = $self->ctl('list_queues', '--no-table-headers', 'name', 'messages_ready');
	croak "rabbitmqctl list_queues failed on $self->{name}" unless defined $out;
	my %q;
	for my $line (split /\n/, $out)
	{
		my ($n, $m) = split /\s+/, $line;
		$q{$n} = $m if defined $m && $m =~ /^\d+$/;
	}
	return \%q;
}

=pod

=item $mq->get($queue, $max, ack => 1)

Up to $max messages of $queue by basic.get (acked unless ack => 0:
then they are requeued when the client disconnects); returns a list of
hashes {body, message_id, routing_key, redelivered}.

=cut

sub get
{
	my ($self, $queue, $max, %o) = @_;
	my $bin = _get_client();
	my ($out, $err) = ('', '');
	IPC::Run::run([ $bin, '127.0.0.1', $self->{port}, $queue, $max,
			($o{ack} // 1) ? 'ack' : 'noack' ],
		'>', \$out, '2>', \$err)
	  or croak "hasched_amqp_get failed: $err";
	my @msgs;
	for my $line (split /\n/, $out)
	{
		my ($id, $rk, $redel, $body) = split /\t/, $line, 4;
		push @msgs, { message_id => $id, routing_key => $rk,
			redelivered => $redel, body => $body };
	}
	return @msgs;
}

=pod

=item $mq->publish($queue, @bodies)

Publishes each body (one line of text) as a persistent message to $queue
through the default exchange, and waits for the broker's confirms: a
message that is not the dispatcher's, as a test needs one.

=cut

sub publish
{
	my ($self, $queue, @bodies) = @_;
	my $bin = _get_client();
	my ($out, $err) = ('', '');
	my $in = join('', map { "$_\n" } @bodies);
	IPC::Run::run([ $bin, '127.0.0.1', $self->{port}, $queue, 0, 'publish' ],
		'<', \$in, '>', \$out, '2>', \$err)
	  or croak "hasched_amqp_get publish failed: $err";
	return;
}

# compiles test/perl/hasched_amqp_get.c once per tmp_check
sub _get_client
{
	my $bin = "$PostgreSQL::Test::Utils::tmp_check/hasched_amqp_get";
	return $bin if -x $bin;
	my ($out, $err) = ('', '');
	IPC::Run::run([ 'cc', '-O1', '-Wall', '-o', "$bin.tmp", $get_src, '-lrabbitmq' ],
		'>', \$out, '2>', \$err)
	  or croak "cannot build $get_src: $err";
	rename("$bin.tmp", $bin);
	return $bin;
}

=pod

=item HaschedRabbitMQ->silent_listener

Not a broker: a real TCP listener on a free loopback port (a child process)
that accepts every connection, keeps it open, reads and discards what comes
and never answers: a broker host whose RabbitMQ hangs.  Returns an object
with port, url (amqp://guest:guest@127.0.0.1:PORT), accepted (how many
connections it accepted so far) and stop (kills the child by pid; the END
block does it too).

=cut

my @listeners;

sub silent_listener
{
	my ($class) = @_;
	my $port = PostgreSQL::Test::Cluster::get_free_port();
	my $count = "$PostgreSQL::Test::Utils::tmp_check/silent_$port.accepted";
	my $srv = IO::Socket::INET->new(
		LocalAddr => '127.0.0.1',
		LocalPort => $port,
		Listen => 64,
		ReuseAddr => 1) or croak "cannot listen on 127.0.0.1:$port: $!";
	_write($count, '');
	my $pid = fork();
	croak "fork: $!" unless defined $pid;
	if ($pid == 0)
	{
		my @held;
		my $rin = '';
		vec($rin, fileno($srv), 1) = 1;
		for (;;)
		{
			my $r = $rin;
			vec($r, fileno($_), 1) = 1 for @held;
			next unless select(my $rout = $r, undef, undef, 1) > 0;
			if (vec($rout, fileno($srv), 1))
			{
				my $c = $srv->accept or next;
				push @held, $c;
				open my $fh, '>>', $count or POSIX::_exit(1);
				print $fh "1\n";
				close $fh;
			}
			# what the client sends is read and dropped; a closed one goes
			@held = grep {
				!vec($rout, fileno($_), 1) || sysread($_, my $buf, 4096)
			} @held;
		}
	}
	close $srv;
	my $self = bless { port => $port, pid => $pid, count => $count },
	  'HaschedRabbitMQ::SilentListener';
	push @listeners, $self;
	return $self;
}

package HaschedRabbitMQ::SilentListener;

sub port { return $_[0]{port}; }
sub url  { return "amqp://guest:guest\@127.0.0.1:$_[0]{port}"; }

sub accepted
{
	my ($self) = @_;
	open my $fh, '<', $self->{count} or return 0;
	my @lines = <$fh>;
	close $fh;
	return scalar @lines;
}

sub stop
{
	my ($self) = @_;
	return unless $self->{pid};
	kill 'KILL', $self->{pid};
	waitpid($self->{pid}, 0);
	$self->{pid} = 0;
	return;
}

package HaschedRabbitMQ;

END
{
	my $rc = $?;
	for my $b (@brokers)
	{
		kill 'KILL', -$b->{pgid} if $b->{pgid};
		kill 'KILL', $b->{epmd_pid} if $b->{epmd_pid};
		unlink "$b->{dir}/rabbitmq.pid", "$b->{dir}/epmd.pid";
	}
	$_->stop for @listeners;
	$? = $rc;
}

=pod

=back

=cut

1;
